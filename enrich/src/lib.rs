//! gridclue-enrich: the clue processor. Places each report on the district map, routes it to
//! its department, and applies lifecycle commands through the status machine, one writer per
//! clue (partition ownership).
//!
//! Modules:
//! - [`geoindex`]: exact grid assignment (pure, synchronous).
//! - [`processor`]: command + state → next state + one output (pure, synchronous).
//! - [`runner`]: the Kafka loop (consume, decide, produce, commit after acks).
//! - [`metrics`]: Prometheus metrics.
//! - [`config`]: configuration.

pub mod config;
pub mod geoindex;
pub mod metrics;
pub mod processor;
pub mod runner;

use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use gridclue_core::category::Catalog;
use tokio::net::TcpListener;

pub use config::EnrichConfig;

/// Loads the map and the catalog named by the config.
pub fn build_processor(config: &EnrichConfig) -> anyhow::Result<processor::Processor> {
    let data = Path::new(&config.data_dir);
    let map_path = data.join("district/grids.geojson");
    let district = gridclue_district::load_geojson(&map_path)
        .with_context(|| format!("loading {}", map_path.display()))?;
    let index = geoindex::GeoIndex::build(&district)?;
    let catalog = Catalog::load(&data.join("categories.json"))?;
    Ok(processor::Processor { index, catalog })
}

#[derive(Clone)]
struct Probe {
    ready: Arc<AtomicBool>,
    metrics: metrics::EnrichMetrics,
}

fn probe_app(probe: Probe) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(p): State<Probe>| async move {
                if p.ready.load(Ordering::SeqCst) {
                    (StatusCode::OK, "ready")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "starting")
                }
            }),
        )
        .route(
            "/metrics",
            get(|State(p): State<Probe>| async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        gridclue_core::telemetry::METRICS_CONTENT_TYPE,
                    )],
                    gridclue_core::telemetry::render(&p.metrics.registry),
                )
                    .into_response()
            }),
        )
        .with_state(probe)
}

/// Runs the processor until `shutdown` resolves or the loop fails.
pub async fn run(
    listener: TcpListener,
    config: EnrichConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let processor = build_processor(&config)?;
    let metrics = metrics::EnrichMetrics::new();
    metrics
        .map_info
        .with_label_values(&[processor.index.map_version()])
        .set(1);
    tracing::info!(
        grids = processor.index.grid_count(),
        map_version = processor.index.map_version(),
        "district map loaded"
    );
    let runner = runner::Runner::new(config, processor, metrics.clone());
    let probe = Probe {
        ready: runner.ready.clone(),
        metrics,
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let http_stop = stop_rx.clone();
    let http = tokio::spawn(async move {
        let mut rx = http_stop;
        axum::serve(listener, probe_app(probe))
            .with_graceful_shutdown(async move {
                rx.changed().await.ok();
            })
            .await
    });
    tokio::spawn(async move {
        shutdown.await;
        stop_tx.send(true).ok();
    });
    let result = runner.run(stop_rx).await;
    http.abort();
    result
}
