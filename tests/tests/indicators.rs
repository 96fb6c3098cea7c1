//! `GET /v1/indicators` (dashboard-api) against the real test ClickHouse server
//! (`GRIDCLUE_TEST_CLICKHOUSE_URL`): a hand-built set of clue histories — written into
//! `clue_events` and `clues` with the sink's own fold and row code — and the indicators each
//! period, instant and grouping must give, worked out by hand below (not by a second
//! implementation). Scope refusals, parameter refusals, and a replay that changes nothing.
//!
//! The histories (China times, period 2026-11-02 … 2026-11-09, i.e. `to` = 2026-11-09):
//!
//! Street A (garbage piles, routed to greening_city_appearance):
//! - A1 accepted 11-02 10:00, deadline 11-04 10:00, closed 11-03 15:00 (5 working h), rated 5
//!   on 11-04 09:00;
//! - A2 accepted 11-02 11:00, deadline 11-04 11:00, closed exactly at the deadline (14 h), rated
//!   3 on 11-06;
//! - A3 accepted 11-03 09:00, deadline 11-05 09:00, postponed on 11-04 10:00 to 11-06 09:00,
//!   rework on 11-05 16:00, closed 11-06 10:00 (20 h): postponed, then late;
//! - A4 accepted 11-03 10:00, deadline 11-05 10:00, dispatched to urban_management, postponed
//!   on 11-05 13:00 to 11-06 17:00, closed 11-06 16:00 (16 h): on time thanks to the
//!   postponement;
//! - A5 accepted 11-04 09:00, deadline 11-05 09:00, dispatched to water_affairs, supervised
//!   11-05 10:00, returned 11-05 11:00, dispatched to urban_management 11-06 09:00; open;
//! - A6 reported 11-05 11:00, accepted 11-06 09:00, deadline 11-25; open;
//! - A7 accepted 11-02 12:00 and rejected 11-02 13:00 (a report, not a case);
//! - A8 accepted 11-01 20:00 (before the period), closed 11-03;
//! - A9 accepted 11-08 23:59 (the period's last minute), deadline 11-10 12:00; open;
//! - A10 reported 11-08 23:30, accepted 11-09 00:00 (after the period); open;
//! - A11 reported 11-04 12:00 and withdrawn (a report, not a case);
//! - D1 reported 11-03 12:00, a duplicate of A1 at once (dedupe verdict);
//! - D2 reported 11-03 13:00, merged into A1 on 11-05 14:00.
//!
//! Street B (manhole covers, routed to and dispatched to water_affairs):
//! - B1 accepted 11-02 09:00, deadline 11-03 09:00, closed 1 ms after it (7 h), rated 4;
//! - B2 accepted 11-02 10:00, deadline 11-02 17:00, never closed, rejected on 11-21;
//! - B3 accepted 11-03 09:00, deadline 11-06 09:00, rework 11-04, closed 11-05 10:00 (8 h).
//!
//! Street C (street vending, routed to urban_management): C1 accepted 11-05 09:00, deadline
//! 11-30; C2 accepted 11-06 09:00 without a deadline; C3 reported 10-28 (before the period),
//! accepted 11-03 09:00, deadline 12-30, supervised 11-04. All open: nothing is due (every rate
//! with due as denominator is null, the score is null). Every other street has no clue.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use gridclue_core::codes::CommunityCode;
use gridclue_core::tokens::{TokenFile, TokenKind, TokenStore};
use gridclue_dashboard_api::{AppState, Reference};
use gridclue_tests::ch::TestDb;
use gridclue_tests::facts::{china, street_reports, write, write_rows, History};
use gridclue_tests::{data_dir, scratch};
use serde_json::Value;
use tower::ServiceExt;

struct Fixture {
    db: TestDb,
    app: axum::Router,
    district: String,
    street_a_token: String,
    reporter: String,
    department: String,
    streets: [String; 3],
    histories: BTreeMap<&'static str, History>,
    reference: Reference,
    _dir: tempfile::TempDir,
}

