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
//! `indicator_days`, `indicator_cohorts`) from the deduplicated facts with
//! `sql/indicator_rebuild.sql` (migration 0011's backfill with each clue's place taken from its
//! report, run per range of clue ids so that it fits the server's memory): the repair after rows
//! were written behind the sink's back (a fact stored twice adds its deltas twice until then).
//! A step that fails stops the rebuild with an error naming the step and the tables it left
//! incomplete (emptied, partly filled) until the rebuild runs again; a range over the memory
//! limit starts the projection over in smaller ranges.
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
    /// Every view's target against the view's statement over every stored fact: the groups
    /// off in each (the indicators' tables among them).
    pub views_groups_off: Vec<(&'static str, usize)>,
}

impl AggregateCheck {
    pub fn is_exact(&self) -> bool {
        self.counts_groups_off == 0
            && self.flow_groups_off == 0
            && self.status_groups_off == 0
            && self.trend_groups_off == 0
            && self.open_cases_missing == 0
            && self.open_cases_extra == 0
            && self.views_groups_off.iter().all(|(_, off)| *off == 0)
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
        views_groups_off: crate::view_repair::groups_off(client).await?,
    })
}

/// The indicators' rebuild (see the file): the delta rows of the clues of one range of ids,
/// then the two summed tables from the delta rows.
const INDICATOR_REBUILD: &str = include_str!("../sql/indicator_rebuild.sql");
/// The condition of the file's first statement that selects every clue.
const EVERY_CLUE: &str = "clue_id >= toUUID('00000000-0000-0000-0000-000000000000')";
/// The facts one statement of the indicators' rebuild groups at most, about: the statement
/// holds some 6 KB per fact (measured on 18.16: 571 MiB for 100 000 facts), so a part stays
/// far under the server's memory limit (4 GB for a query here) and beside other queries.
pub const FACTS_PER_PART: u64 = 100_000;
/// How many times a part that hit the memory limit is tried again, each time with four times
/// as many parts (from the start: the tables are emptied again).
const SPLIT_RETRIES: u32 = 2;

/// The tables the indicators' rebuild empties and fills.
const INDICATOR_TABLES: [&str; 3] = ["indicator_deltas", "indicator_days", "indicator_cohorts"];

/// One statement of the rebuild: what it does (for the progress log and errors), the SQL and
/// the values bound to its `?`s, and the tables left incomplete when it fails.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Step {
    what: String,
    sql: String,
    binds: Vec<String>,
    incomplete: &'static [&'static str],
}

impl Step {
    fn new(
        what: impl Into<String>,
        sql: impl Into<String>,
        incomplete: &'static [&'static str],
    ) -> Self {
        Step {
            what: what.into(),
            sql: sql.into(),
            binds: Vec::new(),
            incomplete,
        }
    }
}

/// The statements of [`INDICATOR_REBUILD`]: the delta rows' (over every clue) and the two sums'.
fn indicator_statements() -> [String; 3] {
    let statements = crate::migrations::split_statements(INDICATOR_REBUILD);
    let [deltas, days, cohorts]: [String; 3] = statements
        .try_into()
        .expect("the indicators' rebuild is three statements");
    assert_eq!(
        deltas.matches(EVERY_CLUE).count(),
        1,
        "the delta rows' statement selects every clue once"
    );
    [deltas, days, cohorts]
}

/// The indicators' delta projection recomputed from the facts: emptied, then the delta rows of
/// the clues of each range between consecutive `boundaries` (stored clue ids in the server's
/// order; none: every clue at once), then the two summed tables from them.
fn indicator_rebuild(boundaries: &[String]) -> Vec<Step> {
    let [deltas, days, cohorts] = indicator_statements();
    let parts = boundaries.len() + 1;
    let mut steps: Vec<Step> = INDICATOR_TABLES
        .iter()
        .map(|t| {
            Step::new(
                format!("empty {t}"),
                format!("TRUNCATE TABLE {t}"),
                &INDICATOR_TABLES,
            )
        })
        .collect();
    for part in 0..parts {
        let (lower, upper) = (
            part.checked_sub(1).map(|i| &boundaries[i]),
            boundaries.get(part),
        );
        let (range, binds) = match (lower, upper) {
            (None, None) => (EVERY_CLUE.to_owned(), vec![]),
            (None, Some(u)) => ("clue_id < toUUID(?)".to_owned(), vec![u.clone()]),
            (Some(l), None) => ("clue_id >= toUUID(?)".to_owned(), vec![l.clone()]),
            (Some(l), Some(u)) => (
                "clue_id >= toUUID(?) AND clue_id < toUUID(?)".to_owned(),
                vec![l.clone(), u.clone()],
            ),
        };
        steps.push(Step {
            binds,
            ..Step::new(
                format!(
                    "indicator_deltas from the facts, clue range {} of {parts}",
                    part + 1
                ),
                deltas.replacen(EVERY_CLUE, &range, 1),
                &INDICATOR_TABLES,
            )
        });
    }
    steps.push(Step::new(
        "indicator_days from indicator_deltas",
        days,
        &INDICATOR_TABLES,
    ));
    steps.push(Step::new(
        "indicator_cohorts from indicator_deltas",
        cohorts,
        &INDICATOR_TABLES,
    ));
    steps
}

