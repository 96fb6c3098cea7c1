//! The Kafka loop around the pure [`Processor`]: consume commands in batches, decide, produce
//! facts (or DLQ records), and commit the batch's offsets only after every output is
//! acknowledged.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::future::join_all;
use gridclue_core::wire::{self, CommandEnvelope, DlqReason, DlqRecord, SCHEMA_VERSION};
use gridclue_core::ClueId;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use crate::config::EnrichConfig;
use crate::metrics::EnrichMetrics;
use crate::processor::{key_matches, ClueState, Output, Processor};

struct Outgoing {
    topic: String,
    key: Option<String>,
    payload: Vec<u8>,
}

pub struct Runner {
    pub config: EnrichConfig,
    pub processor: Processor,
    pub metrics: EnrichMetrics,
    pub ready: Arc<AtomicBool>,
    state: HashMap<ClueId, ClueState>,
}

impl Runner {
    pub fn new(config: EnrichConfig, processor: Processor, metrics: EnrichMetrics) -> Self {
        Self {
            config,
            processor,
            metrics,
            ready: Arc::new(AtomicBool::new(false)),
            state: HashMap::new(),
        }
    }

    pub async fn run(
        mut self,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let consumer: StreamConsumer = gridclue_core::kafka::consumer_config(
            &self.config.kafka_brokers,
            &self.config.group_id,
        )
        .create()
        .context("creating the commands consumer")?;
        consumer.subscribe(&[self.config.commands_topic.as_str()])?;
        let producer: FutureProducer = gridclue_core::kafka::producer_config(
            &self.config.kafka_brokers,
            self.config.produce_timeout_ms,
        )
        .create()
        .context("creating the events producer")?;
        self.ready.store(true, Ordering::SeqCst);
        tracing::info!(topic = %self.config.commands_topic, "consuming commands");
        loop {
            let first = tokio::select! {
                _ = shutdown.changed() => break,
                m = consumer.recv() => m,
            };
            let mut batch = vec![first?.detach()];
            while batch.len() < self.config.batch_max {
                match tokio::time::timeout(Duration::from_millis(2), consumer.recv()).await {
                    Ok(m) => batch.push(m?.detach()),
                    Err(_) => break,
                }
            }
            let outgoing: Vec<Outgoing> = batch.iter().filter_map(|m| self.handle(m)).collect();
            let sends = outgoing.iter().map(|o| {
                let mut record = FutureRecord::to(&o.topic).payload(&o.payload);
                if let Some(k) = &o.key {
                    record = record.key(k);
                }
                producer.send(record, Duration::from_secs(5))
            });
            for result in join_all(sends).await {
                if let Err((e, _)) = result {
                    // Not committing means the batch is consumed again after a restart; the
                    // facts' (clue_id, seq) identities make the repeat harmless downstream.
                    anyhow::bail!("producing an output failed: {e}");
                }
            }
            let now = wire::now_ms();
            for m in &batch {
                if let Ok(cmd) = CommandEnvelope::decode(m.payload().unwrap_or_default()) {
                    let age_ms = now.saturating_sub(cmd.issued_at_ms);
                    self.metrics.processing.observe(age_ms as f64 / 1000.0);
                }
            }
            consumer.commit(&next_offsets(&batch)?, CommitMode::Async)?;
        }
        tracing::info!("enrich loop stopped");
        Ok(())
    }

    fn handle(&mut self, m: &OwnedMessage) -> Option<Outgoing> {
        let payload = m.payload().unwrap_or_default();
        let cmd = match CommandEnvelope::decode(payload) {
            Ok(cmd) if key_matches(m.key(), cmd.clue_id) => cmd,
            Ok(_) => {
                return Some(self.dlq(
                    m,
                    DlqReason::KeyMismatch,
                    "record key is not the clue id".into(),
                ))
            }
            Err(e) => return Some(self.dlq(m, e.dlq_reason(), e.to_string())),
        };
        self.metrics
            .commands
            .with_label_values(&[cmd.command.action().as_str()])
            .inc();
        let decision = self
            .processor
            .decide(self.state.get(&cmd.clue_id), &cmd, wire::now_ms());
        if let Some(kind) = decision.assignment {
            self.metrics
                .assignments
                .with_label_values(&[kind.as_str()])
                .inc();
        }
        if let Some(s) = decision.state {
            self.state.insert(cmd.clue_id, s);
        }
        match decision.output {
            Output::Event(event) => {
                self.metrics.events.inc();
                Some(Outgoing {
                    topic: self.config.events_topic.clone(),
                    key: Some(cmd.clue_id.to_string()),
                    payload: event.encode(),
                })
            }
            Output::Rejected { reason, detail } => {
                self.metrics
                    .rejections
                    .with_label_values(&[reason.as_str()])
                    .inc();
                Some(self.dlq(m, reason, detail))
            }
            Output::Repeat => None,
        }
    }

    fn dlq(&self, m: &OwnedMessage, reason: DlqReason, detail: String) -> Outgoing {
        self.metrics.dlq.with_label_values(&[reason.as_str()]).inc();
        let (payload, payload_is_hex) = DlqRecord::payload_of(m.payload().unwrap_or_default());
        let record = DlqRecord {
            v: SCHEMA_VERSION,
            reason,
            detail,
            stage: "enrich".into(),
            source_topic: m.topic().to_owned(),
            source_partition: m.partition(),
            source_offset: m.offset(),
            key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
            payload,
            payload_is_hex,
            at_ms: wire::now_ms(),
        };
        Outgoing {
            topic: self.config.dlq_topic.clone(),
            key: record.key.clone(),
            payload: record.encode(),
        }
    }
}

/// Per partition, the offset after the batch's last message.
fn next_offsets(batch: &[OwnedMessage]) -> anyhow::Result<TopicPartitionList> {
    let mut highest: HashMap<(String, i32), i64> = HashMap::new();
    for m in batch {
        let e = highest
            .entry((m.topic().to_owned(), m.partition()))
            .or_insert(m.offset());
        *e = (*e).max(m.offset());
    }
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), offset) in highest {
        tpl.add_partition_offset(&topic, partition, Offset::Offset(offset + 1))?;
    }
    Ok(tpl)
}
