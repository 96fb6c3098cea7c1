//! Checking the aggregate tables against `clue_events`, and rebuilding them from it
//! (`gridclue-sink check-aggregates`, `gridclue-sink rebuild-aggregates`).
//!
//! `clue_events` is the source of truth: one row per fact, deduplicated by `(clue_id, seq)` under
//! `FINAL`. The materialized views keep `clue_counts` and `fact_flow_hourly` in step with it as
//! rows arrive. ClickHouse 18.16 writes a table and its views one after the other, so a server
//! crash between the two can leave an aggregate short; the check finds that, the rebuild
//! recomputes both aggregates with the views' own statements (read from the migrations). Rebuild with the sinks stopped:
//! rows a sink writes during the rebuild could be counted twice.
//!
//! The rebuild also recomputes the governance indicators' delta projection (`indicator_deltas`,
//! `indicator_days`, `indicator_cohorts`) with the backfill of migration 0011, which derives every fact's delta rows
//! from the deduplicated facts: the repair after rows were written behind the sink's back (a
//! fact stored twice adds its deltas twice until then).
//!
//! The running status counts (`status_counts`, `status_deadlines`, migration 0013) telescope to
//! one row per clue for its latest state: the check compares them with the clues' latest states
//! (`clues FINAL`), the rebuild refills them from those with the migration's backfill.
//!
//! And the open cases the dashboard's lists read (`open_cases`, migration 0014): the check
//! compares the states its rows sum to with the latest state of every open clue in
//! `dashboard_clues`; the rebuild empties it and fills it again from those states with the
//! migration's backfill.

use std::collections::BTreeMap;

use clickhouse::Client;
use serde::Deserialize;

use clickhouse::error::Error as ChError;

/// The grain the check compares at: (day, street, category) for reports and cases, (hour, fact
/// type) for the fact flow.
const COUNTS_FROM_AGGREGATE: &str = "SELECT toString(day) AS k1, street_code AS k2, \
     category AS k3, sum(report_count) AS reports, sum(case_count) AS cases \
     FROM clue_counts GROUP BY day, street_code, category";
const COUNTS_FROM_EVENTS: &str = "SELECT toString(toDate(toDateTime(intDiv(reported_at_ms, \
     1000), 'UTC'))) AS k1, street_code AS k2, category AS k3, \
     sum(toInt64(report_delta)) AS reports, sum(toInt64(case_delta)) AS cases \
     FROM clue_events FINAL WHERE report_delta != 0 OR case_delta != 0 GROUP BY k1, k2, k3";
const FLOW_FROM_AGGREGATE: &str = "SELECT toString(hour) AS k1, fact_type AS k2, '' AS k3, \
     toInt64(sum(facts)) AS reports, toInt64(0) AS cases FROM fact_flow_hourly \
     GROUP BY hour, fact_type";
const FLOW_FROM_EVENTS: &str = "SELECT toString(toStartOfHour(toDateTime(intDiv(occurred_at_ms, \
     1000), 'UTC'))) AS k1, fact_type AS k2, '' AS k3, toInt64(count()) AS reports, \
     toInt64(0) AS cases FROM clue_events FINAL GROUP BY k1, k2";

/// The grain the status counts are compared at: (grain and report day, street, status and
/// whether a case), clues and the open ones with a deadline; and the same of the open clues by
/// deadline (grain 'deadline').
const STATUS_FROM_AGGREGATE: &str = "SELECT concat(grain, ' ', toString(cohort_day)) AS k1, \
     street_code AS k2, concat(status, ' ', toString(is_case)) AS k3, sum(clues) AS reports, \
     sum(dated) AS cases FROM status_counts GROUP BY k1, k2, k3 \
     UNION ALL SELECT concat('deadline ', toString(cohort_day)) AS k1, street_code AS k2, \
     concat(status, ' ', toString(is_case)) AS k3, sum(clues) AS reports, toInt64(0) AS cases \
     FROM status_deadlines GROUP BY k1, k2, k3";
