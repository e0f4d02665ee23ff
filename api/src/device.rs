//! The device HTTP API, as AWS IoT's HTTPS device endpoint has it, for devices that do not keep
//! an MQTT session: over HTTPS, authenticated by the device's client certificate (no token, no
//! API key), each device reaching only its own thing.
//!
//! - `GET`, `POST` (update) and `DELETE /things/{thing}/shadow[?name=SHADOW]`: AWS's shadow
//!   documents in and out, answered once the change is durable
//! - `POST /topics/things/{thing}/telemetry`: a telemetry sample, `{"message": "OK"}` once stored
//!
//! Errors are AWS's shape: `{"code": …, "message": …}`.

use crate::AppState;
use actors::{ack::Settled, pki::CertStatus};
use axum::{
    Extension,
    body::Bytes,
    extract::{Path, Query, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use twin_core::{Command, ShadowName, ThingName, request};

/// The id of the client certificate a TLS connection's handshake verified (set on every request
/// of that connection).
#[derive(Clone, Debug)]
pub struct DeviceCertificate(pub Arc<str>);

/// A refusal, answered in AWS's shape.
pub(crate) struct Refusal(StatusCode, String);

pub(crate) fn refuse(status: StatusCode, message: impl Into<String>) -> Refusal {
    Refusal(status, message.into())
}

/// 503: the node could not read what it needs to decide.
pub(crate) fn registry_unavailable() -> Refusal {
    refuse(
        StatusCode::SERVICE_UNAVAILABLE,
        "the registry is unavailable",
    )
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = json!({ "code": self.0.as_u16(), "message": self.1 });
        (self.0, axum::Json(body)).into_response()
    }
}

/// The thing the request's certificate authenticates, if it is `name`.
async fn device(
    state: &AppState,
    cert: Option<Extension<DeviceCertificate>>,
    name: &str,
) -> Result<ThingName, Refusal> {
    let thing = certified(state, cert).await?;
    if thing.as_str() != name {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            format!("the certificate is not {name}'s"),
        ));
    }
    Ok(thing)
}

/// The thing the request's client certificate authenticates.
async fn certified(
    state: &AppState,
    cert: Option<Extension<DeviceCertificate>>,
) -> Result<ThingName, Refusal> {
    let Some(Extension(DeviceCertificate(id))) = cert else {
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            "the device API needs the device's client certificate (HTTPS)",
        ));
    };
    let record = state
        .node
        .with_directory(move |d| d.certificate(&id))
        .await
        .map_err(|_| registry_unavailable())?;
    match record {
        Some(r) if r.status == CertStatus::Active && actors::now_ms() <= r.not_after => {
            ThingName::new(&r.thing).map_err(|e| refuse(StatusCode::FORBIDDEN, e.to_string()))
        }
        _ => Err(refuse(
            StatusCode::FORBIDDEN,
            "the certificate is not active",
        )),
    }
}

/// The device a request comes from: its client certificate, or HTTP Basic authentication with
/// its thing name and token (for devices on plain HTTP).
pub(crate) async fn who(
    state: &AppState,
    cert: Option<Extension<DeviceCertificate>>,
    headers: &axum::http::HeaderMap,
) -> Result<ThingName, Refusal> {
    if cert.is_some() {
        return certified(state, cert).await;
    }
    use base64::Engine;
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|b| String::from_utf8(b).ok());
    let Some((thing, token)) = basic.as_deref().and_then(|b| b.split_once(':')) else {
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            "a device authenticates with its client certificate, or Basic with its thing name and token",
        ));
    };
    let thing =
        ThingName::new(thing).map_err(|_| refuse(StatusCode::UNAUTHORIZED, "bad credentials"))?;
    state
        .node
        .authenticate(thing.clone(), token.to_owned())
        .await
        .map(|_| thing)
        .map_err(|failure| match failure {
            actors::directory::AuthFailure::BadCredentials => {
                refuse(StatusCode::UNAUTHORIZED, "bad credentials")
            }
            actors::directory::AuthFailure::Unavailable => registry_unavailable(),
        })
}

/// `?name=SHADOW`: a named shadow.
#[derive(Deserialize)]
pub(crate) struct ShadowQuery {
    name: Option<String>,
}

