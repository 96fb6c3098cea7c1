//! `GET /v1/clues/{clue_id}/timeline`: every fact of one clue, in order, each once (a fact stored
//! twice by a replay is read once: `LIMIT 1 BY seq`). Who acted is named by the display name of
//! the token it used (from the token file) — never the token, its id or a phone number.

use std::collections::HashMap;

use gridclue_core::codes::{empty_as_none, DepartmentCode, StreetCode};
use gridclue_core::tokens::TokenFile;
use serde::{Deserialize, Serialize};

use crate::indicators::china_time;

/// The most facts read for one clue (a clue has tens).
const MAX_FACTS: u32 = 10_000;

fn sql() -> String {
    format!(
        "SELECT seq, fact_type, status, occurred_at_ms, street_code, department, actor_role, \
                actor_id, detail, photos, deadline_ms, rating \
         FROM clue_events WHERE clue_id = toUUID(?) \
         ORDER BY seq LIMIT 1 BY seq LIMIT {MAX_FACTS}"
    )
}

/// One fact of a clue as ClickHouse returns it. Its codes are read leniently (see
/// [`empty_as_none::lenient`]): a malformed street is no street (a street office is then not
/// shown the clue), a malformed department none, rather than an error of the timeline.
#[derive(Clone, Debug, PartialEq, Eq, clickhouse::Row, Deserialize)]
pub struct FactRow {
    pub seq: u32,
    pub fact_type: String,
    pub status: String,
    pub occurred_at_ms: u64,
    #[serde(with = "empty_as_none::lenient")]
    pub street_code: Option<StreetCode>,
    #[serde(with = "empty_as_none::lenient")]
    pub department: Option<DepartmentCode>,
    pub actor_role: String,
    pub actor_id: String,
    pub detail: String,
    pub photos: Vec<String>,
    pub deadline_ms: u64,
    pub rating: u8,
}

/// `clue_id` must already be a parsed clue id (bound, never formatted into the SQL).
pub async fn query(
    client: &clickhouse::Client,
    clue_id: &str,
) -> clickhouse::error::Result<Vec<FactRow>> {
    client.query(&sql()).bind(clue_id).fetch_all().await
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Fact {
    pub seq: u32,
    pub at: String,
    pub at_ms: u64,
    /// The fact's type (`reported`, `accepted`, `dispatched`, …, `overdue`).
    pub kind: String,
    /// The clue's status after it.
    pub status: String,
    /// `reporter`, `street`, `department`, `district`, `system` (empty in old records).
    pub actor_role: String,
    /// The display name of the acting token; null for the system and unknown tokens.
    pub actor: Option<String>,
    pub note: String,
    pub photos: Vec<String>,
    /// On a dispatch: the department it went to.
    pub department: Option<DepartmentCode>,
    /// On an acceptance or approved postponement: the deadline it set.
    pub deadline: Option<String>,
    pub deadline_ms: Option<u64>,
    pub rating: Option<u8>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Timeline {
    pub clue_id: String,
    /// `""` while the clue has no street (outside the district, its report not stored yet).
    #[serde(with = "empty_as_none")]
    pub street: Option<StreetCode>,
    pub status: String,
    pub facts: Vec<Fact>,
}

/// The street of a clue: the one its facts carry (every fact once its report is known).
pub fn street_of(rows: &[FactRow]) -> Option<StreetCode> {
    rows.iter().find_map(|r| r.street_code)
}

pub fn assemble(clue_id: String, rows: Vec<FactRow>, tokens: &TokenFile) -> Timeline {
    let names: HashMap<&str, &str> = tokens
        .tokens
        .iter()
        .filter(|t| !t.name.is_empty())
        .map(|t| (t.id.as_str(), t.name.as_str()))
        .collect();
    let street = street_of(&rows);
    let status = rows.last().map(|r| r.status.clone()).unwrap_or_default();
    let facts = rows
        .into_iter()
        .map(|r| {
            let sets_deadline =
                matches!(r.fact_type.as_str(), "accepted" | "postponed") && r.deadline_ms > 0;
            let dispatch = r.fact_type == "dispatched";
            Fact {
                seq: r.seq,
                at: china_time(r.occurred_at_ms),
                at_ms: r.occurred_at_ms,
                actor: names.get(r.actor_id.as_str()).map(|n| (*n).to_owned()),
                // A dispatch's text is its department code, a merge's is empty.
                note: if dispatch { String::new() } else { r.detail },
                department: r.department.filter(|_| dispatch),
                deadline: sets_deadline.then(|| china_time(r.deadline_ms)),
                deadline_ms: sets_deadline.then_some(r.deadline_ms),
                rating: (r.fact_type == "rated").then_some(r.rating),
                kind: r.fact_type,
                status: r.status,
                actor_role: r.actor_role,
                photos: r.photos,
            }
        })
        .collect();
    Timeline {
        clue_id,
        street,
        status,
        facts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_one_placeholder_is_bound() {
        assert_eq!(sql().matches('?').count(), 1);
    }
}
