//! A mock cluster that keeps its state across restarts, as a broker with volumes would.
//!
//! librdkafka's mock cluster keeps everything in memory. [`start_durable_cluster`] gives it a
//! journal directory ([`crate::journal`]):
//!
//! - at start, before anyone gets the bootstrap address, every journaled record is produced
//!   again, in order, to the partition it came from. The mock numbers each partition's records
//!   from 0, so every record gets back its offset (checked record by record through the delivery
//!   reports, then through the high watermarks). Then the consumer groups' committed offsets are
//!   committed again;
//! - while it runs, a consumer of its own tails every partition of every topic and appends what
//!   it reads to the journal (fsync'd every [`JournalConfig::flush_interval`]); the committed
//!   offsets of [`JournalConfig::groups`] are read every [`JournalConfig::snapshot_interval`]
//!   (the mock answers no ListGroups, so the groups are named up front) and written once the
//!   journal has read every record produced before them (see `PendingOffsets`);
//! - [`DurableKafka::shutdown`] lets the journal catch up with every partition's high watermark,
//!   fsyncs it and writes a last snapshot of the committed offsets. Stop the clients first: what
//!   they produce or commit after that is not kept.
//!
//! What a kill (SIGKILL) of the owning process loses: records the journal had not read yet
//! (its read lag, logged when it exceeds the flush interval) and commits after the last
//! snapshot written, which never marks as consumed an input whose outputs were lost; what the journal read is handed to the operating system at once (every
//! [`WRITE_OUT_INTERVAL`] under a stream of records). A crash of the machine also loses what was
//! not fsync'd yet (at most [`JournalConfig::flush_interval`]). A committed offset beyond a
//! partition's restored end is lowered to that end (and logged).
//!
//! Offsets the journal never saw are produced again as empty records with the
//! [`GAP_FILLER_HEADER`] header, so that every later record keeps its offset. That happens only
//! when the mock dropped records (it keeps about 5 MB and 100 000 batches per partition) before
//! the journal read them, i.e. when the journal fell that far behind.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tracing::{error, info, warn};

use crate::journal::{
    self, CommittedOffset, GroupOffsets, JournalRecord, JournalWriter, TopicLayout, GROUPS_FILE,
    TOPICS_FILE,
};
use crate::{replication_factor_for, start_mock_cluster, DevstackError, MockKafka, TopicSpec};

/// The consumer groups of the pipeline's services (enrich's processor and dedupe stage, the
/// hotspot sequencer and detector, the sink's facts and alerts): the groups a dev broker
/// journals unless told otherwise.
pub const SERVICE_GROUPS: [&str; 6] = [
    "gridclue-enrich",
    "gridclue-enrich-dedupe",
    "gridclue-hotspots",
    "gridclue-hotspots-detector",
    "gridclue-sink",
    "gridclue-sink-alerts",
];

/// Header of the empty records that stand in for offsets the journal never saw.
pub const GAP_FILLER_HEADER: &str = "gridclue-devbroker-gap";

/// Default of [`JournalConfig::flush_interval`].
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_millis(200);
/// Default of [`JournalConfig::snapshot_interval`].
pub const DEFAULT_SNAPSHOT_INTERVAL: Duration = Duration::from_secs(1);
/// Default of [`JournalConfig::catch_up_timeout`].
pub const DEFAULT_CATCH_UP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one request to the mock (offsets, watermarks, metadata) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the journal looks for topics and partitions created since it started.
const LAYOUT_CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// Under a steady stream of records, how often the journal hands what it read to the operating
/// system (without fsync): what a kill of the broker can lose on top of the journal's read lag.
pub const WRITE_OUT_INTERVAL: Duration = Duration::from_millis(5);
/// The journal's consumer asks the mock for records this often: the mock answers a fetch only
/// after `fetch.wait.max.ms`, never early, so this bounds the journal's read lag when idle.
const JOURNAL_FETCH_WAIT_MS: &str = "10";
/// How often a running journal or a replay logs its progress.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(30);
const REPLAY_PROGRESS_INTERVAL: Duration = Duration::from_secs(2);
/// At most one warning this often while the journal reads records later than it promises.
const LAG_WARNING_INTERVAL: Duration = Duration::from_secs(1);

type PartitionKey = (String, i32);

/// Where and how a [`DurableKafka`] keeps its state.
#[derive(Debug, Clone)]
pub struct JournalConfig {
    /// The journal directory (created when missing).
    pub dir: PathBuf,
    /// Consumer groups whose committed offsets are kept (besides those the journal already
    /// holds).
    pub groups: Vec<String>,
    /// Journaled records are fsync'd at least this often: what a crash can lose.
    pub flush_interval: Duration,
    /// Committed offsets are read and, when changed, written this often.
    pub snapshot_interval: Duration,
    /// How long [`DurableKafka::shutdown`] waits for the journal to reach the high watermarks.
    pub catch_up_timeout: Duration,
}

