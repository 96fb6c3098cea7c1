//! `GET /v1/lists/{list}`: the clues a dashboard lists, a page at a time, read from the latest
//! state of every clue inside the district (`dashboard_clues FINAL`) at request time.
//!
//! | list | which clues | order |
//! |---|---|---|
//! | `overdue` | red: open, deadline before now | deadline (most overdue first) |
//! | `due_soon` | yellow: open, ≤ 20% of the limit left, deadline not passed | deadline |
//! | `stale` | open, least recently updated | last fact's time |
//! | `newest` | every report | report time, newest first |
//!
//! Red and yellow are `gridclue_core::light` written as SQL: red once `deadline < now`; yellow
//! from `min(yellow_at, deadline)` on, `yellow_at` being the instant the clue processor stored
//! (for rows older than it, 20% of the elapsed time from acceptance, truncated to whole
//! milliseconds as `light::yellow_at_fallback` does). Each row's light is then computed with
//! `light::clue_light` itself, and the tests check that it agrees with the list.
//!
//! Pages are keyset pages: each list's order is (sort key, clue id), and the cursor is the last
//! row's place in it.
//!
//! Where the candidates of a page come from: the lists of open clues read `open_cases` (the open
//! clues' states, migration 0014: the size of the open backlog, not of every clue); `newest`
//! reads `dashboard_clues` (keyed by report time) from a window of the latest report times that
//! widens until it holds the page's candidates.

use gridclue_core::codes::{
    empty_as_none, CategoryCode, CommunityCode, DepartmentCode, GridCode, StreetCode,
};
use gridclue_core::light::{clue_light, Light, YELLOW_FRACTION};
use gridclue_core::{ClueId, Status};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::indicators::china_time;
use crate::params::{Filters, OPEN_STATUSES_SQL};
use crate::reference::Reference;

pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 500;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum List {
    Overdue,
    DueSoon,
    Stale,
    Newest,
}

impl List {
    pub const ALL: [List; 4] = [List::Overdue, List::DueSoon, List::Stale, List::Newest];

    pub fn as_str(self) -> &'static str {
        match self {
            List::Overdue => "overdue",
            List::DueSoon => "due_soon",
            List::Stale => "stale",
            List::Newest => "newest",
        }
    }

    pub fn parse(s: &str) -> Option<List> {
        Self::ALL.into_iter().find(|l| l.as_str() == s)
    }

    /// Which clues (fixed SQL; `now` is bound twice for `due_soon`, once for `overdue`).
    fn condition(self) -> String {
        let open = format!("status IN {OPEN_STATUSES_SQL}");
        match self {
            List::Overdue => format!("{open} AND deadline_ms > 0 AND deadline_ms < ?"),
            List::DueSoon => format!(
                "{open} AND deadline_ms > 0 AND deadline_ms >= ? \
                 AND ? >= least(if(yellow_at_ms = 0, \
                     toUInt64(deadline_ms - toUInt64(if(deadline_ms > accepted_at_ms, deadline_ms - accepted_at_ms, 0) * {YELLOW_FRACTION})), \
                     yellow_at_ms), deadline_ms)"
            ),
            List::Stale => open,
            List::Newest => "1".into(),
        }
    }

    fn now_binds(self) -> usize {
        match self {
            List::Overdue => 1,
            List::DueSoon => 2,
            List::Stale | List::Newest => 0,
        }
    }

    fn sort_key(self) -> &'static str {
        match self {
            List::Overdue | List::DueSoon => "deadline_ms",
            List::Stale => "updated_at_ms",
            List::Newest => "reported_at_ms",
        }
    }

    fn descending(self) -> bool {
        self == List::Newest
    }

    /// The table holding every clue the list can show, with the columns of `dashboard_clues`,
    /// and which of its rows: the open cases' states for the lists of open clues (only their
    /// rows of sign +1: a state entering the set), every clue's states for `newest`.
    fn candidate_source(self) -> &'static str {
        match self {
            List::Overdue | List::DueSoon | List::Stale => "open_cases WHERE sign = 1 AND",
            List::Newest => "dashboard_clues WHERE",
        }
    }
}

/// A place in a list's order: after the clue `clue_id` whose sort key is `key`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub list: List,
    pub key: u64,
    pub clue_id: String,
}

