//! `GET /v1/indicators`: the governance indicators of docs/ARCHITECTURE.md §6, grouped by
//! street, community, department or category, ranked by score.
//!
//! The cohort of a period `[from, to)` (China dates, UTC+8) is the cases accepted in it; every
//! case is evaluated as of an instant `as_of` (default: now; any instant, a future one too).
//! "As of" is exact: the query reads only facts whose business time (`occurred_at_ms`) is at or
//! before `as_of`, so a closure, a rework or an approved postponement after it does not count,
//! and a case rejected after `as_of` still counts as a case.
//!
//! How one case is read from its facts (`clue_events`, one row per fact):
//! - accepted at: its `accepted` fact; in the cohort when that lies in `[from, to)`, unless it
//!   left the loop by `as_of` (a `rejected`, `merged` or `withdrawn` fact: then not a case);
//! - deadline: the deadline of its latest `accepted` or `postponed` fact (an approved
//!   postponement moves it; the report's deadline only for records older than deadlines at
//!   acceptance); none (0) for a category without a limit: such a case is due once closed and
//!   never late;
//! - closed at: its `verified` fact; the working time from acceptance to closure is measured
//!   once by the clue processor with the district calendar and stored on that fact;
//! - verified / reworked / postponed / supervised: at least one `verified` or `verify_failed` /
//!   `verify_failed` / `postponed` / `supervised` fact; rating: its `rated` fact;
//! - group: its street, community and category (fixed at the report), and its department as of
//!   `as_of`: the one it was last dispatched to, else the one it was routed to.
//!
//! How it is computed: not by grouping the facts by clue, but from the sink's delta projection
//! (`indicator_deltas` and `indicator_days`, migration 0011): with each fact the sink writes
//! what it changes in its clue's contribution to these counts — the state before it with sign
//! −1, after it with +1, from the fact's time on, and the deadline's later effects (due at the
//! deadline, overdue a millisecond after). The counts as of `as_of` are the sums of the rows
//! holding from `as_of` or earlier, of the cohort days in `[from, to)` (read as all of them minus
//! the few holding from later, see [`sql`]). They equal the definition
//! above because each fact is stored once (the sink's exactly-once writes into `clue_events`) and
//! a clue's facts carry non-decreasing times (see the README: an instant between two facts of
//! one clue stamped out of order is the one case served differently). A case belongs to exactly
//! one group, so the total is the sum of the rows' counts, and every rate — of a row or of the
//! total — is computed from counts by [`Indicators::from_counts`], the one definition of the
//! formulas.
//!
//! The duplicate rate is over reports, not cases: the reports placed inside the district and
//! received in `[from, to)`, of which duplicates (by the dedupe verdict or merged by a street
//! office by `as_of`).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, FixedOffset, Months, NaiveDate, SecondsFormat};
use gridclue_core::codes::{or_empty, ActorScope, StreetCode};
use gridclue_core::telemetry::WarningLimiter;
use gridclue_core::tokens::{TokenKind, TokenRecord};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::reference::Reference;

/// China time (UTC+8): the periods' dates are China dates.
pub const CHINA_OFFSET_SECS: i32 = 8 * 3600;
/// The longest period answered, in months.
pub const MAX_PERIOD_MONTHS: u32 = 36;
const HOUR_MS: f64 = 3_600_000.0;

/// The weights of the composite score (综合指标值), from configuration.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScoreWeights {
    pub on_time: f64,
    pub closure: f64,
    pub rework: f64,
    pub postpone: f64,
}

impl Default for ScoreWeights {
    fn default() -> Self {
        Self {
            on_time: 50.0,
            closure: 30.0,
            rework: 10.0,
            postpone: 10.0,
        }
    }
}

/// What the rows are grouped by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum By {
    Street,
    Community,
    Department,
    Category,
}

impl By {
    pub const ALL: [By; 4] = [By::Street, By::Community, By::Department, By::Category];

