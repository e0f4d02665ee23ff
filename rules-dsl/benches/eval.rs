//! What rules cost per message: a twin with 10 rules (levels held over time, hysteresis,
//! windows, an edge, a derived value) handles a stream of telemetry samples. Prints the time
//! per message for the twin alone, with the rules (state kept decoded), and with the rules as
//! the node runs them (rule state decoded and encoded around every message).
//!
//! `cargo bench -p rules-dsl --bench eval` (`DOPPEL_BENCH_MESSAGES`, default 200,000).

use rules_dsl::{Input, TwinRuleState, engine};
use serde_json::{Map, Value, json};
use std::{hint::black_box, sync::Arc, time::Instant};
use twin_core::{Command, Context, Limits, Sample, ThingName, Twin};

const RULES: &str = r#"
rule hot for type Machine {
  when exists(telemetry.temp) and telemetry.temp > 80 for 1m
  clear when (telemetry.temp ?? 0) < 70 for 30s
  then { alert Hot severity major "temp {telemetry.temp}"; set desired.fan = "max" }
  on clear { set desired.fan = "auto" }
}
rule cold for type Machine {
  when (telemetry.temp ?? 20) < 5 for 5m
  then { alert Cold severity minor "temp {telemetry.temp}" }
}
rule vibration for type Machine {
  when (avg(telemetry.rms over 1m) ?? 0) > 4.5 and count(telemetry.rms over 1m) >= 3
  then { alert Vibration severity critical "rms {avg(telemetry.rms over 1m) ?? 0}" }
}
rule pressure_peak for type Machine {
  when (max(telemetry.pressure over 5m) ?? 0) > 9.5
  then { emit event "pressure_peak" {bar: max(telemetry.pressure over 5m) ?? 0} }
}
rule pressure_low for type Machine {
  when (min(telemetry.pressure over 5m) ?? 10) < 0.5 for 10s
  then { alert PressureLow severity major "pressure low" }
}
rule door for type Machine {
  when rising((telemetry.door ?? "closed") == "open")
  then { emit event "door_opened" {} }
}
rule power for type Machine {
  when (telemetry.watts ?? 0) > 5000 and (reported.mode ?? "run") == "idle"
  then { alert PowerInIdle severity minor "{telemetry.watts} W while idle" }
}
rule efficiency for type Machine {
  when exists(telemetry.watts) and exists(telemetry.rpm) and telemetry.rpm > 0
  then { set reported.watts_per_rpm = round(telemetry.watts / telemetry.rpm) }
}
rule battery for type Machine {
  when exists(telemetry.battery) and telemetry.battery < 10
  cooldown 1h
  then { alert Battery severity info "battery {telemetry.battery} %" }
}
rule stall for type Machine {
  when (telemetry.rpm ?? 1) == 0 and (telemetry.watts ?? 0) > 100 for 20s
  then { command stop {reason: "stall"} timeout 30s }
}
"#;

fn sample(i: u64) -> Map<String, Value> {
    let v = json!({
        "ts": 1_700_000_000_000u64 + i * 1_000,
        "temp": 60.0 + (i % 40) as f64,
        "rms": 2.0 + (i % 7) as f64 * 0.5,
        "pressure": 5.0 + (i % 10) as f64 * 0.4,
        "door": if i.is_multiple_of(50) { "open" } else { "closed" },
        "watts": 1000 + (i % 100) * 10,
        "rpm": 1200 + i % 300,
        "battery": 80,
    });
    match v {
        Value::Object(m) => m,
        _ => unreachable!(),
    }
}

