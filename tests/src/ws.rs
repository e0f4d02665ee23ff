//! A WebSocket client of `/v1/ws` (tokio-tungstenite), over plain TCP, a socket with a small
//! receive buffer (a slow app), or any stream the test brings (TLS).

use crate::{device::WAIT, node::Node};
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpSocket, TcpStream},
};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{Message, client::IntoClientRequest, http::StatusCode},
};

/// A byte stream a WebSocket can run over.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A connected app.
#[derive(Debug)]
pub struct WsClient {
    socket: WebSocketStream<Box<dyn Io>>,
}

impl std::fmt::Debug for dyn Io {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Io")
    }
}

/// Connects with `token`; the HTTP status on refusal.
pub async fn connect(node: &Node, token: Option<&str>) -> Result<WsClient, StatusCode> {
    let stream = TcpStream::connect(node.http).await.unwrap();
    connect_over(
        Box::new(stream),
        &format!("ws://{}/v1/ws", node.http),
        token,
    )
    .await
}

/// Connects over a socket whose receive buffer is `bytes` small, so that an app which stops
/// reading holds the node back soon.
pub async fn connect_small(node: &Node, token: &str, bytes: u32) -> WsClient {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(bytes).unwrap();
    let stream = socket.connect(node.http).await.unwrap();
    connect_over(
        Box::new(stream),
        &format!("ws://{}/v1/ws", node.http),
        Some(token),
    )
    .await
    .expect("the upgrade succeeds")
}

/// Runs the WebSocket handshake for `url` over `stream`.
pub async fn connect_over(
    stream: Box<dyn Io>,
    url: &str,
    token: Option<&str>,
) -> Result<WsClient, StatusCode> {
    let mut request = url.into_client_request().unwrap();
    if let Some(token) = token {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    match tokio_tungstenite::client_async(request, stream).await {
        Ok((socket, _)) => Ok(WsClient { socket }),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err(response.status()),
        Err(e) => panic!("websocket: {e}"),
    }
}

/// A frame or control message, as the tests see it.
#[derive(Debug)]
pub enum Incoming {
    /// A JSON text frame.
    Frame(Value),
    /// A ping from the node.
    Ping,
}

impl WsClient {
    /// Sends one JSON frame.
    pub async fn send(&mut self, frame: Value) {
        self.socket
            .send(Message::text(frame.to_string()))
            .await
            .unwrap();
    }

    /// Sends one raw text frame.
    pub async fn send_text(&mut self, text: &str) {
        self.socket.send(Message::text(text)).await.unwrap();
    }

    /// The next JSON frame or ping, within [`WAIT`].
    pub async fn incoming(&mut self) -> Incoming {
        loop {
            let message = tokio::time::timeout(WAIT, self.socket.next())
                .await
                .expect("a frame from the node")
                .expect("the socket is open")
                .expect("a readable frame");
            match message {
                Message::Text(text) => {
                    return Incoming::Frame(serde_json::from_str(&text).expect("a JSON frame"));
                }
                Message::Ping(_) => return Incoming::Ping,
                Message::Close(_) => panic!("the node closed the socket"),
                _ => {}
            }
        }
    }

    /// The next JSON frame, within [`WAIT`].
    pub async fn next(&mut self) -> Value {
        loop {
            if let Incoming::Frame(frame) = self.incoming().await {
                return frame;
            }
        }
    }

    /// The next frame of `kind`, skipping others.
    pub async fn next_of(&mut self, kind: &str) -> Value {
        loop {
            let frame = self.next().await;
            if frame["type"] == kind {
                return frame;
            }
        }
    }

    /// Reads until the node closes the connection; the close frame's code, if it sent one.
    pub async fn close_code(&mut self) -> Option<u16> {
        loop {
            match tokio::time::timeout(WAIT, self.socket.next())
                .await
                .expect("the node closes the socket")
            {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return None,
            }
        }
    }

    /// Whether a frame arrives within `within` (to check that nothing does).
    pub async fn quiet_for(&mut self, within: std::time::Duration) -> Option<Value> {
        loop {
            match tokio::time::timeout(within, self.socket.next()).await {
                Err(_) => return None,
                Ok(Some(Ok(Message::Text(text)))) => return serde_json::from_str(&text).ok(),
                Ok(Some(Ok(Message::Close(_)) | Err(_)) | None) => {
                    panic!("the node closed the socket")
                }
                Ok(Some(Ok(_))) => {}
            }
        }
    }
}
