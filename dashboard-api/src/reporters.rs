//! The reporter loop: a reporter's own clues (`GET /v1/my/clues`), points (积分, `GET
//! /v1/my/points`), redemptions (爱心卡, `POST /v1/reporters/{reporter_id}/redemptions`) and
//! the leaderboard (`GET /v1/leaderboard`).
//!
//! Points are derived from facts, never stored: a ledger entry is a (clue, reason) pair, its
//! time the first fact that earned it, so each is counted exactly once by construction
//! however often a fact was stored or read. Reasons and their facts:
//!
//! | reason | fact of the reporter's clue | points (default; `points` in the config) |
//! |---|---|---|
//! | `accepted` | `accepted`: the report became a case (立案) | 10 |
//! | `closed` | `verified`: the case closed after a passed verification | 5 |
//! | `duplicate` | `reported` with a dedupe verdict, or `merged` into an existing case | 2 |
//! | `rejected`, `withdrawn` | `rejected`, `withdrawn` | 0 |
//! | `outside` | `reported` outside the district | 0 |
//!
//! Points once earned are kept (a case rejected after its acceptance keeps its 10). Entries of
//! reasons worth 0 points are not listed. A reporter's clues are those whose report carries the
//! reporter's token id (`clues.reporter_id`).
//!
//! Redemptions are the one thing stored here: a row of the `redemptions` table per (reporter,
//! `Idempotency-Key`), written by dashboard-api. The balance is all points earned minus all
//! redeemed. A redemption is decided under a per-reporter lock held from reading the balance to
//! the acknowledged insert, so concurrent requests for one reporter are serialised and can never
//! overdraw; a retry (same key) finds its row and gets the first answer without spending again.
//! This assumes a single dashboard-api process writes redemptions (the lock is in memory): run
//! one instance for `POST …/redemptions`, or route those requests to one instance.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{Datelike, Duration as Days, FixedOffset, NaiveDate, TimeZone};
use gridclue_core::codes::{empty_as_none, CategoryCode, CommunityCode, StreetCode};
use gridclue_core::light::clue_light;
use gridclue_core::tokens::{TokenFile, TokenKind, TokenRecord};
use gridclue_core::{ReporterGroup, Status};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::indicators::{china_midnight_ms, china_time, CHINA_OFFSET_SECS};
use crate::reference::Reference;

/// Points per reason (docs/ARCHITECTURE.md §6 has the table), from configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PointRules {
    pub accepted: u32,
    pub closed: u32,
    pub duplicate: u32,
    pub rejected: u32,
    pub withdrawn: u32,
    pub outside: u32,
}

