//! Registered things and their device tokens, device types, API keys and the audit log.
//! Secrets (device tokens, API key secrets) are random, shown once and stored only as SHA-256
//! hashes. Every write is audited in the same transaction as the write. Store calls block:
//! async callers use the `Node` wrappers, which run them on the blocking pool.

use crate::error::NodeError;
use rand::RngCore;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, RwLock},
};
use storage::{AnyStore, Presence, Repos, Store, Transaction};
use twin_core::{CompiledType, DeviceType, ThingName, TypeName};

pub use storage::{
    AuditEntry, KeyRecord, Role, RuleLogEntry, RuleRecord, ThingRecord,
    repo::{Cursor, LogKind},
};

/// A fresh secret: 32 random bytes, hex.
pub fn new_token() -> String {
    random_hex(32)
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

/// The stored form of a secret.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A recorded telemetry sample: device time and fields.
pub type TimedSample = (u64, serde_json::Map<String, Value>);

/// Why a device was refused at CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No such thing, or the wrong token.
    BadCredentials,
    /// The store could not answer.
    Unavailable,
}

/// Who is calling the API, and what they may touch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The API key's id (`bootstrap` for the bootstrap admin token).
    pub id: String,
    /// What it may do.
    pub role: Role,
    /// The device types it is limited to; `None`: every thing.
    pub types: Option<Vec<TypeName>>,
}

impl Principal {
    /// The bootstrap admin (the `DOPPEL_ADMIN_TOKEN`).
    pub fn bootstrap() -> Self {
        Self {
            id: "bootstrap".into(),
            role: Role::Admin,
            types: None,
        }
    }

    /// Whether the principal may see things of `device_type`.
    pub fn sees(&self, device_type: Option<&TypeName>) -> bool {
        match (&self.types, device_type) {
            (None, _) => true,
            (Some(scope), Some(t)) => scope.contains(t),
            (Some(_), None) => false,
        }
    }

    /// Whether the principal's role is at least `role`.
    pub fn is(&self, role: Role) -> bool {
        self.role >= role
    }
}

/// A thing to register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewThing {
    /// Its name.
    pub name: ThingName,
    /// Its device type, which must be registered.
    pub device_type: Option<TypeName>,
    /// Free-form attributes.
    pub attributes: BTreeMap<String, String>,
}

/// A registration: the record as stored and the token, which is never shown again.
#[derive(Debug, Clone)]
pub struct Registered {
    /// The stored record.
    pub record: ThingRecord,
    /// The device token.
    pub token: String,
}

/// Which things to list.
#[derive(Debug, Clone, Default)]
pub struct ThingQuery {
    /// Start after this name (cursor).
    pub after: Option<String>,
    /// At most this many.
    pub limit: usize,
    /// Only things of this type.
    pub device_type: Option<TypeName>,
    /// Only things with all these attributes.
    pub attributes: BTreeMap<String, String>,
    /// Only things whose names start with this.
    pub prefix: Option<String>,
    /// Only things connected (`true`) or not (`false`: disconnected or never connected).
    pub connected: Option<bool>,
}

/// Things read per transaction when listing or counting.
const SCAN_PAGE: usize = 1_000;

/// A listed thing and its connectivity (`None`: it never connected).
pub type Listed = (ThingRecord, Option<Presence>);

/// Things counted by type and connectivity.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct FleetSummary {
    /// Things the principal sees.
    pub things: u64,
    /// Of them, connected now.
    pub connected: u64,
    /// Per device type (`""`: things without one): things and connected.
    pub by_type: BTreeMap<String, TypeCount>,
}

/// Things of one type.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct TypeCount {
    /// Things of the type.
    pub things: u64,
    /// Of them, connected now.
    pub connected: u64,
}

/// A new API key: its record and the key to hand out, shown only now.
#[derive(Debug, Clone)]
pub struct NewKey {
    /// The stored record.
    pub record: KeyRecord,
    /// `dk_<id>_<secret>`.
    pub key: String,
}

/// Things, credentials, device types, API keys and the audit log of one deployment.
pub struct Directory {
    store: AnyStore,
    repos: Repos,
    types: RwLock<HashMap<TypeName, Arc<CompiledType>>>,
    keys: RwLock<HashMap<String, KeyRecord>>,
    /// The SHA-256 of the bootstrap admin token (none until [`Directory::bootstrap_admin`]).
    admin_hash: RwLock<Option<String>>,
    rules: crate::rules::RuleBook,
    /// Woken after every change of types, keys, rules or the admin token (other nodes of a
    /// cluster are told to reload them).
    registry: tokio::sync::Notify,
    /// The deployment's certificate authority.
    pki: Arc<crate::pki::Pki>,
    /// Jobs canceled (by an operator or an abort): their queued executions never start.
    canceled_jobs: RwLock<std::collections::HashSet<String>>,
}

/// Certificates a thing may hold that are not revoked.
pub const MAX_CERTIFICATES: usize = 10;

/// The meta record holding the bootstrap admin token's hash.
const ADMIN_RECORD: &str = "admin";

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory").finish_non_exhaustive()
    }
}

