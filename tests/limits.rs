//! Bounds and clear errors on every interface of a real `doppel serve`: idle and half-sent HTTP
//! connections, connections per address, content codings, malformed paths, queries and bodies,
//! sizes past the store's limits, retained publishes, login guessing, dev mode, oversized
//! WebSocket frames.

use doppel_tests::{
    api::Api,
    device,
    node::{ADMIN_TOKEN, Node, Options},
    ws,
};
use reqwest::Method;
use rumqttc::ConnectReturnCode;
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

const BIN: &str = env!("CARGO_BIN_EXE_doppel");

/// Reads until the node closes `stream`, within `within`; what it sent before.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> String {
    let mut buf = Vec::new();
    tokio::time::timeout(within, stream.read_to_end(&mut buf))
        .await
        .expect("the node closes the connection in time")
        .ok();
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_and_half_sent_http_connections_are_closed() {
    let node = Node::start(
        BIN,
        Options {
            config: Some("[http]\nheader_timeout = \"1s\"\n".into()),
            ..Options::default()
        },
    );
    // Silent from the start.
    let mut idle = TcpStream::connect(node.http).await.unwrap();
    // Half a request head.
    let mut half = TcpStream::connect(node.http).await.unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // A finished request, then an idle keep-alive connection.
    let mut kept = TcpStream::connect(node.http).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    for stream in [&mut idle, &mut half] {
        assert_eq!(closed_within(stream, Duration::from_secs(5)).await, "");
    }
    let answered = closed_within(&mut kept, Duration::from_secs(5)).await;
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
    println!("idle connections closed after {:?}", started.elapsed());

    // A body that stops half way is answered 408 (after the body deadline, 10 s).
    let mut slow = TcpStream::connect(node.http).await.unwrap();
    slow.write_all(
        format!(
            "POST /v1/things HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
             Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"name\":"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let answer = closed_within(&mut slow, Duration::from_secs(20)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn one_address_holds_a_bounded_number_of_http_connections() {
    let node = Node::start(
        BIN,
        Options {
            config: Some("[http]\nmax_connections_per_ip = 4\n".into()),
            ..Options::default()
        },
    );
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut stream = TcpStream::connect(node.http).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 12];
        stream.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"HTTP/1.1 200");
        held.push(stream);
    }
    let mut fifth = TcpStream::connect(node.http).await.unwrap();
    let _ = fifth
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    assert_eq!(
        closed_within(&mut fifth, Duration::from_secs(5)).await,
        "",
        "closed without an answer"
    );
    // A closed connection gives its place back.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut stream = TcpStream::connect(node.http).await.unwrap();
        let _ = stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await;
        if closed_within(&mut stream, Duration::from_secs(5))
            .await
            .starts_with("HTTP/1.1 200")
        {
            break;
        }
        assert!(Instant::now() < deadline, "the place was not given back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_requests_get_clear_errors() {
    let node = Node::start(BIN, Options::default());
    let api = Api::admin(&node);
    api.register("pump-1", None).await;

    // Bodies: no Rust type names in messages.
    let response = reqwest::Client::new()
        .post(node.url("/v1/things"))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body("5")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    let message = body["message"].as_str().unwrap();
    assert!(
        !message.contains("struct") && !message.contains("Body"),
        "{message}"
    );

    // A content coding the API does not read.
    let (status, body, _) = api
        .send(
            Method::POST,
            "/v1/things",
            Some(json!({"name": "gz-1"})),
            &[("content-encoding", "gzip")],
        )
        .await;
    assert_eq!(
        (status, &body["code"]),
        (415, &json!("unsupported_media_type"))
    );
    assert_eq!(
        api.get("/v1/things/gz-1").await.0,
        404,
        "nothing registered"
    );

    // An empty shadow name is not the classic shadow; a cursor must come from a page.
    let (status, body) = api.get("/v1/things/pump-1/shadow?name=").await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = api.get("/v1/things?cursor=%21%21garbage%21%21").await;
    assert_eq!(status, 400, "{body}");

    // The bearer scheme is case-insensitive.
    let response = reqwest::Client::new()
        .get(node.url("/v1/things"))
        .header("authorization", format!("bearer {ADMIN_TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // Past what the store holds in one value: 413, not 500.
    let (status, body) = api
        .post(
            "/v1/things",
            json!({"name": "huge-1", "attributes": {"notes": "x".repeat(120_000)}}),
        )
        .await;
    assert_eq!(
        (status, &body["code"]),
        (413, &json!("too_large")),
        "{body}"
    );
    let big_schema = json!({"type": "object", "description": "x".repeat(120_000)});
    let (status, body) = api
        .put(
            "/v1/types/Huge",
            json!({"schemas": {"reported": big_schema}}),
        )
        .await;
    assert_eq!(
        (status, &body["code"]),
        (413, &json!("too_large")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn retained_publishes_are_refused() {
    use rumqttc::v5::{
        AsyncClient, Event, MqttOptions,
        mqttbytes::{
            QoS,
            v5::{DisconnectReasonCode, Packet},
        },
    };
    let node = Node::start(BIN, Options::default());
    let token = node.register("keeper").await;
    let addr = node.mqtt();
    let mut options = MqttOptions::new("keeper", addr.ip().to_string(), addr.port());
    options.set_credentials("keeper", token.clone());
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    client
        .publish(
            "things/keeper/telemetry",
            QoS::AtLeastOnce,
            true,
            r#"{"t":1}"#,
        )
        .await
        .unwrap();
    let reason = tokio::time::timeout(device::WAIT, async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Disconnect(d))) => return Some(d.reason_code),
                Ok(_) => {}
                Err(rumqttc::v5::ConnectionError::MqttState(
                    rumqttc::v5::StateError::ServerDisconnect { reason_code, .. },
                )) => return Some(reason_code),
                Err(_) => return None,
            }
        }
    })
    .await
    .expect("the node disconnects");
    assert_eq!(reason, Some(DisconnectReasonCode::RetainNotSupported));
    // MQTT 3.1.1 has no reason: the connection closes.
    let d = device::connect(node.mqtt(), "keeper", &token)
        .await
        .unwrap();
    d.client
        .publish(
            "things/keeper/telemetry",
            rumqttc::QoS::AtLeastOnce,
            true,
            "{}",
        )
        .await
        .unwrap();
    let mut d = d;
    d.closed().await;
    assert_eq!(node.shadow("keeper", None).await.0, 404, "nothing applied");
}

#[tokio::test(flavor = "multi_thread")]
async fn guessing_device_tokens_is_throttled() {
    let node = Node::start(BIN, Options::default());
    let token = node.register("guarded").await;
    let mut codes = Vec::new();
    for _ in 0..15 {
        codes.push(
            device::connect(node.mqtt(), "guarded", "wrong")
                .await
                .expect_err("refused"),
        );
    }
    assert!(
        codes[..10]
            .iter()
            .all(|c| *c == ConnectReturnCode::BadUserNamePassword),
        "{codes:?}"
    );
    assert!(
        codes[10..]
            .iter()
            .all(|c| *c == ConnectReturnCode::NotAuthorized),
        "throttled after a burst of failures: {codes:?}"
    );
    // While throttled, not even the right token is checked for this device from this address;
    // another device behind the same address is not held back.
    assert_eq!(
        device::connect(node.mqtt(), "guarded", &token).await.err(),
        Some(ConnectReturnCode::NotAuthorized)
    );
    let neighbour = node.register("neighbour").await;
    assert!(
        device::connect(node.mqtt(), "neighbour", &neighbour)
            .await
            .is_ok()
    );
    // A second later one more try is allowed.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match device::connect(node.mqtt(), "guarded", &token).await {
            Ok(_) => break,
            Err(code) => {
                assert_eq!(code, ConnectReturnCode::NotAuthorized);
                assert!(Instant::now() < deadline, "the throttle never lets up");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn dev_mode_checks_the_tokens_of_registered_things() {
    let node = Node::start(
        BIN,
        Options {
            args: vec!["--dev".into()],
            ..Options::default()
        },
    );
    let token = node.register("real-1").await;
    assert_eq!(
        device::connect(node.mqtt(), "real-1", "anything")
            .await
            .err(),
        Some(ConnectReturnCode::BadUserNamePassword)
    );
    assert!(device::connect(node.mqtt(), "real-1", &token).await.is_ok());
    // Unknown devices are still registered on first connect, and come back without a token.
    drop(
        device::connect(node.mqtt(), "new-1", "")
            .await
            .expect("dev mode registers it"),
    );
    assert!(device::connect(node.mqtt(), "new-1", "").await.is_ok());
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_websocket_frames_close_with_1009() {
    let node = Node::start(BIN, Options::default());
    let mut client = ws::connect(&node, Some(ADMIN_TOKEN)).await.unwrap();
    let id = "x".repeat(70 * 1024);
    client.send(json!({"type": "unsubscribe", "id": id})).await;
    assert_eq!(client.close_code().await, Some(1009));
}
