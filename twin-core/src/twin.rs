//! The twin as a pure state machine: `Twin::handle(command, context, now, effects)` applies one
//! command to the twin's shadows and lists what must happen as a result (replies, delta and
//! documents notices, change events, telemetry records). The actor that hosts a twin persists it
//! when it is dirty and releases the effects once that write is durable.

use crate::{
    device_type::{CompiledType, TelemetryMapping},
    error::{ShadowError, TwinError},
    limits::Limits,
    names::{ShadowName, ThingName},
    request::{DeleteRequest, GetRequest, Patch, Sample, UpdateRequest},
    shadow::{
        Op, Recent, Shadow, accepted_delete, accepted_update, delta_notice, documents_notice,
        rejected,
    },
    state::{Section, Stamp, depth, has_null_in_array},
};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// What a twin needs to know besides its own state.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    /// Limits to enforce.
    pub limits: &'a Limits,
    /// The thing's device type, if it has one.
    pub device_type: Option<&'a CompiledType>,
    /// Whether anyone listens to `…/update/documents` (building them costs a copy).
    pub documents: bool,
}

/// A request to a twin.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// Read a shadow.
    Get(GetRequest),
    /// Change a shadow.
    Update(UpdateRequest),
    /// Delete a shadow.
    Delete(DeleteRequest),
    /// A telemetry sample from the device.
    Telemetry(Sample),
}

impl Command {
    /// The shadow and operation the command is about.
    pub fn target(&self) -> (&ShadowName, Op) {
        match self {
            Command::Get(r) => (&r.shadow, Op::Get),
            Command::Update(r) => (&r.shadow, Op::Update),
            Command::Delete(r) => (&r.shadow, Op::Delete),
            Command::Telemetry(_) => (&ShadowName::CLASSIC, Op::Telemetry),
        }
    }

    /// The command's client token.
    pub fn client_token(&self) -> Option<&str> {
        match self {
            Command::Get(r) => r.client_token.as_deref(),
            Command::Update(r) => r.client_token.as_deref(),
            Command::Delete(r) => r.client_token.as_deref(),
            Command::Telemetry(_) => None,
        }
    }

    /// The rejected reply to this command, for commands refused before they reach a twin
    /// (an unregistered thing, a store failure).
    pub fn refuse(&self, error: ShadowError, now: u64) -> Reply {
        let (shadow, op) = self.target();
        let client_token: Option<Box<str>> = self.client_token().map(Into::into);
        Reply {
            shadow: shadow.clone(),
            op,
            payload: rejected(&error, client_token.as_deref(), now),
            outcome: Err(error),
            client_token,
            duplicate: false,
        }
    }
}

/// The answer to the requester.
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    /// The shadow the request named.
    pub shadow: ShadowName,
    /// What was asked.
    pub op: Op,
    /// The shadow's version after the request, or why it was refused.
    pub outcome: Result<u64, ShadowError>,
    /// The request's client token.
    pub client_token: Option<Box<str>>,
    /// The AWS payload (`…/accepted` or `…/rejected`).
    pub payload: Bytes,
    /// The request repeated a client token: this is the original reply, nothing was applied.
    pub duplicate: bool,
}

/// A change of a shadow, for apps watching the twin.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Change {
    /// The twin.
    pub thing: ThingName,
    /// The shadow.
    pub shadow: ShadowName,
    /// The shadow's version after the change.
    pub version: u64,
    /// Server time of the change, epoch ms.
    pub ts: u64,
    /// What changed in `desired`: the fields set (`null` for removed ones), or `null` when the
    /// section was cleared.
    pub desired: Option<Value>,
    /// What changed in `reported`, likewise.
    pub reported: Option<Value>,
    /// The whole delta after the change, when not empty.
    pub delta: Option<Value>,
    /// The shadow was deleted.
    pub deleted: bool,
}

