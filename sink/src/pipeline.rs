//! The consume → fold → batch → insert → commit loop.
//!
//! This module reads and folds: it follows rebalances, judges and holds partitions, loads their
//! clue states and folds each record into a fact of the current batch. When to flush is decided
//! by [`crate::batching`]; the [`crate::writer`] makes a flushed batch durable (retry, split,
//! undo, DLQ) and the [`crate::acknowledger`] then commits its offsets.
//!
//! Guarantees, and how they are kept:
//! - **Nothing lost**: a partition's offset is committed only after every fact read from it up to
//!   that offset is acknowledged by ClickHouse (or, for records that cannot be projected, by the
//!   DLQ's broker). While ClickHouse does not take inserts the same batch is retried with
//!   exponential backoff, forever; the loop takes no new messages meanwhile, so the poller's
//!   buffer fills and it pauses the partitions (backpressure) while still polling.
//! - **Nothing doubled**: a fact's identity is `(clue_id, seq)`. When the sink takes a partition
//!   over it waits until no insert of that partition (by any sink, recognised by its query id)
//!   runs on the server, then loads the state of every clue of the partition and the highest
//!   seq stored for it; a fact at or below that seq is skipped. It also skips offsets at or
//!   below the highest one stored in `clue_events` (every row carries its Kafka position), so a
//!   crash between insert and commit never writes a batch twice. After a failed insert it waits
//!   until the statement no longer runs and drops from the retry what ClickHouse stored after
//!   all. So every fact reaches `clue_events` once, and the summing aggregates fed from it by
//!   materialized views stay exact; the tables are ReplacingMergeTrees keyed by identity
//!   besides, so the latest-state numbers read with `FINAL` are exact whatever happens.
//! - **A reset log is never skipped in silence**: before a partition is consumed, its stored
//!   position is judged against the broker's log (see [`crate::log_reset`]); a partition whose
//!   log was reset is held (not consumed, not committed, others flow), reported once in the log,
//!   in `gridclue_sink_log_reset_detected` and in `/readyz`, and re-judged every
//!   `log_reset_recheck_ms` until an operator's rebase lets it be read from the new log's start.
//! - **Bad input never blocks a partition**: undecodable records, and rows ClickHouse refuses
//!   as data (found by bisecting the refused batch), go to the DLQ with a reason code; the
//!   partition's offset moves on past them.
//! - **Fresh, without tiny inserts**: a batch is flushed when full (rows or bytes), or once its
//!   first fact has waited `batch_linger_ms` and `min_insert_interval_ms` has passed since the
//!   previous flush started; the insert of one batch runs while the next is read and folded.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clickhouse::Client;
use gridclue_core::wire::{DlqReason, EventEnvelope};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaResult;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::acknowledger::Acknowledger;
use crate::batching::{Batch, Drained, Policy};
use crate::log_reset::{self, Inspection, LogReset, Probe, Verdict};
use crate::metrics::SinkMetrics;
use crate::poller::{Control, Generation, Item, Poller};
use crate::rows::{self, ClueState, Source};
use crate::store;
use crate::writer::{dlq_record, Attempt, FactWrite, Feed, Unit, Writer};
use crate::SinkConfig;

/// Why the loop stopped early.
#[derive(Debug)]
pub(crate) enum Stop {
    /// The shutdown signal fired while waiting (nothing after the last commit is lost: it is
    /// read again next time).
    Shutdown,
    /// ClickHouse refused the data of an insert (the caller bisects).
    Rejected(clickhouse::error::Error),
    /// The poller thread is gone.
    PollerGone,
    /// A replay met a partition whose log was reset.
    Refused(LogReset),
}

/// A change of partition ownership seen by the consumer callbacks.
#[derive(Debug)]
enum Note {
    Assigned(Vec<i32>),
    Revoked(Vec<i32>),
}

/// Rebalances seen by the callbacks (with the generation they started), not yet applied by
/// the loop.
type Notes = Arc<Mutex<Vec<(u64, Note)>>>;

/// Consumer callbacks: record rebalances for the loop, which applies them between messages.
pub struct SinkContext {
    topic: String,
    notes: Notes,
    generation: Generation,
}

impl ClientContext for SinkContext {}

