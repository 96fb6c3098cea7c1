//! Open and overdue cases per street as Prometheus gauges, for alerts and the operations
//! dashboard. They are set from the live numbers' reading ([`crate::live`]), each time its loop
//! recomputes them (the facts changed, or a deadline passed), so a scrape never runs a query
//! and no second loop polls ClickHouse for them.
//!
//! A case (docs/ARCHITECTURE.md §5) is open while it is in the loop (not closed, rejected,
//! merged as a duplicate or withdrawn); it is overdue when open past its deadline (after
//! approved postponements), the same reading as the indicators' `overdue_open`.

use std::collections::BTreeMap;

use prometheus::IntGaugeVec;

use crate::metrics::DashboardMetrics;

/// One street's open and overdue cases, as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreetCases {
    pub street_code: String,
    pub open: u64,
    pub overdue: u64,
}

/// Open and overdue cases of one street.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaseCounts {
    pub open: u64,
    pub overdue: u64,
}

/// Every street of the map with its counts (0 for a street without open cases, so its series
/// never disappear), and every other street read but the empty code.
pub fn by_street(
    streets: impl IntoIterator<Item = String>,
    rows: impl IntoIterator<Item = StreetCases>,
) -> BTreeMap<String, CaseCounts> {
    let mut all: BTreeMap<String, CaseCounts> = streets
        .into_iter()
        .map(|s| (s, CaseCounts::default()))
        .collect();
    for r in rows {
        if r.street_code.is_empty() {
            continue;
        }
        let counts = CaseCounts {
            open: r.open,
            overdue: r.overdue,
        };
        all.insert(r.street_code, counts);
    }
    all
}

fn set_one(gauge: &IntGaugeVec, street: &str, value: u64) {
    gauge
        .with_label_values(&[street])
        .set(i64::try_from(value).unwrap_or(i64::MAX));
}

/// Sets the gauges to `cases`.
pub fn set(metrics: &DashboardMetrics, cases: &BTreeMap<String, CaseCounts>) {
    for (street, counts) in cases {
        set_one(&metrics.open_cases, street, counts.open);
        set_one(&metrics.overdue_cases, street, counts.overdue);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_street_has_counts_and_zero_is_explicit() {
        let rows = vec![StreetCases {
            street_code: "b".into(),
            open: 5,
            overdue: 2,
        }];
        let all = by_street(["a".to_owned(), "b".to_owned()], rows);
        assert_eq!(all["a"], CaseCounts::default());
        assert_eq!(
            all["b"],
            CaseCounts {
                open: 5,
                overdue: 2
            }
        );
    }

    #[test]
    fn clues_without_a_street_get_no_series() {
        let rows = vec![StreetCases {
            street_code: String::new(),
            open: 1,
            overdue: 0,
        }];
        assert!(by_street(["a".to_owned()], rows).keys().eq(["a"]));
    }

    #[test]
    fn the_gauges_show_the_counts() {
        let metrics = DashboardMetrics::new();
        let counts = CaseCounts {
            open: 3,
            overdue: 1,
        };
        set(&metrics, &BTreeMap::from([("a".to_owned(), counts)]));
        let text = gridclue_core::telemetry::render(&metrics.registry);
        assert!(
            text.contains("gridclue_dashboard_open_cases{street=\"a\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("gridclue_dashboard_overdue_cases{street=\"a\"} 1"),
            "{text}"
        );
    }
}
