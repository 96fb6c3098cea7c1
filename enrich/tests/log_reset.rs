//! Reset logs against librdkafka's mock cluster: a partition whose group position is beyond its
//! log's end (commands, dedupe) or whose state changelog ends before the recorded end is refused
//! and reported while the other partitions flow, and after `rebase` every fact appears exactly
//! once.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use gridclue_core::kafka::KafkaSettings;
use gridclue_core::wire::EventEnvelope;
use gridclue_enrich::log_reset::{self, CommitNote, RebaseOutcome, ResetKind, Resume};
use gridclue_enrich::runner::StateRecord;
use gridclue_enrich::EnrichConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

fn client(bootstrap: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap()
}

fn high(bootstrap: &str, topic: &str, partition: i32) -> i64 {
    client(bootstrap)
        .fetch_watermarks(topic, partition, Duration::from_secs(5))
        .unwrap()
        .1
}

fn committed(bootstrap: &str, group: &str, topic: &str, partition: i32) -> (Option<i64>, String) {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    let got = c.committed_offsets(tpl, Duration::from_secs(5)).unwrap();
    let el = &got.elements()[0];
    let offset = match el.offset() {
        Offset::Offset(o) => Some(o),
        _ => None,
    };
    (offset, el.metadata().to_owned())
}

fn events(bootstrap: &str) -> Vec<EventEnvelope> {
    read_all(
        bootstrap,
        "clues.events",
        PARTITIONS,
        Duration::from_secs(5),
        |_| true,
    )
    .iter()
    .map(|b| EventEnvelope::decode(b).unwrap())
    .collect()
}

/// Both workloads, each partition's records in the order they were produced.
fn joined(a: &Workload, b: &Workload) -> Workload {
    Workload {
        partitions: a
            .partitions
            .iter()
            .zip(&b.partitions)
            .map(|(x, y)| x.iter().chain(y).cloned().collect())
            .collect(),
    }
}

