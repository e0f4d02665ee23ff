//! Batched twin-write throughput on each backend this machine can run — the embedded store,
//! then PostgreSQL (a private server started here, `fsync` on): N twins (default 1,000,000, or
//! `DOPPEL_BENCH_TWINS`) with ~200 bytes of reported state each, written 1,000 per transaction
//! (`DOPPEL_BENCH_BATCH`) in random key order, every commit durable; then the same twins
//! overwritten once. `DOPPEL_BENCH_STORES=fjall` (or `postgres`) runs one.
//! Run with `cargo bench -p storage --bench twin_writes`.

use serde_json::json;
use std::time::{Duration, Instant};
use storage::{FjallStore, PgStore, Repos, Store, pg_server::LocalServer};
use twin_core::{Command, Context, Limits, ShadowName, ThingName, Twin, request};

fn batch_size() -> usize {
    std::env::var("DOPPEL_BENCH_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000)
}

fn reported(i: u64, pass: u64) -> serde_json::Value {
    json!({
        "temp": 20.0 + (i % 100) as f64 / 10.0, "hum": 40 + i % 30, "pressure": 1013 + pass,
        "status": "ok", "fw": "1.4.2", "battery": 87, "rssi": -67,
        "location": {"lat": 48.137, "lon": 11.575}, "mode": "auto", "door": "closed",
        "alarm": false, "uptime_s": 86_400 + i
    })
}

fn twin(i: u64, pass: u64) -> (ThingName, Vec<u8>) {
    let thing = ThingName::new(&format!("dev-{:07}", i)).unwrap();
    let mut twin = Twin::new(thing.clone());
    let limits = Limits::default();
    let ctx = Context {
        limits: &limits,
        device_type: None,
        documents: false,
    };
    let state = json!({"state": {"reported": reported(i, pass)}});
    let update =
        request::parse_update(ShadowName::CLASSIC, state.to_string().as_bytes(), &limits).unwrap();
    twin.handle(
        Command::Update(update),
        &ctx,
        1_700_000_000_000 + pass,
        &mut Vec::new(),
    );
    (thing, twin.encode())
}

fn main() {
    let n: u64 = std::env::var("DOPPEL_BENCH_TWINS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let stores = std::env::var("DOPPEL_BENCH_STORES").unwrap_or_else(|_| "fjall,postgres".into());
    for name in stores.split(',') {
        match name {
            "fjall" => {
                let dir = tempfile::tempdir().unwrap();
                let store = FjallStore::open(dir.path()).unwrap();
                run("fjall", &store, n);
                println!("disk: {:.0} MB", store.disk_space().unwrap() as f64 / 1e6);
            }
            "postgres" => {
                let server = LocalServer::start_with(true).unwrap_or_else(|e| panic!("{e}"));
                let store = PgStore::open(&format!("{}?pool=2", server.url())).unwrap();
                run("postgresql", &store, n);
            }
            other => panic!("DOPPEL_BENCH_STORES: {other}? fjall or postgres"),
        }
    }
}

fn run<S: Store>(name: &str, store: &S, n: u64) {
    let batch = batch_size();
    let repos = Repos::default();
    let (_, sample) = twin(0, 0);
    let state_len = reported(0, 0).to_string().len();
    println!(
        "twin_writes on {name}: {n} twins, {state_len} B of state JSON, {} B per encoded twin record, {batch} per transaction",
        sample.len()
    );
    // A fixed permutation of 0..n: batches write keys in random order, as group commit does.
    let stride = 7_919_u64 * 104_729;
    for pass in 0..2u64 {
        let (mut committing, mut encoding) = (Duration::ZERO, Duration::ZERO);
        let started = Instant::now();
        let mut i = 0u64;
        while i < n {
            let t = Instant::now();
            let records: Vec<_> = (i..(i + batch as u64).min(n))
                .map(|j| twin((j * stride) % n, pass))
                .collect();
            encoding += t.elapsed();
            let t = Instant::now();
            store
                .transact(|tx| {
                    for (thing, bytes) in &records {
                        repos.twins.save_encoded(tx, thing, bytes)?;
                    }
                    Ok(())
                })
                .unwrap();
            committing += t.elapsed();
            i += batch as u64;
        }
        let total = started.elapsed();
        println!(
            "pass {} ({}): {:>9.0} twins/s committed ({:.1} s in transactions, {:.2} ms per {batch}-twin commit), {:.1} s building records, {:.1} s wall",
            pass + 1,
            if pass == 0 { "insert" } else { "overwrite" },
            n as f64 / committing.as_secs_f64(),
            committing.as_secs_f64(),
            committing.as_secs_f64() * 1000.0 / (n as f64 / batch as f64),
            encoding.as_secs_f64(),
            total.as_secs_f64(),
        );
    }
}
