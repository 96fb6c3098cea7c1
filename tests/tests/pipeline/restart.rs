//! The dev stack across a restart (`make down` / `make up`): the journaled broker and the
//! services stopped and started again on the same ClickHouse database. Stored counts stay, new
//! clues are counted, and a clue reported before the restart goes on through its lifecycle.

use std::time::{Duration, Instant};

use gridclue_core::ch::ChSettings;
use gridclue_core::kafka::KafkaSettings;
use gridclue_core::telemetry::names;
use gridclue_core::wire::{
    Actor, ActorKind, Command, CommandEnvelope, Lifecycle, COMMANDS_TOPIC, SCHEMA_VERSION,
};
use gridclue_core::{ClueId, CommandId};
use gridclue_district::Grid;
use gridclue_tests::{clickhouse_url, scratch, Broker};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{json, Value};

use crate::app::{spawn_app_on, TestApp};
use crate::geometry::{interior_point, load_grids};

/// The dev broker journals the committed offsets of the services' groups by default.
#[test]
fn the_dev_broker_journals_the_services_groups() {
    let enrich = gridclue_enrich::EnrichConfig::default();
    let sink = gridclue_sink::SinkConfig::default();
    let hotspots = gridclue_enrich::hotspots::HotspotConfig::default();
    let mut services = vec![
        enrich.group_id,
        enrich.dedupe_group_id,
        hotspots.hotspot_group_id,
        hotspots.detector_group_id,
        sink.group_id,
        sink.alerts_group_id,
    ];
    services.sort();
    let mut journaled: Vec<String> = gridclue_devstack::SERVICE_GROUPS
        .iter()
        .map(|g| g.to_string())
        .collect();
    journaled.sort();
    assert_eq!(journaled, services);
}

/// Posts one clue in each of `grids` and returns their ids.
async fn post_clues(app: &TestApp, grids: &[&Grid], key_prefix: &str) -> Vec<String> {
    let categories = [
        "manhole_cover",
        "garbage_pile",
        "food_safety",
        "street_light",
    ];
    let mut ids = Vec::new();
    for (i, g) in grids.iter().enumerate() {
        let p = interior_point(g);
        let body =
            json!({"category": categories[i % categories.len()], "lat": p.y(), "lon": p.x()});
        let r = app.post_clue(&body, &format!("{key_prefix}-{i}")).await;
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
        let v: Value = r.json().await.unwrap();
        ids.push(v["clue_id"].as_str().unwrap().to_owned());
    }
    ids
}

/// Waits until the summary's total is `total`; returns the summary.
async fn summary_total(app: &TestApp, total: u64) -> Value {
    let s = app
        .summary_when(Duration::from_secs(60), |s| {
            s["total"].as_u64() == Some(total)
        })
        .await;
    assert_eq!(s["total"].as_u64(), Some(total), "{s:#}");
    s
}

