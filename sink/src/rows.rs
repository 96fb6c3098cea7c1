//! Row types of the ClickHouse tables and the per-clue state the sink folds facts into.
//!
//! A lifecycle fact (accepted, dispatched, …) carries only what changed; the `clues` row and the
//! denormalised columns of the `clue_events` row need the clue's report as well. The sink keeps
//! a [`ClueState`] per clue of the partitions it owns (loaded from ClickHouse when it takes a
//! partition over) and applies each fact to it.

use std::sync::Arc;

use gridclue_core::codes::{
    empty_as_none, or_empty, ActorScope, CategoryCode, CommunityCode, DepartmentCode, GridCode,
    StreetCode,
};
use gridclue_core::wire::{EventEnvelope, Fact, Placement, Reported};
use gridclue_core::Status;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::indicator_deltas;
use crate::status_counts;

/// Where a fact was read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    pub topic: Arc<str>,
    pub partition: i32,
    /// The life of the partition's log the fact was read from (see `log_reset`).
    pub log: u32,
    pub offset: i64,
}

/// One row of `clue_events`.
#[derive(Clone, Debug, PartialEq, clickhouse::Row, Serialize, Deserialize)]
pub struct EventRow {
    #[serde(with = "clickhouse::serde::uuid")]
    pub clue_id: Uuid,
    pub seq: u32,
    #[serde(with = "clickhouse::serde::uuid")]
    pub command_id: Uuid,
    pub fact_type: String,
    pub status: String,
    pub occurred_at_ms: u64,
    pub processed_at_ms: u64,
    pub placement: String,
    pub inside: u8,
    /// The clue's place and category (empty outside the district and before its report is
    /// known; ClickHouse holds `''` then).
    #[serde(with = "empty_as_none")]
    pub grid_code: Option<GridCode>,
    #[serde(with = "empty_as_none")]
    pub community_code: Option<CommunityCode>,
    #[serde(with = "empty_as_none")]
    pub street_code: Option<StreetCode>,
    #[serde(with = "empty_as_none")]
    pub category: Option<CategoryCode>,
    #[serde(with = "empty_as_none")]
    pub department: Option<DepartmentCode>,
    pub reporter_group: String,
    #[serde(with = "clickhouse::serde::uuid::option")]
    pub duplicate_of: Option<Uuid>,
    pub deadline_ms: u64,
    pub detail: String,
    pub kafka_topic: String,
    pub kafka_partition: i32,
    pub kafka_offset: i64,
    /// The life of the partition's log the fact was read from (0 until a log is rebased).
    pub kafka_log: u32,
    /// When the clue was reported (the key of the daily aggregates).
    pub reported_at_ms: u64,
    #[serde(with = "empty_as_none")]
    pub routed_department: Option<DepartmentCode>,
    #[serde(with = "empty_as_none")]
    pub nearest_street_code: Option<StreetCode>,
    /// +1 for a report (inside or outside the district), else 0.
    pub report_delta: i8,
    /// +1 for a report that is a case, -1 when such a case is rejected or merged, else 0.
    pub case_delta: i8,
    /// The photo URLs of a report or of a handled fact.
    pub photos: Vec<String>,
    /// Who caused the fact: role (`reporter`, `street`, `department`, `district`, `system`;
    /// empty for records older than roles), the street or department it acted for, and the
    /// token's public id.
    pub actor_role: String,
    #[serde(with = "empty_as_none")]
    pub actor_scope: Option<ActorScope>,
    pub actor_id: String,
    /// The rating of a `rated` fact (else 0).
    pub rating: u8,
    /// The working hours of a postponement request or approval (else 0).
    pub working_hours: u32,
    /// On a `verified` fact: the working time from acceptance to closure (docs/ARCHITECTURE.md
    /// §6, mean_hours_to_close); null on other facts and where the fact does not carry it.
    pub working_ms: Option<u64>,
    /// The fact's delta rows of the governance indicators (see `indicator_deltas`), as parallel
    /// arrays: from when each holds, the China day of its cohort, the clue's department and the
    /// signed counts in the order of `indicator_deltas::COUNTER_NAMES`.
    pub indicator_effective_ms: Vec<u64>,
    pub indicator_cohort_day: Vec<u32>,
    pub indicator_department: Vec<DepartmentCode>,
    pub indicator_counts: Vec<Vec<i64>>,
    /// The fact's rows of the running status counts (see `status_counts`), as parallel arrays:
    /// sign, status, department now, whether a case, deadline while open.
    pub state_sign: Vec<i8>,
    pub state_status: Vec<String>,
    pub state_department: Vec<DepartmentCode>,
    pub state_is_case: Vec<u8>,
    pub state_deadline_ms: Vec<u64>,
    /// The fact's rows of `open_cases` (see `open_cases`), as parallel arrays: sign, the
    /// state's version, status, department now, accepted, deadline, yellow and update times.
    pub open_case_sign: Vec<i8>,
    pub open_case_version: Vec<u32>,
    pub open_case_status: Vec<String>,
    pub open_case_department: Vec<DepartmentCode>,
    pub open_case_accepted_at_ms: Vec<u64>,
    pub open_case_deadline_ms: Vec<u64>,
    pub open_case_yellow_at_ms: Vec<u64>,
    pub open_case_updated_at_ms: Vec<u64>,
}

