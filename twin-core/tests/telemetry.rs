//! Telemetry through the twin: samples are recorded, chosen fields merge into `reported`, and
//! the last writer by device time wins per field, so redelivered or reordered samples never roll
//! state back.

mod support;

use serde_json::{Value, json};
use support::*;
use twin_core::Effect;

fn recorded(effects: &[Effect]) -> Option<(u64, Value)> {
    effects.iter().find_map(|e| match e {
        Effect::Telemetry { ts, values, .. } => Some((*ts, Value::Object(values.clone()))),
        _ => None,
    })
}

#[test]
fn samples_merge_into_reported_and_are_recorded() {
    let mut h = Harness::new();
    let effects = h.telemetry(json!({"ts": T0 - 10, "temp": 21.5, "hum": 40}));
    assert_eq!(
        recorded(&effects),
        Some((T0 - 10, json!({"temp": 21.5, "hum": 40})))
    );
    assert_eq!(h.state(""), json!({"reported": {"temp": 21.5, "hum": 40}}));
    let c = change(&effects).unwrap();
    assert_eq!(
        (c.version, c.reported.clone()),
        (1, Some(json!({"temp": 21.5, "hum": 40})))
    );
}

#[test]
fn a_sample_without_ts_takes_server_time() {
    let mut h = Harness::new();
    let effects = h.telemetry(json!({"temp": 1}));
    assert_eq!(recorded(&effects).unwrap().0, T0);
    // A device clock behind the server cannot overwrite it.
    h.telemetry(json!({"ts": T0 - 1, "temp": 2}));
    assert_eq!(h.state("")["reported"]["temp"], 1);
}

#[test]
fn an_older_sample_never_rolls_a_field_back() {
    let mut h = Harness::new();
    h.telemetry(json!({"ts": T0 + 200, "temp": 25, "hum": 50}));
    let effects = h.telemetry(json!({"ts": T0 + 100, "temp": 20, "door": "open"}));
    assert_eq!(
        h.state("")["reported"],
        json!({"temp": 25, "hum": 50, "door": "open"}),
        "per field: new fields still apply"
    );
    assert_eq!(
        change(&effects).unwrap().reported,
        Some(json!({"door": "open"})),
        "the change lists only what applied"
    );
    assert!(
        recorded(&effects).is_some(),
        "history still records the late sample"
    );
}

#[test]
fn a_redelivered_sample_is_applied_once() {
    let mut h = Harness::new();
    let sample = json!({"ts": T0 + 5, "temp": 22});
    h.telemetry(sample.clone());
    let effects = h.telemetry(sample);
    assert!(change(&effects).is_none());
    assert_eq!(h.doc("").unwrap()["version"], 1);
}

#[test]
fn reordered_samples_end_at_the_newest_values() {
    let samples: Vec<Value> = (0..6)
        .map(|i| json!({"ts": T0 + i * 10, "temp": i, "seq": i}))
        .collect();
    for order in [[0, 1, 2, 3, 4, 5], [5, 4, 3, 2, 1, 0], [2, 5, 0, 3, 1, 4]] {
        let mut h = Harness::new();
        for i in order {
            h.telemetry(samples[i].clone());
        }
        assert_eq!(
            h.state("")["reported"],
            json!({"temp": 5, "seq": 5}),
            "{order:?}"
        );
    }
}

#[test]
fn same_values_with_a_newer_time_keep_the_version_but_guard_against_older_samples() {
    let mut h = Harness::new();
    h.telemetry(json!({"ts": T0 + 10, "temp": 1}));
    h.twin.take_dirty();
    let effects = h.telemetry(json!({"ts": T0 + 30, "temp": 1}));
    assert!(change(&effects).is_none());
    assert!(h.twin.take_dirty(), "the newer device time is persisted");
    h.telemetry(json!({"ts": T0 + 20, "temp": 9}));
    assert_eq!(h.state("")["reported"]["temp"], 1);
    assert_eq!(h.doc("").unwrap()["version"], 1);
}

#[test]
fn a_shadow_update_is_overwritten_by_the_next_sample() {
    let mut h = Harness::new();
    h.telemetry(json!({"ts": T0 + 10, "temp": 1}));
    accepted(&h.update("", json!({"state": {"reported": {"temp": 5}}})));
    h.telemetry(json!({"ts": T0 + 5, "temp": 2}));
    assert_eq!(
        h.state("")["reported"]["temp"],
        2,
        "shadow updates carry no device time"
    );
}

