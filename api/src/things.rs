//! Things (register, bulk register, list, get, update attributes, decommission), their shadows
//! (get with ETag, patch with If-Match, delete) and device types.

use crate::{
    AppState,
    auth::Caller,
    error::ApiError,
    extract::{Body, Json, Path, Query},
};
use actors::directory::{NewThing, Registered as NewRegistration, Role, ThingQuery, ThingRecord};
use axum::{
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use twin_core::{
    Command, DeleteRequest, DeviceType, GetRequest, Reply, ShadowName, ThingName, TypeName, request,
};
use utoipa::{IntoParams, ToSchema};

/// Most things registered by one bulk request.
pub const MAX_BULK: usize = 10_000;
/// Most things listed per page.
pub const MAX_PAGE: usize = 1_000;

pub(crate) fn thing_name(name: &str) -> Result<ThingName, ApiError> {
    ThingName::new(name).map_err(|e| ApiError::invalid(e.to_string()))
}

fn type_name(name: &str) -> Result<TypeName, ApiError> {
    TypeName::new(name).map_err(|e| ApiError::invalid(e.to_string()))
}

/// The thing named `name`, if the caller may see it (404 otherwise: a scoped key does not learn
/// that things outside its scope exist).
pub(crate) async fn visible_thing(
    state: &AppState,
    caller: &Caller,
    name: &str,
) -> Result<ThingRecord, ApiError> {
    let name = thing_name(name)?;
    let record = state.node.thing(name.clone()).await?;
    record
        .filter(|r| caller.sees(r.device_type.as_ref()))
        .ok_or_else(|| ApiError::not_found(format!("thing \"{name}\" not found")))
}

/// A thing to register.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RegisterBody {
    /// 1 to 128 characters of `a-zA-Z0-9:_-`.
    #[schema(pattern = "^[a-zA-Z0-9:_-]{1,128}$")]
    name: String,
    /// A registered device type.
    #[serde(rename = "type", default)]
    #[schema(pattern = "^[a-zA-Z0-9:_-]{1,128}$")]
    device_type: Option<String>,
    /// Free-form attributes.
    #[serde(default)]
    attributes: BTreeMap<String, String>,
}

/// A registered thing.
#[derive(Serialize, ToSchema)]
pub(crate) struct ThingView {
    name: String,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    device_type: Option<String>,
    attributes: BTreeMap<String, String>,
    /// Registration time, epoch ms.
    created_at: u64,
    /// Whether the device is connected: `{connected, since, last_seen, disconnect_reason?}`
    /// (times epoch ms; the reason in AWS IoT's vocabulary, e.g. `MQTT_KEEP_ALIVE_TIMEOUT`).
    /// Once the device has connected.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    connectivity: Option<actors::Presence>,
}

impl From<ThingRecord> for ThingView {
    fn from(r: ThingRecord) -> Self {
        Self {
            name: r.name.to_string(),
            device_type: r.device_type.map(|t| t.to_string()),
            attributes: r.attributes,
            created_at: r.created_at,
            connectivity: None,
        }
    }
}

/// A registered thing with its device token, shown only in this answer.
#[derive(Serialize, ToSchema)]
pub(crate) struct Registered {
    #[serde(flatten)]
    thing: ThingView,
    /// The device token (the MQTT password).
    token: String,
}

impl From<NewRegistration> for Registered {
    fn from(r: NewRegistration) -> Self {
        Self {
            thing: r.record.into(),
            token: r.token,
        }
    }
}

fn new_thing(body: RegisterBody) -> Result<NewThing, ApiError> {
    Ok(NewThing {
        name: thing_name(&body.name)?,
        device_type: body.device_type.as_deref().map(type_name).transpose()?,
        attributes: body.attributes,
    })
}

/// A scoped admin may register only things of its types.
fn check_scope(caller: &Caller, thing: &NewThing) -> Result<(), ApiError> {
    if caller.sees(thing.device_type.as_ref()) {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!(
            "{} is outside the key's device types",
            thing.name
        )))
    }
}

/// Registers a thing and issues its device token.
#[utoipa::path(post, path = "/v1/things", tag = "things", request_body = RegisterBody,
    security(("bearer" = [])),
    responses((status = 201, body = Registered), (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody), (status = 415, body = crate::error::ErrorBody),
        (status = 403, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)))]
