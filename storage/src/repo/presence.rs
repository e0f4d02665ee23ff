//! Device connectivity, `(root, "presence", thing)` → [`Presence`] as JSON: whether the device
//! is connected, since when, when it was last seen, and why it last disconnected.

use crate::{error::StoreError, kv::Transaction};
use foundationdb_tuple::Subspace;
use serde::{Deserialize, Serialize};

/// A device's connectivity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    /// Whether a session is open.
    pub connected: bool,
    /// When it connected or disconnected, epoch ms.
    pub since: u64,
    /// When the node last heard from it (its connect or disconnect), epoch ms.
    pub last_seen: u64,
    /// Why the last session ended (AWS IoT's `disconnectReason` vocabulary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disconnect_reason: Option<String>,
}

/// Connectivity records.
#[derive(Clone, Debug)]
pub struct Presences {
    space: Subspace,
}

impl Presences {
    pub(crate) fn new(space: Subspace) -> Self {
        Self { space }
    }

    /// A thing's connectivity, if it ever connected.
    pub fn get(
        &self,
        tx: &mut impl Transaction,
        thing: &str,
    ) -> Result<Option<Presence>, StoreError> {
        tx.get(&self.space.pack(&thing))?
            .map(|bytes| {
                serde_json::from_slice(&bytes).map_err(|e| StoreError::corrupt("presence", e))
            })
            .transpose()
    }

    /// The connectivity of each of `things`, in order (`None`: never connected).
    pub fn get_many(
        &self,
        tx: &mut impl Transaction,
        things: &[&str],
    ) -> Result<Vec<Option<Presence>>, StoreError> {
        let keys: Vec<Vec<u8>> = things.iter().map(|t| self.space.pack(t)).collect();
        tx.get_many(&keys)?
            .into_iter()
            .map(|bytes| {
                bytes
                    .map(|b| {
                        serde_json::from_slice(&b).map_err(|e| StoreError::corrupt("presence", e))
                    })
                    .transpose()
            })
            .collect()
    }

    /// Writes a thing's connectivity.
    pub fn put(
        &self,
        tx: &mut impl Transaction,
        thing: &str,
        presence: &Presence,
    ) -> Result<(), StoreError> {
        tx.set(
            &self.space.pack(&thing),
            &serde_json::to_vec(presence).unwrap_or_default(),
        )
    }

    /// Forgets a thing's connectivity (decommissioned).
    pub fn remove(&self, tx: &mut impl Transaction, thing: &str) -> Result<(), StoreError> {
        tx.clear(&self.space.pack(&thing))
    }
}
