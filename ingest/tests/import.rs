//! `POST /v1/import/clues` (router tests; a mock cluster takes the commands): a historical clue
//! becomes its report and its timeline's commands, in order, with the historical times, the
//! roles the old system recorded, the `import` channel and ids that are the same on every
//! import; bad records are refused one by one with specific codes; only the district imports.

mod common;

use axum::http::StatusCode;
use common::*;
use gridclue_core::tokens::TokenFile;
use gridclue_core::wire::{ActorKind, Channel, Command, Lifecycle};
use gridclue_core::CommandId;
use gridclue_ingest::import::{imported_clue_id, imported_command_id};
use gridclue_ingest::{api, build_state};
use serde_json::{json, Value};

const STREET: &str = "310199001";

fn history() -> Value {
    json!({
        "source_id": "2026-10-000123",
        "category": "manhole_cover",
        "lat": INSIDE.0,
        "lon": INSIDE.1,
        "description": "井盖缺失（旧系统）",
        "reported_at": t(0),
        "reporter_group": "courier",
        "timeline": [
            {"action": "accept", "at": t(28), "by": {"role": "street", "scope": STREET}},
            {"action": "dispatch", "at": t(33), "by": {"role": "street", "scope": STREET}, "department": "water_affairs"},
            {"action": "start", "at": t(48), "by": {"role": "department", "scope": "water_affairs"}},
            {"action": "request_postpone", "at": t(78), "by": {"role": "department", "scope": "water_affairs"}, "hours": 8, "reason": "等待配件"},
            {"action": "approve_postpone", "at": t(108), "by": {"role": "district"}},
            {"action": "handle", "at": t(1788), "by": {"role": "department", "scope": "water_affairs"}, "note": "已更换井盖"},
            {"action": "verify_ok", "at": t(1848), "by": {"role": "street", "scope": STREET}},
            {"action": "rate", "at": t(2808), "by": {"role": "reporter"}, "rating": 4}
        ]
    })
}

/// 30 days ago, 09:12 in China: the report of the historical clue.
fn base_ms() -> u64 {
    static BASE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *BASE.get_or_init(|| {
        let day = 86_400_000;
        let eight = 8 * 3_600_000;
        let now = gridclue_core::wire::now_ms();
        (now + eight) / day * day - eight - 30 * day + 9 * 3_600_000 + 12 * 60_000
    })
}

/// `minutes` after the report, as RFC 3339 in China Standard Time.
fn t(minutes: i64) -> String {
    let ms = base_ms() as i64 + minutes * 60_000;
    let local = chrono::DateTime::from_timestamp_millis(ms + 8 * 3_600_000).unwrap();
    format!("{}+08:00", local.naive_utc().format("%Y-%m-%dT%H:%M:%S"))
}

fn ms(minutes: i64) -> u64 {
    (base_ms() as i64 + minutes * 60_000) as u64
}

