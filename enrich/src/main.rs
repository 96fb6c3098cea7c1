use anyhow::Context;
use gridclue_enrich::EnrichConfig;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    gridclue_core::telemetry::init_tracing("enrich");
    let config: EnrichConfig = gridclue_core::config::load()?;
    tracing::info!(config = %gridclue_core::config::redacted(&config), "starting");
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    gridclue_enrich::run(listener, config, gridclue_core::service::shutdown_signal()).await
}
