//! The deployment's certificate authority and the device certificates it issues (rcgen), and
//! the TLS client verifier of the MQTT endpoint: a certificate must chain to the CA (rustls'
//! WebPKI verifier) and must not be inactive or revoked — checked against a deny set kept in
//! memory and in the store, so a revocation refuses the very next handshake.

use crate::error::NodeError;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::{
    DigitallySignedStruct, DistinguishedName as TlsName, RootCertStore, SignatureScheme,
    client::danger::HandshakeSignatureValid,
    server::{
        WebPkiClientVerifier,
        danger::{ClientCertVerified, ClientCertVerifier},
    },
};
use rustls_pki_types::{CertificateDer, UnixTime};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::{
    collections::HashSet,
    sync::{Arc, RwLock},
    time::Duration,
};
pub use storage::{CertRecord, CertStatus};

/// A CA: its certificate (PEM; for an intermediate, the chain from it up to the root, the
/// issuing certificate first) and its private key (PEM). Kept in the store (`meta` record
/// `ca`) when the deployment made it, or read from the operator's files.
#[derive(Serialize, Deserialize)]
pub struct StoredCa {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for StoredCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredCa").finish_non_exhaustive()
    }
}

/// Whom a certificate is issued to.
#[derive(Clone, Copy, Debug)]
pub enum Subject<'a> {
    /// A registered thing: its name is the CN and the SAN.
    Thing(&'a str),
    /// Devices of a provisioning template, before they have a thing (a claim certificate).
    Claim(&'a str),
    /// A device being provisioned: the template names its thing only after the certificate was
    /// handed out, so the registry record (never the CN) binds it to its thing.
    Provisioned,
}

/// Default validity of a device certificate.
pub const DEFAULT_VALIDITY: Duration = Duration::from_secs(180 * 24 * 3600);

/// The certificate authority of a deployment.
pub struct Pki {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    /// Certificates refused at the handshake (inactive or revoked), by id.
    denied: RwLock<HashSet<String>>,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki").finish_non_exhaustive()
    }
}

fn pki_error(what: &str, error: impl std::fmt::Display) -> NodeError {
    NodeError::Io(format!("{what}: {error}"))
}

