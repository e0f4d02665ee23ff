//! Device TLS on a release node, on loopback: the rate of full connections with a client
//! certificate (TCP, TLS 1.3 handshake with the device's certificate, MQTT CONNECT authenticated
//! by it, CONNACK), and QoS 1 telemetry ingest over mTLS against the same devices on the plain
//! listener with tokens, in one run.
//!
//! `cargo bench --bench mtls`; `DOPPEL_BENCH_DEVICES` (50), `DOPPEL_BENCH_SECONDS` (10),
//! `DOPPEL_BENCH_CONCURRENCY` (32 handshakes at once). Every loop is bounded in time.

use doppel_tests::{
    api::Api,
    node::{Node, Options},
};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use rustls::{
    ClientConfig, RootCertStore,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
};
use serde_json::json;
use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn client_config(server_pem: &str, cert: &str, key: &str) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(server_pem.as_bytes()).unwrap())
        .unwrap();
    Arc::new(
        ClientConfig::builder_with_provider(
            Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
        )
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
            PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
        )
        .unwrap(),
    )
}

/// Connects, and returns once the CONNACK came (or the connection failed).
async fn connect(options: MqttOptions) -> Option<(AsyncClient, rumqttc::EventLoop)> {
    let (client, mut eventloop) = AsyncClient::new(options, 128);
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => return Some((client, eventloop)),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
}

/// QoS 1 telemetry from every device for `seconds`, each keeping its window full; acked/s.
async fn ingest(devices: Vec<(String, MqttOptions)>, seconds: u64) -> f64 {
    let acked = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for (thing, mut options) in devices {
        options.set_inflight(64);
        let acked = acked.clone();
        tasks.push(tokio::spawn(async move {
            let Some((client, mut eventloop)) = connect(options).await else {
                return;
            };
            let topic = format!("things/{thing}/telemetry");
            let sender = tokio::spawn({
                let client = client.clone();
                async move {
                    let mut n = 0u64;
                    while Instant::now() < end {
                        n += 1;
                        let payload = json!({"t": n % 40, "n": n}).to_string();
                        if client
                            .publish(&topic, QoS::AtLeastOnce, false, payload)
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            });
            while Instant::now() < end {
                match tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await {
                    Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => {
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Err(_)) => break,
                    _ => {}
                }
            }
            sender.abort();
        }));
    }
    let started = Instant::now();
    for task in tasks {
        let _ = task.await;
    }
    acked.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64().max(seconds as f64)
}

#[tokio::main]
async fn main() {
    let devices = env("DOPPEL_BENCH_DEVICES", 50) as usize;
    let seconds = env("DOPPEL_BENCH_SECONDS", 10);
    let concurrency = env("DOPPEL_BENCH_CONCURRENCY", 32) as usize;
    let dir = tempfile::tempdir().unwrap();
    let server = doppel_tests::tls::server_certificate(dir.path());
    let node = Node::start(
        env!("CARGO_BIN_EXE_doppel"),
        Options {
            args: server.serve_args(),
            // Raw ingest: no per-device publish rate, connections as often as the bench opens.
            config: Some(
                "[node.mqtt]\nmax_publish_rate = 0.0\nconnect_burst = 1000000.0\nmax_connect_rate = 1000000.0\n"
                    .into(),
            ),
            ..Options::default()
        },
    );
    let server_pem = server.pem.clone();
    let tls_port = node.mqtt_tls.unwrap().port();
    let admin = Api::over_tls(&node, Some(doppel_tests::node::ADMIN_TOKEN), &server_pem);
    let mut things = Vec::new();
    for i in 0..devices {
        let thing = format!("tls-{i}");
        let token = admin.register(&thing, None).await;
        let (_, issued) = admin
            .post(
                &format!("/v1/things/{thing}/certificates"),
                json!({"generate": true}),
            )
            .await;
        let tls = client_config(
            &server_pem,
            issued["certificate"].as_str().unwrap(),
            issued["private_key"].as_str().unwrap(),
        );
        things.push((thing, token, tls));
    }

    // 1. Connections with a client certificate, `concurrency` at a time.
    let connected = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for k in 0..concurrency {
        let (thing, _, tls) = things[k % things.len()].clone();
        let connected = connected.clone();
        tasks.push(tokio::spawn(async move {
            while Instant::now() < end {
                let mut options = MqttOptions::new(thing.clone(), "localhost", tls_port);
                options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                    tls.clone(),
                )));
                if let Some((client, mut eventloop)) = connect(options).await {
                    connected.fetch_add(1, Ordering::Relaxed);
                    let _ = client.disconnect().await;
                    let _ =
                        tokio::time::timeout(Duration::from_millis(100), eventloop.poll()).await;
                }
            }
        }));
    }
    let started = Instant::now();
    for task in tasks {
        let _ = task.await;
    }
    let handshakes = connected.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();

    // 2. Ingest over mTLS, then the same devices over the plain listener with tokens.
    let mtls = things
        .iter()
        .map(|(thing, _, tls)| {
            let mut options = MqttOptions::new(thing.clone(), "localhost", tls_port);
            options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                tls.clone(),
            )));
            (thing.clone(), options)
        })
        .collect();
    let plain_port = node.mqtt().port();
    let plain = things
        .iter()
        .map(|(thing, token, _)| {
            let mut options = MqttOptions::new(thing.clone(), "127.0.0.1", plain_port);
            options.set_credentials(thing.clone(), token.clone());
            (thing.clone(), options)
        })
        .collect();
    let mtls_rate = ingest(mtls, seconds).await;
    let plain_rate = ingest(plain, seconds).await;
    println!(
        "connections with a client certificate (TCP + TLS 1.3 + CONNECT + CONNACK, {concurrency} at once): {handshakes:.0}/s"
    );
    println!(
        "QoS 1 telemetry, {devices} devices: mTLS {mtls_rate:.0} msgs/s, plain with tokens {plain_rate:.0} msgs/s ({:.2}x)",
        mtls_rate / plain_rate.max(1.0)
    );
}
