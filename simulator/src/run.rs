//! Running a simulation: register the fleet, watch a sample, connect, send on an absolute
//! schedule for the duration, drain, then check actuators and make the report.

use crate::{
    Auth, Mode, SimConfig, SimError, fleet,
    jobs::{self, Taker},
    model::{Actuator, Sensor},
    mqtt::{Connection, Incoming, Login, source_for},
    report::{self, Report, Stats, TimePoint},
    tls,
    watch::{self, now_us},
};
use futures_util::{StreamExt, stream};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::{SeedableRng, rngs::SmallRng};
use serde_json::{Value, json};
use std::{
    fmt::Write,
    net::SocketAddr,
    sync::{Arc, Mutex, atomic::Ordering},
    time::{Duration, Instant},
};
use tokio::{sync::watch as signal, time::sleep_until};

/// QoS 1 publishes a connection may have awaiting their PUBACK.
const MAX_INFLIGHT: usize = 64;
/// Connections opened at once.
const CONNECT_CONCURRENCY: usize = 256;
/// Keep-alive announced by every connection; pings go out after half of it idle.
const KEEP_ALIVE: Duration = Duration::from_secs(60);
/// How long to wait for the PUBACKs of the last messages.
const DRAIN: Duration = Duration::from_secs(10);
/// What actuators are told to do.
fn desired() -> Value {
    json!({"power": "on", "setpoint": 21.5})
}

