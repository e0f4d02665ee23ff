//! The commit window of a shard host: what the next group commit writes — the latest record,
//! rule state and deadline per twin (repeated changes of one twin coalesce to the last), every
//! telemetry sample, audit entry and rule-log entry — and the effects that wait for it, in the
//! order the twins produced them. Its bounds keep every commit within the store's limits.

use bytes::Bytes;
use std::collections::{HashMap, HashSet};
use storage::{AuditEntry, RuleLogEntry, repo::LogKind};
use twin_core::{ExecutionChange, ThingName};

/// A window commits early once its records reach this many bytes (well under FoundationDB's
/// 10 MB transaction limit).
pub(crate) const MAX_WINDOW_BYTES: usize = 4 * 1024 * 1024;

/// Something held until the window commits, and the twin it belongs to.
pub(crate) trait OfThing {
    fn thing(&self) -> &ThingName;
}

/// What the next commit writes, and the effects waiting for it.
pub(crate) struct Window<R> {
    /// Latest record per dirty twin and its write count.
    records: HashMap<ThingName, (Bytes, u64)>,
    /// Audit entries of changes made through the API.
    audits: Vec<AuditEntry>,
    /// Telemetry samples for the history: thing, device time, sequence, fields as JSON.
    telemetry: Vec<(ThingName, u64, u64, Bytes)>,
    /// Latest rule state per twin (empty: remove it).
    rule_states: HashMap<ThingName, Bytes>,
    /// Latest rule deadline per twin.
    deadlines: HashMap<ThingName, Option<u64>>,
    /// Alerts and commands for the rule log.
    rule_log: Vec<(LogKind, RuleLogEntry)>,
    /// Latest state of each job execution that changed, per twin and job (for the index).
    executions: HashMap<(ThingName, String), ExecutionChange>,
    bytes: usize,
    released: Vec<R>,
}

impl<R> Default for Window<R> {
    fn default() -> Self {
        Self {
            records: HashMap::new(),
            audits: Vec::new(),
            telemetry: Vec::new(),
            rule_states: HashMap::new(),
            deadlines: HashMap::new(),
            rule_log: Vec::new(),
            executions: HashMap::new(),
            bytes: 0,
            released: Vec::new(),
        }
    }
}

/// A batch being committed: everything a window held, its effects apart.
pub(crate) struct Batch {
    pub records: Vec<(ThingName, Bytes, u64)>,
    pub audits: Vec<AuditEntry>,
    pub telemetry: Vec<(ThingName, u64, u64, Bytes)>,
    pub rule_states: Vec<(ThingName, Bytes)>,
    pub deadlines: Vec<(ThingName, Option<u64>)>,
    pub rule_log: Vec<(LogKind, RuleLogEntry)>,
    pub executions: Vec<(ThingName, ExecutionChange)>,
}

impl Batch {
    /// Every twin the batch writes for.
    pub fn things(&self) -> HashSet<ThingName> {
        let mut things: HashSet<ThingName> = self.records.iter().map(|(t, ..)| t.clone()).collect();
        things.extend(self.telemetry.iter().map(|(t, ..)| t.clone()));
        things.extend(self.rule_states.iter().map(|(t, _)| t.clone()));
        things.extend(self.deadlines.iter().map(|(t, _)| t.clone()));
        things.extend(self.executions.iter().map(|(t, _)| t.clone()));
        things
    }
}

impl<R: OfThing> Window<R> {
    /// Whether the window has anything to write.
    pub fn has_writes(&self) -> bool {
        !self.records.is_empty()
            || !self.telemetry.is_empty()
            || !self.audits.is_empty()
            || !self.rule_states.is_empty()
            || !self.deadlines.is_empty()
            || !self.rule_log.is_empty()
            || !self.executions.is_empty()
    }

    /// Whether the window must commit now: `max_twins` dirty twins, four samples per twin
    /// allowed, or [`MAX_WINDOW_BYTES`].
    pub fn is_full(&self, max_twins: usize) -> bool {
        self.records.len() >= max_twins
            || self.telemetry.len() >= 4 * max_twins
            || self.bytes >= MAX_WINDOW_BYTES
    }

    /// Dirty twins waiting.
    pub fn twins(&self) -> usize {
        self.records.len()
    }

    /// Whether effects wait in the window.
    pub fn holds_effects(&self) -> bool {
        !self.released.is_empty()
    }

