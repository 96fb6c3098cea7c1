//! The hotspot detector service (`gridclue-hotspots`): two Kafka loops around the pure
//! [`gridclue_core::hotspot::Detector`].
//!
//! 1. **Sequencer** (group `hotspot_group_id` on `clues.events`): every new case (a report inside
//!    the district that is not a duplicate) becomes a `case` record on the one partition of
//!    `clues.hotspot-input`; when no case came for `hotspot_tick_ms` a `tick` record carries the
//!    wall clock (alerts close in quiet times too). Offsets are committed after the acks; a
//!    replayed case is the same clue id, which the detector folds once.
//! 2. **Detector** (group `detector_group_id` on `clues.hotspot-input`, one partition: one
//!    active detector): folds the records in offset order and sends every alert version to
//!    `clues.alerts` (key = alert id), awaits the acks, then commits. When it takes the partition
//!    it first folds the partition from its start up to where it resumes, sending nothing (the
//!    alerts before were sent by the previous owner): the fold is a pure function of the log, so
//!    it is the state the previous owner had, and any alert it sends again has the same id,
//!    version and content (the sink keys alerts by `(alert_id, version)`).
//!
//! Why a sequencer: the cases come from several partitions of `clues.events`, whose interleaving
//! differs from one read to the next; the detector's decisions depend on order, so they are
//! made over a log whose order is written down once.
//!
//! Reset logs: both loops keep their position only as their group's committed offset. A log
//! reset under it (a dev broker restarted empty, a topic re-created) would be read from its
//! start by librdkafka's offset reset, and the detector would rebuild from a log that is not
//! the one its alerts came from. So, on a partition's first records after each assignment, the
//! loop compares the committed offset with the log's high watermark (as enrich's dedupe stage
//! does, [`crate::log_reset::judge_committed`]); a partition whose offset is beyond the end is
//! held (paused, nothing of it consumed or committed; other partitions flow), logged once,
//! shown in `gridclue_hotspot_log_reset_detected{topic,partition}` and in `/readyz` (503),
//! until `gridclue-hotspots rebase` (every detector stopped) commits the new log's start and
//! the service restarts.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use gridclue_core::config::{self, KafkaExtra};
use gridclue_core::hotspot::{
    AlertFact, AlertState, Detector, HotspotInput, HotspotParams, Neighbours,
};
use gridclue_core::kafka::KafkaSettings;
use gridclue_core::service::Readiness;
use gridclue_core::telemetry::names;
use gridclue_core::wire::{self, EventEnvelope, Fact, Placement, SCHEMA_VERSION};
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::FutureProducer;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::kafka_loop::{
    next_batch, next_offsets, read_partitions, send_all, Epochs, LoopContext, Outgoing, Refusals,
    Source,
};
use crate::log_reset::{self, Committed, RebaseArgs, RebaseOutcome, Resume};

/// The detector service's configuration (defaults → `GRIDCLUE_CONFIG` file → `GRIDCLUE_*`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct HotspotConfig {
    pub listen: SocketAddr,
    #[serde(deserialize_with = "config::broker_list")]
    pub kafka_brokers: String,
    pub kafka_extra: KafkaExtra,
    pub events_topic: String,
    pub hotspot_input_topic: String,
    pub alerts_topic: String,
    pub dlq_topic: String,
    /// Consumer group of the sequencer (on `events_topic`).
    pub hotspot_group_id: String,
    /// Consumer group of the detector (on `hotspot_input_topic`).
    pub detector_group_id: String,
    pub data_dir: String,
    pub batch_max: usize,
    #[serde(deserialize_with = "config::positive_ms")]
    pub produce_timeout_ms: u64,
    /// How long folding the input log when the detector takes it over may take.
    #[serde(deserialize_with = "config::positive_ms")]
    pub restore_timeout_ms: u64,
    /// A tick is sent when no case came for this long.
    #[serde(deserialize_with = "config::positive_ms")]
    pub hotspot_tick_ms: u64,
    /// The detection method's parameters (ARCHITECTURE.md §8).
    pub hotspot_params: HotspotParams,
}

