//! The closed loop in the pure processor: every role × transition × status gets the verdict the
//! issue's tables give (allowed with the next status, 403, or 409), a clue's whole life with a
//! return, rework, postponements and supervision, repeated commands answered with their first
//! verdict, and overdue facts once per deadline.

mod common;

use std::collections::HashMap;

use common::*;
use gridclue_core::codes::ActorScope;
use gridclue_core::roles::{RefusalClass, RefusalReason};
use gridclue_core::wire::{
    Actor, ActorKind, Command, CommandEnvelope, EventEnvelope, Fact, Lifecycle, OutcomeRecord,
    Verdict,
};
use gridclue_core::{Action, ClueId, CommandId, Status};
use gridclue_enrich::processor::{ClueState, DecideCtx, Output, Processor, REMEMBERED_OUTCOMES};
use uuid::Uuid;

const DEPT: &str = "water_affairs";
const REPORTER: &str = "tok_rider";

fn actor(kind: ActorKind, id: &str, scope: Option<&str>) -> Actor {
    Actor {
        kind,
        id: id.into(),
        group: None,
        scope: scope.map(|s| ActorScope::parse(s).unwrap()),
    }
}

/// One clue worked by hand through the processor.
struct Clue<'a> {
    p: &'a Processor,
    id: ClueId,
    state: Option<ClueState>,
    offset: i64,
    at: u64,
    street: String,
    events: Vec<EventEnvelope>,
}

impl<'a> Clue<'a> {
    /// A manhole cover (routed to water_affairs) reported by [`REPORTER`] at `at`, with its
    /// dedupe verdict (a case).
    fn reported(p: &'a Processor, n: u128, at: u64) -> Self {
        let id = ClueId(Uuid::from_u128(n));
        let (lat, lon) = inside_point(p, &mut Rng::new(n as u64));
        let mut c = Self {
            p,
            id,
            state: None,
            offset: 0,
            at,
            street: String::new(),
            events: Vec::new(),
        };
        let mut rep = envelope(id, report("manhole_cover", lat, lon), at);
        rep.actor = actor(ActorKind::Reporter, REPORTER, None);
        c.decide(&rep);
        let mut verdict = envelope(id, Command::DedupeVerdict { duplicate_of: None }, at);
        verdict.command_id = CommandId::for_dedupe_verdict(id);
        c.decide(&verdict);
        let street = c.state.as_ref().unwrap().scope().street_code.copied();
        c.street = street.expect("the clue is inside the district").to_string();
        c
    }

    fn decide(&mut self, cmd: &CommandEnvelope) -> Vec<Output> {
        let d = self.p.decide(
            self.state.as_ref(),
            cmd,
            &DecideCtx {
                now_ms: cmd.issued_at_ms,
                offset: self.offset,
                partition: 0,
            },
        );
        self.offset += 1;
        if let Some(next) = d.next {
            self.state = Some(next);
        }
        for o in &d.outputs {
            if let Output::Event(e) = o {
                self.events.push((**e).clone());
            }
        }
        d.outputs
    }

    /// The command `command` by `who`, one minute after the previous one.
    fn command(&mut self, who: &Actor, command: Command) -> CommandEnvelope {
        self.at += 60_000;
        let mut cmd = envelope(self.id, command, self.at);
        cmd.actor = who.clone();
        cmd
    }

    /// Acts and returns the verdict.
    fn act(&mut self, who: &Actor, command: Command) -> OutcomeRecord {
        let cmd = self.command(who, command);
        self.verdict_of(&cmd)
    }

    fn verdict_of(&mut self, cmd: &CommandEnvelope) -> OutcomeRecord {
        let outputs = self.decide(cmd);
        let verdicts: Vec<&OutcomeRecord> = outputs
            .iter()
            .filter_map(|o| match o {
                Output::Outcome(o) => Some(&**o),
                _ => None,
            })
            .collect();
        assert_eq!(verdicts.len(), 1, "{outputs:?}");
        assert_eq!(verdicts[0].command_id, cmd.command_id);
        verdicts[0].clone()
    }

    fn status(&self) -> Status {
        self.state.as_ref().unwrap().status
    }

    fn street_office(&self) -> Actor {
        actor(ActorKind::Street, "tok_street", Some(&self.street))
    }
}

fn department(code: &str) -> Actor {
    actor(ActorKind::Department, "tok_dept", Some(code))
}

