//! Reset Kafka logs: found before anything is skipped, refused, and rebased deliberately.
//!
//! The sink skips a partition's records up to the highest offset stored from it in
//! `clue_events`. That is sound only while the broker's log is the log those offsets were read
//! from. When a log is reset (a dev broker restarted empty, a topic re-created, a log truncated)
//! its offsets start again and every new fact would look stored. So, before it consumes a
//! partition, the sink compares what ClickHouse holds with what the broker shows:
//!
//! - the stored offset is at or beyond the partition's high watermark → reset;
//! - the stored offset is still in the log, but the record there is not the fact stored from it
//!   (its `(clue_id, seq)` differs) → reset (a new log that has grown past the old position);
//! - the stored offset is no longer in the log and the Kafka cluster is not one this log was
//!   read from → reset (nothing proves it is the same log).
//!
//! A different cluster id alone is not a reset when the record at the stored offset is the
//! stored fact: the log was carried over (a dev broker that replays its journal gets a new
//! cluster id on every start), and the new cluster id is recorded for the log.
//!
//! A reset partition is not consumed (other partitions flow), is named in
//! `gridclue_sink_log_reset_detected{topic,partition}` and `/readyz`, and is logged once. The
//! operator's `gridclue-sink rebase` starts a new life of the partition's log in `kafka_logs`;
//! the running sink finds it (it re-checks refused partitions every `log_reset_recheck_ms`) and
//! reads the new log from its start. Facts read from it are stored with the new log's number,
//! and facts ClickHouse already holds are recognised by their identity `(clue_id, seq)` and
//! skipped, so a new log that replays old facts changes no number.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clickhouse::Client;
use gridclue_core::kafka::KafkaSettings;
use gridclue_core::wire::{now_ms, EventEnvelope};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::SinkConfig;

/// A fact's identity.
pub type FactId = (Uuid, u32);

/// What ClickHouse holds about a partition's current log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredLog {
    /// The current log's number (0 until the partition is first rebased).
    pub log: u32,
    /// Kafka clusters this log was read from (empty before the sink first recorded one).
    pub clusters: Vec<String>,
    /// The highest offset stored from this log, and the fact stored from it.
    pub last: Option<(i64, FactId)>,
    /// For a log the sink started after the broker lost the tail of the previous one: the
    /// offset up to which it is the previous log (stored already), so it is read after it.
    pub continues_after: Option<i64>,
}

/// What the broker shows of the partition now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerLog {
    pub low: i64,
    pub high: i64,
    /// `None` when the broker does not say.
    pub cluster_id: Option<String>,
}

/// The record found at the stored offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AtOffset {
    Fact(FactId),
    /// No fact there: a record that does not decode, or none at exactly that offset.
    Other,
}

/// Why a partition's log is taken for a reset one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResetKind {
    /// The stored offset is at or beyond the partition's high watermark.
    BeyondEnd,
    /// The record at the stored offset is not the fact stored from it.
    OtherRecord,
    /// The stored offset is no longer in the log, and the cluster is not one the log was read
    /// from.
    OtherCluster { known: Vec<String>, now: String },
}

/// A partition the sink refuses to consume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogReset {
    pub topic: String,
    pub partition: i32,
    pub log: u32,
    pub stored_offset: i64,
    pub low: i64,
    pub high: i64,
    pub kind: ResetKind,
}

impl fmt::Display for LogReset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (topic, p, stored, high) = (&self.topic, self.partition, self.stored_offset, self.high);
        write!(
            f,
            "log reset on {topic} partition {p}: stored up to offset {stored} (log {}), high \
             watermark {high} (low {}): ",
            self.log, self.low
        )?;
        match &self.kind {
            ResetKind::BeyondEnd => write!(f, "the stored offset is beyond the log's end")?,
            ResetKind::OtherRecord => write!(
                f,
                "the record at offset {stored} is not the fact stored from it"
            )?,
            ResetKind::OtherCluster { known, now } => write!(
                f,
                "offset {stored} is no longer in the log and the cluster is {now}, not {}",
                known.join(" or ")
            )?,
        }
        write!(
            f,
            "; not consumed until `gridclue-sink rebase --partition {p}` starts a new log"
        )
    }
}

