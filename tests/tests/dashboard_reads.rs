//! The dashboard's projections (migration 0010: `dashboard_clues`, `dashboard_trend_facts`) and
//! running status counts (0013: `status_counts`, `status_deadlines`) give the answers the
//! dashboard gave when it read `clues FINAL` and `clue_events` directly: on a randomized
//! synthetic history (every lifecycle, reporter groups, postponements, returns, missed
//! deadlines, duplicates), every breakdown grouping, the heatmap, the trend, every list page and
//! the live numbers are compared with the old definitions' SQL, kept here as the reference. Both
//! are also backfilled from a database filled before they existed. Replays (some clues written
//! twice, some only their last facts again) change no answer of the projections; the status
//! counts count them until `rebuild-aggregates`, which the check finds and the rebuild repairs.
//!
//! And dashboard-api's reads: through a read-only user, ClickHouse itself refuses a write.
//!
//! Needs the test ClickHouse (`GRIDCLUE_TEST_CLICKHOUSE_URL`) and the ClickHouse server binary
//! (for a private server with a read-only user).

use chrono::NaiveDate;
use gridclue_core::codes::{or_empty, StreetCode};
use gridclue_core::rng::Rng;
use gridclue_core::wire::Fact;
use gridclue_core::{Catalog, ClueId, DepartmentCode, GridCode, ReporterGroup};
use gridclue_dashboard_api::breakdown::{self, By, Cell, GridCount};
use gridclue_dashboard_api::lists::{self, Cursor, List, ListRow};
use gridclue_dashboard_api::live;
use gridclue_dashboard_api::params::{Filters, Period};
use gridclue_dashboard_api::trend::{self, HourCounts};
use gridclue_dashboard_api::DashboardConfig;
use gridclue_dashboard_api::Reference;
use gridclue_sink::rows::{ClueRow, EventRow};
use gridclue_tests::ch::{PrivateClickHouse, TestDb, PRIVATE_READER_PASSWORD, PRIVATE_READER_USER};
use gridclue_tests::data_dir;
use gridclue_tests::facts::{china, grids_of, write_rows, History, ReportSpec};

const HOUR: u64 = 3_600_000;
const OPEN: &str = "('reported', 'accepted', 'dispatched', 'in_progress', 'handled')";

/// The breakdown as it was defined over `clues FINAL`. Bound: now, street ×2, from, to, filters.
fn old_breakdown_sql(by: By) -> String {
    let key = match by {
        By::Street => "street_code",
        By::Community => "community_code",
        By::Grid => "grid_code",
        By::Category => "category",
        By::Department => "department_now",
        By::Group => "reporter_group",
    };
    format!(
        "SELECT {key} AS key, status, count() AS reports, countIf(is_case = 1) AS cases, \
                countIf(is_case = 1 AND status IN {OPEN} AND deadline_ms > 0 AND deadline_ms < ?) AS overdue \
         FROM (SELECT street_code, community_code, grid_code, category, reporter_group, status, \
                      is_case, deadline_ms, reported_at_ms, \
                      if(assigned_department != '', assigned_department, department) AS department_now \
               FROM clues FINAL WHERE placement = 'inside' AND (? = '' OR street_code = ?)) \
         WHERE reported_at_ms >= ? AND reported_at_ms < ? AND {filters} \
         GROUP BY key, status",
        filters = Filters::sql("department_now"),
    )
}

/// The heatmap over `clues FINAL`. Bound: street ×2, from, to, category ×2.
const OLD_HEATMAP_SQL: &str = "\
SELECT grid_code AS grid, count() AS count \
FROM (SELECT grid_code, category, reported_at_ms FROM clues FINAL \
      WHERE placement = 'inside' AND (? = '' OR street_code = ?)) \
WHERE reported_at_ms >= ? AND reported_at_ms < ? AND (? = '' OR category = ?) \
GROUP BY grid ORDER BY count DESC, grid";

