//! Time-ordered logs of JSON entries (the audit log, the rule log): keys `(at_ms, seq)` under a
//! subspace, listed oldest first from a time range and a cursor, expired by time. `seq` tells
//! apart entries of the same millisecond; it starts at a random point per process, so two
//! nodes do not collide.

use crate::{
    error::StoreError,
    kv::{KeyRange, RangeOptions, Transaction, key_after},
};
use foundationdb_tuple::Subspace;
use serde::{Serialize, de::DeserializeOwned};
use std::sync::atomic::{AtomicU64, Ordering};

/// Where an entry is in its log: its time (epoch ms) and sequence number.
pub type Cursor = (u64, u64);

/// The sequence of one log's entries.
#[derive(Debug)]
pub(crate) struct Sequence(AtomicU64);

impl Sequence {
    pub(crate) fn new() -> Self {
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() as u64)
            << 32;
        Self(AtomicU64::new(start))
    }

    /// Appends `entry` at `at` to the log in `space`.
    pub(crate) fn append<T: Serialize>(
        &self,
        tx: &mut impl Transaction,
        space: &Subspace,
        at: u64,
        entry: &T,
        what: &str,
    ) -> Result<(), StoreError> {
        let seq = self.0.fetch_add(1, Ordering::Relaxed);
        let bytes = serde_json::to_vec(entry).map_err(|e| StoreError::corrupt(what, e))?;
        tx.set(&space.pack(&(at, seq)), &bytes)
    }
}

/// Up to `limit` entries of the log in `space` with `from <= at < to`, oldest first, after
/// `after`; each with its cursor.
pub(crate) fn list<T: DeserializeOwned>(
    tx: &mut impl Transaction,
    space: &Subspace,
    (from, to): (u64, u64),
    after: Option<Cursor>,
    limit: usize,
    what: &str,
) -> Result<Vec<(Cursor, T)>, StoreError> {
    let begin = match after {
        Some(cursor) => key_after(space.pack(&cursor)),
        None => space.pack(&(from,)),
    };
    let end = space.pack(&(to,));
    if begin >= end {
        return Ok(Vec::new());
    }
    let options = RangeOptions::first(limit);
    tx.get_range(&KeyRange::new(begin, end), options)?
        .into_iter()
        .map(|(key, value)| {
            let cursor: Cursor = space
                .unpack(&key)
                .map_err(|e| StoreError::corrupt(format!("{what} key"), e))?;
            let entry = serde_json::from_slice(&value).map_err(|e| StoreError::corrupt(what, e))?;
            Ok((cursor, entry))
        })
        .collect()
}

/// Removes the entries of the log in `space` older than `before`.
pub(crate) fn expire(
    tx: &mut impl Transaction,
    space: &Subspace,
    before: u64,
) -> Result<(), StoreError> {
    tx.clear_range(&KeyRange::new(space.pack(&(0u64,)), space.pack(&(before,))))
}
