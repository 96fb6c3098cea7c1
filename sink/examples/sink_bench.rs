//! Load tool for the sink: throughput into ClickHouse under a backlog, and freshness (fact
//! produced → visible to a query) at a steady rate. Runs a mock Kafka cluster in-process and the
//! sink in-process (`gridclue_sink::run`) against a real ClickHouse, in a fresh database.
//!
//! ```text
//! cargo run --release -p gridclue-sink --example sink_bench -- throughput --facts 1000000
//! cargo run --release -p gridclue-sink --example sink_bench -- freshness --rate 1000 --seconds 30
//! cargo run --release -p gridclue-sink --example sink_bench -- query --facts 10000000
//! cargo run --release -p gridclue-sink --example sink_bench -- raw --facts 500000
//! cargo run --release -p gridclue-sink --example sink_bench -- peer --facts 500000
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use gridclue_core::category::Urgency;
use gridclue_core::wire::{now_ms, Channel, EventEnvelope, Fact, Placement, Reported};
use gridclue_core::{CategoryCode, ClueId, CommandId, GeoPoint, GridCode, ReporterGroup, Status};
use gridclue_sink::{SinkConfig, SinkMetrics};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

#[derive(Parser)]
struct Cli {
    #[arg(long, default_value = "http://127.0.0.1:18123")]
    clickhouse_url: String,
    /// Partitions of the events topic. librdkafka's mock broker keeps only ~5 MB (and at most
    /// 100 000 message sets) per partition and drops older records, so a large backlog needs
    /// many partitions (the tool checks that nothing was dropped).
    #[arg(long, default_value_t = 64)]
    partitions: i32,

    /// Keep the benchmark database afterwards.
    #[arg(long)]
    keep_db: bool,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Pre-load a backlog of facts, then time the sink draining it into ClickHouse.
    Throughput {
        #[arg(long, default_value_t = 1_000_000)]
        facts: u64,
    },
    /// Produce facts at a steady rate with probe reports; time each probe until a query sees it.
    Freshness {
        #[arg(long, default_value_t = 1_000)]
        rate: u64,
        #[arg(long, default_value_t = 30)]
        seconds: u64,
    },
    /// ClickHouse insert speed of prepared rows, with and without the aggregate views.
    Insert {
        #[arg(long, default_value_t = 100_000)]
        batch: usize,
        #[arg(long, default_value_t = 10)]
        batches: usize,
    },
    /// The sink's ceiling: the rows the sink writes for a backlog of `facts` (same order, each
    /// batch's latest `clues` row per clue, then its `clue_events` rows), inserted with a raw
    /// `INSERT … FORMAT RowBinary` per table and batch, with the views; no Kafka.
    Raw {
        #[arg(long, default_value_t = 500_000)]
        facts: u64,
        /// Facts per batch (the sink's batches hold up to `batch_max_rows`, 100 000).
        #[arg(long, default_value_t = 100_000)]
        batch: usize,
        /// A materialized view to drop before inserting (repeatable), to price a view: e.g.
        /// the three of migration 0013.
        #[arg(long)]
        drop_view: Vec<String>,
    },
    /// The peer: the plain loop a user would write (rdkafka StreamConsumer → clickhouse
    /// inserts → commit), draining the same backlog into the same tables and views.
    Peer {
        #[arg(long, default_value_t = 500_000)]
        facts: u64,
        /// Facts per insert…
        #[arg(long, default_value_t = 100_000)]
        batch: usize,
        /// …or the time since a batch's first fact, whichever comes first.
        #[arg(long, default_value_t = 500)]
        linger_ms: u64,
    },
    /// CPU cost of decoding and folding facts (no Kafka, no ClickHouse).
    Fold {
        #[arg(long, default_value_t = 300_000)]
        facts: u64,
    },
    /// Fill ClickHouse with facts through the sink, then time the summary queries.
    Query {
        #[arg(long, default_value_t = 10_000_000)]
        facts: u64,
        #[arg(long, default_value_t = 50)]
        runs: usize,
    },
}

const CATEGORIES: [&str; 6] = [
    "manhole_cover",
    "garbage_pile",
    "food_safety",
    "street_light",
    "fire_lane_blocked",
    "street_vending",
];

/// A bench insert may wait long on a loaded box; a timeout would only stop the measurement.
const BENCH_TIMEOUTS: gridclue_sink::store::InsertTimeouts = gridclue_sink::store::InsertTimeouts {
    send: Duration::from_secs(60),
    end: Duration::from_secs(60),
};

