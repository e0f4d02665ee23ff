//! Jobs (AWS IoT Jobs) on the node side: a job's record and its execution index in the store,
//! queuing an execution on every targeted twin, and canceling. The executions themselves live in
//! the twins (`twin_core::jobs`) and are written in their commits.

use crate::shared::Shared;
use crate::{directory::Directory, error::NodeError, work::Deliver};
use rules_dsl::Input;
use serde_json::{Value, json};
use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::{Duration, Instant},
};
pub use storage::{AbortCriterion, JobRecord, JobTargets, Progress, RateIncrease, Rollout};
use storage::{AuditEntry, Store};
use twin_core::{ExecStatus, ExecutionChange, JobInput, ThingName, TypeName, jobs};

/// Things listed by a job at most (more: target a device type).
pub const MAX_TARGET_THINGS: usize = 10_000;

/// A job as asked for.
#[derive(Clone, Debug)]
pub struct NewJob {
    pub id: String,
    pub document: Value,
    pub targets: JobTargets,
    /// Artifacts its devices may download (they must exist).
    pub artifacts: Vec<String>,
    pub timeout_minutes: Option<u64>,
    pub rollout: Option<Rollout>,
    pub abort: Vec<AbortCriterion>,
    /// Also queue on things that join the targets later.
    pub continuous: bool,
}

