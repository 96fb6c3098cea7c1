//! `GET /v1/summary`: reports inside the district by street and by category, with case and
//! outside counts beside them (docs/ARCHITECTURE.md §5).
//!
//! Counting reads the `clue_counts` aggregate, which the sink keeps exact under replays,
//! crashes and rebalances by writing each fact exactly once; [`query_exact`] counts the same
//! numbers from the latest state of every clue to cross-check it.

use std::collections::HashMap;

use gridclue_core::codes::{empty_as_none, or_empty, CategoryCode, StreetCode};
use serde::{Deserialize, Serialize};

use crate::reference::Reference;

/// Whose numbers a token may read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Scope {
    District,
    Street { street_code: StreetCode },
}

/// One (street, category) cell as ClickHouse returns it (codes read leniently: a malformed one
/// counts in the totals but in no street or category row).
#[derive(Clone, Debug, PartialEq, Eq, clickhouse::Row, Deserialize)]
pub struct Cell {
    /// The street (for outside points, the nearest grid's street; none when unknown).
    #[serde(with = "empty_as_none::lenient")]
    pub street: Option<StreetCode>,
    #[serde(with = "empty_as_none::lenient")]
    pub category: Option<CategoryCode>,
    /// Reports inside the district.
    pub reports: u64,
    /// Reports that are cases (not duplicates, not rejected).
    pub cases: u64,
    /// Points outside the district (attributed to the street of the nearest grid).
    pub outside: u64,
}

/// A [`Cell`] as the aggregate sums it: signed (the aggregate's rows are signed deltas), each
/// at least 0 when exact; a negative one is served as 0 ([`crate::indicators::non_negative`]).
#[derive(Clone, Debug, PartialEq, Eq, clickhouse::Row, Deserialize)]
struct SignedCell {
    #[serde(with = "empty_as_none::lenient")]
    street: Option<StreetCode>,
    #[serde(with = "empty_as_none::lenient")]
    category: Option<CategoryCode>,
    reports: i64,
    cases: i64,
    outside: i64,
}

impl SignedCell {
    fn non_negative(self) -> Cell {
        let key = or_empty(&self.street);
        let n = |what: &'static str, v: i64| crate::indicators::non_negative(what, key, v);
        Cell {
            reports: n("summary_reports", self.reports),
            cases: n("summary_cases", self.cases),
            outside: n("summary_outside", self.outside),
            street: self.street,
            category: self.category,
        }
    }
}

/// The query behind the summary, over the `clue_counts` aggregate (a few rows per street,
/// category and day: fast at any history length, exact because the sink writes each fact
/// exactly once). The street of an outside point is its nearest grid's street, so a street
/// token also sees reports just beyond its border, counted apart.
pub const DISTRICT_SQL: &str = "\
SELECT if(placement = 'outside', nearest_street_code, street_code) AS street, category, \
       toInt64(sumIf(report_count, placement = 'inside')) AS reports, \
       toInt64(sumIf(case_count, placement = 'inside')) AS cases, \
       toInt64(sumIf(report_count, placement = 'outside')) AS outside \
FROM clue_counts \
GROUP BY street, category";

pub const STREET_SQL: &str = "\
SELECT if(placement = 'outside', nearest_street_code, street_code) AS street, category, \
       toInt64(sumIf(report_count, placement = 'inside')) AS reports, \
       toInt64(sumIf(case_count, placement = 'inside')) AS cases, \
       toInt64(sumIf(report_count, placement = 'outside')) AS outside \
FROM clue_counts \
WHERE street_code = ? OR nearest_street_code = ? \
GROUP BY street, category";

/// The same numbers counted from the latest state of every clue (`clues FINAL`): exact by
/// construction whatever was written twice, but it reads every clue. Used to cross-check the
/// aggregate (tests, `gridclue-sink` benchmarks).
pub const DISTRICT_EXACT_SQL: &str = "\
SELECT if(placement = 'outside', nearest_street_code, street_code) AS street, category, \
       countIf(placement = 'inside') AS reports, \
       countIf(placement = 'inside' AND is_case = 1) AS cases, \
       countIf(placement = 'outside') AS outside \
FROM clues FINAL \
GROUP BY street, category";

