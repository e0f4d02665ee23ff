//! Artifacts (firmware images and other files jobs hand to devices): `(root, "artifact", name)`
//! → [`ArtifactRecord`] as JSON, and the content in 64 KiB chunks under
//! `(root, "artchunk", name, upload, index)`. An upload writes its chunks in transactions of a
//! few MiB, then its record in one more: readers see the previous upload whole until then, and
//! never a part of an upload.

use crate::{
    error::StoreError,
    kv::{KeyRange, RangeOptions, Transaction},
    repo::records::Keyed,
};
use foundationdb_tuple::Subspace;
use serde::{Deserialize, Serialize};

/// Bytes per chunk (within FoundationDB's 100 kB value limit).
pub const ARTIFACT_CHUNK: usize = 64 * 1024;

/// An artifact as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactRecord {
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the content, hex.
    pub sha256: String,
    /// The upload whose chunks hold the content.
    pub upload: String,
    pub created_at: u64,
    pub created_by: String,
}

impl Keyed for ArtifactRecord {
    fn key(&self) -> &str {
        &self.name
    }
}

/// Artifact content.
#[derive(Clone, Debug)]
pub struct ArtifactChunks {
    space: Subspace,
}

impl ArtifactChunks {
    pub(crate) fn new(space: Subspace) -> Self {
        Self { space }
    }

    /// Writes chunk `index` of an upload.
    pub fn put(
        &self,
        tx: &mut impl Transaction,
        name: &str,
        upload: &str,
        index: u32,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        tx.set(&self.space.pack(&(name, upload, index)), bytes)
    }

    /// Chunks `from..to` of an upload, in order.
    pub fn get(
        &self,
        tx: &mut impl Transaction,
        name: &str,
        upload: &str,
        from: u32,
        to: u32,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let range = KeyRange::new(
            self.space.pack(&(name, upload, from)),
            self.space.pack(&(name, upload, to)),
        );
        Ok(tx
            .get_range(&range, RangeOptions::default())?
            .into_iter()
            .map(|(_, value)| value)
            .collect())
    }

    /// Removes an upload's chunks.
    pub fn remove(
        &self,
        tx: &mut impl Transaction,
        name: &str,
        upload: &str,
    ) -> Result<(), StoreError> {
        let (begin, end) = self.space.subspace(&(name, upload)).range();
        tx.clear_range(&KeyRange::new(begin, end))
    }
}