impl JournalConfig {
    /// A journal in `dir` for the services' groups, with the default intervals.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        JournalConfig {
            dir: dir.into(),
            groups: SERVICE_GROUPS.iter().map(|g| g.to_string()).collect(),
            flush_interval: DEFAULT_FLUSH_INTERVAL,
            snapshot_interval: DEFAULT_SNAPSHOT_INTERVAL,
            catch_up_timeout: DEFAULT_CATCH_UP_TIMEOUT,
        }
    }
}

/// What a start restored from the journal.
#[derive(Debug, Clone, Default)]
pub struct RestoreReport {
    /// Journaled records produced again.
    pub records: u64,
    /// Empty records produced for offsets the journal never saw.
    pub gap_fillers: u64,
    /// Bytes of a torn journal tail cut off (a crash during a write).
    pub torn_bytes: u64,
    /// Every partition's end offset (high watermark) after the replay.
    pub end_offsets: BTreeMap<PartitionKey, i64>,
    /// Committed offsets committed again.
    pub committed_offsets: usize,
    /// Committed offsets lowered to their partition's end (records lost in a crash).
    pub clamped_offsets: usize,
    /// Time the start took: the brokers, the replay and its checks, the committed offsets.
    pub elapsed: Duration,
}

/// What the journal recorded while the cluster ran.
#[derive(Debug, Clone, Default)]
pub struct JournalReport {
    /// Records appended.
    pub records: u64,
    /// Bytes appended.
    pub bytes: u64,
    /// Offsets skipped because the mock had dropped them before the journal read them.
    pub missed_offsets: u64,
    /// Every partition's next offset to journal when it stopped.
    pub end_offsets: BTreeMap<PartitionKey, i64>,
    /// Partitions it could not catch up with before [`JournalConfig::catch_up_timeout`]:
    /// (topic, partition, journaled up to, high watermark).
    pub lagging: Vec<(String, i32, i64, i64)>,
}

/// A mock cluster restored from a journal and journaling what it is sent.
///
/// Not `Send` (see [`MockKafka`]). Dropping it stops the journal the way
/// [`DurableKafka::shutdown`] does (errors are only logged).
pub struct DurableKafka {
    recorder: Recorder,
    restored: RestoreReport,
    kafka: MockKafka,
}

impl DurableKafka {
    /// The `bootstrap.servers` value for clients.
    pub fn bootstrap_servers(&self) -> &str {
        self.kafka.bootstrap_servers()
    }

    /// The mock cluster.
    pub fn kafka(&self) -> &MockKafka {
        &self.kafka
    }

    /// What the start restored.
    pub fn restored(&self) -> &RestoreReport {
        &self.restored
    }

    /// Lets the journal catch up with every partition, makes it durable, writes the last
    /// snapshot of the committed offsets, then stops the brokers. Stop the clients first.
    pub fn shutdown(mut self) -> Result<JournalReport, DevstackError> {
        self.recorder.finish()
    }
}

impl Drop for DurableKafka {
    fn drop(&mut self) {
        if self.recorder.is_running() {
            match self.recorder.finish() {
                Ok(report) => info!(records = report.records, "journal stopped"),
                Err(e) => warn!(error = %e, "journal stopped with an error"),
            }
        }
    }
}

impl std::fmt::Debug for DurableKafka {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DurableKafka")
            .field("kafka", &self.kafka)
            .field("restored", &self.restored)
            .finish()
    }
}

