//! Local development stack for gridclue.
//!
//! The stack's Kafka-protocol broker is librdkafka's mock cluster ([`MockCluster`]): real Kafka
//! protocol brokers living inside one process and reachable by other processes at its bootstrap
//! address for as long as that process lives. This crate holds
//!
//! - the topic layout of the pipeline ([`standard_topics`]) so that the dev broker binary
//!   (`gridclue-devbroker`) and the integration tests create exactly the same topics,
//! - [`start_mock_cluster`], which starts a mock cluster, creates the topics and checks through a
//!   real client connection that the bootstrap address serves them,
//! - [`start_durable_cluster`], the same cluster restored from and recorded into a journal
//!   directory, so that the dev stack keeps its topics and consumer offsets across restarts
//!   ([`journal`] is the format on disk),
//! - small helpers for the address file the dev broker publishes ([`write_addr_file`]).
//!
//! Facts about the mock that shape this code: `AdminClient::create_topics` hangs against it, so
//! topics are created through the mock API; it keeps nothing across a restart by itself (hence
//! the journal); it numbers every partition's records from 0; it keeps only about 5 MB and
//! 100 000 batches per partition and drops older batches; it answers no ListGroups request; it
//! does not compact topics (the `clues.state` changelog simply keeps every record).

mod durable;
pub mod journal;

pub use durable::{
    start_durable_cluster, DurableKafka, JournalConfig, JournalReport, RestoreReport,
    DEFAULT_CATCH_UP_TIMEOUT, DEFAULT_FLUSH_INTERVAL, DEFAULT_SNAPSHOT_INTERVAL, GAP_FILLER_HEADER,
    SERVICE_GROUPS,
};

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, DefaultProducerContext, Producer};

pub use gridclue_core::wire::{
    ALERTS_TOPIC as TOPIC_ALERTS, COMMANDS_TOPIC as TOPIC_COMMANDS, DEDUPE_TOPIC as TOPIC_DEDUPE,
    DLQ_TOPIC as TOPIC_DLQ, EVENTS_TOPIC as TOPIC_EVENTS,
    HOTSPOT_INPUT_TOPIC as TOPIC_HOTSPOT_INPUT, OUTCOMES_TOPIC as TOPIC_OUTCOMES,
    STATE_TOPIC as TOPIC_STATE,
};

/// Number of brokers the dev broker runs.
pub const DEFAULT_BROKERS: i32 = 3;
/// Partition count of the keyed topics (commands, events, state).
pub const DEFAULT_PARTITIONS: i32 = 6;
/// The dead-letter queue has a single partition: it is inspected and replayed in order.
pub const DLQ_PARTITIONS: i32 = 1;
/// The hotspot detector's input has a single partition: its order is the detector's order.
pub const HOTSPOT_INPUT_PARTITIONS: i32 = 1;

/// How long [`start_mock_cluster`] waits for the new cluster to serve the topics' metadata.
pub const DEFAULT_VERIFY_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum DevstackError {
    #[error("invalid {what}: {value} (must be at least 1)")]
    InvalidCount { what: &'static str, value: i32 },
    #[error("mock cluster: {context}: {source}")]
    Kafka {
        context: String,
        #[source]
        source: KafkaError,
    },
    #[error("topic {topic} not served by the mock cluster within {timeout:?}: {detail}")]
    TopicNotReady {
        topic: String,
        timeout: Duration,
        detail: String,
    },
    #[error("address file {path}: {source}")]
    AddrFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Journal(#[from] journal::JournalError),
    #[error("journal {dir}: topic {topic} has {journaled} partitions there, {requested} requested (an empty journal directory starts over with another layout)")]
    JournalLayout {
        dir: PathBuf,
        topic: String,
        journaled: i32,
        requested: i32,
    },
    #[error("journal {dir}: {detail}")]
    JournalContent { dir: PathBuf, detail: String },
    #[error("replaying the journal: {detail}")]
    Replay { detail: String },
    #[error("no high watermark for {topic} [{partition}]: {detail}")]
    NoHighWatermark {
        topic: String,
        partition: i32,
        detail: String,
    },
    #[error("journal thread: {detail}")]
    JournalThread { detail: String },
}

impl DevstackError {
    fn kafka(context: impl Into<String>, source: KafkaError) -> Self {
        DevstackError::Kafka {
            context: context.into(),
            source,
        }
    }
}

/// One topic to create: name, partition count and replication factor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    pub replication_factor: i32,
}

impl TopicSpec {
    pub fn new(name: impl Into<String>, partitions: i32, replication_factor: i32) -> Self {
        TopicSpec {
            name: name.into(),
            partitions,
            replication_factor,
        }
    }
}

impl fmt::Display for TopicSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (partitions={}, replication={})",
            self.name, self.partitions, self.replication_factor
        )
    }
}