/// What to do with a partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Consume {
        /// Offsets at or below this are stored (and provably from this log).
        resume_after: Option<i64>,
        /// The cluster id is new for this log (first seen, or the log was carried over).
        adopt_cluster: bool,
    },
    Reset(ResetKind),
    /// The broker lost the log's tail: the records up to `kept_through` are still the facts
    /// stored from them, those after it are gone (some offsets taken again by new records).
    Truncated {
        kind: ResetKind,
        kept_through: i64,
    },
}

/// The offset whose record must be compared with the stored fact, if it is still in the log.
pub fn offset_to_check(stored: &StoredLog, broker: &BrokerLog) -> Option<i64> {
    let (n, _) = stored.last?;
    (broker.low <= n && n < broker.high).then_some(n)
}

/// Judges a partition from what ClickHouse holds, what the broker shows and the record at the
/// stored offset (read when [`offset_to_check`] asks for it).
pub fn judge(stored: &StoredLog, broker: &BrokerLog, at_stored: Option<&AtOffset>) -> Verdict {
    let new_cluster = broker
        .cluster_id
        .as_ref()
        .is_some_and(|id| !stored.clusters.contains(id));
    let Some((n, fact)) = stored.last else {
        // Nothing stored from this log: nothing is skipped by offset, unless the log continues
        // one whose records up to an offset are stored.
        return Verdict::Consume {
            resume_after: stored.continues_after,
            adopt_cluster: new_cluster,
        };
    };
    if n >= broker.high {
        return Verdict::Reset(ResetKind::BeyondEnd);
    }
    if n >= broker.low {
        return match at_stored {
            Some(AtOffset::Fact(id)) if *id == fact => Verdict::Consume {
                resume_after: Some(n),
                adopt_cluster: new_cluster,
            },
            _ => Verdict::Reset(ResetKind::OtherRecord),
        };
    }
    // Offset n was deleted by retention: only the cluster can tell.
    match &broker.cluster_id {
        Some(now) if new_cluster && !stored.clusters.is_empty() => {
            Verdict::Reset(ResetKind::OtherCluster {
                known: stored.clusters.clone(),
                now: now.clone(),
            })
        }
        _ => Verdict::Consume {
            resume_after: Some(n),
            adopt_cluster: new_cluster,
        },
    }
}

/// Of the offsets stored from a log (`stored`, highest first, with their facts), the highest
/// whose record in the broker's log is still the fact stored from it, when the log lost its
/// tail: a log that loses its tail keeps every record before the loss, so the records that
/// match form a prefix and a binary search asks `fact_at` about log2(n) offsets. `None` when
/// even the lowest differs (nothing proves it is the same log).
pub fn last_kept<E>(
    stored: &[(i64, FactId)],
    mut fact_at: impl FnMut(i64) -> Result<AtOffset, E>,
) -> Result<Option<i64>, E> {
    let (mut differs_through, mut matches_from) = (0, stored.len());
    while differs_through < matches_from {
        let mid = (differs_through + matches_from) / 2;
        let (offset, fact) = stored[mid];
        if fact_at(offset)? == AtOffset::Fact(fact) {
            matches_from = mid;
        } else {
            differs_through = mid + 1;
        }
    }
    Ok(stored.get(matches_from).map(|(offset, _)| *offset))
}

/// How many of the highest stored offsets below the broker's high watermark a truncation is
/// looked for in: a tail lost by a broker is its last moments' records, not a log's worth.
const TRUNCATION_WINDOW: u64 = 100_000;

/// A failed look at ClickHouse or Kafka while judging a partition (retried by the caller).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("ClickHouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
    #[error("Kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("reading {topic} partition {partition} at offset {offset} timed out")]
    ReadTimeout {
        topic: String,
        partition: i32,
        offset: i64,
    },
    #[error("a blocking Kafka call panicked or was cancelled")]
    Join(#[from] tokio::task::JoinError),
}

/// Blocking Kafka look-ups for the judgement: watermarks, cluster id, one record.
pub struct Probe {
    kafka: KafkaSettings,
    client: BaseConsumer,
    timeout: Duration,
}

