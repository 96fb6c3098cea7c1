//! Clue histories written into ClickHouse the way the sink writes them: each fact folded into
//! the clue's state with the sink's own `rows::apply`, its `clue_events` row made by
//! `rows::event_row`, the rows inserted with the sink's insert functions. Tests of the read side
//! build hand-chosen histories with it (fact times, deadlines, ratings…) without a broker.

use std::sync::Arc;
use std::time::Duration;

use gridclue_core::category::Urgency;
use gridclue_core::tokens::TokenRecord;
use gridclue_core::wire::{
    Actor, Channel, EventEnvelope, Fact, Placement, Reported, SCHEMA_VERSION,
};
use gridclue_core::{
    CategoryCode, ClueId, CommandId, DepartmentCode, GeoPoint, GridCode, ReporterGroup, Status,
};
use gridclue_sink::rows::{apply, event_row, ClueRow, EventRow, Source};
use gridclue_sink::store::{insert_clues, insert_events, insert_query_id, InsertTimeouts};

/// Epoch milliseconds of a China time (UTC+8) `YYYY-MM-DD HH:MM[:SS[.mmm]]`.
pub fn china(s: &str) -> u64 {
    let formats = [
        "%Y-%m-%d %H:%M:%S%.3f",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
    ];
    let t = formats
        .iter()
        .find_map(|f| chrono::NaiveDateTime::parse_from_str(s, f).ok())
        .unwrap_or_else(|| panic!("not a time: {s}"));
    (t.and_utc().timestamp_millis() - 8 * 3_600_000) as u64
}

/// One clue's facts, in seq order.
#[derive(Clone, Debug)]
pub struct History {
    pub clue: ClueId,
    pub facts: Vec<EventEnvelope>,
}

/// What a report says (the rest is fixed).
#[derive(Clone, Debug)]
pub struct ReportSpec {
    pub grid: GridCode,
    pub category: CategoryCode,
    /// The department the report is routed to.
    pub department: DepartmentCode,
    pub reporter_id: String,
    pub reporter_group: Option<ReporterGroup>,
    /// Set for a report the dedupe stage found to repeat an open case.
    pub duplicate_of: Option<ClueId>,
}

impl ReportSpec {
    /// A report of `category` in `grid`, routed to `department`, by a rider of no group.
    pub fn new(grid: GridCode, category: &str, department: &str) -> Self {
        Self {
            grid,
            category: CategoryCode::parse(category).expect("a category code"),
            department: DepartmentCode::parse(department).expect("a department code"),
            reporter_id: "tok_rider".into(),
            reporter_group: None,
            duplicate_of: None,
        }
    }

    /// The same report made by `reporter` (its id and group).
    pub fn by(self, reporter: &TokenRecord) -> Self {
        Self {
            reporter_id: reporter.id.clone(),
            reporter_group: reporter.group,
            ..self
        }
    }

    /// The same report, found by the dedupe stage to repeat the open case `case`.
    pub fn repeating(self, case: ClueId) -> Self {
        Self {
            duplicate_of: Some(case),
            ..self
        }
    }
}

/// The grids of `street` on the shipped map, in code order.
pub fn grids_of(street: &str) -> Vec<GridCode> {
    crate::shipped_map()
        .grids
        .iter()
        .filter(|g| g.street_code.as_str() == street)
        .map(|g| g.grid_code)
        .collect()
}

/// The first grid of `street` on the shipped map.
pub fn first_grid(street: &str) -> GridCode {
    *grids_of(street)
        .first()
        .unwrap_or_else(|| panic!("street {street} has no grid on the shipped map"))
}

/// The reports of the read-side fixtures' streets A, B and C, each on its street's first grid:
/// garbage piles in A (routed to greening_city_appearance), manhole covers in B (water_affairs)
/// and street vending in C (urban_management).
pub fn street_reports(streets: &[String; 3]) -> [ReportSpec; 3] {
    let [a, b, c] = streets;
    [
        ReportSpec::new(first_grid(a), "garbage_pile", "greening_city_appearance"),
        ReportSpec::new(first_grid(b), "manhole_cover", "water_affairs"),
        ReportSpec::new(first_grid(c), "street_vending", "urban_management"),
    ]
}