impl Default for HotspotConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7405)),
            kafka_brokers: "127.0.0.1:9092".into(),
            kafka_extra: KafkaExtra::default(),
            events_topic: wire::EVENTS_TOPIC.into(),
            hotspot_input_topic: wire::HOTSPOT_INPUT_TOPIC.into(),
            alerts_topic: wire::ALERTS_TOPIC.into(),
            dlq_topic: wire::DLQ_TOPIC.into(),
            hotspot_group_id: "gridclue-hotspots".into(),
            detector_group_id: "gridclue-hotspots-detector".into(),
            data_dir: "data".into(),
            batch_max: 1_000,
            produce_timeout_ms: 30_000,
            restore_timeout_ms: 60_000,
            hotspot_tick_ms: 60_000,
            hotspot_params: HotspotParams::default(),
        }
    }
}

impl HotspotConfig {
    pub fn kafka(&self) -> KafkaSettings {
        KafkaSettings::new(&self.kafka_brokers, self.kafka_extra.clone())
    }
}

#[derive(Clone)]
pub struct HotspotMetrics {
    pub registry: Registry,
    /// New alerts, by category.
    pub alerts: IntCounterVec,
    /// Alert versions sent, by state.
    pub versions: IntCounterVec,
    pub cases: IntCounter,
    pub open_alerts: IntGauge,
    pub dlq: IntCounterVec,
    /// 1 while a partition is held because its log was reset.
    pub log_reset_detected: IntGaugeVec,
}

impl HotspotMetrics {
    pub fn new() -> Self {
        let m = Self {
            registry: Registry::new(),
            alerts: IntCounterVec::new(
                Opts::new(
                    names::HOTSPOT_ALERTS_TOTAL,
                    "Hotspot alerts raised, by category",
                ),
                &["category"],
            )
            .expect("valid metric"),
            versions: IntCounterVec::new(
                Opts::new(
                    names::HOTSPOT_ALERT_VERSIONS_TOTAL,
                    "Alert versions sent (new, ongoing, closed)",
                ),
                &["state"],
            )
            .expect("valid metric"),
            cases: IntCounter::new(names::HOTSPOT_CASES_TOTAL, "Cases folded by the detector")
                .expect("valid metric"),
            open_alerts: IntGauge::new(names::HOTSPOT_OPEN_ALERTS, "Alerts open now")
                .expect("valid metric"),
            dlq: IntCounterVec::new(
                Opts::new(
                    names::HOTSPOT_DLQ_TOTAL,
                    "Records sent to the DLQ, by reason",
                ),
                &["reason"],
            )
            .expect("valid metric"),
            log_reset_detected: IntGaugeVec::new(
                Opts::new(
                    names::HOTSPOT_LOG_RESET_DETECTED,
                    "1 while a partition is not consumed because its Kafka log was reset (run \
                     gridclue-hotspots rebase)",
                ),
                &["topic", "partition"],
            )
            .expect("valid metric"),
        };
        for c in [
            Box::new(m.alerts.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.versions.clone()),
            Box::new(m.cases.clone()),
            Box::new(m.open_alerts.clone()),
            Box::new(m.dlq.clone()),
            Box::new(m.log_reset_detected.clone()),
        ] {
            m.registry.register(c).expect("metric registered once");
        }
        m
    }
}

impl Default for HotspotMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Which grids touch which, from the district map named by the config.
pub fn load_neighbours(data_dir: &str) -> anyhow::Result<Neighbours> {
    let path = Path::new(data_dir).join("district/grids.geojson");
    let district = gridclue_district::load_geojson(&path)
        .with_context(|| format!("loading {}", path.display()))?;
    let grids = district.grids.iter().map(|g| {
        let code = gridclue_core::GridCode::parse(g.grid_code.as_str())
            .expect("the district map's grid codes are valid");
        let vertices: Vec<[f64; 2]> = std::iter::once(g.polygon.exterior())
            .chain(g.polygon.interiors())
            .flat_map(|ring| ring.coords().map(|c| [c.x, c.y]))
            .collect();
        (code, vertices)
    });
    Ok(Neighbours::from_vertices(grids))
}

impl crate::binary::Binary for HotspotConfig {
    const NAME: &'static str = "gridclue-hotspots";
    const ABOUT: &'static str =
        "Flags emerging hotspots: clusters of same-category cases in a grid or neighbourhood";
    const REBASE_ABOUT: &'static str = "Give partitions whose Kafka log was reset the new log's \
        start as their position (the service holds them until then): clues.events (the \
        sequencer's) or clues.hotspot-input (the detector's). Stop every gridclue-hotspots first \
        (this joins their consumer group), start them again afterwards";

    fn listen(&self) -> std::net::SocketAddr {
        self.listen
    }

