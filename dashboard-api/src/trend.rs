//! `GET /v1/trend`: reports, acceptances, closures and missed deadlines per hour, day, week
//! (Monday first) or month, China time, every bucket of the period present.
//!
//! Hourly buckets are read from the facts (`dashboard_trend_facts`: the trend's facts of
//! `clue_events`, keyed by the China hour they occurred in, so a period reads its own hours
//! only), counted per China hour in ClickHouse. Each fact is counted once whatever was stored
//! twice: a clue has one report, one acceptance and one closure, so those count distinct clues;
//! a clue can miss several deadlines (after a postponement), so missed deadlines count distinct
//! (clue, seq). Day, week and month buckets sum the same counts per China day, kept by the sink's
//! writes (`trend_days`, migration 0013: exact because the sink stores each fact once; a fact
//! written behind its back counts until `rebuild-aggregates`). Hours and days are summed into
//! buckets here (they nest in weeks and months at UTC+8, which has no daylight saving).

use std::collections::BTreeMap;

use chrono::{Datelike, Duration, Months, NaiveDate};
use serde::{Deserialize, Serialize};

use crate::indicators::{china_midnight_ms, china_time, CHINA_OFFSET_SECS};
use crate::params::{Filters, Period};

/// The longest period of hourly buckets, in days.
pub const MAX_HOURLY_DAYS: i64 = 31;
const HOUR_MS: u64 = 3_600_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Bucket {
    Hour,
    Day,
    Week,
    Month,
}

impl Bucket {
    pub const ALL: [Bucket; 4] = [Bucket::Hour, Bucket::Day, Bucket::Week, Bucket::Month];

    pub fn as_str(self) -> &'static str {
        match self {
            Bucket::Hour => "hour",
            Bucket::Day => "day",
            Bucket::Week => "week",
            Bucket::Month => "month",
        }
    }

    pub fn parse(s: &str) -> Option<Bucket> {
        Self::ALL.into_iter().find(|b| b.as_str() == s)
    }

    /// The longest period answered with these buckets (None: the general 3 years).
    pub fn max_days(self) -> Option<i64> {
        (self == Bucket::Hour).then_some(MAX_HOURLY_DAYS)
    }
}

/// The start (epoch ms) of every bucket that overlaps `period`, in order.
pub fn bucket_starts(bucket: Bucket, period: &Period) -> Vec<u64> {
    let (from_ms, to_ms) = (period.from_ms(), period.to_ms());
    if bucket == Bucket::Hour {
        return (from_ms..to_ms).step_by(HOUR_MS as usize).collect();
    }
    let first = first_day(bucket, period.from);
    let mut starts = Vec::new();
    let mut day = first;
    while day < period.to {
        starts.push(china_midnight_ms(day));
        day = next_day(bucket, day);
    }
    starts
}

fn first_day(bucket: Bucket, d: NaiveDate) -> NaiveDate {
    match bucket {
        Bucket::Hour | Bucket::Day => d,
        Bucket::Week => d - Duration::days(i64::from(d.weekday().num_days_from_monday())),
        Bucket::Month => d.with_day(1).expect("day 1 exists"),
    }
}

fn next_day(bucket: Bucket, d: NaiveDate) -> NaiveDate {
    match bucket {
        Bucket::Hour | Bucket::Day => d + Duration::days(1),
        Bucket::Week => d + Duration::days(7),
        Bucket::Month => d + Months::new(1),
    }
}

/// The start of the bucket holding the China hour that starts at `hour_ms`.
fn bucket_of(bucket: Bucket, hour_ms: u64) -> u64 {
    if bucket == Bucket::Hour {
        return hour_ms;
    }
    let local = chrono::DateTime::from_timestamp_millis(
        hour_ms as i64 + i64::from(CHINA_OFFSET_SECS) * 1000,
    )
    .expect("a representable instant")
    .date_naive();
    china_midnight_ms(first_day(bucket, local))
}

/// Facts per China hour (the hour's start in epoch ms). A period starts and ends at China
/// midnights, so the hours in it are the hours of the facts that occurred in it. Bound: from,
/// to, then the filters.
fn sql() -> String {
    format!(
        "SELECT hour_ms AS hour, \
                uniqExactIf(clue_id, fact_type = 'reported') AS reports, \
                uniqExactIf(clue_id, fact_type = 'accepted') AS accepted, \
                uniqExactIf(clue_id, fact_type = 'verified') AS closed, \
                uniqExactIf(clue_id, seq, fact_type = 'overdue') AS overdue \
         FROM dashboard_trend_facts \
         WHERE hour_ms >= ? AND hour_ms < ? AND {filters} \
         GROUP BY hour \
         LIMIT 100000",
        filters = Filters::sql("department"),
    )
}

