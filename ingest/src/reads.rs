//! The read side of ingest: a reporter's view of their own clues (`GET /v1/clues/{id}`) and the
//! Open311 reads, answered from ClickHouse.
//!
//! Why ClickHouse and not an in-memory model fed from `clues.events`: the sink already projects
//! every fact there (`clue_events`, one row per fact keyed `(clue_id, seq)`, and `clues`, the
//! latest state per clue), so every ingest replica answers the same thing for every clue ever
//! reported, with no warm-up after a restart and no memory that grows with the clue count. The
//! price is the sink's lag (well under a second when healthy): a clue that just got its 202 may
//! answer 404 for a moment. Queries bind every value (`?` + `bind`); lists use `has(?, col)`
//! because `IN ?` fails on ClickHouse 18.16. Without ClickHouse settings the reads answer 503.

use std::time::{Duration, Instant};

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{FixedOffset, TimeZone};
use clickhouse::Client;
use gridclue_core::ch::ChSettings;
use gridclue_core::codes::{
    empty_as_none, or_empty, ActorScope, CategoryCode, CommunityCode, DepartmentCode, GridCode,
    StreetCode,
};
use gridclue_core::ClueId;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::OnceCell;

use crate::api::AppState;
use crate::error::ApiError;
use crate::metrics::IngestMetrics;

/// The latest state of a clue, as the `clues` table holds it.
///
/// Codes are read leniently (`''` and a malformed code alike read as none, the latter with a
/// warning): the row is only shown, and one bad value must not turn a reporter's view or an
/// Open311 list into an error. Shown, an absent code is `""` as the column holds it.
#[derive(Clone, Debug, PartialEq, clickhouse::Row, Deserialize)]
pub struct ClueRow {
    pub id: String,
    pub status: String,
    pub placement: String,
    #[serde(with = "empty_as_none::lenient")]
    pub grid_code: Option<GridCode>,
    #[serde(with = "empty_as_none::lenient")]
    pub community_code: Option<CommunityCode>,
    #[serde(with = "empty_as_none::lenient")]
    pub street_code: Option<StreetCode>,
    pub lat: f64,
    pub lon: f64,
    #[serde(with = "empty_as_none::lenient")]
    pub category: Option<CategoryCode>,
    #[serde(with = "empty_as_none::lenient")]
    pub department: Option<DepartmentCode>,
    pub reporter_id: String,
    pub channel: String,
    pub dup_of: String,
    pub reported_at_ms: u64,
    pub deadline_ms: u64,
    pub updated_at_ms: u64,
    pub accepted_at_ms: u64,
    pub yellow_at_ms: u64,
    pub rating: u8,
}

/// Aliases differ from column names on purpose: a ClickHouse alias shadows the column of the
/// same name in WHERE.
const CLUE_COLUMNS: &str = "toString(clue_id) AS id, status, placement, grid_code, \
    community_code, street_code, lat, lon, category, department, reporter_id, channel, \
    ifNull(toString(duplicate_of), '') AS dup_of, reported_at_ms, deadline_ms, updated_at_ms, \
    accepted_at_ms, yellow_at_ms, rating";

/// One fact of a clue's history, from `clue_events`.
#[derive(Clone, Debug, PartialEq, clickhouse::Row, Deserialize)]
pub struct FactRow {
    pub seq: u32,
    pub fact_type: String,
    pub status: String,
    pub occurred_at_ms: u64,
    pub detail: String,
    pub deadline_ms: u64,
    pub photos: Vec<String>,
    /// Who caused the fact: role and the street or department it acted for (empty for facts
    /// older than roles).
    pub actor_role: String,
    #[serde(with = "empty_as_none::lenient")]
    pub actor_scope: Option<ActorScope>,
    pub rating: u8,
    pub working_hours: u32,
}

/// What the reporter wrote and attached: the report fact's text and photo URLs.
#[derive(Clone, Debug, Default, PartialEq, clickhouse::Row, Deserialize)]
pub struct ReportText {
    #[serde(skip_serializing)]
    id: String,
    pub description: String,
    pub photos: Vec<String>,
}

