//! What a message a device published asks for, shared by the endpoint and the bridge: work
//! for its twin (a command, a reply to a rule's command), an immediate AWS rejection (the payload was refused before reaching
//! the twin), or a refusal without an answer topic.

use crate::mqtt::{
    packets::Reason,
    topics::{self, DeviceTopic},
};
use bytes::Bytes;
use rules_dsl::Input;
use tracing::info;
use twin_core::{BatchEntry, Command, Limits, Op, Sample, ThingName, request};

/// The meaning of one device message.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// Work for the twin of `thing`.
    Command(ThingName, Input),
    /// A gateway's batch: telemetry for devices registered under `gateway`.
    Batch {
        gateway: ThingName,
        entries: Vec<BatchEntry>,
    },
    /// Refused before reaching a twin; publish `payload` on `topic` (…/rejected), and
    /// acknowledge with `reason` (shadow requests: success, as AWS — the answer is the
    /// rejection; telemetry: the refusal's reason).
    Answer {
        thing: ThingName,
        topic: String,
        payload: Bytes,
        reason: Reason,
    },
    /// Refused, with no topic to answer on (the PUBACK carries the reason in MQTT 5).
    Refuse(Reason),
}

/// Interprets a message published on `target`.
pub(crate) fn interpret(target: DeviceTopic, payload: &[u8], limits: &Limits) -> Inbound {
    let kind = match &target {
        DeviceTopic::Shadow { op, .. } => match op {
            Op::Get => "shadow_get",
            Op::Update => "shadow_update",
            Op::Delete => "shadow_delete",
            Op::Telemetry => "telemetry",
        },
        DeviceTopic::Telemetry { .. } => "telemetry",
        DeviceTopic::CommandReply { .. } => "command_reply",
        DeviceTopic::GatewayTelemetry { .. } => "gateway_telemetry",
        DeviceTopic::Jobs { .. } => "jobs",
    };
    metrics::counter!("doppel_messages_in_total", "kind" => kind).increment(1);
    match target {
        DeviceTopic::Shadow { thing, shadow, op } => {
            let parsed = match op {
                Op::Update => {
                    request::parse_update(shadow.clone(), payload, limits).map(Command::Update)
                }
                Op::Get => request::parse_get(shadow.clone(), payload).map(Command::Get),
                Op::Delete => request::parse_delete(shadow.clone(), payload).map(Command::Delete),
                Op::Telemetry => unreachable!("shadow topics carry get, update or delete"),
            };
            match parsed {
                Ok(command) => Inbound::Command(thing, Input::Command(command)),
                Err(rejection) => {
                    metrics::counter!("doppel_rejections_total", "code" => rejection.error.code.to_string())
                        .increment(1);
                    Inbound::Answer {
                        topic: topics::reply(&thing, &shadow, op, false),
                        payload: twin_core::rejected(
                            &rejection.error,
                            rejection.client_token.as_deref(),
                            crate::now_ms(),
                        ),
                        thing,
                        reason: Reason::Success,
                    }
                }
            }
        }
        DeviceTopic::Telemetry { thing } => match Sample::parse(payload) {
            Ok(sample) => Inbound::Command(thing, Input::Command(Command::Telemetry(sample))),
            Err(error) => {
                metrics::counter!("doppel_rejections_total", "code" => error.code.to_string())
                    .increment(1);
                info!(%thing, code = error.code, message = %error.message, "refused telemetry");
                Inbound::Answer {
                    topic: topics::telemetry_rejected(&thing),
                    payload: twin_core::rejected(&error, None, crate::now_ms()),
                    thing,
                    reason: Reason::for_refusal(error.code),
                }
            }
        },
        DeviceTopic::CommandReply { thing, name } => {
            match serde_json::from_slice::<serde_json::Value>(payload) {
                Ok(payload @ serde_json::Value::Object(_)) => {
                    let request_id = payload
                        .get("request_id")
                        .and_then(serde_json::Value::as_str)
                        .map(str::to_owned);
                    Inbound::Command(
                        thing,
                        Input::Reply {
                            request_id,
                            name,
                            payload,
                        },
                    )
                }
                _ => {
                    info!(%thing, command = %name, "refused a command reply that is not a JSON object");
                    metrics::counter!("doppel_rejections_total", "code" => "400").increment(1);
                    Inbound::Refuse(Reason::PayloadInvalid)
                }
            }
        }
        DeviceTopic::Jobs { thing, op } => {
            // An empty payload is an empty request (AWS's clients send `{}` or nothing).
            let parsed = if payload.iter().all(u8::is_ascii_whitespace) {
                Ok(serde_json::Value::Object(serde_json::Map::new()))
            } else {
                serde_json::from_slice::<serde_json::Value>(payload)
            };
            match parsed {
                Ok(payload @ serde_json::Value::Object(_)) => Inbound::Command(
                    thing,
                    Input::Job(twin_core::JobInput::Request { op, payload }),
                ),
                _ => {
                    metrics::counter!("doppel_rejections_total", "code" => "400").increment(1);
                    let body = serde_json::json!({
                        "code": "InvalidJson",
                        "message": "the request is not a JSON object",
                        "timestamp": crate::now_ms() / 1000,
                    });
                    Inbound::Answer {
                        topic: topics::jobs_reply(&thing, &op, false),
                        payload: Bytes::from(body.to_string()),
                        thing,
                        reason: Reason::Success,
                    }
                }
            }
        }
        DeviceTopic::GatewayTelemetry { gateway } => match request::parse_batch(payload) {
            Ok(entries) => {
                metrics::counter!("doppel_gateway_entries_total").increment(entries.len() as u64);
                Inbound::Batch { gateway, entries }
            }
            Err(error) => {
                metrics::counter!("doppel_rejections_total", "code" => error.code.to_string())
                    .increment(1);
                info!(%gateway, code = error.code, message = %error.message, "refused a gateway batch");
                Inbound::Refuse(Reason::PayloadInvalid)
            }
        },
    }
}
