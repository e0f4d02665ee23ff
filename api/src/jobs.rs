//! Jobs over HTTP (AWS IoT Jobs' management side): create a job for things and device types,
//! read it with its executions counted by state, list its executions, cancel it.

use crate::{
    AppState,
    auth::Caller,
    error::ApiError,
    extract::{Json, Path, Query},
};
use actors::{
    directory::Role,
    jobs::{AbortCriterion, JobRecord, JobTargets, NewJob, RateIncrease, Rollout},
};
use axum::{extract::State, http::StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use twin_core::ExecStatus;
use utoipa::{IntoParams, ToSchema};

/// Which things a job targets.
#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TargetsBody {
    /// These things (at most 10,000).
    #[serde(default)]
    things: Vec<String>,
    /// Every thing of these device types.
    #[serde(default)]
    types: Vec<String>,
}

/// A job as created.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct JobBody {
    targets: TargetsBody,
    /// What devices are told (for firmware: version, artifact URL, SHA-256, size); a JSON
    /// object of at most 32 KiB.
    #[schema(value_type = Object)]
    document: Value,
    /// Artifacts (uploaded at `/v1/artifacts`) the targeted devices may download, at most 10.
    #[serde(default)]
    artifacts: Vec<String>,
    /// How long an execution may stay in progress, minutes (1 to 10080).
    timeout_minutes: Option<u64>,
    /// How fast executions are queued; without it, every target at once.
    #[schema(value_type = Option<Object>)]
    rollout: Option<RolloutBody>,
    /// When to stop the job.
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    abort: Vec<AbortBody>,
    /// Also queue on things that join the targets later (registered or provisioned); the job
    /// never completes.
    #[serde(default)]
    continuous: bool,
}

/// `{"rate_per_minute": 1..1000, "increase"?: {"factor": 1.1..5, "every_succeeded": N}}`.
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RolloutBody {
    rate_per_minute: f64,
    increase: Option<IncreaseBody>,
}

/// Multiply the rate by `factor` every `every_succeeded` succeeded executions.
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct IncreaseBody {
    factor: f64,
    every_succeeded: u64,
}

/// `{"failure": "FAILED"|"REJECTED"|"TIMED_OUT"|"ALL", "percent": 0..100, "min_executed": N}`.
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AbortBody {
    failure: String,
    percent: f64,
    min_executed: u64,
}

/// A job and its executions by state.
#[derive(Serialize, ToSchema)]
pub(crate) struct JobView {
    id: String,
    /// `IN_PROGRESS`, `COMPLETED` (every execution finished) or `CANCELED`.
    status: String,
    #[schema(value_type = Object)]
    document: Value,
    targets: TargetsBody,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    artifacts: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout_minutes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    rollout: Option<RolloutBody>,
    #[schema(value_type = Vec<Object>)]
    abort: Vec<AbortBody>,
    /// Executions queued so far, whether every target has one, and the current rate (per
    /// minute) of a rollout.
    queued: u64,
    rollout_done: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    rate_per_minute: Option<f64>,
    /// Why the node canceled it (an abort criterion).
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    continuous: bool,
    force_canceled: bool,
    /// Executions by state (`QUEUED`, `IN_PROGRESS`, `SUCCEEDED`, …).
    #[schema(value_type = Object)]
    executions: BTreeMap<String, u64>,
    created_at: u64,
    created_by: String,
    updated_at: u64,
}

impl JobView {
    fn new(job: JobRecord, counts: Option<BTreeMap<ExecStatus, u64>>) -> Self {
        let counts = counts.unwrap_or_default();
        let pending = counts.iter().any(|(s, n)| !s.is_terminal() && *n > 0);
        let status =
            if job.status == "IN_PROGRESS" && job.progress.done && !pending && !counts.is_empty() {
                "COMPLETED".to_owned()
            } else {
                job.status
            };
        Self {
            id: job.id,
            status,
            document: job.document,
            targets: TargetsBody {
                things: job.targets.things,
                types: job.targets.types,
            },
            artifacts: job.artifacts,
            timeout_minutes: job.timeout_minutes,
            rollout: job.rollout.map(|r| RolloutBody {
                rate_per_minute: r.rate_per_minute,
                increase: r.increase.map(|i| IncreaseBody {
                    factor: i.factor,
                    every_succeeded: i.every_succeeded,
                }),
            }),
            abort: job
                .abort
                .into_iter()
                .map(|a| AbortBody {
                    failure: a.failure,
                    percent: a.percent,
                    min_executed: a.min_executed,
                })
                .collect(),
            queued: job.progress.queued,
            rollout_done: job.progress.done,
            rate_per_minute: job.progress.rate_per_minute,
            reason: job.reason,
            continuous: job.continuous,
            force_canceled: job.force_canceled,
            executions: counts
                .into_iter()
                .map(|(s, n)| (s.as_str().to_owned(), n))
                .collect(),
            created_at: job.created_at,
            created_by: job.created_by,
            updated_at: job.updated_at,
        }
    }
}

