//! axum's `Path`, `Query` and `Json` extractors with the API's JSON errors: a malformed path,
//! query string or body is a 400 (413, 415) with `{code, message}`, never a plain-text body.

use crate::error::ApiError;
use axum::{
    extract::{FromRequest, FromRequestParts, Request},
    http::{StatusCode, request::Parts},
};
use serde::de::DeserializeOwned;

/// How long a client may take to send a request's body.
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

fn rejected(status: StatusCode, text: String) -> ApiError {
    let text = plain(&text);
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(status, "too_large", text),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::new(status, "unsupported_media_type", text),
        _ => ApiError::invalid(text),
    }
}

/// A rejection's text in the API's words: serde names the Rust types it expected
/// (`expected struct RegisterBody`), which mean nothing to a client.
fn plain(text: &str) -> String {
    let text = text
        .strip_prefix("Failed to deserialize the JSON body into the target type: ")
        .map_or_else(|| text.to_owned(), |rest| format!("invalid body: {rest}"));
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(at) = ["struct ", "enum "]
        .iter()
        .filter_map(|word| rest.find(word).map(|i| (i, *word)))
        .min()
    {
        let (i, word) = at;
        out.push_str(&rest[..i]);
        let after = &rest[i + word.len()..];
        let name_len = after
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        out.push_str(if word == "struct " {
            "a JSON object"
        } else {
            "one of the documented values"
        });
        rest = &after[name_len..];
    }
    out.push_str(rest);
    out
}

/// Collects a body within [`BODY_TIMEOUT`] (a client that stops sending mid-body is answered
/// 408 rather than holding its connection).
async fn in_time<T>(
    collect: impl std::future::Future<Output = Result<T, ApiError>>,
) -> Result<T, ApiError> {
    tokio::time::timeout(BODY_TIMEOUT, collect)
        .await
        .unwrap_or_else(|_| {
            Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "the request body did not arrive in time",
            ))
        })
}

/// Path parameters.
pub(crate) struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Self(p.0))
            .map_err(|e| rejected(e.status(), e.body_text()))
    }
}

/// The query string.
pub(crate) struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Self(q.0))
            .map_err(|e| rejected(e.status(), e.body_text()))
    }
}

/// A JSON body (`Content-Type: application/json`).
pub(crate) struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        in_time(async {
            axum::Json::<T>::from_request(request, state)
                .await
                .map(|j| Self(j.0))
                .map_err(|e| rejected(e.status(), e.body_text()))
        })
        .await
    }
}

impl<T: serde::Serialize> axum::response::IntoResponse for Json<T> {
    fn into_response(self) -> axum::response::Response {
        axum::Json(self.0).into_response()
    }
}

/// The raw body, for handlers that parse it themselves.
pub(crate) struct Body(pub axum::body::Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        in_time(async {
            axum::body::Bytes::from_request(request, state)
                .await
                .map(Self)
                .map_err(|e| rejected(e.status(), e.body_text()))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::plain;

    #[test]
    fn rejections_name_no_rust_types() {
        assert_eq!(
            plain(
                "Failed to deserialize the JSON body into the target type: invalid type: integer `5`, expected struct RegisterBody at line 1 column 1"
            ),
            "invalid body: invalid type: integer `5`, expected a JSON object at line 1 column 1"
        );
        assert_eq!(
            plain("unknown variant `x`, expected enum Role"),
            "unknown variant `x`, expected one of the documented values"
        );
        assert_eq!(plain("missing field `name`"), "missing field `name`");
    }
}
