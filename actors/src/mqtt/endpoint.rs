//! The MQTT device endpoint built into the node: MQTT 3.1.1 and 5, QoS 0 and 1, one task per
//! connection. A device authenticates as its thing (client id = username = thing name,
//! password = its token), may publish and subscribe only under its own name, and gets the
//! PUBACK of a QoS 1 message only after the commit that holds its effect — in the order the
//! messages arrived. Sessions are clean: nothing is kept for a device between connections.

use crate::{
    ack::{Ack, Settled},
    mqtt::{
        inbound::{self, Inbound},
        packets::{
            Connect, In, Out, PacketError, Reason, Refusal, Settings, Version, read_connect,
        },
        sessions::{Outgoing, SessionHandle, Sessions},
        throttle::{AuthThrottle, Bucket, ConnectThrottle},
        topics::{self, DeviceTopic},
    },
    node::Node,
    outbox::Outbox,
    work::ThingMeta,
};
use bytes::BytesMut;
use futures::{FutureExt, StreamExt, stream::FuturesOrdered};
use std::{
    collections::{BTreeMap, HashSet},
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpListener,
    sync::{Notify, mpsc},
    time::Instant,
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use twin_core::{ShadowError, ThingName};

/// The attribute marking things that dev mode registered on first connect.
pub const DEV_MODE_ATTRIBUTE: &str = "dev_mode";

/// Outbound QoS 1 messages a device may leave unacknowledged before it is disconnected.
const MAX_OUTBOUND_INFLIGHT: usize = 1_000;

/// Accepts device connections until `shutdown` is cancelled; with `tls`, each connection is a
/// TLS 1.3 session first.
pub async fn serve(
    listener: TcpListener,
    node: Node,
    sessions: Arc<Sessions>,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: CancellationToken,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let throttle = Arc::new(AuthThrottle::default());
    let config = &node.config().mqtt;
    let connects = Arc::new(ConnectThrottle::new(
        config.connect_burst,
        config.max_connect_rate,
    ));
    let max_connections = config.max_connections.max(1);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // Bounded, so that devices never take the descriptors the store needs.
                    let Some(open) = OpenConnection::take(&sessions.open, max_connections) else {
                        metrics::counter!("doppel_mqtt_refused_total", "reason" => "connections")
                            .increment(1);
                        debug!(%peer, "refused a connection: the endpoint holds its maximum");
                        drop(stream);
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let (node, sessions, shutdown) = (node.clone(), sessions.clone(), shutdown.clone());
                    let (acceptor, throttle) = (acceptor.clone(), (throttle.clone(), connects.clone()));
                    tokio::spawn(async move {
                        let _open = open;
                        let Some(acceptor) = acceptor else {
                            return connection(stream, peer, None, node, sessions, throttle, shutdown).await;
                        };
                        let timeout = node.config().mqtt.connect_timeout;
                        match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                            Ok(Ok(tls)) => {
                                // The client certificate the handshake verified, if any.
                                let cert = tls
                                    .get_ref()
                                    .1
                                    .peer_certificates()
                                    .and_then(|chain| chain.first())
                                    .map(|c| c.clone().into_owned());
                                connection(tls, peer, cert, node, sessions, throttle, shutdown).await
                            }
                            Ok(Err(error)) => debug!(%peer, %error, "TLS handshake failed"),
                            Err(_) => debug!(%peer, "TLS handshake timed out"),
                        }
                    });
                }
                Err(error) => {
                    warn!(%error, "accepting an MQTT connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = shutdown.cancelled() => break,
        }
    }
}

/// One of the endpoint's open connections, counted until dropped.
struct OpenConnection(Arc<AtomicUsize>);