/// Replication factor used for a cluster of `brokers` brokers: 3 where there are 3 brokers or
/// more (what production uses), otherwise every broker.
pub fn replication_factor_for(brokers: i32) -> i32 {
    brokers.clamp(1, 3)
}

/// The pipeline's topics: `clues.commands`, `clues.events`, `clues.state`, `clues.dedupe` and
/// `clues.outcomes` and `clues.alerts` with `partitions` partitions each, and `clues.dlq` and
/// `clues.hotspot-input` with one.
pub fn standard_topics(partitions: i32, replication_factor: i32) -> Vec<TopicSpec> {
    vec![
        TopicSpec::new(TOPIC_COMMANDS, partitions, replication_factor),
        TopicSpec::new(TOPIC_EVENTS, partitions, replication_factor),
        TopicSpec::new(TOPIC_DLQ, DLQ_PARTITIONS, replication_factor),
        TopicSpec::new(TOPIC_STATE, partitions, replication_factor),
        TopicSpec::new(TOPIC_DEDUPE, partitions, replication_factor),
        TopicSpec::new(TOPIC_OUTCOMES, partitions, replication_factor),
        TopicSpec::new(
            TOPIC_HOTSPOT_INPUT,
            HOTSPOT_INPUT_PARTITIONS,
            replication_factor,
        ),
        TopicSpec::new(TOPIC_ALERTS, partitions, replication_factor),
    ]
}

/// A running in-process mock cluster with the topics it was started with.
///
/// Dropping it shuts the brokers down. It is not `Send` (it wraps a raw librdkafka handle): keep
/// it on the thread (or in the test function) that created it.
pub struct MockKafka {
    cluster: MockCluster<'static, DefaultProducerContext>,
    bootstrap: String,
    brokers: i32,
    topics: Vec<TopicSpec>,
}

impl MockKafka {
    /// The `bootstrap.servers` value for clients, e.g. `127.0.0.1:41234,127.0.0.1:…`.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    /// Number of brokers in the cluster.
    pub fn brokers(&self) -> i32 {
        self.brokers
    }

    /// The topics created at start (and by [`MockKafka::create_topic`] since).
    pub fn topics(&self) -> &[TopicSpec] {
        &self.topics
    }

    /// The underlying mock cluster, for fault injection in tests (`broker_down`,
    /// `request_errors`, `broker_round_trip_time`, …).
    pub fn cluster(&self) -> &MockCluster<'static, DefaultProducerContext> {
        &self.cluster
    }

    /// Creates one more topic.
    pub fn create_topic(&mut self, spec: TopicSpec) -> Result<(), DevstackError> {
        create_topics(&self.cluster, std::slice::from_ref(&spec))?;
        self.topics.push(spec);
        Ok(())
    }
}

impl fmt::Debug for MockKafka {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockKafka")
            .field("bootstrap", &self.bootstrap)
            .field("brokers", &self.brokers)
            .field("topics", &self.topics)
            .finish()
    }
}

