//! The twin actor: one actix actor per active thing, hosting twin-core's state machine and the
//! thing's rules. Its mailbox is the only way to change the twin. Between messages it keeps
//! the twin and its rule state in their encoded forms (the same bytes that go to the store),
//! which keeps a million resident twins small; every command decodes them, applies the
//! command, runs the rules, and hands the new records and the effects to its shard host, which
//! commits and then releases them. Rule deadlines run on the actor's own timer.

use crate::{
    rules::TwinRules,
    shared::Shared,
    work::{Deliver, Handled, Origin, SetMeta, Stop, ThingMeta, Trace},
};
use actix::{Actor, ActorContext, AsyncContext, Context, Handler, Recipient, SpawnHandle};
use bytes::Bytes;
use rules_dsl::{Input, TraceEntry, TwinRuleState, engine};
use serde_json::Value;
use std::{collections::VecDeque, sync::Arc, time::Duration};
use twin_core::{Effect, ShadowError, ShadowName, ThingName, Twin};

/// A twin's rule state in memory.
enum RuleState {
    /// As loaded from the store.
    Encoded(Bytes),
    /// In use.
    Decoded(Box<TwinRuleState>),
}

/// Rule evaluations a twin remembers for `GET …/rules/trace`.
const TRACE_LEN: usize = 64;

pub(crate) struct TwinActor {
    thing: ThingName,
    /// The encoded twin; `None` until its first change.
    record: Option<Bytes>,
    /// The rule state: encoded as loaded, decoded once rules run (windows make encoding it
    /// per message costly); `None` until rules first ran.
    rule_state: Option<RuleState>,
    meta: Arc<ThingMeta>,
    shared: Arc<Shared>,
    host: Arc<Recipient<Handled>>,
    /// The rules attached, and the rule book's version they were read at.
    rules: (u64, TwinRules),
    /// The next rule deadline and the timer waiting for it.
    deadline: Option<u64>,
    timer: Option<SpawnHandle>,
    trace: VecDeque<TraceEntry>,
}

impl TwinActor {
    pub(crate) fn new(
        thing: ThingName,
        record: Option<Bytes>,
        rule_state: Option<Bytes>,
        meta: Arc<ThingMeta>,
        shared: Arc<Shared>,
        host: Arc<Recipient<Handled>>,
    ) -> Self {
        Self {
            thing,
            record,
            rule_state: rule_state.map(RuleState::Encoded),
            meta,
            shared,
            host,
            rules: (0, Arc::from(Vec::new())),
            deadline: None,
            timer: None,
            trace: VecDeque::new(),
        }
    }

    fn twin(&self) -> Result<Twin, twin_core::TwinError> {
        match &self.record {
            Some(bytes) => Twin::decode(self.thing.clone(), bytes),
            None => Ok(Twin::new(self.thing.clone())),
        }
    }

    /// The rule state, decoded (and kept decoded from now on).
    fn decoded_rule_state(&mut self) -> &mut TwinRuleState {
        let state = match self.rule_state.take() {
            Some(RuleState::Decoded(state)) => state,
            Some(RuleState::Encoded(bytes)) => Box::new(TwinRuleState::decode(&bytes).unwrap_or_else(|error| {
                tracing::error!(thing = %self.thing, %error, "rule state does not decode; starting afresh");
                TwinRuleState::default()
            })),
            None => Box::default(),
        };
        match self.rule_state.insert(RuleState::Decoded(state)) {
            RuleState::Decoded(state) => state,
            RuleState::Encoded(_) => unreachable!("just decoded"),
        }
    }

    /// The rules attached to the twin now (re-read when the rule book changed).
    fn current_rules(&mut self) -> TwinRules {
        let book = self.shared.directory.rules();
        let version = book.version();
        if self.rules.0 != version {
            self.rules = (
                version,
                book.for_twin(&self.thing, self.meta.device_type.as_ref()),
            );
        }
        self.rules.1.clone()
    }

