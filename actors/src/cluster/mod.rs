//! Running as one node of a cluster: nodes share one store, in which each keeps a lease (its
//! [`NodeRecord`]) and the owner and epoch of every virtual shard ([`ShardRecord`]). Shards go
//! to live nodes by rendezvous hashing ([`assign`]); a node takes a shard only once its previous
//! owner released it or let its lease lapse, and every take raises the shard's epoch. Every
//! group commit reads the epochs of its shards in its own transaction and writes nothing if one
//! is no longer this node's (fencing), so a paused or cut-off former owner never overwrites
//! newer state. The store's serializable transactions decide every change of owner: there is
//! no consensus protocol here.
//!
//! Work for a twin goes to its shard's owner: to a local shard host, to a peer over the
//! node-to-node connection ([`link`]), or — while the shard has no owner — into a bounded
//! parking queue that drains once it has one. Messages for devices go to the node holding the
//! device's session; committed changes go to peers with WebSocket watchers.

pub mod assign;
mod link;
pub mod wire;

use crate::{
    ack::Ack,
    directory::Directory,
    hub::{ChangeEvent, ChangeHub, RuleEvent},
    outbox::Outbox,
    pool::{blocking, store_call},
    work::{Deliver, Origin, ThingMeta},
};
use arc_swap::ArcSwap;
use link::Peer;
use serde::Serialize;
use std::{
    collections::{HashMap, HashSet, VecDeque},
    net::SocketAddr,
    sync::{
        Arc, Mutex, OnceLock, Weak,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};
pub use storage::ShardRecord;
use storage::{NodeRecord, Store};
use tokio::sync::{Notify, mpsc};
use tracing::{debug, error, info, warn};
use twin_core::ThingName;
use wire::{Frame, WireMeta};

/// What the cluster asks of the node it runs in (implemented by the shard hosts' shared
/// state).
pub(crate) trait Local: Send + Sync + 'static {
    /// Things, credentials, types, rules; the store.
    fn directory(&self) -> &Arc<Directory>;
    /// The node's change hub.
    fn hub(&self) -> &ChangeHub;
    /// How long a request may wait for its twin.
    fn request_timeout(&self) -> Duration;
    /// Sends work to a twin of a shard this node owns.
    fn route_local(&self, shard: u32, thing: ThingName, deliver: Deliver);
    /// A thing's type or attributes changed.
    fn refresh_local(&self, thing: ThingName, meta: Arc<ThingMeta>);
    /// Stops a decommissioned thing's twin; answers once no older commit can land.
    fn evict_local(&self, thing: ThingName) -> tokio::sync::oneshot::Receiver<()>;
    /// A twin's latest rule evaluations.
    fn trace_local(
        &self,
        thing: ThingName,
    ) -> tokio::sync::oneshot::Receiver<Vec<rules_dsl::TraceEntry>>;
    /// Forgets the twins of `shards` (their work is dropped); answers when done.
    fn drop_shards(&self, shards: Arc<HashSet<u32>>) -> Vec<tokio::sync::oneshot::Receiver<()>>;
    /// Answers once everything routed to this node's hosts so far is committed.
    fn flush_local(&self) -> Vec<tokio::sync::oneshot::Receiver<()>>;
    /// Wakes the twins of `shards` whose rules wait on a deadline.
    fn resume_deadlines(self: Arc<Self>, shards: Arc<HashSet<u32>>);
}

/// How a node takes part in a cluster.
#[derive(Clone)]
pub struct ClusterConfig {
    /// The node's name, unique in the cluster.
    pub name: String,
    /// Where the node accepts its peers' connections.
    pub listen: SocketAddr,
    /// Where peers reach it (`host:port`; `listen` unless set).
    pub advertise: String,
    /// The secret every node of the cluster knows.
    pub secret: Vec<u8>,
    /// How long a node's lease lasts without renewal (its shards move after it lapses).
    pub lease: Duration,
    /// How often a node renews its lease and looks at ownership.
    pub renew: Duration,
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("name", &self.name)
            .field("listen", &self.listen)
            .field("advertise", &self.advertise)
            .field("lease", &self.lease)
            .field("renew", &self.renew)
            .finish_non_exhaustive()
    }
}

/// Where work for a shard goes now.
#[derive(Clone)]
enum Dest {
    Local,
    Peer(Arc<Peer>),
    /// No owner yet (moving, or its owner's lease has not lapsed): wait.
    Park,
}

/// What a node knows of ownership; replaced whole (readers never lock).
struct Table {
    dest: Vec<Dest>,
    /// The epoch of each shard this node holds in the store (0: not held).
    held: Vec<u64>,
    /// The shards' records as last read.
    shards: Vec<ShardRecord>,
    /// The live nodes as last read.
    nodes: Vec<NodeRecord>,
    peers: HashMap<Arc<str>, Arc<Peer>>,
}

/// Work waiting for its shard's owner.
struct Parked {
    thing: ThingName,
    deliver: Deliver,
    since: Instant,
}

impl Parked {
    fn new(thing: ThingName, deliver: Deliver) -> Self {
        Self {
            thing,
            deliver,
            since: Instant::now(),
        }
    }
}

/// Parked work held at most (beyond: refused, its sender sees a failure).
const MAX_PARKED: usize = 100_000;
/// Device sessions remembered on other nodes at most (forgotten all at once beyond).
const MAX_SESSION_HINTS: usize = 200_000;

/// This node's part in the cluster.
pub(crate) struct Cluster {
    config: ClusterConfig,
    me: Arc<str>,
    started: u64,
    shards: u32,
    table: ArcSwap<Table>,
    /// Serializes the changes of ownership (the lease loop, a release, a loss).
    changing: tokio::sync::Mutex<()>,
    /// Work waiting for its shard's owner, by shard, in arrival order.
    parked: Mutex<HashMap<u32, VecDeque<Parked>>>,
    /// How many items wait in `parked` (read without the lock on every route).
    parked_count: AtomicUsize,
    /// Peers with WebSocket watchers: committed changes are sent to them.
    watchers: ArcSwap<Vec<Arc<str>>>,
    /// Whether this node told its peers it has watchers.
    watching: AtomicBool,
    /// The node holding a device's session, learnt from work it forwarded.
    sessions: Mutex<HashMap<ThingName, Arc<str>>>,
    nudge: Notify,
    /// The end of this node's lease, as far as it knows (epoch ms).
    lease_until: AtomicU64,
    ready: AtomicBool,
    leaving: AtomicBool,
    local_outbox: Arc<dyn Outbox>,
    local: OnceLock<Weak<dyn Local>>,
    this: Weak<Cluster>,
}

