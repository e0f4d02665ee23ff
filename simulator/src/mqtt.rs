//! A small MQTT 3.1.1 client for simulated devices, built on rumqttc's packet codecs: one TCP
//! connection from a chosen source address (so tens of thousands of devices fit past the
//! ephemeral-port limit of one address), plain with a token or TLS 1.3 with a client
//! certificate, QoS 1 publishes with their PUBACK times, subscriptions, keep-alive pings. One
//! task owns a connection; nothing is shared.

use crate::SimError;
use bytes::BytesMut;
use rumqttc::mqttbytes::{
    self, QoS,
    v4::{ConnAck, Connect, ConnectReturnCode, Packet, Publish, Subscribe},
};
use std::{
    collections::VecDeque,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
};
use tokio_util::either::Either;

/// How a device proves who it is.
#[derive(Clone)]
pub(crate) enum Login {
    /// Its token as MQTT password (none in broker mode: an empty token).
    Token(String),
    /// Its client certificate, over TLS to the node named `server`.
    Certificate {
        tls: Arc<rustls::ClientConfig>,
        server: rustls_pki_types::ServerName<'static>,
    },
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Login::Token(_) => "Login::Token",
            Login::Certificate { .. } => "Login::Certificate",
        })
    }
}

type Stream = Either<TcpStream, tokio_rustls::client::TlsStream<TcpStream>>;

/// Largest packet accepted from the node.
const MAX_PACKET: usize = 1 << 20;

/// Something the node sent.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// A QoS 1 publish carrying this many telemetry messages was acknowledged after `latency`.
    PubAck(Duration, u64),
    /// A message on a subscribed topic.
    Message(String, bytes::Bytes),
    /// Anything else (SUBACK, PINGRESP).
    Other,
}

/// One device's (or gateway's) connection.
#[derive(Debug)]
pub(crate) struct Connection {
    stream: Stream,
    input: BytesMut,
    output: BytesMut,
    next_pkid: u16,
    /// QoS 1 publishes awaiting their PUBACK, oldest first (the node acknowledges in order),
    /// with when they were sent and how many telemetry messages they carry.
    inflight: VecDeque<(u16, Instant, u64)>,
    last_sent: Instant,
}

/// The source address for connection `i` when the node is on loopback: 127.1.0.1 and up, 250
/// connections per address.
pub(crate) fn source_for(server: SocketAddr, i: usize) -> Option<Ipv4Addr> {
    match server.ip() {
        IpAddr::V4(ip) if ip.is_loopback() => {
            let n = i / 250;
            Some(Ipv4Addr::new(
                127,
                1 + (n / 250) as u8 % 254,
                (n % 250) as u8,
                (i % 250) as u8 + 1,
            ))
        }
        _ => None,
    }
}

