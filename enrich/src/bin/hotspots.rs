//! `gridclue-hotspots`: the emerging-hotspot detector (sequencer + detector loops), or `rebase`.

use anyhow::Context;
use clap::{Parser, Subcommand};
use gridclue_enrich::hotspots::HotspotConfig;
use gridclue_enrich::log_reset::{print_outcomes, RebaseArgs};

#[derive(Parser)]
#[command(
    name = "gridclue-hotspots",
    about = "Flags emerging hotspots: clusters of same-category cases in a grid or neighbourhood"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Give partitions whose Kafka log was reset the new log's start as their position (the
    /// service holds them until then): clues.events (the sequencer's) or clues.hotspot-input
    /// (the detector's). Stop every gridclue-hotspots first (this joins their consumer group),
    /// start them again afterwards.
    Rebase(RebaseArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    gridclue_core::telemetry::init_tracing("hotspots");
    gridclue_core::stamp_build_commit!();
    let cli = Cli::parse();
    let config: HotspotConfig = gridclue_core::config::load()?;
    match cli.command {
        None => {
            tracing::info!(config = %gridclue_core::config::redacted(&config), "starting");
            let listener = tokio::net::TcpListener::bind(&config.listen)
                .await
                .with_context(|| format!("binding {}", config.listen))?;
            gridclue_enrich::hotspots::run(
                listener,
                config,
                gridclue_core::service::shutdown_signal(),
            )
            .await
        }
        Some(Command::Rebase(args)) => {
            let outcomes = gridclue_enrich::hotspots::rebase(
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
