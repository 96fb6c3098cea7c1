//! The reporter loop of dashboard-api against the real test ClickHouse server
//! (`GRIDCLUE_TEST_CLICKHOUSE_URL`): a reporter's clues, the points ledger derived from facts
//! (written with the sink's own fold and row code), redemptions (idempotent, serialised, never
//! below zero — also under concurrent requests) and the leaderboard. Every expected number is
//! worked out by hand from the histories below.
//!
//! Histories (China times; the leaderboard is read for the periods holding 2026-11-05 12:00:
//! week 11-02 … 11-09, month November, year 2026):
//!
//! rider 1 (food delivery):
//! - R1a reported 11-03 09:00, accepted 11-03 10:00 (+10), closed 11-04 15:00 (+5);
//! - R1b reported 10-20 09:00, accepted 10-20 10:00 (+10);
//! - R1c reported 11-04 09:00, a duplicate of R1a at once (+2);
//! - R1d reported 11-04 10:00, rejected 11-04 11:00 (0);
//! - R1e reported 11-04 12:00, withdrawn (0);
//! - R1f reported 11-02 09:00, accepted 11-02 10:00 (+10), rejected after that (kept);
//! - R1g reported 11-05 11:00, accepted 11-05 13:00 (+10);
//!
//! rider 2 (courier): R2a accepted 11-03 09:00 (+10); R2b merged into R2a 11-03 11:00 (+2);
//! R2c accepted 2025-12-30 10:00 (+10, last year), closed 2026-01-02 (+5).
//!
//! rider 3 (food delivery): R3a outside the district (0); R3b accepted 11-04 10:00 (+10); R3c a
//! duplicate of R3b at once, 11-04 11:00 (+2).

use std::collections::BTreeMap;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use gridclue_core::codes::ActorScope;
use gridclue_core::tokens::{TokenFile, TokenKind, TokenStore};
use gridclue_core::{GridCode, ReporterGroup};
use gridclue_dashboard_api::{AppState, Reference};
use gridclue_tests::ch::TestDb;
use gridclue_tests::facts::{china, write, write_rows, History, ReportSpec};
use gridclue_tests::{data_dir, scratch};
use serde_json::{json, Value};
use tower::ServiceExt;

struct Fixture {
    db: TestDb,
    app: axum::Router,
    district: String,
    street: String,
    /// (token, public id) of the three riders.
    riders: [(String, String); 3],
    histories: BTreeMap<&'static str, History>,
    dir: tempfile::TempDir,
}

/// The first grid of the shipped map.
fn first_grid() -> GridCode {
    gridclue_tests::shipped_map().grids[0].grid_code
}

