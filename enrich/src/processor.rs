//! The pure heart of the clue processor: one command plus the clue's current state (and, for a
//! report, the partition's open clues) in, the clue's next state and exactly one output out. No
//! I/O, no clocks: time and the command's log offset are arguments.
//!
//! # Deadlines
//!
//! A report inside the district gets `deadline_ms` = its issue time + the category's limit in
//! working time ([`crate::calendar`]); the SLA clock starts when the clue is reported (a street
//! office that accepts it later does not restart it). A postponement (缓办/延期) extends the
//! current deadline by its working hours, in working time. Duplicates and points outside the
//! district have no deadline.
//!
//! # Dedupe (rule, and why it is replay-deterministic)
//!
//! A new report R (inside the district, known category) is a duplicate of clue A when
//!
//! 1. A is in **the same Kafka partition** of `clues.commands` and its report came earlier in it
//!    (lower offset),
//! 2. A is a case itself (inside, not a duplicate) of the same category,
//! 3. A was still open at R's offset (A became terminal at a later offset, or not yet),
//! 4. A was reported at most `window` before R (issue times), and
//! 5. A is within `radius` metres of R (great-circle distance).
//!
//! Among several such A: the nearest, then the earliest. R's fact then carries `duplicate_of = A`
//! and status `duplicate` (R still counts as a report: the rider did the work).
//!
//! Every input of the rule is a fact of the partition's log *at R's offset* (openness is judged
//! by the offsets at which clues became terminal, not by their current state), so reprocessing
//! R after a crash or a rebalance — even with a restored state that is already ahead of R —
//! gives the same answer. The price of determinism is rule 1: clues are keyed by clue id, so
//! two nearby reports in different partitions are not compared (with P partitions, roughly one
//! in P pairs of true duplicates is caught automatically; the others remain for the dispatcher's
//! `merge` command). Comparing across partitions deterministically needs a second hop keyed by
//! area (see `enrich/README.md`).

use std::collections::HashMap;
use std::sync::Arc;

use gridclue_core::category::{Catalog, CategoryCode};
use gridclue_core::status::{next_status, TransitionError};
use gridclue_core::wire::{
    Command, CommandEnvelope, DlqReason, EventEnvelope, Fact, Placement, Reported, SCHEMA_VERSION,
};
use gridclue_core::{ClueId, CommandId, Status};
use serde::{Deserialize, Serialize};

use crate::calendar::Calendar;
use crate::geoindex::{Assignment, GeoIndex};

/// How many recent command ids a clue remembers to recognise repeats.
const REMEMBERED_COMMANDS: usize = 16;
/// Mean Earth radius (m).
const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// What a report left in its clue's state, for dedupe.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReportInfo {
    pub category: CategoryCode,
    pub lat: f64,
    pub lon: f64,
    /// The report command's issue time.
    pub reported_at_ms: u64,
    /// The report command's offset in its partition of `clues.commands`.
    pub offset: i64,
    /// Placed inside the district.
    pub inside: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicate_of: Option<ClueId>,
}

/// What the processor keeps per clue (persisted in the `clues.state` changelog).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClueState {
    pub status: Status,
    /// The seq of the clue's latest fact.
    pub seq: u32,
    pub deadline_ms: Option<u64>,
    pub recent_commands: Vec<CommandId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<ReportInfo>,
    /// The offset of the command that made the clue terminal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_offset: Option<i64>,
    /// The offset of the last command of this clue that was handled (applied, refused or
    /// recognised as a repeat). Commands at or below it are not handled again.
    #[serde(default = "minus_one")]
    pub applied_offset: i64,
}

fn minus_one() -> i64 {
    -1
}

impl ClueState {
    /// Whether later reports may be duplicates of this clue (while it is open).
    fn is_dedupe_target(&self) -> bool {
        self.report
            .as_ref()
            .is_some_and(|r| r.inside && r.duplicate_of.is_none())
    }
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
    /// The clue's new state; `None` when the command changed nothing.
    pub next: Option<ClueState>,
    pub output: Output,
    /// How the report was placed, for metrics.
    pub assignment: Option<AssignmentKind>,
    /// The open clue the report duplicates.
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

/// Dedupe parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DedupeConfig {
    pub radius_m: f64,
    pub window_ms: u64,
}

impl Default for DedupeConfig {
    fn default() -> Self {
        Self {
            radius_m: 50.0,
            window_ms: 24 * 3_600_000,
        }
    }
}

/// The context of one decision.
pub struct DecideCtx<'a> {
    /// Processing time, stamped on facts as `processed_at_ms` (never used in a decision).
    pub now_ms: u64,
    /// The command's offset in its partition.
    pub offset: i64,
    /// The partition's open clues.
    pub open: &'a OpenClues,
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
        output,
        assignment: None,
        duplicate_of: None,
    }
}

