//! Rule state a twin keeps and persists with itself: the latest telemetry values its rules
//! read, its children's values, and per rule the lifecycle phase, edge memory, window
//! aggregates, pending commands and firing alerts. Serialised with postcard behind a format
//! byte, like the twin record.

use crate::{
    ast::AlertSeverity,
    ir::{Agg, Val, limits},
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// A stored scalar.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Scalar {
    /// A number.
    Num(f64),
    /// A string.
    Str(String),
    /// A boolean.
    Bool(bool),
}

impl Scalar {
    /// The scalar for a JSON value (`None` for null, objects and arrays).
    pub fn from_json(value: &serde_json::Value) -> Option<Scalar> {
        match value {
            serde_json::Value::Number(n) => n.as_f64().map(Scalar::Num),
            serde_json::Value::String(s) => Some(Scalar::Str(s.clone())),
            serde_json::Value::Bool(b) => Some(Scalar::Bool(*b)),
            _ => None,
        }
    }

    /// Whether the JSON value is this scalar (without building one).
    pub fn same_as(&self, value: &serde_json::Value) -> bool {
        match (self, value) {
            (Scalar::Num(n), serde_json::Value::Number(v)) => v.as_f64() == Some(*n),
            (Scalar::Str(s), serde_json::Value::String(v)) => s == v,
            (Scalar::Bool(b), serde_json::Value::Bool(v)) => b == v,
            _ => false,
        }
    }

    /// As a runtime value.
    pub fn to_val(&self) -> Val {
        match self {
            Scalar::Num(n) => Val::Num(*n),
            Scalar::Str(s) => Val::Str(s.as_str().into()),
            Scalar::Bool(b) => Val::Bool(*b),
        }
    }
}

/// Where a rule is in its lifecycle.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Not firing, condition false.
    #[default]
    Idle,
    /// The condition holds since `since`; it fires once held long enough (and out of cooldown).
    Pending {
        /// Since when.
        since: u64,
    },
    /// Fired at `since`.
    Firing {
        /// When it fired.
        since: u64,
    },
    /// Firing; the clear condition holds since `since`.
    Clearing {
        /// When it fired.
        fired: u64,
        /// Since when the clear condition holds.
        since: u64,
    },
}

impl Phase {
    /// A short name for traces.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Pending { .. } => "pending",
            Phase::Firing { .. } => "firing",
            Phase::Clearing { .. } => "clearing",
        }
    }
}

/// One bucket of a window.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    /// Start of the bucket, ms.
    pub start: u64,
    /// Values in it.
    pub count: u64,
    /// Numbers among them.
    pub numbers: u64,
    /// Their sum.
    pub sum: f64,
    /// The smallest.
    pub min: f64,
    /// The largest.
    pub max: f64,
}

/// A window's running aggregates, in at most [`limits::WINDOW_BUCKETS`] + 1 buckets.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Window {
    /// Oldest first.
    pub buckets: VecDeque<Bucket>,
}

impl Window {
    fn width(over_ms: u64) -> u64 {
        (over_ms / limits::WINDOW_BUCKETS).max(1)
    }

    /// Adds a value seen at `now` (`None`: not a number, counted only).
    pub fn add(&mut self, over_ms: u64, now: u64, value: Option<f64>) {
        let width = Self::width(over_ms);
        let start = now - now % width;
        self.expire(over_ms, now);
        match self.buckets.back_mut() {
            Some(b) if b.start == start => {
                b.count += 1;
                if let Some(value) = value {
                    b.numbers += 1;
                    b.sum += value;
                    b.min = b.min.min(value);
                    b.max = b.max.max(value);
                }
            }
            _ => {
                let number = value.unwrap_or(0.0);
                self.buckets.push_back(Bucket {
                    start,
                    count: 1,
                    numbers: u64::from(value.is_some()),
                    sum: number,
                    min: value.unwrap_or(f64::INFINITY),
                    max: value.unwrap_or(f64::NEG_INFINITY),
                });
                while self.buckets.len() as u64 > limits::WINDOW_BUCKETS + 1 {
                    self.buckets.pop_front();
                }
            }
        }
    }