fn district() -> Actor {
    actor(ActorKind::District, "tok_district", None)
}

fn reporter() -> Actor {
    actor(ActorKind::Reporter, REPORTER, None)
}

fn applied(o: &OutcomeRecord) -> Status {
    match o.verdict {
        Verdict::Applied { status, .. } => status,
        _ => panic!("expected applied, got {o:?}"),
    }
}

fn refused(o: &OutcomeRecord) -> (RefusalClass, RefusalReason) {
    match &o.verdict {
        Verdict::Refused {
            class,
            reason,
            detail,
            ..
        } => {
            assert!(!detail.is_empty());
            (*class, *reason)
        }
        _ => panic!("expected refused, got {o:?}"),
    }
}

/// A command of each transition, with valid arguments.
fn command_of(action: Action) -> Command {
    match action {
        Action::Accept => Command::Lifecycle(Lifecycle::Accept),
        Action::Reject => Command::Lifecycle(Lifecycle::Reject {
            reason: "not public space".into(),
        }),
        Action::Merge => Command::Lifecycle(Lifecycle::Merge {
            duplicate_of: ClueId(Uuid::from_u128(999)),
        }),
        Action::Dispatch => Command::Lifecycle(Lifecycle::Dispatch {
            department: DEPT.parse().unwrap(),
        }),
        Action::VerifyOk => Command::Lifecycle(Lifecycle::VerifyOk),
        Action::VerifyFail => Command::Lifecycle(Lifecycle::VerifyFail {
            reason: "still broken".into(),
        }),
        Action::Start => Command::Lifecycle(Lifecycle::Start),
        Action::Handle => Command::Lifecycle(Lifecycle::Handle {
            note: "replaced".into(),
            photos: vec!["https://photos.example/1.jpg".into()],
        }),
        Action::Return => Command::Lifecycle(Lifecycle::Return {
            reason: "not ours".into(),
        }),
        Action::RequestPostpone => Command::Lifecycle(Lifecycle::RequestPostpone {
            reason: "parts on order".into(),
            working_hours: 4,
        }),
        Action::ApprovePostpone => Command::Lifecycle(Lifecycle::ApprovePostpone {
            note: String::new(),
            working_hours: None,
        }),
        Action::DenyPostpone => Command::Lifecycle(Lifecycle::DenyPostpone {
            reason: "no".into(),
        }),
        Action::Supervise => Command::Lifecycle(Lifecycle::Supervise {
            note: "督办".into(),
        }),
        Action::Withdraw => Command::Lifecycle(Lifecycle::Withdraw {
            reason: String::new(),
        }),
        Action::Rate => Command::Lifecycle(Lifecycle::Rate {
            rating: 4,
            note: String::new(),
        }),
        Action::Report => unreachable!("not a transition"),
    }
}

/// A clue brought to `status` along the loop (by the roles that may).
fn clue_at(p: &Processor, status: Status, n: u128) -> Clue<'_> {
    let mut c = Clue::reported(p, n, MONDAY_9AM);
    let street = c.street_office();
    let dept = department(DEPT);
    let path: Vec<(Actor, Action)> = match status {
        Status::Reported => vec![],
        Status::Accepted => vec![(street.clone(), Action::Accept)],
        Status::Dispatched => vec![
            (street.clone(), Action::Accept),
            (street.clone(), Action::Dispatch),
        ],
        Status::InProgress => vec![
            (street.clone(), Action::Accept),
            (street.clone(), Action::Dispatch),
            (dept.clone(), Action::Start),
        ],
        Status::Handled => vec![
            (street.clone(), Action::Accept),
            (street.clone(), Action::Dispatch),
            (dept.clone(), Action::Start),
            (dept.clone(), Action::Handle),
        ],
        Status::Closed => vec![
            (street.clone(), Action::Accept),
            (street.clone(), Action::Dispatch),
            (dept.clone(), Action::Start),
            (dept.clone(), Action::Handle),
            (street.clone(), Action::VerifyOk),
        ],
        Status::Rejected => vec![(street.clone(), Action::Reject)],
        Status::Duplicate => vec![(street.clone(), Action::Merge)],
        Status::Withdrawn => vec![(reporter(), Action::Withdraw)],
    };
    for (who, action) in path {
        let o = c.act(&who, command_of(action));
        applied(&o);
    }
    assert_eq!(c.status(), status);
    c
}

