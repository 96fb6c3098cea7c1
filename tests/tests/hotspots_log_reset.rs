//! The hotspot service against librdkafka's mock cluster, with logs reset under its groups'
//! positions: the sequencer's group committed beyond the end of `clues.events` partition 1, the
//! detector's beyond the end of `clues.hotspot-input`. Both partitions are held (gauge,
//! `/readyz` 503) while events partition 0 flows; nothing of the held ones is forwarded, folded
//! or committed; after `rebase` (service stopped) every case is forwarded and folded once.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use gridclue_core::category::{CategoryCode, Urgency};
use gridclue_core::hotspot::HotspotInput;
use gridclue_core::kafka::KafkaSettings;
use gridclue_core::wire::{
    Actor, ActorKind, Channel, EventEnvelope, Fact, Placement, Reported, SCHEMA_VERSION,
};
use gridclue_core::{ClueId, CommandId, GeoPoint, GridCode, Status};
use gridclue_enrich::hotspots::{self, HotspotConfig, HotspotMetrics};
use gridclue_enrich::log_reset::{self, RebaseOutcome, ResetKind};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::sync::watch;

const EVENTS: &str = "clues.events";

fn data_dir() -> String {
    gridclue_tests::data_dir().display().to_string()
}

/// The first grid of the shipped district map.
fn first_grid() -> GridCode {
    gridclue_tests::shipped_map().grids[0].grid_code
}
const INPUT: &str = "clues.hotspot-input";

/// A report placed inside the district, in `grid`.
fn report(grid: GridCode, at_ms: u64) -> EventEnvelope {
    let clue = ClueId::new_random();
    EventEnvelope {
        v: SCHEMA_VERSION,
        clue_id: clue,
        seq: 0,
        command_id: CommandId::for_report(clue),
        occurred_at_ms: at_ms,
        processed_at_ms: at_ms,
        ingested_at_ms: None,
        status: Status::Reported,
        actor: Some(Actor {
            kind: ActorKind::Reporter,
            id: "tok_rider".into(),
            group: None,
            scope: None,
        }),
        fact: Fact::Reported(Box::new(Reported {
            category: CategoryCode::parse("garbage_pile").unwrap(),
            location: GeoPoint::new(31.2, 121.5).unwrap(),
            placement: Placement::Inside {
                grid_code: grid,
                on_boundary: false,
            },
            map_version: "test".into(),
            department: "greening_city_appearance".parse().unwrap(),
            urgency: Urgency::Normal,
            deadline_ms: None,
            reporter_id: "tok_rider".into(),
            reporter_group: None,
            duplicate_of: None,
            description: String::new(),
            photos: vec![],
            channel: Channel::Api,
        })),
    }
}

fn committed(bootstrap: &str, group: &str, topic: &str, partition: i32) -> Option<i64> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    match c
        .committed_offsets(tpl, Duration::from_secs(5))
        .unwrap()
        .elements()[0]
        .offset()
    {
        Offset::Offset(o) => Some(o),
        _ => None,
    }
}

/// The clue ids of every case on the input topic.
fn forwarded(bootstrap: &str) -> Vec<ClueId> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "hotspot-reset-test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let (_, high) = c
        .fetch_watermarks(INPUT, 0, Duration::from_secs(5))
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(INPUT, 0, Offset::Beginning)
        .unwrap();
    c.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut read = 0;
    while read < high {
        assert!(Instant::now() < deadline, "reading {INPUT}");
        if let Some(m) = c.poll(Duration::from_millis(100)) {
            let m = m.unwrap();
            read = m.offset() + 1;
            if let Ok(HotspotInput::Case { clue_id, .. }) =
                HotspotInput::decode(m.payload().unwrap_or_default())
            {
                out.push(clue_id);
            }
        }
    }
    out
}

struct Service {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    metrics: HotspotMetrics,
    url: String,
}

impl Service {
    async fn start(config: &HotspotConfig) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, mut rx) = watch::channel(false);
        let metrics = HotspotMetrics::new();
        let task = tokio::spawn(hotspots::run_with_metrics(
            listener,
            config.clone(),
            async move {
                rx.changed().await.ok();
            },
            metrics.clone(),
        ));
        Self {
            stop,
            task,
            metrics,
            url,
        }
    }

    fn held(&self, topic: &str, partition: i32) -> i64 {
        self.metrics
            .log_reset_detected
            .with_label_values(&[topic, &partition.to_string()])
            .get()
    }

    async fn readyz(&self) -> (u16, String) {
        let r = reqwest::get(format!("{}/readyz", self.url)).await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn stop(self) {
        self.stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("the service stops")
            .unwrap()
            .unwrap();
    }
}