fn histories(streets: &[String; 3]) -> BTreeMap<&'static str, History> {
    let t = china;
    let [a, b, c] = street_reports(streets);
    let green = "greening_city_appearance";
    let mut h = BTreeMap::new();
    let a1 = History::reported(&a, t("2026-11-02 09:00"))
        .accepted(t("2026-11-02 10:00"), Some(t("2026-11-04 10:00")))
        .dispatched(t("2026-11-02 10:30"), green)
        .handled(t("2026-11-03 14:00"))
        .closed(t("2026-11-03 15:00"), 5)
        .rated(t("2026-11-04 09:00"), 5);
    let a1_id = a1.clue;
    h.insert("A1", a1);
    h.insert(
        "A2",
        History::reported(&a, t("2026-11-02 10:30"))
            .accepted(t("2026-11-02 11:00"), Some(t("2026-11-04 11:00")))
            .dispatched(t("2026-11-02 11:30"), green)
            .handled(t("2026-11-04 10:00"))
            .closed(t("2026-11-04 11:00"), 14)
            .rated(t("2026-11-06 10:00"), 3),
    );
    h.insert(
        "A3",
        History::reported(&a, t("2026-11-03 08:00"))
            .accepted(t("2026-11-03 09:00"), Some(t("2026-11-05 09:00")))
            .dispatched(t("2026-11-03 09:30"), green)
            .postponed(t("2026-11-04 10:00"), t("2026-11-06 09:00"))
            .handled(t("2026-11-05 15:00"))
            .reworked(t("2026-11-05 16:00"))
            .handled(t("2026-11-06 09:30"))
            .closed(t("2026-11-06 10:00"), 20),
    );
    h.insert(
        "A4",
        History::reported(&a, t("2026-11-03 09:00"))
            .accepted(t("2026-11-03 10:00"), Some(t("2026-11-05 10:00")))
            .dispatched(t("2026-11-03 11:00"), "urban_management")
            .postponed(t("2026-11-05 13:00"), t("2026-11-06 17:00"))
            .handled(t("2026-11-06 15:00"))
            .closed(t("2026-11-06 16:00"), 16),
    );
    h.insert(
        "A5",
        History::reported(&a, t("2026-11-04 08:00"))
            .accepted(t("2026-11-04 09:00"), Some(t("2026-11-05 09:00")))
            .dispatched(t("2026-11-04 10:00"), "water_affairs")
            .supervised(t("2026-11-05 10:00"))
            .returned(t("2026-11-05 11:00"))
            .dispatched(t("2026-11-06 09:00"), "urban_management"),
    );
    h.insert(
        "A6",
        History::reported(&a, t("2026-11-05 11:00"))
            .accepted(t("2026-11-06 09:00"), Some(t("2026-11-25 09:00"))),
    );
    h.insert(
        "A7",
        History::reported(&a, t("2026-11-02 11:30"))
            .accepted(t("2026-11-02 12:00"), Some(t("2026-11-04 12:00")))
            .rejected(t("2026-11-02 13:00")),
    );
    h.insert(
        "A8",
        History::reported(&a, t("2026-11-01 19:00"))
            .accepted(t("2026-11-01 20:00"), Some(t("2026-11-03 20:00")))
            .dispatched(t("2026-11-01 21:00"), green)
            .handled(t("2026-11-03 09:00"))
            .closed(t("2026-11-03 10:00"), 6),
    );
    h.insert(
        "A9",
        History::reported(&a, t("2026-11-08 23:00"))
            .accepted(t("2026-11-08 23:59"), Some(t("2026-11-10 12:00"))),
    );
    h.insert(
        "A10",
        History::reported(&a, t("2026-11-08 23:30"))
            .accepted(t("2026-11-09 00:00"), Some(t("2026-11-11 00:00"))),
    );
    h.insert(
        "A11",
        History::reported(&a, t("2026-11-04 12:00")).withdrawn(t("2026-11-04 13:00")),
    );
    let dup = a.clone().repeating(a1_id);
    h.insert("D1", History::reported(&dup, t("2026-11-03 12:00")));
    h.insert(
        "D2",
        History::reported(&a, t("2026-11-03 13:00")).merged(t("2026-11-05 14:00"), a1_id),
    );
    let water = "water_affairs";
    h.insert(
        "B1",
        History::reported(&b, t("2026-11-02 08:00"))
            .accepted(t("2026-11-02 09:00"), Some(t("2026-11-03 09:00")))
            .dispatched(t("2026-11-02 09:10"), water)
            .handled(t("2026-11-03 08:00"))
            .closed(t("2026-11-03 09:00:00.001"), 7)
            .rated(t("2026-11-04 10:00"), 4),
    );
    h.insert(
        "B2",
        History::reported(&b, t("2026-11-02 09:30"))
            .accepted(t("2026-11-02 10:00"), Some(t("2026-11-02 17:00")))
            .rejected(t("2026-11-21 10:00")),
    );
    h.insert(
        "B3",
        History::reported(&b, t("2026-11-03 08:00"))
            .accepted(t("2026-11-03 09:00"), Some(t("2026-11-06 09:00")))
            .dispatched(t("2026-11-03 09:10"), water)
            .handled(t("2026-11-04 09:00"))
            .reworked(t("2026-11-04 10:00"))
            .handled(t("2026-11-05 09:00"))
            .closed(t("2026-11-05 10:00"), 8),
    );
    h.insert(
        "C1",
        History::reported(&c, t("2026-11-05 08:00"))
            .accepted(t("2026-11-05 09:00"), Some(t("2026-11-30 09:00"))),
    );
    h.insert(
        "C2",
        History::reported(&c, t("2026-11-06 08:00")).accepted(t("2026-11-06 09:00"), None),
    );
    h.insert(
        "C3",
        History::reported(&c, t("2026-10-28 09:00"))
            .accepted(t("2026-11-03 09:00"), Some(t("2026-12-30 09:00")))
            .supervised(t("2026-11-04 09:00")),
    );
    h
}

