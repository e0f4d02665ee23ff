//! Per-device limits on the MQTT endpoint: at most `max_shadow_inflight` shadow requests of a
//! connection wait for their twin (beyond: AWS IoT's 429 on `…/rejected`), a device's publish
//! rate (beyond: the connection closes, 3.1.1), and connections per client id (a reconnect
//! storm is refused at the CONNACK) — each refusal counted in `/metrics`.

use doppel_tests::{
    api::Api,
    device::{self, Seen},
    node::{Node, Options},
};
use serde_json::json;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_doppel");

fn node(config: &str) -> Node {
    Node::start(
        BIN,
        Options {
            config: Some(config.to_owned()),
            ..Options::default()
        },
    )
}

async fn throttled(node: &Node, kind: &str) -> f64 {
    let metrics = node.get("/metrics").await.text().await.unwrap();
    let prefix = format!("doppel_mqtt_throttled_total{{kind=\"{kind}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn more_than_ten_shadow_requests_in_flight_get_429() {
    // A long commit window keeps the requests waiting for their twin.
    let node = node("[node]\ncommit_window = \"500ms\"\n");
    let token = Api::admin(&node).register("pump-1", None).await;
    let mut d = device::connect(node.mqtt(), "pump-1", &token)
        .await
        .unwrap();
    d.subscribe("$aws/things/pump-1/shadow/update/+").await;
    for i in 0..15 {
        d.publish(
            "$aws/things/pump-1/shadow/update",
            &json!({"state": {"reported": {"n": i}}, "clientToken": format!("t{i}")}),
        )
        .await;
    }
    let (mut accepted, mut refused) = (0, Vec::new());
    let deadline = Instant::now() + Duration::from_secs(10);
    while accepted + refused.len() < 15 {
        assert!(
            Instant::now() < deadline,
            "{accepted} accepted, {refused:?}"
        );
        if let Seen::Message(topic, payload) = d.next().await {
            let body: serde_json::Value = serde_json::from_slice(&payload).unwrap();
            if topic.ends_with("/accepted") {
                accepted += 1;
            } else if topic.ends_with("/rejected") {
                refused.push(body["code"].as_u64().unwrap());
            }
        }
    }
    assert_eq!(accepted, 10, "refused: {refused:?}");
    assert_eq!(refused, vec![429; 5]);
    assert_eq!(throttled(&node, "shadow_inflight").await, 5.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_device_over_its_publish_rate_is_disconnected() {
    let node = node("[node.mqtt]\nmax_publish_rate = 5.0\n");
    let token = Api::admin(&node).register("chatty-1", None).await;
    let mut d = device::connect(node.mqtt(), "chatty-1", &token)
        .await
        .unwrap();
    for i in 0..20 {
        let _ = d
            .client
            .publish(
                "things/chatty-1/telemetry",
                rumqttc::QoS::AtMostOnce,
                false,
                json!({"n": i}).to_string(),
            )
            .await;
    }
    let why = tokio::time::timeout(Duration::from_secs(10), d.closed())
        .await
        .expect("the node closes the connection");
    assert!(!why.is_empty());
    assert!(throttled(&node, "publish").await >= 1.0);
    // The disconnect is audited with its reason.
    let admin = Api::admin(&node);
    doppel_tests::until("the audit entry", Duration::from_secs(5), async || {
        let (_, audit) = admin.get("/v1/audit?limit=100").await;
        audit["entries"].as_array().is_some_and(|entries| {
            entries.iter().any(|e| {
                e["action"] == "device.disconnect"
                    && e["target"] == "chatty-1"
                    && e["details"]["reason"] == "THROTTLED"
            })
        })
    })
    .await;
    // Within its rate, the same device is fine.
    let mut d = device::connect(node.mqtt(), "chatty-1", &token)
        .await
        .unwrap();
    d.publish_acked("things/chatty-1/telemetry", &json!({"n": 1}))
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_device_type_can_have_its_own_publish_rate() {
    // Meters may send 5 a second; everything else keeps the default.
    let node = node("[node.mqtt.publish_rate_by_type]\nMeter = 5.0\n");
    let admin = Api::admin(&node);
    admin.put_type("Meter", json!({})).await;
    let meter = admin.register("meter-7", Some("Meter")).await;
    let other = admin.register("camera-7", None).await;
    let mut d = device::connect(node.mqtt(), "meter-7", &meter)
        .await
        .unwrap();
    for i in 0..20 {
        let _ = d
            .client
            .publish(
                "things/meter-7/telemetry",
                rumqttc::QoS::AtMostOnce,
                false,
                json!({"n": i}).to_string(),
            )
            .await;
    }
    tokio::time::timeout(Duration::from_secs(10), d.closed())
        .await
        .expect("the meter over its type's rate is stopped");
    // The same burst is within the default 2,000/s: an untyped device stays connected.
    let mut d = device::connect(node.mqtt(), "camera-7", &other)
        .await
        .unwrap();
    for i in 0..20 {
        d.publish_acked("things/camera-7/telemetry", &json!({"n": i}))
            .await;
    }
    assert!(throttled(&node, "publish").await >= 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reconnect_storm_is_refused_at_the_connack() {
    let node = node("[node.mqtt]\nconnect_burst = 3.0\nmax_connect_rate = 0.01\n");
    let admin = Api::admin(&node);
    let token = admin.register("storm-1", None).await;
    let other = admin.register("calm-1", None).await;
    for _ in 0..3 {
        let d = device::connect(node.mqtt(), "storm-1", &token)
            .await
            .unwrap();
        drop(d);
    }
    let refused = device::connect(node.mqtt(), "storm-1", &token).await;
    assert!(
        refused.is_err(),
        "the fourth connection in a burst is refused"
    );
    assert_eq!(throttled(&node, "connect").await, 1.0);
    // Another device is not affected.
    assert!(device::connect(node.mqtt(), "calm-1", &other).await.is_ok());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_endpoint_and_the_http_listener_hold_a_bounded_number_of_connections() {
    use tokio::io::AsyncReadExt;
    let node = node("[node.mqtt]\nmax_connections = 3\n[http]\nmax_connections = 2\n");
    let admin = Api::admin(&node);
    let mut tokens = Vec::new();
    for i in 0..4 {
        tokens.push(admin.register(&format!("conn-{i}"), None).await);
    }
    let mut held = Vec::new();
    for (i, token) in tokens.iter().enumerate().take(3) {
        held.push(
            device::connect(node.mqtt(), &format!("conn-{i}"), token)
                .await
                .unwrap(),
        );
    }
    // The fourth is closed at once; the node says why in /metrics.
    assert!(
        device::try_connect(node.mqtt(), "conn-3", &tokens[3])
            .await
            .is_err()
    );
    // One leaves: there is room again.
    let first = held.remove(0);
    first.client.disconnect().await.unwrap();
    doppel_tests::until("a free connection", Duration::from_secs(10), async || {
        device::try_connect(node.mqtt(), "conn-3", &tokens[3])
            .await
            .is_ok()
    })
    .await;
    // HTTP: two idle connections fill the listener; a third is closed unanswered.
    let mut idle = Vec::new();
    for _ in 0..2 {
        idle.push(tokio::net::TcpStream::connect(node.http).await.unwrap());
    }
    let mut third = tokio::net::TcpStream::connect(node.http).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf))
        .await
        .expect("the third connection is closed, not left waiting");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    drop(idle);
    drop(third);
    // Room again once the node has seen the idle connections go: probed with plain sockets and
    // deadlines (an HTTP client's pool may wait on a connection the node refused).
    doppel_tests::until(
        "the HTTP listener to take a connection again",
        Duration::from_secs(20),
        async || {
            use tokio::io::AsyncWriteExt;
            let probe = async {
                let mut s = tokio::net::TcpStream::connect(node.http).await.ok()?;
                s.write_all(b"GET /healthz HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\r\n")
                    .await
                    .ok()?;
                let mut answer = Vec::new();
                s.read_to_end(&mut answer).await.ok()?;
                Some(answer.starts_with(b"HTTP/1.1 200"))
            };
            tokio::time::timeout(Duration::from_secs(2), probe)
                .await
                .ok()
                .flatten()
                .unwrap_or(false)
        },
    )
    .await;
    let metrics = doppel_tests::eventually(
        Duration::from_secs(10),
        "the HTTP listener to answer again",
        async || {
            let response = node
                .client()
                .get(node.url("/metrics"))
                .bearer_auth(doppel_tests::node::ADMIN_TOKEN)
                .send()
                .await
                .ok()?;
            response.text().await.ok()
        },
    )
    .await;
    assert!(
        metrics.contains("doppel_mqtt_refused_total{reason=\"connections\"}"),
        "the refusal is counted: {}",
        metrics
            .lines()
            .filter(|l| l.contains("refused"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        metrics.contains("doppel_http_refused_total{reason=\"connections\"}"),
        "the refusal is counted"
    );
}
