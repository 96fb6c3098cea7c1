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
                    poll_loop(&consumer, &tx, &stop, &generation, &mut steering)
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
        // A new assignment starts with nothing paused and nothing held: librdkafka keeps a
        // partition's pause across a revocation, and the loop judges a partition afresh when it
        // comes back.
        let g = generation.load(Ordering::Acquire);
        if g != seen_generation {
            seen_generation = g;
            if paused || !steering.held.is_empty() {
                steering.held.clear();
                set_paused(consumer, false, &steering.held);
                paused = false;
            }
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
