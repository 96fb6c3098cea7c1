//! ClickHouse helpers for tests: a fresh database per test on the shared test server, and a
//! private server process a test may stop and restart.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gridclue_core::ch::ChSettings;

/// A database of its own on a ClickHouse server, dropped when the value is dropped.
pub struct TestDb {
    pub url: String,
    pub database: String,
    pub client: clickhouse::Client,
}

impl TestDb {
    /// Creates `gridclue_t_<prefix>_<unique>` on the test server (`GRIDCLUE_TEST_CLICKHOUSE_URL`).
    pub async fn create(prefix: &str) -> Self {
        Self::create_at(&crate::clickhouse_url(), prefix).await
    }

    pub async fn create_at(url: &str, prefix: &str) -> Self {
        let database = crate::unique_database(prefix);
        let settings = ChSettings {
            url: url.to_owned(),
            database: database.clone(),
            user: "default".into(),
            password: Default::default(),
        };
        let client = gridclue_core::ch::connect(&settings)
            .await
            .unwrap_or_else(|e| {
                panic!("test ClickHouse at {url} (start it with scripts/clickhouse.sh start): {e}")
            });
        Self {
            url: url.to_owned(),
            database,
            client,
        }
    }

    pub fn settings(&self) -> ChSettings {
        ChSettings {
            url: self.url.clone(),
            database: self.database.clone(),
            user: "default".into(),
            password: Default::default(),
        }
    }

    /// A single `UInt64` from a query such as `SELECT count() FROM …`.
    pub async fn scalar(&self, sql: &str) -> u64 {
        self.client
            .query(sql)
            .fetch_one::<u64>()
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Like [`scalar`](Self::scalar) but `None` while the query fails (e.g. server down).
    pub async fn try_scalar(&self, sql: &str) -> Option<u64> {
        self.client.query(sql).fetch_one::<u64>().await.ok()
    }

    pub async fn execute(&self, sql: &str) {
        self.client
            .query(sql)
            .execute()
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if std::env::var_os("GRIDCLUE_TEST_KEEP_DB").is_some() {
            eprintln!("keeping test database {}", self.database);
            return;
        }
        let _ = http_post(
            &self.url,
            &format!("DROP DATABASE IF EXISTS {}", self.database),
        );
    }
}

/// A blocking HTTP POST of `body` to a ClickHouse URL (usable from `Drop`).
pub fn http_post(url: &str, body: &str) -> std::io::Result<String> {
    let hostport = url
        .strip_prefix("http://")
        .unwrap_or(url)
        .trim_end_matches('/');
    let mut stream = TcpStream::connect(hostport)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let request = format!(
        "POST / HTTP/1.0\r\nHost: {hostport}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes())?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn server_binary() -> Vec<String> {
    let on_path = |name: &str| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join(name))
                .find(|p| p.is_file())
        })
    };
    if let Some(ch) = on_path("clickhouse") {
        return vec![ch.display().to_string(), "server".into()];
    }
    if let Some(s) = on_path("clickhouse-server") {
        return vec![s.display().to_string()];
    }
    vec!["/usr/sbin/clickhouse-server".into()]
}

/// A user of [`PrivateClickHouse`] whose profile is read-only (`readonly=2`), as the read-only
/// user of dashboard-api is configured by scripts/clickhouse.sh.
pub const PRIVATE_READER_USER: &str = "reader";
pub const PRIVATE_READER_PASSWORD: &str = "reader-test-password";

/// A ClickHouse server process owned by one test (own ports, own data directory), so the test
/// can stop and restart it without disturbing anyone else.
pub struct PrivateClickHouse {
    pub url: String,
    /// Removed on drop, after the server was killed.
    dir: tempfile::TempDir,
    config: PathBuf,
    child: Option<Child>,
}

impl PrivateClickHouse {
    pub fn start() -> Self {
        let scratch = crate::scratch("ch");
        let dir = scratch.path();
        std::fs::create_dir_all(dir.join("data")).expect("data dir");
        std::fs::create_dir_all(dir.join("tmp")).expect("tmp dir");
        std::fs::create_dir_all(dir.join("user_files")).expect("user_files dir");
        let http = free_port();
        let tcp = free_port();
        let interserver = free_port();
        let old_server = server_binary().len() == 1; // Debian's 18.16 clickhouse-server
        let lc = if old_server {
            "<allow_experimental_low_cardinality_type>1</allow_experimental_low_cardinality_type>"
        } else {
            ""
        };
        let users = dir.join("users.xml");
        std::fs::write(
            &users,
            format!(
                r#"<?xml version="1.0"?>
<yandex>
  <profiles><default><max_memory_usage>2000000000</max_memory_usage>{lc}</default>
    <reader><readonly>2</readonly><max_execution_time>10</max_execution_time></reader></profiles>
  <users><default><password></password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
    <profile>default</profile><quota>default</quota></default>
    <{PRIVATE_READER_USER}><password>{PRIVATE_READER_PASSWORD}</password>
    <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
    <profile>reader</profile><quota>default</quota></{PRIVATE_READER_USER}></users>
  <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors>
    <result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time>
  </interval></default></quotas>
</yandex>
"#
            ),
        )
        .expect("users.xml");
        let d = dir.display();
        let config = dir.join("config.xml");
        std::fs::write(
            &config,
            format!(
                r#"<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>{d}/server.log</log><errorlog>{d}/server.err.log</errorlog></logger>
  <listen_host>127.0.0.1</listen_host>
  <http_port>{http}</http_port>
  <tcp_port>{tcp}</tcp_port>
  <interserver_http_port>{interserver}</interserver_http_port>
  <interserver_http_host>127.0.0.1</interserver_http_host>
  <max_connections>256</max_connections>
  <keep_alive_timeout>3</keep_alive_timeout>
  <max_concurrent_queries>50</max_concurrent_queries>
  <mark_cache_size>67108864</mark_cache_size>
  <path>{d}/data/</path>
  <tmp_path>{d}/tmp/</tmp_path>
  <user_files_path>{d}/user_files/</user_files_path>
  <users_config>{d}/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
  <mlock_executable>false</mlock_executable>
</yandex>
"#
            ),
        )
        .expect("config.xml");
        let mut server = Self {
            url: format!("http://127.0.0.1:{http}"),
            dir: scratch,
            config,
            child: None,
        };
        server.restart();
        server
    }

    /// Starts the server (again, on the same ports and data) and waits for `/ping`.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "server already running");
        let cmd = server_binary();
        let child = Command::new(&cmd[0])
            .args(&cmd[1..])
            .arg(format!("--config-file={}", self.config.display()))
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", cmd[0]));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = http_get_ping(&self.url) {
                if r.ends_with("Ok.\n") {
                    return;
                }
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                let log = std::fs::read_to_string(self.dir.path().join("server.err.log"))
                    .unwrap_or_default();
                panic!("private ClickHouse exited with {status}: {log}");
            }
            assert!(
                Instant::now() < deadline,
                "private ClickHouse did not answer /ping"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the server (SIGKILL: no chance to finish anything) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

fn http_get_ping(url: &str) -> std::io::Result<String> {
    let hostport = url.strip_prefix("http://").unwrap_or(url);
    let mut stream = TcpStream::connect(hostport)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(format!("GET /ping HTTP/1.0\r\nHost: {hostport}\r\n\r\n").as_bytes())?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}

impl Drop for PrivateClickHouse {
    fn drop(&mut self) {
        self.kill();
    }
}