    async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        run(listener, self, shutdown).await
    }

    async fn rebase(&self, args: &RebaseArgs) -> anyhow::Result<Vec<RebaseOutcome>> {
        rebase(self, &args.topic, args.partitions(), args.force).await
    }
}

/// Runs both loops until `shutdown` resolves or one fails; `/healthz`, `/readyz`, `/metrics`.
pub async fn run(
    listener: TcpListener,
    config: HotspotConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    run_with_metrics(listener, config, shutdown, HotspotMetrics::new()).await
}

/// [`run`] with a caller-provided metrics registry (tests read it).
pub async fn run_with_metrics(
    listener: TcpListener,
    config: HotspotConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
    metrics: HotspotMetrics,
) -> anyhow::Result<()> {
    config.hotspot_params.validate()?;
    let neighbours = Arc::new(load_neighbours(&config.data_dir)?);
    tracing::info!(
        grids = neighbours.grid_count(),
        params = ?config.hotspot_params,
        "hotspot detector starting"
    );
    let ready = Readiness::default();
    let (stop_tx, stop_rx) = watch::channel(false);
    let http = {
        let app: axum::Router =
            gridclue_core::service::probe_routes(ready.clone(), metrics.registry.clone());
        let mut rx = stop_rx.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    rx.changed().await.ok();
                })
                .await
        })
    };
    tokio::spawn(async move {
        shutdown.await;
        stop_tx.send(true).ok();
    });
    let sequencer_ready = Arc::new(AtomicBool::new(false));
    let detector_ready = Arc::new(AtomicBool::new(false));
    let both_ready = {
        let (ready, a, b) = (
            ready.clone(),
            sequencer_ready.clone(),
            detector_ready.clone(),
        );
        tokio::spawn(async move {
            while !(a.load(Ordering::SeqCst) && b.load(Ordering::SeqCst)) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            ready.set_started(true);
        })
    };
    let mut loops = tokio::task::JoinSet::new();
    loops.spawn(sequence(
        config.clone(),
        metrics.clone(),
        ready.clone(),
        sequencer_ready,
        stop_rx.clone(),
    ));
    loops.spawn(detect(
        config,
        neighbours,
        metrics,
        ready.clone(),
        detector_ready,
        stop_rx,
    ));
    let result = async {
        while let Some(joined) = loops.join_next().await {
            joined.context("a hotspot loop panicked")??;
        }
        anyhow::Ok(())
    }
    .await;
    both_ready.abort();
    http.abort();
    tracing::info!("hotspot service stopped");
    result
}

fn producer(config: &HotspotConfig) -> anyhow::Result<FutureProducer> {
    gridclue_core::kafka::producer_config(&config.kafka(), config.produce_timeout_ms)
        .create()
        .context("creating a producer")
}

fn consumer(
    config: &HotspotConfig,
    group: &str,
    epochs: &Arc<Epochs>,
) -> anyhow::Result<StreamConsumer<LoopContext>> {
    gridclue_core::kafka::consumer_config(&config.kafka(), group)
        .create_with_context(LoopContext {
            epochs: epochs.clone(),
            owned: Arc::new(AtomicUsize::new(0)),
        })
        .context("creating a consumer")
}

/// The case an event is, if it is one: a report placed inside the district, not a duplicate.
pub fn case_of(event: &EventEnvelope) -> Option<HotspotInput> {
    let Fact::Reported(r) = &event.fact else {
        return None;
    };
    let Placement::Inside { grid_code, .. } = &r.placement else {
        return None;
    };
    if r.duplicate_of.is_some() {
        return None;
    }
    Some(HotspotInput::Case {
        v: SCHEMA_VERSION,
        clue_id: event.clue_id,
        at_ms: event.occurred_at_ms,
        grid_code: *grid_code,
        category: r.category.clone(),
    })
}

/// Holds the partitions of one loop's topic whose log was reset, judging each partition on its
/// first records after every assignment, before anything of them is consumed.
struct ResetGuard {
    kafka: KafkaSettings,
    group: String,
    topic: String,
    timeout: Duration,
    /// The epoch each partition was last judged (and found sound) in.
    judged: HashMap<i32, u64>,
    refusals: Refusals,
}

impl ResetGuard {
    fn new(
        config: &HotspotConfig,
        group: &str,
        topic: &str,
        metrics: &HotspotMetrics,
        readiness: &Readiness,
    ) -> Self {
        Self {
            kafka: config.kafka(),
            group: group.to_owned(),
            topic: topic.to_owned(),
            timeout: Duration::from_millis(config.restore_timeout_ms),
            judged: HashMap::new(),
            refusals: Refusals::new(topic, metrics.log_reset_detected.clone(), readiness.clone()),
        }
    }

