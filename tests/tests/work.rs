//! `GET /v1/work` (dashboard-api) against the real test ClickHouse server
//! (`GRIDCLUE_TEST_CLICKHOUSE_URL`): a hand-built set of clue states — some written in two
//! versions, as the sink writes a clue's rows over time — and the queues each token must see,
//! written out by hand; scope refusals, parameter refusals and stable pagination.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use gridclue_core::calendar::Calendar;
use gridclue_core::codes::StreetCode;
use gridclue_core::tokens::{TokenFile, TokenKind, TokenStore};
use gridclue_core::ClueId;
use gridclue_dashboard_api::{AppState, Reference};
use gridclue_sink::rows::ClueRow;
use gridclue_sink::store::InsertTimeouts;
use gridclue_tests::ch::TestDb;
use gridclue_tests::facts::first_grid;
use gridclue_tests::{data_dir, scratch};
use serde_json::Value;
use tower::ServiceExt;

const HOUR: u64 = 3_600_000;
const DAY: u64 = 24 * HOUR;
/// Report times: midnight of 2026-11-02 in China plus a few minutes per clue (the order is known).
const T0: u64 = 1_793_548_800_000;

struct Fixture {
    db: TestDb,
    app: axum::Router,
    tokens: Tokens,
    street_a: StreetCode,
    street_b: StreetCode,
    /// Clue ids by the names used below.
    ids: BTreeMap<&'static str, String>,
    _dir: tempfile::TempDir,
}

struct Tokens {
    district: String,
    street_a: String,
    water: String,
    fire: String,
    reporter: String,
}

fn timeouts() -> InsertTimeouts {
    InsertTimeouts {
        send: Duration::from_secs(10),
        end: Duration::from_secs(10),
    }
}

async fn insert(db: &TestDb, rows: &[ClueRow]) {
    let refs: Vec<&ClueRow> = rows.iter().collect();
    gridclue_sink::store::insert_clues(&db.client, &refs, timeouts())
        .await
        .unwrap();
}

/// The code `s` (`None` for `""`, as the row's column reads it).
fn code<C: std::str::FromStr>(s: &str) -> Option<C>
where
    C::Err: std::fmt::Debug,
{
    (!s.is_empty()).then(|| s.parse().unwrap())
}

fn id_of(row: &ClueRow) -> String {
    row.clue_id.to_string()
}

/// A clue inside the district on `street`'s first grid.
fn clue(street: &str, minute: u64, status: &str) -> ClueRow {
    let grid = first_grid(street);
    ClueRow {
        clue_id: ClueId::new_random().as_uuid(),
        version: 0,
        status: status.into(),
        placement: "inside".into(),
        inside: 1,
        grid_code: Some(grid),
        community_code: Some(grid.community_code()),
        street_code: code(street),
        category: code("garbage_pile"),
        channel: "api".into(),
        department: code("greening_city_appearance"),
        routed_department: code("greening_city_appearance"),
        reported_at_ms: T0 + minute * 60_000,
        updated_at_ms: T0 + minute * 60_000,
        is_case: 1,
        report_case: 1,
        ..ClueRow::default()
    }
}

/// Accepted now-ish with a deadline `deadline_in` from now (negative: overdue) that turns
/// yellow `yellow_in` from now.
fn running(mut row: ClueRow, now: u64, yellow_in: i64, deadline_in: i64) -> ClueRow {
    row.accepted_at_ms = now - 30 * DAY;
    row.yellow_at_ms = (now as i64 + yellow_in) as u64;
    row.deadline_ms = (now as i64 + deadline_in) as u64;
    row
}

fn at(mut row: ClueRow, version: u32, status: &str, assigned: &str) -> ClueRow {
    row.version = version;
    row.status = status.into();
    row.assigned_department = code(assigned);
    if !assigned.is_empty() {
        row.department = code(assigned);
    }
    row
}

