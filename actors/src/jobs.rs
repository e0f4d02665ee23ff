//! Jobs (AWS IoT Jobs) on the node side: a job's record and its execution index in the store,
//! queuing an execution on every targeted twin, and canceling. The executions themselves live in
//! the twins (`twin_core::jobs`) and are written in their commits.

use crate::{directory::Directory, error::NodeError, node::Node, work::Deliver};
use rules_dsl::Input;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use storage::{AuditEntry, Store};
pub use storage::{JobRecord, JobTargets};
use twin_core::{ExecStatus, ExecutionChange, JobInput, ThingName, TypeName, jobs};

/// Things listed by a job at most (more: target a device type).
pub const MAX_TARGET_THINGS: usize = 10_000;

/// Some of a job's targets, and where the next page starts.
type TargetPage = (Vec<ThingName>, Option<String>);

/// A job as asked for.
#[derive(Clone, Debug)]
pub struct NewJob {
    pub id: String,
    pub document: Value,
    pub targets: JobTargets,
    pub timeout_minutes: Option<u64>,
}

fn invalid(message: impl Into<String>) -> NodeError {
    NodeError::InvalidRequest(message.into())
}

impl NewJob {
    fn check(&self, directory: &Directory) -> Result<(), NodeError> {
        if !crate::mqtt::topics::job_id(&self.id) {
            return Err(invalid("a job id is 1 to 64 of a-z A-Z 0-9 _ -"));
        }
        if !self.document.is_object() {
            return Err(invalid("the job document is a JSON object"));
        }
        if self.document.to_string().len() > jobs::MAX_DOCUMENT_BYTES {
            return Err(invalid(format!(
                "the job document has at most {} bytes",
                jobs::MAX_DOCUMENT_BYTES
            )));
        }
        if self.targets.things.is_empty() && self.targets.types.is_empty() {
            return Err(invalid("targets names things or types"));
        }
        if self.targets.things.len() > MAX_TARGET_THINGS {
            return Err(invalid(format!(
                "a job lists at most {MAX_TARGET_THINGS} things; target a device type"
            )));
        }
        for thing in &self.targets.things {
            ThingName::new(thing)?;
        }
        for name in &self.targets.types {
            let t = TypeName::new(name)?;
            if directory.device_type(&t).is_none() {
                return Err(NodeError::TypeNotFound(name.clone()));
            }
        }
        if let Some(m) = self.timeout_minutes
            && !(1..=10_080).contains(&m)
        {
            return Err(invalid("timeout_minutes is 1 to 10080"));
        }
        Ok(())
    }
}

impl Directory {
    /// Stores a new job (refused if the id is taken), audited.
    pub fn put_job(&self, job: NewJob, actor: &str, now: u64) -> Result<JobRecord, NodeError> {
        job.check(self)?;
        let record = JobRecord {
            id: job.id,
            document: job.document,
            targets: job.targets,
            timeout_minutes: job.timeout_minutes,
            status: "IN_PROGRESS".into(),
            force_canceled: false,
            created_at: now,
            created_by: actor.to_owned(),
            updated_at: now,
        };
        let repos = self.repos();
        let taken = self.store().transact(|tx| {
            if repos.jobs.get(tx, &record.id)?.is_some() {
                return Ok(true);
            }
            repos.jobs.put(tx, &record)?;
            repos.audit.append(
                tx,
                &AuditEntry::new(actor, "job.create", &record.id, None, None, None, now),
            )?;
            Ok(false)
        })?;
        if taken {
            return Err(NodeError::JobExists(record.id));
        }
        Ok(record)
    }

    /// A job.
    pub fn job(&self, id: &str) -> Result<JobRecord, NodeError> {
        self.store()
            .transact(|tx| self.repos().jobs.get(tx, id))?
            .ok_or_else(|| NodeError::JobNotFound(id.to_owned()))
    }

    /// Jobs in id order after `after`, at most `limit`.
    pub fn jobs(&self, after: Option<&str>, limit: usize) -> Result<Vec<JobRecord>, NodeError> {
        Ok(self
            .store()
            .transact(|tx| self.repos().jobs.list(tx, after, limit))?)
    }

    /// How many of a job's executions are in each state.
    pub fn job_counts(&self, id: &str) -> Result<BTreeMap<ExecStatus, u64>, NodeError> {
        Ok(self
            .store()
            .transact(|tx| self.repos().job_executions.counts(tx, id))?)
    }