/// Runs the summary query for `scope` (values bound client-side, never formatted into SQL).
pub async fn query(
    client: &clickhouse::Client,
    scope: &Scope,
) -> clickhouse::error::Result<Vec<Cell>> {
    let cells = match scope {
        Scope::District => client.query(DISTRICT_SQL).fetch_all::<SignedCell>().await?,
        Scope::Street { street_code } => {
            client
                .query(STREET_SQL)
                .bind(street_code)
                .bind(street_code)
                .fetch_all::<SignedCell>()
                .await?
        }
    };
    Ok(cells.into_iter().map(SignedCell::non_negative).collect())
}

/// The district numbers counted from `clues FINAL` (see [`DISTRICT_EXACT_SQL`]).
pub async fn query_exact(client: &clickhouse::Client) -> clickhouse::error::Result<Vec<Cell>> {
    client.query(DISTRICT_EXACT_SQL).fetch_all().await
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StreetCount {
    pub street_code: StreetCode,
    pub street_name: String,
    pub count: u64,
    pub cases: u64,
    pub outside: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CategoryCount {
    pub category: CategoryCode,
    /// Chinese name.
    pub name: String,
    pub name_en: String,
    pub count: u64,
    pub cases: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub scope: Scope,
    /// Reports inside the district (in scope).
    pub total: u64,
    /// Of those, cases.
    pub cases: u64,
    /// Points outside the district, counted apart.
    pub outside: u64,
    pub by_street: Vec<StreetCount>,
    pub by_category: Vec<CategoryCount>,
    pub generated_at_ms: u64,
}

/// Assembles the response: every known street (sorted by code) and every catalog category (in
/// catalog order) appear even at zero; codes seen in the data but missing from the reference
/// follow, labelled with their code.
pub fn assemble(scope: Scope, cells: &[Cell], reference: &Reference, now_ms: u64) -> Summary {
    let in_scope = |code: &StreetCode| match &scope {
        Scope::District => true,
        Scope::Street { street_code } => street_code == code,
    };
    let mut by_street: Vec<StreetCount> = reference
        .streets
        .iter()
        .filter(|s| in_scope(&s.code))
        .map(|s| StreetCount {
            street_code: s.code,
            street_name: s.name.clone(),
            count: 0,
            cases: 0,
            outside: 0,
        })
        .collect();
    let known = by_street.len();
    let mut by_category: Vec<CategoryCount> = reference
        .categories
        .iter()
        .map(|c| CategoryCount {
            category: c.code.clone(),
            name: c.name_zh.clone(),
            name_en: c.name_en.clone(),
            count: 0,
            cases: 0,
        })
        .collect();
    let mut street_index: HashMap<StreetCode, usize> = by_street
        .iter()
        .enumerate()
        .map(|(i, s)| (s.street_code, i))
        .collect();
    let mut category_index: HashMap<CategoryCode, usize> = by_category
        .iter()
        .enumerate()
        .map(|(i, c)| (c.category.clone(), i))
        .collect();
    let (mut total, mut cases, mut outside) = (0, 0, 0);
    for cell in cells {
        if cell.street.as_ref().is_some_and(|s| !in_scope(s)) {
            continue;
        }
        total += cell.reports;
        cases += cell.cases;
        outside += cell.outside;
        if let Some(street) = cell.street {
            let i = *street_index.entry(street).or_insert_with(|| {
                by_street.push(StreetCount {
                    street_code: street,
                    street_name: street.to_string(),
                    count: 0,
                    cases: 0,
                    outside: 0,
                });
                by_street.len() - 1
            });
            by_street[i].count += cell.reports;
            by_street[i].cases += cell.cases;
            by_street[i].outside += cell.outside;
        }
        if let Some(category) = cell.category.as_ref().filter(|_| cell.reports > 0) {
            let i = *category_index.entry(category.clone()).or_insert_with(|| {
                by_category.push(CategoryCount {
                    category: category.clone(),
                    name: category.to_string(),
                    name_en: category.to_string(),
                    count: 0,
                    cases: 0,
                });
                by_category.len() - 1
            });
            by_category[i].count += cell.reports;
            by_category[i].cases += cell.cases;
        }
    }
    by_street[known..].sort_by_key(|s| s.street_code);
    Summary {
        scope,
        total,
        cases,
        outside,
        by_street,
        by_category,
        generated_at_ms: now_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::{CategoryName, Street};

    fn reference() -> Reference {
        Reference {
            streets: vec![
                Street {
                    code: street("310199001"),
                    name: "甲街道".into(),
                },
                Street {
                    code: street("310199101"),
                    name: "乙镇".into(),
                },
            ],
            categories: vec![
                CategoryName {
                    code: category("manhole_cover"),
                    name_zh: "井盖破损".into(),
                    name_en: "Damaged manhole cover".into(),
                },
                CategoryName {
                    code: category("garbage_pile"),
                    name_zh: "垃圾堆物".into(),
                    name_en: "Garbage pile".into(),
                },
            ],
            ..Reference::default()
        }
    }

    fn street(code: &str) -> StreetCode {
        StreetCode::parse(code).unwrap()
    }

    fn category(code: &str) -> CategoryCode {
        CategoryCode::parse(code).unwrap()
    }

    fn cell(street: &str, category: &str, reports: u64, cases: u64, outside: u64) -> Cell {
        Cell {
            street: StreetCode::parse(street).ok(),
            category: CategoryCode::parse(category).ok(),
            reports,
            cases,
            outside,
        }
    }

    #[test]
    fn district_lists_every_street_and_category_and_counts_outside_apart() {
        let cells = [
            cell("310199001", "garbage_pile", 3, 2, 0),
            cell("310199001", "manhole_cover", 1, 1, 0),
            cell("310199001", "garbage_pile", 0, 0, 2),
            cell("", "garbage_pile", 0, 0, 1),
        ];
        let s = assemble(Scope::District, &cells, &reference(), 5);
        assert_eq!((s.total, s.cases, s.outside), (4, 3, 3));
        assert_eq!(s.by_street.len(), 2);
        assert_eq!(
            (
                s.by_street[0].count,
                s.by_street[0].cases,
                s.by_street[0].outside
            ),
            (4, 3, 2)
        );
        assert_eq!(
            (s.by_street[1].street_name.as_str(), s.by_street[1].count),
            ("乙镇", 0)
        );
        assert_eq!(s.by_category[0].name, "井盖破损");
        assert_eq!((s.by_category[0].count, s.by_category[1].count), (1, 3));
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["scope"]["kind"], "district");
        assert_eq!(json["by_street"][0]["street_name"], "甲街道");
    }

    #[test]
    fn street_scope_keeps_only_its_street_and_unknown_codes_are_labelled() {
        let cells = [
            cell("310199001", "garbage_pile", 3, 2, 0),
            cell("310199101", "garbage_pile", 5, 5, 0),
            cell("310199101", "street_furniture", 1, 1, 0),
        ];
        let scope = Scope::Street {
            street_code: street("310199101"),
        };
        let s = assemble(scope, &cells, &reference(), 5);
        assert_eq!(s.total, 6);
        assert_eq!(s.by_street.len(), 1);
        assert_eq!(s.by_street[0].count, 6);
        let extra = s
            .by_category
            .iter()
            .find(|c| c.category.as_str() == "street_furniture")
            .unwrap();
        assert_eq!((extra.name.as_str(), extra.count), ("street_furniture", 1));
    }
}