    /// Drops the records of held partitions from `batch`, after judging the partitions not
    /// judged since they were (re)assigned.
    async fn admit(
        &mut self,
        batch: &mut Vec<OwnedMessage>,
        epochs: &Epochs,
        consumer: &StreamConsumer<LoopContext>,
    ) -> anyhow::Result<()> {
        self.refusals.forget_revoked(epochs);
        batch.retain(|m| !self.refusals.contains(m.partition()));
        let mut unjudged: Vec<i32> = batch
            .iter()
            .map(|m| m.partition())
            .filter(|p| self.judged.get(p) != Some(&epochs.get(*p)))
            .collect();
        unjudged.sort_unstable();
        unjudged.dedup();
        if unjudged.is_empty() {
            return Ok(());
        }
        let (kafka, group, topic, timeout) = (
            self.kafka.clone(),
            self.group.clone(),
            self.topic.clone(),
            self.timeout,
        );
        let parts = unjudged.clone();
        let positions = tokio::task::spawn_blocking(move || {
            log_reset::positions(&kafka, &group, &topic, &parts, timeout)
        })
        .await??;
        for p in unjudged {
            let (committed, wm) = positions.get(&p).cloned().unwrap_or_default();
            let epoch = epochs.get(p);
            match log_reset::judge_committed(&self.topic, &self.group, p, &committed, wm, HOTSPOTS)
            {
                Some(reset) => self.refusals.refuse(consumer, p, epoch, vec![reset]),
                None => {
                    self.judged.insert(p, epoch);
                }
            }
        }
        batch.retain(|m| !self.refusals.contains(m.partition()));
        Ok(())
    }
}

/// The program that rebases the hotspot service's partitions.
pub const HOTSPOTS: &str = "gridclue-hotspots";

/// Gives the reset partitions of `topic` (`clues.events`: the sequencer's, or
/// `clues.hotspot-input`: the detector's) their new log's start as their group's position;
/// `partitions` `None` means every partition found reset, `force` rebases named partitions
/// that do not look reset. Every `gridclue-hotspots` must be stopped (the command joins the
/// group to commit); start them again afterwards. The detector then rebuilds from the new
/// input log alone: alerts and history folded from the old one are not part of it.
pub async fn rebase(
    config: &HotspotConfig,
    topic: &str,
    partitions: Option<Vec<i32>>,
    force: bool,
) -> anyhow::Result<Vec<RebaseOutcome>> {
    let group = if topic == config.events_topic {
        config.hotspot_group_id.clone()
    } else if topic == config.hotspot_input_topic {
        config.detector_group_id.clone()
    } else {
        anyhow::bail!(
            "{topic} is neither {} nor {}",
            config.events_topic,
            config.hotspot_input_topic
        );
    };
    let (kafka, topic) = (config.kafka(), topic.to_owned());
    let timeout = Duration::from_millis(config.restore_timeout_ms.max(30_000));
    tokio::task::spawn_blocking(move || {
        let mut outcomes = Vec::new();
        log_reset::commit_as_sole_member(&kafka, &group, &topic, timeout, |committed| {
            let mut ids: Vec<i32> = committed.keys().copied().collect();
            ids.sort_unstable();
            if let Some(only) = &partitions {
                for p in only {
                    anyhow::ensure!(ids.contains(p), "{topic} has no partition {p}");
                }
                ids.retain(|p| only.contains(p));
            }
            let probe: rdkafka::consumer::BaseConsumer =
                gridclue_core::kafka::client_config(&kafka).create()?;
            let mut commits = Vec::new();
            for p in ids {
                let before = committed.get(&p).cloned().unwrap_or_default();
                let wm = probe.fetch_watermarks(&topic, p, timeout)?;
                let reset = log_reset::judge_committed(&topic, &group, p, &before, wm, HOTSPOTS);
                if reset.is_none() && !force {
                    if partitions.is_some() {
                        outcomes.push(RebaseOutcome::NotReset { partition: p });
                    }
                    continue;
                }
                commits.push((p, wm.0, None));
                outcomes.push(RebaseOutcome::Rebased {
                    partition: p,
                    group: group.clone(),
                    before,
                    after: Committed {
                        offset: Some(wm.0),
                        note: Default::default(),
                    },
                    resume: Resume::FromStart,
                    resets: reset.into_iter().collect(),
                });
            }
            Ok(commits)
        })?;
        Ok(outcomes)
    })
    .await?
}

