//! Helpers for doppel's end-to-end tests: start real `doppel serve` processes, talk to them
//! over HTTP and MQTT, drive twins directly for cross-crate tests. No mocks: every helper
//! speaks to a real process over loopback.

pub mod api;
pub mod broker;
pub mod cluster;
pub mod device;
pub mod doc;
pub mod node;
pub mod tls;
pub mod twins;
pub mod ws;

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

/// The Python that runs the outside clients (the AWS IoT Device SDK, schemathesis, selenium):
/// `DOPPEL_PYTHON`, or the workspace's `.venv` that `scripts/test` makes from
/// `tests/requirements.txt`.
pub fn python() -> PathBuf {
    if let Some(python) = std::env::var_os("DOPPEL_PYTHON") {
        return python.into();
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    assert!(
        venv.exists(),
        "no Python with the test clients in .venv: `scripts/test` creates it from tests/requirements.txt (or set DOPPEL_PYTHON)"
    );
    venv
}

/// Waits until `check` returns `Some`, polling every 20 ms, for at most `timeout`.
pub async fn eventually<T>(
    timeout: Duration,
    what: &str,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `check` holds, polling every 50 ms, for at most `within`.
pub async fn until(what: &str, within: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
