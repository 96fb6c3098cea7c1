//! gridclue-ingest: the HTTP command gateway riders and other systems submit clues to.
//!
//! Modules:
//! - [`api`]: the axum router (`app`) and its handlers.
//! - [`validate`]: parsing a client's clue into a typed report, with specific error codes.
//! - [`bounds`]: the district's bounding box for edge validation.
//! - [`producer`]: sends commands to Kafka and waits for acks=all.
//! - [`error`]: `ApiError`, rendered as problem+json.
//! - [`metrics`]: Prometheus metrics.
//! - [`config`]: configuration.

pub mod api;
pub mod bounds;
pub mod config;
pub mod error;
pub mod metrics;
pub mod producer;
pub mod validate;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use gridclue_core::category::Catalog;
use gridclue_core::secrets::SecretKey;
use gridclue_core::tokens::TokenStore;
use tokio::net::TcpListener;

pub use config::IngestConfig;

/// Builds the service's state from its configuration.
pub fn build_state(config: &IngestConfig) -> anyhow::Result<api::AppState> {
    let data = Path::new(&config.data_dir);
    let catalog = Catalog::load(&data.join("categories.json"))?;
    let bounds = bounds::BoundingBox::from_geojson(&data.join("district/grids.geojson"))?
        .expanded(config.bbox_margin_deg);
    let tokens = TokenStore::open(&config.tokens_file)?;
    let secret = SecretKey::load(Path::new(&config.secret_file))
        .context("loading the key for hashing phone numbers")?;
    let producer = producer::CommandProducer::new(
        &config.kafka_brokers,
        &config.commands_topic,
        Duration::from_millis(config.produce_timeout_ms),
    )?;
    Ok(api::AppState {
        catalog: Arc::new(catalog),
        tokens,
        secret,
        bounds,
        producer,
        metrics: metrics::IngestMetrics::new(),
        max_clock_skew: Duration::from_secs(config.max_clock_skew_secs),
        retry_after: Duration::from_secs(2),
    })
}

/// Serves until `shutdown` resolves, then drains in-flight requests and flushes the producer.
pub async fn run(
    listener: TcpListener,
    config: IngestConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let state = build_state(&config)?;
    let producer = state.producer.clone();
    tracing::info!(addr = %listener.local_addr()?, "ingest listening");
    axum::serve(listener, api::app(state))
        .with_graceful_shutdown(shutdown)
        .await?;
    tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(10))).await?;
    tracing::info!("ingest stopped");
    Ok(())
}
