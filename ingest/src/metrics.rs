//! Ingest's Prometheus metrics, one registry per service instance.

use gridclue_core::service::{RequestMetricNames, RequestMetrics};
use gridclue_core::telemetry::{names, LATENCY_BUCKETS};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

#[derive(Clone)]
pub struct IngestMetrics {
    pub registry: Registry,
    /// Requests by route and status, latency, in flight.
    pub http: RequestMetrics,
    pub produce_duration: HistogramVec,
    pub rejected: IntCounterVec,
    pub batch_items: IntCounterVec,
    pub read_duration: HistogramVec,
    pub transitions: IntCounterVec,
    pub photos: IntCounterVec,
}

impl IngestMetrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        gridclue_core::telemetry::register_common(&registry);
        let http = RequestMetrics::register(
            &registry,
            RequestMetricNames {
                requests_total: names::INGEST_REQUESTS_TOTAL,
                duration_seconds: names::INGEST_REQUEST_DURATION_SECONDS,
                in_flight: names::INGEST_IN_FLIGHT_REQUESTS,
            },
        );
        let produce_duration = HistogramVec::new(
            HistogramOpts::new(
                names::INGEST_PRODUCE_DURATION_SECONDS,
                "Time from send to broker acknowledgement",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["outcome"],
        )
        .expect("valid metric");
        let rejected = IntCounterVec::new(
            Opts::new(
                names::INGEST_REJECTED_TOTAL,
                "Requests refused, by reason code",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let batch_items = IntCounterVec::new(
            Opts::new(
                names::INGEST_BATCH_ITEMS_TOTAL,
                "Items of batch requests, by result (accepted, duplicate, error)",
            ),
            &["result"],
        )
        .expect("valid metric");
        let read_duration = HistogramVec::new(
            HistogramOpts::new(
                names::INGEST_READ_DURATION_SECONDS,
                "ClickHouse read latency of the read endpoints",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["query", "outcome"],
        )
        .expect("valid metric");
        let transitions = IntCounterVec::new(
            Opts::new(
                names::INGEST_TRANSITIONS_TOTAL,
                "Transition requests answered, by action and result (applied, forbidden, \
                 conflict, not_found, unavailable, pending)",
            ),
            &["action", "result"],
        )
        .expect("valid metric");
        let photos = IntCounterVec::new(
            Opts::new(
                names::INGEST_PHOTOS_TOTAL,
                "Photo uploads accepted, by result (stored, already_stored)",
            ),
            &["result"],
        )
        .expect("valid metric");
        for c in [
            Box::new(photos.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(transitions.clone()),
            Box::new(produce_duration.clone()),
            Box::new(rejected.clone()),
            Box::new(batch_items.clone()),
            Box::new(read_duration.clone()),
        ] {
            registry.register(c).expect("unique metric");
        }
        Self {
            registry,
            http,
            produce_duration,
            rejected,
            batch_items,
            read_duration,
            transitions,
            photos,
        }
    }
}

impl Default for IngestMetrics {
    fn default() -> Self {
        Self::new()
    }
}
