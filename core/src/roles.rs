//! Who may take which action on which clue, as pure functions: the clue processor (the one
//! writer per clue) decides with them, and readers use them to show what an actor may do.
//!
//! | role | actions | on which clues |
//! |---|---|---|
//! | street office (`street`) | accept, reject, merge, dispatch, verify_ok, verify_fail | its street's |
//! | department (`department`) | start, handle, return, request_postpone | dispatched to it now |
//! | district (`district`) | the street actions, supervise, approve_postpone, deny_postpone | all |
//! | reporter (`reporter`) | withdraw, rate | its own |
//!
//! (`staff`, the unscoped actor of records written before roles existed, may take any staff
//! action; no token issues it.)
//!
//! A refusal for the role or the scope is [`RefusalClass::Forbidden`] (HTTP 403) and comes before
//! the status machine's, which is [`RefusalClass::Conflict`] (409): an actor learns nothing about
//! the state of a clue it may not act on.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::category::DepartmentCode;
use crate::grid::StreetCode;
use crate::status::{next_status, Action, Status, TransitionError};
use crate::wire::{Actor, ActorKind};

/// How a refusal reads to a client (an HTTP status class).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalClass {
    /// The role or scope does not allow it (403).
    Forbidden,
    /// Not possible in the clue's current state (409).
    Conflict,
    /// No such clue (404).
    NotFound,
    /// Not now; the same request may succeed later (503).
    Unavailable,
}

impl RefusalClass {
    pub fn http_status(self) -> u16 {
        match self {
            RefusalClass::Forbidden => 403,
            RefusalClass::Conflict => 409,
            RefusalClass::NotFound => 404,
            RefusalClass::Unavailable => 503,
        }
    }
}

/// Why a transition was refused; codes are stable and bounded (metric labels, API `type`s).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalReason {
    /// The actor's role never takes this action.
    RoleNotAllowed,
    /// A street office acting on another street's clue.
    OtherStreet,
    /// A department acting on a clue not dispatched to it.
    NotAssigned,
    /// A reporter acting on someone else's clue.
    NotOwnClue,
    /// The status machine does not allow the action from the current status.
    IllegalTransition,
    /// The clue is closed, rejected, a duplicate or withdrawn.
    TerminalState,
    UnknownClue,
    /// A postponement before acceptance: no deadline runs yet.
    NoDeadline,
    /// A postponement is already waiting for the district's decision.
    PostponementPending,
    /// Approve or deny with no request waiting.
    NoPostponementPending,
    /// The clue has been rated already.
    AlreadyRated,
    /// A dispatch to a department the category table does not know.
    UnknownDepartment,
    /// The clue's report is still being deduplicated and too many commands wait for it.
    TooManyPending,
}

impl RefusalReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalReason::RoleNotAllowed => "role_not_allowed",
            RefusalReason::OtherStreet => "other_street",
            RefusalReason::NotAssigned => "not_assigned",
            RefusalReason::NotOwnClue => "not_own_clue",
            RefusalReason::IllegalTransition => "illegal_transition",
            RefusalReason::TerminalState => "terminal_state",
            RefusalReason::UnknownClue => "unknown_clue",
            RefusalReason::NoDeadline => "no_deadline",
            RefusalReason::PostponementPending => "postponement_pending",
            RefusalReason::NoPostponementPending => "no_postponement_pending",
            RefusalReason::AlreadyRated => "already_rated",
            RefusalReason::UnknownDepartment => "unknown_department",
            RefusalReason::TooManyPending => "too_many_pending",
        }
    }

    pub fn class(self) -> RefusalClass {
        match self {
            RefusalReason::RoleNotAllowed
            | RefusalReason::OtherStreet
            | RefusalReason::NotAssigned
            | RefusalReason::NotOwnClue => RefusalClass::Forbidden,
            RefusalReason::UnknownClue => RefusalClass::NotFound,
            RefusalReason::TooManyPending => RefusalClass::Unavailable,
            RefusalReason::IllegalTransition
            | RefusalReason::TerminalState
            | RefusalReason::NoDeadline
            | RefusalReason::PostponementPending
            | RefusalReason::NoPostponementPending
            | RefusalReason::AlreadyRated
            | RefusalReason::UnknownDepartment => RefusalClass::Conflict,
        }
    }
}

/// A refusal with a human-readable detail (no secrets, no personal data).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct Refusal {
    pub reason: RefusalReason,
    pub detail: String,
}

impl Refusal {
    pub fn new(reason: RefusalReason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }

    pub fn class(&self) -> RefusalClass {
        self.reason.class()
    }
}