/// A client of database `db` on the bench's ClickHouse, every migration applied.
async fn migrated_db(clickhouse_url: &str, db: &str) -> clickhouse::Client {
    let settings = gridclue_core::ch::ChSettings {
        url: clickhouse_url.to_owned(),
        database: db.to_owned(),
        user: "default".into(),
        password: Default::default(),
    };
    let client = gridclue_core::ch::connect(&settings).await.unwrap();
    gridclue_sink::migrations::apply(&client).await.unwrap();
    client
}

fn grid_codes() -> Vec<GridCode> {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/district/grids.geojson");
    let district = gridclue_district::load_geojson(path).expect("district map");
    district.grids.into_iter().map(|g| g.grid_code).collect()
}

/// Facts for clues `first..first+n`, in waves: all reports, then all acceptances, … so that a
/// batch holds facts of many different clues (the expensive case for the `clues` table).
struct FactGen {
    grids: Vec<GridCode>,
}

impl FactGen {
    fn report(&self, i: u64, clue: ClueId, at: u64) -> EventEnvelope {
        let g = self.grids[(i as usize * 7919) % self.grids.len()];
        EventEnvelope {
            actor: None,
            v: 1,
            clue_id: clue,
            seq: 0,
            command_id: CommandId::for_report(clue),
            occurred_at_ms: at,
            processed_at_ms: at,
            ingested_at_ms: None,
            status: Status::Reported,
            fact: Fact::Reported(Box::new(Reported {
                category: CategoryCode::parse(CATEGORIES[i as usize % CATEGORIES.len()]).unwrap(),
                location: GeoPoint::new(31.2 + (i % 100) as f64 * 1e-4, 121.5).unwrap(),
                placement: Placement::Inside {
                    grid_code: g,
                    on_boundary: false,
                },
                map_version: "bench".into(),
                department: "city_mgmt".parse().unwrap(),
                urgency: Urgency::Normal,
                deadline_ms: Some(at + 86_400_000),
                reporter_id: format!("tok_{:06}", i % 5000),
                reporter_group: Some(ReporterGroup::ALL[i as usize % 5]),
                duplicate_of: None,
                description: "路边有垃圾堆物，影响通行".into(),
                photos: vec![],
                channel: Channel::Api,
            })),
        }
    }

    fn lifecycle(clue: ClueId, seq: u32, at: u64) -> EventEnvelope {
        let (fact, status) = match seq {
            1 => (
                Fact::Accepted {
                    deadline_ms: None,
                    yellow_at_ms: None,
                },
                Status::Accepted,
            ),
            2 => (
                Fact::Dispatched {
                    department: "city_mgmt".parse().unwrap(),
                },
                Status::Dispatched,
            ),
            3 => (Fact::Started, Status::InProgress),
            4 => (
                Fact::Handled {
                    photos: vec![],
                    note: "cleared".into(),
                },
                Status::Handled,
            ),
            _ => (
                Fact::Verified {
                    working_ms: Some(7 * 3_600_000),
                },
                Status::Closed,
            ),
        };
        EventEnvelope {
            actor: None,
            v: 1,
            clue_id: clue,
            seq,
            command_id: CommandId::new_random(),
            occurred_at_ms: at,
            processed_at_ms: at,
            ingested_at_ms: None,
            status,
            fact,
        }
    }
}

fn mock_cluster(
    partitions: i32,
) -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    let cluster = MockCluster::new(3).expect("mock cluster");
    cluster
        .create_topic("clues.events", partitions, 3)
        .expect("topic");
    cluster.create_topic("clues.dlq", 1, 3).expect("topic");
    cluster
}

fn fast_producer(brokers: &str) -> FutureProducer {
    rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("acks", "1")
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("compression.type", "none")
        .create()
        .expect("producer")
}

/// Clues per wave of a backlog.
const WAVE: u64 = 20_000;

/// The facts of a backlog of `facts` in production order: waves of 20 000 clues, each wave all
/// its reports, then all its acceptances, … (6 facts per clue).
fn backlog(gen: &FactGen, facts: u64) -> impl Iterator<Item = EventEnvelope> + '_ {
    let clues = facts.div_ceil(6);
    (0..clues)
        .step_by(WAVE as usize)
        .flat_map(move |start| {
            let n = WAVE.min(clues - start);
            let ids: Arc<Vec<ClueId>> = Arc::new((0..n).map(|_| ClueId::new_random()).collect());
            (0..6u32).flat_map(move |seq| {
                let ids = ids.clone();
                (0..n as usize).map(move |k| {
                    let at = now_ms();
                    if seq == 0 {
                        gen.report(start + k as u64, ids[k], at)
                    } else {
                        FactGen::lifecycle(ids[k], seq, at)
                    }
                })
            })
        })
        .take(facts as usize)
}