/// The grain of `trend_days` holding the filters (see migration 0013).
fn grain(filters: &Filters) -> &'static str {
    if filters.grid.is_some() {
        "grid"
    } else if filters.community.is_some() {
        "community"
    } else {
        "street"
    }
}

/// Facts per China day, each day as the epoch milliseconds of its first instant. Columns a grain
/// does not hold are ''. Bound: from day, to day, then the filters.
fn days_sql(grain: &str) -> String {
    format!(
        "SELECT toUInt64(day) * 86400000 - 28800000 AS hour, \
                toInt64(sum(reports)) AS reports, toInt64(sum(accepted)) AS accepted, \
                toInt64(sum(closed)) AS closed, toInt64(sum(overdue)) AS overdue \
         FROM ( \
             SELECT day, street_code, community AS community_code, grid AS grid_code, category, \
                    department, reports, accepted, closed, overdue \
             FROM trend_days \
             WHERE grain = '{grain}' AND day >= ? AND day < ?) \
         WHERE {filters} \
         GROUP BY day \
         LIMIT 100000",
        filters = Filters::sql("department"),
    )
}

/// Counts per hour (`query`) or per day (`query_days`); `hour` is the start of either.
#[derive(Clone, Debug, Default, PartialEq, Eq, clickhouse::Row, Serialize, Deserialize)]
pub struct HourCounts {
    pub hour: u64,
    pub reports: u64,
    pub accepted: u64,
    pub closed: u64,
    pub overdue: u64,
}

/// A day's counts as ClickHouse sums them from the signed day rows: at least 0 when they are
/// exact; a negative sum is served as 0 ([`crate::indicators::non_negative`]).
#[derive(Clone, Debug, PartialEq, Eq, clickhouse::Row, Deserialize)]
struct SignedDayCounts {
    hour: u64,
    reports: i64,
    accepted: i64,
    closed: i64,
    overdue: i64,
}

impl SignedDayCounts {
    fn non_negative(self) -> HourCounts {
        let day = china_time(self.hour);
        let n = |what: &'static str, v: i64| crate::indicators::non_negative(what, &day, v);
        HourCounts {
            hour: self.hour,
            reports: n("reports", self.reports),
            accepted: n("accepted", self.accepted),
            closed: n("closed", self.closed),
            overdue: n("overdue", self.overdue),
        }
    }
}

pub async fn query(
    client: &clickhouse::Client,
    period: &Period,
    filters: &Filters,
) -> clickhouse::error::Result<Vec<HourCounts>> {
    let q = client
        .query(&sql())
        .bind(period.from_ms())
        .bind(period.to_ms());
    crate::params::bind_filters(q, filters).fetch_all().await
}

