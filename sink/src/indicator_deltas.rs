//! The governance indicators' delta projection: with every fact, what it changes in its clue's
//! contribution to the indicators (docs/ARCHITECTURE.md §6), as signed counts with the instant
//! from which each change holds. Summing the deltas whose instant is at or before `as_of` gives
//! the indicators as of `as_of` without grouping facts by clue.
//!
//! A clue's contribution at an instant `t` is a function of its state (the sink's fold of its
//! facts read so far) and of `t` itself: a deadline passes without a fact, making a case due at
//! its deadline and overdue just after it. So a state `S` held from `t0` is written as a row at
//! `t0` (its counts evaluated at `t0`) plus, for an open case whose deadline is still ahead, a
//! row at the deadline (due +1) and one a millisecond later (overdue +1). A fact at `t` writes
//! the state before it with sign −1 and the state after it with +1, both from `t`; rows with
//! the same instant, cohort day and department are summed and zero rows dropped. Summed over
//! the facts at or before `as_of`, the rows telescope to the contribution of the clue's state
//! after its last fact at or before `as_of`, evaluated at `as_of` — what the definition reads
//! from the facts — provided the facts of one clue are folded in the order of their times
//! (the processor stamps a clue's facts in order; see the README of dashboard-api for what is
//! served when they are not).
//!
//! The working time from acceptance to closure is carried only by the `verified` fact, not by
//! the clue's state: it is written once, with the closure, on the group and cohort day the case
//! has then. A closed case is terminal (only a rating follows), so it never changes group or
//! cohort again.
//!
//! Exact because the sink writes every fact into `clue_events` exactly once; the rows travel on
//! the fact's own row (`indicator_*` columns) and materialized views spread them into the
//! delta tables, so a fact and its deltas are stored by the same insert.

use gridclue_core::wire::{EventEnvelope, Fact};
use gridclue_core::{DepartmentCode, Status};

use crate::rows::ClueRow;

/// The counts in a delta row, in the order of [`COUNTER_NAMES`].
pub type Counters = [i64; COUNTERS];
pub const COUNTERS: usize = 15;
/// The names of the counters (the columns of the delta tables, and of the indicators' counts).
pub const COUNTER_NAMES: [&str; COUNTERS] = [
    "accepted",
    "due",
    "closed",
    "closed_on_time",
    "verified",
    "reworked",
    "postponed",
    "supervised",
    "overdue_open",
    "timed_closed",
    "working_ms",
    "rated",
    "rating_sum",
    "reports",
    "duplicates",
];
const ACCEPTED: usize = 0;
const DUE: usize = 1;
const CLOSED: usize = 2;
const CLOSED_ON_TIME: usize = 3;
const VERIFIED: usize = 4;
const REWORKED: usize = 5;
const POSTPONED: usize = 6;
const SUPERVISED: usize = 7;
const OVERDUE_OPEN: usize = 8;
const TIMED_CLOSED: usize = 9;
const WORKING_MS: usize = 10;
const RATED: usize = 11;
const RATING_SUM: usize = 12;
const REPORTS: usize = 13;
const DUPLICATES: usize = 14;

const DAY_MS: u64 = 86_400_000;
const CHINA_OFFSET_MS: u64 = 8 * 3_600_000;

/// The China date of an instant, as days since 1970-01-01 (the cohorts' day key).
pub fn china_day(ms: u64) -> u32 {
    ((ms + CHINA_OFFSET_MS) / DAY_MS) as u32
}

/// One delta row: from `effective_ms` on, the group (the fact row's street, community and
/// category, and `department`) of the cohort of `cohort_day` changes by `counts`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delta {
    pub effective_ms: u64,
    pub cohort_day: u32,
    pub department: DepartmentCode,
    pub counts: Counters,
}

/// What of a clue's state the indicators read.
#[derive(Clone, Debug, PartialEq, Eq)]
struct View {
    department: DepartmentCode,
    /// A report placed inside the district: its China day and whether it is a duplicate.
    report: Option<(u32, bool)>,
    case: Option<Case>,
}

/// A case: accepted, inside the district, not rejected, merged or withdrawn.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Case {
    day: u32,
    /// 0: no time limit (due once closed, never late).
    deadline_ms: u64,
    closed_at_ms: Option<u64>,
    verified: bool,
    reworked: bool,
    postponed: bool,
    supervised: bool,
    rating: u8,
}

