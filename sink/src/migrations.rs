//! Versioned schema migrations, embedded in the binary and recorded in `schema_migrations`.
//!
//! Each migration is a file `migrations/NNNN_name.sql` holding one or more statements separated
//! by `;` at the end of a line. Every statement must run on ClickHouse 18.16 and on current
//! releases, so migrations are written to be re-runnable (`IF NOT EXISTS`, column additions
//! guarded by a look at `system.columns` in code). A migration that is recorded as applied is
//! never run again; editing the statements of an applied migration is detected by its checksum
//! and refused (its comments may change).

use clickhouse::Client;
use sha2::{Digest, Sha256};

/// One embedded migration.
#[derive(Clone, Copy, Debug)]
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// All migrations, in version order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "clue_events",
        sql: include_str!("../migrations/0001_clue_events.sql"),
    },
    Migration {
        version: 2,
        name: "clues",
        sql: include_str!("../migrations/0002_clues.sql"),
    },
    Migration {
        version: 3,
        name: "aggregates",
        sql: include_str!("../migrations/0003_aggregates.sql"),
    },
    Migration {
        version: 4,
        name: "report_photos",
        sql: include_str!("../migrations/0004_report_photos.sql"),
    },
    Migration {
        version: 5,
        name: "closed_loop",
        sql: include_str!("../migrations/0005_closed_loop.sql"),
    },
    Migration {
        version: 6,
        name: "kafka_logs",
        sql: include_str!("../migrations/0006_kafka_logs.sql"),
    },
    Migration {
        version: 7,
        name: "indicators",
        sql: include_str!("../migrations/0007_indicators.sql"),
    },
    Migration {
        version: 8,
        name: "redemptions",
        sql: include_str!("../migrations/0008_redemptions.sql"),
    },
    Migration {
        version: 9,
        name: "alerts",
        sql: include_str!("../migrations/0009_alerts.sql"),
    },
    Migration {
        version: 10,
        name: "dashboard_projections",
        sql: include_str!("../migrations/0010_dashboard_projections.sql"),
    },
    Migration {
        version: 11,
        name: "indicator_deltas",
        sql: include_str!("../migrations/0011_indicator_deltas.sql"),
    },
    Migration {
        version: 12,
        name: "kafka_log_continuation",
        sql: include_str!("../migrations/0012_kafka_log_continuation.sql"),
    },
    Migration {
        version: 13,
        name: "status_counts",
        sql: include_str!("../migrations/0013_status_counts.sql"),
    },
    Migration {
        version: 14,
        name: "open_cases",
        sql: include_str!("../migrations/0014_open_cases.sql"),
    },
];

const CREATE_MIGRATIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations \
     (version UInt32, name String, checksum String, applied_at DateTime('UTC') DEFAULT now()) \
     ENGINE = ReplacingMergeTree ORDER BY version";

#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error("ClickHouse failed while migrating (version {version}): {source}")]
    ClickHouse {
        version: u32,
        source: clickhouse::error::Error,
    },
    #[error(
        "migration {version} ({name}) was applied with checksum {applied} but the embedded file \
         has {embedded}: applied migrations must not be edited, add a new one"
    )]
    Checksum {
        version: u32,
        name: String,
        applied: String,
        embedded: String,
    },
    #[error("the database has migration {0} applied, newer than this binary knows")]
    NewerSchema(u32),
}

impl MigrationError {
    /// Whether retrying later may help (ClickHouse unreachable), as opposed to a broken schema.
    pub fn is_retryable(&self) -> bool {
        match self {
            MigrationError::ClickHouse { source, .. } => crate::store::is_transient(source),
            _ => false,
        }
    }
}

impl Migration {
    /// SHA-256 of the statements the migration runs (comments and blank lines excluded, so its
    /// documentation can be corrected without touching what was applied), hex.
    pub fn checksum(&self) -> String {
        hex::encode(Sha256::digest(self.statements().join(";\n").as_bytes()))
    }

    /// The statements of the file, comments and blank lines removed.
    pub fn statements(&self) -> Vec<String> {
        split_statements(self.sql)
    }
}

/// Splits SQL text into statements at `;` ending a line, dropping `--` comment lines.
pub fn split_statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in sql.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with("--") {
            continue;
        }
        if let Some(stmt) = trimmed.strip_suffix(';') {
            current.push_str(stmt);
            let s = current.trim().to_owned();
            if !s.is_empty() {
                out.push(s);
            }
            current.clear();
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    let rest = current.trim();
    if !rest.is_empty() {
        out.push(rest.to_owned());
    }
    out
}

/// `(table, column)` of an `ALTER TABLE t ADD COLUMN c …` statement.
pub fn added_column(stmt: &str) -> Option<(&str, &str)> {
    let words: Vec<&str> = stmt.split_whitespace().take(6).collect();
    let is = |i: usize, w: &str| words.get(i).is_some_and(|x| x.eq_ignore_ascii_case(w));
    if words.len() == 6 && is(0, "ALTER") && is(1, "TABLE") && is(3, "ADD") && is(4, "COLUMN") {
        Some((words[2], words[5]))
    } else {
        None
    }
}

