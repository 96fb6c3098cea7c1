//! Projects `clues.alerts` into `hotspot_alerts` (migration 0009): consume a batch, insert it,
//! commit its offsets once ClickHouse acknowledged the insert (at least once). Every row is an
//! alert version keyed by `(alert_id, version)` with the same content whoever writes it again,
//! and every read takes one row per key (`argMax` by version, `LIMIT 1 BY`), so a batch written
//! twice (a crash between insert and commit, a detector that sent a version again) changes no
//! answer: each alert version counts once.

use std::sync::Arc;
use std::time::Duration;

use clickhouse::Client;
use gridclue_core::codes::{CategoryCode, CommunityCode, GridCode, StreetCode};
use gridclue_core::hotspot::AlertFact;
use gridclue_core::wire::DlqRecord;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::metrics::SinkMetrics;
use crate::SinkConfig;

pub const TABLE: &str = "hotspot_alerts";

#[derive(Clone, Debug, PartialEq, clickhouse::Row, Serialize, Deserialize)]
pub struct AlertRow {
    #[serde(with = "clickhouse::serde::uuid")]
    pub alert_id: uuid::Uuid,
    pub version: u32,
    pub state: String,
    pub place_kind: String,
    pub grid_code: GridCode,
    pub grids: Vec<GridCode>,
    pub community_code: CommunityCode,
    pub street_code: StreetCode,
    pub category: CategoryCode,
    pub window_start_ms: u64,
    pub window_end_ms: u64,
    pub window_days: u32,
    pub observed: u32,
    pub expected: f64,
    pub recurrence_days: f64,
    pub clue_ids: Vec<String>,
    pub trigger_clue_id: String,
    pub at_ms: u64,
    pub kafka_partition: i32,
    pub kafka_offset: i64,
}

impl AlertRow {
    pub fn of(a: &AlertFact, partition: i32, offset: i64) -> Self {
        Self {
            alert_id: a.alert_id,
            version: a.version,
            state: a.state.as_str().to_owned(),
            place_kind: a.place_kind.as_str().to_owned(),
            grid_code: a.grid_code,
            grids: a.grids.clone(),
            community_code: a.community_code,
            street_code: a.street_code,
            category: a.category.clone(),
            window_start_ms: a.window_start_ms,
            window_end_ms: a.window_end_ms,
            window_days: a.window_days,
            observed: a.observed,
            expected: a.expected,
            recurrence_days: a.recurrence_days,
            clue_ids: a.clue_ids.iter().map(|c| c.to_string()).collect(),
            trigger_clue_id: a.trigger_clue_id.map(|c| c.to_string()).unwrap_or_default(),
            at_ms: a.at_ms,
            kafka_partition: partition,
            kafka_offset: offset,
        }
    }
}

/// Runs until `cancel`: the alerts topic into ClickHouse.
pub(crate) async fn project(
    config: Arc<SinkConfig>,
    client: Client,
    metrics: SinkMetrics,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let consumer: StreamConsumer =
        gridclue_core::kafka::consumer_config(&config.kafka(), &config.alerts_group_id).create()?;
    consumer.subscribe(&[config.alerts_topic.as_str()])?;
    let dlq: FutureProducer =
        gridclue_core::kafka::producer_config(&config.kafka(), config.dlq_timeout_ms).create()?;
    tracing::info!(topic = %config.alerts_topic, "projecting alerts");
    loop {
        let first = tokio::select! {
            _ = cancel.cancelled() => break,
            m = consumer.recv() => m,
        };
        let first = match first {
            Ok(m) => m.detach(),
            Err(e) => {
                tracing::warn!(error = %e, "alerts consumer error");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let mut batch = vec![first];
        let linger = tokio::time::sleep(Duration::from_millis(config.batch_linger_ms));
        tokio::pin!(linger);
        while batch.len() < config.batch_max_rows {
            tokio::select! {
                _ = &mut linger => break,
                m = consumer.recv() => match m {
                    Ok(m) => batch.push(m.detach()),
                    Err(e) => { tracing::warn!(error = %e, "alerts consumer error"); break; }
                },
            }
        }
        let mut rows = Vec::with_capacity(batch.len());
        for m in &batch {
            match AlertFact::decode(m.payload().unwrap_or_default()) {
                Ok(a) => rows.push(AlertRow::of(&a, m.partition(), m.offset())),
                Err(e) => send_dlq(&dlq, &config, m, e).await?,
            }
        }
        if !insert_retrying(&client, &rows, &config, &cancel).await {
            break;
        }
        metrics
            .rows_inserted
            .with_label_values(&[TABLE])
            .inc_by(rows.len() as u64);
        let mut tpl = TopicPartitionList::new();
        let mut next: std::collections::BTreeMap<i32, i64> = Default::default();
        for m in &batch {
            let e = next.entry(m.partition()).or_insert(0);
            *e = (*e).max(m.offset() + 1);
        }
        for (p, o) in next {
            tpl.add_partition_offset(&config.alerts_topic, p, Offset::Offset(o))?;
        }
        if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
            tracing::warn!(error = %e, "committing alert offsets failed (re-read, harmless)");
        }
    }
    tracing::info!("alerts projection stopped");
    Ok(())
}

/// Inserts, retrying with backoff until it succeeds; `false` when cancelled first.
async fn insert_retrying(
    client: &Client,
    rows: &[AlertRow],
    config: &SinkConfig,
    cancel: &CancellationToken,
) -> bool {
    if rows.is_empty() {
        return true;
    }
    let mut backoff = Duration::from_millis(config.retry_initial_ms);
    loop {
        match insert(client, rows).await {
            Ok(()) => return true,
            Err(e) => {
                tracing::warn!(error = %e, rows = rows.len(), "inserting alerts failed; retrying")
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return false,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_millis(config.retry_max_ms));
    }
}

async fn insert(client: &Client, rows: &[AlertRow]) -> clickhouse::error::Result<()> {
    let mut insert = client.insert::<AlertRow>(TABLE).await?;
    for row in rows {
        insert.write(row).await?;
    }
    insert.end().await
}

async fn send_dlq(
    producer: &FutureProducer,
    config: &SinkConfig,
    m: &OwnedMessage,
    e: gridclue_core::wire::DecodeError,
) -> anyhow::Result<()> {
    let (payload, payload_is_hex) = DlqRecord::payload_of(m.payload().unwrap_or_default());
    let record = DlqRecord {
        v: gridclue_core::wire::SCHEMA_VERSION,
        reason: e.dlq_reason(),
        detail: e.to_string(),
        stage: "sink-alerts".into(),
        source_topic: m.topic().to_owned(),
        source_partition: m.partition(),
        source_offset: m.offset(),
        key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
        payload,
        payload_is_hex,
        at_ms: gridclue_core::wire::now_ms(),
    };
    let bytes = record.encode();
    let mut r = FutureRecord::to(&config.dlq_topic).payload(&bytes);
    if let Some(k) = &record.key {
        r = r.key(k);
    }
    producer
        .send(r, Duration::from_millis(config.dlq_timeout_ms))
        .await
        .map_err(|(e, _)| anyhow::anyhow!("sending an undecodable alert to the DLQ: {e}"))?;
    tracing::warn!(
        reason = record.reason.as_str(),
        offset = m.offset(),
        "undecodable alert sent to the DLQ"
    );
    Ok(())
}
