//! When a batch is flushed: the pure part of the sink's loop (no I/O; the time is passed in).
//!
//! A batch collects the facts read from the consumer, the DLQ records of records that cannot
//! be projected, and per partition the highest offset read (committed once the batch is
//! durable, including the offsets of records skipped as already stored). It is flushed when
//! full (rows or bytes), or once its first record has waited `batch_linger_ms` and
//! `min_insert_interval_ms` has passed since the previous flush started: fresh at low rates,
//! few inserts at high rates.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use gridclue_core::wire::DlqRecord;

use crate::SinkConfig;

/// Something in a batch that came from a partition.
pub(crate) trait FromPartition {
    fn partition(&self) -> i32;
}

impl FromPartition for DlqRecord {
    fn partition(&self) -> i32 {
        self.source_partition
    }
}

/// What one partition contributed to the batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Span {
    last_offset: i64,
    bytes: usize,
}

/// The records read since the last flush.
#[derive(Debug)]
pub(crate) struct Batch<F> {
    facts: Vec<F>,
    dlq: Vec<DlqRecord>,
    spans: BTreeMap<i32, Span>,
    bytes: usize,
    first_at: Option<Instant>,
}

impl<F> Default for Batch<F> {
    fn default() -> Self {
        Self {
            facts: Vec::new(),
            dlq: Vec::new(),
            spans: BTreeMap::new(),
            bytes: 0,
            first_at: None,
        }
    }
}

/// A batch taken for flushing.
pub(crate) struct Drained<F> {
    pub facts: Vec<F>,
    pub dlq: Vec<DlqRecord>,
    /// Highest offset read per partition (committed + 1 once the rest is durable).
    pub offsets: BTreeMap<i32, i64>,
}

impl<F> Batch<F> {
    /// Facts and DLQ records.
    pub fn rows(&self) -> usize {
        self.facts.len() + self.dlq.len()
    }

    /// Nothing read: nothing to write, nothing to commit.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }
}

impl<F: FromPartition> Batch<F> {
    /// Notes that `offset` of partition `p` was read at `now`, whatever becomes of the record
    /// (a record skipped as already stored moves the committed offset on too).
    pub fn read(&mut self, p: i32, offset: i64, now: Instant) {
        self.first_at.get_or_insert(now);
        self.spans
            .entry(p)
            .and_modify(|s| s.last_offset = s.last_offset.max(offset))
            .or_insert(Span {
                last_offset: offset,
                bytes: 0,
            });
    }

    /// Adds a fact of a partition already [`read`](Self::read), weighing `bytes`.
    pub fn push_fact(&mut self, fact: F, bytes: usize) {
        self.add_bytes(fact.partition(), bytes);
        self.facts.push(fact);
    }

    /// Adds the DLQ record of a record already [`read`](Self::read), weighing `bytes`.
    pub fn push_dlq(&mut self, record: DlqRecord, bytes: usize) {
        self.add_bytes(record.partition(), bytes);
        self.dlq.push(record);
    }

    fn add_bytes(&mut self, p: i32, bytes: usize) {
        self.bytes += bytes;
        if let Some(span) = self.spans.get_mut(&p) {
            span.bytes += bytes;
        }
    }

    /// Forgets what was read from partitions revoked mid-batch: their next owner reads it again
    /// from the committed offset, so none of it may be written or committed here.
    pub fn revoke(&mut self, gone: &[i32]) {
        self.facts.retain(|f| !gone.contains(&f.partition()));
        self.dlq.retain(|d| !gone.contains(&d.partition()));
        for p in gone {
            if let Some(span) = self.spans.remove(p) {
                self.bytes -= span.bytes;
            }
        }
        if self.is_empty() {
            self.first_at = None;
        }
    }

    /// Takes the batch for flushing, leaving an empty one.
    pub fn drain(&mut self) -> Drained<F> {
        let batch = std::mem::take(self);
        Drained {
            facts: batch.facts,
            dlq: batch.dlq,
            offsets: batch
                .spans
                .into_iter()
                .map(|(p, s)| (p, s.last_offset))
                .collect(),
        }
    }
}

/// The flush rule.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Policy {
    pub max_rows: usize,
    pub max_bytes: usize,
    pub linger: Duration,
    pub min_interval: Duration,
}

impl Policy {
    pub fn new(cfg: &SinkConfig) -> Self {
        Self {
            max_rows: cfg.batch_max_rows,
            max_bytes: cfg.batch_max_bytes,
            linger: Duration::from_millis(cfg.batch_linger_ms),
            min_interval: Duration::from_millis(cfg.min_insert_interval_ms),
        }
    }

    /// Flush now, whatever the time.
    pub fn is_full<F>(&self, batch: &Batch<F>) -> bool {
        batch.rows() >= self.max_rows || batch.bytes >= self.max_bytes
    }

