//! Rules over HTTP: store (checked against the deployment), read, list, delete; check a source
//! without saving it; run a rule's in-language tests; dry-run it over a thing's recorded
//! telemetry; a twin's recent evaluations; the alert history.

use crate::{
    AppState,
    auth::Caller,
    error::ApiError,
    extract::{Json, Path, Query},
    things::visible_thing,
};
use actors::directory::Role;
use actors::directory::RuleRecord;
use axum::{
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use rules_dsl::{Diagnostic, Offline, Output, RuleTarget, testing::TestReport};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use twin_core::{ThingName, TypeName};
use utoipa::{IntoParams, ToSchema};

/// A rule's source.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SourceBody {
    /// The rule (and its tests) in the rule language.
    #[schema(max_length = 65536)]
    source: String,
}

/// A stored rule.
#[derive(Serialize, ToSchema)]
pub(crate) struct RuleView {
    name: String,
    /// The device type it is attached to.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    device_type: Option<String>,
    /// The thing it is attached to.
    #[serde(skip_serializing_if = "Option::is_none")]
    thing: Option<String>,
    source: String,
    updated_by: String,
    /// Epoch ms.
    updated_at: u64,
    /// Warnings of the check (on PUT).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Object>)]
    warnings: Vec<Diagnostic>,
}

impl From<RuleRecord> for RuleView {
    fn from(r: RuleRecord) -> Self {
        Self {
            name: r.name,
            device_type: r.device_type,
            thing: r.thing,
            source: r.source,
            updated_by: r.updated_by,
            updated_at: r.updated_at,
            warnings: Vec::new(),
        }
    }
}

fn source_size(source: &str) -> Result<(), ApiError> {
    let max = rules_dsl::ir::limits::SOURCE_BYTES;
    if source.len() > max {
        return Err(ApiError::invalid(format!(
            "the source is {} bytes; at most {max} are accepted",
            source.len()
        )));
    }
    Ok(())
}

fn rule_name(name: &str) -> Result<&str, ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(name)
    } else {
        Err(ApiError::invalid(
            "rule names are 1 to 64 characters of a-z A-Z 0-9 _",
        ))
    }
}

/// Whether the caller may see a rule attached to `target`.
async fn sees_target(
    state: &AppState,
    caller: &Caller,
    target: &RuleTarget,
) -> Result<bool, ApiError> {
    if caller.0.types.is_none() {
        return Ok(true);
    }
    Ok(match target {
        RuleTarget::Type(t) => TypeName::new(t).is_ok_and(|t| caller.sees(Some(&t))),
        RuleTarget::Thing(t) => match ThingName::new(t) {
            Ok(thing) => state
                .node
                .thing(thing)
                .await?
                .is_some_and(|r| caller.sees(r.device_type.as_ref())),
            Err(_) => false,
        },
    })
}

fn target_of(record: &RuleRecord) -> RuleTarget {
    match (&record.device_type, &record.thing) {
        (Some(t), _) => RuleTarget::Type(t.clone()),
        (None, Some(t)) => RuleTarget::Thing(t.clone()),
        (None, None) => RuleTarget::Type(String::new()),
    }
}

/// A stored rule the caller may see (404 otherwise).
async fn visible_rule(
    state: &AppState,
    caller: &Caller,
    name: &str,
) -> Result<RuleRecord, ApiError> {
    let name = rule_name(name)?;
    let record = state
        .node
        .directory()
        .rules()
        .get(name)
        .map(|(r, _)| r)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "rule_not_found",
                format!("rule {name} not found"),
            )
        })?;
    if !sees_target(state, caller, &target_of(&record)).await? {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "rule_not_found",
            format!("rule {name} not found"),
        ));
    }
    Ok(record)
}

/// Stores a rule (operator). The source must hold exactly one rule named as in the path, and
/// may hold tests. It is checked against the device type's schemas first; diagnostics come
/// back in `details.diagnostics` with 400. Twins use it from their next evaluation; an
/// unchanged rule keeps its state.
#[utoipa::path(put, path = "/v1/rules/{name}", tag = "rules", params(("name" = String, Path, pattern = "^[A-Za-z0-9_]{1,64}$")),
    request_body = SourceBody, security(("bearer" = [])),
    responses((status = 200, body = RuleView), (status = 201, body = RuleView), (status = 400, body = crate::error::ErrorBody),
        (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody),
        (status = 415, body = crate::error::ErrorBody)))]
