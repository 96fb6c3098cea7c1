//! The demo's staff (`gridclue-load staff`) against the whole stack: street offices,
//! departments, the district and the rider work the clues through the work queues and the
//! transitions API until every clue stands where its fate says, with the reworks, returns,
//! postponements, supervision and ratings the fate asked for — and the work queues hold exactly
//! the clues left open.

use std::collections::BTreeMap;
use std::time::Duration;

use gridclue_core::grid::StreetCode;
use gridclue_district::Grid;
use gridclue_loadgen::staff::{fate, End, Fate, StaffArgs};
use serde::Deserialize;
use serde_json::{json, Value};

use geo::{Centroid, Contains};

use crate::app::spawn_app;
use crate::geometry::{interior_point, load_grids};

const SEED: u64 = 77;

/// Clue ids whose fates cover every end and every detour, then a few more at random.
fn chosen_ids() -> Vec<(uuid::Uuid, Fate)> {
    type Wanted = (&'static str, fn(&Fate) -> bool);
    let wanted: &[Wanted] = &[
        ("closed plainly", |f| {
            f.end == End::Closed && f.postpone.is_none() && f.reworks == 0 && !f.wrong_department
        }),
        ("closed after a return", |f| {
            f.end == End::Closed && f.wrong_department
        }),
        ("closed after a rework", |f| {
            f.end == End::Closed && f.reworks > 0
        }),
        ("closed after an approved postponement", |f| {
            f.end == End::Closed && f.postpone == Some(true)
        }),
        ("closed after a denied postponement", |f| {
            f.end == End::Closed && f.postpone == Some(false)
        }),
        ("closed after supervision", |f| {
            f.end == End::Closed && f.supervise
        }),
        ("rejected", |f| f.end == End::Rejected),
        ("withdrawn", |f| f.end == End::Withdrawn),
        ("merged", |f| f.end == End::Merged),
        ("left reported", |f| f.end == End::Reported),
        ("left accepted", |f| f.end == End::Accepted),
        ("left dispatched", |f| f.end == End::Dispatched),
        ("left in progress", |f| f.end == End::InProgress),
        ("left in progress, postponed", |f| {
            f.end == End::InProgress && f.postpone == Some(true)
        }),
        ("left handled", |f| f.end == End::Handled),
    ];
    let mut out = Vec::new();
    for (what, pred) in wanted {
        let found = (0..1_000_000)
            .map(|_| uuid::Uuid::new_v4())
            .map(|id| (id, fate(SEED, &id.to_string())))
            .find(|(_, f)| pred(f))
            .unwrap_or_else(|| panic!("no clue id with a fate {what}"));
        out.push(found);
    }
    for _ in 0..10 {
        let id = uuid::Uuid::new_v4();
        out.push((id, fate(SEED, &id.to_string())));
    }
    out
}

/// The grid's centroid when it lies inside (far from every other grid's point), else a point
/// inside it.
fn central_point(g: &Grid) -> geo_types::Point<f64> {
    g.polygon
        .centroid()
        .filter(|c| g.polygon.contains(c))
        .unwrap_or_else(|| interior_point(g))
}

#[derive(Debug, Deserialize, clickhouse::Row)]
struct Row {
    id: String,
    status: String,
    rework_count: u16,
    returned_count: u16,
    postpone_count: u16,
    supervise_count: u16,
    rating: u8,
}

fn status_of(end: End) -> &'static str {
    match end {
        End::Closed => "closed",
        End::Rejected => "rejected",
        End::Merged => "duplicate",
        End::Withdrawn => "withdrawn",
        End::Reported => "reported",
        End::Accepted => "accepted",
        End::Dispatched => "dispatched",
        End::InProgress => "in_progress",
        End::Handled => "handled",
    }
}

