//! Re-projection of a range of the events topic (`gridclue-sink replay`).
//!
//! A replay reads the chosen partitions and offsets without joining the sink's consumer group
//! (it commits nothing and does not disturb the live sink) and sends every fact through the same
//! fold-and-insert path as the live sink. Facts ClickHouse already holds are recognised by
//! their identity `(clue_id, seq)` and skipped; facts it lacks (a table restored from an older
//! backup, a fact lost to an operator mistake) are written. Either way no number changes for
//! facts that were already projected.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use tokio_util::sync::CancellationToken;

use crate::metrics::SinkMetrics;
use crate::pipeline::{Mode, Pipeline};
use crate::SinkConfig;

/// What to replay. `None` means "all partitions" / "from the earliest" / "to the latest".
#[derive(Clone, Debug, Default)]
pub struct ReplayRange {
    pub partitions: Option<Vec<i32>>,
    /// First offset to read (inclusive).
    pub from: Option<i64>,
    /// Last offset to read (inclusive).
    pub to: Option<i64>,
    /// Also read past the live consumer group's committed offsets. Those facts are the live
    /// sink's to write: replaying them while it runs could write a fact twice. Use this only
    /// with the live sink stopped (or to project into a database no live sink writes to).
    pub beyond_committed: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Per partition, the offsets read: `[start, end)`.
    pub ranges: Vec<(i32, i64, i64)>,
    /// Facts written (facts already stored are skipped and not counted).
    pub facts_inserted: u64,
}

/// The partitions of `topic` and their offset ranges, clamped to what the broker holds.
fn plan(cfg: &SinkConfig, range: &ReplayRange) -> anyhow::Result<Vec<(i32, i64, i64)>> {
    let consumer: BaseConsumer = gridclue_core::kafka::reader_config(&cfg.kafka()).create()?;
    let timeout = Duration::from_secs(10);
    let md = consumer.fetch_metadata(Some(&cfg.events_topic), timeout)?;
    let topic = md
        .topics()
        .iter()
        .find(|t| t.name() == cfg.events_topic)
        .ok_or_else(|| anyhow::anyhow!("topic {} not found", cfg.events_topic))?;
    if let Some(e) = topic.error() {
        anyhow::bail!("topic {}: {:?}", cfg.events_topic, e);
    }
    let mut ids: Vec<i32> = topic.partitions().iter().map(|p| p.id()).collect();
    if let Some(only) = &range.partitions {
        ids.retain(|id| only.contains(id));
    }
    let committed = if range.beyond_committed {
        HashMap::new()
    } else {
        committed_offsets(cfg, &ids, timeout)?
    };
    let mut out = Vec::new();
    for id in ids {
        let (low, high) = consumer.fetch_watermarks(&cfg.events_topic, id, timeout)?;
        let start = range.from.map_or(low, |f| f.max(low));
        let mut end = range.to.map_or(high, |t| (t + 1).min(high));
        if !range.beyond_committed {
            end = end.min(committed.get(&id).copied().unwrap_or(low));
        }
        out.push((id, start, end.max(start)));
    }
    out.sort_unstable();
    Ok(out)
}

/// The live group's committed offset per partition (partitions without one are absent).
fn committed_offsets(
    cfg: &SinkConfig,
    partitions: &[i32],
    timeout: Duration,
) -> anyhow::Result<HashMap<i32, i64>> {
    // A consumer in the live group that never subscribes only reads the group's offsets.
    let consumer: BaseConsumer = gridclue_core::kafka::reader_config(&cfg.kafka())
        .set("group.id", &cfg.group_id)
        .create()?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition(&cfg.events_topic, *p);
    }
    let committed = consumer.committed_offsets(tpl, timeout)?;
    Ok(committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            rdkafka::Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect())
}

/// Replays `range` of the events topic into ClickHouse (migrating the schema first).
pub async fn replay(config: SinkConfig, range: ReplayRange) -> anyhow::Result<ReplayReport> {
    let cfg = config.clone();
    let r = range.clone();
    let ranges = tokio::task::spawn_blocking(move || plan(&cfg, &r)).await??;
    let client = gridclue_core::ch::connect(&config.ch_settings()?).await?;
    crate::migrations::apply(&client).await?;
    let starts: HashMap<i32, i64> = ranges.iter().map(|(p, s, _)| (*p, *s)).collect();
    let ends: HashMap<i32, i64> = ranges.iter().map(|(p, _, e)| (*p, *e)).collect();
    let metrics = SinkMetrics::new();
    let cancel = CancellationToken::new();
    let mut pipeline = Pipeline::new(
        Arc::new(config),
        client,
        metrics,
        cancel,
        Mode::Replay { ends },
        Default::default(),
    )?;
    pipeline.start(&starts)?;
    pipeline.run().await?;
    Ok(ReplayReport {
        ranges,
        facts_inserted: pipeline.inserted,
    })
}