/// The counts per China day of the period (days without facts absent).
pub async fn query_days(
    client: &clickhouse::Client,
    period: &Period,
    filters: &Filters,
) -> clickhouse::error::Result<Vec<HourCounts>> {
    let q = client
        .query(&days_sql(grain(filters)))
        .bind(period.from_day())
        .bind(period.to_day());
    let days = crate::params::bind_filters(q, filters)
        .fetch_all::<SignedDayCounts>()
        .await?;
    Ok(days
        .into_iter()
        .map(SignedDayCounts::non_negative)
        .collect())
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TrendRow {
    pub start: String,
    pub start_ms: u64,
    pub reports: u64,
    pub accepted: u64,
    pub closed: u64,
    pub overdue: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Trend {
    pub bucket: Bucket,
    pub from: String,
    pub to: String,
    pub filters: Filters,
    pub rows: Vec<TrendRow>,
}

/// Sums the hours (or days, for buckets of a day or longer) into the period's buckets (every
/// bucket present, zeros included).
pub fn assemble(bucket: Bucket, period: &Period, filters: Filters, hours: &[HourCounts]) -> Trend {
    let mut buckets: BTreeMap<u64, TrendRow> = bucket_starts(bucket, period)
        .into_iter()
        .map(|start_ms| {
            let row = TrendRow {
                start: china_time(start_ms),
                start_ms,
                reports: 0,
                accepted: 0,
                closed: 0,
                overdue: 0,
            };
            (start_ms, row)
        })
        .collect();
    for h in hours {
        if let Some(row) = buckets.get_mut(&bucket_of(bucket, h.hour)) {
            row.reports += h.reports;
            row.accepted += h.accepted;
            row.closed += h.closed;
            row.overdue += h.overdue;
        }
    }
    Trend {
        bucket,
        from: period.from.to_string(),
        to: period.to.to_string(),
        filters,
        rows: buckets.into_values().collect(),
    }
}

impl crate::csv::Export for Trend {
    fn file_name(&self) -> String {
        format!(
            "gridclue-trend-{}-{}_{}.csv",
            self.bucket.as_str(),
            self.from,
            self.to
        )
    }

    fn columns(&self) -> Vec<String> {
        crate::csv::columns(&["start", "reports", "accepted", "closed", "overdue"])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn period(from: &str, to: &str) -> Period {
        Period {
            from: from.parse().unwrap(),
            to: to.parse().unwrap(),
        }
    }

    #[test]
    fn buckets_cover_the_period_in_china_time() {
        let p = period("2026-11-04", "2026-12-02");
        let weeks: Vec<String> = bucket_starts(Bucket::Week, &p)
            .into_iter()
            .map(china_time)
            .collect();
        // 2026-11-04 is a Wednesday: its week starts on Monday 11-02.
        assert_eq!(weeks.first().unwrap(), "2026-11-02T00:00:00.000+08:00");
        assert_eq!(weeks.last().unwrap(), "2026-11-30T00:00:00.000+08:00");
        assert_eq!(weeks.len(), 5);
        let months = bucket_starts(Bucket::Month, &p);
        assert_eq!(
            months.iter().map(|m| china_time(*m)).collect::<Vec<_>>(),
            [
                "2026-11-01T00:00:00.000+08:00",
                "2026-12-01T00:00:00.000+08:00"
            ]
        );
        assert_eq!(bucket_starts(Bucket::Day, &p).len(), 28);
        assert_eq!(
            bucket_starts(Bucket::Hour, &period("2026-11-04", "2026-11-05")).len(),
            24
        );
    }

    #[test]
    fn hours_are_summed_into_their_buckets() {
        let p = period("2026-11-02", "2026-11-04");
        let h = |t: &str, reports| HourCounts {
            hour: china_midnight_ms(t.parse().unwrap()) + 23 * HOUR_MS,
            reports,
            ..HourCounts::default()
        };
        // 23:00 China time on 11-02 is 15:00 UTC the same day: it belongs to 11-02.
        let t = assemble(
            Bucket::Day,
            &p,
            Filters::default(),
            &[h("2026-11-02", 2), h("2026-11-03", 5)],
        );
        assert_eq!(t.rows.iter().map(|r| r.reports).collect::<Vec<_>>(), [2, 5]);
        let t = assemble(
            Bucket::Week,
            &p,
            Filters::default(),
            &[h("2026-11-02", 2), h("2026-11-03", 5)],
        );
        assert_eq!(t.rows.len(), 1);
        assert_eq!(t.rows[0].reports, 7);
    }

    #[test]
    fn every_placeholder_is_bound() {
        assert_eq!(
            sql().matches('?').count(),
            2 + Filters::default().binds().len()
        );
        for grain in ["street", "community", "grid"] {
            assert_eq!(
                days_sql(grain).matches('?').count(),
                2 + Filters::default().binds().len()
            );
        }
    }

    #[test]
    fn a_day_sums_into_its_day_week_and_month() {
        let p = period("2026-11-02", "2026-11-04");
        let day = |d: &str, reports| HourCounts {
            hour: china_midnight_ms(d.parse().unwrap()),
            reports,
            ..HourCounts::default()
        };
        let days = [day("2026-11-02", 2), day("2026-11-03", 5)];
        let t = assemble(Bucket::Day, &p, Filters::default(), &days);
        assert_eq!(t.rows.iter().map(|r| r.reports).collect::<Vec<_>>(), [2, 5]);
        let t = assemble(Bucket::Month, &p, Filters::default(), &days);
        assert_eq!(t.rows.iter().map(|r| r.reports).collect::<Vec<_>>(), [7]);
    }

    #[test]
    fn the_grain_holds_the_place_filters() {
        let mut f = Filters {
            street: Some("310199001".parse().unwrap()),
            category: Some("garbage_pile".parse().unwrap()),
            ..Filters::default()
        };
        assert_eq!(grain(&f), "street");
        f.community = Some("310199001001".parse().unwrap());
        assert_eq!(grain(&f), "community");
        f.grid = Some("310199001001001".parse().unwrap());
        assert_eq!(grain(&f), "grid");
    }
}
