//! The shard host: one actor per arbiter, owning the virtual shards mapped to that arbiter.
//! It activates twin actors on their first message (loading them from the store in batches),
//! passivates idle ones, and runs group commit: the records of dirty twins collect in a window
//! (repeated changes of one twin coalesce to the last record) that is written in one store
//! transaction after `commit_window` or once it fills. Every effect — replies, notices, change
//! events, acknowledgements — waits for the commit that holds it, and effects are released in
//! the order the twins produced them.

use crate::{
    ack::Ack,
    mqtt::topics,
    node::Shared,
    twin_actor::{Deliver, Handled, Origin, Passivate, TwinActor},
};
use actix::{Actor, ActorFutureExt, Addr, AsyncContext, Context, Handler, Message, WrapFuture};
use bytes::Bytes;
use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::{Duration, Instant},
};
use storage::{Store, StoreError};
use tokio::sync::oneshot;
use tracing::{debug, error, warn};
use twin_core::{Effect, Op, ShadowError, ThingName, Twin};

/// A command for the twin `thing`, sent to the host of its shard.
#[derive(Debug)]
pub(crate) struct Route {
    pub thing: ThingName,
    pub deliver: Deliver,
}

impl Message for Route {
    type Result = ();
}

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

struct Entry {
    addr: Addr<TwinActor>,
    last_active: Instant,
    /// Commands delivered to the actor and not yet handled.
    in_flight: u32,
    /// Records this twin produced, and how many of them are committed.
    written: u64,
    committed: u64,
}

/// Effects of one command, waiting for their commit.
struct Released {
    thing: ThingName,
    effects: Vec<Effect>,
    origin: Origin,
    ack: Option<Ack>,
}

#[derive(Default)]
struct Window {
    /// Latest record per dirty twin and its write count.
    records: HashMap<ThingName, (Bytes, u64)>,
    bytes: usize,
    released: Vec<Released>,
}

type Loaded = Vec<(ThingName, Option<storage::ThingRecord>, Option<Vec<u8>>)>;

pub(crate) struct ShardHost {
    index: usize,
    shared: Arc<Shared>,
    twins: HashMap<ThingName, Entry>,
    loading: HashMap<ThingName, Vec<Deliver>>,
    load_queue: VecDeque<ThingName>,
    load_in_flight: bool,
    window: Window,
    committing: bool,
    flush_armed: bool,
    flush_waiters: Vec<oneshot::Sender<()>>,
    passivated: u64,
    sweeps: u64,
}

/// Store retries back off up to this long.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// A window commits early once its records reach this many bytes (well under FoundationDB's
/// 10 MB transaction limit).
const MAX_WINDOW_BYTES: usize = 4 * 1024 * 1024;

impl ShardHost {
    pub(crate) fn new(index: usize, shared: Arc<Shared>) -> Self {
        Self {
            index,
            shared,
            twins: HashMap::new(),
            loading: HashMap::new(),
            load_queue: VecDeque::new(),
            load_in_flight: false,
            window: Window::default(),
            committing: false,
            flush_armed: false,
            flush_waiters: Vec::new(),
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
                        let record = match thing {
                            Some(_) => repos.twins.load_encoded(tx, name)?,
                            None => None,
                        };
                        Ok((name.clone(), thing, record))
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
        for (name, thing, record) in rows {
            let queued = self.loading.remove(&name).unwrap_or_default();
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
            let device_type = thing
                .device_type
                .as_ref()
                .and_then(|t| self.shared.directory.device_type(t));
            let actor = TwinActor::new(
                name.clone(),
                record,
                device_type,
                self.shared.limits.clone(),
                ctx.address(),
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
                },
            );
        }
    }

