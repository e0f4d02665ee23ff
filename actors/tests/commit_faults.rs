//! What a node does when its store's commits fail or stall, on the embedded store with faults
//! injected (`storage::faulty`): nothing is released or acknowledged before the commit that holds
//! it, a failing or stalled host is reported by `Node::stuck` and requests to it time out, a
//! commit the store refuses for good drops its changes without wedging the host, and a retried
//! request is applied once.

mod support;

use actors::{
    Node, NodeConfig,
    directory::Directory,
    hub::{ChangeHub, Selector},
    mqtt::Sessions,
};
use serde_json::json;
use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};
use storage::{
    AnyStore, FjallStore, Repos,
    faulty::{Fault, Faults, FaultyStore},
};
use support::*;

fn start(dir: &std::path::Path, config: NodeConfig) -> (Node, Faults) {
    let (store, faults) = FaultyStore::new(AnyStore::from(FjallStore::open(dir).unwrap()));
    let directory = Arc::new(Directory::load(AnyStore::from(store), Repos::default()).unwrap());
    let node = Node::start(directory, config, Sessions::new(), ChangeHub::new());
    (node, faults)
}

/// One host, a short request timeout, and no history (its background maintenance writes
/// commits of its own, which would take the injected faults).
fn one_host() -> NodeConfig {
    NodeConfig {
        arbiters: 1,
        request_timeout: Duration::from_millis(500),
        history: actors::HistoryConfig {
            enabled: false,
            ..actors::HistoryConfig::default()
        },
        ..NodeConfig::default()
    }
}

async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[test]
fn nothing_is_released_while_commits_fail_and_a_retry_is_applied_once() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let (node, faults) = start(dir.path(), one_host());
        register(&node, "pump-1").await;
        let watcher = node.hub().watch(None, 64);
        watcher.subscribe(
            "s",
            Selector {
                things: Some(vec![thing("pump-1")]),
                device_type: None,
                attributes: BTreeMap::new(),
            },
        );
        // The next three commits fail; the host keeps retrying (backing off).
        for _ in 0..3 {
            faults.fail_next_commit(Fault::Transient);
        }
        let before = faults.attempts();
        let body = json!({"state": {"desired": {"speed": 4}}, "clientToken": "t1"});
        let first = {
            let (node, command) = (node.clone(), update_command(&node, body.clone()));
            tokio::spawn(async move { node.call(thing("pump-1"), command, None).await })
        };
        until("two failed attempts", || faults.attempts() >= before + 2).await;
        assert!(!first.is_finished(), "no answer while the commit fails");
        assert!(
            watcher.try_next().is_none(),
            "no change released while the commit fails"
        );
        // The device retries with the same client token while the first is still pending.
        let retry = node
            .call(thing("pump-1"), update_command(&node, body), None)
            .await
            .unwrap();
        let first = first.await.unwrap().unwrap();
        assert_eq!(first.outcome, Ok(1));
        assert_eq!(retry.outcome, Ok(1), "the retry gets the original answer");
        assert!(retry.duplicate);
        assert!(watcher.try_next().is_some(), "the change, once committed");
        assert!(watcher.try_next().is_none(), "and only once");
        assert_eq!(get(&node, "pump-1").await.outcome, Ok(1), "applied once");
        assert!(node.stuck().is_none());
    });
}

#[test]
fn a_stalled_store_times_requests_out_and_reports_the_host_stuck() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let (node, faults) = start(dir.path(), one_host());
        register(&node, "pump-2").await;
        assert_eq!(
            get(&node, "pump-2").await.outcome.map_err(|e| e.code),
            Err(404)
        );
        faults.stall();
        let body = json!({"state": {"desired": {"speed": 1}}});
        let started = Instant::now();
        let timed_out = node
            .call(thing("pump-2"), update_command(&node, body), None)
            .await;
        assert!(
            matches!(timed_out, Err(actors::NodeError::Timeout(_))),
            "{timed_out:?}"
        );
        assert!(started.elapsed() >= Duration::from_millis(500));
        until("the host reported stuck", || node.stuck().is_some()).await;
        assert!(node.stuck().unwrap().contains("in flight"));
        faults.resume();
        until("the host recovered", || node.stuck().is_none()).await;
        // The change itself was not lost: the commit went through once the store came back.
        assert_eq!(get(&node, "pump-2").await.outcome, Ok(1));
    });
}