pub(crate) async fn put(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Json(body): Json<SourceBody>,
) -> Result<Response, ApiError> {
    caller.require(Role::Operator)?;
    let name = rule_name(&name)?.to_owned();
    source_size(&body.source)?;
    // The target, for the scope check, before anything is stored.
    let offline = rules_dsl::check(&body.source, &Offline, false);
    if let Some(program) = &offline.program
        && let Some(rule) = program.rules.iter().find(|r| *r.name == *name)
        && !sees_target(&state, &caller, &rule.target).await?
    {
        return Err(ApiError::forbidden(
            "the rule's target is outside the key's device types",
        ));
    }
    // Nor may it replace a rule outside its scope: the same answer as for a target outside it.
    let existing = state.node.directory().rules().get(&name);
    if let Some((record, _)) = &existing
        && !sees_target(&state, &caller, &target_of(record)).await?
    {
        return Err(ApiError::forbidden(
            "the rule's target is outside the key's device types",
        ));
    }
    let existed = existing.is_some();
    let actor = caller.id().to_owned();
    let stored = state
        .node
        .with_directory(move |d| d.put_rule(&name, body.source, &actor, actors::now_ms()))
        .await?;
    let mut view = RuleView::from(stored.record);
    view.warnings = stored.warnings;
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(view)).into_response())
}

/// Every rule the key may see.
#[derive(Serialize, ToSchema)]
pub(crate) struct RuleList {
    rules: Vec<RuleView>,
}

