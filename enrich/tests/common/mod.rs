//! Shared helpers of the enrich integration tests: a deterministic command workload, a
//! sequential reference run of the pure processor, the mock cluster and the stages running on
//! it, Kafka plumbing, and waits on observable conditions with deadlines.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::path::Path;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gridclue_core::category::CategoryCode;
pub use gridclue_core::rng::Rng;
use gridclue_core::service::Readiness;
use gridclue_core::wire::{
    Actor, ActorKind, Channel, Command, CommandEnvelope, EventEnvelope, Lifecycle, Report,
    SCHEMA_VERSION,
};
use gridclue_core::{ClueId, CommandId, GeoPoint};
use gridclue_enrich::dedupe::{DedupeKind, DedupeRecord, DedupeStage};
use gridclue_enrich::dedupe_runner::DedupeRunner;
use gridclue_enrich::geoindex::Located;
use gridclue_enrich::metrics::EnrichMetrics;
use gridclue_enrich::processor::{ClueState, DecideCtx, Output, Processor};
use gridclue_enrich::runner::Runner;
use gridclue_enrich::EnrichConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

pub const PARTITIONS: i32 = 4;
/// Fewer than the streets (13), so partitions hold several streets' logs.
pub const DEDUPE_PARTITIONS: i32 = 3;

/// Every topic the processor and the dedupe stage need (they refuse to start when one is
/// missing), with its number of partitions.
pub const TOPICS: [(&str, i32); 6] = [
    ("clues.commands", PARTITIONS),
    ("clues.events", PARTITIONS),
    ("clues.state", PARTITIONS),
    ("clues.dedupe", DEDUPE_PARTITIONS),
    ("clues.outcomes", PARTITIONS),
    ("clues.dlq", 1),
];

/// A one-broker mock cluster with every topic of [`TOPICS`].
pub fn cluster() -> MockCluster<'static, DefaultProducerContext> {
    cluster_with(&TOPICS)
}

/// A one-broker mock cluster with just these topics.
pub fn cluster_with(topics: &[(&str, i32)]) -> MockCluster<'static, DefaultProducerContext> {
    let mock = MockCluster::new(1).unwrap();
    for (topic, partitions) in topics {
        mock.create_topic(topic, *partitions, 1).unwrap();
    }
    mock
}

/// A test's own Kafka: a mock cluster with every topic of [`TOPICS`] (stopped when dropped), its
/// bootstrap address and a producer to it.
pub fn kafka() -> (
    MockCluster<'static, DefaultProducerContext>,
    String,
    FutureProducer,
) {
    let mock = cluster();
    let bootstrap = mock.bootstrap_servers();
    let producer = producer(&bootstrap);
    (mock, bootstrap, producer)
}

/// The processor's and the dedupe stage's configuration against `bootstrap`.
pub fn config(bootstrap: &str, batch_max: usize) -> EnrichConfig {
    EnrichConfig {
        kafka_brokers: bootstrap.to_owned(),
        kafka_extra: gridclue_core::kafka::dev_broker_tuning(),
        data_dir: data_dir(),
        batch_max,
        restore_timeout_ms: 20_000,
        // The workloads' deadlines (2025) have all passed: overdue facts, emitted when the
        // processor's clock says so, are no part of the reference run's facts.
        overdue_grace_ms: u64::MAX,
        ..EnrichConfig::default()
    }
}

/// A processor and a dedupe stage, as `gridclue_enrich::run` starts them.
pub struct Running {
    pub processor: JoinHandle<anyhow::Result<()>>,
    pub dedupe: JoinHandle<anyhow::Result<()>>,
    /// The commands partitions the processor owns.
    pub owned: Arc<AtomicUsize>,
    /// The dedupe partitions the dedupe stage owns.
    pub dedupe_owned: Arc<AtomicUsize>,
    stop: watch::Sender<bool>,
    pub metrics: EnrichMetrics,
    pub readiness: Readiness,
}