fn district_id(env: &Env) -> String {
    TokenFile::read(&env.dir.join("tokens.json"))
        .unwrap()
        .verify(&env.district)
        .unwrap()
        .id
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_historical_clue_becomes_its_commands_with_their_times_and_roles() {
    let cluster = cluster(3);
    let bootstrap = cluster.bootstrap_servers();
    let env = Env::new("import");
    let app = api::app(build_state(&env.config(&bootstrap)).unwrap());

    let good = history();
    let mut unknown_category = history();
    unknown_category["source_id"] = json!("2026-10-000124");
    unknown_category["category"] = json!("ufo_sighting");
    let mut backwards = history();
    backwards["source_id"] = json!("2026-10-000125");
    backwards["timeline"][2]["at"] = json!(t(-12));
    let mut wrong_role = history();
    wrong_role["source_id"] = json!("2026-10-000126");
    wrong_role["timeline"][0]["by"] = json!({"role": "department", "scope": "water_affairs"});
    let mut future = history();
    future["source_id"] = json!("2099-000001");
    future["reported_at"] = json!("2099-01-01T00:00:00+08:00");
    let mut no_reason = history();
    no_reason["source_id"] = json!("2026-10-000127");
    no_reason["timeline"] =
        json!([{"action": "reject", "at": t(48), "by": {"role": "street", "scope": STREET}}]);
    let mut bad_department = history();
    bad_department["source_id"] = json!("2026-10-000128");
    bad_department["timeline"][1]["department"] = json!("sewers");
    let body = json!({"source": "old-city-system", "clues": [
        good, unknown_category, backwards, wrong_role, future, no_reason, bad_department, history()
    ]});
    let r = call(
        &app,
        post_json("/v1/import/clues", Some(&env.district), &body),
    )
    .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let answer = body_json(r).await;
    let statuses: Vec<(String, String)> = answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["status"].as_str().unwrap().to_owned(),
                r["code"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let s = |a: &str, b: &str| (a.to_owned(), b.to_owned());
    assert_eq!(
        statuses,
        vec![
            s("accepted", ""),
            s("error", "unknown_category"),
            s("error", "invalid_timeline"),
            s("error", "role_not_allowed"),
            s("error", "reported_at_in_future"),
            s("error", "missing_field"),
            s("error", "unknown_department"),
            s("error", "duplicate_source_id"),
        ],
        "{answer:#}"
    );
    assert_eq!(
        (
            answer["accepted"].clone(),
            answer["errors"].clone(),
            answer["commands"].clone()
        ),
        (json!(1), json!(7), json!(9))
    );
    // Errors name the entry and field of the timeline.
    assert_eq!(answer["results"][2]["field"], "timeline[2].at");
    assert_eq!(answer["results"][5]["field"], "timeline[0].reason");
    assert_eq!(answer["results"][6]["field"], "timeline[1].department");
    let clue = imported_clue_id("old-city-system", "2026-10-000123");
    assert_eq!(answer["results"][0]["clue_id"], clue.to_string());

    let records = tokio::task::spawn_blocking(move || read_topic(&bootstrap, 9))
        .await
        .unwrap();
    assert_eq!(records.len(), 9, "only the good clue's commands were sent");
    assert!(records
        .iter()
        .all(|(key, c)| key == &clue.to_string() && c.clue_id == clue));
    let district = district_id(&env);
    let (_, report) = &records[0];
    assert_eq!(report.command_id, CommandId::for_report(clue));
    assert_eq!(report.issued_at_ms, ms(0));
    assert_eq!(report.actor.kind, ActorKind::Reporter);
    assert_eq!(report.actor.id, district);
    let Command::Report(r) = &report.command else {
        panic!("the first command is the report: {report:?}")
    };
    assert_eq!(r.channel, Channel::Import, "marked as imported");
    assert_eq!(r.reported_at_ms, Some(report.issued_at_ms));
    let expected = [
        ("accept", 28, ActorKind::Street, Some(STREET)),
        ("dispatch", 33, ActorKind::Street, Some(STREET)),
        ("start", 48, ActorKind::Department, Some("water_affairs")),
        (
            "request_postpone",
            78,
            ActorKind::Department,
            Some("water_affairs"),
        ),
        ("approve_postpone", 108, ActorKind::District, None),
        ("handle", 1788, ActorKind::Department, Some("water_affairs")),
        ("verify_ok", 1848, ActorKind::Street, Some(STREET)),
        ("rate", 2808, ActorKind::Reporter, None),
    ];
    for (i, (action, at, kind, scope)) in expected.iter().enumerate() {
        let (_, c) = &records[i + 1];
        assert_eq!(c.command.type_name(), *action, "command {i}");
        assert_eq!(c.issued_at_ms, ms(*at), "{action}");
        assert_eq!(c.actor.kind, *kind, "{action}");
        assert_eq!(
            c.actor.scope.as_ref().map(|s| s.as_str()),
            *scope,
            "{action}"
        );
        assert_eq!(c.actor.id, district, "{action}: the importing token acted");
        assert_eq!(c.command_id, imported_command_id(clue, i));
    }
    assert!(matches!(
        records[1 + 1].1.command,
        Command::Lifecycle(Lifecycle::Dispatch { ref department }) if department == "water_affairs"
    ));
    assert!(matches!(
        records[4].1.command,
        Command::Lifecycle(Lifecycle::RequestPostpone {
            working_hours: 8,
            ..
        })
    ));
    assert!(matches!(
        records[8].1.command,
        Command::Lifecycle(Lifecycle::Rate { rating: 4, .. })
    ));

    // The same record imported again is the same commands (the processor applies them once).
    let r = call(
        &app,
        post_json(
            "/v1/import/clues",
            Some(&env.district),
            &json!({"source": "old-city-system", "clues": [history()]}),
        ),
    )
    .await;
    let again = body_json(r).await;
    assert_eq!(again["results"][0]["clue_id"], clue.to_string());
}

#[tokio::test]
async fn only_the_district_imports_and_bad_requests_are_problems() {
    let env = Env::new("import-refusals");
    let app = api::app(build_state(&env.config("127.0.0.1:9")).unwrap());
    let body = json!({"source": "old", "clues": [history()]});
    for (token, status, code) in [
        (None, StatusCode::UNAUTHORIZED, "unauthorized"),
        (
            Some(env.reporter.as_str()),
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
        (
            Some(env.revoked.as_str()),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
    ] {
        let r = call(&app, post_json("/v1/import/clues", token, &body)).await;
        assert_eq!(r.status(), status);
        assert_eq!(body_json(r).await["code"], code);
    }
    let many: Vec<Value> = (0..501)
        .map(|i| {
            let mut h = history();
            h["source_id"] = json!(format!("x-{i}"));
            h
        })
        .collect();
    for (body, status, code) in [
        (
            json!({"source": "old", "clues": []}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "empty_batch",
        ),
        (
            json!({"source": "", "clues": [history()]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_source",
        ),
        (
            json!({"source": "old", "clues": many}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "too_many_items",
        ),
        (
            json!({"source": "old", "clues": [history()], "extra": 1}),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
    ] {
        let r = call(
            &app,
            post_json("/v1/import/clues", Some(&env.district), &body),
        )
        .await;
        assert_eq!(r.status(), status, "{code}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        assert_eq!(body_json(r).await["code"], code);
    }
    // A record with fields the import does not know is refused by itself.
    let mut odd = history();
    odd["priority"] = json!("high");
    let mut long = history();
    long["source_id"] = json!("long");
    let entry = long["timeline"][0].clone();
    long["timeline"] = json!(vec![entry; 16]);
    let r = call(
        &app,
        post_json(
            "/v1/import/clues",
            Some(&env.district),
            &json!({"source": "old", "clues": [odd, long]}),
        ),
    )
    .await;
    // Every record was refused, so nothing needs the (unreachable) broker.
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let answer = body_json(r).await;
    assert_eq!(answer["results"][0]["code"], "invalid_clue");
    assert_eq!(answer["results"][1]["code"], "timeline_too_long");
    assert_eq!(answer["accepted"], 0);
}