/// Lists rules.
#[utoipa::path(get, path = "/v1/rules", tag = "rules", security(("bearer" = [])),
    responses((status = 200, body = RuleList), (status = 401, body = crate::error::ErrorBody)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<RuleList>, ApiError> {
    let mut rules = Vec::new();
    for record in state.node.directory().rules().list() {
        if sees_target(&state, &caller, &target_of(&record)).await? {
            rules.push(RuleView::from(record));
        }
    }
    Ok(Json(RuleList { rules }))
}

/// One rule.
#[utoipa::path(get, path = "/v1/rules/{name}", tag = "rules", params(("name" = String, Path, pattern = "^[A-Za-z0-9_]{1,64}$")),
    security(("bearer" = [])),
    responses((status = 200, body = RuleView), (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<RuleView>, ApiError> {
    Ok(Json(visible_rule(&state, &caller, &name).await?.into()))
}

/// Removes a rule (operator); its twins resolve its alerts at their next evaluation.
#[utoipa::path(delete, path = "/v1/rules/{name}", tag = "rules", params(("name" = String, Path, pattern = "^[A-Za-z0-9_]{1,64}$")),
    security(("bearer" = [])),
    responses((status = 204), (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody),
        (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Operator)?;
    let record = visible_rule(&state, &caller, &name).await?;
    let actor = caller.id().to_owned();
    state
        .node
        .with_directory(move |d| d.delete_rule(&record.name, &actor, actors::now_ms()))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A source to check and, if asked, test.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CheckBody {
    /// The rules (and their tests) in the rule language.
    #[schema(max_length = 65536)]
    source: String,
    /// Also run the source's tests when it has no errors (the editor's "run tests").
    #[serde(default)]
    tests: bool,
}

/// The result of a check.
#[derive(Serialize, ToSchema)]
pub(crate) struct CheckResult {
    /// No errors.
    ok: bool,
    /// Errors and warnings, in source order: code, severity, message, line, column, span, hint.
    #[schema(value_type = Vec<Object>)]
    diagnostics: Vec<Diagnostic>,
    /// The tests' results, when asked for and the source has no errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    tests: Option<TestResults>,
}

/// Checks a source against the deployment, and runs its tests if asked, without saving anything.
#[utoipa::path(post, path = "/v1/rules/check", tag = "rules", request_body = CheckBody, security(("bearer" = [])),
    responses((status = 200, body = CheckResult), (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody),
        (status = 415, body = crate::error::ErrorBody)))]
pub(crate) async fn check(
    State(state): State<AppState>,
    _caller: Caller,
    Json(body): Json<CheckBody>,
) -> Result<Json<CheckResult>, ApiError> {
    source_size(&body.source)?;
    state
        .node
        .with_directory(move |d| {
            let checked = rules_dsl::check(&body.source, d, true);
            let ok = !checked.has_errors();
            let tests = match &checked.program {
                Some(program) if body.tests && ok => {
                    // The twin of the tests is of the first rule's device type, if any.
                    let device_type = program
                        .rules
                        .iter()
                        .find_map(|r| match &r.target {
                            RuleTarget::Type(t) => TypeName::new(t.as_ref()).ok(),
                            RuleTarget::Thing(_) => None,
                        })
                        .and_then(|t| d.device_type(&t));
                    let reports = rules_dsl::testing::run(program, device_type.as_deref());
                    Some(TestResults {
                        passed: reports.iter().all(|r| r.passed),
                        tests: reports,
                    })
                }
                _ => None,
            };
            Ok(Json(CheckResult {
                ok,
                diagnostics: checked.diagnostics,
                tests,
            }))
        })
        .await
        .map_err(ApiError::from)
}

/// Test results.
#[derive(Serialize, ToSchema)]
pub(crate) struct TestResults {
    /// Every test passed.
    passed: bool,
    /// One report per test: name, passed, failures (line, column, message), timeline.
    #[schema(value_type = Vec<Object>)]
    tests: Vec<TestReport>,
}

/// Runs the tests written in a stored rule's source, on a virtual clock.
#[utoipa::path(post, path = "/v1/rules/{name}/test", tag = "rules", params(("name" = String, Path, pattern = "^[A-Za-z0-9_]{1,64}$")),
    security(("bearer" = [])),
    responses((status = 200, body = TestResults), (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn test(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<TestResults>, ApiError> {
    let record = visible_rule(&state, &caller, &name).await?;
    let reports = state
        .node
        .with_directory(move |d| {
            let checked = rules_dsl::check(&record.source, d, true);
            let checked = if checked.program.is_some() {
                checked
            } else {
                rules_dsl::check(&record.source, &Offline, false)
            };
            let program = checked
                .program
                .ok_or(actors::NodeError::RulesInvalid(checked.diagnostics))?;
            let device_type = record
                .device_type
                .as_deref()
                .and_then(|t| TypeName::new(t).ok())
                .and_then(|t| d.device_type(&t));
            Ok(rules_dsl::testing::run(&program, device_type.as_deref()))
        })
        .await?;
    Ok(Json(TestResults {
        passed: reports.iter().all(|r| r.passed),
        tests: reports,
    }))
}

/// A dry run: a thing and a time range of its recorded telemetry.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DryRunBody {
    /// The thing whose telemetry is replayed.
    #[schema(pattern = "^[a-zA-Z0-9:_-]{1,128}$")]
    thing: String,
    /// Start, epoch ms (default: one hour before `to`).
    #[schema(maximum = 253_402_300_799_999_u64)]
    from: Option<u64>,
    /// End, epoch ms (default: now).
    #[schema(maximum = 253_402_300_799_999_u64)]
    to: Option<u64>,
}

/// What the rule would have done.
#[derive(Serialize, ToSchema)]
pub(crate) struct DryRunResult {
    /// Samples replayed.
    samples: usize,
    /// The rule's outputs in time order: `at`, `rule`, `kind` (`alert`, `event`, `command`,
    /// `command_ended`, `set`) and its fields.
    #[schema(value_type = Vec<Object>)]
    outputs: Vec<Output>,
}

/// Replays a thing's recorded telemetry (raw samples, at most 10,000) through a stored rule on
/// a fresh twin: what would have fired, and when. Nothing is changed.
#[utoipa::path(post, path = "/v1/rules/{name}/dry-run", tag = "rules", params(("name" = String, Path, pattern = "^[A-Za-z0-9_]{1,64}$")),
    request_body = DryRunBody, security(("bearer" = [])),
    responses((status = 200, body = DryRunResult), (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody), (status = 415, body = crate::error::ErrorBody)))]
pub(crate) async fn dry_run(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Json(body): Json<DryRunBody>,
) -> Result<Json<DryRunResult>, ApiError> {
    crate::check_time("from", body.from)?;
    crate::check_time("to", body.to)?;
    let record = visible_rule(&state, &caller, &name).await?;
    let thing = visible_thing(&state, &caller, &body.thing).await?;
    let (_, rule) = state
        .node
        .directory()
        .rules()
        .get(&record.name)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "rule_not_found", "rule not found"))?;
    let to = body.to.unwrap_or_else(|| actors::now_ms() + 1);
    let from = body.from.unwrap_or(to.saturating_sub(3_600_000));
    if from >= to {
        return Err(ApiError::invalid("from must be before to"));
    }
    let (samples, outputs) = state
        .node
        .with_directory(move |d| {
            let samples = d.telemetry_samples(&thing.name, from, to, 10_000)?;
            let count = samples.len();
            let device_type = thing.device_type.as_ref().and_then(|t| d.device_type(t));
            let outputs = rules_dsl::testing::replay(&[rule], samples, to, device_type.as_deref());
            Ok((count, outputs))
        })
        .await?;
    Ok(Json(DryRunResult { samples, outputs }))
}