    /// When a batch that is not full is due, given when the previous flush started; `None`
    /// while it holds nothing.
    pub fn due_at<F>(&self, batch: &Batch<F>, last_flush: Instant) -> Option<Instant> {
        let lingered = batch.first_at? + self.linger;
        Some(lingered.max(last_flush + self.min_interval))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gridclue_core::wire::{DlqReason, SCHEMA_VERSION};

    #[derive(Debug, PartialEq)]
    struct Fact {
        partition: i32,
        offset: i64,
    }

    impl FromPartition for Fact {
        fn partition(&self) -> i32 {
            self.partition
        }
    }

    fn policy() -> Policy {
        Policy {
            max_rows: 3,
            max_bytes: 1000,
            linger: Duration::from_millis(200),
            min_interval: Duration::from_millis(500),
        }
    }

    fn add(batch: &mut Batch<Fact>, partition: i32, offset: i64, bytes: usize, now: Instant) {
        batch.read(partition, offset, now);
        batch.push_fact(Fact { partition, offset }, bytes);
    }

    fn dlq(partition: i32, offset: i64) -> DlqRecord {
        DlqRecord {
            v: SCHEMA_VERSION,
            reason: DlqReason::KeyMismatch,
            detail: "test".into(),
            stage: "sink".into(),
            source_topic: "clues.events".into(),
            source_partition: partition,
            source_offset: offset,
            key: None,
            payload: "{}".into(),
            payload_is_hex: false,
            at_ms: 0,
        }
    }

    #[test]
    fn an_empty_batch_is_never_due_nor_full() {
        let batch = Batch::<Fact>::default();
        let t0 = Instant::now();
        assert!(batch.is_empty());
        assert_eq!(policy().due_at(&batch, t0), None);
        assert!(!policy().is_full(&batch));
    }

    #[test]
    fn a_batch_is_due_once_its_first_record_has_lingered() {
        let t0 = Instant::now();
        let long_ago = t0 - Duration::from_secs(60);
        let mut batch = Batch::default();
        add(&mut batch, 0, 7, 10, t0);
        add(&mut batch, 0, 8, 10, t0 + Duration::from_millis(150));
        assert_eq!(
            policy().due_at(&batch, long_ago),
            Some(t0 + Duration::from_millis(200))
        );
    }

    #[test]
    fn flushes_that_are_not_full_are_spaced_from_the_previous_start() {
        let t0 = Instant::now();
        let mut batch = Batch::default();
        add(&mut batch, 0, 1, 10, t0);
        let last_flush = t0 - Duration::from_millis(100);
        assert_eq!(
            policy().due_at(&batch, last_flush),
            Some(t0 + Duration::from_millis(400))
        );
    }

    #[test]
    fn a_batch_is_full_at_the_row_limit_counting_dlq_records() {
        let t0 = Instant::now();
        let mut batch = Batch::default();
        add(&mut batch, 0, 1, 10, t0);
        batch.read(1, 5, t0);
        batch.push_dlq(dlq(1, 5), 10);
        assert!(!policy().is_full(&batch));
        add(&mut batch, 1, 6, 10, t0);
        assert_eq!(batch.rows(), 3);
        assert!(policy().is_full(&batch));
    }

    #[test]
    fn a_batch_is_full_at_the_byte_limit() {
        let t0 = Instant::now();
        let mut batch = Batch::default();
        add(&mut batch, 0, 1, 999, t0);
        assert!(!policy().is_full(&batch));
        add(&mut batch, 0, 2, 1, t0);
        assert!(policy().is_full(&batch));
    }

    #[test]
    fn skipped_records_are_committed_with_the_batch() {
        let t0 = Instant::now();
        let mut batch = Batch::<Fact>::default();
        batch.read(2, 40, t0);
        batch.read(2, 41, t0);
        assert!(!batch.is_empty());
        assert_eq!(batch.rows(), 0);
        let drained = batch.drain();
        assert_eq!(drained.offsets, BTreeMap::from([(2, 41)]));
        assert!(drained.facts.is_empty());
    }

    #[test]
    fn the_committed_offset_is_the_highest_read_per_partition() {
        let t0 = Instant::now();
        let mut batch = Batch::default();
        add(&mut batch, 0, 9, 1, t0);
        add(&mut batch, 0, 4, 1, t0);
        add(&mut batch, 3, 2, 1, t0);
        let drained = batch.drain();
        assert_eq!(drained.offsets, BTreeMap::from([(0, 9), (3, 2)]));
        assert_eq!(drained.facts.len(), 3);
        assert!(batch.is_empty());
        assert_eq!(policy().due_at(&batch, t0), None);
    }

    #[test]
    fn a_partition_revoked_mid_batch_is_neither_written_nor_committed() {
        let t0 = Instant::now();
        let mut batch = Batch::default();
        add(&mut batch, 0, 1, 600, t0);
        add(&mut batch, 1, 1, 300, t0);
        batch.read(1, 2, t0);
        batch.push_dlq(dlq(1, 2), 200);
        assert!(policy().is_full(&batch)); // 1 100 bytes
        batch.revoke(&[1]);
        assert!(
            !policy().is_full(&batch),
            "the revoked bytes no longer count"
        );
        assert_eq!(batch.rows(), 1);
        let drained = batch.drain();
        assert_eq!(drained.offsets, BTreeMap::from([(0, 1)]));
        assert_eq!(
            drained.facts,
            vec![Fact {
                partition: 0,
                offset: 1
            }]
        );
        assert!(drained.dlq.is_empty());
    }

    #[test]
    fn a_batch_emptied_by_a_revocation_is_not_due() {
        let t0 = Instant::now();
        let mut batch = Batch::default();
        add(&mut batch, 4, 1, 10, t0);
        batch.revoke(&[4]);
        assert!(batch.is_empty());
        assert_eq!(policy().due_at(&batch, t0 - Duration::from_secs(60)), None);
    }
}
