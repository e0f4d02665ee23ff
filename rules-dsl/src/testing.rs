//! In-language tests: a virtual clock, timed inputs and expectations, run against a twin with
//! the same engine the node runs. Deadlines between steps fire at their exact times.

use crate::{
    ast::AlertState,
    compile::Program,
    engine::{self, Eval, Input as EngineInput, Output, OutputKind, View},
    ir::{CompiledRule, Expr, PathRef, Val},
    state::{Phase, TwinRuleState},
};
use serde::Serialize;
use serde_json::Value;
use std::sync::Arc;
use twin_core::{
    Command, CompiledType, Context, Limits, Sample, ShadowName, ThingName, Twin, request,
};

pub use crate::ir::{CompiledTest, Probe, TestInput, TestStep};

/// A failed expectation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// Line of the step.
    pub line: usize,
    /// Column of the step.
    pub column: usize,
    /// What was expected and what happened.
    pub message: String,
}

/// One test's result.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TestReport {
    /// The test's name.
    pub name: String,
    /// Whether every expectation held.
    pub passed: bool,
    /// The expectations that did not.
    pub failures: Vec<Failure>,
    /// Everything the rules did, in order (times from the test's start).
    pub timeline: Vec<String>,
}

/// The virtual epoch of tests: 2023-11-14T22:13:20Z.
pub const TEST_EPOCH: u64 = 1_700_000_000_000;

/// Most timer firings between two steps (a guard: deadlines always move forward).
const MAX_TICKS: usize = 100_000;

/// Runs every test of `program` against its rules, with `device_type` for the twin if given.
pub fn run(program: &Program, device_type: Option<&CompiledType>) -> Vec<TestReport> {
    program
        .tests
        .iter()
        .map(|t| run_one(&program.rules, t, device_type))
        .collect()
}