    /// Answers a command that never reached a twin.
    fn refuse(&self, thing: &ThingName, deliver: Deliver, error: ShadowError) {
        let reply = deliver.command.refuse(error, crate::now_ms());
        self.release(Released {
            thing: thing.clone(),
            effects: vec![Effect::Reply(reply)],
            origin: deliver.origin,
            ack: deliver.ack,
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
                && e.written == e.committed
                && now.duration_since(e.last_active) >= idle;
            if passivate {
                e.addr.do_send(Passivate);
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
        if self.window.records.is_empty() {
            // Nothing to write: effects waiting only to keep their order go out now.
            for released in std::mem::take(&mut self.window.released) {
                self.release(released);
            }
            self.check_idle();
            return;
        }
        let window = std::mem::take(&mut self.window);
        let records: Vec<(ThingName, Bytes, u64)> = window
            .records
            .into_iter()
            .map(|(thing, (bytes, written))| (thing, bytes, written))
            .collect();
        self.committing = true;
        self.commit(records, window.released, Duration::ZERO, ctx);
    }

    fn commit(
        &mut self,
        records: Vec<(ThingName, Bytes, u64)>,
        released: Vec<Released>,
        backoff: Duration,
        ctx: &mut Context<Self>,
    ) {
        let store = self.shared.directory.store().clone();
        let repos = self.shared.directory.repos().clone();
        let job = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let result = store.transact(|tx| {
                for (thing, bytes, _) in &records {
                    repos.twins.save_encoded(tx, thing, bytes)?;
                }
                Ok(())
            });
            (records, result, started.elapsed())
        });
        ctx.spawn(job.into_actor(self).map(move |joined, host, ctx| match joined {
            Ok((records, Ok(()), took)) => {
                debug!(host = host.index, twins = records.len(), ?took, "group commit");
                host.committed(records, released, ctx);
            }
            Ok((records, Err(error), _)) => {
                let backoff = (backoff * 2).clamp(Duration::from_millis(10), MAX_BACKOFF);
                error!(host = host.index, %error, twins = records.len(), ?backoff, "group commit failed; retrying");
                ctx.run_later(backoff, move |host, ctx| host.commit(records, released, backoff, ctx));
            }
            Err(panic) => {
                // Nothing was acknowledged; dropping the acks tells every sender so.
                error!(host = host.index, %panic, "group commit panicked");
                host.committing = false;
            }
        }));
    }

    fn committed(
        &mut self,
        records: Vec<(ThingName, Bytes, u64)>,
        released: Vec<Released>,
        ctx: &mut Context<Self>,
    ) {
        for (thing, _, written) in &records {
            if let Some(entry) = self.twins.get_mut(thing) {
                entry.committed = entry.committed.max(*written);
            }
        }
        for item in released {
            self.release(item);
        }
        self.committing = false;
        if self.window.records.len() >= self.shared.config.commit_max_twins
            || self.window.bytes >= MAX_WINDOW_BYTES
        {
            self.flush(ctx);
        } else if !self.window.records.is_empty() {
            self.arm_flush(ctx);
        } else {
            self.flush(ctx);
        }
    }

    /// Sends a command's effects on their way and acknowledges it.
    fn release(&self, item: Released) {
        let Released {
            thing,
            effects,
            origin,
            ack,
        } = item;
        let outbox = &self.shared.outbox;
        let mut caller = match origin {
            Origin::Caller(tx) => Some(tx),
            Origin::Device => None,
        };
        for effect in effects {
            match effect {
                Effect::Reply(reply) => {
                    let accepted = reply.outcome.is_ok();
                    if let Some(tx) = caller.take() {
                        // Accepted changes made through the API are announced to the device too.
                        if accepted && matches!(reply.op, Op::Update | Op::Delete) {
                            let topic = topics::reply(&thing, &reply.shadow, reply.op, true);
                            outbox.publish(&thing, topic, reply.payload.clone());
                        }
                        let _ = tx.send(reply);
                    } else if reply.op == Op::Telemetry {
                        if let Err(error) = &reply.outcome {
                            warn!(%thing, code = error.code, message = %error.message, "telemetry refused");
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
                Effect::Changed(change) => self.shared.hub.publish(Arc::new(change)),
                Effect::Telemetry { .. } => {}
            }
        }
        if let Some(ack) = ack {
            ack.done();
        }
    }

    fn check_idle(&mut self) {
        if self.flush_waiters.is_empty() {
            return;
        }
        let idle = !self.committing
            && !self.load_in_flight
            && self.loading.is_empty()
            && self.window.records.is_empty()
            && self.window.released.is_empty()
            && self.twins.values().all(|e| e.in_flight == 0);
        if idle {
            for waiter in self.flush_waiters.drain(..) {
                let _ = waiter.send(());
            }
        }
    }
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
        let Handled {
            thing,
            record,
            effects,
            origin,
            ack,
        } = handled;
        let mut written = 0;
        if let Some(entry) = self.twins.get_mut(&thing) {
            entry.in_flight = entry.in_flight.saturating_sub(1);
            if record.is_some() {
                entry.written += 1;
            }
            written = entry.written;
        }
        if let Some(bytes) = record {
            self.window.bytes += bytes.len();
            if let Some((old, _)) = self.window.records.insert(thing.clone(), (bytes, written)) {
                self.window.bytes -= old.len();
            }
        }
        let released = Released {
            thing,
            effects,
            origin,
            ack,
        };
        if self.window.records.is_empty() && !self.committing {
            self.release(released);
        } else {
            self.window.released.push(released);
        }
        if self.window.records.len() >= self.shared.config.commit_max_twins
            || self.window.bytes >= MAX_WINDOW_BYTES
        {
            self.flush(ctx);
        } else if !self.window.records.is_empty() {
            self.arm_flush(ctx);
        }
        self.check_idle();
    }
}

impl Handler<Stats> for ShardHost {
    type Result = actix::MessageResult<Stats>;

    fn handle(&mut self, _: Stats, _: &mut Context<Self>) -> Self::Result {
        actix::MessageResult(HostStats {
            active: self.twins.len(),
            loading: self.loading.len(),
            passivated: self.passivated,
            pending: self.window.records.len(),
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
