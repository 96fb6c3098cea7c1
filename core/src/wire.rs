//! The versioned JSON contract of the Kafka topics.
//!
//! Every record carries `v` (the schema version). Readers ignore unknown fields, so a newer
//! writer may add fields without breaking older readers; a record with a `v` newer than
//! [`SCHEMA_VERSION`] is refused with [`DecodeError::UnsupportedVersion`] (it goes to the DLQ
//! rather than being half-understood). Keys of commands and events are the clue id.

use serde::{Deserialize, Serialize};

use crate::category::{CategoryCode, DepartmentCode, Urgency};
use crate::geo::GeoPoint;
use crate::grid::GridCode;
use crate::ids::{ClueId, CommandId, ReporterGroup};
use crate::roles::{ActorScope, RefusalClass, RefusalReason};
use crate::status::{Action, Status};

pub const SCHEMA_VERSION: u16 = 1;

/// Commands from ingest (key = clue id).
pub const COMMANDS_TOPIC: &str = "clues.commands";
/// Facts emitted by enrich (key = clue id).
pub const EVENTS_TOPIC: &str = "clues.events";
/// Refused and poison records with a reason code.
pub const DLQ_TOPIC: &str = "clues.dlq";
/// Changelog of enrich's per-clue state (compacted on a real cluster).
pub const STATE_TOPIC: &str = "clues.state";
/// Placed reports and closed cases keyed by owner street, for enrich's dedupe stage (retention
/// must exceed the dedupe window: the stage rebuilds its state by reading it).
pub const DEDUPE_TOPIC: &str = "clues.dedupe";
/// The processor's verdict on every client transition (keyed by clue id), for the gateway that
/// waits to answer the client. Short retention is enough: a verdict is read within seconds.
pub const OUTCOMES_TOPIC: &str = "clues.outcomes";
/// The hotspot detector's input: new cases and clock ticks, one partition (its order is the
/// detector's order; retention must cover the detector's baseline).
pub const HOTSPOT_INPUT_TOPIC: &str = "clues.hotspot-input";
/// Hotspot alert versions (key = alert id).
pub const ALERTS_TOPIC: &str = "clues.alerts";

/// Topic names. Defaults are the production names; tests may prefix them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topics {
    pub commands: String,
    pub events: String,
    pub dlq: String,
    /// Compacted changelog of the clue processor's per-clue state.
    pub state: String,
    /// Placed reports by owner street, for cross-partition dedupe.
    #[serde(default = "default_dedupe_topic")]
    pub dedupe: String,
    /// Verdicts on client transitions, for the gateway.
    #[serde(default = "default_outcomes_topic")]
    pub outcomes: String,
}

fn default_dedupe_topic() -> String {
    DEDUPE_TOPIC.into()
}

fn default_outcomes_topic() -> String {
    OUTCOMES_TOPIC.into()
}

impl Default for Topics {
    fn default() -> Self {
        Self {
            commands: COMMANDS_TOPIC.into(),
            events: EVENTS_TOPIC.into(),
            dlq: DLQ_TOPIC.into(),
            state: STATE_TOPIC.into(),
            dedupe: DEDUPE_TOPIC.into(),
            outcomes: OUTCOMES_TOPIC.into(),
        }
    }
}

/// Who issued a command (and, on facts, who caused them).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub kind: ActorKind,
    /// The token's public, non-secret id (`tok_…`; for reporters also the reporter id), or
    /// `system`; never a secret, a phone number or a name.
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<ReporterGroup>,
    /// What the actor may act on: the 9-digit street code of a street office, the department
    /// code of a department; none for reporters, the district and the system. Read leniently: a
    /// malformed scope is none (the role check then refuses a command), never a lost record.
    #[serde(
        default,
        deserialize_with = "crate::codes::empty_as_none::lenient::nullable",
        skip_serializing_if = "Option::is_none"
    )]
    pub scope: Option<ActorScope>,
}

