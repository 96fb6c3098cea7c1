//! The dashboard API's Prometheus metrics (names from `gridclue_core::telemetry::names`).

use gridclue_core::telemetry::{names, LATENCY_BUCKETS};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

#[derive(Clone)]
pub struct DashboardMetrics {
    pub registry: Registry,
    /// Requests by route template and status code.
    pub requests: IntCounterVec,
    /// ClickHouse query duration by query name.
    pub query_duration: HistogramVec,
}

impl DashboardMetrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                names::DASHBOARD_REQUESTS_TOTAL,
                "HTTP requests by route and status",
            ),
            &["route", "status"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(requests.clone()))
            .expect("metric registered once");
        let query_duration = HistogramVec::new(
            HistogramOpts::new(
                names::DASHBOARD_QUERY_DURATION_SECONDS,
                "ClickHouse query duration by query",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["query"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(query_duration.clone()))
            .expect("metric registered once");
        Self {
            registry,
            requests,
            query_duration,
        }
    }
}

impl Default for DashboardMetrics {
    fn default() -> Self {
        Self::new()
    }
}
