//! `GET /v1/alerts`: emerging-hotspot alerts (docs/ARCHITECTURE.md §8), each in its latest
//! version. Scoped like every statistic: a street token reads the alerts of its street (the
//! street of the place's named grid), a district token every street (or one, `street=`).
//!
//! Parameters (all optional): `state` (new, ongoing, closed), `category`, `from` / `to` (China
//! dates: alerts raised in `[from, to)`), `street` (district tokens), `limit` (1–1000, default
//! 200). Newest first.

use chrono::NaiveDate;
use gridclue_core::codes::{
    empty_as_none, or_empty, CategoryCode, CommunityCode, GridCode, StreetCode,
};
use gridclue_core::hotspot::AlertState;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::indicators::{china_midnight_ms, china_time};
use crate::reference::Reference;
use crate::summary::Scope;

pub const DEFAULT_LIMIT: u64 = 200;
pub const MAX_LIMIT: u64 = 1000;

/// The latest version of every alert in scope (one row per alert whatever was stored twice:
/// versions are aggregated per alert id, the highest wins). Aliases differ from column names:
/// ClickHouse resolves an alias before a column of the same name.
pub const SQL: &str = "\
SELECT toString(alert_id) AS id, max(version) AS latest_version, \
       argMax(state, version) AS latest_state, argMax(place_kind, version) AS kind, \
       argMax(grid_code, version) AS grid, argMax(grids, version) AS place_grids, \
       argMax(community_code, version) AS community, argMax(street_code, version) AS street, \
       argMax(category, version) AS cat, argMax(window_start_ms, version) AS w_start, \
       argMax(window_end_ms, version) AS w_end, argMax(window_days, version) AS w_days, \
       argMax(observed, version) AS obs, argMax(expected, version) AS exp_count, \
       argMax(recurrence_days, version) AS recurrence, argMax(clue_ids, version) AS clues, \
       min(at_ms) AS raised_at_ms, max(at_ms) AS updated_at_ms \
FROM hotspot_alerts \
WHERE (? = '' OR street_code = ?) AND (? = '' OR category = ?) \
GROUP BY alert_id \
HAVING (? = '' OR latest_state = ?) AND raised_at_ms >= ? AND raised_at_ms < ? \
ORDER BY raised_at_ms DESC, id \
LIMIT ?";

