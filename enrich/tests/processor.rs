//! The pure processor with the pure dedupe stage behind it: placement, routing, the hold for
//! the dedupe verdict (and the commands kept meanwhile), deadlines that start at acceptance,
//! postponements in working time, closed cases leaving the dedupe stage, and refusals.

mod common;

use common::*;
use gridclue_core::wire::{
    Command, CommandEnvelope, DlqReason, Fact, Lifecycle, Placement, Verdict,
};
use gridclue_core::{ClueId, CommandId, Status};
use gridclue_enrich::dedupe::{DedupeKind, DedupeStage};
use gridclue_enrich::processor::{ClueState, DecideCtx, Decision, Output, Processor, MAX_DEFERRED};
use uuid::Uuid;

/// Epoch ms of a local (UTC+8) time.
fn local(s: &str) -> u64 {
    let t = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap();
    (t.and_utc().timestamp_millis() - 8 * 3_600_000) as u64
}

fn clue(n: u128) -> ClueId {
    ClueId(Uuid::from_u128(n))
}

/// The processor and one dedupe stage, run by hand: commands go to partition `partition`;
/// what the processor forwards is folded by the stage, and with `auto_verdicts` its verdicts
/// are applied at once (as if the round trip took no time).
struct Pipeline<'a> {
    p: &'a Processor,
    states: std::collections::HashMap<ClueId, ClueState>,
    stage: DedupeStage,
    offset: i64,
    dedupe_offset: i64,
    partition: i32,
    auto_verdicts: bool,
    /// Verdict commands not applied yet (without `auto_verdicts`).
    verdicts: Vec<CommandEnvelope>,
}

/// What one command led to: its own decision, and the decision on the verdict it caused.
struct Outcome {
    decision: Decision,
    verdict: Option<Decision>,
}

impl<'a> Pipeline<'a> {
    fn new(p: &'a Processor) -> Self {
        Self {
            p,
            states: Default::default(),
            stage: DedupeStage::new(p.dedupe),
            offset: 0,
            dedupe_offset: 0,
            partition: 0,
            auto_verdicts: true,
            verdicts: Vec::new(),
        }
    }

    fn decide(&mut self, cmd: &CommandEnvelope) -> Decision {
        let d = self.p.decide(
            self.states.get(&cmd.clue_id),
            cmd,
            &DecideCtx {
                now_ms: cmd.issued_at_ms,
                offset: self.offset,
                partition: self.partition,
            },
        );
        self.offset += 1;
        if let Some(next) = &d.next {
            self.states.insert(cmd.clue_id, next.clone());
        }
        for f in &d.forwards {
            if let Some(v) = self.stage.fold(self.dedupe_offset, &f.record) {
                assert_eq!(v.commands_partition, self.partition);
                let mut verdict = envelope(
                    v.clue_id,
                    Command::DedupeVerdict {
                        duplicate_of: v.duplicate_of,
                    },
                    cmd.issued_at_ms,
                );
                verdict.command_id = CommandId::for_dedupe_verdict(v.clue_id);
                self.verdicts.push(verdict);
            }
            self.dedupe_offset += 1;
        }
        d
    }

    /// Decides the next command of the partition and applies it.
    fn apply(&mut self, id: ClueId, command: Command, at: u64) -> Outcome {
        let decision = self.decide(&envelope(id, command, at));
        let verdict = if self.auto_verdicts && !self.verdicts.is_empty() {
            let v = self.verdicts.remove(0);
            Some(self.decide(&v))
        } else {
            None
        };
        Outcome { decision, verdict }
    }

    /// Applies the oldest verdict still waiting.
    fn deliver_verdict(&mut self) -> Decision {
        let v = self.verdicts.remove(0);
        self.decide(&v)
    }
}