impl Actor {
    /// The processor itself (dedupe verdicts, overdue facts).
    pub fn system() -> Self {
        Self {
            kind: ActorKind::System,
            id: "system".into(),
            group: None,
            scope: None,
        }
    }
}

/// The role an actor acts in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    Reporter,
    /// Staff of records written before roles existed; acts as the district.
    Staff,
    System,
    /// A street office (街镇): its own street's clues.
    Street,
    /// A department (职能部门): clues dispatched to it.
    Department,
    /// The district command centre (区指挥中心): every clue.
    District,
}

impl ActorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActorKind::Reporter => "reporter",
            ActorKind::Staff => "staff",
            ActorKind::System => "system",
            ActorKind::Street => "street",
            ActorKind::Department => "department",
            ActorKind::District => "district",
        }
    }
}

/// A request to change a clue, on `clues.commands`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CommandEnvelope {
    pub v: u16,
    pub command_id: CommandId,
    pub clue_id: ClueId,
    pub issued_at_ms: u64,
    pub actor: Actor,
    #[serde(flatten)]
    pub command: Command,
}

/// Where a report came in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Api,
    Web,
    Open311,
    /// A historical record imported from an older system (back-dated; `POST /v1/import/clues`).
    Import,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub category: CategoryCode,
    pub location: GeoPoint,
    #[serde(default)]
    pub description: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub photos: Vec<String>,
    /// When the reporter saw the problem (client clock), if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported_at_ms: Option<u64>,
    /// Keyed hash of the reporter's phone number, if one was given; never the number itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_hash: Option<String>,
    pub channel: Channel,
}

/// What a command asks for: a new report, the dedupe stage's verdict on one, or a step of the
/// clue's lifecycle. On the wire every kind is one object tagged by `type`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    Report(Report),
    /// Internal (issued by enrich's dedupe stage, never accepted from clients): the verdict on
    /// a placed report, which completes it: `duplicate_of` the open case it repeats, or none.
    DedupeVerdict {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        duplicate_of: Option<ClueId>,
    },
    /// A step of the closed loop on an existing clue (its `type` is the step's).
    #[serde(untagged)]
    Lifecycle(Lifecycle),
}

/// The steps of the closed loop a role takes on an existing clue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Lifecycle {
    Accept,
    Reject {
        reason: String,
    },
    Merge {
        duplicate_of: ClueId,
    },
    Dispatch {
        department: DepartmentCode,
    },
    Start,
    Handle {
        note: String,
        /// References (URLs) of photos of the finished work.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        photos: Vec<String>,
    },
    Return {
        reason: String,
    },
    VerifyOk,
    VerifyFail {
        reason: String,
    },
    /// Records written before postponements needed approval: extends the deadline by the given
    /// working hours at once (as an approved postponement).
    Postpone {
        reason: String,
        working_hours: u32,
    },
    /// A department asks for `working_hours` more (申请延期); the district decides.
    RequestPostpone {
        reason: String,
        working_hours: u32,
    },
    /// The district grants the pending request: the deadline moves by its working hours, or by
    /// `working_hours` when given.
    ApprovePostpone {
        #[serde(default, skip_serializing_if = "String::is_empty")]
        note: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        working_hours: Option<u32>,
    },
    DenyPostpone {
        reason: String,
    },
    /// 督办: the district marks the clue and the people on it are told.
    Supervise {
        note: String,
    },
    /// The reporter takes back a clue that was not accepted yet.
    Withdraw {
        #[serde(default, skip_serializing_if = "String::is_empty")]
        reason: String,
    },
    /// The reporter rates a closed clue (回访满意度), 1–5.
    Rate {
        rating: u8,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        note: String,
    },
}

impl From<Lifecycle> for Command {
    fn from(step: Lifecycle) -> Self {
        Command::Lifecycle(step)
    }
}

