//! Device types: JSON Schemas for reported, desired and telemetry, and which telemetry fields
//! feed `reported`. A type is compiled once and shared by all its twins.

use crate::{error::ShadowError, error::TwinError, names::TypeName};
use jsonschema::Validator;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;

/// The JSON Schemas of a device type; each is optional.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Schemas {
    /// Validates the merged `reported` section.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reported: Option<Value>,
    /// Validates the merged `desired` section.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub desired: Option<Value>,
    /// Validates each telemetry sample (without `ts`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub telemetry: Option<Value>,
}

/// Which top-level telemetry fields are merged into `reported`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TelemetryMapping {
    /// Every field (the default).
    #[default]
    All,
    /// Only these fields; an empty list keeps telemetry out of `reported`.
    Fields(Vec<String>),
}

impl TelemetryMapping {
    /// Whether the field `key` goes into `reported`.
    pub fn keeps(&self, key: &str) -> bool {
        match self {
            TelemetryMapping::All => true,
            TelemetryMapping::Fields(fields) => fields.iter().any(|f| f == key),
        }
    }
}

/// A device type as registered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceType {
    /// The type's name.
    pub name: TypeName,
    /// Optional JSON Schemas.
    #[serde(default)]
    pub schemas: Schemas,
    /// Which telemetry fields feed `reported`.
    #[serde(default)]
    pub telemetry_to_reported: TelemetryMapping,
}

/// A device type with its schemas compiled.
pub struct CompiledType {
    def: DeviceType,
    reported: Option<Validator>,
    desired: Option<Validator>,
    telemetry: Option<Validator>,
}

impl fmt::Debug for CompiledType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompiledType")
            .field("def", &self.def)
            .finish_non_exhaustive()
    }
}

fn compile(section: &'static str, schema: &Option<Value>) -> Result<Option<Validator>, TwinError> {
    schema
        .as_ref()
        .map(|s| {
            jsonschema::validator_for(s).map_err(|e| TwinError::InvalidSchema {
                section,
                message: e.to_string(),
            })
        })
        .transpose()
}

impl CompiledType {
    /// Compiles the type's schemas. Schemas may not reference remote or file documents.
    pub fn compile(def: DeviceType) -> Result<Self, TwinError> {
        Ok(Self {
            reported: compile("reported", &def.schemas.reported)?,
            desired: compile("desired", &def.schemas.desired)?,
            telemetry: compile("telemetry", &def.schemas.telemetry)?,
            def,
        })
    }

    /// The type as registered.
    pub fn def(&self) -> &DeviceType {
        &self.def
    }

    /// Whether the type validates `reported`.
    pub fn has_reported_schema(&self) -> bool {
        self.reported.is_some()
    }

    /// Whether the type validates `desired`.
    pub fn has_desired_schema(&self) -> bool {
        self.desired.is_some()
    }

    /// Checks a merged `reported` section.
    pub fn check_reported(&self, value: &Value) -> Result<(), ShadowError> {
        check("reported", self.reported.as_ref(), value)
    }

    /// Checks a merged `desired` section.
    pub fn check_desired(&self, value: &Value) -> Result<(), ShadowError> {
        check("desired", self.desired.as_ref(), value)
    }

    /// Checks a telemetry sample's fields.
    pub fn check_telemetry(&self, value: &Value) -> Result<(), ShadowError> {
        check("telemetry", self.telemetry.as_ref(), value)
    }
}

/// At most this many violations are listed in one rejection.
const MAX_LISTED: usize = 3;

fn check(section: &str, validator: Option<&Validator>, value: &Value) -> Result<(), ShadowError> {
    let Some(validator) = validator else {
        return Ok(());
    };
    let problems: Vec<String> = validator
        .iter_errors(value)
        .take(MAX_LISTED)
        .map(|e| format!("{section}{}: {e}", e.instance_path()))
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ShadowError::schema(problems.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn thermostat() -> CompiledType {
        let def: DeviceType = serde_json::from_value(json!({
            "name": "Thermostat",
            "schemas": {
                "reported": {"type": "object", "properties": {"temp": {"type": "number"}, "fan": {"enum": ["on", "off", "auto"]}}},
                "desired": {"type": "object", "properties": {"fan": {"enum": ["on", "off", "auto"]}}, "additionalProperties": false},
                "telemetry": {"type": "object", "properties": {"temp": {"type": "number", "minimum": -50}}}
            },
            "telemetry_to_reported": {"fields": ["temp"]}
        }))
        .unwrap();
        CompiledType::compile(def).unwrap()
    }

    #[test]
    fn violations_name_the_failing_path() {
        let t = thermostat();
        let e = t.check_reported(&json!({"temp": "hot"})).unwrap_err();
        assert_eq!(e.code, 400);
        assert!(e.message.starts_with("reported/temp: "), "{}", e.message);
        let e = t.check_desired(&json!({"speed": 3})).unwrap_err();
        assert!(e.message.starts_with("desired: "), "{}", e.message);
        let e = t.check_telemetry(&json!({"temp": -60})).unwrap_err();
        assert!(e.message.starts_with("telemetry/temp: "), "{}", e.message);
        assert!(t.check_reported(&json!({"temp": 20, "fan": "on"})).is_ok());
    }

    #[test]
    fn schemaless_types_accept_anything() {
        let t = CompiledType::compile(DeviceType {
            name: TypeName::new("Plain").unwrap(),
            schemas: Schemas::default(),
            telemetry_to_reported: TelemetryMapping::All,
        })
        .unwrap();
        assert!(t.check_reported(&json!({"x": [1, "y"]})).is_ok());
    }

    #[test]
    fn invalid_schemas_are_refused_at_registration() {
        let def: DeviceType = serde_json::from_value(json!({
            "name": "Broken", "schemas": {"reported": {"type": "no-such-type"}}
        }))
        .unwrap();
        let err = CompiledType::compile(def).unwrap_err();
        assert!(
            matches!(
                err,
                TwinError::InvalidSchema {
                    section: "reported",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn remote_references_are_not_fetched() {
        let def: DeviceType = serde_json::from_value(json!({
            "name": "Remote", "schemas": {"reported": {"$ref": "https://example.com/schema.json"}}
        }))
        .unwrap();
        assert!(CompiledType::compile(def).is_err());
        let def: DeviceType = serde_json::from_value(json!({
            "name": "Local", "schemas": {"reported": {"$ref": "file:///etc/passwd"}}
        }))
        .unwrap();
        assert!(CompiledType::compile(def).is_err());
    }

    #[test]
    fn unknown_fields_in_a_type_are_refused() {
        assert!(serde_json::from_value::<DeviceType>(json!({"name": "T", "schema": {}})).is_err());
        assert!(serde_json::from_value::<DeviceType>(json!({"name": "a/b"})).is_err());
    }

    #[test]
    fn mapping_keeps_the_chosen_fields() {
        assert!(TelemetryMapping::All.keeps("anything"));
        let only = TelemetryMapping::Fields(vec!["hum".into()]);
        assert!(only.keeps("hum") && !only.keeps("temp"));
        assert!(!TelemetryMapping::Fields(vec![]).keeps("hum"));
        assert_eq!(
            serde_json::to_value(TelemetryMapping::All).unwrap(),
            json!("all")
        );
        assert_eq!(
            serde_json::to_value(only).unwrap(),
            json!({"fields": ["hum"]})
        );
    }
}