/// Who may see a clue that refers to a photo: its reporter, street and departments (a
/// malformed code reads as none, leniently like [`ClueRow`]'s: it grants no one access).
#[derive(Clone, Debug, PartialEq, clickhouse::Row, Deserialize)]
pub struct PhotoClue {
    pub reporter_id: String,
    #[serde(with = "empty_as_none::lenient")]
    pub street_code: Option<StreetCode>,
    #[serde(with = "empty_as_none::lenient")]
    pub department: Option<DepartmentCode>,
    #[serde(with = "empty_as_none::lenient")]
    pub routed_department: Option<DepartmentCode>,
}

/// What an Open311 `GET requests` asks for.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RequestFilter {
    /// When non-empty, only these clues (and every other criterion is ignored, as the spec says).
    pub ids: Vec<String>,
    pub categories: Vec<String>,
    pub statuses: Vec<String>,
    pub from_ms: u64,
    pub to_ms: u64,
    pub limit: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("ClickHouse is unreachable: {0}")]
    Connect(String),
    #[error("ClickHouse query failed: {0}")]
    Query(String),
    #[error("ClickHouse did not answer within {0:?}")]
    Timeout(Duration),
}

impl From<ReadError> for ApiError {
    fn from(e: ReadError) -> Self {
        tracing::warn!(error = %e, "read failed");
        ApiError::ReadsUnavailable(match e {
            ReadError::Connect(_) => "the clue database is unreachable",
            ReadError::Query(_) => "the clue database refused the query",
            ReadError::Timeout(_) => "the clue database did not answer in time",
        })
    }
}

/// A lazily connected ClickHouse client for the read endpoints (connecting is retried on the
/// next read when it fails, so ingest starts and takes clues while ClickHouse is down).
pub struct ReadStore {
    settings: ChSettings,
    timeout: Duration,
    client: OnceCell<Client>,
    metrics: IngestMetrics,
}

impl ReadStore {
    pub fn new(settings: ChSettings, timeout: Duration, metrics: IngestMetrics) -> Self {
        Self {
            settings,
            timeout,
            client: OnceCell::new(),
            metrics,
        }
    }

    async fn client(&self) -> Result<&Client, ReadError> {
        self.client
            .get_or_try_init(|| async {
                gridclue_core::ch::connect(&self.settings)
                    .await
                    .map_err(|e| ReadError::Connect(e.to_string()))
            })
            .await
    }

    async fn timed<T>(
        &self,
        name: &'static str,
        f: impl std::future::Future<Output = Result<T, ReadError>>,
    ) -> Result<T, ReadError> {
        let started = Instant::now();
        let result = match tokio::time::timeout(self.timeout, f).await {
            Ok(r) => r,
            Err(_) => Err(ReadError::Timeout(self.timeout)),
        };
        self.metrics
            .read_duration
            .with_label_values(&[name, if result.is_ok() { "ok" } else { "error" }])
            .observe(started.elapsed().as_secs_f64());
        result
    }

    /// The latest state of one clue.
    pub async fn clue(&self, id: ClueId) -> Result<Option<ClueRow>, ReadError> {
        self.timed("clue", async {
            let sql =
                format!("SELECT {CLUE_COLUMNS} FROM clues FINAL WHERE clue_id = toUUID(?) LIMIT 1");
            let rows = self
                .client()
                .await?
                .query(&sql)
                .bind(id.to_string())
                .fetch_all::<ClueRow>()
                .await
                .map_err(|e| ReadError::Query(e.to_string()))?;
            Ok(rows.into_iter().next())
        })
        .await
    }

    /// Which of these clue ids the projection holds.
    pub async fn existing(
        &self,
        ids: &[String],
    ) -> Result<std::collections::HashSet<String>, ReadError> {
        self.timed("existing", async {
            let rows = self
                .client()
                .await?
                .query(
                    "SELECT DISTINCT toString(clue_id) AS id FROM clues \
                     WHERE has(?, toString(clue_id))",
                )
                .bind(ids)
                .fetch_all::<String>()
                .await
                .map_err(|e| ReadError::Query(e.to_string()))?;
            Ok(rows.into_iter().collect())
        })
        .await
    }

