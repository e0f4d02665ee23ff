//! Watching the node from the app side: a WebSocket subscription to a sample of twins, whose
//! `change` frames carry the send time the device put in its telemetry (`sent_us`), and a
//! poller of the node's `/metrics` for its memory over time.

use crate::{
    SimConfig, SimError,
    mqtt::{Connection, Incoming},
    report::Stats,
};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest, http::HeaderValue};

/// Names per subscription (the node's default `max_things`).
const PER_SUBSCRIPTION: usize = 1000;
/// Keep-alive of the broker observer.
const KEEP_ALIVE: Duration = Duration::from_secs(60);

/// Microseconds since the epoch: the clock devices stamp `sent_us` with.
pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Subscribes to `things` and returns once the node has taken the subscriptions; the frames
/// are then counted into `stats` until `stop` turns true.
pub(crate) async fn watch_twins(
    config: &SimConfig,
    things: Vec<String>,
    stats: Arc<Stats>,
    mut stop: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, SimError> {
    let url = format!(
        "{}/v1/ws",
        config
            .api
            .replacen("http://", "ws://", 1)
            .replacen("https://", "wss://", 1)
    );
    let mut request = url
        .into_client_request()
        .map_err(|e| SimError::Config(format!("websocket url: {e}")))?;
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {}", config.token))
            .map_err(|e| SimError::Config(format!("token: {e}")))?,
    );
    let mut ws = connect_twins(config, request).await?;
    for (k, chunk) in things.chunks(PER_SUBSCRIPTION).enumerate() {
        let frame = json!({"type": "subscribe", "id": format!("sim-{k}"), "things": chunk});
        ws.send(Message::text(frame.to_string()))
            .await
            .map_err(|e| SimError::Api(format!("websocket: {e}")))?;
    }
    // Frames are handled in order: once the answer to this `get` arrives, the subscriptions
    // before it are in place.
    if let Some(first) = things.first() {
        let frame = json!({"type": "get", "id": "sim-ready", "thing": first});
        ws.send(Message::text(frame.to_string()))
            .await
            .map_err(|e| SimError::Api(format!("websocket: {e}")))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, ws.next()).await {
                Ok(Some(Ok(Message::Text(text)))) => {
                    let frame: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                    if frame["id"] == "sim-ready" {
                        break;
                    }
                    if frame["type"] == "error" {
                        return Err(SimError::Api(format!("websocket subscription: {text}")));
                    }
                }
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(e))) => return Err(SimError::Api(format!("websocket: {e}"))),
                Ok(None) | Err(_) => {
                    return Err(SimError::Api(
                        "websocket: no answer to the subscriptions within 30 s".into(),
                    ));
                }
            }
        }
    }
    Ok(tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                frame = ws.next() => match frame {
                    Some(Ok(Message::Text(text))) => on_frame(&text, &stats),
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => {
                        stats.error("websocket_closed");
                        break;
                    }
                },
            }
        }
        let _ = ws.close(None).await;
    }))
}

/// The node's WebSocket: `ws://`, or `wss://` trusting `--tls-ca` (an API served over TLS).
async fn connect_twins(
    config: &SimConfig,
    request: tokio_tungstenite::tungstenite::handshake::client::Request,
) -> Result<
    tokio_tungstenite::WebSocketStream<
        tokio_util::either::Either<
            tokio::net::TcpStream,
            tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
        >,
    >,
    SimError,
> {
    let fail = |e: String| SimError::Api(format!("websocket: {e}"));
    let uri = request.uri().clone();
    let host = uri.host().unwrap_or("localhost").to_owned();
    let tls = uri.scheme_str() == Some("wss");
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| fail(e.to_string()))?;
    let stream = if tls {
        let tls = crate::tls::Trust::load(config)?.client()?;
        let server =
            rustls_pki_types::ServerName::try_from(host).map_err(|e| fail(e.to_string()))?;
        tokio_util::either::Either::Right(
            tokio_rustls::TlsConnector::from(tls)
                .connect(server, tcp)
                .await
                .map_err(|e| fail(e.to_string()))?,
        )
    } else {
        tokio_util::either::Either::Left(tcp)
    };
    let (ws, _) = tokio_tungstenite::client_async(request, stream)
        .await
        .map_err(|e| fail(e.to_string()))?;
    Ok(ws)
}

