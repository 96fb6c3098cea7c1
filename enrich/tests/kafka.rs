//! The processor and its dedupe stage against librdkafka's mock cluster (real Kafka protocol, one
//! cluster per test): crashes mid-stream and partitions moving between two processors must leave
//! every command's effect on `clues.events` exactly once by `(clue_id, seq)` — none missing, none
//! with other content than a crash-free sequential run gives (with the verdicts that a
//! crash-free fold of the `clues.dedupe` log gives), identical copies at most.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use gridclue_core::wire::{
    Command, CommandEnvelope, DlqReason, DlqRecord, EventEnvelope, Fact, Lifecycle,
};
use gridclue_enrich::dedupe_runner::DedupeRunner;
use gridclue_enrich::metrics::EnrichMetrics;
use gridclue_enrich::runner::{Runner, StateRecord};
use gridclue_enrich::EnrichConfig;
use tokio::sync::watch;

fn events_so_far(bootstrap: &str) -> usize {
    let c: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    (0..PARTITIONS)
        .map(|p| {
            rdkafka::consumer::Consumer::fetch_watermarks(
                &c,
                "clues.events",
                p,
                Duration::from_secs(5),
            )
            .map_or(0, |(lo, hi)| (hi - lo) as usize)
        })
        .sum()
}

/// [`events_so_far`] off the runtime's threads.
async fn events_now(bootstrap: &str) -> usize {
    let b = bootstrap.to_owned();
    tokio::task::spawn_blocking(move || events_so_far(&b))
        .await
        .unwrap()
}

