//! The shard host: one actor per arbiter, owning the virtual shards mapped to that arbiter.
//! It activates twin actors on their first message (loading them from the store in batches),
//! passivates idle ones, and runs group commit: the records of dirty twins collect in a window
//! (repeated changes of one twin coalesce to the last record) that is written in one store
//! transaction after `commit_window` or once it fills. Every effect — replies, notices, change
//! events, acknowledgements — waits for the commit that holds it, and effects are released in
//! the order the twins produced them.

use crate::{
    ack::Ack,
    shared::{HostHealth, Shared},
    twin_actor::TwinActor,
    work::{Deliver, Handled, Origin, Route, SetMeta, Stop, ThingMeta, Trace},
};
use actix::{Actor, ActorFutureExt, Addr, AsyncContext, Context, Handler, Message, WrapFuture};
use bytes::Bytes;
use rules_dsl::{Input, Output, TraceEntry};
use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};
use storage::{Store, StoreError};
use tokio::sync::oneshot;
use tracing::{debug, error};
use twin_core::{Effect, ShadowError, ThingName, Twin};

mod release;
mod window;

use release::{audit_entry, log_entry};
use window::{Batch, OfThing, Window};

/// Answers once everything routed to this host before it is committed and released.
pub(crate) struct Flush(pub oneshot::Sender<()>);

impl Message for Flush {
    type Result = ();
}

/// Counts of one host.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostStats {
    /// Twin actors running.
    pub active: usize,
    /// Twins being loaded.
    pub loading: usize,
    /// Twins passivated since the host started.
    pub passivated: u64,
    /// Dirty twins waiting in the commit window.
    pub pending: usize,
    /// Passivation sweeps run.
    pub sweeps: u64,
}

pub(crate) struct Stats;

impl Message for Stats {
    type Result = HostStats;
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

struct Entry {
    addr: Addr<TwinActor>,
    last_active: Instant,
    /// Commands delivered to the actor and not yet handled.
    in_flight: u32,
    /// Records this twin produced, and how many of them are committed.
    written: u64,
    committed: u64,
    /// The twin's next rule deadline: twins waiting on one are not passivated.
    deadline: Option<u64>,
}

/// Effects of one command, waiting for their commit.
struct Released {
    thing: ThingName,
    effects: Vec<Effect>,
    outputs: Vec<Output>,
    child_report: Option<(ThingName, serde_json::Value)>,
    origin: Origin,
    ack: Option<Ack>,
    meta: Arc<ThingMeta>,
    /// When the work entered the node, and when its twin handed it back.
    received: Instant,
    handled: Instant,
}

impl OfThing for Released {
    fn thing(&self) -> &ThingName {
        &self.thing
    }
}

/// A loaded thing: its record, its twin's record and its rule state.
type Loaded = Vec<(
    ThingName,
    Option<storage::ThingRecord>,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
)>;

pub(crate) struct ShardHost {
    index: usize,
    shared: Arc<Shared>,
    twins: HashMap<ThingName, Entry>,
    loading: HashMap<ThingName, Vec<Deliver>>,
    load_queue: VecDeque<ThingName>,
    load_in_flight: bool,
    /// Things decommissioned while their load was in flight.
    cancelled: HashSet<ThingName>,
    window: Window<Released>,
    /// Work that arrived while the window was full and a commit in flight, in arrival order;
    /// it fills the next window, so no transaction outgrows the store's limits.
    overflow: VecDeque<Handled>,
    committing: bool,
    flush_armed: bool,
    flush_waiters: Vec<oneshot::Sender<()>>,
    /// Answered when the commit in flight completes.
    after_commit: Vec<oneshot::Sender<()>>,
    /// Twins whose commit was abandoned: work they still had in flight when they were
    /// stopped was computed on state that was never stored, and is dropped (its senders learn
    /// it failed) — counted per twin.
    abandoned: HashMap<ThingName, u32>,
    /// Where twins hand their work back: one recipient shared by all of them (a recipient each
    /// would cost every resident twin an allocation).
    handled: Option<Arc<actix::Recipient<Handled>>>,
    passivated: u64,
    sweeps: u64,
}

/// Store retries back off up to this long.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

impl ShardHost {
    pub(crate) fn new(index: usize, shared: Arc<Shared>) -> Self {
        Self {
            index,
            shared,
            twins: HashMap::new(),
            loading: HashMap::new(),
            load_queue: VecDeque::new(),
            load_in_flight: false,
            cancelled: HashSet::new(),
            window: Window::default(),
            overflow: VecDeque::new(),
            committing: false,
            flush_armed: false,
            flush_waiters: Vec::new(),
            after_commit: Vec::new(),
            abandoned: HashMap::new(),
            handled: None,
            passivated: 0,
            sweeps: 0,
        }
    }

