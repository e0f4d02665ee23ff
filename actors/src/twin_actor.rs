//! The twin actor: one actix actor per active thing, hosting twin-core's state machine. Its
//! mailbox is the only way to change the twin. Between messages it keeps the twin in its
//! encoded form (the same bytes that go to the store), which keeps a million resident twins
//! small; every command decodes it, applies the command, and hands the new record and the
//! effects to its shard host, which commits and then releases them.

use crate::{ack::Ack, shard::ShardHost};
use actix::{Actor, ActorContext, Addr, Context, Handler, Message};
use bytes::Bytes;
use std::sync::Arc;
use tokio::sync::oneshot;
use twin_core::{Command, CompiledType, Effect, Limits, Reply, ShadowError, ThingName, Twin};

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
}

impl Message for Deliver {
    type Result = ();
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
}

impl Message for Handled {
    type Result = ();
}

/// Stops a twin actor (passivation); the host sends it only when nothing is pending.
pub(crate) struct Passivate;

impl Message for Passivate {
    type Result = ();
}

pub(crate) struct TwinActor {
    thing: ThingName,
    /// The encoded twin; `None` until its first change.
    record: Option<Bytes>,
    device_type: Option<Arc<CompiledType>>,
    limits: Arc<Limits>,
    host: Addr<ShardHost>,
}

impl TwinActor {
    pub(crate) fn new(
        thing: ThingName,
        record: Option<Bytes>,
        device_type: Option<Arc<CompiledType>>,
        limits: Arc<Limits>,
        host: Addr<ShardHost>,
    ) -> Self {
        Self {
            thing,
            record,
            device_type,
            limits,
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
                let ctx = twin_core::Context {
                    limits: &self.limits,
                    device_type: self.device_type.as_deref(),
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
                let reply = msg.command.refuse(ShadowError::internal(), now);
                effects.push(Effect::Reply(reply));
            }
        }
        self.host.do_send(Handled {
            thing: self.thing.clone(),
            record,
            effects,
            origin: msg.origin,
            ack: msg.ack,
        });
    }
}

impl Handler<Passivate> for TwinActor {
    type Result = ();

    fn handle(&mut self, _: Passivate, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
