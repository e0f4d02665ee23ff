//! The embedded store through many memtable flushes and compactions (the code paths the
//! vendored LSM tree changes): ~90 MB of writes, overwrites and deletes in batches while readers
//! read concurrently, then every key checked, again after reopening the store.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};
use storage::{FjallStore, RangeOptions, Store, Subspace, Transaction};

const KEYS: u32 = 30_000;
const ROUNDS: u32 = 3;
const BATCH: u32 = 500;

fn space() -> Subspace {
    Subspace::all().subspace(&"compaction")
}

fn value(key: u32, round: u32) -> Vec<u8> {
    let mut v = format!("key {key} round {round} ").into_bytes();
    v.resize(1_000, b'.');
    v
}

/// What key `key` holds after every round: the last round's value, or nothing for every fourth
/// key (deleted in the last round).
fn expected(key: u32) -> Option<Vec<u8>> {
    (!key.is_multiple_of(4)).then(|| value(key, ROUNDS - 1))
}

fn check(store: &FjallStore) {
    let all = store
        .transact(|tx| tx.get_range(&space().range().into(), RangeOptions::default()))
        .unwrap();
    let want: Vec<(Vec<u8>, Vec<u8>)> = (0..KEYS)
        .filter_map(|k| expected(k).map(|v| (space().pack(&k), v)))
        .collect();
    assert_eq!(all.len(), want.len(), "keys after the rounds");
    for ((key, value), (want_key, want_value)) in all.iter().zip(&want) {
        assert_eq!(key, want_key);
        assert!(
            value == want_value,
            "value of {:?}",
            space().unpack::<u32>(key)
        );
    }
    for key in (0..KEYS).step_by(997) {
        let got = store.transact(|tx| tx.get(&space().pack(&key))).unwrap();
        assert_eq!(got, expected(key), "point read of {key}");
    }
}

#[test]
fn every_key_survives_flushes_compactions_and_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = FjallStore::open(dir.path()).unwrap();
    // Readers run alongside, so that reads race the version changes of flushes and compactions.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut reads = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = (reads as u32 * 7_919) % KEYS;
                let got = store.transact(|tx| tx.get(&space().pack(&key))).unwrap();
                if let Some(v) = got {
                    assert!(v.starts_with(format!("key {key} round ").as_bytes()));
                }
                reads += 1;
            }
            reads
        })
    };
    for round in 0..ROUNDS {
        for start in (0..KEYS).step_by(BATCH as usize) {
            store
                .transact(|tx| {
                    for key in start..start + BATCH {
                        if round == ROUNDS - 1 && key.is_multiple_of(4) {
                            tx.clear(&space().pack(&key))?;
                        } else {
                            tx.set(&space().pack(&key), &value(key, round))?;
                        }
                    }
                    Ok(())
                })
                .unwrap();
        }
    }
    stop.store(true, Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0);
    // The tree flushed several memtables' worth: well over the 8 MiB memtable, several times.
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.disk_space().unwrap() < 16 << 20 {
        assert!(Instant::now() < deadline, "the store never flushed to disk");
        std::thread::sleep(Duration::from_millis(50));
    }
    check(&store);
    drop(store);
    let store = FjallStore::open(dir.path()).unwrap();
    check(&store);
}