    /// Drops buckets that start before the window that ends at `now`; whether any went.
    pub fn expire(&mut self, over_ms: u64, now: u64) -> bool {
        let before = self.buckets.len();
        while self
            .buckets
            .front()
            .is_some_and(|b| b.start <= now.saturating_sub(over_ms))
        {
            self.buckets.pop_front();
        }
        self.buckets.len() != before
    }

    /// The aggregate over the window ending at `now` (at bucket resolution).
    pub fn value(&self, agg: Agg, over_ms: u64, now: u64) -> Val {
        // A bucket counts if it starts inside the window: at bucket resolution the window
        // is up to one bucket shorter than asked, never longer.
        let from = now.saturating_sub(over_ms);
        let live = self
            .buckets
            .iter()
            .filter(|b| b.start > from && b.start <= now);
        let (mut count, mut numbers, mut sum, mut min, mut max) =
            (0u64, 0u64, 0.0, f64::INFINITY, f64::NEG_INFINITY);
        for b in live {
            count += b.count;
            numbers += b.numbers;
            sum += b.sum;
            min = min.min(b.min);
            max = max.max(b.max);
        }
        match agg {
            Agg::Count => Val::Num(count as f64),
            Agg::Sum => Val::Num(sum),
            _ if numbers == 0 => Val::Missing,
            Agg::Avg => Val::Num(sum / numbers as f64),
            Agg::Min => Val::Num(min),
            Agg::Max => Val::Num(max),
        }
    }
}

/// A command waiting for its reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingCommand {
    /// The request id sent with it.
    pub request_id: String,
    /// Its name.
    pub name: String,
    /// When it times out.
    pub deadline: u64,
    /// Where its `on timeout` actions are: the block (0 `then`, 1 `on clear`) and the index of
    /// the command in it; `None` for commands sent from an `on timeout` block.
    pub origin: Option<(u8, u16)>,
}

/// An alert a rule raised and has not resolved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FiringAlert {
    /// Its name.
    pub name: String,
    /// Its severity.
    pub severity: AlertSeverity,
    /// Since when.
    pub since: u64,
    /// Its message when raised.
    pub message: String,
}

/// One rule's state in one twin.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RuleState {
    /// The hash of the rule this state belongs to.
    pub hash: u64,
    /// Its lifecycle.
    pub phase: Phase,
    /// It may not fire before this time.
    pub cooldown_until: u64,
    /// The last value of each `rising`/`falling` condition.
    pub edges: Vec<Option<bool>>,
    /// Its windows.
    pub windows: Vec<Window>,
    /// Commands waiting for replies.
    pub commands: Vec<PendingCommand>,
    /// Alerts firing.
    pub alerts: Vec<FiringAlert>,
}

/// Everything rule-related a twin keeps.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TwinRuleState {
    /// The latest value of each telemetry field the rules read, by `a.b` key.
    pub telemetry: BTreeMap<String, Scalar>,
    /// The children's values the rules read: child → `a.b` key → value.
    pub children: BTreeMap<String, BTreeMap<String, Scalar>>,
    /// Per rule, by name.
    pub rules: BTreeMap<String, RuleState>,
    /// The last request id number issued.
    pub seq: u64,
    /// Whether the device is connected to the node (`device.connected`), once known.
    pub connected: Option<bool>,
    /// The twin's latest job execution change (`job.id`, `job.status`), once there was one.
    pub job: Option<(String, String)>,
}

/// The format byte of the encoded state (1: before `connected` and `job`).
const FORMAT: u8 = 2;

/// The state as format 1 stored it.
#[derive(Deserialize)]
struct FormatOne {
    telemetry: BTreeMap<String, Scalar>,
    children: BTreeMap<String, BTreeMap<String, Scalar>>,
    rules: BTreeMap<String, RuleState>,
    seq: u64,
}

impl TwinRuleState {
    /// Whether there is nothing to keep.
    pub fn is_empty(&self) -> bool {
        self.telemetry.is_empty()
            && self.children.is_empty()
            && self.rules.is_empty()
            && self.connected.is_none()
            && self.job.is_none()
    }

