//! `doppel serve` settings: command-line flags over an optional TOML file over defaults.
//! Unknown keys in the file are refused.

use actors::NodeConfig;
use anyhow::Context;
use serde::Deserialize;
use std::{net::SocketAddr, path::PathBuf};

/// Flags of `doppel serve`; each overrides the configuration file.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Directory of the embedded store.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Address of the built-in MQTT device endpoint.
    #[arg(long, conflicts_with = "mqtt_url")]
    mqtt_listen: Option<SocketAddr>,
    /// Use an external broker instead of the endpoint: mqtt://[user:password@]host:port
    #[arg(long)]
    mqtt_url: Option<String>,
    /// Address of the HTTP API.
    #[arg(long)]
    http_listen: Option<SocketAddr>,
    /// TOML configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Register unknown devices on first connect, without credentials. For tours and tests
    /// only, never production.
    #[arg(long)]
    dev: bool,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileConfig {
    data_dir: PathBuf,
    mqtt_listen: SocketAddr,
    mqtt_url: Option<String>,
    http_listen: SocketAddr,
    node: NodeConfig,
}

impl Default for FileConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./doppel-data"),
            mqtt_listen: SocketAddr::from(([127, 0, 0, 1], 1883)),
            mqtt_url: None,
            http_listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            node: NodeConfig::default(),
        }
    }
}

/// Where the devices come from.
#[derive(Debug, Clone)]
pub enum Devices {
    /// The built-in endpoint listening here.
    Endpoint(SocketAddr),
    /// An external broker.
    Broker(String),
}

/// Resolved settings of `doppel serve`.
#[derive(Debug)]
pub struct ServeConfig {
    pub data_dir: PathBuf,
    pub devices: Devices,
    pub http_listen: SocketAddr,
    pub node: NodeConfig,
}

impl ServeConfig {
    /// Defaults, then the file, then the flags.
    pub fn load(args: ServeArgs) -> anyhow::Result<Self> {
        let mut file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                toml::from_str::<FileConfig>(&text)
                    .with_context(|| format!("in {}", path.display()))?
            }
            None => FileConfig::default(),
        };
        if let Some(dir) = args.data_dir {
            file.data_dir = dir;
        }
        if let Some(addr) = args.http_listen {
            file.http_listen = addr;
        }
        let devices = match (args.mqtt_listen, args.mqtt_url.or(file.mqtt_url)) {
            (Some(addr), _) => Devices::Endpoint(addr),
            (None, Some(url)) => Devices::Broker(url),
            (None, None) => Devices::Endpoint(file.mqtt_listen),
        };
        if args.dev {
            file.node.mqtt.dev = true;
        }
        file.node.limits.validate()?;
        Ok(Self {
            data_dir: file.data_dir,
            devices,
            http_listen: file.http_listen,
            node: file.node,
        })
    }
}
