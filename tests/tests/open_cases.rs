//! The open-case projection (migration 0014, `open_cases`) the lists of open clues read their
//! candidates from: on a small hand-built set of clues, the lists (`overdue`, `due_soon`,
//! `stale`, and `newest`, which reads `dashboard_clues`) are the ones worked out by hand below,
//! and equal the lists' definition read whole from `dashboard_clues FINAL` (every page of two,
//! walked with the cursor), after the first facts, after transitions that move clues between
//! lists and close one, after replays written behind the sink's back, after the projection's
//! parts are merged and after `rebuild-aggregates`.
//!
//! Needs the test ClickHouse (`GRIDCLUE_TEST_CLICKHOUSE_URL`).
//!
//! Street A, grid gA1, garbage piles routed to greening_city_appearance; now = 11-10 12:00
//! (China time). First facts:
//! - c1: reported 11-01 09:00, accepted 10:00 (deadline 11-03 10:00), dispatched 10:30;
//! - c2: reported 11-01 11:00, accepted 12:00 (deadline 11-02 12:00);
//! - c3: reported 11-02 09:00, accepted 10:00 (deadline 11-05 09:00);
//! - c4: reported 11-03 09:00 (not accepted: no deadline);
//! - c5: reported 11-04 09:00, rejected 10:00;
//! - c6: reported 11-05 09:00, accepted 10:00 (deadline 2031-01-01);
//! - c7: reported 11-06 09:00, a duplicate of c1 at once;
//! - c8: reported 11-07 09:00 outside the district (no list shows it).
//!
//! Then (transitions):
//! - c2: started and handled 11-06 09:00, closed 10:00 (leaves the open lists);
//! - c3: deadline postponed 11-06 11:00 to 11-10 13:00 (from overdue to due soon: 20 % of the
//!   195 h from acceptance to the new deadline is 39 h, so yellow from 11-08 22:00);
//! - c6: supervised 11-07 09:00 (only its last update moves);
//! - c4: accepted 11-08 09:00 (deadline 11-09 09:00: overdue now);
//! - c1: started and handled 11-08 10:00 (still open, still overdue).

use gridclue_dashboard_api::lists::{self, Cursor, List, ListRow};
use gridclue_dashboard_api::params::Filters;
use gridclue_dashboard_api::Reference;
use gridclue_tests::ch::TestDb;
use gridclue_tests::data_dir;
use gridclue_tests::facts::{china, first_grid, write_rows, History, ReportSpec};

const OPEN: &str = "('reported', 'accepted', 'dispatched', 'in_progress', 'handled')";

/// A list's definition, read whole from the latest states. Bound: now (per list), has-cursor,
/// key ×2, id, limit.
fn definition_sql(list: List) -> String {
    let open = format!("status IN {OPEN}");
    let (condition, key, cmp, dir) = match list {
        List::Overdue => (
            format!("{open} AND deadline_ms > 0 AND deadline_ms < ?"),
            "deadline_ms",
            ">",
            "ASC",
        ),
        List::DueSoon => (
            format!(
                "{open} AND deadline_ms > 0 AND deadline_ms >= ? \
                 AND ? >= least(if(yellow_at_ms = 0, \
                     toUInt64(deadline_ms - toUInt64(if(deadline_ms > accepted_at_ms, deadline_ms - accepted_at_ms, 0) * 0.2)), \
                     yellow_at_ms), deadline_ms)"
            ),
            "deadline_ms",
            ">",
            "ASC",
        ),
        List::Stale => (open, "updated_at_ms", ">", "ASC"),
        List::Newest => ("1".into(), "reported_at_ms", "<", "DESC"),
    };
    format!(
        "SELECT id, street_code, community_code, grid_code, category, department_now, status, \
                accepted_at_ms, deadline_ms, yellow_at_ms, updated_at_ms, reported_at_ms, \
                {key} AS sort_key \
         FROM (SELECT toString(clue_id) AS id, street_code, community_code, grid_code, category, \
                      department_now, status, accepted_at_ms, deadline_ms, yellow_at_ms, \
                      updated_at_ms, reported_at_ms \
               FROM dashboard_clues FINAL) \
         WHERE {condition} AND (? = 0 OR {key} {cmp} ? OR ({key} = ? AND id {cmp} ?)) \
         ORDER BY {key} {dir}, id {dir} \
         LIMIT ?"
    )
}

fn now_binds(list: List) -> usize {
    match list {
        List::Overdue => 1,
        List::DueSoon => 2,
        List::Stale | List::Newest => 0,
    }
}

async fn definition(db: &TestDb, list: List, now_ms: u64) -> Vec<ListRow> {
    let mut q = db.client.query(&definition_sql(list));
    for _ in 0..now_binds(list) {
        q = q.bind(now_ms);
    }
    q.bind(0u8)
        .bind(0u64)
        .bind(0u64)
        .bind("")
        .bind(1_000u32)
        .fetch_all()
        .await
        .unwrap()
}

