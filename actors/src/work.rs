//! What travels through a shard host: work for a twin (`Deliver`, routed to its host as
//! `Route`) and what the twin made of it (`Done`), which waits in the commit window until the
//! commit holding its writes returns and is then released. Both carry the same `Ticket` — who
//! asked, what to acknowledge, when it entered the node — from the endpoint to the release.
//! Also `ThingMeta`, what watchers filter on. A leaf module: it names no actor.

use crate::ack::Ack;
use actix::Message;
use bytes::Bytes;
use rules_dsl::{Input, Output, TraceEntry};
use serde_json::Value;
use std::{
    collections::{BTreeMap, HashSet},
    sync::Arc,
    time::Instant,
};
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

/// Who asked for a piece of work and what to tell them: travels unchanged from the endpoint
/// to the release.
#[derive(Debug)]
pub struct Ticket {
    /// Where the reply goes.
    pub origin: Origin,
    /// Acknowledged once the work's effects are durable and released.
    pub ack: Option<Ack>,
    /// Record the change in the audit log under this actor (an API key id).
    pub audit: Option<Arc<str>>,
    /// When the work entered the node (for the stage histograms).
    pub received: Instant,
}

/// Work for a twin.
#[derive(Debug)]
pub struct Deliver {
    /// A command, a child's change, a command reply or a timer.
    pub input: Input,
    /// Whether to build `…/update/documents` notices.
    pub documents: bool,
    pub ticket: Ticket,
}

impl Deliver {
    /// Work from outside the node, received now.
    pub fn new(input: Input, origin: Origin, ack: Option<Ack>) -> Self {
        Self {
            input,
            documents: false,
            ticket: Ticket {
                origin,
                ack,
                audit: None,
                received: Instant::now(),
            },
        }
    }

    /// Work the node gives a twin by itself (a timer, a child's change): nothing to
    /// acknowledge, no one to answer.
    pub(crate) fn internal(input: Input) -> Self {
        Self::new(input, Origin::Node, None)
    }

    /// Builds `…/update/documents` notices (someone listens to them).
    pub fn with_documents(mut self, documents: bool) -> Self {
        self.documents = documents;
        self
    }

    /// Records the change in the audit log under `actor`.
    pub fn audited(mut self, actor: Option<&str>) -> Self {
        self.ticket.audit = actor.map(Arc::from);
        self
    }
}

/// What a thing is, as far as watchers filter on it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
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

/// What a work item writes to the store.
#[derive(Debug, Default)]
pub(crate) struct Writes {
    /// The twin's new record and its write count, if the work changed the twin.
    pub record: Option<(Bytes, u64)>,
    /// The new rule state, if the rules changed it (empty: remove it).
    pub rule_state: Option<Bytes>,
    /// The twin's next rule deadline, if it changed.
    pub deadline: Option<Option<u64>>,
}

/// A twin's finished work: its writes go to the commit window, the rest waits there for the
/// commit and is then released.
#[derive(Debug)]
pub(crate) struct Done {
    pub thing: ThingName,
    pub writes: Writes,
    pub effects: Vec<Effect>,
    /// What the rules did.
    pub outputs: Vec<Output>,
    /// The twin's whole `reported` section for its parent, when it changed.
    pub child_report: Option<(ThingName, Value)>,
    pub meta: Arc<ThingMeta>,
    pub ticket: Ticket,
    /// When the twin finished it.
    pub handled: Instant,
}

impl Done {
    /// Nothing done yet.
    pub fn new(thing: ThingName, meta: Arc<ThingMeta>, ticket: Ticket) -> Self {
        Self {
            thing,
            writes: Writes::default(),
            effects: Vec::new(),
            outputs: Vec::new(),
            child_report: None,
            meta,
            ticket,
            handled: Instant::now(),
        }
    }
}

/// Work for the twin `thing`, sent to the host of its shard.
#[derive(Debug)]
pub(crate) struct Route {
    pub thing: ThingName,
    pub deliver: Deliver,
}

impl Message for Route {
    type Result = ();
}

/// Answers once everything routed to a host before it is committed and released.
pub(crate) struct Flush(pub oneshot::Sender<()>);

impl Message for Flush {
    type Result = ();
}

/// Stops a decommissioned thing's twin and drops its uncommitted record; answers once no
/// commit holding an older record can still land.
pub(crate) struct Evict(pub ThingName, pub oneshot::Sender<()>);

impl Message for Evict {
    type Result = ();
}

/// A thing's type or attributes changed.
pub(crate) struct Refresh(pub ThingName, pub Arc<ThingMeta>);

impl Message for Refresh {
    type Result = ();
}

/// The latest rule evaluations of an active twin (none if it is not active).
pub(crate) struct TraceOf(pub ThingName, pub oneshot::Sender<Vec<TraceEntry>>);

impl Message for TraceOf {
    type Result = ();
}

/// The node no longer owns these shards: forget their twins, drop their uncommitted work and
/// send work still waiting for a load back to the router.
pub(crate) struct DropShards(pub Arc<HashSet<u32>>, pub oneshot::Sender<()>);

impl Message for DropShards {
    type Result = ();
}
