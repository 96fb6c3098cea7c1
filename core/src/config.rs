//! Configuration, parsed at the boundary: a service's defaults, then an optional JSON file,
//! then `GRIDCLUE_*` environment variables (`GRIDCLUE_KAFKA_BROKERS` sets field `kafka_brokers`).
//!
//! Values from the environment are read as JSON when the field's default is not a string
//! (numbers, booleans, lists, objects), else taken verbatim.
//!
//! A typo must not silently do nothing: a key in the file that is not a field of the service, and
//! a `GRIDCLUE_*` variable that no part of the project reads ([`KNOWN_VARIABLES`]), stop the
//! service at start with a message naming it. A variable that belongs to another service is
//! ignored, so one environment can serve the whole stack. Values are typed and validated here
//! (addresses, URLs, broker lists, Kafka client settings, durations); every error names its field.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

pub const ENV_PREFIX: &str = "GRIDCLUE_";
/// Names a config file to read between defaults and environment.
pub const CONFIG_FILE_ENV: &str = "GRIDCLUE_CONFIG";

/// Every `GRIDCLUE_*` variable read anywhere in the project, without the prefix: the fields of
/// every service's config (each service tests that its fields are listed here) and the variables
/// of the scripts, the dev broker, the load tool and the tests.
pub const KNOWN_VARIABLES: &[&str] = &[
    // service config fields (ingest, enrich, sink, dashboard-api)
    "LISTEN",
    "KAFKA_BROKERS",
    "KAFKA_EXTRA",
    "COMMANDS_TOPIC",
    "EVENTS_TOPIC",
    "DLQ_TOPIC",
    "STATE_TOPIC",
    "DEDUPE_TOPIC",
    "OUTCOMES_TOPIC",
    "ALERTS_TOPIC",
    "HOTSPOT_INPUT_TOPIC",
    "HOTSPOT_GROUP_ID",
    "DETECTOR_GROUP_ID",
    "ALERTS_GROUP_ID",
    "HOTSPOT_TICK_MS",
    "HOTSPOT_PARAMS",
    "GROUP_ID",
    "DEDUPE_GROUP_ID",
    "DATA_DIR",
    "TOKENS_FILE",
    "SECRET_FILE",
    "PRODUCE_TIMEOUT_MS",
    "PRODUCER_LINGER_MS",
    "RETRY_AFTER_SECS",
    "BBOX_MARGIN_DEG",
    "MAX_CLOCK_SKEW_SECS",
    "RATE_LIMIT_TOKEN_PER_SEC",
    "RATE_LIMIT_TOKEN_BURST",
    "RATE_LIMIT_IP_PER_SEC",
    "RATE_LIMIT_IP_BURST",
    "TRUSTED_PROXIES",
    "RECENT_IDS_CAPACITY",
    "OUTCOMES_CAPACITY",
    "TRANSITION_WAIT_MS",
    "CLICKHOUSE_URL",
    "CLICKHOUSE_DATABASE",
    "CLICKHOUSE_USER",
    "CLICKHOUSE_PASSWORD",
    "CLICKHOUSE_PASSWORD_FILE",
    "CLICKHOUSE_READ_USER",
    "CLICKHOUSE_READ_PASSWORD",
    "CLICKHOUSE_READ_PASSWORD_FILE",
    "READ_TIMEOUT_MS",
    "OPEN311_READS_REQUIRE_KEY",
    "PUBLIC_URL",
    "PHOTOS_URL",
    "PHOTO_MAX_BYTES",
    "PHOTOS_S3_ENDPOINT",
    "PHOTOS_S3_REGION",
    "PHOTOS_S3_ACCESS_KEY_ID",
    "PHOTOS_S3_SECRET_ACCESS_KEY",
    "PHOTOS_S3_ALLOW_HTTP",
    "BATCH_MAX",
    "RESTORE_TIMEOUT_MS",
    "DEDUPE_RADIUS_M",
    "DEDUPE_WINDOW_MS",
    "OVERDUE_GRACE_MS",
    "OVERDUE_TICK_MS",
    "RELOAD_ON_SIGHUP",
    "BATCH_MAX_ROWS",
    "BATCH_MAX_BYTES",
    "BATCH_LINGER_MS",
    "MIN_INSERT_INTERVAL_MS",
    "RETRY_INITIAL_MS",
    "RETRY_MAX_MS",
    "INSERT_TIMEOUT_MS",
    "DLQ_TIMEOUT_MS",
    "LOG_CHECK_TIMEOUT_MS",
    "LOG_RESET_RECHECK_MS",
    "SCORE_WEIGHTS",
    "POINTS",
    "TARGETS",
    "STREAM_POLL_MS",
    "STREAM_MAX_PER_TOKEN",
    "STREAM_MAX_TOTAL",
    "METRICS_INTERVAL_MS",
    // the config file itself, scripts, dev broker, load tool, tests
    "CONFIG",
    "LOG_FORMAT",
    "VAR_DIR",
    "BIN_DIR",
    "SKIP_BUILD",
    "READY_TIMEOUT",
    "STOP_TIMEOUT",
    "INGEST_PORT",
    "DASHBOARD_PORT",
    "ENRICH_PORT",
    "SINK_PORT",
    "HOTSPOTS_PORT",
    "INGEST_URL",
    "DASHBOARD_URL",
    "ENRICH_URL",
    "SINK_URL",
    "HOTSPOTS_URL",
    // the build (core/build.rs) and docker-compose.yml
    "GIT_COMMIT",
    "ENV_DIR",
    "IMAGE_TAG",
    "INGEST_PUBLISH",
    "DASHBOARD_PUBLISH",
    "GRAFANA_PUBLISH",
    "CH_HTTP_PORT",
    "CH_TCP_PORT",
    "CH_INTERSERVER_PORT",
    "CH_START_TIMEOUT",
    "CH_STOP_TIMEOUT",
    "DEVBROKER_PARTITIONS",
    "DEVBROKER_BROKERS",
    "DEVBROKER_ADDR_FILE",
    "DEVBROKER_JOURNAL_DIR",
    "DEVBROKER_START_TIMEOUT",
    "DEVBROKER_GROUPS",
    "DEVBROKER_JOURNAL_FLUSH_MS",
    "DEMO_COUNT",
    "DEMO_RATE",
    "DEMO_SEED",
    "DEMO_REPORTER_TOKEN",
    "DEMO_DISTRICT_TOKEN",
    "DEMO_STREET_TOKEN",
    "DEMO_STREET_CODE",
    "DEMO_DEPARTMENT_TOKEN",
    "DEMO_DEPARTMENT_CODE",
    "TEST_CLICKHOUSE_URL",
    "TEST_KEEP_DB",
    "TEST_LOG",
    "CHROMIUM",
    "REQUIRE_BROWSER",
    "BROWSER_SHOTS",
];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not a JSON object: {detail}")]
    File { path: PathBuf, detail: String },
    #[error("config file {path}: unknown key {key:?}{hint}")]
    UnknownKey {
        path: PathBuf,
        key: String,
        hint: Hint,
    },
    #[error("unknown environment variable {var}: no gridclue service or script reads it{hint}")]
    UnknownVariable { var: String, hint: Hint },
    #[error("environment variable {var} has an invalid value: {detail}")]
    Env { var: String, detail: String },
    #[error("invalid configuration: field `{field}`{source_of}: {detail}")]
    Field {
        field: String,
        /// Where the value came from, e.g. " (from GRIDCLUE_LISTEN)"; empty for a default.
        source_of: String,
        detail: String,
    },
    #[error("cannot read {field} {path}: {source}")]
    SecretFile {
        field: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// "did you mean …?" after an unknown name, when a known one is close.
#[derive(Debug)]
pub struct Hint(Option<String>);

impl fmt::Display for Hint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(s) => write!(f, " (did you mean {s}?)"),
            None => Ok(()),
        }
    }
}

fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Hint {
    Hint(
        candidates
            .into_iter()
            .map(|c| (strsim::levenshtein(name, c), c))
            .filter(|(d, c)| *d <= 3.max(c.len() / 4))
            .min()
            .map(|(_, c)| c.to_owned()),
    )
}

/// Loads `T` from defaults, the file named by `GRIDCLUE_CONFIG` (if set) and the process
/// environment.
pub fn load<T: Serialize + DeserializeOwned + Default>() -> Result<T, ConfigError> {
    let file = std::env::var_os(CONFIG_FILE_ENV).map(PathBuf::from);
    load_from(file.as_deref(), std::env::vars())
}

/// Loads `T` from defaults, an optional file and the given environment pairs.
pub fn load_from<T: Serialize + DeserializeOwned + Default>(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<T, ConfigError> {
    let mut merged = field_defaults::<T>()?;
    // field → where its value came from, for error messages
    let mut sources: std::collections::HashMap<String, String> = Default::default();
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let from_file: Map<String, Value> =
            serde_json::from_str(&text).map_err(|e| ConfigError::File {
                path: path.to_owned(),
                detail: e.to_string(),
            })?;
        for (k, v) in from_file {
            if !merged.contains_key(&k) {
                return Err(ConfigError::UnknownKey {
                    path: path.to_owned(),
                    hint: closest(&k, merged.keys().map(String::as_str)),
                    key: k,
                });
            }
            sources.insert(k.clone(), path.display().to_string());
            merged.insert(k, v);
        }
    }
    let mut env: Vec<(String, String)> = env.into_iter().collect();
    env.sort();
    for (var, raw) in env {
        let Some(name) = var.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let field = name.to_ascii_lowercase();
        let Some(current) = merged.get(&field) else {
            if KNOWN_VARIABLES.contains(&name) {
                continue; // another service's setting, or a script's
            }
            let fields: Vec<String> = merged.keys().map(|k| k.to_ascii_uppercase()).collect();
            let candidates = fields.iter().map(String::as_str);
            let Hint(near) = closest(name, candidates.chain(KNOWN_VARIABLES.iter().copied()));
            return Err(ConfigError::UnknownVariable {
                hint: Hint(near.map(|n| format!("{ENV_PREFIX}{n}"))),
                var,
            });
        };
        let value = match current {
            Value::String(_) => Value::String(raw),
            Value::Null => serde_json::from_str(&raw).unwrap_or(Value::String(raw)),
            _ => serde_json::from_str(&raw).map_err(|e| ConfigError::Env {
                var: var.clone(),
                detail: e.to_string(),
            })?,
        };
        sources.insert(field.clone(), var);
        merged.insert(field, value);
    }
    serde_path_to_error::deserialize(Value::Object(merged)).map_err(|e| {
        let field = e.path().to_string();
        let top = field.split(['.', '[']).next().unwrap_or_default();
        ConfigError::Field {
            source_of: sources
                .get(top)
                .map(|s| format!(" (from {s})"))
                .unwrap_or_default(),
            field,
            detail: e.into_inner().to_string(),
        }
    })
}

