//! Ingest and memory of a release node on loopback, every figure from one run:
//!
//! 1. `DOPPEL_BENCH_CONNECTIONS` (100) devices on the built-in endpoint publish QoS 1 telemetry
//!    for `DOPPEL_BENCH_SECONDS` (20); a PUBACK comes only after the durable commit. Prints
//!    acknowledged messages/s and PUBACK latency percentiles.
//! 2. `DOPPEL_BENCH_TWINS` (100,000) more devices each connect once, send one ~200-byte state
//!    and leave, so that many twins are active; prints the node's RSS and bytes per twin.
//!
//! `cargo bench --bench ingest`. The load generator shares the machine with the node; both
//! stay on loopback and every loop is bounded in count and time.

use bytes::BytesMut;
use doppel_tests::node::{ADMIN_TOKEN, Node, Options};
use hdrhistogram::Histogram;
use rumqttc::{
    AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS,
    mqttbytes::v4::{self, Connect, Publish},
};
use serde_json::{Value, json};
use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpSocket,
    sync::Semaphore,
};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn register(node: &Node, prefix: &str, count: usize) -> Vec<(String, String)> {
    let client = reqwest::Client::new();
    let mut tokens = Vec::with_capacity(count);
    for chunk in (0..count).collect::<Vec<_>>().chunks(10_000) {
        let things: Vec<Value> = chunk
            .iter()
            .map(|i| json!({"name": format!("{prefix}-{i}")}))
            .collect();
        let reply: Value = client
            .post(node.url("/v1/things/bulk"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({ "things": things }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for t in reply["things"].as_array().expect("registered") {
            tokens.push((
                t["name"].as_str().unwrap().to_owned(),
                t["token"].as_str().unwrap().to_owned(),
            ));
        }
    }
    tokens
}

fn sample(i: u64, seq: u64) -> String {
    json!({
        "ts": 1_700_000_000_000u64 + seq, "temp": 20.0 + (seq % 100) as f64 / 10.0, "hum": 40 + i % 30,
        "pressure": 1013, "status": "ok", "fw": "1.4.2", "battery": 87, "rssi": -67,
        "location": {"lat": 48.137, "lon": 11.575}, "mode": "auto", "door": "closed", "alarm": false, "uptime_s": 86_400 + seq
    })
    .to_string()
}

/// Phase 1: sustained QoS 1 telemetry from `connections` devices.
async fn ingest(node: &Node, connections: usize, seconds: u64) {
    let devices = register(node, "ingest", connections).await;
    let acked = Arc::new(AtomicU64::new(0));
    let latency = Arc::new(Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap(),
    ));
    let addr = node.mqtt();
    let started = Instant::now();
    let stop = started + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for (i, (thing, token)) in devices.into_iter().enumerate() {
        let mut options = MqttOptions::new(thing.clone(), addr.ip().to_string(), addr.port());
        options.set_credentials(thing.clone(), token);
        options.set_inflight(64);
        options.set_keep_alive(Duration::from_secs(60));
        let (client, mut eventloop) = AsyncClient::new(options, 256);
        let (acked, latency) = (acked.clone(), latency.clone());
        tasks.push(tokio::spawn(async move {
            let topic = format!("things/{thing}/telemetry");
            let publisher = tokio::spawn(async move {
                let mut seq = 0u64;
                while Instant::now() < stop && seq < 10_000_000 {
                    seq += 1;
                    if client
                        .publish(&topic, QoS::AtLeastOnce, false, sample(i as u64, seq))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                let _ = client.disconnect().await;
            });
            let mut sent: HashMap<u16, Instant> = HashMap::new();
            loop {
                match eventloop.poll().await {
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                        sent.insert(pkid, Instant::now());
                    }
                    Ok(Event::Incoming(Packet::PubAck(ack))) => {
                        if Instant::now() < stop {
                            acked.fetch_add(1, Ordering::Relaxed);
                            if let Some(at) = sent.remove(&ack.pkid) {
                                let _ = latency
                                    .lock()
                                    .unwrap()
                                    .record(at.elapsed().as_micros() as u64);
                            }
                        }
                    }
                    Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                    Ok(_) => {}
                }
                if Instant::now() > stop + Duration::from_secs(5) {
                    break;
                }
            }
            let _ = publisher.await;
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let elapsed = seconds as f64;
    let total = acked.load(Ordering::Relaxed);
    let h = latency.lock().unwrap();
    println!(
        "ingest: {connections} connections, QoS 1 telemetry (~230 B), PUBACK after commit: {:.0} msgs/s acknowledged over {seconds} s ({total} messages); PUBACK latency p50 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms",
        total as f64 / elapsed,
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.value_at_quantile(0.999) as f64 / 1000.0,
    );
}

/// One short connection: CONNECT, one QoS 1 PUBLISH, wait for its PUBACK, DISCONNECT.
async fn touch(
    server: SocketAddr,
    source: Ipv4Addr,
    thing: &str,
    token: &str,
    payload: String,
) -> std::io::Result<()> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
    let mut stream = socket.connect(server).await?;
    let mut out = BytesMut::new();
    let mut connect = Connect::new(thing);
    connect.set_login(thing, token);
    v4::Packet::Connect(connect)
        .write(&mut out, usize::MAX)
        .unwrap();
    let mut publish = Publish::new(
        format!("things/{thing}/telemetry"),
        QoS::AtLeastOnce,
        payload,
    );
    publish.pkid = 1;
    v4::Packet::Publish(publish)
        .write(&mut out, usize::MAX)
        .unwrap();
    stream.write_all(&out).await?;
    let mut input = BytesMut::new();
    loop {
        if stream.read_buf(&mut input).await? == 0 {
            return Err(std::io::Error::other("closed before PUBACK"));
        }
        while let Ok(packet) = v4::Packet::read(&mut input, 1 << 20) {
            if let v4::Packet::PubAck(_) = packet {
                let mut bye = BytesMut::new();
                v4::Packet::Disconnect.write(&mut bye, 16).unwrap();
                stream.write_all(&bye).await?;
                return Ok(());
            }
        }
    }
}

/// Phase 2: activate `twins` twins with ~200 B of state each and measure the node.
async fn memory(node: &Node, twins: usize) {
    let before = node.rss_bytes();
    let devices = register(node, "resident", twins).await;
    let after_registration = node.rss_bytes();
    let server = node.mqtt();
    let gate = Arc::new(Semaphore::new(200));
    let failures = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(twins);
    for (i, (thing, token)) in devices.into_iter().enumerate() {
        let permit = gate.clone().acquire_owned().await.unwrap();
        let failures = failures.clone();
        // Source addresses 127.1.0.1 … spread the connections past the ephemeral-port limit.
        let source = Ipv4Addr::new(127, 1, (i / 250) as u8, (i % 250) as u8 + 1);
        tasks.push(tokio::spawn(async move {
            let payload = sample(i as u64, 1);
            if tokio::time::timeout(
                Duration::from_secs(30),
                touch(server, source, &thing, &token, payload),
            )
            .await
            .map_or(true, |r| r.is_err())
            {
                failures.fetch_add(1, Ordering::Relaxed);
            }
            drop(permit);
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let took = started.elapsed();
    let busy = node.rss_bytes();
    // Twins stay decoded for `keep_decoded` (2 s) after their last message; then only their
    // encoded form remains. Measure again once every twin is idle.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let idle = node.rss_bytes();
    let failed = failures.load(Ordering::Relaxed);
    let per_twin = |rss: u64| {
        (rss.saturating_sub(after_registration)) as f64 / (twins as u64 - failed).max(1) as f64
    };
    println!(
        "memory: {twins} twins activated with ~200 B of state each in {:.1} s ({failed} failed); node RSS {:.0} MB before, {:.0} MB after registration, {:.0} MB just after activation ({:.0} B per twin), {:.0} MB once idle ({:.0} B per active twin)",
        took.as_secs_f64(),
        before as f64 / 1e6,
        after_registration as f64 / 1e6,
        busy as f64 / 1e6,
        per_twin(busy),
        idle as f64 / 1e6,
        per_twin(idle),
    );
}

fn main() {
    let connections = env("DOPPEL_BENCH_CONNECTIONS", 100) as usize;
    let seconds = env("DOPPEL_BENCH_SECONDS", 20);
    let twins = env("DOPPEL_BENCH_TWINS", 100_000) as usize;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // DOPPEL_BENCH_CONFIG: a TOML configuration for the node (e.g. "[node]\nkeep_decoded = \"0s\"").
        let config = std::env::var("DOPPEL_BENCH_CONFIG").ok();
        let node = Node::start(
            env!("CARGO_BIN_EXE_doppel"),
            Options {
                config,
                ..Options::default()
            },
        );
        ingest(&node, connections, seconds).await;
        memory(&node, twins).await;
    });
}