pub(crate) async fn register(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<RegisterBody>,
) -> Result<Response, ApiError> {
    caller.require(Role::Admin)?;
    let thing = new_thing(body)?;
    check_scope(&caller, &thing)?;
    let done = state.node.register(thing, caller.id()).await?;
    Ok((StatusCode::CREATED, Json(Registered::from(done))).into_response())
}

/// Things to register at once.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BulkBody {
    /// 1 to 10,000 things.
    #[schema(min_items = 1, max_items = 10000)]
    things: Vec<RegisterBody>,
}

/// The registered things with their tokens.
#[derive(Serialize, ToSchema)]
pub(crate) struct BulkRegistered {
    things: Vec<Registered>,
}

/// Registers up to 10,000 things at once: all of them, or none.
#[utoipa::path(post, path = "/v1/things/bulk", tag = "things", request_body = BulkBody,
    security(("bearer" = [])),
    responses((status = 201, body = BulkRegistered), (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody), (status = 415, body = crate::error::ErrorBody),
        (status = 403, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)))]
pub(crate) async fn register_bulk(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<BulkBody>,
) -> Result<Response, ApiError> {
    caller.require(Role::Admin)?;
    if body.things.is_empty() || body.things.len() > MAX_BULK {
        return Err(ApiError::invalid(format!(
            "register between 1 and {MAX_BULK} things per request"
        )));
    }
    let mut seen = HashSet::new();
    let mut things = Vec::with_capacity(body.things.len());
    for thing in body.things {
        let thing = new_thing(thing)?;
        check_scope(&caller, &thing)?;
        if !seen.insert(thing.name.clone()) {
            return Err(ApiError::invalid(format!("{} appears twice", thing.name)));
        }
        things.push(thing);
    }
    let done = state.node.register_many(things, caller.id()).await?;
    let reply = BulkRegistered {
        things: done.into_iter().map(Registered::from).collect(),
    };
    Ok((StatusCode::CREATED, Json(reply)).into_response())
}

/// Paging and filters for listing things.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// Continue after this thing (the `next` of the previous page).
    #[param(pattern = "^[a-zA-Z0-9:_-]{1,128}$")]
    cursor: Option<String>,
    /// At most this many (default 100, at most 1,000).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// Only things of this type.
    #[serde(rename = "type")]
    #[param(rename = "type", pattern = "^[a-zA-Z0-9:_-]{1,128}$")]
    device_type: Option<String>,
    /// Only things with this attribute value, as `key:value`.
    #[param(pattern = "^[^:]*:")]
    attribute: Option<String>,
    /// Only things whose names start with this.
    #[param(pattern = "^[a-zA-Z0-9:_-]{1,128}$")]
    prefix: Option<String>,
    /// Only things connected now (`true`) or not (`false`).
    connected: Option<bool>,
}

