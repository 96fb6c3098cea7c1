//! The closed-loop status machine (docs/ARCHITECTURE.md §2) as a pure function.
//!
//! ```text
//! reported ─accept→ accepted ─dispatch→ dispatched ─start→ in_progress ─handle→ handled
//! reported ─reject→ rejected        accepted ─reject→ rejected
//! reported ─merge→ duplicate        reported ─withdraw (the reporter)→ withdrawn
//! dispatched | in_progress ─return (退回)→ accepted      (the dispatcher re-dispatches)
//! handled ─verify_ok→ closed        handled ─verify_fail (返工)→ dispatched
//! any open state ─request_postpone | approve_postpone | deny_postpone | supervise→ the same state
//! closed ─rate→ closed              (回访: the one action on a terminal clue)
//! ```
//! `closed`, `rejected`, `duplicate` and `withdrawn` are terminal. Who may take which action on
//! which clue is [`crate::roles`]'s question; this module only knows statuses.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Reported,
    Accepted,
    Dispatched,
    InProgress,
    Handled,
    Closed,
    Rejected,
    Duplicate,
    /// Withdrawn by its reporter before acceptance.
    Withdrawn,
}

impl Status {
    pub const ALL: [Status; 9] = [
        Status::Reported,
        Status::Accepted,
        Status::Dispatched,
        Status::InProgress,
        Status::Handled,
        Status::Closed,
        Status::Rejected,
        Status::Duplicate,
        Status::Withdrawn,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Reported => "reported",
            Status::Accepted => "accepted",
            Status::Dispatched => "dispatched",
            Status::InProgress => "in_progress",
            Status::Handled => "handled",
            Status::Closed => "closed",
            Status::Rejected => "rejected",
            Status::Duplicate => "duplicate",
            Status::Withdrawn => "withdrawn",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Status::Closed | Status::Rejected | Status::Duplicate | Status::Withdrawn
        )
    }

    /// Open311's two-valued status.
    pub fn is_open(self) -> bool {
        !self.is_terminal()
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| format!("unknown status {s:?}"))
    }
}

/// What a command asks the status machine to do: the report itself, or one of the
/// [`Action::TRANSITIONS`] a client may ask for by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Report,
    /// 受理/立案 (street).
    Accept,
    /// 不予立案 (street).
    Reject,
    /// Into another clue, as its duplicate (street).
    Merge,
    /// 派遣 to a department (street).
    Dispatch,
    /// 核查通过 → closed (street).
    VerifyOk,
    /// 核查不通过 → rework (返工) by the same department (street).
    VerifyFail,
    /// 签收 (department).
    Start,
    /// 处置完毕 (department).
    Handle,
    /// 退回: not ours, or the wrong place (department).
    Return,
    /// 申请延期 (department).
    RequestPostpone,
    /// 延期审批 (district).
    ApprovePostpone,
    DenyPostpone,
    /// 督办 (district).
    Supervise,
    /// The reporter takes back a clue not yet accepted.
    Withdraw,
    /// 回访满意度: the reporter rates a closed clue 1–5.
    Rate,
}

impl Action {
    /// Every action, the report included.
    pub const ALL: [Action; 16] = [
        Action::Report,
        Action::Accept,
        Action::Reject,
        Action::Merge,
        Action::Dispatch,
        Action::VerifyOk,
        Action::VerifyFail,
        Action::Start,
        Action::Handle,
        Action::Return,
        Action::RequestPostpone,
        Action::ApprovePostpone,
        Action::DenyPostpone,
        Action::Supervise,
        Action::Withdraw,
        Action::Rate,
    ];

