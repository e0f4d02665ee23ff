//! Running rules inside a twin: each input (a command for the twin, a child's change, a
//! command reply, a timer) is applied to the twin, then every rule is evaluated once; `set`
//! actions go back into the twin as one update, in the same turn, so they are committed with
//! the change that caused them. Changes made by rules do not trigger rules again.
//!
//! Time comes in as `now`; [`next_deadline`] tells the host when to call again with
//! [`Input::Timer`].

use crate::{
    ast::{AlertSeverity, AlertState, BinOp, Root, Section},
    ir::{
        Action, Agg, CompiledRule, Expr, PathRef, RuleTarget, TemplatePart, Val, WindowSpec, limits,
    },
    state::{FiringAlert, PendingCommand, Phase, RuleState, Scalar, TwinRuleState, Window},
};
use serde::Serialize;
use serde_json::{Map, Value};
use std::{collections::BTreeMap, sync::Arc};
use twin_core::{
    Command, Context, Effect, ShadowName, Twin, request,
    state::{Node, Scalar as TwinScalar},
};

/// Something that happens to a twin.
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    /// A command for the twin (telemetry, shadow update…).
    Command(Command),
    /// A rule deadline passed.
    Timer,
    /// A child's `reported` changed (its whole section), or the child was removed (`None`).
    Child(String, Option<Value>),
    /// The device answered a command.
    Reply {
        /// The request id it answered, if it said.
        request_id: Option<String>,
        /// The command's name.
        name: String,
        /// Its answer.
        payload: Value,
    },
    /// The device connected (`true`) or its connection ended.
    Presence(bool),
    /// A job execution's input: the device's request, or a rollout's queue or cancel.
    Job(twin_core::JobInput),
}

/// Why rules were evaluated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// A telemetry sample.
    Telemetry,
    /// A change of the classic shadow.
    Change,
    /// A child changed.
    Child,
    /// A command reply.
    Reply,
    /// The device connected or disconnected.
    Presence,
    /// A job execution changed.
    Job,
    /// A deadline.
    Timer,
}

/// How a command ended.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum CommandOutcome {
    /// The device replied.
    Replied {
        /// Its reply.
        payload: Value,
    },
    /// No reply in time.
    TimedOut,
}

/// Something rules did that leaves the twin: for the device, for apps, for the records.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OutputKind {
    /// Send a command on `things/{thing}/commands/{name}`.
    Command {
        /// Sent with it; the reply names it.
        request_id: String,
        /// The command.
        name: Arc<str>,
        /// Its payload (with `request_id`).
        payload: Value,
    },
    /// An alert fired or resolved.
    Alert {
        /// Its name.
        name: Arc<str>,
        /// Its severity.
        severity: AlertSeverity,
        /// `firing` or `resolved`.
        state: AlertState,
        /// Its message.
        message: String,
    },
    /// An event for apps.
    Event {
        /// Its kind.
        event: Arc<str>,
        /// Its payload.
        payload: Value,
    },
    /// A command ended.
    CommandEnded {
        /// Its request id.
        request_id: String,
        /// Its name.
        name: String,
        /// How.
        #[serde(flatten)]
        outcome: CommandOutcome,
    },
    /// A rule set a field (applied to the twin in the same turn).
    Set {
        /// `desired` or `reported`.
        section: &'static str,
        /// The field, `a.b`.
        field: String,
        /// The value (`null`: removed).
        value: Value,
    },
    /// The twin refused a rule's `set` (a schema, a limit).
    SetRefused {
        /// Why.
        message: String,
    },
}

impl OutputKind {
    /// How apps (WebSocket `event` frames) and the rule log see the output: its kind (`alert`,
    /// `command`, an event's own kind, `set`, `set_refused`) and a JSON object of its details.
    pub fn describe(&self) -> (&str, Value) {
        match self {
            OutputKind::Alert {
                name,
                severity,
                state,
                message,
            } => (
                "alert",
                serde_json::json!({
                    "name": name.as_ref(),
                    "severity": severity.as_str(),
                    "state": if *state == AlertState::Firing { "firing" } else { "resolved" },
                    "message": message,
                }),
            ),
            OutputKind::Event { event, payload } => (event.as_ref(), payload.clone()),
            OutputKind::Command {
                request_id,
                name,
                payload,
            } => (
                "command",
                serde_json::json!({"name": name.as_ref(), "request_id": request_id, "state": "sent", "payload": payload}),
            ),
            OutputKind::CommandEnded {
                request_id,
                name,
                outcome,
            } => {
                let (state, reply) = match outcome {
                    CommandOutcome::Replied { payload } => ("replied", payload.clone()),
                    CommandOutcome::TimedOut => ("timed_out", Value::Null),
                };
                (
                    "command",
                    serde_json::json!({"name": name, "request_id": request_id, "state": state, "reply": reply}),
                )
            }
            OutputKind::SetRefused { message } => {
                ("set_refused", serde_json::json!({ "message": message }))
            }
            OutputKind::Set {
                section,
                field,
                value,
            } => (
                "set",
                serde_json::json!({"section": section, "field": field, "value": value}),
            ),
        }
    }
}

