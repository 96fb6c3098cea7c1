//! The dev broker's mock cluster, used the way the services use it: a producer with acks=all and
//! idempotence, and consumers, both in-process (library) and across processes (the binary).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gridclue_devstack::{
    read_addr_file, start_standard_cluster, verify_topics, TopicSpec, DEFAULT_PARTITIONS,
    DLQ_PARTITIONS, TOPIC_COMMANDS, TOPIC_DEDUPE, TOPIC_DLQ, TOPIC_EVENTS, TOPIC_OUTCOMES,
    TOPIC_STATE,
};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

fn producer(bootstrap: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "1")
        .create()
        .expect("producer")
}

fn assigned_consumer(bootstrap: &str, topic: &str, partition: i32, offset: i64) -> StreamConsumer {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "gridclue-devstack-test")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(offset))
        .expect("partition offset");
    // assign (no group rebalance): the mock's coordinator waits ~3 s before a new group's first
    // rebalance, which a subscribe() would pay.
    consumer.assign(&tpl).expect("assign");
    consumer
}

/// Produces one keyed message and reads it back from the partition it landed on.
async fn roundtrip(bootstrap: &str, topic: &str, key: &str, payload: &str) {
    let producer = producer(bootstrap);
    let delivery = producer
        .send(
            FutureRecord::to(topic).key(key).payload(payload),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("delivery acknowledged");
    let (partition, offset) = (delivery.partition, delivery.offset);
    let consumer = assigned_consumer(bootstrap, topic, partition, offset);
    let msg = tokio::time::timeout(Duration::from_secs(15), consumer.recv())
        .await
        .expect("message within 15 s")
        .expect("consume");
    assert_eq!(msg.topic(), topic);
    assert_eq!(msg.partition(), partition);
    assert_eq!(msg.offset(), offset);
    assert_eq!(msg.key(), Some(key.as_bytes()));
    assert_eq!(msg.payload(), Some(payload.as_bytes()));
    assert!(msg.headers().map(|h| h.count()).unwrap_or(0) == 0);
    producer.flush(Duration::from_secs(5)).expect("flush");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_cluster_serves_topics_and_roundtrips_a_message() {
    let kafka = start_standard_cluster(DEFAULT_PARTITIONS).expect("mock cluster");
    assert_eq!(kafka.brokers(), 3);
    assert_eq!(kafka.bootstrap_servers().split(',').count(), 3);

    // every topic with its partition count, through a real client connection
    let md_client: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka.bootstrap_servers())
        .create()
        .expect("metadata client");
    let md = md_client
        .fetch_metadata(None, Duration::from_secs(10))
        .expect("metadata");
    assert_eq!(md.brokers().len(), 3);
    for (name, partitions) in [
        (TOPIC_COMMANDS, DEFAULT_PARTITIONS),
        (TOPIC_EVENTS, DEFAULT_PARTITIONS),
        (TOPIC_DLQ, DLQ_PARTITIONS),
        (TOPIC_STATE, DEFAULT_PARTITIONS),
        (TOPIC_DEDUPE, DEFAULT_PARTITIONS),
        (TOPIC_OUTCOMES, DEFAULT_PARTITIONS),
    ] {
        let t = md
            .topics()
            .iter()
            .find(|t| t.name() == name)
            .unwrap_or_else(|| panic!("topic {name} missing"));
        assert_eq!(t.partitions().len(), partitions as usize, "{name}");
        for p in t.partitions() {
            assert_eq!(p.replicas().len(), 3, "{name}/{} replicas", p.id());
        }
    }

    roundtrip(
        kafka.bootstrap_servers(),
        TOPIC_COMMANDS,
        "clue-0001",
        r#"{"v":1,"kind":"report"}"#,
    )
    .await;
    roundtrip(kafka.bootstrap_servers(), TOPIC_DLQ, "clue-0002", "poison").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_topics_can_be_added() {
    let mut kafka = start_standard_cluster(2).expect("mock cluster");
    kafka
        .create_topic(TopicSpec::new("clues.test-extra", 3, 1))
        .expect("extra topic");
    verify_topics(
        kafka.bootstrap_servers(),
        kafka.topics(),
        Duration::from_secs(10),
    )
    .expect("all topics served");
    assert_eq!(
        kafka.topics().len(),
        gridclue_devstack::standard_topics(2, 1).len() + 1
    );
}

/// Kills the child on drop so a failing assertion leaves no broker behind.
struct ChildGuard(Option<Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn wait_for_addr(path: &Path, child: &mut Child, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(addr) = read_addr_file(path).expect("read addr file") {
            return addr;
        }
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!("devbroker exited early: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "no address file after {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devbroker_binary_serves_other_processes_and_cleans_up_on_sigterm() {
    let dir = tempfile::tempdir().expect("scratch dir");
    let addr_file = dir.path().join("run").join("kafka.addr");
    let child = Command::new(env!("CARGO_BIN_EXE_gridclue-devbroker"))
        .arg("--addr-file")
        .arg(&addr_file)
        .arg("--partitions")
        .arg("4")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn devbroker");
    let mut guard = ChildGuard(Some(child));
    let child = guard.0.as_mut().expect("child");
    let addr = wait_for_addr(&addr_file, child, Duration::from_secs(30));
    assert_eq!(addr.split(',').count(), 3, "three brokers: {addr}");

    let expected = gridclue_devstack::standard_topics(4, 3);
    verify_topics(&addr, &expected, Duration::from_secs(10)).expect("topics served");
    roundtrip(&addr, TOPIC_EVENTS, "clue-xyz", "fact").await;
    roundtrip(&addr, TOPIC_STATE, "clue-xyz", "state").await;

    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "devbroker ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    guard.0 = None;
    assert!(exit.success(), "clean exit on SIGTERM: {exit}");
    assert!(!addr_file.exists(), "address file removed on exit");
}
