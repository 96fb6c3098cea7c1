//! `gridclue-sink`: run the projection (no arguments), `migrate`, `replay`, `rebase`,
//! `check-aggregates`, `rebuild-aggregates` or `dlq list|show|replay`.

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
    /// Inspect the dead-letter queue and replay records to their source topic after a fix.
    Dlq {
        #[command(subcommand)]
        action: DlqCommand,
    },
}

#[derive(clap::Args, Clone, Debug, Default)]
struct DlqFilter {
    /// Only these reason codes (repeat or separate with commas).
    #[arg(long, value_delimiter = ',')]
    reason: Vec<String>,
    /// Only records written within this age (e.g. 30m, 2h, 7d).
    #[arg(long, value_parser = parse_age)]
    since: Option<std::time::Duration>,
    /// Only records written at least this long ago (e.g. 10m).
    #[arg(long, value_parser = parse_age)]
    older_than: Option<std::time::Duration>,
    /// Only records that came from this topic.
    #[arg(long)]
    source_topic: Option<String>,
}

fn parse_age(s: &str) -> Result<std::time::Duration, String> {
    gridclue_sink::dlq::parse_age(s)
}

impl DlqFilter {
    fn selection(&self, positions: Vec<(i32, i64)>) -> gridclue_sink::dlq::Selection {
        let now = gridclue_core::wire::now_ms();
        let ago = |d: std::time::Duration| now.saturating_sub(d.as_millis() as u64);
        gridclue_sink::dlq::Selection {
            reasons: self.reason.clone(),
            from_ms: self.since.map(ago),
            to_ms: self.older_than.map(ago),
            source_topic: self.source_topic.clone(),
            positions,
        }
    }
}

#[derive(Subcommand)]
enum DlqCommand {
    /// List records (oldest first) with a count per reason.
    List {
        #[command(flatten)]
        filter: DlqFilter,
        /// Leave out records already replayed.
        #[arg(long)]
        pending: bool,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one record in full.
    Show {
        #[arg(long)]
        partition: i32,
        #[arg(long)]
        offset: i64,
    },
    /// Send the selected records' original payloads back to their source topic (records already
    /// replayed are skipped: running it twice changes nothing).
    Replay {
        #[command(flatten)]
        filter: DlqFilter,
        /// Only these DLQ records, as PARTITION/OFFSET (repeat or separate with commas).
        #[arg(long, value_delimiter = ',', value_parser = parse_position)]
        record: Vec<(i32, i64)>,
        /// Count what would be replayed, send nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

fn parse_position(s: &str) -> Result<(i32, i64), String> {
    let (p, o) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?} is not PARTITION/OFFSET"))?;
    Ok((
        p.parse().map_err(|_| format!("{s:?}: bad partition"))?,
        o.parse().map_err(|_| format!("{s:?}: bad offset"))?,
    ))
}

const DLQ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

async fn read_dlq(config: &SinkConfig) -> anyhow::Result<Vec<gridclue_sink::dlq::DlqEntry>> {
    let (kafka, topic) = (config.kafka(), config.dlq_topic.clone());
    tokio::task::spawn_blocking(move || gridclue_sink::dlq::read(&kafka, &topic, DLQ_TIMEOUT))
        .await?
}

async fn dlq(config: &SinkConfig, action: DlqCommand) -> anyhow::Result<()> {
    match action {
        DlqCommand::List {
            filter,
            pending,
            json,
        } => {
            let entries = read_dlq(config).await?;
            let selection = filter.selection(Vec::new());
            let chosen: Vec<&gridclue_sink::dlq::DlqEntry> = entries
                .iter()
                .filter(|e| selection.matches(e) && !(pending && e.replayed))
                .collect();
            if json {
                for e in &chosen {
                    println!("{}", serde_json::to_string(e)?);
                }
                return Ok(());
            }
            println!(
                "{:<9} {:<8} {:<20} {:<8} {:<20} {:<26} {:<8} DETAIL",
                "PARTITION", "OFFSET", "AT (UTC)", "STAGE", "REASON", "SOURCE", "REPLAYED"
            );
            for e in &chosen {
                match &e.record {
                    Ok(r) => {
                        let at = chrono::DateTime::from_timestamp_millis(r.at_ms as i64)
                            .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                            .unwrap_or_default();
                        let detail: String = r.detail.chars().take(60).collect();
                        println!(
                            "{:<9} {:<8} {:<20} {:<8} {:<20} {:<26} {:<8} {}",
                            e.partition,
                            e.offset,
                            at,
                            r.stage,
                            r.reason.as_str(),
                            format!(
                                "{}/{}/{}",
                                r.source_topic, r.source_partition, r.source_offset
                            ),
                            if e.replayed { "yes" } else { "no" },
                            detail
                        );
                    }
                    Err(why) => println!(
                        "{:<9} {:<8} {:<20} {:<8} {:<20} {:<26} {:<8} {}",
                        e.partition, e.offset, "-", "-", "unreadable", "-", "-", why
                    ),
                }
            }
            println!();
            for (reason, n) in gridclue_sink::dlq::count_by_reason(&chosen) {
                println!("{n:>8}  {reason}");
            }
            println!(
                "{:>8}  records ({} in the topic)",
                chosen.len(),
                entries.len()
            );
            Ok(())
        }
        DlqCommand::Show { partition, offset } => {
            let entries = read_dlq(config).await?;
            let e = entries
                .iter()
                .find(|e| e.partition == partition && e.offset == offset)
                .ok_or_else(|| {
                    anyhow::anyhow!("{} has no record at {partition}/{offset}", config.dlq_topic)
                })?;
            println!("{}", serde_json::to_string_pretty(e)?);
            Ok(())
        }
        DlqCommand::Replay {
            filter,
            record,
            dry_run,
        } => {
            let selection = filter.selection(record);
            let report = gridclue_sink::dlq::replay(
                &config.kafka(),
                &config.dlq_topic,
                &selection,
                dry_run,
                DLQ_TIMEOUT,
            )
            .await?;
            println!(
                "{} {}; {} already replayed (skipped); {} unreadable (skipped)",
                report.replayed,
                if dry_run {
                    "would be replayed"
                } else {
                    "replayed"
                },
                report.already_replayed,
                report.unreadable
            );
            Ok(())
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    gridclue_core::telemetry::init_tracing("sink");
    gridclue_core::stamp_build_commit!();
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
        Some(Command::Dlq { action }) => dlq(&config, action).await,
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
    println!(
        "status_counts:    clues {} / {} in the latest states; groups off: {}",
        c.status_clues, c.states_clues, c.status_groups_off
    );
    println!("trend_days:       groups off: {}", c.trend_groups_off);
    println!(
        "open_cases:       {} open clues; states missing: {}, states not an open clue's latest: {}",
        c.open_clues, c.open_cases_missing, c.open_cases_extra
    );
    for (view, off) in &c.views_groups_off {
        println!("view of {view:<17} groups off: {off}");
    }
}