/// The fastest rollout, executions queued per minute.
pub const MAX_RATE_PER_MINUTE: f64 = 1_000.0;

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
        if let Some(rollout) = &self.rollout {
            if !(1.0..=MAX_RATE_PER_MINUTE).contains(&rollout.rate_per_minute) {
                return Err(invalid("rollout.rate_per_minute is 1 to 1000"));
            }
            if let Some(increase) = &rollout.increase
                && (!(1.1..=5.0).contains(&increase.factor) || increase.every_succeeded == 0)
            {
                return Err(invalid(
                    "rollout.increase has a factor of 1.1 to 5 and every_succeeded of at least 1",
                ));
            }
        }
        if self.artifacts.len() > 10 {
            return Err(invalid("a job lists at most 10 artifacts"));
        }
        for name in &self.artifacts {
            let exists = directory
                .store()
                .transact(|tx| directory.repos().artifacts.get(tx, name))?
                .is_some();
            if !exists {
                return Err(NodeError::ArtifactNotFound(name.clone()));
            }
        }
        if self.abort.len() > 10 {
            return Err(invalid("at most 10 abort criteria"));
        }
        for c in &self.abort {
            if !matches!(
                c.failure.as_str(),
                "FAILED" | "REJECTED" | "TIMED_OUT" | "ALL"
            ) {
                return Err(invalid(
                    "abort.failure is FAILED, REJECTED, TIMED_OUT or ALL",
                ));
            }
            if !(c.percent > 0.0 && c.percent <= 100.0) || c.min_executed == 0 {
                return Err(invalid(
                    "abort.percent is over 0 and at most 100, abort.min_executed at least 1",
                ));
            }
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
            artifacts: job.artifacts,
            timeout_minutes: job.timeout_minutes,
            status: "IN_PROGRESS".into(),
            force_canceled: false,
            created_at: now,
            created_by: actor.to_owned(),
            updated_at: now,
            progress: Progress {
                rate_per_minute: job.rollout.as_ref().map(|r| r.rate_per_minute),
                next_increase: job
                    .rollout
                    .as_ref()
                    .and_then(|r| r.increase.as_ref())
                    .map_or(0, |i| i.every_succeeded),
                ..Progress::default()
            },
            rollout: job.rollout,
            abort: job.abort,
            continuous: job.continuous,
            reason: None,
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

    /// A thing's executions of the newest jobs (at most `jobs`, by creation time), newest
    /// first: one index read per job. Jobs are read a thousand at a time and only the newest
    /// `jobs` kept, so the memory a call holds does not grow with the number of jobs.
    pub fn thing_executions(
        &self,
        thing: &str,
        jobs: usize,
    ) -> Result<Vec<(JobRecord, ExecutionChange)>, NodeError> {
        Ok(self.store().transact(|tx| {
            let mut records = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let page = self.repos().jobs.list(tx, after.as_deref(), 1_000)?;
                let exhausted = page.len() < 1_000;
                after = page.last().map(|j| j.id.clone());
                records.extend(page);
                records.sort_by_key(|j| std::cmp::Reverse(j.created_at));
                records.truncate(jobs);
                if exhausted {
                    break;
                }
            }
            let mut found = Vec::new();
            for job in records {
                if let Some(execution) = self.repos().job_executions.get(tx, &job.id, thing)? {
                    found.push((job, execution));
                }
            }
            Ok(found)
        })?)
    }

    /// Marks a job canceled (audited); its record after.
    fn cancel_job(
        &self,
        id: &str,
        force: bool,
        reason: Option<String>,
        actor: &str,
        now: u64,
    ) -> Result<JobRecord, NodeError> {
        let repos = self.repos();
        self.store()
            .transact(|tx| {
                let Some(mut job) = repos.jobs.get(tx, id)? else {
                    return Ok(None);
                };
                if job.status != "CANCELED" {
                    job.reason = reason.clone();
                }
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
                        Some(json!({ "force": force, "reason": reason })),
                        now,
                    ),
                )?;
                Ok(Some(job))
            })?
            .ok_or_else(|| NodeError::JobNotFound(id.to_owned()))
            .inspect(|_| self.mark_job_canceled(id))
    }

    /// Up to `n` of a job's targets after its progress: its listed things first, then the things
    /// of its types in name order (at most 10,000 records read). The progress moves past them.
    fn next_targets(
        &self,
        job: &JobRecord,
        n: usize,
        progress: &mut Progress,
    ) -> Result<Vec<ThingName>, NodeError> {
        let mut found = Vec::new();
        let listed = &job.targets.things;
        while found.len() < n && progress.next_listed < listed.len() {
            if let Ok(thing) = ThingName::new(&listed[progress.next_listed]) {
                found.push(thing);
            }
            progress.next_listed += 1;
        }
        if job.targets.types.is_empty() {
            progress.done = progress.next_listed >= listed.len();
            return Ok(found);
        }
        for _ in 0..10 {
            if found.len() >= n {
                return Ok(found);
            }
            let page = self.store().transact(|tx| {
                self.repos()
                    .things
                    .list(tx, progress.after.as_deref(), 1_000)
            })?;
            let exhausted = page.len() < 1_000;
            for record in page {
                if found.len() >= n {
                    return Ok(found);
                }
                progress.after = Some(record.name.to_string());
                let targeted = record
                    .device_type
                    .as_ref()
                    .is_some_and(|t| job.targets.types.iter().any(|n| n == t.as_str()))
                    && !listed.iter().any(|n| n == record.name.as_str());
                if targeted {
                    found.push(record.name);
                }
            }
            if exhausted {
                progress.done = true;
                return Ok(found);
            }
        }
        Ok(found)
    }

    /// Marks a job in progress complete (every execution finished).
    fn complete_job(&self, id: &str, now: u64) -> Result<(), NodeError> {
        let repos = self.repos();
        self.store().transact(|tx| {
            if let Some(mut job) = repos.jobs.get(tx, id)?
                && job.status == "IN_PROGRESS"
            {
                job.status = "COMPLETED".into();
                job.updated_at = now;
                repos.jobs.put(tx, &job)?;
            }
            Ok(())
        })?;
        Ok(())
    }

    /// Stores a rollout's progress (unless the job was canceled meanwhile).
    fn save_progress(&self, id: &str, progress: &Progress, now: u64) -> Result<(), NodeError> {
        let repos = self.repos();
        self.store().transact(|tx| {
            if let Some(mut job) = repos.jobs.get(tx, id)?
                && job.status == "IN_PROGRESS"
            {
                job.progress = progress.clone();
                job.updated_at = now;
                repos.jobs.put(tx, &job)?;
            }
            Ok(())
        })?;
        Ok(())
    }
}