impl Default for PointRules {
    fn default() -> Self {
        Self {
            accepted: 10,
            closed: 5,
            duplicate: 2,
            rejected: 0,
            withdrawn: 0,
            outside: 0,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    Accepted,
    Closed,
    Duplicate,
    Rejected,
    Withdrawn,
    Outside,
}

impl Reason {
    pub const ALL: [Reason; 6] = [
        Reason::Accepted,
        Reason::Closed,
        Reason::Duplicate,
        Reason::Rejected,
        Reason::Withdrawn,
        Reason::Outside,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Accepted => "accepted",
            Reason::Closed => "closed",
            Reason::Duplicate => "duplicate",
            Reason::Rejected => "rejected",
            Reason::Withdrawn => "withdrawn",
            Reason::Outside => "outside",
        }
    }

    pub fn parse(s: &str) -> Option<Reason> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl PointRules {
    pub fn points(&self, reason: Reason) -> u32 {
        match reason {
            Reason::Accepted => self.accepted,
            Reason::Closed => self.closed,
            Reason::Duplicate => self.duplicate,
            Reason::Rejected => self.rejected,
            Reason::Withdrawn => self.withdrawn,
            Reason::Outside => self.outside,
        }
    }
}

/// The reason a `clue_events` row earns (empty: none), as SQL over the row's columns.
const REASON_SQL: &str = "multiIf(\
    fact_type = 'accepted', 'accepted', \
    fact_type = 'verified', 'closed', \
    fact_type = 'merged' OR (fact_type = 'reported' AND isNotNull(duplicate_of)), 'duplicate', \
    fact_type = 'rejected', 'rejected', \
    fact_type = 'withdrawn', 'withdrawn', \
    fact_type = 'reported' AND placement = 'outside', 'outside', \
    '')";

const EARNING_FACTS: &str =
    "fact_type IN ('accepted', 'verified', 'merged', 'reported', 'rejected', 'withdrawn')";

/// The ledger of one reporter: one row per (clue, reason), at its first fact.
fn ledger_sql() -> String {
    format!(
        "SELECT toString(clue_id) AS clue, reason, min(occurred_at_ms) AS at_ms \
         FROM ( \
             SELECT clue_id, occurred_at_ms, {REASON_SQL} AS reason \
             FROM clue_events \
             WHERE clue_id IN (SELECT clue_id FROM clues WHERE reporter_id = ?) AND {EARNING_FACTS} \
         ) \
         WHERE reason != '' \
         GROUP BY clue_id, reason \
         ORDER BY at_ms DESC, clue, reason"
    )
}

/// Ledger entries per reporter and reason whose time lies in `[start, end)`.
fn leaderboard_sql() -> String {
    format!(
        "SELECT reporter AS reporter_id, reason, count() AS entries \
         FROM ( \
             SELECT clue_id, reason, min(occurred_at_ms) AS at_ms \
             FROM ( \
                 SELECT clue_id, occurred_at_ms, {REASON_SQL} AS reason \
                 FROM clue_events WHERE {EARNING_FACTS} \
             ) \
             WHERE reason != '' \
             GROUP BY clue_id, reason \
             HAVING at_ms >= ? AND at_ms < ? \
         ) AS earned \
         ANY INNER JOIN ( \
             SELECT clue_id, any(reporter_id) AS reporter \
             FROM clues WHERE reporter_id != '' GROUP BY clue_id \
         ) AS reporters USING clue_id \
         GROUP BY reporter, reason"
    )
}

/// Points redeemed by a reporter (each Idempotency-Key once).
const REDEEMED_SQL: &str = "\
SELECT toUInt64(sum(points)) FROM ( \
    SELECT idempotency_key, any(points) AS points FROM redemptions \
    WHERE reporter_id = ? GROUP BY idempotency_key)";

const REDEMPTIONS_SQL: &str = "\
SELECT reporter_id, idempotency_key, any(points) AS points, any(note) AS note, \
       any(redeemed_by) AS redeemed_by, any(at_ms) AS at_ms, any(balance_after) AS balance_after \
FROM redemptions WHERE reporter_id = ? \
GROUP BY reporter_id, idempotency_key \
ORDER BY at_ms DESC, idempotency_key";

const REDEMPTION_SQL: &str = "\
SELECT reporter_id, idempotency_key, points, note, redeemed_by, at_ms, balance_after \
FROM redemptions WHERE reporter_id = ? AND idempotency_key = ? LIMIT 1";

#[derive(Clone, Debug, clickhouse::Row, Deserialize)]
struct LedgerRow {
    clue: String,
    reason: String,
    at_ms: u64,
}

#[derive(Clone, Debug, clickhouse::Row, Deserialize)]
struct BoardEntries {
    reporter_id: String,
    reason: String,
    entries: u64,
}

/// One row of `redemptions`.
#[derive(Clone, Debug, PartialEq, Eq, clickhouse::Row, Serialize, Deserialize)]
pub struct RedemptionRow {
    pub reporter_id: String,
    pub idempotency_key: String,
    pub points: u32,
    pub note: String,
    pub redeemed_by: String,
    pub at_ms: u64,
    pub balance_after: i64,
}

/// The reporter a token speaks for (reporter tokens only).
pub fn reporter_of(token: &TokenRecord) -> Result<String, ApiError> {
    match token.kind {
        TokenKind::Reporter => Ok(token.id.clone()),
        _ => Err(ApiError::Forbidden(
            "read a reporter's clues or points (not a reporter token)",
        )),
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Entry {
    pub clue_id: String,
    pub reason: Reason,
    pub points: u32,
    pub at: String,
    pub at_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RedemptionView {
    pub idempotency_key: String,
    pub points: u32,
    pub note: String,
    pub at: String,
    pub at_ms: u64,
    pub balance_after: i64,
}

impl From<RedemptionRow> for RedemptionView {
    fn from(r: RedemptionRow) -> Self {
        Self {
            at: china_time(r.at_ms),
            idempotency_key: r.idempotency_key,
            points: r.points,
            note: r.note,
            at_ms: r.at_ms,
            balance_after: r.balance_after,
        }
    }
}

/// The answer of `GET /v1/my/points`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Points {
    pub reporter_id: String,
    /// Earned minus redeemed.
    pub balance: i64,
    pub earned: u64,
    pub redeemed: u64,
    /// Newest first.
    pub entries: Vec<Entry>,
    /// Newest first.
    pub redemptions: Vec<RedemptionView>,
}

/// A reporter's ledger entries (worth points under `rules`), newest first, and their sum.
pub async fn ledger(
    ch: &clickhouse::Client,
    reporter_id: &str,
    rules: &PointRules,
) -> clickhouse::error::Result<(Vec<Entry>, u64)> {
    let rows: Vec<LedgerRow> = ch
        .query(&ledger_sql())
        .bind(reporter_id)
        .fetch_all()
        .await?;
    let entries: Vec<Entry> = rows
        .into_iter()
        .filter_map(|r| {
            let reason = Reason::parse(&r.reason)?;
            let points = rules.points(reason);
            (points > 0).then(|| Entry {
                clue_id: r.clue,
                reason,
                points,
                at: china_time(r.at_ms),
                at_ms: r.at_ms,
            })
        })
        .collect();
    let earned = entries.iter().map(|e| u64::from(e.points)).sum();
    Ok((entries, earned))
}

async fn redeemed(ch: &clickhouse::Client, reporter_id: &str) -> clickhouse::error::Result<u64> {
    ch.query(REDEEMED_SQL).bind(reporter_id).fetch_one().await
}

/// `GET /v1/my/points` for `reporter_id`.
pub async fn points(
    ch: &clickhouse::Client,
    reporter_id: &str,
    rules: &PointRules,
) -> clickhouse::error::Result<Points> {
    let (entries, earned) = ledger(ch, reporter_id, rules).await?;
    let rows: Vec<RedemptionRow> = ch
        .query(REDEMPTIONS_SQL)
        .bind(reporter_id)
        .fetch_all()
        .await?;
    let redeemed: u64 = rows.iter().map(|r| u64::from(r.points)).sum();
    Ok(Points {
        reporter_id: reporter_id.to_owned(),
        balance: earned as i64 - redeemed as i64,
        earned,
        redeemed,
        entries,
        redemptions: rows.into_iter().map(RedemptionView::from).collect(),
    })
}

// ---------------------------------------------------------------------------------------------
// Redemptions

/// The body of `POST /v1/reporters/{reporter_id}/redemptions`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedemptionRequest {
    pub points: u32,
    #[serde(default)]
    pub note: String,
}

/// The most points one redemption may take.
pub const MAX_REDEMPTION_POINTS: u32 = 100_000;
pub const MAX_NOTE_CHARS: usize = 200;
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 128;

impl RedemptionRequest {
    pub fn check(&self) -> Result<(), ApiError> {
        if !(1..=MAX_REDEMPTION_POINTS).contains(&self.points) {
            return Err(ApiError::invalid_body(
                "points",
                format!("must be a whole number from 1 to {MAX_REDEMPTION_POINTS}"),
            ));
        }
        if self.note.chars().count() > MAX_NOTE_CHARS {
            return Err(ApiError::invalid_body(
                "note",
                format!("at most {MAX_NOTE_CHARS} characters"),
            ));
        }
        Ok(())
    }
}

/// Checks an `Idempotency-Key` header (required for redemptions).
pub fn idempotency_key(value: Option<&axum::http::HeaderValue>) -> Result<String, ApiError> {
    let value = value.ok_or_else(|| {
        ApiError::invalid_body("Idempotency-Key", "the header is required for redemptions")
    })?;
    let key = value.to_str().unwrap_or_default();
    let ok = !key.is_empty()
        && key.len() <= MAX_IDEMPOTENCY_KEY_BYTES
        && key.bytes().all(|b| b.is_ascii_graphic());
    if !ok {
        return Err(ApiError::invalid_body(
            "Idempotency-Key",
            format!("1 to {MAX_IDEMPOTENCY_KEY_BYTES} printable ASCII characters"),
        ));
    }
    Ok(key.to_owned())
}

/// One async lock per reporter, held while a redemption is decided and written.
#[derive(Clone, Default)]
pub struct RedemptionLocks(Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>);

impl RedemptionLocks {
    fn of(&self, reporter_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.0.lock().expect("redemption lock table");
        locks.entry(reporter_id.to_owned()).or_default().clone()
    }
}

/// The answer of a redemption (the same for every retry with its key).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Redemption {
    pub reporter_id: String,
    pub idempotency_key: String,
    pub points: u32,
    pub note: String,
    pub at: String,
    pub at_ms: u64,
    /// The balance right after this redemption.
    pub balance_after: i64,
}

impl From<RedemptionRow> for Redemption {
    fn from(r: RedemptionRow) -> Self {
        Self {
            at: china_time(r.at_ms),
            reporter_id: r.reporter_id,
            idempotency_key: r.idempotency_key,
            points: r.points,
            note: r.note,
            at_ms: r.at_ms,
            balance_after: r.balance_after,
        }
    }
}

/// Whether `reporter_id` is a reporter token of the token file.
pub fn known_reporter(tokens: &TokenFile, reporter_id: &str) -> bool {
    tokens
        .tokens
        .iter()
        .any(|t| t.id == reporter_id && t.kind == TokenKind::Reporter)
}

/// Redeems `request.points` of `reporter_id`'s balance under `key`, or answers a retry of `key`
/// with its first answer (`true`: a replay, nothing spent). Serialised per reporter.
#[allow(clippy::too_many_arguments)]
pub async fn redeem(
    ch: &clickhouse::Client,
    locks: &RedemptionLocks,
    rules: &PointRules,
    reporter_id: &str,
    key: &str,
    request: &RedemptionRequest,
    redeemed_by: &str,
    now_ms: u64,
) -> Result<(Redemption, bool), ApiError> {
    let lock = locks.of(reporter_id);
    let _held = lock.lock().await;
    let unavailable = |e: clickhouse::error::Error| {
        tracing::warn!(error = %e, "redemption: ClickHouse failed");
        ApiError::Unavailable
    };
    let earlier: Option<RedemptionRow> = ch
        .query(REDEMPTION_SQL)
        .bind(reporter_id)
        .bind(key)
        .fetch_optional()
        .await
        .map_err(unavailable)?;
    if let Some(first) = earlier {
        if first.points != request.points || first.note != request.note {
            return Err(ApiError::IdempotencyKeyReused(key.to_owned()));
        }
        return Ok((first.into(), true));
    }
    let (_, earned) = ledger(ch, reporter_id, rules).await.map_err(unavailable)?;
    let balance = earned as i64 - redeemed(ch, reporter_id).await.map_err(unavailable)? as i64;
    if i64::from(request.points) > balance {
        return Err(ApiError::InsufficientPoints {
            balance,
            requested: request.points,
        });
    }
    let row = RedemptionRow {
        reporter_id: reporter_id.to_owned(),
        idempotency_key: key.to_owned(),
        points: request.points,
        note: request.note.clone(),
        redeemed_by: redeemed_by.to_owned(),
        at_ms: now_ms,
        balance_after: balance - i64::from(request.points),
    };
    let mut insert = ch
        .insert::<RedemptionRow>("redemptions")
        .await
        .map_err(unavailable)?;
    insert.write(&row).await.map_err(unavailable)?;
    insert.end().await.map_err(unavailable)?;
    Ok((row.into(), false))
}

// ---------------------------------------------------------------------------------------------
// Leaderboard

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    Week,
    Month,
    Year,
}

impl Period {
    pub fn parse(s: &str) -> Option<Period> {
        match s {
            "week" => Some(Period::Week),
            "month" => Some(Period::Month),
            "year" => Some(Period::Year),
            _ => None,
        }
    }

