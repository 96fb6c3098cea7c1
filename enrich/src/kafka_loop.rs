//! Kafka plumbing shared by the processor's, the dedupe stage's and the hotspot service's loops:
//! consumers that track revocations, batch collection, produce-and-await, offsets to commit, reading partitions from
//! their start, and holding partitions whose log was reset.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::future::join_all;
use gridclue_core::kafka::KafkaSettings;
use gridclue_core::service::Readiness;
use gridclue_core::wire::{self, DlqReason, DlqRecord};
use prometheus::IntGaugeVec;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::watch;

use crate::log_reset::LogReset;

/// A record to produce.
pub(crate) struct Outgoing {
    pub(crate) topic: String,
    pub(crate) partition: Option<i32>,
    pub(crate) key: Option<String>,
    pub(crate) payload: Vec<u8>,
}

impl Outgoing {
    /// A DLQ record, keyed like the record it is about.
    pub(crate) fn dlq(dlq_topic: &str, record: &DlqRecord) -> Self {
        Self {
            topic: dlq_topic.to_owned(),
            partition: None,
            key: record.key.clone(),
            payload: record.encode(),
        }
    }
}

/// The record a DLQ record is about.
pub(crate) struct Source {
    pub(crate) topic: String,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) key: Option<String>,
    pub(crate) payload: Vec<u8>,
}

impl Source {
    pub(crate) fn of(m: &OwnedMessage) -> Self {
        Self {
            topic: m.topic().to_owned(),
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
            payload: m.payload().unwrap_or_default().to_vec(),
        }
    }

    /// The DLQ record saying why `stage` could not process this record.
    pub(crate) fn dlq_record(&self, stage: &str, reason: DlqReason, detail: String) -> DlqRecord {
        let (payload, payload_is_hex) = DlqRecord::payload_of(&self.payload);
        DlqRecord {
            v: wire::SCHEMA_VERSION,
            reason,
            detail,
            stage: stage.to_owned(),
            source_topic: self.topic.clone(),
            source_partition: self.partition,
            source_offset: self.offset,
            key: self.key.clone(),
            payload,
            payload_is_hex,
            at_ms: wire::now_ms(),
        }
    }
}

/// Revocations seen by the consumer, as a per-partition epoch (bumped on every revoke).
#[derive(Default)]
pub(crate) struct Epochs {
    epochs: Mutex<HashMap<i32, u64>>,
    pub(crate) assigned: Mutex<HashSet<i32>>,
}

impl Epochs {
    pub(crate) fn get(&self, p: i32) -> u64 {
        self.epochs
            .lock()
            .map(|e| e.get(&p).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

/// The consumer context of both loops: bumps epochs on revocations and counts owned partitions.
pub(crate) struct LoopContext {
    pub(crate) epochs: Arc<Epochs>,
    pub(crate) owned: Arc<AtomicUsize>,
}

impl ClientContext for LoopContext {}

impl ConsumerContext for LoopContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            if let Ok(mut e) = self.epochs.epochs.lock() {
                for el in tpl.elements() {
                    *e.entry(el.partition()).or_default() += 1;
                }
            }
            if let Ok(mut a) = self.epochs.assigned.lock() {
                for el in tpl.elements() {
                    a.remove(&el.partition());
                }
            }
            let n = tpl.count();
            let _ = self
                .owned
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |o| {
                    Some(o.saturating_sub(n))
                });
            tracing::info!(partitions = tpl.count(), "partitions revoked");
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            // librdkafka keeps a partition paused across a revocation; an assigned partition is
            // judged afresh, so it starts unpaused.
            if let Err(e) = consumer.resume(tpl) {
                tracing::warn!(error = %e, "cannot resume assigned partitions");
            }
            self.owned.fetch_add(tpl.count(), Ordering::SeqCst);
            if let Ok(mut a) = self.epochs.assigned.lock() {
                a.extend(tpl.elements().iter().map(|el| el.partition()));
            }
            tracing::info!(partitions = tpl.count(), "partitions assigned");
        }
    }
}

/// A consumer error: fatal ones end the loop, others (a broker away for a moment, …) are
/// logged; librdkafka recovers from them by itself.
pub(crate) fn consumer_error(e: rdkafka::error::KafkaError) -> anyhow::Result<()> {
    if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::Fatal) {
        return Err(anyhow::Error::new(e).context("fatal consumer error"));
    }
    tracing::warn!(error = %e, "consumer error");
    Ok(())
}