/// The role table, by hand.
fn role_may(kind: ActorKind, action: Action) -> bool {
    use Action as A;
    let street = [
        A::Accept,
        A::Reject,
        A::Merge,
        A::Dispatch,
        A::VerifyOk,
        A::VerifyFail,
    ];
    match kind {
        ActorKind::Street => street.contains(&action),
        ActorKind::Department => {
            [A::Start, A::Handle, A::Return, A::RequestPostpone].contains(&action)
        }
        ActorKind::District => {
            street.contains(&action)
                || [A::Supervise, A::ApprovePostpone, A::DenyPostpone].contains(&action)
        }
        ActorKind::Reporter => [A::Withdraw, A::Rate].contains(&action),
        _ => false,
    }
}

/// The status machine, by hand: the next status, or `None` where it refuses.
fn next_of(from: Status, action: Action) -> Option<Status> {
    use Action as A;
    use Status as S;
    let keeps = [
        A::RequestPostpone,
        A::ApprovePostpone,
        A::DenyPostpone,
        A::Supervise,
    ];
    if from.is_open() && keeps.contains(&action) {
        return Some(from);
    }
    Some(match (from, action) {
        (S::Reported, A::Accept) => S::Accepted,
        (S::Reported, A::Reject) | (S::Accepted, A::Reject) => S::Rejected,
        (S::Reported, A::Merge) => S::Duplicate,
        (S::Reported, A::Withdraw) => S::Withdrawn,
        (S::Accepted, A::Dispatch) => S::Dispatched,
        (S::Dispatched, A::Start) => S::InProgress,
        (S::Dispatched, A::Return) | (S::InProgress, A::Return) => S::Accepted,
        (S::InProgress, A::Handle) => S::Handled,
        (S::Handled, A::VerifyOk) => S::Closed,
        (S::Handled, A::VerifyFail) => S::Dispatched,
        (S::Closed, A::Rate) => S::Closed,
        _ => return None,
    })
}

/// Every role (its own scope and another's) × every transition × every status: 403 for the
/// role or the scope, else 409 where the status machine (or what it does not say) refuses,
/// else applied with the table's next status. Each cell starts from a fresh clue.
#[test]
fn every_role_action_and_status_gets_the_tables_verdict() {
    let p = processor();
    let mut n = 1000u128;
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for status in Status::ALL {
        // The department the clue is dispatched to now, as the loop left it.
        let assigned = matches!(
            status,
            Status::Dispatched | Status::InProgress | Status::Handled | Status::Closed
        );
        let probe = clue_at(&p, status, 1);
        let actors: Vec<(Actor, Option<RefusalReason>)> = vec![
            (probe.street_office(), None),
            (
                actor(ActorKind::Street, "tok_s2", Some("310199099")),
                Some(RefusalReason::OtherStreet),
            ),
            (
                department(DEPT),
                (!assigned).then_some(RefusalReason::NotAssigned),
            ),
            (department("fire_rescue"), Some(RefusalReason::NotAssigned)),
            (district(), None),
            (reporter(), None),
            (
                actor(ActorKind::Reporter, "tok_someone_else", None),
                Some(RefusalReason::NotOwnClue),
            ),
        ];
        for (who, scope_refusal) in &actors {
            for action in Action::TRANSITIONS {
                n += 1;
                let mut c = clue_at(&p, status, n);
                let who = match who.kind {
                    // Each fresh clue lies in its own street.
                    ActorKind::Street if scope_refusal.is_none() => c.street_office(),
                    _ => who.clone(),
                };
                let before = c.state.clone().unwrap();
                let o = c.act(&who, command_of(action));
                let cell = format!("{:?} {action} at {status}", who.kind);
                let expected: Result<Status, (RefusalClass, RefusalReason)> =
                    if !role_may(who.kind, action) {
                        Err((RefusalClass::Forbidden, RefusalReason::RoleNotAllowed))
                    } else if let Some(r) = scope_refusal {
                        Err((RefusalClass::Forbidden, *r))
                    } else {
                        match next_of(status, action) {
                            None if status.is_terminal() => {
                                Err((RefusalClass::Conflict, RefusalReason::TerminalState))
                            }
                            None => Err((RefusalClass::Conflict, RefusalReason::IllegalTransition)),
                            // No deadline runs before acceptance.
                            Some(_)
                                if action == Action::RequestPostpone
                                    && status == Status::Reported =>
                            {
                                Err((RefusalClass::Conflict, RefusalReason::NoDeadline))
                            }
                            // No request is pending on these clues.
                            Some(_)
                                if matches!(
                                    action,
                                    Action::ApprovePostpone | Action::DenyPostpone
                                ) =>
                            {
                                Err((RefusalClass::Conflict, RefusalReason::NoPostponementPending))
                            }
                            Some(next) => Ok(next),
                        }
                    };
                match expected {
                    Ok(next) => {
                        assert_eq!(applied(&o), next, "{cell}");
                        assert_eq!(c.status(), next, "{cell}");
                        let e = c.events.last().unwrap();
                        assert_eq!((e.seq, e.actor.as_ref()), (before.seq + 1, Some(&who)));
                        *counts.entry("allowed").or_default() += 1;
                    }
                    Err(want) => {
                        assert_eq!(refused(&o), want, "{cell}");
                        let after = c.state.as_ref().unwrap();
                        assert_eq!(
                            (after.status, after.seq, after.deadline_ms),
                            (before.status, before.seq, before.deadline_ms),
                            "{cell}: nothing applied"
                        );
                        *counts
                            .entry(if want.0 == RefusalClass::Forbidden {
                                "403"
                            } else {
                                "409"
                            })
                            .or_default() += 1;
                    }
                }
            }
        }
    }
    assert_eq!(
        counts.values().sum::<usize>(),
        Status::ALL.len() * 7 * Action::TRANSITIONS.len()
    );
    assert!(counts["allowed"] > 0 && counts["403"] > 0 && counts["409"] > 0);
}