fn run_one(
    rules: &[Arc<CompiledRule>],
    test: &CompiledTest,
    device_type: Option<&CompiledType>,
) -> TestReport {
    let limits = Limits::default();
    let ctx = Context {
        limits: &limits,
        device_type,
        documents: false,
    };
    let mut twin =
        Twin::new(ThingName::new("test-twin").unwrap_or_else(|_| unreachable!("a valid name")));
    let mut state = TwinRuleState::default();
    let mut log: Vec<(Output, bool)> = Vec::new();
    let mut failures = Vec::new();
    let mut now = TEST_EPOCH;
    let run_input = |twin: &mut Twin,
                     state: &mut TwinRuleState,
                     input: EngineInput,
                     at: u64,
                     log: &mut Vec<(Output, bool)>| {
        let mut effects = Vec::new();
        let outcome = engine::handle(twin, state, rules, input, &ctx, at, &mut effects);
        log.extend(outcome.outputs.into_iter().map(|o| (o, false)));
    };
    for step in &test.steps {
        let at = TEST_EPOCH + step.at_ms;
        let mut ticks = 0;
        while let Some(deadline) = engine::next_deadline(&state, rules) {
            if deadline > at || ticks >= MAX_TICKS {
                break;
            }
            ticks += 1;
            now = deadline.max(now);
            run_input(&mut twin, &mut state, EngineInput::Timer, now, &mut log);
        }
        now = at.max(now);
        let shown = |ms: u64| format_ms(ms);
        let fail = |failures: &mut Vec<Failure>, message: String, state: &TwinRuleState| {
            let mut message = format!("at {}: {message}", shown(step.at_ms));
            let phases = phases(rules, state, now);
            if !phases.is_empty() {
                message.push_str(&format!(" [{}]", phases.join("; ")));
            }
            failures.push(Failure {
                line: step.line,
                column: step.column,
                message,
            });
        };
        match &step.input {
            TestInput::Telemetry(v) => {
                let Value::Object(map) = v.clone() else {
                    continue;
                };
                match Sample::from_object(map) {
                    Ok(sample) => run_input(
                        &mut twin,
                        &mut state,
                        EngineInput::Command(Command::Telemetry(sample)),
                        now,
                        &mut log,
                    ),
                    Err(e) => fail(
                        &mut failures,
                        format!("the sample is refused: {}", e.message),
                        &state,
                    ),
                }
            }
            TestInput::Report(v) | TestInput::Desire(v) => {
                let section = if matches!(step.input, TestInput::Report(_)) {
                    "reported"
                } else {
                    "desired"
                };
                let body = serde_json::json!({ "state": { section: v } }).to_string();
                match request::parse_update(ShadowName::CLASSIC, body.as_bytes(), &limits) {
                    Ok(update) => run_input(
                        &mut twin,
                        &mut state,
                        EngineInput::Command(Command::Update(update)),
                        now,
                        &mut log,
                    ),
                    Err(r) => fail(
                        &mut failures,
                        format!("the update is refused: {}", r.error.message),
                        &state,
                    ),
                }
            }
            TestInput::Job(id, status) => {
                // The job is queued on the twin (once), then the device reports.
                run_input(
                    &mut twin,
                    &mut state,
                    EngineInput::Job(twin_core::JobInput::Queue {
                        job_id: id.clone(),
                        document: "{}".into(),
                        in_progress_timeout_ms: None,
                    }),
                    now,
                    &mut log,
                );
                run_input(
                    &mut twin,
                    &mut state,
                    EngineInput::Job(twin_core::JobInput::Request {
                        op: twin_core::JobOp::Update(id.clone()),
                        payload: serde_json::json!({ "status": status }),
                    }),
                    now,
                    &mut log,
                );
            }
            TestInput::Presence(connected) => {
                run_input(
                    &mut twin,
                    &mut state,
                    EngineInput::Presence(*connected),
                    now,
                    &mut log,
                );
            }
            TestInput::Child(name, v) => {
                run_input(
                    &mut twin,
                    &mut state,
                    EngineInput::Child(name.clone(), Some(v.clone())),
                    now,
                    &mut log,
                );
            }
            TestInput::Reply(name, payload) => {
                let request_id = payload
                    .get("request_id")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                let waiting = state
                    .rules
                    .values()
                    .any(|r| r.commands.iter().any(|c| &c.name == name));
                if !waiting {
                    fail(
                        &mut failures,
                        format!("no command {name} is waiting for a reply"),
                        &state,
                    );
                }
                run_input(
                    &mut twin,
                    &mut state,
                    EngineInput::Reply {
                        request_id,
                        name: name.clone(),
                        payload: payload.clone(),
                    },
                    now,
                    &mut log,
                );
            }
            TestInput::Expect(negated, probe) => {
                let negated = *negated;
                let no = if negated { "no " } else { "" };
                match probe {
                    Probe::Alert(name, state_wanted) => {
                        let firing = state.firing().any(|(_, a)| &a.name == name);
                        let (holds, what) = match state_wanted {
                            Some(AlertState::Resolved) => {
                                let resolved = log.iter().any(|(o, _)| matches!(&o.kind, OutputKind::Alert { name: n, state: AlertState::Resolved, .. } if &**n == name));
                                (resolved && !firing, "resolved")
                            }
                            _ => (firing, "firing"),
                        };
                        if holds == negated {
                            let actual = if firing {
                                "it is firing"
                            } else {
                                "it is not firing"
                            };
                            fail(
                                &mut failures,
                                format!("expected {no}alert {name} {what}, but {actual}"),
                                &state,
                            );
                        }
                    }
                    Probe::Command(name) | Probe::Event(name) => {
                        let is_command = matches!(probe, Probe::Command(_));
                        let found = log.iter_mut().find(|(o, used)| {
                            !*used
                                && o.at <= now
                                && match &o.kind {
                                    OutputKind::Command { name: n, .. } => {
                                        is_command && &**n == name
                                    }
                                    OutputKind::Event { event, .. } => {
                                        !is_command && &**event == name
                                    }
                                    _ => false,
                                }
                        });
                        let what = if is_command {
                            format!("command {name}")
                        } else {
                            format!("event \"{name}\"")
                        };
                        match (found, negated) {
                            (Some((_, used)), false) => *used = true,
                            (None, false) => fail(
                                &mut failures,
                                format!("expected {what}, but none was sent"),
                                &state,
                            ),
                            (Some(_), true) => fail(
                                &mut failures,
                                format!("expected no {what}, but one was sent"),
                                &state,
                            ),
                            (None, true) => {}
                        }
                    }
                    Probe::That(expr, paths) => {
                        let view = View {
                            twin: &twin,
                            telemetry: &state.telemetry,
                            children: &state.children,
                            connected: state.connected,
                            job: state.job.as_ref(),
                            paths,
                            specs: &[],
                            now,
                        };
                        let mut edges = Vec::new();
                        let value = Eval {
                            view: &view,
                            edges: &mut edges,
                            windows: &[],
                        }
                        .eval(expr);
                        if value != Val::Bool(true) {
                            let got = match value {
                                Val::Missing => "a value it reads is missing".to_owned(),
                                _ => "it is false".to_owned(),
                            };
                            let shown: Vec<String> = paths
                                .iter()
                                .map(|p| {
                                    let v = engine_read(&twin, &state, p);
                                    format!("{}.{} = {v}", p.root.as_str(), p.key)
                                })
                                .collect();
                            fail(
                                &mut failures,
                                format!(
                                    "expected the condition to hold, but {got} ({})",
                                    shown.join(", ")
                                ),
                                &state,
                            );
                        }
                    }
                }
            }
        }
    }
    let timeline = log.iter().map(|(o, _)| describe(o)).collect();
    TestReport {
        name: test.name.clone(),
        passed: failures.is_empty(),
        failures,
        timeline,
    }
}

