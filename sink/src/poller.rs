//! The consumer's poll loop, on a thread of its own.
//!
//! librdkafka's `BaseConsumer::poll` delivers well over a million messages a second here, the
//! async `StreamConsumer` about 220 000 (a wake-up per message), so the sink polls on a plain
//! thread and hands messages to the async loop in chunks over a bounded channel. Polling never
//! stops while the sink lives: the group keeps the consumer (no `max.poll.interval.ms`
//! expiry while ClickHouse is down) and rebalance callbacks run. When the channel stays full —
//! the sink waiting for ClickHouse — the poller pauses the assigned partitions (backpressure:
//! nothing more is fetched) and resumes them once the channel has drained.
//!
//! The loop also steers single partitions through the poller ([`Control`]): a partition whose
//! log was reset is held (paused, and kept paused by the backpressure's resumes), and released
//! from a chosen offset; an [`Item::Released`] marker in the stream separates the partition's
//! messages read before the seek from those after it.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus::IntGauge;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

/// Messages per chunk handed to the async loop.
const CHUNK: usize = 2_000;

/// What the poller hands over.
pub(crate) enum Item {
    /// Messages polled while the assignment had the given generation (see [`Generation`]).
    Messages {
        generation: u64,
        messages: Vec<OwnedMessage>,
    },
    /// The end of a partition was reached (replay only).
    Eof(i32),
    Error(KafkaError),
    /// A [`Control::Release`] was carried out (or failed: the partition stays held) while the
    /// assignment had `generation`. The partition's messages before this marker were read
    /// before the seek.
    Released {
        partition: i32,
        generation: u64,
        result: Result<(), KafkaError>,
    },
}

/// What the loop asks of the poller for one partition, decided under the assignment of
/// `generation` (an order from before a later rebalance is ignored: the loop judges a
/// partition afresh after a rebalance).
#[derive(Debug)]
pub(crate) enum Control {
    /// Stop fetching the partition until it is released.
    Hold { partition: i32, generation: u64 },
    /// Fetch the partition again, from `offset`.
    Release {
        partition: i32,
        offset: i64,
        generation: u64,
    },
}

/// Counts rebalances; the consumer context bumps it in its callbacks, which run inside `poll`,
/// so every message is tagged with the assignment it was read under.
pub(crate) type Generation = Arc<AtomicU64>;

pub(crate) struct Poller {
    stop: Arc<AtomicBool>,
    control: std::sync::mpsc::Sender<Control>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Poller {
    pub(crate) fn start<C: ConsumerContext + 'static>(
        consumer: Arc<BaseConsumer<C>>,
        topic: String,
        generation: Generation,
        capacity: usize,
        fetch_paused: IntGauge,
    ) -> (Self, mpsc::Receiver<Item>) {
        let (tx, rx) = mpsc::channel(capacity);
        let (control, orders) = std::sync::mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("sink-poller".into())
                .spawn(move || {
                    let mut steering = Steering {
                        topic,
                        orders,
                        held: HashSet::new(),
                    };
                    poll_loop(
                        &consumer,
                        &tx,
                        &stop,
                        &generation,
                        &mut steering,
                        &fetch_paused,
                    )
                })
                .expect("poller thread starts")
        };
        (
            Self {
                stop,
                control,
                thread: Some(thread),
            },
            rx,
        )
    }

    /// Hands an order to the poll thread (carried out before its next poll).
    pub(crate) fn control(&self, order: Control) {
        // The thread only goes away with the poller, and then there is nothing left to steer.
        let _ = self.control.send(order);
    }

    /// Stops polling and waits for the thread (at most one poll timeout).
    pub(crate) fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Pauses every assigned partition, or resumes every one that is not held.
fn set_paused<C: ConsumerContext>(consumer: &BaseConsumer<C>, pause: bool, held: &HashSet<i32>) {
    let Ok(assigned) = consumer.assignment() else {
        return;
    };
    let result = if pause {
        consumer.pause(&assigned)
    } else {
        let mut tpl = TopicPartitionList::new();
        for e in assigned.elements() {
            if !held.contains(&e.partition()) {
                tpl.add_partition(e.topic(), e.partition());
            }
        }
        consumer.resume(&tpl)
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, pause, "cannot pause/resume partitions");
    }
}

/// The partitions the loop holds, and its orders not yet carried out.
struct Steering {
    topic: String,
    orders: std::sync::mpsc::Receiver<Control>,
    held: HashSet<i32>,
}