/// Counts every frame of a WebSocket that streams deliveries (another system's output): each
/// frame carrying a `sent_us` is one delivery.
pub(crate) async fn watch_stream(
    url: &str,
    stats: Arc<Stats>,
    mut stop: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, SimError> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .map_err(|e| SimError::Api(format!("websocket {url}: {e}")))?;
    Ok(tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                frame = ws.next() => match frame {
                    Some(Ok(Message::Text(text))) => match sent_us(text.as_bytes()) {
                        Some(sent) => stats.end_to_end(now_us().saturating_sub(sent)),
                        None => stats.error("websocket_frame_without_sent_us"),
                    },
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => {
                        stats.error("websocket_closed");
                        break;
                    }
                },
            }
        }
        let _ = ws.close(None).await;
    }))
}

/// Subscribes to every device's telemetry on a plain broker and counts each message.
pub(crate) async fn watch_broker(
    config: &SimConfig,
    stats: Arc<Stats>,
    mut stop: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, SimError> {
    let name = format!("{}-observer", config.prefix);
    let mut connection = Connection::open(
        config.endpoint(0, 0),
        None,
        &name,
        &crate::mqtt::Login::Token(String::new()),
        KEEP_ALIVE,
    )
    .await?;
    connection.subscribe("things/+/telemetry")?;
    connection.flush().await?;
    connection.next().await?;
    Ok(tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                incoming = connection.next() => match incoming {
                    Ok(Incoming::Message(_, payload)) => match sent_us(&payload) {
                        Some(sent) => stats.end_to_end(now_us().saturating_sub(sent)),
                        None => stats.error("message_without_sent_us"),
                    },
                    Ok(_) => {}
                    Err(_) => {
                        stats.error("observer_connection_lost");
                        break;
                    }
                },
            }
            let _ = connection.ping_if_idle(KEEP_ALIVE / 2);
            if connection.flush().await.is_err() {
                stats.error("observer_connection_lost");
                break;
            }
        }
        connection.close().await;
    }))
}

/// The first `"sent_us":<digits>` in a JSON text, without parsing the rest.
fn sent_us(text: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"sent_us\":";
    let at = text.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let digits = &text[at..];
    let digits = &digits[..digits.iter().take_while(|b| b.is_ascii_digit()).count()];
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Counts one frame of the node's WebSocket. `change` frames (the bulk) are read without a
/// JSON parse: the node writes `"type"` first and a change's `changed` before anything else
/// that could hold a `sent_us`.
fn on_frame(text: &str, stats: &Stats) {
    if text.starts_with(r#"{"type":"change""#) {
        if let Some(sent) = sent_us(text.as_bytes()) {
            stats.end_to_end(now_us().saturating_sub(sent));
        }
    } else if text.starts_with(r#"{"type":"resync""#) {
        stats
            .ws_resyncs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    } else if text.starts_with(r#"{"type":"error""#) {
        let code = serde_json::from_str::<Value>(text)
            .ok()
            .and_then(|f| f["code"].as_str().map(str::to_owned))
            .unwrap_or_else(|| "error".into());
        stats.error(&format!("websocket_{code}"));
    }
}

/// Reads the node's RSS and active twins from `/metrics`.
pub(crate) async fn memory(http: &reqwest::Client, config: &SimConfig) -> Option<(u64, u64)> {
    let text = http
        .get(format!("{}/metrics", config.api))
        .bearer_auth(&config.token)
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let gauge = |name: &str| {
        text.lines().find_map(|l| {
            l.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse::<f64>()
                .ok()
        })
    };
    Some((
        gauge("doppel_process_resident_memory_bytes")? as u64,
        gauge("doppel_twins_active").unwrap_or(0.0) as u64,
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn sent_us_is_found_anywhere_in_a_frame() {
        assert_eq!(
            super::sent_us(br#"{"ts":1,"sent_us":1732492800123456,"t":2}"#),
            Some(1732492800123456)
        );
        assert_eq!(
            super::sent_us(br#"{"changed":{"reported":{"sent_us":42}}}"#),
            Some(42)
        );
        assert_eq!(super::sent_us(br#"{"ts":1}"#), None);
        assert_eq!(super::sent_us(br#"{"sent_us":"x"}"#), None);
    }
}