/// Runs a simulation and returns its report (also written to `config.report` if set).
pub async fn run(config: SimConfig) -> Result<Report, SimError> {
    validate(&config)?;
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "file descriptor limit"),
        Err(error) => tracing::warn!(%error, "could not raise the file descriptor limit"),
    }
    let mut http = reqwest::Client::builder().timeout(Duration::from_secs(120));
    // An API served over TLS with the same certificate as the MQTT TLS listener.
    if let Some(path) = &config.tls_ca {
        let pem = std::fs::read(path)
            .map_err(|e| SimError::Config(format!("--tls-ca {}: {e}", path.display())))?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| SimError::Config(format!("--tls-ca {}: {e}", path.display())))?
        {
            http = http.add_root_certificate(cert);
        }
    }
    let http = http.build()?;
    let multi = MultiProgress::with_draw_target(if config.progress {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
    let stats = Arc::new(Stats::new());

    // Registration.
    let things = match config.mode {
        Mode::Direct => config.devices,
        Mode::Gateway => config.devices + config.gateways,
        Mode::Broker => 0,
    };
    let bar = multi.add(counter_bar(config.devices as u64, "registering"));
    let started = Instant::now();
    let mut fleet = if config.mode == Mode::Broker {
        fleet::unregistered(&config)
    } else {
        fleet::register(&http, &config, &bar).await?
    };
    let registration_s = started.elapsed().as_secs_f64();
    bar.finish();

    // Certificates: issued from each device's CSR, or (a sample) by provisioning.
    let mut certificates = None;
    if config.auth == Auth::Certificate {
        let trust = tls::Trust::load(&config)?;
        let registered = config.devices - config.provision;
        let started = Instant::now();
        let issued = tls::certify(&http, &config, &trust, &fleet.devices[..registered]).await?;
        let issue_s = started.elapsed().as_secs_f64();
        let started = Instant::now();
        let provisioned = tls::provision(&http, &config, &trust, registered).await?;
        let provision_s = started.elapsed().as_secs_f64();
        fleet.logins = issued.into_iter().chain(provisioned).collect();
        certificates = Some(report::Certificates {
            issued: registered,
            issue_s,
            provisioned: config.provision,
            provision_s,
            handshakes_per_s: 0.0,
        });
    }

    // The WebSocket sample: devices spread evenly over the fleet.
    let sample = config.sample.min(config.devices);
    let watched: Vec<String> = (0..sample)
        .map(|k| fleet.devices[k * config.devices / sample].clone())
        .collect();
    let (stop_tx, stop_rx) = signal::channel(false);
    let watcher = if let Some(url) = &config.watch_ws {
        Some(watch::watch_stream(url, stats.clone(), stop_rx.clone()).await?)
    } else if config.mode == Mode::Broker {
        Some(watch::watch_broker(&config, stats.clone(), stop_rx.clone()).await?)
    } else if watched.is_empty() {
        None
    } else {
        Some(watch::watch_twins(&config, watched, stats.clone(), stop_rx.clone()).await?)
    };

    // Connections.
    let started = Instant::now();
    let (connections, actuators) = match config.mode {
        Mode::Direct | Mode::Broker => connect_devices(&config, &fleet, &multi, &stats).await,
        Mode::Gateway => (connect_gateways(&config, &fleet, &stats).await, Vec::new()),
    };
    let connected = connections.iter().filter(|c| c.is_some()).count();
    let connect_s = started.elapsed().as_secs_f64();
    if let Some(c) = &mut certificates {
        // Each connection: TCP, the TLS 1.3 handshake with the device's certificate, CONNECT.
        c.handshakes_per_s = connected as f64 / connect_s.max(0.001);
    }
    // Apps tell the actuators what to do; they follow their delta.
    let devices = &fleet.devices;
    stream::iter(actuators.iter())
        .for_each_concurrent(32, |i| {
            let (http, config, stats) = (&http, &config, &stats);
            async move {
                if fleet::set_desired(http, config, &devices[*i], &desired())
                    .await
                    .is_err()
                {
                    stats.error("api_set_desired");
                }
            }
        })
        .await;

    // The job to roll out, if any.
    let job = jobs::create(&http, &config)
        .await?
        .map(|id| (id, Instant::now()));
    let job_finished = Arc::new(Mutex::new(None::<f64>));

    // Sending.
    let start = Instant::now();
    let end = start + config.duration;
    let memory = Arc::new(Mutex::new(Vec::new()));
    let poller = (config.mode != Mode::Broker).then(|| {
        tokio::spawn(poll_timeline(
            http.clone(),
            config.clone(),
            start,
            stats.clone(),
            memory.clone(),
            (job.clone(), job_finished.clone()),
            stop_rx.clone(),
        ))
    });
    let progress = multi.add(
        ProgressBar::new(config.duration.as_secs().max(1)).with_style(
            ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} s  {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        ),
    );
    let ticker = tokio::spawn(tick_progress(
        progress.clone(),
        stats.clone(),
        start,
        stop_rx,
    ));
    let mut tasks = Vec::with_capacity(connected);
    match config.mode {
        Mode::Direct | Mode::Broker => {
            let period = Duration::from_secs_f64(config.devices as f64 / config.rate);
            let n = config.devices as f64;
            for (i, connection) in connections.into_iter().enumerate() {
                let Some(connection) = connection else {
                    continue;
                };
                let spread = i as f64 / n;
                let first = start + config.ramp.mul_f64(spread) + period.mul_f64(spread);
                let device = DirectDevice {
                    index: i,
                    name: fleet.devices[i].clone(),
                    login: fleet.logins[i].clone(),
                    actuator: is_actuator(&config, i),
                    seed: i as u64,
                    config: config.clone(),
                    http: http.clone(),
                };
                tasks.push(tokio::spawn(device.run(
                    connection,
                    first,
                    period,
                    end,
                    stats.clone(),
                )));
            }
        }
        Mode::Gateway => {
            let g = config.gateways;
            let per_gateway = config.rate / g as f64;
            // About 20 batches a second per gateway, within the batch limit.
            let batch = ((per_gateway / 20.0).ceil() as usize).clamp(1, config.batch);
            let period = Duration::from_secs_f64(batch as f64 / per_gateway);
            for (k, connection) in connections.into_iter().enumerate() {
                let Some(connection) = connection else {
                    continue;
                };
                let devices: Vec<String> = (k..config.devices)
                    .step_by(g)
                    .map(|i| fleet.devices[i].clone())
                    .collect();
                let spread = k as f64 / g as f64;
                let first = start + config.ramp.mul_f64(spread) + period.mul_f64(spread);
                let gateway = GatewayDevices {
                    name: fleet.gateways[k].name.clone(),
                    devices,
                    batch,
                    seed: k as u64,
                };
                tasks.push(tokio::spawn(gateway.run(
                    connection,
                    first,
                    period,
                    end,
                    stats.clone(),
                )));
            }
        }
    }
    for task in tasks {
        if task.await.is_err() {
            stats.error("task_panicked");
        }
    }
    let duration_s = start
        .elapsed()
        .as_secs_f64()
        .min(config.duration.as_secs_f64());
    // Let the last changes reach the WebSocket: wait until none arrived for half a second.
    let quiet_deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = stats.ws_changes.load(Ordering::Relaxed);
    while Instant::now() < quiet_deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = stats.ws_changes.load(Ordering::Relaxed);
        if now == seen {
            break;
        }
        seen = now;
    }
    let converged = check_actuators(&http, &config, &fleet, &actuators, &stats).await;
    stats.converged.store(converged, Ordering::Relaxed);
    let _ = stop_tx.send(true);
    if let Some(watcher) = watcher {
        let _ = watcher.await;
    }
    if let Some(poller) = poller {
        let _ = poller.await;
    }
    let _ = ticker.await;
    progress.finish_and_clear();

    let sent = stats.sent.load(Ordering::Relaxed);
    let acked = stats.acked.load(Ordering::Relaxed);
    let memory = memory.lock().map(|m| m.clone()).unwrap_or_default();
    let report = Report {
        registered: things,
        registration_s,
        connected,
        connect_s,
        duration_s,
        sent,
        acked,
        offered_rate: config.rate,
        achieved_rate: acked as f64 / duration_s.max(0.001),
        puback_latency_ms: stats.puback(),
        end_to_end_latency_ms: stats.e2e(),
        watched: if config.mode == Mode::Broker || config.watch_ws.is_some() {
            0
        } else {
            sample
        },
        observed_rate: stats.ws_changes.load(Ordering::Relaxed) as f64 / duration_s.max(0.001),
        ws_changes: stats.ws_changes.load(Ordering::Relaxed),
        ws_resyncs: stats.ws_resyncs.load(Ordering::Relaxed),
        reconnects: stats.reconnects.load(Ordering::Relaxed),
        actuators: actuators.len(),
        actuators_converged: converged,
        errors: stats.errors(),
        timeline: memory,
        certificates,
        job: match &job {
            Some((id, _)) => {
                let last = jobs::progress(&http, &config, id)
                    .await
                    .unwrap_or(Value::Null);
                let executions: std::collections::BTreeMap<String, u64> =
                    serde_json::from_value(last["executions"].clone()).unwrap_or_default();
                let finished_s = job_finished.lock().ok().and_then(|f| *f);
                let finished: u64 = executions
                    .iter()
                    .filter(|(k, _)| !matches!(k.as_str(), "QUEUED" | "IN_PROGRESS"))
                    .map(|(_, n)| n)
                    .sum();
                Some(report::JobReport {
                    id: id.clone(),
                    status: last["status"].as_str().unwrap_or("unknown").to_owned(),
                    reason: last["reason"].as_str().map(str::to_owned),
                    queued: last["queued"].as_u64().unwrap_or(0),
                    finished_per_s: finished_s.map_or(0.0, |s| finished as f64 / s.max(0.001)),
                    finished_s,
                    executions,
                    device_events: stats.job_events(),
                    downloaded_bytes: stats.job_bytes.load(Ordering::Relaxed),
                })
            }
            None => None,
        },
        config,
    };
    if let Some(path) = &report.config.report {
        let json = serde_json::to_vec_pretty(&report).unwrap_or_default();
        std::fs::write(path, json).map_err(|source| SimError::Report {
            path: path.display().to_string(),
            source,
        })?;
    }
    Ok(report)
}

