//! Durable state of doppel: a store interface shaped after FoundationDB (ordered keys,
//! serializable transactions, range reads, retry on conflict), its embedded backend on fjall
//! (the default), its PostgreSQL-wire backend (feature `postgres`, on by default) and its
//! FoundationDB backend (feature `fdb`), typed repositories that own the
//! key layout (FoundationDB tuples in every backend), and the conformance suite every backend
//! must pass.

mod any;
pub mod conformance;
pub mod copy;
mod error;
pub mod faulty;
#[cfg(feature = "fdb")]
pub mod fdb;
mod fjall;
mod kv;
#[cfg(feature = "postgres")]
pub mod pg;
#[cfg(feature = "postgres")]
pub mod pg_server;
pub mod repo;
mod url;

pub use crate::fjall::{FjallStore, FjallTx};
pub use any::{AnyStore, AnyTx};
pub use error::StoreError;
pub use foundationdb_tuple::Subspace;
pub use kv::{
    KeyRange, KeyValue, MAX_KEY_BYTES, MAX_TRANSACTION_BYTES, MAX_VALUE_BYTES, RangeOptions, Store,
    Transaction,
};
#[cfg(feature = "postgres")]
pub use pg::{PgStore, PgTx};
pub use repo::{
    AbortCriterion, AuditEntry, CertRecord, CertStatus, JobRecord, JobTargets, KeyRecord,
    NodeRecord, Presence, Progress, ProvisioningTemplate, RateIncrease, Repos, Role, Rollout,
    RuleLogEntry, RuleRecord, ShardRecord, ThingRecord,
};
pub use url::StoreUrl;
