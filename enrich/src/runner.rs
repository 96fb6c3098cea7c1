//! The Kafka loop around the pure [`Processor`].
//!
//! Per batch of commands:
//!
//! 1. decide every command in order against the per-clue state of its partition;
//! 2. write the new state of every clue the batch touched to the `clues.state` changelog
//!    (compacted; key = clue id; **the same partition number** as the command), each record
//!    carrying the batch's outputs for that clue (an outbox), and await the acks;
//! 3. produce the facts (`clues.events`), rejections (`clues.dlq`), the verdicts on client
//!    transitions (`clues.outcomes`) and what the dedupe stage must learn (`clues.dedupe`, keyed
//!    by street), and await the acks;
//! 4. commit the batch's offsets.
//!
//! Between batches, and at least every `overdue_tick_ms` when no command comes, the loop looks
//! for deadlines that passed ([`Processor::overdue`]) in every partition it owns (restoring the
//! state of owned partitions that had no command since their assignment) and emits their
//! `overdue` facts the same way: state (with the fact in its outbox) first, then the fact. The
//! state remembers the deadline the fact was emitted for, so a restart or a replay never emits it
//! again; the outbox entry carries the partition's next command offset, so a crash between the
//! two writes re-emits the same fact (same seq) after the restart.
//!
//! On a partition's first message after an assignment (start, restart, rebalance) its state is
//! restored by reading its changelog partition to the end. Commands at or below a clue's
//! `applied_offset` were handled by a previous owner and are skipped; outbox entries at or after
//! the restart offset are produced again (a crash may have hit between steps 2 and 3). So every
//! decision is taken once and persisted before anything is visible, a replay never takes a
//! decision again, and the worst a crash can do is emit an identical copy of a fact
//! (same `(clue_id, seq)`, same content), which downstream dedupes by identity. No Kafka
//! transactions are needed (the mock cluster does not implement them faithfully).
//!
//! Undecodable records and refusals of commands for clues that do not exist go to the DLQ
//! without a state record; after a crash they may appear there twice (at-least-once).
//!
//! Messages fetched before a partition was revoked (during batch collection) are dropped, not
//! processed: the new owner processes them from the last committed offset. A partition that
//! comes back keeps its in-memory state if its changelog still ends where our last write left
//! it; otherwise it is restored from the changelog.
//!
//! Positions: a clue's `applied_offset` holds the position of its last handled command, the
//! command's offset plus the partition's base (0 until a rebase, see [`crate::log_reset`]),
//! and every commit carries the base and the changelog's end in its metadata. Before a
//! partition is consumed after an assignment, the committed offset, the state and the
//! changelog are judged against the logs' watermarks; a partition whose log was reset is held.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use gridclue_core::kafka::KafkaSettings;
use gridclue_core::service::Readiness;
use gridclue_core::wire::{
    self, CommandEnvelope, DlqReason, DlqRecord, EventEnvelope, OutcomeRecord, Verdict,
};
use gridclue_core::ClueId;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::FutureProducer;
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::config::EnrichConfig;
use crate::geoindex::GeoIndex;
use crate::kafka_loop::{
    next_batch, next_offsets, read_partitions, restart_offsets, send_all, set_aside_revoked,
    Epochs, LoopContext, Outgoing, Refusals, Source,
};
use crate::log_reset::{self, CommitNote, ProcessorEvidence, ProcessorLogs, Watermarks};
use crate::metrics::EnrichMetrics;
use crate::processor::{key_matches, ClueState, DecideCtx, Forward, Output, Processor};

/// Version of [`StateRecord`].
pub const STATE_VERSION: u16 = 1;

/// A record of the `clues.state` changelog: a clue's state after a batch, and what the batch
/// emitted for it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StateRecord {
    pub v: u16,
    pub clue_id: ClueId,
    pub state: ClueState,
    #[serde(default)]
    pub outbox: Vec<OutboxEntry>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// Position of the command in its partition of the commands topic (its offset plus the
    /// partition's base).
    pub offset: i64,
    pub output: OutboxOutput,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "record", rename_all = "snake_case")]
pub enum OutboxOutput {
    Event(EventEnvelope),
    Dlq(DlqRecord),
    Dedupe(Forward),
    Outcome(OutcomeRecord),
}

