//! Store calls leave the async runtime's threads: `blocking` runs one on the blocking pool.

use crate::error::NodeError;

/// Runs a blocking store call on the blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, NodeError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| NodeError::Io(e.to_string()))
}

/// Runs a blocking store call on the blocking pool; its error becomes the node's.
pub(crate) async fn store_call<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, storage::StoreError> + Send + 'static,
) -> Result<T, NodeError> {
    Ok(blocking(f).await??)
}