/// `parts - 1` clue ids that cut the stored clues into `parts` ranges of about as many clues, in
/// the server's order of ids (18.16 orders a UUID by its last 8 bytes first, so the cuts come
/// from the stored ids, never from the text): every 16th clue by hash, sorted, then evenly
/// picked. Fewer when there are fewer clues.
async fn clue_boundaries(client: &Client, parts: u64) -> Result<Vec<String>, ChError> {
    if parts <= 1 {
        return Ok(Vec::new());
    }
    let sample: Vec<String> = client
        .query(
            "SELECT toString(clue_id) FROM clue_events \
             WHERE cityHash64(toString(clue_id)) % 16 = 0 GROUP BY clue_id ORDER BY clue_id",
        )
        .fetch_all()
        .await?;
    Ok(evenly_picked(&sample, parts))
}

/// `parts - 1` values cutting `sorted` into `parts` runs of about equal length (distinct ones).
fn evenly_picked(sorted: &[String], parts: u64) -> Vec<String> {
    let n = sorted.len() as u64;
    let mut cuts: Vec<String> = (1..parts)
        .map(|i| i * n / parts)
        .filter(|&at| at > 0 && at < n)
        .map(|at| sorted[at as usize].clone())
        .collect();
    cuts.dedup();
    cuts
}

/// How many parts the indicators' rebuild starts with: the stored fact rows (duplicates
/// included) over [`FACTS_PER_PART`].
async fn indicator_parts(client: &Client) -> Result<u64, ChError> {
    let facts: u64 = client
        .query("SELECT count() FROM clue_events")
        .fetch_one()
        .await?;
    Ok(facts.div_ceil(FACTS_PER_PART).max(1))
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

/// A step of the rebuild failed. The tables it names were emptied by the rebuild and are
/// incomplete until `gridclue-sink rebuild-aggregates` runs again (it starts over).
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error(
        "rebuild step {step} of {of} ({what}) failed: {source}; {incomplete} are incomplete \
         until `gridclue-sink rebuild-aggregates` is run again (with the sinks stopped)"
    )]
    Step {
        step: usize,
        of: usize,
        what: String,
        incomplete: String,
        source: ChError,
    },
    #[error("reading the stored facts to plan the rebuild failed: {0}")]
    Plan(ChError),
    #[error("checking the rebuilt aggregates failed: {0}")]
    Check(ChError),
}

impl RebuildError {
    /// Whether running the rebuild again later may succeed (ClickHouse unreachable or busy), as
    /// opposed to a statement the server refuses.
    pub fn is_retryable(&self) -> bool {
        match self {
            RebuildError::Step { source, .. }
            | RebuildError::Plan(source)
            | RebuildError::Check(source) => crate::store::is_transient(source),
        }
    }

    fn is_memory_limit(&self) -> bool {
        matches!(self, RebuildError::Step { source, .. } if is_memory_limit(source))
    }
}

/// ClickHouse's MEMORY_LIMIT_EXCEEDED (code 241).
fn is_memory_limit(e: &ChError) -> bool {
    e.to_string().contains("Code: 241")
}

async fn run_steps(client: &Client, stage: &str, steps: &[Step]) -> Result<(), RebuildError> {
    for (i, step) in steps.iter().enumerate() {
        let started = std::time::Instant::now();
        tracing::info!(stage, step = i + 1, of = steps.len(), what = %step.what, "rebuilding");
        let mut query = client.query(&step.sql);
        for value in &step.binds {
            query = query.bind(value.as_str());
        }
        query.execute().await.map_err(|source| RebuildError::Step {
            step: i + 1,
            of: steps.len(),
            what: format!("{stage}: {}", step.what),
            incomplete: step.incomplete.join(", "),
            source,
        })?;
        tracing::info!(
            stage,
            step = i + 1,
            of = steps.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "rebuilt"
        );
    }
    Ok(())
}

/// The indicators' delta projection recomputed from the facts in about `parts` ranges of clue
/// ids (the rebuild takes one per [`FACTS_PER_PART`] stored facts); a range over the server's
/// memory limit starts the projection over with four times as many.
pub async fn rebuild_indicators(client: &Client, parts: u64) -> Result<(), RebuildError> {
    let mut parts = parts.max(1);
    let mut retries = 0;
    loop {
        let boundaries = clue_boundaries(client, parts)
            .await
            .map_err(RebuildError::Plan)?;
        let steps = indicator_rebuild(&boundaries);
        tracing::info!(
            parts = boundaries.len() + 1,
            "rebuilding the indicators' delta projection"
        );
        match run_steps(client, "indicators", &steps).await {
            Err(e) if e.is_memory_limit() && retries < SPLIT_RETRIES => {
                retries += 1;
                parts *= 4;
                tracing::warn!(error = %e, parts, "over the memory limit: starting over in smaller parts");
            }
            done => return done,
        }
    }
}

