//! The state tree of one shadow section (`desired` or `reported`): a JSON object kept as sorted
//! key/node vectors whose leaves carry the time they were set. Compact enough to keep a million
//! twins resident, and the single place where merge, last-writer-wins and delta are defined.
//!
//! Invariants: keys are sorted and unique; no object node is empty (an object emptied by a merge
//! is removed); leaves are never `null`; arrays never contain `null`.

use serde::{
    Deserialize, Serialize, Serializer,
    ser::{SerializeMap, SerializeSeq},
};
use serde_json::{Map, Value};
use std::io;

/// When a leaf was last set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    /// Server time, epoch milliseconds, of the change that set the leaf.
    pub at: u64,
    /// Device time, epoch milliseconds, of the telemetry sample that set the leaf; 0 when a
    /// shadow update set it. Telemetry only overwrites a leaf whose device time is not newer.
    pub device: u64,
}

/// A leaf value: any JSON value but `null` and objects. Numbers compare by value (`1 == 1.0`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Scalar {
    /// `true` / `false`.
    Bool(bool),
    /// An integer that fits `i64`.
    Int(i64),
    /// A positive integer above `i64::MAX`.
    UInt(u64),
    /// Any other number.
    Float(f64),
    /// A string.
    Str(Box<str>),
    /// An array, replaced and compared as a whole.
    Array(#[serde(with = "json_text")] Box<[Value]>),
}

/// Arrays are stored as JSON text so that the binary record format needs no self-describing
/// value type.
mod json_text {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};
    use serde_json::Value;

    pub fn serialize<S: Serializer>(items: &[Value], s: S) -> Result<S::Ok, S::Error> {
        let text = serde_json::to_string(items).map_err(serde::ser::Error::custom)?;
        s.serialize_str(&text)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Box<[Value]>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        serde_json::from_str::<Vec<Value>>(&text)
            .map(Vec::into_boxed_slice)
            .map_err(D::Error::custom)
    }
}

impl Scalar {
    /// The leaf for `value`; `None` for `null` and objects.
    pub fn from_json(value: &Value) -> Option<Scalar> {
        Some(match value {
            Value::Null | Value::Object(_) => return None,
            Value::Bool(b) => Scalar::Bool(*b),
            Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Scalar::Int(i)
                } else if let Some(u) = n.as_u64() {
                    Scalar::UInt(u)
                } else {
                    Scalar::Float(n.as_f64().unwrap_or_default())
                }
            }
            Value::String(s) => Scalar::Str(s.as_str().into()),
            Value::Array(items) => Scalar::Array(items.clone().into_boxed_slice()),
        })
    }

    /// The leaf as a JSON value.
    pub fn to_json(&self) -> Value {
        match self {
            Scalar::Bool(b) => Value::Bool(*b),
            Scalar::Int(i) => Value::from(*i),
            Scalar::UInt(u) => Value::from(*u),
            Scalar::Float(f) => Value::from(*f),
            Scalar::Str(s) => Value::String(s.to_string()),
            Scalar::Array(items) => Value::Array(items.to_vec()),
        }
    }

    /// The leaf as a number, if it is one.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Scalar::Int(i) => Some(*i as f64),
            Scalar::UInt(u) => Some(*u as f64),
            Scalar::Float(f) => Some(*f),
            _ => None,
        }
    }
}

fn int_eq_float(i: i128, f: f64) -> bool {
    f.fract() == 0.0 && f as i128 == i
}

impl PartialEq for Scalar {
    fn eq(&self, other: &Self) -> bool {
        use Scalar::*;
        match (self, other) {
            (Bool(a), Bool(b)) => a == b,
            (Int(a), Int(b)) => a == b,
            (UInt(a), UInt(b)) => a == b,
            (Int(_), UInt(_)) | (UInt(_), Int(_)) => false,
            (Float(a), Float(b)) => a == b,
            (Int(i), Float(f)) | (Float(f), Int(i)) => int_eq_float(i128::from(*i), *f),
            (UInt(u), Float(f)) | (Float(f), UInt(u)) => int_eq_float(i128::from(*u), *f),
            (Str(a), Str(b)) => a == b,
            (Array(a), Array(b)) => a.len() == b.len() && a.iter().zip(b.iter()).all(json_eq),
            _ => false,
        }
    }
}

