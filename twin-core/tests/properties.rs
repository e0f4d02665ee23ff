//! Property tests of the shadow invariants: merge agrees with a plain-JSON reference, delta is
//! empty exactly when desired agrees with reported, updates are idempotent apart from the
//! version, rejected updates change nothing, encoding round-trips, and last-writer-wins makes
//! the arrival order of telemetry irrelevant.

mod support;

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use support::*;
use twin_core::{
    Limits, Twin,
    state::{Section, Stamp, json_eq},
};

fn key() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["a", "b", "c", "temp", "mode"]).prop_map(str::to_owned)
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<bool>().prop_map(Value::from),
        (-3i64..3).prop_map(Value::from),
        (-3i64..3).prop_map(|i| Value::from(i as f64)),
        prop::sample::select(vec!["x", "y", ""]).prop_map(Value::from),
        prop::collection::vec((0i64..3).prop_map(Value::from), 0..3).prop_map(Value::Array),
    ]
}

/// Objects as stored state: no nulls.
fn fields(depth: u32) -> impl Strategy<Value = Map<String, Value>> {
    let leaf = scalar();
    let value = leaf.prop_recursive(depth, 24, 4, |inner| {
        prop::collection::btree_map(key(), inner, 1..4)
            .prop_map(|m| Value::Object(m.into_iter().collect()))
    });
    prop::collection::btree_map(key(), value, 0..5).prop_map(|m| m.into_iter().collect())
}

/// Patches: may hold nulls (deletions) and empty objects.
fn patch(depth: u32) -> impl Strategy<Value = Map<String, Value>> {
    let leaf = prop_oneof![4 => scalar(), 1 => Just(Value::Null)];
    let value = leaf.prop_recursive(depth, 24, 4, |inner| {
        prop::collection::btree_map(key(), inner, 0..4)
            .prop_map(|m| Value::Object(m.into_iter().collect()))
    });
    prop::collection::btree_map(key(), value, 0..5).prop_map(|m| m.into_iter().collect())
}

/// Telemetry samples with a stable shape: `pos` is always an object, other fields scalars.
fn sample() -> impl Strategy<Value = Map<String, Value>> {
    let pos = prop::collection::btree_map(
        prop::sample::select(vec!["x", "y"]).prop_map(str::to_owned),
        scalar(),
        1..3,
    )
    .prop_map(|m| Value::Object(m.into_iter().collect()));
    (
        prop::collection::btree_map(key(), scalar(), 0..4),
        prop::option::of(pos),
    )
        .prop_map(|(m, pos)| {
            let mut m: Map<String, Value> = m.into_iter().collect();
            if let Some(pos) = pos {
                m.insert("pos".into(), pos);
            }
            m
        })
}

/// The reference: AWS merge on plain JSON, then empty objects removed.
fn reference_merge(target: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (k, v) in patch {
        match v {
            Value::Null => {
                target.remove(k);
            }
            Value::Object(p) => {
                let mut child = match target.remove(k) {
                    Some(Value::Object(m)) => m,
                    _ => Map::new(),
                };
                reference_merge(&mut child, p);
                if !child.is_empty() {
                    target.insert(k.clone(), Value::Object(child));
                }
            }
            other => {
                target.insert(k.clone(), other.clone());
            }
        }
    }
}

fn leaves(value: &Value, path: &mut Vec<String>, out: &mut Vec<(Vec<String>, Value)>) {
    match value {
        Value::Object(m) => {
            for (k, v) in m {
                path.push(k.clone());
                leaves(v, path, out);
                path.pop();
            }
        }
        v => out.push((path.clone(), v.clone())),
    }
}

fn lookup<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, k| v.get(k))
}

