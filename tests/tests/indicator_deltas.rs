//! The indicators' delta projection (migration 0011) against the definition, on the real test
//! ClickHouse server (`GRIDCLUE_TEST_CLICKHOUSE_URL`): randomized clue histories — written with
//! the sink's own fold and row code — are read both by the production query
//! (`indicators::query`, sums of deltas) and by the reference below, which computes the
//! definition straight from the facts (one row per clue as of the instant, then grouped). Every
//! period, instant, grouping and street filter tried must give the same counts. The migration's
//! backfill of facts stored before it must give the same deltas as the sink.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use gridclue_core::codes::StreetCode;
use gridclue_core::rng::Rng;
use gridclue_core::{ClueId, GridCode};
use gridclue_dashboard_api::indicators::{self, By, Counts, Params, Plan};
use gridclue_dashboard_api::Reference;
use gridclue_sink::migrations::MIGRATIONS;
use gridclue_tests::ch::TestDb;
use gridclue_tests::data_dir;
use gridclue_tests::facts::{china, write, History, ReportSpec};
use gridclue_tests::indicators_reference::reference;

const HOUR: u64 = 3_600_000;

async fn fast(client: &clickhouse::Client, plan: &Plan) -> Vec<Counts> {
    let mut rows = indicators::query(client, plan).await.expect("indicators");
    rows.sort_by(|a, b| a.key.cmp(&b.key));
    rows
}

/// The first three grids of `street` on the shipped map.
fn grids_of(street: &str) -> Vec<GridCode> {
    let mut grids = gridclue_tests::facts::grids_of(street);
    grids.truncate(3);
    grids
}

const START: &str = "2026-11-01 00:00";

/// A random history reported in the ten days from [`START`]: rejections and withdrawals (also
/// after acceptance), duplicates at report and merges, dispatches to other departments and
/// returns, postponements before and after the deadline, reworks, supervision, closures before,
/// at and after the deadline (some without a working time), ratings, categories without a
/// limit, several facts at one instant.
fn history(rng: &mut Rng, grids: &[GridCode], last: ClueId) -> History {
    let categories = [
        ("garbage_pile", "greening_city_appearance"),
        ("manhole_cover", "water_affairs"),
        ("street_vending", "urban_management"),
    ];
    let (category, department) = categories[rng.below(categories.len())];
    let spec = ReportSpec {
        grid: grids[rng.below(grids.len())],
        category: category.parse().unwrap(),
        department: department.parse().unwrap(),
        reporter_id: "tok_rider".into(),
        reporter_group: None,
        duplicate_of: rng.chance(0.05).then_some(last),
    };
    let reported = china(START) + rng.below(10 * 24) as u64 * HOUR + rng.below(3_600) as u64 * 1000;
    let h = if rng.chance(0.05) {
        History::reported_outside(&spec, reported)
    } else {
        History::reported(&spec, reported)
    };
    let mut t = reported;
    let mut step = |rng: &mut Rng| {
        t += [0, 1, HOUR / 2, 5 * HOUR, 30 * HOUR][rng.below(5)];
        t
    };
    if spec.duplicate_of.is_some() {
        return h;
    }
    match rng.below(20) {
        0 => return h.rejected(step(rng)),
        1 => return h.withdrawn(step(rng)),
        2 => return h.merged(step(rng), last),
        3 => return h,
        _ => {}
    }
    let accepted = step(rng);
    let mut deadline = (!rng.chance(0.1)).then(|| accepted + (1 + rng.below(60) as u64) * HOUR);
    let mut h = h.accepted(accepted, deadline);
    if rng.chance(0.05) {
        return h.rejected(step(rng));
    }
    let others = [
        "urban_management",
        "water_affairs",
        "greening_city_appearance",
    ];
    h = h.dispatched(step(rng), others[rng.below(3)]);
    if rng.chance(0.2) {
        h = h.returned(step(rng));
        h = h.dispatched(step(rng), others[rng.below(3)]);
    }
    if rng.chance(0.2) {
        h = h.supervised(step(rng));
    }
    if let (Some(d), true) = (deadline, rng.chance(0.25)) {
        let at = step(rng);
        let moved = d.max(at) + (1 + rng.below(40) as u64) * HOUR;
        deadline = Some(moved);
        h = h.postponed(at, moved);
    }
    if rng.chance(0.2) {
        return h;
    }
    h = h.handled(step(rng));
    if rng.chance(0.2) {
        h = h.reworked(step(rng)).handled(step(rng));
    }
    let closed_at = match (deadline, rng.below(3)) {
        (Some(d), 0) if d > h.facts.last().unwrap().occurred_at_ms => d,
        _ => step(rng),
    };
    h = if rng.chance(0.1) {
        h.then(
            closed_at,
            gridclue_core::wire::Fact::Verified { working_ms: None },
            gridclue_core::Status::Closed,
        )
    } else {
        h.closed(closed_at, 1 + rng.below(40) as u64)
    };
    if rng.chance(0.5) {
        h = h.rated(step(rng), 1 + rng.below(5) as u8);
    }
    h
}