/// JSON equality where numbers compare by value, so `1` equals `1.0`.
pub fn json_eq((a, b): (&Value, &Value)) -> bool {
    match (a, b) {
        (Value::Number(_), Value::Number(_)) => Scalar::from_json(a) == Scalar::from_json(b),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y.iter()).all(json_eq)
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq((v, w))))
        }
        _ => a == b,
    }
}

/// A node of the tree.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Node {
    /// A non-empty object.
    Object(Section),
    /// A value and when it was set.
    Leaf(Scalar, Stamp),
}

/// A JSON object whose leaves carry stamps.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Section {
    entries: Vec<(Box<str>, Node)>,
}

/// What a last-writer-wins merge did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LwwOutcome {
    /// Some value changed.
    pub changed: bool,
    /// Some leaf kept its value but took a newer stamp.
    pub restamped: bool,
}

impl Section {
    /// A section holding `fields`, every leaf stamped `stamp`.
    pub fn from_fields(fields: &Map<String, Value>, stamp: Stamp) -> Section {
        let mut section = Section::default();
        section.merge(fields, stamp);
        section
    }

    /// Whether the section has no keys.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The keys and nodes, sorted by key.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &Node)> {
        self.entries.iter().map(|(k, n)| (&**k, n))
    }

    /// The node under `key`.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.position(key).ok().map(|i| &self.entries[i].1)
    }

    /// The node at a path of keys.
    pub fn get_path<'a>(&self, path: impl IntoIterator<Item = &'a str>) -> Option<&Node> {
        let mut path = path.into_iter();
        let mut node = self.get(path.next()?)?;
        for key in path {
            match node {
                Node::Object(section) => node = section.get(key)?,
                Node::Leaf(..) => return None,
            }
        }
        Some(node)
    }

    fn position(&self, key: &str) -> Result<usize, usize> {
        self.entries.binary_search_by(|(k, _)| (**k).cmp(key))
    }

    fn put(&mut self, pos: Result<usize, usize>, key: &str, node: Option<Node>) {
        match (pos, node) {
            (Ok(i), Some(node)) => self.entries[i].1 = node,
            (Ok(i), None) => {
                self.entries.remove(i);
            }
            (Err(i), Some(node)) => self.entries.insert(i, (key.into(), node)),
            (Err(_), None) => {}
        }
    }

    /// Merges `patch` the AWS way: objects merge key by key, scalars and arrays replace, `null`
    /// deletes. Every leaf the patch sets takes `stamp`. Objects left empty are removed.
    pub fn merge(&mut self, patch: &Map<String, Value>, stamp: Stamp) {
        for (key, value) in patch {
            let pos = self.position(key);
            let node = match value {
                Value::Null => None,
                Value::Object(fields) => {
                    let mut child = match pos.ok().map(|i| &mut self.entries[i].1) {
                        Some(Node::Object(existing)) => std::mem::take(existing),
                        _ => Section::default(),
                    };
                    child.merge(fields, stamp);
                    (!child.is_empty()).then_some(Node::Object(child))
                }
                leaf => Scalar::from_json(leaf).map(|s| Node::Leaf(s, stamp)),
            };
            self.put(pos, key, node);
        }
    }

    /// The newest device time of any leaf below.
    fn newest_device_time(&self) -> u64 {
        self.entries
            .iter()
            .map(|(_, node)| match node {
                Node::Object(section) => section.newest_device_time(),
                Node::Leaf(_, stamp) => stamp.device,
            })
            .max()
            .unwrap_or(0)
    }

    /// Merges a telemetry `patch` set at device time `stamp.device`, last writer wins per leaf:
    /// a leaf (or subtree) whose device time is newer than the sample's is kept. `null` fields
    /// are ignored. The fields that changed a value are copied into `applied`.
    pub fn merge_newer<'a>(
        &mut self,
        patch: impl IntoIterator<Item = (&'a String, &'a Value)>,
        stamp: Stamp,
        applied: &mut Map<String, Value>,
    ) -> LwwOutcome {
        let mut outcome = LwwOutcome::default();
        for (key, value) in patch {
            if value.is_null() {
                continue;
            }
            let pos = self.position(key);
            let existing = pos.ok().map(|i| &mut self.entries[i].1);
            match (existing, value) {
                (Some(Node::Object(section)), Value::Object(fields)) => {
                    let mut sub = Map::new();
                    let o = section.merge_newer(fields, stamp, &mut sub);
                    outcome.changed |= o.changed;
                    outcome.restamped |= o.restamped;
                    if !sub.is_empty() {
                        applied.insert(key.clone(), Value::Object(sub));
                    }
                }
                (Some(Node::Leaf(old, old_stamp)), leaf) if !leaf.is_object() => {
                    if old_stamp.device > stamp.device {
                        continue;
                    }
                    let Some(new) = Scalar::from_json(leaf) else {
                        continue;
                    };
                    if *old == new {
                        // Equal by value; the newer spelling (`2` after `2.0`) is kept.
                        *old = new;
                        if *old_stamp != stamp {
                            *old_stamp = stamp;
                            outcome.restamped = true;
                        }
                    } else {
                        *old = new;
                        *old_stamp = stamp;
                        outcome.changed = true;
                        applied.insert(key.clone(), leaf.clone());
                    }
                }
                (existing, value) => {
                    // A new key, or a leaf replaced by an object or the other way round.
                    let newest = match existing {
                        Some(Node::Object(section)) => section.newest_device_time(),
                        Some(Node::Leaf(_, s)) => s.device,
                        None => 0,
                    };
                    if newest > stamp.device {
                        continue;
                    }
                    let node = match value {
                        Value::Object(fields) => {
                            let child = Section::from_fields(fields, stamp);
                            (!child.is_empty()).then_some(Node::Object(child))
                        }
                        leaf => Scalar::from_json(leaf).map(|s| Node::Leaf(s, stamp)),
                    };
                    if let Some(node) = node {
                        let mut echo = Map::new();
                        node_to_json_into(&node, key, &mut echo);
                        applied.extend(echo);
                        self.put(pos, key, Some(node));
                        outcome.changed = true;
                    }
                }
            }
        }
        outcome
    }

    /// The AWS delta: the part of `desired` whose values differ from `reported` (a key missing
    /// from `reported` differs), nested objects compared key by key, arrays as whole values.
    /// Leaves keep their desired stamps.
    pub fn delta(desired: &Section, reported: &Section) -> Section {
        let mut entries = Vec::new();
        for (key, wanted) in &desired.entries {
            match (wanted, reported.get(key)) {
                (Node::Object(d), Some(Node::Object(r))) => {
                    let sub = Section::delta(d, r);
                    if !sub.is_empty() {
                        entries.push((key.clone(), Node::Object(sub)));
                    }
                }
                (Node::Leaf(d, _), Some(Node::Leaf(r, _))) if d == r => {}
                _ => entries.push((key.clone(), wanted.clone())),
            }
        }
        Section { entries }
    }

    /// Whether both sections hold the same values, stamps aside.
    pub fn same_values(&self, other: &Section) -> bool {
        self.entries.len() == other.entries.len()
            && self
                .entries
                .iter()
                .zip(&other.entries)
                .all(|((ka, a), (kb, b))| {
                    ka == kb
                        && match (a, b) {
                            (Node::Object(x), Node::Object(y)) => x.same_values(y),
                            (Node::Leaf(x, _), Node::Leaf(y, _)) => x == y,
                            _ => false,
                        }
                })
    }

    /// The values as a JSON object.
    pub fn to_json(&self) -> Value {
        let mut map = Map::new();
        for (key, node) in &self.entries {
            node_to_json_into(node, key, &mut map);
        }
        Value::Object(map)
    }

    /// A serializable view of the values.
    pub fn values(&self) -> Values<'_> {
        Values(self)
    }

    /// A serializable view of the AWS metadata: `{"key": {"timestamp": seconds}}` per leaf.
    pub fn metadata(&self) -> Metadata<'_> {
        Metadata(self)
    }

    /// Length in bytes of the values as compact JSON.
    pub fn json_len(&self) -> usize {
        json_len(&self.values())
    }

    /// How many levels of objects and arrays the section nests, itself included.
    pub fn depth(&self) -> usize {
        1 + self
            .entries
            .iter()
            .map(|(_, node)| match node {
                Node::Object(section) => section.depth(),
                Node::Leaf(Scalar::Array(items), _) => {
                    1 + items.iter().map(depth).max().unwrap_or(0)
                }
                Node::Leaf(..) => 0,
            })
            .max()
            .unwrap_or(0)
    }
}

