//! Device certificates over HTTP: the deployment's CA (`GET /v1/ca`), issuing a thing's
//! certificate from its CSR or with a new key, listing a thing's certificates, and
//! activating, deactivating or revoking one.

use crate::{
    AppState,
    auth::Caller,
    error::ApiError,
    extract::{Json, Path},
    things::visible_thing,
};
use actors::{
    directory::Role,
    pki::{CertRecord, CertStatus, DEFAULT_VALIDITY},
};
use axum::{extract::State, http::StatusCode, response::IntoResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The deployment's CA certificate (PEM): what device certificates chain to.
#[utoipa::path(get, path = "/v1/ca", tag = "certificates", security(("bearer" = [])),
    responses((status = 200, body = String, content_type = "application/x-pem-file"), (status = 401, body = crate::error::ErrorBody)))]
pub(crate) async fn ca(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(Role::Viewer)?;
    let pem = state.node.directory().pki().certificate_pem().to_owned();
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/x-pem-file")],
        pem,
    ))
}

/// The certificate revocation list (PEM) of the deployment's CA: every revoked certificate.
#[utoipa::path(get, path = "/v1/ca/crl", tag = "certificates", security(("bearer" = [])),
    responses((status = 200, body = String, content_type = "application/x-pem-file"), (status = 401, body = crate::error::ErrorBody)))]
pub(crate) async fn crl(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(Role::Viewer)?;
    let pem = state
        .node
        .with_directory(|d| d.crl(actors::now_ms()))
        .await?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/x-pem-file")],
        pem,
    ))
}

/// How to issue a certificate: from the device's CSR (its key never leaves it), or with a key
/// made here and returned once.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct IssueBody {
    /// A PEM certificate signing request.
    csr: Option<String>,
    /// `true`: make a key pair here (the private key is in this answer only).
    generate: Option<bool>,
    /// Validity in days (1 to 3650, default 180).
    validity_days: Option<u32>,
}

impl IssueBody {
    /// The CSR (`None`: make a key) and the validity asked for.
    pub(crate) fn parse(self) -> Result<(Option<String>, std::time::Duration), ApiError> {
        let csr = match (self.csr, self.generate) {
            (Some(csr), None | Some(false)) => Some(csr),
            (None, Some(true)) => None,
            _ => {
                return Err(ApiError::invalid(
                    "give either \"csr\" (a PEM certificate request) or \"generate\": true",
                ));
            }
        };
        let validity = match self.validity_days {
            None => DEFAULT_VALIDITY,
            Some(days @ 1..=3650) => std::time::Duration::from_secs(u64::from(days) * 86_400),
            Some(_) => {
                return Err(ApiError::invalid(
                    "validity_days must be between 1 and 3650",
                ));
            }
        };
        Ok((csr, validity))
    }
}

/// A certificate of a thing.
#[derive(Serialize, ToSchema)]
pub(crate) struct CertView {
    /// SHA-256 of the certificate's DER, hex.
    id: String,
    /// `active`, `inactive` or `revoked`.
    #[schema(value_type = String)]
    status: CertStatus,
    /// The certificate, PEM.
    certificate: String,
    /// Serial number, hex.
    serial: String,
    /// Valid from and until, epoch ms.
    not_before: u64,
    expires: u64,
    /// Issued when (epoch ms) and by whom.
    created_at: u64,
    created_by: String,
}

impl From<CertRecord> for CertView {
    fn from(c: CertRecord) -> Self {
        Self {
            id: c.id,
            status: c.status,
            certificate: c.pem,
            serial: c.serial,
            not_before: c.not_before,
            expires: c.not_after,
            created_at: c.created_at,
            created_by: c.created_by,
        }
    }
}

/// A certificate just issued; `private_key` only when the key was made here.
#[derive(Serialize, ToSchema)]
pub(crate) struct Issued {
    #[serde(flatten)]
    certificate: CertView,
    /// The new private key, PEM — shown this once.
    #[serde(skip_serializing_if = "Option::is_none")]
    private_key: Option<String>,
}

impl Issued {
    pub(crate) fn new(record: CertRecord, private_key: Option<String>) -> Self {
        Self {
            certificate: record.into(),
            private_key,
        }
    }
}

/// Issues a certificate to a thing (admin): `{"csr": PEM}` or `{"generate": true}`.
#[utoipa::path(post, path = "/v1/things/{name}/certificates", tag = "certificates", request_body = IssueBody,
    params(("name" = String, Path, pattern = "^[a-zA-Z0-9:_-]{1,128}$")), security(("bearer" = [])),
    responses((status = 201, body = Issued), (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody),
        (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody), (status = 415, body = crate::error::ErrorBody)))]
pub(crate) async fn issue(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Json(body): Json<IssueBody>,
) -> Result<(StatusCode, axum::Json<Issued>), ApiError> {
    caller.require(Role::Admin)?;
    let thing = visible_thing(&state, &caller, &name).await?.name;
    let (csr, validity) = body.parse()?;
    let actor = caller.id().to_owned();
    let (record, key) = state
        .node
        .with_directory(move |d| {
            d.issue_certificate(&thing, csr.as_deref(), validity, &actor, actors::now_ms())
        })
        .await?;
    Ok((StatusCode::CREATED, axum::Json(Issued::new(record, key))))
}

/// A thing's certificates.
#[derive(Serialize, ToSchema)]
pub(crate) struct CertList {
    certificates: Vec<CertView>,
}

impl CertList {
    pub(crate) fn new(certificates: Vec<CertRecord>) -> Self {
        Self {
            certificates: certificates.into_iter().map(CertView::from).collect(),
        }
    }
}

/// A thing's certificates (viewer).
#[utoipa::path(get, path = "/v1/things/{name}/certificates", tag = "certificates",
    params(("name" = String, Path, pattern = "^[a-zA-Z0-9:_-]{1,128}$")), security(("bearer" = [])),
    responses((status = 200, body = CertList), (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<axum::Json<CertList>, ApiError> {
    let thing = visible_thing(&state, &caller, &name).await?.name;
    let certs = state
        .node
        .with_directory(move |d| d.certificates(&thing))
        .await?;
    Ok(axum::Json(CertList::new(certs)))
}

/// A certificate's new status.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct StatusBody {
    /// `active`, `inactive` or `revoked` (final).
    #[schema(value_type = String)]
    pub(crate) status: CertStatus,
}

/// Activates, deactivates or revokes a certificate (admin). A certificate that stops being
/// active is refused at the next handshake, and the thing's live session is closed.
#[utoipa::path(patch, path = "/v1/things/{name}/certificates/{id}", tag = "certificates", request_body = StatusBody,
    params(("name" = String, Path, pattern = "^[a-zA-Z0-9:_-]{1,128}$"), ("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = CertView), (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody),
        (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody), (status = 415, body = crate::error::ErrorBody)))]
pub(crate) async fn set_status(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, id)): Path<(String, String)>,
    Json(body): Json<StatusBody>,
) -> Result<axum::Json<CertView>, ApiError> {
    caller.require(Role::Admin)?;
    let thing = visible_thing(&state, &caller, &name).await?.name;
    let record = state
        .node
        .set_certificate_status(thing, id, body.status, caller.id())
        .await?;
    Ok(axum::Json(record.into()))
}
