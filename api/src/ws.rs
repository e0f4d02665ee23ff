//! The WebSocket change stream, `/v1/ws`. Authenticated on upgrade (`Authorization: Bearer`,
//! or `?ticket=` from `POST /v1/ws/ticket` for browsers), JSON text frames, each an object
//! whose `type` names it.
//!
//! Client → server: `subscribe {id, things?, thing_type?, filter?, since?}`, `unsubscribe {id}`,
//! `get {id?, thing, shadow?}`, `update {id?, thing, shadow?, desired, version?}`.
//! Server → client: `snapshot`, `change`, `resync`, `ack`, `error` (and `event` from rules).
//!
//! Per subscription and shadow, versions sent strictly increase: a change at or below the last
//! version sent is skipped. When the client falls behind, the hub collapses what it missed into
//! shadows to resync, sent here in their current state, so nothing is lost without notice and
//! memory stays bounded. Each change is serialized once for all subscribers.

use crate::{AppState, auth::Caller, error::ApiError};
use actors::{
    directory::Role,
    hub::{ChangeEvent, Delivery, Resync, RuleEvent, Selector, Watcher},
};
use axum::{
    extract::{
        FromRequestParts, State,
        ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade},
    },
    http::request::Parts,
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Duration,
};
use tokio::time::Instant;
use twin_core::{Command, GetRequest, ShadowName, ThingName, TypeName, request};

/// Deliveries a session takes per wake-up beyond the first, before it flushes.
const DRAIN_BATCH: usize = 255;

/// Limits of one WebSocket connection (the `[ws]` table of the configuration file).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WsConfig {
    /// Subscriptions per connection.
    pub max_subscriptions: usize,
    /// Things named by one subscription.
    pub max_things: usize,
    /// Things named by all the subscriptions of one connection together.
    pub max_things_per_connection: usize,
    /// WebSocket connections one API key may hold at once.
    pub max_connections_per_key: usize,
    /// Changes queued for a connection before it is switched to resyncs.
    pub max_queue: usize,
    /// Ping interval; a connection silent for three of them is closed.
    #[serde(with = "humantime_serde")]
    pub heartbeat: Duration,
}