fn validate(config: &SimConfig) -> Result<(), SimError> {
    let bad = |m: &str| Err(SimError::Config(m.to_owned()));
    if config.devices == 0 {
        return bad("--devices must be at least 1");
    }
    if !(config.rate > 0.0 && config.rate.is_finite()) {
        return bad("--rate must be a positive number of messages per second");
    }
    if config.duration.is_zero() {
        return bad("--duration must be longer than zero");
    }
    if config.mode == Mode::Gateway && (config.gateways == 0 || config.gateways > config.devices) {
        return bad("--gateways must be between 1 and the number of devices");
    }
    if config.mode != Mode::Broker && config.token.is_empty() {
        return bad("--token (or DOPPEL_ADMIN_TOKEN) is needed to register the fleet");
    }
    if config.take_jobs && config.mode != Mode::Direct {
        return bad("--take-jobs and --job need --mode direct");
    }
    if !(0.0..=1.0).contains(&config.job_fail) || !(0.0..=1.0).contains(&config.job_reject) {
        return bad("--job-fail and --job-reject are shares from 0 to 1");
    }
    if config.auth == Auth::Certificate && config.mode != Mode::Direct {
        return bad("--auth certificate needs --mode direct");
    }
    if config.provision > config.devices
        || (config.provision > 0 && config.auth != Auth::Certificate)
    {
        return bad("--provision needs --auth certificate and at most --devices devices");
    }
    if !(1..=1000).contains(&config.batch) {
        return bad("--batch must be between 1 and 1000");
    }
    if config.prefix.is_empty()
        || !config
            .prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '-'))
    {
        return bad("--prefix may use a-z A-Z 0-9 : _ - only");
    }
    Ok(())
}

