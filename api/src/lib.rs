//! doppel's HTTP API for apps and operators (axum). The only crate that knows HTTP wire
//! formats: JSON bodies, status codes, `{code, message, details?}` errors, bearer tokens.

mod error;
mod things;

pub use error::ApiError;

use actors::Node;
use axum::{
    Router,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::IntoResponse,
    routing::{get, post},
};
use sha2::{Digest, Sha256};
use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    node: Node,
    admin_token_hash: Arc<String>,
    ready: Arc<AtomicBool>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

impl AppState {
    /// State for a node; `admin_token` is the bootstrap admin bearer token.
    pub fn new(node: Node, admin_token: &str) -> Self {
        Self {
            node,
            admin_token_hash: Arc::new(hash(admin_token)),
            ready: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Marks the node ready (store open, listeners up): `/readyz` answers 200 from now on.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// Checks `Authorization: Bearer <admin token>`.
    fn require_admin(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let token = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(ApiError::unauthenticated)?;
        // Comparing hashes keeps the comparison's timing independent of the secret.
        if hash(token) == *self.admin_token_hash {
            Ok(())
        } else {
            Err(ApiError::unauthenticated())
        }
    }
}

fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The HTTP routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/things", post(things::register))
        .route("/v1/things/bulk", post(things::register_bulk))
        .route("/v1/things/{name}/shadow", get(things::get_shadow))
        .with_state(state)
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    }
}