impl Running {
    pub fn start(cfg: &EnrichConfig) -> Self {
        // Logs only when asked for (RUST_LOG=info): they go to stderr, past the test harness.
        if std::env::var_os("RUST_LOG").is_some() {
            gridclue_core::telemetry::init_tracing("enrich-test");
        }
        let metrics = EnrichMetrics::new();
        let readiness = Readiness::default();
        let p = processor();
        let dedupe = DedupeRunner::new(cfg.clone(), p.dedupe, metrics.clone())
            .with_readiness(readiness.clone());
        let runner = Runner::new(cfg.clone(), p, metrics.clone()).with_readiness(readiness.clone());
        let (stop, rx) = watch::channel(false);
        Self {
            owned: runner.owned_partitions.clone(),
            dedupe_owned: dedupe.owned_partitions.clone(),
            processor: tokio::spawn(runner.run(rx.clone())),
            dedupe: tokio::spawn(dedupe.run(rx)),
            stop,
            metrics,
            readiness,
        }
    }

    /// Kills both loops (no shutdown, no final commit).
    pub async fn kill(self) {
        self.processor.abort();
        self.dedupe.abort();
        let _ = self.processor.await;
        let _ = self.dedupe.await;
    }

    /// Stops both loops cleanly; both end without an error.
    pub async fn stop(self) {
        self.stop.send(true).unwrap();
        self.processor.await.unwrap().unwrap();
        self.dedupe.await.unwrap().unwrap();
    }

    /// Waits until no report waits for its dedupe verdict any more.
    pub async fn until_no_report_pending(&self, timeout: Duration) {
        let pending = &self.metrics.pending_clues;
        wait_until("no report pending", timeout, || pending.get() == 0).await;
    }

    /// The reset gauge of one partition.
    pub fn log_reset(&self, topic: &str, partition: i32) -> i64 {
        self.metrics
            .log_reset_detected
            .with_label_values(&[topic, &partition.to_string()])
            .get()
    }
}

