//! Back-dated history through the whole stack: `POST /v1/import/clues` → the clue processor →
//! ClickHouse. The facts carry the historical times, the deadline runs from the historical
//! acceptance (so an old open clue is overdue now), the clue is marked as imported, and importing
//! the same records again adds nothing.

use std::time::{Duration, Instant};

use gridclue_core::calendar::Calendar;
use gridclue_core::category::Catalog;
use gridclue_loadgen::history::rfc3339;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::spawn_app;
use crate::geometry::{interior_point, load_grids};

const DAY: u64 = 86_400_000;
const HOUR: u64 = 3_600_000;

#[derive(Debug, Deserialize, clickhouse::Row)]
struct ClueState {
    id: String,
    status: String,
    channel: String,
    reported_at_ms: u64,
    accepted_at_ms: u64,
    closed_at_ms: u64,
    deadline_ms: u64,
}

#[derive(Debug, Deserialize, clickhouse::Row)]
struct FactTime {
    seq: u32,
    fact_type: String,
    occurred_at_ms: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn imported_history_keeps_its_times_and_is_imported_once() {
    let app = spawn_app().await;
    let grids = load_grids();
    let (g1, g2) = (&grids[3], &grids[400]);
    let (p1, p2) = (interior_point(g1), interior_point(g2));
    let now = gridclue_core::wire::now_ms();
    // Local midnight 20 and 10 days ago, then working hours.
    let midnight = |days: u64| (now + 8 * HOUR) / DAY * DAY - 8 * HOUR - days * DAY;
    let closed_report = midnight(20) + 9 * HOUR + 5 * 60_000;
    let closed_times: Vec<u64> = [30, 40, 55, 95, 120]
        .iter()
        .map(|m| closed_report + m * 60_000)
        .collect();
    let open_report = midnight(10) + 10 * HOUR;
    let open_accept = open_report + 20 * 60_000;
    let street = |g: &gridclue_district::Grid| json!({"role": "street", "scope": g.street_code});
    let records = json!({"source": "legacy", "clues": [
        {"source_id": "L-1", "category": "manhole_cover", "lat": p1.y(), "lon": p1.x(),
         "reported_at": rfc3339(closed_report),
         "timeline": [
            {"action": "accept", "at": rfc3339(closed_times[0]), "by": street(g1)},
            {"action": "dispatch", "at": rfc3339(closed_times[1]), "by": street(g1), "department": "water_affairs"},
            {"action": "start", "at": rfc3339(closed_times[2]), "by": {"role": "department", "scope": "water_affairs"}},
            {"action": "handle", "at": rfc3339(closed_times[3]), "by": {"role": "department", "scope": "water_affairs"}, "note": "已更换"},
            {"action": "verify_ok", "at": rfc3339(closed_times[4]), "by": street(g1)}
         ]},
        {"source_id": "L-2", "category": "garbage_pile", "lat": p2.y(), "lon": p2.x(),
         "reported_at": rfc3339(open_report),
         "timeline": [{"action": "accept", "at": rfc3339(open_accept), "by": street(g2)}]},
        {"source_id": "L-3", "category": "garbage_pile", "lat": p2.y(), "lon": p2.x(),
         "reported_at": rfc3339(open_report),
         "timeline": [{"action": "accept", "at": rfc3339(open_report - HOUR), "by": street(g2)}]}
    ]});
    let import = || async {
        let r = app
            .http
            .post(format!("{}/v1/import/clues", app.ingest_url))
            .bearer_auth(&app.district_token)
            .json(&records)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        r.json::<Value>().await.unwrap()
    };
    let first = import().await;
    let statuses: Vec<&str> = first["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, vec!["accepted", "accepted", "error"], "{first:#}");
    let closed_id = first["results"][0]["clue_id"].as_str().unwrap().to_owned();
    let open_id = first["results"][1]["clue_id"].as_str().unwrap().to_owned();

    let ch = app.clickhouse().await;
    let states = || async {
        ch.query(
            "SELECT toString(clue_id) AS id, status, channel, reported_at_ms, accepted_at_ms, \
             closed_at_ms, deadline_ms FROM clues FINAL ORDER BY id",
        )
        .fetch_all::<ClueState>()
        .await
        .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let rows = loop {
        let rows = states().await;
        let done = rows
            .iter()
            .any(|r| r.id == closed_id && r.status == "closed")
            && rows
                .iter()
                .any(|r| r.id == open_id && r.status == "accepted");
        if done {
            break rows;
        }
        assert!(Instant::now() < deadline, "history not projected: {rows:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let closed = rows.iter().find(|r| r.id == closed_id).unwrap();
    let open = rows.iter().find(|r| r.id == open_id).unwrap();
    assert_eq!(closed.channel, "import");
    assert_eq!(closed.reported_at_ms, closed_report);
    assert_eq!(closed.accepted_at_ms, closed_times[0]);
    assert_eq!(closed.closed_at_ms, closed_times[4]);
    // The time limit ran from the historical acceptance, in working time.
    let data = gridclue_tests::data_dir();
    let calendar = Calendar::load(&data.join("calendar.json")).unwrap();
    let catalog = Catalog::load(&data.join("categories.json")).unwrap();
    let limit = |c: &str| catalog.get(c).unwrap().deadline;
    assert_eq!(
        closed.deadline_ms,
        calendar
            .deadline(closed_times[0], limit("manhole_cover"))
            .unwrap()
    );
    assert_eq!(
        open.deadline_ms,
        calendar
            .deadline(open_accept, limit("garbage_pile"))
            .unwrap()
    );
    // The clue's state and its facts are separate inserts: wait until all six facts are there.
    let deadline = Instant::now() + Duration::from_secs(60);
    let facts: Vec<FactTime> = loop {
        let facts: Vec<FactTime> = ch
            .query(
                "SELECT seq, fact_type, occurred_at_ms FROM clue_events FINAL \
                 WHERE clue_id = toUUID(?) ORDER BY seq",
            )
            .bind(&closed_id)
            .fetch_all()
            .await
            .unwrap();
        if facts.len() >= 6 || Instant::now() > deadline {
            break facts;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let got: Vec<(String, u64)> = facts
        .iter()
        .map(|f| (f.fact_type.clone(), f.occurred_at_ms))
        .collect();
    let mut want = vec![("reported".to_owned(), closed_report)];
    for (t, at) in ["accepted", "dispatched", "started", "handled", "verified"]
        .iter()
        .zip(&closed_times)
    {
        want.push((t.to_string(), *at));
    }
    assert_eq!(got, want);
    assert!(facts.iter().enumerate().all(|(i, f)| f.seq == i as u32));

    // The old open clue waits in its street's dispatch queue, overdue by now.
    let work: Value = app
        .http
        .get(format!(
            "{}/v1/work?queue=dispatch&street={}",
            app.dashboard_url, g2.street_code
        ))
        .bearer_auth(&app.district_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let item = work["queues"][0]["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["clue_id"] == open_id.as_str())
        .unwrap_or_else(|| panic!("{work:#}"))
        .clone();
    assert_eq!(item["light"], "red");
    assert!(item["remaining_working_hours"].as_f64().unwrap() < 0.0);

    // Importing the same records again adds nothing.
    let events = || async {
        ch.query("SELECT count() FROM clue_events WHERE fact_type != 'overdue'")
            .fetch_one::<u64>()
            .await
            .unwrap()
    };
    let before = events().await;
    let again = import().await;
    let statuses: Vec<&str> = again["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        vec!["already_imported", "already_imported", "error"]
    );
    assert_eq!(again["commands"], 0);
    app.settled().await;
    assert_eq!(events().await, before);
    app.stop().await;
}

/// The status a timeline leaves its clue in (the last action that changes it).
fn status_after(timeline: &[gridclue_loadgen::history::Entry]) -> &'static str {
    let mut status = "reported";
    for e in timeline {
        status = match e.action {
            "accept" | "return" => "accepted",
            "dispatch" | "verify_fail" => "dispatched",
            "start" => "in_progress",
            "handle" => "handled",
            "verify_ok" => "closed",
            "reject" => "rejected",
            "merge" => "duplicate",
            "withdraw" => "withdrawn",
            _ => status,
        };
    }
    status
}

#[derive(Debug, Deserialize, clickhouse::Row)]
struct Outcome {
    id: String,
    status: String,
    closed_at_ms: u64,
    deadline_ms: u64,
    rework_count: u16,
    postpone_count: u16,
    rating: u8,
}

/// A generated month (`gridclue-load history`) goes through the import and the processor without
/// one refusal: every clue ends where its timeline says, closed on time or late as planned.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_generated_month_is_imported_without_a_refusal() {
    let app = spawn_app().await;
    let data = gridclue_tests::data_dir();
    let args = gridclue_loadgen::history::HistoryArgs {
        ingest_url: app.ingest_url.clone(),
        district_token: app.district_token.clone(),
        map: data.join("district/grids.geojson").display().to_string(),
        data_dir: data.clone(),
        seed: 5,
        days: 30,
        count: 120,
        batch: 50,
        source: "generated".into(),
        until_ms: Some(gridclue_core::wire::now_ms()),
    };
    let (grids, _) = gridclue_loadgen::map::load_map(&args.map).unwrap();
    let catalog = Catalog::load(&data.join("categories.json")).unwrap();
    let calendar = Calendar::load(&data.join("calendar.json")).unwrap();
    let clues =
        gridclue_loadgen::history::plan(&args, &grids, &catalog, &calendar, args.until_ms.unwrap());
    gridclue_loadgen::history::run(args)
        .await
        .expect("every generated clue is accepted by the import");

    let ch = app.clickhouse().await;
    let ids: Vec<String> = clues
        .iter()
        .map(|c| gridclue_ingest::import::imported_clue_id("generated", &c.source_id).to_string())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(90);
    let rows = loop {
        let rows: Vec<Outcome> = ch
            .query(
                "SELECT toString(clue_id) AS id, status, closed_at_ms, deadline_ms, rework_count, \
                 postpone_count, rating FROM clues FINAL",
            )
            .fetch_all()
            .await
            .unwrap();
        let settled = clues.iter().zip(&ids).all(|(c, id)| {
            rows.iter()
                .any(|r| &r.id == id && r.status == status_after(&c.timeline))
        });
        if settled {
            break rows;
        }
        assert!(
            Instant::now() < deadline,
            "not every clue reached the status its timeline says"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let (mut on_time, mut late) = (0, 0);
    for (c, id) in clues.iter().zip(&ids) {
        let r = rows.iter().find(|r| &r.id == id).unwrap();
        let has = |a: &str| c.timeline.iter().filter(|e| e.action == a).count() as u16;
        assert_eq!(r.rework_count, has("verify_fail"), "{}", c.source_id);
        assert_eq!(r.postpone_count, has("approve_postpone"), "{}", c.source_id);
        let rated = c.timeline.iter().find_map(|e| e.rating).unwrap_or(0);
        assert_eq!(r.rating, rated, "{}", c.source_id);
        if r.status == "closed" {
            // The processor's deadline (from the historical acceptance, after approved
            // postponements) is the one the history was planned against.
            assert_eq!(r.deadline_ms, c.deadline_ms, "{}", c.source_id);
            if c.late {
                assert!(
                    r.closed_at_ms > r.deadline_ms,
                    "{} planned late",
                    c.source_id
                );
                late += 1;
            } else {
                assert!(
                    r.closed_at_ms <= r.deadline_ms,
                    "{} planned on time",
                    c.source_id
                );
                on_time += 1;
            }
        }
    }
    assert!(on_time > 0 && late > 0, "on time {on_time}, late {late}");
    app.stop().await;
}
