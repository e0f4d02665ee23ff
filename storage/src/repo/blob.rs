//! Values of any size: split into chunks within FoundationDB's value limit, stored under
//! `(prefix, chunk_index)`, read back with one range read.

use crate::{
    error::StoreError,
    kv::{KeyRange, MAX_VALUE_BYTES, RangeOptions, Transaction},
};
use foundationdb_tuple::Subspace;

fn range(space: &Subspace) -> KeyRange {
    space.range().into()
}

/// Writes `bytes` under `space`, replacing what was there.
pub fn put(tx: &mut impl Transaction, space: &Subspace, bytes: &[u8]) -> Result<(), StoreError> {
    let mut chunks = 0u32;
    for chunk in bytes.chunks(MAX_VALUE_BYTES) {
        tx.set(&space.pack(&chunks), chunk)?;
        chunks += 1;
    }
    if chunks == 0 {
        tx.set(&space.pack(&0u32), &[])?;
        chunks = 1;
    }
    // Drop chunks left over from a longer earlier value.
    tx.clear_range(&KeyRange::new(space.pack(&chunks), space.range().1))
}

/// Reads what [`put`] wrote, or `None`.
pub fn get(tx: &mut impl Transaction, space: &Subspace) -> Result<Option<Vec<u8>>, StoreError> {
    let pairs = tx.get_range(&range(space), RangeOptions::default())?;
    if pairs.is_empty() {
        return Ok(None);
    }
    let mut bytes = Vec::with_capacity(pairs.iter().map(|(_, v)| v.len()).sum());
    for (i, (key, value)) in pairs.into_iter().enumerate() {
        let index: u32 = space
            .unpack(&key)
            .map_err(|e| StoreError::corrupt("blob chunk key", e))?;
        if index as usize != i {
            return Err(StoreError::corrupt("blob", format!("chunk {i} is missing")));
        }
        bytes.extend_from_slice(&value);
    }
    Ok(Some(bytes))
}

/// Removes the value under `space`.
pub fn delete(tx: &mut impl Transaction, space: &Subspace) -> Result<(), StoreError> {
    tx.clear_range(&range(space))
}
