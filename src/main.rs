//! The `doppel` command line: `doppel serve` runs a node; `doppel rules check|test FILE…`
//! checks rule files and runs their tests; `doppel sim` drives a simulated fleet at a node.

mod config;
mod rules_cli;
mod serve;
mod sim_cli;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

// mimalloc: the node allocates many small, short-lived objects from several threads (decoded
// messages, effects); glibc's malloc spent ~40% of the node's CPU on them under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "doppel", version, about = "A digital-twin actor system")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node: MQTT device endpoint (or broker bridge), HTTP API, embedded store.
    Serve(config::ServeArgs),
    /// Check rule files and run their tests, offline.
    #[command(subcommand)]
    Rules(rules_cli::RulesCommand),
    /// Simulate a fleet of devices against a node and report rates, latency and memory.
    Sim(sim_cli::SimArgs),
}

fn main() -> anyhow::Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DOPPEL_LOG").unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("info,fjall=warn,lsm_tree=warn")
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Serve(args) => {
            serve::run(config::ServeConfig::load(args)?)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Rules(command) => rules_cli::run(command),
        Command::Sim(args) => {
            sim_cli::run(args)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