impl Cursor {
    /// `<list>:<sort key>:<clue id>`.
    pub fn encode(&self) -> String {
        format!("{}:{}:{}", self.list.as_str(), self.key, self.clue_id)
    }

    pub fn decode(text: &str) -> Option<Self> {
        let mut parts = text.splitn(3, ':');
        let list = List::parse(parts.next()?)?;
        let key = parts.next()?.parse().ok()?;
        let clue_id: ClueId = parts.next()?.parse().ok()?;
        Some(Self {
            list,
            key,
            clue_id: clue_id.to_string(),
        })
    }
}

pub fn parse_limit(value: Option<&str>) -> Result<u32, ApiError> {
    match value {
        None => Ok(DEFAULT_LIMIT),
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::invalid_parameter(
                    "limit",
                    format!("must be an integer from 1 to {MAX_LIMIT}"),
                )
            }),
    }
}

pub fn parse_cursor(list: List, value: Option<&str>) -> Result<Option<Cursor>, ApiError> {
    let Some(v) = value else { return Ok(None) };
    let cursor = Cursor::decode(v).ok_or_else(|| {
        ApiError::invalid_parameter(
            "cursor",
            "is not a cursor this API gave out (pass next_cursor back unchanged)",
        )
    })?;
    if cursor.list != list {
        return Err(ApiError::invalid_parameter(
            "cursor",
            format!(
                "belongs to the {} list, not {}",
                cursor.list.as_str(),
                list.as_str()
            ),
        ));
    }
    Ok(Some(cursor))
}

impl List {
    /// `ORDER BY` direction and the keyset comparison after a cursor.
    fn order(self) -> (&'static str, &'static str) {
        if self.descending() {
            ("<", "DESC")
        } else {
            (">", "ASC")
        }
    }

    /// The filters given, the list's condition and, after a cursor, its keyset comparison over
    /// one row of `dashboard_clues` (fixed SQL: a condition per filter given, not one per filter
    /// that compares every row with an empty value, which ClickHouse 18.16 would evaluate on
    /// every row). Bound: [`given_filters`]' values, now (per list), key ×2 and id after a
    /// cursor.
    fn row_conditions(self, filters: &Filters, after: Option<&Cursor>) -> String {
        let (cmp, _) = self.order();
        let key = self.sort_key();
        let mut conditions: Vec<String> = given_filters(filters)
            .iter()
            .map(|(column, _)| format!("{column} = ?"))
            .collect();
        conditions.push(self.condition());
        if after.is_some() {
            conditions.push(format!("({key} {cmp} ? OR ({key} = ? AND id {cmp} ?))"));
        }
        conditions.join(" AND ")
    }
}

/// The filters given, with the column each compares.
fn given_filters(filters: &Filters) -> Vec<(&'static str, &str)> {
    [
        (
            "street_code",
            filters.street.as_ref().map(StreetCode::as_str),
        ),
        (
            "community_code",
            filters.community.as_ref().map(CommunityCode::as_str),
        ),
        ("grid_code", filters.grid.as_ref().map(GridCode::as_str)),
        (
            "category",
            filters.category.as_ref().map(CategoryCode::as_str),
        ),
        (
            "department_now",
            filters.department.as_ref().map(|d| d.as_str()),
        ),
    ]
    .into_iter()
    .filter_map(|(column, value)| Some((column, value?)))
    .collect()
}

/// The columns of `dashboard_clues` a list reads.
const LIST_COLUMNS: &str = "street_code, community_code, grid_code, category, department_now, \
     status, accepted_at_ms, deadline_ms, yellow_at_ms, updated_at_ms, reported_at_ms";

/// The candidates of a page: rows of any version of a clue (no `FINAL`) that meet the list's
/// condition after the cursor and whose report time is at least a bound, in the list's order,
/// at most `n`. A clue whose latest state belongs on the page is among them with that state
/// (its source holds that state: see [`List::candidate_source`]), so the page read from the
/// candidates' latest states is exact up to the last candidate (see [`query`]). The bound is
/// applied to the table itself (ClickHouse 18.16 does not push an outer condition into a
/// subquery), so a window of report times reads that range of `dashboard_clues`' primary key
/// only. Bound: the report-time bound, [`List::row_conditions`], then n.
fn candidates_sql(list: List, filters: &Filters, after: Option<&Cursor>) -> String {
    let (_, dir) = list.order();
    let key = list.sort_key();
    format!(
        "SELECT id, reported_at_ms, {key} AS sort_key \
         FROM (SELECT toString(clue_id) AS id, {LIST_COLUMNS} \
               FROM {source} reported_at_ms >= ?) \
         WHERE {conditions} \
         ORDER BY {key} {dir}, id {dir} \
         LIMIT ?",
        source = list.candidate_source(),
        conditions = list.row_conditions(filters, after),
    )
}

