//! Job executions a twin holds (AWS IoT Jobs): their states and transitions, the device's
//! requests (get pending, start next, describe, update) with AWS's payloads and error codes,
//! the notifications a device gets when its pending executions change, and the inputs a
//! rollout sends (queue, cancel). Pure: time comes in as `now` (epoch ms); AWS's payloads carry
//! epoch seconds.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// Executions a twin keeps queued or in progress at most; more are refused when queued.
pub const MAX_PENDING: usize = 50;
/// Finished executions a twin keeps (newest), for describe requests.
pub const MAX_FINISHED: usize = 10;
/// Largest job document, as compact JSON.
pub const MAX_DOCUMENT_BYTES: usize = 32 * 1024;
/// Entries of `statusDetails` at most, and the longest key or value.
pub const MAX_DETAILS: usize = 10;
pub const MAX_DETAIL_BYTES: usize = 1024;

/// An execution's state (AWS's names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ExecStatus {
    Queued,
    InProgress,
    Succeeded,
    Failed,
    TimedOut,
    Rejected,
    Removed,
    Canceled,
}

impl ExecStatus {
    /// Every state, in AWS's order.
    pub const ALL: [ExecStatus; 8] = [
        ExecStatus::Queued,
        ExecStatus::InProgress,
        ExecStatus::Succeeded,
        ExecStatus::Failed,
        ExecStatus::TimedOut,
        ExecStatus::Rejected,
        ExecStatus::Removed,
        ExecStatus::Canceled,
    ];

    /// Whether the execution is over.
    pub fn is_terminal(self) -> bool {
        !matches!(self, ExecStatus::Queued | ExecStatus::InProgress)
    }

    /// As AWS writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            ExecStatus::Queued => "QUEUED",
            ExecStatus::InProgress => "IN_PROGRESS",
            ExecStatus::Succeeded => "SUCCEEDED",
            ExecStatus::Failed => "FAILED",
            ExecStatus::TimedOut => "TIMED_OUT",
            ExecStatus::Rejected => "REJECTED",
            ExecStatus::Removed => "REMOVED",
            ExecStatus::Canceled => "CANCELED",
        }
    }

    /// From AWS's name.
    pub fn parse(text: &str) -> Option<ExecStatus> {
        ExecStatus::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// One job's execution on this twin.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Execution {
    pub job_id: String,
    pub status: ExecStatus,
    pub status_details: BTreeMap<String, String>,
    /// Raised by every change.
    pub version: u64,
    pub execution_number: u64,
    /// Epoch ms.
    pub queued_at: u64,
    pub started_at: Option<u64>,
    pub updated_at: u64,
    /// How long it may stay in progress (the job's timeout), ms.
    pub in_progress_timeout_ms: Option<u64>,
    /// When an execution in progress times out (the job's timeout or the device's step
    /// timeout, whichever comes first), epoch ms.
    pub deadline: Option<u64>,
    /// The job document, compact JSON.
    pub document: String,
}

impl Execution {
    fn summary(&self) -> Value {
        let mut v = json!({
            "jobId": self.job_id,
            "queuedAt": secs(self.queued_at),
            "lastUpdatedAt": secs(self.updated_at),
            "versionNumber": self.version,
            "executionNumber": self.execution_number,
        });
        if let Some(started) = self.started_at {
            v["startedAt"] = secs(started).into();
        }
        v
    }

    fn full(&self, thing: &str, with_document: bool) -> Value {
        let mut v = self.summary();
        v["thingName"] = thing.into();
        v["status"] = self.status.as_str().into();
        if !self.status_details.is_empty() {
            v["statusDetails"] = json!(self.status_details);
        }
        if with_document {
            v["jobDocument"] =
                serde_json::from_str(&self.document).unwrap_or(Value::Object(Map::new()));
        }
        v
    }

    fn state(&self) -> Value {
        let mut v = json!({ "status": self.status.as_str(), "versionNumber": self.version });
        if !self.status_details.is_empty() {
            v["statusDetails"] = json!(self.status_details);
        }
        v
    }

