//! The dashboard query API (dashboard-api: `/v1/breakdown`, `/v1/trend`, `/v1/rankings`,
//! `/v1/lists/*`, `/v1/heatmap`, `/v1/clues/{id}/timeline`, CSV exports) against the real test
//! ClickHouse server, on a hand-built set of clue histories written with the sink's own fold and
//! rows. Every expected number below is worked out by hand from the histories (not by a second
//! implementation). Two clues are written twice, as a replay would, and change nothing.
//!
//! The period is P = [2026-11-02, 2026-11-09) (China dates). Street A (garbage piles, routed to
//! greening_city_appearance = G, reporters food_delivery), grids gA1 and gA2 (two communities):
//! - a1 gA1: reported 11-02 09:00, accepted 10:00 (deadline 11-04 10:00), dispatched to G,
//!   handled, closed 11-03 15:00 — closed on time; written twice;
//! - a2 gA1: reported 11-02 10:30, accepted 11:00 (deadline 11-03 11:00), dispatched to
//!   urban_management (U), missed its deadline (overdue fact 11-03 11:00) — open, red;
//! - a3 gA2: reported 11-03 08:00, accepted 09:00 (deadline 2031-01-01) — open, green;
//! - a4 gA2: reported 11-03 13:00, a duplicate of a1 at once;
//! - a5 gA1: reported 11-04 12:00, withdrawn 13:00;
//! - a6 gA1: reported 11-05 09:00 — open, not accepted;
//! - a7 gA1: a manhole cover (routed to water_affairs = W) reported 11-08 23:30 — open;
//! - a8 gA1: reported 11-09 00:00 (the first instant after P); a9 gA1: reported 11-01 23:59
//!   (the last minute before P); both open;
//! - a10 gA1: reported 10-30 09:00, accepted 10:00 (deadline 11-01 10:00), closed 10-31 12:00 —
//!   the previous period's only case.
//!
//! Street B (manhole covers, routed to W, reporters courier), grid gB1:
//! - b1: reported 11-02 08:00, accepted 09:00 (deadline 11-03 09:00), closed 11-05 10:00 — late;
//! - b2: reported 11-06 09:30, accepted 10:00, rejected 11:00;
//! - b3: reported 11-06 12:00, accepted 13:00 (deadline 11-08 13:00), dispatched to W, handled,
//!   rework 11-07 10:00, missed its deadline (overdue fact 11-08 13:00) — open, red; written
//!   twice;
//! - y1: reported now − 11 h, accepted now − 10 h, deadline now + 1 h — yellow (20 % of 11 h left
//!   from now − 1.2 h on);
//! - g1: reported now − 2 h, accepted now − 1 h, deadline now + 10 days — green.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use gridclue_core::codes::ActorScope;
use gridclue_core::hotspot::{AlertFact, AlertState};
use gridclue_core::tokens::{TokenFile, TokenKind, TokenRecord, TokenStore};
use gridclue_core::wire::Fact;
use gridclue_core::{GridCode, ReporterGroup};
use gridclue_dashboard_api::live::{month_of, Live, StreamSettings};
use gridclue_dashboard_api::{AppState, Reference};
use gridclue_tests::alerts::{alert, write_alerts};
use gridclue_tests::ch::TestDb;
use gridclue_tests::facts::{china, first_grid, grids_of, write, write_rows, History, ReportSpec};
use gridclue_tests::{data_dir, scratch};
use serde_json::Value;
use tokio_util::sync::{CancellationToken, DropGuard};
use tower::ServiceExt;

const HOUR: u64 = 3_600_000;

struct Fixture {
    db: TestDb,
    state: AppState,
    app: axum::Router,
    district: String,
    street_a: String,
    department: String,
    reporter: String,
    reporter_record: TokenRecord,
    streets: [String; 3],
    grids: [String; 3],
    ids: BTreeMap<&'static str, String>,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    fixture_with(StreamSettings::default()).await
}

