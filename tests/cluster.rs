//! Three `doppel serve` processes on one PostgreSQL (started by the test): any node serves any
//! device or app; registry changes reach every node; a decommission closes the device's
//! session wherever it is; `kill -9`, SIGSTOP past the lease and a rolling restart under load
//! lose nothing acknowledged; a stranger cannot speak to the cluster port.

use doppel_tests::{
    api::Api,
    cluster::{self, Endpoints, Progress},
    device,
    node::{ADMIN_TOKEN, Node},
    ws,
};
use serde_json::json;
use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};
use storage::pg_server::LocalServer;

const BIN: &str = env!("CARGO_BIN_EXE_doppel");

fn server() -> LocalServer {
    LocalServer::start().unwrap_or_else(|e| panic!("{e}"))
}

/// Starts nodes `a`, `b`, `c` (in that order) and waits until they agree on the owners.
async fn three(server: &LocalServer, schema: &str, config: Option<&str>) -> Vec<Node> {
    let mut nodes = Vec::new();
    for name in ["a", "b", "c"] {
        nodes.push(Node::start(
            BIN,
            cluster::options(server, schema, name, config),
        ));
    }
    cluster::settled(&nodes.iter().collect::<Vec<_>>(), Duration::from_secs(30)).await;
    nodes
}

/// Waits for `check` to hold, at most `within`.
async fn until(what: &str, within: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn any_node_serves_any_device_and_app() {
    let server = server();
    let nodes = three(&server, "anywhere", None).await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    // Every node sees the same owners, and each owns about a third.
    let view = cluster::view(a).await;
    for node in &view["nodes"].as_array().unwrap()[..] {
        let shards = node["shards"].as_u64().unwrap();
        assert!((200..=480).contains(&shards), "{view}");
    }
    assert_eq!(view["shards"], cluster::view(b).await["shards"]);

    // A thing owned by c, registered on a; its device on b; an app on a.
    let thing = cluster::name_owned_by(a, "c", "pump").await;
    let admin_a = Api::admin(a);
    let token = admin_a.register(&thing, None).await;
    let mut app = ws::connect(a, Some(ADMIN_TOKEN)).await.unwrap();
    app.send(json!({"type": "subscribe", "id": "s", "things": [thing]}))
        .await;
    // Frames are answered in order: once the get is answered, the subscription holds.
    app.send(json!({"type": "get", "id": "g", "thing": thing}))
        .await;
    assert_eq!(app.next().await["code"], "not_found");
    let mut d = device::connect(b.mqtt(), &thing, &token).await.unwrap();
    d.subscribe(&format!("$aws/things/{thing}/shadow/update/#"))
        .await;
    let accepted = d
        .request(
            &format!("$aws/things/{thing}/shadow/update"),
            &json!({"state": {"reported": {"rpm": 7}}}),
            &format!("$aws/things/{thing}/shadow/update/accepted"),
        )
        .await;
    assert_eq!(accepted["version"], 1);
    let change = app.next_of("change").await;
    assert_eq!(change["thing"], thing.as_str());
    assert_eq!(change["changed"], json!({"reported": {"rpm": 7}}));
    let (status, doc) = a.shadow(&thing, None).await;
    assert_eq!(status, 200);
    assert_eq!(doc["state"]["reported"], json!({"rpm": 7}));

    // Desired set on a reaches the device on b as a delta.
    let (status, _) = admin_a
        .patch(
            &format!("/v1/things/{thing}/shadow"),
            json!({"state": {"desired": {"rpm": 9}}}),
        )
        .await;
    assert_eq!(status, 200);
    let delta = d
        .message_on(&format!("$aws/things/{thing}/shadow/update/delta"))
        .await;
    assert_eq!(delta["state"], json!({"rpm": 9}));

    // Telemetry sent on b is recorded by c and read on a.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    d.publish_acked(
        &format!("things/{thing}/telemetry"),
        &json!({"ts": now, "t": 20.5}),
    )
    .await;
    let (status, history) = admin_a
        .get(&format!(
            "/v1/things/{thing}/telemetry?from={}&to={}",
            now - 1_000,
            now + 1_000
        ))
        .await;
    assert_eq!(status, 200, "{history}");
    assert!(history.to_string().contains("20.5"), "{history}");

    // Registry changes made on a hold on b and c within a second: a new key, a revoked one.
    let key = admin_a.create_key("viewer", None).await;
    for node in [b, c] {
        let viewer = Api::with(node, Some(&key));
        until("the new key to work", Duration::from_secs(1), async || {
            viewer.get("/v1/things").await.0 == 200
        })
        .await;
    }
    let id = key.split('_').nth(1).unwrap().to_owned();
    assert_eq!(admin_a.delete(&format!("/v1/keys/{id}")).await.0, 204);
    for node in [b, c] {
        let viewer = Api::with(node, Some(&key));
        until("the revoked key to fail", Duration::from_secs(1), async || {
            viewer.get("/v1/things").await.0 == 401
        })
        .await;
    }

    // Decommissioned on a: the device's session on b closes.
    assert_eq!(admin_a.delete(&format!("/v1/things/{thing}")).await.0, 204);
    let why = tokio::time::timeout(Duration::from_secs(1), d.closed())
        .await
        .expect("the session on b closed within a second");
    assert!(!why.is_empty());
    assert_eq!(c.shadow(&thing, None).await.0, 404);
}