/// Starts a mock cluster of `brokers` brokers with `topics` plus every topic the journal in
/// `config.dir` holds, restores the journaled records and committed offsets, and starts
/// journaling. Returns once the restored cluster serves the records at their old offsets, so
/// the bootstrap address can be published. Blocking.
///
/// Fails when a topic of `topics` has another partition count in the journal (an empty journal
/// directory is how to start over with another layout).
pub fn start_durable_cluster(
    brokers: i32,
    topics: &[TopicSpec],
    config: JournalConfig,
) -> Result<DurableKafka, DevstackError> {
    let started = Instant::now();
    let dir = &config.dir;
    std::fs::create_dir_all(dir).map_err(|source| journal::JournalError::Io {
        path: dir.clone(),
        source,
    })?;
    let mut layout: TopicLayout = journal::read_json(dir, TOPICS_FILE)?.unwrap_or_default();
    for t in topics {
        match layout.topics.get(&t.name) {
            Some(&journaled) if journaled != t.partitions => {
                return Err(DevstackError::JournalLayout {
                    dir: dir.clone(),
                    topic: t.name.clone(),
                    journaled,
                    requested: t.partitions,
                })
            }
            Some(_) => {}
            None => {
                layout.topics.insert(t.name.clone(), t.partitions);
            }
        }
    }
    journal::write_json(dir, TOPICS_FILE, &layout)?;
    let mut specs = topics.to_vec();
    for (name, &partitions) in &layout.topics {
        if !specs.iter().any(|t| &t.name == name) {
            specs.push(TopicSpec::new(
                name.clone(),
                partitions,
                replication_factor_for(brokers),
            ));
        }
    }
    let kafka = start_mock_cluster(brokers, &specs)?;

    let mut restored = replay(&config, kafka.bootstrap_servers(), &layout)?;
    let offsets = restore_group_offsets(&config, kafka.bootstrap_servers(), &mut restored)?;
    restored.elapsed = started.elapsed();
    info!(
        records = restored.records,
        gap_fillers = restored.gap_fillers,
        committed_offsets = restored.committed_offsets,
        elapsed_ms = restored.elapsed.as_millis() as u64,
        dir = %dir.display(),
        "journal restored"
    );
    let recorder = Recorder::start(
        &config,
        kafka.bootstrap_servers(),
        layout,
        restored.end_offsets.clone(),
        offsets,
    )?;
    Ok(DurableKafka {
        recorder,
        restored,
        kafka,
    })
}

// --- replay -------------------------------------------------------------------------------------

/// Checks every delivery of the replay: it must land at the offset the journal recorded.
#[derive(Default)]
struct ReplayContext {
    failed: AtomicU64,
    misplaced: AtomicU64,
    first_problem: Mutex<Option<String>>,
}

impl ReplayContext {
    fn note(&self, counter: &AtomicU64, problem: impl FnOnce() -> String) {
        counter.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut first) = self.first_problem.lock() {
            first.get_or_insert_with(problem);
        }
    }
}

impl ClientContext for ReplayContext {}

impl ProducerContext for ReplayContext {
    /// The offset the record must get.
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, expected: usize) {
        match result {
            Ok(m) if m.offset() as usize == expected => {}
            Ok(m) => self.note(&self.misplaced, || {
                format!(
                    "{} [{}]: a record journaled at offset {expected} landed at {}",
                    m.topic(),
                    m.partition(),
                    m.offset()
                )
            }),
            Err((e, m)) => self.note(&self.failed, || {
                format!(
                    "{} [{}]: the record of offset {expected} was refused: {e}",
                    m.topic(),
                    m.partition()
                )
            }),
        }
    }
}

type ReplayRecord<'a> = BaseRecord<'a, [u8], [u8], usize>;

fn send(
    producer: &BaseProducer<ReplayContext>,
    record: ReplayRecord<'_>,
) -> Result<(), DevstackError> {
    let mut record = record;
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                producer.poll(Duration::from_millis(50));
                record = back;
            }
            Err((e, _)) => return Err(DevstackError::kafka("replaying the journal", e)),
        }
    }
}

