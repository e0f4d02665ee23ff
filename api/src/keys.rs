//! API keys (create, list, revoke) and the audit log.

use crate::{
    AppState,
    auth::Caller,
    error::ApiError,
    extract::{Json, Path, Query},
};
use actors::directory::{AuditEntry, KeyRecord, Role};
use axum::{
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use twin_core::TypeName;
use utoipa::{IntoParams, ToSchema};

/// A key to create.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeyBody {
    /// `admin`, `operator` or `viewer`.
    #[schema(value_type = crate::schemas::RoleName)]
    role: Role,
    /// Limit the key to things of these device types.
    #[serde(default)]
    #[schema(value_type = Option<Vec<crate::schemas::TypeNameString>>)]
    types: Option<Vec<String>>,
}

/// A created key. `key` is shown only in this answer.
#[derive(Serialize, ToSchema)]
pub(crate) struct KeyCreated {
    id: String,
    /// The bearer token: `dk_<id>_<secret>`.
    key: String,
    #[schema(value_type = crate::schemas::RoleName)]
    role: Role,
    #[serde(skip_serializing_if = "Option::is_none")]
    types: Option<Vec<String>>,
}

/// A key as listed (its secret is never kept).
#[derive(Serialize, ToSchema)]
pub(crate) struct KeyView {
    id: String,
    #[schema(value_type = crate::schemas::RoleName)]
    role: Role,
    #[serde(skip_serializing_if = "Option::is_none")]
    types: Option<Vec<String>>,
    created_by: String,
    /// Creation time, epoch ms.
    created_at: u64,
}

impl From<KeyRecord> for KeyView {
    fn from(k: KeyRecord) -> Self {
        Self {
            id: k.id,
            role: k.role,
            types: k
                .types
                .map(|t| t.into_iter().map(|t| t.to_string()).collect()),
            created_by: k.created_by,
            created_at: k.created_at,
        }
    }
}

/// Creates an API key (admin). A key limited to device types can only create keys within them.
#[utoipa::path(post, path = "/v1/keys", tag = "keys", request_body = KeyBody, security(("bearer" = [])),
    responses((status = 201, body = KeyCreated), (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody), (status = 415, body = crate::error::ErrorBody),
        (status = 403, body = crate::error::ErrorBody)))]