/// Every page of two of `list`, walked with the cursor as a client would, joined.
async fn paged(db: &TestDb, list: List, now_ms: u64) -> Vec<ListRow> {
    let mut all = Vec::new();
    let mut after: Option<Cursor> = None;
    for _ in 0..20 {
        let rows = lists::query(
            &db.client,
            list,
            &Filters::default(),
            2,
            after.as_ref(),
            now_ms,
        )
        .await
        .unwrap();
        let more = rows.len() > 2;
        all.extend(rows.into_iter().take(2));
        if !more {
            return all;
        }
        let last = all.last().unwrap();
        after = Some(Cursor {
            list,
            key: last.sort_key,
            clue_id: last.id.clone(),
        });
    }
    panic!("runaway pagination of {list:?}");
}

struct Clues {
    c: Vec<History>,
}

impl Clues {
    fn names(&self, ids: &[String]) -> Vec<String> {
        ids.iter()
            .map(|id| {
                let i = self
                    .c
                    .iter()
                    .position(|h| h.clue.to_string() == *id)
                    .unwrap_or_else(|| panic!("{id} is none of the clues"));
                format!("c{}", i + 1)
            })
            .collect()
    }
}

/// Checks every list against the hand-worked names and the definition.
async fn check_lists(db: &TestDb, clues: &Clues, now: u64, expected: [&[&str]; 4], when: &str) {
    for (list, want) in List::ALL.into_iter().zip(expected) {
        let got = paged(db, list, now).await;
        let ids: Vec<String> = got.iter().map(|r| r.id.clone()).collect();
        assert_eq!(clues.names(&ids), want, "{list:?} {when}");
        assert_eq!(got, definition(db, list, now).await, "{list:?} {when}");
    }
}

/// Writes the facts of `histories` from fact `from` of each on (the sink's own fold and rows).
async fn write_from(db: &TestDb, histories: &[(&History, usize)]) {
    let (mut events, mut states) = (Vec::new(), Vec::new());
    for (h, from) in histories {
        let (e, s) = h.rows(0);
        events.extend(e.into_iter().skip(*from));
        states.extend(s.into_iter().skip(*from));
    }
    write_rows(&db.client, &events, &states).await;
}

