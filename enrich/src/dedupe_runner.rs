//! The Kafka loop around the pure [`DedupeStage`]: one stage per owned partition of
//! `clues.dedupe` (keyed by street, so one writer decides each street's duplicates).
//!
//! Per batch: fold every record in offset order; send the verdict on every placed report to
//! `clues.commands` (the partition the report came from, key = clue id, a command id derived from
//! the clue id) and await the acks; then commit the batch's offsets.
//!
//! On a partition's first record after an assignment its stage is rebuilt by folding the
//! partition from its first retained record up to that record (unless this stage held it and
//! stopped exactly there: then it is the same fold and is kept), without sending anything: the
//! verdicts before it were sent by the previous owner (offsets are committed only after the
//! acks), and the fold decides the rest exactly as the first run would have (see
//! [`crate::dedupe`]). A verdict that is sent twice is one command id: the clue processor
//! applies it once. Records that do not decode go to the DLQ with a reason code and are passed.
//!
//! A partition whose committed offset is beyond its high watermark (the log was reset) is held
//! and reported instead (see [`crate::log_reset`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use gridclue_core::kafka::KafkaSettings;
use gridclue_core::service::Readiness;
use gridclue_core::wire::{
    self, Actor, ActorKind, Command, CommandEnvelope, DlqReason, SCHEMA_VERSION,
};
use gridclue_core::CommandId;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::FutureProducer;
use tokio::sync::watch;

use crate::config::EnrichConfig;
use crate::dedupe::{DedupeConfig, DedupeRecord, DedupeStage, Verdict};
use crate::kafka_loop::{
    next_batch, next_offsets, read_partitions, restart_offsets, send_all, set_aside_revoked,
    Epochs, LoopContext, Outgoing, Refusals, Source,
};
use crate::log_reset;
use crate::metrics::EnrichMetrics;

/// The actor id on verdict commands.
pub const DEDUPE_ACTOR: &str = "enrich-dedupe";

pub struct DedupeRunner {
    pub config: EnrichConfig,
    pub dedupe: DedupeConfig,
    pub metrics: EnrichMetrics,
    pub ready: Arc<AtomicBool>,
    /// How many partitions of the dedupe topic this stage owns right now.
    pub owned_partitions: Arc<AtomicUsize>,
    /// Where partitions held because their log was reset are reported for `/readyz`.
    pub readiness: Readiness,
    stages: HashMap<i32, Held>,
    /// Stages of revoked partitions, reused if the partition comes back exactly where they
    /// stopped.
    revoked: HashMap<i32, Held>,
}

/// A partition's stage: the fold of its records before `next_offset`.
struct Held {
    epoch: u64,
    next_offset: i64,
    stage: DedupeStage,
}

impl DedupeRunner {
    pub fn new(config: EnrichConfig, dedupe: DedupeConfig, metrics: EnrichMetrics) -> Self {
        Self {
            config,
            dedupe,
            metrics,
            ready: Arc::new(AtomicBool::new(false)),
            owned_partitions: Arc::new(AtomicUsize::new(0)),
            readiness: Readiness::default(),
            stages: HashMap::new(),
            revoked: HashMap::new(),
        }
    }

