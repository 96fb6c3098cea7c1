//! The journaled dev broker across restarts: records keep their partitions, offsets, keys,
//! values, headers and timestamps; consumer groups resume at their committed offsets; a torn
//! journal tail and offsets the journal never saw are handled; the binary keeps its state across
//! SIGTERM and a new start.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gridclue_devstack::journal::{self, JournalRecord, JournalWriter, TopicLayout};
use gridclue_devstack::{
    read_addr_file, start_durable_cluster, DevstackError, JournalConfig, TopicSpec,
    GAP_FILLER_HEADER,
};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

const GROUP: &str = "journal-test-group";

fn config(dir: &Path) -> JournalConfig {
    let mut c = JournalConfig::new(dir);
    c.groups = vec![GROUP.to_string()];
    c.flush_interval = Duration::from_millis(50);
    c
}

fn topics() -> Vec<TopicSpec> {
    vec![
        TopicSpec::new("j.keyed", 4, 3),
        TopicSpec::new("j.single", 1, 3),
    ]
}

fn producer(bootstrap: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "1")
        .create()
        .expect("producer")
}

/// `count` records with every shape a record can have: with and without key, null and empty
/// values, headers with null values, explicit timestamps.
async fn produce(bootstrap: &str, topic: &str, partitions: i32, first: usize, count: usize) {
    let producer = producer(bootstrap);
    let mut pending = Vec::new();
    for i in first..first + count {
        let key = format!("key-{i}");
        let value = format!("value {i} {}", "x".repeat(i % 50));
        let mut record = FutureRecord::<str, str>::to(topic)
            .partition((i % partitions as usize) as i32)
            .timestamp(1_700_000_000_000 + i as i64);
        if i % 10 != 0 {
            record = record.key(&key);
        }
        match i % 15 {
            0 => {}
            7 => record = record.payload(""),
            _ => record = record.payload(&value),
        }
        if i % 4 == 0 {
            record = record.headers(
                OwnedHeaders::new()
                    .insert(Header {
                        key: "trace",
                        value: Some(key.as_str()),
                    })
                    .insert(Header::<&str> {
                        key: "empty",
                        value: None,
                    }),
            );
        }
        pending.push(producer.send_result(record).expect("queued"));
    }
    for p in pending {
        p.await
            .expect("delivery report")
            .map_err(|(e, _)| e)
            .expect("acknowledged");
    }
    producer.flush(Duration::from_secs(10)).expect("flush");
}

/// Every record of every partition of `topics`, read back from the cluster up to the high
/// watermarks, and the high watermarks.
fn read_all(
    bootstrap: &str,
    topics: &[TopicSpec],
) -> (Vec<JournalRecord>, BTreeMap<(String, i32), i64>) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "journal-test-reader")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "50")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    let mut high = BTreeMap::new();
    for t in topics {
        for p in 0..t.partitions {
            let (_, h) = consumer
                .fetch_watermarks(&t.name, p, Duration::from_secs(10))
                .expect("watermarks");
            high.insert((t.name.clone(), p), h);
            tpl.add_partition_offset(&t.name, p, Offset::Beginning)
                .unwrap();
        }
    }
    consumer.assign(&tpl).expect("assign");
    let total: i64 = high.values().sum();
    let mut records = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while (records.len() as i64) < total {
        assert!(
            Instant::now() < deadline,
            "read {} of {total}",
            records.len()
        );
        let Some(m) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = m.expect("message");
        records.push(JournalRecord {
            topic: m.topic().to_string(),
            partition: m.partition(),
            offset: m.offset(),
            timestamp_ms: m.timestamp().to_millis(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            headers: m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                        .collect()
                })
                .unwrap_or_default(),
        });
    }
    records
        .sort_by(|a, b| (&a.topic, a.partition, a.offset).cmp(&(&b.topic, b.partition, b.offset)));
    (records, high)
}

fn group_client(bootstrap: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", GROUP)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "50")
        .create()
        .expect("group client")
}

