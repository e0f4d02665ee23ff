//! Connections between nodes. Each node dials every peer once ([`Peer`]) and sends its
//! requests on that connection, in order, through a bounded queue (backpressure: a full queue
//! refuses the work, whose sender then sees a failure); answers come back on the same
//! connection. A broken connection fails every request waiting on it (acknowledgements report
//! a failure, so devices resend) and is redialed with backoff. The accepting side ([`serve`])
//! runs each connection's frames in arrival order, which keeps every device's order.

use super::{
    Cluster,
    wire::{self, Challenge, Frame, Hello, Proof},
};
use crate::{
    ack::{Ack, Settled},
    work::{Deliver, Origin},
};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{mpsc, oneshot},
};
use tokio_util::codec::{Framed, LengthDelimitedCodec};
use tracing::{debug, info, warn};
use twin_core::{Reply, ThingName};

/// Requests queued for one peer at most (beyond: refused).
const QUEUE: usize = 32_768;
/// Requests waiting for a peer's answer at most (beyond: refused; a broken connection fails
/// them all).
const MAX_PENDING: usize = 65_536;
/// How long a handshake may take.
const HANDSHAKE: Duration = Duration::from_secs(5);

type Conn = Framed<TcpStream, LengthDelimitedCodec>;

fn framed(stream: TcpStream) -> Conn {
    let _ = stream.set_nodelay(true);
    let codec = LengthDelimitedCodec::builder()
        .max_frame_length(wire::MAX_FRAME)
        .new_codec();
    Framed::new(stream, codec)
}

async fn send<T: serde::Serialize>(conn: &mut Conn, value: &T) -> Result<(), String> {
    conn.send(wire::encode(value))
        .await
        .map_err(|e| e.to_string())
}

async fn receive<T: for<'de> serde::Deserialize<'de>>(conn: &mut Conn) -> Result<T, String> {
    match conn.next().await {
        Some(Ok(bytes)) => wire::decode(&bytes),
        Some(Err(e)) => Err(e.to_string()),
        None => Err("connection closed".into()),
    }
}

fn nonce() -> [u8; 32] {
    rand::random()
}

/// What waits for a peer's answer.
enum Pending {
    Ack(Ack),
    Caller(oneshot::Sender<Reply>),
    Done(oneshot::Sender<()>),
    Trace(oneshot::Sender<serde_json::Value>),
}

struct Out {
    id: u64,
    frame: Bytes,
}

