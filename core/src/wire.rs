//! The versioned JSON contract of the Kafka topics.
//!
//! Every record carries `v` (the schema version). Readers ignore unknown fields, so a newer
//! writer may add fields without breaking older readers; a record with a `v` newer than
//! [`SCHEMA_VERSION`] is refused with [`DecodeError::UnsupportedVersion`] (it goes to the DLQ
//! rather than being half-understood). Keys of commands and events are the clue id.

use serde::{Deserialize, Serialize};

use crate::category::{CategoryCode, Urgency};
use crate::geo::GeoPoint;
use crate::grid::GridCode;
use crate::ids::{ClueId, CommandId, ReporterGroup};
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
}

fn default_dedupe_topic() -> String {
    DEDUPE_TOPIC.into()
}

impl Default for Topics {
    fn default() -> Self {
        Self {
            commands: COMMANDS_TOPIC.into(),
            events: EVENTS_TOPIC.into(),
            dlq: DLQ_TOPIC.into(),
            state: STATE_TOPIC.into(),
            dedupe: DEDUPE_TOPIC.into(),
        }
    }
}

/// Who issued a command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub kind: ActorKind,
    /// Reporter id (a token's public id) or staff account; never a phone number or a name.
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<ReporterGroup>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    Reporter,
    Staff,
    System,
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

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    Report(Report),
    Accept,
    Reject {
        reason: String,
    },
    Merge {
        duplicate_of: ClueId,
    },
    Dispatch {
        department: String,
    },
    Start,
    Handle {
        note: String,
    },
    Return {
        reason: String,
    },
    VerifyOk,
    VerifyFail {
        reason: String,
    },
    /// Extends the deadline by the given working hours (缓办/延期).
    Postpone {
        reason: String,
        working_hours: u32,
    },
    /// Internal (issued by enrich's dedupe stage, never accepted from clients): the verdict on
    /// a placed report, which completes it: `duplicate_of` the open case it repeats, or none.
    DedupeVerdict {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        duplicate_of: Option<ClueId>,
    },
}

impl Command {
    pub fn action(&self) -> Action {
        match self {
            Command::Report(_) => Action::Report,
            Command::Accept => Action::Accept,
            Command::Reject { .. } => Action::Reject,
            Command::Merge { .. } => Action::Merge,
            Command::Dispatch { .. } => Action::Dispatch,
            Command::Start => Action::Start,
            Command::Handle { .. } => Action::Handle,
            Command::Return { .. } => Action::Return,
            Command::VerifyOk => Action::VerifyOk,
            Command::VerifyFail { .. } => Action::VerifyFail,
            Command::Postpone { .. } => Action::Postpone,
            // The verdict completes the report it answers.
            Command::DedupeVerdict { .. } => Action::Report,
        }
    }

    /// The command's type as it appears on the wire (`type`), a bounded metric label.
    pub fn type_name(&self) -> &'static str {
        match self {
            Command::DedupeVerdict { .. } => "dedupe_verdict",
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
    pub department: String,
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
    Accepted {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        deadline_ms: Option<u64>,
    },
    Rejected {
        reason: String,
    },
    Merged {
        duplicate_of: ClueId,
    },
    Dispatched {
        department: String,
    },
    Started,
    Handled {
        note: String,
    },
    Returned {
        reason: String,
    },
    Verified,
    VerifyFailed {
        reason: String,
    },
    Postponed {
        reason: String,
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
            Fact::Verified => "verified",
            Fact::VerifyFailed { .. } => "verify_failed",
            Fact::Postponed { .. } => "postponed",
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
    /// The clue's status after this fact.
    pub status: Status,
    #[serde(flatten)]
    pub fact: Fact,
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
}

impl DlqReason {
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
        d.command = Command::Start;
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
            status: Status::Reported,
            fact: Fact::Reported(Box::new(Reported {
                category: CategoryCode::parse("garbage_pile").unwrap(),
                location: GeoPoint::new(31.2, 121.5).unwrap(),
                placement: Placement::Inside {
                    grid_code: GridCode::parse("310199003002017").unwrap(),
                    on_boundary: false,
                },
                map_version: "m1".into(),
                department: "city_mgmt".into(),
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
        assert_eq!(EventEnvelope::decode(&bytes).unwrap(), e);
    }

    #[test]
    fn dlq_payload_keeps_binary_as_hex() {
        assert_eq!(DlqRecord::payload_of(b"abc"), ("abc".into(), false));
        assert_eq!(DlqRecord::payload_of(&[0xff, 0x01]), ("ff01".into(), true));
    }
}
