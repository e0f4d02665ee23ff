//! Registering the fleet through the node's HTTP API, 10,000 things per bulk request: devices
//! (with their device type, and in gateway mode the `gateway` attribute naming their gateway)
//! and gateways. Device tokens are kept only where a device connects itself.

use crate::{Mode, SimConfig, SimError, mqtt::Login};
use indicatif::ProgressBar;
use serde_json::{Value, json};

/// The most things one bulk request registers.
const BULK: usize = 10_000;

/// A registered thing that connects over MQTT: its name and token.
#[derive(Debug, Clone)]
pub(crate) struct Credentials {
    pub name: String,
    pub token: String,
}

/// The registered fleet.
#[derive(Debug)]
pub(crate) struct Fleet {
    /// Device names, by index.
    pub devices: Vec<String>,
    /// Per device, how it logs in (direct mode only).
    pub logins: Vec<Login>,
    /// Gateways (gateway mode only); device `i` belongs to gateway `i % gateways`.
    pub gateways: Vec<Credentials>,
}

/// Registers the fleet; `bar` advances by one per registered thing.
pub(crate) async fn register(
    http: &reqwest::Client,
    config: &SimConfig,
    bar: &ProgressBar,
) -> Result<Fleet, SimError> {
    let gateways = if config.mode == Mode::Gateway {
        let names: Vec<String> = (0..config.gateways)
            .map(|g| format!("{}-gw-{g}", config.prefix))
            .collect();
        let specs = names.iter().map(|n| json!({ "name": n })).collect();
        let tokens = bulk(http, config, specs).await?;
        names
            .into_iter()
            .zip(tokens)
            .map(|(name, token)| Credentials { name, token })
            .collect()
    } else {
        Vec::new()
    };
    let mut devices = Vec::with_capacity(config.devices);
    let mut logins = Vec::new();
    let mut start = 0;
    // The devices that provision themselves are not registered here.
    let registered = config.devices - config.provision;
    while start < registered {
        let end = (start + BULK).min(registered);
        let mut specs = Vec::with_capacity(end - start);
        for i in start..end {
            let name = format!("{}-{i}", config.prefix);
            let mut spec = json!({ "name": name });
            if let Some(t) = &config.device_type {
                spec["type"] = json!(t);
            }
            if !gateways.is_empty() {
                spec["attributes"] = json!({ "gateway": gateways[i % gateways.len()].name });
            }
            specs.push(spec);
            devices.push(name);
        }
        let tokens = bulk(http, config, specs).await?;
        if config.mode == Mode::Direct {
            logins.extend(tokens.into_iter().map(Login::Token));
        }
        bar.inc((end - start) as u64);
        start = end;
    }
    devices.extend((registered..config.devices).map(|i| format!("{}-{i}", config.prefix)));
    Ok(Fleet {
        devices,
        logins,
        gateways,
    })
}

/// A fleet for a plain broker: names only, nothing registered.
pub(crate) fn unregistered(config: &SimConfig) -> Fleet {
    Fleet {
        devices: (0..config.devices)
            .map(|i| format!("{}-{i}", config.prefix))
            .collect(),
        logins: vec![Login::Token(String::new()); config.devices],
        gateways: Vec::new(),
    }
}

/// One bulk registration; the tokens in the order of `things`.
async fn bulk(
    http: &reqwest::Client,
    config: &SimConfig,
    things: Vec<Value>,
) -> Result<Vec<String>, SimError> {
    let count = things.len();
    let response = http
        .post(format!("{}/v1/things/bulk", config.api))
        .bearer_auth(&config.token)
        .json(&json!({ "things": things }))
        .send()
        .await?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let message = body["message"].as_str().unwrap_or("no message");
        return Err(SimError::Api(format!(
            "registering {count} things answered {status}: {message}"
        )));
    }
    let tokens: Vec<String> = body["things"]
        .as_array()
        .map(|things| {
            things
                .iter()
                .filter_map(|t| t["token"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if tokens.len() != count {
        return Err(SimError::Api(format!(
            "registering {count} things returned {} tokens",
            tokens.len()
        )));
    }
    Ok(tokens)
}

/// Sets an actuator's desired state through the API, as an app would.
pub(crate) async fn set_desired(
    http: &reqwest::Client,
    config: &SimConfig,
    thing: &str,
    desired: &Value,
) -> Result<(), SimError> {
    let response = http
        .patch(format!("{}/v1/things/{thing}/shadow", config.api))
        .bearer_auth(&config.token)
        .json(&json!({ "state": { "desired": desired } }))
        .send()
        .await?;
    if !response.status().is_success() {
        return Err(SimError::Api(format!(
            "setting desired state of {thing} answered {}",
            response.status()
        )));
    }
    Ok(())
}
