//! WebSocket fan-out of a release node on loopback, every figure from one run:
//! `DOPPEL_BENCH_TWINS` (1,000) devices publish QoS 0 telemetry, paced on an absolute schedule, at `DOPPEL_BENCH_RATE` (20,000)
//! updates/s in total; `DOPPEL_BENCH_SUBSCRIBERS` (1,000) WebSocket apps each subscribe to
//! `DOPPEL_BENCH_FANOUT` (1) twins, so every update is owed to `subscribers × fanout / twins`
//! apps. Each payload carries its send time; each app measures the time to its `change` frame.
//! Prints updates/s committed, change frames/s delivered, latency percentiles, resyncs and the
//! node's RSS, over `DOPPEL_BENCH_SECONDS` (10) after a 2 s warm-up.
//!
//! `cargo bench --bench ws_fanout`. The load generator shares the machine with the node; both
//! stay on loopback and every loop is bounded in count and time.

use bytes::BytesMut;
use doppel_tests::node::{ADMIN_TOKEN, Node, Options};
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use rumqttc::{
    QoS,
    mqttbytes::v4::{self, Connect, Publish},
};
use serde::Deserialize;
use serde_json::{Value, json};
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

async fn register(node: &Node, count: usize) -> Vec<(String, String)> {
    let things: Vec<Value> = (0..count)
        .map(|i| json!({"name": format!("fan-{i}")}))
        .collect();
    let reply: Value = reqwest::Client::new()
        .post(node.url("/v1/things/bulk"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "things": things }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    reply["things"]
        .as_array()
        .expect("registered")
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_owned(),
                t["token"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(default)]
    id: Option<&'a str>,
    #[serde(default)]
    changed: Option<Changed>,
}

#[derive(Deserialize)]
struct Changed {
    reported: Option<Reported>,
}

#[derive(Deserialize)]
struct Reported {
    sent_us: Option<u64>,
}

struct Measure {
    measuring: AtomicBool,
    stop: AtomicBool,
    frames: AtomicU64,
    resyncs: AtomicU64,
}

/// One app: subscribes to `things`, then counts change frames and their latency.
async fn subscriber(
    node: Arc<Node>,
    things: Vec<String>,
    measure: Arc<Measure>,
    ready: tokio::sync::mpsc::Sender<()>,
) -> Histogram<u64> {
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).unwrap();
    let mut request = format!("ws://{}/v1/ws", node.http)
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {ADMIN_TOKEN}").parse().unwrap(),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let first = things[0].clone();
    socket
        .send(Message::text(
            json!({"type": "subscribe", "id": "s", "things": things}).to_string(),
        ))
        .await
        .unwrap();
    socket
        .send(Message::text(
            json!({"type": "get", "id": "ready", "thing": first}).to_string(),
        ))
        .await
        .unwrap();
    let mut announced = false;
    while !measure.stop.load(Ordering::Relaxed) {
        let Ok(Some(Ok(message))) =
            tokio::time::timeout(Duration::from_millis(200), socket.next()).await
        else {
            continue;
        };
        let Message::Text(text) = message else {
            continue;
        };
        let Ok(frame) = serde_json::from_str::<Frame>(&text) else {
            continue;
        };
        match frame.kind {
            "change" if measure.measuring.load(Ordering::Relaxed) => {
                measure.frames.fetch_add(1, Ordering::Relaxed);
                if let Some(sent) = frame
                    .changed
                    .and_then(|c| c.reported)
                    .and_then(|r| r.sent_us)
                {
                    let _ = histogram.record(now_us().saturating_sub(sent).max(1));
                }
            }
            "resync" => {
                measure.resyncs.fetch_add(1, Ordering::Relaxed);
            }
            _ if !announced && frame.id == Some("ready") => {
                announced = true;
                let _ = ready.send(()).await;
            }
            _ => {}
        }
    }
    histogram
}

/// Connects one device and reads its CONNACK.
async fn connect(node: &Node, thing: &str, token: &str) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(node.mqtt()).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let mut out = BytesMut::new();
    let mut connect = Connect::new(thing);
    connect.set_login(thing, token);
    connect.keep_alive = 60;
    v4::Packet::Connect(connect)
        .write(&mut out, usize::MAX)
        .unwrap();
    stream.write_all(&out).await.unwrap();
    let mut input = BytesMut::new();
    loop {
        assert!(stream.read_buf(&mut input).await.unwrap() > 0, "a CONNACK");
        if let Ok(v4::Packet::ConnAck(_)) = v4::Packet::read(&mut input, 1024) {
            break;
        }
    }
    (stream, format!("things/{thing}/telemetry"))
}

