//! What the dashboard routes share: who reads (district or one street), the query parameters
//! every route parses the same way (periods, place/category/department filters, the answer's
//! format), and the per-route check that nothing unknown or repeated was sent.

use std::collections::BTreeMap;

use axum::http::{header, HeaderMap};
use chrono::{Datelike, Months, NaiveDate};
use gridclue_core::codes::{
    or_empty, ActorScope, CategoryCode, CommunityCode, DepartmentCode, GridCode, StreetCode,
};
use gridclue_core::tokens::{TokenKind, TokenRecord};
use serde::Serialize;

use crate::error::ApiError;
use crate::indicators::{china_midnight_ms, Reader, MAX_PERIOD_MONTHS};
use crate::reference::Reference;

/// Whose dashboards a token reads: the district every street's, a street office its own.
pub fn reader(token: &TokenRecord) -> Result<Reader, ApiError> {
    match (
        token.kind,
        token.scope.as_ref().and_then(ActorScope::street),
    ) {
        (TokenKind::District, _) => Ok(Reader::District),
        (TokenKind::Street, Some(&street)) => Ok(Reader::Street(street)),
        (TokenKind::Street, None) => Err(ApiError::Forbidden(
            "read dashboards (street token without a street)",
        )),
        (TokenKind::Reporter, _) => Err(ApiError::Forbidden("read dashboards (reporter token)")),
        (TokenKind::Department, _) => {
            Err(ApiError::Forbidden("read dashboards (department token)"))
        }
    }
}

/// The query parameters of one request by name, after checking that each is known to the route
/// and given once (else a 400 naming it).
pub struct Args<'a> {
    values: BTreeMap<&'a str, &'a str>,
}

impl<'a> Args<'a> {
    pub fn parse(pairs: &'a [(String, String)], known: &[&str]) -> Result<Self, ApiError> {
        let mut values = BTreeMap::new();
        for (name, value) in pairs {
            if !known.contains(&name.as_str()) {
                return Err(ApiError::invalid_parameter(
                    name,
                    format!("unknown (known: {})", known.join(", ")),
                ));
            }
            if values.insert(name.as_str(), value.as_str()).is_some() {
                return Err(ApiError::invalid_parameter(name, "given more than once"));
            }
        }
        Ok(Self { values })
    }

    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.values.get(name).copied()
    }

    pub fn required(&self, name: &str) -> Result<&'a str, ApiError> {
        self.get(name)
            .ok_or_else(|| ApiError::invalid_parameter(name, "is required"))
    }

    /// The optional parameter `name` read by `parse` ([`one_of`]), `default` when absent.
    pub fn choice<T>(
        &self,
        name: &str,
        default: T,
        parse: impl FnOnce(&str) -> Option<T>,
        expected: &str,
    ) -> Result<T, ApiError> {
        match self.get(name) {
            None => Ok(default),
            Some(value) => one_of(name, value, parse, expected),
        }
    }
}

/// `value` of the parameter `name` read by `parse`; a value it does not know is a 400 saying
/// what was expected (`"a bucket (hour, day, week, month)"`).
pub fn one_of<T>(
    name: &str,
    value: &str,
    parse: impl FnOnce(&str) -> Option<T>,
    expected: &str,
) -> Result<T, ApiError> {
    parse(value)
        .ok_or_else(|| ApiError::invalid_parameter(name, format!("{value:?} is not {expected}")))
}

/// The parameters every filtered route accepts besides its own.
pub const FILTER_NAMES: [&str; 5] = ["street", "community", "grid", "category", "department"];

/// A period `[from, to)` of China dates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Period {
    pub from: NaiveDate,
    pub to: NaiveDate,
}

