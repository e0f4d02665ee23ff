//! Three `doppel serve` processes on one PostgreSQL (started by the test): any node serves any
//! device or app; registry changes reach every node; a decommission closes the device's
//! session wherever it is; `kill -9`, SIGSTOP past the lease and a rolling restart under load
//! lose nothing acknowledged; a stranger cannot speak to the cluster port.

use doppel_tests::{
    api::Api,
    cluster::{self, Endpoints, Progress},
    device,
    node::{ADMIN_TOKEN, Node},
    until, ws,
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
        until(
            "the revoked key to fail",
            Duration::from_secs(1),
            async || viewer.get("/v1/things").await.0 == 401,
        )
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

/// Registers `count` things `{prefix}-{i}` on `node`; their tokens.
async fn register(node: &Node, prefix: &str, count: usize) -> Vec<(String, String)> {
    let admin = Api::admin(node);
    let mut things = Vec::new();
    for i in 0..count {
        let thing = format!("{prefix}-{i}");
        let token = admin.register(&thing, None).await;
        things.push((thing, token));
    }
    things
}

/// Devices publishing numbered updates over `endpoints`, device `i` starting on endpoint `i`.
fn load(
    things: &[(String, String)],
    endpoints: &Endpoints,
    stop: &Arc<AtomicBool>,
) -> Vec<(String, Arc<Progress>, tokio::task::JoinHandle<()>)> {
    things
        .iter()
        .enumerate()
        .map(|(i, (thing, token))| {
            let progress = Arc::new(Progress::default());
            let task = tokio::spawn(cluster::numbered(
                thing.clone(),
                token.clone(),
                endpoints.clone(),
                i,
                progress.clone(),
                stop.clone(),
            ));
            (thing.clone(), progress, task)
        })
        .collect()
}

type Load = Vec<(String, Arc<Progress>, tokio::task::JoinHandle<()>)>;

fn acked(load: &Load) -> Vec<u64> {
    load.iter()
        .map(|(_, p, _)| p.acked.load(Ordering::Relaxed))
        .collect()
}

/// Waits until every device has `more` updates acknowledged beyond `from`.
async fn progressed(load: &Load, from: &[u64], more: u64, within: Duration) {
    until("every device to make progress", within, async || {
        acked(load)
            .iter()
            .zip(from)
            .all(|(now, then)| *now >= then + more)
    })
    .await;
}

/// Stops the devices; then every acknowledged update must be in its twin (read on `node`).
async fn nothing_acknowledged_lost(node: &Node, load: Load, stop: &AtomicBool) {
    stop.store(true, Ordering::Relaxed);
    for (_, _, task) in &load {
        while !task.is_finished() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    for (thing, progress, task) in load {
        task.await.unwrap();
        let acked = progress.acked.load(Ordering::Relaxed);
        let stored = cluster::reported_seq(node, &thing).await;
        assert!(
            stored.is_some_and(|s| s >= acked),
            "{thing}: acknowledged {acked}, stored {stored:?}"
        );
    }
}

fn mqtt_endpoints(nodes: &[&Node]) -> Endpoints {
    Arc::new(Mutex::new(nodes.iter().map(|n| n.mqtt()).collect()))
}

#[tokio::test(flavor = "multi_thread")]
async fn device_identity_holds_on_every_node() {
    use rustls::pki_types::pem::PemObject;
    use serde_json::Value;
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    let tls = doppel_tests::tls::server_certificate(dir.path());
    let nodes: Vec<Node> = ["a", "b"]
        .into_iter()
        .map(|name| {
            let mut options = cluster::options(&server, "identity", name, None);
            options.args.extend(tls.serve_args());
            options.trust = Some(tls.pem.clone());
            Node::start(BIN, options)
        })
        .collect();
    cluster::settled(&nodes.iter().collect::<Vec<_>>(), Duration::from_secs(30)).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let admin_a = Api::admin(a);
    // One CA for the deployment, whichever node made it.
    assert_eq!(
        admin_a.text("/v1/ca").await.1,
        Api::admin(b).text("/v1/ca").await.1
    );
    let tls_client = |cert: &str, key: &str| {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls::pki_types::CertificateDer::from_pem_slice(tls.pem.as_bytes()).unwrap())
            .unwrap();
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![rustls::pki_types::CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
            rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
        )
        .unwrap()
    };
    let connect = async |node: &Node, client_id: &str, tls: rustls::ClientConfig| {
        let mut options =
            rumqttc::MqttOptions::new(client_id, "localhost", node.mqtt_tls.unwrap().port());
        options.set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(std::sync::Arc::new(tls)),
        ));
        let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 16);
        let connected = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match eventloop.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => return Ok(()),
                    Ok(_) => {}
                    Err(e) => return Err(e.to_string()),
                }
            }
        })
        .await
        .unwrap_or_else(|_| Err("no CONNACK".into()));
        connected.map(|()| (client, eventloop))
    };

    // Issued on a, the certificate connects on b; revoked on a, b refuses it within a second.
    let thing = cluster::name_owned_by(a, "a", "meter").await;
    admin_a.register(&thing, None).await;
    let (status, issued) = admin_a
        .post(
            &format!("/v1/things/{thing}/certificates"),
            json!({"generate": true}),
        )
        .await;
    assert_eq!(status, 201, "{issued}");
    let (cert, key) = (
        issued["certificate"].as_str().unwrap().to_owned(),
        issued["private_key"].as_str().unwrap().to_owned(),
    );
    let (client, mut session) = connect(b, &thing, tls_client(&cert, &key)).await.unwrap();
    client
        .publish(
            format!("things/{thing}/telemetry"),
            rumqttc::QoS::AtLeastOnce,
            false,
            json!({"t": 1}).to_string(),
        )
        .await
        .unwrap();
    let id = issued["id"].as_str().unwrap();
    let path = format!("/v1/things/{thing}/certificates/{id}");
    assert_eq!(
        admin_a.patch(&path, json!({"status": "revoked"})).await.0,
        200
    );
    // The live session on b closes, and b refuses the next handshake.
    let closed = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            if session.poll().await.is_err() {
                return;
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the session on b outlived the revocation");
    until(
        "b to refuse the revoked certificate",
        Duration::from_secs(1),
        async || connect(b, &thing, tls_client(&cert, &key)).await.is_err(),
    )
    .await;

    // A device provisions itself on b with a template and claim certificate made on a; its
    // thing is owned by whichever node, and served on a.
    let (status, _) = admin_a
        .put(
            "/v1/provisioning-templates/line",
            json!({"thing_name": "line-{Serial}"}),
        )
        .await;
    assert_eq!(status, 201);
    let (_, claim) = admin_a
        .post(
            "/v1/provisioning-templates/line/claim-certificates",
            json!({"generate": true}),
        )
        .await;
    let (client, mut session) = connect(
        b,
        "factory-7",
        tls_client(
            claim["certificate"].as_str().unwrap(),
            claim["private_key"].as_str().unwrap(),
        ),
    )
    .await
    .unwrap();
    let next = async |session: &mut rumqttc::EventLoop| {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) =
                    session.poll().await
                {
                    return (
                        p.topic,
                        serde_json::from_slice::<Value>(&p.payload).unwrap(),
                    );
                }
            }
        })
        .await
        .expect("an answer")
    };
    for filter in [
        "$aws/certificates/create/json/+",
        "$aws/provisioning-templates/line/provision/json/+",
    ] {
        client
            .subscribe(filter, rumqttc::QoS::AtLeastOnce)
            .await
            .unwrap();
    }
    client
        .publish(
            "$aws/certificates/create/json",
            rumqttc::QoS::AtLeastOnce,
            false,
            "{}",
        )
        .await
        .unwrap();
    let (topic, created) = next(&mut session).await;
    assert!(topic.ends_with("/accepted"), "{created}");
    client
        .publish(
            "$aws/provisioning-templates/line/provision/json",
            rumqttc::QoS::AtLeastOnce,
            false,
            json!({
                "certificateOwnershipToken": created["certificateOwnershipToken"],
                "parameters": {"Serial": "7"},
            })
            .to_string(),
        )
        .await
        .unwrap();
    let (topic, provisioned) = next(&mut session).await;
    assert!(topic.ends_with("/accepted"), "{provisioned}");
    assert_eq!(provisioned["thingName"], "line-7");
    let (device, mut session) = connect(
        a,
        "line-7",
        tls_client(
            created["certificatePem"].as_str().unwrap(),
            created["privateKey"].as_str().unwrap(),
        ),
    )
    .await
    .expect("the provisioned device connects on a");
    device
        .publish(
            "$aws/things/line-7/shadow/update",
            rumqttc::QoS::AtLeastOnce,
            false,
            json!({"state": {"reported": {"ok": true}}}).to_string(),
        )
        .await
        .unwrap();
    tokio::spawn(async move { while session.poll().await.is_ok() {} });
    until("its report on b", Duration::from_secs(5), async || {
        b.shadow("line-7", None).await.1["state"]["reported"]["ok"] == true
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kill9_of_a_node_under_load_moves_only_its_shards_and_loses_nothing_acknowledged() {
    let server = server();
    let mut nodes = three(&server, "kill9", None).await;
    let things = register(&nodes[0], "meter", 30).await;
    let endpoints = mqtt_endpoints(&nodes.iter().collect::<Vec<_>>());
    let stop = Arc::new(AtomicBool::new(false));
    let load = load(&things, &endpoints, &stop);
    progressed(&load, &vec![0; things.len()], 5, Duration::from_secs(30)).await;
    let before = cluster::view(&nodes[0]).await["shards"].clone();

    // c dies; its devices move to a and b.
    let at_kill = acked(&load);
    let killed = Instant::now();
    nodes[2].kill9();
    endpoints.lock().unwrap().truncate(2);
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut answering = Vec::new();
    until(
        "every twin to answer on the survivors",
        Duration::from_secs(10),
        async || {
            answering.clear();
            for (thing, _) in &things {
                if cluster::reported_seq(a, thing).await.is_none() {
                    return false;
                }
                answering.push(thing.clone());
            }
            true
        },
    )
    .await;
    let served_after = killed.elapsed();
    progressed(&load, &at_kill, 3, Duration::from_secs(20)).await;
    println!("every twin served again {served_after:?} after kill -9");

    // Only c's shards moved, each to a survivor with a higher epoch.
    cluster::settled(&[a, b], Duration::from_secs(10)).await;
    let after = cluster::view(a).await["shards"].clone();
    for (shard, (was, now)) in before
        .as_array()
        .unwrap()
        .iter()
        .zip(after.as_array().unwrap())
        .enumerate()
    {
        if was["owner"] == "c" {
            assert_ne!(now["owner"], "c", "shard {shard}");
            assert!(
                now["epoch"].as_u64() > was["epoch"].as_u64(),
                "shard {shard}"
            );
        } else {
            assert_eq!(was, now, "shard {shard} moved though its owner lived");
        }
    }
    let reconnected: u64 = load
        .iter()
        .map(|(_, p, _)| p.reconnects.load(Ordering::Relaxed))
        .sum();
    assert!(reconnected >= 10, "c's devices reconnected: {reconnected}");
    nothing_acknowledged_lost(a, load, &stop).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_paused_past_its_lease_writes_nothing_for_the_shards_it_lost_and_rejoins() {
    let server = server();
    let config = "[cluster]\nlease = \"2s\"\nrenew = \"500ms\"\n";
    let nodes = three(&server, "pause", Some(config)).await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    // Twins owned by b; their devices on a (which keeps running) and on b (which stalls).
    let mut things = Vec::new();
    let admin = Api::admin(a);
    for i in 0..6 {
        let thing = cluster::name_owned_by(a, "b", &format!("valve{i}")).await;
        let token = admin.register(&thing, None).await;
        things.push((thing, token));
    }
    let mut watcher = ws::connect(c, Some(ADMIN_TOKEN)).await.unwrap();
    let names: Vec<&str> = things.iter().map(|(t, _)| t.as_str()).collect();
    watcher
        .send(json!({"type": "subscribe", "id": "w", "things": names}))
        .await;
    let endpoints: Endpoints = Arc::new(Mutex::new(vec![a.mqtt(), b.mqtt()]));
    let stop = Arc::new(AtomicBool::new(false));
    let load = load(&things, &endpoints, &stop);
    progressed(&load, &[0; 6], 5, Duration::from_secs(30)).await;
    let shard = cluster::shard_of(&things[0].0);
    let epoch = cluster::view(a).await["shards"][shard]["epoch"].as_u64();

    b.pause();
    let paused = Instant::now();
    until("b's shards to move", Duration::from_secs(10), async || {
        let view = cluster::view(a).await;
        view["shards"][shard]["owner"] != "b" && view["shards"][shard]["epoch"].as_u64() > epoch
    })
    .await;
    println!("b's shards moved {:?} after SIGSTOP", paused.elapsed());
    let at_pause = acked(&load);
    // The devices on a keep going against the new owners. (Liveness, not speed: 10 s here
    // alone; a CI run under full parallel load took more than 20 s once.)
    let going = Instant::now();
    until(
        "the devices on a to go on",
        Duration::from_secs(45),
        async || {
            acked(&load)
                .iter()
                .zip(&at_pause)
                .step_by(2)
                .all(|(now, then)| *now >= then + 3)
        },
    )
    .await;
    println!(
        "the devices on a went on {:?} after the move",
        going.elapsed()
    );

    b.resume();
    cluster::settled(&[a, b, c], Duration::from_secs(20)).await;
    progressed(&load, &acked(&load), 3, Duration::from_secs(30)).await;
    nothing_acknowledged_lost(c, load, &stop).await;

    // No change the watcher saw ever went back: versions rise, `seq` never falls.
    let mut last: std::collections::HashMap<String, (u64, u64)> = Default::default();
    while let Some(frame) = watcher.quiet_for(Duration::from_millis(300)).await {
        if frame["type"] != "change" {
            continue;
        }
        let thing = frame["thing"].as_str().unwrap().to_owned();
        let version = frame["version"].as_u64().unwrap();
        let seq = frame["changed"]["reported"]["seq"].as_u64().unwrap_or(0);
        if let Some((v, s)) = last.get(&thing) {
            assert!(version > *v, "{thing}: version {version} after {v}");
            assert!(
                seq >= *s,
                "{thing}: seq {seq} after {s} (an old owner wrote)"
            );
        }
        last.insert(thing, (version, seq));
    }
    assert_eq!(last.len(), 6, "the watcher saw every twin change");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rolling_restart_under_load_loses_nothing_acknowledged() {
    let server = server();
    let mut nodes = three(&server, "rolling", None).await;
    let things = register(&nodes[0], "sensor", 30).await;
    let endpoints = mqtt_endpoints(&nodes.iter().collect::<Vec<_>>());
    let stop = Arc::new(AtomicBool::new(false));
    let load = load(&things, &endpoints, &stop);
    progressed(&load, &[0; 30], 3, Duration::from_secs(30)).await;
    for i in 0..3 {
        let old = nodes[i].mqtt();
        endpoints.lock().unwrap().retain(|e| *e != old);
        let status = nodes[i].terminate();
        assert!(
            status.success(),
            "node {i} stopped cleanly:\n{}",
            nodes[i].log()
        );
        let at = acked(&load);
        // The others carry on while it is away.
        progressed(&load, &at, 2, Duration::from_secs(20)).await;
        nodes[i].restart();
        endpoints.lock().unwrap().push(nodes[i].mqtt());
        cluster::settled(&nodes.iter().collect::<Vec<_>>(), Duration::from_secs(20)).await;
    }
    progressed(&load, &acked(&load), 2, Duration::from_secs(20)).await;
    nothing_acknowledged_lost(&nodes[1], load, &stop).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stranger_cannot_speak_to_the_cluster_port() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = server();
    let nodes = three(&server, "stranger", None).await;
    let a = &nodes[0];
    let thing = cluster::name_owned_by(a, "a", "door").await;
    Api::admin(a).register(&thing, None).await;
    let port = a
        .announced
        .iter()
        .find_map(|l| l.strip_prefix("doppel: cluster node a listening on "))
        .and_then(|l| l.split_whitespace().next())
        .expect("the cluster address is announced")
        .to_owned();
    // Forwarded work without a handshake, then a handshake with a made-up proof.
    let work = actors::cluster::wire::encode(&actors::cluster::wire::Frame::Work {
        id: 0,
        thing: thing.clone(),
        input: actors::cluster::wire::WireInput::Update {
            shadow: twin_core::ShadowName::CLASSIC,
            token: None,
            version: None,
            desired: actors::cluster::wire::WirePatch::Absent,
            reported: actors::cluster::wire::WirePatch::Merge(
                serde_json::from_value(json!({"forged": 1})).unwrap(),
            ),
            state: json!({"reported": {"forged": 1}}),
        },
        documents: false,
        origin: actors::cluster::wire::WireOrigin::Node,
        audit: None,
        ack: false,
    });
    for attempt in 0..2 {
        let mut stream = tokio::net::TcpStream::connect(&port).await.unwrap();
        if attempt == 1 {
            let hello = actors::cluster::wire::encode(&actors::cluster::wire::Hello {
                version: actors::cluster::wire::VERSION,
                node: "mallory".into(),
                nonce: [7; 32],
            });
            stream.write_u32(hello.len() as u32).await.unwrap();
            stream.write_all(&hello).await.unwrap();
            let len = stream.read_u32().await.unwrap();
            let mut challenge = vec![0; len as usize];
            stream.read_exact(&mut challenge).await.unwrap();
            let proof =
                actors::cluster::wire::encode(&actors::cluster::wire::Proof { proof: vec![0; 32] });
            stream.write_u32(proof.len() as u32).await.unwrap();
            stream.write_all(&proof).await.unwrap();
        }
        let _ = stream.write_u32(work.len() as u32).await;
        let _ = stream.write_all(&work).await;
        // The node closes the connection.
        let mut rest = Vec::new();
        let read =
            tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest)).await;
        assert!(
            matches!(read, Ok(Ok(_)) | Ok(Err(_))),
            "the node closed the connection"
        );
    }
    let (status, _) = a.shadow(&thing, None).await;
    assert_eq!(status, 404, "no forged sample reached the twin");
    let metrics = a.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("doppel_cluster_handshake_refused_total 2"),
        "both attempts refused"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rules_aggregate_children_across_nodes_and_a_holding_condition_fires_on_time_after_its_owner_dies()
 {
    let server = server();
    let config = "[cluster]\nlease = \"2s\"\nrenew = \"500ms\"\n";
    let mut nodes = three(&server, "rules", Some(config)).await;
    let admin = Api::admin(&nodes[0]);
    admin.put_type("Room", json!({})).await;
    admin.put_type("Sensor", json!({})).await;
    admin
        .put_type(
            "Thermostat",
            json!({"schemas": {"telemetry": {"type": "object", "properties": {"temp": {"type": "number"}}}}}),
        )
        .await;
    let rules = [
        (
            "stuffy",
            r#"
rule stuffy for type Room {
  children of type Sensor
  when (max(children.reported.co2) ?? 0) > 1000
  then { set desired.vent = "open"; set reported.worst = max(children.reported.co2) ?? 0 }
}
"#,
        ),
        (
            "hot",
            r#"
rule hot for type Thermostat {
  when exists(telemetry.temp) and telemetry.temp > 30 for 4s
  then { alert Hot severity major "temp {telemetry.temp}" }
}
"#,
        ),
    ];
    for (name, source) in rules {
        let (status, body) = admin
            .put(&format!("/v1/rules/{name}"), json!({ "source": source }))
            .await;
        assert_eq!(status, 201, "{body}");
    }
    // Rules and types stored on a hold on b and c within a second.
    for node in &nodes[1..] {
        let api = Api::admin(node);
        until(
            "the rules on every node",
            Duration::from_secs(1),
            async || {
                let (_, rules) = api.get("/v1/rules").await;
                let (_, types) = api.get("/v1/types").await;
                rules.to_string().contains("stuffy")
                    && rules.to_string().contains("hot")
                    && types.to_string().contains("Thermostat")
            },
        )
        .await;
    }
    // A room owned by a, its sensors owned by b and c, their devices on c and b.
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let room = cluster::name_owned_by(a, "a", "room").await;
    admin.register(&room, Some("Room")).await;
    for (owner, device_on, co2) in [("b", c, 600), ("c", b, 1400)] {
        let sensor = cluster::name_owned_by(a, owner, &format!("co2-{owner}")).await;
        let (status, body) = admin
            .post(
                "/v1/things",
                json!({"name": sensor, "type": "Sensor", "attributes": {"parent": room}}),
            )
            .await;
        assert_eq!(status, 201);
        let token = body["token"].as_str().unwrap();
        let mut d = device::connect(device_on.mqtt(), &sensor, token)
            .await
            .unwrap();
        d.publish_acked(
            &format!("$aws/things/{sensor}/shadow/update"),
            &json!({"state": {"reported": {"co2": co2}}}),
        )
        .await;
    }
    until("the room's rule", Duration::from_secs(10), async || {
        let (_, shadow) = Api::admin(b)
            .get(&format!("/v1/things/{room}/shadow"))
            .await;
        shadow["state"]["desired"]["vent"] == "open" && shadow["state"]["reported"]["worst"] == 1400
    })
    .await;

    // A thermostat owned by c starts holding its condition; c dies during the hold.
    let thermostat = cluster::name_owned_by(a, "c", "thermo").await;
    let token = admin.register(&thermostat, Some("Thermostat")).await;
    let mut d = device::connect(a.mqtt(), &thermostat, &token)
        .await
        .unwrap();
    let sent = Instant::now();
    d.publish_acked(
        &format!("things/{thermostat}/telemetry"),
        &json!({"temp": 40}),
    )
    .await;
    nodes[2].kill9();
    let (a, b) = (&nodes[0], &nodes[1]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let fired = loop {
        let (_, history) = Api::admin(b)
            .get(&format!("/v1/alerts?thing={thermostat}"))
            .await;
        let alerts = history["alerts"].as_array().cloned().unwrap_or_default();
        if !alerts.is_empty() {
            break alerts;
        }
        if Instant::now() >= deadline {
            let owner = cluster::owner_of(a, &thermostat).await;
            let traces = [
                Api::admin(a)
                    .get(&format!("/v1/things/{thermostat}/rules/trace"))
                    .await
                    .1,
                Api::admin(b)
                    .get(&format!("/v1/things/{thermostat}/rules/trace"))
                    .await
                    .1,
            ];
            let shadow = Api::admin(a)
                .get(&format!("/v1/things/{thermostat}/shadow"))
                .await
                .1;
            panic!(
                "no alert; owner {owner}, traces {traces:?}, shadow {shadow}; the survivors' logs:\n{}\n----\n{}",
                a.log(),
                b.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let elapsed = sent.elapsed();
    println!("the 4 s hold fired {elapsed:?} after the sample, its owner killed meanwhile");
    assert!(elapsed >= Duration::from_secs(4), "fired after {elapsed:?}");
    assert_eq!(fired.len(), 1, "fired once: {fired:?}");
    assert_ne!(cluster::owner_of(a, &thermostat).await, "c");
}

#[tokio::test(flavor = "multi_thread")]
async fn nodes_behind_mosquitto_share_one_session_that_moves_when_its_node_dies() {
    use doppel_tests::broker::Mosquitto;
    let server = server();
    let broker = Mosquitto::start();
    let mut nodes = Vec::new();
    for name in ["a", "b", "c"] {
        let mut options = cluster::options(&server, "broker", name, None);
        options
            .args
            .extend(["--mqtt-url".to_owned(), broker.doppel_url()]);
        nodes.push(Node::start(BIN, options));
    }
    cluster::settled(&nodes.iter().collect::<Vec<_>>(), Duration::from_secs(30)).await;
    let admin = Api::admin(&nodes[0]);
    let mut devices = Vec::new();
    for i in 0..12 {
        let thing = format!("tank-{i}");
        let token = admin.register(&thing, None).await;
        broker.add_user(&thing, &token);
        devices.push((thing, token));
    }
    // Each device updates its shadow through the broker and hears the answer of its twin's
    // owner, whichever node that is.
    let update = async |devices: &[(String, String)], level: usize| {
        for (thing, token) in devices {
            let mut d = doppel_tests::eventually(
                Duration::from_secs(10),
                "the broker to accept the device",
                async || device::connect(broker.addr, thing, token).await.ok(),
            )
            .await;
            d.subscribe(&format!("$aws/things/{thing}/shadow/update/accepted"))
                .await;
            let accepted = d
                .request(
                    &format!("$aws/things/{thing}/shadow/update"),
                    &json!({"state": {"reported": {"level": level}}}),
                    &format!("$aws/things/{thing}/shadow/update/accepted"),
                )
                .await;
            assert_eq!(accepted["state"]["reported"]["level"], level, "{thing}");
        }
    };
    update(&devices, 1).await;
    let leader = cluster::view(&nodes[0]).await["shards"][0]["owner"]
        .as_str()
        .unwrap()
        .to_owned();
    let index = ["a", "b", "c"].iter().position(|n| *n == leader).unwrap();
    let metrics = nodes[index].get("/metrics").await.text().await.unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("doppel_cluster_forwarded_total ") && !l.ends_with(" 0")),
        "the node running the session forwarded to the owners:\n{metrics}"
    );

    // The node running the session dies: another takes shard 0 and resumes the session.
    nodes[index].kill9();
    let survivors: Vec<&Node> = nodes.iter().filter(|n| n.is_running()).collect();
    cluster::settled(&survivors, Duration::from_secs(20)).await;
    update(&devices, 2).await;
    for (thing, _) in &devices {
        let (status, doc) = survivors[0].shadow(thing, None).await;
        assert_eq!(status, 200);
        assert_eq!(doc["state"]["reported"]["level"], 2, "{thing}");
        assert_eq!(doc["version"], 2, "{thing}: each update applied once");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_simulator_spreads_its_fleet_over_the_nodes_and_moves_devices_when_one_dies() {
    let server = server();
    let mut nodes = three(&server, "sim", None).await;
    let endpoints: Vec<String> = nodes.iter().map(|n| n.mqtt().to_string()).collect();
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let sim = std::process::Command::new(BIN)
        .arg("sim")
        .args(["--mqtt", &endpoints.join(",")])
        .args(["--api", nodes[0].url("").trim_end_matches('/')])
        .args(["--token", ADMIN_TOKEN])
        .args(["--devices", "300", "--rate", "600", "--duration", "12s"])
        .args(["--prefix", "fleet", "--sample", "10", "--quiet"])
        .arg("--report")
        .arg(&report)
        .env_remove("DOPPEL_ADMIN_TOKEN")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Once the fleet sends, c dies; its hundred devices move to a and b.
    let c = &nodes[2];
    until(
        "c to forward its devices' messages",
        Duration::from_secs(30),
        async || {
            let metrics = c.get("/metrics").await.text().await.unwrap_or_default();
            metrics
                .lines()
                .find_map(|l| l.strip_prefix("doppel_cluster_forwarded_total "))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .is_some_and(|n| n >= 500.0)
        },
    )
    .await;
    nodes[2].kill9();
    let output = tokio::task::spawn_blocking(move || sim.wait_with_output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let reconnects = r["reconnects"].as_u64().unwrap();
    assert!(
        reconnects >= 100,
        "c's devices reconnected: {reconnects}\n{stdout}"
    );
    assert!(stdout.contains("reconnects"), "{stdout}");
    // Most of what was sent was acknowledged; what was in flight on c when it died was not.
    let (sent, acked) = (r["sent"].as_u64().unwrap(), r["acked"].as_u64().unwrap());
    assert!(
        acked * 10 >= sent * 8,
        "sent {sent}, acked {acked}\n{stdout}"
    );
    let lost = r["errors"]["unacknowledged_at_loss"].as_u64().unwrap_or(0);
    assert!(
        acked + lost + 600 >= sent,
        "sent {sent}, acked {acked}, lost {lost}"
    );
}

#[test]
fn the_cluster_doc_runs_as_written() {
    for (program, package) in [("curl", "curl"), ("python3", "python3")] {
        doppel_tests::doc::need(program, package);
    }
    let server = server();
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/cluster.md"),
    )
    .unwrap();
    let store = format!("{}?schema=doc", server.url());
    let steps = doppel_tests::doc::run_section(
        &doc,
        "## Three nodes on one machine",
        BIN,
        &[("STORE", store.as_str())],
        Duration::from_secs(120),
    );
    assert!(steps >= 4, "the section has its steps");
}