impl Lifecycle {
    pub fn action(&self) -> Action {
        match self {
            Lifecycle::Accept => Action::Accept,
            Lifecycle::Reject { .. } => Action::Reject,
            Lifecycle::Merge { .. } => Action::Merge,
            Lifecycle::Dispatch { .. } => Action::Dispatch,
            Lifecycle::Start => Action::Start,
            Lifecycle::Handle { .. } => Action::Handle,
            Lifecycle::Return { .. } => Action::Return,
            Lifecycle::VerifyOk => Action::VerifyOk,
            Lifecycle::VerifyFail { .. } => Action::VerifyFail,
            Lifecycle::Postpone { .. } | Lifecycle::ApprovePostpone { .. } => {
                Action::ApprovePostpone
            }
            Lifecycle::RequestPostpone { .. } => Action::RequestPostpone,
            Lifecycle::DenyPostpone { .. } => Action::DenyPostpone,
            Lifecycle::Supervise { .. } => Action::Supervise,
            Lifecycle::Withdraw { .. } => Action::Withdraw,
            Lifecycle::Rate { .. } => Action::Rate,
        }
    }
}

impl Command {
    pub fn action(&self) -> Action {
        match self {
            // The verdict completes the report it answers.
            Command::Report(_) | Command::DedupeVerdict { .. } => Action::Report,
            Command::Lifecycle(step) => step.action(),
        }
    }

    /// The command's type as it appears on the wire (`type`), a bounded metric label.
    pub fn type_name(&self) -> &'static str {
        match self {
            Command::DedupeVerdict { .. } => "dedupe_verdict",
            Command::Lifecycle(Lifecycle::Postpone { .. }) => "postpone",
            other => other.action().as_str(),
        }
    }
}

/// Where a reported point fell on the district map.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Placement {
    Inside {
        grid_code: GridCode,
        /// The point lies on an edge or vertex shared by grids; `grid_code` was chosen by the
        /// index's documented tie-break rule.
        on_boundary: bool,
    },
    Outside {
        nearest_grid_code: Option<GridCode>,
        distance_m: f64,
    },
}

impl Placement {
    pub fn grid(&self) -> Option<&GridCode> {
        match self {
            Placement::Inside { grid_code, .. } => Some(grid_code),
            Placement::Outside { .. } => None,
        }
    }
}

/// The enriched fact of a report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reported {
    pub category: CategoryCode,
    pub location: GeoPoint,
    pub placement: Placement,
    pub map_version: String,
    /// The department the category routes to (every report has one, inside the district or not).
    pub department: DepartmentCode,
    pub urgency: Urgency,
    /// Working-time deadline (epoch ms), absent when the clue is outside the district.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    pub reporter_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reporter_group: Option<ReporterGroup>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicate_of: Option<ClueId>,
    #[serde(default)]
    pub description: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub photos: Vec<String>,
    pub channel: Channel,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Fact {
    Reported(Box<Reported>),
    /// The SLA clock starts here: `deadline_ms` = the accept's issue time + the category's limit
    /// in working time (absent only in records written before deadlines moved to acceptance).
    /// `yellow_at_ms`: when only 20% of the limit's working time remains (see
    /// [`crate::light`]; absent in older records).
    Accepted {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        deadline_ms: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        yellow_at_ms: Option<u64>,
    },
    Rejected {
        reason: String,
    },
    Merged {
        duplicate_of: ClueId,
    },
    Dispatched {
        department: DepartmentCode,
    },
    Started,
    Handled {
        note: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        photos: Vec<String>,
    },
    Returned {
        reason: String,
    },
    /// Closed after a passed verification (核查通过). `working_ms`: the working time from the
    /// acceptance to this closure by the district calendar, measured once by the clue processor
    /// (absent in records written before it did, and for a clue closed without an acceptance).
    Verified {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        working_ms: Option<u64>,
    },
    VerifyFailed {
        reason: String,
    },
    /// An approved postponement (延期): the deadline moved to `deadline_ms`.
    Postponed {
        reason: String,
        deadline_ms: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        yellow_at_ms: Option<u64>,
        /// How many working hours were granted (absent in older records).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        working_hours: Option<u32>,
    },
    /// A department asked for more time; the district decides.
    PostponeRequested {
        reason: String,
        working_hours: u32,
    },
    /// The district refused the pending request; the deadline stays.
    PostponeDenied {
        reason: String,
    },
    /// 督办 by the district.
    Supervised {
        note: String,
    },
    /// Taken back by the reporter before acceptance (terminal).
    Withdrawn {
        #[serde(default)]
        reason: String,
    },
    /// The reporter's satisfaction with a closed clue, 1–5.
    Rated {
        rating: u8,
        #[serde(default)]
        note: String,
    },
    /// The deadline `deadline_ms` passed with the clue still open: emitted once per deadline (a
    /// postponement gives a new deadline, which may pass again).
    Overdue {
        deadline_ms: u64,
    },
}