/// What `GET /v1/cluster` shows.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterView {
    /// The node answering.
    pub node: String,
    /// Live nodes.
    pub nodes: Vec<NodeView>,
    /// Every shard's owner and epoch, by shard number.
    pub shards: Vec<ShardRecord>,
}

/// A live node.
#[derive(Debug, Clone, Serialize)]
pub struct NodeView {
    pub name: String,
    pub addr: String,
    /// When its lease lapses unless renewed (epoch ms).
    pub lease_expires: u64,
    pub started: u64,
    /// Shards it owns.
    pub shards: usize,
}

impl Cluster {
    pub fn new(config: ClusterConfig, shards: u32, local_outbox: Arc<dyn Outbox>) -> Arc<Self> {
        let n = shards as usize;
        Arc::new_cyclic(|this| Self {
            me: Arc::from(config.name.as_str()),
            config,
            started: crate::now_ms(),
            shards,
            table: ArcSwap::from_pointee(Table {
                dest: vec![Dest::Park; n],
                held: vec![0; n],
                shards: vec![ShardRecord::default(); n],
                nodes: Vec::new(),
                peers: HashMap::new(),
            }),
            changing: tokio::sync::Mutex::new(()),
            parked: Mutex::new(HashMap::new()),
            parked_count: AtomicUsize::new(0),
            watchers: ArcSwap::from_pointee(Vec::new()),
            watching: AtomicBool::new(false),
            sessions: Mutex::new(HashMap::new()),
            nudge: Notify::new(),
            lease_until: AtomicU64::new(0),
            ready: AtomicBool::new(false),
            leaving: AtomicBool::new(false),
            local_outbox,
            local: OnceLock::new(),
            this: this.clone(),
        })
    }

    /// Starts accepting peers and keeping the lease.
    pub fn start(self: &Arc<Self>, local: Weak<dyn Local>, listener: std::net::TcpListener) {
        let _ = self.local.set(local);
        match listener
            .set_nonblocking(true)
            .and_then(|()| tokio::net::TcpListener::from_std(listener))
        {
            Ok(listener) => {
                tokio::spawn(link::serve(listener, self.clone()));
            }
            Err(error) => error!(%error, "the cluster listener cannot be used"),
        }
        tokio::spawn(self.clone().keep_lease());
        tokio::spawn(self.clone().announce_registry());
    }

    fn shared(&self) -> Option<Arc<dyn Local>> {
        self.local.get()?.upgrade()
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.me
    }

    /// Whether the node holds every shard assigned to it, and knows the owner of the others.
    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The epoch of `shard` if this node holds it.
    pub fn epoch(&self, shard: u32) -> Option<u64> {
        let epoch = *self.table.load().held.get(shard as usize)?;
        (epoch != 0).then_some(epoch)
    }

    /// Whether this node holds `shard` and its lease holds (it may act for the shard now).
    pub fn serves(&self, shard: u32) -> bool {
        self.epoch(shard).is_some()
            && crate::now_ms() < self.lease_until.load(Ordering::Acquire)
            && !self.leaving.load(Ordering::Acquire)
    }

    // ---- routing ----------------------------------------------------------------------

    /// Sends work to the owner of `shard`: to a local host, or to the peer that owns it. Work
    /// waits in the shard's parking queue while the shard has no owner, while its owner's
    /// connection is down, while this node's lease lapsed, and while earlier work of the shard
    /// waits there (so a device's messages keep their order).
    pub fn route(&self, shared: &dyn Local, shard: u32, thing: ThingName, deliver: Deliver) {
        if self.parked_count.load(Ordering::Acquire) > 0
            && let Ok(mut parked) = self.parked.lock()
            && let Some(queue) = parked.get_mut(&shard)
        {
            queue.push_back(Parked::new(thing, deliver));
            self.parked_count.fetch_add(1, Ordering::AcqRel);
            return;
        }
        let dest = self.table.load().dest[shard as usize].clone();
        match dest {
            Dest::Local if self.lease_lapsed() => {
                // A node whose lease lapsed (it was paused, or cut off from the store) serves
                // nothing until it has looked at ownership again.
                self.nudge.notify_one();
                self.park(shard, thing, deliver);
            }
            Dest::Local => shared.route_local(shard, thing, deliver),
            Dest::Peer(peer) if peer.connected() => peer.forward(&thing, deliver),
            Dest::Peer(_) | Dest::Park => self.park(shard, thing, deliver),
        }
    }

    fn lease_lapsed(&self) -> bool {
        crate::now_ms() >= self.lease_until.load(Ordering::Acquire)
    }

    /// Runs work a peer forwarded as to this shard's owner. Work for a shard this node knows
    /// another owns, or arriving while its lease lapsed, is refused, not passed on: its
    /// sender gave up on it already (the connection to a node that lost its lease is dropped,
    /// failing what waited on it) and the device has sent it again, so running it now would
    /// apply an old message after newer ones.
    fn run_forwarded(&self, shared: &dyn Local, thing: ThingName, deliver: Deliver) {
        let shard = shard_of(&thing, self.shards);
        let dest = self.table.load().dest[shard as usize].clone();
        match dest {
            Dest::Local if !self.lease_lapsed() => self.route(shared, shard, thing, deliver),
            Dest::Park => self.park(shard, thing, deliver),
            Dest::Local | Dest::Peer(_) => {
                metrics::counter!("doppel_cluster_refused_total").increment(1);
                debug!(%thing, shard, "refused work forwarded for a shard this node does not own");
                self.nudge.notify_one();
            }
        }
    }

