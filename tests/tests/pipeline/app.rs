//! `spawn_app()`: one whole gridclue stack per test.

use std::future::Future;
use std::time::{Duration, Instant};

use gridclue_core::codes::ActorScope;
use gridclue_core::secrets::SecretKey;
use gridclue_core::tokens::{TokenFile, TokenKind};
use gridclue_core::ReporterGroup;
use gridclue_tests::{clickhouse_url, data_dir, scratch, unique_database, Broker};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// How often the services refresh their periodic metrics (lag, case gauges) in the tests.
const METRICS_INTERVAL_MS: u64 = 200;

pub struct TestApp {
    pub ingest_url: String,
    pub dashboard_url: String,
    pub sink_url: String,
    pub enrich_url: String,
    pub reporter_token: String,
    pub district_token: String,
    /// A street office's token for every street of the map, by street code.
    pub street_tokens: std::collections::BTreeMap<String, String>,
    /// A token for every department of the category table, by department code.
    pub department_tokens: std::collections::BTreeMap<String, String>,
    pub http: reqwest::Client,
    pub database: String,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
    broker: Broker,
    scratch: tempfile::TempDir,
}

/// A stack whose services were stopped: what a restart keeps (the ClickHouse database, the
/// tokens and the secret).
pub struct StoppedApp {
    reporter_token: String,
    district_token: String,
    street_tokens: std::collections::BTreeMap<String, String>,
    department_tokens: std::collections::BTreeMap<String, String>,
    database: String,
    scratch: tempfile::TempDir,
}

fn stopped(rx: &watch::Receiver<bool>) -> impl Future<Output = ()> + Send + 'static {
    let mut rx = rx.clone();
    async move {
        rx.changed().await.ok();
    }
}

async fn listener() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    (l, url)
}

pub async fn spawn_app() -> TestApp {
    spawn_app_on(Broker::start()).await
}

/// The four services on `broker`, with a new database and new tokens.
pub async fn spawn_app_on(broker: Broker) -> TestApp {
    let scratch = scratch("e2e");
    let tokens_file = scratch.path().join("tokens.json");
    let secret_file = scratch.path().join("secret.key");
    std::fs::write(&secret_file, "5a".repeat(32)).unwrap();
    SecretKey::load(&secret_file).unwrap();
    let mut tokens = TokenFile::default();
    let (reporter_token, _) = tokens
        .issue(
            TokenKind::Reporter,
            Some(ReporterGroup::FoodDelivery),
            None,
            "rider",
        )
        .unwrap();
    let (district_token, _) = tokens
        .issue(TokenKind::District, None, None, "district")
        .unwrap();
    let streets: std::collections::BTreeSet<String> = crate::geometry::load_grids()
        .iter()
        .map(|g| g.street_code.to_string())
        .collect();
    let street_tokens = streets
        .into_iter()
        .map(|code| {
            let (t, _) = tokens
                .issue(
                    TokenKind::Street,
                    None,
                    Some(ActorScope::parse(code.as_ref()).unwrap()),
                    "street office",
                )
                .unwrap();
            (code, t)
        })
        .collect();
    let catalog =
        gridclue_core::category::Catalog::load(&data_dir().join("categories.json")).unwrap();
    let department_tokens = catalog
        .departments()
        .iter()
        .map(|d| {
            let (t, _) = tokens
                .issue(
                    TokenKind::Department,
                    None,
                    Some(ActorScope::Department(d.code.clone())),
                    &d.name_en,
                )
                .unwrap();
            (d.code.to_string(), t)
        })
        .collect();
    tokens.write(&tokens_file).unwrap();
    let stopped = StoppedApp {
        reporter_token,
        district_token,
        street_tokens,
        department_tokens,
        database: unique_database("e2e"),
        scratch,
    };
    stopped.restart(broker).await
}

impl StoppedApp {
    /// Starts the services again, on `broker`, with the same database and tokens.
    pub async fn restart(self, broker: Broker) -> TestApp {
        let StoppedApp {
            reporter_token,
            district_token,
            street_tokens,
            department_tokens,
            database,
            scratch,
        } = self;
        let tokens_file = scratch.path().join("tokens.json");
        let secret_file = scratch.path().join("secret.key");
        let data = data_dir().display().to_string();
        let (stop, rx) = watch::channel(false);
        let mut tasks = Vec::new();

        let (ingest_listener, ingest_url) = listener().await;
        let (dashboard_listener, dashboard_url) = listener().await;
        let ingest = gridclue_ingest::IngestConfig {
            kafka_brokers: broker.bootstrap.clone(),
            kafka_extra: gridclue_core::kafka::dev_broker_tuning(),
            data_dir: data.clone(),
            tokens_file: tokens_file.display().to_string(),
            secret_file: secret_file.display().to_string(),
            clickhouse_url: clickhouse_url(),
            clickhouse_database: database.clone(),
            photos_url: scratch.path().join("photos").display().to_string(),
            dashboard_url: dashboard_url.clone(),
            ..Default::default()
        };
        tasks.push(tokio::spawn(gridclue_ingest::run(
            ingest_listener,
            ingest,
            stopped(&rx),
        )));

        let (l, enrich_url) = listener().await;
        let enrich = gridclue_enrich::EnrichConfig {
            kafka_brokers: broker.bootstrap.clone(),
            kafka_extra: gridclue_core::kafka::dev_broker_tuning(),
            data_dir: data.clone(),
            tokens_file: tokens_file.display().to_string(),
            metrics_interval_ms: METRICS_INTERVAL_MS,
            ..Default::default()
        };
        tasks.push(tokio::spawn(gridclue_enrich::run(l, enrich, stopped(&rx))));

        let (l, sink_url) = listener().await;
        let sink = gridclue_sink::SinkConfig {
            kafka_brokers: broker.bootstrap.clone(),
            kafka_extra: gridclue_core::kafka::dev_broker_tuning(),
            clickhouse_url: clickhouse_url(),
            clickhouse_database: database.clone(),
            metrics_interval_ms: METRICS_INTERVAL_MS,
            ..Default::default()
        };
        // Every table a read needs exists before any service answers (the sink's own start-up
        // migration then finds nothing to do).
        gridclue_sink::migrate(&sink)
            .await
            .expect("the test database is migrated");
        tasks.push(tokio::spawn(gridclue_sink::run(l, sink, stopped(&rx))));

        let dashboard = gridclue_dashboard_api::DashboardConfig {
            clickhouse_url: clickhouse_url(),
            clickhouse_database: database.clone(),
            data_dir: data,
            tokens_file: tokens_file.display().to_string(),
            ..Default::default()
        };
        tasks.push(tokio::spawn(gridclue_dashboard_api::run(
            dashboard_listener,
            dashboard,
            stopped(&rx),
        )));

        let app = TestApp {
            ingest_url,
            dashboard_url,
            sink_url,
            enrich_url,
            reporter_token,
            district_token,
            street_tokens,
            department_tokens,
            http: reqwest::Client::new(),
            database,
            stop,
            tasks,
            broker,
            scratch,
        };
        app.wait_ready().await;
        app
    }
}

