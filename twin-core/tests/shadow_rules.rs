//! Table-driven tests that pin each shadow rule of DESIGN §3 through the twin state machine:
//! merge, delta, versions, metadata, size and depth limits, schemas, named shadows, deletion,
//! client-token retries and the AWS payload shapes.

mod support;

use serde_json::{Value, json};
use support::*;
use twin_core::{Effect, Limits, Op, Twin};

/// Applies each update in turn; returns the final `state` (desired/reported/delta).
fn apply(updates: &[Value]) -> Value {
    let mut h = Harness::new();
    for u in updates {
        accepted(&h.update("", json!({ "state": u })));
    }
    h.state("")
}

#[test]
fn merge_rules() {
    let table: Vec<(&str, Vec<Value>, Value)> = vec![
        (
            "recursive merge keeps untouched keys",
            vec![
                json!({"reported": {"a": 1, "n": {"x": 1, "y": 1}}}),
                json!({"reported": {"n": {"y": 2}}}),
            ],
            json!({"reported": {"a": 1, "n": {"x": 1, "y": 2}}}),
        ),
        (
            "scalars replace, whatever their type",
            vec![
                json!({"reported": {"a": 1}}),
                json!({"reported": {"a": "one"}}),
            ],
            json!({"reported": {"a": "one"}}),
        ),
        (
            "arrays replace as a whole",
            vec![
                json!({"reported": {"a": [1, 2, 3]}}),
                json!({"reported": {"a": [4]}}),
            ],
            json!({"reported": {"a": [4]}}),
        ),
        (
            "null deletes a key",
            vec![
                json!({"reported": {"a": 1, "b": 2}}),
                json!({"reported": {"a": null}}),
            ],
            json!({"reported": {"b": 2}}),
        ),
        (
            "null deletes a nested key and empty objects vanish",
            vec![
                json!({"reported": {"n": {"x": 1}, "b": 2}}),
                json!({"reported": {"n": {"x": null}}}),
            ],
            json!({"reported": {"b": 2}}),
        ),
        (
            "\"desired\": null clears the section",
            vec![
                json!({"desired": {"a": 1, "b": 2}, "reported": {"a": 1}}),
                json!({"desired": null}),
            ],
            json!({"reported": {"a": 1}}),
        ),
        (
            "\"state\": null-like clear of both sections",
            vec![
                json!({"desired": {"a": 1}, "reported": {"b": 1}}),
                json!({"desired": null, "reported": null}),
            ],
            json!({}),
        ),
        (
            "an object replaces a scalar",
            vec![
                json!({"reported": {"a": 1}}),
                json!({"reported": {"a": {"b": 1}}}),
            ],
            json!({"reported": {"a": {"b": 1}}}),
        ),
    ];
    for (rule, updates, expected) in table {
        assert_eq!(apply(&updates), expected, "{rule}");
    }
}

#[test]
fn state_null_clears_both_sections_and_keeps_the_shadow() {
    let mut h = Harness::new();
    accepted(&h.update(
        "",
        json!({"state": {"desired": {"a": 1}, "reported": {"b": 1}}}),
    ));
    let r = accepted(&h.update("", json!({"state": null})));
    assert_eq!(r["version"], 2);
    let doc = h.doc("").expect("the shadow still exists");
    assert_eq!(doc["state"], json!({}));
    assert_eq!(doc["version"], 2);
}

#[test]
fn delta_rules() {
    let table: Vec<(&str, Value, Value, Option<Value>)> = vec![
        (
            "equal values: no delta",
            json!({"a": 1}),
            json!({"a": 1}),
            None,
        ),
        (
            "different value",
            json!({"a": 1}),
            json!({"a": 2}),
            Some(json!({"a": 1})),
        ),
        (
            "missing from reported counts as different",
            json!({"a": 1}),
            json!({"b": 1}),
            Some(json!({"a": 1})),
        ),
        (
            "reported-only keys are not in the delta",
            json!({"a": 1}),
            json!({"a": 1, "z": 9}),
            None,
        ),
        (
            "nested differences keep their full path",
            json!({"n": {"m": {"x": 1, "y": 2}}}),
            json!({"n": {"m": {"x": 1, "y": 3}}}),
            Some(json!({"n": {"m": {"y": 2}}})),
        ),
        (
            "arrays compare whole: same",
            json!({"a": [1, 2]}),
            json!({"a": [1, 2]}),
            None,
        ),
        (
            "arrays compare whole: order matters",
            json!({"a": [1, 2]}),
            json!({"a": [2, 1]}),
            Some(json!({"a": [1, 2]})),
        ),
        (
            "object against scalar",
            json!({"a": {"b": 1}}),
            json!({"a": 5}),
            Some(json!({"a": {"b": 1}})),
        ),
        (
            "numbers compare by value",
            json!({"t": 20}),
            json!({"t": 20.0}),
            None,
        ),
    ];
    for (rule, desired, reported, expected) in table {
        let state = apply(&[json!({"desired": desired, "reported": reported})]);
        assert_eq!(state.get("delta").cloned(), expected, "{rule}");
    }
}

