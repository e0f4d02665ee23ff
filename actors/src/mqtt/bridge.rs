//! External broker mode: the node connects to an existing broker (Mosquitto, EMQX, HiveMQ)
//! with rumqttc over MQTT 5 — persistent session, manual acknowledgements — subscribes to the
//! device topics of every thing, hands each message to its twin, and acknowledges it to the
//! broker only after the commit that holds its effect, in the order the messages arrived. Replies,
//! deltas and documents are published back through the broker.
//!
//! In a cluster, either every node keeps its own session and they share the device topics
//! through `$share/GROUP/…` (`?share=GROUP`; brokers that deliver `$aws/…` topics to shared
//! subscriptions), or — without `share` — the nodes share one persistent session, which
//! [`follow_leader`] runs on whichever node owns shard 0; a new owner resumes the same session,
//! so what the last one had not acknowledged is redelivered to it. Either way each message is
//! forwarded to its twin's owner.
//!
//! The broker enforces who may publish where (see `deploy/mosquitto/`); a message is attributed to
//! the thing named in its topic. What the broker itself loses when it crashes is the broker's to
//! answer for: Mosquitto, for one, acknowledges QoS 1 messages before it persists them.

use crate::{
    ack::{Ack, Settled},
    mqtt::inbound::{self, Inbound},
    mqtt::topics,
    node::Node,
    outbox::Outbox,
};
use arc_swap::ArcSwapOption;
use bytes::Bytes;
use futures::{StreamExt, stream::FuturesOrdered};
use rumqttc::v5::{
    AsyncClient, ConnectionError, Event, EventLoop, MqttOptions,
    mqttbytes::{
        QoS,
        v5::{Filter, Packet, Publish},
    },
};
use std::{future::Future, pin::Pin, sync::Arc, time::Duration};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};
use twin_core::ThingName;

/// The filters the node subscribes to (replies are one level deeper, so the node does not
/// receive its own answers).
pub const FILTERS: [&str; 5] = [
    "$aws/things/+/shadow/+",
    "$aws/things/+/shadow/name/+/+",
    "things/+/telemetry",
    "things/+/commands/+/reply",
    "gateways/+/telemetry",
];

/// Where and how to connect, from `mqtt://[user[:password]@]host[:port][?client_id=ID&share=GROUP]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerUrl {
    /// Host name or address.
    pub host: String,
    /// Port (default 1883).
    pub port: u16,
    /// User name, if any.
    pub username: Option<String>,
    /// Password, if any.
    pub password: Option<String>,
    /// Client id of the node's persistent session (default `doppel`).
    pub client_id: String,
    /// Subscribe through `$share/GROUP/…` so that several nodes split the load, when the broker
    /// announces shared subscriptions.
    pub share: Option<String>,
}

impl BrokerUrl {
    /// Parses a broker URL.
    pub fn parse(text: &str) -> Result<Self, String> {
        let url = url::Url::parse(text).map_err(|e| format!("invalid broker url: {e}"))?;
        if !matches!(url.scheme(), "mqtt" | "tcp") {
            return Err(format!(
                "unsupported broker url scheme {:?}: use mqtt://",
                url.scheme()
            ));
        }
        let host = url
            .host_str()
            .ok_or("the broker url has no host")?
            .to_owned();
        let mut parsed = BrokerUrl {
            host,
            port: url.port().unwrap_or(1883),
            username: (!url.username().is_empty()).then(|| url.username().to_owned()),
            password: url.password().map(str::to_owned),
            client_id: "doppel".to_owned(),
            share: None,
        };
        for (key, value) in url.query_pairs() {
            match &*key {
                "client_id" => parsed.client_id = value.into_owned(),
                "share" => parsed.share = Some(value.into_owned()),
                other => return Err(format!("unknown broker url parameter {other:?}")),
            }
        }
        Ok(parsed)
    }
}

