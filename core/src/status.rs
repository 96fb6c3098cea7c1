//! The closed-loop status machine (docs/ARCHITECTURE.md §2) as a pure function.
//!
//! ```text
//! reported ─accept→ accepted ─dispatch→ dispatched ─start→ in_progress ─handle→ handled
//! reported ─reject→ rejected        accepted ─reject→ rejected
//! reported ─merge→ duplicate
//! dispatched | in_progress ─return (退回)→ accepted      (the dispatcher re-dispatches)
//! handled ─verify_ok→ closed        handled ─verify_fail (返工)→ dispatched
//! any open state ─postpone→ the same state (a new deadline)
//! ```
//! `closed`, `rejected` and `duplicate` are terminal.

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
}

impl Status {
    pub const ALL: [Status; 8] = [
        Status::Reported,
        Status::Accepted,
        Status::Dispatched,
        Status::InProgress,
        Status::Handled,
        Status::Closed,
        Status::Rejected,
        Status::Duplicate,
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
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Closed | Status::Rejected | Status::Duplicate)
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

/// What a command asks the status machine to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Report,
    Accept,
    Reject,
    Merge,
    Dispatch,
    Start,
    Handle,
    Return,
    VerifyOk,
    VerifyFail,
    Postpone,
}

impl Action {
    pub const ALL: [Action; 11] = [
        Action::Report,
        Action::Accept,
        Action::Reject,
        Action::Merge,
        Action::Dispatch,
        Action::Start,
        Action::Handle,
        Action::Return,
        Action::VerifyOk,
        Action::VerifyFail,
        Action::Postpone,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Report => "report",
            Action::Accept => "accept",
            Action::Reject => "reject",
            Action::Merge => "merge",
            Action::Dispatch => "dispatch",
            Action::Start => "start",
            Action::Handle => "handle",
            Action::Return => "return",
            Action::VerifyOk => "verify_ok",
            Action::VerifyFail => "verify_fail",
            Action::Postpone => "postpone",
        }
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
    if from.is_terminal() {
        return Err(TransitionError::Terminal { from, action });
    }
    let to = match (from, action) {
        (_, A::Postpone) => from,
        (S::Reported, A::Accept) => S::Accepted,
        (S::Reported | S::Accepted, A::Reject) => S::Rejected,
        (S::Reported, A::Merge) => S::Duplicate,
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
        (S::Reported, A::Postpone, S::Reported),
        (S::Accepted, A::Dispatch, S::Dispatched),
        (S::Accepted, A::Reject, S::Rejected),
        (S::Accepted, A::Postpone, S::Accepted),
        (S::Dispatched, A::Start, S::InProgress),
        (S::Dispatched, A::Return, S::Accepted),
        (S::Dispatched, A::Postpone, S::Dispatched),
        (S::InProgress, A::Handle, S::Handled),
        (S::InProgress, A::Return, S::Accepted),
        (S::InProgress, A::Postpone, S::InProgress),
        (S::Handled, A::VerifyOk, S::Closed),
        (S::Handled, A::VerifyFail, S::Dispatched),
        (S::Handled, A::Postpone, S::Handled),
    ];

    #[test]
    fn every_state_action_pair_matches_the_table() {
        let mut legal_seen = 0;
        for from in S::ALL {
            for action in A::ALL {
                let got = next_status(Some(from), action);
                match LEGAL.iter().find(|(f, a, _)| *f == from && *a == action) {
                    Some((_, _, to)) => {
                        assert_eq!(got, Ok(*to), "{from} --{action}-->");
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
        assert_eq!(legal_seen, LEGAL.len());
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
