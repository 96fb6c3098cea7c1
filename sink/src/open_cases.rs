//! The rows a fact writes into `open_cases` (migration 0014): the open clues inside the
//! district, which the dashboard's lists of open clues page through.
//!
//! A fact replaces its clue's state: the state before it leaves the table (sign −1, when it was
//! listed) and the state after it enters (sign +1, when it is listed). A listed state is one of
//! a clue placed inside the district whose status is open — the rows `dashboard_clues` holds for
//! open clues, with the same columns. Summed per (clue, version), the rows written for a clue's
//! facts leave exactly its latest state when that is listed, and nothing otherwise.

use gridclue_core::{DepartmentCode, Status};

use crate::rows::{department_now, ClueRow};

/// One row: a listed state of a clue and its sign.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenCaseRow {
    pub sign: i8,
    pub version: u32,
    pub status: String,
    pub department_now: DepartmentCode,
    pub accepted_at_ms: u64,
    pub deadline_ms: u64,
    pub yellow_at_ms: u64,
    pub updated_at_ms: u64,
}

/// Whether `row` is a state `open_cases` holds.
pub fn is_listed(row: &ClueRow) -> bool {
    row.placement == "inside" && row.status.parse::<Status>().is_ok_and(Status::is_open)
}

/// The row of `row` with `sign`, when it is listed (a placed report always names its
/// department).
fn listed(row: &ClueRow, sign: i8) -> Option<OpenCaseRow> {
    if !is_listed(row) {
        return None;
    }
    Some(OpenCaseRow {
        sign,
        version: row.version,
        status: row.status.clone(),
        department_now: department_now(row)?.clone(),
        accepted_at_ms: row.accepted_at_ms,
        deadline_ms: row.deadline_ms,
        yellow_at_ms: row.yellow_at_ms,
        updated_at_ms: row.updated_at_ms,
    })
}

/// The rows of a fact that turned `before` (`None`: the clue's first fact) into `after`.
///
/// A state is identified by its version (the seq of its last fact). When the fact leaves the
/// version as it was (a report seen after later facts only fills in the place), the state
/// before was not listed (its place was unknown) or is the same state: it is not cancelled.
pub fn rows(before: Option<&ClueRow>, after: &ClueRow) -> Vec<OpenCaseRow> {
    let mut out = Vec::with_capacity(2);
    if let Some(b) = before.filter(|b| is_listed(b)) {
        if b.version == after.version && is_listed(after) {
            return out;
        }
        out.extend(listed(b, -1));
    }
    out.extend(listed(after, 1));
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use gridclue_core::rng::Rng;
    use gridclue_core::wire::EventEnvelope;

    use super::*;
    use crate::indicator_deltas::tests::history;
    use crate::rows::apply;

    /// What the table holds for a clue once its rows are summed per version: the versions whose
    /// signs do not cancel, with their sum.
    fn summed(written: &[OpenCaseRow]) -> BTreeMap<u32, (i64, OpenCaseRow)> {
        let mut out: BTreeMap<u32, (i64, OpenCaseRow)> = BTreeMap::new();
        for r in written {
            let e = out.entry(r.version).or_insert((0, r.clone()));
            e.0 += i64::from(r.sign);
            if r.sign > 0 {
                e.1 = r.clone();
            }
        }
        out.retain(|_, (sum, _)| *sum != 0);
        out
    }

    fn fold(facts: &[EventEnvelope]) -> (Vec<OpenCaseRow>, ClueRow) {
        let mut written = Vec::new();
        let mut before: Option<ClueRow> = None;
        for f in facts {
            let after = apply(before.clone(), f, 0);
            written.extend(rows(before.as_ref(), &after));
            before = Some(after);
        }
        (written, before.expect("a history has a report"))
    }

    #[test]
    fn the_rows_of_a_history_sum_to_its_latest_state_when_it_is_open() {
        let mut rng = Rng::new(20_261_204);
        let (mut open, mut closed) = (0, 0);
        for _ in 0..3_000 {
            let facts = history(&mut rng);
            let (written, last) = fold(&facts);
            let left = summed(&written);
            if is_listed(&last) {
                open += 1;
                let (sum, row) = &left[&last.version];
                assert_eq!(left.len(), 1, "{left:?}");
                assert_eq!((*sum, row), (1, &listed(&last, 1).unwrap()));
            } else {
                closed += 1;
                assert!(left.is_empty(), "{left:?}");
            }
            // Every -1 cancels a +1 written before it with the same columns.
            for (i, r) in written.iter().enumerate().filter(|(_, r)| r.sign < 0) {
                assert!(written[..i].contains(&OpenCaseRow {
                    sign: 1,
                    ..r.clone()
                }));
            }
        }
        assert!(open > 300 && closed > 300, "open {open}, closed {closed}");
    }

    #[test]
    fn a_report_seen_after_later_facts_lists_the_clue_at_its_latest_version() {
        let mut rng = Rng::new(7);
        // The later facts arrive first (place unknown: nothing listed), then the report.
        let (written, last) = std::iter::repeat_with(|| history(&mut rng))
            .filter(|f| f.len() >= 3)
            .map(|f| {
                let mut late = f[1..].to_vec();
                late.push(f[0].clone());
                fold(&late)
            })
            .find(|(_, last)| is_listed(last))
            .expect("an open history with later facts");
        assert!(last.version > 0);
        assert_eq!(written, vec![listed(&last, 1).unwrap()]);
    }
}