impl ConsumerContext for SinkContext {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let parts = |tpl: &TopicPartitionList| {
            tpl.elements_for_topic(&self.topic)
                .iter()
                .map(|e| e.partition())
                .collect::<Vec<_>>()
        };
        let note = match rebalance {
            Rebalance::Assign(tpl) => Note::Assigned(parts(tpl)),
            Rebalance::Revoke(tpl) => Note::Revoked(parts(tpl)),
            Rebalance::Error(e) => {
                tracing::warn!(error = %e, "rebalance error");
                return;
            }
        };
        tracing::info!(?note, "rebalance");
        let generation = self
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel)
            + 1;
        self.notes
            .lock()
            .expect("notes lock")
            .push((generation, note));
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        if let Err(e) = result {
            tracing::warn!(error = %e, "offset commit failed (the batch is re-read and skipped)");
        }
    }
}

struct PartitionState {
    /// The life of the partition's log being read (stored with every fact).
    log: u32,
    /// Offsets of this log at or below this are already stored in `clue_events`.
    resume_after: Option<i64>,
    clues: HashMap<Uuid, ClueState>,
    /// Clues whose loaded state is behind their stored facts (a sink stopped between a batch's
    /// facts and its states): while any is left, the records at or below `resume_after` are
    /// read to fold those facts into their states, not skipped by offset.
    states_behind: usize,
}

/// A partition the loop does not consume for now.
struct Held {
    /// Why: a reset log (reported), or `None` for a release whose seek failed (retried).
    reset: Option<LogReset>,
    next_check: Instant,
}

/// Where the loop reads from.
pub(crate) enum Mode {
    /// Consumer group member: subscribes, commits offsets.
    Live,
    /// Replay: reads assigned ranges without a group commit and stops at their ends.
    Replay { ends: HashMap<i32, i64> },
}

pub(crate) struct Pipeline {
    cfg: Arc<SinkConfig>,
    client: Client,
    consumer: Arc<BaseConsumer<SinkContext>>,
    generation: Generation,
    poller: Option<Poller>,
    rx: Option<tokio::sync::mpsc::Receiver<Item>>,
    /// Per partition, the generation of its last revocation: messages read before it are stale.
    revoked_at: HashMap<i32, u64>,
    /// Makes flushed batches durable.
    writer: Arc<Writer>,
    /// Commits the offsets of durable batches.
    acknowledger: Acknowledger,
    metrics: SinkMetrics,
    cancel: CancellationToken,
    topic: Arc<str>,
    notes: Notes,
    mode: Mode,
    assigned: HashSet<i32>,
    partitions: HashMap<i32, PartitionState>,
    batch: Batch<Unit>,
    policy: Policy,
    /// Messages received from the poller and not yet handled, with their generation.
    stash: VecDeque<(u64, OwnedMessage)>,
    /// When the previous flush started.
    last_flush: Instant,
    /// Looks at the broker's logs for the reset check.
    probe: Arc<Probe>,
    readiness: gridclue_core::service::Readiness,
    /// Partitions not consumed: reset logs, and releases to retry.
    held: HashMap<i32, Held>,
    /// Partitions sent to a new position: their messages are dropped until the poller's
    /// `Released` marker.
    seeking: HashSet<i32>,
    /// The generation of the last rebalance applied (orders to the poller carry it).
    applied_generation: u64,
    /// Replay only: partitions whose end was reached.
    done: HashSet<i32>,
    /// Replay only: facts inserted.
    pub(crate) inserted: u64,
}

/// Builds the consumer with callbacks that report rebalances to the loop.
fn consumer(
    cfg: &SinkConfig,
    group_id: &str,
    replay: bool,
) -> anyhow::Result<(BaseConsumer<SinkContext>, Notes, Generation)> {
    let notes = Arc::new(Mutex::new(Vec::new()));
    let generation = Generation::default();
    let context = SinkContext {
        topic: cfg.events_topic.clone(),
        notes: notes.clone(),
        generation: generation.clone(),
    };
    let mut c = gridclue_core::kafka::consumer_config(&cfg.kafka(), group_id);
    c.set("fetch.max.bytes", "52428800")
        .set("queued.max.messages.kbytes", "32768");
    if replay {
        c.set("enable.partition.eof", "true");
    }
    let consumer: BaseConsumer<SinkContext> = c.create_with_context(context)?;
    Ok((consumer, notes, generation))
}