    /// Reports held partitions to `readiness` (shared with the service's `/readyz`).
    pub fn with_readiness(mut self, readiness: Readiness) -> Self {
        self.readiness = readiness;
        self
    }

    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
        let epochs = Arc::new(Epochs::default());
        let consumer: StreamConsumer<LoopContext> = gridclue_core::kafka::consumer_config(
            &self.config.kafka(),
            &self.config.dedupe_group_id,
        )
        .create_with_context(LoopContext {
            epochs: epochs.clone(),
            owned: self.owned_partitions.clone(),
        })
        .context("creating the dedupe consumer")?;
        let producer: FutureProducer = gridclue_core::kafka::producer_config(
            &self.config.kafka(),
            self.config.produce_timeout_ms,
        )
        .create()
        .context("creating the verdict producer")?;
        consumer.subscribe(&[self.config.dedupe_topic.as_str()])?;
        self.ready.store(true, Ordering::SeqCst);
        tracing::info!(topic = %self.config.dedupe_topic, "dedupe stage consuming");
        let mut refusals = Refusals::new(
            &self.config.dedupe_topic,
            self.metrics.log_reset_detected.clone(),
            self.readiness.clone(),
        );
        loop {
            let Some(mut batch) = next_batch(
                &consumer,
                &epochs,
                self.config.batch_max,
                None,
                &mut shutdown,
            )
            .await?
            else {
                break;
            };
            set_aside_revoked(&mut self.stages, &mut self.revoked, &epochs, |h| h.epoch);
            refusals.forget_revoked(&epochs);
            batch.retain(|m| !refusals.contains(m.partition()));
            if batch.is_empty() {
                continue;
            }
            self.refuse_reset(&batch, &epochs, &consumer, &mut refusals)
                .await?;
            batch.retain(|m| !refusals.contains(m.partition()));
            if batch.is_empty() {
                continue;
            }
            self.rebuild_missing(&batch, &epochs).await?;
            let outgoing = self.fold_batch(&batch);
            send_all(&producer, &outgoing).await?;
            self.metrics.open_cases.set(
                self.stages
                    .values()
                    .map(|h| h.stage.open_cases() as i64)
                    .sum(),
            );
            if let Err(e) = consumer.commit(&next_offsets(&batch, |_| None)?, CommitMode::Async) {
                // The next owner starts earlier and sends some verdicts again: harmless.
                tracing::warn!(error = %e, "committing dedupe offsets failed");
            }
        }
        tracing::info!("dedupe stage stopped");
        Ok(())
    }

    /// Folds the batch; returns the verdict commands and DLQ records to send.
    fn fold_batch(&mut self, batch: &[OwnedMessage]) -> Vec<Outgoing> {
        let now = wire::now_ms();
        let mut out = Vec::new();
        let (mut cases, mut duplicates) = (0u64, 0u64);
        for m in batch {
            let held = self
                .stages
                .get_mut(&m.partition())
                .expect("stage rebuilt before its records are folded");
            held.next_offset = m.offset() + 1;
            let record = match DedupeRecord::decode(m.payload().unwrap_or_default()) {
                Ok(r) => r,
                Err(e) => {
                    out.push(self.dlq(m, e.dlq_reason(), e.to_string()));
                    continue;
                }
            };
            let Some(verdict) = held.stage.fold(m.offset(), &record) else {
                continue;
            };
            if verdict.duplicate_of.is_some() {
                duplicates += 1;
            } else {
                cases += 1;
            }
            out.push(self.verdict_command(&verdict, now));
        }
        self.metrics
            .verdicts
            .with_label_values(&["case"])
            .inc_by(cases);
        self.metrics
            .verdicts
            .with_label_values(&["duplicate"])
            .inc_by(duplicates);
        out
    }

    fn verdict_command(&self, verdict: &Verdict, now: u64) -> Outgoing {
        let command = CommandEnvelope {
            v: SCHEMA_VERSION,
            command_id: CommandId::for_dedupe_verdict(verdict.clue_id),
            clue_id: verdict.clue_id,
            issued_at_ms: now,
            actor: Actor {
                kind: ActorKind::System,
                id: DEDUPE_ACTOR.into(),
                group: None,
                scope: None,
            },
            command: Command::DedupeVerdict {
                duplicate_of: verdict.duplicate_of,
            },
        };
        Outgoing {
            topic: self.config.commands_topic.clone(),
            partition: Some(verdict.commands_partition),
            key: Some(verdict.clue_id.to_string()),
            payload: command.encode(),
        }
    }

    fn dlq(&self, m: &OwnedMessage, reason: DlqReason, detail: String) -> Outgoing {
        self.metrics.dlq.with_label_values(&[reason.as_str()]).inc();
        let record = Source::of(m).dlq_record("enrich-dedupe", reason, detail);
        Outgoing::dlq(&self.config.dlq_topic, &record)
    }

    /// Judges every partition the batch has records of and we hold no stage for: one whose
    /// committed offset is beyond its high watermark is refused.
    async fn refuse_reset(
        &mut self,
        batch: &[OwnedMessage],
        epochs: &Epochs,
        consumer: &StreamConsumer<LoopContext>,
        refusals: &mut Refusals,
    ) -> anyhow::Result<()> {
        let missing: Vec<i32> = restart_offsets(batch, |p| self.stages.contains_key(&p))
            .into_keys()
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let read_under: HashMap<i32, u64> = missing.iter().map(|p| (*p, epochs.get(*p))).collect();
        let (kafka, group, topic) = (
            self.config.kafka(),
            self.config.dedupe_group_id.clone(),
            self.config.dedupe_topic.clone(),
        );
        let timeout = Duration::from_millis(self.config.restore_timeout_ms);
        let parts = missing.clone();
        let positions = tokio::task::spawn_blocking(move || {
            log_reset::positions(&kafka, &group, &topic, &parts, timeout)
        })
        .await??;
        for p in missing {
            let (committed, wm) = positions.get(&p).cloned().unwrap_or_default();
            let reset = log_reset::judge_committed(
                &self.config.dedupe_topic,
                &self.config.dedupe_group_id,
                p,
                &committed,
                wm,
                log_reset::ENRICH,
            );
            if let Some(reset) = reset {
                self.revoked.remove(&p);
                refusals.refuse(consumer, p, read_under[&p], vec![reset]);
            }
        }
        Ok(())
    }

    /// Rebuilds the stage of every partition the batch has records of and we hold none for. A
    /// stage of ours that stopped exactly where the partition resumes is the fold a rebuild
    /// would compute (the log does not change), so it is kept instead.
    async fn rebuild_missing(
        &mut self,
        batch: &[OwnedMessage],
        epochs: &Epochs,
    ) -> anyhow::Result<()> {
        let mut missing = restart_offsets(batch, |p| self.stages.contains_key(&p));
        for (p, resume_at) in missing.clone() {
            let Some(mut held) = self.revoked.remove(&p) else {
                continue;
            };
            if held.next_offset == resume_at {
                tracing::info!(partition = p, resume_at, "dedupe stage kept");
                held.epoch = epochs.get(p);
                self.stages.insert(p, held);
                missing.remove(&p);
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let t0 = Instant::now();
        let kafka = self.config.kafka();
        let topic = self.config.dedupe_topic.clone();
        let timeout = Duration::from_millis(self.config.restore_timeout_ms);
        let until = missing.clone();
        let history =
            tokio::task::spawn_blocking(move || read_history(&kafka, &topic, &until, timeout))
                .await??;
        for (p, resume_at) in missing {
            let mut stage = DedupeStage::new(self.dedupe);
            let records = history.get(&p).map(Vec::as_slice).unwrap_or_default();
            for (offset, bytes) in records {
                // Undecodable records went to the DLQ when they were first seen.
                if let Ok(r) = DedupeRecord::decode(bytes) {
                    stage.fold(*offset, &r);
                }
            }
            tracing::info!(
                partition = p,
                resume_at,
                folded = records.len(),
                open_cases = stage.open_cases(),
                elapsed_ms = t0.elapsed().as_millis() as u64,
                "dedupe stage rebuilt"
            );
            self.stages.insert(
                p,
                Held {
                    epoch: epochs.get(p),
                    next_offset: resume_at,
                    stage,
                },
            );
        }
        Ok(())
    }
}

/// Per partition: (offset, payload) of its records, in offset order.
type History = HashMap<i32, Vec<(i64, Vec<u8>)>>;

/// Per partition, every retained record before the given offset.
fn read_history(
    kafka: &KafkaSettings,
    topic: &str,
    until: &BTreeMap<i32, i64>,
    timeout: Duration,
) -> anyhow::Result<History> {
    let mut out = History::new();
    let ranges: Vec<(i32, Option<i64>)> = until.iter().map(|(p, o)| (*p, Some(*o))).collect();
    read_partitions(
        kafka,
        topic,
        "gridclue-enrich-dedupe-rebuild",
        &ranges,
        timeout,
        |m| {
            out.entry(m.partition())
                .or_default()
                .push((m.offset(), m.payload().unwrap_or_default().to_vec()));
        },
    )?;
    Ok(out)
}
