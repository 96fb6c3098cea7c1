//! Shared helpers for gridclue's end-to-end tests: a mock Kafka cluster per test, a fresh
//! ClickHouse database per test on the one test server, and the services run in-process on
//! port 0.

pub mod ch;

use std::path::PathBuf;

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

/// The repository's `data/` directory.
pub fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data")
}

/// A mock Kafka cluster with the stack's standard layout (3 brokers, gridclue's topics).
pub struct Broker {
    pub bootstrap: String,
    _kafka: gridclue_devstack::MockKafka,
}

impl Broker {
    pub fn start() -> Self {
        let kafka =
            gridclue_devstack::start_standard_cluster(gridclue_devstack::DEFAULT_PARTITIONS)
                .expect("mock cluster with gridclue's topics starts");
        Self {
            bootstrap: kafka.bootstrap_servers().to_owned(),
            _kafka: kafka,
        }
    }
}

/// A scratch directory removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("gridclue-{name}-{}", rand_suffix()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}
