//! The dead-letter queue for operators (`gridclue-sink dlq list|show|replay`).
//!
//! Every stage writes the records it cannot handle to `clues.dlq` as a [`DlqRecord`]: a stable
//! reason code, the stage, where the record came from (topic, partition, offset, key) and the
//! original payload. `list` and `show` read the topic without joining any group. `replay` sends
//! the original payload of the selected records back to their source topic with their key,
//! after a fix (a consumer that now knows the schema version, a category added, a schema
//! migrated).
//!
//! Replaying is idempotent: after a record's payload is acknowledged by Kafka, a **replay marker**
//! is written to the DLQ topic itself (header [`REPLAYED_HEADER`] = `partition/offset` of the
//! DLQ record, key `replayed/partition/offset`), and every later run skips records that have a
//! marker. A crash between the two writes can send a payload twice; that is harmless, because
//! every command and fact carries its identity (command id, `(clue_id, seq)`) and downstream
//! recognises a repeat.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use gridclue_core::kafka::KafkaSettings;
use gridclue_core::wire::DlqRecord;
use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

/// Header of a replay marker: the `partition/offset` of the DLQ record it marks as replayed.
pub const REPLAYED_HEADER: &str = "gridclue-dlq-replayed";
/// Header of a replayed payload: where in the DLQ it came from (`topic/partition/offset`).
pub const ORIGIN_HEADER: &str = "gridclue-dlq-origin";

/// One record of the DLQ topic.
#[derive(Clone, Debug, Serialize)]
pub struct DlqEntry {
    pub partition: i32,
    pub offset: i64,
    /// The record, or why it is not a DLQ record this tool can read.
    pub record: Result<DlqRecord, String>,
    /// A replay marker names this record.
    pub replayed: bool,
}

impl DlqEntry {
    pub fn reason(&self) -> &str {
        match &self.record {
            Ok(r) => r.reason.as_str(),
            Err(_) => "unreadable",
        }
    }
}

/// Which records a command applies to; empty fields select everything.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// Reason codes (`undecodable`, `clickhouse_rejected`, …).
    pub reasons: Vec<String>,
    /// Records written at or after this instant (epoch ms).
    pub from_ms: Option<u64>,
    /// Records written before this instant (epoch ms).
    pub to_ms: Option<u64>,
    /// Only records that came from this topic.
    pub source_topic: Option<String>,
    /// Only these DLQ records (partition, offset).
    pub positions: Vec<(i32, i64)>,
}

impl Selection {
    pub fn matches(&self, e: &DlqEntry) -> bool {
        if !self.reasons.is_empty() && !self.reasons.iter().any(|r| r == e.reason()) {
            return false;
        }
        if !self.positions.is_empty() && !self.positions.contains(&(e.partition, e.offset)) {
            return false;
        }
        let Ok(r) = &e.record else {
            // unreadable records match only a selection that names nothing about records
            return self.from_ms.is_none() && self.to_ms.is_none() && self.source_topic.is_none();
        };
        self.from_ms.is_none_or(|f| r.at_ms >= f)
            && self.to_ms.is_none_or(|t| r.at_ms < t)
            && self
                .source_topic
                .as_ref()
                .is_none_or(|t| *t == r.source_topic)
    }
}

/// Parses `90s`, `30m`, `2h`, `7d` into a duration.
pub fn parse_age(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{s:?} has no unit (s, m, h or d)"))?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?} does not start with a number"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3_600,
        "d" => n * 86_400,
        _ => return Err(format!("{s:?}: unit must be s, m, h or d")),
    };
    Ok(Duration::from_secs(secs))
}

fn progress_bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{what} [{{bar:40}}] {{pos}}/{{len}} ({{per_sec}}, {{eta}} left)"
        ))
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar
}

/// Reads every record of the DLQ topic (up to the end it had when the read began), with replay
/// markers applied. Blocking.
pub fn read(
    kafka: &KafkaSettings,
    topic: &str,
    timeout: Duration,
) -> anyhow::Result<Vec<DlqEntry>> {
    let consumer: BaseConsumer = gridclue_core::kafka::reader_config(kafka)
        .set("client.id", "gridclue-dlq-tool")
        .create()?;
    let md = consumer.fetch_metadata(Some(topic), timeout)?;
    let partitions: Vec<i32> = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default();
    if partitions.is_empty() {
        anyhow::bail!("topic {topic} does not exist");
    }
    let mut ends = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    let mut total = 0u64;
    for p in &partitions {
        let (low, high) = consumer.fetch_watermarks(topic, *p, timeout)?;
        if high > low {
            ends.insert(*p, high);
            tpl.add_partition_offset(topic, *p, Offset::Offset(low))?;
            total += (high - low) as u64;
        }
    }
    let bar = progress_bar(total, "reading the DLQ");
    let mut entries = Vec::new();
    let mut marked: HashSet<(i32, i64)> = HashSet::new();
    if !ends.is_empty() {
        consumer.assign(&tpl)?;
        let mut last_progress = Instant::now();
        while !ends.is_empty() {
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    last_progress = Instant::now();
                    bar.inc(1);
                    let (p, o) = (m.partition(), m.offset());
                    if ends.get(&p).is_some_and(|end| o + 1 >= *end) {
                        ends.remove(&p);
                    }
                    if let Some(target) = marker_target(&m) {
                        marked.insert(target);
                        continue;
                    }
                    let record = m
                        .payload()
                        .ok_or_else(|| "empty record".to_owned())
                        .and_then(|b| {
                            serde_json::from_slice::<DlqRecord>(b).map_err(|e| e.to_string())
                        });
                    entries.push(DlqEntry {
                        partition: p,
                        offset: o,
                        record,
                        replayed: false,
                    });
                }
                Some(Err(e)) => anyhow::bail!("reading {topic}: {e}"),
                None if last_progress.elapsed() > timeout => {
                    anyhow::bail!("reading {topic}: no record for {timeout:?} before its end")
                }
                None => {}
            }
        }
    }
    bar.finish_and_clear();
    for e in &mut entries {
        e.replayed = marked.contains(&(e.partition, e.offset));
    }
    entries.sort_by_key(|e| (e.partition, e.offset));
    Ok(entries)
}