impl History {
    /// A clue reported at `at_ms` (a duplicate from the start when `spec.duplicate_of` is set).
    pub fn reported(spec: &ReportSpec, at_ms: u64) -> Self {
        let clue = ClueId::new_random();
        let reporter = Actor {
            kind: gridclue_core::wire::ActorKind::Reporter,
            id: spec.reporter_id.clone(),
            group: spec.reporter_group,
            scope: None,
        };
        let status = if spec.duplicate_of.is_some() {
            Status::Duplicate
        } else {
            Status::Reported
        };
        let report = EventEnvelope {
            v: SCHEMA_VERSION,
            clue_id: clue,
            seq: 0,
            command_id: CommandId::for_report(clue),
            occurred_at_ms: at_ms,
            processed_at_ms: at_ms + 5,
            ingested_at_ms: None,
            status,
            actor: Some(reporter),
            fact: Fact::Reported(Box::new(Reported {
                category: spec.category.clone(),
                location: GeoPoint::new(31.2, 121.5).expect("a point"),
                placement: Placement::Inside {
                    grid_code: spec.grid,
                    on_boundary: false,
                },
                map_version: "test".into(),
                department: spec.department.clone(),
                urgency: Urgency::Normal,
                deadline_ms: None,
                reporter_id: spec.reporter_id.clone(),
                reporter_group: spec.reporter_group,
                duplicate_of: spec.duplicate_of,
                description: "test clue".into(),
                photos: vec![],
                channel: Channel::Api,
            })),
        };
        Self {
            clue,
            facts: vec![report],
        }
    }

    /// A clue reported at `at_ms` at a point outside the district (its nearest grid
    /// `spec.grid`).
    pub fn reported_outside(spec: &ReportSpec, at_ms: u64) -> Self {
        let mut h = Self::reported(spec, at_ms);
        if let Fact::Reported(r) = &mut h.facts[0].fact {
            r.placement = Placement::Outside {
                nearest_grid_code: Some(spec.grid),
                distance_m: 250.0,
            };
        }
        h
    }

    /// Adds the next fact, at `at_ms`, leaving the clue in `status`.
    pub fn then(mut self, at_ms: u64, fact: Fact, status: Status) -> Self {
        let last = self.facts.last().expect("a report first").clone();
        self.facts.push(EventEnvelope {
            seq: last.seq + 1,
            command_id: CommandId::new_random(),
            occurred_at_ms: at_ms,
            processed_at_ms: at_ms + 5,
            ingested_at_ms: None,
            status,
            actor: None,
            fact,
            ..last
        });
        self
    }

    /// The status after the last fact.
    pub fn status(&self) -> Status {
        self.facts.last().expect("a report first").status
    }

    pub fn accepted(self, at_ms: u64, deadline_ms: Option<u64>) -> Self {
        self.then(
            at_ms,
            Fact::Accepted {
                deadline_ms,
                yellow_at_ms: None,
            },
            Status::Accepted,
        )
    }

    pub fn dispatched(self, at_ms: u64, department: &str) -> Self {
        self.then(
            at_ms,
            Fact::Dispatched {
                department: DepartmentCode::parse(department).expect("a department code"),
            },
            Status::Dispatched,
        )
    }

    pub fn handled(self, at_ms: u64) -> Self {
        self.then(at_ms, Fact::Started, Status::InProgress).then(
            at_ms,
            Fact::Handled {
                note: "done".into(),
                photos: vec![],
            },
            Status::Handled,
        )
    }

    /// Verified and closed, the working time since acceptance being `working_hours`.
    pub fn closed(self, at_ms: u64, working_hours: u64) -> Self {
        self.then(
            at_ms,
            Fact::Verified {
                working_ms: Some(working_hours * 3_600_000),
            },
            Status::Closed,
        )
    }

    /// A failed verification: back to the department (dispatched).
    pub fn reworked(self, at_ms: u64) -> Self {
        self.then(
            at_ms,
            Fact::VerifyFailed {
                reason: "not done".into(),
            },
            Status::Dispatched,
        )
    }