/// A page of things.
#[derive(Serialize, ToSchema)]
pub(crate) struct ThingPage {
    things: Vec<ThingView>,
    /// Pass as `cursor` for the next page; absent on the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

/// Lists the things the key may see, by name, with cursor paging.
#[utoipa::path(get, path = "/v1/things", tag = "things", params(ListQuery), security(("bearer" = [])),
    responses((status = 200, body = ThingPage), (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Json<ThingPage>, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::invalid(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    let mut attributes = BTreeMap::new();
    if let Some(pair) = &q.attribute {
        let (k, v) = pair
            .split_once(':')
            .ok_or_else(|| ApiError::invalid("attribute must be key:value"))?;
        attributes.insert(k.to_owned(), v.to_owned());
    }
    // A cursor is the name of the last thing of a page.
    if let Some(cursor) = &q.cursor
        && ThingName::new(cursor).is_err()
    {
        return Err(ApiError::invalid("cursor must come from a previous page"));
    }
    if let Some(prefix) = &q.prefix
        && ThingName::new(prefix).is_err()
    {
        return Err(ApiError::invalid(
            "prefix must be 1 to 128 of the characters of thing names (a-z A-Z 0-9 : _ -)",
        ));
    }
    let query = ThingQuery {
        after: q.cursor,
        limit,
        device_type: q.device_type.as_deref().map(type_name).transpose()?,
        attributes,
        prefix: q.prefix,
        connected: q.connected,
    };
    let principal = caller.0.clone();
    let (records, more) = state
        .node
        .with_directory(move |d| d.list_things(&query, &principal))
        .await?;
    let next = more
        .then(|| records.last().map(|(r, _)| r.name.to_string()))
        .flatten();
    Ok(Json(ThingPage {
        things: records
            .into_iter()
            .map(|(record, presence)| ThingView {
                connectivity: presence,
                ..ThingView::from(record)
            })
            .collect(),
        next,
    }))
}

/// One thing.
#[utoipa::path(get, path = "/v1/things/{name}", tag = "things", params(("name" = String, Path, pattern = "^[a-zA-Z0-9:_-]{1,128}$")), security(("bearer" = [])),
    responses((status = 200, body = ThingView), (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<ThingView>, ApiError> {
    let record = visible_thing(&state, &caller, &name).await?;
    let connectivity = state.node.connectivity(record.name.clone()).await?;
    let mut view = ThingView::from(record);
    view.connectivity = connectivity;
    Ok(Json(view))
}

/// Attribute changes: a string sets the attribute, `null` removes it.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateBody {
    attributes: BTreeMap<String, Option<String>>,
}

/// Changes a thing's attributes.
#[utoipa::path(patch, path = "/v1/things/{name}", tag = "things", params(("name" = String, Path, pattern = "^[a-zA-Z0-9:_-]{1,128}$")), request_body = UpdateBody,
    security(("bearer" = [])),
    responses((status = 200, body = ThingView), (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody), (status = 415, body = crate::error::ErrorBody),
        (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Json(body): Json<UpdateBody>,
) -> Result<Json<ThingView>, ApiError> {
    caller.require(Role::Admin)?;
    let record = visible_thing(&state, &caller, &name).await?;
    let record = state
        .node
        .update_attributes(record.name, body.attributes, caller.id())
        .await?;
    Ok(Json(record.into()))
}

/// Decommissions a thing: its token stops working and its live MQTT session closes at once;
/// its twin is removed.
#[utoipa::path(delete, path = "/v1/things/{name}", tag = "things", params(("name" = String, Path, pattern = "^[a-zA-Z0-9:_-]{1,128}$")), security(("bearer" = [])),
    responses((status = 204), (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn decommission(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Admin)?;
    let record = visible_thing(&state, &caller, &name).await?;
    state.node.decommission(record.name, caller.id()).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- shadows ------------------------------------------------------------------------------

/// Which shadow.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ShadowQuery {
    /// A named shadow; the classic shadow when absent.
    #[param(pattern = "^[a-zA-Z0-9:_-]{1,64}$")]
    name: Option<String>,
}

fn shadow_name(query: &ShadowQuery) -> Result<ShadowName, ApiError> {
    match query.name.as_deref() {
        None => Ok(ShadowName::CLASSIC),
        Some("") => Err(ApiError::invalid(
            "name must not be empty: omit it for the classic shadow",
        )),
        Some(name) => ShadowName::named(name).map_err(|e| ApiError::invalid(e.to_string())),
    }
}

fn etag(version: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
}

/// The version an `If-Match` header names, if any (`"7"`, `7` or `W/"7"`).
fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| ApiError::invalid("If-Match must be a version"))?;
    let text = text.trim().trim_start_matches("W/").trim_matches('"');
    text.parse()
        .map(Some)
        .map_err(|_| ApiError::invalid("If-Match must be a shadow version, as in the ETag"))
}

fn answer(reply: Reply, status: StatusCode, checked: bool) -> Result<Response, ApiError> {
    match reply.outcome {
        Ok(version) => {
            let mut response = (
                status,
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                reply.payload,
            )
                .into_response();
            response.headers_mut().insert(header::ETAG, etag(version));
            Ok(response)
        }
        Err(error) if checked && error.code == 409 => Err(ApiError::precondition_failed()),
        Err(error) => Err(ApiError::shadow(&error)),
    }
}

/// The shadow as an AWS document (`state`, `metadata`, `version`, `timestamp`), with its version
/// as the ETag.
#[utoipa::path(get, path = "/v1/things/{name}/shadow", tag = "shadows", params(("name" = String, Path, pattern = "^[a-zA-Z0-9:_-]{1,128}$"), ShadowQuery), security(("bearer" = [])),
    responses((status = 200, description = "AWS shadow document", body = Object), (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn get_shadow(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(query): Query<ShadowQuery>,
) -> Result<Response, ApiError> {
    let shadow = shadow_name(&query)?;
    let record = visible_thing(&state, &caller, &name).await?;
    let command = Command::Get(GetRequest {
        shadow,
        client_token: None,
    });
    let reply = state.node.call(record.name, command, None).await?;
    answer(reply, StatusCode::OK, false)
}

/// Changes a shadow with an AWS update document (`{"state": {"desired": {…}}}`). `If-Match:
/// "<version>"` makes the change conditional: 412 if the shadow moved on. Operators may change
/// `desired`; changing `reported` takes an admin.
#[utoipa::path(patch, path = "/v1/things/{name}/shadow", tag = "shadows", params(("name" = String, Path, pattern = "^[a-zA-Z0-9:_-]{1,128}$"), ShadowQuery,
        ("If-Match" = Option<String>, Header, nullable = false, description = "the version the shadow must have, as in the ETag", pattern = "^(W/)?\"?[0-9]{1,18}\"?$")),
    request_body(content = crate::schemas::UpdateDocument, description = "AWS update document"), security(("bearer" = [])),
    responses((status = 200, description = "AWS accepted document", body = Object), (status = 400, body = crate::error::ErrorBody),
        (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody),
        (status = 409, body = crate::error::ErrorBody), (status = 412, body = crate::error::ErrorBody), (status = 413, body = crate::error::ErrorBody),
        (status = 415, body = crate::error::ErrorBody)))]
pub(crate) async fn patch_shadow(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(query): Query<ShadowQuery>,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, ApiError> {
    caller.require(Role::Operator)?;
    let shadow = shadow_name(&query)?;
    let expected = if_match(&headers)?;
    let mut update = request::parse_update(shadow, &body, &state.node.config().limits)
        .map_err(|r| ApiError::shadow(&r.error))?;
    if update.reported.is_present() && !caller.0.is(Role::Admin) {
        return Err(ApiError::forbidden(
            "changing reported state needs the admin role; operators change desired",
        ));
    }
    if let Some(expected) = expected {
        update.version = Some(expected);
    }
    let record = visible_thing(&state, &caller, &name).await?;
    let reply = state
        .node
        .call(record.name, Command::Update(update), Some(caller.id()))
        .await?;
    answer(reply, StatusCode::OK, expected.is_some())
}

/// Deletes a shadow (admin). `If-Match` makes it conditional.
#[utoipa::path(delete, path = "/v1/things/{name}/shadow", tag = "shadows", params(("name" = String, Path, pattern = "^[a-zA-Z0-9:_-]{1,128}$"), ShadowQuery,
        ("If-Match" = Option<String>, Header, nullable = false, description = "the version the shadow must have, as in the ETag", pattern = "^(W/)?\"?[0-9]{1,18}\"?$")),
    security(("bearer" = [])),
    responses((status = 200, description = "AWS delete document", body = Object), (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody),
        (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody), (status = 412, body = crate::error::ErrorBody)))]
pub(crate) async fn delete_shadow(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(query): Query<ShadowQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    caller.require(Role::Admin)?;
    let shadow = shadow_name(&query)?;
    let expected = if_match(&headers)?;
    let record = visible_thing(&state, &caller, &name).await?;
    let command = Command::Delete(DeleteRequest {
        shadow,
        client_token: None,
        version: expected,
    });
    let reply = state
        .node
        .call(record.name, command, Some(caller.id()))
        .await?;
    answer(reply, StatusCode::OK, expected.is_some())
}

// ---- device types -----------------------------------------------------------------------

/// A device type: JSON Schemas for `reported`, `desired` and telemetry, and which telemetry
/// fields feed `reported` (`"all"` or `{"fields": [...]}`).
#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TypeBody {
    #[serde(default = "no_schemas")]
    #[schema(schema_with = crate::schemas::type_schemas)]
    schemas: Value,
    #[serde(default = "all_fields")]
    #[schema(schema_with = crate::schemas::telemetry_mapping)]
    telemetry_to_reported: Value,
}

