//! doppel's actors: shard hosts (actix actors, one arbiter per core) that keep the active twins —
//! twin-core's state machine and the thing's rules, one work item at a time per twin — and
//! activate, passivate and group-commit them, the
//! MQTT device endpoint, the bridge to an external broker, and the change hub.
//!
//! Every effect of a change — MQTT acknowledgements, shadow replies, deltas, change events —
//! leaves the node only after the store commit that holds the change returned.

pub mod ack;
pub mod artifacts;
pub mod cluster;
pub mod config;
pub mod directory;
mod error;
pub mod history;
pub mod hub;
pub mod jobs;
pub mod mqtt;
mod node;
pub mod outbox;
pub mod pki;
mod pool;
pub mod provisioning;
pub mod rules;
mod shard;
mod shared;
mod stages;
pub mod tls;
mod twin;
mod work;

pub use cluster::{ClusterConfig, ClusterView};
pub use config::{HistoryConfig, MqttConfig, NodeConfig, TlsAuth};
pub use error::NodeError;
pub use node::Node;
pub use shard::{HostStats, resident_sizes};
pub use storage::Presence;
pub use work::{Deliver, Origin, ThingMeta, Ticket};

/// Server time, epoch milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