/// Produces every record and waits for all acknowledgements; returns (partition, offset) of each.
pub(crate) async fn send_all(
    producer: &FutureProducer,
    records: &[Outgoing],
) -> anyhow::Result<Vec<(i32, i64)>> {
    let sends = records.iter().map(|o| {
        let mut record = FutureRecord::to(&o.topic).payload(&o.payload);
        if let Some(k) = &o.key {
            record = record.key(k);
        }
        if let Some(p) = o.partition {
            record = record.partition(p);
        }
        producer.send(record, Duration::from_secs(5))
    });
    let mut delivered = Vec::with_capacity(records.len());
    for result in join_all(sends).await {
        match result {
            Ok(d) => delivered.push((d.partition, d.offset)),
            // Nothing of this batch is committed: it is consumed again after a restart.
            Err((e, _)) => anyhow::bail!("producing a record failed: {e}"),
        }
    }
    Ok(delivered)
}

/// Waits for the next message (or `shutdown`: `None`; or `idle` without a message: an empty
/// batch), then collects more until `max` or a 2 ms gap. Messages fetched before their partition
/// was revoked are dropped: the new owner handles them from the last committed offset. May
/// return an empty batch.
pub(crate) async fn next_batch(
    consumer: &StreamConsumer<LoopContext>,
    epochs: &Epochs,
    max: usize,
    idle: Option<Duration>,
    shutdown: &mut watch::Receiver<bool>,
) -> anyhow::Result<Option<Vec<OwnedMessage>>> {
    // `recv` is cancellation safe: a message is never lost when the idle timer wins.
    let first = tokio::select! {
        _ = shutdown.changed() => return Ok(None),
        _ = tokio::time::sleep(idle.unwrap_or_default()), if idle.is_some() => {
            return Ok(Some(Vec::new()))
        }
        m = consumer.recv() => m,
    };
    let first = match first {
        Ok(m) => m.detach(),
        Err(e) => {
            consumer_error(e)?;
            tokio::time::sleep(Duration::from_millis(100)).await;
            return Ok(Some(Vec::new()));
        }
    };
    let mut batch = vec![(epochs.get(first.partition()), first)];
    while batch.len() < max {
        match tokio::time::timeout(Duration::from_millis(2), consumer.recv()).await {
            Ok(Ok(m)) => {
                let m = m.detach();
                batch.push((epochs.get(m.partition()), m));
            }
            Ok(Err(e)) => {
                consumer_error(e)?;
                break;
            }
            Err(_) => break,
        }
    }
    let before = batch.len();
    batch.retain(|(e, m)| *e == epochs.get(m.partition()));
    if batch.len() < before {
        tracing::info!(
            dropped = before - batch.len(),
            "dropped messages of revoked partitions"
        );
    }
    Ok(Some(batch.into_iter().map(|(_, m)| m).collect()))
}

/// Reads partitions of `topic` from their first retained record up to `until` (exclusive; `None`
/// = their end when the call starts), handing each record to `on_record` in offset order per
/// partition. Returns every partition's watermarks (low, high) at the start.
pub(crate) fn read_partitions(
    kafka: &KafkaSettings,
    topic: &str,
    group_id: &str,
    partitions: &[(i32, Option<i64>)],
    timeout: Duration,
    mut on_record: impl FnMut(&BorrowedMessage<'_>),
) -> anyhow::Result<HashMap<i32, (i64, i64)>> {
    let consumer: BaseConsumer = gridclue_core::kafka::reader_config(kafka)
        .set("group.id", group_id)
        .create()
        .with_context(|| format!("creating a reader of {topic}"))?;
    let mut watermarks: HashMap<i32, (i64, i64)> = HashMap::new();
    let mut stop_at: HashMap<i32, i64> = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for &(p, until) in partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, timeout)
            .with_context(|| format!("watermarks of {topic}/{p}"))?;
        watermarks.insert(p, (low, high));
        let end = until.unwrap_or(high).min(high);
        if end > low {
            stop_at.insert(p, end);
            tpl.add_partition_offset(topic, p, Offset::Offset(low))?;
        }
    }
    if stop_at.is_empty() {
        return Ok(watermarks);
    }
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + timeout;
    let mut pending: HashSet<i32> = stop_at.keys().copied().collect();
    while !pending.is_empty() {
        if Instant::now() > deadline {
            anyhow::bail!("reading {topic} partitions {pending:?} timed out");
        }
        let Some(m) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = m.with_context(|| format!("reading {topic}"))?;
        let end = stop_at[&m.partition()];
        if m.offset() < end && pending.contains(&m.partition()) {
            on_record(&m);
        }
        if m.offset() + 1 >= end {
            pending.remove(&m.partition());
        }
    }
    Ok(watermarks)
}

