//! The rule book: every stored rule compiled, indexed by the device type or thing it is
//! attached to. Writes are checked against the deployment (types, things, schemas) before they
//! are stored; twins ask for their rules per command and cache the answer by the book's
//! version.

use crate::error::NodeError;
use rules_dsl::{Catalog, CompiledRule, Diagnostic, Offline, RuleTarget, ir::limits};
use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
};
use storage::{AnyStore, Repos, RuleRecord, Store};
use twin_core::{ThingName, TypeName};

/// The rules attached to one twin, shared.
pub type TwinRules = Arc<[Arc<CompiledRule>]>;

#[derive(Default)]
struct Book {
    records: BTreeMap<String, (RuleRecord, Arc<CompiledRule>)>,
    by_type: HashMap<String, Vec<Arc<CompiledRule>>>,
    by_thing: HashMap<String, Vec<Arc<CompiledRule>>>,
}

impl Book {
    fn insert(&mut self, record: RuleRecord, rule: Arc<CompiledRule>) {
        self.remove(&record.name);
        match &rule.target {
            RuleTarget::Type(t) => self
                .by_type
                .entry(t.clone())
                .or_default()
                .push(rule.clone()),
            RuleTarget::Thing(t) => self
                .by_thing
                .entry(t.clone())
                .or_default()
                .push(rule.clone()),
        }
        self.records.insert(record.name.clone(), (record, rule));
    }

    fn remove(&mut self, name: &str) -> Option<RuleRecord> {
        let (record, rule) = self.records.remove(name)?;
        let index = match &rule.target {
            RuleTarget::Type(t) => self.by_type.get_mut(t),
            RuleTarget::Thing(t) => self.by_thing.get_mut(t),
        };
        if let Some(list) = index {
            list.retain(|r| !Arc::ptr_eq(r, &rule));
        }
        Some(record)
    }

    fn attached(&self, target: &RuleTarget) -> usize {
        match target {
            RuleTarget::Type(t) => self.by_type.get(t).map_or(0, Vec::len),
            RuleTarget::Thing(t) => self.by_thing.get(t).map_or(0, Vec::len),
        }
    }
}

/// The compiled rules of a deployment.
#[derive(Default)]
pub struct RuleBook {
    book: RwLock<Book>,
    version: AtomicU64,
}