impl Period {
    /// `from` and `to` (required, `YYYY-MM-DD`), `to` after `from` and at most `max_days` days
    /// later (None: at most 3 years).
    pub fn parse(args: &Args<'_>, max_days: Option<i64>) -> Result<Self, ApiError> {
        let date = |name: &str| {
            NaiveDate::parse_from_str(args.required(name)?, "%Y-%m-%d").map_err(|_| {
                ApiError::invalid_parameter(name, "must be a date YYYY-MM-DD (China time)")
            })
        };
        let (from, to) = (date("from")?, date("to")?);
        if to <= from {
            return Err(ApiError::invalid_parameter("to", "must be after from"));
        }
        match max_days {
            Some(days) if (to - from).num_days() > days => Err(ApiError::invalid_parameter(
                "to",
                format!("the period from `from` to `to` may span at most {days} days here"),
            )),
            None if from
                .checked_add_months(Months::new(MAX_PERIOD_MONTHS))
                .is_none_or(|limit| to > limit) =>
            {
                Err(ApiError::invalid_parameter(
                    "to",
                    "the period from `from` to `to` may span at most 3 years",
                ))
            }
            _ => Ok(Self { from, to }),
        }
    }

    pub fn from_ms(&self) -> u64 {
        china_midnight_ms(self.from)
    }

    pub fn to_ms(&self) -> u64 {
        china_midnight_ms(self.to)
    }

    /// The first and the day after the last report day of the period (days since 1970-01-01 of
    /// the China dates, as `status_counts` keys them).
    pub fn from_day(&self) -> u64 {
        crate::indicators::cohort_day(self.from_ms())
    }

    pub fn to_day(&self) -> u64 {
        crate::indicators::cohort_day(self.to_ms())
    }

    /// The period's report days as `status_counts` holds them: its whole months from the month
    /// rows (keyed by their first day), the days before and after those from the day rows. In
    /// bind order: the days before [from, to), the days after, the months; a range that is empty
    /// is [0, 0). Without `months` (a grain without month rows), every day from the day rows.
    pub fn day_and_month_ranges(&self, months: bool) -> [u64; 6] {
        let day = |d: NaiveDate| crate::indicators::cohort_day(china_midnight_ms(d));
        let first = if self.from.day() == 1 {
            Some(self.from)
        } else {
            self.from
                .with_day(1)
                .and_then(|d| d.checked_add_months(Months::new(1)))
        };
        let end = self.to.with_day(1).expect("day 1 exists");
        match first {
            Some(first) if months && first < end => [
                day(self.from),
                day(first),
                day(end),
                day(self.to),
                day(first),
                day(end),
            ],
            _ => [day(self.from), day(self.to), 0, 0, 0, 0],
        }
    }
}

/// Place, category and department filters; `None` = any. The street is set for a street
/// token even when the request did not name it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Filters {
    pub street: Option<StreetCode>,
    pub community: Option<CommunityCode>,
    pub grid: Option<GridCode>,
    pub category: Option<CategoryCode>,
    pub department: Option<DepartmentCode>,
}

/// A code query parameter parsed by its type's rules (else a 400 naming the parameter and what
/// it must be).
fn code<C, E: std::fmt::Display>(
    name: &str,
    value: &str,
    parse: fn(&str) -> Result<C, E>,
    what: &str,
) -> Result<C, ApiError> {
    parse(value).map_err(|e| ApiError::invalid_parameter(name, format!("must be {what} ({e})")))
}

const STREET_CODE: &str = "a 9-digit street code";

/// The street code given as query parameter `name`.
pub fn street_code(name: &str, value: &str) -> Result<StreetCode, ApiError> {
    code(name, value, StreetCode::parse, STREET_CODE)
}

/// The code given as query parameter `name`, if any (see [`code`]).
fn optional_code<C, E: std::fmt::Display>(
    args: &Args<'_>,
    name: &str,
    parse: fn(&str) -> Result<C, E>,
    what: &str,
) -> Result<Option<C>, ApiError> {
    args.get(name)
        .map(|v| code(name, v, parse, what))
        .transpose()
}