    pub fn as_str(self) -> &'static str {
        match self {
            By::Street => "street",
            By::Community => "community",
            By::Department => "department",
            By::Category => "category",
        }
    }

    pub fn parse(s: &str) -> Option<By> {
        Self::ALL.into_iter().find(|b| b.as_str() == s)
    }

    /// The column of the delta rows holding a clue's group (fixed SQL, never user input): its
    /// street, community and category never change; its department is the one as of the delta.
    fn column(self) -> &'static str {
        match self {
            By::Street => "street_code",
            By::Community => "community_code",
            By::Department => "department",
            By::Category => "category",
        }
    }
}

/// Whose indicators a token reads: the district every street's, a street office its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reader {
    District,
    Street(StreetCode),
}

impl Reader {
    pub fn of(token: &TokenRecord) -> Result<Self, ApiError> {
        match (
            token.kind,
            token.scope.as_ref().and_then(ActorScope::street),
        ) {
            (TokenKind::District, _) => Ok(Reader::District),
            (TokenKind::Street, Some(&street)) => Ok(Reader::Street(street)),
            (TokenKind::Street, None) => Err(ApiError::Forbidden(
                "read indicators (street token without a street)",
            )),
            (TokenKind::Reporter, _) => {
                Err(ApiError::Forbidden("read indicators (reporter token)"))
            }
            (TokenKind::Department, _) => {
                Err(ApiError::Forbidden("read indicators (department token)"))
            }
        }
    }
}

/// The query parameters of `GET /v1/indicators`, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Params {
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub as_of_ms: Option<u64>,
    pub by: By,
    pub street: Option<StreetCode>,
}

fn date(name: &str, value: &str) -> Result<NaiveDate, ApiError> {
    NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .map_err(|_| ApiError::invalid_parameter(name, "must be a date YYYY-MM-DD (China time)"))
}

/// An instant: RFC 3339 with an offset (`2026-11-05T12:00:00+08:00`, a `+` sent unencoded in a
/// query string arrives as a space and is read as `+`), or epoch milliseconds.
pub(crate) fn instant(name: &str, value: &str) -> Result<u64, ApiError> {
    let bad = || {
        ApiError::invalid_parameter(
            name,
            "must be an RFC 3339 instant with an offset (2026-11-05T12:00:00+08:00) or epoch milliseconds",
        )
    };
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return value.parse().map_err(|_| bad());
    }
    let t = DateTime::parse_from_rfc3339(&value.replace(' ', "+")).map_err(|_| bad())?;
    u64::try_from(t.timestamp_millis()).map_err(|_| bad())
}

impl Params {
    /// Parses `from`, `to` (required), `as_of`, `by` (default `street`) and `street`; anything
    /// else, a repeated parameter, a malformed value, `from` not before `to` or a period longer
    /// than three years is a 400 naming the parameter.
    pub fn parse(pairs: &[(String, String)]) -> Result<Self, ApiError> {
        let mut seen: Vec<&str> = Vec::new();
        let (mut from, mut to, mut as_of_ms, mut by, mut street) = (None, None, None, None, None);
        for (name, value) in pairs {
            if seen.contains(&name.as_str()) {
                return Err(ApiError::invalid_parameter(name, "given more than once"));
            }
            seen.push(name);
            match name.as_str() {
                "from" => from = Some(date(name, value)?),
                "to" => to = Some(date(name, value)?),
                "as_of" => as_of_ms = Some(instant(name, value)?),
                "by" => {
                    by = Some(By::parse(value).ok_or_else(|| {
                        ApiError::invalid_parameter(
                            name,
                            format!(
                            "{value:?} is not a grouping (street, community, department, category)"
                        ),
                        )
                    })?)
                }
                "street" => street = Some(crate::params::street_code(name, value)?),
                _ => {
                    return Err(ApiError::invalid_parameter(
                        name,
                        "unknown parameter (from, to, as_of, by, street)",
                    ))
                }
            }
        }
        let from = from.ok_or_else(|| ApiError::invalid_parameter("from", "is required"))?;
        let to = to.ok_or_else(|| ApiError::invalid_parameter("to", "is required"))?;
        if to <= from {
            return Err(ApiError::invalid_parameter("to", "must be after from"));
        }
        if from
            .checked_add_months(Months::new(MAX_PERIOD_MONTHS))
            .is_none_or(|limit| to > limit)
        {
            return Err(ApiError::invalid_parameter(
                "to",
                "the period from `from` to `to` may span at most 3 years",
            ));
        }
        Ok(Params {
            from,
            to,
            as_of_ms,
            by: by.unwrap_or(By::Street),
            street,
        })
    }
}

