//! The dashboard API's Prometheus metrics (names from `gridclue_core::telemetry::names`).

use gridclue_core::service::{RequestMetricNames, RequestMetrics};
use gridclue_core::telemetry::{names, LATENCY_BUCKETS};
use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntGauge, IntGaugeVec, Opts, Registry};

#[derive(Clone)]
pub struct DashboardMetrics {
    pub registry: Registry,
    /// Requests by route template and status code, latency, in flight.
    pub http: RequestMetrics,
    /// ClickHouse query duration by query name.
    pub query_duration: HistogramVec,
    /// ClickHouse queries of the live numbers' loop (probes and recomputations): one loop for
    /// every `/v1/stream` subscriber.
    pub stream_queries: IntCounter,
    /// Polls of that loop.
    pub stream_polls: IntCounter,
    /// Open `/v1/stream` connections.
    pub stream_subscribers: IntGauge,
    /// Open cases by street (set by the live numbers' loop: [`crate::case_gauges`]).
    pub open_cases: IntGaugeVec,
    /// Open cases past their deadline by street.
    pub overdue_cases: IntGaugeVec,
    /// Polls of the live numbers' loop that failed, leaving the case gauges as they were.
    pub case_gauge_errors: IntCounter,
}

impl DashboardMetrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        gridclue_core::telemetry::register_common(&registry);
        let street_gauge = |name: &str, help: &str| {
            let g = IntGaugeVec::new(Opts::new(name, help), &["street"]).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("metric registered once");
            g
        };
        let open_cases = street_gauge(
            names::DASHBOARD_OPEN_CASES,
            "Open cases (in the loop, not closed) by street",
        );
        let overdue_cases = street_gauge(
            names::DASHBOARD_OVERDUE_CASES,
            "Open cases past their deadline by street",
        );
        let case_gauge_errors = IntCounter::new(
            names::DASHBOARD_CASE_GAUGE_ERRORS_TOTAL,
            "Failed refreshes of the case gauges",
        )
        .expect("valid metric");
        registry
            .register(Box::new(case_gauge_errors.clone()))
            .expect("metric registered once");
        let http = RequestMetrics::register(
            &registry,
            RequestMetricNames {
                requests_total: names::DASHBOARD_REQUESTS_TOTAL,
                duration_seconds: names::DASHBOARD_REQUEST_DURATION_SECONDS,
                in_flight: names::DASHBOARD_IN_FLIGHT_REQUESTS,
            },
        );
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
        let stream_queries = IntCounter::new(
            names::DASHBOARD_STREAM_QUERIES_TOTAL,
            "ClickHouse queries of the live numbers loop (shared by every stream)",
        )
        .expect("valid metric");
        let stream_polls = IntCounter::new(
            names::DASHBOARD_STREAM_POLLS_TOTAL,
            "Polls of the live numbers loop",
        )
        .expect("valid metric");
        let stream_subscribers = IntGauge::new(
            names::DASHBOARD_STREAM_SUBSCRIBERS,
            "Open /v1/stream connections",
        )
        .expect("valid metric");
        for m in [
            Box::new(stream_queries.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(stream_polls.clone()),
            Box::new(stream_subscribers.clone()),
        ] {
            registry.register(m).expect("metric registered once");
        }
        Self {
            registry,
            http,
            query_duration,
            stream_queries,
            stream_polls,
            stream_subscribers,
            open_cases,
            overdue_cases,
            case_gauge_errors,
        }
    }
}

impl Default for DashboardMetrics {
    fn default() -> Self {
        Self::new()
    }
}