/// Postponement decisions where a request is pending; a second request, and decisions without
/// one, are refused.
#[test]
fn postponements_need_a_request_and_move_the_deadline_in_working_time() {
    let p = processor();
    let mut c = clue_at(&p, Status::InProgress, 7);
    let deadline = c.state.as_ref().unwrap().deadline_ms.unwrap();
    let dept = department(DEPT);
    let o = c.act(
        &dept,
        Command::Lifecycle(Lifecycle::RequestPostpone {
            reason: "parts".into(),
            working_hours: 3,
        }),
    );
    assert_eq!(applied(&o), Status::InProgress);
    let o = c.act(
        &dept,
        Command::Lifecycle(Lifecycle::RequestPostpone {
            reason: "again".into(),
            working_hours: 3,
        }),
    );
    assert_eq!(
        refused(&o),
        (RefusalClass::Conflict, RefusalReason::PostponementPending)
    );
    // The department may not decide on its own request.
    let o = c.act(&dept, command_of(Action::ApprovePostpone));
    assert_eq!(
        refused(&o),
        (RefusalClass::Forbidden, RefusalReason::RoleNotAllowed)
    );
    let o = c.act(&district(), command_of(Action::ApprovePostpone));
    let moved = p.calendar.add_working_hours(deadline, 3).unwrap();
    match o.verdict {
        Verdict::Applied { deadline_ms, .. } => assert_eq!(deadline_ms, Some(moved)),
        _ => panic!("{o:?}"),
    }
    match &c.events.last().unwrap().fact {
        Fact::Postponed {
            deadline_ms,
            yellow_at_ms,
            working_hours,
            ..
        } => {
            assert_eq!((*deadline_ms, *working_hours), (moved, Some(3)));
            let accepted = c.state.as_ref().unwrap().accepted_at_ms.unwrap();
            assert_eq!(
                *yellow_at_ms,
                Some(p.calendar.remaining_fraction_at(accepted, moved, 0.2))
            );
        }
        other => panic!("{other:?}"),
    }
    // Decided: nothing pending any more.
    let o = c.act(&district(), command_of(Action::DenyPostpone));
    assert_eq!(
        refused(&o),
        (RefusalClass::Conflict, RefusalReason::NoPostponementPending)
    );
    c.act(
        &dept,
        Command::Lifecycle(Lifecycle::RequestPostpone {
            reason: "more".into(),
            working_hours: 8,
        }),
    );
    let o = c.act(&district(), command_of(Action::DenyPostpone));
    assert_eq!(applied(&o), Status::InProgress);
    assert_eq!(c.state.as_ref().unwrap().deadline_ms, Some(moved));
}

