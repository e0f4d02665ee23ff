//! The built-in MQTT endpoint against a real `doppel serve`: the AWS shadow topics on classic
//! and named shadows, telemetry, retries, and every refusal (credentials, other devices' topics,
//! malformed, oversized and too-deep payloads, version conflicts, keep-alive).

use doppel_tests::{
    device::{self, Device, Seen},
    node::{Node, Options},
};
use rumqttc::ConnectReturnCode;
use serde_json::{Value, json};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_doppel");

async fn registered_device(node: &Node, thing: &str) -> Device {
    let token = node.register(thing).await;
    device::connect(node.mqtt(), thing, &token)
        .await
        .expect("device connects")
}

/// The next message, whatever its topic.
async fn next_message(d: &mut Device) -> (String, Value) {
    loop {
        match d.next().await {
            Seen::Message(topic, payload) => {
                return (topic, serde_json::from_slice(&payload).unwrap());
            }
            Seen::Closed(e) => panic!("closed: {e}"),
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn shadow_get_update_delete_delta_and_documents_on_classic_and_named_shadows() {
    let node = Node::start(BIN, Options::default());
    let mut d = registered_device(&node, "pump-1").await;
    for (name, prefix) in [
        (None, "$aws/things/pump-1/shadow".to_owned()),
        (
            Some("config"),
            "$aws/things/pump-1/shadow/name/config".to_owned(),
        ),
    ] {
        let t = |suffix: &str| format!("{prefix}/{suffix}");
        assert_eq!(d.subscribe(&t("#")).await, vec![Some(1)]);

        let r = d
            .request(&t("get"), &json!({"clientToken": "g0"}), &t("get/rejected"))
            .await;
        assert_eq!(
            (r["code"].as_u64(), r["clientToken"].as_str()),
            (Some(404), Some("g0"))
        );

        d.publish(
            &t("update"),
            &json!({"state": {"desired": {"speed": 3, "mode": "eco"}}, "clientToken": "u1"}),
        )
        .await;
        let (topic, accepted) = next_message(&mut d).await;
        assert_eq!(topic, t("update/accepted"));
        assert_eq!(
            (
                accepted["version"].as_u64(),
                accepted["clientToken"].as_str()
            ),
            (Some(1), Some("u1"))
        );
        assert_eq!(
            accepted["state"],
            json!({"desired": {"speed": 3, "mode": "eco"}})
        );
        let (topic, delta) = next_message(&mut d).await;
        assert_eq!(topic, t("update/delta"));
        assert_eq!(delta["state"], json!({"speed": 3, "mode": "eco"}));
        let (topic, documents) = next_message(&mut d).await;
        assert_eq!(topic, t("update/documents"));
        assert_eq!(documents["current"]["version"], 1);
        assert!(documents.get("previous").is_none());

        // The device reports part of what was desired: the delta shrinks and is announced.
        d.publish(&t("update"), &json!({"state": {"reported": {"speed": 3}}}))
            .await;
        assert_eq!(next_message(&mut d).await.0, t("update/accepted"));
        let (topic, delta) = next_message(&mut d).await;
        assert_eq!(
            (topic, delta["state"].clone()),
            (t("update/delta"), json!({"mode": "eco"}))
        );
        let (_, documents) = next_message(&mut d).await;
        assert_eq!(documents["previous"]["state"]["desired"]["speed"], 3);
        assert_eq!(
            documents["current"]["state"]["reported"],
            json!({"speed": 3})
        );

        let (topic, doc) = {
            d.publish(&t("get"), &json!({})).await;
            next_message(&mut d).await
        };
        assert_eq!(topic, t("get/accepted"));
        assert_eq!(doc["state"]["delta"], json!({"mode": "eco"}));
        assert_eq!(doc["version"], 2);

        let (status, http_doc) = node.shadow("pump-1", name).await;
        assert_eq!(
            (status, http_doc["state"].clone()),
            (200, doc["state"].clone()),
            "HTTP serves the same document"
        );

        let deleted = d
            .request(
                &t("delete"),
                &json!({"clientToken": "d1"}),
                &t("delete/accepted"),
            )
            .await;
        assert_eq!(
            (deleted["version"].as_u64(), deleted["clientToken"].as_str()),
            (Some(2), Some("d1"))
        );
        let r = d.request(&t("get"), &json!({}), &t("get/rejected")).await;
        assert_eq!(r["code"], 404);
        assert_eq!(node.shadow("pump-1", name).await.0, 404);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn named_and_classic_shadows_are_independent() {
    let node = Node::start(BIN, Options::default());
    let mut d = registered_device(&node, "pump-2").await;
    d.subscribe("$aws/things/pump-2/shadow/#").await;
    d.request(
        "$aws/things/pump-2/shadow/update",
        &json!({"state": {"reported": {"a": 1}}}),
        "$aws/things/pump-2/shadow/update/accepted",
    )
    .await;
    let r = d
        .request(
            "$aws/things/pump-2/shadow/name/cfg/update",
            &json!({"state": {"reported": {"b": 1}}}),
            "$aws/things/pump-2/shadow/name/cfg/update/accepted",
        )
        .await;
    assert_eq!(r["version"], 1, "named shadows count their own versions");
    assert_eq!(
        node.shadow("pump-2", None).await.1["state"],
        json!({"reported": {"a": 1}})
    );
    assert_eq!(
        node.shadow("pump-2", Some("cfg")).await.1["state"],
        json!({"reported": {"b": 1}})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn conflicts_and_bad_updates_are_rejected_and_change_nothing() {
    let node = Node::start(BIN, Options::default());
    let mut d = registered_device(&node, "pump-3").await;
    d.subscribe("$aws/things/pump-3/shadow/update/+").await;
    let update = "$aws/things/pump-3/shadow/update";
    let rejected = "$aws/things/pump-3/shadow/update/rejected";
    d.request(
        update,
        &json!({"state": {"reported": {"keep": true}}}),
        "$aws/things/pump-3/shadow/update/accepted",
    )
    .await;
    let before = node.shadow("pump-3", None).await.1;

    let r = d
        .request(
            update,
            &json!({"state": {"reported": {"keep": false}}, "version": 7, "clientToken": "v"}),
            rejected,
        )
        .await;
    assert_eq!(
        (
            r["code"].as_u64(),
            r["message"].as_str(),
            r["clientToken"].as_str()
        ),
        (Some(409), Some("Version conflict"), Some("v"))
    );

    let r = d
        .request(
            update,
            &json!({"state": {"reported": {"big": "x".repeat(9000)}}}),
            rejected,
        )
        .await;
    assert_eq!(r["code"], 413);

    let deep = json!({"state": {"reported": {"a": {"b": {"c": {"d": {"e": {"f": {"g": 1}}}}}}}}});
    let r = d.request(update, &deep, rejected).await;
    assert_eq!(
        (r["code"].as_u64(), r["message"].as_str()),
        (
            Some(400),
            Some("JSON contains too many levels of nesting; maximum is 6")
        )
    );

    d.publish_raw(update, b"{not json".to_vec()).await;
    let r = d.message_on(rejected).await;
    assert_eq!(
        (r["code"].as_u64(), r["message"].as_str()),
        (Some(400), Some("Invalid JSON"))
    );

    d.publish_raw(
        update,
        b"{\"state\": {\"reported\": {\"s\": \"\xff\"}}}".to_vec(),
    )
    .await;
    assert_eq!(d.message_on(rejected).await["code"], 415);

    let mut after = node.shadow("pump-3", None).await.1;
    after["timestamp"] = before["timestamp"].clone();
    assert_eq!(after, before, "no rejected update changed the shadow");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repeated_client_token_is_answered_with_the_original_reply_and_applied_once() {
    let node = Node::start(BIN, Options::default());
    let mut d = registered_device(&node, "pump-4").await;
    d.subscribe("$aws/things/pump-4/shadow/update/accepted")
        .await;
    let update = json!({"state": {"reported": {"n": 1}}, "clientToken": "retry-me"});
    let first = d
        .request(
            "$aws/things/pump-4/shadow/update",
            &update,
            "$aws/things/pump-4/shadow/update/accepted",
        )
        .await;
    let again = d
        .request(
            "$aws/things/pump-4/shadow/update",
            &update,
            "$aws/things/pump-4/shadow/update/accepted",
        )
        .await;
    assert_eq!(first, again);
    assert_eq!(node.shadow("pump-4", None).await.1["version"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn telemetry_feeds_reported_and_older_samples_never_roll_it_back() {
    let node = Node::start(BIN, Options::default());
    let mut d = registered_device(&node, "meter-1").await;
    d.subscribe("$aws/things/meter-1/shadow/update/documents")
        .await;
    d.publish(
        "things/meter-1/telemetry",
        &json!({"ts": 2_000_000, "kwh": 10, "volts": 230}),
    )
    .await;
    d.message_on("$aws/things/meter-1/shadow/update/documents")
        .await;
    d.publish(
        "things/meter-1/telemetry",
        &json!({"ts": 1_000_000, "kwh": 5, "amps": 2}),
    )
    .await;
    let docs = d
        .message_on("$aws/things/meter-1/shadow/update/documents")
        .await;
    assert_eq!(
        docs["current"]["state"]["reported"],
        json!({"kwh": 10, "volts": 230, "amps": 2})
    );
    assert_eq!(
        node.shadow("meter-1", None).await.1["state"]["reported"]["kwh"],
        10
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_credentials_and_client_ids_are_refused() {
    let node = Node::start(BIN, Options::default());
    let token = node.register("pump-5").await;
    let addr = node.mqtt();
    assert_eq!(
        device::connect(addr, "pump-5", "wrong").await.err(),
        Some(ConnectReturnCode::BadUserNamePassword)
    );
    assert_eq!(
        device::connect(addr, "nobody", &token).await.err(),
        Some(ConnectReturnCode::BadUserNamePassword)
    );
    assert_eq!(
        device::connect_as(addr, "pump-6", "pump-5", &token)
            .await
            .err(),
        Some(ConnectReturnCode::BadClientId)
    );
    assert_eq!(
        device::connect_as(addr, "not/a/name", "not/a/name", &token)
            .await
            .err(),
        Some(ConnectReturnCode::BadClientId)
    );
    assert!(device::connect(addr, "pump-5", &token).await.is_ok());
    // AWS SDKs append a metrics query to the user name; it is ignored, the name before it counts.
    assert!(
        device::connect_as(addr, "pump-5", "pump-5?SDK=PythonV2&Version=1.31.0", &token)
            .await
            .is_ok()
    );
    assert_eq!(
        device::connect_as(addr, "pump-5", "pump-6?SDK=PythonV2", &token)
            .await
            .err(),
        Some(ConnectReturnCode::BadClientId)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn mqtt_3_1_1_devices_are_disconnected_for_other_devices_topics() {
    let node = Node::start(BIN, Options::default());
    node.register("victim").await;
    let mut d = registered_device(&node, "intruder").await;
    d.publish("things/victim/telemetry", &json!({"temp": 99}))
        .await;
    d.closed().await;
    assert_eq!(
        node.shadow("victim", None).await.0,
        404,
        "nothing reached the other twin"
    );

    let other = node.register("intruder2").await;
    let refused = device::connect(node.mqtt(), "intruder", &other).await.err();
    assert_eq!(
        refused,
        Some(ConnectReturnCode::BadUserNamePassword),
        "another thing's token does not log in"
    );

    let token = node.register("intruder3").await;
    let mut d = device::connect(node.mqtt(), "intruder3", &token)
        .await
        .unwrap();
    d.client
        .subscribe("$aws/things/victim/shadow/#", rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    d.closed().await;
    let mut d = device::connect(node.mqtt(), "intruder3", &token)
        .await
        .unwrap();
    d.client
        .subscribe("#", rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    d.closed().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mqtt_5_devices_get_not_authorized_reason_codes() {
    use rumqttc::v5::{
        AsyncClient, Event, MqttOptions,
        mqttbytes::{
            QoS,
            v5::{Packet, PubAckReason, SubscribeReasonCode},
        },
    };
    let node = Node::start(BIN, Options::default());
    node.register("victim").await;
    let token = node.register("intruder").await;
    let addr = node.mqtt();
    let mut options = MqttOptions::new("intruder", addr.ip().to_string(), addr.port());
    options.set_credentials("intruder", token);
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    client
        .subscribe("$aws/things/victim/shadow/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    client
        .publish(
            "things/victim/telemetry",
            QoS::AtLeastOnce,
            false,
            r#"{"t":1}"#,
        )
        .await
        .unwrap();
    client
        .subscribe("$aws/things/intruder/shadow/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    let (mut suback_codes, mut puback) = (Vec::new(), None);
    tokio::time::timeout(device::WAIT, async {
        while suback_codes.len() < 2 || puback.is_none() {
            match eventloop.poll().await.expect("the connection stays up") {
                Event::Incoming(Packet::SubAck(s)) => suback_codes.push(s.return_codes),
                Event::Incoming(Packet::PubAck(a)) => puback = Some(a.reason),
                _ => {}
            }
        }
    })
    .await
    .expect("SUBACKs and a PUBACK");
    assert_eq!(suback_codes[0], vec![SubscribeReasonCode::NotAuthorized]);
    assert_eq!(
        suback_codes[1],
        vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );
    assert_eq!(puback, Some(PubAckReason::NotAuthorized));
    assert_eq!(node.shadow("victim", None).await.0, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_packets_close_the_connection() {
    let node = Node::start(
        BIN,
        Options {
            config: Some("[node.mqtt]\nmax_packet_size = 4096\n".into()),
            ..Options::default()
        },
    );
    let mut d = registered_device(&node, "big-1").await;
    d.publish_raw("things/big-1/telemetry", vec![b' '; 8000])
        .await;
    d.closed().await;
    assert_eq!(node.shadow("big-1", None).await.0, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn silent_devices_are_disconnected_after_one_and_a_half_keep_alives() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let node = Node::start(BIN, Options::default());
    let token = node.register("quiet-1").await;
    // A raw client that connects with keep-alive 1 s and then sends nothing, not even PINGREQ.
    let mut connect = rumqttc::mqttbytes::v4::Connect::new("quiet-1");
    connect.keep_alive = 1;
    connect.set_login("quiet-1", token);
    let mut bytes = bytes::BytesMut::new();
    rumqttc::mqttbytes::v4::Packet::Connect(connect)
        .write(&mut bytes, usize::MAX)
        .unwrap();
    let mut stream = tokio::net::TcpStream::connect(node.mqtt()).await.unwrap();
    stream.write_all(&bytes).await.unwrap();
    let started = tokio::time::Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the endpoint closes a silent connection");
    assert_eq!(
        &buf[..4],
        &[0x20, 0x02, 0x00, 0x00],
        "CONNACK accepted, then nothing but the close"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "not before 1.5 × keep-alive"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_connection_takes_the_session_over() {
    let node = Node::start(BIN, Options::default());
    let token = node.register("dup-1").await;
    let mut first = device::connect(node.mqtt(), "dup-1", &token).await.unwrap();
    let mut second = device::connect(node.mqtt(), "dup-1", &token).await.unwrap();
    first.closed().await;
    second.subscribe("$aws/things/dup-1/shadow/get/+").await;
    let r = second
        .request(
            "$aws/things/dup-1/shadow/get",
            &json!({}),
            "$aws/things/dup-1/shadow/get/rejected",
        )
        .await;
    assert_eq!(r["code"], 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn gateways_send_batches_for_their_own_devices_only() {
    let node = Node::start(BIN, Options::default());
    let api = doppel_tests::api::Api::admin(&node);
    let gateway_token = api.register("gw-1", None).await;
    for (thing, gateway) in [("s-1", "gw-1"), ("s-2", "gw-1"), ("s-3", "gw-2")] {
        let (status, reply) = api
            .post(
                "/v1/things",
                json!({"name": thing, "attributes": {"gateway": gateway}}),
            )
            .await;
        assert_eq!(status, 201, "{reply}");
    }
    let mut gw = device::connect(node.mqtt(), "gw-1", &gateway_token)
        .await
        .expect("the gateway connects");
    gw.subscribe("gateways/gw-1/telemetry/rejected").await;
    // The PUBACK comes once every entry is committed.
    gw.publish_acked(
        "gateways/gw-1/telemetry",
        &json!([
            {"thing": "s-1", "ts": 1_000, "values": {"temp": 20}},
            {"thing": "s-2", "values": {"temp": 21, "hum": 40}},
            {"thing": "s-1", "ts": 2_000, "values": {"temp": 22}},
            {"thing": "s-3", "values": {"temp": 99}},
            {"thing": "nobody", "values": {"temp": 99}},
        ]),
    )
    .await;
    let s1 = node.shadow("s-1", None).await.1;
    assert_eq!(s1["state"]["reported"], json!({"temp": 22}));
    assert_eq!(
        node.shadow("s-2", None).await.1["state"]["reported"],
        json!({"temp": 21, "hum": 40})
    );
    // A device registered under another gateway, and an unknown thing, are refused by name.
    let mut refused = Vec::new();
    for _ in 0..2 {
        let r = gw.message_on("gateways/gw-1/telemetry/rejected").await;
        refused.push((
            r["thing"].as_str().unwrap().to_owned(),
            r["code"].as_u64().unwrap(),
        ));
    }
    refused.sort();
    assert_eq!(
        refused,
        vec![("nobody".to_owned(), 404), ("s-3".to_owned(), 403)]
    );
    assert_eq!(node.shadow("s-3", None).await.0, 404, "s-3 has no shadow");
    // A malformed batch is refused whole: nothing of it is applied.
    gw.publish_acked(
        "gateways/gw-1/telemetry",
        &json!([{"thing": "s-1", "values": {"temp": 50}}, {"thing": "s-2", "values": 7}]),
    )
    .await;
    gw.publish_acked("gateways/gw-1/telemetry", &json!({"not": "an array"}))
        .await;
    assert_eq!(
        node.shadow("s-1", None).await.1["state"]["reported"],
        json!({"temp": 22})
    );
    // A gateway publishes only on its own gateway topic.
    gw.publish(
        "gateways/gw-2/telemetry",
        &json!([{"thing": "s-3", "values": {"temp": 1}}]),
    )
    .await;
    gw.closed().await;
    assert_eq!(node.shadow("s-3", None).await.0, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn commits_stay_within_their_window_while_work_piles_up() {
    // A burst activating 2,000 twins at once (activation hands them to the host 256 at a time)
    // must not grow a commit past `commit_max_twins`: work that arrives while the window is full
    // and a commit is in flight waits for the next window. Before, windows grew while commits
    // were slow, until one exceeded the store's transaction limit and never committed.
    let node = Node::start(
        BIN,
        Options {
            config: Some("[node]\ncommit_max_twins = 10\n".into()),
            ..Options::default()
        },
    );
    let api = doppel_tests::api::Api::admin(&node);
    let token = api.register("gw-big", None).await;
    let things: Vec<Value> = (0..2000)
        .map(|i| json!({"name": format!("big-{i}"), "attributes": {"gateway": "gw-big"}}))
        .collect();
    let (status, reply) = api
        .post("/v1/things/bulk", json!({ "things": things }))
        .await;
    assert_eq!(status, 201, "{reply}");
    let mut gw = device::connect(node.mqtt(), "gw-big", &token)
        .await
        .unwrap();
    for batch in 0..20 {
        let entries: Vec<Value> = (0..100)
            .map(|k| json!({"thing": format!("big-{}", batch * 100 + k), "values": {"n": k}}))
            .collect();
        gw.publish("gateways/gw-big/telemetry", &json!(entries))
            .await;
    }
    let mut acked = 0;
    while acked < 20 {
        match gw.next().await {
            Seen::PubAck(_) => acked += 1,
            Seen::Closed(e) => panic!("closed: {e}"),
            _ => {}
        }
    }
    assert_eq!(
        node.shadow("big-1999", None).await.1["state"]["reported"]["n"],
        99
    );
    let metrics = node.get("/metrics").await.text().await.unwrap();
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in {metrics}"))
    };
    let commits = value("doppel_commit_twins_count");
    assert!(
        commits >= 200.0,
        "2,000 twins in windows of 10: {commits} commits; {:?}",
        metrics
            .lines()
            .filter(|l| l.starts_with("doppel_commit_twins"))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        value("doppel_commit_twins_bucket{le=\"10\"}"),
        commits,
        "every commit held at most 10 twins"
    );
}
