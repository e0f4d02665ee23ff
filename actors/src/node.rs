//! The node: shard hosts on their arbiters and the handle the rest of the process uses to reach
//! twins. A thing's shard is a stable hash of its name (xxh3) into `shards` virtual shards;
//! each shard lives on one arbiter.

use crate::{
    ack::Ack,
    cluster::{Cluster, ClusterConfig, ClusterOutbox, ClusterView, Local},
    config::NodeConfig,
    directory::{AuthFailure, Directory, NewThing, Registered},
    error::NodeError,
    hub::ChangeHub,
    mqtt::topics,
    outbox::Outbox,
    pool::blocking,
    shard::{HostStats, ShardHost, Stats},
    shared::{HostHandle, HostHealth, Shared},
    work::{Deliver, Flush, Origin, ThingMeta},
};
use actix::{Actor, Addr, Arbiter};
use rules_dsl::{Input, TraceEntry};
use serde_json::Value;
use std::sync::{
    Arc, Mutex, OnceLock,
    atomic::{AtomicU64, Ordering},
};
use storage::Store;
use tokio::sync::oneshot;
use twin_core::{BatchEntry, Command, Reply, ShadowName, ThingName, TypeName};

struct Inner {
    hosts: Vec<Addr<ShardHost>>,
    arbiters: Mutex<Vec<Arbiter>>,
    shared: Arc<Shared>,
    /// The last check that the store answers: when, and why it did not.
    store_check: tokio::sync::Mutex<Option<(std::time::Instant, Option<String>)>>,
}

/// A running node. Cheap to clone.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("hosts", &self.inner.hosts.len())
            .finish()
    }
}

impl Node {
    /// Starts one arbiter per configured core, each hosting its shards. Must run inside an
    /// actix system.
    pub fn start(
        directory: Arc<Directory>,
        config: NodeConfig,
        outbox: Arc<dyn Outbox>,
        hub: ChangeHub,
    ) -> Node {
        Self::start_with(directory, config, outbox, hub, None)
    }

    /// Starts a node of a cluster: it accepts its peers on `listener`, keeps its lease in the
    /// store and serves the twins of the shards it owns (forwarding the rest).
    pub fn start_in_cluster(
        directory: Arc<Directory>,
        config: NodeConfig,
        outbox: Arc<dyn Outbox>,
        hub: ChangeHub,
        cluster: ClusterConfig,
        listener: std::net::TcpListener,
    ) -> Node {
        Self::start_with(directory, config, outbox, hub, Some((cluster, listener)))
    }

    fn start_with(
        directory: Arc<Directory>,
        config: NodeConfig,
        outbox: Arc<dyn Outbox>,
        hub: ChangeHub,
        cluster: Option<(ClusterConfig, std::net::TcpListener)>,
    ) -> Node {
        let (cluster, listener) = match cluster {
            Some((settings, listener)) => (
                Some(Cluster::new(settings, config.shards, outbox.clone())),
                Some(listener),
            ),
            None => (None, None),
        };
        let outbox: Arc<dyn Outbox> = match &cluster {
            Some(cluster) => Arc::new(ClusterOutbox {
                local: outbox,
                cluster: cluster.clone(),
            }),
            None => outbox,
        };
        let shared = Arc::new(Shared {
            directory,
            outbox,
            hub,
            cluster,
            limits: Arc::new(config.limits.clone()),
            health: (0..config.arbiter_count())
                .map(|_| HostHealth::default())
                .collect(),
            config,
            hosts: OnceLock::new(),
            stages: crate::stages::Stages::register(),
            jobs_changed: tokio::sync::Notify::new(),
        });
        let mut hosts = Vec::new();
        let mut arbiters = Vec::new();
        for index in 0..shared.config.arbiter_count() {
            let arbiter = Arbiter::new();
            let for_host = shared.clone();
            hosts.push(ShardHost::start_in_arbiter(&arbiter.handle(), move |_| {
                ShardHost::new(index, for_host)
            }));
            arbiters.push(arbiter);
        }
        let _ = shared.hosts.set(
            hosts
                .iter()
                .map(|h| HostHandle {
                    route: h.clone().recipient(),
                    flush: h.clone().recipient(),
                    evict: h.clone().recipient(),
                    refresh: h.clone().recipient(),
                    trace: h.clone().recipient(),
                    drop_shards: h.clone().recipient(),
                })
                .collect(),
        );
        if shared.config.history.enabled {
            tokio::spawn(maintain_history(shared.clone()));
        }
        tokio::spawn(watch_certificate_expiry(shared.clone()));
        tokio::spawn(crate::jobs::run_rollouts(shared.clone()));
        match (&shared.cluster, listener) {
            (Some(cluster), Some(listener)) => {
                let local: Arc<dyn Local> = shared.clone();
                cluster.start(Arc::downgrade(&local), listener);
            }
            // Alone, the node owns every shard: wake every twin waiting on a deadline.
            _ => {
                tokio::spawn(shared.clone().resume_rule_deadlines(None));
            }
        }
        Node {
            inner: Arc::new(Inner {
                hosts,
                arbiters: Mutex::new(arbiters),
                shared,
                store_check: tokio::sync::Mutex::new(None),
            }),
        }
    }