    /// What changed, for the registry's index and for apps.
    pub fn change(&self) -> ExecutionChange {
        ExecutionChange {
            job_id: self.job_id.clone(),
            status: self.status,
            version: self.version,
            status_details: self.status_details.clone(),
            updated_at: self.updated_at,
        }
    }
}

fn secs(ms: u64) -> u64 {
    ms / 1000
}

/// An execution after a change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExecutionChange {
    pub job_id: String,
    pub status: ExecStatus,
    pub version: u64,
    pub status_details: BTreeMap<String, String>,
    /// Epoch ms.
    pub updated_at: u64,
}

/// A device's request on `$aws/things/{thing}/jobs/…`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobOp {
    /// `jobs/get`.
    GetPending,
    /// `jobs/start-next`.
    StartNext,
    /// `jobs/{jobId}/get` (`$next`: the next pending one).
    Describe(String),
    /// `jobs/{jobId}/update`.
    Update(String),
}

impl JobOp {
    /// The job id in the topic, if any.
    pub fn job_id(&self) -> Option<&str> {
        match self {
            JobOp::Describe(id) | JobOp::Update(id) => Some(id),
            JobOp::GetPending | JobOp::StartNext => None,
        }
    }
}

/// What reaches a twin's job executions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum JobInput {
    /// The device asks (its payload, parsed JSON).
    Request { op: JobOp, payload: Value },
    /// A rollout queues an execution of the job (nothing if the twin already has one).
    Queue {
        job_id: String,
        document: String,
        in_progress_timeout_ms: Option<u64>,
    },
    /// The job was canceled: queued executions are canceled, in-progress ones too if `force`.
    Cancel { job_id: String, force: bool },
}

/// AWS's rejection codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobError {
    InvalidRequest,
    InvalidStateTransition,
    ResourceNotFound,
    VersionMismatch,
    TerminalStateReached,
}

impl JobError {
    fn code(self) -> &'static str {
        match self {
            JobError::InvalidRequest => "InvalidRequest",
            JobError::InvalidStateTransition => "InvalidStateTransition",
            JobError::ResourceNotFound => "ResourceNotFound",
            JobError::VersionMismatch => "VersionMismatch",
            JobError::TerminalStateReached => "TerminalStateReached",
        }
    }
}

/// The answer to a device's request: `…/accepted` or `…/rejected` of its topic.
#[derive(Clone, Debug, PartialEq)]
pub struct JobReply {
    pub op: JobOp,
    pub accepted: bool,
    pub payload: bytes::Bytes,
}

/// What handling a job input produces (the twin turns each into one of its effects).
#[derive(Clone, Debug, PartialEq)]
pub enum JobEffect {
    /// Answer the device's request.
    Reply(JobReply),
    /// `jobs/notify` (or `jobs/notify-next` when `next`).
    Notify { next: bool, payload: bytes::Bytes },
    /// An execution changed.
    Execution(ExecutionChange),
}

/// The executions of one twin.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Jobs {
    executions: Vec<Execution>,
}

fn token(payload: &Value) -> Option<Value> {
    payload
        .get("clientToken")
        .filter(|t| t.is_string())
        .cloned()
}

fn with_token(mut body: Value, token: &Option<Value>, now: u64) -> Value {
    body["timestamp"] = secs(now).into();
    if let Some(token) = token {
        body["clientToken"] = token.clone();
    }
    body
}

fn details(payload: &Value) -> Result<Option<BTreeMap<String, String>>, String> {
    match payload.get("statusDetails") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) => {
            if map.len() > MAX_DETAILS {
                return Err(format!("statusDetails has more than {MAX_DETAILS} entries"));
            }
            map.iter()
                .map(|(k, v)| match v {
                    Value::String(s)
                        if k.len() <= MAX_DETAIL_BYTES && s.len() <= MAX_DETAIL_BYTES =>
                    {
                        Ok((k.clone(), s.clone()))
                    }
                    Value::String(_) => Err(format!(
                        "statusDetails keys and values have at most {MAX_DETAIL_BYTES} bytes"
                    )),
                    _ => Err("statusDetails values are strings".to_owned()),
                })
                .collect::<Result<_, _>>()
                .map(Some)
        }
        Some(_) => Err("statusDetails is an object of strings".to_owned()),
    }
}