impl Pipeline {
    pub(crate) fn new(
        cfg: Arc<SinkConfig>,
        client: Client,
        metrics: SinkMetrics,
        cancel: CancellationToken,
        mode: Mode,
        readiness: gridclue_core::service::Readiness,
    ) -> anyhow::Result<Self> {
        let group = match &mode {
            Mode::Live => cfg.group_id.clone(),
            Mode::Replay { .. } => format!("{}-replay-{}", cfg.group_id, Uuid::new_v4()),
        };
        let replay = matches!(mode, Mode::Replay { .. });
        let (consumer, notes, generation) = consumer(&cfg, &group, replay)?;
        let consumer = Arc::new(consumer);
        let topic: Arc<str> = cfg.events_topic.as_str().into();
        let writer = Writer::new(&cfg, client.clone(), metrics.clone(), cancel.clone())?;
        let acknowledger = match mode {
            Mode::Live => Acknowledger::Group {
                consumer: consumer.clone(),
                topic: topic.clone(),
                metrics: metrics.clone(),
                cancel: cancel.clone(),
            },
            Mode::Replay { .. } => Acknowledger::Replay,
        };
        let probe = Arc::new(Probe::new(
            &cfg.kafka(),
            Duration::from_millis(cfg.log_check_timeout_ms),
        )?);
        Ok(Self {
            topic,
            policy: Policy::new(&cfg),
            cfg,
            client,
            consumer,
            generation,
            poller: None,
            rx: None,
            revoked_at: HashMap::new(),
            writer: Arc::new(writer),
            acknowledger,
            metrics,
            cancel,
            notes,
            mode,
            assigned: HashSet::new(),
            partitions: HashMap::new(),
            batch: Batch::default(),
            stash: VecDeque::new(),
            last_flush: Instant::now() - Duration::from_secs(3600),
            probe,
            readiness,
            held: HashMap::new(),
            seeking: HashSet::new(),
            applied_generation: 0,
            done: HashSet::new(),
            inserted: 0,
        })
    }

    /// Joins the group (live) or assigns the replay ranges.
    pub(crate) fn start(&mut self, starts: &HashMap<i32, i64>) -> anyhow::Result<()> {
        match &self.mode {
            Mode::Live => self.consumer.subscribe(&[&self.cfg.events_topic])?,
            Mode::Replay { ends } => {
                let mut tpl = TopicPartitionList::new();
                for (p, end) in ends {
                    let start = starts.get(p).copied().unwrap_or(0);
                    if start >= *end {
                        self.done.insert(*p);
                        continue;
                    }
                    tpl.add_partition_offset(&self.cfg.events_topic, *p, Offset::Offset(start))?;
                    self.assigned.insert(*p);
                }
                self.consumer.assign(&tpl)?;
            }
        }
        let (poller, rx) = Poller::start(
            self.consumer.clone(),
            self.cfg.events_topic.clone(),
            self.generation.clone(),
            16,
            self.metrics.fetch_paused.clone(),
        );
        self.poller = Some(poller);
        self.rx = Some(rx);
        Ok(())
    }

    fn replay_finished(&self) -> bool {
        match &self.mode {
            Mode::Live => false,
            Mode::Replay { ends } => ends.keys().all(|p| self.done.contains(p)),
        }
    }

    /// Runs until the shutdown signal (live) or the end of the ranges (replay).
    pub(crate) async fn run(&mut self) -> anyhow::Result<()> {
        let result = self.run_inner().await;
        let result = match result {
            Ok(()) | Err(Stop::Shutdown) => {
                // A last flush when ClickHouse takes it; if it does not, nothing is committed
                // and the facts are read again next time.
                match self.flush().await {
                    Ok(()) | Err(Stop::Shutdown) => Ok(()),
                    Err(stop) => Err(stop.into_error()),
                }
            }
            Err(stop) => Err(stop.into_error()),
        };
        if let Some(mut poller) = self.poller.take() {
            poller.stop(); // at most one poll timeout
        }
        result
    }

