//! What every shard host shares: the directory, the outbox, the change hub, the configuration,
//! the way to any twin (the hosts by shard, and the cluster when there is one), and each host's
//! commit health.

use crate::{
    cluster::{Cluster, Local},
    config::NodeConfig,
    directory::Directory,
    hub::{ChangeEvent, ChangeHub, RuleEvent},
    outbox::Outbox,
    pool::blocking,
    work::{Deliver, DropShards, Evict, Flush, Refresh, Route, ThingMeta, TraceOf},
};
use actix::Recipient;
use rules_dsl::{Input, TraceEntry};
use std::{
    collections::HashSet,
    sync::{Arc, OnceLock, atomic::AtomicU64},
    time::Duration,
};
use storage::Store;
use tokio::sync::oneshot;
use twin_core::{Limits, ThingName};

/// The messages one shard host takes.
pub(crate) struct HostHandle {
    pub route: Recipient<Route>,
    pub flush: Recipient<Flush>,
    pub evict: Recipient<Evict>,
    pub refresh: Recipient<Refresh>,
    pub trace: Recipient<TraceOf>,
    pub drop_shards: Recipient<DropShards>,
}

/// What every shard host shares.
pub(crate) struct Shared {
    pub directory: Arc<Directory>,
    pub outbox: Arc<dyn Outbox>,
    pub hub: ChangeHub,
    pub config: NodeConfig,
    pub limits: Arc<Limits>,
    /// The shard hosts, set once they started.
    pub hosts: OnceLock<Vec<HostHandle>>,
    /// Per host: how its commits fare, for readiness.
    pub health: Vec<HostHealth>,
    /// Where messages' time goes.
    pub stages: crate::stages::Stages,
    /// The cluster this node is part of, if any.
    pub cluster: Option<Arc<Cluster>>,
    /// Woken when a job was created here (the rollout looks at once).
    pub jobs_changed: tokio::sync::Notify,
}

/// How one host's commits fare, read by `Node::stuck` without asking the host (a stuck host
/// might not answer).
#[derive(Debug, Default)]
pub(crate) struct HostHealth {
    /// When the commit in flight started (epoch ms), or 0.
    pub committing_since: AtomicU64,
    /// When the commits started failing (epoch ms), or 0 while they succeed.
    pub failing_since: AtomicU64,
}

impl Shared {
    /// The virtual shard of `thing`.
    pub fn shard_of(&self, thing: &ThingName) -> u32 {
        crate::cluster::shard_of(thing, self.config.shards)
    }

    /// The host of `shard` on this node.
    pub fn host(&self, shard: u32) -> Option<&HostHandle> {
        let hosts = self.hosts.get()?;
        hosts.get(shard as usize % hosts.len().max(1))
    }

    /// Sends work to `thing`'s twin: to the host of its shard, or to the node owning it.
    pub fn route(&self, thing: ThingName, deliver: Deliver) {
        let shard = self.shard_of(&thing);
        match &self.cluster {
            Some(cluster) => cluster.route(self, shard, thing, deliver),
            None => self.route_local(shard, thing, deliver),
        }
    }

    /// Sends work to the host of `shard` on this node.
    pub fn route_local(&self, shard: u32, thing: ThingName, deliver: Deliver) {
        if let Some(host) = self.host(shard) {
            host.route.do_send(Route { thing, deliver });
        }
    }

    /// Hands a committed change to this node's watchers and to peers with watchers.
    pub fn publish_change(&self, event: Arc<ChangeEvent>) {
        if let Some(cluster) = &self.cluster {
            cluster.share_change(&event);
        }
        self.hub.publish(event);
    }

    /// Hands a rule's output to this node's watchers and to peers with watchers.
    pub fn publish_event(&self, event: Arc<RuleEvent>) {
        if let Some(cluster) = &self.cluster {
            cluster.share_event(&event);
        }
        self.hub.publish_event(event);
    }