/// Produces every journaled record again and checks that each kept its offset.
fn replay(
    config: &JournalConfig,
    bootstrap: &str,
    layout: &TopicLayout,
) -> Result<RestoreReport, DevstackError> {
    let producer: BaseProducer<ReplayContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("client.id", "gridclue-devbroker-replay")
        // acks=all + idempotence: in order and exactly once even when a request is retried
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        // Batches of at most 128 KiB: the mock drops whole batches when a partition outgrows
        // its ~5 MB, so small batches keep its log start close to where it was.
        .set("batch.size", "131072")
        .set("queue.buffering.max.messages", "500000")
        .set("message.timeout.ms", "120000")
        .create_with_context(ReplayContext::default())
        .map_err(|e| DevstackError::kafka("creating the replay producer", e))?;

    let mut next: BTreeMap<PartitionKey, i64> = layout
        .topics
        .iter()
        .flat_map(|(t, &n)| (0..n).map(move |p| ((t.clone(), p), 0)))
        .collect();
    let mut report = RestoreReport::default();
    let filler_headers = OwnedHeaders::new().insert(Header {
        key: GAP_FILLER_HEADER,
        value: Some(&b"1"[..]),
    });
    let mut last_progress = Instant::now();
    let dir = &config.dir;
    let scanned = journal::scan(dir, |record: JournalRecord| {
        let key = (record.topic.clone(), record.partition);
        let Some(expected) = next.get_mut(&key) else {
            return Err(DevstackError::JournalContent {
                dir: dir.clone(),
                detail: format!(
                    "a record of {} [{}], a partition missing from {TOPICS_FILE}",
                    record.topic, record.partition
                ),
            });
        };
        if record.offset < *expected {
            return Err(DevstackError::JournalContent {
                dir: dir.clone(),
                detail: format!(
                    "{} [{}]: offset {} after {} (records out of order)",
                    record.topic,
                    record.partition,
                    record.offset,
                    *expected - 1
                ),
            });
        }
        while *expected < record.offset {
            let filler = ReplayRecord::with_opaque_to(&record.topic, *expected as usize)
                .partition(record.partition)
                .headers(filler_headers.clone());
            send(&producer, filler)?;
            report.gap_fillers += 1;
            *expected += 1;
        }
        let mut out = ReplayRecord::with_opaque_to(&record.topic, record.offset as usize)
            .partition(record.partition);
        if let Some(ts) = record.timestamp_ms {
            out = out.timestamp(ts);
        }
        if let Some(k) = record.key.as_deref() {
            out = out.key(k);
        }
        if let Some(v) = record.value.as_deref() {
            out = out.payload(v);
        }
        if !record.headers.is_empty() {
            let headers = record.headers.iter().fold(
                OwnedHeaders::new_with_capacity(record.headers.len()),
                |h, (k, v)| {
                    h.insert(Header {
                        key: k,
                        value: v.as_deref(),
                    })
                },
            );
            out = out.headers(headers);
        }
        send(&producer, out)?;
        *expected += 1;
        report.records += 1;
        if report.records % 1024 == 0 {
            producer.poll(Duration::ZERO);
            if last_progress.elapsed() >= REPLAY_PROGRESS_INTERVAL {
                info!(records = report.records, "replaying the journal");
                last_progress = Instant::now();
            }
        }
        Ok(())
    })??;
    if scanned.torn_bytes > 0 {
        warn!(
            bytes = scanned.torn_bytes,
            records = scanned.records,
            "the journal ends in a torn or corrupt frame (the dev broker was killed during a write); cut it off"
        );
        journal::truncate_torn_tail(dir, &scanned)?;
    }
    report.torn_bytes = scanned.torn_bytes;
    producer
        .flush(Duration::from_secs(120))
        .map_err(|e| DevstackError::kafka("waiting for the replayed records", e))?;
    let context = producer.context();
    let problems =
        context.failed.load(Ordering::Relaxed) + context.misplaced.load(Ordering::Relaxed);
    if problems > 0 {
        let first = context
            .first_problem
            .lock()
            .ok()
            .and_then(|p| p.clone())
            .unwrap_or_default();
        return Err(DevstackError::Replay {
            detail: format!(
                "{problems} records did not get their journaled offset; first: {first}"
            ),
        });
    }
    let reader = reader_client(bootstrap, "gridclue-devbroker-replay-check", "50")?;
    let high = high_watermarks(&reader, next.keys())?;
    if high != next {
        let (topic, partition, high, end) = next
            .iter()
            .find_map(|(k, &end)| {
                let h = high.get(k).copied().unwrap_or(-1);
                (h != end).then(|| (k.0.clone(), k.1, h, end))
            })
            .unwrap_or_default();
        return Err(DevstackError::Replay {
            detail: format!("{topic} [{partition}]: high watermark {high}, journal end {end}"),
        });
    }
    if report.gap_fillers > 0 {
        warn!(
            fillers = report.gap_fillers,
            header = GAP_FILLER_HEADER,
            "offsets the journal never saw were filled with empty records"
        );
    }
    report.end_offsets = next;
    Ok(report)
}

/// A consumer that never joins or commits: it reads assigned partitions and asks for offsets.
fn reader_client(
    bootstrap: &str,
    name: &str,
    fetch_wait_ms: &str,
) -> Result<BaseConsumer, DevstackError> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("client.id", name)
        .set("group.id", name)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", fetch_wait_ms)
        .set("isolation.level", "read_uncommitted")
        .create()
        .map_err(|e| DevstackError::kafka(format!("creating the {name} client"), e))
}

fn group_client(bootstrap: &str, group: &str) -> Result<BaseConsumer, DevstackError> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("client.id", "gridclue-devbroker-offsets")
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| DevstackError::kafka(format!("creating a client of group {group}"), e))
}