#[test]
fn delta_is_recomputed_after_every_update() {
    let mut h = Harness::new();
    accepted(&h.update("", json!({"state": {"desired": {"a": 1, "b": 2}}})));
    assert_eq!(h.state("")["delta"], json!({"a": 1, "b": 2}));
    accepted(&h.update("", json!({"state": {"reported": {"a": 1}}})));
    assert_eq!(h.state("")["delta"], json!({"b": 2}));
    accepted(&h.update("", json!({"state": {"reported": {"b": 2}}})));
    assert_eq!(h.state("").get("delta"), None);
}

#[test]
fn delta_notices_carry_the_whole_current_delta() {
    let mut h = Harness::new();
    let effects = h.update(
        "",
        json!({"state": {"desired": {"a": 1, "b": 2}}, "clientToken": "c1"}),
    );
    let notice = delta_notice(&effects).expect("desired change with a delta publishes a notice");
    assert_eq!(notice["state"], json!({"a": 1, "b": 2}));
    assert_eq!(notice["version"], 1);
    assert_eq!(notice["clientToken"], "c1");
    assert!(notice["metadata"]["a"]["timestamp"].is_u64());

    let effects = h.update("", json!({"state": {"desired": {"c": 3}}}));
    assert_eq!(
        delta_notice(&effects).unwrap()["state"],
        json!({"a": 1, "b": 2, "c": 3}),
        "whole delta, not only the change"
    );

    let effects = h.update("", json!({"state": {"reported": {"a": 1}}}));
    assert_eq!(
        delta_notice(&effects).unwrap()["state"],
        json!({"b": 2, "c": 3}),
        "a report that shrinks the delta publishes it"
    );

    let effects = h.update("", json!({"state": {"reported": {"unrelated": true}}}));
    assert!(
        delta_notice(&effects).is_none(),
        "a report that leaves the delta as it was publishes nothing"
    );

    let effects = h.update("", json!({"state": {"reported": {"b": 2, "c": 3}}}));
    assert!(
        delta_notice(&effects).is_none(),
        "no notice once the delta is empty"
    );
}

#[test]
fn every_accepted_update_adds_one_to_the_version() {
    let mut h = Harness::new();
    for v in 1..=5u64 {
        let r = accepted(&h.update("", json!({"state": {"reported": {"n": v}}})));
        assert_eq!(r["version"], v);
    }
    // The same values again is still an accepted update.
    assert_eq!(
        accepted(&h.update("", json!({"state": {"reported": {"n": 5}}})))["version"],
        6
    );
    // A rejected update does not count.
    rejected(&h.update_raw("", b"{"));
    assert_eq!(h.doc("").unwrap()["version"], 6);
}

#[test]
fn a_stale_version_is_a_conflict_and_changes_nothing() {
    let mut h = Harness::new();
    accepted(&h.update("", json!({"state": {"desired": {"a": 1}}})));
    accepted(&h.update("", json!({"state": {"desired": {"a": 2}}})));
    let before = h.doc("").unwrap();
    let effects = h.update(
        "",
        json!({"state": {"desired": {"a": 3}}, "version": 1, "clientToken": "x"}),
    );
    assert_eq!(rejected(&effects), (409, "Version conflict".into()));
    assert_eq!(support::json(&reply(&effects).payload)["clientToken"], "x");
    assert_eq!(h.doc("").unwrap(), before);
    assert_eq!(
        accepted(&h.update("", json!({"state": {"desired": {"a": 3}}, "version": 2})))["version"],
        3
    );
}