    // ---- activation -------------------------------------------------------------------

    fn kick_loader(&mut self, ctx: &mut Context<Self>) {
        if self.load_in_flight || self.load_queue.is_empty() {
            return;
        }
        let n = self
            .load_queue
            .len()
            .min(self.shared.config.load_batch.max(1));
        let names: Vec<ThingName> = self.load_queue.drain(..n).collect();
        self.load_in_flight = true;
        let store = self.shared.directory.store().clone();
        let repos = self.shared.directory.repos().clone();
        let job = tokio::task::spawn_blocking(move || {
            let loaded = store.transact(|tx| {
                names
                    .iter()
                    .map(|name| {
                        let thing = repos.things.get(tx, name.as_str())?;
                        let (record, rule_state) = match thing {
                            Some(_) => (
                                repos.twins.load_encoded(tx, name)?,
                                repos.rule_states.load(tx, name)?,
                            ),
                            None => (None, None),
                        };
                        Ok((name.clone(), thing, record, rule_state))
                    })
                    .collect::<Result<Loaded, StoreError>>()
            });
            (names, loaded)
        });
        ctx.spawn(job.into_actor(self).map(|joined, host, ctx| {
            host.load_in_flight = false;
            match joined {
                Ok((_, Ok(rows))) => host.activate(rows, ctx),
                Ok((names, Err(error))) => {
                    error!(host = host.index, %error, twins = names.len(), "loading twins failed; retrying");
                    host.load_queue.extend(names);
                    ctx.run_later(MAX_BACKOFF, |host, ctx| host.kick_loader(ctx));
                    return;
                }
                Err(panic) => {
                    error!(host = host.index, %panic, "loading twins panicked");
                }
            }
            host.kick_loader(ctx);
            host.check_idle();
        }));
    }

    fn activate(&mut self, rows: Loaded, ctx: &mut Context<Self>) {
        let now = Instant::now();
        for (name, thing, record, rule_state) in rows {
            let queued = self.loading.remove(&name).unwrap_or_default();
            // Decommissioned while loading: the load may have read the thing before it went.
            let thing = thing.filter(|_| !self.cancelled.remove(&name));
            let Some(thing) = thing else {
                for deliver in queued {
                    self.refuse(&name, deliver, ShadowError::thing_not_found());
                }
                continue;
            };
            let record = record.map(Bytes::from);
            if let Some(bytes) = &record
                && let Err(error) = Twin::decode(name.clone(), bytes)
            {
                error!(thing = %name, %error, "stored twin record does not decode");
                for deliver in queued {
                    self.refuse(&name, deliver, ShadowError::internal());
                }
                continue;
            }
            let meta = Arc::new(ThingMeta {
                device_type: thing.device_type,
                attributes: thing.attributes,
            });
            let actor = TwinActor::new(
                name.clone(),
                record,
                rule_state.filter(|s| !s.is_empty()).map(Bytes::from),
                meta,
                self.shared.clone(),
                self.handled_to(ctx),
            );
            let addr = actor.start();
            let in_flight = queued.len() as u32;
            for deliver in queued {
                addr.do_send(deliver);
            }
            self.twins.insert(
                name,
                Entry {
                    addr,
                    last_active: now,
                    in_flight,
                    written: 0,
                    committed: 0,
                    deadline: None,
                },
            );
        }
    }

    /// Answers a command that never reached a twin.
    fn refuse(&self, thing: &ThingName, deliver: Deliver, error: ShadowError) {
        let effects = match &deliver.input {
            Input::Command(command) => vec![Effect::Reply(command.refuse(error, crate::now_ms()))],
            _ => Vec::new(),
        };
        self.release(Released {
            thing: thing.clone(),
            effects,
            outputs: Vec::new(),
            child_report: None,
            origin: deliver.origin,
            ack: deliver.ack,
            meta: Arc::default(),
            received: deliver.received,
            handled: Instant::now(),
        });
    }

    // ---- passivation ------------------------------------------------------------------

    fn sweep(&mut self) {
        self.sweeps += 1;
        let idle = self.shared.config.passivate_after;
        let now = Instant::now();
        let before = self.twins.len();
        self.twins.retain(|_, e| {
            let passivate = e.in_flight == 0
                && e.deadline.is_none()
                && e.written == e.committed
                && now.duration_since(e.last_active) >= idle;
            if passivate {
                e.addr.do_send(Stop);
            }
            !passivate
        });
        let passivated = before - self.twins.len();
        self.passivated += passivated as u64;
        if passivated > 0 {
            debug!(
                host = self.index,
                passivated,
                active = self.twins.len(),
                "passivated idle twins"
            );
        }
    }

