//! An outside client: the AWS IoT Device SDK v2 for Python (PyPI `awsiotsdk`), unchanged, runs
//! its shadow client — get, update desired and reported, delta, named shadow, version conflict,
//! delete — against the node's endpoint over plain TCP, over TLS authenticated by a certificate
//! the node issued (the SDK's `mtls_from_path`), and through Mosquitto; and its identity client
//! provisions devices with a claim certificate (AWS IoT Fleet Provisioning).
//!
//! Needs a Python with `awsiotsdk`: `DOPPEL_PYTHON`, or `.venv/bin/python` in the workspace
//! (`scripts/test` creates it from `tests/requirements.txt`).

use doppel_tests::{
    broker::Mosquitto,
    device::{self, WAIT},
    eventually,
    node::{Node, Options},
    python,
};
use serde_json::{Value, json};
use std::{net::SocketAddr, path::PathBuf, process::Command};

const BIN: &str = env!("CARGO_BIN_EXE_doppel");

fn run_sdk(addr: SocketAddr, thing: &str, token: &str, extra: &[&str]) -> Value {
    run_sdk_on(&addr.ip().to_string(), addr.port(), thing, token, extra)
}

fn run_sdk_on(host: &str, port: u16, thing: &str, token: &str, extra: &[&str]) -> Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/aws_sdk/shadow_client.py");
    let output = Command::new(python())
        .arg(script)
        .args([
            host.to_owned(),
            port.to_string(),
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
async fn the_aws_sdk_shadow_client_connects_with_its_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let server = doppel_tests::tls::server_certificate(dir.path());
    let node = Node::start(BIN, server.options());
    let admin =
        doppel_tests::api::Api::over_tls(&node, Some(doppel_tests::node::ADMIN_TOKEN), &server.pem);
    admin.register("sdk-tls", None).await;
    let (status, issued) = admin
        .post("/v1/things/sdk-tls/certificates", json!({"generate": true}))
        .await;
    assert_eq!(status, 201, "{issued}");
    let (cert, key) = (dir.path().join("sdk.pem"), dir.path().join("sdk.key"));
    std::fs::write(&cert, issued["certificate"].as_str().unwrap()).unwrap();
    std::fs::write(&key, issued["private_key"].as_str().unwrap()).unwrap();
    let port = node.mqtt_tls.expect("the MQTT TLS port").port();
    let seen = tokio::task::spawn_blocking(move || {
        let (cert, key) = (cert.display().to_string(), key.display().to_string());
        // No token: the certificate authenticates the device.
        let mtls = [
            "--mtls",
            cert.as_str(),
            key.as_str(),
            server.cert_path.as_str(),
        ];
        run_sdk_on("localhost", port, "sdk-tls", "-", &mtls)
    })
    .await
    .unwrap();
    assert_eq!(seen, expected());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_aws_sdk_identity_client_provisions_devices_with_a_claim_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let server = doppel_tests::tls::server_certificate(dir.path());
    let node = Node::start(BIN, server.options());
    let admin =
        doppel_tests::api::Api::over_tls(&node, Some(doppel_tests::node::ADMIN_TOKEN), &server.pem);
    let (status, body) = admin
        .put(
            "/v1/provisioning-templates/factory",
            json!({
                "thing_name": "sensor-{SerialNumber}",
                "attributes": {"serial": "{SerialNumber}"},
                "allow": {"SerialNumber": ["SN-1", "SN-2"]},
                "device_configuration": {"interval": "60"},
            }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, claim) = admin
        .post(
            "/v1/provisioning-templates/factory/claim-certificates",
            json!({"generate": true}),
        )
        .await;
    assert_eq!(status, 201, "{claim}");
    let write = |name: &str, content: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        path.display().to_string()
    };
    let claim_cert = write("claim.pem", claim["certificate"].as_str().unwrap());
    let claim_key = write("claim.key", claim["private_key"].as_str().unwrap());
    // The device's own key for the CSR path.
    let device_key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::new(vec!["device".to_owned()])
        .unwrap()
        .serialize_request(&device_key)
        .unwrap()
        .pem()
        .unwrap();
    let csr = write("device.csr", &csr);
    let key = write("device.key", &device_key.serialize_pem());
    let port = node.mqtt_tls.expect("the MQTT TLS port").port();
    let out = dir.path().display().to_string();
    let run = move |serial: &str, extra: &[&str]| {
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/aws_sdk/identity_client.py");
        let output = Command::new(python())
            .arg(script)
            .args(["localhost", &port.to_string(), &server.cert_path])
            .args([&claim_cert, &claim_key, "factory", serial, &out])
            .args(extra)
            .output()
            .expect("python runs");
        assert!(
            output.status.success(),
            "the SDK's identity client failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice::<Value>(&output.stdout).expect("the script prints what it saw")
    };
    let seen = tokio::task::spawn_blocking(move || {
        [
            run("SN-1", &[]),
            run("SN-2", &["--csr", &csr, &key]),
            run("SN-9", &[]),
        ]
    })
    .await
    .unwrap();
    // CreateKeysAndCertificate, then RegisterThing; the device then works as its thing.
    assert_eq!(seen[0]["thing_name"], "sensor-SN-1", "{}", seen[0]);
    assert_eq!(seen[0]["device_configuration"], json!({"interval": "60"}));
    assert_eq!(seen[0]["shadow_version"], 1);
    // CreateCertificateFromCsr: the key never left the device.
    assert_eq!(seen[1]["thing_name"], "sensor-SN-2", "{}", seen[1]);
    assert_eq!(seen[1]["shadow_version"], 1);
    // A serial outside the template's allow-list is refused, in AWS's error shape.
    assert_eq!(seen[2]["rejected"]["status_code"], 403, "{}", seen[2]);
    assert_eq!(seen[2]["rejected"]["error_code"], "AccessDenied");
    assert_eq!(admin.get("/v1/things/sensor-SN-9").await.0, 404);
    for (thing, seen) in [("sensor-SN-1", &seen[0]), ("sensor-SN-2", &seen[1])] {
        let (_, certs) = admin.get(&format!("/v1/things/{thing}/certificates")).await;
        assert_eq!(certs["certificates"][0]["id"], seen["certificate_id"]);
        let (_, shadow) = admin.get(&format!("/v1/things/{thing}/shadow")).await;
        assert_eq!(shadow["state"]["reported"], json!({"provisioned": true}));
    }
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

#[test]
fn the_provisioning_doc_runs_as_written() {
    for (program, package) in [("curl", "curl"), ("python3", "python3")] {
        doppel_tests::doc::need(program, package);
    }
    let dir = tempfile::tempdir().unwrap();
    let server = doppel_tests::tls::server_certificate(dir.path());
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/security.md")).unwrap();
    let client = root.join("tests/aws_sdk/identity_client.py");
    let python = python();
    let steps = doppel_tests::doc::run_section(
        &doc,
        "### Provisioning a device, step by step",
        BIN,
        &[
            ("TLS_CERT", server.cert_path.as_str()),
            ("TLS_KEY", server.key_path.as_str()),
            ("SDK_PYTHON", python.to_str().unwrap()),
            ("IDENTITY_CLIENT", client.to_str().unwrap()),
        ],
        std::time::Duration::from_secs(90),
    );
    assert_eq!(steps, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_aws_sdk_jobs_client_runs_a_job() {
    let node = Node::start(BIN, Options::default());
    let token = node.register("meter-j1").await;
    let admin = doppel_tests::api::Api::admin(&node);
    let document = json!({"operation": "update", "version": "2.0", "sha256": "ab".repeat(32)});
    let (status, job) = admin
        .put(
            "/v1/jobs/fw-2-0",
            json!({"targets": {"things": ["meter-j1"]}, "document": document, "timeout_minutes": 30}),
        )
        .await;
    assert_eq!(status, 201, "{job}");
    doppel_tests::until(
        "the execution queued",
        std::time::Duration::from_secs(5),
        async || admin.get("/v1/jobs/fw-2-0").await.1["executions"]["QUEUED"] == 1,
    )
    .await;
    let addr = node.mqtt();
    let seen = tokio::task::spawn_blocking(move || {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/aws_sdk/jobs_client.py");
        let output = Command::new(python())
            .arg(script)
            .args([addr.ip().to_string(), addr.port().to_string()])
            .args(["meter-j1", &token, "fw-2-0"])
            .output()
            .expect("python runs");
        assert!(
            output.status.success(),
            "the SDK's jobs client failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice::<Value>(&output.stdout).expect("the script prints what it saw")
    })
    .await
    .unwrap();
    assert_eq!(
        seen,
        json!({
            "queued": ["fw-2-0"],
            "started": {"job_id": "fw-2-0", "status": "IN_PROGRESS", "document": document, "version": 2},
            "next_after_start": "IN_PROGRESS",
            "stale": {"code": "VersionMismatch", "version": 2},
            "progress": {"status": "IN_PROGRESS", "details": {"step": "flash"}},
            "next_after_success": null,
        })
    );
    // The job is complete, and its execution is listed with what the device said.
    let (_, job) = admin.get("/v1/jobs/fw-2-0").await;
    assert_eq!(job["status"], "COMPLETED", "{job}");
    assert_eq!(job["executions"], json!({"SUCCEEDED": 1}));
    let (_, page) = admin.get("/v1/jobs/fw-2-0/executions").await;
    assert_eq!(page["executions"][0]["thing"], "meter-j1");
    assert_eq!(page["executions"][0]["status"], "SUCCEEDED");
    assert_eq!(
        page["executions"][0]["statusDetails"],
        json!({"version": "2.0"})
    );
}