    /// A job's executions by thing name after `after`, at most `limit`, of one state if given;
    /// and whether there are more.
    pub fn job_executions(
        &self,
        id: &str,
        after: Option<&str>,
        limit: usize,
        status: Option<ExecStatus>,
    ) -> Result<(Vec<(String, ExecutionChange)>, bool), NodeError> {
        Ok(self.store().transact(|tx| {
            self.repos()
                .job_executions
                .list(tx, id, after, limit, status)
        })?)
    }

    /// Marks a job canceled (audited); its record after.
    fn cancel_job(
        &self,
        id: &str,
        force: bool,
        actor: &str,
        now: u64,
    ) -> Result<JobRecord, NodeError> {
        let repos = self.repos();
        self.store()
            .transact(|tx| {
                let Some(mut job) = repos.jobs.get(tx, id)? else {
                    return Ok(None);
                };
                job.status = "CANCELED".into();
                job.force_canceled |= force;
                job.updated_at = now;
                repos.jobs.put(tx, &job)?;
                repos.audit.append(
                    tx,
                    &AuditEntry::new(
                        actor,
                        "job.cancel",
                        id,
                        None,
                        None,
                        Some(json!({ "force": force })),
                        now,
                    ),
                )?;
                Ok(Some(job))
            })?
            .ok_or_else(|| NodeError::JobNotFound(id.to_owned()))
    }

    /// The things a job targets, in pages: its listed things first, then every thing of its
    /// types (in name order, after `after`). `None` once done.
    fn target_page(
        &self,
        targets: &JobTargets,
        after: Option<String>,
    ) -> Result<Option<TargetPage>, NodeError> {
        const PAGE: usize = 1_000;
        if targets.types.is_empty() {
            return Ok(None);
        }
        let page = self
            .store()
            .transact(|tx| self.repos().things.list(tx, after.as_deref(), PAGE))?;
        if page.is_empty() {
            return Ok(None);
        }
        let next = page.last().map(|r| r.name.to_string());
        let things = page
            .into_iter()
            .filter(|r| {
                r.device_type
                    .as_ref()
                    .is_some_and(|t| targets.types.iter().any(|n| n == t.as_str()))
                    && !targets.things.iter().any(|n| n == r.name.as_str())
            })
            .map(|r| r.name)
            .collect();
        Ok(Some((things, next)))
    }
}

impl Node {
    /// Creates a job and queues an execution on every targeted twin (a rollout at once; in
    /// the background for device types).
    pub async fn create_job(&self, job: NewJob, actor: &str) -> Result<JobRecord, NodeError> {
        let actor = actor.to_owned();
        let record = self
            .with_directory(move |d| d.put_job(job, &actor, crate::now_ms()))
            .await?;
        let timeout = record.timeout_minutes.map(|m| m * 60_000);
        let document = record.document.to_string();
        let input = move |id: &str| JobInput::Queue {
            job_id: id.to_owned(),
            document: document.clone(),
            in_progress_timeout_ms: timeout,
        };
        self.for_targets(&record, input).await;
        Ok(record)
    }

    /// Cancels a job: queued executions are canceled, and with `force` those in progress too.
    pub async fn cancel_job(
        &self,
        id: String,
        force: bool,
        actor: &str,
    ) -> Result<JobRecord, NodeError> {
        let actor = actor.to_owned();
        let record = self
            .with_directory(move |d| d.cancel_job(&id, force, &actor, crate::now_ms()))
            .await?;
        self.for_targets(&record, move |id: &str| JobInput::Cancel {
            job_id: id.to_owned(),
            force,
        })
        .await;
        Ok(record)
    }

    /// Sends `input` to every twin `job` targets: the listed ones now, those of its types in
    /// the background, page by page.
    async fn for_targets(
        &self,
        job: &JobRecord,
        input: impl Fn(&str) -> JobInput + Send + Sync + 'static,
    ) {
        for thing in &job.targets.things {
            if let Ok(thing) = ThingName::new(thing) {
                self.deliver_job(thing, input(&job.id));
            }
        }
        let (node, job) = (self.clone(), job.clone());
        tokio::spawn(async move {
            let mut after = None;
            loop {
                let targets = job.targets.clone();
                let page = node
                    .with_directory(move |d| d.target_page(&targets, after))
                    .await;
                match page {
                    Ok(Some((things, next))) => {
                        for thing in things {
                            node.deliver_job(thing, input(&job.id));
                        }
                        after = next;
                    }
                    Ok(None) => break,
                    Err(error) => {
                        tracing::error!(job = %job.id, %error, "listing a job's targets failed");
                        break;
                    }
                }
            }
        });
    }

    fn deliver_job(&self, thing: ThingName, input: JobInput) {
        self.route(thing, Deliver::internal(Input::Job(input)));
    }
}
