//! Device certificates end to end: the deployment's CA issues a certificate from a CSR or with
//! a new key; `mosquitto_pub` connects with it over TLS (client id = the thing) and updates the
//! twin; a certificate of thing A with client id B is refused; revoking a certificate closes
//! the device's live session and refuses its next handshake; revoked stays revoked; a
//! decommissioned thing's certificates stop working; a listener set to certificates only
//! refuses tokens at the handshake.

use doppel_tests::{
    api::Api,
    node::{ADMIN_TOKEN, Node, Options},
    until,
};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, TlsConfiguration, Transport};
use rustls::{
    ClientConfig, RootCertStore,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
};
use serde_json::{Value, json};
use std::{process::Command, sync::Arc, time::Duration};

const BIN: &str = env!("CARGO_BIN_EXE_doppel");

struct Secure {
    dir: tempfile::TempDir,
    server_pem: String,
    node: Node,
}

/// A node serving MQTT over TLS with a certificate made for `localhost`.
fn start(config: Option<&str>) -> Secure {
    let dir = tempfile::tempdir().unwrap();
    let server = doppel_tests::tls::server_certificate(dir.path());
    let node = Node::start(
        BIN,
        Options {
            args: server.serve_args(),
            config: config.map(str::to_owned),
            ..Options::default()
        },
    );
    Secure {
        dir,
        server_pem: server.pem,
        node,
    }
}

fn need_mosquitto_clients() {
    doppel_tests::doc::need("mosquitto_pub", "mosquitto-clients");
}

impl Secure {
    fn admin(&self) -> Api {
        Api::over_tls(&self.node, Some(ADMIN_TOKEN), &self.server_pem)
    }

    fn file(&self, name: &str, content: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        path.display().to_string()
    }

    fn port(&self) -> u16 {
        self.node.mqtt_tls.expect("the MQTT TLS port").port()
    }

    /// `mosquitto_pub` over TLS with a client certificate; whether it succeeded, and stderr.
    fn publish(
        &self,
        client_id: &str,
        cert: &str,
        key: &str,
        topic: &str,
        payload: &Value,
    ) -> (bool, String) {
        let output = Command::new("mosquitto_pub")
            .args(["-h", "localhost", "-p", &self.port().to_string()])
            .args(["--cafile", &self.file("server-ca.pem", &self.server_pem)])
            .args(["--cert", cert, "--key", key])
            .args(["-i", client_id, "-q", "1", "-t", topic])
            .args(["-m", &payload.to_string()])
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// A TLS client configuration presenting `cert`/`key` (or no certificate).
    fn client(&self, auth: Option<(&str, &str)>) -> ClientConfig {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(self.server_pem.as_bytes()).unwrap())
            .unwrap();
        let builder = ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots);
        match auth {
            Some((cert, key)) => builder
                .with_client_auth_cert(
                    vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                    PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
                )
                .unwrap(),
            None => builder.with_no_client_auth(),
        }
    }

    /// Connects over TLS with rumqttc; the event loop after the CONNACK, or the first error.
    async fn connect(
        &self,
        client_id: &str,
        tls: ClientConfig,
        token: Option<&str>,
    ) -> Result<(AsyncClient, rumqttc::EventLoop), String> {
        let mut options = MqttOptions::new(client_id, "localhost", self.port());
        if let Some(token) = token {
            options.set_credentials(client_id, token);
        }
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::new(tls),
        )));
        let (client, mut eventloop) = AsyncClient::new(options, 16);
        let connected = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                    Ok(_) => {}
                    Err(e) => return Err(e.to_string()),
                }
            }
        })
        .await
        .map_err(|_| "no CONNACK".to_string())?;
        connected.map(|()| (client, eventloop))
    }
}

/// The next message the node sends the device (topic, JSON), within 10 s.
async fn next_message(eventloop: &mut rumqttc::EventLoop) -> (String, Value) {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(Event::Incoming(Packet::Publish(p))) = eventloop.poll().await {
                return (p.topic, serde_json::from_slice(&p.payload).unwrap());
            }
        }
    })
    .await
    .expect("an answer")
}