/// A clue's whole life: accepted and dispatched by its street office, returned by the wrong
/// department, dispatched again, a postponement asked and approved, supervised, handled, sent
/// back for rework, handled again, closed and rated.
#[test]
fn a_clue_lives_through_return_rework_postponement_and_supervision_to_closure() {
    let p = processor();
    let mut c = Clue::reported(&p, 42, MONDAY_9AM);
    let street = c.street_office();
    let wrong = department("urban_management");
    let right = department(DEPT);
    let steps: Vec<(Actor, Command, Status)> = vec![
        (
            street.clone(),
            Command::Lifecycle(Lifecycle::Accept),
            Status::Accepted,
        ),
        (
            street.clone(),
            Command::Lifecycle(Lifecycle::Dispatch {
                department: "urban_management".parse().unwrap(),
            }),
            Status::Dispatched,
        ),
        (
            wrong.clone(),
            Command::Lifecycle(Lifecycle::Return {
                reason: "not ours: a water affairs cover".into(),
            }),
            Status::Accepted,
        ),
        (
            street.clone(),
            Command::Lifecycle(Lifecycle::Dispatch {
                department: DEPT.parse().unwrap(),
            }),
            Status::Dispatched,
        ),
        (
            right.clone(),
            Command::Lifecycle(Lifecycle::Start),
            Status::InProgress,
        ),
        (
            right.clone(),
            Command::Lifecycle(Lifecycle::RequestPostpone {
                reason: "cover on order".into(),
                working_hours: 4,
            }),
            Status::InProgress,
        ),
        (
            district(),
            command_of(Action::ApprovePostpone),
            Status::InProgress,
        ),
        (
            district(),
            Command::Lifecycle(Lifecycle::Supervise {
                note: "居民反映强烈".into(),
            }),
            Status::InProgress,
        ),
        (right.clone(), command_of(Action::Handle), Status::Handled),
        (
            street.clone(),
            Command::Lifecycle(Lifecycle::VerifyFail {
                reason: "cover rocks".into(),
            }),
            Status::Dispatched,
        ),
        (
            right.clone(),
            Command::Lifecycle(Lifecycle::Start),
            Status::InProgress,
        ),
        (right.clone(), command_of(Action::Handle), Status::Handled),
        (
            street.clone(),
            Command::Lifecycle(Lifecycle::VerifyOk),
            Status::Closed,
        ),
        (
            reporter(),
            Command::Lifecycle(Lifecycle::Rate {
                rating: 5,
                note: "快".into(),
            }),
            Status::Closed,
        ),
    ];
    for (i, (who, command, want)) in steps.into_iter().enumerate() {
        if i == 3 {
            // Returned: the department it was dispatched to holds it no longer.
            let o = c.act(&wrong, Command::Lifecycle(Lifecycle::Start));
            assert_eq!(
                refused(&o),
                (RefusalClass::Forbidden, RefusalReason::NotAssigned)
            );
        }
        let o = c.act(&who, command);
        assert_eq!(applied(&o), want, "step {i}");
    }
    let types: Vec<&str> = c.events.iter().map(|e| e.fact.type_name()).collect();
    assert_eq!(
        types,
        [
            "reported",
            "accepted",
            "dispatched",
            "returned",
            "dispatched",
            "started",
            "postpone_requested",
            "postponed",
            "supervised",
            "handled",
            "verify_failed",
            "started",
            "handled",
            "verified",
            "rated"
        ]
    );
    let seqs: Vec<u32> = c.events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (0..15).collect::<Vec<_>>());
    // Who did what: the report's reporter, then each actor in its role.
    let roles: Vec<ActorKind> = c
        .events
        .iter()
        .map(|e| e.actor.as_ref().unwrap().kind)
        .collect();
    assert_eq!(roles[0], ActorKind::Reporter);
    assert_eq!(roles[3], ActorKind::Department);
    assert_eq!(roles[7], ActorKind::District);
    assert_eq!(roles[14], ActorKind::Reporter);
    let o = c.act(
        &reporter(),
        Command::Lifecycle(Lifecycle::Rate {
            rating: 1,
            note: String::new(),
        }),
    );
    assert_eq!(
        refused(&o),
        (RefusalClass::Conflict, RefusalReason::AlreadyRated)
    );
    // Withdrawal: only before acceptance.
    let mut w = Clue::reported(&p, 43, MONDAY_9AM);
    assert_eq!(
        applied(&w.act(&reporter(), command_of(Action::Withdraw))),
        Status::Withdrawn
    );
    let mut late = clue_at(&p, Status::Accepted, 44);
    assert_eq!(
        refused(&late.act(&reporter(), command_of(Action::Withdraw))),
        (RefusalClass::Conflict, RefusalReason::IllegalTransition)
    );
}

