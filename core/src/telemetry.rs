//! Tracing set-up, warnings limited per key, and the name of every Prometheus metric gridclue
//! exports.
//!
//! Names follow `gridclue_<component>_<what>_<unit>[_total]`; label values are bounded (routes,
//! status codes, reason codes — never clue ids or raw error text).

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use prometheus::{Encoder, Registry, TextEncoder};
use tracing_subscriber::EnvFilter;

pub mod names {
    /// `gridclue_build_info{version,commit} 1` in every service.
    pub const BUILD_INFO: &str = "gridclue_build_info";
    // ingest
    pub const INGEST_REQUESTS_TOTAL: &str = "gridclue_ingest_requests_total";
    pub const INGEST_REQUEST_DURATION_SECONDS: &str = "gridclue_ingest_request_duration_seconds";
    pub const INGEST_PRODUCE_DURATION_SECONDS: &str = "gridclue_ingest_produce_duration_seconds";
    pub const INGEST_REJECTED_TOTAL: &str = "gridclue_ingest_rejected_total";
    pub const INGEST_IN_FLIGHT_REQUESTS: &str = "gridclue_ingest_in_flight_requests";
    pub const INGEST_BATCH_ITEMS_TOTAL: &str = "gridclue_ingest_batch_items_total";
    pub const INGEST_READ_DURATION_SECONDS: &str = "gridclue_ingest_read_duration_seconds";
    pub const INGEST_TRANSITIONS_TOTAL: &str = "gridclue_ingest_transitions_total";
    pub const INGEST_PHOTOS_TOTAL: &str = "gridclue_ingest_photos_total";
    // enrich
    pub const ENRICH_COMMANDS_TOTAL: &str = "gridclue_enrich_commands_total";
    pub const ENRICH_EVENTS_TOTAL: &str = "gridclue_enrich_events_total";
    pub const ENRICH_ASSIGNMENTS_TOTAL: &str = "gridclue_enrich_assignments_total";
    pub const ENRICH_DUPLICATES_TOTAL: &str = "gridclue_enrich_duplicates_total";
    pub const ENRICH_REJECTIONS_TOTAL: &str = "gridclue_enrich_rejections_total";
    pub const ENRICH_DLQ_TOTAL: &str = "gridclue_enrich_dlq_total";
    pub const ENRICH_PROCESSING_DURATION_SECONDS: &str =
        "gridclue_enrich_processing_duration_seconds";
    pub const ENRICH_MAP_INFO: &str = "gridclue_enrich_map_info";
    pub const ENRICH_DEDUPE_VERDICTS_TOTAL: &str = "gridclue_enrich_dedupe_verdicts_total";
    pub const ENRICH_DEDUPE_OPEN_CASES: &str = "gridclue_enrich_dedupe_open_cases";
    pub const ENRICH_PENDING_CLUES: &str = "gridclue_enrich_pending_clues";
    pub const ENRICH_TRANSITION_OUTCOMES_TOTAL: &str = "gridclue_enrich_transition_outcomes_total";
    pub const ENRICH_OVERDUE_TOTAL: &str = "gridclue_enrich_overdue_total";
    pub const ENRICH_LOG_RESET_DETECTED: &str = "gridclue_enrich_log_reset_detected";
    // hotspots (the detector service)
    pub const HOTSPOT_ALERTS_TOTAL: &str = "gridclue_hotspot_alerts_total";
    pub const HOTSPOT_ALERT_VERSIONS_TOTAL: &str = "gridclue_hotspot_alert_versions_total";
    pub const HOTSPOT_CASES_TOTAL: &str = "gridclue_hotspot_cases_total";
    pub const HOTSPOT_OPEN_ALERTS: &str = "gridclue_hotspot_open_alerts";
    pub const HOTSPOT_DLQ_TOTAL: &str = "gridclue_hotspot_dlq_total";
    pub const HOTSPOT_LOG_RESET_DETECTED: &str = "gridclue_hotspot_log_reset_detected";
    pub const ENRICH_CONSUMER_LAG_MESSAGES: &str = "gridclue_enrich_consumer_lag_messages";
    pub const ENRICH_CONSUMER_LAG_SECONDS: &str = "gridclue_enrich_consumer_lag_seconds";
    // sink
    pub const SINK_ROWS_INSERTED_TOTAL: &str = "gridclue_sink_rows_inserted_total";
    pub const SINK_BATCHES_INSERTED_TOTAL: &str = "gridclue_sink_batches_inserted_total";
    pub const SINK_BATCH_ROWS: &str = "gridclue_sink_batch_rows";
    pub const SINK_INSERT_DURATION_SECONDS: &str = "gridclue_sink_insert_duration_seconds";
    pub const SINK_RETRIES_TOTAL: &str = "gridclue_sink_retries_total";
    pub const SINK_ERRORS_TOTAL: &str = "gridclue_sink_errors_total";
    pub const SINK_FRESHNESS_SECONDS: &str = "gridclue_sink_freshness_seconds";
    pub const SINK_PAUSED: &str = "gridclue_sink_paused";
    pub const SINK_FETCH_PAUSED: &str = "gridclue_sink_fetch_paused";
    pub const SINK_DLQ_TOTAL: &str = "gridclue_sink_dlq_total";
    pub const SINK_SKIPPED_TOTAL: &str = "gridclue_sink_skipped_total";
    pub const SINK_LOG_RESET_DETECTED: &str = "gridclue_sink_log_reset_detected";
    pub const SINK_LOG_TRUNCATIONS_TOTAL: &str = "gridclue_sink_log_truncations_total";
    pub const SINK_VIEW_REPAIRS_TOTAL: &str = "gridclue_sink_view_repairs_total";
    pub const SINK_CONSUMER_LAG_MESSAGES: &str = "gridclue_sink_consumer_lag_messages";
    pub const SINK_CONSUMER_LAG_SECONDS: &str = "gridclue_sink_consumer_lag_seconds";
    /// A fact's command acknowledged by Kafka at ingest → the fact's insert acknowledged by
    /// ClickHouse (visible to the dashboards).
    pub const SINK_END_TO_END_FRESHNESS_SECONDS: &str =
        "gridclue_sink_end_to_end_freshness_seconds";
    // dashboard-api
    pub const DASHBOARD_REQUESTS_TOTAL: &str = "gridclue_dashboard_requests_total";
    pub const DASHBOARD_REQUEST_DURATION_SECONDS: &str =
        "gridclue_dashboard_request_duration_seconds";
    pub const DASHBOARD_IN_FLIGHT_REQUESTS: &str = "gridclue_dashboard_in_flight_requests";
    pub const DASHBOARD_QUERY_DURATION_SECONDS: &str = "gridclue_dashboard_query_duration_seconds";
    pub const DASHBOARD_STREAM_QUERIES_TOTAL: &str = "gridclue_dashboard_stream_queries_total";
    pub const DASHBOARD_STREAM_POLLS_TOTAL: &str = "gridclue_dashboard_stream_polls_total";
    pub const DASHBOARD_STREAM_SUBSCRIBERS: &str = "gridclue_dashboard_stream_subscribers";
    /// Open cases (accepted into the loop, not closed) by street, refreshed periodically.
    pub const DASHBOARD_OPEN_CASES: &str = "gridclue_dashboard_open_cases";
    /// Open cases past their deadline by street, refreshed periodically.
    pub const DASHBOARD_OVERDUE_CASES: &str = "gridclue_dashboard_overdue_cases";
    /// Failed refreshes of the case gauges.
    pub const DASHBOARD_CASE_GAUGE_ERRORS_TOTAL: &str =
        "gridclue_dashboard_case_gauge_errors_total";
}

