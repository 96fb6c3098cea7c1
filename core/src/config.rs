//! Configuration: a service's defaults, then an optional JSON file, then `GRIDCLUE_*`
//! environment variables (`GRIDCLUE_KAFKA_BROKERS` sets field `kafka_brokers`).
//!
//! Values from the environment are read as JSON when the field's default is not a string
//! (numbers, booleans, lists), else taken verbatim.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

pub const ENV_PREFIX: &str = "GRIDCLUE_";
/// Names a config file to read between defaults and environment.
pub const CONFIG_FILE_ENV: &str = "GRIDCLUE_CONFIG";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not a JSON object: {detail}")]
    File { path: PathBuf, detail: String },
    #[error("environment variable {var} has an invalid value: {detail}")]
    Env { var: String, detail: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
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
    let Value::Object(mut merged) =
        serde_json::to_value(T::default()).map_err(|e| ConfigError::Invalid(e.to_string()))?
    else {
        return Err(ConfigError::Invalid("config must be a struct".into()));
    };
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
            merged.insert(k, v);
        }
    }
    for (var, raw) in env {
        let Some(field) = var.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let field = field.to_ascii_lowercase();
        let Some(current) = merged.get(&field) else {
            continue;
        };
        let value = match current {
            Value::String(_) => Value::String(raw),
            Value::Null => serde_json::from_str(&raw).unwrap_or(Value::String(raw)),
            _ => serde_json::from_str(&raw).map_err(|e| ConfigError::Env {
                var: var.clone(),
                detail: e.to_string(),
            })?,
        };
        merged.insert(field, value);
    }
    serde_json::from_value(Value::Object(merged)).map_err(|e| ConfigError::Invalid(e.to_string()))
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Sample {
        kafka_brokers: String,
        batch_rows: u32,
        verbose: bool,
        password: Option<String>,
    }

    impl Default for Sample {
        fn default() -> Self {
            Self {
                kafka_brokers: "localhost:9092".into(),
                batch_rows: 100,
                verbose: false,
                password: None,
            }
        }
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn defaults_then_file_then_env() {
        let dir = std::env::temp_dir().join(format!("gridclue-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.json");
        std::fs::write(&file, r#"{"batch_rows": 500, "kafka_brokers": "file:1"}"#).unwrap();

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
                ("GRIDCLUE_PASSWORD", "pw"),
                ("OTHER", "x"),
            ]),
        )
        .unwrap();
        assert!(c.verbose);
        assert_eq!(c.password.as_deref(), Some("pw"));
    }

    #[test]
    fn bad_env_values_name_the_variable() {
        let err = load_from::<Sample>(None, env(&[("GRIDCLUE_BATCH_ROWS", "many")])).unwrap_err();
        assert!(err.to_string().contains("GRIDCLUE_BATCH_ROWS"), "{err}");
    }

    #[test]
    fn redaction_masks_secrets() {
        let c = Sample {
            password: Some("hunter2".into()),
            ..Sample::default()
        };
        let v = redacted(&c);
        assert_eq!(v["password"], "***");
        assert_eq!(v["kafka_brokers"], "localhost:9092");
    }
}
