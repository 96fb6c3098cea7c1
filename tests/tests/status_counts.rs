//! The running status counts (migration 0013: `status_counts`, `status_deadlines`, fed by the
//! state rows the sink writes with each fact) against the real test ClickHouse: on a small set
//! of hand-built histories — returns, redispatch, rework, postponement, a duplicate, a
//! withdrawal, a rejection, a report stored after the clue's next fact, a report outside the
//! district — the breakdown's cells and the live numbers equal counts worked out by hand below,
//! at several instants; a replay written behind the sink's back is found by the check and
//! repaired by the rebuild; facts written after the rebuild move the counts on from the rebuilt
//! rows; merges change nothing.
//!
//! Street A, period P = [2026-11-02, 2026-11-09) (China dates); grid gA1 (community 1, reports by
//! food-delivery riders) and gA2 (community 2, by couriers); G = greening_city_appearance (where
//! garbage piles are routed), U = urban_management:
//! - c1 gA1: reported 11-02 09:00, accepted 10:00 (deadline 11-04 10:00), dispatched to U, returned,
//!   dispatched to G, handled 11-03 09:00, reworked 10:00, postponed 11:00 to 11-06 10:00 —
//!   dispatched, at G;
//! - c2 gA2: reported 11-03 08:00, accepted (deadline 11-05 09:00), dispatched to G, closed 11-04 15:00;
//! - c3 gA1: reported 11-04 12:00, withdrawn 13:00;
//! - c4 gA2: reported 11-05 09:00, a duplicate of c2 from the start;
//! - c5 gA1: reported 11-06 08:00, accepted 09:00 (deadline 11-07 09:00), dispatched to U 10:00;
//! - c6 gA1: reported 11-08 10:00, rejected 11:00;
//! - c7 gA1: reported 11-09 00:00 (after P; in November) — reported;
//! - c8 gA2: reported 11-02 20:00, accepted 21:00 (deadline 11-03 21:00), the acceptance stored
//!   before the report — accepted, at G;
//! - o1: reported 11-03 outside the district — in no count.

use gridclue_core::codes::{CommunityCode, StreetCode};
use gridclue_core::ReporterGroup;
use gridclue_dashboard_api::breakdown::{self, By, Cell};
use gridclue_dashboard_api::live;
use gridclue_dashboard_api::params::{Filters, Period};
use gridclue_dashboard_api::Reference;
use gridclue_tests::ch::TestDb;
use gridclue_tests::data_dir;
use gridclue_tests::facts::{china, grids_of, write, write_rows, History, ReportSpec};

const G: &str = "greening_city_appearance";
const U: &str = "urban_management";

struct Set {
    db: TestDb,
    street: StreetCode,
    communities: [String; 2],
    c5: History,
}

async fn set() -> Set {
    let db = TestDb::create("status_counts").await;
    gridclue_sink::migrations::apply(&db.client).await.unwrap();
    let reference = Reference::load(&data_dir()).unwrap();
    let street = reference.streets[0].code;
    let grids = grids_of(street.as_str());
    let g1 = grids[0];
    let g2 = *grids
        .iter()
        .find(|g| g.community_code() != g1.community_code())
        .unwrap();
    let spec = |grid, group| ReportSpec {
        reporter_group: Some(group),
        ..ReportSpec::new(grid, "garbage_pile", G)
    };
    let (s1, s2) = (
        spec(g1, ReporterGroup::FoodDelivery),
        spec(g2, ReporterGroup::Courier),
    );
    let t = china;
    let c1 = History::reported(&s1, t("2026-11-02 09:00"))
        .accepted(t("2026-11-02 10:00"), Some(t("2026-11-04 10:00")))
        .dispatched(t("2026-11-02 11:00"), U)
        .returned(t("2026-11-02 12:00"))
        .dispatched(t("2026-11-02 13:00"), G)
        .handled(t("2026-11-03 09:00"))
        .reworked(t("2026-11-03 10:00"))
        .postponed(t("2026-11-03 11:00"), t("2026-11-06 10:00"));
    let c2 = History::reported(&s2, t("2026-11-03 08:00"))
        .accepted(t("2026-11-03 09:00"), Some(t("2026-11-05 09:00")))
        .dispatched(t("2026-11-03 10:00"), G)
        .handled(t("2026-11-04 14:00"))
        .closed(t("2026-11-04 15:00"), 6);
    let c3 = History::reported(&s1, t("2026-11-04 12:00")).withdrawn(t("2026-11-04 13:00"));
    let c4 = History::reported(&s2.clone().repeating(c2.clue), t("2026-11-05 09:00"));
    let c5 = History::reported(&s1, t("2026-11-06 08:00"))
        .accepted(t("2026-11-06 09:00"), Some(t("2026-11-07 09:00")))
        .dispatched(t("2026-11-06 10:00"), U);
    let c6 = History::reported(&s1, t("2026-11-08 10:00")).rejected(t("2026-11-08 11:00"));
    let c7 = History::reported(&s1, t("2026-11-09 00:00"));
    let mut c8 = History::reported(&s2, t("2026-11-02 20:00"))
        .accepted(t("2026-11-02 21:00"), Some(t("2026-11-03 21:00")));
    c8.facts.swap(0, 1);
    let o1 = History::reported_outside(&s1, t("2026-11-03 12:00"));
    write(&db.client, &[c1, c2, c3, c4, c5.clone(), c6, c7, c8, o1]).await;
    Set {
        db,
        street,
        communities: [
            g1.community_code().to_string(),
            g2.community_code().to_string(),
        ],
        c5,
    }
}