/// Starts a mock cluster of `brokers` brokers, creates `topics`, and waits (up to
/// [`DEFAULT_VERIFY_TIMEOUT`]) until a client connected to the bootstrap address sees every topic
/// with its partition count. Blocking: call it before entering async code, or from
/// `spawn_blocking`, or accept the short block in a test.
pub fn start_mock_cluster(brokers: i32, topics: &[TopicSpec]) -> Result<MockKafka, DevstackError> {
    if brokers < 1 {
        return Err(DevstackError::InvalidCount {
            what: "broker count",
            value: brokers,
        });
    }
    let t0 = Instant::now();
    let cluster = MockCluster::new(brokers)
        .map_err(|e| DevstackError::kafka(format!("starting {brokers} brokers"), e))?;
    tracing::debug!(
        elapsed_ms = t0.elapsed().as_millis() as u64,
        brokers,
        "mock cluster started"
    );
    let bootstrap = cluster.bootstrap_servers();
    create_topics(&cluster, topics)?;
    // (the mock answers its first command after up to ~1 s: its thread polls at that interval)
    tracing::debug!(
        elapsed_ms = t0.elapsed().as_millis() as u64,
        "topics created"
    );
    verify_topics(&bootstrap, topics, DEFAULT_VERIFY_TIMEOUT)?;
    tracing::debug!(
        elapsed_ms = t0.elapsed().as_millis() as u64,
        "topics served"
    );
    Ok(MockKafka {
        cluster,
        bootstrap,
        brokers,
        topics: topics.to_vec(),
    })
}

/// Starts the stack's standard layout: [`DEFAULT_BROKERS`] brokers and [`standard_topics`] with
/// `partitions` partitions.
pub fn start_standard_cluster(partitions: i32) -> Result<MockKafka, DevstackError> {
    let topics = standard_topics(partitions, replication_factor_for(DEFAULT_BROKERS));
    start_mock_cluster(DEFAULT_BROKERS, &topics)
}

/// Creates `topics` through the mock API (synchronous; the admin protocol is not supported by
/// the mock). Works on any mock cluster, including one a client created via
/// `test.mock.num.brokers`.
pub fn create_topics<C>(
    cluster: &MockCluster<'_, C>,
    topics: &[TopicSpec],
) -> Result<(), DevstackError>
where
    C: rdkafka::ClientContext,
{
    for t in topics {
        if t.partitions < 1 {
            return Err(DevstackError::InvalidCount {
                what: "partition count",
                value: t.partitions,
            });
        }
        if t.replication_factor < 1 {
            return Err(DevstackError::InvalidCount {
                what: "replication factor",
                value: t.replication_factor,
            });
        }
        cluster
            .create_topic(&t.name, t.partitions, t.replication_factor)
            .map_err(|e| DevstackError::kafka(format!("creating topic {t}"), e))?;
    }
    Ok(())
}