async fn wait_for_events(r: &mut Running, bootstrap: &str, at_least: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if r.processor.is_finished() {
            panic!("the processor stopped: {:?}", (&mut r.processor).await);
        }
        if r.dedupe.is_finished() {
            panic!("the dedupe stage stopped: {:?}", (&mut r.dedupe).await);
        }
        let n = events_now(bootstrap).await;
        if n >= at_least {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("fewer than {at_least} events after {timeout:?}");
}

async fn verify(bootstrap: &str, w: &Workload) {
    let (expected, refusals) = reference(bootstrap, &processor(), w).await;
    let got = facts_on_events(bootstrap, expected.len()).await;
    let copies = check_exactly_once(&expected, &got);
    // The workload exercises dedupe, refusals of terminal clues and outside points.
    let reports: Vec<_> = expected
        .values()
        .filter_map(|e| match &e.fact {
            gridclue_core::wire::Fact::Reported(r) => Some((e.status, r)),
            _ => None,
        })
        .collect();
    assert!(
        reports
            .iter()
            .filter(|(_, r)| r.duplicate_of.is_some())
            .count()
            > 10
    );
    // Deadlines start at acceptance.
    assert!(reports.iter().all(|(_, r)| r.deadline_ms.is_none()));
    assert!(
        expected
            .values()
            .filter(|e| matches!(
                e.fact,
                gridclue_core::wire::Fact::Accepted {
                    deadline_ms: Some(_),
                    ..
                }
            ))
            .count()
            > 100
    );
    // Duplicates across partitions: a report and the case it repeats came through different
    // partitions of the commands topic.
    let partition_of: std::collections::HashMap<String, usize> = w
        .partitions
        .iter()
        .enumerate()
        .flat_map(|(i, recs)| recs.iter().map(move |(k, _)| (k.clone(), i)))
        .collect();
    let across = expected
        .values()
        .filter_map(|e| match &e.fact {
            gridclue_core::wire::Fact::Reported(r) => r.duplicate_of.map(|d| (e.clue_id, d)),
            _ => None,
        })
        .filter(|(c, d)| partition_of[&c.to_string()] != partition_of[&d.to_string()])
        .count();
    assert!(across > 5, "{across} duplicates across partitions");
    assert!(reports
        .iter()
        .any(|(s, _)| *s == gridclue_core::Status::Rejected));
    eprintln!(
        "{} facts as in the reference run, {copies} identical extra copies, {refusals} refusals",
        expected.len()
    );
    // Every refusal and every undecodable record is on the DLQ (at least once).
    let dlq = read_to_end(bootstrap, "clues.dlq", 1).await;
    let records: Vec<DlqRecord> = dlq
        .iter()
        .map(|(_, b)| DlqRecord::decode(b).unwrap())
        .collect();
    let mut refused: std::collections::HashSet<(i32, i64)> = Default::default();
    for r in records.iter().filter(|r| r.stage != "enrich-dedupe") {
        assert_eq!(r.stage, "enrich");
        if !matches!(r.reason, DlqReason::Undecodable | DlqReason::KeyMismatch) {
            refused.insert((r.source_partition, r.source_offset));
        }
    }
    assert_eq!(refused.len(), refusals, "refusals on the DLQ");
    assert!(records.iter().any(|r| r.reason == DlqReason::Undecodable));
    assert!(records.iter().any(|r| r.reason == DlqReason::KeyMismatch));
    // The changelog holds a state for every clue that exists.
    let states = read_to_end(bootstrap, "clues.state", PARTITIONS).await;
    let clues: std::collections::HashSet<_> = states
        .iter()
        .map(|(_, b)| serde_json::from_slice::<StateRecord>(b).unwrap().clue_id)
        .collect();
    let expected_clues: std::collections::HashSet<_> = expected.keys().map(|k| k.0).collect();
    assert_eq!(clues, expected_clues);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_and_restarted_mid_stream_every_fact_exactly_once() {
    let (mock, bootstrap, producer) = kafka();
    let p = processor();
    let w = workload(&p, PARTITIONS as usize, 150, 11);
    let cfg = config(&bootstrap, 40);
    let longest = w.partitions.iter().map(Vec::len).max().unwrap();
    let third = longest / 3 + 1;

    // Twice: a third of the commands more, then kill the processor and the dedupe stage (abort:
    // no shutdown, no final commit) as soon as their first new facts appear.
    for k in 0..2 {
        produce(&producer, "clues.commands", &w, k * third..(k + 1) * third).await;
        let before = events_now(&bootstrap).await;
        let mut r = Running::start(&cfg);
        wait_for_events(&mut r, &bootstrap, before + 1, Duration::from_secs(60)).await;
        r.kill().await;
    }
    produce(&producer, "clues.commands", &w, 2 * third..usize::MAX).await;
    let r = Running::start(&cfg);
    verify(&bootstrap, &w).await;
    // The last run had work left: the kills were mid-stream.
    assert!(r.metrics.events.get() > 0);
    // Every clue got its verdict: none is left waiting.
    r.until_no_report_pending(Duration::from_secs(10)).await;
    r.stop().await;
    drop(mock);
}

/// Waits until the given processors own the given numbers of commands partitions, and their
/// dedupe stages all of the dedupe topic's partitions, each some.
async fn wait_for_ownership(rs: &[(&Running, usize)], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let owned: Vec<usize> = rs
            .iter()
            .map(|(r, _)| r.owned.load(Ordering::SeqCst))
            .collect();
        // The dedupe stages split the dedupe topic's partitions among themselves too.
        let dedupe: Vec<usize> = rs
            .iter()
            .map(|(r, _)| r.dedupe_owned.load(Ordering::SeqCst))
            .collect();
        if rs.iter().zip(&owned).all(|((_, want), got)| got == want)
            && dedupe.iter().all(|n| *n > 0)
            && dedupe.iter().sum::<usize>() == DEDUPE_PARTITIONS as usize
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "ownership {owned:?}, dedupe {dedupe:?} after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processors_while_partitions_move_every_fact_exactly_once() {
    let (mock, bootstrap, producer) = kafka();
    let p = processor();
    let w = workload(&p, PARTITIONS as usize, 150, 23);
    let cfg = config(&bootstrap, 25);
    let longest = w.partitions.iter().map(Vec::len).max().unwrap();
    let step = longest / 5 + 1;
    let half = PARTITIONS as usize / 2;
    let all = PARTITIONS as usize;

    produce(&producer, "clues.commands", &w, 0..step).await;
    let mut a = Running::start(&cfg);
    wait_for_events(&mut a, &bootstrap, 1, Duration::from_secs(30)).await;
    // A second processor joins while commands keep coming: the partitions are split.
    let b = Running::start(&cfg);
    produce(&producer, "clues.commands", &w, step..2 * step).await;
    wait_for_ownership(&[(&a, half), (&b, half)], Duration::from_secs(60)).await;
    let a_facts = a.metrics.events.get();
    produce(&producer, "clues.commands", &w, 2 * step..3 * step).await;
    // The first one leaves cleanly once it has worked on these commands too (they reach every
    // partition, its own among them): its partitions move to the second mid-stream.
    wait_until(
        "the first processor handles the new commands",
        Duration::from_secs(60),
        || a.metrics.events.get() > a_facts,
    )
    .await;
    a.stop().await;
    wait_for_ownership(&[(&b, all)], Duration::from_secs(60)).await;
    produce(&producer, "clues.commands", &w, 3 * step..4 * step).await;
    // A third joins (the partitions are split again) and the second is killed mid-stream:
    // the third takes everything over once the group gives up on the second.
    let c = Running::start(&cfg);
    produce(&producer, "clues.commands", &w, 4 * step..usize::MAX).await;
    wait_for_ownership(&[(&b, half), (&c, half)], Duration::from_secs(60)).await;
    b.kill().await;
    wait_for_ownership(&[(&c, all)], Duration::from_secs(60)).await;
    verify(&bootstrap, &w).await;
    c.stop().await;
    drop(mock);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_mid_stream_loses_and_doubles_nothing() {
    let (mock, bootstrap, producer) = kafka();
    let p = processor();
    let w = workload(&p, PARTITIONS as usize, 100, 31);
    produce(&producer, "clues.commands", &w, 0..usize::MAX).await;
    // A poison record in the dedupe stage's input: it goes to the DLQ, the partition flows on.
    producer
        .send(
            rdkafka::producer::FutureRecord::to("clues.dedupe")
                .partition(0)
                .key("310199001")
                .payload(&b"{\"v\":1,\"type\":\"placed\"}"[..]),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    let mut r = Running::start(&config(&bootstrap, 30));
    wait_for_events(&mut r, &bootstrap, w.len() / 6, Duration::from_secs(60)).await;
    // The only broker goes away for two seconds: the processor keeps running and resumes.
    mock.broker_down(1).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !r.processor.is_finished(),
        "the processor gave up during the outage"
    );
    mock.broker_up(1).unwrap();
    verify(&bootstrap, &w).await;
    assert!(!r.processor.is_finished());
    let dlq = read_to_end(&bootstrap, "clues.dlq", 1).await;
    let poison: Vec<DlqRecord> = dlq
        .iter()
        .map(|(_, b)| DlqRecord::decode(b).unwrap())
        .filter(|d| d.stage == "enrich-dedupe")
        .collect();
    assert!(!poison.is_empty());
    assert!(poison.iter().all(|d| d.reason == DlqReason::Undecodable
        && d.source_topic == "clues.dedupe"
        && (d.source_partition, d.source_offset) == (0, 0)));
    r.stop().await;
    drop(mock);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_dedupe_topic_is_refused_at_start() {
    let all_but_dedupe: Vec<(&str, i32)> = TOPICS
        .into_iter()
        .filter(|(topic, _)| *topic != "clues.dedupe")
        .collect();
    let mock = cluster_with(&all_but_dedupe);
    let runner = Runner::new(
        config(&mock.bootstrap_servers(), 10),
        processor(),
        EnrichMetrics::new(),
    );
    let (_stop, rx) = watch::channel(false);
    let err = tokio::time::timeout(Duration::from_secs(60), runner.run(rx))
        .await
        .expect("refused at once")
        .unwrap_err();
    assert!(format!("{err:#}").contains("clues.dedupe"), "{err:#}");
    drop(mock);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_wait_for_the_dedupe_stage_and_the_gauge_shows_them() {
    let (mock, bootstrap, producer) = kafka();
    let p = processor();
    let cfg = config(&bootstrap, 50);
    let mut rng = Rng::new(77);
    let mut w = Workload {
        partitions: vec![Vec::new(); PARTITIONS as usize],
    };
    let reports = 20;
    for i in 0..reports {
        let clue = gridclue_core::ClueId::new_random();
        let (lat, lon) = inside_point(&p, &mut rng);
        let cmd = envelope(
            clue,
            report("garbage_pile", lat, lon),
            MONDAY_9AM + i as u64,
        );
        w.partitions[i % PARTITIONS as usize].push((clue.to_string(), cmd.encode()));
    }
    produce(&producer, "clues.commands", &w, 0..usize::MAX).await;

    // Only the processor: the reports are placed and held, nothing is visible yet.
    let metrics = EnrichMetrics::new();
    let (stop, rx) = watch::channel(false);
    let processor_task = tokio::spawn(Runner::new(cfg.clone(), p, metrics.clone()).run(rx.clone()));
    let m = metrics.clone();
    wait_until("all reports pending", Duration::from_secs(60), || {
        m.pending_clues.get() == reports as i64
    })
    .await;
    let events = events_now(&bootstrap).await;
    assert_eq!(events, 0);

    // The dedupe stage starts: every report appears, and none waits any more.
    let dedupe = DedupeRunner::new(cfg, processor().dedupe, metrics.clone());
    let dedupe_task = tokio::spawn(dedupe.run(rx));
    let m = metrics.clone();
    wait_until("no report pending", Duration::from_secs(60), || {
        m.pending_clues.get() == 0
    })
    .await;
    let events = events_now(&bootstrap).await;
    assert_eq!(events, reports);
    assert_eq!(
        metrics.verdicts.with_label_values(&["case"]).get()
            + metrics.verdicts.with_label_values(&["duplicate"]).get(),
        reports as u64
    );
    stop.send(true).unwrap();
    processor_task.await.unwrap().unwrap();
    dedupe_task.await.unwrap().unwrap();
    drop(mock);
}

/// Sends one command to a chosen partition of the commands topic.
async fn send_command(
    producer: &rdkafka::producer::FutureProducer,
    partition: i32,
    cmd: &CommandEnvelope,
) {
    producer
        .send(
            rdkafka::producer::FutureRecord::to("clues.commands")
                .partition(partition)
                .key(&cmd.clue_id.to_string())
                .payload(&cmd.encode()),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
}

/// The overdue facts on `clues.events`, once `want` clues have one.
async fn overdue_facts(bootstrap: &str, want: usize) -> Vec<EventEnvelope> {
    let got = events_until(bootstrap, move |got| {
        let clues: std::collections::HashSet<_> = got
            .iter()
            .filter_map(|b| EventEnvelope::decode(b).ok())
            .filter(|e| matches!(e.fact, Fact::Overdue { .. }))
            .map(|e| e.clue_id)
            .collect();
        clues.len() >= want
    })
    .await;
    got.iter()
        .filter_map(|b| EventEnvelope::decode(b).ok())
        .filter(|e| matches!(e.fact, Fact::Overdue { .. }))
        .collect()
}

/// A clue accepted long ago (its deadline passed) gets one overdue fact from the processor's
/// clock, without any command after its accept; a processor killed and restarted emits no second
/// one for that deadline (the state it restores remembers it). The restarted processor does look
/// at that partition although no command came to it since the restart: a second clue there,
/// whose deadline the first processor's grace kept it from counting yet, gets its fact from it.
/// Copies re-sent from the outbox carry the same identity and content.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overdue_is_emitted_once_per_deadline_across_a_restart() {
    let (mock, bootstrap, producer) = kafka();
    let p = processor();
    let limit = p.catalog.get("garbage_pile").unwrap().deadline;
    let accepted_at = |n: u128, rng: u64, at: u64| {
        let clue = gridclue_core::ClueId(uuid::Uuid::from_u128(n));
        let (lat, lon) = inside_point(&p, &mut Rng::new(rng));
        [
            envelope(clue, report("garbage_pile", lat, lon), at - 60_000),
            envelope(clue, Command::Lifecycle(Lifecycle::Accept), at),
        ]
    };
    // A: due in 2025. B: accepted recently enough that its deadline passed less than a day ago.
    let now = gridclue_core::wire::now_ms();
    let mut b_at = now - 4 * 86_400_000;
    while p.calendar.deadline(b_at + 600_000, limit).unwrap() < now - 60_000 {
        b_at += 600_000;
    }
    let (a, b) = (accepted_at(1, 11, MONDAY_9AM), accepted_at(2, 12, b_at));
    let a_deadline = p.calendar.deadline(MONDAY_9AM, limit).unwrap();
    let b_deadline = p.calendar.deadline(b_at, limit).unwrap();
    assert!(a_deadline < b_deadline && b_deadline < now);

    // The first processor counts deadlines older than ten minutes before B's only.
    let first_cfg = EnrichConfig {
        overdue_tick_ms: 100,
        overdue_grace_ms: now - b_deadline + 600_000,
        ..config(&bootstrap, 100)
    };
    let r = Running::start(&first_cfg);
    for cmd in a.iter().chain(&b) {
        send_command(&producer, 0, cmd).await;
    }
    let got = overdue_facts(&bootstrap, 1).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].clue_id, a[0].clue_id);
    assert_eq!(
        got[0].fact,
        Fact::Overdue {
            deadline_ms: a_deadline
        }
    );
    assert_eq!(
        (got[0].seq, got[0].status, got[0].occurred_at_ms),
        (2, gridclue_core::Status::Accepted, a_deadline)
    );
    assert_eq!(r.metrics.overdue.get(), 1);
    r.kill().await;

    let r = Running::start(&EnrichConfig {
        overdue_grace_ms: 0,
        ..first_cfg
    });
    let got = overdue_facts(&bootstrap, 2).await;
    let of = |clue| -> Vec<EventEnvelope> {
        got.iter()
            .filter(|e| e.clue_id == clue)
            .cloned()
            .map(normalized)
            .collect()
    };
    let of_b = of(b[0].clue_id);
    assert_eq!(
        of_b[0].fact,
        Fact::Overdue {
            deadline_ms: b_deadline
        }
    );
    let of_a = of(a[0].clue_id);
    assert!(
        of_a.iter().all(|e| *e == of_a[0]),
        "one overdue fact of A, copies identical: {of_a:?}"
    );
    assert_eq!(
        r.metrics.overdue.get(),
        1,
        "the restarted processor emitted B's only"
    );
    r.stop().await;
    drop(mock);
}