fn p() -> Period {
    Period {
        from: "2026-11-02".parse().unwrap(),
        to: "2026-11-09".parse().unwrap(),
    }
}

fn cell(key: &str, status: &str, reports: u64, cases: u64, overdue: u64) -> Cell {
    Cell {
        key: key.into(),
        status: status.into(),
        reports,
        cases,
        overdue,
    }
}

async fn cells(s: &Set, by: By, filters: &Filters, now: &str) -> Vec<Cell> {
    cells_in(s, &p(), by, filters, now).await
}

async fn cells_in(s: &Set, period: &Period, by: By, filters: &Filters, now: &str) -> Vec<Cell> {
    let mut c = breakdown::query(&s.db.client, by, period, filters, china(now))
        .await
        .unwrap();
    c.sort_by(|x, y| (&x.key, &x.status).cmp(&(&y.key, &y.status)));
    c
}

/// Street A's cells in P at 11-06 12:00: c1 dispatched (deadline 11-06 10:00 passed) and c5
/// dispatched (11-07 09:00 ahead); c8 accepted (11-03 21:00 passed); c2 closed; c3 withdrawn,
/// c4 duplicate, c6 rejected (no cases). c7 is after P, o1 outside.
fn street_cells(a: &str, dispatched_overdue: u64, accepted_overdue: u64) -> Vec<Cell> {
    vec![
        cell(a, "accepted", 1, 1, accepted_overdue),
        cell(a, "closed", 1, 1, 0),
        cell(a, "dispatched", 2, 2, dispatched_overdue),
        cell(a, "duplicate", 1, 0, 0),
        cell(a, "rejected", 1, 0, 0),
        cell(a, "withdrawn", 1, 0, 0),
    ]
}

