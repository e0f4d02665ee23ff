//! One store type for the node, whichever backend it runs on: the embedded store, a
//! PostgreSQL-wire database (feature `postgres`), or FoundationDB (feature `fdb`) — or any of
//! them with injected faults, for tests.

#[cfg(feature = "fdb")]
use crate::fdb::{FdbStore, FdbTx};
#[cfg(feature = "postgres")]
use crate::pg::{PgStore, PgTx};
use crate::{
    FjallStore, FjallTx,
    error::StoreError,
    faulty::{FaultyStore, FaultyTx},
    kv::{KeyRange, KeyValue, RangeOptions, Store, Transaction},
};

/// The store a node runs on.
#[derive(Clone, Debug)]
pub enum AnyStore {
    /// The embedded store.
    Fjall(FjallStore),
    /// A FoundationDB cluster.
    #[cfg(feature = "fdb")]
    Fdb(FdbStore),
    /// A PostgreSQL-wire database.
    #[cfg(feature = "postgres")]
    Pg(PgStore),
    /// Another store whose commits fail or stall on demand (tests).
    Faulty(Box<FaultyStore<AnyStore>>),
}

/// A transaction on an [`AnyStore`].
#[derive(Debug)]
pub enum AnyTx {
    /// On the embedded store.
    Fjall(FjallTx),
    /// On FoundationDB.
    #[cfg(feature = "fdb")]
    Fdb(FdbTx),
    /// On a PostgreSQL-wire database.
    #[cfg(feature = "postgres")]
    Pg(Box<PgTx>),
    /// On a store with injected faults.
    Faulty(Box<FaultyTx<AnyTx>>),
}

impl From<FjallStore> for AnyStore {
    fn from(store: FjallStore) -> Self {
        AnyStore::Fjall(store)
    }
}

impl From<FaultyStore<AnyStore>> for AnyStore {
    fn from(store: FaultyStore<AnyStore>) -> Self {
        AnyStore::Faulty(Box::new(store))
    }
}

#[cfg(feature = "postgres")]
impl From<PgStore> for AnyStore {
    fn from(store: PgStore) -> Self {
        AnyStore::Pg(store)
    }
}

#[cfg(feature = "fdb")]
impl From<FdbStore> for AnyStore {
    fn from(store: FdbStore) -> Self {
        AnyStore::Fdb(store)
    }
}

impl AnyStore {
    /// Whether the store answers now: a database may be out of reach; the embedded store
    /// always answers.
    pub fn ping(&self) -> Result<(), StoreError> {
        match self {
            #[cfg(feature = "postgres")]
            AnyStore::Pg(store) => store.ping(),
            _ => Ok(()),
        }
    }
}

impl Store for AnyStore {
    type Tx = AnyTx;

    fn begin(&self) -> Result<AnyTx, StoreError> {
        Ok(match self {
            AnyStore::Fjall(s) => AnyTx::Fjall(s.begin()?),
            #[cfg(feature = "fdb")]
            AnyStore::Fdb(s) => AnyTx::Fdb(s.begin()?),
            #[cfg(feature = "postgres")]
            AnyStore::Pg(s) => AnyTx::Pg(Box::new(s.begin()?)),
            AnyStore::Faulty(s) => AnyTx::Faulty(Box::new(s.begin()?)),
        })
    }
}

macro_rules! forward {
    ($self:ident, $tx:ident => $call:expr) => {
        match $self {
            AnyTx::Fjall($tx) => $call,
            #[cfg(feature = "fdb")]
            AnyTx::Fdb($tx) => $call,
            #[cfg(feature = "postgres")]
            AnyTx::Pg($tx) => $call,
            AnyTx::Faulty($tx) => $call,
        }
    };
}

impl Transaction for AnyTx {
    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        forward!(self, tx => tx.get(key))
    }
    fn get_many(&mut self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        forward!(self, tx => tx.get_many(keys))
    }
    fn get_range(
        &mut self,
        range: &KeyRange,
        options: RangeOptions,
    ) -> Result<Vec<KeyValue>, StoreError> {
        forward!(self, tx => tx.get_range(range, options))
    }
    fn set(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        forward!(self, tx => tx.set(key, value))
    }
    fn clear(&mut self, key: &[u8]) -> Result<(), StoreError> {
        forward!(self, tx => tx.clear(key))
    }
    fn clear_range(&mut self, range: &KeyRange) -> Result<(), StoreError> {
        forward!(self, tx => tx.clear_range(range))
    }
    fn commit(&mut self) -> Result<(), StoreError> {
        forward!(self, tx => tx.commit())
    }
    fn on_error(&mut self, error: StoreError) -> Result<(), StoreError> {
        forward!(self, tx => tx.on_error(error))
    }
}