/// The version every binary was built from.
pub const BUILD_VERSION: &str = env!("CARGO_PKG_VERSION");

static BUILD_COMMIT: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

/// Records the git commit the running binary was built from, for `gridclue_build_info`; call it
/// from `main` (through [`stamp_build_commit!`](crate::stamp_build_commit)) before the metrics
/// are registered. Only the first call counts.
pub fn set_build_commit(commit: &'static str) {
    let _ = BUILD_COMMIT.set(commit);
}

/// The commit recorded by [`set_build_commit`], or "unknown" (a library run in-process by a
/// test, a build without `GRIDCLUE_GIT_COMMIT`).
pub fn build_commit() -> &'static str {
    BUILD_COMMIT.get().copied().unwrap_or("unknown")
}

/// Records `GRIDCLUE_GIT_COMMIT` as set when the calling binary was compiled (`make` and the
/// image build set it). Read in the binary, not in a library: a new commit recompiles only the
/// binaries, not the workspace.
#[macro_export]
macro_rules! stamp_build_commit {
    () => {
        $crate::telemetry::set_build_commit(match option_env!("GRIDCLUE_GIT_COMMIT") {
            Some(commit) if !commit.is_empty() => commit,
            _ => "unknown",
        })
    };
}

/// Registers what every service exports besides its own metrics: `gridclue_build_info` and, on
/// Linux, the process collector (`process_resident_memory_bytes`, `process_cpu_seconds_total`,
/// `process_open_fds`, …).
pub fn register_common(registry: &Registry) {
    let build = prometheus::IntGaugeVec::new(
        prometheus::Opts::new(
            names::BUILD_INFO,
            "The version and commit this binary was built from (value 1)",
        ),
        &["version", "commit"],
    )
    .expect("valid metric");
    build
        .with_label_values(&[BUILD_VERSION, build_commit()])
        .set(1);
    registry
        .register(Box::new(build))
        .expect("metric registered once");
    #[cfg(target_os = "linux")]
    registry
        .register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .expect("metric registered once");
}

