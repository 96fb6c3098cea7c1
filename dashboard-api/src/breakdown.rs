//! `GET /v1/breakdown` and `GET /v1/heatmap`: the clues reported in a period, grouped, with
//! report, case and status counts (docs/ARCHITECTURE.md §5) of their latest states.
//!
//! The breakdown sums the running status counts (`status_counts`, migration 0013: per report
//! day and month, the clues in each state, kept by the sink with −1/+1 rows per fact) over the
//! period's report days (whole months as one row per group), at the coarsest grain holding the
//! grouping and the filters; the open cases past their deadline are those with a deadline
//! (`dated`) minus those whose deadline is still ahead (`status_deadlines`, read from now on).
//! No clue is read. The heatmap reads the latest state of
//! every clue reported in the period (`dashboard_clues FINAL`, the dashboard's projection of
//! `clues`; a clue's report time and street never change once its report is known, so the
//! period and street filters are applied before `FINAL` merges a clue's versions).

use std::collections::BTreeMap;

use gridclue_core::codes::{
    empty_as_none, or_empty, CategoryCode, CommunityCode, DepartmentCode, GridCode, StreetCode,
};
use gridclue_core::{ReporterGroup, Status};
use serde::{Deserialize, Serialize};

use crate::params::{Filters, Period};
use crate::reference::Reference;

/// The most rows a breakdown answers (only grids come near it).
pub const MAX_ROWS: usize = 5_000;
/// The most grids a heatmap answers.
pub const MAX_HEATMAP_ROWS: u64 = 20_000;
/// The most (group, status) cells read from ClickHouse.
const MAX_CELLS: u64 = 200_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum By {
    Street,
    Community,
    Grid,
    Category,
    Department,
    Group,
}

impl By {
    pub const ALL: [By; 6] = [
        By::Street,
        By::Community,
        By::Grid,
        By::Category,
        By::Department,
        By::Group,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            By::Street => "street",
            By::Community => "community",
            By::Grid => "grid",
            By::Category => "category",
            By::Department => "department",
            By::Group => "group",
        }
    }

    pub fn parse(s: &str) -> Option<By> {
        Self::ALL.into_iter().find(|b| b.as_str() == s)
    }

    /// The grouping column (fixed SQL, never user input).
    fn column(self) -> &'static str {
        match self {
            By::Street => "street_code",
            By::Community => "community_code",
            By::Grid => "grid_code",
            By::Category => "category",
            By::Department => "department_now",
            By::Group => "reporter_group",
        }
    }
}

/// The latest state of the clues inside the district reported in the period, the street filter
/// and the period applied before `FINAL`. Bound: street ×2, from, to.
fn clues_sql(columns: &str) -> String {
    format!(
        "SELECT {columns} FROM dashboard_clues FINAL WHERE (? = '' OR street_code = ?) \
         AND reported_at_ms >= ? AND reported_at_ms < ?"
    )
}

/// The coarsest grain of `status_counts` holding `by` and the filters (see migration 0013).
fn grain(by: By, filters: &Filters) -> &'static str {
    let place = if by == By::Grid || filters.grid.is_some() {
        2
    } else if by == By::Community || filters.community.is_some() {
        1
    } else {
        0
    };
    let by_place = matches!(by, By::Street | By::Community | By::Grid);
    let place_only = by_place && filters.category.is_none() && filters.department.is_none();
    match (place, by == By::Group) {
        (0, false) => "street",
        (0, true) => "group",
        (1, false) => "community",
        (2, false) if place_only => "place",
        _ => "grid",
    }
}

/// Cells of (group, status): the period's summed state rows (its whole months from the month
/// rows of the grain, the other days from its day rows), and minus the open cases whose
/// deadline is still ahead (so that `overdue` counts the open cases with a deadline before now).
/// Columns a grain does not hold are ''. Bound: the day and month ranges (6), the filters, then
/// now, from day, to day, the filters.
fn sql(by: By, grain: &str) -> String {
    let filters = Filters::sql("department_now");
    format!(
        "SELECT key, status, toInt64(sum(n)) AS reports, toInt64(sum(c)) AS cases, \
                toInt64(sum(o)) AS overdue \
         FROM ( \
             SELECT {key} AS key, status, sum(clues) AS n, sumIf(clues, is_case = 1) AS c, \
                    sumIf(dated, is_case = 1) AS o \
             FROM ( \
                 SELECT street_code, community AS community_code, grid AS grid_code, \
                        category_code AS category, department_now, reporter AS reporter_group, \
                        status, is_case, clues, dated \
                 FROM status_counts \
                 WHERE (grain = '{grain}' AND ((cohort_day >= ? AND cohort_day < ?) \
                                               OR (cohort_day >= ? AND cohort_day < ?))) \
                    OR (grain = '{grain}_month' AND cohort_day >= ? AND cohort_day < ?)) \
             WHERE {filters} \
             GROUP BY key, status \
             UNION ALL \
             SELECT {key} AS key, status, toInt64(0) AS n, toInt64(0) AS c, \
                    -sumIf(clues, is_case = 1) AS o \
             FROM status_deadlines \
             WHERE deadline_ms >= ? AND cohort_day >= ? AND cohort_day < ? AND {filters} \
             GROUP BY key, status) \
         GROUP BY key, status \
         HAVING sum(n) != 0 \
         LIMIT {MAX_CELLS}",
        key = by.column(),
    )
}

