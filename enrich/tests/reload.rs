//! The service as the stack runs it (`gridclue_enrich::run` on port 0, a mock cluster): the map
//! is reloaded without a restart through `POST /admin/reload-map`, the new version shows on
//! `gridclue_enrich_map_info` and on the next enriched facts, and a broken map is refused while
//! the old one stays in use.

mod common;

use std::time::Duration;

use common::*;
use gridclue_core::codes::ActorScope;
use gridclue_core::tokens::TokenKind;
use gridclue_core::wire::{EventEnvelope, Fact};
use gridclue_core::ClueId;
use gridclue_district::{generate, save_geojson, GenerateParams};
use gridclue_enrich::EnrichConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
/// The `gridclue_enrich_map_info` lines of the service's `/metrics`.
async fn map_info(http: &reqwest::Client, base: &str) -> Vec<String> {
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    metrics
        .lines()
        .filter(|l| l.starts_with("gridclue_enrich_map_info{"))
        .map(str::to_owned)
        .collect()
}

/// `POST /admin/reload-map`, with `token` as the bearer token when given.
async fn reload_map(http: &reqwest::Client, base: &str, token: Option<&str>) -> reqwest::Response {
    let mut request = http.post(format!("{base}/admin/reload-map"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

async fn report_and_read_version(
    producer: &FutureProducer,
    bootstrap: &str,
    clue: ClueId,
    at: u64,
    lat: f64,
    lon: f64,
) -> String {
    let cmd = envelope(clue, report("garbage_pile", lat, lon), at);
    producer
        .send(
            FutureRecord::to("clues.commands")
                .key(&clue.to_string())
                .payload(&cmd.encode()),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    let events = events_until(bootstrap, move |got| {
        got.iter()
            .filter_map(|x| EventEnvelope::decode(x).ok())
            .any(|e| e.clue_id == clue)
    })
    .await;
    let e = events
        .iter()
        .filter_map(|x| EventEnvelope::decode(x).ok())
        .find(|e| e.clue_id == clue)
        .expect("the report's fact");
    match e.fact {
        Fact::Reported(r) => r.map_version,
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_map_reloads_without_a_restart() {
    let (mock, bootstrap, producer) = kafka();
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path();
    std::fs::create_dir_all(dir.join("district")).unwrap();
    let data = std::path::PathBuf::from(data_dir());
    for f in ["categories.json", "calendar.json", "district/grids.geojson"] {
        std::fs::copy(data.join(f), dir.join(f)).unwrap();
    }
    // The admin endpoint takes a district token; a street token is refused.
    let tokens_file = dir.join("tokens.json");
    let mut tokens = gridclue_core::tokens::TokenFile::default();
    let (district, _) = tokens
        .issue(TokenKind::District, None, None, "district")
        .unwrap();
    let (street, _) = tokens
        .issue(
            TokenKind::Street,
            None,
            Some(ActorScope::parse("310101001").unwrap()),
            "street",
        )
        .unwrap();
    tokens.write(&tokens_file).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let config = EnrichConfig {
        tokens_file: tokens_file.display().to_string(),
        kafka_brokers: bootstrap.clone(),
        kafka_extra: gridclue_core::kafka::dev_broker_tuning(),
        data_dir: dir.display().to_string(),
        reload_on_sighup: false,
        ..EnrichConfig::default()
    };
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(gridclue_enrich::run(listener, config, async move {
        rx.await.ok();
    }));
    let http = reqwest::Client::new();
    wait_for("ready", Duration::from_secs(20), || async {
        let ready = http.get(format!("{base}/readyz")).send().await;
        ready.is_ok_and(|r| r.status().is_success())
    })
    .await;
    let p = processor();
    let old_version = p.index.map_version().to_owned();
    assert_eq!(
        map_info(&http, &base).await,
        vec![format!(
            "gridclue_enrich_map_info{{version=\"{old_version}\"}} 1"
        )]
    );
    let (lat, lon) = inside_point(&p, &mut Rng::new(1));
    let v = report_and_read_version(
        &producer,
        &bootstrap,
        ClueId::new_random(),
        MONDAY_9AM,
        lat,
        lon,
    )
    .await;
    assert_eq!(v, old_version);

    // A new map (generated around the same centre) replaces the file; reload it.
    let mut new_map = generate(&GenerateParams {
        grids: 400,
        seed: 99,
        map_version: Some("test-map-2".into()),
        ..GenerateParams::default()
    })
    .unwrap();
    new_map.map_version = "test-map-2".into();
    save_geojson(&new_map, dir.join("district/grids.geojson")).unwrap();
    let r = reload_map(&http, &base, None).await;
    assert_eq!(r.status(), 401, "no token");
    let r = reload_map(&http, &base, Some(&street)).await;
    assert_eq!(r.status(), 403, "a street token");
    assert_eq!(
        map_info(&http, &base).await,
        vec![format!(
            "gridclue_enrich_map_info{{version=\"{old_version}\"}} 1"
        )],
        "a refused request reloads nothing"
    );
    let r = reload_map(&http, &base, Some(&district)).await;
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["map_version"], "test-map-2");
    assert_eq!(
        map_info(&http, &base).await,
        vec!["gridclue_enrich_map_info{version=\"test-map-2\"} 1".to_owned()]
    );
    let v = report_and_read_version(
        &producer,
        &bootstrap,
        ClueId::new_random(),
        MONDAY_9AM + 1,
        31.2,
        121.5,
    )
    .await;
    assert_eq!(v, "test-map-2");

    // A broken file is refused with a problem document; the map in use stays.
    std::fs::write(
        dir.join("district/grids.geojson"),
        b"{\"type\":\"FeatureCollection\"",
    )
    .unwrap();
    let r = reload_map(&http, &base, Some(&district)).await;
    assert_eq!(r.status(), 422);
    let problem: serde_json::Value = r.json().await.unwrap();
    assert_eq!(problem["type"], "map_reload_failed");
    assert_eq!(
        map_info(&http, &base).await,
        vec!["gridclue_enrich_map_info{version=\"test-map-2\"} 1".to_owned()]
    );

    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    drop(mock);
}
