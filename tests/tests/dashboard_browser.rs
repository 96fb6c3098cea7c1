//! Real-browser test of the web dashboard (`/dashboard`): headless Chromium from Debian (install
//! it with `scripts/browser-deps.sh`) driven by playwright-core (`tests/browser/dashboard.mjs`;
//! set-up in `gridclue_tests::browser`),
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
//!
//! Hotspot alerts (rows as the sink projects them): X over A1 A2 A3 in A's grid, raised D-5
//! 09:00 (new), updated D-2 08:00 (ongoing, its latest version); Y over B1 B2 in B's grid, raised
//! D-3 08:00 (new); Z over B1, raised D-6 09:00 and closed D-4 09:00. While the page is open the
//! test writes W over C1 (and two clues not in the histories) in C's grid, raised now: the page
//! must list and pin it without a reload. The district sees X Y Z (then W), street A's office X
//! only; the map pins the open ones (X, Y, W), never Z. Screenshot: `target/dashboard-alerts.png`.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use gridclue_core::codes::ActorScope;
use gridclue_core::hotspot::{AlertFact, AlertState};
use gridclue_core::tokens::{TokenFile, TokenKind};
use gridclue_core::wire::Fact;
use gridclue_core::Status;
use gridclue_dashboard_api::{DashboardConfig, Reference};
use gridclue_tests::alerts::{alert, write_alerts};
use gridclue_tests::browser::{chromium, ensure_node_modules, screenshot_dir};
use gridclue_tests::ch::TestDb;
use gridclue_tests::facts::{first_grid, street_reports, write, History};
use gridclue_tests::{data_dir, scratch};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser")
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
    let [a, b, c] = street_reports(streets);
    let a1 = History::reported(&a, day(-5, 8))
        .accepted(day(-5, 9), Some(day(-3, 9)))
        .dispatched(day(-5, 10), "greening_city_appearance")
        .handled(day(-4, 9))
        .closed(day(-4, 10), 9);
    let dup = a.clone().repeating(a1.clue);
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

/// The page's default period (the last 30 China days, today included) as `from`, `to`.
fn default_period() -> (String, String) {
    let today = chrono::DateTime::from_timestamp_millis(
        gridclue_core::wire::now_ms() as i64 + 8 * 3_600_000,
    )
    .unwrap()
    .date_naive();
    (
        (today - chrono::Days::new(29)).to_string(),
        (today + chrono::Days::new(1)).to_string(),
    )
}

/// The alerts (X Y Z) of the module docs.
fn alerts_of(h: &std::collections::BTreeMap<&str, History>) -> Vec<AlertFact> {
    let x = [&h["A1"], &h["A2"], &h["A3"]];
    let x1 = alert(0x1, 1, AlertState::New, &x, day(-5, 9));
    let x2 = AlertFact {
        version: 2,
        state: AlertState::Ongoing,
        at_ms: day(-2, 8),
        ..x1.clone()
    };
    let y = alert(0x2, 1, AlertState::New, &[&h["B1"], &h["B2"]], day(-3, 8));
    let z1 = alert(0x3, 1, AlertState::New, &[&h["B1"]], day(-6, 9));
    let z2 = AlertFact {
        version: 2,
        state: AlertState::Closed,
        at_ms: day(-4, 9),
        ..z1.clone()
    };
    vec![x1, x2, y, z1, z2]
}

/// What the page must show of an `/v1/alerts` answer, in its order: (id, category, state,
/// grid, clue ids).
fn alert_rows(answer: &Value) -> Vec<(String, String, String, String, Vec<String>)> {
    answer["rows"]
        .as_array()
        .unwrap_or_else(|| panic!("rows in {answer}"))
        .iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap().to_owned();
            let clues = r["clue_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap().to_owned())
                .collect();
            (
                s("alert_id"),
                s("category"),
                s("state"),
                s("grid_code"),
                clues,
            )
        })
        .collect()
}

fn shown_alerts(page: &Value) -> Vec<(String, String, String, String, Vec<String>)> {
    page["alerts"]
        .as_array()
        .unwrap_or_else(|| panic!("alerts in {page}"))
        .iter()
        .map(|a| {
            let s = |k: &str| a[k].as_str().unwrap().to_owned();
            let clues = a["clues"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap().to_owned())
                .collect();
            (s("id"), s("category"), s("state"), s("grid"), clues)
        })
        .collect()
}

