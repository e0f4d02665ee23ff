//! One shadow (classic or named): its desired and reported sections, version and recent replies,
//! and the AWS-shaped payloads built from it (`get` document, `accepted`, `rejected`, `delta`,
//! `documents`). Every payload is serialized once, straight from the tree.

use crate::{
    error::ShadowError,
    limits::{Limits, TOMBSTONE_MS},
    state::{RequestMetadata, Section, Values, json_len},
};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Which request a reply answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Op {
    /// `…/get`.
    Get,
    /// `…/update`.
    Update,
    /// `…/delete`.
    Delete,
    /// A telemetry sample (rejections only; accepted samples get no reply).
    Telemetry,
}

impl Op {
    /// The topic word (`get`, `update`, `delete`, `telemetry`).
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Update => "update",
            Op::Delete => "delete",
            Op::Telemetry => "telemetry",
        }
    }
}

/// An accepted reply remembered under its client token.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Recent {
    pub token: Box<str>,
    pub op: Op,
    pub at: u64,
    pub version: u64,
    pub payload: Bytes,
}

/// One shadow document.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Shadow {
    pub(crate) desired: Section,
    pub(crate) reported: Section,
    pub(crate) version: u64,
    /// Server time (ms) of the last accepted change, or of the deletion.
    pub(crate) updated: u64,
    /// Deleted: only the version (for 48 hours) and recent replies remain.
    pub(crate) deleted: bool,
    pub(crate) recent: Vec<Recent>,
}

impl Shadow {
    /// The desired section.
    pub fn desired(&self) -> &Section {
        &self.desired
    }

    /// The reported section.
    pub fn reported(&self) -> &Section {
        &self.reported
    }

    /// The current version.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Server time (epoch ms) of the last accepted change.
    pub fn updated(&self) -> u64 {
        self.updated
    }

    /// Whether the shadow was deleted (and not written since).
    pub fn is_deleted(&self) -> bool {
        self.deleted
    }

    /// The delta between desired and reported.
    pub fn delta(&self) -> Section {
        Section::delta(&self.desired, &self.reported)
    }

    /// The version the next accepted change builds on: the current one, or 0 for a shadow
    /// deleted more than 48 hours ago.
    pub(crate) fn base_version(&self, now: u64) -> u64 {
        if self.deleted && now.saturating_sub(self.updated) > TOMBSTONE_MS {
            0
        } else {
            self.version
        }
    }

    /// Size of the state as counted against [`Limits::max_state_bytes`].
    pub fn state_len(desired: &Section, reported: &Section) -> usize {
        json_len(&StateView::new(desired, reported, None))
    }

    /// The remembered reply to `token` for `op`, if still within the window.
    pub(crate) fn recent(&self, token: &str, op: Op, now: u64, limits: &Limits) -> Option<&Recent> {
        self.recent.iter().rev().find(|r| {
            &*r.token == token && r.op == op && now.saturating_sub(r.at) <= limits.token_ttl_ms
        })
    }

    pub(crate) fn remember(&mut self, recent: Recent, limits: &Limits) {
        let now = recent.at;
        self.recent
            .retain(|r| now.saturating_sub(r.at) <= limits.token_ttl_ms && r.token != recent.token);
        self.recent.push(recent);
        let excess = self.recent.len().saturating_sub(limits.token_window);
        self.recent.drain(..excess);
    }

    /// The full AWS document, as answered to `get`.
    pub fn document(&self, now: u64, client_token: Option<&str>) -> Bytes {
        let delta = self.delta();
        to_bytes(&Document {
            state: StateView::new(&self.desired, &self.reported, Some(&delta)),
            metadata: MetaView::new(&self.desired, &self.reported),
            version: self.version,
            timestamp: now / 1000,
            client_token,
        })
    }

    /// A snapshot for `documents` notices.
    pub(crate) fn snapshot(&self) -> Snapshot<'_> {
        Snapshot {
            state: StateView::new(&self.desired, &self.reported, None),
            metadata: MetaView::new(&self.desired, &self.reported),
            version: self.version,
        }
    }
}

fn to_bytes<T: Serialize>(value: &T) -> Bytes {
    // Serializing views of the tree into memory cannot fail: keys are strings, numbers finite.
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

fn section_opt(s: &Section) -> Option<Values<'_>> {
    (!s.is_empty()).then(|| s.values())
}

#[derive(Serialize)]
pub(crate) struct StateView<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    desired: Option<Values<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reported: Option<Values<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delta: Option<Values<'a>>,
}

