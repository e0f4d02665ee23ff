//! `doppel sim`: the device simulator's command line. It parses the flags, runs the simulation
//! against a node (over MQTT, HTTP and WebSocket only) and prints the summary.

use anyhow::Context;
use clap::{Args, ValueEnum};
use simulator::{Auth, Mode, SimConfig};
use std::{io::IsTerminal, net::ToSocketAddrs, path::PathBuf, time::Duration};

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    /// One MQTT connection per device.
    Direct,
    /// Devices behind a few gateways, telemetry in batches.
    Gateway,
    /// A plain MQTT broker (no node, nothing registered): the reference for benchmarks.
    Broker,
}

#[derive(Clone, Copy, ValueEnum)]
enum AuthArg {
    /// A token as MQTT password, over plain TCP.
    Token,
    /// A client certificate per device, over TLS 1.3 (direct mode).
    Certificate,
}

/// Flags of `doppel sim`.
#[derive(Args)]
pub struct SimArgs {
    /// Devices in the fleet.
    #[arg(long, default_value_t = 1000)]
    devices: usize,
    /// Telemetry messages per second over the whole fleet.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// How long to send (`10s`, `5m`, `1h`).
    #[arg(long, default_value = "60s", value_parser = duration)]
    duration: Duration,
    /// Spread the devices' first messages over this time.
    #[arg(long, default_value = "0s", value_parser = duration)]
    ramp: Duration,
    /// How devices reach the node.
    #[arg(long, value_enum, default_value = "direct")]
    mode: ModeArg,
    /// Gateway connections (gateway mode).
    #[arg(long, default_value_t = 10)]
    gateways: usize,
    /// Entries per gateway batch, at most.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// The nodes' MQTT endpoints, comma-separated (`A,B,C`): devices spread over them and move
    /// to the next when theirs goes away.
    #[arg(long, default_value = "127.0.0.1:1883", value_delimiter = ',')]
    mqtt: Vec<String>,
    /// The node's HTTP API.
    #[arg(long, env = "DOPPEL_URL", default_value = "http://127.0.0.1:8080")]
    api: String,
    /// An API key allowed to register things (admin); not needed in broker mode.
    #[arg(
        long,
        env = "DOPPEL_ADMIN_TOKEN",
        hide_env_values = true,
        default_value = ""
    )]
    token: String,
    /// Name prefix of the registered things (default: `sim-` and a random id).
    #[arg(long)]
    prefix: Option<String>,
    /// Every n-th device is an actuator following its desired state (direct mode; 0: none).
    #[arg(long, default_value_t = 10)]
    actuator_every: usize,
    /// Twins watched over WebSocket for end-to-end latency.
    #[arg(long, default_value_t = 100)]
    sample: usize,
    /// Measure delivery on this WebSocket instead (each frame carries its message's `sent_us`).
    #[arg(long)]
    watch_ws: Option<String>,
    /// Register the things with this device type.
    #[arg(long = "type")]
    device_type: Option<String>,
    /// How devices authenticate. With `certificate`, each device makes a key and gets a
    /// certificate from its CSR through the API, `--mqtt` names the nodes' MQTT TLS
    /// listeners, and `--provision N` devices provision themselves instead.
    #[arg(long, value_enum, default_value = "token")]
    auth: AuthArg,
    /// The CA of the node's TLS server certificate (PEM), with `--auth certificate` (and for an
    /// `https://` API).
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// The name the node's TLS server certificate carries.
    #[arg(long, default_value = "localhost")]
    tls_name: String,
    /// With `--auth certificate`: devices (the last ones) that provision themselves with a
    /// claim certificate over MQTT (AWS IoT fleet provisioning). Default: 10 (at most all).
    #[arg(long)]
    provision: Option<usize>,
    /// Devices take jobs (direct mode): start the next execution, download its artifact and
    /// check it, work `--job-time`, report success (or failure / rejection at the rates given).
    #[arg(long)]
    take_jobs: bool,
    /// Roll out this job over the fleet once it is connected (a `PUT /v1/jobs` body as JSON;
    /// without `targets`, the fleet's `--type`); implies `--take-jobs`.
    #[arg(long)]
    job: Option<PathBuf>,
    /// How long a device works on a job.
    #[arg(long, default_value = "1s", value_parser = duration)]
    job_time: Duration,
    /// Share of jobs a device fails (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    job_fail: f64,
    /// Share of jobs a device rejects (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    job_reject: f64,
    /// Write the report as JSON to this file.
    #[arg(long)]
    report: Option<PathBuf>,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
}

fn duration(text: &str) -> Result<Duration, String> {
    simulator::parse_duration(text).map_err(|e| e.to_string())
}

/// Runs `doppel sim`.
pub fn run(args: SimArgs) -> anyhow::Result<()> {
    let mqtt = args
        .mqtt
        .iter()
        .map(|endpoint| {
            endpoint
                .to_socket_addrs()
                .with_context(|| format!("--mqtt {endpoint}"))?
                .next()
                .with_context(|| format!("--mqtt {endpoint} names no address"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let prefix = args
        .prefix
        .unwrap_or_else(|| format!("sim-{:06x}", rand_id()));
    let config = SimConfig {
        devices: args.devices,
        rate: args.rate,
        duration: args.duration,
        ramp: args.ramp,
        mode: match args.mode {
            ModeArg::Direct => Mode::Direct,
            ModeArg::Gateway => Mode::Gateway,
            ModeArg::Broker => Mode::Broker,
        },
        gateways: args.gateways,
        batch: args.batch,
        mqtt,
        api: args.api.trim_end_matches('/').to_owned(),
        token: args.token,
        prefix,
        actuator_every: args.actuator_every,
        sample: args.sample,
        watch_ws: args.watch_ws,
        device_type: args.device_type,
        auth: match args.auth {
            AuthArg::Token => Auth::Token,
            AuthArg::Certificate => Auth::Certificate,
        },
        tls_ca: args.tls_ca,
        tls_name: args.tls_name,
        provision: match (args.auth, args.provision) {
            (_, Some(n)) => n,
            (AuthArg::Certificate, None) => args.devices.min(10),
            (AuthArg::Token, None) => 0,
        },
        take_jobs: args.take_jobs || args.job.is_some(),
        job: args.job,
        job_time: args.job_time,
        job_fail: args.job_fail,
        job_reject: args.job_reject,
        report: args.report,
        progress: !args.quiet && std::io::stderr().is_terminal(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(simulator::run(config))?;
    println!("{report}");
    Ok(())
}

fn rand_id() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    (nanos ^ std::process::id().rotate_left(16)) & 0xff_ffff
}