impl Probe {
    pub fn new(kafka: &KafkaSettings, timeout: Duration) -> Result<Self, KafkaError> {
        let client: BaseConsumer = gridclue_core::kafka::client_config(kafka).create()?;
        Ok(Self {
            kafka: kafka.clone(),
            client,
            timeout,
        })
    }

    pub fn broker_log(&self, topic: &str, partition: i32) -> Result<BrokerLog, KafkaError> {
        let (low, high) = self
            .client
            .fetch_watermarks(topic, partition, self.timeout)?;
        let cluster_id = self.client.client().fetch_cluster_id(self.timeout);
        Ok(BrokerLog {
            low,
            high,
            cluster_id,
        })
    }

    /// The partitions of `topic`.
    pub fn partitions(&self, topic: &str) -> Result<Vec<i32>, KafkaError> {
        let md = self.client.fetch_metadata(Some(topic), self.timeout)?;
        let mut ids: Vec<i32> = md
            .topics()
            .iter()
            .filter(|t| t.name() == topic)
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        ids.sort_unstable();
        Ok(ids)
    }

    /// The fact at `offset` of the partition (the offset is below the high watermark).
    pub fn fact_at(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Result<AtOffset, CheckError> {
        let reader: BaseConsumer = gridclue_core::kafka::reader_config(&self.kafka)
            .set("group.id", "gridclue-sink-log-check")
            .create()?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(offset))?;
        reader.assign(&tpl)?;
        let deadline = Instant::now() + self.timeout;
        while Instant::now() < deadline {
            let Some(m) = reader.poll(Duration::from_millis(100)) else {
                continue;
            };
            let m = m?;
            if m.partition() != partition {
                continue;
            }
            if m.offset() != offset {
                return Ok(AtOffset::Other);
            }
            return Ok(
                match EventEnvelope::decode(m.payload().unwrap_or_default()) {
                    Ok(env) => AtOffset::Fact((env.clue_id.as_uuid(), env.seq)),
                    Err(_) => AtOffset::Other,
                },
            );
        }
        Err(CheckError::ReadTimeout {
            topic: topic.to_owned(),
            partition,
            offset,
        })
    }
}

/// One row of `kafka_logs`.
#[derive(Clone, Debug, PartialEq, clickhouse::Row, Serialize, Deserialize)]
pub struct KafkaLogRow {
    pub kafka_topic: String,
    pub kafka_partition: i32,
    pub kafka_log: u32,
    pub cluster_id: String,
    pub low_watermark: i64,
    pub high_watermark: i64,
    pub stored_before: i64,
    pub note: String,
    pub recorded_at_ms: u64,
    pub continues_after: i64,
}

#[derive(clickhouse::Row, Deserialize)]
struct LogCluster {
    kafka_log: u32,
    cluster_id: String,
    continues_after: i64,
}

#[derive(clickhouse::Row, Deserialize)]
struct LastStored {
    rows: u64,
    max_offset: i64,
    #[serde(with = "clickhouse::serde::uuid")]
    clue_id: Uuid,
    seq: u32,
}

/// The partition's current log and what is stored from it.
pub async fn stored_log(
    client: &Client,
    topic: &str,
    partition: i32,
) -> Result<StoredLog, clickhouse::error::Error> {
    let rows: Vec<LogCluster> = client
        .query(
            "SELECT kafka_log, cluster_id, continues_after FROM kafka_logs \
             WHERE kafka_topic = ? AND kafka_partition = ?",
        )
        .bind(topic)
        .bind(partition)
        .fetch_all()
        .await?;
    let log = rows.iter().map(|r| r.kafka_log).max().unwrap_or(0);
    let continues_after = rows
        .iter()
        .filter(|r| r.kafka_log == log)
        .map(|r| r.continues_after)
        .max()
        .filter(|&m| m >= 0);
    let mut clusters: Vec<String> = rows
        .into_iter()
        .filter(|r| r.kafka_log == log && !r.cluster_id.is_empty())
        .map(|r| r.cluster_id)
        .collect();
    clusters.sort();
    clusters.dedup();
    let last: LastStored = client
        .query(
            "SELECT count() AS rows, max(kafka_offset) AS max_offset, \
             argMax(clue_id, kafka_offset) AS clue_id, argMax(seq, kafka_offset) AS seq \
             FROM clue_events WHERE kafka_topic = ? AND kafka_partition = ? AND kafka_log = ?",
        )
        .bind(topic)
        .bind(partition)
        .bind(log)
        .fetch_one()
        .await?;
    Ok(StoredLog {
        log,
        clusters,
        last: (last.rows > 0).then_some((last.max_offset, (last.clue_id, last.seq))),
        continues_after,
    })
}