pub(crate) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<KeyBody>,
) -> Result<Response, ApiError> {
    caller.require(Role::Admin)?;
    let types = body
        .types
        .map(|t| {
            t.iter()
                .map(|n| TypeName::new(n))
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    let creator = caller.0.clone();
    let new = state
        .node
        .with_directory(move |d| d.create_key(body.role, types, &creator, actors::now_ms()))
        .await?;
    let reply = KeyCreated {
        id: new.record.id,
        key: new.key,
        role: new.record.role,
        types: new
            .record
            .types
            .map(|t| t.into_iter().map(|t| t.to_string()).collect()),
    };
    Ok((StatusCode::CREATED, Json(reply)).into_response())
}

/// The keys.
#[derive(Serialize, ToSchema)]
pub(crate) struct KeyList {
    keys: Vec<KeyView>,
}

/// Lists API keys (admin; a scoped admin sees the keys within its types).
#[utoipa::path(get, path = "/v1/keys", tag = "keys", security(("bearer" = [])),
    responses((status = 200, body = KeyList), (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<KeyList>, ApiError> {
    caller.require(Role::Admin)?;
    let within = |k: &KeyRecord| match (&caller.0.types, &k.types) {
        (None, _) => true,
        (Some(scope), Some(types)) => types.iter().all(|t| scope.contains(t)),
        (Some(_), None) => false,
    };
    let keys = state
        .node
        .directory()
        .keys()
        .into_iter()
        .filter(within)
        .map(KeyView::from)
        .collect();
    Ok(Json(KeyList { keys }))
}

/// A new bootstrap admin token, shown only in this answer.
#[derive(Serialize, ToSchema)]
pub(crate) struct AdminToken {
    /// The bearer token that replaces the previous bootstrap admin token.
    token: String,
}

/// Replaces the bootstrap admin token (an admin without a type scope); the old one stops
/// working at once.
#[utoipa::path(post, path = "/v1/admin/rotate-key", tag = "keys", security(("bearer" = [])),
    responses((status = 200, body = AdminToken), (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody)))]
pub(crate) async fn rotate_admin(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<AdminToken>, ApiError> {
    caller.require(Role::Admin)?;
    if caller.0.types.is_some() {
        return Err(ApiError::forbidden(
            "rotating the bootstrap admin token needs an admin key without a type scope",
        ));
    }
    let actor = caller.id().to_owned();
    let token = state
        .node
        .with_directory(move |d| d.rotate_admin(&actor, actors::now_ms()))
        .await?;
    Ok(Json(AdminToken { token }))
}

/// Revokes an API key at once (admin).
#[utoipa::path(delete, path = "/v1/keys/{id}", tag = "keys", params(("id" = String, Path, pattern = "^[0-9a-f]{16}$")), security(("bearer" = [])),
    responses((status = 204), (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Admin)?;
    let visible = state
        .node
        .directory()
        .keys()
        .into_iter()
        .find(|k| k.id == id)
        .is_some_and(|k| match (&caller.0.types, &k.types) {
            (None, _) => true,
            (Some(scope), Some(types)) => types.iter().all(|t| scope.contains(t)),
            (Some(_), None) => false,
        });
    if !visible {
        return Err(ApiError::not_found(format!("key \"{id}\" not found")));
    }
    let actor = caller.id().to_owned();
    state
        .node
        .with_directory(move |d| d.revoke_key(&id, &actor, actors::now_ms()))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Which audit entries.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditQuery {
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

/// One recorded write.
#[derive(Serialize, ToSchema)]
pub(crate) struct AuditView {
    /// Epoch ms.
    at: u64,
    /// The key id that made the write.
    actor: String,
    action: String,
    target: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    before: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    after: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    details: Option<Value>,
}

impl From<AuditEntry> for AuditView {
    fn from(e: AuditEntry) -> Self {
        Self {
            at: e.at,
            actor: e.actor,
            action: e.action,
            target: e.target,
            before: e.before,
            after: e.after,
            details: e.details,
        }
    }
}

/// A page of the audit log.
#[derive(Serialize, ToSchema)]
pub(crate) struct AuditPage {
    entries: Vec<AuditView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

/// The audit log: every write, who made it, the versions before and after (an admin key not
/// limited to device types).
#[utoipa::path(get, path = "/v1/audit", tag = "audit", params(AuditQuery), security(("bearer" = [])),
    responses((status = 200, body = AuditPage), (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody),
        (status = 403, body = crate::error::ErrorBody)))]
pub(crate) async fn audit(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    caller.require_unscoped_admin()?;
    let crate::LogWindow {
        limit,
        range: (from, to),
        after,
    } = crate::LogWindow::parse(q.limit, q.from, q.to, q.cursor.as_deref())?;
    let entries = state
        .node
        .with_directory(move |d| d.audit_log(from, to, after, limit + 1))
        .await?;
    let more = entries.len() > limit;
    let entries: Vec<_> = entries.into_iter().take(limit).collect();
    let next = more
        .then(|| entries.last().map(|(cursor, _)| crate::log_cursor(*cursor)))
        .flatten();
    Ok(Json(AuditPage {
        entries: entries.into_iter().map(|(_, e)| e.into()).collect(),
        next,
    }))
}

/// The calling key: what it may do.
#[derive(Serialize, ToSchema)]
pub(crate) struct Me {
    /// The key's id (`bootstrap` for the bootstrap admin token).
    id: String,
    #[schema(value_type = crate::schemas::RoleName)]
    role: Role,
    /// The device types it is limited to; absent: every thing.
    #[serde(skip_serializing_if = "Option::is_none")]
    types: Option<Vec<String>>,
}

/// Describes the calling key (any valid key): the console shows what its role and scope allow.
#[utoipa::path(get, path = "/v1/me", tag = "keys", security(("bearer" = [])),
    responses((status = 200, body = Me), (status = 401, body = crate::error::ErrorBody)))]
pub(crate) async fn me(caller: Caller) -> axum::Json<Me> {
    let p = caller.0;
    axum::Json(Me {
        id: p.id,
        role: p.role,
        types: p
            .types
            .map(|t| t.into_iter().map(|t| t.to_string()).collect()),
    })
}