struct PartitionState {
    epoch: u64,
    /// Added to a command's offset to give its position (see [`CommitNote::base`]).
    base: i64,
    clues: HashMap<ClueId, ClueState>,
    /// How many of the clues wait for their dedupe verdict.
    pending: usize,
    /// The changelog partition's end after our last write (or after the restore).
    changelog_end: i64,
    /// The offset after the last command handled (where a restart would resume).
    next_offset: i64,
    /// The earliest deadline of an open clue that has no overdue fact yet (none: no deadline to
    /// watch), so a tick looks at the clues only when one may be due.
    next_due: Option<u64>,
}

fn earliest(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

pub struct Runner {
    pub config: EnrichConfig,
    pub processor: Processor,
    pub metrics: EnrichMetrics,
    pub ready: Arc<AtomicBool>,
    /// How many partitions of the commands topic this processor owns right now.
    pub owned_partitions: Arc<AtomicUsize>,
    /// Where partitions held because a log was reset are reported for `/readyz`.
    pub readiness: Readiness,
    maps: Option<watch::Receiver<Arc<GeoIndex>>>,
    partitions: HashMap<i32, PartitionState>,
    /// State of revoked partitions, reused if the partition comes back and nobody wrote to its
    /// changelog in between.
    revoked: HashMap<i32, PartitionState>,
}

impl Runner {
    pub fn new(config: EnrichConfig, processor: Processor, metrics: EnrichMetrics) -> Self {
        Self {
            config,
            processor,
            metrics,
            ready: Arc::new(AtomicBool::new(false)),
            owned_partitions: Arc::new(AtomicUsize::new(0)),
            readiness: Readiness::default(),
            maps: None,
            partitions: HashMap::new(),
            revoked: HashMap::new(),
        }
    }

    /// Reports held partitions to `readiness` (shared with the service's `/readyz`).
    pub fn with_readiness(mut self, readiness: Readiness) -> Self {
        self.readiness = readiness;
        self
    }

    /// Maps published on this channel replace the processor's map between batches.
    pub fn with_map_updates(mut self, maps: watch::Receiver<Arc<GeoIndex>>) -> Self {
        self.maps = Some(maps);
        self
    }

    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
        let epochs = Arc::new(Epochs::default());
        let consumer: StreamConsumer<LoopContext> =
            gridclue_core::kafka::consumer_config(&self.config.kafka(), &self.config.group_id)
                .create_with_context(LoopContext {
                    epochs: epochs.clone(),
                    owned: self.owned_partitions.clone(),
                })
                .context("creating the commands consumer")?;
        let producer: FutureProducer = gridclue_core::kafka::producer_config(
            &self.config.kafka(),
            self.config.produce_timeout_ms,
        )
        .create()
        .context("creating the events producer")?;
        self.check_topics().await?;
        consumer.subscribe(&[self.config.commands_topic.as_str()])?;
        self.ready.store(true, Ordering::SeqCst);
        tracing::info!(topic = %self.config.commands_topic, "consuming commands");
        let tick = Duration::from_millis(self.config.overdue_tick_ms.max(10));
        let mut last_tick = Instant::now();
        let mut refusals = Refusals::new(
            &self.config.commands_topic,
            self.metrics.log_reset_detected.clone(),
            self.readiness.clone(),
        );
        loop {
            let Some(mut batch) = next_batch(
                &consumer,
                &epochs,
                self.config.batch_max,
                Some(tick),
                &mut shutdown,
            )
            .await?
            else {
                break;
            };
            // The state of partitions that may have had another owner since a revocation.
            set_aside_revoked(&mut self.partitions, &mut self.revoked, &epochs, |ps| {
                ps.epoch
            });
            refusals.forget_revoked(&epochs);
            batch.retain(|m| !refusals.contains(m.partition()));
            if last_tick.elapsed() >= tick {
                self.emit_overdue(&epochs, &producer, &consumer, &mut refusals)
                    .await?;
                last_tick = Instant::now();
            }
            if batch.is_empty() {
                continue;
            }
            // A reloaded map applies from the next batch on.
            if let Some(maps) = &mut self.maps {
                if maps.has_changed().unwrap_or(false) {
                    self.processor.index = maps.borrow_and_update().clone();
                    tracing::info!(
                        map_version = self.processor.index.map_version(),
                        "district map replaced"
                    );
                }
            }
            self.restore_missing(&batch, &epochs, &producer, &consumer, &mut refusals)
                .await?;
            batch.retain(|m| !refusals.contains(m.partition()));
            if batch.is_empty() {
                continue;
            }
            self.process_batch(&batch, &producer).await?;
            let note = |p: i32| {
                self.partitions.get(&p).map(|ps| {
                    CommitNote {
                        base: ps.base,
                        state_end: Some(ps.changelog_end),
                        resend_from: None,
                    }
                    .encode()
                })
            };
            if let Err(e) = consumer.commit(&next_offsets(&batch, note)?, CommitMode::Async) {
                // The next owner starts from an older offset: its commands are recognised as
                // handled (applied_offset) and nothing is decided twice.
                tracing::warn!(error = %e, "committing offsets failed");
            }
        }
        tracing::info!("enrich loop stopped");
        Ok(())
    }

    /// Checks that the changelog can hold every commands partition at the same number, and that
    /// the dedupe topic exists.
    async fn check_topics(&self) -> anyhow::Result<()> {
        let kafka = self.config.kafka();
        let (commands, state, dedupe, outcomes) = (
            self.config.commands_topic.clone(),
            self.config.state_topic.clone(),
            self.config.dedupe_topic.clone(),
            self.config.outcomes_topic.clone(),
        );
        let timeout = Duration::from_millis(self.config.restore_timeout_ms.min(30_000));
        tokio::task::spawn_blocking(move || {
            let client: BaseConsumer = gridclue_core::kafka::client_config(&kafka)
                .create()
                .context("creating a metadata client")?;
            let count = |topic: &str| -> anyhow::Result<usize> {
                let md = client
                    .fetch_metadata(Some(topic), timeout)
                    .with_context(|| format!("fetching metadata of {topic}"))?;
                Ok(md
                    .topics()
                    .iter()
                    .find(|t| t.name() == topic)
                    .map_or(0, |t| t.partitions().len()))
            };
            let (nc, ns) = (count(&commands)?, count(&state)?);
            if ns < nc {
                anyhow::bail!(
                    "state topic {state} has {ns} partitions, fewer than the {nc} of {commands}: \
                     create it with at least {nc} partitions (cleanup.policy=compact)"
                );
            }
            // Reports would wait for their verdicts forever.
            if count(&dedupe)? == 0 {
                anyhow::bail!(
                    "dedupe topic {dedupe} does not exist: create it (keyed by street, retention \
                     longer than the dedupe window plus a day)"
                );
            }
            // Clients waiting for their transitions would time out on every one.
            if count(&outcomes)? == 0 {
                anyhow::bail!(
                    "outcomes topic {outcomes} does not exist: create it (keyed by clue id, a \
                     day's retention is plenty)"
                );
            }
            Ok(())
        })
        .await?
    }

    /// Restores (or keeps) the state of every partition the batch has commands of and we hold
    /// none for, after judging the partition's logs; a partition whose log was reset is refused.
    async fn restore_missing(
        &mut self,
        batch: &[OwnedMessage],
        epochs: &Epochs,
        producer: &FutureProducer,
        consumer: &StreamConsumer<LoopContext>,
        refusals: &mut Refusals,
    ) -> anyhow::Result<()> {
        let missing = restart_offsets(batch, |p| self.partitions.contains_key(&p));
        self.restore(missing, epochs, producer, consumer, refusals)
            .await
    }

    /// Restores the state of partitions (each with the offset consumption (re)starts at),
    /// reusing what we held where nobody wrote to the changelog since, after judging each
    /// partition's logs; a partition whose log was reset is refused.
    async fn restore(
        &mut self,
        mut missing: BTreeMap<i32, i64>,
        epochs: &Epochs,
        producer: &FutureProducer,
        consumer: &StreamConsumer<LoopContext>,
        refusals: &mut Refusals,
    ) -> anyhow::Result<()> {
        if missing.is_empty() {
            return Ok(());
        }
        // The batch was read under these epochs: a refusal is forgotten if the partition is
        // revoked while it is judged.
        let read_under: HashMap<i32, u64> = missing.keys().map(|p| (*p, epochs.get(*p))).collect();
        let t0 = Instant::now();
        let kafka = self.config.kafka();
        let topic = self.config.state_topic.clone();
        let timeout = Duration::from_millis(self.config.restore_timeout_ms);
        let positions = {
            let (k, g, t) = (
                kafka.clone(),
                self.config.group_id.clone(),
                self.config.commands_topic.clone(),
            );
            let parts: Vec<i32> = missing.keys().copied().collect();
            tokio::task::spawn_blocking(move || log_reset::positions(&k, &g, &t, &parts, timeout))
                .await??
        };
        let committed = |p: i32| positions.get(&p).cloned().unwrap_or_default();
        // Candidates: the state, the changelog's watermarks, and (restored ones) the outbox.
        let mut found: BTreeMap<i32, (PartitionState, Watermarks, Option<Vec<OutboxEntry>>)> =
            BTreeMap::new();
        // A partition that comes back whose changelog nobody wrote to since we had it, with
        // the base we had: our state is current (every output of ours was acknowledged before
        // we let it go).
        if !self.revoked.is_empty() {
            let cached: Vec<(i32, i64)> = missing
                .keys()
                .filter_map(|p| self.revoked.get(p).map(|ps| (*p, ps.changelog_end)))
                .collect();
            let (k, t) = (kafka.clone(), topic.clone());
            let unchanged =
                tokio::task::spawn_blocking(move || changelog_unchanged(&k, &t, &cached, timeout))
                    .await??;
            for (p, state_wm) in unchanged {
                let same_base = self
                    .revoked
                    .get(&p)
                    .is_some_and(|ps| ps.base == committed(p).0.note.base);
                if let Some(mut ps) = self.revoked.remove(&p).filter(|_| same_base) {
                    ps.epoch = epochs.get(p);
                    missing.remove(&p);
                    found.insert(p, (ps, state_wm, None));
                }
            }
            for p in missing.keys() {
                self.revoked.remove(p);
            }
        }
        if !missing.is_empty() {
            let parts: Vec<i32> = missing.keys().copied().collect();
            let (restored, watermarks) = tokio::task::spawn_blocking(move || {
                read_changelog(&kafka, &topic, &parts, timeout)
            })
            .await??;
            for (&p, &from_offset) in &missing {
                let records = restored.get(&p).cloned().unwrap_or_default();
                let state_wm = watermarks.get(&p).copied().unwrap_or((0, 0));
                let base = committed(p).0.note.base;
                let mut ps = PartitionState {
                    epoch: epochs.get(p),
                    base,
                    pending: records
                        .values()
                        .filter(|r| r.state.pending.is_some())
                        .count(),
                    changelog_end: state_wm.1,
                    clues: HashMap::with_capacity(records.len()),
                    next_offset: base + from_offset,
                    next_due: None,
                };
                let mut outbox = Vec::new();
                for (id, rec) in records {
                    outbox.extend(rec.outbox);
                    ps.next_due = earliest(ps.next_due, rec.state.overdue_due_at());
                    ps.clues.insert(id, rec.state);
                }
                found.insert(p, (ps, state_wm, Some(outbox)));
            }
        }
        let logs = ProcessorLogs {
            commands_topic: &self.config.commands_topic,
            state_topic: &self.config.state_topic,
            group: &self.config.group_id,
        };
        let mut resend = Vec::new();
        for (p, (ps, state_wm, outbox)) in found {
            let (committed, commands_wm) = committed(p);
            let evidence = ProcessorEvidence {
                committed: committed.clone(),
                commands: commands_wm,
                state: state_wm,
                max_applied: max_applied_of(ps.clues.values()),
            };
            let resets = log_reset::judge_processor(&logs, p, &evidence);
            if !resets.is_empty() {
                refusals.refuse(consumer, p, read_under[&p], resets);
                continue;
            }
            tracing::info!(
                partition = p,
                clues = ps.clues.len(),
                base = ps.base,
                restored = outbox.is_some(),
                "partition state ready"
            );
            if let Some(outbox) = outbox {
                // Outbox entries of commands at or after the restart position (or the position
                // a rebase recorded): a crash may have hit between their state and their
                // outputs.
                let first = ps.base + missing.get(&p).copied().unwrap_or(0);
                let from = committed.note.resend_from.unwrap_or(first);
                for entry in outbox.iter().filter(|e| e.offset >= from) {
                    resend.push(self.outgoing(&entry.output));
                }
            }
            self.partitions.insert(p, ps);
        }
        if !resend.is_empty() {
            tracing::info!(records = resend.len(), "re-emitting outbox records");
        }
        send_all(producer, &resend).await?;
        tracing::debug!(elapsed_ms = t0.elapsed().as_millis() as u64, "restore done");
        Ok(())
    }

    async fn process_batch(
        &mut self,
        batch: &[OwnedMessage],
        producer: &FutureProducer,
    ) -> anyhow::Result<()> {
        let now = wire::now_ms();
        let mut touched: BTreeMap<(i32, ClueId), Vec<OutboxEntry>> = BTreeMap::new();
        let mut outputs: Vec<Outgoing> = Vec::new();
        let mut issued = Vec::with_capacity(batch.len());
        for m in batch {
            if let Some(t) = self.handle(m, now, &mut touched, &mut outputs) {
                issued.push(t);
            }
        }
        // 2. State (with outbox) first…
        let mut states = Vec::with_capacity(touched.len());
        for ((p, id), outbox) in touched {
            let Some(state) = self.partitions.get(&p).and_then(|ps| ps.clues.get(&id)) else {
                continue;
            };
            let record = StateRecord {
                v: STATE_VERSION,
                clue_id: id,
                state: state.clone(),
                outbox,
            };
            states.push(Outgoing {
                topic: self.config.state_topic.clone(),
                partition: Some(p),
                key: Some(id.to_string()),
                payload: serde_json::to_vec(&record).expect("state records serialize"),
            });
        }
        for (p, offset) in send_all(producer, &states).await? {
            if let Some(ps) = self.partitions.get_mut(&p) {
                ps.changelog_end = ps.changelog_end.max(offset + 1);
            }
        }
        // 3. …then what the world sees.
        send_all(producer, &outputs).await?;
        let acked = wire::now_ms();
        for t in issued {
            self.metrics
                .processing
                .observe(acked.saturating_sub(t) as f64 / 1000.0);
        }
        self.metrics
            .pending_clues
            .set(self.partitions.values().map(|ps| ps.pending as i64).sum());
        Ok(())
    }

    /// Handles one command; returns its issue time when it was decided.
    fn handle(
        &mut self,
        m: &OwnedMessage,
        now: u64,
        touched: &mut BTreeMap<(i32, ClueId), Vec<OutboxEntry>>,
        outputs: &mut Vec<Outgoing>,
    ) -> Option<u64> {
        let payload = m.payload().unwrap_or_default();
        let cmd = match CommandEnvelope::decode(payload) {
            Ok(cmd) if key_matches(m.key(), cmd.clue_id) => cmd,
            Ok(_) => {
                let d = self.dlq_record(
                    &Source::of(m),
                    DlqReason::KeyMismatch,
                    "record key is not the clue id".into(),
                );
                outputs.push(self.dlq_out(&d));
                return None;
            }
            Err(e) => {
                let d = self.dlq_record(&Source::of(m), e.dlq_reason(), e.to_string());
                outputs.push(self.dlq_out(&d));
                return None;
            }
        };
        let (p, offset) = (m.partition(), m.offset());
        let ps = self
            .partitions
            .get_mut(&p)
            .expect("partition restored before its commands are handled");
        let position = ps.base + offset;
        ps.next_offset = ps.next_offset.max(position + 1);
        let state = ps.clues.get(&cmd.clue_id);
        if state.is_some_and(|s| s.applied_offset >= position) {
            // Handled by a previous owner; its outputs were re-emitted from the outbox.
            return None;
        }
        self.metrics
            .commands
            .with_label_values(&[cmd.command.type_name()])
            .inc();
        let decision = self.processor.decide(
            state,
            &cmd,
            &DecideCtx {
                now_ms: now,
                offset,
                partition: p,
            },
        );
        let was_pending = state.is_some_and(|s| s.pending.is_some());
        // When Kafka took the command from ingest: carried by the facts it causes, for the
        // sink's end-to-end freshness.
        let ingested_at_ms = m.timestamp().to_millis().map(|t| t.max(0) as u64);
        match decision.next {
            Some(mut next) => {
                if let Some(pending) = next.pending.as_mut() {
                    if pending.command_id == cmd.command_id && pending.ingested_at_ms.is_none() {
                        pending.ingested_at_ms = ingested_at_ms;
                    }
                }
                // The processor records the offset; the state keeps the position.
                next.applied_offset = position;
                match (was_pending, next.pending.is_some()) {
                    (false, true) => ps.pending += 1,
                    (true, false) => ps.pending = ps.pending.saturating_sub(1),
                    _ => {}
                }
                ps.next_due = earliest(ps.next_due, next.overdue_due_at());
                ps.clues.insert(cmd.clue_id, next);
            }
            None => {
                if let Some(s) = ps.clues.get_mut(&cmd.clue_id) {
                    s.applied_offset = position;
                }
            }
        }
        if let Some(kind) = decision.assignment {
            self.metrics
                .assignments
                .with_label_values(&[kind.as_str()])
                .inc();
        }
        if decision.duplicate_of.is_some() {
            self.metrics.duplicates.inc();
        }
        let mut produced = Vec::new();
        for output in decision.outputs {
            match output {
                Output::Event(mut event) => {
                    self.metrics.events.inc();
                    if event.command_id == cmd.command_id && event.ingested_at_ms.is_none() {
                        event.ingested_at_ms = ingested_at_ms;
                    }
                    produced.push(OutboxOutput::Event(*event));
                }
                Output::Rejected {
                    reason,
                    detail,
                    deferred,
                } => {
                    self.metrics
                        .rejections
                        .with_label_values(&[reason.as_str()])
                        .inc();
                    let source = match &deferred {
                        // A command kept for after the verdict: its own offset and payload.
                        Some(d) => Source {
                            topic: self.config.commands_topic.clone(),
                            partition: p,
                            offset: d.offset,
                            key: Some(cmd.clue_id.to_string()),
                            payload: d.command.encode(),
                        },
                        None => Source::of(m),
                    };
                    produced.push(OutboxOutput::Dlq(self.dlq_record(&source, reason, detail)));
                }
                Output::Outcome(outcome) => {
                    let label = match &outcome.verdict {
                        Verdict::Applied { .. } => "applied",
                        Verdict::Refused { class, .. } => class_label(*class),
                    };
                    self.metrics.outcomes.with_label_values(&[label]).inc();
                    produced.push(OutboxOutput::Outcome(*outcome));
                }
                Output::Held | Output::Repeat => {}
            }
        }
        produced.extend(decision.forwards.into_iter().map(OutboxOutput::Dedupe));
        // Outputs go into the clue's outbox; a clue that has no state at the end of the batch
        // (a command for an unknown clue) gets no changelog record: it is decided the same way
        // again on a replay.
        let entry = touched.entry((p, cmd.clue_id)).or_default();
        for output in produced {
            outputs.push(self.outgoing(&output));
            entry.push(OutboxEntry {
                offset: position,
                output,
            });
        }
        Some(cmd.issued_at_ms)
    }

    fn outgoing(&self, output: &OutboxOutput) -> Outgoing {
        match output {
            OutboxOutput::Event(ev) => self.event_out(ev),
            OutboxOutput::Dlq(d) => self.dlq_out(d),
            OutboxOutput::Dedupe(f) => Outgoing {
                topic: self.config.dedupe_topic.clone(),
                partition: None,
                key: Some(f.street_code.to_string()),
                payload: f.record.encode(),
            },
            OutboxOutput::Outcome(o) => Outgoing {
                topic: self.config.outcomes_topic.clone(),
                partition: None,
                key: Some(o.clue_id.to_string()),
                payload: o.encode(),
            },
        }
    }

    /// Emits the `overdue` facts of deadlines that passed (more than the grace ago) in the
    /// partitions we own: state first, then the facts.
    async fn emit_overdue(
        &mut self,
        epochs: &Epochs,
        producer: &FutureProducer,
        consumer: &StreamConsumer<LoopContext>,
        refusals: &mut Refusals,
    ) -> anyhow::Result<()> {
        // Deadlines pass in partitions no command came to since their assignment, too (not in
        // those refused for a reset log: they wait for a rebase).
        let unrestored: Vec<i32> = epochs
            .assigned
            .lock()
            .map(|a| {
                a.iter()
                    .filter(|p| !self.partitions.contains_key(p) && !refusals.contains(**p))
                    .copied()
                    .collect()
            })
            .unwrap_or_default();
        if !unrestored.is_empty() {
            let (kafka, group, topic) = (
                self.config.kafka(),
                self.config.group_id.clone(),
                self.config.commands_topic.clone(),
            );
            let timeout = Duration::from_millis(self.config.restore_timeout_ms.min(30_000));
            let committed = tokio::task::spawn_blocking(move || {
                committed_offsets(&kafka, &group, &topic, &unrestored, timeout)
            })
            .await??;
            self.restore(committed, epochs, producer, consumer, refusals)
                .await?;
        }
        let now = wire::now_ms();
        let cutoff = now.saturating_sub(self.config.overdue_grace_ms);
        let mut due = Vec::new();
        for (&p, ps) in &mut self.partitions {
            if ps.next_due.is_none_or(|d| d >= cutoff) {
                continue;
            }
            let mut next_due = None;
            for (&id, state) in ps.clues.iter_mut() {
                if let Some((next, event)) = self.processor.overdue(id, state, cutoff, now) {
                    *state = next;
                    let record = StateRecord {
                        v: STATE_VERSION,
                        clue_id: id,
                        state: state.clone(),
                        outbox: vec![OutboxEntry {
                            offset: ps.next_offset,
                            output: OutboxOutput::Event(event),
                        }],
                    };
                    due.push((p, record));
                }
                next_due = earliest(next_due, state.overdue_due_at());
            }
            ps.next_due = next_due;
        }
        if due.is_empty() {
            return Ok(());
        }
        let (mut states, mut events) = (Vec::new(), Vec::new());
        for (p, record) in &due {
            events.push(self.outgoing(&record.outbox[0].output));
            states.push(Outgoing {
                topic: self.config.state_topic.clone(),
                partition: Some(*p),
                key: Some(record.clue_id.to_string()),
                payload: serde_json::to_vec(record).expect("state records serialize"),
            });
        }
        for (p, offset) in send_all(producer, &states).await? {
            if let Some(ps) = self.partitions.get_mut(&p) {
                ps.changelog_end = ps.changelog_end.max(offset + 1);
            }
        }
        send_all(producer, &events).await?;
        self.metrics.overdue.inc_by(events.len() as u64);
        self.metrics.events.inc_by(events.len() as u64);
        tracing::info!(facts = events.len(), "overdue facts emitted");
        Ok(())
    }

    fn event_out(&self, event: &EventEnvelope) -> Outgoing {
        Outgoing {
            topic: self.config.events_topic.clone(),
            partition: None,
            key: Some(event.clue_id.to_string()),
            payload: event.encode(),
        }
    }

    fn dlq_out(&self, record: &DlqRecord) -> Outgoing {
        Outgoing::dlq(&self.config.dlq_topic, record)
    }

    fn dlq_record(&self, source: &Source, reason: DlqReason, detail: String) -> DlqRecord {
        self.metrics.dlq.with_label_values(&[reason.as_str()]).inc();
        source.dlq_record("enrich", reason, detail)
    }
}

