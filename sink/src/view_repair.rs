//! Repairs the aggregates a ClickHouse crash left short of an insert's facts.
//!
//! ClickHouse 18.16 writes an insert's block into `clue_events`, then into each materialized
//! view's target, one after the other; nothing makes the set atomic. A server killed between
//! the two leaves the facts stored and some targets without them. The sink learns of it only
//! as a failed insert whose facts turn out to be stored (`writer`), and it must not insert the
//! facts again (they would count twice in every target that has them). For each target it
//! compares, over the groups the stored facts touch (the target's rows grouped by every column
//! but the measures):
//!
//! - what the target holds (`current`);
//! - what the target's own view gives over every stored fact of those streets (`truth`, from
//!   `clue_events FINAL`: every view passes `street_code` through, so a group of a street comes
//!   from that street's facts only);
//! - what the view gives over the stored facts of the failed insert (`contribution`).
//!
//! `truth − current = 0` in every group: the target has the facts. `truth − current =
//! contribution` in every group: it has none of them, and the view's statement over those
//! facts is inserted into it. Anything else (another writer caught between its table and its
//! views while we read, a target drifted for another reason) is left alone and counted as
//! unresolved: `gridclue-sink check-aggregates` and `rebuild-aggregates` are the repair then.
//! A verdict is acted on only when two reads in a row agree. The check is idempotent, so a
//! repair interrupted by another crash is checked and repaired again by the retry.
//!
//! The view statements are those of the migrations (`aggregates::view_select`): what the view
//! writes and what the repair writes are one definition. [`groups_off`] compares every target
//! with its view's statement over every stored fact, for `check-aggregates`.

use std::collections::BTreeMap;

use clickhouse::error::Error as ChError;
use clickhouse::Client;
use serde::Deserialize;

use crate::aggregates::view_select;
use crate::indicator_deltas::COUNTER_NAMES;

/// How a target's rows are measured: the columns summed (the targets that add up rows), or
/// whether a row is there at all (a target that keeps one row per fact).
#[derive(Clone, Copy, Debug)]
pub enum Measure {
    Sum(&'static [&'static str]),
    Presence,
}

/// A table a materialized view of `clue_events` writes.
#[derive(Clone, Copy, Debug)]
pub struct Target {
    pub table: &'static str,
    pub measure: Measure,
}

/// Every target of a view of `clue_events` (a test checks the migrations create no other).
pub const TARGETS: &[Target] = &[
    Target {
        table: "clue_counts",
        measure: Measure::Sum(&["report_count", "case_count"]),
    },
    Target {
        table: "fact_flow_hourly",
        measure: Measure::Sum(&["facts"]),
    },
    Target {
        table: "dashboard_trend_facts",
        measure: Measure::Presence,
    },
    Target {
        table: "indicator_deltas",
        measure: Measure::Sum(&COUNTER_NAMES),
    },
    Target {
        table: "indicator_days",
        measure: Measure::Sum(&COUNTER_NAMES),
    },
    Target {
        table: "indicator_cohorts",
        measure: Measure::Sum(&COUNTER_NAMES),
    },
    Target {
        table: "status_counts",
        measure: Measure::Sum(&["clues", "dated"]),
    },
    Target {
        table: "status_deadlines",
        measure: Measure::Sum(&["clues"]),
    },
    Target {
        table: "trend_days",
        measure: Measure::Sum(&["reports", "accepted", "closed", "overdue"]),
    },
    Target {
        table: "open_cases",
        measure: Measure::Sum(&["sign"]),
    },
];

/// The facts one insert stored: ranges of offsets of Kafka logs of the events topic, one per
/// partition the insert held. All of them, because the views took the insert whole or not at
/// all, and its partitions' facts share groups (a street's day).
#[derive(Clone, Debug)]
pub struct StoredFacts {
    pub topic: String,
    pub ranges: Vec<OffsetRange>,
}

#[derive(Clone, Copy, Debug)]
pub struct OffsetRange {
    pub partition: i32,
    pub log: u32,
    pub from: i64,
    pub to: i64,
}

impl StoredFacts {
    /// The condition selecting the facts in `clue_events`: the topic, then four binds per range.
    fn condition(&self) -> String {
        let ranges = self
            .ranges
            .iter()
            .map(|_| {
                "(kafka_partition = ? AND kafka_log = ? AND kafka_offset >= ? \
                 AND kafka_offset <= ?)"
            })
            .collect::<Vec<_>>()
            .join(" OR ");
        format!("kafka_topic = ? AND ({ranges})")
    }
}

/// What the check found in one target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The target holds the facts.
    Complete,
    /// It held none of them; their rows were inserted.
    Repaired,
    /// Neither: left for check-aggregates and rebuild-aggregates.
    Unresolved,
}

