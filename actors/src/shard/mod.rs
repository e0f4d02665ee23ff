//! The shard host: one actor per arbiter, owning the virtual shards mapped to that arbiter and
//! the twins of their things. A twin is a [`Resident`] in the host's map, not an actor of its
//! own: the host runs each twin's work in arrival order, which is all an actor's mailbox gives,
//! at the cost of a map entry per idle twin. The host activates twins on their first work item
//! (loading them from the store in batches), passivates idle ones, arms one timer for all its
//! twins' rule deadlines, and runs group commit: the records of dirty twins collect in a window
//! (repeated changes of one twin coalesce to the last record) that is written in one store
//! transaction after `commit_window` or once it fills. Every effect — replies, notices, change
//! events, acknowledgements — waits for the commit that holds it, and effects are released in
//! the order the twins produced them.

use crate::{
    shared::{HostHealth, Shared},
    twin::Resident,
    work::{Deliver, Done, DropShards, Evict, Flush, Refresh, Route, ThingMeta, TraceOf, Writes},
};
use actix::{
    Actor, ActorFutureExt, AsyncContext, Context, Handler, Message, SpawnHandle, WrapFuture,
};
use bytes::Bytes;
use rules_dsl::Input;
use std::{
    collections::{BTreeSet, HashMap, HashSet, VecDeque},
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};
use storage::{Store, StoreError};
use tokio::sync::oneshot;
use tracing::{debug, error, warn};
use twin_core::{Effect, ShadowError, ThingName, Twin};

mod release;
mod window;

use release::{audit_entry, log_entry};
use window::{Batch, OfThing, Window};

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

