//! The pure processor: placement, routing and deadlines of reports, the dedupe rule (including
//! its determinism when the partition's state is ahead of the report), postponements in working
//! time, and refusals with reasons.

mod common;

use common::*;
use gridclue_core::wire::{Command, DlqReason, Fact, Placement};
use gridclue_core::{ClueId, Status};
use gridclue_enrich::processor::{ClueState, DecideCtx, Decision, OpenClues, Output, Processor};
use uuid::Uuid;

/// Epoch ms of a local (UTC+8) time.
fn local(s: &str) -> u64 {
    let t = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap();
    (t.and_utc().timestamp_millis() - 8 * 3_600_000) as u64
}

fn clue(n: u128) -> ClueId {
    ClueId(Uuid::from_u128(n))
}

struct Partition<'a> {
    p: &'a Processor,
    states: std::collections::HashMap<ClueId, ClueState>,
    open: OpenClues,
    offset: i64,
}

impl<'a> Partition<'a> {
    fn new(p: &'a Processor) -> Self {
        Self {
            p,
            states: Default::default(),
            open: OpenClues::new(p.dedupe.radius_m),
            offset: 0,
        }
    }

    /// Decides the next command of the partition and applies it.
    fn apply(&mut self, id: ClueId, command: Command, at: u64) -> Decision {
        let cmd = envelope(id, command, at);
        let d = self.p.decide(
            self.states.get(&id),
            &cmd,
            &DecideCtx {
                now_ms: at,
                offset: self.offset,
                open: &self.open,
            },
        );
        self.offset += 1;
        if let Some(next) = &d.next {
            self.open.observe(id, next);
            self.states.insert(id, next.clone());
        }
        d
    }
}

fn fact(d: &Decision) -> (&Fact, Status) {
    match &d.output {
        Output::Event(e) => (&e.fact, e.status),
        other => panic!("expected a fact, got {other:?}"),
    }
}

fn reported(d: &Decision) -> &gridclue_core::wire::Reported {
    match fact(d).0 {
        Fact::Reported(r) => r,
        other => panic!("expected a report, got {other:?}"),
    }
}

/// ~`m` metres north of a point.
fn north(lat: f64, m: f64) -> f64 {
    lat + m / 111_195.0
}

