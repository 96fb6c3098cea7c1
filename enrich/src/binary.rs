//! The start-up both binaries share (`gridclue-enrich`, `gridclue-hotspots`): one command line
//! (no command: serve; `rebase`: give partitions whose Kafka log was reset a position), logging,
//! configuration, then the service or the rebase.

use std::future::Future;
use std::net::SocketAddr;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::TcpListener;

use crate::log_reset::{print_outcomes, RebaseArgs, RebaseOutcome};

/// A service of this crate with a binary of its own, told apart by its configuration type.
pub trait Binary: Serialize + DeserializeOwned + Default {
    /// The binary's name, `gridclue-<service>`; logs name the service.
    const NAME: &'static str;
    /// What `--help` says the binary does.
    const ABOUT: &'static str;
    /// What `rebase --help` says: which topics, which instances to stop first.
    const REBASE_ABOUT: &'static str;

    fn listen(&self) -> SocketAddr;

    /// Serves on `listener` until `shutdown` completes.
    fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> impl Future<Output = anyhow::Result<()>>;

    fn rebase(&self, args: &RebaseArgs)
        -> impl Future<Output = anyhow::Result<Vec<RebaseOutcome>>>;
}

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    Rebase(RebaseArgs),
}

/// Everything a binary's `main` does once its build commit is stamped: parse the command line,
/// start logging, load the configuration `C`, then serve until a shutdown signal, or rebase
/// (exits 1 when a partition could not be rebased).
pub async fn start<C: Binary>() -> anyhow::Result<()> {
    let service = C::NAME.strip_prefix("gridclue-").unwrap_or(C::NAME);
    gridclue_core::telemetry::init_tracing(service);
    let matches = Cli::command()
        .name(C::NAME)
        .bin_name(C::NAME)
        .about(C::ABOUT)
        .mut_subcommand("rebase", |rebase| rebase.about(C::REBASE_ABOUT))
        .get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let config: C = gridclue_core::config::load()?;
    match cli.command {
        None => {
            tracing::info!(config = %gridclue_core::config::redacted(&config), "starting");
            let listen = config.listen();
            let listener = TcpListener::bind(listen)
                .await
                .with_context(|| format!("binding {listen}"))?;
            config
                .serve(listener, gridclue_core::service::shutdown_signal())
                .await
        }
        Some(Command::Rebase(args)) => {
            let outcomes = config.rebase(&args).await?;
            if !print_outcomes(&args.topic, &outcomes) {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