impl From<TransitionError> for Refusal {
    fn from(e: TransitionError) -> Self {
        let reason = match e {
            TransitionError::UnknownClue => RefusalReason::UnknownClue,
            TransitionError::Terminal { .. } => RefusalReason::TerminalState,
            TransitionError::AlreadyReported | TransitionError::Illegal { .. } => {
                RefusalReason::IllegalTransition
            }
        };
        Refusal::new(reason, e.to_string())
    }
}

/// What a street office or a department token may act on: its street, or its department. On
/// the wire (tokens file, commands, facts, ClickHouse `actor_scope`) it is the plain code; the
/// two shapes cannot be confused (9 digits, or lowercase letters and `_`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum ActorScope {
    Street(StreetCode),
    Department(DepartmentCode),
}

/// Why a string is neither a street code nor a department code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("scope {0:?} is neither a 9-digit street code nor a department code")]
pub struct ActorScopeError(String);

impl ActorScope {
    /// The longest part of a malformed scope an error quotes.
    const QUOTED_CHARS: usize = 64;

    /// A street code when `s` is all digits, a department code otherwise.
    pub fn parse(s: &str) -> Result<Self, ActorScopeError> {
        let parsed = if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            StreetCode::parse(s).map(Self::Street).ok()
        } else {
            DepartmentCode::parse(s).map(Self::Department).ok()
        };
        parsed.ok_or_else(|| ActorScopeError(s.chars().take(Self::QUOTED_CHARS).collect()))
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Street(street) => street.as_str(),
            Self::Department(department) => department.as_str(),
        }
    }

    /// The street office's street, for a street scope.
    pub fn street(&self) -> Option<&StreetCode> {
        match self {
            Self::Street(street) => Some(street),
            Self::Department(_) => None,
        }
    }

    /// The department, for a department scope.
    pub fn department(&self) -> Option<&DepartmentCode> {
        match self {
            Self::Department(department) => Some(department),
            Self::Street(_) => None,
        }
    }
}

impl fmt::Display for ActorScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl AsRef<str> for ActorScope {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl TryFrom<String> for ActorScope {
    type Error = ActorScopeError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<ActorScope> for String {
    fn from(scope: ActorScope) -> Self {
        scope.as_str().to_owned()
    }
}

/// What decides who may act on a clue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClueScope<'a> {
    /// The owner street (`None` for a point outside the district).
    pub street_code: Option<&'a StreetCode>,
    /// The department the clue is dispatched to now (`None` before dispatch and after a return).
    pub department: Option<&'a DepartmentCode>,
    /// The reporter's id (the reporter token's public id).
    pub reporter_id: &'a str,
}

/// The actions a role ever takes (before looking at a clue).
pub fn role_actions(kind: ActorKind) -> &'static [Action] {
    use Action as A;
    const STREET: &[Action] = &[
        A::Accept,
        A::Reject,
        A::Merge,
        A::Dispatch,
        A::VerifyOk,
        A::VerifyFail,
    ];
    const DISTRICT: &[Action] = &[
        A::Accept,
        A::Reject,
        A::Merge,
        A::Dispatch,
        A::VerifyOk,
        A::VerifyFail,
        A::Supervise,
        A::ApprovePostpone,
        A::DenyPostpone,
    ];
    const EVERY_STAFF: &[Action] = &[
        A::Accept,
        A::Reject,
        A::Merge,
        A::Dispatch,
        A::VerifyOk,
        A::VerifyFail,
        A::Supervise,
        A::ApprovePostpone,
        A::DenyPostpone,
        A::Start,
        A::Handle,
        A::Return,
        A::RequestPostpone,
    ];
    match kind {
        ActorKind::Street => STREET,
        ActorKind::Department => &[A::Start, A::Handle, A::Return, A::RequestPostpone],
        ActorKind::District => DISTRICT,
        // Commands of records written before roles existed: no token issues them any more.
        ActorKind::Staff => EVERY_STAFF,
        ActorKind::Reporter => &[A::Withdraw, A::Rate],
        ActorKind::System => &[],
    }
}