fn department_code(args: &Args<'_>) -> Result<Option<DepartmentCode>, ApiError> {
    args.get("department")
        .map(|v| {
            DepartmentCode::parse(v).map_err(|_| {
                ApiError::invalid_parameter(
                    "department",
                    format!("{v:?} is not a department code (lowercase letters and '_')"),
                )
            })
        })
        .transpose()
}

impl Filters {
    /// Parses the filters present in `args` (codes checked against the reference data) and
    /// applies the reader's scope: a street token reads its street (a street, community or grid
    /// of another street is a 403).
    pub fn parse(
        args: &Args<'_>,
        reader: &Reader,
        reference: &Reference,
    ) -> Result<Self, ApiError> {
        let mut f = Filters {
            street: optional_code(args, "street", StreetCode::parse, STREET_CODE)?,
            community: optional_code(
                args,
                "community",
                CommunityCode::parse,
                "a 12-digit community code",
            )?,
            grid: optional_code(args, "grid", GridCode::parse, "a 15-digit grid code")?,
            category: optional_code(
                args,
                "category",
                CategoryCode::parse,
                "a category code of the catalog",
            )?,
            department: department_code(args)?,
        };
        if let Reader::Street(own) = reader {
            let outside = f.street.is_some_and(|s| s != *own)
                || f.community.is_some_and(|c| c.street_code() != *own)
                || f.grid.is_some_and(|g| g.street_code() != *own);
            if outside {
                return Err(ApiError::Forbidden(
                    "read another street's numbers (street token)",
                ));
            }
            f.street = Some(*own);
        }
        if let Some(s) = &f.street {
            if reference.street_name(s).is_none() && !reference.streets.is_empty() {
                return Err(ApiError::invalid_parameter(
                    "street",
                    format!("no street {s} on the map"),
                ));
            }
        }
        if let Some(c) = &f.community {
            if reference.community_name(c).is_none() && !reference.communities.is_empty() {
                return Err(ApiError::invalid_parameter(
                    "community",
                    format!("no community {c} on the map"),
                ));
            }
        }
        if let Some(c) = &f.category {
            if reference.category(c).is_none() {
                return Err(ApiError::invalid_parameter(
                    "category",
                    format!("{c:?} is not a category of the catalog"),
                ));
            }
        }
        if let Some(d) = &f.department {
            if reference.department(d).is_none() {
                return Err(ApiError::invalid_parameter(
                    "department",
                    format!("{d:?} is not a department of the catalog"),
                ));
            }
        }
        Ok(f)
    }

    /// The values bound for [`Filters::SQL`], in order ("" = any).
    pub fn binds(&self) -> [String; 10] {
        let (s, c, g, k, d) = (
            or_empty(&self.street).to_owned(),
            or_empty(&self.community).to_owned(),
            or_empty(&self.grid).to_owned(),
            or_empty(&self.category).to_owned(),
            or_empty(&self.department).to_owned(),
        );
        [
            s.clone(),
            s,
            c.clone(),
            c,
            g.clone(),
            g,
            k.clone(),
            k,
            d.clone(),
            d,
        ]
    }

    /// The filter condition over columns `street_code`, `community_code`, `grid_code`,
    /// `category` and `<department>` (fixed SQL; the values are bound, see [`Filters::binds`]).
    pub fn sql(department_column: &str) -> String {
        format!(
            "(? = '' OR street_code = ?) AND (? = '' OR community_code = ?) \
             AND (? = '' OR grid_code = ?) AND (? = '' OR category = ?) \
             AND (? = '' OR {department_column} = ?)"
        )
    }
}

/// Binds the filter values onto a query, in the order of [`Filters::sql`].
pub fn bind_filters(mut q: clickhouse::query::Query, f: &Filters) -> clickhouse::query::Query {
    for v in f.binds() {
        q = q.bind(v);
    }
    q
}

/// The answer's format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
}