    async fn run_inner(&mut self) -> Result<(), Stop> {
        enum Event {
            Shutdown,
            Due,
            Recheck,
            Item(Option<Item>),
        }
        loop {
            self.apply_notes();
            while let Some((generation, m)) = self.stash.pop_front() {
                self.handle(generation, m).await?;
                if self.batch_full() {
                    self.flush().await?;
                }
            }
            if self.replay_finished() {
                return Ok(());
            }
            let due = self.due_at();
            let recheck = self.held.values().map(|h| h.next_check).min();
            let rx = self.rx.as_mut().expect("started");
            let event = tokio::select! {
                biased;
                _ = cancelled(&self.cancel) => Event::Shutdown,
                _ = sleep_until_opt(due) => Event::Due,
                _ = sleep_until_opt(recheck) => Event::Recheck,
                item = rx.recv() => Event::Item(item),
            };
            match event {
                Event::Shutdown => return Err(Stop::Shutdown),
                Event::Due => self.flush().await?,
                Event::Recheck => self.recheck_held().await?,
                Event::Item(item) => self.take(item)?,
            }
        }
    }

    /// Takes an item from the poller: messages go to the stash, in order.
    fn take(&mut self, item: Option<Item>) -> Result<(), Stop> {
        match item {
            None => return Err(Stop::PollerGone),
            Some(Item::Messages {
                generation,
                messages,
            }) => {
                // Rebalances before these messages first: a partition assigned afresh is no
                // longer held or moving, and its messages must not be dropped.
                self.apply_notes();
                let (held, seeking) = (&self.held, &self.seeking);
                self.stash.extend(
                    messages
                        .into_iter()
                        .filter(|m| {
                            !held.contains_key(&m.partition()) && !seeking.contains(&m.partition())
                        })
                        .map(|m| (generation, m)),
                )
            }
            Some(Item::Released {
                partition,
                generation,
                result,
            }) => {
                let stale = self
                    .revoked_at
                    .get(&partition)
                    .is_some_and(|r| generation < *r);
                if !stale && self.seeking.remove(&partition) {
                    if let Err(e) = result {
                        tracing::warn!(partition, error = %e, "cannot move the partition to its new position; retrying");
                        self.partitions.remove(&partition);
                        self.held.insert(
                            partition,
                            Held {
                                reset: None,
                                next_check: Instant::now() + self.recheck_interval(),
                            },
                        );
                    }
                }
            }
            Some(Item::Eof(p)) => {
                if matches!(self.mode, Mode::Replay { .. }) {
                    // Everything polled before the end marker is already in the stash.
                    self.done.insert(p);
                }
            }
            Some(Item::Error(e)) => {
                tracing::warn!(error = %e, "consumer error");
                self.metrics
                    .errors
                    .with_label_values(&["kafka_consume"])
                    .inc();
            }
        }
        Ok(())
    }

    fn due_at(&self) -> Option<Instant> {
        self.policy.due_at(&self.batch, self.last_flush)
    }

    fn batch_full(&self) -> bool {
        self.policy.is_full(&self.batch)
    }

    /// Applies rebalance notes: forget revoked partitions (their unflushed facts are re-read by
    /// whoever owns them next, from the committed offset) and reload state on assignment.
    fn apply_notes(&mut self) {
        let notes: Vec<(u64, Note)> = std::mem::take(&mut *self.notes.lock().expect("notes lock"));
        for (generation, note) in notes {
            self.applied_generation = self.applied_generation.max(generation);
            match note {
                Note::Assigned(ps) => {
                    for p in ps {
                        self.assigned.insert(p);
                        self.partitions.remove(&p);
                        self.unhold(p);
                    }
                }
                Note::Revoked(ps) => {
                    for p in &ps {
                        self.assigned.remove(p);
                        self.partitions.remove(p);
                        self.revoked_at.insert(*p, generation);
                        // Whoever owns it next judges it afresh.
                        self.unhold(*p);
                    }
                    self.batch.revoke(&ps);
                    self.stash.retain(|(_, m)| !ps.contains(&m.partition()));
                }
            }
        }
    }

