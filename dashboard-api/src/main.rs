//! `gridclue-dashboard-api`: serves the dashboard API (config from `GRIDCLUE_*`).

use gridclue_dashboard_api::DashboardConfig;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    gridclue_core::telemetry::init_tracing("dashboard-api");
    gridclue_core::stamp_build_commit!();
    let config: DashboardConfig = gridclue_core::config::load()?;
    let listener = tokio::net::TcpListener::bind(&config.listen).await?;
    gridclue_dashboard_api::run(listener, config, gridclue_core::service::shutdown_signal()).await
}
