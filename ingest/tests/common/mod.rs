//! Helpers shared by ingest's integration tests: a scratch directory with tokens and a secret
//! key, the repository's data, a mock Kafka cluster, a reader of the commands topic, and
//! in-process servers on port 0.
#![allow(dead_code)]

/// The sample images of `strip`'s unit tests: one definition of the JPEG and PNG writers.
#[path = "../../src/photos/sample_images.rs"]
pub mod images;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, Response};
use gridclue_core::codes::ActorScope;
use gridclue_core::tokens::{TokenFile, TokenKind};
use gridclue_core::wire::CommandEnvelope;
use gridclue_core::ReporterGroup;
use gridclue_ingest::IngestConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use tokio::sync::watch;
use tower::ServiceExt;

pub const TOPIC: &str = "clues.commands";

/// A point well inside the shipped district.
pub const INSIDE: (f64, f64) = (31.2, 121.47);

pub fn data_dir() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../data")
        .display()
        .to_string()
}

/// A scratch directory with a token file (two reporters, a revoked reporter, a district
/// token) and a secret key; removed on drop.
pub struct Env {
    pub dir: PathBuf,
    /// Removes `dir` on drop.
    _scratch: tempfile::TempDir,
    pub reporter: String,
    pub reporter_id: String,
    pub other_reporter: String,
    pub other_reporter_id: String,
    pub revoked: String,
    pub district: String,
    /// With [`Env::with_staff`] only (empty otherwise): the street office of street 310199001,
    /// and one of another street.
    pub street: String,
    pub other_street: String,
    /// The water affairs department, and the urban management department.
    pub department: String,
    pub other_department: String,
}

impl Env {
    pub fn new(name: &str) -> Self {
        Self::create(name, false)
    }

    /// Also street office and department tokens.
    pub fn with_staff(name: &str) -> Self {
        Self::create(name, true)
    }

    fn create(name: &str, staff: bool) -> Self {
        let scratch = tempfile::Builder::new()
            .prefix(&format!("gridclue-ingest-{name}-"))
            .tempdir()
            .unwrap();
        let dir = scratch.path().to_path_buf();
        std::fs::write(dir.join("secret.key"), "7e".repeat(32)).unwrap();
        let mut tokens = TokenFile::default();
        let (reporter, r1) = tokens
            .issue(
                TokenKind::Reporter,
                Some(ReporterGroup::FoodDelivery),
                None,
                "rider one",
            )
            .unwrap();
        let (other_reporter, r2) = tokens
            .issue(
                TokenKind::Reporter,
                Some(ReporterGroup::Courier),
                None,
                "rider two",
            )
            .unwrap();
        let (revoked, r3) = tokens
            .issue(
                TokenKind::Reporter,
                Some(ReporterGroup::Truck),
                None,
                "gone",
            )
            .unwrap();
        tokens.revoke(&r3.id).unwrap();
        let (district, _) = tokens
            .issue(TokenKind::District, None, None, "district")
            .unwrap();
        let mut scoped = |kind, scope: &str| {
            if !staff {
                return String::new();
            }
            tokens
                .issue(kind, None, Some(ActorScope::parse(scope).unwrap()), scope)
                .unwrap()
                .0
        };
        let street = scoped(TokenKind::Street, "310199001");
        let other_street = scoped(TokenKind::Street, "310199002");
        let department = scoped(TokenKind::Department, "water_affairs");
        let other_department = scoped(TokenKind::Department, "urban_management");
        tokens.write(&dir.join("tokens.json")).unwrap();
        Self {
            dir,
            _scratch: scratch,
            reporter,
            reporter_id: r1.id,
            other_reporter,
            other_reporter_id: r2.id,
            revoked,
            district,
            street,
            other_street,
            department,
            other_department,
        }
    }

    /// A config with no rate limits, pointing at `brokers`.
    pub fn config(&self, brokers: &str) -> IngestConfig {
        IngestConfig {
            kafka_brokers: brokers.to_owned(),
            kafka_extra: gridclue_core::kafka::dev_broker_tuning(),
            data_dir: data_dir(),
            tokens_file: self.dir.join("tokens.json").display().to_string(),
            secret_file: self.dir.join("secret.key").display().to_string(),
            produce_timeout_ms: 3_000,
            retry_after_secs: 2,
            rate_limit_token_per_sec: 0.0,
            rate_limit_ip_per_sec: 0.0,
            photos_url: self.dir.join("photos").display().to_string(),
            ..IngestConfig::default()
        }
    }
}

/// A mock cluster of 3 brokers with the commands topic.
pub fn cluster(partitions: i32) -> MockCluster<'static, DefaultProducerContext> {
    let c = MockCluster::new(3).expect("mock cluster");
    c.create_topic(TOPIC, partitions, 3).expect("topic");
    c
}

/// Every record on the commands topic, decoded, with its key.
pub fn read_topic(bootstrap: &str, expect_at_least: usize) -> Vec<(String, CommandEnvelope)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "ingest-test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let metadata = consumer
        .fetch_metadata(Some(TOPIC), Duration::from_secs(5))
        .expect("metadata");
    let partitions = metadata.topics()[0].partitions().len() as i32;
    let mut tpl = TopicPartitionList::new();
    let mut total = 0i64;
    for p in 0..partitions {
        let (lo, hi) = consumer
            .fetch_watermarks(TOPIC, p, Duration::from_secs(5))
            .expect("watermarks");
        total += hi - lo;
        tpl.add_partition_offset(TOPIC, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while (out.len() as i64) < total.max(expect_at_least as i64) && Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m.expect("message");
            let key = String::from_utf8(m.key().unwrap_or_default().to_vec()).unwrap();
            let command = CommandEnvelope::decode(m.payload().unwrap_or_default())
                .expect("every record on the topic is a whole, valid command");
            out.push((key, command));
        }
    }
    out
}

/// Runs a request through the router.
pub async fn call(app: &axum::Router, req: Request<Body>) -> Response<Body> {
    app.clone().oneshot(req).await.unwrap()
}

pub async fn body_json(r: Response<Body>) -> serde_json::Value {
    let bytes = axum::body::to_bytes(r.into_body(), 16 << 20).await.unwrap();
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
}

pub async fn body_text(r: Response<Body>) -> String {
    let bytes = axum::body::to_bytes(r.into_body(), 16 << 20).await.unwrap();
    String::from_utf8(bytes.to_vec()).unwrap()
}

pub fn clue_json() -> serde_json::Value {
    serde_json::json!({
        "category": "manhole_cover",
        "lat": INSIDE.0,
        "lon": INSIDE.1,
        "description": "井盖缺失",
    })
}

pub fn post_json(path: &str, token: Option<&str>, body: &serde_json::Value) -> Request<Body> {
    let mut b = Request::post(path).header("content-type", "application/json");
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    b.body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap()
}

/// An ingest server on 127.0.0.1:0, stopped by `stop()`.
pub struct Server {
    pub url: String,
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Server {
    pub async fn start(config: IngestConfig) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(gridclue_ingest::run(listener, config, stopped(rx)));
        Self {
            url: format!("http://{addr}"),
            addr,
            stop,
            task,
        }
    }

    pub fn request_stop(&self) {
        self.stop.send(true).ok();
    }

    pub async fn stop(self) -> anyhow::Result<()> {
        self.request_stop();
        self.task.await.unwrap()
    }
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    rx.changed().await.ok();
}