    /// A twin's new record (its `written`-th); an earlier one of the same twin is replaced.
    pub fn record(&mut self, thing: &ThingName, bytes: Bytes, written: u64) {
        self.bytes += bytes.len();
        if let Some((old, _)) = self.records.insert(thing.clone(), (bytes, written)) {
            self.bytes -= old.len();
        }
    }

    /// A twin's new rule state (empty: remove it); an earlier one is replaced.
    pub fn rule_state(&mut self, thing: &ThingName, bytes: Bytes) {
        self.bytes += bytes.len();
        if let Some(old) = self.rule_states.insert(thing.clone(), bytes) {
            self.bytes -= old.len();
        }
    }

    /// A twin's next rule deadline; an earlier one is replaced.
    pub fn deadline(&mut self, thing: &ThingName, deadline: Option<u64>) {
        self.deadlines.insert(thing.clone(), deadline);
    }

    /// A telemetry sample for the history.
    pub fn sample(&mut self, thing: &ThingName, ts: u64, seq: u64, json: Bytes) {
        self.bytes += json.len();
        self.telemetry.push((thing.clone(), ts, seq, json));
    }

    /// An audit entry.
    pub fn audit(&mut self, entry: AuditEntry) {
        self.audits.push(entry);
    }

    /// Rule-log entries.
    pub fn log(&mut self, entries: impl IntoIterator<Item = (LogKind, RuleLogEntry)>) {
        self.rule_log.extend(entries);
    }

    /// A job execution's new state for the index; an earlier one of the same execution is
    /// replaced.
    pub fn execution(&mut self, thing: &ThingName, change: ExecutionChange) {
        self.executions
            .insert((thing.clone(), change.job_id.clone()), change);
    }

    /// Effects that wait for this window's commit (or, with nothing to write, for the effects
    /// before them).
    pub fn hold(&mut self, released: R) {
        self.released.push(released);
    }

    /// The held effects, in order, when there is nothing to write.
    pub fn take_effects(&mut self) -> Vec<R> {
        std::mem::take(&mut self.released)
    }

    /// Forgets a twin's record, rule state and deadline (decommissioned: its state must not
    /// come back); its effects stay.
    pub fn evict(&mut self, thing: &ThingName) {
        if let Some((bytes, _)) = self.records.remove(thing) {
            self.bytes -= bytes.len();
        }
        if let Some(bytes) = self.rule_states.remove(thing) {
            self.bytes -= bytes.len();
        }
        self.deadlines.remove(thing);
        self.executions.retain(|(t, _), _| t != thing);
    }

    /// Every thing with a write or an effect in the window.
    pub fn things_held(&self) -> Vec<ThingName> {
        let mut things: Vec<ThingName> = self.records.keys().cloned().collect();
        things.extend(self.rule_states.keys().cloned());
        things.extend(self.deadlines.keys().cloned());
        things.extend(self.telemetry.iter().map(|(t, ..)| t.clone()));
        things.extend(self.executions.keys().map(|(t, _)| t.clone()));
        things.extend(self.released.iter().map(|r| r.thing().clone()));
        things
    }

    /// Removes every write and effect of `things` (their acknowledgements fail).
    pub fn drop_things(&mut self, things: &HashSet<ThingName>) {
        self.records.retain(|thing, _| !things.contains(thing));
        self.rule_states.retain(|thing, _| !things.contains(thing));
        self.deadlines.retain(|thing, _| !things.contains(thing));
        self.telemetry.retain(|(thing, ..)| !things.contains(thing));
        self.audits
            .retain(|entry| !things.iter().any(|t| t.as_str() == entry.target));
        self.rule_log
            .retain(|(_, entry)| !things.iter().any(|t| t.as_str() == entry.thing));
        self.executions.retain(|(t, _), _| !things.contains(t));
        self.released.retain(|r| !things.contains(r.thing()));
        self.bytes = self.records.values().map(|(b, _)| b.len()).sum::<usize>()
            + self.rule_states.values().map(Bytes::len).sum::<usize>()
            + self.telemetry.iter().map(|(.., j)| j.len()).sum::<usize>();
    }