/// The deployment's CA: the stored one, or (first start) a new one stored now. Two nodes
/// starting at once agree: the transaction that finds none writes one, the other reads it.
fn load_ca(store: &AnyStore, repos: &Repos) -> Result<crate::pki::Pki, NodeError> {
    const CA_RECORD: &str = "ca";
    let fresh = crate::pki::Pki::generate(crate::now_ms())?;
    let (stored, denied) = store.transact(|tx| {
        let stored = match repos.meta.get(tx, CA_RECORD)? {
            Some(bytes) => bytes,
            None => {
                let bytes = serde_json::to_vec(&fresh).unwrap_or_default();
                repos.meta.set(tx, CA_RECORD, &bytes)?;
                bytes
            }
        };
        Ok((stored, repos.certs.denied(tx)?))
    })?;
    let stored: crate::pki::StoredCa = serde_json::from_slice(&stored)
        .map_err(|e| NodeError::Io(format!("the stored CA does not decode: {e}")))?;
    crate::pki::Pki::load(&stored, denied)
}

impl Directory {
    /// Opens the directory: compiles every device type and loads the API keys.
    pub fn load(store: AnyStore, repos: Repos) -> Result<Self, NodeError> {
        Self::load_with_ca(store, repos, None)
    }

    /// Opens the directory with the operator's CA (`None`: the deployment's own, made at the
    /// first start and kept in the store).
    pub fn load_with_ca(
        store: AnyStore,
        repos: Repos,
        ca: Option<crate::pki::StoredCa>,
    ) -> Result<Self, NodeError> {
        let (defs, keys, rules) = store.transact(|tx| {
            Ok((
                repos.types.list(tx, None, usize::MAX)?,
                repos.keys.list(tx, None, usize::MAX)?,
                repos.rules.list(tx, None, usize::MAX)?,
            ))
        })?;
        let pki = Arc::new(match ca {
            Some(ca) => {
                let denied = store.transact(|tx| repos.certs.denied(tx))?;
                crate::pki::Pki::load(&ca, denied)?
            }
            None => load_ca(&store, &repos)?,
        });
        let mut types = HashMap::new();
        for def in defs {
            let name = def.name.clone();
            types.insert(name, Arc::new(CompiledType::compile(def)?));
        }
        let mut directory = Self {
            store,
            repos,
            types: RwLock::new(types),
            keys: RwLock::new(keys.into_iter().map(|k| (k.id.clone(), k)).collect()),
            admin_hash: RwLock::new(None),
            rules: crate::rules::RuleBook::default(),
            registry: tokio::sync::Notify::new(),
            pki,
            canceled_jobs: RwLock::default(),
        };
        directory.rules = crate::rules::RuleBook::load(rules, &directory);
        directory.reload_canceled_jobs()?;
        Ok(directory)
    }

    /// Reloads types, keys, rules and the admin token's hash from the store (another node of
    /// the cluster changed them).
    pub fn reload(&self) -> Result<(), NodeError> {
        let (defs, keys, rules, admin) = self.store.transact(|tx| {
            Ok((
                self.repos.types.list(tx, None, usize::MAX)?,
                self.repos.keys.list(tx, None, usize::MAX)?,
                self.repos.rules.list(tx, None, usize::MAX)?,
                self.repos.meta.get(tx, ADMIN_RECORD)?,
            ))
        })?;
        let mut types = HashMap::new();
        for def in defs {
            let name = def.name.clone();
            types.insert(name, Arc::new(CompiledType::compile(def)?));
        }
        if let Ok(mut current) = self.types.write() {
            *current = types;
        }
        if let Ok(mut current) = self.keys.write() {
            *current = keys.into_iter().map(|k| (k.id.clone(), k)).collect();
        }
        if let Some(hash) = admin.and_then(|bytes| String::from_utf8(bytes).ok())
            && let Ok(mut current) = self.admin_hash.write()
            && current.is_some()
        {
            *current = Some(hash);
        }
        self.rules
            .replace(crate::rules::RuleBook::load(rules, self));
        let denied = self.store.transact(|tx| self.repos.certs.denied(tx))?;
        self.pki.set_denied(denied);
        self.reload_canceled_jobs()
    }

    /// Reads which jobs are canceled.
    fn reload_canceled_jobs(&self) -> Result<(), NodeError> {
        let jobs = self
            .store
            .transact(|tx| self.repos.jobs.list(tx, None, usize::MAX))?;
        if let Ok(mut canceled) = self.canceled_jobs.write() {
            *canceled = jobs
                .into_iter()
                .filter(|j| j.status == "CANCELED")
                .map(|j| j.id)
                .collect();
        }
        Ok(())
    }

    /// Whether job `id` was canceled.
    pub fn job_canceled(&self, id: &str) -> bool {
        self.canceled_jobs
            .read()
            .is_ok_and(|canceled| canceled.contains(id))
    }

    /// Records that job `id` was canceled (after it was stored).
    pub(crate) fn mark_job_canceled(&self, id: &str) {
        if let Ok(mut canceled) = self.canceled_jobs.write() {
            canceled.insert(id.to_owned());
        }
        self.changed();
    }

    // ---- certificates --------------------------------------------------------------------

    /// The deployment's certificate authority.
    pub fn pki(&self) -> &Arc<crate::pki::Pki> {
        &self.pki
    }

