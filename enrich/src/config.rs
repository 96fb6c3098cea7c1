//! Clue processor configuration.

use std::net::SocketAddr;

use gridclue_core::config::{self, KafkaExtra};
use gridclue_core::kafka::KafkaSettings;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct EnrichConfig {
    pub listen: SocketAddr,
    #[serde(deserialize_with = "config::broker_list")]
    pub kafka_brokers: String,
    /// librdkafka settings for every Kafka client (security, SASL, TLS…).
    pub kafka_extra: KafkaExtra,
    pub group_id: String,
    pub commands_topic: String,
    pub events_topic: String,
    pub dlq_topic: String,
    /// Compacted changelog of per-clue state; must have at least as many partitions as the
    /// commands topic (state of partition p of `commands_topic` lives in partition p).
    pub state_topic: String,
    /// Placed reports and closed cases keyed by street, for the dedupe stage; its retention
    /// must exceed the dedupe window.
    pub dedupe_topic: String,
    /// Verdicts on client transitions, for the gateway (keyed by clue id).
    pub outcomes_topic: String,
    /// How often the processor looks for deadlines that passed (also when no command comes).
    pub overdue_tick_ms: u64,
    /// How long after a deadline a clue still open counts as overdue: commands issued before
    /// the deadline but not yet consumed (lag) get this long to arrive.
    pub overdue_grace_ms: u64,
    /// Consumer group of the dedupe stage.
    pub dedupe_group_id: String,
    pub data_dir: String,
    /// Most commands handled per batch before outputs are awaited and offsets committed.
    pub batch_max: usize,
    #[serde(deserialize_with = "config::positive_ms")]
    pub produce_timeout_ms: u64,
    /// How long restoring a partition's state from the changelog may take.
    #[serde(deserialize_with = "config::positive_ms")]
    pub restore_timeout_ms: u64,
    /// Dedupe radius (metres) and window (milliseconds).
    pub dedupe_radius_m: f64,
    pub dedupe_window_ms: u64,
    /// Reload the district map on SIGHUP (besides `POST /admin/reload-map`).
    pub reload_on_sighup: bool,
    /// The bearer tokens (`gridclue-ingest tokens …`): `POST /admin/reload-map` takes a district
    /// token. Read at each admin request; a missing file refuses every one.
    pub tokens_file: String,
    /// How often consumer lag is measured for `/metrics`.
    #[serde(deserialize_with = "config::positive_ms")]
    pub metrics_interval_ms: u64,
}

impl Default for EnrichConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7403)),
            kafka_brokers: "127.0.0.1:9092".into(),
            kafka_extra: KafkaExtra::default(),
            group_id: "gridclue-enrich".into(),
            commands_topic: gridclue_core::wire::COMMANDS_TOPIC.into(),
            events_topic: gridclue_core::wire::EVENTS_TOPIC.into(),
            dlq_topic: gridclue_core::wire::DLQ_TOPIC.into(),
            state_topic: gridclue_core::wire::STATE_TOPIC.into(),
            dedupe_topic: gridclue_core::wire::DEDUPE_TOPIC.into(),
            outcomes_topic: gridclue_core::wire::OUTCOMES_TOPIC.into(),
            overdue_tick_ms: 1_000,
            overdue_grace_ms: 5_000,
            dedupe_group_id: "gridclue-enrich-dedupe".into(),
            data_dir: "data".into(),
            batch_max: 1_000,
            produce_timeout_ms: 30_000,
            restore_timeout_ms: 60_000,
            dedupe_radius_m: 50.0,
            dedupe_window_ms: 24 * 3_600_000,
            reload_on_sighup: true,
            tokens_file: "var/tokens.json".into(),
            metrics_interval_ms: 5_000,
        }
    }
}

impl EnrichConfig {
    pub fn kafka(&self) -> KafkaSettings {
        KafkaSettings::new(&self.kafka_brokers, self.kafka_extra.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_is_a_known_variable() {
        assert_eq!(
            config::unlisted_fields::<EnrichConfig>(),
            Vec::<String>::new()
        );
    }
}
