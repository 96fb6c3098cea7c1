//! Hotspot alerts end to end: clues posted through ingest, placed by enrich, turned into alerts
//! by the detector service, projected by the sink, read through `GET /v1/alerts` — and exactly
//! once when the detector restarts and folds its input again from the start (as after a crash
//! between sending alerts and committing its offsets).

use std::time::{Duration, Instant};

use gridclue_core::codes::GridCode;
use gridclue_core::hotspot::AlertFact;
use gridclue_core::kafka::KafkaSettings;
use gridclue_core::telemetry::names;
use gridclue_core::wire::{ALERTS_TOPIC, HOTSPOT_INPUT_TOPIC};
use gridclue_district::Grid;
use gridclue_enrich::hotspots::{HotspotConfig, HotspotMetrics};
use gridclue_tests::data_dir;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::app::TestApp;
use crate::geometry::{interior_point, load_grids};

struct Detector {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    metrics: HotspotMetrics,
}

async fn start_detector(bootstrap: &str, group: &str) -> Detector {
    let config = HotspotConfig {
        detector_group_id: group.to_owned(),
        kafka_brokers: bootstrap.to_owned(),
        kafka_extra: gridclue_core::kafka::dev_broker_tuning(),
        data_dir: data_dir().display().to_string(),
        hotspot_tick_ms: 500,
        ..Default::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (stop, mut rx) = watch::channel(false);
    let metrics = HotspotMetrics::new();
    let task = tokio::spawn(gridclue_enrich::hotspots::run_with_metrics(
        listener,
        config,
        async move {
            rx.changed().await.ok();
        },
        metrics.clone(),
    ));
    Detector {
        stop,
        task,
        metrics,
    }
}

impl Detector {
    async fn stop(self) {
        self.stop.send(true).ok();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("the detector stops within 30 s")
            .expect("no panic")
            .expect("stopped cleanly");
    }

    fn counter(&self, name: &str) -> u64 {
        self.metrics
            .registry
            .gather()
            .iter()
            .filter(|f| f.name() == name)
            .flat_map(|f| {
                f.get_metric()
                    .iter()
                    .map(|m| m.get_counter().value() as u64)
            })
            .sum()
    }
}

/// `GET /v1/alerts` (district) until `done` holds (60 s at most); the last answer.
async fn alerts_when(app: &TestApp, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = app
            .http
            .get(format!("{}/v1/alerts", app.dashboard_url))
            .bearer_auth(&app.district_token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        let rows = body["rows"].as_array().cloned().unwrap_or_default();
        if done(&rows) || Instant::now() > deadline {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn post(app: &TestApp, g: &Grid, key: &str) -> String {
    let p = interior_point(g);
    let body = json!({"category": "garbage_pile", "lat": p.y(), "lon": p.x()});
    let r = app.post_clue(&body, key).await;
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    let v: Value = r.json().await.unwrap();
    v["clue_id"].as_str().unwrap().to_owned()
}

/// Every record of a topic (all partitions), read from the start.
fn read_topic(bootstrap: &str, topic: &str, partitions: i32, expected: usize) -> Vec<Vec<u8>> {
    let consumer: BaseConsumer =
        gridclue_core::kafka::reader_config(&KafkaSettings::dev_broker(bootstrap))
            .set("group.id", "hotspot-test-reader")
            .create()
            .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while out.len() < expected && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            out.push(m.payload().unwrap_or_default().to_vec());
        }
    }
    // anything beyond `expected` that is already there
    while let Some(Ok(m)) = consumer.poll(Duration::from_millis(500)) {
        out.push(m.payload().unwrap_or_default().to_vec());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_raises_one_alert_that_updates_and_survives_a_detector_replay_exactly_once() {
    // GRIDCLUE_TEST_LOG=1 shows the services' logs (on stderr, not captured by the harness).
    if std::env::var_os("GRIDCLUE_TEST_LOG").is_some() {
        gridclue_core::telemetry::init_tracing("test");
    }
    let app = crate::app::spawn_app().await;
    let bootstrap = app.bootstrap().to_owned();
    let detector = start_detector(&bootstrap, "gridclue-hotspots-detector").await;

    // a grid and four grids touching it: five points hundreds of metres apart (no duplicates)
    let grids = load_grids();
    let neighbours =
        gridclue_enrich::hotspots::load_neighbours(&data_dir().display().to_string()).unwrap();
    let by_code = |c: &GridCode| grids.iter().find(|g| g.grid_code == *c).unwrap();
    let centre = &grids[grids.len() / 2];
    let touching: Vec<&Grid> = neighbours
        .touching(&centre.grid_code)
        .iter()
        .take(4)
        .map(by_code)
        .collect();
    assert_eq!(touching.len(), 4);

    let mut clues = Vec::new();
    for (i, g) in [centre, touching[0], touching[1]].into_iter().enumerate() {
        clues.push(post(&app, g, &format!("hot-{i}")).await);
    }
    let rows = alerts_when(&app, |r| !r.is_empty()).await;
    assert_eq!(rows.len(), 1, "{rows:#?}");
    let alert = &rows[0];
    let alert_id = alert["alert_id"].as_str().unwrap().to_owned();
    assert_eq!(alert["state"], "new");
    assert_eq!(alert["version"], 1);
    assert_eq!(alert["category"], "garbage_pile");
    assert_eq!(alert["observed"], 3);
    let mut got: Vec<String> = alert["clue_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    got.sort();
    let mut want = clues.clone();
    want.sort();
    assert_eq!(got, want);
    assert_eq!(detector.counter(names::HOTSPOT_ALERTS_TOTAL), 1);

    // the cluster goes on: the same alert, version 2, no new alert
    clues.push(post(&app, touching[2], "hot-3").await);
    let rows = alerts_when(&app, |r| r.first().is_some_and(|a| a["version"] == 2)).await;
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(rows[0]["alert_id"], alert_id.as_str());
    assert_eq!(rows[0]["state"], "ongoing");
    assert_eq!(rows[0]["observed"], 4);

    // The detector stops; the next one starts in a group that has committed nothing, as if
    // the first had crashed before committing anything: it folds its whole input again.
    detector.stop().await;
    let input = read_topic(&bootstrap, HOTSPOT_INPUT_TOPIC, 1, 4);
    let detector = start_detector(&bootstrap, "gridclue-hotspots-detector-replay").await;
    // it folds the input again (cases and ticks) and sends versions 1 and 2 again …
    let deadline = Instant::now() + Duration::from_secs(60);
    while detector.counter(names::HOTSPOT_ALERT_VERSIONS_TOTAL) < 2 {
        assert!(
            Instant::now() < deadline,
            "the restarted detector replayed nothing"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(input.len() >= 4, "{}", input.len());
    let sent = read_topic(&bootstrap, ALERTS_TOPIC, 6, 4);
    let facts: Vec<AlertFact> = sent.iter().map(|b| AlertFact::decode(b).unwrap()).collect();
    assert_eq!(facts.len(), 4, "{facts:#?}");
    for version in [1, 2] {
        let copies: Vec<&AlertFact> = facts.iter().filter(|f| f.version == version).collect();
        assert_eq!(copies.len(), 2, "{facts:#?}");
        assert_eq!(copies[0], copies[1], "a replayed version is the same fact");
        assert_eq!(copies[0].alert_id.to_string(), alert_id);
    }
    // … which ClickHouse holds twice and every answer counts once
    let ch = app.clickhouse().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rows: u64 = ch
            .query("SELECT count() FROM hotspot_alerts")
            .fetch_one()
            .await
            .unwrap();
        if rows == 4 {
            break;
        }
        assert!(Instant::now() < deadline, "{rows} alert rows stored");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rows = alerts_when(&app, |_| true).await;
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(rows[0]["version"], 2);
    assert_eq!(detector.counter(names::HOTSPOT_ALERTS_TOTAL), 1);

    // and the restored detector goes on with the same alert
    clues.push(post(&app, touching[3], "hot-4").await);
    let rows = alerts_when(&app, |r| r.first().is_some_and(|a| a["version"] == 3)).await;
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(rows[0]["alert_id"], alert_id.as_str());
    assert_eq!(rows[0]["observed"], 5);

    // a street office sees the alert only if it is its street's (the place's named grid's)
    let street = rows[0]["street_code"].as_str().unwrap().to_owned();
    let street = &street;
    let other = app.street_tokens.keys().find(|s| *s != street).unwrap();
    for (code, expected) in [(street, 1), (other, 0)] {
        let r = app
            .http
            .get(format!("{}/v1/alerts?state=ongoing", app.dashboard_url))
            .bearer_auth(&app.street_tokens[code])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["rows"].as_array().unwrap().len(), expected, "{body:#}");
    }
    detector.stop().await;
    app.stop().await;
}