impl OpenConnection {
    fn take(open: &Arc<AtomicUsize>, max: usize) -> Option<OpenConnection> {
        open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .ok()
        .map(|_| OpenConnection(open.clone()))
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a message's place in the connection's window turns into once it is settled.
enum Settle {
    /// Write this PUBACK.
    PubAck(u16, Reason),
    /// A QoS 1 message was not committed: no PUBACK, and the connection closes so that the
    /// device resends it.
    Lost(u16),
    /// A QoS 0 message is done (it held its place in the window until then).
    Quiet,
}

type AckFuture = Pin<Box<dyn Future<Output = Settle> + Send>>;

fn ready(pkid: u16, reason: Reason) -> AckFuture {
    Box::pin(std::future::ready(Settle::PubAck(pkid, reason)))
}

/// Waits for a message's acknowledgement. QoS 0 messages wait too, so that they count against
/// the connection's window like QoS 1 ones: a flood at either QoS stops the socket being read
/// rather than queueing without bound.
fn settle(qos: u8, pkid: u16, done: tokio::sync::oneshot::Receiver<Settled>) -> AckFuture {
    Box::pin(async move {
        let settled = done.await.unwrap_or(Settled::Failed);
        match (qos, settled) {
            (0, Settled::Failed) => {
                metrics::counter!("doppel_mqtt_qos0_lost_total").increment(1);
                Settle::Quiet
            }
            (0, _) => Settle::Quiet,
            (_, Settled::Done) => Settle::PubAck(pkid, Reason::Success),
            (_, Settled::Refused(code)) => Settle::PubAck(pkid, Reason::for_refusal(code)),
            (_, Settled::Failed) => Settle::Lost(pkid),
        }
    })
}

/// Serves one connection (plain TCP or TLS; `cert`: the client certificate its handshake
/// verified).
#[allow(clippy::too_many_arguments)]
pub async fn connection<S>(
    stream: S,
    peer: SocketAddr,
    cert: Option<rustls_pki_types::CertificateDer<'static>>,
    node: Node,
    sessions: Arc<Sessions>,
    throttle: (Arc<AuthThrottle>, Arc<ConnectThrottle>),
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let config = node.config().mqtt.clone();
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut input = BytesMut::with_capacity(4096);
    let connect = tokio::time::timeout(config.connect_timeout, async {
        loop {
            if let Some(connect) = read_connect(&mut input, config.max_packet_size)? {
                return Ok::<_, PacketError>(Some(connect));
            }
            if reader
                .read_buf(&mut input)
                .await
                .map_err(|e| PacketError::Malformed(e.to_string()))?
                == 0
            {
                return Ok(None);
            }
        }
    })
    .await;
    let connect = match connect {
        Ok(Ok(Some(connect))) => connect,
        Ok(Err(error)) => return debug!(%peer, %error, "refused a connection before CONNECT"),
        Ok(Ok(None)) | Err(_) => return debug!(%peer, "no CONNECT"),
    };
    let settings = Settings {
        max_packet_size: config.max_packet_size as u32,
        receive_max: config.max_inflight.min(u16::MAX as usize) as u16,
    };
    let version = connect.version;
    let mut output = BytesMut::new();
    let (throttle, connects) = throttle;
    let checked = if !connects.allows(&connect.client_id) {
        metrics::counter!("doppel_mqtt_throttled_total", "kind" => "connect").increment(1);
        Err(Refusal::Throttled)
    } else if throttle.allows(peer.ip(), &connect.client_id) {
        // With `tls_auth = "certificate"` the handshake already required a certificate.
        match &cert {
            Some(cert) => authenticate_certificate(&node, &connect, cert).await,
            None => authenticate(&node, &connect, config.dev)
                .await
                .map(|(thing, meta)| (thing, meta, None)),
        }
    } else {
        Err(Refusal::Throttled)
    };
    let (thing, meta, claim) = match checked {
        Ok(found) => found,
        Err(refusal) => {
            if matches!(refusal, Refusal::BadCredentials | Refusal::BadClientId) {
                throttle.failed(peer.ip(), &connect.client_id);
            }
            if refusal == Refusal::Throttled {
                // Throttled attempts are counted, not logged one by one (a flood of them would
                // flood the log).
                debug!(%peer, client_id = %connect.client_id, "refused a throttled device");
            } else {
                info!(%peer, client_id = %connect.client_id, ?refusal, "refused a device");
            }
            metrics::counter!("doppel_mqtt_refused_total", "reason" => format!("{refusal:?}"))
                .increment(1);
            let _ = version.write(Out::ConnAck(Err(refusal)), &mut output, &settings);
            let _ = writer.write_all(&output).await;
            let _ = writer.flush().await;
            let _ = writer.shutdown().await;
            return;
        }
    };
    let (tx, rx) = mpsc::channel(config.outbound_queue.max(1));
    let handle = SessionHandle {
        id: sessions.next_id(),
        tx,
        subscriptions: Arc::new(RwLock::new(Vec::new())),
        close: Arc::new(Mutex::new(None)),
        closed: Arc::new(Notify::new()),
    };
    // A claim session is no device yet: it is not in the session registry (nothing is sent to
    // it but its answers) and has no presence.
    let device = claim.is_none();
    if device && let Some(previous) = sessions.register(thing.clone(), handle.clone()) {
        previous.close(Reason::SessionTakenOver);
    }
    debug!(%peer, %thing, ?version, claim = claim.as_ref().map(|c| c.template.as_str()), "device connected");
    metrics::gauge!("doppel_mqtt_connections").increment(1.0);
    if device {
        node.presence(&thing, meta.clone(), None);
    }
    let publish_rate = config.publish_rate(meta.device_type.as_ref().map(|t| t.as_str()));
    let session_node = node.clone();
    let mut session = Session {
        thing: thing.clone(),
        version,
        settings,
        node,
        sessions: sessions.clone(),
        handle: handle.clone(),
        acks: FuturesOrdered::new(),
        output,
        next_pkid: 0,
        outbound_inflight: HashSet::new(),
        max_inflight: config.max_inflight.max(1),
        max_packet_size: config.max_packet_size,
        shadow_inflight: Arc::new(AtomicUsize::new(0)),
        max_shadow_inflight: config.max_shadow_inflight.max(1),
        publishes: Bucket::full(publish_rate),
        max_publish_rate: publish_rate,
        claim,
    };
    let outcome = session
        .run(
            &mut reader,
            &mut writer,
            input,
            rx,
            connect.keep_alive,
            shutdown,
        )
        .await;
    metrics::gauge!("doppel_mqtt_connections").decrement(1.0);
    if device {
        sessions.remove(&thing, handle.id);
        session_node.presence(&thing, meta, Some(outcome.disconnect_reason()));
    }
    let _ = writer.shutdown().await;
    debug!(%peer, %thing, %outcome, "device disconnected");
}

/// A device with a client certificate of the deployment's CA (the handshake checked the chain
/// and that it is not denied): the certificate must be on record, active and unexpired. A
/// thing's certificate authenticates the thing named by the client id, which must be its own
/// (AWS IoT ignores the user name then; so does the endpoint); a claim certificate opens a
/// provisioning session for its template under any client id.
async fn authenticate_certificate(
    node: &Node,
    connect: &Connect,
    cert: &rustls_pki_types::CertificateDer<'static>,
) -> Result<(ThingName, Arc<ThingMeta>, Option<Claim>), Refusal> {
    let thing = ThingName::new(&connect.client_id).map_err(|_| Refusal::BadClientId)?;
    let id = crate::pki::certificate_id(cert);
    let record = node
        .with_directory(move |d| d.certificate(&id))
        .await
        .map_err(|_| Refusal::Unavailable)?;
    let record = match record {
        Some(record) if record.status == storage::CertStatus::Active => record,
        _ => return Err(Refusal::BadCredentials),
    };
    if crate::now_ms() > record.not_after {
        return Err(Refusal::BadCredentials);
    }
    if let Some(template) = record.template {
        let meta = Arc::new(ThingMeta {
            device_type: None,
            attributes: BTreeMap::new(),
        });
        let claim = Claim {
            template,
            certificate: record.id,
            pending: Arc::default(),
            requests: Arc::new(AtomicUsize::new(0)),
        };
        return Ok((thing, meta, Some(claim)));
    }
    if record.thing != thing.as_str() {
        return Err(Refusal::BadClientId);
    }
    let registered = node
        .thing(thing.clone())
        .await
        .map_err(|_| Refusal::Unavailable)?;
    registered
        .map(|record| (thing, meta_of(record), None))
        .ok_or(Refusal::BadCredentials)
}

/// What a claim session is told once it used its request budget.
const THROTTLED: &str = "this claim session made too many requests; connect again";

/// Certificates a claim session created and has not provisioned yet, at most.
const MAX_PENDING_CERTIFICATES: usize = 4;
/// Requests (certificate creations and provisionings) one claim session may make: a device
/// provisions once, and each request costs a signature or a transaction.
const MAX_CLAIM_REQUESTS: usize = 16;

/// A session authenticated by a claim certificate: it may create a certificate and provision
/// a thing with its template, nothing else.
#[derive(Clone)]
struct Claim {
    template: String,
    /// The claim certificate's id.
    certificate: String,
    /// Certificates handed out on this session, by ownership token, oldest first; not stored
    /// until provisioning binds one to its thing.
    pending: Arc<Mutex<std::collections::VecDeque<(String, storage::CertRecord)>>>,
    /// Requests made so far.
    requests: Arc<AtomicUsize>,
}

impl Claim {
    /// Counts a request; `false` once the session used its budget.
    fn allows(&self) -> bool {
        self.requests.fetch_add(1, Ordering::AcqRel) < MAX_CLAIM_REQUESTS
    }

    fn hold(&self, token: String, record: storage::CertRecord) {
        if let Ok(mut pending) = self.pending.lock() {
            if pending.len() >= MAX_PENDING_CERTIFICATES {
                pending.pop_front();
            }
            pending.push_back((token, record));
        }
    }

    fn take(&self, token: &str) -> Option<storage::CertRecord> {
        let mut pending = self.pending.lock().ok()?;
        let at = pending.iter().position(|(t, _)| t == token)?;
        pending.remove(at).map(|(_, record)| record)
    }
}

/// What watchers filter a thing's events on.
fn meta_of(record: storage::ThingRecord) -> Arc<ThingMeta> {
    Arc::new(ThingMeta {
        device_type: record.device_type,
        attributes: record.attributes,
    })
}

async fn authenticate(
    node: &Node,
    connect: &Connect,
    dev: bool,
) -> Result<(ThingName, Arc<ThingMeta>), Refusal> {
    let thing = ThingName::new(&connect.client_id).map_err(|_| Refusal::BadClientId)?;
    if dev {
        let existing = node
            .thing(thing.clone())
            .await
            .map_err(|_| Refusal::Unavailable)?;
        match existing {
            None => {
                warn!(%thing, "DEV MODE: registering an unknown device without credentials");
                let new = crate::directory::NewThing {
                    name: thing.clone(),
                    device_type: None,
                    attributes: BTreeMap::from([(
                        DEV_MODE_ATTRIBUTE.to_owned(),
                        "true".to_owned(),
                    )]),
                };
                let meta = Arc::new(ThingMeta {
                    device_type: None,
                    attributes: new.attributes.clone(),
                });
                node.register(new, "dev-mode")
                    .await
                    .map_err(|_| Refusal::Unavailable)?;
                return Ok((thing, meta));
            }
            // Registered by dev mode itself: it has no credentials the device could know.
            Some(record) if record.attributes.contains_key(DEV_MODE_ATTRIBUTE) => {
                return Ok((thing, meta_of(record)));
            }
            // Registered by an operator: its token is checked, dev mode or not.
            Some(_) => {}
        }
    }
    // AWS IoT device SDKs append a metrics query to the user name (`pump-7?SDK=Python&…`), which
    // AWS ignores; so does the endpoint.
    let user = connect
        .username
        .as_deref()
        .map(|u| u.split_once('?').map_or(u, |(name, _)| name));
    match user {
        Some(user) if user == thing.as_str() => {}
        Some(_) => return Err(Refusal::BadClientId),
        None => return Err(Refusal::BadCredentials),
    }
    let password = connect.password.clone().ok_or(Refusal::BadCredentials)?;
    node.authenticate(thing.clone(), password)
        .await
        .map(|record| (thing, meta_of(record)))
        .map_err(|failure| match failure {
            crate::directory::AuthFailure::BadCredentials => Refusal::BadCredentials,
            crate::directory::AuthFailure::Unavailable => Refusal::Unavailable,
        })
}

/// Why a connection ended.
enum End {
    ClientClosed,
    Closed(Reason),
    Io(std::io::Error),
    Packet(PacketError),
}

impl End {
    /// Why the session ended, in AWS IoT's `disconnectReason` vocabulary.
    fn disconnect_reason(&self) -> &'static str {
        match self {
            End::ClientClosed => "CLIENT_INITIATED_DISCONNECT",
            End::Closed(Reason::SessionTakenOver) => "DUPLICATE_CLIENTID",
            End::Closed(Reason::KeepAliveTimeout) => "MQTT_KEEP_ALIVE_TIMEOUT",
            End::Closed(Reason::ShuttingDown) => "SERVER_INITIATED_DISCONNECT",
            End::Closed(Reason::AdministrativeAction | Reason::NotAuthorized) => {
                "AUTHORIZATION_FAILURE"
            }
            End::Closed(Reason::ServerBusy | Reason::QuotaExceeded) => "THROTTLED",
            End::Closed(_) | End::Packet(_) => "CLIENT_ERROR",
            End::Io(_) => "CONNECTION_LOST",
        }
    }
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::ClientClosed => f.write_str("closed by the device"),
            End::Closed(reason) => write!(f, "closed by the endpoint: {reason:?}"),
            End::Io(e) => write!(f, "i/o error: {e}"),
            End::Packet(e) => write!(f, "{e}"),
        }
    }
}