impl Default for WsConfig {
    fn default() -> Self {
        Self {
            max_subscriptions: 100,
            max_things: 1_000,
            max_things_per_connection: 10_000,
            max_connections_per_key: 16,
            max_queue: 1_024,
            heartbeat: Duration::from_secs(20),
        }
    }
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
enum ClientMessage {
    Subscribe {
        id: String,
        things: Option<Vec<String>>,
        thing_type: Option<String>,
        #[serde(default)]
        filter: BTreeMap<String, String>,
        #[serde(default)]
        since: BTreeMap<String, u64>,
    },
    Unsubscribe {
        id: String,
    },
    Get {
        id: Option<String>,
        thing: String,
        shadow: Option<String>,
    },
    Update {
        id: Option<String>,
        thing: String,
        shadow: Option<String>,
        desired: Value,
        version: Option<u64>,
    },
}

/// Largest client frame the API reads; larger ones close the connection with code 1009.
const MAX_FRAME: usize = 64 * 1024;
/// Largest message the protocol layer buffers before it gives up on the connection.
const PROTOCOL_MAX_MESSAGE: usize = 1024 * 1024;

/// `GET /v1/ws`: upgrades an authenticated request to the change stream.
pub(crate) async fn upgrade(
    State(state): State<AppState>,
    parts: Parts,
    ws: WebSocketUpgrade,
) -> Response {
    let mut parts = parts;
    // A browser opens the stream with a ticket (it cannot set `Authorization` on an upgrade).
    let ticket = parts.uri.query().and_then(|q| {
        q.split('&')
            .find_map(|pair| pair.strip_prefix("ticket="))
            .map(str::to_owned)
    });
    let caller = match ticket {
        // The key must still exist: a ticket does not outlive a revocation.
        Some(ticket) => match state.tickets.redeem(&ticket).filter(|p| {
            p.id == actors::directory::Principal::bootstrap().id
                || state.node.directory().key_exists(&p.id)
        }) {
            Some(principal) => Caller(principal),
            None => {
                return ApiError::new(
                    axum::http::StatusCode::UNAUTHORIZED,
                    "unauthenticated",
                    "the ticket is unknown, used or expired; ask POST /v1/ws/ticket for another",
                )
                .into_response();
            }
        },
        None => match Caller::from_request_parts(&mut parts, &state).await {
            Ok(caller) => caller,
            Err(error) => return error.into_response(),
        },
    };
    let Some(slot) = state
        .ws_connections
        .take(&caller.0.id, state.ws.max_connections_per_key)
    else {
        return ApiError::new(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            "too_many_connections",
            format!(
                "this key holds {} WebSocket connections already",
                state.ws.max_connections_per_key
            ),
        )
        .into_response();
    };
    // A small read buffer: apps send small frames, and the buffer is zero-filled each time
    // the session polls the socket (a 128 KiB default cost a fifth of the node's CPU in the
    // fan-out benchmark).
    // Frames over MAX_FRAME are read (up to the protocol limit) to be answered with close code
    // 1009; past the protocol limit the connection just ends.
    ws.max_message_size(PROTOCOL_MAX_MESSAGE)
        .max_frame_size(PROTOCOL_MAX_MESSAGE)
        .read_buffer_size(4 * 1024)
        .max_write_buffer_size(1 << 20)
        .on_upgrade(move |socket| async move {
            Session::new(state, caller).run(socket).await;
            drop(slot);
        })
}

fn shadow_of(name: Option<&str>) -> Result<ShadowName, String> {
    match name {
        None | Some("") => Ok(ShadowName::CLASSIC),
        Some(n) => ShadowName::named(n).map_err(|e| e.to_string()),
    }
}

fn shadow_text(shadow: &ShadowName) -> &str {
    shadow.name().unwrap_or("")
}

/// The part of a change frame after `"sub":…`, shared by every subscriber.
fn change_tail(event: &ChangeEvent) -> Bytes {
    #[derive(Serialize)]
    struct Changed<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        reported: Option<&'a Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        desired: Option<&'a Value>,
    }
    #[derive(Serialize)]
    struct Tail<'a> {
        thing: &'a str,
        shadow: &'a str,
        version: u64,
        changed: Changed<'a>,
        #[serde(skip_serializing_if = "Option::is_none")]
        delta: Option<&'a Value>,
        ts: u64,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        deleted: bool,
    }
    let c = &event.change;
    let tail = Tail {
        thing: c.thing.as_str(),
        shadow: shadow_text(&c.shadow),
        version: c.version,
        changed: Changed {
            reported: c.reported.as_ref(),
            desired: c.desired.as_ref(),
        },
        delta: c.delta.as_ref(),
        ts: c.ts,
        deleted: c.deleted,
    };
    tail_of(&tail)
}

/// The part of an event frame after `"sub":…`, shared by every subscriber:
/// `"thing", "rule", "kind", "payload", "ts"`.
fn event_tail(event: &RuleEvent) -> Bytes {
    let o = &event.output;
    let (kind, payload) = o.kind.describe();
    let tail = json!({
        "thing": event.thing,
        "rule": o.rule.as_ref(),
        "kind": kind,
        "payload": payload,
        "ts": o.at,
    });
    tail_of(&tail)
}

struct Session {
    state: AppState,
    caller: Caller,
    config: WsConfig,
    watcher: Arc<Watcher>,
    subscriptions: HashMap<String, Selector>,
    /// Things named by all subscriptions together (within `max_things_per_connection`).
    things: usize,
    /// Last version sent per subscription and shadow.
    sent: HashMap<(Arc<str>, ThingName, ShadowName), u64>,
}

impl Session {
    fn new(state: AppState, caller: Caller) -> Self {
        let config = state.ws;
        let watcher = state
            .node
            .hub()
            .watch(caller.0.types.clone(), config.max_queue);
        Self {
            state,
            caller,
            config,
            watcher,
            subscriptions: HashMap::new(),
            things: 0,
            sent: HashMap::new(),
        }
    }

