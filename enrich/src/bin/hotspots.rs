//! `gridclue-hotspots`: the emerging-hotspot detector (sequencer + detector loops).

use anyhow::Context;
use gridclue_enrich::hotspots::HotspotConfig;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    gridclue_core::telemetry::init_tracing("hotspots");
    let config: HotspotConfig = gridclue_core::config::load()?;
    tracing::info!(config = %gridclue_core::config::redacted(&config), "starting");
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    gridclue_enrich::hotspots::run(listener, config, gridclue_core::service::shutdown_signal())
        .await
}