/// The device's thing and the shadow a shadow request names.
async fn target(
    state: &AppState,
    cert: Option<Extension<DeviceCertificate>>,
    name: &str,
    query: &ShadowQuery,
) -> Result<(ThingName, ShadowName), Refusal> {
    let shadow = match &query.name {
        None => ShadowName::CLASSIC,
        Some(name) => {
            ShadowName::named(name).map_err(|e| refuse(StatusCode::BAD_REQUEST, e.to_string()))?
        }
    };
    Ok((device(state, cert, name).await?, shadow))
}

async fn run(state: &AppState, thing: ThingName, command: Command) -> Response {
    match state.node.call(thing, command, None).await {
        Ok(reply) => {
            let status = match &reply.outcome {
                Ok(_) => StatusCode::OK,
                Err(error) => {
                    StatusCode::from_u16(error.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
                }
            };
            (
                status,
                [(header::CONTENT_TYPE, "application/json")],
                reply.payload,
            )
                .into_response()
        }
        Err(error) => refuse(StatusCode::SERVICE_UNAVAILABLE, error.to_string()).into_response(),
    }
}

/// `GET /things/{thing}/shadow`.
pub(crate) async fn get_shadow(
    State(state): State<AppState>,
    cert: Option<Extension<DeviceCertificate>>,
    Path(name): Path<String>,
    Query(query): Query<ShadowQuery>,
) -> Result<Response, Refusal> {
    let (thing, shadow) = target(&state, cert, &name, &query).await?;
    let get = request::parse_get(shadow, b"")
        .map_err(|r| refuse(StatusCode::BAD_REQUEST, r.error.message))?;
    Ok(run(&state, thing, Command::Get(get)).await)
}

/// `POST /things/{thing}/shadow`: an update document, as on `…/shadow/update`.
pub(crate) async fn update_shadow(
    State(state): State<AppState>,
    cert: Option<Extension<DeviceCertificate>>,
    Path(name): Path<String>,
    Query(query): Query<ShadowQuery>,
    body: Bytes,
) -> Result<Response, Refusal> {
    let (thing, shadow) = target(&state, cert, &name, &query).await?;
    let update =
        request::parse_update(shadow, &body, &state.node.config().limits).map_err(|r| {
            refuse(
                StatusCode::from_u16(r.error.code).unwrap_or(StatusCode::BAD_REQUEST),
                r.error.message,
            )
        })?;
    Ok(run(&state, thing, Command::Update(update)).await)
}

/// `DELETE /things/{thing}/shadow`.
pub(crate) async fn delete_shadow(
    State(state): State<AppState>,
    cert: Option<Extension<DeviceCertificate>>,
    Path(name): Path<String>,
    Query(query): Query<ShadowQuery>,
) -> Result<Response, Refusal> {
    let (thing, shadow) = target(&state, cert, &name, &query).await?;
    let delete = request::parse_delete(shadow, b"")
        .map_err(|r| refuse(StatusCode::BAD_REQUEST, r.error.message))?;
    Ok(run(&state, thing, Command::Delete(delete)).await)
}

/// `POST /topics/{topic}`: only `things/{thing}/telemetry` (the device's own).
pub(crate) async fn publish(
    State(state): State<AppState>,
    cert: Option<Extension<DeviceCertificate>>,
    Path(topic): Path<String>,
    body: Bytes,
) -> Result<Response, Refusal> {
    let Some(name) = topic
        .strip_prefix("things/")
        .and_then(|t| t.strip_suffix("/telemetry"))
        .filter(|t| !t.contains('/'))
    else {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "over HTTP a device publishes to things/{thing}/telemetry only",
        ));
    };
    let thing = device(&state, cert, name).await?;
    let sample = twin_core::Sample::parse(&body)
        .map_err(|error| refuse(StatusCode::BAD_REQUEST, error.message))?;
    let (ack, done) = actors::ack::Ack::new();
    state.node.deliver_from_device(
        thing,
        rules_dsl::Input::Command(Command::Telemetry(sample)),
        Some(ack),
    );
    match done.await.unwrap_or(Settled::Failed) {
        Settled::Done => {
            Ok((StatusCode::OK, axum::Json(json!({ "message": "OK" }))).into_response())
        }
        Settled::Refused(code) => Err(refuse(
            StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST),
            "the sample was refused",
        )),
        Settled::Failed => Err(refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "the sample could not be stored; send it again",
        )),
    }
}
