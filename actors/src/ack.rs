//! Acknowledgement of an inbound message once everything it caused is durable. An [`Ack`] may
//! be split into parts (a gateway batch touches many twins); the receiver learns `true` only if
//! every part was marked done, and `false` as soon as the last part is gone otherwise — so a
//! message dropped anywhere on its way is never acknowledged by accident.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicBool, Ordering},
};
use tokio::sync::oneshot;

struct Shared {
    ok: AtomicBool,
    tx: Mutex<Option<oneshot::Sender<bool>>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        let tx = self.tx.get_mut().map(Option::take).unwrap_or(None);
        if let Some(tx) = tx {
            let _ = tx.send(self.ok.load(Ordering::Acquire));
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
    pub fn new() -> (Ack, oneshot::Receiver<bool>) {
        let (tx, rx) = oneshot::channel();
        let shared = Arc::new(Shared {
            ok: AtomicBool::new(true),
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
        assert_eq!(rx.try_recv(), Ok(true));
    }

    #[test]
    fn a_dropped_part_is_failure() {
        let (ack, mut rx) = Ack::new();
        let part = ack.part();
        drop(part);
        ack.done();
        assert_eq!(rx.try_recv(), Ok(false));
    }
}