impl EventRow {
    /// Rough size in bytes once serialized (for batch byte limits).
    pub fn approx_bytes(&self) -> usize {
        120 + self.fact_type.len()
            + self.status.len()
            + self.placement.len()
            + code_len(&self.grid_code)
            + code_len(&self.community_code)
            + code_len(&self.street_code)
            + code_len(&self.category)
            + code_len(&self.department)
            + self.reporter_group.len()
            + self.detail.len()
            + self.kafka_topic.len()
            + self.photos.iter().map(|p| p.len() + 2).sum::<usize>()
            + self.actor_role.len()
            + code_len(&self.actor_scope)
            + self.actor_id.len()
            + self
                .indicator_department
                .iter()
                .map(|d| d.as_str().len() + 12 + 8 * crate::indicator_deltas::COUNTERS)
                .sum::<usize>()
            + self
                .state_status
                .iter()
                .zip(&self.state_department)
                .map(|(s, d)| s.len() + d.as_str().len() + 14)
                .sum::<usize>()
            + self
                .open_case_status
                .iter()
                .zip(&self.open_case_department)
                .map(|(s, d)| s.len() + d.as_str().len() + 40)
                .sum::<usize>()
    }
}

/// One row of `clues` (also the shape the sink reloads its state from).
///
/// Its codes are read back strictly: the sink writes only codes it parsed from typed facts, and
/// releases before the codes were typed wrote the same strings (the catalog and the map only
/// ever held well-formed codes). A row it cannot read is an error of the partition's reload,
/// logged and retried like any failed read, rather than a state silently rewritten without its
/// place or department.
#[derive(Clone, Debug, Default, PartialEq, clickhouse::Row, Serialize, Deserialize)]
pub struct ClueRow {
    #[serde(with = "clickhouse::serde::uuid")]
    pub clue_id: Uuid,
    pub version: u32,
    pub status: String,
    pub placement: String,
    pub inside: u8,
    pub on_boundary: u8,
    /// The place of a clue inside the district (else empty).
    #[serde(with = "empty_as_none")]
    pub grid_code: Option<GridCode>,
    #[serde(with = "empty_as_none")]
    pub community_code: Option<CommunityCode>,
    #[serde(with = "empty_as_none")]
    pub street_code: Option<StreetCode>,
    /// The street nearest to a clue outside the district (else empty).
    #[serde(with = "empty_as_none")]
    pub nearest_street_code: Option<StreetCode>,
    pub distance_m: f64,
    pub lat: f64,
    pub lon: f64,
    pub map_version: String,
    /// Empty until the report is known.
    #[serde(with = "empty_as_none")]
    pub category: Option<CategoryCode>,
    /// The department the clue is at: the routed one, then the one it was last dispatched to
    /// (empty until the report is known).
    #[serde(with = "empty_as_none")]
    pub department: Option<DepartmentCode>,
    pub urgency: String,
    pub reporter_id: String,
    pub reporter_group: String,
    pub channel: String,
    #[serde(with = "clickhouse::serde::uuid::option")]
    pub duplicate_of: Option<Uuid>,
    pub is_case: u8,
    pub reported_at_ms: u64,
    pub deadline_ms: u64,
    pub accepted_at_ms: u64,
    pub dispatched_at_ms: u64,
    pub handled_at_ms: u64,
    pub closed_at_ms: u64,
    pub rework_count: u16,
    pub postpone_count: u16,
    pub updated_at_ms: u64,
    pub kafka_partition: i32,
    /// The department the report was routed to (`department` follows dispatches).
    #[serde(with = "empty_as_none")]
    pub routed_department: Option<DepartmentCode>,
    /// Whether the clue was a case right after its report.
    pub report_case: u8,
    /// When only 20% of the limit's working time remains (0: no deadline, or an older row).
    pub yellow_at_ms: u64,
    /// The department the clue is dispatched to now (empty before dispatch and after a return).
    #[serde(with = "empty_as_none")]
    pub assigned_department: Option<DepartmentCode>,
    pub withdrawn_at_ms: u64,
    pub returned_count: u16,
    /// Verifications, passed or failed.
    pub verify_count: u16,
    pub supervise_count: u16,
    pub supervised_at_ms: u64,
    pub postpone_request_count: u16,
    pub postpone_denied_count: u16,
    /// A postponement request waits for the district's decision.
    pub postpone_pending: u8,
    pub postpone_requested_hours: u32,
    /// Deadlines that passed with the clue open.
    pub overdue_count: u16,
    /// 1–5, 0 when not rated.
    pub rating: u8,
    pub rated_at_ms: u64,
    /// The action behind the latest fact caused by a person (`accept`, `supervise`, …).
    pub last_action: String,
    pub last_actor_role: String,
    pub last_action_at_ms: u64,
}

