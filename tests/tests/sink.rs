//! The ClickHouse projection (sink) and the dashboard API, against the real test ClickHouse
//! server (`GRIDCLUE_TEST_CLICKHOUSE_URL`, default http://127.0.0.1:18123) and a mock Kafka
//! cluster per test.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use gridclue_core::category::Urgency;
use gridclue_core::codes::{or_empty, ActorScope, StreetCode};
use gridclue_core::kafka::{dev_broker_tuning, KafkaSettings};
use gridclue_core::tokens::{TokenFile, TokenKind};
use gridclue_core::wire::{
    Channel, DlqReason, DlqRecord, EventEnvelope, Fact, Placement, Reported, SCHEMA_VERSION,
};
use gridclue_core::{CategoryCode, ClueId, CommandId, GeoPoint, GridCode, ReporterGroup, Status};
use gridclue_dashboard_api::reference::{CategoryName, Reference};
use gridclue_dashboard_api::AppState;
use gridclue_sink::rows::ClueRow;
use gridclue_sink::store::InsertTimeouts;
use gridclue_sink::{SinkConfig, SinkMetrics};
use gridclue_tests::ch::TestDb;
use gridclue_tests::{data_dir, scratch, shipped_map, Broker};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde_json::Value;
use tokio::net::TcpListener;
use tower::ServiceExt;

// ---------------------------------------------------------------------------------------------
// Facts

/// Grid codes of the shipped district map, grouped by street.
fn grids_by_street() -> BTreeMap<StreetCode, Vec<GridCode>> {
    let mut out: BTreeMap<StreetCode, Vec<GridCode>> = BTreeMap::new();
    for g in &shipped_map().grids {
        out.entry(g.street_code).or_default().push(g.grid_code);
    }
    out
}

/// One clue's facts, in order, and what it should count as.
#[derive(Clone)]
struct Story {
    clue: ClueId,
    facts: Vec<EventEnvelope>,
}

fn report(clue: ClueId, placement: Placement, category: &str, at_ms: u64) -> EventEnvelope {
    EventEnvelope {
        actor: None,
        v: SCHEMA_VERSION,
        clue_id: clue,
        seq: 0,
        command_id: CommandId::for_report(clue),
        occurred_at_ms: at_ms,
        processed_at_ms: at_ms + 3,
        ingested_at_ms: None,
        status: Status::Reported,
        fact: Fact::Reported(Box::new(Reported {
            category: CategoryCode::parse(category).unwrap(),
            location: GeoPoint::new(31.2, 121.5).unwrap(),
            placement,
            map_version: "test".into(),
            department: "city_mgmt".parse().unwrap(),
            urgency: Urgency::Normal,
            deadline_ms: Some(at_ms + 86_400_000),
            reporter_id: "tok_test".into(),
            reporter_group: Some(ReporterGroup::FoodDelivery),
            duplicate_of: None,
            description: "test clue".into(),
            photos: vec![],
            channel: Channel::Api,
        })),
    }
}

impl Story {
    fn inside(grid: GridCode, category: &str) -> Self {
        let clue = ClueId::new_random();
        let placement = Placement::Inside {
            grid_code: grid,
            on_boundary: false,
        };
        Self {
            clue,
            facts: vec![report(
                clue,
                placement,
                category,
                gridclue_core::wire::now_ms(),
            )],
        }
    }

    fn outside(nearest: GridCode, category: &str) -> Self {
        let clue = ClueId::new_random();
        let placement = Placement::Outside {
            nearest_grid_code: Some(nearest),
            distance_m: 120.0,
        };
        Self {
            clue,
            facts: vec![report(
                clue,
                placement,
                category,
                gridclue_core::wire::now_ms(),
            )],
        }
    }

    fn then(mut self, fact: Fact, status: Status) -> Self {
        let last = self.facts.last().unwrap().clone();
        self.facts.push(EventEnvelope {
            seq: last.seq + 1,
            command_id: CommandId::new_random(),
            occurred_at_ms: gridclue_core::wire::now_ms(),
            processed_at_ms: gridclue_core::wire::now_ms(),
            ingested_at_ms: None,
            status,
            fact,
            ..last
        });
        self
    }

    /// Accepted → dispatched → started → handled → closed.
    fn closed(self) -> Self {
        self.then(
            Fact::Accepted {
                deadline_ms: None,
                yellow_at_ms: None,
            },
            Status::Accepted,
        )
        .then(
            Fact::Dispatched {
                department: "city_mgmt".parse().unwrap(),
            },
            Status::Dispatched,
        )
        .then(Fact::Started, Status::InProgress)
        .then(
            Fact::Handled {
                photos: vec![],
                note: "done".into(),
            },
            Status::Handled,
        )
        .then(Fact::Verified { working_ms: None }, Status::Closed)
    }

    fn street(&self) -> Option<StreetCode> {
        match &self.facts[0].fact {
            Fact::Reported(r) => r.placement.grid().map(|g| g.street_code()),
            _ => None,
        }
    }

    fn is_case(&self) -> bool {
        let last = self.facts.last().unwrap();
        self.street().is_some()
            && !matches!(last.status, Status::Rejected | Status::Duplicate)
            && !self
                .facts
                .iter()
                .any(|f| matches!(f.fact, Fact::Merged { .. }))
    }
}

/// A mixed set of stories over the first `streets` streets of the map.
fn stories(per_street: usize) -> Vec<Story> {
    let grids = grids_by_street();
    let mut out = Vec::new();
    for (i, (_, gs)) in grids.iter().enumerate() {
        for j in 0..per_street {
            let g = gs[(i * 7 + j) % gs.len()];
            let category = ["garbage_pile", "manhole_cover", "food_safety"][j % 3];
            let s = Story::inside(g, category);
            out.push(match j % 4 {
                0 => s.closed(),
                1 => s.then(
                    Fact::Accepted {
                        deadline_ms: None,
                        yellow_at_ms: None,
                    },
                    Status::Accepted,
                ),
                2 => s.then(
                    Fact::Rejected {
                        reason: "not a city problem".into(),
                    },
                    Status::Rejected,
                ),
                _ => s,
            });
        }
    }
    let nearest = grids.values().next().unwrap()[0];
    out.push(Story::outside(nearest, "garbage_pile"));
    out
}

/// What the projection must show for `stories`.
#[derive(Debug, Default, PartialEq, Eq, Clone)]
struct Expected {
    reports: u64,
    cases: u64,
    outside: u64,
    facts: u64,
    by_street: BTreeMap<StreetCode, u64>,
}

fn expected(stories: &[Story]) -> Expected {
    let mut e = Expected::default();
    for s in stories {
        e.facts += s.facts.len() as u64;
        match s.street() {
            Some(street) => {
                e.reports += 1;
                *e.by_street.entry(street).or_default() += 1;
                if s.is_case() {
                    e.cases += 1;
                }
            }
            None => e.outside += 1,
        }
    }
    e
}

// ---------------------------------------------------------------------------------------------
// Kafka

fn producer(broker: &Broker) -> FutureProducer {
    gridclue_core::kafka::producer_config(&KafkaSettings::dev_broker(&broker.bootstrap), 10_000)
        .create()
        .unwrap()
}

async fn produce_raw(p: &FutureProducer, topic: &str, key: Option<&str>, payload: &[u8]) {
    let mut r = FutureRecord::to(topic).payload(payload);
    if let Some(k) = key {
        r = r.key(k);
    }
    p.send(r, Duration::from_secs(10)).await.expect("produced");
}

/// Produces to one partition; returns the record's offset.
async fn produce_to(
    p: &FutureProducer,
    topic: &str,
    partition: i32,
    key: &str,
    payload: &[u8],
) -> i64 {
    let record = FutureRecord::to(topic)
        .partition(partition)
        .key(key)
        .payload(payload);
    p.send(record, Duration::from_secs(10))
        .await
        .expect("produced")
        .offset
}

async fn produce_stories(p: &FutureProducer, topic: &str, stories: &[Story]) {
    for s in stories {
        for f in &s.facts {
            produce_raw(p, topic, Some(&s.clue.to_string()), &f.encode()).await;
        }
    }
}