/// Something that must happen because of a command.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Answer the requester.
    Reply(Reply),
    /// Publish `…/update/delta`.
    Delta {
        /// The shadow.
        shadow: ShadowName,
        /// Its version.
        version: u64,
        /// The AWS delta payload.
        payload: Bytes,
    },
    /// Publish `…/update/documents`.
    Documents {
        /// The shadow.
        shadow: ShadowName,
        /// Its version.
        version: u64,
        /// The AWS documents payload.
        payload: Bytes,
    },
    /// Tell apps watching the twin.
    Changed(Change),
    /// Answer a device's jobs request (`$aws/things/{thing}/jobs/…/accepted|rejected`).
    JobReply(crate::jobs::JobReply),
    /// Tell the device its pending job executions changed (`jobs/notify`, or `jobs/notify-next`
    /// when `next`).
    JobNotify {
        /// `notify-next` rather than `notify`.
        next: bool,
        /// AWS's payload.
        payload: Bytes,
    },
    /// A job execution changed (the registry's index, apps).
    Execution(crate::jobs::ExecutionChange),
    /// Record a telemetry sample (history, rules).
    Telemetry {
        /// Device time of the sample (server time when the device sent none), epoch ms.
        ts: u64,
        /// The sample's fields.
        values: Map<String, Value>,
        /// The same fields as compact JSON, as the history stores them.
        json: Bytes,
    },
}

impl From<crate::jobs::JobEffect> for Effect {
    fn from(effect: crate::jobs::JobEffect) -> Self {
        match effect {
            crate::jobs::JobEffect::Reply(reply) => Effect::JobReply(reply),
            crate::jobs::JobEffect::Notify { next, payload } => Effect::JobNotify { next, payload },
            crate::jobs::JobEffect::Execution(change) => Effect::Execution(change),
        }
    }
}

/// A device's twin: its classic and named shadows.
#[derive(Clone, Debug, PartialEq)]
pub struct Twin {
    thing: ThingName,
    shadows: Vec<(ShadowName, Shadow)>,
    jobs: crate::jobs::Jobs,
    dirty: bool,
}

/// Shadows only.
const FORMAT_V1: u8 = 1;
/// Shadows and job executions (written only when the twin has executions).
const FORMAT_V2: u8 = 2;
const NO_MAPPING: &TelemetryMapping = &TelemetryMapping::All;

#[derive(Serialize)]
struct RecordRef<'a> {
    shadows: &'a [(ShadowName, Shadow)],
}

#[derive(Deserialize)]
struct Record {
    shadows: Vec<(ShadowName, Shadow)>,
}

#[derive(Serialize)]
struct RecordV2Ref<'a> {
    shadows: &'a [(ShadowName, Shadow)],
    jobs: &'a crate::jobs::Jobs,
}

#[derive(Deserialize)]
struct RecordV2 {
    shadows: Vec<(ShadowName, Shadow)>,
    jobs: crate::jobs::Jobs,
}

fn reject(
    out: &mut Vec<Effect>,
    shadow: ShadowName,
    op: Op,
    error: ShadowError,
    client_token: Option<Box<str>>,
    now: u64,
) {
    let payload = rejected(&error, client_token.as_deref(), now);
    out.push(Effect::Reply(Reply {
        shadow,
        op,
        outcome: Err(error),
        client_token,
        payload,
        duplicate: false,
    }));
}

fn merged(section: &Section, patch: &Patch, stamp: Stamp) -> Option<Section> {
    match patch {
        Patch::Absent => None,
        Patch::Clear => Some(Section::default()),
        Patch::Merge(fields) => {
            let mut s = section.clone();
            s.merge(fields, stamp);
            Some(s)
        }
    }
}

fn patch_value(patch: Patch) -> Option<Value> {
    match patch {
        Patch::Absent => None,
        Patch::Clear => Some(Value::Null),
        Patch::Merge(fields) => Some(Value::Object(fields)),
    }
}

impl Twin {
    /// A twin with no shadows.
    pub fn new(thing: ThingName) -> Self {
        Self {
            thing,
            shadows: Vec::new(),
            jobs: crate::jobs::Jobs::default(),
            dirty: false,
        }
    }

    /// The twin's job executions.
    pub fn jobs(&self) -> &crate::jobs::Jobs {
        &self.jobs
    }

    /// Handles a job input (a device's request, a rollout's queue or cancel) at `now`.
    pub fn handle_job(&mut self, input: crate::jobs::JobInput, now: u64, out: &mut Vec<Effect>) {
        let mut effects = Vec::new();
        if self
            .jobs
            .handle(self.thing.as_str(), input, now, &mut effects)
        {
            self.dirty = true;
        }
        out.extend(effects.into_iter().map(Effect::from));
    }