/// Where each rule is at `now`, for failure messages.
fn phases(rules: &[Arc<CompiledRule>], state: &TwinRuleState, now: u64) -> Vec<String> {
    rules
        .iter()
        .map(|rule| {
            let phase = state
                .rules
                .get(&*rule.name)
                .map(|s| s.phase)
                .unwrap_or_default();
            let detail = match phase {
                Phase::Idle => String::new(),
                Phase::Pending { since } => format!(
                    ": its condition has held for {} of {}",
                    format_ms(now - since),
                    format_ms(rule.when_hold_ms)
                ),
                Phase::Firing { since } => format!(" since {}", format_ms(since - TEST_EPOCH)),
                Phase::Clearing { since, .. } => format!(
                    ": its clear condition has held for {} of {}",
                    format_ms(now - since),
                    format_ms(rule.clear.as_ref().map_or(0, |c| c.1))
                ),
            };
            format!("rule {} is {}{detail}", rule.name, phase.name())
        })
        .collect()
}

fn engine_read(twin: &Twin, state: &TwinRuleState, path: &PathRef) -> String {
    let view = View {
        twin,
        telemetry: &state.telemetry,
        children: &state.children,
        connected: state.connected,
        job: state.job.as_ref(),
        paths: std::slice::from_ref(path),
        specs: &[],
        now: 0,
    };
    let mut edges = Vec::new();
    match (Eval {
        view: &view,
        edges: &mut edges,
        windows: &[],
    })
    .eval(&Expr::Path(0))
    {
        Val::Missing => "missing".into(),
        v => engine::to_json(&v).map_or_else(|| "missing".into(), |j| j.to_string()),
    }
}

pub use engine::format_ms;

/// One line per output: `at 2s rule high_temp: alert HighTemp firing "temp 35"`.
pub fn describe(o: &Output) -> String {
    let at = format_ms(o.at.saturating_sub(TEST_EPOCH));
    let what = match &o.kind {
        OutputKind::Command { name, payload, .. } => {
            let mut p = payload.clone();
            if let Value::Object(m) = &mut p {
                m.remove("request_id");
            }
            format!("command {name} {p}")
        }
        OutputKind::Alert {
            name,
            severity,
            state,
            message,
        } => {
            let state = if *state == AlertState::Firing {
                "firing"
            } else {
                "resolved"
            };
            format!("alert {name} {} {state} {message:?}", severity.as_str())
        }
        OutputKind::Event { event, payload } => format!("event {event:?} {payload}"),
        OutputKind::CommandEnded { name, outcome, .. } => match outcome {
            engine::CommandOutcome::Replied { payload } => {
                format!("command {name} replied {payload}")
            }
            engine::CommandOutcome::TimedOut => format!("command {name} timed out"),
        },
        OutputKind::Set {
            section,
            field,
            value,
        } => format!("set {section}.{field} = {value}"),
        OutputKind::SetRefused { message } => format!("set refused: {message}"),
    };
    format!("at {at} rule {}: {what}", o.rule)
}

/// Replays recorded telemetry `samples` (device time, fields) through `rules` on a fresh twin
/// of `device_type`, with deadlines firing at their times up to `until`: what the rules would
/// have done, and when.
pub fn replay(
    rules: &[Arc<CompiledRule>],
    samples: Vec<(u64, serde_json::Map<String, Value>)>,
    until: u64,
    device_type: Option<&CompiledType>,
) -> Vec<Output> {
    let limits = Limits::default();
    let ctx = Context {
        limits: &limits,
        device_type,
        documents: false,
    };
    let mut twin =
        Twin::new(ThingName::new("replay").unwrap_or_else(|_| unreachable!("a valid name")));
    let mut state = TwinRuleState::default();
    let mut outputs = Vec::new();
    let mut run = |twin: &mut Twin, state: &mut TwinRuleState, input: EngineInput, at: u64| {
        let mut effects = Vec::new();
        outputs.extend(engine::handle(twin, state, rules, input, &ctx, at, &mut effects).outputs);
    };
    let fire_until =
        |twin: &mut Twin,
         state: &mut TwinRuleState,
         at: u64,
         run: &mut dyn FnMut(&mut Twin, &mut TwinRuleState, EngineInput, u64)| {
            let mut ticks = 0;
            while let Some(deadline) = engine::next_deadline(state, rules) {
                if deadline > at || ticks >= MAX_TICKS {
                    break;
                }
                ticks += 1;
                run(twin, state, EngineInput::Timer, deadline);
            }
        };
    for (ts, values) in samples {
        fire_until(&mut twin, &mut state, ts, &mut run);
        let mut values = values;
        values.insert("ts".into(), Value::from(ts));
        if let Ok(sample) = Sample::from_object(values) {
            run(
                &mut twin,
                &mut state,
                EngineInput::Command(Command::Telemetry(sample)),
                ts,
            );
        }
    }
    fire_until(&mut twin, &mut state, until, &mut run);
    outputs
}