    /// Issues a certificate to a registered thing (from its CSR, or with a new key, returned
    /// once), stored active, audited.
    pub fn issue_certificate(
        &self,
        thing: &ThingName,
        csr: Option<&str>,
        validity: std::time::Duration,
        actor: &str,
        now: u64,
    ) -> Result<(storage::CertRecord, Option<String>), NodeError> {
        if self.thing(thing)?.is_none() {
            return Err(NodeError::ThingNotFound(thing.to_string()));
        }
        // Bounded: a device rotating in a loop cannot fill the store.
        let held = self
            .certificates(thing)?
            .iter()
            .filter(|c| c.status != storage::CertStatus::Revoked)
            .count();
        if held >= MAX_CERTIFICATES {
            return Err(NodeError::InvalidRequest(format!(
                "thing {thing} already has {MAX_CERTIFICATES} certificates that are not revoked; revoke one first"
            )));
        }
        let (record, key) = self.pki.issue(
            crate::pki::Subject::Thing(thing.as_str()),
            csr,
            validity,
            now,
            actor,
        )?;
        self.store.transact(|tx| {
            self.repos.certs.put(tx, &record)?;
            self.repos.audit.append(
                tx,
                &AuditEntry::new(
                    actor,
                    "cert.create",
                    thing.as_str(),
                    None,
                    None,
                    Some(json!({ "id": record.id, "expires": record.not_after })),
                    now,
                ),
            )
        })?;
        Ok((record, key))
    }

    /// A thing's certificates.
    pub fn certificates(&self, thing: &ThingName) -> Result<Vec<storage::CertRecord>, NodeError> {
        Ok(self
            .store
            .transact(|tx| self.repos.certs.of_thing(tx, thing.as_str()))?)
    }

    /// The certificate revocation list (PEM) of every revoked certificate.
    pub fn crl(&self, now: u64) -> Result<String, NodeError> {
        let revoked = self.store.transact(|tx| {
            let denied = self.repos.certs.denied(tx)?;
            self.repos.certs.get_many(tx, &denied)
        })?;
        let revoked: Vec<storage::CertRecord> = revoked
            .into_iter()
            .filter(|c| c.status == storage::CertStatus::Revoked)
            .collect();
        self.pki.crl(&revoked, now)
    }

    /// A certificate by id.
    pub fn certificate(&self, id: &str) -> Result<Option<storage::CertRecord>, NodeError> {
        Ok(self.store.transact(|tx| self.repos.certs.get(tx, id))?)
    }

    /// Activates, deactivates or revokes one of a thing's certificates (`owner`: the thing, or
    /// [`storage::CertRecord::claim_owner`] of a template for its claim certificates; revoked
    /// is final); the
    /// next handshake with it is refused at once on this node, and on every node of a cluster
    /// once told.
    pub fn set_certificate_status(
        &self,
        owner: &str,
        id: &str,
        status: storage::CertStatus,
        actor: &str,
        now: u64,
    ) -> Result<storage::CertRecord, NodeError> {
        use storage::CertStatus;
        let updated = self.store.transact(|tx| {
            let Some(mut record) = self.repos.certs.get(tx, id)? else {
                return Ok(None);
            };
            if record.thing != owner {
                return Ok(None);
            }
            if record.status == CertStatus::Revoked && status != CertStatus::Revoked {
                return Ok(Some(Err(record)));
            }
            if record.status != status {
                record.status = status;
                if status == CertStatus::Revoked {
                    record.revoked_at = Some(now);
                }
                self.repos.certs.put(tx, &record)?;
                let action = match status {
                    CertStatus::Active => "cert.activate",
                    CertStatus::Inactive => "cert.deactivate",
                    CertStatus::Revoked => "cert.revoke",
                };
                self.repos.audit.append(
                    tx,
                    &AuditEntry::new(
                        actor,
                        action,
                        owner,
                        None,
                        None,
                        Some(json!({ "id": id })),
                        now,
                    ),
                )?;
            }
            Ok(Some(Ok(record)))
        })?;
        match updated {
            None => Err(NodeError::CertificateNotFound(id.to_owned())),
            Some(Err(_)) => Err(NodeError::CertificateRevoked(id.to_owned())),
            Some(Ok(record)) => {
                self.pki.set_status(id, record.status);
                self.changed();
                Ok(record)
            }
        }
    }

    /// Woken after every change of types, keys, rules or the admin token made here.
    pub fn registry_changed(&self) -> &tokio::sync::Notify {
        &self.registry
    }

    pub(crate) fn changed(&self) {
        self.registry.notify_one();
    }

    /// The store behind the directory (only the actors crate reaches it).
    pub(crate) fn store(&self) -> &AnyStore {
        &self.store
    }

    /// The repositories.
    pub(crate) fn repos(&self) -> &Repos {
        &self.repos
    }

    // ---- rules ---------------------------------------------------------------------------

    /// The compiled rules.
    pub fn rules(&self) -> &crate::rules::RuleBook {
        &self.rules
    }

    /// Checks and stores the rule `name` (see [`crate::rules::RuleBook::put`]).
    pub fn put_rule(
        &self,
        name: &str,
        source: String,
        actor: &str,
        now: u64,
    ) -> Result<crate::rules::StoredRule, NodeError> {
        let stored = self
            .rules
            .put(&self.store, &self.repos, self, name, source, actor, now)?;
        self.changed();
        Ok(stored)
    }

    /// Removes the rule `name`.
    pub fn delete_rule(
        &self,
        name: &str,
        actor: &str,
        now: u64,
    ) -> Result<storage::RuleRecord, NodeError> {
        let deleted = self
            .rules
            .delete(&self.store, &self.repos, name, actor, now)?;
        self.changed();
        Ok(deleted)
    }

    // ---- device types ------------------------------------------------------------------