/// The trend over `clue_events`. Bound: from, to, filters.
fn old_trend_sql() -> String {
    format!(
        "SELECT toUInt64(intDiv(occurred_at_ms + 28800000, 3600000) * 3600000 - 28800000) AS hour, \
                uniqExactIf(clue_id, fact_type = 'reported') AS reports, \
                uniqExactIf(clue_id, fact_type = 'accepted') AS accepted, \
                uniqExactIf(clue_id, fact_type = 'verified') AS closed, \
                uniqExactIf(clue_id, seq, fact_type = 'overdue') AS overdue \
         FROM clue_events \
         WHERE occurred_at_ms >= ? AND occurred_at_ms < ? AND inside = 1 \
           AND fact_type IN ('reported', 'accepted', 'verified', 'overdue') AND {filters} \
         GROUP BY hour ORDER BY hour",
        filters = Filters::sql("department"),
    )
}

/// A list over `clues FINAL`. Bound: street ×2, filters, now (per list), has-cursor, key ×2,
/// id, limit.
fn old_list_sql(list: List) -> String {
    let open = format!("status IN {OPEN}");
    let condition = match list {
        List::Overdue => format!("{open} AND deadline_ms > 0 AND deadline_ms < ?"),
        List::DueSoon => format!(
            "{open} AND deadline_ms > 0 AND deadline_ms >= ? \
             AND ? >= least(if(yellow_at_ms = 0, \
                 toUInt64(deadline_ms - toUInt64(if(deadline_ms > accepted_at_ms, deadline_ms - accepted_at_ms, 0) * 0.2)), \
                 yellow_at_ms), deadline_ms)"
        ),
        List::Stale => open,
        List::Newest => "1".into(),
    };
    let (key, cmp, dir) = match list {
        List::Overdue | List::DueSoon => ("deadline_ms", ">", "ASC"),
        List::Stale => ("updated_at_ms", ">", "ASC"),
        List::Newest => ("reported_at_ms", "<", "DESC"),
    };
    format!(
        "SELECT id, street_code, community_code, grid_code, category, department_now, status, \
                accepted_at_ms, deadline_ms, yellow_at_ms, updated_at_ms, reported_at_ms, \
                {key} AS sort_key \
         FROM (SELECT toString(clue_id) AS id, street_code, community_code, grid_code, category, \
                      if(assigned_department != '', assigned_department, department) AS department_now, \
                      status, accepted_at_ms, deadline_ms, yellow_at_ms, updated_at_ms, reported_at_ms \
               FROM clues FINAL WHERE placement = 'inside' AND (? = '' OR street_code = ?)) \
         WHERE {filters} AND {condition} \
           AND (? = 0 OR {key} {cmp} ? OR ({key} = ? AND id {cmp} ?)) \
         ORDER BY {key} {dir}, id {dir} \
         LIMIT ?",
        filters = Filters::sql("department_now"),
    )
}

fn now_binds(list: List) -> usize {
    match list {
        List::Overdue => 1,
        List::DueSoon => 2,
        List::Stale | List::Newest => 0,
    }
}

/// The live numbers' per-street state over `clues FINAL`. Bound: from, to, from, to, now.
fn old_live_sql() -> String {
    format!(
        "SELECT street_code AS street, \
                countIf(reported_at_ms >= ? AND reported_at_ms < ?) AS reports, \
                countIf(is_case = 1 AND reported_at_ms >= ? AND reported_at_ms < ?) AS cases, \
                countIf(status IN {OPEN}) AS open, \
                countIf(status IN {OPEN} AND deadline_ms > 0 AND deadline_ms < ?) AS overdue \
         FROM (SELECT street_code, reported_at_ms, is_case, status, deadline_ms \
               FROM clues FINAL WHERE placement = 'inside') \
         GROUP BY street \
         HAVING reports + open > 0 \
         ORDER BY street"
    )
}

#[derive(Debug, PartialEq, clickhouse::Row, serde::Deserialize)]
struct StreetNumbers {
    street: StreetCode,
    reports: u64,
    cases: u64,
    open: u64,
    overdue: u64,
}

