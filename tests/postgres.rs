//! A node on PostgreSQL (a private server each test starts): devices, REST and WebSocket work
//! as on the embedded store and survive a restart; a store outage under load makes the node
//! unready, then it resumes by itself and nothing acknowledged is lost; `doppel store copy`
//! moves a deployment of 100,000 twins to PostgreSQL and back.

use doppel_tests::{
    api::Api,
    device::{self, Device, Seen},
    node::{ADMIN_TOKEN, Node, Options},
    until, ws,
};
use serde_json::json;
use std::{
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};
use storage::{FjallStore, Repos, Store, ThingRecord, pg_server::LocalServer};
use twin_core::{Command as TwinCommand, Context, Limits, ShadowName, ThingName, Twin, request};

const BIN: &str = env!("CARGO_BIN_EXE_doppel");

fn server() -> LocalServer {
    LocalServer::start().unwrap_or_else(|e| panic!("{e}"))
}

fn on(server: &LocalServer, schema: &str) -> Options {
    Options {
        store: Some(format!("{}?schema={schema}", server.url())),
        ..Options::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_on_postgresql_serves_devices_and_apps_and_keeps_them_across_restarts() {
    let server = server();
    let mut node = Node::start(BIN, on(&server, "e2e"));
    let admin = Api::admin(&node);
    let token = admin.register("pump-1", None).await;
    let mut d = device::connect(node.mqtt(), "pump-1", &token)
        .await
        .unwrap();
    d.subscribe("$aws/things/pump-1/shadow/update/#").await;
    let accepted = d
        .request(
            "$aws/things/pump-1/shadow/update",
            &json!({"state": {"reported": {"rpm": 1}}}),
            "$aws/things/pump-1/shadow/update/accepted",
        )
        .await;
    assert_eq!(accepted["version"], 1);

    let mut app = ws::connect(&node, Some(ADMIN_TOKEN)).await.unwrap();
    app.send(json!({"type": "subscribe", "id": "s", "things": ["pump-1"]}))
        .await;
    let snapshot = app.next_of("snapshot").await;
    assert_eq!(snapshot["state"]["reported"], json!({"rpm": 1}));
    d.publish(
        "$aws/things/pump-1/shadow/update",
        &json!({"state": {"reported": {"rpm": 2}}}),
    )
    .await;
    let change = app.next_of("change").await;
    assert_eq!(change["version"], 2);
    assert_eq!(change["changed"], json!({"reported": {"rpm": 2}}));

    // An app sets the desired state over REST; the device hears the delta.
    let (status, _) = admin
        .patch(
            "/v1/things/pump-1/shadow",
            json!({"state": {"desired": {"rpm": 5}}}),
        )
        .await;
    assert_eq!(status, 200);
    let delta = d.message_on("$aws/things/pump-1/shadow/update/delta").await;
    assert_eq!(delta["state"], json!({"rpm": 5}));

    assert!(node.terminate().success(), "{}", node.log());
    node.restart();
    let (status, doc) = node.shadow("pump-1", None).await;
    assert_eq!(status, 200);
    assert_eq!(doc["state"]["reported"], json!({"rpm": 2}));
    assert_eq!(doc["state"]["desired"], json!({"rpm": 5}));
    assert_eq!(doc["version"], 3);
}

/// Publishes numbered updates one at a time, each after the PUBACK of the one before (however
/// long that takes, up to a minute), recording the highest acknowledged number.
async fn publish_numbered(
    mut d: Device,
    thing: String,
    acked: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) {
    let topic = format!("$aws/things/{thing}/shadow/update");
    let mut seq = 0;
    while !stop.load(Ordering::Relaxed) {
        seq += 1;
        d.publish(&topic, &json!({"state": {"reported": {"seq": seq}}}))
            .await;
        let deadline = Instant::now() + Duration::from_secs(60);
        let (mut pkid, mut done) = (None, false);
        while !done {
            for seen in d.drain() {
                match seen {
                    Seen::Sent(id) if pkid.is_none() => pkid = Some(id),
                    Seen::PubAck(id) if Some(id) == pkid => done = true,
                    Seen::Closed(e) => panic!("{thing}: closed: {e}"),
                    _ => {}
                }
            }
            assert!(
                Instant::now() < deadline,
                "{thing}: no PUBACK for {seq} in a minute"
            );
            if !done {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        acked.store(seq, Ordering::Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_outage_makes_the_node_unready_then_it_resumes_and_loses_nothing() {
    let server = server();
    let node = Node::start(BIN, on(&server, "outage"));
    let stop = Arc::new(AtomicBool::new(false));
    let mut devices = Vec::new();
    for i in 0..3 {
        let thing = format!("meter-{i}");
        let token = node.register(&thing).await;
        let d = device::connect(node.mqtt(), &thing, &token).await.unwrap();
        let acked = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(publish_numbered(
            d,
            thing.clone(),
            acked.clone(),
            stop.clone(),
        ));
        devices.push((thing, acked, task));
    }
    let total = |devices: &[(String, Arc<AtomicU64>, _)]| -> u64 {
        devices
            .iter()
            .map(|(_, a, _)| a.load(Ordering::Relaxed))
            .sum()
    };
    until(
        "updates acknowledged",
        Duration::from_secs(20),
        async || total(&devices) >= 30,
    )
    .await;

    server.stop().unwrap();
    let readyz = |node: &Node| {
        let url = node.url("/readyz");
        async move {
            let response = reqwest::get(url).await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    until(
        "the node to report the store",
        Duration::from_secs(20),
        async || {
            let (status, body) = readyz(&node).await;
            status == 503 && body.contains("store")
        },
    )
    .await;
    let during = total(&devices);

    server.resume().unwrap();
    until(
        "the node to be ready again",
        Duration::from_secs(30),
        async || readyz(&node).await.0 == 200,
    )
    .await;
    until(
        "updates acknowledged after the outage",
        Duration::from_secs(30),
        async || total(&devices) >= during + 30,
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for (thing, acked, task) in devices {
        task.await.unwrap();
        let (status, doc) = node.shadow(&thing, None).await;
        assert_eq!(status, 200);
        let stored = doc["state"]["reported"]["seq"].as_u64().unwrap();
        assert!(
            stored >= acked.load(Ordering::Relaxed),
            "{thing}: acknowledged {} but {stored} stored",
            acked.load(Ordering::Relaxed)
        );
    }
}

/// A deployment of `n` things, each with a twin, written straight into an embedded store.
fn deployment(dir: &std::path::Path, n: u32) {
    let store = FjallStore::open(dir).unwrap();
    let repos = Repos::default();
    let limits = Limits::default();
    let ctx = Context {
        limits: &limits,
        device_type: None,
        documents: false,
    };
    for chunk in (0..n).collect::<Vec<_>>().chunks(2_000) {
        store
            .transact(|tx| {
                for &i in chunk {
                    let name = ThingName::new(&format!("dev-{i:06}")).unwrap();
                    repos.things.put(
                        tx,
                        &ThingRecord {
                            name: name.clone(),
                            device_type: None,
                            attributes: Default::default(),
                            token_hash: "0".repeat(64),
                            created_at: 1_700_000_000_000,
                        },
                    )?;
                    let mut twin = Twin::new(name);
                    let body = json!({"state": {"reported": {"n": i, "site": "plant-3"}}});
                    let update = request::parse_update(
                        ShadowName::CLASSIC,
                        body.to_string().as_bytes(),
                        &limits,
                    )
                    .unwrap();
                    twin.handle(
                        TwinCommand::Update(update),
                        &ctx,
                        1_700_000_000_000,
                        &mut Vec::new(),
                    );
                    twin.take_dirty();
                    repos.twins.save(tx, &twin)?;
                }
                Ok(())
            })
            .unwrap();
    }
}

fn copy(from: &str, to: &str) -> String {
    let out = Command::new(BIN)
        .args(["store", "copy", "--from", from, "--to", to])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "store copy {from} → {to}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn store_copy_moves_a_deployment_of_100_000_twins_to_postgresql_and_back() {
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    let (first, last) = (dir.path().join("first"), dir.path().join("last"));
    deployment(&first, 100_000);
    let pg = format!("{}?schema=copied", server.url());
    let there = copy(&format!("fjall:{}", first.display()), &pg);
    let back = copy(&pg, &format!("fjall:{}", last.display()));
    // Things and twins: at least two keys per device, the same count both ways.
    let keys = |line: &str| -> u64 { line.split_whitespace().nth(1).unwrap().parse().unwrap() };
    assert!(keys(&there) >= 200_000, "{there}");
    assert_eq!(keys(&there), keys(&back), "{there}{back}");
    assert!(there.contains("verified"), "{there}");
    // A full target is refused.
    let again = Command::new(BIN)
        .args([
            "store",
            "copy",
            "--from",
            &format!("fjall:{}", first.display()),
            "--to",
            &pg,
        ])
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("holds a deployment"));

    // Nodes on the copies serve the twins.
    for options in [
        on(&server, "copied"),
        Options {
            store: Some(format!("fjall:{}", last.display())),
            ..Options::default()
        },
    ] {
        let node = Node::start(BIN, options);
        for i in [0u32, 54_321, 99_999] {
            let (status, doc) = node.shadow(&format!("dev-{i:06}"), None).await;
            assert_eq!(status, 200);
            assert_eq!(doc["state"]["reported"], json!({"n": i, "site": "plant-3"}));
        }
    }
}
