//! Zero-touch fleet provisioning (AWS IoT's Fleet Provisioning by claim): templates kept in the
//! registry, claim certificates issued for one template, and turning a device's request —
//! its new certificate's ownership token and its parameters — into a registered thing owning
//! that certificate. The MQTT side (topics, payloads) is in `mqtt::endpoint`.

use crate::{
    directory::{Directory, MAX_CERTIFICATES, hash_token, new_token},
    error::NodeError,
    pki::Subject,
};
use serde_json::json;
use std::{collections::BTreeMap, time::Duration};
pub use storage::ProvisioningTemplate;
use storage::{AuditEntry, CertRecord, CertStatus, Store, ThingRecord};
use twin_core::{ThingName, TypeName};

/// Most parameters a request may carry, and the longest value.
pub const MAX_PARAMETERS: usize = 32;
pub const MAX_PARAMETER_VALUE: usize = 256;
/// Most values a template's allow-lists hold in all.
pub const MAX_ALLOWED_VALUES: usize = 100_000;

/// Why a provisioning request was refused, with AWS's `statusCode` and `errorCode`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProvisionError {
    /// The payload is not what the API takes.
    #[error("{0}")]
    InvalidPayload(String),
    /// The ownership token names no certificate this session created.
    #[error("the certificate ownership token is unknown or was used already")]
    InvalidToken,
    /// A parameter is missing or has a value the template cannot use.
    #[error("{0}")]
    InvalidParameters(String),
    /// The template refuses the device (allow-list), is disabled, or the claim certificate is
    /// no longer active.
    #[error("{0}")]
    Denied(String),
    /// No such template.
    #[error("provisioning template \"{0}\" not found")]
    TemplateNotFound(String),
    /// The thing already holds as many certificates as it may.
    #[error("{0}")]
    LimitExceeded(String),
    /// The registry could not be reached.
    #[error("the registry is unavailable; try again")]
    Unavailable,
    /// The session made too many requests.
    #[error("this claim session made too many requests; connect again")]
    Throttled,
}

impl ProvisionError {
    /// AWS's `statusCode` and `errorCode` for it.
    pub fn codes(&self) -> (u16, &'static str) {
        match self {
            ProvisionError::InvalidPayload(_) => (400, "InvalidPayload"),
            ProvisionError::InvalidToken => (400, "InvalidCertificateOwnershipToken"),
            ProvisionError::InvalidParameters(_) => (400, "InvalidParameters"),
            ProvisionError::Denied(_) => (403, "AccessDenied"),
            ProvisionError::TemplateNotFound(_) => (404, "ResourceNotFound"),
            ProvisionError::LimitExceeded(_) => (400, "LimitExceeded"),
            ProvisionError::Unavailable => (503, "ServiceUnavailable"),
            ProvisionError::Throttled => (429, "Throttled"),
        }
    }
}

/// Replaces every `{Name}` of `pattern` with the parameter `Name`.
pub fn render(
    pattern: &str,
    parameters: &BTreeMap<String, String>,
) -> Result<String, ProvisionError> {
    let mut out = String::with_capacity(pattern.len());
    let mut rest = pattern;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let Some(close) = rest[open..].find('}') else {
            return Err(ProvisionError::InvalidParameters(format!(
                "the template has an unclosed '{{' in {pattern:?}"
            )));
        };
        let name = &rest[open + 1..open + close];
        let value = parameters.get(name).ok_or_else(|| {
            ProvisionError::InvalidParameters(format!("parameter {name:?} is missing"))
        })?;
        out.push_str(value);
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The parameters a pattern refers to.
fn placeholders(pattern: &str) -> Result<Vec<&str>, String> {
    let mut names = Vec::new();
    let mut rest = pattern;
    while let Some(open) = rest.find('{') {
        let close = rest[open..]
            .find('}')
            .ok_or_else(|| format!("unclosed '{{' in {pattern:?}"))?;
        let name = &rest[open + 1..open + close];
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(format!(
                "{{{name}}} in {pattern:?} is not a parameter name (letters, digits, _)"
            ));
        }
        names.push(name);
        rest = &rest[open + close + 1..];
    }
    if rest.contains('}') {
        return Err(format!("unmatched '}}' in {pattern:?}"));
    }
    Ok(names)
}

