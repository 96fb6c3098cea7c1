//! Ingest configuration (defaults → `GRIDCLUE_CONFIG` file → `GRIDCLUE_*` env).

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IngestConfig {
    pub listen: String,
    pub kafka_brokers: String,
    pub commands_topic: String,
    /// Directory holding `categories.json` and `district/grids.geojson`.
    pub data_dir: String,
    pub tokens_file: String,
    /// Hex key for keyed hashes of phone numbers.
    pub secret_file: String,
    /// How long a POST may wait for the broker's acknowledgement before answering 503.
    pub produce_timeout_ms: u64,
    /// Accepted margin (degrees) around the district's bounding box.
    pub bbox_margin_deg: f64,
    /// How far in the future a client's `reported_at` may be (clock skew), seconds.
    pub max_clock_skew_secs: u64,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:7401".into(),
            kafka_brokers: "127.0.0.1:9092".into(),
            commands_topic: "clues.commands".into(),
            data_dir: "data".into(),
            tokens_file: "var/tokens.json".into(),
            secret_file: "var/secret.key".into(),
            produce_timeout_ms: 5_000,
            bbox_margin_deg: 0.05,
            max_clock_skew_secs: 300,
        }
    }
}
