//! Settings of a node's actors and of its MQTT endpoint. Deserializable from the `[node]` part
//! of the configuration file; unknown keys are refused.

use serde::{Deserialize, Serialize};
use std::time::Duration;
use twin_core::Limits;

/// How a node runs its twins.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Virtual shards (fixed when a cluster is created).
    pub shards: u32,
    /// Arbiters (event-loop threads) hosting shards; 0 means one per core.
    pub arbiters: usize,
    /// Longest a change waits for its group commit.
    #[serde(with = "humantime_serde")]
    pub commit_window: Duration,
    /// A window commits early once this many twins are dirty.
    pub commit_max_twins: usize,
    /// Twins idle this long (and fully committed) are passivated.
    #[serde(with = "humantime_serde")]
    pub passivate_after: Duration,
    /// Twins loaded from the store in one read transaction at most.
    pub load_batch: usize,
    /// Shadow limits.
    pub limits: Limits,
    /// Telemetry history.
    pub history: HistoryConfig,
    /// The MQTT endpoint.
    pub mqtt: MqttConfig,
    /// Longest a request waits for its twin (HTTP and WebSocket answer 504 after it); a host
    /// whose commit has been in flight or failing this long reports the node not ready.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// The largest artifact an upload may store, in bytes.
    pub max_artifact_bytes: u64,
    /// Device certificates expiring within this time are counted and announced.
    #[serde(with = "humantime_serde")]
    pub certificate_warning: Duration,
    /// How often certificates are checked for expiry.
    #[serde(with = "humantime_serde")]
    pub certificate_check_every: Duration,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            shards: 1024,
            arbiters: 0,
            commit_window: Duration::from_millis(5),
            commit_max_twins: 2_000,
            passivate_after: Duration::from_secs(600),
            load_batch: 256,
            limits: Limits::default(),
            history: HistoryConfig::default(),
            mqtt: MqttConfig::default(),
            request_timeout: Duration::from_secs(10),
            max_artifact_bytes: 256 * 1024 * 1024,
            certificate_warning: Duration::from_secs(30 * 86_400),
            certificate_check_every: Duration::from_secs(3_600),
        }
    }
}

impl NodeConfig {
    /// The number of arbiters to start.
    pub fn arbiter_count(&self) -> usize {
        if self.arbiters > 0 {
            self.arbiters
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }
}

/// The MQTT device endpoint (also used for limits of the external-broker bridge).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    /// Largest packet accepted from a device, in bytes.
    pub max_packet_size: usize,
    /// QoS 1 messages of one connection awaiting their commit; reading pauses beyond.
    pub max_inflight: usize,
    /// Time allowed between accepting a connection and its CONNECT.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Packets queued towards one device before it is disconnected as too slow.
    pub outbound_queue: usize,
    /// Register unknown devices on first connect, without credentials. Never for production.
    pub dev: bool,
    /// Shadow requests (get, update, delete) of one connection waiting for their twin at most;
    /// beyond, AWS IoT's `429` on `…/rejected`.
    pub max_shadow_inflight: usize,
    /// Publishes per second one device may send (a burst of one second's worth); beyond, the
    /// PUBACK says quota exceeded (MQTT 5) or the connection closes (3.1.1). 0: no limit.
    pub max_publish_rate: f64,
    /// `max_publish_rate` for the devices of a type, by type name (e.g. `{ Camera = 50,
    /// Meter = 1 }`); the others use `max_publish_rate`.
    pub publish_rate_by_type: std::collections::BTreeMap<String, f64>,
    /// Connections per second one client id may open after a burst of `connect_burst`;
    /// beyond, the CONNACK refuses it (server unavailable).
    pub max_connect_rate: f64,
    /// Connections one client id may open at once before `max_connect_rate` applies.
    pub connect_burst: f64,
    /// Device connections the endpoint holds at once (its listeners together); beyond, a new
    /// connection is closed at once. 0: derived from the process's file-descriptor limit,
    /// keeping 2,048 for the store and the HTTP API.
    pub max_connections: usize,
    /// How devices authenticate on the TLS listener: `either` (a certificate of the
    /// deployment's CA, or a token), `certificate` (only), `token` (only; no client
    /// certificate is asked for). The plain listener takes tokens.
    pub tls_auth: TlsAuth,
}

impl MqttConfig {
    /// The publish rate of a device of `device_type` (0: no limit).
    pub fn publish_rate(&self, device_type: Option<&str>) -> f64 {
        device_type
            .and_then(|t| self.publish_rate_by_type.get(t))
            .copied()
            .unwrap_or(self.max_publish_rate)
    }
}

/// Device authentication on the MQTT TLS listener.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsAuth {
    /// A client certificate of the deployment's CA, or a token.
    #[default]
    Either,
    /// A client certificate only (required at the handshake).
    Certificate,
    /// A token only.
    Token,
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            max_packet_size: 128 * 1024,
            max_inflight: 64,
            connect_timeout: Duration::from_secs(10),
            outbound_queue: 1_024,
            dev: false,
            max_shadow_inflight: 10,
            max_publish_rate: 2_000.0,
            publish_rate_by_type: std::collections::BTreeMap::new(),
            max_connect_rate: 5.0,
            connect_burst: 20.0,
            max_connections: 0,
            tls_auth: TlsAuth::Either,
        }
    }
}

/// Telemetry history: raw samples, hourly aggregates, and how long each is kept.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HistoryConfig {
    /// Record samples at all.
    pub enabled: bool,
    /// How long raw samples are kept (whole UTC days).
    #[serde(with = "humantime_serde")]
    pub raw_retention: Duration,
    /// How long hourly aggregates are kept (whole UTC days).
    #[serde(with = "humantime_serde")]
    pub hourly_retention: Duration,
    /// How often finished days are rolled up and expired data removed.
    #[serde(with = "humantime_serde")]
    pub maintenance_every: Duration,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            raw_retention: Duration::from_secs(7 * 86_400),
            hourly_retention: Duration::from_secs(90 * 86_400),
            maintenance_every: Duration::from_secs(600),
        }
    }
}
