//! Artifacts jobs hand to devices (firmware images): uploads streamed into the store in
//! chunks (the same store every node of a cluster reads), their SHA-256, reads of any byte
//! range, and whether a thing may download one (it has an execution of a job that lists it).

use crate::{directory::Directory, error::NodeError, node::Node, pool::store_call};
use serde_json::json;
use sha2::{Digest, Sha256};
pub use storage::repo::ArtifactRecord;
use storage::{AuditEntry, Store, repo::ARTIFACT_CHUNK};

/// Bytes an upload buffers before writing them (one transaction).
const BATCH: usize = 64 * ARTIFACT_CHUNK;

/// Whether `name` is an artifact name: 1 to 128 of `a-z A-Z 0-9 . _ -`, not starting with `.`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// An upload in progress: its chunks are written as they come, its record at the end.
pub struct Upload {
    node: Node,
    name: String,
    id: String,
    hasher: Sha256,
    buffer: Vec<u8>,
    next_chunk: u32,
    size: u64,
    max: u64,
    finished: bool,
}

impl std::fmt::Debug for Upload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upload")
            .field("name", &self.name)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Starts uploading artifact `name` (replacing any earlier content once finished).
    pub fn begin_artifact(&self, name: &str) -> Result<Upload, NodeError> {
        if !valid_name(name) {
            return Err(NodeError::InvalidRequest(
                "an artifact name is 1 to 128 of a-z A-Z 0-9 . _ - (not starting with .)".into(),
            ));
        }
        Ok(Upload {
            node: self.clone(),
            name: name.to_owned(),
            id: crate::directory::new_token(),
            hasher: Sha256::new(),
            buffer: Vec::with_capacity(BATCH),
            next_chunk: 0,
            size: 0,
            max: self.config().max_artifact_bytes,
            finished: false,
        })
    }

    /// An artifact's record.
    pub async fn artifact(&self, name: String) -> Result<ArtifactRecord, NodeError> {
        self.with_directory(move |d| {
            d.store()
                .transact(|tx| d.repos().artifacts.get(tx, &name))?
                .ok_or(NodeError::ArtifactNotFound(name))
        })
        .await
    }

    /// Every artifact, by name.
    pub async fn artifacts(&self) -> Result<Vec<ArtifactRecord>, NodeError> {
        self.with_directory(|d| {
            Ok(d.store()
                .transact(|tx| d.repos().artifacts.list(tx, None, 10_000))?)
        })
        .await
    }

    /// Deletes an artifact and its content (audited).
    pub async fn delete_artifact(&self, name: String, actor: &str) -> Result<(), NodeError> {
        let actor = actor.to_owned();
        self.with_directory(move |d| {
            let repos = d.repos();
            let found = d.store().transact(|tx| {
                let Some(record) = repos.artifacts.get(tx, &name)? else {
                    return Ok(false);
                };
                repos.artifacts.delete(tx, &name)?;
                repos.artifact_chunks.remove(tx, &name, &record.upload)?;
                repos.audit.append(
                    tx,
                    &AuditEntry::new(
                        &actor,
                        "artifact.delete",
                        &name,
                        None,
                        None,
                        None,
                        crate::now_ms(),
                    ),
                )?;
                Ok(true)
            })?;
            found.then_some(()).ok_or(NodeError::ArtifactNotFound(name))
        })
        .await
    }

    /// Bytes `start..end` of an artifact's content (a few MiB at most per call).
    pub async fn read_artifact(
        &self,
        record: &ArtifactRecord,
        start: u64,
        end: u64,
    ) -> Result<bytes::Bytes, NodeError> {
        let (name, upload) = (record.name.clone(), record.upload.clone());
        let chunk = ARTIFACT_CHUNK as u64;
        let (first, last) = ((start / chunk) as u32, end.div_ceil(chunk) as u32);
        let chunks = {
            let directory = self.directory().clone();
            store_call(move || {
                directory.store().transact(|tx| {
                    directory
                        .repos()
                        .artifact_chunks
                        .get(tx, &name, &upload, first, last)
                })
            })
            .await?
        };
        let joined: Vec<u8> = chunks.concat();
        let offset = (start - u64::from(first) * chunk) as usize;
        let len = (end - start) as usize;
        if joined.len() < offset + len {
            return Err(NodeError::Io(format!(
                "artifact {} is missing content",
                record.name
            )));
        }
        Ok(bytes::Bytes::copy_from_slice(&joined[offset..offset + len]))
    }

    /// Whether `thing` may download `artifact`: it has an execution of a job that lists it.
    pub async fn may_download(&self, thing: String, artifact: String) -> Result<bool, NodeError> {
        self.with_directory(move |d| d.may_download(&thing, &artifact))
            .await
    }
}

