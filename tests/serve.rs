//! `doppel serve` as an operator runs it: configuration file and flags, the store URL, the
//! generated admin token, development mode, and QoS 0 devices.

use doppel_tests::{
    device::{self, WAIT},
    eventually,
    node::{Node, Options},
};
use serde_json::json;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_doppel");

#[test]
fn a_configuration_file_with_unknown_keys_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("doppel.toml");
    std::fs::write(
        &config,
        "data_dir = \"x\"\n[node]\ncommit_windw = \"5ms\"\n",
    )
    .unwrap();
    let output = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("commit_windw"),
        "the error names the key: {stderr}"
    );
    std::fs::write(&config, "[node.limits]\nmax_state_bytes = 100000\n").unwrap();
    let output = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!output.status.success(), "limits out of range are refused");
    assert!(String::from_utf8_lossy(&output.stderr).contains("max_state_bytes"));
}

#[test]
fn the_store_is_named_once_and_bad_store_urls_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let refused = |args: &[&str]| {
        let output = Command::new(BIN).arg("serve").args(args).output().unwrap();
        assert!(!output.status.success(), "{args:?} was accepted");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let both = refused(&["--data-dir", "a", "--store", "fjall:b"]);
    assert!(
        both.contains("--store") && both.contains("--data-dir"),
        "{both}"
    );
    let config = dir.path().join("doppel.toml");
    std::fs::write(&config, "data_dir = \"a\"\nstore = \"fjall:b\"\n").unwrap();
    let in_file = refused(&["--config", config.to_str().unwrap()]);
    assert!(in_file.contains("both `store` and `data_dir`"), "{in_file}");
    let unknown = refused(&["--store", "mysql://root:s3cret@db/x"]);
    assert!(unknown.contains("use fjall:PATH, postgres://"), "{unknown}");
    assert!(
        !unknown.contains("s3cret"),
        "the password stays out: {unknown}"
    );
    // This build has no FoundationDB backend; the error says how to get one.
    if !cfg!(feature = "fdb") {
        let fdb = refused(&["--store", "fdb:/etc/foundationdb/fdb.cluster"]);
        assert!(fdb.contains("--features fdb"), "{fdb}");
    }
    // A database that is not there: a clear error, not a hang.
    let absent = refused(&[
        "--store",
        "postgres://doppel@127.0.0.1:1/none?connect_timeout=1",
    ]);
    assert!(absent.contains("store unavailable"), "{absent}");
}

#[tokio::test(flavor = "multi_thread")]
async fn flags_win_over_the_configuration_file() {
    // The file asks for a fixed HTTP port and a tiny packet limit; the flag moves HTTP to an
    // ephemeral port, and the file's limit still applies.
    let config = "http_listen = \"127.0.0.1:1\"\n[node.mqtt]\nmax_packet_size = 2048\n";
    let node = Node::start(
        BIN,
        Options {
            config: Some(config.into()),
            ..Options::default()
        },
    );
    assert_ne!(node.http.port(), 1, "--http-listen overrides the file");
    let token = node.register("cfg-1").await;
    let mut d = device::connect(node.mqtt(), "cfg-1", &token).await.unwrap();
    d.publish_raw("things/cfg-1/telemetry", vec![b' '; 4096])
        .await;
    d.closed().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_without_an_admin_token_generates_and_prints_one() {
    let node = Node::start(
        BIN,
        Options {
            no_admin_token: true,
            ..Options::default()
        },
    );
    let token = node
        .announced
        .iter()
        .find_map(|l| l.strip_prefix("doppel: generated admin token "))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the generated token is printed")
        .to_owned();
    let client = reqwest::Client::new();
    let refused = client
        .post(node.url("/v1/things"))
        .bearer_auth("test-admin-token")
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let accepted = client
        .post(node.url("/v1/things"))
        .bearer_auth(&token)
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 201);
}

#[tokio::test(flavor = "multi_thread")]
async fn dev_mode_registers_unknown_devices_on_first_connect() {
    let node = Node::start(
        BIN,
        Options {
            args: vec!["--dev".into()],
            ..Options::default()
        },
    );
    let mut d = device::connect(node.mqtt(), "walk-in", "any password")
        .await
        .expect("dev mode lets it in");
    d.subscribe("$aws/things/walk-in/shadow/update/accepted")
        .await;
    d.request(
        "$aws/things/walk-in/shadow/update",
        &json!({"state": {"reported": {"ok": true}}}),
        "$aws/things/walk-in/shadow/update/accepted",
    )
    .await;
    assert_eq!(
        node.shadow("walk-in", None).await.1["state"]["reported"]["ok"],
        true
    );
    assert!(node.log().contains("DEV MODE"), "dev mode is loudly logged");

    let strict = Node::start(BIN, Options::default());
    assert!(
        device::connect(strict.mqtt(), "walk-in", "any password")
            .await
            .is_err(),
        "never the default"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn qos_0_telemetry_reaches_the_twin() {
    let node = Node::start(BIN, Options::default());
    let token = node.register("fire-and-forget").await;
    let d = device::connect(node.mqtt(), "fire-and-forget", &token)
        .await
        .unwrap();
    d.client
        .publish(
            "things/fire-and-forget/telemetry",
            rumqttc::QoS::AtMostOnce,
            false,
            r#"{"temp": 3}"#,
        )
        .await
        .unwrap();
    let temp = eventually(WAIT, "QoS 0 telemetry", async || {
        node.shadow("fire-and-forget", None).await.1["state"]["reported"]["temp"].as_u64()
    })
    .await;
    assert_eq!(temp, 3);
}
