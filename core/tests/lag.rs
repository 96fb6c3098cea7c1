//! Consumer lag measured against librdkafka's mock cluster (real Kafka protocol): committed
//! offsets, watermarks and the timestamp of the first waiting record.

use std::time::Duration;

use gridclue_core::kafka::KafkaSettings;
use gridclue_core::lag::{LagGauges, LagProbe, PartitionLag};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

const TOPIC: &str = "lag.test";
const GROUP: &str = "lag-group";

fn produce(bootstrap: &str, partition: i32, timestamps_ms: &[i64]) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    for ts in timestamps_ms {
        producer
            .send(
                BaseRecord::<str, str>::to(TOPIC)
                    .partition(partition)
                    .payload("x")
                    .timestamp(*ts),
            )
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
}

fn commit(bootstrap: &str, partition: i32, offset: i64) {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", GROUP)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(TOPIC, partition, Offset::Offset(offset))
        .unwrap();
    c.commit(&tpl, CommitMode::Sync).unwrap();
}

fn lag_of(sample: &[PartitionLag], partition: i32) -> &PartitionLag {
    sample
        .iter()
        .find(|l| l.topic == TOPIC && l.partition == partition)
        .unwrap_or_else(|| panic!("partition {partition} missing from {sample:?}"))
}

#[test]
fn lag_counts_uncommitted_records_and_ages_the_first_waiting_one() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic(TOPIC, 3, 1).unwrap();
    let bootstrap = mock.bootstrap_servers();
    let now = gridclue_core::wire::now_ms() as i64;
    // partition 0: ten records, the group committed four; the fifth was produced 60 s ago
    let p0: Vec<i64> = (0..10).map(|i| now - 100_000 + i * 10_000).collect();
    produce(&bootstrap, 0, &p0);
    commit(&bootstrap, 0, 4);
    // partition 1: three records and no commit at all: all three wait
    produce(&bootstrap, 1, &[now - 30_000, now - 20_000, now - 10_000]);
    // partition 2: two records, both committed: caught up
    produce(&bootstrap, 2, &[now - 5_000, now - 4_000]);
    commit(&bootstrap, 2, 2);

    let probe = LagProbe::new(
        &KafkaSettings::dev_broker(bootstrap),
        GROUP,
        vec![TOPIC.to_owned()],
        Duration::from_secs(5),
    )
    .unwrap();
    let sample = probe.sample().unwrap();
    assert_eq!(sample.len(), 3, "{sample:?}");

    let l0 = lag_of(&sample, 0);
    assert_eq!(l0.messages, 6);
    let s0 = l0.seconds.expect("first waiting record read");
    assert!((60.0..70.0).contains(&s0), "lag of partition 0: {s0} s");

    let l1 = lag_of(&sample, 1);
    assert_eq!(l1.messages, 3);
    let s1 = l1.seconds.expect("first waiting record read");
    assert!((30.0..40.0).contains(&s1), "lag of partition 1: {s1} s");

    let l2 = lag_of(&sample, 2);
    assert_eq!(l2.messages, 0);
    assert_eq!(l2.seconds, Some(0.0));

    // the group commits more: the lag follows
    commit(&mock.bootstrap_servers(), 0, 10);
    let again = probe.sample().unwrap();
    assert_eq!(lag_of(&again, 0).messages, 0);
    assert_eq!(lag_of(&again, 0).seconds, Some(0.0));

    // and the gauges carry group, topic and partition
    let registry = prometheus::Registry::new();
    let gauges = LagGauges::register(
        &registry,
        "gridclue_test_lag_messages",
        "gridclue_test_lag_seconds",
    );
    gauges.set(GROUP, &sample);
    let text = gridclue_core::telemetry::render(&registry);
    assert!(
        text.contains(
            r#"gridclue_test_lag_messages{group="lag-group",partition="0",topic="lag.test"} 6"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"gridclue_test_lag_messages{group="lag-group",partition="1",topic="lag.test"} 3"#
        ),
        "{text}"
    );
}
