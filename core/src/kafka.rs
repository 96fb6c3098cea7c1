//! rdkafka client configuration shared by the services.

use rdkafka::ClientConfig;

/// A producer that never loses or doubles an acknowledged record: acks from all in-sync
/// replicas and the idempotent producer. `delivery_timeout_ms` bounds how long a send may wait
/// before failing.
pub fn producer_config(brokers: &str, delivery_timeout_ms: u64) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "2")
        .set("message.timeout.ms", delivery_timeout_ms.to_string())
        .set("socket.keepalive.enable", "true");
    c
}

/// A consumer in `group_id` that commits nothing by itself: callers store/commit offsets only
/// after their output is durable.
pub fn consumer_config(brokers: &str, group_id: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        .set("group.id", group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        // A fetch waits at most this long for data; librdkafka's mock broker never answers early,
        // so the 500 ms default would add half a second to every hop of the pipeline.
        .set("fetch.wait.max.ms", "50")
        .set("isolation.level", "read_uncommitted");
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn producer_is_lossless_by_configuration() {
        let c = producer_config("b:1", 5000);
        assert_eq!(c.get("acks"), Some("all"));
        assert_eq!(c.get("enable.idempotence"), Some("true"));
        assert_eq!(c.get("message.timeout.ms"), Some("5000"));
    }

    #[test]
    fn consumer_never_auto_commits() {
        let c = consumer_config("b:1", "g");
        assert_eq!(c.get("enable.auto.commit"), Some("false"));
        assert_eq!(c.get("enable.auto.offset.store"), Some("false"));
    }
}