/// The queue a clue left open waits in.
fn queue_of(end: End) -> Option<&'static str> {
    match end {
        End::Reported => Some("accept"),
        End::Accepted => Some("dispatch"),
        End::Dispatched | End::InProgress => Some("handle"),
        End::Handled => Some("verify"),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_staff_work_every_clue_to_the_end_its_fate_names() {
    let app = spawn_app().await;
    let grids = load_grids();
    let chosen = chosen_ids();
    // Each clue in a grid of its own (no two within the dedupe radius); a merged clue shares
    // its street and category with the first clue, which is closed (its merge target).
    let categories = [
        "garbage_pile",
        "manhole_cover",
        "street_light",
        "illegal_ads",
    ];
    let mut streets: Vec<StreetCode> = grids.iter().map(|g| g.street_code).collect();
    streets.sort_unstable();
    streets.dedup();
    let first_street = grids[0].street_code;
    let mut in_first_street = grids
        .iter()
        .filter(|g| g.street_code == first_street)
        .step_by(3);
    let mut elsewhere = grids
        .iter()
        .filter(|g| g.street_code != first_street)
        .step_by(7);
    for (i, (id, f)) in chosen.iter().enumerate() {
        let (grid, category) = if i == 0 || f.end == End::Merged {
            (in_first_street.next().unwrap(), categories[0])
        } else {
            (elsewhere.next().unwrap(), categories[1 + i % 3])
        };
        let p = central_point(grid);
        let r = app
            .post_clue(
                &json!({"clue_id": id.to_string(), "category": category, "lat": p.y(), "lon": p.x(), "description": "staff test"}),
                &format!("staff-{i}"),
            )
            .await;
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    }

    // The staff start once every clue has reached the projection.
    let ch = app.clickhouse().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let n: u64 = ch
            .query("SELECT count() FROM clues FINAL WHERE placement = 'inside'")
            .fetch_one()
            .await
            .unwrap();
        if n == chosen.len() as u64 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{n} of {} clues projected",
            chosen.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let dir = gridclue_tests::scratch("staff");
    let args = StaffArgs {
        ingest_url: app.ingest_url.clone(),
        dashboard_url: app.dashboard_url.clone(),
        district_token: app.district_token.clone(),
        reporter_token: app.reporter_token.clone(),
        tokens_file: dir.path().join("staff-tokens.json"),
        map: gridclue_tests::data_dir()
            .join("district/grids.geojson")
            .display()
            .to_string(),
        seed: SEED,
        concurrency: 8,
        max_rounds: 40,
        timeout_secs: 300,
    };
    gridclue_loadgen::staff::run(args.clone(), streets.clone())
        .await
        .expect("the staff finish");

    let rows: Vec<Row> = ch
        .query(
            "SELECT toString(clue_id) AS id, status, rework_count, returned_count, \
             postpone_count, supervise_count, rating FROM clues FINAL",
        )
        .fetch_all()
        .await
        .unwrap();
    let rows: BTreeMap<String, Row> = rows.into_iter().map(|r| (r.id.clone(), r)).collect();
    for (id, f) in &chosen {
        let row = rows
            .get(&id.to_string())
            .unwrap_or_else(|| panic!("clue {id} not projected"));
        let why = format!("{id} {f:?}: {row:?}");
        assert_eq!(row.status, status_of(f.end), "{why}");
        let dispatched = matches!(
            f.end,
            End::Dispatched | End::InProgress | End::Handled | End::Closed
        );
        let started = matches!(f.end, End::InProgress | End::Handled | End::Closed);
        assert_eq!(
            row.returned_count,
            u16::from(dispatched && f.wrong_department),
            "{why}"
        );
        assert_eq!(
            row.postpone_count,
            u16::from(started && f.postpone == Some(true)),
            "{why}"
        );
        assert_eq!(row.supervise_count > 0, dispatched && f.supervise, "{why}");
        if f.end == End::Closed {
            assert_eq!(row.rework_count, f.reworks, "{why}");
            assert_eq!(row.rating, f.rating.unwrap_or(0), "{why}");
        }
    }

    // The district's queues hold exactly the clues left open, each in its queue.
    let work: Value = app
        .http
        .get(format!("{}/v1/work?limit=500", app.dashboard_url))
        .bearer_auth(&app.district_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut got: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for q in work["queues"].as_array().unwrap() {
        let ids = q["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["clue_id"].as_str().unwrap().to_owned());
        got.entry(q["queue"].as_str().unwrap().to_owned())
            .or_default()
            .extend(ids);
    }
    let mut want: BTreeMap<String, Vec<String>> =
        ["accept", "dispatch", "handle", "verify", "postpone"]
            .iter()
            .map(|q| (q.to_string(), Vec::new()))
            .collect();
    for (id, f) in &chosen {
        if let Some(q) = queue_of(f.end) {
            want.get_mut(q).unwrap().push(id.to_string());
        }
    }
    for ids in got.values_mut().chain(want.values_mut()) {
        ids.sort();
    }
    assert_eq!(got, want);

    // A second run changes nothing: the same fates, the same idempotency keys.
    gridclue_loadgen::staff::run(args, streets)
        .await
        .expect("a second run finishes");
    app.settled().await;
    let again: Vec<Row> = ch
        .query(
            "SELECT toString(clue_id) AS id, status, rework_count, returned_count, \
             postpone_count, supervise_count, rating FROM clues FINAL",
        )
        .fetch_all()
        .await
        .unwrap();
    for r in again {
        let before = &rows[&r.id];
        assert_eq!(
            (
                r.status.as_str(),
                r.rework_count,
                r.postpone_count,
                r.rating
            ),
            (
                before.status.as_str(),
                before.rework_count,
                before.postpone_count,
                before.rating
            ),
            "{}",
            r.id
        );
    }
    app.stop().await;
}