fn node_to_json_into(node: &Node, key: &str, map: &mut Map<String, Value>) {
    let value = match node {
        Node::Object(section) => section.to_json(),
        Node::Leaf(scalar, _) => scalar.to_json(),
    };
    map.insert(key.to_owned(), value);
}

/// How many levels of objects and arrays `value` nests (0 for a scalar).
pub fn depth(value: &Value) -> usize {
    match value {
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Whether some array inside `value` holds `null`.
pub fn has_null_in_array(value: &Value) -> bool {
    match value {
        Value::Object(map) => map.values().any(has_null_in_array),
        Value::Array(items) => items.iter().any(|v| v.is_null() || has_null_in_array(v)),
        _ => false,
    }
}

/// Length of `value` serialized as compact JSON, without building the text.
pub fn json_len<T: Serialize + ?Sized>(value: &T) -> usize {
    struct Count(usize);
    impl io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Serializing tree views into a counter cannot fail: no I/O and no non-string map keys.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

/// Serializes a section's values as a JSON object.
#[derive(Clone, Copy, Debug)]
pub struct Values<'a>(&'a Section);

impl Serialize for Values<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.entries.len()))?;
        for (key, node) in &self.0.entries {
            match node {
                Node::Object(section) => map.serialize_entry(&**key, &Values(section))?,
                Node::Leaf(scalar, _) => map.serialize_entry(&**key, &ScalarJson(scalar))?,
            }
        }
        map.end()
    }
}

