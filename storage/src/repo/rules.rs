//! Rules: their sources, each twin's rule state and next deadline, and the rule log (alerts and
//! commands) keyed by kind and time.

use super::{
    Cursor, Keyed, blob,
    timelog::{self, Sequence},
};
use crate::{
    error::StoreError,
    kv::{KeyRange, RangeOptions, Transaction, key_after},
};
use foundationdb_tuple::Subspace;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use twin_core::ThingName;

/// A rule as stored: its source and what it is attached to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleRecord {
    /// The rule's name.
    pub name: String,
    /// Its source (the rule and its tests).
    pub source: String,
    /// The device type it is attached to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_type: Option<String>,
    /// The thing it is attached to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thing: Option<String>,
    /// Who wrote it last (a key id).
    pub updated_by: String,
    /// When, epoch ms.
    pub updated_at: u64,
}

impl Keyed for RuleRecord {
    fn key(&self) -> &str {
        &self.name
    }
}

/// Each twin's rule state and next rule deadline.
#[derive(Clone, Debug)]
pub struct RuleStates {
    state: Subspace,
    timers: Subspace,
}

impl RuleStates {
    pub(crate) fn new(state: Subspace, timers: Subspace) -> Self {
        Self { state, timers }
    }

    /// The encoded rule state of `thing`.
    pub fn load(
        &self,
        tx: &mut impl Transaction,
        thing: &ThingName,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        blob::get(tx, &self.state.subspace(&thing.as_str()))
    }

    /// Saves the encoded rule state of `thing`.
    pub fn save(
        &self,
        tx: &mut impl Transaction,
        thing: &ThingName,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        blob::put(tx, &self.state.subspace(&thing.as_str()), bytes)
    }

    /// Records when `thing`'s rules next need to run (`None`: no deadline).
    pub fn set_deadline(
        &self,
        tx: &mut impl Transaction,
        thing: &ThingName,
        deadline: Option<u64>,
    ) -> Result<(), StoreError> {
        let key = self.timers.pack(&thing.as_str());
        match deadline {
            Some(at) => tx.set(&key, &at.to_be_bytes()),
            None => tx.clear(&key),
        }
    }

    /// Every twin with a deadline, and the deadline (at most `limit`, after `after`).
    pub fn deadlines(
        &self,
        tx: &mut impl Transaction,
        after: Option<&ThingName>,
        limit: usize,
    ) -> Result<Vec<(ThingName, u64)>, StoreError> {
        let (mut begin, end) = self.timers.range();
        if let Some(after) = after {
            begin = key_after(self.timers.pack(&after.as_str()));
        }
        let options = RangeOptions::first(limit);
        tx.get_range(&KeyRange::new(begin, end), options)?
            .into_iter()
            .map(|(key, value)| {
                let name: String = self
                    .timers
                    .unpack(&key)
                    .map_err(|e| StoreError::corrupt("rule timer key", e))?;
                let thing =
                    ThingName::new(&name).map_err(|e| StoreError::corrupt("rule timer key", e))?;
                let bytes: [u8; 8] = value
                    .as_slice()
                    .try_into()
                    .map_err(|_| StoreError::corrupt("rule timer", "not 8 bytes"))?;
                Ok((thing, u64::from_be_bytes(bytes)))
            })
            .collect()
    }

    /// Removes `thing`'s rule state and deadline.
    pub fn remove(&self, tx: &mut impl Transaction, thing: &ThingName) -> Result<(), StoreError> {
        blob::delete(tx, &self.state.subspace(&thing.as_str()))?;
        tx.clear(&self.timers.pack(&thing.as_str()))
    }
}

/// One entry of the rule log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RuleLogEntry {
    /// When, epoch ms.
    pub at: u64,
    /// The twin.
    pub thing: String,
    /// The rule.
    pub rule: String,
    /// What happened (`alert`: name, severity, state, message; `command`: name, request id,
    /// outcome).
    #[serde(flatten)]
    pub details: serde_json::Map<String, Value>,
}

/// What a rule log entry is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LogKind {
    /// An alert fired or resolved.
    Alert,
    /// A command sent, or how it ended.
    Command,
}

impl LogKind {
    /// Its name in keys and in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            LogKind::Alert => "alert",
            LogKind::Command => "command",
        }
    }
}

/// The rule log: alerts fired and resolved, commands sent and how they ended; one time-ordered
/// log per kind.
#[derive(Debug)]
pub struct RuleLog {
    space: Subspace,
    seq: Sequence,
}

impl Clone for RuleLog {
    fn clone(&self) -> Self {
        Self::new(self.space.clone())
    }
}

impl RuleLog {
    pub(crate) fn new(space: Subspace) -> Self {
        Self {
            space,
            seq: Sequence::new(),
        }
    }

    fn log(&self, kind: LogKind) -> Subspace {
        self.space.subspace(&kind.as_str())
    }

    /// Appends an entry of `kind`.
    pub fn append(
        &self,
        tx: &mut impl Transaction,
        kind: LogKind,
        entry: &RuleLogEntry,
    ) -> Result<(), StoreError> {
        self.seq
            .append(tx, &self.log(kind), entry.at, entry, "rule log entry")
    }

    /// Up to `limit` entries of `kind` with `from <= at < to`, oldest first, after `after`.
    pub fn list(
        &self,
        tx: &mut impl Transaction,
        kind: LogKind,
        range: (u64, u64),
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<Vec<(Cursor, RuleLogEntry)>, StoreError> {
        timelog::list(tx, &self.log(kind), range, after, limit, "rule log entry")
    }

    /// Removes entries of `kind` older than `before`.
    pub fn expire(
        &self,
        tx: &mut impl Transaction,
        kind: LogKind,
        before: u64,
    ) -> Result<(), StoreError> {
        timelog::expire(tx, &self.log(kind), before)
    }
}
