//! Parsing of shadow requests (`get`, `update`, `delete` payloads) and telemetry samples into
//! typed commands, with the AWS rejections for malformed input. Parsing needs no twin, so
//! transports do it before a request reaches the twin's actor.

use crate::{
    error::ShadowError,
    limits::{Limits, MAX_CLIENT_TOKEN},
    names::{ShadowName, ThingName},
    state::{depth, has_null_in_array},
};
use serde_json::{Map, Value};

/// A request refused before it reached a twin; the client token is echoed when it was valid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// Why.
    pub error: ShadowError,
    /// The request's `clientToken`, if it had a valid one.
    pub client_token: Option<Box<str>>,
}

impl From<ShadowError> for Rejection {
    fn from(error: ShadowError) -> Self {
        Self {
            error,
            client_token: None,
        }
    }
}

/// What an update does to one section.
#[derive(Clone, Debug, PartialEq, Default)]
pub enum Patch {
    /// The request does not mention the section.
    #[default]
    Absent,
    /// `"section": null`: remove every key.
    Clear,
    /// Merge these fields.
    Merge(Map<String, Value>),
}

impl Patch {
    /// Whether the request mentions the section.
    pub fn is_present(&self) -> bool {
        !matches!(self, Patch::Absent)
    }
}

/// `…/get`.
#[derive(Clone, Debug, PartialEq)]
pub struct GetRequest {
    /// Which shadow.
    pub shadow: ShadowName,
    /// Echoed in the reply.
    pub client_token: Option<Box<str>>,
}

/// `…/update`.
#[derive(Clone, Debug, PartialEq)]
pub struct UpdateRequest {
    /// Which shadow.
    pub shadow: ShadowName,
    /// Echoed in replies; a repeated token is answered with the original reply.
    pub client_token: Option<Box<str>>,
    /// Optimistic concurrency: the version the writer expects the shadow to have.
    pub version: Option<u64>,
    /// The change to `desired`.
    pub desired: Patch,
    /// The change to `reported`.
    pub reported: Patch,
    /// The request's `state` node as sent, echoed in the accepted reply.
    pub state: Value,
}

/// `…/delete`.
#[derive(Clone, Debug, PartialEq)]
pub struct DeleteRequest {
    /// Which shadow.
    pub shadow: ShadowName,
    /// Echoed in the reply; a repeated token is answered with the original reply.
    pub client_token: Option<Box<str>>,
    /// Optimistic concurrency, as for updates.
    pub version: Option<u64>,
}

/// A telemetry sample: fields and an optional device timestamp.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Device time of the sample, epoch milliseconds (`ts`).
    pub ts: Option<u64>,
    /// The fields, `ts` excluded.
    pub values: Map<String, Value>,
}

fn parse_object(payload: &[u8]) -> Result<Map<String, Value>, ShadowError> {
    if std::str::from_utf8(payload).is_err() {
        return Err(ShadowError::not_utf8());
    }
    match serde_json::from_slice(payload) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(ShadowError::invalid_json()),
    }
}

/// Reads `clientToken` and `version` (both optional) from a request document.
fn parse_envelope(doc: &Map<String, Value>) -> Result<(Option<Box<str>>, Option<u64>), Rejection> {
    let client_token = match doc.get("clientToken") {
        None => None,
        Some(Value::String(t)) if t.len() <= MAX_CLIENT_TOKEN => Some(t.as_str().into()),
        Some(_) => return Err(ShadowError::invalid_client_token().into()),
    };
    let version = match doc.get("version") {
        None => None,
        Some(v) => match v.as_u64() {
            Some(v) => Some(v),
            None => {
                return Err(Rejection {
                    error: ShadowError::invalid_version(),
                    client_token,
                });
            }
        },
    };
    Ok((client_token, version))
}