async fn old_live(db: &TestDb, now_ms: u64) -> Vec<StreetNumbers> {
    let month = live::month_of(now_ms);
    let (from, to) = (
        gridclue_dashboard_api::indicators::china_midnight_ms(month.from),
        gridclue_dashboard_api::indicators::china_midnight_ms(month.to),
    );
    db.client
        .query(&old_live_sql())
        .bind(from)
        .bind(to)
        .bind(from)
        .bind(to)
        .bind(now_ms)
        .fetch_all()
        .await
        .unwrap()
}

async fn new_live(db: &TestDb, now_ms: u64) -> Vec<StreetNumbers> {
    let deps = live::LoopDeps {
        ch: db.client.clone(),
        reference: std::sync::Arc::new(Reference::load(&data_dir()).unwrap()),
        weights: Default::default(),
        metrics: gridclue_dashboard_api::DashboardMetrics::new(),
        poll: std::time::Duration::from_millis(300),
    };
    let (snapshot, _) = live::snapshot(&deps, now_ms).await.unwrap();
    let mut out: Vec<StreetNumbers> = snapshot
        .streets
        .into_iter()
        .map(|s| StreetNumbers {
            street: s.street,
            reports: s.kpis.reports,
            cases: s.kpis.cases,
            open: s.kpis.open,
            overdue: s.kpis.overdue,
        })
        .filter(|s| s.reports + s.open > 0)
        .collect();
    out.sort_by_key(|s| s.street);
    out
}

struct World {
    grids: Vec<GridCode>,
    catalog: Catalog,
    departments: Vec<DepartmentCode>,
}

impl World {
    fn load() -> Self {
        let reference = Reference::load(&data_dir()).unwrap();
        let mut grids = Vec::new();
        // Three streets, a few grids each (two communities where the map has them).
        for street in reference.streets.iter().take(3) {
            let of_street = grids_of(street.code.as_str());
            let step = (of_street.len() / 4).max(1);
            grids.extend(of_street.into_iter().step_by(step).take(4));
        }
        let catalog = Catalog::load(&data_dir().join("categories.json")).unwrap();
        let departments = reference
            .departments
            .iter()
            .take(4)
            .map(|d| d.code.clone())
            .collect();
        Self {
            grids,
            catalog,
            departments,
        }
    }

    /// One random history reported at `at`, its facts within a few days.
    fn history(&self, rng: &mut Rng, at: u64, earlier: Option<ClueId>) -> History {
        let categories = self.catalog.categories();
        let category = &categories[rng.below(categories.len().min(6))];
        let group = match rng.below(ReporterGroup::ALL.len() + 1) {
            0 => None,
            i => Some(ReporterGroup::ALL[i - 1]),
        };
        let spec = ReportSpec {
            grid: self.grids[rng.below(self.grids.len())],
            category: category.code.clone(),
            department: category.department.clone(),
            reporter_id: format!("tok_{}", rng.below(20)),
            reporter_group: group,
            duplicate_of: earlier.filter(|_| rng.chance(0.05)),
        };
        let mut h = History::reported(&spec, at);
        if spec.duplicate_of.is_some() {
            return h;
        }
        let mut t = at + rng.below(3) as u64 * HOUR + 1_000;
        match rng.below(100) {
            0..=3 => return h.rejected(t),
            4..=5 => return h.withdrawn(t),
            6..=8 => return h,
            9..=10 => {
                if let Some(into) = earlier {
                    return h.merged(t, into);
                }
            }
            _ => {}
        }
        let mut deadline = t + (2 + rng.below(60) as u64) * HOUR;
        h = h.accepted(t, Some(deadline));
        if rng.chance(0.1) {
            return h;
        }
        t += HOUR / 2;
        let department = &self.departments[rng.below(self.departments.len())];
        h = h.dispatched(t, department.as_str());
        if rng.chance(0.1) {
            t += HOUR;
            h = h.returned(t);
            if rng.chance(0.5) {
                return h;
            }
            t += HOUR;
            h = h.dispatched(
                t,
                self.departments[rng.below(self.departments.len())].as_str(),
            );
        }
        if rng.chance(0.1) {
            deadline += 24 * HOUR;
            t += HOUR;
            h = h.postponed(t, deadline);
        }
        if rng.chance(0.15) {
            return h;
        }
        t += rng.below(80) as u64 * HOUR;
        if t > deadline {
            let status = h.status();
            h = h.then(
                deadline,
                Fact::Overdue {
                    deadline_ms: deadline,
                },
                status,
            );
        }
        h = h.handled(t);
        if rng.chance(0.2) {
            return h;
        }
        if rng.chance(0.15) {
            t += HOUR;
            h = h.reworked(t);
            t += 2 * HOUR;
            h = h.handled(t);
        }
        t += HOUR;
        h = h.closed(t, 3);
        if rng.chance(0.5) {
            h = h.rated(t + 5 * HOUR, 1 + rng.below(5) as u8);
        }
        h
    }
}

