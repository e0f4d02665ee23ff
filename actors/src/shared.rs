//! What every shard host shares: the directory, the outbox, the change hub, the configuration,
//! the way to any twin (the hosts, by shard), and each host's commit health.

use crate::{
    config::NodeConfig,
    directory::Directory,
    hub::ChangeHub,
    outbox::Outbox,
    work::{Deliver, Route},
};
use actix::Recipient;
use std::sync::{Arc, OnceLock, atomic::AtomicU64};
use twin_core::{Limits, ThingName};

/// What every shard host shares.
pub(crate) struct Shared {
    pub directory: Arc<Directory>,
    pub outbox: Arc<dyn Outbox>,
    pub hub: ChangeHub,
    pub config: NodeConfig,
    pub limits: Arc<Limits>,
    /// The shard hosts, set once they started.
    pub hosts: OnceLock<Vec<Recipient<Route>>>,
    /// Per host: how its commits fare, for readiness.
    pub health: Vec<HostHealth>,
    /// Where messages' time goes.
    pub stages: crate::stages::Stages,
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
        let shards = u64::from(self.config.shards.max(1));
        (xxhash_rust::xxh3::xxh3_64(thing.as_str().as_bytes()) % shards) as u32
    }

    /// Sends work to `thing`'s twin, through the host of its shard.
    pub fn route(&self, thing: ThingName, deliver: Deliver) {
        let Some(hosts) = self.hosts.get() else {
            return;
        };
        if let Some(host) = hosts.get(self.shard_of(&thing) as usize % hosts.len().max(1)) {
            host.do_send(Route { thing, deliver });
        }
    }
}
