//! The store interface, shaped after FoundationDB: one ordered key space, serializable
//! multi-key transactions with reads, range reads and writes, and a retry loop driven by the
//! backend's `on_error`. Every backend enforces FoundationDB's size limits so that code tested
//! on the embedded store also runs on a cluster.

use crate::error::StoreError;

/// Longest key (FoundationDB: 10,000 bytes).
pub const MAX_KEY_BYTES: usize = 10_000;
/// Largest value (FoundationDB: 100,000 bytes). Repositories split larger documents.
pub const MAX_VALUE_BYTES: usize = 100_000;
/// Most bytes one transaction may write (FoundationDB: 10 MB).
pub const MAX_TRANSACTION_BYTES: usize = 10_000_000;

/// A key and its value.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// A half-open key range `[begin, end)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRange {
    /// First key in the range.
    pub begin: Vec<u8>,
    /// First key after the range.
    pub end: Vec<u8>,
}

impl KeyRange {
    /// `[begin, end)`.
    pub fn new(begin: impl Into<Vec<u8>>, end: impl Into<Vec<u8>>) -> Self {
        Self {
            begin: begin.into(),
            end: end.into(),
        }
    }
}

impl From<(Vec<u8>, Vec<u8>)> for KeyRange {
    fn from((begin, end): (Vec<u8>, Vec<u8>)) -> Self {
        Self { begin, end }
    }
}

/// Options of a range read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RangeOptions {
    /// Return at most this many pairs (`None`: all).
    pub limit: Option<usize>,
    /// Return pairs from the end of the range backwards.
    pub reverse: bool,
}

impl RangeOptions {
    /// The first `limit` pairs, in key order.
    pub fn first(limit: usize) -> Self {
        Self {
            limit: Some(limit),
            reverse: false,
        }
    }
}

/// The first key after `key` (it, followed by a zero byte): where the page after a cursor
/// begins.
pub fn key_after(mut key: Vec<u8>) -> Vec<u8> {
    key.push(0);
    key
}

/// One transaction. Reads see the transaction's own writes; commit is atomic and serializable:
/// it fails with a retryable error when the transaction cannot be ordered after those that
/// committed first (FoundationDB and the embedded store: whenever anything it read was changed
/// since; PostgreSQL: when its reads and writes form a cycle with theirs). A returned commit is
/// durable.
pub trait Transaction {
    /// The value under `key`.
    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// The values under `keys`, in the same order (backends that pay a round trip per read
    /// answer in one).
    fn get_many(&mut self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        keys.iter().map(|key| self.get(key)).collect()
    }
    /// The pairs in `range`, in key order (or reversed).
    fn get_range(
        &mut self,
        range: &KeyRange,
        options: RangeOptions,
    ) -> Result<Vec<KeyValue>, StoreError>;
    /// Writes `value` under `key`.
    fn set(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError>;
    /// Removes `key`.
    fn clear(&mut self, key: &[u8]) -> Result<(), StoreError>;
    /// Removes every key in `range`.
    fn clear_range(&mut self, range: &KeyRange) -> Result<(), StoreError>;
    /// Commits; on success the writes are durable.
    fn commit(&mut self) -> Result<(), StoreError>;
    /// Prepares the transaction for another attempt after `error` (backing off as the backend
    /// advises), or returns `error` when retrying cannot help.
    fn on_error(&mut self, error: StoreError) -> Result<(), StoreError>;
}

/// An ordered, transactional key-value store.
pub trait Store: Send + Sync + 'static {
    /// The backend's transaction.
    type Tx: Transaction;

    /// Starts a transaction.
    fn begin(&self) -> Result<Self::Tx, StoreError>;

    /// Runs `body` in a transaction and commits it, retrying the whole body while the backend
    /// says the failure is retryable. `body` may therefore run more than once.
    fn transact<T>(
        &self,
        mut body: impl FnMut(&mut Self::Tx) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut tx = self.begin()?;
        loop {
            match body(&mut tx).and_then(|value| tx.commit().map(|()| value)) {
                Ok(value) => return Ok(value),
                Err(error) => tx.on_error(error)?,
            }
        }
    }
}

/// Size accounting shared by backends: checks FoundationDB's key, value and transaction limits.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct WriteBudget {
    used: usize,
}

impl WriteBudget {
    pub(crate) fn key(&mut self, key: &[u8]) -> Result<(), StoreError> {
        if key.len() > MAX_KEY_BYTES {
            return Err(StoreError::KeyTooLarge {
                size: key.len(),
                max: MAX_KEY_BYTES,
            });
        }
        self.charge(key.len())
    }

    pub(crate) fn set(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        if value.len() > MAX_VALUE_BYTES {
            return Err(StoreError::ValueTooLarge {
                size: value.len(),
                max: MAX_VALUE_BYTES,
            });
        }
        self.key(key)?;
        self.charge(value.len())
    }

    fn charge(&mut self, bytes: usize) -> Result<(), StoreError> {
        let used = self.used + bytes;
        if used > MAX_TRANSACTION_BYTES {
            return Err(StoreError::TransactionTooLarge {
                size: used,
                max: MAX_TRANSACTION_BYTES,
            });
        }
        self.used = used;
        Ok(())
    }

    pub(crate) fn reset(&mut self) {
        self.used = 0;
    }
}