#[test]
fn metadata_has_a_timestamp_per_leaf() {
    let mut h = Harness::new();
    accepted(&h.update(
        "",
        json!({"state": {"reported": {"a": 1, "n": {"x": 1, "y": 2}, "arr": [1, 2]}}}),
    ));
    h.now += 5_000;
    accepted(&h.update("", json!({"state": {"reported": {"n": {"y": 3}}}})));
    let doc = h.doc("").unwrap();
    let t0 = T0 / 1000;
    assert_eq!(
        doc["metadata"],
        json!({"reported": {
            "a": {"timestamp": t0},
            "n": {"x": {"timestamp": t0}, "y": {"timestamp": t0 + 5}},
            "arr": [{"timestamp": t0}, {"timestamp": t0}]
        }})
    );
    assert_eq!(doc["timestamp"], t0 + 5);
}

#[test]
fn accepted_update_echoes_the_request_with_metadata_for_each_key() {
    let mut h = Harness::new();
    accepted(&h.update("", json!({"state": {"desired": {"gone": 1}}})));
    let r = accepted(&h.update("", json!({"state": {"desired": {"a": {"b": 1}, "gone": null}}, "clientToken": "tok", "other": 1})));
    let t = T0 / 1000;
    assert_eq!(
        r,
        json!({
            "state": {"desired": {"a": {"b": 1}, "gone": null}},
            "metadata": {"desired": {"a": {"b": {"timestamp": t}}, "gone": {"timestamp": t}}},
            "version": 2,
            "timestamp": t,
            "clientToken": "tok"
        })
    );
}

#[test]
fn get_returns_the_aws_document() {
    let mut h = Harness::new();
    accepted(&h.update(
        "",
        json!({"state": {"desired": {"a": 2}, "reported": {"a": 1}}}),
    ));
    let doc = h.doc("").unwrap();
    let t = T0 / 1000;
    assert_eq!(
        doc,
        json!({
            "state": {"desired": {"a": 2}, "reported": {"a": 1}, "delta": {"a": 2}},
            "metadata": {"desired": {"a": {"timestamp": t}}, "reported": {"a": {"timestamp": t}}},
            "version": 1,
            "timestamp": t
        })
    );
}

#[test]
fn oversized_state_is_413_and_changes_nothing() {
    let mut h = Harness::new();
    let half = "x".repeat(4_500);
    accepted(&h.update("", json!({"state": {"reported": {"a": half}}})));
    let before = h.doc("").unwrap();
    // Under the limit on its own, over it once merged.
    let effects = h.update("", json!({"state": {"desired": {"b": half}}}));
    assert_eq!(
        rejected(&effects),
        (413, "The payload exceeds the maximum size allowed".into())
    );
    assert_eq!(h.doc("").unwrap(), before);
    // Replacing the big value instead fits.
    accepted(&h.update(
        "",
        json!({"state": {"reported": {"a": null}, "desired": {"b": half}}}),
    ));
}

#[test]
fn the_size_limit_is_configurable() {
    let mut h = Harness::new();
    h.limits = Limits {
        max_state_bytes: 64 * 1024,
        ..Limits::default()
    };
    accepted(&h.update(
        "",
        json!({"state": {"reported": {"a": "y".repeat(60_000)}}}),
    ));
    rejected(&h.update("", json!({"state": {"desired": {"b": "y".repeat(6_000)}}})));
    let mut h = Harness::new();
    h.limits = Limits {
        max_state_bytes: 64,
        ..Limits::default()
    };
    assert_eq!(
        rejected(&h.update("", json!({"state": {"reported": {"a": "y".repeat(60)}}}))).0,
        413
    );
}

#[test]
fn too_deep_updates_are_400_and_change_nothing() {
    let mut h = Harness::new();
    accepted(&h.update("", json!({"state": {"reported": {"keep": 1}}})));
    let effects = h.update(
        "",
        json!({"state": {"reported": {"a": {"b": {"c": {"d": {"e": {"f": {"g": 1}}}}}}}}}),
    );
    assert_eq!(
        rejected(&effects),
        (
            400,
            "JSON contains too many levels of nesting; maximum is 6".into()
        )
    );
    assert_eq!(h.state(""), json!({"reported": {"keep": 1}}));
}