/// Checks a template before it is stored.
pub fn check_template(template: &ProvisioningTemplate) -> Result<(), NodeError> {
    let invalid = |why: String| NodeError::InvalidRequest(why);
    ThingName::new(&template.name).map_err(|_| {
        invalid(format!(
            "{:?} is not a template name (a-z A-Z 0-9 : _ -, at most 128)",
            template.name
        ))
    })?;
    let used = placeholders(&template.thing_name).map_err(invalid)?;
    // Every parameter the name uses stands for a value of at least one character: a name
    // rendered with "x" for each must be a thing name.
    let sample: BTreeMap<String, String> = used
        .iter()
        .map(|n| ((*n).to_owned(), "x".to_owned()))
        .collect();
    let rendered = render(&template.thing_name, &sample).map_err(|e| invalid(e.to_string()))?;
    ThingName::new(&rendered).map_err(|_| {
        invalid(format!(
            "thing_name {:?} does not make a thing name",
            template.thing_name
        ))
    })?;
    for (key, value) in &template.attributes {
        placeholders(value).map_err(invalid)?;
        if key.is_empty() || key.len() > 128 {
            return Err(invalid(format!(
                "attribute name {key:?} is empty or too long"
            )));
        }
    }
    let allowed: usize = template.allow.values().map(Vec::len).sum();
    if allowed > MAX_ALLOWED_VALUES {
        return Err(invalid(format!(
            "the allow-lists hold {allowed} values; at most {MAX_ALLOWED_VALUES}"
        )));
    }
    if !(1..=3650).contains(&template.validity_days) {
        return Err(invalid(
            "validity_days must be between 1 and 3650".to_owned(),
        ));
    }
    Ok(())
}

/// What a provisioned device learns: its thing name and the template's device configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provisioned {
    pub thing: ThingName,
    pub device_type: Option<TypeName>,
    pub device_configuration: BTreeMap<String, String>,
    /// Whether the thing was registered now (else it existed and got the certificate).
    pub registered: bool,
}

impl Directory {
    /// Writes a provisioning template (admin); `true` when it is new.
    pub fn put_template(
        &self,
        template: ProvisioningTemplate,
        actor: &str,
        now: u64,
    ) -> Result<bool, NodeError> {
        check_template(&template)?;
        if let Some(t) = &template.device_type
            && self.device_type(t).is_none()
        {
            return Err(NodeError::TypeNotFound(t.to_string()));
        }
        let template = ProvisioningTemplate {
            updated_at: now,
            updated_by: actor.to_owned(),
            ..template
        };
        Ok(self.store().transact(|tx| {
            let created = self.repos().templates.get(tx, &template.name)?.is_none();
            self.repos().templates.put(tx, &template)?;
            self.repos().audit.append(
                tx,
                &AuditEntry::new(actor, "template.put", &template.name, None, None, None, now),
            )?;
            Ok(created)
        })?)
    }

    /// Every provisioning template, by name.
    pub fn templates(&self) -> Result<Vec<ProvisioningTemplate>, NodeError> {
        Ok(self
            .store()
            .transact(|tx| self.repos().templates.list(tx, None, usize::MAX))?)
    }

    /// A provisioning template.
    pub fn template(&self, name: &str) -> Result<ProvisioningTemplate, NodeError> {
        self.store()
            .transact(|tx| self.repos().templates.get(tx, name))?
            .ok_or_else(|| NodeError::TemplateNotFound(name.to_owned()))
    }

    /// Deletes a template and revokes its claim certificates (they could provision nothing
    /// any more); returns the ids revoked.
    pub fn delete_template(
        &self,
        name: &str,
        actor: &str,
        now: u64,
    ) -> Result<Vec<String>, NodeError> {
        let owner = CertRecord::claim_owner(name);
        let revoked = self.store().transact(|tx| {
            if !self.repos().templates.delete(tx, name)? {
                return Ok(None);
            }
            let mut revoked = Vec::new();
            for mut cert in self.repos().certs.of_thing(tx, &owner)? {
                if cert.status != CertStatus::Revoked {
                    cert.status = CertStatus::Revoked;
                    cert.revoked_at = Some(now);
                    self.repos().certs.put(tx, &cert)?;
                    revoked.push(cert.id);
                }
            }
            self.repos().audit.append(
                tx,
                &AuditEntry::new(
                    actor,
                    "template.delete",
                    name,
                    None,
                    None,
                    Some(json!({ "revoked": revoked })),
                    now,
                ),
            )?;
            Ok(Some(revoked))
        })?;
        let revoked = revoked.ok_or_else(|| NodeError::TemplateNotFound(name.to_owned()))?;
        for id in &revoked {
            self.pki().set_status(id, CertStatus::Revoked);
        }
        self.changed();
        Ok(revoked)
    }