/// Waits until `done` holds, looking every 100 ms; fails after `timeout`.
pub async fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "{what} after {timeout:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// [`wait_until`] for a condition that has to be awaited (a request, a blocking Kafka read).
pub async fn wait_for<F: Future<Output = bool>>(
    what: &str,
    timeout: Duration,
    mut done: impl FnMut() -> F,
) {
    let deadline = Instant::now() + timeout;
    while !done().await {
        assert!(Instant::now() < deadline, "{what} after {timeout:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn data_dir() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../data")
        .display()
        .to_string()
}

pub fn processor() -> Processor {
    gridclue_enrich::build_processor(&EnrichConfig {
        data_dir: data_dir(),
        ..EnrichConfig::default()
    })
    .unwrap()
}

/// Monday 2025-03-10 09:00 in UTC+8, as epoch ms.
pub const MONDAY_9AM: u64 = 1_741_568_400_000;

/// A command issued at `at_ms`; its id is derived from the clue and the time (a report's from
/// the clue alone, as ingest does), so one clue's commands need distinct times.
pub fn envelope(clue: ClueId, command: Command, at_ms: u64) -> CommandEnvelope {
    let command_id = if matches!(command, Command::Report(_)) {
        CommandId::for_report(clue)
    } else {
        CommandId(Uuid::from_u128(
            u128::from(at_ms) << 64 | u128::from(clue.0.as_u128() as u64),
        ))
    };
    CommandEnvelope {
        v: SCHEMA_VERSION,
        command_id,
        clue_id: clue,
        issued_at_ms: at_ms,
        actor: Actor {
            scope: None,
            kind: ActorKind::Staff,
            id: "tester".into(),
            group: None,
        },
        command,
    }
}

pub fn report(category: &str, lat: f64, lon: f64) -> Command {
    Command::Report(Report {
        category: CategoryCode::parse(category).unwrap(),
        location: GeoPoint::new(lat, lon).unwrap(),
        description: "test".into(),
        photos: vec![],
        reported_at_ms: None,
        phone_hash: None,
        channel: Channel::Api,
    })
}

/// A point strictly inside some grid, as (lat, lon).
pub fn inside_point(p: &Processor, rng: &mut Rng) -> (f64, f64) {
    loop {
        let (lat, lon) = (31.13 + 0.14 * rng.f64(), 121.42 + 0.16 * rng.f64());
        if let Located::Inside {
            on_boundary: false, ..
        } = p.index.locate(lon, lat)
        {
            return (lat, lon);
        }
    }
}

/// Records per partition, in the order they are produced: (key, payload).
pub struct Workload {
    pub partitions: Vec<Vec<(String, Vec<u8>)>>,
}

impl Workload {
    pub fn len(&self) -> usize {
        self.partitions.iter().map(Vec::len).sum()
    }
}

/// A deterministic mix per partition: full and partial lifecycles, postponements, repeated
/// command ids, illegal transitions, near-duplicate reports (same category within metres of an
/// earlier clue of any partition), points outside the district, and a few undecodable records
/// and key mismatches.
pub fn workload(
    p: &Processor,
    partitions: usize,
    clues_per_partition: usize,
    seed: u64,
) -> Workload {
    let mut rng = Rng::new(seed);
    let categories = [
        "manhole_cover",
        "garbage_pile",
        "street_light",
        "food_safety",
    ];
    let mut out = Vec::new();
    let mut placed: Vec<(&str, f64, f64)> = Vec::new();
    for part in 0..partitions {
        let mut queues: Vec<(ClueId, Vec<Command>)> = Vec::new();
        for _ in 0..clues_per_partition {
            let clue = ClueId(Uuid::from_u128(
                u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64()),
            ));
            let r = rng.below(100);
            let (cat, lat, lon) = if r < 30 && !placed.is_empty() {
                let (c, la, lo) = placed[rng.below(placed.len())];
                (
                    c,
                    la + 0.0001 * (rng.f64() - 0.5),
                    lo + 0.0001 * (rng.f64() - 0.5),
                )
            } else if r < 33 {
                (categories[rng.below(4)], 30.5, 120.9)
            } else {
                let (la, lo) = inside_point(p, &mut rng);
                (categories[rng.below(4)], la, lo)
            };
            placed.push((cat, lat, lon));
            let mut cmds = vec![report(cat, lat, lon)];
            let life = [
                Command::Lifecycle(Lifecycle::Accept),
                Command::Lifecycle(Lifecycle::Dispatch {
                    department: "water_affairs".parse().unwrap(),
                }),
                Command::Lifecycle(Lifecycle::Start),
                Command::Lifecycle(Lifecycle::Handle {
                    photos: vec![],
                    note: "done".into(),
                }),
                Command::Lifecycle(Lifecycle::VerifyOk),
            ];
            let steps = rng.below(life.len() + 1);
            cmds.extend(life.into_iter().take(steps));
            if rng.below(4) == 0 {
                let at = 1 + rng.below(cmds.len());
                cmds.insert(
                    at,
                    Command::Lifecycle(Lifecycle::Postpone {
                        reason: "rain".into(),
                        working_hours: 1 + rng.below(9) as u32,
                    }),
                );
            }
            if rng.below(6) == 0 {
                // Illegal here (or terminal): refused with a reason.
                cmds.insert(1, Command::Lifecycle(Lifecycle::VerifyOk));
            }
            queues.push((clue, cmds));
        }
        let mut records = Vec::new();
        let mut t = MONDAY_9AM + part as u64 * 7_000;
        let mut last: HashMap<ClueId, Vec<u8>> = HashMap::new();
        while !queues.is_empty() {
            let i = rng.below(queues.len());
            let (clue, cmds) = &mut queues[i];
            let clue = *clue;
            let cmd = cmds.remove(0);
            if cmds.is_empty() {
                queues.swap_remove(i);
            }
            t += 30_000 + rng.below(600_000) as u64;
            let payload = envelope(clue, cmd, t).encode();
            records.push((clue.to_string(), payload.clone()));
            match rng.below(40) {
                // The same command again (a producer retry): a no-op.
                0 | 1 => records.push((clue.to_string(), payload.clone())),
                2 => records.push((clue.to_string(), b"\xffnot json".to_vec())),
                3 => {
                    if let Some(other) = last.values().next() {
                        records.push((clue.to_string(), other.clone()));
                    }
                }
                _ => {}
            }
            last.insert(clue, payload);
        }
        out.push(records);
    }
    Workload { partitions: out }
}

