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
  DOPPEL_CLUSTER_SECRET  the secret every node of a cluster shares (or --cluster-secret-file)
  DOPPEL_LOG          log filter, e.g. `info` or `debug,fjall=warn` (default info,fjall=warn,lsm_tree=warn)
  NO_COLOR            no colour in logs even on a terminal

Every flag can also be set in the --config file (TOML), which sets the limits too:
[node], [node.limits], [node.mqtt], [node.history], [ws], [http], [cors], [cluster]. Flags win over the
file.")]
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
    /// The operator's CA for device certificates (PEM; an intermediate with its chain up to the
    /// root, the intermediate first) instead of the deployment's own.
    #[arg(long, requires = "ca_key")]
    ca_cert: Option<PathBuf>,
    /// The private key (PEM) of --ca-cert.
    #[arg(long, requires = "ca_cert")]
    ca_key: Option<PathBuf>,
    /// Run as a node of a cluster, accepting peers here (host:port); needs a store the nodes
    /// share (--store postgres://… or fdb:…) and the cluster secret.
    #[arg(long)]
    cluster_listen: Option<SocketAddr>,
    /// Where peers reach this node [default: the address --cluster-listen bound].
    #[arg(long, requires = "cluster_listen")]
    advertise: Option<String>,
    /// The node's name in the cluster [default: its advertised address].
    #[arg(long, requires = "cluster_listen")]
    node_name: Option<String>,
    /// File holding the cluster secret (instead of DOPPEL_CLUSTER_SECRET).
    #[arg(long, requires = "cluster_listen")]
    cluster_secret_file: Option<PathBuf>,
}

/// `[cluster]` in the configuration file.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ClusterFile {
    listen: Option<SocketAddr>,
    advertise: Option<String>,
    node_name: Option<String>,
    secret_file: Option<PathBuf>,
    /// How long a node's lease lasts without renewal.
    #[serde(with = "humantime_serde")]
    lease: std::time::Duration,
    /// How often a node renews it.
    #[serde(with = "humantime_serde")]
    renew: std::time::Duration,
}

impl Default for ClusterFile {
    fn default() -> Self {
        Self {
            listen: None,
            advertise: None,
            node_name: None,
            secret_file: None,
            lease: std::time::Duration::from_secs(5),
            renew: std::time::Duration::from_secs(1),
        }
    }
}

/// The cluster settings before the listener is bound.
#[derive(Debug)]
pub struct ClusterSettings {
    pub listen: SocketAddr,
    pub advertise: Option<String>,
    pub node_name: Option<String>,
    pub secret: Vec<u8>,
    pub lease: std::time::Duration,
    pub renew: std::time::Duration,
}

impl ClusterSettings {
    /// The node's cluster configuration, once its listener is bound to `bound`.
    pub fn resolve(&self, bound: SocketAddr) -> actors::ClusterConfig {
        let advertise = self.advertise.clone().unwrap_or_else(|| bound.to_string());
        actors::ClusterConfig {
            name: self.node_name.clone().unwrap_or_else(|| advertise.clone()),
            listen: bound,
            advertise,
            secret: self.secret.clone(),
            lease: self.lease,
            renew: self.renew,
        }
    }
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
    ca_cert: Option<PathBuf>,
    ca_key: Option<PathBuf>,
    node: NodeConfig,
    ws: api::WsConfig,
    http: api::ServeLimits,
    cors: api::CorsConfig,
    cluster: ClusterFile,
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
            ca_cert: None,
            ca_key: None,
            node: NodeConfig::default(),
            ws: api::WsConfig::default(),
            http: api::ServeLimits::default(),
            cors: api::CorsConfig::default(),
            cluster: ClusterFile::default(),
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
    /// Other origins whose pages may call the API.
    pub cors: api::CorsConfig,
    /// Cluster membership, if the node is part of one.
    pub cluster: Option<ClusterSettings>,
    /// The operator's CA for device certificates (certificate chain, key).
    pub ca: Option<(PathBuf, PathBuf)>,
}

/// Shortest cluster secret accepted.
const MIN_SECRET: usize = 16;

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
        file.cors.validate().map_err(anyhow::Error::msg)?;
        let cluster = match args.cluster_listen.or(file.cluster.listen) {
            None => None,
            Some(listen) => {
                if matches!(store, StoreUrl::Fjall(_)) {
                    anyhow::bail!(
                        "a cluster needs a store its nodes share: --store postgres://… (or fdb:…), not the embedded store"
                    );
                }
                let secret = match args.cluster_secret_file.or(file.cluster.secret_file) {
                    Some(path) => std::fs::read_to_string(&path)
                        .with_context(|| format!("reading the cluster secret {}", path.display()))?
                        .trim()
                        .to_owned(),
                    None => std::env::var("DOPPEL_CLUSTER_SECRET").unwrap_or_default(),
                };
                if secret.len() < MIN_SECRET {
                    anyhow::bail!(
                        "a cluster node needs the cluster secret (at least {MIN_SECRET} characters) in DOPPEL_CLUSTER_SECRET or --cluster-secret-file"
                    );
                }
                let (lease, renew) = (file.cluster.lease, file.cluster.renew);
                if renew.is_zero() || lease < renew * 2 {
                    anyhow::bail!(
                        "the cluster lease ({lease:?}) must last at least two renewals ({renew:?})"
                    );
                }
                Some(ClusterSettings {
                    listen,
                    advertise: args.advertise.or(file.cluster.advertise),
                    node_name: args.node_name.or(file.cluster.node_name),
                    secret: secret.into_bytes(),
                    lease,
                    renew,
                })
            }
        };
        let ca = match (args.ca_cert.or(file.ca_cert), args.ca_key.or(file.ca_key)) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => anyhow::bail!(
                "an operator CA needs both its certificate (ca_cert) and its key (ca_key)"
            ),
        };
        Ok(Self {
            ca,
            cluster,
            store,
            devices,
            http_listen: file.http_listen,
            tls,
            node: file.node,
            ws: file.ws,
            http: file.http,
            cors: file.cors,
        })
    }
}