fn histories(seed: u64, n: usize, streets: &[StreetCode]) -> Vec<History> {
    let grids: Vec<GridCode> = streets.iter().flat_map(|s| grids_of(s.as_str())).collect();
    let mut rng = Rng::new(seed);
    let mut last = ClueId::new_random();
    (0..n)
        .map(|_| {
            let h = history(&mut rng, &grids, last);
            last = h.clue;
            h
        })
        .collect()
}

fn plan(from: &str, to: &str, as_of_ms: u64, by: By, street: Option<StreetCode>) -> Plan {
    let day = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
    let params = Params {
        from: day(from),
        to: day(to),
        as_of_ms: Some(as_of_ms),
        by,
        street,
    };
    Plan {
        from_ms: indicators::china_midnight_ms(params.from),
        to_ms: indicators::china_midnight_ms(params.to),
        as_of_ms,
        street: params.street,
        params,
    }
}

/// Instants worth asking about: some fact times and deadlines of the histories, a millisecond
/// either side, midnights, and instants before everything and long after.
fn instants(histories: &[History], rng: &mut Rng, n: usize) -> Vec<u64> {
    let mut times: Vec<u64> = histories
        .iter()
        .flat_map(|h| h.facts.iter())
        .flat_map(|f| [f.occurred_at_ms, f.fact_deadline()])
        .filter(|&t| t > 0)
        .collect();
    times.sort_unstable();
    times.dedup();
    let mut out = vec![
        china("2026-10-01 00:00"),
        china("2026-11-05 00:00"),
        china("2026-11-05 00:00") - 1,
        china("2027-06-01 00:00"),
    ];
    for _ in 0..n {
        let t = times[rng.below(times.len())];
        out.push([t - 1, t, t + 1][rng.below(3)]);
    }
    out
}

trait FactDeadline {
    fn fact_deadline(&self) -> u64;
}

impl FactDeadline for gridclue_core::wire::EventEnvelope {
    fn fact_deadline(&self) -> u64 {
        use gridclue_core::wire::Fact;
        match &self.fact {
            Fact::Accepted { deadline_ms, .. } => deadline_ms.unwrap_or(0),
            Fact::Postponed { deadline_ms, .. } => *deadline_ms,
            _ => 0,
        }
    }
}

/// Compares the production query with the reference for periods × instants × groupings ×
/// street filters; returns how many answers had at least one case.
async fn compare(db: &TestDb, histories: &[History], streets: &[StreetCode], seed: u64) -> usize {
    let mut rng = Rng::new(seed);
    let periods = [
        ("2026-11-01", "2026-11-15"),
        ("2026-11-03", "2026-11-06"),
        ("2026-11-04", "2026-11-05"),
        ("2026-10-01", "2026-11-03"),
    ];
    let mut non_empty = 0;
    for (from, to) in periods {
        for as_of in instants(histories, &mut rng, 6) {
            for by in By::ALL {
                for street in [None, Some(streets[1])] {
                    let p = plan(from, to, as_of, by, street);
                    let want = reference(&db.client, &p).await;
                    let got = fast(&db.client, &p).await;
                    assert_eq!(
                        got, want,
                        "{from}..{to} as of {as_of} by {by:?}, street {street:?}"
                    );
                    non_empty += usize::from(want.iter().any(|c| c.accepted > 0));
                }
            }
        }
    }
    non_empty
}

