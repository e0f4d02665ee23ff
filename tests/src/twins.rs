//! Driving a `Twin` directly, for tests that combine twin-core and storage.

use serde_json::Value;
use twin_core::{Command, Context, Effect, Limits, Sample, ShadowName, Twin, request};

/// Applies a shadow update payload to `twin` at `now`, returning the effects.
pub fn update(twin: &mut Twin, shadow: &ShadowName, payload: &Value, now: u64) -> Vec<Effect> {
    let limits = Limits::default();
    let req = request::parse_update(shadow.clone(), payload.to_string().as_bytes(), &limits)
        .expect("a well-formed update");
    run(twin, Command::Update(req), now)
}

/// Applies a telemetry sample to `twin` at `now`.
pub fn telemetry(twin: &mut Twin, sample: &Value, now: u64) -> Vec<Effect> {
    let sample = Sample::parse(sample.to_string().as_bytes()).expect("a well-formed sample");
    run(twin, Command::Telemetry(sample), now)
}

fn run(twin: &mut Twin, command: Command, now: u64) -> Vec<Effect> {
    let limits = Limits::default();
    let ctx = Context {
        limits: &limits,
        device_type: None,
        documents: false,
    };
    let mut out = Vec::new();
    twin.handle(command, &ctx, now, &mut out);
    out
}
