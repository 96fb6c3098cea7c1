//! The running status counts (migration 0013): with every fact, the change it makes to its
//! clue's breakdown state — the state before it with sign −1, the state after it with +1 — so
//! that summing the rows of the clues reported on some days gives their current status counts
//! without reading any clue's versions.
//!
//! The state is what the dashboard's breakdown reads of a clue's latest row: its status, the
//! department it is at now, whether it is a case and, while it is open, its deadline. Only clues
//! placed inside the district have one. The report's day, place, category and reporter group
//! are not part of it: they never change once the report is known, and the fact's own
//! `clue_events` row carries them. A fact that changes none of the state writes no rows; the
//! rows of a clue's facts telescope to +1 for the state after its last fact.

use gridclue_core::{DepartmentCode, Status};

use crate::rows::{department_now, ClueRow};

/// One state row: `sign` × the clue in this state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateRow {
    pub sign: i8,
    pub status: String,
    pub department: DepartmentCode,
    pub is_case: u8,
    /// The deadline of an open clue (0: none, or the clue is closed or out of the loop).
    pub deadline_ms: u64,
}

/// The breakdown state of `row` (`None`: not a clue inside the district, or its report is not
/// known yet — a placed report always names its department).
fn state(row: &ClueRow) -> Option<StateRow> {
    if row.placement != "inside" {
        return None;
    }
    let open = row.status.parse::<Status>().is_ok_and(|s| !s.is_terminal());
    let department = department_now(row)?;
    Some(StateRow {
        sign: 1,
        status: row.status.clone(),
        department: department.clone(),
        is_case: row.is_case,
        deadline_ms: if open { row.deadline_ms } else { 0 },
    })
}

/// The state rows of a fact folded into `before` (`None`: the clue's first fact) to give
/// `after`: none when the state did not change, else −1 for the state before (if any) and +1
/// for the state after (if any).
pub fn rows(before: Option<&ClueRow>, after: &ClueRow) -> Vec<StateRow> {
    let before = before.and_then(state);
    let after = state(after);
    if before == after {
        return Vec::new();
    }
    let gone = before.map(|s| StateRow { sign: -1, ..s });
    gone.into_iter().chain(after).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clue(status: &str) -> ClueRow {
        ClueRow {
            placement: "inside".into(),
            inside: 1,
            status: status.into(),
            department: Some("water_affairs".parse().unwrap()),
            is_case: 1,
            deadline_ms: 5_000,
            ..ClueRow::default()
        }
    }

    #[test]
    fn a_transition_takes_the_old_state_out_and_puts_the_new_one_in() {
        let before = clue("handled");
        let after = clue("closed");
        let r = rows(Some(&before), &after);
        assert_eq!(r.len(), 2);
        assert_eq!(
            (r[0].sign, r[0].status.as_str(), r[0].deadline_ms),
            (-1, "handled", 5_000)
        );
        // A closed clue is never overdue: its deadline is not kept.
        assert_eq!(
            (r[1].sign, r[1].status.as_str(), r[1].deadline_ms),
            (1, "closed", 0)
        );
    }

    #[test]
    fn the_department_now_is_the_assigned_one_else_the_routed_one() {
        let before = clue("accepted");
        let mut after = clue("dispatched");
        after.assigned_department = Some("urban_management".parse().unwrap());
        let r = rows(Some(&before), &after);
        assert_eq!(r[0].department, "water_affairs");
        assert_eq!(r[1].department, "urban_management");
    }

    #[test]
    fn an_unchanged_state_writes_nothing_and_a_first_report_writes_one_row() {
        let c = clue("dispatched");
        assert!(rows(Some(&c), &c.clone()).is_empty());
        let r = rows(None, &c);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].sign, 1);
    }

    #[test]
    fn clues_outside_the_district_or_without_their_report_have_no_state() {
        let mut outside = clue("reported");
        outside.placement = "outside".into();
        assert!(rows(None, &outside).is_empty());
        let mut unknown = clue("accepted");
        unknown.placement = "unknown".into();
        // The report arrives after a later fact: only the state after it counts.
        let r = rows(Some(&unknown), &clue("accepted"));
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].sign, 1);
    }
}