/// How far back from the cursor's report time (or now) the first window of `newest` reaches,
/// and by how much each next window is wider.
const NEWEST_FIRST_WINDOW_MS: u64 = 86_400_000;
const NEWEST_WINDOW_GROWTH: u64 = 16;

/// The report-time bounds `newest` reads candidates from, narrowest first, the last one 0 (every
/// report). A window holding `n` candidates holds the first `n` of every report: its rows were
/// all reported at or after the bound, every other row before it. The lists of open clues read
/// the open cases at once (bound 0).
fn report_time_bounds(list: List, after: Option<&Cursor>, now_ms: u64) -> Vec<u64> {
    let mut bounds = Vec::new();
    if list == List::Newest {
        let anchor = after.map_or(now_ms, |c| c.key);
        let mut window = NEWEST_FIRST_WINDOW_MS;
        while window < anchor {
            bounds.push(anchor - window);
            window = window.saturating_mul(NEWEST_WINDOW_GROWTH);
        }
    }
    bounds.push(0);
    bounds
}

/// The first `n` candidates after the cursor, from the narrowest window that holds them.
async fn candidates(
    client: &clickhouse::Client,
    list: List,
    filters: &Filters,
    after: Option<&Cursor>,
    now_ms: u64,
    n: usize,
) -> clickhouse::error::Result<Vec<Candidate>> {
    let sql = candidates_sql(list, filters, after);
    let mut found = Vec::new();
    for bound in report_time_bounds(list, after, now_ms) {
        let q = client.query(&sql).bind(bound);
        found = bind_row_conditions(q, list, filters, after, now_ms)
            .bind(n as u64)
            .fetch_all()
            .await?;
        if found.len() >= n {
            break;
        }
    }
    Ok(found)
}

/// A page from the latest states (`FINAL`) of the given clues. Bound: their report times,
/// their ids (two arrays: the projection's primary key), [`List::row_conditions`], limit.
fn sql(list: List, filters: &Filters, after: Option<&Cursor>) -> String {
    let (_, dir) = list.order();
    let key = list.sort_key();
    format!(
        "SELECT id, {LIST_COLUMNS}, {key} AS sort_key \
         FROM (SELECT toString(clue_id) AS id, {LIST_COLUMNS} \
               FROM dashboard_clues FINAL \
               WHERE reported_at_ms IN (SELECT arrayJoin(?)) \
                 AND clue_id IN (SELECT toUUID(arrayJoin(?)))) \
         WHERE {conditions} \
         ORDER BY {key} {dir}, id {dir} \
         LIMIT ?",
        conditions = list.row_conditions(filters, after),
    )
}

/// One listed clue as ClickHouse returns it. Its codes are read leniently (see
/// [`empty_as_none::lenient`]): a malformed one is shown as `""`, not an error of the page.
#[derive(Clone, Debug, PartialEq, Eq, clickhouse::Row, Deserialize)]
pub struct ListRow {
    pub id: String,
    #[serde(with = "empty_as_none::lenient")]
    pub street_code: Option<StreetCode>,
    #[serde(with = "empty_as_none::lenient")]
    pub community_code: Option<CommunityCode>,
    #[serde(with = "empty_as_none::lenient")]
    pub grid_code: Option<GridCode>,
    #[serde(with = "empty_as_none::lenient")]
    pub category: Option<CategoryCode>,
    #[serde(with = "empty_as_none::lenient")]
    pub department_now: Option<DepartmentCode>,
    pub status: String,
    pub accepted_at_ms: u64,
    pub deadline_ms: u64,
    pub yellow_at_ms: u64,
    pub updated_at_ms: u64,
    pub reported_at_ms: u64,
    pub sort_key: u64,
}

#[derive(Clone, Debug, clickhouse::Row, Deserialize)]
struct Candidate {
    id: String,
    reported_at_ms: u64,
    sort_key: u64,
}

/// The first candidates read for a page, per row asked for (more when many are stale).
const CANDIDATES_PER_ROW: usize = 4;