/// Every record on the DLQ topic (partition 0) so far.
fn read_dlq(broker: &Broker, topic: &str, at_least: usize, timeout: Duration) -> Vec<DlqRecord> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .set("group.id", "dlq-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while Instant::now() < deadline && out.len() < at_least {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            out.push(DlqRecord::decode(m.payload().unwrap()).unwrap());
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Sink in-process

struct RunningSink {
    url: String,
    metrics: SinkMetrics,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

fn sink_config(broker: &Broker, db: &TestDb) -> SinkConfig {
    SinkConfig {
        kafka_brokers: broker.bootstrap.clone(),
        kafka_extra: dev_broker_tuning(),
        clickhouse_url: db.url.clone(),
        clickhouse_database: db.database.clone(),
        group_id: format!("sink-{}", db.database),
        batch_linger_ms: 20,
        min_insert_interval_ms: 100,
        retry_initial_ms: 50,
        retry_max_ms: 500,
        insert_timeout_ms: 5_000,
        ..SinkConfig::default()
    }
}

async fn start_sink(config: SinkConfig) -> RunningSink {
    // GRIDCLUE_TEST_LOG=1 shows the sink's logs (on stderr, not captured by the harness).
    if std::env::var_os("GRIDCLUE_TEST_LOG").is_some() {
        gridclue_core::telemetry::init_tracing("sink-test");
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let metrics = SinkMetrics::new();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(gridclue_sink::run_with_metrics(
        listener,
        config,
        async move {
            rx.await.ok();
        },
        metrics.clone(),
    ));
    RunningSink {
        url,
        metrics,
        stop: Some(stop),
        task,
    }
}

impl RunningSink {
    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            s.send(()).ok();
        }
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("sink stops")
            .expect("sink task")
            .expect("sink run");
    }

    fn counter(&self, name: &str, label: Option<(&str, &str)>) -> f64 {
        let families = self.metrics.registry.gather();
        let Some(f) = families.iter().find(|f| f.name() == name) else {
            return 0.0;
        };
        f.get_metric()
            .iter()
            .filter(|m| {
                label.is_none_or(|(k, v)| {
                    m.get_label()
                        .iter()
                        .any(|l| l.name() == k && l.value() == v)
                })
            })
            .map(|m| {
                if m.get_counter().has_value() {
                    m.get_counter().value()
                } else {
                    m.get_gauge().value()
                }
            })
            .sum()
    }
}

async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The numbers a dashboard shows, read from ClickHouse the way dashboard-api reads them.
#[derive(Debug, PartialEq, Eq, Clone)]
struct Numbers {
    reports: u64,
    cases: u64,
    outside: u64,
    by_street: BTreeMap<StreetCode, u64>,
    distinct_facts: u64,
}

fn add_up(cells: Vec<gridclue_dashboard_api::summary::Cell>, distinct_facts: u64) -> Numbers {
    let mut n = Numbers {
        reports: 0,
        cases: 0,
        outside: 0,
        by_street: BTreeMap::new(),
        distinct_facts,
    };
    for c in cells {
        n.reports += c.reports;
        n.cases += c.cases;
        n.outside += c.outside;
        if let Some(street) = c.street.filter(|_| c.reports > 0) {
            *n.by_street.entry(street).or_default() += c.reports;
        }
    }
    n
}

/// The summary's numbers from the aggregate the API reads and, to cross-check, counted from the
/// latest state of every clue.
async fn numbers_both(db: &TestDb) -> (Numbers, Numbers) {
    let distinct = db
        .scalar("SELECT count() FROM (SELECT DISTINCT clue_id, seq FROM clue_events)")
        .await;
    let scope = gridclue_dashboard_api::summary::Scope::District;
    let fast = gridclue_dashboard_api::summary::query(&db.client, &scope)
        .await
        .unwrap();
    let exact = gridclue_dashboard_api::summary::query_exact(&db.client)
        .await
        .unwrap();
    (add_up(fast, distinct), add_up(exact, distinct))
}

async fn numbers(db: &TestDb) -> Numbers {
    let (fast, exact) = numbers_both(db).await;
    assert_eq!(fast, exact, "the aggregate disagrees with the latest state");
    fast
}

/// Rows ever written to `clue_events` (an audit view the test adds counts every insert, before
/// any merge could fold a copy away): equal to the number of distinct facts when no fact was
/// written twice.
async fn add_insert_audit(db: &TestDb) {
    db.execute(
        "CREATE TABLE insert_audit (clue_id UUID, seq UInt32) ENGINE = MergeTree ORDER BY tuple()",
    )
    .await;
    db.execute(
        "CREATE MATERIALIZED VIEW insert_audit_mv TO insert_audit AS \
         SELECT clue_id, seq FROM clue_events",
    )
    .await;
}

fn numbers_of(e: &Expected) -> Numbers {
    Numbers {
        reports: e.reports,
        cases: e.cases,
        outside: e.outside,
        by_street: e.by_street.clone(),
        distinct_facts: e.facts,
    }
}

async fn wait_numbers(db: &TestDb, want: &Numbers, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let (got, exact) = numbers_both(db).await;
        if &got == want && &exact == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "projection never reached the expected numbers\n got: {got:?}\nwant: {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Phase 1: the sink projects facts; undecodable records go to the DLQ.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_projects_facts_and_sends_undecodable_records_to_the_dlq() {
    let broker = Broker::start();
    let db = TestDb::create("sink").await;
    let config = sink_config(&broker, &db);
    let sink = start_sink(config.clone()).await;
    let http = reqwest::Client::new();
    wait_for("readyz", Duration::from_secs(30), || async {
        http.get(format!("{}/readyz", sink.url))
            .send()
            .await
            .is_ok_and(|r| r.status() == StatusCode::OK)
    })
    .await;
    let healthz = http
        .get(format!("{}/healthz", sink.url))
        .send()
        .await
        .unwrap();
    assert_eq!(healthz.status(), StatusCode::OK);

    let stories = stories(3);
    let p = producer(&broker);
    produce_stories(&p, &config.events_topic, &stories[..stories.len() / 2]).await;
    // Garbage and a record from a future schema version, on the same partitions as real facts.
    produce_raw(&p, &config.events_topic, Some("k"), b"\xff not json").await;
    let mut future = serde_json::to_value(&stories[0].facts[0]).unwrap();
    future["v"] = serde_json::json!(SCHEMA_VERSION + 1);
    produce_raw(
        &p,
        &config.events_topic,
        Some(&stories[0].clue.to_string()),
        &serde_json::to_vec(&future).unwrap(),
    )
    .await;
    produce_stories(&p, &config.events_topic, &stories[stories.len() / 2..]).await;

    let e = expected(&stories);
    wait_numbers(&db, &numbers_of(&e), Duration::from_secs(60)).await;

    // The latest state of a closed clue.
    let closed = &stories[0];
    let row: ClueRow = db
        .client
        .query("SELECT ?fields FROM clues FINAL WHERE clue_id = toUUID(?)")
        .bind(closed.clue.to_string())
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(row.status, "closed");
    assert_eq!(row.version, 5);
    assert_eq!(row.street_code, closed.street());
    assert!(row.closed_at_ms > 0 && row.dispatched_at_ms > 0);
    assert_eq!(row.reporter_group, "food_delivery");
    // Every fact row carries the clue's street, also lifecycle facts.
    let streets = db
        .scalar(&format!(
            "SELECT uniqExact(street_code) FROM clue_events WHERE clue_id = toUUID('{}')",
            closed.clue
        ))
        .await;
    assert_eq!(streets, 1);

    let dlq = read_dlq(&broker, &config.dlq_topic, 2, Duration::from_secs(20));
    let mut reasons: Vec<DlqReason> = dlq.iter().map(|d| d.reason).collect();
    reasons.sort_by_key(|r| r.as_str());
    assert_eq!(
        reasons,
        vec![DlqReason::Undecodable, DlqReason::UnsupportedVersion]
    );
    assert!(dlq
        .iter()
        .all(|d| d.stage == "sink" && d.source_topic == config.events_topic));
    let garbage = dlq
        .iter()
        .find(|d| d.reason == DlqReason::Undecodable)
        .unwrap();
    assert!(garbage.payload_is_hex);

    let metrics = http
        .get(format!("{}/metrics", sink.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("gridclue_sink_rows_inserted_total{table=\"clue_events\"}"));
    assert!(metrics.contains("gridclue_sink_freshness_seconds_bucket"));
    assert_eq!(
        sink.counter("gridclue_sink_dlq_total", None),
        2.0,
        "two records went to the DLQ"
    );
    sink.stop().await;
}

// ---------------------------------------------------------------------------------------------
// dashboard-api

struct Tokens {
    district: String,
    street: String,
    reporter: String,
    revoked: String,
    street_code: StreetCode,
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

fn tokens(street_code: StreetCode) -> Tokens {
    let dir = scratch("dash-tokens");
    let path = dir.path().join("tokens.json");
    let mut f = TokenFile::default();
    let (district, _) = f
        .issue(TokenKind::District, None, None, "district")
        .unwrap();
    let (street, _) = f
        .issue(
            TokenKind::Street,
            None,
            Some(ActorScope::Street(street_code)),
            "street office",
        )
        .unwrap();
    let (reporter, _) = f
        .issue(
            TokenKind::Reporter,
            Some(ReporterGroup::Courier),
            None,
            "rider",
        )
        .unwrap();
    let (revoked, rec) = f.issue(TokenKind::District, None, None, "old").unwrap();
    f.revoke(&rec.id).unwrap();
    f.write(&path).unwrap();
    Tokens {
        district,
        street,
        reporter,
        revoked,
        street_code,
        _dir: dir,
        path,
    }
}

fn reference() -> Reference {
    Reference {
        streets: Reference::streets_of(shipped_map()),
        categories: vec![
            CategoryName {
                code: CategoryCode::parse("manhole_cover").unwrap(),
                name_zh: "井盖破损".into(),
                name_en: "Damaged manhole cover".into(),
            },
            CategoryName {
                code: CategoryCode::parse("garbage_pile").unwrap(),
                name_zh: "垃圾堆物".into(),
                name_en: "Garbage pile".into(),
            },
        ],
        ..Reference::default()
    }
}

async fn get(app: axum::Router, path: &str, token: Option<&str>) -> (StatusCode, String, Value) {
    let mut req = Request::get(path);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let resp = app.oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
    let status = resp.status();
    let ctype = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (status, ctype, json)
}

#[tokio::test]
async fn dashboard_refuses_missing_invalid_revoked_and_reporter_tokens() {
    let db = TestDb::create("dash_auth").await;
    gridclue_sink::migrations::apply(&db.client).await.unwrap();
    let reference = reference();
    let t = tokens(reference.streets[0].code);
    let state = AppState::new(
        db.client.clone(),
        gridclue_core::tokens::TokenStore::open(&t.path).unwrap(),
        reference,
        gridclue_core::calendar::Calendar::load(&data_dir().join("calendar.json")).unwrap(),
    );
    let app = gridclue_dashboard_api::app(state);

    for (token, status, code) in [
        (None, StatusCode::UNAUTHORIZED, "unauthorized"),
        (
            Some("gct_not_a_token"),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            Some(t.revoked.as_str()),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            Some(t.reporter.as_str()),
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
    ] {
        let (got, ctype, body) = get(app.clone(), "/v1/summary", token).await;
        assert_eq!(got, status, "{token:?}: {body}");
        assert_eq!(ctype, "application/problem+json");
        assert_eq!(body["status"], status.as_u16());
        assert_eq!(body["code"], code);
        assert!(body["type"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/{code}")));
        assert!(!body["title"].as_str().unwrap().is_empty());
        assert!(!body["detail"].as_str().unwrap().is_empty());
    }
    let (status, _, _) = get(app.clone(), "/v1/summary", Some(&t.district)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = get(app.clone(), "/healthz", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = get(app.clone(), "/readyz", None).await;
    assert_eq!(status, StatusCode::OK);

    // The token file is re-read when it changes: a token issued now works at once.
    let mut f = TokenFile::read(&t.path).unwrap();
    let (fresh, _) = f.issue(TokenKind::District, None, None, "new").unwrap();
    std::thread::sleep(Duration::from_millis(20)); // a distinct modification time
    f.write(&t.path).unwrap();
    let (status, _, _) = get(app.clone(), "/v1/summary", Some(&fresh)).await;
    assert_eq!(status, StatusCode::OK);
}

/// Folds stories the way the sink does and writes their rows (facts once, clue states twice:
/// the latest-state table takes replays).
async fn write_stories(db: &TestDb, stories: &[Story]) {
    let source = gridclue_sink::rows::Source {
        topic: "clues.events".into(),
        partition: 0,
        log: 0,
        offset: 0,
    };
    let mut events = Vec::new();
    let mut latest = Vec::new();
    for s in stories {
        let mut state: Option<ClueRow> = None;
        for f in &s.facts {
            let before = state.take();
            let row = gridclue_sink::rows::apply(before.clone(), f, 0);
            events.push(gridclue_sink::rows::event_row(
                f,
                before.as_ref(),
                &row,
                &source,
            ));
            state = Some(row);
        }
        latest.push(state.unwrap());
    }
    let timeouts = InsertTimeouts {
        send: Duration::from_secs(10),
        end: Duration::from_secs(10),
    };
    let clues: Vec<&ClueRow> = latest.iter().collect();
    gridclue_sink::store::insert_clues(&db.client, &clues, timeouts)
        .await
        .unwrap();
    gridclue_sink::store::insert_clues(&db.client, &clues, timeouts)
        .await
        .unwrap();
    let events: Vec<&gridclue_sink::rows::EventRow> = events.iter().collect();
    gridclue_sink::store::insert_events(&db.client, &events, timeouts, "dashboard-test")
        .await
        .unwrap();
}

#[tokio::test]
async fn dashboard_summary_counts_reports_inside_by_street_and_category() {
    let db = TestDb::create("dash_sum").await;
    gridclue_sink::migrations::apply(&db.client).await.unwrap();
    let reference = reference();
    assert_eq!(reference.streets.len(), 13);
    let grids = grids_by_street();
    let a = reference.streets[0].code;
    let b = reference.streets[5].code;
    let ga = grids[&a][0];
    let gb = grids[&b][3];

    let first = Story::inside(ga, "garbage_pile");
    let mut duplicate = Story::inside(ga, "garbage_pile");
    if let Fact::Reported(r) = &mut duplicate.facts[0].fact {
        r.duplicate_of = Some(first.clue);
    }
    let rejected = Story::inside(ga, "garbage_pile").then(
        Fact::Rejected {
            reason: "private property".into(),
        },
        Status::Rejected,
    );
    let merged = Story::inside(gb, "manhole_cover").then(
        Fact::Merged {
            duplicate_of: first.clue,
        },
        Status::Duplicate,
    );
    let closed = Story::inside(gb, "manhole_cover").closed();
    let open = Story::inside(gb, "manhole_cover").then(
        Fact::Accepted {
            deadline_ms: None,
            yellow_at_ms: None,
        },
        Status::Accepted,
    );
    let outside = Story::outside(ga, "garbage_pile");
    // A lifecycle fact whose report never arrived counts nowhere.
    let orphan = {
        let mut s = Story::inside(gb, "garbage_pile").then(
            Fact::Accepted {
                deadline_ms: None,
                yellow_at_ms: None,
            },
            Status::Accepted,
        );
        s.facts.remove(0);
        s
    };
    write_stories(
        &db,
        &[
            first, duplicate, rejected, merged, closed, open, outside, orphan,
        ],
    )
    .await;
    let t = tokens(b);
    let state = AppState::new(
        db.client.clone(),
        gridclue_core::tokens::TokenStore::open(&t.path).unwrap(),
        reference.clone(),
        gridclue_core::calendar::Calendar::load(&data_dir().join("calendar.json")).unwrap(),
    );
    let app = gridclue_dashboard_api::app(state);

    let (status, _, s) = get(app.clone(), "/v1/summary", Some(&t.district)).await;
    assert_eq!(status, StatusCode::OK, "{s}");
    assert_eq!(s["scope"]["kind"], "district");
    assert_eq!(
        (
            s["total"].as_u64(),
            s["cases"].as_u64(),
            s["outside"].as_u64()
        ),
        (Some(6), Some(3), Some(1))
    );
    let by_street = s["by_street"].as_array().unwrap();
    assert_eq!(by_street.len(), 13, "every street, zeros included");
    let codes: Vec<&str> = by_street
        .iter()
        .map(|x| x["street_code"].as_str().unwrap())
        .collect();
    let mut sorted = codes.clone();
    sorted.sort_unstable();
    assert_eq!(codes, sorted, "sorted by street code");
    let street = |code: &StreetCode| {
        by_street
            .iter()
            .find(|x| x["street_code"] == code.as_str())
            .unwrap()
            .clone()
    };
    assert_eq!(street(&a)["count"], 3);
    assert_eq!(street(&a)["cases"], 1);
    assert_eq!(street(&a)["outside"], 1);
    assert_eq!(
        street(&a)["street_name"],
        reference.streets[0].name.as_str()
    );
    assert_eq!(street(&b)["count"], 3);
    assert_eq!(street(&b)["cases"], 2);
    let sum: u64 = by_street.iter().map(|x| x["count"].as_u64().unwrap()).sum();
    assert_eq!(sum, 6);
    let by_category: HashMap<String, (u64, String)> = s["by_category"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["category"].as_str().unwrap().to_owned(),
                (
                    c["count"].as_u64().unwrap(),
                    c["name"].as_str().unwrap().to_owned(),
                ),
            )
        })
        .collect();
    assert_eq!(by_category["garbage_pile"], (3, "垃圾堆物".to_owned()));
    assert_eq!(by_category["manhole_cover"], (3, "井盖破损".to_owned()));
    // The aggregate the API reads agrees with the latest state of every clue.
    let (fast, exact) = numbers_both(&db).await;
    assert_eq!(fast, exact);

    // A street token sees its own street only.
    let (status, _, s) = get(app.clone(), "/v1/summary", Some(&t.street)).await;
    assert_eq!(status, StatusCode::OK, "{s}");
    assert_eq!(s["scope"]["street_code"], t.street_code.as_str());
    assert_eq!(
        (
            s["total"].as_u64(),
            s["cases"].as_u64(),
            s["outside"].as_u64()
        ),
        (Some(3), Some(2), Some(0))
    );
    assert_eq!(s["by_street"].as_array().unwrap().len(), 1);
    let garbage = s["by_category"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["category"] == "garbage_pile")
        .unwrap()
        .clone();
    assert_eq!(garbage["count"], 0);
}

// ---------------------------------------------------------------------------------------------
// Issue 5: exact, replay-safe numbers.

async fn prepared_db(prefix: &str) -> TestDb {
    let db = TestDb::create(prefix).await;
    gridclue_sink::migrations::apply(&db.client).await.unwrap();
    add_insert_audit(&db).await;
    db
}

async fn audit(db: &TestDb) -> u64 {
    db.scalar("SELECT count() FROM insert_audit").await
}

/// Asserts that exactly `want` fact rows were ever written. An insert's views write one after
/// another, so the audit may lag the other tables for a moment: wait for it to reach `want`,
/// then check it did not go past.
async fn assert_audit(db: &TestDb, want: u64, why: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while audit(db).await < want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(audit(db).await, want, "{why}");
}

/// Facts per hour, summed (the hourly flow aggregate).
async fn flow_total(db: &TestDb) -> u64 {
    db.scalar("SELECT toUInt64(sum(facts)) FROM fact_flow_hourly")
        .await
}

/// Asserts the hourly flow counts `want` facts (waiting a moment for the view, as above).
async fn assert_flow(db: &TestDb, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while flow_total(db).await < want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(flow_total(db).await, want, "facts in the hourly flow");
}

/// The live group's committed offsets, summed over the topic's partitions.
fn committed_total(broker: &Broker, config: &SinkConfig) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .set("group.id", &config.group_id)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..6 {
        tpl.add_partition(&config.events_topic, p);
    }
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(5))
        .unwrap();
    committed
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => o,
            _ => 0,
        })
        .sum()
}

/// The governance indicators' delta projection holds every stored fact's rows once: the
/// indicators it gives equal the ones computed from the facts, as of now and later.
async fn assert_indicators_exact(db: &TestDb) {
    let now = gridclue_core::wire::now_ms();
    let instants = [now, now + 30 * 24 * 3_600_000];
    if let Err(e) =
        gridclue_tests::indicators_reference::whole_history_matches(&db.client, &instants).await
    {
        panic!("indicators off after the sink's restarts and replays: {e}");
    }
    let cases: u64 = db
        .scalar("SELECT toUInt64(sum(accepted)) FROM indicator_days WHERE dim = 'street'")
        .await;
    assert!(
        cases > 0,
        "no case in the delta projection: the check proves nothing"
    );
}

/// The running status counts and the trend's days (migration 0013, fed by views on the sink's
/// inserts) equal the clues' latest states and the stored facts, group by group.
async fn assert_status_counts_exact(db: &TestDb) {
    let check = gridclue_sink::aggregates::check(&db.client).await.unwrap();
    assert_eq!(
        (check.status_groups_off, check.trend_groups_off),
        (0, 0),
        "status counts off after the sink's restarts and replays: {check:?}"
    );
    assert!(
        check.status_clues > 0,
        "no clue in the status counts: the check proves nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_facts_projected_twice_change_no_number() {
    let broker = Broker::start();
    let db = prepared_db("twice").await;
    let config = sink_config(&broker, &db);
    let sink = start_sink(config.clone()).await;
    let stories = stories(4);
    let e = expected(&stories);
    let p = producer(&broker);
    produce_stories(&p, &config.events_topic, &stories).await;
    let want = numbers_of(&e);
    wait_numbers(&db, &want, Duration::from_secs(60)).await;
    assert_audit(&db, e.facts, "every fact written once").await;
    assert_flow(&db, e.facts).await;

    // The same facts again, as an upstream replay would publish them (new offsets, same
    // identities), then a replay of the whole topic through the CLI's code path.
    produce_stories(&p, &config.events_topic, &stories).await;
    let sink_metrics = &sink;
    let facts = e.facts as f64;
    wait_for(
        "the copies to be read and skipped",
        Duration::from_secs(60),
        || async move {
            sink_metrics.counter("gridclue_sink_skipped_total", Some(("why", "duplicate"))) >= facts
        },
    )
    .await;
    wait_for("all offsets committed", Duration::from_secs(30), || async {
        committed_total(&broker, &config) == 2 * e.facts as i64
    })
    .await;
    let report = gridclue_sink::replay::replay(config.clone(), Default::default())
        .await
        .unwrap();
    assert_eq!(report.facts_inserted, 0, "replay found every fact stored");
    let covered: i64 = report.ranges.iter().map(|(_, s, e)| e - s).sum();
    assert_eq!(covered, 2 * e.facts as i64, "replay read the whole topic");
    assert_eq!(numbers(&db).await, want);
    assert_audit(&db, e.facts, "no fact was written twice").await;
    assert_flow(&db, e.facts).await;
    assert_indicators_exact(&db).await;
    assert_status_counts_exact(&db).await;
    sink.stop().await;

    // Re-projecting everything into an empty database gives the same numbers, and doing it
    // again changes nothing.
    let db2 = prepared_db("twice_re").await;
    let config2 = SinkConfig {
        clickhouse_database: db2.database.clone(),
        ..config.clone()
    };
    let all = gridclue_sink::replay::ReplayRange {
        beyond_committed: true,
        ..Default::default()
    };
    let first = gridclue_sink::replay::replay(config2.clone(), all.clone())
        .await
        .unwrap();
    assert_eq!(first.facts_inserted, e.facts);
    assert_eq!(numbers(&db2).await, want);
    let again = gridclue_sink::replay::replay(config2.clone(), all.clone())
        .await
        .unwrap();
    assert_eq!(again.facts_inserted, 0);
    assert_eq!(numbers(&db2).await, want);
    assert_audit(&db2, e.facts, "facts written once").await;
    assert_flow(&db2, e.facts).await;
    assert_indicators_exact(&db2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_stopped_mid_stream_and_restarted_gives_exact_counts() {
    let mut server = gridclue_tests::ch::PrivateClickHouse::start();
    let db = TestDb::create_at(&server.url, "chdown").await;
    gridclue_sink::migrations::apply(&db.client).await.unwrap();
    add_insert_audit(&db).await;
    let broker = Broker::start();
    let config = SinkConfig {
        insert_timeout_ms: 2_000,
        ..sink_config(&broker, &db)
    };
    let sink = start_sink(config.clone()).await;
    let stories = stories(6);
    let (first, second) = stories.split_at(stories.len() / 2);
    let p = producer(&broker);
    produce_stories(&p, &config.events_topic, first).await;
    let e1 = expected(first);
    wait_numbers(&db, &numbers_of(&e1), Duration::from_secs(60)).await;

    server.kill();
    produce_stories(&p, &config.events_topic, second).await;
    let s = &sink;
    wait_for(
        "the sink to pause",
        Duration::from_secs(30),
        || async move { s.counter("gridclue_sink_paused", None) == 1.0 },
    )
    .await;
    // Down for a while: the sink keeps retrying (two more attempts seen) and stays paused.
    let retried = sink.counter("gridclue_sink_retries_total", None);
    wait_for("two more retries", Duration::from_secs(60), || async move {
        s.counter("gridclue_sink_retries_total", None) >= retried + 2.0
    })
    .await;
    assert_eq!(sink.counter("gridclue_sink_paused", None), 1.0);
    server.restart();

    let e = expected(&stories);
    wait_numbers(&db, &numbers_of(&e), Duration::from_secs(60)).await;
    assert_audit(&db, e.facts, "no fact written twice, none skipped").await;
    assert_flow(&db, e.facts).await;
    wait_for(
        "the sink to resume",
        Duration::from_secs(10),
        || async move { s.counter("gridclue_sink_paused", None) == 0.0 },
    )
    .await;
    assert!(sink.counter("gridclue_sink_retries_total", None) > 0.0);
    wait_for("all offsets committed", Duration::from_secs(30), || async {
        committed_total(&broker, &config) == e.facts as i64
    })
    .await;
    sink.stop().await;
}

/// Path of the `gridclue-sink` binary next to this test binary, built if needed.
fn sink_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
    let mut cmd = std::process::Command::new(std::env::var("CARGO").unwrap_or("cargo".into()));
    cmd.args([
        "build",
        "-q",
        "-p",
        "gridclue-sink",
        "--bin",
        "gridclue-sink",
    ]);
    if profile_dir.ends_with("release") {
        cmd.arg("--release");
    }
    let status = cmd.status().expect("cargo runs");
    assert!(status.success(), "building gridclue-sink failed");
    let bin = profile_dir.join("gridclue-sink");
    assert!(bin.is_file(), "{} missing", bin.display());
    bin
}

fn spawn_sink_process(bin: &std::path::Path, config: &SinkConfig) -> std::process::Child {
    std::process::Command::new(bin)
        .env_remove("GRIDCLUE_CONFIG")
        .env("GRIDCLUE_KAFKA_BROKERS", &config.kafka_brokers)
        .env("GRIDCLUE_CLICKHOUSE_URL", &config.clickhouse_url)
        .env("GRIDCLUE_CLICKHOUSE_DATABASE", &config.clickhouse_database)
        .env("GRIDCLUE_GROUP_ID", &config.group_id)
        .env("GRIDCLUE_LISTEN", "127.0.0.1:0")
        .env("GRIDCLUE_BATCH_MAX_ROWS", config.batch_max_rows.to_string())
        .env(
            "GRIDCLUE_BATCH_LINGER_MS",
            config.batch_linger_ms.to_string(),
        )
        .env(
            "GRIDCLUE_MIN_INSERT_INTERVAL_MS",
            config.min_insert_interval_ms.to_string(),
        )
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("sink process starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_killed_mid_batch_and_restarted_gives_exact_counts() {
    let bin = tokio::task::spawn_blocking(sink_binary).await.unwrap();
    let broker = Broker::start();
    let db = prepared_db("kill9").await;
    let config = SinkConfig {
        batch_max_rows: 150,
        batch_linger_ms: 5,
        min_insert_interval_ms: 20,
        ..sink_config(&broker, &db)
    };
    let stories = stories(60);
    let e = expected(&stories);
    let p = producer(&broker);
    produce_stories(&p, &config.events_topic, &stories).await;

    // Kill -9 twice while the sink is writing, each time once it has written a bit more.
    for fraction in [0.2, 0.55] {
        let mut child = spawn_sink_process(&bin, &config);
        let target = (e.facts as f64 * fraction) as u64;
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let written = audit(&db).await;
            if written >= target {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("sink process exited early: {status}");
            }
            assert!(Instant::now() < deadline, "sink wrote only {written} facts");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let written = audit(&db).await;
        assert!(
            written < e.facts,
            "killed after everything was written; the test proves nothing"
        );
    }
    let mut child = spawn_sink_process(&bin, &config);
    wait_numbers(&db, &numbers_of(&e), Duration::from_secs(120)).await;
    assert_audit(&db, e.facts, "no fact was written twice").await;
    assert_flow(&db, e.facts).await;
    assert_indicators_exact(&db).await;
    assert_status_counts_exact(&db).await;
    child.kill().unwrap();
    child.wait().unwrap();
}

/// What a sink killed between a batch's two inserts leaves: the batch's facts stored, their
/// clues' states not (states are written after their facts), offsets committed up to the batch.
/// The next sink reloads states behind the stored facts, folds the stored facts into them as it
/// reads them again (without inserting them again), and writes every later fact against the
/// state just before it: states, counts and indicators all exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_stopped_between_facts_and_states_catches_its_states_up() {
    let broker = Broker::start();
    let db = prepared_db("behind").await;
    let config = sink_config(&broker, &db);
    let stories = stories(3);
    let e = expected(&stories);
    // Every story's first fact, then every story's second fact, and so on: each clue has facts
    // in the stored batch and after it.
    let rounds = stories.iter().map(|s| s.facts.len()).max().unwrap();
    let mut log: Vec<(usize, &EventEnvelope)> = Vec::new();
    for r in 0..rounds {
        for (i, s) in stories.iter().enumerate() {
            if let Some(f) = s.facts.get(r) {
                log.push((i, f));
            }
        }
    }
    let p = producer(&broker);
    for (n, (i, f)) in log.iter().enumerate() {
        let offset = produce_to(
            &p,
            &config.events_topic,
            0,
            &stories[*i].clue.to_string(),
            &f.encode(),
        )
        .await;
        assert_eq!(offset, n as i64);
    }
    // Batch A (the first half of the reports) fully written and committed; batch B (the other
    // reports and every second fact) with its facts stored and its states not.
    let batch_a = stories.len() / 2;
    let batch_b = stories.len() + stories.iter().filter(|s| s.facts.len() > 1).count();
    let mut states: Vec<Option<ClueRow>> = vec![None; stories.len()];
    let mut events = Vec::new();
    let mut written_states = Vec::new();
    for (n, (i, f)) in log.iter().enumerate().take(batch_b) {
        let source = gridclue_sink::rows::Source {
            topic: config.events_topic.as_str().into(),
            partition: 0,
            log: 0,
            offset: n as i64,
        };
        let before = states[*i].take();
        let row = gridclue_sink::rows::apply(before.clone(), f, 0);
        events.push(gridclue_sink::rows::event_row(
            f,
            before.as_ref(),
            &row,
            &source,
        ));
        if n < batch_a {
            written_states.push(row.clone());
        }
        states[*i] = Some(row);
    }
    let timeouts = InsertTimeouts {
        send: Duration::from_secs(10),
        end: Duration::from_secs(10),
    };
    let events: Vec<&gridclue_sink::rows::EventRow> = events.iter().collect();
    gridclue_sink::store::insert_events(&db.client, &events, timeouts, "killed-sink")
        .await
        .unwrap();
    let written: Vec<&ClueRow> = written_states.iter().collect();
    gridclue_sink::store::insert_clues(&db.client, &written, timeouts)
        .await
        .unwrap();
    commit_standalone(&broker, &config, 0, batch_a as i64);

    let sink = start_sink(config.clone()).await;
    wait_for(
        "every offset committed",
        Duration::from_secs(60),
        || async { committed(&broker, &config, 0) == Some(log.len() as i64) },
    )
    .await;
    let caught_up = sink.counter("gridclue_sink_skipped_total", Some(("why", "duplicate")));
    assert_eq!(
        caught_up,
        (batch_b - batch_a) as f64,
        "batch B's stored facts were read again and not inserted again"
    );
    sink.stop().await;

    // Hand-folded: each clue's state after all its facts.
    let mut want: Vec<ClueRow> = stories
        .iter()
        .map(|s| {
            s.facts
                .iter()
                .fold(None, |state, f| {
                    Some(gridclue_sink::rows::apply(state, f, 0))
                })
                .unwrap()
        })
        .collect();
    want.sort_by_key(|r| r.clue_id);
    let mut got: Vec<ClueRow> = db
        .client
        .query("SELECT ?fields FROM clues FINAL")
        .fetch_all()
        .await
        .unwrap();
    got.sort_by_key(|r| r.clue_id);
    let missing: Vec<(usize, usize)> = stories
        .iter()
        .enumerate()
        .filter(|(_, s)| !got.iter().any(|g| g.clue_id == s.clue.as_uuid()))
        .map(|(i, s)| (i, s.facts.len()))
        .collect();
    assert!(
        missing.is_empty(),
        "clues (story, facts) without a state: {missing:?}"
    );
    assert_eq!(got.len(), want.len(), "one state per clue");
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g, w, "the state of clue {} after all its facts", w.clue_id);
    }
    assert_eq!(numbers(&db).await, numbers_of(&e));
    assert_audit(&db, e.facts, "no fact was written twice").await;
    assert_flow(&db, e.facts).await;
    assert_indicators_exact(&db).await;
    assert_status_counts_exact(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_applied_to_a_database_with_data_keeps_the_data() {
    let broker = Broker::start();
    let db = TestDb::create("migrate").await;
    // The schema as release 2 left it, and facts an older sink projected from partition 0.
    gridclue_sink::migrations::apply_through(&db.client, 2)
        .await
        .unwrap();
    let topic = "clues.events";
    let grids = grids_by_street();
    let (street, gs) = grids.iter().next().unwrap();
    let case = Story::inside(gs[0], "garbage_pile").then(
        Fact::Accepted {
            deadline_ms: None,
            yellow_at_ms: None,
        },
        Status::Accepted,
    );
    let rejected = Story::inside(gs[1], "manhole_cover").then(
        Fact::Rejected {
            reason: "duplicate call".into(),
        },
        Status::Rejected,
    );
    let outside = Story::outside(gs[2], "food_safety");
    let old = [case.clone(), rejected, outside];
    let p = producer(&broker);
    let mut offset = 0;
    for s in &old {
        let mut state: Option<ClueRow> = None;
        for f in &s.facts {
            produce_to(&p, topic, 0, &s.clue.to_string(), &f.encode()).await;
            let before = state.take();
            let row = gridclue_sink::rows::apply(before.clone(), f, 0);
            let ev = gridclue_sink::rows::event_row(
                f,
                before.as_ref(),
                &row,
                &gridclue_sink::rows::Source {
                    topic: topic.into(),
                    partition: 0,
                    log: 0,
                    offset,
                },
            );
            // Only the columns release 2 had.
            db.execute(&format!(
                "INSERT INTO clue_events (clue_id, seq, command_id, fact_type, status, \
                 occurred_at_ms, processed_at_ms, placement, inside, grid_code, community_code, \
                 street_code, category, department, reporter_group, deadline_ms, detail, \
                 kafka_topic, kafka_partition, kafka_offset) VALUES ('{}', {}, '{}', '{}', '{}', \
                 {}, {}, '{}', {}, '{}', '{}', '{}', '{}', '{}', '{}', {}, '{}', '{}', 0, {})",
                ev.clue_id,
                ev.seq,
                ev.command_id,
                ev.fact_type,
                ev.status,
                ev.occurred_at_ms,
                ev.processed_at_ms,
                ev.placement,
                ev.inside,
                or_empty(&ev.grid_code),
                or_empty(&ev.community_code),
                or_empty(&ev.street_code),
                or_empty(&ev.category),
                or_empty(&ev.department),
                ev.reporter_group,
                ev.deadline_ms,
                ev.detail,
                topic,
                offset
            ))
            .await;
            db.execute(&format!(
                "INSERT INTO clues (clue_id, version, status, placement, inside, grid_code, \
                 community_code, street_code, nearest_street_code, category, department, \
                 reporter_group, is_case, reported_at_ms, updated_at_ms, kafka_partition) VALUES \
                 ('{}', {}, '{}', '{}', {}, '{}', '{}', '{}', '{}', '{}', '{}', '{}', {}, {}, {}, 0)",
                row.clue_id,
                row.version,
                row.status,
                row.placement,
                row.inside,
                or_empty(&row.grid_code),
                or_empty(&row.community_code),
                or_empty(&row.street_code),
                or_empty(&row.nearest_street_code),
                or_empty(&row.category),
                or_empty(&row.department),
                row.reporter_group,
                row.is_case,
                row.reported_at_ms,
                row.updated_at_ms
            ))
            .await;
            state = Some(row);
            offset += 1;
        }
    }
    let events_before = db.scalar("SELECT count() FROM clue_events").await;
    let clues_before = db
        .scalar("SELECT count() FROM (SELECT clue_id FROM clues FINAL)")
        .await;
    assert_eq!((events_before, clues_before), (5, 3));

    // The new release: migration 3 alters both tables and backfills the aggregates; 4 adds the
    // report photos column; 5 the closed loop's columns (actors, supervision, postponements…);
    // 6 the Kafka log of each fact (the first log for the old rows); 7 the working time of
    // closures; 8 the redemptions of points; 9 the hotspot alerts; 10 the dashboard's
    // projections; 11 the indicators' delta projection; 12 the continuation of a log that lost
    // its tail; 13 the running status counts; 14 the open cases.
    let report = gridclue_sink::migrations::apply(&db.client).await.unwrap();
    assert_eq!(
        report.applied,
        vec![3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]
    );
    assert_eq!(
        db.scalar("SELECT count() FROM clue_events").await,
        events_before
    );
    assert_eq!(
        db.scalar("SELECT count() FROM clue_events WHERE kafka_log = 0")
            .await,
        events_before
    );
    let row: ClueRow = db
        .client
        .query("SELECT ?fields FROM clues FINAL WHERE clue_id = toUUID(?)")
        .bind(case.clue.to_string())
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(
        (row.status.as_str(), or_empty(&row.street_code), row.is_case),
        ("accepted", street.as_str(), 1)
    );
    assert_eq!(
        (or_empty(&row.routed_department), row.report_case),
        ("city_mgmt", 1)
    );
    // Rows older than the closed-loop columns read as "none yet".
    assert_eq!(
        (
            row.supervise_count,
            row.postpone_pending,
            row.rating,
            row.last_action.as_str(),
            row.yellow_at_ms
        ),
        (0, 0, 0, "", 0)
    );
    let old_numbers = Numbers {
        reports: 2,
        cases: 1,
        outside: 1,
        by_street: BTreeMap::from([(*street, 2)]),
        distinct_facts: 5,
    };
    assert_eq!(numbers(&db).await, old_numbers, "backfilled aggregate");
    assert_flow(&db, 5).await;
    // Applying again is a no-op.
    let again = gridclue_sink::migrations::apply(&db.client).await.unwrap();
    assert!(again.applied.is_empty());

    // The new sink resumes after the old rows and keeps the numbers exact: the old case gets
    // rejected, a new report arrives.
    add_insert_audit(&db).await;
    let config = sink_config(&broker, &db);
    let sink = start_sink(config.clone()).await;
    let reject = case.then(
        Fact::Rejected {
            reason: "not public space".into(),
        },
        Status::Rejected,
    );
    let new = Story::inside(gs[3], "garbage_pile");
    let tail = [
        (reject.clue, reject.facts.last().unwrap().clone()),
        (new.clue, new.facts[0].clone()),
    ];
    for (clue, f) in &tail {
        produce_to(&p, topic, 0, &clue.to_string(), &f.encode()).await;
    }
    let want = Numbers {
        reports: 3,
        cases: 1,
        outside: 1,
        by_street: BTreeMap::from([(*street, 3)]),
        distinct_facts: 7,
    };
    wait_numbers(&db, &want, Duration::from_secs(60)).await;
    assert_audit(&db, 2, "the old facts were not written again").await;
    // The running status counts backfilled from the old states, then moved by the new sink's
    // facts (the case rejected, a report added), match the latest states: three clues inside.
    // (The check of clue_counts does not apply: the old rows predate report_delta.)
    let check = gridclue_sink::aggregates::check(&db.client).await.unwrap();
    assert_eq!(
        (
            check.status_groups_off,
            check.status_clues,
            check.states_clues
        ),
        (0, 3, 3),
        "{check:?}"
    );
    // The broker's log is the one the old rows came from: nothing was held, and the cluster is
    // recorded for the log.
    assert_eq!(sink.log_reset(0), 0.0);
    assert_eq!(
        db.scalar(
            "SELECT count() FROM kafka_logs WHERE kafka_partition = 0 AND note = 'first seen'"
        )
        .await,
        1
    );
    sink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_clickhouse_refuses_goes_to_the_dlq_and_the_partition_keeps_flowing() {
    let broker = Broker::start();
    let db = prepared_db("poison").await;
    // A rule on the table that refuses one value, as a stricter column type or constraint
    // would: ClickHouse answers the whole INSERT with code 395 and stores nothing of it.
    db.execute(
        "ALTER TABLE clue_events ADD COLUMN guard UInt8 MATERIALIZED throwIf(detail = 'POISON')",
    )
    .await;
    let config = sink_config(&broker, &db);
    let sink = start_sink(config.clone()).await;
    let grids = grids_by_street();
    let gs: Vec<GridCode> = grids.values().flatten().copied().take(30).collect();
    let mut before: Vec<Story> = gs[..10]
        .iter()
        .map(|g| {
            Story::inside(*g, "garbage_pile").then(
                Fact::Accepted {
                    deadline_ms: None,
                    yellow_at_ms: None,
                },
                Status::Accepted,
            )
        })
        .collect();
    let mut poison = Story::inside(gs[10], "food_safety");
    if let Fact::Reported(r) = &mut poison.facts[0].fact {
        r.description = "POISON".into();
    }
    let after: Vec<Story> = gs[11..21]
        .iter()
        .map(|g| Story::inside(*g, "manhole_cover").closed())
        .collect();
    // Everything on one partition, the poison in the middle.
    let p = producer(&broker);
    let mut poison_offset = -1;
    for (i, s) in before
        .iter()
        .chain(std::iter::once(&poison))
        .chain(after.iter())
        .enumerate()
    {
        for f in &s.facts {
            let offset = produce_to(
                &p,
                &config.events_topic,
                2,
                &s.clue.to_string(),
                &f.encode(),
            )
            .await;
            if i == before.len() {
                poison_offset = offset;
            }
        }
    }
    before.extend(after);
    let e = expected(&before);
    wait_numbers(&db, &numbers_of(&e), Duration::from_secs(60)).await;
    assert_audit(&db, e.facts, "facts written once").await;

    let dlq = read_dlq(&broker, &config.dlq_topic, 1, Duration::from_secs(20));
    assert_eq!(dlq.len(), 1, "{dlq:?}");
    let d = &dlq[0];
    assert_eq!(d.reason, DlqReason::ClickhouseRejected);
    assert!(d.detail.contains("395"), "{}", d.detail);
    assert_eq!((d.source_partition, d.source_offset), (2, poison_offset));
    assert_eq!(d.key.as_deref(), Some(poison.clue.to_string().as_str()));
    let replayable = EventEnvelope::decode(d.payload.as_bytes()).unwrap();
    assert_eq!(replayable, poison.facts[0]);
    // The refused report left no trace in the latest-state table either (states are written
    // after their facts).
    let states: u64 = db
        .client
        .query("SELECT count() FROM clues WHERE clue_id = toUUID(?)")
        .bind(poison.clue.to_string())
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(states, 0);
    wait_for(
        "offsets past the poison",
        Duration::from_secs(30),
        || async { committed_total(&broker, &config) == e.facts as i64 + 1 },
    )
    .await;
    assert_eq!(
        sink.counter(
            "gridclue_sink_dlq_total",
            Some(("reason", "clickhouse_rejected"))
        ),
        1.0
    );
    sink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insert_that_times_out_but_lands_is_not_written_twice() {
    let broker = Broker::start();
    let db = prepared_db("ambiguous").await;
    // A view that makes any insert holding the marker take 2.5 s on the server, longer than the
    // sink waits: the sink sees a timeout, while ClickHouse goes on and stores the rows.
    db.execute(
        "CREATE MATERIALIZED VIEW slow_mv ENGINE = Null AS \
         SELECT sleepEachRow(2.5) AS slept FROM clue_events WHERE detail = 'SLOW'",
    )
    .await;
    let config = SinkConfig {
        insert_timeout_ms: 1_000,
        ..sink_config(&broker, &db)
    };
    let sink = start_sink(config.clone()).await;
    let mut stories = stories(2);
    if let Fact::Reported(r) = &mut stories[3].facts[0].fact {
        r.description = "SLOW".into();
    }
    let e = expected(&stories);
    let p = producer(&broker);
    produce_stories(&p, &config.events_topic, &stories).await;
    let s = &sink;
    wait_for(
        "the timed-out insert to be found stored",
        Duration::from_secs(60),
        || async move {
            s.counter(
                "gridclue_sink_skipped_total",
                Some(("why", "stored_by_failed_insert")),
            ) > 0.0
        },
    )
    .await;
    wait_for("all offsets committed", Duration::from_secs(30), || async {
        committed_total(&broker, &config) == e.facts as i64
    })
    .await;
    assert_eq!(numbers(&db).await, numbers_of(&e));
    assert_audit(&db, e.facts, "no fact was written twice").await;
    assert_flow(&db, e.facts).await;
    sink.stop().await;
}

/// An aggregate that lost rows (as a server crash between a table write and its views' writes
/// can leave it) or gained some is found by the check, group by group, and the rebuild makes
/// both aggregates match the facts again.
#[tokio::test]
async fn aggregates_that_drift_from_the_facts_are_found_and_rebuilt() {
    let db = TestDb::create("agg_rebuild").await;
    gridclue_sink::migrations::apply(&db.client).await.unwrap();
    let stories = stories(2);
    write_stories(&db, &stories).await;
    let exact = gridclue_sink::aggregates::check(&db.client).await.unwrap();
    assert!(exact.is_exact(), "{exact:?}");
    let e = expected(&stories);
    let facts: usize = stories.iter().map(|s| s.facts.len()).sum();
    assert_eq!(exact.flow_facts, facts as i64);
    assert_eq!(exact.counts_reports, exact.facts_reports);
    assert!(exact.counts_reports > 0 && exact.counts_cases < exact.counts_reports);
    assert_eq!(numbers(&db).await, numbers_of(&e));

    // One street's counts short by a report and a case, and an hour of facts counted twice.
    db.execute(
        "INSERT INTO clue_counts SELECT day, street_code, community_code, grid_code, \
         nearest_street_code, category, department, reporter_group, placement, -1, -1 \
         FROM clue_counts WHERE case_count > 0 LIMIT 1",
    )
    .await;
    db.execute("INSERT INTO fact_flow_hourly SELECT * FROM fact_flow_hourly LIMIT 1")
        .await;
    let off = gridclue_sink::aggregates::check(&db.client).await.unwrap();
    assert_eq!(
        (off.counts_groups_off, off.flow_groups_off),
        (1, 1),
        "{off:?}"
    );
    assert_eq!(off.counts_reports, exact.counts_reports - 1);
    assert!(off.flow_facts > exact.flow_facts);
    // The dashboard (reading the aggregate) is off by that report; the latest states are not.
    let (from_aggregate, from_states) = numbers_both(&db).await;
    assert_eq!(from_aggregate.reports + 1, from_states.reports);
    assert_eq!(from_states, numbers_of(&e));

    let rebuilt = gridclue_sink::aggregates::rebuild(&db.client)
        .await
        .unwrap();
    assert!(rebuilt.is_exact(), "{rebuilt:?}");
    assert_eq!(rebuilt, exact);
    assert_eq!(numbers(&db).await, numbers_of(&e));
}

/// A ClickHouse crash between an insert's table write and its views' writes, as the sink finds
/// it afterwards: the facts stored, some views without them (here: detached while the batch
/// was written). The repair gives exactly those views the facts' rows, leaves the others alone,
/// finds nothing more to do when run again, and refuses to guess when a view is off by
/// anything else.
#[tokio::test]
async fn views_a_crash_kept_from_a_stored_insert_are_repaired() {
    use gridclue_sink::view_repair::{repair, OffsetRange, Outcome, StoredFacts};
    use gridclue_tests::facts::{china, History, ReportSpec};

    let db = prepared_db("view_repair").await;
    let streets = grids_by_street();
    let mut grids = streets.values().map(|g| g[0]);
    let (a, b) = (grids.next().unwrap(), grids.next().unwrap());
    let t = china;
    let spec_a = ReportSpec::new(a, "garbage_pile", "greening_city_appearance");
    let spec_b = ReportSpec::new(b, "manhole_cover", "water_affairs");
    // Before the crash: c1 closed, c2 reported (offsets 0–5 and 100).
    let c1 = History::reported(&spec_a, t("2026-11-02 09:00"))
        .accepted(t("2026-11-02 09:30"), Some(t("2026-11-03 09:30")))
        .dispatched(t("2026-11-02 10:00"), "greening_city_appearance")
        .handled(t("2026-11-02 15:00"))
        .closed(t("2026-11-02 16:00"), 6);
    let c2 = History::reported(&spec_b, t("2026-11-02 11:00"));
    let (events, clues) = c1.rows(0);
    gridclue_tests::facts::write_rows(&db.client, &events, &clues).await;
    let (events, clues) = c2.rows(100);
    gridclue_tests::facts::write_rows(&db.client, &events, &clues).await;
    // The insert the crash cut, of two partitions: c2 accepted and dispatched (partition 0,
    // 101–102), c3 reported and accepted (partition 1, 200–201) in c2's street on c2's day (so
    // both partitions' facts move street B's reported count of that day), written while four
    // views were detached.
    let c2 = c2
        .accepted(t("2026-11-02 11:30"), Some(t("2026-11-04 11:30")))
        .dispatched(t("2026-11-02 12:00"), "water_affairs");
    let c3 = History::reported(&spec_b, t("2026-11-02 13:00"))
        .accepted(t("2026-11-02 13:10"), Some(t("2026-11-03 13:10")));
    let (e2, s2) = c2.rows(100);
    let (mut e3, mut s3) = c3.rows(200);
    for e in &mut e3 {
        e.kafka_partition = 1;
    }
    for c in &mut s3 {
        c.kafka_partition = 1;
    }
    let cut = [
        "fact_flow_hourly",
        "status_counts",
        "open_cases",
        "indicator_days",
    ];
    for target in cut {
        db.execute(&format!("DETACH TABLE {target}_mv")).await;
    }
    let events: Vec<_> = e2[1..].iter().chain(&e3).cloned().collect();
    let states: Vec<_> = s2[1..].iter().chain(&s3).cloned().collect();
    gridclue_tests::facts::write_rows(&db.client, &events, &states).await;
    for target in cut {
        db.execute(&format!("ATTACH TABLE {target}_mv")).await;
    }
    let short = gridclue_sink::aggregates::check(&db.client).await.unwrap();
    assert!(
        short.flow_groups_off > 0 && short.status_groups_off > 0 && short.open_cases_missing > 0,
        "the cut insert left the views short: {short:?}"
    );
    // The check of every view against its statement over the facts names exactly those four.
    let mut short_views: Vec<&str> = short
        .views_groups_off
        .iter()
        .filter(|(_, off)| *off > 0)
        .map(|(view, _)| *view)
        .collect();
    short_views.sort_unstable();
    let mut cut_sorted = cut.to_vec();
    cut_sorted.sort_unstable();
    assert_eq!(short_views, cut_sorted, "{short:?}");

    let facts = StoredFacts {
        topic: gridclue_core::wire::EVENTS_TOPIC.into(),
        ranges: vec![
            OffsetRange {
                partition: 0,
                log: 0,
                from: 101,
                to: 102,
            },
            OffsetRange {
                partition: 1,
                log: 0,
                from: 200,
                to: 201,
            },
        ],
    };
    let outcomes = repair(&db.client, &facts).await.unwrap();
    let repaired: Vec<&str> = outcomes
        .iter()
        .filter(|(_, o)| *o == Outcome::Repaired)
        .map(|(t, _)| *t)
        .collect();
    let mut want = cut.to_vec();
    want.sort_unstable();
    let mut got = repaired.clone();
    got.sort_unstable();
    assert_eq!(got, want, "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .all(|(t, o)| cut.contains(t) || *o == Outcome::Complete),
        "{outcomes:?}"
    );
    let exact = gridclue_sink::aggregates::check(&db.client).await.unwrap();
    assert!(exact.is_exact(), "{exact:?}");
    // Hand count: c1 6 facts (handling is started, then handled), c2 3, c3 2.
    assert_eq!((exact.flow_facts, exact.facts), (11, 11));
    assert_indicators_exact(&db).await;
    assert_status_counts_exact(&db).await;

    // Run again (a retry after another crash): every view is complete, nothing is written.
    let flow_rows = db.scalar("SELECT count() FROM fact_flow_hourly").await;
    let again = repair(&db.client, &facts).await.unwrap();
    assert!(
        again.iter().all(|(_, o)| *o == Outcome::Complete),
        "{again:?}"
    );
    assert_eq!(
        db.scalar("SELECT count() FROM fact_flow_hourly").await,
        flow_rows
    );

    // A view off by more than the insert (its rows written twice here): left alone, reported.
    db.execute(
        "INSERT INTO fact_flow_hourly SELECT * FROM fact_flow_hourly \
         WHERE fact_type = 'accepted'",
    )
    .await;
    let flow_rows = db.scalar("SELECT count() FROM fact_flow_hourly").await;
    let off = repair(&db.client, &facts).await.unwrap();
    assert!(
        off.contains(&("fact_flow_hourly", Outcome::Unresolved)),
        "{off:?}"
    );
    assert_eq!(
        db.scalar("SELECT count() FROM fact_flow_hourly").await,
        flow_rows
    );
}

// ---------------------------------------------------------------------------------------------
// Issue 9: a reset log is detected, never skipped in silence.

impl RunningSink {
    /// `gridclue_sink_log_reset_detected` of one partition of the events topic.
    fn log_reset(&self, partition: i32) -> f64 {
        self.metrics
            .log_reset_detected
            .with_label_values(&["clues.events", &partition.to_string()])
            .get() as f64
    }

    async fn readyz(&self) -> (StatusCode, String) {
        let r = reqwest::get(format!("{}/readyz", self.url)).await.unwrap();
        (r.status(), r.text().await.unwrap())
    }
}

/// Produces every fact of `stories` to `partition`, in order; returns the offsets.
async fn produce_stories_to(
    p: &FutureProducer,
    topic: &str,
    partition: i32,
    stories: &[Story],
) -> Vec<i64> {
    let mut offsets = Vec::new();
    for s in stories {
        for f in &s.facts {
            offsets.push(produce_to(p, topic, partition, &s.clue.to_string(), &f.encode()).await);
        }
    }
    offsets
}

fn facts_of(stories: &[Story]) -> u64 {
    stories.iter().map(|s| s.facts.len() as u64).sum()
}

/// Commits `offset` for the sink's group on one partition, from outside the group (the group
/// must not have had members on this broker yet).
fn commit_standalone(broker: &Broker, config: &SinkConfig, partition: i32, offset: i64) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .set("group.id", &config.group_id)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&config.events_topic, partition, Offset::Offset(offset))
        .unwrap();
    consumer
        .commit(&tpl, rdkafka::consumer::CommitMode::Sync)
        .unwrap();
    assert_eq!(committed(broker, config, partition), Some(offset));
}

/// The group's committed offset of one partition, if any.
fn committed(broker: &Broker, config: &SinkConfig, partition: i32) -> Option<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .set("group.id", &config.group_id)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(&config.events_topic, partition);
    let c = consumer
        .committed_offsets(tpl, Duration::from_secs(5))
        .unwrap();
    match c.elements()[0].offset() {
        Offset::Offset(o) => Some(o),
        _ => None,
    }
}

/// Has a sink store `old_on[p]` (the stories of partition `p`) from `first`, stops it, and
/// starts an empty broker in the first one's place. Returns the offsets each partition's facts
/// had on the first broker, the new broker, and the sink's configuration pointing at it.
async fn stored_then_broker_replaced(
    db: &TestDb,
    first: &Broker,
    config: SinkConfig,
    old_on: &[Vec<Story>],
) -> (Vec<Vec<i64>>, Broker, SinkConfig) {
    let p = producer(first);
    let mut offsets = Vec::new();
    for (part, stories) in old_on.iter().enumerate() {
        offsets.push(produce_stories_to(&p, &config.events_topic, part as i32, stories).await);
    }
    let sink = start_sink(config.clone()).await;
    let old: Vec<Story> = old_on.iter().flatten().cloned().collect();
    wait_numbers(db, &numbers_of(&expected(&old)), Duration::from_secs(60)).await;
    sink.stop().await;
    let second = Broker::start();
    let config = SinkConfig {
        kafka_brokers: second.bootstrap.clone(),
        ..config
    };
    (offsets, second, config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_log_is_refused_until_rebased_and_every_fact_counts_once() {
    let db = prepared_db("reset").await;
    let first = Broker::start();
    let config = SinkConfig {
        log_reset_recheck_ms: 200,
        ..sink_config(&first, &db)
    };
    let topic = config.events_topic.clone();
    let all = stories(3);
    let (old, new) = all.split_at(all.len() / 2);
    // Old facts on partitions 0, 1 and 2 of the first broker.
    let old_on: Vec<Vec<Story>> = (0..3)
        .map(|p| old.iter().skip(p).step_by(3).cloned().collect())
        .collect();
    let (old_offsets, second, config) =
        stored_then_broker_replaced(&db, &first, config, &old_on).await;
    // The broker was replaced by an empty one: partition 0 gets fewer records than were stored
    // from it, partition 1 more (but other ones), partition 2 the same records again (as a
    // broker that replays its journal would) and then new ones, partition 3 only new ones.
    let p = producer(&second);
    let (new_p0, rest) = new.split_at(1);
    let (new_p1, rest) = rest.split_at(12);
    let (new_p2, new_p3) = rest.split_at(3);
    let high0 = produce_stories_to(&p, &topic, 0, new_p0).await.len() as i64;
    let stored0 = *old_offsets[0].last().unwrap();
    assert!(
        high0 <= stored0,
        "partition 0 must end before the stored offset"
    );
    let high1 = produce_stories_to(&p, &topic, 1, new_p1).await.len() as i64;
    assert!(
        high1 > *old_offsets[1].last().unwrap() + 1,
        "partition 1 must reach past the stored offset"
    );
    let replayed = produce_stories_to(&p, &topic, 2, &old_on[2]).await;
    assert_eq!(
        replayed, old_offsets[2],
        "the same records at the same offsets"
    );
    produce_stories_to(&p, &topic, 2, new_p2).await;
    produce_stories_to(&p, &topic, 3, new_p3).await;
    // The group's position of partition 1 survived (as on a broker whose topic was re-created
    // under a group that kept its offsets): within the new log, but not its start.
    let stale = 5;
    commit_standalone(&second, &config, 1, stale);

    let sink = start_sink(config.clone()).await;
    let s = &sink;
    wait_for(
        "both reset partitions reported",
        Duration::from_secs(60),
        || async move { s.log_reset(0) == 1.0 && s.log_reset(1) == 1.0 },
    )
    .await;
    // The other partitions flow: the replayed records are recognised as stored (the record at
    // the stored offset is the fact stored from it), the new ones are written.
    let flowing: Vec<Story> = old.iter().chain(new_p2).chain(new_p3).cloned().collect();
    wait_numbers(
        &db,
        &numbers_of(&expected(&flowing)),
        Duration::from_secs(60),
    )
    .await;
    assert_audit(&db, facts_of(&flowing), "held partitions wrote nothing").await;
    assert_eq!(sink.log_reset(2), 0.0);
    assert_eq!(sink.log_reset(3), 0.0);
    assert_eq!(
        sink.counter("gridclue_sink_skipped_total", Some(("why", "resumed"))),
        facts_of(&old_on[2]) as f64,
        "only the records proven stored were skipped"
    );
    assert_eq!(
        sink.counter("gridclue_sink_skipped_total", Some(("why", "duplicate"))),
        0.0
    );
    assert_eq!(committed(&second, &config, 0), None, "nothing committed");
    assert_eq!(
        committed(&second, &config, 1),
        Some(stale),
        "nothing committed"
    );
    let (status, body) = sink.readyz().await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    for part in [
        format!("clues.events partition 0: stored up to offset {stored0}"),
        format!("high watermark {high0}"),
        "clues.events partition 1".to_owned(),
        "gridclue-sink rebase --partition 1".to_owned(),
    ] {
        assert!(body.contains(&part), "{part:?} not in {body}");
    }
    assert_eq!(
        db.scalar(
            "SELECT count() FROM kafka_logs WHERE kafka_partition = 2 \
             AND startsWith(note, 'carried over')"
        )
        .await,
        1,
        "the new cluster id is recorded for the carried-over log"
    );
    // A replay refuses a reset partition too.
    let refused = gridclue_sink::replay::replay(
        config.clone(),
        gridclue_sink::replay::ReplayRange {
            partitions: Some(vec![0]),
            beyond_committed: true,
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("log reset on clues.events partition 0"),
        "{refused:#}"
    );

    // The operator starts a new log for partition 0; the running sink reads it from its start.
    let outcomes = gridclue_sink::log_reset::rebase(
        &config,
        gridclue_sink::log_reset::RebaseTarget::Partitions(vec![0]),
        false,
    )
    .await
    .unwrap();
    assert!(
        matches!(
            outcomes.as_slice(),
            [gridclue_sink::log_reset::RebaseOutcome::Rebased {
                partition: 0,
                from_log: 0,
                to_log: 1,
                reset: Some(_),
            }]
        ),
        "{outcomes:?}"
    );
    let flowing: Vec<Story> = flowing.iter().chain(new_p0).cloned().collect();
    wait_numbers(
        &db,
        &numbers_of(&expected(&flowing)),
        Duration::from_secs(60),
    )
    .await;
    wait_for(
        "partition 0 cleared",
        Duration::from_secs(10),
        || async move { s.log_reset(0) == 0.0 },
    )
    .await;
    assert_eq!(sink.log_reset(1), 1.0, "partition 1 is still held");
    // Partition 1 is rebased with the sink stopped: started again, it reads the new log from
    // its start, not from the group's stale position.
    sink.stop().await;
    let outcomes = gridclue_sink::log_reset::rebase(
        &config,
        gridclue_sink::log_reset::RebaseTarget::AllReset,
        false,
    )
    .await
    .unwrap();
    assert!(
        matches!(
            outcomes.as_slice(),
            [gridclue_sink::log_reset::RebaseOutcome::Rebased { partition: 1, .. }]
        ),
        "{outcomes:?}"
    );
    let sink = start_sink(config.clone()).await;
    let s = &sink;
    let e = expected(&all);
    wait_numbers(&db, &numbers_of(&e), Duration::from_secs(60)).await;
    assert_audit(&db, e.facts, "every fact written once").await;
    assert_flow(&db, e.facts).await;
    assert_eq!(s.readyz().await.0, StatusCode::OK);

    // The old facts published again into the new logs change nothing.
    produce_stories_to(&p, &topic, 0, &old_on[0]).await;
    produce_stories_to(&p, &topic, 1, &old_on[1]).await;
    let copies = (facts_of(&old_on[0]) + facts_of(&old_on[1])) as f64;
    wait_for("the copies read and skipped", Duration::from_secs(60), || async move {
        s.counter("gridclue_sink_skipped_total", Some(("why", "duplicate"))) >= copies
    })
    .await;
    assert_eq!(numbers(&db).await, numbers_of(&e));
    assert_audit(&db, e.facts, "no fact written twice").await;
    assert_flow(&db, e.facts).await;
    let again = gridclue_sink::log_reset::rebase(
        &config,
        gridclue_sink::log_reset::RebaseTarget::AllReset,
        false,
    )
    .await
    .unwrap();
    assert!(again.is_empty(), "nothing is reset any more: {again:?}");
    sink.stop().await;
}

/// A broker that lost the tail of a log (records it had acknowledged and the sink had stored):
/// the sink proves the log is the same one up to a record, continues it in a new log after that
/// record, and counts every fact once — the lost ones stay stored, copies of them are skipped,
/// the records that take the lost offsets are new facts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_that_lost_its_tail_is_read_on_after_the_last_record_kept() {
    let db = prepared_db("truncated").await;
    let first = Broker::start();
    let config = sink_config(&first, &db);
    let topic = config.events_topic.clone();
    let all = stories(3);
    let (old, new) = all.split_at(all.len() / 2);
    let old_on: Vec<Vec<Story>> = (0..2)
        .map(|p| old.iter().skip(p).step_by(2).cloned().collect())
        .collect();
    let (offsets, second, config) = stored_then_broker_replaced(&db, &first, config, &old_on).await;
    let stored_through: Vec<i64> = offsets.iter().map(|o| *o.last().unwrap()).collect();
    // The broker comes back holding each log's records only up to a point, as a dev broker
    // killed before its journal read the last ones does.
    let p = producer(&second);
    // Partition 0 keeps half its stories; a later lost one is produced again (as enrich does
    // when it reads its commands again, though not at the offsets it had), then one new story:
    // the log ends before the offset stored from it.
    let (kept0, lost0) = old_on[0].split_at(old_on[0].len() / 2);
    let (new0, rest) = new.split_at(1);
    let kept_through0 = *produce_stories_to(&p, &topic, 0, kept0)
        .await
        .last()
        .unwrap();
    assert!(
        lost0.len() >= 2,
        "partition 0 must lose at least two stories"
    );
    produce_stories_to(&p, &topic, 0, &lost0[1..2]).await;
    let end0 = *produce_stories_to(&p, &topic, 0, new0)
        .await
        .last()
        .unwrap();
    assert!(
        end0 < stored_through[0],
        "partition 0 must end before the stored offset"
    );
    // Partition 1 keeps a third of its stories, then new ones grow it past the stored offset;
    // the group's position is still the one the sink committed on the first broker.
    let (kept1, _) = old_on[1].split_at(old_on[1].len() / 3);
    let kept_through1 = *produce_stories_to(&p, &topic, 1, kept1)
        .await
        .last()
        .unwrap();
    let end1 = *produce_stories_to(&p, &topic, 1, rest)
        .await
        .last()
        .unwrap();
    assert!(
        end1 > stored_through[1],
        "partition 1 must grow past the stored offset"
    );
    commit_standalone(&second, &config, 1, stored_through[1] + 1);

    let sink = start_sink(config.clone()).await;
    let everything: Vec<Story> = old.iter().chain(new).cloned().collect();
    let e = expected(&everything);
    wait_numbers(&db, &numbers_of(&e), Duration::from_secs(60)).await;
    assert_audit(&db, e.facts, "every fact written once").await;
    assert_flow(&db, e.facts).await;
    assert_indicators_exact(&db).await;
    for part in [0, 1] {
        assert_eq!(sink.log_reset(part), 0.0, "partition {part} is not held");
        assert_eq!(
            sink.counter(
                "gridclue_sink_log_truncations_total",
                Some(("partition", &part.to_string()))
            ),
            1.0,
            "partition {part}'s truncation is counted"
        );
    }
    assert_eq!(sink.readyz().await.0, StatusCode::OK);
    assert_eq!(
        sink.counter("gridclue_sink_skipped_total", Some(("why", "duplicate"))),
        facts_of(&lost0[1..2]) as f64,
        "the copies of lost facts are skipped"
    );
    assert_eq!(
        sink.counter("gridclue_sink_skipped_total", Some(("why", "resumed"))),
        facts_of(kept0) as f64,
        "partition 0 is read from its start (nothing committed) and its kept records skipped; \
         partition 1 is read from after its kept records, not from the stale position"
    );
    for (part, kept_through) in [(0, kept_through0), (1, kept_through1)] {
        assert_eq!(
            db.scalar(&format!(
                "SELECT count() FROM kafka_logs WHERE kafka_partition = {part} \
                 AND kafka_log = 1 AND continues_after = {kept_through}"
            ))
            .await,
            1,
            "partition {part} continues in log 1 after offset {kept_through}"
        );
    }
    sink.stop().await;
}