    /// Issues a claim certificate for a template (admin): devices holding it may only create
    /// a certificate of their own and provision themselves with this template.
    pub fn issue_claim_certificate(
        &self,
        template: &str,
        csr: Option<&str>,
        validity: Duration,
        actor: &str,
        now: u64,
    ) -> Result<(CertRecord, Option<String>), NodeError> {
        self.template(template)?;
        let (record, key) =
            self.pki()
                .issue(Subject::Claim(template), csr, validity, now, actor)?;
        self.store().transact(|tx| {
            self.repos().certs.put(tx, &record)?;
            self.repos().audit.append(
                tx,
                &AuditEntry::new(
                    actor,
                    "cert.create",
                    &record.thing,
                    None,
                    None,
                    Some(json!({ "id": record.id, "expires": record.not_after, "template": template })),
                    now,
                ),
            )
        })?;
        Ok((record, key))
    }

    /// A template's claim certificates.
    pub fn claim_certificates(&self, template: &str) -> Result<Vec<CertRecord>, NodeError> {
        let owner = CertRecord::claim_owner(template);
        Ok(self
            .store()
            .transact(|tx| self.repos().certs.of_thing(tx, &owner))?)
    }

    /// A certificate for a device being provisioned, handed to it before it has a thing; it
    /// is stored (and can authenticate) only once [`Directory::provision`] binds it.
    pub fn provisional_certificate(
        &self,
        template: &str,
        csr: Option<&str>,
        now: u64,
    ) -> Result<(CertRecord, Option<String>), NodeError> {
        let validity = self.template(template)?.validity_days;
        self.pki().issue(
            Subject::Provisioned,
            csr,
            Duration::from_secs(u64::from(validity) * 86_400),
            now,
            &format!("provisioning:{template}"),
        )
    }