fn step_timeout(payload: &Value) -> Result<Option<u64>, String> {
    match payload.get("stepTimeoutInMinutes") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(m @ 1..=10_080) => Ok(Some(m * 60_000)),
            _ => Err("stepTimeoutInMinutes is 1 to 10080".to_owned()),
        },
    }
}

impl Jobs {
    /// Whether there is nothing to keep.
    pub fn is_empty(&self) -> bool {
        self.executions.is_empty()
    }

    /// Every execution kept.
    pub fn executions(&self) -> &[Execution] {
        &self.executions
    }

    fn pending(&self) -> impl Iterator<Item = &Execution> {
        self.executions.iter().filter(|e| !e.status.is_terminal())
    }

    /// AWS's summaries of the executions in `status`, oldest first.
    fn summaries(&self, status: ExecStatus) -> Vec<Value> {
        let mut of: Vec<&Execution> = self
            .executions
            .iter()
            .filter(|e| e.status == status)
            .collect();
        of.sort_by_key(|e| (e.queued_at, e.execution_number));
        of.into_iter().map(Execution::summary).collect()
    }

    /// The next pending execution: the oldest in progress, else the oldest queued.
    fn next(&self) -> Option<&Execution> {
        let oldest = |status| {
            self.executions
                .iter()
                .filter(move |e| e.status == status)
                .min_by_key(|e| (e.queued_at, e.execution_number))
        };
        oldest(ExecStatus::InProgress).or_else(|| oldest(ExecStatus::Queued))
    }

    fn find(&self, job_id: &str) -> Option<usize> {
        if job_id == "$next" {
            let next = self.next()?;
            return self.executions.iter().position(|e| std::ptr::eq(e, next));
        }
        self.executions.iter().position(|e| e.job_id == job_id)
    }

    /// The earliest time an execution in progress times out.
    pub fn deadline(&self) -> Option<u64> {
        self.pending().filter_map(|e| e.deadline).min()
    }

    /// Handles `input` at `now`; `thing` names the twin in AWS's payloads. Returns whether
    /// anything changed (the twin must be stored).
    pub fn handle(
        &mut self,
        thing: &str,
        input: JobInput,
        now: u64,
        out: &mut Vec<JobEffect>,
    ) -> bool {
        let before = self.notices(thing);
        let changed = match input {
            JobInput::Request { op, payload } => self.request(thing, op, &payload, now, out),
            JobInput::Queue {
                job_id,
                document,
                in_progress_timeout_ms,
            } => self.queue(job_id, document, in_progress_timeout_ms, now, out),
            JobInput::Cancel { job_id, force } => self.cancel(&job_id, force, now, out),
        };
        if changed {
            self.notify(thing, before, now, out);
        }
        changed
    }

    /// Cancels the queued executions of jobs `canceled` says were canceled (before the twin
    /// heard it: a device asking now never starts one); whether any were.
    pub fn cancel_where(
        &mut self,
        thing: &str,
        canceled: impl Fn(&str) -> bool,
        now: u64,
        out: &mut Vec<JobEffect>,
    ) -> bool {
        if !self
            .executions
            .iter()
            .any(|e| e.status == ExecStatus::Queued && canceled(&e.job_id))
        {
            return false;
        }
        let before = self.notices(thing);
        for e in &mut self.executions {
            if e.status == ExecStatus::Queued && canceled(&e.job_id) {
                e.status = ExecStatus::Canceled;
                e.version += 1;
                e.updated_at = now;
                out.push(JobEffect::Execution(e.change()));
            }
        }
        self.trim();
        self.notify(thing, before, now, out);
        true
    }