    fn park(&self, shard: u32, thing: ThingName, deliver: Deliver) {
        let Ok(mut parked) = self.parked.lock() else {
            return;
        };
        if self.parked_count.load(Ordering::Acquire) >= MAX_PARKED {
            // Dropped: its sender learns of a failure.
            metrics::counter!("doppel_cluster_refused_total").increment(1);
            return;
        }
        parked
            .entry(shard)
            .or_default()
            .push_back(Parked::new(thing, deliver));
        self.parked_count.fetch_add(1, Ordering::AcqRel);
    }

    /// Sends the parked work of every shard that can be reached now, in order; drops work
    /// parked longer than the request timeout (its sender learns of a failure).
    pub(crate) fn drain_parked(&self, shared: &dyn Local) {
        if self.parked_count.load(Ordering::Acquire) == 0 {
            return;
        }
        let Ok(mut parked) = self.parked.lock() else {
            return;
        };
        let table = self.table.load();
        let limit = shared.request_timeout();
        let lapsed = self.lease_lapsed();
        parked.retain(|shard, queue| {
            let before = queue.len();
            let open = match &table.dest[*shard as usize] {
                Dest::Local => !lapsed,
                Dest::Peer(peer) => peer.connected(),
                Dest::Park => false,
            };
            if open {
                // Held under the lock: work routed meanwhile queues behind this.
                for item in queue.drain(..) {
                    match &table.dest[*shard as usize] {
                        Dest::Peer(peer) => peer.forward(&item.thing, item.deliver),
                        _ => shared.route_local(*shard, item.thing, item.deliver),
                    }
                }
            } else {
                queue.retain(|item| item.since.elapsed() < limit);
            }
            self.parked_count
                .fetch_sub(before - queue.len(), Ordering::AcqRel);
            !queue.is_empty()
        });
    }

    /// Sends parked work that can go now (a peer's connection came up).
    fn drain(&self) {
        if let Some(shared) = self.shared() {
            self.drain_parked(shared.as_ref());
        }
    }

    /// Where `shard`'s twins are, for requests that are not work (evict, trace, refresh).
    fn owner(&self, shard: u32) -> Option<Option<Arc<Peer>>> {
        match &self.table.load().dest[shard as usize] {
            Dest::Local => Some(None),
            Dest::Peer(peer) => Some(Some(peer.clone())),
            Dest::Park => None,
        }
    }

