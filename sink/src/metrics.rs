//! The sink's Prometheus metrics (names from `gridclue_core::telemetry::names`).

use gridclue_core::telemetry::{names, LATENCY_BUCKETS};
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

#[derive(Clone)]
pub struct SinkMetrics {
    pub registry: Registry,
    /// Rows inserted, by table.
    pub rows_inserted: IntCounterVec,
    /// Batches (INSERT statements) acknowledged, by table.
    pub batches_inserted: IntCounterVec,
    pub batch_rows: Histogram,
    /// Duration of one INSERT, by table.
    pub insert_duration: HistogramVec,
    /// Retries, by kind (`transient`, `schema`) and operation.
    pub retries: IntCounterVec,
    /// Failed ClickHouse or Kafka operations, by kind.
    pub errors: IntCounterVec,
    /// Fact time (`occurred_at_ms`) → insert acknowledged.
    pub freshness: Histogram,
    /// 1 while consumption is paused because ClickHouse does not take inserts.
    pub paused: IntGauge,
    /// 1 while the poller fetches nothing because the loop is behind (backpressure).
    pub fetch_paused: IntGauge,
    /// Records sent to the DLQ, by reason.
    pub dlq: IntCounterVec,
    /// Facts skipped because they were already stored, by why (`duplicate`, `resumed`).
    pub skipped: IntCounterVec,
    /// Views' targets checked after a failed insert that stored its facts, by target and
    /// outcome (`complete`, `repaired`, `unresolved`).
    pub view_repairs: IntCounterVec,
    /// 1 while a partition is not consumed because its Kafka log was reset, by topic and
    /// partition.
    pub log_reset_detected: IntGaugeVec,
    /// Logs found to have lost their tail (and continued in a new log), by topic and partition.
    pub log_truncations: IntCounterVec,
    /// A fact's command acknowledged at ingest → its insert acknowledged (facts that carry
    /// the time).
    pub end_to_end_freshness: Histogram,
    /// Lag of the sink's consumer group on the events topic.
    pub lag: gridclue_core::lag::LagGauges,
}

/// Freshness buckets (seconds): fine below a second (the aim), then up to minutes (backlogs).
const FRESHNESS_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0,
];

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("metric registered once");
    c
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("metric registered once");
    g
}

impl SinkMetrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        gridclue_core::telemetry::register_common(&registry);
        let lag = gridclue_core::lag::LagGauges::register(
            &registry,
            names::SINK_CONSUMER_LAG_MESSAGES,
            names::SINK_CONSUMER_LAG_SECONDS,
        );
        let end_to_end_freshness = Histogram::with_opts(
            HistogramOpts::new(
                names::SINK_END_TO_END_FRESHNESS_SECONDS,
                "Time from a fact's command acknowledged at ingest to the fact's insert \
                 acknowledged by ClickHouse (visible to the dashboards)",
            )
            .buckets(FRESHNESS_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        registry
            .register(Box::new(end_to_end_freshness.clone()))
            .expect("metric registered once");
        let rows_inserted = counter_vec(
            &registry,
            names::SINK_ROWS_INSERTED_TOTAL,
            "Rows inserted into ClickHouse, by table",
            &["table"],
        );
        let batches_inserted = counter_vec(
            &registry,
            names::SINK_BATCHES_INSERTED_TOTAL,
            "INSERT statements acknowledged by ClickHouse, by table",
            &["table"],
        );
        let batch_rows = Histogram::with_opts(
            HistogramOpts::new(names::SINK_BATCH_ROWS, "Facts per flushed batch").buckets(vec![
                1.0, 10.0, 100.0, 1_000.0, 5_000.0, 10_000.0, 50_000.0, 100_000.0, 500_000.0,
            ]),
        )
        .expect("valid metric");
        registry
            .register(Box::new(batch_rows.clone()))
            .expect("metric registered once");
        let insert_duration = HistogramVec::new(
            HistogramOpts::new(
                names::SINK_INSERT_DURATION_SECONDS,
                "Duration of one ClickHouse INSERT, by table",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["table"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(insert_duration.clone()))
            .expect("metric registered once");
        let retries = counter_vec(
            &registry,
            names::SINK_RETRIES_TOTAL,
            "Retried operations, by failure kind and operation",
            &["kind", "op"],
        );
        let errors = counter_vec(
            &registry,
            names::SINK_ERRORS_TOTAL,
            "Failed operations, by kind",
            &["kind"],
        );
        let freshness = Histogram::with_opts(
            HistogramOpts::new(
                names::SINK_FRESHNESS_SECONDS,
                "Time from a fact's occurrence to its insert being acknowledged",
            )
            .buckets(FRESHNESS_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        registry
            .register(Box::new(freshness.clone()))
            .expect("metric registered once");
        let paused = gauge(
            &registry,
            names::SINK_PAUSED,
            "1 while consumption is paused because ClickHouse does not take inserts",
        );
        let fetch_paused = gauge(
            &registry,
            names::SINK_FETCH_PAUSED,
            "1 while fetching from Kafka is paused because the sink's loop is behind (backpressure)",
        );
        let dlq = counter_vec(
            &registry,
            names::SINK_DLQ_TOTAL,
            "Records sent to the DLQ, by reason",
            &["reason"],
        );
        let skipped = counter_vec(
            &registry,
            names::SINK_SKIPPED_TOTAL,
            "Facts not inserted because ClickHouse already holds them, by why",
            &["why"],
        );
        let view_repairs = counter_vec(
            &registry,
            names::SINK_VIEW_REPAIRS_TOTAL,
            "Views' targets checked after a failed insert that stored its facts, by target and \
             outcome (unresolved: run gridclue-sink check-aggregates)",
            &["view", "outcome"],
        );
        let log_reset_detected = IntGaugeVec::new(
            Opts::new(
                names::SINK_LOG_RESET_DETECTED,
                "1 while a partition is not consumed because its Kafka log was reset \
                 (run gridclue-sink rebase)",
            ),
            &["topic", "partition"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(log_reset_detected.clone()))
            .expect("metric registered once");
        let log_truncations = counter_vec(
            &registry,
            names::SINK_LOG_TRUNCATIONS_TOTAL,
            "Kafka logs found to have lost records the sink had stored (read on in a new log \
             after the last record kept), by topic and partition",
            &["topic", "partition"],
        );
        Self {
            registry,
            rows_inserted,
            batches_inserted,
            batch_rows,
            insert_duration,
            retries,
            errors,
            freshness,
            paused,
            fetch_paused,
            dlq,
            skipped,
            view_repairs,
            log_reset_detected,
            log_truncations,
            end_to_end_freshness,
            lag,
        }
    }

    /// Pre-creates the per-table series so they show as 0 before the first insert.
    pub fn init_series(&self) {
        for table in [crate::store::EVENTS_TABLE, crate::store::CLUES_TABLE] {
            self.rows_inserted.with_label_values(&[table]);
            self.batches_inserted.with_label_values(&[table]);
        }
        self.paused.set(0);
        // Series rules read with increase() exist from the start (at 0), so the first failure
        // is an increase, not a new series.
        for reason in gridclue_core::wire::DlqReason::ALL {
            self.dlq.with_label_values(&[reason.as_str()]);
        }
        for kind in ["kafka_consume", "kafka_commit", "clickhouse_rejected"] {
            self.errors.with_label_values(&[kind]);
        }
        for kind in ["transient", "schema"] {
            self.retries.with_label_values(&[kind, "insert"]);
        }
    }
}

impl Default for SinkMetrics {
    fn default() -> Self {
        Self::new()
    }
}