    /// Every fact of one clue, in order.
    pub async fn history(&self, id: ClueId) -> Result<Vec<FactRow>, ReadError> {
        self.timed("history", async {
            self.client()
                .await?
                .query(
                    "SELECT seq, fact_type, status, occurred_at_ms, detail, deadline_ms, photos, \
                     actor_role, actor_scope, rating, working_hours \
                     FROM clue_events FINAL WHERE clue_id = toUUID(?) ORDER BY seq",
                )
                .bind(id.to_string())
                .fetch_all::<FactRow>()
                .await
                .map_err(|e| ReadError::Query(e.to_string()))
        })
        .await
    }

    /// The clues whose facts (report, `handle`) refer to a photo (`sha256:<hex>`, compared
    /// without regard to the hex's case).
    pub async fn photo_clues(&self, reference: &str) -> Result<Vec<PhotoClue>, ReadError> {
        self.timed("photo_clues", async {
            self.client()
                .await?
                .query(
                    "SELECT reporter_id, street_code, department, routed_department \
                     FROM clues FINAL WHERE clue_id IN ( \
                         SELECT clue_id FROM clue_events \
                         WHERE arrayExists(p -> lower(p) = ?, photos))",
                )
                .bind(reference.to_ascii_lowercase())
                .fetch_all::<PhotoClue>()
                .await
                .map_err(|e| ReadError::Query(e.to_string()))
        })
        .await
    }

    /// Clues matching an Open311 filter, newest first.
    pub async fn requests(&self, f: &RequestFilter) -> Result<Vec<ClueRow>, ReadError> {
        self.timed("requests", async {
            let client = self.client().await?;
            let query = if !f.ids.is_empty() {
                let sql = format!(
                    "SELECT {CLUE_COLUMNS} FROM clues FINAL WHERE has(?, toString(clue_id)) \
                     ORDER BY reported_at_ms DESC LIMIT ?"
                );
                client.query(&sql).bind(&f.ids).bind(f.limit)
            } else {
                let mut sql = format!(
                    "SELECT {CLUE_COLUMNS} FROM clues FINAL \
                     WHERE reported_at_ms >= ? AND reported_at_ms < ?"
                );
                if !f.categories.is_empty() {
                    sql.push_str(" AND has(?, category)");
                }
                if !f.statuses.is_empty() {
                    sql.push_str(" AND has(?, status)");
                }
                sql.push_str(" ORDER BY reported_at_ms DESC LIMIT ?");
                let mut q = client.query(&sql).bind(f.from_ms).bind(f.to_ms);
                if !f.categories.is_empty() {
                    q = q.bind(&f.categories);
                }
                if !f.statuses.is_empty() {
                    q = q.bind(&f.statuses);
                }
                q.bind(f.limit)
            };
            query
                .fetch_all::<ClueRow>()
                .await
                .map_err(|e| ReadError::Query(e.to_string()))
        })
        .await
    }

    /// What the reporters wrote and attached to these clues (their report facts).
    pub async fn report_texts(
        &self,
        ids: &[String],
    ) -> Result<std::collections::HashMap<String, ReportText>, ReadError> {
        if ids.is_empty() {
            return Ok(Default::default());
        }
        self.timed("report_texts", async {
            let rows = self
                .client()
                .await?
                .query(
                    "SELECT toString(clue_id) AS id, detail AS description, photos \
                     FROM clue_events FINAL WHERE seq = 0 AND has(?, toString(clue_id))",
                )
                .bind(ids)
                .fetch_all::<ReportText>()
                .await
                .map_err(|e| ReadError::Query(e.to_string()))?;
            Ok(rows.into_iter().map(|r| (r.id.clone(), r)).collect())
        })
        .await
    }
}

/// Epoch milliseconds as RFC 3339 in China Standard Time (the district's clock).
pub fn rfc3339(ms: u64) -> String {
    let tz = FixedOffset::east_opt(8 * 3600).expect("valid offset");
    match tz.timestamp_millis_opt(ms as i64).single() {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%S%:z").to_string(),
        None => String::new(),
    }
}

fn optional_time(ms: u64) -> serde_json::Value {
    if ms == 0 {
        serde_json::Value::Null
    } else {
        json!(rfc3339(ms))
    }
}

/// `GET /v1/clues/{id}`: the reporter's own clue with its history; anything else is 404.
pub async fn get_clue(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    req: Request,
) -> Response {
    let (parts, _) = req.into_parts();
    // An undecodable path segment cannot name a clue: it is a plain 404 like any unknown id.
    let id = id.map(|Path(id)| id).unwrap_or_default();
    match reporter_view(&state, &parts, &id).await {
        Ok(r) => r,
        Err(e) => state.reject(e).into_response(),
    }
}

