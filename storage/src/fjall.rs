//! The embedded backend on fjall (an LSM tree): one directory, optimistic serializable
//! transactions, every commit written through to disk (`fsync`) before it returns.

use crate::{
    error::StoreError,
    kv::{KeyRange, KeyValue, RangeOptions, Store, Transaction, WriteBudget},
};
use fjall::{
    KeyspaceCreateOptions, OptimisticTxDatabase, OptimisticTxKeyspace,
    OptimisticWriteTx as WriteTransaction, PersistMode, Readable,
};
use std::{fmt, path::Path, time::Duration};

/// The memtable's size before it is flushed to a table. fjall's default (64 MiB) makes every
/// flush and the compactions after it large, and commits overlapping one wait longer; with
/// 16 MiB (and the fixes of `vendor/`) PUBACK p99 at 50,000 msgs/s is 18–32 ms (it varies from
/// run to run) instead of 40 ms, and a restart replays a shorter journal.
const MEMTABLE_BYTES: u64 = 16 << 20;

/// fjall's background threads: the first is kept for flushes, the other compacts. (With one,
/// flushes queue behind long compactions and memory grows without bound under sustained load;
/// `vendor/fjall` keeps the first from spinning while the other compacts.)
const WORKER_THREADS: usize = 2;

/// Conflicting attempts before a transaction gives up.
const MAX_ATTEMPTS: u32 = 100;

fn engine(e: fjall::Error) -> StoreError {
    StoreError::Engine(e.to_string())
}

/// A store in one local directory.
#[derive(Clone)]
pub struct FjallStore {
    db: OptimisticTxDatabase,
    data: OptimisticTxKeyspace,
}

impl fmt::Debug for FjallStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FjallStore").finish_non_exhaustive()
    }
}

impl FjallStore {
    /// Opens (or creates) the store in `path`, recovering whatever the last run committed.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let db = OptimisticTxDatabase::builder(path.as_ref())
            .manual_journal_persist(true)
            .worker_threads(WORKER_THREADS)
            .open()
            .map_err(engine)?;
        let data = db
            .keyspace("data", || {
                KeyspaceCreateOptions::default().max_memtable_size(MEMTABLE_BYTES)
            })
            .map_err(engine)?;
        Ok(Self { db, data })
    }

    /// Bytes the store occupies on disk.
    pub fn disk_space(&self) -> Result<u64, StoreError> {
        self.db.disk_space().map_err(engine)
    }

    fn write_tx(&self) -> Result<WriteTransaction, StoreError> {
        Ok(self
            .db
            .write_tx()
            .map_err(engine)?
            .durability(Some(PersistMode::SyncAll)))
    }
}

impl Store for FjallStore {
    type Tx = FjallTx;

    fn begin(&self) -> Result<FjallTx, StoreError> {
        Ok(FjallTx {
            tx: Some(self.write_tx()?),
            store: self.clone(),
            budget: WriteBudget::default(),
            attempts: 1,
        })
    }
}

/// A transaction on a [`FjallStore`].
pub struct FjallTx {
    store: FjallStore,
    tx: Option<WriteTransaction>,
    budget: WriteBudget,
    attempts: u32,
}

impl fmt::Debug for FjallTx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FjallTx")
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

impl FjallTx {
    fn tx(&mut self) -> Result<&mut WriteTransaction, StoreError> {
        self.tx.as_mut().ok_or(StoreError::Finished)
    }
}

impl Transaction for FjallTx {
    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let data = self.store.data.clone();
        let value = self.tx()?.get(&data, key).map_err(engine)?;
        Ok(value.map(|v| v.to_vec()))
    }

    fn get_range(
        &mut self,
        range: &KeyRange,
        options: RangeOptions,
    ) -> Result<Vec<KeyValue>, StoreError> {
        let data = self.store.data.clone();
        let tx = self.tx()?;
        let iter = tx.range(&data, range.begin.as_slice()..range.end.as_slice());
        let limit = options.limit.unwrap_or(usize::MAX);
        let pair = |g: fjall::Guard| {
            g.into_inner()
                .map(|(k, v)| (k.to_vec(), v.to_vec()))
                .map_err(engine)
        };
        if options.reverse {
            iter.rev().take(limit).map(pair).collect()
        } else {
            iter.take(limit).map(pair).collect()
        }
    }

    fn set(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.budget.set(key, value)?;
        let data = self.store.data.clone();
        self.tx()?.insert(&data, key, value);
        Ok(())
    }

    fn clear(&mut self, key: &[u8]) -> Result<(), StoreError> {
        self.budget.key(key)?;
        let data = self.store.data.clone();
        self.tx()?.remove(&data, key);
        Ok(())
    }

    fn clear_range(&mut self, range: &KeyRange) -> Result<(), StoreError> {
        // fjall has no range tombstone inside a transaction: remove the keys one by one.
        self.budget.key(&range.begin)?;
        self.budget.key(&range.end)?;
        let data = self.store.data.clone();
        let tx = self.tx()?;
        let keys = tx
            .range(&data, range.begin.as_slice()..range.end.as_slice())
            .map(|g| g.key().map_err(engine))
            .collect::<Result<Vec<_>, _>>()?;
        for key in keys {
            tx.remove(&data, key);
        }
        Ok(())
    }

    fn commit(&mut self) -> Result<(), StoreError> {
        let tx = self.tx.take().ok_or(StoreError::Finished)?;
        match tx.commit() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(fjall::Conflict)) => Err(StoreError::Conflict),
            Err(e) => Err(engine(e)),
        }
    }

    fn on_error(&mut self, error: StoreError) -> Result<(), StoreError> {
        if !matches!(error, StoreError::Conflict) || self.attempts >= MAX_ATTEMPTS {
            return Err(error);
        }
        // Back off a little once retries pile up, so that conflicting writers interleave.
        if self.attempts > 3 {
            std::thread::sleep(Duration::from_millis(u64::from(self.attempts.min(20))));
        }
        self.attempts += 1;
        self.budget.reset();
        self.tx = Some(self.store.write_tx()?);
        Ok(())
    }
}
