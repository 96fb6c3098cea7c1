//! Clue processor configuration.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EnrichConfig {
    pub listen: String,
    pub kafka_brokers: String,
    pub group_id: String,
    pub commands_topic: String,
    pub events_topic: String,
    pub dlq_topic: String,
    pub data_dir: String,
    /// Most commands handled per batch before outputs are awaited and offsets committed.
    pub batch_max: usize,
    pub produce_timeout_ms: u64,
}

impl Default for EnrichConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:7403".into(),
            kafka_brokers: "127.0.0.1:9092".into(),
            group_id: "gridclue-enrich".into(),
            commands_topic: "clues.commands".into(),
            events_topic: "clues.events".into(),
            dlq_topic: "clues.dlq".into(),
            data_dir: "data".into(),
            batch_max: 1_000,
            produce_timeout_ms: 30_000,
        }
    }
}
