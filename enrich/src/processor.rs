//! The pure heart of the clue processor: one command plus the clue's current state in, the
//! clue's next state and its outputs out. No I/O, no clocks: time and the command's log offset
//! are arguments.
//!
//! # A report's way in
//!
//! A report inside the district is placed (grid, community, street) and routed (department,
//! urgency), then held **pending**: its placement goes to the dedupe stage ([`crate::dedupe`])
//! as a [`Forward`] keyed by the owner street, and the clue's first fact appears when the
//! stage's verdict ([`Command::DedupeVerdict`]) comes back: `reported`, or `duplicate` with
//! `duplicate_of` (still a report: the rider did the work). Commands for a pending clue are kept
//! (up to [`MAX_DEFERRED`]) and applied in their order right after the verdict, so a client that
//! acts on a clue at once sees the same result as one that waits. Points outside the district
//! and unknown categories are answered at once (an `outside` fact; a refusal).
//!
//! # The closed loop
//!
//! Every other command is a transition a person asked for. The processor, the one writer per
//! clue, checks the actor's role and scope against the clue ([`gridclue_core::roles`]: a street
//! office acts on its street's clues, a department on clues dispatched to it now, a reporter on
//! its own; 403), then the status machine (409), then what the status does not say (a
//! postponement needs a running deadline and at most one request pending, an approval needs a
//! request, a clue is rated once, a dispatch names a known department; 409). Each transition gets
//! a verdict ([`OutcomeRecord`], for the gateway waiting to answer the client), and the clue
//! remembers the verdicts of its recent commands: a repeated command id is answered with the
//! same verdict again and changes nothing, even if the clue moved on meanwhile.
//!
//! # Deadlines
//!
//! The SLA clock starts at acceptance: the `accepted` fact carries `deadline_ms` = the accept's
//! issue time + the category's limit in working time ([`gridclue_core::calendar`]), and `yellow_at_ms`,
//! when only 20% of that working time remains ([`gridclue_core::light`]). An approved
//! postponement (延期) extends the current deadline by its working hours, in working time, and
//! moves `yellow_at_ms` with it. [`Processor::overdue`] gives the `overdue` fact of a deadline
//! that passed with the clue open, once per deadline: the clue remembers which deadline it was
//! emitted for (in its state, hence in the changelog), so neither a restart nor a replay emits it
//! again; a postponement gives a new deadline that may pass in its turn.
//!
//! # Cases leaving the loop
//!
//! When a case (inside, not a duplicate) becomes terminal — closed, rejected, merged, withdrawn —
//! a [`DedupeKind::Closed`] forward tells the dedupe stage that later reports no longer
//! duplicate it.

use std::sync::Arc;

use gridclue_core::category::{Catalog, CategoryCode, DepartmentCode};
use gridclue_core::grid::StreetCode;
use gridclue_core::light::YELLOW_FRACTION;
use gridclue_core::roles::{self, ClueScope, Refusal, RefusalReason};
use gridclue_core::status::TransitionError;
use gridclue_core::wire::{
    Actor, Command, CommandEnvelope, DlqReason, EventEnvelope, Fact, Lifecycle, OutcomeRecord,
    Placement, Report, Reported, Verdict, SCHEMA_VERSION,
};
use gridclue_core::{ClueId, CommandId, Status};
use serde::{Deserialize, Serialize};

use crate::dedupe::{DedupeConfig, DedupeKind, DedupeRecord, DEDUPE_VERSION};
use crate::geoindex::{Assignment, GeoIndex};
use gridclue_core::calendar::Calendar;

/// How many recent command ids a clue remembers to recognise repeats.
const REMEMBERED_COMMANDS: usize = 16;
/// How many verdicts on recent transitions a clue remembers, to answer a retry the same way.
pub const REMEMBERED_OUTCOMES: usize = 16;
/// How many commands a pending clue keeps for after its verdict.
pub const MAX_DEFERRED: usize = 32;

/// What a report left in its clue's state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReportInfo {
    pub category: CategoryCode,
    /// Placed inside the district.
    pub inside: bool,
    /// The owner street (none outside the district; written as `""` then).
    #[serde(default, with = "gridclue_core::codes::empty_as_none")]
    pub street_code: Option<StreetCode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicate_of: Option<ClueId>,
    /// The reporter (a token's public id; empty in states written before it was kept, whose
    /// reporters can then neither withdraw nor rate).
    #[serde(default)]
    pub reporter_id: String,
}

