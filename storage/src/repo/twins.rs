//! Twin state: one record per thing holding all its shadows.

use super::blob;
use crate::{error::StoreError, kv::Transaction};
use foundationdb_tuple::Subspace;
use twin_core::{ThingName, Twin};

/// The twins repository.
#[derive(Clone, Debug)]
pub struct Twins {
    space: Subspace,
}

impl Twins {
    pub(crate) fn new(space: Subspace) -> Self {
        Self { space }
    }

    fn of(&self, thing: &ThingName) -> Subspace {
        self.space.subspace(&thing.as_str())
    }

    /// The twin of `thing`, if it was ever saved.
    pub fn load(
        &self,
        tx: &mut impl Transaction,
        thing: &ThingName,
    ) -> Result<Option<Twin>, StoreError> {
        blob::get(tx, &self.of(thing))?
            .map(|bytes| {
                Twin::decode(thing.clone(), &bytes)
                    .map_err(|e| StoreError::corrupt(format!("twin {thing}"), e))
            })
            .transpose()
    }

    /// The encoded record of `thing` (as `Twin::encode` wrote it), if it was ever saved.
    pub fn load_encoded(
        &self,
        tx: &mut impl Transaction,
        thing: &ThingName,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        blob::get(tx, &self.of(thing))
    }

    /// Saves `twin`.
    pub fn save(&self, tx: &mut impl Transaction, twin: &Twin) -> Result<(), StoreError> {
        self.save_encoded(tx, twin.thing(), &twin.encode())
    }

    /// Saves a twin already encoded with `Twin::encode` (group commit encodes outside the
    /// transaction).
    pub fn save_encoded(
        &self,
        tx: &mut impl Transaction,
        thing: &ThingName,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        blob::put(tx, &self.of(thing), bytes)
    }

    /// Removes the twin of `thing`.
    pub fn remove(&self, tx: &mut impl Transaction, thing: &ThingName) -> Result<(), StoreError> {
        blob::delete(tx, &self.of(thing))
    }
}