async fn fixture_with(stream: StreamSettings) -> Fixture {
    let db = TestDb::create("dashboard").await;
    gridclue_sink::migrations::apply(&db.client).await.unwrap();
    let reference = Reference::load(&data_dir()).unwrap();
    let streets = [0, 1, 2].map(|i| reference.streets[i].code.to_string());
    let a_grids = grids_of(&streets[0]);
    let g_a1 = a_grids[0];
    // A grid of another community of the same street.
    let g_a2 = *a_grids
        .iter()
        .find(|g| g.community_code() != g_a1.community_code())
        .expect("street A has two communities");
    let g_b1 = first_grid(&streets[1]);

    let dir = scratch("dashboard-tokens");
    let path = dir.path().join("tokens.json");
    let mut f = TokenFile::default();
    let district = f
        .issue(TokenKind::District, None, None, "区指挥中心")
        .unwrap()
        .0;
    let (street_a, street_a_record) = f
        .issue(
            TokenKind::Street,
            None,
            Some(ActorScope::parse(&streets[0]).unwrap()),
            "甲街道办",
        )
        .unwrap();
    let department = f
        .issue(
            TokenKind::Department,
            None,
            Some(ActorScope::parse("water_affairs").unwrap()),
            "水务",
        )
        .unwrap()
        .0;
    let (reporter, rider) = f
        .issue(
            TokenKind::Reporter,
            Some(ReporterGroup::FoodDelivery),
            None,
            "骑手甲",
        )
        .unwrap();
    let (_, courier) = f
        .issue(
            TokenKind::Reporter,
            Some(ReporterGroup::Courier),
            None,
            "快递员乙",
        )
        .unwrap();
    f.write(&path).unwrap();

    let t = china;
    let (green, urban, water) = (
        "greening_city_appearance",
        "urban_management",
        "water_affairs",
    );
    let a1s = ReportSpec::new(g_a1, "garbage_pile", green).by(&rider);
    let a2s = ReportSpec::new(g_a2, "garbage_pile", green).by(&rider);
    let a7s = ReportSpec::new(g_a1, "manhole_cover", water).by(&rider);
    let bs = ReportSpec::new(g_b1, "manhole_cover", water).by(&courier);
    let now = gridclue_core::wire::now_ms();

    let mut a1 = History::reported(&a1s, t("2026-11-02 09:00"))
        .accepted(t("2026-11-02 10:00"), Some(t("2026-11-04 10:00")))
        .dispatched(t("2026-11-02 10:30"), green)
        .handled(t("2026-11-03 14:00"))
        .closed(t("2026-11-03 15:00"), 5);
    // The acceptance was the street office's, and the report carries a photo.
    a1.facts[1].actor = Some(street_a_record.actor());
    if let Fact::Reported(r) = &mut a1.facts[0].fact {
        r.photos = vec!["https://photos.example/a1.jpg".into()];
    }
    let a1_id = a1.clue;
    let mut h: BTreeMap<&'static str, History> = BTreeMap::new();
    h.insert("a1", a1);
    h.insert(
        "a2",
        History::reported(&a1s, t("2026-11-02 10:30"))
            .accepted(t("2026-11-02 11:00"), Some(t("2026-11-03 11:00")))
            .dispatched(t("2026-11-02 11:30"), urban)
            .overdue(t("2026-11-03 11:00")),
    );
    h.insert(
        "a3",
        History::reported(&a2s, t("2026-11-03 08:00"))
            .accepted(t("2026-11-03 09:00"), Some(t("2031-01-01 00:00"))),
    );
    let dup = a2s.clone().repeating(a1_id);
    h.insert("a4", History::reported(&dup, t("2026-11-03 13:00")));
    h.insert(
        "a5",
        History::reported(&a1s, t("2026-11-04 12:00")).withdrawn(t("2026-11-04 13:00")),
    );
    h.insert("a6", History::reported(&a1s, t("2026-11-05 09:00")));
    h.insert("a7", History::reported(&a7s, t("2026-11-08 23:30")));
    h.insert("a8", History::reported(&a1s, t("2026-11-09 00:00")));
    h.insert("a9", History::reported(&a1s, t("2026-11-01 23:59")));
    h.insert(
        "a10",
        History::reported(&a1s, t("2026-10-30 09:00"))
            .accepted(t("2026-10-30 10:00"), Some(t("2026-11-01 10:00")))
            .dispatched(t("2026-10-30 10:30"), green)
            .handled(t("2026-10-31 11:00"))
            .closed(t("2026-10-31 12:00"), 4),
    );
    h.insert(
        "b1",
        History::reported(&bs, t("2026-11-02 08:00"))
            .accepted(t("2026-11-02 09:00"), Some(t("2026-11-03 09:00")))
            .dispatched(t("2026-11-02 09:10"), water)
            .handled(t("2026-11-05 09:00"))
            .closed(t("2026-11-05 10:00"), 8),
    );
    h.insert(
        "b2",
        History::reported(&bs, t("2026-11-06 09:30"))
            .accepted(t("2026-11-06 10:00"), Some(t("2026-11-07 10:00")))
            .rejected(t("2026-11-06 11:00")),
    );
    h.insert(
        "b3",
        History::reported(&bs, t("2026-11-06 12:00"))
            .accepted(t("2026-11-06 13:00"), Some(t("2026-11-08 13:00")))
            .dispatched(t("2026-11-06 14:00"), water)
            .handled(t("2026-11-07 09:00"))
            .reworked(t("2026-11-07 10:00"))
            .overdue(t("2026-11-08 13:00")),
    );
    h.insert(
        "y1",
        History::reported(&bs, now - 11 * HOUR).accepted(now - 10 * HOUR, Some(now + HOUR)),
    );
    h.insert(
        "g1",
        History::reported(&bs, now - 2 * HOUR).accepted(now - HOUR, Some(now + 240 * HOUR)),
    );
    let all: Vec<History> = h.values().cloned().collect();
    write(&db.client, &all).await;
    // A replay that wrote two clues' facts and states again (behind the sink's back: the
    // indicators' delta projection counts such copies until the aggregates are rebuilt).
    for name in ["a1", "b3"] {
        let (events, clues) = h[name].rows(1_000);
        write_rows(&db.client, &events, &clues).await;
    }
    gridclue_sink::aggregates::rebuild(&db.client)
        .await
        .unwrap();

    let mut state = AppState::new(
        db.client.clone(),
        TokenStore::open(&path).unwrap(),
        reference,
        gridclue_core::calendar::Calendar::load(&data_dir().join("calendar.json")).unwrap(),
    );
    state.live = Live::new(stream);
    Fixture {
        db,
        app: gridclue_dashboard_api::app(state.clone()),
        state,
        district,
        street_a,
        department,
        reporter,
        reporter_record: rider,
        streets,
        grids: [g_a1, g_a2, g_b1].map(|g| g.to_string()),
        ids: h.iter().map(|(k, v)| (*k, v.clue.to_string())).collect(),
        _dir: dir,
    }
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("{e}: {}", self.text))
    }
}

async fn send(app: &axum::Router, path: &str, token: Option<&str>, accept: Option<&str>) -> Answer {
    let mut req = Request::get(path);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    if let Some(a) = accept {
        req = req.header(header::ACCEPT, a);
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = axum::body::to_bytes(resp.into_body(), 16 << 20)
        .await
        .unwrap();
    Answer {
        status,
        headers,
        text: String::from_utf8(body.to_vec()).unwrap(),
    }
}

impl Fixture {
    async fn ok(&self, path: &str, token: &str) -> Value {
        let a = send(&self.app, path, Some(token), None).await;
        assert_eq!(a.status, StatusCode::OK, "{path}: {}", a.text);
        a.json()
    }

    /// The status and problem `code` of a refused request (problem+json checked).
    async fn refused(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        let a = send(&self.app, path, token, None).await;
        assert_ne!(
            a.status,
            StatusCode::OK,
            "{path} should be refused: {}",
            a.text
        );
        assert_eq!(
            a.headers[header::CONTENT_TYPE],
            "application/problem+json",
            "{path}"
        );
        (a.status, a.json())
    }

    fn id(&self, name: &str) -> &str {
        &self.ids[name]
    }
}

const P: &str = "from=2026-11-02&to=2026-11-09";

fn row<'a>(answer: &'a Value, key: &str) -> &'a Value {
    answer["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"] == key)
        .unwrap_or_else(|| panic!("no row {key} in {answer}"))
}

/// reports, cases, open, closed, overdue of a breakdown row.
fn counts(r: &Value) -> [u64; 5] {
    ["reports", "cases", "open", "closed", "overdue"].map(|f| r[f].as_u64().unwrap())
}

fn statuses(r: &Value) -> BTreeMap<String, u64> {
    r["by_status"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, n)| n.as_u64() != Some(0))
        .map(|(k, n)| (k.clone(), n.as_u64().unwrap()))
        .collect()
}

fn map(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, n)| ((*k).to_owned(), *n)).collect()
}