/// A placed report waiting for its dedupe verdict, and the commands that came meanwhile.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PendingReport {
    pub command_id: CommandId,
    pub issued_at_ms: u64,
    /// When Kafka acknowledged the report to ingest (the report's fact carries it: the report
    /// was acknowledged then, whenever its verdict comes). Set by the Kafka loop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingested_at_ms: Option<u64>,
    /// The report's fact, complete but for `duplicate_of`.
    pub fact: Reported,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deferred: Vec<Deferred>,
}

/// A command kept until its clue's verdict, with its offset (for its DLQ record, if refused).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Deferred {
    pub offset: i64,
    pub command: CommandEnvelope,
}

/// What the processor keeps per clue (persisted in the `clues.state` changelog).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClueState {
    pub status: Status,
    /// The seq of the clue's latest fact (0 while pending: none yet).
    pub seq: u32,
    pub deadline_ms: Option<u64>,
    pub recent_commands: Vec<CommandId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<ReportInfo>,
    /// Set until the dedupe verdict on the report arrives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<Box<PendingReport>>,
    /// The offset of the last command of this clue that was handled (applied, refused or
    /// recognised as a repeat). Commands at or below it are not handled again.
    #[serde(default = "minus_one")]
    pub applied_offset: i64,
    /// The department the clue is dispatched to now (none before dispatch and after a return).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department: Option<DepartmentCode>,
    /// When the SLA clock started (the accept's issue time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted_at_ms: Option<u64>,
    /// When only 20% of the current limit's working time remains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub yellow_at_ms: Option<u64>,
    /// The working hours a department asked for, while the district has not decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postpone_requested_hours: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rating: Option<u8>,
    /// The deadline an `overdue` fact was emitted for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overdue_for: Option<u64>,
    /// Verdicts on the clue's recent transitions, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outcomes: Vec<OutcomeRecord>,
}

fn minus_one() -> i64 {
    -1
}

impl ClueState {
    fn new(status: Status, report: Option<ReportInfo>, offset: i64) -> Self {
        Self {
            status,
            seq: 0,
            deadline_ms: None,
            recent_commands: Vec::new(),
            report,
            pending: None,
            applied_offset: offset,
            department: None,
            accepted_at_ms: None,
            yellow_at_ms: None,
            postpone_requested_hours: None,
            rating: None,
            overdue_for: None,
            outcomes: Vec::new(),
        }
    }

    /// Whether the clue is a case: placed inside the district and not a duplicate.
    fn is_case(&self) -> bool {
        self.report
            .as_ref()
            .is_some_and(|r| r.inside && r.duplicate_of.is_none())
    }

    /// What decides who may act on the clue.
    pub fn scope(&self) -> ClueScope<'_> {
        let report = self.report.as_ref();
        ClueScope {
            street_code: report.and_then(|r| r.street_code.as_ref()),
            department: self.department.as_ref(),
            reporter_id: report.map_or("", |r| r.reporter_id.as_str()),
        }
    }

    /// The earliest instant an `overdue` fact may be due for this clue (`None`: none may be).
    pub fn overdue_due_at(&self) -> Option<u64> {
        let deadline = self.deadline_ms?;
        let open = self.pending.is_none() && self.status.is_open();
        (open && self.overdue_for != Some(deadline)).then_some(deadline)
    }

    fn remember_outcome(&mut self, outcome: OutcomeRecord) {
        self.outcomes.push(outcome);
        if self.outcomes.len() > REMEMBERED_OUTCOMES {
            self.outcomes.remove(0);
        }
    }
}

#[derive(Debug, PartialEq)]
pub enum Output {
    Event(Box<EventEnvelope>),
    /// A well-formed command that cannot be applied: the command handled now, or (`deferred`)
    /// one kept for after the verdict.
    Rejected {
        reason: DlqReason,
        detail: String,
        deferred: Option<Box<Deferred>>,
    },
    /// The verdict on a transition, for the client waiting for it (again for a repeat).
    Outcome(Box<OutcomeRecord>),
    /// Nothing visible yet: a report waiting for its verdict, or a command kept for after it.
    Held,
    /// A repeat of a command already handled: nothing to do.
    Repeat,
}

/// A record for the dedupe stage, keyed by the owner street.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Forward {
    pub street_code: StreetCode,
    pub record: DedupeRecord,
}