/// The trend's days compared at (grain and China day, street, fact kind): reports and
/// acceptances, closures and missed deadlines.
const TREND_FROM_AGGREGATE: &str = "SELECT concat(grain, ' ', toString(day)) AS k1, \
     street_code AS k2, 'reports accepted' AS k3, sum(reports) AS reports, \
     sum(accepted) AS cases FROM trend_days GROUP BY k1, k2 \
     UNION ALL SELECT concat(grain, ' ', toString(day)) AS k1, street_code AS k2, \
     'closed overdue' AS k3, sum(closed) AS reports, sum(overdue) AS cases \
     FROM trend_days GROUP BY k1, k2";
const TREND_FROM_EVENTS: &str = "SELECT concat(arrayJoin(['street', 'community', 'grid']), ' ', \
     toString(intDiv(occurred_at_ms + 28800000, 86400000))) AS k1, street_code AS k2, \
     arrayJoin(['reports accepted', 'closed overdue']) AS k3, \
     toInt64(if(k3 = 'reports accepted', countIf(fact_type = 'reported'), \
     countIf(fact_type = 'verified'))) AS reports, \
     toInt64(if(k3 = 'reports accepted', countIf(fact_type = 'accepted'), \
     countIf(fact_type = 'overdue'))) AS cases \
     FROM (SELECT occurred_at_ms, street_code, fact_type, inside FROM clue_events FINAL) \
     WHERE inside = 1 GROUP BY k1, k2, k3";
const STATUS_FROM_STATES: &str = "SELECT concat((arrayJoin([('street', 0), ('group', 0), \
     ('community', 0), ('grid', 0), ('street_month', 1), ('group_month', 1), \
     ('community_month', 1), ('place', 0), ('place_month', 1)]) AS grain).1, ' ', \
     toString(if(grain.2 = 1, \
     toUInt32(toStartOfMonth(toDate(toDateTime(intDiv(reported_at_ms, 1000) + 28800, 'UTC')))), \
     toUInt32(intDiv(reported_at_ms + 28800000, 86400000))))) AS k1, \
     street_code AS k2, concat(status, ' ', toString(is_case)) AS k3, toInt64(count()) AS reports, \
     toInt64(countIf(is_open AND deadline_ms > 0)) AS cases FROM (SELECT reported_at_ms, \
     street_code, status, is_case, deadline_ms, placement, status IN ('reported', 'accepted', \
     'dispatched', 'in_progress', 'handled') AS is_open FROM clues FINAL) \
     WHERE placement = 'inside' GROUP BY k1, k2, k3 \
     UNION ALL SELECT concat('deadline ', toString(intDiv(reported_at_ms + 28800000, 86400000))) \
     AS k1, street_code AS k2, concat(status, ' ', toString(is_case)) AS k3, \
     toInt64(count()) AS reports, toInt64(0) AS cases FROM clues FINAL \
     WHERE placement = 'inside' AND status IN ('reported', 'accepted', 'dispatched', \
     'in_progress', 'handled') AND deadline_ms > 0 GROUP BY k1, k2, k3";

/// The aggregates the rebuild recomputes with their materialized views' own statements.
const VIEW_TARGETS: [&str; 2] = ["clue_counts", "fact_flow_hourly"];

/// The `SELECT` of the view that writes `target`, from the latest migration statement creating
/// it: the view, its rebuild and its repair after a crash (`view_repair`) are one definition,
/// so they cannot drift. It reads `clue_events` once (the inserted block, for the view).
pub(crate) fn view_select(target: &str) -> String {
    let head = format!(" TO {target} AS");
    let view = crate::migrations::MIGRATIONS
        .iter()
        .flat_map(|m| m.statements())
        .rfind(|s| s.starts_with("CREATE MATERIALIZED VIEW") && s.contains(&head))
        .unwrap_or_else(|| panic!("no migration creates the view of {target}"));
    let select = &view[view.find(&head).expect("found above") + head.len()..];
    assert_eq!(
        select.matches("FROM clue_events").count(),
        1,
        "the view of {target} reads clue_events once"
    );
    select.trim().to_owned()
}

/// `INSERT INTO target SELECT …` over the deduplicated facts: the view's statement reading
/// every stored fact once (`FINAL`) instead of an inserted block.
fn view_rebuild(target: &str) -> String {
    let select = view_select(target).replacen("FROM clue_events", "FROM clue_events FINAL", 1);
    format!("INSERT INTO {target} {select}")
}