#[derive(clickhouse::Row, Deserialize)]
struct StoredFact {
    kafka_offset: i64,
    #[serde(with = "clickhouse::serde::uuid")]
    clue_id: Uuid,
    seq: u32,
}

/// The offsets stored from `log` within `[low, high)` (the broker's log now), highest first, at
/// most [`TRUNCATION_WINDOW`] of them, with their facts.
async fn stored_in_log(
    client: &Client,
    topic: &str,
    partition: i32,
    log: u32,
    broker: &BrokerLog,
) -> Result<Vec<(i64, FactId)>, clickhouse::error::Error> {
    let rows: Vec<StoredFact> = client
        .query(
            "SELECT kafka_offset, clue_id, seq FROM clue_events \
             WHERE kafka_topic = ? AND kafka_partition = ? AND kafka_log = ? \
             AND kafka_offset >= ? AND kafka_offset < ? \
             ORDER BY kafka_offset DESC LIMIT ?",
        )
        .bind(topic)
        .bind(partition)
        .bind(log)
        .bind(broker.low)
        .bind(broker.high)
        .bind(TRUNCATION_WINDOW)
        .fetch_all()
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.kafka_offset, (r.clue_id, r.seq)))
        .collect())
}

pub async fn record_log(
    client: &Client,
    row: &KafkaLogRow,
) -> Result<(), clickhouse::error::Error> {
    let mut insert = client.insert::<KafkaLogRow>("kafka_logs").await?;
    insert.write(row).await?;
    insert.end().await
}

/// A partition judged.
#[derive(Clone, Debug)]
pub struct Inspection {
    pub topic: String,
    pub partition: i32,
    pub stored: StoredLog,
    pub broker: BrokerLog,
    pub verdict: Verdict,
}

impl Inspection {
    /// The reset, if the verdict is one (a truncated log is one too: see [`Self::truncation`]).
    pub fn reset(&self) -> Option<LogReset> {
        let (Verdict::Reset(kind) | Verdict::Truncated { kind, .. }) = &self.verdict else {
            return None;
        };
        Some(LogReset {
            topic: self.topic.clone(),
            partition: self.partition,
            log: self.stored.log,
            stored_offset: self.stored.last.map_or(-1, |(n, _)| n),
            low: self.broker.low,
            high: self.broker.high,
            kind: kind.clone(),
        })
    }

    /// The offset up to which a log that lost its tail still holds the stored records.
    pub fn truncation(&self) -> Option<i64> {
        match self.verdict {
            Verdict::Truncated { kept_through, .. } => Some(kept_through),
            _ => None,
        }
    }

    fn row(&self, log: u32, stored_before: i64, note: &str) -> KafkaLogRow {
        KafkaLogRow {
            kafka_topic: self.topic.clone(),
            kafka_partition: self.partition,
            kafka_log: log,
            cluster_id: self.broker.cluster_id.clone().unwrap_or_default(),
            low_watermark: self.broker.low,
            high_watermark: self.broker.high,
            stored_before,
            note: note.to_owned(),
            recorded_at_ms: now_ms(),
            continues_after: -1,
        }
    }
}