/// The breakdown's cells by hand, and the live numbers.
async fn assert_hand_counts(s: &Set) {
    let a = s.street.as_str();
    let none = Filters::default();
    // Overdue at three instants: 11-03 22:00 only c8 (c1's deadline is the postponed one);
    // 11-06 12:00 c1 and c8; 11-07 09:00 (c5's deadline itself: not yet past) the same.
    assert_eq!(
        cells(s, By::Street, &none, "2026-11-03 22:00").await,
        street_cells(a, 0, 1)
    );
    assert_eq!(
        cells(s, By::Street, &none, "2026-11-06 12:00").await,
        street_cells(a, 1, 1)
    );
    assert_eq!(
        cells(s, By::Street, &none, "2026-11-07 09:00").await,
        street_cells(a, 1, 1)
    );
    // A millisecond later c5 is overdue too.
    let mut later = breakdown::query(
        &s.db.client,
        By::Street,
        &p(),
        &none,
        china("2026-11-07 09:00") + 1,
    )
    .await
    .unwrap();
    later.sort_by(|x, y| (&x.key, &x.status).cmp(&(&y.key, &y.status)));
    assert_eq!(later, street_cells(a, 2, 1));

    // By department now: c1 returned from U and dispatched to G; c5 at U.
    let now = "2026-11-06 12:00";
    assert_eq!(
        cells(s, By::Department, &none, now).await,
        vec![
            cell(G, "accepted", 1, 1, 1),
            cell(G, "closed", 1, 1, 0),
            cell(G, "dispatched", 1, 1, 1),
            cell(G, "duplicate", 1, 0, 0),
            cell(G, "rejected", 1, 0, 0),
            cell(G, "withdrawn", 1, 0, 0),
            cell(U, "dispatched", 1, 1, 0),
        ]
    );
    // By community (gA1: c1, c3, c5, c6; gA2: c2, c4, c8), and the same split by reporter group.
    let [k1, k2] = &s.communities;
    let community1 = |key: &str| {
        vec![
            cell(key, "dispatched", 2, 2, 1),
            cell(key, "rejected", 1, 0, 0),
            cell(key, "withdrawn", 1, 0, 0),
        ]
    };
    let community2 = |key: &str| {
        vec![
            cell(key, "accepted", 1, 1, 1),
            cell(key, "closed", 1, 1, 0),
            cell(key, "duplicate", 1, 0, 0),
        ]
    };
    let mut want = community1(k1);
    want.extend(community2(k2));
    assert_eq!(cells(s, By::Community, &none, now).await, want);
    let mut want = community2("courier");
    want.extend(community1("food_delivery"));
    assert_eq!(cells(s, By::Group, &none, now).await, want);
    // Filters: community 2 by category; department U by street.
    let in_community2 = Filters {
        community: Some(CommunityCode::parse(k2).unwrap()),
        ..Filters::default()
    };
    assert_eq!(
        cells(s, By::Category, &in_community2, now).await,
        community2("garbage_pile")
    );
    let at_u = Filters {
        department: Some(U.parse().unwrap()),
        ..Filters::default()
    };
    assert_eq!(
        cells(s, By::Street, &at_u, now).await,
        vec![cell(a, "dispatched", 1, 1, 0)]
    );

    // A period of a whole month and days around it (10-31 to 12-01; November from the month
    // rows): every clue of street A, c7 (reported, a case without a deadline) too. By street, by
    // community (month rows too) and by grid (day rows only) alike.
    let around = Period {
        from: "2026-10-31".parse().unwrap(),
        to: "2026-12-02".parse().unwrap(),
    };
    let mut want = street_cells(a, 1, 1);
    want.push(cell(a, "reported", 1, 1, 0));
    want.sort_by(|x, y| (&x.key, &x.status).cmp(&(&y.key, &y.status)));
    assert_eq!(cells_in(s, &around, By::Street, &none, now).await, want);
    let mut by_community = cells_in(s, &around, By::Community, &none, now).await;
    let c7 = cell(k1, "reported", 1, 1, 0);
    assert!(by_community.contains(&c7), "{by_community:?}");
    by_community.retain(|c| c != &c7);
    let mut want = community1(k1);
    want.extend(community2(k2));
    assert_eq!(by_community, want);
    let by_grid = cells_in(s, &around, By::Grid, &none, now).await;
    assert_eq!(
        by_grid.iter().map(|c| c.reports).sum::<u64>(),
        8,
        "{by_grid:?}"
    );

    // The live numbers at 11-06 12:00: November's reports c1–c8 (8), cases c1, c2, c5, c7 (a
    // report is a case until rejected, merged or withdrawn), c8 (5); open c1, c5, c7, c8, overdue
    // c1 and c8; the next deadline c5's.
    let deps = live::LoopDeps {
        ch: s.db.client.clone(),
        reference: std::sync::Arc::new(Reference::load(&data_dir()).unwrap()),
        weights: Default::default(),
        metrics: gridclue_dashboard_api::DashboardMetrics::new(),
        poll: std::time::Duration::from_millis(300),
    };
    let (snapshot, changes_after) = live::snapshot(&deps, china(now)).await.unwrap();
    let k = &snapshot
        .streets
        .iter()
        .find(|x| x.street == s.street)
        .unwrap()
        .kpis;
    assert_eq!((k.reports, k.cases, k.open, k.overdue), (8, 5, 4, 2));
    let gauges = &snapshot.cases[&s.street];
    assert_eq!((gauges.open, gauges.overdue), (4, 2));
    assert_eq!(changes_after, china("2026-11-07 09:00"));
}

