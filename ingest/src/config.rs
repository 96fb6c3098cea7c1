//! Ingest configuration (defaults → `GRIDCLUE_CONFIG` file → `GRIDCLUE_*` env).

use std::net::SocketAddr;

use gridclue_core::ch::ChSettings;
use gridclue_core::config::{self, ConfigError, KafkaExtra, Secret};
use gridclue_core::kafka::KafkaSettings;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct IngestConfig {
    pub listen: SocketAddr,
    #[serde(deserialize_with = "config::broker_list")]
    pub kafka_brokers: String,
    /// librdkafka settings for every Kafka client (security, SASL, TLS…).
    pub kafka_extra: KafkaExtra,
    pub commands_topic: String,
    /// The clue processor's verdicts on transitions, read from its end by every instance.
    pub outcomes_topic: String,
    /// How long a transition request waits for the processor's verdict before answering 202
    /// with a URL to poll.
    pub transition_wait_ms: u64,
    /// How many recent verdicts this instance remembers (for polls and retries).
    pub outcomes_capacity: usize,
    /// Directory holding `categories.json` and `district/grids.geojson`.
    pub data_dir: String,
    pub tokens_file: String,
    /// Hex key for keyed hashes of phone numbers.
    pub secret_file: String,
    /// How long a POST may wait for the broker's acknowledgement before answering 503.
    #[serde(deserialize_with = "config::positive_ms")]
    pub produce_timeout_ms: u64,
    /// How long the producer waits to fill a batch (librdkafka `linger.ms`; fractions allowed).
    /// Each POST waits for its own acknowledgement, so this is latency every request pays.
    pub producer_linger_ms: f64,
    /// `Retry-After` (seconds) sent with 503 answers when the broker did not acknowledge.
    pub retry_after_secs: u64,
    /// Accepted margin (degrees) around the district's bounding box.
    pub bbox_margin_deg: f64,
    /// How far in the future a client's `reported_at` may be (clock skew), seconds.
    pub max_clock_skew_secs: u64,

    /// Requests per second one reporter token may make (token bucket refill rate); 0 = no limit.
    pub rate_limit_token_per_sec: f64,
    /// Burst size (bucket capacity) of the per-token limit.
    pub rate_limit_token_burst: u32,
    /// Requests per second one client address may make; 0 = no limit. IPv6 clients are
    /// limited per /64.
    pub rate_limit_ip_per_sec: f64,
    /// Burst size of the per-address limit.
    pub rate_limit_ip_burst: u32,
    /// Peers (IP addresses or CIDR ranges) whose `X-Forwarded-For` is believed. The client
    /// address is the right-most `X-Forwarded-For` entry that is not itself a trusted proxy.
    /// Empty: the socket's peer address is the client address and the header is ignored.
    pub trusted_proxies: Vec<String>,

    /// How many recently acknowledged clue ids this instance remembers, to answer retries
    /// without producing again and to mark repeats in batches as `duplicate`.
    pub recent_ids_capacity: usize,

    /// ClickHouse for the read endpoints (reporter view, Open311 reads). Empty URL: reads answer
    /// 503.
    #[serde(deserialize_with = "config::http_url_or_empty")]
    pub clickhouse_url: String,
    pub clickhouse_database: String,
    pub clickhouse_user: String,
    pub clickhouse_password: Secret,
    /// A file holding the password (first line), instead of `clickhouse_password`.
    pub clickhouse_password_file: String,
    /// How long a read may wait for ClickHouse before answering 503.
    #[serde(deserialize_with = "config::positive_ms")]
    pub read_timeout_ms: u64,
    /// Open311 reads (`services`, `requests` GET) need a valid `api_key` when true. The
    /// GeoReport v2 spec leaves reads open, which is the default.
    pub open311_reads_require_key: bool,
    /// Public base URL of this service (used in Open311 discovery); empty = relative links.
    #[serde(deserialize_with = "config::http_url_or_empty")]
    pub public_url: String,

    /// Where photos are stored: a directory (relative to the working directory, or
    /// `file:///absolute/dir`), or an S3-compatible bucket `s3://bucket[/prefix]` configured by
    /// the `photos_s3_*` settings (credentials left empty come from the usual `AWS_*`
    /// variables or the instance's role).
    pub photos_url: String,
    /// Largest accepted photo upload, bytes.
    pub photo_max_bytes: usize,
    /// Endpoint of an S3-compatible store (MinIO, Ceph…); empty = AWS S3.
    pub photos_s3_endpoint: String,
    pub photos_s3_region: String,
    pub photos_s3_access_key_id: String,
    pub photos_s3_secret_access_key: Secret,
    /// Allow a plain-http endpoint (a store inside the cluster's network).
    pub photos_s3_allow_http: bool,

    /// Base URL of dashboard-api, which the reporting page's "my reports" tab reads through
    /// this service (`GET /v1/my/clues`, `/v1/my/points` are forwarded with the rider's token,
    /// so the page stays same-origin). Empty: those routes answer 503.
    #[serde(deserialize_with = "config::http_url_or_empty")]
    pub dashboard_url: String,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7401)),
            kafka_brokers: "127.0.0.1:9092".into(),
            kafka_extra: KafkaExtra::default(),
            commands_topic: gridclue_core::wire::COMMANDS_TOPIC.into(),
            outcomes_topic: gridclue_core::wire::OUTCOMES_TOPIC.into(),
            transition_wait_ms: 2_000,
            outcomes_capacity: 100_000,
            data_dir: "data".into(),
            tokens_file: "var/tokens.json".into(),
            secret_file: "var/secret.key".into(),
            produce_timeout_ms: 5_000,
            producer_linger_ms: 2.0,
            retry_after_secs: 2,
            bbox_margin_deg: 0.05,
            max_clock_skew_secs: 300,
            rate_limit_token_per_sec: 5.0,
            rate_limit_token_burst: 60,
            rate_limit_ip_per_sec: 50.0,
            rate_limit_ip_burst: 300,
            trusted_proxies: Vec::new(),
            recent_ids_capacity: 200_000,
            clickhouse_url: String::new(),
            clickhouse_database: "gridclue".into(),
            clickhouse_user: "default".into(),
            clickhouse_password: Secret::default(),
            clickhouse_password_file: String::new(),
            read_timeout_ms: 3_000,
            open311_reads_require_key: false,
            public_url: String::new(),
            photos_url: "var/photos".into(),
            photo_max_bytes: 5 * 1024 * 1024,
            photos_s3_endpoint: String::new(),
            photos_s3_region: "us-east-1".into(),
            photos_s3_access_key_id: String::new(),
            photos_s3_secret_access_key: Secret::default(),
            photos_s3_allow_http: false,
            dashboard_url: String::new(),
        }
    }
}

impl IngestConfig {
    pub fn kafka(&self) -> KafkaSettings {
        KafkaSettings::new(&self.kafka_brokers, self.kafka_extra.clone())
    }

    /// ClickHouse for the read endpoints; `None` when no URL is configured.
    pub fn ch_settings(&self) -> Result<Option<ChSettings>, ConfigError> {
        if self.clickhouse_url.trim().is_empty() {
            return Ok(None);
        }
        Ok(Some(ChSettings {
            url: self.clickhouse_url.clone(),
            database: self.clickhouse_database.clone(),
            user: self.clickhouse_user.clone(),
            password: self
                .clickhouse_password
                .or_from_file("clickhouse_password", &self.clickhouse_password_file)?,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_is_a_known_variable() {
        assert_eq!(
            config::unlisted_fields::<IngestConfig>(),
            Vec::<String>::new()
        );
    }
}