/// Midnight of a China date, in epoch milliseconds.
pub fn china_midnight_ms(d: NaiveDate) -> u64 {
    let utc = d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc();
    (utc.timestamp_millis() - i64::from(CHINA_OFFSET_SECS) * 1000).max(0) as u64
}

/// An instant in China time, RFC 3339.
pub fn china_time(ms: u64) -> String {
    let offset = FixedOffset::east_opt(CHINA_OFFSET_SECS).expect("valid offset");
    DateTime::from_timestamp_millis(ms as i64)
        .map(|t| {
            t.with_timezone(&offset)
                .to_rfc3339_opts(SecondsFormat::Millis, false)
        })
        .unwrap_or_default()
}

/// What a query answers: the scope checked and the period as instants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub params: Params,
    pub from_ms: u64,
    pub to_ms: u64,
    pub as_of_ms: u64,
    /// The street the rows are restricted to (a street token's own, or the district's filter).
    pub street: Option<StreetCode>,
}

/// Checks `params` against the reader's scope: a street office reads its own street only (a
/// filter naming another street is a 403).
pub fn plan(reader: &Reader, params: Params, now_ms: u64) -> Result<Plan, ApiError> {
    let street = match (reader, params.street) {
        (Reader::District, s) => s,
        (Reader::Street(own), Some(asked)) if asked != *own => {
            return Err(ApiError::Forbidden(
                "read another street's indicators (street token)",
            ))
        }
        (Reader::Street(own), _) => Some(*own),
    };
    Ok(Plan {
        from_ms: china_midnight_ms(params.from),
        to_ms: china_midnight_ms(params.to),
        as_of_ms: params.as_of_ms.unwrap_or(now_ms),
        street,
        params,
    })
}

/// The counts of one group as ClickHouse returns them (every rate is computed from these).
#[derive(Clone, Debug, Default, PartialEq, Eq, clickhouse::Row, Serialize, Deserialize)]
pub struct Counts {
    pub key: String,
    pub accepted: u64,
    pub due: u64,
    pub closed: u64,
    pub closed_on_time: u64,
    pub verified: u64,
    pub reworked: u64,
    pub postponed: u64,
    pub supervised: u64,
    pub overdue_open: u64,
    /// Closed cases whose closure carries its working time, and the sum of those times.
    pub timed_closed: u64,
    pub working_ms: u64,
    /// Rated cases and the sum of their ratings.
    pub rated: u64,
    pub rating_sum: u64,
    /// Reports received in the period, and of those, duplicates.
    pub reports: u64,
    pub duplicates: u64,
}

/// The counts of one group as ClickHouse sums them: signed, like the delta rows. Every sum is
/// at least 0 when the projection is exact; a negative one (rows written behind the sink's back,
/// or a projection rebuilt the old way) is served as 0 (see [`non_negative`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, clickhouse::Row, Deserialize)]
struct SignedCounts {
    key: String,
    accepted: i64,
    due: i64,
    closed: i64,
    closed_on_time: i64,
    verified: i64,
    reworked: i64,
    postponed: i64,
    supervised: i64,
    overdue_open: i64,
    timed_closed: i64,
    working_ms: i64,
    rated: i64,
    rating_sum: i64,
    reports: i64,
    duplicates: i64,
}

