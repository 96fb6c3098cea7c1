//! rdkafka client configuration: every Kafka client the project creates starts here, so the
//! operator's passthrough settings (`kafka_extra`: security, SASL, TLS) reach all of them.

use rdkafka::ClientConfig;

use crate::config::KafkaExtra;

/// Where the brokers are and how to talk to them.
#[derive(Clone, Debug, Default)]
pub struct KafkaSettings {
    pub brokers: String,
    pub extra: KafkaExtra,
}

impl KafkaSettings {
    pub fn new(brokers: impl Into<String>, extra: KafkaExtra) -> Self {
        Self {
            brokers: brokers.into(),
            extra,
        }
    }

    /// Settings for librdkafka's mock cluster (the dev broker and the tests' brokers), with its
    /// tuning: [`dev_broker_tuning`].
    pub fn dev_broker(brokers: impl Into<String>) -> Self {
        Self::new(brokers, dev_broker_tuning())
    }
}

/// The mock broker answers a fetch only after `fetch.wait.max.ms`, never early when data
/// arrives, so librdkafka's 500 ms default would add half a second to every hop of the pipeline.
/// Real Kafka answers as soon as data is there: this belongs to the dev broker only, set by the
/// local stack (`GRIDCLUE_KAFKA_EXTRA`) and the tests.
pub fn dev_broker_tuning() -> KafkaExtra {
    KafkaExtra::new([("fetch.wait.max.ms".to_owned(), "50".to_owned())])
        .expect("fetch.wait.max.ms is not reserved")
}

/// A plain client (metadata, watermarks, reads without a group) with the passthrough settings.
pub fn client_config(kafka: &KafkaSettings) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &kafka.brokers);
    for (k, v) in kafka.extra.iter() {
        c.set(k, v);
    }
    c
}

/// A producer that never loses or doubles an acknowledged record: acks from all in-sync
/// replicas and the idempotent producer. `delivery_timeout_ms` bounds how long a send may wait
/// before failing.
pub fn producer_config(kafka: &KafkaSettings, delivery_timeout_ms: u64) -> ClientConfig {
    let mut c = client_config(kafka);
    c.set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "2")
        .set("message.timeout.ms", delivery_timeout_ms.to_string())
        .set("socket.keepalive.enable", "true");
    c
}

/// A consumer in `group_id` that commits nothing by itself: callers store/commit offsets only
/// after their output is durable.
pub fn consumer_config(kafka: &KafkaSettings, group_id: &str) -> ClientConfig {
    let mut c = reader_config(kafka);
    c.set("group.id", group_id)
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000");
    c
}

/// A consumer that reads assigned partitions and never commits (replays, audits, restores). It
/// still needs a `group.id` for librdkafka, which is never used to commit.
pub fn reader_config(kafka: &KafkaSettings) -> ClientConfig {
    let mut c = client_config(kafka);
    c.set("group.id", "gridclue-reader")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_uncommitted");
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(extra: &[(&str, &str)]) -> KafkaSettings {
        KafkaSettings::new(
            "b:1",
            KafkaExtra::new(extra.iter().map(|(k, v)| (k.to_string(), v.to_string()))).unwrap(),
        )
    }

    #[test]
    fn producer_is_lossless_by_configuration() {
        let c = producer_config(&settings(&[]), 5000);
        assert_eq!(c.get("acks"), Some("all"));
        assert_eq!(c.get("enable.idempotence"), Some("true"));
        assert_eq!(c.get("message.timeout.ms"), Some("5000"));
    }

    #[test]
    fn consumer_never_auto_commits() {
        let c = consumer_config(&settings(&[]), "g");
        assert_eq!(c.get("group.id"), Some("g"));
        assert_eq!(c.get("enable.auto.commit"), Some("false"));
        assert_eq!(c.get("enable.auto.offset.store"), Some("false"));
    }

    #[test]
    fn passthrough_reaches_every_client_kind() {
        let s = settings(&[
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "PLAIN"),
        ]);
        for c in [
            client_config(&s),
            reader_config(&s),
            producer_config(&s, 1000),
            consumer_config(&s, "g"),
        ] {
            assert_eq!(c.get("security.protocol"), Some("SASL_SSL"));
            assert_eq!(c.get("sasl.mechanism"), Some("PLAIN"));
            assert_eq!(c.get("bootstrap.servers"), Some("b:1"));
        }
    }

    #[test]
    fn mock_tuning_only_where_asked_for() {
        assert_eq!(
            consumer_config(&settings(&[]), "g").get("fetch.wait.max.ms"),
            None
        );
        let dev = KafkaSettings::dev_broker("b:1");
        assert_eq!(
            consumer_config(&dev, "g").get("fetch.wait.max.ms"),
            Some("50")
        );
    }

    #[test]
    fn guarantees_cannot_be_overridden() {
        let err =
            KafkaExtra::new([("enable.auto.commit".to_owned(), "true".to_owned())]).unwrap_err();
        assert!(err.contains("enable.auto.commit"), "{err}");
    }
}
