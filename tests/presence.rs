//! Presence: a device's connect and disconnect reach apps as WebSocket `event` frames shaped
//! like AWS IoT's presence events (with the disconnect reason), and its connectivity shows on
//! `GET /v1/things/{name}`.

use doppel_tests::{
    api::Api,
    device,
    node::{ADMIN_TOKEN, Node, Options},
    until, ws,
};
use serde_json::{Value, json};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_doppel");

async fn presence(app: &mut ws::WsClient) -> Value {
    loop {
        let frame = app.next_of("event").await;
        if frame["rule"] == "presence" {
            return frame;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn connects_and_disconnects_reach_apps_with_their_reason() {
    let node = Node::start(BIN, Options::default());
    let admin = Api::admin(&node);
    let token = admin.register("door-1", None).await;
    let mut app = ws::connect(&node, Some(ADMIN_TOKEN)).await.unwrap();
    app.send(json!({"type": "subscribe", "id": "s", "things": ["door-1"]}))
        .await;
    app.send(json!({"type": "get", "id": "g", "thing": "door-1"}))
        .await;
    app.next().await; // subscribed once the get is answered

    let d = device::connect(node.mqtt(), "door-1", &token)
        .await
        .unwrap();
    let event = presence(&mut app).await;
    assert_eq!(event["kind"], "connected");
    assert_eq!(event["thing"], "door-1");
    assert_eq!(event["payload"]["eventType"], "connected");
    assert_eq!(event["payload"]["clientId"], "door-1");
    until(
        "connectivity recorded",
        Duration::from_secs(5),
        async || admin.get("/v1/things/door-1").await.1["connectivity"]["connected"] == true,
    )
    .await;

    // The same client id again: the new session connects, the first is taken over.
    let mut second = device::connect(node.mqtt(), "door-1", &token)
        .await
        .unwrap();
    let (one, two) = (presence(&mut app).await, presence(&mut app).await);
    let (connected, taken) = if one["kind"] == "connected" {
        (one, two)
    } else {
        (two, one)
    };
    assert_eq!(connected["kind"], "connected");
    assert_eq!(taken["kind"], "disconnected");
    assert_eq!(taken["payload"]["disconnectReason"], "DUPLICATE_CLIENTID");
    assert_eq!(taken["payload"]["clientInitiatedDisconnect"], false);
    drop(d);
    // The device is still connected, through its new session: the old one's end, reported
    // after the new connect, does not mark it offline.
    // (A negative: watched for a second and a half, far longer than the record's write takes;
    // before the fix it read offline within milliseconds.)
    let watch = std::time::Instant::now();
    while watch.elapsed() < Duration::from_millis(1_500) {
        let c = admin.get("/v1/things/door-1").await.1["connectivity"].clone();
        assert_eq!(
            c["connected"], true,
            "a taken-over session marked the device offline: {c}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A clean DISCONNECT.
    second.client.disconnect().await.unwrap();
    let event = presence(&mut app).await;
    assert_eq!(
        event["payload"]["disconnectReason"],
        "CLIENT_INITIATED_DISCONNECT"
    );
    assert_eq!(event["payload"]["clientInitiatedDisconnect"], true);
    // The record is written off the hot path (the blocking pool): give a loaded machine time.
    until(
        "disconnection recorded",
        Duration::from_secs(15),
        async || {
            let c = admin.get("/v1/things/door-1").await.1["connectivity"].clone();
            c["connected"] == false && c["disconnect_reason"] == "CLIENT_INITIATED_DISCONNECT"
        },
    )
    .await;
    let _ = second.drain();

    // Decommissioned while connected: closed for authorization.
    let _third = device::connect(node.mqtt(), "door-1", &token)
        .await
        .unwrap();
    assert_eq!(presence(&mut app).await["kind"], "connected");
    assert_eq!(admin.delete("/v1/things/door-1").await.0, 204);
    let event = presence(&mut app).await;
    assert_eq!(
        event["payload"]["disconnectReason"],
        "AUTHORIZATION_FAILURE"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rule_raises_an_alert_for_a_device_gone_too_long_and_resolves_it_on_return() {
    let node = Node::start(BIN, Options::default());
    let admin = Api::admin(&node);
    let token = admin.register("pump-3", None).await;
    let rule = r#"
rule offline for thing "pump-3" {
  when not device.connected for 2s
  then { alert Offline severity major "pump-3 is away" }
}
"#;
    let (status, body) = admin
        .put("/v1/rules/offline", json!({ "source": rule }))
        .await;
    assert_eq!(status, 201, "{body}");
    let mut app = ws::connect(&node, Some(ADMIN_TOKEN)).await.unwrap();
    app.send(json!({"type": "subscribe", "id": "s", "things": ["pump-3"]}))
        .await;
    app.send(json!({"type": "get", "id": "g", "thing": "pump-3"}))
        .await;
    app.next().await;

    let d = device::connect(node.mqtt(), "pump-3", &token)
        .await
        .unwrap();
    let states = || async {
        admin.get("/v1/alerts?thing=pump-3").await.1["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["name"] == "Offline")
            .map(|a| a["state"].as_str().unwrap_or_default().to_owned())
            .collect::<Vec<_>>()
    };
    // Connected: the rule saw it (its trace says so) and nothing fires.
    until(
        "the rule evaluated on connect",
        Duration::from_secs(5),
        async || {
            admin.get("/v1/things/pump-3/rules/trace").await.1["evaluations"]
                .as_array()
                .is_some_and(|e| e.iter().any(|e| e["trigger"] == "presence"))
        },
    )
    .await;
    assert!(states().await.is_empty());
    d.client.disconnect().await.unwrap();
    // Away for 2 s: the alert fires, and apps watching the twin see it.
    let fired = loop {
        let frame = app.next_of("event").await;
        if frame["kind"] == "alert" {
            break frame;
        }
    };
    assert_eq!(fired["payload"]["name"], "Offline", "{fired}");
    assert_eq!(fired["payload"]["state"], "firing", "{fired}");
    assert_eq!(states().await, ["firing"]);
    // Back: resolved.
    let _back = device::connect(node.mqtt(), "pump-3", &token)
        .await
        .unwrap();
    until(
        "the alert resolved on reconnect",
        Duration::from_secs(5),
        async || states().await == ["firing", "resolved"],
    )
    .await;
}