struct Session {
    thing: ThingName,
    version: Version,
    settings: Settings,
    node: Node,
    sessions: Arc<Sessions>,
    handle: SessionHandle,
    acks: FuturesOrdered<AckFuture>,
    output: BytesMut,
    next_pkid: u16,
    outbound_inflight: HashSet<u16>,
    max_inflight: usize,
    max_packet_size: usize,
    /// Shadow requests waiting for their twin, and how many may.
    shadow_inflight: Arc<AtomicUsize>,
    max_shadow_inflight: usize,
    /// The device's publish rate (0: unlimited).
    publishes: Bucket,
    max_publish_rate: f64,
    /// Set for a session authenticated by a claim certificate.
    claim: Option<Claim>,
}

impl Session {
    async fn run<R, W>(
        &mut self,
        reader: &mut R,
        writer: &mut W,
        mut input: BytesMut,
        mut rx: mpsc::Receiver<Outgoing>,
        keep_alive: u16,
        shutdown: CancellationToken,
    ) -> End
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        self.write(Out::ConnAck(Ok(())));
        let grace = (keep_alive > 0).then(|| Duration::from_millis(u64::from(keep_alive) * 1500));
        let mut last_heard = Instant::now();
        loop {
            // Handle every complete packet already buffered.
            let mut end = None;
            loop {
                match self.version.read(&mut input, self.max_packet_size) {
                    Ok(Some(packet)) => {
                        if let Err(e) = self.on_packet(packet) {
                            end = Some(e);
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(error) => {
                        let reason = match error {
                            PacketError::TooLarge(_) => Reason::PacketTooLarge,
                            PacketError::Malformed(_) => Reason::ProtocolError,
                        };
                        debug!(thing = %self.thing, %error, "unreadable packet");
                        self.write(Out::Disconnect(reason));
                        end = Some(End::Packet(error));
                        break;
                    }
                }
            }
            if !self.output.is_empty() {
                // Flushed too: over TLS, records may wait in the session's buffer otherwise.
                let written = match writer.write_all(&self.output).await {
                    Ok(()) => writer.flush().await,
                    Err(e) => Err(e),
                };
                if let Err(e) = written {
                    break End::Io(e);
                }
                self.output.clear();
            }
            if let Some(end) = end {
                break end;
            }
            let deadline = grace.map(|g| last_heard + g);
            tokio::select! {
                read = reader.read_buf(&mut input), if self.acks.len() < self.max_inflight => match read {
                    Ok(0) => break End::ClientClosed,
                    Ok(_) => last_heard = Instant::now(),
                    Err(e) => break End::Io(e),
                },
                Some(outgoing) = rx.recv() => self.on_outgoing(outgoing),
                Some(first) = self.acks.next(), if !self.acks.is_empty() => {
                    if let Some(end) = self.on_acks(first) {
                        break end;
                    }
                }
                () = self.handle.closed.notified() => {
                    let reason = self.handle.close.lock().ok().and_then(|r| *r).unwrap_or(Reason::Unspecified);
                    self.write(Out::Disconnect(reason));
                    let _ = writer.write_all(&self.output).await;
                    let _ = writer.flush().await;
                    break End::Closed(reason);
                }
                () = shutdown.cancelled() => {
                    self.write(Out::Disconnect(Reason::ShuttingDown));
                    let _ = writer.write_all(&self.output).await;
                    let _ = writer.flush().await;
                    break End::Closed(Reason::ShuttingDown);
                }
                () = sleep_until(deadline) => {
                    self.write(Out::Disconnect(Reason::KeepAliveTimeout));
                    let _ = writer.write_all(&self.output).await;
                    let _ = writer.flush().await;
                    break End::Closed(Reason::KeepAliveTimeout);
                }
            }
        }
    }

    /// Writes the PUBACK of `first` and of every later message already committed (one commit
    /// completes many at once, and they then leave in one write); `Some` ends the session.
    fn on_acks(&mut self, first: Settle) -> Option<End> {
        let mut next = Some(first);
        while let Some(settle) = next {
            match settle {
                Settle::PubAck(pkid, reason) => self.write(Out::PubAck { pkid, reason }),
                Settle::Quiet => {}
                Settle::Lost(pkid) => {
                    warn!(thing = %self.thing, pkid, "a message could not be committed; closing so the device resends it");
                    return Some(End::Closed(Reason::Unspecified));
                }
            }
            next = self.acks.next().now_or_never().flatten();
        }
        None
    }

    fn write(&mut self, out: Out) {
        if let Err(error) = self.version.write(out, &mut self.output, &self.settings) {
            warn!(thing = %self.thing, %error, "could not encode a packet");
        }
    }

    fn on_outgoing(&mut self, outgoing: Outgoing) {
        let Outgoing::Publish {
            topic,
            payload,
            qos,
        } = outgoing;
        let mut pkid = 0;
        if qos > 0 {
            if self.outbound_inflight.len() >= MAX_OUTBOUND_INFLIGHT {
                warn!(thing = %self.thing, "device does not acknowledge its messages; disconnecting");
                self.handle.close(Reason::ServerBusy);
                return;
            }
            loop {
                self.next_pkid = self.next_pkid.wrapping_add(1).max(1);
                if self.outbound_inflight.insert(self.next_pkid) {
                    break;
                }
            }
            pkid = self.next_pkid;
        }
        self.write(Out::Publish {
            topic,
            qos,
            pkid,
            payload,
        });
    }

    /// Refuses a packet outside the device API: MQTT 5 answers with a reason code where the
    /// packet has an acknowledgement, otherwise (and always on 3.1.1) the connection closes.
    fn refuse(&mut self, qos: u8, pkid: u16, reason: Reason) -> Result<(), End> {
        if self.version == Version::V5 && qos == 1 {
            self.acks.push_back(ready(pkid, reason));
            Ok(())
        } else {
            self.write(Out::Disconnect(reason));
            Err(End::Closed(reason))
        }
    }

    fn on_packet(&mut self, packet: In) -> Result<(), End> {
        match packet {
            In::Publish {
                topic,
                qos,
                pkid,
                payload,
                topic_alias,
                retain,
            } => {
                if retain {
                    // CONNACK said retain is not available (MQTT 5 §3.3.1.3: disconnect 0x9A).
                    info!(thing = %self.thing, %topic, "refused a retained publish");
                    self.write(Out::Disconnect(Reason::RetainNotSupported));
                    return Err(End::Closed(Reason::RetainNotSupported));
                }
                if qos > 1 {
                    self.write(Out::Disconnect(Reason::QoSNotSupported));
                    return Err(End::Closed(Reason::QoSNotSupported));
                }
                if topic_alias {
                    self.write(Out::Disconnect(Reason::TopicAliasInvalid));
                    return Err(End::Closed(Reason::TopicAliasInvalid));
                }
                if self.max_publish_rate > 0.0
                    && !self
                        .publishes
                        .take(self.max_publish_rate, self.max_publish_rate)
                {
                    metrics::counter!("doppel_mqtt_throttled_total", "kind" => "publish")
                        .increment(1);
                    return self.refuse(qos, pkid, Reason::QuotaExceeded);
                }
                if let Some(request) = topics::certificate_request(&topic) {
                    self.on_certificate_request(request, payload);
                    if qos == 1 {
                        self.acks.push_back(ready(pkid, Reason::Success));
                    }
                    return Ok(());
                }
                if let Some(claim) = &self.claim {
                    if topics::provision_request(&topic) == Some(claim.template.as_str()) {
                        self.on_provision(claim.clone(), payload);
                        if qos == 1 {
                            self.acks.push_back(ready(pkid, Reason::Success));
                        }
                        return Ok(());
                    }
                    info!(thing = %self.thing, %topic, template = %claim.template, "refused a claim session's publish outside provisioning");
                    return self.refuse(qos, pkid, Reason::NotAuthorized);
                }
                match topics::parse(&topic) {
                    Some(target) if target.owner() == &self.thing => {
                        self.on_publish(target, qos, pkid, payload)
                    }
                    _ => {
                        info!(thing = %self.thing, %topic, "refused a publish outside the device's topics");
                        self.refuse(qos, pkid, Reason::NotAuthorized)
                    }
                }
            }
            In::PubAck { pkid } => {
                self.outbound_inflight.remove(&pkid);
                Ok(())
            }
            In::Subscribe { pkid, filters } => {
                let allowed: Vec<bool> = filters
                    .iter()
                    .map(|(f, _)| match &self.claim {
                        Some(claim) => topics::may_subscribe_claim(&claim.template, f),
                        None => topics::may_subscribe(&self.thing, f),
                    })
                    .collect();
                if self.version == Version::V4 && allowed.contains(&false) {
                    info!(thing = %self.thing, ?filters, "refused a subscription outside the device's topics");
                    return Err(End::Closed(Reason::NotAuthorized));
                }
                let mut granted = Vec::with_capacity(filters.len());
                if let Ok(mut subscriptions) = self.handle.subscriptions.write() {
                    for ((filter, qos), ok) in filters.into_iter().zip(allowed) {
                        if ok {
                            let qos = qos.min(1);
                            subscriptions.retain(|(f, _)| *f != filter);
                            subscriptions.push((filter, qos));
                            granted.push(Some(qos));
                        } else {
                            info!(thing = %self.thing, %filter, "refused a subscription outside the device's topics");
                            granted.push(None);
                        }
                    }
                }
                self.write(Out::SubAck { pkid, granted });
                Ok(())
            }
            In::Unsubscribe { pkid, filters } => {
                if let Ok(mut subscriptions) = self.handle.subscriptions.write() {
                    subscriptions.retain(|(f, _)| !filters.contains(f));
                }
                self.write(Out::UnsubAck {
                    pkid,
                    count: filters.len(),
                });
                Ok(())
            }
            In::PingReq => {
                self.write(Out::PingResp);
                Ok(())
            }
            In::Disconnect => Err(End::ClientClosed),
            In::Unexpected(what) => {
                info!(thing = %self.thing, what, "protocol error");
                self.write(Out::Disconnect(Reason::ProtocolError));
                Err(End::Closed(Reason::ProtocolError))
            }
        }
    }

    /// A device asks for a new certificate of its own: for its thing (rotation), or — on a
    /// claim session — one to provision a thing with. Answered in AWS IoT's shapes on this
    /// session only.
    fn on_certificate_request(&self, request: topics::CertificateRequest, payload: bytes::Bytes) {
        let (node, handle, thing) = (self.node.clone(), self.handle.clone(), self.thing.clone());
        let claim = self.claim.clone();
        tokio::spawn(async move {
            let csr = match request {
                topics::CertificateRequest::Create => Ok(None),
                topics::CertificateRequest::FromCsr => {
                    serde_json::from_slice::<serde_json::Value>(&payload)
                        .ok()
                        .and_then(|v| v["certificateSigningRequest"].as_str().map(str::to_owned))
                        .map(Some)
                        .ok_or("the payload needs certificateSigningRequest (a PEM CSR)")
                }
            };
            let issued = match (csr, &claim) {
                (Ok(csr), None) => {
                    let actor = format!("device:{thing}");
                    node.with_directory(move |d| {
                        d.issue_certificate(
                            &thing,
                            csr.as_deref(),
                            crate::pki::DEFAULT_VALIDITY,
                            &actor,
                            crate::now_ms(),
                        )
                    })
                    .await
                    .map_err(|e| e.to_string())
                }
                (Ok(_), Some(claim)) if !claim.allows() => Err(THROTTLED.to_owned()),
                (Ok(csr), Some(claim)) => {
                    let template = claim.template.clone();
                    node.with_directory(move |d| {
                        d.provisional_certificate(&template, csr.as_deref(), crate::now_ms())
                    })
                    .await
                    .map_err(|e| e.to_string())
                }
                (Err(why), _) => Err(why.to_owned()),
            };
            let (topic, body) = match issued {
                Ok((record, key)) => {
                    let token = crate::directory::new_token();
                    let mut body = serde_json::json!({
                        "certificateId": record.id,
                        "certificatePem": record.pem,
                        "certificateOwnershipToken": token,
                    });
                    if let Some(key) = key {
                        body["privateKey"] = key.into();
                    }
                    if let Some(claim) = &claim {
                        claim.hold(token, record);
                    }
                    (request.reply(true), body)
                }
                Err(message) if message == THROTTLED => (
                    request.reply(false),
                    serde_json::json!({
                        "statusCode": 429,
                        "errorCode": "Throttled",
                        "errorMessage": message,
                    }),
                ),
                Err(message) => (
                    request.reply(false),
                    serde_json::json!({
                        "statusCode": 400,
                        "errorCode": "InvalidPayload",
                        "errorMessage": message,
                    }),
                ),
            };
            answer(&handle, topic, &body);
        });
    }

    /// A claim session asks to be provisioned with its template: `{"certificateOwnershipToken":
    /// …, "parameters": {…}}` → `{"thingName", "deviceConfiguration"}` on `…/accepted`, or
    /// AWS's error shape on `…/rejected`.
    fn on_provision(&self, claim: Claim, payload: bytes::Bytes) {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Request {
            certificate_ownership_token: String,
            #[serde(default)]
            parameters: BTreeMap<String, String>,
        }
        use crate::provisioning::ProvisionError;
        let (node, handle) = (self.node.clone(), self.handle.clone());
        tokio::spawn(async move {
            let template = claim.template.clone();
            let outcome = async {
                if !claim.allows() {
                    return Err(ProvisionError::Throttled);
                }
                let request: Request = serde_json::from_slice(&payload).map_err(|e| {
                    ProvisionError::InvalidPayload(format!(
                        "the payload needs certificateOwnershipToken and string parameters: {e}"
                    ))
                })?;
                let certificate = claim
                    .take(&request.certificate_ownership_token)
                    .ok_or(ProvisionError::InvalidToken)?;
                let (name, claim_id, kept) = (
                    template.clone(),
                    claim.certificate.clone(),
                    certificate.clone(),
                );
                let done = node
                    .with_directory(move |d| {
                        Ok(d.provision(
                            &name,
                            &claim_id,
                            certificate,
                            &request.parameters,
                            crate::now_ms(),
                        ))
                    })
                    .await
                    .unwrap_or(Err(ProvisionError::Unavailable));
                if done.is_err() {
                    // Refused: the device may try again with the same token (other
                    // parameters, or once the registry answers).
                    claim.hold(request.certificate_ownership_token, kept);
                }
                done
            }
            .await;
            let (accepted, body) = match outcome {
                Ok(provisioned) => {
                    info!(thing = %provisioned.thing, %template, registered = provisioned.registered, "provisioned a device");
                    if provisioned.registered {
                        let joined =
                            vec![(provisioned.thing.clone(), provisioned.device_type.clone())];
                        node.join_continuous_jobs(joined).await;
                    }
                    metrics::counter!("doppel_provisioning_total", "outcome" => "accepted")
                        .increment(1);
                    (
                        true,
                        serde_json::json!({
                            "thingName": provisioned.thing.as_str(),
                            "deviceConfiguration": provisioned.device_configuration,
                        }),
                    )
                }
                Err(error) => {
                    let (status, code) = error.codes();
                    info!(%template, %error, "refused to provision a device");
                    metrics::counter!("doppel_provisioning_total", "outcome" => code).increment(1);
                    (
                        false,
                        serde_json::json!({
                            "statusCode": status,
                            "errorCode": code,
                            "errorMessage": error.to_string(),
                        }),
                    )
                }
            };
            answer(&handle, topics::provision_reply(&template, accepted), &body);
        });
    }

    fn on_publish(
        &mut self,
        target: DeviceTopic,
        qos: u8,
        pkid: u16,
        payload: bytes::Bytes,
    ) -> Result<(), End> {
        match inbound::interpret(target, &payload, &self.node.config().limits) {
            Inbound::Command(thing, command) => {
                let shadow_request = matches!(
                    &command,
                    rules_dsl::Input::Command(c) if c.target().1 != twin_core::Op::Telemetry
                );
                if !shadow_request {
                    let (ack, done) = Ack::new();
                    self.node.deliver_from_device(thing, command, Some(ack));
                    self.acks.push_back(settle(qos, pkid, done));
                    return Ok(());
                }
                if self.shadow_inflight.load(Ordering::Acquire) >= self.max_shadow_inflight {
                    // AWS IoT's answer to a device with too many requests in flight.
                    metrics::counter!("doppel_mqtt_throttled_total", "kind" => "shadow_inflight")
                        .increment(1);
                    if let rules_dsl::Input::Command(c) = &command {
                        let reply = c.refuse(ShadowError::too_many_requests(), crate::now_ms());
                        let topic = topics::reply(&thing, &reply.shadow, reply.op, false);
                        self.sessions.publish(&thing, topic, reply.payload);
                    }
                    if qos == 1 {
                        self.acks.push_back(ready(pkid, Reason::QuotaExceeded));
                    }
                    return Ok(());
                }
                let inflight = self.shadow_inflight.clone();
                inflight.fetch_add(1, Ordering::AcqRel);
                let (ack, done) = Ack::new();
                self.node.deliver_from_device(thing, command, Some(ack));
                let settled = settle(qos, pkid, done);
                self.acks.push_back(Box::pin(async move {
                    let settle = settled.await;
                    inflight.fetch_sub(1, Ordering::AcqRel);
                    settle
                }));
                Ok(())
            }
            Inbound::Batch { gateway, entries } => {
                let (ack, done) = Ack::new();
                self.node.deliver_batch(&gateway, entries, Some(ack));
                self.acks.push_back(settle(qos, pkid, done));
                Ok(())
            }
            Inbound::Answer {
                thing,
                topic,
                payload,
                reason,
            } => {
                self.sessions.publish(&thing, topic, payload);
                if qos == 1 {
                    self.acks.push_back(ready(pkid, reason));
                }
                Ok(())
            }
            Inbound::Refuse(Reason::PayloadInvalid) => {
                if qos == 1 {
                    self.acks.push_back(ready(pkid, Reason::PayloadInvalid));
                }
                Ok(())
            }
            Inbound::Refuse(reason) => self.refuse(qos, pkid, reason),
        }
    }
}

/// Publishes an answer to the session that asked, if it subscribed to it.
fn answer(handle: &SessionHandle, topic: String, body: &serde_json::Value) {
    if let Some(qos) = handle.qos_for(&topic) {
        let _ = handle.tx.try_send(Outgoing::Publish {
            topic,
            payload: bytes::Bytes::from(body.to_string()),
            qos,
        });
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