async fn fixture() -> Fixture {
    let db = TestDb::create("work").await;
    gridclue_sink::migrations::apply(&db.client).await.unwrap();
    let reference = Reference::load(&data_dir()).unwrap();
    let street_a = reference.streets[0].code;
    let street_b = reference.streets[5].code;
    let now = gridclue_core::wire::now_ms();
    let (green, yellow, red) = (
        (DAY as i64, 10 * DAY as i64),
        (-(HOUR as i64), 10 * DAY as i64),
        (-(20 * DAY as i64), -(10 * DAY as i64)),
    );
    let (a, b) = (street_a.as_str(), street_b.as_str());
    let mut ids = BTreeMap::new();
    let mut latest = Vec::new();
    let mut older = Vec::new();
    let mut add = |name: &'static str, row: ClueRow| {
        ids.insert(name, id_of(&row));
        latest.push(row);
    };
    add("a_reported_1", clue(a, 1, "reported"));
    add("a_reported_5", clue(a, 5, "reported"));
    add("a_reported_5_twin", clue(a, 5, "reported"));
    let mut returned = running(clue(a, 2, "accepted"), now, green.0, green.1);
    returned.returned_count = 1;
    add("a_accepted_returned", returned);
    add(
        "a_dispatched_water_red",
        at(
            running(clue(a, 3, "x"), now, red.0, red.1),
            3,
            "dispatched",
            "water_affairs",
        ),
    );
    add(
        "a_in_progress_fire_yellow",
        at(
            running(clue(a, 4, "x"), now, yellow.0, yellow.1),
            4,
            "in_progress",
            "fire_rescue",
        ),
    );
    add(
        "a_handled_green",
        at(
            running(clue(a, 6, "x"), now, green.0, green.1),
            5,
            "handled",
            "water_affairs",
        ),
    );
    let mut closed = at(clue(a, 7, "x"), 6, "closed", "water_affairs");
    closed.closed_at_ms = now;
    add("a_closed", closed);
    add("a_withdrawn", at(clue(a, 8, "x"), 1, "withdrawn", ""));
    let mut imported = clue(b, 9, "reported");
    imported.channel = "import".into();
    add("b_reported", imported);
    let mut pending = at(
        running(clue(b, 10, "x"), now, green.0, green.1),
        5,
        "in_progress",
        "water_affairs",
    );
    pending.postpone_pending = 1;
    pending.postpone_requested_hours = 8;
    pending.supervise_count = 2;
    add("b_in_progress_water_postpone_pending", pending);
    // Written twice: first reported (routed to water), then dispatched to fire.
    let moved = clue(a, 11, "reported");
    older.push(ClueRow {
        department: code("water_affairs"),
        ..moved.clone()
    });
    add(
        "a_moved_to_fire",
        at(
            running(moved, now, green.0, green.1),
            3,
            "dispatched",
            "fire_rescue",
        ),
    );
    // Written twice: dispatched to water, then returned (退回) to the street.
    let back = running(clue(a, 12, "x"), now, green.0, green.1);
    older.push(at(back.clone(), 3, "dispatched", "water_affairs"));
    let mut back = at(back, 5, "accepted", "");
    back.department = code("water_affairs");
    back.returned_count = 1;
    add("a_returned_by_water", back);
    // Never queued: outside the district, and a fact without its report.
    let mut outside = clue(a, 13, "rejected");
    outside.placement = "outside".into();
    outside.inside = 0;
    outside.street_code = None;
    outside.nearest_street_code = code(a);
    add("outside", outside);
    let mut orphan = clue(a, 14, "accepted");
    orphan.placement = "unknown".into();
    orphan.street_code = None;
    add("orphan", orphan);

    // Older versions first, in their own insert (their own part), then the latest.
    insert(&db, &older).await;
    insert(&db, &latest).await;

    let dir = scratch("work-tokens");
    let path = dir.path().join("tokens.json");
    let mut f = TokenFile::default();
    let mut issue = |kind, scope: Option<&str>| gridclue_tests::issue_token(&mut f, kind, scope);
    let tokens = Tokens {
        district: issue(TokenKind::District, None),
        street_a: issue(TokenKind::Street, Some(a)),
        water: issue(TokenKind::Department, Some("water_affairs")),
        fire: issue(TokenKind::Department, Some("fire_rescue")),
        reporter: issue(TokenKind::Reporter, None),
    };
    f.write(&path).unwrap();
    let state = AppState::new(
        db.client.clone(),
        TokenStore::open(&path).unwrap(),
        reference,
        Calendar::load(&data_dir().join("calendar.json")).unwrap(),
    );
    Fixture {
        db,
        app: gridclue_dashboard_api::app(state),
        tokens,
        street_a,
        street_b,
        ids,
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

impl Fixture {
    fn names(&self, items: &Value) -> Vec<&'static str> {
        items
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                let id = i["clue_id"].as_str().unwrap();
                *self
                    .ids
                    .iter()
                    .find(|(_, v)| v.as_str() == id)
                    .unwrap_or_else(|| panic!("unknown clue {id}"))
                    .0
            })
            .collect()
    }

    /// Queue name → (total, item names) of an answer.
    fn queues(&self, work: &Value) -> BTreeMap<String, (u64, Vec<&'static str>)> {
        work["queues"]
            .as_array()
            .unwrap()
            .iter()
            .map(|q| {
                (
                    q["queue"].as_str().unwrap().to_owned(),
                    (q["total"].as_u64().unwrap(), self.names(&q["items"])),
                )
            })
            .collect()
    }

    /// The two clues reported in the same millisecond, in id order.
    fn twins(&self) -> [&'static str; 2] {
        if self.ids["a_reported_5"] < self.ids["a_reported_5_twin"] {
            ["a_reported_5", "a_reported_5_twin"]
        } else {
            ["a_reported_5_twin", "a_reported_5"]
        }
    }
}