impl Processor {
    pub fn decide(
        &self,
        state: Option<&ClueState>,
        cmd: &CommandEnvelope,
        ctx: &DecideCtx<'_>,
    ) -> Decision {
        if state.is_some_and(|s| s.recent_commands.contains(&cmd.command_id)) {
            return unchanged(Output::Repeat);
        }
        let next = match next_status(state.map(|s| s.status), cmd.command.action()) {
            Ok(next) => next,
            // A retried report under a fresh command id is still the same clue.
            Err(TransitionError::AlreadyReported) => return unchanged(Output::Repeat),
            Err(e) => {
                return unchanged(Output::Rejected {
                    reason: transition_reason(e),
                    detail: e.to_string(),
                })
            }
        };
        let mut assignment = None;
        let mut duplicate_of = None;
        let mut report_info = state.and_then(|s| s.report.clone());
        let current_deadline = state.and_then(|s| s.deadline_ms);
        let (fact, status, deadline_ms) = match &cmd.command {
            Command::Report(report) => {
                let Some(category) = self.catalog.get(report.category.as_str()) else {
                    return unchanged(Output::Rejected {
                        reason: DlqReason::UnknownCategory,
                        detail: format!("category {} is not in the catalog", report.category),
                    });
                };
                let (lat, lon) = (report.location.lat(), report.location.lon());
                let (placement, kind) = match self.index.assign(lon, lat) {
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
                let inside = kind != AssignmentKind::Outside;
                if inside {
                    duplicate_of = ctx.open.find_duplicate(
                        &report.category,
                        lat,
                        lon,
                        cmd.issued_at_ms,
                        ctx.offset,
                        &self.dedupe,
                    );
                }
                // A point outside the district is recorded and flagged, then closed off: no
                // street owns it, so it can never enter the loop.
                let (status, deadline) = if !inside {
                    (Status::Rejected, None)
                } else if duplicate_of.is_some() {
                    (Status::Duplicate, None)
                } else {
                    (
                        next,
                        self.calendar.deadline(cmd.issued_at_ms, category.deadline),
                    )
                };
                report_info = Some(ReportInfo {
                    category: report.category.clone(),
                    lat,
                    lon,
                    reported_at_ms: cmd.issued_at_ms,
                    offset: ctx.offset,
                    inside,
                    duplicate_of,
                });
                let fact = Fact::Reported(Box::new(Reported {
                    category: report.category.clone(),
                    location: report.location,
                    placement,
                    map_version: self.index.map_version().to_owned(),
                    department: category.department.clone(),
                    urgency: category.urgency,
                    deadline_ms: deadline,
                    reporter_id: cmd.actor.id.clone(),
                    reporter_group: cmd.actor.group,
                    duplicate_of,
                    description: report.description.clone(),
                    photos: report.photos.clone(),
                    channel: report.channel,
                }));
                (fact, status, deadline)
            }
            Command::Accept => (Fact::Accepted, next, current_deadline),
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
                current_deadline,
            ),
            Command::Start => (Fact::Started, next, current_deadline),
            Command::Handle { note } => {
                (Fact::Handled { note: note.clone() }, next, current_deadline)
            }
            Command::Return { reason } => (
                Fact::Returned {
                    reason: reason.clone(),
                },
                next,
                current_deadline,
            ),
            Command::VerifyOk => (Fact::Verified, next, current_deadline),
            Command::VerifyFail { reason } => (
                Fact::VerifyFailed {
                    reason: reason.clone(),
                },
                next,
                current_deadline,
            ),
            Command::Postpone {
                reason,
                working_hours,
            } => {
                let base = current_deadline.unwrap_or(cmd.issued_at_ms);
                let deadline = self
                    .calendar
                    .add_working_hours(base, *working_hours)
                    .unwrap_or(base + u64::from(*working_hours) * 3_600_000);
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
        let closed_offset = state
            .and_then(|s| s.closed_offset)
            .or_else(|| status.is_terminal().then_some(ctx.offset));
        let event = EventEnvelope {
            v: SCHEMA_VERSION,
            clue_id: cmd.clue_id,
            seq,
            command_id: cmd.command_id,
            occurred_at_ms: cmd.issued_at_ms,
            processed_at_ms: ctx.now_ms,
            status,
            fact,
        };
        Decision {
            next: Some(ClueState {
                status,
                seq,
                deadline_ms,
                recent_commands: recent,
                report: report_info,
                closed_offset,
                applied_offset: ctx.offset,
            }),
            output: Output::Event(Box::new(event)),
            assignment,
            duplicate_of,
        }
    }
}

/// Great-circle distance in metres.
pub fn distance_m(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = p2 - p1;
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_M * a.sqrt().min(1.0).asin()
}

#[derive(Clone, Debug)]
struct Candidate {
    category: CategoryCode,
    lat: f64,
    lon: f64,
    reported_at_ms: u64,
    offset: i64,
    closed_offset: Option<i64>,
    bucket: (i64, i64),
}

/// The dedupe targets of one partition: clues that are cases (inside, not duplicates), in a
/// spatial hash of ~radius-sized buckets. Entries stay after a clue closes (with the offset at
/// which it closed) until [`OpenClues::prune`] drops what no later report can match.
#[derive(Debug)]
pub struct OpenClues {
    bucket_deg: f64,
    buckets: HashMap<(i64, i64), Vec<ClueId>>,
    clues: HashMap<ClueId, Candidate>,
}

impl OpenClues {
    pub fn new(radius_m: f64) -> Self {
        Self {
            bucket_deg: (radius_m.max(1.0) / (EARTH_RADIUS_M * std::f64::consts::PI / 180.0))
                .max(1e-7),
            buckets: HashMap::new(),
            clues: HashMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.clues.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clues.is_empty()
    }

    fn bucket(&self, lat: f64, lon: f64) -> (i64, i64) {
        (
            (lat / self.bucket_deg).floor() as i64,
            (lon / self.bucket_deg).floor() as i64,
        )
    }

    /// Records a clue's state (a new report, or the clue becoming terminal).
    pub fn observe(&mut self, id: ClueId, state: &ClueState) {
        if !state.is_dedupe_target() {
            return;
        }
        if let Some(c) = self.clues.get_mut(&id) {
            c.closed_offset = state.closed_offset;
            return;
        }
        let Some(r) = &state.report else { return };
        let bucket = self.bucket(r.lat, r.lon);
        self.buckets.entry(bucket).or_default().push(id);
        self.clues.insert(
            id,
            Candidate {
                category: r.category.clone(),
                lat: r.lat,
                lon: r.lon,
                reported_at_ms: r.reported_at_ms,
                offset: r.offset,
                closed_offset: state.closed_offset,
                bucket,
            },
        );
    }

    /// The open clue a report at `offset` duplicates, by the rule in the module docs.
    pub fn find_duplicate(
        &self,
        category: &CategoryCode,
        lat: f64,
        lon: f64,
        issued_at_ms: u64,
        offset: i64,
        cfg: &DedupeConfig,
    ) -> Option<ClueId> {
        let (by, bx) = self.bucket(lat, lon);
        // Buckets are square in degrees; a degree of longitude is shorter than one of latitude
        // by cos(latitude), so look further east and west.
        let span_lat =
            (cfg.radius_m / (EARTH_RADIUS_M * std::f64::consts::PI / 180.0) / self.bucket_deg)
                .ceil() as i64;
        let cos = (lat.abs() + 1.0).min(89.0).to_radians().cos();
        let span_lon = (span_lat as f64 / cos).ceil() as i64;
        let mut best: Option<(f64, i64, ClueId)> = None;
        for y in by - span_lat..=by + span_lat {
            for x in bx - span_lon..=bx + span_lon {
                let Some(ids) = self.buckets.get(&(y, x)) else {
                    continue;
                };
                for id in ids {
                    let c = &self.clues[id];
                    if c.category != *category
                        || c.offset >= offset
                        || c.closed_offset.is_some_and(|t| t <= offset)
                        || c.reported_at_ms.saturating_add(cfg.window_ms) < issued_at_ms
                    {
                        continue;
                    }
                    let d = distance_m(lat, lon, c.lat, c.lon);
                    if d > cfg.radius_m {
                        continue;
                    }
                    if best.is_none_or(|(bd, bo, _)| d < bd || (d == bd && c.offset < bo)) {
                        best = Some((d, c.offset, *id));
                    }
                }
            }
        }
        best.map(|(_, _, id)| id)
    }

    /// Drops clues no report at an offset ≥ `from_offset` issued at or after `issued_after_ms`
    /// can match: closed before that offset, or reported more than the window before that time.
    pub fn prune(&mut self, from_offset: i64, issued_after_ms: u64, cfg: &DedupeConfig) {
        let dead: Vec<ClueId> = self
            .clues
            .iter()
            .filter(|(_, c)| {
                c.closed_offset.is_some_and(|t| t <= from_offset)
                    || c.reported_at_ms.saturating_add(cfg.window_ms) < issued_after_ms
            })
            .map(|(id, _)| *id)
            .collect();
        for id in dead {
            if let Some(c) = self.clues.remove(&id) {
                if let Some(v) = self.buckets.get_mut(&c.bucket) {
                    v.retain(|x| *x != id);
                    if v.is_empty() {
                        self.buckets.remove(&c.bucket);
                    }
                }
            }
        }
    }
}

/// Clue ids are Kafka keys; the key must match the clue inside.
pub fn key_matches(key: Option<&[u8]>, clue: ClueId) -> bool {
    key.and_then(|k| std::str::from_utf8(k).ok())
        .and_then(|k| k.parse::<ClueId>().ok())
        == Some(clue)
}
