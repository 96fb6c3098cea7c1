//! Token administration over HTTP (`oneshot` router tests): the secret is shown once and only
//! its hash stored, listings never show secrets, a revocation takes effect on the next request,
//! the audit log records who did what, and street offices administer only their riders.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use gridclue_core::tokens::{TokenFile, TokenKind};
use gridclue_ingest::{api, build_state};
use serde_json::{json, Value};

const STREET: &str = "310199001";
const OTHER_STREET: &str = "310199002";

fn app(env: &Env) -> axum::Router {
    let mut config = env.config("127.0.0.1:9");
    config.produce_timeout_ms = 300;
    api::app(build_state(&config).unwrap())
}

fn get(path: &str, token: Option<&str>) -> Request<Body> {
    let mut b = Request::get(path);
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    b.body(Body::empty()).unwrap()
}

fn delete(path: &str, token: &str) -> Request<Body> {
    Request::delete(path)
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap()
}

/// Issues a token through the API; returns the whole 201 body.
async fn issue(app: &axum::Router, by: &str, body: Value) -> Value {
    let r = call(app, post_json("/v1/admin/tokens", Some(by), &body)).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{body}");
    assert_eq!(r.headers()["cache-control"], "no-store");
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let created = body_json(r).await;
    assert_eq!(
        location,
        format!("/v1/admin/tokens/{}", created["id"].as_str().unwrap())
    );
    created
}

async fn problem(r: axum::http::Response<Body>, status: StatusCode, code: &str) -> Value {
    assert_eq!(r.status(), status, "expected {code}");
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let body = body_json(r).await;
    assert_eq!(body["code"], code, "{body}");
    body
}

fn district_id(env: &Env) -> String {
    let file = TokenFile::read(&env.dir.join("tokens.json")).unwrap();
    file.verify(&env.district).unwrap().id.clone()
}

