//! Artifacts over HTTP: uploads streamed into the store (operator), their records, their
//! content for apps, and downloads for devices — only of artifacts a job that has an execution
//! on the device lists, authenticated by the device's certificate or its token — each with
//! `Range` so an interrupted download resumes.

use crate::{
    AppState,
    auth::Caller,
    device::{DeviceCertificate, Refusal, refuse, who},
    error::ApiError,
    extract::Path,
};
use actors::{Node, artifacts::ArtifactRecord, directory::Role};
use axum::{
    Extension,
    body::Body,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use futures::StreamExt;
use serde::Serialize;
use utoipa::ToSchema;

/// Bytes read from the store per piece of a download.
const PIECE: u64 = 1024 * 1024;

/// An artifact.
#[derive(Serialize, ToSchema)]
pub(crate) struct ArtifactView {
    name: String,
    /// Bytes.
    size: u64,
    /// SHA-256 of the content, hex (what a job document tells devices to check).
    sha256: String,
    created_at: u64,
    created_by: String,
}

impl From<ArtifactRecord> for ArtifactView {
    fn from(a: ArtifactRecord) -> Self {
        Self {
            name: a.name,
            size: a.size,
            sha256: a.sha256,
            created_at: a.created_at,
            created_by: a.created_by,
        }
    }
}

/// Uploads an artifact (operator): the request body is the content (any size up to the node's
/// `max_artifact_bytes`, 256 MiB by default), streamed into the store; an earlier artifact of
/// the name is replaced once the upload is complete.
#[utoipa::path(put, path = "/v1/artifacts/{name}", tag = "jobs",
    params(("name" = String, Path, pattern = "^[a-zA-Z0-9_-][a-zA-Z0-9._-]{0,127}$")), security(("bearer" = [])),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 201, body = ArtifactView), (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody),
        (status = 403, body = crate::error::ErrorBody), (status = 413, body = crate::error::ErrorBody), (status = 415, body = crate::error::ErrorBody)))]
pub(crate) async fn upload(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    body: Body,
) -> Result<(StatusCode, axum::Json<ArtifactView>), ApiError> {
    caller.require(Role::Operator)?;
    let mut upload = state.node.begin_artifact(&name)?;
    let mut stream = body.into_data_stream();
    while let Some(piece) = stream.next().await {
        let piece = piece.map_err(|e| ApiError::invalid(format!("reading the body: {e}")))?;
        upload.write(&piece).await?;
    }
    let record = upload.finish(caller.id()).await?;
    Ok((StatusCode::CREATED, axum::Json(record.into())))
}

/// Artifacts, by name.
#[derive(Serialize, ToSchema)]
pub(crate) struct ArtifactList {
    artifacts: Vec<ArtifactView>,
}

/// Every artifact (viewer).
#[utoipa::path(get, path = "/v1/artifacts", tag = "jobs", security(("bearer" = [])),
    responses((status = 200, body = ArtifactList), (status = 401, body = crate::error::ErrorBody)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<axum::Json<ArtifactList>, ApiError> {
    caller.require(Role::Viewer)?;
    let artifacts = state.node.artifacts().await?;
    Ok(axum::Json(ArtifactList {
        artifacts: artifacts.into_iter().map(ArtifactView::from).collect(),
    }))
}

/// One artifact's record (viewer).
#[utoipa::path(get, path = "/v1/artifacts/{name}", tag = "jobs",
    params(("name" = String, Path, pattern = "^[a-zA-Z0-9_-][a-zA-Z0-9._-]{0,127}$")), security(("bearer" = [])),
    responses((status = 200, body = ArtifactView), (status = 401, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<axum::Json<ArtifactView>, ApiError> {
    caller.require(Role::Viewer)?;
    Ok(axum::Json(state.node.artifact(name).await?.into()))
}

/// Deletes an artifact (operator).
#[utoipa::path(delete, path = "/v1/artifacts/{name}", tag = "jobs",
    params(("name" = String, Path, pattern = "^[a-zA-Z0-9_-][a-zA-Z0-9._-]{0,127}$")), security(("bearer" = [])),
    responses((status = 204), (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Operator)?;
    state.node.delete_artifact(name, caller.id()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// An artifact's content (viewer), with `Range`.
#[utoipa::path(get, path = "/v1/artifacts/{name}/content", tag = "jobs",
    params(("name" = String, Path, pattern = "^[a-zA-Z0-9_-][a-zA-Z0-9._-]{0,127}$"),
        ("Range" = Option<String>, Header, nullable = false, description = "one byte range", pattern = "^bytes=[0-9]{0,18}-[0-9]{0,18}$")),
    security(("bearer" = [])),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>), (status = 206, content_type = "application/octet-stream", body = Vec<u8>),
        (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody), (status = 416)))]
pub(crate) async fn content(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    caller.require(Role::Viewer)?;
    let record = state.node.artifact(name).await?;
    Ok(serve(&state.node, record, &headers))
}

/// `GET /artifacts/{name}`: a device downloads an artifact a job of one of its executions
/// lists, authenticated by its client certificate or Basic `thing:token`, with `Range`.
pub(crate) async fn download(
    State(state): State<AppState>,
    cert: Option<Extension<DeviceCertificate>>,
    axum::extract::Path(name): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    let thing = who(&state, cert, &headers).await?;
    let allowed = state
        .node
        .may_download(thing.to_string(), name.clone())
        .await
        .map_err(|_| crate::device::registry_unavailable())?;
    if !allowed {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            format!("no job of {thing} lists artifact {name:?}"),
        ));
    }
    let record = state.node.artifact(name).await.map_err(|e| match e {
        actors::NodeError::ArtifactNotFound(_) => refuse(StatusCode::NOT_FOUND, e.to_string()),
        _ => refuse(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    })?;
    Ok(serve(&state.node, record, &headers))
}