async fn fixture() -> Fixture {
    let db = TestDb::create("indicators").await;
    gridclue_sink::migrations::apply(&db.client).await.unwrap();
    let reference = Reference::load(&data_dir()).unwrap();
    let streets = [0, 1, 2].map(|i| reference.streets[i].code.to_string());
    let histories = histories(&streets);
    let all: Vec<History> = histories.values().cloned().collect();
    write(&db.client, &all).await;

    let dir = scratch("indicator-tokens");
    let path = dir.path().join("tokens.json");
    let mut f = TokenFile::default();
    let mut issue = |kind, scope: Option<&str>| gridclue_tests::issue_token(&mut f, kind, scope);
    let district = issue(TokenKind::District, None);
    let street_a_token = issue(TokenKind::Street, Some(&streets[0]));
    let reporter = issue(TokenKind::Reporter, None);
    let department = issue(TokenKind::Department, Some("water_affairs"));
    f.write(&path).unwrap();
    let state = AppState::new(
        db.client.clone(),
        TokenStore::open(&path).unwrap(),
        reference.clone(),
        gridclue_core::calendar::Calendar::load(&data_dir().join("calendar.json")).unwrap(),
    );
    Fixture {
        db,
        app: gridclue_dashboard_api::app(state),
        district,
        street_a_token,
        reporter,
        department,
        streets,
        histories,
        reference,
        _dir: dir,
    }
}

async fn get(app: &axum::Router, path: &str, token: Option<&str>) -> (StatusCode, Value) {
    let mut req = Request::get(path);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    if status != StatusCode::OK {
        assert_eq!(
            resp.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
    }
    let body = axum::body::to_bytes(resp.into_body(), 16 << 20)
        .await
        .unwrap();
    (status, serde_json::from_slice(&body).unwrap())
}

const PERIOD: &str = "from=2026-11-02&to=2026-11-09";
/// 2026-11-20 12:00 in China.
const LATE: &str = "as_of=2026-11-20T12:00:00%2B08:00";
/// 2026-11-05 12:00 in China (epoch milliseconds).
const MIDWEEK_MS: u64 = 1_793_851_200_000;

impl Fixture {
    async fn answer(&self, query: &str, token: &str) -> Value {
        let (status, body) = get(&self.app, &format!("/v1/indicators?{query}"), Some(token)).await;
        assert_eq!(status, StatusCode::OK, "{query}: {body}");
        body
    }
}

/// Expected values of one row, worked out by hand.
struct Expect {
    /// accepted, due, closed, closed_on_time, verified, reworked, postponed, supervised,
    /// overdue_open, rated, reports, duplicates
    counts: [u64; 12],
    closure_rate: Option<f64>,
    on_time_rate: Option<f64>,
    rework_rate: Option<f64>,
    postpone_rate: Option<f64>,
    duplicate_rate: Option<f64>,
    mean_hours_to_close: Option<f64>,
    satisfaction: Option<f64>,
    score: Option<f64>,
}

const COUNT_FIELDS: [&str; 12] = [
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
];

fn check(row: &Value, want: &Expect, what: &str) {
    let counts: Vec<u64> = COUNT_FIELDS
        .iter()
        .map(|f| {
            row[f]
                .as_u64()
                .unwrap_or_else(|| panic!("{what}: {f} in {row}"))
        })
        .collect();
    assert_eq!(counts, want.counts.to_vec(), "{what}: counts {row}");
    for (field, expected) in [
        ("closure_rate", want.closure_rate),
        ("on_time_rate", want.on_time_rate),
        ("rework_rate", want.rework_rate),
        ("postpone_rate", want.postpone_rate),
        ("duplicate_rate", want.duplicate_rate),
        ("mean_hours_to_close", want.mean_hours_to_close),
        ("satisfaction", want.satisfaction),
        ("score", want.score),
    ] {
        match (expected, row[field].as_f64()) {
            (None, _) => assert!(
                row[field].is_null(),
                "{what}: {field} should be null: {row}"
            ),
            (Some(x), Some(got)) => assert!(
                (x - got).abs() < 1e-9,
                "{what}: {field} = {got}, expected {x}"
            ),
            (Some(x), None) => panic!("{what}: {field} is {}, expected {x}", row[field]),
        }
    }
}

fn row<'a>(answer: &'a Value, key: &str) -> &'a Value {
    answer["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"] == key)
        .unwrap_or_else(|| panic!("no row {key} in {answer}"))
}

