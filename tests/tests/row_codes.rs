//! The sink's rows hold typed codes (grid, community, street, category, department), written as
//! the plain `String` columns they always were: against the real test ClickHouse, rows written
//! with the sink's insert functions read back equal, with `''` in a column where the code is
//! absent (outside the district, before a dispatch, after a return), and the columns hold
//! exactly the strings written out below by hand.

use gridclue_dashboard_api::timeline;
use gridclue_sink::rows::{ClueRow, EventRow};
use gridclue_sink::store::load_partition;
use gridclue_tests::ch::TestDb;
use gridclue_tests::facts::{china, write_rows, History, ReportSpec};

/// One clue's columns as ClickHouse holds them, read as plain strings.
#[derive(Debug, PartialEq, clickhouse::Row, serde::Deserialize)]
struct CodeColumns {
    grid_code: String,
    community_code: String,
    street_code: String,
    nearest_street_code: String,
    category: String,
    department: String,
    routed_department: String,
    assigned_department: String,
}

#[derive(Debug, PartialEq, clickhouse::Row, serde::Deserialize)]
struct DepartmentArrays {
    fact_type: String,
    state_department: Vec<String>,
    open_case_department: Vec<String>,
}

const CODE_COLUMNS: &str = "grid_code, community_code, street_code, nearest_street_code, \
     category, department, routed_department, assigned_department";

fn columns(
    place: [&str; 4],
    category: &str,
    [department, routed, assigned]: [&str; 3],
) -> CodeColumns {
    let [grid_code, community_code, street_code, nearest_street_code] = place.map(String::from);
    CodeColumns {
        grid_code,
        community_code,
        street_code,
        nearest_street_code,
        category: category.into(),
        department: department.into(),
        routed_department: routed.into(),
        assigned_department: assigned.into(),
    }
}

#[tokio::test]
async fn typed_codes_round_trip_through_clickhouse_as_plain_strings() {
    let db = TestDb::create("row_codes").await;
    gridclue_sink::migrations::apply(&db.client).await.unwrap();
    let grid = "310199001001002".parse().unwrap();
    let spec = ReportSpec::new(grid, "garbage_pile", "greening_city_appearance");
    let t = china;
    let dispatched = History::reported(&spec, t("2026-11-02 09:00"))
        .accepted(t("2026-11-02 10:00"), Some(t("2026-11-04 10:00")))
        .dispatched(t("2026-11-02 11:00"), "water_affairs");
    let returned = History::reported(&spec, t("2026-11-02 09:30"))
        .accepted(t("2026-11-02 10:00"), Some(t("2026-11-04 10:00")))
        .dispatched(t("2026-11-02 11:00"), "water_affairs")
        .returned(t("2026-11-02 12:00"));
    let outside = History::reported_outside(&spec, t("2026-11-02 10:00"));

    let (mut events, mut clues) = (Vec::<EventRow>::new(), Vec::<ClueRow>::new());
    for (i, h) in [&dispatched, &returned, &outside].into_iter().enumerate() {
        let (e, c) = h.rows(100 * i as i64);
        events.extend(e);
        clues.extend(c);
    }
    write_rows(&db.client, &events, &clues).await;

    // The sink's own reload reads every clue's latest row back as it was written.
    let loaded = load_partition(&db.client, gridclue_core::wire::EVENTS_TOPIC, 0)
        .await
        .expect("states load");
    for h in [&dispatched, &returned, &outside] {
        let (_, states) = h.rows(0);
        let state = &loaded[&h.clue.as_uuid()];
        assert_eq!(*state.row, *states.last().unwrap(), "{}", h.clue);
    }
    let read: Vec<EventRow> = db
        .client
        .query("SELECT ?fields FROM clue_events ORDER BY kafka_offset")
        .fetch_all()
        .await
        .expect("facts read");
    assert_eq!(read, events);

    // The columns are the plain strings, '' where a code is absent.
    let stored = |clue: &History| {
        let client = db.client.clone();
        let id = clue.clue.to_string();
        async move {
            client
                .query(&format!(
                    "SELECT {CODE_COLUMNS} FROM clues FINAL WHERE toString(clue_id) = ?"
                ))
                .bind(id)
                .fetch_one::<CodeColumns>()
                .await
                .expect("one clue row")
        }
    };
    let place = ["310199001001002", "310199001001", "310199001", ""];
    assert_eq!(
        stored(&dispatched).await,
        columns(
            place,
            "garbage_pile",
            ["water_affairs", "greening_city_appearance", "water_affairs"]
        )
    );
    assert_eq!(
        stored(&returned).await,
        columns(
            place,
            "garbage_pile",
            ["water_affairs", "greening_city_appearance", ""]
        )
    );
    assert_eq!(
        stored(&outside).await,
        columns(
            ["", "", "", "310199001"],
            "garbage_pile",
            ["greening_city_appearance", "greening_city_appearance", ""]
        )
    );

    // The arrays of department codes are plain strings too.
    let departments: Vec<DepartmentArrays> = db
        .client
        .query(
            "SELECT fact_type, state_department, open_case_department FROM clue_events \
             WHERE toString(clue_id) = ? ORDER BY seq",
        )
        .bind(returned.clue.to_string())
        .fetch_all()
        .await
        .expect("department arrays read");
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let g = "greening_city_appearance";
    let w = "water_affairs";
    assert_eq!(
        departments,
        [
            ("reported", strings(&[g])),
            ("accepted", strings(&[g, g])),
            ("dispatched", strings(&[g, w])),
            ("returned", strings(&[w, w])),
        ]
        .map(|(fact_type, departments)| DepartmentArrays {
            fact_type: fact_type.into(),
            state_department: departments.clone(),
            open_case_department: departments,
        })
    );
}

