//! Consumer lag of a consumer group, measured from outside the group the way a lag exporter does:
//! the group's committed offsets against the partitions' high watermarks (lag in records), and
//! the timestamp of the first record the group has not committed (lag in seconds: how long ago
//! the oldest record still waiting was produced).
//!
//! Measured outside the consumer on purpose: a consumer that is stuck (ClickHouse down, a loop
//! that hangs) still has its lag reported, by a task that does not depend on it. Every instance
//! of a service reports every partition of its group (the same numbers), so dashboards and rules
//! take `max by (group, topic, partition)`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use prometheus::{GaugeVec, IntGaugeVec, Opts, Registry};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::kafka::KafkaSettings;

/// Lag of one partition for one group.
#[derive(Clone, Debug, PartialEq)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: i32,
    /// Records in the log the group has not committed.
    pub messages: i64,
    /// Age of the oldest record not committed; 0 when nothing waits; `None` when its timestamp
    /// could not be read this time.
    pub seconds: Option<f64>,
}

/// Where the group stands in a partition: its committed offset, or the log's start when it has
/// none (it would begin there: `auto.offset.reset=earliest`), never before the log's start
/// (records removed by retention or compaction cannot wait).
pub fn group_position(committed: Option<i64>, low: i64) -> i64 {
    committed.map_or(low, |c| c.max(low))
}

/// Records waiting between the group's position and the high watermark.
pub fn lag_messages(position: i64, high: i64) -> i64 {
    (high - position).max(0)
}

/// Lag in seconds from the timestamp (epoch ms) of the first waiting record; 0 when nothing
/// waits, `None` when something waits and its timestamp is unknown. A clock skew that puts the
/// record in the future counts as 0.
pub fn lag_seconds(messages: i64, first_waiting_ts_ms: Option<i64>, now_ms: i64) -> Option<f64> {
    if messages == 0 {
        return Some(0.0);
    }
    first_waiting_ts_ms.map(|ts| (now_ms - ts).max(0) as f64 / 1000.0)
}

/// Reads a group's lag on some topics. Blocking: call it from `spawn_blocking`.
pub struct LagProbe {
    group: String,
    topics: Vec<String>,
    /// Carries the group's id, to read its committed offsets; never joins or commits.
    group_client: BaseConsumer,
    /// Reads the first waiting record of lagging partitions (no group).
    reader: BaseConsumer,
    timeout: Duration,
}

impl LagProbe {
    /// `timeout` bounds each broker request (metadata, offsets, watermarks, the reads).
    pub fn new(
        kafka: &KafkaSettings,
        group: &str,
        topics: Vec<String>,
        timeout: Duration,
    ) -> Result<Self, KafkaError> {
        let mut group_config = crate::kafka::reader_config(kafka);
        group_config
            .set("group.id", group)
            .set("client.id", "gridclue-lag-probe");
        let mut reader_config = crate::kafka::reader_config(kafka);
        reader_config.set("client.id", "gridclue-lag-reader");
        Ok(Self {
            group: group.to_owned(),
            topics,
            group_client: group_config.create()?,
            reader: reader_config.create()?,
            timeout,
        })
    }

    pub fn group(&self) -> &str {
        &self.group
    }

    /// The lag of every partition of the topics, now.
    pub fn sample(&self) -> Result<Vec<PartitionLag>, KafkaError> {
        let mut all = TopicPartitionList::new();
        for topic in &self.topics {
            let md = self
                .group_client
                .fetch_metadata(Some(topic), self.timeout)?;
            for t in md.topics().iter().filter(|t| t.name() == topic) {
                for p in t.partitions() {
                    all.add_partition(topic, p.id());
                }
            }
        }
        if all.count() == 0 {
            return Ok(Vec::new());
        }
        let committed = self.group_client.committed_offsets(all, self.timeout)?;
        let mut positions = Vec::new();
        for e in committed.elements() {
            let (low, high) =
                self.group_client
                    .fetch_watermarks(e.topic(), e.partition(), self.timeout)?;
            let stored = match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            };
            let position = group_position(stored, low);
            positions.push((e.topic().to_owned(), e.partition(), position, high));
        }
        let waiting: Vec<(String, i32, i64)> = positions
            .iter()
            .filter(|(_, _, position, high)| lag_messages(*position, *high) > 0)
            .map(|(t, p, position, _)| (t.clone(), *p, *position))
            .collect();
        let timestamps = self.first_timestamps(&waiting)?;
        let now_ms = crate::wire::now_ms() as i64;
        Ok(positions
            .into_iter()
            .map(|(topic, partition, position, high)| {
                let messages = lag_messages(position, high);
                let ts = timestamps.get(&(topic.clone(), partition)).copied();
                PartitionLag {
                    seconds: lag_seconds(messages, ts, now_ms),
                    topic,
                    partition,
                    messages,
                }
            })
            .collect())
    }

    /// The timestamps of the records at the given positions (those read within the timeout).
    fn first_timestamps(
        &self,
        at: &[(String, i32, i64)],
    ) -> Result<HashMap<(String, i32), i64>, KafkaError> {
        let mut found = HashMap::new();
        if at.is_empty() {
            return Ok(found);
        }
        let mut tpl = TopicPartitionList::new();
        for (topic, partition, offset) in at {
            tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
        }
        self.reader.assign(&tpl)?;
        let deadline = Instant::now() + self.timeout;
        while found.len() < at.len() && Instant::now() < deadline {
            match self.reader.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    let key = (m.topic().to_owned(), m.partition());
                    if let Some(ts) = m.timestamp().to_millis() {
                        found.entry(key).or_insert(ts);
                    }
                }
                Some(Err(e)) => tracing::debug!(error = %e, "lag probe read failed"),
                None => {}
            }
        }
        self.reader.unassign()?;
        Ok(found)
    }
}