#[test]
fn malformed_updates_are_refused_with_the_aws_errors_and_change_nothing() {
    let mut h = Harness::new();
    accepted(&h.update("", json!({"state": {"reported": {"keep": 1}}})));
    let before = h.doc("").unwrap();
    let table: &[(&[u8], u16)] = &[
        (b"not json", 400),
        (b"{\"state\": {\"reported\": {\"a\": [null]}}}", 400),
        (b"{\"state\": {\"reported\": {\"a\": 1}}, \"clientToken\": \"0123456789012345678901234567890123456789012345678901234567890123456789\"}", 400),
        (b"{\"state\": \"x\"}", 400),
        (b"{\"state\": {\"reported\": \"\xff\"}}", 415),
    ];
    for (payload, code) in table {
        assert_eq!(
            rejected(&h.update_raw("", payload)).0,
            *code,
            "{}",
            String::from_utf8_lossy(payload)
        );
        assert_eq!(h.doc("").unwrap(), before);
    }
}

#[test]
fn schemas_reject_with_the_failing_path_and_change_nothing() {
    let mut h = Harness::new().with_type(json!({
        "name": "Thermostat",
        "schemas": {
            "reported": {"type": "object", "properties": {"temp": {"type": "number"}}},
            "desired": {"type": "object", "properties": {"mode": {"enum": ["heat", "cool"]}}},
            "telemetry": {"type": "object", "properties": {"temp": {"type": "number"}}, "required": ["temp"]}
        }
    }));
    accepted(&h.update(
        "",
        json!({"state": {"reported": {"temp": 20}, "desired": {"mode": "heat"}}}),
    ));
    let before = h.doc("").unwrap();

    let (code, message) = rejected(&h.update("", json!({"state": {"reported": {"temp": "hot"}}})));
    assert_eq!(code, 400);
    assert!(message.starts_with("reported/temp:"), "{message}");
    let (_, message) = rejected(&h.update("", json!({"state": {"desired": {"mode": "off"}}})));
    assert!(message.starts_with("desired/mode:"), "{message}");
    assert_eq!(h.doc("").unwrap(), before);

    let effects = h.telemetry(json!({"hum": 3}));
    let (code, message) = rejected(&effects);
    assert_eq!((code, reply(&effects).op), (400, Op::Telemetry));
    assert!(message.starts_with("telemetry:"), "{message}");
    assert!(
        !effects
            .iter()
            .any(|e| matches!(e, Effect::Telemetry { .. })),
        "an invalid sample is not recorded"
    );
    assert_eq!(h.doc("").unwrap(), before);
}

#[test]
fn named_shadows_are_independent() {
    let mut h = Harness::new();
    accepted(&h.update("", json!({"state": {"reported": {"a": 1}}})));
    assert_eq!(
        accepted(&h.update("config", json!({"state": {"desired": {"rate": 5}}})))["version"],
        1
    );
    assert_eq!(
        accepted(&h.update("config", json!({"state": {"desired": {"rate": 6}}})))["version"],
        2
    );
    assert_eq!(h.doc("").unwrap()["version"], 1, "classic untouched");
    assert_eq!(h.state("config")["desired"], json!({"rate": 6}));
    let missing = h.get("other");
    assert_eq!(
        missing.outcome.unwrap_err().message,
        "No shadow exists with name: other"
    );
    let mut fresh = Harness::new();
    assert_eq!(
        fresh.get("").outcome.unwrap_err().message,
        "No shadow exists with name: pump-7"
    );
}

#[test]
fn named_shadows_per_twin_are_bounded() {
    let mut h = Harness::new();
    h.limits.max_named_shadows = 2;
    accepted(&h.update("a", json!({"state": {"reported": {"x": 1}}})));
    accepted(&h.update("b", json!({"state": {"reported": {"x": 1}}})));
    assert_eq!(
        rejected(&h.update("c", json!({"state": {"reported": {"x": 1}}}))).0,
        400
    );
    accepted(&h.update("", json!({"state": {"reported": {"x": 1}}})));
    accepted(&h.update("a", json!({"state": {"reported": {"x": 2}}})));
}