    // ---- group commit -----------------------------------------------------------------

    fn arm_flush(&mut self, ctx: &mut Context<Self>) {
        if self.flush_armed {
            return;
        }
        self.flush_armed = true;
        ctx.run_later(self.shared.config.commit_window, |host, ctx| {
            host.flush_armed = false;
            host.flush(ctx);
        });
    }

    fn flush(&mut self, ctx: &mut Context<Self>) {
        if self.committing {
            return;
        }
        if !self.window.has_writes() {
            // Nothing to write: effects waiting only to keep their order go out now.
            for released in self.window.take_effects() {
                self.release(released);
            }
            self.check_idle();
            return;
        }
        let (batch, released) = self.window.take();
        for item in &released {
            crate::stages::since(&self.shared.stages.window, item.handled);
        }
        self.committing = true;
        self.health()
            .committing_since
            .store(crate::now_ms(), Ordering::Release);
        self.commit(batch, released, Duration::ZERO, ctx);
    }

    fn handled_to(&mut self, ctx: &mut Context<Self>) -> Arc<actix::Recipient<Handled>> {
        self.handled
            .get_or_insert_with(|| Arc::new(ctx.address().recipient()))
            .clone()
    }

    fn health(&self) -> &HostHealth {
        &self.shared.health[self.index]
    }

    fn commit(
        &mut self,
        batch: Batch,
        released: Vec<Released>,
        backoff: Duration,
        ctx: &mut Context<Self>,
    ) {
        let store = self.shared.directory.store().clone();
        let repos = self.shared.directory.repos().clone();
        let job = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let result = store.transact(|tx| {
                for (thing, bytes, _) in &batch.records {
                    repos.twins.save_encoded(tx, thing, bytes)?;
                }
                for entry in &batch.audits {
                    repos.audit.append(tx, entry)?;
                }
                for (thing, ts, seq, json) in &batch.telemetry {
                    repos.history.append(tx, thing, *ts, *seq, json)?;
                }
                for (thing, bytes) in &batch.rule_states {
                    if bytes.is_empty() {
                        repos.rule_states.remove(tx, thing)?;
                    } else {
                        repos.rule_states.save(tx, thing, bytes)?;
                    }
                }
                for (thing, deadline) in &batch.deadlines {
                    repos.rule_states.set_deadline(tx, thing, *deadline)?;
                }
                for (kind, entry) in &batch.rule_log {
                    repos.rule_log.append(tx, *kind, entry)?;
                }
                Ok(())
            });
            (batch, result, started.elapsed())
        });
        ctx.spawn(job.into_actor(self).map(move |joined, host, ctx| match joined {
            Ok((batch, Ok(()), took)) => {
                debug!(host = host.index, twins = batch.records.len(), samples = batch.telemetry.len(), ?took, "group commit");
                metrics::histogram!("doppel_commit_seconds").record(took.as_secs_f64());
                host.shared.stages.commit.record(took.as_secs_f64());
                metrics::histogram!("doppel_commit_twins").record(batch.records.len() as f64);
                metrics::histogram!("doppel_commit_samples").record(batch.telemetry.len() as f64);
                host.committed(batch, released, ctx);
            }
            Ok((batch, Err(error), _)) if error.is_permanent() => {
                // Retrying the same writes can never succeed: fail them, not the host.
                error!(host = host.index, %error, twins = batch.records.len(), "group commit refused by the store; dropping its changes");
                metrics::counter!("doppel_commit_abandoned_total").increment(1);
                host.abandon(&batch, released);
                host.commit_ended(ctx);
            }
            Ok((batch, Err(error), _)) => {
                let backoff = (backoff * 2).clamp(Duration::from_millis(10), MAX_BACKOFF);
                error!(host = host.index, %error, twins = batch.records.len(), ?backoff, "group commit failed; retrying");
                metrics::counter!("doppel_commit_failures_total").increment(1);
                let _ = host.health().failing_since.compare_exchange(
                    0,
                    crate::now_ms(),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
                ctx.run_later(backoff, move |host, ctx| host.commit(batch, released, backoff, ctx));
            }
            Err(panic) => {
                // Nothing was acknowledged; dropping the acks tells every sender so.
                error!(host = host.index, %panic, "group commit panicked");
                host.commit_ended(ctx);
            }
        }));
    }