    /// A compiled device type.
    pub fn device_type(&self, name: &TypeName) -> Option<Arc<CompiledType>> {
        self.types.read().ok()?.get(name).cloned()
    }

    /// Every device type, by name.
    pub fn device_types(&self) -> Vec<DeviceType> {
        let mut defs: Vec<DeviceType> = self
            .types
            .read()
            .map(|t| t.values().map(|c| c.def().clone()).collect())
            .unwrap_or_default();
        defs.sort_by(|a, b| a.name.cmp(&b.name));
        defs
    }

    /// Registers or replaces a device type; twins of the type use it from their next command.
    pub fn put_type(
        &self,
        def: DeviceType,
        actor: &str,
        now: u64,
    ) -> Result<Arc<CompiledType>, NodeError> {
        let compiled = Arc::new(CompiledType::compile(def.clone())?);
        let existed = self.device_type(&def.name).is_some();
        self.store.transact(|tx| {
            self.repos.types.put(tx, &def)?;
            let action = if existed {
                "type.replace"
            } else {
                "type.create"
            };
            self.repos.audit.append(
                tx,
                &AuditEntry::new(actor, action, def.name.as_str(), None, None, None, now),
            )
        })?;
        if let Ok(mut types) = self.types.write() {
            types.insert(def.name.clone(), compiled.clone());
        }
        self.changed();
        Ok(compiled)
    }

    // ---- things ------------------------------------------------------------------------

    /// Registers a thing with a new token.
    pub fn register(
        &self,
        thing: NewThing,
        actor: &str,
        now: u64,
    ) -> Result<Registered, NodeError> {
        let mut done = self.register_many(vec![thing], actor, now)?;
        Ok(done.remove(0))
    }

    /// Registers many things in one transaction: all of them or, if any name is taken or a type
    /// unknown, none.
    pub fn register_many(
        &self,
        things: Vec<NewThing>,
        actor: &str,
        now: u64,
    ) -> Result<Vec<Registered>, NodeError> {
        for thing in &things {
            if let Some(t) = &thing.device_type
                && self.device_type(t).is_none()
            {
                return Err(NodeError::TypeNotFound(t.to_string()));
            }
        }
        let registered: Vec<Registered> = things
            .into_iter()
            .map(|thing| {
                let token = new_token();
                let record = ThingRecord {
                    name: thing.name,
                    device_type: thing.device_type,
                    attributes: thing.attributes,
                    token_hash: hash_token(&token),
                    created_at: now,
                };
                Registered { record, token }
            })
            .collect();
        let taken = self.store.transact(|tx| {
            // Every name is checked before anything is written: a taken name commits nothing.
            for r in &registered {
                if self.repos.things.get(tx, r.record.name.as_str())?.is_some() {
                    return Ok(Some(r.record.name.to_string()));
                }
            }
            for r in &registered {
                self.repos.things.put(tx, &r.record)?;
                let details = r.record.device_type.as_ref().map(|t| json!({ "type": t }));
                self.repos.audit.append(
                    tx,
                    &AuditEntry::new(
                        actor,
                        "thing.register",
                        r.record.name.as_str(),
                        None,
                        None,
                        details,
                        now,
                    ),
                )?;
            }
            Ok(None)
        })?;
        match taken {
            Some(name) => Err(NodeError::ThingExists(name)),
            None => Ok(registered),
        }
    }

    /// The record of a registered thing.
    pub fn thing(&self, name: &ThingName) -> Result<Option<ThingRecord>, NodeError> {
        Ok(self
            .store
            .transact(|tx| self.repos.things.get(tx, name.as_str()))?)
    }

    /// Things matching `query` that `principal` may see, in name order; and whether more follow.
    pub fn list_things(
        &self,
        query: &ThingQuery,
        principal: &Principal,
    ) -> Result<(Vec<Listed>, bool), NodeError> {
        let mut found = Vec::new();
        // A first page one longer than asked tells whether more follow when nothing is
        // filtered out; filtered listings read on, a thousand at a time.
        let more = self.scan_things(
            query.prefix.as_deref(),
            query.after.clone(),
            query.limit.saturating_add(1),
            |record, presence| {
                let matches = principal.sees(record.device_type.as_ref())
                    && query
                        .device_type
                        .as_ref()
                        .is_none_or(|t| record.device_type.as_ref() == Some(t))
                    && query
                        .attributes
                        .iter()
                        .all(|(k, v)| record.attributes.get(k) == Some(v))
                    && query
                        .connected
                        .is_none_or(|c| presence.as_ref().is_some_and(|p| p.connected) == c);
                if !matches {
                    return true;
                }
                if found.len() == query.limit {
                    return false;
                }
                found.push((record, presence));
                true
            },
        )?;
        Ok((found, more))
    }

    /// Counts the things `principal` sees, by type and connectivity (reads every thing).
    pub fn fleet_summary(&self, principal: &Principal) -> Result<FleetSummary, NodeError> {
        let mut summary = FleetSummary::default();
        self.scan_things(None, None, SCAN_PAGE, |record, presence| {
            if principal.sees(record.device_type.as_ref()) {
                let connected = u64::from(presence.is_some_and(|p| p.connected));
                let kind = record.device_type.as_ref().map_or("", |t| t.as_str());
                let count = summary.by_type.entry(kind.to_owned()).or_default();
                count.things += 1;
                count.connected += connected;
                summary.things += 1;
                summary.connected += connected;
            }
            true
        })?;
        Ok(summary)
    }

