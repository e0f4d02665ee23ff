//! The FoundationDB backend (cargo feature `fdb`): the same store interface over a cluster.
//! Operations block on FoundationDB's futures, which its client network thread drives; retries
//! follow FoundationDB's own `on_error` (backoff included). Limits are checked before a write
//! reaches the cluster, with the same errors as the embedded backend.

use crate::{
    error::StoreError,
    kv::{KeyRange, KeyValue, RangeOptions, Store, Transaction, WriteBudget},
};
use foundationdb::{
    Database, FdbError, RangeOption, Transaction as FdbTransaction, TransactionCommitError,
    api::{FdbApiBuilder, NetworkAutoStop},
    options::TransactionOption,
};
use futures::executor::block_on;
use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

/// Retries of one transaction before FoundationDB's `on_error` gives up.
const RETRY_LIMIT: i32 = 100;

fn fdb_error(e: FdbError) -> StoreError {
    StoreError::Fdb {
        code: e.code(),
        message: e.message().to_owned(),
    }
}

/// FoundationDB's client network. Boot it once per process, keep it alive while any
/// [`FdbStore`] is in use, and let it drop before the process exits.
pub struct FdbNetwork {
    _guard: NetworkAutoStop,
}

impl fmt::Debug for FdbNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FdbNetwork")
    }
}

static BOOTED: AtomicBool = AtomicBool::new(false);

impl FdbNetwork {
    /// Starts the client network thread. Fails if it was started before in this process.
    pub fn boot() -> Result<FdbNetwork, StoreError> {
        if BOOTED.swap(true, Ordering::SeqCst) {
            return Err(StoreError::Engine(
                "the foundationdb network can be booted once per process".into(),
            ));
        }
        let builder = FdbApiBuilder::default().build().map_err(fdb_error)?;
        // SAFETY: `boot` is sound when it runs at most once per process and the returned guard
        // is dropped before the process exits. The `BOOTED` flag above makes this the only
        // call in the process. The guard is owned by the returned `FdbNetwork`, which the
        // binary holds in `main` and tests hold in the test body, so it drops when they return;
        // neither calls `std::process::exit` while it is alive.
        #[allow(unsafe_code)]
        let guard = unsafe { builder.boot() }.map_err(fdb_error)?;
        Ok(FdbNetwork { _guard: guard })
    }
}

/// A store on a FoundationDB cluster.
#[derive(Clone)]
pub struct FdbStore {
    db: Arc<Database>,
}

impl fmt::Debug for FdbStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FdbStore").finish_non_exhaustive()
    }
}

impl FdbStore {
    /// Connects to the cluster named by `cluster_file` (FoundationDB's default when `None`).
    /// The network must be running.
    pub fn open(_network: &FdbNetwork, cluster_file: Option<&str>) -> Result<Self, StoreError> {
        let db = Database::new(cluster_file).map_err(fdb_error)?;
        Ok(Self { db: Arc::new(db) })
    }

    fn new_trx(&self) -> Result<FdbTransaction, StoreError> {
        let trx = self.db.create_trx().map_err(fdb_error)?;
        trx.set_option(TransactionOption::RetryLimit(RETRY_LIMIT))
            .map_err(fdb_error)?;
        Ok(trx)
    }
}

impl Store for FdbStore {
    type Tx = FdbTx;

    fn begin(&self) -> Result<FdbTx, StoreError> {
        Ok(FdbTx {
            trx: Some(self.new_trx()?),
            failed: None,
            budget: WriteBudget::default(),
        })
    }
}

enum Failure {
    Commit(TransactionCommitError),
    Op(FdbError),
}

/// A transaction on an [`FdbStore`].
pub struct FdbTx {
    trx: Option<FdbTransaction>,
    failed: Option<Failure>,
    budget: WriteBudget,
}

impl fmt::Debug for FdbTx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FdbTx").finish_non_exhaustive()
    }
}

impl FdbTx {
    fn trx(&self) -> Result<&FdbTransaction, StoreError> {
        self.trx.as_ref().ok_or(StoreError::Finished)
    }

    fn fail(&mut self, e: FdbError) -> StoreError {
        self.failed = Some(Failure::Op(e));
        fdb_error(e)
    }
}

impl Transaction for FdbTx {
    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let result = block_on(self.trx()?.get(key, false));
        match result {
            Ok(value) => Ok(value.map(|v| v.to_vec())),
            Err(e) => Err(self.fail(e)),
        }
    }

    fn get_range(
        &mut self,
        range: &KeyRange,
        options: RangeOptions,
    ) -> Result<Vec<KeyValue>, StoreError> {
        let mut opt = RangeOption {
            limit: options.limit,
            reverse: options.reverse,
            ..RangeOption::from((range.begin.as_slice(), range.end.as_slice()))
        };
        let mut out = Vec::new();
        let mut iteration = 1;
        loop {
            let page = block_on(self.trx()?.get_range(&opt, iteration, false));
            let page = match page {
                Ok(page) => page,
                Err(e) => return Err(self.fail(e)),
            };
            out.extend(
                page.iter()
                    .map(|kv| (kv.key().to_vec(), kv.value().to_vec())),
            );
            match opt.next_range(&page) {
                Some(next) => {
                    opt = next;
                    iteration += 1;
                }
                None => return Ok(out),
            }
        }
    }

    fn set(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.budget.set(key, value)?;
        self.trx()?.set(key, value);
        Ok(())
    }

    fn clear(&mut self, key: &[u8]) -> Result<(), StoreError> {
        self.budget.key(key)?;
        self.trx()?.clear(key);
        Ok(())
    }

    fn clear_range(&mut self, range: &KeyRange) -> Result<(), StoreError> {
        self.budget.key(&range.begin)?;
        self.budget.key(&range.end)?;
        self.trx()?.clear_range(&range.begin, &range.end);
        Ok(())
    }

    fn commit(&mut self) -> Result<(), StoreError> {
        let trx = self.trx.take().ok_or(StoreError::Finished)?;
        match block_on(trx.commit()) {
            Ok(_) => Ok(()),
            Err(e) => {
                let error = fdb_error(*e);
                self.failed = Some(Failure::Commit(e));
                Err(error)
            }
        }
    }

    fn on_error(&mut self, error: StoreError) -> Result<(), StoreError> {
        if !matches!(error, StoreError::Fdb { .. }) {
            return Err(error);
        }
        let trx = match self.failed.take() {
            Some(Failure::Commit(e)) => block_on(e.on_error()),
            Some(Failure::Op(e)) => {
                let trx = self.trx.take().ok_or(StoreError::Finished)?;
                block_on(trx.on_error(e))
            }
            None => return Err(error),
        };
        self.trx = Some(trx.map_err(fdb_error)?);
        self.budget.reset();
        Ok(())
    }
}