    /// The actions a client may ask for (`POST /v1/clues/{id}/transitions`), by these names.
    pub const TRANSITIONS: [Action; 15] = [
        Action::Accept,
        Action::Reject,
        Action::Merge,
        Action::Dispatch,
        Action::VerifyOk,
        Action::VerifyFail,
        Action::Start,
        Action::Handle,
        Action::Return,
        Action::RequestPostpone,
        Action::ApprovePostpone,
        Action::DenyPostpone,
        Action::Supervise,
        Action::Withdraw,
        Action::Rate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Report => "report",
            Action::Accept => "accept",
            Action::Reject => "reject",
            Action::Merge => "merge",
            Action::Dispatch => "dispatch",
            Action::VerifyOk => "verify_ok",
            Action::VerifyFail => "verify_fail",
            Action::Start => "start",
            Action::Handle => "handle",
            Action::Return => "return",
            Action::RequestPostpone => "request_postpone",
            Action::ApprovePostpone => "approve_postpone",
            Action::DenyPostpone => "deny_postpone",
            Action::Supervise => "supervise",
            Action::Withdraw => "withdraw",
            Action::Rate => "rate",
        }
    }

    /// The transition a client names (`None` for unknown names and for `report`).
    pub fn transition(name: &str) -> Option<Action> {
        Self::TRANSITIONS.into_iter().find(|a| a.as_str() == name)
    }

    /// Whether the action leaves the status as it is wherever it is allowed.
    pub fn keeps_status(self) -> bool {
        matches!(
            self,
            Action::RequestPostpone
                | Action::ApprovePostpone
                | Action::DenyPostpone
                | Action::Supervise
                | Action::Rate
        )
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a command was refused. `reason_code` is stable and bounded (usable as a metric label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("no clue with this id has been reported")]
    UnknownClue,
    #[error("the clue has already been reported")]
    AlreadyReported,
    #[error("the clue is {from}, a terminal state; {action} is not possible")]
    Terminal { from: Status, action: Action },
    #[error("{action} is not allowed while the clue is {from}")]
    Illegal { from: Status, action: Action },
}

impl TransitionError {
    pub fn reason_code(&self) -> &'static str {
        match self {
            TransitionError::UnknownClue => "unknown_clue",
            TransitionError::AlreadyReported => "already_reported",
            TransitionError::Terminal { .. } => "terminal_state",
            TransitionError::Illegal { .. } => "illegal_transition",
        }
    }
}