/// Commits the journaled offsets of every group again (a fresh mock has no group, so a plain
/// commit outside any generation is accepted) and reads them back.
fn restore_group_offsets(
    config: &JournalConfig,
    bootstrap: &str,
    report: &mut RestoreReport,
) -> Result<GroupOffsets, DevstackError> {
    let saved: GroupOffsets = journal::read_json(&config.dir, GROUPS_FILE)?.unwrap_or_default();
    let mut restored = GroupOffsets::default();
    for (group, offsets) in &saved.groups {
        let mut kept = Vec::new();
        let mut tpl = TopicPartitionList::new();
        for o in offsets {
            let Some(&end) = report.end_offsets.get(&(o.topic.clone(), o.partition)) else {
                warn!(group = %group, topic = %o.topic, partition = o.partition,
                      "committed offset of a partition the journal does not hold; dropped");
                continue;
            };
            let offset = if o.offset > end {
                warn!(group = %group, topic = %o.topic, partition = o.partition,
                      committed = o.offset, end,
                      "committed offset beyond the journal's end (records acknowledged after the last journal flush were lost); lowered to the end");
                report.clamped_offsets += 1;
                end
            } else {
                o.offset
            };
            tpl.add_partition_offset(&o.topic, o.partition, Offset::Offset(offset))
                .map_err(|e| DevstackError::kafka("building a commit", e))?;
            kept.push(CommittedOffset {
                topic: o.topic.clone(),
                partition: o.partition,
                offset,
            });
        }
        if kept.is_empty() {
            continue;
        }
        let client = group_client(bootstrap, group)?;
        client
            .commit(&tpl, CommitMode::Sync)
            .map_err(|e| DevstackError::kafka(format!("committing the offsets of {group}"), e))?;
        let back = read_committed(&client, &tpl)
            .map_err(|e| DevstackError::kafka(format!("reading the offsets of {group}"), e))?;
        if back != kept {
            return Err(DevstackError::Replay {
                detail: format!("group {group}: committed {kept:?}, read back {back:?}"),
            });
        }
        report.committed_offsets += kept.len();
        restored.groups.insert(group.clone(), kept);
    }
    Ok(restored)
}

/// The group's committed offsets among `partitions` (sorted; partitions without one left out).
fn read_committed(
    client: &BaseConsumer,
    partitions: &TopicPartitionList,
) -> Result<Vec<CommittedOffset>, KafkaError> {
    let tpl = client.committed_offsets(partitions.clone(), REQUEST_TIMEOUT)?;
    let mut out: Vec<CommittedOffset> = tpl
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(offset) => Some(CommittedOffset {
                topic: e.topic().to_string(),
                partition: e.partition(),
                offset,
            }),
            _ => None,
        })
        .collect();
    out.sort();
    Ok(out)
}

/// Every partition's high watermark in one ListOffsets request per leader (asking partition by
/// partition costs the mock tens of ms each).
fn high_watermarks<'a>(
    client: &BaseConsumer,
    partitions: impl Iterator<Item = &'a PartitionKey>,
) -> Result<BTreeMap<PartitionKey, i64>, DevstackError> {
    let mut tpl = TopicPartitionList::new();
    for (topic, partition) in partitions {
        // a timestamp of -1 asks for the latest offset
        tpl.add_partition_offset(topic, *partition, Offset::End)
            .map_err(|e| DevstackError::kafka("building a watermarks request", e))?;
    }
    let answer = client
        .offsets_for_times(tpl, REQUEST_TIMEOUT)
        .map_err(|e| DevstackError::kafka("reading the high watermarks", e))?;
    answer
        .elements()
        .iter()
        .map(|e| match (e.error(), e.offset()) {
            (Ok(()), Offset::Offset(high)) => Ok(((e.topic().to_string(), e.partition()), high)),
            (result, offset) => Err(DevstackError::NoHighWatermark {
                topic: e.topic().to_string(),
                partition: e.partition(),
                detail: format!("{offset:?} {result:?}"),
            }),
        })
        .collect()
}

// --- recording ----------------------------------------------------------------------------------

/// The journal thread and the way to stop it.
struct Recorder {
    stop: mpsc::Sender<()>,
    thread: Option<JoinHandle<Result<JournalReport, DevstackError>>>,
}

