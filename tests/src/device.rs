//! A device on MQTT 3.1.1 (rumqttc): connects with its credentials, subscribes, publishes, and
//! hands the test every message, acknowledgement and disconnection with deadlines.

use rumqttc::{
    AsyncClient, ConnectReturnCode, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS,
};
use serde_json::Value;
use std::{net::SocketAddr, time::Duration};
use tokio::sync::mpsc;

/// What the device's event loop saw.
#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    /// A message on a topic.
    Message(String, Vec<u8>),
    /// A PUBACK for the QoS 1 publish that got this packet id.
    PubAck(u16),
    /// A QoS 1 publish left with this packet id.
    Sent(u16),
    /// SUBACK return codes (`None`: refused).
    SubAck(Vec<Option<u8>>),
    /// The connection ended.
    Closed(String),
}

/// A connected device.
#[derive(Debug)]
pub struct Device {
    /// The client, to publish and subscribe.
    pub client: AsyncClient,
    rx: mpsc::UnboundedReceiver<Seen>,
    /// Seen while waiting for something else, not yet taken.
    backlog: std::collections::VecDeque<Seen>,
}

/// How long a test waits for anything from a node.
pub const WAIT: Duration = Duration::from_secs(10);

fn options(addr: SocketAddr, client_id: &str, user: &str, password: &str) -> MqttOptions {
    let mut options = MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
    options.set_credentials(user, password);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_max_packet_size(1 << 20, 1 << 20);
    options
}

/// Connects `thing` with `token`; the CONNACK code on refusal.
pub async fn connect(
    addr: SocketAddr,
    thing: &str,
    token: &str,
) -> Result<Device, ConnectReturnCode> {
    connect_as(addr, thing, thing, token).await
}

/// Connects `thing` with `token`, or says why it could not (refused, unreachable, no CONNACK
/// in time) — for devices that move to another node when theirs goes away.
pub async fn try_connect(addr: SocketAddr, thing: &str, token: &str) -> Result<Device, String> {
    let (client, mut eventloop) = AsyncClient::new(options(addr, thing, thing, token), 1024);
    tokio::time::timeout(Duration::from_secs(3), connack(&mut eventloop))
        .await
        .map_err(|_| "no CONNACK in time".to_string())?
        .map_err(|e| e.to_string())?;
    Ok(Device::driven(client, eventloop))
}

/// Polls until the CONNACK, or the connection's first error.
async fn connack(eventloop: &mut EventLoop) -> Result<(), rumqttc::ConnectionError> {
    loop {
        if let Event::Incoming(Packet::ConnAck(_)) = eventloop.poll().await? {
            return Ok(());
        }
    }
}

/// Connects with an explicit client id and user name.
pub async fn connect_as(
    addr: SocketAddr,
    client_id: &str,
    user: &str,
    token: &str,
) -> Result<Device, ConnectReturnCode> {
    let (client, mut eventloop) = AsyncClient::new(options(addr, client_id, user, token), 1024);
    match tokio::time::timeout(WAIT, connack(&mut eventloop))
        .await
        .expect("a CONNACK")
    {
        Ok(()) => Ok(Device::driven(client, eventloop)),
        Err(rumqttc::ConnectionError::ConnectionRefused(code)) => Err(code),
        Err(e) => panic!("connecting {client_id}: {e}"),
    }
}

async fn drive(mut eventloop: EventLoop, tx: mpsc::UnboundedSender<Seen>) {
    loop {
        let seen = match eventloop.poll().await {
            Ok(Event::Incoming(Packet::Publish(p))) => Seen::Message(p.topic, p.payload.to_vec()),
            Ok(Event::Incoming(Packet::PubAck(a))) => Seen::PubAck(a.pkid),
            Ok(Event::Incoming(Packet::SubAck(s))) => Seen::SubAck(
                s.return_codes
                    .iter()
                    .map(|c| match c {
                        rumqttc::SubscribeReasonCode::Success(q) => Some(*q as u8),
                        rumqttc::SubscribeReasonCode::Failure => None,
                    })
                    .collect(),
            ),
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) if pkid != 0 => Seen::Sent(pkid),
            Ok(_) => continue,
            Err(e) => {
                let _ = tx.send(Seen::Closed(e.to_string()));
                return;
            }
        };
        if tx.send(seen).is_err() {
            return;
        }
    }
}

