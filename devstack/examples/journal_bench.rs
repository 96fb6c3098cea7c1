//! What the dev broker's journal costs, and how long a restart takes to replay it.
//!
//! `cargo run --release -p gridclue-devstack --example journal_bench -- --records 100000`
//!
//! 1. produces the records (acks=all, idempotent, as the services do) to a mock cluster without a
//!    journal, then to one with a journal, and compares the time until every record is
//!    acknowledged;
//! 2. stops the journaled cluster (the journal catches up and flushes: how far behind it was);
//! 3. starts a cluster from the journal (replay, offsets checked) and reports the time.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use gridclue_devstack::{start_durable_cluster, start_mock_cluster, JournalConfig, TopicSpec};
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use tracing::info;

#[derive(Debug, Parser)]
struct Args {
    /// Records to produce.
    #[arg(long, default_value_t = 100_000)]
    records: u64,
    /// Partitions of the topic. The mock keeps ~5 MB per partition: records × value size
    /// beyond partitions × 5 MB are dropped by the mock (offsets still count them).
    #[arg(long, default_value_t = 12)]
    partitions: i32,
    /// Bytes of each record's value (a command or fact is ~300–600 bytes of JSON).
    #[arg(long, default_value_t = 400)]
    value_bytes: usize,
}

const TOPIC: &str = "bench.records";

/// Produces `records` records and returns the time until the last acknowledgement.
fn produce(bootstrap: &str, args: &Args) -> anyhow::Result<Duration> {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "2")
        .create()
        .context("producer")?;
    let value = vec![b'x'; args.value_bytes];
    let started = Instant::now();
    for i in 0..args.records {
        let key = format!("clue-{i:08}");
        let mut record = BaseRecord::<str, [u8]>::to(TOPIC)
            .partition((i % args.partitions as u64) as i32)
            .key(&key)
            .payload(&value);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    producer.poll(Duration::from_millis(5));
                    record = back;
                }
                Err((e, _)) => return Err(e).context("send"),
            }
        }
    }
    producer.flush(Duration::from_secs(120)).context("flush")?;
    Ok(started.elapsed())
}

fn per_second(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let topics = [TopicSpec::new(TOPIC, args.partitions, 3)];

    info!(records = args.records, "producing without a journal");
    let plain = start_mock_cluster(3, &topics)?;
    let without = produce(plain.bootstrap_servers(), &args)?;
    drop(plain);

    let dir = tempfile::tempdir().context("journal dir")?;
    info!(records = args.records, dir = %dir.path().display(), "producing with a journal");
    let journaled = start_durable_cluster(3, &topics, JournalConfig::new(dir.path()))?;
    let with = produce(journaled.bootstrap_servers(), &args)?;
    let stop_started = Instant::now();
    let report = journaled.shutdown()?;
    let catch_up = stop_started.elapsed();
    anyhow::ensure!(
        report.records == args.records && report.lagging.is_empty(),
        "journal incomplete: {report:?}"
    );

    info!("restarting from the journal");
    let restored = start_durable_cluster(3, &topics, JournalConfig::new(dir.path()))?;
    let replay = restored.restored().clone();
    anyhow::ensure!(replay.records == args.records, "replayed {replay:?}");
    let ends: i64 = replay.end_offsets.values().sum();
    drop(restored);

    println!(
        "records {}  partitions {}  value {} B",
        args.records, args.partitions, args.value_bytes
    );
    println!(
        "produce, no journal:   {:>7.0} ms  {:>8.0} records/s",
        without.as_secs_f64() * 1e3,
        per_second(args.records, without)
    );
    println!(
        "produce, journaled:    {:>7.0} ms  {:>8.0} records/s",
        with.as_secs_f64() * 1e3,
        per_second(args.records, with)
    );
    println!(
        "stop (catch-up+flush): {:>7.0} ms  journal {} bytes ({:.0} B/record)",
        catch_up.as_secs_f64() * 1e3,
        report.bytes,
        report.bytes as f64 / args.records as f64
    );
    println!(
        "restart:               {:>7.0} ms  (brokers, replay of {} records checked offset by offset, commits); end offsets sum {ends}",
        replay.elapsed.as_secs_f64() * 1e3,
        replay.records
    );
    Ok(())
}