/// Events and states of `histories`, each state row as the sink writes it after each fact.
fn rows_of(histories: &[History], first_offset: i64) -> (Vec<EventRow>, Vec<ClueRow>) {
    let (mut events, mut clues) = (Vec::new(), Vec::new());
    let mut offset = first_offset;
    for h in histories {
        let (e, c) = h.rows(offset);
        offset += e.len() as i64;
        events.extend(e);
        clues.extend(c);
    }
    (events, clues)
}

/// Every answer the projections serve, for a set of periods, filters and instants.
#[derive(Debug, PartialEq, Default)]
struct Answers {
    breakdowns: Vec<Vec<Cell>>,
    heatmaps: Vec<Vec<GridCount>>,
    trends: Vec<Vec<HourCounts>>,
    /// Day, week and month buckets (summed from the hours of the old definition; from the
    /// trend's days now).
    bucket_trends: Vec<Vec<trend::TrendRow>>,
    pages: Vec<Vec<ListRow>>,
}

const LONG_BUCKETS: [trend::Bucket; 3] = [
    trend::Bucket::Day,
    trend::Bucket::Week,
    trend::Bucket::Month,
];

fn buckets(c: &Case, counts: &[HourCounts]) -> Vec<Vec<trend::TrendRow>> {
    LONG_BUCKETS
        .iter()
        .map(|b| trend::assemble(*b, &c.period, c.filters.clone(), counts).rows)
        .collect()
}

struct Case {
    period: Period,
    filters: Filters,
    now_ms: u64,
}

fn cases(world: &World) -> Vec<Case> {
    let day = |s: &str| s.parse::<NaiveDate>().unwrap();
    let g = world.grids[1];
    let periods = [
        (day("2026-03-01"), day("2026-05-01")),
        (day("2026-03-10"), day("2026-03-17")),
        (day("2026-04-01"), day("2026-04-02")),
    ];
    let filters = [
        Filters::default(),
        Filters {
            street: Some(g.street_code()),
            ..Filters::default()
        },
        Filters {
            street: Some(g.street_code()),
            community: Some(g.community_code()),
            ..Filters::default()
        },
        Filters {
            grid: Some(g),
            ..Filters::default()
        },
        Filters {
            category: Some(world.catalog.categories()[0].code.clone()),
            ..Filters::default()
        },
        Filters {
            department: Some(world.departments[0].clone()),
            ..Filters::default()
        },
    ];
    let mut out = Vec::new();
    for (i, (from, to)) in periods.into_iter().enumerate() {
        for f in &filters {
            out.push(Case {
                period: Period { from, to },
                filters: f.clone(),
                now_ms: china(["2026-03-20 12:00", "2026-04-15 08:30", "2026-05-02 00:00"][i]),
            });
        }
    }
    out
}