async fn sequence(
    config: HotspotConfig,
    metrics: HotspotMetrics,
    readiness: Readiness,
    ready: Arc<AtomicBool>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let epochs = Arc::new(Epochs::default());
    let consumer = consumer(&config, &config.hotspot_group_id, &epochs)?;
    let mut guard = ResetGuard::new(
        &config,
        &config.hotspot_group_id,
        &config.events_topic,
        &metrics,
        &readiness,
    );
    let producer = producer(&config)?;
    consumer.subscribe(&[config.events_topic.as_str()])?;
    ready.store(true, Ordering::SeqCst);
    tracing::info!(topic = %config.events_topic, "hotspot sequencer consuming");
    let tick = Duration::from_millis(config.hotspot_tick_ms);
    let mut last_sent = Instant::now();
    loop {
        let Some(mut batch) = next_batch(
            &consumer,
            &epochs,
            config.batch_max,
            Some(tick),
            &mut shutdown,
        )
        .await?
        else {
            break;
        };
        guard.admit(&mut batch, &epochs, &consumer).await?;
        let mut out = Vec::new();
        for m in &batch {
            match EventEnvelope::decode(m.payload().unwrap_or_default()) {
                Ok(event) => {
                    if let Some(case) = case_of(&event) {
                        let key = event.clue_id.to_string();
                        out.push(input_record(&config, Some(key), case.encode()));
                    }
                }
                Err(e) => {
                    let reason = e.dlq_reason();
                    metrics.dlq.with_label_values(&[reason.as_str()]).inc();
                    let record = Source::of(m).dlq_record("hotspots", reason, e.to_string());
                    out.push(Outgoing::dlq(&config.dlq_topic, &record));
                }
            }
        }
        if out.is_empty() && last_sent.elapsed() >= tick {
            let tick = HotspotInput::Tick {
                v: SCHEMA_VERSION,
                at_ms: wire::now_ms(),
            };
            out.push(input_record(&config, None, tick.encode()));
        }
        if !out.is_empty() {
            send_all(&producer, &out).await?;
            last_sent = Instant::now();
        }
        if !batch.is_empty() {
            if let Err(e) = consumer.commit(&next_offsets(&batch, |_| None)?, CommitMode::Async) {
                // The next owner forwards some cases again: the detector folds each once.
                tracing::warn!(error = %e, "committing sequencer offsets failed");
            }
        }
    }
    tracing::info!("hotspot sequencer stopped");
    Ok(())
}

fn input_record(config: &HotspotConfig, key: Option<String>, payload: Vec<u8>) -> Outgoing {
    Outgoing {
        topic: config.hotspot_input_topic.clone(),
        partition: Some(0),
        key,
        payload,
    }
}

/// The detector's state for the input partition it owns.
struct Held {
    epoch: u64,
    next_offset: i64,
    detector: Detector,
}

async fn detect(
    config: HotspotConfig,
    neighbours: Arc<Neighbours>,
    metrics: HotspotMetrics,
    readiness: Readiness,
    ready: Arc<AtomicBool>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let epochs = Arc::new(Epochs::default());
    let consumer = consumer(&config, &config.detector_group_id, &epochs)?;
    let mut guard = ResetGuard::new(
        &config,
        &config.detector_group_id,
        &config.hotspot_input_topic,
        &metrics,
        &readiness,
    );
    let producer = producer(&config)?;
    consumer.subscribe(&[config.hotspot_input_topic.as_str()])?;
    ready.store(true, Ordering::SeqCst);
    tracing::info!(topic = %config.hotspot_input_topic, "hotspot detector consuming");
    let mut held: Option<Held> = None;
    loop {
        let Some(batch) =
            next_batch(&consumer, &epochs, config.batch_max, None, &mut shutdown).await?
        else {
            break;
        };
        let mut batch: Vec<OwnedMessage> =
            batch.into_iter().filter(|m| m.partition() == 0).collect();
        guard.admit(&mut batch, &epochs, &consumer).await?;
        let Some(first) = batch.first() else {
            continue;
        };
        let epoch = epochs.get(0);
        let keep = held
            .as_ref()
            .is_some_and(|h| h.epoch == epoch || h.next_offset == first.offset());
        if !keep {
            held = Some(rebuild(&config, &neighbours, epoch, first.offset()).await?);
        }
        let h = held.as_mut().expect("held state");
        h.epoch = epoch;
        let mut out = Vec::new();
        for m in &batch {
            if m.offset() < h.next_offset {
                continue;
            }
            h.next_offset = m.offset() + 1;
            let input = match HotspotInput::decode(m.payload().unwrap_or_default()) {
                Ok(i) => i,
                Err(e) => {
                    let reason = e.dlq_reason();
                    metrics.dlq.with_label_values(&[reason.as_str()]).inc();
                    let record = Source::of(m).dlq_record("hotspots", reason, e.to_string());
                    out.push(Outgoing::dlq(&config.dlq_topic, &record));
                    continue;
                }
            };
            if matches!(input, HotspotInput::Case { .. }) {
                metrics.cases.inc();
            }
            for alert in h.detector.fold(&input) {
                out.push(alert_record(&config, &alert, &metrics));
            }
        }
        send_all(&producer, &out).await?;
        metrics.open_alerts.set(h.detector.open_alerts() as i64);
        if let Err(e) = consumer.commit(&next_offsets(&batch, |_| None)?, CommitMode::Async) {
            // The next owner sends some alert versions again: same ids, versions and content.
            tracing::warn!(error = %e, "committing detector offsets failed");
        }
    }
    tracing::info!("hotspot detector stopped");
    Ok(())
}