impl SignedCounts {
    fn non_negative(self) -> Counts {
        let n = |what: &'static str, v: i64| non_negative(what, &self.key, v);
        Counts {
            accepted: n("accepted", self.accepted),
            due: n("due", self.due),
            closed: n("closed", self.closed),
            closed_on_time: n("closed_on_time", self.closed_on_time),
            verified: n("verified", self.verified),
            reworked: n("reworked", self.reworked),
            postponed: n("postponed", self.postponed),
            supervised: n("supervised", self.supervised),
            overdue_open: n("overdue_open", self.overdue_open),
            timed_closed: n("timed_closed", self.timed_closed),
            working_ms: n("working_ms", self.working_ms),
            rated: n("rated", self.rated),
            rating_sum: n("rating_sum", self.rating_sum),
            reports: n("reports", self.reports),
            duplicates: n("duplicates", self.duplicates),
            key: self.key,
        }
    }
}

/// A count summed from signed rows, as served: counts are never negative (the JSON promises
/// non-negative integers), so a negative sum — the projection is off, not the facts — is served
/// as 0 and logged (at most once a minute per count: the same drift shows in every answer until
/// the rebuild).
pub(crate) fn non_negative(what: &'static str, key: &str, value: i64) -> u64 {
    static NEGATIVE_SUMS: WarningLimiter = WarningLimiter::new(Duration::from_secs(60));
    u64::try_from(value).unwrap_or_else(|_| {
        if let Some(suppressed) = NEGATIVE_SUMS.admit(what) {
            tracing::warn!(
                what,
                key,
                value,
                suppressed,
                "a summed count is negative, served as 0 (at most one warning per count a \
                 minute; `suppressed`: the others since): run `gridclue-sink check-aggregates`"
            );
        }
        0
    })
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.accepted += o.accepted;
        self.due += o.due;
        self.closed += o.closed;
        self.closed_on_time += o.closed_on_time;
        self.verified += o.verified;
        self.reworked += o.reworked;
        self.postponed += o.postponed;
        self.supervised += o.supervised;
        self.overdue_open += o.overdue_open;
        self.timed_closed += o.timed_closed;
        self.working_ms += o.working_ms;
        self.rated += o.rated;
        self.rating_sum += o.rating_sum;
        self.reports += o.reports;
        self.duplicates += o.duplicates;
    }
}

/// One row of the answer (and its total): counts, rates and the score.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Indicators {
    pub key: String,
    pub name: String,
    /// Competition rank by score (equal scores share a rank); null when the score is null.
    pub rank: Option<u32>,
    pub accepted: u64,
    pub due: u64,
    pub closed: u64,
    pub closed_on_time: u64,
    pub verified: u64,
    pub reworked: u64,
    pub postponed: u64,
    pub supervised: u64,
    pub overdue_open: u64,
    pub rated: u64,
    pub reports: u64,
    pub duplicates: u64,
    pub closure_rate: Option<f64>,
    pub on_time_rate: Option<f64>,
    pub rework_rate: Option<f64>,
    pub postpone_rate: Option<f64>,
    pub duplicate_rate: Option<f64>,
    pub mean_hours_to_close: Option<f64>,
    pub satisfaction: Option<f64>,
    pub score: Option<f64>,
}

/// `n / d`, null when `d` is 0 (never 0 for "no data").
fn ratio(n: u64, d: u64) -> Option<f64> {
    (d > 0).then(|| n as f64 / d as f64)
}