impl Outcome {
    /// A bounded label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Complete => "complete",
            Outcome::Repaired => "repaired",
            Outcome::Unresolved => "unresolved",
        }
    }
}

/// How a target's groups compare: `truth − current` against the facts' contribution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Complete,
    Missing,
    Unresolved,
}

type Measures = BTreeMap<String, Vec<i64>>;

/// Pure comparison of the three readings of one target (groups absent from a reading hold
/// zeros; only the groups the facts touch are read).
pub fn verdict(contribution: &Measures, current: &Measures, truth: &Measures) -> Verdict {
    let zeros = |n: usize| vec![0i64; n];
    let mut complete = true;
    let mut missing = true;
    for (key, add) in contribution {
        let have = current
            .get(key)
            .cloned()
            .unwrap_or_else(|| zeros(add.len()));
        let want = truth.get(key).cloned().unwrap_or_else(|| zeros(add.len()));
        let gap: Vec<i64> = want.iter().zip(&have).map(|(w, h)| w - h).collect();
        complete &= gap.iter().all(|g| *g == 0);
        missing &= gap == *add;
    }
    match (complete, missing) {
        (true, _) => Verdict::Complete,
        (false, true) => Verdict::Missing,
        (false, false) => Verdict::Unresolved,
    }
}

/// The view's statement over some rows of `clue_events` instead of the inserted block.
fn view_over(target: &str, rows: &str) -> String {
    view_select(target).replacen("FROM clue_events", &format!("FROM ({rows})"), 1)
}

/// The view over the stored facts (`facts`: their condition).
fn over_facts(target: &str, facts: &str) -> String {
    view_over(target, &format!("SELECT * FROM clue_events WHERE {facts}"))
}

/// The view over every stored fact of the streets the stored facts are in.
fn over_their_streets(target: &str, facts: &str) -> String {
    view_over(
        target,
        &format!(
            "SELECT * FROM clue_events FINAL WHERE street_code IN \
             (SELECT street_code FROM clue_events WHERE {facts})"
        ),
    )
}