#[test]
fn a_report_is_placed_routed_and_due_in_working_time() {
    let p = processor();
    let mut part = Partition::new(&p);
    let (lat, lon) = inside_point(&p, &mut Rng(5));
    // Friday 17:00, a manhole cover (water affairs, urgent, 2 working hours) → Monday 10:30.
    let d = part.apply(
        clue(1),
        report("manhole_cover", lat, lon),
        local("2025-03-07 17:00"),
    );
    let r = reported(&d);
    assert_eq!(fact(&d).1, Status::Reported);
    assert_eq!(r.department, "water_affairs");
    assert_eq!(r.urgency, gridclue_core::category::Urgency::Urgent);
    assert_eq!(r.deadline_ms, Some(local("2025-03-10 10:30")));
    assert_eq!(r.map_version, p.index.map_version());
    assert_eq!(r.duplicate_of, None);
    let Placement::Inside {
        grid_code,
        on_boundary,
    } = &r.placement
    else {
        panic!("placed {:?}", r.placement);
    };
    assert!(!on_boundary);
    // The owner street is the grid's street: the grid code's first 9 digits, which the map
    // files under that street.
    let path = std::path::Path::new(&data_dir()).join("district/grids.geojson");
    let district = gridclue_district::load_geojson(&path).unwrap();
    let g = district
        .grid(&gridclue_district::GridCode::parse(grid_code.as_str()).unwrap())
        .unwrap();
    assert_eq!(g.street_code.as_str(), grid_code.street_code());
    assert_eq!(d.next.as_ref().unwrap().deadline_ms, r.deadline_ms);

    // A working-days category: street light, 2 working days → Tuesday 17:30.
    let d = part.apply(
        clue(2),
        report("street_light", lat, lon),
        local("2025-03-07 17:00"),
    );
    assert_eq!(reported(&d).deadline_ms, Some(local("2025-03-11 17:30")));

    // A postponement extends the current deadline in working time: 10:30 + 4 h → 16:00.
    let d = part.apply(
        clue(1),
        Command::Postpone {
            reason: "parts on order".into(),
            working_hours: 4,
        },
        local("2025-03-10 09:00"),
    );
    match fact(&d) {
        (Fact::Postponed { deadline_ms, .. }, Status::Reported) => {
            assert_eq!(*deadline_ms, local("2025-03-10 16:00"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        part.states[&clue(1)].deadline_ms,
        Some(local("2025-03-10 16:00"))
    );
    // Later facts keep the deadline.
    part.apply(clue(1), Command::Accept, local("2025-03-10 09:05"));
    assert_eq!(
        part.states[&clue(1)].deadline_ms,
        Some(local("2025-03-10 16:00"))
    );
}

#[test]
fn a_report_outside_the_district_is_flagged_with_the_nearest_grid() {
    let p = processor();
    let mut part = Partition::new(&p);
    let d = part.apply(clue(1), report("garbage_pile", 31.0, 121.2), MONDAY_9AM);
    let r = reported(&d);
    assert_eq!(fact(&d).1, Status::Rejected);
    assert_eq!(r.deadline_ms, None);
    match &r.placement {
        Placement::Outside {
            nearest_grid_code,
            distance_m,
        } => {
            assert!(nearest_grid_code.is_some());
            assert!(*distance_m > 1_000.0, "{distance_m}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn dedupe_same_category_nearby_within_the_window_of_an_open_clue() {
    let p = processor();
    let mut part = Partition::new(&p);
    let (lat, lon) = inside_point(&p, &mut Rng(9));
    let t0 = MONDAY_9AM;
    let hour = 3_600_000;
    let a = part.apply(clue(1), report("garbage_pile", lat, lon), t0);
    assert_eq!(reported(&a).duplicate_of, None);

    // 20 m away, same category, an hour later: a duplicate (still a report, no deadline).
    let b = part.apply(
        clue(2),
        report("garbage_pile", north(lat, 20.0), lon),
        t0 + hour,
    );
    assert_eq!(reported(&b).duplicate_of, Some(clue(1)));
    assert_eq!(fact(&b).1, Status::Duplicate);
    assert_eq!(reported(&b).deadline_ms, None);
    assert_eq!(b.duplicate_of, Some(clue(1)));
    // A duplicate is terminal: it takes no further commands.
    match part.apply(clue(2), Command::Accept, t0 + hour).output {
        Output::Rejected { reason, .. } => assert_eq!(reason, DlqReason::TerminalState),
        other => panic!("{other:?}"),
    }

    // Another category at the same spot, or the same category 80 m away: not duplicates.
    let c = part.apply(clue(3), report("food_safety", lat, lon), t0 + hour);
    assert_eq!(reported(&c).duplicate_of, None);
    let far = part.apply(
        clue(4),
        report("garbage_pile", north(lat, 80.0), lon),
        t0 + hour,
    );
    assert_eq!(reported(&far).duplicate_of, None);

    // A duplicate is never a target: 45 m from B but 65 m from A → not a duplicate of either…
    let e = part.apply(
        clue(5),
        report("garbage_pile", north(lat, 65.0), lon),
        t0 + hour,
    );
    // …except of the clue 80 m north (15 m away), the nearest open case.
    assert_eq!(reported(&e).duplicate_of, Some(clue(4)));

    // More than 24 h after A: not a duplicate of A.
    let late = part.apply(clue(6), report("garbage_pile", lat, lon), t0 + 25 * hour);
    assert_eq!(reported(&late).duplicate_of, None);
}

#[test]
fn a_closed_clue_is_no_longer_a_dedupe_target_and_replays_see_the_past() {
    let p = processor();
    let (lat, lon) = inside_point(&p, &mut Rng(13));
    let t0 = MONDAY_9AM;
    let mut part = Partition::new(&p);
    part.apply(clue(1), report("garbage_pile", lat, lon), t0); // offset 0
    let b_offset = part.offset;
    let b_cmd = envelope(
        clue(2),
        report("garbage_pile", north(lat, 10.0), lon),
        t0 + 60_000,
    );
    let b = part.apply(
        clue(2),
        report("garbage_pile", north(lat, 10.0), lon),
        t0 + 60_000,
    );
    assert_eq!(reported(&b).duplicate_of, Some(clue(1)));
    part.apply(
        clue(1),
        Command::Reject {
            reason: "not ours".into(),
        },
        t0 + 120_000,
    );
    let c = part.apply(
        clue(3),
        report("garbage_pile", north(lat, 5.0), lon),
        t0 + 180_000,
    );
    assert_eq!(reported(&c).duplicate_of, None, "A was closed before C");

    // Replaying B against the partition's state as it is now (A closed later, C reported
    // later): the same decision, because openness is judged at B's offset.
    let again = p.decide(
        None,
        &b_cmd,
        &DecideCtx {
            now_ms: 0,
            offset: b_offset,
            open: &part.open,
        },
    );
    assert_eq!(reported(&again).duplicate_of, Some(clue(1)));
    assert_eq!(fact(&again).1, Status::Duplicate);
}

#[test]
fn repeats_are_no_ops_and_refusals_carry_reasons() {
    let p = processor();
    let mut part = Partition::new(&p);
    let (lat, lon) = inside_point(&p, &mut Rng(3));
    let first = envelope(clue(1), report("litter_bin", lat, lon), MONDAY_9AM);
    let d = p.decide(
        None,
        &first,
        &DecideCtx {
            now_ms: 0,
            offset: 0,
            open: &part.open,
        },
    );
    let state = d.next.unwrap();
    // The same command again, and the same report under another command id: no-ops.
    let again = p.decide(
        Some(&state),
        &first,
        &DecideCtx {
            now_ms: 0,
            offset: 1,
            open: &part.open,
        },
    );
    assert_eq!(again.output, Output::Repeat);
    assert!(again.next.is_none());
    let mut retried = first.clone();
    retried.command_id = gridclue_core::CommandId::new_random();
    let d = p.decide(
        Some(&state),
        &retried,
        &DecideCtx {
            now_ms: 0,
            offset: 2,
            open: &part.open,
        },
    );
    assert_eq!(d.output, Output::Repeat);

    part.states.insert(clue(1), state);
    let refused = |d: Decision| match d.output {
        Output::Rejected { reason, detail } => {
            assert!(d.next.is_none());
            assert!(!detail.is_empty());
            reason
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(
        refused(part.apply(clue(1), Command::VerifyOk, MONDAY_9AM)),
        DlqReason::IllegalTransition
    );
    assert_eq!(
        refused(part.apply(clue(9), Command::Accept, MONDAY_9AM)),
        DlqReason::UnknownClue
    );
    let mut unknown_category = envelope(clue(7), report("litter_bin", lat, lon), MONDAY_9AM);
    if let Command::Report(r) = &mut unknown_category.command {
        r.category = gridclue_core::CategoryCode::parse("unicorn_sighting").unwrap();
    }
    let d = p.decide(
        None,
        &unknown_category,
        &DecideCtx {
            now_ms: 0,
            offset: 9,
            open: &part.open,
        },
    );
    assert_eq!(refused(d), DlqReason::UnknownCategory);
    part.apply(
        clue(1),
        Command::Reject { reason: "x".into() },
        MONDAY_9AM + 1,
    );
    assert_eq!(
        refused(part.apply(clue(1), Command::Accept, MONDAY_9AM + 2)),
        DlqReason::TerminalState
    );
    // Seqs count facts only: report 0, reject 1.
    assert_eq!(part.states[&clue(1)].seq, 1);
}
