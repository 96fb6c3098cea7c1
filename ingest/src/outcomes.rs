//! The clue processor's verdicts on transitions (`clues.outcomes`), for the requests waiting to
//! answer their clients.
//!
//! Every ingest instance keeps one consumer of the whole topic: assigned every partition at its
//! end when it starts (no consumer group, nothing committed), so it sees the verdicts of every
//! command produced after it started, whichever instance produced it. Verdicts are kept in a
//! bounded map (oldest forgotten first) for the poll route and for retries; a request registers
//! for its command's verdict *before* producing the command, so a fast verdict is never missed.
//! A verdict this instance never saw (it restarted, or forgot it) is not lost: a retry produces
//! the command again, and the processor answers a repeated command id with its first verdict.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use gridclue_core::kafka::KafkaSettings;
use gridclue_core::wire::OutcomeRecord;
use gridclue_core::{Action, ClueId, CommandId};
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::oneshot;

/// Verdicts seen recently, and the requests waiting for theirs.
pub struct Outcomes {
    inner: Mutex<Inner>,
    capacity: usize,
    ready: AtomicBool,
}

#[derive(Default)]
struct Inner {
    known: HashMap<CommandId, Arc<OutcomeRecord>>,
    order: VecDeque<CommandId>,
    waiting: HashMap<CommandId, Vec<oneshot::Sender<Arc<OutcomeRecord>>>>,
    /// Commands this instance produced whose verdict had not come when their request answered
    /// 202: who asked, about which clue, for the poll route.
    expected: HashMap<CommandId, (ClueId, String, Action)>,
    expected_order: VecDeque<CommandId>,
}

/// A verdict known already, or the promise of one.
pub enum Awaited {
    Known(Arc<OutcomeRecord>),
    Pending(oneshot::Receiver<Arc<OutcomeRecord>>),
}

