//! The OpenAPI 3 document, generated from the handlers and their types.

use axum::Json;
use utoipa::{
    Modify, OpenApi, PartialSchema, ToSchema,
    openapi::{
        ArrayBuilder, ObjectBuilder, OneOfBuilder, RefOr, Schema, Type,
        schema::{AdditionalProperties, SchemaType},
        security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
    },
};

#[derive(OpenApi)]
#[openapi(
    info(title = "doppel", description = "Digital twins: things, shadows, device types, telemetry history, API keys, audit."),
    paths(
        crate::things::register, crate::things::register_bulk, crate::things::list, crate::things::get, crate::things::update,
        crate::things::decommission, crate::things::get_shadow, crate::things::patch_shadow, crate::things::delete_shadow,
        crate::things::put_type, crate::things::get_type, crate::things::list_types,
        crate::keys::create, crate::keys::list, crate::keys::revoke, crate::keys::audit, crate::keys::rotate_admin,
        crate::telemetry::get, crate::metrics::metrics,
        crate::rules::put, crate::rules::list, crate::rules::get, crate::rules::delete, crate::rules::check,
        crate::rules::test, crate::rules::dry_run, crate::rules::trace, crate::rules::alerts,
    ),
    modifiers(&Bearer),
    tags((name = "things"), (name = "shadows"), (name = "types"), (name = "telemetry"), (name = "keys"), (name = "audit"), (name = "rules"), (name = "operations")),
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

fn object() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::Object)
}

fn object_or_null() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(SchemaType::from_iter([Type::Object, Type::Null]))
}

/// A role: `admin`, `operator` or `viewer`.
pub(crate) enum RoleName {}

impl PartialSchema for RoleName {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(["admin", "operator", "viewer"]))
            .into()
    }
}

impl ToSchema for RoleName {}

/// A device type's name.
pub(crate) enum TypeNameString {}

impl PartialSchema for TypeNameString {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some("^[a-zA-Z0-9:_-]{1,128}$"))
            .into()
    }
}

impl ToSchema for TypeNameString {}

/// An AWS shadow update document: `{"state": {"desired"?, "reported"?}, "version"?,
/// "clientToken"?}`; a section set to `null` clears it, `"state": null` clears both.
pub(crate) enum UpdateDocument {}

impl PartialSchema for UpdateDocument {
    fn schema() -> RefOr<Schema> {
        let state = object_or_null()
            .property("desired", object_or_null())
            .property("reported", object_or_null())
            .additional_properties(Some(AdditionalProperties::FreeForm(false)));
        object()
            .property("state", state)
            .required("state")
            .property(
                "version",
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(0)),
            )
            .property(
                "clientToken",
                ObjectBuilder::new().schema_type(Type::String),
            )
            .into()
    }
}

impl ToSchema for UpdateDocument {}

/// A device type's JSON Schemas: for `reported`, `desired` and telemetry samples (each a JSON
/// Schema: an object, or `true`/`false`; `null` or absent: none).
pub(crate) fn type_schemas() -> ObjectBuilder {
    let schema = || {
        ObjectBuilder::new().schema_type(SchemaType::from_iter([
            Type::Object,
            Type::Boolean,
            Type::Null,
        ]))
    };
    object()
        .property("reported", schema())
        .property("desired", schema())
        .property("telemetry", schema())
        .additional_properties(Some(AdditionalProperties::FreeForm(false)))
}

/// Which telemetry fields feed `reported`: `"all"` or `{"fields": [...]}`.
pub(crate) fn telemetry_mapping() -> Schema {
    OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(["all"])),
        )
        .item(
            object()
                .property(
                    "fields",
                    ArrayBuilder::new().items(ObjectBuilder::new().schema_type(Type::String)),
                )
                .required("fields")
                .additional_properties(Some(AdditionalProperties::FreeForm(false))),
        )
        .build()
        .into()
}
