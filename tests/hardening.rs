//! Hostile input against a real `doppel serve`: a message the store could not hold, floods at
//! QoS 0 and 1, device times far ahead, refused telemetry, history that must match what was
//! acknowledged, a re-registered name, and a scoped key writing another type's rule. Each test
//! fails if the node goes back to wedging, growing or losing what it acknowledged.

use doppel_tests::{
    api::Api,
    device::{self, Device},
    node::{Node, Options},
};
use rumqttc::v5::{
    AsyncClient, Event, EventLoop, MqttOptions,
    mqttbytes::{
        QoS,
        v5::{Packet, PubAckReason},
    },
};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_doppel");

/// An MQTT 5 device: its client and event loop, driven by the test.
struct Device5 {
    client: AsyncClient,
    eventloop: EventLoop,
}

async fn connect5(node: &Node, thing: &str, token: &str) -> Device5 {
    let addr = node.mqtt();
    let mut options = MqttOptions::new(thing, addr.ip().to_string(), addr.port());
    options.set_credentials(thing, token);
    options.set_max_packet_size(Some(1 << 20));
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    tokio::time::timeout(device::WAIT, async {
        loop {
            if let Event::Incoming(Packet::ConnAck(_)) = eventloop.poll().await.expect("connects") {
                return;
            }
        }
    })
    .await
    .expect("a CONNACK");
    Device5 { client, eventloop }
}

impl Device5 {
    /// Publishes at QoS 1 and returns the PUBACK's reason.
    async fn publish(&mut self, topic: &str, payload: impl Into<Vec<u8>>) -> PubAckReason {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.into())
            .await
            .unwrap();
        tokio::time::timeout(device::WAIT, async {
            loop {
                match self
                    .eventloop
                    .poll()
                    .await
                    .expect("the connection stays up")
                {
                    Event::Incoming(Packet::PubAck(ack)) => return ack.reason,
                    _ => continue,
                }
            }
        })
        .await
        .expect("a PUBACK")
    }
}

async fn registered(node: &Node, thing: &str) -> Device {
    let token = node.register(thing).await;
    device::connect(node.mqtt(), thing, &token)
        .await
        .expect("device connects")
}

/// Every raw sample the history holds for `thing` (at most 10,000).
async fn history(node: &Node, thing: &str) -> Vec<Value> {
    let now = now_ms();
    let response = node
        .get(&format!(
            "/v1/things/{thing}/telemetry?from={}&to={}&limit=10000",
            now - 86_400_000,
            now + 86_400_000
        ))
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["samples"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("samples in {body}"))
}