/// An output and the rule that produced it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Output {
    /// The rule.
    pub rule: Arc<str>,
    /// When, epoch ms.
    pub at: u64,
    /// What.
    #[serde(flatten)]
    pub kind: OutputKind,
}

/// Why a rule did or did not fire on one evaluation.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TraceEntry {
    /// When, epoch ms.
    pub at: u64,
    /// The rule.
    pub rule: Arc<str>,
    /// What caused the evaluation.
    pub trigger: Trigger,
    /// The `when` condition's value (`null`: a value it needs is missing, so it does not hold).
    pub when: Option<bool>,
    /// The `clear when` condition's value, when the rule has one and was firing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clear: Option<Option<bool>>,
    /// The phase before.
    pub from: &'static str,
    /// The phase after.
    pub to: &'static str,
    /// What happened, in words.
    pub note: String,
}

/// What one input did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outcome {
    /// Outputs, in order.
    pub outputs: Vec<Output>,
    /// One entry per rule evaluated.
    pub trace: Vec<TraceEntry>,
    /// Whether the rule state changed (and must be stored).
    pub state_changed: bool,
}

/// The rules that apply to a twin of `device_type` named `thing`, in a stable order.
pub fn applicable<'a>(
    rules: impl IntoIterator<Item = &'a Arc<CompiledRule>>,
    thing: &str,
    device_type: Option<&str>,
) -> Vec<Arc<CompiledRule>> {
    let mut out: Vec<Arc<CompiledRule>> = rules
        .into_iter()
        .filter(|r| match &r.target {
            RuleTarget::Type(t) => Some(t.as_str()) == device_type,
            RuleTarget::Thing(t) => t == thing,
        })
        .cloned()
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out.truncate(limits::RULES_PER_TWIN);
    out
}

/// Applies `input` to `twin` and runs `rules`. Effects of the input and of rules' `set`
/// actions are appended to `effects` (replies only for the input itself).
pub fn handle(
    twin: &mut Twin,
    state: &mut TwinRuleState,
    rules: &[Arc<CompiledRule>],
    input: Input,
    ctx: &Context<'_>,
    now: u64,
    effects: &mut Vec<Effect>,
) -> Outcome {
    let mut outcome = Outcome::default();
    // Tracked as it happens (comparing the whole state afterwards costs more than the rules).
    let mut changed = false;
    let before = effects.len();
    let trigger = match input {
        Input::Command(command) => {
            twin.handle(command, ctx, now, effects);
            let mut trigger = None;
            for effect in &effects[before..] {
                match effect {
                    Effect::Telemetry { values, .. } => {
                        changed |= record_telemetry(state, rules, values, now);
                        trigger = Some(Trigger::Telemetry);
                    }
                    Effect::Changed(change) if change.shadow == ShadowName::CLASSIC => {
                        trigger = trigger.or(Some(Trigger::Change));
                    }
                    _ => {}
                }
            }
            match trigger {
                Some(t) => t,
                None => return outcome,
            }
        }
        Input::Timer => {
            // Executions in progress past their deadline time out.
            twin.expire_jobs(now, effects);
            Trigger::Timer
        }
        Input::Job(job) => {
            twin.handle_job(job, now, effects);
            // Rules see the latest execution change (AWS's status names).
            let last = effects[before..].iter().rev().find_map(|e| match e {
                Effect::Execution(c) => Some((c.job_id.clone(), c.status.as_str().to_owned())),
                _ => None,
            });
            match last {
                Some(job) if rules.iter().any(|r| r.reads_job()) => {
                    changed = state.job.as_ref() != Some(&job);
                    state.job = Some(job);
                    Trigger::Job
                }
                _ => return outcome,
            }
        }
        Input::Child(child, reported) => {
            changed = true;
            record_child(state, rules, child, reported);
            Trigger::Child
        }
        Input::Reply {
            request_id,
            name,
            payload,
        } => {
            if !record_reply(
                state,
                request_id.as_deref(),
                &name,
                payload,
                now,
                &mut outcome,
            ) {
                return outcome;
            }
            Trigger::Reply
        }
        Input::Presence(connected) => {
            changed = state.connected != Some(connected);
            state.connected = Some(connected);
            Trigger::Presence
        }
    };
    if rules.is_empty() && state.rules.is_empty() {
        outcome.state_changed |= changed;
        return outcome;
    }
    let mut sets: Vec<Set> = Vec::new();
    changed |= reconcile(state, rules, now, &mut outcome);
    for rule in rules {
        changed |= evaluate(twin, state, rule, trigger, now, &mut sets, &mut outcome);
    }
    if !sets.is_empty() {
        apply_sets(twin, &sets, ctx, now, effects, &mut outcome);
    }
    outcome.state_changed |= changed;
    outcome
}