/// Each aggregate emptied, then refilled by its view's statement over the facts.
fn aggregate_rebuild() -> Vec<String> {
    VIEW_TARGETS
        .iter()
        .flat_map(|t| [format!("TRUNCATE TABLE {t}"), view_rebuild(t)])
        .collect()
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct Group {
    k1: String,
    k2: String,
    k3: String,
    reports: i64,
    cases: i64,
}

type Groups = BTreeMap<(String, String, String), (i64, i64)>;

/// How the aggregates compare with the facts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AggregateCheck {
    /// Reports and cases according to the facts, and according to `clue_counts`.
    pub facts_reports: i64,
    pub facts_cases: i64,
    pub counts_reports: i64,
    pub counts_cases: i64,
    /// Facts, and what `fact_flow_hourly` holds.
    pub facts: i64,
    pub flow_facts: i64,
    /// (day, street, category) and (hour, fact type) groups whose numbers differ.
    pub counts_groups_off: usize,
    pub flow_groups_off: usize,
    /// Clues inside the district according to their latest states, and according to
    /// `status_counts` (its 'street' grain).
    pub states_clues: i64,
    pub status_clues: i64,
    /// (grain, report day, street, status) groups of the running status counts, and of the
    /// open clues by deadline, whose numbers differ from the latest states'.
    pub status_groups_off: usize,
    /// (grain, China day, street) groups of `trend_days` whose counts differ from the facts'.
    pub trend_groups_off: usize,
    /// Open clues inside the district (their latest states in `dashboard_clues`); of those,
    /// the ones whose state `open_cases` does not hold (a list could miss them); and the
    /// states `open_cases` holds that are no open clue's latest (harmless to the lists, which
    /// read each candidate's latest state, but not what the sink writes).
    pub open_clues: u64,
    pub open_cases_missing: u64,
    pub open_cases_extra: u64,
}

impl AggregateCheck {
    pub fn is_exact(&self) -> bool {
        self.counts_groups_off == 0
            && self.flow_groups_off == 0
            && self.status_groups_off == 0
            && self.trend_groups_off == 0
            && self.open_cases_missing == 0
            && self.open_cases_extra == 0
    }
}

/// Every listed column of a state, in `open_cases` and in `dashboard_clues`.
const OPEN_CASE_COLUMNS: &str = "clue_id, version, reported_at_ms, street_code, \
     community_code, grid_code, category, department_now, status, accepted_at_ms, deadline_ms, \
     yellow_at_ms, updated_at_ms";

