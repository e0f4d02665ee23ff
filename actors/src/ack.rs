//! Acknowledgement of an inbound message once everything it caused is durable. An [`Ack`] may
//! be split into parts (a gateway batch touches many twins); the receiver learns
//! [`Settled::Done`] only if every part was marked done, [`Settled::Refused`] if a part was
//! refused (the message was handled and changed nothing), and [`Settled::Failed`] as soon as the
//! last part is gone otherwise — so a message dropped anywhere on its way is never
//! acknowledged by accident.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicBool, AtomicU16, Ordering},
};
use tokio::sync::oneshot;

/// How an acknowledged message ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settled {
    /// Every effect is durable and released.
    Done,
    /// The twin refused it (the AWS-style status code); nothing changed, nothing was recorded.
    Refused(u16),
    /// It was lost on its way (a stopped actor, a failed commit): the sender should resend.
    Failed,
}

struct Shared {
    ok: AtomicBool,
    refused: AtomicU16,
    tx: Mutex<Option<oneshot::Sender<Settled>>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        let tx = self.tx.get_mut().map(Option::take).unwrap_or(None);
        if let Some(tx) = tx {
            let settled = match (
                self.ok.load(Ordering::Acquire),
                self.refused.load(Ordering::Acquire),
            ) {
                (false, _) => Settled::Failed,
                (true, 0) => Settled::Done,
                (true, code) => Settled::Refused(code),
            };
            let _ = tx.send(settled);
        }
    }
}

/// One part of an acknowledgement.
pub struct Ack {
    shared: Arc<Shared>,
    done: bool,
}

impl std::fmt::Debug for Ack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ack").field("done", &self.done).finish()
    }
}

impl Ack {
    /// A new acknowledgement and the receiver that learns its outcome.
    pub fn new() -> (Ack, oneshot::Receiver<Settled>) {
        let (tx, rx) = oneshot::channel();
        let shared = Arc::new(Shared {
            ok: AtomicBool::new(true),
            refused: AtomicU16::new(0),
            tx: Mutex::new(Some(tx)),
        });
        (
            Ack {
                shared,
                done: false,
            },
            rx,
        )
    }

    /// Another part of the same acknowledgement.
    pub fn part(&self) -> Ack {
        Ack {
            shared: self.shared.clone(),
            done: false,
        }
    }

    /// Marks this part done (its effects are durable and released).
    pub fn done(mut self) {
        self.done = true;
    }

    /// Marks this part handled but refused with `code`: nothing it asked for happened.
    pub fn refuse(mut self, code: u16) {
        let _ = self
            .shared
            .refused
            .compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire);
        self.done = true;
    }
}

impl Drop for Ack {
    fn drop(&mut self) {
        if !self.done {
            self.shared.ok.store(false, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_parts_done_is_success() {
        let (ack, mut rx) = Ack::new();
        let part = ack.part();
        ack.done();
        assert!(rx.try_recv().is_err(), "not decided while a part is out");
        part.done();
        assert_eq!(rx.try_recv(), Ok(Settled::Done));
    }

    #[test]
    fn a_refused_part_is_a_refusal_with_its_code() {
        let (ack, mut rx) = Ack::new();
        let part = ack.part();
        part.refuse(413);
        ack.done();
        assert_eq!(rx.try_recv(), Ok(Settled::Refused(413)));
    }

    #[test]
    fn a_dropped_part_is_failure() {
        let (ack, mut rx) = Ack::new();
        let part = ack.part();
        drop(part);
        ack.done();
        assert_eq!(rx.try_recv(), Ok(Settled::Failed));
    }
}
