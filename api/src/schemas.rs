//! Schemas of the JSON-valued fields that the wire types keep as `Value` (roles, type names,
//! the shadow update document, device type schemas, the telemetry mapping), written by hand
//! for the OpenAPI document. A leaf: handlers and the document both use it.

use utoipa::{
    PartialSchema, ToSchema,
    openapi::{
        ArrayBuilder, ObjectBuilder, OneOfBuilder, RefOr, Schema, Type,
        schema::{AdditionalProperties, SchemaType},
    },
};

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
