//! Cluster membership and shard ownership, `(root, "node", name)` and `(root, "shard", n)`:
//! the records through which nodes sharing a store agree, by the store's serializable
//! transactions, on who is alive and who owns which shard.

use crate::{
    error::StoreError,
    kv::{KeyRange, RangeOptions, Transaction},
};
use foundationdb_tuple::Subspace;
use serde::{Deserialize, Serialize};

/// A node of the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Its name, unique in the cluster.
    pub name: String,
    /// Where its peers reach it (node-to-node), `host:port`.
    pub addr: String,
    /// Its lease runs until then (epoch ms); it renews it while it lives.
    pub expires: u64,
    /// When it (last) started, epoch ms.
    pub started: u64,
}

/// The owner of one virtual shard.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardRecord {
    /// The owning node, or none: released, or never taken.
    pub owner: Option<String>,
    /// Rises by one with every change of owner; every commit of the shard's twins checks it.
    pub epoch: u64,
}

/// Membership and ownership records.
#[derive(Clone, Debug)]
pub struct Cluster {
    nodes: Subspace,
    shards: Subspace,
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::corrupt("cluster record", e))
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

impl Cluster {
    pub(crate) fn new(nodes: Subspace, shards: Subspace) -> Self {
        Self { nodes, shards }
    }

    /// Writes a node's record (a renewal writes without reading: renewals never conflict).
    pub fn put_node(&self, tx: &mut impl Transaction, node: &NodeRecord) -> Result<(), StoreError> {
        tx.set(&self.nodes.pack(&node.name.as_str()), &encode(node))
    }

    /// Removes a node's record (it left).
    pub fn remove_node(&self, tx: &mut impl Transaction, name: &str) -> Result<(), StoreError> {
        tx.clear(&self.nodes.pack(&name))
    }

    /// Every node record, by name.
    pub fn nodes(&self, tx: &mut impl Transaction) -> Result<Vec<NodeRecord>, StoreError> {
        let (begin, end) = self.nodes.range();
        tx.get_range(&KeyRange::new(begin, end), RangeOptions::default())?
            .into_iter()
            .map(|(_, value)| decode(&value))
            .collect()
    }

    /// The records of shards `0..count` (absent ones: never taken).
    pub fn shards(
        &self,
        tx: &mut impl Transaction,
        count: u32,
    ) -> Result<Vec<ShardRecord>, StoreError> {
        let (begin, end) = self.shards.range();
        let mut all = vec![ShardRecord::default(); count as usize];
        for (key, value) in tx.get_range(&KeyRange::new(begin, end), RangeOptions::default())? {
            let shard: u32 = self
                .shards
                .unpack(&key)
                .map_err(|e| StoreError::corrupt("shard key", e))?;
            if let Some(slot) = all.get_mut(shard as usize) {
                *slot = decode(&value)?;
            }
        }
        Ok(all)
    }

    /// The records of some shards, in the order asked (one read for all of them).
    pub fn shards_of(
        &self,
        tx: &mut impl Transaction,
        shards: &[u32],
    ) -> Result<Vec<ShardRecord>, StoreError> {
        let keys: Vec<Vec<u8>> = shards.iter().map(|s| self.shards.pack(s)).collect();
        tx.get_many(&keys)?
            .into_iter()
            .map(|value| value.map_or_else(|| Ok(ShardRecord::default()), |v| decode(&v)))
            .collect()
    }

    /// Writes a shard's record.
    pub fn put_shard(
        &self,
        tx: &mut impl Transaction,
        shard: u32,
        record: &ShardRecord,
    ) -> Result<(), StoreError> {
        tx.set(&self.shards.pack(&shard), &encode(record))
    }
}
