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
//! # Deadlines
//!
//! The SLA clock starts at acceptance: the `accepted` fact carries `deadline_ms` = the accept's
//! issue time + the category's limit in working time ([`gridclue_core::calendar`]). A postponement
//! (缓办/延期) extends the current deadline by its working hours, in working time; before
//! acceptance there is no deadline to extend, and it is refused.
//!
//! # Cases leaving the loop
//!
//! When a case (inside, not a duplicate) becomes terminal — closed, rejected, merged — a
//! [`DedupeKind::Closed`] forward tells the dedupe stage that later reports no longer duplicate
//! it.

use std::sync::Arc;

use gridclue_core::category::{Catalog, CategoryCode};
use gridclue_core::status::{next_status, TransitionError};
use gridclue_core::wire::{
    Command, CommandEnvelope, DlqReason, EventEnvelope, Fact, Placement, Report, Reported,
    SCHEMA_VERSION,
};
use gridclue_core::{ClueId, CommandId, Status};
use serde::{Deserialize, Serialize};

use crate::dedupe::{DedupeConfig, DedupeKind, DedupeRecord, DEDUPE_VERSION};
use crate::geoindex::{Assignment, GeoIndex};
use gridclue_core::calendar::Calendar;

/// How many recent command ids a clue remembers to recognise repeats.
const REMEMBERED_COMMANDS: usize = 16;
/// How many commands a pending clue keeps for after its verdict.
pub const MAX_DEFERRED: usize = 32;

/// What a report left in its clue's state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReportInfo {
    pub category: CategoryCode,
    /// Placed inside the district.
    pub inside: bool,
    /// The owner street's code (empty outside the district).
    #[serde(default)]
    pub street_code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicate_of: Option<ClueId>,
}

/// A placed report waiting for its dedupe verdict, and the commands that came meanwhile.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PendingReport {
    pub command_id: CommandId,
    pub issued_at_ms: u64,
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
}

fn minus_one() -> i64 {
    -1
}