impl ClueRow {
    pub fn approx_bytes(&self) -> usize {
        200 + self.status.len()
            + self.placement.len()
            + code_len(&self.grid_code)
            + code_len(&self.community_code)
            + code_len(&self.street_code)
            + code_len(&self.nearest_street_code)
            + self.map_version.len()
            + code_len(&self.category)
            + code_len(&self.department)
            + self.urgency.len()
            + self.reporter_id.len()
            + self.reporter_group.len()
            + self.channel.len()
            + code_len(&self.assigned_department)
            + self.last_action.len()
            + self.last_actor_role.len()
    }
}

/// The bytes of an optional code as written (`''` when absent).
fn code_len<C: AsRef<str>>(code: &Option<C>) -> usize {
    or_empty(code).len()
}

/// What the sink remembers about a clue.
#[derive(Clone, Debug, PartialEq)]
pub struct ClueState {
    /// The clue's latest row (its `version` is the seq of the last fact folded in).
    pub row: Arc<ClueRow>,
    /// The highest seq known to be stored in `clue_events`; facts at or below it are skipped.
    pub stored_seq: Option<u32>,
}

fn placement_name(p: &Placement) -> &'static str {
    match p {
        Placement::Inside { .. } => "inside",
        Placement::Outside { .. } => "outside",
    }
}

/// Whether a clue in this state counts as a case (docs/ARCHITECTURE.md §5). A report its reporter withdrew
/// before acceptance never entered the loop: not a case either, like a rejected one.
pub fn is_case(row: &ClueRow) -> bool {
    row.inside == 1
        && row.duplicate_of.is_none()
        && row.status != Status::Rejected.as_str()
        && row.status != Status::Duplicate.as_str()
        && row.status != Status::Withdrawn.as_str()
}

/// The department a clue is at now: the one it is dispatched to, else the one it was routed to
/// (`None` only before its report is known).
pub fn department_now(row: &ClueRow) -> Option<&DepartmentCode> {
    row.assigned_department.as_ref().or(row.department.as_ref())
}

/// Whether the fact numbered `seq` is already folded into `row` (seqs start at 0; a row that
/// never had a fact folded in has no status yet).
pub fn has_folded(row: &ClueRow, seq: u32) -> bool {
    !row.status.is_empty() && seq <= row.version
}

/// The state of a clue before any fact is folded in (its report not seen yet).
pub fn blank(clue_id: Uuid, partition: i32) -> ClueRow {
    ClueRow {
        clue_id,
        placement: "unknown".into(),
        kafka_partition: partition,
        ..ClueRow::default()
    }
}

/// Fills the report's attributes into `row`.
fn fill_report(row: &mut ClueRow, r: &Reported, env: &EventEnvelope) {
    row.category = Some(r.category.clone());
    row.department = Some(r.department.clone());
    row.routed_department = Some(r.department.clone());
    row.urgency = r.urgency.as_str().into();
    row.reporter_id = r.reporter_id.clone();
    row.reporter_group = r
        .reporter_group
        .map(|g| g.as_str().into())
        .unwrap_or_default();
    row.channel = channel_name(r.channel).into();
    if row.duplicate_of.is_none() {
        row.duplicate_of = r.duplicate_of.map(|d| d.as_uuid());
    }
    row.lat = r.location.lat();
    row.lon = r.location.lon();
    row.map_version = r.map_version.clone();
    row.placement = placement_name(&r.placement).into();
    row.reported_at_ms = env.occurred_at_ms;
    if row.deadline_ms == 0 {
        row.deadline_ms = r.deadline_ms.unwrap_or(0);
    }
    match &r.placement {
        Placement::Inside {
            grid_code,
            on_boundary,
        } => {
            row.inside = 1;
            row.on_boundary = u8::from(*on_boundary);
            row.grid_code = Some(*grid_code);
            row.community_code = Some(grid_code.community_code());
            row.street_code = Some(grid_code.street_code());
        }
        Placement::Outside {
            nearest_grid_code,
            distance_m,
        } => {
            row.distance_m = *distance_m;
            row.nearest_street_code = nearest_grid_code.map(|g| g.street_code());
        }
    }
}