/// Whether `actor` may take `action` on the clue at all (its role and scope), regardless of
/// the clue's status.
pub fn authorize(actor: &Actor, action: Action, clue: &ClueScope<'_>) -> Result<(), Refusal> {
    if !role_actions(actor.kind).contains(&action) {
        return Err(Refusal::new(
            RefusalReason::RoleNotAllowed,
            format!("a {} token may not {action}", actor.kind.as_str()),
        ));
    }
    let scope = actor.scope.as_ref();
    match actor.kind {
        ActorKind::Street if !owns(scope.and_then(ActorScope::street), clue.street_code) => {
            Err(Refusal::new(
                RefusalReason::OtherStreet,
                "the clue belongs to another street office",
            ))
        }
        ActorKind::Department if !owns(scope.and_then(ActorScope::department), clue.department) => {
            Err(Refusal::new(
                RefusalReason::NotAssigned,
                "the clue is not dispatched to this department",
            ))
        }
        ActorKind::Reporter if clue.reporter_id.is_empty() || actor.id != clue.reporter_id => {
            Err(Refusal::new(
                RefusalReason::NotOwnClue,
                "only the clue's reporter may do this",
            ))
        }
        _ => Ok(()),
    }
}

/// Whether an actor's street or department is the clue's (neither side may be missing).
pub fn owns<T: PartialEq>(own: Option<&T>, clue: Option<&T>) -> bool {
    own.is_some() && own == clue
}