impl Recorder {
    fn start(
        config: &JournalConfig,
        bootstrap: &str,
        layout: TopicLayout,
        next: BTreeMap<PartitionKey, i64>,
        offsets: GroupOffsets,
    ) -> Result<Recorder, DevstackError> {
        let consumer = reader_client(
            bootstrap,
            "gridclue-devbroker-journal",
            JOURNAL_FETCH_WAIT_MS,
        )?;
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), &offset) in &next {
            tpl.add_partition_offset(topic, *partition, Offset::Offset(offset))
                .map_err(|e| DevstackError::kafka("building the journal assignment", e))?;
        }
        consumer
            .assign(&tpl)
            .map_err(|e| DevstackError::kafka("assigning the journal consumer", e))?;
        let group_names: BTreeSet<String> = config
            .groups
            .iter()
            .cloned()
            .chain(offsets.groups.keys().cloned())
            .collect();
        let groups = group_names
            .into_iter()
            .map(|g| group_client(bootstrap, &g).map(|c| (g, c)))
            .collect::<Result<Vec<_>, _>>()?;
        let tape = Tape {
            writer: JournalWriter::open(&config.dir)?,
            next,
            report: JournalReport::default(),
            max_read_lag: Duration::ZERO,
        };
        let state = RecorderState {
            config: config.clone(),
            consumer,
            groups,
            layout,
            offsets,
            pending: None,
            tape,
        };
        let (stop, stopped) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("devbroker-journal".into())
            .spawn(move || {
                let result = state.run(stopped);
                if let Err(e) = &result {
                    error!(error = %e, "the journal stopped: what the broker is sent from now on is not kept");
                }
                result
            })
            .map_err(|e| DevstackError::JournalThread {
                detail: format!("cannot start: {e}"),
            })?;
        Ok(Recorder {
            stop,
            thread: Some(thread),
        })
    }

    fn is_running(&self) -> bool {
        self.thread.is_some()
    }

    fn finish(&mut self) -> Result<JournalReport, DevstackError> {
        let thread = self
            .thread
            .take()
            .ok_or_else(|| DevstackError::JournalThread {
                detail: "already stopped".into(),
            })?;
        // A send error means the thread already ended; its result says why.
        let _ = self.stop.send(());
        thread.join().map_err(|_| DevstackError::JournalThread {
            detail: "panicked".into(),
        })?
    }
}

struct RecorderState {
    config: JournalConfig,
    consumer: BaseConsumer,
    groups: Vec<(String, BaseConsumer)>,
    layout: TopicLayout,
    /// The committed offsets last written to the journal.
    offsets: GroupOffsets,
    /// Committed offsets read but not written yet: the journal has not read everything
    /// produced before them.
    pending: Option<PendingOffsets>,
    tape: Tape,
}

/// Committed offsets, and every partition's high watermark read just after them.
///
/// A consumer that produces what it derives from its input (enrich: commands in, facts out)
/// commits its input only once its output is acknowledged, so every output of a committed input
/// lies below these watermarks. Written only once the journal has read up to them, a snapshot
/// never outlives the outputs of what it marks as consumed: after a kill, a consumer whose
/// outputs were lost reads their inputs again instead of skipping them.
struct PendingOffsets {
    offsets: GroupOffsets,
    high: BTreeMap<PartitionKey, i64>,
}

impl PendingOffsets {
    /// Whether the journal, at `next` per partition, has read up to every watermark.
    fn journaled(&self, next: &BTreeMap<PartitionKey, i64>) -> bool {
        self.high
            .iter()
            .all(|(k, &h)| next.get(k).is_some_and(|&at| at >= h))
    }
}

/// The records side of the journal: the writer and where each partition stands.
struct Tape {
    writer: JournalWriter,
    /// The next offset to journal per partition.
    next: BTreeMap<PartitionKey, i64>,
    report: JournalReport,
    /// The longest time between a record's creation and the journal reading it, since the
    /// recording loop last looked.
    max_read_lag: Duration,
}

impl RecorderState {
    fn run(mut self, stop: mpsc::Receiver<()>) -> Result<JournalReport, DevstackError> {
        let mut last_flush = Instant::now();
        let mut last_write_out = Instant::now();
        let mut last_snapshot = Instant::now();
        let mut last_layout_check = Instant::now();
        let mut last_progress = (Instant::now(), 0u64);
        let mut last_lag_warning: Option<Instant> = None;
        let mut unreported_lag = Duration::ZERO;
        while let Err(mpsc::TryRecvError::Empty) = stop.try_recv() {
            let polled = self.consumer.poll(Duration::from_millis(10));
            let idle = polled.is_none();
            if let Some(message) = polled {
                self.tape.record(message)?;
            }
            // A kill loses only what the journal has not read: hand what it read to the system
            // as soon as the consumer's queue runs dry, and regularly under a steady stream.
            if idle || last_write_out.elapsed() >= WRITE_OUT_INTERVAL {
                self.tape.writer.write_out()?;
                last_write_out = Instant::now();
            }
            if last_flush.elapsed() >= self.config.flush_interval {
                self.tape.writer.sync()?;
                last_flush = Instant::now();
            }
            // The largest lag beyond the promise since the last warning: what a kill in that
            // time could lose.
            let lag = std::mem::take(&mut self.tape.max_read_lag);
            if lag > self.config.flush_interval {
                unreported_lag = unreported_lag.max(lag);
            }
            if unreported_lag > Duration::ZERO
                && last_lag_warning.is_none_or(|at| at.elapsed() >= LAG_WARNING_INTERVAL)
            {
                warn!(
                    read_lag_ms = unreported_lag.as_millis() as u64,
                    promise_ms = self.config.flush_interval.as_millis() as u64,
                    "the journal reads records later than the flush interval after they were produced: a kill now loses more than the promise"
                );
                unreported_lag = Duration::ZERO;
                last_lag_warning = Some(Instant::now());
            }
            if self.pending.is_none() && last_snapshot.elapsed() >= self.config.snapshot_interval {
                self.read_offsets();
                last_snapshot = Instant::now();
            }
            self.write_offsets_journaled()?;
            if last_layout_check.elapsed() >= LAYOUT_CHECK_INTERVAL {
                self.follow_new_partitions()?;
                last_layout_check = Instant::now();
            }
            if last_progress.0.elapsed() >= PROGRESS_INTERVAL {
                if self.tape.report.records != last_progress.1 {
                    info!(
                        records = self.tape.report.records,
                        bytes = self.tape.writer.bytes_written(),
                        "journal"
                    );
                }
                last_progress = (Instant::now(), self.tape.report.records);
            }
        }
        self.catch_up()
    }