fn class_label(class: gridclue_core::roles::RefusalClass) -> &'static str {
    use gridclue_core::roles::RefusalClass as C;
    match class {
        C::Forbidden => "forbidden",
        C::Conflict => "conflict",
        C::NotFound => "not_found",
        C::Unavailable => "unavailable",
    }
}

/// The group's committed offsets of `partitions` of `topic` (0 where none is committed: the
/// whole partition is consumed then).
fn committed_offsets(
    kafka: &KafkaSettings,
    group: &str,
    topic: &str,
    partitions: &[i32],
    timeout: Duration,
) -> anyhow::Result<BTreeMap<i32, i64>> {
    // Never subscribes: it only asks the group coordinator, without joining the group.
    let client: BaseConsumer = gridclue_core::kafka::reader_config(kafka)
        .set("group.id", group)
        .create()
        .context("creating a committed-offsets client")?;
    let mut tpl = TopicPartitionList::new();
    for &p in partitions {
        tpl.add_partition(topic, p);
    }
    let committed = client
        .committed_offsets(tpl, timeout)
        .with_context(|| format!("committed offsets of {topic}"))?;
    Ok(committed
        .elements()
        .iter()
        .map(|el| {
            let offset = match el.offset() {
                Offset::Offset(o) => o,
                _ => 0,
            };
            (el.partition(), offset)
        })
        .collect())
}

