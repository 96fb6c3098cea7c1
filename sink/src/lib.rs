//! gridclue-sink: projects the facts of `clues.events` into ClickHouse.
//!
//! - [`migrations`]: versioned schema, embedded, applied at start and by `gridclue-sink migrate`.
//! - [`rows`]: the table rows and the per-clue state facts are folded into.
//! - [`store`]: ClickHouse calls and error classification.
//! - `pipeline`: the consume → fold → batch → insert → commit loop: rebalances, held
//!   partitions, the clue states facts are folded into, backpressure.
//! - `batching`: when a batch is flushed (full or lingered), and what a revocation drops from
//!   it; pure, the time passed in.
//! - `writer`: makes a batch durable: inserts with retry and backoff, splits a refused batch,
//!   undoes refused facts, routes undecodable and refused records to the DLQ.
//! - `acknowledger`: commits offsets once the output is durable.
//! - `poller`: the thread that polls the consumer and pauses it when the loop falls behind.
//! - [`replay`]: re-projects a range of the topic (`gridclue-sink replay`).
//! - [`log_reset`]: finds Kafka logs that were reset before anything is skipped, and starts a
//!   new log deliberately (`gridclue-sink rebase`).
//! - [`alerts`]: projects the hotspot alerts of `clues.alerts` (`hotspot_alerts`).
//! - [`dlq`]: the dead-letter queue for operators (`gridclue-sink dlq list|show|replay`).
//! - [`metrics`]: the sink's Prometheus metrics.
//! - [`indicator_deltas`], [`status_counts`], [`open_cases`]: the rows each fact adds to the
//!   indicators' delta projection, the running status counts and the open cases (written on
//!   its `clue_events` row, spread by views).
//! - [`aggregates`]: checks the aggregate tables against the facts, and rebuilds them
//!   (`gridclue-sink check-aggregates`, `rebuild-aggregates`).
//! - [`view_repair`]: after a failed insert that stored its facts, gives the views' targets
//!   the rows a ClickHouse crash kept from them.
//!
//! [`run`] takes its listener, config and shutdown signal as arguments so tests run it
//! in-process on port 0.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use std::net::SocketAddr;

use gridclue_core::ch::ChSettings;
use gridclue_core::config::{self, ConfigError, KafkaExtra, Secret};
use gridclue_core::kafka::KafkaSettings;
use gridclue_core::service::Readiness;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

mod acknowledger;
pub mod aggregates;
pub mod alerts;
mod batching;
pub mod dlq;
pub mod indicator_deltas;
pub mod log_reset;
pub mod metrics;
pub mod migrations;
pub mod open_cases;
mod pipeline;
mod poller;
pub mod replay;
pub mod rows;
pub mod status_counts;
pub mod store;
pub mod view_repair;
mod writer;

pub use metrics::SinkMetrics;

/// The sink's configuration (defaults → `GRIDCLUE_CONFIG` file → `GRIDCLUE_*` environment).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct SinkConfig {
    #[serde(deserialize_with = "config::broker_list")]
    pub kafka_brokers: String,
    /// librdkafka settings for every Kafka client (security, SASL, TLS…).
    pub kafka_extra: KafkaExtra,
    #[serde(deserialize_with = "config::http_url")]
    pub clickhouse_url: String,
    pub clickhouse_database: String,
    pub clickhouse_user: String,
    pub clickhouse_password: Secret,
    /// A file holding the password (first line), instead of `clickhouse_password`.
    pub clickhouse_password_file: String,
    pub events_topic: String,
    pub dlq_topic: String,
    pub group_id: String,
    /// Hotspot alert versions, projected into `hotspot_alerts` by a loop of their own.
    pub alerts_topic: String,
    pub alerts_group_id: String,
    /// HTTP address of `/healthz`, `/readyz` and `/metrics`.
    pub listen: SocketAddr,
    /// Flush when a batch holds this many facts…
    pub batch_max_rows: usize,
    /// …or roughly this many bytes…
    pub batch_max_bytes: usize,
    /// …or when its first fact has waited this long (and `min_insert_interval_ms` has passed
    /// since the previous flush): fresh at low rates, few inserts at high rates.
    #[serde(deserialize_with = "config::positive_ms")]
    pub batch_linger_ms: u64,
    /// Spacing of flushes that are not full, so each table sees at most ~2 inserts a second.
    pub min_insert_interval_ms: u64,
    /// First and longest wait between retries of a failed ClickHouse or DLQ call.
    #[serde(deserialize_with = "config::positive_ms")]
    pub retry_initial_ms: u64,
    #[serde(deserialize_with = "config::positive_ms")]
    pub retry_max_ms: u64,
    /// Timeout of one INSERT (sending and awaiting the server's answer).
    #[serde(deserialize_with = "config::positive_ms")]
    pub insert_timeout_ms: u64,
    /// How long the DLQ producer may take to get a record acknowledged before retrying.
    #[serde(deserialize_with = "config::positive_ms")]
    pub dlq_timeout_ms: u64,
    /// How often a partition held because its log was reset is judged again (a rebase is
    /// picked up within this time).
    pub log_reset_recheck_ms: u64,
    /// Timeout of one Kafka look-up of the reset check (watermarks, cluster id, one record).
    pub log_check_timeout_ms: u64,
    /// How often consumer lag is measured for `/metrics`.
    #[serde(deserialize_with = "config::positive_ms")]
    pub metrics_interval_ms: u64,
}

