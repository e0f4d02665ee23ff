//! The actors crate's error type.

use storage::StoreError;

/// Why a node operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A thing with this name is already registered.
    #[error("thing \"{0}\" already exists")]
    ThingExists(String),
    /// No thing with this name is registered.
    #[error("thing \"{0}\" not found")]
    ThingNotFound(String),
    /// A device type named by a request is not registered.
    #[error("device type \"{0}\" not found")]
    TypeNotFound(String),
    /// No certificate with this id belongs to the thing.
    #[error("certificate \"{0}\" not found")]
    CertificateNotFound(String),
    /// A revoked certificate cannot be made active or inactive again.
    #[error("certificate \"{0}\" is revoked, and stays revoked")]
    CertificateRevoked(String),
    /// No provisioning template with this name is stored.
    #[error("provisioning template \"{0}\" not found")]
    TemplateNotFound(String),
    /// No artifact with this name.
    #[error("artifact \"{0}\" not found")]
    ArtifactNotFound(String),
    /// More than a bound allows.
    #[error("{0}")]
    TooLarge(String),
    /// A job with this id exists.
    #[error("job \"{0}\" already exists")]
    JobExists(String),
    /// No job with this id.
    #[error("job \"{0}\" not found")]
    JobNotFound(String),
    /// No rule with this name is stored.
    #[error("rule \"{0}\" not found")]
    RuleNotFound(String),
    /// A rule's source does not check; the diagnostics say why.
    #[error("the rule does not check: {}", .0.first().map_or_else(String::new, |d| d.headline()))]
    RulesInvalid(Vec<rules_dsl::Diagnostic>),
    /// A request the node cannot carry out as asked.
    #[error("{0}")]
    InvalidRequest(String),
    /// The caller may not do this.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// A name or document was refused.
    #[error(transparent)]
    Invalid(#[from] twin_core::TwinError),
    /// The request was dropped before it completed: the node is stopping, or the change could
    /// not be stored.
    #[error("the request could not be completed")]
    Stopped,
    /// The twin did not answer within the node's request timeout.
    #[error("the twin did not answer within {0:?}")]
    Timeout(std::time::Duration),
    /// A network or broker failure.
    #[error("{0}")]
    Io(String),
}