    /// The node's configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.inner.shared.config
    }

    /// Things, credentials and device types.
    pub fn directory(&self) -> &Arc<Directory> {
        &self.inner.shared.directory
    }

    /// Committed changes.
    pub fn hub(&self) -> &ChangeHub {
        &self.inner.shared.hub
    }

    /// The virtual shard of `thing`.
    pub fn shard_of(&self, thing: &ThingName) -> u32 {
        self.inner.shared.shard_of(thing)
    }

    /// Whether `…/update/documents` of this shadow may have a listener.
    pub fn wants_documents(&self, thing: &ThingName, shadow: &ShadowName) -> bool {
        self.inner
            .shared
            .outbox
            .wants(thing, &topics::documents(thing, shadow))
    }

    /// Sends work from a device (a command, a command reply); `ack` is marked done once its
    /// effects are durable and released.
    pub fn deliver_from_device(&self, thing: ThingName, input: Input, ack: Option<Ack>) {
        let documents = match &input {
            Input::Command(command) => self.wants_documents(&thing, command.target().0),
            _ => false,
        };
        let deliver = Deliver::new(input, Origin::Device, ack).with_documents(documents);
        self.inner.shared.route(thing, deliver);
    }

    /// Sends a gateway's batch to the twins of its devices; `ack` is marked done once every
    /// entry's effects are durable and released. An entry for a thing not registered under the
    /// gateway is refused (403) on `gateways/{gateway}/telemetry/rejected`.
    pub fn deliver_batch(&self, gateway: &ThingName, entries: Vec<BatchEntry>, ack: Option<Ack>) {
        for BatchEntry { thing, sample } in entries {
            let deliver = Deliver::new(
                Input::Command(Command::Telemetry(sample)),
                Origin::Gateway(gateway.clone()),
                ack.as_ref().map(Ack::part),
            );
            self.inner.shared.route(thing, deliver);
        }
        if let Some(ack) = ack {
            ack.done();
        }
    }

    /// Creates a job (see [`crate::jobs`]); the rollout queues its executions.
    pub async fn create_job(
        &self,
        job: crate::jobs::NewJob,
        actor: &str,
    ) -> Result<crate::jobs::JobRecord, NodeError> {
        crate::jobs::create(&self.inner.shared, job, actor).await
    }

    /// Cancels a job: queued executions are canceled, and with `force` those in progress too.
    pub async fn cancel_job(
        &self,
        id: String,
        force: bool,
        actor: &str,
    ) -> Result<crate::jobs::JobRecord, NodeError> {
        crate::jobs::cancel(&self.inner.shared, id, force, actor).await
    }

    /// Queues the executions of continuous jobs that target these things (just registered
    /// or provisioned).
    pub async fn join_continuous_jobs(&self, things: Vec<(ThingName, Option<TypeName>)>) {
        crate::jobs::join_continuous(&self.inner.shared, things).await;
    }

    /// Sends a command from inside the node and waits for its reply, which comes once the
    /// change is durable. A change is recorded in the audit log under `audit` (a key id).
    pub async fn call(
        &self,
        thing: ThingName,
        command: Command,
        audit: Option<&str>,
    ) -> Result<Reply, NodeError> {
        let (tx, rx) = oneshot::channel();
        let documents = self.wants_documents(&thing, command.target().0);
        let deliver = Deliver::new(Input::Command(command), Origin::Caller(tx), None)
            .with_documents(documents)
            .audited(audit);
        self.inner.shared.route(thing, deliver);
        self.answer(rx).await
    }

    /// Waits for a host's or twin's answer, at most `request_timeout`.
    async fn answer<T>(&self, rx: oneshot::Receiver<T>) -> Result<T, NodeError> {
        let limit = self.config().request_timeout;
        match tokio::time::timeout(limit, rx).await {
            Ok(answer) => answer.map_err(|_| NodeError::Stopped),
            Err(_) => Err(NodeError::Timeout(limit)),
        }
    }

    /// Why the node cannot serve now, if it cannot: a host whose commit has been in flight, or
    /// failing, for longer than the request timeout (requests to its twins would time out).
    pub fn stuck(&self) -> Option<String> {
        let now = crate::now_ms();
        let limit = self.config().request_timeout.as_millis() as u64;
        self.inner
            .shared
            .health
            .iter()
            .enumerate()
            .find_map(|(host, health)| {
                let since = |at: &AtomicU64| match at.load(Ordering::Acquire) {
                    0 => None,
                    at => Some(now.saturating_sub(at)).filter(|took| *took >= limit),
                };
                if let Some(took) = since(&health.failing_since) {
                    Some(format!("host {host}: commits failing for {} ms", took))
                } else {
                    since(&health.committing_since)
                        .map(|took| format!("host {host}: a commit in flight for {} ms", took))
                }
            })
    }

    /// Why the node cannot serve now, if it cannot: [`Node::stuck`], or a store that does not
    /// answer (a database out of reach; checked at most once a second, waiting at most 2 s).
    pub async fn unready(&self) -> Option<String> {
        if let Some(why) = self.stuck() {
            return Some(why);
        }
        if let Some(cluster) = &self.inner.shared.cluster
            && !cluster.ready()
        {
            return Some("cluster: shards not yet taken or their owners unknown".into());
        }
        let mut check = self.inner.store_check.lock().await;
        if let Some((at, why)) = &*check
            && at.elapsed() < std::time::Duration::from_secs(1)
        {
            return why.clone();
        }
        let directory = self.directory().clone();
        let ping = blocking(move || directory.store().ping());
        let why = match tokio::time::timeout(std::time::Duration::from_secs(2), ping).await {
            Ok(Ok(Ok(()))) => None,
            Ok(Ok(Err(error))) => Some(format!("store: {error}")),
            Ok(Err(error)) => Some(format!("store: {error}")),
            Err(_) => Some("store: no answer within 2 s".to_string()),
        };
        *check = Some((std::time::Instant::now(), why.clone()));
        why
    }

    /// Runs `f` against the directory on the blocking pool (its calls reach the store).
    pub async fn with_directory<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Directory) -> Result<T, NodeError> + Send + 'static,
    ) -> Result<T, NodeError> {
        let directory = self.directory().clone();
        blocking(move || f(&directory)).await?
    }

    /// Registers a thing; the returned token is shown only now.
    pub async fn register(&self, thing: NewThing, actor: &str) -> Result<Registered, NodeError> {
        let mut done = self.register_many(vec![thing], actor).await?;
        Ok(done.remove(0))
    }

    /// Registers many things in one transaction (all or none).
    pub async fn register_many(
        &self,
        things: Vec<NewThing>,
        actor: &str,
    ) -> Result<Vec<Registered>, NodeError> {
        let actor = actor.to_owned();
        let registered = self
            .with_directory(move |d| d.register_many(things, &actor, crate::now_ms()))
            .await?;
        // Continuous jobs that target them queue their executions now.
        let joined: Vec<_> = registered
            .iter()
            .map(|r| (r.record.name.clone(), r.record.device_type.clone()))
            .collect();
        self.join_continuous_jobs(joined).await;
        Ok(registered)
    }

    /// The record of a registered thing.
    pub async fn thing(&self, name: ThingName) -> Result<Option<storage::ThingRecord>, NodeError> {
        self.with_directory(move |d| d.thing(&name)).await
    }

    /// Changes a thing's attributes (`None` removes one) and tells its twin, if active.
    pub async fn update_attributes(
        &self,
        name: ThingName,
        patch: std::collections::BTreeMap<String, Option<String>>,
        actor: &str,
    ) -> Result<storage::ThingRecord, NodeError> {
        let actor = actor.to_owned();
        let record = self
            .with_directory(move |d| d.update_attributes(&name, &patch, &actor, crate::now_ms()))
            .await?;
        self.refresh(&record);
        Ok(record)
    }

    /// Tells the thing's twin, if active, its new type and attributes.
    fn refresh(&self, record: &storage::ThingRecord) {
        let meta = Arc::new(ThingMeta {
            device_type: record.device_type.clone(),
            attributes: record.attributes.clone(),
        });
        let shared = &self.inner.shared;
        if let Some(cluster) = &shared.cluster
            && cluster.refresh_remote(self.shard_of(&record.name), &record.name, &meta)
        {
            return;
        }
        shared.refresh_local(record.name.clone(), meta);
    }

    /// Decommissions a thing at once: its token stops working, a live device session is
    /// closed, its twin is stopped and its state removed.
    pub async fn decommission(&self, thing: ThingName, actor: &str) -> Result<(), NodeError> {
        let (name, actor) = (thing.clone(), actor.to_owned());
        let parent = self
            .with_directory(move |d| {
                let parent = d
                    .thing(&name)?
                    .and_then(|r| r.attributes.get("parent").cloned());
                d.remove_thing(&name, &actor, crate::now_ms())?;
                Ok(parent)
            })
            .await?;
        self.inner.shared.outbox.disconnect(&thing);
        let remote = match &self.inner.shared.cluster {
            Some(cluster) => cluster.evict_remote(self.shard_of(&thing), &thing).await,
            None => Some(false),
        };
        if remote == Some(false) {
            let rx = self.inner.shared.evict_local(thing.clone());
            self.answer(rx).await?;
        }
        // A commit that was in flight during the removal may have written the twin again.
        let name = thing.clone();
        // Its history goes too: a thing registered later under this name starts afresh.
        let last_day = storage::repo::day_of(crate::now_ms()) + 1;
        self.with_directory(move |d| {
            Ok(d.store().transact(|tx| {
                d.repos().twins.remove(tx, &name)?;
                d.repos().rule_states.remove(tx, &name)?;
                d.repos().presence.remove(tx, name.as_str())?;
                d.repos().history.remove_thing(tx, &name, last_day)
            })?)
        })
        .await?;
        // Its parent stops counting it.
        if let Some(parent) = parent.and_then(|p| ThingName::new(&p).ok()) {
            self.inner.shared.route(
                parent,
                Deliver::internal(Input::Child(thing.to_string(), None)),
            );
        }
        Ok(())
    }

    /// Changes a certificate's status (see [`Directory::set_certificate_status`]); when it no
    /// longer authenticates, the thing's live session is closed wherever it is (the device
    /// may come back with another credential).
    pub async fn set_certificate_status(
        &self,
        thing: ThingName,
        id: String,
        status: storage::CertStatus,
        actor: &str,
    ) -> Result<storage::CertRecord, NodeError> {
        let (name, actor) = (thing.clone(), actor.to_owned());
        let record = self
            .with_directory(move |d| {
                d.set_certificate_status(name.as_str(), &id, status, &actor, crate::now_ms())
            })
            .await?;
        if status != storage::CertStatus::Active {
            self.inner.shared.outbox.disconnect(&thing);
        }
        Ok(record)
    }

    /// The latest rule evaluations of `thing`'s twin, if it is active (newest last), as JSON
    /// objects.
    pub async fn rule_trace(&self, thing: ThingName) -> Result<Vec<Value>, NodeError> {
        if let Some(cluster) = &self.inner.shared.cluster
            && let Some(entries) = cluster.trace_remote(self.shard_of(&thing), &thing).await
        {
            return Ok(match entries {
                Value::Array(entries) => entries,
                _ => Vec::new(),
            });
        }
        let entries: Vec<TraceEntry> = self.answer(self.inner.shared.trace_local(thing)).await?;
        Ok(entries
            .iter()
            .filter_map(|e| serde_json::to_value(e).ok())
            .collect())
    }

    /// Whether this node runs what a cluster runs once (the shared broker session): it owns
    /// shard 0 and its lease holds. A node alone always does.
    pub fn leads(&self) -> bool {
        self.inner
            .shared
            .cluster
            .as_ref()
            .is_none_or(|cluster| cluster.serves(0))
    }

    /// A device connected (`reason: None`) or disconnected: its connectivity is recorded and
    /// apps watching the thing get an `event` frame of kind `connected`/`disconnected` shaped
    /// like AWS IoT's presence events.
    pub fn presence(&self, thing: &ThingName, meta: Arc<ThingMeta>, disconnected: Option<&str>) {
        let now = crate::now_ms();
        let connected = disconnected.is_none();
        let mut payload = serde_json::json!({
            "clientId": thing.as_str(),
            "timestamp": now,
            "eventType": if connected { "connected" } else { "disconnected" },
            "principalIdentifier": thing.as_str(),
            "versionNumber": now,
        });
        if let Some(reason) = disconnected {
            payload["clientInitiatedDisconnect"] = (reason == "CLIENT_INITIATED_DISCONNECT").into();
            payload["disconnectReason"] = reason.into();
        }
        let output = rules_dsl::Output {
            rule: Arc::from("presence"),
            at: now,
            kind: rules_dsl::OutputKind::Event {
                event: Arc::from(if connected {
                    "connected"
                } else {
                    "disconnected"
                }),
                payload,
            },
        };
        // A session taken over by a new one of the same device: the event is sent (as AWS IoT
        // sends it), but the device is still connected, through its new session, which
        // connected first; recording this end would mark it offline.
        let taken_over = disconnected == Some("DUPLICATE_CLIENTID");
        // Rules reading `device.connected` see it change (only their twins get the input: a
        // reconnect storm does not wake every twin).
        if !taken_over
            && self
                .directory()
                .rules()
                .for_twin(thing, meta.device_type.as_ref())
                .iter()
                .any(|rule| rule.reads_device())
        {
            self.inner
                .shared
                .route(thing.clone(), Deliver::internal(Input::Presence(connected)));
        }
        self.inner
            .shared
            .publish_event(Arc::new(crate::hub::RuleEvent::new(
                thing.clone(),
                meta,
                output,
            )));
        metrics::counter!("doppel_presence_events_total", "event" => if connected { "connected" } else { "disconnected" })
            .increment(1);
        if taken_over {
            return;
        }
        let presence = storage::Presence {
            connected,
            since: now,
            last_seen: now,
            disconnect_reason: disconnected.map(str::to_owned),
        };
        // A session the node ended for cause (throttled, credentials withdrawn) is audited.
        let audited = disconnected
            .filter(|r| matches!(*r, "THROTTLED" | "AUTHORIZATION_FAILURE"))
            .map(|reason| {
                storage::AuditEntry::new(
                    "node",
                    "device.disconnect",
                    thing.as_str(),
                    None,
                    None,
                    Some(serde_json::json!({ "reason": reason })),
                    now,
                )
            });
        let (directory, name) = (self.directory().clone(), thing.to_string());
        tokio::task::spawn_blocking(move || {
            let repos = directory.repos();
            // A later event already recorded wins (the writes run on the blocking pool).
            if let Err(error) = directory.store().transact(|tx| {
                if let Some(entry) = &audited {
                    repos.audit.append(tx, entry)?;
                }
                match repos.presence.get(tx, &name)? {
                    Some(newer) if newer.since > presence.since => Ok(()),
                    _ => repos.presence.put(tx, &name, &presence),
                }
            }) {
                tracing::warn!(thing = %name, %error, "recording connectivity failed");
            }
        });
    }

    /// A thing's connectivity, if it ever connected.
    pub async fn connectivity(
        &self,
        thing: ThingName,
    ) -> Result<Option<storage::Presence>, NodeError> {
        self.with_directory(move |d| {
            Ok(d.store()
                .transact(|tx| d.repos().presence.get(tx, thing.as_str()))?)
        })
        .await
    }

    /// The cluster as this node sees it (`None`: the node runs alone).
    pub fn cluster(&self) -> Option<ClusterView> {
        self.inner.shared.cluster.as_ref().map(|c| c.view())
    }

    /// Makes sure committed changes of twins owned by other nodes reach this node's watchers
    /// from now on (a WebSocket subscription calls it before reading its snapshot).
    pub async fn watch_cluster(&self) {
        if let Some(cluster) = &self.inner.shared.cluster {
            cluster.watch().await;
        }
    }

    /// Leaves the cluster, if in one: commits and releases every shard so that peers take them
    /// at once (on SIGTERM, before [`Node::stop`]).
    pub async fn leave(&self) {
        if let Some(cluster) = &self.inner.shared.cluster {
            cluster.leave().await;
        }
    }

    /// Checks a device's credentials.
    pub async fn authenticate(
        &self,
        name: ThingName,
        token: String,
    ) -> Result<storage::ThingRecord, AuthFailure> {
        let directory = self.directory().clone();
        blocking(move || directory.authenticate(&name, &token))
            .await
            .unwrap_or(Err(AuthFailure::Unavailable))
    }

    /// Counts summed over all hosts (`sweeps`: the fewest any host ran, so that "every host
    /// swept at least n times" can be waited for).
    pub async fn stats(&self) -> HostStats {
        let mut total = HostStats {
            sweeps: u64::MAX,
            ..HostStats::default()
        };
        for host in &self.inner.hosts {
            if let Ok(s) = host.send(Stats).await {
                total.active += s.active;
                total.loading += s.loading;
                total.passivated += s.passivated;
                total.pending += s.pending;
                total.sweeps = total.sweeps.min(s.sweeps);
            }
        }
        total
    }

    /// Waits until everything delivered so far is committed and released.
    pub async fn flush(&self) {
        let mut waits = Vec::new();
        for host in &self.inner.hosts {
            let (tx, rx) = oneshot::channel();
            host.do_send(Flush(tx));
            waits.push(rx);
        }
        for wait in waits {
            let _ = wait.await;
        }
    }

    /// Stops the arbiters (after [`Node::flush`]).
    pub fn stop(&self) {
        if let Ok(mut arbiters) = self.inner.arbiters.lock() {
            for arbiter in arbiters.drain(..) {
                arbiter.stop();
                let _ = arbiter.join();
            }
        }
    }
}

