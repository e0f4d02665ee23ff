//! doppel's HTTP and WebSocket API for apps and operators (axum). The only crate that knows
//! HTTP and WebSocket wire formats: JSON bodies, status codes, `{code, message, details?}`
//! errors, bearer tokens, frames.

mod artifacts;
mod auth;
mod certs;
mod cluster;
mod console;
mod device;
mod error;
mod extract;
mod jobs;
mod keys;
mod metrics;
mod openapi;
mod provisioning;
mod rules;
mod schemas;
mod serve;
mod slots;
mod telemetry;
mod things;
mod tickets;
mod ws;

pub use auth::Caller;
pub use error::ApiError;
pub use metrics_exporter_prometheus::PrometheusHandle;
pub use serve::{ServeLimits, serve};
pub use ws::WsConfig;

use actors::Node;
use axum::{
    Router,
    extract::State,
    http::StatusCode,
    response::IntoResponse,
    routing::{get, post},
};
use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    node: Node,
    ready: Arc<AtomicBool>,
    metrics: Option<PrometheusHandle>,
    ws: WsConfig,
    /// WebSocket connections per API key.
    ws_connections: slots::Slots<String>,
    /// Unused WebSocket tickets.
    tickets: tickets::Tickets,
    cors: CorsConfig,
}

/// Which other origins' pages may call the API from a browser (the `[cors]` table of the
/// configuration file). None by default: the console is served from the API's own origin.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CorsConfig {
    /// Origins allowed, exactly as browsers send them (`https://app.example.com`).
    pub allowed_origins: Vec<String>,
}

impl CorsConfig {
    /// Checks that every origin is `http(s)://host[:port]`, as browsers send it (no path, no
    /// wildcard: a key is a credential, so every origin is named).
    pub fn validate(&self) -> Result<(), String> {
        for origin in &self.allowed_origins {
            let rest = origin
                .strip_prefix("https://")
                .or_else(|| origin.strip_prefix("http://"));
            let valid = rest.is_some_and(|host| {
                !host.is_empty()
                    && host
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c))
            });
            if !valid {
                return Err(format!(
                    "cors.allowed_origins: {origin:?} is not an origin like \"https://app.example.com\" (scheme and host, optional port, no path, no wildcard)"
                ));
            }
        }
        Ok(())
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

impl AppState {
    /// State for a node (its directory knows the bootstrap admin token); `metrics` renders
    /// `/metrics` when the process installed a Prometheus recorder.
    pub fn new(node: Node, metrics: Option<PrometheusHandle>, ws: WsConfig) -> Self {
        Self {
            node,
            ready: Arc::new(AtomicBool::new(false)),
            metrics,
            ws,
            ws_connections: slots::Slots::default(),
            tickets: tickets::Tickets::default(),
            cors: CorsConfig::default(),
        }
    }

    /// Allows the pages of `cors.allowed_origins` to call the API.
    pub fn with_cors(mut self, cors: CorsConfig) -> Self {
        self.cors = cors;
        self
    }

    /// Marks the node ready (store open, listeners up): `/readyz` answers 200 from now on.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }
}

/// The latest time a query may name: 9999-12-31T23:59:59.999Z, in epoch ms.
const LATEST_MS: u64 = 253_402_300_799_999;

fn check_time(name: &str, ms: Option<u64>) -> Result<(), ApiError> {
    match ms {
        Some(ms) if ms > LATEST_MS => Err(ApiError::invalid(format!(
            "{name} must be an epoch-ms time no later than {LATEST_MS}"
        ))),
        _ => Ok(()),
    }
}

/// What a page of a time-ordered log (audit, alerts) asks for: at most `limit` entries in
/// `range` (epoch ms, end exclusive), after the entry `after` names.
struct LogWindow {
    limit: usize,
    range: (u64, u64),
    after: Option<(u64, u64)>,
}

impl LogWindow {
    /// Checks the query's `limit` (default 100, at most 1,000), `from`, `to` (default now) and
    /// `cursor` (`{at}-{seq}`, the `next` of a previous page).
    fn parse(
        limit: Option<usize>,
        from: Option<u64>,
        to: Option<u64>,
        cursor: Option<&str>,
    ) -> Result<Self, ApiError> {
        let limit = limit.unwrap_or(100);
        if limit == 0 || limit > 1_000 {
            return Err(ApiError::invalid("limit must be between 1 and 1000"));
        }
        check_time("from", from)?;
        check_time("to", to)?;
        let after = cursor
            .map(|c| {
                let (at, seq) = c.split_once('-')?;
                Some((at.parse().ok()?, seq.parse().ok()?))
            })
            .map(|parsed| {
                parsed.ok_or_else(|| ApiError::invalid("cursor must come from a previous page"))
            })
            .transpose()?;
        let range = (
            from.unwrap_or(0),
            to.unwrap_or_else(|| actors::now_ms() + 1),
        );
        Ok(Self {
            limit,
            range,
            after,
        })
    }
}

/// The cursor naming a log entry, as `LogWindow::parse` reads it.
fn log_cursor((at, seq): (u64, u64)) -> String {
    format!("{at}-{seq}")
}