/// Produces a backlog of `facts` facts; returns facts produced.
async fn produce_backlog(p: &FutureProducer, facts: u64, gen: &FactGen) -> u64 {
    let mut produced = 0u64;
    let mut pending = Vec::with_capacity(50_000);
    for env in backlog(gen, facts) {
        let key = env.clue_id.to_string();
        let payload = env.encode();
        loop {
            match p.send_result(FutureRecord::to("clues.events").key(&key).payload(&payload)) {
                Ok(f) => {
                    pending.push(f);
                    break;
                }
                Err(_) => {
                    for f in pending.drain(..) {
                        let _ = f.await;
                    }
                }
            }
        }
        produced += 1;
        if pending.len() >= 50_000 {
            for f in pending.drain(..) {
                f.await.expect("delivery").expect("delivered");
            }
        }
    }
    for f in pending.drain(..) {
        f.await.expect("delivery").expect("delivered");
    }
    produced
}

/// Fails when the mock broker dropped records (its per-partition retention is small).
fn check_nothing_dropped(brokers: &str, partitions: i32) {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "bench-watermarks")
        .create()
        .unwrap();
    for p in 0..partitions {
        let (low, _) = c
            .fetch_watermarks("clues.events", p, Duration::from_secs(5))
            .unwrap();
        assert_eq!(
            low, 0,
            "the mock broker dropped records of partition {p}: use more partitions"
        );
    }
}