/// The SQL of one reading: `rows` (a subquery with the target's columns) grouped by `keys`,
/// one string key per group and its measures, restricted to the groups of `touched` (a
/// subquery with the target's columns) when given.
fn grouped(measure: Measure, keys: &[String], rows: &str, touched: Option<&str>) -> String {
    let key = format!(
        "arrayStringConcat([{}], '\\t')",
        keys.iter()
            .map(|k| format!("toString({k})"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let measures = match measure {
        Measure::Sum(columns) => columns
            .iter()
            .map(|c| format!("toInt64(sum({c}))"))
            .collect::<Vec<_>>()
            .join(", "),
        Measure::Presence => "toInt64(count() > 0)".to_owned(),
    };
    let tuple = keys.join(", ");
    let filter = touched
        .map(|t| format!(" WHERE ({tuple}) IN (SELECT {tuple} FROM ({t}))"))
        .unwrap_or_default();
    format!(
        "SELECT {key} AS repair_group, [{measures}] AS repair_measures FROM ({rows}){filter} \
         GROUP BY {tuple}"
    )
}

/// The columns a target's rows are grouped by: every column but its measures.
fn key_columns(target: &Target, columns: &[String]) -> Vec<String> {
    let measured: &[&str] = match target.measure {
        Measure::Sum(c) => c,
        Measure::Presence => &[],
    };
    columns
        .iter()
        .filter(|c| !measured.contains(&c.as_str()))
        .cloned()
        .collect()
}

/// The three readings of a target and its repair, as SQL, each with the facts' condition in it
/// (bound by [`bound`]).
#[derive(Debug)]
pub struct TargetSql {
    pub contribution: String,
    pub current: String,
    pub truth: String,
    pub repair: String,
}

/// The statements for `target`, whose columns are `columns` (in any order), over the facts of
/// `condition` (see [`StoredFacts::condition`]).
pub fn target_sql(target: &Target, columns: &[String], condition: &str) -> TargetSql {
    let keys = key_columns(target, columns);
    let facts = over_facts(target.table, condition);
    let table = format!("SELECT * FROM {}", target.table);
    let all = columns.join(", ");
    TargetSql {
        contribution: grouped(target.measure, &keys, &facts, None),
        current: grouped(target.measure, &keys, &table, Some(&facts)),
        truth: grouped(
            target.measure,
            &keys,
            &over_their_streets(target.table, condition),
            Some(&facts),
        ),
        repair: format!(
            "INSERT INTO {} ({all}) SELECT {all} FROM ({facts})",
            target.table
        ),
    }
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct Group {
    // Named so as not to shadow a column of a target (indicator_days has a `key`).
    repair_group: String,
    repair_measures: Vec<i64>,
}

/// `sql` with the stored facts bound at each of their conditions in it.
fn bound(client: &Client, sql: &str, facts: &StoredFacts) -> clickhouse::query::Query {
    let mut q = client.query(sql);
    for _ in 0..sql.matches(&facts.condition()).count() {
        q = q.bind(facts.topic.as_str());
        for r in &facts.ranges {
            q = q.bind(r.partition).bind(r.log).bind(r.from).bind(r.to);
        }
    }
    q
}

async fn read(client: &Client, sql: &str, facts: &StoredFacts) -> Result<Measures, ChError> {
    let groups: Vec<Group> = bound(client, sql, facts).fetch_all().await?;
    Ok(groups
        .into_iter()
        .map(|g| (g.repair_group, g.repair_measures))
        .collect())
}

async fn columns(client: &Client, table: &str) -> Result<Vec<String>, ChError> {
    client
        .query("SELECT name FROM system.columns WHERE database = currentDatabase() AND table = ?")
        .bind(table)
        .fetch_all::<String>()
        .await
}

/// The target against the facts' contribution (read once: the stored facts do not change).
async fn read_verdict(
    client: &Client,
    sql: &TargetSql,
    facts: &StoredFacts,
    contribution: &Measures,
) -> Result<Verdict, ChError> {
    let current = read(client, &sql.current, facts).await?;
    let truth = read(client, &sql.truth, facts).await?;
    Ok(verdict(contribution, &current, &truth))
}

/// Reads a target's verdict until two readings in a row agree (at most three tries).
async fn settled_verdict(
    client: &Client,
    sql: &TargetSql,
    facts: &StoredFacts,
) -> Result<Verdict, ChError> {
    let contribution = read(client, &sql.contribution, facts).await?;
    let mut last = read_verdict(client, sql, facts, &contribution).await?;
    for _ in 0..2 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let next = read_verdict(client, sql, facts, &contribution).await?;
        if next == last {
            return Ok(next);
        }
        last = next;
    }
    Ok(Verdict::Unresolved)
}

/// Checks every target for the stored facts and inserts their rows where a target has none
/// of them. Safe to call again after an error: a repaired target reads complete.
pub async fn repair(
    client: &Client,
    facts: &StoredFacts,
) -> Result<Vec<(&'static str, Outcome)>, ChError> {
    let mut outcomes = Vec::with_capacity(TARGETS.len());
    for target in TARGETS {
        let sql = target_sql(
            target,
            &columns(client, target.table).await?,
            &facts.condition(),
        );
        let outcome = match settled_verdict(client, &sql, facts).await? {
            Verdict::Complete => Outcome::Complete,
            Verdict::Missing => {
                bound(client, &sql.repair, facts).execute().await?;
                Outcome::Repaired
            }
            Verdict::Unresolved => Outcome::Unresolved,
        };
        outcomes.push((target.table, outcome));
    }
    Ok(outcomes)
}

/// For every target, the groups in which it differs from its view's statement over every
/// stored fact (`clue_events FINAL`): what `check-aggregates` reports per view. Zero in every
/// target means no view missed or repeated a fact.
pub async fn groups_off(client: &Client) -> Result<Vec<(&'static str, usize)>, ChError> {
    let mut out = Vec::with_capacity(TARGETS.len());
    for (i, target) in TARGETS.iter().enumerate() {
        let started = std::time::Instant::now();
        let columns = columns(client, target.table).await?;
        let off: u64 = client
            .query(&groups_off_sql(target, &columns))
            .fetch_one()
            .await?;
        tracing::info!(
            view = target.table,
            step = i + 1,
            of = TARGETS.len(),
            off,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "view checked against its statement over the facts"
        );
        out.push((target.table, off as usize));
    }
    Ok(out)
}

/// The number of groups in which `target` differs from its view's statement over every stored
/// fact, counted by the server (millions of groups at a million facts): the target's measures
/// minus the statement's, summed per group, the groups left non-zero counted.
fn groups_off_sql(target: &Target, columns: &[String]) -> String {
    let keys = key_columns(target, columns);
    let table = format!("SELECT * FROM {}", target.table);
    let facts = view_over(target.table, "SELECT * FROM clue_events FINAL");
    let current = grouped(target.measure, &keys, &table, None);
    let truth = grouped(target.measure, &keys, &facts, None);
    format!(
        "SELECT count() FROM (SELECT g, sumForEach(m) AS diff FROM \
         (SELECT repair_group AS g, repair_measures AS m FROM ({current}) \
          UNION ALL SELECT repair_group AS g, arrayMap(x -> -x, repair_measures) AS m \
          FROM ({truth})) \
         GROUP BY g) WHERE arrayExists(x -> x != 0, diff)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(rows: &[(&str, &[i64])]) -> Measures {
        rows.iter()
            .map(|(k, v)| (k.to_string(), v.to_vec()))
            .collect()
    }

    #[test]
    fn a_target_holding_the_facts_is_complete() {
        let contribution = m(&[("a", &[2, 1]), ("b", &[-1, 0])]);
        let current = m(&[("a", &[5, 3]), ("b", &[4, 0])]);
        assert_eq!(
            verdict(&contribution, &current, &current.clone()),
            Verdict::Complete
        );
    }

    #[test]
    fn a_target_short_of_exactly_the_facts_is_missing_them() {
        // The facts' groups: a +2/+1, b −1 (a status left), c new (absent from the target).
        let contribution = m(&[("a", &[2, 1]), ("b", &[-1, 0]), ("c", &[1, 1])]);
        let current = m(&[("a", &[3, 2]), ("b", &[5, 0])]);
        let truth = m(&[("a", &[5, 3]), ("b", &[4, 0]), ("c", &[1, 1])]);
        assert_eq!(verdict(&contribution, &current, &truth), Verdict::Missing);
    }

    #[test]
    fn a_target_off_by_anything_else_is_unresolved() {
        let contribution = m(&[("a", &[2, 1]), ("b", &[1, 0])]);
        // a is short of the facts, b is not: half an insert, or another writer's rows.
        let current = m(&[("a", &[3, 2]), ("b", &[5, 0])]);
        let truth = m(&[("a", &[5, 3]), ("b", &[5, 0])]);
        assert_eq!(
            verdict(&contribution, &current, &truth),
            Verdict::Unresolved
        );
        // Short by more than the facts.
        let truth = m(&[("a", &[6, 3]), ("b", &[6, 0])]);
        assert_eq!(
            verdict(&contribution, &current, &truth),
            Verdict::Unresolved
        );
    }

    #[test]
    fn facts_that_change_no_measure_leave_the_target_complete() {
        let contribution = m(&[("a", &[0])]);
        assert_eq!(
            verdict(&contribution, &m(&[("a", &[4])]), &m(&[("a", &[4])])),
            Verdict::Complete
        );
    }

    #[test]
    fn every_view_of_clue_events_has_a_target_here() {
        let created: Vec<String> = crate::migrations::MIGRATIONS
            .iter()
            .flat_map(|m| m.statements())
            .filter(|s| s.starts_with("CREATE MATERIALIZED VIEW") && s.contains("FROM clue_events"))
            .map(|s| {
                let after = &s[s.find(" TO ").expect("views write a target") + 4..];
                after
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect();
        let mut listed: Vec<&str> = TARGETS.iter().map(|t| t.table).collect();
        let mut created: Vec<&str> = created.iter().map(String::as_str).collect();
        listed.sort_unstable();
        created.sort_unstable();
        created.dedup();
        assert_eq!(listed, created);
    }

    #[test]
    fn the_readings_group_by_every_column_but_the_measures_and_bind_the_facts() {
        let target = TARGETS.iter().find(|t| t.table == "trend_days").unwrap();
        let columns: Vec<String> = [
            "grain",
            "day",
            "street_code",
            "community",
            "grid",
            "category",
            "department",
            "reports",
            "accepted",
            "closed",
            "overdue",
        ]
        .map(String::from)
        .to_vec();
        let facts = StoredFacts {
            topic: "clues.events".into(),
            ranges: vec![
                OffsetRange {
                    partition: 0,
                    log: 0,
                    from: 10,
                    to: 12,
                },
                OffsetRange {
                    partition: 3,
                    log: 1,
                    from: 7,
                    to: 7,
                },
            ],
        };
        let condition = facts.condition();
        let sql = target_sql(target, &columns, &condition);
        let keys = "grain, day, street_code, community, grid, category, department";
        for reading in [&sql.contribution, &sql.current, &sql.truth] {
            assert!(reading.ends_with(&format!("GROUP BY {keys}")), "{reading}");
            assert!(reading.contains("toInt64(sum(overdue))"), "{reading}");
        }
        assert_eq!(sql.contribution.matches(&condition).count(), 1);
        assert_eq!(sql.current.matches(&condition).count(), 1);
        // The streets, then the touched groups.
        assert_eq!(sql.truth.matches(&condition).count(), 2);
        assert!(sql
            .truth
            .contains("FROM clue_events FINAL WHERE street_code IN"));
        assert!(sql
            .repair
            .starts_with(&format!("INSERT INTO trend_days ({})", columns.join(", "))));
        assert_eq!(sql.repair.matches(&condition).count(), 1);
        // The topic and four binds per range, at every condition.
        for statement in [&sql.contribution, &sql.current, &sql.truth, &sql.repair] {
            assert_eq!(
                statement.matches('?').count(),
                9 * statement.matches(&condition).count()
            );
        }
    }
}
