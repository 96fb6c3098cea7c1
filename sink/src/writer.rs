//! Makes a batch durable: inserts its facts into ClickHouse and its undecodable records into the
//! DLQ, retrying with backoff while either does not answer.
//!
//! - Facts go first (`clue_events`), the clues' states (`clues`) after them, so a stored state
//!   never runs ahead of the stored facts: a sink killed between the two inserts reloads states a
//!   few facts behind and folds the stored facts it replays into them (see `pipeline`), and every
//!   fact it writes later is written against the state just before it.
//! - Rows ClickHouse refuses as data are isolated by splitting the refused chunk in halves;
//!   a single refused fact goes to the DLQ and is undone in the loop's memory (its state was not
//!   written: states follow their facts).
//! - After a failed `clue_events` insert the writer waits until the statement no longer runs on
//!   the server and marks in the retry what ClickHouse stored after all (a statement cut off
//!   mid-stream may have stored a prefix), so no fact is inserted twice; their states are still
//!   written, and the views' targets get the rows a crash kept from them (`view_repair`).
//!   After a failed `clues` insert only the states are retried.
//! - Facts of partitions the sink no longer owns are dropped from a retry: their next owner
//!   writes them.
//!
//! The writer holds no state of the loop; what it needs from it (rebalances applied during a
//! wait, which partitions are still owned, the clue states to undo) it asks through [`Feed`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clickhouse::Client;
use gridclue_core::wire::{now_ms, DlqReason, DlqRecord, SCHEMA_VERSION};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use uuid::Uuid;

use crate::batching::FromPartition;
use crate::metrics::SinkMetrics;
use crate::pipeline::{cancelled, Stop};
use crate::rows::{ClueRow, EventRow, Source};
use crate::store::{self, Failure, InsertTimeouts};
use crate::view_repair;
use crate::SinkConfig;

/// Whether a unit's fact is still to be inserted into `clue_events`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FactWrite {
    /// Not stored yet: the writer inserts the fact, then the clue's state.
    Pending,
    /// Stored by an insert that then failed (or whose state insert failed): only the state is
    /// left to write.
    StoredByFailedInsert,
    /// Stored before the sink restarted and read again: the fact is folded into a reloaded state
    /// that was written before it, and only that state is written.
    StoredBeforeRestart,
}

