//! Fleet provisioning over HTTP (admin): provisioning templates — what a device holding a claim
//! certificate becomes when it provisions itself over MQTT — and their claim certificates.

use crate::{
    AppState,
    auth::Caller,
    certs::{CertList, CertView, IssueBody, Issued, StatusBody},
    error::ApiError,
    extract::{Json, Path},
};
use actors::directory::Role;
use actors::{pki::CertRecord, provisioning::ProvisioningTemplate};
use axum::{extract::State, http::StatusCode};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// A provisioning template as written.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TemplateBody {
    /// The new thing's name; `{Name}` is replaced by the device's parameter `Name`, e.g.
    /// `sensor-{SerialNumber}`.
    thing_name: String,
    /// The new thing's device type.
    #[serde(rename = "type")]
    device_type: Option<String>,
    /// The new thing's attributes (values may use `{Name}` too).
    #[serde(default)]
    attributes: BTreeMap<String, String>,
    /// Parameters whose value must be one of a list, e.g. `{"SerialNumber": ["A1", "A2"]}`.
    #[serde(default)]
    allow: BTreeMap<String, Vec<String>>,
    /// Returned to the device with its thing name.
    #[serde(default)]
    device_configuration: BTreeMap<String, String>,
    /// Validity of the certificates issued to provisioned devices, days (default 180).
    validity_days: Option<u32>,
    /// A disabled template refuses every request (default true).
    enabled: Option<bool>,
}

/// A provisioning template.
#[derive(Serialize, ToSchema)]
pub(crate) struct TemplateView {
    name: String,
    thing_name: String,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    device_type: Option<String>,
    attributes: BTreeMap<String, String>,
    allow: BTreeMap<String, Vec<String>>,
    device_configuration: BTreeMap<String, String>,
    validity_days: u32,
    enabled: bool,
    /// Last written when (epoch ms) and by whom.
    updated_at: u64,
    updated_by: String,
}

impl From<ProvisioningTemplate> for TemplateView {
    fn from(t: ProvisioningTemplate) -> Self {
        Self {
            name: t.name,
            thing_name: t.thing_name,
            device_type: t.device_type.map(|t| t.to_string()),
            attributes: t.attributes,
            allow: t.allow,
            device_configuration: t.device_configuration,
            validity_days: t.validity_days,
            enabled: t.enabled,
            updated_at: t.updated_at,
            updated_by: t.updated_by,
        }
    }
}

/// Every template.
#[derive(Serialize, ToSchema)]
pub(crate) struct TemplateList {
    templates: Vec<TemplateView>,
}

/// Creates or replaces a provisioning template (admin): 201 when new, 200 when replaced.
#[utoipa::path(put, path = "/v1/provisioning-templates/{name}", tag = "provisioning", request_body = TemplateBody,
    params(("name" = String, Path, pattern = "^[a-zA-Z0-9:_-]{1,128}$")), security(("bearer" = [])),
    responses((status = 200, body = TemplateView), (status = 201, body = TemplateView), (status = 400, body = crate::error::ErrorBody),
        (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody), (status = 415, body = crate::error::ErrorBody)))]
pub(crate) async fn put(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Json(body): Json<TemplateBody>,
) -> Result<(StatusCode, axum::Json<TemplateView>), ApiError> {
    caller.require(Role::Admin)?;
    let device_type = body
        .device_type
        .as_deref()
        .map(twin_core::TypeName::new)
        .transpose()
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    if !caller.sees(device_type.as_ref()) {
        return Err(ApiError::forbidden(
            "the template's device type is outside the key's device types",
        ));
    }
    let template = ProvisioningTemplate {
        name,
        thing_name: body.thing_name,
        device_type,
        attributes: body.attributes,
        allow: body.allow,
        device_configuration: body.device_configuration,
        validity_days: body.validity_days.unwrap_or(180),
        enabled: body.enabled.unwrap_or(true),
        updated_at: 0,
        updated_by: String::new(),
    };
    let actor = caller.id().to_owned();
    let (created, stored) = state
        .node
        .with_directory(move |d| {
            let name = template.name.clone();
            let created = d.put_template(template, &actor, actors::now_ms())?;
            Ok((created, d.template(&name)?))
        })
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(stored.into())))
}