#[test]
fn a_commit_the_store_refuses_for_good_drops_its_changes_not_the_host() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let (node, faults) = start(dir.path(), one_host());
        register(&node, "pump-3").await;
        register(&node, "pump-4").await;
        faults.fail_next_commit(Fault::Permanent);
        let body = json!({"state": {"desired": {"speed": 9}}});
        let refused = node
            .call(thing("pump-3"), update_command(&node, body), None)
            .await;
        assert!(
            matches!(refused, Err(actors::NodeError::Stopped)),
            "the sender learns it failed: {refused:?}"
        );
        // The twin reloads from what is stored: the change never happened.
        assert_eq!(
            get(&node, "pump-3").await.outcome.map_err(|e| e.code),
            Err(404)
        );
        // The host goes on committing, for this twin and the others.
        let body = json!({"state": {"desired": {"speed": 2}}});
        let again = node
            .call(thing("pump-3"), update_command(&node, body.clone()), None)
            .await
            .unwrap();
        assert_eq!(again.outcome, Ok(1), "numbered as the first change");
        let other = node
            .call(thing("pump-4"), update_command(&node, body), None)
            .await
            .unwrap();
        assert_eq!(other.outcome, Ok(1));
        assert!(node.stuck().is_none());
        node.flush().await;
    });
}

#[test]
fn a_rule_deadline_survives_a_commit_the_store_refuses() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let (node, faults) = start(dir.path(), one_host());
        register(&node, "boiler-1").await;
        let source = r#"
rule hot for thing "boiler-1" {
  when exists(reported.t) and reported.t > 90 for 1s
  then { alert Hot severity major "hot" }
}
"#;
        node.directory()
            .put_rule("hot", source.into(), "test", actors::now_ms())
            .unwrap();
        // The hold starts and is committed with its deadline.
        let reply = update(&node, "boiler-1", json!({"state": {"reported": {"t": 95}}})).await;
        assert_eq!(reply.outcome, Ok(1));
        // The next change is refused for good: the twin, timer and all, is forgotten.
        faults.fail_next_commit(Fault::Permanent);
        let refused = node
            .call(
                thing("boiler-1"),
                update_command(&node, json!({"state": {"desired": {"mode": "eco"}}})),
                None,
            )
            .await;
        assert!(refused.is_err(), "{refused:?}");
        // The hold still fires: the twin was woken again from what was committed.
        let alerts = || {
            node.directory()
                .rule_log(actors::directory::LogKind::Alert, (0, u64::MAX), None, 10)
                .unwrap()
        };
        until("the alert", || !alerts().is_empty()).await;
        assert_eq!(alerts().len(), 1);
    });
}

#[test]
fn a_flush_commits_what_reaches_the_window_while_it_waits() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        // A commit window far longer than the test: only flushes commit.
        let config = NodeConfig {
            commit_window: Duration::from_secs(3600),
            ..one_host()
        };
        let config = NodeConfig {
            request_timeout: Duration::from_secs(30),
            ..config
        };
        let (node, faults) = start(dir.path(), config);
        register(&node, "pump-a").await;
        register(&node, "pump-b").await;
        faults.stall();
        let before = faults.attempts();
        let update = |name: &'static str| {
            let node = node.clone();
            let command = update_command(&node, json!({"state": {"desired": {"on": true}}}));
            tokio::spawn(async move { node.call(thing(name), command, None).await })
        };
        let pending = async |n: usize| {
            let deadline = Instant::now() + Duration::from_secs(10);
            while node.stats().await.pending < n {
                assert!(
                    Instant::now() < deadline,
                    "{n} twins never reached the window"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        // A's change commits on a first flush, and that commit stalls.
        let a = update("pump-a");
        pending(1).await;
        let first = tokio::spawn({
            let node = node.clone();
            async move { node.flush().await }
        });
        until("A's commit started", || faults.attempts() > before).await;
        // B's change reaches the window while A's commit is in flight; the node is asked to
        // flush again (a stop).
        let b = update("pump-b");
        pending(1).await;
        let second = tokio::spawn({
            let node = node.clone();
            async move { node.flush().await }
        });
        faults.resume();
        // Both flushes end with B committed, long before the window's hour.
        tokio::time::timeout(Duration::from_secs(10), async {
            first.await.unwrap();
            second.await.unwrap();
        })
        .await
        .expect("the flushes ended");
        assert_eq!(a.await.unwrap().unwrap().outcome, Ok(1));
        assert_eq!(b.await.unwrap().unwrap().outcome, Ok(1));
    });
}