/// The open clues' latest states against the states whose rows in `open_cases` do not cancel
/// (sum of signs above zero), matched on every column.
fn open_cases_check_sql() -> String {
    let open = "('reported', 'accepted', 'dispatched', 'in_progress', 'handled')";
    format!(
        "SELECT toUInt64(countIf(in_states = 1)) AS open_clues, \
                toUInt64(countIf(in_states = 1 AND in_table = 0)) AS missing, \
                toUInt64(countIf(in_states = 0 AND in_table = 1)) AS extra \
         FROM (SELECT max(s) AS in_states, max(t) AS in_table \
               FROM (SELECT {OPEN_CASE_COLUMNS}, toUInt8(1) AS s, toUInt8(0) AS t \
                     FROM dashboard_clues FINAL WHERE status IN {open} \
                     UNION ALL \
                     SELECT {OPEN_CASE_COLUMNS}, toUInt8(0) AS s, toUInt8(1) AS t \
                     FROM open_cases GROUP BY {OPEN_CASE_COLUMNS} HAVING sum(sign) > 0) \
               GROUP BY {OPEN_CASE_COLUMNS})"
    )
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct OpenCasesCheck {
    open_clues: u64,
    missing: u64,
    extra: u64,
}

async fn groups(client: &Client, sql: &str) -> Result<Groups, ChError> {
    let rows = client.query(sql).fetch_all::<Group>().await?;
    let mut out = Groups::new();
    for g in rows {
        // Groups whose numbers sum to nothing are absent on the other side; drop them here too.
        if g.reports != 0 || g.cases != 0 {
            out.insert((g.k1, g.k2, g.k3), (g.reports, g.cases));
        }
    }
    Ok(out)
}

/// How many groups differ between the two sides.
fn differing(a: &Groups, b: &Groups) -> usize {
    let only_or_different = a.iter().filter(|(k, v)| b.get(*k) != Some(*v)).count();
    only_or_different + b.keys().filter(|k| !a.contains_key(*k)).count()
}

fn totals(g: &Groups) -> (i64, i64) {
    g.values().fold((0, 0), |(r, c), (gr, gc)| (r + gr, c + gc))
}

/// Compares both aggregates with the facts, group by group.
pub async fn check(client: &Client) -> Result<AggregateCheck, ChError> {
    let (counts, counts_truth) = (
        groups(client, COUNTS_FROM_AGGREGATE).await?,
        groups(client, COUNTS_FROM_EVENTS).await?,
    );
    let (flow, flow_truth) = (
        groups(client, FLOW_FROM_AGGREGATE).await?,
        groups(client, FLOW_FROM_EVENTS).await?,
    );
    let (status, status_truth) = (
        groups(client, STATUS_FROM_AGGREGATE).await?,
        groups(client, STATUS_FROM_STATES).await?,
    );
    let (trend, trend_truth) = (
        groups(client, TREND_FROM_AGGREGATE).await?,
        groups(client, TREND_FROM_EVENTS).await?,
    );
    let street_clues = |g: &Groups| {
        g.iter()
            .filter(|((k1, _, _), _)| k1.starts_with("street "))
            .map(|(_, (clues, _))| clues)
            .sum::<i64>()
    };
    let open = client
        .query(&open_cases_check_sql())
        .fetch_one::<OpenCasesCheck>()
        .await?;
    let (facts_reports, facts_cases) = totals(&counts_truth);
    let (counts_reports, counts_cases) = totals(&counts);
    Ok(AggregateCheck {
        facts_reports,
        facts_cases,
        counts_reports,
        counts_cases,
        facts: totals(&flow_truth).0,
        flow_facts: totals(&flow).0,
        counts_groups_off: differing(&counts, &counts_truth),
        flow_groups_off: differing(&flow, &flow_truth),
        states_clues: street_clues(&status_truth),
        status_clues: street_clues(&status),
        status_groups_off: differing(&status, &status_truth),
        trend_groups_off: differing(&trend, &trend_truth),
        open_clues: open.open_clues,
        open_cases_missing: open.missing,
        open_cases_extra: open.extra,
    })
}

/// The indicators' delta projection recomputed from the facts: emptied, then the backfill
/// statements of the migration that created it (they fill empty tables only).
fn indicator_rebuild() -> Vec<String> {
    let backfill = crate::migrations::MIGRATIONS
        .iter()
        .filter(|m| m.name == "indicator_deltas")
        .flat_map(|m| m.statements())
        .filter(|s| s.trim_start().starts_with("INSERT"));
    [
        "TRUNCATE TABLE indicator_deltas".to_owned(),
        "TRUNCATE TABLE indicator_days".to_owned(),
        "TRUNCATE TABLE indicator_cohorts".to_owned(),
    ]
    .into_iter()
    .chain(backfill)
    .collect()
}

/// The running status counts recomputed from the clues' latest states, and the trend's days
/// from the facts: emptied, then the backfill statements of the migration that created them
/// (they fill empty tables only).
fn status_rebuild() -> Vec<String> {
    let backfill = crate::migrations::MIGRATIONS
        .iter()
        .filter(|m| m.name == "status_counts")
        .flat_map(|m| m.statements())
        .filter(|s| s.trim_start().starts_with("INSERT"));
    [
        "TRUNCATE TABLE status_counts".to_owned(),
        "TRUNCATE TABLE status_deadlines".to_owned(),
        "TRUNCATE TABLE trend_days".to_owned(),
    ]
    .into_iter()
    .chain(backfill)
    .collect()
}

/// The open cases recomputed from the latest states: emptied, then the backfill of the
/// migration that created the table (it fills an empty table only).
fn open_cases_rebuild() -> Vec<String> {
    let backfill = crate::migrations::MIGRATIONS
        .iter()
        .filter(|m| m.name == "open_cases")
        .flat_map(|m| m.statements())
        .filter(|s| s.trim_start().starts_with("INSERT"));
    std::iter::once("TRUNCATE TABLE open_cases".to_owned())
        .chain(backfill)
        .collect()
}

/// Recomputes the aggregates, the indicators' delta projection, the running status counts
/// and the open cases (sinks stopped), then checks them.
pub async fn rebuild(client: &Client) -> Result<AggregateCheck, ChError> {
    let steps: Vec<String> = aggregate_rebuild()
        .into_iter()
        .chain(indicator_rebuild())
        .chain(status_rebuild())
        .chain(open_cases_rebuild())
        .collect();
    for (i, sql) in steps.iter().enumerate() {
        tracing::info!(step = i + 1, of = steps.len(), "rebuilding aggregates");
        client.query(sql).execute().await?;
    }
    check(client).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(rows: &[(&str, i64, i64)]) -> Groups {
        rows.iter()
            .map(|(k, r, c)| (((*k).into(), String::new(), String::new()), (*r, *c)))
            .collect()
    }

    #[test]
    fn the_indicator_rebuild_empties_both_tables_then_backfills_both() {
        let steps = indicator_rebuild();
        assert_eq!(steps.len(), 6, "{steps:#?}");
        assert!(steps[0].ends_with("indicator_deltas") && steps[1].ends_with("indicator_days"));
        assert!(steps[2].ends_with("indicator_cohorts"));
        assert!(steps[3].starts_with("INSERT INTO indicator_deltas"));
        assert!(steps[4].starts_with("INSERT INTO indicator_days"));
        assert!(steps[5].starts_with("INSERT INTO indicator_cohorts"));
    }

    #[test]
    fn the_status_rebuild_empties_the_tables_of_0013_then_backfills_them() {
        let steps = status_rebuild();
        assert_eq!(steps.len(), 6, "{steps:#?}");
        assert_eq!(steps[0], "TRUNCATE TABLE status_counts");
        assert_eq!(steps[1], "TRUNCATE TABLE status_deadlines");
        assert_eq!(steps[2], "TRUNCATE TABLE trend_days");
        assert!(steps[3].starts_with("INSERT INTO status_counts"));
        assert!(steps[4].starts_with("INSERT INTO status_deadlines"));
        for insert in &steps[3..5] {
            assert_eq!(insert.matches("FROM clues FINAL").count(), 1, "{insert}");
        }
        assert!(steps[5].starts_with("INSERT INTO trend_days"));
        assert_eq!(steps[5].matches("FROM clue_events FINAL").count(), 1);
    }

    #[test]
    fn the_open_cases_rebuild_empties_the_table_then_backfills_it_from_the_states() {
        let steps = open_cases_rebuild();
        assert_eq!(steps.len(), 2, "{steps:#?}");
        assert_eq!(steps[0], "TRUNCATE TABLE open_cases");
        assert!(
            steps[1].starts_with("INSERT INTO open_cases"),
            "{}",
            steps[1]
        );
        assert!(
            steps[1].contains("FROM dashboard_clues FINAL"),
            "{}",
            steps[1]
        );
    }

    #[test]
    fn the_aggregate_rebuild_runs_each_views_statement_over_the_stored_facts() {
        let steps = aggregate_rebuild();
        assert_eq!(steps.len(), 4, "{steps:#?}");
        assert_eq!(steps[0], "TRUNCATE TABLE clue_counts");
        assert!(steps[1].starts_with("INSERT INTO clue_counts SELECT"));
        assert!(steps[1].contains("routed_department AS department"));
        assert!(steps[1].ends_with("WHERE report_delta != 0 OR case_delta != 0"));
        assert_eq!(steps[2], "TRUNCATE TABLE fact_flow_hourly");
        assert!(steps[3].starts_with("INSERT INTO fact_flow_hourly SELECT"));
        assert!(steps[3].ends_with("FROM clue_events FINAL"));
        for insert in [&steps[1], &steps[3]] {
            assert_eq!(
                insert.matches("FROM clue_events FINAL").count(),
                1,
                "{insert}"
            );
        }
    }

    #[test]
    fn groups_differ_by_value_and_by_presence() {
        let truth = g(&[("a", 2, 1), ("b", 1, 1)]);
        assert_eq!(differing(&truth, &truth), 0);
        assert_eq!(differing(&g(&[("a", 2, 1)]), &truth), 1);
        assert_eq!(differing(&g(&[("a", 2, 0), ("b", 1, 1)]), &truth), 1);
        assert_eq!(
            differing(&g(&[("a", 2, 1), ("b", 1, 1), ("c", 1, 0)]), &truth),
            1
        );
        assert_eq!(totals(&truth), (3, 2));
    }
}