#[derive(Debug)]
pub struct Decision {
    /// The clue's new state; `None` when the command changed nothing.
    pub next: Option<ClueState>,
    /// What the command (and, for a verdict, the commands kept for it) produced, in order.
    pub outputs: Vec<Output>,
    /// What the dedupe stage must learn, in order.
    pub forwards: Vec<Forward>,
    /// How the report was placed, for metrics.
    pub assignment: Option<AssignmentKind>,
    /// The open case a verdict found this report duplicates.
    pub duplicate_of: Option<ClueId>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AssignmentKind {
    Inside,
    Boundary,
    Outside,
}

impl AssignmentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AssignmentKind::Inside => "inside",
            AssignmentKind::Boundary => "boundary",
            AssignmentKind::Outside => "outside",
        }
    }
}

/// The context of one decision.
#[derive(Clone, Copy, Debug)]
pub struct DecideCtx {
    /// Processing time, stamped on facts as `processed_at_ms` (never used in a decision).
    pub now_ms: u64,
    /// The command's offset in its partition.
    pub offset: i64,
    /// The command's partition (where the verdict on a report must come back).
    pub partition: i32,
}

pub struct Processor {
    pub index: Arc<GeoIndex>,
    pub catalog: Catalog,
    pub calendar: Calendar,
    pub dedupe: DedupeConfig,
}

/// The DLQ reason of a refused transition.
fn dlq_reason(reason: RefusalReason) -> DlqReason {
    match reason {
        RefusalReason::RoleNotAllowed
        | RefusalReason::OtherStreet
        | RefusalReason::NotAssigned
        | RefusalReason::NotOwnClue => DlqReason::Forbidden,
        RefusalReason::UnknownClue => DlqReason::UnknownClue,
        RefusalReason::TerminalState => DlqReason::TerminalState,
        RefusalReason::TooManyPending => DlqReason::TooManyPending,
        RefusalReason::IllegalTransition
        | RefusalReason::NoDeadline
        | RefusalReason::PostponementPending
        | RefusalReason::NoPostponementPending
        | RefusalReason::AlreadyRated
        | RefusalReason::UnknownDepartment => DlqReason::IllegalTransition,
    }
}

fn unchanged(output: Output) -> Decision {
    Decision {
        next: None,
        outputs: vec![output],
        forwards: Vec::new(),
        assignment: None,
        duplicate_of: None,
    }
}

fn refused(reason: DlqReason, detail: String) -> Decision {
    unchanged(Output::Rejected {
        reason,
        detail,
        deferred: None,
    })
}

/// Whether a command is a transition a client asked for (and so gets a verdict).
fn is_transition(cmd: &CommandEnvelope) -> bool {
    matches!(cmd.command, Command::Lifecycle(_))
}

fn verdict_of(cmd: &CommandEnvelope, ctx: &DecideCtx, verdict: Verdict) -> OutcomeRecord {
    OutcomeRecord {
        v: SCHEMA_VERSION,
        command_id: cmd.command_id,
        clue_id: cmd.clue_id,
        action: cmd.command.action(),
        actor_id: cmd.actor.id.clone(),
        decided_at_ms: ctx.now_ms,
        verdict,
    }
}

/// A refusal nothing is remembered for (the clue does not exist, or the same command may
/// succeed later): its DLQ record and, for a transition, its verdict.
fn refused_now(cmd: &CommandEnvelope, ctx: &DecideCtx, refusal: Refusal) -> Decision {
    let mut d = refused(dlq_reason(refusal.reason), refusal.detail.clone());
    if is_transition(cmd) {
        d.outputs.push(Output::Outcome(Box::new(verdict_of(
            cmd,
            ctx,
            refused_verdict(&refusal, None),
        ))));
    }
    d
}

fn refused_verdict(refusal: &Refusal, status: Option<Status>) -> Verdict {
    Verdict::Refused {
        class: refusal.class(),
        reason: refusal.reason,
        detail: refusal.detail.clone(),
        status,
    }
}

/// A command the clue has seen: a transition is answered with its first verdict again, and
/// nothing is applied.
fn repeat(s: &ClueState, cmd: &CommandEnvelope) -> Option<Decision> {
    if let Some(o) = s.outcomes.iter().find(|o| o.command_id == cmd.command_id) {
        return Some(unchanged(Output::Outcome(Box::new(o.clone()))));
    }
    s.recent_commands
        .contains(&cmd.command_id)
        .then(|| unchanged(Output::Repeat))
}