/// Creates a job; the rollout queues its executions (at its rate, if it has one).
pub(crate) async fn create(
    shared: &Arc<Shared>,
    job: NewJob,
    actor: &str,
) -> Result<JobRecord, NodeError> {
    let (for_call, actor) = (shared.clone(), actor.to_owned());
    let record =
        crate::pool::blocking(move || for_call.directory.put_job(job, &actor, crate::now_ms()))
            .await??;
    shared.jobs_changed.notify_one();
    Ok(record)
}

/// Cancels a job: queued executions are canceled, and with `force` those in progress too.
pub(crate) async fn cancel(
    shared: &Arc<Shared>,
    id: String,
    force: bool,
    actor: &str,
) -> Result<JobRecord, NodeError> {
    let (for_call, actor) = (shared.clone(), actor.to_owned());
    let record = crate::pool::blocking(move || {
        for_call
            .directory
            .cancel_job(&id, force, None, &actor, crate::now_ms())
    })
    .await??;
    cancel_executions(shared.clone(), record.id.clone(), force).await;
    Ok(record)
}

/// Queues the executions of continuous jobs in progress that target these things (just
/// registered or provisioned).
pub(crate) async fn join_continuous(
    shared: &Arc<Shared>,
    things: Vec<(ThingName, Option<TypeName>)>,
) {
    let for_call = shared.clone();
    let jobs = match crate::pool::blocking(move || for_call.directory.jobs(None, 10_000)).await {
        Ok(Ok(jobs)) => jobs,
        _ => {
            tracing::warn!("reading jobs for new things failed");
            return;
        }
    };
    let continuous: Vec<JobRecord> = jobs
        .into_iter()
        .filter(|j| j.continuous && j.status == "IN_PROGRESS")
        .collect();
    for (thing, device_type) in things {
        for job in &continuous {
            let targeted = job.targets.things.iter().any(|t| t == thing.as_str())
                || device_type
                    .as_ref()
                    .is_some_and(|t| job.targets.types.iter().any(|n| n == t.as_str()));
            if targeted {
                let input = JobInput::Queue {
                    job_id: job.id.clone(),
                    document: job.document.to_string(),
                    in_progress_timeout_ms: job.timeout_minutes.map(|m| m * 60_000),
                };
                shared.route(thing.clone(), Deliver::internal(Input::Job(input)));
            }
        }
    }
}

/// Sends a cancel to every twin with an execution of `job` that is queued (or in progress,
/// with `force`).
async fn cancel_executions(shared: Arc<Shared>, job: String, force: bool) {
    let mut after: Option<String> = None;
    loop {
        let (for_call, id, from) = (shared.clone(), job.clone(), after.clone());
        let page = crate::pool::blocking(move || {
            for_call
                .directory
                .job_executions(&id, from.as_deref(), 1_000, None)
        })
        .await;
        let Ok(Ok((page, more))) = page else {
            tracing::error!(%job, "listing a job's executions to cancel failed");
            return;
        };
        after = page.last().map(|(thing, _)| thing.clone());
        for (thing, execution) in page {
            let cancels = match execution.status {
                ExecStatus::Queued => true,
                ExecStatus::InProgress => force,
                _ => false,
            };
            if cancels && let Ok(thing) = ThingName::new(&thing) {
                let input = JobInput::Cancel {
                    job_id: job.clone(),
                    force,
                };
                shared.route(thing, Deliver::internal(Input::Job(input)));
            }
        }
        if !more {
            return;
        }
    }
}

/// A rate-limited job's executions that may be queued now (they accrue with time), and when its
/// executions were last counted.
struct Pace {
    budget: f64,
    last: Instant,
    counted: Option<Instant>,
}

/// How often a job's executions are counted (abort criteria, rate increases, completion).
const COUNT_EVERY: Duration = Duration::from_secs(1);

/// How often the rollout looks at its jobs.
const ROLLOUT_TICK: Duration = Duration::from_millis(250);
/// Executions a rollout without a rate queues per tick at most.
const UNLIMITED_PER_TICK: usize = 1_000;