fn bind_row_conditions(
    mut q: clickhouse::query::Query,
    list: List,
    filters: &Filters,
    after: Option<&Cursor>,
    now_ms: u64,
) -> clickhouse::query::Query {
    for (_, value) in given_filters(filters) {
        q = q.bind(value);
    }
    for _ in 0..list.now_binds() {
        q = q.bind(now_ms);
    }
    match after {
        Some(c) => q.bind(c.key).bind(c.key).bind(c.clue_id.as_str()),
        None => q,
    }
}

/// Reads up to `limit + 1` rows (the extra one says a next page exists).
///
/// Two steps, so that no query merges the versions of every clue: the candidates (rows of any
/// version meeting the condition, in list order), then the latest state of those clues only.
/// Every clue whose latest state is on the page up to the last candidate's place is a
/// candidate, so the rows up to that place are exact; when fewer than `limit + 1` remain
/// there (stale versions took the candidates' places) and more candidates exist, the page is
/// read again from more candidates.
pub async fn query(
    client: &clickhouse::Client,
    list: List,
    filters: &Filters,
    limit: u32,
    after: Option<&Cursor>,
    now_ms: u64,
) -> clickhouse::error::Result<Vec<ListRow>> {
    let wanted = limit as usize + 1;
    let mut n = wanted * CANDIDATES_PER_ROW;
    loop {
        let candidates = candidates(client, list, filters, after, now_ms, n).await?;
        let Some(last) = candidates.last() else {
            return Ok(Vec::new());
        };
        let exhausted = candidates.len() < n;
        let cutoff = (last.sort_key, last.id.clone());
        let mut reported: Vec<u64> = candidates.iter().map(|c| c.reported_at_ms).collect();
        reported.sort_unstable();
        reported.dedup();
        let mut ids: Vec<&str> = candidates.iter().map(|c| c.id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        let q = client
            .query(&sql(list, filters, after))
            .bind(reported)
            .bind(ids);
        let mut rows: Vec<ListRow> = bind_row_conditions(q, list, filters, after, now_ms)
            .bind(limit + 1)
            .fetch_all()
            .await?;
        if !exhausted {
            let (key, id) = &cutoff;
            rows.retain(|r| {
                let place = (r.sort_key, &r.id).cmp(&(*key, id));
                if list.descending() {
                    place.is_ge()
                } else {
                    place.is_le()
                }
            });
        }
        if exhausted || rows.len() >= wanted {
            return Ok(rows);
        }
        n *= CANDIDATES_PER_ROW;
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Item {
    pub clue_id: String,
    #[serde(with = "empty_as_none")]
    pub street: Option<StreetCode>,
    pub street_name: Option<String>,
    #[serde(with = "empty_as_none")]
    pub community: Option<CommunityCode>,
    pub community_name: Option<String>,
    #[serde(with = "empty_as_none")]
    pub grid: Option<GridCode>,
    #[serde(with = "empty_as_none")]
    pub category: Option<CategoryCode>,
    pub category_name: Option<String>,
    #[serde(with = "empty_as_none")]
    pub department: Option<DepartmentCode>,
    pub department_name: Option<String>,
    pub status: String,
    pub deadline: Option<String>,
    pub deadline_ms: Option<u64>,
    pub light: Option<Light>,
    pub updated_at: String,
    pub updated_at_ms: u64,
    pub reported_at: String,
    pub reported_at_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Page {
    pub list: List,
    pub as_of_ms: u64,
    pub filters: Filters,
    pub rows: Vec<Item>,
    pub next_cursor: Option<String>,
}

fn item(r: ListRow, reference: &Reference, now_ms: u64) -> Item {
    let status: Option<Status> = r.status.parse().ok();
    let light =
        status.and_then(|s| clue_light(s, now_ms, r.accepted_at_ms, r.yellow_at_ms, r.deadline_ms));
    let running = light.is_some();
    Item {
        street_name: r
            .street_code
            .as_ref()
            .and_then(|c| reference.street_name(c))
            .map(str::to_owned),
        community_name: r
            .community_code
            .as_ref()
            .and_then(|c| reference.community_name(c))
            .map(str::to_owned),
        category_name: r
            .category
            .as_ref()
            .and_then(|c| reference.category(c))
            .map(|c| c.name_zh.clone()),
        department_name: r
            .department_now
            .as_ref()
            .and_then(|c| reference.department(c))
            .map(|d| d.name_zh.clone()),
        deadline: running.then(|| china_time(r.deadline_ms)),
        deadline_ms: running.then_some(r.deadline_ms),
        light,
        updated_at: china_time(r.updated_at_ms),
        reported_at: china_time(r.reported_at_ms),
        clue_id: r.id,
        street: r.street_code,
        community: r.community_code,
        grid: r.grid_code,
        category: r.category,
        department: r.department_now,
        status: r.status,
        updated_at_ms: r.updated_at_ms,
        reported_at_ms: r.reported_at_ms,
    }
}

pub fn assemble(
    list: List,
    filters: Filters,
    mut rows: Vec<ListRow>,
    limit: u32,
    reference: &Reference,
    now_ms: u64,
) -> Page {
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next_cursor = rows.last().filter(|_| more).map(|last| {
        Cursor {
            list,
            key: last.sort_key,
            clue_id: last.id.clone(),
        }
        .encode()
    });
    Page {
        list,
        as_of_ms: now_ms,
        filters,
        rows: rows
            .into_iter()
            .map(|r| item(r, reference, now_ms))
            .collect(),
        next_cursor,
    }
}

impl crate::csv::Export for Page {
    fn file_name(&self) -> String {
        format!("gridclue-list-{}.csv", self.list.as_str())
    }

    fn columns(&self) -> Vec<String> {
        crate::csv::columns(&[
            "clue_id",
            "street",
            "street_name",
            "community",
            "community_name",
            "grid",
            "category",
            "category_name",
            "department",
            "department_name",
            "status",
            "deadline",
            "light",
            "updated_at",
            "reported_at",
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_name_their_list() {
        let id = ClueId::new_random().to_string();
        let c = Cursor {
            list: List::DueSoon,
            key: 17,
            clue_id: id.clone(),
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c.clone()));
        assert!(parse_cursor(List::DueSoon, Some(&c.encode()))
            .unwrap()
            .is_some());
        let err = parse_cursor(List::Overdue, Some(&c.encode()))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("query parameter `cursor`"), "{err}");
        assert!(parse_cursor(List::Overdue, Some("overdue:x:y")).is_err());
        assert!(parse_limit(Some("0")).is_err());
        assert!(parse_limit(Some("501")).is_err());
        assert_eq!(parse_limit(None).unwrap(), DEFAULT_LIMIT);
    }

    #[test]
    fn every_placeholder_is_bound() {
        let cursor = Cursor {
            list: List::Overdue,
            key: 17,
            clue_id: ClueId::new_random().to_string(),
        };
        let some = Filters {
            street: Some("310199001".parse().unwrap()),
            category: Some("garbage_pile".parse().unwrap()),
            ..Filters::default()
        };
        assert_eq!(given_filters(&some).len(), 2);
        for list in List::ALL {
            for filters in [Filters::default(), some.clone()] {
                for after in [None, Some(&cursor)] {
                    let given = given_filters(&filters).len() + 3 * usize::from(after.is_some());
                    let binds = given + list.now_binds();
                    let candidates = candidates_sql(list, &filters, after);
                    assert_eq!(
                        candidates.matches('?').count(),
                        1 + binds + 1,
                        "{candidates}"
                    );
                    let page = sql(list, &filters, after);
                    assert_eq!(page.matches('?').count(), 2 + binds + 1, "{page}");
                }
            }
        }
    }

    #[test]
    fn newest_reads_widening_windows_back_from_the_cursor_then_everything() {
        let day = NEWEST_FIRST_WINDOW_MS;
        let now = 1_796_000_000_000;
        let bounds = report_time_bounds(List::Newest, None, now);
        assert_eq!(
            bounds,
            [
                now - day,
                now - 16 * day,
                now - 256 * day,
                now - 4096 * day,
                0
            ]
        );
        let cursor = Cursor {
            list: List::Newest,
            key: 20 * day,
            clue_id: ClueId::new_random().to_string(),
        };
        assert_eq!(
            report_time_bounds(List::Newest, Some(&cursor), now),
            [19 * day, 4 * day, 0]
        );
        for list in [List::Overdue, List::DueSoon, List::Stale] {
            assert_eq!(report_time_bounds(list, None, now), [0], "{list:?}");
        }
    }
}