    async fn handle(&mut self, generation: u64, msg: OwnedMessage) -> Result<(), Stop> {
        self.apply_notes();
        let p = msg.partition();
        let offset = msg.offset();
        let stale = self.revoked_at.get(&p).is_some_and(|r| generation < *r);
        if msg.topic() != &*self.topic
            || !self.assigned.contains(&p)
            || stale
            || self.held.contains_key(&p)
            || self.seeking.contains(&p)
        {
            return Ok(());
        }
        if let Mode::Replay { ends } = &self.mode {
            let end = ends.get(&p).copied().unwrap_or(0);
            if offset >= end - 1 {
                self.done.insert(p);
            }
            if offset >= end {
                return Ok(());
            }
        }
        if !self.ensure_loaded(p, offset, generation).await? || !self.assigned.contains(&p) {
            return Ok(()); // held, moved, or revoked while loading
        }
        let batch = &mut self.batch;
        batch.read(p, offset, Instant::now());
        let part = self.partitions.get_mut(&p).expect("partition loaded");
        let live = matches!(self.mode, Mode::Live);
        let resumed = live && part.resume_after.is_some_and(|r| offset <= r);
        if resumed && part.states_behind == 0 {
            self.metrics.skipped.with_label_values(&["resumed"]).inc();
            return Ok(());
        }
        let payload = msg.payload().unwrap_or_default();
        let key = msg.key();
        let source = Source {
            topic: self.topic.clone(),
            partition: p,
            log: part.log,
            offset,
        };
        let env = match EventEnvelope::decode(payload) {
            Ok(env) => env,
            Err(_) if resumed => return Ok(()), // sent to the DLQ when first read
            Err(e) => {
                let record = dlq_record(e.dlq_reason(), e.to_string(), &source, key, payload);
                batch.push_dlq(record, payload.len());
                return Ok(());
            }
        };
        if let Some(k) = key {
            if k != env.clue_id.to_string().as_bytes() {
                if resumed {
                    return Ok(());
                }
                let detail = format!("record key does not match clue id {}", env.clue_id);
                let record = dlq_record(DlqReason::KeyMismatch, detail, &source, key, payload);
                batch.push_dlq(record, payload.len());
                return Ok(());
            }
        }
        let id = env.clue_id.as_uuid();
        let (prev, prev_stored, write) = match part.clues.get(&id) {
            Some(s) if s.stored_seq.is_some_and(|stored| env.seq <= stored) => {
                self.metrics.skipped.with_label_values(&["duplicate"]).inc();
                if rows::has_folded(&s.row, env.seq) {
                    return Ok(());
                }
                // Stored before a restart, after the last state written: the state catches up.
                if s.stored_seq == Some(env.seq) {
                    part.states_behind = part.states_behind.saturating_sub(1);
                }
                (
                    Some(s.row.clone()),
                    s.stored_seq,
                    FactWrite::StoredBeforeRestart,
                )
            }
            // Below the resume point and not stored: a fact sent to the DLQ when first read.
            _ if resumed => {
                self.metrics.skipped.with_label_values(&["resumed"]).inc();
                return Ok(());
            }
            Some(s) => (Some(s.row.clone()), s.stored_seq, FactWrite::Pending),
            None => (None, None, FactWrite::Pending),
        };
        let row = rows::apply(prev.as_deref().cloned(), &env, p);
        let event = rows::event_row(&env, prev.as_deref(), &row, &source);
        let clue = Arc::new(row);
        part.clues.insert(
            id,
            ClueState {
                row: clue.clone(),
                stored_seq: Some(prev_stored.map_or(env.seq, |s| s.max(env.seq))),
            },
        );
        let bytes = event.approx_bytes() + clue.approx_bytes();
        batch.push_fact(
            Unit {
                event,
                write,
                clue,
                prev,
                prev_stored,
                source,
                message: msg,
                ingested_at_ms: env.ingested_at_ms,
            },
            bytes,
        );
        Ok(())
    }

    /// Prepares a partition at its first message (`offset`) after an assignment, once per
    /// ownership: judges its log and loads its clue states. Returns whether the message (and
    /// the partition) is to be handled now: not when the log was reset (the partition is held)
    /// or when the partition must first be read from another position.
    async fn ensure_loaded(&mut self, p: i32, offset: i64, generation: u64) -> Result<bool, Stop> {
        if self.partitions.contains_key(&p) {
            return Ok(true);
        }
        let started = Instant::now();
        self.fence(p).await?;
        let inspection = self.inspect_retrying(p).await?;
        if let Some(reset) = inspection.reset() {
            if matches!(self.mode, Mode::Replay { .. }) {
                return Err(Stop::Refused(reset));
            }
        }
        if self.stale(p, generation) {
            return Ok(false); // reassigned meanwhile: judged again at its next message
        }
        let inspection = self.continue_truncated(inspection).await?;
        if let Some(reset) = inspection.reset() {
            self.hold(p, reset, generation);
            return Ok(false);
        }
        let state = self.load_state(&inspection).await?;
        tracing::info!(
            partition = p,
            log = state.log,
            clues = state.clues.len(),
            resume_after = state.resume_after,
            ms = started.elapsed().as_millis() as u64,
            "partition state loaded"
        );
        // A log started by a rebase or after a truncation, nothing stored from it yet, is read
        // from its start (or after what it continues): the group's committed offset may be a
        // position in the previous log, beyond records the new one holds.
        let start = (state.log > 0 && inspection.stored.last.is_none())
            .then(|| state.resume_after.map_or(inspection.broker.low, |m| m + 1));
        if self.stale(p, generation) {
            return Ok(false);
        }
        self.partitions.insert(p, state);
        if let Some(start) = start.filter(|&start| offset > start) {
            self.move_to(p, start, generation);
            return Ok(false);
        }
        Ok(true)
    }