fn clues_of(w: &Workload, partition: usize) -> HashSet<String> {
    w.partitions[partition]
        .iter()
        .map(|(k, _)| k.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_positions_are_refused_until_rebased_and_then_every_fact_appears_once() {
    let (mock, bootstrap, producer) = kafka();
    let p = processor();
    let cfg = config(&bootstrap, 40);

    // A first workload, processed completely.
    let first = workload(&p, PARTITIONS as usize, 40, 5);
    produce(&producer, "clues.commands", &first, 0..usize::MAX).await;
    let r = Running::start(&cfg);
    verify_exactly_once(&bootstrap, &p, &first).await;
    r.stop().await;

    // The logs are reset under the stored positions: the processor's group has committed past
    // the end of commands partition 1, its last commit of partition 2 recorded a changelog end
    // the changelog does not reach, and the dedupe group committed past the end of dedupe
    // partition 0.
    let b = bootstrap.clone();
    let (g, dg) = (cfg.group_id.clone(), cfg.dedupe_group_id.clone());
    let (beyond_commands, beyond_dedupe, lost_state_end) = tokio::task::spawn_blocking(move || {
        let beyond_commands = high(&b, "clues.commands", 1) + 1000;
        let beyond_dedupe = high(&b, "clues.dedupe", 0) + 500;
        let lost_state_end = high(&b, "clues.state", 2) + 50;
        let timeout = Duration::from_secs(60);
        log_reset::commit_as_sole_member(
            &KafkaSettings::dev_broker(&b),
            &g,
            "clues.commands",
            timeout,
            |c| {
                let note1 = c[&1].note;
                let mut note2 = c[&2].note;
                note2.state_end = Some(lost_state_end);
                Ok(vec![
                    (1, beyond_commands, Some(note1.encode())),
                    (2, c[&2].offset.unwrap(), Some(note2.encode())),
                ])
            },
        )
        .unwrap();
        log_reset::commit_as_sole_member(
            &KafkaSettings::dev_broker(&b),
            &dg,
            "clues.dedupe",
            timeout,
            |_| Ok(vec![(0, beyond_dedupe, None)]),
        )
        .unwrap();
        (beyond_commands, beyond_dedupe, lost_state_end)
    })
    .await
    .unwrap();

    // New commands on every partition; the held partitions take none of them, the others do.
    let second = workload(&p, PARTITIONS as usize, 25, 77);
    produce(&producer, "clues.commands", &second, 0..usize::MAX).await;
    let before = events(&bootstrap).len();
    let r = Running::start(&cfg);
    let rr = &r;
    wait_until("the three resets reported", Duration::from_secs(60), || {
        rr.log_reset("clues.commands", 1) == 1
            && rr.log_reset("clues.state", 2) == 1
            && rr.log_reset("clues.dedupe", 0) == 1
    })
    .await;
    wait_for(
        "new facts from the partitions not held",
        Duration::from_secs(60),
        || {
            let b = bootstrap.clone();
            async move {
                let facts = tokio::task::spawn_blocking(move || events(&b).len());
                facts.await.unwrap() > before
            }
        },
    )
    .await;
    assert_eq!(r.log_reset("clues.commands", 0), 0);
    assert_eq!(r.log_reset("clues.commands", 3), 0);
    let blockers = r.readiness.blockers().join("\n");
    for part in [
        format!("clues.commands partition 1: group gridclue-enrich committed offset {beyond_commands}"),
        format!("clues.state partition 2: the last commit of group gridclue-enrich recorded state up to offset {lost_state_end}"),
        format!("clues.dedupe partition 0: group gridclue-enrich-dedupe committed offset {beyond_dedupe}"),
        "gridclue-enrich rebase --topic clues.state --partition 2".to_owned(),
    ] {
        assert!(blockers.contains(&part), "{part:?} not in {blockers}");
    }
    r.stop().await;
    // Nothing of the held partitions was taken as handled: their positions did not move, and
    // no fact of a clue of theirs from the second workload exists.
    let b = bootstrap.clone();
    let (c1, c2, d0, facts) = tokio::task::spawn_blocking(move || {
        (
            committed(&b, "gridclue-enrich", "clues.commands", 1).0,
            committed(&b, "gridclue-enrich", "clues.commands", 2),
            committed(&b, "gridclue-enrich-dedupe", "clues.dedupe", 0).0,
            events(&b),
        )
    })
    .await
    .unwrap();
    assert_eq!(c1, Some(beyond_commands));
    assert_eq!(CommitNote::decode(&c2.1).state_end, Some(lost_state_end));
    assert_eq!(d0, Some(beyond_dedupe));
    let held: HashSet<String> = clues_of(&second, 1)
        .union(&clues_of(&second, 2))
        .cloned()
        .collect();
    assert!(
        facts.iter().all(|e| !held.contains(&e.clue_id.to_string())),
        "a fact of a held partition's new clue appeared"
    );

    // Rebase (every enrich stopped), start again: everything is consumed, once. Partition 0 of
    // the commands is named too: it is not reset, so it is left alone.
    let mut outcomes = Vec::new();
    for (topic, partitions) in [
        ("clues.commands", vec![0, 1]),
        ("clues.state", vec![2]),
        ("clues.dedupe", vec![0]),
    ] {
        outcomes.extend(
            log_reset::rebase(&cfg, topic, Some(partitions), false)
                .await
                .unwrap(),
        );
    }
    assert_eq!(outcomes[0], RebaseOutcome::NotReset { partition: 0 });
    let rebased: Vec<(i32, ResetKind, log_reset::Committed, Resume)> = outcomes[1..]
        .iter()
        .map(|o| match o {
            RebaseOutcome::Rebased {
                partition,
                resets,
                after,
                resume,
                ..
            } => (*partition, resets[0].kind.clone(), after.clone(), *resume),
            other => panic!("{other:?}"),
        })
        .collect();
    // Commands partition 1 is still the log the state handled (only its committed position
    // was wrong): it resumes right after the last command handled, not from its start (where
    // commands refused the first time would be decided again).
    let (p1, kind, after, resume) = &rebased[0];
    assert_eq!((*p1, kind), (1, &ResetKind::CommittedBeyondEnd));
    let first_end = beyond_commands - 1000;
    let Resume::After(proven) = resume else {
        panic!("partition 1 not proven the same log: {resume:?}");
    };
    assert!(
        *proven < first_end,
        "{proven} within the first workload's records"
    );
    assert_eq!(after.offset, Some(proven + 1));
    assert_eq!(after.note.base, 0, "positions as before");
    let (p2, kind, after, resume) = &rebased[1];
    assert_eq!(
        (*p2, kind, *resume),
        (2, &ResetKind::ChangelogShort, Resume::Kept)
    );
    assert_eq!(after.offset, c2.0, "the commands position stays");
    assert_eq!(after.note.state_end, Some(lost_state_end - 50));
    let (d0, kind, after, resume) = &rebased[2];
    assert_eq!(
        (*d0, kind, *resume),
        (0, &ResetKind::CommittedBeyondEnd, Resume::FromStart)
    );
    assert_eq!(after.offset, Some(0));

    let r = Running::start(&cfg);
    verify_exactly_once(&bootstrap, &p, &joined(&first, &second)).await;
    assert!(r.readiness.blockers().is_empty());
    r.until_no_report_pending(Duration::from_secs(30)).await;
    r.stop().await;
    drop(mock);
}

/// Every fact of `w` on `clues.events` exactly once: none missing, none other than the
/// sequential reference gives, and no copy.
async fn verify_exactly_once(
    bootstrap: &str,
    p: &gridclue_enrich::processor::Processor,
    w: &Workload,
) {
    let (expected, _) = reference(bootstrap, p, w).await;
    let got = facts_on_events(bootstrap, expected.len()).await;
    let copies = check_exactly_once(&expected, &got);
    assert_eq!(copies, 0, "facts written twice");
}

/// The commands log starts again from offset 0 (a broker whose commands topic was re-created)
/// while the state changelog survives: new commands for existing clues arrive at offsets the
/// state has already handled. Judged by offset alone they would be skipped in silence; they are
/// refused instead, and after the rebase each is applied exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_commands_log_under_a_surviving_state_is_refused_then_applied_once() {
    let p = processor();
    let (old, old_bootstrap, old_producer) = kafka();
    let first = workload(&p, PARTITIONS as usize, 30, 9);
    produce(&old_producer, "clues.commands", &first, 0..usize::MAX).await;
    let cfg = config(&old_bootstrap, 40);
    let r = Running::start(&cfg);
    verify_exactly_once(&old_bootstrap, &p, &first).await;
    r.until_no_report_pending(Duration::from_secs(30)).await;
    r.stop().await;

    // The new cluster gets the changelog as it was (same partitions, same order), and an empty
    // commands log.
    let (new, nb, to_new) = kafka();
    let states = read_to_end(&old_bootstrap, "clues.state", PARTITIONS).await;
    let mut latest: std::collections::HashMap<gridclue_core::ClueId, (i32, StateRecord)> =
        Default::default();
    for (partition, bytes) in &states {
        let rec: StateRecord = serde_json::from_slice(bytes).unwrap();
        to_new
            .send(
                rdkafka::producer::FutureRecord::to("clues.state")
                    .partition(*partition)
                    .key(&rec.clue_id.to_string())
                    .payload(bytes),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
        latest.insert(rec.clue_id, (*partition, rec));
    }
    // One acceptance per reported case, on its clue's partition: a handful per partition, far
    // below the offsets the state has handled there.
    let mut accepts = Workload {
        partitions: vec![Vec::new(); PARTITIONS as usize],
    };
    let mut wanted = 0;
    let mut clues: Vec<_> = latest.values().collect();
    clues.sort_by_key(|(_, r)| r.clue_id);
    for (partition, rec) in clues {
        let reported = rec.state.status == gridclue_core::Status::Reported
            && rec.state.pending.is_none()
            && rec.state.report.as_ref().is_some_and(|r| r.inside);
        if reported && accepts.partitions[*partition as usize].len() < 4 {
            let cmd = envelope(
                rec.clue_id,
                gridclue_core::wire::Lifecycle::Accept.into(),
                MONDAY_9AM + 86_400_000,
            );
            let ctx = gridclue_enrich::processor::DecideCtx {
                now_ms: MONDAY_9AM + 86_400_000,
                offset: 0,
                partition: *partition,
            };
            let decided = p.decide(Some(&rec.state), &cmd, &ctx);
            assert!(
                decided
                    .outputs
                    .iter()
                    .any(|o| matches!(o, gridclue_enrich::processor::Output::Event(_))),
                "an acceptance of a reported case makes a fact"
            );
            wanted += 1;
            accepts.partitions[*partition as usize].push((rec.clue_id.to_string(), cmd.encode()));
        }
    }
    let held_partitions: Vec<i32> = (0..PARTITIONS)
        .filter(|p| !accepts.partitions[*p as usize].is_empty())
        .collect();
    assert!(
        held_partitions.len() >= 2,
        "acceptances on several partitions"
    );
    produce(&to_new, "clues.commands", &accepts, 0..usize::MAX).await;

    let cfg = EnrichConfig {
        kafka_brokers: nb.clone(),
        kafka_extra: gridclue_core::kafka::dev_broker_tuning(),
        ..cfg
    };
    let r = Running::start(&cfg);
    let rr = &r;
    let hp = held_partitions.clone();
    wait_until(
        "every partition with acceptances refused",
        Duration::from_secs(60),
        || hp.iter().all(|p| rr.log_reset("clues.commands", *p) == 1),
    )
    .await;
    let blockers = r.readiness.blockers().join("\n");
    assert!(
        blockers.contains("the state handled commands up to offset"),
        "{blockers}"
    );
    r.stop().await;
    let b = nb.clone();
    assert!(
        tokio::task::spawn_blocking(move || events(&b))
            .await
            .unwrap()
            .is_empty(),
        "no acceptance was applied before the rebase"
    );

    let outcomes = log_reset::rebase(&cfg, "clues.commands", None, false)
        .await
        .unwrap();
    let rebased: Vec<i32> = outcomes
        .iter()
        .map(|o| match o {
            RebaseOutcome::Rebased {
                partition,
                resets,
                resume,
                ..
            } => {
                assert_eq!(resets[0].kind, ResetKind::AppliedBeyondEnd);
                assert_eq!(*resume, Resume::FromStart, "a new log");
                *partition
            }
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(rebased, held_partitions);

    let r = Running::start(&cfg);
    let got = events_until(&nb, move |got| got.len() >= wanted).await;
    let facts: Vec<EventEnvelope> = got
        .iter()
        .map(|b| EventEnvelope::decode(b).unwrap())
        .collect();
    assert_eq!(facts.len(), wanted, "one fact per acceptance");
    assert!(facts.iter().all(
        |e| matches!(e.fact, gridclue_core::wire::Fact::Accepted { .. })
            && e.seq == latest[&e.clue_id].1.state.seq + 1
    ));
    assert!(r.readiness.blockers().is_empty());
    r.stop().await;
    drop(new);
    drop(old);
}
