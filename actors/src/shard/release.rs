//! Releasing a committed command's effects: replies and notices to the device's topics (or
//! the caller), refusals of telemetry and gateway entries, change events and rule outputs to
//! the change hub, reports to a parent twin, the acknowledgement; and the audit and rule-log
//! entries a command's effects make.

use super::ShardHost;
use crate::{
    hub::{ChangeEvent, RuleEvent},
    mqtt::topics,
    work::{Deliver, Done, Origin, ThingMeta, Ticket},
};
use bytes::Bytes;
use rules_dsl::{Input, Output, OutputKind};
use serde_json::json;
use std::sync::Arc;
use storage::{AuditEntry, RuleLogEntry, repo::LogKind};
use tracing::{info, warn};
use twin_core::{Effect, Op, ThingName};

impl ShardHost {
    /// Sends a command's effects on their way and acknowledges it.
    pub(super) fn release(&self, done: Done) {
        let Done {
            thing,
            effects,
            outputs,
            child_report,
            meta,
            ticket:
                Ticket {
                    origin,
                    ack,
                    received,
                    ..
                },
            ..
        } = done;
        crate::stages::since(&self.shared.stages.total, received);
        let outbox = &self.shared.outbox;
        let (mut caller, gateway) = match origin {
            Origin::Caller(tx) => (Some(tx), None),
            Origin::Device | Origin::Node => (None, None),
            Origin::Gateway(gateway) => (None, Some(gateway)),
        };
        let mut refused = None;
        for effect in effects {
            match effect {
                Effect::Reply(reply) => {
                    let accepted = reply.outcome.is_ok();
                    if let Err(error) = &reply.outcome {
                        metrics::counter!("doppel_rejections_total", "code" => error.code.to_string()).increment(1);
                    }
                    if let Some(tx) = caller.take() {
                        // Accepted changes made through the API are announced to the device too.
                        if accepted && matches!(reply.op, Op::Update | Op::Delete) {
                            let topic = topics::reply(&thing, &reply.shadow, reply.op, true);
                            outbox.publish(&thing, topic, reply.payload.clone());
                        }
                        let _ = tx.send(reply);
                    } else if reply.op == Op::Telemetry {
                        if let Err(error) = &reply.outcome {
                            info!(%thing, gateway = ?gateway.as_ref().map(ThingName::as_str), code = error.code, message = %error.message, "telemetry refused");
                            if gateway.is_none() {
                                // The device learns why; its PUBACK carries the reason (MQTT 5).
                                refused = Some(error.code);
                                outbox.publish(
                                    &thing,
                                    topics::telemetry_rejected(&thing),
                                    reply.payload.clone(),
                                );
                            }
                            if let Some(gateway) = &gateway {
                                let payload = json!({
                                    "thing": thing.as_str(),
                                    "code": error.code,
                                    "message": error.message,
                                });
                                outbox.publish(
                                    gateway,
                                    topics::gateway_rejected(gateway),
                                    Bytes::from(payload.to_string()),
                                );
                            }
                        }
                    } else {
                        let topic = topics::reply(&thing, &reply.shadow, reply.op, accepted);
                        outbox.publish(&thing, topic, reply.payload);
                    }
                }
                Effect::Delta {
                    shadow, payload, ..
                } => {
                    outbox.publish(&thing, topics::delta(&thing, &shadow), payload);
                }
                Effect::Documents {
                    shadow, payload, ..
                } => {
                    outbox.publish(&thing, topics::documents(&thing, &shadow), payload);
                }
                Effect::Changed(change) => self
                    .shared
                    .publish_change(Arc::new(ChangeEvent::new(change, meta.clone()))),
                Effect::JobReply(reply) => {
                    let topic = topics::jobs_reply(&thing, &reply.op, reply.accepted);
                    outbox.publish(&thing, topic, reply.payload);
                }
                Effect::JobNotify { next, payload } => {
                    outbox.publish(&thing, topics::jobs_notify(&thing, next), payload);
                }
                Effect::Execution(change) => self.shared.publish_event(Arc::new(
                    RuleEvent::execution(thing.clone(), meta.clone(), &change),
                )),
                Effect::Telemetry { .. } => {}
            }
        }
        for output in outputs {
            self.release_output(&thing, &meta, output);
        }
        if let Some((parent, reported)) = child_report {
            self.shared.route(
                parent,
                Deliver::internal(Input::Child(thing.to_string(), Some(reported))),
            );
        }
        match (ack, refused) {
            (Some(ack), Some(code)) => ack.refuse(code),
            (Some(ack), None) => ack.done(),
            (None, _) => {}
        }
    }