    async fn run(mut self, socket: WebSocket) {
        metrics::gauge!("doppel_ws_connections").increment(1.0);
        let (mut sink, mut stream) = socket.split();
        let mut heartbeat = tokio::time::interval(self.config.heartbeat);
        let mut last_heard = Instant::now();
        let watcher = self.watcher.clone();
        loop {
            let frames = tokio::select! {
                incoming = stream.next() => match incoming {
                    Some(Ok(Message::Text(text) )) if text.len() > MAX_FRAME => {
                        let close = axum::extract::ws::CloseFrame {
                            code: axum::extract::ws::close_code::SIZE,
                            reason: Utf8Bytes::from(format!("frames are at most {MAX_FRAME} bytes")),
                        };
                        let _ = sink.send(Message::Close(Some(close))).await;
                        break;
                    }
                    Some(Ok(Message::Text(text))) => {
                        last_heard = Instant::now();
                        self.on_message(&text).await
                    }
                    Some(Ok(Message::Binary(_))) => {
                        vec![error_frame(None, "invalid_request", "frames are JSON text")]
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {
                        last_heard = Instant::now();
                        Vec::new()
                    }
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                },
                delivery = watcher.next() => {
                    // Take what else is already queued (bounded), so that one wake-up and one
                    // flush carry many changes: a session woken once per change falls behind
                    // when ingest keeps every core busy.
                    let mut frames = self.on_delivery(delivery).await;
                    for _ in 0..DRAIN_BATCH {
                        match watcher.try_next() {
                            Some(delivery) => frames.extend(self.on_delivery(delivery).await),
                            None => break,
                        }
                    }
                    frames
                }
                _ = heartbeat.tick() => {
                    if last_heard.elapsed() > 3 * self.config.heartbeat {
                        break;
                    }
                    if sink.send(Message::Ping(Bytes::new())).await.is_err() {
                        break;
                    }
                    Vec::new()
                }
            };
            let mut failed = false;
            for frame in frames {
                if sink.feed(Message::Text(frame)).await.is_err() {
                    failed = true;
                    break;
                }
            }
            if failed || sink.flush().await.is_err() {
                break;
            }
        }
        metrics::gauge!("doppel_ws_connections").decrement(1.0);
    }

    async fn on_message(&mut self, text: &str) -> Vec<Utf8Bytes> {
        let message: ClientMessage = match serde_json::from_str(text) {
            Ok(m) => m,
            Err(e) => return vec![error_frame(None, "invalid_request", &e.to_string())],
        };
        match message {
            ClientMessage::Subscribe {
                id,
                things,
                thing_type,
                filter,
                since,
            } => self.subscribe(id, things, thing_type, filter, since).await,
            ClientMessage::Unsubscribe { id } => {
                if let Some(selector) = self.subscriptions.remove(&id) {
                    self.things -= selector.things.as_ref().map_or(0, Vec::len);
                    self.watcher.unsubscribe(&id);
                    self.sent.retain(|(sub, _, _), _| **sub != *id);
                    metrics::gauge!("doppel_ws_subscriptions").decrement(1.0);
                    Vec::new()
                } else {
                    vec![error_frame(Some(&id), "not_found", "no such subscription")]
                }
            }
            ClientMessage::Get { id, thing, shadow } => self.get(id, thing, shadow).await,
            ClientMessage::Update {
                id,
                thing,
                shadow,
                desired,
                version,
            } => self.update(id, thing, shadow, desired, version).await,
        }
    }

    /// The thing, if the caller may see it.
    async fn visible(&self, name: &str) -> Result<ThingName, (&'static str, String)> {
        let thing = ThingName::new(name).map_err(|e| ("invalid_request", e.to_string()))?;
        match self.state.node.thing(thing.clone()).await {
            Ok(Some(r)) if self.caller.sees(r.device_type.as_ref()) => Ok(thing),
            Ok(_) => Err(("not_found", format!("thing \"{name}\" not found"))),
            Err(e) => {
                let error = ApiError::from(e);
                Err((error.code(), error.message().to_owned()))
            }
        }
    }

    /// The current state of a shadow: version and `{desired, reported, delta}`, or `None`.
    async fn current(
        &self,
        thing: &ThingName,
        shadow: &ShadowName,
    ) -> Result<Option<(u64, Value)>, ApiError> {
        let command = Command::Get(GetRequest {
            shadow: shadow.clone(),
            client_token: None,
        });
        let reply = self.state.node.call(thing.clone(), command, None).await?;
        Ok(match reply.outcome {
            Ok(version) => {
                let doc: Value = serde_json::from_slice(&reply.payload).unwrap_or(Value::Null);
                Some((version, doc.get("state").cloned().unwrap_or(json!({}))))
            }
            Err(_) => None,
        })
    }

    async fn subscribe(
        &mut self,
        id: String,
        things: Option<Vec<String>>,
        thing_type: Option<String>,
        filter: BTreeMap<String, String>,
        since: BTreeMap<String, u64>,
    ) -> Vec<Utf8Bytes> {
        if self.subscriptions.contains_key(&id) {
            return vec![error_frame(
                Some(&id),
                "conflict",
                "a subscription with this id exists",
            )];
        }
        if self.subscriptions.len() >= self.config.max_subscriptions {
            let message = format!(
                "at most {} subscriptions per connection",
                self.config.max_subscriptions
            );
            return vec![error_frame(Some(&id), "too_many_subscriptions", &message)];
        }
        let device_type = match thing_type.as_deref().map(TypeName::new).transpose() {
            Ok(t) => t,
            Err(e) => return vec![error_frame(Some(&id), "invalid_request", &e.to_string())],
        };
        if let Some(t) = &device_type
            && !self.caller.sees(Some(t))
        {
            return vec![error_frame(
                Some(&id),
                "forbidden",
                "the key does not see this device type",
            )];
        }
        let mut names = Vec::new();
        if let Some(list) = &things {
            // A name given twice is one thing (and one snapshot).
            let mut seen = std::collections::HashSet::new();
            let list: Vec<&String> = list.iter().filter(|n| seen.insert(n.as_str())).collect();
            if list.is_empty() || list.len() > self.config.max_things {
                let message = format!("name 1 to {} things", self.config.max_things);
                return vec![error_frame(Some(&id), "invalid_request", &message)];
            }
            if self.things + list.len() > self.config.max_things_per_connection {
                let message = format!(
                    "a connection's subscriptions name at most {} things together ({} named already)",
                    self.config.max_things_per_connection, self.things
                );
                return vec![error_frame(Some(&id), "too_many_things", &message)];
            }
            for name in list {
                match self.visible(name).await {
                    Ok(thing) => names.push(thing),
                    Err((code, message)) => return vec![error_frame(Some(&id), code, &message)],
                }
            }
        }
        let selector = Selector {
            things: things.is_some().then(|| names.clone()),
            device_type,
            attributes: filter,
        };
        // Subscribed before the snapshots are read: a change committed in between arrives as a
        // change (or is skipped if the snapshot already holds it). In a cluster, the other
        // nodes send this node their changes from now on, before the snapshots are read.
        self.watcher.subscribe(&id, selector.clone());
        self.state.node.watch_cluster().await;
        self.things += names.len();
        self.subscriptions.insert(id.clone(), selector);
        metrics::gauge!("doppel_ws_subscriptions").increment(1.0);
        let sub: Arc<str> = Arc::from(id.as_str());
        let mut frames = Vec::new();
        for thing in names {
            let shadow = ShadowName::CLASSIC;
            let known = since.get(thing.as_str()).copied();
            match self.current(&thing, &shadow).await {
                Ok(Some((version, state))) => {
                    if known.is_some_and(|k| k >= version) {
                        self.sent
                            .insert((sub.clone(), thing, shadow), known.unwrap_or(version));
                        continue;
                    }
                    frames.push(state_frame(
                        "snapshot",
                        Some(("sub", &id)),
                        &thing,
                        &shadow,
                        version,
                        state,
                    ));
                    self.sent.insert((sub.clone(), thing, shadow), version);
                }
                Ok(None) => {
                    if let Some(k) = known {
                        self.sent.insert((sub.clone(), thing, shadow), k);
                    }
                }
                Err(e) => frames.push(api_error_frame(Some(&id), &e)),
            }
        }
        frames
    }

    async fn get(
        &mut self,
        id: Option<String>,
        thing: String,
        shadow: Option<String>,
    ) -> Vec<Utf8Bytes> {
        let shadow = match shadow_of(shadow.as_deref()) {
            Ok(s) => s,
            Err(m) => return vec![error_frame(id.as_deref(), "invalid_request", &m)],
        };
        let thing = match self.visible(&thing).await {
            Ok(t) => t,
            Err((code, message)) => return vec![error_frame(id.as_deref(), code, &message)],
        };
        match self.current(&thing, &shadow).await {
            Ok(Some((version, state))) => {
                let tag = id.as_deref().map(|i| ("id", i));
                vec![state_frame(
                    "snapshot", tag, &thing, &shadow, version, state,
                )]
            }
            Ok(None) => vec![error_frame(id.as_deref(), "not_found", "no such shadow")],
            Err(e) => vec![api_error_frame(id.as_deref(), &e)],
        }
    }

    async fn update(
        &mut self,
        id: Option<String>,
        thing: String,
        shadow: Option<String>,
        desired: Value,
        version: Option<u64>,
    ) -> Vec<Utf8Bytes> {
        let id = id.as_deref();
        if !self.caller.0.is(Role::Operator) {
            return vec![error_frame(id, "forbidden", "this needs the operator role")];
        }
        let shadow = match shadow_of(shadow.as_deref()) {
            Ok(s) => s,
            Err(m) => return vec![error_frame(id, "invalid_request", &m)],
        };
        let thing = match self.visible(&thing).await {
            Ok(t) => t,
            Err((code, message)) => return vec![error_frame(id, code, &message)],
        };
        let mut body = json!({ "state": { "desired": desired } });
        if let Some(v) = version {
            body["version"] = json!(v);
        }
        let update = match request::parse_update(
            shadow.clone(),
            body.to_string().as_bytes(),
            &self.state.node.config().limits,
        ) {
            Ok(u) => u,
            Err(r) => return vec![error_frame(id, "invalid_shadow_request", &r.error.message)],
        };
        match self
            .state
            .node
            .call(
                thing.clone(),
                Command::Update(update),
                Some(self.caller.id()),
            )
            .await
        {
            Ok(reply) => match reply.outcome {
                Ok(version) => vec![
                    ServerFrame::Ack {
                        id,
                        thing: thing.as_str(),
                        shadow: shadow_text(&shadow),
                        version,
                    }
                    .text(),
                ],
                Err(e) => {
                    let code = ApiError::shadow(&e);
                    vec![error_frame(id, code.code(), &e.message)]
                }
            },
            Err(e) => vec![api_error_frame(id, &ApiError::from(e))],
        }
    }

    async fn on_delivery(&mut self, delivery: Delivery) -> Vec<Utf8Bytes> {
        match delivery {
            Delivery::Change(sub, event) => {
                let c = &event.change;
                let key = (sub.clone(), c.thing.clone(), c.shadow.clone());
                if self.sent.get(&key).is_some_and(|v| *v >= c.version) {
                    return Vec::new();
                }
                self.sent.insert(key, c.version);
                let frame = shared_frame("change", &sub, event.frame(change_tail));
                metrics::counter!("doppel_ws_changes_sent_total").increment(1);
                vec![frame]
            }
            Delivery::Event(sub, event) => {
                let frame = shared_frame("event", &sub, event.frame(event_tail));
                metrics::counter!("doppel_ws_events_sent_total").increment(1);
                vec![frame]
            }
            Delivery::Resync(marks, dropped) => {
                let mut frames = self.resync(marks).await;
                if dropped > 0 {
                    frames.push(error_frame(
                        None,
                        "events_dropped",
                        &format!(
                            "{dropped} rule events were dropped while this connection fell behind"
                        ),
                    ));
                }
                frames
            }
        }
    }

    async fn resync(&mut self, marks: Vec<Resync>) -> Vec<Utf8Bytes> {
        metrics::counter!("doppel_ws_resyncs_total").increment(1);
        let mut frames = Vec::with_capacity(marks.len());
        for (sub, thing, shadow) in marks {
            if !self.subscriptions.contains_key(&*sub) {
                continue;
            }
            match self.current(&thing, &shadow).await {
                Ok(Some((version, state))) => {
                    let key = (sub, thing, shadow);
                    if self.sent.get(&key).is_some_and(|v| *v >= version) {
                        // Changes marked while an earlier resync read the state it already
                        // holds: the client is up to date.
                        continue;
                    }
                    let (sub, thing, shadow) = key;
                    frames.push(state_frame(
                        "resync",
                        Some(("sub", &sub)),
                        &thing,
                        &shadow,
                        version,
                        state,
                    ));
                    self.sent.insert((sub, thing, shadow), version);
                }
                Ok(None) => frames.push(
                    ServerFrame::Resync {
                        sub: &sub,
                        thing: thing.as_str(),
                        shadow: shadow_text(&shadow),
                        version: None,
                        state: None,
                    }
                    .text(),
                ),
                Err(e) => frames.push(api_error_frame(Some(&sub), &e)),
            }
        }
        frames
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        metrics::gauge!("doppel_ws_subscriptions").decrement(self.subscriptions.len() as f64);
    }
}

/// Every frame the node sends (the wire format of docs/websocket.md), except `change` and
/// `event`, whose shared part is serialized once per change ([`shared_frame`]).
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum ServerFrame<'a> {
    Snapshot {
        #[serde(skip_serializing_if = "Option::is_none")]
        sub: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        thing: &'a str,
        shadow: &'a str,
        version: u64,
        state: Value,
    },
    Resync {
        sub: &'a str,
        thing: &'a str,
        shadow: &'a str,
        version: Option<u64>,
        state: Option<Value>,
    },
    Ack {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        thing: &'a str,
        shadow: &'a str,
        version: u64,
    },
    Error {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        code: &'a str,
        message: &'a str,
    },
}

