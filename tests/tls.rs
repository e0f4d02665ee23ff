//! TLS on every listener of a running node: HTTPS, WebSocket over TLS and the MQTT endpoint's
//! TLS port, with a certificate made for the test; TLS 1.2 clients are refused.

use doppel_tests::{
    device::WAIT,
    node::{ADMIN_TOKEN, Node, Options},
    ws,
};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use rustls::{
    ClientConfig, RootCertStore,
    pki_types::{ServerName, pem::PemObject},
};
use serde_json::{Value, json};
use std::{net::SocketAddr, sync::Arc};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const BIN: &str = env!("CARGO_BIN_EXE_doppel");

struct Tls {
    _dir: tempfile::TempDir,
    cert_pem: String,
    node: Node,
}

fn start() -> Tls {
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, signing_key.serialize_pem()).unwrap();
    let node = Node::start(
        BIN,
        Options {
            args: vec![
                "--tls-cert".into(),
                cert_path.display().to_string(),
                "--tls-key".into(),
                key_path.display().to_string(),
                "--mqtt-tls-listen".into(),
                "127.0.0.1:0".into(),
            ],
            ..Options::default()
        },
    );
    Tls {
        _dir: dir,
        cert_pem: cert.pem(),
        node,
    }
}

impl Tls {
    fn client_config(
        &self,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> ClientConfig {
        let mut roots = RootCertStore::empty();
        let der = rustls::pki_types::CertificateDer::from_pem_slice(self.cert_pem.as_bytes());
        roots.add(der.unwrap()).unwrap();
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth()
    }

    fn http(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(self.cert_pem.as_bytes()).unwrap())
            .resolve("localhost", self.node.http)
            .build()
            .unwrap()
    }

    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.node.http.port())
    }

    async fn handshake(
        &self,
        addr: SocketAddr,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let connector = TlsConnector::from(Arc::new(self.client_config(versions)));
        let tcp = TcpStream::connect(addr).await?;
        connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn https_wss_and_mqtt_over_tls_carry_a_device_update_to_an_app() {
    let tls = start();
    assert!(tls.node.https, "the node announces https");
    let mqtt_tls = tls
        .node
        .mqtt_tls
        .expect("the node announces its MQTT TLS port");
    let http = tls.http();

    let registered: Value = http
        .post(tls.url("/v1/things"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"name": "secure-1"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = registered["token"]
        .as_str()
        .expect("a device token")
        .to_owned();

    // An app subscribes over WebSocket on TLS.
    let stream = tls
        .handshake(tls.node.http, &[&rustls::version::TLS13])
        .await
        .unwrap();
    let url = format!("wss://localhost:{}/v1/ws", tls.node.http.port());
    let mut app = ws::connect_over(Box::new(stream), &url, Some(ADMIN_TOKEN))
        .await
        .unwrap();
    app.send(json!({"type": "subscribe", "id": "s", "things": ["secure-1"]}))
        .await;

    // The device connects to the MQTT endpoint's TLS port.
    let mut options = MqttOptions::new("secure-1", "localhost", mqtt_tls.port());
    options.set_credentials("secure-1", token);
    options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
        Arc::new(tls.client_config(&[&rustls::version::TLS13])),
    )));
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    // `localhost` resolves to the loopback address the node listens on.
    client
        .publish(
            "$aws/things/secure-1/shadow/update",
            QoS::AtLeastOnce,
            false,
            json!({"state": {"reported": {"temp": 21}}}).to_string(),
        )
        .await
        .unwrap();
    tokio::time::timeout(WAIT, async {
        loop {
            match eventloop.poll().await.expect("the TLS session stays up") {
                Event::Incoming(Packet::PubAck(_)) => return,
                _ => continue,
            }
        }
    })
    .await
    .expect("a PUBACK over TLS");

    let change = app.next_of("change").await;
    assert_eq!(
        (&change["thing"], &change["changed"]["reported"]),
        (&json!("secure-1"), &json!({"temp": 21}))
    );
    let shadow = http
        .get(tls.url("/v1/things/secure-1/shadow"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(shadow.headers()["etag"], "\"1\"");
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_1_2_is_refused_on_every_tls_listener() {
    let tls = start();
    let mqtt_tls = tls.node.mqtt_tls.unwrap();
    for addr in [tls.node.http, mqtt_tls] {
        assert!(
            tls.handshake(addr, &[&rustls::version::TLS12])
                .await
                .is_err(),
            "a TLS 1.2 handshake with {addr} fails"
        );
        assert!(
            tls.handshake(addr, &[&rustls::version::TLS13])
                .await
                .is_ok(),
            "a TLS 1.3 handshake with {addr} succeeds"
        );
    }
    // Plain HTTP on the HTTPS port gets no answer a client could take for the API.
    let plain = reqwest::Client::new()
        .get(format!("http://{}/healthz", tls.node.http))
        .send()
        .await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
}
