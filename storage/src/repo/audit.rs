//! The audit log: who changed what, when, with the versions before and after. Entries are keyed
//! by time, so they list in order and old ones clear by range.

use super::timelog::{self, Cursor, Sequence};
use crate::{error::StoreError, kv::Transaction};
use foundationdb_tuple::Subspace;
use serde::{Deserialize, Serialize};
use serde_json::Value;

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

/// The audit repository.
#[derive(Debug)]
pub struct Audit {
    space: Subspace,
    seq: Sequence,
}

impl Clone for Audit {
    fn clone(&self) -> Self {
        Self::new(self.space.clone())
    }
}

impl Audit {
    pub(crate) fn new(space: Subspace) -> Self {
        Self {
            space,
            seq: Sequence::new(),
        }
    }

    /// Appends `entry`.
    pub fn append(&self, tx: &mut impl Transaction, entry: &AuditEntry) -> Result<(), StoreError> {
        self.seq
            .append(tx, &self.space, entry.at, entry, "audit entry")
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
        timelog::list(tx, &self.space, (from, to), after, limit, "audit entry")
    }
}