/// Judges `partition` of `topic`: ClickHouse's position against the broker's log.
pub async fn inspect(
    client: &Client,
    probe: &Arc<Probe>,
    topic: &str,
    partition: i32,
) -> Result<Inspection, CheckError> {
    let stored = stored_log(client, topic, partition).await?;
    let broker = {
        let (probe, topic) = (probe.clone(), topic.to_owned());
        tokio::task::spawn_blocking(move || probe.broker_log(&topic, partition)).await??
    };
    let at_stored = match offset_to_check(&stored, &broker) {
        Some(offset) => {
            let (probe, topic) = (probe.clone(), topic.to_owned());
            Some(
                tokio::task::spawn_blocking(move || probe.fact_at(&topic, partition, offset))
                    .await??,
            )
        }
        None => None,
    };
    let verdict = match judge(&stored, &broker, at_stored.as_ref()) {
        Verdict::Reset(kind @ (ResetKind::BeyondEnd | ResetKind::OtherRecord)) => {
            let candidates = stored_in_log(client, topic, partition, stored.log, &broker).await?;
            let (probe, topic) = (probe.clone(), topic.to_owned());
            let kept = tokio::task::spawn_blocking(move || {
                last_kept(&candidates, |offset| {
                    probe.fact_at(&topic, partition, offset)
                })
            })
            .await??;
            match kept {
                Some(kept_through) => Verdict::Truncated { kind, kept_through },
                None => Verdict::Reset(kind),
            }
        }
        verdict => verdict,
    };
    Ok(Inspection {
        topic: topic.to_owned(),
        partition,
        stored,
        broker,
        verdict,
    })
}

/// Records the cluster id of a partition judged consumable, when it is new for its log.
pub async fn adopt_cluster(
    client: &Client,
    inspection: &Inspection,
) -> Result<(), clickhouse::error::Error> {
    let Verdict::Consume {
        adopt_cluster: true,
        ..
    } = inspection.verdict
    else {
        return Ok(());
    };
    let note = if inspection.stored.clusters.is_empty() {
        "first seen"
    } else {
        "carried over: the record at the stored offset is the stored fact"
    };
    if !inspection.stored.clusters.is_empty() {
        tracing::info!(
            topic = %inspection.topic,
            partition = inspection.partition,
            log = inspection.stored.log,
            cluster_id = inspection.broker.cluster_id.as_deref().unwrap_or_default(),
            "the partition's log is read from another cluster; the record at the stored offset \
             is the stored fact, so it is the same log"
        );
    }
    record_log(client, &inspection.row(inspection.stored.log, -1, note)).await
}

/// Starts a new log for a partition whose log lost its tail ([`Verdict::Truncated`]): it is the
/// old log up to the last record kept, and is read after it. Returns the new log's number.
pub async fn continue_after_truncation(
    client: &Client,
    inspection: &Inspection,
) -> Result<u32, clickhouse::error::Error> {
    let Some(kept_through) = inspection.truncation() else {
        return Ok(inspection.stored.log);
    };
    let from_log = inspection.stored.log;
    let stored_through = inspection.stored.last.map_or(-1, |(n, _)| n);
    let note = format!(
        "started by the sink: the broker lost the tail of log {from_log} after offset \
         {kept_through} (offsets up to {stored_through} had been stored); read after \
         {kept_through}"
    );
    let mut row = inspection.row(from_log + 1, stored_through, &note);
    row.continues_after = kept_through;
    record_log(client, &row).await?;
    Ok(from_log + 1)
}

/// Which partitions `gridclue-sink rebase` acts on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RebaseTarget {
    /// These partitions (each must be reset unless forced).
    Partitions(Vec<i32>),
    /// Every partition of the events topic found reset.
    AllReset,
}

/// What `gridclue-sink rebase` did with one partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RebaseOutcome {
    /// A new log was started; the sink reads it from its start.
    Rebased {
        partition: i32,
        from_log: u32,
        to_log: u32,
        /// Why (None when forced on a partition that was not reset).
        reset: Option<LogReset>,
    },
    /// Named, but not reset: left alone (pass `force` to rebase anyway).
    NotReset { partition: i32 },
}