/// The (alert, grid) pins the map shows, sorted.
fn shown_pins(page: &Value) -> Vec<(String, String)> {
    let mut pins: Vec<(String, String)> = page["pins"]
        .as_array()
        .unwrap_or_else(|| panic!("pins in {page}"))
        .iter()
        .map(|p| {
            (
                p["alert"].as_str().unwrap().to_owned(),
                p["grid"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    pins.sort();
    pins
}

/// The pins the map must show for an `/v1/alerts` answer: its open alerts at their grids.
fn open_pins(answer: &Value) -> Vec<(String, String)> {
    let mut pins: Vec<(String, String)> = alert_rows(answer)
        .into_iter()
        .filter(|a| a.2 != "closed")
        .map(|a| (a.0, a.3))
        .collect();
    pins.sort();
    pins
}

fn n(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_the_api_numbers_and_filters_by_a_clicked_street() {
    let Some(chromium) = chromium("the dashboard browser test") else {
        return;
    };
    ensure_node_modules(&browser_dir()).await;

    let db = TestDb::create("dashboard_web").await;
    gridclue_sink::migrations::apply(&db.client).await.unwrap();
    let reference = Reference::load(&data_dir()).unwrap();
    let streets = [0, 1, 2].map(|i| reference.streets[i].code.to_string());
    let histories = histories(&streets);
    let ids: std::collections::BTreeMap<&str, String> = histories
        .iter()
        .map(|(name, h)| (*name, h.clue.to_string()))
        .collect();
    let by_name: std::collections::BTreeMap<&str, History> = histories.iter().cloned().collect();
    let all: Vec<History> = histories.into_iter().map(|(_, h)| h).collect();
    write(&db.client, &all).await;
    write_alerts(&db.client, &alerts_of(&by_name)).await;
    // W: written while the page is open.
    let [_, _, c_spec] = street_reports(&streets);
    let unwritten = [
        History::reported(&c_spec, day(-1, 11)),
        History::reported(&c_spec, day(-1, 12)),
    ];
    let live_alert = alert(
        0x4,
        1,
        AlertState::New,
        &[&by_name["C1"], &unwritten[0], &unwritten[1]],
        gridclue_core::wire::now_ms(),
    );

    let dir = scratch("dashboard-web");
    let tokens_file = dir.path().join("tokens.json");
    let mut f = TokenFile::default();
    let district = f.issue(TokenKind::District, None, None, "wall").unwrap().0;
    let street_token = f
        .issue(
            TokenKind::Street,
            None,
            Some(ActorScope::parse(&streets[0]).unwrap()),
            "street A",
        )
        .unwrap()
        .0;
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

    let shots = screenshot_dir();
    let (from, to) = default_period();
    let alerts_url = format!("{url}/v1/alerts?from={from}&to={to}&limit=200");
    let mut node = tokio::process::Command::new("node")
        .arg(browser_dir().join("dashboard.mjs"))
        .args([&url, &district, &streets[0], &streets[1]])
        .arg(&shots)
        .arg(&street_token)
        .env("GRIDCLUE_CHROMIUM", &chromium)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("running node");
    let mut to_script = node.stdin.take().unwrap();
    let mut from_script = BufReader::new(node.stdout.take().unwrap()).lines();
    let mut script_errors = node.stderr.take().unwrap();
    let errors = tokio::spawn(async move {
        let mut text = String::new();
        script_errors.read_to_string(&mut text).await.ok();
        text
    });
    let (before_live, after_live, stdout) = tokio::time::timeout(Duration::from_secs(240), async {
        // The page is open with the district's alerts: W is written now.
        let mut ready = false;
        while let Some(line) = from_script.next_line().await.expect("script output") {
            if line == "ready-for-alert" {
                ready = true;
                break;
            }
        }
        let mut answers = None;
        if ready {
            let before_live = get_json(&http, &alerts_url, &district).await;
            write_alerts(&db.client, std::slice::from_ref(&live_alert)).await;
            let after_live = get_json(&http, &alerts_url, &district).await;
            to_script
                .write_all(format!("{}\n", live_alert.alert_id).as_bytes())
                .await
                .expect("writing to the script");
            drop(to_script);
            answers = Some((before_live, after_live));
        }
        let mut stdout = String::new();
        while let Some(line) = from_script.next_line().await.expect("script output") {
            stdout.push_str(&line);
            stdout.push('\n');
        }
        let status = node.wait().await.expect("node ran");
        let errors = errors.await.unwrap();
        let (before_live, after_live) = answers.unwrap_or_else(|| {
            panic!("the browser script stopped before the page was ready ({status}):\n{errors}\n{stdout}")
        });
        assert!(
            status.success(),
            "browser script failed ({status}):\n{errors}\n{stdout}"
        );
        (before_live, after_live, stdout)
    })
    .await
    .expect("the browser script finishes within 4 minutes");
    let shown: Value = serde_json::from_str(stdout.trim()).expect("script result");
    let default = (from, to);

    // The whole district: the tiles equal the API's total for the page's period, and the
    // counts worked out by hand.
    let view = &shown["district"]["view"];
    let (from, to) = (view["from"].as_str().unwrap(), view["to"].as_str().unwrap());
    assert_eq!(
        (from, to),
        (default.0.as_str(), default.1.as_str()),
        "the page shows its default period (the one the alerts were read for)"
    );
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
    let label = reference.street_name(&reference.streets[0].code).unwrap();
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

    // Alerts: the page lists exactly what /v1/alerts answers for its view, in its order: for
    // the district (W not yet written) Y X Z, newest raised first.
    let (x, y, z) = (
        uuid::Uuid::from_u128(1).to_string(),
        uuid::Uuid::from_u128(2).to_string(),
        uuid::Uuid::from_u128(3).to_string(),
    );
    let w = live_alert.alert_id.to_string();
    let listed = alert_rows(&before_live);
    assert_eq!(
        listed
            .iter()
            .map(|a| (a.0.as_str(), a.1.as_str(), a.2.as_str()))
            .collect::<Vec<_>>(),
        vec![
            (y.as_str(), "manhole_cover", "new"),
            (x.as_str(), "garbage_pile", "ongoing"),
            (z.as_str(), "manhole_cover", "closed"),
        ],
        "{before_live}"
    );
    assert_eq!(
        listed[1].4,
        vec![ids["A1"].clone(), ids["A2"].clone(), ids["A3"].clone()]
    );
    assert_eq!(
        shown_alerts(&shown["district"]),
        listed,
        "{}",
        shown["district"]
    );
    // The map pins the open ones at their grids (not the closed Z) and outlines their grids.
    let (grid_a, grid_b, grid_c) = (
        first_grid(&streets[0]).to_string(),
        first_grid(&streets[1]).to_string(),
        first_grid(&streets[2]).to_string(),
    );
    let mut want_pins = vec![(x.clone(), grid_a.clone()), (y.clone(), grid_b.clone())];
    want_pins.sort();
    assert_eq!(open_pins(&before_live), want_pins);
    assert_eq!(shown_pins(&shown["district"]), want_pins);
    let outlined = shown["district"]["outlined"].as_array().unwrap();
    for g in [&grid_a, &grid_b] {
        assert!(
            outlined.iter().any(|o| o == g.as_str()),
            "{g} outlined: {outlined:?}"
        );
    }
    assert!(
        !outlined.iter().any(|o| o == grid_c.as_str()),
        "{outlined:?}"
    );

    // W reached the open page through the stream, without a full reload.
    let live_rows = alert_rows(&after_live);
    assert_eq!(live_rows.len(), 4, "{after_live}");
    assert_eq!(live_rows[0].0, w, "the newest first");
    assert_eq!(shown_alerts(&shown["live_alert"]), live_rows);
    assert_eq!(shown_pins(&shown["live_alert"]), open_pins(&after_live));
    assert!(shown_pins(&shown["live_alert"]).contains(&(w.clone(), grid_c.clone())));
    assert_eq!(
        shown["live_alert_full_reloads"], 0,
        "only the alerts were read again"
    );
    // Its pin clicked: the view is its grid, the alert highlighted; its clue's timeline opens.
    assert_eq!(
        shown["alert_click"]["view"]["grid"],
        grid_c.as_str(),
        "{}",
        shown["alert_click"]
    );
    assert_eq!(shown["alert_click"]["view"]["street"], streets[2].as_str());
    assert_eq!(shown["alert_click"]["selected"], serde_json::json!([w]));
    assert_eq!(shown["alert_timeline"]["clue"], ids["C1"].as_str());
    assert_eq!(shown["alert_timeline"]["shown"], ids["C1"].as_str());

    // Street A's office: its street's alert X only, as /v1/alerts answers its token.
    let own = get_json(
        &http,
        &format!("{alerts_url}&street={}", streets[0]),
        &street_token,
    )
    .await;
    let own_rows = alert_rows(&own);
    assert_eq!(
        own_rows.iter().map(|a| a.0.as_str()).collect::<Vec<_>>(),
        vec![x.as_str()]
    );
    let page = &shown["street_token"];
    assert_eq!(page["view"]["street"], streets[0].as_str());
    assert_eq!(shown_alerts(page), own_rows, "{page}");
    assert_eq!(shown_pins(page), vec![(x.clone(), grid_a.clone())]);

    for name in [
        "dashboard-laptop.png",
        "dashboard-street.png",
        "dashboard-wall.png",
        "dashboard-alerts.png",
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