    /// Stops a decommissioned thing's twin on its owner (elsewhere).
    pub async fn evict_remote(&self, shard: u32, thing: &ThingName) -> Option<bool> {
        let peer = self.owner(shard)?;
        let Some(peer) = peer else {
            return Some(false);
        };
        let name = thing.to_string();
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            peer.ask_done(|id| Frame::Evict { id, thing: name }),
        )
        .await;
        Some(true)
    }

    /// A twin's rule trace from its owner, if that is another node.
    pub async fn trace_remote(&self, shard: u32, thing: &ThingName) -> Option<serde_json::Value> {
        let Some(Some(peer)) = self.owner(shard) else {
            return None;
        };
        tokio::time::timeout(Duration::from_secs(5), peer.ask_trace(thing))
            .await
            .ok()
            .and_then(Result::ok)
            .or(Some(serde_json::Value::Array(Vec::new())))
    }

    /// Tells the owner (elsewhere) of a thing's new type and attributes; false if it is here.
    pub fn refresh_remote(&self, shard: u32, thing: &ThingName, meta: &ThingMeta) -> bool {
        match self.owner(shard) {
            Some(Some(peer)) => {
                peer.tell(Frame::Refresh {
                    thing: thing.to_string(),
                    meta: WireMeta::of(meta),
                });
                true
            }
            Some(None) => false,
            None => true,
        }
    }

    fn peers(&self) -> Vec<Arc<Peer>> {
        self.table.load().peers.values().cloned().collect()
    }

    fn broadcast(&self, frame: &Frame) {
        let bytes = wire::encode(frame);
        for peer in self.peers() {
            peer.tell_encoded(bytes.clone());
        }
    }

    // ---- changes for watchers elsewhere -------------------------------------------------

    /// Sends a committed change to peers with watchers.
    pub fn share_change(&self, event: &ChangeEvent) {
        let watchers = self.watchers.load();
        if watchers.is_empty() {
            return;
        }
        let frame = wire::encode(&Frame::Change {
            change: event.change.clone(),
            meta: WireMeta::of(&event.meta),
        });
        self.send_to(&watchers, frame);
    }

    /// Sends a rule's output to peers with watchers, as apps see it.
    pub fn share_event(&self, event: &RuleEvent) {
        let watchers = self.watchers.load();
        if watchers.is_empty() {
            return;
        }
        let (kind, payload) = event.output.kind.describe();
        let frame = wire::encode(&Frame::Event {
            thing: event.thing.to_string(),
            meta: WireMeta::of(&event.meta),
            rule: event.output.rule.to_string(),
            kind: kind.to_owned(),
            payload,
            at: event.output.at,
        });
        self.send_to(&watchers, frame);
    }

    fn send_to(&self, names: &[Arc<str>], frame: bytes::Bytes) {
        let table = self.table.load();
        for name in names {
            if let Some(peer) = table.peers.get(name) {
                peer.tell_encoded(frame.clone());
            }
        }
    }

    /// Makes sure every peer sends this node its committed changes from now on (before a
    /// WebSocket subscription reads its snapshot). Waits for the peers' answers, 2 s at most.
    pub async fn watch(&self) {
        if self.watching.swap(true, Ordering::AcqRel) {
            return;
        }
        let waits: Vec<_> = self
            .peers()
            .into_iter()
            .map(|peer| peer.ask_done(|id| Frame::Watching { id, on: true }))
            .collect();
        let _ =
            tokio::time::timeout(Duration::from_secs(2), futures::future::join_all(waits)).await;
    }

    // ---- frames from peers --------------------------------------------------------------

    /// Runs a frame a peer sent; answers go to `answers`.
    fn received(&self, peer: &Arc<str>, frame: Frame, answers: &mpsc::UnboundedSender<Frame>) {
        let Some(shared) = self.shared() else {
            return;
        };
        match frame {
            Frame::Work {
                id,
                thing,
                input,
                documents,
                origin,
                audit,
                ack,
            } => {
                let Some(thing) = wire::thing(&thing) else {
                    return;
                };
                let origin = match origin {
                    wire::WireOrigin::Device => {
                        self.note_session(&thing, peer);
                        Origin::Device
                    }
                    wire::WireOrigin::Node => Origin::Node,
                    wire::WireOrigin::Gateway(gateway) => match wire::thing(&gateway) {
                        Some(gateway) => Origin::Gateway(gateway),
                        None => return,
                    },
                    wire::WireOrigin::Caller => {
                        let (tx, rx) = tokio::sync::oneshot::channel();
                        let answers = answers.clone();
                        tokio::spawn(async move {
                            // Always answered: a reply, or a failure (the work was dropped),
                            // so that nothing waits for it on the sender.
                            let answer = match rx.await {
                                Ok(reply) => Frame::Answer {
                                    id,
                                    reply: wire::WireReply::of(reply),
                                },
                                Err(_) => Frame::Settled { id, code: 1 },
                            };
                            let _ = answers.send(answer);
                        });
                        Origin::Caller(tx)
                    }
                };
                let ack = ack.then(|| {
                    let (ack, rx) = Ack::new();
                    link::settle_later(id, rx, answers.clone());
                    ack
                });
                let deliver = Deliver::new(input.into_input(), origin, ack)
                    .with_documents(documents)
                    .audited(audit.as_deref());
                self.run_forwarded(shared.as_ref(), thing, deliver);
            }
            Frame::Publish {
                thing,
                topic,
                payload,
            } => {
                if let Some(thing) = wire::thing(&thing) {
                    self.local_outbox.publish(&thing, topic, payload);
                }
            }
            Frame::Disconnect { thing } => {
                if let Some(thing) = wire::thing(&thing) {
                    self.local_outbox.disconnect(&thing);
                }
            }
            Frame::Change { change, meta } => {
                shared
                    .hub()
                    .publish(Arc::new(ChangeEvent::new(change, meta.into_meta())));
            }
            Frame::Event {
                thing,
                meta,
                rule,
                kind,
                payload,
                at,
            } => {
                if let Some(thing) = wire::thing(&thing) {
                    let output = rules_dsl::Output {
                        rule: Arc::from(rule),
                        at,
                        kind: rules_dsl::OutputKind::Event {
                            event: Arc::from(kind),
                            payload,
                        },
                    };
                    shared.hub().publish_event(Arc::new(RuleEvent::new(
                        thing,
                        meta.into_meta(),
                        output,
                    )));
                }
            }
            Frame::Registry => reload_registry(shared.clone()),
            Frame::Refresh { thing, meta } => {
                if let Some(thing) = wire::thing(&thing) {
                    shared.refresh_local(thing, meta.into_meta());
                }
            }
            Frame::Evict { id, thing } => {
                let answers = answers.clone();
                if let Some(thing) = wire::thing(&thing) {
                    let wait = shared.evict_local(thing);
                    tokio::spawn(async move {
                        let _ = wait.await;
                        let _ = answers.send(Frame::Done { id });
                    });
                }
            }
            Frame::TraceOf { id, thing } => {
                let answers = answers.clone();
                if let Some(thing) = wire::thing(&thing) {
                    let wait = shared.trace_local(thing);
                    tokio::spawn(async move {
                        let entries = wait.await.unwrap_or_default();
                        let entries = serde_json::to_value(entries).unwrap_or_default();
                        let _ = answers.send(Frame::Trace { id, entries });
                    });
                }
            }
            Frame::Watching { id, on } => {
                let mut names: Vec<Arc<str>> = self
                    .watchers
                    .load()
                    .iter()
                    .filter(|n| *n != peer)
                    .cloned()
                    .collect();
                if on {
                    names.push(peer.clone());
                }
                self.watchers.store(Arc::new(names));
                let _ = answers.send(Frame::Done { id });
            }
            Frame::Nudge => self.nudge.notify_one(),
            Frame::Settled { .. }
            | Frame::Answer { .. }
            | Frame::Done { .. }
            | Frame::Trace { .. } => {}
        }
    }

    fn note_session(&self, thing: &ThingName, peer: &Arc<str>) {
        if let Ok(mut sessions) = self.sessions.lock() {
            if sessions.get(thing).is_some_and(|p| p == peer) {
                return;
            }
            if sessions.len() >= MAX_SESSION_HINTS {
                sessions.clear();
            }
            sessions.insert(thing.clone(), peer.clone());
        }
    }

    // ---- ownership ----------------------------------------------------------------------

    /// Renews the lease every `renew` (or when nudged) and settles ownership, until the node
    /// leaves.
    async fn keep_lease(self: Arc<Self>) {
        let mut every = tokio::time::interval(self.config.renew);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut registry = None;
        loop {
            tokio::select! {
                _ = every.tick() => {}
                () = self.nudge.notified() => {}
            }
            if self.leaving.load(Ordering::Acquire) {
                return;
            }
            let Some(shared) = self.shared() else {
                return;
            };
            self.tick(&shared, &mut registry).await;
        }
    }

    fn record(&self, now: u64) -> NodeRecord {
        NodeRecord {
            name: self.me.to_string(),
            addr: self.config.advertise.clone(),
            expires: now + self.config.lease.as_millis() as u64,
            started: self.started,
        }
    }

    /// One round: renew, read, drop what was lost, take what is ours, hand over the rest.
    async fn tick(&self, shared: &Arc<dyn Local>, registry: &mut Option<Option<Vec<u8>>>) {
        let _changing = self.changing.lock().await;
        let directory = shared.directory().clone();
        let now = crate::now_ms();
        let record = self.record(now);
        let renewed = store_call(move || {
            let repos = directory.repos();
            directory
                .store()
                .transact(|tx| repos.cluster.put_node(tx, &record))
        })
        .await;
        match renewed {
            Ok(()) => {
                metrics::counter!("doppel_cluster_lease_renewals_total").increment(1);
                self.lease_until.store(
                    now + self.config.lease.as_millis() as u64,
                    Ordering::Release,
                );
            }
            Err(error) => {
                metrics::counter!("doppel_cluster_lease_misses_total").increment(1);
                warn!(%error, "renewing the node's lease failed");
            }
        }
        if crate::now_ms() >= self.lease_until.load(Ordering::Acquire) {
            // The lease lapsed: peers may own every shard by now.
            let held = self.held();
            if !held.is_empty() {
                error!(
                    shards = held.len(),
                    "the node's lease lapsed; dropping its shards"
                );
                self.lose(shared, &held, "lease").await;
            }
            self.ready.store(false, Ordering::Release);
            return;
        }
        let directory = shared.directory().clone();
        let count = self.shards;
        let read = store_call(move || {
            let repos = directory.repos();
            directory.store().transact(|tx| {
                Ok((
                    repos.cluster.nodes(tx)?,
                    repos.cluster.shards(tx, count)?,
                    repos.meta.get(tx, REGISTRY)?,
                ))
            })
        })
        .await;
        let (nodes, records, seen) = match read {
            Ok(read) => read,
            Err(error) => {
                warn!(%error, "reading cluster ownership failed");
                return;
            }
        };
        if registry.as_ref() != Some(&seen) {
            // Not on the first round: the directory was loaded at start.
            if registry.is_some() {
                reload_registry(shared.clone());
            }
            *registry = Some(seen);
        }
        let now = crate::now_ms();
        let live: Vec<NodeRecord> = nodes.into_iter().filter(|n| n.expires > now).collect();
        let owned_names: Vec<String> = live.iter().map(|n| n.name.clone()).collect();
        let names: Vec<&str> = owned_names.iter().map(String::as_str).collect();
        let alive = |owner: &Option<String>| {
            owner
                .as_deref()
                .is_some_and(|o| o != &*self.me && names.contains(&o))
        };
        let held = self.table.load().held.clone();
        let mut lost = Vec::new();
        let mut want = Vec::new();
        let mut give = Vec::new();
        // Owned in the store by this node's name but not held: a previous run of this node
        // (restarted within its lease) or a release that failed.
        let mut stale = Vec::new();
        for shard in 0..self.shards {
            let s = shard as usize;
            let record = &records[s];
            let target = assign::owner(shard, &names);
            if held[s] != 0 {
                if record.owner.as_deref() != Some(&*self.me) || record.epoch != held[s] {
                    lost.push(shard);
                } else if target.is_some_and(|t| t != &*self.me) {
                    give.push(shard);
                }
            } else if target == Some(&*self.me) && !alive(&record.owner) {
                want.push(shard);
            } else if record.owner.as_deref() == Some(&*self.me) {
                stale.push((shard, record.epoch));
            }
        }
        if !stale.is_empty() {
            self.disown(shared, stale).await;
        }
        if !lost.is_empty() {
            warn!(shards = lost.len(), "shards were taken over by other nodes");
            self.lose(shared, &lost, "lost").await;
        }
        let taken = if want.is_empty() {
            Vec::new()
        } else {
            self.take(shared, want).await
        };
        let mut records = records;
        for (shard, epoch) in &taken {
            records[*shard as usize] = ShardRecord {
                owner: Some(self.me.to_string()),
                epoch: *epoch,
            };
        }
        self.install(shared, live, records, &taken, &[]);
        if !taken.is_empty() {
            info!(shards = taken.len(), "took shards");
            metrics::counter!("doppel_cluster_shard_moves_total", "kind" => "take")
                .increment(taken.len() as u64);
            self.broadcast(&Frame::Nudge);
            let shards: HashSet<u32> = taken.iter().map(|(s, _)| *s).collect();
            shared.clone().resume_deadlines(Arc::new(shards));
        }
        if !give.is_empty() {
            self.release(shared, &give).await;
        }
        let table = self.table.load();
        let ready = (0..self.shards).all(|shard| {
            let s = shard as usize;
            match &table.dest[s] {
                Dest::Local => true,
                Dest::Peer(_) => assign::owner(shard, &names) != Some(&*self.me),
                // Handed over just now: the peer takes it at once.
                Dest::Park => give.contains(&shard),
            }
        });
        self.ready.store(ready, Ordering::Release);
    }

    /// The shards this node holds.
    fn held(&self) -> Vec<u32> {
        let table = self.table.load();
        (0..self.shards)
            .filter(|s| table.held[*s as usize] != 0)
            .collect()
    }

    /// Takes `shards` where their owner released them or let its lease lapse (checked again
    /// in the transaction); returns those taken and their new epochs.
    async fn take(&self, shared: &Arc<dyn Local>, shards: Vec<u32>) -> Vec<(u32, u64)> {
        let directory = shared.directory().clone();
        let me = self.me.to_string();
        let taken = store_call(move || {
            let repos = directory.repos();
            directory.store().transact(|tx| {
                let now = crate::now_ms();
                let live: HashSet<String> = repos
                    .cluster
                    .nodes(tx)?
                    .into_iter()
                    .filter(|n| n.expires > now)
                    .map(|n| n.name)
                    .collect();
                let records = repos.cluster.shards_of(tx, &shards)?;
                let mut taken = Vec::new();
                for (shard, record) in shards.iter().zip(records) {
                    let free = match &record.owner {
                        None => true,
                        Some(owner) => owner == &me || !live.contains(owner),
                    };
                    if free {
                        let epoch = record.epoch + 1;
                        repos.cluster.put_shard(
                            tx,
                            *shard,
                            &ShardRecord {
                                owner: Some(me.clone()),
                                epoch,
                            },
                        )?;
                        taken.push((*shard, epoch));
                    }
                }
                Ok(taken)
            })
        })
        .await;
        match taken {
            Ok(taken) => taken,
            Err(error) => {
                warn!(%error, "taking shards failed");
                Vec::new()
            }
        }
    }

    /// Replaces the table: `taken` are now held, `dropped` no longer.
    fn install(
        &self,
        shared: &Arc<dyn Local>,
        live: Vec<NodeRecord>,
        records: Vec<ShardRecord>,
        taken: &[(u32, u64)],
        dropped: &[u32],
    ) {
        let old = self.table.load();
        let mut held = old.held.clone();
        for (shard, epoch) in taken {
            held[*shard as usize] = *epoch;
        }
        for shard in dropped {
            held[*shard as usize] = 0;
        }
        let mut peers = HashMap::new();
        for node in &live {
            if *node.name == *self.me {
                continue;
            }
            let name: Arc<str> = Arc::from(node.name.as_str());
            let peer = match old.peers.get(&name) {
                Some(peer) if peer.addr == node.addr => peer.clone(),
                _ => {
                    let Some(this) = self.this.upgrade() else {
                        continue;
                    };
                    let peer = Peer::start(&this, name.clone(), node.addr.clone());
                    // A node that just joined (or came back): it looks at ownership now, and
                    // hands over what is now this node's without waiting for its next round.
                    peer.tell(Frame::Nudge);
                    if self.watching.load(Ordering::Acquire) {
                        drop(peer.ask_done(|id| Frame::Watching { id, on: true }));
                    }
                    peer
                }
            };
            peers.insert(name, peer);
        }
        let dest = (0..self.shards as usize)
            .map(|s| {
                if held[s] != 0 {
                    // Held shards being handed over stay parked until released.
                    match old.dest[s] {
                        Dest::Park if old.held[s] != 0 => Dest::Park,
                        _ => Dest::Local,
                    }
                } else {
                    match records[s].owner.as_deref() {
                        Some(owner) => peers
                            .get(owner)
                            .map_or(Dest::Park, |p| Dest::Peer(p.clone())),
                        None => Dest::Park,
                    }
                }
            })
            .collect();
        metrics::gauge!("doppel_cluster_shards_owned")
            .set(held.iter().filter(|e| **e != 0).count() as f64);
        self.table.store(Arc::new(Table {
            dest,
            held,
            shards: records,
            nodes: live,
            peers,
        }));
        self.drain_parked(shared.as_ref());
    }

    /// Changes where some shards' work goes, nothing else.
    fn redirect(&self, shards: &[u32], to: Dest) {
        let old = self.table.load();
        let mut dest = old.dest.clone();
        for shard in shards {
            dest[*shard as usize] = to.clone();
        }
        self.table.store(Arc::new(Table {
            dest,
            held: old.held.clone(),
            shards: old.shards.clone(),
            nodes: old.nodes.clone(),
            peers: old.peers.clone(),
        }));
    }

    /// Shards taken by others (or a lapsed lease): their twins are dropped, nothing of theirs
    /// is committed or released any more (fencing refuses it anyway).
    async fn lose(&self, shared: &Arc<dyn Local>, shards: &[u32], why: &'static str) {
        metrics::counter!("doppel_cluster_shard_moves_total", "kind" => why)
            .increment(shards.len() as u64);
        let old = self.table.load();
        let (live, mut records) = (old.nodes.clone(), old.shards.clone());
        for shard in shards {
            // Owner unknown until read again.
            records[*shard as usize].owner = None;
        }
        self.install(shared, live, records, &[], shards);
        futures::future::join_all(shared.drop_shards(Arc::new(shards.iter().copied().collect())))
            .await;
    }

    /// Hands shards over cleanly: new work parks, what was routed before is committed, the
    /// twins are dropped, then the shards are released in the store and peers are told.
    async fn release(&self, shared: &Arc<dyn Local>, shards: &[u32]) {
        self.redirect(shards, Dest::Park);
        futures::future::join_all(shared.flush_local()).await;
        futures::future::join_all(shared.drop_shards(Arc::new(shards.iter().copied().collect())))
            .await;
        let held: Vec<(u32, u64)> = {
            let table = self.table.load();
            shards
                .iter()
                .map(|s| (*s, table.held[*s as usize]))
                .collect()
        };
        let directory = shared.directory().clone();
        let me = self.me.to_string();
        let released = store_call(move || {
            let repos = directory.repos();
            directory.store().transact(|tx| {
                let ids: Vec<u32> = held.iter().map(|(s, _)| *s).collect();
                let records = repos.cluster.shards_of(tx, &ids)?;
                for ((shard, epoch), record) in held.iter().zip(records) {
                    if record.owner.as_deref() == Some(me.as_str()) && record.epoch == *epoch {
                        repos.cluster.put_shard(
                            tx,
                            *shard,
                            &ShardRecord {
                                owner: None,
                                epoch: *epoch,
                            },
                        )?;
                    }
                }
                Ok(())
            })
        })
        .await;
        if let Err(error) = released {
            // The shards stay ours in the store; their new owner waits for the lease.
            warn!(%error, "releasing shards failed");
        }
        let old = self.table.load();
        let (live, mut records) = (old.nodes.clone(), old.shards.clone());
        for shard in shards {
            records[*shard as usize].owner = None;
        }
        self.install(shared, live, records, &[], shards);
        info!(shards = shards.len(), "released shards");
        metrics::counter!("doppel_cluster_shard_moves_total", "kind" => "release")
            .increment(shards.len() as u64);
        self.broadcast(&Frame::Nudge);
    }

    /// Releases in the store shards that name this node but that it does not hold.
    async fn disown(&self, shared: &Arc<dyn Local>, shards: Vec<(u32, u64)>) {
        let directory = shared.directory().clone();
        let me = self.me.to_string();
        let count = shards.len();
        let done = store_call(move || {
            let repos = directory.repos();
            directory.store().transact(|tx| {
                let ids: Vec<u32> = shards.iter().map(|(s, _)| *s).collect();
                let records = repos.cluster.shards_of(tx, &ids)?;
                for ((shard, epoch), record) in shards.iter().zip(records) {
                    if record.owner.as_deref() == Some(me.as_str()) && record.epoch == *epoch {
                        let released = ShardRecord {
                            owner: None,
                            epoch: *epoch,
                        };
                        repos.cluster.put_shard(tx, *shard, &released)?;
                    }
                }
                Ok(())
            })
        })
        .await;
        match done {
            Ok(()) => {
                info!(shards = count, "released shards this node no longer holds");
                self.broadcast(&Frame::Nudge);
            }
            Err(error) => warn!(%error, "releasing stale shards failed"),
        }
    }

    /// Reads ownership and routes by it, taking nothing (a node leaving forwards what still
    /// reaches it to the shards' new owners).
    async fn follow(&self, shared: &Arc<dyn Local>) -> bool {
        let directory = shared.directory().clone();
        let count = self.shards;
        let read = store_call(move || {
            let repos = directory.repos();
            directory
                .store()
                .transact(|tx| Ok((repos.cluster.nodes(tx)?, repos.cluster.shards(tx, count)?)))
        })
        .await;
        let Ok((nodes, records)) = read else {
            return false;
        };
        let now = crate::now_ms();
        let live = nodes.into_iter().filter(|n| n.expires > now).collect();
        self.install(shared, live, records, &[], &[]);
        let table = self.table.load();
        table.dest.iter().all(|d| matches!(d, Dest::Peer(_)))
    }

    /// A commit found shards no longer ours: look again now.
    pub fn fenced(&self) {
        metrics::counter!("doppel_commit_fenced_total").increment(1);
        self.nudge.notify_one();
    }

    /// Leaves the cluster (SIGTERM): every shard is committed and released, the node's record
    /// removed; peers take the shards at once.
    pub async fn leave(&self) {
        let Some(shared) = self.shared() else {
            return;
        };
        self.leaving.store(true, Ordering::Release);
        let _changing = self.changing.lock().await;
        let held = self.held();
        if !held.is_empty() {
            self.release(&shared, &held).await;
        }
        let directory = shared.directory().clone();
        let me = self.me.to_string();
        let removed = store_call(move || {
            let repos = directory.repos();
            directory
                .store()
                .transact(|tx| repos.cluster.remove_node(tx, &me))
        })
        .await;
        if let Err(error) = removed {
            warn!(%error, "removing the node's record failed");
        }
        self.broadcast(&Frame::Nudge);
        // Until peers have taken every shard (3 s at most), what still reaches this node is
        // forwarded to them.
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline && !self.follow(&shared).await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Give what was forwarded a moment to leave before the connections close.
        for peer in self.peers() {
            peer.drained(Duration::from_millis(500)).await;
        }
        info!("left the cluster");
    }

    /// What `GET /v1/cluster` shows.
    pub fn view(&self) -> ClusterView {
        let table = self.table.load();
        let nodes = table
            .nodes
            .iter()
            .map(|n| NodeView {
                name: n.name.clone(),
                addr: n.addr.clone(),
                lease_expires: n.expires,
                started: n.started,
                shards: table
                    .shards
                    .iter()
                    .filter(|s| s.owner.as_deref() == Some(n.name.as_str()))
                    .count(),
            })
            .collect();
        ClusterView {
            node: self.me.to_string(),
            nodes,
            shards: table.shards.clone(),
        }
    }

    /// Tells peers about a change of types, keys, rules or the admin token, and marks it in
    /// the store (so that a peer that missed the news reloads on its next round).
    async fn announce_registry(self: Arc<Self>) {
        loop {
            let Some(shared) = self.shared() else {
                return;
            };
            let directory = shared.directory().clone();
            drop(shared);
            directory.registry_changed().notified().await;
            let Some(shared) = self.shared() else {
                return;
            };
            self.broadcast(&Frame::Registry);
            let directory = shared.directory().clone();
            let mark: [u8; 16] = rand::random();
            let _ = store_call(move || {
                let repos = directory.repos();
                directory
                    .store()
                    .transact(|tx| repos.meta.set(tx, REGISTRY, &mark))
            })
            .await;
            debug!("registry change announced");
        }
    }
}