impl Format {
    /// `?format=json|csv`; without it, `Accept: text/csv` asks for CSV.
    pub fn of(args: &Args<'_>, headers: &HeaderMap) -> Result<Self, ApiError> {
        match args.get("format") {
            Some("json") => Ok(Format::Json),
            Some("csv") => Ok(Format::Csv),
            Some(_) => Err(ApiError::invalid_parameter("format", "must be json or csv")),
            None => {
                let accept = headers
                    .get(header::ACCEPT)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                let csv = accept
                    .split(',')
                    .any(|m| m.split(';').next().is_some_and(|t| t.trim() == "text/csv"));
                Ok(if csv { Format::Csv } else { Format::Json })
            }
        }
    }
}

/// The statuses of a clue still in the loop (not closed, rejected, duplicate or withdrawn).
pub const OPEN_STATUSES_SQL: &str =
    "('reported', 'accepted', 'dispatched', 'in_progress', 'handled')";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_period_reads_its_whole_months_from_the_month_rows() {
        let p = |from: &str, to: &str| Period {
            from: from.parse().unwrap(),
            to: to.parse().unwrap(),
        };
        // 2026-01-01 is day 20454; 2026-06-01 day 20605; 2026-07-01 day 20635.
        assert_eq!(
            p("2026-01-01", "2027-01-01").day_and_month_ranges(true),
            [20454, 20454, 20819, 20819, 20454, 20819]
        );
        assert_eq!(
            p("2026-05-30", "2026-07-03").day_and_month_ranges(true),
            [20603, 20605, 20635, 20637, 20605, 20635]
        );
        // No whole month: days only; and without month rows, days only.
        assert_eq!(
            p("2026-06-02", "2026-07-01").day_and_month_ranges(true),
            [20606, 20635, 0, 0, 0, 0]
        );
        assert_eq!(
            p("2026-06-01", "2026-07-01").day_and_month_ranges(false),
            [20605, 20635, 0, 0, 0, 0]
        );
    }
    use crate::reference::{DepartmentName, Street};

    fn pairs(q: &str) -> Vec<(String, String)> {
        q.split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (k.to_owned(), v.to_owned())
            })
            .collect()
    }

    fn reference() -> Reference {
        Reference {
            streets: vec![
                Street {
                    code: StreetCode::parse("310199001").unwrap(),
                    name: "甲".into(),
                },
                Street {
                    code: StreetCode::parse("310199002").unwrap(),
                    name: "乙".into(),
                },
            ],
            departments: vec![DepartmentName {
                code: DepartmentCode::parse("water_affairs").unwrap(),
                name_zh: "水务".into(),
                name_en: "Water affairs".into(),
            }],
            ..Reference::default()
        }
    }

    #[test]
    fn a_department_filter_names_a_department_of_the_catalog() {
        let parse = |q: &str| {
            let p = pairs(q);
            Filters::parse(
                &Args::parse(&p, &FILTER_NAMES).unwrap(),
                &Reader::District,
                &reference(),
            )
            .map_err(|e| e.to_string())
        };
        let f = parse("department=water_affairs").unwrap();
        assert_eq!(f.department.as_ref().unwrap(), "water_affairs");
        assert_eq!(&f.binds()[8..], ["water_affairs", "water_affairs"]);
        assert_eq!(&Filters::default().binds()[8..], ["", ""]);
        for (q, detail) in [
            (
                "department=fire_rescue",
                "is not a department of the catalog",
            ),
            ("department=", "is not a department code"),
            ("department=Water", "is not a department code"),
            ("department=water%20affairs", "is not a department code"),
        ] {
            let err = parse(q).unwrap_err();
            assert!(
                err.starts_with("query parameter `department`") && err.contains(detail),
                "{q}: {err}"
            );
        }
    }

    #[test]
    fn unknown_and_repeated_parameters_are_named() {
        let p = pairs("from=2026-01-01&bogus=1");
        let err = Args::parse(&p, &["from"]).err().unwrap().to_string();
        assert!(err.starts_with("query parameter `bogus`"), "{err}");
        let p = pairs("from=2026-01-01&from=2026-01-02");
        let err = Args::parse(&p, &["from"]).err().unwrap().to_string();
        assert_eq!(err, "query parameter `from`: given more than once");
    }

    #[test]
    fn periods_are_ordered_and_bounded() {
        let period = |q: &str, max| {
            let p = pairs(q);
            Period::parse(&Args::parse(&p, &["from", "to"]).unwrap(), max)
                .map_err(|e| e.to_string())
        };
        let ok = period("from=2026-11-01&to=2026-12-01", Some(31)).unwrap();
        assert_eq!(
            (ok.from_ms(), ok.to_ms()),
            (1_793_462_400_000, 1_796_054_400_000)
        );
        assert!(period("from=2026-11-01&to=2026-12-03", Some(31))
            .unwrap_err()
            .starts_with("query parameter `to`"));
        assert!(period("from=2026-11-01&to=2026-11-01", None)
            .unwrap_err()
            .contains("must be after from"));
        assert!(period("from=2026-11-01&to=2029-11-02", None).is_err());
        assert!(period("from=2026-13-01&to=2027-01-01", None)
            .unwrap_err()
            .starts_with("query parameter `from`"));
        assert!(period("to=2027-01-01", None)
            .unwrap_err()
            .starts_with("query parameter `from`: is required"));
    }

    #[test]
    fn a_street_token_is_held_to_its_street() {
        let names = FILTER_NAMES;
        let parse = |q: &str, reader: &Reader| {
            let p = pairs(q);
            Filters::parse(&Args::parse(&p, &names).unwrap(), reader, &reference())
        };
        let own = Reader::Street(StreetCode::parse("310199001").unwrap());
        assert_eq!(parse("", &own).unwrap().street.unwrap(), "310199001");
        assert!(parse("grid=310199001001001", &own).is_ok());
        for q in [
            "street=310199002",
            "community=310199002001",
            "grid=310199002001001",
        ] {
            assert!(matches!(parse(q, &own), Err(ApiError::Forbidden(_))), "{q}");
        }
        assert_eq!(parse("", &Reader::District).unwrap(), Filters::default());
        let err = parse("street=310199009", &Reader::District)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("query parameter `street`"), "{err}");
        for (q, name, detail) in [
            ("grid=31019900100100", "grid", "a 15-digit grid code"),
            ("street=310199200", "street", "outside 000–199"),
            ("street=", "street", "a 9-digit street code"),
            ("community=3101990010x1", "community", "ASCII digits only"),
        ] {
            let err = parse(q, &Reader::District).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("query parameter `{name}`")) && err.contains(detail),
                "{q}: {err}"
            );
        }
        let err = parse("category=nope", &Reader::District)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("query parameter `category`"), "{err}");
    }

    #[test]
    fn csv_is_asked_for_by_parameter_or_accept_header() {
        let p = pairs("format=csv");
        let mut h = HeaderMap::new();
        assert_eq!(
            Format::of(&Args::parse(&p, &["format"]).unwrap(), &h).unwrap(),
            Format::Csv
        );
        let none: Vec<(String, String)> = Vec::new();
        let args = Args::parse(&none, &["format"]).unwrap();
        assert_eq!(Format::of(&args, &h).unwrap(), Format::Json);
        h.insert(
            header::ACCEPT,
            "text/csv;q=0.9, application/json".parse().unwrap(),
        );
        assert_eq!(Format::of(&args, &h).unwrap(), Format::Csv);
        let p = pairs("format=xml");
        assert!(Format::of(&Args::parse(&p, &["format"]).unwrap(), &h).is_err());
    }

    #[test]
    fn every_filter_placeholder_is_bound() {
        assert_eq!(
            Filters::sql("department").matches('?').count(),
            Filters::default().binds().len()
        );
    }
}
