//! The twin actor: one actix actor per active thing, hosting twin-core's state machine. Its
//! mailbox is the only way to change the twin. Between messages it keeps the twin in its
//! encoded form (the same bytes that go to the store), which keeps a million resident twins
//! small; every command decodes it, applies the command, and hands the new record and the
//! effects to its shard host, which commits and then releases them.

use crate::{ack::Ack, node::Shared, shard::ShardHost};
use actix::{Actor, ActorContext, Addr, Context, Handler, Message};
use bytes::Bytes;
use std::{collections::BTreeMap, sync::Arc};
use tokio::sync::oneshot;
use twin_core::{Command, Effect, Reply, ShadowError, ThingName, Twin, TypeName};

/// Who sent a command, and so where its reply goes.
#[derive(Debug)]
pub enum Origin {
    /// A device over MQTT: replies are published on the device's reply topics.
    Device,
    /// A caller in the node (HTTP, WebSocket): the reply is handed back; accepted changes are
    /// also published to the device's topics.
    Caller(oneshot::Sender<Reply>),
}

/// A command for a twin, as it travels to the twin actor.
#[derive(Debug)]
pub struct Deliver {
    /// The command.
    pub command: Command,
    /// Where the reply goes.
    pub origin: Origin,
    /// Acknowledged once the command's effects are durable and released.
    pub ack: Option<Ack>,
    /// Whether to build `…/update/documents` notices.
    pub documents: bool,
    /// Record the change in the audit log under this actor (an API key id).
    pub audit: Option<Arc<str>>,
}

impl Message for Deliver {
    type Result = ();
}

/// What a thing is, as far as watchers filter on it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ThingMeta {
    /// The thing's device type.
    pub device_type: Option<TypeName>,
    /// Its attributes.
    pub attributes: BTreeMap<String, String>,
}

/// What a twin actor hands back to its host after a command.
#[derive(Debug)]
pub(crate) struct Handled {
    pub thing: ThingName,
    /// The new record, if the command changed the twin.
    pub record: Option<Bytes>,
    pub effects: Vec<Effect>,
    pub origin: Origin,
    pub ack: Option<Ack>,
    pub audit: Option<Arc<str>>,
    pub meta: Arc<ThingMeta>,
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

pub(crate) struct TwinActor {
    thing: ThingName,
    /// The encoded twin; `None` until its first change.
    record: Option<Bytes>,
    meta: Arc<ThingMeta>,
    shared: Arc<Shared>,
    host: Addr<ShardHost>,
}

impl TwinActor {
    pub(crate) fn new(
        thing: ThingName,
        record: Option<Bytes>,
        meta: Arc<ThingMeta>,
        shared: Arc<Shared>,
        host: Addr<ShardHost>,
    ) -> Self {
        Self {
            thing,
            record,
            meta,
            shared,
            host,
        }
    }

    fn twin(&self) -> Result<Twin, twin_core::TwinError> {
        match &self.record {
            Some(bytes) => Twin::decode(self.thing.clone(), bytes),
            None => Ok(Twin::new(self.thing.clone())),
        }
    }
}

impl Actor for TwinActor {
    type Context = Context<Self>;
}

impl Handler<Deliver> for TwinActor {
    type Result = ();

    fn handle(&mut self, msg: Deliver, _ctx: &mut Context<Self>) {
        let now = crate::now_ms();
        let mut effects = Vec::with_capacity(4);
        let mut record = None;
        match self.twin() {
            Ok(mut twin) => {
                // The type is looked up per command, so a replaced type applies at once.
                let device_type = self
                    .meta
                    .device_type
                    .as_ref()
                    .and_then(|t| self.shared.directory.device_type(t));
                let ctx = twin_core::Context {
                    limits: &self.shared.limits,
                    device_type: device_type.as_deref(),
                    documents: msg.documents,
                };
                twin.handle(msg.command, &ctx, now, &mut effects);
                if twin.take_dirty() {
                    let bytes = Bytes::from(twin.encode());
                    self.record = Some(bytes.clone());
                    record = Some(bytes);
                }
            }
            Err(error) => {
                // The loader checked the stored record and this actor encodes every record it
                // keeps, so this is corruption in memory: refuse rather than overwrite.
                tracing::error!(thing = %self.thing, %error, "twin record does not decode");
                effects.push(Effect::Reply(
                    msg.command.refuse(ShadowError::internal(), now),
                ));
            }
        }
        self.host.do_send(Handled {
            thing: self.thing.clone(),
            record,
            effects,
            origin: msg.origin,
            ack: msg.ack,
            audit: msg.audit,
            meta: self.meta.clone(),
        });
    }
}

impl Handler<Stop> for TwinActor {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Handler<SetMeta> for TwinActor {
    type Result = ();

    fn handle(&mut self, SetMeta(meta): SetMeta, _: &mut Context<Self>) {
        self.meta = meta;
    }
}