impl Directory {
    fn may_download(&self, thing: &str, artifact: &str) -> Result<bool, NodeError> {
        let repos = self.repos();
        Ok(self.store().transact(|tx| {
            for job in repos.jobs.list(tx, None, usize::MAX)? {
                if job.artifacts.iter().any(|a| a == artifact)
                    && repos.job_executions.get(tx, &job.id, thing)?.is_some()
                {
                    return Ok(true);
                }
            }
            Ok(false)
        })?)
    }
}

impl Upload {
    /// Takes the next bytes of the content.
    pub async fn write(&mut self, data: &[u8]) -> Result<(), NodeError> {
        self.size += data.len() as u64;
        if self.size > self.max {
            return Err(NodeError::TooLarge(format!(
                "an artifact has at most {} bytes",
                self.max
            )));
        }
        self.hasher.update(data);
        self.buffer.extend_from_slice(data);
        if self.buffer.len() >= BATCH {
            self.flush(false).await?;
        }
        Ok(())
    }

    /// Writes the buffered whole chunks (all of them, the last one partial, if `all`).
    async fn flush(&mut self, all: bool) -> Result<(), NodeError> {
        let whole = if all {
            self.buffer.len()
        } else {
            self.buffer.len() / ARTIFACT_CHUNK * ARTIFACT_CHUNK
        };
        if whole == 0 {
            return Ok(());
        }
        let rest = self.buffer.split_off(whole);
        let data = std::mem::replace(&mut self.buffer, rest);
        let (name, id, first) = (self.name.clone(), self.id.clone(), self.next_chunk);
        self.next_chunk += data.len().div_ceil(ARTIFACT_CHUNK) as u32;
        let directory = self.node.directory().clone();
        store_call(move || {
            directory.store().transact(|tx| {
                for (i, chunk) in data.chunks(ARTIFACT_CHUNK).enumerate() {
                    directory.repos().artifact_chunks.put(
                        tx,
                        &name,
                        &id,
                        first + i as u32,
                        chunk,
                    )?;
                }
                Ok(())
            })
        })
        .await
    }

    /// Writes the rest and the record, replacing an earlier upload of the name (audited).
    pub async fn finish(mut self, actor: &str) -> Result<ArtifactRecord, NodeError> {
        if self.size == 0 {
            return Err(NodeError::InvalidRequest(
                "an artifact has at least one byte (the request body)".into(),
            ));
        }
        self.flush(true).await?;
        self.finished = true;
        let record = ArtifactRecord {
            name: self.name.clone(),
            size: self.size,
            sha256: hex::encode(self.hasher.clone().finalize()),
            upload: self.id.clone(),
            created_at: crate::now_ms(),
            created_by: actor.to_owned(),
        };
        let directory = self.node.directory().clone();
        let stored = record.clone();
        store_call(move || {
            let repos = directory.repos();
            directory.store().transact(|tx| {
                if let Some(old) = repos.artifacts.get(tx, &stored.name)? {
                    repos
                        .artifact_chunks
                        .remove(tx, &stored.name, &old.upload)?;
                }
                repos.artifacts.put(tx, &stored)?;
                repos.audit.append(
                    tx,
                    &AuditEntry::new(
                        &stored.created_by,
                        "artifact.upload",
                        &stored.name,
                        None,
                        None,
                        Some(json!({ "size": stored.size, "sha256": stored.sha256 })),
                        stored.created_at,
                    ),
                )
            })
        })
        .await?;
        Ok(record)
    }
}

impl Drop for Upload {
    /// An upload abandoned (a refused or broken request) removes what it wrote.
    fn drop(&mut self) {
        if self.finished || self.next_chunk == 0 {
            return;
        }
        let (directory, name, id) = (
            self.node.directory().clone(),
            self.name.clone(),
            self.id.clone(),
        );
        tokio::task::spawn_blocking(move || {
            let _ = directory
                .store()
                .transact(|tx| directory.repos().artifact_chunks.remove(tx, &name, &id));
        });
    }
}
