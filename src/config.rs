//! `doppel serve` settings: command-line flags over an optional TOML file over defaults.
//! Unknown keys in the file are refused.

use actors::NodeConfig;
use anyhow::Context;
use serde::Deserialize;
use std::{net::SocketAddr, path::PathBuf};
use storage::StoreUrl;

/// Flags of `doppel serve`; each overrides the configuration file.
#[derive(clap::Args, Debug)]
#[command(after_help = "Environment:
  DOPPEL_ADMIN_TOKEN  sets the bootstrap admin token (stored hashed; without it, the token
                      stored at the first start is kept, or one is generated and printed once)
  DOPPEL_LOG          log filter, e.g. `info` or `debug,fjall=warn` (default info,fjall=warn,lsm_tree=warn)
  NO_COLOR            no colour in logs even on a terminal

Every flag can also be set in the --config file (TOML), which sets the limits too:
[node], [node.limits], [node.mqtt], [node.history], [ws], [http]. Flags win over the file.")]
pub struct ServeArgs {
    /// Directory of the embedded store [default: ./doppel-data]; short for --store fjall:DIR.
    #[arg(long, conflicts_with = "store")]
    data_dir: Option<PathBuf>,
    /// Where the data lives: fjall:DIR (the embedded store, the default),
    /// postgres://user@host:port/db?schema=…&pool=… (PostgreSQL, CockroachDB, YugabyteDB;
    /// password in the URL, PGPASSWORD or password_file=), fdb:CLUSTER_FILE (FoundationDB,
    /// builds with --features fdb).
    #[arg(long)]
    store: Option<String>,
    /// Address of the built-in MQTT device endpoint [default: 127.0.0.1:1883].
    #[arg(long, conflicts_with = "mqtt_url")]
    mqtt_listen: Option<SocketAddr>,
    /// Use an external broker instead of the endpoint: mqtt://[user:password@]host:port
    #[arg(long)]
    mqtt_url: Option<String>,
    /// Address of the HTTP API and WebSocket [default: 127.0.0.1:8080].
    #[arg(long)]
    http_listen: Option<SocketAddr>,
    /// PEM certificate chain: serve HTTPS, and MQTT over TLS on --mqtt-tls-listen.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Address of the MQTT endpoint's TLS port, with --tls-cert [default: 127.0.0.1:8883].
    #[arg(long)]
    mqtt_tls_listen: Option<SocketAddr>,
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
    data_dir: Option<PathBuf>,
    store: Option<String>,
    mqtt_listen: SocketAddr,
    mqtt_url: Option<String>,
    http_listen: SocketAddr,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    mqtt_tls_listen: SocketAddr,
    node: NodeConfig,
    ws: api::WsConfig,
    http: api::ServeLimits,
}

impl Default for FileConfig {
    fn default() -> Self {
        Self {
            data_dir: None,
            store: None,
            mqtt_listen: SocketAddr::from(([127, 0, 0, 1], 1883)),
            mqtt_url: None,
            http_listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            tls_cert: None,
            tls_key: None,
            mqtt_tls_listen: SocketAddr::from(([127, 0, 0, 1], 8883)),
            node: NodeConfig::default(),
            ws: api::WsConfig::default(),
            http: api::ServeLimits::default(),
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

/// TLS for the listeners.
#[derive(Debug, Clone)]
pub struct Tls {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// The MQTT endpoint's TLS address.
    pub mqtt_listen: SocketAddr,
}

/// Resolved settings of `doppel serve`.
#[derive(Debug)]
pub struct ServeConfig {
    pub store: StoreUrl,
    pub devices: Devices,
    pub http_listen: SocketAddr,
    pub tls: Option<Tls>,
    pub node: NodeConfig,
    pub ws: api::WsConfig,
    pub http: api::ServeLimits,
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
        let store = match (args.store, args.data_dir) {
            (Some(url), _) => url.parse()?,
            (None, Some(dir)) => StoreUrl::Fjall(dir),
            (None, None) => match (file.store, file.data_dir) {
                (Some(_), Some(_)) => anyhow::bail!(
                    "the configuration sets both `store` and `data_dir`: keep one (data_dir = DIR is store = \"fjall:DIR\")"
                ),
                (Some(url), None) => url.parse()?,
                (None, Some(dir)) => StoreUrl::Fjall(dir),
                (None, None) => StoreUrl::Fjall(PathBuf::from("./doppel-data")),
            },
        };
        if let Some(addr) = args.http_listen {
            file.http_listen = addr;
        }
        if let Some(addr) = args.mqtt_tls_listen {
            file.mqtt_tls_listen = addr;
        }
        let tls = match (
            args.tls_cert.or(file.tls_cert),
            args.tls_key.or(file.tls_key),
        ) {
            (Some(cert), Some(key)) => Some(Tls {
                cert,
                key,
                mqtt_listen: file.mqtt_tls_listen,
            }),
            (None, None) => None,
            _ => anyhow::bail!("TLS needs both a certificate (tls_cert) and a key (tls_key)"),
        };
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
            store,
            devices,
            http_listen: file.http_listen,
            tls,
            node: file.node,
            ws: file.ws,
            http: file.http,
        })
    }
}