/// `T`'s fields and their defaults, as JSON.
fn field_defaults<T: Serialize + Default>() -> Result<Map<String, Value>, ConfigError> {
    match serde_json::to_value(T::default()) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ConfigError::Invalid("config must be a struct".into())),
        Err(e) => Err(ConfigError::Invalid(e.to_string())),
    }
}

/// The fields of `T` that [`KNOWN_VARIABLES`] does not list; each service's tests assert this is
/// empty, so a new field cannot be refused as an unknown variable by the other services.
pub fn unlisted_fields<T: Serialize + Default>() -> Vec<String> {
    field_defaults::<T>()
        .map(|m| {
            m.keys()
                .filter(|k| !KNOWN_VARIABLES.contains(&k.to_ascii_uppercase().as_str()))
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// The config as JSON with secret-looking fields masked, for logging at start-up.
pub fn redacted<T: Serialize>(config: &T) -> Value {
    let mut v = serde_json::to_value(config).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut v {
        for (k, val) in map.iter_mut() {
            let secret = ["password", "secret", "token", "key"]
                .iter()
                .any(|s| k.contains(s) && !k.ends_with("_file"));
            if secret && !val.is_null() {
                *val = Value::String("***".into());
            }
        }
    }
    v
}

// --- typed values ------------------------------------------------------------------------------

/// A secret (a password): never shown by `Debug` or `Display`. It serializes as its value only so
/// that defaults round-trip through the loader; [`redacted`] masks it in logs.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The secret itself, or — when `file` is not empty — the first line of that file (so a
    /// password can come from a mounted secret instead of the environment). Both set is an error.
    pub fn or_from_file(&self, field: &'static str, file: &str) -> Result<Secret, ConfigError> {
        if file.is_empty() {
            return Ok(self.clone());
        }
        if !self.0.is_empty() {
            return Err(ConfigError::Field {
                field: field.into(),
                source_of: String::new(),
                detail: format!("set either {field} or {field}_file, not both"),
            });
        }
        let text = std::fs::read_to_string(file).map_err(|source| ConfigError::SecretFile {
            field,
            path: PathBuf::from(file),
            source,
        })?;
        Ok(Secret(text.lines().next().unwrap_or_default().to_owned()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"***\"" })
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

/// `deserialize_with` for an `http://` or `https://` URL with a host.
pub fn http_url<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    check_http_url(&s).map_err(serde::de::Error::custom)?;
    Ok(s)
}

/// `deserialize_with` for an optional URL: empty means "not configured".
pub fn http_url_or_empty<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if !s.trim().is_empty() {
        check_http_url(&s).map_err(serde::de::Error::custom)?;
    }
    Ok(s)
}

fn check_http_url(s: &str) -> Result<(), String> {
    let rest = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"))
        .ok_or_else(|| format!("{s:?} is not an http:// or https:// URL"))?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(format!("{s:?} has no host"));
    }
    Ok(())
}

/// `deserialize_with` for a Kafka bootstrap list: `host:port[,host:port…]`.
pub fn broker_list<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    for broker in s.split(',') {
        let ok = broker
            .trim()
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !ok {
            return Err(serde::de::Error::custom(format!(
                "{broker:?} is not host:port (a list is comma-separated)"
            )));
        }
    }
    Ok(s)
}

