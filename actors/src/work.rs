//! What travels between the node, its shard hosts and the twin actors: work for a twin
//! (`Deliver`, routed to its host as `Route`), what a twin hands back (`Handled`), the messages
//! a host sends its twins, and `ThingMeta`, what watchers filter on. A leaf module: it names no
//! actor.

use crate::ack::Ack;
use actix::Message;
use bytes::Bytes;
use rules_dsl::{Input, Output, TraceEntry};
use serde_json::Value;
use std::{collections::BTreeMap, sync::Arc, time::Instant};
use tokio::sync::oneshot;
use twin_core::{Effect, ThingName, TypeName};

/// Who sent a command, and so where its reply goes.
#[derive(Debug)]
pub enum Origin {
    /// A device over MQTT: replies go to the device's reply topics.
    Device,
    /// The node itself: a rule timer, a child's change reaching its parent.
    Node,
    /// A caller in the node (HTTP, WebSocket): the reply is handed back; accepted changes are
    /// also published to the device's topics.
    Caller(oneshot::Sender<twin_core::Reply>),
    /// A gateway, for a device registered under it (its `gateway` attribute); refusals go to
    /// the gateway's `gateways/{gateway}/telemetry/rejected` topic.
    Gateway(ThingName),
}

/// Work for a twin, as it travels to the twin actor.
#[derive(Debug)]
pub struct Deliver {
    /// A command, a child's change, a command reply or a timer.
    pub input: Input,
    /// Where the reply goes.
    pub origin: Origin,
    /// Acknowledged once the work's effects are durable and released.
    pub ack: Option<Ack>,
    /// Whether to build `…/update/documents` notices.
    pub documents: bool,
    /// Record the change in the audit log under this actor (an API key id).
    pub audit: Option<Arc<str>>,
    /// When the work entered the node (for the stage histograms).
    pub received: Instant,
}

impl Message for Deliver {
    type Result = ();
}

impl Deliver {
    /// Work the node gives a twin by itself (a timer, a child's change): nothing to
    /// acknowledge, no one to answer.
    pub(crate) fn internal(input: Input) -> Self {
        Self {
            input,
            origin: Origin::Node,
            ack: None,
            documents: false,
            audit: None,
            received: Instant::now(),
        }
    }
}

/// What a thing is, as far as watchers filter on it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ThingMeta {
    /// The thing's device type.
    pub device_type: Option<TypeName>,
    /// Its attributes.
    pub attributes: BTreeMap<String, String>,
}

impl ThingMeta {
    /// The thing whose child this one is (its `parent` attribute).
    pub fn parent(&self) -> Option<ThingName> {
        self.attributes
            .get("parent")
            .and_then(|p| ThingName::new(p).ok())
    }

    /// Whether the thing is registered under `gateway` (its `gateway` attribute).
    pub fn is_behind(&self, gateway: &ThingName) -> bool {
        self.attributes
            .get("gateway")
            .is_some_and(|g| g == gateway.as_str())
    }
}

/// What a twin actor hands back to its host after some work.
#[derive(Debug)]
pub(crate) struct Handled {
    pub thing: ThingName,
    /// The new record, if the work changed the twin.
    pub record: Option<Bytes>,
    /// The new rule state, if the rules changed it.
    pub rule_state: Option<Bytes>,
    /// The twin's next rule deadline, if it changed.
    pub deadline: Option<Option<u64>>,
    pub effects: Vec<Effect>,
    /// What the rules did.
    pub outputs: Vec<Output>,
    /// The twin's whole `reported` section for its parent, when it changed.
    pub child_report: Option<(ThingName, Value)>,
    pub origin: Origin,
    pub ack: Option<Ack>,
    pub audit: Option<Arc<str>>,
    pub meta: Arc<ThingMeta>,
    /// Whether the work came through the host (it counts what it routed).
    pub routed: bool,
    /// When the work entered the node.
    pub received: Instant,
    /// When the twin handed it back.
    pub handled: Instant,
}

impl Message for Handled {
    type Result = ();
}

/// Stops a twin actor (passivation, decommissioning); the host sends it only when nothing is
/// in flight.
pub(crate) struct Stop;

impl Message for Stop {
    type Result = ();
}

/// New type or attributes of the thing.
pub(crate) struct SetMeta(pub Arc<ThingMeta>);

impl Message for SetMeta {
    type Result = ();
}

/// The latest rule evaluations of the twin, newest last.
pub(crate) struct Trace(pub oneshot::Sender<Vec<TraceEntry>>);

impl Message for Trace {
    type Result = ();
}

/// A command for the twin `thing`, sent to the host of its shard.
#[derive(Debug)]
pub(crate) struct Route {
    pub thing: ThingName,
    pub deliver: Deliver,
}

impl Message for Route {
    type Result = ();
}
