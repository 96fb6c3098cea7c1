//! `GET /v1/rankings`: streets or departments ranked by the indicators of a period, with the
//! previous period of equal length beside each row, the change, and actual ÷ target.
//!
//! Both periods are `/v1/indicators` answers — the same plan, query, formulas and ranking
//! (`crate::indicators`); nothing here computes an indicator. The previous period
//! `[from − n days, from)` is evaluated as of `as_of − n days`: seen exactly as far into its life
//! as the current period is seen now, so a running month is compared with the month before at
//! the same point, not with a month that had weeks more to close its cases.

use std::collections::BTreeMap;

use chrono::Duration;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::indicators::{self, china_time, Indicators, Reader, ScoreWeights};
use crate::params::{Args, Period};
use gridclue_core::codes::StreetCode;

const DAY_MS: u64 = 86_400_000;

/// Targets per indicator (null: none). Rates are fractions; the score is on the score's scale.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Targets {
    pub on_time_rate: Option<f64>,
    pub closure_rate: Option<f64>,
    pub rework_rate: Option<f64>,
    pub postpone_rate: Option<f64>,
    pub duplicate_rate: Option<f64>,
    pub score: Option<f64>,
}

impl Default for Targets {
    fn default() -> Self {
        Self {
            on_time_rate: Some(0.9),
            closure_rate: Some(0.95),
            rework_rate: Some(0.05),
            postpone_rate: Some(0.1),
            duplicate_rate: None,
            score: Some(90.0),
        }
    }
}

/// How an indicator compares with its target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Better {
    Higher,
    Lower,
}

impl Targets {
    fn each(&self) -> [(&'static str, Option<f64>, Better); 6] {
        [
            ("on_time_rate", self.on_time_rate, Better::Higher),
            ("closure_rate", self.closure_rate, Better::Higher),
            ("rework_rate", self.rework_rate, Better::Lower),
            ("postpone_rate", self.postpone_rate, Better::Lower),
            ("duplicate_rate", self.duplicate_rate, Better::Lower),
            ("score", self.score, Better::Higher),
        ]
    }

    /// Rates in (0, 1), the score above 0 (a target that makes actual ÷ target meaningless is a
    /// configuration error).
    pub fn check(&self) -> Result<(), String> {
        for (name, target, _) in self.each() {
            let Some(t) = target else { continue };
            let ok = if name == "score" {
                t > 0.0 && t.is_finite()
            } else {
                t > 0.0 && t < 1.0
            };
            if !ok {
                return Err(format!(
                    "targets.{name} = {t}: a rate target lies strictly between 0 and 1, a score target above 0"
                ));
            }
        }
        Ok(())
    }

    /// actual ÷ target; where lower is better, (1 − actual) ÷ (1 − target): ≥ 1 exactly when the
    /// target is met in both cases, and finite at an actual of 0.
    fn vs(&self, row: &Indicators) -> BTreeMap<&'static str, Option<f64>> {
        self.each()
            .into_iter()
            .filter_map(|(name, target, better)| {
                let t = target?;
                let actual = value(row, name);
                Some((
                    name,
                    actual.map(|a| match better {
                        Better::Higher => a / t,
                        Better::Lower => (1.0 - a) / (1.0 - t),
                    }),
                ))
            })
            .collect()
    }
}

/// The rate fields (and the score) whose change is reported.
pub const CHANGED_FIELDS: [&str; 6] = [
    "closure_rate",
    "on_time_rate",
    "rework_rate",
    "postpone_rate",
    "duplicate_rate",
    "score",
];

/// Every field of an indicators row after `rank`, `key` and `name`, in answer order.
pub const INDICATOR_FIELDS: [&str; 20] = [
    "accepted",
    "due",
    "closed",
    "closed_on_time",
    "verified",
    "reworked",
    "postponed",
    "supervised",
    "overdue_open",
    "rated",
    "reports",
    "duplicates",
    "closure_rate",
    "on_time_rate",
    "rework_rate",
    "postpone_rate",
    "duplicate_rate",
    "mean_hours_to_close",
    "satisfaction",
    "score",
];

