//! The node-to-node protocol: frames over TCP, length-delimited (tokio-util), encoded with
//! MessagePack (rmp-serde), after a handshake in which both sides prove they know the cluster
//! secret (HMAC-SHA256 over both sides' nonces). `VERSION` is checked at the handshake; a peer
//! speaking another version is refused.

use crate::work::{Origin, ThingMeta};
use bytes::Bytes;
use hmac::{Hmac, Mac};
use rules_dsl::Input;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::Sha256;
use std::{collections::BTreeMap, sync::Arc};
use twin_core::{
    Change, Command, DeleteRequest, GetRequest, Op, Patch, Reply, Sample, ShadowError, ShadowName,
    ThingName, TypeName, UpdateRequest,
};

/// The protocol version this build speaks.
pub const VERSION: u32 = 2;
/// The largest frame accepted (a forwarded command is at most a few hundred KiB).
pub const MAX_FRAME: usize = 4 << 20;

/// The handshake's first message, from the side that dialed.
#[derive(Debug, Serialize, Deserialize)]
pub struct Hello {
    pub version: u32,
    pub node: String,
    pub nonce: [u8; 32],
}

/// The answer of the side dialed: its nonce and its proof over both nonces.
#[derive(Debug, Serialize, Deserialize)]
pub struct Challenge {
    pub version: u32,
    pub node: String,
    pub nonce: [u8; 32],
    pub proof: Vec<u8>,
}

/// The dialing side's proof.
#[derive(Debug, Serialize, Deserialize)]
pub struct Proof {
    pub proof: Vec<u8>,
}

/// What proves knowledge of the secret: HMAC-SHA256 over a role label and both nonces.
pub fn prove(secret: &[u8], role: &str, first: &[u8; 32], second: &[u8; 32]) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("hmac takes any key");
    mac.update(role.as_bytes());
    mac.update(first);
    mac.update(second);
    mac.finalize().into_bytes().to_vec()
}

/// Checks a proof in constant time.
pub fn verify(
    secret: &[u8],
    role: &str,
    first: &[u8; 32],
    second: &[u8; 32],
    proof: &[u8],
) -> bool {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("hmac takes any key");
    mac.update(role.as_bytes());
    mac.update(first);
    mac.update(second);
    mac.verify_slice(proof).is_ok()
}

/// A message between nodes. Requests carry an `id` the answer repeats (0: no answer wanted).
#[derive(Debug, Serialize, Deserialize)]
pub enum Frame {
    /// Work for a twin whose shard the receiver owns.
    Work {
        id: u64,
        thing: String,
        input: WireInput,
        documents: bool,
        origin: WireOrigin,
        audit: Option<String>,
        /// Whether the sender waits for the work to be settled (`Settled`).
        ack: bool,
    },
    /// How acknowledged work ended: 0 done, 1 failed (resend), else the refusal's status code.
    Settled {
        id: u64,
        code: u16,
    },
    /// The reply to work from a caller (`WireOrigin::Caller`).
    Answer {
        id: u64,
        reply: WireReply,
    },
    /// A message for a device whose session the receiver may hold.
    Publish {
        thing: String,
        topic: String,
        payload: Bytes,
    },
    /// Close a device's session, if the receiver holds it (decommissioned).
    Disconnect {
        thing: String,
    },
    /// A committed change, for the receiver's WebSocket watchers.
    Change {
        change: Change,
        meta: WireMeta,
    },
    /// A rule's output, for the receiver's WebSocket watchers, as apps see it.
    Event {
        thing: String,
        meta: WireMeta,
        rule: String,
        kind: String,
        payload: Value,
        at: u64,
    },
    /// Types, keys, rules or the admin token changed: reload them.
    Registry,
    /// A thing's type or attributes changed.
    Refresh {
        thing: String,
        meta: WireMeta,
    },
    /// Stop a decommissioned thing's twin; answered by `Done`.
    Evict {
        id: u64,
        thing: String,
    },
    /// The latest rule evaluations of a twin; answered by `Trace`.
    TraceOf {
        id: u64,
        thing: String,
    },
    Trace {
        id: u64,
        entries: Value,
    },
    /// The sender has WebSocket watchers (or no longer has): send it changes (or stop);
    /// answered by `Done` once the receiver will.
    Watching {
        id: u64,
        on: bool,
    },
    /// A request answered.
    Done {
        id: u64,
    },
    /// Ownership changed (a node released shards or left): look again now.
    Nudge,
}