#[tokio::test]
async fn the_district_issues_lists_and_revokes_and_every_change_is_audited() {
    let env = Env::new("admin-district");
    let app = app(&env);

    let created = issue(
        &app,
        &env.district,
        json!({"kind": "street", "scope": STREET, "name": "洪泉街道 受理员"}),
    )
    .await;
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("gct_"), "{created}");
    assert_eq!(created["kind"], "street");
    assert_eq!(created["scope"], STREET);
    assert_eq!(created["revoked"], false);
    assert!(created.get("hash").is_none(), "{created}");
    let id = created["id"].as_str().unwrap().to_owned();

    // Only the hash is stored; the secret works at once on this instance.
    let stored = std::fs::read_to_string(env.dir.join("tokens.json")).unwrap();
    assert!(!stored.contains(&secret));
    let r = call(&app, get("/v1/admin/tokens", Some(&secret))).await;
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "the new street token administers"
    );

    // A department token (its scope checked against the category table) and a reporter.
    let department = issue(
        &app,
        &env.district,
        json!({"kind": "department", "scope": "water_affairs", "name": "水务 派单员"}),
    )
    .await;
    let rider = issue(
        &app,
        &env.district,
        json!({"kind": "reporter", "group": "courier", "name": "rider 12"}),
    )
    .await;
    assert_eq!(rider["group"], "courier");

    // The listing has every token, never a secret or a hash.
    let r = call(&app, get("/v1/admin/tokens", Some(&env.district))).await;
    assert_eq!(r.status(), StatusCode::OK);
    let text = body_text(r).await;
    assert!(!text.contains("gct_"), "no secret in the listing: {text}");
    assert!(!text.contains("\"hash\""), "no hash in the listing: {text}");
    let listing: Value = serde_json::from_str(&text).unwrap();
    let tokens = listing["tokens"].as_array().unwrap();
    assert_eq!(
        tokens.len(),
        4 + 3,
        "the 4 of the scratch file and 3 issued"
    );
    let listed = tokens.iter().find(|t| t["id"] == id.as_str()).unwrap();
    assert_eq!(listed["name"], "洪泉街道 受理员");

    // Revoking takes effect on the next request; revoking again changes nothing.
    let r = call(
        &app,
        delete(&format!("/v1/admin/tokens/{id}"), &env.district),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let body = body_json(r).await;
    assert_eq!(
        (body["revoked"].clone(), body["changed"].clone()),
        (json!(true), json!(true))
    );
    let r = call(&app, get("/v1/admin/tokens", Some(&secret))).await;
    let body = problem(r, StatusCode::UNAUTHORIZED, "unauthorized").await;
    assert!(body["detail"].as_str().unwrap().contains("revoked"));
    let r = call(
        &app,
        delete(&format!("/v1/admin/tokens/{id}"), &env.district),
    )
    .await;
    assert_eq!(body_json(r).await["changed"], false);
    let r = call(
        &app,
        delete("/v1/admin/tokens/tok_000000000000", &env.district),
    )
    .await;
    problem(r, StatusCode::NOT_FOUND, "not_found").await;

    // The audit log: who (the district token's id), what, when; newest first.
    let r = call(&app, get("/v1/admin/tokens/audit", Some(&env.district))).await;
    assert_eq!(r.status(), StatusCode::OK);
    let audit = body_json(r).await;
    let entries = audit["entries"].as_array().unwrap();
    let summary: Vec<(String, String)> = entries
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["token"]["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let department_id = department["id"].as_str().unwrap().to_owned();
    let rider_id = rider["id"].as_str().unwrap().to_owned();
    assert_eq!(
        summary,
        vec![
            ("revoke".to_owned(), id.clone()),
            ("issue".to_owned(), rider_id),
            ("issue".to_owned(), department_id),
            ("issue".to_owned(), id.clone()),
        ],
        "one entry per change, the repeated revoke not recorded"
    );
    let district = district_id(&env);
    for e in entries {
        assert_eq!(e["actor"]["via"], "http");
        assert_eq!(e["actor"]["token_id"], district.as_str());
        assert_eq!(e["actor"]["kind"], "district");
        assert!(e["at_ms"].as_u64().unwrap() > 1_700_000_000_000);
    }
    assert!(!serde_json::to_string(&audit).unwrap().contains("gct_"));
    let r = call(
        &app,
        get("/v1/admin/tokens/audit?limit=1", Some(&env.district)),
    )
    .await;
    assert_eq!(body_json(r).await["entries"].as_array().unwrap().len(), 1);
    let r = call(
        &app,
        get("/v1/admin/tokens/audit?limit=0", Some(&env.district)),
    )
    .await;
    problem(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_parameter").await;
}

#[tokio::test]
async fn a_street_office_onboards_and_offboards_only_its_riders() {
    let env = Env::new("admin-street");
    let app = app(&env);
    let street = issue(
        &app,
        &env.district,
        json!({"kind": "street", "scope": STREET, "name": "office"}),
    )
    .await["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let other_street = issue(
        &app,
        &env.district,
        json!({"kind": "street", "scope": OTHER_STREET, "name": "other office"}),
    )
    .await["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let districts_rider = issue(
        &app,
        &env.district,
        json!({"kind": "reporter", "name": "district's rider"}),
    )
    .await;

    let rider = issue(
        &app,
        &street,
        json!({"kind": "reporter", "name": "rider 1"}),
    )
    .await;
    assert_eq!(
        rider["group"], "grid_member",
        "reporters default to grid members"
    );
    let others_rider = issue(
        &app,
        &other_street,
        json!({"kind": "reporter", "name": "rider 2"}),
    )
    .await;

    // Reporters only.
    for kind in [
        json!({"kind": "street", "scope": STREET, "name": "x"}),
        json!({"kind": "district", "name": "x"}),
    ] {
        let r = call(&app, post_json("/v1/admin/tokens", Some(&street), &kind)).await;
        problem(r, StatusCode::FORBIDDEN, "forbidden").await;
    }

    // The listing holds what this street issued, nothing else.
    let r = call(&app, get("/v1/admin/tokens", Some(&street))).await;
    let ids: Vec<String> = body_json(r).await["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, vec![rider["id"].as_str().unwrap().to_owned()]);

    // Another street's rider and the district's rider are not found (not even that they exist).
    for t in [&others_rider, &districts_rider] {
        let path = format!("/v1/admin/tokens/{}", t["id"].as_str().unwrap());
        let r = call(&app, delete(&path, &street)).await;
        problem(r, StatusCode::NOT_FOUND, "not_found").await;
    }
    let path = format!("/v1/admin/tokens/{}", rider["id"].as_str().unwrap());
    let r = call(&app, delete(&path, &street)).await;
    assert_eq!(body_json(r).await["changed"], true);
    let rider_secret = rider["secret"].as_str().unwrap();
    let r = call(
        &app,
        post_json("/v1/clues", Some(rider_secret), &clue_json()),
    )
    .await;
    problem(r, StatusCode::UNAUTHORIZED, "unauthorized").await;

    // Its audit: its own two changes.
    let r = call(&app, get("/v1/admin/tokens/audit", Some(&street))).await;
    let entries = body_json(r).await["entries"].as_array().unwrap().clone();
    assert_eq!(entries.len(), 2);
    assert!(entries.iter().all(|e| e["actor"]["scope"] == STREET));
}

#[tokio::test]
async fn refusals_are_specific_problems() {
    let env = Env::new("admin-refusals");
    let app = app(&env);

    let r = call(&app, get("/v1/admin/tokens", None)).await;
    problem(r, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let r = call(&app, get("/v1/admin/tokens", Some(&env.reporter))).await;
    problem(r, StatusCode::FORBIDDEN, "forbidden").await;
    let r = call(&app, get("/v1/admin/tokens", Some(&env.revoked))).await;
    problem(r, StatusCode::UNAUTHORIZED, "unauthorized").await;

    for (body, status, code) in [
        (
            json!({"kind": "admin", "name": "x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_token_kind",
        ),
        (
            json!({"kind": "street", "name": "x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_scope",
        ),
        (
            json!({"kind": "street", "scope": "31019", "name": "x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_scope",
        ),
        (
            json!({"kind": "department", "scope": "sewers", "name": "x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_scope",
        ),
        (
            json!({"kind": "district", "scope": STREET, "name": "x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_scope",
        ),
        (
            json!({"kind": "reporter", "name": " "}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_token_name",
        ),
        (
            json!({"kind": "reporter", "name": "x".repeat(101)}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_token_name",
        ),
        (
            json!({"kind": "reporter", "group": "pilot", "name": "x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_group",
        ),
        (
            json!({"kind": "street", "scope": STREET, "group": "courier", "name": "x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_group",
        ),
        (
            json!({"kind": "reporter", "name": "x", "secret": "gct_mine"}),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
    ] {
        let r = call(
            &app,
            post_json("/v1/admin/tokens", Some(&env.district), &body),
        )
        .await;
        problem(r, status, code).await;
    }
    let r = call(
        &app,
        Request::post("/v1/admin/tokens")
            .header("authorization", format!("Bearer {}", env.district))
            .header("content-type", "text/plain")
            .body(Body::from("kind=reporter"))
            .unwrap(),
    )
    .await;
    problem(
        r,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    let r = call(
        &app,
        Request::post("/v1/admin/tokens")
            .header("authorization", format!("Bearer {}", env.district))
            .header("content-type", "application/json")
            .body(Body::from(vec![b' '; 9 * 1024]))
            .unwrap(),
    )
    .await;
    problem(r, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;

    // Nothing refused was written, and nothing was audited.
    let file = TokenFile::read(&env.dir.join("tokens.json")).unwrap();
    assert_eq!(file.tokens.len(), 4);
    assert!(file.tokens.iter().all(|t| t.kind != TokenKind::Department));
    let r = call(&app, get("/v1/admin/tokens/audit", Some(&env.district))).await;
    assert_eq!(body_json(r).await["entries"], json!([]));
}