fn expect(pairs: &[(&str, Vec<&'static str>)]) -> BTreeMap<String, (u64, Vec<&'static str>)> {
    pairs
        .iter()
        .map(|(q, items)| (q.to_string(), (items.len() as u64, items.clone())))
        .collect()
}

#[tokio::test]
async fn each_token_sees_the_clues_waiting_for_its_next_action() {
    let fx = fixture().await;
    let [t1, t2] = fx.twins();

    let (status, work) = get(&fx.app, "/v1/work", Some(&fx.tokens.street_a)).await;
    assert_eq!(status, StatusCode::OK, "{work}");
    assert_eq!(work["scope"]["kind"], "street");
    assert_eq!(work["scope"]["street_code"], fx.street_a.as_str());
    assert_eq!(
        fx.queues(&work),
        expect(&[
            ("accept", vec!["a_reported_1", t1, t2]),
            (
                "dispatch",
                vec!["a_accepted_returned", "a_returned_by_water"]
            ),
            ("verify", vec!["a_handled_green"]),
        ])
    );

    let (status, work) = get(&fx.app, "/v1/work", Some(&fx.tokens.water)).await;
    assert_eq!(status, StatusCode::OK, "{work}");
    assert_eq!(
        fx.queues(&work),
        expect(&[(
            "handle",
            vec![
                "a_dispatched_water_red",
                "b_in_progress_water_postpone_pending"
            ]
        )]),
        "a clue dispatched to water and then returned is no longer water's"
    );
    let (_, work) = get(&fx.app, "/v1/work", Some(&fx.tokens.fire)).await;
    assert_eq!(
        fx.queues(&work),
        expect(&[(
            "handle",
            vec!["a_in_progress_fire_yellow", "a_moved_to_fire"]
        )])
    );

    let (status, work) = get(&fx.app, "/v1/work", Some(&fx.tokens.district)).await;
    assert_eq!(status, StatusCode::OK, "{work}");
    assert_eq!(
        fx.queues(&work),
        expect(&[
            ("accept", vec!["a_reported_1", t1, t2, "b_reported"]),
            (
                "dispatch",
                vec!["a_accepted_returned", "a_returned_by_water"]
            ),
            (
                "handle",
                vec![
                    "a_dispatched_water_red",
                    "a_in_progress_fire_yellow",
                    "b_in_progress_water_postpone_pending",
                    "a_moved_to_fire"
                ]
            ),
            ("verify", vec!["a_handled_green"]),
            ("postpone", vec!["b_in_progress_water_postpone_pending"]),
        ])
    );
    let (_, work) = get(
        &fx.app,
        &format!("/v1/work?street={}", fx.street_b),
        Some(&fx.tokens.district),
    )
    .await;
    assert_eq!(
        fx.queues(&work),
        expect(&[
            ("accept", vec!["b_reported"]),
            ("dispatch", vec![]),
            ("handle", vec!["b_in_progress_water_postpone_pending"]),
            ("verify", vec![]),
            ("postpone", vec!["b_in_progress_water_postpone_pending"]),
        ])
    );
    let (_, work) = get(
        &fx.app,
        "/v1/work?queue=handle&department=fire_rescue",
        Some(&fx.tokens.district),
    )
    .await;
    assert_eq!(
        fx.queues(&work),
        expect(&[(
            "handle",
            vec!["a_in_progress_fire_yellow", "a_moved_to_fire"]
        )])
    );
}

#[tokio::test]
async fn items_carry_place_category_deadline_remaining_hours_and_light() {
    let fx = fixture().await;
    let (_, work) = get(&fx.app, "/v1/work", Some(&fx.tokens.district)).await;
    let items: Vec<&Value> = work["queues"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|q| q["items"].as_array().unwrap())
        .collect();
    let item = |name: &str| {
        let id = &fx.ids[name];
        *items.iter().find(|i| i["clue_id"] == id.as_str()).unwrap()
    };
    let red = item("a_dispatched_water_red");
    assert_eq!(red["light"], "red");
    assert!(
        red["remaining_working_hours"].as_f64().unwrap() <= -7.0,
        "{red}"
    );
    assert_eq!(red["department"], "water_affairs");
    assert_eq!(red["department_name"], "区水务局");
    assert_eq!(red["status"], "dispatched");
    assert_eq!(red["street_code"], fx.street_a.as_str());
    assert!(!red["street_name"].as_str().unwrap().is_empty());
    assert!(!red["community_name"].as_str().unwrap().is_empty());
    assert_eq!(red["grid_code"].as_str().unwrap().len(), 15);
    assert_eq!(red["category"], "garbage_pile");
    assert_eq!(red["category_name"], "暴露垃圾/垃圾堆物");
    assert!(red["deadline"].as_str().unwrap().ends_with("+08:00"));
    assert_eq!(item("a_in_progress_fire_yellow")["light"], "yellow");
    let green = item("a_handled_green");
    assert_eq!(green["light"], "green");
    assert!(
        green["remaining_working_hours"].as_f64().unwrap() >= 7.0,
        "{green}"
    );
    // Before acceptance no time limit runs.
    let fresh = item("a_reported_1");
    assert_eq!(fresh["light"], Value::Null);
    assert_eq!(fresh["deadline"], Value::Null);
    assert_eq!(fresh["remaining_working_hours"], Value::Null);
    assert_eq!(fresh["reported_at"], "2026-11-02T00:01:00+08:00");
    assert_eq!(fresh["channel"], "api");
    assert_eq!(item("b_reported")["channel"], "import");
    let pending = item("b_in_progress_water_postpone_pending");
    assert_eq!(pending["postpone_requested_hours"], 8);
    assert_eq!(pending["supervise_count"], 2);
    assert_eq!(item("a_returned_by_water")["returned_count"], 1);
    assert_eq!(fresh["postpone_requested_hours"], Value::Null);
}

#[tokio::test]
async fn pages_follow_the_cursor_without_repeats_or_gaps() {
    let fx = fixture().await;
    let [t1, t2] = fx.twins();
    let district = &fx.tokens.district;

    let (status, page1) = get(&fx.app, "/v1/work?queue=accept&limit=2", Some(district)).await;
    assert_eq!(status, StatusCode::OK, "{page1}");
    let q = &page1["queues"][0];
    assert_eq!(q["total"], 4);
    assert_eq!(fx.names(&q["items"]), vec!["a_reported_1", t1]);
    let cursor = q["next_cursor"].as_str().unwrap().to_owned();

    // A clue reported before the cursor's place arrives between the pages: it is not on the
    // next page (it sorts before it); one reported after it is.
    let early = clue(fx.street_a.as_str(), 0, "reported");
    let late = clue(fx.street_a.as_str(), 30, "reported");
    insert(&fx.db, &[early.clone(), late.clone()]).await;

    let (status, page2) = get(
        &fx.app,
        &format!("/v1/work?limit=2&cursor={cursor}"),
        Some(district),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{page2}");
    let q = &page2["queues"][0];
    assert_eq!(q["queue"], "accept");
    assert_eq!(q["total"], 6, "the total counts the whole queue now");
    let ids: Vec<&str> = q["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["clue_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        vec![fx.ids[t2].as_str(), fx.ids["b_reported"].as_str()]
    );
    let cursor = q["next_cursor"].as_str().unwrap().to_owned();
    let (_, page3) = get(
        &fx.app,
        &format!("/v1/work?queue=accept&limit=2&cursor={cursor}"),
        Some(district),
    )
    .await;
    let q = &page3["queues"][0];
    let ids: Vec<&str> = q["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["clue_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![late.clue_id.to_string()]);
    assert_eq!(q["next_cursor"], Value::Null, "the last page");
    assert!(!ids.contains(&early.clue_id.to_string().as_str()));
}

#[tokio::test]
async fn out_of_scope_reads_are_403_and_bad_parameters_400_naming_them() {
    let fx = fixture().await;
    let t = &fx.tokens;
    let other = format!("/v1/work?street={}", fx.street_b);
    for (path, token) in [
        (other.as_str(), &t.street_a),
        ("/v1/work?queue=handle", &t.street_a),
        ("/v1/work?queue=postpone", &t.street_a),
        ("/v1/work?queue=verify", &t.water),
        ("/v1/work?department=fire_rescue", &t.water),
        ("/v1/work", &t.reporter),
    ] {
        let (status, body) = get(&fx.app, path, Some(token)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
        assert_eq!(body["code"], "forbidden");
    }
    let (status, _) = get(&fx.app, "/v1/work", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let cursor = "accept:1:0b5f3a3e-63a4-4a53-9d2a-0c2d0f1e2a3b";
    for (query, name) in [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=-1", "limit"),
        ("queue=triage", "queue"),
        ("street=1", "street"),
        ("department=DROP%20TABLE", "department"),
        ("cursor=abc", "cursor"),
        ("sort=newest", "sort"),
        ("limit=5&limit=6", "limit"),
    ] {
        let (status, body) = get(&fx.app, &format!("/v1/work?{query}"), Some(&t.district)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(body["code"], "invalid_parameter");
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains(&format!("`{name}`")),
            "{query}: {body}"
        );
    }
    let (status, body) = get(
        &fx.app,
        &format!("/v1/work?queue=verify&cursor={cursor}"),
        Some(&t.district),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["detail"].as_str().unwrap().contains("`cursor`"));
}
