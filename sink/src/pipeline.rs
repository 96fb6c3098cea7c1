//! The consume → fold → batch → insert → commit loop.
//!
//! Guarantees, and how they are kept:
//! - **Nothing lost**: a partition's offset is committed only after every fact read from it up to
//!   that offset is acknowledged by ClickHouse (or, for records that cannot be projected, by the
//!   DLQ's broker). While ClickHouse refuses inserts for a transient reason the consumer is
//!   paused (backpressure) and the same batch is retried with exponential backoff, forever.
//! - **Nothing doubled**: a fact's identity is `(clue_id, seq)`. When the sink takes a partition
//!   over it loads, from ClickHouse, the state of every clue of that partition and the highest
//!   seq stored for it; a fact at or below that seq is skipped. It also skips offsets at or
//!   below the highest one stored in `clue_events` (the row carries its Kafka position), so a
//!   crash between insert and commit never writes a batch twice. The tables are
//!   ReplacingMergeTrees keyed by identity besides, so even a copy that slips through changes
//!   no number read with `FINAL`.
//! - **Bad input never blocks a partition**: undecodable records, and rows ClickHouse refuses
//!   as data (found by bisecting the refused batch), go to the DLQ with a reason code; the
//!   partition's offset moves on past them.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clickhouse::Client;
use gridclue_core::wire::{now_ms, DlqReason, DlqRecord, EventEnvelope, SCHEMA_VERSION};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaResult;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::metrics::SinkMetrics;
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
}

/// A change of partition ownership seen by the consumer callbacks.
#[derive(Debug)]
enum Note {
    Assigned(Vec<i32>),
    Revoked(Vec<i32>),
}

/// Rebalances seen by the callbacks, not yet applied by the loop.
type Notes = Arc<Mutex<Vec<Note>>>;

/// Consumer callbacks: record rebalances for the loop, which applies them between messages.
pub struct SinkContext {
    topic: String,
    notes: Notes,
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
        self.notes.lock().expect("notes lock").push(note);
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
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
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
    /// Offsets at or below this are already stored in `clue_events`.
    resume_after: Option<i64>,
    clues: HashMap<Uuid, ClueState>,
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
    consumer: StreamConsumer<SinkContext>,
    producer: FutureProducer,
    metrics: SinkMetrics,
    cancel: CancellationToken,
    topic: Arc<str>,
    notes: Notes,
    mode: Mode,
    assigned: HashSet<i32>,
    partitions: HashMap<i32, PartitionState>,
    batch: Batch,
    stash: VecDeque<OwnedMessage>,
    last_flush: Instant,
    paused: bool,
    timeouts: InsertTimeouts,
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
) -> anyhow::Result<(StreamConsumer<SinkContext>, Notes)> {
    let notes = Arc::new(Mutex::new(Vec::new()));
    let context = SinkContext {
        topic: cfg.events_topic.clone(),
        notes: notes.clone(),
    };
    let mut c = gridclue_core::kafka::consumer_config(&cfg.kafka_brokers, group_id);
    c.set("fetch.max.bytes", "52428800")
        .set("queued.max.messages.kbytes", "65536");
    if replay {
        c.set("enable.partition.eof", "true");
    }
    let consumer: StreamConsumer<SinkContext> = c.create_with_context(context)?;
    Ok((consumer, notes))
}