/// Starts a new log for reset partitions of the events topic (the `rebase` command). Safe with
/// sinks running: a sink refusing the partition finds the new log at its next re-check.
pub async fn rebase(
    config: &SinkConfig,
    target: RebaseTarget,
    force: bool,
) -> anyhow::Result<Vec<RebaseOutcome>> {
    let client = gridclue_core::ch::connect(&config.ch_settings()?).await?;
    crate::migrations::apply(&client).await?;
    let probe = {
        let kafka = config.kafka();
        Arc::new(
            tokio::task::spawn_blocking(move || Probe::new(&kafka, Duration::from_secs(10)))
                .await??,
        )
    };
    let topic = config.events_topic.clone();
    let partitions = match &target {
        RebaseTarget::Partitions(ps) => ps.clone(),
        RebaseTarget::AllReset => {
            let (probe, topic) = (probe.clone(), topic.clone());
            tokio::task::spawn_blocking(move || probe.partitions(&topic)).await??
        }
    };
    anyhow::ensure!(!partitions.is_empty(), "topic {topic} has no partitions");
    let mut out = Vec::new();
    for p in partitions {
        let inspection = inspect(&client, &probe, &topic, p).await?;
        let reset = inspection.reset();
        if reset.is_none() && !force {
            if matches!(target, RebaseTarget::Partitions(_)) {
                out.push(RebaseOutcome::NotReset { partition: p });
            }
            continue;
        }
        let from_log = inspection.stored.log;
        let to_log = from_log + 1;
        let stored_before = inspection.stored.last.map_or(-1, |(n, _)| n);
        let note = match &reset {
            Some(r) => format!("rebased: {r}"),
            None => "rebased by force".to_owned(),
        };
        record_log(&client, &inspection.row(to_log, stored_before, &note)).await?;
        tracing::info!(topic = %topic, partition = p, from_log, to_log, "new log started");
        out.push(RebaseOutcome::Rebased {
            partition: p,
            from_log,
            to_log,
            reset,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fact(n: u8) -> FactId {
        (Uuid::from_bytes([n; 16]), u32::from(n))
    }

    fn stored(last: Option<(i64, FactId)>, clusters: &[&str]) -> StoredLog {
        StoredLog {
            log: 0,
            clusters: clusters.iter().map(|c| c.to_string()).collect(),
            last,
            continues_after: None,
        }
    }

    fn broker(low: i64, high: i64, cluster: &str) -> BrokerLog {
        BrokerLog {
            low,
            high,
            cluster_id: Some(cluster.into()),
        }
    }

    #[test]
    fn nothing_stored_is_consumed_from_wherever_the_log_is() {
        let s = stored(None, &[]);
        let b = broker(0, 0, "a");
        assert_eq!(offset_to_check(&s, &b), None);
        assert_eq!(
            judge(&s, &b, None),
            Verdict::Consume {
                resume_after: None,
                adopt_cluster: true
            }
        );
    }

    #[test]
    fn a_stored_offset_at_or_past_the_end_is_a_reset() {
        let s = stored(Some((41, fact(1))), &["a"]);
        for high in [0, 5, 41] {
            let b = broker(0, high, "a");
            assert_eq!(offset_to_check(&s, &b), None);
            assert_eq!(judge(&s, &b, None), Verdict::Reset(ResetKind::BeyondEnd));
        }
    }

    #[test]
    fn the_record_at_the_stored_offset_decides_while_it_is_in_the_log() {
        let s = stored(Some((41, fact(1))), &["a"]);
        let b = broker(0, 42, "a");
        assert_eq!(offset_to_check(&s, &b), Some(41));
        assert_eq!(
            judge(&s, &b, Some(&AtOffset::Fact(fact(1)))),
            Verdict::Consume {
                resume_after: Some(41),
                adopt_cluster: false
            }
        );
        for other in [AtOffset::Fact(fact(2)), AtOffset::Other] {
            assert_eq!(
                judge(&s, &b, Some(&other)),
                Verdict::Reset(ResetKind::OtherRecord)
            );
        }
    }

    #[test]
    fn another_cluster_with_the_same_record_is_the_same_log_carried_over() {
        let s = stored(Some((41, fact(1))), &["a"]);
        let b = broker(0, 90, "b");
        assert_eq!(
            judge(&s, &b, Some(&AtOffset::Fact(fact(1)))),
            Verdict::Consume {
                resume_after: Some(41),
                adopt_cluster: true
            }
        );
        assert_eq!(
            judge(&s, &b, Some(&AtOffset::Fact(fact(3)))),
            Verdict::Reset(ResetKind::OtherRecord)
        );
    }

    #[test]
    fn a_deleted_stored_offset_is_trusted_only_on_a_known_cluster() {
        let s = stored(Some((41, fact(1))), &["a"]);
        assert_eq!(offset_to_check(&s, &broker(50, 90, "a")), None);
        assert_eq!(
            judge(&s, &broker(50, 90, "a"), None),
            Verdict::Consume {
                resume_after: Some(41),
                adopt_cluster: false
            }
        );
        assert_eq!(
            judge(&s, &broker(50, 90, "b"), None),
            Verdict::Reset(ResetKind::OtherCluster {
                known: vec!["a".into()],
                now: "b".into()
            })
        );
        // Before any cluster was recorded (a database from an older release) there is nothing
        // to compare with.
        assert_eq!(
            judge(
                &stored(Some((41, fact(1))), &[]),
                &broker(50, 90, "b"),
                None
            ),
            Verdict::Consume {
                resume_after: Some(41),
                adopt_cluster: true
            }
        );
    }

    #[test]
    fn a_log_continuing_another_is_read_after_what_it_continues() {
        let s = StoredLog {
            log: 1,
            clusters: vec!["b".into()],
            last: None,
            continues_after: Some(599),
        };
        assert_eq!(
            judge(&s, &broker(0, 640, "b"), None),
            Verdict::Consume {
                resume_after: Some(599),
                adopt_cluster: false
            }
        );
    }

    /// Offsets 10, 12, …, 30 stored (highest first); the broker still holds the same facts up
    /// to `kept` and other records after it.
    fn truncated_at(kept: i64) -> (Vec<(i64, FactId)>, impl Fn(i64) -> AtOffset) {
        let stored: Vec<(i64, FactId)> = (5..=15)
            .rev()
            .map(|i: u8| (i64::from(i) * 2, fact(i)))
            .collect();
        let broker = move |offset: i64| {
            if offset <= kept {
                AtOffset::Fact(fact((offset / 2) as u8))
            } else if offset % 3 == 0 {
                AtOffset::Other
            } else {
                AtOffset::Fact(fact(200))
            }
        };
        (stored, broker)
    }

    #[test]
    fn the_last_record_kept_is_found_by_asking_about_few_offsets() {
        for (kept, expected) in [
            (30, Some(30)),
            (25, Some(24)),
            (12, Some(12)),
            (10, Some(10)),
        ] {
            let (stored, broker) = truncated_at(kept);
            let mut asked = Vec::new();
            let found = last_kept::<()>(&stored, |offset| {
                asked.push(offset);
                Ok(broker(offset))
            });
            assert_eq!(found, Ok(expected), "kept through {kept}");
            // 11 stored offsets: at most ceil(log2(12)) = 4 looks at the broker.
            assert!(asked.len() <= 4, "kept through {kept}: asked {asked:?}");
        }
    }

    #[test]
    fn a_log_that_holds_none_of_the_stored_facts_is_not_a_truncated_one() {
        let (stored, broker) = truncated_at(9);
        assert_eq!(last_kept::<()>(&stored, |o| Ok(broker(o))), Ok(None));
        assert_eq!(last_kept::<()>(&[], |o| Ok(broker(o))), Ok(None));
    }

    #[test]
    fn a_failed_look_at_the_broker_is_an_error_not_a_verdict() {
        let (stored, _) = truncated_at(20);
        assert_eq!(last_kept(&stored, |_| Err("timed out")), Err("timed out"));
    }

    #[test]
    fn a_reset_names_topic_partition_offsets_and_the_command() {
        let r = LogReset {
            topic: "clues.events".into(),
            partition: 3,
            log: 0,
            stored_offset: 41,
            low: 0,
            high: 5,
            kind: ResetKind::BeyondEnd,
        };
        let text = r.to_string();
        for part in [
            "clues.events partition 3",
            "offset 41",
            "high watermark 5",
            "gridclue-sink rebase --partition 3",
        ] {
            assert!(text.contains(part), "{text}");
        }
    }
}
