//! `gridclue-devbroker`: the local Kafka-protocol broker of the dev stack.
//!
//! Hosts librdkafka's mock cluster (3 brokers by default), creates the pipeline's topics, prints
//! the bootstrap address on stdout and writes it to `--addr-file` (atomically, once the topics are
//! served), then runs until SIGTERM or SIGINT, when it removes the address file and stops.
//!
//! With `--journal-dir` it keeps its state across restarts: at start it replays the journaled
//! records (same partitions, same offsets) and committed offsets before it publishes the address;
//! while it runs it journals what it is sent; on SIGTERM/SIGINT it lets the journal catch up with
//! every partition and flushes it before exiting. Without it nothing is kept. The ports change on
//! every start.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use gridclue_devstack::{
    remove_addr_file_if_ours, replication_factor_for, standard_topics, start_durable_cluster,
    start_mock_cluster, write_addr_file, DurableKafka, JournalConfig, MockKafka, DEFAULT_BROKERS,
    DEFAULT_FLUSH_INTERVAL, DEFAULT_PARTITIONS, SERVICE_GROUPS,
};
use tokio::signal::unix::{signal, SignalKind};
use tracing::{info, warn};

#[derive(Debug, Parser)]
#[command(
    name = "gridclue-devbroker",
    version,
    about = "Local Kafka-protocol dev broker (librdkafka mock cluster) with gridclue's topics"
)]
struct Args {
    /// Write the bootstrap address here (atomically) once the topics are served; removed on exit.
    #[arg(long, env = "GRIDCLUE_DEVBROKER_ADDR_FILE")]
    addr_file: Option<PathBuf>,

    /// Partitions of clues.commands, clues.events and clues.state (clues.dlq always has 1).
    #[arg(long, env = "GRIDCLUE_DEVBROKER_PARTITIONS", default_value_t = DEFAULT_PARTITIONS,
          value_parser = clap::value_parser!(i32).range(1..=1000))]
    partitions: i32,

    /// Number of mock brokers.
    #[arg(long, env = "GRIDCLUE_DEVBROKER_BROKERS", default_value_t = DEFAULT_BROKERS,
          value_parser = clap::value_parser!(i32).range(1..=16))]
    brokers: i32,

    /// Keep the broker's records and consumer offsets in this directory across restarts.
    #[arg(long, env = "GRIDCLUE_DEVBROKER_JOURNAL_DIR")]
    journal_dir: Option<PathBuf>,

    /// Consumer groups whose committed offsets the journal keeps (comma-separated; groups the
    /// journal already holds are kept too). Default: the services' groups.
    #[arg(long = "group", env = "GRIDCLUE_DEVBROKER_GROUPS", value_delimiter = ',',
          default_values_t = SERVICE_GROUPS.map(String::from))]
    groups: Vec<String>,

    /// How often journaled records are fsync'd, in ms: what a SIGKILL can lose.
    #[arg(long, env = "GRIDCLUE_DEVBROKER_JOURNAL_FLUSH_MS",
          default_value_t = DEFAULT_FLUSH_INTERVAL.as_millis() as u64,
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    journal_flush_ms: u64,

    /// Log format: `text` (key=value) or `json`.
    #[arg(long, env = "GRIDCLUE_LOG_FORMAT", default_value = "text",
          value_parser = ["text", "json"])]
    log_format: String,
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(true);
    if format == "json" {
        builder.json().flatten_event(true).init();
    } else {
        builder.with_ansi(false).init();
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_logging(&args.log_format);

    let started = Instant::now();
    // Signal handlers go in before anything is published, so a stop request that arrives at any
    // point after the address file exists still removes it.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the signal runtime")?;
    let (mut term, mut int) = {
        let _guard = runtime.enter();
        (
            signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
        )
    };

    let replication = replication_factor_for(args.brokers);
    let topics = standard_topics(args.partitions, replication);
    let broker = match &args.journal_dir {
        Some(dir) => {
            let mut config = JournalConfig::new(dir);
            config.groups = args.groups.clone();
            config.flush_interval = Duration::from_millis(args.journal_flush_ms);
            let durable = start_durable_cluster(args.brokers, &topics, config)
                .with_context(|| format!("starting the mock cluster from {}", dir.display()))?;
            Broker::Durable(durable)
        }
        None => Broker::InMemory(
            start_mock_cluster(args.brokers, &topics).context("starting the mock cluster")?,
        ),
    };
    let kafka = broker.kafka();
    let bootstrap = kafka.bootstrap_servers().to_string();
    for t in kafka.topics() {
        info!(
            topic = %t.name,
            partitions = t.partitions,
            replication_factor = t.replication_factor,
            "topic created"
        );
    }

    if let Some(path) = &args.addr_file {
        write_addr_file(path, &bootstrap)?;
        info!(path = %path.display(), "address file written");
    }
    // Also on stdout for interactive use; a closed stdout is not an error.
    let _ = writeln!(std::io::stdout(), "{bootstrap}");
    info!(
        bootstrap = %bootstrap,
        brokers = args.brokers,
        startup_ms = started.elapsed().as_millis() as u64,
        pid = std::process::id(),
        journal = args.journal_dir.as_ref().map(|d| d.display().to_string()).unwrap_or_default(),
        "dev broker ready"
    );

    let signal_name = runtime.block_on(async {
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    });
    info!(signal = signal_name, "shutting down");

    // The journal catches up while the brokers still serve; the address goes after it.
    let result = match broker {
        Broker::Durable(durable) => durable
            .shutdown()
            .map(|report| {
                if !report.lagging.is_empty() {
                    warn!(partitions = ?report.lagging, "stopped with records not journaled");
                }
            })
            .context("stopping the journal"),
        Broker::InMemory(kafka) => {
            drop(kafka);
            Ok(())
        }
    };
    if let Some(path) = &args.addr_file {
        match remove_addr_file_if_ours(path, &bootstrap) {
            Ok(true) => info!(path = %path.display(), "address file removed"),
            Ok(false) => warn!(path = %path.display(), "address file no longer ours; left alone"),
            Err(e) => warn!(error = %e, "could not remove the address file"),
        }
    }
    result?;
    info!("stopped");
    Ok(())
}

enum Broker {
    InMemory(MockKafka),
    Durable(DurableKafka),
}

impl Broker {
    fn kafka(&self) -> &MockKafka {
        match self {
            Broker::InMemory(kafka) => kafka,
            Broker::Durable(durable) => durable.kafka(),
        }
    }
}