/// One alert as ClickHouse returns it. Its codes are read leniently (see
/// [`empty_as_none::lenient`]): a malformed one is shown as `""` (left out of the grids), not an
/// error of the list.
#[derive(Clone, Debug, PartialEq, clickhouse::Row, Deserialize)]
pub struct Found {
    pub id: String,
    pub latest_version: u32,
    pub latest_state: String,
    pub kind: String,
    #[serde(with = "empty_as_none::lenient")]
    pub grid: Option<GridCode>,
    #[serde(deserialize_with = "empty_as_none::lenient::each")]
    pub place_grids: Vec<GridCode>,
    #[serde(with = "empty_as_none::lenient")]
    pub community: Option<CommunityCode>,
    #[serde(with = "empty_as_none::lenient")]
    pub street: Option<StreetCode>,
    #[serde(with = "empty_as_none::lenient")]
    pub cat: Option<CategoryCode>,
    pub w_start: u64,
    pub w_end: u64,
    pub w_days: u32,
    pub obs: u32,
    pub exp_count: f64,
    pub recurrence: f64,
    pub clues: Vec<String>,
    pub raised_at_ms: u64,
    pub updated_at_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct Params {
    pub state: Option<AlertState>,
    pub category: Option<CategoryCode>,
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
    pub street: Option<StreetCode>,
    pub limit: u64,
}

fn date(name: &str, value: &str) -> Result<NaiveDate, ApiError> {
    NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .map_err(|_| ApiError::invalid_parameter(name, "must be a date YYYY-MM-DD (China time)"))
}

impl Params {
    /// Unknown, repeated or malformed parameters are a 400 naming the parameter.
    pub fn parse(pairs: &[(String, String)]) -> Result<Self, ApiError> {
        let mut p = Params {
            limit: DEFAULT_LIMIT,
            ..Default::default()
        };
        let mut seen: Vec<&str> = Vec::new();
        for (name, value) in pairs {
            if seen.contains(&name.as_str()) {
                return Err(ApiError::invalid_parameter(name, "given more than once"));
            }
            seen.push(name);
            match name.as_str() {
                "state" => {
                    p.state = Some(AlertState::parse(value).ok_or_else(|| {
                        ApiError::invalid_parameter(name, "must be new, ongoing or closed")
                    })?)
                }
                "category" => {
                    p.category = Some(
                        CategoryCode::parse(value)
                            .map_err(|e| ApiError::invalid_parameter(name, e.to_string()))?,
                    )
                }
                "from" => p.from = Some(date(name, value)?),
                "to" => p.to = Some(date(name, value)?),
                "street" => p.street = Some(crate::params::street_code(name, value)?),
                "limit" => {
                    p.limit = value
                        .parse()
                        .ok()
                        .filter(|l| (1..=MAX_LIMIT).contains(l))
                        .ok_or_else(|| {
                            ApiError::invalid_parameter(name, "must be an integer from 1 to 1000")
                        })?
                }
                _ => {
                    return Err(ApiError::invalid_parameter(
                        name,
                        "unknown parameter (state, category, from, to, street, limit)",
                    ))
                }
            }
        }
        if let (Some(from), Some(to)) = (p.from, p.to) {
            if to <= from {
                return Err(ApiError::invalid_parameter("to", "must be after from"));
            }
        }
        Ok(p)
    }
}

/// The street the query is restricted to (`None` = every street), or 403 when a street token
/// asks for another street.
pub fn street_filter(scope: &Scope, params: &Params) -> Result<Option<StreetCode>, ApiError> {
    match (scope, params.street) {
        (Scope::District, s) => Ok(s),
        (Scope::Street { street_code }, Some(s)) if s != *street_code => {
            Err(ApiError::Forbidden("read another street's alerts"))
        }
        (Scope::Street { street_code }, _) => Ok(Some(*street_code)),
    }
}

pub async fn query(
    client: &clickhouse::Client,
    street: Option<&StreetCode>,
    params: &Params,
) -> clickhouse::error::Result<Vec<Found>> {
    let street = street.map_or("", StreetCode::as_str);
    let category = or_empty(&params.category);
    let state = params.state.map(|s| s.as_str()).unwrap_or_default();
    client
        .query(SQL)
        .bind(street)
        .bind(street)
        .bind(category)
        .bind(category)
        .bind(state)
        .bind(state)
        .bind(params.from.map_or(0, china_midnight_ms))
        .bind(params.to.map_or(u64::MAX, china_midnight_ms))
        .bind(params.limit)
        .fetch_all()
        .await
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AlertView {
    pub alert_id: String,
    pub version: u32,
    pub state: String,
    pub place_kind: String,
    #[serde(with = "empty_as_none")]
    pub grid_code: Option<GridCode>,
    pub grids: Vec<GridCode>,
    #[serde(with = "empty_as_none")]
    pub community_code: Option<CommunityCode>,
    pub community_name: String,
    #[serde(with = "empty_as_none")]
    pub street_code: Option<StreetCode>,
    pub street_name: String,
    #[serde(with = "empty_as_none")]
    pub category: Option<CategoryCode>,
    pub category_name: String,
    pub category_name_en: String,
    pub window_start: String,
    pub window_end: String,
    pub window_days: u32,
    pub observed: u32,
    pub expected: f64,
    pub recurrence_days: f64,
    pub clue_ids: Vec<String>,
    pub raised_at: String,
    pub updated_at: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Alerts {
    pub scope: Scope,
    pub rows: Vec<AlertView>,
}

pub fn assemble(scope: Scope, found: Vec<Found>, reference: &Reference) -> Alerts {
    let rows = found
        .into_iter()
        .map(|f| {
            let category = f.cat.as_ref().and_then(|c| reference.category(c));
            AlertView {
                street_name: f
                    .street
                    .as_ref()
                    .and_then(|s| reference.street_name(s))
                    .map(str::to_owned)
                    .unwrap_or_default(),
                community_name: f
                    .community
                    .as_ref()
                    .and_then(|c| reference.community_name(c))
                    .map(str::to_owned)
                    .unwrap_or_default(),
                category_name: category.map(|c| c.name_zh.clone()).unwrap_or_default(),
                category_name_en: category.map(|c| c.name_en.clone()).unwrap_or_default(),
                alert_id: f.id,
                version: f.latest_version,
                state: f.latest_state,
                place_kind: f.kind,
                grid_code: f.grid,
                grids: f.place_grids,
                community_code: f.community,
                street_code: f.street,
                category: f.cat,
                window_start: china_time(f.w_start),
                window_end: china_time(f.w_end),
                window_days: f.w_days,
                observed: f.obs,
                expected: f.exp_count,
                recurrence_days: f.recurrence,
                clue_ids: f.clues,
                raised_at: china_time(f.raised_at_ms),
                updated_at: china_time(f.updated_at_ms),
            }
        })
        .collect();
    Alerts { scope, rows }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn parameters_are_parsed_and_bad_ones_named() {
        let p = Params::parse(&pairs(&[
            ("state", "ongoing"),
            ("category", "garbage_pile"),
            ("from", "2026-11-01"),
            ("to", "2026-12-01"),
            ("limit", "5"),
        ]))
        .unwrap();
        assert_eq!(p.state, Some(AlertState::Ongoing));
        assert_eq!(p.limit, 5);
        for (bad, name) in [
            (vec![("state", "open")], "state"),
            (vec![("category", "Garbage Pile")], "category"),
            (vec![("from", "yesterday")], "from"),
            (vec![("from", "2026-12-01"), ("to", "2026-11-01")], "to"),
            (vec![("limit", "0")], "limit"),
            (vec![("street", "31")], "street"),
            (vec![("colour", "red")], "colour"),
            (vec![("state", "new"), ("state", "new")], "state"),
        ] {
            match Params::parse(&pairs(&bad)) {
                Err(ApiError::InvalidParameter { name: n, .. }) => assert_eq!(n, name),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_street_reads_its_own_street_only() {
        let code = |c| StreetCode::parse(c).unwrap();
        let street = Scope::Street {
            street_code: code("310199001"),
        };
        let mut p = Params::default();
        assert_eq!(street_filter(&street, &p).unwrap(), Some(code("310199001")));
        assert_eq!(street_filter(&Scope::District, &p).unwrap(), None);
        p.street = Some(code("310199002"));
        assert!(matches!(
            street_filter(&street, &p),
            Err(ApiError::Forbidden(_))
        ));
        assert_eq!(
            street_filter(&Scope::District, &p).unwrap(),
            Some(code("310199002"))
        );
    }
}