impl Default for SinkConfig {
    fn default() -> Self {
        Self {
            kafka_brokers: "127.0.0.1:9092".into(),
            kafka_extra: KafkaExtra::default(),
            clickhouse_url: "http://127.0.0.1:18123".into(),
            clickhouse_database: "gridclue".into(),
            clickhouse_user: "default".into(),
            clickhouse_password: Secret::default(),
            clickhouse_password_file: String::new(),
            events_topic: gridclue_core::wire::EVENTS_TOPIC.into(),
            dlq_topic: gridclue_core::wire::DLQ_TOPIC.into(),
            group_id: "gridclue-sink".into(),
            alerts_topic: gridclue_core::wire::ALERTS_TOPIC.into(),
            alerts_group_id: "gridclue-sink-alerts".into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 7404)),
            batch_max_rows: 100_000,
            batch_max_bytes: 64 * 1024 * 1024,
            batch_linger_ms: 50,
            min_insert_interval_ms: 500,
            retry_initial_ms: 100,
            retry_max_ms: 5_000,
            insert_timeout_ms: 30_000,
            dlq_timeout_ms: 30_000,
            log_reset_recheck_ms: 5_000,
            log_check_timeout_ms: 10_000,
            metrics_interval_ms: 5_000,
        }
    }
}

impl SinkConfig {
    pub fn ch_settings(&self) -> Result<ChSettings, ConfigError> {
        Ok(ChSettings {
            url: self.clickhouse_url.clone(),
            database: self.clickhouse_database.clone(),
            user: self.clickhouse_user.clone(),
            password: self
                .clickhouse_password
                .or_from_file("clickhouse_password", &self.clickhouse_password_file)?,
        })
    }

    pub fn kafka(&self) -> KafkaSettings {
        KafkaSettings::new(&self.kafka_brokers, self.kafka_extra.clone())
    }
}