    /// Feeds `visit` every thing whose name starts with `prefix`, after `after`, with its
    /// connectivity, in name order, a page per transaction (`first` things, then a thousand),
    /// until it answers `false`; returns whether it stopped early.
    fn scan_things(
        &self,
        prefix: Option<&str>,
        mut after: Option<String>,
        first: usize,
        mut visit: impl FnMut(ThingRecord, Option<Presence>) -> bool,
    ) -> Result<bool, NodeError> {
        let mut page_size = first.clamp(1, SCAN_PAGE);
        loop {
            let page = self.store.transact(|tx| {
                let records = self.repos.things.list_prefixed(
                    tx,
                    prefix.unwrap_or(""),
                    after.as_deref(),
                    page_size,
                )?;
                let names: Vec<&str> = records.iter().map(|r| r.name.as_str()).collect();
                let presence = self.repos.presence.get_many(tx, &names)?;
                Ok(records.into_iter().zip(presence).collect::<Vec<_>>())
            })?;
            let exhausted = page.len() < page_size;
            page_size = SCAN_PAGE;
            after = page.last().map(|(r, _)| r.name.to_string());
            for (record, presence) in page {
                if !visit(record, presence) {
                    return Ok(true);
                }
            }
            if exhausted {
                return Ok(false);
            }
        }
    }

    /// Changes a thing's attributes: keys with a string set it, keys with `null` remove it.
    pub fn update_attributes(
        &self,
        name: &ThingName,
        patch: &BTreeMap<String, Option<String>>,
        actor: &str,
        now: u64,
    ) -> Result<ThingRecord, NodeError> {
        let updated = self.store.transact(|tx| {
            let Some(mut record) = self.repos.things.get(tx, name.as_str())? else {
                return Ok(None);
            };
            for (key, value) in patch {
                match value {
                    Some(v) => record.attributes.insert(key.clone(), v.clone()),
                    None => record.attributes.remove(key),
                };
            }
            self.repos.things.put(tx, &record)?;
            let details = json!({ "attributes": patch });
            self.repos.audit.append(
                tx,
                &AuditEntry::new(
                    actor,
                    "thing.update",
                    name.as_str(),
                    None,
                    None,
                    Some(details),
                    now,
                ),
            )?;
            Ok(Some(record))
        })?;
        updated.ok_or_else(|| NodeError::ThingNotFound(name.to_string()))
    }

    /// Removes a thing: its record (so its token no longer works) and its twin.
    pub fn remove_thing(&self, name: &ThingName, actor: &str, now: u64) -> Result<(), NodeError> {
        let existed = self.store.transact(|tx| {
            if !self.repos.things.delete(tx, name.as_str())? {
                return Ok(false);
            }
            self.repos.twins.remove(tx, name)?;
            // Its certificates go with it: revoked, so no handshake with them succeeds.
            for mut cert in self.repos.certs.of_thing(tx, name.as_str())? {
                if cert.status != storage::CertStatus::Revoked {
                    cert.status = storage::CertStatus::Revoked;
                    cert.revoked_at = Some(now);
                    self.repos.certs.put(tx, &cert)?;
                }
            }
            self.repos.audit.append(
                tx,
                &AuditEntry::new(
                    actor,
                    "thing.decommission",
                    name.as_str(),
                    None,
                    None,
                    None,
                    now,
                ),
            )?;
            Ok(true)
        })?;
        if existed {
            let denied = self.store.transact(|tx| self.repos.certs.denied(tx))?;
            self.pki.set_denied(denied);
            self.changed();
        }
        existed
            .then_some(())
            .ok_or_else(|| NodeError::ThingNotFound(name.to_string()))
    }

    /// Checks a device's token.
    pub fn authenticate(&self, name: &ThingName, token: &str) -> Result<ThingRecord, AuthFailure> {
        let record = self.thing(name).map_err(|_| AuthFailure::Unavailable)?;
        match record {
            Some(record) if record.token_hash == hash_token(token) => Ok(record),
            _ => Err(AuthFailure::BadCredentials),
        }
    }

    // ---- API keys ----------------------------------------------------------------------

    /// Creates an API key. Only an admin may create keys, and a key is never wider than its
    /// creator's scope.
    pub fn create_key(
        &self,
        role: Role,
        types: Option<Vec<TypeName>>,
        creator: &Principal,
        now: u64,
    ) -> Result<NewKey, NodeError> {
        if let Some(types) = &types
            && let Some(unknown) = types.iter().find(|t| self.device_type(t).is_none())
        {
            return Err(NodeError::TypeNotFound(unknown.to_string()));
        }
        let types = match (&creator.types, types) {
            (None, requested) => requested,
            (Some(scope), None) => Some(scope.clone()),
            (Some(scope), Some(requested)) => {
                if let Some(outside) = requested.iter().find(|t| !scope.contains(t)) {
                    return Err(NodeError::Forbidden(format!(
                        "type {outside} is outside the creator's scope"
                    )));
                }
                Some(requested)
            }
        };
        let id = random_hex(8);
        let secret = new_token();
        let record = KeyRecord {
            id: id.clone(),
            role,
            types,
            secret_hash: hash_token(&secret),
            created_by: creator.id.clone(),
            created_at: now,
        };
        self.store.transact(|tx| {
            self.repos.keys.put(tx, &record)?;
            let details = json!({ "role": record.role, "types": record.types });
            self.repos.audit.append(
                tx,
                &AuditEntry::new(
                    &creator.id,
                    "key.create",
                    &id,
                    None,
                    None,
                    Some(details),
                    now,
                ),
            )
        })?;
        if let Ok(mut keys) = self.keys.write() {
            keys.insert(id.clone(), record.clone());
        }
        self.changed();
        Ok(NewKey {
            key: format!("dk_{id}_{secret}"),
            record,
        })
    }