/// Who sent forwarded work.
#[derive(Debug, Serialize, Deserialize)]
pub enum WireOrigin {
    Device,
    Node,
    Caller,
    Gateway(String),
}

impl WireOrigin {
    pub fn of(origin: &Origin) -> Self {
        match origin {
            Origin::Device => WireOrigin::Device,
            Origin::Node => WireOrigin::Node,
            Origin::Caller(_) => WireOrigin::Caller,
            Origin::Gateway(gateway) => WireOrigin::Gateway(gateway.to_string()),
        }
    }
}

/// One section of an update.
#[derive(Debug, Serialize, Deserialize)]
pub enum WirePatch {
    Absent,
    Clear,
    Merge(Map<String, Value>),
}

impl WirePatch {
    fn of(patch: Patch) -> Self {
        match patch {
            Patch::Absent => WirePatch::Absent,
            Patch::Clear => WirePatch::Clear,
            Patch::Merge(fields) => WirePatch::Merge(fields),
        }
    }

    fn into_patch(self) -> Patch {
        match self {
            WirePatch::Absent => Patch::Absent,
            WirePatch::Clear => Patch::Clear,
            WirePatch::Merge(fields) => Patch::Merge(fields),
        }
    }
}

/// A twin's input.
#[derive(Debug, Serialize, Deserialize)]
pub enum WireInput {
    Get {
        shadow: ShadowName,
        token: Option<String>,
    },
    Update {
        shadow: ShadowName,
        token: Option<String>,
        version: Option<u64>,
        desired: WirePatch,
        reported: WirePatch,
        state: Value,
    },
    Delete {
        shadow: ShadowName,
        token: Option<String>,
        version: Option<u64>,
    },
    Telemetry {
        ts: Option<u64>,
        values: Map<String, Value>,
    },
    Timer,
    Child {
        name: String,
        reported: Option<Value>,
    },
    Reply {
        request_id: Option<String>,
        name: String,
        payload: Value,
    },
    Presence(bool),
    Job(twin_core::JobInput),
}

impl WireInput {
    /// The wire form of `input`, taking it (nothing of a forwarded message is copied).
    pub fn of(input: Input) -> Self {
        let token = |t: Option<Box<str>>| t.map(String::from);
        match input {
            Input::Command(Command::Get(r)) => WireInput::Get {
                shadow: r.shadow,
                token: token(r.client_token),
            },
            Input::Command(Command::Update(r)) => WireInput::Update {
                shadow: r.shadow,
                token: token(r.client_token),
                version: r.version,
                desired: WirePatch::of(r.desired),
                reported: WirePatch::of(r.reported),
                state: r.state,
            },
            Input::Command(Command::Delete(r)) => WireInput::Delete {
                shadow: r.shadow,
                token: token(r.client_token),
                version: r.version,
            },
            Input::Command(Command::Telemetry(s)) => WireInput::Telemetry {
                ts: s.ts,
                values: s.values,
            },
            Input::Timer => WireInput::Timer,
            Input::Child(name, reported) => WireInput::Child { name, reported },
            Input::Presence(connected) => WireInput::Presence(connected),
            Input::Job(job) => WireInput::Job(job),
            Input::Reply {
                request_id,
                name,
                payload,
            } => WireInput::Reply {
                request_id,
                name,
                payload,
            },
        }
    }

    pub fn into_input(self) -> Input {
        let token = |t: Option<String>| t.map(Box::from);
        match self {
            WireInput::Get { shadow, token: t } => Input::Command(Command::Get(GetRequest {
                shadow,
                client_token: token(t),
            })),
            WireInput::Update {
                shadow,
                token: t,
                version,
                desired,
                reported,
                state,
            } => Input::Command(Command::Update(UpdateRequest {
                shadow,
                client_token: token(t),
                version,
                desired: desired.into_patch(),
                reported: reported.into_patch(),
                state,
            })),
            WireInput::Delete {
                shadow,
                token: t,
                version,
            } => Input::Command(Command::Delete(DeleteRequest {
                shadow,
                client_token: token(t),
                version,
            })),
            WireInput::Telemetry { ts, values } => {
                Input::Command(Command::Telemetry(Sample { ts, values }))
            }
            WireInput::Timer => Input::Timer,
            WireInput::Child { name, reported } => Input::Child(name, reported),
            WireInput::Presence(connected) => Input::Presence(connected),
            WireInput::Job(job) => Input::Job(job),
            WireInput::Reply {
                request_id,
                name,
                payload,
            } => Input::Reply {
                request_id,
                name,
                payload,
            },
        }
    }
}