/// Every provisioning template (admin).
#[utoipa::path(get, path = "/v1/provisioning-templates", tag = "provisioning", security(("bearer" = [])),
    responses((status = 200, body = TemplateList), (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<axum::Json<TemplateList>, ApiError> {
    caller.require(Role::Admin)?;
    let templates = state.node.with_directory(|d| d.templates()).await?;
    Ok(axum::Json(TemplateList {
        templates: templates
            .into_iter()
            .filter(|t| caller.sees(t.device_type.as_ref()))
            .map(TemplateView::from)
            .collect(),
    }))
}

/// The template `name`, if the caller's key sees its device type.
async fn visible(
    state: &AppState,
    caller: &Caller,
    name: String,
) -> Result<ProvisioningTemplate, ApiError> {
    caller.require(Role::Admin)?;
    let template = state
        .node
        .with_directory(move |d| d.template(&name))
        .await?;
    if !caller.sees(template.device_type.as_ref()) {
        return Err(ApiError::from(actors::NodeError::TemplateNotFound(
            template.name,
        )));
    }
    Ok(template)
}

/// One provisioning template (admin).
#[utoipa::path(get, path = "/v1/provisioning-templates/{name}", tag = "provisioning",
    params(("name" = String, Path, pattern = "^[a-zA-Z0-9:_-]{1,128}$")), security(("bearer" = [])),
    responses((status = 200, body = TemplateView), (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<axum::Json<TemplateView>, ApiError> {
    Ok(axum::Json(visible(&state, &caller, name).await?.into()))
}

/// Deletes a provisioning template and revokes its claim certificates (admin).
#[utoipa::path(delete, path = "/v1/provisioning-templates/{name}", tag = "provisioning",
    params(("name" = String, Path, pattern = "^[a-zA-Z0-9:_-]{1,128}$")), security(("bearer" = [])),
    responses((status = 204), (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let template = visible(&state, &caller, name).await?;
    let actor = caller.id().to_owned();
    state
        .node
        .with_directory(move |d| d.delete_template(&template.name, &actor, actors::now_ms()))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Issues a claim certificate for a template (admin): `{"csr": PEM}` or `{"generate": true}`.
/// A device connecting with it may only create a certificate and provision itself with this
/// template.
#[utoipa::path(post, path = "/v1/provisioning-templates/{name}/claim-certificates", tag = "provisioning", request_body = IssueBody,
    params(("name" = String, Path, pattern = "^[a-zA-Z0-9:_-]{1,128}$")), security(("bearer" = [])),
    responses((status = 201, body = Issued), (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody),
        (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody), (status = 415, body = crate::error::ErrorBody)))]
pub(crate) async fn issue_claim(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Json(body): Json<IssueBody>,
) -> Result<(StatusCode, axum::Json<Issued>), ApiError> {
    let template = visible(&state, &caller, name).await?;
    let (csr, validity) = body.parse()?;
    let actor = caller.id().to_owned();
    let (record, key) = state
        .node
        .with_directory(move |d| {
            d.issue_claim_certificate(
                &template.name,
                csr.as_deref(),
                validity,
                &actor,
                actors::now_ms(),
            )
        })
        .await?;
    Ok((StatusCode::CREATED, axum::Json(Issued::new(record, key))))
}

/// A template's claim certificates (admin).
#[utoipa::path(get, path = "/v1/provisioning-templates/{name}/claim-certificates", tag = "provisioning",
    params(("name" = String, Path, pattern = "^[a-zA-Z0-9:_-]{1,128}$")), security(("bearer" = [])),
    responses((status = 200, body = CertList), (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn list_claims(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<axum::Json<CertList>, ApiError> {
    let template = visible(&state, &caller, name).await?;
    let certs = state
        .node
        .with_directory(move |d| d.claim_certificates(&template.name))
        .await?;
    Ok(axum::Json(CertList::new(certs)))
}

/// Activates, deactivates or revokes a claim certificate (admin): one that is not active is
/// refused at the next handshake and can provision nothing more.
#[utoipa::path(patch, path = "/v1/provisioning-templates/{name}/claim-certificates/{id}", tag = "provisioning", request_body = StatusBody,
    params(("name" = String, Path, pattern = "^[a-zA-Z0-9:_-]{1,128}$"), ("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = CertView), (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody),
        (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody), (status = 415, body = crate::error::ErrorBody)))]
pub(crate) async fn set_claim_status(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, id)): Path<(String, String)>,
    Json(body): Json<StatusBody>,
) -> Result<axum::Json<CertView>, ApiError> {
    let template = visible(&state, &caller, name).await?;
    let actor = caller.id().to_owned();
    let record = state
        .node
        .with_directory(move |d| {
            d.set_certificate_status(
                &CertRecord::claim_owner(&template.name),
                &id,
                body.status,
                &actor,
                actors::now_ms(),
            )
        })
        .await?;
    Ok(axum::Json(record.into()))
}