/// What the open cases' rows sum to: (clue, version) and the sum of signs, for every state
/// whose rows do not cancel.
async fn open_states(db: &TestDb, clues: &Clues) -> Vec<(String, u32, i64)> {
    #[derive(clickhouse::Row, serde::Deserialize)]
    struct State {
        id: String,
        version: u32,
        sum: i64,
    }
    let rows: Vec<State> = db
        .client
        .query(
            "SELECT toString(clue_id) AS id, version, sum(toInt64(sign)) AS sum FROM open_cases \
             GROUP BY clue_id, version HAVING sum != 0",
        )
        .fetch_all()
        .await
        .unwrap();
    let mut out: Vec<(String, u32, i64)> = rows
        .into_iter()
        .map(|s| (clues.names(&[s.id])[0].clone(), s.version, s.sum))
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn lists_read_from_the_open_cases_equal_their_definition_through_transitions_and_replays() {
    let db = TestDb::create("open_cases").await;
    gridclue_sink::migrations::apply(&db.client).await.unwrap();
    let streets: Vec<String> = Reference::load(&data_dir())
        .unwrap()
        .streets
        .iter()
        .map(|s| s.code.to_string())
        .collect();
    let spec = ReportSpec::new(
        first_grid(&streets[0]),
        "garbage_pile",
        "greening_city_appearance",
    );
    let t = china;
    let now = t("2026-11-10 12:00");

    let c1 = History::reported(&spec, t("2026-11-01 09:00"))
        .accepted(t("2026-11-01 10:00"), Some(t("2026-11-03 10:00")))
        .dispatched(t("2026-11-01 10:30"), "greening_city_appearance");
    let c2 = History::reported(&spec, t("2026-11-01 11:00"))
        .accepted(t("2026-11-01 12:00"), Some(t("2026-11-02 12:00")));
    let c3 = History::reported(&spec, t("2026-11-02 09:00"))
        .accepted(t("2026-11-02 10:00"), Some(t("2026-11-05 09:00")));
    let c4 = History::reported(&spec, t("2026-11-03 09:00"));
    let c5 = History::reported(&spec, t("2026-11-04 09:00")).rejected(t("2026-11-04 10:00"));
    let c6 = History::reported(&spec, t("2026-11-05 09:00"))
        .accepted(t("2026-11-05 10:00"), Some(t("2031-01-01 00:00")));
    let c7 = History::reported(&spec.clone().repeating(c1.clue), t("2026-11-06 09:00"));
    let c8 = History::reported_outside(&spec, t("2026-11-07 09:00"));
    let first = [&c1, &c2, &c3, &c4, &c5, &c6, &c7, &c8];
    write_from(&db, &first.map(|h| (h, 0))).await;
    let mut clues = Clues {
        c: first.into_iter().cloned().collect(),
    };

    // Overdue by deadline: c2 (11-02 12:00), c1 (11-03 10:00), c3 (11-05 09:00); nothing yellow;
    // stale by last update: c1 10:30 and c2 12:00 on 11-01, c3 11-02, c4 11-03, c6 11-05; newest
    // every report inside the district, c8 (outside) not.
    let newest: &[&str] = &["c7", "c6", "c5", "c4", "c3", "c2", "c1"];
    check_lists(
        &db,
        &clues,
        now,
        [
            &["c2", "c1", "c3"],
            &[],
            &["c1", "c2", "c3", "c4", "c6"],
            newest,
        ],
        "after the first facts",
    )
    .await;
    // One state per open clue: c1 at its dispatch (seq 2), c2 and c3 at their acceptance,
    // c4 at its report, c6 at its acceptance.
    assert_eq!(
        open_states(&db, &clues).await,
        [
            ("c1".into(), 2, 1),
            ("c2".into(), 1, 1),
            ("c3".into(), 1, 1),
            ("c4".into(), 0, 1),
            ("c6".into(), 1, 1)
        ]
    );

    // The transitions, written as the sink writes new facts (only the facts after those
    // stored). c1 and c2 are started and handled (two facts), c2 then closed.
    let lens: Vec<usize> = clues.c.iter().map(|h| h.facts.len()).collect();
    let c1 = clues.c[0].clone().handled(t("2026-11-08 10:00"));
    let c2 = clues.c[1]
        .clone()
        .handled(t("2026-11-06 09:00"))
        .closed(t("2026-11-06 10:00"), 20);
    let c3 = clues.c[2]
        .clone()
        .postponed(t("2026-11-06 11:00"), t("2026-11-10 13:00"));
    let c4 = clues.c[3]
        .clone()
        .accepted(t("2026-11-08 09:00"), Some(t("2026-11-09 09:00")));
    let c6 = clues.c[5].clone().supervised(t("2026-11-07 09:00"));
    write_from(
        &db,
        &[
            (&c2, lens[1]),
            (&c3, lens[2]),
            (&c6, lens[5]),
            (&c4, lens[3]),
            (&c1, lens[0]),
        ],
    )
    .await;
    clues.c[0] = c1;
    clues.c[1] = c2;
    clues.c[2] = c3;
    clues.c[3] = c4;
    clues.c[5] = c6;

    // Overdue: c1 (11-03 10:00), c4 (11-09 09:00); due soon: c3; stale: c3 (11-06 11:00), c6
    // (11-07 09:00), c4 (11-08 09:00), c1 (11-08 10:00); newest as before.
    let after_transitions: [&[&str]; 4] =
        [&["c1", "c4"], &["c3"], &["c3", "c6", "c4", "c1"], newest];
    check_lists(&db, &clues, now, after_transitions, "after the transitions").await;
    let latest = [
        ("c1".to_owned(), 4, 1),
        ("c3".into(), 2, 1),
        ("c4".into(), 1, 1),
        ("c6".into(), 2, 1),
    ];
    assert_eq!(open_states(&db, &clues).await, latest);
    let check = gridclue_sink::aggregates::check(&db.client).await.unwrap();
    assert!(check.is_exact(), "{check:?}");
    assert_eq!(check.open_clues, 4);

    // Replays behind the sink's back: c3's and the closed c2's whole histories again, c1's last
    // fact again. Every list stays; the states left are the same (c1's and c3's latest counted
    // twice, c1's state before its last fact cancelled twice).
    write_from(&db, &[(&clues.c[2], 0), (&clues.c[1], 0)]).await;
    let c1_last = clues.c[0].facts.len() - 1;
    write_from(&db, &[(&clues.c[0], c1_last)]).await;
    check_lists(&db, &clues, now, after_transitions, "after the replays").await;
    assert_eq!(
        open_states(&db, &clues).await,
        [
            ("c1".to_owned(), 3, -1),
            ("c1".into(), 4, 2),
            ("c3".into(), 2, 2),
            ("c4".into(), 1, 1),
            ("c6".into(), 2, 1),
        ]
    );
    let check = gridclue_sink::aggregates::check(&db.client).await.unwrap();
    assert_eq!(
        (
            check.open_clues,
            check.open_cases_missing,
            check.open_cases_extra
        ),
        (4, 0, 0),
        "{check:?}"
    );

    // Merged parts: the lists are the same.
    db.execute("OPTIMIZE TABLE open_cases FINAL").await;
    db.execute("OPTIMIZE TABLE dashboard_clues FINAL").await;
    check_lists(&db, &clues, now, after_transitions, "after the merges").await;

    // The rebuild leaves one row per open clue, its latest state.
    let rebuilt = gridclue_sink::aggregates::rebuild(&db.client)
        .await
        .unwrap();
    assert!(rebuilt.is_exact(), "{rebuilt:?}");
    assert_eq!(db.scalar("SELECT count() FROM open_cases").await, 4);
    assert_eq!(open_states(&db, &clues).await, latest);
    check_lists(&db, &clues, now, after_transitions, "after the rebuild").await;

    // An instant later, c3's deadline has passed: it moves from due soon to overdue.
    let later = t("2026-11-10 13:00") + 1;
    check_lists(
        &db,
        &clues,
        later,
        [&["c1", "c4", "c3"], &[], &["c3", "c6", "c4", "c1"], newest],
        "after c3's deadline",
    )
    .await;
}
