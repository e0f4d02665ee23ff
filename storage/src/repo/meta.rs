//! Single named records of a deployment, `(root, "meta", name)`: settings the node keeps
//! across restarts (the bootstrap admin token's hash).

use crate::{error::StoreError, kv::Transaction};
use foundationdb_tuple::Subspace;

/// Named records.
#[derive(Clone, Debug)]
pub struct Meta {
    space: Subspace,
}

impl Meta {
    pub(crate) fn new(space: Subspace) -> Self {
        Self { space }
    }

    /// The record `name`.
    pub fn get(
        &self,
        tx: &mut impl Transaction,
        name: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        tx.get(&self.space.pack(&name))
    }

    /// Replaces the record `name`.
    pub fn set(
        &self,
        tx: &mut impl Transaction,
        name: &str,
        value: &[u8],
    ) -> Result<(), StoreError> {
        tx.set(&self.space.pack(&name), value)
    }
}