/// Folds `env` into `state` (a new clue when `None`). Folding is idempotent: a fact at or below
/// the state's version is already in it and changes nothing, except that a report seen after
/// its clue's later facts still fills in the place and category.
pub fn apply(state: Option<ClueRow>, env: &EventEnvelope, partition: i32) -> ClueRow {
    let mut row = state.unwrap_or_else(|| blank(env.clue_id.as_uuid(), partition));
    let folded = has_folded(&row, env.seq);
    if let Fact::Reported(r) = &env.fact {
        if row.placement == "unknown" {
            fill_report(&mut row, r, env);
            let mut at_report = row.clone();
            at_report.status = env.status.as_str().into();
            row.report_case = u8::from(is_case(&at_report));
        }
    }
    if folded {
        row.is_case = u8::from(is_case(&row));
        return row;
    }
    let at = env.occurred_at_ms;
    let bump = |n: &mut u16| *n = n.saturating_add(1);
    match &env.fact {
        Fact::Reported(_) | Fact::Rejected { .. } | Fact::Started => {}
        Fact::Accepted {
            deadline_ms,
            yellow_at_ms,
        } => {
            row.accepted_at_ms = at;
            if let Some(d) = deadline_ms {
                row.deadline_ms = *d;
            }
            row.yellow_at_ms = yellow_at_ms.unwrap_or(0);
        }
        Fact::Merged { duplicate_of } => row.duplicate_of = Some(duplicate_of.as_uuid()),
        Fact::Dispatched { department } => {
            row.department = Some(department.clone());
            row.assigned_department = Some(department.clone());
            if row.dispatched_at_ms == 0 {
                row.dispatched_at_ms = at;
            }
        }
        Fact::Returned { .. } => {
            row.assigned_department = None;
            bump(&mut row.returned_count);
        }
        Fact::Handled { .. } => row.handled_at_ms = at,
        Fact::Verified { .. } => {
            row.closed_at_ms = at;
            bump(&mut row.verify_count);
        }
        Fact::VerifyFailed { .. } => {
            bump(&mut row.rework_count);
            bump(&mut row.verify_count);
        }
        Fact::Postponed {
            deadline_ms,
            yellow_at_ms,
            ..
        } => {
            row.deadline_ms = *deadline_ms;
            row.yellow_at_ms = yellow_at_ms.unwrap_or(0);
            bump(&mut row.postpone_count);
            row.postpone_pending = 0;
            row.postpone_requested_hours = 0;
        }
        Fact::PostponeRequested { working_hours, .. } => {
            bump(&mut row.postpone_request_count);
            row.postpone_pending = 1;
            row.postpone_requested_hours = *working_hours;
        }
        Fact::PostponeDenied { .. } => {
            bump(&mut row.postpone_denied_count);
            row.postpone_pending = 0;
            row.postpone_requested_hours = 0;
        }
        Fact::Supervised { .. } => {
            bump(&mut row.supervise_count);
            row.supervised_at_ms = at;
        }
        Fact::Withdrawn { .. } => row.withdrawn_at_ms = at,
        Fact::Rated { rating, .. } => {
            row.rating = *rating;
            row.rated_at_ms = at;
        }
        Fact::Overdue { .. } => bump(&mut row.overdue_count),
    }
    if let Some(action) = person_action(&env.fact) {
        row.last_action = action.into();
        row.last_actor_role = env
            .actor
            .as_ref()
            .map(|a| a.kind.as_str().to_owned())
            .unwrap_or_default();
        row.last_action_at_ms = at;
    }
    row.version = env.seq;
    row.status = env.status.as_str().into();
    row.updated_at_ms = at;
    row.kafka_partition = partition;
    row.is_case = u8::from(is_case(&row));
    row
}

/// The action of a person behind a fact (`None` for the processor's overdue facts).
fn person_action(fact: &Fact) -> Option<&'static str> {
    use gridclue_core::Action as A;
    let action = match fact {
        Fact::Reported(_) => A::Report,
        Fact::Accepted { .. } => A::Accept,
        Fact::Rejected { .. } => A::Reject,
        Fact::Merged { .. } => A::Merge,
        Fact::Dispatched { .. } => A::Dispatch,
        Fact::Started => A::Start,
        Fact::Handled { .. } => A::Handle,
        Fact::Returned { .. } => A::Return,
        Fact::Verified { .. } => A::VerifyOk,
        Fact::VerifyFailed { .. } => A::VerifyFail,
        Fact::Postponed { .. } => A::ApprovePostpone,
        Fact::PostponeRequested { .. } => A::RequestPostpone,
        Fact::PostponeDenied { .. } => A::DenyPostpone,
        Fact::Supervised { .. } => A::Supervise,
        Fact::Withdrawn { .. } => A::Withdraw,
        Fact::Rated { .. } => A::Rate,
        Fact::Overdue { .. } => return None,
    };
    Some(action.as_str())
}

fn channel_name(c: gridclue_core::wire::Channel) -> &'static str {
    use gridclue_core::wire::Channel;
    match c {
        Channel::Api => "api",
        Channel::Web => "web",
        Channel::Open311 => "open311",
        Channel::Import => "import",
    }
}