/// Facts without their processing time, which differs between runs, and without the time
/// Kafka took their command (the pure processor the references come from has no Kafka).
pub fn normalized(mut e: EventEnvelope) -> EventEnvelope {
    e.processed_at_ms = 0;
    e.ingested_at_ms = None;
    e
}

/// The dedupe verdicts a log of `clues.dedupe` gives, per clue (the first one): each partition
/// folded in order by a stage that never restarts.
pub fn verdicts_of(p: &Processor, log: &[(i32, Vec<u8>)]) -> HashMap<ClueId, Option<ClueId>> {
    let mut stages: HashMap<i32, (i64, DedupeStage)> = HashMap::new();
    let mut verdicts = HashMap::new();
    for (partition, bytes) in log {
        let (offset, stage) = stages
            .entry(*partition)
            .or_insert_with(|| (0, DedupeStage::new(p.dedupe)));
        // The stage passes records it cannot decode (they go to the DLQ).
        if let Ok(record) = DedupeRecord::decode(bytes) {
            if let Some(v) = stage.fold(*offset, &record) {
                verdicts.entry(v.clue_id).or_insert(v.duplicate_of);
            }
        }
        *offset += 1;
    }
    verdicts
}

/// The reference: each partition's commands decided in order by one processor that never
/// crashes, each report's verdict (from `verdicts`) applied right after it. Returns the facts by
/// identity and the number of refusals.
pub fn simulate(
    p: &Processor,
    w: &Workload,
    verdicts: &HashMap<ClueId, Option<ClueId>>,
) -> (BTreeMap<(ClueId, u32), EventEnvelope>, usize) {
    let mut facts = BTreeMap::new();
    let mut refusals = 0;
    for (partition, records) in w.partitions.iter().enumerate() {
        let mut states: HashMap<ClueId, ClueState> = HashMap::new();
        for (offset, (key, payload)) in records.iter().enumerate() {
            let Ok(cmd) = CommandEnvelope::decode(payload) else {
                continue;
            };
            if cmd.clue_id.to_string() != *key {
                continue;
            }
            let ctx = DecideCtx {
                now_ms: 0,
                offset: offset as i64,
                partition: partition as i32,
            };
            let mut decisions = vec![p.decide(states.get(&cmd.clue_id), &cmd, &ctx)];
            if let Some(next) = decisions[0].next.clone() {
                if next.pending.is_some() && !states.contains_key(&cmd.clue_id) {
                    let verdict = CommandEnvelope {
                        command_id: CommandId::for_dedupe_verdict(cmd.clue_id),
                        command: Command::DedupeVerdict {
                            duplicate_of: *verdicts.get(&cmd.clue_id).unwrap_or_else(|| {
                                panic!("no verdict on {} in the dedupe log", cmd.clue_id)
                            }),
                        },
                        ..cmd.clone()
                    };
                    decisions.push(p.decide(Some(&next), &verdict, &ctx));
                }
            }
            for d in decisions {
                if let Some(next) = d.next {
                    states.insert(cmd.clue_id, next);
                }
                for o in d.outputs {
                    match o {
                        Output::Event(e) => {
                            assert!(facts.insert((e.clue_id, e.seq), normalized(*e)).is_none());
                        }
                        Output::Rejected { .. } => refusals += 1,
                        Output::Repeat | Output::Held | Output::Outcome(_) => {}
                    }
                }
            }
        }
    }
    (facts, refusals)
}