impl ServerFrame<'_> {
    fn text(&self) -> Utf8Bytes {
        Utf8Bytes::from(serde_json::to_string(self).unwrap_or_default())
    }
}

/// A `change` or `event` frame for subscription `sub`: `{"type":…,"sub":…,` followed by the
/// part every subscriber shares (`tail`, serialized once per change, see [`tail_of`]).
fn shared_frame(kind: &str, sub: &str, tail: &[u8]) -> Utf8Bytes {
    let mut frame = String::with_capacity(24 + kind.len() + sub.len() + tail.len());
    frame.push_str("{\"type\":");
    frame.push_str(&serde_json::to_string(kind).unwrap_or_default());
    frame.push_str(",\"sub\":");
    frame.push_str(&serde_json::to_string(sub).unwrap_or_default());
    frame.push(',');
    frame.push_str(std::str::from_utf8(tail).unwrap_or("}"));
    Utf8Bytes::from(frame)
}

/// The fields of `body` as the tail of an object: its JSON without the opening brace.
fn tail_of(body: &impl Serialize) -> Bytes {
    let json = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    debug_assert_eq!(json.first(), Some(&b'{'), "a frame body is a JSON object");
    Bytes::from(json).slice(1..)
}

fn state_frame(
    kind: &str,
    tag: Option<(&str, &str)>,
    thing: &ThingName,
    shadow: &ShadowName,
    version: u64,
    state: Value,
) -> Utf8Bytes {
    let (sub, id) = match tag {
        Some(("sub", v)) => (Some(v), None),
        Some((_, v)) => (None, Some(v)),
        None => (None, None),
    };
    let (thing, shadow) = (thing.as_str(), shadow_text(shadow));
    match kind {
        "resync" => ServerFrame::Resync {
            sub: sub.unwrap_or_default(),
            thing,
            shadow,
            version: Some(version),
            state: Some(state),
        },
        _ => ServerFrame::Snapshot {
            sub,
            id,
            thing,
            shadow,
            version,
            state,
        },
    }
    .text()
}