/// One (group, status) cell as served.
#[derive(Clone, Debug, PartialEq, Eq, clickhouse::Row, Deserialize)]
pub struct Cell {
    pub key: String,
    pub status: String,
    pub reports: u64,
    pub cases: u64,
    pub overdue: u64,
}

/// One (group, status) cell as ClickHouse sums it from the signed running counts: at least 0
/// when they are exact; a negative sum is served as 0 ([`crate::indicators::non_negative`]).
#[derive(Clone, Debug, PartialEq, Eq, clickhouse::Row, Deserialize)]
struct SignedCell {
    key: String,
    status: String,
    reports: i64,
    cases: i64,
    overdue: i64,
}

impl SignedCell {
    fn non_negative(self) -> Cell {
        let n = |what: &'static str, v: i64| crate::indicators::non_negative(what, &self.key, v);
        Cell {
            reports: n("reports", self.reports),
            cases: n("cases", self.cases),
            overdue: n("overdue", self.overdue),
            key: self.key,
            status: self.status,
        }
    }
}

/// Runs the breakdown query (every value bound).
pub async fn query(
    client: &clickhouse::Client,
    by: By,
    period: &Period,
    filters: &Filters,
    now_ms: u64,
) -> clickhouse::error::Result<Vec<Cell>> {
    let grain = grain(by, filters);
    let mut q = client.query(&sql(by, grain));
    for day in period.day_and_month_ranges(grain != "grid") {
        q = q.bind(day);
    }
    let q = crate::params::bind_filters(q, filters)
        .bind(now_ms)
        .bind(period.from_day())
        .bind(period.to_day());
    let cells = crate::params::bind_filters(q, filters)
        .fetch_all::<SignedCell>()
        .await?;
    Ok(cells.into_iter().map(SignedCell::non_negative).collect())
}

/// One group's counts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Row {
    pub key: String,
    pub name: String,
    /// Reports (duplicates included) = the sum of `by_status`.
    pub reports: u64,
    pub cases: u64,
    /// Open cases (reported, accepted, dispatched, in progress, handled).
    pub open: u64,
    pub closed: u64,
    /// Open cases past their deadline now.
    pub overdue: u64,
    /// Reports by their status now (every status, zeros included).
    pub by_status: BTreeMap<&'static str, u64>,
}

impl Row {
    fn new(key: String, name: String) -> Self {
        Self {
            key,
            name,
            reports: 0,
            cases: 0,
            open: 0,
            closed: 0,
            overdue: 0,
            by_status: Status::ALL.iter().map(|s| (s.as_str(), 0)).collect(),
        }
    }

