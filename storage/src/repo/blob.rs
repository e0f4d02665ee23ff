//! Values of any size, split into chunks within FoundationDB's value limit under
//! `(prefix, chunk_index)`. Chunk 0 starts with the chunk count (u32, big-endian), so a write
//! is blind (no read, no range clear) and a one-chunk value — nearly every twin — reads with
//! one point read. Chunks past the count, left by an earlier longer value, are ignored by
//! readers and removed by [`delete`].

use crate::{
    error::StoreError,
    kv::{KeyRange, MAX_VALUE_BYTES, RangeOptions, Transaction},
};
use foundationdb_tuple::Subspace;

const HEADER: usize = 4;
/// Payload bytes of chunk 0 (the header takes the rest of the value limit).
const FIRST: usize = MAX_VALUE_BYTES - HEADER;

fn chunk_count(len: usize) -> u32 {
    let rest = len.saturating_sub(FIRST);
    1 + rest.div_ceil(MAX_VALUE_BYTES) as u32
}

/// Writes `bytes` under `space`, replacing what was there.
pub fn put(tx: &mut impl Transaction, space: &Subspace, bytes: &[u8]) -> Result<(), StoreError> {
    let count = chunk_count(bytes.len());
    let (first, rest) = bytes.split_at(bytes.len().min(FIRST));
    let mut chunk0 = Vec::with_capacity(HEADER + first.len());
    chunk0.extend_from_slice(&count.to_be_bytes());
    chunk0.extend_from_slice(first);
    tx.set(&space.pack(&0u32), &chunk0)?;
    for (i, chunk) in rest.chunks(MAX_VALUE_BYTES).enumerate() {
        tx.set(&space.pack(&(i as u32 + 1)), chunk)?;
    }
    Ok(())
}

/// Reads what [`put`] wrote, or `None`.
pub fn get(tx: &mut impl Transaction, space: &Subspace) -> Result<Option<Vec<u8>>, StoreError> {
    let Some(chunk0) = tx.get(&space.pack(&0u32))? else {
        return Ok(None);
    };
    let Some((header, first)) = chunk0.split_first_chunk::<HEADER>() else {
        return Err(StoreError::corrupt("blob", "chunk 0 has no header"));
    };
    let count = u32::from_be_bytes(*header);
    let mut bytes = first.to_vec();
    if count > 1 {
        let range = KeyRange::new(space.pack(&1u32), space.pack(&count));
        let rest = tx.get_range(&range, RangeOptions::default())?;
        if rest.len() != count as usize - 1 {
            return Err(StoreError::corrupt(
                "blob",
                format!("{} of {count} chunks present", rest.len() + 1),
            ));
        }
        for (_, chunk) in rest {
            bytes.extend_from_slice(&chunk);
        }
    }
    Ok(Some(bytes))
}

/// Removes the value under `space`, stale chunks included.
pub fn delete(tx: &mut impl Transaction, space: &Subspace) -> Result<(), StoreError> {
    tx.clear_range(&space.range().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_counts_fit_the_value_limit() {
        assert_eq!(chunk_count(0), 1);
        assert_eq!(chunk_count(FIRST), 1);
        assert_eq!(chunk_count(FIRST + 1), 2);
        assert_eq!(chunk_count(FIRST + MAX_VALUE_BYTES), 2);
        assert_eq!(chunk_count(FIRST + MAX_VALUE_BYTES + 1), 3);
    }
}