/// An error frame for a failure the REST API would answer with `error`: the same code and the
/// same message (internal failures say only "internal error").
fn api_error_frame(id: Option<&str>, error: &ApiError) -> Utf8Bytes {
    error_frame(id, error.code(), error.message())
}

fn error_frame(id: Option<&str>, code: &str, message: &str) -> Utf8Bytes {
    ServerFrame::Error { id, code, message }.text()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_frames_are_the_object_with_type_and_sub_first() {
        #[derive(Serialize)]
        struct Body<'a> {
            thing: &'a str,
            version: u64,
        }
        let body = Body {
            thing: "pump-7",
            version: 3,
        };
        let frame = shared_frame("change", "s\"1", &tail_of(&body));
        let parsed: Value = serde_json::from_str(&frame).unwrap();
        assert_eq!(
            parsed,
            json!({"type": "change", "sub": "s\"1", "thing": "pump-7", "version": 3})
        );
    }

    #[test]
    fn frames_follow_the_documented_shapes() {
        let error: Value =
            serde_json::from_str(&error_frame(Some("x"), "not_found", "nope")).unwrap();
        assert_eq!(
            error,
            json!({"type": "error", "id": "x", "code": "not_found", "message": "nope"})
        );
        let thing = ThingName::new("t").unwrap();
        let snapshot: Value = serde_json::from_str(&state_frame(
            "snapshot",
            Some(("id", "g")),
            &thing,
            &ShadowName::CLASSIC,
            2,
            json!({}),
        ))
        .unwrap();
        assert_eq!(
            snapshot,
            json!({"type": "snapshot", "id": "g", "thing": "t", "shadow": "", "version": 2, "state": {}})
        );
        let gone: Value = serde_json::from_str(
            &ServerFrame::Resync {
                sub: "s",
                thing: "t",
                shadow: "",
                version: None,
                state: None,
            }
            .text(),
        )
        .unwrap();
        assert_eq!(gone["version"], Value::Null);
        assert_eq!(gone["state"], Value::Null);
    }
}