async fn issue(admin: &Api, thing: &str, body: Value) -> Value {
    let (status, issued) = admin
        .post(&format!("/v1/things/{thing}/certificates"), body)
        .await;
    assert_eq!(status, 201, "{issued}");
    issued
}

#[tokio::test(flavor = "multi_thread")]
async fn devices_connect_with_issued_certificates_and_revocation_takes_effect_at_once() {
    need_mosquitto_clients();
    let secure = start(None);
    let admin = secure.admin();
    admin.register("pump-1", None).await;
    admin.register("pump-2", None).await;

    // The CA, and a certificate with a key made by the node.
    let (status, ca) = admin.text("/v1/ca").await;
    assert_eq!(status, 200);
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");
    let issued = issue(&admin, "pump-1", json!({"generate": true})).await;
    let cert1 = secure.file("pump-1.pem", issued["certificate"].as_str().unwrap());
    let key1 = secure.file("pump-1.key", issued["private_key"].as_str().unwrap());
    let id1 = issued["id"].as_str().unwrap().to_owned();
    assert_eq!(issued["status"], "active");

    // A certificate from the device's own CSR: its key never leaves it.
    let device_key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::new(vec!["pump-2".to_owned()])
        .unwrap()
        .serialize_request(&device_key)
        .unwrap()
        .pem()
        .unwrap();
    let issued2 = issue(&admin, "pump-2", json!({"csr": csr})).await;
    assert!(issued2.get("private_key").is_none(), "{issued2}");
    let cert2_pem = issued2["certificate"].as_str().unwrap().to_owned();
    let key2_pem = device_key.serialize_pem();
    let (status, listed) = admin.get("/v1/things/pump-2/certificates").await;
    assert_eq!(status, 200);
    assert_eq!(listed["certificates"][0]["id"], issued2["id"]);

    // mosquitto_pub, with pump-1's certificate and client id: the twin changes.
    let (ok, stderr) = secure.publish(
        "pump-1",
        &cert1,
        &key1,
        "$aws/things/pump-1/shadow/update",
        &json!({"state": {"reported": {"rpm": 1200}}}),
    );
    assert!(ok, "{stderr}");
    until("the update", Duration::from_secs(5), async || {
        admin.get("/v1/things/pump-1/shadow").await.1["state"]["reported"]["rpm"] == 1200
    })
    .await;
    // pump-1's certificate with client id pump-2: refused.
    let (ok, _) = secure.publish(
        "pump-2",
        &cert1,
        &key1,
        "$aws/things/pump-2/shadow/update",
        &json!({"state": {"reported": {"rpm": 1}}}),
    );
    assert!(!ok, "a certificate of pump-1 does not authenticate pump-2");
    assert_eq!(admin.get("/v1/things/pump-2/shadow").await.0, 404);

    // pump-2 connected with its certificate; revoking it closes the session at once.
    let (_client, mut eventloop) = secure
        .connect("pump-2", secure.client(Some((&cert2_pem, &key2_pem))), None)
        .await
        .unwrap();
    let id2 = issued2["id"].as_str().unwrap();
    let (status, body) = admin
        .patch(
            &format!("/v1/things/pump-2/certificates/{id2}"),
            json!({"status": "revoked"}),
        )
        .await;
    assert_eq!((status, body["status"].as_str()), (200, Some("revoked")));
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if eventloop.poll().await.is_err() {
                return;
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the live session closed");
    // The next handshake with it is refused, and revoked stays revoked.
    let again = secure
        .connect("pump-2", secure.client(Some((&cert2_pem, &key2_pem))), None)
        .await;
    assert!(again.is_err(), "a revoked certificate is refused");
    let (status, body) = admin
        .patch(
            &format!("/v1/things/pump-2/certificates/{id2}"),
            json!({"status": "active"}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("certificate_revoked"))
    );

    // Inactive, then active again: refused, then accepted.
    let path = format!("/v1/things/pump-1/certificates/{id1}");
    assert_eq!(
        admin.patch(&path, json!({"status": "inactive"})).await.0,
        200
    );
    let topic = "$aws/things/pump-1/shadow/update";
    let report = json!({"state": {"reported": {"rpm": 1300}}});
    assert!(!secure.publish("pump-1", &cert1, &key1, topic, &report).0);
    assert_eq!(admin.patch(&path, json!({"status": "active"})).await.0, 200);
    assert!(secure.publish("pump-1", &cert1, &key1, topic, &report).0);

    // Decommissioned: its certificates stop working.
    assert_eq!(admin.delete("/v1/things/pump-1").await.0, 204);
    assert!(!secure.publish("pump-1", &cert1, &key1, topic, &report).0);

    // Every step is in the audit log.
    let (_, audit) = admin.get("/v1/audit?limit=100").await;
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for action in [
        "cert.create",
        "cert.revoke",
        "cert.deactivate",
        "cert.activate",
    ] {
        assert!(actions.contains(&action), "{action} in {actions:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_are_refused_clearly() {
    let secure = start(None);
    let admin = secure.admin();
    admin.register("valve-1", None).await;
    for (body, why) in [
        (json!({}), "neither"),
        (json!({"csr": "x", "generate": true}), "both"),
        (json!({"csr": "not a csr"}), "garbage"),
        (json!({"generate": true, "validity_days": 0}), "zero days"),
    ] {
        let (status, body) = admin.post("/v1/things/valve-1/certificates", body).await;
        assert_eq!(status, 400, "{why}: {body}");
    }
    let (status, _) = admin
        .post("/v1/things/nobody/certificates", json!({"generate": true}))
        .await;
    assert_eq!(status, 404);
    let (status, _) = admin
        .patch(
            "/v1/things/valve-1/certificates/abc",
            json!({"status": "revoked"}),
        )
        .await;
    assert_eq!(status, 404);
    // A viewer lists but does not issue.
    let key = admin.create_key("viewer", None).await;
    let viewer = Api::over_tls(&secure.node, Some(&key), &secure.server_pem);
    assert_eq!(viewer.get("/v1/things/valve-1/certificates").await.0, 200);
    let (status, _) = viewer
        .post("/v1/things/valve-1/certificates", json!({"generate": true}))
        .await;
    assert_eq!(status, 403);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_listener_for_certificates_only_refuses_tokens_at_the_handshake() {
    let secure = start(Some("[node.mqtt]\ntls_auth = \"certificate\"\n"));
    let admin = secure.admin();
    let token = admin.register("gate-1", None).await;
    let refused = secure
        .connect("gate-1", secure.client(None), Some(&token))
        .await;
    assert!(refused.is_err(), "a token without a certificate is refused");
    let issued = issue(&admin, "gate-1", json!({"generate": true})).await;
    let (cert, key) = (
        issued["certificate"].as_str().unwrap(),
        issued["private_key"].as_str().unwrap(),
    );
    assert!(
        secure
            .connect("gate-1", secure.client(Some((cert, key))), None)
            .await
            .is_ok()
    );
    // The plain listener still takes the token.
    assert!(
        doppel_tests::device::connect(secure.node.mqtt(), "gate-1", &token)
            .await
            .is_ok()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_device_rotates_its_certificate_over_its_own_connection() {
    need_mosquitto_clients();
    let secure = start(None);
    let admin = secure.admin();
    admin.register("meter-1", None).await;
    let issued = issue(&admin, "meter-1", json!({"generate": true})).await;
    let (old_cert, old_key) = (
        issued["certificate"].as_str().unwrap().to_owned(),
        issued["private_key"].as_str().unwrap().to_owned(),
    );
    let (client, mut eventloop) = secure
        .connect("meter-1", secure.client(Some((&old_cert, &old_key))), None)
        .await
        .unwrap();
    // AWS IoT's CreateCertificateFromCsr over MQTT, as the AWS SDKs send it.
    let new_key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::new(vec!["meter-1".to_owned()])
        .unwrap()
        .serialize_request(&new_key)
        .unwrap()
        .pem()
        .unwrap();
    let base = "$aws/certificates/create-from-csr/json";
    client
        .subscribe(format!("{base}/+"), rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    client
        .publish(
            base,
            rumqttc::QoS::AtLeastOnce,
            false,
            json!({"certificateSigningRequest": csr}).to_string(),
        )
        .await
        .unwrap();
    let (topic, answer) = next_message(&mut eventloop).await;
    assert_eq!(topic, format!("{base}/accepted"), "{answer}");
    let new_cert = answer["certificatePem"].as_str().unwrap().to_owned();
    assert_eq!(answer["certificateId"].as_str().unwrap().len(), 64);
    assert!(answer["certificateOwnershipToken"].is_string());
    // A malformed request is answered on …/rejected with AWS's shape.
    client
        .publish(base, rumqttc::QoS::AtLeastOnce, false, "{}")
        .await
        .unwrap();
    let (topic, answer) = next_message(&mut eventloop).await;
    assert_eq!(topic, format!("{base}/rejected"));
    assert_eq!(answer["statusCode"], 400);
    assert_eq!(answer["errorCode"], "InvalidPayload");

    // Old and new work side by side; the old one is then deactivated.
    let new_key_pem = new_key.serialize_pem();
    assert!(
        secure
            .connect(
                "meter-1",
                secure.client(Some((&new_cert, &new_key_pem))),
                None
            )
            .await
            .is_ok()
    );
    let (_, listed) = admin.get("/v1/things/meter-1/certificates").await;
    assert_eq!(listed["certificates"].as_array().unwrap().len(), 2);
    let old_id = issued["id"].as_str().unwrap();
    let path = format!("/v1/things/meter-1/certificates/{old_id}");
    assert_eq!(
        admin.patch(&path, json!({"status": "inactive"})).await.0,
        200
    );
    assert!(
        secure
            .connect("meter-1", secure.client(Some((&old_cert, &old_key))), None)
            .await
            .is_err()
    );
    assert!(
        secure
            .connect(
                "meter-1",
                secure.client(Some((&new_cert, &new_key_pem))),
                None
            )
            .await
            .is_ok()
    );
    // A device cannot pile up certificates: at most 10 that are not revoked.
    for _ in 0..8 {
        issue(&admin, "meter-1", json!({"generate": true})).await;
    }
    let (status, body) = admin
        .post("/v1/things/meter-1/certificates", json!({"generate": true}))
        .await;
    assert_eq!(status, 400, "{body}");
}

#[test]
fn the_security_doc_runs_as_written() {
    need_mosquitto_clients();
    for (program, package) in [("curl", "curl"), ("python3", "python3")] {
        doppel_tests::doc::need(program, package);
    }
    let dir = tempfile::tempdir().unwrap();
    let server = doppel_tests::tls::server_certificate(dir.path());
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/security.md"),
    )
    .unwrap();
    let (cert_path, key_path) = (server.cert_path, server.key_path);
    let steps = doppel_tests::doc::run_section(
        &doc,
        "## A device with a certificate, step by step",
        BIN,
        &[
            ("TLS_CERT", cert_path.as_str()),
            ("TLS_KEY", key_path.as_str()),
        ],
        Duration::from_secs(60),
    );
    assert_eq!(steps, 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn certificates_close_to_expiry_are_counted_and_announced() {
    // Every certificate of 180 days is "close" to a 400-day horizon.
    let node = Node::start(
        BIN,
        Options {
            config: Some(
                "[node]\ncertificate_warning = \"400days\"\ncertificate_check_every = \"200ms\"\n"
                    .into(),
            ),
            ..Options::default()
        },
    );
    let admin = Api::admin(&node);
    admin.register("old-1", None).await;
    let mut app = doppel_tests::ws::connect(&node, Some(ADMIN_TOKEN))
        .await
        .unwrap();
    app.send(json!({"type": "subscribe", "id": "s", "things": ["old-1"]}))
        .await;
    app.send(json!({"type": "get", "id": "g", "thing": "old-1"}))
        .await;
    app.next().await;
    let issued = issue(&admin, "old-1", json!({"generate": true})).await;
    let event = loop {
        let frame = app.next_of("event").await;
        if frame["kind"] == "certificate_expiring" {
            break frame;
        }
    };
    assert_eq!(event["payload"]["id"], issued["id"]);
    assert_eq!(event["payload"]["expired"], false);
    until("the gauge", Duration::from_secs(5), async || {
        node.get("/metrics")
            .await
            .text()
            .await
            .unwrap()
            .contains("doppel_certificates_expiring 1")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_intermediate_issues_the_device_certificates() {
    need_mosquitto_clients();
    // The operator's root, and an intermediate under it for this deployment.
    let ca = |name: &str| {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        params
    };
    let root_key = rcgen::KeyPair::generate().unwrap();
    let root_params = ca("Operator Root");
    let root = root_params.self_signed(&root_key).unwrap();
    let root_issuer = rcgen::Issuer::new(root_params, &root_key);
    let inter_key = rcgen::KeyPair::generate().unwrap();
    let inter = ca("Operator Devices")
        .signed_by(&inter_key, &root_issuer)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = doppel_tests::tls::server_certificate(dir.path());
    let write = |name: &str, content: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        path.display().to_string()
    };
    let chain = format!("{}{}", inter.pem(), root.pem());
    let node = Node::start(
        BIN,
        Options {
            args: [
                server.serve_args(),
                vec![
                    "--ca-cert".into(),
                    write("ca-chain.pem", &chain),
                    "--ca-key".into(),
                    write("ca.key", &inter_key.serialize_pem()),
                ],
            ]
            .concat(),
            ..Options::default()
        },
    );
    let secure = Secure {
        dir: tempfile::tempdir().unwrap(),
        server_pem: server.pem,
        node,
    };
    let admin = secure.admin();
    let (status, served) = admin.text("/v1/ca").await;
    assert_eq!(
        (status, served.as_str()),
        (200, chain.as_str()),
        "the chain is served"
    );
    admin.register("sensor-3", None).await;
    let issued = issue(&admin, "sensor-3", json!({"generate": true})).await;
    let pem = issued["certificate"].as_str().unwrap();
    let (_, leaf) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
    let leaf = leaf.parse_x509().unwrap();
    assert_eq!(leaf.issuer().to_string(), "CN=Operator Devices");
    let (cert_file, key_file) = (
        secure.file("sensor-3.pem", pem),
        secure.file("sensor-3.key", issued["private_key"].as_str().unwrap()),
    );
    let (ok, stderr) = secure.publish(
        "sensor-3",
        &cert_file,
        &key_file,
        "$aws/things/sensor-3/shadow/update",
        &json!({"state": {"reported": {"ok": true}}}),
    );
    assert!(ok, "{stderr}");
}

/// Publishes `payload` to `topic` and waits for the answer on `…/accepted` or `…/rejected`.
async fn ask(
    client: &AsyncClient,
    eventloop: &mut rumqttc::EventLoop,
    topic: &str,
    payload: Value,
) -> (String, Value) {
    client
        .publish(topic, rumqttc::QoS::AtLeastOnce, false, payload.to_string())
        .await
        .unwrap();
    next_message(eventloop).await
}

/// Whether the node closes the connection (it refuses what a claim session may not do).
async fn closed(eventloop: &mut rumqttc::EventLoop) -> bool {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if eventloop.poll().await.is_err() {
                return true;
            }
        }
    })
    .await
    .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_claim_certificate_provisions_a_device_and_nothing_else() {
    let secure = start(None);
    let admin = secure.admin();
    // Templates are checked before they are stored.
    for (body, code) in [
        (json!({"thing_name": "a/{SerialNumber}"}), "invalid_request"),
        (json!({"thing_name": "a-{Serial"}), "invalid_request"),
        (
            json!({"thing_name": "a-{S}", "validity_days": 0}),
            "invalid_request",
        ),
        (
            json!({"thing_name": "a-{S}", "type": "nope"}),
            "type_not_found",
        ),
        (
            json!({"thing_name": "a-{S}", "extra": 1}),
            "invalid_request",
        ),
    ] {
        let (status, answer) = admin
            .put("/v1/provisioning-templates/factory", body.clone())
            .await;
        assert_eq!(status, 400, "{body} → {answer}");
        assert_eq!(answer["code"], code, "{body} → {answer}");
    }
    let template = json!({
        "thing_name": "sensor-{SerialNumber}",
        "attributes": {"serial": "{SerialNumber}", "line": "3"},
        "allow": {"SerialNumber": ["SN-1", "SN-2"]},
        "device_configuration": {"interval": "60"},
    });
    let (status, stored) = admin
        .put("/v1/provisioning-templates/factory", template.clone())
        .await;
    assert_eq!(status, 201, "{stored}");
    assert_eq!(stored["enabled"], true);
    assert_eq!(
        admin
            .put("/v1/provisioning-templates/factory", template)
            .await
            .0,
        200
    );
    let (status, claim) = admin
        .post(
            "/v1/provisioning-templates/factory/claim-certificates",
            json!({"generate": true}),
        )
        .await;
    assert_eq!(status, 201, "{claim}");
    let (claim_cert, claim_key) = (
        claim["certificate"].as_str().unwrap().to_owned(),
        claim["private_key"].as_str().unwrap().to_owned(),
    );
    let claim_tls = || secure.client(Some((&claim_cert, &claim_key)));

    // A claim session may not act as a device…
    let (client, mut eventloop) = secure.connect("claim-a", claim_tls(), None).await.unwrap();
    client
        .publish(
            "$aws/things/sensor-SN-1/shadow/update",
            rumqttc::QoS::AtLeastOnce,
            false,
            json!({"state": {"reported": {"x": 1}}}).to_string(),
        )
        .await
        .unwrap();
    assert!(closed(&mut eventloop).await, "a shadow update was accepted");
    // …nor use another template, nor subscribe outside provisioning.
    let (client, mut eventloop) = secure.connect("claim-b", claim_tls(), None).await.unwrap();
    client
        .publish(
            "$aws/provisioning-templates/other/provision/json",
            rumqttc::QoS::AtLeastOnce,
            false,
            "{}",
        )
        .await
        .unwrap();
    assert!(
        closed(&mut eventloop).await,
        "another template was reachable"
    );
    let (client, mut eventloop) = secure.connect("claim-c", claim_tls(), None).await.unwrap();
    client
        .subscribe("$aws/things/+/shadow/#", rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    assert!(
        closed(&mut eventloop).await,
        "a shadow subscription was granted"
    );

    // The provisioning itself, as AWS IoT's Fleet Provisioning MQTT API.
    let (client, mut eventloop) = secure.connect("claim-d", claim_tls(), None).await.unwrap();
    let provision = "$aws/provisioning-templates/factory/provision/json";
    for filter in [
        "$aws/certificates/create/json/+".to_owned(),
        format!("{provision}/+"),
    ] {
        client
            .subscribe(filter, rumqttc::QoS::AtLeastOnce)
            .await
            .unwrap();
    }
    let (topic, created) = ask(
        &client,
        &mut eventloop,
        "$aws/certificates/create/json",
        json!({}),
    )
    .await;
    assert_eq!(topic, "$aws/certificates/create/json/accepted", "{created}");
    let token = created["certificateOwnershipToken"].as_str().unwrap();
    let (cert, key) = (
        created["certificatePem"].as_str().unwrap().to_owned(),
        created["privateKey"].as_str().unwrap().to_owned(),
    );
    // Not provisioned yet: the new certificate authenticates nothing.
    assert!(
        secure
            .connect("sensor-SN-1", secure.client(Some((&cert, &key))), None)
            .await
            .is_err()
    );
    for (payload, status, code) in [
        (
            json!({"certificateOwnershipToken": "made-up", "parameters": {"SerialNumber": "SN-1"}}),
            400,
            "InvalidCertificateOwnershipToken",
        ),
        (
            json!({"certificateOwnershipToken": token, "parameters": {"SerialNumber": "SN-9"}}),
            403,
            "AccessDenied",
        ),
        (
            json!({"certificateOwnershipToken": token, "parameters": {}}),
            400,
            "InvalidParameters",
        ),
        (json!({"parameters": 3}), 400, "InvalidPayload"),
    ] {
        let (topic, answer) = ask(&client, &mut eventloop, provision, payload.clone()).await;
        assert_eq!(
            topic,
            format!("{provision}/rejected"),
            "{payload} → {answer}"
        );
        assert_eq!(answer["statusCode"], status, "{payload} → {answer}");
        assert_eq!(answer["errorCode"], code, "{payload} → {answer}");
    }
    // A refused request leaves the token usable.
    let (topic, answer) = ask(
        &client,
        &mut eventloop,
        provision,
        json!({"certificateOwnershipToken": token, "parameters": {"SerialNumber": "SN-1"}}),
    )
    .await;
    assert_eq!(topic, format!("{provision}/accepted"), "{answer}");
    assert_eq!(
        answer,
        json!({"thingName": "sensor-SN-1", "deviceConfiguration": {"interval": "60"}})
    );
    // A token provisions once.
    let (topic, _) = ask(
        &client,
        &mut eventloop,
        provision,
        json!({"certificateOwnershipToken": token, "parameters": {"SerialNumber": "SN-2"}}),
    )
    .await;
    assert_eq!(topic, format!("{provision}/rejected"));

    // The thing is registered from the template and its certificate works, for it only.
    let (status, thing) = admin.get("/v1/things/sensor-SN-1").await;
    assert_eq!(status, 200);
    assert_eq!(thing["attributes"], json!({"serial": "SN-1", "line": "3"}));
    let (_, certs) = admin.get("/v1/things/sensor-SN-1/certificates").await;
    assert_eq!(certs["certificates"][0]["id"], created["certificateId"]);
    assert_eq!(certs["certificates"][0]["status"], "active");
    assert!(
        secure
            .connect("sensor-SN-1", secure.client(Some((&cert, &key))), None)
            .await
            .is_ok()
    );
    assert!(
        secure
            .connect("sensor-SN-2", secure.client(Some((&cert, &key))), None)
            .await
            .is_err()
    );
    let (_, audit) = admin.get("/v1/audit").await;
    assert!(
        audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "thing.provision" && e["target"] == "sensor-SN-1"),
        "{audit}"
    );

    // A claim session has a budget of 16 requests: a device provisions once.
    let (client, mut eventloop) = secure.connect("claim-f", claim_tls(), None).await.unwrap();
    client
        .subscribe("$aws/certificates/create/json/+", rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    for _ in 0..16 {
        let (topic, _) = ask(
            &client,
            &mut eventloop,
            "$aws/certificates/create/json",
            json!({}),
        )
        .await;
        assert_eq!(topic, "$aws/certificates/create/json/accepted");
    }
    let (topic, refused) = ask(
        &client,
        &mut eventloop,
        "$aws/certificates/create/json",
        json!({}),
    )
    .await;
    assert_eq!(topic, "$aws/certificates/create/json/rejected");
    assert_eq!(refused["statusCode"], 429, "{refused}");

    // Revoking the claim certificate refuses its next handshake; deleting the template
    // revokes the rest.
    let (_, claims) = admin
        .get("/v1/provisioning-templates/factory/claim-certificates")
        .await;
    assert_eq!(claims["certificates"].as_array().unwrap().len(), 1);
    let claim_id = claim["id"].as_str().unwrap();
    let path = format!("/v1/provisioning-templates/factory/claim-certificates/{claim_id}");
    assert_eq!(
        admin.patch(&path, json!({"status": "revoked"})).await.0,
        200
    );
    assert!(secure.connect("claim-e", claim_tls(), None).await.is_err());
    assert_eq!(
        admin.delete("/v1/provisioning-templates/factory").await.0,
        204
    );
    assert_eq!(admin.get("/v1/provisioning-templates/factory").await.0, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_device_uses_the_http_device_api_with_its_certificate() {
    let secure = start(None);
    let admin = secure.admin();
    admin.register("pump-h", None).await;
    admin.register("pump-x", None).await;
    let issued = issue(&admin, "pump-h", json!({"generate": true})).await;
    let identity = format!(
        "{}{}",
        issued["certificate"].as_str().unwrap(),
        issued["private_key"].as_str().unwrap()
    );
    let client = |identity: Option<&str>| {
        let mut builder = reqwest::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(secure.server_pem.as_bytes()).unwrap(),
            )
            .resolve("localhost", secure.node.http);
        if let Some(pem) = identity {
            builder = builder.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
        }
        builder.build().unwrap()
    };
    let device = client(Some(&identity));
    let url = |path: &str| format!("https://localhost:{}{path}", secure.node.http.port());
    let call = async |request: reqwest::RequestBuilder| {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (
            status,
            response.json::<Value>().await.unwrap_or(Value::Null),
        )
    };

    // AWS IoT's device shadow REST API: update, get, named shadows, errors in AWS's shape.
    let (status, accepted) = call(
        device
            .post(url("/things/pump-h/shadow"))
            .body(json!({"state": {"reported": {"rpm": 5}}}).to_string()),
    )
    .await;
    assert_eq!(status, 200, "{accepted}");
    assert_eq!(accepted["state"]["reported"]["rpm"], 5);
    assert_eq!(accepted["version"], 1);
    let (status, got) = call(device.get(url("/things/pump-h/shadow"))).await;
    assert_eq!(status, 200);
    assert_eq!(got["state"]["reported"], json!({"rpm": 5}));
    let (status, missing) = call(device.get(url("/things/pump-h/shadow?name=config"))).await;
    assert_eq!(status, 404);
    assert_eq!(missing["code"], 404, "{missing}");
    let (status, conflict) = call(
        device
            .post(url("/things/pump-h/shadow"))
            .body(json!({"state": {"reported": {"rpm": 6}}, "version": 7}).to_string()),
    )
    .await;
    assert_eq!(status, 409, "{conflict}");
    // Bad input gets a clear refusal in AWS's shape and changes nothing.
    let big = "x".repeat(100_000);
    for (path, body, want) in [
        (
            "/things/pump-h/shadow",
            json!({"state": {"reported": {"blob": big}}}).to_string(),
            413,
        ),
        ("/things/pump-h/shadow", "{not json".to_owned(), 400),
        (
            "/things/pump-h/shadow",
            json!({"state": {"reported": {"a": {"b": {"c": {"d": {"e": {"f": {"g": 1}}}}}}}}})
                .to_string(),
            400,
        ),
        (
            "/topics/things/pump-h/telemetry",
            json!({"blob": big}).to_string(),
            413,
        ),
        ("/topics/things/pump-h/telemetry", "[]".to_owned(), 400),
    ] {
        let (status, refused) = call(device.post(url(path)).body(body)).await;
        assert_eq!(status, want, "{path}: {refused}");
        assert_eq!(refused["code"], want, "{refused}");
        assert!(refused["message"].is_string(), "{refused}");
    }
    assert_eq!(
        call(device.get(url("/things/pump-h/shadow"))).await.1["version"],
        1,
        "nothing changed"
    );
    // Telemetry, stored before the answer.
    let (status, ok) = call(
        device
            .post(url("/topics/things/pump-h/telemetry"))
            .body(json!({"temp": 21.5}).to_string()),
    )
    .await;
    assert_eq!(status, 200, "{ok}");
    assert_eq!(ok["message"], "OK");
    let (_, history) = admin.get("/v1/things/pump-h/telemetry").await;
    assert_eq!(history["samples"][0]["values"]["temp"], 21.5, "{history}");

    // Only its own thing, only its telemetry topic, only with its certificate.
    let (status, _) = call(device.get(url("/things/pump-x/shadow"))).await;
    assert_eq!(status, 403);
    let (status, _) = call(
        device
            .post(url("/topics/$aws/things/pump-h/shadow/update"))
            .body("{}"),
    )
    .await;
    assert_eq!(status, 403);
    let (status, body) = call(client(None).get(url("/things/pump-h/shadow"))).await;
    assert_eq!(status, 401, "{body}");
    // An app key is no device credential.
    let (status, _) = call(
        client(None)
            .get(url("/things/pump-h/shadow"))
            .bearer_auth(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(status, 401);

    // Revoked: the handshake fails.
    let id = issued["id"].as_str().unwrap();
    let path = format!("/v1/things/pump-h/certificates/{id}");
    assert_eq!(
        admin.patch(&path, json!({"status": "revoked"})).await.0,
        200
    );
    assert!(
        client(Some(&identity))
            .get(url("/things/pump-h/shadow"))
            .send()
            .await
            .is_err()
    );
}
