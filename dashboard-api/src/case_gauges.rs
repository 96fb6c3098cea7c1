//! Open and overdue cases per street as Prometheus gauges, for alerts and the operations
//! dashboard. They are set from the live numbers' reading ([`crate::live`]), each time its loop
//! recomputes them (the facts changed, or a deadline passed), so a scrape never runs a query
//! and no second loop polls ClickHouse for them.
//!
//! A case (docs/ARCHITECTURE.md §5) is open while it is in the loop (not closed, rejected,
//! merged as a duplicate or withdrawn); it is overdue when open past its deadline (after
//! approved postponements), the same reading as the indicators' `overdue_open`.

use std::collections::BTreeMap;

use gridclue_core::codes::StreetCode;
use prometheus::IntGaugeVec;

use crate::metrics::DashboardMetrics;

/// One street's open and overdue cases, as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreetCases {
    /// `None` for clues without a street (outside the district), which get no series.
    pub street_code: Option<StreetCode>,
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
/// never disappear), and every other street read.
pub fn by_street(
    streets: impl IntoIterator<Item = StreetCode>,
    rows: impl IntoIterator<Item = StreetCases>,
) -> BTreeMap<StreetCode, CaseCounts> {
    let mut all: BTreeMap<StreetCode, CaseCounts> = streets
        .into_iter()
        .map(|s| (s, CaseCounts::default()))
        .collect();
    for r in rows {
        if let Some(street) = r.street_code {
            let counts = CaseCounts {
                open: r.open,
                overdue: r.overdue,
            };
            all.insert(street, counts);
        }
    }
    all
}

fn set_one(gauge: &IntGaugeVec, street: &StreetCode, value: u64) {
    gauge
        .with_label_values(&[street.as_str()])
        .set(i64::try_from(value).unwrap_or(i64::MAX));
}

/// Sets the gauges to `cases`.
pub fn set(metrics: &DashboardMetrics, cases: &BTreeMap<StreetCode, CaseCounts>) {
    for (street, counts) in cases {
        set_one(&metrics.open_cases, street, counts.open);
        set_one(&metrics.overdue_cases, street, counts.overdue);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "310199001";
    const B: &str = "310199002";

    fn street(code: &str) -> StreetCode {
        StreetCode::parse(code).unwrap()
    }

    #[test]
    fn every_street_has_counts_and_zero_is_explicit() {
        let rows = vec![StreetCases {
            street_code: Some(street(B)),
            open: 5,
            overdue: 2,
        }];
        let all = by_street([street(A), street(B)], rows);
        assert_eq!(all[&street(A)], CaseCounts::default());
        assert_eq!(
            all[&street(B)],
            CaseCounts {
                open: 5,
                overdue: 2
            }
        );
    }

    #[test]
    fn clues_without_a_street_get_no_series() {
        let rows = vec![StreetCases {
            street_code: None,
            open: 1,
            overdue: 0,
        }];
        assert!(by_street([street(A)], rows).keys().eq([&street(A)]));
    }

    #[test]
    fn the_gauges_show_the_counts() {
        let metrics = DashboardMetrics::new();
        let counts = CaseCounts {
            open: 3,
            overdue: 1,
        };
        set(&metrics, &BTreeMap::from([(street(A), counts)]));
        let text = gridclue_core::telemetry::render(&metrics.registry);
        assert!(
            text.contains("gridclue_dashboard_open_cases{street=\"310199001\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("gridclue_dashboard_overdue_cases{street=\"310199001\"} 1"),
            "{text}"
        );
    }
}