struct Bench {
    config: SinkConfig,
    metrics: SinkMetrics,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn start_sink(brokers: &str, url: &str, database: &str) -> Bench {
    let config = SinkConfig {
        kafka_brokers: brokers.to_owned(),
        kafka_extra: gridclue_core::kafka::dev_broker_tuning(),
        clickhouse_url: url.to_owned(),
        clickhouse_database: database.to_owned(),
        group_id: format!("bench-{database}"),
        ..SinkConfig::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics = SinkMetrics::new();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(gridclue_sink::run_with_metrics(
        listener,
        config.clone(),
        async move {
            rx.await.ok();
        },
        metrics.clone(),
    ));
    Bench {
        config,
        metrics,
        stop: Some(stop),
        task,
    }
}

impl Bench {
    fn inserted(&self) -> u64 {
        self.metrics
            .rows_inserted
            .with_label_values(&[gridclue_sink::store::EVENTS_TABLE])
            .get()
    }

    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            s.send(()).ok();
        }
        self.task.await.expect("sink task").expect("sink");
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn drop_db(url: &str, db: &str, keep: bool) {
    if keep {
        println!("kept database {db}");
        return;
    }
    let client = clickhouse::Client::default().with_url(url);
    let _ = client
        .query(&format!("DROP DATABASE IF EXISTS {db}"))
        .execute()
        .await;
}

async fn throughput(cli: &Cli, facts: u64) -> String {
    let cluster = mock_cluster(cli.partitions);
    let brokers = cluster.bootstrap_servers();
    let gen = FactGen {
        grids: grid_codes(),
    };
    let p = fast_producer(&brokers);
    let t = Instant::now();
    let n = produce_backlog(&p, facts, &gen).await;
    let produce_s = t.elapsed().as_secs_f64();
    println!("backlog: {n} facts produced in {produce_s:.1} s");
    check_nothing_dropped(&brokers, cli.partitions);
    let db = format!("gridclue_bench_tp_{}", std::process::id());
    let sink = start_sink(&brokers, &cli.clickhouse_url, &db).await;
    let started = Instant::now();
    let mut first: Option<(Instant, u64)> = None;
    loop {
        let done = sink.inserted();
        if first.is_none() && done > 0 {
            first = Some((Instant::now(), done));
        }
        if done >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let end = Instant::now();
    let (t_first, rows_first) = first.unwrap();
    let steady = (n - rows_first) as f64 / (end - t_first).as_secs_f64();
    let total = n as f64 / (end - started).as_secs_f64();
    let batches = sink
        .metrics
        .batches_inserted
        .with_label_values(&[gridclue_sink::store::EVENTS_TABLE])
        .get();
    let clue_rows = sink
        .metrics
        .rows_inserted
        .with_label_values(&[gridclue_sink::store::CLUES_TABLE])
        .get();
    let mut insert_ms = String::new();
    for table in [
        gridclue_sink::store::CLUES_TABLE,
        gridclue_sink::store::EVENTS_TABLE,
    ] {
        let h = sink.metrics.insert_duration.with_label_values(&[table]);
        insert_ms.push_str(&format!(
            " {table}: {} inserts, {:.0} ms total;",
            h.get_sample_count(),
            h.get_sample_sum() * 1000.0
        ));
    }
    println!("insert time:{insert_ms}");
    sink.stop().await;
    drop_db(&cli.clickhouse_url, &db, cli.keep_db).await;
    format!(
        "throughput: {n} facts drained; {steady:.0} facts/s from the first insert to the last \
         ({total:.0}/s including the ~3 s consumer-group start); {batches} batches \
         (avg {:.0} facts); {clue_rows} clue-state rows written alongside",
        n as f64 / batches.max(1) as f64
    )
}

async fn freshness(cli: &Cli, rate: u64, seconds: u64) -> String {
    let cluster = mock_cluster(cli.partitions);
    let brokers = cluster.bootstrap_servers();
    let gen = Arc::new(FactGen {
        grids: grid_codes(),
    });
    let db = format!("gridclue_bench_fr_{}", std::process::id());
    let sink = start_sink(&brokers, &cli.clickhouse_url, &db).await;
    // Wait until the sink owns its partitions: a first probe becomes visible.
    let probe_client = gridclue_core::ch::connect(&sink.config.ch_settings().unwrap())
        .await
        .unwrap();
    let p = gridclue_core::kafka::producer_config(
        &gridclue_core::kafka::KafkaSettings::dev_broker(&brokers),
        10_000,
    )
    .set("linger.ms", "1")
    .create::<FutureProducer>()
    .unwrap();
    let warm = ClueId::new_random();
    let env = gen.report(0, warm, now_ms());
    p.send(
        FutureRecord::to("clues.events")
            .key(&warm.to_string())
            .payload(&env.encode()),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    loop {
        let n: u64 = probe_client
            .query("SELECT count() FROM clue_events WHERE clue_id = toUUID(?)")
            .bind(warm.to_string())
            .fetch_one()
            .await
            .unwrap_or(0);
        if n > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let running = Arc::new(AtomicBool::new(true));
    // Load: `rate` facts per second in 1 ms ticks, 6 facts per clue in waves.
    let load = {
        let p = p.clone();
        let gen = gen.clone();
        let running = running.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let mut sent = 0u64;
            let mut ids: Vec<ClueId> = Vec::new();
            let mut seq = 0u32;
            let mut idx = 0usize;
            let mut pending = Vec::new();
            while running.load(Ordering::Relaxed) {
                let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
                while sent < due {
                    if idx >= ids.len() {
                        seq = (seq + 1) % 6;
                        if seq == 0 || ids.is_empty() {
                            seq = 0;
                            ids = (0..(rate.max(100))).map(|_| ClueId::new_random()).collect();
                        }
                        idx = 0;
                    }
                    let id = ids[idx];
                    idx += 1;
                    let at = now_ms();
                    let env = if seq == 0 {
                        gen.report(sent, id, at)
                    } else {
                        FactGen::lifecycle(id, seq, at)
                    };
                    let key = id.to_string();
                    if let Ok(f) = p.send_result(
                        FutureRecord::to("clues.events")
                            .key(&key)
                            .payload(&env.encode()),
                    ) {
                        pending.push(f);
                    }
                    sent += 1;
                }
                if pending.len() > 10_000 {
                    for f in pending.drain(..) {
                        let _ = f.await;
                    }
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            for f in pending.drain(..) {
                let _ = f.await;
            }
            sent
        })
    };
    // Probes: a report every 50 ms, each timed until a query sees it. One checker asks for all
    // outstanding probes every 10 ms (a query per probe would load ClickHouse more than the
    // sink does).
    let outstanding: Arc<std::sync::Mutex<Vec<(ClueId, Instant)>>> = Arc::default();
    let checker = {
        let outstanding = outstanding.clone();
        let client = probe_client.clone();
        let running = running.clone();
        tokio::spawn(async move {
            let mut samples = Vec::new();
            loop {
                let ids: Vec<String> = outstanding
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|(id, _)| id.to_string())
                    .collect();
                if ids.is_empty() && !running.load(Ordering::Relaxed) {
                    return samples;
                }
                if !ids.is_empty() {
                    let seen: Vec<String> = client
                        .query(
                            "SELECT DISTINCT toString(clue_id) FROM clue_events \
                             WHERE clue_id IN (SELECT toUUID(arrayJoin(?)))",
                        )
                        .bind(ids)
                        .fetch_all()
                        .await
                        .unwrap_or_default();
                    let now = Instant::now();
                    outstanding.lock().unwrap().retain(|(id, t0)| {
                        if seen.contains(&id.to_string()) {
                            samples.push((now - *t0).as_secs_f64() * 1000.0);
                            false
                        } else {
                            true
                        }
                    });
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut i = 0u64;
    while Instant::now() < until {
        let id = ClueId::new_random();
        let t0 = Instant::now();
        let env = gen.report(i, id, now_ms());
        i += 1;
        p.send(
            FutureRecord::to("clues.events")
                .key(&id.to_string())
                .payload(&env.encode()),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        outstanding.lock().unwrap().push((id, t0));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running.store(false, Ordering::Relaxed);
    let sent = load.await.unwrap();
    let mut samples = checker.await.unwrap();
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let batches = sink
        .metrics
        .batches_inserted
        .with_label_values(&[gridclue_sink::store::EVENTS_TABLE])
        .get();
    p.flush(Duration::from_secs(5)).ok();
    sink.stop().await;
    drop_db(&cli.clickhouse_url, &db, cli.keep_db).await;
    format!(
        "freshness at {rate} facts/s for {seconds} s ({sent} facts + {} probes): produced → \
         visible in a query p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, max {:.0} ms; \
         {:.2} inserts/s per table",
        samples.len(),
        percentile(&samples, 0.5),
        percentile(&samples, 0.9),
        percentile(&samples, 0.99),
        samples.last().copied().unwrap_or(f64::NAN),
        batches as f64 / seconds as f64,
    )
}

async fn query(cli: &Cli, facts: u64, runs: usize) -> String {
    let cluster = mock_cluster(cli.partitions);
    let brokers = cluster.bootstrap_servers();
    let gen = FactGen {
        grids: grid_codes(),
    };
    let db = format!("gridclue_bench_q_{}", std::process::id());
    let sink = start_sink(&brokers, &cli.clickhouse_url, &db).await;
    let p = fast_producer(&brokers);
    // Produce in slices so the mock's memory stays bounded while the sink drains.
    let slice = 200_000u64;
    let mut produced = 0;
    while produced < facts {
        let n = slice.min(facts - produced);
        produced += produce_backlog(&p, n, &gen).await;
        while sink.inserted() + slice < produced {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        println!("  {produced} facts produced, {} inserted", sink.inserted());
    }
    while sink.inserted() < produced {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let client = gridclue_core::ch::connect(&sink.config.ch_settings().unwrap())
        .await
        .unwrap();
    sink.stop().await;
    let mut out = format!("query at {produced} facts:");
    for (name, sql) in [
        ("summary from clue_counts", gridclue_dashboard_sql::DISTRICT),
        (
            "summary from clues FINAL",
            gridclue_dashboard_sql::DISTRICT_EXACT,
        ),
    ] {
        let mut ms = Vec::new();
        for _ in 0..runs {
            let t = Instant::now();
            client.query(sql).execute().await.unwrap();
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
        out.push_str(&format!(
            " {name}: p50 {:.0} ms, p99 {:.0} ms;",
            percentile(&ms, 0.5),
            percentile(&ms, 0.99)
        ));
    }
    drop_db(&cli.clickhouse_url, &db, cli.keep_db).await;
    out
}

/// Folded rows for `facts` facts (6 per clue, in waves).
fn prepared_rows(
    facts: u64,
) -> (
    Vec<gridclue_sink::rows::EventRow>,
    Vec<gridclue_sink::rows::ClueRow>,
) {
    use gridclue_sink::rows;
    let gen = FactGen {
        grids: grid_codes(),
    };
    let clues = facts.div_ceil(6);
    let ids: Vec<ClueId> = (0..clues).map(|_| ClueId::new_random()).collect();
    let mut state: std::collections::HashMap<uuid::Uuid, rows::ClueRow> =
        std::collections::HashMap::new();
    let mut events = Vec::new();
    let mut states = Vec::new();
    let source = rows::Source {
        topic: "clues.events".into(),
        partition: 0,
        log: 0,
        offset: 0,
    };
    'outer: for seq in 0..6u32 {
        for (i, id) in ids.iter().enumerate() {
            if events.len() as u64 >= facts {
                break 'outer;
            }
            let env = if seq == 0 {
                gen.report(i as u64, *id, now_ms())
            } else {
                FactGen::lifecycle(*id, seq, now_ms())
            };
            let before = state.remove(&id.as_uuid());
            let row = rows::apply(before.clone(), &env, 0);
            let mut ev = rows::event_row(&env, before.as_ref(), &row, &source);
            ev.kafka_offset = events.len() as i64;
            events.push(ev);
            states.push(row.clone());
            state.insert(id.as_uuid(), row);
        }
    }
    (events, states)
}

async fn insert(cli: &Cli, batch: usize, batches: usize) -> String {
    use gridclue_sink::store;
    let (events, clues) = prepared_rows(batch as u64);
    let timeouts = BENCH_TIMEOUTS;
    let mut out = format!("insert of {batches} batches of {batch} rows:");
    for views in [true, false] {
        let db = format!("gridclue_bench_ins_{}_{views}", std::process::id());
        let client = migrated_db(&cli.clickhouse_url, &db).await;
        if !views {
            for v in ["clue_counts_mv", "fact_flow_hourly_mv"] {
                client
                    .query(&format!("DROP TABLE {v}"))
                    .execute()
                    .await
                    .unwrap();
            }
        }
        let ev: Vec<&gridclue_sink::rows::EventRow> = events.iter().collect();
        let cl: Vec<&gridclue_sink::rows::ClueRow> = clues.iter().collect();
        let t = Instant::now();
        for _ in 0..batches {
            store::insert_events(&client, &ev, timeouts, "bench")
                .await
                .unwrap();
        }
        let ev_rate = (batch * batches) as f64 / t.elapsed().as_secs_f64();
        let t = Instant::now();
        for _ in 0..batches {
            store::insert_clues(&client, &cl, timeouts).await.unwrap();
        }
        let cl_rate = (batch * batches) as f64 / t.elapsed().as_secs_f64();
        out.push_str(&format!(
            " {} views: clue_events {ev_rate:.0} rows/s, clues {cl_rate:.0} rows/s;",
            if views { "with" } else { "without" }
        ));
        drop_db(&cli.clickhouse_url, &db, cli.keep_db).await;
    }
    out
}

/// The latest `clues` row of each clue in a batch, as the sink writes it.
fn latest_states<'a>(
    states: impl Iterator<Item = &'a gridclue_sink::rows::ClueRow>,
) -> Vec<&'a gridclue_sink::rows::ClueRow> {
    let mut latest: std::collections::HashMap<uuid::Uuid, &gridclue_sink::rows::ClueRow> =
        std::collections::HashMap::new();
    for row in states {
        latest
            .entry(row.clue_id)
            .and_modify(|r| {
                if row.version >= r.version {
                    *r = row;
                }
            })
            .or_insert(row);
    }
    latest.into_values().collect()
}

async fn raw(cli: &Cli, facts: u64, batch: usize, drop_views: &[String]) -> String {
    use gridclue_sink::{rows, store};
    let gen = FactGen {
        grids: grid_codes(),
    };
    let source = rows::Source {
        topic: "clues.events".into(),
        partition: 0,
        log: 0,
        offset: 0,
    };
    let mut state: std::collections::HashMap<uuid::Uuid, rows::ClueRow> =
        std::collections::HashMap::new();
    let mut folded: Vec<(rows::EventRow, rows::ClueRow)> = Vec::with_capacity(facts as usize);
    for env in backlog(&gen, facts) {
        let id = env.clue_id.as_uuid();
        let before = state.remove(&id);
        let row = rows::apply(before.clone(), &env, 0);
        let mut event = rows::event_row(&env, before.as_ref(), &row, &source);
        event.kafka_offset = folded.len() as i64;
        state.insert(id, row.clone());
        folded.push((event, row));
    }
    drop(state);
    let db = format!("gridclue_bench_raw_{}", std::process::id());
    let client = migrated_db(&cli.clickhouse_url, &db).await;
    for view in drop_views {
        client
            .query(&format!("DROP TABLE {view}"))
            .execute()
            .await
            .unwrap();
    }
    let timeouts = BENCH_TIMEOUTS;
    let mut clue_rows = 0usize;
    let (mut clues_s, mut events_s) = (0.0, 0.0);
    let started = Instant::now();
    for chunk in folded.chunks(batch) {
        let clues = latest_states(chunk.iter().map(|(_, c)| c));
        clue_rows += clues.len();
        let t = Instant::now();
        store::insert_clues(&client, &clues, timeouts)
            .await
            .unwrap();
        clues_s += t.elapsed().as_secs_f64();
        let events: Vec<&rows::EventRow> = chunk.iter().map(|(e, _)| e).collect();
        let t = Instant::now();
        store::insert_events(&client, &events, timeouts, "bench-raw")
            .await
            .unwrap();
        events_s += t.elapsed().as_secs_f64();
    }
    let secs = started.elapsed().as_secs_f64();
    drop_db(&cli.clickhouse_url, &db, cli.keep_db).await;
    format!(
        "raw: {facts} facts in batches of {batch}: {:.0} facts/s ({:.0} rows/s: {facts} \
         clue_events rows + {clue_rows} clues rows); insert time clues {clues_s:.2} s, \
         clue_events {events_s:.2} s; views dropped: {drop_views:?}",
        facts as f64 / secs,
        (facts as usize + clue_rows) as f64 / secs,
    )
}

/// The loop a user would write with rdkafka and the clickhouse crate: a StreamConsumer; each
/// fact decoded and folded into its clue's state, kept in a HashMap; the rows collected until
/// `batch` facts or `linger` since the batch's first fact; the batch's latest `clues` rows and
/// then its `clue_events` rows inserted; then the offsets committed. Nothing else: no
/// retries, DLQ, rebalance handling, state reload, duplicate detection or metrics.
async fn peer(cli: &Cli, facts: u64, batch: usize, linger: Duration) -> String {
    use gridclue_sink::{rows, store};
    use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
    use rdkafka::message::Message;
    use rdkafka::{Offset, TopicPartitionList};

    let cluster = mock_cluster(cli.partitions);
    let brokers = cluster.bootstrap_servers();
    let gen = FactGen {
        grids: grid_codes(),
    };
    let p = fast_producer(&brokers);
    let t = Instant::now();
    let n = produce_backlog(&p, facts, &gen).await;
    println!(
        "backlog: {n} facts produced in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    check_nothing_dropped(&brokers, cli.partitions);
    let db = format!("gridclue_bench_peer_{}", std::process::id());
    let client = migrated_db(&cli.clickhouse_url, &db).await;
    let timeouts = BENCH_TIMEOUTS;

    let consumer: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", format!("peer-{db}"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        // The same tuning the sink gets for the mock broker, which answers a fetch only when
        // this wait is up.
        .set("fetch.wait.max.ms", "50")
        .create()
        .unwrap();
    consumer.subscribe(&["clues.events"]).unwrap();

    let mut state: std::collections::HashMap<uuid::Uuid, rows::ClueRow> =
        std::collections::HashMap::new();
    let mut events: Vec<rows::EventRow> = Vec::with_capacity(batch);
    let mut touched: Vec<uuid::Uuid> = Vec::with_capacity(batch);
    let mut next_offsets: std::collections::HashMap<i32, i64> = std::collections::HashMap::new();
    let mut inserted = 0u64;
    let mut inserts = 0u64;
    let started = Instant::now();
    let mut first: Option<(Instant, u64)> = None;
    let mut batch_started: Option<Instant> = None;
    while inserted < n {
        let wait = batch_started.map_or(linger, |t| linger.saturating_sub(t.elapsed()));
        if let Ok(received) = tokio::time::timeout(wait, consumer.recv()).await {
            let m = received.unwrap();
            let env = EventEnvelope::decode(m.payload().unwrap_or_default()).unwrap();
            let source = rows::Source {
                topic: "clues.events".into(),
                partition: m.partition(),
                log: 0,
                offset: m.offset(),
            };
            let id = env.clue_id.as_uuid();
            let before = state.remove(&id);
            let row = rows::apply(before.clone(), &env, m.partition());
            events.push(rows::event_row(&env, before.as_ref(), &row, &source));
            state.insert(id, row);
            touched.push(id);
            next_offsets.insert(m.partition(), m.offset() + 1);
            batch_started.get_or_insert_with(Instant::now);
        }
        let due = batch_started.is_some_and(|t| t.elapsed() >= linger);
        if events.len() >= batch || (due && !events.is_empty()) {
            touched.sort_unstable();
            touched.dedup();
            let clues: Vec<&rows::ClueRow> = touched.iter().map(|id| &state[id]).collect();
            store::insert_clues(&client, &clues, timeouts)
                .await
                .unwrap();
            let event_rows: Vec<&rows::EventRow> = events.iter().collect();
            store::insert_events(&client, &event_rows, timeouts, "bench-peer")
                .await
                .unwrap();
            let mut offsets = TopicPartitionList::new();
            for (partition, offset) in next_offsets.drain() {
                offsets
                    .add_partition_offset("clues.events", partition, Offset::Offset(offset))
                    .unwrap();
            }
            consumer.commit(&offsets, CommitMode::Async).unwrap();
            inserted += events.len() as u64;
            inserts += 1;
            if first.is_none() {
                first = Some((Instant::now(), inserted));
            }
            events.clear();
            touched.clear();
            batch_started = None;
        }
    }
    let end = Instant::now();
    let (t_first, rows_first) = first.unwrap();
    let steady = (n - rows_first) as f64 / (end - t_first).as_secs_f64();
    let total = n as f64 / (end - started).as_secs_f64();
    drop(consumer);
    drop_db(&cli.clickhouse_url, &db, cli.keep_db).await;
    format!(
        "peer: {n} facts drained; {steady:.0} facts/s from the first insert to the last \
         ({total:.0}/s including the consumer-group start); {inserts} batches (avg {:.0} facts)",
        n as f64 / inserts.max(1) as f64
    )
}

fn fold(facts: u64) -> String {
    use gridclue_sink::rows;
    let gen = FactGen {
        grids: grid_codes(),
    };
    let clues = facts / 6;
    let ids: Vec<ClueId> = (0..clues).map(|_| ClueId::new_random()).collect();
    let mut encoded = Vec::new();
    for seq in 0..6u32 {
        for (i, id) in ids.iter().enumerate() {
            let env = if seq == 0 {
                gen.report(i as u64, *id, now_ms())
            } else {
                FactGen::lifecycle(*id, seq, now_ms())
            };
            encoded.push(env.encode());
        }
    }
    let source = rows::Source {
        topic: "clues.events".into(),
        partition: 0,
        log: 0,
        offset: 0,
    };
    let t = Instant::now();
    let decoded: Vec<EventEnvelope> = encoded
        .iter()
        .map(|b| EventEnvelope::decode(b).unwrap())
        .collect();
    let t_decode = t.elapsed();
    let t = Instant::now();
    let mut state: std::collections::HashMap<uuid::Uuid, Arc<rows::ClueRow>> =
        std::collections::HashMap::new();
    let mut events = Vec::with_capacity(decoded.len());
    for env in &decoded {
        let id = env.clue_id.as_uuid();
        let prev = state.get(&id).map(|r| (**r).clone());
        let row = rows::apply(prev.clone(), env, 0);
        events.push(rows::event_row(env, prev.as_ref(), &row, &source));
        state.insert(id, Arc::new(row));
    }
    let t_fold = t.elapsed();
    let n = decoded.len() as f64;
    format!(
        "fold: {} facts; decode {:.2} µs/fact, fold + rows {:.2} µs/fact",
        decoded.len(),
        t_decode.as_secs_f64() * 1e6 / n,
        t_fold.as_secs_f64() * 1e6 / n
    )
}

/// The dashboard's summary SQL (kept in step with `gridclue-dashboard-api`'s `summary` module;
/// the sink crate does not depend on the API crate).
mod gridclue_dashboard_sql {
    pub const DISTRICT: &str = "\
SELECT if(placement = 'outside', nearest_street_code, street_code) AS street, category, \
       toUInt64(greatest(sumIf(report_count, placement = 'inside'), 0)) AS reports, \
       toUInt64(greatest(sumIf(case_count, placement = 'inside'), 0)) AS cases, \
       toUInt64(greatest(sumIf(report_count, placement = 'outside'), 0)) AS outside \
FROM clue_counts GROUP BY street, category FORMAT Null";
    pub const DISTRICT_EXACT: &str = "\
SELECT if(placement = 'outside', nearest_street_code, street_code) AS street, category, \
       countIf(placement = 'inside') AS reports, \
       countIf(placement = 'inside' AND is_case = 1) AS cases, \
       countIf(placement = 'outside') AS outside \
FROM clues FINAL GROUP BY street, category FORMAT Null";
}

#[tokio::main]
async fn main() {
    gridclue_core::telemetry::init_tracing("sink-bench");
    let cli = Cli::parse();
    let line = match &cli.mode {
        Mode::Throughput { facts } => throughput(&cli, *facts).await,
        Mode::Freshness { rate, seconds } => freshness(&cli, *rate, *seconds).await,
        Mode::Query { facts, runs } => query(&cli, *facts, *runs).await,
        Mode::Fold { facts } => fold(*facts),
        Mode::Insert { batch, batches } => insert(&cli, *batch, *batches).await,
        Mode::Raw {
            facts,
            batch,
            drop_view,
        } => raw(&cli, *facts, *batch, drop_view).await,
        Mode::Peer {
            facts,
            batch,
            linger_ms,
        } => peer(&cli, *facts, *batch, Duration::from_millis(*linger_ms)).await,
    };
    println!("{line}");
}