impl Indicators {
    /// The formulas of docs/ARCHITECTURE.md §6 applied to a group's counts.
    pub fn from_counts(c: &Counts, name: String, w: &ScoreWeights) -> Self {
        let closure_rate = ratio(c.closed, c.due);
        let on_time_rate = ratio(c.closed_on_time, c.due);
        let rework_rate = ratio(c.reworked, c.verified);
        let postpone_rate = ratio(c.postponed, c.accepted);
        let score = match (on_time_rate, closure_rate) {
            (Some(on_time), Some(closure)) => Some(
                w.on_time * on_time
                    + w.closure * closure
                    + w.rework * (1.0 - rework_rate.unwrap_or(0.0))
                    + w.postpone * (1.0 - postpone_rate.unwrap_or(0.0)),
            ),
            _ => None,
        };
        Self {
            key: c.key.clone(),
            name,
            rank: None,
            accepted: c.accepted,
            due: c.due,
            closed: c.closed,
            closed_on_time: c.closed_on_time,
            verified: c.verified,
            reworked: c.reworked,
            postponed: c.postponed,
            supervised: c.supervised,
            overdue_open: c.overdue_open,
            rated: c.rated,
            reports: c.reports,
            duplicates: c.duplicates,
            closure_rate,
            on_time_rate,
            rework_rate,
            postpone_rate,
            duplicate_rate: ratio(c.duplicates, c.reports),
            mean_hours_to_close: ratio(c.working_ms, c.timed_closed).map(|ms| ms / HOUR_MS),
            satisfaction: ratio(c.rating_sum, c.rated),
            score,
        }
    }
}

/// The answer of `GET /v1/indicators`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Answer {
    pub from: String,
    pub to: String,
    pub as_of: String,
    pub as_of_ms: u64,
    pub by: By,
    /// The street the rows are restricted to (null: the whole district).
    pub street: Option<StreetCode>,
    pub weights: ScoreWeights,
    pub rows: Vec<Indicators>,
    pub total: Indicators,
}

/// The counts of [`Counts`] as sums of the delta tables' columns (never negative: every clue's
/// deltas up to an instant sum to its contribution then).
const SUMS: &str = "toInt64(sum(accepted)) AS accepted, toInt64(sum(due)) AS due, \
     toInt64(sum(closed)) AS closed, toInt64(sum(closed_on_time)) AS closed_on_time, \
     toInt64(sum(verified)) AS verified, toInt64(sum(reworked)) AS reworked, \
     toInt64(sum(postponed)) AS postponed, toInt64(sum(supervised)) AS supervised, \
     toInt64(sum(overdue_open)) AS overdue_open, toInt64(sum(timed_closed)) AS timed_closed, \
     toInt64(sum(working_ms)) AS working_ms, toInt64(sum(rated)) AS rated, \
     toInt64(sum(rating_sum)) AS rating_sum, toInt64(sum(reports)) AS reports, \
     toInt64(sum(duplicates)) AS duplicates";

/// The delta columns the tables share, and the same negated.
const DELTAS: &str = "accepted, due, closed, closed_on_time, verified, reworked, postponed, \
     supervised, overdue_open, timed_closed, working_ms, rated, rating_sum, reports, duplicates";
const MINUS_DELTAS: &str = "-accepted, -due, -closed, -closed_on_time, -verified, -reworked, \
     -postponed, -supervised, -overdue_open, -timed_closed, -working_ms, -rated, -rating_sum, \
     -reports, -duplicates";

const DAY_MS: u64 = 86_400_000;

/// The China date of `ms` as days since 1970-01-01 (the delta tables' cohort day).
pub(crate) fn cohort_day(ms: u64) -> u64 {
    (ms + CHINA_OFFSET_SECS as u64 * 1000) / DAY_MS
}