pub fn producer(bootstrap: &str) -> FutureProducer {
    gridclue_core::kafka::producer_config(
        &gridclue_core::kafka::KafkaSettings::dev_broker(bootstrap),
        30_000,
    )
    .create()
    .unwrap()
}

/// Produces records `range` of every partition, in order, to the partition of their index.
pub async fn produce(
    producer: &FutureProducer,
    topic: &str,
    w: &Workload,
    range: std::ops::Range<usize>,
) {
    for (part, records) in w.partitions.iter().enumerate() {
        let end = range.end.min(records.len());
        if range.start >= end {
            continue;
        }
        let sends = records[range.start..end].iter().map(|(k, v)| {
            producer.send(
                FutureRecord::to(topic)
                    .partition(part as i32)
                    .key(k)
                    .payload(v),
                Duration::from_secs(10),
            )
        });
        for r in futures::future::join_all(sends).await {
            r.map_err(|(e, _)| e).unwrap();
        }
    }
}

/// Every record of a topic from the beginning up to its end, read again as the topic grows
/// until `done` says enough (or `timeout` passes).
pub fn read_all(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    timeout: Duration,
    mut done: impl FnMut(&[Vec<u8>]) -> bool,
) -> Vec<Vec<u8>> {
    let mut payloads = Vec::new();
    read_partitioned(bootstrap, topic, partitions, timeout, |got| {
        payloads = got.iter().map(|(_, b)| b.clone()).collect();
        done(&payloads)
    });
    payloads
}

/// [`read_all`] with each record's partition (in offset order within each partition).
pub fn read_partitioned(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    timeout: Duration,
    mut done: impl FnMut(&[(i32, Vec<u8>)]) -> bool,
) -> Vec<(i32, Vec<u8>)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut next: HashMap<i32, i64> = HashMap::new();
    loop {
        let ends: Vec<(i32, i64)> = (0..partitions)
            .map(|p| {
                let (_, hi) = consumer
                    .fetch_watermarks(topic, p, Duration::from_secs(5))
                    .unwrap();
                (p, hi)
            })
            .collect();
        while ends
            .iter()
            .any(|(p, hi)| next.get(p).copied().unwrap_or(0) < *hi)
        {
            assert!(Instant::now() < deadline, "reading {topic} timed out");
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    out.push((m.partition(), m.payload().unwrap_or_default().to_vec()));
                    next.insert(m.partition(), m.offset() + 1);
                }
                Some(Err(e)) => panic!("reading {topic}: {e}"),
                None => {}
            }
        }
        if done(&out) || Instant::now() >= deadline {
            return out;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every record of `topic` up to its end now, with its partition, read off the runtime's
/// threads.
pub async fn read_to_end(
    bootstrap: &str,
    topic: &'static str,
    partitions: i32,
) -> Vec<(i32, Vec<u8>)> {
    let b = bootstrap.to_owned();
    tokio::task::spawn_blocking(move || {
        read_partitioned(&b, topic, partitions, Duration::from_secs(30), |_| true)
    })
    .await
    .unwrap()
}

/// Checks the facts read back against the reference: every identity present, none extra, and
/// every copy of an identity identical to the reference fact. Returns the number of copies
/// beyond the first (harmless replays).
pub fn check_exactly_once(
    expected: &BTreeMap<(ClueId, u32), EventEnvelope>,
    got: &[Vec<u8>],
) -> usize {
    let mut seen: BTreeMap<(ClueId, u32), usize> = BTreeMap::new();
    for bytes in got {
        let e = normalized(EventEnvelope::decode(bytes).unwrap());
        let id = (e.clue_id, e.seq);
        let want = expected
            .get(&id)
            .unwrap_or_else(|| panic!("unexpected fact {id:?}: {e:?}"));
        assert_eq!(&e, want, "fact {id:?} differs from the reference");
        *seen.entry(id).or_default() += 1;
    }
    let missing: Vec<_> = expected.keys().filter(|k| !seen.contains_key(k)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} facts missing, e.g. {:?}",
        missing.len(),
        expected.len(),
        &missing[..missing.len().min(3)]
    );
    seen.values().map(|n| n - 1).sum()
}

