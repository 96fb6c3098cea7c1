//! `gridclue-sink`: run the projection (no arguments), `migrate`, `replay`, `check-aggregates` or
//! `rebuild-aggregates`.

use clap::{Parser, Subcommand};
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