/// The failures an abort criterion counts, and the executions finished, of `counts`.
fn abort_reason(criteria: &[AbortCriterion], counts: &BTreeMap<ExecStatus, u64>) -> Option<String> {
    let count = |s: ExecStatus| counts.get(&s).copied().unwrap_or(0);
    let executed: u64 = [
        ExecStatus::Succeeded,
        ExecStatus::Failed,
        ExecStatus::Rejected,
        ExecStatus::TimedOut,
    ]
    .into_iter()
    .map(count)
    .sum();
    criteria.iter().find_map(|c| {
        let failures = match c.failure.as_str() {
            "FAILED" => count(ExecStatus::Failed),
            "REJECTED" => count(ExecStatus::Rejected),
            "TIMED_OUT" => count(ExecStatus::TimedOut),
            _ => {
                count(ExecStatus::Failed)
                    + count(ExecStatus::Rejected)
                    + count(ExecStatus::TimedOut)
            }
        };
        let share = 100.0 * failures as f64 / executed.max(1) as f64;
        (executed >= c.min_executed && share >= c.percent).then(|| {
            format!(
                "aborted: {failures} of {executed} finished executions {} ({share:.0}% ≥ {}%)",
                if c.failure == "ALL" {
                    "failed, were rejected or timed out".to_owned()
                } else {
                    c.failure.clone()
                },
                c.percent
            )
        })
    })
}

/// The rollout: on the node that runs what a cluster runs once, every tick, for each job in
/// progress — abort it if a criterion is crossed, raise its rate when enough succeeded, and
/// queue its next executions within its rate. Its progress is stored after every step, so a
/// restart or another node resumes where it was (a twin queues a job once).
pub(crate) async fn run_rollouts(shared: Arc<Shared>) {
    let mut ticks = crate::shared::leader_ticks(ROLLOUT_TICK);
    // Executions each rate-limited job may queue now (they accrue with time).
    let mut paces: HashMap<String, Pace> = HashMap::new();
    loop {
        tokio::select! {
            () = ticks.tick(&shared) => {}
            () = shared.jobs_changed.notified() => {}
        }
        let for_call = shared.clone();
        let Ok(Ok(jobs)) =
            crate::pool::blocking(move || for_call.directory.jobs(None, 10_000)).await
        else {
            continue;
        };
        paces.retain(|id, _| {
            jobs.iter()
                .any(|j| &j.id == id && j.status == "IN_PROGRESS")
        });
        for job in jobs.into_iter().filter(|j| j.status == "IN_PROGRESS") {
            if let Err(error) = step(&shared, job, &mut paces).await {
                tracing::warn!(%error, "a rollout step failed; it is retried");
            }
        }
    }
}

/// One rollout step of `job`.
/// Stores a job's rollout progress (on the blocking pool).
async fn store_progress(
    shared: &Arc<Shared>,
    job: &str,
    progress: Progress,
) -> Result<(), NodeError> {
    let (shared, id) = (shared.clone(), job.to_owned());
    crate::pool::blocking(move || {
        shared
            .directory
            .save_progress(&id, &progress, crate::now_ms())
    })
    .await?
}

