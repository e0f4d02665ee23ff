//! The operator CLI (`doppel things|keys|shadow|rules|watch|admin`) against a real node, as an
//! operator runs it: human output, `--json`, `--get`, one-line errors and exit codes; and the
//! bootstrap admin token across restarts and rotations.

use doppel_tests::{
    device,
    node::{ADMIN_TOKEN, Node, Options},
};
use serde_json::Value;
use std::{
    io::{BufRead, BufReader},
    process::{Command, Output, Stdio},
};

const BIN: &str = env!("CARGO_BIN_EXE_doppel");

/// Runs `doppel ARGS…` against `node` with `key`.
fn doppel(node: &Node, key: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("DOPPEL_URL", node.url(""))
        .env("DOPPEL_KEY", key)
        .env_remove("DOPPEL_LOG")
        .output()
        .expect("doppel runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs a command that must succeed; its stdout.
fn ok(node: &Node, key: &str, args: &[&str]) -> String {
    let output = doppel(node, key, args);
    assert!(
        output.status.success(),
        "doppel {args:?} failed: {}",
        stderr(&output)
    );
    stdout(&output)
}

/// Runs a command that must fail with `code`; its one-line error.
fn fails(node: &Node, key: &str, args: &[&str], code: i32) -> String {
    let output = doppel(node, key, args);
    assert_eq!(
        output.status.code(),
        Some(code),
        "doppel {args:?}: {}{}",
        stdout(&output),
        stderr(&output)
    );
    let error = stderr(&output);
    assert_eq!(error.lines().count(), 1, "one line: {error:?}");
    assert!(error.starts_with("error: "), "{error}");
    error.trim_end().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn things_keys_and_shadows_from_the_command_line() {
    let node = Node::start(BIN, Options::default());
    // things add: the token is shown once, and works as the device's password.
    let added = ok(
        &node,
        ADMIN_TOKEN,
        &["things", "add", "pump-7", "--attr", "site=b"],
    );
    assert!(added.starts_with("registered pump-7\n"), "{added}");
    let token = ok(
        &node,
        ADMIN_TOKEN,
        &["things", "add", "pump-8", "--get", "token"],
    );
    let token = token.trim();
    assert_eq!(token.len(), 64, "{token}");
    assert!(device::connect(node.mqtt(), "pump-8", token).await.is_ok());
    assert_eq!(
        fails(&node, ADMIN_TOKEN, &["things", "add", "pump-7"], 4),
        "error: thing \"pump-7\" already exists"
    );
    // list, get, --json
    let listed = ok(&node, ADMIN_TOKEN, &["things", "list"]);
    assert_eq!(listed, "pump-7  site=b\npump-8\n");
    let json: Value = serde_json::from_str(&ok(
        &node,
        ADMIN_TOKEN,
        &["things", "get", "pump-7", "--json"],
    ))
    .unwrap();
    assert_eq!(json["attributes"]["site"], "b");
    // keys add (--get key), list, revoke
    let key = ok(
        &node,
        ADMIN_TOKEN,
        &["keys", "add", "--role", "operator", "--get", "key"],
    );
    let key = key.trim().to_owned();
    let id = key.split('_').nth(1).unwrap().to_owned();
    assert!(ok(&node, ADMIN_TOKEN, &["keys", "list"]).contains(&format!("{id}  operator")));
    // shadow update and get with the operator key; If-Match
    fails(&node, &key, &["shadow", "get", "pump-7"], 3);
    assert_eq!(
        ok(
            &node,
            &key,
            &["shadow", "update", "pump-7", "--desired", r#"{"speed": 4}"#]
        ),
        "pump-7 version 1\n"
    );
    let version = ok(
        &node,
        &key,
        &["shadow", "get", "pump-7", "--get", "version"],
    );
    assert_eq!(version.trim(), "1");
    assert_eq!(
        ok(
            &node,
            &key,
            &[
                "shadow",
                "update",
                "pump-7",
                "--if-match",
                "1",
                "--desired",
                r#"{"speed": 5}"#
            ]
        ),
        "pump-7 version 2\n"
    );
    let conflict = fails(
        &node,
        &key,
        &[
            "shadow",
            "update",
            "pump-7",
            "--if-match",
            "1",
            "--desired",
            r#"{"speed": 6}"#,
        ],
        4,
    );
    assert!(conflict.contains("version"), "{conflict}");
    let shown = ok(&node, &key, &["shadow", "get", "pump-7"]);
    assert_eq!(
        shown,
        "pump-7 version 2\ndesired: {\"speed\":5}\ndelta: {\"speed\":5}\n"
    );
    fails(
        &node,
        &key,
        &["shadow", "update", "pump-7", "--desired", "[1]"],
        2,
    );
    // An operator may not register things; a revoked key is refused.
    fails(&node, &key, &["things", "add", "x-1"], 5);
    ok(&node, ADMIN_TOKEN, &["keys", "revoke", &id]);
    fails(&node, &key, &["things", "list"], 5);
    // rm
    assert_eq!(
        ok(&node, ADMIN_TOKEN, &["things", "rm", "pump-8"]),
        "decommissioned pump-8\n"
    );
    fails(&node, ADMIN_TOKEN, &["things", "get", "pump-8"], 3);
    // Without a key, or without a node.
    let output = Command::new(BIN)
        .args(["things", "list"])
        .env("DOPPEL_URL", node.url(""))
        .env_remove("DOPPEL_KEY")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(5));
    assert_eq!(
        stderr(&output).trim(),
        "error: no key: pass --key or set DOPPEL_KEY"
    );
    let output = Command::new(BIN)
        .args([
            "things",
            "list",
            "--url",
            "http://127.0.0.1:1",
            "--key",
            "k",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(6));
    assert!(stderr(&output).starts_with("error: cannot reach the node at http://127.0.0.1:1"));
}

#[tokio::test(flavor = "multi_thread")]
async fn rules_are_put_listed_shown_and_removed() {
    let node = Node::start(BIN, Options::default());
    ok(&node, ADMIN_TOKEN, &["things", "add", "pump-7"]);
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("hot.rules");
    let source = "rule hot for thing \"pump-7\" {\n  when (telemetry.temp ?? 0) > 80\n  then { alert Hot severity major \"hot\" }\n}\n";
    std::fs::write(&good, source).unwrap();
    let bad = dir.path().join("bad.rules");
    std::fs::write(
        &bad,
        "rule bad for thing \"pump-7\" {\n  when telemetry.temp >\n}\n",
    )
    .unwrap();
    let good = good.to_str().unwrap();
    assert_eq!(
        ok(&node, ADMIN_TOKEN, &["rules", "put", "hot", good]),
        "stored rule hot\n"
    );
    assert_eq!(ok(&node, ADMIN_TOKEN, &["rules", "list"]), "hot\n");
    assert_eq!(ok(&node, ADMIN_TOKEN, &["rules", "get", "hot"]), source);
    let error = fails(
        &node,
        ADMIN_TOKEN,
        &["rules", "put", "bad", bad.to_str().unwrap()],
        2,
    );
    assert!(error.contains("bad.rules"), "{error}");
    // check and test stay offline: no node needed.
    let offline = Command::new(BIN)
        .args(["rules", "check", good, "--url", "http://127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(offline.status.success(), "{}", stderr(&offline));
    assert_eq!(
        ok(&node, ADMIN_TOKEN, &["rules", "rm", "hot"]),
        "removed rule hot\n"
    );
    fails(&node, ADMIN_TOKEN, &["rules", "get", "hot"], 3);
    assert_eq!(ok(&node, ADMIN_TOKEN, &["rules", "list"]), "no rules\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_prints_changes_as_they_happen() {
    let node = Node::start(BIN, Options::default());
    ok(&node, ADMIN_TOKEN, &["things", "add", "pump-7"]);
    ok(
        &node,
        ADMIN_TOKEN,
        &["shadow", "update", "pump-7", "--desired", r#"{"speed": 1}"#],
    );
    let mut watch = Command::new(BIN)
        .args(["watch", "pump-7", "--count", "2"])
        .env("DOPPEL_URL", node.url(""))
        .env("DOPPEL_KEY", ADMIN_TOKEN)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    // The snapshot comes first: once it is printed, the subscription is in place.
    let first = lines.next().unwrap().unwrap();
    assert_eq!(
        first,
        r#"snapshot pump-7 v1 {"delta":{"speed":1},"desired":{"speed":1}}"#
    );
    ok(
        &node,
        ADMIN_TOKEN,
        &["shadow", "update", "pump-7", "--desired", r#"{"speed": 4}"#],
    );
    let second = lines.next().unwrap().unwrap();
    assert_eq!(
        second,
        r#"change pump-7 v2 desired {"speed":4} delta {"speed":4}"#
    );
    let status = watch.wait().unwrap();
    assert!(status.success(), "watch ends after --count frames");
    // An unknown thing is an error with its exit code.
    fails(&node, ADMIN_TOKEN, &["watch", "nope"], 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_generated_admin_token_survives_restarts_and_rotates() {
    let mut node = Node::start(
        BIN,
        Options {
            no_admin_token: true,
            ..Options::default()
        },
    );
    let printed = |node: &Node| {
        node.announced
            .iter()
            .find_map(|l| l.strip_prefix("doppel: generated admin token "))
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_owned)
    };
    let token = printed(&node).expect("printed at the first start");
    ok(&node, &token, &["things", "add", "one"]);
    assert!(node.terminate().success());
    node.restart();
    assert_eq!(printed(&node), None, "not printed again");
    assert_eq!(
        ok(&node, &token, &["things", "list"]),
        "one\n",
        "the same token works"
    );
    // Rotation: the new token works at once, the old one no longer; a restart keeps the new one.
    let rotated = ok(&node, &token, &["admin", "rotate-key", "--get", "token"]);
    let rotated = rotated.trim().to_owned();
    assert_ne!(rotated, token);
    fails(&node, &token, &["things", "list"], 5);
    ok(&node, &rotated, &["things", "list"]);
    assert!(node.terminate().success());
    node.restart();
    ok(&node, &rotated, &["things", "list"]);
    fails(&node, &token, &["things", "list"], 5);
    // The audit log records each change of the token, never the token.
    let audit = reqwest::Client::new()
        .get(node.url("/v1/audit?from=0"))
        .bearer_auth(&rotated)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        audit.contains("admin.generate") && audit.contains("admin.rotate"),
        "{audit}"
    );
    assert!(!audit.contains(&rotated) && !audit.contains(&token));
}

#[test]
fn logs_have_one_format_and_colour_only_on_a_terminal() {
    let node = Node::start(
        BIN,
        Options {
            args: vec!["--log-format".into(), "json".into()],
            ..Options::default()
        },
    );
    // The node logs its start; every line of the log is one JSON object.
    let log = node.log();
    let lines: Vec<Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line:?}")))
        .collect();
    assert!(
        lines.iter().any(|l| l["fields"]["message"] == "node ready"),
        "{log}"
    );
    // Text logs written to a file carry no colour codes.
    let text = Node::start(BIN, Options::default());
    let log = text.log();
    assert!(log.contains("node ready"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "no ANSI codes in a log file: {log:?}"
    );
}

#[test]
fn serve_help_shows_defaults_and_the_environment() {
    let output = Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = stdout(&output);
    for needle in [
        "[default: ./doppel-data]",
        "[default: 127.0.0.1:1883]",
        "[default: 127.0.0.1:8080]",
        "DOPPEL_ADMIN_TOKEN",
        "DOPPEL_LOG",
        "--log-format",
    ] {
        assert!(help.contains(needle), "{needle} missing from:\n{help}");
    }
}
