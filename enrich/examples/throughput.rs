//! End-to-end throughput of the clue processor on librdkafka's mock cluster (in-process Kafka
//! protocol brokers): runs one processor and its dedupe stage, produces report and accept commands
//! once both have joined (every report makes the round trip through `clues.dedupe` and back as a
//! verdict), and reports commands and facts per second from its first command handled to its
//! last fact acknowledged.
//!
//! `cargo run --release -p gridclue-enrich --example throughput -- 60000 [batch_max]` (clues; keep the
//! commands under ~5 MB per partition: the mock deletes older records beyond that).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use gridclue_core::category::CategoryCode;
use gridclue_core::wire::{
    Actor, ActorKind, Channel, Command, CommandEnvelope, Lifecycle, Report, SCHEMA_VERSION,
};
use gridclue_core::{ClueId, CommandId, GeoPoint};
use gridclue_enrich::dedupe_runner::DedupeRunner;
use gridclue_enrich::geoindex::Located;
use gridclue_enrich::metrics::EnrichMetrics;
use gridclue_enrich::runner::Runner;
use gridclue_enrich::EnrichConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

/// The mock cluster keeps at most 5 MB per partition (older records are deleted), so the
/// workload is spread over enough partitions to stay below that.
const PARTITIONS: i32 = 12;

