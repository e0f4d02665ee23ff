//! Floods against a real `doppel serve`, with the node's memory watched: devices publishing as
//! fast as their connection allows at QoS 0 and QoS 1, and a viewer key opening WebSocket
//! subscriptions up to its budgets. The node must stay within a stated bound and keep answering
//! another device. Each test prints what it measured (peak RSS growth, the probe's round trips).

use doppel_tests::{
    api::Api,
    device,
    node::{Node, Options},
    ws,
};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::json;
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

const BIN: &str = env!("CARGO_BIN_EXE_doppel");

/// How long a flood lasts.
const FLOOD: Duration = Duration::from_secs(5);

/// A device that publishes `payload` to `topic` at `qos` as fast as its connection takes it,
/// until `stop`, at most `FLOOD` and 2,000,000 messages; returns how many it sent. QoS 0
/// floods are written raw, 64 encoded PUBLISH packets per write, so that only the node's
/// reading limits them.
async fn flood(node: &Node, thing: &str, topic: String, qos: QoS, stop: Arc<AtomicBool>) -> u64 {
    if qos == QoS::AtMostOnce {
        return raw_flood(node, thing, topic, stop).await;
    }
    let token = node.register(thing).await;
    let addr = node.mqtt();
    let mut options = MqttOptions::new(thing, addr.ip().to_string(), addr.port());
    options.set_credentials(thing, token);
    options.set_keep_alive(Duration::from_secs(60));
    options.set_inflight(64);
    let (client, mut eventloop) = AsyncClient::new(options, 256);
    let payload = json!({"state": {"reported": {"blob": "x".repeat(2_000)}}}).to_string();
    let sent = Arc::new(AtomicU64::new(0));
    let driver = {
        let stop = stop.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await {
                    Ok(Ok(Event::Incoming(Packet::Disconnect))) | Ok(Err(_)) => return,
                    _ => {}
                }
            }
        })
    };
    let started = Instant::now();
    while !stop.load(Ordering::Relaxed)
        && started.elapsed() < FLOOD
        && sent.load(Ordering::Relaxed) < 2_000_000
    {
        let publish = client.publish(topic.clone(), qos, false, payload.clone());
        if tokio::time::timeout(Duration::from_millis(200), publish)
            .await
            .is_ok()
        {
            sent.fetch_add(1, Ordering::Relaxed);
        }
    }
    let _ = client.disconnect().await;
    driver.abort();
    sent.load(Ordering::Relaxed)
}

async fn raw_flood(node: &Node, thing: &str, topic: String, stop: Arc<AtomicBool>) -> u64 {
    use rumqttc::mqttbytes::v4;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let token = node.register(thing).await;
    let mut connect = v4::Connect::new(thing);
    connect.keep_alive = 60;
    connect.set_login(thing, token);
    let mut bytes = bytes::BytesMut::new();
    v4::Packet::Connect(connect)
        .write(&mut bytes, usize::MAX)
        .unwrap();
    let mut stream = tokio::net::TcpStream::connect(node.mqtt()).await.unwrap();
    stream.write_all(&bytes).await.unwrap();
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack).await.unwrap();
    assert_eq!(connack, [0x20, 0x02, 0x00, 0x00], "CONNACK accepted");
    let payload = json!({"state": {"reported": {"blob": "x".repeat(2_000)}}}).to_string();
    let mut chunk = bytes::BytesMut::new();
    for _ in 0..64 {
        v4::Packet::Publish(v4::Publish::new(
            topic.as_str(),
            rumqttc::mqttbytes::QoS::AtMostOnce,
            payload.clone(),
        ))
        .write(&mut chunk, usize::MAX)
        .unwrap();
    }
    let (mut reader, mut writer) = stream.into_split();
    // Whatever the node sends (replies, deltas) is read and dropped.
    let drain = tokio::spawn(async move {
        let mut sink = vec![0u8; 64 * 1024];
        while reader.read(&mut sink).await.is_ok_and(|n| n > 0) {}
    });
    let (deadline, mut sent) = (tokio::time::Instant::now() + FLOOD, 0u64);
    while !stop.load(Ordering::Relaxed) && sent < 2_000_000 {
        // A write that the node does not take (it stopped reading: the backpressure under
        // test) ends the flood at its deadline; a write is never cut short otherwise.
        match tokio::time::timeout_at(deadline, writer.write_all(&chunk)).await {
            Ok(Ok(())) => sent += 64,
            Ok(Err(_)) | Err(_) => break,
        }
    }
    drain.abort();
    sent
}