    /// Sends what a rule did: commands to the device, alerts and events to apps.
    fn release_output(&self, thing: &ThingName, meta: &Arc<ThingMeta>, output: Output) {
        match &output.kind {
            OutputKind::Command { name, payload, .. } => {
                let bytes = Bytes::from(payload.to_string());
                self.shared
                    .outbox
                    .publish(thing, topics::command(thing, name), bytes);
                metrics::counter!("doppel_rule_commands_total").increment(1);
            }
            OutputKind::SetRefused { message } => {
                warn!(%thing, rule = %output.rule, %message, "the twin refused a rule's set");
            }
            OutputKind::Set { .. } => return,
            OutputKind::Alert { .. }
            | OutputKind::Event { .. }
            | OutputKind::CommandEnded { .. } => {}
        }
        metrics::counter!("doppel_rule_outputs_total", "kind" => output_kind(&output.kind))
            .increment(1);
        self.shared.publish_event(Arc::new(RuleEvent::new(
            thing.clone(),
            meta.clone(),
            output,
        )));
    }
}

/// The audit entry of a change made through the API.
pub(super) fn audit_entry(
    thing: &ThingName,
    effects: &[Effect],
    actor: &str,
) -> Option<AuditEntry> {
    let reply = effects.iter().find_map(|e| match e {
        Effect::Reply(r) => Some(r),
        _ => None,
    })?;
    let version = *reply.outcome.as_ref().ok()?;
    let (action, before, after) = match reply.op {
        Op::Update => (
            "shadow.update",
            version.checked_sub(1).filter(|v| *v > 0),
            version,
        ),
        // The reply reports the deleted document's version; the deletion takes the next one.
        Op::Delete => ("shadow.delete", Some(version), version + 1),
        Op::Get | Op::Telemetry => return None,
    };
    let details = reply.shadow.name().map(|name| json!({ "shadow": name }));
    Some(AuditEntry::new(
        actor,
        action,
        thing.as_str(),
        before,
        Some(after),
        details,
        crate::now_ms(),
    ))
}

fn output_kind(kind: &OutputKind) -> &'static str {
    match kind {
        OutputKind::Command { .. } => "command",
        OutputKind::Alert { .. } => "alert",
        OutputKind::Event { .. } => "event",
        OutputKind::CommandEnded { .. } => "command_ended",
        OutputKind::Set { .. } => "set",
        OutputKind::SetRefused { .. } => "set_refused",
    }
}

/// The rule log entry of an output, if it is logged: alerts, and commands sent and ended.
pub(super) fn log_entry(thing: &ThingName, output: &Output) -> Option<(LogKind, RuleLogEntry)> {
    // Alerts, and commands sent and ended.
    let kind = match &output.kind {
        OutputKind::Alert { .. } => LogKind::Alert,
        OutputKind::Command { .. } | OutputKind::CommandEnded { .. } => LogKind::Command,
        _ => return None,
    };
    let (_, details) = output.kind.describe();
    Some((
        kind,
        RuleLogEntry {
            at: output.at,
            thing: thing.to_string(),
            rule: output.rule.to_string(),
            details: details.as_object().cloned().unwrap_or_default(),
        },
    ))
}