/// `deserialize_with` for a duration in milliseconds that must not be zero (a timeout or an
/// interval of zero would spin or fail at once).
pub fn positive_ms<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = u64::deserialize(d)?;
    if v == 0 {
        return Err(serde::de::Error::custom(
            "must be a positive number of milliseconds",
        ));
    }
    Ok(v)
}

/// librdkafka settings passed through to every Kafka client the project creates (e.g.
/// `security.protocol`, `sasl.*`, `ssl.*`). Settings that carry the project's delivery
/// guarantees are refused: they are not the operator's to change.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct KafkaExtra(BTreeMap<String, String>);

/// Client settings whose values the project relies on for exactly-once numbers.
pub const KAFKA_RESERVED: &[&str] = &[
    "bootstrap.servers",
    "metadata.broker.list",
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "acks",
    "request.required.acks",
    "enable.idempotence",
    "isolation.level",
    "auto.offset.reset",
];

impl KafkaExtra {
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Result<Self, String> {
        let map: BTreeMap<String, String> = pairs.into_iter().collect();
        if let Some(k) = map.keys().find(|k| KAFKA_RESERVED.contains(&k.as_str())) {
            return Err(format!(
                "{k:?} cannot be overridden: the project sets it for its delivery guarantees"
            ));
        }
        Ok(Self(map))
    }
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
}