fn counter_bar(len: u64, what: &str) -> ProgressBar {
    ProgressBar::new(len).with_style(
        ProgressStyle::with_template(&format!(
            "{what:>12} [{{bar:30}}] {{pos}}/{{len}} ({{per_sec}})"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    )
}

fn is_actuator(config: &SimConfig, i: usize) -> bool {
    config.mode == Mode::Direct
        && config.actuator_every > 0
        && i.is_multiple_of(config.actuator_every)
}

/// Opens every device's connection (actuators subscribe to their delta); returns the
/// connections by device index and the indexes of the connected actuators.
async fn connect_devices(
    config: &SimConfig,
    fleet: &fleet::Fleet,
    multi: &MultiProgress,
    stats: &Arc<Stats>,
) -> (Vec<Option<Connection>>, Vec<usize>) {
    let bar = multi.add(counter_bar(config.devices as u64, "connecting"));
    let mut opened: Vec<(usize, Option<Connection>)> = stream::iter(0..config.devices)
        .map(|i| {
            let (bar, stats) = (bar.clone(), stats.clone());
            let name = fleet.devices[i].clone();
            let login = fleet.logins[i].clone();
            let actuator = is_actuator(config, i);
            let server = config.endpoint(i, 0);
            async move {
                let connection = open(server, i, &name, &login, actuator, config.take_jobs).await;
                bar.inc(1);
                match connection {
                    Ok(c) => (i, Some(c)),
                    Err(error) => {
                        tracing::debug!(device = %name, %error, "connection failed");
                        stats.error("connect_failed");
                        (i, None)
                    }
                }
            }
        })
        .buffer_unordered(CONNECT_CONCURRENCY)
        .collect()
        .await;
    bar.finish();
    opened.sort_by_key(|(i, _)| *i);
    let actuators = opened
        .iter()
        .filter(|(i, c)| c.is_some() && is_actuator(config, *i))
        .map(|(i, _)| *i)
        .collect();
    (opened.into_iter().map(|(_, c)| c).collect(), actuators)
}

async fn open(
    server: SocketAddr,
    i: usize,
    name: &str,
    login: &Login,
    actuator: bool,
    take_jobs: bool,
) -> Result<Connection, SimError> {
    let mut connection = tokio::time::timeout(
        Duration::from_secs(30),
        Connection::open(server, source_for(server, i), name, login, KEEP_ALIVE),
    )
    .await
    .map_err(|_| SimError::Mqtt("no CONNACK within 30 s".into()))??;
    let mut filters = Vec::new();
    if actuator {
        filters.push(format!("$aws/things/{name}/shadow/update/delta"));
    }
    if take_jobs {
        filters.extend(Taker::topics(name));
    }
    for filter in &filters {
        connection.subscribe(filter)?;
    }
    connection.flush().await?;
    // The SUBACKs come before anything on the topics.
    for _ in &filters {
        tokio::time::timeout(Duration::from_secs(30), connection.next())
            .await
            .map_err(|_| SimError::Mqtt("no SUBACK within 30 s".into()))??;
    }
    Ok(connection)
}

/// Opens the gateways' connections; each subscribes to its refused entries.
async fn connect_gateways(
    config: &SimConfig,
    fleet: &fleet::Fleet,
    stats: &Arc<Stats>,
) -> Vec<Option<Connection>> {
    let mut connections = Vec::with_capacity(fleet.gateways.len());
    for (k, gateway) in fleet.gateways.iter().enumerate() {
        let opened = async {
            let server = config.endpoint(k, 0);
            let mut c = Connection::open(
                server,
                source_for(server, k),
                &gateway.name,
                &Login::Token(gateway.token.clone()),
                KEEP_ALIVE,
            )
            .await?;
            c.subscribe(&format!("gateways/{}/telemetry/rejected", gateway.name))?;
            c.flush().await?;
            c.next().await?;
            Ok::<_, SimError>(c)
        };
        match tokio::time::timeout(Duration::from_secs(30), opened).await {
            Ok(Ok(c)) => connections.push(Some(c)),
            Ok(Err(error)) => {
                tracing::warn!(gateway = %gateway.name, %error, "gateway connection failed");
                stats.error("connect_failed");
                connections.push(None);
            }
            Err(_) => {
                stats.error("connect_failed");
                connections.push(None);
            }
        }
    }
    connections
}

/// A device with its own connection.
struct DirectDevice {
    index: usize,
    name: String,
    login: Login,
    actuator: bool,
    seed: u64,
    config: SimConfig,
    /// For artifact downloads.
    http: reqwest::Client,
}

impl DirectDevice {
    async fn run(
        self,
        mut connection: Connection,
        first: Instant,
        period: Duration,
        end: Instant,
        stats: Arc<Stats>,
    ) {
        let mut rng = SmallRng::seed_from_u64(self.seed);
        let mut sensor = Sensor::new(&mut rng);
        let mut actuator = Actuator::new(&mut rng);
        let topic = format!("things/{}/telemetry", self.name);
        let update = format!("$aws/things/{}/shadow/update", self.name);
        let mut next = first;
        let mut payload = String::with_capacity(128);
        let mut attempt = 0;
        let mut taker = self.config.take_jobs.then(|| Taker::new(&self.name));
        if let Some(taker) = &mut taker {
            taker.on_connect(&mut connection);
        }
        loop {
            let job_due = taker.as_ref().and_then(Taker::deadline);
            tokio::select! {
                _ = sleep_until(job_due.unwrap_or(end + DRAIN).into()), if job_due.is_some() => {
                    if let Some(taker) = &mut taker {
                        taker.on_deadline(&mut connection, &stats);
                    }
                }
                _ = sleep_until(next.into()), if next < end => {
                    if connection.inflight() >= MAX_INFLIGHT {
                        stats.error("throttled_inflight_limit");
                    } else {
                        payload.clear();
                        let _ = write!(payload, "{{\"ts\":{},\"sent_us\":{},", now_us() / 1000, now_us());
                        if self.actuator {
                            actuator.sample(&mut rng, &mut payload);
                        } else {
                            sensor.sample(&mut rng, &mut payload);
                        }
                        payload.push('}');
                        if connection.publish(&topic, payload.as_bytes().to_vec(), 1).is_err() {
                            stats.error("encode");
                        }
                        stats.sent.fetch_add(1, Ordering::Relaxed);
                    }
                    next = next_tick(next, period, &stats);
                }
                _ = sleep_until((end + DRAIN).into()), if next >= end => {}
                incoming = connection.next() => match incoming {
                    Ok(Incoming::PubAck(latency, messages)) => stats.acked(latency, messages),
                    Ok(Incoming::Message(topic, body)) => {
                        let for_jobs = match &mut taker {
                            Some(taker) => taker.on_message(&topic, &body, &mut connection, &self.http, &self.login, &self.config, &mut rng, &stats).await,
                            None => false,
                        };
                        let delta = (!for_jobs).then(|| serde_json::from_slice::<Value>(&body).ok()).flatten();
                        let state = delta.as_ref().and_then(|d| d["state"].as_object());
                        // A shadow update, not telemetry: it counts no message.
                        if let Some(reported) = state.and_then(|s| actuator.follow(s))
                            && connection.publish(&update, reported.to_string().into_bytes(), 0).is_err()
                        {
                            stats.error("encode");
                        }
                    }
                    Ok(Incoming::Other) => {}
                    Err(error) => {
                        tracing::debug!(device = %self.name, %error, "connection lost");
                        stats.error("connection_lost");
                        stats.errors_of("unacknowledged_at_loss", connection.inflight() as u64);
                        match self.reconnect(&mut attempt, end, &stats).await {
                            Some(again) => {
                                connection = again;
                                if let Some(taker) = &mut taker {
                                    taker.on_connect(&mut connection);
                                }
                                continue;
                            }
                            None => return,
                        }
                    }
                }
            }
            if !settle(&mut connection, next, end, &stats).await {
                if next < end {
                    // Lost while sending: go on through another node.
                    stats.errors_of("unacknowledged_at_loss", connection.inflight() as u64);
                    if let Some(again) = self.reconnect(&mut attempt, end, &stats).await {
                        connection = again;
                        if let Some(taker) = &mut taker {
                            taker.on_connect(&mut connection);
                        }
                        continue;
                    }
                }
                break;
            }
        }
        connection.close().await;
    }

    /// Connects again after a lost connection, to the next endpoint each time, backing off
    /// (100 ms doubling to 2 s) until one answers or the run is over. Messages in flight on the
    /// lost connection stay unacknowledged (counted in `unacknowledged_at_loss`).
    async fn reconnect(
        &self,
        attempt: &mut usize,
        end: Instant,
        stats: &Stats,
    ) -> Option<Connection> {
        let mut backoff = Duration::from_millis(100);
        while Instant::now() < end {
            *attempt += 1;
            let server = self.config.endpoint(self.index, *attempt);
            match open(
                server,
                self.index,
                &self.name,
                &self.login,
                self.actuator,
                self.config.take_jobs,
            )
            .await
            {
                Ok(connection) => {
                    stats.reconnects.fetch_add(1, Ordering::Relaxed);
                    return Some(connection);
                }
                Err(error) => {
                    tracing::debug!(device = %self.name, %server, %error, "reconnecting failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
        None
    }
}

/// After each event of a sender's loop: whether to go on. Stops once sending is over and every
/// PUBACK came (or the drain time passed), or when the connection fails; otherwise pings if
/// idle and writes what was queued.
async fn settle(connection: &mut Connection, next: Instant, end: Instant, stats: &Stats) -> bool {
    if next >= end && (connection.inflight() == 0 || Instant::now() > end + DRAIN) {
        if connection.inflight() > 0 {
            stats.error("unacknowledged_at_end");
        }
        return false;
    }
    let _ = connection.ping_if_idle(KEEP_ALIVE / 2);
    if connection.flush().await.is_err() {
        stats.error("connection_lost");
        return false;
    }
    true
}

/// The next send time on the absolute schedule; a sender that fell a second behind skips
/// ahead rather than bursting to catch up.
fn next_tick(next: Instant, period: Duration, stats: &Stats) -> Instant {
    let next = next + period;
    let now = Instant::now();
    if now > next + Duration::from_secs(1) {
        stats.error("schedule_behind");
        now
    } else {
        next
    }
}

/// A gateway and the devices behind it.
struct GatewayDevices {
    name: String,
    devices: Vec<String>,
    batch: usize,
    seed: u64,
}

impl GatewayDevices {
    async fn run(
        self,
        mut connection: Connection,
        first: Instant,
        period: Duration,
        end: Instant,
        stats: Arc<Stats>,
    ) {
        let mut rng = SmallRng::seed_from_u64(self.seed);
        let mut sensors: Vec<Sensor> = (0..self.devices.len())
            .map(|_| Sensor::new(&mut rng))
            .collect();
        let topic = format!("gateways/{}/telemetry", self.name);
        let batch = self.batch.min(self.devices.len());
        let mut cursor = 0;
        let mut next = first;
        let mut payload = String::with_capacity(batch * 120);
        loop {
            tokio::select! {
                _ = sleep_until(next.into()), if next < end => {
                    if connection.inflight() >= MAX_INFLIGHT {
                        stats.error("throttled_inflight_limit");
                    } else {
                        payload.clear();
                        payload.push('[');
                        let (ts, sent) = (now_us() / 1000, now_us());
                        for k in 0..batch {
                            let i = (cursor + k) % self.devices.len();
                            if k > 0 {
                                payload.push(',');
                            }
                            let _ = write!(payload, "{{\"thing\":\"{}\",\"ts\":{ts},\"values\":{{\"sent_us\":{sent},", self.devices[i]);
                            sensors[i].sample(&mut rng, &mut payload);
                            payload.push_str("}}");
                        }
                        payload.push(']');
                        cursor = (cursor + batch) % self.devices.len();
                        if connection.publish(&topic, payload.as_bytes().to_vec(), batch as u64).is_err() {
                            stats.error("encode");
                        }
                        stats.sent.fetch_add(batch as u64, Ordering::Relaxed);
                    }
                    next = next_tick(next, period, &stats);
                }
                _ = sleep_until((end + DRAIN).into()), if next >= end => {}
                incoming = connection.next() => match incoming {
                    Ok(Incoming::PubAck(latency, messages)) => stats.acked(latency, messages),
                    Ok(Incoming::Message(topic, body)) => {
                        tracing::debug!(%topic, refused = %String::from_utf8_lossy(&body), "entry refused");
                        stats.error("entry_rejected");
                    }
                    Ok(Incoming::Other) => {}
                    Err(error) => {
                        tracing::warn!(gateway = %self.name, %error, "gateway connection lost");
                        stats.error("connection_lost");
                        return;
                    }
                }
            }
            if !settle(&mut connection, next, end, &stats).await {
                break;
            }
        }
        connection.close().await;
    }
}

/// Counts the actuators whose reported state is the desired state they were given.
async fn check_actuators(
    http: &reqwest::Client,
    config: &SimConfig,
    fleet: &fleet::Fleet,
    actuators: &[usize],
    stats: &Stats,
) -> u64 {
    let want = desired();
    let results: Vec<bool> = stream::iter(actuators.iter())
        .map(|i| {
            let name = &fleet.devices[*i];
            let want = &want;
            async move {
                let response = http
                    .get(format!("{}/v1/things/{name}/shadow", config.api))
                    .bearer_auth(&config.token)
                    .send()
                    .await;
                match response {
                    Ok(r) if r.status().is_success() => {
                        let shadow: Value = r.json().await.unwrap_or(Value::Null);
                        let reported = &shadow["state"]["reported"];
                        reported["power"] == want["power"]
                            && reported["setpoint"] == want["setpoint"]
                    }
                    _ => {
                        stats.error("api_get_shadow");
                        false
                    }
                }
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    results.into_iter().filter(|ok| *ok).count() as u64
}

/// When the simulation's job finished, seconds after it was created.
type FinishedAt = Arc<Mutex<Option<f64>>>;

/// Adds a timeline point every second (every `duration / 2000` for long runs).
async fn poll_timeline(
    http: reqwest::Client,
    config: SimConfig,
    start: Instant,
    stats: Arc<Stats>,
    into: Arc<Mutex<Vec<TimePoint>>>,
    (job, finished): (Option<(String, Instant)>, FinishedAt),
    mut stop: signal::Receiver<bool>,
) {
    let every = (config.duration / 2000).max(Duration::from_secs(1));
    let (mut acked, mut at) = (0, Instant::now());
    loop {
        if let Some((rss_bytes, twins_active)) = watch::memory(&http, &config).await {
            let (now_acked, now) = (stats.acked.load(Ordering::Relaxed), Instant::now());
            let point = TimePoint {
                t_s: start.elapsed().as_secs_f64(),
                rss_bytes,
                twins_active,
                acked_rate: (now_acked - acked) as f64
                    / now.duration_since(at).as_secs_f64().max(0.001),
                e2e_p99_ms: stats.take_window_p99_ms(),
                errors: stats.errors().values().sum(),
                job: None,
            };
            let mut point = point;
            if let Some((id, created)) = &job
                && let Some(progress) = jobs::progress(&http, &config, id).await
            {
                let done = progress["status"] != "IN_PROGRESS";
                if done
                    && let Ok(mut finished) = finished.lock()
                    && finished.is_none()
                {
                    *finished = Some(created.elapsed().as_secs_f64());
                }
                point.job = Some(json!({
                    "status": progress["status"],
                    "queued": progress["queued"],
                    "executions": progress["executions"],
                }));
            }
            (acked, at) = (now_acked, now);
            if let Ok(mut points) = into.lock() {
                points.push(point);
            }
        }
        tokio::select! {
            _ = stop.changed() => break,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// Updates the progress line: rates over the last half second and the end-to-end p99.
async fn tick_progress(
    bar: ProgressBar,
    stats: Arc<Stats>,
    start: Instant,
    mut stop: signal::Receiver<bool>,
) {
    let (mut sent, mut acked, mut at) = (0, 0, Instant::now());
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        let (s, a, now) = (
            stats.sent.load(Ordering::Relaxed),
            stats.acked.load(Ordering::Relaxed),
            Instant::now(),
        );
        let secs = now.duration_since(at).as_secs_f64().max(0.001);
        bar.set_position(start.elapsed().as_secs().min(bar.length().unwrap_or(0)));
        bar.set_message(format!(
            "sent {:.0}/s  acked {:.0}/s  end-to-end p99 {:.1} ms",
            (s - sent) as f64 / secs,
            (a - acked) as f64 / secs,
            stats.e2e_p99_ms()
        ));
        (sent, acked, at) = (s, a, now);
    }
}