impl Fact {
    pub fn type_name(&self) -> &'static str {
        match self {
            Fact::Reported(_) => "reported",
            Fact::Accepted { .. } => "accepted",
            Fact::Rejected { .. } => "rejected",
            Fact::Merged { .. } => "merged",
            Fact::Dispatched { .. } => "dispatched",
            Fact::Started => "started",
            Fact::Handled { .. } => "handled",
            Fact::Returned { .. } => "returned",
            Fact::Verified { .. } => "verified",
            Fact::VerifyFailed { .. } => "verify_failed",
            Fact::Postponed { .. } => "postponed",
            Fact::PostponeRequested { .. } => "postpone_requested",
            Fact::PostponeDenied { .. } => "postpone_denied",
            Fact::Supervised { .. } => "supervised",
            Fact::Withdrawn { .. } => "withdrawn",
            Fact::Rated { .. } => "rated",
            Fact::Overdue { .. } => "overdue",
        }
    }
}

/// One fact about a clue, on `clues.events`. `(clue_id, seq)` identifies it: seq 0 is the
/// report, each later accepted command adds one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventEnvelope {
    pub v: u16,
    pub clue_id: ClueId,
    pub seq: u32,
    pub command_id: CommandId,
    /// Business time: when the command was issued.
    pub occurred_at_ms: u64,
    /// When the clue processor produced the fact.
    pub processed_at_ms: u64,
    /// When Kafka acknowledged the command that caused the fact to ingest (the command
    /// record's timestamp; for a report, the report's, also when the fact follows its dedupe
    /// verdict). Absent on facts no client command caused (overdue) and in older records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingested_at_ms: Option<u64>,
    /// The clue's status after this fact.
    pub status: Status,
    /// Who caused the fact (absent in records written before roles existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<Actor>,
    #[serde(flatten)]
    pub fact: Fact,
}

/// The processor's verdict on one client transition, on `clues.outcomes` (key = clue id). The
/// same command id always gets the same verdict: a repeated command is answered from the
/// clue's memory of recent verdicts, not decided again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutcomeRecord {
    pub v: u16,
    pub command_id: CommandId,
    pub clue_id: ClueId,
    pub action: Action,
    /// The public id of the token that asked (only its holder may read the verdict back).
    #[serde(default)]
    pub actor_id: String,
    /// When the processor decided.
    pub decided_at_ms: u64,
    #[serde(flatten)]
    pub verdict: Verdict,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Verdict {
    /// Applied: the clue's status, seq and deadline right after the command's fact.
    Applied {
        status: Status,
        seq: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        deadline_ms: Option<u64>,
    },
    /// Refused: nothing changed.
    Refused {
        class: RefusalClass,
        reason: RefusalReason,
        detail: String,
        /// The clue's status when refused (absent for an unknown clue).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<Status>,
    },
}

/// Why a record went to the DLQ. Codes are stable and bounded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DlqReason {
    /// Not JSON, or not the expected shape.
    Undecodable,
    /// A schema version newer than this reader knows.
    UnsupportedVersion,
    /// The record key does not match the clue id inside.
    KeyMismatch,
    /// A well-formed command the status machine refused.
    IllegalTransition,
    UnknownClue,
    TerminalState,
    /// A reported point outside the district.
    OutsideDistrict,
    /// A category the catalog does not know.
    UnknownCategory,
    /// ClickHouse refused the row permanently.
    ClickhouseRejected,
    /// Too many commands for a clue whose report is still waiting for its dedupe verdict.
    TooManyPending,
    /// The actor's role or scope does not allow the command on this clue.
    Forbidden,
}