/// A twin's recent rule evaluations.
#[derive(Serialize, ToSchema)]
pub(crate) struct TraceView {
    thing: String,
    /// Newest last: when, rule, trigger, the conditions' values, the phase before and after,
    /// and what happened. Empty when the twin is not active.
    #[schema(value_type = Vec<Object>)]
    evaluations: Vec<serde_json::Value>,
}

/// Why a twin's rules fired or not: its latest evaluations (kept in memory while it is active).
#[utoipa::path(get, path = "/v1/things/{name}/rules/trace", tag = "rules", params(("name" = String, Path, pattern = "^[a-zA-Z0-9:_-]{1,128}$")),
    security(("bearer" = [])),
    responses((status = 200, body = TraceView), (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn trace(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<TraceView>, ApiError> {
    let record = visible_thing(&state, &caller, &name).await?;
    let evaluations = state.node.rule_trace(record.name.clone()).await?;
    Ok(Json(TraceView {
        thing: record.name.to_string(),
        evaluations,
    }))
}

/// Which alerts.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct AlertQuery {
    /// Only this thing's.
    #[param(pattern = "^[a-zA-Z0-9:_-]{1,128}$")]
    thing: Option<String>,
    /// From, epoch ms (default 0).
    #[param(maximum = 253_402_300_799_999_u64)]
    from: Option<u64>,
    /// To, epoch ms, exclusive (default now).
    #[param(maximum = 253_402_300_799_999_u64)]
    to: Option<u64>,
    /// Continue after this entry (the `next` of the previous page).
    #[param(pattern = "^[0-9]{1,18}-[0-9]{1,18}$")]
    cursor: Option<String>,
    /// At most this many (default 100, at most 1,000).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// An alert fired or resolved.
#[derive(Serialize, ToSchema)]
pub(crate) struct AlertView {
    /// Epoch ms.
    at: u64,
    thing: String,
    rule: String,
    /// Its name, severity, state (`firing`, `resolved`) and message.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    details: Map<String, Value>,
}

/// A page of the alert history.
#[derive(Serialize, ToSchema)]
pub(crate) struct AlertPage {
    alerts: Vec<AlertView>,
    /// Pass as `cursor` for the next page; absent on the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

/// The alert history: every alert rules raised and resolved, oldest first.
#[utoipa::path(get, path = "/v1/alerts", tag = "rules", params(AlertQuery), security(("bearer" = [])),
    responses((status = 200, body = AlertPage), (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn alerts(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<AlertQuery>,
) -> Result<Json<AlertPage>, ApiError> {
    let crate::LogWindow {
        limit,
        range,
        mut after,
    } = crate::LogWindow::parse(q.limit, q.from, q.to, q.cursor.as_deref())?;
    if let Some(thing) = &q.thing {
        visible_thing(&state, &caller, thing).await?;
    }
    let mut alerts = Vec::new();
    let mut next = None;
    let mut visible: std::collections::HashMap<String, bool> = std::collections::HashMap::new();
    // Pages of the log, filtered by thing and by the key's scope, until the page is full.
    'pages: for _ in 0..100 {
        let page = state
            .node
            .with_directory(move |d| {
                d.rule_log(actors::directory::LogKind::Alert, range, after, 1_000)
            })
            .await?;
        let done = page.len() < 1_000;
        for (cursor, entry) in page {
            after = Some(cursor);
            if q.thing.as_ref().is_some_and(|t| *t != entry.thing) {
                continue;
            }
            let sees = match visible.get(&entry.thing) {
                Some(v) => *v,
                None => {
                    let v = caller.0.types.is_none()
                        || visible_thing(&state, &caller, &entry.thing).await.is_ok();
                    visible.insert(entry.thing.clone(), v);
                    v
                }
            };
            if !sees {
                continue;
            }
            if alerts.len() == limit {
                next = alerts
                    .last()
                    .map(|(c, _): &((u64, u64), AlertView)| crate::log_cursor(*c));
                break 'pages;
            }
            alerts.push((
                cursor,
                AlertView {
                    at: entry.at,
                    thing: entry.thing,
                    rule: entry.rule,
                    details: entry.details,
                },
            ));
        }
        if done {
            break;
        }
    }
    Ok(Json(AlertPage {
        alerts: alerts.into_iter().map(|(_, a)| a).collect(),
        next,
    }))
}