fn value(row: &Indicators, field: &str) -> Option<f64> {
    match field {
        "closure_rate" => row.closure_rate,
        "on_time_rate" => row.on_time_rate,
        "rework_rate" => row.rework_rate,
        "postpone_rate" => row.postpone_rate,
        "duplicate_rate" => row.duplicate_rate,
        "score" => row.score,
        _ => None,
    }
}

/// The query parameters, parsed: the indicators' parameters of the current period.
pub fn parse(args: &Args<'_>) -> Result<indicators::Params, ApiError> {
    let period = Period::parse(args, None)?;
    let by = match args.get("by") {
        None | Some("street") => indicators::By::Street,
        Some("department") => indicators::By::Department,
        Some(other) => {
            return Err(ApiError::invalid_parameter(
                "by",
                format!("{other:?} is not a ranking (street, department)"),
            ))
        }
    };
    let street = args
        .get("street")
        .map(|s| crate::params::street_code("street", s))
        .transpose()?;
    Ok(indicators::Params {
        from: period.from,
        to: period.to,
        as_of_ms: args
            .get("as_of")
            .map(|v| indicators::instant("as_of", v))
            .transpose()?,
        by,
        street,
    })
}

/// The two plans: the period asked for and the one before it.
pub fn plans(
    reader: &Reader,
    params: indicators::Params,
    now_ms: u64,
) -> Result<(indicators::Plan, indicators::Plan), ApiError> {
    let current = indicators::plan(reader, params, now_ms)?;
    let days = (current.params.to - current.params.from).num_days();
    let previous = indicators::Params {
        from: current.params.from - Duration::days(days),
        to: current.params.from,
        as_of_ms: Some(current.as_of_ms.saturating_sub(days as u64 * DAY_MS)),
        ..current.params.clone()
    };
    let previous = indicators::plan(reader, previous, now_ms)?;
    Ok((current, previous))
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RankingRow {
    #[serde(flatten)]
    pub current: Indicators,
    pub previous: Indicators,
    /// Current minus previous (`rank`: previous rank minus current rank, positive = up).
    pub change: BTreeMap<&'static str, Option<f64>>,
    pub vs_target: BTreeMap<&'static str, Option<f64>>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PreviousPeriod {
    pub from: String,
    pub to: String,
    pub as_of: String,
    pub as_of_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Rankings {
    pub from: String,
    pub to: String,
    pub as_of: String,
    pub as_of_ms: u64,
    pub previous: PreviousPeriod,
    pub by: indicators::By,
    pub street: Option<StreetCode>,
    pub targets: Targets,
    pub weights: ScoreWeights,
    pub rows: Vec<RankingRow>,
    pub total: RankingRow,
}

fn beside(current: Indicators, previous: Indicators, targets: &Targets) -> RankingRow {
    let mut change: BTreeMap<&'static str, Option<f64>> = CHANGED_FIELDS
        .iter()
        .map(|f| {
            let d = value(&current, f)
                .zip(value(&previous, f))
                .map(|(c, p)| c - p);
            (*f, d)
        })
        .collect();
    change.insert(
        "rank",
        current
            .rank
            .zip(previous.rank)
            .map(|(c, p)| f64::from(p) - f64::from(c)),
    );
    RankingRow {
        vs_target: targets.vs(&current),
        current,
        previous,
        change,
    }
}

/// Puts each group's previous indicators beside its current ones (a group absent from the
/// previous answer had nothing then: zero counts).
pub fn assemble(
    current: indicators::Answer,
    previous: indicators::Answer,
    previous_plan: &indicators::Plan,
    targets: &Targets,
) -> Rankings {
    let mut before: BTreeMap<String, Indicators> = previous
        .rows
        .into_iter()
        .map(|r| (r.key.clone(), r))
        .collect();
    let rows = current
        .rows
        .into_iter()
        .map(|row| {
            let prev = before.remove(&row.key).unwrap_or_else(|| {
                let zero = indicators::Counts {
                    key: row.key.clone(),
                    ..indicators::Counts::default()
                };
                Indicators::from_counts(&zero, row.name.clone(), &current.weights)
            });
            beside(row, prev, targets)
        })
        .collect();
    Rankings {
        from: current.from,
        to: current.to,
        as_of: current.as_of,
        as_of_ms: current.as_of_ms,
        previous: PreviousPeriod {
            from: previous.from,
            to: previous.to,
            as_of: china_time(previous_plan.as_of_ms),
            as_of_ms: previous_plan.as_of_ms,
        },
        by: current.by,
        street: current.street,
        targets: *targets,
        weights: current.weights,
        rows,
        total: beside(current.total, previous.total, targets),
    }
}

impl crate::csv::Export for Rankings {
    fn file_name(&self) -> String {
        format!(
            "gridclue-rankings-{}-{}_{}.csv",
            self.by.as_str(),
            self.from,
            self.to
        )
    }

    /// The indicators now, before and their change, then the ratio to each target set.
    fn columns(&self) -> Vec<String> {
        let mut c = crate::csv::columns(&["rank", "key", "name"]);
        c.extend(INDICATOR_FIELDS.iter().map(|f| (*f).to_owned()));
        c.push("previous.rank".into());
        c.extend(INDICATOR_FIELDS.iter().map(|f| format!("previous.{f}")));
        c.push("change.rank".into());
        c.extend(CHANGED_FIELDS.iter().map(|f| format!("change.{f}")));
        c.extend(
            self.targets
                .each()
                .iter()
                .filter(|(_, t, _)| t.is_some())
                .map(|(n, _, _)| format!("vs_target.{n}")),
        );
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(
        key: &str,
        due: u64,
        closed: u64,
        on_time: u64,
        verified: u64,
        reworked: u64,
    ) -> Indicators {
        let c = indicators::Counts {
            key: key.into(),
            accepted: due,
            due,
            closed,
            closed_on_time: on_time,
            verified,
            reworked,
            ..indicators::Counts::default()
        };
        Indicators::from_counts(&c, key.into(), &ScoreWeights::default())
    }

    #[test]
    fn targets_ratio_higher_and_lower_is_better() {
        let t = Targets::default();
        // on time 0.45 of 0.9 → 0.5; rework 0.1 with a 0.05 target → 0.9 / 0.95.
        let r = row("a", 20, 10, 9, 10, 1);
        let vs = t.vs(&r);
        assert!((vs["on_time_rate"].unwrap() - 0.5).abs() < 1e-12);
        assert!((vs["rework_rate"].unwrap() - 0.9 / 0.95).abs() < 1e-12);
        assert!(!vs.contains_key("duplicate_rate"));
        // No rework at all meets the target (≥ 1) and stays finite.
        let perfect = row("b", 2, 2, 2, 2, 0);
        assert!((t.vs(&perfect)["rework_rate"].unwrap() - 1.0 / 0.95).abs() < 1e-12);
        // Nothing due: null, not 0.
        assert_eq!(t.vs(&row("c", 0, 0, 0, 0, 0))["on_time_rate"], None);
        assert!(Targets {
            on_time_rate: Some(1.5),
            ..t
        }
        .check()
        .is_err());
        assert!(Targets {
            score: Some(0.0),
            ..t
        }
        .check()
        .is_err());
        assert!(t.check().is_ok());
    }

    #[test]
    fn change_is_current_minus_previous_and_rank_change_is_positive_upwards() {
        let mut now = row("a", 4, 4, 3, 0, 0);
        now.rank = Some(1);
        let mut before = row("a", 4, 2, 1, 0, 0);
        before.rank = Some(3);
        let r = beside(now, before, &Targets::default());
        assert_eq!(r.change["rank"], Some(2.0));
        assert_eq!(r.change["on_time_rate"], Some(0.5));
        assert_eq!(r.change["rework_rate"], None);
    }
}