/// Creates a job (operator): every targeted thing gets a queued execution. Listing things needs
/// a key for every type; a key limited to types may target only its types.
#[utoipa::path(put, path = "/v1/jobs/{id}", tag = "jobs", request_body = JobBody,
    params(("id" = String, Path, pattern = "^[a-zA-Z0-9_-]{1,64}$")), security(("bearer" = [])),
    responses((status = 201, body = JobView), (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody),
        (status = 403, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody), (status = 415, body = crate::error::ErrorBody)))]
pub(crate) async fn put(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<JobBody>,
) -> Result<(StatusCode, axum::Json<JobView>), ApiError> {
    caller.require(Role::Operator)?;
    if !body.targets.things.is_empty() && caller.0.types.is_some() {
        return Err(ApiError::forbidden(
            "a key limited to device types targets types, not things",
        ));
    }
    for t in &body.targets.types {
        let name = twin_core::TypeName::new(t).map_err(|e| ApiError::invalid(e.to_string()))?;
        if !caller.sees(Some(&name)) {
            return Err(ApiError::forbidden(format!(
                "type {name} is outside the key's device types"
            )));
        }
    }
    let job = NewJob {
        id,
        document: body.document,
        targets: JobTargets {
            things: body.targets.things,
            types: body.targets.types,
        },
        artifacts: body.artifacts,
        timeout_minutes: body.timeout_minutes,
        rollout: body.rollout.map(|r| Rollout {
            rate_per_minute: r.rate_per_minute,
            increase: r.increase.map(|i| RateIncrease {
                factor: i.factor,
                every_succeeded: i.every_succeeded,
            }),
        }),
        abort: body
            .abort
            .into_iter()
            .map(|a| AbortCriterion {
                failure: a.failure,
                percent: a.percent,
                min_executed: a.min_executed,
            })
            .collect(),
        continuous: body.continuous,
    };
    let record = state.node.create_job(job, caller.id()).await?;
    Ok((StatusCode::CREATED, axum::Json(JobView::new(record, None))))
}

/// Jobs, by id.
#[derive(Serialize, ToSchema)]
pub(crate) struct JobList {
    jobs: Vec<JobView>,
}