fn no_schemas() -> Value {
    Value::Object(serde_json::Map::new())
}

fn all_fields() -> Value {
    Value::String("all".into())
}

/// A device type as stored.
#[derive(Serialize, ToSchema)]
pub(crate) struct TypeView {
    name: String,
    #[schema(schema_with = crate::schemas::type_schemas)]
    schemas: Value,
    #[schema(schema_with = crate::schemas::telemetry_mapping)]
    telemetry_to_reported: Value,
}

impl From<DeviceType> for TypeView {
    fn from(t: DeviceType) -> Self {
        Self {
            name: t.name.to_string(),
            schemas: serde_json::to_value(&t.schemas).unwrap_or(Value::Null),
            telemetry_to_reported: serde_json::to_value(&t.telemetry_to_reported)
                .unwrap_or(Value::Null),
        }
    }
}

/// Registers or replaces a device type (admin). Twins of the type use it from their next
/// message.
#[utoipa::path(put, path = "/v1/types/{type}", tag = "types", params(("type" = String, Path, pattern = "^[a-zA-Z0-9:_-]{1,128}$")), request_body = TypeBody, security(("bearer" = [])),
    responses((status = 200, body = TypeView), (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody), (status = 415, body = crate::error::ErrorBody),
        (status = 403, body = crate::error::ErrorBody)))]