impl DlqReason {
    pub const ALL: [DlqReason; 11] = [
        DlqReason::Undecodable,
        DlqReason::UnsupportedVersion,
        DlqReason::KeyMismatch,
        DlqReason::IllegalTransition,
        DlqReason::UnknownClue,
        DlqReason::TerminalState,
        DlqReason::OutsideDistrict,
        DlqReason::UnknownCategory,
        DlqReason::ClickhouseRejected,
        DlqReason::TooManyPending,
        DlqReason::Forbidden,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DlqReason::Undecodable => "undecodable",
            DlqReason::UnsupportedVersion => "unsupported_version",
            DlqReason::KeyMismatch => "key_mismatch",
            DlqReason::IllegalTransition => "illegal_transition",
            DlqReason::UnknownClue => "unknown_clue",
            DlqReason::TerminalState => "terminal_state",
            DlqReason::OutsideDistrict => "outside_district",
            DlqReason::UnknownCategory => "unknown_category",
            DlqReason::ClickhouseRejected => "clickhouse_rejected",
            DlqReason::TooManyPending => "too_many_pending",
            DlqReason::Forbidden => "forbidden",
        }
    }
}

/// A record that could not be processed, on `clues.dlq`, with enough to inspect and replay it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DlqRecord {
    pub v: u16,
    pub reason: DlqReason,
    /// Human-readable detail (never contains secrets or phone numbers).
    pub detail: String,
    pub stage: String,
    pub source_topic: String,
    pub source_partition: i32,
    pub source_offset: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The original payload: UTF-8 text when it was valid UTF-8, else hex.
    pub payload: String,
    pub payload_is_hex: bool,
    pub at_ms: u64,
}

impl DlqRecord {
    pub fn payload_of(bytes: &[u8]) -> (String, bool) {
        match std::str::from_utf8(bytes) {
            Ok(s) => (s.to_owned(), false),
            Err(_) => (hex::encode(bytes), true),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("record is not a valid {what}: {source}")]
    Shape {
        what: &'static str,
        source: serde_json::Error,
    },
    #[error("record has schema version {0}, newer than this reader knows")]
    UnsupportedVersion(u16),
}

impl DecodeError {
    pub fn dlq_reason(&self) -> DlqReason {
        match self {
            DecodeError::Shape { .. } => DlqReason::Undecodable,
            DecodeError::UnsupportedVersion(_) => DlqReason::UnsupportedVersion,
        }
    }
}

#[derive(Deserialize)]
struct VersionProbe {
    v: u16,
}

fn decode<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    what: &'static str,
) -> Result<T, DecodeError> {
    decode_versioned(bytes, what, SCHEMA_VERSION)
}

/// Decodes a JSON record whose `v` may be at most `newest` (for records of other versioned
/// contracts than this module's, e.g. a service's internal topics).
pub fn decode_versioned<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    what: &'static str,
    newest: u16,
) -> Result<T, DecodeError> {
    // Check the version first so a future record is reported as such, not as a shape error.
    if let Ok(probe) = serde_json::from_slice::<VersionProbe>(bytes) {
        if probe.v > newest {
            return Err(DecodeError::UnsupportedVersion(probe.v));
        }
    }
    serde_json::from_slice(bytes).map_err(|source| DecodeError::Shape { what, source })
}

impl CommandEnvelope {
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        decode(bytes, "command")
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("commands always serialize")
    }
}

impl EventEnvelope {
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        decode(bytes, "event")
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("events always serialize")
    }
}

impl OutcomeRecord {
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        decode(bytes, "outcome")
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("outcomes always serialize")
    }
}