/// Parses an `…/update` payload. Keys other than `state`, `clientToken` and `version` are
/// ignored, as AWS does.
pub fn parse_update(
    shadow: ShadowName,
    payload: &[u8],
    limits: &Limits,
) -> Result<UpdateRequest, Rejection> {
    let mut doc = parse_object(payload)?;
    let (client_token, version) = parse_envelope(&doc)?;
    let reject = |error: ShadowError| Rejection {
        error,
        client_token: client_token.clone(),
    };
    let state = doc
        .remove("state")
        .ok_or_else(|| reject(ShadowError::missing_state()))?;
    let (desired, reported) = match &state {
        Value::Null => (Patch::Clear, Patch::Clear),
        Value::Object(sections) => {
            if sections.keys().any(|k| k != "desired" && k != "reported") {
                return Err(reject(ShadowError::invalid_node()));
            }
            let section = |name: &str, not_object: ShadowError| match sections.get(name) {
                None => Ok(Patch::Absent),
                Some(Value::Null) => Ok(Patch::Clear),
                Some(v @ Value::Object(fields)) => {
                    // The section object itself is one level.
                    if depth(v) > limits.max_depth {
                        return Err(ShadowError::too_deep(limits.max_depth));
                    }
                    if has_null_in_array(v) {
                        return Err(ShadowError::invalid_node());
                    }
                    Ok(Patch::Merge(fields.clone()))
                }
                Some(_) => Err(not_object),
            };
            (
                section("desired", ShadowError::desired_not_object()).map_err(reject)?,
                section("reported", ShadowError::reported_not_object()).map_err(reject)?,
            )
        }
        _ => return Err(reject(ShadowError::state_not_object())),
    };
    Ok(UpdateRequest {
        shadow,
        client_token,
        version,
        desired,
        reported,
        state,
    })
}

/// Parses a `…/get` payload; an empty payload is a get without a client token.
pub fn parse_get(shadow: ShadowName, payload: &[u8]) -> Result<GetRequest, Rejection> {
    let (client_token, _) = if payload.iter().all(u8::is_ascii_whitespace) {
        (None, None)
    } else {
        parse_envelope(&parse_object(payload)?)?
    };
    Ok(GetRequest {
        shadow,
        client_token,
    })
}

/// Parses a `…/delete` payload; an empty payload is a delete without a client token.
pub fn parse_delete(shadow: ShadowName, payload: &[u8]) -> Result<DeleteRequest, Rejection> {
    let (client_token, version) = if payload.iter().all(u8::is_ascii_whitespace) {
        (None, None)
    } else {
        parse_envelope(&parse_object(payload)?)?
    };
    Ok(DeleteRequest {
        shadow,
        client_token,
        version,
    })
}

impl Sample {
    /// Parses a telemetry payload: a JSON object, optionally with `ts` in epoch milliseconds.
    pub fn parse(payload: &[u8]) -> Result<Sample, ShadowError> {
        Sample::from_object(parse_object(payload)?)
    }

    /// A sample from an already parsed object (e.g. one entry of a gateway batch).
    pub fn from_object(mut values: Map<String, Value>) -> Result<Sample, ShadowError> {
        let ts = match values.remove("ts") {
            None | Some(Value::Null) => None,
            Some(ts) => Some(ts.as_u64().ok_or(ShadowError::invalid_timestamp())?),
        };
        Ok(Sample { ts, values })
    }
}

/// Most entries in one gateway batch.
pub const MAX_BATCH_ENTRIES: usize = 1000;

/// One entry of a gateway's telemetry batch: a sample for a device behind the gateway.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchEntry {
    /// The device the sample is for.
    pub thing: ThingName,
    /// Its sample.
    pub sample: Sample,
}