    /// Every API key (records only; secrets are not kept).
    pub fn keys(&self) -> Vec<KeyRecord> {
        let mut keys: Vec<KeyRecord> = self
            .keys
            .read()
            .map(|k| k.values().cloned().collect())
            .unwrap_or_default();
        keys.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        keys
    }

    /// Revokes an API key at once; returns whether it existed.
    pub fn revoke_key(&self, id: &str, actor: &str, now: u64) -> Result<bool, NodeError> {
        let existed = self.store.transact(|tx| {
            let existed = self.repos.keys.delete(tx, id)?;
            if existed {
                self.repos.audit.append(
                    tx,
                    &AuditEntry::new(actor, "key.revoke", id, None, None, None, now),
                )?;
            }
            Ok(existed)
        })?;
        if let Ok(mut keys) = self.keys.write() {
            keys.remove(id);
        }
        self.changed();
        Ok(existed)
    }

    /// Whether the API key `id` exists (it has not been revoked).
    pub fn key_exists(&self, id: &str) -> bool {
        self.keys.read().is_ok_and(|keys| keys.contains_key(id))
    }

    /// The principal behind a presented API key (`dk_<id>_<secret>`), if the key is valid.
    pub fn authenticate_key(&self, presented: &str) -> Option<Principal> {
        let (id, secret) = presented.strip_prefix("dk_")?.split_once('_')?;
        let keys = self.keys.read().ok()?;
        let record = keys.get(id)?;
        (record.secret_hash == hash_token(secret)).then(|| Principal {
            id: record.id.clone(),
            role: record.role,
            types: record.types.clone(),
        })
    }

    // ---- the bootstrap admin token ------------------------------------------------------

    /// Settles the bootstrap admin token at start: `chosen` (`DOPPEL_ADMIN_TOKEN`) replaces
    /// the stored one; otherwise the stored one is kept; on a deployment's first start a new
    /// one is generated and returned — the only time it is ever shown. Only its hash is stored.
    pub fn bootstrap_admin(
        &self,
        chosen: Option<&str>,
        now: u64,
    ) -> Result<Option<String>, NodeError> {
        let stored = self
            .store
            .transact(|tx| self.repos.meta.get(tx, ADMIN_RECORD))?;
        let stored = stored.and_then(|bytes| String::from_utf8(bytes).ok());
        let (hash, generated) = match (chosen, stored) {
            (Some(token), stored) => {
                let hash = hash_token(token);
                if stored.as_deref() != Some(hash.as_str()) {
                    self.save_admin(&hash, "admin.set", "environment", now)?;
                }
                (hash, None)
            }
            (None, Some(stored)) => (stored, None),
            (None, None) => {
                let token = new_token();
                let hash = hash_token(&token);
                self.save_admin(&hash, "admin.generate", "node", now)?;
                (hash, Some(token))
            }
        };
        if let Ok(mut admin) = self.admin_hash.write() {
            *admin = Some(hash);
        }
        Ok(generated)
    }

    /// Replaces the bootstrap admin token with a new one, returned (shown once); the old one
    /// stops working at once.
    pub fn rotate_admin(&self, actor: &str, now: u64) -> Result<String, NodeError> {
        let token = new_token();
        let hash = hash_token(&token);
        self.save_admin(&hash, "admin.rotate", actor, now)?;
        if let Ok(mut admin) = self.admin_hash.write() {
            *admin = Some(hash);
        }
        self.changed();
        Ok(token)
    }

    fn save_admin(&self, hash: &str, action: &str, actor: &str, now: u64) -> Result<(), NodeError> {
        self.store.transact(|tx| {
            self.repos.meta.set(tx, ADMIN_RECORD, hash.as_bytes())?;
            self.repos.audit.append(
                tx,
                &AuditEntry::new(actor, action, "bootstrap", None, None, None, now),
            )
        })?;
        Ok(())
    }

    /// Whether `presented` is the bootstrap admin token.
    pub fn is_admin_token(&self, presented: &str) -> bool {
        let hash = hash_token(presented);
        self.admin_hash
            .read()
            .ok()
            .is_some_and(|admin| admin.as_deref() == Some(hash.as_str()))
    }

    // ---- audit -------------------------------------------------------------------------

    /// Records a write that has no transaction of its own here.
    pub fn append_audit(
        &self,
        tx: &mut impl Transaction,
        entry: &AuditEntry,
    ) -> Result<(), NodeError> {
        Ok(self.repos.audit.append(tx, entry)?)
    }