/// Paces QoS 0 telemetry over `devices` at `rate` messages/s in total, on an absolute
/// schedule: a late start is caught up, so the offered rate holds whatever the scheduling.
async fn publish(
    mut devices: Vec<(TcpStream, String)>,
    rate: f64,
    measure: Arc<Measure>,
    sent: Arc<AtomicU64>,
) {
    let started = Instant::now();
    let mut out = BytesMut::new();
    let count = devices.len() as u64;
    let mut k = 0u64;
    while !measure.stop.load(Ordering::Relaxed) && k < 100_000_000 {
        let due = (started.elapsed().as_secs_f64() * rate) as u64;
        while k < due {
            let (stream, topic) = &mut devices[(k % count) as usize];
            let payload = format!(
                r#"{{"seq":{k},"sent_us":{},"temp":{}.5}}"#,
                now_us(),
                k % 40
            );
            out.clear();
            v4::Packet::Publish(Publish::new(topic.as_str(), QoS::AtMostOnce, payload))
                .write(&mut out, usize::MAX)
                .unwrap();
            if stream.write_all(&out).await.is_err() {
                return;
            }
            if measure.measuring.load(Ordering::Relaxed) {
                sent.fetch_add(1, Ordering::Relaxed);
            }
            k += 1;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

async fn scrape(node: &Node) -> String {
    reqwest::Client::new()
        .get(node.url("/metrics"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn main() {
    let twins = env("DOPPEL_BENCH_TWINS", 1_000) as usize;
    let subscribers = env("DOPPEL_BENCH_SUBSCRIBERS", 1_000) as usize;
    let fanout = env("DOPPEL_BENCH_FANOUT", 1).clamp(1, twins as u64) as usize;
    let rate = env("DOPPEL_BENCH_RATE", 20_000);
    let seconds = env("DOPPEL_BENCH_SECONDS", 10);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // The apps all use one key from one address: raise the per-key and per-address
        // connection limits to the number of apps (DOPPEL_BENCH_CONFIG replaces this).
        let config = std::env::var("DOPPEL_BENCH_CONFIG").ok().or_else(|| {
            let connections = subscribers + 64;
            Some(format!(
                "[ws]\nmax_connections_per_key = {connections}\n[http]\nmax_connections_per_ip = {connections}\n"
            ))
        });
        let node = Arc::new(Node::start(
            env!("CARGO_BIN_EXE_doppel"),
            Options {
                config,
                ..Options::default()
            },
        ));
        let devices = register(&node, twins).await;
        let measure = Arc::new(Measure {
            measuring: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            frames: AtomicU64::new(0),
            resyncs: AtomicU64::new(0),
        });

        let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(subscribers);
        let mut apps = Vec::with_capacity(subscribers);
        for s in 0..subscribers {
            let things = (0..fanout)
                .map(|k| format!("fan-{}", (s + k * (twins / fanout).max(1)) % twins))
                .collect();
            apps.push(tokio::spawn(subscriber(
                node.clone(),
                things,
                measure.clone(),
                ready_tx.clone(),
            )));
        }
        for _ in 0..subscribers {
            tokio::time::timeout(Duration::from_secs(60), ready_rx.recv())
                .await
                .expect("every app subscribed");
        }

        let sent = Arc::new(AtomicU64::new(0));
        let mut connected = Vec::with_capacity(twins);
        for (thing, token) in &devices {
            connected.push(connect(&node, thing, token).await);
        }
        // Four publishers share the devices round-robin.
        const PUBLISHERS: usize = 4;
        let mut groups: Vec<Vec<(TcpStream, String)>> = (0..PUBLISHERS).map(|_| Vec::new()).collect();
        for (i, device) in connected.into_iter().enumerate() {
            groups[i % PUBLISHERS].push(device);
        }
        let senders: Vec<_> = groups
            .into_iter()
            .map(|group| {
                tokio::spawn(publish(
                    group,
                    rate as f64 / PUBLISHERS as f64,
                    measure.clone(),
                    sent.clone(),
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let before = scrape(&node).await;
        measure.measuring.store(true, Ordering::Relaxed);
        let started = Instant::now();
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        measure.measuring.store(false, Ordering::Relaxed);
        let elapsed = started.elapsed().as_secs_f64();
        let after = scrape(&node).await;
        let rss = node.rss_bytes();
        measure.stop.store(true, Ordering::Relaxed);
        for sender in senders {
            let _ = sender.await;
        }
        let mut latency = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).unwrap();
        for app in apps {
            if let Ok(h) = app.await {
                latency.add(h).unwrap();
            }
        }
        let updates = metric(&after, "doppel_messages_in_total{kind=\"telemetry\"}")
            - metric(&before, "doppel_messages_in_total{kind=\"telemetry\"}");
        let changes_sent = metric(&after, "doppel_ws_changes_sent_total")
            - metric(&before, "doppel_ws_changes_sent_total");
        let frames = measure.frames.load(Ordering::Relaxed);
        let owed = subscribers * fanout;
        println!(
            "ws fan-out: {twins} twins, {subscribers} subscribers × {fanout} twins each ({:.1} subscribers per twin), offered {rate} updates/s for {seconds} s",
            owed as f64 / twins as f64
        );
        println!(
            "  updates sent {:.0}/s, received by the node {:.0}/s; change frames sent by the node {:.0}/s, delivered to apps {:.0}/s",
            sent.load(Ordering::Relaxed) as f64 / elapsed,
            updates / elapsed,
            changes_sent / elapsed,
            frames as f64 / elapsed,
        );
        println!(
            "  send → change frame latency p50 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms, max {:.1} ms; resync frames {}; node fell behind {} times; node RSS {:.0} MB",
            latency.value_at_quantile(0.5) as f64 / 1000.0,
            latency.value_at_quantile(0.99) as f64 / 1000.0,
            latency.value_at_quantile(0.999) as f64 / 1000.0,
            latency.max() as f64 / 1000.0,
            measure.resyncs.load(Ordering::Relaxed),
            metric(&after, "doppel_ws_fell_behind_total"),
            rss as f64 / 1e6,
        );
    });
}