async fn step(
    shared: &Arc<Shared>,
    job: JobRecord,
    paces: &mut HashMap<String, Pace>,
) -> Result<(), NodeError> {
    let watches =
        !job.abort.is_empty() || job.rollout.as_ref().is_some_and(|r| r.increase.is_some());
    if job.progress.done && job.abort.is_empty() {
        return Ok(());
    }
    let now = Instant::now();
    let pace = paces.entry(job.id.clone()).or_insert(Pace {
        budget: 1.0,
        last: now,
        counted: None,
    });
    // Counting scans the job's execution index: at most once a COUNT_EVERY per job.
    let count_now = watches && pace.counted.is_none_or(|at| now - at >= COUNT_EVERY);
    let mut progress = job.progress.clone();
    if count_now {
        pace.counted = Some(now);
        let (for_call, id) = (shared.clone(), job.id.clone());
        let counts = crate::pool::blocking(move || for_call.directory.job_counts(&id)).await??;
        if let Some(reason) = abort_reason(&job.abort, &counts) {
            tracing::warn!(job = %job.id, %reason, "job aborted");
            metrics::counter!("doppel_jobs_aborted_total").increment(1);
            let (for_call, id, why) = (shared.clone(), job.id.clone(), reason.clone());
            crate::pool::blocking(move || {
                for_call
                    .directory
                    .cancel_job(&id, false, Some(why), "node", crate::now_ms())
            })
            .await??;
            cancel_executions(shared.clone(), job.id.clone(), false).await;
            return Ok(());
        }
        let pending = counts
            .iter()
            .any(|(status, n)| !status.is_terminal() && *n > 0);
        if progress.done && !pending && !job.continuous && !counts.is_empty() {
            // Every execution finished: the job is complete and leaves the rollout.
            let (for_call, id) = (shared.clone(), job.id.clone());
            crate::pool::blocking(move || for_call.directory.complete_job(&id, crate::now_ms()))
                .await??;
            return Ok(());
        }
        if let Some(increase) = job.rollout.as_ref().and_then(|r| r.increase.as_ref()) {
            let succeeded = counts.get(&ExecStatus::Succeeded).copied().unwrap_or(0);
            while progress.next_increase > 0 && succeeded >= progress.next_increase {
                let rate = progress.rate_per_minute.unwrap_or(MAX_RATE_PER_MINUTE);
                progress.rate_per_minute = Some((rate * increase.factor).min(MAX_RATE_PER_MINUTE));
                progress.next_increase += increase.every_succeeded;
            }
        }
    }
    if progress.done {
        if progress != job.progress {
            store_progress(shared, &job.id, progress).await?;
        }
        return Ok(());
    }
    let allowed = match progress.rate_per_minute {
        None => UNLIMITED_PER_TICK,
        Some(rate) => {
            let accrued = rate / 60.0 * now.duration_since(pace.last).as_secs_f64();
            // A paused rollout does not burst: at most two ticks' worth (or one execution).
            let cap = (rate / 60.0 * 2.0 * ROLLOUT_TICK.as_secs_f64()).max(1.0);
            pace.budget = (pace.budget + accrued).min(cap.max(pace.budget));
            pace.last = now;
            let whole = pace.budget.floor();
            pace.budget -= whole;
            whole as usize
        }
    };
    if allowed == 0 {
        return Ok(());
    }
    let (for_call, record) = (shared.clone(), job.clone());
    let (things, progress) = crate::pool::blocking(move || {
        let mut progress = progress;
        let things = for_call
            .directory
            .next_targets(&record, allowed, &mut progress)?;
        progress.queued += things.len() as u64;
        Ok::<_, NodeError>((things, progress))
    })
    .await??;
    let input = |id: &str| JobInput::Queue {
        job_id: id.to_owned(),
        document: job.document.to_string(),
        in_progress_timeout_ms: job.timeout_minutes.map(|m| m * 60_000),
    };
    // The progress is stored only once every queue sent is durable in its twin: a stop in
    // between sends the same targets again from the stored progress (a twin queues a job once).
    let mut waits = Vec::with_capacity(things.len());
    for thing in things {
        let (ack, done) = crate::ack::Ack::new();
        let deliver = Deliver::new(
            Input::Job(input(&job.id)),
            crate::work::Origin::Node,
            Some(ack),
        );
        shared.route(thing, deliver);
        waits.push(done);
    }
    let settled = tokio::time::timeout(
        shared.config.request_timeout,
        futures::future::join_all(waits),
    )
    .await;
    let durable = settled.is_ok_and(|all| {
        all.iter().all(|s| {
            matches!(
                s,
                Ok(crate::ack::Settled::Done | crate::ack::Settled::Refused(_))
            )
        })
    });
    if !durable {
        tracing::warn!(job = %job.id, "some executions were not queued; sending them again");
        return Ok(());
    }
    metrics::gauge!("doppel_job_rate_per_minute", "job" => job.id.clone())
        .set(progress.rate_per_minute.unwrap_or(0.0));
    store_progress(shared, &job.id, progress).await
}
