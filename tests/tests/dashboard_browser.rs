//! Real-browser test of the web dashboard (`/dashboard`): headless Chromium from Debian (install
//! it with `scripts/browser-deps.sh`) driven by playwright-core (`tests/browser/dashboard.mjs`,
//! installed here with `npm ci` from the committed lock file when `node_modules` is missing),
//! against dashboard-api run in-process on port 0 over a test database of the real ClickHouse
//! server holding hand-built clue histories (written with the sink's own fold and rows).
//!
//! The page's numbers (read from the DOM) must equal the API's answers for the same view, and
//! some of them the counts worked out by hand below; clicking a street (in the ranking, and on
//! the map canvas) must switch every tile and list to that street. Screenshots are saved as
//! `target/dashboard-laptop.png`, `target/dashboard-street.png` and `target/dashboard-wall.png`.
//!
//! The histories, relative to today D (China dates; every fact lies before today):
//!
//! Street A: A1 reported D-5 08:00, accepted 09:00 (deadline D-3 09:00), closed D-4 10:00
//! (on time); A2 accepted D-5 10:00 (deadline D-4 10:00), dispatched, never closed: overdue
//! (red); A3 accepted D-2 09:00 with its yellow light from D-2 10:00 and deadline D+6: yellow;
//! D1 reported D-3 a duplicate of A1 (a report, not a case).
//! Street B: B1 accepted D-6 09:00 (deadline D-5 09:00), closed D-4 09:00 (late); B2 accepted
//! D-3 and rejected D-3 (a report, not a case).
//! Street C: C1 accepted D-1 09:00 (deadline D+20), dispatched: green.

use std::path::{Path, PathBuf};
use std::time::Duration;

use gridclue_core::tokens::{TokenFile, TokenKind};
use gridclue_core::wire::Fact;
use gridclue_core::{GridCode, Status};
use gridclue_dashboard_api::{DashboardConfig, Reference};
use gridclue_tests::ch::TestDb;
use gridclue_tests::facts::{write, History, ReportSpec};
use gridclue_tests::{data_dir, scratch};
use serde_json::Value;

fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser")
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// The headless Chromium to drive, or `None` (with a message saying so) when it is not installed
/// and the run does not require it. `make test` installs it and sets `GRIDCLUE_REQUIRE_BROWSER=1`,
/// so there a missing browser fails the test instead of skipping it.
fn chromium() -> Option<String> {
    let path = std::env::var("GRIDCLUE_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if Path::new(&path).exists() {
        return Some(path);
    }
    let help = format!(
        "headless Chromium is missing at {path}: run `scripts/browser-deps.sh` (Debian's \
         chromium and chromium-driver) or set GRIDCLUE_CHROMIUM"
    );
    assert!(
        std::env::var_os("GRIDCLUE_REQUIRE_BROWSER").is_none(),
        "{help} (GRIDCLUE_REQUIRE_BROWSER is set)"
    );
    eprintln!("SKIPPED the dashboard browser test: {help}");
    None
}