/// The broker as seen by the twins: where their replies go.
#[derive(Clone, Debug)]
pub struct BrokerOutbox {
    client: AsyncClient,
}

impl Outbox for BrokerOutbox {
    fn publish(&self, thing: &ThingName, topic: String, payload: Bytes) {
        if let Err(error) = self
            .client
            .try_publish(topic, QoS::AtLeastOnce, false, payload)
        {
            warn!(%thing, %error, "the broker connection is saturated; a reply was dropped");
        }
    }

    fn wants(&self, _: &ThingName, _: &str) -> bool {
        // Who listens behind the broker is unknown: build every notice, as AWS does.
        true
    }

    fn disconnect(&self, thing: &ThingName) -> bool {
        // The broker holds the device's connection and credentials; revoking them there is the
        // broker operator's step (see deploy/mosquitto/README.md).
        tracing::warn!(%thing, "decommissioned behind a broker: remove the device's broker account too");
        false
    }

    fn holds(&self, _: &ThingName) -> bool {
        // The broker delivers to the device wherever it is connected.
        true
    }
}

/// Messages for devices through the broker session of whichever node runs it now: while this
/// node does not, it holds nothing, and a cluster sends its messages to the node that does.
#[derive(Clone, Debug, Default)]
pub struct SwitchOutbox {
    current: Arc<ArcSwapOption<BrokerOutbox>>,
}

impl Outbox for SwitchOutbox {
    fn publish(&self, thing: &ThingName, topic: String, payload: Bytes) {
        if let Some(outbox) = self.current.load_full() {
            outbox.publish(thing, topic, payload);
        }
    }

    fn wants(&self, _: &ThingName, _: &str) -> bool {
        true
    }

    fn disconnect(&self, thing: &ThingName) -> bool {
        match self.current.load_full() {
            Some(outbox) => outbox.disconnect(thing),
            None => false,
        }
    }

    fn holds(&self, _: &ThingName) -> bool {
        self.current.load().is_some()
    }
}

/// Runs the broker session on this node whenever it owns shard 0 (see [`Node::leads`]), until
/// `shutdown`: the session starts when the node takes the shard and stops — acknowledging what
/// was committed, leaving the rest to be redelivered — when it loses or hands it over.
pub async fn follow_leader(
    url: BrokerUrl,
    max_packet_size: usize,
    node: Node,
    outbox: SwitchOutbox,
    shutdown: CancellationToken,
) {
    let poll = Duration::from_millis(100);
    loop {
        while !node.leads() {
            tokio::select! {
                () = tokio::time::sleep(poll) => {}
                () = shutdown.cancelled() => return,
            }
        }
        info!(host = %url.host, port = url.port, "this node runs the broker session now");
        let (bridge, broker, _) = Bridge::new(url.clone(), max_packet_size);
        outbox.current.store(Some(Arc::new(broker)));
        let stop = shutdown.child_token();
        let mut run = tokio::spawn(bridge.run(node.clone(), stop.clone()));
        loop {
            tokio::select! {
                () = tokio::time::sleep(poll) => {
                    if !node.leads() {
                        break;
                    }
                }
                _ = &mut run => break,
            }
        }
        outbox.current.store(None);
        stop.cancel();
        let _ = run.await;
        info!("this node no longer runs the broker session");
        if shutdown.is_cancelled() {
            return;
        }
    }
}

/// A connected (or connecting) bridge, before it runs.
pub struct Bridge {
    url: BrokerUrl,
    client: AsyncClient,
    eventloop: EventLoop,
    subscribed: tokio::sync::watch::Sender<bool>,
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge")
            .field("url", &self.url.host)
            .finish_non_exhaustive()
    }
}

