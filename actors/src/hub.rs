//! The change hub: every committed shadow change, shared (one allocation) among all watchers.

use std::sync::Arc;
use tokio::sync::broadcast;
use twin_core::Change;

/// Committed changes, in commit order per twin.
#[derive(Clone, Debug)]
pub struct ChangeHub {
    tx: broadcast::Sender<Arc<Change>>,
}

impl ChangeHub {
    /// A hub keeping up to `capacity` changes for slow watchers.
    pub fn new(capacity: usize) -> Self {
        Self {
            tx: broadcast::channel(capacity).0,
        }
    }

    /// Publishes a committed change.
    pub fn publish(&self, change: Arc<Change>) {
        // No watcher is not an error.
        let _ = self.tx.send(change);
    }

    /// Watches changes committed from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.tx.subscribe()
    }
}
