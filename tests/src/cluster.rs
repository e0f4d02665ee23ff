//! A cluster of `doppel serve` processes on one private PostgreSQL: starting nodes, waiting
//! until they agree on shard owners, finding a thing's owner, and devices that publish
//! numbered updates and move to another node when theirs goes away.

use crate::{
    device::{self, Seen},
    node::{ADMIN_TOKEN, Node, Options},
};
use serde_json::{Value, json};
use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};
use storage::pg_server::LocalServer;

/// The cluster secret the test nodes share.
pub const SECRET: &str = "a-test-cluster-secret";

/// Shards of a test cluster (the node's default).
pub const SHARDS: u64 = 1024;

/// How to start node `name` of a cluster on `server` (schema `schema`); `config` is a TOML
/// file's content (e.g. shorter leases).
pub fn options(server: &LocalServer, schema: &str, name: &str, config: Option<&str>) -> Options {
    Options {
        store: Some(format!("{}?schema={schema}", server.url())),
        args: vec![
            "--cluster-listen".into(),
            "127.0.0.1:0".into(),
            "--node-name".into(),
            name.into(),
        ],
        env: vec![("DOPPEL_CLUSTER_SECRET".into(), SECRET.into())],
        config: config.map(str::to_owned),
        ..Options::default()
    }
}

/// The virtual shard of `thing` (as the node computes it).
pub fn shard_of(thing: &str) -> usize {
    (xxhash_rust::xxh3::xxh3_64(thing.as_bytes()) % SHARDS) as usize
}

/// `GET /v1/cluster` on `node`.
pub async fn view(node: &Node) -> Value {
    let response = node.get("/v1/cluster").await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn ready(node: &Node) -> bool {
    match node.client().get(node.url("/readyz")).send().await {
        Ok(response) => response.status() == 200,
        Err(_) => false,
    }
}

/// Waits until every node in `nodes` is ready, sees exactly these nodes, and every shard has
/// an owner among them; at most `within`.
pub async fn settled(nodes: &[&Node], within: Duration) {
    let deadline = Instant::now() + within;
    'wait: loop {
        assert!(
            Instant::now() < deadline,
            "the cluster did not settle in {within:?}: {}",
            nodes
                .iter()
                .map(|n| n.log())
                .collect::<Vec<_>>()
                .join("\n----\n")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut names = None;
        for node in nodes {
            if !ready(node).await {
                continue 'wait;
            }
            let view = view(node).await;
            let mut live: Vec<String> = view["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n["name"].as_str().unwrap().to_owned())
                .collect();
            live.sort();
            if live.len() != nodes.len() || names.as_ref().is_some_and(|n| *n != live) {
                continue 'wait;
            }
            let owned = view["shards"].as_array().unwrap().iter().all(|s| {
                s["owner"]
                    .as_str()
                    .is_some_and(|o| live.iter().any(|l| l == o))
            });
            if !owned {
                continue 'wait;
            }
            names = Some(live);
        }
        return;
    }
}

/// The owner of `thing`'s shard as `node` sees it.
pub async fn owner_of(node: &Node, thing: &str) -> String {
    view(node).await["shards"][shard_of(thing)]["owner"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// A thing name (`prefix-N`) whose shard `node` names `owner`.
pub async fn name_owned_by(node: &Node, owner: &str, prefix: &str) -> String {
    let view = view(node).await;
    (0..)
        .map(|i| format!("{prefix}-{i}"))
        .find(|name| view["shards"][shard_of(name)]["owner"] == owner)
        .unwrap()
}

/// The MQTT endpoints devices may use, changed by the test as nodes come and go.
pub type Endpoints = Arc<Mutex<Vec<SocketAddr>>>;

/// What a numbered device did.
#[derive(Debug, Default)]
pub struct Progress {
    /// The highest number whose PUBACK arrived.
    pub acked: AtomicU64,
    /// Connections made after the first.
    pub reconnects: AtomicU64,
}

/// Publishes `{"seq": n}` to its classic shadow, one at a time, each after the PUBACK of the one
/// before. When its connection ends (its node went away, or a commit it waited for failed) it
/// reconnects to the next endpoint, with backoff, and sends the unacknowledged number again.
pub async fn numbered(
    thing: String,
    token: String,
    endpoints: Endpoints,
    first: usize,
    progress: Arc<Progress>,
    stop: Arc<AtomicBool>,
) {
    let topic = format!("$aws/things/{thing}/shadow/update");
    let mut seq = progress.acked.load(Ordering::Relaxed) + 1;
    let mut turn = first;
    let mut connections = 0u64;
    let mut backoff = Duration::from_millis(20);
    while !stop.load(Ordering::Relaxed) {
        let addr = {
            let endpoints = endpoints.lock().unwrap();
            endpoints[turn % endpoints.len()]
        };
        turn += 1;
        let mut d = match device::try_connect(addr, &thing, &token).await {
            Ok(d) => d,
            Err(_) => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(500));
                continue;
            }
        };
        backoff = Duration::from_millis(20);
        connections += 1;
        if connections > 1 {
            progress.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        'connected: while !stop.load(Ordering::Relaxed) {
            let payload = json!({"state": {"reported": {"seq": seq}}}).to_string();
            let sent = d
                .client
                .publish(&topic, rumqttc::QoS::AtLeastOnce, false, payload)
                .await;
            if sent.is_err() {
                break 'connected;
            }
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut pkid = None;
            loop {
                for seen in d.drain() {
                    match seen {
                        Seen::Sent(id) if pkid.is_none() => pkid = Some(id),
                        Seen::PubAck(id) if Some(id) == pkid => {
                            progress.acked.store(seq, Ordering::Relaxed);
                            seq += 1;
                            continue 'connected;
                        }
                        Seen::Closed(_) => break 'connected,
                        _ => {}
                    }
                }
                assert!(
                    Instant::now() < deadline,
                    "{thing}: no PUBACK for {seq} in 30 s"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
}

/// The `seq` a twin reports, read over REST on `node` (`None`: no answer).
pub async fn reported_seq(node: &Node, thing: &str) -> Option<u64> {
    let response = node
        .client()
        .get(node.url(&format!("/v1/things/{thing}/shadow")))
        .bearer_auth(ADMIN_TOKEN)
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    if response.status() != 200 {
        return None;
    }
    let doc: Value = response.json().await.ok()?;
    doc["state"]["reported"]["seq"].as_u64()
}