impl OfThing for Done {
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
    /// The active twins (boxed: the map's slack costs a pointer per slot).
    twins: HashMap<ThingName, Box<Resident>>,
    /// The twins' type and attributes, one copy per distinct value (a fleet behind one gateway
    /// shares one).
    metas: HashSet<Arc<ThingMeta>>,
    /// The twins' rule deadlines (epoch ms), earliest first, and the one timer armed for the
    /// earliest.
    timers: BTreeSet<(u64, ThingName)>,
    timer: Option<(u64, SpawnHandle)>,
    /// The host's clock for passivation.
    epoch: Instant,
    loading: HashMap<ThingName, Vec<Deliver>>,
    load_queue: VecDeque<ThingName>,
    load_in_flight: bool,
    /// Things decommissioned while their load was in flight.
    cancelled: HashSet<ThingName>,
    window: Window<Done>,
    /// Work done while the window was full and a commit in flight, in the order it was done;
    /// it fills the next window, so no transaction outgrows the store's limits.
    overflow: VecDeque<Done>,
    committing: bool,
    flush_armed: bool,
    flush_waiters: Vec<oneshot::Sender<()>>,
    /// Answered when the commit in flight completes.
    after_commit: Vec<oneshot::Sender<()>>,
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
            metas: HashSet::new(),
            timers: BTreeSet::new(),
            timer: None,
            epoch: Instant::now(),
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
        for (name, thing, record, rule_state) in rows {
            // No work waits for it any more: its shard was dropped while it loaded.
            let Some(queued) = self.loading.remove(&name) else {
                continue;
            };
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
            let meta = self.intern(ThingMeta {
                device_type: thing.device_type,
                attributes: thing.attributes,
            });
            let rule_state = rule_state.filter(|s| !s.is_empty()).map(Bytes::from);
            let mut twin = Box::new(Resident::new(record, rule_state, meta));
            twin.last_active = self.clock();
            // Resume the rules' deadline (after a restart or a passivation).
            let deadline = twin.resumed_deadline(&name, &self.shared);
            self.twins.insert(name.clone(), twin);
            self.set_deadline(&name, deadline, ctx);
            for deliver in queued {
                self.run(name.clone(), deliver, ctx);
            }
        }
    }

    /// The shared copy of `meta`.
    fn intern(&mut self, meta: ThingMeta) -> Arc<ThingMeta> {
        if let Some(shared) = self.metas.get(&meta) {
            return shared.clone();
        }
        let meta = Arc::new(meta);
        self.metas.insert(meta.clone());
        meta
    }

    /// Milliseconds of the host's clock.
    fn clock(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Runs a work item on its active twin and takes the result into the commit window.
    fn run(&mut self, thing: ThingName, deliver: Deliver, ctx: &mut Context<Self>) {
        let now = self.clock();
        let Some(twin) = self.twins.get_mut(&thing) else {
            return;
        };
        twin.last_active = now;
        let done = twin.work(&thing, deliver, &self.shared);
        if let Some(deadline) = done.writes.deadline {
            self.set_deadline(&thing, deadline, ctx);
        }
        if !self.overflow.is_empty()
            || (self.committing && self.window.is_full(self.shared.config.commit_max_twins))
        {
            self.overflow.push_back(done);
            metrics::counter!("doppel_commit_overflow_total").increment(1);
            return;
        }
        self.admit(done, ctx);
    }

    /// Answers a command that never reached a twin.
    fn refuse(&self, thing: &ThingName, deliver: Deliver, error: ShadowError) {
        let mut done = Done::new(thing.clone(), Arc::default(), deliver.ticket);
        if let Input::Command(command) = &deliver.input {
            done.effects
                .push(Effect::Reply(command.refuse(error, crate::now_ms())));
        }
        self.release(done);
    }

    /// Forgets an active twin (passivated twins go by `sweep`).
    fn remove_twin(&mut self, thing: &ThingName) {
        if let Some(twin) = self.twins.remove(thing)
            && let Some(at) = twin.deadline
        {
            self.timers.remove(&(at, thing.clone()));
        }
    }

    // ---- rule deadlines ---------------------------------------------------------------

    /// Moves `thing`'s rule deadline, and the host's timer if the earliest changed.
    fn set_deadline(&mut self, thing: &ThingName, deadline: Option<u64>, ctx: &mut Context<Self>) {
        let Some(twin) = self.twins.get_mut(thing) else {
            return;
        };
        if twin.deadline == deadline {
            return;
        }
        if let Some(old) = std::mem::replace(&mut twin.deadline, deadline) {
            self.timers.remove(&(old, thing.clone()));
        }
        if let Some(at) = deadline {
            self.timers.insert((at, thing.clone()));
            self.arm_timer(ctx);
        }
    }

    /// Arms the timer for the earliest deadline, unless one as early is armed.
    fn arm_timer(&mut self, ctx: &mut Context<Self>) {
        let Some(&(next, _)) = self.timers.first() else {
            return;
        };
        if let Some((armed, handle)) = self.timer {
            if armed <= next {
                return;
            }
            ctx.cancel_future(handle);
        }
        let wait = Duration::from_millis(next.saturating_sub(crate::now_ms()));
        let handle = ctx.run_later(wait, |host, ctx| {
            host.timer = None;
            host.fire_timers(ctx);
        });
        self.timer = Some((next, handle));
    }

    /// Runs the rules of every twin whose deadline has come.
    fn fire_timers(&mut self, ctx: &mut Context<Self>) {
        let now = crate::now_ms();
        while let Some((at, _)) = self.timers.first()
            && *at <= now
        {
            let Some((at, thing)) = self.timers.pop_first() else {
                break;
            };
            self.run(thing.clone(), Deliver::internal(Input::Timer), ctx);
            // Rules that set no new deadline leave the passed one: it is over.
            if let Some(twin) = self.twins.get_mut(&thing)
                && twin.deadline == Some(at)
            {
                twin.deadline = None;
            }
        }
        self.arm_timer(ctx);
    }

    // ---- passivation ------------------------------------------------------------------

    fn sweep(&mut self) {
        self.sweeps += 1;
        let idle = self.shared.config.passivate_after.as_millis() as u64;
        let now = self.clock();
        let before = self.twins.len();
        self.twins.retain(|_, twin| {
            twin.deadline.is_some()
                || twin.written != twin.committed
                || now.saturating_sub(twin.last_active) < idle
        });
        let passivated = before - self.twins.len();
        self.passivated += passivated as u64;
        if passivated > 0 {
            self.metas.retain(|meta| Arc::strong_count(meta) > 1);
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

    fn health(&self) -> &HostHealth {
        &self.shared.health[self.index]
    }

    fn commit(
        &mut self,
        batch: Batch,
        released: Vec<Done>,
        backoff: Duration,
        ctx: &mut Context<Self>,
    ) {
        let store = self.shared.directory.store().clone();
        let repos = self.shared.directory.repos().clone();
        // In a cluster: the shards written and the epochs this node holds them at.
        let fence = match &self.shared.cluster {
            Some(_) => self.shared.fence(&batch.things()),
            None => None,
        };
        let me = self.shared.cluster.as_ref().map(|c| c.name().to_owned());
        let job = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let result = store.transact(|tx| {
                if let Some(fence) = &fence {
                    let shards: Vec<u32> = fence.iter().map(|(shard, _)| *shard).collect();
                    let records = repos.cluster.shards_of(tx, &shards)?;
                    let ours = fence.iter().zip(&records).all(|((_, epoch), record)| {
                        record.epoch == *epoch && record.owner.is_some() && record.owner == me
                    });
                    if !ours {
                        return Ok(false);
                    }
                }
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
                for (thing, change) in &batch.executions {
                    repos.job_executions.put(tx, thing.as_str(), change)?;
                }
                Ok(true)
            });
            (batch, result, started.elapsed())
        });
        ctx.spawn(job.into_actor(self).map(move |joined, host, ctx| match joined {
            Ok((batch, Ok(false), _)) => {
                // A shard of the batch is no longer this node's: nothing was written.
                warn!(host = host.index, twins = batch.records.len(), "group commit fenced: a shard moved to another node; dropping its changes");
                if let Some(cluster) = &host.shared.cluster {
                    cluster.fenced();
                }
                host.abandon(&batch, released);
                host.commit_ended(ctx);
            }
            Ok((batch, Ok(true), took)) => {
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

    /// Drops a batch the store refused for good: its twins are forgotten (the next work item
    /// reloads them from what is stored), their effects are dropped so that no sender learns
    /// of a success, and work of theirs done since (in the overflow) is dropped too.
    fn abandon(&mut self, batch: &Batch, released: Vec<Done>) {
        let mut things = batch.things();
        things.extend(released.iter().map(|r| r.thing.clone()));
        drop(released);
        // A twin waiting on a rule deadline is woken again: it reloads what was committed
        // (its deadline included) and re-arms its timer, wherever its shard is owned now.
        let waiting: Vec<ThingName> = things
            .iter()
            .filter(|t| {
                self.twins
                    .get(*t)
                    .is_some_and(|twin| twin.deadline.is_some())
            })
            .cloned()
            .collect();
        for thing in &things {
            self.remove_twin(thing);
        }
        self.window.drop_things(&things);
        self.overflow.retain(|done| !things.contains(&done.thing));
        for thing in waiting {
            self.shared.route(thing, Deliver::internal(Input::Timer));
        }
    }

    fn committed(&mut self, batch: Batch, released: Vec<Done>, ctx: &mut Context<Self>) {
        for (thing, _, written) in &batch.records {
            if let Some(twin) = self.twins.get_mut(thing) {
                twin.committed = twin.committed.max(*written);
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
        while let Some(done) = self.overflow.pop_front() {
            if self.window.is_full(max_twins) {
                // Commit the full window first (if no commit is in flight, this starts one and
                // leaves an empty window); otherwise the rest waits for the next commit.
                self.flush(ctx);
                if self.window.is_full(max_twins) {
                    self.overflow.push_front(done);
                    break;
                }
            }
            self.admit(done, ctx);
        }
        if self.window.is_full(self.shared.config.commit_max_twins)
            || !self.window.has_writes()
            || !self.flush_waiters.is_empty()
        {
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
            && !self.window.holds_effects();
        if idle {
            for waiter in self.flush_waiters.drain(..) {
                let _ = waiter.send(());
            }
        }
    }
}

/// Sizes of what a resident twin keeps in its host, for the memory benchmark.
pub fn resident_sizes() -> Vec<(&'static str, usize)> {
    vec![
        (
            "host map slot (name, box)",
            std::mem::size_of::<(ThingName, Box<Resident>)>(),
        ),
        ("resident twin", crate::twin::RESIDENT_SIZE),
    ]
}

impl Actor for ShardHost {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let every = (self.shared.config.passivate_after / 2)
            .clamp(Duration::from_millis(100), Duration::from_secs(30));
        ctx.run_interval(every, |host, _| host.sweep());
    }
}

impl Handler<Route> for ShardHost {
    type Result = ();

    fn handle(&mut self, Route { thing, deliver }: Route, ctx: &mut Context<Self>) {
        if self.twins.contains_key(&thing) {
            self.run(thing, deliver, ctx);
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

impl ShardHost {
    /// Takes a twin's finished work into the commit window.
    fn admit(&mut self, mut done: Done, ctx: &mut Context<Self>) {
        let Writes {
            record,
            rule_state,
            deadline,
        } = std::mem::take(&mut done.writes);
        let thing = &done.thing;
        if let Some(actor) = &done.ticket.audit
            && record.is_some()
            && let Some(entry) = audit_entry(thing, &done.effects, actor)
        {
            self.window.audit(entry);
        }
        for effect in &done.effects {
            if let Effect::Execution(change) = effect {
                self.window.execution(thing, change.clone());
            }
        }
        if self.shared.config.history.enabled {
            done.effects.retain(|effect| match effect {
                Effect::Telemetry { ts, json, .. } => {
                    let seq = crate::history::next_seq();
                    self.window.sample(thing, *ts, seq, json.clone());
                    false
                }
                _ => true,
            });
        }
        if let Some((bytes, written)) = record {
            self.window.record(thing, bytes, written);
        }
        if let Some(bytes) = rule_state {
            self.window.rule_state(thing, bytes);
        }
        if let Some(deadline) = deadline {
            self.window.deadline(thing, deadline);
        }
        self.window
            .log(done.outputs.iter().filter_map(|o| log_entry(thing, o)));
        if !self.window.has_writes() && !self.committing {
            self.release(done);
        } else {
            self.window.hold(done);
        }
        // A flush waits (the node is stopping): what arrives now — work of a twin that was
        // still loading when it was asked — commits at once, not at the window's timer.
        if self.window.is_full(self.shared.config.commit_max_twins)
            || (self.window.has_writes() && !self.flush_waiters.is_empty())
        {
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
        self.remove_twin(&thing);
        if self.loading.contains_key(&thing) {
            self.cancelled.insert(thing.clone());
        }
        self.window.evict(&thing);
        // Work done before the removal and still waiting writes nothing either.
        for done in self.overflow.iter_mut().filter(|done| done.thing == thing) {
            done.writes = Writes::default();
        }
        if self.committing {
            self.after_commit.push(done);
        } else {
            let _ = done.send(());
        }
    }
}

impl Handler<DropShards> for ShardHost {
    type Result = ();

    fn handle(&mut self, DropShards(shards, done): DropShards, _: &mut Context<Self>) {
        let shared = self.shared.clone();
        let ours = |thing: &ThingName| shards.contains(&shared.shard_of(thing));
        let gone: Vec<ThingName> = self.twins.keys().filter(|t| ours(t)).cloned().collect();
        for thing in &gone {
            self.remove_twin(thing);
        }
        // Work not yet run goes back to the router (to the shard's next owner); work done but
        // not committed is dropped, and its senders learn of a failure.
        let waiting: Vec<ThingName> = self.loading.keys().filter(|t| ours(t)).cloned().collect();
        for thing in waiting {
            for deliver in self.loading.remove(&thing).unwrap_or_default() {
                shared.route(thing.clone(), deliver);
            }
        }
        self.load_queue.retain(|t| !ours(t));
        let dropped: HashSet<ThingName> = self
            .overflow
            .iter()
            .map(|d| d.thing.clone())
            .chain(self.window.things_held())
            .filter(|t| ours(t))
            .collect();
        if !dropped.is_empty() {
            self.window.drop_things(&dropped);
            self.overflow.retain(|d| !dropped.contains(&d.thing));
        }
        debug!(
            host = self.index,
            twins = gone.len(),
            dropped = dropped.len(),
            "dropped shards"
        );
        self.metas.retain(|meta| Arc::strong_count(meta) > 1);
        let _ = done.send(());
    }
}

impl Handler<Refresh> for ShardHost {
    type Result = ();

    fn handle(&mut self, Refresh(thing, meta): Refresh, _: &mut Context<Self>) {
        if self.twins.contains_key(&thing) {
            let meta = self.intern(Arc::unwrap_or_clone(meta));
            if let Some(twin) = self.twins.get_mut(&thing) {
                twin.set_meta(meta);
            }
        }
    }
}

impl Handler<TraceOf> for ShardHost {
    type Result = ();

    fn handle(&mut self, TraceOf(thing, tx): TraceOf, _: &mut Context<Self>) {
        let trace = self.twins.get(&thing).map(|twin| twin.trace());
        let _ = tx.send(trace.unwrap_or_default());
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