    /// Drops a batch the store refused for good: its twins are stopped (the next message
    /// reloads them from what is stored), their effects are dropped so that no sender learns
    /// of a success, and work of theirs still on its way is dropped too.
    fn abandon(&mut self, batch: &Batch, released: Vec<Released>) {
        let mut things = batch.things();
        things.extend(released.iter().map(|r| r.thing.clone()));
        drop(released);
        for thing in &things {
            if let Some(entry) = self.twins.remove(thing) {
                entry.addr.do_send(Stop);
                if entry.in_flight > 0 {
                    *self.abandoned.entry(thing.clone()).or_default() += entry.in_flight;
                }
            }
        }
        self.window.drop_things(&things);
        self.overflow.retain(|h| !things.contains(&h.thing));
    }

    fn committed(&mut self, batch: Batch, released: Vec<Released>, ctx: &mut Context<Self>) {
        for (thing, _, written) in &batch.records {
            if let Some(entry) = self.twins.get_mut(thing) {
                entry.committed = entry.committed.max(*written);
            }
        }
        for item in released {
            self.release(item);
        }
        self.commit_ended(ctx);
    }

    /// The commit in flight is over: waiters learn it, and work that waited fills the window.
    fn commit_ended(&mut self, ctx: &mut Context<Self>) {
        self.committing = false;
        let health = self.health();
        health.committing_since.store(0, Ordering::Release);
        health.failing_since.store(0, Ordering::Release);
        for waiter in self.after_commit.drain(..) {
            let _ = waiter.send(());
        }
        let max_twins = self.shared.config.commit_max_twins;
        while let Some(handled) = self.overflow.pop_front() {
            if self.window.is_full(max_twins) {
                // Commit the full window first (if no commit is in flight, this starts one and
                // leaves an empty window); otherwise the rest waits for the next commit.
                self.flush(ctx);
                if self.window.is_full(max_twins) {
                    self.overflow.push_front(handled);
                    break;
                }
            }
            self.admit(handled, ctx);
        }
        if self.window.is_full(self.shared.config.commit_max_twins) || !self.window.has_writes() {
            self.flush(ctx);
        } else {
            self.arm_flush(ctx);
        }
        self.check_idle();
    }

    fn check_idle(&mut self) {
        if self.flush_waiters.is_empty() {
            return;
        }
        let idle = !self.committing
            && self.overflow.is_empty()
            && !self.load_in_flight
            && self.loading.is_empty()
            && !self.window.has_writes()
            && !self.window.holds_effects()
            && self.twins.values().all(|e| e.in_flight == 0);
        if idle {
            for waiter in self.flush_waiters.drain(..) {
                let _ = waiter.send(());
            }
        }
    }
}

/// Sizes of what a resident twin keeps in its host and its actor, for the memory benchmark.
pub fn resident_sizes() -> Vec<(&'static str, usize)> {
    vec![
        (
            "host entry (name, entry)",
            std::mem::size_of::<(ThingName, Entry)>(),
        ),
        ("twin actor", std::mem::size_of::<TwinActor>()),
        (
            "actor context",
            std::mem::size_of::<actix::Context<TwinActor>>(),
        ),
    ]
}

impl Actor for ShardHost {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.handled = Some(Arc::new(ctx.address().recipient()));
        let every = (self.shared.config.passivate_after / 2)
            .clamp(Duration::from_millis(100), Duration::from_secs(30));
        ctx.run_interval(every, |host, _| host.sweep());
    }
}

impl Handler<Route> for ShardHost {
    type Result = ();

    fn handle(&mut self, Route { thing, deliver }: Route, ctx: &mut Context<Self>) {
        if let Some(entry) = self.twins.get_mut(&thing) {
            entry.in_flight += 1;
            entry.last_active = Instant::now();
            entry.addr.do_send(deliver);
            return;
        }
        match self.loading.get_mut(&thing) {
            Some(queued) => queued.push(deliver),
            None => {
                self.load_queue.push_back(thing.clone());
                self.loading.insert(thing, vec![deliver]);
                self.kick_loader(ctx);
            }
        }
    }
}

impl Handler<Handled> for ShardHost {
    type Result = ();

