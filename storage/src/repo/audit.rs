//! The audit log: who changed what, when, with the versions before and after. Entries are keyed
//! by time, so they list in order and old ones clear by range.

use crate::{
    error::StoreError,
    kv::{KeyRange, RangeOptions, Transaction},
};
use foundationdb_tuple::Subspace;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::atomic::{AtomicU64, Ordering};

/// One write, as recorded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When, epoch ms.
    pub at: u64,
    /// Who: the id of the API key (or `bootstrap` for the bootstrap admin token).
    pub actor: String,
    /// What: `thing.register`, `shadow.update`, `key.revoke`, …
    pub action: String,
    /// On what: a thing, type or key name.
    pub target: String,
    /// The target's version before the write, where it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<u64>,
    /// Its version after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<u64>,
    /// Anything else worth keeping (a shadow name, the role of a new key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

impl AuditEntry {
    /// An entry: `actor` did `action` on `target` at `at` (epoch ms), with the target's version
    /// before and after where it has one.
    pub fn new(
        actor: &str,
        action: &str,
        target: &str,
        before: Option<u64>,
        after: Option<u64>,
        details: Option<serde_json::Value>,
        at: u64,
    ) -> Self {
        Self {
            at,
            actor: actor.to_owned(),
            action: action.to_owned(),
            target: target.to_owned(),
            before,
            after,
            details,
        }
    }
}

/// A position in the log, for paging.
pub type Cursor = (u64, u64);

/// The audit repository.
#[derive(Debug)]
pub struct Audit {
    space: Subspace,
    seq: AtomicU64,
}

impl Clone for Audit {
    fn clone(&self) -> Self {
        Self::new(self.space.clone())
    }
}

impl Audit {
    pub(crate) fn new(space: Subspace) -> Self {
        // Entries written in the same millisecond are told apart by a sequence number that
        // starts at a random point per process, so two nodes do not collide.
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() as u64)
            << 32;
        Self {
            space,
            seq: AtomicU64::new(start),
        }
    }

    /// Appends `entry`.
    pub fn append(&self, tx: &mut impl Transaction, entry: &AuditEntry) -> Result<(), StoreError> {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let bytes = serde_json::to_vec(entry).map_err(|e| StoreError::corrupt("audit entry", e))?;
        tx.set(&self.space.pack(&(entry.at, seq)), &bytes)
    }

    /// Up to `limit` entries with `from <= at < to`, oldest first, after `cursor`; with the
    /// cursor of the last one.
    pub fn list(
        &self,
        tx: &mut impl Transaction,
        from: u64,
        to: u64,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<Vec<(Cursor, AuditEntry)>, StoreError> {
        let mut begin = self.space.pack(&(from,));
        if let Some(cursor) = after {
            begin = self.space.pack(&cursor);
            begin.push(0);
        }
        let end = self.space.pack(&(to,));
        if begin >= end {
            return Ok(Vec::new());
        }
        let options = RangeOptions {
            limit: Some(limit),
            reverse: false,
        };
        tx.get_range(&KeyRange::new(begin, end), options)?
            .into_iter()
            .map(|(key, value)| {
                let cursor: Cursor = self
                    .space
                    .unpack(&key)
                    .map_err(|e| StoreError::corrupt("audit key", e))?;
                let entry = serde_json::from_slice(&value)
                    .map_err(|e| StoreError::corrupt("audit entry", e))?;
                Ok((cursor, entry))
            })
            .collect()
    }
}
