//! Registering the fleet through the node's HTTP API, 10,000 things per bulk request: devices
//! (with their device type, and in gateway mode the `gateway` attribute naming their gateway)
//! and gateways. Device tokens are kept only where a device connects itself.

use crate::{Mode, SimConfig, SimError};
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
    /// Per device, its credentials (direct mode only).
    pub device_tokens: Vec<String>,
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
    let mut device_tokens = Vec::new();
    let mut start = 0;
    while start < config.devices {
        let end = (start + BULK).min(config.devices);
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
            device_tokens.extend(tokens);
        }
        bar.inc((end - start) as u64);
        start = end;
    }
    Ok(Fleet {
        devices,
        device_tokens,
        gateways,
    })
}

/// A fleet for a plain broker: names only, nothing registered.
pub(crate) fn unregistered(config: &SimConfig) -> Fleet {
    Fleet {
        devices: (0..config.devices)
            .map(|i| format!("{}-{i}", config.prefix))
            .collect(),
        device_tokens: vec![String::new(); config.devices],
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