/// The earliest deadline of the twin's rules: a `for` or `clear … for` running out, a cooldown
/// ending with the condition still holding, a command timing out.
pub fn next_deadline(state: &TwinRuleState, rules: &[Arc<CompiledRule>]) -> Option<u64> {
    let mut next: Option<u64> = None;
    let mut consider = |t: u64| next = Some(next.map_or(t, |n| n.min(t)));
    for rule in rules {
        let Some(s) = state.rules.get(&*rule.name) else {
            continue;
        };
        if s.hash != rule.hash {
            continue;
        }
        match s.phase {
            Phase::Pending { since } => consider((since + rule.when_hold_ms).max(s.cooldown_until)),
            Phase::Clearing { since, .. } => {
                consider(since + rule.clear.as_ref().map_or(0, |(_, hold)| *hold));
            }
            Phase::Idle | Phase::Firing { .. } => {}
        }
        for c in &s.commands {
            consider(c.deadline);
        }
    }
    next
}

/// Keeps the latest values and feeds the windows; whether the state changed.
fn record_telemetry(
    state: &mut TwinRuleState,
    rules: &[Arc<CompiledRule>],
    values: &Map<String, Value>,
    now: u64,
) -> bool {
    let mut changed = false;
    for rule in rules {
        for path in rule.paths.iter().filter(|p| p.root == Root::Telemetry) {
            let Some(value) = lookup(values, &path.fields) else {
                continue;
            };
            match state.telemetry.get_mut(&*path.key) {
                Some(old) if old.same_as(value) => {}
                Some(old) => {
                    if let Some(scalar) = Scalar::from_json(value) {
                        *old = scalar;
                        changed = true;
                    }
                }
                None => {
                    if let Some(scalar) = Scalar::from_json(value) {
                        state.telemetry.insert(path.key.to_string(), scalar);
                        changed = true;
                    }
                }
            }
        }
        if rule.windows.is_empty() {
            continue;
        }
        changed = true;
        let rs = rule_state(state, rule);
        for (i, spec) in rule.windows.iter().enumerate() {
            let path = &rule.paths[usize::from(spec.path)];
            let value = match lookup(values, &path.fields) {
                None | Some(Value::Null) => continue,
                // Counts count any value; the other aggregates only numbers.
                Some(v) => v.as_f64(),
            };
            if let Some(window) = rs.windows.get_mut(i) {
                window.add(spec.over_ms, now, value);
            }
        }
    }
    changed
}

fn record_child(
    state: &mut TwinRuleState,
    rules: &[Arc<CompiledRule>],
    child: String,
    reported: Option<Value>,
) {
    let Some(reported) = reported else {
        state.children.remove(&child);
        return;
    };
    let Value::Object(reported) = reported else {
        return;
    };
    let mut values = BTreeMap::new();
    for rule in rules {
        for path in rule.paths.iter().filter(|p| p.root == Root::Children) {
            if let Some(scalar) = lookup(&reported, &path.fields).and_then(Scalar::from_json) {
                values.insert(path.key.to_string(), scalar);
            }
        }
    }
    if state.children.len() >= limits::CHILDREN && !state.children.contains_key(&child) {
        return;
    }
    state.children.insert(child, values);
}

/// Matches a reply to a pending command; false if none waits for it.
fn record_reply(
    state: &mut TwinRuleState,
    request_id: Option<&str>,
    name: &str,
    payload: Value,
    now: u64,
    outcome: &mut Outcome,
) -> bool {
    for (rule, s) in state.rules.iter_mut() {
        let found = match request_id {
            Some(id) => s.commands.iter().position(|c| c.request_id == id),
            None => s.commands.iter().rposition(|c| c.name == name),
        };
        if let Some(i) = found {
            let command = s.commands.remove(i);
            outcome.outputs.push(Output {
                rule: Arc::from(rule.as_str()),
                at: now,
                kind: OutputKind::CommandEnded {
                    request_id: command.request_id,
                    name: command.name,
                    outcome: CommandOutcome::Replied { payload },
                },
            });
            outcome.state_changed = true;
            return true;
        }
    }
    false
}