    /// The stored form.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![FORMAT];
        // Serialising plain data into a Vec cannot fail.
        out.extend(postcard::to_allocvec(self).unwrap_or_default());
        out
    }

    /// Reads the stored form.
    pub fn decode(bytes: &[u8]) -> Result<Self, crate::RulesError> {
        match bytes.split_first() {
            Some((&FORMAT, rest)) => {
                postcard::from_bytes(rest).map_err(|e| crate::RulesError::State(e.to_string()))
            }
            Some((1, rest)) => postcard::from_bytes::<FormatOne>(rest)
                .map(|old| Self {
                    telemetry: old.telemetry,
                    children: old.children,
                    rules: old.rules,
                    seq: old.seq,
                    connected: None,
                    job: None,
                })
                .map_err(|e| crate::RulesError::State(e.to_string())),
            Some((other, _)) => Err(crate::RulesError::State(format!(
                "unknown rule state format {other}"
            ))),
            None => Ok(Self::default()),
        }
    }

    /// Every firing alert, with its rule.
    pub fn firing(&self) -> impl Iterator<Item = (&str, &FiringAlert)> {
        self.rules
            .iter()
            .flat_map(|(rule, s)| s.alerts.iter().map(move |a| (rule.as_str(), a)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_stored_before_connectivity_still_reads() {
        #[derive(Serialize)]
        struct Old {
            telemetry: BTreeMap<String, Scalar>,
            children: BTreeMap<String, BTreeMap<String, Scalar>>,
            rules: BTreeMap<String, RuleState>,
            seq: u64,
        }
        let old = Old {
            telemetry: BTreeMap::from([("temp".to_owned(), Scalar::Num(21.0))]),
            children: BTreeMap::new(),
            rules: BTreeMap::new(),
            seq: 7,
        };
        let mut bytes = vec![1];
        bytes.extend(postcard::to_allocvec(&old).unwrap());
        let state = TwinRuleState::decode(&bytes).unwrap();
        assert_eq!(state.seq, 7);
        assert_eq!(state.telemetry["temp"], Scalar::Num(21.0));
        assert_eq!(state.connected, None);
        let now = TwinRuleState {
            connected: Some(false),
            ..state
        };
        assert_eq!(TwinRuleState::decode(&now.encode()).unwrap(), now);
    }

    #[test]
    fn windows_aggregate_over_their_length_in_bounded_buckets() {
        let mut w = Window::default();
        let over = 60_000;
        for i in 0..600u64 {
            w.add(over, 1_000_000 + i * 1_000, Some(i as f64));
        }
        assert!(w.buckets.len() as u64 <= limits::WINDOW_BUCKETS + 1);
        let now = 1_000_000 + 599 * 1_000;
        // The last minute: values 540..=599.
        assert_eq!(w.value(Agg::Count, over, now), Val::Num(60.0));
        assert_eq!(w.value(Agg::Max, over, now), Val::Num(599.0));
        assert_eq!(w.value(Agg::Min, over, now), Val::Num(540.0));
        assert_eq!(w.value(Agg::Avg, over, now), Val::Num(569.5));
        // Ten minutes later nothing is left.
        assert_eq!(w.value(Agg::Avg, over, now + 600_000), Val::Missing);
        assert_eq!(w.value(Agg::Sum, over, now + 600_000), Val::Num(0.0));
    }

    #[test]
    fn state_survives_encoding_and_refuses_other_formats() {
        let mut s = TwinRuleState::default();
        s.telemetry.insert("temp".into(), Scalar::Num(21.5));
        s.rules.insert(
            "r".into(),
            RuleState {
                hash: 7,
                phase: Phase::Pending { since: 5 },
                ..Default::default()
            },
        );
        assert_eq!(TwinRuleState::decode(&s.encode()).unwrap(), s);
        assert!(TwinRuleState::decode(&[9, 1, 2]).is_err());
        assert!(TwinRuleState::decode(&[1, 0xff, 0xff, 0xff]).is_err());
    }
}
