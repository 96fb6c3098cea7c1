//! ClickHouse operations of the sink: inserts, state reloads, and error classification.

use std::collections::HashMap;
use std::time::Duration;

use clickhouse::error::Error as ChError;
use clickhouse::Client;
use uuid::Uuid;

use crate::rows::{ClueRow, ClueState, EventRow};

pub const EVENTS_TABLE: &str = "clue_events";
pub const CLUES_TABLE: &str = "clues";

/// How a failed ClickHouse call should be handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Network trouble, timeouts, overload, a server shutting down: retry with backoff.
    Transient,
    /// The server refused the data itself (parse, type, range or a view refusing a value): the
    /// offending rows go to the DLQ.
    Rejected(u32),
    /// The schema or the credentials are wrong: retrying will not help until an operator acts,
    /// but nothing may be dropped either, so the sink keeps retrying (slowly) and alerts.
    Schema(u32),
}

impl Failure {
    /// A bounded label for metrics.
    pub fn kind(self) -> &'static str {
        match self {
            Failure::Transient => "transient",
            Failure::Rejected(_) => "rejected",
            Failure::Schema(_) => "schema",
        }
    }
}

/// The ClickHouse exception code in an error, if the server answered with one.
pub fn error_code(e: &ChError) -> Option<u32> {
    let ChError::BadResponse(text) = e else {
        return None;
    };
    let rest = &text[text.find("Code:")? + 5..];
    let digits: String = rest
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Exception codes that mean "these rows are unacceptable", not "the server is unwell".
const DATA_ERROR_CODES: &[u32] = &[
    6,   // CANNOT_PARSE_TEXT
    26,  // CANNOT_PARSE_QUOTED_STRING
    27,  // CANNOT_PARSE_INPUT_ASSERTION_FAILED
    38,  // CANNOT_PARSE_DATE
    41,  // CANNOT_PARSE_DATETIME
    43,  // ILLEGAL_TYPE_OF_ARGUMENT
    53,  // TYPE_MISMATCH
    69,  // ARGUMENT_OUT_OF_BOUND
    70,  // CANNOT_CONVERT_TYPE
    72,  // CANNOT_PARSE_NUMBER
    117, // INCORRECT_DATA
    131, // TOO_LARGE_STRING_SIZE
    321, // VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
    395, // FUNCTION_THROW_IF_VALUE_IS_NON_ZERO
    407, // DECIMAL_OVERFLOW
    691, // UNKNOWN_ELEMENT_OF_ENUM
];

/// Exception codes that mean the schema, database or credentials are wrong.
const SCHEMA_ERROR_CODES: &[u32] = &[
    16,  // NO_SUCH_COLUMN_IN_TABLE
    47,  // UNKNOWN_IDENTIFIER
    60,  // UNKNOWN_TABLE
    81,  // UNKNOWN_DATABASE
    164, // READONLY
    192, // UNKNOWN_USER
    193, // WRONG_PASSWORD
    497, // ACCESS_DENIED
    516, // AUTHENTICATION_FAILED
];

pub fn classify(e: &ChError) -> Failure {
    match error_code(e) {
        Some(code) if DATA_ERROR_CODES.contains(&code) => Failure::Rejected(code),
        Some(code) if SCHEMA_ERROR_CODES.contains(&code) => Failure::Schema(code),
        _ => Failure::Transient,
    }
}

/// Whether retrying may help.
pub fn is_transient(e: &ChError) -> bool {
    classify(e) == Failure::Transient
}

/// The first line of an error, shortened, for logs and DLQ details (never row data).
pub fn short_error(e: &ChError) -> String {
    let text = e.to_string();
    let line = text.lines().next().unwrap_or_default();
    line.chars().take(300).collect()
}

#[derive(Clone, Copy, Debug)]
pub struct InsertTimeouts {
    pub send: Duration,
    pub end: Duration,
}

async fn insert_rows<T>(
    client: &Client,
    table: &str,
    rows: &[&T],
    timeouts: InsertTimeouts,
    query_id: Option<&str>,
) -> Result<(), ChError>
where
    T: clickhouse::RowOwned + clickhouse::RowWrite,
{
    let mut insert = client
        .insert::<T>(table)
        .await?
        .with_timeouts(Some(timeouts.send), Some(timeouts.end));
    if let Some(id) = query_id {
        insert = insert.with_setting("query_id", id);
    }
    for row in rows {
        insert.write(*row).await?;
    }
    insert.end().await
}

/// Inserts fact rows under `query_id`, so that after a failure the sink can tell whether the
/// statement still runs on the server.
pub async fn insert_events(
    client: &Client,
    rows: &[&EventRow],
    timeouts: InsertTimeouts,
    query_id: &str,
) -> Result<(), ChError> {
    insert_rows(client, EVENTS_TABLE, rows, timeouts, Some(query_id)).await
}

pub async fn insert_clues(
    client: &Client,
    rows: &[&ClueRow],
    timeouts: InsertTimeouts,
) -> Result<(), ChError> {
    insert_rows(client, CLUES_TABLE, rows, timeouts, None).await
}

/// Prefix of the query ids of the sink's `clue_events` inserts; the partitions of the facts in
/// an insert follow as `.p<partition>.` markers.
pub const INSERT_QUERY_PREFIX: &str = "gridclue-sink-";

/// A query id for an insert of facts from `partitions` (sorted, deduplicated by the caller).
pub fn insert_query_id(partitions: &[i32]) -> String {
    let mut id = format!("{INSERT_QUERY_PREFIX}{}.", uuid::Uuid::new_v4().simple());
    for p in partitions {
        id.push_str(&format!("p{p}."));
    }
    id
}

/// Whether an insert of facts from `partition` (by any sink) is running on the server. A sink
/// that takes a partition over waits for this to clear before it reads the partition's state,
/// so an insert its previous owner started just before the rebalance is not repeated.
pub async fn partition_insert_running(client: &Client, partition: i32) -> Result<bool, ChError> {
    let n: u64 = client
        .query(
            "SELECT count() FROM system.processes \
             WHERE startsWith(query_id, ?) AND position(query_id, ?) > 0",
        )
        .bind(INSERT_QUERY_PREFIX)
        .bind(format!(".p{partition}."))
        .fetch_one()
        .await?;
    Ok(n > 0)
}

/// Whether a statement with this query id is still running on the server.
pub async fn query_running(client: &Client, query_id: &str) -> Result<bool, ChError> {
    let n: u64 = client
        .query("SELECT count() FROM system.processes WHERE query_id = ?")
        .bind(query_id)
        .fetch_one()
        .await?;
    Ok(n > 0)
}

/// The highest offset of `partition`'s log `log` within `[from, to]` stored in `clue_events`,
/// if any.
pub async fn stored_offset_in(
    client: &Client,
    topic: &str,
    partition: i32,
    log: u32,
    from: i64,
    to: i64,
) -> Result<Option<i64>, ChError> {
    let r: MaxOffset = client
        .query(
            "SELECT count() AS rows, max(kafka_offset) AS max_offset FROM clue_events \
             WHERE kafka_topic = ? AND kafka_partition = ? AND kafka_log = ? \
             AND kafka_offset >= ? AND kafka_offset <= ?",
        )
        .bind(topic)
        .bind(partition)
        .bind(log)
        .bind(from)
        .bind(to)
        .fetch_one()
        .await?;
    Ok((r.rows > 0).then_some(r.max_offset))
}

#[derive(clickhouse::Row, serde::Deserialize)]
struct MaxOffset {
    rows: u64,
    max_offset: i64,
}

#[derive(clickhouse::Row, serde::Deserialize)]
struct StoredSeq {
    #[serde(with = "clickhouse::serde::uuid")]
    clue_id: Uuid,
    seq: u32,
}

/// The state of every clue of `partition`: its latest `clues` row and the highest seq stored in
/// `clue_events`. The row may be behind the stored facts (a sink stopped between its two
/// inserts), never ahead of them.
pub async fn load_partition(
    client: &Client,
    topic: &str,
    partition: i32,
) -> Result<HashMap<Uuid, ClueState>, ChError> {
    let rows: Vec<ClueRow> = client
        .query("SELECT ?fields FROM clues FINAL WHERE kafka_partition = ?")
        .bind(partition)
        .fetch_all()
        .await?;
    let seqs: Vec<StoredSeq> = client
        .query(
            "SELECT clue_id, max(seq) AS seq FROM clue_events \
             WHERE kafka_topic = ? AND kafka_partition = ? GROUP BY clue_id",
        )
        .bind(topic)
        .bind(partition)
        .fetch_all()
        .await?;
    let mut out: HashMap<Uuid, ClueState> = rows
        .into_iter()
        .map(|row| {
            (
                row.clue_id,
                ClueState {
                    row: std::sync::Arc::new(row),
                    stored_seq: None,
                },
            )
        })
        .collect();
    for s in seqs {
        // Facts are stored before their state: a clue whose facts are stored but whose first
        // state is not starts from the blank state, which the replayed facts fill in.
        out.entry(s.clue_id)
            .or_insert_with(|| ClueState {
                row: std::sync::Arc::new(crate::rows::blank(s.clue_id, partition)),
                stored_seq: None,
            })
            .stored_seq = Some(s.seq);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_read_from_old_and_new_servers() {
        let old = ChError::BadResponse(
            "Code: 395, e.displayText() = DB::Exception: Value passed to 'throwIf' function is non zero".into(),
        );
        assert_eq!(error_code(&old), Some(395));
        assert_eq!(classify(&old), Failure::Rejected(395));
        let new = ChError::BadResponse("Code: 60. DB::Exception: Table x.y does not exist".into());
        assert_eq!(classify(&new), Failure::Schema(60));
        let other = ChError::BadResponse("Code: 252. DB::Exception: Too many parts".into());
        assert_eq!(classify(&other), Failure::Transient);
        assert_eq!(classify(&ChError::TimedOut), Failure::Transient);
    }
}