/// Drops the state of rules that are gone or changed, resolving their alerts.
/// Whether any state was dropped.
fn reconcile(
    state: &mut TwinRuleState,
    rules: &[Arc<CompiledRule>],
    now: u64,
    outcome: &mut Outcome,
) -> bool {
    if state.rules.len() == rules.len()
        && state
            .rules
            .iter()
            .zip(rules.iter())
            .all(|((name, s), r)| **name == *r.name && s.hash == r.hash)
    {
        // The common case, without allocating: `rules` is sorted by name, like the map.
        return false;
    }
    let stale: Vec<String> = state
        .rules
        .iter()
        .filter(|(name, s)| {
            !rules
                .iter()
                .any(|r| &*r.name == name.as_str() && r.hash == s.hash)
        })
        .map(|(name, _)| name.clone())
        .collect();
    for name in stale {
        if let Some(old) = state.rules.remove(&name) {
            let rule: Arc<str> = Arc::from(name.as_str());
            for alert in old.alerts {
                outcome.outputs.push(Output {
                    rule: rule.clone(),
                    at: now,
                    kind: OutputKind::Alert {
                        name: Arc::from(alert.name.as_str()),
                        severity: alert.severity,
                        state: AlertState::Resolved,
                        message: "the rule was changed or removed".into(),
                    },
                });
            }
        }
    }
    true
}

fn rule_state<'s>(state: &'s mut TwinRuleState, rule: &CompiledRule) -> &'s mut RuleState {
    entry(&mut state.rules, rule)
}

/// The rule's state in `rules`, created (or reset, for another version of the rule) as needed.
fn entry<'s>(
    rules: &'s mut std::collections::BTreeMap<String, RuleState>,
    rule: &CompiledRule,
) -> &'s mut RuleState {
    if !rules.contains_key(&*rule.name) {
        rules.insert(rule.name.to_string(), RuleState::default());
    }
    let s = rules
        .get_mut(&*rule.name)
        .unwrap_or_else(|| unreachable!("just inserted"));
    fresh(s, rule)
}

/// The state, reset if it belongs to another version of the rule, sized for its slots.
fn fresh<'s>(s: &'s mut RuleState, rule: &CompiledRule) -> &'s mut RuleState {
    if s.hash != rule.hash {
        *s = RuleState {
            hash: rule.hash,
            ..RuleState::default()
        };
    }
    s.edges.resize(usize::from(rule.edges), None);
    s.windows.resize(rule.windows.len(), Window::default());
    s
}

