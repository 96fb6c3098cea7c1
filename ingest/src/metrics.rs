//! Ingest's Prometheus metrics, one registry per service instance.

use gridclue_core::telemetry::{names, LATENCY_BUCKETS};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};

#[derive(Clone)]
pub struct IngestMetrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub produce_duration: HistogramVec,
    pub rejected: IntCounterVec,
    pub in_flight: IntGauge,
    pub batch_items: IntCounterVec,
    pub read_duration: HistogramVec,
    pub transitions: IntCounterVec,
    pub photos: IntCounterVec,
}

impl IngestMetrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        gridclue_core::telemetry::register_common(&registry);
        let requests = IntCounterVec::new(
            Opts::new(
                names::INGEST_REQUESTS_TOTAL,
                "HTTP requests by route and status",
            ),
            &["route", "status"],
        )
        .expect("valid metric");
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                names::INGEST_REQUEST_DURATION_SECONDS,
                "HTTP request latency",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        )
        .expect("valid metric");
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
        let in_flight = IntGauge::new(names::INGEST_IN_FLIGHT_REQUESTS, "Requests being served")
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
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(photos.clone()),
            Box::new(transitions.clone()),
            Box::new(request_duration.clone()),
            Box::new(produce_duration.clone()),
            Box::new(rejected.clone()),
            Box::new(in_flight.clone()),
            Box::new(batch_items.clone()),
            Box::new(read_duration.clone()),
        ] {
            registry.register(c).expect("unique metric");
        }
        Self {
            registry,
            requests,
            request_duration,
            produce_duration,
            rejected,
            in_flight,
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
