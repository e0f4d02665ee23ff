//! Device certificates, `(root, "cert", id)` → [`CertRecord`] as JSON, with two indexes:
//! `(root, "thingcert", thing, id)` lists a thing's certificates, and `(root, "certdeny", id)`
//! names every certificate that is not active (what a TLS listener refuses at the handshake).
//! The id is the SHA-256 of the certificate's DER, in hex (AWS IoT's certificate id).

use crate::{
    error::StoreError,
    kv::{KeyRange, RangeOptions, Transaction},
};
use foundationdb_tuple::Subspace;
use serde::{Deserialize, Serialize};

/// Whether a certificate authenticates its device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CertStatus {
    /// It does.
    Active,
    /// Not now (it may be activated again).
    Inactive,
    /// Never again.
    Revoked,
}

/// A certificate issued to a thing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertRecord {
    /// SHA-256 of the DER, hex.
    pub id: String,
    /// The thing it was issued to (its CN and SAN).
    pub thing: String,
    /// The serial number, hex.
    pub serial: String,
    /// The certificate, PEM.
    pub pem: String,
    /// Validity, epoch ms.
    pub not_before: u64,
    pub not_after: u64,
    pub status: CertStatus,
    /// When it was revoked, epoch ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<u64>,
    /// Issued when and by whom (an API key id, the device itself when it rotated, or
    /// `provisioning:{template}` when fleet provisioning issued it).
    pub created_at: u64,
    pub created_by: String,
    /// For a claim certificate: the provisioning template it may call (and nothing else);
    /// its `thing` is then [`CertRecord::claim_owner`] of the template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
}

impl CertRecord {
    /// The owner under which a template's claim certificates are listed: no thing name can
    /// start with `$`, so they never mix with a thing's certificates.
    pub fn claim_owner(template: &str) -> String {
        format!("$claim:{template}")
    }
}

/// Certificates and their indexes.
#[derive(Clone, Debug)]
pub struct Certs {
    records: Subspace,
    by_thing: Subspace,
    denied: Subspace,
}

fn decode(bytes: &[u8]) -> Result<CertRecord, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::corrupt("certificate record", e))
}

impl Certs {
    pub(crate) fn new(records: Subspace, by_thing: Subspace, denied: Subspace) -> Self {
        Self {
            records,
            by_thing,
            denied,
        }
    }

    /// Writes a certificate (new, or with a new status) and its indexes.
    pub fn put(&self, tx: &mut impl Transaction, cert: &CertRecord) -> Result<(), StoreError> {
        let json = serde_json::to_vec(cert).unwrap_or_default();
        tx.set(&self.records.pack(&cert.id.as_str()), &json)?;
        tx.set(
            &self.by_thing.pack(&(cert.thing.as_str(), cert.id.as_str())),
            b"",
        )?;
        let denied = self.denied.pack(&cert.id.as_str());
        match cert.status {
            CertStatus::Active => tx.clear(&denied),
            CertStatus::Inactive | CertStatus::Revoked => tx.set(&denied, b""),
        }
    }

    /// A certificate by id.
    pub fn get(
        &self,
        tx: &mut impl Transaction,
        id: &str,
    ) -> Result<Option<CertRecord>, StoreError> {
        tx.get(&self.records.pack(&id))?
            .map(|bytes| decode(&bytes))
            .transpose()
    }

    /// A thing's certificates, by id.
    pub fn of_thing(
        &self,
        tx: &mut impl Transaction,
        thing: &str,
    ) -> Result<Vec<CertRecord>, StoreError> {
        let (begin, end) = self.by_thing.subspace(&thing).range();
        let ids: Vec<Vec<u8>> = tx
            .get_range(&KeyRange::new(begin, end), RangeOptions::default())?
            .into_iter()
            .map(|(key, _)| {
                let (_, id): (String, String) = self
                    .by_thing
                    .unpack(&key)
                    .map_err(|e| StoreError::corrupt("certificate index", e))?;
                Ok(self.records.pack(&id.as_str()))
            })
            .collect::<Result<_, StoreError>>()?;
        tx.get_many(&ids)?
            .into_iter()
            .flatten()
            .map(|bytes| decode(&bytes))
            .collect()
    }

    /// Certificates by id, those that exist, in the order asked.
    pub fn get_many(
        &self,
        tx: &mut impl Transaction,
        ids: &[String],
    ) -> Result<Vec<CertRecord>, StoreError> {
        let keys: Vec<Vec<u8>> = ids
            .iter()
            .map(|id| self.records.pack(&id.as_str()))
            .collect();
        tx.get_many(&keys)?
            .into_iter()
            .flatten()
            .map(|bytes| decode(&bytes))
            .collect()
    }

    /// Certificates in id order after `after` (exclusive), at most `limit`.
    pub fn page(
        &self,
        tx: &mut impl Transaction,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<CertRecord>, StoreError> {
        let (begin, end) = self.records.range();
        let begin = match after {
            Some(id) => crate::kv::key_after(self.records.pack(&id)),
            None => begin,
        };
        tx.get_range(&KeyRange::new(begin, end), RangeOptions::first(limit))?
            .into_iter()
            .map(|(_, value)| decode(&value))
            .collect()
    }

    /// The ids of every certificate that is not active.
    pub fn denied(&self, tx: &mut impl Transaction) -> Result<Vec<String>, StoreError> {
        let (begin, end) = self.denied.range();
        tx.get_range(&KeyRange::new(begin, end), RangeOptions::default())?
            .into_iter()
            .map(|(key, _)| {
                self.denied
                    .unpack::<String>(&key)
                    .map_err(|e| StoreError::corrupt("certificate deny list", e))
            })
            .collect()
    }
}
