//! The ClickHouse projection (sink) and the dashboard API, against the real test ClickHouse
//! server (`GRIDCLUE_TEST_CLICKHOUSE_URL`, default http://127.0.0.1:18123) and a mock Kafka
//! cluster per test.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use gridclue_core::category::Urgency;
use gridclue_core::tokens::{TokenFile, TokenKind};
use gridclue_core::wire::{
    Channel, DlqReason, DlqRecord, EventEnvelope, Fact, Placement, Reported, SCHEMA_VERSION,
};
use gridclue_core::{CategoryCode, ClueId, CommandId, GeoPoint, GridCode, ReporterGroup, Status};
use gridclue_dashboard_api::reference::{CategoryName, Reference};
use gridclue_dashboard_api::{AppState, DashboardMetrics};
use gridclue_sink::rows::ClueRow;
use gridclue_sink::store::InsertTimeouts;
use gridclue_sink::{SinkConfig, SinkMetrics};
use gridclue_tests::ch::TestDb;
use gridclue_tests::{data_dir, Broker, Scratch};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde_json::Value;
use tokio::net::TcpListener;
use tower::ServiceExt;

// ---------------------------------------------------------------------------------------------
// Facts

/// Grid codes of the shipped district map, grouped by street.
fn grids_by_street() -> BTreeMap<String, Vec<GridCode>> {
    let text = std::fs::read_to_string(data_dir().join("district/grids.geojson")).unwrap();
    let map: Value = serde_json::from_str(&text).unwrap();
    let mut out: BTreeMap<String, Vec<GridCode>> = BTreeMap::new();
    for f in map["features"].as_array().unwrap() {
        if let Some(code) = f["properties"]["grid_code"].as_str() {
            let g = GridCode::parse(code).unwrap();
            out.entry(g.street_code().to_owned()).or_default().push(g);
        }
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
        v: SCHEMA_VERSION,
        clue_id: clue,
        seq: 0,
        command_id: CommandId::for_report(clue),
        occurred_at_ms: at_ms,
        processed_at_ms: at_ms + 3,
        status: Status::Reported,
        fact: Fact::Reported(Box::new(Reported {
            category: CategoryCode::parse(category).unwrap(),
            location: GeoPoint::new(31.2, 121.5).unwrap(),
            placement,
            map_version: "test".into(),
            department: "city_mgmt".into(),
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
            status,
            fact,
            ..last
        });
        self
    }

    /// Accepted → dispatched → started → handled → closed.
    fn closed(self) -> Self {
        self.then(Fact::Accepted, Status::Accepted)
            .then(
                Fact::Dispatched {
                    department: "city_mgmt".into(),
                },
                Status::Dispatched,
            )
            .then(Fact::Started, Status::InProgress)
            .then(
                Fact::Handled {
                    note: "done".into(),
                },
                Status::Handled,
            )
            .then(Fact::Verified, Status::Closed)
    }

    fn street(&self) -> Option<String> {
        match &self.facts[0].fact {
            Fact::Reported(r) => r.placement.grid().map(|g| g.street_code().to_owned()),
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
                1 => s.then(Fact::Accepted, Status::Accepted),
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
    by_street: BTreeMap<String, u64>,
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
    gridclue_core::kafka::producer_config(&broker.bootstrap, 10_000)
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
    by_street: BTreeMap<String, u64>,
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
        if c.reports > 0 {
            *n.by_street.entry(c.street).or_default() += c.reports;
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
    assert_eq!(Some(row.street_code.clone()), closed.street());
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
    street_code: String,
    _dir: Scratch,
    path: std::path::PathBuf,
}

fn tokens(street_code: &str) -> Tokens {
    let dir = Scratch::new("dash-tokens");
    let path = dir.0.join("tokens.json");
    let mut f = TokenFile::default();
    let (district, _) = f
        .issue(TokenKind::District, None, None, "district")
        .unwrap();
    let (street, _) = f
        .issue(
            TokenKind::Street,
            None,
            Some(street_code.into()),
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
        street_code: street_code.into(),
        _dir: dir,
        path,
    }
}

fn reference() -> Reference {
    let text = std::fs::read_to_string(data_dir().join("district/grids.geojson")).unwrap();
    Reference {
        streets: Reference::streets_from_geojson(&text).unwrap(),
        categories: vec![
            CategoryName {
                code: "manhole_cover".into(),
                name_zh: "井盖破损".into(),
                name_en: "Damaged manhole cover".into(),
            },
            CategoryName {
                code: "garbage_pile".into(),
                name_zh: "垃圾堆物".into(),
                name_en: "Garbage pile".into(),
            },
        ],
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
    let t = tokens(&reference.streets[0].code);
    let state = AppState::new(
        db.client.clone(),
        gridclue_core::tokens::TokenStore::open(&t.path).unwrap(),
        reference,
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
        offset: 0,
    };
    let mut events = Vec::new();
    let mut latest = Vec::new();
    for s in stories {
        let mut state: Option<ClueRow> = None;
        for f in &s.facts {
            let row = gridclue_sink::rows::apply(state.take(), f, 0);
            events.push(gridclue_sink::rows::event_row(f, &row, &source));
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
    let a = reference.streets[0].code.clone();
    let b = reference.streets[5].code.clone();
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
    let open = Story::inside(gb, "manhole_cover").then(Fact::Accepted, Status::Accepted);
    let outside = Story::outside(ga, "garbage_pile");
    // A lifecycle fact whose report never arrived counts nowhere.
    let orphan = {
        let mut s = Story::inside(gb, "garbage_pile").then(Fact::Accepted, Status::Accepted);
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
    let t = tokens(&b);
    let state = AppState {
        ch: db.client.clone(),
        tokens: gridclue_core::tokens::TokenStore::open(&t.path).unwrap(),
        reference: std::sync::Arc::new(reference.clone()),
        metrics: DashboardMetrics::new(),
    };
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
    let street = |code: &str| {
        by_street
            .iter()
            .find(|x| x["street_code"] == code)
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