    /// Empties the window into a batch to commit and the effects that wait for it.
    pub fn take(&mut self) -> (Batch, Vec<R>) {
        let window = std::mem::take(self);
        (
            Batch {
                records: window
                    .records
                    .into_iter()
                    .map(|(thing, (bytes, written))| (thing, bytes, written))
                    .collect(),
                audits: window.audits,
                telemetry: window.telemetry,
                rule_states: window.rule_states.into_iter().collect(),
                deadlines: window.deadlines.into_iter().collect(),
                rule_log: window.rule_log,
                executions: window
                    .executions
                    .into_iter()
                    .map(|((thing, _), change)| (thing, change))
                    .collect(),
            },
            window.released,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Effect(ThingName, u32);

    impl OfThing for Effect {
        fn thing(&self) -> &ThingName {
            &self.0
        }
    }

    fn t(name: &str) -> ThingName {
        ThingName::new(name).unwrap()
    }

    fn bytes(n: usize) -> Bytes {
        Bytes::from(vec![b'x'; n])
    }

    #[test]
    fn repeated_changes_of_a_twin_coalesce_to_the_last_record() {
        let mut w = Window::<Effect>::default();
        w.record(&t("a"), bytes(100), 1);
        w.record(&t("a"), bytes(40), 2);
        w.record(&t("b"), bytes(10), 1);
        w.rule_state(&t("a"), bytes(5));
        w.rule_state(&t("a"), bytes(7));
        assert_eq!(w.twins(), 2);
        assert_eq!(w.bytes, 40 + 10 + 7, "replaced records no longer count");
        let (batch, _) = w.take();
        let a = batch
            .records
            .iter()
            .find(|(thing, ..)| *thing == t("a"))
            .unwrap();
        assert_eq!(
            (a.1.len(), a.2),
            (40, 2),
            "the last record and its write count"
        );
        assert_eq!(batch.rule_states.len(), 1);
        assert!(!w.has_writes(), "taking empties the window");
    }

    #[test]
    fn samples_and_log_entries_all_stay_in_order() {
        let mut w = Window::<Effect>::default();
        for ts in [3, 1, 2] {
            w.sample(&t("a"), ts, ts, bytes(10));
        }
        w.hold(Effect(t("a"), 1));
        w.hold(Effect(t("b"), 2));
        let (batch, effects) = w.take();
        assert_eq!(
            batch
                .telemetry
                .iter()
                .map(|(_, ts, ..)| *ts)
                .collect::<Vec<_>>(),
            [3, 1, 2]
        );
        assert_eq!(
            effects,
            [Effect(t("a"), 1), Effect(t("b"), 2)],
            "release order kept"
        );
    }

    #[test]
    fn the_window_is_full_by_twins_samples_or_bytes() {
        let mut w = Window::<Effect>::default();
        w.record(&t("a"), bytes(1), 1);
        assert!(!w.is_full(2));
        w.record(&t("b"), bytes(1), 1);
        assert!(w.is_full(2), "two twins");
        let mut w = Window::<Effect>::default();
        for i in 0..8 {
            w.sample(&t("a"), i, i, bytes(1));
        }
        assert!(w.is_full(2), "four samples per twin");
        let mut w = Window::<Effect>::default();
        w.record(&t("a"), bytes(MAX_WINDOW_BYTES), 1);
        assert!(w.is_full(1_000), "bytes");
    }

    #[test]
    fn an_evicted_twin_writes_nothing_but_its_effects_stay() {
        let mut w = Window::<Effect>::default();
        w.record(&t("a"), bytes(10), 1);
        w.rule_state(&t("a"), bytes(10));
        w.deadline(&t("a"), Some(5));
        w.hold(Effect(t("a"), 1));
        w.evict(&t("a"));
        assert!(!w.has_writes());
        assert_eq!(w.bytes, 0);
        assert_eq!(w.take_effects(), [Effect(t("a"), 1)]);
    }

    #[test]
    fn dropped_twins_lose_writes_and_effects_others_keep_theirs() {
        let mut w = Window::<Effect>::default();
        for (name, n) in [("a", 1), ("b", 2)] {
            w.record(&t(name), bytes(10), 1);
            w.sample(&t(name), 1, 1, bytes(5));
            w.hold(Effect(t(name), n));
        }
        w.drop_things(&HashSet::from([t("a")]));
        assert_eq!(w.bytes, 15);
        let (batch, effects) = w.take();
        assert_eq!(batch.things(), HashSet::from([t("b")]));
        assert_eq!(effects, [Effect(t("b"), 2)]);
    }
}