/// The DLQ record a replay marker names, if `m` is one.
fn marker_target(m: &impl Message) -> Option<(i32, i64)> {
    let headers = m.headers()?;
    let value = headers.iter().find(|h| h.key == REPLAYED_HEADER)?.value?;
    let (p, o) = std::str::from_utf8(value).ok()?.split_once('/')?;
    Some((p.parse().ok()?, o.parse().ok()?))
}

/// Records per reason, most first.
pub fn count_by_reason(entries: &[&DlqEntry]) -> Vec<(String, usize)> {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for e in entries {
        *counts.entry(e.reason().to_owned()).or_default() += 1;
    }
    let mut out: Vec<_> = counts.into_iter().collect();
    out.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    out
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ReplayReport {
    /// Records whose payload was sent back to its source topic (and marked).
    pub replayed: usize,
    /// Selected records replayed by an earlier run.
    pub already_replayed: usize,
    /// Selected records without a payload this tool can send (not a DLQ record, bad hex).
    pub unreadable: usize,
}

#[derive(Serialize)]
struct Marker<'a> {
    replayed_partition: i32,
    replayed_offset: i64,
    to_topic: &'a str,
    at_ms: u64,
}

/// Sends the selected records' payloads back to their source topics, then marks them replayed
/// in `dlq_topic`. With `dry_run` it only counts.
pub async fn replay(
    kafka: &KafkaSettings,
    dlq_topic: &str,
    selection: &Selection,
    dry_run: bool,
    timeout: Duration,
) -> anyhow::Result<ReplayReport> {
    let (k, t) = (kafka.clone(), dlq_topic.to_owned());
    let entries = tokio::task::spawn_blocking(move || read(&k, &t, timeout)).await??;
    let mut report = ReplayReport::default();
    let mut todo = Vec::new();
    for e in entries.iter().filter(|e| selection.matches(e)) {
        if e.replayed {
            report.already_replayed += 1;
            continue;
        }
        let Ok(r) = &e.record else {
            report.unreadable += 1;
            continue;
        };
        let payload = if r.payload_is_hex {
            match hex::decode(&r.payload) {
                Ok(b) => b,
                Err(_) => {
                    report.unreadable += 1;
                    continue;
                }
            }
        } else {
            r.payload.clone().into_bytes()
        };
        todo.push((e, r, payload));
    }
    if dry_run || todo.is_empty() {
        report.replayed = if dry_run { todo.len() } else { 0 };
        return Ok(report);
    }
    let producer: FutureProducer =
        gridclue_core::kafka::producer_config(kafka, timeout.as_millis() as u64).create()?;
    let bar = progress_bar(todo.len() as u64, "replaying");
    // In chunks: each chunk's payloads are acknowledged before its markers are written.
    for chunk in todo.chunks(1_000) {
        let sends = chunk.iter().map(|(e, r, payload)| {
            let origin = format!("{dlq_topic}/{}/{}", e.partition, e.offset);
            let mut record = FutureRecord::to(&r.source_topic)
                .payload(payload.as_slice())
                .headers(OwnedHeaders::new().insert(Header {
                    key: ORIGIN_HEADER,
                    value: Some(origin.as_bytes()),
                }));
            if let Some(key) = &r.key {
                record = record.key(key.as_str());
            }
            let producer = &producer;
            async move { producer.send(record, timeout).await }
        });
        for result in futures::future::join_all(sends).await {
            result.map_err(|(e, _)| anyhow::anyhow!("replaying to the source topic: {e}"))?;
        }
        let marks = chunk.iter().map(|(e, r, _)| {
            let target = format!("{}/{}", e.partition, e.offset);
            let key = format!("replayed/{target}");
            let body = serde_json::to_vec(&Marker {
                replayed_partition: e.partition,
                replayed_offset: e.offset,
                to_topic: &r.source_topic,
                at_ms: gridclue_core::wire::now_ms(),
            })
            .expect("a marker serialises");
            let producer = &producer;
            async move {
                producer
                    .send(
                        FutureRecord::to(dlq_topic)
                            .key(key.as_str())
                            .payload(body.as_slice())
                            .headers(OwnedHeaders::new().insert(Header {
                                key: REPLAYED_HEADER,
                                value: Some(target.as_bytes()),
                            })),
                        timeout,
                    )
                    .await
            }
        });
        for result in futures::future::join_all(marks).await {
            result.map_err(|(e, _)| anyhow::anyhow!("writing a replay marker: {e}"))?;
        }
        report.replayed += chunk.len();
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_have_units() {
        assert_eq!(parse_age("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_age("30m"), Ok(Duration::from_secs(1_800)));
        assert_eq!(parse_age("2h"), Ok(Duration::from_secs(7_200)));
        assert_eq!(parse_age("7d"), Ok(Duration::from_secs(604_800)));
        assert!(parse_age("7").is_err());
        assert!(parse_age("7w").is_err());
        assert!(parse_age("h").is_err());
    }
}
