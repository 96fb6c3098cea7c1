//! Sends commands and waits for the broker's acknowledgement.

use std::time::{Duration, Instant};

use gridclue_core::kafka::KafkaSettings;
use gridclue_core::wire::CommandEnvelope;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;

use crate::metrics::IngestMetrics;

#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    /// The broker did not acknowledge within the deadline, or refused; retrying later is safe
    /// because the command carries a deterministic id.
    #[error("broker did not acknowledge: {0}")]
    Unavailable(String),
}

#[derive(Clone)]
pub struct CommandProducer {
    producer: FutureProducer,
    topic: String,
    timeout: Duration,
}

impl CommandProducer {
    pub fn new(kafka: &KafkaSettings, topic: &str, timeout: Duration) -> anyhow::Result<Self> {
        Self::with_linger(kafka, topic, timeout, None)
    }

    /// Like [`CommandProducer::new`], with the batching delay set (`None`: the shared default).
    pub fn with_linger(
        kafka: &KafkaSettings,
        topic: &str,
        timeout: Duration,
        linger_ms: Option<f64>,
    ) -> anyhow::Result<Self> {
        let mut config = gridclue_core::kafka::producer_config(kafka, timeout.as_millis() as u64);
        // Small records, each awaited by a client: send them without Nagle's delay.
        config.set("socket.nagle.disable", "true");
        if let Some(linger) = linger_ms.filter(|l| l.is_finite() && *l >= 0.0) {
            config.set("linger.ms", linger.to_string());
        }
        let producer: FutureProducer = config.create()?;
        Ok(Self {
            producer,
            topic: topic.to_owned(),
            timeout,
        })
    }

    /// Resolves only once every in-sync replica has the command (acks=all).
    pub async fn send(
        &self,
        command: &CommandEnvelope,
        metrics: &IngestMetrics,
    ) -> Result<(), ProduceError> {
        let key = command.clue_id.to_string();
        let payload = command.encode();
        let record = FutureRecord::to(&self.topic).key(&key).payload(&payload);
        let started = Instant::now();
        // The message timeout (set from the same deadline) bounds the wait; the queue timeout
        // bounds how long we wait for room in a full local queue.
        let result = self
            .producer
            .send(record, Timeout::After(self.timeout))
            .await;
        let outcome = if result.is_ok() { "acked" } else { "failed" };
        metrics
            .produce_duration
            .with_label_values(&[outcome])
            .observe(started.elapsed().as_secs_f64());
        result
            .map(|_| ())
            .map_err(|(e, _)| ProduceError::Unavailable(e.to_string()))
    }

    /// Whether the broker answers a metadata request for our topic.
    pub async fn broker_reachable(&self) -> bool {
        let producer = self.producer.clone();
        let topic = self.topic.clone();
        tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(Some(&topic), Duration::from_secs(2))
                .is_ok()
        })
        .await
        .unwrap_or(false)
    }

    pub fn flush(&self, within: Duration) {
        if let Err(e) = self.producer.flush(Timeout::After(within)) {
            tracing::error!(error = %e, "producer flush at shutdown failed");
        }
    }
}