fn alert_record(config: &HotspotConfig, alert: &AlertFact, metrics: &HotspotMetrics) -> Outgoing {
    if alert.state == AlertState::New {
        metrics
            .alerts
            .with_label_values(&[alert.category.as_str()])
            .inc();
        tracing::info!(
            alert_id = %alert.alert_id,
            place = alert.place_kind.as_str(),
            grid = %alert.grid_code,
            category = %alert.category.as_str(),
            observed = alert.observed,
            expected = alert.expected,
            recurrence_days = alert.recurrence_days,
            "hotspot alert raised"
        );
    }
    metrics
        .versions
        .with_label_values(&[alert.state.as_str()])
        .inc();
    Outgoing {
        topic: config.alerts_topic.clone(),
        partition: None,
        key: Some(alert.alert_id.to_string()),
        payload: alert.encode(),
    }
}

/// The detector as it was after folding the input partition up to `resume_at` (exclusive).
async fn rebuild(
    config: &HotspotConfig,
    neighbours: &Arc<Neighbours>,
    epoch: u64,
    resume_at: i64,
) -> anyhow::Result<Held> {
    let t0 = Instant::now();
    let kafka = config.kafka();
    let topic = config.hotspot_input_topic.clone();
    let timeout = Duration::from_millis(config.restore_timeout_ms);
    let records = tokio::task::spawn_blocking(move || {
        let mut records: HashMap<i64, Vec<u8>> = HashMap::new();
        read_partitions(
            &kafka,
            &topic,
            "gridclue-hotspots-rebuild",
            &[(0, Some(resume_at))],
            timeout,
            |m| {
                records.insert(m.offset(), m.payload().unwrap_or_default().to_vec());
            },
        )?;
        anyhow::Ok(records)
    })
    .await??;
    let mut offsets: Vec<&i64> = records.keys().collect();
    offsets.sort_unstable();
    let mut detector = Detector::new(config.hotspot_params.clone(), neighbours.clone());
    for o in &offsets {
        // Undecodable records went to the DLQ when they were first seen.
        if let Ok(input) = HotspotInput::decode(&records[o]) {
            detector.fold(&input);
        }
    }
    tracing::info!(
        resume_at,
        folded = offsets.len(),
        open_alerts = detector.open_alerts(),
        elapsed_ms = t0.elapsed().as_millis() as u64,
        "hotspot detector rebuilt from its input log"
    );
    Ok(Held {
        epoch,
        next_offset: resume_at,
        detector,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_is_a_known_variable() {
        assert_eq!(
            config::unlisted_fields::<HotspotConfig>(),
            Vec::<String>::new()
        );
    }

    #[test]
    fn the_shipped_map_has_touching_grids() {
        let n = load_neighbours(concat!(env!("CARGO_MANIFEST_DIR"), "/../data")).unwrap();
        assert_eq!(n.grid_count(), 1000);
        let g = gridclue_district::load_geojson(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../data/district/grids.geojson"
        ))
        .unwrap()
        .grids[0]
            .grid_code
            .as_str()
            .to_owned();
        let touching = n.touching(&gridclue_core::GridCode::parse(&g).unwrap());
        assert!((2..=20).contains(&touching.len()), "{touching:?}");
    }
}
