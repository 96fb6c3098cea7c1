//! Shared helpers for gridclue's end-to-end tests: a mock Kafka cluster per test, a fresh
//! ClickHouse database per test on the one test server, and the services run in-process on
//! port 0.

pub mod alerts;
pub mod browser;
pub mod ch;
pub mod facts;
pub mod indicators_reference;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

pub const DEFAULT_TEST_CLICKHOUSE_URL: &str = "http://127.0.0.1:18123";

/// The ClickHouse server tests use (started by `make test`).
pub fn clickhouse_url() -> String {
    std::env::var("GRIDCLUE_TEST_CLICKHOUSE_URL")
        .unwrap_or_else(|_| DEFAULT_TEST_CLICKHOUSE_URL.to_owned())
}

/// A database name no other test uses.
pub fn unique_database(prefix: &str) -> String {
    format!("gridclue_t_{prefix}_{}", rand_suffix())
}

fn rand_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{}_{nanos}", std::process::id())
}

/// The shipped district map (`data/district/grids.geojson`), loaded once per test binary with
/// the loader the services use.
pub fn shipped_map() -> &'static gridclue_district::District {
    static MAP: OnceLock<gridclue_district::District> = OnceLock::new();
    MAP.get_or_init(|| {
        gridclue_district::load_geojson(data_dir().join("district/grids.geojson"))
            .expect("the shipped map loads")
    })
}

/// The repository's `data/` directory.
pub fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data")
}

/// A mock Kafka cluster with the stack's standard layout (3 brokers, gridclue's topics),
/// in memory or journaled like the dev stack's broker.
pub struct Broker {
    pub bootstrap: String,
    kafka: Kafka,
}

enum Kafka {
    /// Held for its lifetime: dropping it stops the brokers.
    InMemory {
        _cluster: gridclue_devstack::MockKafka,
    },
    Journaled(gridclue_devstack::DurableKafka),
}

impl Broker {
    pub fn start() -> Self {
        let kafka =
            gridclue_devstack::start_standard_cluster(gridclue_devstack::DEFAULT_PARTITIONS)
                .expect("mock cluster with gridclue's topics starts");
        Self {
            bootstrap: kafka.bootstrap_servers().to_owned(),
            kafka: Kafka::InMemory { _cluster: kafka },
        }
    }

    /// The dev stack's broker: restored from the journal in `dir` (empty: a new one), journaling
    /// the services' groups.
    pub fn start_journaled(dir: &Path) -> Self {
        let topics = gridclue_devstack::standard_topics(
            gridclue_devstack::DEFAULT_PARTITIONS,
            gridclue_devstack::replication_factor_for(gridclue_devstack::DEFAULT_BROKERS),
        );
        let kafka = gridclue_devstack::start_durable_cluster(
            gridclue_devstack::DEFAULT_BROKERS,
            &topics,
            gridclue_devstack::JournalConfig::new(dir),
        )
        .expect("journaled mock cluster starts");
        Self {
            bootstrap: kafka.bootstrap_servers().to_owned(),
            kafka: Kafka::Journaled(kafka),
        }
    }

    /// What a journaled broker restored at its start (`None` in memory).
    pub fn restored(&self) -> Option<&gridclue_devstack::RestoreReport> {
        match &self.kafka {
            Kafka::InMemory { .. } => None,
            Kafka::Journaled(k) => Some(k.restored()),
        }
    }

    /// Stops the broker; a journaled one first catches up and flushes its journal, as on
    /// `make down` (its report; `None` in memory).
    pub fn shutdown(self) -> Option<gridclue_devstack::JournalReport> {
        match self.kafka {
            Kafka::InMemory { .. } => None,
            Kafka::Journaled(k) => Some(k.shutdown().expect("journal stops cleanly")),
        }
    }
}

/// The consumer group of each stage of the stack and the topic it consumes, in pipeline order.
pub const STAGES: [(&str, &str); 3] = [
    ("gridclue-enrich", gridclue_core::wire::COMMANDS_TOPIC),
    ("gridclue-enrich-dedupe", gridclue_core::wire::DEDUPE_TOPIC),
    ("gridclue-sink", gridclue_core::wire::EVENTS_TOPIC),
];

impl Broker {
    /// Waits until every stage has committed the end of every partition of its topic, on two
    /// looks in a row between which no topic grew: nothing is in flight between the stages any
    /// more. A check that something did *not* happen runs after this, so that it cannot pass
    /// merely because an event is late.
    pub async fn settled(&self, timeout: Duration) {
        let bootstrap = self.bootstrap.clone();
        tokio::task::spawn_blocking(move || settle(&bootstrap, timeout))
            .await
            .expect("the settle check does not panic");
    }
}

fn settle(bootstrap: &str, timeout: Duration) {
    let groups: Vec<(BaseConsumer, &str)> = STAGES
        .iter()
        .map(|(group, topic)| {
            let consumer: BaseConsumer = rdkafka::ClientConfig::new()
                .set("bootstrap.servers", bootstrap)
                .set("group.id", *group)
                .set("enable.auto.commit", "false")
                .create()
                .expect("a consumer for reading committed offsets");
            (consumer, *topic)
        })
        .collect();
    let deadline = Instant::now() + timeout;
    let mut previous_ends = None;
    loop {
        let mut ends = Vec::new();
        let mut behind = Vec::new();
        for (consumer, topic) in &groups {
            for (partition, end, committed) in positions(consumer, topic) {
                if committed < end {
                    behind.push(format!("{topic}/{partition}: {committed} of {end}"));
                }
                ends.push(end);
            }
        }
        if behind.is_empty() && previous_ends.as_ref() == Some(&ends) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the stages did not catch up within {timeout:?}: {behind:?}"
        );
        previous_ends = behind.is_empty().then_some(ends);
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Each partition of `topic` with its end (high watermark) and the offset the consumer's group
/// committed (0 when it never committed: then nothing was ever consumed there).
fn positions(consumer: &BaseConsumer, topic: &str) -> Vec<(i32, i64, i64)> {
    const TIMEOUT: Duration = Duration::from_secs(5);
    let metadata = consumer
        .fetch_metadata(Some(topic), TIMEOUT)
        .expect("topic metadata");
    let partitions: Vec<i32> = metadata.topics()[0]
        .partitions()
        .iter()
        .map(|p| p.id())
        .collect();
    let mut tpl = TopicPartitionList::new();
    for &p in &partitions {
        tpl.add_partition(topic, p);
    }
    let committed = consumer
        .committed_offsets(tpl, TIMEOUT)
        .expect("committed offsets");
    partitions
        .into_iter()
        .map(|p| {
            let (_, end) = consumer
                .fetch_watermarks(topic, p, TIMEOUT)
                .expect("watermarks");
            let at = match committed.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                _ => 0,
            };
            (p, end, at)
        })
        .collect()
}

/// Issues a token of `kind` (scoped to a street or department code, for those kinds) into `file`
/// and returns its secret.
pub fn issue_token(
    file: &mut gridclue_core::tokens::TokenFile,
    kind: gridclue_core::tokens::TokenKind,
    scope: Option<&str>,
) -> String {
    let scope = scope.map(|s| gridclue_core::codes::ActorScope::parse(s).expect("a test scope"));
    file.issue(kind, None, scope, "t").expect("a test token").0
}

/// A scratch directory (`gridclue-<name>-…` under the system's temp dir), removed on drop.
pub fn scratch(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("gridclue-{name}-"))
        .tempdir()
        .expect("scratch dir")
}