#[test]
fn delete_removes_the_shadow_and_versions_continue_for_48_hours() {
    let mut h = Harness::new();
    assert_eq!(rejected(&h.delete("", b"")).0, 404);
    accepted(&h.update("", json!({"state": {"reported": {"a": 1}}})));
    accepted(&h.update("", json!({"state": {"reported": {"a": 2}}})));
    let r = accepted(&h.delete("", br#"{"clientToken": "d1"}"#));
    assert_eq!(
        r,
        json!({"version": 2, "timestamp": T0 / 1000, "clientToken": "d1"})
    );
    assert!(h.doc("").is_none());
    assert_eq!(rejected(&h.delete("", b"")).0, 404);
    // Recreated: the version follows the deleted one (the deletion took version 3).
    assert_eq!(
        accepted(&h.update("", json!({"state": {"reported": {"b": 1}}})))["version"],
        4
    );
    assert_eq!(
        h.state(""),
        json!({"reported": {"b": 1}}),
        "nothing of the old document survives"
    );
    accepted(&h.delete("", b""));
    h.now += 49 * 3600 * 1000;
    assert_eq!(
        accepted(&h.update("", json!({"state": {"reported": {"c": 1}}})))["version"],
        1
    );
}

#[test]
fn delete_checks_the_version() {
    let mut h = Harness::new();
    accepted(&h.update("", json!({"state": {"reported": {"a": 1}}})));
    assert_eq!(rejected(&h.delete("", br#"{"version": 7}"#)).0, 409);
    assert!(h.doc("").is_some());
    accepted(&h.delete("", br#"{"version": 1}"#));
}

#[test]
fn a_repeated_client_token_gets_the_original_reply_and_applies_once() {
    let mut h = Harness::new();
    let first = h.update(
        "",
        json!({"state": {"desired": {"n": 1}}, "clientToken": "retry-1"}),
    );
    h.now += 1_000;
    let again = h.update(
        "",
        json!({"state": {"desired": {"n": 1}}, "clientToken": "retry-1"}),
    );
    assert_eq!(
        reply(&again).payload,
        reply(&first).payload,
        "byte-identical original reply"
    );
    assert!(reply(&again).duplicate);
    assert_eq!(
        again.len(),
        1,
        "no notices, no change event for a duplicate"
    );
    assert_eq!(h.doc("").unwrap()["version"], 1);

    // A version-checked retry would otherwise conflict; it gets the original answer.
    let first = h.update(
        "",
        json!({"state": {"desired": {"n": 2}}, "version": 1, "clientToken": "retry-2"}),
    );
    let again = h.update(
        "",
        json!({"state": {"desired": {"n": 2}}, "version": 1, "clientToken": "retry-2"}),
    );
    assert_eq!(reply(&again).payload, reply(&first).payload);

    // Outside the window the token is new again.
    h.now += h.limits.token_ttl_ms + 1;
    let later = h.update(
        "",
        json!({"state": {"desired": {"n": 1}}, "clientToken": "retry-1"}),
    );
    assert!(!reply(&later).duplicate);
    assert_eq!(accepted(&later)["version"], 3);
}

#[test]
fn the_client_token_window_is_bounded() {
    let mut h = Harness::new();
    h.limits.token_window = 3;
    for i in 0..5 {
        accepted(&h.update(
            "",
            json!({"state": {"desired": {"n": i}}, "clientToken": format!("t{i}")}),
        ));
    }
    assert!(
        reply(&h.update(
            "",
            json!({"state": {"desired": {"n": 4}}, "clientToken": "t4"})
        ))
        .duplicate
    );
    assert!(
        !reply(&h.update(
            "",
            json!({"state": {"desired": {"n": 0}}, "clientToken": "t0"})
        ))
        .duplicate
    );
}

#[test]
fn a_repeated_delete_gets_the_original_reply() {
    let mut h = Harness::new();
    accepted(&h.update("", json!({"state": {"reported": {"a": 1}}})));
    let first = h.delete("", br#"{"clientToken": "del"}"#);
    let again = h.delete("", br#"{"clientToken": "del"}"#);
    assert!(reply(&again).duplicate);
    assert_eq!(reply(&again).payload, reply(&first).payload);
}

#[test]
fn retries_are_recognised_after_a_restart() {
    let mut h = Harness::new();
    let first = h.update(
        "",
        json!({"state": {"reported": {"a": 1}}, "clientToken": "persisted"}),
    );
    h.twin = Twin::decode(h.twin.thing().clone(), &h.twin.encode()).unwrap();
    let again = h.update(
        "",
        json!({"state": {"reported": {"a": 1}}, "clientToken": "persisted"}),
    );
    assert!(reply(&again).duplicate);
    assert_eq!(reply(&again).payload, reply(&first).payload);
}

#[test]
fn documents_hold_previous_and_current() {
    let mut h = Harness::new();
    h.documents = true;
    let effects = h.update("", json!({"state": {"reported": {"a": 1}}}));
    let docs = documents_notice(&effects).unwrap();
    assert!(
        docs.get("previous").is_none(),
        "no previous document for a new shadow"
    );
    assert_eq!(docs["current"]["state"], json!({"reported": {"a": 1}}));
    assert_eq!(docs["current"]["version"], 1);

    let effects = h.update(
        "",
        json!({"state": {"reported": {"a": 2}, "desired": {"b": 1}}, "clientToken": "c"}),
    );
    let docs = documents_notice(&effects).unwrap();
    assert_eq!(docs["previous"]["state"], json!({"reported": {"a": 1}}));
    assert_eq!(docs["previous"]["version"], 1);
    assert_eq!(
        docs["current"]["state"],
        json!({"desired": {"b": 1}, "reported": {"a": 2}})
    );
    assert_eq!(
        docs["current"]["metadata"]["desired"]["b"]["timestamp"],
        T0 / 1000
    );
    assert_eq!(docs["clientToken"], "c");

    h.documents = false;
    assert!(documents_notice(&h.update("", json!({"state": {"reported": {"a": 3}}}))).is_none());
}

#[test]
fn change_events_describe_what_was_applied() {
    let mut h = Harness::new();
    let effects = h.update("", json!({"state": {"desired": {"a": 1, "b": null}}}));
    let c = change(&effects).unwrap();
    assert_eq!((c.thing.as_str(), c.version, c.ts), ("pump-7", 1, T0));
    assert_eq!(c.desired, Some(json!({"a": 1, "b": null})));
    assert_eq!(c.reported, None);
    assert_eq!(c.delta, Some(json!({"a": 1})));
    let effects = h.update("", json!({"state": {"desired": null}}));
    assert_eq!(change(&effects).unwrap().desired, Some(Value::Null));
    assert_eq!(change(&effects).unwrap().delta, None);
    let effects = h.delete("", b"");
    let c = change(&effects).unwrap();
    assert!(c.deleted);
    assert_eq!(c.version, 3, "a deletion has its own, higher version");
    assert!(
        change(&h.update_raw("", b"{")).is_none(),
        "no change event for a rejection"
    );
}

#[test]
fn rejected_payloads_have_the_aws_shape() {
    let mut h = Harness::new();
    let effects = h.update_raw("", br#"{"clientToken": "abc"}"#);
    assert_eq!(
        support::json(&reply(&effects).payload),
        json!({"code": 400, "message": "Missing required node: state", "timestamp": T0 / 1000, "clientToken": "abc"})
    );
}

#[test]
fn twins_survive_encoding() {
    let mut h = Harness::new();
    accepted(&h.update("", json!({"state": {"desired": {"a": [1, {"b": "c"}]}, "reported": {"f": 1.5, "u": u64::MAX}}, "clientToken": "t"})));
    accepted(&h.update("named", json!({"state": {"reported": {"x": true}}})));
    h.telemetry(json!({"ts": T0 + 5, "temp": 21}));
    let decoded = Twin::decode(h.twin.thing().clone(), &h.twin.encode()).unwrap();
    let mut original = h.twin.clone();
    original.take_dirty();
    assert_eq!(decoded, original);
    assert!(Twin::decode(h.twin.thing().clone(), &[9, 1, 2]).is_err());
    assert!(Twin::decode(h.twin.thing().clone(), &[]).is_err());
    assert!(Twin::decode(h.twin.thing().clone(), &[1, 200, 200, 200]).is_err());
}

#[test]
fn commands_refused_before_a_twin_get_an_aws_rejection() {
    let update = twin_core::request::parse_update(
        shadow("cfg"),
        br#"{"state": {"reported": {"a": 1}}, "clientToken": "tok"}"#,
        &Limits::default(),
    )
    .unwrap();
    let command = twin_core::Command::Update(update);
    let reply = command.refuse(twin_core::ShadowError::thing_not_found(), T0);
    assert_eq!((reply.op, reply.shadow.name()), (Op::Update, Some("cfg")));
    assert_eq!(
        support::json(&reply.payload),
        json!({"code": 404, "message": "Thing not found", "timestamp": T0 / 1000, "clientToken": "tok"})
    );
}
