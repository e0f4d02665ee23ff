//! Copying a whole deployment between stores (`doppel store copy`): every key under the root, in
//! key order, in transactions within FoundationDB's limits; then both sides are read again and
//! compared by count and digest. Keys are the same tuples in every backend, so the copy is
//! byte for byte.

use crate::{
    error::StoreError,
    kv::{KeyRange, KeyValue, RangeOptions, Store, Transaction, key_after},
};
use xxhash_rust::xxh3::Xxh3;

/// Keys read per page of the source.
const PAGE_KEYS: usize = 1_000;
/// Bytes written per transaction into the target (well under FoundationDB's 10 MB).
const BATCH_BYTES: usize = 4_000_000;

/// What a copy moved, and what each side holds once it is done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Copied {
    /// Keys copied.
    pub keys: u64,
    /// Bytes of keys and values copied.
    pub bytes: u64,
    /// Digest of every key and value in order (the same on both sides).
    pub digest: u64,
}

/// Copies every key of `range` from `from` into `to`, which must hold none there yet;
/// `progress` hears the keys and bytes copied so far. Stop the nodes using `from` first: a copy
/// is not a snapshot of a store being written.
pub fn copy<F: Store, T: Store>(
    from: &F,
    to: &T,
    range: &KeyRange,
    mut progress: impl FnMut(&Copied),
) -> Result<Copied, StoreError> {
    let first = to.transact(|tx| tx.get_range(range, RangeOptions::first(1)))?;
    if !first.is_empty() {
        return Err(StoreError::Config(
            "the target store holds a deployment already; copy into an empty one".into(),
        ));
    }
    let mut copied = Copied::default();
    let mut digest = Xxh3::new();
    scan(from, range, |page| {
        for batch in batches(page) {
            to.transact(|tx| batch.iter().try_for_each(|(k, v)| tx.set(k, v)))?;
        }
        for (key, value) in page {
            add(&mut digest, key, value);
            copied.keys += 1;
            copied.bytes += (key.len() + value.len()) as u64;
        }
        progress(&copied);
        Ok(())
    })?;
    copied.digest = digest.digest();
    let written = summarize(to, range)?;
    if written != copied {
        return Err(StoreError::Corrupt {
            what: "copied store".into(),
            message: format!(
                "the target holds {} keys ({} bytes, digest {:x}) after copying {} keys ({} bytes, digest {:x})",
                written.keys,
                written.bytes,
                written.digest,
                copied.keys,
                copied.bytes,
                copied.digest
            ),
        });
    }
    Ok(copied)
}

/// Counts and digests every key of `range` in `store`.
pub fn summarize<S: Store>(store: &S, range: &KeyRange) -> Result<Copied, StoreError> {
    let mut summary = Copied::default();
    let mut digest = Xxh3::new();
    scan(store, range, |page| {
        for (key, value) in page {
            add(&mut digest, key, value);
            summary.keys += 1;
            summary.bytes += (key.len() + value.len()) as u64;
        }
        Ok(())
    })?;
    summary.digest = digest.digest();
    Ok(summary)
}

fn add(digest: &mut Xxh3, key: &[u8], value: &[u8]) {
    digest.update(&(key.len() as u64).to_le_bytes());
    digest.update(key);
    digest.update(&(value.len() as u64).to_le_bytes());
    digest.update(value);
}

/// Reads `range` page by page, in key order, each page in its own transaction.
fn scan<S: Store>(
    store: &S,
    range: &KeyRange,
    mut page: impl FnMut(&[KeyValue]) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let mut begin = range.begin.clone();
    loop {
        let rows = store.transact(|tx| {
            tx.get_range(
                &KeyRange::new(begin.clone(), range.end.clone()),
                RangeOptions::first(PAGE_KEYS),
            )
        })?;
        let Some((last, _)) = rows.last() else {
            return Ok(());
        };
        // The next page starts just after the last key read.
        begin = key_after(last.clone());
        page(&rows)?;
        if rows.len() < PAGE_KEYS {
            return Ok(());
        }
    }
}

/// Splits a page into write batches of at most [`BATCH_BYTES`].
fn batches(page: &[KeyValue]) -> Vec<&[KeyValue]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, (key, value)) in page.iter().enumerate() {
        let size = key.len() + value.len();
        if bytes + size > BATCH_BYTES && i > start {
            out.push(&page[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < page.len() {
        out.push(&page[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FjallStore;

    #[test]
    fn batches_stay_under_the_byte_bound_and_keep_every_pair() {
        let page: Vec<KeyValue> = (0..100u8).map(|i| (vec![i], vec![0; 100_000])).collect();
        let parts = batches(&page);
        assert!(parts.iter().all(|b| b.len() * 100_001 <= BATCH_BYTES));
        assert_eq!(parts.iter().map(|b| b.len()).sum::<usize>(), 100);
    }

    #[test]
    fn a_copy_holds_every_key_and_refuses_a_full_target() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (from, to) = (
            FjallStore::open(a.path()).unwrap(),
            FjallStore::open(b.path()).unwrap(),
        );
        let range = KeyRange::new(vec![1], vec![2]);
        from.transact(|tx| {
            (0..2_500u32).try_for_each(|i| {
                let mut key = vec![1];
                key.extend(i.to_be_bytes());
                tx.set(&key, &i.to_le_bytes())
            })?;
            tx.set(&[3], b"outside the range")
        })
        .unwrap();
        let mut seen = Vec::new();
        let copied = copy(&from, &to, &range, |c| seen.push(c.keys)).unwrap();
        assert_eq!(copied.keys, 2_500);
        assert_eq!(seen, vec![1_000, 2_000, 2_500]);
        assert_eq!(summarize(&to, &range).unwrap(), copied);
        assert_eq!(to.transact(|tx| tx.get(&[3])).unwrap(), None);
        let again = copy(&from, &to, &range, |_| {}).unwrap_err();
        assert!(again.to_string().contains("holds a deployment"), "{again}");
    }
}