/// The HTTP routes.
pub fn router(state: AppState) -> Router {
    let router = Router::new()
        .merge(console::routes())
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::metrics))
        .route("/v1/openapi.json", get(openapi::document))
        .route("/v1/me", get(keys::me))
        .route("/v1/fleet/summary", get(things::summary))
        .route("/v1/things", post(things::register).get(things::list))
        .route("/v1/things/bulk", post(things::register_bulk))
        .route(
            "/v1/things/{name}",
            get(things::get)
                .patch(things::update)
                .delete(things::decommission),
        )
        .route(
            "/v1/things/{name}/shadow",
            get(things::get_shadow)
                .patch(things::patch_shadow)
                .delete(things::delete_shadow),
        )
        .route("/v1/things/{name}/telemetry", get(telemetry::get))
        .route("/v1/things/{name}/jobs", get(jobs::for_thing))
        .route("/v1/types", get(things::list_types))
        .route(
            "/v1/types/{type}",
            get(things::get_type).put(things::put_type),
        )
        .route("/v1/keys", post(keys::create).get(keys::list))
        .route("/v1/keys/{id}", axum::routing::delete(keys::revoke))
        .route("/v1/audit", get(keys::audit))
        .route("/v1/admin/rotate-key", post(keys::rotate_admin))
        .route("/v1/cluster", get(cluster::get))
        .route("/v1/ca", get(certs::ca))
        .route("/v1/ca/crl", get(certs::crl))
        .route(
            "/v1/things/{name}/certificates",
            post(certs::issue).get(certs::list),
        )
        .route(
            "/v1/things/{name}/certificates/{id}",
            axum::routing::patch(certs::set_status),
        )
        .route("/v1/provisioning-templates", get(provisioning::list))
        .route(
            "/v1/provisioning-templates/{name}",
            axum::routing::put(provisioning::put)
                .get(provisioning::get)
                .delete(provisioning::delete),
        )
        .route(
            "/v1/provisioning-templates/{name}/claim-certificates",
            post(provisioning::issue_claim).get(provisioning::list_claims),
        )
        .route(
            "/v1/provisioning-templates/{name}/claim-certificates/{id}",
            axum::routing::patch(provisioning::set_claim_status),
        )
        .route("/v1/artifacts", get(artifacts::list))
        .route(
            "/v1/artifacts/{name}",
            axum::routing::put(artifacts::upload)
                .get(artifacts::get)
                .delete(artifacts::delete),
        )
        .route("/v1/artifacts/{name}/content", get(artifacts::content))
        .route("/artifacts/{name}", get(artifacts::download))
        .route("/v1/jobs", get(jobs::list))
        .route(
            "/v1/jobs/{id}",
            axum::routing::put(jobs::put).get(jobs::get),
        )
        .route("/v1/jobs/{id}/executions", get(jobs::executions))
        .route("/v1/jobs/{id}/cancel", post(jobs::cancel))
        .route("/v1/rules", get(rules::list))
        .route("/v1/rules/check", post(rules::check))
        .route(
            "/v1/rules/{name}",
            get(rules::get).put(rules::put).delete(rules::delete),
        )
        .route("/v1/rules/{name}/test", post(rules::test))
        .route("/v1/rules/{name}/dry-run", post(rules::dry_run))
        .route("/v1/things/{name}/rules/trace", get(rules::trace))
        .route("/v1/alerts", get(rules::alerts))
        .route("/v1/ws", get(ws::upgrade))
        .route("/v1/ws/ticket", post(tickets::issue))
        // The device HTTP API (AWS IoT's HTTPS device endpoint; client certificates).
        .route(
            "/things/{name}/shadow",
            get(device::get_shadow)
                .post(device::update_shadow)
                .delete(device::delete_shadow),
        )
        .route("/topics/{*topic}", post(device::publish))
        .fallback(not_found)
        .layer(axum::middleware::from_fn(identity_encoding_only))
        .layer(axum::middleware::from_fn(console::security_headers));
    let router = match cors_layer(&state.cors) {
        Some(cors) => router.layer(cors),
        None => router,
    };
    router.with_state(state)
}

/// CORS for the configured origins (none: no layer, so no preflight is answered).
fn cors_layer(config: &CorsConfig) -> Option<tower_http::cors::CorsLayer> {
    use axum::http::{Method, header};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let origins: Vec<_> = config
        .allowed_origins
        .iter()
        .filter_map(|o| o.parse().ok())
        .collect();
    if origins.is_empty() {
        return None;
    }
    let layer = CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_MATCH,
            header::RANGE,
        ])
        .expose_headers([header::ETAG, header::CONTENT_RANGE])
        .max_age(std::time::Duration::from_secs(600));
    Some(layer)
}

/// Refuses request bodies in a content coding (`Content-Encoding: gzip`, …) with 415: the API
/// reads bodies as they arrive, and would otherwise read compressed bytes as JSON.
async fn identity_encoding_only(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let encoded = request
        .headers()
        .get_all(axum::http::header::CONTENT_ENCODING)
        .iter()
        .any(|v| {
            !v.to_str()
                .is_ok_and(|v| v.trim().eq_ignore_ascii_case("identity"))
        });
    if encoded {
        return ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "request bodies must not be content-encoded (no Content-Encoding)",
        )
        .into_response();
    }
    next.run(request).await
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if !state.ready.load(Ordering::Acquire) {
        return (StatusCode::SERVICE_UNAVAILABLE, "starting".to_owned());
    }
    match state.node.unready().await {
        None => (StatusCode::OK, "ready".to_owned()),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("stuck: {why}")),
    }
}