impl Outcome {
    /// The single fact the command led to (for a report: its verdict's), beside a transition's
    /// verdict that says it was applied.
    fn fact(&self) -> (&Fact, Status) {
        let d = self.verdict.as_ref().unwrap_or(&self.decision);
        match &d.outputs[..] {
            [Output::Event(e)] => (&e.fact, e.status),
            [Output::Event(e), Output::Outcome(o)] => {
                assert!(
                    matches!(o.verdict, Verdict::Applied { status, seq, .. } if status == e.status && seq == e.seq),
                    "{o:?}"
                );
                (&e.fact, e.status)
            }
            other => panic!("expected a fact, got {other:?}"),
        }
    }

    fn reported(&self) -> &gridclue_core::wire::Reported {
        match self.fact().0 {
            Fact::Reported(r) => r,
            other => panic!("expected a report, got {other:?}"),
        }
    }

    /// The DLQ reason of a refused command; a transition's verdict says refused too, and the
    /// clue changed in nothing but its memory of the verdict.
    fn refusal(&self) -> DlqReason {
        if let Some(next) = &self.decision.next {
            assert!(next
                .outcomes
                .last()
                .is_some_and(|o| matches!(o.verdict, Verdict::Refused { .. })));
        }
        match &self.decision.outputs[..] {
            [Output::Rejected {
                reason,
                detail,
                deferred: None,
            }, rest @ ..] => {
                assert!(!detail.is_empty());
                match rest {
                    [] => {}
                    [Output::Outcome(o)] => {
                        assert!(
                            matches!(&o.verdict, Verdict::Refused { detail: d, .. } if d == detail)
                        )
                    }
                    other => panic!("expected at most a verdict after the refusal, got {other:?}"),
                }
                *reason
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
}

/// ~`m` metres north of a point.
fn north(lat: f64, m: f64) -> f64 {
    lat + m / 111_195.0
}

#[test]
fn a_report_is_placed_routed_and_held_for_its_verdict() {
    let p = processor();
    let mut line = Pipeline::new(&p);
    line.auto_verdicts = false;
    line.partition = 3;
    let (lat, lon) = inside_point(&p, &mut Rng::new(5));
    let at = local("2025-03-07 17:00");
    let d = line.apply(clue(1), report("manhole_cover", lat, lon), at);
    // Nothing visible yet: the placement goes to the dedupe stage, keyed by the owner street.
    assert_eq!(d.decision.outputs, vec![Output::Held]);
    assert_eq!(d.decision.forwards.len(), 1);
    let forward = &d.decision.forwards[0];
    let DedupeKind::Placed {
        street_code,
        commands_partition,
        reported_at_ms,
        ..
    } = &forward.record.kind
    else {
        panic!("{forward:?}");
    };
    assert_eq!(
        (street_code, *commands_partition, *reported_at_ms),
        (&forward.street_code, 3, at)
    );
    assert!(line.states[&clue(1)].pending.is_some());

    // The verdict completes the report: seq 0, the report's own command id and time.
    let v = line.deliver_verdict();
    assert_eq!(v.outputs.len(), 1);
    let Output::Event(e) = &v.outputs[0] else {
        panic!("{:?}", v.outputs)
    };
    assert_eq!(
        (e.seq, e.command_id, e.occurred_at_ms, e.status),
        (0, CommandId::for_report(clue(1)), at, Status::Reported)
    );
    let Fact::Reported(r) = &e.fact else {
        panic!("{e:?}")
    };
    assert_eq!(r.department, "water_affairs");
    assert_eq!(r.urgency, gridclue_core::category::Urgency::Urgent);
    assert_eq!(r.map_version, p.index.map_version());
    assert_eq!(r.duplicate_of, None);
    // The SLA clock has not started: it starts at acceptance.
    assert_eq!(r.deadline_ms, None);
    let Placement::Inside {
        grid_code,
        on_boundary,
    } = &r.placement
    else {
        panic!("placed {:?}", r.placement);
    };
    assert!(!on_boundary);
    assert_eq!(grid_code.street_code(), *street_code);
    // The owner street is the grid's street: the grid code's first 9 digits, which the map
    // files under that street.
    let path = std::path::Path::new(&data_dir()).join("district/grids.geojson");
    let district = gridclue_district::load_geojson(&path).unwrap();
    let g = district.grid(grid_code).unwrap();
    assert_eq!(g.street_code, grid_code.street_code());
    let state = &line.states[&clue(1)];
    assert!(state.pending.is_none());
    assert_eq!((state.status, state.seq), (Status::Reported, 0));
}

#[test]
fn the_deadline_starts_at_acceptance_in_working_time() {
    let p = processor();
    let mut line = Pipeline::new(&p);
    let (lat, lon) = inside_point(&p, &mut Rng::new(5));
    line.apply(
        clue(1),
        report("manhole_cover", lat, lon),
        local("2025-03-06 10:00"),
    );
    // Before acceptance there is no deadline to postpone.
    let early = line.apply(
        clue(1),
        Command::Lifecycle(Lifecycle::Postpone {
            reason: "rain".into(),
            working_hours: 2,
        }),
        local("2025-03-06 11:00"),
    );
    assert_eq!(early.refusal(), DlqReason::IllegalTransition);
    // Accepted Friday 17:00; a manhole cover is urgent, 2 working hours → Monday 10:30.
    let a = line.apply(
        clue(1),
        Command::Lifecycle(Lifecycle::Accept),
        local("2025-03-07 17:00"),
    );
    assert_eq!(
        a.fact(),
        (
            &Fact::Accepted {
                deadline_ms: Some(local("2025-03-10 10:30")),
                // 20% of the 2 working hours (24 min) remain at 10:06.
                yellow_at_ms: Some(local("2025-03-10 10:06")),
            },
            Status::Accepted
        )
    );
    // A working-days category: street light, 2 working days → Tuesday 17:30.
    line.apply(
        clue(2),
        report("street_light", lat, lon),
        local("2025-03-07 16:00"),
    );
    let a = line.apply(
        clue(2),
        Command::Lifecycle(Lifecycle::Accept),
        local("2025-03-07 17:00"),
    );
    assert_eq!(
        line.states[&clue(2)].deadline_ms,
        Some(local("2025-03-11 17:30"))
    );
    assert!(matches!(a.fact().0, Fact::Accepted { .. }));

    // A postponement extends the current deadline in working time: 10:30 + 4 h → 16:00.
    let d = line.apply(
        clue(1),
        Command::Lifecycle(Lifecycle::Postpone {
            reason: "parts on order".into(),
            working_hours: 4,
        }),
        local("2025-03-10 09:00"),
    );
    match d.fact() {
        (Fact::Postponed { deadline_ms, .. }, Status::Accepted) => {
            assert_eq!(*deadline_ms, local("2025-03-10 16:00"));
        }
        other => panic!("{other:?}"),
    }
    // Later facts keep the deadline.
    line.apply(
        clue(1),
        Command::Lifecycle(Lifecycle::Dispatch {
            department: "water_affairs".parse().unwrap(),
        }),
        local("2025-03-10 09:05"),
    );
    assert_eq!(
        line.states[&clue(1)].deadline_ms,
        Some(local("2025-03-10 16:00"))
    );
}

#[test]
fn a_closure_carries_the_working_time_since_acceptance() {
    let p = processor();
    let mut line = Pipeline::new(&p);
    let (lat, lon) = inside_point(&p, &mut Rng::new(6));
    line.apply(
        clue(1),
        report("garbage_pile", lat, lon),
        local("2025-03-07 16:00"),
    );
    line.apply(
        clue(1),
        Command::Lifecycle(Lifecycle::Accept),
        local("2025-03-07 17:00"),
    );
    for (cmd, at) in [
        (
            Command::Lifecycle(Lifecycle::Dispatch {
                department: "greening_city_appearance".parse().unwrap(),
            }),
            "2025-03-07 17:10",
        ),
        (Command::Lifecycle(Lifecycle::Start), "2025-03-08 10:00"),
        (
            Command::Lifecycle(Lifecycle::Handle {
                note: "cleared".into(),
                photos: vec![],
            }),
            "2025-03-10 11:00",
        ),
    ] {
        line.apply(clue(1), cmd, local(at));
    }
    // Friday 17:00 → Monday 14:00: 30 min on Friday (until 17:30), none on the weekend, then
    // 09:00–12:00 and 13:30–14:00 on Monday: 4 working hours, the lunch break left out.
    let closed = line.apply(
        clue(1),
        Command::Lifecycle(Lifecycle::VerifyOk),
        local("2025-03-10 14:00"),
    );
    assert_eq!(
        closed.fact(),
        (
            &Fact::Verified {
                working_ms: Some(4 * 3_600_000)
            },
            Status::Closed
        )
    );
}

#[test]
fn a_report_outside_the_district_is_flagged_at_once_with_the_nearest_grid() {
    let p = processor();
    let mut line = Pipeline::new(&p);
    let d = line.apply(clue(1), report("garbage_pile", 31.0, 121.2), MONDAY_9AM);
    assert!(d.verdict.is_none() && d.decision.forwards.is_empty());
    let r = d.reported();
    assert_eq!(d.fact().1, Status::Rejected);
    assert_eq!(r.deadline_ms, None);
    match &r.placement {
        Placement::Outside {
            nearest_grid_code,
            distance_m,
        } => {
            assert!(nearest_grid_code.is_some());
            assert!(*distance_m > 1_000.0, "{distance_m}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn duplicates_are_found_across_partitions_and_closed_cases_leave_the_stage() {
    let p = processor();
    let mut line = Pipeline::new(&p);
    let (lat, lon) = inside_point(&p, &mut Rng::new(9));
    let t0 = MONDAY_9AM;
    let hour = 3_600_000;
    line.partition = 0;
    let a = line.apply(clue(1), report("garbage_pile", lat, lon), t0);
    assert_eq!(a.reported().duplicate_of, None);
    // 20 m away, an hour later, reported through another partition: a duplicate (still a
    // report), and its verdict goes back to that partition.
    line.partition = 4;
    let b = line.apply(
        clue(2),
        report("garbage_pile", north(lat, 20.0), lon),
        t0 + hour,
    );
    assert_eq!(b.reported().duplicate_of, Some(clue(1)));
    assert_eq!(b.fact().1, Status::Duplicate);
    assert_eq!(b.verdict.as_ref().unwrap().duplicate_of, Some(clue(1)));
    // A duplicate is terminal: it takes no further commands, and closing it tells the stage
    // nothing (it never was a case).
    let acc = line.apply(
        clue(2),
        Command::Lifecycle(Lifecycle::Accept),
        t0 + hour + 1,
    );
    assert_eq!(acc.refusal(), DlqReason::TerminalState);
    assert!(acc.decision.forwards.is_empty());

    // A case leaving the loop tells the stage, keyed by its street…
    line.partition = 0;
    let rej = line.apply(
        clue(1),
        Command::Lifecycle(Lifecycle::Reject {
            reason: "not ours".into(),
        }),
        t0 + 2 * hour,
    );
    assert_eq!(rej.decision.forwards.len(), 1);
    assert_eq!(rej.decision.forwards[0].record.kind, DedupeKind::Closed);
    // …so a report at the same spot afterwards is a case of its own.
    let c = line.apply(clue(3), report("garbage_pile", lat, lon), t0 + 3 * hour);
    assert_eq!(c.reported().duplicate_of, None);
    // Closing a case through the whole loop tells the stage too.
    for (i, cmd) in [
        Command::Lifecycle(Lifecycle::Accept),
        Command::Lifecycle(Lifecycle::Dispatch {
            department: "greening_city_appearance".parse().unwrap(),
        }),
        Command::Lifecycle(Lifecycle::Start),
        Command::Lifecycle(Lifecycle::Handle {
            note: "ok".into(),
            photos: vec![],
        }),
    ]
    .into_iter()
    .enumerate()
    {
        let d = line.apply(clue(3), cmd, t0 + 4 * hour + i as u64);
        assert!(d.decision.forwards.is_empty());
    }
    let closed = line.apply(
        clue(3),
        Command::Lifecycle(Lifecycle::VerifyOk),
        t0 + 5 * hour,
    );
    assert_eq!(closed.fact().1, Status::Closed);
    assert_eq!(closed.decision.forwards.len(), 1);
    let d = line.apply(clue(4), report("garbage_pile", lat, lon), t0 + 6 * hour);
    assert_eq!(d.reported().duplicate_of, None);
    assert_eq!(line.stage.open_cases(), 1);
}

#[test]
fn commands_for_a_clue_awaiting_its_verdict_are_kept_and_applied_after_it() {
    let p = processor();
    let mut line = Pipeline::new(&p);
    line.auto_verdicts = false;
    let (lat, lon) = inside_point(&p, &mut Rng::new(21));
    let t = local("2025-03-10 09:00");
    line.apply(clue(1), report("garbage_pile", lat, lon), t);
    let accept = line.apply(clue(1), Command::Lifecycle(Lifecycle::Accept), t + 60_000);
    assert_eq!(accept.decision.outputs, vec![Output::Held]);
    // The same command again is kept too (it is recognised as a repeat once applied); the
    // report retried under a new command id is a repeat at once.
    let again = line.apply(clue(1), Command::Lifecycle(Lifecycle::Accept), t + 60_000);
    assert_eq!(again.decision.outputs, vec![Output::Held]);
    let mut retried = envelope(clue(1), report("garbage_pile", lat, lon), t);
    retried.command_id = CommandId::new_random();
    let d = line.decide(&retried);
    assert_eq!(d.outputs, vec![Output::Repeat]);
    line.apply(
        clue(1),
        Command::Lifecycle(Lifecycle::Dispatch {
            department: "greening_city_appearance".parse().unwrap(),
        }),
        t + 120_000,
    );
    // The verdict: the report's fact, then the kept commands in their order, as if they had
    // come after it; the deadline counts from the accept's own time.
    // Each kept transition gets its verdict; the accept kept twice is answered twice, alike.
    let v = line.deliver_verdict();
    let facts: Vec<(u32, &str, Status)> = v
        .outputs
        .iter()
        .map(|o| match o {
            Output::Event(e) => (e.seq, e.fact.type_name(), e.status),
            Output::Outcome(o) => match o.verdict {
                Verdict::Applied { status, seq, .. } => (seq, o.action.as_str(), status),
                _ => panic!("{o:?}"),
            },
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        facts,
        vec![
            (0, "reported", Status::Reported),
            (1, "accepted", Status::Accepted),
            (1, "accept", Status::Accepted),
            (1, "accept", Status::Accepted),
            (2, "dispatched", Status::Dispatched),
            (2, "dispatch", Status::Dispatched),
        ]
    );
    let Output::Event(e) = &v.outputs[1] else {
        unreachable!()
    };
    let deadline = p
        .calendar
        .deadline(t + 60_000, p.catalog.get("garbage_pile").unwrap().deadline)
        .unwrap();
    assert_eq!(e.occurred_at_ms, t + 60_000);
    assert_eq!(
        e.fact,
        Fact::Accepted {
            deadline_ms: Some(deadline),
            yellow_at_ms: Some(p.calendar.remaining_fraction_at(t + 60_000, deadline, 0.2)),
        }
    );
    // The verdict again (a re-sent one) changes nothing.
    let mut verdict = envelope(
        clue(1),
        Command::DedupeVerdict { duplicate_of: None },
        t + 1,
    );
    verdict.command_id = CommandId::for_dedupe_verdict(clue(1));
    assert_eq!(line.decide(&verdict).outputs, vec![Output::Repeat]);

    // A duplicate's kept commands are refused, each with its own offset.
    line.apply(clue(2), report("garbage_pile", lat, lon), t + 1_000);
    let kept_at = line.offset;
    line.apply(clue(2), Command::Lifecycle(Lifecycle::Accept), t + 2_000);
    let v = line.deliver_verdict();
    assert_eq!(v.duplicate_of, Some(clue(1)));
    match &v.outputs[..] {
        [Output::Event(e), Output::Rejected {
            reason: DlqReason::TerminalState,
            deferred: Some(d),
            ..
        }, Output::Outcome(o)] => {
            assert!(matches!(
                o.verdict,
                Verdict::Refused {
                    class: gridclue_core::roles::RefusalClass::Conflict,
                    reason: gridclue_core::roles::RefusalReason::TerminalState,
                    status: Some(Status::Duplicate),
                    ..
                }
            ));
            assert_eq!(o.command_id, d.command.command_id);
            assert_eq!(e.status, Status::Duplicate);
            assert_eq!(d.offset, kept_at);
            assert!(matches!(
                d.command.command,
                Command::Lifecycle(Lifecycle::Accept)
            ));
        }
        other => panic!("{other:?}"),
    }

    // Only so many commands are kept for one clue.
    line.apply(clue(3), report("food_safety", lat, lon), t);
    for i in 0..MAX_DEFERRED as u64 {
        let d = line.apply(
            clue(3),
            Command::Lifecycle(Lifecycle::Handle {
                photos: vec![],
                note: format!("{i}"),
            }),
            t + 10 + i,
        );
        assert_eq!(d.decision.outputs, vec![Output::Held]);
    }
    let over = line.apply(clue(3), Command::Lifecycle(Lifecycle::Start), t + 5_000);
    assert_eq!(over.refusal(), DlqReason::TooManyPending);
}

#[test]
fn repeats_are_no_ops_and_refusals_carry_reasons() {
    let p = processor();
    let mut line = Pipeline::new(&p);
    let (lat, lon) = inside_point(&p, &mut Rng::new(3));
    line.apply(clue(1), report("litter_bin", lat, lon), MONDAY_9AM);
    // The same report again (same command id), and under another command id: no-ops.
    let again = line.apply(clue(1), report("litter_bin", lat, lon), MONDAY_9AM);
    assert_eq!(again.decision.outputs, vec![Output::Repeat]);
    assert!(again.decision.next.is_none());
    let mut retried = envelope(clue(1), report("litter_bin", lat, lon), MONDAY_9AM);
    retried.command_id = CommandId::new_random();
    assert_eq!(line.decide(&retried).outputs, vec![Output::Repeat]);

    assert_eq!(
        line.apply(clue(1), Command::Lifecycle(Lifecycle::VerifyOk), MONDAY_9AM)
            .refusal(),
        DlqReason::IllegalTransition
    );
    assert_eq!(
        line.apply(clue(9), Command::Lifecycle(Lifecycle::Accept), MONDAY_9AM)
            .refusal(),
        DlqReason::UnknownClue
    );
    let stray = line.apply(
        clue(8),
        Command::DedupeVerdict { duplicate_of: None },
        MONDAY_9AM,
    );
    assert_eq!(stray.refusal(), DlqReason::UnknownClue);
    let mut unknown_category = report("litter_bin", lat, lon);
    if let Command::Report(r) = &mut unknown_category {
        r.category = gridclue_core::CategoryCode::parse("unicorn_sighting").unwrap();
    }
    assert_eq!(
        line.apply(clue(7), unknown_category, MONDAY_9AM).refusal(),
        DlqReason::UnknownCategory
    );
    line.apply(
        clue(1),
        Command::Lifecycle(Lifecycle::Reject { reason: "x".into() }),
        MONDAY_9AM + 1,
    );
    assert_eq!(
        line.apply(
            clue(1),
            Command::Lifecycle(Lifecycle::Accept),
            MONDAY_9AM + 2
        )
        .refusal(),
        DlqReason::TerminalState
    );
    // Seqs count facts only: report 0, reject 1.
    assert_eq!(line.states[&clue(1)].seq, 1);
}