/// Every job (viewer), without counts.
#[utoipa::path(get, path = "/v1/jobs", tag = "jobs", security(("bearer" = [])),
    responses((status = 200, body = JobList), (status = 401, body = crate::error::ErrorBody)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<axum::Json<JobList>, ApiError> {
    caller.require(Role::Viewer)?;
    let jobs = state.node.with_directory(|d| d.jobs(None, 1_000)).await?;
    Ok(axum::Json(JobList {
        jobs: jobs.into_iter().map(|j| JobView::new(j, None)).collect(),
    }))
}

/// A job with its executions counted by state (viewer).
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, pattern = "^[a-zA-Z0-9_-]{1,64}$")), security(("bearer" = [])),
    responses((status = 200, body = JobView), (status = 401, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<JobView>, ApiError> {
    caller.require(Role::Viewer)?;
    let (job, counts) = state
        .node
        .with_directory(move |d| Ok((d.job(&id)?, d.job_counts(&id)?)))
        .await?;
    Ok(axum::Json(JobView::new(job, Some(counts))))
}

/// Which executions.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ExecutionQuery {
    /// Only executions in this state (`QUEUED`, `IN_PROGRESS`, `SUCCEEDED`, `FAILED`,
    /// `TIMED_OUT`, `REJECTED`, `REMOVED`, `CANCELED`).
    status: Option<String>,
    /// Continue after this thing (the `next` of the previous page).
    #[param(pattern = "^[a-zA-Z0-9:_-]{1,128}$")]
    cursor: Option<String>,
    /// At most this many (default 100, at most 1,000).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// A page of a job's executions.
#[derive(Serialize, ToSchema)]
pub(crate) struct ExecutionPage {
    /// Each: `thing`, `status`, `versionNumber`, `statusDetails`, `updatedAt` (epoch ms).
    #[schema(value_type = Vec<Object>)]
    executions: Vec<Value>,
    /// Pass as `cursor` for the next page; absent on the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

/// A job's executions by thing name (viewer).
#[utoipa::path(get, path = "/v1/jobs/{id}/executions", tag = "jobs",
    params(("id" = String, Path, pattern = "^[a-zA-Z0-9_-]{1,64}$"), ExecutionQuery), security(("bearer" = [])),
    responses((status = 200, body = ExecutionPage), (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn executions(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(query): Query<ExecutionQuery>,
) -> Result<axum::Json<ExecutionPage>, ApiError> {
    caller.require(Role::Viewer)?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=1_000).contains(&limit) {
        return Err(ApiError::invalid("limit must be between 1 and 1000"));
    }
    let status = query
        .status
        .as_deref()
        .map(|s| {
            ExecStatus::parse(s)
                .ok_or_else(|| ApiError::invalid(format!("no execution state {s:?}")))
        })
        .transpose()?;
    let cursor = query.cursor;
    let (found, more) = state
        .node
        .with_directory(move |d| {
            d.job(&id)?;
            d.job_executions(&id, cursor.as_deref(), limit, status)
        })
        .await?;
    let next = more.then(|| found.last().map(|(t, _)| t.clone())).flatten();
    let executions = found
        .into_iter()
        .map(|(thing, e)| {
            let mut v = Map::new();
            v.insert("thing".into(), thing.into());
            v.insert("status".into(), e.status.as_str().into());
            v.insert("versionNumber".into(), e.version.into());
            v.insert("statusDetails".into(), serde_json::json!(e.status_details));
            v.insert("updatedAt".into(), e.updated_at.into());
            Value::Object(v)
        })
        .collect();
    Ok(axum::Json(ExecutionPage { executions, next }))
}

/// How to cancel.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct CancelBody {
    /// Cancel executions in progress too.
    #[serde(default)]
    force: bool,
}

/// Cancels a job (operator): queued executions are canceled, those in progress too with
/// `force`.
#[utoipa::path(post, path = "/v1/jobs/{id}/cancel", tag = "jobs", request_body = CancelBody,
    params(("id" = String, Path, pattern = "^[a-zA-Z0-9_-]{1,64}$")), security(("bearer" = [])),
    responses((status = 200, body = JobView), (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody),
        (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody), (status = 415, body = crate::error::ErrorBody)))]
pub(crate) async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<CancelBody>,
) -> Result<axum::Json<JobView>, ApiError> {
    caller.require(Role::Operator)?;
    let record = state.node.cancel_job(id, body.force, caller.id()).await?;
    Ok(axum::Json(JobView::new(record, None)))
}

/// A thing's executions.
#[derive(Serialize, ToSchema)]
pub(crate) struct ThingExecutions {
    /// Newest job first: `jobId`, `jobStatus`, `status`, `versionNumber`, `statusDetails`,
    /// `updatedAt`.
    #[schema(value_type = Vec<Object>)]
    executions: Vec<Value>,
}

/// A thing's executions of the 100 newest jobs (AWS's ListJobExecutionsForThing).
#[utoipa::path(get, path = "/v1/things/{name}/jobs", tag = "jobs", params(("name" = String, Path, pattern = "^[a-zA-Z0-9:_-]{1,128}$")),
    security(("bearer" = [])),
    responses((status = 200, body = ThingExecutions), (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn for_thing(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<axum::Json<ThingExecutions>, ApiError> {
    let record = crate::things::visible_thing(&state, &caller, &name).await?;
    let thing = record.name.to_string();
    let found = state
        .node
        .with_directory(move |d| d.thing_executions(&thing, 100))
        .await?;
    let executions = found
        .into_iter()
        .map(|(job, e)| {
            serde_json::json!({
                "jobId": job.id,
                "jobStatus": job.status,
                "status": e.status.as_str(),
                "versionNumber": e.version,
                "statusDetails": e.status_details,
                "updatedAt": e.updated_at,
            })
        })
        .collect();
    Ok(axum::Json(ThingExecutions { executions }))
}
