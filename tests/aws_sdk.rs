//! An outside client: the AWS IoT Device SDK v2 for Python (PyPI `awsiotsdk`), unchanged, runs
//! its shadow client — get, update desired and reported, delta, named shadow, version conflict,
//! delete — against the node's endpoint over plain TCP, and through Mosquitto.
//!
//! Needs a Python with `awsiotsdk`: `DOPPEL_PYTHON`, or `.venv/bin/python` in the workspace
//! (`scripts/test` creates it from `tests/requirements.txt`).

use doppel_tests::{
    broker::Mosquitto,
    device::{self, WAIT},
    eventually,
    node::{Node, Options},
};
use serde_json::{Value, json};
use std::{net::SocketAddr, path::PathBuf, process::Command};

const BIN: &str = env!("CARGO_BIN_EXE_doppel");

fn python() -> PathBuf {
    if let Some(python) = std::env::var_os("DOPPEL_PYTHON") {
        return python.into();
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        venv.exists(),
        "no Python with awsiotsdk in .venv: `scripts/test` creates it from tests/requirements.txt (or set DOPPEL_PYTHON)"
    );
    venv
}

fn run_sdk(addr: SocketAddr, thing: &str, token: &str, extra: &[&str]) -> Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/aws_sdk/shadow_client.py");
    let output = Command::new(python())
        .arg(script)
        .args([
            addr.ip().to_string(),
            addr.port().to_string(),
            thing.to_owned(),
            token.to_owned(),
        ])
        .args(extra)
        .output()
        .expect("python runs");
    assert!(
        output.status.success(),
        "the SDK's shadow client failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the script prints what it saw")
}

fn expected() -> Value {
    json!({"get_rejected": 404, "delta": {"color": "red", "power": 3}, "version": 2, "deleted_version": 2})
}

#[tokio::test(flavor = "multi_thread")]
async fn the_aws_sdk_shadow_client_works_against_the_endpoint() {
    let node = Node::start(BIN, Options::default());
    let token = node.register("sdk-1").await;
    let seen = tokio::task::spawn_blocking({
        let addr = node.mqtt();
        move || run_sdk(addr, "sdk-1", &token, &[])
    })
    .await
    .unwrap();
    assert_eq!(seen, expected());
    assert_eq!(
        node.shadow("sdk-1", None).await.0,
        404,
        "the SDK deleted the classic shadow"
    );
    assert_eq!(
        node.shadow("sdk-1", Some("config")).await.1["state"]["reported"],
        json!({"interval": 60})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_aws_sdk_shadow_client_works_through_mosquitto() {
    let broker = Mosquitto::start();
    let node = Node::start(
        BIN,
        Options {
            args: vec!["--mqtt-url".into(), broker.doppel_url()],
            ..Options::default()
        },
    );
    let token = node.register("sdk-2").await;
    broker.add_user("sdk-2", &token);
    eventually(WAIT, "the broker to know the device", async || {
        device::connect(broker.addr, "sdk-2", &token).await.ok()
    })
    .await;
    let seen = tokio::task::spawn_blocking({
        let addr = broker.addr;
        move || run_sdk(addr, "sdk-2", &token, &["--no-metrics"])
    })
    .await
    .unwrap();
    assert_eq!(seen, expected());
    assert_eq!(
        node.shadow("sdk-2", Some("config")).await.1["state"]["reported"],
        json!({"interval": 60})
    );
}
