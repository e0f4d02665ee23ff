//! The OpenAPI 3 document, generated from the handlers and their types.

use axum::Json;
use utoipa::{
    Modify, OpenApi,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};

#[derive(OpenApi)]
#[openapi(
    info(title = "doppel", description = "Digital twins: things, shadows, device types, telemetry history, API keys, audit."),
    paths(
        crate::things::register, crate::things::register_bulk, crate::things::list, crate::things::get, crate::things::update,
        crate::things::decommission, crate::things::get_shadow, crate::things::patch_shadow, crate::things::delete_shadow,
        crate::things::put_type, crate::things::get_type, crate::things::list_types,
        crate::keys::create, crate::keys::list, crate::keys::revoke, crate::keys::audit, crate::keys::rotate_admin,
        crate::telemetry::get, crate::metrics::metrics, crate::cluster::get,
        crate::certs::ca, crate::certs::crl, crate::certs::issue, crate::certs::list, crate::certs::set_status,
        crate::provisioning::put, crate::provisioning::list, crate::provisioning::get, crate::provisioning::delete,
        crate::artifacts::upload, crate::artifacts::list, crate::artifacts::get, crate::artifacts::delete, crate::artifacts::content,
        crate::jobs::put, crate::jobs::list, crate::jobs::get, crate::jobs::executions, crate::jobs::cancel,
        crate::provisioning::issue_claim, crate::provisioning::list_claims, crate::provisioning::set_claim_status,
        crate::rules::put, crate::rules::list, crate::rules::get, crate::rules::delete, crate::rules::check,
        crate::rules::test, crate::rules::dry_run, crate::rules::trace, crate::rules::alerts,
        crate::keys::me, crate::things::summary, crate::tickets::issue, crate::jobs::for_thing,
    ),
    modifiers(&Bearer),
    tags((name = "things"), (name = "shadows"), (name = "types"), (name = "telemetry"), (name = "keys"), (name = "audit"), (name = "rules"), (name = "certificates"), (name = "provisioning"), (name = "jobs"), (name = "stream"), (name = "operations")),
)]
pub(crate) struct ApiDoc;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("the bootstrap admin token or an API key"))
                    .build(),
            ),
        );
    }
}

/// `GET /v1/openapi.json`.
pub(crate) async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

// ---- schemas of values the handlers keep as JSON ------------------------------------------
