//! gridclue-enrich: the clue processor. Places each report on the district map, routes it to
//! its department, and applies lifecycle commands through the status machine, one writer per
//! clue (partition ownership).
//!
//! Modules:
//! - [`geoindex`] — exact grid assignment (pure, synchronous).
//! - [`processor`] — command + state → next state + outputs (pure, synchronous).
//! - [`dedupe`] — the district-wide dedupe rule, a fold over a street-keyed log (pure).
//! - [`runner`] — the Kafka loop of the processor (consume, decide, produce, commit after acks).
//! - [`dedupe_runner`] — the Kafka loop of the dedupe stage (rebuild, fold, send verdicts).
//! - [`hotspots`] — the emerging-hotspot detector service (`gridclue-hotspots`): sequencer
//!   and detector loops around `gridclue_core::hotspot`.
//! - `kafka_loop` — what both loops share: batches, revocations, produce-and-await, reading a
//!   partition from its start, holding partitions whose log was reset.
//! - [`log_reset`] — finding reset Kafka logs before anything is skipped, and rebasing them
//!   (`gridclue-enrich rebase`).
//! - [`metrics`] — Prometheus metrics.
//! - [`config`] — configuration.
//! - [`binary`] — the start-up both binaries share (command line, logging, configuration).

pub mod binary;
pub mod config;
pub mod dedupe;
pub mod dedupe_runner;
pub mod geoindex;
pub mod hotspots;
mod kafka_loop;
pub mod log_reset;
pub mod metrics;
pub mod processor;
pub mod runner;

use std::future::Future;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Context;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use gridclue_core::category::Catalog;
use gridclue_core::service::Readiness;
use tokio::net::TcpListener;
use tokio::sync::{watch, Mutex};

pub use config::EnrichConfig;

/// Loads the district map named by the config and builds its index.
pub fn load_map(config: &EnrichConfig) -> anyhow::Result<geoindex::GeoIndex> {
    let map_path = Path::new(&config.data_dir).join("district/grids.geojson");
    let district = gridclue_district::load_geojson(&map_path)
        .with_context(|| format!("loading {}", map_path.display()))?;
    Ok(geoindex::GeoIndex::build(&district)?)
}

/// Loads the map, the catalog and the calendar named by the config.
pub fn build_processor(config: &EnrichConfig) -> anyhow::Result<processor::Processor> {
    let data = Path::new(&config.data_dir);
    let index = load_map(config)?;
    let catalog = Catalog::load(&data.join("categories.json"))?;
    let calendar = gridclue_core::calendar::Calendar::load(&data.join("calendar.json"))?;
    Ok(processor::Processor {
        index: Arc::new(index),
        catalog,
        calendar,
        dedupe: dedupe::DedupeConfig {
            radius_m: config.dedupe_radius_m,
            window_ms: config.dedupe_window_ms,
        },
    })
}

/// Reloads the district map without a restart: builds the new index off the async threads and
/// publishes it; the processor switches between two batches. Every enriched fact carries the
/// version of the map that placed it.
#[derive(Clone)]
pub struct MapReloader {
    config: EnrichConfig,
    maps: Arc<watch::Sender<Arc<geoindex::GeoIndex>>>,
    metrics: metrics::EnrichMetrics,
    busy: Arc<Mutex<()>>,
}

impl MapReloader {
    /// Loads the map again; returns the version now in use.
    pub async fn reload(&self) -> anyhow::Result<String> {
        let _one_at_a_time = self.busy.lock().await;
        let config = self.config.clone();
        let index = tokio::task::spawn_blocking(move || load_map(&config)).await??;
        let version = index.map_version().to_owned();
        tracing::info!(map_version = %version, grids = index.grid_count(), "district map reloaded");
        self.metrics.set_map_version(&version);
        self.maps.send_replace(Arc::new(index));
        Ok(version)
    }
}

#[derive(Clone)]
struct Probe {
    reloader: MapReloader,
}

/// The shared probe routes plus `POST /admin/reload-map`.
fn probe_app(ready: Readiness, metrics: &metrics::EnrichMetrics, probe: Probe) -> Router {
    let admin = Router::new()
        .route(
            "/admin/reload-map",
            post(|State(p): State<Probe>, headers: HeaderMap| async move {
                let tokens_file = Path::new(&p.reloader.config.tokens_file);
                if let Err(refused) = gridclue_core::service::require_admin(
                    tokens_file,
                    headers.get(header::AUTHORIZATION),
                ) {
                    return refused.into_response();
                }
                match p.reloader.reload().await {
                    Ok(version) => (
                        StatusCode::OK,
                        Json(serde_json::json!({ "map_version": version })),
                    )
                        .into_response(),
                    Err(e) => {
                        tracing::error!(error = %format!("{e:#}"), "map reload failed");
                        (
                            StatusCode::UNPROCESSABLE_ENTITY,
                            [(header::CONTENT_TYPE, "application/problem+json")],
                            Json(serde_json::json!({
                                "type": "map_reload_failed",
                                "title": "The district map could not be reloaded; the previous map stays in use",
                                "detail": format!("{e:#}"),
                            })),
                        )
                            .into_response()
                    }
                }
            }),
        )
        .with_state(probe);
    gridclue_core::service::probe_routes(ready, metrics.registry.clone()).merge(admin)
}