    /// The shards a commit of `things` writes and the epoch this node holds each at (0: not
    /// held): the commit checks them in its transaction. `None` outside a cluster.
    pub fn fence<'a>(
        &self,
        things: impl IntoIterator<Item = &'a ThingName>,
    ) -> Option<Vec<(u32, u64)>> {
        let cluster = self.cluster.as_ref()?;
        let shards: HashSet<u32> = things.into_iter().map(|t| self.shard_of(t)).collect();
        let mut fence: Vec<(u32, u64)> = shards
            .into_iter()
            .map(|s| (s, cluster.epoch(s).unwrap_or(0)))
            .collect();
        fence.sort_unstable();
        Some(fence)
    }

    /// Wakes the twins whose rules wait on a deadline (after a restart, or for shards just
    /// taken over): each is activated and resumes its timer.
    pub async fn resume_rule_deadlines(self: Arc<Self>, only: Option<Arc<HashSet<u32>>>) {
        let mut after: Option<ThingName> = None;
        loop {
            let for_job = self.clone();
            let from = after.clone();
            let page = blocking(move || {
                let d = &for_job.directory;
                d.store()
                    .transact(|tx| d.repos().rule_states.deadlines(tx, from.as_ref(), 1_000))
            })
            .await;
            let page = match page {
                Ok(Ok(page)) => page,
                Ok(Err(error)) => {
                    tracing::error!(%error, "reading rule deadlines failed");
                    return;
                }
                Err(_) => return,
            };
            let Some((last, _)) = page.last() else {
                return;
            };
            after = Some(last.clone());
            let full = page.len() == 1_000;
            for (thing, _) in page {
                if only
                    .as_ref()
                    .is_none_or(|shards| shards.contains(&self.shard_of(&thing)))
                {
                    self.route(thing, Deliver::internal(Input::Timer));
                }
            }
            if !full {
                return;
            }
        }
    }
}

impl Shared {
    /// Sends every host a message carrying a reply channel; the replies' receivers.
    fn ask_every_host(
        &self,
        send: impl Fn(&HostHandle, oneshot::Sender<()>),
    ) -> Vec<oneshot::Receiver<()>> {
        self.hosts
            .get()
            .into_iter()
            .flatten()
            .map(|host| {
                let (tx, rx) = oneshot::channel();
                send(host, tx);
                rx
            })
            .collect()
    }
}

impl Local for Shared {
    fn directory(&self) -> &Arc<Directory> {
        &self.directory
    }

    fn hub(&self) -> &ChangeHub {
        &self.hub
    }

    fn request_timeout(&self) -> Duration {
        self.config.request_timeout
    }

    fn route_local(&self, shard: u32, thing: ThingName, deliver: Deliver) {
        Shared::route_local(self, shard, thing, deliver);
    }

    fn refresh_local(&self, thing: ThingName, meta: Arc<ThingMeta>) {
        if let Some(host) = self.host(self.shard_of(&thing)) {
            host.refresh.do_send(Refresh(thing, meta));
        }
    }

    fn evict_local(&self, thing: ThingName) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        if let Some(host) = self.host(self.shard_of(&thing)) {
            host.evict.do_send(Evict(thing, tx));
        }
        rx
    }

    fn trace_local(&self, thing: ThingName) -> oneshot::Receiver<Vec<TraceEntry>> {
        let (tx, rx) = oneshot::channel();
        if let Some(host) = self.host(self.shard_of(&thing)) {
            host.trace.do_send(TraceOf(thing, tx));
        }
        rx
    }

    fn drop_shards(&self, shards: Arc<HashSet<u32>>) -> Vec<oneshot::Receiver<()>> {
        self.ask_every_host(|host, tx| host.drop_shards.do_send(DropShards(shards.clone(), tx)))
    }

    fn flush_local(&self) -> Vec<oneshot::Receiver<()>> {
        self.ask_every_host(|host, tx| host.flush.do_send(Flush(tx)))
    }

    fn resume_deadlines(self: Arc<Self>, shards: Arc<HashSet<u32>>) {
        tokio::spawn(self.resume_rule_deadlines(Some(shards)));
    }
}

/// Ticks of background work the cluster runs once: on a node alone every period, in a cluster
/// only on the owner of shard 0.
pub(crate) struct LeaderTicks(tokio::time::Interval);

pub(crate) fn leader_ticks(period: std::time::Duration) -> LeaderTicks {
    LeaderTicks(tokio::time::interval(
        period.max(std::time::Duration::from_millis(10)),
    ))
}

impl LeaderTicks {
    /// Waits for the next tick at which this node does the work.
    pub(crate) async fn tick(&mut self, shared: &Shared) {
        loop {
            self.0.tick().await;
            match &shared.cluster {
                Some(cluster) if cluster.epoch(0).is_none() => continue,
                _ => return,
            }
        }
    }
}