impl KafkaExtra {
    /// The settings with credential values (`sasl.password`, `ssl.key.password`…) masked.
    fn masked(&self) -> BTreeMap<&str, &str> {
        self.0
            .iter()
            .map(|(k, v)| {
                let secret = k.contains("password") || k.contains("secret") || k.contains("key");
                (k.as_str(), if secret { "***" } else { v.as_str() })
            })
            .collect()
    }
}

impl fmt::Debug for KafkaExtra {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.masked().fmt(f)
    }
}

impl Serialize for KafkaExtra {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // serialized only for logs and defaults (which hold no credentials)
        self.masked().serialize(s)
    }
}

impl<'de> Deserialize<'de> for KafkaExtra {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<String, Value>::deserialize(d)?;
        let pairs = map.into_iter().map(|(k, v)| {
            let v = match v {
                Value::String(s) => s,
                other => other.to_string(),
            };
            (k, v)
        });
        KafkaExtra::new(pairs).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(default)]
    struct Sample {
        #[serde(deserialize_with = "broker_list")]
        kafka_brokers: String,
        kafka_extra: KafkaExtra,
        listen: std::net::SocketAddr,
        #[serde(deserialize_with = "http_url")]
        clickhouse_url: String,
        clickhouse_password: Secret,
        clickhouse_password_file: String,
        batch_rows: u32,
        #[serde(deserialize_with = "positive_ms")]
        insert_timeout_ms: u64,
        verbose: bool,
    }

    impl Default for Sample {
        fn default() -> Self {
            Self {
                kafka_brokers: "localhost:9092".into(),
                kafka_extra: KafkaExtra::default(),
                listen: "127.0.0.1:7401".parse().unwrap(),
                clickhouse_url: "http://127.0.0.1:8123".into(),
                clickhouse_password: Secret::default(),
                clickhouse_password_file: String::new(),
                batch_rows: 100,
                insert_timeout_ms: 1000,
                verbose: false,
            }
        }
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    fn temp_file(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn defaults_then_file_then_env() {
        let (_dir, file) = temp_file(
            "c.json",
            r#"{"batch_rows": 500, "kafka_brokers": "file:1"}"#,
        );

        let c: Sample = load_from(None, env(&[])).unwrap();
        assert_eq!(c, Sample::default());

        let c: Sample =
            load_from(Some(&file), env(&[("GRIDCLUE_KAFKA_BROKERS", "env:1")])).unwrap();
        assert_eq!(c.batch_rows, 500);
        assert_eq!(c.kafka_brokers, "env:1");

        let c: Sample = load_from(
            None,
            env(&[
                ("GRIDCLUE_VERBOSE", "true"),
                ("GRIDCLUE_CLICKHOUSE_PASSWORD", "pw"),
                ("GRIDCLUE_KAFKA_EXTRA", r#"{"security.protocol":"SSL"}"#),
                ("OTHER", "x"),
            ]),
        )
        .unwrap();
        assert!(c.verbose);
        assert_eq!(c.clickhouse_password.expose(), "pw");
        assert_eq!(c.kafka_extra.get("security.protocol"), Some("SSL"));
    }

    #[test]
    fn bad_env_values_name_the_variable() {
        let err = load_from::<Sample>(None, env(&[("GRIDCLUE_BATCH_ROWS", "many")])).unwrap_err();
        assert!(err.to_string().contains("GRIDCLUE_BATCH_ROWS"), "{err}");
    }

    #[test]
    fn an_unknown_file_key_is_an_error_naming_it() {
        let (_dir, file) = temp_file("c.json", r#"{"batch_row": 5}"#);
        let err = load_from::<Sample>(Some(&file), env(&[])).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ConfigError::UnknownKey { .. }), "{msg}");
        assert!(msg.contains("\"batch_row\""), "{msg}");
        assert!(msg.contains("did you mean batch_rows"), "{msg}");
    }

    #[test]
    fn an_unknown_variable_is_an_error_naming_it() {
        let err = load_from::<Sample>(None, env(&[("GRIDCLUE_BATCH_ROW", "5")])).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ConfigError::UnknownVariable { .. }), "{msg}");
        assert!(msg.contains("GRIDCLUE_BATCH_ROW:"), "{msg}");
        assert!(msg.contains("did you mean GRIDCLUE_BATCH_ROWS?"), "{msg}");
    }

    #[test]
    fn another_services_variable_and_script_variables_are_ignored() {
        let c: Sample = load_from(
            None,
            env(&[
                ("GRIDCLUE_TOKENS_FILE", "var/tokens.json"),
                ("GRIDCLUE_INGEST_PORT", "7401"),
                ("GRIDCLUE_TEST_CLICKHOUSE_URL", "http://x:1"),
            ]),
        )
        .unwrap();
        assert_eq!(c, Sample::default());
    }

    #[test]
    fn bad_values_name_their_field() {
        let cases = [
            ("GRIDCLUE_INSERT_TIMEOUT_MS", "0", "insert_timeout_ms"),
            ("GRIDCLUE_INSERT_TIMEOUT_MS", "\"5s\"", "insert_timeout_ms"),
            ("GRIDCLUE_LISTEN", "localhost", "listen"),
            ("GRIDCLUE_CLICKHOUSE_URL", "ftp://ch:1", "clickhouse_url"),
            ("GRIDCLUE_CLICKHOUSE_URL", "http://", "clickhouse_url"),
            ("GRIDCLUE_KAFKA_BROKERS", "kafka-1", "kafka_brokers"),
            ("GRIDCLUE_KAFKA_BROKERS", "a:1,b:x", "kafka_brokers"),
            ("GRIDCLUE_KAFKA_EXTRA", r#"{"acks":"1"}"#, "kafka_extra"),
        ];
        for (var, value, field) in cases {
            let err = load_from::<Sample>(None, env(&[(var, value)])).unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.contains(&format!("`{field}` (from {var})")),
                "{var}={value}: {msg}"
            );
        }
    }

    #[test]
    fn a_bad_duration_in_the_file_names_its_field() {
        let (_dir, file) = temp_file("c.json", r#"{"insert_timeout_ms": "30 seconds"}"#);
        let err = load_from::<Sample>(Some(&file), env(&[])).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("`insert_timeout_ms` (from "), "{msg}");
        assert!(msg.contains("c.json"), "{msg}");
    }

    #[test]
    fn every_listed_variable_is_upper_case_and_unique() {
        let mut seen = std::collections::HashSet::new();
        for v in KNOWN_VARIABLES {
            assert_eq!(*v, v.to_ascii_uppercase());
            assert!(seen.insert(v), "{v} listed twice");
        }
    }

    #[test]
    fn secrets_are_masked_and_can_come_from_a_file() {
        let (_dir, file) = temp_file("pw", "s3cret\n");
        let pw = Secret::default()
            .or_from_file("clickhouse_password", file.to_str().unwrap())
            .unwrap();
        assert_eq!(pw.expose(), "s3cret");
        assert!(!format!("{pw:?}").contains("s3cret"));

        let both = Secret::from("x").or_from_file("clickhouse_password", file.to_str().unwrap());
        assert!(both.unwrap_err().to_string().contains("not both"));

        let c = Sample {
            clickhouse_password: Secret::from("hunter2"),
            kafka_extra: KafkaExtra::new([("sasl.password".into(), "pw2".into())]).unwrap(),
            ..Sample::default()
        };
        let logged = redacted(&c).to_string();
        assert!(
            !logged.contains("hunter2") && !logged.contains("pw2"),
            "{logged}"
        );
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