fn remember(recent: &mut Vec<CommandId>, id: CommandId) {
    recent.push(id);
    if recent.len() > REMEMBERED_COMMANDS {
        recent.remove(0);
    }
}

impl Processor {
    pub fn decide(
        &self,
        state: Option<&ClueState>,
        cmd: &CommandEnvelope,
        ctx: &DecideCtx,
    ) -> Decision {
        if let Some(repeat) = state.and_then(|s| repeat(s, cmd)) {
            return repeat;
        }
        match (state, &cmd.command) {
            (Some(s), Command::DedupeVerdict { duplicate_of }) => match &s.pending {
                Some(pending) => self.complete(s, pending, cmd, *duplicate_of, ctx),
                // Issued again after the first completed the report.
                None => unchanged(Output::Repeat),
            },
            (None, Command::DedupeVerdict { .. }) => refused(
                DlqReason::UnknownClue,
                "a dedupe verdict for a clue that was never reported".into(),
            ),
            (Some(s), _) => match &s.pending {
                Some(pending) => self.defer(s, pending, cmd, ctx),
                None => self.apply(s, cmd, ctx),
            },
            (None, Command::Report(report)) => self.place(cmd, report, ctx),
            (None, _) => refused_now(cmd, ctx, Refusal::from(TransitionError::UnknownClue)),
        }
    }

    fn place(&self, cmd: &CommandEnvelope, report: &Report, ctx: &DecideCtx) -> Decision {
        let Some(category) = self.catalog.get(report.category.as_str()) else {
            return refused(
                DlqReason::UnknownCategory,
                format!("category {} is not in the catalog", report.category),
            );
        };
        let (placement, kind) = match self
            .index
            .assign(report.location.lon(), report.location.lat())
        {
            Assignment::Inside { grid, on_boundary } => (
                Placement::Inside {
                    grid_code: grid,
                    on_boundary,
                },
                if on_boundary {
                    AssignmentKind::Boundary
                } else {
                    AssignmentKind::Inside
                },
            ),
            Assignment::Outside {
                nearest,
                distance_m,
            } => (
                Placement::Outside {
                    nearest_grid_code: nearest,
                    distance_m,
                },
                AssignmentKind::Outside,
            ),
        };
        let street_code = placement.grid().map(|g| g.street_code());
        let fact = Reported {
            category: report.category.clone(),
            location: report.location,
            placement,
            map_version: self.index.map_version().to_owned(),
            department: category.department.clone(),
            urgency: category.urgency,
            deadline_ms: None,
            reporter_id: cmd.actor.id.clone(),
            reporter_group: cmd.actor.group,
            duplicate_of: None,
            description: report.description.clone(),
            photos: report.photos.clone(),
            channel: report.channel,
        };
        let info = ReportInfo {
            category: report.category.clone(),
            inside: kind != AssignmentKind::Outside,
            street_code,
            duplicate_of: None,
            reporter_id: cmd.actor.id.clone(),
        };
        let mut state = ClueState::new(Status::Reported, Some(info), ctx.offset);
        state.recent_commands.push(cmd.command_id);
        let Some(street_code) = street_code.filter(|_| kind != AssignmentKind::Outside) else {
            // Recorded and flagged, then closed off: no street owns it, so it can never enter
            // the loop.
            state.status = Status::Rejected;
            let event = EventEnvelope {
                v: SCHEMA_VERSION,
                clue_id: cmd.clue_id,
                seq: 0,
                command_id: cmd.command_id,
                occurred_at_ms: cmd.issued_at_ms,
                processed_at_ms: ctx.now_ms,
                ingested_at_ms: None,
                status: Status::Rejected,
                actor: Some(cmd.actor.clone()),
                fact: Fact::Reported(Box::new(fact)),
            };
            return Decision {
                next: Some(state),
                outputs: vec![Output::Event(Box::new(event))],
                forwards: Vec::new(),
                assignment: Some(kind),
                duplicate_of: None,
            };
        };
        state.pending = Some(Box::new(PendingReport {
            command_id: cmd.command_id,
            issued_at_ms: cmd.issued_at_ms,
            ingested_at_ms: None,
            fact,
            deferred: Vec::new(),
        }));
        let forward = Forward {
            street_code,
            record: DedupeRecord {
                v: DEDUPE_VERSION,
                clue_id: cmd.clue_id,
                kind: DedupeKind::Placed {
                    street_code,
                    category: report.category.clone(),
                    lat: report.location.lat(),
                    lon: report.location.lon(),
                    reported_at_ms: cmd.issued_at_ms,
                    commands_partition: ctx.partition,
                },
            },
        };
        Decision {
            next: Some(state),
            outputs: vec![Output::Held],
            forwards: vec![forward],
            assignment: Some(kind),
            duplicate_of: None,
        }
    }