/// Samples the node's RSS every 100 ms until `stop`; returns the peak.
fn watch_rss(node: &Node, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    let pid_status = format!("/proc/{}/status", node.pid_raw());
    std::thread::spawn(move || {
        let mut peak = 0;
        while !stop.load(Ordering::Relaxed) {
            if let Ok(status) = std::fs::read_to_string(&pid_status)
                && let Some(kib) = status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            {
                peak = peak.max(kib * 1024);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        peak
    })
}

/// A probe device doing QoS 1 round trips (publish → PUBACK) until `stop`; returns the slowest
/// and the count.
async fn probe(node: &Node, stop: Arc<AtomicBool>) -> (Duration, usize) {
    let token = node.register("probe").await;
    let mut d = device::connect(node.mqtt(), "probe", &token)
        .await
        .expect("the probe connects during the flood");
    let (mut slowest, mut count) = (Duration::ZERO, 0);
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        d.publish_acked("things/probe/telemetry", &json!({"n": count}))
            .await;
        slowest = slowest.max(started.elapsed());
        count += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (slowest, count)
}

/// The bound on the node's growth under these floods: the two flooding connections may hold
/// `max_inflight` (64) messages each, a few MB, far under this; the rest is allocator slack.
const GROWTH_BOUND: u64 = 200 * 1024 * 1024;

async fn flood_test(qos: QoS, topic: fn(&str) -> String) {
    let node = Node::start(BIN, Options::default());
    let baseline = node.rss_bytes();
    let stop = Arc::new(AtomicBool::new(false));
    let rss = watch_rss(&node, stop.clone());
    let probe_stop = Arc::new(AtomicBool::new(false));
    let (a, b, p) = tokio::join!(
        flood(&node, "flood-a", topic("flood-a"), qos, stop.clone()),
        flood(&node, "flood-b", topic("flood-b"), qos, stop.clone()),
        async {
            // Starts once the flood is under way.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let stopper = probe_stop.clone();
            tokio::spawn(async move {
                tokio::time::sleep(FLOOD - Duration::from_millis(800)).await;
                stopper.store(true, Ordering::Relaxed);
            });
            probe(&node, probe_stop.clone()).await
        }
    );
    stop.store(true, Ordering::Relaxed);
    let peak = rss.join().unwrap();
    let growth = peak.saturating_sub(baseline);
    println!(
        "{qos:?} flood: {} messages sent by two devices in {FLOOD:?}; node RSS {} MB → peak {} MB (+{} MB); probe: {} round trips, slowest {:?}",
        a + b,
        baseline >> 20,
        peak >> 20,
        growth >> 20,
        p.1,
        p.0
    );
    assert!(a + b > 1_000, "the flood ran: {} messages", a + b);
    assert!(p.1 > 0, "the probe was answered during the flood");
    assert!(
        growth < GROWTH_BOUND,
        "the node grew by {} MB under a {qos:?} flood (bound {} MB)",
        growth >> 20,
        GROWTH_BOUND >> 20
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_qos0_shadow_update_flood_keeps_memory_bounded() {
    flood_test(QoS::AtMostOnce, |t| {
        format!("$aws/things/{t}/shadow/update")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_qos0_telemetry_flood_keeps_memory_bounded() {
    flood_test(QoS::AtMostOnce, |t| format!("things/{t}/telemetry")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_qos1_shadow_update_flood_keeps_memory_bounded() {
    flood_test(QoS::AtLeastOnce, |t| {
        format!("$aws/things/{t}/shadow/update")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_subscriptions_stay_within_their_budgets() {
    let node = Node::start(
        BIN,
        Options {
            config: Some(
                "[ws]\nmax_things_per_connection = 2000\nmax_connections_per_key = 3\n".into(),
            ),
            ..Options::default()
        },
    );
    let admin = Api::admin(&node);
    let names: Vec<String> = (0..1_000).map(|i| format!("w-{i:04}")).collect();
    let things: Vec<_> = names.iter().map(|n| json!({ "name": n })).collect();
    let (status, _) = admin
        .post("/v1/things/bulk", json!({ "things": things }))
        .await;
    assert_eq!(status, 201);
    // Three of them have a shadow, so a subscription to them sends snapshots.
    for name in &names[..3] {
        let (status, _) = admin
            .patch(
                &format!("/v1/things/{name}/shadow"),
                json!({"state": {"desired": {"on": true}}}),
            )
            .await;
        assert_eq!(status, 200);
    }
    let viewer = admin.create_key("viewer", None).await;
    let baseline = node.rss_bytes();

    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(
            ws::connect(&node, Some(&viewer))
                .await
                .expect("within the budget"),
        );
    }
    assert_eq!(
        ws::connect(&node, Some(&viewer))
            .await
            .err()
            .map(|s| s.as_u16()),
        Some(429),
        "a fourth connection for the key is refused"
    );
    for (i, client) in clients.iter_mut().enumerate() {
        // One name a thousand times is one thing: one snapshot.
        client
            .send(
                json!({"type": "subscribe", "id": "same", "things": vec![names[i].clone(); 1_000]}),
            )
            .await;
        let snapshot = client.next_of("snapshot").await;
        assert_eq!(
            (&snapshot["sub"], &snapshot["thing"]),
            (&json!("same"), &json!(names[i]))
        );
        for sub in ["a", "b"] {
            client
                .send(json!({"type": "subscribe", "id": sub, "things": names}))
                .await;
        }
        let mut snapshots_a = 0;
        let error = loop {
            let frame = client.next().await;
            match frame["type"].as_str() {
                Some("snapshot") => {
                    assert_eq!(frame["sub"], "a", "{frame}");
                    snapshots_a += 1;
                }
                Some("error") => break frame,
                _ => panic!("unexpected {frame}"),
            }
        };
        assert_eq!(snapshots_a, 3);
        assert_eq!(
            (&error["code"], &error["id"]),
            (&json!("too_many_things"), &json!("b")),
            "{error}"
        );
    }
    let peak = node.rss_bytes();
    let growth = peak.saturating_sub(baseline);
    println!(
        "WebSocket: 3 connections × 1,001 subscribed things: node RSS {} MB → {} MB (+{} MB)",
        baseline >> 20,
        peak >> 20,
        growth >> 20
    );
    assert!(growth < 64 * 1024 * 1024, "grew {} MB", growth >> 20);
    // Budgets come back when a subscription ends.
    clients[0]
        .send(json!({"type": "unsubscribe", "id": "a"}))
        .await;
    clients[0]
        .send(json!({"type": "subscribe", "id": "c", "things": names}))
        .await;
    let frame = clients[0].next().await;
    assert_eq!(
        (&frame["type"], &frame["sub"]),
        (&json!("snapshot"), &json!("c")),
        "{frame}"
    );
    // A connection closed gives its place back.
    drop(clients.pop());
    let mut again = None;
    for _ in 0..100 {
        if let Ok(c) = ws::connect(&node, Some(&viewer)).await {
            again = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        again.is_some(),
        "the place of a closed connection is free again"
    );
}