fn histories(ids: [&str; 3]) -> BTreeMap<&'static str, History> {
    let t = china;
    let spec = |rider: &str| ReportSpec {
        grid: first_grid(),
        category: "garbage_pile".parse().unwrap(),
        department: "greening_city_appearance".parse().unwrap(),
        reporter_id: rider.into(),
        reporter_group: None,
        duplicate_of: None,
    };
    let dup = |rider: &str, of: &History| ReportSpec {
        duplicate_of: Some(of.clue),
        ..spec(rider)
    };
    let far = Some(t("2099-01-01 09:00"));
    let mut h = BTreeMap::new();
    let r1a = History::reported(&spec(ids[0]), t("2026-11-03 09:00"))
        .accepted(t("2026-11-03 10:00"), far)
        .dispatched(t("2026-11-03 10:10"), "greening_city_appearance")
        .handled(t("2026-11-04 14:00"))
        .closed(t("2026-11-04 15:00"), 4);
    h.insert(
        "R1b",
        History::reported(&spec(ids[0]), t("2026-10-20 09:00"))
            .accepted(t("2026-10-20 10:00"), Some(t("2026-10-22 10:00"))),
    );
    h.insert(
        "R1c",
        History::reported(&dup(ids[0], &r1a), t("2026-11-04 09:00")),
    );
    h.insert(
        "R1d",
        History::reported(&spec(ids[0]), t("2026-11-04 10:00")).rejected(t("2026-11-04 11:00")),
    );
    h.insert(
        "R1e",
        History::reported(&spec(ids[0]), t("2026-11-04 12:00")).withdrawn(t("2026-11-04 12:30")),
    );
    h.insert(
        "R1f",
        History::reported(&spec(ids[0]), t("2026-11-02 09:00"))
            .accepted(t("2026-11-02 10:00"), far)
            .rejected(t("2026-11-02 11:00")),
    );
    h.insert(
        "R1g",
        History::reported(&spec(ids[0]), t("2026-11-05 11:00"))
            .accepted(t("2026-11-05 13:00"), far),
    );
    h.insert("R1a", r1a);
    let r2a = History::reported(&spec(ids[1]), t("2026-11-03 08:00"))
        .accepted(t("2026-11-03 09:00"), far);
    h.insert(
        "R2b",
        History::reported(&spec(ids[1]), t("2026-11-03 10:00"))
            .merged(t("2026-11-03 11:00"), r2a.clue),
    );
    h.insert("R2a", r2a);
    h.insert(
        "R2c",
        History::reported(&spec(ids[1]), t("2025-12-30 09:00"))
            .accepted(t("2025-12-30 10:00"), far)
            .dispatched(t("2025-12-30 10:10"), "greening_city_appearance")
            .handled(t("2026-01-02 09:00"))
            .closed(t("2026-01-02 10:00"), 7),
    );
    h.insert(
        "R3a",
        History::reported_outside(&spec(ids[2]), t("2026-11-04 08:00")),
    );
    let r3b = History::reported(&spec(ids[2]), t("2026-11-04 09:00"))
        .accepted(t("2026-11-04 10:00"), far);
    h.insert(
        "R3c",
        History::reported(&dup(ids[2], &r3b), t("2026-11-04 11:00")),
    );
    h.insert("R3b", r3b);
    h
}

async fn fixture() -> Fixture {
    let db = TestDb::create("reporters").await;
    gridclue_sink::migrations::apply(&db.client).await.unwrap();
    let dir = scratch("reporter-tokens");
    let path = dir.path().join("tokens.json");
    let mut f = TokenFile::default();
    let mut rider = |group, name: &str| {
        let (token, record) = f
            .issue(TokenKind::Reporter, Some(group), None, name)
            .unwrap();
        (token, record.id)
    };
    let riders = [
        rider(ReporterGroup::FoodDelivery, "骑手甲"),
        rider(ReporterGroup::Courier, "快递乙"),
        rider(ReporterGroup::FoodDelivery, "骑手丙"),
    ];
    let (district, _) = f
        .issue(TokenKind::District, None, None, "区指挥中心")
        .unwrap();
    let (street, _) = f
        .issue(
            TokenKind::Street,
            None,
            Some(ActorScope::parse("310199001").unwrap()),
            "街道",
        )
        .unwrap();
    f.write(&path).unwrap();
    let histories = histories([&riders[0].1, &riders[1].1, &riders[2].1]);
    let all: Vec<History> = histories.values().cloned().collect();
    write(&db.client, &all).await;
    let state = AppState::new(
        db.client.clone(),
        TokenStore::open(&path).unwrap(),
        Reference::load(&data_dir()).unwrap(),
        gridclue_core::calendar::Calendar::load(&data_dir().join("calendar.json")).unwrap(),
    );
    Fixture {
        db,
        app: gridclue_dashboard_api::app(state),
        district,
        street,
        riders,
        histories,
        dir,
    }
}

async fn call(
    app: &axum::Router,
    method: &str,
    path: &str,
    token: Option<&str>,
    key: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value, bool) {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    let req = match body {
        Some(b) => req
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(b.to_string())),
        None => req.body(Body::empty()),
    }
    .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    if !status.is_success() {
        assert_eq!(
            resp.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
    }
    let replayed = resp.headers().contains_key("idempotent-replayed");
    let bytes = axum::body::to_bytes(resp.into_body(), 16 << 20)
        .await
        .unwrap();
    (status, serde_json::from_slice(&bytes).unwrap(), replayed)
}

