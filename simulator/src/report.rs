//! What a simulation measured: counters the device tasks share while running, and the report
//! made from them (JSON with `--report FILE`, and a readable summary).

use crate::SimConfig;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::{
    collections::BTreeMap,
    fmt,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

/// Counters shared by every task of a running simulation.
#[derive(Debug)]
pub(crate) struct Stats {
    pub sent: AtomicU64,
    pub acked: AtomicU64,
    pub ws_changes: AtomicU64,
    pub ws_resyncs: AtomicU64,
    pub converged: AtomicU64,
    /// Connections opened again after one was lost.
    pub reconnects: AtomicU64,
    puback: Mutex<Histogram<u64>>,
    e2e: Mutex<Histogram<u64>>,
    /// End-to-end latencies since the last timeline point.
    e2e_window: Mutex<Histogram<u64>>,
    errors: Mutex<BTreeMap<String, u64>>,
    /// What devices did with jobs: started, downloaded, succeeded, failed, rejected.
    job_events: Mutex<BTreeMap<String, u64>>,
    /// Artifact bytes devices downloaded.
    pub job_bytes: AtomicU64,
}

fn histogram() -> Histogram<u64> {
    // Microseconds, 1 µs to 10 minutes, 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

impl Stats {
    pub fn new() -> Self {
        Self {
            sent: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            ws_changes: AtomicU64::new(0),
            ws_resyncs: AtomicU64::new(0),
            converged: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            puback: Mutex::new(histogram()),
            e2e: Mutex::new(histogram()),
            e2e_window: Mutex::new(histogram()),
            errors: Mutex::new(BTreeMap::new()),
            job_events: Mutex::new(BTreeMap::new()),
            job_bytes: AtomicU64::new(0),
        }
    }

    /// A PUBACK arrived `latency` after its publish, for `messages` messages (a batch's entries).
    pub fn acked(&self, latency: Duration, messages: u64) {
        self.acked.fetch_add(messages, Ordering::Relaxed);
        if let Ok(mut h) = self.puback.lock() {
            h.saturating_record(latency.as_micros() as u64);
        }
    }

    /// A watched twin's change arrived `micros` after its device sent it.
    pub fn end_to_end(&self, micros: u64) {
        self.ws_changes.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut h) = self.e2e.lock() {
            h.saturating_record(micros.max(1));
        }
        if let Ok(mut h) = self.e2e_window.lock() {
            h.saturating_record(micros.max(1));
        }
    }

    /// Counts what a device did with a job.
    pub fn job_event(&self, kind: &str) {
        if let Ok(mut events) = self.job_events.lock() {
            *events.entry(kind.to_owned()).or_default() += 1;
        }
    }

    /// Counts artifact bytes downloaded.
    pub fn jobs_downloaded(&self, bytes: u64) {
        self.job_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// What devices did with jobs.
    pub fn job_events(&self) -> BTreeMap<String, u64> {
        self.job_events
            .lock()
            .map(|e| e.clone())
            .unwrap_or_default()
    }

    /// Counts an error of `kind`.
    pub fn error(&self, kind: &str) {
        self.errors_of(kind, 1);
    }

    /// Counts `n` errors of one kind.
    pub fn errors_of(&self, kind: &str, n: u64) {
        if n > 0
            && let Ok(mut errors) = self.errors.lock()
        {
            *errors.entry(kind.to_owned()).or_default() += n;
        }
    }

    /// The end-to-end p99 so far, in ms (for the progress line).
    pub fn e2e_p99_ms(&self) -> f64 {
        self.e2e
            .lock()
            .map(|h| h.value_at_quantile(0.99) as f64 / 1000.0)
            .unwrap_or(0.0)
    }

    /// The end-to-end p99 since the last call, in ms, and starts a new window.
    pub fn take_window_p99_ms(&self) -> Option<f64> {
        let mut h = self.e2e_window.lock().ok()?;
        let p99 = (!h.is_empty()).then(|| h.value_at_quantile(0.99) as f64 / 1000.0);
        h.reset();
        p99
    }

    pub fn errors(&self) -> BTreeMap<String, u64> {
        self.errors.lock().map(|e| e.clone()).unwrap_or_default()
    }

    pub fn puback(&self) -> Percentiles {
        Percentiles::of(
            &self
                .puback
                .lock()
                .map(|h| h.clone())
                .unwrap_or_else(|_| histogram()),
        )
    }

    pub fn e2e(&self) -> Percentiles {
        Percentiles::of(
            &self
                .e2e
                .lock()
                .map(|h| h.clone())
                .unwrap_or_else(|_| histogram()),
        )
    }
}

/// Latency percentiles, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    /// Values recorded.
    pub count: u64,
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Self {
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Self {
            count: h.len(),
            p50: ms(0.5),
            p99: ms(0.99),
            p999: ms(0.999),
            max: h.max() as f64 / 1000.0,
        }
    }
}

/// One point of the timeline: the node's memory (from its `/metrics`) and what the fleet saw
/// since the previous point.
#[derive(Debug, Clone, Serialize)]
pub struct TimePoint {
    /// Seconds since the simulation started sending.
    pub t_s: f64,
    /// Resident set size of the node process.
    pub rss_bytes: u64,
    /// Twins active in memory.
    pub twins_active: u64,
    /// Acknowledged messages per second since the previous point.
    pub acked_rate: f64,
    /// End-to-end p99 since the previous point, in ms (none if no change was seen).
    pub e2e_p99_ms: Option<f64>,
    /// Errors so far, of every kind.
    pub errors: u64,
    /// The simulation's job: its status, executions queued, and executions by state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<serde_json::Value>,
}

/// Devices with certificates (`--auth certificate`).
#[derive(Debug, Clone, Serialize)]
pub struct Certificates {
    /// Certificates issued through the API from the devices' CSRs, and how long it took.
    pub issued: usize,
    pub issue_s: f64,
    /// Devices that provisioned themselves with a claim certificate, and how long it took.
    pub provisioned: usize,
    pub provision_s: f64,
    /// Connections per second while the fleet connected: TCP, a TLS 1.3 handshake with the
    /// device's certificate, CONNECT and CONNACK.
    pub handshakes_per_s: f64,
}

/// The job a simulation rolled out.
#[derive(Debug, Clone, Serialize)]
pub struct JobReport {
    pub id: String,
    /// `COMPLETED`, `CANCELED` (with the node's `reason` when it aborted) or `IN_PROGRESS`.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Executions by state at the end.
    pub executions: BTreeMap<String, u64>,
    /// Executions queued by the rollout.
    pub queued: u64,
    /// Seconds from the job's creation until every execution finished (if they did).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_s: Option<f64>,
    /// Executions finished per second over that time.
    pub finished_per_s: f64,
    /// What the devices did: started, downloaded, succeeded, failed, rejected.
    pub device_events: BTreeMap<String, u64>,
    /// Artifact bytes they downloaded.
    pub downloaded_bytes: u64,
}

/// What a simulation did and measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// What was asked for.
    pub config: SimConfig,
    /// Things registered (devices and gateways) and how long it took.
    pub registered: usize,
    pub registration_s: f64,
    /// Connections opened (devices or gateways) and how long it took.
    pub connected: usize,
    pub connect_s: f64,
    /// How long telemetry was sent.
    pub duration_s: f64,
    /// Telemetry messages sent and acknowledged (a gateway batch counts its entries).
    pub sent: u64,
    pub acked: u64,
    /// The rate asked for and the acknowledged rate reached.
    pub offered_rate: f64,
    pub achieved_rate: f64,
    /// Publish → PUBACK (the node acknowledges once the change is durable).
    pub puback_latency_ms: Percentiles,
    /// Publish → WebSocket `change` frame, over the watched sample.
    pub end_to_end_latency_ms: Percentiles,
    /// Twins watched over WebSocket, and the `change` and `resync` frames they produced (in
    /// broker mode or with `watch_ws`: every delivery the observer saw).
    pub watched: usize,
    /// Deliveries the observer saw per second.
    pub observed_rate: f64,
    pub ws_changes: u64,
    pub ws_resyncs: u64,
    /// Actuators, and how many reported the desired state they were given.
    pub actuators: usize,
    pub actuators_converged: u64,
    /// Device connections opened again after one was lost (a node went away).
    pub reconnects: u64,
    /// Errors by kind.
    pub errors: BTreeMap<String, u64>,
    /// The node's memory, the acknowledged rate and the latency over time.
    pub timeline: Vec<TimePoint>,
    /// With `--auth certificate`: issuance, provisioning and TLS handshakes.
    pub certificates: Option<Certificates>,
    /// With `--job`: how the rollout went.
    pub job: Option<JobReport>,
}

