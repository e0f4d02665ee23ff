//! A small harness that drives a `Twin` the way a transport would: parse the payload, hand the
//! command to the twin with a context and a clock, and collect the effects.

#![allow(dead_code)]

use serde_json::Value;
use twin_core::{
    Command, CompiledType, Context, DeviceType, Effect, Limits, Reply, Sample, ShadowName,
    ThingName, Twin, request,
};

pub struct Harness {
    pub twin: Twin,
    pub limits: Limits,
    pub device_type: Option<CompiledType>,
    pub documents: bool,
    pub now: u64,
}

pub const T0: u64 = 1_700_000_000_000;

pub fn shadow(name: &str) -> ShadowName {
    if name.is_empty() {
        ShadowName::CLASSIC
    } else {
        ShadowName::named(name).unwrap()
    }
}

pub fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("payload is JSON")
}

impl Harness {
    pub fn new() -> Self {
        Self {
            twin: Twin::new(ThingName::new("pump-7").unwrap()),
            limits: Limits::default(),
            device_type: None,
            documents: false,
            now: T0,
        }
    }

    pub fn with_type(mut self, def: Value) -> Self {
        let def: DeviceType = serde_json::from_value(def).unwrap();
        self.device_type = Some(CompiledType::compile(def).unwrap());
        self
    }

    fn run(&mut self, command: Command) -> Vec<Effect> {
        let ctx = Context {
            limits: &self.limits,
            device_type: self.device_type.as_ref(),
            documents: self.documents,
        };
        let mut out = Vec::new();
        self.twin.handle(command, &ctx, self.now, &mut out);
        out
    }

    /// Sends an update; a payload refused by the parser comes back as a rejected reply, as a
    /// transport would answer it.
    pub fn update_raw(&mut self, name: &str, payload: &[u8]) -> Vec<Effect> {
        match request::parse_update(shadow(name), payload, &self.limits) {
            Ok(req) => self.run(Command::Update(req)),
            Err(rejection) => vec![Effect::Reply(Reply {
                shadow: shadow(name),
                op: twin_core::Op::Update,
                payload: twin_core::rejected(
                    &rejection.error,
                    rejection.client_token.as_deref(),
                    self.now,
                ),
                outcome: Err(rejection.error),
                client_token: rejection.client_token,
                duplicate: false,
            })],
        }
    }

    pub fn update(&mut self, name: &str, payload: Value) -> Vec<Effect> {
        self.update_raw(name, payload.to_string().as_bytes())
    }

    pub fn get(&mut self, name: &str) -> Reply {
        let req = request::parse_get(shadow(name), b"").unwrap();
        reply(&self.run(Command::Get(req))).clone()
    }

    /// The shadow's document, or `None` when get is refused.
    pub fn doc(&mut self, name: &str) -> Option<Value> {
        let r = self.get(name);
        r.outcome.is_ok().then(|| json(&r.payload))
    }

    pub fn state(&mut self, name: &str) -> Value {
        self.doc(name)
            .map(|d| d["state"].clone())
            .unwrap_or(Value::Null)
    }

    pub fn delete(&mut self, name: &str, payload: &[u8]) -> Vec<Effect> {
        let req = request::parse_delete(shadow(name), payload).unwrap();
        self.run(Command::Delete(req))
    }

    pub fn telemetry(&mut self, sample: Value) -> Vec<Effect> {
        let sample = Sample::parse(sample.to_string().as_bytes()).unwrap();
        self.run(Command::Telemetry(sample))
    }
}

pub fn reply(effects: &[Effect]) -> &Reply {
    effects
        .iter()
        .find_map(|e| match e {
            Effect::Reply(r) => Some(r),
            _ => None,
        })
        .expect("a reply")
}

pub fn accepted(effects: &[Effect]) -> Value {
    let r = reply(effects);
    assert!(r.outcome.is_ok(), "expected accepted, got {:?}", r.outcome);
    json(&r.payload)
}

/// `(code, message)` of a rejected reply.
pub fn rejected(effects: &[Effect]) -> (u16, String) {
    let r = reply(effects);
    let e = r.outcome.clone().expect_err("expected a rejection");
    let payload = json(&r.payload);
    assert_eq!(payload["code"], e.code);
    assert_eq!(payload["message"], *e.message);
    (e.code, e.message.into_owned())
}

pub fn delta_notice(effects: &[Effect]) -> Option<Value> {
    effects.iter().find_map(|e| match e {
        Effect::Delta { payload, .. } => Some(json(payload)),
        _ => None,
    })
}

pub fn documents_notice(effects: &[Effect]) -> Option<Value> {
    effects.iter().find_map(|e| match e {
        Effect::Documents { payload, .. } => Some(json(payload)),
        _ => None,
    })
}

pub fn change(effects: &[Effect]) -> Option<&twin_core::Change> {
    effects.iter().find_map(|e| match e {
        Effect::Changed(c) => Some(c),
        _ => None,
    })
}