/// Parses a gateway's telemetry batch: a JSON array of `{"thing", "ts"?, "values"}` with at
/// most [`MAX_BATCH_ENTRIES`] entries. A batch is taken whole or refused whole: the first
/// malformed entry refuses it, naming the entry.
pub fn parse_batch(payload: &[u8]) -> Result<Vec<BatchEntry>, ShadowError> {
    let invalid = |message: String| ShadowError {
        code: 400,
        message: message.into(),
    };
    let entries: Vec<Value> = match serde_json::from_slice(payload) {
        Ok(Value::Array(entries)) => entries,
        Ok(_) => return Err(invalid("a gateway batch must be a JSON array".into())),
        Err(_) => return Err(ShadowError::invalid_json()),
    };
    if entries.len() > MAX_BATCH_ENTRIES {
        return Err(invalid(format!(
            "a gateway batch holds at most {MAX_BATCH_ENTRIES} entries, not {}",
            entries.len()
        )));
    }
    entries
        .into_iter()
        .enumerate()
        .map(|(i, entry)| {
            let Value::Object(mut entry) = entry else {
                return Err(invalid(format!("entry {i} is not an object")));
            };
            let thing = match entry.remove("thing") {
                Some(Value::String(name)) => ThingName::new(&name)
                    .map_err(|_| invalid(format!("entry {i}: {name:?} is not a thing name")))?,
                _ => return Err(invalid(format!("entry {i}: missing \"thing\""))),
            };
            let ts =
                match entry.remove("ts") {
                    None | Some(Value::Null) => None,
                    Some(ts) => Some(ts.as_u64().ok_or_else(|| {
                        invalid(format!("entry {i}: ts is not epoch milliseconds"))
                    })?),
                };
            let values = match entry.remove("values") {
                Some(Value::Object(values)) => values,
                _ => return Err(invalid(format!("entry {i}: \"values\" must be an object"))),
            };
            if let Some(key) = entry.keys().next() {
                return Err(invalid(format!("entry {i}: unknown field {key:?}")));
            }
            Ok(BatchEntry {
                thing,
                sample: Sample { ts, values },
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn gateway_batches_parse_whole_or_not_at_all() {
        let batch = parse_batch(
            br#"[{"thing": "s-1", "ts": 5, "values": {"t": 1}}, {"thing": "s-2", "values": {}}]"#,
        )
        .unwrap();
        assert_eq!(batch.len(), 2);
        assert_eq!(batch[0].thing.as_str(), "s-1");
        assert_eq!(batch[0].sample.ts, Some(5));
        assert_eq!(batch[0].sample.values["t"], json!(1));
        assert_eq!(batch[1].sample.ts, None);
        let table: &[(&str, &str)] = &[
            ("[", "Invalid JSON"),
            ("{}", "a gateway batch must be a JSON array"),
            ("[1]", "entry 0 is not an object"),
            (r#"[{"values": {}}]"#, "entry 0: missing \"thing\""),
            (
                r#"[{"thing": "a b", "values": {}}]"#,
                "entry 0: \"a b\" is not a thing name",
            ),
            (
                r#"[{"thing": "a", "values": {}}, {"thing": "b", "values": 1}]"#,
                "entry 1: \"values\" must be an object",
            ),
            (
                r#"[{"thing": "a", "ts": -1, "values": {}}]"#,
                "entry 0: ts is not epoch milliseconds",
            ),
            (
                r#"[{"thing": "a", "values": {}, "x": 1}]"#,
                "entry 0: unknown field \"x\"",
            ),
        ];
        for (payload, message) in table {
            let error = parse_batch(payload.as_bytes()).unwrap_err();
            assert_eq!(
                (error.code, error.message.as_ref()),
                (400, *message),
                "{payload}"
            );
        }
        let big = format!(
            "[{}]",
            vec![r#"{"thing":"a","values":{}}"#; MAX_BATCH_ENTRIES + 1].join(",")
        );
        assert!(
            parse_batch(big.as_bytes())
                .unwrap_err()
                .message
                .contains("at most 1000")
        );
    }

    fn update(payload: &str) -> Result<UpdateRequest, Rejection> {
        parse_update(ShadowName::CLASSIC, payload.as_bytes(), &Limits::default())
    }

    fn code_and_message(payload: &str) -> (u16, String) {
        let e = update(payload).unwrap_err().error;
        (e.code, e.message.into_owned())
    }

    #[test]
    fn malformed_updates_get_the_aws_errors() {
        let table: &[(&str, u16, &str)] = &[
            ("{", 400, "Invalid JSON"),
            ("[1]", 400, "Invalid JSON"),
            ("\"x\"", 400, "Invalid JSON"),
            ("{}", 400, "Missing required node: state"),
            (r#"{"state": 1}"#, 400, "State node must be an object"),
            (r#"{"state": []}"#, 400, "State node must be an object"),
            (
                r#"{"state": {"desired": 1}}"#,
                400,
                "Desired node must be an object",
            ),
            (
                r#"{"state": {"reported": "x"}}"#,
                400,
                "Reported node must be an object",
            ),
            (
                r#"{"state": {"delta": {}}}"#,
                400,
                "State contains an invalid node",
            ),
            (
                r#"{"state": {"desired": {"a": [1, null]}}}"#,
                400,
                "State contains an invalid node",
            ),
            (r#"{"state": {}, "version": -1}"#, 400, "Invalid version"),
            (r#"{"state": {}, "version": "3"}"#, 400, "Invalid version"),
            (r#"{"state": {}, "version": 1.5}"#, 400, "Invalid version"),
            (
                r#"{"state": {}, "clientToken": 7}"#,
                400,
                "Invalid clientToken",
            ),
        ];
        for (payload, code, message) in table {
            assert_eq!(
                code_and_message(payload),
                (*code, message.to_string()),
                "{payload}"
            );
        }
    }

    #[test]
    fn client_tokens_are_at_most_64_bytes() {
        let ok = format!(r#"{{"state": {{}}, "clientToken": "{}"}}"#, "t".repeat(64));
        assert_eq!(
            update(&ok).unwrap().client_token.as_deref(),
            Some(&*"t".repeat(64))
        );
        let long = format!(r#"{{"state": {{}}, "clientToken": "{}"}}"#, "t".repeat(65));
        assert_eq!(code_and_message(&long), (400, "Invalid clientToken".into()));
    }

    #[test]
    fn rejections_echo_a_valid_client_token() {
        let r = update(r#"{"clientToken": "abc"}"#).unwrap_err();
        assert_eq!(r.client_token.as_deref(), Some("abc"));
        assert_eq!(r.error, ShadowError::missing_state());
    }

    #[test]
    fn non_utf8_payloads_get_415() {
        let e = parse_update(
            ShadowName::CLASSIC,
            b"{\"state\":\"\xff\"}",
            &Limits::default(),
        )
        .unwrap_err();
        assert_eq!(e.error.code, 415);
    }

    #[test]
    fn depth_is_limited_per_section() {
        // Six levels: the section object and five nested objects.
        let six = r#"{"state": {"reported": {"a": {"b": {"c": {"d": {"e": {"f": 1}}}}}}}}"#;
        assert!(update(six).is_ok());
        let seven =
            r#"{"state": {"reported": {"a": {"b": {"c": {"d": {"e": {"f": {"g": 1}}}}}}}}}"#;
        assert_eq!(
            code_and_message(seven),
            (
                400,
                "JSON contains too many levels of nesting; maximum is 6".into()
            )
        );
        let arrays = r#"{"state": {"desired": {"a": {"b": {"c": {"d": {"e": [[1]]}}}}}}}"#;
        assert_eq!(code_and_message(arrays).0, 400, "arrays count as levels");
        let limits = Limits {
            max_depth: 2,
            ..Limits::default()
        };
        assert!(
            parse_update(
                ShadowName::CLASSIC,
                br#"{"state":{"desired":{"a":{"b":1}}}}"#,
                &limits
            )
            .is_ok()
        );
        assert!(
            parse_update(
                ShadowName::CLASSIC,
                br#"{"state":{"desired":{"a":{"b":{"c":1}}}}}"#,
                &limits
            )
            .is_err()
        );
    }

    #[test]
    fn sections_parse_into_patches_and_other_keys_are_ignored() {
        let r = update(
            r#"{"state": {"desired": null, "reported": {"a": 1}}, "version": 3, "extra": true}"#,
        )
        .unwrap();
        assert_eq!(r.desired, Patch::Clear);
        assert_eq!(
            r.reported,
            Patch::Merge(json!({"a": 1}).as_object().unwrap().clone())
        );
        assert_eq!(r.version, Some(3));
        let r = update(r#"{"state": null}"#).unwrap();
        assert_eq!((r.desired, r.reported), (Patch::Clear, Patch::Clear));
    }

    #[test]
    fn get_and_delete_accept_empty_payloads() {
        assert_eq!(
            parse_get(ShadowName::CLASSIC, b"").unwrap().client_token,
            None
        );
        assert_eq!(
            parse_get(ShadowName::CLASSIC, br#"{"clientToken":"x"}"#)
                .unwrap()
                .client_token
                .as_deref(),
            Some("x")
        );
        assert_eq!(
            parse_delete(ShadowName::CLASSIC, br#"{"version": 4}"#)
                .unwrap()
                .version,
            Some(4)
        );
        assert_eq!(
            parse_get(ShadowName::CLASSIC, b"nope")
                .unwrap_err()
                .error
                .code,
            400
        );
    }

    #[test]
    fn samples_take_an_optional_epoch_ms_timestamp() {
        let s = Sample::parse(br#"{"ts": 1700000000000, "temp": 21.5}"#).unwrap();
        assert_eq!(s.ts, Some(1_700_000_000_000));
        assert_eq!(Value::Object(s.values), json!({"temp": 21.5}));
        assert_eq!(Sample::parse(br#"{"temp": 1}"#).unwrap().ts, None);
        assert_eq!(
            Sample::parse(br#"{"ts": "yesterday"}"#).unwrap_err(),
            ShadowError::invalid_timestamp()
        );
        assert_eq!(
            Sample::parse(br#"{"ts": -5}"#).unwrap_err(),
            ShadowError::invalid_timestamp()
        );
        assert_eq!(
            Sample::parse(b"[1]").unwrap_err(),
            ShadowError::invalid_json()
        );
    }
}