#[allow(clippy::too_many_arguments)]
fn evaluate(
    twin: &Twin,
    state: &mut TwinRuleState,
    rule: &Arc<CompiledRule>,
    trigger: Trigger,
    now: u64,
    sets: &mut Vec<Set>,
    outcome: &mut Outcome,
) -> bool {
    let TwinRuleState {
        telemetry,
        children,
        rules,
        seq,
        connected,
        job,
    } = state;
    let created = rules.get(&*rule.name).is_none_or(|s| s.hash != rule.hash);
    let s = entry(rules, rule);
    let before = (
        s.phase,
        s.cooldown_until,
        s.commands.len(),
        s.alerts.len(),
        *seq,
    );
    let mut changed = created;
    let edges_before = edge_bits(&s.edges);
    for (window, spec) in s.windows.iter_mut().zip(&rule.windows) {
        changed |= window.expire(spec.over_ms, now);
    }
    let view = View {
        twin,
        telemetry,
        children,
        connected: *connected,
        job: job.as_ref(),
        paths: &rule.paths,
        specs: &rule.windows,
        now,
    };
    let from = s.phase;
    let mut ctx = Eval {
        view: &view,
        edges: &mut s.edges,
        windows: &s.windows,
    };
    let when = truth(&ctx.eval(&rule.when));
    let firing = matches!(s.phase, Phase::Firing { .. } | Phase::Clearing { .. });
    // The clear condition is evaluated on every evaluation, so that its edges stay current.
    let clear = rule.clear.as_ref().map(|(expr, _)| truth(&ctx.eval(expr)));
    let mut note = String::new();
    let mut fire = false;
    let mut clear_now = false;
    match s.phase {
        Phase::Idle | Phase::Pending { .. } => {
            if when == Some(true) {
                let since = match s.phase {
                    Phase::Pending { since } => since,
                    _ => now,
                };
                let ready = since + rule.when_hold_ms;
                if now >= ready && now >= s.cooldown_until {
                    fire = true;
                } else {
                    s.phase = Phase::Pending { since };
                    note = if now < ready {
                        format!(
                            "held for {} of {}",
                            format_ms(now - since),
                            format_ms(rule.when_hold_ms)
                        )
                    } else {
                        format!(
                            "cooling down for another {}",
                            format_ms(s.cooldown_until - now)
                        )
                    };
                }
            } else {
                if matches!(s.phase, Phase::Pending { .. }) {
                    note = "stopped holding before its time".into();
                } else if when.is_none() {
                    note = "a value the condition needs is missing".into();
                }
                s.phase = Phase::Idle;
            }
        }
        Phase::Firing { since: fired } | Phase::Clearing { fired, .. } => {
            let (clears, hold) = match (&rule.clear, clear) {
                (Some((_, hold)), Some(c)) => (c == Some(true), *hold),
                _ => (when != Some(true), 0),
            };
            if clears {
                let since = match s.phase {
                    Phase::Clearing { since, .. } => since,
                    _ => now,
                };
                if now >= since + hold {
                    clear_now = true;
                } else {
                    s.phase = Phase::Clearing { fired, since };
                    note = format!(
                        "clear condition held for {} of {}",
                        format_ms(now - since),
                        format_ms(hold)
                    );
                }
            } else {
                s.phase = Phase::Firing { since: fired };
            }
        }
    }
    let rule_name = rule.name.clone();
    if fire {
        s.phase = Phase::Firing { since: now };
        s.cooldown_until = now + rule.cooldown_ms;
        note = "fired".into();
        let mut run = Run {
            view: &view,
            edges: &mut s.edges,
            windows: &s.windows,
            s_commands: &mut s.commands,
            s_alerts: &mut s.alerts,
            seq,
            sets,
            outcome,
            rule: &rule_name,
            now,
        };
        run.actions(&rule.then, Some(0));
    } else if clear_now {
        s.phase = Phase::Idle;
        note = "cleared".into();
        for alert in std::mem::take(&mut s.alerts) {
            outcome.outputs.push(Output {
                rule: rule_name.clone(),
                at: now,
                kind: OutputKind::Alert {
                    name: Arc::from(alert.name.as_str()),
                    severity: alert.severity,
                    state: AlertState::Resolved,
                    message: alert.message,
                },
            });
        }
        let mut run = Run {
            view: &view,
            edges: &mut s.edges,
            windows: &s.windows,
            s_commands: &mut s.commands,
            s_alerts: &mut s.alerts,
            seq,
            sets,
            outcome,
            rule: &rule_name,
            now,
        };
        run.actions(&rule.on_clear, Some(1));
    }
    // Commands that timed out.
    let mut i = 0;
    while i < s.commands.len() {
        if s.commands[i].deadline > now {
            i += 1;
            continue;
        }
        let command = s.commands.remove(i);
        changed = true;
        outcome.outputs.push(Output {
            rule: rule_name.clone(),
            at: now,
            kind: OutputKind::CommandEnded {
                request_id: command.request_id.clone(),
                name: command.name.clone(),
                outcome: CommandOutcome::TimedOut,
            },
        });
        let on_timeout = command.origin.and_then(|(block, index)| {
            let actions = if block == 0 {
                &rule.then
            } else {
                &rule.on_clear
            };
            match actions.get(usize::from(index)) {
                Some(Action::Command { on_timeout, .. }) => Some(on_timeout),
                _ => None,
            }
        });
        if let Some(actions) = on_timeout {
            let mut run = Run {
                view: &view,
                edges: &mut s.edges,
                windows: &s.windows,
                s_commands: &mut s.commands,
                s_alerts: &mut s.alerts,
                seq,
                sets,
                outcome,
                rule: &rule_name,
                now,
            };
            run.actions(actions, None);
        }
        if note.is_empty() {
            note = format!("command {} timed out", command.name);
        }
    }
    outcome.trace.push(TraceEntry {
        at: now,
        rule: rule_name,
        trigger,
        when,
        clear: if firing { clear } else { None },
        from: from.name(),
        to: s.phase.name(),
        note,
    });
    changed
        || edge_bits(&s.edges) != edges_before
        || (
            s.phase,
            s.cooldown_until,
            s.commands.len(),
            s.alerts.len(),
            *seq,
        ) != before
}

/// The edge memory as bits (two per slot), to notice a change without copying it.
fn edge_bits(edges: &[Option<bool>]) -> u64 {
    edges.iter().fold(0, |bits, e| {
        (bits << 2)
            | match e {
                None => 0,
                Some(false) => 1,
                Some(true) => 2,
            }
    })
}

/// `1.5s` style: `250ms`, `30s`, `2m`, `1h`.
pub fn format_ms(ms: u64) -> String {
    if ms.is_multiple_of(3_600_000) && ms > 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) && ms > 0 {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1_000) {
        format!("{}s", ms / 1_000)
    } else {
        format!("{ms}ms")
    }
}

/// A condition's truth: `None` when it needs a missing value (and so does not hold).
fn truth(v: &Val) -> Option<bool> {
    match v {
        Val::Bool(b) => Some(*b),
        _ => None,
    }
}

/// What an expression can read.
pub(crate) struct View<'a> {
    pub(crate) twin: &'a Twin,
    pub(crate) telemetry: &'a BTreeMap<String, Scalar>,
    pub(crate) children: &'a BTreeMap<String, BTreeMap<String, Scalar>>,
    /// The device's connection, once known.
    pub(crate) connected: Option<bool>,
    /// The latest job execution change: id and status.
    pub(crate) job: Option<&'a (String, String)>,
    pub(crate) paths: &'a [PathRef],
    pub(crate) specs: &'a [WindowSpec],
    pub(crate) now: u64,
}