const STAMP: Stamp = Stamp {
    at: 1_000,
    device: 0,
};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn merge_agrees_with_the_reference(start in fields(3), p in patch(3)) {
        let mut section = Section::from_fields(&start, STAMP);
        section.merge(&p, STAMP);
        let mut expected = start.clone();
        reference_merge(&mut expected, &p);
        prop_assert_eq!(section.to_json(), Value::Object(expected));
    }

    #[test]
    fn delta_is_empty_iff_every_desired_leaf_equals_reported(desired in fields(2), reported in fields(2)) {
        let d = Section::from_fields(&desired, STAMP);
        let r = Section::from_fields(&reported, STAMP);
        let mut desired_leaves = Vec::new();
        leaves(&d.to_json(), &mut Vec::new(), &mut desired_leaves);
        let reported_json = r.to_json();
        let all_equal = desired_leaves
            .iter()
            .all(|(path, v)| lookup(&reported_json, path).is_some_and(|w| !w.is_object() && json_eq((v, w))));
        prop_assert_eq!(Section::delta(&d, &r).is_empty(), all_equal);
    }

    #[test]
    fn reporting_the_delta_empties_it(desired in fields(2), reported in fields(2)) {
        let d = Section::from_fields(&desired, STAMP);
        let mut r = Section::from_fields(&reported, STAMP);
        let Value::Object(delta) = Section::delta(&d, &r).to_json() else { unreachable!() };
        r.merge(&delta, STAMP);
        prop_assert!(Section::delta(&d, &r).is_empty());
    }

    #[test]
    fn the_same_update_twice_equals_once_apart_from_version(start in fields(2), d in patch(2), r in patch(2)) {
        let update = json!({"state": {"desired": d, "reported": r}});
        let mut once = Harness::new();
        once.limits = Limits { max_state_bytes: 64 * 1024, ..Limits::default() };
        once.update("", json!({"state": {"desired": start.clone(), "reported": start}}));
        let mut twice = Harness { twin: once.twin.clone(), limits: once.limits.clone(), ..Harness::new() };
        once.update("", update.clone());
        twice.update("", update.clone());
        twice.update("", update);
        let (a, b) = (once.doc(""), twice.doc(""));
        prop_assert_eq!(a.is_some(), b.is_some());
        if let (Some(mut a), Some(mut b)) = (a, b) {
            prop_assert_eq!(b["version"].as_u64(), a["version"].as_u64().map(|v| v + 1));
            a["version"] = json!(0);
            b["version"] = json!(0);
            prop_assert_eq!(a, b);
        }
    }

    #[test]
    fn rejected_updates_change_nothing_and_versions_count_accepted_ones(
        updates in prop::collection::vec((patch(2), patch(2), prop::option::of(0u64..4)), 1..12)
    ) {
        let mut h = Harness::new();
        h.limits = Limits { max_state_bytes: 120, ..Limits::default() };
        let mut accepted_count = 0u64;
        for (d, r, version) in updates {
            let before = h.twin.encode();
            let mut body = json!({"state": {"desired": d, "reported": r}});
            if let Some(v) = version { body["version"] = json!(v); }
            let effects = h.update("", body);
            match &reply(&effects).outcome {
                Ok(v) => {
                    accepted_count += 1;
                    prop_assert_eq!(*v, accepted_count);
                }
                Err(e) => {
                    prop_assert!(matches!(e.code, 409 | 413), "{:?}", e);
                    prop_assert_eq!(h.twin.encode(), before, "a rejection changes nothing");
                }
            }
            if let Some(doc) = h.doc("") {
                let state = &doc["state"];
                let len = serde_json::to_string(&json!({"desired": state.get("desired"), "reported": state.get("reported")})).unwrap().len();
                prop_assert!(len <= 120 + 40, "state stays within the limit");
            }
        }
    }

    #[test]
    fn twins_round_trip_through_their_encoding(
        updates in prop::collection::vec((patch(3), patch(3), prop::bool::ANY), 0..8)
    ) {
        let mut h = Harness::new();
        for (i, (d, r, named)) in updates.into_iter().enumerate() {
            h.now += 1_000;
            let token = format!("t{i}");
            h.update(if named { "cfg" } else { "" }, json!({"state": {"desired": d, "reported": r}, "clientToken": token}));
        }
        let mut expected = h.twin.clone();
        expected.take_dirty();
        let decoded = Twin::decode(h.twin.thing().clone(), &h.twin.encode()).unwrap();
        prop_assert_eq!(decoded, expected);
    }

    #[test]
    fn telemetry_order_does_not_matter(samples in prop::collection::vec(sample(), 1..6), seed in any::<u64>()) {
        // Distinct device times; arrival order shuffled by the seed.
        let timed: Vec<Value> = samples
            .into_iter()
            .enumerate()
            .map(|(i, mut s)| { s.insert("ts".into(), json!(T0 + 10 * i as u64)); Value::Object(s) })
            .collect();
        let mut shuffled = timed.clone();
        let mut x = seed | 1;
        for i in (1..shuffled.len()).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            shuffled.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let run = |order: &[Value]| {
            let mut h = Harness::new();
            for s in order { h.telemetry(s.clone()); }
            h.state("")
        };
        prop_assert_eq!(run(&timed), run(&shuffled));
    }
}