fn view(row: &ClueRow) -> Option<View> {
    if row.inside != 1 || row.placement != "inside" {
        return None;
    }
    let left = [Status::Rejected, Status::Duplicate, Status::Withdrawn]
        .iter()
        .any(|s| row.status == s.as_str());
    let case = (row.accepted_at_ms > 0 && !left).then(|| Case {
        day: china_day(row.accepted_at_ms),
        deadline_ms: row.deadline_ms,
        closed_at_ms: (row.closed_at_ms > 0).then_some(row.closed_at_ms),
        verified: row.verify_count > 0,
        reworked: row.rework_count > 0,
        postponed: row.postpone_count > 0,
        supervised: row.supervise_count > 0,
        rating: row.rating,
    });
    Some(View {
        department: row.department.clone()?,
        report: Some((china_day(row.reported_at_ms), row.duplicate_of.is_some())),
        case,
    })
}

/// The rows of `view` held from `t` on, times `sign` (see the module docs); its case's rows
/// from `case_from` (≥ `t`) on.
fn emit(view: &View, t: u64, case_from: u64, sign: i64, out: &mut Vec<Delta>) {
    let mut push = |at: u64, day: u32, counts: Counters| {
        out.push(Delta {
            effective_ms: at,
            cohort_day: day,
            department: view.department.clone(),
            counts: counts.map(|c| c * sign),
        })
    };
    if let Some((day, duplicate)) = view.report {
        let mut c = [0; COUNTERS];
        c[REPORTS] = 1;
        c[DUPLICATES] = i64::from(duplicate);
        push(t, day, c);
    }
    if let Some(case) = &view.case {
        let t = case_from;
        let d = case.deadline_ms;
        let mut c = [0; COUNTERS];
        c[ACCEPTED] = 1;
        c[VERIFIED] = i64::from(case.verified);
        c[REWORKED] = i64::from(case.reworked);
        c[POSTPONED] = i64::from(case.postponed);
        c[SUPERVISED] = i64::from(case.supervised);
        c[RATED] = i64::from(case.rating > 0);
        c[RATING_SUM] = i64::from(case.rating);
        match case.closed_at_ms {
            Some(closed_at) => {
                c[DUE] = 1;
                c[CLOSED] = 1;
                c[CLOSED_ON_TIME] = i64::from(d == 0 || closed_at <= d);
                push(t, case.day, c);
            }
            None => {
                // due: deadline ≤ as_of; overdue: deadline < as_of, i.e. deadline + 1 ≤ as_of.
                c[DUE] = i64::from(d > 0 && d <= t);
                c[OVERDUE_OPEN] = i64::from(d > 0 && d < t);
                push(t, case.day, c);
                if d > 0 && d > t {
                    let mut due = [0; COUNTERS];
                    due[DUE] = 1;
                    push(d, case.day, due);
                }
                if d > 0 && d >= t {
                    let mut overdue = [0; COUNTERS];
                    overdue[OVERDUE_OPEN] = 1;
                    push(d + 1, case.day, overdue);
                }
            }
        }
    }
}

