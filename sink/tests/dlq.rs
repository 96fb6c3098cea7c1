//! `gridclue-sink dlq`: listing, showing and replaying dead-letter records against librdkafka's
//! mock cluster (real Kafka protocol). A replay sends the original payloads back to their
//! source topic with their keys, and a second replay changes nothing.

use std::time::{Duration, Instant};

use gridclue_core::kafka::KafkaSettings;
use gridclue_core::wire::{DlqReason, DlqRecord};
use gridclue_sink::dlq::{self, Selection, ORIGIN_HEADER};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

const DLQ: &str = "clues.dlq";
const COMMANDS: &str = "clues.commands";
const EVENTS: &str = "clues.events";
const TIMEOUT: Duration = Duration::from_secs(10);

fn record(
    reason: DlqReason,
    source_topic: &str,
    offset: i64,
    payload: &[u8],
    at_ms: u64,
) -> DlqRecord {
    let (payload, payload_is_hex) = DlqRecord::payload_of(payload);
    DlqRecord {
        v: 1,
        reason,
        detail: format!("test {}", reason.as_str()),
        stage: "test".into(),
        source_topic: source_topic.into(),
        source_partition: 0,
        source_offset: offset,
        key: Some(format!("key-{offset}")),
        payload,
        payload_is_hex,
        at_ms,
    }
}

