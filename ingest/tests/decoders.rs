//! Property tests of everything that decodes client input: arbitrary bytes, arbitrary JSON and
//! arbitrary field values never panic and never give a 5xx (valid clues are produced to a mock
//! cluster and answer 202).

mod common;

use axum::body::Body;
use axum::http::Request;
use common::*;
use gridclue_ingest::{api, build_state, open311, ratelimit};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Value};

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,40}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::hash_map(
                prop_oneof![
                    Just("category".to_owned()),
                    Just("lat".to_owned()),
                    Just("lon".to_owned()),
                    Just("photos".to_owned()),
                    Just("clues".to_owned()),
                    ".{0,12}"
                ],
                inner,
                0..8
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Clues whose every field is drawn from valid values, near-misses and junk.
fn arb_clue() -> impl Strategy<Value = Value> {
    let category = prop_oneof![
        Just("manhole_cover".to_owned()),
        Just("food_safety".to_owned()),
        ".{0,45}",
    ];
    let junk_coord = prop_oneof![
        any::<f64>().prop_map(|v| json!(v)),
        Just(json!("31.2")),
        Just(Value::Null),
        Just(json!(90.000001)),
    ];
    let lat = prop_oneof![3 => (31.12f64..31.28).prop_map(|v| json!(v)), 1 => junk_coord.clone()];
    let lon = prop_oneof![3 => (121.43f64..121.57).prop_map(|v| json!(v)), 1 => junk_coord];
    let text = prop_oneof![3 => ".{0,50}", 1 => "字{1990,2010}"];
    let photos = prop::collection::vec(
        prop_oneof![
            Just("https://img.example/a.jpg".to_owned()),
            "[a-f0-9]{64}".prop_map(|h| format!("sha256:{h}")),
            ".{0,30}"
        ],
        0..3,
    );
    let when = prop_oneof![
        3 => (0i64..1_700_000_000i64).prop_map(|s| {
            chrono::DateTime::from_timestamp(s, 0).unwrap().to_rfc3339()
        }),
        1 => (0i64..4_000_000_000i64)
            .prop_map(|s| { chrono::DateTime::from_timestamp(s, 0).unwrap().to_rfc3339() }),
        1 => ".{0,30}",
    ];
    let id = prop_oneof![
        4 => Just(None),
        2 => Just(Some(uuid::Uuid::new_v4().to_string())),
        1 => ".{0,40}".prop_map(Some)
    ];
    (
        category,
        lat,
        lon,
        text,
        photos,
        prop::option::weighted(0.3, when),
        id,
        prop::option::weighted(0.3, prop_oneof!["1[0-9]{10}", ".{0,25}"]),
        prop::option::weighted(0.3, prop_oneof!["[a-z0-9-]{1,40}", ".{0,210}"]),
    )
        .prop_map(|(c, lat, lon, d, p, at, id, phone, key)| {
            let mut v =
                json!({"category": c, "lat": lat, "lon": lon, "description": d, "photos": p});
            if let Some(at) = at {
                v["reported_at"] = json!(at);
            }
            if let Some(id) = id {
                v["clue_id"] = json!(id);
            }
            if let Some(phone) = phone {
                v["phone"] = json!(phone);
            }
            if let Some(key) = key {
                v["idempotency_key"] = json!(key);
            }
            v
        })
}

struct Rig {
    rt: tokio::runtime::Runtime,
    app: axum::Router,
    token: String,
    _env: Env,
}

impl Rig {
    fn new(bootstrap: &str) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let env = Env::new("prop");
        let state = {
            let _guard = rt.enter();
            build_state(&env.config(bootstrap)).unwrap()
        };
        Self {
            rt,
            app: api::app(state),
            token: env.reporter.clone(),
            _env: env,
        }
    }

    fn status(&self, path: &str, content_type: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
        let req = Request::post(path)
            .header("authorization", format!("Bearer {}", self.token))
            .header("content-type", content_type)
            .body(Body::from(body))
            .unwrap();
        self.rt.block_on(async {
            let r = call(&self.app, req).await;
            let status = r.status().as_u16();
            let bytes = axum::body::to_bytes(r.into_body(), 1 << 24).await.unwrap();
            (status, bytes.to_vec())
        })
    }
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

#[test]
fn arbitrary_bytes_never_panic_or_5xx() {
    let cluster = cluster(3);
    let rig = Rig::new(&cluster.bootstrap_servers());
    runner(300)
        .run(&prop::collection::vec(any::<u8>(), 0..600), |bytes| {
            for (path, ct) in [
                ("/v1/clues", "application/json"),
                ("/v1/clues:batch", "application/json"),
                (
                    "/open311/v2/requests.json",
                    "application/x-www-form-urlencoded",
                ),
                (
                    "/open311/v2/requests.xml",
                    "application/x-www-form-urlencoded",
                ),
            ] {
                let (status, _) = rig.status(path, ct, bytes.clone());
                prop_assert!(status < 500, "{path}: {status}");
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn arbitrary_json_never_panics_or_5xx() {
    let cluster = cluster(3);
    let rig = Rig::new(&cluster.bootstrap_servers());
    runner(300)
        .run(&arb_json(), |value| {
            let bytes = serde_json::to_vec(&value).unwrap();
            let (status, _) = rig.status("/v1/clues", "application/json", bytes.clone());
            prop_assert!(status < 500, "single: {status}");
            let (status, _) = rig.status("/v1/clues:batch", "application/json", bytes);
            prop_assert!(status < 500, "batch: {status}");
            let wrapped = serde_json::to_vec(&json!({"clues": [value]})).unwrap();
            let (status, _) = rig.status("/v1/clues:batch", "application/json", wrapped);
            prop_assert!(status < 500, "wrapped batch: {status}");
            Ok(())
        })
        .unwrap();
}

#[test]
fn arbitrary_clue_fields_give_202_or_a_coded_4xx() {
    let cluster = cluster(3);
    let rig = Rig::new(&cluster.bootstrap_servers());
    let accepted = std::cell::Cell::new(0u32);
    runner(400)
        .run(&arb_clue(), |clue| {
            let bytes = serde_json::to_vec(&clue).unwrap();
            let (status, body) = rig.status("/v1/clues", "application/json", bytes);
            prop_assert!(
                matches!(status, 202 | 400 | 409 | 422),
                "{status} for {clue}"
            );
            let body: Value = serde_json::from_slice(&body).unwrap();
            if status == 202 {
                accepted.set(accepted.get() + 1);
                prop_assert!(body["clue_id"].is_string());
            } else {
                prop_assert!(body["code"].as_str().is_some_and(|c| !c.is_empty()));
            }
            let batch = serde_json::to_vec(&json!({"clues": [clue, clue]})).unwrap();
            let (status, body) = rig.status("/v1/clues:batch", "application/json", batch);
            prop_assert_eq!(status, 200);
            let body: Value = serde_json::from_slice(&body).unwrap();
            for r in body["results"].as_array().unwrap() {
                let s = r["status"].as_str().unwrap();
                prop_assert!(matches!(s, "accepted" | "duplicate" | "error"));
                if s == "error" {
                    prop_assert_eq!(r["retryable"].as_bool(), Some(false), "{}", r);
                }
            }
            Ok(())
        })
        .unwrap();
    // The generator reaches the success path too, not only refusals.
    eprintln!("{} of 400 generated clues were accepted", accepted.get());
    assert!(accepted.get() > 0);
}

#[test]
fn open311_filters_and_forms_never_panic() {
    runner(1000)
        .run(&".{0,120}", |query| {
            let pairs: Vec<(String, String)> =
                serde_urlencoded::from_str(&query).unwrap_or_default();
            if let Err(e) = open311::filter_from(&pairs, gridclue_core::wire::now_ms()) {
                prop_assert!(e.status().is_client_error());
            }
            Ok(())
        })
        .unwrap();
    let cluster = cluster(3);
    let rig = Rig::new(&cluster.bootstrap_servers());
    let field = prop_oneof![
        Just("api_key"),
        Just("service_code"),
        Just("lat"),
        Just("long"),
        Just("description"),
        Just("media_url"),
        Just("phone"),
    ];
    runner(200)
        .run(&prop::collection::vec((field, ".{0,30}"), 0..8), |pairs| {
            let body = serde_urlencoded::to_string(&pairs).unwrap();
            let (status, _) = rig.status(
                "/open311/v2/requests.json",
                "application/x-www-form-urlencoded",
                body.into_bytes(),
            );
            prop_assert!(status < 500);
            Ok(())
        })
        .unwrap();
}

#[test]
fn address_parsing_never_panics() {
    runner(1000)
        .run(&(".{0,40}", ".{0,80}"), |(net, xff)| {
            let _ = net.parse::<ratelimit::IpNet>();
            let r = ratelimit::ClientIpResolver::new(&["127.0.0.1".into(), "10.0.0.0/8".into()])
                .unwrap();
            let mut h = axum::http::HeaderMap::new();
            if let Ok(v) = xff.parse() {
                h.insert("x-forwarded-for", v);
            }
            prop_assert!(r.resolve(Some("127.0.0.1".parse().unwrap()), &h).is_some());
            Ok(())
        })
        .unwrap();
}
