//! Fuzzes shadow updates and telemetry: each input line is an update payload (or, after a
//! leading `t`, a telemetry sample) applied to one twin. Checks that nothing panics, that
//! accepted updates keep the state within its limits and add one to the version, that
//! rejections change nothing, and that the twin survives its encoding.

#![no_main]

use libfuzzer_sys::fuzz_target;
use twin_core::{Command, Context, Limits, Sample, ShadowName, ThingName, Twin, request};

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_state_bytes: 512,
        ..Limits::default()
    };
    let ctx = Context {
        limits: &limits,
        device_type: None,
        documents: true,
    };
    let mut twin = Twin::new(ThingName::new("fuzz").unwrap());
    let mut effects = Vec::new();
    for (i, line) in data.split(|b| *b == b'\n').enumerate() {
        let now = 1_700_000_000_000 + i as u64;
        let command = match line.split_first() {
            Some((b't', sample)) => match Sample::parse(sample) {
                Ok(s) => Command::Telemetry(s),
                Err(_) => continue,
            },
            _ => match request::parse_update(ShadowName::CLASSIC, line, &limits) {
                Ok(u) => Command::Update(u),
                Err(_) => continue,
            },
        };
        let before = twin.encode();
        let version = twin.shadow(&ShadowName::CLASSIC).map_or(0, |s| s.version());
        effects.clear();
        twin.handle(command, &ctx, now, &mut effects);
        let after = twin.shadow(&ShadowName::CLASSIC);
        let rejected = effects
            .iter()
            .any(|e| matches!(e, twin_core::Effect::Reply(r) if r.outcome.is_err()));
        if rejected {
            assert_eq!(twin.encode(), before, "a rejection changed the twin");
        } else if let Some(shadow) = after {
            assert!(shadow.version() == version || shadow.version() == version + 1);
            let len = twin_core::Shadow::state_len(shadow.desired(), shadow.reported());
            assert!(len <= limits.max_state_bytes, "state over its limit");
            assert!(shadow.desired().depth() <= limits.max_depth);
            assert!(shadow.reported().depth() <= limits.max_depth);
        }
        let decoded = Twin::decode(twin.thing().clone(), &twin.encode()).expect("decodes");
        assert_eq!(decoded.encode(), twin.encode());
    }
});
