//! The consume → fold → batch → insert → commit loop.
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

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clickhouse::Client;
use gridclue_core::wire::{now_ms, DlqReason, DlqRecord, EventEnvelope, SCHEMA_VERSION};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaResult;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::log_reset::{self, Inspection, LogReset, Probe, Verdict};
use crate::metrics::SinkMetrics;
use crate::poller::{Control, Generation, Item, Poller};
use crate::rows::{self, ClueRow, ClueState, EventRow, Source};
use crate::store::{self, Failure, InsertTimeouts};
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

/// One fact on its way into ClickHouse.
pub(crate) struct Unit {
    pub event: EventRow,
    /// The clue's state after this fact…
    pub clue: Arc<ClueRow>,
    /// …and before it (with the seq stored before it), to undo a fact ClickHouse refuses.
    pub prev: Option<Arc<ClueRow>>,
    pub prev_stored: Option<u32>,
    pub source: Source,
    /// The record as read (for the DLQ, should ClickHouse refuse the fact).
    pub message: OwnedMessage,
    /// When Kafka acknowledged the fact's command to ingest, if the fact says.
    pub ingested_at_ms: Option<u64>,
}

#[derive(Default)]
struct Batch {
    units: Vec<Unit>,
    dlq: Vec<DlqRecord>,
    /// Highest offset read per partition (committed + 1 after the flush).
    offsets: BTreeMap<i32, i64>,
    bytes: usize,
    first_at: Option<Instant>,
}

impl Batch {
    fn rows(&self) -> usize {
        self.units.len() + self.dlq.len()
    }

    fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    fn drop_partitions(&mut self, gone: &[i32]) {
        self.units.retain(|u| !gone.contains(&u.source.partition));
        self.dlq.retain(|d| !gone.contains(&d.source_partition));
        for p in gone {
            self.offsets.remove(p);
        }
    }
}