/// The connection to one peer, as seen by the side that dials.
pub(crate) struct Peer {
    pub name: Arc<str>,
    pub addr: String,
    queue: mpsc::Sender<Out>,
    pending: Mutex<HashMap<u64, (Pending, Instant)>>,
    next: AtomicU64,
    /// Whether the connection is up (work for the peer parks while it is not).
    up: AtomicBool,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("name", &self.name)
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Peer {
    /// Starts dialing `addr` (the node `name`).
    pub fn start(cluster: &Arc<Cluster>, name: Arc<str>, addr: String) -> Arc<Peer> {
        let (queue, rx) = mpsc::channel(QUEUE);
        Arc::new_cyclic(|me: &std::sync::Weak<Peer>| {
            let task = tokio::spawn(run(me.clone(), cluster.clone(), rx));
            Peer {
                name,
                addr,
                queue,
                pending: Mutex::new(HashMap::new()),
                next: AtomicU64::new(1),
                up: AtomicBool::new(false),
                task,
            }
        })
    }

    /// Queues a frame; `pending` is answered when the peer answers it (dropped: failed).
    fn request(&self, make: impl FnOnce(u64) -> Frame, pending: Option<Pending>) -> bool {
        let id = match &pending {
            Some(_) => self.next.fetch_add(1, Ordering::Relaxed),
            None => 0,
        };
        if pending.is_some()
            && self
                .pending
                .lock()
                .is_ok_and(|map| map.len() >= MAX_PENDING)
        {
            metrics::counter!("doppel_cluster_refused_total").increment(1);
            return false;
        }
        let frame = wire::encode(&make(id));
        if let Some(pending) = pending
            && let Ok(mut map) = self.pending.lock()
        {
            map.insert(id, (pending, Instant::now()));
        }
        match self.queue.try_send(Out { id, frame }) {
            Ok(()) => true,
            Err(_) => {
                metrics::counter!("doppel_cluster_refused_total").increment(1);
                self.fail(id);
                false
            }
        }
    }

    /// Whether the connection to the peer is up.
    pub fn connected(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Sends one-way news.
    pub fn tell(&self, frame: Frame) -> bool {
        self.tell_encoded(wire::encode(&frame))
    }

    /// Sends one-way news already encoded (the same bytes go to several peers).
    pub fn tell_encoded(&self, frame: Bytes) -> bool {
        self.queue.try_send(Out { id: 0, frame }).is_ok()
    }

    /// Waits until everything queued was handed to the connection, `limit` at most.
    pub async fn drained(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.queue.capacity() < self.queue.max_capacity() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Forwards work for a twin whose shard the peer owns.
    pub fn forward(&self, thing: &ThingName, deliver: Deliver) {
        let Deliver {
            input,
            documents,
            ticket,
        } = deliver;
        let origin = wire::WireOrigin::of(&ticket.origin);
        let audit = ticket.audit.as_deref().map(str::to_owned);
        let (pending, ack) = match (ticket.origin, ticket.ack) {
            (Origin::Caller(tx), _) => (Some(Pending::Caller(tx)), false),
            (_, Some(ack)) => (Some(Pending::Ack(ack)), true),
            _ => (None, false),
        };
        metrics::counter!("doppel_cluster_forwarded_total").increment(1);
        self.request(
            |id| Frame::Work {
                id,
                thing: thing.to_string(),
                input: wire::WireInput::of(input),
                documents,
                origin,
                audit,
                ack,
            },
            pending,
        );
    }

    /// Asks the peer something answered by `Done`.
    pub fn ask_done(&self, make: impl FnOnce(u64) -> Frame) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.request(make, Some(Pending::Done(tx)));
        rx
    }

    /// Asks the peer for a twin's rule trace.
    pub fn ask_trace(&self, thing: &ThingName) -> oneshot::Receiver<serde_json::Value> {
        let (tx, rx) = oneshot::channel();
        let thing = thing.to_string();
        self.request(|id| Frame::TraceOf { id, thing }, Some(Pending::Trace(tx)));
        rx
    }

    fn take(&self, id: u64) -> Option<(Pending, Instant)> {
        self.pending.lock().ok()?.remove(&id)
    }

    fn fail(&self, id: u64) {
        drop(self.take(id));
    }

    fn fail_all(&self) {
        let failed: Vec<_> = self
            .pending
            .lock()
            .map(|mut map| map.drain().collect())
            .unwrap_or_default();
        if !failed.is_empty() {
            warn!(peer = %self.name, requests = failed.len(), "connection to peer lost; its requests failed");
        }
    }

    /// An answer from the peer.
    fn answered(&self, frame: Frame) {
        let id = match &frame {
            Frame::Settled { id, .. }
            | Frame::Answer { id, .. }
            | Frame::Done { id }
            | Frame::Trace { id, .. } => *id,
            _ => return,
        };
        let Some((pending, sent)) = self.take(id) else {
            return;
        };
        metrics::histogram!("doppel_cluster_forward_seconds").record(sent.elapsed().as_secs_f64());
        match (pending, frame) {
            (Pending::Ack(ack), Frame::Settled { code, .. }) => match code {
                0 => ack.done(),
                1 => drop(ack),
                code => ack.refuse(code),
            },
            (Pending::Caller(tx), Frame::Answer { reply, .. }) => {
                let _ = tx.send(reply.into_reply());
            }
            (Pending::Done(tx), Frame::Done { .. }) => {
                let _ = tx.send(());
            }
            (Pending::Trace(tx), Frame::Trace { entries, .. }) => {
                let _ = tx.send(entries);
            }
            _ => {}
        }
    }
}

/// Dials the peer, keeps the connection and redials it with backoff while the peer exists.
async fn run(peer: std::sync::Weak<Peer>, cluster: Arc<Cluster>, mut rx: mpsc::Receiver<Out>) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let Some(me) = peer.upgrade() else {
            return;
        };
        let (name, addr) = (me.name.clone(), me.addr.clone());
        drop(me);
        match dial(&cluster, &addr).await {
            Ok(conn) => {
                info!(peer = %name, %addr, "connected to peer");
                backoff = Duration::from_millis(50);
                if let Some(me) = peer.upgrade() {
                    me.up.store(true, Ordering::Release);
                }
                // Work that waited for this connection goes now.
                cluster.drain();
                pump(&peer, conn, &mut rx).await;
            }
            Err(error) => {
                debug!(peer = %name, %addr, %error, "dialing peer failed");
            }
        }
        let Some(me) = peer.upgrade() else {
            return;
        };
        me.up.store(false, Ordering::Release);
        me.fail_all();
        // What was queued while there was no connection fails at once (its senders resend).
        while let Ok(out) = rx.try_recv() {
            me.fail(out.id);
        }
        drop(me);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

/// Dials and proves the cluster secret (and checks the peer's proof).
async fn dial(cluster: &Cluster, addr: &str) -> Result<Conn, String> {
    let handshake = async {
        let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let mut conn = framed(stream);
        let mine = nonce();
        send(
            &mut conn,
            &Hello {
                version: wire::VERSION,
                node: cluster.me.to_string(),
                nonce: mine,
            },
        )
        .await?;
        let challenge: Challenge = receive(&mut conn).await?;
        if challenge.version != wire::VERSION {
            return Err(format!("peer speaks version {}", challenge.version));
        }
        let secret = &cluster.config.secret;
        if !wire::verify(secret, "server", &mine, &challenge.nonce, &challenge.proof) {
            return Err("peer does not know the cluster secret".into());
        }
        let proof = wire::prove(secret, "client", &challenge.nonce, &mine);
        send(&mut conn, &Proof { proof }).await?;
        Ok(conn)
    };
    tokio::time::timeout(HANDSHAKE, handshake)
        .await
        .map_err(|_| "handshake timed out".to_string())?
}

/// Sends queued frames (in batches) and takes answers until the connection breaks.
async fn pump(peer: &std::sync::Weak<Peer>, conn: Conn, rx: &mut mpsc::Receiver<Out>) {
    let (mut sink, mut stream) = conn.split();
    loop {
        tokio::select! {
            out = rx.recv() => {
                let Some(out) = out else { return };
                if sink.feed(out.frame).await.is_err() {
                    return;
                }
                while let Ok(more) = rx.try_recv() {
                    if sink.feed(more.frame).await.is_err() {
                        return;
                    }
                }
                if sink.flush().await.is_err() {
                    return;
                }
            }
            answer = stream.next() => {
                let Some(Ok(bytes)) = answer else { return };
                let Some(me) = peer.upgrade() else { return };
                match wire::decode::<Frame>(&bytes) {
                    Ok(frame) => me.answered(frame),
                    Err(error) => {
                        warn!(peer = %me.name, %error, "undecodable answer from peer; reconnecting");
                        return;
                    }
                }
            }
        }
    }
}

/// Accepts peers' connections on `listener` and runs their frames.
pub(crate) async fn serve(listener: TcpListener, cluster: Arc<Cluster>) {
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                warn!(%error, "accepting a peer connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let cluster = cluster.clone();
        tokio::spawn(async move {
            let mut conn = framed(stream);
            match tokio::time::timeout(HANDSHAKE, accept(&cluster, &mut conn)).await {
                Ok(Ok(peer)) => {
                    debug!(%peer, %from, "peer connected");
                    inbound(cluster, Arc::from(peer), conn).await;
                }
                Ok(Err(error)) => {
                    metrics::counter!("doppel_cluster_handshake_refused_total").increment(1);
                    warn!(%from, %error, "peer connection refused");
                }
                Err(_) => warn!(%from, "peer handshake timed out"),
            }
        });
    }
}

/// The accepting side of the handshake; returns the peer's name.
async fn accept(cluster: &Cluster, conn: &mut Conn) -> Result<String, String> {
    let hello: Hello = receive(conn).await?;
    if hello.version != wire::VERSION {
        return Err(format!("peer speaks version {}", hello.version));
    }
    let mine = nonce();
    let secret = &cluster.config.secret;
    send(
        conn,
        &Challenge {
            version: wire::VERSION,
            node: cluster.me.to_string(),
            nonce: mine,
            proof: wire::prove(secret, "server", &hello.nonce, &mine),
        },
    )
    .await?;
    let proof: Proof = receive(conn).await?;
    if !wire::verify(secret, "client", &mine, &hello.nonce, &proof.proof) {
        return Err("wrong cluster secret".into());
    }
    Ok(hello.node)
}

/// Runs one peer connection's frames in order; answers go back on it.
async fn inbound(cluster: Arc<Cluster>, peer: Arc<str>, conn: Conn) {
    let (mut sink, mut stream) = conn.split();
    let (answers, mut rx) = mpsc::unbounded_channel::<Frame>();
    let writer = tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            if sink.feed(wire::encode(&frame)).await.is_err() {
                return;
            }
            while let Ok(more) = rx.try_recv() {
                if sink.feed(wire::encode(&more)).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    });
    while let Some(Ok(bytes)) = stream.next().await {
        match wire::decode::<Frame>(&bytes) {
            Ok(frame) => cluster.received(&peer, frame, &answers),
            Err(error) => {
                warn!(%peer, %error, "undecodable frame from peer; closing");
                break;
            }
        }
    }
    writer.abort();
}

/// Sends `Settled` for acknowledged work once the local twin settled it.
pub(crate) fn settle_later(
    id: u64,
    rx: oneshot::Receiver<Settled>,
    answers: mpsc::UnboundedSender<Frame>,
) {
    tokio::spawn(async move {
        let code = match rx.await.unwrap_or(Settled::Failed) {
            Settled::Done => 0,
            Settled::Failed => 1,
            Settled::Refused(code) => code.max(2),
        };
        let _ = answers.send(Frame::Settled { id, code });
    });
}
