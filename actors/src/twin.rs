//! A resident twin: the state its shard host keeps for an active thing, and the one function
//! that changes it. The host runs a twin's work one item at a time, in arrival order (the
//! host's mailbox is the twin's), so a twin is an actor without an actix actor of its own: an
//! idle twin costs its state and a map entry, nothing more. Between work items it keeps the
//! twin and its rule state in their encoded forms (the bytes that go to the store); each item
//! decodes the twin, applies the input, runs the rules, and returns the new records and the
//! effects as a [`Done`] that the host commits and then releases.

use crate::{
    rules::TwinRules,
    shared::Shared,
    work::{Deliver, Done, Origin, ThingMeta},
};
use bytes::Bytes;
use rules_dsl::{Input, TraceEntry, TwinRuleState, engine};
use serde_json::Value;
use std::{collections::VecDeque, sync::Arc, time::Instant};
use twin_core::{Effect, JobInput, ShadowError, ShadowName, ThingName, Twin};

/// A twin's rule state in memory.
enum RuleState {
    /// As loaded from the store.
    Encoded(Bytes),
    /// In use.
    Decoded(Box<TwinRuleState>),
}

/// Rule evaluations a twin remembers for `GET …/rules/trace`.
const TRACE_LEN: usize = 64;

/// What the host keeps for an active twin (boxed in its map, so the map's slack costs a
/// pointer per slot, not a twin).
pub(crate) struct Resident {
    /// The encoded twin; `None` until its first change.
    record: Option<Bytes>,
    /// The rule state: encoded as loaded, decoded once rules run (windows make encoding it
    /// per message costly); `None` until rules first ran.
    rule_state: Option<RuleState>,
    /// The rules attached, and the rule book's version they were read at.
    rules: TwinRules,
    rules_version: u64,
    /// The thing's type and attributes (shared by every twin with the same ones).
    pub meta: Arc<ThingMeta>,
    /// The latest rule evaluations, once rules ran (boxed: a pointer in every twin instead of
    /// an empty deque's 32 bytes).
    #[allow(
        clippy::box_collection,
        reason = "a twin without rules pays 8 bytes, not 32"
    )]
    trace: Option<Box<VecDeque<TraceEntry>>>,
    /// The next rule deadline (epoch ms); the host's timer list holds it too.
    pub deadline: Option<u64>,
    /// When work last reached the twin, in ms of the host's clock (for passivation).
    pub last_active: u64,
    /// Records this twin produced, and how many of them are committed.
    pub written: u64,
    pub committed: u64,
}

impl Resident {
    pub(crate) fn new(
        record: Option<Bytes>,
        rule_state: Option<Bytes>,
        meta: Arc<ThingMeta>,
    ) -> Self {
        Self {
            record,
            rule_state: rule_state.map(RuleState::Encoded),
            rules: Arc::from(Vec::new()),
            rules_version: 0,
            meta,
            trace: None,
            deadline: None,
            last_active: 0,
            written: 0,
            committed: 0,
        }
    }

    /// New type or attributes of the thing.
    pub(crate) fn set_meta(&mut self, meta: Arc<ThingMeta>) {
        if meta.device_type != self.meta.device_type {
            // Read the rules again for the new type.
            self.rules_version = 0;
        }
        self.meta = meta;
    }