/// A retried command (same command id) gets its first verdict again and applies nothing, even
/// when the clue moved on so that deciding again would give another answer.
#[test]
fn a_repeated_command_gets_its_first_verdict_and_applies_nothing() {
    let p = processor();
    let mut c = clue_at(&p, Status::InProgress, 50);
    let supervise = c.command(&district(), command_of(Action::Supervise));
    let first = c.verdict_of(&supervise);
    assert_eq!(applied(&first), Status::InProgress);
    let seq = c.state.as_ref().unwrap().seq;
    for _ in 0..3 {
        assert_eq!(c.verdict_of(&supervise), first);
    }
    assert_eq!(c.state.as_ref().unwrap().seq, seq, "applied once");
    assert_eq!(
        c.events
            .iter()
            .filter(|e| e.fact.type_name() == "supervised")
            .count(),
        1
    );
    // Refused first (handled before started is illegal)… then the clue is started, and the
    // same command is still refused.
    let mut d = clue_at(&p, Status::Dispatched, 51);
    let handle = d.command(&department(DEPT), command_of(Action::Handle));
    let refusal = d.verdict_of(&handle);
    assert_eq!(refused(&refusal).1, RefusalReason::IllegalTransition);
    applied(&d.act(&department(DEPT), Command::Lifecycle(Lifecycle::Start)));
    assert_eq!(d.verdict_of(&handle), refusal);
    assert_eq!(d.status(), Status::InProgress);
    // The memory is bounded: verdicts older than the window are forgotten.
    let mut e = clue_at(&p, Status::InProgress, 52);
    let oldest = e.command(&district(), command_of(Action::Supervise));
    e.verdict_of(&oldest);
    for _ in 0..REMEMBERED_OUTCOMES {
        e.act(&district(), command_of(Action::Supervise));
    }
    let remembered = &e.state.as_ref().unwrap().outcomes;
    assert_eq!(remembered.len(), REMEMBERED_OUTCOMES);
    assert!(remembered.iter().all(|o| o.command_id != oldest.command_id));
}

/// An overdue fact once per deadline: not before the deadline, not twice, not for a clue out
/// of the loop; a postponement gives a new deadline that may pass again.
#[test]
fn overdue_is_emitted_once_per_deadline() {
    let p = processor();
    let mut c = clue_at(&p, Status::Dispatched, 60);
    let s = c.state.clone().unwrap();
    let deadline = s.deadline_ms.unwrap();
    assert!(p.overdue(c.id, &s, deadline, deadline + 1).is_none());
    let (next, event) = p.overdue(c.id, &s, deadline + 1, deadline + 5).unwrap();
    assert_eq!(
        event.fact,
        Fact::Overdue {
            deadline_ms: deadline
        }
    );
    assert_eq!(
        (
            event.seq,
            event.status,
            event.occurred_at_ms,
            event.processed_at_ms
        ),
        (s.seq + 1, Status::Dispatched, deadline, deadline + 5)
    );
    assert_eq!(event.command_id, CommandId::for_overdue(c.id, deadline));
    assert_eq!(event.actor.as_ref().unwrap().kind, ActorKind::System);
    assert!(p.overdue(c.id, &next, u64::MAX, u64::MAX).is_none());
    c.state = Some(next);
    // An approved postponement gives a new deadline, overdue in its turn.
    c.act(&department(DEPT), command_of(Action::RequestPostpone));
    c.act(&district(), command_of(Action::ApprovePostpone));
    let s = c.state.clone().unwrap();
    let later = s.deadline_ms.unwrap();
    assert!(later > deadline);
    let (_, again) = p.overdue(c.id, &s, later + 1, later + 1).unwrap();
    assert_eq!(again.fact, Fact::Overdue { deadline_ms: later });
    // Out of the loop, or not accepted: none.
    for status in [Status::Closed, Status::Rejected, Status::Reported] {
        let s = clue_at(&p, status, 61 + status as u128).state.unwrap();
        assert!(
            p.overdue(c.id, &s, u64::MAX, u64::MAX).is_none(),
            "{status}"
        );
    }
}