    /// Keeps a command for a clue that waits for its verdict.
    fn defer(
        &self,
        s: &ClueState,
        pending: &PendingReport,
        cmd: &CommandEnvelope,
        ctx: &DecideCtx,
    ) -> Decision {
        if matches!(cmd.command, Command::Report(_)) {
            // A retried report under a fresh command id.
            return unchanged(Output::Repeat);
        }
        // A command kept twice (a producer retry) is recognised as a repeat when it is applied,
        // exactly as it would have been without the wait.
        if pending.deferred.len() >= MAX_DEFERRED {
            let refusal = Refusal::new(
                RefusalReason::TooManyPending,
                format!(
                    "the clue's report is still being deduplicated and already has \
                     {MAX_DEFERRED} commands waiting; retry later"
                ),
            );
            return refused_now(cmd, ctx, refusal);
        }
        let mut next = s.clone();
        if let Some(p) = &mut next.pending {
            p.deferred.push(Deferred {
                offset: ctx.offset,
                command: cmd.clone(),
            });
        }
        next.applied_offset = ctx.offset;
        Decision {
            next: Some(next),
            outputs: vec![Output::Held],
            forwards: Vec::new(),
            assignment: None,
            duplicate_of: None,
        }
    }

    /// The verdict: the report's fact appears, then the commands kept for it are applied.
    fn complete(
        &self,
        s: &ClueState,
        pending: &PendingReport,
        cmd: &CommandEnvelope,
        duplicate_of: Option<ClueId>,
        ctx: &DecideCtx,
    ) -> Decision {
        let status = if duplicate_of.is_some() {
            Status::Duplicate
        } else {
            Status::Reported
        };
        let mut fact = pending.fact.clone();
        fact.duplicate_of = duplicate_of;
        let mut state = ClueState {
            status,
            report: s.report.clone().map(|r| ReportInfo { duplicate_of, ..r }),
            pending: None,
            applied_offset: ctx.offset,
            ..s.clone()
        };
        remember(&mut state.recent_commands, cmd.command_id);
        let mut outputs = vec![Output::Event(Box::new(EventEnvelope {
            v: SCHEMA_VERSION,
            clue_id: cmd.clue_id,
            seq: 0,
            command_id: pending.command_id,
            occurred_at_ms: pending.issued_at_ms,
            processed_at_ms: ctx.now_ms,
            ingested_at_ms: pending.ingested_at_ms,
            status,
            actor: Some(reporter_actor(&pending.fact)),
            fact: Fact::Reported(Box::new(fact)),
        }))];
        let mut forwards = Vec::new();
        for d in &pending.deferred {
            let sub = self.apply(
                &state,
                &d.command,
                &DecideCtx {
                    offset: d.offset,
                    ..*ctx
                },
            );
            if let Some(next) = sub.next {
                state = next;
            }
            forwards.extend(sub.forwards);
            outputs.extend(sub.outputs.into_iter().filter_map(|o| match o {
                Output::Rejected { reason, detail, .. } => Some(Output::Rejected {
                    reason,
                    detail,
                    deferred: Some(Box::new(d.clone())),
                }),
                Output::Event(_) | Output::Outcome(_) => Some(o),
                Output::Held | Output::Repeat => None,
            }));
        }
        state.applied_offset = ctx.offset;
        Decision {
            next: Some(state),
            outputs,
            forwards,
            assignment: None,
            duplicate_of,
        }
    }