impl Device {
    /// A connected client whose event loop runs on its own task, reporting what it sees.
    fn driven(client: AsyncClient, eventloop: EventLoop) -> Device {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(drive(eventloop, tx));
        Device {
            client,
            rx,
            backlog: Default::default(),
        }
    }

    /// The next thing seen, within [`WAIT`].
    pub async fn next(&mut self) -> Seen {
        if let Some(seen) = self.backlog.pop_front() {
            return seen;
        }
        tokio::time::timeout(WAIT, self.rx.recv())
            .await
            .expect("something from the node")
            .expect("the event loop runs")
    }

    /// Subscribes and waits for the SUBACK; whatever else arrives meanwhile stays for later.
    pub async fn subscribe(&mut self, filter: &str) -> Vec<Option<u8>> {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .unwrap();
        let mut skipped = Vec::new();
        loop {
            let seen = tokio::time::timeout(WAIT, self.rx.recv())
                .await
                .expect("a SUBACK")
                .expect("the event loop runs");
            match seen {
                Seen::SubAck(codes) => {
                    self.backlog.extend(skipped);
                    return codes;
                }
                Seen::Closed(e) => panic!("closed while subscribing: {e}"),
                other => skipped.push(other),
            }
        }
    }

    /// Publishes JSON at QoS 1.
    pub async fn publish(&self, topic: &str, payload: &Value) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.to_string())
            .await
            .unwrap();
    }

    /// Publishes JSON at QoS 1 and waits for its PUBACK (the node sends it once the message is
    /// committed); whatever else arrives meanwhile stays for later.
    pub async fn publish_acked(&mut self, topic: &str, payload: &Value) {
        self.publish(topic, payload).await;
        let mut pkid = None;
        let mut skipped = Vec::new();
        loop {
            let seen = tokio::time::timeout(WAIT, self.rx.recv())
                .await
                .expect("a PUBACK")
                .expect("the event loop runs");
            match seen {
                Seen::Sent(id) if pkid.is_none() => pkid = Some(id),
                Seen::PubAck(id) if Some(id) == pkid => {
                    self.backlog.extend(skipped);
                    return;
                }
                Seen::Closed(e) => panic!("closed while publishing: {e}"),
                other => skipped.push(other),
            }
        }
    }

    /// Publishes raw bytes at QoS 1.
    pub async fn publish_raw(&self, topic: &str, payload: Vec<u8>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
    }

    /// The next message on `topic` (others are skipped), as JSON.
    pub async fn message_on(&mut self, topic: &str) -> Value {
        loop {
            match self.next().await {
                Seen::Message(t, payload) if t == topic => {
                    return serde_json::from_slice(&payload).expect("JSON payload");
                }
                Seen::Closed(e) => panic!("closed while waiting for {topic}: {e}"),
                _ => {}
            }
        }
    }

    /// Publishes `payload` to `topic` and returns the next message on `reply`.
    pub async fn request(&mut self, topic: &str, payload: &Value, reply: &str) -> Value {
        self.publish(topic, payload).await;
        self.message_on(reply).await
    }

    /// Waits until the node closes the connection; returns what the client saw.
    pub async fn closed(&mut self) -> String {
        loop {
            if let Seen::Closed(e) = self.next().await {
                return e;
            }
        }
    }

    /// Everything seen so far, without waiting.
    pub fn drain(&mut self) -> Vec<Seen> {
        let mut seen: Vec<Seen> = self.backlog.drain(..).collect();
        while let Ok(s) = self.rx.try_recv() {
            seen.push(s);
        }
        seen
    }
}
