//! Crash safety of the embedded store: a child process (this test binary, re-executed) commits
//! batches in a loop and prints each batch whose commit returned; the test kills it with
//! SIGKILL mid-stream, reopens the store, and checks that every reported batch is complete and
//! that no batch is partially visible. Three rounds on the same directory, so recovery after a
//! crash is itself crashed into.

use std::{
    io::{BufRead, BufReader, Write},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};
use storage::{FjallStore, KeyRange, RangeOptions, Store, Subspace, Transaction};

const CHILD_DIR: &str = "DOPPEL_CRASH_CHILD_DIR";
const CHILD_START: &str = "DOPPEL_CRASH_CHILD_START";
const KEYS_PER_BATCH: u32 = 40;
const TEST_NAME: &str = "committed_batches_survive_sigkill_and_no_batch_is_partial";

fn space() -> Subspace {
    Subspace::all().subspace(&"crash")
}

fn value(batch: u64, key: u32) -> Vec<u8> {
    let mut v = format!("batch {batch} key {key} ").into_bytes();
    v.resize(300, b'.');
    v
}

/// The child: commit batches forever, reporting each one that returned.
fn write_until_killed(dir: &str, start: u64) -> ! {
    let store = FjallStore::open(dir).expect("open");
    let out = std::io::stdout();
    for batch in start.. {
        store
            .transact(|tx| {
                for key in 0..KEYS_PER_BATCH {
                    tx.set(&space().pack(&(batch, key)), &value(batch, key))?;
                }
                Ok(())
            })
            .expect("commit");
        let mut out = out.lock();
        writeln!(out, "committed {batch}").unwrap();
        out.flush().unwrap();
    }
    unreachable!()
}

/// Batch number → keys present, for every batch in the store; checks values on the way.
fn batches_on_disk(dir: &std::path::Path) -> std::collections::BTreeMap<u64, u32> {
    let store = FjallStore::open(dir).expect("reopen after the crash");
    let pairs = store
        .transact(|tx| tx.get_range(&KeyRange::from(space().range()), RangeOptions::default()))
        .unwrap();
    let mut batches = std::collections::BTreeMap::new();
    for (k, v) in pairs {
        let (batch, key): (u64, u32) = space().unpack(&k).unwrap();
        assert_eq!(v, value(batch, key), "value of batch {batch} key {key}");
        *batches.entry(batch).or_insert(0) += 1;
    }
    batches
}

#[test]
fn committed_batches_survive_sigkill_and_no_batch_is_partial() {
    if let Ok(dir) = std::env::var(CHILD_DIR) {
        let start = std::env::var(CHILD_START).unwrap().parse().unwrap();
        write_until_killed(&dir, start);
    }
    let dir = tempfile::tempdir().unwrap();
    let mut start = 0u64;
    for (round, kill_after) in [25u64, 60, 7].into_iter().enumerate() {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([TEST_NAME, "--exact", "--nocapture"])
            .env(CHILD_DIR, dir.path())
            .env(CHILD_START, start.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(batch) = line.strip_prefix("committed ") {
                    let _ = tx.send(batch.parse::<u64>().unwrap());
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut reported = Vec::new();
        while (reported.len() as u64) < kill_after {
            let left = deadline.saturating_duration_since(Instant::now());
            reported.push(rx.recv_timeout(left).expect("the writer reports commits"));
        }
        child.kill().unwrap(); // SIGKILL, most likely in the middle of the next commit
        child.wait().unwrap();
        reader.join().unwrap();
        reported.extend(rx.try_iter()); // commits reported before the kill landed

        let on_disk = batches_on_disk(dir.path());
        let last_reported = *reported.iter().max().unwrap();
        for batch in start..=last_reported {
            assert_eq!(
                on_disk.get(&batch),
                Some(&KEYS_PER_BATCH),
                "round {round}: reported batch {batch} is incomplete"
            );
        }
        for (batch, keys) in &on_disk {
            assert_eq!(
                *keys, KEYS_PER_BATCH,
                "round {round}: batch {batch} is partial"
            );
        }
        start = on_disk.keys().max().unwrap() + 1;
    }
}