impl Connection {
    /// Connects as `name` (its client id) with `login`, and waits for the CONNACK.
    pub async fn open(
        server: SocketAddr,
        source: Option<Ipv4Addr>,
        name: &str,
        login: &Login,
        keep_alive: Duration,
    ) -> Result<Connection, SimError> {
        let socket = match server {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        if let Some(source) = source {
            socket.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
        }
        let stream = socket.connect(server).await?;
        stream.set_nodelay(true)?;
        let stream = match login {
            Login::Token(_) => Either::Left(stream),
            Login::Certificate { tls, server } => Either::Right(
                tokio_rustls::TlsConnector::from(tls.clone())
                    .connect(server.clone(), stream)
                    .await
                    .map_err(|e| SimError::Mqtt(format!("TLS handshake: {e}")))?,
            ),
        };
        let mut connection = Connection {
            stream,
            input: BytesMut::with_capacity(1024),
            output: BytesMut::with_capacity(1024),
            next_pkid: 0,
            inflight: VecDeque::new(),
            last_sent: Instant::now(),
        };
        let mut connect = Connect::new(name);
        connect.keep_alive = keep_alive.as_secs().min(u16::MAX as u64) as u16;
        if let Login::Token(token) = login
            && !token.is_empty()
        {
            connect.set_login(name, token);
        }
        connection.encode(Packet::Connect(connect))?;
        connection.flush().await?;
        match connection.read_packet().await? {
            Packet::ConnAck(ConnAck {
                code: ConnectReturnCode::Success,
                ..
            }) => Ok(connection),
            Packet::ConnAck(ConnAck { code, .. }) => {
                Err(SimError::Mqtt(format!("connection refused: {code:?}")))
            }
            other => Err(SimError::Mqtt(format!("expected CONNACK, got {other:?}"))),
        }
    }

    fn encode(&mut self, packet: Packet) -> Result<(), SimError> {
        packet
            .write(&mut self.output, MAX_PACKET)
            .map(|_| ())
            .map_err(|e| SimError::Mqtt(format!("encoding a packet: {e}")))
    }

    /// Queues a QoS 1 publish carrying `messages` telemetry messages (sent by the next
    /// [`flush`](Self::flush)).
    pub fn publish(
        &mut self,
        topic: &str,
        payload: Vec<u8>,
        messages: u64,
    ) -> Result<(), SimError> {
        self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
        let mut publish = Publish::new(topic, QoS::AtLeastOnce, payload);
        publish.pkid = self.next_pkid;
        self.encode(Packet::Publish(publish))?;
        self.inflight
            .push_back((self.next_pkid, Instant::now(), messages));
        Ok(())
    }

    /// Queues a subscription at QoS 1.
    pub fn subscribe(&mut self, filter: &str) -> Result<(), SimError> {
        self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
        let mut subscribe = Subscribe::new(filter, QoS::AtLeastOnce);
        subscribe.pkid = self.next_pkid;
        self.encode(Packet::Subscribe(subscribe))
    }

    /// Queues a ping if nothing was sent for `idle`.
    pub fn ping_if_idle(&mut self, idle: Duration) -> Result<(), SimError> {
        if self.last_sent.elapsed() >= idle {
            self.encode(Packet::PingReq)?;
        }
        Ok(())
    }

    /// Publishes awaiting their PUBACK.
    pub fn inflight(&self) -> usize {
        self.inflight.len()
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) -> Result<(), SimError> {
        if !self.output.is_empty() {
            self.stream.write_all(&self.output).await?;
            // TLS may keep records in its buffer until flushed.
            self.stream.flush().await?;
            self.output.clear();
            self.last_sent = Instant::now();
        }
        Ok(())
    }

    async fn read_packet(&mut self) -> Result<Packet, SimError> {
        loop {
            match Packet::read(&mut self.input, MAX_PACKET) {
                Ok(packet) => return Ok(packet),
                Err(mqttbytes::Error::InsufficientBytes(_)) => {}
                Err(e) => return Err(SimError::Mqtt(format!("reading a packet: {e}"))),
            }
            if self.stream.read_buf(&mut self.input).await? == 0 {
                return Err(SimError::Mqtt("the node closed the connection".into()));
            }
        }
    }

    /// The next packet from the node. Cancel-safe: bytes read stay buffered.
    pub async fn next(&mut self) -> Result<Incoming, SimError> {
        match self.read_packet().await? {
            Packet::PubAck(ack) => match self.inflight.pop_front() {
                Some((pkid, at, messages)) if pkid == ack.pkid => {
                    Ok(Incoming::PubAck(at.elapsed(), messages))
                }
                _ => Err(SimError::Mqtt(format!("PUBACK {} out of order", ack.pkid))),
            },
            Packet::Publish(publish) => {
                if publish.qos == QoS::AtLeastOnce {
                    self.encode(Packet::PubAck(mqttbytes::v4::PubAck::new(publish.pkid)))?;
                }
                let topic = publish.topic;
                Ok(Incoming::Message(topic, publish.payload))
            }
            Packet::Disconnect => Err(SimError::Mqtt("the node disconnected".into())),
            _ => Ok(Incoming::Other),
        }
    }

    /// Says goodbye.
    pub async fn close(mut self) {
        if self.encode(Packet::Disconnect).is_ok() {
            let _ = self.flush().await;
        }
    }
}
