//! Hotspot alerts written into ClickHouse the way the sink projects them: an [`AlertFact`] made
//! from hand-built clue histories, turned into its row with the sink's own `AlertRow::of` and
//! inserted into `hotspot_alerts`. Tests of the read side (`/v1/alerts`, the stream, the page)
//! build alerts with it without running the detector.

use gridclue_core::hotspot::{AlertFact, AlertState, PlaceKind};
use gridclue_core::wire::{Fact, Placement, SCHEMA_VERSION};
use gridclue_core::GridCode;
use gridclue_sink::alerts::{AlertRow, TABLE};

use crate::facts::History;

/// The grid and category a history's report names.
fn report_of(h: &History) -> (GridCode, gridclue_core::CategoryCode) {
    let Fact::Reported(r) = &h.facts[0].fact else {
        panic!("a history starts with its report");
    };
    let Placement::Inside { grid_code, .. } = &r.placement else {
        panic!("an alert's case is placed inside the district");
    };
    (*grid_code, r.category.clone())
}

/// Version `version` of alert `id` over `cases` (their reports' grids form the place, named
/// after the first one's grid; a neighbourhood when they lie in several grids), raised on the
/// first case and last changed at `at_ms`. Expected count 0.4 and a recurrence of 900 days
/// stand for the detector's figures.
pub fn alert(
    id: u128,
    version: u32,
    state: AlertState,
    cases: &[&History],
    at_ms: u64,
) -> AlertFact {
    let (grid, category) = report_of(cases[0]);
    let mut grids: Vec<GridCode> = cases.iter().map(|h| report_of(h).0).collect();
    grids.dedup();
    let first = cases
        .iter()
        .map(|h| h.facts[0].occurred_at_ms)
        .min()
        .unwrap();
    let last = cases
        .iter()
        .map(|h| h.facts[0].occurred_at_ms)
        .max()
        .unwrap();
    AlertFact {
        v: SCHEMA_VERSION,
        alert_id: uuid::Uuid::from_u128(id),
        version,
        state,
        place_kind: if grids.len() > 1 {
            PlaceKind::Neighbourhood
        } else {
            PlaceKind::Grid
        },
        grid_code: grid,
        grids,
        community_code: grid.community_code(),
        street_code: grid.street_code(),
        category,
        window_start_ms: first,
        window_end_ms: last,
        window_days: 3,
        observed: cases.len() as u32,
        expected: 0.4,
        recurrence_days: 900.0,
        clue_ids: cases.iter().map(|h| h.clue).collect(),
        trigger_clue_id: cases.last().map(|h| h.clue),
        at_ms,
    }
}

/// Inserts the alerts' rows as the sink does (offsets from 0 on partition 0; a test may insert
/// a version twice, as a replay would).
pub async fn write_alerts(client: &clickhouse::Client, alerts: &[AlertFact]) {
    let mut insert = client
        .insert::<AlertRow>(TABLE)
        .await
        .expect("an insert into hotspot_alerts");
    for (i, a) in alerts.iter().enumerate() {
        insert
            .write(&AlertRow::of(a, 0, i as i64))
            .await
            .expect("alert row written");
    }
    insert.end().await.expect("alert rows inserted");
}