fn main() {
    let messages: u64 = std::env::var("DOPPEL_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let checked = rules_dsl::check(RULES, &rules_dsl::Offline, false);
    let program = checked.program.expect("the bench's rules check");
    let rules: Vec<Arc<rules_dsl::CompiledRule>> = program.rules;
    assert_eq!(rules.len(), 10);
    let limits = Limits::default();
    let ctx = Context {
        limits: &limits,
        device_type: None,
        documents: false,
    };
    let samples: Vec<Map<String, Value>> = (0..1_000).map(sample).collect();
    let thing = ThingName::new("m-1").unwrap();

    // The twin alone.
    let mut twin = Twin::new(thing.clone());
    let started = Instant::now();
    for i in 0..messages {
        let s = Sample::from_object(samples[(i % 1_000) as usize].clone()).unwrap();
        let mut effects = Vec::new();
        twin.handle(
            Command::Telemetry(s),
            &ctx,
            1_700_000_000_000 + i * 1_000,
            &mut effects,
        );
        black_box(effects);
    }
    let alone = started.elapsed().as_nanos() as f64 / messages as f64;

    // With the rules, state kept decoded.
    let mut twin = Twin::new(thing.clone());
    let mut state = TwinRuleState::default();
    let mut outputs = 0usize;
    let started = Instant::now();
    for i in 0..messages {
        let s = Sample::from_object(samples[(i % 1_000) as usize].clone()).unwrap();
        let mut effects = Vec::new();
        let now = 1_700_000_000_000 + i * 1_000;
        let outcome = engine::handle(
            &mut twin,
            &mut state,
            &rules,
            Input::Command(Command::Telemetry(s)),
            &ctx,
            now,
            &mut effects,
        );
        outputs += outcome.outputs.len();
        black_box(effects);
    }
    let with_rules = started.elapsed().as_nanos() as f64 / messages as f64;
    // Decoded in memory, encoded for the store after every change.
    let mut twin = Twin::new(thing.clone());
    let mut state = TwinRuleState::default();
    let mut bytes = 0;
    let started = Instant::now();
    for i in 0..messages {
        let s = Sample::from_object(samples[(i % 1_000) as usize].clone()).unwrap();
        let mut effects = Vec::new();
        let now = 1_700_000_000_000 + i * 1_000;
        let outcome = engine::handle(
            &mut twin,
            &mut state,
            &rules,
            Input::Command(Command::Telemetry(s)),
            &ctx,
            now,
            &mut effects,
        );
        if outcome.state_changed {
            bytes = black_box(state.encode()).len();
        }
        black_box(effects);
    }
    let encoded = started.elapsed().as_nanos() as f64 / messages as f64;
    let _ = bytes;

    // Kept encoded between messages: decoded and encoded around every message.
    let mut twin = Twin::new(thing);
    let mut stored = TwinRuleState::default().encode();
    let started = Instant::now();
    for i in 0..messages {
        let s = Sample::from_object(samples[(i % 1_000) as usize].clone()).unwrap();
        let mut effects = Vec::new();
        let now = 1_700_000_000_000 + i * 1_000;
        let mut state = TwinRuleState::decode(&stored).unwrap();
        let outcome = engine::handle(
            &mut twin,
            &mut state,
            &rules,
            Input::Command(Command::Telemetry(s)),
            &ctx,
            now,
            &mut effects,
        );
        if outcome.state_changed {
            stored = state.encode();
        }
        black_box(effects);
    }
    let as_node = started.elapsed().as_nanos() as f64 / messages as f64;

    println!(
        "rules eval: {messages} telemetry messages (8 fields), 10 rules per twin, {outputs} outputs"
    );
    println!("  twin alone:                          {alone:>8.0} ns/message");
    println!(
        "  twin + 10 rules, state decoded:      {with_rules:>8.0} ns/message ({:.0} ns for the rules)",
        with_rules - alone
    );
    println!(
        "  twin + 10 rules, encoded per change: {encoded:>8.0} ns/message ({:.0} ns for the rules)",
        encoded - alone
    );
    println!(
        "  twin + 10 rules, state round trip:   {as_node:>8.0} ns/message ({:.0} ns for the rules); rule state {} bytes",
        as_node - alone,
        stored.len()
    );
}
