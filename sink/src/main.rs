//! `gridclue-sink`: run the projection (no arguments), `migrate`, `replay`, `rebase`,
//! `check-aggregates` or `rebuild-aggregates`.

use clap::{Parser, Subcommand};
use gridclue_sink::log_reset::{RebaseOutcome, RebaseTarget};
use gridclue_sink::replay::{replay, ReplayRange};
use gridclue_sink::SinkConfig;

#[derive(Parser)]
#[command(
    name = "gridclue-sink",
    about = "Projects clue facts from Kafka into ClickHouse"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Apply pending schema migrations and exit.
    Migrate,
    /// Re-project a range of the events topic into ClickHouse (facts already stored are
    /// recognised and skipped, so numbers do not change).
    Replay {
        /// Partitions to replay (all when omitted); repeat or separate with commas.
        #[arg(long, value_delimiter = ',')]
        partition: Vec<i32>,
        /// First offset (inclusive; earliest when omitted).
        #[arg(long)]
        from: Option<i64>,
        /// Last offset (inclusive; latest when omitted).
        #[arg(long)]
        to: Option<i64>,
        /// Also replay past the live consumer group's committed offsets (only with the live
        /// sink stopped, or into a database no live sink writes to).
        #[arg(long)]
        beyond_committed: bool,
    },
    /// Start a new log for partitions of the events topic whose Kafka log was reset (the sink
    /// refuses them until then): the sink reads the new log from its start, and skips facts
    /// ClickHouse already holds by their identity. Running sinks pick it up by themselves.
    Rebase {
        /// Partitions to rebase; repeat or separate with commas.
        #[arg(long, value_delimiter = ',', required_unless_present = "all_reset")]
        partition: Vec<i32>,
        /// Every partition found reset.
        #[arg(long, conflicts_with = "partition")]
        all_reset: bool,
        /// Rebase the named partitions even if their log does not look reset.
        #[arg(long, requires = "partition")]
        force: bool,
    },
    /// Compare the aggregate tables with the facts in clue_events; exit 1 if they differ.
    CheckAggregates,
    /// Recompute the aggregate tables from the facts in clue_events (stop the sinks first).
    RebuildAggregates,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    gridclue_core::telemetry::init_tracing("sink");
    let cli = Cli::parse();
    let config: SinkConfig = gridclue_core::config::load()?;
    match cli.command {
        None => {
            let listener = tokio::net::TcpListener::bind(&config.listen).await?;
            tracing::info!(addr = %listener.local_addr()?, "listening");
            gridclue_sink::run(listener, config, gridclue_core::service::shutdown_signal()).await
        }
        Some(Command::Migrate) => {
            let report = gridclue_sink::migrate(&config).await?;
            println!(
                "migrations applied: {:?}; already applied: {:?}",
                report.applied, report.already
            );
            Ok(())
        }
        Some(Command::Replay {
            partition,
            from,
            to,
            beyond_committed,
        }) => {
            let range = ReplayRange {
                partitions: (!partition.is_empty()).then_some(partition),
                from,
                to,
                beyond_committed,
            };
            let report = replay(config, range).await?;
            for (p, start, end) in &report.ranges {
                println!("partition {p}: offsets {start}..{end}");
            }
            println!(
                "facts written: {} (facts already stored were skipped)",
                report.facts_inserted
            );
            Ok(())
        }
        Some(Command::Rebase {
            partition,
            all_reset,
            force,
        }) => {
            let target = if all_reset {
                RebaseTarget::AllReset
            } else {
                RebaseTarget::Partitions(partition)
            };
            let outcomes = gridclue_sink::log_reset::rebase(&config, target, force).await?;
            if outcomes.is_empty() {
                println!("no partition of {} is reset", config.events_topic);
            }
            let mut left_alone = false;
            for o in &outcomes {
                match o {
                    RebaseOutcome::Rebased {
                        partition,
                        from_log,
                        to_log,
                        reset,
                    } => {
                        println!(
                            "partition {partition}: log {from_log} → {to_log}; the sink reads the \
                             new log from its start"
                        );
                        if let Some(r) = reset {
                            println!("  was: {r}");
                        }
                    }
                    RebaseOutcome::NotReset { partition } => {
                        left_alone = true;
                        println!(
                            "partition {partition}: its log is not reset; left alone (--force \
                             rebases it anyway)"
                        );
                    }
                }
            }
            if left_alone {
                std::process::exit(1);
            }
            Ok(())
        }
        Some(Command::CheckAggregates) => {
            let client = gridclue_core::ch::connect(&config.ch_settings()?).await?;
            let check = gridclue_sink::aggregates::check(&client).await?;
            print_check(&check);
            if !check.is_exact() {
                eprintln!("the aggregates differ from the facts: run `gridclue-sink rebuild-aggregates` with the sinks stopped");
                std::process::exit(1);
            }
            Ok(())
        }
        Some(Command::RebuildAggregates) => {
            let client = gridclue_core::ch::connect(&config.ch_settings()?).await?;
            let check = gridclue_sink::aggregates::rebuild(&client).await?;
            print_check(&check);
            anyhow::ensure!(
                check.is_exact(),
                "the rebuilt aggregates still differ (was a sink writing meanwhile?)"
            );
            Ok(())
        }
    }
}

fn print_check(c: &gridclue_sink::aggregates::AggregateCheck) {
    println!(
        "clue_counts:      reports {} / {} in the facts, cases {} / {}; groups off: {}",
        c.counts_reports, c.facts_reports, c.counts_cases, c.facts_cases, c.counts_groups_off
    );
    println!(
        "fact_flow_hourly: facts {} / {} in the facts; groups off: {}",
        c.flow_facts, c.facts, c.flow_groups_off
    );
}
