//! Devices with certificates (`--auth certificate`): each device makes its key and a CSR and
//! the node's API issues its certificate — the key never leaves the simulated device — and a
//! sample of the fleet provisions itself instead, as a factory-fresh device would: it connects
//! with a claim certificate of a provisioning template made for the run, creates its
//! certificate over MQTT (`$aws/certificates/create-from-csr/json`) and registers its thing
//! (`$aws/provisioning-templates/{t}/provision/json`).

use crate::{
    SimConfig, SimError,
    mqtt::{Connection, Incoming, Login, source_for},
};
use futures_util::{StreamExt, stream};
use rustls::{
    ClientConfig, RootCertStore,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject},
};
use serde_json::{Value, json};
use std::{sync::Arc, time::Duration};

/// Certificate requests (or provisioning exchanges) at once.
const CONCURRENCY: usize = 32;

/// What every TLS connection of the run shares: the CA of the node's server certificate and
/// the name the node's certificate carries.
#[derive(Clone)]
pub(crate) struct Trust {
    roots: Arc<RootCertStore>,
    server: ServerName<'static>,
}

impl Trust {
    /// From `--tls-ca` and `--tls-name`.
    pub(crate) fn load(config: &SimConfig) -> Result<Trust, SimError> {
        let bad = |m: String| SimError::Config(m);
        let path = config.tls_ca.as_ref().ok_or_else(|| {
            bad("--auth certificate needs --tls-ca (the CA of the node's TLS certificate)".into())
        })?;
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(path)
            .map_err(|e| bad(format!("--tls-ca {}: {e}", path.display())))?
        {
            let cert = cert.map_err(|e| bad(format!("--tls-ca {}: {e}", path.display())))?;
            roots
                .add(cert)
                .map_err(|e| bad(format!("--tls-ca {}: {e}", path.display())))?;
        }
        let server = ServerName::try_from(config.tls_name.clone())
            .map_err(|e| bad(format!("--tls-name {}: {e}", config.tls_name)))?;
        Ok(Trust {
            roots: Arc::new(roots),
            server,
        })
    }

    /// A client of the node with no certificate of its own (an app: the WebSocket).
    pub(crate) fn client(&self) -> Result<Arc<ClientConfig>, SimError> {
        let tls = ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| SimError::Config(e.to_string()))?
        .with_root_certificates(self.roots.clone())
        .with_no_client_auth();
        Ok(Arc::new(tls))
    }

    /// The login of a device holding `cert` and `key` (PEM).
    fn login(&self, cert: &str, key: &str) -> Result<Login, SimError> {
        let bad = |e: String| SimError::Api(format!("an issued certificate does not load: {e}"));
        let chain =
            vec![CertificateDer::from_pem_slice(cert.as_bytes()).map_err(|e| bad(e.to_string()))?];
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| bad(e.to_string()))?;
        let tls = ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(self.roots.clone())
        .with_client_auth_cert(chain, key)
        .map_err(|e| bad(e.to_string()))?;
        Ok(Login::Certificate {
            tls: Arc::new(tls),
            server: self.server.clone(),
        })
    }
}

/// A new key and a certificate signing request for it (PEM).
fn key_and_csr(name: &str) -> Result<(String, String), SimError> {
    let fail = |e: rcgen::Error| SimError::Config(format!("making a device key: {e}"));
    let key = rcgen::KeyPair::generate().map_err(fail)?;
    let csr = rcgen::CertificateParams::new(vec![name.to_owned()])
        .map_err(fail)?
        .serialize_request(&key)
        .map_err(fail)?
        .pem()
        .map_err(fail)?;
    Ok((key.serialize_pem(), csr))
}

async fn api(
    http: &reqwest::Client,
    config: &SimConfig,
    method: reqwest::Method,
    path: &str,
    body: Value,
) -> Result<Value, SimError> {
    let response = http
        .request(method, format!("{}{path}", config.api))
        .bearer_auth(&config.token)
        .json(&body)
        .send()
        .await?;
    let status = response.status();
    let answer: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let message = answer["message"].as_str().unwrap_or("no message");
        return Err(SimError::Api(format!(
            "{path} answered {status}: {message}"
        )));
    }
    Ok(answer)
}