    /// Waits until no insert of the partition's previous owner runs on the server.
    async fn fence(&mut self, p: i32) -> Result<(), Stop> {
        let writer = self.writer.clone();
        loop {
            let running = writer
                .retry_with(
                    "fence",
                    self.client.clone(),
                    |client| async move { store::partition_insert_running(&client, p).await },
                    self,
                )
                .await?;
            if !running {
                return Ok(());
            }
            tracing::info!(
                partition = p,
                "waiting for an insert of the partition's previous owner"
            );
            writer.wait(Duration::from_millis(50), self).await?;
        }
    }

    /// For a partition whose log lost its tail, starts the log that continues it (see
    /// [`log_reset::continue_after_truncation`]) and judges the partition again.
    async fn continue_truncated(&mut self, inspection: Inspection) -> Result<Inspection, Stop> {
        let Some(kept_through) = inspection.truncation() else {
            return Ok(inspection);
        };
        let p = inspection.partition;
        let writer = self.writer.clone();
        let log = writer
            .retry_with(
                "continue_log",
                (self.client.clone(), inspection.clone()),
                |(client, found)| async move {
                    log_reset::continue_after_truncation(&client, &found).await
                },
                self,
            )
            .await?;
        let lost = inspection
            .reset()
            .map_or(0, |r| r.stored_offset - kept_through);
        tracing::warn!(
            topic = %inspection.topic,
            partition = p,
            kept_through,
            stored_through = kept_through + lost,
            high_watermark = inspection.broker.high,
            log,
            "the broker lost the tail of the partition's log (records it had acknowledged, and \
             this sink had stored, are gone); reading on in a new log after the last record kept"
        );
        self.metrics
            .log_truncations
            .with_label_values(&[&inspection.topic, &p.to_string()])
            .inc();
        self.inspect_retrying(p).await
    }

    /// Judges the partition's log (see [`log_reset::inspect`]), retrying failed looks at
    /// ClickHouse or Kafka with backoff.
    async fn inspect_retrying(&mut self, p: i32) -> Result<Inspection, Stop> {
        let writer = self.writer.clone();
        let mut backoff = writer.first_backoff();
        loop {
            match log_reset::inspect(&self.client, &self.probe, &self.topic, p).await {
                Ok(inspection) => return Ok(inspection),
                Err(e) => {
                    self.metrics
                        .retries
                        .with_label_values(&["transient", "log_check"])
                        .inc();
                    tracing::warn!(partition = p, error = %e, backoff_ms = backoff.as_millis() as u64, "checking the partition's log failed; retrying");
                    writer.wait(backoff, self).await?;
                    backoff = writer.next_backoff(backoff);
                }
            }
        }
    }

    /// The state of a partition judged consumable: its clues, and its position in the log.
    async fn load_state(&mut self, inspection: &Inspection) -> Result<PartitionState, Stop> {
        let Verdict::Consume { resume_after, .. } = inspection.verdict else {
            unreachable!("only consumable partitions are loaded");
        };
        let p = inspection.partition;
        let writer = self.writer.clone();
        let clues = writer
            .retry_with(
                "load_partition",
                (self.client.clone(), self.topic.clone(), inspection.clone()),
                |(client, topic, found)| async move {
                    log_reset::adopt_cluster(&client, &found).await?;
                    store::load_partition(&client, &topic, p).await
                },
                self,
            )
            .await?;
        writer.resume_all();
        let states_behind = clues
            .values()
            .filter(|s| {
                s.stored_seq
                    .is_some_and(|stored| !rows::has_folded(&s.row, stored))
            })
            .count();
        if states_behind > 0 {
            tracing::info!(
                partition = p,
                clues = states_behind,
                "states behind their stored facts (the last writer stopped between its inserts); \
                 folding the stored facts in as they are read again"
            );
        }
        Ok(PartitionState {
            log: inspection.stored.log,
            resume_after,
            clues,
            states_behind,
        })
    }

