//! Commits the consumer group's offsets, and only for output that is durable.
//!
//! The loop hands a batch's offsets here after the [`crate::writer`] has had every fact of it
//! acknowledged by ClickHouse and every undecodable record by the DLQ's broker: a crash before
//! the commit re-reads the batch (and skips what is stored), a crash after it loses nothing.
//! Offsets of partitions the sink no longer owns are left to their new owner.

use std::collections::BTreeMap;
use std::sync::Arc;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::metrics::SinkMetrics;
use crate::pipeline::SinkContext;

/// Commits offsets of durable batches (a consumer group member); a replay commits nothing.
pub(crate) enum Acknowledger {
    Group {
        consumer: Arc<BaseConsumer<SinkContext>>,
        topic: Arc<str>,
        metrics: SinkMetrics,
        /// Once it fires the commit must land before the consumer closes.
        cancel: CancellationToken,
    },
    Replay,
}

impl Acknowledger {
    /// Commits, for each partition still owned, the offset after the highest one read.
    pub(crate) fn commit(&self, durable: &BTreeMap<i32, i64>, owns: impl Fn(i32) -> bool) {
        let Acknowledger::Group {
            consumer,
            topic,
            metrics,
            cancel,
        } = self
        else {
            return;
        };
        let mut tpl = TopicPartitionList::new();
        for (p, o) in durable {
            if owns(*p) {
                if let Err(e) = tpl.add_partition_offset(topic, *p, Offset::Offset(o + 1)) {
                    tracing::warn!(error = %e, "cannot build commit");
                }
            }
        }
        if tpl.count() == 0 {
            return;
        }
        let mode = if cancel.is_cancelled() {
            CommitMode::Sync
        } else {
            CommitMode::Async
        };
        if let Err(e) = consumer.commit(&tpl, mode) {
            metrics.errors.with_label_values(&["kafka_commit"]).inc();
            tracing::warn!(error = %e, "offset commit failed (the batch is re-read and skipped)");
        }
    }
}