/// Why a `Range` cannot be served.
#[derive(Debug, PartialEq, Eq)]
enum BadRange {
    /// Not `bytes=START-END`, `bytes=START-` or `bytes=-SUFFIX`: 400.
    Malformed,
    /// Outside the content: 416.
    Unsatisfiable,
}

/// The byte range asked for (`start..end`), `None` for all of it.
fn range(headers: &HeaderMap, size: u64) -> Result<Option<(u64, u64)>, BadRange> {
    let Some(value) = headers.get(header::RANGE) else {
        return Ok(None);
    };
    let spec = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().strip_prefix("bytes="))
        .ok_or(BadRange::Malformed)?;
    if spec.contains(',') {
        // Several ranges: the whole content (a server may ignore Range).
        return Ok(None);
    }
    let number = |s: &str| s.parse::<u64>().map_err(|_| BadRange::Malformed);
    let (first, last) = spec.split_once('-').ok_or(BadRange::Malformed)?;
    let (start, end) = match (first.trim(), last.trim()) {
        ("", "") => return Err(BadRange::Malformed),
        ("", suffix) => (size.saturating_sub(number(suffix)?), size),
        (first, "") => (number(first)?, size),
        (first, last) => {
            let (a, b) = (number(first)?, number(last)?);
            if b < a {
                return Err(BadRange::Malformed);
            }
            (a, b.saturating_add(1).min(size))
        }
    };
    if start >= size || start >= end {
        return Err(BadRange::Unsatisfiable);
    }
    Ok(Some((start, end)))
}

/// The content (or the range asked for), streamed from the store a piece at a time.
fn serve(node: &Node, record: ArtifactRecord, headers: &HeaderMap) -> Response {
    let size = record.size;
    let (status, start, end) = match range(headers, size) {
        Ok(None) => (StatusCode::OK, 0, size),
        Ok(Some((start, end))) => (StatusCode::PARTIAL_CONTENT, start, end),
        Err(BadRange::Malformed) => {
            return ApiError::invalid("Range is bytes=START-END, bytes=START- or bytes=-SUFFIX")
                .into_response();
        }
        Err(BadRange::Unsatisfiable) => {
            return (
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, format!("bytes */{size}"))],
            )
                .into_response();
        }
    };
    let etag = format!("\"{}\"", record.sha256);
    let node = node.clone();
    let pieces = futures::stream::unfold(
        (node, record, start),
        move |(node, record, at)| async move {
            if at >= end {
                return None;
            }
            let until = (at + PIECE).min(end);
            let piece = node
                .read_artifact(&record, at, until)
                .await
                .map_err(|e| std::io::Error::other(e.to_string()));
            let next = if piece.is_ok() { until } else { end };
            Some((piece, (node, record, next)))
        },
    );
    let mut response = Response::new(Body::from_stream(pieces));
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    if let Ok(etag) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, etag);
    }
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(value) = HeaderValue::from_str(&format!("bytes {start}-{}/{size}", end - 1))
    {
        h.insert(header::CONTENT_RANGE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(range: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, HeaderValue::from_str(range).unwrap());
        h
    }

    #[test]
    fn ranges_are_read_as_http_says() {
        assert_eq!(range(&HeaderMap::new(), 100), Ok(None));
        assert_eq!(range(&with("bytes=0-9"), 100), Ok(Some((0, 10))));
        assert_eq!(range(&with("bytes=90-"), 100), Ok(Some((90, 100))));
        assert_eq!(range(&with("bytes=-10"), 100), Ok(Some((90, 100))));
        assert_eq!(range(&with("bytes=95-200"), 100), Ok(Some((95, 100))));
        assert_eq!(range(&with("bytes=0-1,5-6"), 100), Ok(None));
        for bad in ["bytes=9-2", "bytes=-", "items=0-1", "bytes=a-b", ""] {
            assert_eq!(range(&with(bad), 100), Err(BadRange::Malformed), "{bad}");
        }
        assert_eq!(
            range(&with("bytes=100-"), 100),
            Err(BadRange::Unsatisfiable)
        );
    }
}
