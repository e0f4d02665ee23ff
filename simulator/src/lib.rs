//! doppel's device simulator. It drives a fleet against a node only over the node's public
//! interfaces: it registers the devices through the HTTP API, sends their telemetry over MQTT
//! (one connection per device, or batched through gateways), makes actuators follow desired
//! state, measures end-to-end latency by watching a sample of twins over WebSocket, polls the
//! node's `/metrics` for its memory, and writes a report.

mod error;
mod fleet;
mod jobs;
mod model;
mod mqtt;
mod report;
mod run;
mod tls;
mod watch;

pub use error::SimError;
pub use report::Report;
pub use run::run;

use std::{net::SocketAddr, path::PathBuf, time::Duration};

/// How devices reach the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// One MQTT connection per device.
    Direct,
    /// Devices multiplexed over a few gateway connections, telemetry in batches.
    Gateway,
    /// A plain MQTT broker, no node: devices publish telemetry without registering and an
    /// observer (an MQTT subscriber to `things/+/telemetry`, or `watch_ws`) measures delivery.
    /// The reference for benchmarks.
    Broker,
}

/// How devices authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Auth {
    /// Their token as MQTT password, over plain TCP.
    Token,
    /// A client certificate of the deployment's CA, over TLS 1.3 (direct mode).
    Certificate,
}

/// What to simulate, and against which node.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SimConfig {
    /// Devices in the fleet.
    pub devices: usize,
    /// Telemetry messages per second, over the whole fleet (a gateway entry counts as one).
    pub rate: f64,
    /// How long to send, after the fleet is connected.
    #[serde(with = "secs")]
    pub duration: Duration,
    /// Time over which the devices start sending (their start is spread evenly).
    #[serde(with = "secs")]
    pub ramp: Duration,
    /// Direct or gateway.
    pub mode: Mode,
    /// Gateway connections (gateway mode).
    pub gateways: usize,
    /// Entries per gateway batch, at most.
    pub batch: usize,
    /// The nodes' MQTT endpoints: device `i` connects to endpoint `i mod n`, and when its
    /// connection is lost it reconnects (with backoff) to the next one.
    pub mqtt: Vec<SocketAddr>,
    /// The node's HTTP API, e.g. `http://127.0.0.1:8080`.
    pub api: String,
    /// An API key allowed to register things (admin).
    #[serde(skip)]
    pub token: String,
    /// Name prefix of the registered things.
    pub prefix: String,
    /// Every n-th device is an actuator that follows its desired state (direct mode; 0: none).
    pub actuator_every: usize,
    /// Twins watched over WebSocket for end-to-end latency.
    pub sample: usize,
    /// Instead of the node's WebSocket: a WebSocket that streams every delivery (each frame
    /// carrying the `sent_us` of its message), such as another system's output under test.
    pub watch_ws: Option<String>,
    /// Device type the things are registered with, if any.
    pub device_type: Option<String>,
    /// How devices authenticate.
    pub auth: Auth,
    /// With certificates: the CA of the node's TLS server certificate (PEM).
    pub tls_ca: Option<PathBuf>,
    /// With certificates: the name the node's TLS server certificate carries.
    pub tls_name: String,
    /// With certificates: how many devices (the last ones) provision themselves with a claim
    /// certificate instead of being registered and issued one through the API.
    pub provision: usize,
    /// Devices take jobs (direct mode): start the next execution, download its artifact,
    /// work `job_time`, report.
    pub take_jobs: bool,
    /// A job to roll out over the fleet once it is connected (its `PUT /v1/jobs` body).
    pub job: Option<PathBuf>,
    /// How long a device works on a job.
    #[serde(with = "secs")]
    pub job_time: Duration,
    /// Share of jobs a device fails, and rejects.
    pub job_fail: f64,
    pub job_reject: f64,
    /// Where to write the JSON report.
    #[serde(skip)]
    pub report: Option<PathBuf>,
    /// Show progress bars (on a terminal).
    #[serde(skip)]
    pub progress: bool,
}

mod secs {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

impl SimConfig {
    /// The endpoint device (or gateway) `i` uses first, and on its `attempt`-th reconnect.
    pub fn endpoint(&self, i: usize, attempt: usize) -> SocketAddr {
        self.mqtt[(i + attempt) % self.mqtt.len().max(1)]
    }
}

/// Parses durations written like `10s`, `5m`, `1h`, `250ms`.
pub fn parse_duration(text: &str) -> Result<Duration, SimError> {
    humantime::parse_duration(text).map_err(|e| SimError::Config(format!("duration {text:?}: {e}")))
}
