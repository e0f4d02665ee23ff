//! A server certificate for `localhost` made for a test, written where the node can read it.

use std::path::Path;

/// A server certificate and its key, as PEM and as files.
#[derive(Debug, Clone)]
pub struct ServerCert {
    /// The certificate, PEM (what clients trust).
    pub pem: String,
    /// Where the certificate and the key were written.
    pub cert_path: String,
    pub key_path: String,
}

impl ServerCert {
    /// Options of a node serving HTTPS and MQTT over TLS with it, whose helpers trust it.
    pub fn options(&self) -> crate::node::Options {
        crate::node::Options {
            args: self.serve_args(),
            trust: Some(self.pem.clone()),
            ..crate::node::Options::default()
        }
    }

    /// `doppel serve` flags serving HTTPS and MQTT over TLS (on an ephemeral port) with it.
    pub fn serve_args(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.cert_path.clone(),
            "--tls-key".into(),
            self.key_path.clone(),
            "--mqtt-tls-listen".into(),
            "127.0.0.1:0".into(),
        ]
    }
}

/// Makes a self-signed certificate for `localhost` and writes it and its key into `dir`.
pub fn server_certificate(dir: &Path) -> ServerCert {
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert_path, key_path) = (dir.join("server.pem"), dir.join("server.key"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, signing_key.serialize_pem()).unwrap();
    ServerCert {
        pem: cert.pem(),
        cert_path: cert_path.display().to_string(),
        key_path: key_path.display().to_string(),
    }
}