impl ClueState {
    /// Whether the clue is a case: placed inside the district and not a duplicate.
    fn is_case(&self) -> bool {
        self.report
            .as_ref()
            .is_some_and(|r| r.inside && r.duplicate_of.is_none())
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
    /// Nothing visible yet: a report waiting for its verdict, or a command kept for after it.
    Held,
    /// A repeat of a command already handled: nothing to do.
    Repeat,
}

/// A record for the dedupe stage, keyed by the owner street.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Forward {
    pub street_code: String,
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

fn transition_reason(e: TransitionError) -> DlqReason {
    match e {
        TransitionError::UnknownClue => DlqReason::UnknownClue,
        TransitionError::Terminal { .. } => DlqReason::TerminalState,
        TransitionError::AlreadyReported | TransitionError::Illegal { .. } => {
            DlqReason::IllegalTransition
        }
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
        if state.is_some_and(|s| s.recent_commands.contains(&cmd.command_id)) {
            return unchanged(Output::Repeat);
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
            (None, _) => refused(
                DlqReason::UnknownClue,
                TransitionError::UnknownClue.to_string(),
            ),
        }
    }

    /// Places and routes a new report: outside the district it is answered at once; inside, the
    /// clue waits for the dedupe stage's verdict.
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
        let street_code = placement
            .grid()
            .map(|g| g.street_code().to_owned())
            .unwrap_or_default();
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
        let mut state = ClueState {
            status: Status::Reported,
            seq: 0,
            deadline_ms: None,
            recent_commands: vec![cmd.command_id],
            report: Some(ReportInfo {
                category: report.category.clone(),
                inside: kind != AssignmentKind::Outside,
                street_code: street_code.clone(),
                duplicate_of: None,
            }),
            pending: None,
            applied_offset: ctx.offset,
        };
        if kind == AssignmentKind::Outside {
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
        }
        state.pending = Some(Box::new(PendingReport {
            command_id: cmd.command_id,
            issued_at_ms: cmd.issued_at_ms,
            fact,
            deferred: Vec::new(),
        }));
        let forward = Forward {
            street_code: street_code.clone(),
            record: DedupeRecord {
                v: DEDUPE_VERSION,
                clue_id: cmd.clue_id,
                kind: DedupeKind::Placed {
                    street_code: street_code.clone(),
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
            return refused(
                DlqReason::TooManyPending,
                format!(
                    "the clue's report is still being deduplicated and already has \
                     {MAX_DEFERRED} commands waiting; retry later"
                ),
            );
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
            seq: 0,
            deadline_ms: None,
            recent_commands: s.recent_commands.clone(),
            report: s.report.clone().map(|r| ReportInfo { duplicate_of, ..r }),
            pending: None,
            applied_offset: ctx.offset,
        };
        remember(&mut state.recent_commands, cmd.command_id);
        let mut outputs = vec![Output::Event(Box::new(EventEnvelope {
            v: SCHEMA_VERSION,
            clue_id: cmd.clue_id,
            seq: 0,
            command_id: pending.command_id,
            occurred_at_ms: pending.issued_at_ms,
            processed_at_ms: ctx.now_ms,
            status,
            actor: None,
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
                Output::Event(_) => Some(o),
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
        if s.recent_commands.contains(&cmd.command_id) {
            return unchanged(Output::Repeat);
        }
        let next = match next_status(Some(s.status), cmd.command.action()) {
            Ok(next) => next,
            // A retried report under a fresh command id is still the same clue.
            Err(TransitionError::AlreadyReported) => return unchanged(Output::Repeat),
            Err(e) => return refused(transition_reason(e), e.to_string()),
        };
        let current_deadline = s.deadline_ms;
        let (fact, deadline_ms) = match &cmd.command {
            Command::Report(_) | Command::DedupeVerdict { .. } => {
                unreachable!("reports and verdicts of existing clues are repeats")
            }
            // The closed loop's new commands are decided by the next change of this module.
            Command::RequestPostpone { .. }
            | Command::ApprovePostpone { .. }
            | Command::DenyPostpone { .. }
            | Command::Supervise { .. }
            | Command::Withdraw { .. }
            | Command::Rate { .. } => {
                return refused(
                    DlqReason::IllegalTransition,
                    format!(
                        "{} is not handled by this processor yet",
                        cmd.command.type_name()
                    ),
                )
            }
            Command::Accept => {
                // The SLA clock starts now.
                let deadline = s
                    .report
                    .as_ref()
                    .and_then(|r| self.catalog.get(r.category.as_str()))
                    .and_then(|c| self.calendar.deadline(cmd.issued_at_ms, c.deadline));
                (
                    Fact::Accepted {
                        deadline_ms: deadline,
                        yellow_at_ms: None,
                    },
                    deadline,
                )
            }
            Command::Reject { reason } => (
                Fact::Rejected {
                    reason: reason.clone(),
                },
                None,
            ),
            Command::Merge { duplicate_of } => (
                Fact::Merged {
                    duplicate_of: *duplicate_of,
                },
                None,
            ),
            Command::Dispatch { department } => (
                Fact::Dispatched {
                    department: department.clone(),
                },
                current_deadline,
            ),
            Command::Start => (Fact::Started, current_deadline),
            Command::Handle { note, photos } => (
                Fact::Handled {
                    note: note.clone(),
                    photos: photos.clone(),
                },
                current_deadline,
            ),
            Command::Return { reason } => (
                Fact::Returned {
                    reason: reason.clone(),
                },
                current_deadline,
            ),
            Command::VerifyOk => (Fact::Verified, current_deadline),
            Command::VerifyFail { reason } => (
                Fact::VerifyFailed {
                    reason: reason.clone(),
                },
                current_deadline,
            ),
            Command::Postpone {
                reason,
                working_hours,
            } => {
                let Some(base) = current_deadline else {
                    return refused(
                        DlqReason::IllegalTransition,
                        "nothing to postpone: the deadline starts when the clue is accepted".into(),
                    );
                };
                let deadline = self
                    .calendar
                    .add_working_hours(base, *working_hours)
                    .unwrap_or(base + u64::from(*working_hours) * 3_600_000);
                (
                    Fact::Postponed {
                        reason: reason.clone(),
                        deadline_ms: deadline,
                        yellow_at_ms: None,
                        working_hours: Some(*working_hours),
                    },
                    Some(deadline),
                )
            }
        };
        let mut forwards = Vec::new();
        if s.is_case() && !s.status.is_terminal() && next.is_terminal() {
            if let Some(r) = &s.report {
                forwards.push(Forward {
                    street_code: r.street_code.clone(),
                    record: DedupeRecord {
                        v: DEDUPE_VERSION,
                        clue_id: cmd.clue_id,
                        kind: DedupeKind::Closed,
                    },
                });
            }
        }
        let mut recent = s.recent_commands.clone();
        remember(&mut recent, cmd.command_id);
        let seq = s.seq + 1;
        let event = EventEnvelope {
            v: SCHEMA_VERSION,
            clue_id: cmd.clue_id,
            seq,
            command_id: cmd.command_id,
            occurred_at_ms: cmd.issued_at_ms,
            processed_at_ms: ctx.now_ms,
            status: next,
            actor: Some(cmd.actor.clone()),
            fact,
        };
        Decision {
            next: Some(ClueState {
                status: next,
                seq,
                deadline_ms,
                recent_commands: recent,
                report: s.report.clone(),
                pending: None,
                applied_offset: ctx.offset,
            }),
            outputs: vec![Output::Event(Box::new(event))],
            forwards,
            assignment: None,
            duplicate_of: None,
        }
    }
}

/// Clue ids are Kafka keys; the key must match the clue inside.
pub fn key_matches(key: Option<&[u8]>, clue: ClueId) -> bool {
    key.and_then(|k| std::str::from_utf8(k).ok())
        .and_then(|k| k.parse::<ClueId>().ok())
        == Some(clue)
}