#[test]
fn the_type_mapping_chooses_reported_fields() {
    let mut h = Harness::new()
        .with_type(json!({"name": "Meter", "telemetry_to_reported": {"fields": ["kwh"]}}));
    let effects = h.telemetry(json!({"kwh": 7, "volts": 230}));
    assert_eq!(h.state("")["reported"], json!({"kwh": 7}));
    assert_eq!(
        recorded(&effects).unwrap().1,
        json!({"kwh": 7, "volts": 230})
    );

    let mut h =
        Harness::new().with_type(json!({"name": "Quiet", "telemetry_to_reported": {"fields": []}}));
    let effects = h.telemetry(json!({"kwh": 7}));
    assert!(recorded(&effects).is_some());
    assert!(h.doc("").is_none(), "no field maps: no shadow");
}

#[test]
fn samples_that_would_break_reported_limits_leave_it_unchanged() {
    let mut h = Harness::new();
    h.telemetry(json!({"ok": 1}));
    let before = h.doc("").unwrap();
    let effects = h.telemetry(json!({"big": "x".repeat(9000)}));
    assert_eq!(rejected(&effects).0, 413);
    assert!(
        recorded(&effects).is_none(),
        "a refused sample is not recorded"
    );
    let effects = h.telemetry(json!({"deep": {"a": {"b": {"c": {"d": {"e": {"f": 1}}}}}}}));
    assert_eq!(rejected(&effects).0, 400);
    assert!(recorded(&effects).is_none());
    let effects = h.telemetry(json!({"arr": [1, null]}));
    assert_eq!(rejected(&effects).0, 400);
    assert!(recorded(&effects).is_none());
    assert_eq!(h.doc("").unwrap(), before);
}

#[test]
fn samples_over_the_sample_limit_are_refused_whole() {
    let mut h = Harness::new()
        .with_type(json!({"name": "Logger", "telemetry_to_reported": {"fields": ["small"]}}));
    let effects = h.telemetry(json!({"small": 1, "blob": "x".repeat(20_000)}));
    let (code, message) = rejected(&effects);
    assert_eq!(code, 413);
    assert!(message.contains("16384 bytes"), "{message}");
    assert!(recorded(&effects).is_none());
    assert!(h.doc("").is_none(), "nothing merged");
    // Within the limit it is recorded, and its stored form is what was measured.
    let effects = h.telemetry(json!({"small": 1, "blob": "x".repeat(16_000)}));
    let stored = effects.iter().find_map(|e| match e {
        Effect::Telemetry { json, .. } => Some(json.len()),
        _ => None,
    });
    assert!(stored.is_some_and(|n| n <= 16 * 1024), "{stored:?}");
}

#[test]
fn device_times_ahead_of_the_clock_are_refused() {
    let mut h = Harness::new();
    // Five minutes of skew are allowed by default.
    h.telemetry(json!({"ts": T0 + 299_000, "temp": 1}));
    assert_eq!(h.state("")["reported"]["temp"], 1);
    for ts in [T0 + 301_000, 253_402_300_799_999, 10_000_000_000_000_000] {
        let effects = h.telemetry(json!({"ts": ts, "temp": 999}));
        let (code, message) = rejected(&effects);
        assert_eq!(code, 400, "ts {ts}");
        assert!(message.contains("ahead of the server's clock"), "{message}");
        assert!(recorded(&effects).is_none());
    }
    assert_eq!(
        h.state("")["reported"]["temp"],
        1,
        "no sample froze the field"
    );
    // Before the epoch is not a time at all.
    let before_epoch = twin_core::Sample::parse(br#"{"ts": -5, "temp": 2}"#).unwrap_err();
    assert_eq!(before_epoch.code, 400);
    // The next newer sample still applies.
    h.telemetry(json!({"ts": T0 + 300_000, "temp": 3}));
    assert_eq!(h.state("")["reported"]["temp"], 3);
}

#[test]
fn telemetry_changing_the_delta_publishes_it() {
    let mut h = Harness::new();
    accepted(&h.update("", json!({"state": {"desired": {"fan": "on", "temp": 20}}})));
    let effects = h.telemetry(json!({"fan": "on"}));
    assert_eq!(
        delta_notice(&effects).unwrap()["state"],
        json!({"temp": 20})
    );
    let effects = h.telemetry(json!({"hum": 3}));
    assert!(delta_notice(&effects).is_none());
}