impl Bridge {
    /// Prepares the connection; it is made when [`Bridge::run`] starts. The watch turns `true`
    /// once the broker has acknowledged the node's subscriptions.
    pub fn new(
        url: BrokerUrl,
        max_packet_size: usize,
    ) -> (Bridge, BrokerOutbox, tokio::sync::watch::Receiver<bool>) {
        let mut options = MqttOptions::new(url.client_id.clone(), url.host.clone(), url.port);
        if let Some(user) = &url.username {
            options.set_credentials(user.clone(), url.password.clone().unwrap_or_default());
        }
        options
            .set_clean_start(false)
            // Keep the session (and the messages queued for it) for a day while the node is away.
            .set_session_expiry_interval(Some(86_400))
            .set_manual_acks(true)
            .set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(Some(max_packet_size as u32));
        options.set_request_channel_capacity(65_536);
        let (client, eventloop) = AsyncClient::new(options, 65_536);
        let outbox = BrokerOutbox {
            client: client.clone(),
        };
        let (subscribed, ready) = tokio::sync::watch::channel(false);
        (
            Bridge {
                url,
                client,
                eventloop,
                subscribed,
            },
            outbox,
            ready,
        )
    }

    /// Receives device messages until `shutdown`; reconnects when the broker goes away. On
    /// shutdown it stops taking messages, acknowledges those already committed, and leaves the
    /// rest to be redelivered to the next session.
    pub async fn run(mut self, node: Node, shutdown: CancellationToken) {
        type Acked = Pin<Box<dyn Future<Output = Option<Publish>> + Send>>;
        let mut acks: FuturesOrdered<Acked> = FuturesOrdered::new();
        let max_inflight = node.config().mqtt.max_inflight.max(1) * 16;
        let mut backoff = Duration::from_millis(100);
        let mut draining = false;
        loop {
            if draining && acks.is_empty() {
                self.disconnect().await;
                return;
            }
            tokio::select! {
                event = self.eventloop.poll(), if draining || acks.len() < max_inflight => match event {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        self.subscribed.send_replace(true);
                    }
                    Ok(Event::Incoming(Packet::ConnAck(connack))) => {
                        backoff = Duration::from_millis(100);
                        // Acknowledgements owed on the previous connection are void: the broker
                        // redelivers those messages on this one.
                        acks = FuturesOrdered::new();
                        let shared = connack.properties.as_ref().and_then(|p| p.shared_subscription_available) != Some(0);
                        self.subscribe(shared);
                        info!(host = %self.url.host, port = self.url.port, session = connack.session_present, "connected to the broker");
                    }
                    // While stopping, new messages stay unacknowledged for the next session.
                    Ok(Event::Incoming(Packet::Publish(publish))) if !draining => {
                        if let Some(acked) = self.on_publish(&node, publish) {
                            acks.push_back(acked);
                        }
                    }
                    Ok(_) => {}
                    Err(ConnectionError::RequestsDone) => return,
                    Err(error) => {
                        // A node that no longer leads its cluster must not take the shared
                        // session back from the one that does.
                        if draining || !node.leads() {
                            return;
                        }
                        warn!(%error, ?backoff, "broker connection lost; reconnecting");
                        tokio::select! {
                            () = tokio::time::sleep(backoff) => {}
                            () = shutdown.cancelled() => return,
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        if !node.leads() {
                            return;
                        }
                    }
                },
                Some(acked) = acks.next(), if !acks.is_empty() => {
                    if let Some(publish) = acked
                        && let Err(error) = self.client.try_ack(&publish)
                    {
                        warn!(%error, "could not acknowledge a message to the broker");
                    }
                }
                () = shutdown.cancelled(), if !draining => draining = true,
            }
        }
    }