/// The virtual shard of `thing` among `shards` (as [`crate::Node::shard_of`] computes it).
pub(crate) fn shard_of(thing: &ThingName, shards: u32) -> u32 {
    (xxhash_rust::xxh3::xxh3_64(thing.as_str().as_bytes()) % u64::from(shards.max(1))) as u32
}

/// The meta record that changes with every registry change.
const REGISTRY: &str = "registry";

/// Reloads types, keys, rules and the admin token from the store.
fn reload_registry(shared: Arc<dyn Local>) {
    tokio::spawn(async move {
        let directory = shared.directory().clone();
        match blocking(move || directory.reload()).await {
            Ok(Ok(())) => debug!("registry reloaded"),
            Ok(Err(error)) => warn!(%error, "reloading the registry failed"),
            Err(error) => warn!(%error, "reloading the registry failed"),
        }
    });
}

/// Messages for devices, wherever their sessions are.
pub(crate) struct ClusterOutbox {
    pub local: Arc<dyn Outbox>,
    pub cluster: Arc<Cluster>,
}

impl Outbox for ClusterOutbox {
    fn publish(&self, thing: &ThingName, topic: String, payload: bytes::Bytes) {
        if self.local.holds(thing) {
            self.local.publish(thing, topic, payload);
            return;
        }
        let frame = Frame::Publish {
            thing: thing.to_string(),
            topic,
            payload,
        };
        let hint = self
            .cluster
            .sessions
            .lock()
            .ok()
            .and_then(|s| s.get(thing).cloned());
        let table = self.cluster.table.load();
        match hint.and_then(|name| table.peers.get(&name).cloned()) {
            Some(peer) => {
                peer.tell(frame);
            }
            None => self.cluster.broadcast(&frame),
        }
    }