    /// An approved postponement moving the deadline to `deadline_ms` (the status stays).
    pub fn postponed(self, at_ms: u64, deadline_ms: u64) -> Self {
        let status = self.status();
        self.then(
            at_ms,
            Fact::Postponed {
                reason: "parts on order".into(),
                deadline_ms,
                yellow_at_ms: None,
                working_hours: Some(8),
            },
            status,
        )
    }

    /// The deadline `deadline_ms` passed with the clue still open (the status stays).
    pub fn overdue(self, deadline_ms: u64) -> Self {
        let status = self.status();
        self.then(deadline_ms, Fact::Overdue { deadline_ms }, status)
    }

    pub fn supervised(self, at_ms: u64) -> Self {
        let status = self.status();
        self.then(
            at_ms,
            Fact::Supervised {
                note: "督办".into(),
            },
            status,
        )
    }

    pub fn rated(self, at_ms: u64, rating: u8) -> Self {
        self.then(
            at_ms,
            Fact::Rated {
                rating,
                note: String::new(),
            },
            Status::Closed,
        )
    }

    pub fn rejected(self, at_ms: u64) -> Self {
        self.then(
            at_ms,
            Fact::Rejected {
                reason: "not a city problem".into(),
            },
            Status::Rejected,
        )
    }

    pub fn merged(self, at_ms: u64, into: ClueId) -> Self {
        self.then(
            at_ms,
            Fact::Merged { duplicate_of: into },
            Status::Duplicate,
        )
    }

    pub fn withdrawn(self, at_ms: u64) -> Self {
        self.then(
            at_ms,
            Fact::Withdrawn {
                reason: String::new(),
            },
            Status::Withdrawn,
        )
    }

    pub fn returned(self, at_ms: u64) -> Self {
        self.then(
            at_ms,
            Fact::Returned {
                reason: "not ours".into(),
            },
            Status::Accepted,
        )
    }

    /// The sink's rows of these facts: one `clue_events` row per fact and the clue's state
    /// after each (offsets from `first_offset` on partition 0).
    pub fn rows(&self, first_offset: i64) -> (Vec<EventRow>, Vec<ClueRow>) {
        let topic: Arc<str> = Arc::from(gridclue_core::wire::EVENTS_TOPIC);
        let mut state: Option<ClueRow> = None;
        let (mut events, mut clues) = (Vec::new(), Vec::new());
        for (i, env) in self.facts.iter().enumerate() {
            let before = state.take();
            let row = apply(before.clone(), env, 0);
            let source = Source {
                topic: topic.clone(),
                partition: 0,
                log: 0,
                offset: first_offset + i as i64,
            };
            events.push(event_row(env, before.as_ref(), &row, &source));
            clues.push(row.clone());
            state = Some(row);
        }
        (events, clues)
    }
}

/// Generous: a benchmark's fill of 10 M facts on a loaded box waits for merges (30 s was cut off
/// at 9.2 M facts with load average 20).
fn timeouts() -> InsertTimeouts {
    InsertTimeouts {
        send: Duration::from_secs(120),
        end: Duration::from_secs(120),
    }
}

/// Writes the histories' rows as the sink does (facts, then the clues' states).
pub async fn write(client: &clickhouse::Client, histories: &[History]) {
    let mut events = Vec::new();
    let mut clues = Vec::new();
    let mut offset = 0;
    for h in histories {
        let (e, c) = h.rows(offset);
        offset += e.len() as i64;
        events.extend(e);
        clues.extend(c);
    }
    write_rows(client, &events, &clues).await;
}

/// Inserts rows as they are (a test may insert some twice, as a replay would).
pub async fn write_rows(client: &clickhouse::Client, events: &[EventRow], clues: &[ClueRow]) {
    let refs: Vec<&EventRow> = events.iter().collect();
    insert_events(client, &refs, timeouts(), &insert_query_id(&[0]))
        .await
        .expect("facts inserted");
    let refs: Vec<&ClueRow> = clues.iter().collect();
    insert_clues(client, &refs, timeouts())
        .await
        .expect("clue states inserted");
}
