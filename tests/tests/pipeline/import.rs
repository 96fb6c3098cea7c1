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
    let street = |g: &crate::geometry::TestGrid| json!({"role": "street", "scope": g.street_code});
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
    let facts: Vec<FactTime> = ch
        .query(
            "SELECT seq, fact_type, occurred_at_ms FROM clue_events FINAL \
             WHERE clue_id = toUUID(?) ORDER BY seq",
        )
        .bind(&closed_id)
        .fetch_all()
        .await
        .unwrap();
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
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(events().await, before);
    app.stop().await;
}
