//! The read side against a real ClickHouse holding the sink's schema (`sink/migrations`): the
//! reporter's view of their own clues, and Open311 GeoReport v2 driven the way a client does it
//! (form-encoded POST, JSON and XML reads). The test plays the sink: it writes fact and state
//! rows as the sink's projection would.
//!
//! ClickHouse: `GRIDCLUE_TEST_CLICKHOUSE_URL` (default http://127.0.0.1:18123, the server
//! `make test` starts). When nothing answers there, the test starts it with
//! `scripts/clickhouse.sh install && start`, and fails with a clear message if that fails.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use gridclue_core::wire::{Channel, Command};
use gridclue_core::ClueId;
use gridclue_ingest::IngestConfig;
use serde_json::{json, Value};

const DAY_MS: u64 = 24 * 3600 * 1000;
/// GET `url` and read the body as text.
async fn get_text(http: &reqwest::Client, url: String) -> String {
    http.get(url).send().await.unwrap().text().await.unwrap()
}

/// GET `url` and read the body as JSON.
async fn get_json(http: &reqwest::Client, url: String) -> Value {
    http.get(url).send().await.unwrap().json().await.unwrap()
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

async fn clickhouse() -> String {
    let url = std::env::var("GRIDCLUE_TEST_CLICKHOUSE_URL")
        .unwrap_or_else(|_| "http://127.0.0.1:18123".into());
    let http = reqwest::Client::new();
    let ping = |http: reqwest::Client, url: String| async move {
        matches!(http.get(format!("{url}/ping")).send().await, Ok(r) if r.status().is_success())
    };
    if ping(http.clone(), url.clone()).await {
        return url;
    }
    let script = repo().join("scripts/clickhouse.sh");
    for step in ["install", "start"] {
        let out = tokio::process::Command::new("bash")
            .arg(&script)
            .arg(step)
            .output()
            .await
            .expect("running scripts/clickhouse.sh");
        assert!(
            out.status.success(),
            "ClickHouse is not answering at {url} and `scripts/clickhouse.sh {step}` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(
        ping(http, url.clone()).await,
        "ClickHouse is not answering at {url} even after scripts/clickhouse.sh start"
    );
    url
}

async fn sql(http: &reqwest::Client, url: &str, db: Option<&str>, statement: &str) {
    let mut req = http.post(url).body(statement.to_owned());
    if let Some(db) = db {
        req = req.query(&[("database", db)]);
    }
    let r = req.send().await.unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    assert!(status.is_success(), "{statement}\n→ {text}");
}

/// A fresh database with the sink's migrations applied, as the sink applies them.
async fn database(url: &str) -> String {
    let http = reqwest::Client::new();
    let db = format!(
        "gridclue_t_ingest_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    sql(&http, url, None, &format!("CREATE DATABASE {db}")).await;
    let mut files: Vec<_> = std::fs::read_dir(repo().join("sink/migrations"))
        .expect("sink/migrations exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for statement in text.split(";\n").map(str::trim) {
            let meaningful = statement
                .lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with("--"));
            if meaningful {
                sql(&http, url, Some(&db), statement).await;
            }
        }
    }
    db
}

async fn drop_database(url: &str, db: &str) {
    sql(
        &reqwest::Client::new(),
        url,
        None,
        &format!("DROP DATABASE IF EXISTS {db}"),
    )
    .await;
}

async fn insert(url: &str, db: &str, table: &str, rows: &[Value]) {
    let body: String = rows.iter().map(|r| format!("{r}\n")).collect();
    sql(
        &reqwest::Client::new(),
        url,
        Some(db),
        &format!("INSERT INTO {table} FORMAT JSONEachRow\n{body}"),
    )
    .await;
}

struct Fixture {
    a: ClueId,
    b: ClueId,
    old: ClueId,
    now: u64,
}

/// Three clues as the sink would have projected them: A (rider one, dispatched, with an older
/// state row that FINAL must hide), B (rider two, closed), OLD (rider one, rejected 120 days ago).
async fn seed(url: &str, db: &str, env: &Env) -> Fixture {
    let now = gridclue_core::wire::now_ms();
    let (a, b, old) = (
        ClueId::new_random(),
        ClueId::new_random(),
        ClueId::new_random(),
    );
    let clue = |id: ClueId,
                version: u32,
                status: &str,
                reporter: &str,
                category: &str,
                dept: &str,
                at: u64| {
        json!({
            "clue_id": id.to_string(), "version": version, "status": status,
            "placement": "inside", "inside": 1, "grid_code": "310199001001001",
            "community_code": "310199001001", "street_code": "310199001",
            "lat": INSIDE.0, "lon": INSIDE.1, "category": category, "department": dept,
            "urgency": "urgent", "reporter_id": reporter, "reporter_group": "food_delivery",
            "channel": "api", "is_case": 1, "reported_at_ms": at,
            "deadline_ms": at + 2 * 3600 * 1000, "updated_at_ms": at + u64::from(version) * 60_000,
        })
    };
    let fact = |id: ClueId, seq: u32, kind: &str, status: &str, detail: &str, at: u64| {
        json!({
            "clue_id": id.to_string(), "seq": seq, "command_id": ClueId::new_random().to_string(),
            "fact_type": kind, "status": status, "occurred_at_ms": at, "processed_at_ms": at + 5,
            "placement": "inside", "inside": 1, "grid_code": "310199001001001",
            "street_code": "310199001", "category": "manhole_cover", "department": "water_affairs",
            "detail": detail, "deadline_ms": if seq == 0 { at + 2 * 3600 * 1000 } else { 0 },
            "kafka_topic": "clues.events", "kafka_partition": 0, "kafka_offset": seq,
        })
    };
    let t = now - 3_600_000;
    insert(
        url,
        db,
        "clues",
        &[
            clue(
                a,
                0,
                "reported",
                &env.reporter_id,
                "manhole_cover",
                "water_affairs",
                t,
            ),
            clue(
                a,
                2,
                "dispatched",
                &env.reporter_id,
                "manhole_cover",
                "water_affairs",
                t,
            ),
            clue(
                b,
                4,
                "closed",
                &env.other_reporter_id,
                "garbage_pile",
                "greening_city_appearance",
                t - 60_000,
            ),
            clue(
                old,
                1,
                "rejected",
                &env.reporter_id,
                "manhole_cover",
                "water_affairs",
                now - 120 * DAY_MS,
            ),
        ],
    )
    .await;
    insert(
        url,
        db,
        "clue_events",
        &[
            {
                let mut report = fact(a, 0, "reported", "reported", "井盖缺失 <危险>", t);
                report["photos"] =
                    json!(["https://img.example/a1.jpg", "https://img.example/a2.jpg"]);
                report
            },
            fact(a, 1, "accepted", "accepted", "", t + 60_000),
            fact(
                a,
                2,
                "dispatched",
                "dispatched",
                "water_affairs",
                t + 120_000,
            ),
            fact(b, 0, "reported", "reported", "垃圾堆物", t - 60_000),
            fact(
                old,
                0,
                "reported",
                "reported",
                "old one",
                now - 120 * DAY_MS,
            ),
            fact(
                old,
                1,
                "rejected",
                "rejected",
                "not a problem",
                now - 120 * DAY_MS + 1000,
            ),
        ],
    )
    .await;
    Fixture { a, b, old, now }
}

fn config(env: &Env, bootstrap: &str, ch: &str, db: &str) -> IngestConfig {
    IngestConfig {
        clickhouse_url: ch.to_owned(),
        clickhouse_database: db.to_owned(),
        ..env.config(bootstrap)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reporters_see_their_own_clues_only() {
    let ch = clickhouse().await;
    let db = database(&ch).await;
    let env = Env::new("view");
    let f = seed(&ch, &db, &env).await;
    let server = Server::start(config(&env, "127.0.0.1:9", &ch, &db)).await;
    let http = reqwest::Client::new();
    let get = |id: String, token: String| {
        let (http, url) = (http.clone(), server.url.clone());
        async move {
            let r = http
                .get(format!("{url}/v1/clues/{id}"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
            (status, ct, r.json::<Value>().await.unwrap())
        }
    };
    let (status, _, view) = get(f.a.to_string(), env.reporter.clone()).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["clue_id"], f.a.to_string());
    assert_eq!(
        view["status"], "dispatched",
        "FINAL hides the older state row"
    );
    assert_eq!(view["open"], true);
    assert_eq!(view["category_name_zh"], "井盖破损/缺失");
    assert_eq!(view["address"], "洪泉街道 兰城社区 310199001001001");
    assert_eq!(
        [
            &view["grid_code"],
            &view["community_code"],
            &view["street_code"],
            &view["category"],
            &view["department"]
        ],
        [
            "310199001001001",
            "310199001001",
            "310199001",
            "manhole_cover",
            "water_affairs"
        ]
    );
    assert!(view["deadline"].as_str().unwrap().ends_with("+08:00"));
    let history: Vec<_> = view["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["seq"].as_u64().unwrap(),
                h["type"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        history,
        [
            (0, "reported".into()),
            (1, "accepted".into()),
            (2, "dispatched".into())
        ]
    );
    assert_eq!(view["history"][0]["detail"], "井盖缺失 <危险>");
    assert_eq!(
        view["photos"],
        json!(["https://img.example/a1.jpg", "https://img.example/a2.jpg"])
    );

    // Someone else's clue, an unknown id and a malformed id all look the same: 404.
    for (id, token) in [
        (f.b.to_string(), env.reporter.clone()),
        (f.a.to_string(), env.other_reporter.clone()),
        (ClueId::new_random().to_string(), env.reporter.clone()),
        ("not-a-uuid".to_owned(), env.reporter.clone()),
    ] {
        let (status, ct, body) = get(id, token).await;
        assert_eq!(
            (status, ct.as_str()),
            (404, "application/problem+json"),
            "{body}"
        );
        assert_eq!(body["code"], "not_found");
    }
    let (status, _, view) = get(f.b.to_string(), env.other_reporter.clone()).await;
    assert_eq!((status, view["status"].as_str()), (200, Some("closed")));
    let (status, _, view) = get(f.old.to_string(), env.reporter.clone()).await;
    assert_eq!((status, view["open"].as_bool()), (200, Some(false)));
    assert_eq!(view["history"][1]["detail"], "not a problem");

    // A row whose codes are malformed (written behind the sink's back) is still shown: its
    // malformed codes read as none, shown as "" like an absent code; the good ones stay.
    let bad = ClueId::new_random();
    insert(
        &ch,
        &db,
        "clues",
        &[json!({
            "clue_id": bad.to_string(), "version": 0, "status": "reported",
            "placement": "inside", "inside": 1, "grid_code": "310199001001001",
            "community_code": "3101990010", "street_code": "31019900X",
            "lat": INSIDE.0, "lon": INSIDE.1, "category": "manhole_cover",
            "department": "Water Affairs", "urgency": "urgent", "reporter_id": env.reporter_id,
            "channel": "api", "is_case": 1, "reported_at_ms": f.now - 60_000,
            "updated_at_ms": f.now - 60_000,
        })],
    )
    .await;
    let (status, _, view) = get(bad.to_string(), env.reporter.clone()).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(
        [
            &view["grid_code"],
            &view["community_code"],
            &view["street_code"],
            &view["category"],
            &view["department"]
        ],
        ["310199001001001", "", "", "manhole_cover", ""]
    );
    server.stop().await.unwrap();

    // ClickHouse configured but unreachable: a bounded 503.
    let server = Server::start(config(&env, "127.0.0.1:9", "http://127.0.0.1:9", &db)).await;
    let r = http
        .get(format!("{}/v1/clues/{}", server.url, f.a))
        .bearer_auth(&env.reporter)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert_eq!(
        r.json::<Value>().await.unwrap()["code"],
        "reads_unavailable"
    );
    server.stop().await.unwrap();
    drop_database(&ch, &db).await;
}

/// Minimal XML reading for the assertions: the text of every `<tag>` element, in order.
fn xml_texts(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    xml.split(&open)
        .skip(1)
        .filter_map(|s| s.split(&close).next())
        .map(|s| {
            s.replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&amp;", "&")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open311_client_round_trip() {
    let ch = clickhouse().await;
    let db = database(&ch).await;
    let env = Env::new("open311");
    let f = seed(&ch, &db, &env).await;
    let cluster = cluster(3);
    let bootstrap = cluster.bootstrap_servers();
    let server = Server::start(config(&env, &bootstrap, &ch, &db)).await;
    let base = format!("{}/open311/v2", server.url);
    let http = reqwest::Client::new();

    // Service discovery, JSON and XML.
    let services: Value = get_json(&http, format!("{base}/services.json")).await;
    let list = services.as_array().unwrap();
    assert_eq!(list.len(), 20);
    let manhole = list
        .iter()
        .find(|s| s["service_code"] == "manhole_cover")
        .unwrap();
    assert_eq!(manhole["service_name"], "井盖破损/缺失");
    assert_eq!(manhole["metadata"], false);
    assert_eq!(manhole["type"], "realtime");
    let en: Value = get_json(&http, format!("{base}/services.json?lang=en")).await;
    assert!(en[0]["service_name"].as_str().unwrap().is_ascii());
    let r = http
        .get(format!("{base}/services.xml"))
        .send()
        .await
        .unwrap();
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/xml"));
    let xml = r.text().await.unwrap();
    assert!(xml.starts_with("<?xml") && xml.contains("<services><service>"));
    assert!(xml_texts(&xml, "service_code").contains(&"manhole_cover".to_owned()));
    let def: Value = get_json(&http, format!("{base}/services/manhole_cover.json")).await;
    assert_eq!(def["service_code"], "manhole_cover");
    let xml = get_text(&http, format!("{base}/services/manhole_cover.xml")).await;
    assert!(xml.contains("<service_definition><service_code>manhole_cover</service_code>"));
    let r = http
        .get(format!("{base}/services/warp_drive.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()[0]["code"], 404);

    // POST a service request, form-encoded, as GeoReport v2 clients do.
    let form = |pairs: &[(&str, &str)]| serde_urlencoded::to_string(pairs).unwrap();
    let post = |body: String, ext: &str| {
        http.post(format!("{base}/requests.{ext}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };
    let lat = INSIDE.0.to_string();
    let long = INSIDE.1.to_string();
    let good = [
        ("api_key", env.reporter.as_str()),
        ("service_code", "street_light"),
        ("lat", lat.as_str()),
        ("long", long.as_str()),
        ("description", "路灯不亮"),
        ("media_url", "https://img.example/light.jpg"),
        ("email", "rider@example.com"),
        ("phone", "13800138000"),
        ("first_name", "Li"),
    ];
    let r = post(form(&good), "json").await.unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let created: Value = r.json().await.unwrap();
    let id: ClueId = created[0]["service_request_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let r = post(form(&good), "xml").await.unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let xml = r.text().await.unwrap();
    let xml_id: ClueId = xml_texts(&xml, "service_request_id")[0].parse().unwrap();
    assert_ne!(xml_id, id);

    // Open311's error format for the errors a client can make.
    let without = |key: &str| -> Vec<(&str, &str)> {
        good.iter().copied().filter(|(k, _)| *k != key).collect()
    };
    let with = |key: &str, value: &'static str| -> Vec<(&str, &str)> {
        good.iter()
            .map(|&(k, v)| if k == key { (k, value) } else { (k, v) })
            .collect()
    };
    let revoked: Vec<(&str, &str)> = good
        .iter()
        .map(|&(k, v)| {
            if k == "api_key" {
                (k, env.revoked.as_str())
            } else {
                (k, v)
            }
        })
        .collect();
    let cases: Vec<(Vec<(&str, &str)>, u16)> = vec![
        (without("api_key"), 403),
        (with("api_key", "gct_wrong"), 403),
        (revoked, 403),
        (with("service_code", "warp_drive"), 404),
        (without("service_code"), 400),
        (without("lat"), 400),
        (with("long", "east"), 400),
        (with("lat", "39.9"), 400),
    ];
    for (pairs, status) in cases {
        let r = post(form(&pairs), "json").await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{pairs:?}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e[0]["code"], status);
        assert!(!e[0]["description"].as_str().unwrap().is_empty());
        let r = post(form(&pairs), "xml").await.unwrap();
        assert_eq!(r.status().as_u16(), status);
        let xml = r.text().await.unwrap();
        assert_eq!(xml_texts(&xml, "code"), [status.to_string()], "{xml}");
    }
    let r = http
        .post(format!("{base}/requests.json"))
        .json(&json!({"api_key": env.reporter}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 415);

    // The command on the topic: channel open311, photo kept, phone only as a keyed hash, email
    // not at all.
    let b = bootstrap.clone();
    let records = tokio::task::spawn_blocking(move || read_topic(&b, 2))
        .await
        .unwrap();
    assert_eq!(records.len(), 2);
    let (_, cmd) = records.iter().find(|(_, c)| c.clue_id == id).unwrap();
    let Command::Report(report) = &cmd.command else {
        panic!("not a report")
    };
    assert_eq!(report.channel, Channel::Open311);
    assert_eq!(report.category.as_str(), "street_light");
    assert_eq!(report.photos, ["https://img.example/light.jpg"]);
    assert!(report.phone_hash.is_some());
    let raw = serde_json::to_string(cmd).unwrap();
    assert!(!raw.contains("13800138000") && !raw.contains("rider@example.com"));

    // Reads: the default window is the last 90 days.
    let list: Value = get_json(&http, format!("{base}/requests.json")).await;
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["service_request_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [f.a.to_string(), f.b.to_string()],
        "newest first, OLD outside the window"
    );
    let a = &list[0];
    assert_eq!(a["status"], "open");
    assert_eq!(a["status_notes"], "dispatched");
    assert_eq!(a["service_code"], "manhole_cover");
    assert_eq!(a["service_name"], "井盖破损/缺失");
    assert_eq!(a["agency_responsible"], "区水务局");
    assert_eq!(a["description"], "井盖缺失 <危险>");
    // The first photo of the report; a clue without photos has none.
    assert_eq!(a["media_url"], "https://img.example/a1.jpg");
    assert_eq!(list[1]["media_url"], Value::Null);
    assert_eq!(a["lat"], INSIDE.0);
    assert_eq!(a["long"], INSIDE.1);
    assert_eq!(a["address_id"], "310199001001001");
    assert_eq!(a["address"], "洪泉街道 兰城社区 310199001001001");
    for k in [
        "requested_datetime",
        "updated_datetime",
        "expected_datetime",
    ] {
        let t = chrono::DateTime::parse_from_rfc3339(a[k].as_str().unwrap()).unwrap();
        assert!(t.timestamp_millis() > 0, "{k}");
    }
    let expected =
        chrono::DateTime::parse_from_rfc3339(a["expected_datetime"].as_str().unwrap()).unwrap();
    let requested =
        chrono::DateTime::parse_from_rfc3339(a["requested_datetime"].as_str().unwrap()).unwrap();
    assert_eq!((expected - requested).num_hours(), 2, "the deadline");
    assert_eq!(list[1]["status"], "closed");
    assert_eq!(list[1]["agency_responsible"], "区绿化和市容管理局");

    let q = |query: &str| {
        let url = format!("{base}/requests.json?{query}");
        let http = http.clone();
        async move {
            let r = http.get(url).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let ids_of = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| r["service_request_id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids_of(&q("status=closed").await.1), [f.b.to_string()]);
    assert_eq!(ids_of(&q("status=open").await.1), [f.a.to_string()]);
    assert_eq!(ids_of(&q("status=open,closed").await.1).len(), 2);
    assert_eq!(
        ids_of(&q("service_code=garbage_pile").await.1),
        [f.b.to_string()]
    );
    assert_eq!(
        ids_of(&q("service_code=street_light,garbage_pile").await.1),
        [f.b.to_string()]
    );
    // service_request_id overrides the window.
    assert_eq!(
        ids_of(&q(&format!("service_request_id={},{}", f.old, f.a)).await.1).len(),
        2
    );
    let start = gridclue_ingest::reads::rfc3339(f.now - 125 * DAY_MS);
    let end = gridclue_ingest::reads::rfc3339(f.now - 100 * DAY_MS);
    let query =
        serde_urlencoded::to_string([("start_date", start.as_str()), ("end_date", end.as_str())])
            .unwrap();
    assert_eq!(ids_of(&q(&query).await.1), [f.old.to_string()]);
    let (status, e) = q("status=pending").await;
    assert_eq!((status, &e[0]["code"]), (400, &json!(400)));
    let (status, _) = q("start_date=2026-01-01T00:00:00Z&end_date=2026-12-01T00:00:00Z").await;
    assert_eq!(status, 400);

    // One request, JSON and XML.
    let one: Value = get_json(&http, format!("{base}/requests/{}.json", f.b)).await;
    assert_eq!(one.as_array().unwrap().len(), 1);
    assert_eq!(one[0]["status"], "closed");
    let xml = get_text(&http, format!("{base}/requests/{}.xml", f.a)).await;
    assert!(xml.contains("<service_requests><request>"));
    assert_eq!(xml_texts(&xml, "service_request_id"), [f.a.to_string()]);
    assert_eq!(xml_texts(&xml, "status"), ["open"]);
    assert_eq!(xml_texts(&xml, "description"), ["井盖缺失 <危险>"]);
    for missing in [ClueId::new_random().to_string(), "nope".into()] {
        let r = http
            .get(format!("{base}/requests/{missing}.json"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 404);
        assert_eq!(r.json::<Value>().await.unwrap()[0]["code"], 404);
    }
    let r = http
        .get(format!("{base}/requests/{}.csv", f.a))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    server.stop().await.unwrap();

    // The config switch that makes reads need a key.
    let mut locked = config(&env, &bootstrap, &ch, &db);
    locked.open311_reads_require_key = true;
    let server = Server::start(locked).await;
    let base = format!("{}/open311/v2", server.url);
    let r = http
        .get(format!("{base}/requests.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let r = http
        .get(format!("{base}/services.xml?api_key=gct_bad"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let r = http
        .get(format!("{base}/requests.json?api_key={}", env.district))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    server.stop().await.unwrap();
    drop(cluster);
    drop_database(&ch, &db).await;
}

/// Photos are read in the scope of the clues whose facts refer to them: the report's photo and
/// the department's 处置后 photo of one clue (rider one's, street 310199001, water affairs), and
/// a photo no clue refers to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn photos_are_read_in_the_scope_of_their_clues() {
    use common::images::{exif_segment, gps_chunks, jpeg, png};
    let ch = clickhouse().await;
    let db = database(&ch).await;
    let env = Env::with_staff("photo-scope");
    let server = Server::start(config(&env, "127.0.0.1:9", &ch, &db)).await;
    let http = reqwest::Client::new();
    let upload = |token: String, content_type: &'static str, body: Vec<u8>| {
        let (http, url) = (http.clone(), server.url.clone());
        async move {
            let r = http
                .post(format!("{url}/v1/photos"))
                .bearer_auth(token)
                .header("content-type", content_type)
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
            let v: Value = r.json().await.unwrap();
            v["photo"].as_str().unwrap().to_owned()
        }
    };
    let before = upload(
        env.reporter.clone(),
        "image/jpeg",
        jpeg(&[exif_segment()], 7),
    )
    .await;
    let after = upload(env.department.clone(), "image/png", png(&gps_chunks())).await;
    let loose = upload(env.other_reporter.clone(), "image/jpeg", jpeg(&[], 9)).await;

    let clue = ClueId::new_random();
    let at = gridclue_core::wire::now_ms() - 3_600_000;
    insert(
        &ch,
        &db,
        "clues",
        &[json!({
            "clue_id": clue.to_string(), "version": 5, "status": "handled",
            "placement": "inside", "inside": 1, "grid_code": "310199001001001",
            "community_code": "310199001001", "street_code": "310199001",
            "lat": INSIDE.0, "lon": INSIDE.1, "category": "manhole_cover",
            "department": "water_affairs", "urgency": "urgent", "reporter_id": env.reporter_id,
            "reporter_group": "food_delivery", "channel": "web", "is_case": 1,
            "reported_at_ms": at, "deadline_ms": at + 7_200_000, "updated_at_ms": at + 60_000,
        })],
    )
    .await;
    let fact = |seq: u32, kind: &str, photos: Vec<String>| {
        json!({
            "clue_id": clue.to_string(), "seq": seq, "command_id": ClueId::new_random().to_string(),
            "fact_type": kind, "status": kind, "occurred_at_ms": at + u64::from(seq),
            "processed_at_ms": at + 5, "placement": "inside", "inside": 1,
            "grid_code": "310199001001001", "street_code": "310199001",
            "category": "manhole_cover", "department": "water_affairs", "photos": photos,
            "kafka_topic": "clues.events", "kafka_partition": 0, "kafka_offset": seq,
        })
    };
    // The report carries its photo with the hex in capitals: the same photo.
    let before_upper = format!("sha256:{}", before["sha256:".len()..].to_ascii_uppercase());
    insert(
        &ch,
        &db,
        "clue_events",
        &[
            fact(0, "reported", vec![before_upper]),
            fact(1, "accepted", vec![]),
            fact(2, "handled", vec![after.clone()]),
        ],
    )
    .await;

    let status = |photo: &str, token: &str| {
        let (http, url) = (http.clone(), server.url.clone());
        let (photo, token) = (photo.to_owned(), token.to_owned());
        async move {
            http.get(format!("{url}/v1/photos/{photo}"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let expectations = [
        (
            &before,
            &env.reporter,
            200,
            "rider one uploaded it and reported the clue",
        ),
        (&before, &env.other_reporter, 404, "another rider"),
        (&before, &env.street, 200, "the clue's street office"),
        (&before, &env.other_street, 404, "another street office"),
        (&before, &env.department, 200, "the clue's department"),
        (&before, &env.other_department, 404, "another department"),
        (&before, &env.district, 200, "the district"),
        (
            &after,
            &env.reporter,
            200,
            "the reporter sees the result of their clue",
        ),
        (&after, &env.other_reporter, 404, "another rider"),
        (&after, &env.street, 200, "the clue's street office"),
        (&after, &env.other_street, 404, "another street office"),
        (&after, &env.other_department, 404, "another department"),
        (&loose, &env.other_reporter, 200, "its uploader"),
        (
            &loose,
            &env.reporter,
            404,
            "no clue of rider one refers to it",
        ),
        (
            &loose,
            &env.street,
            404,
            "no clue of the street refers to it",
        ),
        (&loose, &env.district, 200, "the district"),
    ];
    for (photo, token, expected, who) in expectations {
        assert_eq!(status(photo, token).await, expected, "{photo}: {who}");
    }
    server.stop().await.unwrap();
    drop_database(&ch, &db).await;
}