    /// The China dates `[first, next)` of the calendar week (Monday first), month or year that
    /// holds `now_ms`.
    pub fn dates(self, now_ms: u64) -> (NaiveDate, NaiveDate) {
        let offset = FixedOffset::east_opt(CHINA_OFFSET_SECS).expect("valid offset");
        let today = offset
            .timestamp_millis_opt(now_ms as i64)
            .single()
            .expect("a valid instant")
            .date_naive();
        let date = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).expect("a valid date");
        match self {
            Period::Week => {
                let monday = today - Days::days(i64::from(today.weekday().num_days_from_monday()));
                (monday, monday + Days::days(7))
            }
            Period::Month => {
                let first = date(today.year(), today.month(), 1);
                let next = if today.month() == 12 {
                    date(today.year() + 1, 1, 1)
                } else {
                    date(today.year(), today.month() + 1, 1)
                };
                (first, next)
            }
            Period::Year => (date(today.year(), 1, 1), date(today.year() + 1, 1, 1)),
        }
    }
}

/// The query parameters of `GET /v1/leaderboard`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BoardParams {
    pub period: Period,
    pub group: Option<ReporterGroup>,
    pub limit: usize,
    /// An instant of the period to rank (default: now, the current period).
    pub at_ms: Option<u64>,
}

