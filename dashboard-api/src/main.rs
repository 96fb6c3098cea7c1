//! `gridclue-dashboard-api`: serves the dashboard API (config from `GRIDCLUE_*`).

use gridclue_dashboard_api::DashboardConfig;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    gridclue_core::telemetry::init_tracing("dashboard-api");
    let config: DashboardConfig = gridclue_core::config::load()?;
    let listener = tokio::net::TcpListener::bind(&config.listen).await?;
    gridclue_dashboard_api::run(listener, config, shutdown_signal()).await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested");
}