fn streets() -> Vec<StreetCode> {
    let reference = Reference::load(&data_dir()).unwrap();
    reference.streets[..3].iter().map(|s| s.code).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deltas_equal_the_definition_on_random_histories() {
    let db = TestDb::create("indicator_deltas").await;
    gridclue_sink::migrations::apply(&db.client).await.unwrap();
    let streets = streets();
    let all = histories(0x5eed_0001, 600, &streets);
    // Written in three inserts, as the sink's batches would.
    for chunk in all.chunks(200) {
        write(&db.client, chunk).await;
    }
    let non_empty = compare(&db, &all, &streets, 7).await;
    assert!(non_empty > 100, "only {non_empty} answers had cases");
}

/// The delta rows summed per instant, cohort day and group (how the sink and the backfill
/// split them into rows may differ; these sums may not).
#[derive(Debug, PartialEq, clickhouse::Row, serde::Deserialize)]
struct Cell {
    cohort_day: u32,
    effective_ms: u64,
    street_code: String,
    community_code: String,
    category: String,
    department: String,
    counts: Vec<i64>,
}

async fn delta_sums(db: &TestDb) -> Vec<Cell> {
    db.client
        .query(
            "SELECT cohort_day, effective_ms, street_code, community_code, category, department, \
                 [sum(accepted), sum(due), sum(closed), sum(closed_on_time), sum(verified), \
                  sum(reworked), sum(postponed), sum(supervised), sum(overdue_open), \
                  sum(timed_closed), sum(working_ms), sum(rated), sum(rating_sum), sum(reports), \
                  sum(duplicates)] AS counts \
             FROM indicator_deltas \
             GROUP BY cohort_day, effective_ms, street_code, community_code, category, department \
             HAVING arrayExists(x -> x != 0, counts) \
             ORDER BY cohort_day, effective_ms, street_code, community_code, category, department",
        )
        .fetch_all()
        .await
        .expect("delta sums")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backfill_of_stored_facts_equals_what_the_sink_writes() {
    let db = TestDb::create("indicator_backfill").await;
    gridclue_sink::migrations::apply(&db.client).await.unwrap();
    let streets = streets();
    let all = histories(0x5eed_0002, 300, &streets);
    write(&db.client, &all).await;
    let by_sink = delta_sums(&db).await;
    assert!(by_sink.len() > 500, "{} cells", by_sink.len());

    // As if the facts had been stored before the migration: no deltas yet, then its backfill.
    db.execute("TRUNCATE TABLE indicator_deltas").await;
    db.execute("TRUNCATE TABLE indicator_days").await;
    db.execute("TRUNCATE TABLE indicator_cohorts").await;
    let migration = MIGRATIONS
        .iter()
        .find(|m| m.name == "indicator_deltas")
        .unwrap();
    let backfill: Vec<String> = migration
        .statements()
        .into_iter()
        .filter(|s| s.trim_start().starts_with("INSERT"))
        .collect();
    assert_eq!(backfill.len(), 3, "backfills of the three tables");
    for statement in &backfill {
        db.execute(statement).await;
    }
    assert_eq!(delta_sums(&db).await, by_sink);
    compare(&db, &all, &streets, 8).await;

    // Running the backfill again (a migration cut off after it) adds nothing.
    for statement in &backfill {
        db.execute(statement).await;
    }
    assert_eq!(delta_sums(&db).await, by_sink);
    compare(&db, &all, &streets, 9).await;
}

#[test]
fn the_histories_cover_what_the_deltas_must_handle() {
    use gridclue_core::wire::Fact;
    let all = histories(0x5eed_0001, 600, &streets());
    let kinds: BTreeMap<&str, usize> =
        all.iter()
            .flat_map(|h| h.facts.iter())
            .fold(BTreeMap::new(), |mut m, f| {
                let kind = match &f.fact {
                    Fact::Rejected { .. } if f.seq > 1 => "rejected after acceptance",
                    Fact::Verified { working_ms: None } => "closed without working time",
                    Fact::Accepted {
                        deadline_ms: None, ..
                    } => "accepted without a limit",
                    other => other.type_name(),
                };
                *m.entry(kind).or_default() += 1;
                m
            });
    for kind in [
        "rejected",
        "rejected after acceptance",
        "withdrawn",
        "merged",
        "returned",
        "postponed",
        "verify_failed",
        "supervised",
        "verified",
        "closed without working time",
        "accepted without a limit",
        "rated",
    ] {
        assert!(
            kinds.get(kind).copied().unwrap_or(0) >= 3,
            "{kind}: {kinds:?}"
        );
    }
}

/// A grouping's sums in `indicator_cohorts` (`effective_day` 0) or `indicator_days`.
#[derive(Debug, PartialEq, clickhouse::Row, serde::Deserialize)]
struct SummedCell {
    dim: String,
    key: String,
    cohort_day: u32,
    effective_day: u32,
    counts: Vec<i64>,
}

/// The sums of `indicator_cohorts` and of `indicator_days` per grouping, key and cohort day (and
/// UTC day): what the indicators read besides `indicator_deltas`.
async fn summed_tables(db: &TestDb) -> Vec<SummedCell> {
    let sums = "[sum(accepted), sum(due), sum(closed), sum(closed_on_time), sum(verified), \
         sum(reworked), sum(postponed), sum(supervised), sum(overdue_open), sum(timed_closed), \
         sum(working_ms), sum(rated), sum(rating_sum), sum(reports), sum(duplicates)]";
    let mut cells: Vec<SummedCell> = db
        .client
        .query(&format!(
            "SELECT dim, key, cohort_day, toUInt32(0) AS effective_day, {sums} AS counts \
             FROM indicator_cohorts GROUP BY dim, key, cohort_day \
             HAVING arrayExists(x -> x != 0, counts) \
             UNION ALL \
             SELECT dim, key, cohort_day, effective_day, {sums} AS counts \
             FROM indicator_days GROUP BY dim, key, cohort_day, effective_day \
             HAVING arrayExists(x -> x != 0, counts)"
        ))
        .fetch_all()
        .await
        .expect("summed tables");
    // In one order (18.16 applies an ORDER BY to the last SELECT of a UNION ALL only).
    cells.sort_by(|a, b| {
        (&a.dim, &a.key, a.cohort_day, a.effective_day).cmp(&(
            &b.dim,
            &b.key,
            b.cohort_day,
            b.effective_day,
        ))
    });
    cells
}

/// (reports, accepted, due, overdue_open) of the whole district as of `as_of`, for November.
async fn district_as_of(db: &TestDb, as_of: u64) -> (u64, u64, u64, u64) {
    let rows = fast(
        &db.client,
        &plan("2026-11-01", "2026-12-01", as_of, By::Street, None),
    )
    .await;
    rows.iter().fold((0, 0, 0, 0), |(r, a, d, o), c| {
        (r + c.reports, a + c.accepted, d + c.due, o + c.overdue_open)
    })
}

/// A clue whose report the sink stored after its acceptance (its acceptance folded first, with
/// no place yet): the sink and `rebuild-aggregates` write the same rows, which are what the
/// definition reads from the facts — the report counted from its time, the case from its
/// acceptance, due at the deadline and overdue a millisecond after it. (The rebuild with the
/// backfill of 0011 wrote -1 report in no street and no case at all.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_stored_after_the_acceptance_is_counted_alike_by_the_sink_and_the_rebuild() {
    let db = TestDb::create("indicator_late_report").await;
    gridclue_sink::migrations::apply(&db.client).await.unwrap();
    let street = streets()[0];
    let grid = grids_of(street.as_str())[0];
    let department = "greening_city_appearance";
    let spec = ReportSpec::new(grid, "garbage_pile", department);
    let (reported, accepted, deadline) = (
        china("2026-11-02 20:00"),
        china("2026-11-02 21:00"),
        china("2026-11-03 21:00"),
    );
    let mut late = History::reported(&spec, reported).accepted(accepted, Some(deadline));
    late.facts.swap(0, 1);
    assert_eq!(late.facts[1].seq, 0, "the report is stored second");
    write(&db.client, &[late]).await;

    // By hand: report day and acceptance day are both 11-02 (China).
    let day = gridclue_sink::indicator_deltas::china_day(reported);
    let counts = |set: &[(usize, i64)]| {
        let mut c = vec![0; 15];
        for &(i, v) in set {
            c[i] = v;
        }
        c
    };
    let (accepted_i, due_i, overdue_i, reports_i) = (0, 1, 8, 13);
    let cell = |at: u64, c: Vec<i64>| Cell {
        cohort_day: day,
        effective_ms: at,
        street_code: street.to_string(),
        community_code: grid.community_code().to_string(),
        category: "garbage_pile".into(),
        department: department.into(),
        counts: c,
    };
    let by_hand = vec![
        cell(reported, counts(&[(reports_i, 1)])),
        cell(accepted, counts(&[(accepted_i, 1)])),
        cell(deadline, counts(&[(due_i, 1)])),
        cell(deadline + 1, counts(&[(overdue_i, 1)])),
    ];
    // (reports, accepted, due, overdue) at instants around the facts and the deadline.
    let instants_by_hand = [
        (reported - 1, (0, 0, 0, 0)),
        (reported, (1, 0, 0, 0)),
        (accepted - 1, (1, 0, 0, 0)),
        (accepted, (1, 1, 0, 0)),
        (deadline, (1, 1, 1, 0)),
        (deadline + 1, (1, 1, 1, 1)),
        (china("2026-11-20 12:00"), (1, 1, 1, 1)),
    ];
    let assert_by_hand = |when: &'static str| {
        let db = &db;
        let by_hand = &by_hand;
        async move {
            assert_eq!(&delta_sums(db).await, by_hand, "{when}");
            for (at, want) in instants_by_hand {
                assert_eq!(district_as_of(db, at).await, want, "{when}, as of {at}");
            }
        }
    };
    assert_by_hand("as the sink wrote them").await;
    let written = summed_tables(&db).await;
    assert!(!written.is_empty());
    let check = gridclue_sink::aggregates::check(&db.client).await.unwrap();
    assert!(check.is_exact(), "{check:?}");

    let rebuilt = gridclue_sink::aggregates::rebuild(&db.client)
        .await
        .unwrap();
    assert!(rebuilt.is_exact(), "{rebuilt:?}");
    assert_by_hand("rebuilt").await;
    assert_eq!(summed_tables(&db).await, written);
}

/// The rebuild in several ranges of clue ids gives the rows of the sink, as in one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rebuild_in_ranges_of_clues_equals_what_the_sink_writes() {
    let db = TestDb::create("indicator_rebuild_ranges").await;
    gridclue_sink::migrations::apply(&db.client).await.unwrap();
    let streets = streets();
    let all = histories(0x5eed_0003, 300, &streets);
    write(&db.client, &all).await;
    let (by_sink, tables) = (delta_sums(&db).await, summed_tables(&db).await);
    assert!(by_sink.len() > 500, "{} cells", by_sink.len());
    for parts in [1, 4] {
        gridclue_sink::aggregates::rebuild_indicators(&db.client, parts)
            .await
            .unwrap();
        assert_eq!(delta_sums(&db).await, by_sink, "in {parts} part(s)");
        assert_eq!(summed_tables(&db).await, tables, "in {parts} part(s)");
    }
    compare(&db, &all, &streets, 10).await;
}
