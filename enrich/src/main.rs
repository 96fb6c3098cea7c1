//! `gridclue-enrich`: run the processor and its dedupe stage (no arguments), or `rebase`.

use anyhow::Context;
use clap::{Parser, Subcommand};
use gridclue_enrich::log_reset::{print_outcomes, RebaseArgs};
use gridclue_enrich::EnrichConfig;

#[derive(Parser)]
#[command(
    name = "gridclue-enrich",
    about = "Places, routes and follows clues: the processor of clues.commands"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Give partitions whose Kafka log was reset a position in the new log (enrich refuses them
    /// until then): clues.commands or clues.state (the processor's partition: both logs
    /// together), or clues.dedupe (the dedupe stage's partition). Stop every gridclue-enrich
    /// first (this joins their consumer group), start them again afterwards.
    Rebase(RebaseArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    gridclue_core::telemetry::init_tracing("enrich");
    gridclue_core::stamp_build_commit!();
    let cli = Cli::parse();
    let config: EnrichConfig = gridclue_core::config::load()?;
    match cli.command {
        None => {
            tracing::info!(config = %gridclue_core::config::redacted(&config), "starting");
            let listener = tokio::net::TcpListener::bind(&config.listen)
                .await
                .with_context(|| format!("binding {}", config.listen))?;
            gridclue_enrich::run(listener, config, gridclue_core::service::shutdown_signal()).await
        }
        Some(Command::Rebase(args)) => {
            let outcomes = gridclue_enrich::log_reset::rebase(
                &config,
                &args.topic,
                args.partitions(),
                args.force,
            )
            .await?;
            if !print_outcomes(&args.topic, &outcomes) {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}