impl DlqRecord {
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        decode(bytes, "DLQ record")
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("DLQ records always serialize")
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report_command() -> CommandEnvelope {
        let clue_id = ClueId::new_random();
        CommandEnvelope {
            v: SCHEMA_VERSION,
            command_id: CommandId::for_report(clue_id),
            clue_id,
            issued_at_ms: 1_764_000_000_000,
            actor: Actor {
                kind: ActorKind::Reporter,
                id: "tok_1".into(),
                group: Some(ReporterGroup::FoodDelivery),
                scope: None,
            },
            command: Command::Report(Report {
                category: CategoryCode::parse("manhole_cover").unwrap(),
                location: GeoPoint::new(31.2, 121.5).unwrap(),
                description: "井盖缺失".into(),
                photos: vec![],
                reported_at_ms: None,
                phone_hash: None,
                channel: Channel::Api,
            }),
        }
    }

    #[test]
    fn commands_round_trip_and_are_tagged() {
        let c = report_command();
        let bytes = c.encode();
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(json["type"], "report");
        assert_eq!(json["v"], 1);
        assert_eq!(CommandEnvelope::decode(&bytes).unwrap(), c);

        let mut d = c.clone();
        d.command = Command::Lifecycle(Lifecycle::Start);
        assert_eq!(CommandEnvelope::decode(&d.encode()).unwrap(), d);
    }

    #[test]
    fn unknown_fields_are_tolerated() {
        let mut json: serde_json::Value =
            serde_json::from_slice(&report_command().encode()).unwrap();
        json["added_in_a_later_minor"] = serde_json::json!({"x": 1});
        json["location"]["accuracy_m"] = serde_json::json!(12.5);
        let bytes = serde_json::to_vec(&json).unwrap();
        assert!(CommandEnvelope::decode(&bytes).is_ok());
    }