#[tokio::test]
async fn breakdowns_by_every_grouping() {
    let f = fixture().await;
    let (a, b) = (&f.streets[0], &f.streets[1]);

    let by_street = f.ok(&format!("/v1/breakdown?{P}"), &f.district).await;
    // A: a1–a7 (a8 after P, a9 before it, a10 long before); cases: not a4 (duplicate) nor a5
    // (withdrawn); open: a2, a3, a6, a7; overdue: a2 only (a3's deadline is in 2031).
    assert_eq!(counts(row(&by_street, a)), [7, 5, 4, 1, 1]);
    assert_eq!(
        statuses(row(&by_street, a)),
        map(&[
            ("accepted", 1),
            ("closed", 1),
            ("dispatched", 1),
            ("duplicate", 1),
            ("reported", 2),
            ("withdrawn", 1)
        ])
    );
    // B: b1 closed, b2 rejected (not a case), b3 open and overdue; y1 and g1 are today.
    assert_eq!(counts(row(&by_street, b)), [3, 2, 1, 1, 1]);
    assert_eq!(
        statuses(row(&by_street, b)),
        map(&[("closed", 1), ("dispatched", 1), ("rejected", 1)])
    );
    assert_eq!(counts(&by_street["total"]), [10, 7, 5, 2, 2]);
    // Every street of the map is listed, most reports first.
    assert_eq!(by_street["rows"].as_array().unwrap().len(), 13);
    assert_eq!(by_street["rows"][0]["key"], a.as_str());
    assert_eq!(by_street["rows"][1]["key"], b.as_str());
    assert_eq!(counts(row(&by_street, &f.streets[2])), [0, 0, 0, 0, 0]);

    let by_category = f
        .ok(&format!("/v1/breakdown?{P}&by=category"), &f.district)
        .await;
    assert_eq!(counts(row(&by_category, "garbage_pile")), [6, 4, 3, 1, 1]);
    assert_eq!(counts(row(&by_category, "manhole_cover")), [4, 3, 2, 1, 1]);
    assert_eq!(
        row(&by_category, "garbage_pile")["name"],
        "暴露垃圾/垃圾堆物"
    );

    // Department now: a2 at urban_management; a7 and every B clue at water_affairs.
    let by_department = f
        .ok(
            &format!("/v1/breakdown?{P}&by=department&street={a}"),
            &f.district,
        )
        .await;
    assert_eq!(
        counts(row(&by_department, "greening_city_appearance")),
        [5, 3, 2, 1, 0]
    );
    assert_eq!(
        counts(row(&by_department, "urban_management")),
        [1, 1, 1, 0, 1]
    );
    assert_eq!(
        counts(row(&by_department, "water_affairs")),
        [1, 1, 1, 0, 0]
    );
    assert_eq!(counts(&by_department["total"]), [7, 5, 4, 1, 1]);

    let by_grid = f
        .ok(
            &format!("/v1/breakdown?{P}&by=grid&street={a}"),
            &f.district,
        )
        .await;
    let grids: Vec<(&str, u64)> = by_grid["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["key"].as_str().unwrap(), r["reports"].as_u64().unwrap()))
        .collect();
    assert_eq!(grids, [(f.grids[0].as_str(), 5), (f.grids[1].as_str(), 2)]);

    let by_community = f
        .ok(
            &format!("/v1/breakdown?{P}&by=community&street={a}"),
            &f.district,
        )
        .await;
    assert_eq!(row(&by_community, &f.grids[0][..12])["reports"], 5);
    assert_eq!(row(&by_community, &f.grids[1][..12])["reports"], 2);

    let by_group = f
        .ok(&format!("/v1/breakdown?{P}&by=group"), &f.district)
        .await;
    assert_eq!(counts(row(&by_group, "food_delivery")), [7, 5, 4, 1, 1]);
    assert_eq!(counts(row(&by_group, "courier")), [3, 2, 1, 1, 1]);
    assert_eq!(counts(row(&by_group, "truck")), [0, 0, 0, 0, 0]);

    // Filters combine: manhole covers only (a7 in A; b1–b3 in B), and one grid.
    let manholes = f
        .ok(
            &format!("/v1/breakdown?{P}&category=manhole_cover"),
            &f.district,
        )
        .await;
    assert_eq!(counts(row(&manholes, a)), [1, 1, 1, 0, 0]);
    assert_eq!(counts(row(&manholes, b)), [3, 2, 1, 1, 1]);
    let one_grid = f
        .ok(
            &format!("/v1/breakdown?{P}&grid={}", f.grids[1]),
            &f.district,
        )
        .await;
    assert_eq!(counts(&one_grid["total"]), [2, 1, 1, 0, 0]);

    // A street token sees its street only, without naming it.
    let own = f.ok(&format!("/v1/breakdown?{P}"), &f.street_a).await;
    assert_eq!(own["rows"].as_array().unwrap().len(), 1);
    assert_eq!(counts(&own["total"]), [7, 5, 4, 1, 1]);
    assert_eq!(own["filters"]["street"], a.as_str());
}

#[tokio::test]
async fn trend_buckets_in_china_time_with_empty_buckets() {
    let f = fixture().await;
    let day = f
        .ok(&format!("/v1/trend?{P}&bucket=day"), &f.district)
        .await;
    let rows: Vec<(String, [u64; 4])> = day["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["start"].as_str().unwrap()[..10].to_owned(),
                ["reports", "accepted", "closed", "overdue"].map(|k| r[k].as_u64().unwrap()),
            )
        })
        .collect();
    let want = [
        ("2026-11-02", [3, 3, 0, 0]), // a1, a2, b1 reported and accepted
        ("2026-11-03", [2, 1, 1, 1]), // a3, a4; a3 accepted; a1 closed; a2's deadline missed
        ("2026-11-04", [1, 0, 0, 0]), // a5
        ("2026-11-05", [1, 0, 1, 0]), // a6; b1 closed
        ("2026-11-06", [2, 2, 0, 0]), // b2, b3 reported and accepted
        ("2026-11-07", [0, 0, 0, 0]),
        ("2026-11-08", [1, 0, 0, 1]), // a7 at 23:30; b3's deadline missed
    ];
    let want: Vec<(String, [u64; 4])> = want.iter().map(|(d, c)| ((*d).to_owned(), *c)).collect();
    assert_eq!(rows, want);
    assert_eq!(day["rows"][0]["start"], "2026-11-02T00:00:00.000+08:00");

    // One Monday-first week, one month (a9 on 11-01 and a10 in October are outside P).
    for bucket in ["week", "month"] {
        let t = f
            .ok(&format!("/v1/trend?{P}&bucket={bucket}"), &f.district)
            .await;
        let r = &t["rows"];
        assert_eq!(r.as_array().unwrap().len(), 1, "{bucket}");
        assert_eq!(
            ["reports", "accepted", "closed", "overdue"].map(|k| r[0][k].as_u64().unwrap()),
            [10, 6, 2, 2],
            "{bucket}"
        );
    }
    let month = f
        .ok(&format!("/v1/trend?{P}&bucket=month"), &f.district)
        .await;
    assert_eq!(month["rows"][0]["start"], "2026-11-01T00:00:00.000+08:00");

    // Hours of 11-08: a7 at 23:xx, b3's deadline at 13:00; 24 buckets.
    let hours = f
        .ok(
            "/v1/trend?from=2026-11-08&to=2026-11-09&bucket=hour",
            &f.district,
        )
        .await;
    let h = hours["rows"].as_array().unwrap();
    assert_eq!(h.len(), 24);
    let nonzero: Vec<(usize, u64, u64)> = h
        .iter()
        .enumerate()
        .filter(|(_, r)| r["reports"] != 0 || r["overdue"] != 0)
        .map(|(i, r)| {
            (
                i,
                r["reports"].as_u64().unwrap(),
                r["overdue"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(nonzero, [(13, 0, 1), (23, 1, 0)]);

    // A street token's trend is its street's: A's reports a1, a2 | a3, a4 | a5 | a6 | – | – | a7.
    let own = f.ok(&format!("/v1/trend?{P}"), &f.street_a).await;
    let reports: Vec<u64> = own["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["reports"].as_u64().unwrap())
        .collect();
    assert_eq!(reports, [2, 2, 1, 1, 0, 0, 1]);
}

const LATE: &str = "as_of=2026-11-20T12:00:00%2B08:00";

fn close(v: &Value, want: Option<f64>, what: &str) {
    match want {
        None => assert!(v.is_null(), "{what} should be null, is {v}"),
        Some(x) => {
            let got = v
                .as_f64()
                .unwrap_or_else(|| panic!("{what} is {v}, expected {x}"));
            assert!((got - x).abs() < 1e-9, "{what} = {got}, expected {x}");
        }
    }
}

#[tokio::test]
async fn rankings_with_the_previous_period_change_and_targets() {
    let f = fixture().await;
    let (a, b) = (&f.streets[0], &f.streets[1]);
    let r = f.ok(&format!("/v1/rankings?{P}&{LATE}"), &f.district).await;
    assert_eq!(r["previous"]["from"], "2026-10-26");
    assert_eq!(r["previous"]["to"], "2026-11-02");
    assert_eq!(r["previous"]["as_of"], "2026-11-13T12:00:00.000+08:00");
    assert_eq!(r["targets"]["on_time_rate"], 0.9);

    // A: cohort a1 (closed on time), a2 (due, open, overdue), a3 (not due): due 2, closed 1, on
    // time 1, verified 1, no rework, no postponement; reports a1–a7 of which a4 a duplicate.
    // Score 50·½ + 30·½ + 10 + 10 = 60.
    let ra = row(&r, a);
    assert_eq!(ra["rank"], 1);
    assert_eq!(
        [
            "accepted",
            "due",
            "closed",
            "closed_on_time",
            "verified",
            "reworked",
            "overdue_open",
            "reports",
            "duplicates"
        ]
        .map(|k| ra[k].as_u64().unwrap()),
        [3, 2, 1, 1, 1, 0, 1, 7, 1]
    );
    close(&ra["score"], Some(60.0), "A score");
    // Previous period, as of 11-13 12:00: a10 closed on time (score 100); reports a9, a10.
    let pa = &ra["previous"];
    assert_eq!(pa["rank"], 1);
    assert_eq!(
        ["accepted", "due", "closed", "closed_on_time", "reports"].map(|k| pa[k].as_u64().unwrap()),
        [1, 1, 1, 1, 2]
    );
    close(&pa["score"], Some(100.0), "A previous score");
    close(&ra["change"]["score"], Some(-40.0), "A score change");
    close(
        &ra["change"]["on_time_rate"],
        Some(-0.5),
        "A on-time change",
    );
    close(
        &ra["change"]["closure_rate"],
        Some(-0.5),
        "A closure change",
    );
    close(&ra["change"]["rework_rate"], Some(0.0), "A rework change");
    close(
        &ra["change"]["duplicate_rate"],
        Some(1.0 / 7.0),
        "A duplicate change",
    );
    close(&ra["change"]["rank"], Some(0.0), "A rank change");
    close(
        &ra["vs_target"]["on_time_rate"],
        Some(0.5 / 0.9),
        "A on time vs target",
    );
    close(
        &ra["vs_target"]["closure_rate"],
        Some(0.5 / 0.95),
        "A closure vs target",
    );
    // Lower is better: (1 − 0) / (1 − 0.05).
    close(
        &ra["vs_target"]["rework_rate"],
        Some(1.0 / 0.95),
        "A rework vs target",
    );
    close(
        &ra["vs_target"]["postpone_rate"],
        Some(1.0 / 0.9),
        "A postpone vs target",
    );
    close(
        &ra["vs_target"]["score"],
        Some(60.0 / 90.0),
        "A score vs target",
    );
    assert!(ra["vs_target"].get("duplicate_rate").is_none());

    // B: cohort b1 (closed late) and b3 (reworked, due, open); b2 left the loop. Due 2, closed 1,
    // on time 0, verified 2, reworked 1: 0 + 15 + 5 + 10 = 30. Nothing in the previous period.
    let rb = row(&r, b);
    assert_eq!(rb["rank"], 2);
    close(&rb["score"], Some(30.0), "B score");
    close(&rb["rework_rate"], Some(0.5), "B rework");
    close(
        &rb["vs_target"]["rework_rate"],
        Some(0.5 / 0.95),
        "B rework vs target",
    );
    close(
        &rb["vs_target"]["on_time_rate"],
        Some(0.0),
        "B on time vs target",
    );
    assert!(rb["previous"]["rank"].is_null());
    close(&rb["previous"]["score"], None, "B previous score");
    close(&rb["change"]["score"], None, "B score change");
    close(&rb["change"]["rank"], None, "B rank change");
    assert_eq!(r["rows"][0]["key"], a.as_str());
    assert_eq!(r["rows"][1]["key"], b.as_str());

    // The rows are /v1/indicators rows: one definition.
    let ind = f
        .ok(&format!("/v1/indicators?{P}&{LATE}"), &f.district)
        .await;
    for (ranked, plain) in r["rows"]
        .as_array()
        .unwrap()
        .iter()
        .zip(ind["rows"].as_array().unwrap())
    {
        for field in gridclue_dashboard_api::rankings::INDICATOR_FIELDS {
            assert_eq!(ranked[field], plain[field], "{field} of {}", plain["key"]);
        }
        assert_eq!(ranked["rank"], plain["rank"]);
    }
    let before = f
        .ok(
            "/v1/indicators?from=2026-10-26&to=2026-11-02&as_of=2026-11-13T12:00:00%2B08:00",
            &f.district,
        )
        .await;
    assert_eq!(row(&before, a)["score"], pa["score"]);

    // Departments: G holds a1 and a3, U holds a2, W holds b1 and b3.
    let d = f
        .ok(
            &format!("/v1/rankings?{P}&{LATE}&by=department"),
            &f.district,
        )
        .await;
    assert_eq!(row(&d, "water_affairs")["accepted"], 2);
    assert_eq!(row(&d, "urban_management")["overdue_open"], 1);

    // A street token ranks within its street.
    let own = f.ok(&format!("/v1/rankings?{P}&{LATE}"), &f.street_a).await;
    assert_eq!(own["rows"].as_array().unwrap().len(), 1);
}

fn ids_of(page: &Value) -> Vec<String> {
    page["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["clue_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn lists_with_lights_filters_and_keyset_pages() {
    let f = fixture().await;
    let names = |ns: &[&str]| -> Vec<String> { ns.iter().map(|n| f.id(n).to_owned()).collect() };

    let overdue = f.ok("/v1/lists/overdue", &f.district).await;
    assert_eq!(ids_of(&overdue), names(&["a2", "b3"]));
    assert!(overdue["rows"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["light"] == "red"));
    let a2 = &overdue["rows"][0];
    assert_eq!(a2["deadline"], "2026-11-03T11:00:00.000+08:00");
    assert_eq!(a2["department"], "urban_management");
    assert_eq!(a2["street"], f.streets[0].as_str());
    assert_eq!(a2["grid"], f.grids[0].as_str());
    assert_eq!(a2["category"], "garbage_pile");
    assert_eq!(a2["status"], "dispatched");
    assert!(a2["street_name"].is_string() && a2["community_name"].is_string());
    assert_eq!(a2["updated_at"], "2026-11-03T11:00:00.000+08:00");
    assert_eq!(a2["reported_at"], "2026-11-02T10:30:00.000+08:00");

    let soon = f.ok("/v1/lists/due_soon", &f.district).await;
    assert_eq!(ids_of(&soon), names(&["y1"]));
    assert_eq!(soon["rows"][0]["light"], "yellow");

    // Open clues, least recently updated first (a2's and b3's last facts are their overdue
    // facts).
    let stale = f.ok("/v1/lists/stale", &f.district).await;
    assert_eq!(
        ids_of(&stale),
        names(&["a9", "a3", "a2", "a6", "b3", "a7", "a8", "y1", "g1"])
    );
    let lights: Vec<Value> = stale["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["light"].clone())
        .collect();
    assert_eq!(lights[1], "green");
    assert!(lights[0].is_null(), "a9 has no running deadline");

    // Newest first, four at a time: pages neither repeat nor skip.
    let all = names(&[
        "g1", "y1", "a8", "a7", "b3", "b2", "a6", "a5", "a4", "a3", "a2", "a1", "b1", "a9", "a10",
    ]);
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            None => "/v1/lists/newest?limit=4".to_owned(),
            Some(c) => format!("/v1/lists/newest?limit=4&cursor={c}"),
        };
        let page = f.ok(&path, &f.district).await;
        seen.extend(ids_of(&page));
        pages += 1;
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
        assert!(pages < 10, "runaway pagination");
    }
    assert_eq!(pages, 4);
    assert_eq!(seen, all);

    // Filters: a street, a category, a department; a street token's own street.
    let b = f
        .ok(
            &format!("/v1/lists/newest?street={}", f.streets[1]),
            &f.district,
        )
        .await;
    assert_eq!(ids_of(&b), names(&["g1", "y1", "b3", "b2", "b1"]));
    let garbage = f
        .ok("/v1/lists/overdue?category=garbage_pile", &f.district)
        .await;
    assert_eq!(ids_of(&garbage), names(&["a2"]));
    let water = f
        .ok("/v1/lists/overdue?department=water_affairs", &f.district)
        .await;
    assert_eq!(ids_of(&water), names(&["b3"]));
    let own = f.ok("/v1/lists/overdue", &f.street_a).await;
    assert_eq!(ids_of(&own), names(&["a2"]));
}

#[tokio::test]
async fn heatmap_counts_reports_per_grid() {
    let f = fixture().await;
    let h = f.ok(&format!("/v1/heatmap?{P}"), &f.district).await;
    let rows: Vec<(String, u64)> = h["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["grid"].as_str().unwrap().to_owned(),
                r["count"].as_u64().unwrap(),
            )
        })
        .collect();
    let g = &f.grids;
    assert_eq!(
        rows,
        [(g[0].clone(), 5), (g[2].clone(), 3), (g[1].clone(), 2)]
    );
    let m = f
        .ok(
            &format!("/v1/heatmap?{P}&category=manhole_cover"),
            &f.district,
        )
        .await;
    assert_eq!(
        m["rows"],
        serde_json::json!([{"grid": g[2], "count": 3}, {"grid": g[0], "count": 1}])
    );
    assert_eq!(m["category"], "manhole_cover");
    let own = f.ok(&format!("/v1/heatmap?{P}"), &f.street_a).await;
    assert_eq!(own["rows"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_timeline_names_who_acted_and_hides_other_streets() {
    let f = fixture().await;
    let path = format!("/v1/clues/{}/timeline", f.id("a1"));
    let a = send(&f.app, &path, Some(&f.district), None).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let t = a.json();
    // Written twice, read once.
    let kinds: Vec<&str> = t["facts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "reported",
            "accepted",
            "dispatched",
            "started",
            "handled",
            "verified"
        ]
    );
    let seqs: Vec<u64> = t["facts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [0, 1, 2, 3, 4, 5]);
    let report = &t["facts"][0];
    assert_eq!(report["actor"], "骑手甲");
    assert_eq!(report["actor_role"], "reporter");
    assert_eq!(
        report["photos"],
        serde_json::json!(["https://photos.example/a1.jpg"])
    );
    assert_eq!(report["note"], "test clue");
    assert_eq!(report["at"], "2026-11-02T09:00:00.000+08:00");
    let accept = &t["facts"][1];
    assert_eq!(accept["actor"], "甲街道办");
    assert_eq!(accept["actor_role"], "street");
    assert_eq!(accept["deadline"], "2026-11-04T10:00:00.000+08:00");
    assert_eq!(t["facts"][2]["department"], "greening_city_appearance");
    assert_eq!(t["status"], "closed");
    // Never a token, a token id or anything else that identifies the reporter.
    assert!(!a.text.contains(&f.reporter_record.id), "{}", a.text);
    assert!(!a.text.contains("gct_"));

    // Street A's token reads a1, but B's b1 is "not found", like a clue that does not exist.
    let own = send(&f.app, &path, Some(&f.street_a), None).await;
    assert_eq!(own.status, StatusCode::OK);
    let (status, other) = f
        .refused(
            &format!("/v1/clues/{}/timeline", f.id("b1")),
            Some(&f.street_a),
        )
        .await;
    let (status_unknown, unknown) = f
        .refused(
            "/v1/clues/00000000-0000-4000-8000-000000000000/timeline",
            Some(&f.street_a),
        )
        .await;
    assert_eq!(
        (status, status_unknown),
        (StatusCode::NOT_FOUND, StatusCode::NOT_FOUND)
    );
    assert_eq!(other["code"], unknown["code"]);
    let (status, bad) = f
        .refused("/v1/clues/not-a-uuid/timeline", Some(&f.district))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(bad["detail"].as_str().unwrap().contains("`clue_id`"));
}

/// A minimal RFC 4180 reader (quoted fields, doubled quotes) for checking exports.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let (mut row, mut field, mut quoted, mut chars) =
        (Vec::new(), String::new(), false, text.chars().peekable());
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    rows
}

#[tokio::test]
async fn csv_exports_hold_the_json_numbers() {
    let f = fixture().await;
    let path = format!("/v1/breakdown?{P}&format=csv");
    let a = send(&f.app, &path, Some(&f.district), None).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(a.headers[header::CONTENT_TYPE], "text/csv; charset=utf-8");
    assert_eq!(
        a.headers[header::CONTENT_DISPOSITION],
        "attachment; filename=\"gridclue-breakdown-street-2026-11-02_2026-11-09.csv\""
    );
    assert!(a.text.starts_with('\u{feff}'), "UTF-8 BOM first");
    assert!(a.text.contains("\r\n"));
    let table = parse_csv(a.text.trim_start_matches('\u{feff}'));
    assert_eq!(
        table[0][..8],
        [
            "key",
            "name",
            "reports",
            "cases",
            "open",
            "closed",
            "overdue",
            "by_status.reported"
        ]
    );
    // 13 streets and the total.
    assert_eq!(table.len(), 1 + 13 + 1);
    let json = f.ok(&format!("/v1/breakdown?{P}"), &f.district).await;
    let first = &json["rows"][0];
    assert_eq!(table[1][0], first["key"].as_str().unwrap());
    assert_eq!(table[1][1], first["name"].as_str().unwrap());
    assert_eq!(table[1][2], "7");
    assert_eq!(table[14][..3], ["total", "全区", "10"]);

    // Accept: text/csv does the same; lists, trends and rankings export too.
    let by_accept = send(
        &f.app,
        &format!("/v1/breakdown?{P}"),
        Some(&f.district),
        Some("text/csv"),
    )
    .await;
    assert_eq!(by_accept.text, a.text);
    let list = send(
        &f.app,
        "/v1/lists/overdue?format=csv",
        Some(&f.district),
        None,
    )
    .await;
    let t = parse_csv(list.text.trim_start_matches('\u{feff}'));
    assert_eq!(t.len(), 3);
    assert_eq!(t[1][0], f.id("a2"));
    assert_eq!(t[1][11], "2026-11-03T11:00:00.000+08:00");
    assert_eq!(t[1][12], "red");
    let trend = send(
        &f.app,
        &format!("/v1/trend?{P}&format=csv"),
        Some(&f.district),
        None,
    )
    .await;
    let t = parse_csv(trend.text.trim_start_matches('\u{feff}'));
    assert_eq!(t[0], ["start", "reports", "accepted", "closed", "overdue"]);
    assert_eq!(t[2], ["2026-11-03T00:00:00.000+08:00", "2", "1", "1", "1"]);
    let rankings = send(
        &f.app,
        &format!("/v1/rankings?{P}&{LATE}&format=csv"),
        Some(&f.district),
        None,
    )
    .await;
    let t = parse_csv(rankings.text.trim_start_matches('\u{feff}'));
    let score = t[0].iter().position(|c| c == "score").unwrap();
    let change = t[0].iter().position(|c| c == "change.score").unwrap();
    assert_eq!(
        (t[1][score].as_str(), t[1][change].as_str()),
        ("60.0", "-40.0")
    );
    // A null is an empty cell: B had no previous score.
    let prev = t[0].iter().position(|c| c == "previous.score").unwrap();
    assert_eq!(t[2][prev], "");
}

#[tokio::test]
async fn scopes_and_bad_parameters_are_refused_by_name() {
    let f = fixture().await;
    let b = &f.streets[1];
    for path in [
        format!("/v1/breakdown?{P}&street={b}"),
        format!("/v1/breakdown?{P}&grid={}", f.grids[2]),
        format!("/v1/trend?{P}&street={b}"),
        format!("/v1/lists/overdue?street={b}"),
        format!("/v1/heatmap?{P}&street={b}"),
        format!("/v1/rankings?{P}&street={b}"),
    ] {
        let (status, body) = f.refused(&path, Some(&f.street_a)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
    }
    for token in [&f.department, &f.reporter] {
        let (status, _) = f.refused(&format!("/v1/breakdown?{P}"), Some(token)).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
    let (status, _) = f.refused(&format!("/v1/breakdown?{P}"), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    for (path, name) in [
        (
            "/v1/breakdown?from=2026-11-09&to=2026-11-02".to_owned(),
            "to",
        ),
        (format!("/v1/breakdown?{P}&by=ward"), "by"),
        (
            "/v1/breakdown?from=2026-11-02&to=2030-11-02".to_owned(),
            "to",
        ),
        (format!("/v1/breakdown?{P}&street=3101"), "street"),
        (
            format!("/v1/breakdown?{P}&community=310199001abc"),
            "community",
        ),
        (format!("/v1/breakdown?{P}&category=potholes"), "category"),
        (format!("/v1/breakdown?{P}&department=police"), "department"),
        (format!("/v1/breakdown?{P}&colour=red"), "colour"),
        (format!("/v1/breakdown?{P}&format=xlsx"), "format"),
        ("/v1/breakdown?to=2026-11-09".to_owned(), "from"),
        (format!("/v1/trend?{P}&bucket=year"), "bucket"),
        (
            "/v1/trend?from=2026-11-01&to=2026-12-05&bucket=hour".to_owned(),
            "to",
        ),
        (format!("/v1/rankings?{P}&by=community"), "by"),
        (format!("/v1/rankings?{P}&as_of=yesterday"), "as_of"),
        ("/v1/lists/overdue?limit=0".to_owned(), "limit"),
        ("/v1/lists/overdue?limit=501".to_owned(), "limit"),
        ("/v1/lists/overdue?cursor=garbage".to_owned(), "cursor"),
        ("/v1/lists/latest".to_owned(), "list"),
        ("/v1/heatmap?from=2026-11-02".to_owned(), "to"),
        (format!("/v1/heatmap?{P}&grid={}", f.grids[0]), "grid"),
    ] {
        let (status, body) = f.refused(&path, Some(&f.district)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert_eq!(body["code"], "invalid_parameter", "{path}");
        let detail = body["detail"].as_str().unwrap();
        assert!(
            detail.starts_with(&format!("query parameter `{name}`")),
            "{path}: {detail}"
        );
    }
    // A cursor of one list is refused by another.
    let page = f.ok("/v1/lists/newest?limit=1", &f.district).await;
    let cursor = page["next_cursor"].as_str().unwrap();
    let (status, body) = f
        .refused(
            &format!("/v1/lists/stale?cursor={cursor}"),
            Some(&f.district),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["detail"]
        .as_str()
        .unwrap()
        .starts_with("query parameter `cursor`"));
}

/// The `numbers` events of one `/v1/stream` response.
struct Events {
    body: axum::body::BodyDataStream,
    buffer: String,
}

impl Events {
    async fn open(f: &Fixture, token: &str) -> Result<Self, (StatusCode, Value)> {
        let req = Request::get("/v1/stream")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap();
        let resp = f.app.clone().oneshot(req).await.unwrap();
        if resp.status() != StatusCode::OK {
            let status = resp.status();
            let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
                .await
                .unwrap();
            return Err((status, serde_json::from_slice(&body).unwrap()));
        }
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "text/event-stream");
        Ok(Self {
            body: resp.into_body().into_data_stream(),
            buffer: String::new(),
        })
    }

    /// The next `numbers` event's data, waiting at most until `deadline`.
    async fn next(&mut self, deadline: tokio::time::Instant) -> Value {
        self.next_named("numbers", deadline).await
    }

    /// The next event called `name`'s data (other events are passed), waiting at most until
    /// `deadline`.
    async fn next_named(&mut self, name: &str, deadline: tokio::time::Instant) -> Value {
        use futures::StreamExt;
        let wanted = format!("event: {name}");
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let frame: String = self.buffer.drain(..end + 2).collect();
                if frame.lines().any(|l| l == wanted) {
                    let data = frame
                        .lines()
                        .find_map(|l| l.strip_prefix("data: "))
                        .expect("a data line");
                    return serde_json::from_str(data).unwrap();
                }
                continue; // a keep-alive comment or another event
            }
            let chunk = tokio::time::timeout_at(deadline, self.body.next())
                .await
                .unwrap_or_else(|_| panic!("a {name} event before the deadline"))
                .expect("the stream stays open")
                .expect("a readable stream");
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
}

impl Fixture {
    /// Starts the process's one live loop (numbers and alerts); it stops when the guard drops.
    fn start_live(&self) -> DropGuard {
        let stop = CancellationToken::new();
        self.state
            .start_live_numbers(stop.clone())
            .expect("loop starts");
        stop.drop_guard()
    }

    /// Writes a new alert (`id`, version 1) over three reports of `category` in `grid`, made in
    /// the three hours before `now`.
    async fn raise_alert(
        &self,
        id: u128,
        grid: GridCode,
        (category, department): (&str, &str),
        now: u64,
    ) -> AlertFact {
        let s = ReportSpec::new(grid, category, department).by(&self.reporter_record);
        let cases: Vec<History> = (0..3)
            .map(|i| History::reported(&s, now - (3 - i) * HOUR))
            .collect();
        let refs: Vec<&History> = cases.iter().collect();
        let raised = alert(id, 1, AlertState::New, &refs, now);
        write_alerts(&self.db.client, std::slice::from_ref(&raised)).await;
        raised
    }
}

fn soon(secs: u64) -> tokio::time::Instant {
    tokio::time::Instant::now() + std::time::Duration::from_secs(secs)
}

/// A new report now, in street C (a street with no other clue).
async fn report_now(f: &Fixture) {
    let s = ReportSpec::new(
        first_grid(&f.streets[2]),
        "garbage_pile",
        "greening_city_appearance",
    )
    .by(&f.reporter_record);
    let h = History::reported(&s, gridclue_core::wire::now_ms());
    write(&f.db.client, &[h]).await;
}

fn kpi(v: &Value, name: &str) -> u64 {
    v["kpis"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("{name} in {v}"))
}

#[tokio::test]
async fn a_new_fact_changes_the_streamed_numbers_within_a_second() {
    let f = fixture().await;
    let _live = f.start_live();
    let mut district = Events::open(&f, &f.district).await.unwrap();
    let first = district.next(soon(10)).await;
    assert_eq!(first["scope"]["kind"], "district");
    // Open now: a2, a3, a6, a7, a8, a9, b3, y1, g1; overdue: a2 and b3.
    assert_eq!((kpi(&first, "open"), kpi(&first, "overdue")), (9, 2));
    assert_eq!(first["by_street"].as_array().unwrap().len(), 13);

    // The month's numbers are those of /v1/breakdown and /v1/indicators (as of the same instant).
    let month = month_of(first["as_of_ms"].as_u64().unwrap());
    assert_eq!(first["period"]["from"], month.from.to_string());
    let period = format!("from={}&to={}", month.from, month.to);
    let breakdown = f.ok(&format!("/v1/breakdown?{period}"), &f.district).await;
    assert_eq!(
        kpi(&first, "reports"),
        breakdown["total"]["reports"].as_u64().unwrap()
    );
    assert_eq!(
        kpi(&first, "cases"),
        breakdown["total"]["cases"].as_u64().unwrap()
    );
    let indicators = f
        .ok(
            &format!("/v1/indicators?{period}&as_of={}", first["as_of_ms"]),
            &f.district,
        )
        .await;
    for rate in ["closure_rate", "on_time_rate", "rework_rate", "score"] {
        assert_eq!(first["kpis"][rate], indicators["total"][rate], "{rate}");
    }

    // A street office's stream holds its street only: A's open a2, a3, a6–a9, overdue a2.
    let mut own = Events::open(&f, &f.street_a).await.unwrap();
    let mine = own.next(soon(10)).await;
    assert_eq!(mine["scope"]["street_code"], f.streets[0].as_str());
    assert_eq!(mine["by_street"].as_array().unwrap().len(), 1);
    assert_eq!((kpi(&mine, "open"), kpi(&mine, "overdue")), (6, 1));
    // The case gauges come from the same reading (all six are cases).
    let gauges = |street: &str| {
        let text = gridclue_core::telemetry::render(&f.state.metrics.registry);
        ["open", "overdue"].map(|g| {
            let series = format!("gridclue_dashboard_{g}_cases{{street=\"{street}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(&series))
                .unwrap_or_else(|| panic!("{series} in\n{text}"))
                .to_owned()
        })
    };
    assert_eq!(gauges(&f.streets[0]), ["6", "1"]);

    // ClickHouse acknowledged the insert: the change is streamed within a second.
    report_now(&f).await;
    let changed = district.next(soon(1)).await;
    assert_eq!(kpi(&changed, "reports"), kpi(&first, "reports") + 1);
    assert_eq!(kpi(&changed, "open"), kpi(&first, "open") + 1);
    let c = changed["by_street"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["street"] == f.streets[2].as_str())
        .unwrap();
    assert_eq!(
        (c["reports"].as_u64(), c["open"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(gauges(&f.streets[2]), ["1", "0"]);
}

#[tokio::test]
async fn many_subscribers_share_one_query_loop() {
    const STREAMS: usize = 50;
    let poll = std::time::Duration::from_millis(300);
    let f = fixture_with(StreamSettings {
        poll,
        max_per_token: STREAMS,
        max_total: 2_000,
    })
    .await;
    let m = f.state.metrics.clone();
    let _live = f.start_live();
    assert!(
        f.state
            .start_live_numbers(CancellationToken::new())
            .is_none(),
        "one loop per process"
    );

    let started = std::time::Instant::now();
    let (queries, polls) = (m.stream_queries.get(), m.stream_polls.get());
    let mut streams = Vec::new();
    for _ in 0..STREAMS {
        let mut s = Events::open(&f, &f.district).await.unwrap();
        s.next(soon(10)).await;
        streams.push(s);
    }
    assert_eq!(m.stream_subscribers.get(), STREAMS as i64);
    let (status, body) = Events::open(&f, &f.district).await.err().expect("a 429");
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["code"], "too_many_streams");

    report_now(&f).await;
    let mut reports = Vec::new();
    for s in &mut streams {
        reports.push(kpi(&s.next(soon(5)).await, "reports"));
    }
    assert!(reports.windows(2).all(|w| w[0] == w[1]), "{reports:?}");

    // One loop: its polls follow the clock, not the number of streams, and each poll costs one
    // probe plus, when the facts changed, two queries (and one when the alerts changed: once
    // here, the first poll's reading).
    let elapsed = started.elapsed();
    let polls = m.stream_polls.get() - polls;
    let queries = m.stream_queries.get() - queries;
    let ticks = (elapsed.as_millis() / poll.as_millis()) as u64 + 2;
    assert!(
        polls <= ticks,
        "{polls} polls in {elapsed:?} with {STREAMS} streams"
    );
    assert!(
        queries <= 3 * polls + 1,
        "{queries} queries for {polls} polls"
    );
    assert!(
        queries >= polls + 2,
        "the change was computed: {queries} queries, {polls} polls"
    );

    drop(streams);
    assert_eq!(m.stream_subscribers.get(), 0);
}

/// The alert ids of an `alerts` event, with their versions and states.
fn open_alerts(event: &Value) -> Vec<(String, u64, String)> {
    event["active"]
        .as_array()
        .unwrap_or_else(|| panic!("active in {event}"))
        .iter()
        .map(|a| {
            (
                a["alert_id"].as_str().unwrap().to_owned(),
                a["version"].as_u64().unwrap(),
                a["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_new_alert_reaches_the_stream_within_a_second_in_its_street_only() {
    let f = fixture().await;
    let _live = f.start_live();
    let mut district = Events::open(&f, &f.district).await.unwrap();
    let mut own = Events::open(&f, &f.street_a).await.unwrap();
    // No alert yet: both streams say so at once.
    let first = district.next_named("alerts", soon(10)).await;
    assert_eq!(first["scope"]["kind"], "district");
    assert_eq!(open_alerts(&first), vec![]);
    let mine = own.next_named("alerts", soon(10)).await;
    assert_eq!(mine["scope"]["street_code"], f.streets[0].as_str());
    assert_eq!(open_alerts(&mine), vec![]);

    // Three garbage piles in street B's first grid raise an alert there.
    let b_grid = first_grid(&f.streets[1]);
    let now = gridclue_core::wire::now_ms();
    let garbage = ("garbage_pile", "greening_city_appearance");
    let in_b = f.raise_alert(0xB, b_grid, garbage, now).await;
    // ClickHouse acknowledged the insert: the district's stream has it within a second.
    let raised = district.next_named("alerts", soon(1)).await;
    let b_id = in_b.alert_id.to_string();
    assert_eq!(open_alerts(&raised), vec![(b_id.clone(), 1, "new".into())]);
    let shown = &raised["active"][0];
    assert_eq!(shown["street_code"], f.streets[1].as_str());
    assert_eq!(shown["grid_code"], b_grid.as_str());
    assert_eq!(shown["category"], "garbage_pile");
    assert_eq!(shown["observed"], 3);

    // An alert in street A: street A's stream carries it, and only it (B's never reached it:
    // its next event holds A's alone).
    let manholes = ("manhole_cover", "water_affairs");
    let in_a = f
        .raise_alert(0xA, first_grid(&f.streets[0]), manholes, now)
        .await;
    let a_id = in_a.alert_id.to_string();
    let mine = own.next_named("alerts", soon(1)).await;
    assert_eq!(open_alerts(&mine), vec![(a_id.clone(), 1, "new".into())]);
    let both = district.next_named("alerts", soon(1)).await;
    let mut ids: Vec<String> = open_alerts(&both).into_iter().map(|a| a.0).collect();
    ids.sort();
    let mut want = vec![a_id.clone(), b_id.clone()];
    want.sort();
    assert_eq!(ids, want);

    // B's alert closes (its version 2, written twice as a replay would): it leaves the
    // district's open alerts.
    let closed = AlertFact {
        version: 2,
        state: AlertState::Closed,
        ..in_b.clone()
    };
    write_alerts(&f.db.client, &[closed.clone(), closed]).await;
    let after = district.next_named("alerts", soon(1)).await;
    assert_eq!(open_alerts(&after), vec![(a_id, 1, "new".into())]);
}