    /// Times out executions in progress whose deadline passed; whether any did.
    pub fn expire(&mut self, thing: &str, now: u64, out: &mut Vec<JobEffect>) -> bool {
        let before = self.notices(thing);
        let mut changed = false;
        for e in &mut self.executions {
            if e.status == ExecStatus::InProgress && e.deadline.is_some_and(|d| d <= now) {
                e.status = ExecStatus::TimedOut;
                e.deadline = None;
                e.version += 1;
                e.updated_at = now;
                out.push(JobEffect::Execution(e.change()));
                changed = true;
            }
        }
        if changed {
            self.trim();
            self.notify(thing, before, now, out);
        }
        changed
    }

    /// Keeps at most [`MAX_FINISHED`] finished executions (the newest).
    fn trim(&mut self) {
        let finished = self
            .executions
            .iter()
            .filter(|e| e.status.is_terminal())
            .count();
        if finished > MAX_FINISHED {
            let mut ends: Vec<u64> = self
                .executions
                .iter()
                .filter(|e| e.status.is_terminal())
                .map(|e| e.updated_at)
                .collect();
            ends.sort_unstable();
            let cut = ends[finished - MAX_FINISHED - 1];
            let mut drop = finished - MAX_FINISHED;
            self.executions.retain(|e| {
                if drop > 0 && e.status.is_terminal() && e.updated_at <= cut {
                    drop -= 1;
                    false
                } else {
                    true
                }
            });
        }
    }

    fn queue(
        &mut self,
        job_id: String,
        document: String,
        in_progress_timeout_ms: Option<u64>,
        now: u64,
        out: &mut Vec<JobEffect>,
    ) -> bool {
        if self.executions.iter().any(|e| e.job_id == job_id)
            || self.pending().count() >= MAX_PENDING
        {
            return false;
        }
        let execution_number = self
            .executions
            .iter()
            .map(|e| e.execution_number)
            .max()
            .unwrap_or(0)
            + 1;
        let execution = Execution {
            job_id,
            status: ExecStatus::Queued,
            status_details: BTreeMap::new(),
            version: 1,
            execution_number,
            queued_at: now,
            started_at: None,
            updated_at: now,
            in_progress_timeout_ms,
            deadline: None,
            document,
        };
        out.push(JobEffect::Execution(execution.change()));
        self.executions.push(execution);
        true
    }

    fn cancel(&mut self, job_id: &str, force: bool, now: u64, out: &mut Vec<JobEffect>) -> bool {
        let Some(e) = self.executions.iter_mut().find(|e| e.job_id == job_id) else {
            return false;
        };
        let cancels = match e.status {
            ExecStatus::Queued => true,
            ExecStatus::InProgress => force,
            _ => false,
        };
        if !cancels {
            return false;
        }
        e.status = ExecStatus::Canceled;
        e.deadline = None;
        e.version += 1;
        e.updated_at = now;
        out.push(JobEffect::Execution(e.change()));
        self.trim();
        true
    }

    fn reply(op: JobOp, accepted: bool, body: Value, out: &mut Vec<JobEffect>) {
        out.push(JobEffect::Reply(JobReply {
            op,
            accepted,
            payload: bytes::Bytes::from(body.to_string()),
        }));
    }

    fn reject(
        op: JobOp,
        error: JobError,
        message: &str,
        state: Option<Value>,
        token: &Option<Value>,
        now: u64,
        out: &mut Vec<JobEffect>,
    ) {
        let mut body = json!({ "code": error.code(), "message": message });
        if let Some(state) = state {
            body["executionState"] = state;
        }
        Self::reply(op, false, with_token(body, token, now), out);
    }