struct ScalarJson<'a>(&'a Scalar);

impl Serialize for ScalarJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Scalar::Bool(b) => s.serialize_bool(*b),
            Scalar::Int(i) => s.serialize_i64(*i),
            Scalar::UInt(u) => s.serialize_u64(*u),
            Scalar::Float(f) => s.serialize_f64(*f),
            Scalar::Str(text) => s.serialize_str(text),
            Scalar::Array(items) => items.serialize(s),
        }
    }
}

/// AWS metadata shape of one leaf: `{"timestamp": seconds}`.
#[derive(Serialize)]
pub(crate) struct Timestamp {
    pub timestamp: u64,
}

/// Serializes a section's metadata: `{"timestamp": seconds}` per leaf, one per element for
/// arrays (as AWS does).
#[derive(Clone, Copy, Debug)]
pub struct Metadata<'a>(&'a Section);

impl Serialize for Metadata<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.entries.len()))?;
        for (key, node) in &self.0.entries {
            match node {
                Node::Object(section) => map.serialize_entry(&**key, &Metadata(section))?,
                Node::Leaf(Scalar::Array(items), stamp) => {
                    map.serialize_entry(&**key, &ArrayStamps(items.len(), stamp.at / 1000))?
                }
                Node::Leaf(_, stamp) => map.serialize_entry(
                    &**key,
                    &Timestamp {
                        timestamp: stamp.at / 1000,
                    },
                )?,
            }
        }
        map.end()
    }
}

struct ArrayStamps(usize, u64);

impl Serialize for ArrayStamps {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0))?;
        for _ in 0..self.0 {
            seq.serialize_element(&Timestamp { timestamp: self.1 })?;
        }
        seq.end()
    }
}