async fn reporter_view(state: &AppState, parts: &Parts, id: &str) -> Result<Response, ApiError> {
    state.limit_ip(parts)?;
    let token = state.reporter(&parts.headers)?;
    state.limit_token(&token)?;
    let id: ClueId = id.parse().map_err(|_| ApiError::NotFound)?;
    let store = state
        .reads
        .as_ref()
        .ok_or(ApiError::ReadsUnavailable("no clue database is configured"))?;
    let clue = store
        .clue(id)
        .await?
        .filter(|c| c.reporter_id == token.id)
        .ok_or(ApiError::NotFound)?;
    let history = store.history(id).await?;
    let report = history.iter().find(|f| f.seq == 0);
    let category = state.catalog.get(or_empty(&clue.category));
    let history: Vec<_> = history
        .iter()
        .map(|f| {
            let mut entry = json!({
                "seq": f.seq,
                "type": f.fact_type,
                "status": f.status,
                "at": rfc3339(f.occurred_at_ms),
                "detail": f.detail,
                "deadline": if matches!(f.fact_type.as_str(), "accepted" | "postponed" | "overdue") { optional_time(f.deadline_ms) } else { serde_json::Value::Null },
                "by": actor_view(state, f),
            });
            let extra = match f.fact_type.as_str() {
                "rated" => Some(("rating", json!(f.rating))),
                "postpone_requested" | "postponed" => {
                    Some(("working_hours", json!(f.working_hours)))
                }
                "handled" => Some(("photos", json!(f.photos))),
                _ => None,
            };
            if let (Some((k, v)), Some(obj)) = (extra, entry.as_object_mut()) {
                obj.insert(k.into(), v);
            }
            entry
        })
        .collect();
    let status = clue.status.parse::<gridclue_core::Status>().ok();
    let light = status.and_then(|s| {
        gridclue_core::light::clue_light(
            s,
            gridclue_core::wire::now_ms(),
            clue.accepted_at_ms,
            clue.yellow_at_ms,
            clue.deadline_ms,
        )
    });
    Ok(Json(json!({
        "clue_id": clue.id,
        "status": clue.status,
        "open": status.is_some_and(|s| s.is_open()),
        "light": light,
        "rating": (clue.rating > 0).then_some(clue.rating),
        "category": or_empty(&clue.category),
        "category_name_zh": category.map(|c| c.name_zh.as_str()),
        "category_name_en": category.map(|c| c.name_en.as_str()),
        "department": or_empty(&clue.department),
        "placement": clue.placement,
        "grid_code": or_empty(&clue.grid_code),
        "community_code": or_empty(&clue.community_code),
        "street_code": or_empty(&clue.street_code),
        "address": state.grid_addresses.get(or_empty(&clue.grid_code)),
        "lat": clue.lat,
        "lon": clue.lon,
        "duplicate_of": if clue.dup_of.is_empty() { None } else { Some(&clue.dup_of) },
        "reported_at": rfc3339(clue.reported_at_ms),
        "updated_at": rfc3339(clue.updated_at_ms),
        "deadline": optional_time(clue.deadline_ms),
        "photos": report.map_or(&[][..], |f| f.photos.as_slice()),
        "history": history,
    }))
    .into_response())
}

/// Who caused a fact, as the reporter sees it: the role, and the department's or street's code
/// (with the department's name); never a token id.
fn actor_view(state: &AppState, f: &FactRow) -> serde_json::Value {
    if f.actor_role.is_empty() {
        return serde_json::Value::Null;
    }
    let scope = f.actor_scope.as_ref();
    let department = scope
        .and_then(ActorScope::department)
        .and_then(|d| state.catalog.department(d.as_str()));
    json!({
        "role": f.actor_role,
        "scope": scope.map(ActorScope::as_str),
        "name_zh": department.map(|d| d.name_zh.as_str()),
        "name_en": department.map(|d| d.name_en.as_str()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_china_standard_time() {
        assert_eq!(rfc3339(0), "1970-01-01T08:00:00+08:00");
        assert_eq!(rfc3339(1_764_000_000_000), "2025-11-25T00:00:00+08:00");
    }
}