    /// Reads the groups' committed offsets and, when they changed, the high watermarks after
    /// them; they are written once the journal has read up to those watermarks.
    fn read_offsets(&mut self) {
        let now = match self.committed_offsets() {
            Ok(now) => now,
            Err(e) => {
                warn!(error = %e, "cannot read committed offsets");
                return;
            }
        };
        if now == self.offsets {
            return;
        }
        match high_watermarks(&self.consumer, self.tape.next.keys()) {
            Ok(high) => {
                self.pending = Some(PendingOffsets { offsets: now, high });
            }
            Err(e) => {
                warn!(error = %e, "cannot read the high watermarks; committed offsets kept as they were")
            }
        }
    }

    /// Writes the pending committed offsets once the journal has read up to their watermarks.
    /// The journal is fsync'd first: a snapshot never points past the durable records.
    fn write_offsets_journaled(&mut self) -> Result<(), DevstackError> {
        let journaled = self
            .pending
            .as_ref()
            .is_some_and(|p| p.journaled(&self.tape.next));
        if let (true, Some(p)) = (journaled, self.pending.take()) {
            self.write_offsets(p.offsets)?;
        }
        Ok(())
    }

    fn write_offsets(&mut self, offsets: GroupOffsets) -> Result<(), DevstackError> {
        self.tape.writer.sync()?;
        journal::write_json(&self.config.dir, GROUPS_FILE, &offsets)?;
        self.offsets = offsets;
        Ok(())
    }

    /// Every group's committed offsets (a group that cannot be read keeps its last ones).
    fn committed_offsets(&self) -> Result<GroupOffsets, DevstackError> {
        let mut partitions = TopicPartitionList::new();
        for (topic, partition) in self.tape.next.keys() {
            partitions
                .add_partition_offset(topic, *partition, Offset::Invalid)
                .map_err(|e| DevstackError::kafka("building an offsets request", e))?;
        }
        let mut now = GroupOffsets::default();
        for (group, client) in &self.groups {
            match read_committed(client, &partitions) {
                Ok(offsets) if offsets.is_empty() => {}
                Ok(offsets) => {
                    now.groups.insert(group.clone(), offsets);
                }
                Err(e) => {
                    warn!(group = %group, error = %e, "cannot read committed offsets; keeping the last ones");
                    if let Some(last) = self.offsets.groups.get(group) {
                        now.groups.insert(group.clone(), last.clone());
                    }
                }
            }
        }
        Ok(now)
    }

    /// Journals topics and partitions created since the start (clients may auto-create topics).
    fn follow_new_partitions(&mut self) -> Result<(), DevstackError> {
        let metadata = match self.consumer.fetch_metadata(None, REQUEST_TIMEOUT) {
            Ok(m) => m,
            Err(e) => {
                warn!(error = %e, "cannot read the cluster's topics");
                return Ok(());
            }
        };
        let mut added = TopicPartitionList::new();
        for t in metadata.topics() {
            if t.error().is_some() || t.name().starts_with("__") {
                continue;
            }
            let partitions = t.partitions().len() as i32;
            let known = self.layout.topics.get(t.name()).copied().unwrap_or(0);
            if partitions <= known {
                continue;
            }
            self.layout.topics.insert(t.name().to_string(), partitions);
            for p in known..partitions {
                added
                    .add_partition_offset(t.name(), p, Offset::Beginning)
                    .map_err(|e| DevstackError::kafka("building the journal assignment", e))?;
                self.tape.next.insert((t.name().to_string(), p), 0);
            }
            info!(
                topic = t.name(),
                partitions, "journaling a new topic or partitions"
            );
        }
        if added.count() > 0 {
            // the layout is durable before any record of the new partitions
            journal::write_json(&self.config.dir, TOPICS_FILE, &self.layout)?;
            self.consumer
                .incremental_assign(&added)
                .map_err(|e| DevstackError::kafka("assigning new partitions to the journal", e))?;
        }
        Ok(())
    }

