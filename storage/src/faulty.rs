//! A real store whose commits misbehave on demand: the next write commits fail (with an error
//! retrying may cure, or one it cannot), or every write commit stalls until released. Tests of
//! the node use it to see what a failed or slow commit does — nothing released, nothing
//! acknowledged, a device's retry applied once — on the embedded store, everything else real.
//! Read-only transactions are never touched.

use crate::{
    error::StoreError,
    kv::{KeyRange, KeyValue, RangeOptions, Store, Transaction},
};
use std::{
    collections::VecDeque,
    sync::{Arc, Condvar, Mutex},
};

/// What an injected failure looks like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// A failure retrying may cure (the store was unreachable, say).
    Transient,
    /// A refusal retrying cannot cure (a value over the store's limits).
    Permanent,
}

impl Fault {
    fn error(self) -> StoreError {
        match self {
            Fault::Transient => {
                StoreError::Engine("injected fault: the store is unavailable".into())
            }
            Fault::Permanent => StoreError::ValueTooLarge {
                size: crate::MAX_VALUE_BYTES + 1,
                max: crate::MAX_VALUE_BYTES,
            },
        }
    }
}

#[derive(Debug, Default)]
struct Plan {
    failures: VecDeque<Fault>,
    stalled: bool,
    /// Write commits that reached the store (failed, stalled or not).
    attempts: u64,
    /// Write commits that succeeded.
    committed: u64,
}

/// The handle a test steers the faults with; clones share the plan.
#[derive(Clone, Debug, Default)]
pub struct Faults(Arc<(Mutex<Plan>, Condvar)>);

impl Faults {
    fn plan(&self) -> std::sync::MutexGuard<'_, Plan> {
        self.0
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The next write commit fails with `fault` (calls queue up: one failure per call).
    pub fn fail_next_commit(&self, fault: Fault) {
        self.plan().failures.push_back(fault);
    }

    /// Write commits block from now until [`Faults::resume`].
    pub fn stall(&self) {
        self.plan().stalled = true;
    }

    /// Releases stalled commits, and stops stalling new ones.
    pub fn resume(&self) {
        self.plan().stalled = false;
        self.0.1.notify_all();
    }

    /// Write commits attempted so far (failed, stalled or not).
    pub fn attempts(&self) -> u64 {
        self.plan().attempts
    }

    /// Write commits that succeeded so far.
    pub fn committed(&self) -> u64 {
        self.plan().committed
    }

    /// Applies the plan to one write commit: waits while stalled, then fails if asked to.
    fn on_commit(&self) -> Result<(), StoreError> {
        let mut plan = self.plan();
        plan.attempts += 1;
        while plan.stalled {
            plan = self
                .0
                .1
                .wait(plan)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        match plan.failures.pop_front() {
            Some(fault) => Err(fault.error()),
            None => Ok(()),
        }
    }

    fn succeeded(&self) {
        self.plan().committed += 1;
    }
}

/// `inner`, with commits steered by a [`Faults`] handle.
#[derive(Clone, Debug)]
pub struct FaultyStore<S> {
    inner: S,
    faults: Faults,
}

impl<S: Store> FaultyStore<S> {
    /// Wraps `inner`; the returned handle steers its faults.
    pub fn new(inner: S) -> (Self, Faults) {
        let faults = Faults::default();
        (
            Self {
                inner,
                faults: faults.clone(),
            },
            faults,
        )
    }
}

/// A transaction of a [`FaultyStore`].
#[derive(Debug)]
pub struct FaultyTx<T> {
    inner: T,
    faults: Faults,
    wrote: bool,
}

impl<S: Store> Store for FaultyStore<S> {
    type Tx = FaultyTx<S::Tx>;

    fn begin(&self) -> Result<Self::Tx, StoreError> {
        Ok(FaultyTx {
            inner: self.inner.begin()?,
            faults: self.faults.clone(),
            wrote: false,
        })
    }
}

impl<T: Transaction> Transaction for FaultyTx<T> {
    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(key)
    }
    fn get_many(&mut self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        self.inner.get_many(keys)
    }
    fn get_range(
        &mut self,
        range: &KeyRange,
        options: RangeOptions,
    ) -> Result<Vec<KeyValue>, StoreError> {
        self.inner.get_range(range, options)
    }
    fn set(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.wrote = true;
        self.inner.set(key, value)
    }
    fn clear(&mut self, key: &[u8]) -> Result<(), StoreError> {
        self.wrote = true;
        self.inner.clear(key)
    }
    fn clear_range(&mut self, range: &KeyRange) -> Result<(), StoreError> {
        self.wrote = true;
        self.inner.clear_range(range)
    }
    fn commit(&mut self) -> Result<(), StoreError> {
        if self.wrote {
            self.faults.on_commit()?;
        }
        self.inner.commit()?;
        if self.wrote {
            self.faults.succeeded();
        }
        Ok(())
    }
    fn on_error(&mut self, error: StoreError) -> Result<(), StoreError> {
        self.wrote = false;
        self.inner.on_error(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FjallStore;

    #[test]
    fn write_commits_fail_as_planned_and_reads_are_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let (store, faults) = FaultyStore::new(FjallStore::open(dir.path()).unwrap());
        faults.fail_next_commit(Fault::Transient);
        let failed = store.transact(|tx| tx.set(b"k", b"v"));
        assert!(matches!(failed, Err(StoreError::Engine(_))), "{failed:?}");
        assert_eq!(
            store.transact(|tx| tx.get(b"k")).unwrap(),
            None,
            "nothing written"
        );
        faults.fail_next_commit(Fault::Permanent);
        let failed = store.transact(|tx| tx.set(b"k", b"v"));
        assert!(failed.is_err_and(|e| e.is_permanent()));
        store.transact(|tx| tx.set(b"k", b"v")).unwrap();
        assert_eq!(
            store.transact(|tx| tx.get(b"k")).unwrap(),
            Some(b"v".to_vec())
        );
        assert_eq!((faults.attempts(), faults.committed()), (3, 1));
    }

    #[test]
    fn stalled_commits_wait_until_resumed() {
        let dir = tempfile::tempdir().unwrap();
        let (store, faults) = FaultyStore::new(FjallStore::open(dir.path()).unwrap());
        faults.stall();
        let writer = {
            let store = store.clone();
            std::thread::spawn(move || store.transact(|tx| tx.set(b"k", b"v")))
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while faults.attempts() == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the commit never came"
            );
            std::thread::yield_now();
        }
        assert_eq!(faults.committed(), 0, "stalled");
        faults.resume();
        writer.join().unwrap().unwrap();
        assert_eq!(faults.committed(), 1);
    }
}