pub(crate) async fn put_type(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Json(body): Json<TypeBody>,
) -> Result<Json<TypeView>, ApiError> {
    caller.require(Role::Admin)?;
    let name = type_name(&name)?;
    if !caller.sees(Some(&name)) {
        return Err(ApiError::forbidden(format!(
            "type {name} is outside the key's device types"
        )));
    }
    if !body.schemas.is_object() {
        return Err(ApiError::invalid(
            "schemas must be an object with reported, desired and telemetry schemas",
        ));
    }
    let def: DeviceType = serde_json::from_value(serde_json::json!({
        "name": name, "schemas": body.schemas, "telemetry_to_reported": body.telemetry_to_reported
    }))
    .map_err(|e| ApiError::invalid(e.to_string()))?;
    let actor = caller.id().to_owned();
    let stored = def.clone();
    state
        .node
        .with_directory(move |d| d.put_type(def, &actor, actors::now_ms()))
        .await?;
    Ok(Json(stored.into()))
}

/// One device type.
#[utoipa::path(get, path = "/v1/types/{type}", tag = "types", params(("type" = String, Path, pattern = "^[a-zA-Z0-9:_-]{1,128}$")), security(("bearer" = [])),
    responses((status = 200, body = TypeView), (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn get_type(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<TypeView>, ApiError> {
    let name = type_name(&name)?;
    state
        .node
        .directory()
        .device_type(&name)
        .filter(|_| caller.sees(Some(&name)))
        .map(|t| Json(t.def().clone().into()))
        .ok_or_else(|| ApiError::not_found(format!("device type \"{name}\" not found")))
}

/// The device types the key may see.
#[derive(Serialize, ToSchema)]
pub(crate) struct TypeList {
    types: Vec<TypeView>,
}

/// Lists device types.
#[utoipa::path(get, path = "/v1/types", tag = "types", security(("bearer" = [])),
    responses((status = 200, body = TypeList), (status = 401, body = crate::error::ErrorBody)))]
pub(crate) async fn list_types(State(state): State<AppState>, caller: Caller) -> Json<TypeList> {
    let types = state
        .node
        .directory()
        .device_types()
        .into_iter()
        .filter(|t| caller.sees(Some(&t.name)))
        .map(TypeView::from)
        .collect();
    Json(TypeList { types })
}

/// Things counted by type and connectivity.
#[derive(Serialize, ToSchema)]
pub(crate) struct FleetSummaryView {
    /// Things the key sees.
    things: u64,
    /// Of them, connected now.
    connected: u64,
    /// Per device type (`""`: things without one): `{things, connected}`.
    #[schema(value_type = Object)]
    by_type: BTreeMap<String, actors::directory::TypeCount>,
}

/// Counts the things the key sees by type and connectivity. Reads every thing: it answers in
/// about a tenth of a second per 100,000 things on the embedded store.
#[utoipa::path(get, path = "/v1/fleet/summary", tag = "things", security(("bearer" = [])),
    responses((status = 200, body = FleetSummaryView), (status = 401, body = crate::error::ErrorBody)))]
pub(crate) async fn summary(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<FleetSummaryView>, ApiError> {
    let principal = caller.0;
    let summary = state
        .node
        .with_directory(move |d| d.fleet_summary(&principal))
        .await?;
    Ok(Json(FleetSummaryView {
        things: summary.things,
        connected: summary.connected,
        by_type: summary.by_type,
    }))
}
