//! Device twins without I/O: the AWS IoT Device Shadow document (merge, delta, versions,
//! metadata, limits, named shadows), device types with JSON Schemas, telemetry with
//! last-writer-wins by device time, and the twin as a pure state machine
//! (`Twin::handle(command, context, now, effects)`) that the actor layer only hosts.
//!
//! Nothing here reads a clock, a socket or a file: time comes in as `now` (epoch ms).

pub mod device_type;
pub mod error;
pub mod jobs;
pub mod limits;
pub mod names;
pub mod request;
pub mod shadow;
pub mod state;
pub mod twin;

pub use device_type::{CompiledType, DeviceType, Schemas, TelemetryMapping};
pub use error::{ShadowError, TwinError};
pub use jobs::{ExecStatus, ExecutionChange, JobInput, JobOp, JobReply};
pub use limits::Limits;
pub use names::{ShadowName, ThingName, TypeName};
pub use request::{BatchEntry, DeleteRequest, GetRequest, Patch, Rejection, Sample, UpdateRequest};
pub use shadow::{Op, Shadow, rejected};
pub use twin::{Change, Command, Context, Effect, Reply, Twin};