#[tokio::test]
async fn status_counts_equal_hand_counts_through_transitions_replays_and_rebuilds() {
    let s = set().await;
    assert_hand_counts(&s).await;
    let exact = gridclue_sink::aggregates::check(&s.db.client)
        .await
        .unwrap();
    assert!(exact.is_exact(), "{exact:?}");
    // Clues inside the district: c1–c8.
    assert_eq!((exact.status_clues, exact.states_clues), (8, 8));

    // A replay behind the sink's back (c5's whole history again): counted until the rebuild,
    // which the check finds.
    let (events, clues) = s.c5.rows(0);
    write_rows(&s.db.client, &events, &clues).await;
    let drift = gridclue_sink::aggregates::check(&s.db.client)
        .await
        .unwrap();
    assert!(drift.status_groups_off > 0, "{drift:?}");
    assert_eq!(drift.status_clues, 9);
    let rebuilt = gridclue_sink::aggregates::rebuild(&s.db.client)
        .await
        .unwrap();
    assert!(rebuilt.is_exact(), "{rebuilt:?}");
    // The live numbers too: they carry the indicators, which the rebuild recomputes — c8, whose
    // report was stored after its acceptance, as the sink counted it.
    assert_hand_counts(&s).await;

    // New facts after the rebuild move the counts on from the rebuilt rows: c5 handled and
    // closed (on time) — street A's dispatched cell keeps c1 only, closed has c2 and c5.
    let t = china;
    let closed =
        s.c5.clone()
            .handled(t("2026-11-06 15:00"))
            .closed(t("2026-11-06 16:00"), 5);
    let (events, clues) = closed.rows(100);
    let new = s.c5.facts.len();
    write_rows(&s.db.client, &events[new..], &clues[new..]).await;
    let a = s.street.as_str();
    let want = vec![
        cell(a, "accepted", 1, 1, 1),
        cell(a, "closed", 2, 2, 0),
        cell(a, "dispatched", 1, 1, 1),
        cell(a, "duplicate", 1, 0, 0),
        cell(a, "rejected", 1, 0, 0),
        cell(a, "withdrawn", 1, 0, 0),
    ];
    let none = Filters::default();
    assert_eq!(cells(&s, By::Street, &none, "2026-11-07 12:00").await, want);
    let check = gridclue_sink::aggregates::check(&s.db.client)
        .await
        .unwrap();
    assert!(check.is_exact(), "{check:?}");

    // Merged as background merges leave them (rows that sum to nothing dropped): the same.
    s.db.execute("OPTIMIZE TABLE status_counts FINAL").await;
    s.db.execute("OPTIMIZE TABLE status_deadlines FINAL").await;
    assert_eq!(cells(&s, By::Street, &none, "2026-11-07 12:00").await, want);
    // Of the deadline rows, the merge leaves those of the open clues with a deadline, c1 and c8:
    // every earlier state's rows summed to nothing and were dropped.
    assert_eq!(
        s.db.scalar("SELECT count() FROM status_deadlines WHERE clues = 1")
            .await,
        2
    );
    assert_eq!(s.db.scalar("SELECT count() FROM status_deadlines").await, 2);
}