/// The delta rows of `env`, folded into `before` (`None`: the clue's first fact) to give
/// `after`: summed by instant, cohort day and department, zero rows dropped, in a stable order.
pub fn deltas(env: &EventEnvelope, before: Option<&ClueRow>, after: &ClueRow) -> Vec<Delta> {
    let t = env.occurred_at_ms;
    // A report stored after its clue's later facts (they were folded with no place, so they
    // wrote nothing): the report counts from its own time, the case the later facts made from
    // the latest of them — exact as of every instant from then on, and when one fact came before
    // the report (its acceptance), at every instant.
    let case_from = match (&env.fact, before) {
        (Fact::Reported(_), Some(b)) if b.placement == "unknown" => t.max(b.updated_at_ms),
        _ => t,
    };
    let before = before.and_then(view);
    let after_view = view(after);
    if before == after_view && !matches!(env.fact, Fact::Verified { .. }) {
        return Vec::new();
    }
    let mut rows = Vec::new();
    if let Some(v) = &before {
        emit(v, t, t, -1, &mut rows);
    }
    if let Some(v) = &after_view {
        emit(v, t, case_from, 1, &mut rows);
        let newly_closed = before
            .as_ref()
            .and_then(|b| b.case.as_ref())
            .is_none_or(|c| c.closed_at_ms.is_none());
        if let (Fact::Verified { working_ms }, Some(case), true) =
            (&env.fact, &v.case, newly_closed)
        {
            if case.closed_at_ms.is_some() {
                let mut c = [0; COUNTERS];
                c[TIMED_CLOSED] = i64::from(working_ms.is_some());
                c[WORKING_MS] = working_ms.unwrap_or(0) as i64;
                rows.push(Delta {
                    effective_ms: t,
                    cohort_day: case.day,
                    department: v.department.clone(),
                    counts: c,
                });
            }
        }
    }
    rows.sort_by(|a, b| {
        (a.effective_ms, a.cohort_day, &a.department).cmp(&(
            b.effective_ms,
            b.cohort_day,
            &b.department,
        ))
    });
    let mut merged: Vec<Delta> = Vec::with_capacity(rows.len());
    for r in rows {
        match merged.last_mut() {
            Some(m)
                if (m.effective_ms, m.cohort_day, &m.department)
                    == (r.effective_ms, r.cohort_day, &r.department) =>
            {
                for (x, y) in m.counts.iter_mut().zip(r.counts) {
                    *x += y;
                }
            }
            _ => merged.push(r),
        }
    }
    merged.retain(|d| d.counts.iter().any(|&c| c != 0));
    merged
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use gridclue_core::rng::Rng;
    use gridclue_core::status::next_status;
    use gridclue_core::wire::Placement;
    use gridclue_core::{Action, ClueId, CommandId, GridCode};

    use super::*;
    use crate::rows::apply;
    use crate::rows::tests::report;

    const HOUR: u64 = 3_600_000;

    /// A random history following the status machine: times never decrease (equal times too),
    /// deadlines before and after the facts, departments that change, cases that leave the loop.
    pub(crate) fn history(rng: &mut Rng) -> Vec<EventEnvelope> {
        let clue = ClueId::new_random();
        let placement = if rng.chance(0.1) {
            Placement::Outside {
                nearest_grid_code: None,
                distance_m: 40.0,
            }
        } else {
            Placement::Inside {
                grid_code: GridCode::parse("310199003002017").unwrap(),
                on_boundary: false,
            }
        };
        let mut r = report(clue, placement);
        r.occurred_at_ms = 1_790_000_000_000 + rng.below(48) as u64 * HOUR;
        if let Fact::Reported(rep) = &mut r.fact {
            rep.deadline_ms = rng.chance(0.2).then(|| r.occurred_at_ms + 30 * HOUR);
            if rng.chance(0.1) {
                rep.duplicate_of = Some(ClueId::new_random());
            }
        }
        let mut facts = vec![r];
        let mut status = Some(Status::Reported);
        for _ in 0..rng.below(14) {
            let last = facts.last().unwrap();
            let at = last.occurred_at_ms + [0, 1, HOUR, 20 * HOUR][rng.below(4)];
            let action = [
                Action::Accept,
                Action::Reject,
                Action::Merge,
                Action::Withdraw,
                Action::Dispatch,
                Action::Start,
                Action::Handle,
                Action::Return,
                Action::VerifyOk,
                Action::VerifyFail,
                Action::ApprovePostpone,
                Action::RequestPostpone,
                Action::Supervise,
                Action::Rate,
            ][rng.below(14)];
            let Ok(next) = next_status(status, action) else {
                continue;
            };
            let deadline = at + [0, 1, 5 * HOUR, 40 * HOUR][rng.below(4)];
            let fact = match action {
                Action::Accept => Fact::Accepted {
                    deadline_ms: rng.chance(0.8).then_some(deadline),
                    yellow_at_ms: None,
                },
                Action::Reject => Fact::Rejected { reason: "r".into() },
                Action::Merge => Fact::Merged {
                    duplicate_of: ClueId::new_random(),
                },
                Action::Withdraw => Fact::Withdrawn { reason: "w".into() },
                Action::Dispatch => Fact::Dispatched {
                    department: ["dept_a", "dept_b"][rng.below(2)].parse().unwrap(),
                },
                Action::Start => Fact::Started,
                Action::Handle => Fact::Handled {
                    note: String::new(),
                    photos: vec![],
                },
                Action::Return => Fact::Returned { reason: "x".into() },
                Action::VerifyOk => Fact::Verified {
                    working_ms: rng.chance(0.7).then(|| rng.below(100) as u64 * HOUR),
                },
                Action::VerifyFail => Fact::VerifyFailed { reason: "f".into() },
                Action::ApprovePostpone => Fact::Postponed {
                    reason: "p".into(),
                    deadline_ms: deadline,
                    yellow_at_ms: None,
                    working_hours: None,
                },
                Action::RequestPostpone => Fact::PostponeRequested {
                    reason: "p".into(),
                    working_hours: 8,
                },
                Action::Supervise => Fact::Supervised { note: "s".into() },
                Action::Rate => {
                    if facts.iter().any(|f| matches!(f.fact, Fact::Rated { .. })) {
                        continue;
                    }
                    Fact::Rated {
                        rating: 1 + rng.below(5) as u8,
                        note: String::new(),
                    }
                }
                _ => continue,
            };
            status = Some(next);
            facts.push(EventEnvelope {
                seq: last.seq + 1,
                command_id: CommandId::new_random(),
                occurred_at_ms: at,
                status: next,
                fact,
                ..last.clone()
            });
        }
        facts
    }

    type ByCell = BTreeMap<(u32, DepartmentCode), Counters>;

    fn add(map: &mut ByCell, day: u32, department: &DepartmentCode, counts: Counters) {
        let cell = map
            .entry((day, department.clone()))
            .or_insert([0; COUNTERS]);
        for (x, y) in cell.iter_mut().zip(counts) {
            *x += y;
        }
    }

    fn non_zero(mut map: ByCell) -> ByCell {
        map.retain(|_, c| c.iter().any(|&x| x != 0));
        map
    }

    /// The definition read directly: the clue's facts at or before `t`, folded, evaluated at `t`.
    fn as_of(facts: &[EventEnvelope], t: u64) -> ByCell {
        let mut row = None;
        let mut working = None;
        for f in facts.iter().filter(|f| f.occurred_at_ms <= t) {
            row = Some(apply(row, f, 0));
            if let Fact::Verified { working_ms } = &f.fact {
                working = Some(*working_ms);
            }
        }
        let mut out = ByCell::new();
        let Some(row) = row.filter(|r| r.placement == "inside") else {
            return out;
        };
        let department = row.department.clone().unwrap();
        let mut report = [0; COUNTERS];
        report[REPORTS] = 1;
        report[DUPLICATES] = i64::from(row.duplicate_of.is_some());
        add(&mut out, china_day(row.reported_at_ms), &department, report);
        let left = ["rejected", "duplicate", "withdrawn"].contains(&row.status.as_str());
        if row.accepted_at_ms > 0 && !left {
            let (closed, d) = (row.closed_at_ms > 0, row.deadline_ms);
            let mut c = [0; COUNTERS];
            c[ACCEPTED] = 1;
            c[DUE] = i64::from(closed || (d > 0 && d <= t));
            c[CLOSED] = i64::from(closed);
            c[CLOSED_ON_TIME] = i64::from(closed && (d == 0 || row.closed_at_ms <= d));
            c[VERIFIED] = i64::from(row.verify_count > 0);
            c[REWORKED] = i64::from(row.rework_count > 0);
            c[POSTPONED] = i64::from(row.postpone_count > 0);
            c[SUPERVISED] = i64::from(row.supervise_count > 0);
            c[OVERDUE_OPEN] = i64::from(!closed && d > 0 && d < t);
            let timed = working.flatten().filter(|_| closed);
            c[TIMED_CLOSED] = i64::from(timed.is_some());
            c[WORKING_MS] = timed.unwrap_or(0) as i64;
            c[RATED] = i64::from(row.rating > 0);
            c[RATING_SUM] = i64::from(row.rating);
            add(&mut out, china_day(row.accepted_at_ms), &department, c);
        }
        non_zero(out)
    }

    #[test]
    fn deltas_up_to_any_instant_sum_to_the_state_as_of_it() {
        let mut rng = Rng::new(20_261_203);
        let mut checked = 0;
        for _ in 0..3_000 {
            let facts = history(&mut rng);
            let mut written: Vec<Delta> = Vec::new();
            let mut before: Option<ClueRow> = None;
            for f in &facts {
                let after = apply(before.clone(), f, 0);
                written.extend(deltas(f, before.as_ref(), &after));
                before = Some(after);
            }
            // Every instant where something changes, and a millisecond either side.
            let mut instants: Vec<u64> = facts.iter().map(|f| f.occurred_at_ms).collect();
            instants.extend(written.iter().map(|d| d.effective_ms));
            for t in instants.clone() {
                instants.extend([t.saturating_sub(1), t + 1]);
            }
            for t in instants {
                let mut summed = ByCell::new();
                for d in written.iter().filter(|d| d.effective_ms <= t) {
                    add(&mut summed, d.cohort_day, &d.department, d.counts);
                }
                assert_eq!(non_zero(summed), as_of(&facts, t), "at {t}: {facts:#?}");
                checked += 1;
            }
        }
        assert!(checked > 30_000, "{checked} instants checked");
    }

    #[test]
    fn a_fact_that_changes_nothing_writes_nothing() {
        let r = report(
            ClueId::new_random(),
            Placement::Inside {
                grid_code: GridCode::parse("310199003002017").unwrap(),
                on_boundary: false,
            },
        );
        let s0 = apply(None, &r, 0);
        let first = deltas(&r, None, &s0);
        assert_eq!(first.len(), 1, "{first:?}");
        assert_eq!(
            (first[0].counts[REPORTS], first[0].effective_ms),
            (1, 1_000)
        );
        let started = EventEnvelope {
            seq: 1,
            fact: Fact::PostponeRequested {
                reason: String::new(),
                working_hours: 4,
            },
            ..r.clone()
        };
        let s1 = apply(Some(s0.clone()), &started, 0);
        assert!(deltas(&started, Some(&s0), &s1).is_empty());
    }

    #[test]
    fn an_accepted_case_becomes_due_at_its_deadline_and_overdue_after_it() {
        let r = report(
            ClueId::new_random(),
            Placement::Inside {
                grid_code: GridCode::parse("310199003002017").unwrap(),
                on_boundary: false,
            },
        );
        let s0 = apply(None, &r, 0);
        let accept = EventEnvelope {
            seq: 1,
            occurred_at_ms: 2_000,
            status: Status::Accepted,
            fact: Fact::Accepted {
                deadline_ms: Some(50_000),
                yellow_at_ms: None,
            },
            ..r.clone()
        };
        let s1 = apply(Some(s0.clone()), &accept, 0);
        let rows: Vec<(u64, i64, i64, i64)> = deltas(&accept, Some(&s0), &s1)
            .iter()
            .map(|d| {
                (
                    d.effective_ms,
                    d.counts[ACCEPTED],
                    d.counts[DUE],
                    d.counts[OVERDUE_OPEN],
                )
            })
            .collect();
        assert_eq!(
            rows,
            vec![(2_000, 1, 0, 0), (50_000, 0, 1, 0), (50_001, 0, 0, 1)]
        );
    }

    #[test]
    fn a_report_stored_after_the_acceptance_counts_the_case_from_the_acceptance() {
        let r = report(
            ClueId::new_random(),
            Placement::Inside {
                grid_code: GridCode::parse("310199003002017").unwrap(),
                on_boundary: false,
            },
        );
        let accept = EventEnvelope {
            seq: 1,
            occurred_at_ms: 2_000,
            status: Status::Accepted,
            fact: Fact::Accepted {
                deadline_ms: Some(50_000),
                yellow_at_ms: None,
            },
            ..r.clone()
        };
        // Stored (and folded) in this order: the acceptance first, with no place yet.
        let s1 = apply(None, &accept, 0);
        assert!(deltas(&accept, None, &s1).is_empty());
        let s2 = apply(Some(s1.clone()), &r, 0);
        let written = deltas(&r, Some(&s1), &s2);
        let rows: Vec<(u64, i64, i64, i64, i64)> = written
            .iter()
            .map(|d| {
                (
                    d.effective_ms,
                    d.counts[REPORTS],
                    d.counts[ACCEPTED],
                    d.counts[DUE],
                    d.counts[OVERDUE_OPEN],
                )
            })
            .collect();
        assert_eq!(
            rows,
            vec![
                (1_000, 1, 0, 0, 0),
                (2_000, 0, 1, 0, 0),
                (50_000, 0, 0, 1, 0),
                (50_001, 0, 0, 0, 1)
            ]
        );
        // What the definition reads from the facts in seq order, at every instant around them.
        let facts = [r, accept];
        for t in [
            0, 999, 1_000, 1_999, 2_000, 2_001, 49_999, 50_000, 50_001, 90_000,
        ] {
            let mut summed = ByCell::new();
            for d in written.iter().filter(|d| d.effective_ms <= t) {
                add(&mut summed, d.cohort_day, &d.department, d.counts);
            }
            assert_eq!(non_zero(summed), as_of(&facts, t), "at {t}");
        }
    }
}