fn main() -> anyhow::Result<()> {
    let clues: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("a number of clues"))
        .unwrap_or(60_000);
    gridclue_core::telemetry::init_tracing("throughput");
    let mock = MockCluster::new(1)?;
    for (t, p) in [
        ("clues.commands", PARTITIONS),
        ("clues.events", PARTITIONS),
        ("clues.state", PARTITIONS),
        ("clues.dedupe", 6),
        ("clues.outcomes", PARTITIONS),
        ("clues.dlq", 1),
    ] {
        mock.create_topic(t, p, 1)?;
    }
    let bootstrap = mock.bootstrap_servers();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/../data").to_owned();
    let mut config = EnrichConfig {
        kafka_brokers: bootstrap.clone(),
        kafka_extra: gridclue_core::kafka::dev_broker_tuning(),
        data_dir: data,
        ..EnrichConfig::default()
    };
    if let Some(b) = std::env::args().nth(2) {
        config.batch_max = b.parse().expect("a batch size");
    }
    let processor = gridclue_enrich::build_processor(&config)?;

    // Commands: a report per clue at a random point inside the district, and an accept for
    // every other clue.
    let mut s = 7u64;
    let mut unit = move || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (s >> 11) as f64 / (1u64 << 53) as f64
    };
    let categories = [
        "manhole_cover",
        "garbage_pile",
        "street_light",
        "food_safety",
    ];
    let t0_ms = 1_741_568_400_000u64;
    let mut commands: Vec<(String, Vec<u8>)> = Vec::with_capacity(clues * 3 / 2);
    let actor = Actor {
        scope: None,
        kind: ActorKind::Reporter,
        id: "tok_load".into(),
        group: None,
    };
    for i in 0..clues {
        let (lat, lon) = loop {
            let (lat, lon) = (31.13 + 0.14 * unit(), 121.42 + 0.16 * unit());
            if matches!(processor.index.locate(lon, lat), Located::Inside { .. }) {
                break (lat, lon);
            }
        };
        let clue = ClueId::new_random();
        let report = CommandEnvelope {
            v: SCHEMA_VERSION,
            command_id: CommandId::for_report(clue),
            clue_id: clue,
            issued_at_ms: t0_ms + i as u64 * 10,
            actor: actor.clone(),
            command: Command::Report(Report {
                category: CategoryCode::parse(categories[i % 4]).expect("category"),
                location: GeoPoint::new(lat, lon)?,
                description: "load".into(),
                photos: vec![],
                reported_at_ms: None,
                phone_hash: None,
                channel: Channel::Api,
            }),
        };
        commands.push((clue.to_string(), report.encode()));
        if i % 2 == 0 {
            let accept = CommandEnvelope {
                command_id: CommandId::new_random(),
                issued_at_ms: report.issued_at_ms + 5,
                command: Command::Lifecycle(Lifecycle::Accept),
                ..report
            };
            commands.push((clue.to_string(), accept.encode()));
        }
    }
    let total = commands.len();
    rt.block_on(async {
        let producer: FutureProducer = gridclue_core::kafka::producer_config(&gridclue_core::kafka::KafkaSettings::dev_broker(&bootstrap), 60_000)
            .set("linger.ms", "5")
            .create()?;
        let metrics = EnrichMetrics::new();
        let dedupe = DedupeRunner::new(config.clone(), processor.dedupe, metrics.clone());
        let runner = Runner::new(config.clone(), processor, metrics.clone());
        let (owned, dedupe_owned) = (
            runner.owned_partitions.clone(),
            dedupe.owned_partitions.clone(),
        );
        let (stop, rx) = tokio::sync::watch::channel(false);
        let started = Instant::now();
        let dedupe_task = tokio::spawn(dedupe.run(rx.clone()));
        let task = tokio::spawn(runner.run(rx));
        // Both consumer groups join first (the mock's coordinator waits ~3 s per new group), so
        // the run measures processing, not the joins.
        while owned.load(Ordering::SeqCst) == 0 || dedupe_owned.load(Ordering::SeqCst) == 0 {
            if started.elapsed() > Duration::from_secs(60) {
                anyhow::bail!("the consumer groups did not form within a minute");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let t = Instant::now();
        for chunk in commands.chunks(10_000) {
            let sends = chunk.iter().map(|(k, v)| {
                producer.send(
                    FutureRecord::to("clues.commands").key(k).payload(v),
                    Duration::from_secs(30),
                )
            });
            for r in futures::future::join_all(sends).await {
                r.map_err(|(e, _)| e)?;
            }
        }
        eprintln!(
            "produced {total} commands ({clues} clues) in {:.2} s",
            t.elapsed().as_secs_f64()
        );

        let counter: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()?;
        let events_written = || -> i64 {
            (0..PARTITIONS)
                .map(|p| {
                    counter
                        .fetch_watermarks("clues.events", p, Duration::from_secs(5))
                        .map_or(0, |(_, hi)| hi)
                })
                .sum()
        };
        let mut first: Option<Instant> = None;
        let mut task = task;
        loop {
            if task.is_finished() {
                anyhow::bail!("the processor stopped: {:?}", (&mut task).await);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            // Every clue's report comes back once more as its verdict.
            let handled: u64 = ["report", "accept", "dedupe_verdict"]
                .iter()
                .map(|t| metrics.commands.with_label_values(&[t]).get())
                .sum();
            let events = events_written();
            // From the first command handled: a report's fact appears only after its verdict.
            if handled > 0 && first.is_none() {
                first = Some(Instant::now());
            }
            if handled as usize >= total + clues && events as u64 >= metrics.events.get() {
                let end = Instant::now();
                let busy = end - first.unwrap_or(started);
                println!(
                    "{total} commands → {events} facts in {:.2} s after the first command \
                     ({:.2} s after start, incl. the group joins): {:.0} commands/s, {:.0} facts/s; \
                     duplicates found {}, refusals {}",
                    busy.as_secs_f64(),
                    (end - started).as_secs_f64(),
                    total as f64 / busy.as_secs_f64(),
                    events as f64 / busy.as_secs_f64(),
                    metrics.duplicates.get(),
                    metrics.dlq.with_label_values(&["terminal_state"]).get(),
                );
                break;
            }
            if started.elapsed() > Duration::from_secs(600) {
                anyhow::bail!("not done after 10 minutes: {handled} of {total} handled");
            }
        }
        stop.send(true).ok();
        task.await??;
        dedupe_task.await??;
        Ok::<_, anyhow::Error>(())
    })?;
    drop(mock);
    Ok(())
}
