//! Telemetry history: raw samples, or downsampled buckets.

use crate::{
    AppState,
    auth::Caller,
    error::ApiError,
    extract::{Json, Path, Query},
    things::visible_thing,
};
use actors::history::{self, Agg, Query as HistoryQuery, QueryError, Series};
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};

/// Which history.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct TelemetryQuery {
    /// Start, epoch ms (default: one hour before `to`).
    #[param(maximum = 253_402_300_799_999_u64)]
    from: Option<u64>,
    /// End, epoch ms, exclusive (default: now).
    #[param(maximum = 253_402_300_799_999_u64)]
    to: Option<u64>,
    /// Bucket width: `30s`, `5m`, `1h`… Without it, raw samples are returned.
    #[param(pattern = "^[1-9][0-9]{0,5}(ms|s|m|h|d)$")]
    step: Option<String>,
    /// `avg` (default), `min`, `max`, `sum`, `count` or `last`.
    #[param(pattern = "^(avg|min|max|sum|count|last)$")]
    agg: Option<String>,
    /// Only these fields, comma-separated.
    fields: Option<String>,
    /// Most samples or buckets (default and maximum 10,000).
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<usize>,
}

/// A raw sample.
#[derive(Serialize, ToSchema)]
pub(crate) struct Sample {
    /// Device time, epoch ms.
    ts: u64,
    #[schema(value_type = Object)]
    values: Value,
}

/// A bucket.
#[derive(Serialize, ToSchema)]
pub(crate) struct Point {
    /// Bucket start, epoch ms.
    ts: u64,
    values: BTreeMap<String, f64>,
}

/// History of a thing.
#[derive(Serialize, ToSchema)]
pub(crate) struct TelemetryReply {
    thing: String,
    from: u64,
    to: u64,
    /// Bucket width in ms, when downsampled.
    #[serde(skip_serializing_if = "Option::is_none")]
    step: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    samples: Option<Vec<Sample>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    points: Option<Vec<Point>>,
}

/// A thing's telemetry history. Recent data (the raw retention, 7 days by default) comes from
/// raw samples; older data from hourly aggregates (90 days), in whole-hour steps.
#[utoipa::path(get, path = "/v1/things/{name}/telemetry", tag = "telemetry", params(("name" = String, Path, pattern = "^[a-zA-Z0-9:_-]{1,128}$"), TelemetryQuery), security(("bearer" = [])),
    responses((status = 200, body = TelemetryReply), (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<TelemetryQuery>,
) -> Result<Json<TelemetryReply>, ApiError> {
    let record = visible_thing(&state, &caller, &name).await?;
    let now = actors::now_ms();
    let to = q.to.unwrap_or(now + 1);
    let from = q.from.unwrap_or(to.saturating_sub(3_600_000));
    let step = q
        .step
        .as_deref()
        .map(|s| humantime::parse_duration(s).map(|d| d.as_millis() as u64))
        .transpose()
        .map_err(|e| ApiError::invalid(format!("step: {e}")))?;
    let agg = match q.agg.as_deref() {
        None => Agg::Avg,
        Some(a) => Agg::parse(a)
            .ok_or_else(|| ApiError::invalid("agg must be avg, min, max, sum, count or last"))?,
    };
    let limit = q.limit.unwrap_or(10_000);
    if limit == 0 || limit > 10_000 {
        return Err(ApiError::invalid("limit must be between 1 and 10000"));
    }
    crate::check_time("from", q.from)?;
    crate::check_time("to", q.to)?;
    let query = HistoryQuery {
        from,
        to,
        step,
        agg,
        fields: q.fields.map(|f| f.split(',').map(str::to_owned).collect()),
        limit,
    };
    let config = state.node.config().history.clone();
    let thing = record.name.clone();
    let series = state
        .node
        .with_directory(
            move |d| match history::query(d, &config, &thing, &query, now) {
                Ok(series) => Ok(Ok(series)),
                Err(QueryError::Invalid(message)) => Ok(Err(message)),
                Err(QueryError::Node(e)) => Err(e),
            },
        )
        .await?
        .map_err(ApiError::invalid)?;
    let (samples, points) = match series {
        Series::Raw(raw) => (
            Some(
                raw.into_iter()
                    .map(|(ts, values)| Sample { ts, values })
                    .collect(),
            ),
            None,
        ),
        Series::Points(points) => (
            None,
            Some(
                points
                    .into_iter()
                    .map(|p| Point {
                        ts: p.ts,
                        values: p.values,
                    })
                    .collect(),
            ),
        ),
    };
    Ok(Json(TelemetryReply {
        thing: record.name.to_string(),
        from,
        to,
        step,
        samples,
        points,
    }))
}
