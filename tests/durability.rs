//! Durability of a real node: `kill -9` during a burst of QoS 1 shadow updates loses nothing
//! that was acknowledged (PUBACK or `accepted`) — on the embedded store and on PostgreSQL —,
//! PUBACKs wait for the commit, and SIGTERM flushes pending commits and exits 0.

use doppel_tests::{
    device::{self, Seen},
    node::{Node, Options},
};
use serde_json::json;
use std::collections::{HashMap, VecDeque};
use storage::pg_server::LocalServer;

const BIN: &str = env!("CARGO_BIN_EXE_doppel");

/// What one device learned about its updates before the node died.
#[derive(Default, Debug)]
struct Acked {
    /// Highest `seq` whose PUBACK arrived.
    puback: u64,
    /// Highest `seq` whose `update/accepted` arrived.
    accepted: u64,
    /// Updates published.
    sent: u64,
}

#[tokio::test(flavor = "multi_thread")]
async fn every_acknowledged_update_survives_kill_9() {
    kill_9_mid_burst(Options::default()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_acknowledged_update_survives_kill_9_on_postgresql() {
    let server = LocalServer::start().unwrap_or_else(|e| panic!("{e}"));
    kill_9_mid_burst(Options {
        store: Some(format!("{}?schema=durability", server.url())),
        ..Options::default()
    })
    .await;
}

/// Devices publish numbered updates as fast as they may; the node is killed once enough were
/// acknowledged, restarted on the same store, and every acknowledged update must be there.
async fn kill_9_mid_burst(options: Options) {
    const DEVICES: usize = 6;
    const PER_DEVICE: u64 = 5_000;
    const KILL_AFTER_ACKS: u64 = 600;
    // More shadow requests may wait than the window holds: past AWS IoT's 10 a
    // device would get 429s (refused, acknowledged, not stored), which is not under test here.
    let options = Options {
        config: Some("[node.mqtt]\nmax_shadow_inflight = 1000\n".into()),
        ..options
    };
    let mut node = Node::start(BIN, options);
    let mut devices = Vec::new();
    for i in 0..DEVICES {
        let thing = format!("burst-{i}");
        let token = node.register(&thing).await;
        let mut d = device::connect(node.mqtt(), &thing, &token).await.unwrap();
        d.subscribe(&format!("$aws/things/{thing}/shadow/update/accepted"))
            .await;
        devices.push((thing, d));
    }
    // Every device publishes numbered updates as fast as its QoS 1 window allows.
    for (thing, d) in &devices {
        let (client, thing) = (d.client.clone(), thing.clone());
        tokio::spawn(async move {
            for seq in 1..=PER_DEVICE {
                let update =
                    json!({"state": {"reported": {"seq": seq}}, "clientToken": seq.to_string()});
                let topic = format!("$aws/things/{thing}/shadow/update");
                if client
                    .publish(topic, rumqttc::QoS::AtLeastOnce, false, update.to_string())
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
    }
    // Follow acknowledgements until enough arrived, then kill the node mid-burst.
    let mut acked: Vec<Acked> = (0..DEVICES).map(|_| Acked::default()).collect();
    let mut in_flight: Vec<HashMap<u16, u64>> = vec![HashMap::new(); DEVICES];
    let mut unsent: Vec<VecDeque<u64>> = vec![(1..=PER_DEVICE).collect(); DEVICES];
    let mut total = 0;
    let mut record = |i: usize, seen: Seen, acked: &mut Vec<Acked>| -> u64 {
        match seen {
            Seen::Sent(pkid) => {
                let seq = unsent[i].pop_front().unwrap();
                in_flight[i].insert(pkid, seq);
                acked[i].sent = seq;
                0
            }
            Seen::PubAck(pkid) => {
                let seq = in_flight[i]
                    .remove(&pkid)
                    .expect("a PUBACK for a sent publish");
                acked[i].puback = acked[i].puback.max(seq);
                1
            }
            Seen::Message(_, payload) => {
                let reply: serde_json::Value = serde_json::from_slice(&payload).unwrap();
                let seq: u64 = reply["clientToken"].as_str().unwrap().parse().unwrap();
                acked[i].accepted = acked[i].accepted.max(seq);
                0
            }
            _ => 0,
        }
    };
    while total < KILL_AFTER_ACKS {
        for (i, (_, d)) in devices.iter_mut().enumerate() {
            for seen in d.drain() {
                total += record(i, seen, &mut acked);
            }
        }
        tokio::task::yield_now().await;
    }
    node.kill9();
    // Acknowledgements that reached the devices before the kill count too.
    for (i, (_, d)) in devices.iter_mut().enumerate() {
        loop {
            let seen = d.next().await;
            if matches!(seen, Seen::Closed(_)) {
                break;
            }
            record(i, seen, &mut acked);
        }
    }

    println!("before the kill: {acked:?}");
    node.restart();
    for (i, (thing, _)) in devices.iter().enumerate() {
        let (status, doc) = node.shadow(thing, None).await;
        let a = &acked[i];
        if status == 404 {
            // Nothing of this device's was stored: then nothing may have been acknowledged.
            assert_eq!(
                (a.puback, a.accepted),
                (0, 0),
                "{thing}: acknowledged, then lost: {doc}"
            );
            continue;
        }
        assert_eq!(status, 200, "{thing}: {doc}");
        let stored = doc["state"]["reported"]["seq"]
            .as_u64()
            .unwrap_or_else(|| panic!("{thing}: no seq in {doc}"));
        assert!(
            stored >= a.puback,
            "{thing}: PUBACK for {} but only {stored} survived",
            a.puback
        );
        assert!(
            stored >= a.accepted,
            "{thing}: accepted {} but only {stored} survived",
            a.accepted
        );
        assert!(
            stored <= a.sent,
            "{thing}: {stored} stored, only {} sent",
            a.sent
        );
        assert!(
            a.sent < PER_DEVICE,
            "{thing}: the burst was still running when the node died"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pubacks_wait_for_the_commit_and_sigterm_flushes_it() {
    // A commit window far longer than the test: nothing commits unless the shutdown flushes.
    let config = "[node]\ncommit_window = \"1h\"\n";
    let mut node = Node::start(
        BIN,
        Options {
            config: Some(config.into()),
            ..Options::default()
        },
    );
    let token = node.register("slow-1").await;
    let mut d = device::connect(node.mqtt(), "slow-1", &token)
        .await
        .unwrap();
    d.publish(
        "$aws/things/slow-1/shadow/update",
        &json!({"state": {"reported": {"fw": "2.0"}}}),
    )
    .await;
    // Two round trips after the publish: the endpoint has handed the update to its twin, and an
    // early PUBACK would have been written by now.
    d.subscribe("$aws/things/slow-1/shadow/get/accepted").await;
    d.subscribe("$aws/things/slow-1/shadow/update/accepted")
        .await;
    let seen = d.drain();
    assert!(seen.iter().any(|s| matches!(s, Seen::Sent(_))), "{seen:?}");
    assert!(
        !seen.iter().any(|s| matches!(s, Seen::PubAck(_))),
        "no PUBACK before the commit: {seen:?}"
    );

    let status = node.terminate();
    assert!(
        status.success(),
        "SIGTERM exits 0, got {status}:\n{}",
        node.log()
    );
    node.restart();
    let (status, doc) = node.shadow("slow-1", None).await;
    assert_eq!(
        (status, doc["state"]["reported"]["fw"].as_str()),
        (200, Some("2.0")),
        "the pending commit was flushed"
    );
}