    #[test]
    fn newer_versions_and_garbage_are_refused_with_reasons() {
        let mut json: serde_json::Value =
            serde_json::from_slice(&report_command().encode()).unwrap();
        json["v"] = serde_json::json!(2);
        let err = CommandEnvelope::decode(&serde_json::to_vec(&json).unwrap()).unwrap_err();
        assert_eq!(err.dlq_reason(), DlqReason::UnsupportedVersion);
        let err = CommandEnvelope::decode(b"\xff\x00not json").unwrap_err();
        assert_eq!(err.dlq_reason(), DlqReason::Undecodable);
        let err = CommandEnvelope::decode(br#"{"v":1,"type":"teleport"}"#).unwrap_err();
        assert_eq!(err.dlq_reason(), DlqReason::Undecodable);
    }

    #[test]
    fn invalid_points_do_not_decode() {
        let mut json: serde_json::Value =
            serde_json::from_slice(&report_command().encode()).unwrap();
        json["location"]["lat"] = serde_json::json!(123.0);
        assert!(CommandEnvelope::decode(&serde_json::to_vec(&json).unwrap()).is_err());
    }

    #[test]
    fn events_round_trip() {
        let c = report_command();
        let e = EventEnvelope {
            v: SCHEMA_VERSION,
            clue_id: c.clue_id,
            seq: 0,
            command_id: c.command_id,
            occurred_at_ms: 1,
            processed_at_ms: 2,
            ingested_at_ms: None,
            status: Status::Reported,
            actor: None,
            fact: Fact::Reported(Box::new(Reported {
                category: CategoryCode::parse("garbage_pile").unwrap(),
                location: GeoPoint::new(31.2, 121.5).unwrap(),
                placement: Placement::Inside {
                    grid_code: GridCode::parse("310199003002017").unwrap(),
                    on_boundary: false,
                },
                map_version: "m1".into(),
                department: DepartmentCode::parse("city_mgmt").unwrap(),
                urgency: Urgency::Normal,
                deadline_ms: Some(99),
                reporter_id: "tok_1".into(),
                reporter_group: None,
                duplicate_of: None,
                description: String::new(),
                photos: vec![],
                channel: Channel::Web,
            })),
        };
        let bytes = e.encode();
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(json["type"], "reported");
        assert_eq!(json["placement"]["kind"], "inside");
        assert_eq!(json["department"], "city_mgmt");
        assert_eq!(EventEnvelope::decode(&bytes).unwrap(), e);
    }

    #[test]
    fn department_codes_travel_as_plain_strings() {
        let mut c = report_command();
        c.command = Command::Lifecycle(Lifecycle::Dispatch {
            department: DepartmentCode::parse("water_affairs").unwrap(),
        });
        let text = String::from_utf8(c.encode()).unwrap();
        assert!(
            text.contains(r#""type":"dispatch","department":"water_affairs""#),
            "{text}"
        );
        assert_eq!(CommandEnvelope::decode(text.as_bytes()).unwrap(), c);
        let malformed = text.replace("water_affairs", "Water Affairs");
        assert!(CommandEnvelope::decode(malformed.as_bytes()).is_err());
        let fact = Fact::Dispatched {
            department: DepartmentCode::parse("fire_rescue").unwrap(),
        };
        assert_eq!(
            serde_json::to_string(&fact).unwrap(),
            r#"{"type":"dispatched","department":"fire_rescue"}"#
        );
    }

    #[test]
    fn records_written_before_the_closed_loop_still_decode() {
        let clue = ClueId::new_random();
        let cmd = |body: &str| {
            format!(
                r#"{{"v":1,"command_id":"{}","clue_id":"{clue}","issued_at_ms":5,"actor":{{"kind":"staff","id":"ops"}},{body}}}"#,
                CommandId::new_random()
            )
        };
        let old =
            CommandEnvelope::decode(cmd(r#""type":"handle","note":"done""#).as_bytes()).unwrap();
        assert_eq!(
            old.command,
            Command::Lifecycle(Lifecycle::Handle {
                note: "done".into(),
                photos: vec![]
            })
        );
        assert_eq!((old.actor.kind, old.actor.scope), (ActorKind::Staff, None));
        let legacy = CommandEnvelope::decode(
            cmd(r#""type":"postpone","reason":"r","working_hours":4"#).as_bytes(),
        )
        .unwrap();
        assert_eq!(legacy.command.action(), Action::ApprovePostpone);
        assert_eq!(legacy.command.type_name(), "postpone");

        let event = |body: &str| {
            format!(
                r#"{{"v":1,"clue_id":"{clue}","seq":1,"command_id":"{}","occurred_at_ms":1,"processed_at_ms":2,"status":"accepted",{body}}}"#,
                CommandId::new_random()
            )
        };
        let e = EventEnvelope::decode(event(r#""type":"accepted","deadline_ms":9"#).as_bytes())
            .unwrap();
        assert_eq!(
            (e.actor, e.fact),
            (
                None,
                Fact::Accepted {
                    deadline_ms: Some(9),
                    yellow_at_ms: None
                }
            )
        );
        let e = EventEnvelope::decode(event(r#""type":"verified""#).as_bytes()).unwrap();
        assert_eq!(e.fact, Fact::Verified { working_ms: None });
        let e = EventEnvelope::decode(
            event(r#""type":"postponed","reason":"r","deadline_ms":9"#).as_bytes(),
        )
        .unwrap();
        assert!(matches!(
            e.fact,
            Fact::Postponed {
                yellow_at_ms: None,
                working_hours: None,
                ..
            }
        ));
    }

    #[test]
    fn closed_loop_commands_facts_and_outcomes_round_trip() {
        let mut c = report_command();
        c.actor = Actor {
            kind: ActorKind::Department,
            id: "tok_d".into(),
            group: None,
            scope: Some(ActorScope::parse("water_affairs").unwrap()),
        };
        for command in [
            Command::Lifecycle(Lifecycle::RequestPostpone {
                reason: "parts".into(),
                working_hours: 8,
            }),
            Command::Lifecycle(Lifecycle::ApprovePostpone {
                note: String::new(),
                working_hours: None,
            }),
            Command::Lifecycle(Lifecycle::DenyPostpone {
                reason: "no".into(),
            }),
            Command::Lifecycle(Lifecycle::Supervise { note: "快".into() }),
            Command::Lifecycle(Lifecycle::Withdraw {
                reason: String::new(),
            }),
            Command::Lifecycle(Lifecycle::Rate {
                rating: 5,
                note: "好".into(),
            }),
            Command::Lifecycle(Lifecycle::Handle {
                note: "done".into(),
                photos: vec!["https://p/1.jpg".into()],
            }),
        ] {
            c.command = command;
            let json: serde_json::Value = serde_json::from_slice(&c.encode()).unwrap();
            assert_eq!(json["type"], c.command.action().as_str());
            assert_eq!(json["actor"]["kind"], "department");
            assert_eq!(CommandEnvelope::decode(&c.encode()).unwrap(), c);
        }
        // A malformed scope is read as none: the command is decided (and refused by the role
        // check), not lost to the dead-letter queue.
        let text = String::from_utf8(c.encode()).unwrap();
        let malformed = text.replace(r#""scope":"water_affairs""#, r#""scope":"Water Affairs""#);
        assert_ne!(malformed, text);
        let read = CommandEnvelope::decode(malformed.as_bytes()).unwrap();
        assert_eq!(
            (read.actor.kind, read.actor.scope),
            (ActorKind::Department, None)
        );
        for fact in [
            Fact::PostponeRequested {
                reason: "r".into(),
                working_hours: 4,
            },
            Fact::PostponeDenied { reason: "r".into() },
            Fact::Supervised { note: "n".into() },
            Fact::Withdrawn { reason: "".into() },
            Fact::Rated {
                rating: 3,
                note: "".into(),
            },
            Fact::Overdue { deadline_ms: 77 },
            Fact::Verified {
                working_ms: Some(4 * 3_600_000),
            },
        ] {
            let e = EventEnvelope {
                v: SCHEMA_VERSION,
                clue_id: c.clue_id,
                seq: 4,
                command_id: c.command_id,
                occurred_at_ms: 1,
                processed_at_ms: 2,
                ingested_at_ms: None,
                status: Status::Dispatched,
                actor: Some(Actor::system()),
                fact,
            };
            let json: serde_json::Value = serde_json::from_slice(&e.encode()).unwrap();
            assert_eq!(json["type"], e.fact.type_name());
            assert_eq!(EventEnvelope::decode(&e.encode()).unwrap(), e);
        }
        let applied = OutcomeRecord {
            v: SCHEMA_VERSION,
            command_id: c.command_id,
            clue_id: c.clue_id,
            action: Action::Start,
            actor_id: "tok_d".into(),
            decided_at_ms: 3,
            verdict: Verdict::Applied {
                status: Status::InProgress,
                seq: 3,
                deadline_ms: Some(99),
            },
        };
        let json: serde_json::Value = serde_json::from_slice(&applied.encode()).unwrap();
        assert_eq!(
            (json["outcome"].as_str(), json["action"].as_str()),
            (Some("applied"), Some("start"))
        );
        assert_eq!(OutcomeRecord::decode(&applied.encode()).unwrap(), applied);
        let refused = OutcomeRecord {
            verdict: Verdict::Refused {
                class: RefusalClass::Forbidden,
                reason: RefusalReason::OtherStreet,
                detail: "x".into(),
                status: Some(Status::Reported),
            },
            ..applied
        };
        let json: serde_json::Value = serde_json::from_slice(&refused.encode()).unwrap();
        assert_eq!(
            (json["class"].as_str(), json["reason"].as_str()),
            (Some("forbidden"), Some("other_street"))
        );
        assert_eq!(OutcomeRecord::decode(&refused.encode()).unwrap(), refused);
    }

    #[test]
    fn dlq_payload_keeps_binary_as_hex() {
        assert_eq!(DlqRecord::payload_of(b"abc"), ("abc".into(), false));
        assert_eq!(DlqRecord::payload_of(&[0xff, 0x01]), ("ff01".into(), true));
    }
}