impl Steering {
    fn one(&self, partition: i32) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.topic, partition);
        tpl
    }

    /// Carries out the loop's orders. Messages of a partition still waiting in `pending` were
    /// read before the order and are dropped.
    fn apply<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        pending: &mut VecDeque<Item>,
        backpressure: bool,
        generation: u64,
    ) {
        while let Ok(order) = self.orders.try_recv() {
            let (partition, decided) = match order {
                Control::Hold {
                    partition,
                    generation,
                }
                | Control::Release {
                    partition,
                    generation,
                    ..
                } => (partition, generation),
            };
            if decided < generation {
                tracing::debug!(partition, "order from before a rebalance ignored");
                continue;
            }
            for item in pending.iter_mut() {
                if let Item::Messages { messages, .. } = item {
                    messages.retain(|m| m.partition() != partition);
                }
            }
            pending
                .retain(|i| !matches!(i, Item::Messages { messages, .. } if messages.is_empty()));
            match order {
                Control::Hold { .. } => {
                    self.held.insert(partition);
                    if let Err(e) = consumer.pause(&self.one(partition)) {
                        tracing::warn!(error = %e, partition, "cannot pause a held partition");
                    }
                }
                Control::Release { offset, .. } => {
                    // Seek while paused, so nothing is fetched from the old position meanwhile.
                    let _ = consumer.pause(&self.one(partition));
                    let result = consumer.seek(
                        &self.topic,
                        partition,
                        Offset::Offset(offset),
                        Duration::from_secs(10),
                    );
                    if result.is_ok() {
                        self.held.remove(&partition);
                        if !backpressure {
                            if let Err(e) = consumer.resume(&self.one(partition)) {
                                tracing::warn!(error = %e, partition, "cannot resume a released partition");
                            }
                        }
                    } else {
                        self.held.insert(partition);
                    }
                    pending.push_back(Item::Released {
                        partition,
                        generation,
                        result,
                    });
                }
            }
        }
    }
}

fn poll_loop<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    tx: &mpsc::Sender<Item>,
    stop: &AtomicBool,
    generation: &AtomicU64,
    steering: &mut Steering,
    fetch_paused: &IntGauge,
) {
    // Items the channel had no room for. While the loop is merely behind, the poller waits for
    // room without polling (librdkafka's own prefetch queue bounds what is buffered); once it
    // has waited `PATIENCE` it pauses the partitions and polls again, for liveness and
    // rebalances, until the channel drains.
    const PATIENCE: Duration = Duration::from_secs(2);
    let mut pending: VecDeque<Item> = VecDeque::new();
    let mut paused = false;
    let mut seen_generation = generation.load(Ordering::Acquire);
    let mut blocked_since: Option<std::time::Instant> = None;
    while !stop.load(Ordering::Acquire) {
        // A new assignment starts with nothing paused and nothing held: the loop judges a
        // partition afresh when it comes back. librdkafka keeps an application's pause across
        // a revocation and a later assignment, and an eager rebalance is two generations (the
        // revocation, then the assignment, often seconds apart): a pause made before the
        // revocation is still there when the assignment arrives, whatever happened in
        // between, so every new generation resumes what it was given.
        let g = generation.load(Ordering::Acquire);
        if g != seen_generation {
            seen_generation = g;
            steering.held.clear();
            set_paused(consumer, false, &steering.held);
            paused = false;
            fetch_paused.set(0);
        }
        steering.apply(consumer, &mut pending, paused, g);
        while let Some(item) = pending.pop_front() {
            match tx.try_send(item) {
                Ok(()) => {}
                Err(TrySendError::Full(item)) => {
                    pending.push_front(item);
                    break;
                }
                Err(TrySendError::Closed(_)) => return,
            }
        }
        let full = !pending.is_empty();
        if !full {
            blocked_since = None;
            if paused {
                set_paused(consumer, false, &steering.held);
                paused = false;
                fetch_paused.set(0);
            }
        } else {
            let since = *blocked_since.get_or_insert_with(std::time::Instant::now);
            if since.elapsed() < PATIENCE {
                std::thread::sleep(Duration::from_millis(2));
                continue;
            }
            if !paused {
                set_paused(consumer, true, &steering.held);
                paused = true;
                fetch_paused.set(1);
            }
        }
        let timeout = Duration::from_millis(if full { 20 } else { 100 });
        let mut chunk: Vec<OwnedMessage> = Vec::new();
        let mut chunk_generation = 0;
        let mut wait = timeout;
        while chunk.len() < CHUNK {
            let polled = consumer.poll(wait);
            wait = Duration::ZERO;
            let g = generation.load(Ordering::Acquire);
            if g != chunk_generation {
                flush_chunk(&mut pending, &mut chunk, chunk_generation);
                chunk_generation = g;
            }
            match polled {
                Some(Ok(m)) => chunk.push(m.detach()),
                Some(Err(e)) => {
                    flush_chunk(&mut pending, &mut chunk, chunk_generation);
                    pending.push_back(match e {
                        KafkaError::PartitionEOF(p) => Item::Eof(p),
                        e => Item::Error(e),
                    });
                }
                None => break,
            }
        }
        flush_chunk(&mut pending, &mut chunk, chunk_generation);
    }
}