impl View<'_> {
    fn path(&self, index: u16) -> Val {
        let Some(path) = self.paths.get(usize::from(index)) else {
            return Val::Missing;
        };
        if path.root == Root::Device {
            // A device never seen connected counts as not connected.
            return Val::Bool(self.connected.unwrap_or(false));
        }
        if path.root == Root::Job {
            let (id, status) = self.job.map_or(("", ""), |(i, s)| (i.as_str(), s.as_str()));
            let value = if &*path.key == "id" { id } else { status };
            return Val::Str(Arc::from(value));
        }
        read(self.twin, self.telemetry, path)
    }
}

/// Reads a field of the twin or of the latest telemetry.
fn read(twin: &Twin, telemetry: &BTreeMap<String, Scalar>, path: &PathRef) -> Val {
    let section = match path.root {
        Root::Telemetry => {
            return telemetry
                .get(&*path.key)
                .map_or(Val::Missing, Scalar::to_val);
        }
        Root::Children | Root::Device | Root::Job => return Val::Missing,
        Root::Reported | Root::Desired => {
            let Some(shadow) = twin.shadow(&ShadowName::CLASSIC) else {
                return Val::Missing;
            };
            if path.root == Root::Reported {
                shadow.reported()
            } else {
                shadow.desired()
            }
        }
    };
    match section.get_path(path.fields.iter().map(|f| &**f)) {
        Some(Node::Leaf(scalar, _)) => match scalar {
            TwinScalar::Bool(b) => Val::Bool(*b),
            TwinScalar::Str(s) => Val::Str(Arc::from(&**s)),
            other => other.as_f64().map_or(Val::Missing, Val::Num),
        },
        _ => Val::Missing,
    }
}

fn lookup<'v>(values: &'v Map<String, Value>, fields: &[Arc<str>]) -> Option<&'v Value> {
    let (first, rest) = fields.split_first()?;
    let mut value = values.get(&**first)?;
    for f in rest {
        value = value.as_object()?.get(&**f)?;
    }
    Some(value)
}

pub(crate) struct Eval<'a, 'v> {
    pub(crate) view: &'a View<'v>,
    pub(crate) edges: &'a mut Vec<Option<bool>>,
    pub(crate) windows: &'a [Window],
}

impl Eval<'_, '_> {
    pub(crate) fn eval(&mut self, e: &Expr) -> Val {
        match e {
            Expr::Const(v) => v.clone(),
            Expr::Path(i) => self.view.path(*i),
            Expr::Exists(i) => Val::Bool(self.view.path(*i) != Val::Missing),
            Expr::Not(inner) => match self.eval(inner) {
                Val::Bool(b) => Val::Bool(!b),
                _ => Val::Missing,
            },
            Expr::Neg(inner) => match self.eval(inner) {
                Val::Num(n) => Val::Num(-n),
                _ => Val::Missing,
            },
            Expr::Bin(op, a, b) => {
                // Both sides are always evaluated, so that edges inside see every evaluation.
                let (a, b) = (self.eval(a), self.eval(b));
                binary(*op, a, b)
            }
            Expr::Edge { slot, rising, arg } => {
                let now = matches!(self.eval(arg), Val::Bool(true));
                let slot = usize::from(*slot);
                let before = self.edges.get(slot).copied().flatten().unwrap_or(false);
                if let Some(s) = self.edges.get_mut(slot) {
                    *s = Some(now);
                }
                Val::Bool(if *rising {
                    !before && now
                } else {
                    before && !now
                })
            }
            Expr::Window(agg, i) => {
                let i = usize::from(*i);
                match (self.view.specs.get(i), self.windows.get(i)) {
                    (Some(spec), Some(window)) => window.value(*agg, spec.over_ms, self.view.now),
                    _ => Val::Missing,
                }
            }
            Expr::Children(agg, i) => {
                let Some(path) = self.view.paths.get(usize::from(*i)) else {
                    return Val::Missing;
                };
                let values = self
                    .view
                    .children
                    .values()
                    .filter_map(|c| c.get(&*path.key));
                let (mut count, mut sum, mut min, mut max) =
                    (0u64, 0.0, f64::INFINITY, f64::NEG_INFINITY);
                for v in values {
                    count += 1;
                    if let Scalar::Num(n) = v {
                        sum += n;
                        min = min.min(*n);
                        max = max.max(*n);
                    }
                }
                match agg {
                    Agg::Count => Val::Num(count as f64),
                    Agg::Sum => Val::Num(sum),
                    _ if count == 0 || min > max => Val::Missing,
                    Agg::Avg => Val::Num(sum / count as f64),
                    Agg::Min => Val::Num(min),
                    Agg::Max => Val::Num(max),
                }
            }
            Expr::ChildCount => Val::Num(self.view.children.len() as f64),
            Expr::Abs(inner) => match self.eval(inner) {
                Val::Num(n) => Val::Num(n.abs()),
                _ => Val::Missing,
            },
            Expr::Round(inner) => match self.eval(inner) {
                Val::Num(n) => Val::Num(n.round()),
                _ => Val::Missing,
            },
            Expr::MinMax(max, a, b) => match (self.eval(a), self.eval(b)) {
                (Val::Num(a), Val::Num(b)) => Val::Num(if *max { a.max(b) } else { a.min(b) }),
                _ => Val::Missing,
            },
            Expr::Template(parts) => {
                let mut out = String::new();
                for part in parts {
                    match part {
                        TemplatePart::Text(t) => out.push_str(t),
                        TemplatePart::Expr(e) => render(&self.eval(e), &mut out),
                    }
                    if out.len() > limits::STRING_BYTES {
                        let mut cut = limits::STRING_BYTES;
                        while !out.is_char_boundary(cut) {
                            cut -= 1;
                        }
                        out.truncate(cut);
                        break;
                    }
                }
                Val::Str(Arc::from(out))
            }
            Expr::Object(fields) => Val::Object(
                fields
                    .iter()
                    .map(|(k, v)| (k.clone(), self.eval(v)))
                    .collect(),
            ),
        }
    }
}