    /// Applies a command to an existing clue that is not waiting for a verdict.
    fn apply(&self, s: &ClueState, cmd: &CommandEnvelope, ctx: &DecideCtx) -> Decision {
        if let Some(repeat) = repeat(s, cmd) {
            return repeat;
        }
        let Command::Lifecycle(step) = &cmd.command else {
            // A retried report under a fresh command id is still the same clue; a verdict for a
            // completed report was issued again.
            return unchanged(Output::Repeat);
        };
        let action = step.action();
        let status = match roles::check(&cmd.actor, action, s.status, &s.scope()) {
            Ok(status) => status,
            Err(refusal) => return self.refuse(s, cmd, ctx, refusal),
        };
        let mut next = ClueState {
            status,
            seq: s.seq + 1,
            applied_offset: ctx.offset,
            ..s.clone()
        };
        let fact = match self.transition(&mut next, s, cmd, step) {
            Ok(fact) => fact,
            Err(refusal) => return self.refuse(s, cmd, ctx, refusal),
        };
        let mut forwards = Vec::new();
        if s.is_case() && !s.status.is_terminal() && status.is_terminal() {
            if let Some(street_code) = s.report.as_ref().and_then(|r| r.street_code) {
                forwards.push(Forward {
                    street_code,
                    record: DedupeRecord {
                        v: DEDUPE_VERSION,
                        clue_id: cmd.clue_id,
                        kind: DedupeKind::Closed,
                    },
                });
            }
        }
        remember(&mut next.recent_commands, cmd.command_id);
        let event = EventEnvelope {
            v: SCHEMA_VERSION,
            clue_id: cmd.clue_id,
            seq: next.seq,
            command_id: cmd.command_id,
            occurred_at_ms: cmd.issued_at_ms,
            processed_at_ms: ctx.now_ms,
            ingested_at_ms: None,
            status,
            actor: Some(cmd.actor.clone()),
            fact,
        };
        let outcome = verdict_of(
            cmd,
            ctx,
            Verdict::Applied {
                status,
                seq: next.seq,
                deadline_ms: next.deadline_ms,
            },
        );
        next.remember_outcome(outcome.clone());
        Decision {
            next: Some(next),
            outputs: vec![
                Output::Event(Box::new(event)),
                Output::Outcome(Box::new(outcome)),
            ],
            forwards,
            assignment: None,
            duplicate_of: None,
        }
    }

    /// A refused transition on an existing clue: remembered, so a retry of the same command gets
    /// the same refusal even after the clue moved on.
    fn refuse(
        &self,
        s: &ClueState,
        cmd: &CommandEnvelope,
        ctx: &DecideCtx,
        refusal: Refusal,
    ) -> Decision {
        let outcome = verdict_of(cmd, ctx, refused_verdict(&refusal, Some(s.status)));
        let mut next = s.clone();
        next.applied_offset = ctx.offset;
        next.remember_outcome(outcome.clone());
        Decision {
            next: Some(next),
            outputs: vec![
                Output::Rejected {
                    reason: dlq_reason(refusal.reason),
                    detail: refusal.detail,
                    deferred: None,
                },
                Output::Outcome(Box::new(outcome)),
            ],
            forwards: Vec::new(),
            assignment: None,
            duplicate_of: None,
        }
    }