    /// Cancels queued executions of jobs that `canceled` says were canceled.
    pub fn cancel_jobs_where(
        &mut self,
        canceled: impl Fn(&str) -> bool,
        now: u64,
        out: &mut Vec<Effect>,
    ) {
        let mut effects = Vec::new();
        if self
            .jobs
            .cancel_where(self.thing.as_str(), canceled, now, &mut effects)
        {
            self.dirty = true;
        }
        out.extend(effects.into_iter().map(Effect::from));
    }

    /// Times out job executions whose deadline passed.
    pub fn expire_jobs(&mut self, now: u64, out: &mut Vec<Effect>) {
        let mut effects = Vec::new();
        if self.jobs.expire(self.thing.as_str(), now, &mut effects) {
            self.dirty = true;
        }
        out.extend(effects.into_iter().map(Effect::from));
    }

    /// The thing this twin mirrors.
    pub fn thing(&self) -> &ThingName {
        &self.thing
    }

    /// A live (not deleted) shadow.
    pub fn shadow(&self, name: &ShadowName) -> Option<&Shadow> {
        self.index(name)
            .map(|i| &self.shadows[i].1)
            .filter(|s| !s.deleted)
    }

    /// The live shadows.
    pub fn shadows(&self) -> impl Iterator<Item = (&ShadowName, &Shadow)> {
        self.shadows
            .iter()
            .filter(|(_, s)| !s.deleted)
            .map(|(n, s)| (n, s))
    }

    /// Whether the twin changed since the last [`Twin::take_dirty`].
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Returns whether the twin changed since the last call, and clears the flag.
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    fn index(&self, name: &ShadowName) -> Option<usize> {
        self.shadows.iter().position(|(n, _)| n == name)
    }

    fn display_name<'a>(&'a self, shadow: &'a ShadowName) -> &'a str {
        shadow.name().unwrap_or(self.thing.as_str())
    }

    /// Applies `command` at server time `now` (epoch ms), appending its effects to `out`.
    pub fn handle(&mut self, command: Command, ctx: &Context<'_>, now: u64, out: &mut Vec<Effect>) {
        match command {
            Command::Get(r) => self.get(r, now, out),
            Command::Update(r) => self.update(r, ctx, now, out),
            Command::Delete(r) => self.delete(r, ctx, now, out),
            Command::Telemetry(s) => self.telemetry(s, ctx, now, out),
        }
    }

    fn get(&self, req: GetRequest, now: u64, out: &mut Vec<Effect>) {
        match self.shadow(&req.shadow) {
            Some(shadow) => out.push(Effect::Reply(Reply {
                payload: shadow.document(now, req.client_token.as_deref()),
                outcome: Ok(shadow.version),
                shadow: req.shadow,
                op: Op::Get,
                client_token: req.client_token,
                duplicate: false,
            })),
            None => {
                let error = ShadowError::no_shadow(self.display_name(&req.shadow));
                reject(out, req.shadow, Op::Get, error, req.client_token, now);
            }
        }
    }

    /// The reply remembered for a repeated client token, if any.
    fn duplicate(
        &self,
        idx: Option<usize>,
        token: Option<&str>,
        op: Op,
        ctx: &Context<'_>,
        now: u64,
    ) -> Option<(u64, Bytes)> {
        let shadow = &self.shadows[idx?].1;
        let recent = shadow.recent(token?, op, now, ctx.limits)?;
        Some((recent.version, recent.payload.clone()))
    }

    fn named_count(&self) -> usize {
        self.shadows.iter().filter(|(n, _)| !n.is_classic()).count()
    }