/// Latency buckets (seconds) from 0.5 ms to 10 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Installs the global tracing subscriber: JSON lines when `GRIDCLUE_LOG_FORMAT=json`, compact
/// text otherwise; level from `RUST_LOG` (default `info`). Safe to call more than once.
pub fn init_tracing(service: &'static str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("GRIDCLUE_LOG_FORMAT").is_ok_and(|v| v == "json");
    // Colour codes only on a terminal: logs redirected to files stay plain.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let result = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.compact().try_init()
    };
    if result.is_ok() {
        tracing::info!(service, "tracing initialised");
    }
}

/// The registry's metrics in Prometheus text format.
pub fn render(registry: &Registry) -> String {
    let mut buf = Vec::new();
    let encoder = TextEncoder::new();
    if let Err(e) = encoder.encode(&registry.gather(), &mut buf) {
        tracing::error!(error = %e, "cannot encode metrics");
    }
    String::from_utf8(buf).unwrap_or_default()
}

/// Content type of [`render`]'s output.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// At most one warning per key in each `period`, for a condition that repeats with every row or
/// request while it lasts (a malformed stored code, a drifted aggregate): the occurrences
/// suppressed in between are counted and reported with the next warning of that key. Usable as
/// a `static`.
#[derive(Debug)]
pub struct WarningLimiter {
    period: Duration,
    /// Per key: when it was last warned about, and the occurrences suppressed since.
    last: Mutex<BTreeMap<&'static str, (Instant, u64)>>,
}

impl WarningLimiter {
    pub const fn new(period: Duration) -> Self {
        Self {
            period,
            last: Mutex::new(BTreeMap::new()),
        }
    }

    /// An occurrence of `key` now: `Some(suppressed since the last warning)` when it is to be
    /// warned about, `None` when it is suppressed.
    pub fn admit(&self, key: &'static str) -> Option<u64> {
        self.admit_at(key, Instant::now())
    }

    /// [`Self::admit`] at `now`.
    pub fn admit_at(&self, key: &'static str, now: Instant) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        match last.get_mut(key) {
            Some((warned_at, suppressed))
                if now.saturating_duration_since(*warned_at) < self.period =>
            {
                *suppressed += 1;
                None
            }
            Some((warned_at, suppressed)) => {
                *warned_at = now;
                Some(std::mem::take(suppressed))
            }
            None => {
                last.insert(key, (now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_are_limited_per_key_and_count_the_ones_suppressed() {
        let limiter = WarningLimiter::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let at = |secs| t0 + Duration::from_secs(secs);
        let grid = "GridCode";
        let street = "StreetCode";
        assert_eq!(limiter.admit_at(grid, at(0)), Some(0));
        assert_eq!(limiter.admit_at(grid, at(0)), None);
        assert_eq!(limiter.admit_at(grid, at(30)), None);
        // Another type has its own allowance.
        assert_eq!(limiter.admit_at(street, at(30)), Some(0));
        assert_eq!(limiter.admit_at(grid, at(59)), None);
        // A minute after the last warning: the next one, with the three suppressed.
        assert_eq!(limiter.admit_at(grid, at(60)), Some(3));
        assert_eq!(limiter.admit_at(grid, at(61)), None);
        assert_eq!(limiter.admit_at(street, at(89)), None);
        assert_eq!(limiter.admit_at(street, at(90)), Some(1));
        // The period counts from the last warning, not from the first occurrence after it.
        assert_eq!(limiter.admit_at(grid, at(119)), None);
        assert_eq!(limiter.admit_at(grid, at(500)), Some(2));
        assert_eq!(limiter.admit_at(grid, at(500)), None);
    }

    #[test]
    fn build_info_carries_the_stamped_commit() {
        set_build_commit("0123456789ab");
        set_build_commit("ignored");
        let registry = Registry::new();
        register_common(&registry);
        let text = render(&registry);
        let line = text
            .lines()
            .find(|l| l.starts_with("gridclue_build_info{"))
            .expect("build info exported");
        assert_eq!(
            line,
            format!("gridclue_build_info{{commit=\"0123456789ab\",version=\"{BUILD_VERSION}\"}} 1")
        );
    }
}
