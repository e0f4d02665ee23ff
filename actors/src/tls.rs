//! TLS for the node's listeners (MQTT endpoint, HTTP): rustls, TLS 1.3 only, from PEM files.

use crate::error::NodeError;
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use std::{path::Path, sync::Arc};

/// A TLS server configuration from a PEM certificate chain and a PEM private key.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, NodeError> {
    server_config_with(cert, key, None)
}

/// The same, asking clients for certificates checked by `clients` (the device CA's verifier).
pub fn server_config_with(
    cert: &Path,
    key: &Path,
    clients: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
) -> Result<Arc<ServerConfig>, NodeError> {
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|c| c.collect::<Result<Vec<_>, _>>())
        .map_err(|e| NodeError::Io(format!("reading certificates from {}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(NodeError::Io(format!(
            "no certificate in {}",
            cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        NodeError::Io(format!(
            "reading the private key from {}: {e}",
            key.display()
        ))
    })?;
    // The provider is named rather than taken from the process default, which rustls cannot
    // pick when more than one provider is compiled in.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| NodeError::Io(format!("TLS configuration: {e}")))?;
    let builder = match clients {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(certs, key)
        .map_err(|e| NodeError::Io(format!("TLS configuration: {e}")))?;
    Ok(Arc::new(config))
}