impl binary::Binary for EnrichConfig {
    const NAME: &'static str = "gridclue-enrich";
    const ABOUT: &'static str = "Places, routes and follows clues: the processor of clues.commands";
    const REBASE_ABOUT: &'static str = "Give partitions whose Kafka log was reset a position in \
        the new log (enrich refuses them until then): clues.commands or clues.state (the \
        processor's partition: both logs together), or clues.dedupe (the dedupe stage's \
        partition). Stop every gridclue-enrich first (this joins their consumer group), start \
        them again afterwards";

    fn listen(&self) -> std::net::SocketAddr {
        self.listen
    }

    async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        run(listener, self, shutdown).await
    }

    async fn rebase(
        &self,
        args: &log_reset::RebaseArgs,
    ) -> anyhow::Result<Vec<log_reset::RebaseOutcome>> {
        log_reset::rebase(self, &args.topic, args.partitions(), args.force).await
    }
}

/// Runs the processor until `shutdown` resolves or the loop fails.
pub async fn run(
    listener: TcpListener,
    config: EnrichConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let processor = build_processor(&config)?;
    let metrics = metrics::EnrichMetrics::new();
    metrics.set_map_version(processor.index.map_version());
    tracing::info!(
        grids = processor.index.grid_count(),
        map_version = processor.index.map_version(),
        index = ?processor.index.stats(),
        "district map loaded"
    );
    let now = gridclue_core::wire::now_ms();
    if !processor.calendar.covers(now) || !processor.calendar.covers(now + 60 * 86_400_000) {
        tracing::warn!(
            "data/calendar.json does not list this year or the next 60 days: deadlines there \
             skip weekends only, not public holidays; add the official dates"
        );
    }
    let (maps_tx, maps_rx) = watch::channel(processor.index.clone());
    let reloader = MapReloader {
        config: config.clone(),
        maps: Arc::new(maps_tx),
        metrics: metrics.clone(),
        busy: Arc::new(Mutex::new(())),
    };
    let reload_on_sighup = config.reload_on_sighup;
    let (lag_kafka, lag_interval_ms, lag_metrics) =
        (config.kafka(), config.metrics_interval_ms, metrics.clone());
    let (lag_group, lag_commands_topic) = (config.group_id.clone(), config.commands_topic.clone());
    let (lag_dedupe_group, lag_dedupe_topic) =
        (config.dedupe_group_id.clone(), config.dedupe_topic.clone());
    let ready = Readiness::default();
    let dedupe =
        dedupe_runner::DedupeRunner::new(config.clone(), processor.dedupe, metrics.clone())
            .with_readiness(ready.clone());
    let runner = runner::Runner::new(config, processor, metrics.clone())
        .with_map_updates(maps_rx)
        .with_readiness(ready.clone());
    let both_ready = {
        let (ready, a, b) = (ready.clone(), runner.ready.clone(), dedupe.ready.clone());
        tokio::spawn(async move {
            while !(a.load(Ordering::SeqCst) && b.load(Ordering::SeqCst)) {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            ready.set_started(true);
        })
    };
    let probe = Probe {
        reloader: reloader.clone(),
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let http_stop = stop_rx.clone();
    let http = tokio::spawn(async move {
        let mut rx = http_stop;
        axum::serve(listener, probe_app(ready, &metrics, probe))
            .with_graceful_shutdown(async move {
                rx.changed().await.ok();
            })
            .await
    });
    let hup = if reload_on_sighup {
        let mut signals = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("installing the SIGHUP handler")?;
        Some(tokio::spawn(async move {
            while signals.recv().await.is_some() {
                if let Err(e) = reloader.reload().await {
                    tracing::error!(error = %format!("{e:#}"), "map reload on SIGHUP failed");
                }
            }
        }))
    } else {
        None
    };
    tokio::spawn(async move {
        shutdown.await;
        stop_tx.send(true).ok();
    });
    // Both loops stop on shutdown; the first to fail ends `run`, and dropping the set stops the
    // other.
    let lag_interval = std::time::Duration::from_millis(lag_interval_ms);
    let monitors = [
        (lag_group, lag_commands_topic),
        (lag_dedupe_group, lag_dedupe_topic),
    ]
    .into_iter()
    .map(|(group, topic)| {
        gridclue_core::lag::spawn_monitor(
            &lag_kafka,
            &group,
            vec![topic],
            lag_metrics.lag.clone(),
            lag_interval,
        )
    })
    .collect::<Result<Vec<_>, _>>()
    .context("creating the consumer lag probes")?;
    let mut loops = tokio::task::JoinSet::new();
    loops.spawn(runner.run(stop_rx.clone()));
    loops.spawn(dedupe.run(stop_rx));
    let result = async {
        while let Some(joined) = loops.join_next().await {
            joined.context("an enrich loop panicked")??;
        }
        anyhow::Ok(())
    }
    .await;
    both_ready.abort();
    for m in monitors {
        m.abort();
    }
    http.abort();
    if let Some(h) = hup {
        h.abort();
    }
    result
}
