//! Open and overdue cases per street as Prometheus gauges, for alerts and the operations
//! dashboard. One loop refreshes them every `metrics_interval_ms` from the latest state of
//! every clue (`clues FINAL`), so a scrape never runs a query.
//!
//! A case (docs/ARCHITECTURE.md §5) is open while it is in the loop (not closed, rejected,
//! merged as a duplicate or withdrawn); it is overdue when open past its deadline (after
//! approved postponements), the same reading as the indicators' `overdue_open`.

use std::collections::BTreeMap;
use std::time::Duration;

use prometheus::IntGaugeVec;
use serde::Deserialize;

use crate::AppState;

/// Open and overdue cases by street, as of `?` (epoch ms).
pub const CASES_BY_STREET_SQL: &str = "\
SELECT street_code, \
       toUInt64(count()) AS open, \
       toUInt64(countIf(deadline_ms > 0 AND deadline_ms < ?)) AS overdue \
FROM clues FINAL \
WHERE placement = 'inside' AND is_case = 1 AND street_code != '' \
  AND status NOT IN ('closed', 'rejected', 'duplicate', 'withdrawn') \
GROUP BY street_code";

#[derive(Debug, Deserialize, clickhouse::Row)]
pub struct StreetCases {
    pub street_code: String,
    pub open: u64,
    pub overdue: u64,
}

/// Every street of the map with its counts (0 for a street without open cases, so its series
/// never disappear).
pub fn by_street(
    streets: impl IntoIterator<Item = String>,
    rows: Vec<StreetCases>,
) -> BTreeMap<String, (u64, u64)> {
    let mut all: BTreeMap<String, (u64, u64)> = streets.into_iter().map(|s| (s, (0, 0))).collect();
    for r in rows {
        all.insert(r.street_code, (r.open, r.overdue));
    }
    all
}

fn set(gauge: &IntGaugeVec, street: &str, value: u64) {
    gauge
        .with_label_values(&[street])
        .set(i64::try_from(value).unwrap_or(i64::MAX));
}

/// Reads the counts once and sets the gauges.
pub async fn refresh(state: &AppState) -> Result<(), clickhouse::error::Error> {
    let started = std::time::Instant::now();
    let rows = state
        .read
        .query(CASES_BY_STREET_SQL)
        .bind(gridclue_core::wire::now_ms())
        .fetch_all::<StreetCases>()
        .await?;
    state.observe("case_gauges", started);
    let streets = state.reference.streets.iter().map(|s| s.code.clone());
    for (street, (open, overdue)) in by_street(streets, rows) {
        set(&state.metrics.open_cases, &street, open);
        set(&state.metrics.overdue_cases, &street, overdue);
    }
    Ok(())
}

/// Refreshes the gauges every `interval` until the task is aborted.
pub async fn refresh_loop(state: AppState, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if let Err(e) = refresh(&state).await {
            state.metrics.case_gauge_errors.inc();
            tracing::warn!(error = %e, "cannot refresh the case gauges");
        }
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
        assert_eq!(all["a"], (0, 0));
        assert_eq!(all["b"], (5, 2));
    }
}
