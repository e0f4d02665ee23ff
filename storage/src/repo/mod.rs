//! Typed repositories: the only code that knows the key layout. Every key is a FoundationDB
//! tuple under the deployment's root subspace:
//!
//! | repository | key | value |
//! |---|---|---|
//! | twins | `(root, "twin", thing, chunk)` | the twin's record (`Twin::encode`), split into 100 kB chunks |
//! | things | `(root, "thing", name)` | [`ThingRecord`] as JSON |
//! | types | `(root, "type", name)` | `DeviceType` as JSON |
//! | keys | `(root, "key", id)` | [`KeyRecord`] as JSON (the secret only hashed) |
//! | audit | `(root, "audit", at_ms, seq)` | [`AuditEntry`] as JSON |
//! | telemetry | `(root, "telemetry", "raw", day, thing, ts, seq)` | the sample's fields as JSON |
//! | | `(root, "telemetry", "hourly", day, thing, hour)` | [`HourAgg`] as JSON |
//! | rules | `(root, "rule", name)` | [`RuleRecord`] as JSON |
//! | rule states | `(root, "rstate", thing, chunk)` | the twin's encoded rule state |
//! | rule timers | `(root, "rtimer", thing)` | its next rule deadline, epoch ms, big-endian `u64` |
//! | rule log | `(root, "rlog", kind, at_ms, seq)` | [`RuleLogEntry`] as JSON |
//! | meta | `(root, "meta", name)` | single records: `admin` holds the bootstrap admin token's SHA-256 (hex); `registry` changes with every change of types, keys, rules and the admin token |
//! | certificates | `(root, "cert", id)`, `(root, "thingcert", thing, id)`, `(root, "certdeny", id)` | [`CertRecord`] as JSON; a thing's certificates; the ids of those not active |
//! | presence | `(root, "presence", thing)` | [`Presence`] as JSON: connected or not, since, last seen, why it disconnected |
//! | ptemplate | `(root, "ptemplate", name)` | [`ProvisioningTemplate`] as JSON: what a claim certificate's device becomes |
//! | job | `(root, "job", id)` | [`JobRecord`] as JSON: document, targets, timeout, status |
//! | jobexec | `(root, "jobexec", job, thing)` | the latest `twin_core::ExecutionChange` of an execution, as JSON (written in its twin's commit) |
//! | artifact | `(root, "artifact", name)` | [`ArtifactRecord`] as JSON: size, SHA-256, the upload holding it |
//! | artchunk | `(root, "artchunk", name, upload, index)` | 64 KiB of an artifact's content |
//! | nodes | `(root, "node", name)` | [`NodeRecord`] as JSON: a cluster node's address and lease |
//! | shards | `(root, "shard", n)` | [`ShardRecord`] as JSON: the shard's owner and epoch |

mod artifacts;
mod audit;
pub mod blob;
mod certs;
mod cluster;
mod history;
mod jobs;
mod meta;
mod presence;
mod records;
mod rules;
mod timelog;
mod twins;

pub use artifacts::{ARTIFACT_CHUNK, ArtifactChunks, ArtifactRecord};
pub use audit::{Audit, AuditEntry};
pub use certs::{CertRecord, CertStatus, Certs};
pub use cluster::{Cluster, NodeRecord, ShardRecord};
pub use history::{DAY_MS, FieldAgg, HOUR_MS, History, HourAgg, RawSample, day_of};
pub use jobs::{
    AbortCriterion, JobExecutions, JobRecord, JobTargets, Progress, RateIncrease, Rollout,
};
pub use meta::Meta;
pub use presence::{Presence, Presences};
pub use records::{KeyRecord, Keyed, ProvisioningTemplate, Records, Role, ThingRecord};
pub use rules::{LogKind, RuleLog, RuleLogEntry, RuleRecord, RuleStates};
pub use timelog::Cursor;
pub use twins::Twins;

use foundationdb_tuple::Subspace;
use twin_core::DeviceType;

/// The root subspace of a deployment that names none: the tuple `("doppel",)`.
pub fn default_root() -> Subspace {
    Subspace::all().subspace(&"doppel")
}

/// All repositories of one deployment.
#[derive(Clone, Debug)]
pub struct Repos {
    /// Twin state.
    pub twins: Twins,
    /// Registered things and their credentials.
    pub things: Records<ThingRecord>,
    /// Device types.
    pub types: Records<DeviceType>,
    /// API keys.
    pub keys: Records<KeyRecord>,
    /// Who changed what.
    pub audit: Audit,
    /// Telemetry history.
    pub history: History,
    /// Rule sources.
    pub rules: Records<RuleRecord>,
    /// Rule state and deadlines per twin.
    pub rule_states: RuleStates,
    /// Alerts and commands.
    pub rule_log: RuleLog,
    /// Single named records.
    pub meta: Meta,
    /// Cluster membership and shard ownership.
    pub cluster: Cluster,
    /// Device certificates.
    pub certs: Certs,
    /// Device connectivity.
    pub presence: Presences,
    /// Fleet-provisioning templates.
    pub templates: Records<ProvisioningTemplate>,
    /// Jobs.
    pub jobs: Records<JobRecord>,
    /// The index of job executions.
    pub job_executions: JobExecutions,
    /// Artifacts and their content.
    pub artifacts: Records<ArtifactRecord>,
    pub artifact_chunks: ArtifactChunks,
}

impl Repos {
    /// The repositories under `root`.
    pub fn new(root: &Subspace) -> Self {
        Self {
            twins: Twins::new(root.subspace(&"twin")),
            things: Records::new(root.subspace(&"thing")),
            types: Records::new(root.subspace(&"type")),
            keys: Records::new(root.subspace(&"key")),
            audit: Audit::new(root.subspace(&"audit")),
            history: History::new(root.subspace(&"telemetry")),
            rules: Records::new(root.subspace(&"rule")),
            rule_states: RuleStates::new(root.subspace(&"rstate"), root.subspace(&"rtimer")),
            rule_log: RuleLog::new(root.subspace(&"rlog")),
            meta: Meta::new(root.subspace(&"meta")),
            cluster: Cluster::new(root.subspace(&"node"), root.subspace(&"shard")),
            certs: Certs::new(
                root.subspace(&"cert"),
                root.subspace(&"thingcert"),
                root.subspace(&"certdeny"),
            ),
            presence: Presences::new(root.subspace(&"presence")),
            templates: Records::new(root.subspace(&"ptemplate")),
            jobs: Records::new(root.subspace(&"job")),
            job_executions: JobExecutions::new(root.subspace(&"jobexec")),
            artifacts: Records::new(root.subspace(&"artifact")),
            artifact_chunks: ArtifactChunks::new(root.subspace(&"artchunk")),
        }
    }
}

impl Default for Repos {
    fn default() -> Self {
        Self::new(&default_root())
    }
}