impl Pipeline {
    pub(crate) fn new(
        cfg: Arc<SinkConfig>,
        client: Client,
        metrics: SinkMetrics,
        cancel: CancellationToken,
        mode: Mode,
    ) -> anyhow::Result<Self> {
        let group = match &mode {
            Mode::Live => cfg.group_id.clone(),
            Mode::Replay { .. } => format!("{}-replay-{}", cfg.group_id, Uuid::new_v4()),
        };
        let replay = matches!(mode, Mode::Replay { .. });
        let (consumer, notes) = consumer(&cfg, &group, replay)?;
        let producer: FutureProducer =
            gridclue_core::kafka::producer_config(&cfg.kafka_brokers, cfg.dlq_timeout_ms)
                .create()?;
        let timeouts = InsertTimeouts {
            send: Duration::from_millis(cfg.insert_timeout_ms),
            end: Duration::from_millis(cfg.insert_timeout_ms),
        };
        Ok(Self {
            topic: cfg.events_topic.as_str().into(),
            cfg,
            client,
            consumer,
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
        match result {
            Ok(()) | Err(Stop::Shutdown) => {}
            Err(Stop::Rejected(e)) => return Err(e.into()),
        }
        // A last flush when ClickHouse takes it; if it does not, nothing is committed and the
        // facts are read again next time.
        match self.flush().await {
            Ok(()) | Err(Stop::Shutdown) => {}
            Err(Stop::Rejected(e)) => return Err(e.into()),
        }
        if matches!(self.mode, Mode::Live) {
            if let Ok(tpl) = self.consumer.committed(Duration::from_secs(2)) {
                tracing::debug!(?tpl, "committed offsets at shutdown");
            }
        }
        Ok(())
    }

    async fn run_inner(&mut self) -> Result<(), Stop> {
        enum Event {
            Shutdown,
            Due,
            Message(OwnedMessage),
            KafkaError(rdkafka::error::KafkaError),
        }
        loop {
            self.apply_notes();
            while let Some(m) = self.stash.pop_front() {
                self.handle(m).await?;
                if self.batch_full() {
                    self.flush().await?;
                }
            }
            if self.replay_finished() {
                return Ok(());
            }
            let due = self.due_at();
            let event = tokio::select! {
                biased;
                _ = cancelled(&self.cancel) => Event::Shutdown,
                _ = sleep_until_opt(due) => Event::Due,
                m = recv(&self.consumer) => match m {
                    Ok(m) => Event::Message(m),
                    Err(e) => Event::KafkaError(e),
                },
            };
            match event {
                Event::Shutdown => return Err(Stop::Shutdown),
                Event::Due => self.flush().await?,
                Event::Message(m) => {
                    self.handle(m).await?;
                    if self.batch_full() {
                        self.flush().await?;
                    }
                }
                Event::KafkaError(rdkafka::error::KafkaError::PartitionEOF(p)) => {
                    if matches!(self.mode, Mode::Replay { .. }) {
                        self.done.insert(p);
                    }
                }
                Event::KafkaError(e) => {
                    tracing::warn!(error = %e, "consumer error");
                    self.metrics
                        .errors
                        .with_label_values(&["kafka_consume"])
                        .inc();
                    self.wait_polling(Duration::from_millis(100)).await?;
                }
            }
        }
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
        let notes: Vec<Note> = std::mem::take(&mut *self.notes.lock().expect("notes lock"));
        for note in notes {
            match note {
                Note::Assigned(ps) => {
                    for p in ps {
                        self.assigned.insert(p);
                        self.partitions.remove(&p);
                    }
                    if self.paused {
                        self.pause_all();
                    }
                }
                Note::Revoked(ps) => {
                    for p in &ps {
                        self.assigned.remove(p);
                        self.partitions.remove(p);
                    }
                    self.batch.drop_partitions(&ps);
                    self.stash.retain(|m| !ps.contains(&m.partition()));
                }
            }
        }
    }

    async fn handle(&mut self, msg: OwnedMessage) -> Result<(), Stop> {
        self.apply_notes();
        let p = msg.partition();
        let offset = msg.offset();
        if msg.topic() != &*self.topic || !self.assigned.contains(&p) {
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
        self.ensure_loaded(p).await?;
        if !self.assigned.contains(&p) {
            return Ok(()); // revoked while loading
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
        let event = rows::event_row(&env, &row, &source);
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
            key: key.map(<[u8]>::to_vec),
            payload: payload.to_vec(),
        });
        Ok(())
    }

    /// Loads a partition's clue states and stored position from ClickHouse, once per ownership.
    async fn ensure_loaded(&mut self, p: i32) -> Result<(), Stop> {
        if self.partitions.contains_key(&p) {
            return Ok(());
        }
        let client = self.client.clone();
        let topic = self.topic.clone();
        let started = Instant::now();
        let (resume_after, clues) = self
            .retry("load_partition", move || {
                let client = client.clone();
                let topic = topic.clone();
                async move {
                    let resume = store::stored_offset(&client, &topic, p).await?;
                    let clues = store::load_partition(&client, &topic, p).await?;
                    Ok((resume, clues))
                }
            })
            .await?;
        self.resume_all();
        tracing::info!(
            partition = p,
            clues = clues.len(),
            resume_after,
            ms = started.elapsed().as_millis() as u64,
            "partition state loaded"
        );
        self.partitions.insert(
            p,
            PartitionState {
                resume_after,
                clues,
            },
        );
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

    /// Sleeps for `d` while still polling the consumer, so the group keeps us (and tells us
    /// about rebalances). Messages that arrive are kept for later.
    async fn wait_polling(&mut self, d: Duration) -> Result<(), Stop> {
        let until = tokio::time::Instant::now() + d;
        loop {
            tokio::select! {
                biased;
                _ = cancelled(&self.cancel) => return Err(Stop::Shutdown),
                _ = tokio::time::sleep_until(until) => return Ok(()),
                m = recv(&self.consumer) => {
                    if let Ok(m) = m {
                        self.stash.push_back(m);
                    }
                }
            }
            let had_notes = !self.notes.lock().expect("notes lock").is_empty();
            if had_notes {
                self.apply_notes();
            }
        }
    }

    fn pause_all(&mut self) {
        if let Ok(tpl) = self.consumer.assignment() {
            if let Err(e) = self.consumer.pause(&tpl) {
                tracing::warn!(error = %e, "cannot pause partitions");
            }
        }
        if !self.paused {
            tracing::warn!("paused consumption until ClickHouse takes inserts again");
        }
        self.paused = true;
        self.metrics.paused.set(1);
    }

    fn resume_all(&mut self) {
        if !self.paused {
            return;
        }
        if let Ok(tpl) = self.consumer.assignment() {
            if let Err(e) = self.consumer.resume(&tpl) {
                tracing::warn!(error = %e, "cannot resume partitions");
            }
        }
        tracing::info!("ClickHouse takes inserts again; consumption resumed");
        self.paused = false;
        self.metrics.paused.set(0);
    }

    /// Writes the batch (DLQ records, then rows), then commits its offsets.
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
        if !units.is_empty() {
            self.metrics.batch_rows.observe(units.len() as f64);
        }
        for record in dlq {
            if self.assigned.contains(&record.source_partition) {
                self.send_dlq(record).await?;
            }
        }
        self.write_units(units).await?;
        self.commit(&offsets);
        self.last_flush = Instant::now();
        Ok(())
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
                Ok(()) => {
                    let now = now_ms();
                    for u in &chunk {
                        let age = now.saturating_sub(u.event.occurred_at_ms) as f64 / 1000.0;
                        self.metrics.freshness.observe(age);
                    }
                    self.inserted += chunk.len() as u64;
                }
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
                        u.key.as_deref(),
                        &u.payload,
                    );
                    self.send_dlq(record).await?;
                    self.undo(&u).await?;
                }
                Err(Stop::Rejected(_)) => {
                    let right = chunk.split_off(chunk.len() / 2);
                    queue.push_front(right);
                    queue.push_front(chunk);
                }
                Err(Stop::Shutdown) => return Err(Stop::Shutdown),
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
            let query_id = format!("gridclue-sink-{}", Uuid::new_v4());
            let (phase, e) = match self.insert_once(chunk, &query_id).await {
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
        let mut ranges: BTreeMap<i32, (i64, i64)> = BTreeMap::new();
        for u in chunk.iter() {
            let r = ranges
                .entry(u.source.partition)
                .or_insert((u.source.offset, u.source.offset));
            r.0 = r.0.min(u.source.offset);
            r.1 = r.1.max(u.source.offset);
        }
        for (p, (from, to)) in ranges {
            let client = self.client.clone();
            let topic = self.topic.clone();
            let stored = self
                .retry("check_stored", move || {
                    let client = client.clone();
                    let topic = topic.clone();
                    async move { store::stored_offset_in(&client, &topic, p, from, to).await }
                })
                .await?;
            if let Some(max) = stored {
                let before = chunk.len();
                chunk.retain(|u| u.source.partition != p || u.source.offset > max);
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

    async fn insert_once(
        &self,
        chunk: &[Unit],
        query_id: &str,
    ) -> Result<(), (&'static str, clickhouse::error::Error)> {
        let mut latest: HashMap<Uuid, &ClueRow> = HashMap::with_capacity(chunk.len());
        for u in chunk {
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
        let events: Vec<&EventRow> = chunk.iter().map(|u| &u.event).collect();
        let t = Instant::now();
        store::insert_clues(&self.client, &clues, self.timeouts)
            .await
            .map_err(|e| (store::CLUES_TABLE, e))?;
        self.observe_insert(store::CLUES_TABLE, clues.len(), t);
        let t = Instant::now();
        store::insert_events(&self.client, &events, self.timeouts, query_id)
            .await
            .map_err(|e| (store::EVENTS_TABLE, e))?;
        self.observe_insert(store::EVENTS_TABLE, events.len(), t);
        Ok(())
    }

    fn observe_insert(&self, table: &str, rows: usize, started: Instant) {
        self.metrics
            .insert_duration
            .with_label_values(&[table])
            .observe(started.elapsed().as_secs_f64());
        self.metrics
            .batches_inserted
            .with_label_values(&[table])
            .inc();
        self.metrics
            .rows_inserted
            .with_label_values(&[table])
            .inc_by(rows as u64);
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
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
            self.metrics
                .errors
                .with_label_values(&["kafka_commit"])
                .inc();
            tracing::warn!(error = %e, "offset commit failed (the batch is re-read and skipped)");
        }
    }
}

type BoxFuture<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;

// The two helpers below name their futures as boxed `dyn Future + Send`: written inline in
// `select!`, the compiler cannot prove the loop's future `Send` for every lifetime.
fn recv(consumer: &StreamConsumer<SinkContext>) -> BoxFuture<'_, KafkaResult<OwnedMessage>> {
    Box::pin(async move { consumer.recv().await.map(|m| m.detach()) })
}

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