async fn old_answers(db: &TestDb, cases: &[Case]) -> Answers {
    let mut a = Answers::default();
    for c in cases {
        let street = or_empty(&c.filters.street);
        let category = or_empty(&c.filters.category);
        for by in By::ALL {
            let q = db
                .client
                .query(&old_breakdown_sql(by))
                .bind(c.now_ms)
                .bind(street)
                .bind(street)
                .bind(c.period.from_ms())
                .bind(c.period.to_ms());
            let mut cells: Vec<Cell> = gridclue_dashboard_api::params::bind_filters(q, &c.filters)
                .fetch_all()
                .await
                .unwrap();
            cells.sort_by(|x, y| (&x.key, &x.status).cmp(&(&y.key, &y.status)));
            a.breakdowns.push(cells);
        }
        a.heatmaps.push(
            db.client
                .query(OLD_HEATMAP_SQL)
                .bind(street)
                .bind(street)
                .bind(c.period.from_ms())
                .bind(c.period.to_ms())
                .bind(category)
                .bind(category)
                .fetch_all()
                .await
                .unwrap(),
        );
        let q = db
            .client
            .query(&old_trend_sql())
            .bind(c.period.from_ms())
            .bind(c.period.to_ms());
        let hours: Vec<HourCounts> = gridclue_dashboard_api::params::bind_filters(q, &c.filters)
            .fetch_all()
            .await
            .unwrap();
        a.bucket_trends.extend(buckets(c, &hours));
        a.trends.push(hours);
        for list in List::ALL {
            let mut after: Option<Cursor> = None;
            // The first two pages of 7 (the second from the first's cursor).
            for _ in 0..2 {
                let mut q = db
                    .client
                    .query(&old_list_sql(list))
                    .bind(street)
                    .bind(street);
                q = gridclue_dashboard_api::params::bind_filters(q, &c.filters);
                for _ in 0..now_binds(list) {
                    q = q.bind(c.now_ms);
                }
                let (has, key, id) = after
                    .as_ref()
                    .map_or((0u8, 0, String::new()), |c| (1, c.key, c.clue_id.clone()));
                let page: Vec<ListRow> = q
                    .bind(has)
                    .bind(key)
                    .bind(key)
                    .bind(id)
                    .bind(8u32)
                    .fetch_all()
                    .await
                    .unwrap();
                after = page.get(6).map(|r| Cursor {
                    list,
                    key: r.sort_key,
                    clue_id: r.id.clone(),
                });
                a.pages.push(page);
            }
        }
    }
    a
}

async fn new_answers(db: &TestDb, cases: &[Case]) -> Answers {
    let mut a = Answers::default();
    for c in cases {
        for by in By::ALL {
            let mut cells = breakdown::query(&db.client, by, &c.period, &c.filters, c.now_ms)
                .await
                .unwrap();
            cells.sort_by(|x, y| (&x.key, &x.status).cmp(&(&y.key, &y.status)));
            a.breakdowns.push(cells);
        }
        a.heatmaps.push(
            breakdown::heatmap(&db.client, &c.period, &c.filters)
                .await
                .unwrap()
                .rows,
        );
        let mut hours = trend::query(&db.client, &c.period, &c.filters)
            .await
            .unwrap();
        hours.sort_by_key(|h| h.hour);
        a.trends.push(hours);
        let days = trend::query_days(&db.client, &c.period, &c.filters)
            .await
            .unwrap();
        a.bucket_trends.extend(buckets(c, &days));
        for list in List::ALL {
            let mut after: Option<Cursor> = None;
            for _ in 0..2 {
                let page = lists::query(&db.client, list, &c.filters, 7, after.as_ref(), c.now_ms)
                    .await
                    .unwrap();
                after = page.get(6).map(|r| Cursor {
                    list,
                    key: r.sort_key,
                    clue_id: r.id.clone(),
                });
                a.pages.push(page);
            }
        }
    }
    a
}

/// How much of the answers is not empty (so that equality is not between nothings).
fn substance(a: &Answers) -> [usize; 4] {
    [
        a.breakdowns.iter().filter(|b| !b.is_empty()).count(),
        a.heatmaps.iter().filter(|h| !h.is_empty()).count(),
        a.trends.iter().filter(|t| !t.is_empty()).count(),
        a.pages.iter().filter(|p| !p.is_empty()).count(),
    ]
}

fn random_histories(world: &World, seed: u64, n: usize) -> Vec<History> {
    let mut rng = Rng::new(seed);
    let start = china("2026-03-01 00:00");
    let span = 62 * 24 * HOUR;
    let mut out: Vec<History> = Vec::with_capacity(n);
    for _ in 0..n {
        let at = start + rng.below(span as usize) as u64;
        let earlier = out.last().map(|h| h.clue);
        out.push(world.history(&mut rng, at, earlier));
    }
    out
}

