//! The working-time calendar (`data/calendar.json`) and working-time deadlines, as pure
//! functions of epoch milliseconds.
//!
//! - Working hours are a district setting (the shipped file: 09:00–12:00 and 13:30–17:30 local
//!   time, UTC+8).
//! - A day is a working day when it is a declared make-up working day (调休上班), or when it is
//!   Monday–Friday and not inside a declared public holiday. Years the file does not list are
//!   plain Monday–Friday years (see [`Calendar::covers`]).
//! - **Working hours** count working time from the start instant: Friday 17:00 + 4 working hours
//!   is the following Monday 14:00. A limit that runs out exactly at the end of a period ends
//!   there (11:00 + 1 h = 12:00, not 13:30).
//! - **Working days** follow the usual rule for periods counted in days (the day the period
//!   starts is not counted; the period ends when business stops on its last day): a clue
//!   reported on Monday with a 2-working-day limit is due on Wednesday at the end of working
//!   hours (17:30), whatever the hour it came in; one reported on a Saturday is due at the end
//!   of the second working day after that Saturday.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use chrono::{Datelike, NaiveDate};
use serde::Deserialize;

use crate::category::{Deadline, DeadlineUnit};

const MINUTE_MS: i64 = 60_000;
const DAY_MS: i64 = 86_400_000;
/// How far ahead a deadline may be searched for (a calendar with no working time at all must
/// not loop forever).
const MAX_DAYS: i64 = 3_660;