/// Per partition: the latest record of each clue, and the partition's watermarks.
type Changelog = (
    HashMap<i32, HashMap<ClueId, StateRecord>>,
    HashMap<i32, Watermarks>,
);

/// The highest position handled in a partition's state, if any.
fn max_applied_of<'a>(states: impl Iterator<Item = &'a ClueState>) -> Option<i64> {
    states.map(|s| s.applied_offset).filter(|a| *a >= 0).max()
}

/// Per changelog partition: what its state handled (each clue's position and remembered
/// command ids), and its watermarks.
pub(crate) fn handled(
    kafka: &KafkaSettings,
    topic: &str,
    partitions: &[i32],
    timeout: Duration,
) -> anyhow::Result<HashMap<i32, (Vec<log_reset::Handled>, Watermarks)>> {
    let (records, watermarks) = read_changelog(kafka, topic, partitions, timeout)?;
    Ok(partitions
        .iter()
        .map(|p| {
            let handled = records
                .get(p)
                .map(|clues| {
                    clues
                        .values()
                        .filter(|r| r.state.applied_offset >= 0)
                        .map(|r| log_reset::Handled {
                            clue: r.clue_id,
                            position: r.state.applied_offset,
                            recent: r.state.recent_commands.clone(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            (*p, (handled, watermarks.get(p).copied().unwrap_or((0, 0))))
        })
        .collect())
}

/// Which of the partitions' changelogs still end where they ended when we last wrote them, with
/// their watermarks.
fn changelog_unchanged(
    kafka: &KafkaSettings,
    topic: &str,
    partitions: &[(i32, i64)],
    timeout: Duration,
) -> anyhow::Result<Vec<(i32, Watermarks)>> {
    if partitions.is_empty() {
        return Ok(Vec::new());
    }
    let client: BaseConsumer = gridclue_core::kafka::client_config(kafka)
        .create()
        .context("creating a metadata client")?;
    let mut out = Vec::new();
    for &(p, end) in partitions {
        let (low, high) = client
            .fetch_watermarks(topic, p, timeout)
            .with_context(|| format!("watermarks of {topic}/{p}"))?;
        if high == end {
            out.push((p, (low, high)));
        }
    }
    Ok(out)
}

/// Reads changelog partitions to their current end: the last record of each clue wins.
fn read_changelog(
    kafka: &KafkaSettings,
    topic: &str,
    partitions: &[i32],
    timeout: Duration,
) -> anyhow::Result<Changelog> {
    let mut out: HashMap<i32, HashMap<ClueId, StateRecord>> =
        partitions.iter().map(|p| (*p, HashMap::new())).collect();
    let whole: Vec<(i32, Option<i64>)> = partitions.iter().map(|p| (*p, None)).collect();
    let watermarks = read_partitions(
        kafka,
        topic,
        "gridclue-enrich-restore",
        &whole,
        timeout,
        |m| {
            let p = m.partition();
            let clues = out.entry(p).or_default();
            let key = m
                .key()
                .and_then(|k| std::str::from_utf8(k).ok())
                .and_then(|k| k.parse::<ClueId>().ok());
            match (key, m.payload()) {
                (Some(id), None) => {
                    clues.remove(&id);
                }
                (Some(id), Some(bytes)) => match serde_json::from_slice::<StateRecord>(bytes) {
                    Ok(rec) if rec.v <= STATE_VERSION && rec.clue_id == id => {
                        clues.insert(id, rec);
                    }
                    Ok(_) | Err(_) => {
                        tracing::error!(
                            partition = p,
                            offset = m.offset(),
                            "unreadable state record skipped"
                        );
                    }
                },
                (None, _) => {
                    tracing::error!(
                        partition = p,
                        offset = m.offset(),
                        "state record without a clue id key skipped"
                    );
                }
            }
        },
    )?;
    Ok((out, watermarks))
}