/// The query of `by`: one row per group, summed from the delta projection (see the module
/// docs): every delta of the cohort days (`indicator_cohorts`) minus those holding from after
/// `as_of` — the whole UTC days after `as_of`'s day from `indicator_days`, the rest of its day
/// from `indicator_deltas`. Groups whose cohort and reports are empty are left out. Values are
/// bound in this order: street ×2 (empty: every street), the cohort's first and end day (all
/// deltas); street ×2, first and end day, `as_of`'s UTC day (the later days); as_of, the end of
/// its day, first and end day, street ×2 (the rest of its day).
pub fn sql(by: By) -> String {
    format!(
        "SELECT key, {SUMS} \
FROM ( \
    SELECT key, {DELTAS} FROM indicator_cohorts \
    WHERE dim = '{dim}' AND (? = '' OR street_code = ?) AND cohort_day >= ? AND cohort_day < ? \
    UNION ALL \
    SELECT key, {MINUS_DELTAS} FROM indicator_days \
    WHERE dim = '{dim}' AND (? = '' OR street_code = ?) \
      AND cohort_day >= ? AND cohort_day < ? AND effective_day > ? \
    UNION ALL \
    SELECT {column} AS key, {MINUS_DELTAS} FROM indicator_deltas \
    WHERE effective_ms > ? AND effective_ms < ? \
      AND cohort_day >= ? AND cohort_day < ? AND (? = '' OR street_code = ?) \
) \
GROUP BY key \
HAVING accepted > 0 OR reports > 0",
        dim = by.as_str(),
        column = by.column(),
    )
}

/// Runs the query of `plan` (values bound client-side, never formatted into SQL).
pub async fn query(
    client: &clickhouse::Client,
    plan: &Plan,
) -> clickhouse::error::Result<Vec<Counts>> {
    let street = or_empty(&plan.street);
    let (first_day, end_day) = (cohort_day(plan.from_ms), cohort_day(plan.to_ms));
    let as_of_day = plan.as_of_ms / DAY_MS;
    client
        .query(&sql(plan.params.by))
        .bind(street)
        .bind(street)
        .bind(first_day)
        .bind(end_day)
        .bind(street)
        .bind(street)
        .bind(first_day)
        .bind(end_day)
        .bind(as_of_day)
        .bind(plan.as_of_ms)
        .bind((as_of_day + 1) * DAY_MS)
        .bind(first_day)
        .bind(end_day)
        .bind(street)
        .bind(street)
        .fetch_all::<SignedCounts>()
        .await
        .map(|rows| rows.into_iter().map(SignedCounts::non_negative).collect())
}

/// The groups every answer lists, even at zero (in scope): known streets, communities,
/// departments or categories of the reference data.
fn known_groups(
    by: By,
    street: Option<&StreetCode>,
    reference: &Reference,
) -> Vec<(String, String)> {
    let in_street = |code: &StreetCode| street.is_none_or(|s| s == code);
    match by {
        By::Street => reference
            .streets
            .iter()
            .filter(|s| in_street(&s.code))
            .map(|s| (s.code.to_string(), s.name.clone()))
            .collect(),
        By::Community => reference
            .communities
            .iter()
            .filter(|(code, _)| in_street(&code.street_code()))
            .map(|(code, name)| (code.to_string(), name.clone()))
            .collect(),
        By::Department => reference
            .departments
            .iter()
            .map(|d| (d.code.to_string(), d.name_zh.clone()))
            .collect(),
        By::Category => reference
            .categories
            .iter()
            .map(|c| (c.code.to_string(), c.name_zh.clone()))
            .collect(),
    }
}