    /// Runs `input` and hands the result to the host.
    fn work(&mut self, msg: Deliver, routed: bool, ctx: &mut Context<Self>) {
        crate::stages::since(&self.shared.stages.queue, msg.received);
        let now = crate::now_ms();
        if let Origin::Gateway(gateway) = &msg.origin
            && !self.meta.is_behind(gateway)
        {
            let mut effects = Vec::new();
            if let Input::Command(command) = &msg.input {
                effects.push(Effect::Reply(command.refuse(ShadowError::forbidden(), now)));
            }
            self.host.do_send(Handled {
                thing: self.thing.clone(),
                record: None,
                rule_state: None,
                deadline: None,
                effects,
                outputs: Vec::new(),
                child_report: None,
                origin: msg.origin,
                ack: msg.ack,
                audit: msg.audit,
                meta: self.meta.clone(),
                routed,
                received: msg.received,
                handled: std::time::Instant::now(),
            });
            return;
        }
        let rules = self.current_rules();
        let mut effects = Vec::with_capacity(4);
        let mut record = None;
        let mut rule_state = None;
        let mut deadline_changed = None;
        let mut outputs = Vec::new();
        let mut child_report = None;
        match self.twin() {
            Ok(mut twin) => {
                // The type is looked up per command, so a replaced type applies at once.
                let device_type = self
                    .meta
                    .device_type
                    .as_ref()
                    .and_then(|t| self.shared.directory.device_type(t));
                let shared = self.shared.clone();
                let ctx_twin = twin_core::Context {
                    limits: &shared.limits,
                    device_type: device_type.as_deref(),
                    documents: msg.documents,
                };
                if rules.is_empty() && self.rule_state.is_none() {
                    // No rules: the plain twin.
                    if let Input::Command(command) = msg.input {
                        twin.handle(command, &ctx_twin, now, &mut effects);
                    }
                } else {
                    let state = self.decoded_rule_state();
                    let outcome = engine::handle(
                        &mut twin,
                        state,
                        &rules,
                        msg.input,
                        &ctx_twin,
                        now,
                        &mut effects,
                    );
                    let deadline = engine::next_deadline(state, &rules);
                    if outcome.state_changed {
                        // Empty bytes tell the host to remove the stored state.
                        let forget = state.is_empty() && rules.is_empty();
                        rule_state = Some(if forget {
                            Bytes::new()
                        } else {
                            Bytes::from(state.encode())
                        });
                        if forget {
                            self.rule_state = None;
                        }
                    }
                    if deadline != self.deadline {
                        deadline_changed = Some(deadline);
                        self.schedule(deadline, now, ctx);
                    }
                    for entry in outcome.trace {
                        if self.trace.len() == TRACE_LEN {
                            self.trace.pop_front();
                        }
                        self.trace.push_back(entry);
                    }
                    outputs = outcome.outputs;
                }
                if twin.take_dirty() {
                    let bytes = Bytes::from(twin.encode());
                    self.record = Some(bytes.clone());
                    record = Some(bytes);
                    if let Some(parent) = self.meta.parent()
                        && reported_changed(&effects)
                    {
                        let reported = twin
                            .shadow(&ShadowName::CLASSIC)
                            .map_or(Value::Null, |s| s.reported().to_json());
                        child_report = Some((parent, reported));
                    }
                }
            }
            Err(error) => {
                // The loader checked the stored record and this actor encodes every record it
                // keeps, so this is corruption in memory: refuse rather than overwrite.
                tracing::error!(thing = %self.thing, %error, "twin record does not decode");
                if let Input::Command(command) = &msg.input {
                    effects.push(Effect::Reply(command.refuse(ShadowError::internal(), now)));
                }
            }
        }
        self.host.do_send(Handled {
            thing: self.thing.clone(),
            record,
            rule_state,
            deadline: deadline_changed,
            effects,
            outputs,
            child_report,
            origin: msg.origin,
            ack: msg.ack,
            audit: msg.audit,
            meta: self.meta.clone(),
            routed,
            received: msg.received,
            handled: std::time::Instant::now(),
        });
    }

    /// Arms the timer for `deadline` (replacing any other).
    fn schedule(&mut self, deadline: Option<u64>, now: u64, ctx: &mut Context<Self>) {
        if let Some(timer) = self.timer.take() {
            ctx.cancel_future(timer);
        }
        self.deadline = deadline;
        if let Some(at) = deadline {
            let wait = Duration::from_millis(at.saturating_sub(now));
            self.timer = Some(ctx.run_later(wait, |actor, ctx| {
                actor.timer = None;
                actor.deadline = None;
                let tick = Deliver::internal(Input::Timer);
                actor.work(tick, false, ctx);
            }));
        }
    }
}

fn reported_changed(effects: &[Effect]) -> bool {
    effects.iter().any(|e| {
        matches!(e, Effect::Changed(c) if c.shadow == ShadowName::CLASSIC && (c.reported.is_some() || c.deleted))
    })
}

impl Actor for TwinActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Resume the rules' deadline (after a restart or a passivation).
        if self.rule_state.is_some() {
            let rules = self.current_rules();
            let deadline = engine::next_deadline(self.decoded_rule_state(), &rules);
            self.schedule(deadline, crate::now_ms(), ctx);
        }
    }
}

impl Handler<Deliver> for TwinActor {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Context<Self>) {
        self.work(msg, true, ctx);
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
        if meta.device_type != self.meta.device_type {
            // Read the rules again for the new type.
            self.rules.0 = 0;
        }
        self.meta = meta;
    }
}

impl Handler<Trace> for TwinActor {
    type Result = ();

    fn handle(&mut self, Trace(tx): Trace, _: &mut Context<Self>) {
        let _ = tx.send(self.trace.iter().cloned().collect());
    }
}