#[tokio::test]
async fn projections_answer_as_the_old_definitions_on_a_random_history() {
    let world = World::load();
    let cases = cases(&world);
    let db = TestDb::create("dash_proj").await;
    // Half the history reaches the projections by the migration's backfill (as if it had been
    // stored before they existed: their rows removed, then the backfill run); the rest through
    // the materialized views.
    gridclue_sink::migrations::apply(&db.client).await.unwrap();
    let histories = random_histories(&world, 0x5eed_0011, 600);
    let (before, after) = histories.split_at(300);
    let (events, clues) = rows_of(before, 0);
    write_rows(&db.client, &events, &clues).await;
    for table in [
        "dashboard_clues",
        "dashboard_trend_facts",
        "status_counts",
        "status_deadlines",
        "trend_days",
    ] {
        db.execute(&format!("TRUNCATE TABLE {table}")).await;
    }
    for (migration, tables) in [("dashboard_projections", 2), ("status_counts", 3)] {
        let backfill: Vec<String> = gridclue_sink::migrations::MIGRATIONS
            .iter()
            .find(|m| m.name == migration)
            .unwrap()
            .statements()
            .into_iter()
            .filter(|s| s.trim_start().starts_with("INSERT"))
            .collect();
        assert_eq!(
            backfill.len(),
            tables,
            "backfills of the tables of {migration}"
        );
        for statement in &backfill {
            db.execute(statement).await;
        }
    }
    let (events, clues) = rows_of(after, 10_000);
    // In a few inserts, as the sink's batches.
    for (e, c) in events.chunks(700).zip(clues.chunks(700)) {
        write_rows(&db.client, e, c).await;
    }
    let old = old_answers(&db, &cases).await;
    let new = new_answers(&db, &cases).await;
    let [b, h, t, p] = substance(&old);
    assert!(
        b > 40 && h > 10 && t > 10 && p > 40,
        "the history is too thin to compare: {:?}",
        substance(&old)
    );
    assert_eq!(old.breakdowns, new.breakdowns);
    assert_eq!(old.heatmaps, new.heatmaps);
    assert_eq!(old.trends, new.trends);
    assert_eq!(old.bucket_trends, new.bucket_trends);
    assert_eq!(old.pages, new.pages);
    for c in &cases {
        let old_live = old_live(&db, c.now_ms).await;
        assert!(!old_live.is_empty());
        assert_eq!(old_live, new_live(&db, c.now_ms).await);
    }

    // Replays: whole histories written again, and the last facts of others (with their
    // states), before and after the backfill's rows.
    let mut rng = Rng::new(7);
    let whole: Vec<History> = histories
        .iter()
        .filter(|_| rng.chance(0.1))
        .cloned()
        .collect();
    let (events, clues) = rows_of(&whole, 0);
    write_rows(&db.client, &events, &clues).await;
    let mut tail_events = Vec::new();
    let mut tail_clues = Vec::new();
    let tails: Vec<&History> = histories.iter().filter(|_| rng.chance(0.1)).collect();
    for h in tails {
        let (e, c) = h.rows(0);
        let keep = 1 + rng.below(e.len());
        tail_events.extend_from_slice(&e[e.len() - keep..]);
        tail_clues.extend_from_slice(&c[c.len() - keep..]);
    }
    write_rows(&db.client, &tail_events, &tail_clues).await;
    // The projections of 0010 keep every answer through replays. The running status counts and
    // the trend's days (0013: the breakdowns, the live numbers, day to month trends) count rows
    // written behind the sink's back, as the other aggregates do: the check finds them and the
    // rebuild repairs them.
    let replayed = new_answers(&db, &cases).await;
    assert_eq!(
        (&new.heatmaps, &new.trends, &new.pages),
        (&replayed.heatmaps, &replayed.trends, &replayed.pages),
        "a replay changed an answer of the projections"
    );
    let drift = gridclue_sink::aggregates::check(&db.client).await.unwrap();
    assert!(
        drift.status_groups_off > 0 && drift.trend_groups_off > 0,
        "{drift:?}"
    );
    let rebuilt = gridclue_sink::aggregates::rebuild(&db.client)
        .await
        .unwrap();
    assert!(rebuilt.is_exact(), "{rebuilt:?}");
    assert_eq!(
        new,
        new_answers(&db, &cases).await,
        "the rebuild restored every answer"
    );
    for c in &cases {
        assert_eq!(old_live(&db, c.now_ms).await, new_live(&db, c.now_ms).await);
    }
    // And merged as background merges would leave them.
    for table in [
        "dashboard_clues",
        "dashboard_trend_facts",
        "status_counts",
        "status_deadlines",
        "trend_days",
    ] {
        db.execute(&format!("OPTIMIZE TABLE {table} FINAL")).await;
    }
    assert_eq!(
        new,
        new_answers(&db, &cases).await,
        "merging changed an answer"
    );
}