/// The status after applying `action` to a clue in `current` (`None`: not reported yet).
pub fn next_status(current: Option<Status>, action: Action) -> Result<Status, TransitionError> {
    use Action as A;
    use Status as S;
    let Some(from) = current else {
        return match action {
            A::Report => Ok(S::Reported),
            _ => Err(TransitionError::UnknownClue),
        };
    };
    if action == A::Report {
        return Err(TransitionError::AlreadyReported);
    }
    if (from, action) == (S::Closed, A::Rate) {
        return Ok(S::Closed);
    }
    if from.is_terminal() {
        return Err(TransitionError::Terminal { from, action });
    }
    let to = match (from, action) {
        (_, A::RequestPostpone | A::ApprovePostpone | A::DenyPostpone | A::Supervise) => from,
        (S::Reported, A::Accept) => S::Accepted,
        (S::Reported | S::Accepted, A::Reject) => S::Rejected,
        (S::Reported, A::Merge) => S::Duplicate,
        (S::Reported, A::Withdraw) => S::Withdrawn,
        (S::Accepted, A::Dispatch) => S::Dispatched,
        (S::Dispatched, A::Start) => S::InProgress,
        (S::Dispatched | S::InProgress, A::Return) => S::Accepted,
        (S::InProgress, A::Handle) => S::Handled,
        (S::Handled, A::VerifyOk) => S::Closed,
        (S::Handled, A::VerifyFail) => S::Dispatched,
        _ => return Err(TransitionError::Illegal { from, action }),
    };
    Ok(to)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action as A;
    use Status as S;

    /// The legal transitions, written out independently of `next_status`'s match.
    const LEGAL: &[(Status, Action, Status)] = &[
        (S::Reported, A::Accept, S::Accepted),
        (S::Reported, A::Reject, S::Rejected),
        (S::Reported, A::Merge, S::Duplicate),
        (S::Reported, A::Withdraw, S::Withdrawn),
        (S::Accepted, A::Dispatch, S::Dispatched),
        (S::Accepted, A::Reject, S::Rejected),
        (S::Dispatched, A::Start, S::InProgress),
        (S::Dispatched, A::Return, S::Accepted),
        (S::InProgress, A::Handle, S::Handled),
        (S::InProgress, A::Return, S::Accepted),
        (S::Handled, A::VerifyOk, S::Closed),
        (S::Handled, A::VerifyFail, S::Dispatched),
        (S::Closed, A::Rate, S::Closed),
    ];

    /// Actions that keep the status, allowed in every open state.
    const KEEPING: [Action; 4] = [
        A::RequestPostpone,
        A::ApprovePostpone,
        A::DenyPostpone,
        A::Supervise,
    ];

    #[test]
    fn every_state_action_pair_matches_the_table() {
        let mut legal_seen = 0;
        for from in S::ALL {
            for action in A::ALL {
                let got = next_status(Some(from), action);
                let keeping = (from.is_open() && KEEPING.contains(&action)).then_some(from);
                let legal = LEGAL
                    .iter()
                    .find(|(f, a, _)| *f == from && *a == action)
                    .map(|(_, _, to)| *to)
                    .or(keeping);
                match legal {
                    Some(to) => {
                        assert_eq!(got, Ok(to), "{from} --{action}-->");
                        legal_seen += 1;
                    }
                    None if action == A::Report => {
                        assert_eq!(got, Err(TransitionError::AlreadyReported))
                    }
                    None if from.is_terminal() => {
                        assert_eq!(got, Err(TransitionError::Terminal { from, action }))
                    }
                    None => assert_eq!(got, Err(TransitionError::Illegal { from, action })),
                }
            }
        }
        let open = S::ALL.iter().filter(|s| s.is_open()).count();
        assert_eq!(legal_seen, LEGAL.len() + open * KEEPING.len());
    }

    #[test]
    fn only_report_creates_a_clue() {
        for action in A::ALL {
            let got = next_status(None, action);
            if action == A::Report {
                assert_eq!(got, Ok(S::Reported));
            } else {
                assert_eq!(got, Err(TransitionError::UnknownClue));
            }
        }
    }

    #[test]
    fn the_full_loop_with_one_rework_closes() {
        let path = [
            A::Report,
            A::Accept,
            A::Dispatch,
            A::Start,
            A::Handle,
            A::VerifyFail,
            A::Start,
            A::Handle,
            A::VerifyOk,
        ];
        let mut s = None;
        for a in path {
            s = Some(next_status(s, a).unwrap());
        }
        assert_eq!(s, Some(S::Closed));
    }

    #[test]
    fn reason_codes_are_stable() {
        assert_eq!(TransitionError::UnknownClue.reason_code(), "unknown_clue");
        let t = TransitionError::Terminal {
            from: S::Closed,
            action: A::Accept,
        };
        assert_eq!(t.reason_code(), "terminal_state");
        assert_eq!(
            t.to_string(),
            "the clue is closed, a terminal state; accept is not possible"
        );
    }

    #[test]
    fn transitions_are_named_exactly_and_report_is_not_one() {
        let names: Vec<&str> = A::TRANSITIONS.iter().map(|a| a.as_str()).collect();
        assert_eq!(
            names,
            [
                "accept",
                "reject",
                "merge",
                "dispatch",
                "verify_ok",
                "verify_fail",
                "start",
                "handle",
                "return",
                "request_postpone",
                "approve_postpone",
                "deny_postpone",
                "supervise",
                "withdraw",
                "rate"
            ]
        );
        for a in A::TRANSITIONS {
            assert_eq!(A::transition(a.as_str()), Some(a));
            assert_eq!(serde_json::to_string(&a).unwrap(), format!("\"{a}\""));
        }
        assert_eq!(A::transition("report"), None);
        assert_eq!(A::transition("postpone"), None);
        assert_eq!(A::transition("Accept"), None);
    }

    #[test]
    fn withdrawn_is_terminal() {
        assert!(S::Withdrawn.is_terminal());
        assert_eq!(
            next_status(Some(S::Withdrawn), A::Accept),
            Err(TransitionError::Terminal {
                from: S::Withdrawn,
                action: A::Accept
            })
        );
    }

    #[test]
    fn status_names_round_trip() {
        for s in S::ALL {
            assert_eq!(s.as_str().parse::<Status>().unwrap(), s);
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
    }
}
