//! The device side over MQTT: the endpoint built into the node, the bridge to an external
//! broker, and the topic grammar both share.

pub mod bridge;
pub mod endpoint;
mod inbound;
pub mod packets;
mod sessions;
pub mod throttle;
pub mod topics;

pub use sessions::Sessions;