struct PartitionState {
    /// The life of the partition's log being read (stored with every fact).
    log: u32,
    /// Offsets of this log at or below this are already stored in `clue_events`.
    resume_after: Option<i64>,
    clues: HashMap<Uuid, ClueState>,
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
    producer: FutureProducer,
    metrics: SinkMetrics,
    cancel: CancellationToken,
    topic: Arc<str>,
    notes: Notes,
    mode: Mode,
    assigned: HashSet<i32>,
    partitions: HashMap<i32, PartitionState>,
    batch: Batch,
    /// Messages received from the poller and not yet handled, with their generation.
    stash: VecDeque<(u64, OwnedMessage)>,
    last_flush: Instant,
    paused: bool,
    timeouts: InsertTimeouts,
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
        let producer: FutureProducer =
            gridclue_core::kafka::producer_config(&cfg.kafka(), cfg.dlq_timeout_ms).create()?;
        let timeouts = InsertTimeouts {
            send: Duration::from_millis(cfg.insert_timeout_ms),
            end: Duration::from_millis(cfg.insert_timeout_ms),
        };
        let probe = Arc::new(Probe::new(
            &cfg.kafka(),
            Duration::from_millis(cfg.log_check_timeout_ms),
        )?);
        Ok(Self {
            topic: cfg.events_topic.as_str().into(),
            cfg,
            client,
            consumer: Arc::new(consumer),
            generation,
            poller: None,
            rx: None,
            revoked_at: HashMap::new(),
            producer,
            metrics,
            cancel,
            notes,
            mode,
            assigned: HashSet::new(),
            partitions: HashMap::new(),
            batch: Batch::default(),
            stash: VecDeque::new(),
            last_flush: Instant::now() - Duration::from_secs(3600),
            paused: false,
            timeouts,
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
        let first = self.batch.first_at?;
        let linger = first + Duration::from_millis(self.cfg.batch_linger_ms);
        let spaced = self.last_flush + Duration::from_millis(self.cfg.min_insert_interval_ms);
        Some(linger.max(spaced))
    }

    fn batch_full(&self) -> bool {
        self.batch.rows() >= self.cfg.batch_max_rows || self.batch.bytes >= self.cfg.batch_max_bytes
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
                    self.batch.drop_partitions(&ps);
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
        batch.first_at.get_or_insert_with(Instant::now);
        let slot = batch.offsets.entry(p).or_insert(offset);
        *slot = (*slot).max(offset);
        let part = self.partitions.get_mut(&p).expect("partition loaded");
        let live = matches!(self.mode, Mode::Live);
        if live && part.resume_after.is_some_and(|r| offset <= r) {
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
            Err(e) => {
                let record = dlq_record(e.dlq_reason(), e.to_string(), &source, key, payload);
                batch.bytes += payload.len();
                batch.dlq.push(record);
                return Ok(());
            }
        };
        if let Some(k) = key {
            if k != env.clue_id.to_string().as_bytes() {
                let detail = format!("record key does not match clue id {}", env.clue_id);
                let record = dlq_record(DlqReason::KeyMismatch, detail, &source, key, payload);
                batch.bytes += payload.len();
                batch.dlq.push(record);
                return Ok(());
            }
        }
        let id = env.clue_id.as_uuid();
        let (prev, prev_stored) = match part.clues.get(&id) {
            Some(s) if s.stored_seq.is_some_and(|stored| env.seq <= stored) => {
                self.metrics.skipped.with_label_values(&["duplicate"]).inc();
                return Ok(());
            }
            Some(s) => (Some(s.row.clone()), s.stored_seq),
            None => (None, None),
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
        batch.bytes += event.approx_bytes() + clue.approx_bytes();
        batch.units.push(Unit {
            event,
            clue,
            prev,
            prev_stored,
            source,
            message: msg,
            ingested_at_ms: env.ingested_at_ms,
        });
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
        // A log nothing was stored from yet is read from its start: the group's committed
        // offset may be a position in the log before a rebase.
        let from_start = state.log > 0 && state.resume_after.is_none();
        if self.stale(p, generation) {
            return Ok(false);
        }
        self.partitions.insert(p, state);
        if from_start && offset > inspection.broker.low {
            self.move_to(p, inspection.broker.low, generation);
            return Ok(false);
        }
        Ok(true)
    }

    /// Waits until no insert of the partition's previous owner runs on the server.
    async fn fence(&mut self, p: i32) -> Result<(), Stop> {
        loop {
            let client = self.client.clone();
            let running = self
                .retry("fence", move || {
                    let client = client.clone();
                    async move { store::partition_insert_running(&client, p).await }
                })
                .await?;
            if !running {
                return Ok(());
            }
            tracing::info!(
                partition = p,
                "waiting for an insert of the partition's previous owner"
            );
            self.wait_polling(Duration::from_millis(50)).await?;
        }
    }

    /// Judges the partition's log (see [`log_reset::inspect`]), retrying failed looks at
    /// ClickHouse or Kafka with backoff.
    async fn inspect_retrying(&mut self, p: i32) -> Result<Inspection, Stop> {
        let mut backoff = Duration::from_millis(self.cfg.retry_initial_ms);
        loop {
            match log_reset::inspect(&self.client, &self.probe, &self.topic, p).await {
                Ok(inspection) => return Ok(inspection),
                Err(e) => {
                    self.metrics
                        .retries
                        .with_label_values(&["transient", "log_check"])
                        .inc();
                    tracing::warn!(partition = p, error = %e, backoff_ms = backoff.as_millis() as u64, "checking the partition's log failed; retrying");
                    self.wait_polling(backoff).await?;
                    backoff = self.next_backoff(backoff);
                }
            }
        }
    }

    /// The state of a partition judged consumable: its clues, and its position in the log.
    async fn load_state(&mut self, inspection: &Inspection) -> Result<PartitionState, Stop> {
        let Verdict::Consume { resume_after, .. } = inspection.verdict else {
            unreachable!("only consumable partitions are loaded");
        };
        let client = self.client.clone();
        let topic = self.topic.clone();
        let p = inspection.partition;
        let found = inspection.clone();
        let clues = self
            .retry("load_partition", move || {
                let client = client.clone();
                let topic = topic.clone();
                let found = found.clone();
                async move {
                    log_reset::adopt_cluster(&client, &found).await?;
                    store::load_partition(&client, &topic, p).await
                }
            })
            .await?;
        self.resume_all();
        Ok(PartitionState {
            log: inspection.stored.log,
            resume_after,
            clues,
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

    /// Runs a ClickHouse read until it succeeds, backing off and keeping the consumer polled
    /// (and paused: nothing new is read while ClickHouse does not answer).
    async fn retry<T, F, Fut>(&mut self, op: &'static str, mut f: F) -> Result<T, Stop>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, clickhouse::error::Error>>,
    {
        let mut backoff = Duration::from_millis(self.cfg.retry_initial_ms);
        loop {
            match f().await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let kind = store::classify(&e).kind();
                    self.metrics.retries.with_label_values(&[kind, op]).inc();
                    tracing::warn!(op, kind, error = %store::short_error(&e), backoff_ms = backoff.as_millis() as u64, "ClickHouse call failed; retrying");
                    self.pause_all();
                    self.wait_polling(backoff).await?;
                    backoff = self.next_backoff(backoff);
                }
            }
        }
    }

    fn next_backoff(&self, d: Duration) -> Duration {
        (d * 2).min(Duration::from_millis(self.cfg.retry_max_ms))
    }

    /// Sleeps for `d` (the poller thread keeps the consumer polled meanwhile; with the loop
    /// not taking messages, its channel fills and it pauses the partitions), then applies any
    /// rebalance that happened.
    async fn wait_polling(&mut self, d: Duration) -> Result<(), Stop> {
        tokio::select! {
            biased;
            _ = cancelled(&self.cancel) => return Err(Stop::Shutdown),
            _ = tokio::time::sleep(d) => {}
        }
        self.apply_notes();
        Ok(())
    }

    /// Marks the sink as held up by ClickHouse (the consumer itself is paused by the poller
    /// once the loop stops taking messages).
    fn pause_all(&mut self) {
        if !self.paused {
            tracing::warn!("waiting for ClickHouse; consumption stops once the buffer is full");
        }
        self.paused = true;
        self.metrics.paused.set(1);
    }

    fn resume_all(&mut self) {
        if !self.paused {
            return;
        }
        tracing::info!("ClickHouse takes inserts again; consumption resumed");
        self.paused = false;
        self.metrics.paused.set(0);
    }

    /// Writes the batch (DLQ records, then rows), then commits its offsets.
    ///
    /// The first attempt at the rows runs while the loop goes on reading and folding the next
    /// batch (ClickHouse works while the sink decodes); failures are then handled in sequence.
    async fn flush(&mut self) -> Result<(), Stop> {
        self.apply_notes();
        let batch = std::mem::take(&mut self.batch);
        if batch.is_empty() {
            self.last_flush = Instant::now();
            return Ok(());
        }
        let Batch {
            units,
            dlq,
            offsets,
            ..
        } = batch;
        let started = Instant::now();
        let facts = units.len();
        if !units.is_empty() {
            self.metrics.batch_rows.observe(units.len() as f64);
        }
        for record in dlq {
            if self.assigned.contains(&record.source_partition) {
                self.send_dlq(record).await?;
            }
        }
        if !units.is_empty() {
            let (mut units, first) = self.write_overlapped(units).await?;
            match first {
                Ok(()) => self.written(&units),
                Err((phase, e, query_id)) => {
                    tracing::warn!(
                        kind = store::classify(&e).kind(),
                        table = phase,
                        error = %store::short_error(&e),
                        rows = units.len(),
                        "insert failed"
                    );
                    if phase == store::EVENTS_TABLE {
                        self.forget_stored(&mut units, &query_id).await?;
                    }
                    self.write_units(units).await?;
                }
            }
        }
        self.commit(&offsets);
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
    #[allow(clippy::type_complexity)]
    async fn write_overlapped(
        &mut self,
        units: Vec<Unit>,
    ) -> Result<
        (
            Vec<Unit>,
            Result<(), (&'static str, clickhouse::error::Error, String)>,
        ),
        Stop,
    > {
        let units = Arc::new(units);
        let query_id = query_id_for(&units);
        let write = {
            let client = self.client.clone();
            let metrics = self.metrics.clone();
            let timeouts = self.timeouts;
            let units = units.clone();
            let query_id = query_id.clone();
            // Spawned, so that serializing the rows runs on another worker thread than the
            // decoding and folding of the next batch.
            AbortOnDrop(tokio::spawn(async move {
                insert_units(&client, &metrics, timeouts, &units, &query_id).await
            }))
        };
        let mut write = write;
        let result = loop {
            if self.batch_full() {
                break (&mut write.0).await;
            }
            if let Some((generation, m)) = self.stash.pop_front() {
                self.handle(generation, m).await?;
                continue;
            }
            let rx = self.rx.as_mut().expect("started");
            let item = tokio::select! {
                biased;
                r = &mut write.0 => break r,
                item = rx.recv() => item,
            };
            self.take(item)?;
        };
        let result = match result {
            Ok(r) => r,
            Err(join) => std::panic::resume_unwind(join.into_panic()),
        };
        let units = Arc::try_unwrap(units)
            .ok()
            .expect("the insert task has finished and released the units");
        Ok((units, result.map_err(|(phase, e)| (phase, e, query_id))))
    }

    /// Bookkeeping for acknowledged facts.
    fn written(&mut self, units: &[Unit]) {
        let now = now_ms();
        // Observed locally, published once for the batch.
        let freshness = self.metrics.freshness.local();
        let end_to_end = self.metrics.end_to_end_freshness.local();
        for u in units {
            let age = now.saturating_sub(u.event.occurred_at_ms) as f64 / 1000.0;
            freshness.observe(age);
            if let Some(ingested) = u.ingested_at_ms {
                end_to_end.observe(now.saturating_sub(ingested) as f64 / 1000.0);
            }
        }
        freshness.flush();
        end_to_end.flush();
        self.inserted += units.len() as u64;
    }

    /// Inserts the units, splitting a chunk ClickHouse refuses until the refused facts are
    /// isolated and sent to the DLQ.
    async fn write_units(&mut self, units: Vec<Unit>) -> Result<(), Stop> {
        let mut queue: VecDeque<Vec<Unit>> = VecDeque::from([units]);
        while let Some(mut chunk) = queue.pop_front() {
            chunk.retain(|u| self.assigned.contains(&u.source.partition));
            if chunk.is_empty() {
                continue;
            }
            match self.insert_chunk(&mut chunk).await {
                Ok(()) => self.written(&chunk),
                Err(Stop::Rejected(e)) if chunk.len() == 1 => {
                    let u = chunk.pop().expect("one unit");
                    let code = store::error_code(&e).unwrap_or(0);
                    self.metrics
                        .errors
                        .with_label_values(&["clickhouse_rejected"])
                        .inc();
                    tracing::warn!(
                        partition = u.source.partition,
                        offset = u.source.offset,
                        code,
                        "ClickHouse refused a fact; sending it to the DLQ"
                    );
                    let detail = format!(
                        "ClickHouse refused the row (code {code}): {}",
                        store::short_error(&e)
                    );
                    let record = dlq_record(
                        DlqReason::ClickhouseRejected,
                        detail,
                        &u.source,
                        u.message.key(),
                        u.message.payload().unwrap_or_default(),
                    );
                    self.send_dlq(record).await?;
                    self.undo(&u).await?;
                }
                Err(Stop::Rejected(_)) => {
                    let right = chunk.split_off(chunk.len() / 2);
                    queue.push_front(right);
                    queue.push_front(chunk);
                }
                Err(stop) => return Err(stop),
            }
        }
        Ok(())
    }

    /// Takes back a fact ClickHouse refused: its `clues` row was written before the refusal, so
    /// a row with the previous state at the same version replaces it (ReplacingMergeTree keeps
    /// the last of equal versions, and the clue's next fact has a higher one), and the state in
    /// memory goes back to what it was, so the fact can be replayed from the DLQ once fixed.
    async fn undo(&mut self, u: &Unit) -> Result<(), Stop> {
        let mut row = match &u.prev {
            Some(prev) => (**prev).clone(),
            None => ClueRow {
                clue_id: u.clue.clue_id,
                placement: "unknown".into(),
                kafka_partition: u.source.partition,
                ..ClueRow::default()
            },
        };
        row.version = u.event.seq;
        let client = self.client.clone();
        let timeouts = self.timeouts;
        let row = Arc::new(row);
        let r = row.clone();
        self.retry("undo", move || {
            let client = client.clone();
            let r = r.clone();
            async move { store::insert_clues(&client, &[&*r], timeouts).await }
        })
        .await?;
        self.resume_all();
        if let Some(part) = self.partitions.get_mut(&u.source.partition) {
            let latest = part.clues.get(&u.clue.clue_id).map(|s| s.row.version);
            if latest == Some(u.event.seq) {
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
        }
        Ok(())
    }

    /// One chunk, `clues` first then `clue_events` (whose rows mark the offsets as stored),
    /// retried until acknowledged or refused as data. After a failed `clue_events` insert the
    /// sink waits until the statement no longer runs on the server and drops from the chunk
    /// what ClickHouse kept (a statement cut off mid-stream may have stored a prefix), so no
    /// fact is inserted twice and the aggregates fed from `clue_events` stay exact.
    async fn insert_chunk(&mut self, chunk: &mut Vec<Unit>) -> Result<(), Stop> {
        let mut backoff = Duration::from_millis(self.cfg.retry_initial_ms);
        loop {
            let query_id = query_id_for(chunk);
            let (phase, e) =
                match insert_units(&self.client, &self.metrics, self.timeouts, chunk, &query_id)
                    .await
                {
                    Ok(()) => {
                        self.resume_all();
                        return Ok(());
                    }
                    Err(failed) => failed,
                };
            let failure = store::classify(&e);
            tracing::warn!(
                kind = failure.kind(),
                table = phase,
                error = %store::short_error(&e),
                rows = chunk.len(),
                "insert failed"
            );
            if phase == store::EVENTS_TABLE {
                self.forget_stored(chunk, &query_id).await?;
                if chunk.is_empty() {
                    self.resume_all();
                    return Ok(());
                }
            }
            if let Failure::Rejected(_) = failure {
                return Err(Stop::Rejected(e));
            }
            self.metrics
                .retries
                .with_label_values(&[failure.kind(), "insert"])
                .inc();
            self.pause_all();
            self.wait_polling(backoff).await?;
            backoff = self.next_backoff(backoff);
            chunk.retain(|u| self.assigned.contains(&u.source.partition));
            if chunk.is_empty() {
                self.resume_all();
                return Ok(());
            }
        }
    }

    /// Drops from `chunk` the facts a failed insert (`query_id`) stored after all.
    async fn forget_stored(&mut self, chunk: &mut Vec<Unit>, query_id: &str) -> Result<(), Stop> {
        loop {
            let client = self.client.clone();
            let id = query_id.to_owned();
            let running = self
                .retry("check_insert", move || {
                    let client = client.clone();
                    let id = id.clone();
                    async move { store::query_running(&client, &id).await }
                })
                .await?;
            if !running {
                break;
            }
            self.wait_polling(Duration::from_millis(100)).await?;
        }
        let mut ranges: BTreeMap<(i32, u32), (i64, i64)> = BTreeMap::new();
        for u in chunk.iter() {
            let r = ranges
                .entry((u.source.partition, u.source.log))
                .or_insert((u.source.offset, u.source.offset));
            r.0 = r.0.min(u.source.offset);
            r.1 = r.1.max(u.source.offset);
        }
        for ((p, log), (from, to)) in ranges {
            let client = self.client.clone();
            let topic = self.topic.clone();
            let stored = self
                .retry("check_stored", move || {
                    let client = client.clone();
                    let topic = topic.clone();
                    async move { store::stored_offset_in(&client, &topic, p, log, from, to).await }
                })
                .await?;
            if let Some(max) = stored {
                let before = chunk.len();
                chunk.retain(|u| {
                    u.source.partition != p || u.source.log != log || u.source.offset > max
                });
                let kept = before - chunk.len();
                tracing::info!(
                    partition = p,
                    up_to = max,
                    facts = kept,
                    "a failed insert stored these facts after all; not writing them again"
                );
                self.metrics
                    .skipped
                    .with_label_values(&["stored_by_failed_insert"])
                    .inc_by(kept as u64);
                self.inserted += kept as u64;
            }
        }
        Ok(())
    }

    /// Sends a record to the DLQ and waits for the broker's acknowledgement (retrying).
    async fn send_dlq(&mut self, record: DlqRecord) -> Result<(), Stop> {
        let payload = record.encode();
        let key = record.key.clone();
        let mut backoff = Duration::from_millis(self.cfg.retry_initial_ms);
        loop {
            let mut r = FutureRecord::to(&self.cfg.dlq_topic).payload(&payload);
            if let Some(k) = &key {
                r = r.key(k.as_str());
            }
            let timeout = Duration::from_millis(self.cfg.dlq_timeout_ms);
            match self.producer.send(r, timeout).await {
                Ok(_) => {
                    self.metrics
                        .dlq
                        .with_label_values(&[record.reason.as_str()])
                        .inc();
                    return Ok(());
                }
                Err((e, _)) => {
                    self.metrics
                        .retries
                        .with_label_values(&["transient", "dlq"])
                        .inc();
                    tracing::warn!(error = %e, "DLQ send failed; retrying");
                    self.wait_polling(backoff).await?;
                    backoff = self.next_backoff(backoff);
                }
            }
        }
    }

    fn commit(&self, offsets: &BTreeMap<i32, i64>) {
        if !matches!(self.mode, Mode::Live) {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for (p, o) in offsets {
            if self.assigned.contains(p) {
                if let Err(e) = tpl.add_partition_offset(&self.topic, *p, Offset::Offset(o + 1)) {
                    tracing::warn!(error = %e, "cannot build commit");
                }
            }
        }
        if tpl.count() == 0 {
            return;
        }
        // On the way out the commit must land before the consumer closes.
        let mode = if self.cancel.is_cancelled() {
            CommitMode::Sync
        } else {
            CommitMode::Async
        };
        if let Err(e) = self.consumer.commit(&tpl, mode) {
            self.metrics
                .errors
                .with_label_values(&["kafka_commit"])
                .inc();
            tracing::warn!(error = %e, "offset commit failed (the batch is re-read and skipped)");
        }
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

/// Aborts a spawned task when dropped (an early return must not leave an insert running).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The query id of an insert of `units` (it names their partitions, see
/// [`store::insert_query_id`]).
fn query_id_for(units: &[Unit]) -> String {
    let mut partitions: Vec<i32> = units.iter().map(|u| u.source.partition).collect();
    partitions.sort_unstable();
    partitions.dedup();
    store::insert_query_id(&partitions)
}

/// Writes `units`: the latest `clues` row of each clue first, then the `clue_events` rows (whose
/// offsets mark the facts as stored). Returns the table whose insert failed.
async fn insert_units(
    client: &Client,
    metrics: &SinkMetrics,
    timeouts: InsertTimeouts,
    units: &[Unit],
    query_id: &str,
) -> Result<(), (&'static str, clickhouse::error::Error)> {
    let mut latest: HashMap<Uuid, &ClueRow> = HashMap::with_capacity(units.len());
    for u in units {
        latest
            .entry(u.clue.clue_id)
            .and_modify(|r| {
                if u.clue.version >= r.version {
                    *r = &u.clue;
                }
            })
            .or_insert(&u.clue);
    }
    let clues: Vec<&ClueRow> = latest.into_values().collect();
    let events: Vec<&EventRow> = units.iter().map(|u| &u.event).collect();
    let t = Instant::now();
    store::insert_clues(client, &clues, timeouts)
        .await
        .map_err(|e| (store::CLUES_TABLE, e))?;
    observe_insert(metrics, store::CLUES_TABLE, clues.len(), t);
    let t = Instant::now();
    store::insert_events(client, &events, timeouts, query_id)
        .await
        .map_err(|e| (store::EVENTS_TABLE, e))?;
    observe_insert(metrics, store::EVENTS_TABLE, events.len(), t);
    Ok(())
}

fn observe_insert(metrics: &SinkMetrics, table: &str, rows: usize, started: Instant) {
    metrics
        .insert_duration
        .with_label_values(&[table])
        .observe(started.elapsed().as_secs_f64());
    metrics.batches_inserted.with_label_values(&[table]).inc();
    metrics
        .rows_inserted
        .with_label_values(&[table])
        .inc_by(rows as u64);
}

type BoxFuture<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;

// Named as a boxed `dyn Future + Send`: written inline in `select!`, the compiler cannot
// prove the loop's future `Send` for every lifetime.
fn cancelled(token: &CancellationToken) -> BoxFuture<'_, ()> {
    Box::pin(token.cancelled())
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

fn dlq_record(
    reason: DlqReason,
    detail: String,
    source: &Source,
    key: Option<&[u8]>,
    payload: &[u8],
) -> DlqRecord {
    let (payload, payload_is_hex) = DlqRecord::payload_of(payload);
    DlqRecord {
        v: SCHEMA_VERSION,
        reason,
        detail: detail.chars().take(500).collect(),
        stage: "sink".into(),
        source_topic: source.topic.to_string(),
        source_partition: source.partition,
        source_offset: source.offset,
        key: key.map(|k| String::from_utf8_lossy(k).into_owned()),
        payload,
        payload_is_hex,
        at_ms: now_ms(),
    }
}