fn binary(op: BinOp, a: Val, b: Val) -> Val {
    use Val::*;
    match op {
        BinOp::And => match (a, b) {
            (Bool(false), _) | (_, Bool(false)) => Bool(false),
            (Bool(true), Bool(true)) => Bool(true),
            _ => Missing,
        },
        BinOp::Or => match (a, b) {
            (Bool(true), _) | (_, Bool(true)) => Bool(true),
            (Bool(false), Bool(false)) => Bool(false),
            _ => Missing,
        },
        BinOp::Coalesce => match a {
            Missing => b,
            a => a,
        },
        BinOp::Eq | BinOp::Ne => {
            let eq = match (&a, &b) {
                (Missing, _) | (_, Missing) => return Missing,
                (Num(x), Num(y)) => x == y,
                (Str(x), Str(y)) => x == y,
                (Bool(x), Bool(y)) => x == y,
                (Null, Null) => true,
                _ => false,
            };
            Bool(if op == BinOp::Eq { eq } else { !eq })
        }
        BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => match (a, b) {
            (Num(x), Num(y)) => Bool(match op {
                BinOp::Lt => x < y,
                BinOp::Le => x <= y,
                BinOp::Gt => x > y,
                _ => x >= y,
            }),
            _ => Missing,
        },
        BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Rem => match (a, b) {
            (Num(x), Num(y)) => {
                let r = match op {
                    BinOp::Add => x + y,
                    BinOp::Sub => x - y,
                    BinOp::Mul => x * y,
                    BinOp::Div => x / y,
                    _ => x % y,
                };
                if r.is_finite() { Num(r) } else { Missing }
            }
            _ => Missing,
        },
    }
}

/// Writes a value into a message.
fn render(v: &Val, out: &mut String) {
    use std::fmt::Write;
    match v {
        Val::Num(n) if n.fract() == 0.0 && n.abs() < 1e15 => {
            let _ = write!(out, "{}", *n as i64);
        }
        Val::Num(n) => {
            let _ = write!(out, "{n}");
        }
        Val::Str(s) => out.push_str(s),
        Val::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Val::Null => out.push_str("null"),
        Val::Object(_) => out.push_str("{…}"),
        Val::Missing => out.push_str("missing"),
    }
}

/// A value as JSON (`None` when missing).
pub fn to_json(v: &Val) -> Option<Value> {
    Some(match v {
        Val::Num(n) if n.fract() == 0.0 && n.abs() < 9e15 => Value::from(*n as i64),
        Val::Num(n) => serde_json::Number::from_f64(*n).map_or(Value::Null, Value::Number),
        Val::Str(s) => Value::String(s.to_string()),
        Val::Bool(b) => Value::Bool(*b),
        Val::Null => Value::Null,
        Val::Object(fields) => Value::Object(
            fields
                .iter()
                .filter_map(|(k, v)| Some((k.to_string(), to_json(v)?)))
                .collect(),
        ),
        Val::Missing => return None,
    })
}

/// Runs actions.
struct Run<'a, 'v> {
    view: &'a View<'v>,
    edges: &'a mut Vec<Option<bool>>,
    windows: &'a [Window],
    s_commands: &'a mut Vec<PendingCommand>,
    s_alerts: &'a mut Vec<FiringAlert>,
    seq: &'a mut u64,
    sets: &'a mut Vec<Set>,
    outcome: &'a mut Outcome,
    rule: &'a Arc<str>,
    now: u64,
}

impl Run<'_, '_> {
    fn value(&mut self, e: &Expr) -> Val {
        Eval {
            view: self.view,
            edges: self.edges,
            windows: self.windows,
        }
        .eval(e)
    }

    fn output(&mut self, kind: OutputKind) {
        self.outcome.outputs.push(Output {
            rule: self.rule.clone(),
            at: self.now,
            kind,
        });
    }

