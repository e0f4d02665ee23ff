//! External broker mode: doppel behind Debian's Mosquitto running the configuration shipped in
//! `deploy/mosquitto/`. Shadows work through the broker, the broker keeps each device to its own
//! topics, doppel's persistent session picks up what devices sent while it was down, ingest
//! resumes after the broker restarts, and gateway batches work through the broker.

use doppel_tests::{
    broker::Mosquitto,
    device::{self, Device, WAIT},
    eventually,
    node::{Node, Options},
};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_doppel");

fn node_behind(broker: &Mosquitto) -> Node {
    Node::start(
        BIN,
        Options {
            args: vec!["--mqtt-url".into(), broker.doppel_url()],
            ..Options::default()
        },
    )
}

/// Registers `thing` with doppel and gives it a broker account with its token.
async fn enrol(node: &Node, broker: &Mosquitto, thing: &str) -> String {
    let token = node.register(thing).await;
    broker.add_user(thing, &token);
    token
}

/// Connects once Mosquitto has reloaded its accounts.
async fn connect(broker: &Mosquitto, thing: &str, token: &str) -> Device {
    eventually(WAIT, "the broker to accept the device", async || {
        device::connect(broker.addr, thing, token).await.ok()
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn shadows_work_through_mosquitto() {
    let broker = Mosquitto::start();
    let node = node_behind(&broker);
    let token = enrol(&node, &broker, "pump-1").await;
    let mut d = connect(&broker, "pump-1", &token).await;
    d.subscribe("$aws/things/pump-1/shadow/#").await;

    let accepted = d
        .request(
            "$aws/things/pump-1/shadow/update",
            &json!({"state": {"desired": {"speed": 2}}, "clientToken": "b1"}),
            "$aws/things/pump-1/shadow/update/accepted",
        )
        .await;
    assert_eq!(
        (
            accepted["version"].as_u64(),
            accepted["clientToken"].as_str()
        ),
        (Some(1), Some("b1"))
    );
    assert_eq!(
        d.message_on("$aws/things/pump-1/shadow/update/delta").await["state"],
        json!({"speed": 2})
    );

    let doc = d
        .request(
            "$aws/things/pump-1/shadow/get",
            &json!({}),
            "$aws/things/pump-1/shadow/get/accepted",
        )
        .await;
    assert_eq!(doc["state"]["desired"], json!({"speed": 2}));

    let r = d
        .request(
            "$aws/things/pump-1/shadow/update",
            &json!({"state": 5}),
            "$aws/things/pump-1/shadow/update/rejected",
        )
        .await;
    assert_eq!(
        (r["code"].as_u64(), r["message"].as_str()),
        (Some(400), Some("State node must be an object"))
    );

    d.publish("things/pump-1/telemetry", &json!({"speed": 2}))
        .await;
    let reported = eventually(WAIT, "telemetry to reach the twin", async || {
        let (_, doc) = node.shadow("pump-1", None).await;
        doc["state"]["reported"]["speed"].as_u64()
    })
    .await;
    assert_eq!(reported, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_shipped_configuration_keeps_devices_to_their_own_topics() {
    use rumqttc::v5::{
        AsyncClient, Event, MqttOptions,
        mqttbytes::{
            QoS,
            v5::{Packet, PubAckReason},
        },
    };
    let broker = Mosquitto::start();
    let node = node_behind(&broker);
    let victim_token = enrol(&node, &broker, "victim").await;
    let token = enrol(&node, &broker, "intruder").await;
    let mut victim = connect(&broker, "victim", &victim_token).await;
    drop(connect(&broker, "intruder", &token).await);

    let mut options =
        MqttOptions::new("intruder", broker.addr.ip().to_string(), broker.addr.port());
    options.set_credentials("intruder", token.clone());
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    // Publishing under another device's name is refused with a reason code.
    client
        .publish(
            "things/victim/telemetry",
            QoS::AtLeastOnce,
            false,
            r#"{"hijacked": true}"#,
        )
        .await
        .unwrap();
    client
        .publish(
            "things/intruder/telemetry",
            QoS::AtLeastOnce,
            false,
            r#"{"own": true}"#,
        )
        .await
        .unwrap();
    // Mosquitto grants any subscription and filters at delivery: the intruder listens to both.
    client
        .subscribe("$aws/things/victim/shadow/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    client
        .subscribe("$aws/things/intruder/shadow/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    #[derive(Default)]
    struct Seen {
        pubacks: Vec<PubAckReason>,
        subacks: usize,
        received: Vec<String>,
    }
    impl Seen {
        fn step(&mut self, event: Event) {
            match event {
                Event::Incoming(Packet::PubAck(a)) => self.pubacks.push(a.reason),
                Event::Incoming(Packet::SubAck(_)) => self.subacks += 1,
                Event::Incoming(Packet::Publish(p)) => self
                    .received
                    .push(String::from_utf8_lossy(&p.topic).into_owned()),
                _ => {}
            }
        }
    }
    let mut seen = Seen::default();
    tokio::time::timeout(WAIT, async {
        while seen.pubacks.len() < 2 || seen.subacks < 2 {
            seen.step(
                eventloop
                    .poll()
                    .await
                    .expect("the broker keeps the connection"),
            );
        }
    })
    .await
    .expect("acknowledgements from the broker");
    assert_eq!(
        seen.pubacks,
        vec![PubAckReason::NotAuthorized, PubAckReason::Success]
    );

    // The victim changes its shadow; doppel answers on the victim's topics…
    victim
        .subscribe("$aws/things/victim/shadow/update/accepted")
        .await;
    victim
        .request(
            "$aws/things/victim/shadow/update",
            &json!({"state": {"reported": {"secret": 42}}}),
            "$aws/things/victim/shadow/update/accepted",
        )
        .await;
    // …then on the intruder's. doppel publishes both through one connection, in this order, so
    // once the intruder has its own answer, a leaked answer would have arrived before it.
    client
        .publish(
            "$aws/things/intruder/shadow/get",
            QoS::AtLeastOnce,
            false,
            "{}",
        )
        .await
        .unwrap();
    tokio::time::timeout(WAIT, async {
        while !seen
            .received
            .iter()
            .any(|t| t == "$aws/things/intruder/shadow/get/accepted")
        {
            seen.step(
                eventloop
                    .poll()
                    .await
                    .expect("the broker keeps the connection"),
            );
        }
    })
    .await
    .expect("the intruder's own reply");
    assert!(
        !seen.received.iter().any(|t| t.contains("/victim/")),
        "the intruder received {:?}",
        seen.received
    );

    // The device's own telemetry got through; the message for another device did not.
    assert_eq!(
        node.shadow("intruder", None).await.1["state"]["reported"]["own"],
        true
    );
    assert_eq!(
        node.shadow("victim", None).await.1["state"]["reported"],
        json!({"secret": 42})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn messages_sent_while_doppel_is_down_arrive_when_it_returns() {
    let broker = Mosquitto::start();
    let mut node = node_behind(&broker);
    let token = enrol(&node, &broker, "meter-1").await;
    let d = connect(&broker, "meter-1", &token).await;
    node.kill9();
    // doppel's persistent session holds these until it reconnects.
    for kwh in 1..=20 {
        d.publish(
            "things/meter-1/telemetry",
            &json!({"ts": 1_000 + kwh, "kwh": kwh}),
        )
        .await;
    }
    node.restart();
    let kwh = eventually(WAIT, "the queued telemetry", async || {
        let (_, doc) = node.shadow("meter-1", None).await;
        doc["state"]["reported"]["kwh"]
            .as_u64()
            .filter(|k| *k == 20)
    })
    .await;
    assert_eq!(kwh, 20);
}

#[tokio::test(flavor = "multi_thread")]
async fn ingest_resumes_after_the_broker_restarts() {
    let mut broker = Mosquitto::start();
    let node = node_behind(&broker);
    let token = enrol(&node, &broker, "meter-2").await;
    let d = connect(&broker, "meter-2", &token).await;
    d.publish("things/meter-2/telemetry", &json!({"phase": "before"}))
        .await;
    eventually(WAIT, "telemetry before the restart", async || {
        node.shadow("meter-2", None).await.1["state"]["reported"]["phase"]
            .as_str()
            .filter(|p| *p == "before")
            .map(str::to_owned)
    })
    .await;
    drop(d);
    broker.restart();
    let d = connect(&broker, "meter-2", &token).await;
    // doppel reconnects on its own; keep publishing until a message gets through.
    eventually(WAIT, "telemetry after the broker restart", async || {
        d.publish("things/meter-2/telemetry", &json!({"phase": "after"}))
            .await;
        node.shadow("meter-2", None).await.1["state"]["reported"]["phase"]
            .as_str()
            .filter(|p| *p == "after")
            .map(str::to_owned)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn gateway_batches_work_through_mosquitto() {
    let broker = Mosquitto::start();
    let node = node_behind(&broker);
    let token = enrol(&node, &broker, "gw-m").await;
    let api = doppel_tests::api::Api::admin(&node);
    for (thing, gateway) in [("s-a", "gw-m"), ("s-b", "gw-other")] {
        let (status, reply) = api
            .post(
                "/v1/things",
                json!({"name": thing, "attributes": {"gateway": gateway}}),
            )
            .await;
        assert_eq!(status, 201, "{reply}");
    }
    let mut gw = connect(&broker, "gw-m", &token).await;
    gw.subscribe("gateways/gw-m/telemetry/rejected").await;
    gw.publish(
        "gateways/gw-m/telemetry",
        &json!([
            {"thing": "s-a", "ts": 1_000, "values": {"temp": 20.5}},
            {"thing": "s-b", "values": {"temp": 99}},
        ]),
    )
    .await;
    // The entry for another gateway's device is refused by name, through the broker.
    let refused = gw.message_on("gateways/gw-m/telemetry/rejected").await;
    assert_eq!(
        (refused["thing"].as_str(), refused["code"].as_u64()),
        (Some("s-b"), Some(403))
    );
    let reported = eventually(WAIT, "the batch to reach s-a's twin", async || {
        let (status, shadow) = node.shadow("s-a", None).await;
        (status == 200).then(|| shadow["state"]["reported"].clone())
    })
    .await;
    assert_eq!(reported, json!({"temp": 20.5}));
    assert_eq!(node.shadow("s-b", None).await.0, 404);
}
