//! The `doppel` command line: `doppel serve` runs a node; `doppel things|keys|shadow|rules|
//! watch|admin` operate one over its API; `doppel rules check|test FILE…` checks rule files and
//! runs their tests offline; `doppel sim` drives a simulated fleet at a node; `doppel store copy`
//! moves a deployment between stores.

mod client;
mod config;
mod ops_cli;
mod rules_cli;
mod serve;
mod sim_cli;
mod store_cli;

use clap::{Parser, Subcommand, ValueEnum};
use client::Conn;
use std::{io::IsTerminal, process::ExitCode};

// mimalloc: the node allocates many small, short-lived objects from several threads (decoded
// messages, effects); glibc's malloc spent ~40% of the node's CPU on them under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "doppel",
    version,
    about = "A digital-twin actor system",
    after_help = "Operator commands reach the node at --url (DOPPEL_URL, default http://127.0.0.1:8080) \
with --key (DOPPEL_KEY). Exit codes: 0 ok, 1 other failure, 2 invalid request or usage, \
3 not found, 4 conflict (exists already, version changed), 5 not authorized, 6 node unreachable \
or unavailable."
)]
struct Cli {
    /// Log format on stderr: `text` (coloured only on a terminal) or `json` (one object per line).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node: MQTT device endpoint (or broker bridge), HTTP API, a store (embedded by default).
    Serve(config::ServeArgs),
    /// Register, list, show and decommission things.
    Things {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        command: ops_cli::ThingsCommand,
    },
    /// Create, list and revoke API keys.
    Keys {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        command: ops_cli::KeysCommand,
    },
    /// Read and change shadows.
    Shadow {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        command: ops_cli::ShadowCommand,
    },
    /// Rules: `check` and `test` rule files offline; `put`, `get`, `list`, `rm` on a node.
    Rules {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        command: rules_cli::RulesCommand,
    },
    /// Print twins' changes as they happen (snapshot first), until interrupted.
    Watch {
        #[command(flatten)]
        conn: Conn,
        /// The things to watch.
        #[arg(required = true)]
        things: Vec<String>,
        /// Stop after this many frames.
        #[arg(long)]
        count: Option<u64>,
    },
    /// The bootstrap admin token.
    Admin {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        command: ops_cli::AdminCommand,
    },
    /// Simulate a fleet of devices against a node and report rates, latency and memory.
    Sim(sim_cli::SimArgs),
    /// Stores: `copy` a deployment from one backend to another.
    Store {
        #[command(subcommand)]
        command: store_cli::StoreCommand,
    },
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DOPPEL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,fjall=warn,lsm_tree=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
            .init(),
    }
}

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Serve(args) => {
            serve::run(config::ServeConfig::load(args)?)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Things { conn, command } => Ok(ops_cli::run(ops_cli::things(conn, command))),
        Command::Keys { conn, command } => Ok(ops_cli::run(ops_cli::keys(conn, command))),
        Command::Shadow { conn, command } => Ok(ops_cli::run(ops_cli::shadow(conn, command))),
        Command::Rules {
            conn,
            command: rules_cli::RulesCommand::Node(command),
        } => Ok(ops_cli::run(ops_cli::rules(conn, command))),
        Command::Rules { command, .. } => rules_cli::run(command),
        Command::Watch {
            conn,
            things,
            count,
        } => Ok(ops_cli::run(ops_cli::watch(conn, things, count))),
        Command::Admin { conn, command } => Ok(ops_cli::run(ops_cli::admin(conn, command))),
        Command::Sim(args) => {
            sim_cli::run(args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Store { command } => {
            store_cli::run(command)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