pub const DEFAULT_BOARD_LIMIT: usize = 50;
pub const MAX_BOARD_LIMIT: usize = 500;

impl BoardParams {
    pub fn parse(pairs: &[(String, String)]) -> Result<Self, ApiError> {
        let mut seen: Vec<&str> = Vec::new();
        let mut p = BoardParams {
            period: Period::Month,
            group: None,
            limit: DEFAULT_BOARD_LIMIT,
            at_ms: None,
        };
        for (name, value) in pairs {
            if seen.contains(&name.as_str()) {
                return Err(ApiError::invalid_parameter(name, "given more than once"));
            }
            seen.push(name);
            let bad = |detail: &str| ApiError::invalid_parameter(name, detail);
            match name.as_str() {
                "period" => {
                    p.period = Period::parse(value).ok_or_else(|| bad("week, month or year"))?
                }
                "group" => {
                    p.group = Some(value.parse().map_err(|_| {
                        bad("a reporter group (courier, food_delivery, ride_hailing, truck, grid_member)")
                    })?)
                }
                "limit" => {
                    p.limit = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=MAX_BOARD_LIMIT).contains(n))
                        .ok_or_else(|| bad("a whole number from 1 to 500"))?
                }
                "at" => p.at_ms = Some(crate::indicators::instant(name, value)?),
                _ => return Err(bad("unknown parameter (period, group, limit, at)")),
            }
        }
        Ok(p)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BoardRow {
    /// Competition rank (equal points share a rank).
    pub rank: u32,
    pub reporter_id: String,
    /// The reporter token's display name (never a phone number or a token).
    pub name: Option<String>,
    pub group: Option<ReporterGroup>,
    pub points: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Leaderboard {
    pub period: Period,
    /// The China dates `[from, to)` of the period.
    pub from: String,
    pub to: String,
    pub group: Option<ReporterGroup>,
    pub rows: Vec<BoardRow>,
}

/// `GET /v1/leaderboard`: points earned in the period (week, month or year, China dates) that
/// holds `at` (default: now), by reporter, highest first (ties by reporter id), the top `limit`.
pub async fn leaderboard(
    ch: &clickhouse::Client,
    tokens: &TokenFile,
    rules: &PointRules,
    params: &BoardParams,
    now_ms: u64,
) -> clickhouse::error::Result<Leaderboard> {
    let (first, next) = params.period.dates(params.at_ms.unwrap_or(now_ms));
    let found: Vec<BoardEntries> = ch
        .query(&leaderboard_sql())
        .bind(china_midnight_ms(first))
        .bind(china_midnight_ms(next))
        .fetch_all()
        .await?;
    Ok(rank(found, tokens, rules, params, first, next))
}

/// Sums each reporter's points, keeps the period's group, ranks and cuts to the limit.
fn rank(
    found: Vec<BoardEntries>,
    tokens: &TokenFile,
    rules: &PointRules,
    params: &BoardParams,
    first: NaiveDate,
    next: NaiveDate,
) -> Leaderboard {
    let names: HashMap<&str, &TokenRecord> =
        tokens.tokens.iter().map(|t| (t.id.as_str(), t)).collect();
    let mut points: HashMap<String, u64> = HashMap::new();
    for e in found {
        let Some(reason) = Reason::parse(&e.reason) else {
            continue;
        };
        *points.entry(e.reporter_id).or_default() += u64::from(rules.points(reason)) * e.entries;
    }
    let mut rows: Vec<BoardRow> = points
        .into_iter()
        .filter(|(_, p)| *p > 0)
        .map(|(reporter_id, points)| {
            let token = names.get(reporter_id.as_str());
            BoardRow {
                rank: 0,
                name: token.map(|t| t.name.clone()),
                group: token.and_then(|t| t.group),
                reporter_id,
                points,
            }
        })
        .filter(|r| params.group.is_none() || r.group == params.group)
        .collect();
    rows.sort_by(|a, b| {
        b.points
            .cmp(&a.points)
            .then_with(|| a.reporter_id.cmp(&b.reporter_id))
    });
    let mut previous: Option<(u64, u32)> = None;
    for (i, row) in rows.iter_mut().enumerate() {
        row.rank = match previous {
            Some((p, r)) if p == row.points => r,
            _ => i as u32 + 1,
        };
        previous = Some((row.points, row.rank));
    }
    rows.truncate(params.limit);
    Leaderboard {
        period: params.period,
        from: first.to_string(),
        to: next.to_string(),
        group: params.group,
        rows,
    }
}

// ---------------------------------------------------------------------------------------------
// A reporter's clues

/// The latest state of each of a reporter's clues, newest report first, after a cursor (the
/// previous page's last item: its report time and id; the first page binds u64::MAX).
const MY_CLUES_SQL: &str = "\
SELECT toString(clue_id) AS clue, argMax(status, version) AS latest_status, \
       any(category) AS category_code, any(street_code) AS street, \
       any(community_code) AS community, max(reported_at_ms) AS reported_at, \
       argMax(accepted_at_ms, version) AS accepted_at, argMax(yellow_at_ms, version) AS yellow_at, \
       argMax(deadline_ms, version) AS deadline, argMax(closed_at_ms, version) AS closed_at, \
       argMax(rating, version) AS latest_rating, argMax(last_action, version) AS action, \
       argMax(last_actor_role, version) AS actor_role, \
       argMax(last_action_at_ms, version) AS action_at, \
       max(ifNull(toString(duplicate_of), '')) AS duplicate \
FROM clues WHERE reporter_id = ? \
GROUP BY clue_id \
HAVING reported_at < ? OR (reported_at = ? AND clue_id < toUUID(?)) \
ORDER BY reported_at DESC, clue_id DESC \
LIMIT ?";

const NIL_UUID: &str = "00000000-0000-0000-0000-000000000000";

const MY_CLUES_TOTAL_SQL: &str = "SELECT uniqExact(clue_id) FROM clues WHERE reporter_id = ?";

/// One of a reporter's clues as ClickHouse returns it. Its codes are read leniently (see
/// [`empty_as_none::lenient`]): a malformed one is shown as `""`, not an error of the page.
#[derive(Clone, Debug, clickhouse::Row, Deserialize)]
struct MyClueRow {
    clue: String,
    latest_status: String,
    #[serde(with = "empty_as_none::lenient")]
    category_code: Option<CategoryCode>,
    #[serde(with = "empty_as_none::lenient")]
    street: Option<StreetCode>,
    #[serde(with = "empty_as_none::lenient")]
    community: Option<CommunityCode>,
    reported_at: u64,
    accepted_at: u64,
    yellow_at: u64,
    deadline: u64,
    closed_at: u64,
    latest_rating: u8,
    action: String,
    actor_role: String,
    action_at: u64,
    duplicate: String,
}

pub const DEFAULT_MY_LIMIT: u64 = 20;
pub const MAX_MY_LIMIT: u64 = 100;

/// A place in the newest-first order: after the clue reported at `reported_at_ms` with `clue_id`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MyCursor {
    pub reported_at_ms: u64,
    pub clue_id: String,
}