    fn wants(&self, thing: &ThingName, topic: &str) -> bool {
        if self.local.holds(thing) {
            self.local.wants(thing, topic)
        } else {
            true
        }
    }

    fn disconnect(&self, thing: &ThingName) -> bool {
        let here = self.local.disconnect(thing);
        self.cluster.broadcast(&Frame::Disconnect {
            thing: thing.to_string(),
        });
        here
    }

    fn holds(&self, thing: &ThingName) -> bool {
        self.local.holds(thing)
    }
}

#[cfg(test)]
mod tests {
    //! Routing and parking of one node's cluster part, against a recording stand-in for the
    //! node (no store, no peers).
    use super::*;
    use rules_dsl::Input;

    #[derive(Default)]
    struct Recorder {
        routed: Mutex<Vec<String>>,
        timeout: Mutex<Duration>,
    }

    impl Local for Recorder {
        fn directory(&self) -> &Arc<Directory> {
            unreachable!("routing does not use the directory")
        }
        fn hub(&self) -> &ChangeHub {
            unreachable!("routing does not use the hub")
        }
        fn request_timeout(&self) -> Duration {
            *self.timeout.lock().unwrap()
        }
        fn route_local(&self, _: u32, thing: ThingName, _: Deliver) {
            self.routed.lock().unwrap().push(thing.to_string());
        }
        fn refresh_local(&self, _: ThingName, _: Arc<ThingMeta>) {}
        fn evict_local(&self, _: ThingName) -> tokio::sync::oneshot::Receiver<()> {
            tokio::sync::oneshot::channel().1
        }
        fn trace_local(
            &self,
            _: ThingName,
        ) -> tokio::sync::oneshot::Receiver<Vec<rules_dsl::TraceEntry>> {
            tokio::sync::oneshot::channel().1
        }
        fn drop_shards(&self, _: Arc<HashSet<u32>>) -> Vec<tokio::sync::oneshot::Receiver<()>> {
            Vec::new()
        }
        fn flush_local(&self) -> Vec<tokio::sync::oneshot::Receiver<()>> {
            Vec::new()
        }
        fn resume_deadlines(self: Arc<Self>, _: Arc<HashSet<u32>>) {}
    }

