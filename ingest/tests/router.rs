//! Router tests (`oneshot`): every error path of the write endpoints answers its status and
//! problem code as `application/problem+json`; successful paths land on the mock cluster.

mod common;

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use common::*;
use gridclue_core::wire::{Channel, Command};
use gridclue_core::{ClueId, ReporterId};
use gridclue_ingest::{api, build_state, IngestConfig};
use serde_json::json;

/// A router whose producer points at a port nobody listens on: for paths that never produce,
/// and for the broker-unavailable path.
fn dead_broker_app(env: &Env, tweak: impl FnOnce(&mut IngestConfig)) -> axum::Router {
    let mut config = env.config("127.0.0.1:9");
    config.produce_timeout_ms = 300;
    tweak(&mut config);
    api::app(build_state(&config).unwrap())
}

async fn expect_problem(r: axum::http::Response<Body>, status: StatusCode, code: &str) {
    assert_eq!(r.status(), status, "expected {code}");
    assert_eq!(
        r.headers()["content-type"],
        "application/problem+json",
        "{code} must be problem+json"
    );
    let body = body_json(r).await;
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status.as_u16());
    assert!(body["type"].as_str().unwrap().ends_with(code));
    assert!(!body["detail"].as_str().unwrap().is_empty());
}

#[tokio::test]
async fn auth_errors() {
    let env = Env::new("auth");
    let app = dead_broker_app(&env, |_| {});
    for path in ["/v1/clues", "/v1/clues:batch"] {
        let body = if path.ends_with("batch") {
            json!({"clues": [clue_json()]})
        } else {
            clue_json()
        };
        let r = call(&app, post_json(path, None, &body)).await;
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        expect_problem(r, StatusCode::UNAUTHORIZED, "unauthorized").await;
        let r = call(&app, post_json(path, Some("gct_nope"), &body)).await;
        expect_problem(r, StatusCode::UNAUTHORIZED, "unauthorized").await;
        let r = call(&app, post_json(path, Some(&env.revoked), &body)).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(body_json(r).await["detail"]
            .as_str()
            .unwrap()
            .contains("revoked"));
        let r = call(&app, post_json(path, Some(&env.district), &body)).await;
        expect_problem(r, StatusCode::FORBIDDEN, "forbidden").await;
    }
    let r = call(
        &app,
        Request::get("/v1/clues/5b0e2f6e-0000-4000-8000-000000000000")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    expect_problem(r, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

#[tokio::test]
async fn media_type_size_and_json_errors() {
    let env = Env::new("shape");
    let app = dead_broker_app(&env, |_| {});
    let auth = format!("Bearer {}", env.reporter);
    for (path, limit) in [
        ("/v1/clues", 64 * 1024),
        ("/v1/clues:batch", 2 * 1024 * 1024),
    ] {
        // Wrong or missing content type.
        let r = call(
            &app,
            Request::post(path)
                .header("authorization", &auth)
                .header("content-type", "text/plain")
                .body(Body::from("{}"))
                .unwrap(),
        )
        .await;
        expect_problem(
            r,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        )
        .await;
        let r = call(
            &app,
            Request::post(path)
                .header("authorization", &auth)
                .body(Body::from("{}"))
                .unwrap(),
        )
        .await;
        expect_problem(
            r,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        )
        .await;
        // Too large, declared.
        let big = vec![b' '; limit + 1];
        let r = call(
            &app,
            Request::post(path)
                .header("authorization", &auth)
                .header("content-type", "application/json")
                .header("content-length", big.len())
                .body(Body::from(big.clone()))
                .unwrap(),
        )
        .await;
        expect_problem(r, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
        // Too large, streamed without a length.
        let stream = futures::stream::iter(
            big.chunks(8192)
                .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
                .collect::<Vec<_>>(),
        );
        let r = call(
            &app,
            Request::post(path)
                .header("authorization", &auth)
                .header("content-type", "application/json")
                .body(Body::from_stream(stream))
                .unwrap(),
        )
        .await;
        expect_problem(r, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
        // Not JSON.
        let r = call(
            &app,
            Request::post(path)
                .header("authorization", &auth)
                .header("content-type", "application/json; charset=utf-8")
                .body(Body::from("{not json"))
                .unwrap(),
        )
        .await;
        expect_problem(r, StatusCode::BAD_REQUEST, "invalid_json").await;
    }
    // A clue of the wrong shape.
    let r = call(
        &app,
        post_json("/v1/clues", Some(&env.reporter), &json!({"lat": 1})),
    )
    .await;
    expect_problem(r, StatusCode::BAD_REQUEST, "invalid_json").await;
}

#[tokio::test]
async fn every_validation_rule_has_its_code() {
    let env = Env::new("rules");
    let app = dead_broker_app(&env, |_| {});
    let cases: Vec<(serde_json::Value, &str)> = vec![
        (json!({"category": "teleporter"}), "unknown_category"),
        (json!({"lat": 91.0}), "invalid_location"),
        (json!({"lon": -181.0}), "invalid_location"),
        (json!({"lat": 39.9, "lon": 116.4}), "outside_service_area"),
        (
            json!({"description": "字".repeat(2001)}),
            "description_too_long",
        ),
        (
            json!({"photos": vec!["https://img.example/a.jpg"; 7]}),
            "too_many_photos",
        ),
        (
            json!({"photos": ["javascript:alert(1)"]}),
            "invalid_photo_reference",
        ),
        (
            json!({"reported_at": "last tuesday"}),
            "invalid_reported_at",
        ),
        (
            json!({"reported_at": "2999-01-01T00:00:00Z"}),
            "reported_at_in_future",
        ),
        (json!({"phone": "12"}), "invalid_phone"),
        (json!({"clue_id": "not-a-uuid"}), "invalid_clue_id"),
        (json!({"idempotency_key": ""}), "invalid_idempotency_key"),
        (
            json!({"idempotency_key": "k".repeat(201)}),
            "invalid_idempotency_key",
        ),
    ];
    for (patch, code) in cases {
        let mut body = clue_json();
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        let r = call(&app, post_json("/v1/clues", Some(&env.reporter), &body)).await;
        expect_problem(r, StatusCode::UNPROCESSABLE_ENTITY, code).await;
    }
    // A header key with a control character.
    let r = call(
        &app,
        Request::post("/v1/clues")
            .header("authorization", format!("Bearer {}", env.reporter))
            .header("content-type", "application/json")
            .header("idempotency-key", "a\tb")
            .body(Body::from(clue_json().to_string()))
            .unwrap(),
    )
    .await;
    expect_problem(
        r,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_idempotency_key",
    )
    .await;
}

#[tokio::test]
async fn broker_unavailable_is_a_bounded_503_with_retry_after() {
    let env = Env::new("dead");
    let app = dead_broker_app(&env, |_| {});
    let started = std::time::Instant::now();
    let r = call(
        &app,
        post_json("/v1/clues", Some(&env.reporter), &clue_json()),
    )
    .await;
    // Bounded by the configured produce timeout, not librdkafka's default (300 s); the margin
    // is wide so a loaded machine cannot fail it.
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
    assert_eq!(r.headers()["retry-after"], "2");
    expect_problem(r, StatusCode::SERVICE_UNAVAILABLE, "broker_unavailable").await;
    let batch = json!({"clues": [clue_json(), clue_json()]});
    let r = call(
        &app,
        post_json("/v1/clues:batch", Some(&env.reporter), &batch),
    )
    .await;
    assert!(r.headers().contains_key("retry-after"));
    expect_problem(r, StatusCode::SERVICE_UNAVAILABLE, "broker_unavailable").await;
}

fn from_ip(mut req: Request<Body>, ip: &str) -> Request<Body> {
    let addr: SocketAddr = format!("{ip}:40000").parse().unwrap();
    req.extensions_mut().insert(ConnectInfo(addr));
    req
}

#[tokio::test]
async fn rate_limits_per_token_and_per_address() {
    let env = Env::new("limits");
    // Per token: a burst of 3, then 429 with Retry-After; another token is unaffected.
    let app = dead_broker_app(&env, |c| {
        c.rate_limit_token_per_sec = 0.5;
        c.rate_limit_token_burst = 3;
    });
    let bad = json!({"category": "teleporter", "lat": INSIDE.0, "lon": INSIDE.1});
    for _ in 0..3 {
        let r = call(&app, post_json("/v1/clues", Some(&env.reporter), &bad)).await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    }
    let r = call(&app, post_json("/v1/clues", Some(&env.reporter), &bad)).await;
    assert_eq!(r.headers()["retry-after"], "2");
    expect_problem(r, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    let r = call(
        &app,
        post_json(
            "/v1/clues:batch",
            Some(&env.reporter),
            &json!({"clues": [bad]}),
        ),
    )
    .await;
    expect_problem(r, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    let r = call(
        &app,
        post_json("/v1/clues", Some(&env.other_reporter), &bad),
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);

    // Per address: counted before authentication, so guessing tokens is limited too.
    let app = dead_broker_app(&env, |c| {
        c.rate_limit_ip_per_sec = 1.0;
        c.rate_limit_ip_burst = 2;
        c.trusted_proxies = vec!["10.0.0.1".into()];
    });
    for _ in 0..2 {
        let r = call(
            &app,
            from_ip(
                post_json("/v1/clues", Some("gct_guess"), &bad),
                "203.0.113.5",
            ),
        )
        .await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let r = call(
        &app,
        from_ip(
            post_json("/v1/clues", Some(&env.reporter), &bad),
            "203.0.113.5",
        ),
    )
    .await;
    assert_eq!(r.headers()["retry-after"], "1");
    expect_problem(r, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    // An untrusted peer cannot dodge the limit with X-Forwarded-For.
    let mut req = from_ip(
        post_json("/v1/clues", Some(&env.reporter), &bad),
        "203.0.113.5",
    );
    req.headers_mut()
        .insert("x-forwarded-for", "198.51.100.1".parse().unwrap());
    assert_eq!(
        call(&app, req).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    // Behind the trusted proxy, each forwarded client has its own bucket.
    for client in ["198.51.100.1", "198.51.100.2"] {
        for _ in 0..2 {
            let mut req = from_ip(
                post_json("/v1/clues", Some(&env.reporter), &bad),
                "10.0.0.1",
            );
            req.headers_mut()
                .insert("x-forwarded-for", client.parse().unwrap());
            assert_eq!(
                call(&app, req).await.status(),
                StatusCode::UNPROCESSABLE_ENTITY
            );
        }
        let mut req = from_ip(
            post_json("/v1/clues", Some(&env.reporter), &bad),
            "10.0.0.1",
        );
        req.headers_mut()
            .insert("x-forwarded-for", client.parse().unwrap());
        assert_eq!(
            call(&app, req).await.status(),
            StatusCode::TOO_MANY_REQUESTS
        );
    }
    // The metric counts refusals by reason.
    let r = call(&app, Request::get("/metrics").body(Body::empty()).unwrap()).await;
    let text = body_text(r).await;
    assert!(
        text.contains(r#"gridclue_ingest_rejected_total{reason="rate_limited"}"#),
        "{text}"
    );
}

#[tokio::test]
async fn unknown_routes_methods_and_reads_without_clickhouse() {
    let env = Env::new("routes");
    let app = dead_broker_app(&env, |_| {});
    let r = call(
        &app,
        Request::get("/v2/nothing").body(Body::empty()).unwrap(),
    )
    .await;
    expect_problem(r, StatusCode::NOT_FOUND, "no_route").await;
    // A path segment that is not UTF-8 once decoded is still a problem+json answer.
    let r = call(
        &app,
        Request::get("/v1/clues/%FF%FE")
            .header("authorization", format!("Bearer {}", env.reporter))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    expect_problem(r, StatusCode::NOT_FOUND, "not_found").await;
    let r = call(
        &app,
        Request::get("/open311/v2/requests/%FF.json")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = call(
        &app,
        Request::delete("/v1/clues").body(Body::empty()).unwrap(),
    )
    .await;
    expect_problem(r, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
    // Reads need ClickHouse; without it they are a 503 problem, after authentication.
    let r = call(
        &app,
        Request::get(format!("/v1/clues/{}", ClueId::new_random()))
            .header("authorization", format!("Bearer {}", env.reporter))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert!(r.headers().contains_key("retry-after"));
    expect_problem(r, StatusCode::SERVICE_UNAVAILABLE, "reads_unavailable").await;
    // Open311 reads answer in Open311's error format.
    let r = call(
        &app,
        Request::get("/open311/v2/requests.json")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = body_json(r).await;
    assert_eq!(body[0]["code"], 503);
    assert!(body[0]["description"]
        .as_str()
        .unwrap()
        .starts_with("reads_unavailable"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_clue_is_produced_once_and_retries_answer_the_same() {
    let cluster = cluster(3);
    let bootstrap = cluster.bootstrap_servers();
    let env = Env::new("single");
    let app = api::app(build_state(&env.config(&bootstrap)).unwrap());
    let with_key = |key: &str, body: &serde_json::Value| {
        let mut r = post_json("/v1/clues", Some(&env.reporter), body);
        r.headers_mut()
            .insert("idempotency-key", key.parse().unwrap());
        r
    };
    let mut body = clue_json();
    body["phone"] = json!("138-0013-8000");
    body["photos"] = json!(["https://img.example/1.jpg"]);
    let r = call(&app, with_key("k-1", &body)).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let first = body_json(r).await;
    let expected =
        ClueId::from_idempotency_key(&ReporterId::parse(&env.reporter_id).unwrap(), "k-1");
    assert_eq!(first["clue_id"], expected.to_string());
    // The retry answers the same body and sends nothing again.
    let r = call(&app, with_key("k-1", &body)).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(body_json(r).await, first);
    // The same key for a different clue is refused.
    let mut changed = body.clone();
    changed["category"] = json!("garbage_pile");
    let r = call(&app, with_key("k-1", &changed)).await;
    expect_problem(r, StatusCode::CONFLICT, "idempotency_key_reused").await;
    // A client-chosen clue id works the same way; no key at all gives a fresh id.
    let own = ClueId::new_random();
    let mut b = clue_json();
    b["clue_id"] = json!(own.to_string());
    let r = call(&app, post_json("/v1/clues", Some(&env.reporter), &b)).await;
    assert_eq!(body_json(r).await["clue_id"], own.to_string());
    let r = call(
        &app,
        post_json("/v1/clues", Some(&env.reporter), &clue_json()),
    )
    .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);

    let records = tokio::task::spawn_blocking(move || read_topic(&bootstrap, 3))
        .await
        .unwrap();
    assert_eq!(records.len(), 3, "{records:?}");
    let (key, cmd) = records
        .iter()
        .find(|(_, c)| c.clue_id == expected)
        .expect("the keyed clue is on the topic");
    assert_eq!(key, &expected.to_string());
    assert_eq!(cmd.actor.id, env.reporter_id);
    let Command::Report(report) = &cmd.command else {
        panic!("not a report")
    };
    assert_eq!(report.channel, Channel::Api);
    assert_eq!(report.photos, ["https://img.example/1.jpg"]);
    let hash = report.phone_hash.as_deref().unwrap();
    assert_eq!(hash.len(), 64);
    let raw = serde_json::to_string(&cmd).unwrap();
    assert!(!raw.contains("13800138000") && !raw.contains("138-0013-8000"));
    assert!(records.iter().any(|(_, c)| c.clue_id == own));
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_answers_per_item_and_produces_each_clue_once() {
    let cluster = cluster(3);
    let bootstrap = cluster.bootstrap_servers();
    let env = Env::new("batch");
    let app = api::app(build_state(&env.config(&bootstrap)).unwrap());
    let mut items = Vec::new();
    for i in 0..5 {
        let mut c = clue_json();
        c["idempotency_key"] = json!(format!("queue-{i}"));
        items.push(c);
    }
    items.push(items[1].clone()); // 5: repeats item 1
    items.push(json!({"category": "teleporter", "lat": INSIDE.0, "lon": INSIDE.1})); // 6
    items.push(json!("not an object")); // 7
    let mut conflicting = items[2].clone();
    conflicting["description"] = json!("something else"); // 8: same key, other content
    items.push(conflicting);
    let r = call(
        &app,
        post_json(
            "/v1/clues:batch",
            Some(&env.reporter),
            &json!({"clues": items}),
        ),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let body = body_json(r).await;
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 9);
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["index"], i);
    }
    for r in &results[0..5] {
        assert_eq!(r["status"], "accepted", "{r}");
    }
    assert_eq!(results[5]["status"], "duplicate");
    assert_eq!(results[5]["duplicate_of_index"], 1);
    assert_eq!(results[5]["clue_id"], results[1]["clue_id"]);
    assert_eq!(results[6]["code"], "unknown_category");
    assert_eq!(results[6]["retryable"], false);
    assert_eq!(results[7]["code"], "invalid_json");
    assert_eq!(results[8]["code"], "idempotency_key_reused");
    assert_eq!(
        (
            body["accepted"].as_u64(),
            body["duplicates"].as_u64(),
            body["errors"].as_u64()
        ),
        (Some(5), Some(1), Some(3))
    );

    // Sending the same queue again (a phone that never saw the answer): all duplicates.
    let again = json!({"clues": items[0..5]});
    let r = call(
        &app,
        post_json("/v1/clues:batch", Some(&env.reporter), &again),
    )
    .await;
    let body = body_json(r).await;
    assert_eq!(body["duplicates"], 5, "{body}");

    // Limits of the batch as a whole.
    let r = call(
        &app,
        post_json(
            "/v1/clues:batch",
            Some(&env.reporter),
            &json!({"clues": []}),
        ),
    )
    .await;
    expect_problem(r, StatusCode::UNPROCESSABLE_ENTITY, "empty_batch").await;
    let many: Vec<_> = (0..501).map(|_| json!({})).collect();
    let r = call(
        &app,
        post_json(
            "/v1/clues:batch",
            Some(&env.reporter),
            &json!({"clues": many}),
        ),
    )
    .await;
    expect_problem(r, StatusCode::UNPROCESSABLE_ENTITY, "too_many_items").await;
    let r = call(
        &app,
        post_json(
            "/v1/clues:batch",
            Some(&env.reporter),
            &json!({"items": []}),
        ),
    )
    .await;
    expect_problem(r, StatusCode::BAD_REQUEST, "invalid_json").await;

    // Metrics by item result.
    let r = call(&app, Request::get("/metrics").body(Body::empty()).unwrap()).await;
    let text = body_text(r).await;
    assert!(
        text.contains(r#"gridclue_ingest_batch_items_total{result="accepted"} 5"#),
        "{text}"
    );
    assert!(text.contains(r#"gridclue_ingest_batch_items_total{result="duplicate"} 6"#));
    assert!(
        text.contains(r#"gridclue_ingest_requests_total{route="/v1/clues:batch",status="200"} 2"#)
    );
    assert!(text.contains("gridclue_ingest_produce_duration_seconds_bucket"));
    assert!(text.contains("gridclue_ingest_in_flight_requests"));

    let records = tokio::task::spawn_blocking(move || read_topic(&bootstrap, 5))
        .await
        .unwrap();
    assert_eq!(records.len(), 5);
    let mut ids: Vec<_> = records.iter().map(|(_, c)| c.clue_id.to_string()).collect();
    ids.sort();
    let mut expected: Vec<_> = results[0..5]
        .iter()
        .map(|r| r["clue_id"].as_str().unwrap().to_owned())
        .collect();
    expected.sort();
    assert_eq!(ids, expected);
    drop(cluster);
}

#[tokio::test]
async fn the_reporting_page_and_its_assets_are_served() {
    let env = Env::new("page");
    let app = dead_broker_app(&env, |_| {});
    for (path, ty, needle) in [
        ("/", "text/html", "/report/app.js"),
        ("/report", "text/html", "/report/app.css"),
        ("/report/app.js", "text/javascript", "clues:batch"),
        ("/report/app.css", "text/css", ".cat"),
        ("/report-sw.js", "text/javascript", "caches.open"),
    ] {
        let r = call(&app, Request::get(path).body(Body::empty()).unwrap()).await;
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with(ty));
        assert!(r.headers().contains_key("content-security-policy"));
        let text = body_text(r).await;
        assert!(text.contains(needle), "{path} lacks {needle}");
        assert!(
            !text.contains("http://") && !text.contains("https://cdn"),
            "{path} must not load anything from outside"
        );
    }
    let r = call(
        &app,
        Request::get("/v1/service-area")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    let area = body_json(r).await;
    assert!(area["bbox"]["min_lat"].as_f64().unwrap() < INSIDE.0);
    assert!(area["bbox"]["max_lon"].as_f64().unwrap() > INSIDE.1);
}

#[tokio::test]
async fn the_grid_map_is_served_with_its_version_as_etag() {
    let env = Env::new("map");
    let app = dead_broker_app(&env, |_| {});
    let r = call(
        &app,
        Request::get("/v1/map/grids.geojson")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "application/geo+json");
    assert_eq!(r.headers()["cache-control"], "no-cache");
    let etag = r.headers()["etag"].clone();
    let map = body_json(r).await;
    assert_eq!(
        etag.to_str().unwrap(),
        format!("\"{}\"", map["map_version"].as_str().unwrap())
    );
    let grids = map["features"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["properties"]["kind"] == "grid")
        .count();
    assert_eq!(grids, 1000, "the shipped district's grids");
    let r = call(
        &app,
        Request::get("/v1/map/grids.geojson")
            .header("if-none-match", etag.clone())
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    assert!(body_text(r).await.is_empty());
}

/// The "my reports" routes need a reporter token, and without a dashboard-api configured they
/// say so (503, retryable) instead of failing obscurely.
#[tokio::test]
async fn my_reports_need_a_reporter_and_a_configured_dashboard() {
    let env = Env::new("my");
    let app = dead_broker_app(&env, |_| {});
    for path in ["/v1/my/clues", "/v1/my/points"] {
        let get = |token: Option<&str>| {
            let mut b = Request::get(path);
            if let Some(t) = token {
                b = b.header("authorization", format!("Bearer {t}"));
            }
            b.body(Body::empty()).unwrap()
        };
        let r = call(&app, get(None)).await;
        expect_problem(r, StatusCode::UNAUTHORIZED, "unauthorized").await;
        let r = call(&app, get(Some(&env.district))).await;
        expect_problem(r, StatusCode::FORBIDDEN, "forbidden").await;
        let r = call(&app, get(Some(&env.reporter))).await;
        assert!(r.headers().contains_key("retry-after"));
        expect_problem(r, StatusCode::SERVICE_UNAVAILABLE, "reads_unavailable").await;
    }
}