    /// The latest rule evaluations, newest last.
    pub(crate) fn trace(&self) -> Vec<TraceEntry> {
        self.trace
            .as_ref()
            .map(|t| t.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The rules' next deadline as the stored rule state has it (for a twin just loaded).
    pub(crate) fn resumed_deadline(&mut self, thing: &ThingName, shared: &Shared) -> Option<u64> {
        // Job executions in progress time out too (only a record with executions is decoded).
        let jobs = self
            .record
            .as_deref()
            .filter(|bytes| Twin::record_has_jobs(bytes))
            .and_then(|_| self.twin(thing).ok())
            .and_then(|twin| twin.jobs().deadline());
        if self.rule_state.is_none() {
            return jobs;
        }
        let rules = self.current_rules(thing, shared);
        let rules = engine::next_deadline(self.decoded_rule_state(thing), &rules);
        earliest(rules, jobs)
    }

    fn twin(&self, thing: &ThingName) -> Result<Twin, twin_core::TwinError> {
        match &self.record {
            Some(bytes) => Twin::decode(thing.clone(), bytes),
            None => Ok(Twin::new(thing.clone())),
        }
    }

    /// The rule state, decoded (and kept decoded from now on).
    fn decoded_rule_state(&mut self, thing: &ThingName) -> &mut TwinRuleState {
        let state = match self.rule_state.take() {
            Some(RuleState::Decoded(state)) => state,
            Some(RuleState::Encoded(bytes)) => {
                Box::new(TwinRuleState::decode(&bytes).unwrap_or_else(|error| {
                    tracing::error!(%thing, %error, "rule state does not decode; starting afresh");
                    TwinRuleState::default()
                }))
            }
            None => Box::default(),
        };
        match self.rule_state.insert(RuleState::Decoded(state)) {
            RuleState::Decoded(state) => state,
            RuleState::Encoded(_) => unreachable!("just decoded"),
        }
    }

    /// The rules attached to the twin now (re-read when the rule book changed).
    fn current_rules(&mut self, thing: &ThingName, shared: &Shared) -> TwinRules {
        let book = shared.directory.rules();
        let version = book.version();
        if self.rules_version != version {
            self.rules = book.for_twin(thing, self.meta.device_type.as_ref());
            self.rules_version = version;
        }
        self.rules.clone()
    }

    /// Runs one work item on the twin. The result's `writes.deadline` says whether the next
    /// rule deadline moved (the host re-arms its timer).
    pub(crate) fn work(&mut self, thing: &ThingName, deliver: Deliver, shared: &Shared) -> Done {
        let Deliver {
            input,
            documents,
            ticket,
        } = deliver;
        crate::stages::since(&shared.stages.queue, ticket.received);
        let now = crate::now_ms();
        let mut done = Done::new(thing.clone(), self.meta.clone(), ticket);
        if let Origin::Gateway(gateway) = &done.ticket.origin
            && !self.meta.is_behind(gateway)
        {
            if let Input::Command(command) = &input {
                done.effects
                    .push(Effect::Reply(command.refuse(ShadowError::forbidden(), now)));
            }
            done.handled = Instant::now();
            return done;
        }
        let rules = self.current_rules(thing, shared);
        match self.twin(thing) {
            Ok(mut twin) => {
                // The type is looked up per command, so a replaced type applies at once.
                let device_type = self
                    .meta
                    .device_type
                    .as_ref()
                    .and_then(|t| shared.directory.device_type(t));
                let ctx = twin_core::Context {
                    limits: &shared.limits,
                    device_type: device_type.as_deref(),
                    documents,
                };
                let directory = &shared.directory;
                let input = match input {
                    // A rollout's queue that arrives after its job was canceled queues nothing.
                    Input::Job(JobInput::Queue { job_id, .. })
                        if directory.job_canceled(&job_id) =>
                    {
                        done.handled = Instant::now();
                        return done;
                    }
                    // A job canceled since it was queued here never starts.
                    Input::Job(request @ JobInput::Request { .. }) => {
                        twin.cancel_jobs_where(
                            |id| directory.job_canceled(id),
                            now,
                            &mut done.effects,
                        );
                        Input::Job(request)
                    }
                    other => other,
                };
                if rules.is_empty() && self.rule_state.is_none() {
                    // No rules: the plain twin (and its job executions, with their timeouts).
                    match input {
                        Input::Command(command) => {
                            twin.handle(command, &ctx, now, &mut done.effects);
                        }
                        Input::Job(job) => twin.handle_job(job, now, &mut done.effects),
                        Input::Timer => twin.expire_jobs(now, &mut done.effects),
                        Input::Child(..) | Input::Reply { .. } | Input::Presence(_) => {}
                    }
                    let deadline = twin.jobs().deadline();
                    if deadline != self.deadline {
                        done.writes.deadline = Some(deadline);
                    }
                } else {
                    self.run_rules(thing, &mut twin, &rules, input, &ctx, now, &mut done);
                }
                if twin.take_dirty() {
                    let bytes = Bytes::from(twin.encode());
                    self.record = Some(bytes.clone());
                    self.written += 1;
                    done.writes.record = Some((bytes, self.written));
                    if let Some(parent) = self.meta.parent()
                        && reported_changed(&done.effects)
                    {
                        let reported = twin
                            .shadow(&ShadowName::CLASSIC)
                            .map_or(Value::Null, |s| s.reported().to_json());
                        done.child_report = Some((parent, reported));
                    }
                }
            }
            Err(error) => {
                // The loader checked the stored record and the twin encodes every record it
                // keeps, so this is corruption in memory: refuse rather than overwrite.
                tracing::error!(%thing, %error, "twin record does not decode");
                if let Input::Command(command) = &input {
                    done.effects
                        .push(Effect::Reply(command.refuse(ShadowError::internal(), now)));
                }
            }
        }
        done.handled = Instant::now();
        done
    }

    #[allow(clippy::too_many_arguments)]
    fn run_rules(
        &mut self,
        thing: &ThingName,
        twin: &mut Twin,
        rules: &TwinRules,
        input: Input,
        ctx: &twin_core::Context<'_>,
        now: u64,
        done: &mut Done,
    ) {
        let state = self.decoded_rule_state(thing);
        let outcome = engine::handle(twin, state, rules, input, ctx, now, &mut done.effects);
        let deadline = earliest(engine::next_deadline(state, rules), twin.jobs().deadline());
        if outcome.state_changed {
            // Empty bytes tell the host to remove the stored state.
            let forget = state.is_empty() && rules.is_empty();
            done.writes.rule_state = Some(if forget {
                Bytes::new()
            } else {
                Bytes::from(state.encode())
            });
            if forget {
                self.rule_state = None;
            }
        }
        if deadline != self.deadline {
            done.writes.deadline = Some(deadline);
        }
        if !outcome.trace.is_empty() {
            let trace = self.trace.get_or_insert_with(Box::default);
            for entry in outcome.trace {
                if trace.len() == TRACE_LEN {
                    trace.pop_front();
                }
                trace.push_back(entry);
            }
        }
        done.outputs = outcome.outputs;
    }
}

fn reported_changed(effects: &[Effect]) -> bool {
    effects.iter().any(|e| {
        matches!(e, Effect::Changed(c) if c.shadow == ShadowName::CLASSIC && (c.reported.is_some() || c.deleted))
    })
}

/// The size of what a resident twin keeps, for the memory benchmark.
pub(crate) const RESIDENT_SIZE: usize = std::mem::size_of::<Resident>();

/// The earlier of two optional deadlines.
fn earliest(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
