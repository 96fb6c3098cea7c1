//! `gridclue-enrich`: run the processor and its dedupe stage (no arguments), or `rebase`.

use anyhow::Context;
use clap::{Parser, Subcommand};
use gridclue_enrich::log_reset::{RebaseOutcome, Resume};
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
    /// until then). Stop every gridclue-enrich first (this joins their consumer group), start
    /// them again afterwards.
    Rebase {
        /// clues.commands or clues.state (the processor's partition: both logs together), or
        /// clues.dedupe (the dedupe stage's partition).
        #[arg(long)]
        topic: String,
        /// Partitions to rebase; repeat or separate with commas.
        #[arg(long, value_delimiter = ',', required_unless_present = "all_reset")]
        partition: Vec<i32>,
        /// Every partition of the topic found reset.
        #[arg(long, conflicts_with = "partition")]
        all_reset: bool,
        /// Rebase the named partitions even if their log does not look reset.
        #[arg(long, requires = "partition")]
        force: bool,
    },
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
        Some(Command::Rebase {
            topic,
            partition,
            all_reset,
            force,
        }) => {
            let partitions = (!all_reset).then_some(partition);
            let outcomes =
                gridclue_enrich::log_reset::rebase(&config, &topic, partitions, force).await?;
            if outcomes.is_empty() {
                println!("no partition of {topic} is reset");
            }
            let mut left_alone = false;
            for o in &outcomes {
                match o {
                    RebaseOutcome::Rebased {
                        partition,
                        group,
                        before,
                        after,
                        resume,
                        resets,
                    } => {
                        println!(
                            "partition {partition} (group {group}): committed {:?} → {:?} \
                             (base {} → {})",
                            before.offset, after.offset, before.note.base, after.note.base
                        );
                        match resume {
                            Resume::After(o) => println!(
                                "  the log is the one the state handled as far as offset {o}: \
                                 resuming after it"
                            ),
                            Resume::FromStart => println!("  read from the log's start"),
                            Resume::Kept => println!("  the commands position stays"),
                        }
                        for r in resets {
                            println!("  was: {r}");
                        }
                    }
                    RebaseOutcome::NotReset { partition } => {
                        left_alone = true;
                        println!(
                            "partition {partition}: not reset; left alone (--force rebases it \
                             anyway)"
                        );
                    }
                }
            }
            if left_alone {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}