#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct Applied {
    version: u32,
    name: String,
    checksum: String,
}

/// The outcome of [`apply`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// Versions applied by this call.
    pub applied: Vec<u32>,
    /// Versions that were already recorded.
    pub already: Vec<u32>,
}

/// Applies every embedded migration not yet recorded in `schema_migrations`, in order.
pub async fn apply(client: &Client) -> Result<MigrationReport, MigrationError> {
    apply_through(client, u32::MAX).await
}

/// Applies the pending migrations up to and including version `last` (tests use it to build a
/// database as an older release left it).
pub async fn apply_through(client: &Client, last: u32) -> Result<MigrationReport, MigrationError> {
    let ch = |version| move |source| MigrationError::ClickHouse { version, source };
    client
        .query(CREATE_MIGRATIONS_TABLE)
        .execute()
        .await
        .map_err(ch(0))?;
    let applied: Vec<Applied> = client
        .query("SELECT version, any(name), any(checksum) FROM schema_migrations GROUP BY version")
        .fetch_all()
        .await
        .map_err(ch(0))?;
    let known_max = MIGRATIONS.last().map_or(0, |m| m.version);
    if let Some(newer) = applied
        .iter()
        .map(|a| a.version)
        .filter(|v| *v > known_max)
        .max()
    {
        return Err(MigrationError::NewerSchema(newer));
    }
    let mut report = MigrationReport::default();
    for m in MIGRATIONS.iter().filter(|m| m.version <= last) {
        let checksum = m.checksum();
        if let Some(a) = applied.iter().find(|a| a.version == m.version) {
            if a.checksum != checksum {
                return Err(MigrationError::Checksum {
                    version: m.version,
                    name: a.name.clone(),
                    applied: a.checksum.clone(),
                    embedded: checksum,
                });
            }
            report.already.push(m.version);
            continue;
        }
        for stmt in m.statements() {
            if let Some((table, column)) = added_column(&stmt) {
                // ClickHouse 18.16 has no ADD COLUMN IF NOT EXISTS: a migration interrupted
                // after this statement must be able to run again.
                let exists: u64 = client
                    .query(
                        "SELECT count() FROM system.columns \
                         WHERE database = currentDatabase() AND table = ? AND name = ?",
                    )
                    .bind(table)
                    .bind(column)
                    .fetch_one()
                    .await
                    .map_err(ch(m.version))?;
                if exists > 0 {
                    continue;
                }
            }
            client.query(&stmt).execute().await.map_err(ch(m.version))?;
        }
        client
            .query("INSERT INTO schema_migrations (version, name, checksum) VALUES (?, ?, ?)")
            .bind(m.version)
            .bind(m.name)
            .bind(&checksum)
            .execute()
            .await
            .map_err(ch(m.version))?;
        tracing::info!(version = m.version, name = m.name, "migration applied");
        report.applied.push(m.version);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_ordered_and_named_like_their_files() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1, "versions are 1, 2, 3, …");
            assert!(!m.statements().is_empty(), "{} has no statement", m.name);
        }
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        files.sort();
        let expected: Vec<String> = MIGRATIONS
            .iter()
            .map(|m| format!("{:04}_{}.sql", m.version, m.name))
            .collect();
        assert_eq!(files, expected, "every file is embedded, in order");
    }

    #[test]
    fn comments_do_not_change_a_checksum_and_statements_do() {
        let m = |sql: &'static str| Migration {
            version: 1,
            name: "m",
            sql,
        };
        let base = m("-- see §5\nCREATE TABLE a (x UInt8)\nENGINE = Memory;\n").checksum();
        let reworded = m("-- see §6, reworded\n\nCREATE TABLE a (x UInt8)\nENGINE = Memory;\n");
        assert_eq!(reworded.checksum(), base);
        let changed = m("-- see §5\nCREATE TABLE a (x UInt16)\nENGINE = Memory;\n");
        assert_ne!(changed.checksum(), base);
    }

    #[test]
    fn statements_split_at_line_end_semicolons() {
        let sql =
            "-- comment\nCREATE TABLE a (x UInt8)\nENGINE = Memory;\n\n-- two\nDROP TABLE b;\n";
        assert_eq!(
            split_statements(sql),
            vec!["CREATE TABLE a (x UInt8)\nENGINE = Memory", "DROP TABLE b"]
        );
        assert_eq!(split_statements("SELECT 1"), vec!["SELECT 1"]);
    }

    #[test]
    fn column_additions_are_recognised() {
        assert_eq!(
            added_column("ALTER TABLE clues ADD COLUMN x UInt8 DEFAULT 0"),
            Some(("clues", "x"))
        );
        assert_eq!(
            added_column("alter table t add column c String"),
            Some(("t", "c"))
        );
        assert_eq!(added_column("ALTER TABLE t DROP COLUMN c"), None);
        assert_eq!(
            added_column("CREATE TABLE t (x UInt8) ENGINE = Memory"),
            None
        );
    }
}