impl Outcomes {
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            capacity: capacity.max(1),
            ready: AtomicBool::new(false),
        }
    }

    /// Whether the consumer is positioned (verdicts of commands produced from now on are seen).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn get(&self, id: &CommandId) -> Option<Arc<OutcomeRecord>> {
        self.lock().known.get(id).cloned()
    }

    /// The verdict on `id` if known, else a receiver that gets it when it arrives.
    pub fn subscribe(&self, id: CommandId) -> Awaited {
        let mut inner = self.lock();
        if let Some(o) = inner.known.get(&id) {
            return Awaited::Known(o.clone());
        }
        let (tx, rx) = oneshot::channel();
        inner.waiting.entry(id).or_default().push(tx);
        Awaited::Pending(rx)
    }

    /// Drops the registrations for `id` whose requests stopped waiting.
    pub fn forget_waiters(&self, id: &CommandId) {
        let mut inner = self.lock();
        if let Some(list) = inner.waiting.get_mut(id) {
            list.retain(|tx| !tx.is_closed());
            if list.is_empty() {
                inner.waiting.remove(id);
            }
        }
    }

    /// Remembers that `actor` asked for `id` on `clue` (for polls until the verdict comes).
    pub fn expect(&self, id: CommandId, clue: ClueId, actor: &str, action: Action) {
        let mut inner = self.lock();
        if inner.known.contains_key(&id) {
            return;
        }
        if inner
            .expected
            .insert(id, (clue, actor.to_owned(), action))
            .is_none()
        {
            inner.expected_order.push_back(id);
        }
        while inner.expected_order.len() > self.capacity {
            if let Some(old) = inner.expected_order.pop_front() {
                inner.expected.remove(&old);
            }
        }
    }

    /// Who asked for `id`, about which clue and what, while its verdict has not come.
    pub fn expected(&self, id: &CommandId) -> Option<(ClueId, String, Action)> {
        self.lock().expected.get(id).cloned()
    }

    /// Records a verdict (the first one of a command id is kept: the processor answers a repeat
    /// with the same verdict) and hands it to the requests waiting for it.
    pub fn record(&self, outcome: OutcomeRecord) {
        let id = outcome.command_id;
        let mut inner = self.lock();
        let outcome = match inner.known.get(&id) {
            Some(first) => first.clone(),
            None => {
                let o = Arc::new(outcome);
                inner.known.insert(id, o.clone());
                inner.order.push_back(id);
                while inner.order.len() > self.capacity {
                    if let Some(old) = inner.order.pop_front() {
                        inner.known.remove(&old);
                    }
                }
                o
            }
        };
        inner.expected.remove(&id);
        for tx in inner.waiting.remove(&id).unwrap_or_default() {
            let _ = tx.send(outcome.clone());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Consumes `topic` from its end into `outcomes` until the task is aborted; (re)connects until
/// the topic can be read.
pub async fn consume(outcomes: Arc<Outcomes>, kafka: KafkaSettings, topic: String) {
    loop {
        match positioned_consumer(&kafka, &topic).await {
            Ok(consumer) => {
                outcomes.ready.store(true, Ordering::Release);
                tracing::info!(%topic, "reading transition verdicts");
                loop {
                    match consumer.recv().await {
                        Ok(m) => match m.payload().map(OutcomeRecord::decode) {
                            Some(Ok(o)) => outcomes.record(o),
                            Some(Err(e)) => {
                                tracing::warn!(error = %e, offset = m.offset(), "unreadable verdict skipped")
                            }
                            None => {}
                        },
                        Err(e) => {
                            tracing::warn!(error = %e, "reading verdicts failed");
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), %topic, "verdicts unavailable; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

/// A consumer assigned every partition of `topic` at its current end.
async fn positioned_consumer(kafka: &KafkaSettings, topic: &str) -> anyhow::Result<StreamConsumer> {
    let (k, t) = (kafka.clone(), topic.to_owned());
    let ends = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<(i32, i64)>> {
        let client: BaseConsumer = gridclue_core::kafka::client_config(&k)
            .create()
            .context("creating a metadata client")?;
        let timeout = Duration::from_secs(5);
        let md = client
            .fetch_metadata(Some(&t), timeout)
            .with_context(|| format!("metadata of {t}"))?;
        let partitions: Vec<i32> = md
            .topics()
            .iter()
            .find(|x| x.name() == t && x.error().is_none())
            .map(|x| x.partitions().iter().map(|p| p.id()).collect())
            .unwrap_or_default();
        anyhow::ensure!(!partitions.is_empty(), "topic {t} does not exist");
        partitions
            .into_iter()
            .map(|p| {
                let (_, high) = client
                    .fetch_watermarks(&t, p, timeout)
                    .with_context(|| format!("end of {t}/{p}"))?;
                Ok((p, high))
            })
            .collect()
    })
    .await??;
    // Assigned, never subscribed: the group id only satisfies the client, no group is joined
    // and nothing is committed.
    let consumer: StreamConsumer = gridclue_core::kafka::reader_config(kafka)
        .set("group.id", "gridclue-ingest-outcomes")
        .create()
        .context("creating the verdicts consumer")?;
    let mut tpl = TopicPartitionList::new();
    for (p, end) in ends {
        tpl.add_partition_offset(topic, p, Offset::Offset(end))?;
    }
    consumer.assign(&tpl)?;
    Ok(consumer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gridclue_core::wire::{Verdict, SCHEMA_VERSION};
    use gridclue_core::Status;

    fn outcome(seq: u32) -> OutcomeRecord {
        OutcomeRecord {
            v: SCHEMA_VERSION,
            command_id: CommandId::new_random(),
            clue_id: ClueId::new_random(),
            action: Action::Start,
            actor_id: "tok_d".into(),
            decided_at_ms: 1,
            verdict: Verdict::Applied {
                status: Status::InProgress,
                seq,
                deadline_ms: None,
            },
        }
    }

    #[tokio::test]
    async fn waiters_get_the_verdict_and_the_first_one_is_kept() {
        let o = Outcomes::new(10);
        let first = outcome(3);
        let id = first.command_id;
        let Awaited::Pending(rx) = o.subscribe(id) else {
            panic!("nothing known yet")
        };
        o.record(first.clone());
        assert_eq!(*rx.await.unwrap(), first);
        // A copy re-sent by the processor changes nothing.
        o.record(OutcomeRecord {
            decided_at_ms: 99,
            ..first.clone()
        });
        match o.subscribe(id) {
            Awaited::Known(k) => assert_eq!(*k, first),
            Awaited::Pending(_) => panic!("known"),
        }
    }

    #[test]
    fn the_oldest_verdicts_are_forgotten_and_stale_waiters_dropped() {
        let o = Outcomes::new(2);
        let all: Vec<OutcomeRecord> = (0..3).map(outcome).collect();
        for x in &all {
            o.record(x.clone());
        }
        assert!(o.get(&all[0].command_id).is_none());
        assert!(o.get(&all[2].command_id).is_some());
        let id = CommandId::new_random();
        drop(o.subscribe(id));
        o.forget_waiters(&id);
        assert!(o.lock().waiting.is_empty());
    }
}