    /// Runs `actions`; `block` says where they are (for commands' `on timeout`).
    fn actions(&mut self, actions: &[Action], block: Option<u8>) {
        for (index, action) in actions.iter().enumerate() {
            match action {
                Action::Set {
                    section,
                    path,
                    value,
                } => {
                    if let Some(json) = to_json(&self.value(value)) {
                        self.output(OutputKind::Set {
                            section: if *section == Section::Desired {
                                "desired"
                            } else {
                                "reported"
                            },
                            field: path.iter().map(|p| &**p).collect::<Vec<_>>().join("."),
                            value: json.clone(),
                        });
                        self.sets
                            .push((self.rule.clone(), *section, path.clone(), json));
                    }
                }
                Action::Command {
                    name,
                    payload,
                    timeout_ms,
                    ..
                } => {
                    *self.seq += 1;
                    let request_id = format!("{}-{}-{}", self.rule, self.now, self.seq);
                    let mut body = match to_json(&self.value(payload)) {
                        Some(Value::Object(map)) => map,
                        _ => Map::new(),
                    };
                    body.insert("request_id".into(), Value::String(request_id.clone()));
                    if self.s_commands.len() >= limits::PENDING_COMMANDS {
                        let oldest = self.s_commands.remove(0);
                        self.output(OutputKind::CommandEnded {
                            request_id: oldest.request_id,
                            name: oldest.name,
                            outcome: CommandOutcome::TimedOut,
                        });
                    }
                    self.s_commands.push(PendingCommand {
                        request_id: request_id.clone(),
                        name: name.to_string(),
                        deadline: self.now + timeout_ms,
                        origin: block.map(|b| (b, index as u16)),
                    });
                    self.output(OutputKind::Command {
                        request_id,
                        name: name.clone(),
                        payload: Value::Object(body),
                    });
                }
                Action::Alert {
                    name,
                    severity,
                    message,
                } => {
                    let mut text = String::new();
                    render(&self.value(message), &mut text);
                    if !self.s_alerts.iter().any(|a| *a.name == **name) {
                        self.s_alerts.push(FiringAlert {
                            name: name.to_string(),
                            severity: *severity,
                            since: self.now,
                            message: text.clone(),
                        });
                    }
                    self.output(OutputKind::Alert {
                        name: name.clone(),
                        severity: *severity,
                        state: AlertState::Firing,
                        message: text,
                    });
                }
                Action::Emit { kind, payload } => {
                    let payload =
                        to_json(&self.value(payload)).unwrap_or(Value::Object(Map::new()));
                    self.output(OutputKind::Event {
                        event: kind.clone(),
                        payload,
                    });
                }
            }
        }
    }
}

/// A rule's `set`: the rule, the section, the path, the value.
type Set = (Arc<str>, Section, Vec<Arc<str>>, Value);

/// Applies rules' `set`s to the classic shadow as one update.
fn apply_sets(
    twin: &mut Twin,
    sets: &[Set],
    ctx: &Context<'_>,
    now: u64,
    effects: &mut Vec<Effect>,
    outcome: &mut Outcome,
) {
    let mut desired = Map::new();
    let mut reported = Map::new();
    for (_, section, path, value) in sets {
        let target = if *section == Section::Desired {
            &mut desired
        } else {
            &mut reported
        };
        insert(target, path, value.clone());
    }
    let mut state = Map::new();
    if !desired.is_empty() {
        state.insert("desired".into(), Value::Object(desired));
    }
    if !reported.is_empty() {
        state.insert("reported".into(), Value::Object(reported));
    }
    let body = serde_json::json!({ "state": state }).to_string();
    let mut rules: Vec<Arc<str>> = sets.iter().map(|s| s.0.clone()).collect();
    rules.dedup();
    let refused = |outcome: &mut Outcome, message: &str| {
        for rule in &rules {
            outcome.outputs.push(Output {
                rule: rule.clone(),
                at: now,
                kind: OutputKind::SetRefused {
                    message: message.to_owned(),
                },
            });
        }
    };
    let update = match request::parse_update(ShadowName::CLASSIC, body.as_bytes(), ctx.limits) {
        Ok(u) => u,
        Err(rejection) => {
            refused(outcome, &rejection.error.message);
            return;
        }
    };
    let mut rule_effects = Vec::new();
    twin.handle(Command::Update(update), ctx, now, &mut rule_effects);
    for effect in rule_effects {
        match effect {
            Effect::Reply(reply) => {
                if let Err(error) = reply.outcome {
                    refused(outcome, &error.message);
                }
            }
            other => effects.push(other),
        }
    }
}

fn insert(target: &mut Map<String, Value>, path: &[Arc<str>], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut map = target;
    for p in parents {
        let entry = map
            .entry(p.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        let Value::Object(inner) = entry else { return };
        map = inner;
    }
    map.insert(last.to_string(), value);
}