async fn get(app: &axum::Router, path: &str, token: &str) -> Value {
    let (status, body, _) = call(app, "GET", path, Some(token), None, None).await;
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
    body
}

async fn redeem(f: &Fixture, rider: usize, key: &str, body: Value) -> (StatusCode, Value, bool) {
    call(
        &f.app,
        "POST",
        &format!("/v1/reporters/{}/redemptions", f.riders[rider].1),
        Some(&f.district),
        Some(key),
        Some(body),
    )
    .await
}

impl Fixture {
    fn id(&self, name: &str) -> String {
        self.histories[name].clue.to_string()
    }

    /// (clue name, reason, points) of a ledger, in its order.
    fn ledger(&self, points: &Value) -> Vec<(String, String, u64)> {
        points["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let id = e["clue_id"].as_str().unwrap();
                let name = self
                    .histories
                    .iter()
                    .find(|(_, h)| h.clue.to_string() == id)
                    .map(|(n, _)| n.to_string())
                    .unwrap_or_else(|| panic!("unknown clue {id}"));
                (
                    name,
                    e["reason"].as_str().unwrap().to_owned(),
                    e["points"].as_u64().unwrap(),
                )
            })
            .collect()
    }
}

fn entries(list: &[(&str, &str, u64)]) -> Vec<(String, String, u64)> {
    list.iter()
        .map(|(c, r, p)| (c.to_string(), r.to_string(), *p))
        .collect()
}