/// The `clue_events` row of `env`, with the clue's place and category taken from `clue` (the
/// state after folding `env` into `before`, `None` for a clue's first fact).
pub fn event_row(
    env: &EventEnvelope,
    before: Option<&ClueRow>,
    clue: &ClueRow,
    source: &Source,
) -> EventRow {
    let deltas = indicator_deltas::deltas(env, before, clue);
    let states = status_counts::rows(before, clue);
    let open_cases = crate::open_cases::rows(before, clue);
    let (detail, deadline_ms, duplicate_of) = match &env.fact {
        Fact::Reported(r) => (
            r.description.clone(),
            r.deadline_ms.unwrap_or(0),
            r.duplicate_of.map(|d| d.as_uuid()),
        ),
        Fact::Rejected { reason }
        | Fact::Returned { reason }
        | Fact::VerifyFailed { reason }
        | Fact::PostponeRequested { reason, .. }
        | Fact::PostponeDenied { reason }
        | Fact::Withdrawn { reason } => (reason.clone(), 0, None),
        Fact::Handled { note, .. } | Fact::Supervised { note } | Fact::Rated { note, .. } => {
            (note.clone(), 0, None)
        }
        Fact::Merged { duplicate_of } => (String::new(), 0, Some(duplicate_of.as_uuid())),
        Fact::Dispatched { department } => (department.to_string(), 0, None),
        Fact::Postponed {
            reason,
            deadline_ms,
            ..
        } => (reason.clone(), *deadline_ms, None),
        Fact::Accepted { deadline_ms, .. } => (String::new(), deadline_ms.unwrap_or(0), None),
        Fact::Overdue { deadline_ms } => (String::new(), *deadline_ms, None),
        Fact::Started | Fact::Verified { .. } => (String::new(), 0, None),
    };
    let actor = env.actor.as_ref();
    let counted = clue.placement == "inside" || clue.placement == "outside";
    let (report_delta, case_delta) = match &env.fact {
        Fact::Reported(_) => (i8::from(counted), clue.report_case as i8),
        Fact::Rejected { .. } | Fact::Merged { .. } | Fact::Withdrawn { .. } => {
            (0, -(clue.report_case as i8))
        }
        _ => (0, 0),
    };
    EventRow {
        clue_id: env.clue_id.as_uuid(),
        seq: env.seq,
        command_id: env.command_id.0,
        fact_type: env.fact.type_name().into(),
        status: env.status.as_str().into(),
        occurred_at_ms: env.occurred_at_ms,
        processed_at_ms: env.processed_at_ms,
        placement: clue.placement.clone(),
        inside: clue.inside,
        grid_code: clue.grid_code,
        community_code: clue.community_code,
        street_code: clue.street_code,
        category: clue.category.clone(),
        department: clue.department.clone(),
        reporter_group: clue.reporter_group.clone(),
        duplicate_of,
        deadline_ms,
        detail,
        kafka_topic: source.topic.to_string(),
        kafka_partition: source.partition,
        kafka_offset: source.offset,
        kafka_log: source.log,
        reported_at_ms: clue.reported_at_ms,
        routed_department: clue.routed_department.clone(),
        nearest_street_code: clue.nearest_street_code,
        report_delta,
        case_delta,
        photos: match &env.fact {
            Fact::Reported(r) => r.photos.clone(),
            Fact::Handled { photos, .. } => photos.clone(),
            _ => Vec::new(),
        },
        actor_role: actor
            .map(|a| a.kind.as_str().to_owned())
            .unwrap_or_default(),
        actor_scope: actor.and_then(|a| a.scope.clone()),
        actor_id: actor.map(|a| a.id.clone()).unwrap_or_default(),
        rating: match &env.fact {
            Fact::Rated { rating, .. } => *rating,
            _ => 0,
        },
        working_hours: match &env.fact {
            Fact::PostponeRequested { working_hours, .. } => *working_hours,
            Fact::Postponed { working_hours, .. } => working_hours.unwrap_or(0),
            _ => 0,
        },
        working_ms: match &env.fact {
            Fact::Verified { working_ms } => *working_ms,
            _ => None,
        },
        indicator_effective_ms: deltas.iter().map(|d| d.effective_ms).collect(),
        indicator_cohort_day: deltas.iter().map(|d| d.cohort_day).collect(),
        indicator_department: deltas.iter().map(|d| d.department.clone()).collect(),
        indicator_counts: deltas.iter().map(|d| d.counts.to_vec()).collect(),
        state_sign: states.iter().map(|s| s.sign).collect(),
        state_status: states.iter().map(|s| s.status.clone()).collect(),
        state_department: states.iter().map(|s| s.department.clone()).collect(),
        state_is_case: states.iter().map(|s| s.is_case).collect(),
        state_deadline_ms: states.iter().map(|s| s.deadline_ms).collect(),
        open_case_sign: open_cases.iter().map(|r| r.sign).collect(),
        open_case_version: open_cases.iter().map(|r| r.version).collect(),
        open_case_status: open_cases.iter().map(|r| r.status.clone()).collect(),
        open_case_department: open_cases
            .iter()
            .map(|r| r.department_now.clone())
            .collect(),
        open_case_accepted_at_ms: open_cases.iter().map(|r| r.accepted_at_ms).collect(),
        open_case_deadline_ms: open_cases.iter().map(|r| r.deadline_ms).collect(),
        open_case_yellow_at_ms: open_cases.iter().map(|r| r.yellow_at_ms).collect(),
        open_case_updated_at_ms: open_cases.iter().map(|r| r.updated_at_ms).collect(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use gridclue_core::category::Urgency;
    use gridclue_core::wire::{Channel, SCHEMA_VERSION};
    use gridclue_core::{CategoryCode, ClueId, CommandId, GeoPoint, GridCode, ReporterGroup};

    pub(crate) fn report(clue: ClueId, placement: Placement) -> EventEnvelope {
        EventEnvelope {
            v: SCHEMA_VERSION,
            clue_id: clue,
            seq: 0,
            command_id: CommandId::for_report(clue),
            occurred_at_ms: 1_000,
            processed_at_ms: 1_010,
            ingested_at_ms: None,
            status: Status::Reported,
            actor: None,
            fact: Fact::Reported(Box::new(Reported {
                category: CategoryCode::parse("garbage_pile").unwrap(),
                location: GeoPoint::new(31.2, 121.5).unwrap(),
                placement,
                map_version: "m1".into(),
                department: "city_mgmt".parse().unwrap(),
                urgency: Urgency::Normal,
                deadline_ms: Some(9_000),
                reporter_id: "tok_1".into(),
                reporter_group: Some(ReporterGroup::Courier),
                duplicate_of: None,
                description: "垃圾堆物".into(),
                photos: vec![],
                channel: Channel::Api,
            })),
        }
    }

    fn next(env: &EventEnvelope, fact: Fact, status: Status) -> EventEnvelope {
        EventEnvelope {
            seq: env.seq + 1,
            command_id: CommandId::new_random(),
            occurred_at_ms: env.occurred_at_ms + 100,
            processed_at_ms: env.processed_at_ms + 100,
            ingested_at_ms: None,
            status,
            fact,
            ..env.clone()
        }
    }

    fn inside() -> Placement {
        Placement::Inside {
            grid_code: GridCode::parse("310199003002017").unwrap(),
            on_boundary: false,
        }
    }

    #[test]
    fn a_report_fills_the_place_and_later_facts_keep_it() {
        let clue = ClueId::new_random();
        let r = report(clue, inside());
        let s0 = apply(None, &r, 3);
        assert_eq!(s0.street_code.unwrap(), "310199003");
        assert_eq!(s0.community_code.unwrap(), "310199003002");
        assert_eq!(s0.is_case, 1);
        assert_eq!(s0.kafka_partition, 3);
        // The SLA clock starts at acceptance: the accept carries the deadline.
        let a = next(
            &r,
            Fact::Accepted {
                deadline_ms: Some(40_000),
                yellow_at_ms: Some(35_000),
            },
            Status::Accepted,
        );
        let s1 = apply(Some(s0.clone()), &a, 3);
        assert_eq!((s1.version, s1.status.as_str()), (1, "accepted"));
        assert_eq!(s1.street_code.unwrap(), "310199003");
        assert_eq!((s1.accepted_at_ms, s1.deadline_ms), (1_100, 40_000));
        let ev = event_row(
            &a,
            Some(&s0),
            &s1,
            &Source {
                topic: "t".into(),
                partition: 3,
                log: 0,
                offset: 7,
            },
        );
        assert_eq!(
            (
                ev.fact_type.as_str(),
                ev.street_code.unwrap().as_str(),
                ev.deadline_ms
            ),
            ("accepted", "310199003", 40_000)
        );

        // Folding a fact twice changes nothing (counters included).
        let p = next(
            &a,
            Fact::Postponed {
                reason: "rain".into(),
                deadline_ms: 50_000,
                yellow_at_ms: None,
                working_hours: None,
            },
            Status::Accepted,
        );
        let s2 = apply(Some(s1), &p, 3);
        assert_eq!((s2.postpone_count, s2.deadline_ms), (1, 50_000));
        assert_eq!(apply(Some(s2.clone()), &p, 3), s2);
        assert_eq!(apply(Some(s2.clone()), &a, 3), s2);
    }

    #[test]
    fn rejected_and_merged_clues_are_reports_but_not_cases() {
        let clue = ClueId::new_random();
        let r = report(clue, inside());
        let s = apply(None, &r, 0);
        let rej = apply(
            Some(s.clone()),
            &next(&r, Fact::Rejected { reason: "x".into() }, Status::Rejected),
            0,
        );
        assert_eq!((rej.inside, rej.is_case), (1, 0));
        let other = ClueId::new_random();
        let dup = apply(
            Some(s),
            &next(
                &r,
                Fact::Merged {
                    duplicate_of: other,
                },
                Status::Duplicate,
            ),
            0,
        );
        assert_eq!(dup.duplicate_of, Some(other.as_uuid()));
        assert_eq!(dup.is_case, 0);
    }

    fn deltas(env: &EventEnvelope, clue: &ClueRow) -> (i8, i8) {
        let source = Source {
            topic: "t".into(),
            partition: 0,
            log: 0,
            offset: 0,
        };
        let e = event_row(env, None, clue, &source);
        (e.report_delta, e.case_delta)
    }

    #[test]
    fn deltas_add_up_to_the_latest_state() {
        // A case reported, accepted, then rejected: +1 report, +1 case, then -1 case.
        let r = report(ClueId::new_random(), inside());
        let s0 = apply(None, &r, 0);
        assert_eq!(deltas(&r, &s0), (1, 1));
        let a = next(
            &r,
            Fact::Accepted {
                deadline_ms: None,
                yellow_at_ms: None,
            },
            Status::Accepted,
        );
        let s1 = apply(Some(s0), &a, 0);
        assert_eq!(deltas(&a, &s1), (0, 0));
        let j = next(&a, Fact::Rejected { reason: "x".into() }, Status::Rejected);
        let s2 = apply(Some(s1), &j, 0);
        assert_eq!(deltas(&j, &s2), (0, -1));
        assert_eq!((s2.report_case, s2.is_case), (1, 0));

        // Withdrawn by its reporter before acceptance: still a report, no longer a case.
        let r = report(ClueId::new_random(), inside());
        let w0 = apply(None, &r, 0);
        let w = next(
            &r,
            Fact::Withdrawn {
                reason: String::new(),
            },
            Status::Withdrawn,
        );
        let w1 = apply(Some(w0), &w, 0);
        assert_eq!(deltas(&w, &w1), (0, -1));
        assert_eq!((w1.report_case, w1.is_case), (1, 0));

        // A report that is a duplicate from the start counts as a report, never as a case.
        let mut d = report(ClueId::new_random(), inside());
        if let Fact::Reported(rep) = &mut d.fact {
            rep.duplicate_of = Some(ClueId::new_random());
        }
        let t0 = apply(None, &d, 0);
        assert_eq!(deltas(&d, &t0), (1, 0));
        let m = next(
            &d,
            Fact::Merged {
                duplicate_of: ClueId::new_random(),
            },
            Status::Duplicate,
        );
        let t1 = apply(Some(t0), &m, 0);
        assert_eq!(deltas(&m, &t1), (0, 0));

        // Outside the district: a report apart, no case.
        let o = report(
            ClueId::new_random(),
            Placement::Outside {
                nearest_grid_code: None,
                distance_m: 5.0,
            },
        );
        let u0 = apply(None, &o, 0);
        assert_eq!(deltas(&o, &u0), (1, 0));

        // A lifecycle fact whose report was never seen changes no count.
        let lone = next(
            &report(ClueId::new_random(), inside()),
            Fact::Accepted {
                deadline_ms: None,
                yellow_at_ms: None,
            },
            Status::Accepted,
        );
        let v0 = apply(None, &lone, 0);
        assert_eq!(deltas(&lone, &v0), (0, 0));
    }

    #[test]
    fn closed_loop_facts_fold_into_counts_and_the_last_action() {
        use gridclue_core::wire::{Actor, ActorKind};
        let staff = |kind, scope: &str| Actor {
            kind,
            id: "tok_x".into(),
            group: None,
            scope: (!scope.is_empty()).then(|| ActorScope::parse(scope).unwrap()),
        };
        let r = report(ClueId::new_random(), inside());
        let mut env = r.clone();
        let mut row = apply(None, &r, 0);
        let mut step = |fact: Fact, status: Status, actor: Option<Actor>| {
            env = EventEnvelope {
                actor,
                ..next(&env, fact, status)
            };
            let before = row.clone();
            row = apply(Some(before.clone()), &env, 0);
            let ev = event_row(
                &env,
                Some(&before),
                &row,
                &Source {
                    topic: "t".into(),
                    partition: 0,
                    log: 0,
                    offset: 0,
                },
            );
            (row.clone(), ev)
        };
        let street = || Some(staff(ActorKind::Street, "310199003"));
        let dept = || Some(staff(ActorKind::Department, "water_affairs"));
        let district = || Some(staff(ActorKind::District, ""));
        step(
            Fact::Accepted {
                deadline_ms: Some(9_000),
                yellow_at_ms: Some(8_000),
            },
            Status::Accepted,
            street(),
        );
        let (s, _) = step(
            Fact::Dispatched {
                department: "water_affairs".parse().unwrap(),
            },
            Status::Dispatched,
            street(),
        );
        assert_eq!(s.assigned_department.unwrap(), "water_affairs");
        let (s, ev) = step(
            Fact::Returned {
                reason: "not ours".into(),
            },
            Status::Accepted,
            dept(),
        );
        assert_eq!((s.assigned_department, s.returned_count), (None, 1));
        assert_eq!(
            (
                ev.actor_role.as_str(),
                or_empty(&ev.actor_scope),
                ev.detail.as_str()
            ),
            ("department", "water_affairs", "not ours")
        );
        let (s, ev) = step(
            Fact::PostponeRequested {
                reason: "parts".into(),
                working_hours: 8,
            },
            Status::Accepted,
            dept(),
        );
        assert_eq!(
            (
                s.postpone_pending,
                s.postpone_requested_hours,
                ev.working_hours
            ),
            (1, 8, 8)
        );
        let (s, _) = step(
            Fact::Postponed {
                reason: "ok".into(),
                deadline_ms: 20_000,
                yellow_at_ms: Some(17_000),
                working_hours: Some(8),
            },
            Status::Accepted,
            district(),
        );
        assert_eq!(
            (
                s.postpone_pending,
                s.postpone_count,
                s.deadline_ms,
                s.yellow_at_ms
            ),
            (0, 1, 20_000, 17_000)
        );
        step(
            Fact::PostponeRequested {
                reason: "again".into(),
                working_hours: 4,
            },
            Status::Accepted,
            dept(),
        );
        let (s, _) = step(
            Fact::PostponeDenied {
                reason: "no".into(),
            },
            Status::Accepted,
            district(),
        );
        assert_eq!(
            (
                s.postpone_pending,
                s.postpone_request_count,
                s.postpone_denied_count
            ),
            (0, 2, 1)
        );
        let (s, _) = step(
            Fact::Supervised { note: "快".into() },
            Status::Accepted,
            district(),
        );
        assert_eq!(
            (
                s.supervise_count,
                s.last_action.as_str(),
                s.last_actor_role.as_str()
            ),
            (1, "supervise", "district")
        );
        let (s, ev) = step(
            Fact::Overdue {
                deadline_ms: 20_000,
            },
            Status::Accepted,
            Some(Actor::system()),
        );
        assert_eq!((s.overdue_count, ev.deadline_ms), (1, 20_000));
        assert_eq!(
            s.last_action, "supervise",
            "overdue is not a person's action"
        );
        let (s, ev) = step(
            Fact::Rated {
                rating: 4,
                note: String::new(),
            },
            Status::Closed,
            None,
        );
        assert_eq!((s.rating, ev.rating), (4, 4));
        // Folding the same fact again changes no count.
        assert_eq!(apply(Some(s.clone()), &env, 0), s);
    }

    #[test]
    fn the_working_time_of_a_closure_is_on_its_fact_only() {
        let r = report(ClueId::new_random(), inside());
        let source = Source {
            topic: "t".into(),
            partition: 0,
            log: 0,
            offset: 0,
        };
        let s0 = apply(None, &r, 0);
        assert_eq!(event_row(&r, None, &s0, &source).working_ms, None);
        let closed = next(
            &r,
            Fact::Verified {
                working_ms: Some(4 * 3_600_000),
            },
            Status::Closed,
        );
        let s1 = apply(Some(s0.clone()), &closed, 0);
        let ev = event_row(&closed, Some(&s0), &s1, &source);
        assert_eq!(
            (ev.fact_type.as_str(), ev.working_ms),
            ("verified", Some(4 * 3_600_000))
        );
        let legacy = next(&r, Fact::Verified { working_ms: None }, Status::Closed);
        assert_eq!(event_row(&legacy, Some(&s0), &s1, &source).working_ms, None);
    }

    #[test]
    fn outside_points_keep_their_nearest_street() {
        let r = report(
            ClueId::new_random(),
            Placement::Outside {
                nearest_grid_code: Some(GridCode::parse("310199101001001").unwrap()),
                distance_m: 42.0,
            },
        );
        let s = apply(None, &r, 0);
        assert_eq!(
            (s.placement.as_str(), s.inside, s.is_case),
            ("outside", 0, 0)
        );
        assert_eq!(
            (s.street_code, s.nearest_street_code),
            (None, Some(StreetCode::parse("310199101").unwrap()))
        );
    }

    #[test]
    fn lifecycle_before_report_is_unknown_placement() {
        let r = report(ClueId::new_random(), inside());
        let a = next(
            &r,
            Fact::Accepted {
                deadline_ms: None,
                yellow_at_ms: None,
            },
            Status::Accepted,
        );
        let s = apply(None, &a, 1);
        assert_eq!(
            (s.placement.as_str(), s.inside, s.version),
            ("unknown", 0, 1)
        );
    }
}
