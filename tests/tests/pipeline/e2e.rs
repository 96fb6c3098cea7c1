use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use gridclue_core::codes::StreetCode;
use serde_json::{json, Value};

use crate::app::spawn_app;
use crate::geometry::{interior_point, load_grids, outside_point, shared_vertices, street_of};

/// Clues inside streets, on vertices shared by grids of different streets, and outside the
/// district: the summary must count exactly the inside ones, by the street and category the
/// test computed from the GeoJSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clues_flow_from_post_to_summary() {
    let app = spawn_app().await;
    let grids = load_grids();
    let categories = ["manhole_cover", "garbage_pile", "food_safety"];
    let mut expected_streets: BTreeMap<StreetCode, u64> = BTreeMap::new();
    let mut expected_categories: BTreeMap<String, u64> = BTreeMap::new();
    let mut posted = 0;

    // One interior clue in a grid of every street (the first grid of each street code).
    let mut seen_streets = std::collections::BTreeSet::new();
    for g in grids.iter().filter(|g| seen_streets.insert(g.street_code)) {
        let p = interior_point(g);
        let category = categories[posted % categories.len()];
        let r = app
            .post_clue(
                &json!({"category": category, "lat": p.y(), "lon": p.x(), "description": "test"}),
                &format!("inside-{posted}"),
            )
            .await;
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
        *expected_streets.entry(g.street_code).or_default() += 1;
        *expected_categories.entry(category.to_owned()).or_default() += 1;
        posted += 1;
    }
    assert_eq!(
        seen_streets.len(),
        13,
        "the shipped district has 13 streets"
    );

    // Vertices shared by grids of different streets: the smallest grid code wins.
    for (p, owners) in shared_vertices(grids, 6) {
        let category = categories[posted % categories.len()];
        let r = app
            .post_clue(
                &json!({"category": category, "lat": p.y(), "lon": p.x()}),
                &format!("edge-{posted}"),
            )
            .await;
        assert_eq!(r.status(), 202);
        *expected_streets
            .entry(street_of(grids, owners[0]))
            .or_default() += 1;
        *expected_categories.entry(category.to_owned()).or_default() += 1;
        posted += 1;
    }

    // Outside the district (inside the accepted margin): accepted, flagged, not counted.
    for k in 0..3 {
        let p = outside_point(grids, k);
        let r = app
            .post_clue(
                &json!({"category": "garbage_pile", "lat": p.y(), "lon": p.x()}),
                &format!("outside-{k}"),
            )
            .await;
        assert_eq!(r.status(), 202);
    }

    // A client retry with the same key is the same clue, not a new report.
    let retry = app
        .post_clue(
            &json!({"category": "manhole_cover", "lat": 0.0, "lon": 0.0}),
            "inside-0",
        )
        .await;
    assert_eq!(
        retry.status(),
        422,
        "a retry with a different body is still validated"
    );

    let total: u64 = expected_streets.values().sum();
    let started = Instant::now();
    let s = app
        .summary_when(Duration::from_secs(60), |s| {
            s["total"].as_u64() == Some(total) && s["outside"].as_u64() == Some(3)
        })
        .await;
    eprintln!("summary complete after {:?}", started.elapsed());
    assert_eq!(s["total"].as_u64(), Some(total), "{s:#}");
    assert_eq!(s["outside"].as_u64(), Some(3), "{s:#}");
    let by_street: BTreeMap<StreetCode, u64> = s["by_street"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["count"].as_u64() != Some(0))
        .map(|r| {
            (
                StreetCode::parse(r["street_code"].as_str().unwrap()).unwrap(),
                r["count"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(by_street, expected_streets);
    let names_present = s["by_street"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["street_name"].as_str().is_some_and(|n| !n.is_empty()));
    assert!(names_present, "every street row has a name: {s:#}");
    let by_category: BTreeMap<String, u64> = s["by_category"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["count"].as_u64() != Some(0))
        .map(|r| {
            (
                r["category"].as_str().unwrap().to_owned(),
                r["count"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(by_category, expected_categories);
    app.stop().await;
}

/// Repeating a POST with the same Idempotency-Key returns the same clue id and counts once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idempotent_retries_count_once() {
    let app = spawn_app().await;
    let grids = load_grids();
    let p = interior_point(&grids[10]);
    let body = json!({"category": "food_safety", "lat": p.y(), "lon": p.x()});
    let mut ids = Vec::new();
    for _ in 0..3 {
        let r = app.post_clue(&body, "same-key").await;
        assert_eq!(r.status(), 202);
        let v: Value = r.json().await.unwrap();
        ids.push(v["clue_id"].as_str().unwrap().to_owned());
    }
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "{ids:?}");
    let other = app.post_clue(&body, "another-key").await;
    assert_eq!(other.status(), 202);
    let s = app
        .summary_when(Duration::from_secs(60), |s| s["total"].as_u64() == Some(2))
        .await;
    assert_eq!(s["total"].as_u64(), Some(2), "{s:#}");
    // Once nothing is in flight any more, a late duplicate would have been counted.
    app.settled().await;
    assert_eq!(app.summary().await["total"].as_u64(), Some(2));
    app.stop().await;
}

/// Reports of one problem by different riders get random clue ids, so they arrive through
/// different partitions of the commands topic (ten ids all in one of 6 partitions: odds of one
/// in ten million): the dedupe stage still finds them all. Every report counts; only the first
/// is a case.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nearby_reports_from_any_partition_are_one_case() {
    let app = spawn_app().await;
    let grids = load_grids();
    let p = interior_point(&grids[42]);
    // ~1 m steps around one point of one grid: well within the 50 m radius, one street.
    let metre = 1.0 / 111_195.0;
    for i in 0..10 {
        let (dlat, dlon) = (f64::from(i % 3) * metre, f64::from(i / 3) * metre);
        let r = app
            .post_clue(
                &json!({"category": "garbage_pile", "lat": p.y() + dlat, "lon": p.x() + dlon}),
                &format!("rider-{i}"),
            )
            .await;
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    }
    // Another category at the same spot is a case of its own; its text and photos reach the
    // reporter's view of it.
    let photos = [
        "https://img.example/stall-1.jpg",
        "https://img.example/stall-2.jpg",
    ];
    let r = app
        .post_clue(
            &json!({"category": "food_safety", "lat": p.y(), "lon": p.x(),
                    "description": "无证摊点", "photos": photos}),
            "other-category",
        )
        .await;
    assert_eq!(r.status(), 202);
    let food: Value = r.json().await.unwrap();
    let food_id = food["clue_id"].as_str().unwrap().to_owned();
    let s = app
        .summary_when(Duration::from_secs(60), |s| s["total"].as_u64() == Some(11))
        .await;
    assert_eq!(s["total"].as_u64(), Some(11), "{s:#}");
    assert_eq!(s["cases"].as_u64(), Some(2), "{s:#}");
    let view = app.clue_view(&food_id).await;
    assert_eq!(view["status"], "reported", "{view:#}");
    assert_eq!(view["duplicate_of"], Value::Null);
    assert_eq!(view["photos"], json!(photos));
    assert_eq!(view["history"][0]["detail"], "无证摊点");
    app.stop().await;
}
