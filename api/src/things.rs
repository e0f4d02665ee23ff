//! Things: registration, and their shadows.

use crate::{AppState, error::ApiError};
use actors::directory::NewThing;
use axum::{
    Json,
    extract::{Path, Query, State, rejection::JsonRejection},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use twin_core::{Command, GetRequest, ShadowName, ThingName, TypeName};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RegisterBody {
    name: String,
    #[serde(rename = "type", default)]
    device_type: Option<String>,
    #[serde(default)]
    attributes: BTreeMap<String, String>,
}

#[derive(Serialize)]
struct Registered {
    name: String,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    device_type: Option<String>,
    attributes: BTreeMap<String, String>,
    /// The device token (MQTT password), shown only in this response.
    token: String,
    created_at: u64,
}

/// `POST /v1/things`: registers a thing and issues its token (admin).
pub(crate) async fn register(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<RegisterBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    state.require_admin(&headers)?;
    let Json(body) = body.map_err(|e| ApiError::invalid(e.body_text()))?;
    let done = state.node.register(parse_registration(body)?).await?;
    Ok((StatusCode::CREATED, Json(registered(done))).into_response())
}

/// Most things registered by one bulk request.
pub const MAX_BULK: usize = 10_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BulkBody {
    things: Vec<RegisterBody>,
}

#[derive(Serialize)]
struct BulkRegistered {
    things: Vec<Registered>,
}

fn parse_registration(body: RegisterBody) -> Result<NewThing, ApiError> {
    let name = ThingName::new(&body.name).map_err(|e| ApiError::invalid(e.to_string()))?;
    let device_type = body
        .device_type
        .map(|t| TypeName::new(&t))
        .transpose()
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    Ok(NewThing {
        name,
        device_type,
        attributes: body.attributes,
    })
}

fn registered(r: actors::directory::Registered) -> Registered {
    let record = r.record;
    Registered {
        name: record.name.to_string(),
        device_type: record.device_type.map(|t| t.to_string()),
        attributes: record.attributes,
        token: r.token,
        created_at: record.created_at,
    }
}

/// `POST /v1/things/bulk`: registers up to 10,000 things at once, all or none (admin).
pub(crate) async fn register_bulk(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<BulkBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    state.require_admin(&headers)?;
    let Json(body) = body.map_err(|e| ApiError::invalid(e.body_text()))?;
    if body.things.is_empty() || body.things.len() > MAX_BULK {
        return Err(ApiError::invalid(format!(
            "register between 1 and {MAX_BULK} things per request"
        )));
    }
    let mut seen = std::collections::HashSet::new();
    let mut things = Vec::with_capacity(body.things.len());
    for thing in body.things {
        let parsed = parse_registration(thing)?;
        if !seen.insert(parsed.name.clone()) {
            return Err(ApiError::invalid(format!("{} appears twice", parsed.name)));
        }
        things.push(parsed);
    }
    let done = state.node.register_many(things).await?;
    let reply = BulkRegistered {
        things: done.into_iter().map(registered).collect(),
    };
    Ok((StatusCode::CREATED, Json(reply)).into_response())
}

#[derive(Deserialize)]
pub(crate) struct ShadowQuery {
    name: Option<String>,
}

fn shadow_name(query: &ShadowQuery) -> Result<ShadowName, ApiError> {
    match query.name.as_deref() {
        None | Some("") => Ok(ShadowName::CLASSIC),
        Some(name) => ShadowName::named(name).map_err(|e| ApiError::invalid(e.to_string())),
    }
}

/// `GET /v1/things/{name}/shadow[?name=SHADOW]`: the AWS-shaped document, with its version as
/// the ETag.
pub(crate) async fn get_shadow(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<ShadowQuery>,
) -> Result<Response, ApiError> {
    let thing = ThingName::new(&name).map_err(|e| ApiError::invalid(e.to_string()))?;
    let shadow = shadow_name(&query)?;
    let command = Command::Get(GetRequest {
        shadow,
        client_token: None,
    });
    let reply = state.node.call(thing, command).await?;
    match reply.outcome {
        Ok(version) => {
            let mut response = (
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                reply.payload,
            )
                .into_response();
            if let Ok(etag) = HeaderValue::from_str(&format!("\"{version}\"")) {
                response.headers_mut().insert(header::ETAG, etag);
            }
            Ok(response)
        }
        Err(error) => Err(ApiError::shadow(&error)),
    }
}
