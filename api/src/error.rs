//! API errors: the status code and the JSON body `{code, message, details?}`.

use actors::NodeError;
use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::Serialize;
use serde_json::Value;
use twin_core::ShadowError;

/// An error answered to an API client.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: Option<Value>,
}

/// The body of every error: a stable code, a message, and details where they help.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    /// A stable, machine-readable code (`unauthenticated`, `forbidden`, `not_found`, …).
    code: String,
    /// What went wrong.
    message: String,
    /// More, where it helps.
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<Value>,
}

impl ApiError {
    /// An error with a status, a stable code and a message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: None,
        }
    }

    /// 401: no or unknown credentials.
    pub fn unauthenticated() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "a valid bearer token is required",
        )
    }

    /// 400.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    /// 403: authenticated, but the role or scope does not allow it.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 412: `If-Match` names another version.
    pub fn precondition_failed() -> Self {
        Self::new(
            StatusCode::PRECONDITION_FAILED,
            "precondition_failed",
            "the shadow is not at the version in If-Match",
        )
    }

    /// The message a client sees.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The stable code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// Adds machine-readable details.
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// A shadow rejection, with the AWS code and message.
    pub fn shadow(error: &ShadowError) -> Self {
        let status = StatusCode::from_u16(error.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let code = match error.code {
            400 => "invalid_shadow_request",
            401 => "unauthenticated",
            403 => "forbidden",
            404 => "not_found",
            409 => "version_conflict",
            412 => "precondition_failed",
            413 => "too_large",
            415 => "unsupported_encoding",
            429 => "too_many_requests",
            _ => "internal",
        };
        Self::new(status, code, error.message.to_string())
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl From<NodeError> for ApiError {
    fn from(error: NodeError) -> Self {
        match &error {
            NodeError::ThingExists(_) => {
                Self::new(StatusCode::CONFLICT, "thing_exists", error.to_string())
            }
            NodeError::ThingNotFound(_) => {
                Self::new(StatusCode::NOT_FOUND, "thing_not_found", error.to_string())
            }
            NodeError::TypeNotFound(_) => {
                Self::new(StatusCode::BAD_REQUEST, "type_not_found", error.to_string())
            }
            NodeError::Invalid(_) => Self::invalid(error.to_string()),
            NodeError::InvalidRequest(message) => Self::invalid(message.clone()),
            NodeError::ArtifactNotFound(_) => Self::new(
                StatusCode::NOT_FOUND,
                "artifact_not_found",
                error.to_string(),
            ),
            NodeError::TooLarge(message) => {
                Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message.clone())
            }
            NodeError::JobExists(_) => {
                Self::new(StatusCode::CONFLICT, "job_exists", error.to_string())
            }
            NodeError::JobNotFound(_) => {
                Self::new(StatusCode::NOT_FOUND, "job_not_found", error.to_string())
            }
            NodeError::TemplateNotFound(_) => Self::new(
                StatusCode::NOT_FOUND,
                "template_not_found",
                error.to_string(),
            ),
            NodeError::RuleNotFound(_) => {
                Self::new(StatusCode::NOT_FOUND, "rule_not_found", error.to_string())
            }
            NodeError::CertificateNotFound(_) => Self::new(
                StatusCode::NOT_FOUND,
                "certificate_not_found",
                error.to_string(),
            ),
            NodeError::CertificateRevoked(_) => Self::new(
                StatusCode::CONFLICT,
                "certificate_revoked",
                error.to_string(),
            ),
            NodeError::RulesInvalid(diagnostics) => {
                Self::new(StatusCode::BAD_REQUEST, "rule_invalid", error.to_string())
                    .with_details(serde_json::json!({ "diagnostics": diagnostics }))
            }
            NodeError::Forbidden(_) => Self::forbidden(error.to_string()),
            NodeError::Stopped => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                error.to_string(),
            ),
            NodeError::Timeout(_) => {
                Self::new(StatusCode::GATEWAY_TIMEOUT, "timeout", error.to_string())
            }
            NodeError::Store(store) if store.is_too_large() => Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                "the document exceeds the store's size limits",
            ),
            NodeError::Store(_) | NodeError::Io(_) => {
                tracing::error!(%error, "request failed");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error",
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        metrics::counter!("doppel_api_errors_total", "code" => self.code).increment(1);
        let body = ErrorBody {
            code: self.code.to_owned(),
            message: self.message,
            details: self.details,
        };
        (self.status, Json(body)).into_response()
    }
}
