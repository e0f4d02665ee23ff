//! Where messages to devices go: the MQTT endpoint's sessions, or the external broker.

use bytes::Bytes;
use twin_core::ThingName;

/// Sends messages to devices.
pub trait Outbox: Send + Sync + 'static {
    /// Publishes `payload` on `topic` for the device `thing`.
    fn publish(&self, thing: &ThingName, topic: String, payload: Bytes);
    /// Whether anyone may listen to `topic` of `thing` (documents are built only then).
    fn wants(&self, thing: &ThingName, topic: &str) -> bool;
    /// Closes the device's live connection, if the outbox holds it; returns whether it did.
    fn disconnect(&self, thing: &ThingName) -> bool;
    /// Whether messages for `thing` published here reach it (its session is here, or a broker
    /// delivers them wherever it is).
    fn holds(&self, thing: &ThingName) -> bool;
}