    /// The fact of a transition the role, scope and status allow, with what it changes in
    /// `next`; or the refusal of what the status does not say (409).
    fn transition(
        &self,
        next: &mut ClueState,
        s: &ClueState,
        cmd: &CommandEnvelope,
        step: &Lifecycle,
    ) -> Result<Fact, Refusal> {
        let conflict = |reason, detail: &str| Err(Refusal::new(reason, detail));
        let fact = match step {
            Lifecycle::Accept => {
                // The SLA clock starts now.
                let deadline = s
                    .report
                    .as_ref()
                    .and_then(|r| self.catalog.get(r.category.as_str()))
                    .and_then(|c| self.calendar.deadline(cmd.issued_at_ms, c.deadline));
                next.accepted_at_ms = Some(cmd.issued_at_ms);
                next.deadline_ms = deadline;
                next.yellow_at_ms = deadline.map(|d| self.yellow_at(cmd.issued_at_ms, d));
                Fact::Accepted {
                    deadline_ms: deadline,
                    yellow_at_ms: next.yellow_at_ms,
                }
            }
            Lifecycle::Reject { reason } => Fact::Rejected {
                reason: reason.clone(),
            },
            Lifecycle::Merge { duplicate_of } => {
                if *duplicate_of == cmd.clue_id {
                    return conflict(
                        RefusalReason::IllegalTransition,
                        "a clue cannot be merged into itself",
                    );
                }
                Fact::Merged {
                    duplicate_of: *duplicate_of,
                }
            }
            Lifecycle::Dispatch { department } => {
                if self.catalog.department(department.as_str()).is_none() {
                    return Err(Refusal::new(
                        RefusalReason::UnknownDepartment,
                        format!(
                            "no department {:?} in the category table",
                            department.as_str()
                        ),
                    ));
                }
                next.department = Some(department.clone());
                Fact::Dispatched {
                    department: department.clone(),
                }
            }
            Lifecycle::Start => Fact::Started,
            Lifecycle::Handle { note, photos } => Fact::Handled {
                note: note.clone(),
                photos: photos.clone(),
            },
            Lifecycle::Return { reason } => {
                // Back to the dispatcher: no department holds it until it is dispatched again.
                next.department = None;
                Fact::Returned {
                    reason: reason.clone(),
                }
            }
            Lifecycle::VerifyOk => Fact::Verified {
                working_ms: s
                    .accepted_at_ms
                    .map(|accepted| self.calendar.working_ms_between(accepted, cmd.issued_at_ms)),
            },
            // Rework goes back to the department that handled it.
            Lifecycle::VerifyFail { reason } => Fact::VerifyFailed {
                reason: reason.clone(),
            },
            Lifecycle::RequestPostpone {
                reason,
                working_hours,
            } => {
                if s.deadline_ms.is_none() {
                    return conflict(
                        RefusalReason::NoDeadline,
                        "nothing to postpone: the deadline starts when the clue is accepted",
                    );
                }
                if s.postpone_requested_hours.is_some() {
                    return conflict(
                        RefusalReason::PostponementPending,
                        "a postponement request already waits for the district's decision",
                    );
                }
                next.postpone_requested_hours = Some(*working_hours);
                Fact::PostponeRequested {
                    reason: reason.clone(),
                    working_hours: *working_hours,
                }
            }
            Lifecycle::ApprovePostpone {
                note,
                working_hours,
            } => {
                let Some(requested) = s.postpone_requested_hours else {
                    return conflict(
                        RefusalReason::NoPostponementPending,
                        "no postponement request waits for a decision",
                    );
                };
                let hours = working_hours.unwrap_or(requested);
                next.postpone_requested_hours = None;
                self.postpone(next, s, note.clone(), hours)?
            }
            Lifecycle::Postpone {
                reason,
                working_hours,
            } => self.postpone(next, s, reason.clone(), *working_hours)?,
            Lifecycle::DenyPostpone { reason } => {
                if s.postpone_requested_hours.is_none() {
                    return conflict(
                        RefusalReason::NoPostponementPending,
                        "no postponement request waits for a decision",
                    );
                }
                next.postpone_requested_hours = None;
                Fact::PostponeDenied {
                    reason: reason.clone(),
                }
            }
            Lifecycle::Supervise { note } => Fact::Supervised { note: note.clone() },
            Lifecycle::Withdraw { reason } => Fact::Withdrawn {
                reason: reason.clone(),
            },
            Lifecycle::Rate { rating, note } => {
                if !(1..=5).contains(rating) {
                    return conflict(
                        RefusalReason::IllegalTransition,
                        "a rating is a whole number from 1 to 5",
                    );
                }
                if s.rating.is_some() {
                    return conflict(RefusalReason::AlreadyRated, "the clue is rated already");
                }
                next.rating = Some(*rating);
                Fact::Rated {
                    rating: *rating,
                    note: note.clone(),
                }
            }
        };
        Ok(fact)
    }

    /// Moves the running deadline by `hours` working hours (an approved postponement).
    fn postpone(
        &self,
        next: &mut ClueState,
        s: &ClueState,
        reason: String,
        hours: u32,
    ) -> Result<Fact, Refusal> {
        let Some(base) = s.deadline_ms else {
            return Err(Refusal::new(
                RefusalReason::NoDeadline,
                "nothing to postpone: the deadline starts when the clue is accepted",
            ));
        };
        let deadline = self
            .calendar
            .add_working_hours(base, hours)
            .unwrap_or(base + u64::from(hours) * 3_600_000);
        next.deadline_ms = Some(deadline);
        next.yellow_at_ms = Some(self.yellow_at(s.accepted_at_ms.unwrap_or(base), deadline));
        Ok(Fact::Postponed {
            reason,
            deadline_ms: deadline,
            yellow_at_ms: next.yellow_at_ms,
            working_hours: Some(hours),
        })
    }