/// The id of a certificate: the SHA-256 of its DER, hex (as AWS IoT names certificates).
pub fn certificate_id(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

fn offset(ms: u64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp((ms / 1000) as i64)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

impl Pki {
    /// A new CA: an ECDSA P-256 key and a self-signed certificate valid for 20 years.
    pub(crate) fn generate(now: u64) -> Result<StoredCa, NodeError> {
        let key = KeyPair::generate().map_err(|e| pki_error("generating the CA key", e))?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, "doppel device CA");
        name.push(DnType::OrganizationName, "doppel");
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = offset(now.saturating_sub(3_600_000));
        params.not_after = offset(now + 20 * 365 * 24 * 3_600_000);
        params.serial_number = Some(SerialNumber::from(rand::random::<u64>()));
        let cert = params
            .self_signed(&key)
            .map_err(|e| pki_error("signing the CA certificate", e))?;
        Ok(StoredCa {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// The CA from its stored form (the first certificate of `cert_pem` issues); `denied` are
    /// the certificates not active.
    pub(crate) fn load(stored: &StoredCa, denied: Vec<String>) -> Result<Pki, NodeError> {
        let key = KeyPair::from_pem(&stored.key_pem).map_err(|e| pki_error("the CA key", e))?;
        let issuer = Issuer::from_ca_cert_pem(&stored.cert_pem, key)
            .map_err(|e| pki_error("the CA certificate", e))?;
        use rustls_pki_types::pem::PemObject;
        let cert_der = CertificateDer::from_pem_slice(stored.cert_pem.as_bytes())
            .map_err(|e| pki_error("the CA certificate", e))?
            .into_owned();
        Ok(Pki {
            cert_pem: stored.cert_pem.clone(),
            cert_der,
            issuer,
            denied: RwLock::new(denied.into_iter().collect()),
        })
    }

    /// The CA certificate (or chain), PEM.
    pub fn certificate_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Issues a certificate: from a CSR (PEM; the key never leaves the device), or with a new
    /// key (returned PEM, shown once). The subject decides CN and SAN whatever the CSR asked
    /// for.
    pub fn issue(
        &self,
        subject: Subject<'_>,
        csr: Option<&str>,
        validity: Duration,
        now: u64,
        actor: &str,
    ) -> Result<(CertRecord, Option<String>), NodeError> {
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        let (common_name, owner, template) = match subject {
            Subject::Thing(thing) => {
                params.subject_alt_names =
                    vec![SanType::DnsName(thing.try_into().map_err(|_| {
                        NodeError::InvalidRequest(format!("{thing:?} is not a SAN name"))
                    })?)];
                (thing.to_owned(), thing.to_owned(), None)
            }
            Subject::Claim(template) => (
                format!("provisioning claim {template}"),
                CertRecord::claim_owner(template),
                Some(template.to_owned()),
            ),
            Subject::Provisioned => ("provisioned device".to_owned(), String::new(), None),
        };
        name.push(DnType::CommonName, common_name);
        params.distinguished_name = name;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let not_before = now.saturating_sub(60_000);
        let not_after = now + validity.as_millis() as u64;
        params.not_before = offset(not_before);
        params.not_after = offset(not_after);
        let serial: [u8; 16] = rand::random();
        let mut serial = serial.to_vec();
        serial[0] &= 0x7f; // positive
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        let (cert, key) = match csr {
            Some(pem) => {
                let request = CertificateSigningRequestParams::from_pem(pem).map_err(|e| {
                    NodeError::InvalidRequest(format!("the CSR does not parse or verify: {e}"))
                })?;
                let cert = params
                    .signed_by(&request.public_key, &self.issuer)
                    .map_err(|e| pki_error("signing a certificate", e))?;
                (cert, None)
            }
            None => {
                let key =
                    KeyPair::generate().map_err(|e| pki_error("generating a device key", e))?;
                let cert = params
                    .signed_by(&key, &self.issuer)
                    .map_err(|e| pki_error("signing a certificate", e))?;
                (cert, Some(key.serialize_pem()))
            }
        };
        let record = CertRecord {
            id: certificate_id(cert.der()),
            thing: owner,
            serial: hex::encode(&serial),
            pem: cert.pem(),
            not_before,
            not_after,
            status: CertStatus::Active,
            revoked_at: None,
            created_at: now,
            created_by: actor.to_owned(),
            template,
        };
        Ok((record, key))
    }

    /// The certificate revocation list (PEM) naming `revoked`, valid for a day.
    pub fn crl(&self, revoked: &[CertRecord], now: u64) -> Result<String, NodeError> {
        let revoked_certs = revoked
            .iter()
            .filter_map(|cert| {
                Some(rcgen::RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&hex::decode(&cert.serial).ok()?),
                    revocation_time: offset(cert.revoked_at.unwrap_or(now)),
                    reason_code: None,
                    invalidity_date: None,
                })
            })
            .collect();
        let params = rcgen::CertificateRevocationListParams {
            this_update: offset(now),
            next_update: offset(now + 24 * 3_600_000),
            crl_number: SerialNumber::from(now),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        params
            .signed_by(&self.issuer)
            .and_then(|crl| crl.pem())
            .map_err(|e| pki_error("signing the CRL", e))
    }

    /// Records a certificate's status for the handshake check.
    pub fn set_status(&self, id: &str, status: CertStatus) {
        if let Ok(mut denied) = self.denied.write() {
            match status {
                CertStatus::Active => {
                    denied.remove(id);
                }
                CertStatus::Inactive | CertStatus::Revoked => {
                    denied.insert(id.to_owned());
                }
            }
        }
    }

    /// Replaces the deny set (reloaded from the store).
    pub fn set_denied(&self, ids: Vec<String>) {
        if let Ok(mut denied) = self.denied.write() {
            *denied = ids.into_iter().collect();
        }
    }

    fn is_denied(&self, der: &[u8]) -> bool {
        self.denied
            .read()
            .map_or(true, |denied| denied.contains(&certificate_id(der)))
    }

    /// The client verifier of a TLS listener: certificates of this CA that are not denied;
    /// `mandatory`: a client without one is refused at the handshake (certificates only).
    pub fn client_verifier(
        self: &Arc<Self>,
        mandatory: bool,
    ) -> Result<Arc<dyn ClientCertVerifier>, NodeError> {
        let mut roots = RootCertStore::empty();
        roots
            .add(self.cert_der.clone())
            .map_err(|e| pki_error("the CA certificate", e))?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
        let builder = if mandatory {
            builder
        } else {
            builder.allow_unauthenticated()
        };
        let inner = builder
            .build()
            .map_err(|e| pki_error("the client verifier", e))?;
        Ok(Arc::new(DeviceVerifier {
            inner,
            pki: self.clone(),
        }))
    }
}

/// WebPKI verification against the CA, then the deny set.
#[derive(Debug)]
struct DeviceVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    pki: Arc<Pki>,
}

impl ClientCertVerifier for DeviceVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[TlsName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        if self.pki.is_denied(end_entity) {
            metrics::counter!("doppel_tls_refused_total", "reason" => "revoked").increment(1);
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Revoked,
            ));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificates_carry_the_thing_and_chain_to_the_ca() {
        let ca = Pki::load(&Pki::generate(1_700_000_000_000).unwrap(), Vec::new()).unwrap();
        let (record, key) = ca
            .issue(
                Subject::Thing("pump-7"),
                None,
                DEFAULT_VALIDITY,
                1_700_000_000_000,
                "admin",
            )
            .unwrap();
        assert!(key.unwrap().contains("PRIVATE KEY"));
        assert_eq!(record.thing, "pump-7");
        assert_eq!(record.status, CertStatus::Active);
        assert_eq!(record.id.len(), 64);
        assert_eq!(
            record.not_after - record.not_before,
            DEFAULT_VALIDITY.as_millis() as u64 + 60_000
        );
        // From a CSR: the device's key, the thing's name whatever the CSR asked for.
        let device_key = KeyPair::generate().unwrap();
        let csr = CertificateParams::new(vec!["someone-else".to_owned()])
            .unwrap()
            .serialize_request(&device_key)
            .unwrap()
            .pem()
            .unwrap();
        let (record, key) = ca
            .issue(
                Subject::Thing("pump-7"),
                Some(&csr),
                DEFAULT_VALIDITY,
                1_700_000_000_000,
                "admin",
            )
            .unwrap();
        assert!(key.is_none());
        assert!(record.pem.contains("BEGIN CERTIFICATE"));
        assert!(
            ca.issue(
                Subject::Thing("pump-7"),
                Some("garbage"),
                DEFAULT_VALIDITY,
                0,
                "a"
            )
            .is_err()
        );
    }
}