    /// Provisions a device: the template turns its parameters into a thing (registered now, or
    /// existing), which gets `certificate` (made by [`Directory::provisional_certificate`]) as
    /// an active certificate — all in one transaction, audited. `claim` is the id of the claim
    /// certificate the device connected with: it must still be active.
    pub fn provision(
        &self,
        template_name: &str,
        claim: &str,
        mut certificate: CertRecord,
        parameters: &BTreeMap<String, String>,
        now: u64,
    ) -> Result<Provisioned, ProvisionError> {
        if parameters.len() > MAX_PARAMETERS {
            return Err(ProvisionError::InvalidParameters(format!(
                "at most {MAX_PARAMETERS} parameters"
            )));
        }
        if let Some((name, _)) = parameters
            .iter()
            .find(|(_, v)| v.is_empty() || v.len() > MAX_PARAMETER_VALUE)
        {
            return Err(ProvisionError::InvalidParameters(format!(
                "parameter {name:?} must have 1 to {MAX_PARAMETER_VALUE} bytes"
            )));
        }
        let unavailable = |_| ProvisionError::Unavailable;
        let template = match self.template(template_name) {
            Ok(t) => t,
            Err(NodeError::TemplateNotFound(name)) => {
                return Err(ProvisionError::TemplateNotFound(name));
            }
            Err(_) => return Err(ProvisionError::Unavailable),
        };
        if !template.enabled {
            return Err(ProvisionError::Denied(format!(
                "provisioning template {template_name:?} is disabled"
            )));
        }
        for (parameter, allowed) in &template.allow {
            let value = parameters.get(parameter).ok_or_else(|| {
                ProvisionError::InvalidParameters(format!("parameter {parameter:?} is missing"))
            })?;
            if !allowed.contains(value) {
                return Err(ProvisionError::Denied(format!(
                    "{parameter} {value:?} is not allowed by template {template_name:?}"
                )));
            }
        }
        let rendered = render(&template.thing_name, parameters)?;
        let thing = ThingName::new(&rendered).map_err(|_| {
            ProvisionError::InvalidParameters(format!(
                "the parameters make {rendered:?}, which is not a thing name (a-z A-Z 0-9 : _ -)"
            ))
        })?;
        let attributes = template
            .attributes
            .iter()
            .map(|(k, v)| Ok((k.clone(), render(v, parameters)?)))
            .collect::<Result<BTreeMap<_, _>, ProvisionError>>()?;
        let device_type: Option<TypeName> = template.device_type.clone();
        let actor = format!("provisioning:{template_name}");
        certificate.thing = thing.to_string();
        certificate.template = None;
        certificate.status = CertStatus::Active;
        let repos = self.repos();
        let outcome = self
            .store()
            .transact(|tx| {
                match repos.certs.get(tx, claim)? {
                    Some(c) if c.status == CertStatus::Active && c.not_after > now => {}
                    _ => {
                        return Ok(Err(ProvisionError::Denied(
                            "the claim certificate is no longer active".to_owned(),
                        )));
                    }
                }
                let registered = match repos.things.get(tx, thing.as_str())? {
                    Some(existing) if existing.device_type != device_type => {
                        return Ok(Err(ProvisionError::Denied(format!(
                            "thing {thing} exists with another device type"
                        ))));
                    }
                    Some(_) => false,
                    None => {
                        let record = ThingRecord {
                            name: thing.clone(),
                            device_type: device_type.clone(),
                            attributes: attributes.clone(),
                            // The device authenticates with its certificate; no one learns
                            // this token.
                            token_hash: hash_token(&new_token()),
                            created_at: now,
                        };
                        repos.things.put(tx, &record)?;
                        true
                    }
                };
                let held = repos
                    .certs
                    .of_thing(tx, thing.as_str())?
                    .iter()
                    .filter(|c| c.status != CertStatus::Revoked)
                    .count();
                if held >= MAX_CERTIFICATES {
                    return Ok(Err(ProvisionError::LimitExceeded(format!(
                        "thing {thing} already has {MAX_CERTIFICATES} certificates that are not revoked"
                    ))));
                }
                repos.certs.put(tx, &certificate)?;
                repos.audit.append(
                    tx,
                    &AuditEntry::new(
                        &actor,
                        "thing.provision",
                        thing.as_str(),
                        None,
                        None,
                        Some(json!({
                            "certificate": certificate.id,
                            "claim": claim,
                            "registered": registered,
                        })),
                        now,
                    ),
                )?;
                Ok(Ok(registered))
            })
            .map_err(unavailable)??;
        Ok(Provisioned {
            thing,
            device_type,
            device_configuration: template.device_configuration,
            registered: outcome,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn template(thing_name: &str) -> ProvisioningTemplate {
        ProvisioningTemplate {
            name: "factory".into(),
            thing_name: thing_name.into(),
            device_type: None,
            attributes: BTreeMap::new(),
            allow: BTreeMap::new(),
            device_configuration: BTreeMap::new(),
            validity_days: 180,
            enabled: true,
            updated_at: 0,
            updated_by: String::new(),
        }
    }

    #[test]
    fn parameters_fill_the_pattern() {
        let p = params(&[("SerialNumber", "A1"), ("Site", "north")]);
        assert_eq!(render("sensor-{SerialNumber}", &p).unwrap(), "sensor-A1");
        assert_eq!(render("{Site}:{SerialNumber}", &p).unwrap(), "north:A1");
        assert_eq!(render("plain", &p).unwrap(), "plain");
        assert!(matches!(
            render("x-{Missing}", &p),
            Err(ProvisionError::InvalidParameters(_))
        ));
    }

    #[test]
    fn templates_are_checked_before_they_are_stored() {
        assert!(check_template(&template("sensor-{SerialNumber}")).is_ok());
        for bad in [
            "sensor-{",
            "sensor-{}",
            "sensor-{a b}",
            "sensor}",
            "a/{S}",
            "",
        ] {
            assert!(check_template(&template(bad)).is_err(), "{bad:?} passed");
        }
        let mut wrong = template("s-{S}");
        wrong.validity_days = 0;
        assert!(check_template(&wrong).is_err());
        let mut wrong = template("s-{S}");
        wrong.name = "no/slash".into();
        assert!(check_template(&wrong).is_err());
    }
}