impl MyCursor {
    /// `<reported_at_ms>:<clue id>`; clients pass it back unchanged.
    pub fn encode(&self) -> String {
        format!("{}:{}", self.reported_at_ms, self.clue_id)
    }

    pub fn decode(text: &str) -> Option<Self> {
        let (at, id) = text.split_once(':')?;
        let clue: gridclue_core::ClueId = id.parse().ok()?;
        Some(Self {
            reported_at_ms: at.parse().ok()?,
            clue_id: clue.to_string(),
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MyParams {
    pub limit: u64,
    pub cursor: Option<MyCursor>,
}

impl MyParams {
    pub fn parse(pairs: &[(String, String)]) -> Result<Self, ApiError> {
        let mut seen: Vec<&str> = Vec::new();
        let mut p = MyParams {
            limit: DEFAULT_MY_LIMIT,
            cursor: None,
        };
        for (name, value) in pairs {
            if seen.contains(&name.as_str()) {
                return Err(ApiError::invalid_parameter(name, "given more than once"));
            }
            seen.push(name);
            let bad = |detail: &str| ApiError::invalid_parameter(name, detail);
            match name.as_str() {
                "limit" => {
                    p.limit = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=MAX_MY_LIMIT).contains(n))
                        .ok_or_else(|| bad("a whole number from 1 to 100"))?
                }
                "cursor" => {
                    p.cursor = Some(
                        MyCursor::decode(value)
                            .ok_or_else(|| bad("not a cursor of this list (next_cursor)"))?,
                    )
                }
                _ => return Err(bad("unknown parameter (limit, cursor)")),
            }
        }
        Ok(p)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MyClue {
    pub clue_id: String,
    pub status: String,
    /// green, yellow or red while the case's deadline runs; null otherwise.
    pub light: Option<gridclue_core::Light>,
    /// Empty (`""`) where the clue has none (outside the district, no community or street).
    #[serde(with = "empty_as_none")]
    pub category: Option<CategoryCode>,
    pub category_name: Option<String>,
    #[serde(with = "empty_as_none")]
    pub street_code: Option<StreetCode>,
    pub street_name: Option<String>,
    #[serde(with = "empty_as_none")]
    pub community_code: Option<CommunityCode>,
    pub community_name: Option<String>,
    pub reported_at: String,
    pub reported_at_ms: u64,
    pub deadline: Option<String>,
    pub deadline_ms: Option<u64>,
    pub closed_at_ms: Option<u64>,
    /// The reporter's rating, 1–5 (null: not rated).
    pub rating: Option<u8>,
    /// The latest action taken by a person (`accept`, `dispatch`, `supervise`, …), who took it
    /// (role) and when.
    pub last_action: Option<String>,
    pub last_actor_role: Option<String>,
    pub last_action_at_ms: Option<u64>,
    /// The case this report duplicates.
    pub duplicate_of: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MyClues {
    pub reporter_id: String,
    /// All the reporter's clues, not only this page.
    pub total: u64,
    pub items: Vec<MyClue>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

fn nonzero(v: u64) -> Option<u64> {
    (v > 0).then_some(v)
}

fn nonempty(v: String) -> Option<String> {
    (!v.is_empty()).then_some(v)
}

/// `GET /v1/my/clues` for `reporter_id`.
pub async fn my_clues(
    ch: &clickhouse::Client,
    reporter_id: &str,
    params: &MyParams,
    reference: &Reference,
    now_ms: u64,
) -> clickhouse::error::Result<MyClues> {
    let (at, after) = match &params.cursor {
        Some(c) => (c.reported_at_ms, c.clue_id.clone()),
        None => (u64::MAX, NIL_UUID.to_owned()),
    };
    let mut rows: Vec<MyClueRow> = ch
        .query(MY_CLUES_SQL)
        .bind(reporter_id)
        .bind(at)
        .bind(at)
        .bind(&after)
        .bind(params.limit + 1)
        .fetch_all()
        .await?;
    let total: u64 = ch
        .query(MY_CLUES_TOTAL_SQL)
        .bind(reporter_id)
        .fetch_one()
        .await?;
    let more = rows.len() as u64 > params.limit;
    rows.truncate(params.limit as usize);
    let next_cursor = more.then(|| rows.last()).flatten().map(|r| {
        MyCursor {
            reported_at_ms: r.reported_at,
            clue_id: r.clue.clone(),
        }
        .encode()
    });
    let items =
        rows.into_iter()
            .map(|r| {
                let light =
                    r.latest_status.parse::<Status>().ok().and_then(|s| {
                        clue_light(s, now_ms, r.accepted_at, r.yellow_at, r.deadline)
                    });
                MyClue {
                    light,
                    category_name: r
                        .category_code
                        .as_ref()
                        .and_then(|c| reference.category(c))
                        .map(|c| c.name_zh.clone()),
                    street_name: r
                        .street
                        .as_ref()
                        .and_then(|c| reference.street_name(c))
                        .map(str::to_owned),
                    community_name: r
                        .community
                        .as_ref()
                        .and_then(|c| reference.community_name(c))
                        .map(str::to_owned),
                    reported_at: china_time(r.reported_at),
                    reported_at_ms: r.reported_at,
                    deadline: nonzero(r.deadline).map(china_time),
                    deadline_ms: nonzero(r.deadline),
                    closed_at_ms: nonzero(r.closed_at),
                    rating: (r.latest_rating > 0).then_some(r.latest_rating),
                    last_action: nonempty(r.action),
                    last_actor_role: nonempty(r.actor_role),
                    last_action_at_ms: nonzero(r.action_at),
                    duplicate_of: nonempty(r.duplicate),
                    clue_id: r.clue,
                    status: r.latest_status,
                    category: r.category_code,
                    street_code: r.street,
                    community_code: r.community,
                }
            })
            .collect();
    Ok(MyClues {
        reporter_id: reporter_id.to_owned(),
        total,
        items,
        next_cursor,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> u64 {
        crate::indicators::instant("t", s).unwrap()
    }

    #[test]
    fn periods_are_china_calendar_weeks_months_and_years() {
        let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        // Sunday 2026-11-08 23:30 in China is still the week of Monday 11-02 (15:30 UTC).
        let sunday = at("2026-11-08T23:30:00+08:00");
        assert_eq!(
            Period::Week.dates(sunday),
            (d("2026-11-02"), d("2026-11-09"))
        );
        // Monday 00:10 in China is Sunday in UTC: a new week already.
        let monday = at("2026-11-09T00:10:00+08:00");
        assert_eq!(
            Period::Week.dates(monday),
            (d("2026-11-09"), d("2026-11-16"))
        );
        let december = at("2026-12-31T23:59:00+08:00");
        assert_eq!(
            Period::Month.dates(december),
            (d("2026-12-01"), d("2027-01-01"))
        );
        assert_eq!(
            Period::Year.dates(at("2027-01-01T00:00:00+08:00")),
            (d("2027-01-01"), d("2028-01-01"))
        );
    }

    fn token(id: &str, group: ReporterGroup, name: &str) -> TokenRecord {
        TokenRecord {
            id: id.into(),
            hash: String::new(),
            kind: TokenKind::Reporter,
            group: Some(group),
            scope: None,
            name: name.into(),
            revoked: false,
            created_at_ms: 0,
        }
    }

    #[test]
    fn points_are_summed_by_the_rules_and_ranked_with_shared_ranks() {
        let tokens = TokenFile {
            tokens: vec![
                token("tok_a", ReporterGroup::Courier, "A"),
                token("tok_b", ReporterGroup::FoodDelivery, "B"),
                token("tok_c", ReporterGroup::FoodDelivery, "C"),
            ],
        };
        let e = |reporter: &str, reason: &str, entries: u64| BoardEntries {
            reporter_id: reporter.into(),
            reason: reason.into(),
            entries,
        };
        let found = || {
            vec![
                e("tok_a", "accepted", 1),
                e("tok_a", "closed", 1),
                e("tok_b", "duplicate", 2),
                e("tok_b", "accepted", 1),
                e("tok_c", "rejected", 4),
                e("tok_unknown", "accepted", 1),
                e("tok_unknown", "duplicate", 2),
            ]
        };
        let params = BoardParams::parse(&[]).unwrap();
        let (first, next) = params.period.dates(0);
        let board = rank(
            found(),
            &tokens,
            &PointRules::default(),
            &params,
            first,
            next,
        );
        let rows: Vec<(u32, &str, u64)> = board
            .rows
            .iter()
            .map(|r| (r.rank, r.reporter_id.as_str(), r.points))
            .collect();
        // A: 10 + 5; B: 2·2 + 10; unknown: 10 + 2·2, tied with B (by id after it); C:
        // rejections are worth 0 and not listed.
        assert_eq!(
            rows,
            vec![(1, "tok_a", 15), (2, "tok_b", 14), (2, "tok_unknown", 14)]
        );
        assert_eq!(board.rows[2].name, None);
        let generous = PointRules {
            rejected: 1,
            ..PointRules::default()
        };
        let board = rank(found(), &tokens, &generous, &params, first, next);
        assert!(board
            .rows
            .iter()
            .any(|r| r.reporter_id == "tok_c" && r.points == 4));
        let food = BoardParams::parse(&[("group".into(), "food_delivery".into())]).unwrap();
        let board = rank(found(), &tokens, &generous, &food, first, next);
        let ids: Vec<&str> = board.rows.iter().map(|r| r.reporter_id.as_str()).collect();
        assert_eq!(ids, vec!["tok_b", "tok_c"]);
    }

    #[test]
    fn redemption_requests_and_keys_are_checked() {
        let ok = RedemptionRequest {
            points: 5,
            note: "爱心卡".into(),
        };
        assert!(ok.check().is_ok());
        let zero = RedemptionRequest {
            points: 0,
            ..ok.clone()
        };
        assert!(zero
            .check()
            .unwrap_err()
            .to_string()
            .starts_with("`points`"));
        let long = RedemptionRequest {
            note: "长".repeat(MAX_NOTE_CHARS + 1),
            ..ok.clone()
        };
        assert!(long.check().unwrap_err().to_string().starts_with("`note`"));
        let header = |v: &str| axum::http::HeaderValue::from_str(v).unwrap();
        assert_eq!(idempotency_key(Some(&header("card-1"))).unwrap(), "card-1");
        assert!(idempotency_key(None).is_err());
        assert!(idempotency_key(Some(&header("with space"))).is_err());
        assert!(idempotency_key(Some(&header(&"k".repeat(129)))).is_err());
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let c = MyCursor {
            reported_at_ms: 42,
            clue_id: "6f1c2a7e-0000-4000-8000-000000000001".into(),
        };
        assert_eq!(MyCursor::decode(&c.encode()), Some(c));
        assert_eq!(MyCursor::decode("42"), None);
        assert_eq!(
            MyCursor::decode("x:6f1c2a7e-0000-4000-8000-000000000001"),
            None
        );
        assert_eq!(MyCursor::decode("42:not-a-uuid"), None);
    }
}