impl TestApp {
    /// The Kafka bootstrap address of the stack's broker.
    pub fn bootstrap(&self) -> &str {
        &self.broker.bootstrap
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        for url in [&self.ingest_url, &self.dashboard_url] {
            loop {
                let ok = self
                    .http
                    .get(format!("{url}/readyz"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if ok {
                    break;
                }
                if let Some(t) = self.tasks.iter().find(|t| t.is_finished()) {
                    panic!("a service stopped during start-up: {t:?}");
                }
                assert!(Instant::now() < deadline, "{url} never became ready");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    pub async fn post_clue(&self, body: &Value, idempotency_key: &str) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/clues", self.ingest_url))
            .bearer_auth(&self.reporter_token)
            .header("Idempotency-Key", idempotency_key)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// The reporter's view of one of their clues (`GET /v1/clues/{id}`), once it is there (the
    /// sink writes a batch's facts and clue states one table after the other).
    pub async fn clue_view(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = self
                .http
                .get(format!("{}/v1/clues/{id}", self.ingest_url))
                .bearer_auth(&self.reporter_token)
                .send()
                .await
                .unwrap();
            if r.status() == 200 {
                return r.json().await.unwrap();
            }
            assert!(
                r.status() == 404 && Instant::now() < deadline,
                "{}: {}",
                r.status(),
                r.text().await.unwrap()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `POST /v1/clues/{clue}/transitions` as `token`; a 202 is followed to its verdict by
    /// polling its `Location`, as a client does. Returns the final status and body.
    pub async fn transition(
        &self,
        token: &str,
        clue: &str,
        body: Value,
        idempotency_key: Option<&str>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .post(format!("{}/v1/clues/{clue}/transitions", self.ingest_url))
            .bearer_auth(token)
            .json(&body);
        if let Some(k) = idempotency_key {
            req = req.header("Idempotency-Key", k);
        }
        let mut r = req.send().await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while r.status() == 202 {
            let location = r.headers()["location"].to_str().unwrap().to_owned();
            assert!(Instant::now() < deadline, "no verdict on {body} after 60 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
            r = self
                .http
                .get(format!("{}{location}", self.ingest_url))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
        }
        let status = r.status().as_u16();
        (status, r.json().await.unwrap())
    }

    pub async fn summary(&self) -> Value {
        let r = self
            .http
            .get(format!("{}/v1/summary", self.dashboard_url))
            .bearer_auth(&self.district_token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    /// Polls the summary until `done` holds or the timeout passes; returns the last summary.
    pub async fn summary_when(&self, timeout: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.summary().await;
            if done(&s) || Instant::now() > deadline {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until every stage has consumed and committed all there is (see
    /// [`Broker::settled`]): what has not happened by then is not merely late.
    pub async fn settled(&self) {
        self.broker.settled(Duration::from_secs(60)).await;
    }

    /// A client of this stack's ClickHouse database (adapted to the server's version).
    pub async fn clickhouse(&self) -> clickhouse::Client {
        gridclue_core::ch::connect(&gridclue_core::ch::ChSettings {
            url: clickhouse_url(),
            database: self.database.clone(),
            user: "default".into(),
            password: Default::default(),
        })
        .await
        .expect("the test ClickHouse answers")
    }

    /// Stops the services (each must stop cleanly within 30 s) and hands back their broker,
    /// still running, and what a restart needs.
    pub async fn stop_services(self) -> (StoppedApp, Broker) {
        self.stop.send(true).ok();
        for t in self.tasks {
            let result = tokio::time::timeout(Duration::from_secs(30), t)
                .await
                .expect("service stops within 30 s")
                .expect("service task did not panic");
            result.expect("service stopped cleanly");
        }
        let stopped = StoppedApp {
            reporter_token: self.reporter_token,
            district_token: self.district_token,
            street_tokens: self.street_tokens,
            department_tokens: self.department_tokens,
            database: self.database,
            scratch: self.scratch,
        };
        (stopped, self.broker)
    }

    pub async fn stop(self) {
        let (stopped, broker) = self.stop_services().await;
        broker.shutdown();
        let ch = clickhouse::Client::default().with_url(clickhouse_url());
        ch.query(&format!("DROP DATABASE IF EXISTS {}", stopped.database))
            .execute()
            .await
            .expect("test database dropped");
    }
}
