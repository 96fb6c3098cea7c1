//! The consumer's poll loop, on a thread of its own.
//!
//! librdkafka's `BaseConsumer::poll` delivers well over a million messages a second here, the
//! async `StreamConsumer` about 220 000 (a wake-up per message), so the sink polls on a plain
//! thread and hands messages to the async loop in chunks over a bounded channel. Polling never
//! stops while the sink lives: the group keeps the consumer (no `max.poll.interval.ms`
//! expiry while ClickHouse is down) and rebalance callbacks run. When the channel stays full —
//! the sink waiting for ClickHouse — the poller pauses the assigned partitions (backpressure:
//! nothing more is fetched) and resumes them once the channel has drained.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::OwnedMessage;
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
}

/// Counts rebalances; the consumer context bumps it in its callbacks, which run inside `poll`,
/// so every message is tagged with the assignment it was read under.
pub(crate) type Generation = Arc<AtomicU64>;

pub(crate) struct Poller {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Poller {
    pub(crate) fn start<C: ConsumerContext + 'static>(
        consumer: Arc<BaseConsumer<C>>,
        generation: Generation,
        capacity: usize,
    ) -> (Self, mpsc::Receiver<Item>) {
        let (tx, rx) = mpsc::channel(capacity);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("sink-poller".into())
                .spawn(move || poll_loop(&consumer, &tx, &stop, &generation))
                .expect("poller thread starts")
        };
        (
            Self {
                stop,
                thread: Some(thread),
            },
            rx,
        )
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

fn set_paused<C: ConsumerContext>(consumer: &BaseConsumer<C>, pause: bool) {
    let Ok(tpl) = consumer.assignment() else {
        return;
    };
    let result = if pause {
        consumer.pause(&tpl)
    } else {
        consumer.resume(&tpl)
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, pause, "cannot pause/resume partitions");
    }
}

fn poll_loop<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    tx: &mpsc::Sender<Item>,
    stop: &AtomicBool,
    generation: &AtomicU64,
) {
    // Items the channel had no room for. While the loop is merely behind, the poller waits for
    // room without polling (librdkafka's own prefetch queue bounds what is buffered); once it
    // has waited `PATIENCE` it pauses the partitions and polls again, for liveness and
    // rebalances, until the channel drains.
    const PATIENCE: Duration = Duration::from_secs(2);
    let mut pending: VecDeque<Item> = VecDeque::new();
    let mut paused = false;
    let mut paused_generation = 0;
    let mut blocked_since: Option<std::time::Instant> = None;
    while !stop.load(Ordering::Acquire) {
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
        // A new assignment starts unpaused.
        if paused && generation.load(Ordering::Acquire) != paused_generation {
            paused = false;
        }
        let full = !pending.is_empty();
        if !full {
            blocked_since = None;
            if paused {
                set_paused(consumer, false);
                paused = false;
            }
        } else {
            let since = *blocked_since.get_or_insert_with(std::time::Instant::now);
            if since.elapsed() < PATIENCE {
                std::thread::sleep(Duration::from_millis(2));
                continue;
            }
            if !paused {
                set_paused(consumer, true);
                paused = true;
                paused_generation = generation.load(Ordering::Acquire);
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
