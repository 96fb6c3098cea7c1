//! gridclue-ingest: the HTTP command gateway riders and other systems submit clues to.
//!
//! Modules:
//! - [`admin`]: token administration over HTTP (district; street offices for their riders) with
//!   an audit log, and the file store the CLI shares.
//! - [`api`]: the axum router (`app`), the single-clue handler and the intake steps shared by
//!   every write endpoint.
//! - [`batch`]: `POST /v1/clues:batch` (a phone's offline queue).
//! - [`import`]: `POST /v1/import/clues` — a district's back-dated history, exactly once.
//! - [`open311`]: Open311 GeoReport v2 (JSON and XML).
//! - [`reads`]: the reporter's view and Open311 reads from ClickHouse.
//! - [`page`]: the embedded mobile reporting page and the grid map it draws.
//! - [`photos`]: `POST /v1/photos` and `GET /v1/photos/{id}` — content-addressed photos with
//!   their metadata stripped, in an object store.
//! - [`my`]: the page's "my reports" tab, forwarded to dashboard-api.
//! - [`ratelimit`]: token buckets per token and per client address; client address resolution.
//! - [`recent`]: recently acknowledged clue ids (retries, batch duplicates).
//! - [`transitions`]: `POST /v1/clues/{id}/transitions` (the closed loop's actions) and the poll
//!   of their verdicts.
//! - [`outcomes`]: the clue processor's verdicts, read from `clues.outcomes`.
//! - [`validate`]: parsing a client's clue into a typed report, with specific error codes.
//! - [`bounds`]: the district's bounding box for edge validation.
//! - [`producer`]: sends commands to Kafka and waits for acks=all.
//! - [`error`]: `ApiError`, rendered as problem+json.
//! - [`metrics`]: Prometheus metrics.
//! - [`config`]: the configuration (defaults, file, environment).

pub mod admin;
pub mod api;
pub mod batch;
pub mod bounds;
pub mod config;
pub mod error;
pub mod import;
pub mod metrics;
pub mod my;
pub mod open311;
pub mod outcomes;
pub mod page;
pub mod photos;
pub mod producer;
pub mod ratelimit;
pub mod reads;
pub mod recent;
pub mod transitions;
pub mod validate;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use gridclue_core::category::Catalog;
use gridclue_core::secrets::SecretKey;
use gridclue_core::tokens::TokenStore;
use tokio::net::TcpListener;

pub use config::IngestConfig;

/// Most keys (tokens, addresses) each rate limiter holds.
const RATE_LIMIT_MAX_KEYS: usize = 100_000;

/// Builds the service's state from its configuration.
pub fn build_state(config: &IngestConfig) -> anyhow::Result<api::AppState> {
    let data = Path::new(&config.data_dir);
    let catalog = Catalog::load(&data.join("categories.json"))?;
    let map = data.join("district/grids.geojson");
    let district = gridclue_district::load_geojson(&map)
        .with_context(|| format!("loading the district map {}", map.display()))?;
    let area = bounds::BoundingBox::of(&district).context("the district map has no grids")?;
    let grid_addresses = bounds::grid_addresses(&district);
    let map_file = page::MapFile::load(&map)?;
    let photos = if config.photos_url.trim().is_empty() {
        None
    } else {
        Some(Arc::new(photos::PhotoStore::from_config(config)?))
    };
    let dashboard = if config.dashboard_url.trim().is_empty() {
        None
    } else {
        Some(my::DashboardProxy::new(
            &config.dashboard_url,
            Duration::from_millis(config.read_timeout_ms),
        )?)
    };
    let bounds = area.expanded(config.bbox_margin_deg);
    let tokens = TokenStore::open(&config.tokens_file)?;
    let secret = SecretKey::load(Path::new(&config.secret_file))
        .context("loading the key for hashing phone numbers")?;
    let producer = producer::CommandProducer::with_linger(
        &config.kafka(),
        &config.commands_topic,
        Duration::from_millis(config.produce_timeout_ms),
        Some(config.producer_linger_ms),
    )?;
    let limits = api::Limits {
        per_token: ratelimit::RateLimiter::new(
            config.rate_limit_token_per_sec,
            config.rate_limit_token_burst,
            RATE_LIMIT_MAX_KEYS,
        ),
        per_ip: ratelimit::RateLimiter::new(
            config.rate_limit_ip_per_sec,
            config.rate_limit_ip_burst,
            RATE_LIMIT_MAX_KEYS,
        ),
        client_ip: ratelimit::ClientIpResolver::new(&config.trusted_proxies)
            .map_err(|e| anyhow::anyhow!("trusted_proxies: {e}"))?,
    };
    let metrics = metrics::IngestMetrics::new();
    let reads = config.ch_settings()?.map(|settings| {
        Arc::new(reads::ReadStore::new(
            settings,
            Duration::from_millis(config.read_timeout_ms),
            metrics.clone(),
        ))
    });
    if reads.is_some() {
        gridclue_core::ch::validate_database_name(&config.clickhouse_database)?;
    }
    Ok(api::AppState::new(api::AppInner {
        catalog: Arc::new(catalog),
        tokens: tokens.with_check_interval(Duration::from_secs(1)),
        token_admin: admin::TokenAdmin::new(&config.tokens_file),
        secret,
        bounds,
        area,
        grid_addresses,
        producer,
        metrics,
        max_clock_skew: Duration::from_secs(config.max_clock_skew_secs),
        retry_after: Duration::from_secs(config.retry_after_secs.max(1)),
        limits: Arc::new(limits),
        recent: Arc::new(recent::RecentIds::new(config.recent_ids_capacity)),
        reads,
        open311_reads_require_key: config.open311_reads_require_key,
        outcomes: Arc::new(outcomes::Outcomes::new(config.outcomes_capacity)),
        transition_wait: Duration::from_millis(config.transition_wait_ms),
        photos,
        dashboard,
        map: map_file,
    }))
}

/// Serves until `shutdown` resolves, then drains in-flight requests and flushes the producer.
pub async fn run(
    listener: TcpListener,
    config: IngestConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let state = build_state(&config)?;
    let producer = state.producer.clone();
    let verdicts = tokio::spawn(outcomes::consume(
        state.outcomes.clone(),
        config.kafka(),
        config.outcomes_topic.clone(),
    ));
    tracing::info!(addr = %listener.local_addr()?, "ingest listening");
    let served = axum::serve(
        listener,
        api::app(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await;
    verdicts.abort();
    served?;
    tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(10))).await?;
    tracing::info!("ingest stopped");
    Ok(())
}