/// The exception code in a ClickHouse error ("Code: 164" on old and new servers).
fn code_of(e: &clickhouse::error::Error) -> Option<u32> {
    let text = e.to_string();
    let rest = &text[text.find("Code:")? + 5..];
    rest.trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .ok()
}

const WRITE: &str = "INSERT INTO dashboard_trend_facts (clue_id, seq, fact_type) \
                     VALUES ('00000000-0000-4000-8000-000000000001', 1, 'reported')";
/// READONLY: "Cannot execute query in readonly mode".
const READONLY: u32 = 164;

#[tokio::test]
async fn the_read_only_user_reads_and_is_refused_writes_by_clickhouse() {
    let server = PrivateClickHouse::start();
    let db = TestDb::create_at(&server.url, "dash_reader").await;
    gridclue_sink::migrations::apply(&db.client).await.unwrap();
    let config = DashboardConfig {
        clickhouse_url: server.url.clone(),
        clickhouse_database: db.database.clone(),
        clickhouse_read_user: PRIVATE_READER_USER.into(),
        clickhouse_read_password: gridclue_core::config::Secret::new(PRIVATE_READER_PASSWORD),
        ..DashboardConfig::default()
    };
    let settings = config.read_ch_settings().unwrap().expect("a read user");
    let read = gridclue_dashboard_api::reader(
        gridclue_core::ch::connect_reader(&settings).await.unwrap(),
        true,
    );
    // The writing user may write; the reader reads what it wrote and may not write.
    db.execute(WRITE).await;
    let n: u64 = read
        .query("SELECT count() FROM dashboard_trend_facts")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(n, 1);
    let refused = read.query(WRITE).execute().await.unwrap_err();
    assert_eq!(code_of(&refused), Some(READONLY), "{refused}");
    let refused = read
        .query("CREATE TABLE scratch (x UInt8) ENGINE = Memory")
        .execute()
        .await
        .unwrap_err();
    assert_eq!(code_of(&refused), Some(READONLY), "{refused}");
    assert_eq!(
        db.scalar("SELECT count() FROM dashboard_trend_facts").await,
        1
    );
    // A dashboard query runs as the reader (the setting it sends is allowed).
    let period = Period {
        from: "2026-01-01".parse().unwrap(),
        to: "2026-02-01".parse().unwrap(),
    };
    trend::query(&read, &period, &Filters::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn without_a_read_user_the_reads_are_narrowed_to_read_only() {
    let db = TestDb::create("dash_reader_fallback").await;
    gridclue_sink::migrations::apply(&db.client).await.unwrap();
    assert!(DashboardConfig::default()
        .read_ch_settings()
        .unwrap()
        .is_none());
    let read = gridclue_dashboard_api::reader(db.client.clone(), false);
    let refused = read.query(WRITE).execute().await.unwrap_err();
    assert_eq!(code_of(&refused), Some(READONLY), "{refused}");
    assert_eq!(
        db.scalar("SELECT count() FROM dashboard_trend_facts").await,
        0
    );
}