#[derive(Debug, thiserror::Error)]
pub enum CalendarError {
    #[error("cannot read calendar {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("calendar is not valid JSON of the expected shape: {0}")]
    Parse(#[from] serde_json::Error),
    #[error("calendar: {0}")]
    Invalid(String),
}

#[derive(Deserialize)]
struct CalendarFile {
    timezone_offset_minutes: i32,
    working_hours: Vec<(String, String)>,
    #[serde(default)]
    years: BTreeMap<String, YearFile>,
}

#[derive(Deserialize)]
struct YearFile {
    #[serde(default)]
    holidays: Vec<(String, String, String)>,
    #[serde(default)]
    makeup_workdays: Vec<String>,
}

/// A loaded calendar. Days are counted as days since 1970-01-01 in local time.
#[derive(Clone, Debug)]
pub struct Calendar {
    offset_ms: i64,
    /// Working periods as (start, end) minutes after local midnight, sorted, disjoint.
    periods: Vec<(i64, i64)>,
    holidays: HashSet<i64>,
    makeup: HashSet<i64>,
    years: Vec<i32>,
}

fn parse_hhmm(s: &str) -> Result<i64, CalendarError> {
    let bad = || CalendarError::Invalid(format!("working hour {s:?} is not HH:MM"));
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    let (h, m): (i64, i64) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if !(0..=24).contains(&h) || !(0..60).contains(&m) || h * 60 + m > 24 * 60 {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

fn day_of(date: &str) -> Result<i64, CalendarError> {
    let d = NaiveDate::parse_from_str(date, "%Y-%m-%d")
        .map_err(|e| CalendarError::Invalid(format!("date {date:?}: {e}")))?;
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date");
    Ok((d - epoch).num_days())
}

fn date_of(day: i64) -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date") + chrono::Duration::days(day)
}

impl Calendar {
    pub fn load(path: &Path) -> Result<Self, CalendarError> {
        let text = std::fs::read_to_string(path).map_err(|source| CalendarError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_json(&text)
    }

    pub fn from_json(text: &str) -> Result<Self, CalendarError> {
        let file: CalendarFile = serde_json::from_str(text)?;
        if !(-14 * 60..=14 * 60).contains(&file.timezone_offset_minutes) {
            return Err(CalendarError::Invalid(format!(
                "timezone offset {} min is out of range",
                file.timezone_offset_minutes
            )));
        }
        let mut periods = Vec::new();
        for (a, b) in &file.working_hours {
            let (a, b) = (parse_hhmm(a)?, parse_hhmm(b)?);
            if a >= b {
                return Err(CalendarError::Invalid(format!(
                    "working period {a}–{b} min is empty"
                )));
            }
            periods.push((a, b));
        }
        periods.sort_unstable();
        if periods.is_empty() || periods.windows(2).any(|w| w[0].1 > w[1].0) {
            return Err(CalendarError::Invalid(
                "working hours must be non-empty and must not overlap".into(),
            ));
        }
        let mut holidays = HashSet::new();
        let mut makeup = HashSet::new();
        let mut years = Vec::new();
        for (year, y) in &file.years {
            years.push(
                year.parse().map_err(|_| {
                    CalendarError::Invalid(format!("year {year:?} is not a number"))
                })?,
            );
            for (from, to, _name) in &y.holidays {
                let (a, b) = (day_of(from)?, day_of(to)?);
                if a > b || b - a > 31 {
                    return Err(CalendarError::Invalid(format!(
                        "holiday {from}..{to} is not a plausible range"
                    )));
                }
                holidays.extend(a..=b);
            }
            for d in &y.makeup_workdays {
                makeup.insert(day_of(d)?);
            }
        }
        if let Some(d) = holidays.intersection(&makeup).next() {
            return Err(CalendarError::Invalid(format!(
                "{} is both a holiday and a make-up working day",
                date_of(*d)
            )));
        }
        Ok(Self {
            offset_ms: i64::from(file.timezone_offset_minutes) * MINUTE_MS,
            periods,
            holidays,
            makeup,
            years,
        })
    }

    /// Whether the calendar lists the year of this instant (outside it, only weekends are
    /// days off).
    pub fn covers(&self, at_ms: u64) -> bool {
        let day = (at_ms as i64 + self.offset_ms).div_euclid(DAY_MS);
        self.years.contains(&date_of(day).year())
    }

    /// Whether a local day (days since 1970-01-01) is a working day.
    pub fn is_working_day(&self, day: i64) -> bool {
        if self.makeup.contains(&day) {
            return true;
        }
        if self.holidays.contains(&day) {
            return false;
        }
        // 1970-01-01 was a Thursday: day 0 → weekday index 3 (Monday = 0).
        (day + 3).rem_euclid(7) < 5
    }

    /// The instant when `hours` working hours have passed after `start_ms`.
    pub fn add_working_hours(&self, start_ms: u64, hours: u32) -> Option<u64> {
        self.add_working_ms(start_ms, u64::from(hours) * 3_600_000)
    }

    /// The instant when `duration_ms` of working time have passed after `start_ms`.
    pub fn add_working_ms(&self, start_ms: u64, duration_ms: u64) -> Option<u64> {
        if duration_ms == 0 {
            return Some(start_ms);
        }
        let local = start_ms as i64 + self.offset_ms;
        let mut remaining = duration_ms as i64;
        let first_day = local.div_euclid(DAY_MS);
        for day in first_day..first_day + MAX_DAYS {
            if !self.is_working_day(day) {
                continue;
            }
            for &(a, b) in &self.periods {
                let (ps, pe) = (day * DAY_MS + a * MINUTE_MS, day * DAY_MS + b * MINUTE_MS);
                if local >= pe {
                    continue;
                }
                let from = local.max(ps);
                let available = pe - from;
                if remaining <= available {
                    return u64::try_from(from + remaining - self.offset_ms).ok();
                }
                remaining -= available;
            }
        }
        None
    }

    /// When only `fraction` of the working time from `start_ms` to `deadline_ms` remains (the
    /// deadline's light turns yellow there).
    pub fn remaining_fraction_at(&self, start_ms: u64, deadline_ms: u64, fraction: f64) -> u64 {
        let limit = self.working_ms_between(start_ms, deadline_ms);
        let elapsed = (limit as f64 * (1.0 - fraction)).round() as u64;
        self.add_working_ms(start_ms, elapsed)
            .unwrap_or(deadline_ms)
            .min(deadline_ms)
    }

    /// The end of working hours on the `days`-th working day after the day of `start_ms` (the
    /// start day itself is not counted). With `days == 0`, the end of working hours on the start
    /// day if it is a working day, else on the next working day.
    pub fn add_working_days(&self, start_ms: u64, days: u32) -> Option<u64> {
        let start_day = (start_ms as i64 + self.offset_ms).div_euclid(DAY_MS);
        let end_of_day = self.periods.last().map(|p| p.1)?;
        let mut counted = 0u32;
        for day in start_day..start_day + MAX_DAYS {
            let counts = if days == 0 {
                self.is_working_day(day)
            } else {
                day > start_day && self.is_working_day(day)
            };
            if counts {
                counted += 1;
                if counted >= days.max(1) {
                    let at = day * DAY_MS + end_of_day * MINUTE_MS - self.offset_ms;
                    return u64::try_from(at).ok();
                }
            }
        }
        None
    }

    /// Working time between two instants (0 when `to_ms` is not after `from_ms`): the inverse
    /// of [`Calendar::add_working_ms`], used for the working time left before a deadline and
    /// the length of a time limit. Spans longer than the search horizon are cut at it.
    pub fn working_ms_between(&self, from_ms: u64, to_ms: u64) -> u64 {
        if to_ms <= from_ms {
            return 0;
        }
        let (from, to) = (
            from_ms as i64 + self.offset_ms,
            to_ms as i64 + self.offset_ms,
        );
        let first_day = from.div_euclid(DAY_MS);
        let last_day = to.div_euclid(DAY_MS).min(first_day + MAX_DAYS);
        let mut total = 0i64;
        for day in first_day..=last_day {
            if !self.is_working_day(day) {
                continue;
            }
            for &(a, b) in &self.periods {
                let (ps, pe) = (day * DAY_MS + a * MINUTE_MS, day * DAY_MS + b * MINUTE_MS);
                total += (pe.min(to) - ps.max(from)).max(0);
            }
        }
        total as u64
    }

    /// The deadline of a category's limit, counted from `start_ms`.
    pub fn deadline(&self, start_ms: u64, limit: Deadline) -> Option<u64> {
        match limit.unit {
            DeadlineUnit::WorkingHours => self.add_working_hours(start_ms, limit.amount),
            DeadlineUnit::WorkingDays => self.add_working_days(start_ms, limit.amount),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> Calendar {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/calendar.json");
        Calendar::load(&path).unwrap()
    }

    /// Epoch ms of a local (UTC+8) date-time "YYYY-MM-DD HH:MM".
    fn at(s: &str) -> u64 {
        let t = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap();
        (t.and_utc().timestamp_millis() - 8 * 3_600_000) as u64
    }

    fn show(ms: u64) -> String {
        let t = chrono::DateTime::from_timestamp_millis(ms as i64 + 8 * 3_600_000).unwrap();
        t.format("%Y-%m-%d %H:%M %a").to_string()
    }

    #[test]
    fn working_time_between_is_the_inverse_of_adding_it() {
        let cal = shipped();
        // Friday 17:00 → Monday 14:00 is 4 working hours; the holiday week counts nothing.
        assert_eq!(
            cal.working_ms_between(at("2025-03-07 17:00"), at("2025-03-10 14:00")),
            4 * 3_600_000
        );
        assert_eq!(
            cal.working_ms_between(at("2025-10-01 09:00"), at("2025-10-08 18:00")),
            0
        );
        assert_eq!(
            cal.working_ms_between(at("2025-03-10 10:00"), at("2025-03-10 09:00")),
            0
        );
        for (start, hours) in [
            ("2025-03-07 17:00", 4),
            ("2025-09-30 16:00", 9),
            ("2025-03-10 12:30", 1),
        ] {
            let end = cal.add_working_hours(at(start), hours).unwrap();
            assert_eq!(
                cal.working_ms_between(at(start), end),
                u64::from(hours) * 3_600_000,
                "{start} + {hours} h"
            );
        }
        // 20% (48 min) of a 4-working-hour limit from Friday 17:00 is left at Monday 11:42:
        // 18 min before lunch and 30 min after it.
        assert_eq!(
            show(cal.remaining_fraction_at(at("2025-03-07 17:00"), at("2025-03-10 14:00"), 0.2)),
            "2025-03-10 11:42 Mon"
        );
    }

    #[test]
    fn working_hours_table() {
        let cal = shipped();
        // (start, working hours, expected deadline), all local time.
        let table = [
            // Friday 17:00 + 4 h: half an hour on Friday, 3.5 h on Monday.
            ("2025-03-07 17:00", 4, "2025-03-10 14:00 Mon"),
            // Over lunch; starting in the lunch break; before opening; ending at a period end.
            ("2025-03-10 11:00", 2, "2025-03-10 14:30 Mon"),
            ("2025-03-10 12:30", 1, "2025-03-10 14:30 Mon"),
            ("2025-03-10 07:00", 1, "2025-03-10 10:00 Mon"),
            ("2025-03-10 11:00", 1, "2025-03-10 12:00 Mon"),
            ("2025-03-10 17:30", 1, "2025-03-11 10:00 Tue"),
            ("2025-03-10 10:00", 0, "2025-03-10 10:00 Mon"),
            // A whole working day is 7 hours.
            ("2025-03-10 09:00", 7, "2025-03-10 17:30 Mon"),
            ("2025-03-10 09:00", 14, "2025-03-11 17:30 Tue"),
            // The week-long National Day holiday (Oct 1–8, 2025) is skipped.
            ("2025-09-30 16:00", 4, "2025-10-09 11:30 Thu"),
            // Make-up Saturday after it (Oct 11, 2025) is a working day.
            ("2025-10-10 17:00", 2, "2025-10-11 10:30 Sat"),
            // Make-up Sunday before it (Sep 28, 2025).
            ("2025-09-27 10:00", 1, "2025-09-28 10:00 Sun"),
            // Spring Festival 2026: make-up Saturday Feb 14 is worked, Feb 15–23 are not.
            ("2026-02-13 17:00", 4, "2026-02-14 14:00 Sat"),
            ("2026-02-14 17:00", 1, "2026-02-24 09:30 Tue"),
            // Across the year end: Jan 1–3, 2026 off, Sunday Jan 4 a make-up working day.
            ("2025-12-31 16:00", 8, "2026-01-04 17:00 Sun"),
            // Weekend report: the clock starts on Monday morning.
            ("2025-03-08 10:00", 2, "2025-03-10 11:00 Mon"),
        ];
        for (start, hours, want) in table {
            let got = cal.add_working_hours(at(start), hours).unwrap();
            assert_eq!(show(got), want, "{start} + {hours} working hours");
        }
    }

    #[test]
    fn working_days_table() {
        let cal = shipped();
        let table = [
            ("2025-03-10 10:00", 2, "2025-03-12 17:30 Wed"),
            ("2025-03-10 23:00", 1, "2025-03-11 17:30 Tue"),
            // Friday + 1 working day → Monday.
            ("2025-03-07 09:30", 1, "2025-03-10 17:30 Mon"),
            // Reported on a Saturday: the Saturday does not count.
            ("2025-03-08 10:00", 2, "2025-03-11 17:30 Tue"),
            // Through the National Day holiday, counting the make-up Sunday Sep 28.
            ("2025-09-25 10:00", 5, "2025-10-09 17:30 Thu"),
            // Across the year end.
            ("2025-12-30 15:00", 2, "2026-01-04 17:30 Sun"),
            // Zero days: the end of the (working) start day.
            ("2025-03-10 10:00", 0, "2025-03-10 17:30 Mon"),
            ("2025-03-08 10:00", 0, "2025-03-10 17:30 Mon"),
        ];
        for (start, days, want) in table {
            let got = cal.add_working_days(at(start), days).unwrap();
            assert_eq!(show(got), want, "{start} + {days} working days");
        }
    }

    #[test]
    fn category_limits_and_unlisted_years() {
        let cal = shipped();
        let hours = Deadline {
            unit: DeadlineUnit::WorkingHours,
            amount: 4,
        };
        assert_eq!(
            show(cal.deadline(at("2025-03-07 17:00"), hours).unwrap()),
            "2025-03-10 14:00 Mon"
        );
        let days = Deadline {
            unit: DeadlineUnit::WorkingDays,
            amount: 2,
        };
        assert_eq!(
            show(cal.deadline(at("2025-03-10 10:00"), days).unwrap()),
            "2025-03-12 17:30 Wed"
        );
        // 2027 is not in the file: only weekends are off there.
        assert!(cal.covers(at("2026-12-31 12:00")));
        assert!(!cal.covers(at("2027-01-01 12:00")));
        assert_eq!(
            show(cal.add_working_hours(at("2026-12-31 17:00"), 4).unwrap()),
            "2027-01-01 14:00 Fri"
        );
    }

    /// The State Council's holiday arrangements for 2025 (issued 2024-11-12) and 2026 (issued
    /// 2025-11-04): breaks (first and last day off) and the weekend days worked instead.
    const OFFICIAL_BREAKS: [(&str, &str); 13] = [
        ("2025-01-01", "2025-01-01"),
        ("2025-01-28", "2025-02-04"),
        ("2025-04-04", "2025-04-06"),
        ("2025-05-01", "2025-05-05"),
        ("2025-05-31", "2025-06-02"),
        ("2025-10-01", "2025-10-08"),
        ("2026-01-01", "2026-01-03"),
        ("2026-02-15", "2026-02-23"),
        ("2026-04-04", "2026-04-06"),
        ("2026-05-01", "2026-05-05"),
        ("2026-06-19", "2026-06-21"),
        ("2026-09-25", "2026-09-27"),
        ("2026-10-01", "2026-10-07"),
    ];
    const OFFICIAL_MAKEUP_DAYS: [&str; 11] = [
        "2025-01-26",
        "2025-02-08",
        "2025-04-27",
        "2025-09-28",
        "2025-10-11",
        "2026-01-04",
        "2026-02-14",
        "2026-02-28",
        "2026-05-09",
        "2026-09-20",
        "2026-10-10",
    ];

    #[test]
    fn shipped_calendar_matches_the_official_dates() {
        let cal = shipped();
        for (first, last) in OFFICIAL_BREAKS {
            for d in day_of(first).unwrap()..=day_of(last).unwrap() {
                assert!(!cal.is_working_day(d), "{} should be off", date_of(d));
            }
        }
        for m in OFFICIAL_MAKEUP_DAYS {
            let d = day_of(m).unwrap();
            assert!(cal.is_working_day(d), "{} should be worked", date_of(d));
            assert!(date_of(d).weekday().number_from_monday() >= 6);
        }
        // Working days in 2025: 261 weekdays − 18 weekdays inside holidays + 5 make-up days.
        let y2025 = (day_of("2025-01-01").unwrap()..=day_of("2025-12-31").unwrap())
            .filter(|&d| cal.is_working_day(d))
            .count();
        assert_eq!(y2025, 248);
    }

    #[test]
    fn working_time_between_instants() {
        let cal = shipped();
        let hour = 3_600_000;
        let table = [
            // Friday 17:00 → Monday 14:00: half an hour on Friday, 3.5 h on Monday.
            ("2025-03-07 17:00", "2025-03-10 14:00", 4 * hour),
            // Inside the lunch break, and across it.
            ("2025-03-10 12:10", "2025-03-10 13:20", 0),
            ("2025-03-10 11:00", "2025-03-10 14:30", 2 * hour),
            // A whole working day, from midnight to midnight.
            ("2025-03-10 00:00", "2025-03-11 00:00", 7 * hour),
            // The National Day week is not working time.
            ("2025-10-01 00:00", "2025-10-09 00:00", 0),
            // Backwards or empty spans are zero.
            ("2025-03-10 14:00", "2025-03-10 10:00", 0),
            ("2025-03-10 10:00", "2025-03-10 10:00", 0),
        ];
        for (from, to, want) in table {
            assert_eq!(
                cal.working_ms_between(at(from), at(to)),
                want,
                "{from} → {to}"
            );
        }
    }

    proptest::proptest! {
        /// Adding working time and measuring it back gives the same amount.
        #[test]
        fn working_time_added_is_measured_back(
            start in 1_735_660_800_000u64..1_798_732_800_000u64,
            minutes in 1u64..20_000,
        ) {
            let cal = shipped();
            let d = minutes * 60_000;
            let end = cal.add_working_ms(start, d).unwrap();
            proptest::prop_assert_eq!(cal.working_ms_between(start, end), d);
        }
    }

    #[test]
    fn bad_calendars_are_refused() {
        let ok =
            r#"{"timezone_offset_minutes":480,"working_hours":[["09:00","12:00"]],"years":{}}"#;
        assert!(Calendar::from_json(ok).is_ok());
        for bad in [
            r#"{"timezone_offset_minutes":480,"working_hours":[],"years":{}}"#,
            r#"{"timezone_offset_minutes":480,"working_hours":[["12:00","09:00"]]}"#,
            r#"{"timezone_offset_minutes":480,"working_hours":[["09:00","12:00"],["11:00","13:00"]]}"#,
            r#"{"timezone_offset_minutes":480,"working_hours":[["9h","12:00"]]}"#,
            r#"{"timezone_offset_minutes":480,"working_hours":[["09:00","12:00"]],"years":{"2025":{"holidays":[["2025-01-01","2025-01-01","x"]],"makeup_workdays":["2025-01-01"]}}}"#,
        ] {
            assert!(Calendar::from_json(bad).is_err(), "{bad}");
        }
    }
}