/// One value of a Prometheus counter with the given labels on the sink's `/metrics` page (0 when
/// the series does not exist yet).
async fn sink_counter(app: &TestApp, series: &str) -> f64 {
    let text = app
        .http
        .get(format!("{}/metrics", app.sink_url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Sends a clue's lifecycle commands the way the transition API will: to clues.commands, keyed
/// by clue id, acknowledged by all replicas.
async fn send_commands(bootstrap: &str, clue: &str, commands: Vec<Command>) {
    let producer: FutureProducer =
        gridclue_core::kafka::producer_config(&KafkaSettings::dev_broker(bootstrap), 10_000)
            .create()
            .unwrap();
    let clue_id: ClueId = clue.parse().unwrap();
    let now = gridclue_core::wire::now_ms();
    for (i, command) in commands.into_iter().enumerate() {
        let envelope = CommandEnvelope {
            v: SCHEMA_VERSION,
            command_id: CommandId::new_random(),
            clue_id,
            issued_at_ms: now + i as u64,
            actor: Actor {
                kind: ActorKind::Staff,
                id: "street-office-test".into(),
                group: None,
                scope: None,
            },
            command,
        };
        let payload = envelope.encode();
        producer
            .send(
                FutureRecord::to(COMMANDS_TOPIC).key(clue).payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("command acknowledged");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_stack_keeps_its_counts_counts_new_clues_and_closes_old_ones() {
    const BEFORE: usize = 24;
    const AFTER: usize = 17;
    let journal = scratch("journal");
    let grids = load_grids();
    // one clue per grid, grids spread over the district: no two clues are near each other
    let step = grids.len() / (BEFORE + AFTER);
    let spread: Vec<&Grid> = grids.iter().step_by(step).take(BEFORE + AFTER).collect();

    let app = spawn_app_on(Broker::start_journaled(journal.path())).await;
    let before = post_clues(&app, &spread[..BEFORE], "before").await;
    summary_total(&app, BEFORE as u64).await;
    let target = before[0].clone();
    let view = app.clue_view(&target).await;
    assert_eq!(view["status"], "reported", "{view:#}");

    // make down: services first, then the broker (its journal catches up and flushes)
    let (stopped, broker) = app.stop_services().await;
    let journaled = broker.shutdown().expect("a journaled broker");
    assert!(journaled.lagging.is_empty(), "{:?}", journaled.lagging);
    assert!(journaled.records as usize >= BEFORE, "{journaled:?}");

    // make up: a new broker from the same journal, new services on the same database
    let broker = Broker::start_journaled(journal.path());
    let restored = broker.restored().expect("journaled").clone();
    assert_eq!(restored.records, journaled.records);
    assert_eq!(restored.end_offsets, journaled.end_offsets);
    assert_eq!(restored.gap_fillers, 0);
    assert_eq!(restored.clamped_offsets, 0);
    assert!(restored.committed_offsets > 0, "{restored:?}");
    let bootstrap = broker.bootstrap.clone();
    let app = stopped.restart(broker).await;
    assert_eq!(app.summary().await["total"].as_u64(), Some(BEFORE as u64));

    let after = post_clues(&app, &spread[BEFORE..], "after").await;
    assert_eq!(after.len(), AFTER);
    summary_total(&app, (BEFORE + AFTER) as u64).await;

    // The pre-restart clue through its lifecycle: enrich restored its state from clues.state.
    send_commands(
        &bootstrap,
        &target,
        vec![
            Command::Lifecycle(Lifecycle::Accept),
            Command::Lifecycle(Lifecycle::Dispatch {
                department: "urban_management".parse().unwrap(),
            }),
            Command::Lifecycle(Lifecycle::Start),
            Command::Lifecycle(Lifecycle::Handle {
                note: "repaired".into(),
                photos: Vec::new(),
            }),
            Command::Lifecycle(Lifecycle::VerifyOk),
        ],
    )
    .await;
    let ch = gridclue_core::ch::connect(&ChSettings {
        url: clickhouse_url(),
        database: app.database.clone(),
        user: "default".into(),
        password: Default::default(),
    })
    .await
    .expect("ClickHouse");
    // (the sink writes a batch's facts and the clues' states one table after the other)
    let deadline = Instant::now() + Duration::from_secs(60);
    let (status, facts) = loop {
        let status = ch
            .query("SELECT status FROM clues FINAL WHERE toString(clue_id) = ?")
            .bind(&target)
            .fetch_optional::<String>()
            .await
            .expect("clue status");
        let facts: Vec<(u32, String)> = ch
            .query(
                "SELECT seq, fact_type FROM clue_events FINAL WHERE toString(clue_id) = ? ORDER BY seq",
            )
            .bind(&target)
            .fetch_all()
            .await
            .expect("facts of the clue");
        let done = status.as_deref() == Some("closed") && facts.len() == 6;
        if done || Instant::now() > deadline {
            break (status, facts);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status.as_deref(), Some("closed"));
    let names: Vec<&str> = facts.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(
        names,
        [
            "reported",
            "accepted",
            "dispatched",
            "started",
            "handled",
            "verified"
        ]
    );
    assert!(
        facts
            .iter()
            .enumerate()
            .all(|(i, (seq, _))| *seq as usize == i),
        "{facts:?}"
    );
    let view = app.clue_view(&target).await;
    assert_eq!(view["status"], "closed", "{view:#}");

    // nothing was taken for already stored, and the counts did not move
    let resumed = sink_counter(
        &app,
        &format!("{}{{why=\"resumed\"}}", names::SINK_SKIPPED_TOTAL),
    )
    .await;
    assert_eq!(resumed, 0.0);
    let s = app.summary().await;
    assert_eq!(s["total"].as_u64(), Some((BEFORE + AFTER) as u64), "{s:#}");
    app.stop().await;
}
