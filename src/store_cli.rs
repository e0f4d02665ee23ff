//! `doppel store copy --from URL --to URL`: moves a whole deployment between backends (say, from
//! the embedded store of one machine to a PostgreSQL several nodes share), with progress, then
//! checks both sides hold the same keys. The nodes using the source must be stopped first.

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use storage::{StoreUrl, copy, repo::default_root};

/// Store commands.
#[derive(clap::Subcommand, Debug)]
pub enum StoreCommand {
    /// Copy every key of a deployment into an empty store, then verify counts and digests.
    Copy {
        /// The store to read: fjall:DIR, postgres://…, fdb:CLUSTER_FILE.
        #[arg(long)]
        from: String,
        /// The store to fill (it must hold no deployment yet).
        #[arg(long)]
        to: String,
    },
}

/// Runs a store command.
pub fn run(command: StoreCommand) -> anyhow::Result<()> {
    match command {
        StoreCommand::Copy { from, to } => {
            let (from, to): (StoreUrl, StoreUrl) = (from.parse()?, to.parse()?);
            if from == to {
                anyhow::bail!("--from and --to are the same store");
            }
            let source = from
                .open()
                .with_context(|| format!("opening the source {from}"))?;
            let target = to
                .open()
                .with_context(|| format!("opening the target {to}"))?;
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            let range = default_root().range().into();
            let copied = copy::copy(&source, &target, &range, |c| {
                bar.set_message(format!("{} keys, {} MB", c.keys, c.bytes / 1_000_000));
                bar.tick();
            })
            .with_context(|| format!("copying {from} to {to}"))?;
            bar.finish_and_clear();
            println!(
                "copied {} keys ({} bytes) from {from} to {to}; verified: both hold {} keys, digest {:016x}",
                copied.keys, copied.bytes, copied.keys, copied.digest
            );
            Ok(())
        }
    }
}