/// One fact on its way into ClickHouse.
pub(crate) struct Unit {
    pub event: EventRow,
    pub write: FactWrite,
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

impl FromPartition for Unit {
    fn partition(&self) -> i32 {
        self.source.partition
    }
}

/// What the writer needs from the loop that feeds it.
pub(crate) trait Feed {
    /// Applies the rebalances seen since the last call (the writer calls it after every wait).
    fn apply_rebalances(&mut self);
    /// Whether the sink still owns the partition.
    fn owns(&self, partition: i32) -> bool;
    /// A fact was refused and sent to the DLQ: its clue goes back to the state before it.
    fn undone(&mut self, unit: &Unit);
    /// Facts now stored in ClickHouse (by this writer, or by a failed insert after all).
    fn stored(&mut self, facts: usize);
}

/// The result of one insert attempt: the table whose insert failed, the error, and the query
/// id of the `clue_events` insert (to find out what it stored after all).
pub(crate) type Attempt = Result<(), (&'static str, clickhouse::error::Error, String)>;

/// Inserts batches into ClickHouse and records into the DLQ.
pub(crate) struct Writer {
    client: Client,
    producer: FutureProducer,
    metrics: SinkMetrics,
    timeouts: InsertTimeouts,
    topic: Arc<str>,
    dlq_topic: String,
    dlq_timeout: Duration,
    retry_initial: Duration,
    retry_max: Duration,
    cancel: CancellationToken,
    /// Whether the sink waits for ClickHouse (reported once per stretch).
    paused: AtomicBool,
}

impl Writer {
    pub(crate) fn new(
        cfg: &SinkConfig,
        client: Client,
        metrics: SinkMetrics,
        cancel: CancellationToken,
    ) -> anyhow::Result<Self> {
        let producer: FutureProducer =
            gridclue_core::kafka::producer_config(&cfg.kafka(), cfg.dlq_timeout_ms).create()?;
        Ok(Self {
            client,
            producer,
            metrics,
            timeouts: InsertTimeouts {
                send: Duration::from_millis(cfg.insert_timeout_ms),
                end: Duration::from_millis(cfg.insert_timeout_ms),
            },
            topic: cfg.events_topic.as_str().into(),
            dlq_topic: cfg.dlq_topic.clone(),
            dlq_timeout: Duration::from_millis(cfg.dlq_timeout_ms),
            retry_initial: Duration::from_millis(cfg.retry_initial_ms),
            retry_max: Duration::from_millis(cfg.retry_max_ms),
            cancel,
            paused: AtomicBool::new(false),
        })
    }

    /// Starts one insert attempt of `units` on another task (so that serializing the rows runs
    /// on another worker thread than the loop reading the next batch); dropping the handle
    /// aborts it.
    pub(crate) fn spawn_insert(&self, units: Arc<Vec<Unit>>) -> AbortOnDropHandle<Attempt> {
        let client = self.client.clone();
        let metrics = self.metrics.clone();
        let timeouts = self.timeouts;
        AbortOnDropHandle::new(tokio::spawn(async move {
            let query_id = query_id_for(&units);
            insert_units(&client, &metrics, timeouts, &units, &query_id)
                .await
                .map_err(|(phase, e)| (phase, e, query_id))
        }))
    }

    /// Finishes writing `units` after their first attempt failed.
    pub(crate) async fn recover(
        &self,
        mut units: Vec<Unit>,
        (phase, e, query_id): (&'static str, clickhouse::error::Error, String),
        feed: &mut impl Feed,
    ) -> Result<(), Stop> {
        tracing::warn!(
            kind = store::classify(&e).kind(),
            table = phase,
            error = %store::short_error(&e),
            rows = units.len(),
            "insert failed"
        );
        self.mark_stored(&mut units, phase, &query_id, feed).await?;
        self.write_units(units, feed).await
    }

    /// Bookkeeping for acknowledged facts.
    pub(crate) fn written(&self, units: &[Unit], feed: &mut impl Feed) {
        let now = now_ms();
        // Observed locally, published once for the batch.
        let freshness = self.metrics.freshness.local();
        let end_to_end = self.metrics.end_to_end_freshness.local();
        let mut stored = 0;
        for u in units
            .iter()
            .filter(|u| u.write != FactWrite::StoredBeforeRestart)
        {
            stored += 1;
            let age = now.saturating_sub(u.event.occurred_at_ms) as f64 / 1000.0;
            freshness.observe(age);
            if let Some(ingested) = u.ingested_at_ms {
                end_to_end.observe(now.saturating_sub(ingested) as f64 / 1000.0);
            }
        }
        freshness.flush();
        end_to_end.flush();
        feed.stored(stored);
    }

    /// Inserts the units, splitting a chunk ClickHouse refuses until the refused facts are
    /// isolated and sent to the DLQ.
    async fn write_units(&self, units: Vec<Unit>, feed: &mut impl Feed) -> Result<(), Stop> {
        let mut queue: VecDeque<Vec<Unit>> = VecDeque::from([units]);
        while let Some(mut chunk) = queue.pop_front() {
            chunk.retain(|u| feed.owns(u.source.partition));
            if chunk.is_empty() {
                continue;
            }
            match self.insert_chunk(&mut chunk, feed).await {
                Ok(()) => self.written(&chunk, feed),
                Err(Stop::Rejected(e)) if chunk.len() == 1 => {
                    let u = chunk.pop().expect("one unit");
                    if u.write == FactWrite::Pending {
                        self.refused(u, &e, feed).await?;
                    } else {
                        self.state_refused(&u, &e, feed);
                    }
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

    /// Sends a fact ClickHouse refused to the DLQ, then undoes it.
    async fn refused(
        &self,
        u: Unit,
        e: &clickhouse::error::Error,
        feed: &mut impl Feed,
    ) -> Result<(), Stop> {
        let code = store::error_code(e).unwrap_or(0);
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
            store::short_error(e)
        );
        let record = dlq_record(
            DlqReason::ClickhouseRejected,
            detail,
            &u.source,
            u.message.key(),
            u.message.payload().unwrap_or_default(),
        );
        self.send_dlq(record, feed).await?;
        self.undo(&u, feed);
        Ok(())
    }

    /// A state ClickHouse refused whose fact is stored: the fact counts and must not reach the
    /// DLQ (replayed from there it would count twice); the state in memory keeps it, so the
    /// clue's next fact writes a state that includes it.
    fn state_refused(&self, u: &Unit, e: &clickhouse::error::Error, feed: &mut impl Feed) {
        self.metrics
            .errors
            .with_label_values(&["clickhouse_rejected_state"])
            .inc();
        tracing::error!(
            partition = u.source.partition,
            offset = u.source.offset,
            error = %store::short_error(e),
            "ClickHouse refused a clue's state whose fact is stored; keeping the fact"
        );
        feed.stored(usize::from(u.write == FactWrite::StoredByFailedInsert));
    }

    /// Takes back a fact ClickHouse refused: nothing of it is stored (its state is written only
    /// after its fact), so only the state in memory goes back to what it was, and the fact can
    /// be replayed from the DLQ once fixed.
    fn undo(&self, u: &Unit, feed: &mut impl Feed) {
        self.resume_all();
        feed.undone(u);
    }

    /// One chunk, `clue_events` first (whose rows mark the offsets as stored) then `clues`,
    /// retried until acknowledged or refused as data.
    async fn insert_chunk(&self, chunk: &mut Vec<Unit>, feed: &mut impl Feed) -> Result<(), Stop> {
        let mut backoff = self.retry_initial;
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
            self.mark_stored(chunk, phase, &query_id, feed).await?;
            if let Failure::Rejected(_) = failure {
                return Err(Stop::Rejected(e));
            }
            self.metrics
                .retries
                .with_label_values(&[failure.kind(), "insert"])
                .inc();
            self.pause_all();
            self.wait(backoff, feed).await?;
            backoff = self.next_backoff(backoff);
            chunk.retain(|u| feed.owns(u.source.partition));
            if chunk.is_empty() {
                self.resume_all();
                return Ok(());
            }
        }
    }

    /// Marks in `chunk` the facts the failed insert stored: all of them when the state insert
    /// failed (the facts went first), else those the `clue_events` insert (`query_id`) stored
    /// after all.
    async fn mark_stored(
        &self,
        chunk: &mut [Unit],
        phase: &'static str,
        query_id: &str,
        feed: &mut impl Feed,
    ) -> Result<(), Stop> {
        if phase == store::CLUES_TABLE {
            for u in chunk.iter_mut().filter(|u| u.write == FactWrite::Pending) {
                u.write = FactWrite::StoredByFailedInsert;
            }
            return Ok(());
        }
        self.mark_stored_events(chunk, query_id, feed).await
    }

    /// Marks in `chunk` the facts a failed `clue_events` insert (`query_id`) stored after all.
    async fn mark_stored_events(
        &self,
        chunk: &mut [Unit],
        query_id: &str,
        feed: &mut impl Feed,
    ) -> Result<(), Stop> {
        loop {
            let running = self
                .retry_with(
                    "check_insert",
                    (self.client.clone(), query_id.to_owned()),
                    |(client, id)| async move { store::query_running(&client, &id).await },
                    feed,
                )
                .await?;
            if !running {
                break;
            }
            self.wait(Duration::from_millis(100), feed).await?;
        }
        let mut ranges: BTreeMap<(i32, u32), (i64, i64)> = BTreeMap::new();
        for u in chunk.iter().filter(|u| u.write == FactWrite::Pending) {
            let r = ranges
                .entry((u.source.partition, u.source.log))
                .or_insert((u.source.offset, u.source.offset));
            r.0 = r.0.min(u.source.offset);
            r.1 = r.1.max(u.source.offset);
        }
        let mut stored_ranges = Vec::new();
        for ((p, log), (from, to)) in ranges {
            let stored = self
                .retry_with(
                    "check_stored",
                    (self.client.clone(), self.topic.clone()),
                    |(client, topic)| async move {
                        store::stored_offset_in(&client, &topic, p, log, from, to).await
                    },
                    feed,
                )
                .await?;
            if let Some(max) = stored {
                let mut kept = 0;
                for u in chunk.iter_mut().filter(|u| {
                    u.write == FactWrite::Pending
                        && u.source.partition == p
                        && u.source.log == log
                        && u.source.offset <= max
                }) {
                    u.write = FactWrite::StoredByFailedInsert;
                    kept += 1;
                }
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
                stored_ranges.push(view_repair::OffsetRange {
                    partition: p,
                    log,
                    from,
                    to: max,
                });
            }
        }
        if !stored_ranges.is_empty() {
            let facts = view_repair::StoredFacts {
                topic: self.topic.to_string(),
                ranges: stored_ranges,
            };
            self.repair_views(facts, feed).await?;
        }
        Ok(())
    }

    /// Gives the views' targets the stored facts a crash between the table's write and its
    /// views' kept from them (see `view_repair`).
    async fn repair_views(
        &self,
        facts: view_repair::StoredFacts,
        feed: &mut impl Feed,
    ) -> Result<(), Stop> {
        let outcomes = self
            .retry_with(
                "repair_views",
                (self.client.clone(), facts.clone()),
                |(client, facts)| async move { view_repair::repair(&client, &facts).await },
                feed,
            )
            .await?;
        for (view, outcome) in outcomes {
            self.metrics
                .view_repairs
                .with_label_values(&[view, outcome.label()])
                .inc();
            match outcome {
                view_repair::Outcome::Complete => {}
                view_repair::Outcome::Repaired => tracing::warn!(
                    view,
                    facts = ?facts.ranges,
                    "a view had none of the facts a failed insert stored; its rows were inserted"
                ),
                view_repair::Outcome::Unresolved => tracing::error!(
                    view,
                    facts = ?facts.ranges,
                    "a view differs from the facts by more than a failed insert's; run \
                     gridclue-sink check-aggregates"
                ),
            }
        }
        Ok(())
    }

    /// Sends a record to the DLQ and waits for the broker's acknowledgement (retrying).
    pub(crate) async fn send_dlq(
        &self,
        record: DlqRecord,
        feed: &mut impl Feed,
    ) -> Result<(), Stop> {
        let payload = record.encode();
        let key = record.key.clone();
        let mut backoff = self.retry_initial;
        loop {
            let mut r = FutureRecord::to(&self.dlq_topic).payload(&payload);
            if let Some(k) = &key {
                r = r.key(k.as_str());
            }
            match self.producer.send(r, self.dlq_timeout).await {
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
                    self.wait(backoff, feed).await?;
                    backoff = self.next_backoff(backoff);
                }
            }
        }
    }

    /// Runs a ClickHouse call until it succeeds, backing off and keeping the consumer polled
    /// (and paused: nothing new is read while ClickHouse does not answer).
    /// [`Self::retry`] of `f` on a fresh clone of `state` per attempt (each attempt's future
    /// owns what it reads).
    pub(crate) async fn retry_with<S, T, F, Fut>(
        &self,
        op: &'static str,
        state: S,
        f: F,
        feed: &mut impl Feed,
    ) -> Result<T, Stop>
    where
        S: Clone,
        F: Fn(S) -> Fut,
        Fut: Future<Output = Result<T, clickhouse::error::Error>>,
    {
        self.retry(op, || f(state.clone()), feed).await
    }

    pub(crate) async fn retry<T, F, Fut>(
        &self,
        op: &'static str,
        mut f: F,
        feed: &mut impl Feed,
    ) -> Result<T, Stop>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, clickhouse::error::Error>>,
    {
        let mut backoff = self.retry_initial;
        loop {
            match f().await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let kind = store::classify(&e).kind();
                    self.metrics.retries.with_label_values(&[kind, op]).inc();
                    tracing::warn!(op, kind, error = %store::short_error(&e), backoff_ms = backoff.as_millis() as u64, "ClickHouse call failed; retrying");
                    self.pause_all();
                    self.wait(backoff, feed).await?;
                    backoff = self.next_backoff(backoff);
                }
            }
        }
    }

    /// The first wait between retries.
    pub(crate) fn first_backoff(&self) -> Duration {
        self.retry_initial
    }

    pub(crate) fn next_backoff(&self, d: Duration) -> Duration {
        (d * 2).min(self.retry_max)
    }

    /// Sleeps for `d` (the poller thread keeps the consumer polled meanwhile; with the loop
    /// not taking messages, its channel fills and it pauses the partitions), then applies any
    /// rebalance that happened.
    pub(crate) async fn wait(&self, d: Duration, feed: &mut impl Feed) -> Result<(), Stop> {
        tokio::select! {
            biased;
            _ = cancelled(&self.cancel) => return Err(Stop::Shutdown),
            _ = tokio::time::sleep(d) => {}
        }
        feed.apply_rebalances();
        Ok(())
    }

    /// Marks the sink as held up by ClickHouse (the consumer itself is paused by the poller
    /// once the loop stops taking messages).
    fn pause_all(&self) {
        if !self.paused.swap(true, Ordering::Relaxed) {
            tracing::warn!("waiting for ClickHouse; consumption stops once the buffer is full");
        }
        self.metrics.paused.set(1);
    }

    pub(crate) fn resume_all(&self) {
        if !self.paused.swap(false, Ordering::Relaxed) {
            return;
        }
        tracing::info!("ClickHouse takes inserts again; consumption resumed");
        self.metrics.paused.set(0);
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

/// Writes `units`: the `clue_events` rows not stored yet first (their offsets mark the facts as
/// stored), then the latest `clues` row of each clue. Returns the table whose insert failed.
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
    let events: Vec<&EventRow> = units
        .iter()
        .filter(|u| u.write == FactWrite::Pending)
        .map(|u| &u.event)
        .collect();
    if !events.is_empty() {
        let t = Instant::now();
        store::insert_events(client, &events, timeouts, query_id)
            .await
            .map_err(|e| (store::EVENTS_TABLE, e))?;
        observe_insert(metrics, store::EVENTS_TABLE, events.len(), t);
    }
    let t = Instant::now();
    store::insert_clues(client, &clues, timeouts)
        .await
        .map_err(|e| (store::CLUES_TABLE, e))?;
    observe_insert(metrics, store::CLUES_TABLE, clues.len(), t);
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

/// The DLQ record of a record the sink cannot project.
pub(crate) fn dlq_record(
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