    /// Sends what is queued (acknowledgements) and a DISCONNECT, for at most two seconds.
    async fn disconnect(&mut self) {
        let _ = self.client.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Ok(event) = self.eventloop.poll().await {
                if matches!(event, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                    return;
                }
            }
        })
        .await;
    }

    fn subscribe(&self, shared_available: bool) {
        let share = self.url.share.as_deref().filter(|_| shared_available);
        let filters = FILTERS.iter().map(|f| {
            let path = match share {
                Some(group) => format!("$share/{group}/{f}"),
                None => (*f).to_owned(),
            };
            Filter::new(path, QoS::AtLeastOnce)
        });
        if let Err(error) = self.client.try_subscribe_many(filters) {
            error!(%error, "subscribing to device topics failed");
        }
    }

    /// Hands a message to its twin; returns what resolves once it may be acknowledged
    /// (`None`: never — the broker will redeliver it).
    fn on_publish(
        &self,
        node: &Node,
        publish: Publish,
    ) -> Option<Pin<Box<dyn Future<Output = Option<Publish>> + Send>>> {
        let topic = String::from_utf8_lossy(&publish.topic).into_owned();
        let Some(target) = topics::parse(&topic) else {
            debug!(%topic, "ignored a message outside the device api");
            return Some(Box::pin(std::future::ready(Some(publish))));
        };
        match inbound::interpret(target, &publish.payload, &node.config().limits) {
            Inbound::Command(thing, command) => {
                let (ack, done) = Ack::new();
                node.deliver_from_device(thing, command, Some(ack));
                Some(settle(publish, done))
            }
            Inbound::Batch { gateway, entries } => {
                let (ack, done) = Ack::new();
                node.deliver_batch(&gateway, entries, Some(ack));
                Some(settle(publish, done))
            }
            Inbound::Answer { topic, payload, .. } => {
                let _ = self
                    .client
                    .try_publish(topic, QoS::AtLeastOnce, false, payload);
                Some(Box::pin(std::future::ready(Some(publish))))
            }
            Inbound::Refuse(reason) => {
                debug!(%topic, ?reason, "refused a device message");
                Some(Box::pin(std::future::ready(Some(publish))))
            }
        }
    }
}

/// Waits for a message's acknowledgement: a handled message (committed, or refused by its
/// twin) is acknowledged to the broker; a lost one is not, so the broker redelivers it. QoS 0
/// messages need no acknowledgement but wait too, so they count against the window of
/// messages in flight.
fn settle(
    publish: Publish,
    done: tokio::sync::oneshot::Receiver<Settled>,
) -> Pin<Box<dyn Future<Output = Option<Publish>> + Send>> {
    Box::pin(async move {
        let settled = done.await.unwrap_or(Settled::Failed);
        let handled = matches!(settled, Settled::Done | Settled::Refused(_));
        (handled && publish.qos != QoS::AtMostOnce).then_some(publish)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls_parse() {
        let u =
            BrokerUrl::parse("mqtt://doppel:s3cret@127.0.0.1:1884?client_id=node-1&share=twins")
                .unwrap();
        assert_eq!(
            u,
            BrokerUrl {
                host: "127.0.0.1".into(),
                port: 1884,
                username: Some("doppel".into()),
                password: Some("s3cret".into()),
                client_id: "node-1".into(),
                share: Some("twins".into()),
            }
        );
        let u = BrokerUrl::parse("mqtt://broker").unwrap();
        assert_eq!(
            (u.port, u.client_id.as_str(), u.username),
            (1883, "doppel", None)
        );
        assert!(BrokerUrl::parse("http://broker").is_err());
        assert!(BrokerUrl::parse("mqtt://broker?typo=1").is_err());
    }

    #[test]
    fn the_node_does_not_subscribe_to_its_own_replies() {
        for reply in [
            "$aws/things/t/shadow/update/accepted",
            "$aws/things/t/shadow/update/delta",
            "$aws/things/t/shadow/name/n/get/rejected",
            "things/t/commands/reboot",
        ] {
            assert!(
                !FILTERS.iter().any(|f| topics::matches(reply, f)),
                "{reply}"
            );
        }
        for request in [
            "$aws/things/t/shadow/update",
            "$aws/things/t/shadow/name/n/get",
            "things/t/telemetry",
        ] {
            assert!(
                FILTERS.iter().any(|f| topics::matches(request, f)),
                "{request}"
            );
        }
    }
}