fn flush_chunk(pending: &mut VecDeque<Item>, chunk: &mut Vec<OwnedMessage>, generation: u64) {
    if !chunk.is_empty() {
        pending.push_back(Item::Messages {
            generation,
            messages: std::mem::take(chunk),
        });
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::Instant;

    use rdkafka::consumer::Rebalance;
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    use rdkafka::{ClientConfig, ClientContext};

    use super::*;

    const TOPIC: &str = "events";
    const GROUP: &str = "sink";

    /// Bumps the generation at every rebalance, as the sink's own context does.
    struct Counting(Generation);

    impl ClientContext for Counting {}

    impl ConsumerContext for Counting {
        fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, _rebalance: &Rebalance<'_>) {
            self.0.fetch_add(1, Ordering::AcqRel);
        }
    }

    fn group_member(bootstrap: &str) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", bootstrap)
            .set("group.id", GROUP)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "200");
        c
    }

    fn produce(bootstrap: &str, partitions: &[i32], payload: &str, per_partition: usize) {
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .create()
            .expect("producer");
        for &p in partitions {
            for _ in 0..per_partition {
                producer
                    .send(
                        BaseRecord::<(), str>::to(TOPIC)
                            .partition(p)
                            .payload(payload),
                    )
                    .expect("queued");
            }
        }
        producer.flush(Duration::from_secs(10)).expect("flushed");
    }

    fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn assigned<C: ConsumerContext>(consumer: &BaseConsumer<C>) -> BTreeSet<i32> {
        consumer
            .assignment()
            .map(|tpl| tpl.elements().iter().map(|e| e.partition()).collect())
            .unwrap_or_default()
    }

    /// Takes what the poller hands over until `payload` was seen from each of `partitions`.
    fn receive(rx: &mut mpsc::Receiver<Item>, partitions: &BTreeSet<i32>, payload: &[u8]) {
        let mut seen = BTreeSet::new();
        let what = format!("{partitions:?} to hand over {payload:?}");
        wait_for(&what, || {
            while let Ok(item) = rx.try_recv() {
                if let Item::Messages { messages, .. } = item {
                    seen.extend(
                        messages
                            .iter()
                            .filter(|m| m.payload() == Some(payload))
                            .map(|m| m.partition()),
                    );
                }
            }
            partitions.is_subset(&seen)
        });
    }

    /// A pause for backpressure made before a revocation must not outlive the rebalance: the
    /// loop may catch up while the group waits for its members, and the assignment that follows
    /// must be fetched. (Found by the chaos suite: a sink that consumed nothing after a second
    /// sink joined and left.)
    #[test]
    fn partitions_paused_for_backpressure_are_fetched_after_a_rebalance() {
        let mock = MockCluster::new(1).expect("mock cluster");
        mock.create_topic(TOPIC, 2, 1).expect("topic");
        let bootstrap = mock.bootstrap_servers();
        produce(&bootstrap, &[0, 1], "before", 3 * CHUNK);

        let generation = Generation::default();
        let consumer: BaseConsumer<Counting> = group_member(&bootstrap)
            .create_with_context(Counting(generation.clone()))
            .expect("consumer");
        consumer.subscribe(&[TOPIC]).expect("subscribed");
        let consumer = Arc::new(consumer);
        let fetch_paused = IntGauge::new("fetch_paused", "test").expect("gauge");
        let (_poller, mut rx) = Poller::start(
            consumer.clone(),
            TOPIC.into(),
            generation.clone(),
            1,
            fetch_paused.clone(),
        );

        // Nothing is taken from the poller: its one-item channel fills and it pauses fetching.
        wait_for("the backpressure pause", || fetch_paused.get() == 1);
        let before_join = generation.load(Ordering::Acquire);

        // A second member joins: the partitions are revoked …
        let stop_other = Arc::new(AtomicBool::new(false));
        let other = {
            let stop = stop_other.clone();
            let other: BaseConsumer = group_member(&bootstrap).create().expect("consumer");
            other.subscribe(&[TOPIC]).expect("subscribed");
            std::thread::spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    let _ = other.poll(Duration::from_millis(50));
                }
                other.unsubscribe();
                let _ = other.poll(Duration::from_millis(500));
            })
        };
        wait_for("the revocation", || {
            generation.load(Ordering::Acquire) > before_join
        });
        // … and the loop catches up while the group waits for its members.
        wait_for("the end of the backpressure", || {
            while rx.try_recv().is_ok() {}
            fetch_paused.get() == 0
        });
        wait_for("one of the two partitions assigned", || {
            generation.load(Ordering::Acquire) > before_join + 1 && assigned(&*consumer).len() == 1
        });
        let mine = assigned(&*consumer);
        produce(&bootstrap, &[0, 1], "after join", 5);
        receive(&mut rx, &mine, b"after join");

        // The second member leaves: every partition comes back, and is fetched.
        stop_other.store(true, Ordering::Release);
        other.join().expect("second member stopped");
        wait_for("every partition assigned again", || {
            assigned(&*consumer) == BTreeSet::from([0, 1])
        });
        produce(&bootstrap, &[0, 1], "after leave", 5);
        receive(&mut rx, &BTreeSet::from([0, 1]), b"after leave");
    }
}