    /// When only 20% of the working time from `start_ms` to `deadline_ms` remains.
    fn yellow_at(&self, start_ms: u64, deadline_ms: u64) -> u64 {
        self.calendar
            .remaining_fraction_at(start_ms, deadline_ms, YELLOW_FRACTION)
    }

    /// The `overdue` fact of a clue whose deadline is before `cutoff_ms` with the clue still
    /// open, unless it was emitted for that deadline already; with the clue's next state. The
    /// fact is stamped at the deadline (when the clue became overdue; processed at `now_ms`) and
    /// identified by the clue, its seq and a command id derived from the deadline.
    pub fn overdue(
        &self,
        clue_id: ClueId,
        s: &ClueState,
        cutoff_ms: u64,
        now_ms: u64,
    ) -> Option<(ClueState, EventEnvelope)> {
        let deadline = s.overdue_due_at().filter(|d| *d < cutoff_ms)?;
        let next = ClueState {
            seq: s.seq + 1,
            overdue_for: Some(deadline),
            ..s.clone()
        };
        let event = EventEnvelope {
            v: SCHEMA_VERSION,
            clue_id,
            seq: next.seq,
            command_id: CommandId::for_overdue(clue_id, deadline),
            occurred_at_ms: deadline,
            processed_at_ms: now_ms,
            ingested_at_ms: None,
            status: s.status,
            actor: Some(Actor::system()),
            fact: Fact::Overdue {
                deadline_ms: deadline,
            },
        };
        Some((next, event))
    }
}

/// The reporter of a report, as the actor of its fact.
fn reporter_actor(fact: &Reported) -> Actor {
    Actor {
        kind: gridclue_core::wire::ActorKind::Reporter,
        id: fact.reporter_id.clone(),
        group: fact.reporter_group,
        scope: None,
    }
}

/// Clue ids are Kafka keys; the key must match the clue inside.
pub fn key_matches(key: Option<&[u8]>, clue: ClueId) -> bool {
    key.and_then(|k| std::str::from_utf8(k).ok())
        .and_then(|k| k.parse::<ClueId>().ok())
        == Some(clue)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// States are a changelog: what this binary writes must read back, and what earlier ones
    /// wrote (the street as a plain string, empty outside the district) must still read.
    #[test]
    fn report_info_keeps_the_street_in_its_written_form() {
        let outside = ReportInfo {
            category: CategoryCode::parse("manhole_cover").unwrap(),
            inside: false,
            street_code: None,
            duplicate_of: None,
            reporter_id: "r1".into(),
        };
        let json = serde_json::to_value(&outside).unwrap();
        assert_eq!(json["street_code"], "");
        assert_eq!(serde_json::from_value::<ReportInfo>(json).unwrap(), outside);

        let inside: ReportInfo = serde_json::from_str(
            r#"{"category":"manhole_cover","inside":true,"street_code":"310101001","reporter_id":"r1"}"#,
        )
        .unwrap();
        assert_eq!(
            inside.street_code,
            Some(StreetCode::parse("310101001").unwrap())
        );
        assert_eq!(
            serde_json::to_value(&inside).unwrap()["street_code"],
            "310101001"
        );

        let before_streets_were_kept: ReportInfo =
            serde_json::from_str(r#"{"category":"manhole_cover","inside":true}"#).unwrap();
        assert_eq!(before_streets_were_kept.street_code, None);
    }

    /// The department a clue is dispatched to is written as its plain code, and absent when
    /// none holds it, as before the code was typed.
    #[test]
    fn clue_state_keeps_the_department_in_its_written_form() {
        let mut state = ClueState::new(Status::Dispatched, None, 7);
        state.department = Some(DepartmentCode::parse("water_affairs").unwrap());
        let json = serde_json::to_value(&state).unwrap();
        assert_eq!(json["department"], "water_affairs");
        assert_eq!(serde_json::from_value::<ClueState>(json).unwrap(), state);

        state.department = None;
        let json = serde_json::to_value(&state).unwrap();
        assert!(json.get("department").is_none(), "{json}");
        assert_eq!(serde_json::from_value::<ClueState>(json).unwrap(), state);

        let mut bad = serde_json::to_value(&state).unwrap();
        bad["department"] = "Water Affairs".into();
        assert!(serde_json::from_value::<ClueState>(bad).is_err());
    }
}