/// A count of facts per identity that stops reading once all are there.
pub fn all_facts_seen(expected: usize) -> impl FnMut(&[Vec<u8>]) -> bool {
    move |got: &[Vec<u8>]| {
        let ids: std::collections::HashSet<(ClueId, u32)> = got
            .iter()
            .filter_map(|b| EventEnvelope::decode(b).ok())
            .map(|e| (e.clue_id, e.seq))
            .collect();
        ids.len() >= expected
    }
}

/// Clues whose report the processor forwards to the dedupe stage (placed inside the district,
/// known category), as the processor itself decides it.
pub fn inside_reports(p: &Processor, w: &Workload) -> usize {
    let ctx = DecideCtx {
        now_ms: 0,
        offset: 0,
        partition: 0,
    };
    w.partitions
        .iter()
        .flatten()
        .filter_map(|(key, payload)| {
            let cmd = CommandEnvelope::decode(payload).ok()?;
            (cmd.clue_id.to_string() == *key && !p.decide(None, &cmd, &ctx).forwards.is_empty())
                .then_some(cmd.clue_id)
        })
        .collect::<HashSet<_>>()
        .len()
}

/// `clues.dedupe`, read once `reports` clues have been placed there.
pub async fn dedupe_log(bootstrap: &str, reports: usize) -> Vec<(i32, Vec<u8>)> {
    let b = bootstrap.to_owned();
    tokio::task::spawn_blocking(move || {
        read_partitioned(
            &b,
            "clues.dedupe",
            DEDUPE_PARTITIONS,
            Duration::from_secs(60),
            |got| {
                let placed: HashSet<_> = got
                    .iter()
                    .filter_map(|(_, b)| DedupeRecord::decode(b).ok())
                    .filter(|r| matches!(r.kind, DedupeKind::Placed { .. }))
                    .map(|r| r.clue_id)
                    .collect();
                placed.len() >= reports
            },
        )
    })
    .await
    .unwrap()
}

/// The reference run of `w` ([`simulate`]) with the verdicts of the dedupe log on the cluster,
/// read once every report of `w` that goes to the dedupe stage has been placed there.
pub async fn reference(
    bootstrap: &str,
    p: &Processor,
    w: &Workload,
) -> (BTreeMap<(ClueId, u32), EventEnvelope>, usize) {
    let log = dedupe_log(bootstrap, inside_reports(p, w)).await;
    simulate(p, w, &verdicts_of(p, &log))
}

/// `clues.events`, read off the runtime's threads until `done` says enough (or a minute
/// passes).
pub async fn events_until(
    bootstrap: &str,
    done: impl FnMut(&[Vec<u8>]) -> bool + Send + 'static,
) -> Vec<Vec<u8>> {
    let b = bootstrap.to_owned();
    tokio::task::spawn_blocking(move || {
        read_all(
            &b,
            "clues.events",
            PARTITIONS,
            Duration::from_secs(60),
            done,
        )
    })
    .await
    .unwrap()
}

/// `clues.events`, read until `facts` distinct facts are there.
pub async fn facts_on_events(bootstrap: &str, facts: usize) -> Vec<Vec<u8>> {
    events_until(bootstrap, all_facts_seen(facts)).await
}