/// Serializes the AWS metadata mirroring a request's `state` part: every key of the request,
/// `null`s included, stamped with `seconds`.
#[derive(Clone, Copy, Debug)]
pub struct RequestMetadata<'a>(pub &'a Value, pub u64);

impl Serialize for RequestMetadata<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Object(fields) => {
                let mut map = s.serialize_map(Some(fields.len()))?;
                for (key, value) in fields {
                    map.serialize_entry(key, &RequestMetadata(value, self.1))?;
                }
                map.end()
            }
            Value::Array(items) => ArrayStamps(items.len(), self.1).serialize(s),
            _ => Timestamp { timestamp: self.1 }.serialize(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    const T1: Stamp = Stamp {
        at: 1_000,
        device: 0,
    };
    const T2: Stamp = Stamp {
        at: 2_000,
        device: 0,
    };

    #[test]
    fn merge_is_recursive_replaces_scalars_and_arrays_and_deletes_nulls() {
        let mut s = Section::from_fields(
            &obj(json!({"a": 1, "n": {"x": 1, "y": 2}, "arr": [1, 2, 3], "gone": true})),
            T1,
        );
        s.merge(
            &obj(json!({"a": "one", "n": {"y": 3}, "arr": [9], "gone": null})),
            T2,
        );
        assert_eq!(
            s.to_json(),
            json!({"a": "one", "n": {"x": 1, "y": 3}, "arr": [9]})
        );
        let Some(Node::Leaf(_, x)) = s.get_path(["n", "x"]) else {
            panic!()
        };
        let Some(Node::Leaf(_, y)) = s.get_path(["n", "y"]) else {
            panic!()
        };
        assert_eq!(
            (x.at, y.at),
            (1_000, 2_000),
            "untouched leaves keep their stamp"
        );
    }

    #[test]
    fn objects_emptied_by_a_merge_disappear() {
        let mut s = Section::from_fields(&obj(json!({"n": {"x": 1}, "k": 1})), T1);
        s.merge(&obj(json!({"n": {"x": null}})), T2);
        assert_eq!(s.to_json(), json!({"k": 1}));
        s.merge(&obj(json!({"e": {}})), T2);
        assert_eq!(s.to_json(), json!({"k": 1}), "an empty object adds nothing");
    }

    #[test]
    fn an_object_replaces_a_scalar_and_a_scalar_replaces_an_object() {
        let mut s = Section::from_fields(&obj(json!({"a": 1, "b": {"c": 1}})), T1);
        s.merge(&obj(json!({"a": {"x": 1}, "b": 2})), T2);
        assert_eq!(s.to_json(), json!({"a": {"x": 1}, "b": 2}));
    }

    #[test]
    fn delta_keeps_full_paths_and_compares_arrays_whole() {
        let desired = Section::from_fields(
            &obj(json!({"n": {"x": 1, "y": 2}, "arr": [1, 2], "same": "s", "missing": 5})),
            T1,
        );
        let reported = Section::from_fields(
            &obj(json!({"n": {"x": 1, "y": 3}, "arr": [1, 2], "same": "s", "extra": 1})),
            T1,
        );
        let delta = Section::delta(&desired, &reported);
        assert_eq!(delta.to_json(), json!({"n": {"y": 2}, "missing": 5}));
        let reported2 = Section::from_fields(&obj(json!({"arr": [2, 1]})), T1);
        assert_eq!(
            Section::delta(
                &Section::from_fields(&obj(json!({"arr": [1, 2]})), T1),
                &reported2
            )
            .to_json(),
            json!({"arr": [1, 2]})
        );
    }

    #[test]
    fn numbers_compare_by_value() {
        let desired = Section::from_fields(&obj(json!({"t": 20, "arr": [1, {"a": 2}]})), T1);
        let reported = Section::from_fields(&obj(json!({"t": 20.0, "arr": [1.0, {"a": 2.0}]})), T1);
        assert!(Section::delta(&desired, &reported).is_empty());
        assert_ne!(Scalar::Int(1), Scalar::Float(1.5));
        assert_ne!(Scalar::Int(1), Scalar::Str("1".into()));
    }

    #[test]
    fn lww_keeps_newer_leaves_and_reports_what_changed() {
        let mut s = Section::default();
        let mut applied = Map::new();
        let o = s.merge_newer(
            &obj(json!({"t": 1, "h": 5})),
            Stamp { at: 1, device: 100 },
            &mut applied,
        );
        assert!(o.changed);
        assert_eq!(Value::Object(applied), json!({"t": 1, "h": 5}));

        let mut applied = Map::new();
        let o = s.merge_newer(
            &obj(json!({"t": 0, "h": 6})),
            Stamp { at: 2, device: 50 },
            &mut applied,
        );
        assert_eq!(o, LwwOutcome::default(), "an older sample changes nothing");
        assert!(applied.is_empty());

        let mut applied = Map::new();
        let o = s.merge_newer(
            &obj(json!({"t": 1, "h": 7, "z": null})),
            Stamp { at: 3, device: 200 },
            &mut applied,
        );
        assert_eq!(
            o,
            LwwOutcome {
                changed: true,
                restamped: true
            }
        );
        assert_eq!(Value::Object(applied), json!({"h": 7}));
        assert_eq!(s.to_json(), json!({"t": 1, "h": 7}));
    }

    #[test]
    fn lww_guards_whole_subtrees() {
        let mut s = Section::default();
        let mut a = Map::new();
        s.merge_newer(
            &obj(json!({"pos": {"x": 1}})),
            Stamp { at: 1, device: 100 },
            &mut a,
        );
        let mut a = Map::new();
        let o = s.merge_newer(&obj(json!({"pos": 5})), Stamp { at: 2, device: 90 }, &mut a);
        assert!(
            !o.changed,
            "a scalar from an older sample must not replace a newer object"
        );
        let o = s.merge_newer(
            &obj(json!({"pos": 5})),
            Stamp { at: 2, device: 110 },
            &mut a,
        );
        assert!(o.changed);
        assert_eq!(s.to_json(), json!({"pos": 5}));
    }

    #[test]
    fn metadata_mirrors_values_with_second_timestamps() {
        let s = Section::from_fields(
            &obj(json!({"a": 1, "n": {"b": 2}, "arr": [1, 2]})),
            Stamp {
                at: 5_999,
                device: 0,
            },
        );
        assert_eq!(
            serde_json::to_value(s.metadata()).unwrap(),
            json!({"a": {"timestamp": 5}, "n": {"b": {"timestamp": 5}}, "arr": [{"timestamp": 5}, {"timestamp": 5}]})
        );
        assert_eq!(serde_json::to_value(s.values()).unwrap(), s.to_json());
    }

    #[test]
    fn json_len_counts_compact_json() {
        let s = Section::from_fields(&obj(json!({"a": "x", "b": [1, 2]})), T1);
        assert_eq!(
            s.json_len(),
            serde_json::to_string(&s.to_json()).unwrap().len()
        );
    }

    #[test]
    fn depth_counts_objects_and_arrays() {
        assert_eq!(depth(&json!({"a": 1})), 1);
        assert_eq!(depth(&json!({"a": {"b": [1]}})), 3);
        let s = Section::from_fields(&obj(json!({"a": {"b": [[1]]}})), T1);
        assert_eq!(s.depth(), 4);
    }

    #[test]
    fn null_inside_arrays_is_found() {
        assert!(has_null_in_array(&json!({"a": [1, null]})));
        assert!(has_null_in_array(&json!({"a": {"b": [[null]]}})));
        assert!(!has_null_in_array(&json!({"a": null, "b": [1]})));
    }

    #[test]
    fn sections_round_trip_through_postcard() {
        let s = Section::from_fields(
            &obj(
                json!({"a": 1, "u": u64::MAX, "f": 1.5, "s": "x", "n": {"arr": [1, {"k": "v"}]}, "b": false}),
            ),
            T1,
        );
        let bytes = postcard::to_allocvec(&s).unwrap();
        let back: Section = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.to_json(), s.to_json());
    }
}