/// The two lag gauges of a service, labelled by group, topic and partition.
#[derive(Clone)]
pub struct LagGauges {
    pub messages: IntGaugeVec,
    pub seconds: GaugeVec,
}

impl LagGauges {
    /// Gauges named `messages_name` and `seconds_name` (from [`crate::telemetry::names`]),
    /// registered in `registry`.
    pub fn register(registry: &Registry, messages_name: &str, seconds_name: &str) -> Self {
        let labels = &["group", "topic", "partition"];
        let messages = IntGaugeVec::new(
            Opts::new(
                messages_name,
                "Records of the partition the consumer group has not committed yet",
            ),
            labels,
        )
        .expect("valid metric");
        let seconds = GaugeVec::new(
            Opts::new(
                seconds_name,
                "Age of the oldest record of the partition the consumer group has not committed \
                 yet (0 when it is caught up)",
            ),
            labels,
        )
        .expect("valid metric");
        registry
            .register(Box::new(messages.clone()))
            .expect("metric registered once");
        registry
            .register(Box::new(seconds.clone()))
            .expect("metric registered once");
        Self { messages, seconds }
    }

    /// Sets the gauges from one sample (a seconds value that could not be read keeps its last
    /// value).
    pub fn set(&self, group: &str, sample: &[PartitionLag]) {
        for lag in sample {
            let partition = lag.partition.to_string();
            let labels = [group, lag.topic.as_str(), partition.as_str()];
            self.messages.with_label_values(&labels).set(lag.messages);
            if let Some(s) = lag.seconds {
                self.seconds.with_label_values(&labels).set(s);
            }
        }
    }
}

/// Samples the probe every `interval` and sets the gauges, until the task is dropped or
/// aborted. A failed sample is logged and retried at the next interval.
pub async fn monitor(probe: LagProbe, gauges: LagGauges, interval: Duration) {
    let probe = std::sync::Arc::new(probe);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let p = probe.clone();
        match tokio::task::spawn_blocking(move || p.sample()).await {
            Ok(Ok(sample)) => gauges.set(probe.group(), &sample),
            Ok(Err(e)) => {
                tracing::warn!(group = probe.group(), error = %e, "cannot measure consumer lag")
            }
            Err(e) => tracing::warn!(error = %e, "consumer lag task failed"),
        }
    }
}

/// Starts [`monitor`] for `group` on `topics`; the returned handle stops it when aborted.
pub fn spawn_monitor(
    kafka: &KafkaSettings,
    group: &str,
    topics: Vec<String>,
    gauges: LagGauges,
    interval: Duration,
) -> Result<tokio::task::JoinHandle<()>, KafkaError> {
    let timeout = interval.clamp(Duration::from_secs(1), Duration::from_secs(5));
    let probe = LagProbe::new(kafka, group, topics, timeout)?;
    Ok(tokio::spawn(monitor(probe, gauges, interval)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_without_commits_starts_at_the_log_start() {
        assert_eq!(group_position(None, 7), 7);
        assert_eq!(group_position(Some(3), 7), 7, "records removed cannot wait");
        assert_eq!(group_position(Some(12), 7), 12);
    }

    #[test]
    fn lag_in_records_is_never_negative() {
        assert_eq!(lag_messages(10, 15), 5);
        assert_eq!(lag_messages(15, 15), 0);
        // a committed offset beyond the log (a reset log) is not negative lag
        assert_eq!(lag_messages(20, 15), 0);
    }

    #[test]
    fn lag_in_seconds_is_the_age_of_the_first_waiting_record() {
        assert_eq!(lag_seconds(0, None, 10_000), Some(0.0));
        assert_eq!(lag_seconds(0, Some(1_000), 10_000), Some(0.0));
        assert_eq!(lag_seconds(3, Some(4_000), 10_000), Some(6.0));
        assert_eq!(lag_seconds(3, None, 10_000), None);
        assert_eq!(lag_seconds(3, Some(12_000), 10_000), Some(0.0));
    }
}