#[tokio::test]
async fn points_are_derived_once_per_clue_and_reason() {
    let f = fixture().await;
    let p1 = get(&f.app, "/v1/my/points", &f.riders[0].0).await;
    assert_eq!(p1["reporter_id"], f.riders[0].1.as_str());
    // Newest first; rejections and withdrawals are worth nothing and not listed.
    assert_eq!(
        f.ledger(&p1),
        entries(&[
            ("R1g", "accepted", 10),
            ("R1a", "closed", 5),
            ("R1c", "duplicate", 2),
            ("R1a", "accepted", 10),
            ("R1f", "accepted", 10),
            ("R1b", "accepted", 10),
        ])
    );
    assert_eq!(
        (&p1["earned"], &p1["redeemed"], &p1["balance"]),
        (&json!(47), &json!(0), &json!(47))
    );
    assert_eq!(p1["entries"][0]["at"], "2026-11-05T13:00:00.000+08:00");
    let p2 = get(&f.app, "/v1/my/points", &f.riders[1].0).await;
    assert_eq!(
        f.ledger(&p2),
        entries(&[
            ("R2b", "duplicate", 2),
            ("R2a", "accepted", 10),
            ("R2c", "closed", 5),
            ("R2c", "accepted", 10),
        ])
    );
    let p3 = get(&f.app, "/v1/my/points", &f.riders[2].0).await;
    assert_eq!(
        f.ledger(&p3),
        entries(&[("R3c", "duplicate", 2), ("R3b", "accepted", 10)])
    );
    assert_eq!(p3["balance"], 12);

    // Facts stored twice (a replay) earn nothing more.
    for name in ["R1a", "R1c", "R2b"] {
        let (events, clues) = f.histories[name].rows(0);
        write_rows(&f.db.client, &events, &clues).await;
    }
    let again = get(&f.app, "/v1/my/points", &f.riders[0].0).await;
    assert_eq!(again, p1);

    // Only reporters have points of their own.
    for token in [&f.district, &f.street] {
        let (status, body, _) = call(&f.app, "GET", "/v1/my/points", Some(token), None, None).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::FORBIDDEN, Some("forbidden"))
        );
    }
    let (status, _, _) = call(&f.app, "GET", "/v1/my/points", None, None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_reporter_lists_their_own_clues_newest_first_a_page_at_a_time() {
    let f = fixture().await;
    let rider = &f.riders[0].0;
    let mut seen = Vec::new();
    let mut path = "/v1/my/clues?limit=3".to_owned();
    let mut pages = 0;
    loop {
        let page = get(&f.app, &path, rider).await;
        assert_eq!(page["total"], 7);
        pages += 1;
        for item in page["items"].as_array().unwrap() {
            seen.push(item.clone());
        }
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/v1/my/clues?limit=3&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let order: Vec<String> = seen
        .iter()
        .map(|i| i["clue_id"].as_str().unwrap().to_owned())
        .collect();
    let want: Vec<String> = ["R1g", "R1e", "R1d", "R1c", "R1a", "R1f", "R1b"]
        .iter()
        .map(|n| f.id(n))
        .collect();
    assert_eq!(order, want);
    let status_of = |i: usize| {
        (
            seen[i]["status"].as_str().unwrap().to_owned(),
            seen[i]["light"].clone(),
        )
    };
    assert_eq!(status_of(0), ("accepted".into(), json!("green")));
    assert_eq!(status_of(1), ("withdrawn".into(), Value::Null));
    assert_eq!(status_of(3), ("duplicate".into(), Value::Null));
    assert_eq!(status_of(4), ("closed".into(), Value::Null));
    // R1b's deadline (10-22) has passed.
    assert_eq!(status_of(6), ("accepted".into(), json!("red")));
    assert_eq!(seen[3]["duplicate_of"], f.id("R1a").as_str());
    assert_eq!(
        (
            &seen[4]["last_action"],
            &seen[0]["last_action"],
            &seen[2]["last_action"]
        ),
        (&json!("verify_ok"), &json!("accept"), &json!("reject"))
    );
    assert_eq!(seen[0]["category_name"], "暴露垃圾/垃圾堆物");
    assert_eq!(seen[0]["reported_at"], "2026-11-05T11:00:00.000+08:00");
    // Another rider sees only their own; other tokens have no "own clues".
    let other = get(&f.app, "/v1/my/clues", &f.riders[1].0).await;
    assert_eq!(other["total"], 3);
    let (status, _, _) = call(&f.app, "GET", "/v1/my/clues", Some(&f.district), None, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    for bad in [
        "limit=0",
        "limit=101",
        "cursor=nonsense",
        "page=2",
        "limit=2&limit=3",
    ] {
        let (status, body, _) = call(
            &f.app,
            "GET",
            &format!("/v1/my/clues?{bad}"),
            Some(rider),
            None,
            None,
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_parameter")),
            "{bad}"
        );
    }
}

#[tokio::test]
async fn redemptions_are_idempotent_and_never_overdraw() {
    let f = fixture().await;
    // Rider 1 holds 47 points.
    let (status, first, replayed) =
        redeem(&f, 0, "card-1", json!({"points": 20, "note": "爱心卡"})).await;
    assert_eq!((status, replayed), (StatusCode::CREATED, false), "{first}");
    assert_eq!(
        (&first["points"], &first["balance_after"], &first["note"]),
        (&json!(20), &json!(27), &json!("爱心卡"))
    );
    // A retry gets the first answer and spends nothing.
    let (status, retry, replayed) =
        redeem(&f, 0, "card-1", json!({"points": 20, "note": "爱心卡"})).await;
    assert_eq!((status, replayed), (StatusCode::CREATED, true));
    assert_eq!(retry, first);
    // The same key for another request is refused.
    let (status, body, _) = redeem(&f, 0, "card-1", json!({"points": 21, "note": "爱心卡"})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("idempotency_key_reused"))
    );
    // More than the balance: refused, nothing spent.
    let (status, body, _) = redeem(&f, 0, "card-2", json!({"points": 28})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("insufficient_points")),
        "{body}"
    );
    let p = get(&f.app, "/v1/my/points", &f.riders[0].0).await;
    assert_eq!(
        (&p["earned"], &p["redeemed"], &p["balance"]),
        (&json!(47), &json!(20), &json!(27))
    );
    assert_eq!(p["redemptions"][0]["idempotency_key"], "card-1");

    // Ten concurrent redemptions of 5 from a balance of 27: exactly five succeed.
    let results = futures::future::join_all((0..10).map(|i| {
        let key = format!("burst-{i}");
        let f = &f;
        async move { redeem(f, 0, &key, json!({"points": 5})).await }
    }))
    .await;
    let created = results
        .iter()
        .filter(|r| r.0 == StatusCode::CREATED)
        .count();
    let refused = results
        .iter()
        .filter(|r| r.0 == StatusCode::CONFLICT && r.1["code"] == "insufficient_points")
        .count();
    assert_eq!((created, refused), (5, 5), "{results:?}");
    let mut after: Vec<i64> = results
        .iter()
        .filter(|r| r.0 == StatusCode::CREATED)
        .map(|r| r.1["balance_after"].as_i64().unwrap())
        .collect();
    after.sort();
    assert_eq!(after, vec![2, 7, 12, 17, 22]);
    // Five concurrent copies of one request: one redemption, the same answer for all.
    let copies = futures::future::join_all(
        (0..5).map(|_| redeem(&f, 0, "card-3", json!({"points": 1, "note": "x"}))),
    )
    .await;
    assert!(copies
        .iter()
        .all(|c| c.0 == StatusCode::CREATED && c.1 == copies[0].1));
    assert_eq!(
        copies.iter().filter(|c| !c.2).count(),
        1,
        "one is the original"
    );
    assert_eq!(copies[0].1["balance_after"], 1);
    let p = get(&f.app, "/v1/my/points", &f.riders[0].0).await;
    assert_eq!((&p["redeemed"], &p["balance"]), (&json!(46), &json!(1)));
    assert_eq!(
        f.db.scalar("SELECT uniqExact(idempotency_key) FROM redemptions")
            .await,
        7
    );
    // Other riders' balances are their own.
    let p2 = get(&f.app, "/v1/my/points", &f.riders[1].0).await;
    assert_eq!(p2["balance"], 27);
}

#[tokio::test]
async fn bad_redemptions_are_refused_with_reasons() {
    let f = fixture().await;
    let path = format!("/v1/reporters/{}/redemptions", f.riders[0].1);
    let body = json!({"points": 5});
    for (token, key, body, status, code, field) in [
        (
            &f.district,
            None,
            body.clone(),
            400,
            "invalid_body",
            "Idempotency-Key",
        ),
        (
            &f.district,
            Some("k"),
            json!({"points": 0}),
            400,
            "invalid_body",
            "points",
        ),
        (
            &f.district,
            Some("k"),
            json!({"points": -1}),
            400,
            "invalid_body",
            "(body)",
        ),
        (
            &f.district,
            Some("k"),
            json!({"points": 5, "phone": "138"}),
            400,
            "invalid_body",
            "(body)",
        ),
        (
            &f.district,
            Some("k"),
            json!({"points": 5, "note": "长".repeat(201)}),
            400,
            "invalid_body",
            "note",
        ),
        (&f.street, Some("k"), body.clone(), 403, "forbidden", ""),
        (
            &f.riders[0].0,
            Some("k"),
            body.clone(),
            403,
            "forbidden",
            "",
        ),
    ] {
        let (got, answer, _) =
            call(&f.app, "POST", &path, Some(token), key, Some(body.clone())).await;
        assert_eq!(
            (got.as_u16(), answer["code"].as_str()),
            (status, Some(code)),
            "{body}: {answer}"
        );
        assert!(
            answer["detail"]
                .as_str()
                .unwrap()
                .starts_with(&format!("`{field}`"))
                || field.is_empty(),
            "{answer}"
        );
    }
    // A reporter the token file does not know, or a token that is not a reporter's.
    for id in ["tok_000000000000".to_owned(), district_id(&f)] {
        let (got, answer, _) = call(
            &f.app,
            "POST",
            &format!("/v1/reporters/{id}/redemptions"),
            Some(&f.district),
            Some("k"),
            Some(body.clone()),
        )
        .await;
        assert_eq!(
            (got, answer["code"].as_str()),
            (StatusCode::NOT_FOUND, Some("not_found"))
        );
    }
    assert_eq!(f.db.scalar("SELECT count() FROM redemptions").await, 0);
}

fn district_id(f: &Fixture) -> String {
    let text = std::fs::read_to_string(f.dir.path().join("tokens.json")).unwrap();
    let file: TokenFile = serde_json::from_str(&text).unwrap();
    file.tokens
        .iter()
        .find(|t| t.kind == TokenKind::District)
        .unwrap()
        .id
        .clone()
}

#[tokio::test]
async fn the_leaderboard_ranks_points_earned_in_the_period() {
    let f = fixture().await;
    let at = "at=2026-11-05T12:00:00%2B08:00";
    let board = |period: &str, extra: &str| format!("/v1/leaderboard?period={period}&{at}{extra}");
    let rows = |b: &Value| -> Vec<(u64, String, String, String, u64)> {
        b["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["rank"].as_u64().unwrap(),
                    r["reporter_id"].as_str().unwrap().to_owned(),
                    r["name"].as_str().unwrap().to_owned(),
                    r["group"].as_str().unwrap().to_owned(),
                    r["points"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let [r1, r2, r3] = [0, 1, 2].map(|i| f.riders[i].1.clone());
    let row = |id: &String, rank: u64, points: u64| {
        let (name, group) = match id {
            x if *x == r1 => ("骑手甲", "food_delivery"),
            x if *x == r2 => ("快递乙", "courier"),
            _ => ("骑手丙", "food_delivery"),
        };
        (rank, id.clone(), name.to_owned(), group.to_owned(), points)
    };
    // Week 11-02 … 11-09: rider 1 has 10 + 5 + 2 + 10 + 10 (R1a, R1c, R1f, R1g); riders 2 and 3
    // tie at 12 and share rank 2 (in reporter id order).
    let week = get(&f.app, &board("week", ""), &f.riders[2].0).await;
    assert_eq!(
        (&week["from"], &week["to"]),
        (&json!("2026-11-02"), &json!("2026-11-09"))
    );
    let (first, second) = if r2 < r3 { (&r2, &r3) } else { (&r3, &r2) };
    assert_eq!(
        rows(&week),
        vec![row(&r1, 1, 37), row(first, 2, 12), row(second, 2, 12)]
    );
    let month = get(&f.app, &board("month", ""), &f.district).await;
    assert_eq!(rows(&month), rows(&week));
    // The year adds R1b (10-20) and R2c's closure (2026-01-02), not R2c's acceptance (2025).
    let year = get(&f.app, &board("year", ""), &f.street).await;
    assert_eq!(
        rows(&year),
        vec![row(&r1, 1, 47), row(&r2, 2, 17), row(&r3, 3, 12)]
    );
    let food = get(&f.app, &board("year", "&group=food_delivery"), &f.district).await;
    assert_eq!(rows(&food), vec![row(&r1, 1, 47), row(&r3, 2, 12)]);
    let top = get(&f.app, &board("year", "&limit=1"), &f.district).await;
    assert_eq!(rows(&top), vec![row(&r1, 1, 47)]);
    // No phone numbers or tokens: a row holds exactly these fields.
    let keys: Vec<&String> = year["rows"][0].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["group", "name", "points", "rank", "reporter_id"]);
    for bad in [
        "period=day",
        "group=pilots",
        "limit=0",
        "sort=asc",
        "at=soon",
    ] {
        let (status, body, _) = call(
            &f.app,
            "GET",
            &format!("/v1/leaderboard?{bad}"),
            Some(&f.district),
            None,
            None,
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_parameter")),
            "{bad}"
        );
    }
    let (status, _, _) = call(&f.app, "GET", "/v1/leaderboard", None, None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