impl<'a> StateView<'a> {
    fn new(desired: &'a Section, reported: &'a Section, delta: Option<&'a Section>) -> Self {
        Self {
            desired: section_opt(desired),
            reported: section_opt(reported),
            delta: delta.and_then(section_opt),
        }
    }
}

#[derive(Serialize)]
struct MetaView<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    desired: Option<crate::state::Metadata<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reported: Option<crate::state::Metadata<'a>>,
}

impl<'a> MetaView<'a> {
    fn new(desired: &'a Section, reported: &'a Section) -> Self {
        Self {
            desired: (!desired.is_empty()).then(|| desired.metadata()),
            reported: (!reported.is_empty()).then(|| reported.metadata()),
        }
    }
}

#[derive(Serialize)]
struct Document<'a> {
    state: StateView<'a>,
    metadata: MetaView<'a>,
    version: u64,
    timestamp: u64,
    #[serde(rename = "clientToken", skip_serializing_if = "Option::is_none")]
    client_token: Option<&'a str>,
}

#[derive(Serialize)]
pub(crate) struct Snapshot<'a> {
    state: StateView<'a>,
    metadata: MetaView<'a>,
    version: u64,
}

/// `…/update/accepted`: the request's state echoed, with metadata for every key it named.
pub(crate) fn accepted_update(
    state: &Value,
    version: u64,
    now: u64,
    client_token: Option<&str>,
) -> Bytes {
    #[derive(Serialize)]
    struct Accepted<'a> {
        state: &'a Value,
        metadata: RequestMetadata<'a>,
        version: u64,
        timestamp: u64,
        #[serde(rename = "clientToken", skip_serializing_if = "Option::is_none")]
        client_token: Option<&'a str>,
    }
    to_bytes(&Accepted {
        state,
        metadata: RequestMetadata(state, now / 1000),
        version,
        timestamp: now / 1000,
        client_token,
    })
}

/// `…/delete/accepted`.
pub(crate) fn accepted_delete(version: u64, now: u64, client_token: Option<&str>) -> Bytes {
    #[derive(Serialize)]
    struct Deleted<'a> {
        version: u64,
        timestamp: u64,
        #[serde(rename = "clientToken", skip_serializing_if = "Option::is_none")]
        client_token: Option<&'a str>,
    }
    to_bytes(&Deleted {
        version,
        timestamp: now / 1000,
        client_token,
    })
}

/// `…/update/delta`: the whole current delta with its metadata.
pub(crate) fn delta_notice(
    delta: &Section,
    version: u64,
    now: u64,
    client_token: Option<&str>,
) -> Bytes {
    #[derive(Serialize)]
    struct Delta<'a> {
        state: Values<'a>,
        metadata: crate::state::Metadata<'a>,
        version: u64,
        timestamp: u64,
        #[serde(rename = "clientToken", skip_serializing_if = "Option::is_none")]
        client_token: Option<&'a str>,
    }
    to_bytes(&Delta {
        state: delta.values(),
        metadata: delta.metadata(),
        version,
        timestamp: now / 1000,
        client_token,
    })
}

/// `…/update/documents`: the shadow before and after an accepted change. `previous` is omitted
/// when the shadow did not exist before.
pub(crate) fn documents_notice(
    previous: Option<&Shadow>,
    current: &Shadow,
    now: u64,
    client_token: Option<&str>,
) -> Bytes {
    #[derive(Serialize)]
    struct Documents<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        previous: Option<Snapshot<'a>>,
        current: Snapshot<'a>,
        timestamp: u64,
        #[serde(rename = "clientToken", skip_serializing_if = "Option::is_none")]
        client_token: Option<&'a str>,
    }
    to_bytes(&Documents {
        previous: previous.map(Shadow::snapshot),
        current: current.snapshot(),
        timestamp: now / 1000,
        client_token,
    })
}

/// `…/rejected`: `{code, message, timestamp, clientToken?}`.
pub fn rejected(error: &ShadowError, client_token: Option<&str>, now: u64) -> Bytes {
    #[derive(Serialize)]
    struct Rejected<'a> {
        code: u16,
        message: &'a str,
        timestamp: u64,
        #[serde(rename = "clientToken", skip_serializing_if = "Option::is_none")]
        client_token: Option<&'a str>,
    }
    to_bytes(&Rejected {
        code: error.code,
        message: &error.message,
        timestamp: now / 1000,
        client_token,
    })
}
