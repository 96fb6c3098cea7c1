//! The clue processor's Prometheus metrics.

use gridclue_core::telemetry::{names, LATENCY_BUCKETS};
use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

#[derive(Clone)]
pub struct EnrichMetrics {
    pub registry: Registry,
    pub commands: IntCounterVec,
    pub events: IntCounter,
    pub assignments: IntCounterVec,
    pub duplicates: IntCounter,
    pub rejections: IntCounterVec,
    pub dlq: IntCounterVec,
    pub processing: Histogram,
    pub map_info: IntGaugeVec,
    pub verdicts: IntCounterVec,
    pub open_cases: IntGauge,
    pub pending_clues: IntGauge,
    pub outcomes: IntCounterVec,
    pub overdue: IntCounter,
    /// 1 while a partition is not consumed because a Kafka log it depends on was reset.
    pub log_reset_detected: IntGaugeVec,
    /// Lag of the processor's and the dedupe stage's consumer groups.
    pub lag: gridclue_core::lag::LagGauges,
}

impl EnrichMetrics {
    pub fn new() -> Self {
        let counter_vec = |name: &str, help: &str, label: &str| {
            IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid metric")
        };
        let registry = Registry::new();
        gridclue_core::telemetry::register_common(&registry);
        let lag = gridclue_core::lag::LagGauges::register(
            &registry,
            names::ENRICH_CONSUMER_LAG_MESSAGES,
            names::ENRICH_CONSUMER_LAG_SECONDS,
        );
        let m = Self {
            registry,
            lag,
            commands: counter_vec(
                names::ENRICH_COMMANDS_TOTAL,
                "Commands consumed, by type",
                "type",
            ),
            events: IntCounter::new(names::ENRICH_EVENTS_TOTAL, "Facts produced")
                .expect("valid metric"),
            assignments: counter_vec(
                names::ENRICH_ASSIGNMENTS_TOTAL,
                "Reports placed on the map, by result",
                "result",
            ),
            duplicates: IntCounter::new(
                names::ENRICH_DUPLICATES_TOTAL,
                "Reports found to duplicate an open clue",
            )
            .expect("valid metric"),
            rejections: counter_vec(
                names::ENRICH_REJECTIONS_TOTAL,
                "Commands refused by the status machine, by reason",
                "reason",
            ),
            dlq: counter_vec(
                names::ENRICH_DLQ_TOTAL,
                "Records sent to the DLQ, by reason",
                "reason",
            ),
            processing: Histogram::with_opts(
                HistogramOpts::new(
                    names::ENRICH_PROCESSING_DURATION_SECONDS,
                    "Time from command issued to its fact acknowledged",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
            )
            .expect("valid metric"),
            map_info: IntGaugeVec::new(
                Opts::new(names::ENRICH_MAP_INFO, "The district map in use (value 1)"),
                &["version"],
            )
            .expect("valid metric"),
            verdicts: counter_vec(
                names::ENRICH_DEDUPE_VERDICTS_TOTAL,
                "Dedupe verdicts sent on placed reports, by verdict (case, duplicate)",
                "verdict",
            ),
            open_cases: IntGauge::new(
                names::ENRICH_DEDUPE_OPEN_CASES,
                "Open cases the dedupe stage compares new reports with (owned partitions)",
            )
            .expect("valid metric"),
            pending_clues: IntGauge::new(
                names::ENRICH_PENDING_CLUES,
                "Placed reports waiting for their dedupe verdict (owned partitions); \
                 growing means the dedupe stage is behind",
            )
            .expect("valid metric"),
            outcomes: counter_vec(
                names::ENRICH_TRANSITION_OUTCOMES_TOTAL,
                "Verdicts on client transitions (repeats included), by outcome (applied, \
                 forbidden, conflict, not_found, unavailable)",
                "outcome",
            ),
            overdue: IntCounter::new(
                names::ENRICH_OVERDUE_TOTAL,
                "Overdue facts emitted (deadlines passed with the clue open)",
            )
            .expect("valid metric"),
            log_reset_detected: IntGaugeVec::new(
                Opts::new(
                    names::ENRICH_LOG_RESET_DETECTED,
                    "1 while a partition is not consumed because its Kafka log (or its state \
                     changelog) was reset (run gridclue-enrich rebase)",
                ),
                &["topic", "partition"],
            )
            .expect("valid metric"),
        };
        for c in [
            Box::new(m.commands.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.events.clone()),
            Box::new(m.assignments.clone()),
            Box::new(m.duplicates.clone()),
            Box::new(m.rejections.clone()),
            Box::new(m.dlq.clone()),
            Box::new(m.processing.clone()),
            Box::new(m.map_info.clone()),
            Box::new(m.verdicts.clone()),
            Box::new(m.open_cases.clone()),
            Box::new(m.pending_clues.clone()),
            Box::new(m.outcomes.clone()),
            Box::new(m.overdue.clone()),
            Box::new(m.log_reset_detected.clone()),
        ] {
            m.registry.register(c).expect("unique metric");
        }
        // Every reason shows from the start (at 0), so a rule sees the first record go up.
        for reason in gridclue_core::wire::DlqReason::ALL {
            m.dlq.with_label_values(&[reason.as_str()]);
        }
        m
    }
}

impl EnrichMetrics {
    /// `gridclue_enrich_map_info{version="…"} 1` for the map in use, and nothing else.
    pub fn set_map_version(&self, version: &str) {
        self.map_info.reset();
        self.map_info.with_label_values(&[version]).set(1);
    }
}

impl Default for EnrichMetrics {
    fn default() -> Self {
        Self::new()
    }
}
