//! What the checker knows about fields: it walks a device type's JSON Schemas to find a field's
//! type, whether it must be present, and whether it exists at all.

use serde_json::Value;

/// A value's static type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ty {
    /// A number.
    Num,
    /// A string.
    Str,
    /// `true` or `false`.
    Bool,
    /// `null` (only as a value to set).
    Null,
    /// An object (not usable in conditions).
    Object,
    /// An array (not usable in conditions).
    Array,
    /// Not known statically.
    Any,
}

impl Ty {
    /// As said in diagnostics.
    pub fn describe(self) -> &'static str {
        match self {
            Ty::Num => "a number",
            Ty::Str => "a string",
            Ty::Bool => "a boolean",
            Ty::Null => "null",
            Ty::Object => "an object",
            Ty::Array => "an array",
            Ty::Any => "a value",
        }
    }

    /// Whether a value of type `self` may be used where `other` is expected.
    pub fn fits(self, other: Ty) -> bool {
        self == other || self == Ty::Any || other == Ty::Any
    }
}

/// What the schema says of a field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Field {
    /// Described: its type, and whether every object on the way requires it.
    Known {
        /// Its type.
        ty: Ty,
        /// Present whenever the document is.
        required: bool,
    },
    /// Not described, but the schema allows other fields.
    NotDescribed,
    /// The schema allows no such field.
    Unknown {
        /// The fields the schema describes at that level, for the hint.
        siblings: Vec<String>,
    },
    /// No schema for this section: anything goes.
    Unchecked,
}

/// Looks `path` up in `schema` (a JSON Schema for the section).
pub fn field(schema: Option<&Value>, path: &[&str]) -> Field {
    let Some(mut schema) = schema else {
        return Field::Unchecked;
    };
    let mut required = true;
    for (i, key) in path.iter().enumerate() {
        let Value::Object(object) = schema else {
            // `true` (or anything else): no constraint below.
            return if schema == &Value::Bool(false) {
                Field::Unknown {
                    siblings: Vec::new(),
                }
            } else {
                Field::NotDescribed
            };
        };
        let properties = object.get("properties").and_then(Value::as_object);
        match properties.and_then(|p| p.get(*key)) {
            Some(sub) => {
                let listed = object
                    .get("required")
                    .and_then(Value::as_array)
                    .is_some_and(|r| r.iter().any(|k| k.as_str() == Some(key)));
                required &= listed;
                schema = sub;
            }
            None => match object.get("additionalProperties") {
                Some(Value::Bool(false)) => {
                    return Field::Unknown {
                        siblings: properties
                            .map(|p| p.keys().cloned().collect())
                            .unwrap_or_default(),
                    };
                }
                Some(sub @ Value::Object(_)) => {
                    required = false;
                    schema = sub;
                }
                _ => {
                    let _ = i;
                    return Field::NotDescribed;
                }
            },
        }
    }
    Field::Known {
        ty: type_of(schema),
        required,
    }
}

/// The type a schema gives its values.
pub fn type_of(schema: &Value) -> Ty {
    let Value::Object(object) = schema else {
        return Ty::Any;
    };
    let one = |t: &str| match t {
        "number" | "integer" => Ty::Num,
        "string" => Ty::Str,
        "boolean" => Ty::Bool,
        "object" => Ty::Object,
        "array" => Ty::Array,
        "null" => Ty::Null,
        _ => Ty::Any,
    };
    match object.get("type") {
        Some(Value::String(t)) => one(t),
        Some(Value::Array(types)) => {
            let mut tys = types.iter().filter_map(Value::as_str).map(one);
            let first = tys.next().unwrap_or(Ty::Any);
            if tys.all(|t| t == first) {
                first
            } else {
                Ty::Any
            }
        }
        _ => match object.get("enum").and_then(Value::as_array) {
            Some(values) if values.iter().all(Value::is_string) => Ty::Str,
            Some(values) if values.iter().all(Value::is_number) => Ty::Num,
            Some(values) if values.iter().all(Value::is_boolean) => Ty::Bool,
            _ => Ty::Any,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_are_found_typed_and_required_all_the_way() {
        let schema = json!({
            "type": "object",
            "required": ["temp", "pos"],
            "properties": {
                "temp": {"type": "number"},
                "mode": {"enum": ["auto", "manual"]},
                "pos": {"type": "object", "properties": {"lat": {"type": "number"}}, "required": ["lat"]},
            },
            "additionalProperties": false
        });
        assert_eq!(
            field(Some(&schema), &["temp"]),
            Field::Known {
                ty: Ty::Num,
                required: true
            }
        );
        assert_eq!(
            field(Some(&schema), &["mode"]),
            Field::Known {
                ty: Ty::Str,
                required: false
            }
        );
        assert_eq!(
            field(Some(&schema), &["pos", "lat"]),
            Field::Known {
                ty: Ty::Num,
                required: true
            }
        );
        assert!(
            matches!(field(Some(&schema), &["hum"]), Field::Unknown { siblings } if siblings.len() == 3)
        );
        assert_eq!(
            field(Some(&json!({"type": "object"})), &["x"]),
            Field::NotDescribed
        );
        assert_eq!(field(None, &["x"]), Field::Unchecked);
    }
}