/// The status after `actor` takes `action` on a clue in `status`: role and scope first (403),
/// then the status machine (409).
pub fn check(
    actor: &Actor,
    action: Action,
    status: Status,
    clue: &ClueScope<'_>,
) -> Result<Status, Refusal> {
    authorize(actor, action, clue)?;
    next_status(Some(status), action).map_err(Refusal::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action as A;
    use RefusalReason as R;
    use Status as S;

    const STREET: &str = "310199003";
    const DEPT: &str = "water_affairs";
    const REPORTER: &str = "tok_reporter";

    fn actor(kind: ActorKind, id: &str, scope: Option<&str>) -> Actor {
        Actor {
            kind,
            id: id.into(),
            group: None,
            scope: scope.map(|s| ActorScope::parse(s).unwrap()),
        }
    }

    /// The department the test clues are dispatched to.
    fn dispatched_to() -> &'static DepartmentCode {
        static CODE: std::sync::OnceLock<DepartmentCode> = std::sync::OnceLock::new();
        CODE.get_or_init(|| DepartmentCode::parse(DEPT).unwrap())
    }

    fn own_street() -> &'static StreetCode {
        static CODE: std::sync::OnceLock<StreetCode> = std::sync::OnceLock::new();
        CODE.get_or_init(|| StreetCode::parse(STREET).unwrap())
    }

    fn clue(department: Option<&DepartmentCode>) -> ClueScope<'_> {
        ClueScope {
            street_code: Some(own_street()),
            department,
            reporter_id: REPORTER,
        }
    }

    /// The issue's role table, written out by hand.
    fn expected_role(kind: ActorKind, action: Action) -> bool {
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
            ActorKind::Staff => !matches!(action, A::Withdraw | A::Rate | A::Report),
            ActorKind::Reporter => [A::Withdraw, A::Rate].contains(&action),
            ActorKind::System => false,
        }
    }

    /// Every role × transition × status: the role table first (403), then its scope (403 for
    /// the wrong street, department or reporter; allowed for its own), then the status machine
    /// (409 or the next status).
    #[test]
    fn every_role_action_status_is_allowed_forbidden_or_conflicting() {
        let dept_clue = clue(Some(dispatched_to()));
        let own = [
            actor(ActorKind::Street, "tok_s", Some(STREET)),
            actor(ActorKind::Department, "tok_d", Some(DEPT)),
            actor(ActorKind::District, "tok_x", None),
            actor(ActorKind::Staff, "tok_old", None),
            actor(ActorKind::Reporter, REPORTER, None),
            actor(ActorKind::System, "system", None),
        ];
        let (mut allowed, mut forbidden, mut conflict) = (0, 0, 0);
        for a in &own {
            for action in A::TRANSITIONS {
                for status in S::ALL {
                    let got = check(a, action, status, &dept_clue);
                    if !expected_role(a.kind, action) {
                        assert_eq!(
                            got.map_err(|r| r.reason),
                            Err(R::RoleNotAllowed),
                            "{:?} {action} {status}",
                            a.kind
                        );
                        forbidden += 1;
                        continue;
                    }
                    match next_status(Some(status), action) {
                        Ok(to) => {
                            assert_eq!(got, Ok(to), "{:?} {action} {status}", a.kind);
                            allowed += 1;
                        }
                        Err(e) => {
                            let r = got.expect_err("the status machine refuses");
                            assert_eq!(r.class(), RefusalClass::Conflict);
                            assert_eq!(r, Refusal::from(e));
                            conflict += 1;
                        }
                    }
                }
            }
        }
        assert!(allowed > 0 && forbidden > 0 && conflict > 0);
    }

    #[test]
    fn scope_is_checked_before_the_status() {
        let other_street = actor(ActorKind::Street, "tok_s2", Some("310199004"));
        let other_dept = actor(ActorKind::Department, "tok_d2", Some("fire_rescue"));
        let dept = actor(ActorKind::Department, "tok_d", Some(DEPT));
        let other_reporter = actor(ActorKind::Reporter, "tok_r2", None);
        for status in S::ALL {
            for action in role_actions(ActorKind::Street) {
                let r = check(&other_street, *action, status, &clue(Some(dispatched_to())))
                    .unwrap_err();
                assert_eq!(
                    (r.reason, r.class()),
                    (R::OtherStreet, RefusalClass::Forbidden)
                );
            }
            for action in role_actions(ActorKind::Department) {
                let r =
                    check(&other_dept, *action, status, &clue(Some(dispatched_to()))).unwrap_err();
                assert_eq!(
                    (r.reason, r.class()),
                    (R::NotAssigned, RefusalClass::Forbidden)
                );
                // Not dispatched (or returned): no department may act.
                let r = check(&dept, *action, status, &clue(None)).unwrap_err();
                assert_eq!(r.reason, R::NotAssigned);
            }
            for action in role_actions(ActorKind::Reporter) {
                let r = check(&other_reporter, *action, status, &clue(None)).unwrap_err();
                assert_eq!(
                    (r.reason, r.class()),
                    (R::NotOwnClue, RefusalClass::Forbidden)
                );
            }
        }
        // A street token without a scope, or a clue outside the district, matches no street.
        let unscoped = actor(ActorKind::Street, "tok_s3", None);
        assert_eq!(
            check(&unscoped, A::Accept, S::Reported, &clue(None))
                .unwrap_err()
                .reason,
            R::OtherStreet
        );
        let outside = ClueScope {
            street_code: None,
            department: None,
            reporter_id: REPORTER,
        };
        let own = actor(ActorKind::Street, "tok_s4", Some(STREET));
        assert_eq!(
            check(&own, A::Accept, S::Reported, &outside)
                .unwrap_err()
                .reason,
            R::OtherStreet
        );
    }

    #[test]
    fn a_scope_is_a_street_or_a_department_by_its_shape() {
        let street = ActorScope::parse(STREET).unwrap();
        assert_eq!(street.street(), Some(own_street()));
        assert_eq!(street.department(), None);
        let department = ActorScope::parse(DEPT).unwrap();
        assert_eq!(department.department(), Some(dispatched_to()));
        assert_eq!(department.street(), None);
        for bad in [
            "",
            "31019900",
            "310199200",
            "Water",
            "water-affairs",
            "3101x9003",
        ] {
            let err = ActorScope::parse(bad).unwrap_err();
            assert!(
                err.to_string().contains("neither a 9-digit street code"),
                "{bad}: {err}"
            );
        }
        let json = serde_json::to_string(&[street, department]).unwrap();
        assert_eq!(json, r#"["310199003","water_affairs"]"#);
        let back: Vec<ActorScope> = serde_json::from_str(&json).unwrap();
        assert_eq!(back[1].as_str(), DEPT);
        assert!(serde_json::from_str::<ActorScope>(r#""310199""#).is_err());
    }

    #[test]
    fn the_district_acts_anywhere_as_a_street() {
        let district = actor(ActorKind::District, "tok_x", None);
        let town = StreetCode::parse("310199101").unwrap();
        let elsewhere = ClueScope {
            street_code: Some(&town),
            department: None,
            reporter_id: "tok_other",
        };
        assert_eq!(
            check(&district, A::Accept, S::Reported, &elsewhere),
            Ok(S::Accepted)
        );
        assert_eq!(
            check(&district, A::Supervise, S::InProgress, &elsewhere),
            Ok(S::InProgress)
        );
        assert_eq!(
            check(&district, A::Start, S::Dispatched, &elsewhere)
                .unwrap_err()
                .reason,
            R::RoleNotAllowed
        );
    }

    #[test]
    fn reasons_have_stable_codes_and_classes() {
        assert_eq!(R::OtherStreet.as_str(), "other_street");
        assert_eq!(
            serde_json::to_string(&R::NoPostponementPending).unwrap(),
            "\"no_postponement_pending\""
        );
        assert_eq!(RefusalClass::Forbidden.http_status(), 403);
        assert_eq!(R::TerminalState.class().http_status(), 409);
        assert_eq!(R::UnknownClue.class().http_status(), 404);
    }
}