    fn handle(&mut self, handled: Handled, ctx: &mut Context<Self>) {
        if handled.routed
            && !self.abandoned.is_empty()
            && let Some(left) = self.abandoned.get_mut(&handled.thing)
        {
            *left -= 1;
            if *left == 0 {
                self.abandoned.remove(&handled.thing);
            }
            debug!(host = self.index, thing = %handled.thing, "dropped work of a twin whose commit was refused");
            self.check_idle();
            return;
        }
        if !self.overflow.is_empty()
            || (self.committing && self.window.is_full(self.shared.config.commit_max_twins))
        {
            self.overflow.push_back(handled);
            metrics::counter!("doppel_commit_overflow_total").increment(1);
            return;
        }
        self.admit(handled, ctx);
    }
}

impl ShardHost {
    /// Takes a twin's finished work into the commit window.
    fn admit(&mut self, handled: Handled, ctx: &mut Context<Self>) {
        let Handled {
            thing,
            record,
            rule_state,
            deadline,
            mut effects,
            outputs,
            child_report,
            origin,
            ack,
            audit: actor,
            meta,
            routed,
            received,
            handled,
        } = handled;
        let (mut record, mut rule_state, mut deadline) = (record, rule_state, deadline);
        let mut written = 0;
        if let Some(entry) = self.twins.get_mut(&thing) {
            if routed {
                entry.in_flight = entry.in_flight.saturating_sub(1);
            }
            if record.is_some() {
                entry.written += 1;
            }
            if let Some(deadline) = deadline {
                entry.deadline = deadline;
            }
            written = entry.written;
        } else {
            // Decommissioned (evicted) while this work waited: its state must not come back.
            (record, rule_state, deadline) = (None, None, None);
        }
        if let Some(actor) = actor
            && record.is_some()
            && let Some(entry) = audit_entry(&thing, &effects, &actor)
        {
            self.window.audit(entry);
        }
        if self.shared.config.history.enabled {
            effects.retain(|effect| match effect {
                Effect::Telemetry { ts, json, .. } => {
                    let seq = crate::history::next_seq();
                    self.window.sample(&thing, *ts, seq, json.clone());
                    false
                }
                _ => true,
            });
        }
        if let Some(bytes) = record {
            self.window.record(&thing, bytes, written);
        }
        if let Some(bytes) = rule_state {
            self.window.rule_state(&thing, bytes);
        }
        if let Some(deadline) = deadline {
            self.window.deadline(&thing, deadline);
        }
        self.window
            .log(outputs.iter().filter_map(|o| log_entry(&thing, o)));
        let released = Released {
            thing,
            effects,
            outputs,
            child_report,
            origin,
            ack,
            meta,
            received,
            handled,
        };
        if !self.window.has_writes() && !self.committing {
            self.release(released);
        } else {
            self.window.hold(released);
        }
        if self.window.is_full(self.shared.config.commit_max_twins) {
            self.flush(ctx);
        } else if self.window.has_writes() {
            self.arm_flush(ctx);
        }
        self.check_idle();
    }
}

impl Handler<Evict> for ShardHost {
    type Result = ();

    fn handle(&mut self, Evict(thing, done): Evict, _: &mut Context<Self>) {
        if let Some(entry) = self.twins.remove(&thing) {
            entry.addr.do_send(Stop);
        }
        if self.loading.contains_key(&thing) {
            self.cancelled.insert(thing.clone());
        }
        self.window.evict(&thing);
        if self.committing {
            self.after_commit.push(done);
        } else {
            let _ = done.send(());
        }
    }
}

impl Handler<Refresh> for ShardHost {
    type Result = ();

    fn handle(&mut self, Refresh(thing, meta): Refresh, _: &mut Context<Self>) {
        if let Some(entry) = self.twins.get(&thing) {
            entry.addr.do_send(SetMeta(meta));
        }
    }
}

impl Handler<TraceOf> for ShardHost {
    type Result = ();

    fn handle(&mut self, TraceOf(thing, tx): TraceOf, _: &mut Context<Self>) {
        match self.twins.get(&thing) {
            Some(entry) => entry.addr.do_send(Trace(tx)),
            None => {
                let _ = tx.send(Vec::new());
            }
        }
    }
}

impl Handler<Stats> for ShardHost {
    type Result = actix::MessageResult<Stats>;

    fn handle(&mut self, _: Stats, _: &mut Context<Self>) -> Self::Result {
        actix::MessageResult(HostStats {
            active: self.twins.len(),
            loading: self.loading.len(),
            passivated: self.passivated,
            pending: self.window.twins(),
            sweeps: self.sweeps,
        })
    }
}

impl Handler<Flush> for ShardHost {
    type Result = ();

    fn handle(&mut self, Flush(waiter): Flush, ctx: &mut Context<Self>) {
        self.flush_waiters.push(waiter);
        self.flush(ctx);
        self.check_idle();
    }
}