    /// Reads until every partition's high watermark (or the catch-up timeout), makes the
    /// journal durable and writes the last offsets snapshot.
    fn catch_up(mut self) -> Result<JournalReport, DevstackError> {
        let started = Instant::now();
        let deadline = started + self.config.catch_up_timeout;
        let high = high_watermarks(&self.consumer, self.tape.next.keys())?;
        let lagging = loop {
            let lagging: Vec<(String, i32, i64, i64)> = high
                .iter()
                .filter_map(|(k, &h)| {
                    let at = self.tape.next.get(k).copied().unwrap_or(0);
                    (at < h).then(|| (k.0.clone(), k.1, at, h))
                })
                .collect();
            if lagging.is_empty() || Instant::now() >= deadline {
                break lagging;
            }
            if let Some(message) = self.consumer.poll(Duration::from_millis(50)) {
                self.tape.record(message)?;
            }
        };
        if !lagging.is_empty() {
            warn!(partitions = ?lagging, "the journal did not catch up before the timeout");
        }
        // The clients are stopped: their last commits follow everything they produced.
        let offsets = self.committed_offsets()?;
        self.write_offsets(offsets)?;
        self.tape.report.lagging = lagging;
        self.tape.report.bytes = self.tape.writer.bytes_written();
        self.tape.report.end_offsets = self.tape.next.clone();
        info!(
            records = self.tape.report.records,
            bytes = self.tape.report.bytes,
            catch_up_ms = started.elapsed().as_millis() as u64,
            "journal caught up and flushed"
        );
        Ok(self.tape.report)
    }
}

impl Tape {
    fn record(
        &mut self,
        message: Result<BorrowedMessage<'_>, KafkaError>,
    ) -> Result<(), DevstackError> {
        let m = match message {
            Ok(m) => m,
            Err(e) => {
                warn!(error = %e, "journal consumer");
                return Ok(());
            }
        };
        let key = (m.topic().to_string(), m.partition());
        let expected = self.next.get(&key).copied().unwrap_or(0);
        if m.offset() < expected {
            return Ok(()); // already journaled
        }
        if m.offset() > expected {
            self.report.missed_offsets += (m.offset() - expected) as u64;
            warn!(
                topic = %key.0,
                partition = key.1,
                from = expected,
                to = m.offset(),
                "the mock dropped records before the journal read them; a restart fills their offsets with empty records"
            );
        }
        let record = JournalRecord {
            topic: key.0.clone(),
            partition: key.1,
            offset: m.offset(),
            timestamp_ms: m.timestamp().to_millis(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            headers: m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                        .collect()
                })
                .unwrap_or_default(),
        };
        self.writer.append(&record)?;
        if let Some(created_ms) = m.timestamp().to_millis() {
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            let lag = Duration::from_millis(now_ms.saturating_sub(created_ms).max(0) as u64);
            self.max_read_lag = self.max_read_lag.max(lag);
        }
        self.report.records += 1;
        self.next.insert(key, m.offset() + 1);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(entries: &[(&str, i32, i64)]) -> BTreeMap<PartitionKey, i64> {
        entries
            .iter()
            .map(|&(t, p, o)| ((t.to_string(), p), o))
            .collect()
    }

    #[test]
    fn committed_offsets_wait_until_the_journal_has_read_every_watermark() {
        let pending = PendingOffsets {
            offsets: GroupOffsets::default(),
            high: at(&[("clues.commands", 0, 120), ("clues.events", 0, 80)]),
        };
        // The enrich group committed its commands up to 120 after its facts were acknowledged
        // below 80: until the journal holds those facts the commit is not kept.
        assert!(!pending.journaled(&at(&[("clues.commands", 0, 120), ("clues.events", 0, 79)])));
        assert!(!pending.journaled(&at(&[("clues.commands", 0, 119), ("clues.events", 0, 90)])));
        // A partition the journal has not started on is not read up to anything.
        assert!(!pending.journaled(&at(&[("clues.commands", 0, 120)])));
        assert!(pending.journaled(&at(&[("clues.commands", 0, 120), ("clues.events", 0, 80)])));
        assert!(pending.journaled(&at(&[
            ("clues.commands", 0, 130),
            ("clues.events", 0, 95),
            ("clues.dlq", 0, 3)
        ])));
    }
}