async fn produce(bootstrap: &str, records: &[DlqRecord]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    for r in records {
        let body = serde_json::to_vec(r).unwrap();
        producer
            .send(FutureRecord::<str, [u8]>::to(DLQ).payload(&body), TIMEOUT)
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
}

/// Every record of `topic`: (key, payload, origin header).
fn read_topic(bootstrap: &str, topic: &str) -> Vec<(String, Vec<u8>, String)> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "dlq-test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    let mut left = 0;
    for p in 0..2 {
        let (low, high) = c.fetch_watermarks(topic, p, TIMEOUT).unwrap();
        left += high - low;
        tpl.add_partition_offset(topic, p, Offset::Offset(low))
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + TIMEOUT;
    while (out.len() as i64) < left {
        assert!(Instant::now() < deadline, "read {} of {left}", out.len());
        if let Some(m) = c.poll(Duration::from_millis(100)) {
            let m = m.unwrap();
            let origin = m
                .headers()
                .and_then(|h| h.iter().find(|h| h.key == ORIGIN_HEADER))
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default();
            out.push((
                String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                m.payload().unwrap_or_default().to_vec(),
                origin,
            ));
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_records_are_listed_shown_and_replayed_once() {
    let mock = MockCluster::new(1).unwrap();
    for topic in [DLQ, COMMANDS, EVENTS] {
        mock.create_topic(topic, 2, 1).unwrap();
    }
    let bootstrap = mock.bootstrap_servers();
    let kafka = KafkaSettings::dev_broker(bootstrap.clone());
    let now = gridclue_core::wire::now_ms();
    let hour = 3_600_000;
    produce(
        &bootstrap,
        &[
            record(
                DlqReason::Undecodable,
                COMMANDS,
                10,
                b"{not json",
                now - 3 * hour,
            ),
            record(
                DlqReason::Undecodable,
                COMMANDS,
                11,
                &[0xff, 0x00, 0x7f],
                now - 10_000,
            ),
            record(
                DlqReason::IllegalTransition,
                COMMANDS,
                12,
                b"{\"v\":1}",
                now - 5_000,
            ),
            record(
                DlqReason::ClickhouseRejected,
                EVENTS,
                13,
                b"{\"fact\":1}",
                now - 1_000,
            ),
        ],
    )
    .await;
    // a record that is not a DLQ record at all is listed as unreadable, never replayed
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    producer
        .send(
            FutureRecord::<str, str>::to(DLQ).payload("garbage"),
            TIMEOUT,
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();

    // list: everything, with reasons
    let entries = tokio::task::spawn_blocking({
        let kafka = kafka.clone();
        move || dlq::read(&kafka, DLQ, TIMEOUT)
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(entries.len(), 5);
    let all: Vec<&dlq::DlqEntry> = entries.iter().collect();
    assert_eq!(
        dlq::count_by_reason(&all),
        vec![
            ("undecodable".to_owned(), 2),
            ("clickhouse_rejected".to_owned(), 1),
            ("illegal_transition".to_owned(), 1),
            ("unreadable".to_owned(), 1),
        ]
    );
    assert!(entries.iter().all(|e| !e.replayed));
    // by reason and time: the undecodable records of the last hour
    let recent_undecodable = Selection {
        reasons: vec!["undecodable".into()],
        from_ms: Some(now - hour),
        ..Selection::default()
    };
    let chosen: Vec<&dlq::DlqEntry> = entries
        .iter()
        .filter(|e| recent_undecodable.matches(e))
        .collect();
    assert_eq!(chosen.len(), 1);
    let shown = chosen[0].record.as_ref().unwrap();
    assert_eq!(shown.source_offset, 11);
    assert!(shown.payload_is_hex);

    // replay the undecodable ones of the last hour and the rejected fact
    let selection = Selection {
        reasons: vec!["undecodable".into(), "clickhouse_rejected".into()],
        from_ms: Some(now - hour),
        ..Selection::default()
    };
    let dry = dlq::replay(&kafka, DLQ, &selection, true, TIMEOUT)
        .await
        .unwrap();
    assert_eq!(dry.replayed, 2);
    assert!(
        read_topic(&bootstrap, COMMANDS).is_empty(),
        "a dry run sends nothing"
    );
    let first = dlq::replay(&kafka, DLQ, &selection, false, TIMEOUT)
        .await
        .unwrap();
    assert_eq!(
        first,
        dlq::ReplayReport {
            replayed: 2,
            already_replayed: 0,
            unreadable: 0
        }
    );
    let commands = read_topic(&bootstrap, COMMANDS);
    assert_eq!(commands.len(), 1);
    assert_eq!(commands[0].0, "key-11");
    assert_eq!(
        commands[0].1,
        vec![0xff, 0x00, 0x7f],
        "hex payload sent as its bytes"
    );
    assert!(
        commands[0].2.starts_with("clues.dlq/"),
        "{:?}",
        commands[0].2
    );
    let events = read_topic(&bootstrap, EVENTS);
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].0.as_str(), events[0].1.as_slice()),
        ("key-13", &b"{\"fact\":1}"[..])
    );

    // a second replay of the same selection changes nothing
    let second = dlq::replay(&kafka, DLQ, &selection, false, TIMEOUT)
        .await
        .unwrap();
    assert_eq!(
        second,
        dlq::ReplayReport {
            replayed: 0,
            already_replayed: 2,
            unreadable: 0
        }
    );
    assert_eq!(read_topic(&bootstrap, COMMANDS), commands);
    assert_eq!(read_topic(&bootstrap, EVENTS), events);

    // the listing shows what was replayed, and the markers are not records
    let after = tokio::task::spawn_blocking({
        let kafka = kafka.clone();
        move || dlq::read(&kafka, DLQ, TIMEOUT)
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(after.len(), 5);
    let mut replayed: Vec<i64> = after
        .iter()
        .filter(|e| e.replayed)
        .map(|e| e.record.as_ref().unwrap().source_offset)
        .collect();
    replayed.sort_unstable();
    assert_eq!(replayed, vec![11, 13]);

    // a wider selection replays only what was not replayed yet; the unreadable one is counted
    let everything = dlq::replay(&kafka, DLQ, &Selection::default(), false, TIMEOUT)
        .await
        .unwrap();
    assert_eq!(
        everything,
        dlq::ReplayReport {
            replayed: 2,
            already_replayed: 2,
            unreadable: 1
        }
    );
    assert_eq!(read_topic(&bootstrap, COMMANDS).len(), 3);
}