    fn request(
        &mut self,
        thing: &str,
        op: JobOp,
        payload: &Value,
        now: u64,
        out: &mut Vec<JobEffect>,
    ) -> bool {
        let token = token(payload);
        match op.clone() {
            JobOp::GetPending => {
                let body = json!({
                    "inProgressJobs": self.summaries(ExecStatus::InProgress),
                    "queuedJobs": self.summaries(ExecStatus::Queued),
                });
                Self::reply(op, true, with_token(body, &token, now), out);
                false
            }
            JobOp::StartNext => {
                let (details, step) = match (details(payload), step_timeout(payload)) {
                    (Ok(d), Ok(s)) => (d, s),
                    (Err(m), _) | (_, Err(m)) => {
                        Self::reject(op, JobError::InvalidRequest, &m, None, &token, now, out);
                        return false;
                    }
                };
                let next = self.next().map(|e| e.job_id.clone());
                let Some(job_id) = next else {
                    // No pending execution: accepted, without one (as AWS answers).
                    Self::reply(op, true, with_token(json!({}), &token, now), out);
                    return false;
                };
                let Some(i) = self.find(&job_id) else {
                    return false;
                };
                let e = &mut self.executions[i];
                let mut changed = false;
                if e.status == ExecStatus::Queued {
                    e.status = ExecStatus::InProgress;
                    e.started_at = Some(now);
                    e.deadline = e.in_progress_timeout_ms.map(|t| now + t);
                    changed = true;
                }
                if let Some(details) = details {
                    e.status_details = details;
                    changed = true;
                }
                if let Some(step) = step {
                    let by_step = now + step;
                    e.deadline = Some(e.deadline.map_or(by_step, |d| d.min(by_step)));
                    changed = true;
                }
                if changed {
                    e.version += 1;
                    e.updated_at = now;
                    out.push(JobEffect::Execution(e.change()));
                }
                let body = json!({ "execution": e.full(thing, true) });
                Self::reply(op, true, with_token(body, &token, now), out);
                changed
            }
            JobOp::Describe(job_id) => {
                let Some(i) = self.find(&job_id) else {
                    let m = format!("job execution {job_id} not found");
                    Self::reject(op, JobError::ResourceNotFound, &m, None, &token, now, out);
                    return false;
                };
                let e = &self.executions[i];
                if let Some(n) = payload.get("executionNumber").and_then(Value::as_u64)
                    && n != e.execution_number
                {
                    let m = format!("job execution {job_id} has no execution number {n}");
                    Self::reject(op, JobError::ResourceNotFound, &m, None, &token, now, out);
                    return false;
                }
                let with_document = payload
                    .get("includeJobDocument")
                    .and_then(Value::as_bool)
                    .unwrap_or(true);
                let body = json!({ "execution": e.full(thing, with_document) });
                Self::reply(op, true, with_token(body, &token, now), out);
                false
            }
            JobOp::Update(job_id) => self.update(thing, op, &job_id, payload, &token, now, out),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn update(
        &mut self,
        _thing: &str,
        op: JobOp,
        job_id: &str,
        payload: &Value,
        token: &Option<Value>,
        now: u64,
        out: &mut Vec<JobEffect>,
    ) -> bool {
        let status = match payload
            .get("status")
            .and_then(Value::as_str)
            .map(ExecStatus::parse)
        {
            Some(Some(
                s @ (ExecStatus::InProgress
                | ExecStatus::Succeeded
                | ExecStatus::Failed
                | ExecStatus::Rejected),
            )) => s,
            Some(Some(_)) => {
                let m = "a device sets IN_PROGRESS, SUCCEEDED, FAILED or REJECTED";
                Self::reject(op, JobError::InvalidRequest, m, None, token, now, out);
                return false;
            }
            _ => {
                let m = "status is one of IN_PROGRESS, SUCCEEDED, FAILED, REJECTED";
                Self::reject(op, JobError::InvalidRequest, m, None, token, now, out);
                return false;
            }
        };
        let (new_details, step) = match (details(payload), step_timeout(payload)) {
            (Ok(d), Ok(s)) => (d, s),
            (Err(m), _) | (_, Err(m)) => {
                Self::reject(op, JobError::InvalidRequest, &m, None, token, now, out);
                return false;
            }
        };
        let Some(i) = self.find(job_id) else {
            let m = format!("job execution {job_id} not found");
            Self::reject(op, JobError::ResourceNotFound, &m, None, token, now, out);
            return false;
        };
        let e = &mut self.executions[i];
        if let Some(expected) = payload.get("expectedVersion")
            && expected.as_u64() != Some(e.version)
        {
            let m = format!("the execution's version is {}", e.version);
            let state = Some(e.state());
            Self::reject(op, JobError::VersionMismatch, &m, state, token, now, out);
            return false;
        }
        if let Some(n) = payload.get("executionNumber").and_then(Value::as_u64)
            && n != e.execution_number
        {
            let m = format!("job execution {job_id} has no execution number {n}");
            Self::reject(op, JobError::ResourceNotFound, &m, None, token, now, out);
            return false;
        }
        if e.status.is_terminal() {
            let m = format!("the execution is {} already", e.status.as_str());
            let state = Some(e.state());
            Self::reject(
                op,
                JobError::InvalidStateTransition,
                &m,
                state,
                token,
                now,
                out,
            );
            return false;
        }
        if e.status == ExecStatus::Queued || status != ExecStatus::InProgress {
            e.started_at.get_or_insert(now);
        }
        if e.status == ExecStatus::Queued && status == ExecStatus::InProgress {
            e.deadline = e.in_progress_timeout_ms.map(|t| now + t);
        }
        e.status = status;
        if let Some(details) = new_details {
            e.status_details = details;
        }
        if status.is_terminal() {
            e.deadline = None;
        } else if let Some(step) = step {
            let by_step = now + step;
            let by_job = e
                .started_at
                .zip(e.in_progress_timeout_ms)
                .map(|(s, t)| s + t);
            e.deadline = Some(by_job.map_or(by_step, |d| d.min(by_step)));
        }
        e.version += 1;
        e.updated_at = now;
        out.push(JobEffect::Execution(e.change()));
        let mut body = json!({});
        if payload
            .get("includeJobExecutionState")
            .and_then(Value::as_bool)
            == Some(true)
        {
            body["executionState"] = e.state();
        }
        if payload.get("includeJobDocument").and_then(Value::as_bool) == Some(true) {
            body["jobDocument"] = serde_json::from_str(&e.document).unwrap_or(Value::Null);
        }
        Self::reply(op, true, with_token(body, token, now), out);
        self.trim();
        true
    }

    /// What `notify` and `notify-next` would say now (without timestamps).
    fn notices(&self, thing: &str) -> (Value, Value) {
        let mut jobs = Map::new();
        for (name, status) in [
            ("QUEUED", ExecStatus::Queued),
            ("IN_PROGRESS", ExecStatus::InProgress),
        ] {
            let of = self.summaries(status);
            if !of.is_empty() {
                jobs.insert(name.to_owned(), Value::Array(of));
            }
        }
        let next = match self.next() {
            Some(e) => json!({ "execution": e.full(thing, true) }),
            None => json!({}),
        };
        (json!({ "jobs": jobs }), next)
    }

    /// Tells the device what changed in its pending executions (AWS's `jobs/notify` and
    /// `jobs/notify-next`), only when it did.
    fn notify(
        &self,
        thing: &str,
        (list, next): (Value, Value),
        now: u64,
        out: &mut Vec<JobEffect>,
    ) {
        let (list_now, next_now) = self.notices(thing);
        if list_now != list {
            let mut body = list_now;
            body["timestamp"] = secs(now).into();
            out.push(JobEffect::Notify {
                next: false,
                payload: bytes::Bytes::from(body.to_string()),
            });
        }
        // The next execution changed: another one, or its state (its version tells).
        let key = |v: &Value| {
            (
                v["execution"]["jobId"].clone(),
                v["execution"]["status"].clone(),
            )
        };
        if key(&next_now) != key(&next) {
            let mut body = next_now;
            body["timestamp"] = secs(now).into();
            out.push(JobEffect::Notify {
                next: true,
                payload: bytes::Bytes::from(body.to_string()),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(jobs: &mut Jobs, id: &str, now: u64, out: &mut Vec<JobEffect>) -> bool {
        jobs.handle(
            "t",
            JobInput::Queue {
                job_id: id.into(),
                document: r#"{"version":"2.0"}"#.into(),
                in_progress_timeout_ms: Some(60_000),
            },
            now,
            out,
        )
    }

    fn ask(jobs: &mut Jobs, op: JobOp, payload: Value, now: u64) -> (bool, Value, Vec<JobEffect>) {
        let mut out = Vec::new();
        jobs.handle("t", JobInput::Request { op, payload }, now, &mut out);
        let reply = out.iter().find_map(|e| match e {
            JobEffect::Reply(r) => Some((r.accepted, serde_json::from_slice(&r.payload).unwrap())),
            _ => None,
        });
        let (accepted, body) = reply.expect("a reply");
        (accepted, body, out)
    }

    #[test]
    fn a_job_runs_from_queued_to_succeeded_with_notifications() {
        let mut jobs = Jobs::default();
        let mut out = Vec::new();
        assert!(queue(&mut jobs, "fw-1", 1_000, &mut out));
        assert!(
            !queue(&mut jobs, "fw-1", 2_000, &mut Vec::new()),
            "queued once"
        );
        assert!(
            out.iter()
                .any(|e| matches!(e, JobEffect::Notify { next: true, .. }))
        );
        assert!(
            out.iter()
                .any(|e| matches!(e, JobEffect::Notify { next: false, .. }))
        );
        let (ok, body, _) = ask(
            &mut jobs,
            JobOp::GetPending,
            json!({"clientToken": "c"}),
            2_000,
        );
        assert!(ok);
        assert_eq!(body["queuedJobs"][0]["jobId"], "fw-1");
        assert_eq!(body["clientToken"], "c");
        let (ok, body, _) = ask(&mut jobs, JobOp::StartNext, json!({}), 3_000);
        assert!(ok);
        assert_eq!(body["execution"]["status"], "IN_PROGRESS");
        assert_eq!(body["execution"]["jobDocument"]["version"], "2.0");
        assert_eq!(body["execution"]["versionNumber"], 2);
        assert_eq!(jobs.deadline(), Some(63_000));
        // A stale version is refused with the current state.
        let update = |status: &str, v: u64| json!({"status": status, "expectedVersion": v, "statusDetails": {"step": "flash"}});
        let (ok, body, _) = ask(
            &mut jobs,
            JobOp::Update("fw-1".into()),
            update("SUCCEEDED", 1),
            4_000,
        );
        assert!(!ok);
        assert_eq!(body["code"], "VersionMismatch");
        assert_eq!(body["executionState"]["versionNumber"], 2);
        let (ok, _, out) = ask(
            &mut jobs,
            JobOp::Update("fw-1".into()),
            update("SUCCEEDED", 2),
            4_000,
        );
        assert!(ok);
        assert!(
            out.iter()
                .any(|e| matches!(e, JobEffect::Execution(c) if c.status == ExecStatus::Succeeded))
        );
        // Terminal: no more transitions; nothing pending.
        let (ok, body, _) = ask(
            &mut jobs,
            JobOp::Update("fw-1".into()),
            update("FAILED", 3),
            5_000,
        );
        assert!(!ok);
        assert_eq!(body["code"], "InvalidStateTransition");
        let (_, body, _) = ask(&mut jobs, JobOp::StartNext, json!({}), 5_000);
        assert!(body.get("execution").is_none());
        assert_eq!(jobs.deadline(), None);
    }

    #[test]
    fn cancel_spares_executions_in_progress_unless_forced_and_timeouts_expire() {
        let mut jobs = Jobs::default();
        let mut out = Vec::new();
        queue(&mut jobs, "a", 0, &mut out);
        queue(&mut jobs, "b", 1, &mut out);
        ask(&mut jobs, JobOp::StartNext, json!({}), 10);
        let cancel = |jobs: &mut Jobs, id: &str, force| {
            jobs.handle(
                "t",
                JobInput::Cancel {
                    job_id: id.into(),
                    force,
                },
                20,
                &mut Vec::new(),
            )
        };
        assert!(!cancel(&mut jobs, "a", false), "in progress, not forced");
        assert!(cancel(&mut jobs, "b", false), "queued");
        assert!(cancel(&mut jobs, "a", true), "forced");
        let mut out = Vec::new();
        queue(&mut jobs, "c", 100, &mut out);
        ask(
            &mut jobs,
            JobOp::StartNext,
            json!({"stepTimeoutInMinutes": 1}),
            200,
        );
        assert_eq!(jobs.deadline(), Some(60_200));
        let mut out = Vec::new();
        assert!(!jobs.expire("t", 60_199, &mut out));
        assert!(jobs.expire("t", 60_200, &mut out));
        assert!(
            out.iter()
                .any(|e| matches!(e, JobEffect::Execution(c) if c.status == ExecStatus::TimedOut))
        );
    }

    #[test]
    fn a_canceled_job_is_never_started() {
        let mut jobs = Jobs::default();
        queue(&mut jobs, "old", 0, &mut Vec::new());
        queue(&mut jobs, "new", 1, &mut Vec::new());
        let mut out = Vec::new();
        assert!(jobs.cancel_where("t", |id| id == "old", 2, &mut out));
        assert!(!jobs.cancel_where("t", |id| id == "old", 3, &mut Vec::new()));
        let (_, body, _) = ask(&mut jobs, JobOp::StartNext, json!({}), 4);
        assert_eq!(body["execution"]["jobId"], "new");
    }

    #[test]
    fn bad_requests_are_refused_in_aws_terms() {
        let mut jobs = Jobs::default();
        queue(&mut jobs, "a", 0, &mut Vec::new());
        for (payload, code) in [
            (json!({"status": "CANCELED"}), "InvalidRequest"),
            (json!({"status": "nope"}), "InvalidRequest"),
            (
                json!({"status": "SUCCEEDED", "statusDetails": {"k": 1}}),
                "InvalidRequest",
            ),
            (
                json!({"status": "IN_PROGRESS", "stepTimeoutInMinutes": 0}),
                "InvalidRequest",
            ),
        ] {
            let (ok, body, _) = ask(&mut jobs, JobOp::Update("a".into()), payload, 1);
            assert!(!ok);
            assert_eq!(body["code"], code);
        }
        let (ok, body, _) = ask(
            &mut jobs,
            JobOp::Update("zz".into()),
            json!({"status": "FAILED"}),
            1,
        );
        assert!(!ok);
        assert_eq!(body["code"], "ResourceNotFound");
        let (ok, body, _) = ask(&mut jobs, JobOp::Describe("$next".into()), json!({}), 1);
        assert!(ok);
        assert_eq!(body["execution"]["jobId"], "a");
    }

    #[test]
    fn finished_executions_are_trimmed_and_pending_ones_bounded() {
        let mut jobs = Jobs::default();
        for i in 0..(MAX_FINISHED + 5) {
            let id = format!("j{i}");
            queue(&mut jobs, &id, i as u64, &mut Vec::new());
            jobs.handle(
                "t",
                JobInput::Cancel {
                    job_id: id,
                    force: false,
                },
                i as u64,
                &mut Vec::new(),
            );
        }
        assert_eq!(jobs.executions().len(), MAX_FINISHED);
        for i in 0..(MAX_PENDING + 3) {
            queue(&mut jobs, &format!("p{i}"), 100, &mut Vec::new());
        }
        assert_eq!(jobs.pending().count(), MAX_PENDING);
    }
}
