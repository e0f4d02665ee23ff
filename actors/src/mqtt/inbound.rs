//! What a message a device published asks for, shared by the endpoint and the bridge: a
//! command for its twin, an immediate AWS rejection (the payload was refused before reaching
//! the twin), or a refusal without an answer topic.

use crate::mqtt::{
    packets::Reason,
    topics::{self, DeviceTopic},
};
use bytes::Bytes;
use tracing::info;
use twin_core::{Command, Limits, Op, Sample, ThingName, request};

/// The meaning of one device message.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// A command for the twin of `thing`.
    Command(ThingName, Command),
    /// Refused before reaching a twin; publish `payload` on `topic` (…/rejected).
    Answer {
        thing: ThingName,
        topic: String,
        payload: Bytes,
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
                Ok(command) => Inbound::Command(thing, command),
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
                    }
                }
            }
        }
        DeviceTopic::Telemetry { thing } => match Sample::parse(payload) {
            Ok(sample) => Inbound::Command(thing, Command::Telemetry(sample)),
            Err(error) => {
                metrics::counter!("doppel_rejections_total", "code" => error.code.to_string())
                    .increment(1);
                info!(%thing, code = error.code, message = %error.message, "refused telemetry");
                Inbound::Refuse(Reason::PayloadInvalid)
            }
        },
        // Commands and gateways arrive with later parts of the device API.
        DeviceTopic::CommandReply { .. } | DeviceTopic::GatewayTelemetry { .. } => {
            Inbound::Refuse(Reason::NotAuthorized)
        }
    }
}