    fn add(&mut self, c: &Cell) {
        self.reports += c.reports;
        self.cases += c.cases;
        self.overdue += c.overdue;
        let status: Option<Status> = c.status.parse().ok();
        match status {
            Some(Status::Closed) => self.closed += c.cases,
            Some(s) if !s.is_terminal() => self.open += c.cases,
            _ => {}
        }
        if let Some(s) = status {
            *self.by_status.entry(s.as_str()).or_default() += c.reports;
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Breakdown {
    pub from: String,
    pub to: String,
    pub by: By,
    pub filters: Filters,
    pub as_of: String,
    pub as_of_ms: u64,
    /// More groups existed than the rows returned ([`MAX_ROWS`]).
    pub truncated: bool,
    pub rows: Vec<Row>,
    pub total: Row,
}

/// The groups listed even at zero: streets and communities of the map (in the street filter),
/// categories and departments of the catalog, reporter groups. Grids only when seen.
fn known_groups(by: By, filters: &Filters, reference: &Reference) -> Vec<(String, String)> {
    let in_street = |code: &StreetCode| filters.street.is_none_or(|s| s == *code);
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
            .filter(|(code, _)| {
                in_street(&code.street_code()) && filters.community.is_none_or(|c| c == **code)
            })
            .map(|(code, name)| (code.to_string(), name.clone()))
            .collect(),
        By::Grid => Vec::new(),
        By::Category => reference
            .categories
            .iter()
            .filter(|c| filters.category.as_ref().is_none_or(|a| *a == c.code))
            .map(|c| (c.code.to_string(), c.name_zh.clone()))
            .collect(),
        By::Department => reference
            .departments
            .iter()
            .filter(|d| filters.department.as_ref().is_none_or(|a| *a == d.code))
            .map(|d| (d.code.to_string(), d.name_zh.clone()))
            .collect(),
        By::Group => ReporterGroup::ALL
            .iter()
            .map(|g| (g.as_str().to_owned(), g.as_str().to_owned()))
            .collect(),
    }
}

/// The name of a group seen in the data but not in the reference (its code; "" for reports
/// without a reporter group).
fn name_of(by: By, key: &str, reference: &Reference) -> String {
    match by {
        By::Street => StreetCode::parse(key)
            .ok()
            .and_then(|c| reference.street_name(&c).map(str::to_owned)),
        By::Community => CommunityCode::parse(key)
            .ok()
            .and_then(|c| reference.community_name(&c).map(str::to_owned)),
        By::Category => CategoryCode::parse(key)
            .ok()
            .and_then(|c| reference.category(&c).map(|c| c.name_zh.clone())),
        By::Department => DepartmentCode::parse(key)
            .ok()
            .and_then(|c| reference.department(&c).map(|d| d.name_zh.clone())),
        By::Grid | By::Group => None,
    }
    .unwrap_or_else(|| key.to_owned())
}

/// Groups the cells: a row per known group and per group seen, most reports first (then key),
/// at most [`MAX_ROWS`]; the total counts every cell.
pub fn assemble(
    by: By,
    period: &Period,
    filters: Filters,
    cells: &[Cell],
    reference: &Reference,
    now_ms: u64,
) -> Breakdown {
    let mut groups: BTreeMap<String, Row> = known_groups(by, &filters, reference)
        .into_iter()
        .map(|(key, name)| (key.clone(), Row::new(key, name)))
        .collect();
    let total_name = match &filters.street {
        Some(s) => reference
            .street_name(s)
            .map_or_else(|| s.to_string(), str::to_owned),
        None => "全区".to_owned(),
    };
    let mut total = Row::new("total".into(), total_name);
    for c in cells {
        total.add(c);
        groups
            .entry(c.key.clone())
            .or_insert_with(|| Row::new(c.key.clone(), name_of(by, &c.key, reference)))
            .add(c);
    }
    let mut rows: Vec<Row> = groups.into_values().collect();
    rows.sort_by(|a, b| b.reports.cmp(&a.reports).then_with(|| a.key.cmp(&b.key)));
    let truncated = rows.len() > MAX_ROWS;
    rows.truncate(MAX_ROWS);
    Breakdown {
        from: period.from.to_string(),
        to: period.to.to_string(),
        by,
        filters,
        as_of: crate::indicators::china_time(now_ms),
        as_of_ms: now_ms,
        truncated,
        rows,
        total,
    }
}

impl crate::csv::Export for Breakdown {
    const WITH_TOTAL: bool = true;

    fn file_name(&self) -> String {
        format!(
            "gridclue-breakdown-{}-{}_{}.csv",
            self.by.as_str(),
            self.from,
            self.to
        )
    }

    fn columns(&self) -> Vec<String> {
        let mut c = crate::csv::columns(&[
            "key", "name", "reports", "cases", "open", "closed", "overdue",
        ]);
        c.extend(
            Status::ALL
                .iter()
                .map(|s| format!("by_status.{}", s.as_str())),
        );
        c
    }
}

/// Reports per grid, most first.
fn heatmap_sql() -> String {
    let inner = clues_sql("grid_code, category");
    format!(
        "SELECT grid_code AS grid, count() AS count FROM ({inner}) \
         WHERE (? = '' OR category = ?) \
         GROUP BY grid ORDER BY count DESC, grid LIMIT {MAX_HEATMAP_ROWS}"
    )
}

/// One grid's count, as ClickHouse returns it and as the heatmap shows it. The grid is read
/// leniently (see [`empty_as_none::lenient`]): a malformed one is shown as `""`.
#[derive(Clone, Debug, PartialEq, Eq, clickhouse::Row, Serialize, Deserialize)]
pub struct GridCount {
    #[serde(with = "empty_as_none::lenient")]
    pub grid: Option<GridCode>,
    pub count: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Heatmap {
    pub from: String,
    pub to: String,
    pub category: Option<CategoryCode>,
    pub street: Option<StreetCode>,
    pub rows: Vec<GridCount>,
}

impl crate::csv::Export for Heatmap {
    fn file_name(&self) -> String {
        format!("gridclue-heatmap-{}_{}.csv", self.from, self.to)
    }

    fn columns(&self) -> Vec<String> {
        crate::csv::columns(&["grid", "count"])
    }
}

pub async fn heatmap(
    client: &clickhouse::Client,
    period: &Period,
    filters: &Filters,
) -> clickhouse::error::Result<Heatmap> {
    let street = or_empty(&filters.street);
    let category = or_empty(&filters.category);
    let rows = client
        .query(&heatmap_sql())
        .bind(street)
        .bind(street)
        .bind(period.from_ms())
        .bind(period.to_ms())
        .bind(category)
        .bind(category)
        .fetch_all()
        .await?;
    Ok(Heatmap {
        from: period.from.to_string(),
        to: period.to.to_string(),
        category: filters.category.clone(),
        street: filters.street,
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::Street;
    use chrono::NaiveDate;

    fn cell(key: &str, status: &str, reports: u64, cases: u64, overdue: u64) -> Cell {
        Cell {
            key: key.into(),
            status: status.into(),
            reports,
            cases,
            overdue,
        }
    }

    #[test]
    fn cells_fold_into_rows_with_status_counts_and_a_total() {
        let reference = Reference {
            streets: vec![
                Street {
                    code: "310199001".parse().unwrap(),
                    name: "甲".into(),
                },
                Street {
                    code: "310199002".parse().unwrap(),
                    name: "乙".into(),
                },
            ],
            ..Reference::default()
        };
        let period = Period {
            from: NaiveDate::from_ymd_opt(2026, 11, 2).unwrap(),
            to: NaiveDate::from_ymd_opt(2026, 11, 9).unwrap(),
        };
        let cells = [
            cell("310199001", "dispatched", 3, 3, 1),
            cell("310199001", "closed", 2, 2, 0),
            cell("310199001", "duplicate", 1, 0, 0),
            cell("310199009", "reported", 1, 1, 0),
        ];
        let b = assemble(
            By::Street,
            &period,
            Filters::default(),
            &cells,
            &reference,
            7,
        );
        let keys: Vec<&str> = b.rows.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(keys, ["310199001", "310199009", "310199002"]);
        let a = &b.rows[0];
        assert_eq!(
            (a.reports, a.cases, a.open, a.closed, a.overdue),
            (6, 5, 3, 2, 1)
        );
        assert_eq!(
            (
                a.by_status["dispatched"],
                a.by_status["duplicate"],
                a.by_status["withdrawn"]
            ),
            (3, 1, 0)
        );
        assert_eq!(b.rows[1].name, "310199009");
        assert_eq!(
            (b.total.reports, b.total.open, b.total.name.as_str()),
            (7, 4, "全区")
        );
        assert!(!b.truncated);
    }

    #[test]
    fn the_grain_holds_the_grouping_and_every_filter() {
        let none = Filters::default();
        let community = Filters {
            community: Some("310199001001".parse().unwrap()),
            ..Filters::default()
        };
        let grid = Filters {
            grid: Some("310199001001001".parse().unwrap()),
            ..Filters::default()
        };
        let street_and_category = Filters {
            street: Some(StreetCode::parse("310199001").unwrap()),
            category: Some(CategoryCode::parse("garbage_pile").unwrap()),
            department: Some("water_affairs".parse().unwrap()),
            ..Filters::default()
        };
        for by in [By::Street, By::Category, By::Department] {
            assert_eq!(grain(by, &none), "street");
            assert_eq!(grain(by, &street_and_category), "street");
            assert_eq!(grain(by, &community), "community");
        }
        assert_eq!(grain(By::Street, &grid), "place");
        assert_eq!(grain(By::Department, &grid), "grid");
        assert_eq!(grain(By::Group, &street_and_category), "group");
        assert_eq!(grain(By::Group, &community), "grid");
        assert_eq!(grain(By::Community, &none), "community");
        // Grids without a category or department: the place grain.
        assert_eq!(grain(By::Community, &grid), "place");
        assert_eq!(grain(By::Grid, &none), "place");
        assert_eq!(grain(By::Grid, &street_and_category), "grid");
        assert_eq!(grain(By::Category, &grid), "grid");
    }

    #[test]
    fn every_placeholder_is_bound() {
        for by in By::ALL {
            // 6 day and month bounds, the filters, then now, from, to, the filters.
            assert_eq!(
                sql(by, grain(by, &Filters::default())).matches('?').count(),
                9 + 2 * Filters::default().binds().len()
            );
        }
        assert_eq!(heatmap_sql().matches('?').count(), 6);
    }
}