/// Assembles the answer: a row per known group (zero counts included) and per group seen in the
/// data, ranked by score (highest first; null scores last; ties by key), and the total.
pub fn assemble(
    plan: &Plan,
    counts: Vec<Counts>,
    reference: &Reference,
    weights: &ScoreWeights,
) -> Answer {
    let by = plan.params.by;
    let mut groups: BTreeMap<String, (String, Counts)> =
        known_groups(by, plan.street.as_ref(), reference)
            .into_iter()
            .map(|(key, name)| {
                let c = Counts {
                    key: key.clone(),
                    ..Counts::default()
                };
                (key, (name, c))
            })
            .collect();
    let mut total = Counts {
        key: "total".into(),
        ..Counts::default()
    };
    for c in counts {
        total.add(&c);
        groups
            .entry(c.key.clone())
            .and_modify(|(_, known)| known.add(&c))
            .or_insert_with(|| (c.key.clone(), c));
    }
    let mut rows: Vec<Indicators> = groups
        .into_values()
        .map(|(name, c)| Indicators::from_counts(&c, name, weights))
        .collect();
    rows.sort_by(|a, b| {
        let by_score = match (a.score, b.score) {
            (Some(x), Some(y)) => y.total_cmp(&x),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        };
        by_score.then_with(|| a.key.cmp(&b.key))
    });
    let mut previous: Option<(f64, u32)> = None;
    for (i, row) in rows.iter_mut().enumerate() {
        if let Some(score) = row.score {
            let rank = match previous {
                Some((s, r)) if s == score => r,
                _ => i as u32 + 1,
            };
            row.rank = Some(rank);
            previous = Some((score, rank));
        }
    }
    let total_name = match &plan.street {
        Some(code) => reference
            .street_name(code)
            .map_or_else(|| code.to_string(), str::to_owned),
        None => "全区".to_owned(),
    };
    Answer {
        from: plan.params.from.to_string(),
        to: plan.params.to.to_string(),
        as_of: china_time(plan.as_of_ms),
        as_of_ms: plan.as_of_ms,
        by,
        street: plan.street,
        weights: *weights,
        rows,
        total: Indicators::from_counts(&total, total_name, weights),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_sums_are_served_as_zero_and_the_others_as_they_are() {
        assert_eq!(non_negative("reports", "s", 7), 7);
        assert_eq!(non_negative("reports", "s", 0), 0);
        assert_eq!(non_negative("reports", "s", -1), 0);
        assert_eq!(non_negative("reports", "s", i64::MIN), 0);
        let signed = SignedCounts {
            key: "310199001".into(),
            accepted: 4,
            due: 2,
            reports: -1,
            duplicates: -1,
            working_ms: i64::MAX,
            ..SignedCounts::default()
        };
        let served = signed.non_negative();
        assert_eq!(
            (
                served.key.as_str(),
                served.accepted,
                served.due,
                served.reports,
                served.duplicates
            ),
            ("310199001", 4, 2, 0, 0)
        );
        assert_eq!(served.working_ms, i64::MAX as u64);
        // No duplicate rate from a clamped count.
        let row = Indicators::from_counts(&served, String::new(), &ScoreWeights::default());
        assert_eq!((row.reports, row.duplicate_rate), (0, None));
    }

    fn pairs(query: &str) -> Vec<(String, String)> {
        query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (k.to_owned(), v.to_owned())
            })
            .collect()
    }

    fn parse(query: &str) -> Result<Params, String> {
        Params::parse(&pairs(query)).map_err(|e| e.to_string())
    }

    #[test]
    fn periods_are_china_dates_and_bounded() {
        let p = parse("from=2026-11-02&to=2026-11-09").unwrap();
        assert_eq!((p.by, p.as_of_ms, p.street), (By::Street, None, None));
        // Midnight in China is 16:00 UTC the day before.
        assert_eq!(china_midnight_ms(p.from), 1_793_548_800_000);
        assert_eq!(
            china_time(1_793_548_800_000),
            "2026-11-02T00:00:00.000+08:00"
        );
        assert!(parse("from=2024-02-29&to=2027-02-28").is_ok());
        let err = parse("from=2024-02-29&to=2027-03-01").unwrap_err();
        assert!(err.starts_with("query parameter `to`"), "{err}");
        let err = parse("from=2026-11-09&to=2026-11-09").unwrap_err();
        assert_eq!(err, "query parameter `to`: must be after from");
    }

    #[test]
    fn as_of_is_an_rfc3339_instant_or_epoch_millis() {
        let at = |v: &str| parse(&format!("from=2026-11-02&to=2026-11-09&as_of={v}"));
        let want = Some(1_793_851_200_000);
        assert_eq!(at("1793851200000").unwrap().as_of_ms, want);
        assert_eq!(at("2026-11-05T12:00:00+08:00").unwrap().as_of_ms, want);
        // An unencoded '+' arrives as a space.
        assert_eq!(at("2026-11-05T12:00:00 08:00").unwrap().as_of_ms, want);
        assert_eq!(at("2026-11-05T04:00:00Z").unwrap().as_of_ms, want);
        assert!(at("2026-11-05 12:00").unwrap_err().contains("`as_of`"));
        assert!(at("").unwrap_err().contains("`as_of`"));
    }

    #[test]
    fn a_street_token_reads_its_own_street() {
        let p = parse("from=2026-11-02&to=2026-11-09").unwrap();
        let own = Reader::Street(StreetCode::parse("310199001").unwrap());
        assert_eq!(
            plan(&own, p.clone(), 5).unwrap().street.unwrap(),
            "310199001"
        );
        let other = parse("from=2026-11-02&to=2026-11-09&street=310199002").unwrap();
        assert!(matches!(
            plan(&own, other.clone(), 5),
            Err(ApiError::Forbidden(_))
        ));
        let district = plan(&Reader::District, other, 5).unwrap();
        assert_eq!(
            (district.street.unwrap().as_str(), district.as_of_ms),
            ("310199002", 5)
        );
    }

    fn counts(accepted: u64, due: u64, closed: u64, on_time: u64) -> Counts {
        Counts {
            key: "k".into(),
            accepted,
            due,
            closed,
            closed_on_time: on_time,
            ..Counts::default()
        }
    }

    #[test]
    fn zero_denominators_give_null_and_the_score_counts_them_as_zero() {
        let w = ScoreWeights::default();
        // Nothing due: no closure or on-time rate, no score; 0 of 2 postponed is a rate of 0.
        let none_due = Indicators::from_counts(&counts(2, 0, 0, 0), "n".into(), &w);
        assert_eq!(
            (
                none_due.closure_rate,
                none_due.score,
                none_due.postpone_rate
            ),
            (None, None, Some(0.0))
        );
        assert_eq!(none_due.rework_rate, None);
        assert_eq!(none_due.mean_hours_to_close, None);
        // 4 due, 3 closed, 2 on time, nothing verified (rework null → counted as 0), 1 of 4
        // postponed: 50·0.5 + 30·0.75 + 10·1 + 10·0.75 = 65.
        let c = Counts {
            postponed: 1,
            ..counts(4, 4, 3, 2)
        };
        let i = Indicators::from_counts(&c, "n".into(), &w);
        assert_eq!(i.score, Some(65.0));
        let custom = ScoreWeights {
            on_time: 100.0,
            closure: 0.0,
            rework: 0.0,
            postpone: 0.0,
        };
        assert_eq!(
            Indicators::from_counts(&c, "n".into(), &custom).score,
            Some(50.0)
        );
    }

    #[test]
    fn rows_rank_by_score_with_shared_ranks_and_null_scores_last() {
        let plan = plan(
            &Reader::District,
            parse("from=2026-11-02&to=2026-11-09&by=department").unwrap(),
            0,
        )
        .unwrap();
        let row = |key: &str, c: Counts| Counts {
            key: key.into(),
            ..c
        };
        let answer = assemble(
            &plan,
            vec![
                row("b", counts(2, 2, 1, 1)),
                row("a", counts(2, 2, 1, 1)),
                row("c", counts(2, 2, 2, 2)),
                row("d", counts(1, 0, 0, 0)),
            ],
            &Reference::default(),
            &ScoreWeights::default(),
        );
        let ranked: Vec<(&str, Option<u32>)> = answer
            .rows
            .iter()
            .map(|r| (r.key.as_str(), r.rank))
            .collect();
        assert_eq!(
            ranked,
            vec![("c", Some(1)), ("a", Some(2)), ("b", Some(2)), ("d", None)]
        );
        assert_eq!(
            (answer.total.accepted, answer.total.due, answer.total.closed),
            (7, 6, 4)
        );
        // Unknown codes are named by their code.
        assert_eq!(answer.rows[0].name, "c");
    }

    #[test]
    fn every_placeholder_is_bound() {
        for by in By::ALL {
            assert_eq!(sql(by).matches('?').count(), 15, "{by:?}");
        }
    }
}