/// Sets aside the state of partitions revoked since it was taken (`epoch_of` it is older than
/// the partition's epoch): it moves from `held` to `revoked`, to be reused if the partition
/// comes back unchanged. Set-aside state of partitions no longer assigned to us is dropped.
pub(crate) fn set_aside_revoked<S>(
    held: &mut HashMap<i32, S>,
    revoked: &mut HashMap<i32, S>,
    epochs: &Epochs,
    epoch_of: impl Fn(&S) -> u64,
) {
    let stale: Vec<i32> = held
        .iter()
        .filter(|(p, s)| epoch_of(s) != epochs.get(**p))
        .map(|(p, _)| *p)
        .collect();
    for p in stale {
        if let Some(s) = held.remove(&p) {
            revoked.insert(p, s);
        }
    }
    if let Ok(assigned) = epochs.assigned.lock() {
        revoked.retain(|p, _| assigned.contains(p));
    }
}

/// The first offset in the batch of each partition `known` says nothing is held for: where
/// consumption of a newly assigned partition (re)started.
pub(crate) fn restart_offsets(
    batch: &[OwnedMessage],
    known: impl Fn(i32) -> bool,
) -> BTreeMap<i32, i64> {
    let mut first: BTreeMap<i32, i64> = BTreeMap::new();
    for m in batch.iter().filter(|m| !known(m.partition())) {
        let e = first.entry(m.partition()).or_insert(m.offset());
        *e = (*e).min(m.offset());
    }
    first
}

/// Per partition, the offset after the batch's last message, with the metadata `note` gives for
/// the partition.
pub(crate) fn next_offsets(
    batch: &[OwnedMessage],
    note: impl Fn(i32) -> Option<String>,
) -> anyhow::Result<TopicPartitionList> {
    let mut highest: HashMap<(String, i32), i64> = HashMap::new();
    for m in batch {
        let e = highest
            .entry((m.topic().to_owned(), m.partition()))
            .or_insert(m.offset());
        *e = (*e).max(m.offset());
    }
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), offset) in highest {
        let mut el = tpl.add_partition(&topic, partition);
        el.set_offset(Offset::Offset(offset + 1))?;
        if let Some(n) = note(partition) {
            el.set_metadata(n);
        }
    }
    Ok(tpl)
}

/// Partitions of the consumed topic a loop does not consume because a log they depend on was
/// reset: paused, reported once (error log, the service's `…_log_reset_detected{topic,partition}`
/// gauge, `/readyz`), and forgotten when the partition is revoked (its next owner judges it
/// afresh).
pub(crate) struct Refusals {
    topic: String,
    detected: IntGaugeVec,
    readiness: Readiness,
    /// Per refused partition: the epoch it was refused in, and what was found.
    refused: HashMap<i32, (u64, Vec<LogReset>)>,
}

impl Refusals {
    pub(crate) fn new(topic: &str, detected: IntGaugeVec, readiness: Readiness) -> Self {
        Self {
            topic: topic.to_owned(),
            detected,
            readiness,
            refused: HashMap::new(),
        }
    }

    pub(crate) fn contains(&self, partition: i32) -> bool {
        self.refused.contains_key(&partition)
    }

    pub(crate) fn refuse<C: ConsumerContext>(
        &mut self,
        consumer: &StreamConsumer<C>,
        partition: i32,
        epoch: u64,
        resets: Vec<LogReset>,
    ) {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.topic, partition);
        if let Err(e) = consumer.pause(&tpl) {
            // Not fatal: the loop drops the partition's messages and commits nothing of it.
            tracing::warn!(error = %e, partition, "cannot pause a refused partition");
        }
        for r in &resets {
            tracing::error!(
                topic = %r.topic,
                partition = r.partition,
                group = %r.group,
                position = r.position,
                high_watermark = r.high,
                low_watermark = r.low,
                "{r}"
            );
            self.report(r, true);
        }
        self.refused.insert(partition, (epoch, resets));
    }

    /// Forgets refusals of partitions revoked since.
    pub(crate) fn forget_revoked(&mut self, epochs: &Epochs) {
        let gone: Vec<i32> = self
            .refused
            .iter()
            .filter(|(p, (epoch, _))| epochs.get(**p) != *epoch)
            .map(|(p, _)| *p)
            .collect();
        for p in gone {
            if let Some((_, resets)) = self.refused.remove(&p) {
                for r in &resets {
                    self.report(r, false);
                }
            }
        }
    }

    fn report(&self, r: &LogReset, on: bool) {
        let key = format!("log_reset/{}/{}/{}", r.group, r.topic, r.partition);
        self.detected
            .with_label_values(&[&r.topic, &r.partition.to_string()])
            .set(i64::from(on));
        if on {
            self.readiness.block(&key, r.to_string());
        } else {
            self.readiness.unblock(&key);
        }
    }
}