    /// Whether partition `p` was revoked since `generation` (the loop's view is out of date).
    fn stale(&mut self, p: i32, generation: u64) -> bool {
        self.apply_notes();
        !self.assigned.contains(&p) || self.revoked_at.get(&p).is_some_and(|r| generation < *r)
    }

    /// Stops consuming a partition whose log was reset, and reports it (once).
    fn hold(&mut self, p: i32, reset: LogReset, generation: u64) {
        tracing::error!(
            topic = %reset.topic,
            partition = p,
            stored_offset = reset.stored_offset,
            high_watermark = reset.high,
            low_watermark = reset.low,
            log = reset.log,
            "{reset}"
        );
        self.metrics
            .log_reset_detected
            .with_label_values(&[&reset.topic, &p.to_string()])
            .set(1);
        self.readiness
            .block(&hold_key(&reset.topic, p), reset.to_string());
        self.stash.retain(|(_, m)| m.partition() != p);
        if let Some(poller) = &self.poller {
            poller.control(Control::Hold {
                partition: p,
                generation,
            });
        }
        self.held.insert(
            p,
            Held {
                reset: Some(reset),
                next_check: Instant::now() + self.recheck_interval(),
            },
        );
    }

    /// Forgets that a partition is held or moving (it was revoked, or assigned afresh).
    fn unhold(&mut self, p: i32) {
        self.seeking.remove(&p);
        if let Some(Held {
            reset: Some(reset), ..
        }) = self.held.remove(&p)
        {
            self.clear_report(&reset);
        }
    }

    fn clear_report(&self, reset: &LogReset) {
        self.metrics
            .log_reset_detected
            .with_label_values(&[&reset.topic, &reset.partition.to_string()])
            .set(0);
        self.readiness
            .unblock(&hold_key(&reset.topic, reset.partition));
    }

    /// Has the poller read the partition from `offset` on; its messages read before are dropped.
    fn move_to(&mut self, p: i32, offset: i64, generation: u64) {
        tracing::info!(
            partition = p,
            offset,
            "reading the partition from a new position"
        );
        self.stash.retain(|(_, m)| m.partition() != p);
        self.seeking.insert(p);
        if let Some(poller) = &self.poller {
            poller.control(Control::Release {
                partition: p,
                offset,
                generation,
            });
        }
    }

    fn recheck_interval(&self) -> Duration {
        Duration::from_millis(self.cfg.log_reset_recheck_ms)
    }

    /// Judges the held partitions that are due again; releases those now consumable (after a
    /// rebase: from the new log's start; otherwise after the stored position).
    async fn recheck_held(&mut self) -> Result<(), Stop> {
        let now = Instant::now();
        let due: Vec<i32> = self
            .held
            .iter()
            .filter(|(_, h)| h.next_check <= now)
            .map(|(p, _)| *p)
            .collect();
        for p in due {
            self.apply_notes();
            let generation = self.applied_generation;
            if !self.held.contains_key(&p) {
                continue; // revoked or reassigned meanwhile
            }
            self.fence(p).await?;
            let inspection = self.inspect_retrying(p).await?;
            if self.stale(p, generation) || !self.held.contains_key(&p) {
                continue; // revoked or reassigned meanwhile
            }
            let inspection = self.continue_truncated(inspection).await?;
            if inspection.reset().is_some() {
                tracing::debug!(partition = p, "the partition's log is still reset");
                let next = Instant::now() + self.recheck_interval();
                if let Some(h) = self.held.get_mut(&p) {
                    h.next_check = next;
                }
                continue;
            }
            let state = self.load_state(&inspection).await?;
            let from = state.resume_after.map_or(inspection.broker.low, |n| n + 1);
            tracing::info!(
                partition = p,
                log = state.log,
                from,
                "the partition's log is consumable again"
            );
            if let Some(Held {
                reset: Some(reset), ..
            }) = self.held.remove(&p)
            {
                self.clear_report(&reset);
            }
            self.partitions.insert(p, state);
            self.move_to(p, from, generation);
        }
        Ok(())
    }