/// A reply to a caller.
#[derive(Debug, Serialize, Deserialize)]
pub struct WireReply {
    shadow: ShadowName,
    op: Op,
    outcome: Result<u64, (u16, String)>,
    client_token: Option<String>,
    payload: Bytes,
    duplicate: bool,
}

impl WireReply {
    pub fn of(reply: Reply) -> Self {
        Self {
            shadow: reply.shadow,
            op: reply.op,
            outcome: reply.outcome.map_err(|e| (e.code, e.message.into_owned())),
            client_token: reply.client_token.map(String::from),
            payload: reply.payload,
            duplicate: reply.duplicate,
        }
    }

    pub fn into_reply(self) -> Reply {
        Reply {
            shadow: self.shadow,
            op: self.op,
            outcome: self.outcome.map_err(|(code, message)| ShadowError {
                code,
                message: message.into(),
            }),
            client_token: self.client_token.map(Box::from),
            payload: self.payload,
            duplicate: self.duplicate,
        }
    }
}

/// A thing's type and attributes.
#[derive(Debug, Serialize, Deserialize)]
pub struct WireMeta {
    device_type: Option<TypeName>,
    attributes: BTreeMap<String, String>,
}

impl WireMeta {
    pub fn of(meta: &ThingMeta) -> Self {
        Self {
            device_type: meta.device_type.clone(),
            attributes: meta.attributes.clone(),
        }
    }

    pub fn into_meta(self) -> Arc<ThingMeta> {
        Arc::new(ThingMeta {
            device_type: self.device_type,
            attributes: self.attributes,
        })
    }
}

/// Encodes a frame (or a handshake message).
pub fn encode<T: Serialize>(value: &T) -> Bytes {
    Bytes::from(rmp_serde::to_vec(value).expect("frames always encode"))
}

/// Decodes a frame (or a handshake message).
pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, String> {
    rmp_serde::from_slice(bytes).map_err(|e| e.to_string())
}

/// Parses a thing name from a peer.
pub fn thing(name: &str) -> Option<ThingName> {
    ThingName::new(name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn round_trip(input: Input) -> Input {
        let frame = Frame::Work {
            id: 7,
            thing: "t".into(),
            input: WireInput::of(input.clone()),
            documents: true,
            origin: WireOrigin::Device,
            audit: None,
            ack: true,
        };
        match decode::<Frame>(&encode(&frame)).unwrap() {
            Frame::Work { input, .. } => input.into_input(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn inputs_cross_the_wire_unchanged() {
        let limits = twin_core::Limits::default();
        let update = twin_core::request::parse_update(
            ShadowName::named("cfg").unwrap(),
            br#"{"state":{"desired":{"a":{"b":[1,2.5,"x"]}},"reported":null},"clientToken":"c","version":4}"#,
            &limits,
        )
        .unwrap();
        let inputs = vec![
            Input::Command(Command::Update(update)),
            Input::Command(Command::Telemetry(
                Sample::parse(br#"{"ts":5,"t":21.5,"s":"on"}"#).unwrap(),
            )),
            Input::Command(Command::Get(GetRequest {
                shadow: ShadowName::CLASSIC,
                client_token: Some("x".into()),
            })),
            Input::Command(Command::Delete(DeleteRequest {
                shadow: ShadowName::CLASSIC,
                client_token: None,
                version: Some(3),
            })),
            Input::Timer,
            Input::Child("kid".into(), Some(json!({"v": 1}))),
            Input::Child("kid".into(), None),
            Input::Presence(false),
            Input::Reply {
                request_id: Some("r".into()),
                name: "reboot".into(),
                payload: json!({"ok": true}),
            },
        ];
        for input in inputs {
            assert_eq!(
                format!("{:?}", round_trip(input.clone())),
                format!("{input:?}")
            );
        }
    }

    #[test]
    fn proofs_need_the_secret_and_the_role() {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let proof = prove(b"secret", "server", &a, &b);
        assert!(verify(b"secret", "server", &a, &b, &proof));
        assert!(!verify(b"other", "server", &a, &b, &proof));
        assert!(!verify(b"secret", "client", &a, &b, &proof));
        assert!(!verify(b"secret", "server", &b, &a, &proof));
    }
}
