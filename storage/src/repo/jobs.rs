//! Jobs (AWS IoT Jobs): `(root, "job", id)` → [`JobRecord`] as JSON, and the index of their
//! executions, `(root, "jobexec", job, thing)` → the execution's latest
//! [`twin_core::ExecutionChange`] as JSON, written in the commit of the twin that holds the
//! execution (the twin's record is the execution's truth; the index lists and counts them).

use crate::{
    error::StoreError,
    kv::{KeyRange, RangeOptions, Transaction, key_after},
    repo::records::Keyed,
};
use foundationdb_tuple::Subspace;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use twin_core::{ExecStatus, ExecutionChange};

/// Which things a job targets: these things, and every thing of these device types.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobTargets {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub things: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<String>,
}

/// How fast a job reaches its targets: `rate_per_minute` executions queued per minute,
/// multiplied by `factor` every `every_succeeded` succeeded executions (AWS's exponential
/// rollout), never beyond 1,000 a minute.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    pub rate_per_minute: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub increase: Option<RateIncrease>,
}

/// When and by how much a rollout speeds up.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RateIncrease {
    pub factor: f64,
    pub every_succeeded: u64,
}

/// Stop the job when `failure` executions (`FAILED`, `REJECTED`, `TIMED_OUT`, or `ALL` of
/// them) reach `percent` of the executions finished, once at least `min_executed` finished.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AbortCriterion {
    pub failure: String,
    pub percent: f64,
    pub min_executed: u64,
}

/// Where a rollout is: the next listed thing, the last thing of the targeted types queued,
/// how many were queued, whether every target was, the current rate and the succeeded count
/// that raises it next.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub next_listed: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    pub queued: u64,
    pub done: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_per_minute: Option<f64>,
    #[serde(default)]
    pub next_increase: u64,
}

/// A job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: String,
    /// What devices are told to do (for firmware: version, artifact, SHA-256, size).
    pub document: serde_json::Value,
    pub targets: JobTargets,
    /// Artifacts its devices may download.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<String>,
    /// How long an execution may stay in progress, minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_minutes: Option<u64>,
    /// `IN_PROGRESS`, `CANCELED`, or `COMPLETED` (stored once every execution of a job the
    /// rollout watches finished; apps see any finished job as complete).
    pub status: String,
    /// Canceled with `force`: executions in progress were canceled too.
    #[serde(default)]
    pub force_canceled: bool,
    pub created_at: u64,
    pub created_by: String,
    pub updated_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub abort: Vec<AbortCriterion>,
    #[serde(default)]
    pub progress: Progress,
    /// Also for things that join its targets later (it never completes).
    #[serde(default)]
    pub continuous: bool,
    /// Why it was canceled by the node (an abort criterion crossed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Keyed for JobRecord {
    fn key(&self) -> &str {
        &self.id
    }
}

/// The execution index.
#[derive(Clone, Debug)]
pub struct JobExecutions {
    space: Subspace,
}

fn decode(bytes: &[u8]) -> Result<ExecutionChange, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::corrupt("job execution", e))
}

impl JobExecutions {
    pub(crate) fn new(space: Subspace) -> Self {
        Self { space }
    }

    /// Records an execution's latest state.
    pub fn put(
        &self,
        tx: &mut impl Transaction,
        thing: &str,
        change: &ExecutionChange,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_vec(change).unwrap_or_default();
        tx.set(&self.space.pack(&(change.job_id.as_str(), thing)), &json)
    }

    /// A job's executions in thing order after `after`, at most `limit`, with `status` only
    /// if given.
    pub fn list(
        &self,
        tx: &mut impl Transaction,
        job: &str,
        after: Option<&str>,
        limit: usize,
        status: Option<ExecStatus>,
    ) -> Result<(Vec<(String, ExecutionChange)>, bool), StoreError> {
        let (mut begin, end) = self.space.subspace(&job).range();
        if let Some(after) = after {
            begin = key_after(self.space.pack(&(job, after)));
        }
        let mut found = Vec::new();
        loop {
            let page = tx.get_range(
                &KeyRange::new(begin.clone(), end.clone()),
                RangeOptions::first(1_000),
            )?;
            let exhausted = page.len() < 1_000;
            for (key, value) in &page {
                let (_, thing): (String, String) = self
                    .space
                    .unpack(key)
                    .map_err(|e| StoreError::corrupt("job execution key", e))?;
                let change = decode(value)?;
                if status.is_none_or(|s| s == change.status) {
                    if found.len() == limit {
                        return Ok((found, true));
                    }
                    found.push((thing, change));
                }
            }
            match page.last() {
                Some((key, _)) if !exhausted => begin = key_after(key.clone()),
                _ => return Ok((found, false)),
            }
        }
    }

    /// A thing's execution of a job, if it has one.
    pub fn get(
        &self,
        tx: &mut impl Transaction,
        job: &str,
        thing: &str,
    ) -> Result<Option<ExecutionChange>, StoreError> {
        tx.get(&self.space.pack(&(job, thing)))?
            .map(|bytes| decode(&bytes))
            .transpose()
    }

    /// How many of a job's executions are in each state.
    pub fn counts(
        &self,
        tx: &mut impl Transaction,
        job: &str,
    ) -> Result<BTreeMap<ExecStatus, u64>, StoreError> {
        let (mut begin, end) = self.space.subspace(&job).range();
        let mut counts = BTreeMap::new();
        loop {
            let page = tx.get_range(
                &KeyRange::new(begin.clone(), end.clone()),
                RangeOptions::first(1_000),
            )?;
            for (_, value) in &page {
                *counts.entry(decode(value)?.status).or_insert(0) += 1;
            }
            match page.last() {
                Some((key, _)) if page.len() == 1_000 => begin = key_after(key.clone()),
                _ => return Ok(counts),
            }
        }
    }
}