/// Issues every named device a certificate from its own CSR; their logins, in order.
pub(crate) async fn certify(
    http: &reqwest::Client,
    config: &SimConfig,
    trust: &Trust,
    names: &[String],
) -> Result<Vec<Login>, SimError> {
    stream::iter(names)
        .map(|name| async move {
            let (key, csr) = key_and_csr(name)?;
            let path = format!("/v1/things/{name}/certificates");
            let issued = api(
                http,
                config,
                reqwest::Method::POST,
                &path,
                json!({ "csr": csr }),
            )
            .await?;
            let cert = issued["certificate"].as_str().unwrap_or_default();
            trust.login(cert, &key)
        })
        .buffered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// Provisions devices `first..config.devices` through a template made for the run, each over
/// its own claim session; their logins, in order. Device `i` becomes `{prefix}-{i}`.
pub(crate) async fn provision(
    http: &reqwest::Client,
    config: &SimConfig,
    trust: &Trust,
    first: usize,
) -> Result<Vec<Login>, SimError> {
    let template = format!("{}-provisioning", config.prefix);
    let mut body = json!({ "thing_name": format!("{}-{{Index}}", config.prefix) });
    if let Some(t) = &config.device_type {
        body["type"] = json!(t);
    }
    let path = format!("/v1/provisioning-templates/{template}");
    api(http, config, reqwest::Method::PUT, &path, body).await?;
    let (claim_key, claim_csr) = key_and_csr("claim")?;
    let claim = api(
        http,
        config,
        reqwest::Method::POST,
        &format!("{path}/claim-certificates"),
        json!({ "csr": claim_csr }),
    )
    .await?;
    let claim = trust.login(
        claim["certificate"].as_str().unwrap_or_default(),
        &claim_key,
    )?;
    let (template, claim) = (&template, &claim);
    stream::iter(first..config.devices)
        .map(|i| async move {
            let session = async {
                let server = config.endpoint(i, 0);
                let client_id = format!("{}-claim-{i}", config.prefix);
                let mut c =
                    Connection::open(server, source_for(server, i), &client_id, claim, KEEP_ALIVE)
                        .await?;
                c.subscribe("$aws/certificates/create-from-csr/json/+")?;
                c.subscribe(&format!(
                    "$aws/provisioning-templates/{template}/provision/json/+"
                ))?;
                let (key, csr) = key_and_csr(&format!("{}-{i}", config.prefix))?;
                c.publish(
                    "$aws/certificates/create-from-csr/json",
                    json!({ "certificateSigningRequest": csr })
                        .to_string()
                        .into_bytes(),
                    0,
                )?;
                c.flush().await?;
                let created = answer(&mut c, "$aws/certificates/create-from-csr/json").await?;
                c.publish(
                    &format!("$aws/provisioning-templates/{template}/provision/json"),
                    json!({
                        "certificateOwnershipToken": created["certificateOwnershipToken"],
                        "parameters": { "Index": i.to_string() },
                    })
                    .to_string()
                    .into_bytes(),
                    0,
                )?;
                c.flush().await?;
                answer(
                    &mut c,
                    &format!("$aws/provisioning-templates/{template}/provision/json"),
                )
                .await?;
                c.close().await;
                trust.login(created["certificatePem"].as_str().unwrap_or_default(), &key)
            };
            tokio::time::timeout(Duration::from_secs(30), session)
                .await
                .map_err(|_| SimError::Mqtt(format!("provisioning device {i} took over 30 s")))?
        })
        .buffered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

const KEEP_ALIVE: Duration = Duration::from_secs(60);

/// The answer to a request on `topic`: `…/accepted`'s body, or an error with `…/rejected`'s.
async fn answer(connection: &mut Connection, topic: &str) -> Result<Value, SimError> {
    loop {
        if let Incoming::Message(on, body) = connection.next().await? {
            let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            if on == format!("{topic}/accepted") {
                return Ok(body);
            }
            if on == format!("{topic}/rejected") {
                return Err(SimError::Mqtt(format!("{topic} was rejected: {body}")));
            }
        }
        connection.flush().await?;
    }
}
