//! Who is calling: `Authorization: Bearer <token>` with the bootstrap admin token or an API key
//! (`dk_<id>_<secret>`). No credentials is 401; a role or scope that does not allow the request
//! is 403. The same checks serve REST and the WebSocket upgrade.

use crate::{AppState, error::ApiError};
use actors::directory::{Principal, Role};
use axum::{extract::FromRequestParts, http::request::Parts};
use twin_core::TypeName;

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

impl Caller {
    /// 403 unless the caller's role is at least `role`.
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.0.is(role) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "this needs the {} role",
                role_name(role)
            )))
        }
    }

    /// 403 unless the caller is an administrator for every type (no scope).
    pub fn require_unscoped_admin(&self) -> Result<(), ApiError> {
        self.require(Role::Admin)?;
        match self.0.types {
            None => Ok(()),
            Some(_) => Err(ApiError::forbidden(
                "this needs an admin key that is not limited to device types",
            )),
        }
    }

    /// Whether the caller may see things of `device_type`.
    pub fn sees(&self, device_type: Option<&TypeName>) -> bool {
        self.0.sees(device_type)
    }

    /// The caller's id, for the audit log.
    pub fn id(&self) -> &str {
        &self.0.id
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Viewer => "viewer",
        Role::Operator => "operator",
        Role::Admin => "admin",
    }
}

/// Resolves a bearer token.
pub(crate) fn principal(state: &AppState, token: &str) -> Option<Principal> {
    if state.node.directory().is_admin_token(token) {
        return Some(Principal::bootstrap());
    }
    state.node.directory().authenticate_key(token)
}

pub(crate) fn bearer(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .trim_start()
        .split_once(' ')
        // The scheme is case-insensitive (RFC 7235 §2.1).
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts).ok_or_else(ApiError::unauthenticated)?;
        principal(state, token)
            .map(Caller)
            .ok_or_else(ApiError::unauthenticated)
    }
}