async fn wait_until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done().await {
        assert!(Instant::now() < deadline, "{what} within 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_logs_are_held_until_rebased_while_other_partitions_flow() {
    let mock = MockCluster::new(1).unwrap();
    // Two events partitions: one to hold, one that flows.
    for (topic, partitions) in [
        (EVENTS, 2),
        (INPUT, 1),
        ("clues.alerts", 1),
        ("clues.dlq", 1),
    ] {
        mock.create_topic(topic, partitions, 1).unwrap();
    }
    let bootstrap = mock.bootstrap_servers();
    let config = HotspotConfig {
        kafka_brokers: bootstrap.clone(),
        kafka_extra: gridclue_core::kafka::dev_broker_tuning(),
        data_dir: data_dir(),
        restore_timeout_ms: 20_000,
        // No ticks: the input log holds the forwarded cases only.
        hotspot_tick_ms: 3_600_000,
        ..HotspotConfig::default()
    };

    // The groups' positions are beyond the (empty) logs' ends, as after a broker restarted
    // empty under them.
    let (b, seq_group, det_group) = (
        bootstrap.clone(),
        config.hotspot_group_id.clone(),
        config.detector_group_id.clone(),
    );
    tokio::task::spawn_blocking(move || {
        let kafka = KafkaSettings::dev_broker(&b);
        let timeout = Duration::from_secs(60);
        log_reset::commit_as_sole_member(&kafka, &seq_group, EVENTS, timeout, |_| {
            Ok(vec![(1, 1000, None)])
        })
        .unwrap();
        log_reset::commit_as_sole_member(&kafka, &det_group, INPUT, timeout, |_| {
            Ok(vec![(0, 500, None)])
        })
        .unwrap();
    })
    .await
    .unwrap();

    // Three reports on each events partition.
    let grid = first_grid();
    let now = gridclue_core::wire::now_ms();
    let producer: FutureProducer =
        gridclue_core::kafka::producer_config(&KafkaSettings::dev_broker(&bootstrap), 30_000)
            .create()
            .unwrap();
    let mut on_partition: [HashSet<ClueId>; 2] = Default::default();
    for (i, partition) in [0, 1, 0, 1, 0, 1].into_iter().enumerate() {
        let e = report(grid, now - 3_600_000 + i as u64 * 60_000);
        on_partition[partition as usize].insert(e.clue_id);
        producer
            .send(
                FutureRecord::to(EVENTS)
                    .partition(partition)
                    .key(&e.clue_id.to_string())
                    .payload(&e.encode()),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }

    let service = Service::start(&config).await;
    let s = &service;
    wait_until("both reset partitions held", async || {
        s.held(EVENTS, 1) == 1 && s.held(INPUT, 0) == 1
    })
    .await;
    let (status, body) = service.readyz().await;
    assert_eq!(status, 503, "{body}");
    for part in [
        "log reset on clues.events partition 1",
        "log reset on clues.hotspot-input partition 0",
        "gridclue-hotspots rebase --topic clues.events --partition 1",
    ] {
        assert!(body.contains(part), "{part} in {body}");
    }
    assert_eq!(service.held(EVENTS, 0), 0);
    // Events partition 0 flows: its cases are forwarded (once the sequencer committed its end,
    // everything it forwards of it is on the input log) and nothing of partition 1 is.
    let b = bootstrap.clone();
    let sg = config.hotspot_group_id.clone();
    wait_until("events partition 0 forwarded", async || {
        let (b, sg) = (b.clone(), sg.clone());
        tokio::task::spawn_blocking(move || committed(&b, &sg, EVENTS, 0) == Some(3))
            .await
            .unwrap()
    })
    .await;
    let (b, sg, dg) = (
        bootstrap.clone(),
        config.hotspot_group_id.clone(),
        config.detector_group_id.clone(),
    );
    let (input, seq_at, det_at) = tokio::task::spawn_blocking(move || {
        (
            forwarded(&b),
            committed(&b, &sg, EVENTS, 1),
            committed(&b, &dg, INPUT, 0),
        )
    })
    .await
    .unwrap();
    assert_eq!(
        input.iter().copied().collect::<HashSet<_>>(),
        on_partition[0]
    );
    assert_eq!(input.len(), 3, "each case once");
    // The held partitions' positions are untouched, and the detector folded nothing.
    assert_eq!((seq_at, det_at), (Some(1000), Some(500)));
    assert_eq!(service.metrics.cases.get(), 0);
    service.stop().await;

    // Rebase (service stopped): both partitions get their new log's start; a named partition
    // that is not reset is left alone.
    let outcomes = hotspots::rebase(&config, EVENTS, Some(vec![0]), false)
        .await
        .unwrap();
    assert_eq!(outcomes, vec![RebaseOutcome::NotReset { partition: 0 }]);
    for (topic, partition) in [(EVENTS, 1), (INPUT, 0)] {
        let outcomes = hotspots::rebase(&config, topic, None, false).await.unwrap();
        assert_eq!(outcomes.len(), 1, "{outcomes:?}");
        let RebaseOutcome::Rebased {
            partition: p,
            after,
            resets,
            ..
        } = &outcomes[0]
        else {
            panic!("{outcomes:?}");
        };
        assert_eq!(*p, partition);
        assert_eq!(after.offset, Some(0));
        assert_eq!(resets.len(), 1);
        assert_eq!(resets[0].kind, ResetKind::CommittedBeyondEnd);
    }
    assert!(hotspots::rebase(&config, "clues.commands", None, false)
        .await
        .is_err());

    // Started again: ready, partition 1's cases forwarded, every case folded once.
    let service = Service::start(&config).await;
    let s = &service;
    wait_until("ready", async || s.readyz().await.0 == 200).await;
    wait_until("all six cases folded", async || s.metrics.cases.get() >= 6).await;
    let b = bootstrap.clone();
    let input = tokio::task::spawn_blocking(move || forwarded(&b))
        .await
        .unwrap();
    let all: HashSet<ClueId> = on_partition[0].union(&on_partition[1]).copied().collect();
    assert_eq!(input.iter().copied().collect::<HashSet<_>>(), all);
    assert_eq!(input.len(), 6, "each case once");
    assert_eq!(service.metrics.cases.get(), 6);
    assert_eq!((service.held(EVENTS, 1), service.held(INPUT, 0)), (0, 0));
    service.stop().await;
}
