//! `doppel sim` against a real `doppel serve`: a small direct-mode fleet for 10 s and a gateway
//! fleet, each checked through its JSON report and the twins it left behind; a refused token
//! stops the simulator with a clear error.

use doppel_tests::node::{ADMIN_TOKEN, Node, Options};
use serde_json::Value;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_doppel");

fn sim(node: &Node, token: &str, args: &[&str]) -> (std::process::Output, Option<Value>) {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let output = Command::new(BIN)
        .arg("sim")
        .args(["--mqtt", &node.mqtt().to_string()])
        .args(["--api", node.url("").trim_end_matches('/')])
        .args(["--token", token])
        .arg("--report")
        .arg(&report)
        .arg("--quiet")
        .args(args)
        .env_remove("DOPPEL_ADMIN_TOKEN")
        .output()
        .expect("doppel sim runs");
    let report = std::fs::read(&report)
        .ok()
        .map(|b| serde_json::from_slice(&b).expect("the report is JSON"));
    (output, report)
}

fn shadow_reported(node: &Node, thing: &str) -> Value {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async { node.shadow(thing, None).await.1["state"]["reported"].clone() })
}

#[test]
fn a_thousand_direct_devices_for_ten_seconds() {
    let node = Node::start(BIN, Options::default());
    let (output, report) = sim(
        &node,
        ADMIN_TOKEN,
        &[
            "--devices",
            "1000",
            "--rate",
            "1000",
            "--duration",
            "10s",
            "--prefix",
            "d",
        ],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let r = report.expect("a report");
    assert_eq!(r["registered"], 1000);
    assert_eq!(r["connected"], 1000);
    assert_eq!(r["errors"], serde_json::json!({}), "{stdout}");
    let (sent, acked) = (r["sent"].as_u64().unwrap(), r["acked"].as_u64().unwrap());
    // 1,000 msgs/s for 10 s on an absolute schedule.
    assert!((9_500..=10_500).contains(&sent), "sent {sent}");
    assert_eq!(acked, sent, "every message acknowledged");
    assert!(r["achieved_rate"].as_f64().unwrap() > 900.0, "{stdout}");
    // 100 watched twins each got about ten changes over WebSocket, with their latency.
    let e2e = &r["end_to_end_latency_ms"];
    assert!(e2e["count"].as_u64().unwrap() >= 900, "{e2e}");
    assert!(e2e["p50"].as_f64().unwrap() > 0.0);
    assert!(r["puback_latency_ms"]["count"].as_u64().unwrap() >= 9_500);
    // Every tenth device is an actuator; each followed the desired state an app set.
    assert_eq!(r["actuators"], 100);
    assert_eq!(r["actuators_converged"], 100);
    assert!(!r["timeline"].as_array().unwrap().is_empty());
    assert!(r["timeline"][0]["rss_bytes"].as_u64().unwrap() > 0);
    assert!(stdout.contains("end to end"), "{stdout}");
    // The twins hold what the devices sent.
    let sensor = shadow_reported(&node, "d-1");
    assert!(
        sensor["temp"].is_number() && sensor["hum"].is_number(),
        "{sensor}"
    );
    let actuator = shadow_reported(&node, "d-0");
    assert_eq!(actuator["power"], "on", "{actuator}");
    assert_eq!(actuator["setpoint"], 21.5, "{actuator}");
}

#[test]
fn gateways_carry_a_fleet_in_batches() {
    let node = Node::start(BIN, Options::default());
    let (output, report) = sim(
        &node,
        ADMIN_TOKEN,
        &[
            "--devices",
            "5000",
            "--rate",
            "2000",
            "--duration",
            "3s",
            "--mode",
            "gateway",
            "--gateways",
            "4",
            "--prefix",
            "g",
        ],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let r = report.expect("a report");
    assert_eq!(r["registered"], 5004);
    assert_eq!(r["connected"], 4);
    assert_eq!(r["errors"], serde_json::json!({}), "{stdout}");
    let (sent, acked) = (r["sent"].as_u64().unwrap(), r["acked"].as_u64().unwrap());
    assert!((5_700..=6_300).contains(&sent), "sent {sent}");
    assert_eq!(acked, sent);
    assert!(r["end_to_end_latency_ms"]["count"].as_u64().unwrap() > 0);
    // Device 8 is behind gateway 0 and got samples through it.
    let reported = shadow_reported(&node, "g-8");
    assert!(reported["temp"].is_number(), "{reported}");
}

#[test]
fn a_refused_token_stops_the_simulator_with_a_clear_error() {
    let node = Node::start(BIN, Options::default());
    let (output, report) = sim(
        &node,
        "not-a-key",
        &["--devices", "10", "--rate", "10", "--duration", "1s"],
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("401"), "{stderr}");
    assert!(
        report.is_none(),
        "no report for a simulation that did not run"
    );
}

#[test]
fn devices_with_certificates_some_provisioned_over_mqtt() {
    let dir = tempfile::tempdir().unwrap();
    let server = doppel_tests::tls::server_certificate(dir.path());
    let node = Node::start(BIN, server.options());
    let report = dir.path().join("report.json");
    let output = Command::new(BIN)
        .arg("sim")
        .args(["--auth", "certificate", "--provision", "5"])
        .args(["--mqtt", &node.mqtt_tls.unwrap().to_string()])
        .args(["--api", &format!("https://localhost:{}", node.http.port())])
        .args(["--tls-ca", &server.cert_path])
        .args(["--token", ADMIN_TOKEN])
        .args(["--devices", "30", "--rate", "300", "--duration", "3s"])
        .args(["--prefix", "tls", "--sample", "10", "--quiet"])
        .arg("--report")
        .arg(&report)
        .env_remove("DOPPEL_ADMIN_TOKEN")
        .output()
        .expect("doppel sim runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let r: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["registered"], 30);
    assert_eq!(r["connected"], 30, "{stdout}");
    assert_eq!(r["errors"], serde_json::json!({}), "{stdout}");
    let c = &r["certificates"];
    assert_eq!(c["issued"], 25);
    assert_eq!(c["provisioned"], 5);
    assert!(c["handshakes_per_s"].as_f64().unwrap() > 0.0, "{c}");
    assert!(stdout.contains("TLS handshakes/s"), "{stdout}");
    let (sent, acked) = (r["sent"].as_u64().unwrap(), r["acked"].as_u64().unwrap());
    assert!(sent >= 800, "sent {sent}");
    assert_eq!(acked, sent, "every message acknowledged");
    assert_eq!(r["actuators_converged"], r["actuators"]);
    // The watched sample over wss://, with its end-to-end latency.
    assert!(
        r["end_to_end_latency_ms"]["count"].as_u64().unwrap() >= 100,
        "{stdout}"
    );
    // A provisioned device is a thing with its own certificate, and its twin holds its data.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let admin = doppel_tests::api::Api::over_tls(&node, Some(ADMIN_TOKEN), &server.pem);
        for thing in ["tls-0", "tls-29"] {
            let (_, certs) = admin.get(&format!("/v1/things/{thing}/certificates")).await;
            assert_eq!(
                certs["certificates"].as_array().unwrap().len(),
                1,
                "{certs}"
            );
            let (status, shadow) = admin.get(&format!("/v1/things/{thing}/shadow")).await;
            assert_eq!(status, 200, "{shadow}");
            assert!(shadow["state"]["reported"].is_object(), "{shadow}");
        }
    });
}

/// Creates device type `name` and writes `job` to a file for `--job`.
fn job_file(node: &Node, device_type: &str, job: &Value) -> tempfile::NamedTempFile {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        doppel_tests::api::Api::admin(node)
            .put_type(device_type, serde_json::json!({}))
            .await;
    });
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), job.to_string()).unwrap();
    file
}