    struct NoDevices;

    impl Outbox for NoDevices {
        fn publish(&self, _: &ThingName, _: String, _: bytes::Bytes) {}
        fn wants(&self, _: &ThingName, _: &str) -> bool {
            false
        }
        fn disconnect(&self, _: &ThingName) -> bool {
            false
        }
        fn holds(&self, _: &ThingName) -> bool {
            false
        }
    }

    fn cluster() -> Arc<Cluster> {
        let config = ClusterConfig {
            name: "me".into(),
            listen: "127.0.0.1:0".parse().unwrap(),
            advertise: "127.0.0.1:0".into(),
            secret: b"secret".to_vec(),
            lease: Duration::from_secs(5),
            renew: Duration::from_secs(1),
        };
        // One shard: every thing is in shard 0.
        Cluster::new(config, 1, Arc::new(NoDevices))
    }

    fn send(cluster: &Cluster, local: &Recorder, name: &str) {
        let thing = ThingName::new(name).unwrap();
        cluster.route(local, 0, thing, Deliver::internal(Input::Timer));
    }

    fn own(cluster: &Cluster, lease_ok: bool) {
        let until = if lease_ok {
            crate::now_ms() + 10_000
        } else {
            0
        };
        cluster.lease_until.store(until, Ordering::Release);
        cluster.redirect(&[0], Dest::Local);
    }