    /// Writes the batch (DLQ records, then rows), then commits its offsets.
    ///
    /// The first attempt at the rows runs while the loop goes on reading and folding the next
    /// batch (ClickHouse works while the sink decodes); failures are then handled in sequence.
    async fn flush(&mut self) -> Result<(), Stop> {
        self.apply_notes();
        if self.batch.is_empty() {
            self.last_flush = Instant::now();
            return Ok(());
        }
        let Drained {
            facts: units,
            dlq,
            offsets,
        } = self.batch.drain();
        let started = Instant::now();
        let facts = units.len();
        if !units.is_empty() {
            self.metrics.batch_rows.observe(units.len() as f64);
        }
        let writer = self.writer.clone();
        for record in dlq {
            if self.assigned.contains(&record.source_partition) {
                writer.send_dlq(record, self).await?;
            }
        }
        if !units.is_empty() {
            let (units, first) = self.write_overlapped(units).await?;
            match first {
                Ok(()) => writer.written(&units, self),
                Err(failed) => writer.recover(units, failed, self).await?,
            }
        }
        self.acknowledger
            .commit(&offsets, |p| self.assigned.contains(&p));
        // Flushes are spaced from start to start: a slow insert does not add to the wait.
        self.last_flush = started;
        tracing::debug!(
            facts,
            partitions = offsets.len(),
            ms = started.elapsed().as_millis() as u64,
            "batch flushed"
        );
        Ok(())
    }

    /// One insert attempt of `units`, during which the consumer keeps being read and its
    /// messages folded into the next batch (up to that batch's limits).
    async fn write_overlapped(&mut self, units: Vec<Unit>) -> Result<(Vec<Unit>, Attempt), Stop> {
        let units = Arc::new(units);
        // Dropped on an early return: no insert is left running.
        let mut write = self.writer.spawn_insert(units.clone());
        let result = loop {
            if self.batch_full() {
                break (&mut write).await;
            }
            if let Some((generation, m)) = self.stash.pop_front() {
                self.handle(generation, m).await?;
                continue;
            }
            let rx = self.rx.as_mut().expect("started");
            let item = tokio::select! {
                biased;
                r = &mut write => break r,
                item = rx.recv() => item,
            };
            self.take(item)?;
        };
        let attempt = match result {
            Ok(attempt) => attempt,
            Err(join) => std::panic::resume_unwind(join.into_panic()),
        };
        let units = Arc::try_unwrap(units)
            .ok()
            .expect("the insert task has finished and released the units");
        Ok((units, attempt))
    }
}

impl Feed for Pipeline {
    fn apply_rebalances(&mut self) {
        self.apply_notes();
    }

    fn owns(&self, partition: i32) -> bool {
        self.assigned.contains(&partition)
    }

    fn undone(&mut self, u: &Unit) {
        let Some(part) = self.partitions.get_mut(&u.source.partition) else {
            return;
        };
        let latest = part.clues.get(&u.clue.clue_id).map(|s| s.row.version);
        if latest != Some(u.event.seq) {
            return; // a later fact of the clue was folded since; its state stays
        }
        match &u.prev {
            Some(prev) => {
                part.clues.insert(
                    u.clue.clue_id,
                    ClueState {
                        row: prev.clone(),
                        stored_seq: u.prev_stored,
                    },
                );
            }
            None => {
                part.clues.remove(&u.clue.clue_id);
            }
        }
    }

    fn stored(&mut self, facts: usize) {
        self.inserted += facts as u64;
    }
}

impl Stop {
    fn into_error(self) -> anyhow::Error {
        match self {
            Stop::Shutdown => anyhow::anyhow!("stopped"),
            Stop::Rejected(e) => e.into(),
            Stop::PollerGone => anyhow::anyhow!("the consumer's poll thread stopped"),
            Stop::Refused(reset) => anyhow::anyhow!("{reset}"),
        }
    }
}

/// The readiness blocker of a held partition.
fn hold_key(topic: &str, partition: i32) -> String {
    format!("log_reset/{topic}/{partition}")
}
type BoxFuture<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;

// Named as a boxed `dyn Future + Send`: written inline in `select!`, the compiler cannot
// prove the loop's future `Send` for every lifetime.
pub(crate) fn cancelled(token: &CancellationToken) -> BoxFuture<'_, ()> {
    Box::pin(token.cancelled())
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
