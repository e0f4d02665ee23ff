//! A node in process on a real embedded store: commands reach twins through their shard hosts,
//! idle twins are passivated and come back with their state, a twin whose commit is pending is
//! never passivated, and unregistered things are refused.

mod support;

use actors::{Node, NodeConfig, directory::Directory, hub::ChangeHub, mqtt::Sessions};
use serde_json::{Value, json};
use std::{
    sync::Arc,
    time::{Duration, Instant},
};
use storage::{AnyStore, FjallStore, Repos};
use support::*;
use twin_core::{Command, Reply, ShadowName, request};

fn start(dir: &std::path::Path, config: NodeConfig) -> Node {
    let store = AnyStore::from(FjallStore::open(dir).unwrap());
    let directory = Arc::new(Directory::load(store, Repos::default()).unwrap());
    Node::start(directory, config, Sessions::new(), ChangeHub::new())
}

async fn until<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn payload(reply: &Reply) -> Value {
    serde_json::from_slice(&reply.payload).unwrap()
}

#[test]
fn idle_twins_are_passivated_and_come_back_with_their_state() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let config = NodeConfig {
            passivate_after: Duration::from_millis(150),
            arbiters: 2,
            ..NodeConfig::default()
        };
        let node = start(dir.path(), config);
        register(&node, "sleepy").await;
        assert_eq!(
            update(&node, "sleepy", json!({"state": {"reported": {"n": 1}}}))
                .await
                .outcome,
            Ok(1)
        );
        assert_eq!(node.stats().await.active, 1);
        let stats = until("passivation", async || {
            Some(node.stats().await).filter(|s| s.active == 0)
        })
        .await;
        assert_eq!(stats.passivated, 1);
        let doc = payload(&get(&node, "sleepy").await);
        assert_eq!(
            (
                doc["state"]["reported"]["n"].as_u64(),
                doc["version"].as_u64()
            ),
            (Some(1), Some(1))
        );
        assert_eq!(node.stats().await.active, 1, "the twin was activated again");
        assert_eq!(
            update(&node, "sleepy", json!({"state": {"reported": {"n": 2}}}))
                .await
                .outcome,
            Ok(2)
        );
        node.flush().await;
        node.stop();
    });
}

#[test]
fn a_twin_with_a_pending_commit_is_not_passivated() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        // Commits wait an hour; twins idle for 100 ms would be passivated if nothing held them.
        let config = NodeConfig {
            passivate_after: Duration::from_millis(100),
            commit_window: Duration::from_secs(3600),
            arbiters: 1,
            ..NodeConfig::default()
        };
        let node = start(dir.path(), config);
        register(&node, "busy").await;
        let req = request::parse_update(
            ShadowName::CLASSIC,
            br#"{"state": {"reported": {"n": 1}}}"#,
            &node.config().limits,
        )
        .unwrap();
        let node2 = node.clone();
        let answer =
            actix_rt::spawn(
                async move { node2.call(thing("busy"), Command::Update(req), None).await },
            );
        until("the change to wait in the window", async || {
            Some(node.stats().await).filter(|s| s.pending == 1)
        })
        .await;
        let sweeps = node.stats().await.sweeps;
        let after = until("three more sweeps", async || {
            Some(node.stats().await).filter(|s| s.sweeps >= sweeps + 3)
        })
        .await;
        assert_eq!(
            (after.active, after.passivated),
            (1, 0),
            "still active while its commit is pending"
        );
        node.flush().await;
        assert_eq!(
            answer.await.unwrap().unwrap().outcome,
            Ok(1),
            "the reply came with the commit"
        );
        until("passivation after the commit", async || {
            Some(node.stats().await).filter(|s| s.active == 0)
        })
        .await;
        node.stop();
    });
}

#[test]
fn commands_for_unregistered_things_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let node = start(
            dir.path(),
            NodeConfig {
                arbiters: 1,
                ..NodeConfig::default()
            },
        );
        let reply = update(
            &node,
            "ghost",
            json!({"state": {"reported": {"n": 1}}, "clientToken": "g"}),
        )
        .await;
        let error = reply.outcome.clone().unwrap_err();
        assert_eq!((error.code, &*error.message), (404, "Thing not found"));
        assert_eq!(payload(&reply)["clientToken"], "g");
        assert_eq!(
            node.stats().await.active,
            0,
            "no actor for a thing that does not exist"
        );
        node.stop();
    });
}

#[test]
fn state_survives_a_node_restart_on_the_same_store() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let node = start(
            dir.path(),
            NodeConfig {
                arbiters: 2,
                ..NodeConfig::default()
            },
        );
        for i in 0..50 {
            register(&node, &format!("t-{i}")).await;
            update(
                &node,
                &format!("t-{i}"),
                json!({"state": {"desired": {"i": i}}}),
            )
            .await;
        }
        node.flush().await;
        node.stop();
    });
    run(async {
        let node = start(
            dir.path(),
            NodeConfig {
                arbiters: 2,
                ..NodeConfig::default()
            },
        );
        for i in 0..50 {
            let doc = payload(&get(&node, &format!("t-{i}")).await);
            assert_eq!(doc["state"]["desired"]["i"], i);
        }
        node.stop();
    });
}