/// Counts the active device certificates that expire within `certificate_warning`
/// (`doppel_certificates_expiring`), and announces each once per run to the apps watching its
/// thing (an `event` frame of kind `certificate_expiring`), now and every
/// `certificate_check_every`; in a cluster, on the owner of shard 0.
async fn watch_certificate_expiry(shared: Arc<Shared>) {
    let mut every = crate::shared::leader_ticks(shared.config.certificate_check_every);
    loop {
        every.tick(&shared).await;
        let now = crate::now_ms();
        let horizon = now + shared.config.certificate_warning.as_millis() as u64;
        let mut after: Option<String> = None;
        let mut expiring = Vec::new();
        loop {
            let (for_job, from) = (shared.clone(), after.clone());
            let page = crate::pool::store_call(move || {
                let d = &for_job.directory;
                d.store()
                    .transact(|tx| d.repos().certs.page(tx, from.as_deref(), 1_000))
            })
            .await;
            let page = match page {
                Ok(page) => page,
                Err(error) => {
                    tracing::warn!(%error, "checking certificate expiry failed");
                    break;
                }
            };
            let Some(last) = page.last() else {
                break;
            };
            after = Some(last.id.clone());
            let full = page.len() == 1_000;
            expiring.extend(
                page.into_iter()
                    .filter(|c| c.status == storage::CertStatus::Active && c.not_after <= horizon),
            );
            if !full {
                break;
            }
        }
        metrics::gauge!("doppel_certificates_expiring").set(expiring.len() as f64);
        for cert in expiring {
            let Ok(thing) = ThingName::new(&cert.thing) else {
                continue;
            };
            tracing::warn!(%thing, id = %cert.id, expires = cert.not_after, "device certificate expires soon");
            let output = rules_dsl::Output {
                rule: Arc::from("certificates"),
                at: now,
                kind: rules_dsl::OutputKind::Event {
                    event: Arc::from("certificate_expiring"),
                    payload: serde_json::json!({
                        "id": cert.id,
                        "expires": cert.not_after,
                        "expired": cert.not_after <= now,
                    }),
                },
            };
            shared.publish_event(Arc::new(crate::hub::RuleEvent::new(
                thing,
                Arc::default(),
                output,
            )));
        }
    }
}

/// Rolls telemetry history up and expires it, now and every `maintenance_every`, for as long as
/// the node runs.
async fn maintain_history(shared: Arc<Shared>) {
    let mut every = crate::shared::leader_ticks(shared.config.history.maintenance_every);
    loop {
        every.tick(&shared).await;
        let for_job = shared.clone();
        let done = blocking(move || {
            crate::history::maintain(&for_job.directory, &for_job.config.history, crate::now_ms())
        })
        .await;
        if let Ok(Err(error)) | Err(error) = done {
            tracing::error!(%error, "telemetry history maintenance failed");
        }
    }
}
