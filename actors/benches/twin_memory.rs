//! Heap bytes per resident twin, by component: a node in process on the embedded store
//! activates `DOPPEL_BENCH_TWINS` (100,000) twins with ~200 bytes of reported state each, then
//! lets them all passivate; the heap they held is the difference (a counting allocator measures
//! it, so the store's own memory, which stays, is not counted). Printed beside it: the encoded
//! record, and the sizes of the host's map slot and of the resident twin's struct.
//!
//! `cargo bench -p actors --bench twin_memory`.

use actors::{
    Node, NodeConfig,
    directory::{Directory, NewThing},
    hub::ChangeHub,
    mqtt::Sessions,
};
use serde_json::json;
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};
use std::{
    alloc::System,
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};
use storage::{AnyStore, FjallStore, Repos};
use twin_core::{Command, Context, Limits, ShadowName, ThingName, Twin, request};

#[global_allocator]
static ALLOCATOR: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Heap bytes allocated and not yet freed.
fn heap() -> isize {
    let stats = ALLOCATOR.stats();
    stats.bytes_allocated as isize - stats.bytes_deallocated as isize + stats.bytes_reallocated
}

fn state() -> serde_json::Value {
    json!({"state": {"reported": {
        "temp": 21.5, "hum": 40, "battery": 97, "firmware": "1.4.2", "mode": "auto",
        "site": "plant-3", "line": 7, "alarm": false, "setpoint": 22.0, "rpm": 1450,
        "label": "pump on line seven, east side"
    }}})
}

fn main() {
    let twins: usize = std::env::var("DOPPEL_BENCH_TWINS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    actix_rt::System::new().block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let store = AnyStore::from(FjallStore::open(dir.path()).unwrap());
        let directory = Arc::new(Directory::load(store, Repos::default()).unwrap());
        let config = NodeConfig {
            passivate_after: Duration::from_secs(3),
            history: actors::HistoryConfig {
                enabled: false,
                ..actors::HistoryConfig::default()
            },
            ..NodeConfig::default()
        };
        let node = Node::start(directory, config, Sessions::new(), ChangeHub::new());
        let names: Vec<ThingName> = (0..twins)
            .map(|i| ThingName::new(&format!("m-{i:07}")).unwrap())
            .collect();
        for chunk in names.chunks(10_000) {
            let things = chunk
                .iter()
                .map(|name| NewThing {
                    name: name.clone(),
                    device_type: None,
                    attributes: BTreeMap::new(),
                })
                .collect();
            node.register_many(things, "bench").await.unwrap();
        }
        let body = state().to_string();
        let limits = Limits::default();
        let before = heap();
        let started = Instant::now();
        for chunk in names.chunks(1_000) {
            let calls = chunk.iter().map(|name| {
                let req =
                    request::parse_update(ShadowName::CLASSIC, body.as_bytes(), &limits).unwrap();
                node.call(name.clone(), Command::Update(req), None)
            });
            for reply in futures::future::join_all(calls).await {
                reply.unwrap().outcome.unwrap();
            }
        }
        node.flush().await;
        let active = heap();
        let activation = started.elapsed();
        // Every twin idle: wait until all are passivated (the store keeps what it holds).
        let deadline = Instant::now() + Duration::from_secs(120);
        while node.stats().await.active > 0 {
            assert!(Instant::now() < deadline, "twins were not passivated");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let idle = heap();
        let per_twin = (active - idle) as f64 / twins as f64;

        // The encoded record of one such twin.
        let mut twin = Twin::new(names[0].clone());
        let req = request::parse_update(ShadowName::CLASSIC, body.as_bytes(), &limits).unwrap();
        let ctx = Context {
            limits: &limits,
            device_type: None,
            documents: false,
        };
        twin.handle(Command::Update(req), &ctx, 1, &mut Vec::new());
        let record = twin.encode().len();

        println!(
            "twin memory: {twins} twins activated in {:.1} s; heap {} MB before, {} MB active, {} MB once passivated",
            activation.as_secs_f64(),
            before >> 20,
            active >> 20,
            idle >> 20
        );
        println!("  per resident twin: {per_twin:.0} B of heap in all");
        println!("  - encoded record (state ~200 B as JSON): {record} B");
        for (what, size) in actors::resident_sizes() {
            println!("  - {what}: {size} B (struct size)");
        }
        println!(
            "  - the rest (the map's slack, the record's shared header, allocator rounding): {:.0} B",
            per_twin
                - record as f64
                - actors::resident_sizes()
                    .iter()
                    .map(|(_, s)| *s as f64)
                    .sum::<f64>()
        );
        node.stop();
    });
}
