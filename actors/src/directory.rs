//! Registered things, their credentials and device types. Device tokens are random, shown
//! once at registration and stored only as SHA-256 hashes. Store calls block: async callers
//! use the `Node` wrappers, which run them on the blocking pool.

use crate::error::NodeError;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, RwLock},
};
use storage::{AnyStore, Repos, Store, ThingRecord};
use twin_core::{CompiledType, DeviceType, ThingName, TypeName};

/// A fresh device token: 32 random bytes, hex.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// The stored form of a token.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Why a device was refused at CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No such thing, or the wrong token.
    BadCredentials,
    /// The store could not answer.
    Unavailable,
}

/// Things, credentials and device types of one deployment.
pub struct Directory {
    store: AnyStore,
    repos: Repos,
    types: RwLock<HashMap<TypeName, Arc<CompiledType>>>,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory").finish_non_exhaustive()
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

impl Directory {
    /// Opens the directory, compiling every registered device type.
    pub fn load(store: AnyStore, repos: Repos) -> Result<Self, NodeError> {
        let defs = store.transact(|tx| repos.types.list(tx, None, usize::MAX))?;
        let mut types = HashMap::new();
        for def in defs {
            let name = def.name.clone();
            types.insert(name, Arc::new(CompiledType::compile(def)?));
        }
        Ok(Self {
            store,
            repos,
            types: RwLock::new(types),
        })
    }

    /// The store behind the directory.
    pub fn store(&self) -> &AnyStore {
        &self.store
    }

    /// The repositories.
    pub fn repos(&self) -> &Repos {
        &self.repos
    }

    /// A compiled device type.
    pub fn device_type(&self, name: &TypeName) -> Option<Arc<CompiledType>> {
        self.types.read().ok()?.get(name).cloned()
    }

    /// Registers (or replaces) a device type.
    pub fn put_type(&self, def: DeviceType) -> Result<Arc<CompiledType>, NodeError> {
        let compiled = Arc::new(CompiledType::compile(def.clone())?);
        self.store.transact(|tx| self.repos.types.put(tx, &def))?;
        if let Ok(mut types) = self.types.write() {
            types.insert(def.name.clone(), compiled.clone());
        }
        Ok(compiled)
    }

    /// Registers a thing with a new token.
    pub fn register(&self, thing: NewThing, now: u64) -> Result<Registered, NodeError> {
        let mut done = self.register_many(vec![thing], now)?;
        Ok(done.remove(0))
    }

    /// Registers many things in one transaction: all of them or, if any name is taken or a type
    /// unknown, none.
    pub fn register_many(
        &self,
        things: Vec<NewThing>,
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

    /// Checks a device's token.
    pub fn authenticate(&self, name: &ThingName, token: &str) -> Result<ThingRecord, AuthFailure> {
        let record = self.thing(name).map_err(|_| AuthFailure::Unavailable)?;
        match record {
            Some(record) if record.token_hash == hash_token(token) => Ok(record),
            _ => Err(AuthFailure::BadCredentials),
        }
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

    #[test]
    fn tokens_are_random_and_stored_hashed() {
        let (_dir, d) = directory();
        let name = ThingName::new("dev-1").unwrap();
        let reg = d
            .register(
                NewThing {
                    name: name.clone(),
                    device_type: None,
                    attributes: BTreeMap::new(),
                },
                1,
            )
            .unwrap();
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
        let name = ThingName::new("dev-1").unwrap();
        d.register(
            NewThing {
                name: name.clone(),
                device_type: None,
                attributes: BTreeMap::new(),
            },
            1,
        )
        .unwrap();
        assert!(matches!(
            d.register(
                NewThing {
                    name,
                    device_type: None,
                    attributes: BTreeMap::new()
                },
                1
            ),
            Err(NodeError::ThingExists(_))
        ));
        let typed = ThingName::new("dev-2").unwrap();
        let pump = TypeName::new("Pump").unwrap();
        assert!(matches!(
            d.register(
                NewThing {
                    name: typed.clone(),
                    device_type: Some(pump.clone()),
                    attributes: BTreeMap::new()
                },
                1
            ),
            Err(NodeError::TypeNotFound(_))
        ));
        d.put_type(DeviceType {
            name: pump.clone(),
            schemas: Default::default(),
            telemetry_to_reported: Default::default(),
        })
        .unwrap();
        d.register(
            NewThing {
                name: typed,
                device_type: Some(pump.clone()),
                attributes: BTreeMap::new(),
            },
            1,
        )
        .unwrap();
        assert!(d.device_type(&pump).is_some());
    }

    fn new_thing(name: &str) -> NewThing {
        NewThing {
            name: ThingName::new(name).unwrap(),
            device_type: None,
            attributes: BTreeMap::new(),
        }
    }

    #[test]
    fn bulk_registration_is_all_or_nothing() {
        let (_dir, d) = directory();
        let names = |prefix: &str, n: usize| {
            (0..n)
                .map(|i| new_thing(&format!("{prefix}-{i}")))
                .collect::<Vec<_>>()
        };
        let done = d.register_many(names("a", 50), 1).unwrap();
        assert_eq!(done.len(), 50);
        assert!(d.authenticate(&done[7].record.name, &done[7].token).is_ok());
        // One taken name refuses the whole batch.
        let mut batch = names("b", 10);
        batch.push(new_thing("a-3"));
        batch.push(new_thing("b-99"));
        assert!(matches!(d.register_many(batch, 1), Err(NodeError::ThingExists(n)) if n == "a-3"));
        for name in ["b-0", "b-9", "b-99"] {
            assert!(
                d.thing(&ThingName::new(name).unwrap()).unwrap().is_none(),
                "{name} was not registered"
            );
        }
    }
}
