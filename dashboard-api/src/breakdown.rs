//! `GET /v1/breakdown` and `GET /v1/heatmap`: the clues reported in a period, grouped, with
//! report, case and status counts (docs/ARCHITECTURE.md §5), read from the latest state of every
//! clue inside the district (`dashboard_clues FINAL`, the dashboard's projection of `clues`).
//!
//! The period and street filters are applied before `FINAL` merges a clue's versions (a clue's
//! report time and street never change once its report is known; the projection is keyed and
//! partitioned by the report time, so a period reads its own rows only), everything else after
//! it, as in the work queues.

use std::collections::BTreeMap;

use gridclue_core::{ReporterGroup, Status};
use serde::{Deserialize, Serialize};

use crate::params::{Filters, Period, OPEN_STATUSES_SQL};
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

/// Which clues a query over their latest states needs, decided before `FINAL` merges a clue's
/// versions (on its report time, which never changes once its report is known).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Needed {
    /// Every clue inside the district.
    All,
    /// Those reported in the period. Bound: from, to.
    ReportedIn,
}

/// The latest state of the clues inside the district, the street filter and `needed` applied
/// before `FINAL`. Bound: street ×2, then those of `needed`.
pub(crate) fn clues_sql(columns: &str, needed: Needed) -> String {
    let period = match needed {
        Needed::All => "",
        Needed::ReportedIn => " AND reported_at_ms >= ? AND reported_at_ms < ?",
    };
    format!("SELECT {columns} FROM dashboard_clues FINAL WHERE (? = '' OR street_code = ?){period}")
}

fn sql(by: By) -> String {
    let inner = clues_sql(
        "street_code, community_code, grid_code, category, reporter_group, status, is_case, \
         deadline_ms, department_now",
        Needed::ReportedIn,
    );
    format!(
        "SELECT {key} AS key, status, count() AS reports, \
                countIf(is_case = 1) AS cases, \
                countIf(is_case = 1 AND status IN {OPEN_STATUSES_SQL} AND deadline_ms > 0 AND deadline_ms < ?) AS overdue \
         FROM ({inner}) \
         WHERE {filters} \
         GROUP BY key, status \
         LIMIT {MAX_CELLS}",
        key = by.column(),
        filters = Filters::sql("department_now"),
    )
}

/// One (group, status) cell as ClickHouse returns it.
#[derive(Clone, Debug, PartialEq, Eq, clickhouse::Row, Deserialize)]
pub struct Cell {
    pub key: String,
    pub status: String,
    pub reports: u64,
    pub cases: u64,
    pub overdue: u64,
}

/// Runs the breakdown query (every value bound).
pub async fn query(
    client: &clickhouse::Client,
    by: By,
    period: &Period,
    filters: &Filters,
    now_ms: u64,
) -> clickhouse::error::Result<Vec<Cell>> {
    let street = filters.street.clone().unwrap_or_default();
    // Placeholders bind in text order: the select list's first, then the subquery's, then the
    // filters.
    let q = client
        .query(&sql(by))
        .bind(now_ms)
        .bind(&street)
        .bind(&street)
        .bind(period.from_ms())
        .bind(period.to_ms());
    crate::params::bind_filters(q, filters).fetch_all().await
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
    let in_street = |code: &str| {
        filters
            .street
            .as_deref()
            .is_none_or(|s| code.starts_with(s))
    };
    let only = |asked: &Option<String>, code: &str| asked.as_deref().is_none_or(|a| a == code);
    match by {
        By::Street => reference
            .streets
            .iter()
            .filter(|s| in_street(&s.code) && only(&filters.street, &s.code))
            .map(|s| (s.code.clone(), s.name.clone()))
            .collect(),
        By::Community => reference
            .communities
            .iter()
            .filter(|(code, _)| in_street(code) && only(&filters.community, code))
            .map(|(code, name)| (code.clone(), name.clone()))
            .collect(),
        By::Grid => Vec::new(),
        By::Category => reference
            .categories
            .iter()
            .filter(|c| only(&filters.category, &c.code))
            .map(|c| (c.code.clone(), c.name_zh.clone()))
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
        By::Street => reference.street_name(key).map(str::to_owned),
        By::Community => reference.community_name(key).map(str::to_owned),
        By::Category => reference.category(key).map(|c| c.name_zh.clone()),
        By::Department => reference.department(key).map(|d| d.name_zh.clone()),
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
        Some(s) => reference.street_name(s).unwrap_or(s).to_owned(),
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
    let inner = clues_sql("grid_code, category", Needed::ReportedIn);
    format!(
        "SELECT grid_code AS grid, count() AS count FROM ({inner}) \
         WHERE (? = '' OR category = ?) \
         GROUP BY grid ORDER BY count DESC, grid LIMIT {MAX_HEATMAP_ROWS}"
    )
}

#[derive(Clone, Debug, PartialEq, Eq, clickhouse::Row, Serialize, Deserialize)]
pub struct GridCount {
    pub grid: String,
    pub count: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Heatmap {
    pub from: String,
    pub to: String,
    pub category: Option<String>,
    pub street: Option<String>,
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
    let street = filters.street.clone().unwrap_or_default();
    let category = filters.category.clone().unwrap_or_default();
    let rows = client
        .query(&heatmap_sql())
        .bind(&street)
        .bind(&street)
        .bind(period.from_ms())
        .bind(period.to_ms())
        .bind(&category)
        .bind(&category)
        .fetch_all()
        .await?;
    Ok(Heatmap {
        from: period.from.to_string(),
        to: period.to.to_string(),
        category: filters.category.clone(),
        street: filters.street.clone(),
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
                    code: "310199001".into(),
                    name: "甲".into(),
                },
                Street {
                    code: "310199002".into(),
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
    fn every_placeholder_is_bound() {
        for by in By::ALL {
            // now, street ×2, from, to, then the filters.
            assert_eq!(
                sql(by).matches('?').count(),
                5 + Filters::default().binds().len()
            );
        }
        assert_eq!(heatmap_sql().matches('?').count(), 6);
    }
}
