//! The WebSocket change stream with a real client (tokio-tungstenite) against a running node:
//! snapshots then changes in version order, updates and reads over the socket, roles and
//! scopes, type and attribute subscriptions, resume with `since`, limits, heartbeats, and a
//! client that stops reading.

use doppel_tests::{
    api::Api,
    device::{self, WAIT},
    eventually,
    node::{ADMIN_TOKEN, Node, Options},
    ws::{self, Incoming, WsClient},
};
use serde_json::{Value, json};
use std::{collections::BTreeSet, time::Duration};

const BIN: &str = env!("CARGO_BIN_EXE_doppel");

/// The next frame about `thing` that is a `change` or `resync`.
async fn next_about(ws: &mut WsClient, thing: &str) -> Value {
    loop {
        let frame = ws.next().await;
        if frame["thing"] == thing && (frame["type"] == "change" || frame["type"] == "resync") {
            return frame;
        }
    }
}

/// Sends `get` with an id and returns its answer: once it arrives, every frame the client sent
/// before it has been handled (the node handles a connection's frames in order).
async fn round_trip(ws: &mut WsClient, thing: &str) -> Value {
    ws.send(json!({"type": "get", "id": "sync", "thing": thing}))
        .await;
    loop {
        let frame = ws.next().await;
        if frame["id"] == "sync" {
            return frame;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_device_update_reaches_subscribers_as_the_next_version() {
    let node = Node::start(BIN, Options::default());
    let admin = Api::admin(&node);
    let token = admin.register("pump-7", None).await;
    let mut d = device::connect(node.mqtt(), "pump-7", &token)
        .await
        .unwrap();
    d.subscribe("$aws/things/pump-7/shadow/update/#").await;
    d.request(
        "$aws/things/pump-7/shadow/update",
        &json!({"state": {"reported": {"rpm": 1}}}),
        "$aws/things/pump-7/shadow/update/accepted",
    )
    .await;

    let mut ws = ws::connect(&node, Some(ADMIN_TOKEN)).await.unwrap();
    ws.send(json!({"type": "subscribe", "id": "s1", "things": ["pump-7"]}))
        .await;
    let snapshot = ws.next().await;
    assert_eq!(
        (
            &snapshot["type"],
            &snapshot["sub"],
            &snapshot["thing"],
            &snapshot["version"],
            &snapshot["state"]["reported"]
        ),
        (
            &json!("snapshot"),
            &json!("s1"),
            &json!("pump-7"),
            &json!(1),
            &json!({"rpm": 1})
        )
    );

    d.publish(
        "$aws/things/pump-7/shadow/update",
        &json!({"state": {"reported": {"rpm": 2}}}),
    )
    .await;
    let change = ws.next().await;
    assert_eq!(change["type"], "change", "{change}");
    assert_eq!(change["sub"], "s1");
    assert_eq!(change["thing"], "pump-7");
    assert_eq!(change["shadow"], "");
    assert_eq!(change["version"], 2);
    assert_eq!(change["changed"], json!({"reported": {"rpm": 2}}));
    assert!(change["ts"].as_u64().is_some());

    // An app writes desired state over the socket: acknowledged with the new version, pushed
    // to subscribers with the delta, and delivered to the device.
    ws.send(json!({"type": "update", "id": "u1", "thing": "pump-7", "desired": {"rpm": 5}}))
        .await;
    let mut frames = vec![ws.next().await, ws.next().await];
    frames.sort_by_key(|f| f["type"].as_str().map(str::to_owned));
    let [ack, change] = <[Value; 2]>::try_from(frames).unwrap();
    assert_eq!(
        ack,
        json!({"type": "ack", "id": "u1", "thing": "pump-7", "shadow": "", "version": 3})
    );
    assert_eq!(
        (&change["version"], &change["changed"], &change["delta"]),
        (
            &json!(3),
            &json!({"desired": {"rpm": 5}}),
            &json!({"rpm": 5})
        )
    );
    let delta = d.message_on("$aws/things/pump-7/shadow/update/delta").await;
    assert_eq!(
        (&delta["state"], &delta["version"]),
        (&json!({"rpm": 5}), &json!(3))
    );

    // A stale version is refused, and the shadow keeps its state.
    ws.send(json!({"type": "update", "id": "u2", "thing": "pump-7", "desired": {"rpm": 9}, "version": 1}))
        .await;
    let refused = ws.next().await;
    assert_eq!(
        (&refused["type"], &refused["id"], &refused["code"]),
        (&json!("error"), &json!("u2"), &json!("version_conflict"))
    );
    ws.send(json!({"type": "get", "id": "g1", "thing": "pump-7"}))
        .await;
    let current = ws.next().await;
    assert_eq!(
        (
            &current["type"],
            &current["id"],
            &current["version"],
            &current["state"]["desired"]
        ),
        (
            &json!("snapshot"),
            &json!("g1"),
            &json!(3),
            &json!({"rpm": 5})
        )
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn upgrades_need_a_key_and_writes_need_the_operator_role() {
    let node = Node::start(BIN, Options::default());
    let admin = Api::admin(&node);
    admin.register("t-1", None).await;
    admin
        .patch(
            "/v1/things/t-1/shadow",
            json!({"state": {"desired": {"on": true}}}),
        )
        .await;
    assert_eq!(ws::connect(&node, None).await.unwrap_err().as_u16(), 401);
    assert_eq!(
        ws::connect(&node, Some("dk_0000_beef"))
            .await
            .unwrap_err()
            .as_u16(),
        401
    );

    let viewer = admin.create_key("viewer", None).await;
    let mut ws = ws::connect(&node, Some(&viewer)).await.unwrap();
    ws.send(json!({"type": "update", "id": "u1", "thing": "t-1", "desired": {"on": false}}))
        .await;
    let refused = ws.next().await;
    assert_eq!(
        (&refused["type"], &refused["id"], &refused["code"]),
        (&json!("error"), &json!("u1"), &json!("forbidden"))
    );

    // Bad frames get an error and leave the connection usable.
    ws.send_text("{not json").await;
    assert_eq!(ws.next().await["code"], "invalid_request");
    ws.send(json!({"type": "launch", "id": "x"})).await;
    assert_eq!(ws.next().await["code"], "invalid_request");
    ws.send(json!({"type": "get", "id": "g0", "thing": "nobody"}))
        .await;
    let missing = ws.next().await;
    assert_eq!(
        (&missing["id"], &missing["code"]),
        (&json!("g0"), &json!("not_found"))
    );
    ws.send(json!({"type": "subscribe", "id": "s", "things": ["nobody"]}))
        .await;
    assert_eq!(ws.next().await["code"], "not_found");

    let current = round_trip(&mut ws, "t-1").await;
    assert_eq!(
        (&current["version"], &current["state"]["desired"]),
        (&json!(1), &json!({"on": true})),
        "the viewer's update changed nothing"
    );

    let operator = admin.create_key("operator", None).await;
    let mut ws = ws::connect(&node, Some(&operator)).await.unwrap();
    ws.send(json!({"type": "update", "id": "u1", "thing": "t-1", "desired": {"on": false}}))
        .await;
    assert_eq!(ws.next_of("ack").await["version"], 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scoped_key_sees_only_its_types_over_the_socket() {
    let node = Node::start(BIN, Options::default());
    let admin = Api::admin(&node);
    admin.put_type("Pump", json!({})).await;
    admin.put_type("Valve", json!({})).await;
    admin.register("p-1", Some("Pump")).await;
    admin.register("v-1", Some("Valve")).await;
    let pumps = admin.create_key("operator", Some(&["Pump"])).await;
    let mut ws = ws::connect(&node, Some(&pumps)).await.unwrap();

    ws.send(json!({"type": "subscribe", "id": "a", "things": ["v-1"]}))
        .await;
    assert_eq!(ws.next().await["code"], "not_found");
    ws.send(json!({"type": "subscribe", "id": "b", "thing_type": "Valve"}))
        .await;
    assert_eq!(ws.next().await["code"], "forbidden");
    ws.send(json!({"type": "get", "id": "g", "thing": "v-1"}))
        .await;
    assert_eq!(ws.next().await["code"], "not_found");
    ws.send(json!({"type": "update", "id": "u", "thing": "v-1", "desired": {"open": true}}))
        .await;
    assert_eq!(ws.next().await["code"], "not_found");

    // Subscribed to everything it may see: the valve's change never arrives, the pump's does.
    ws.send(json!({"type": "subscribe", "id": "all"})).await;
    round_trip(&mut ws, "p-1").await;
    for thing in ["v-1", "p-1"] {
        let (status, _) = admin
            .patch(
                &format!("/v1/things/{thing}/shadow"),
                json!({"state": {"desired": {"x": 1}}}),
            )
            .await;
        assert_eq!(status, 200);
    }
    let change = ws.next().await;
    assert_eq!(
        (&change["type"], &change["sub"], &change["thing"]),
        (&json!("change"), &json!("all"), &json!("p-1"))
    );
    let (_, valve) = admin.get("/v1/things/v-1/shadow").await;
    assert_eq!(valve["version"], 1, "the scoped update changed nothing");
}

#[tokio::test(flavor = "multi_thread")]
async fn subscriptions_select_by_type_and_attributes() {
    let node = Node::start(BIN, Options::default());
    let admin = Api::admin(&node);
    admin.put_type("Pump", json!({})).await;
    admin.put_type("Valve", json!({})).await;
    for (name, device_type, site) in [
        ("a", "Pump", "berlin"),
        ("b", "Pump", "paris"),
        ("c", "Valve", "berlin"),
        ("d", "Valve", "paris"),
    ] {
        let (status, body) = admin
            .post(
                "/v1/things",
                json!({"name": name, "type": device_type, "attributes": {"site": site}}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let mut ws = ws::connect(&node, Some(ADMIN_TOKEN)).await.unwrap();
    ws.send(json!({"type": "subscribe", "id": "pumps", "thing_type": "Pump"}))
        .await;
    ws.send(json!({"type": "subscribe", "id": "berlin", "filter": {"site": "berlin"}}))
        .await;
    round_trip(&mut ws, "a").await;
    for thing in ["d", "c", "b", "a"] {
        admin
            .patch(
                &format!("/v1/things/{thing}/shadow"),
                json!({"state": {"desired": {"x": 1}}}),
            )
            .await;
    }
    let mut seen = BTreeSet::new();
    for _ in 0..4 {
        let change = ws.next_of("change").await;
        seen.insert((
            change["sub"].as_str().unwrap().to_owned(),
            change["thing"].as_str().unwrap().to_owned(),
        ));
    }
    let expected: BTreeSet<(String, String)> = [
        ("berlin", "c"),
        ("pumps", "b"),
        ("pumps", "a"),
        ("berlin", "a"),
    ]
    .into_iter()
    .map(|(s, t)| (s.to_owned(), t.to_owned()))
    .collect();
    assert_eq!(seen, expected);

    // After an attribute change, the thing moves in or out of filtered subscriptions.
    admin
        .patch("/v1/things/d", json!({"attributes": {"site": "berlin"}}))
        .await;
    admin
        .patch(
            "/v1/things/d/shadow",
            json!({"state": {"desired": {"x": 2}}}),
        )
        .await;
    let change = ws.next_of("change").await;
    assert_eq!(
        (&change["sub"], &change["thing"], &change["version"]),
        (&json!("berlin"), &json!("d"), &json!(2))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reconnecting_with_since_sends_only_what_changed() {
    let node = Node::start(BIN, Options::default());
    let admin = Api::admin(&node);
    for thing in ["a", "b"] {
        admin.register(thing, None).await;
        admin
            .patch(
                &format!("/v1/things/{thing}/shadow"),
                json!({"state": {"desired": {"n": 1}}}),
            )
            .await;
    }
    let mut ws = ws::connect(&node, Some(ADMIN_TOKEN)).await.unwrap();
    ws.send(json!({"type": "subscribe", "id": "s", "things": ["a", "b"]}))
        .await;
    let first = [ws.next().await, ws.next().await];
    let versions: BTreeSet<(String, u64)> = first
        .iter()
        .map(|f| {
            assert_eq!(f["type"], "snapshot");
            (
                f["thing"].as_str().unwrap().to_owned(),
                f["version"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(versions, [("a".into(), 1), ("b".into(), 1)].into());
    drop(ws);

    // While the app is away, `a` changes.
    admin
        .patch(
            "/v1/things/a/shadow",
            json!({"state": {"desired": {"n": 2}}}),
        )
        .await;
    let mut ws = ws::connect(&node, Some(ADMIN_TOKEN)).await.unwrap();
    ws.send(
        json!({"type": "subscribe", "id": "s", "things": ["a", "b"], "since": {"a": 1, "b": 1}}),
    )
    .await;
    let caught_up = ws.next().await;
    assert_eq!(
        (
            &caught_up["type"],
            &caught_up["thing"],
            &caught_up["version"],
            &caught_up["state"]["desired"]
        ),
        (&json!("snapshot"), &json!("a"), &json!(2), &json!({"n": 2}))
    );
    // `b` did not change, so it got no snapshot; its next change arrives as a change.
    admin
        .patch(
            "/v1/things/b/shadow",
            json!({"state": {"desired": {"n": 2}}}),
        )
        .await;
    let change = ws.next().await;
    assert_eq!(
        (&change["type"], &change["thing"], &change["version"]),
        (&json!("change"), &json!("b"), &json!(2))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn subscriptions_are_limited_per_connection_and_the_node_sends_heartbeats() {
    let node = Node::start(
        BIN,
        Options {
            config: Some(
                "[ws]\nmax_subscriptions = 2\nmax_things = 3\nheartbeat = \"200ms\"\n".into(),
            ),
            ..Options::default()
        },
    );
    let admin = Api::admin(&node);
    for thing in ["a", "b", "c", "d"] {
        admin.register(thing, None).await;
    }
    let mut ws = ws::connect(&node, Some(ADMIN_TOKEN)).await.unwrap();
    ws.send(json!({"type": "subscribe", "id": "s", "things": ["a", "b", "c", "d"]}))
        .await;
    assert_eq!(ws.next().await["code"], "invalid_request");
    ws.send(json!({"type": "subscribe", "id": "s1", "things": ["a"]}))
        .await;
    ws.send(json!({"type": "subscribe", "id": "s1", "things": ["b"]}))
        .await;
    assert_eq!(ws.next().await["code"], "conflict");
    ws.send(json!({"type": "subscribe", "id": "s2", "things": ["b"]}))
        .await;
    ws.send(json!({"type": "subscribe", "id": "s3", "things": ["c"]}))
        .await;
    let refused = ws.next().await;
    assert_eq!(
        (&refused["id"], &refused["code"]),
        (&json!("s3"), &json!("too_many_subscriptions"))
    );
    ws.send(json!({"type": "unsubscribe", "id": "nope"})).await;
    assert_eq!(ws.next().await["code"], "not_found");
    ws.send(json!({"type": "unsubscribe", "id": "s1"})).await;
    ws.send(json!({"type": "subscribe", "id": "s3", "things": ["c"]}))
        .await;
    round_trip(&mut ws, "c").await;
    // `s1` is gone: a change on `a` is not sent, one on `c` is.
    for thing in ["a", "c"] {
        admin
            .patch(
                &format!("/v1/things/{thing}/shadow"),
                json!({"state": {"desired": {"x": 1}}}),
            )
            .await;
    }
    let change = ws.next_of("change").await;
    assert_eq!(
        (&change["sub"], &change["thing"]),
        (&json!("s3"), &json!("c"))
    );

    let mut pings = 0;
    while pings < 2 {
        if let Incoming::Ping = ws.incoming().await {
            pings += 1;
        }
    }
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("metric {name} in\n{text}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_stops_reading_stays_bounded_and_gets_a_resync_without_a_silent_gap() {
    const MAX_QUEUE: usize = 8;
    const UPDATES: u64 = 2_000;
    let node = Node::start(
        BIN,
        Options {
            // The device sends as fast as its window allows (no 429s past 10 in flight).
            config: Some(format!(
                "[ws]\nmax_queue = {MAX_QUEUE}\n[node.mqtt]\nmax_shadow_inflight = 1000\n"
            )),
            ..Options::default()
        },
    );
    let admin = Api::admin(&node);
    let token = admin.register("busy", None).await;
    let d = device::connect(node.mqtt(), "busy", &token).await.unwrap();
    d.publish(
        "$aws/things/busy/shadow/update",
        &json!({"state": {"reported": {"n": 0}}}),
    )
    .await;
    eventually(WAIT, "the first version", async || {
        (node.shadow("busy", None).await.1["version"] == 1).then_some(())
    })
    .await;

    let mut ws = ws::connect_small(&node, ADMIN_TOKEN, 4096).await;
    ws.send(json!({"type": "subscribe", "id": "s", "things": ["busy"]}))
        .await;
    assert_eq!(ws.next().await["version"], 1);

    // The app stops reading while the device sends ~12 MB of changes, far more than the
    // socket buffers hold.
    let padding = "x".repeat(6_000);
    for n in 1..=UPDATES {
        d.publish(
            "$aws/things/busy/shadow/update",
            &json!({"state": {"reported": {"n": n, "pad": padding}}}),
        )
        .await;
    }
    eventually(
        Duration::from_secs(120),
        "every update committed",
        async || (node.shadow("busy", None).await.1["version"] == UPDATES + 1).then_some(()),
    )
    .await;
    let text = node.get("/metrics").await.text().await.unwrap();
    assert!(
        metric(&text, "doppel_ws_fell_behind_total") >= 1.0,
        "the app fell behind"
    );
    assert!(metric(&text, "doppel_ws_queued_changes") <= MAX_QUEUE as f64);
    assert!(
        metric(&text, "doppel_ws_resync_pending") <= 1.0,
        "one mark per subscribed shadow"
    );

    // Reading again: versions strictly increase, every jump is a resync, and the stream ends
    // at the final state.
    let mut last = 1;
    let mut resyncs = 0;
    loop {
        let frame = next_about(&mut ws, "busy").await;
        let version = frame["version"].as_u64().unwrap();
        assert!(version > last, "version {version} after {last}");
        if frame["type"] == "resync" {
            resyncs += 1;
        } else {
            assert_eq!(version, last + 1, "a change after {last} skipped versions");
        }
        last = version;
        if version == UPDATES + 1 {
            let reported = if frame["type"] == "resync" {
                &frame["state"]["reported"]
            } else {
                &frame["changed"]["reported"]
            };
            assert_eq!(reported["n"], UPDATES);
            break;
        }
    }
    assert!(resyncs >= 1, "the gap was announced by a resync");
}