/// A fact row whose codes are malformed (written behind the sink's back, e.g. by hand) does not
/// fail the dashboard's read of it through RowBinary: the malformed codes read as none and the
/// timeline shows the clue without a street (`""`) and the dispatch without a department, the
/// well-formed columns as they are.
#[tokio::test]
async fn malformed_codes_in_stored_rows_are_read_as_none() {
    let db = TestDb::create("row_codes_bad").await;
    gridclue_sink::migrations::apply(&db.client).await.unwrap();
    let clue = gridclue_core::ClueId::new_random().to_string();
    let t = china("2026-11-02 09:00");
    for (seq, fact_type, department) in [
        (0u32, "reported", "greening_city_appearance"),
        (1, "dispatched", "Water Affairs"),
    ] {
        db.client
            .query(
                "INSERT INTO clue_events (clue_id, seq, command_id, fact_type, status, \
                 occurred_at_ms, processed_at_ms, placement, inside, grid_code, community_code, \
                 street_code, category, department, detail, kafka_topic, kafka_partition, \
                 kafka_offset) SELECT toUUID(?), ?, toUUID(?), ?, ?, ?, ?, 'inside', 1, \
                 '310199001001002', '310199001001', '31019900X', 'garbage_pile', ?, ?, \
                 'clues.events', 0, ?",
            )
            .bind(&clue)
            .bind(seq)
            .bind(gridclue_core::CommandId::new_random().to_string())
            .bind(fact_type)
            .bind(fact_type)
            .bind(t + u64::from(seq))
            .bind(t + u64::from(seq))
            .bind(department)
            .bind(department)
            .bind(i64::from(seq))
            .execute()
            .await
            .expect("a hand-written fact row");
    }
    let rows = timeline::query(&db.client, &clue)
        .await
        .expect("the malformed codes do not fail the read");
    assert_eq!(rows.len(), 2);
    assert_eq!(
        rows.iter()
            .map(|r| (r.street_code, r.department.clone()))
            .collect::<Vec<_>>(),
        [
            (None, Some("greening_city_appearance".parse().unwrap())),
            (None, None)
        ]
    );
    let shown =
        serde_json::to_value(timeline::assemble(clue.clone(), rows, &Default::default())).unwrap();
    assert_eq!(shown["street"], "");
    assert_eq!(shown["facts"][1]["kind"], "dispatched");
    assert_eq!(shown["facts"][1]["department"], serde_json::Value::Null);
}