fn one_host() -> Options {
    Options {
        config: Some("[node]\narbiters = 1\n".into()),
        ..Options::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sample_the_store_could_not_hold_is_refused_alone_and_the_host_keeps_serving() {
    // One host: the poison message and the other twins share its commit window.
    let mut node = Node::start(BIN, one_host());
    let token = node.register("atk").await;
    let mut attacker = connect5(&node, "atk", &token).await;
    let mut other = registered(&node, "bystander").await;

    // ~100 KB: under the 128 KiB packet limit, over what one stored value may hold.
    let big = format!("{{\"big\":\"{}\"}}", "x".repeat(100_000));
    let reason = attacker.publish("things/atk/telemetry", big).await;
    assert_eq!(reason, PubAckReason::QuotaExceeded, "refused for its size");

    // The twin on the same host is served at once, over MQTT and HTTP.
    let started = Instant::now();
    other
        .publish_acked("things/bystander/telemetry", &json!({"temp": 21}))
        .await;
    assert_eq!(
        node.shadow("bystander", None).await.1["state"]["reported"]["temp"],
        21
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "served within a second, not {:?}",
        started.elapsed()
    );
    // The refused sender is not wedged either, and nothing of the big sample was stored.
    assert_eq!(
        attacker
            .publish("things/atk/telemetry", r#"{"temp": 5}"#)
            .await,
        PubAckReason::Success
    );
    let samples = history(&node, "atk").await;
    assert_eq!(samples.len(), 1, "only the accepted sample: {samples:?}");
    let ready = node.get("/readyz").await;
    assert_eq!(ready.status(), 200);
    assert!(node.terminate().success(), "SIGTERM ends the node");
}

#[tokio::test(flavor = "multi_thread")]
async fn history_holds_every_acknowledged_sample() {
    let node = Node::start(BIN, Options::default());
    let mut d = registered(&node, "meter-1").await;
    // Back to back without `ts`: many share a millisecond.
    for i in 0..200 {
        d.publish("things/meter-1/telemetry", &json!({"n": i}))
            .await;
    }
    let mut acked = 0;
    while acked < 200 {
        if let device::Seen::PubAck(_) = d.next().await {
            acked += 1;
        }
    }
    assert_eq!(history(&node, "meter-1").await.len(), 200);

    // Three samples with one `ts` and different fields: three samples, every field kept.
    let now_ts = now_ms() - 1_000;
    for field in ["a", "b", "c"] {
        d.publish_acked("things/meter-1/telemetry", &json!({"ts": now_ts, field: 1}))
            .await;
    }
    let samples = history(&node, "meter-1").await;
    assert_eq!(samples.len(), 203);
    let at: Vec<&Value> = samples
        .iter()
        .filter(|s| s["ts"].as_u64() == Some(now_ts))
        .collect();
    let fields: Vec<String> = at
        .iter()
        .flat_map(|s| s["values"].as_object().unwrap().keys().cloned())
        .collect();
    assert_eq!(fields, ["a", "b", "c"], "{at:?}");
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test(flavor = "multi_thread")]
async fn device_times_far_ahead_are_refused_and_freeze_nothing() {
    let node = Node::start(BIN, Options::default());
    let token = node.register("clock-1").await;
    let mut d5 = connect5(&node, "clock-1", &token).await;
    assert_eq!(
        d5.publish("things/clock-1/telemetry", r#"{"temp": 20}"#)
            .await,
        PubAckReason::Success
    );
    for ts in ["253402300799999", "10000000000000000"] {
        let reason = d5
            .publish(
                "things/clock-1/telemetry",
                format!(r#"{{"ts": {ts}, "temp": 999}}"#),
            )
            .await;
        assert_eq!(reason, PubAckReason::PayloadFormatInvalid, "ts {ts}");
    }
    // Later samples, with or without `ts`, still apply.
    assert_eq!(
        d5.publish("things/clock-1/telemetry", r#"{"temp": 21}"#)
            .await,
        PubAckReason::Success
    );
    assert_eq!(
        node.shadow("clock-1", None).await.1["state"]["reported"]["temp"],
        21
    );
    assert_eq!(history(&node, "clock-1").await.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_telemetry_is_answered_with_its_reason_and_not_recorded() {
    let node = Node::start(BIN, Options::default());
    // MQTT 3.1.1: the PUBACK has no reason, the rejection arrives on …/telemetry/rejected.
    let mut d = registered(&node, "sensor-9").await;
    d.subscribe("things/sensor-9/telemetry/rejected").await;
    d.publish(
        "things/sensor-9/telemetry",
        &json!({"big": "x".repeat(9_000)}),
    )
    .await;
    let rejected = d.message_on("things/sensor-9/telemetry/rejected").await;
    assert_eq!(rejected["code"], 413, "{rejected}");
    let mut deep = json!(1);
    for _ in 0..100 {
        deep = json!({ "d": deep });
    }
    d.publish("things/sensor-9/telemetry", &json!({ "deep": deep }))
        .await;
    let rejected = d.message_on("things/sensor-9/telemetry/rejected").await;
    assert_eq!(rejected["code"], 400, "{rejected}");
    d.publish_raw("things/sensor-9/telemetry", b"{not json".to_vec())
        .await;
    let rejected = d.message_on("things/sensor-9/telemetry/rejected").await;
    assert_eq!(rejected["code"], 400, "{rejected}");
    // MQTT 5: the PUBACK says why.
    let token = {
        let api = Api::admin(&node);
        api.register("sensor-11", None).await
    };
    let mut d5 = connect5(&node, "sensor-11", &token).await;
    assert_eq!(
        d5.publish(
            "things/sensor-11/telemetry",
            json!({"big": "x".repeat(9_000)}).to_string()
        )
        .await,
        PubAckReason::QuotaExceeded
    );
    d.publish_acked("things/sensor-9/telemetry", &json!({"ok": 1}))
        .await;
    assert_eq!(
        history(&node, "sensor-9").await.len(),
        1,
        "only the accepted one"
    );
    assert!(history(&node, "sensor-11").await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_re_registered_name_starts_without_history() {
    let node = Node::start(BIN, Options::default());
    let api = Api::admin(&node);
    let mut d = registered(&node, "reused").await;
    for i in 0..3 {
        d.publish_acked("things/reused/telemetry", &json!({"n": i}))
            .await;
    }
    assert_eq!(history(&node, "reused").await.len(), 3);
    assert_eq!(api.delete("/v1/things/reused").await.0, 204);
    api.register("reused", None).await;
    assert!(history(&node, "reused").await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scoped_key_cannot_create_or_replace_rules_outside_its_types() {
    let node = Node::start(BIN, Options::default());
    let admin = Api::admin(&node);
    for t in ["Pump", "Fan"] {
        admin
            .put_type(t, json!({"schemas": {"telemetry": {"type": "object", "properties": {"temp": {"type": "number"}}}}}))
            .await;
    }
    let fan_rule = "rule fanrule for type Fan {\n  when (telemetry.temp ?? 0) > 30\n  then { alert Hot severity minor \"hot\" }\n}\n";
    let (status, _) = admin
        .put("/v1/rules/fanrule", json!({"source": fan_rule}))
        .await;
    assert_eq!(status, 201);
    let pump = Api::with(
        &node,
        Some(&admin.create_key("operator", Some(&["Pump"])).await),
    );
    let pump_rule = |name: &str| {
        format!(
            "rule {name} for type Pump {{\n  when (telemetry.temp ?? 0) > 90\n  then {{ alert Hot severity minor \"hot\" }}\n}}\n"
        )
    };
    // Replacing the Fan rule with a Pump rule of the same name: refused, rule unchanged.
    let (replace, body) = pump
        .put("/v1/rules/fanrule", json!({"source": pump_rule("fanrule")}))
        .await;
    assert_eq!(replace, 403, "{body}");
    // Creating a Fan rule: the same answer.
    let (create, created) = pump
        .put(
            "/v1/rules/otherfan",
            json!({"source": fan_rule.replace("fanrule", "otherfan")}),
        )
        .await;
    assert_eq!((create, &created["message"]), (403, &body["message"]));
    let (_, stored) = admin.get("/v1/rules/fanrule").await;
    assert_eq!(stored["source"], fan_rule);
    assert_eq!(admin.get("/v1/rules/otherfan").await.0, 404);
    // Within its scope it works.
    let (own, _) = pump
        .put(
            "/v1/rules/pumprule",
            json!({"source": pump_rule("pumprule")}),
        )
        .await;
    assert_eq!(own, 201);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_entry_from_the_future_is_refused_alone() {
    let node = Node::start(BIN, Options::default());
    let api = Api::admin(&node);
    let gateway_token = api.register("gw-9", None).await;
    let (status, _) = api
        .post(
            "/v1/things",
            json!({"name": "s-9", "attributes": {"gateway": "gw-9"}}),
        )
        .await;
    assert_eq!(status, 201);
    let mut gw = device::connect(node.mqtt(), "gw-9", &gateway_token)
        .await
        .expect("the gateway connects");
    gw.subscribe("gateways/gw-9/telemetry/rejected").await;
    gw.publish_acked(
        "gateways/gw-9/telemetry",
        &json!([
            {"thing": "s-9", "ts": 253_402_300_799_999u64, "values": {"temp": 999}},
            {"thing": "s-9", "values": {"temp": 20}},
        ]),
    )
    .await;
    let rejected = gw.message_on("gateways/gw-9/telemetry/rejected").await;
    assert_eq!(
        (&rejected["thing"], &rejected["code"]),
        (&json!("s-9"), &json!(400))
    );
    assert_eq!(
        node.shadow("s-9", None).await.1["state"]["reported"]["temp"],
        20,
        "the other entry applied, the future one froze nothing"
    );
    let samples = history(&node, "s-9").await;
    assert_eq!(samples.len(), 1, "{samples:?}");
}
