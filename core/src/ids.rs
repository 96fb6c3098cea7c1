//! Identifiers.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Namespace for clue ids derived from a reporter's idempotency key, so that retries through
/// any ingest replica map to the same clue without shared state.
const IDEMPOTENCY_NAMESPACE: Uuid = Uuid::from_u128(0x6a1f_2c3e_9b0d_4e7a_8c5b_1d2e_3f40_5a6b);
/// Namespace for the command ids of transitions derived from an idempotency key.
const TRANSITION_NAMESPACE: Uuid = Uuid::from_u128(0x2f7c_91a4_5e3b_4d08_b6c1_7a9e_0d2f_4c85);

/// A clue's identity. Kafka key of every command and event of that clue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ClueId(pub Uuid);

impl ClueId {
    pub fn new_random() -> Self {
        Self(Uuid::new_v4())
    }

    /// The clue id a reporter's idempotency key stands for. Deterministic: the same reporter and
    /// key always give the same id, and different reporters never collide on a shared key.
    pub fn from_idempotency_key(reporter: &ReporterId, key: &str) -> Self {
        let name = format!("{}\u{1f}{}", reporter.as_str(), key);
        Self(Uuid::new_v5(&IDEMPOTENCY_NAMESPACE, name.as_bytes()))
    }

    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl fmt::Display for ClueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for ClueId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

/// A command's identity: repeating a command id is a no-op downstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CommandId(pub Uuid);

impl CommandId {
    pub fn new_random() -> Self {
        Self(Uuid::new_v4())
    }

    /// The command id of a clue's report is derived from the clue id, so a retried report is
    /// recognisably the same command.
    pub fn for_report(clue: ClueId) -> Self {
        Self(Uuid::new_v5(&clue.0, b"report"))
    }

    /// The dedupe verdict on a clue's report is issued once per clue; a re-issued verdict is
    /// recognisably the same command.
    pub fn for_dedupe_verdict(clue: ClueId) -> Self {
        Self(Uuid::new_v5(&clue.0, b"dedupe-verdict"))
    }

    /// The transition an actor asked for on a clue under an idempotency key: a retry with the
    /// same key is the same command (and gets the first answer), whatever ingest replica it
    /// reaches; different actors or clues never share one.
    pub fn for_transition(actor_id: &str, clue: ClueId, key: &str) -> Self {
        let name = format!("{actor_id}\u{1f}{clue}\u{1f}{key}");
        Self(Uuid::new_v5(&TRANSITION_NAMESPACE, name.as_bytes()))
    }

    /// The overdue fact of one deadline of a clue: the same deadline always gives the same id.
    pub fn for_overdue(clue: ClueId, deadline_ms: u64) -> Self {
        Self(Uuid::new_v5(
            &clue.0,
            format!("overdue-{deadline_ms}").as_bytes(),
        ))
    }
}

impl fmt::Display for CommandId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An opaque, stable, non-secret reporter identifier (the token's public id), never a phone
/// number or name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ReporterId(String);

impl ReporterId {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(IdError::Reporter)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ReporterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    #[error("reporter id must be 1–64 ASCII letters, digits, '-' or '_'")]
    Reporter,
    #[error("unknown reporter group {0:?}")]
    Group(String),
}

/// Which kind of part-time grid member reported the clue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReporterGroup {
    Courier,
    FoodDelivery,
    RideHailing,
    Truck,
    GridMember,
}

impl ReporterGroup {
    pub const ALL: [ReporterGroup; 5] = [
        ReporterGroup::Courier,
        ReporterGroup::FoodDelivery,
        ReporterGroup::RideHailing,
        ReporterGroup::Truck,
        ReporterGroup::GridMember,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ReporterGroup::Courier => "courier",
            ReporterGroup::FoodDelivery => "food_delivery",
            ReporterGroup::RideHailing => "ride_hailing",
            ReporterGroup::Truck => "truck",
            ReporterGroup::GridMember => "grid_member",
        }
    }
}

impl FromStr for ReporterGroup {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|g| g.as_str() == s)
            .ok_or_else(|| IdError::Group(s.to_owned()))
    }
}

impl fmt::Display for ReporterGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_key_maps_to_a_stable_id_per_reporter() {
        let a = ReporterId::parse("rider-1").unwrap();
        let b = ReporterId::parse("rider-2").unwrap();
        assert_eq!(
            ClueId::from_idempotency_key(&a, "k1"),
            ClueId::from_idempotency_key(&a, "k1")
        );
        assert_ne!(
            ClueId::from_idempotency_key(&a, "k1"),
            ClueId::from_idempotency_key(&b, "k1")
        );
        assert_ne!(
            ClueId::from_idempotency_key(&a, "k1"),
            ClueId::from_idempotency_key(&a, "k2")
        );
    }

    #[test]
    fn transition_ids_are_stable_per_actor_clue_and_key() {
        let (c1, c2) = (ClueId::new_random(), ClueId::new_random());
        let id = CommandId::for_transition("tok_a", c1, "k");
        assert_eq!(id, CommandId::for_transition("tok_a", c1, "k"));
        assert_ne!(id, CommandId::for_transition("tok_b", c1, "k"));
        assert_ne!(id, CommandId::for_transition("tok_a", c2, "k"));
        assert_ne!(id, CommandId::for_transition("tok_a", c1, "k2"));
        assert_eq!(CommandId::for_overdue(c1, 5), CommandId::for_overdue(c1, 5));
        assert_ne!(CommandId::for_overdue(c1, 5), CommandId::for_overdue(c1, 6));
    }

    #[test]
    fn reporter_ids_are_restricted() {
        assert!(ReporterId::parse("tok_ab-12").is_ok());
        assert_eq!(ReporterId::parse(""), Err(IdError::Reporter));
        assert_eq!(ReporterId::parse("a b"), Err(IdError::Reporter));
        assert_eq!(ReporterId::parse(&"x".repeat(65)), Err(IdError::Reporter));
    }

    #[test]
    fn groups_round_trip() {
        for g in ReporterGroup::ALL {
            assert_eq!(g.as_str().parse::<ReporterGroup>().unwrap(), g);
            let json = serde_json::to_string(&g).unwrap();
            assert_eq!(json, format!("\"{}\"", g.as_str()));
        }
        assert!("pilot".parse::<ReporterGroup>().is_err());
    }
}