    #[test]
    fn work_parks_until_its_shard_is_owned_and_then_keeps_its_order() {
        let (cluster, local) = (cluster(), Recorder::default());
        *local.timeout.lock().unwrap() = Duration::from_secs(10);
        send(&cluster, &local, "t1");
        send(&cluster, &local, "t2");
        assert!(local.routed.lock().unwrap().is_empty(), "no owner: parked");
        // Owned, but parked work goes first: new work queues behind it until it is drained.
        own(&cluster, true);
        send(&cluster, &local, "t3");
        assert!(local.routed.lock().unwrap().is_empty());
        cluster.drain_parked(&local);
        send(&cluster, &local, "t4");
        assert_eq!(*local.routed.lock().unwrap(), ["t1", "t2", "t3", "t4"]);
        assert_eq!(cluster.parked_count.load(Ordering::Acquire), 0);
    }

    #[test]
    fn a_lapsed_lease_parks_local_work_and_old_work_is_dropped() {
        let (cluster, local) = (cluster(), Recorder::default());
        *local.timeout.lock().unwrap() = Duration::from_secs(10);
        own(&cluster, false);
        send(&cluster, &local, "t1");
        assert!(
            local.routed.lock().unwrap().is_empty(),
            "lease lapsed: parked"
        );
        own(&cluster, true);
        cluster.drain_parked(&local);
        assert_eq!(*local.routed.lock().unwrap(), ["t1"]);
        // Parked past the request timeout: dropped (its sender sees a failure).
        cluster.redirect(&[0], Dest::Park);
        *local.timeout.lock().unwrap() = Duration::ZERO;
        send(&cluster, &local, "t2");
        cluster.drain_parked(&local);
        assert_eq!(cluster.parked_count.load(Ordering::Acquire), 0);
        own(&cluster, true);
        cluster.drain_parked(&local);
        assert_eq!(*local.routed.lock().unwrap(), ["t1"]);
    }

    #[test]
    fn forwarded_work_for_a_shard_elsewhere_or_with_a_lapsed_lease_is_refused() {
        let (cluster, local) = (cluster(), Recorder::default());
        *local.timeout.lock().unwrap() = Duration::from_secs(10);
        own(&cluster, false);
        let thing = ThingName::new("t1").unwrap();
        cluster.run_forwarded(&local, thing.clone(), Deliver::internal(Input::Timer));
        assert_eq!(
            cluster.parked_count.load(Ordering::Acquire),
            0,
            "not parked"
        );
        own(&cluster, true);
        cluster.drain_parked(&local);
        assert!(
            local.routed.lock().unwrap().is_empty(),
            "refused, not run late"
        );
        cluster.run_forwarded(&local, thing, Deliver::internal(Input::Timer));
        assert_eq!(*local.routed.lock().unwrap(), ["t1"]);
    }
}
