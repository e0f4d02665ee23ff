//! Live device sessions of the MQTT endpoint, by thing name (a device has at most one: a new
//! connection takes the session over). It is the endpoint's [`Outbox`]: a message for a device
//! goes to its session if the device subscribed to a matching filter.

use crate::{mqtt::packets::Reason, outbox::Outbox};
use bytes::Bytes;
use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicU64, Ordering},
    },
};
use tokio::sync::mpsc;
use tracing::warn;
use twin_core::ThingName;

/// A message for a session's connection task.
#[derive(Debug)]
pub(crate) enum Outgoing {
    Publish {
        topic: String,
        payload: Bytes,
        qos: u8,
    },
}

/// The registry's view of a connection.
#[derive(Clone)]
pub(crate) struct SessionHandle {
    pub id: u64,
    pub tx: mpsc::Sender<Outgoing>,
    /// Granted filters and their QoS.
    pub subscriptions: Arc<RwLock<Vec<(String, u8)>>>,
    /// Set to make the connection close with this reason.
    pub close: Arc<Mutex<Option<Reason>>>,
    pub closed: Arc<tokio::sync::Notify>,
}

impl SessionHandle {
    /// The QoS a message on `topic` is delivered with, or `None` if no filter matches.
    pub(crate) fn qos_for(&self, topic: &str) -> Option<u8> {
        let subscriptions = self.subscriptions.read().ok()?;
        subscriptions
            .iter()
            .filter(|(filter, _)| crate::mqtt::topics::matches(topic, filter))
            .map(|(_, qos)| *qos)
            .max()
    }

    /// Asks the connection to close.
    pub(crate) fn close(&self, reason: Reason) {
        if let Ok(mut close) = self.close.lock() {
            close.get_or_insert(reason);
        }
        self.closed.notify_one();
    }
}

/// The endpoint's live sessions.
#[derive(Default)]
pub struct Sessions {
    map: RwLock<HashMap<ThingName, SessionHandle>>,
    next_id: AtomicU64,
    /// Connections the endpoint's listeners hold (with or without a session yet).
    pub(crate) open: Arc<std::sync::atomic::AtomicUsize>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("count", &self.count())
            .finish()
    }
}

impl Sessions {
    /// An empty registry.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Registers `handle` for `thing`, returning the session it replaces.
    pub(crate) fn register(
        &self,
        thing: ThingName,
        handle: SessionHandle,
    ) -> Option<SessionHandle> {
        self.map.write().ok()?.insert(thing, handle)
    }

    /// Removes the session of `thing` if it is still the one with `id`.
    pub(crate) fn remove(&self, thing: &ThingName, id: u64) {
        if let Ok(mut map) = self.map.write()
            && map.get(thing).is_some_and(|h| h.id == id)
        {
            map.remove(thing);
        }
    }

    /// Closes the live session of `thing` (decommissioning); returns whether there was one.
    pub fn close_session(&self, thing: &ThingName) -> bool {
        let handle = self.map.read().ok().and_then(|m| m.get(thing).cloned());
        match handle {
            Some(handle) => {
                handle.close(Reason::AdministrativeAction);
                true
            }
            None => false,
        }
    }

    /// Closes every session (shutdown).
    pub fn close_all(&self) {
        if let Ok(map) = self.map.read() {
            for handle in map.values() {
                handle.close(Reason::ShuttingDown);
            }
        }
    }

    /// Live sessions.
    pub fn count(&self) -> usize {
        self.map.read().map(|m| m.len()).unwrap_or(0)
    }

    fn handle(&self, thing: &ThingName) -> Option<SessionHandle> {
        self.map.read().ok()?.get(thing).cloned()
    }
}

impl Outbox for Sessions {
    fn publish(&self, thing: &ThingName, topic: String, payload: Bytes) {
        let Some(handle) = self.handle(thing) else {
            return;
        };
        let Some(qos) = handle.qos_for(&topic) else {
            return;
        };
        match handle.tx.try_send(Outgoing::Publish {
            topic,
            payload,
            qos,
        }) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                warn!(%thing, "device does not read its messages; disconnecting");
                handle.close(Reason::ServerBusy);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    fn wants(&self, thing: &ThingName, topic: &str) -> bool {
        self.handle(thing)
            .is_some_and(|h| h.qos_for(topic).is_some())
    }

    fn disconnect(&self, thing: &ThingName) -> bool {
        self.close_session(thing)
    }

    fn holds(&self, thing: &ThingName) -> bool {
        self.handle(thing).is_some()
    }
}
