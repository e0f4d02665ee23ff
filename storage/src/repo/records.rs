//! Small named records stored as JSON, one key each: registered things, device types.

use crate::{
    error::StoreError,
    kv::{KeyRange, RangeOptions, Transaction, key_after},
};
use foundationdb_tuple::Subspace;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::{collections::BTreeMap, fmt, marker::PhantomData};
use twin_core::{DeviceType, ThingName, TypeName};

/// A record stored under its name.
pub trait Keyed {
    /// The record's name.
    fn key(&self) -> &str;
}

/// A registered thing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThingRecord {
    /// The thing's name.
    pub name: ThingName,
    /// Its device type.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub device_type: Option<TypeName>,
    /// Free-form attributes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
    /// Hash of the device's token; the token itself is never stored.
    pub token_hash: String,
    /// Registration time, epoch ms.
    pub created_at: u64,
}

impl Keyed for ThingRecord {
    fn key(&self) -> &str {
        self.name.as_str()
    }
}

impl Keyed for DeviceType {
    fn key(&self) -> &str {
        self.name.as_str()
    }
}

/// A repository of `T` records keyed by name.
pub struct Records<T> {
    space: Subspace,
    _record: PhantomData<fn() -> T>,
}

impl<T> Clone for Records<T> {
    fn clone(&self) -> Self {
        Self {
            space: self.space.clone(),
            _record: PhantomData,
        }
    }
}

impl<T> fmt::Debug for Records<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Records")
            .field("space", &self.space)
            .finish()
    }
}

impl<T: Keyed + Serialize + DeserializeOwned> Records<T> {
    pub(crate) fn new(space: Subspace) -> Self {
        Self {
            space,
            _record: PhantomData,
        }
    }

    fn decode(&self, name: &str, bytes: &[u8]) -> Result<T, StoreError> {
        serde_json::from_slice(bytes)
            .map_err(|e| StoreError::corrupt(format!("record {name:?}"), e))
    }

    /// The record named `name`.
    pub fn get(&self, tx: &mut impl Transaction, name: &str) -> Result<Option<T>, StoreError> {
        tx.get(&self.space.pack(&name))?
            .map(|bytes| self.decode(name, &bytes))
            .transpose()
    }

    /// Writes `record` under its name, replacing any earlier one.
    pub fn put(&self, tx: &mut impl Transaction, record: &T) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(record)
            .map_err(|e| StoreError::corrupt(format!("record {:?}", record.key()), e))?;
        tx.set(&self.space.pack(&record.key()), &bytes)
    }

    /// Removes the record named `name`; returns whether it existed.
    pub fn delete(&self, tx: &mut impl Transaction, name: &str) -> Result<bool, StoreError> {
        let key = self.space.pack(&name);
        let existed = tx.get(&key)?.is_some();
        tx.clear(&key)?;
        Ok(existed)
    }

    /// Up to `limit` records in name order, starting after `after` (cursor paging).
    pub fn list(
        &self,
        tx: &mut impl Transaction,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<T>, StoreError> {
        self.list_prefixed(tx, "", after, limit)
    }

    /// Up to `limit` records whose names start with `prefix`, in name order, starting after
    /// `after` (cursor paging).
    pub fn list_prefixed(
        &self,
        tx: &mut impl Transaction,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<T>, StoreError> {
        let (mut begin, mut end) = self.space.range();
        if !prefix.is_empty() {
            // A name packs as its bytes and a terminator: without the terminator, the packed
            // prefix begins the key of every name that starts with it (names hold no NUL and
            // UTF-8 never holds 0xff).
            begin = self.space.pack(&prefix);
            begin.pop();
            end = begin.clone();
            end.push(0xff);
        }
        if let Some(after) = after {
            // The first key after `after`'s own key.
            begin = begin.max(key_after(self.space.pack(&after)));
        }
        if begin >= end {
            return Ok(Vec::new());
        }
        let options = RangeOptions::first(limit);
        tx.get_range(&KeyRange::new(begin, end), options)?
            .into_iter()
            .map(|(key, value)| {
                let name: String = self
                    .space
                    .unpack(&key)
                    .map_err(|e| StoreError::corrupt("record key", e))?;
                self.decode(&name, &value)
            })
            .collect()
    }
}

/// What an API key may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads.
    Viewer,
    /// Reads, and writes desired state and rules.
    Operator,
    /// Everything, including things, device types and keys.
    Admin,
}

/// An API key; the secret is stored only as a hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// The key's public id.
    pub id: String,
    /// What it may do.
    pub role: Role,
    /// The device types it is limited to; `None`: all things.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub types: Option<Vec<TypeName>>,
    /// SHA-256 of the secret, hex.
    pub secret_hash: String,
    /// Who created it (a key id).
    pub created_by: String,
    /// Creation time, epoch ms.
    pub created_at: u64,
}

impl Keyed for KeyRecord {
    fn key(&self) -> &str {
        &self.id
    }
}

/// A fleet-provisioning template: what a device holding one of its claim certificates becomes
/// when it asks to be provisioned with its parameters (`{Name}` in `thing_name` and in the
/// attributes' values is replaced by the parameter `Name`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvisioningTemplate {
    /// The template's name (the `{template}` of its MQTT topics).
    pub name: String,
    /// The new thing's name, e.g. `sensor-{SerialNumber}`.
    pub thing_name: String,
    /// The new thing's device type.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub device_type: Option<TypeName>,
    /// The new thing's attributes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
    /// Parameters whose value must be one of a list (e.g. the serial numbers made): a request
    /// with another value is refused.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub allow: BTreeMap<String, Vec<String>>,
    /// Returned to the device with its thing name (AWS's `deviceConfiguration`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub device_configuration: BTreeMap<String, String>,
    /// Validity of the certificates it issues, days.
    pub validity_days: u32,
    /// A disabled template refuses every request.
    pub enabled: bool,
    /// Last written when (epoch ms) and by whom.
    pub updated_at: u64,
    pub updated_by: String,
}

impl Keyed for ProvisioningTemplate {
    fn key(&self) -> &str {
        &self.name
    }
}