impl std::fmt::Debug for RuleBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleBook")
            .field("version", &self.version.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// A rule that checked and was stored, with its warnings.
#[derive(Debug, Clone)]
pub struct StoredRule {
    /// The record.
    pub record: RuleRecord,
    /// Warnings of the check.
    pub warnings: Vec<Diagnostic>,
}

impl RuleBook {
    /// Compiles the stored rules. A rule that no longer checks against the deployment (its
    /// type's schemas changed) is compiled without the schemas and keeps running; one that does
    /// not compile at all is skipped, with an error in the log.
    pub fn load(records: Vec<RuleRecord>, catalog: &dyn Catalog) -> Self {
        let mut book = Book::default();
        for record in records {
            let checked = rules_dsl::check(&record.source, catalog, true);
            let checked = if checked.program.is_some() {
                checked
            } else {
                tracing::warn!(rule = %record.name, "stored rule no longer checks against the deployment; running it unchecked");
                rules_dsl::check(&record.source, &Offline, false)
            };
            match checked
                .program
                .and_then(|p| p.rules.into_iter().find(|r| *r.name == *record.name))
            {
                Some(rule) => book.insert(record, rule),
                None => {
                    tracing::error!(rule = %record.name, "stored rule does not compile; skipped")
                }
            }
        }
        Self {
            book: RwLock::new(book),
            version: AtomicU64::new(1),
        }
    }

    /// Takes the rules of `other` (reloaded from the store); twins pick them up on their next
    /// input.
    pub fn replace(&self, other: RuleBook) {
        if let (Ok(mut book), Ok(new)) = (self.book.write(), other.book.into_inner()) {
            *book = new;
        }
        self.version.fetch_add(1, Ordering::AcqRel);
    }

    /// Changes whenever a rule is stored or removed.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// The rules attached to a thing of `device_type` named `thing`.
    pub fn for_twin(&self, thing: &ThingName, device_type: Option<&TypeName>) -> TwinRules {
        let Ok(book) = self.book.read() else {
            return Arc::from(Vec::new());
        };
        let by_type = device_type
            .and_then(|t| book.by_type.get(t.as_str()))
            .into_iter()
            .flatten();
        let by_thing = book.by_thing.get(thing.as_str()).into_iter().flatten();
        let all: Vec<Arc<CompiledRule>> = by_type.chain(by_thing).cloned().collect();
        Arc::from(rules_dsl::engine::applicable(
            &all,
            thing.as_str(),
            device_type.map(TypeName::as_str),
        ))
    }

    /// A stored rule.
    pub fn get(&self, name: &str) -> Option<(RuleRecord, Arc<CompiledRule>)> {
        self.book.read().ok()?.records.get(name).cloned()
    }

    /// Every stored rule, by name.
    pub fn list(&self) -> Vec<RuleRecord> {
        self.book
            .read()
            .map(|b| b.records.values().map(|(r, _)| r.clone()).collect())
            .unwrap_or_default()
    }

    /// Checks `source` as the rule `name` and stores it (with an audit entry, in one
    /// transaction). The source must hold exactly one rule, named `name`, and may hold tests.
    #[allow(clippy::too_many_arguments)]
    pub fn put(
        &self,
        store: &AnyStore,
        repos: &Repos,
        catalog: &dyn Catalog,
        name: &str,
        source: String,
        actor: &str,
        now: u64,
    ) -> Result<StoredRule, NodeError> {
        let checked = rules_dsl::check(&source, catalog, true);
        let (errors, warnings): (Vec<Diagnostic>, Vec<Diagnostic>) = checked
            .diagnostics
            .into_iter()
            .partition(|d| d.severity == rules_dsl::Severity::Error);
        let Some(program) = checked.program else {
            return Err(NodeError::RulesInvalid(errors));
        };
        if program.rules.len() != 1 || *program.rules[0].name != *name {
            let found: Vec<&str> = program.rules.iter().map(|r| &*r.name).collect();
            return Err(NodeError::InvalidRequest(format!(
                "the source must hold exactly one rule, named {name}; it holds {}",
                if found.is_empty() {
                    "none".to_owned()
                } else {
                    found.join(", ")
                }
            )));
        }
        let rule = program.rules[0].clone();
        let existing = self.get(name);
        let moving = existing
            .as_ref()
            .is_none_or(|(_, r)| r.target != rule.target);
        let attached = self
            .book
            .read()
            .map(|b| b.attached(&rule.target))
            .unwrap_or(0);
        if moving && attached >= limits::RULES_PER_TWIN {
            return Err(NodeError::InvalidRequest(format!(
                "{} already has {} rules attached, the most a twin runs",
                describe(&rule.target),
                limits::RULES_PER_TWIN
            )));
        }
        let (device_type, thing) = match &rule.target {
            RuleTarget::Type(t) => (Some(t.clone()), None),
            RuleTarget::Thing(t) => (None, Some(t.clone())),
        };
        let record = RuleRecord {
            name: name.to_owned(),
            source,
            device_type,
            thing,
            updated_by: actor.to_owned(),
            updated_at: now,
        };
        store.transact(|tx| {
            repos.rules.put(tx, &record)?;
            let action = if existing.is_some() {
                "rule.replace"
            } else {
                "rule.create"
            };
            repos.audit.append(
                tx,
                &storage::AuditEntry::new(actor, action, name, None, None, None, now),
            )
        })?;
        if let Ok(mut book) = self.book.write() {
            book.insert(record.clone(), rule);
        }
        self.version.fetch_add(1, Ordering::AcqRel);
        Ok(StoredRule { record, warnings })
    }

    /// Removes the rule `name`; its twins resolve its alerts at their next evaluation.
    pub fn delete(
        &self,
        store: &AnyStore,
        repos: &Repos,
        name: &str,
        actor: &str,
        now: u64,
    ) -> Result<RuleRecord, NodeError> {
        let Some((record, _)) = self.get(name) else {
            return Err(NodeError::RuleNotFound(name.to_owned()));
        };
        store.transact(|tx| {
            repos.rules.delete(tx, name)?;
            repos.audit.append(
                tx,
                &storage::AuditEntry::new(actor, "rule.delete", name, None, None, None, now),
            )
        })?;
        if let Ok(mut book) = self.book.write() {
            book.remove(name);
        }
        self.version.fetch_add(1, Ordering::AcqRel);
        Ok(record)
    }
}

fn describe(target: &RuleTarget) -> String {
    match target {
        RuleTarget::Type(t) => format!("device type {t}"),
        RuleTarget::Thing(t) => format!("thing {t}"),
    }
}