async fn ensure_node_modules() {
    let node = tokio::process::Command::new("node")
        .arg("--version")
        .output()
        .await;
    assert!(
        node.is_ok_and(|o| o.status.success()),
        "node is required for the browser test (Node.js 20+ on PATH)"
    );
    let dir = browser_dir();
    if dir
        .join("node_modules/playwright-core/package.json")
        .exists()
    {
        return;
    }
    let out = tokio::process::Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(&dir)
        .output()
        .await
        .expect("running npm ci");
    assert!(
        out.status.success(),
        "npm ci in {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn first_grid(street: &str) -> GridCode {
    let text = std::fs::read_to_string(data_dir().join("district/grids.geojson")).unwrap();
    let map: Value = serde_json::from_str(&text).unwrap();
    let code = map["features"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["properties"]["grid_code"].as_str())
        .find(|g| g.starts_with(street))
        .unwrap();
    GridCode::parse(code).unwrap()
}

fn spec(street: &str, category: &str, department: &str) -> ReportSpec {
    ReportSpec {
        grid: first_grid(street),
        category: category.into(),
        department: department.into(),
        reporter_id: "tok_rider".into(),
        reporter_group: None,
        duplicate_of: None,
    }
}

/// Epoch milliseconds of `hour`:00 China time, `days` days from today (China date).
fn day(days: i64, hour: u64) -> u64 {
    const DAY: i64 = 86_400_000;
    let china_now = gridclue_core::wire::now_ms() as i64 + 8 * 3_600_000;
    let midnight_utc = china_now - china_now.rem_euclid(DAY) - 8 * 3_600_000;
    (midnight_utc + days * DAY) as u64 + hour * 3_600_000
}

/// The histories of the module docs, by name.
fn histories(streets: &[String; 3]) -> Vec<(&'static str, History)> {
    let a = spec(&streets[0], "garbage_pile", "greening_city_appearance");
    let b = spec(&streets[1], "manhole_cover", "water_affairs");
    let c = spec(&streets[2], "street_vending", "urban_management");
    let a1 = History::reported(&a, day(-5, 8))
        .accepted(day(-5, 9), Some(day(-3, 9)))
        .dispatched(day(-5, 10), "greening_city_appearance")
        .handled(day(-4, 9))
        .closed(day(-4, 10), 9);
    let dup = ReportSpec {
        duplicate_of: Some(a1.clue),
        ..a.clone()
    };
    vec![
        ("A1", a1),
        (
            "A2",
            History::reported(&a, day(-5, 9))
                .accepted(day(-5, 10), Some(day(-4, 10)))
                .dispatched(day(-5, 11), "greening_city_appearance"),
        ),
        (
            "A3",
            History::reported(&a, day(-2, 8)).then(
                day(-2, 9),
                Fact::Accepted {
                    deadline_ms: Some(day(6, 9)),
                    yellow_at_ms: Some(day(-2, 10)),
                },
                Status::Accepted,
            ),
        ),
        ("D1", History::reported(&dup, day(-3, 12))),
        (
            "B1",
            History::reported(&b, day(-6, 8))
                .accepted(day(-6, 9), Some(day(-5, 9)))
                .dispatched(day(-6, 10), "water_affairs")
                .handled(day(-4, 8))
                .closed(day(-4, 9), 16),
        ),
        (
            "B2",
            History::reported(&b, day(-3, 8))
                .accepted(day(-3, 9), Some(day(-1, 9)))
                .rejected(day(-3, 10)),
        ),
        (
            "C1",
            History::reported(&c, day(-1, 8))
                .accepted(day(-1, 9), Some(day(20, 9)))
                .dispatched(day(-1, 10), "urban_management"),
        ),
    ]
}

async fn get_json(client: &reqwest::Client, url: &str, token: &str) -> Value {
    let r = client
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert!(r.status().is_success(), "GET {url}: {}", r.status());
    r.json().await.unwrap()
}

/// The tile values of an indicators answer's total, as the page must show them (raw JSON
/// numbers as strings, `null` for null).
fn expected_tiles(total: &Value) -> Vec<(&'static str, String)> {
    let raw = |v: &Value| {
        if v.is_null() {
            "null".to_owned()
        } else {
            v.to_string()
        }
    };
    let n = |k: &str| total[k].as_u64().unwrap_or_else(|| panic!("{k}: {total}"));
    vec![
        ("reports", n("reports").to_string()),
        ("cases", n("accepted").to_string()),
        ("open", (n("accepted") - n("closed")).to_string()),
        ("overdue", n("overdue_open").to_string()),
        ("closure_rate", raw(&total["closure_rate"])),
        ("on_time_rate", raw(&total["on_time_rate"])),
        ("rework_rate", raw(&total["rework_rate"])),
        ("score", raw(&total["score"])),
    ]
}

fn assert_tiles(what: &str, shown: &Value, total: &Value) {
    for (kpi, want) in expected_tiles(total) {
        let tile = &shown["tiles"][kpi];
        let value = tile["value"].as_str().unwrap_or_default();
        // Equal as numbers (JSON's `0.0` is JavaScript's `0`), exactly: no rounding allowed.
        let same = match (value.parse::<f64>(), want.parse::<f64>()) {
            (Ok(a), Ok(b)) => a == b,
            _ => value == want,
        };
        assert!(
            same,
            "{what}: tile {kpi} shows {tile} but the API says {want}"
        );
        // The visible text is the value formatted, not a placeholder.
        let text = tile["text"].as_str().unwrap();
        if want == "null" {
            assert_eq!(text, "–", "{what}: {kpi}");
        } else if kpi.ends_with("_rate") {
            let v: f64 = want.parse().unwrap();
            assert_eq!(text, format!("{:.1}%", v * 100.0), "{what}: {kpi}");
        } else if kpi == "score" {
            let v: f64 = want.parse().unwrap();
            assert_eq!(text, format!("{v:.1}"), "{what}: {kpi}");
        } else {
            assert_eq!(text, want, "{what}: {kpi}");
        }
    }
}

fn n(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_the_api_numbers_and_filters_by_a_clicked_street() {
    let Some(chromium) = chromium() else {
        return;
    };
    ensure_node_modules().await;

    let db = TestDb::create("dashboard_web").await;
    gridclue_sink::migrations::apply(&db.client).await.unwrap();
    let reference = Reference::load(&data_dir()).unwrap();
    let streets = [0, 1, 2].map(|i| reference.streets[i].code.clone());
    let histories = histories(&streets);
    let ids: std::collections::BTreeMap<&str, String> = histories
        .iter()
        .map(|(name, h)| (*name, h.clue.to_string()))
        .collect();
    let all: Vec<History> = histories.into_iter().map(|(_, h)| h).collect();
    write(&db.client, &all).await;

    let dir = scratch("dashboard-web");
    let tokens_file = dir.path().join("tokens.json");
    let mut f = TokenFile::default();
    let district = f.issue(TokenKind::District, None, None, "wall").unwrap().0;
    f.write(&tokens_file).unwrap();

    let config = DashboardConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        clickhouse_url: db.url.clone(),
        clickhouse_database: db.database.clone(),
        data_dir: data_dir().display().to_string(),
        tokens_file: tokens_file.display().to_string(),
        ..DashboardConfig::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn({
        let stop = stop.clone();
        async move {
            gridclue_dashboard_api::run(listener, config, async move { stop.cancelled().await })
                .await
        }
    });
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while http
        .get(format!("{url}/readyz"))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .ok()
        != Some(200)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "dashboard-api ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let shots = target_dir();
    std::fs::create_dir_all(&shots).unwrap();
    let out = tokio::time::timeout(
        Duration::from_secs(240),
        tokio::process::Command::new("node")
            .arg(browser_dir().join("dashboard.mjs"))
            .args([&url, &district, &streets[0], &streets[1]])
            .arg(&shots)
            .env("GRIDCLUE_CHROMIUM", &chromium)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the browser script finishes within 4 minutes")
    .expect("running node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "browser script failed ({}):\n{}\n{stdout}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: Value = serde_json::from_str(stdout.trim()).expect("script result");

    // The whole district: the tiles equal the API's total for the page's period, and the
    // counts worked out by hand.
    let view = &shown["district"]["view"];
    let (from, to) = (view["from"].as_str().unwrap(), view["to"].as_str().unwrap());
    assert_eq!(view["street"], "");
    let indicators = |street: Option<&str>, by: &str| {
        let mut u = format!("{url}/v1/indicators?from={from}&to={to}&by={by}");
        if let Some(s) = street {
            u.push_str(&format!("&street={s}"));
        }
        u
    };
    let whole = get_json(&http, &indicators(None, "street"), &district).await;
    assert_tiles("district", &shown["district"], &whole["total"]);
    // 7 reports (D1 and B2 too), 5 cases (A1 A2 A3 B1 C1), 2 closed, 1 overdue (A2).
    let total = &whole["total"];
    assert_eq!(
        [
            n(total, "reports"),
            n(total, "accepted"),
            n(total, "closed"),
            n(total, "overdue_open")
        ],
        [7, 5, 2, 1],
        "{total}"
    );
    // The ranking lists the API's rows in its order, with the same scores.
    let ranking = shown["district"]["ranking"].as_array().unwrap();
    let rows = whole["rows"].as_array().unwrap();
    assert_eq!(ranking.len(), rows.len());
    for (shown_row, row) in ranking.iter().zip(rows) {
        assert_eq!(shown_row["key"], row["key"]);
        let score = shown_row["score"].as_str().unwrap();
        match row["score"].as_f64() {
            Some(want) => assert_eq!(score.parse::<f64>().ok(), Some(want), "{shown_row}"),
            None => assert_eq!(score, "null", "{shown_row}"),
        }
    }
    // The red list holds A2 and the yellow one A3, as the lists route says.
    let list_ids = |answer: &Value| -> Value {
        answer["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["clue_id"].clone())
            .collect()
    };
    let red = get_json(
        &http,
        &format!("{url}/v1/lists/overdue?limit=50"),
        &district,
    )
    .await;
    let yellow = get_json(
        &http,
        &format!("{url}/v1/lists/due_soon?limit=50"),
        &district,
    )
    .await;
    assert_eq!(list_ids(&red), serde_json::json!([ids["A2"]]), "{red}");
    assert_eq!(
        list_ids(&yellow),
        serde_json::json!([ids["A3"]]),
        "{yellow}"
    );
    assert_eq!(
        shown["district"]["overdue"],
        list_ids(&red),
        "{}",
        shown["district"]
    );
    assert_eq!(
        shown["district"]["yellow"],
        list_ids(&yellow),
        "{}",
        shown["district"]
    );

    // After clicking street A in the ranking: its numbers.
    let a = &shown["street_a"];
    assert_eq!(a["view"]["street"], streets[0].as_str());
    let street_a = get_json(&http, &indicators(Some(&streets[0]), "street"), &district).await;
    assert_tiles("street A", a, &street_a["total"]);
    let t = &street_a["total"];
    // A: 4 reports (A1 A2 A3 D1), 3 cases, 1 closed, 1 overdue; on time 1 of due 2.
    assert_eq!(
        [
            n(t, "reports"),
            n(t, "accepted"),
            n(t, "closed"),
            n(t, "overdue_open")
        ],
        [4, 3, 1, 1]
    );
    assert_eq!(a["tiles"]["on_time_rate"]["text"], "50.0%");
    assert_ne!(
        a["tiles"]["reports"]["value"], shown["district"]["tiles"]["reports"]["value"],
        "the tiles changed to the street's"
    );
    assert_eq!(a["overdue"], serde_json::json!([ids["A2"]]));
    let label = reference.street_name(&streets[0]).unwrap();
    assert!(
        shown["street_a_filter_label"]
            .as_str()
            .unwrap()
            .contains(label),
        "{}",
        shown["street_a_filter_label"]
    );

    // After clicking street B's point on the map: its numbers, and no red or yellow clue.
    let b = &shown["street_b"];
    assert_eq!(b["view"]["street"], streets[1].as_str());
    let street_b = get_json(&http, &indicators(Some(&streets[1]), "street"), &district).await;
    assert_tiles("street B", b, &street_b["total"]);
    let t = &street_b["total"];
    assert_eq!(
        [n(t, "reports"), n(t, "accepted"), n(t, "closed")],
        [2, 1, 1],
        "B1 and B2 reported, B1 the only case, closed late"
    );
    assert_eq!(b["tiles"]["on_time_rate"]["text"], "0.0%");
    assert_eq!(b["overdue"], serde_json::json!([]));
    assert_eq!(b["yellow"], serde_json::json!([]));

    // Reset: the district again.
    assert_tiles("after reset", &shown["reset"], &whole["total"]);

    assert_eq!(
        shown["english_title_after_reload"],
        "Grid clues · District dashboard"
    );
    assert_eq!(shown["english_tile"], "On-time rate");
    assert_tiles("wall", &shown["wall"], &whole["total"]);
    assert_eq!(
        shown["wall_fits"], true,
        "the wall fits 1920×1080 without scrolling"
    );
    assert!(shown["token_after_signout"].is_null());
    assert!(!shown["bad_token_message"].as_str().unwrap().is_empty());

    for name in [
        "dashboard-laptop.png",
        "dashboard-street.png",
        "dashboard-wall.png",
    ] {
        let path = shots.join(name);
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        assert!(size > 10_000, "{} written ({size} bytes)", path.display());
        println!("screenshot: {}", path.canonicalize().unwrap().display());
    }
    println!(
        "live updates: {}; notes: {}",
        shown["district"]["live"], shown["district"]["notes"]
    );

    stop.cancel();
    server.await.unwrap().unwrap();
}
