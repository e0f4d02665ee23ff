//! `/metrics`: Prometheus text. Counters and histograms are recorded where things happen
//! (actors, endpoint, WebSocket); gauges of state (twins, connections, memory) are read when
//! the page is scraped.

use crate::{AppState, auth::Caller, error::ApiError};
use axum::{
    extract::State,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};

fn process_rss_bytes() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024.0)
}

/// Prometheus metrics (any valid key).
#[utoipa::path(get, path = "/metrics", tag = "operations", security(("bearer" = [])),
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"),
        (status = 401, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn metrics(
    State(state): State<AppState>,
    _caller: Caller,
) -> Result<Response, ApiError> {
    let Some(handle) = &state.metrics else {
        return Err(ApiError::not_found("metrics are not enabled"));
    };
    let twins = state.node.stats().await;
    metrics::gauge!("doppel_twins_active").set(twins.active as f64);
    metrics::gauge!("doppel_twins_loading").set(twins.loading as f64);
    metrics::gauge!("doppel_twins_passivated_total").set(twins.passivated as f64);
    metrics::gauge!("doppel_commit_window_twins").set(twins.pending as f64);
    let hub = state.node.hub().stats();
    metrics::gauge!("doppel_ws_watchers").set(hub.watchers as f64);
    metrics::gauge!("doppel_hub_subscriptions").set(hub.subscriptions as f64);
    metrics::gauge!("doppel_ws_fell_behind_total").set(hub.resyncs as f64);
    metrics::gauge!("doppel_ws_queued_changes").set(hub.queued as f64);
    metrics::gauge!("doppel_ws_resync_pending").set(hub.behind as f64);
    if let Some(rss) = process_rss_bytes() {
        metrics::gauge!("doppel_process_resident_memory_bytes").set(rss);
    }
    let mut response = handle.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    Ok(response)
}
