//! The storage crate's error type.

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another transaction changed what this one read; retrying may succeed.
    #[error("transaction conflict")]
    Conflict,
    /// A key over [`crate::MAX_KEY_BYTES`].
    #[error("key of {size} bytes exceeds the limit of {max} bytes")]
    KeyTooLarge {
        /// The key's length.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A value over [`crate::MAX_VALUE_BYTES`]; larger documents are split by the repositories.
    #[error("value of {size} bytes exceeds the limit of {max} bytes")]
    ValueTooLarge {
        /// The value's length.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A transaction whose writes exceed [`crate::MAX_TRANSACTION_BYTES`].
    #[error("transaction of {size} bytes exceeds the limit of {max} bytes")]
    TransactionTooLarge {
        /// The bytes written so far, this write included.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The transaction was used after it committed or failed without `on_error`.
    #[error("transaction used after commit")]
    Finished,
    /// The embedded engine failed (I/O, corruption, a poisoned engine).
    #[error("embedded store: {0}")]
    Engine(String),
    /// FoundationDB refused the operation.
    #[error("foundationdb error {code}: {message}")]
    Fdb {
        /// FoundationDB's error code.
        code: i32,
        /// Its description.
        message: String,
    },
    /// A PostgreSQL-wire database refused a statement.
    #[error("sql error {code}: {message}")]
    Sql {
        /// The SQLSTATE.
        code: String,
        /// The server's message.
        message: String,
    },
    /// The store cannot be reached (no connection, or it broke); retrying later may succeed.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store's settings are wrong (a bad URL or option).
    #[error("store configuration: {0}")]
    Config(String),
    /// A stored record that does not decode.
    #[error("corrupt record {what}: {message}")]
    Corrupt {
        /// Which record.
        what: String,
        /// Why it does not decode.
        message: String,
    },
}

impl StoreError {
    /// Whether retrying the same writes can never succeed: a key, value or transaction over
    /// the store's limits, a corrupt record, a misused transaction. Conflicts and engine or
    /// cluster failures may pass.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            StoreError::KeyTooLarge { .. }
                | StoreError::ValueTooLarge { .. }
                | StoreError::TransactionTooLarge { .. }
                | StoreError::Corrupt { .. }
                | StoreError::Finished
                | StoreError::Config(_)
        ) || matches!(self, StoreError::Sql { code, .. } if sql_is_permanent(code))
    }

    /// Whether the writes were refused for their size.
    pub fn is_too_large(&self) -> bool {
        matches!(
            self,
            StoreError::KeyTooLarge { .. }
                | StoreError::ValueTooLarge { .. }
                | StoreError::TransactionTooLarge { .. }
        )
    }

    pub(crate) fn corrupt(what: impl std::fmt::Display, message: impl std::fmt::Display) -> Self {
        StoreError::Corrupt {
            what: what.to_string(),
            message: message.to_string(),
        }
    }
}

/// SQLSTATE classes that the same statement will hit again: data exceptions (`22`), syntax or
/// access rules (`42`), program limits such as an index entry over its maximum (`54`).
fn sql_is_permanent(code: &str) -> bool {
    matches!(code.get(..2), Some("22" | "42" | "54"))
}