/// Recomputes the aggregates, the indicators' delta projection, the running status counts
/// and the open cases (sinks stopped), then checks them. A failed step stops the rebuild and
/// says which tables it left incomplete.
pub async fn rebuild(client: &Client) -> Result<AggregateCheck, RebuildError> {
    let whole = |stage: Vec<String>, tables: &'static [&'static str]| -> Vec<Step> {
        stage
            .into_iter()
            .map(|sql| {
                let what = sql.split_whitespace().take(3).collect::<Vec<_>>().join(" ");
                Step::new(what, sql, tables)
            })
            .collect()
    };
    run_steps(
        client,
        "aggregates",
        &whole(aggregate_rebuild(), &VIEW_TARGETS),
    )
    .await?;
    let parts = indicator_parts(client).await.map_err(RebuildError::Plan)?;
    rebuild_indicators(client, parts).await?;
    run_steps(
        client,
        "status counts",
        &whole(
            status_rebuild(),
            &["status_counts", "status_deadlines", "trend_days"],
        ),
    )
    .await?;
    run_steps(
        client,
        "open cases",
        &whole(open_cases_rebuild(), &["open_cases"]),
    )
    .await?;
    check(client).await.map_err(RebuildError::Check)
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
    fn the_indicator_rebuild_empties_the_tables_then_fills_each_clue_range_then_sums() {
        let whole = indicator_rebuild(&[]);
        assert_eq!(whole.len(), 6, "{whole:#?}");
        for (step, table) in whole.iter().zip(INDICATOR_TABLES) {
            assert_eq!(step.sql, format!("TRUNCATE TABLE {table}"));
        }
        assert!(whole[3].sql.starts_with("INSERT INTO indicator_deltas"));
        assert!(whole[3].sql.contains(EVERY_CLUE) && whole[3].binds.is_empty());
        assert!(whole[4].sql.starts_with("INSERT INTO indicator_days"));
        assert!(whole[5].sql.starts_with("INSERT INTO indicator_cohorts"));

        let cuts = ["a".to_owned(), "b".to_owned()];
        let split = indicator_rebuild(&cuts);
        assert_eq!(split.len(), 8, "{split:#?}");
        let ranges: Vec<(&str, Vec<&str>)> = split[3..6]
            .iter()
            .map(|s| {
                assert!(s.sql.starts_with("INSERT INTO indicator_deltas"));
                assert!(!s.sql.contains(EVERY_CLUE));
                let at = s.sql.find("WHERE clue_id").expect("a range");
                let range = s.sql[at + 6..].split(" GROUP BY").next().unwrap().trim();
                (range, s.binds.iter().map(String::as_str).collect())
            })
            .collect();
        assert_eq!(
            ranges,
            vec![
                ("clue_id < toUUID(?)", vec!["a"]),
                (
                    "clue_id >= toUUID(?) AND clue_id < toUUID(?)",
                    vec!["a", "b"]
                ),
                ("clue_id >= toUUID(?)", vec!["b"]),
            ]
        );
        // The statements differ in their range only.
        assert_eq!(
            split[4].sql.replacen(
                "clue_id >= toUUID(?) AND clue_id < toUUID(?)",
                EVERY_CLUE,
                1
            ),
            whole[3].sql
        );
        assert!(split[6].sql.starts_with("INSERT INTO indicator_days"));
    }

    #[test]
    fn a_failed_step_names_itself_and_the_tables_left_incomplete() {
        let over_memory = RebuildError::Step {
            step: 5,
            of: 16,
            what: "indicators: indicator_deltas from the facts, clue range 2 of 11".into(),
            incomplete: INDICATOR_TABLES.join(", "),
            source: ChError::BadResponse(
                "Code: 241, e.displayText() = DB::Exception: Memory limit (for query) exceeded"
                    .into(),
            ),
        };
        let text = over_memory.to_string();
        assert!(text.starts_with("rebuild step 5 of 16 (indicators: indicator_deltas from the facts, clue range 2 of 11) failed: "), "{text}");
        assert!(text.ends_with("indicator_deltas, indicator_days, indicator_cohorts are incomplete until `gridclue-sink rebuild-aggregates` is run again (with the sinks stopped)"), "{text}");
        assert!(over_memory.is_memory_limit());
        let refused = RebuildError::Step {
            source: ChError::BadResponse("Code: 62, e.displayText() = Syntax error".into()),
            step: 1,
            of: 1,
            what: String::new(),
            incomplete: String::new(),
        };
        assert!(!refused.is_memory_limit());
    }

    #[test]
    fn clue_ranges_are_cut_evenly_at_distinct_stored_ids() {
        let ids: Vec<String> = (0..10).map(|i| format!("id{i}")).collect();
        assert_eq!(evenly_picked(&ids, 1), Vec::<String>::new());
        assert_eq!(evenly_picked(&ids, 2), vec!["id5"]);
        assert_eq!(evenly_picked(&ids, 4), vec!["id2", "id5", "id7"]);
        // More parts than ids: fewer ranges, none empty.
        assert_eq!(evenly_picked(&ids[..2], 5), vec!["id1"]);
        assert_eq!(evenly_picked(&[], 3), Vec::<String>::new());
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