/// Connects a client to `bootstrap` and waits until its metadata lists every topic of `topics`
/// with the expected partition count and a leader for each partition. Blocking.
pub fn verify_topics(
    bootstrap: &str,
    topics: &[TopicSpec],
    timeout: Duration,
) -> Result<(), DevstackError> {
    let client: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("client.id", "gridclue-devstack-verify")
        .create()
        .map_err(|e| DevstackError::kafka("creating metadata client", e))?;
    let deadline = Instant::now() + timeout;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let problem = match client
            .client()
            .fetch_metadata(None, remaining.max(Duration::from_millis(100)))
        {
            Ok(md) => topics.iter().find_map(|want| {
                let Some(got) = md.topics().iter().find(|t| t.name() == want.name) else {
                    return Some((want.name.clone(), "topic missing from metadata".to_string()));
                };
                if let Some(err) = got.error() {
                    return Some((want.name.clone(), format!("topic error {err:?}")));
                }
                if got.partitions().len() != want.partitions as usize {
                    return Some((
                        want.name.clone(),
                        format!(
                            "{} partitions, expected {}",
                            got.partitions().len(),
                            want.partitions
                        ),
                    ));
                }
                got.partitions()
                    .iter()
                    .find(|p| p.leader() < 0 || p.error().is_some())
                    .map(|p| {
                        (
                            want.name.clone(),
                            format!("partition {} has no leader yet", p.id()),
                        )
                    })
            }),
            Err(e) => Some((
                topics.first().map(|t| t.name.clone()).unwrap_or_default(),
                format!("metadata request failed: {e}"),
            )),
        };
        match problem {
            None => return Ok(()),
            Some((topic, detail)) if Instant::now() >= deadline => {
                return Err(DevstackError::TopicNotReady {
                    topic,
                    timeout,
                    detail,
                })
            }
            Some(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Writes `addr` (plus a newline) to `path` atomically: a temporary file in the same directory is
/// written, flushed and renamed over `path`, so a reader sees either no file or the whole address.
/// Creates the parent directory when missing.
pub fn write_addr_file(path: &Path, addr: &str) -> Result<(), DevstackError> {
    let err = |source| DevstackError::AddrFile {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir).map_err(err)?;
    let file_name = path
        .file_name()
        .ok_or_else(|| err(io::Error::new(io::ErrorKind::InvalidInput, "no file name")))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(addr.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(err)
}

/// Reads an address file written by [`write_addr_file`]; `None` when it does not exist or is
/// empty.
pub fn read_addr_file(path: &Path) -> Result<Option<String>, DevstackError> {
    match fs::read_to_string(path) {
        Ok(s) => {
            let s = s.trim();
            Ok((!s.is_empty()).then(|| s.to_string()))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(DevstackError::AddrFile {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Removes the address file if it still holds `addr` (a newer broker may have replaced it).
/// Returns whether it removed the file.
pub fn remove_addr_file_if_ours(path: &Path, addr: &str) -> Result<bool, DevstackError> {
    match read_addr_file(path)? {
        Some(current) if current == addr => {
            fs::remove_file(path).map_err(|source| DevstackError::AddrFile {
                path: path.to_path_buf(),
                source,
            })?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_layout() {
        let topics = standard_topics(DEFAULT_PARTITIONS, replication_factor_for(DEFAULT_BROKERS));
        let summary: Vec<(&str, i32, i32)> = topics
            .iter()
            .map(|t| (t.name.as_str(), t.partitions, t.replication_factor))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("clues.commands", 6, 3),
                ("clues.events", 6, 3),
                ("clues.dlq", 1, 3),
                ("clues.state", 6, 3),
                ("clues.dedupe", 6, 3),
                ("clues.outcomes", 6, 3),
                ("clues.hotspot-input", 1, 3),
                ("clues.alerts", 6, 3),
            ]
        );
    }

    #[test]
    fn replication_factor_is_bounded_by_brokers() {
        assert_eq!(replication_factor_for(1), 1);
        assert_eq!(replication_factor_for(2), 2);
        assert_eq!(replication_factor_for(3), 3);
        assert_eq!(replication_factor_for(5), 3);
    }

    #[test]
    fn addr_file_roundtrip_and_ownership() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested").join("kafka.addr");
        assert_eq!(read_addr_file(&path).unwrap(), None);

        write_addr_file(&path, "127.0.0.1:1,127.0.0.1:2").unwrap();
        assert_eq!(
            read_addr_file(&path).unwrap().as_deref(),
            Some("127.0.0.1:1,127.0.0.1:2")
        );
        // no temporary file left behind
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("kafka.addr")]);

        // a newer broker's address is not removed by an older one
        write_addr_file(&path, "127.0.0.1:3").unwrap();
        assert!(!remove_addr_file_if_ours(&path, "127.0.0.1:1,127.0.0.1:2").unwrap());
        assert!(path.exists());
        assert!(remove_addr_file_if_ours(&path, "127.0.0.1:3").unwrap());
        assert!(!path.exists());
    }

    #[test]
    fn rejects_bad_counts() {
        assert!(matches!(
            start_mock_cluster(0, &[]),
            Err(DevstackError::InvalidCount { .. })
        ));
        assert!(matches!(
            start_mock_cluster(1, &[TopicSpec::new("t", 0, 1)]),
            Err(DevstackError::InvalidCount { .. })
        ));
    }
}