/// Connects to ClickHouse (creating the database), retrying transient failures until `cancel`.
/// Returns `None` when cancelled first.
pub async fn connect_retrying(
    settings: &ChSettings,
    cancel: &CancellationToken,
) -> anyhow::Result<Option<clickhouse::Client>> {
    let mut backoff = Duration::from_millis(200);
    loop {
        match gridclue_core::ch::connect(settings).await {
            Ok(c) => return Ok(Some(c)),
            Err(e) if e.is_retryable() => {
                tracing::warn!(error = %e, "ClickHouse not reachable yet; retrying");
            }
            Err(e) => return Err(e.into()),
        }
        tokio::select! {
            _ = cancel.cancelled() => return Ok(None),
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Connects and applies the migrations (the `migrate` command).
pub async fn migrate(config: &SinkConfig) -> anyhow::Result<migrations::MigrationReport> {
    let client = gridclue_core::ch::connect(&config.ch_settings()?).await?;
    Ok(migrations::apply(&client).await?)
}

async fn migrate_retrying(
    client: &clickhouse::Client,
    cancel: &CancellationToken,
) -> anyhow::Result<bool> {
    let mut backoff = Duration::from_millis(200);
    loop {
        match migrations::apply(client).await {
            Ok(report) => {
                tracing::info!(applied = ?report.applied, already = report.already.len(), "schema up to date");
                return Ok(true);
            }
            Err(e) if e.is_retryable() => tracing::warn!(error = %e, "migration failed; retrying"),
            Err(e) => return Err(e.into()),
        }
        tokio::select! {
            _ = cancel.cancelled() => return Ok(false),
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Runs the sink until `shutdown` completes: serves `/healthz`, `/readyz` (ready once the schema
/// is migrated and the consumer subscribed, and while no partition is held because its Kafka log
/// was reset) and `/metrics` on `listener`, and projects the
/// events topic into ClickHouse. On shutdown the pending batch is flushed and committed when
/// ClickHouse takes it.
pub async fn run(
    listener: tokio::net::TcpListener,
    config: SinkConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let metrics = SinkMetrics::new();
    metrics.init_series();
    run_with_metrics(listener, config, shutdown, metrics).await
}

/// [`run`] with a caller-provided metrics registry (tests read it).
pub async fn run_with_metrics(
    listener: tokio::net::TcpListener,
    config: SinkConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
    metrics: SinkMetrics,
) -> anyhow::Result<()> {
    let cancel = CancellationToken::new();
    {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            shutdown.await;
            cancel.cancel();
        });
    }
    let ready = Readiness::default();
    let http_stop = CancellationToken::new();
    let app: axum::Router =
        gridclue_core::service::probe_routes(ready.clone(), metrics.registry.clone());
    let http = {
        let stop = http_stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        })
    };
    tracing::info!(config = %gridclue_core::config::redacted(&config), "sink starting");
    let lag = gridclue_core::lag::spawn_monitor(
        &config.kafka(),
        &config.group_id,
        vec![config.events_topic.clone()],
        metrics.lag.clone(),
        std::time::Duration::from_millis(config.metrics_interval_ms),
    )?;
    let result = project(config, metrics, cancel, ready).await;
    lag.abort();
    http_stop.cancel();
    match http.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "HTTP server failed"),
        Err(e) => tracing::warn!(error = %e, "HTTP task failed"),
    }
    tracing::info!("sink stopped");
    result
}

async fn project(
    config: SinkConfig,
    metrics: SinkMetrics,
    cancel: CancellationToken,
    ready: Readiness,
) -> anyhow::Result<()> {
    let Some(client) = connect_retrying(&config.ch_settings()?, &cancel).await? else {
        return Ok(());
    };
    if !migrate_retrying(&client, &cancel).await? {
        return Ok(());
    }
    let config = Arc::new(config);
    let alerts = tokio::spawn(alerts::project(
        config.clone(),
        client.clone(),
        metrics.clone(),
        cancel.clone(),
    ));
    let mut pipeline = pipeline::Pipeline::new(
        config,
        client,
        metrics,
        cancel.clone(),
        pipeline::Mode::Live,
        ready.clone(),
    )?;
    pipeline.start(&Default::default())?;
    ready.set_started(true);
    let result = pipeline.run().await;
    ready.set_started(false);
    // The alerts loop stops on the same signal; a pipeline that failed stops it too.
    cancel.cancel();
    let alerts = alerts.await.map_err(anyhow::Error::from).and_then(|r| r);
    result.and(alerts)
}

#[cfg(test)]
mod config_check {
    #[test]
    fn every_field_is_a_known_variable() {
        let unlisted = gridclue_core::config::unlisted_fields::<super::SinkConfig>();
        assert_eq!(unlisted, Vec::<String>::new());
    }
}

#[cfg(test)]
mod send_check {
    fn assert_send<T: Send>(_: &T) {}

    #[allow(dead_code)]
    fn run_future_is_send(listener: tokio::net::TcpListener) {
        let f = super::run(listener, super::SinkConfig::default(), async {});
        assert_send(&f);
    }
}