/// Sums that went negative (rows written behind the sink's back that take away more than was
/// there) are served as 0 by the live numbers, the indicators, the breakdown, the trend's days
/// and the summary — counts are never negative — instead of wrapping (or overflowing: the snapshot panicked
/// in a debug build); the other counts are served as they are.
#[tokio::test]
async fn negative_sums_are_served_as_zero() {
    let s = set().await;
    s.db.execute(
        "INSERT INTO status_counts (grain, cohort_day, street_code, status, is_case, clues, dated) \
         SELECT grain, cohort_day, street_code, status, is_case, -10 * sum(clues), -10 * sum(dated) \
         FROM status_counts WHERE grain = 'street_month' \
         GROUP BY grain, cohort_day, street_code, status, is_case",
    )
    .await;
    let november_2 = gridclue_sink::indicator_deltas::china_day(china("2026-11-02 12:00"));
    s.db.execute(&format!(
        "INSERT INTO indicator_cohorts (dim, street_code, key, cohort_day, reports, duplicates) \
         VALUES ('street', '{a}', '{a}', {november_2}, -20, -3)",
        a = s.street
    ))
    .await;
    let now = china("2026-11-06 12:00");
    let deps = live::LoopDeps {
        ch: s.db.client.clone(),
        reference: std::sync::Arc::new(Reference::load(&data_dir()).unwrap()),
        weights: Default::default(),
        metrics: gridclue_dashboard_api::DashboardMetrics::new(),
        poll: std::time::Duration::from_millis(300),
    };
    let (snapshot, _) = live::snapshot(&deps, now).await.unwrap();
    let street = &snapshot
        .streets
        .iter()
        .find(|x| x.street == s.street)
        .unwrap()
        .kpis;
    assert_eq!(
        (street.reports, street.cases, street.open, street.overdue),
        (0, 0, 0, 0)
    );
    let d = &snapshot.district;
    assert_eq!((d.reports, d.cases, d.open, d.overdue), (0, 0, 0, 0));
    let gauges = &snapshot.cases[&s.street];
    assert_eq!((gauges.open, gauges.overdue), (0, 0));

    // The indicators of November by street: street A's reports 0 (not -12), its cohort as it is
    // (c1, c8, c2, c5 accepted; c1 and c8 overdue, c2 closed), no duplicate rate from a
    // negative count.
    let plan = gridclue_dashboard_api::indicators::plan(
        &gridclue_dashboard_api::indicators::Reader::District,
        gridclue_dashboard_api::indicators::Params {
            from: "2026-11-01".parse().unwrap(),
            to: "2026-12-01".parse().unwrap(),
            as_of_ms: Some(now),
            by: gridclue_dashboard_api::indicators::By::Street,
            street: None,
        },
        now,
    )
    .unwrap();
    let counts = gridclue_dashboard_api::indicators::query(&s.db.client, &plan)
        .await
        .unwrap();
    let a = counts.iter().find(|c| c.key == s.street.as_str()).unwrap();
    assert_eq!(
        (
            a.reports,
            a.duplicates,
            a.accepted,
            a.closed,
            a.overdue_open
        ),
        (0, 0, 4, 1, 2)
    );

    // The breakdown of November by street reads the month rows, which now sum to -9 times what
    // they held: every cell of street A (one per status its clues are in) is served as zeros.
    let november = Period {
        from: "2026-11-01".parse().unwrap(),
        to: "2026-12-01".parse().unwrap(),
    };
    let a = s.street.as_str();
    assert_eq!(
        cells_in(
            &s,
            &november,
            By::Street,
            &Filters::default(),
            "2026-11-06 12:00"
        )
        .await,
        [
            "accepted",
            "closed",
            "dispatched",
            "duplicate",
            "rejected",
            "reported",
            "withdrawn"
        ]
        .map(|status| cell(a, status, 0, 0, 0))
    );

    // The trend's days: 11-03 had c2's report and acceptance; a row taking 5 reports away
    // leaves its reports at 0 (not -4) and its acceptance as it is. 11-02 is untouched: c1's and
    // c8's reports, c1's acceptance (c8's, stored before its report, has no place to count in).
    let november_3 = gridclue_sink::indicator_deltas::china_day(china("2026-11-03 12:00"));
    s.db.execute(&format!(
        "INSERT INTO trend_days (grain, day, street_code, reports) \
         VALUES ('street', {november_3}, '{a}', -5)"
    ))
    .await;
    let days = gridclue_dashboard_api::trend::query_days(&s.db.client, &p(), &Filters::default())
        .await
        .unwrap();
    let day = |d: &str| {
        let start = china(d);
        let row = days.iter().find(|h| h.hour == start).unwrap();
        (row.reports, row.accepted, row.closed, row.overdue)
    };
    assert_eq!(day("2026-11-02 00:00"), (2, 1, 0, 0));
    assert_eq!(day("2026-11-03 00:00"), (0, 1, 0, 0));

    // The summary reads clue_counts: a row taking 20 reports away from street A leaves its 8
    // reports at 0 (not -12); its cases (c1, c2, c5, c7, c8: c3 was withdrawn, c4 is a
    // duplicate, c6 was rejected) and the point just outside it (o1) as they are.
    s.db.execute(&format!(
        "INSERT INTO clue_counts (day, street_code, category, placement, report_count, case_count) \
         VALUES ('2026-11-02', '{a}', 'garbage_pile', 'inside', -20, 0)"
    ))
    .await;
    let scope = gridclue_dashboard_api::summary::Scope::Street {
        street_code: s.street,
    };
    let cells = gridclue_dashboard_api::summary::query(&s.db.client, &scope)
        .await
        .unwrap();
    let cells: Vec<_> = cells
        .iter()
        .map(|c| (c.street, c.reports, c.cases, c.outside))
        .collect();
    assert_eq!(cells, [(Some(s.street), 0, 5, 1)]);
}