impl Report {
    /// Errors of every kind.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        writeln!(
            f,
            "doppel sim: {} devices, {:?} mode{}, {:.0} msgs/s offered for {:.0} s",
            c.devices,
            c.mode,
            if c.mode == crate::Mode::Gateway {
                format!(" ({} gateways, batches of ≤ {})", c.gateways, c.batch)
            } else {
                String::new()
            },
            self.offered_rate,
            self.duration_s
        )?;
        writeln!(
            f,
            "  registered   {} things in {:.1} s; {} connections in {:.1} s",
            self.registered, self.registration_s, self.connected, self.connect_s
        )?;
        if let Some(c) = &self.certificates {
            writeln!(
                f,
                "  certificates {} issued from CSRs in {:.1} s, {} provisioned over MQTT in {:.1} s; {:.0} TLS handshakes/s",
                c.issued, c.issue_s, c.provisioned, c.provision_s, c.handshakes_per_s
            )?;
        }
        writeln!(
            f,
            "  telemetry    {} sent, {} acknowledged: {:.0} msgs/s",
            self.sent, self.acked, self.achieved_rate
        )?;
        let p = &self.puback_latency_ms;
        writeln!(
            f,
            "  PUBACK       p50 {:.1} ms  p99 {:.1} ms  p99.9 {:.1} ms  max {:.1} ms",
            p.p50, p.p99, p.p999, p.max
        )?;
        let e = &self.end_to_end_latency_ms;
        let seen = if self.watched > 0 {
            format!(
                "{} changes on {} watched twins, {} resyncs",
                self.ws_changes, self.watched, self.ws_resyncs
            )
        } else {
            format!(
                "{} deliveries observed: {:.0}/s",
                self.ws_changes, self.observed_rate
            )
        };
        writeln!(
            f,
            "  end to end   p50 {:.1} ms  p99 {:.1} ms  p99.9 {:.1} ms  max {:.1} ms ({seen})",
            e.p50, e.p99, e.p999, e.max
        )?;
        if let Some(j) = &self.job {
            let counts: Vec<String> = j
                .executions
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            writeln!(
                f,
                "  job          {}: {}{}; {} queued; {}; {}",
                j.id,
                j.status,
                j.reason
                    .as_ref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default(),
                j.queued,
                counts.join(", "),
                match j.finished_s {
                    Some(s) => format!(
                        "all finished in {s:.1} s ({:.0} executions/s)",
                        j.finished_per_s
                    ),
                    None => "not all finished".to_owned(),
                }
            )?;
        }
        if self.reconnects > 0 {
            writeln!(f, "  reconnects   {}", self.reconnects)?;
        }
        if self.actuators > 0 {
            writeln!(
                f,
                "  actuators    {} of {} reported their desired state",
                self.actuators_converged, self.actuators
            )?;
        }
        if let (Some(first), Some(last)) = (self.timeline.first(), self.timeline.last()) {
            let peak = self.timeline.iter().map(|m| m.rss_bytes).max().unwrap_or(0);
            writeln!(
                f,
                "  node memory  {:.0} MB at start, {:.0} MB at the end, {:.0} MB peak; {} twins active",
                first.rss_bytes as f64 / 1e6,
                last.rss_bytes as f64 / 1e6,
                peak as f64 / 1e6,
                last.twins_active
            )?;
        }
        if self.errors.is_empty() {
            write!(f, "  errors       none")
        } else {
            let list: Vec<String> = self
                .errors
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            write!(f, "  errors       {}", list.join(", "))
        }
    }
}