    /// Recorded telemetry samples of `thing` with `from <= ts < to`, oldest first, at most
    /// `limit` (samples whose stored JSON does not read are skipped).
    pub fn telemetry_samples(
        &self,
        thing: &ThingName,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Vec<TimedSample>, NodeError> {
        let raw = self
            .store
            .transact(|tx| self.repos.history.raw(tx, thing, from, to, limit))?;
        Ok(raw
            .into_iter()
            .filter_map(|(ts, _, json)| serde_json::from_slice(&json).ok().map(|m| (ts, m)))
            .collect())
    }

    /// Rule log entries of `kind` with `from <= at < to`, after the entry `after` names, oldest
    /// first, at most `limit`.
    pub fn rule_log(
        &self,
        kind: LogKind,
        range: (u64, u64),
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<Vec<(Cursor, RuleLogEntry)>, NodeError> {
        Ok(self
            .store
            .transact(|tx| self.repos.rule_log.list(tx, kind, range, after, limit))?)
    }

    /// Audit entries with `from <= at < to`, oldest first.
    pub fn audit_log(
        &self,
        from: u64,
        to: u64,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<Vec<(Cursor, AuditEntry)>, NodeError> {
        Ok(self
            .store
            .transact(|tx| self.repos.audit.list(tx, from, to, after, limit))?)
    }
}

/// Rules are checked against the deployment's device types and things.
impl rules_dsl::Catalog for Directory {
    fn device_type(&self, name: &str) -> Option<twin_core::Schemas> {
        let name = TypeName::new(name).ok()?;
        Directory::device_type(self, &name).map(|t| t.def().schemas.clone())
    }

    fn thing_type(&self, name: &str) -> Option<Option<String>> {
        let name = ThingName::new(name).ok()?;
        self.thing(&name)
            .ok()
            .flatten()
            .map(|r| r.device_type.map(|t| t.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use storage::FjallStore;

    fn directory() -> (tempfile::TempDir, Directory) {
        let dir = tempfile::tempdir().unwrap();
        let store = AnyStore::from(FjallStore::open(dir.path()).unwrap());
        let directory = Directory::load(store, Repos::default()).unwrap();
        (dir, directory)
    }

    fn new_thing(name: &str) -> NewThing {
        NewThing {
            name: ThingName::new(name).unwrap(),
            device_type: None,
            attributes: BTreeMap::new(),
        }
    }

    fn typed(name: &str, t: &str) -> NewThing {
        NewThing {
            device_type: Some(TypeName::new(t).unwrap()),
            ..new_thing(name)
        }
    }

    fn put_type(d: &Directory, name: &str) {
        let def = DeviceType {
            name: TypeName::new(name).unwrap(),
            schemas: Default::default(),
            telemetry_to_reported: Default::default(),
        };
        d.put_type(def, "test", 1).unwrap();
    }

    #[test]
    fn tokens_are_random_and_stored_hashed() {
        let (_dir, d) = directory();
        let name = ThingName::new("dev-1").unwrap();
        let reg = d.register(new_thing("dev-1"), "test", 1).unwrap();
        assert_eq!(reg.token.len(), 64);
        assert_ne!(reg.record.token_hash, reg.token);
        let stored = d.thing(&name).unwrap().unwrap();
        assert!(
            !serde_json::to_string(&stored).unwrap().contains(&reg.token),
            "the token is not stored"
        );
        assert_eq!(d.authenticate(&name, &reg.token).unwrap().name, name);
        assert_eq!(
            d.authenticate(&name, "wrong").unwrap_err(),
            AuthFailure::BadCredentials
        );
        let other = ThingName::new("dev-2").unwrap();
        assert_eq!(
            d.authenticate(&other, &reg.token).unwrap_err(),
            AuthFailure::BadCredentials
        );
        assert_ne!(new_token(), new_token());
    }

    #[test]
    fn names_register_once_and_types_must_exist() {
        let (_dir, d) = directory();
        d.register(new_thing("dev-1"), "test", 1).unwrap();
        assert!(matches!(
            d.register(new_thing("dev-1"), "test", 1),
            Err(NodeError::ThingExists(_))
        ));
        assert!(matches!(
            d.register(typed("dev-2", "Pump"), "test", 1),
            Err(NodeError::TypeNotFound(_))
        ));
        put_type(&d, "Pump");
        d.register(typed("dev-2", "Pump"), "test", 1).unwrap();
        assert!(d.device_type(&TypeName::new("Pump").unwrap()).is_some());
    }

    #[test]
    fn bulk_registration_is_all_or_nothing() {
        let (_dir, d) = directory();
        let names = |prefix: &str, n: usize| {
            (0..n)
                .map(|i| new_thing(&format!("{prefix}-{i}")))
                .collect::<Vec<_>>()
        };
        let done = d.register_many(names("a", 50), "test", 1).unwrap();
        assert_eq!(done.len(), 50);
        assert!(d.authenticate(&done[7].record.name, &done[7].token).is_ok());
        // One taken name refuses the whole batch.
        let mut batch = names("b", 10);
        batch.push(new_thing("a-3"));
        batch.push(new_thing("b-99"));
        assert!(
            matches!(d.register_many(batch, "test", 1), Err(NodeError::ThingExists(n)) if n == "a-3")
        );
        for name in ["b-0", "b-9", "b-99"] {
            assert!(
                d.thing(&ThingName::new(name).unwrap()).unwrap().is_none(),
                "{name} was not registered"
            );
        }
    }

    #[test]
    fn keys_authenticate_until_revoked_and_survive_a_reload() {
        let (dir, d) = directory();
        let new = d
            .create_key(Role::Viewer, None, &Principal::bootstrap(), 1)
            .unwrap();
        assert!(new.key.starts_with(&format!("dk_{}_", new.record.id)));
        let principal = d.authenticate_key(&new.key).unwrap();
        assert_eq!(
            (principal.role, principal.id.as_str()),
            (Role::Viewer, new.record.id.as_str())
        );
        assert!(d.authenticate_key("dk_nope_x").is_none());
        assert!(
            d.authenticate_key(&new.key.replace(&new.record.id, "0000000000000000"))
                .is_none()
        );
        assert!(d.authenticate_key(&format!("{}x", new.key)).is_none());
        drop(d);
        let store = AnyStore::from(FjallStore::open(dir.path()).unwrap());
        let d = Directory::load(store, Repos::default()).unwrap();
        assert!(
            d.authenticate_key(&new.key).is_some(),
            "keys are loaded at start"
        );
        assert!(d.revoke_key(&new.record.id, "bootstrap", 2).unwrap());
        assert!(d.authenticate_key(&new.key).is_none(), "revoked at once");
        assert!(!d.revoke_key(&new.record.id, "bootstrap", 2).unwrap());
    }

    #[test]
    fn scoped_keys_see_only_their_types_and_cannot_widen() {
        let (_dir, d) = directory();
        put_type(&d, "Pump");
        put_type(&d, "Valve");
        let pump = TypeName::new("Pump").unwrap();
        let valve = TypeName::new("Valve").unwrap();
        let scoped = d
            .create_key(
                Role::Admin,
                Some(vec![pump.clone()]),
                &Principal::bootstrap(),
                1,
            )
            .unwrap();
        let principal = d.authenticate_key(&scoped.key).unwrap();
        assert!(
            principal.sees(Some(&pump)) && !principal.sees(Some(&valve)) && !principal.sees(None)
        );
        assert!(matches!(
            d.create_key(Role::Viewer, Some(vec![valve]), &principal, 1),
            Err(NodeError::Forbidden(_))
        ));
        let inherited = d.create_key(Role::Viewer, None, &principal, 1).unwrap();
        assert_eq!(
            inherited.record.types,
            Some(vec![pump]),
            "a scoped creator's keys inherit its scope"
        );

        d.register(typed("p-1", "Pump"), "test", 1).unwrap();
        d.register(typed("v-1", "Valve"), "test", 1).unwrap();
        d.register(new_thing("untyped"), "test", 1).unwrap();
        let all = ThingQuery {
            limit: 10,
            ..ThingQuery::default()
        };
        let (seen, _) = d.list_things(&all, &principal).unwrap();
        assert_eq!(
            seen.iter()
                .map(|(r, _)| r.name.as_str())
                .collect::<Vec<_>>(),
            ["p-1"]
        );
        let (seen, _) = d.list_things(&all, &Principal::bootstrap()).unwrap();
        assert_eq!(seen.len(), 3);
    }

    #[test]
    fn listing_pages_and_filters_by_type_and_attributes() {
        let (_dir, d) = directory();
        put_type(&d, "Pump");
        for i in 0..5 {
            let mut t = typed(&format!("p-{i}"), "Pump");
            t.attributes.insert(
                "site".into(),
                if i % 2 == 0 { "north" } else { "south" }.into(),
            );
            d.register(t, "test", 1).unwrap();
        }
        d.register(new_thing("x"), "test", 1).unwrap();
        let admin = Principal::bootstrap();
        let query = |after: Option<&str>, limit| ThingQuery {
            after: after.map(str::to_owned),
            limit,
            device_type: Some(TypeName::new("Pump").unwrap()),
            attributes: [("site".to_owned(), "north".to_owned())].into(),
            ..ThingQuery::default()
        };
        let (page, more) = d.list_things(&query(None, 2), &admin).unwrap();
        assert_eq!(
            (
                page.iter()
                    .map(|(r, _)| r.name.as_str())
                    .collect::<Vec<_>>(),
                more
            ),
            (vec!["p-0", "p-2"], true)
        );
        let (page, more) = d.list_things(&query(Some("p-2"), 2), &admin).unwrap();
        assert_eq!(
            (
                page.iter()
                    .map(|(r, _)| r.name.as_str())
                    .collect::<Vec<_>>(),
                more
            ),
            (vec!["p-4"], false)
        );
    }

    #[test]
    fn writes_are_audited_in_their_transaction() {
        let (_dir, d) = directory();
        let name = ThingName::new("dev-1").unwrap();
        d.register(new_thing("dev-1"), "k1", 10).unwrap();
        d.update_attributes(
            &name,
            &[("site".to_owned(), Some("north".to_owned()))].into(),
            "k2",
            20,
        )
        .unwrap();
        assert_eq!(d.thing(&name).unwrap().unwrap().attributes["site"], "north");
        d.update_attributes(&name, &[("site".to_owned(), None)].into(), "k2", 25)
            .unwrap();
        assert!(d.thing(&name).unwrap().unwrap().attributes.is_empty());
        d.remove_thing(&name, "k3", 30).unwrap();
        assert!(matches!(
            d.remove_thing(&name, "k3", 31),
            Err(NodeError::ThingNotFound(_))
        ));
        let log: Vec<(String, String, u64)> = d
            .audit_log(0, 100, None, 10)
            .unwrap()
            .into_iter()
            .map(|(_, e)| (e.actor, e.action, e.at))
            .collect();
        assert_eq!(
            log,
            [
                ("k1".to_owned(), "thing.register".to_owned(), 10),
                ("k2".to_owned(), "thing.update".to_owned(), 20),
                ("k2".to_owned(), "thing.update".to_owned(), 25),
                ("k3".to_owned(), "thing.decommission".to_owned(), 30),
            ]
        );
    }
}