#[test]
fn simulated_devices_take_a_job_and_download_its_artifact() {
    let node = Node::start(BIN, Options::default());
    // The artifact the job hands out.
    let firmware: Vec<u8> = (0..50_000u32).map(|i| (i % 253) as u8).collect();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let sha256 = runtime.block_on(async {
        let response = reqwest::Client::new()
            .put(node.url("/v1/artifacts/fw.bin"))
            .bearer_auth(ADMIN_TOKEN)
            .body(firmware.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        response.json::<Value>().await.unwrap()["sha256"]
            .as_str()
            .unwrap()
            .to_owned()
    });
    let job = job_file(
        &node,
        "Gauge",
        &serde_json::json!({"artifacts": ["fw.bin"],
            "document": {"url": "/artifacts/fw.bin", "sha256": sha256}}),
    );
    let (output, report) = sim(
        &node,
        ADMIN_TOKEN,
        &[
            "--devices",
            "200",
            "--rate",
            "100",
            "--duration",
            "8s",
            "--type",
            "Gauge",
            "--prefix",
            "g",
            "--job",
            job.path().to_str().unwrap(),
            "--job-time",
            "200ms",
            "--sample",
            "0",
            "--actuator-every",
            "0",
        ],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let r = report.unwrap();
    let j = &r["job"];
    assert_eq!(j["status"], "COMPLETED", "{stdout}");
    assert_eq!(
        j["executions"],
        serde_json::json!({"SUCCEEDED": 200}),
        "{stdout}"
    );
    assert_eq!(j["device_events"]["downloaded"], 200, "{j}");
    assert_eq!(j["downloaded_bytes"], 200 * 50_000, "{j}");
    assert!(j["finished_s"].as_f64().unwrap() > 0.0);
    assert_eq!(r["errors"], serde_json::json!({}), "{stdout}");
    assert!(stdout.contains("job "), "{stdout}");
}

#[test]
fn a_rollout_over_a_thousand_simulated_devices_aborts_on_failures() {
    let node = Node::start(BIN, Options::default());
    let job = job_file(
        &node,
        "Lamp",
        &serde_json::json!({"document": {"version": "7"},
            "rollout": {"rate_per_minute": 1000},
            "abort": [{"failure": "FAILED", "percent": 30, "min_executed": 20}]}),
    );
    let (output, report) = sim(
        &node,
        ADMIN_TOKEN,
        &[
            "--devices",
            "1000",
            "--rate",
            "200",
            "--duration",
            "12s",
            "--type",
            "Lamp",
            "--prefix",
            "l",
            "--job",
            job.path().to_str().unwrap(),
            "--job-time",
            "100ms",
            "--job-fail",
            "0.6",
            "--sample",
            "0",
            "--actuator-every",
            "0",
        ],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let r = report.unwrap();
    let j = &r["job"];
    assert_eq!(j["status"], "CANCELED", "{stdout}");
    assert!(j["reason"].as_str().unwrap().starts_with("aborted"), "{j}");
    let count = |s: &str| j["executions"][s].as_u64().unwrap_or(0);
    // The rollout stopped short of the fleet; nothing is left queued.
    let queued = j["queued"].as_u64().unwrap();
    assert!(queued < 1000, "{j}");
    assert_eq!(count("QUEUED"), 0, "{j}");
    assert!(count("FAILED") >= 6, "{j}");
    // Every execution a device started was started before the abort: each is one of the
    // executions that finished or is still in progress — none of the canceled ones (the node's
    // own test cancels queued executions devices had not started; here devices start theirs
    // at once).
    let started = j["device_events"]["started"].as_u64().unwrap();
    let ran = count("SUCCEEDED") + count("FAILED") + count("IN_PROGRESS");
    assert_eq!(started, ran, "{j}");
    // While it ran, the rollout kept to 1,000 a minute.
    let timeline = r["timeline"].as_array().unwrap();
    for point in timeline {
        let (t, queued) = (
            point["t_s"].as_f64().unwrap(),
            point["job"]["queued"].as_u64().unwrap_or(0),
        );
        assert!(queued as f64 <= 1000.0 / 60.0 * (t + 1.0) + 2.0, "{point}");
    }
}

#[test]
fn a_rollout_over_a_thousand_simulated_devices_resumes_after_a_node_restart() {
    let mut node = Node::start(BIN, Options::default());
    let job = job_file(
        &node,
        "Meter",
        &serde_json::json!({"document": {"version": "8"}, "rollout": {"rate_per_minute": 1000}}),
    );
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let mut sim = Command::new(BIN)
        .arg("sim")
        .args(["--mqtt", &node.mqtt().to_string()])
        .args(["--api", node.url("").trim_end_matches('/')])
        .args(["--token", ADMIN_TOKEN])
        .args([
            "--devices",
            "1000",
            "--rate",
            "100",
            "--duration",
            "75s",
            "--type",
            "Meter",
        ])
        .args([
            "--prefix",
            "m",
            "--job",
            job.path().to_str().unwrap(),
            "--job-time",
            "200ms",
        ])
        .args(["--sample", "0", "--actuator-every", "0", "--quiet"])
        .arg("--report")
        .arg(&report)
        .env_remove("DOPPEL_ADMIN_TOKEN")
        .spawn()
        .expect("doppel sim runs");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let progress = |node: &Node| {
        runtime.block_on(async {
            let api = doppel_tests::api::Api::admin(node);
            api.get("/v1/jobs/m-job").await.1
        })
    };
    // Mid-rollout (100 of 1,000 queued at 1,000 a minute), the node restarts in place.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while progress(&node)["queued"].as_u64().unwrap_or(0) < 100 {
        assert!(
            std::time::Instant::now() < deadline,
            "the rollout did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(node.terminate().success());
    node.restart_in_place();
    let output = sim.wait_with_output_status();
    assert!(output.success(), "the simulation failed");
    let r: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    // The rollout resumed where it was: every device ran the job once, and it completed.
    let j = progress(&node);
    assert_eq!(j["status"], "COMPLETED", "{j}\n{}", r["job"]);
    assert_eq!(
        j["executions"],
        serde_json::json!({"SUCCEEDED": 1000}),
        "{j}"
    );
    assert!(
        r["reconnects"].as_u64().unwrap() > 0,
        "the devices reconnected"
    );
}

trait WaitStatus {
    fn wait_with_output_status(&mut self) -> std::process::ExitStatus;
}

impl WaitStatus for std::process::Child {
    fn wait_with_output_status(&mut self) -> std::process::ExitStatus {
        self.wait().expect("the simulator ends")
    }
}