    fn update(&mut self, req: UpdateRequest, ctx: &Context<'_>, now: u64, out: &mut Vec<Effect>) {
        let UpdateRequest {
            shadow: name,
            client_token,
            version,
            desired,
            reported,
            state,
        } = req;
        let idx = self.index(&name);
        if let Some((version, payload)) =
            self.duplicate(idx, client_token.as_deref(), Op::Update, ctx, now)
        {
            out.push(Effect::Reply(Reply {
                shadow: name,
                op: Op::Update,
                outcome: Ok(version),
                client_token,
                payload,
                duplicate: true,
            }));
            return;
        }
        if idx.is_none() && !name.is_classic() && self.named_count() >= ctx.limits.max_named_shadows
        {
            let error = ShadowError::too_many_shadows(ctx.limits.max_named_shadows);
            return reject(out, name, Op::Update, error, client_token, now);
        }
        let empty = Shadow::default();
        let current = idx.map_or(&empty, |i| &self.shadows[i].1);
        let base = current.base_version(now);
        if version.is_some_and(|v| v != base) {
            return reject(
                out,
                name,
                Op::Update,
                ShadowError::version_conflict(),
                client_token,
                now,
            );
        }
        let stamp = Stamp { at: now, device: 0 };
        let new_desired = merged(&current.desired, &desired, stamp);
        let new_reported = merged(&current.reported, &reported, stamp);
        let d = new_desired.as_ref().unwrap_or(&current.desired);
        let r = new_reported.as_ref().unwrap_or(&current.reported);
        if Shadow::state_len(d, r) > ctx.limits.max_state_bytes {
            return reject(
                out,
                name,
                Op::Update,
                ShadowError::too_large(),
                client_token,
                now,
            );
        }
        if let Some(t) = ctx.device_type {
            let checked = match (&new_desired, &new_reported) {
                (Some(d), _) if t.has_desired_schema() => t.check_desired(&d.to_json()),
                _ => Ok(()),
            }
            .and_then(|()| match &new_reported {
                Some(r) if t.has_reported_schema() => t.check_reported(&r.to_json()),
                _ => Ok(()),
            });
            if let Err(error) = checked {
                return reject(out, name, Op::Update, error, client_token, now);
            }
        }
        let previous =
            (ctx.documents && !current.deleted && idx.is_some()).then(|| current.clone());
        let delta_before = current.delta();

        let i = idx.unwrap_or_else(|| {
            self.shadows.push((name.clone(), Shadow::default()));
            self.shadows.len() - 1
        });
        let shadow = &mut self.shadows[i].1;
        if let Some(s) = new_desired {
            shadow.desired = s;
        }
        if let Some(s) = new_reported {
            shadow.reported = s;
        }
        shadow.version = base + 1;
        shadow.updated = now;
        shadow.deleted = false;
        self.dirty = true;

        let version = shadow.version;
        let token = client_token.as_deref();
        let payload = accepted_update(&state, version, now, token);
        if let Some(token) = &client_token {
            let recent = Recent {
                token: token.clone(),
                op: Op::Update,
                at: now,
                version,
                payload: payload.clone(),
            };
            shadow.remember(recent, ctx.limits);
        }
        let delta = shadow.delta();
        let touched_desired = desired.is_present();
        let delta_notice = (!delta.is_empty()
            && (touched_desired || !delta.same_values(&delta_before)))
        .then(|| delta_notice(&delta, version, now, token));
        let documents = ctx
            .documents
            .then(|| documents_notice(previous.as_ref(), shadow, now, token));
        out.push(Effect::Reply(Reply {
            shadow: name.clone(),
            op: Op::Update,
            outcome: Ok(version),
            client_token,
            payload,
            duplicate: false,
        }));
        self.notify(
            name,
            version,
            now,
            delta,
            delta_notice,
            documents,
            desired,
            reported,
            out,
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn notify(
        &self,
        shadow: ShadowName,
        version: u64,
        now: u64,
        delta: Section,
        delta_notice: Option<Bytes>,
        documents: Option<Bytes>,
        desired: Patch,
        reported: Patch,
        out: &mut Vec<Effect>,
    ) {
        if let Some(payload) = delta_notice {
            out.push(Effect::Delta {
                shadow: shadow.clone(),
                version,
                payload,
            });
        }
        if let Some(payload) = documents {
            out.push(Effect::Documents {
                shadow: shadow.clone(),
                version,
                payload,
            });
        }
        out.push(Effect::Changed(Change {
            thing: self.thing.clone(),
            shadow,
            version,
            ts: now,
            desired: patch_value(desired),
            reported: patch_value(reported),
            delta: (!delta.is_empty()).then(|| delta.to_json()),
            deleted: false,
        }));
    }

    fn delete(&mut self, req: DeleteRequest, ctx: &Context<'_>, now: u64, out: &mut Vec<Effect>) {
        let DeleteRequest {
            shadow: name,
            client_token,
            version,
        } = req;
        let idx = self.index(&name);
        if let Some((version, payload)) =
            self.duplicate(idx, client_token.as_deref(), Op::Delete, ctx, now)
        {
            out.push(Effect::Reply(Reply {
                shadow: name,
                op: Op::Delete,
                outcome: Ok(version),
                client_token,
                payload,
                duplicate: true,
            }));
            return;
        }
        let Some(i) = idx.filter(|&i| !self.shadows[i].1.deleted) else {
            let error = ShadowError::no_shadow(self.display_name(&name));
            return reject(out, name, Op::Delete, error, client_token, now);
        };
        let shadow = &mut self.shadows[i].1;
        if version.is_some_and(|v| v != shadow.version) {
            return reject(
                out,
                name,
                Op::Delete,
                ShadowError::version_conflict(),
                client_token,
                now,
            );
        }
        // The reply reports the deleted document's version; the deletion itself takes the next
        // one, so that every change a watcher sees has a higher version than the one before.
        let deleted_version = shadow.version;
        shadow.desired = Section::default();
        shadow.reported = Section::default();
        shadow.version += 1;
        shadow.updated = now;
        shadow.deleted = true;
        self.dirty = true;
        let payload = accepted_delete(deleted_version, now, client_token.as_deref());
        if let Some(token) = &client_token {
            let recent = Recent {
                token: token.clone(),
                op: Op::Delete,
                at: now,
                version: deleted_version,
                payload: payload.clone(),
            };
            shadow.remember(recent, ctx.limits);
        }
        let version = shadow.version;
        out.push(Effect::Reply(Reply {
            shadow: name.clone(),
            op: Op::Delete,
            outcome: Ok(deleted_version),
            client_token,
            payload,
            duplicate: false,
        }));
        out.push(Effect::Changed(Change {
            thing: self.thing.clone(),
            shadow: name,
            version,
            ts: now,
            desired: None,
            reported: None,
            delta: None,
            deleted: true,
        }));
    }

    fn telemetry(&mut self, sample: Sample, ctx: &Context<'_>, now: u64, out: &mut Vec<Effect>) {
        // A refused sample changes nothing and is not recorded: the device learns of the
        // refusal, and history holds exactly the samples that were accepted.
        match self.accept_telemetry(sample, ctx, now, out) {
            Ok(accepted) => out.push(accepted),
            Err(error) => reject(out, ShadowName::CLASSIC, Op::Telemetry, error, None, now),
        }
    }

    /// Checks a sample (device time, size, schema), merges its mapped fields into `reported`
    /// and returns its `Telemetry` effect.
    fn accept_telemetry(
        &mut self,
        sample: Sample,
        ctx: &Context<'_>,
        now: u64,
        out: &mut Vec<Effect>,
    ) -> Result<Effect, ShadowError> {
        let Sample { ts, values } = sample;
        // A device time far ahead would hold its fields against every later sample.
        if ts.is_some_and(|ts| ts > now.saturating_add(ctx.limits.max_clock_skew_ms)) {
            return Err(ShadowError::timestamp_in_future(
                ctx.limits.max_clock_skew_ms,
            ));
        }
        let values = Value::Object(values);
        // Serialized once: the size checked here is the size the history stores.
        let json = Bytes::from(serde_json::to_vec(&values).unwrap_or_default());
        if json.len() > ctx.limits.max_sample_bytes {
            return Err(ShadowError::sample_too_large(ctx.limits.max_sample_bytes));
        }
        if let Some(Err(error)) = ctx.device_type.map(|t| t.check_telemetry(&values)) {
            return Err(error);
        }
        let Value::Object(values) = values else {
            unreachable!("built as an object above")
        };
        let device_time = ts.unwrap_or(now);
        self.merge_telemetry(&values, device_time, ctx, now, out)?;
        Ok(Effect::Telemetry {
            ts: device_time,
            values,
            json,
        })
    }

    /// Merges the fields of a sample that the type maps to `reported`, last writer wins.
    fn merge_telemetry(
        &mut self,
        values: &Map<String, Value>,
        device_time: u64,
        ctx: &Context<'_>,
        now: u64,
        out: &mut Vec<Effect>,
    ) -> Result<(), ShadowError> {
        let mapping = ctx
            .device_type
            .map_or(NO_MAPPING, |t| &t.def().telemetry_to_reported);
        // The mapped fields, borrowed from the sample (no copy on the ingest path).
        let fields = || {
            values
                .iter()
                .filter(|(key, value)| !value.is_null() && mapping.keeps(key))
        };
        if fields().next().is_none() {
            return Ok(());
        }
        // As a section, the fields nest one level deeper than their own values.
        if 1 + fields().map(|(_, v)| depth(v)).max().unwrap_or(0) > ctx.limits.max_depth {
            return Err(ShadowError::too_deep(ctx.limits.max_depth));
        }
        if fields().any(|(_, v)| has_null_in_array(v)) {
            return Err(ShadowError::invalid_node());
        }
        let idx = self.index(&ShadowName::CLASSIC);
        let empty = Shadow::default();
        let current = idx.map_or(&empty, |i| &self.shadows[i].1);
        let mut reported = current.reported.clone();
        let mut applied = Map::new();
        let stamp = Stamp {
            at: now,
            device: device_time,
        };
        let outcome = reported.merge_newer(fields(), stamp, &mut applied);
        if !outcome.changed && !outcome.restamped {
            return Ok(());
        }
        if outcome.changed {
            if Shadow::state_len(&current.desired, &reported) > ctx.limits.max_state_bytes {
                return Err(ShadowError::too_large());
            }
            let schema = ctx.device_type.filter(|t| t.has_reported_schema());
            if let Some(Err(error)) = schema.map(|t| t.check_reported(&reported.to_json())) {
                return Err(error);
            }
        }
        let base = current.base_version(now);
        let previous = (outcome.changed && ctx.documents && !current.deleted && idx.is_some())
            .then(|| current.clone());
        let delta_before = outcome.changed.then(|| current.delta());
        let i = idx.unwrap_or_else(|| {
            self.shadows.push((ShadowName::CLASSIC, Shadow::default()));
            self.shadows.len() - 1
        });
        let shadow = &mut self.shadows[i].1;
        shadow.reported = reported;
        self.dirty = true;
        let Some(delta_before) = delta_before else {
            // Same values, newer device time: remembered (so older samples stay out) but not a
            // new version.
            return Ok(());
        };
        shadow.version = base + 1;
        shadow.updated = now;
        shadow.deleted = false;
        let version = shadow.version;
        let delta = shadow.delta();
        let delta_notice = (!delta.is_empty() && !delta.same_values(&delta_before))
            .then(|| delta_notice(&delta, version, now, None));
        let documents = ctx
            .documents
            .then(|| documents_notice(previous.as_ref(), shadow, now, None));
        self.notify(
            ShadowName::CLASSIC,
            version,
            now,
            delta,
            delta_notice,
            documents,
            Patch::Absent,
            Patch::Merge(applied),
            out,
        );
        Ok(())
    }

    /// The twin's durable form.
    pub fn encode(&self) -> Vec<u8> {
        // Encoding owned, finite data into a Vec cannot fail.
        if self.jobs.is_empty() {
            let mut out = vec![FORMAT_V1];
            out.extend(
                postcard::to_allocvec(&RecordRef {
                    shadows: &self.shadows,
                })
                .unwrap_or_default(),
            );
            return out;
        }
        let mut out = vec![FORMAT_V2];
        out.extend(
            postcard::to_allocvec(&RecordV2Ref {
                shadows: &self.shadows,
                jobs: &self.jobs,
            })
            .unwrap_or_default(),
        );
        out
    }

    /// Whether a stored record holds job executions (without decoding it).
    pub fn record_has_jobs(bytes: &[u8]) -> bool {
        bytes.first() == Some(&FORMAT_V2)
    }

    /// Reads a twin written by [`Twin::encode`].
    pub fn decode(thing: ThingName, bytes: &[u8]) -> Result<Twin, TwinError> {
        match bytes.split_first() {
            Some((&FORMAT_V1, rest)) => {
                let record: Record =
                    postcard::from_bytes(rest).map_err(|e| TwinError::Decode(e.to_string()))?;
                Ok(Twin {
                    thing,
                    shadows: record.shadows,
                    jobs: crate::jobs::Jobs::default(),
                    dirty: false,
                })
            }
            Some((&FORMAT_V2, rest)) => {
                let record: RecordV2 =
                    postcard::from_bytes(rest).map_err(|e| TwinError::Decode(e.to_string()))?;
                Ok(Twin {
                    thing,
                    shadows: record.shadows,
                    jobs: record.jobs,
                    dirty: false,
                })
            }
            Some((format, _)) => Err(TwinError::Decode(format!("unknown format {format}"))),
            None => Err(TwinError::Decode("empty record".into())),
        }
    }
}