fn committed(bootstrap: &str) -> BTreeMap<(String, i32), i64> {
    let mut tpl = TopicPartitionList::new();
    for t in topics() {
        for p in 0..t.partitions {
            tpl.add_partition(&t.name, p);
        }
    }
    group_client(bootstrap)
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed offsets")
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some(((e.topic().to_string(), e.partition()), o)),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_broker_serves_the_same_records_at_the_same_offsets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = start_durable_cluster(3, &topics(), config(dir.path())).expect("first start");
    assert_eq!(first.restored().records, 0);
    let bootstrap = first.bootstrap_servers().to_string();
    produce(&bootstrap, "j.keyed", 4, 0, 600).await;
    produce(&bootstrap, "j.single", 1, 1000, 50).await;

    // A group commits through the protocol, as the services do.
    let mut commit = TopicPartitionList::new();
    for (topic, partition, offset) in [
        ("j.keyed", 0, 40),
        ("j.keyed", 1, 150),
        ("j.keyed", 2, 0),
        ("j.single", 0, 17),
    ] {
        commit
            .add_partition_offset(topic, partition, Offset::Offset(offset))
            .unwrap();
    }
    group_client(&bootstrap)
        .commit(&commit, CommitMode::Sync)
        .expect("commit");
    let committed_before = committed(&bootstrap);
    assert_eq!(committed_before.len(), 4, "{committed_before:?}");
    let (records_before, high_before) = read_all(&bootstrap, &topics());
    assert_eq!(records_before.len(), 650);
    assert_eq!(high_before[&("j.keyed".to_string(), 1)], 150);

    let report = first.shutdown().expect("graceful shutdown");
    assert_eq!(report.records, 650, "every acknowledged record journaled");
    assert!(report.lagging.is_empty(), "{:?}", report.lagging);
    assert_eq!(report.missed_offsets, 0);

    let second = start_durable_cluster(3, &topics(), config(dir.path())).expect("second start");
    let restored = second.restored().clone();
    assert_eq!(restored.records, 650);
    assert_eq!(restored.gap_fillers, 0);
    assert_eq!(restored.torn_bytes, 0);
    assert_eq!(restored.committed_offsets, 4);
    assert_eq!(restored.end_offsets, high_before);
    let bootstrap = second.bootstrap_servers().to_string();
    let (records_after, high_after) = read_all(&bootstrap, &topics());
    assert_eq!(high_after, high_before);
    assert_eq!(records_after, records_before);
    assert_eq!(committed(&bootstrap), committed_before);

    // A member of the group resumes at the committed offset (after the mock's ~3 s rebalance).
    let member = group_client(&bootstrap);
    member.subscribe(&["j.keyed"]).expect("subscribe");
    let deadline = Instant::now() + Duration::from_secs(30);
    let first_of_p0 = loop {
        assert!(Instant::now() < deadline, "no record of partition 0");
        if let Some(m) = member.poll(Duration::from_millis(100)) {
            let m = m.expect("message");
            if m.partition() == 0 {
                break m.offset();
            }
        }
    };
    assert_eq!(first_of_p0, 40);
    drop(member);

    // New records continue the offsets, and a third start has both generations.
    produce(&bootstrap, "j.keyed", 4, 2000, 8).await;
    let (records_more, high_more) = read_all(&bootstrap, &topics());
    assert_eq!(records_more.len(), 658);
    for p in 0..4 {
        let key = ("j.keyed".to_string(), p);
        assert_eq!(high_more[&key], high_before[&key] + 2);
    }
    let report = second.shutdown().expect("graceful shutdown");
    assert_eq!(report.records, 8);

    let third = start_durable_cluster(3, &topics(), config(dir.path())).expect("third start");
    assert_eq!(third.restored().records, 658);
    let (records_third, high_third) = read_all(third.bootstrap_servers(), &topics());
    assert_eq!(high_third, high_more);
    assert_eq!(records_third, records_more);
    third.shutdown().expect("graceful shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_the_journal_never_saw_and_a_torn_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut layout = TopicLayout::default();
    layout.topics.insert("g.t".into(), 2);
    journal::write_json(dir.path(), journal::TOPICS_FILE, &layout).unwrap();
    let record = |partition: i32, offset: i64| JournalRecord {
        topic: "g.t".into(),
        partition,
        offset,
        timestamp_ms: Some(1_700_000_000_000 + offset),
        key: Some(format!("k{partition}-{offset}").into_bytes()),
        value: Some(format!("v{partition}-{offset}").into_bytes()),
        headers: vec![],
    };
    // partition 0: 0, 1, (2, 3 never seen), 4; partition 1: (0, 1 never seen), 2
    let journaled = [record(0, 0), record(0, 1), record(1, 2), record(0, 4)];
    let mut writer = JournalWriter::open(dir.path()).unwrap();
    for r in &journaled {
        writer.append(r).unwrap();
    }
    writer.sync().unwrap();
    drop(writer);
    // and half a frame at the end, as a SIGKILL during a write leaves it
    let path = dir.path().join(journal::RECORDS_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    let whole = bytes.len();
    bytes.extend_from_slice(&[40, 0, 0, 0, 1, 2, 3, 4, 5, 6]);
    std::fs::write(&path, &bytes).unwrap();

    let topics = [TopicSpec::new("g.t", 2, 1)];
    let kafka = start_durable_cluster(1, &topics, config(dir.path())).expect("start");
    let restored = kafka.restored().clone();
    assert_eq!(restored.records, 4);
    assert_eq!(restored.gap_fillers, 4);
    assert_eq!(restored.torn_bytes, 10);
    assert_eq!(
        std::fs::metadata(&path).unwrap().len() as usize,
        whole,
        "torn tail cut"
    );
    let (records, high) = read_all(kafka.bootstrap_servers(), &topics);
    assert_eq!(high[&("g.t".to_string(), 0)], 5);
    assert_eq!(high[&("g.t".to_string(), 1)], 3);
    for r in &records {
        match journaled
            .iter()
            .find(|j| (j.partition, j.offset) == (r.partition, r.offset))
        {
            Some(j) => assert_eq!(r, j),
            None => {
                assert_eq!(
                    (r.key.as_deref(), r.value.as_deref()),
                    (None, None),
                    "{r:?}"
                );
                assert_eq!(
                    r.headers,
                    vec![(GAP_FILLER_HEADER.to_string(), Some(b"1".to_vec()))]
                );
            }
        }
    }
    assert_eq!(records.len(), 8);
    kafka.shutdown().expect("shutdown");
}

#[test]
fn another_partition_count_than_the_journal_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kafka = start_durable_cluster(1, &[TopicSpec::new("l.t", 2, 1)], config(dir.path()))
        .expect("start");
    kafka.shutdown().expect("shutdown");
    let err = start_durable_cluster(1, &[TopicSpec::new("l.t", 3, 1)], config(dir.path()))
        .expect_err("3 partitions where the journal has 2");
    assert!(
        matches!(
            &err,
            DevstackError::JournalLayout {
                journaled: 2,
                requested: 3,
                ..
            }
        ),
        "{err}"
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

fn start_binary(journal_dir: &Path, addr_file: &Path) -> (ChildGuard, String) {
    let child = Command::new(env!("CARGO_BIN_EXE_gridclue-devbroker"))
        .arg("--addr-file")
        .arg(addr_file)
        .arg("--partitions")
        .arg("2")
        .arg("--journal-dir")
        .arg(journal_dir)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn devbroker");
    let mut guard = ChildGuard(Some(child));
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = loop {
        if let Some(addr) = read_addr_file(addr_file).expect("read addr file") {
            break addr;
        }
        let child = guard.0.as_mut().expect("child");
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!("devbroker exited early: {status}");
        }
        assert!(Instant::now() < deadline, "no address file after 30 s");
        std::thread::sleep(Duration::from_millis(20));
    };
    (guard, addr)
}

fn sigterm_and_wait(mut guard: ChildGuard) {
    let mut child = guard.0.take().expect("child");
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "devbroker ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "clean exit on SIGTERM: {exit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_keeps_its_records_across_sigterm_and_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let journal_dir = dir.path().join("devbroker");
    let addr_file = dir.path().join("run").join("kafka.addr");
    let topics = gridclue_devstack::standard_topics(2, 3);

    let (broker, addr) = start_binary(&journal_dir, &addr_file);
    produce(&addr, gridclue_devstack::TOPIC_COMMANDS, 2, 0, 300).await;
    let (mut expected, _) = read_all(&addr, &topics);
    assert_eq!(expected.len(), 300);
    // SIGTERM right after these acknowledgements: the journal catches up before the exit
    produce(&addr, gridclue_devstack::TOPIC_DLQ, 1, 300, 5).await;
    sigterm_and_wait(broker);
    assert!(!addr_file.exists(), "address file removed on exit");

    let (broker, addr) = start_binary(&journal_dir, &addr_file);
    let (after, high_after) = read_all(&addr, &topics);
    let dlq: Vec<_> = after
        .iter()
        .filter(|r| r.topic == gridclue_devstack::TOPIC_DLQ)
        .cloned()
        .collect();
    assert_eq!(dlq.len(), 5, "{dlq:?}");
    for (i, r) in dlq.iter().enumerate() {
        assert_eq!(r.offset, i as i64);
        assert_eq!(r.timestamp_ms, Some(1_700_000_000_300 + i as i64));
    }
    assert_eq!(
        high_after[&(gridclue_devstack::TOPIC_DLQ.to_string(), 0)],
        5
    );
    expected.extend(dlq);
    expected
        .sort_by(|a, b| (&a.topic, a.partition, a.offset).cmp(&(&b.topic, b.partition, b.offset)));
    assert_eq!(after, expected);
    sigterm_and_wait(broker);
}

/// Stopping right after a burst: the shutdown waits until the journal has every acknowledged
/// record, so a restart serves all of them.
#[test]
fn shutdown_right_after_a_burst_keeps_every_acknowledged_record() {
    const BURST: i64 = 30_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let topics = [TopicSpec::new("b.t", 4, 1)];
    let kafka = start_durable_cluster(1, &topics, config(dir.path())).expect("start");
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka.bootstrap_servers())
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    for i in 0..BURST {
        let payload = format!("burst {i}");
        let key = i.to_string();
        let mut record = BaseRecord::<str, str>::to("b.t")
            .partition((i % 4) as i32)
            .key(&key)
            .payload(&payload);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    producer.poll(Duration::from_millis(10));
                    record = back;
                }
            }
        }
    }
    producer
        .flush(Duration::from_secs(30))
        .expect("all acknowledged");
    drop(producer);
    let report = kafka.shutdown().expect("shutdown");
    assert_eq!(report.records, BURST as u64);
    assert!(report.lagging.is_empty(), "{:?}", report.lagging);

    let kafka = start_durable_cluster(1, &topics, config(dir.path())).expect("restart");
    assert_eq!(kafka.restored().records, BURST as u64);
    let ends: i64 = kafka.restored().end_offsets.values().sum();
    assert_eq!(ends, BURST);
    kafka.shutdown().expect("shutdown");
}