fn keys(answer: &Value) -> Vec<String> {
    answer["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["key"].as_str().unwrap().to_owned())
        .collect()
}

// Street A, B and C and the district as of 2026-11-20 12:00.
fn street_a_late() -> Expect {
    Expect {
        // A1–A6 and A9; due: the four closed, A5 (11-05) and A9 (11-10), not A6 (11-25); on
        // time: A1, A2 (exactly at the deadline), A4 (before its postponed deadline), not A3;
        // reports: A1–A7, A9–A11, D1, D2.
        counts: [7, 6, 4, 3, 4, 1, 2, 1, 2, 2, 12, 2],
        closure_rate: Some(4.0 / 6.0),
        on_time_rate: Some(3.0 / 6.0),
        rework_rate: Some(1.0 / 4.0),
        postpone_rate: Some(2.0 / 7.0),
        duplicate_rate: Some(2.0 / 12.0),
        // (5 + 14 + 20 + 16) / 4
        mean_hours_to_close: Some(13.75),
        satisfaction: Some(4.0),
        // 25 + 20 + 7.5 + 7.142857…
        score: Some(59.642_857_142_857),
    }
}

fn street_b_late() -> Expect {
    Expect {
        // B2 is overdue and still a case: its rejection (11-21) comes after as_of. B1 is late
        // by 1 ms.
        counts: [3, 3, 2, 1, 2, 1, 0, 0, 1, 1, 3, 0],
        closure_rate: Some(2.0 / 3.0),
        on_time_rate: Some(1.0 / 3.0),
        rework_rate: Some(0.5),
        postpone_rate: Some(0.0),
        duplicate_rate: Some(0.0),
        mean_hours_to_close: Some(7.5),
        satisfaction: Some(4.0),
        // 16.666… + 20 + 5 + 10
        score: Some(51.666_666_666_667),
    }
}

fn street_c_late() -> Expect {
    Expect {
        // C1, C2, C3; C3's report (10-28) is not one of the period's reports.
        counts: [3, 0, 0, 0, 0, 0, 0, 1, 0, 0, 2, 0],
        closure_rate: None,
        on_time_rate: None,
        rework_rate: None,
        postpone_rate: Some(0.0),
        duplicate_rate: Some(0.0),
        mean_hours_to_close: None,
        satisfaction: None,
        score: None,
    }
}

fn nothing() -> Expect {
    Expect {
        counts: [0; 12],
        closure_rate: None,
        on_time_rate: None,
        rework_rate: None,
        postpone_rate: None,
        duplicate_rate: None,
        mean_hours_to_close: None,
        satisfaction: None,
        score: None,
    }
}

fn district_late() -> Expect {
    Expect {
        counts: [13, 9, 6, 4, 6, 2, 2, 2, 3, 3, 17, 2],
        closure_rate: Some(6.0 / 9.0),
        on_time_rate: Some(4.0 / 9.0),
        rework_rate: Some(2.0 / 6.0),
        postpone_rate: Some(2.0 / 13.0),
        duplicate_rate: Some(2.0 / 17.0),
        // (5 + 14 + 20 + 16 + 7 + 8) / 6
        mean_hours_to_close: Some(70.0 / 6.0),
        // (5 + 3 + 4) / 3
        satisfaction: Some(4.0),
        // 22.222… + 20 + 6.666… + 8.461538…
        score: Some(57.350_427_350_427),
    }
}

#[tokio::test]
async fn indicators_by_street_as_of_an_instant() {
    let f = fixture().await;
    let [a, b, c] = &f.streets;
    let answer = f.answer(&format!("{PERIOD}&{LATE}"), &f.district).await;
    assert_eq!(
        (
            &answer["from"],
            &answer["to"],
            &answer["by"],
            &answer["as_of"]
        ),
        (
            &Value::from("2026-11-02"),
            &Value::from("2026-11-09"),
            &Value::from("street"),
            &Value::from("2026-11-20T12:00:00.000+08:00")
        )
    );
    check(row(&answer, a), &street_a_late(), "A");
    check(row(&answer, b), &street_b_late(), "B");
    check(row(&answer, c), &street_c_late(), "C");
    check(&answer["total"], &district_late(), "district");
    // Every street of the map is a row; the ones without clues have nothing (and null rates).
    assert_eq!(answer["rows"].as_array().unwrap().len(), 13);
    let quiet = f.reference.streets[3].code.to_string();
    check(row(&answer, &quiet), &nothing(), "a street without clues");
    assert_eq!(
        row(&answer, a)["name"],
        f.reference.streets[0].name.as_str()
    );
    // Ranked by score: A, then B; the null scores after them, by code; ranks only for scores.
    let ranked = keys(&answer);
    assert_eq!(&ranked[..3], &[a.clone(), b.clone(), c.clone()]);
    let ranks: Vec<&Value> = answer["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["rank"])
        .collect();
    assert_eq!(
        (ranks[0], ranks[1], ranks[2]),
        (&1.into(), &2.into(), &Value::Null)
    );

    // Mid-week, 2026-11-05 12:00: later facts do not count. A3's postponement (11-04) moved its
    // deadline past as_of, A4's (11-05 13:00) had not yet: A4 is due and overdue; A3's rework
    // (16:00), A2's rating (11-06) and D2's merge (14:00) have not happened; A6 is not accepted.
    let mid = f
        .answer(&format!("{PERIOD}&as_of={MIDWEEK_MS}"), &f.district)
        .await;
    check(
        row(&mid, a),
        &Expect {
            // A1–A5; due: A1, A2 (closed), A4 and A5 (deadlines passed); reports: A1–A7, A11,
            // D1, D2 (A6 was reported at 11:00).
            counts: [5, 4, 2, 2, 2, 0, 1, 1, 2, 1, 10, 1],
            closure_rate: Some(0.5),
            on_time_rate: Some(0.5),
            rework_rate: Some(0.0),
            postpone_rate: Some(1.0 / 5.0),
            duplicate_rate: Some(1.0 / 10.0),
            mean_hours_to_close: Some(9.5),
            satisfaction: Some(5.0),
            // 25 + 15 + 10 + 8
            score: Some(58.0),
        },
        "A mid-week",
    );
    check(row(&mid, b), &street_b_late(), "B mid-week");
    check(
        row(&mid, c),
        &Expect {
            // C1 and C3 (supervised 11-04); C1's report.
            counts: [2, 0, 0, 0, 0, 0, 0, 1, 0, 0, 1, 0],
            postpone_rate: Some(0.0),
            duplicate_rate: Some(0.0),
            ..nothing()
        },
        "C mid-week",
    );
    // After B2's rejection (11-21) it is no case any more (still a report).
    let after = f
        .answer(&format!("{PERIOD}&as_of=2026-11-22T00:00:00Z"), &f.district)
        .await;
    check(
        row(&after, b),
        &Expect {
            counts: [2, 2, 2, 1, 2, 1, 0, 0, 0, 1, 3, 0],
            closure_rate: Some(1.0),
            on_time_rate: Some(0.5),
            rework_rate: Some(0.5),
            postpone_rate: Some(0.0),
            duplicate_rate: Some(0.0),
            mean_hours_to_close: Some(7.5),
            satisfaction: Some(4.0),
            // 25 + 30 + 5 + 10
            score: Some(70.0),
        },
        "B after its rejection",
    );
    // Without as_of: now (every fact of the fixture lies in the past).
    let now = f.answer(PERIOD, &f.district).await;
    let as_of_ms = now["as_of_ms"].as_u64().unwrap();
    let wall = gridclue_core::wire::now_ms();
    assert!(as_of_ms <= wall && wall - as_of_ms < 60_000, "{as_of_ms}");
    assert_eq!(row(&now, b)["accepted"], 2);
    // A period that ends before A9's acceptance minute still holds A1–A6: `to` is exclusive
    // and a date is a China date (11-08 ends at 16:00 UTC).
    let short = f
        .answer(
            &format!("from=2026-11-02&to=2026-11-08&{LATE}"),
            &f.district,
        )
        .await;
    assert_eq!(row(&short, a)["accepted"], 6);
}

#[tokio::test]
async fn indicators_by_department_follow_the_department_as_of() {
    let f = fixture().await;
    let answer = f
        .answer(&format!("{PERIOD}&{LATE}&by=department"), &f.district)
        .await;
    // greening: A1, A2, A3, A6, A9 (A6 and A9 never dispatched: their routed department).
    check(
        row(&answer, "greening_city_appearance"),
        &Expect {
            // reports: those five, A7, A10, A11, D1, D2
            counts: [5, 4, 3, 2, 3, 1, 1, 0, 1, 2, 10, 2],
            closure_rate: Some(3.0 / 4.0),
            on_time_rate: Some(2.0 / 4.0),
            rework_rate: Some(1.0 / 3.0),
            postpone_rate: Some(1.0 / 5.0),
            duplicate_rate: Some(2.0 / 10.0),
            mean_hours_to_close: Some(13.0),
            satisfaction: Some(4.0),
            // 25 + 22.5 + 6.666… + 8
            score: Some(62.166_666_666_667),
        },
        "greening",
    );
    // urban_management: A4, A5 (dispatched there last, on 11-06), C1, C2, C3 (its report is
    // not one of the period's).
    check(
        row(&answer, "urban_management"),
        &Expect {
            counts: [5, 2, 1, 1, 1, 0, 1, 2, 1, 0, 4, 0],
            closure_rate: Some(0.5),
            on_time_rate: Some(0.5),
            rework_rate: Some(0.0),
            postpone_rate: Some(0.2),
            duplicate_rate: Some(0.0),
            mean_hours_to_close: Some(16.0),
            satisfaction: None,
            // 25 + 15 + 10 + 8
            score: Some(58.0),
        },
        "urban management",
    );
    check(row(&answer, "water_affairs"), &street_b_late(), "water");
    check(row(&answer, "fire_rescue"), &nothing(), "fire");
    assert_eq!(row(&answer, "water_affairs")["name"], "区水务局");
    assert_eq!(
        &keys(&answer)[..3],
        &[
            "greening_city_appearance",
            "urban_management",
            "water_affairs"
        ]
    );
    check(&answer["total"], &district_late(), "district by department");
    // Mid-week A5 was at water_affairs (dispatched 11-04, returned 11-05 11:00 but not yet
    // dispatched again): its department as of then, overdue there with B2.
    let mid = f
        .answer(
            &format!("{PERIOD}&as_of={MIDWEEK_MS}&by=department"),
            &f.district,
        )
        .await;
    let water = row(&mid, "water_affairs");
    assert_eq!(
        (
            &water["accepted"],
            &water["overdue_open"],
            &water["supervised"]
        ),
        (&4.into(), &2.into(), &1.into())
    );

    // By category: one category per street here.
    let by_category = f
        .answer(&format!("{PERIOD}&{LATE}&by=category"), &f.district)
        .await;
    check(
        row(&by_category, "garbage_pile"),
        &street_a_late(),
        "garbage piles",
    );
    check(
        row(&by_category, "manhole_cover"),
        &street_b_late(),
        "manhole covers",
    );
    check(
        row(&by_category, "street_vending"),
        &street_c_late(),
        "street vending",
    );
}

#[tokio::test]
async fn a_street_office_reads_its_own_street_only() {
    let f = fixture().await;
    let [a, b, _] = &f.streets;
    let own = f
        .answer(&format!("{PERIOD}&{LATE}"), &f.street_a_token)
        .await;
    assert_eq!(keys(&own), vec![a.clone()]);
    check(row(&own, a), &street_a_late(), "A for A");
    check(&own["total"], &street_a_late(), "A's total");
    assert_eq!(own["street"], a.as_str());
    let named = f
        .answer(&format!("{PERIOD}&{LATE}&street={a}"), &f.street_a_token)
        .await;
    assert_eq!(named["rows"], own["rows"]);
    let (status, body) = get(
        &f.app,
        &format!("/v1/indicators?{PERIOD}&street={b}"),
        Some(&f.street_a_token),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden"))
    );
    // Its communities: every community of street A, A's cases in the first one.
    let communities = f
        .answer(&format!("{PERIOD}&{LATE}&by=community"), &f.street_a_token)
        .await;
    let expected: Vec<&CommunityCode> = f
        .reference
        .communities
        .keys()
        .filter(|c| c.street_code() == a.as_str())
        .collect();
    assert_eq!(
        communities["rows"].as_array().unwrap().len(),
        expected.len()
    );
    assert!(keys(&communities).iter().all(|k| k.starts_with(a.as_str())));
    let first = f.histories["A1"].rows(0).1[0].community_code.unwrap();
    check(
        row(&communities, first.as_str()),
        &street_a_late(),
        "A's community",
    );
    // The district may narrow to a street the same way.
    let narrowed = f
        .answer(&format!("{PERIOD}&{LATE}&street={b}"), &f.district)
        .await;
    assert_eq!(keys(&narrowed), vec![b.clone()]);
    check(&narrowed["total"], &street_b_late(), "B's total");
    // Reporters and departments read no indicators; no token is a 401.
    for token in [&f.reporter, &f.department] {
        let (status, _) = get(&f.app, &format!("/v1/indicators?{PERIOD}"), Some(token)).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
    let (status, _) = get(&f.app, &format!("/v1/indicators?{PERIOD}"), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn bad_parameters_are_400s_naming_them() {
    let f = fixture().await;
    for (query, name) in [
        ("from=2026-11-09&to=2026-11-09", "to"),
        ("from=2026-11-09&to=2026-11-02", "to"),
        ("from=2026-11-02&to=2026-11-09&by=grid", "by"),
        ("from=2020-01-01&to=2023-01-02", "to"),
        ("to=2026-11-09", "from"),
        ("from=2026-11-02", "to"),
        ("from=2026-11-32&to=2026-12-09", "from"),
        ("from=2026-11-02&to=2026-11-09&as_of=yesterday", "as_of"),
        ("from=2026-11-02&to=2026-11-09&street=31019900", "street"),
        ("from=2026-11-02&to=2026-11-09&limit=5", "limit"),
        ("from=2026-11-02&from=2026-11-03&to=2026-11-09", "from"),
    ] {
        let (status, body) = get(
            &f.app,
            &format!("/v1/indicators?{query}"),
            Some(&f.district),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(body["code"], "invalid_parameter", "{query}");
        let detail = body["detail"].as_str().unwrap();
        assert!(
            detail.starts_with(&format!("query parameter `{name}`")),
            "{query}: {detail}"
        );
    }
    // Exactly three years is allowed.
    let three = f.answer("from=2024-01-01&to=2027-01-01", &f.district).await;
    // As of now: A8 and A10 join the cohort, B2 left it (rejected).
    assert_eq!(three["total"]["accepted"], 14);
}

#[tokio::test]
async fn a_replayed_insert_changes_no_number() {
    let f = fixture().await;
    let query = format!("{PERIOD}&{LATE}");
    let before = f.answer(&query, &f.district).await;
    // The sink never inserts a fact twice, but a replay that did must change nothing once the
    // aggregates are rebuilt.
    for name in ["A3", "B1", "D2"] {
        let (events, clues) = f.histories[name].rows(0);
        write_rows(&f.db.client, &events, &clues).await;
    }
    let copies =
        f.db.scalar("SELECT count() - uniqExact(clue_id, seq) FROM clue_events")
            .await;
    assert!(copies > 0, "the copies are stored until a merge");
    // Facts written behind the sink's back add their indicator deltas again (the delta
    // projection is exact because the sink writes each fact once); rebuilding the aggregates
    // recomputes them from the deduplicated facts.
    gridclue_sink::aggregates::rebuild(&f.db.client)
        .await
        .unwrap();
    let after = f.answer(&query, &f.district).await;
    assert_eq!(after["rows"], before["rows"]);
    assert_eq!(after["total"], before["total"]);
}
