//! The pure heart of the clue processor: one command plus the clue's current state in, the
//! clue's next state and exactly one output out. No I/O, no clocks (time is an argument).

use gridclue_core::category::Catalog;
use gridclue_core::status::{next_status, TransitionError};
use gridclue_core::wire::{
    Command, CommandEnvelope, DlqReason, EventEnvelope, Fact, Placement, Reported, SCHEMA_VERSION,
};
use gridclue_core::{ClueId, CommandId, Status};
use serde::{Deserialize, Serialize};

use crate::geoindex::{Assignment, GeoIndex};

/// How many recent command ids a clue remembers to recognise repeats.
const REMEMBERED_COMMANDS: usize = 16;

/// What the processor keeps per clue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClueState {
    pub status: Status,
    /// The seq of the clue's latest fact.
    pub seq: u32,
    pub deadline_ms: Option<u64>,
    pub recent_commands: Vec<CommandId>,
}

#[derive(Debug, PartialEq)]
pub enum Output {
    Event(Box<EventEnvelope>),
    /// A well-formed command that cannot be applied.
    Rejected {
        reason: DlqReason,
        detail: String,
    },
    /// A repeat of a command already applied: nothing to do.
    Repeat,
}

#[derive(Debug)]
pub struct Decision {
    /// The clue's state afterwards (unchanged when the command was refused or repeated).
    pub state: Option<ClueState>,
    pub output: Output,
    /// How the report was placed, for metrics.
    pub assignment: Option<AssignmentKind>,
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

pub struct Processor {
    pub index: GeoIndex,
    pub catalog: Catalog,
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

impl Processor {
    pub fn decide(
        &self,
        state: Option<&ClueState>,
        cmd: &CommandEnvelope,
        now_ms: u64,
    ) -> Decision {
        let unchanged = state.cloned();
        if state.is_some_and(|s| s.recent_commands.contains(&cmd.command_id)) {
            return Decision {
                state: unchanged,
                output: Output::Repeat,
                assignment: None,
            };
        }
        let next = match next_status(state.map(|s| s.status), cmd.command.action()) {
            Ok(next) => next,
            // A retried report under a fresh command id is still the same clue.
            Err(TransitionError::AlreadyReported) => {
                return Decision {
                    state: unchanged,
                    output: Output::Repeat,
                    assignment: None,
                }
            }
            Err(e) => {
                return Decision {
                    state: unchanged,
                    output: Output::Rejected {
                        reason: transition_reason(e),
                        detail: e.to_string(),
                    },
                    assignment: None,
                }
            }
        };
        let mut assignment = None;
        let (fact, status, deadline_ms) = match &cmd.command {
            Command::Report(report) => {
                let Some(category) = self.catalog.get(report.category.as_str()) else {
                    return Decision {
                        state: unchanged,
                        output: Output::Rejected {
                            reason: DlqReason::UnknownCategory,
                            detail: format!("category {} is not in the catalog", report.category),
                        },
                        assignment: None,
                    };
                };
                let placed = self
                    .index
                    .assign(report.location.lon(), report.location.lat());
                let (placement, kind) = match placed {
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
                assignment = Some(kind);
                // A point outside the district is recorded and flagged, then closed off: no
                // street owns it, so it can never enter the loop.
                let status = if kind == AssignmentKind::Outside {
                    Status::Rejected
                } else {
                    next
                };
                let fact = Fact::Reported(Box::new(Reported {
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
                }));
                (fact, status, None)
            }
            Command::Accept => (Fact::Accepted, next, state.and_then(|s| s.deadline_ms)),
            Command::Reject { reason } => (
                Fact::Rejected {
                    reason: reason.clone(),
                },
                next,
                None,
            ),
            Command::Merge { duplicate_of } => (
                Fact::Merged {
                    duplicate_of: *duplicate_of,
                },
                next,
                None,
            ),
            Command::Dispatch { department } => (
                Fact::Dispatched {
                    department: department.clone(),
                },
                next,
                state.and_then(|s| s.deadline_ms),
            ),
            Command::Start => (Fact::Started, next, state.and_then(|s| s.deadline_ms)),
            Command::Handle { note } => (
                Fact::Handled { note: note.clone() },
                next,
                state.and_then(|s| s.deadline_ms),
            ),
            Command::Return { reason } => (
                Fact::Returned {
                    reason: reason.clone(),
                },
                next,
                state.and_then(|s| s.deadline_ms),
            ),
            Command::VerifyOk => (Fact::Verified, next, state.and_then(|s| s.deadline_ms)),
            Command::VerifyFail { reason } => (
                Fact::VerifyFailed {
                    reason: reason.clone(),
                },
                next,
                state.and_then(|s| s.deadline_ms),
            ),
            Command::Postpone {
                reason,
                working_hours,
            } => {
                let base = state.and_then(|s| s.deadline_ms).unwrap_or(now_ms);
                let deadline = base + u64::from(*working_hours) * 3_600_000;
                (
                    Fact::Postponed {
                        reason: reason.clone(),
                        deadline_ms: deadline,
                    },
                    next,
                    Some(deadline),
                )
            }
        };
        let seq = state.map_or(0, |s| s.seq + 1);
        let mut recent = state.map(|s| s.recent_commands.clone()).unwrap_or_default();
        recent.push(cmd.command_id);
        if recent.len() > REMEMBERED_COMMANDS {
            recent.remove(0);
        }
        let event = EventEnvelope {
            v: SCHEMA_VERSION,
            clue_id: cmd.clue_id,
            seq,
            command_id: cmd.command_id,
            occurred_at_ms: cmd.issued_at_ms,
            processed_at_ms: now_ms,
            status,
            fact,
        };
        Decision {
            state: Some(ClueState {
                status,
                seq,
                deadline_ms,
                recent_commands: recent,
            }),
            output: Output::Event(Box::new(event)),
            assignment,
        }
    }
}

/// Clue ids are Kafka keys; the key must match the clue inside.
pub fn key_matches(key: Option<&[u8]>, clue: ClueId) -> bool {
    key.and_then(|k| std::str::from_utf8(k).ok())
        .and_then(|k| k.parse::<ClueId>().ok())
        == Some(clue)
}
