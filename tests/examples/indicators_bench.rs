//! Benchmark (not a test) of `GET /v1/indicators` and the dashboard queries: fills a fresh
//! database with synthetic clue histories written through the sink's own fold and row code (a
//! year of reports over the shipped map and category table: duplicates, rejections,
//! withdrawals, reworks, postponements, supervision, ratings, open and overdue cases), then times
//! the endpoints through the dashboard-api router and prints p50 / p99 / max.
//!
//! ```text
//! cargo run -p gridclue-tests --example indicators_bench -- \
//!     --clickhouse-url http://127.0.0.1:26123 --facts 1000000 --runs 50 [--suite dashboard]
//! ```
//! `--suite indicators` (default) times `/v1/indicators`; `--suite dashboard` times every
//! dashboard route (breakdown, trend, rankings, lists, heatmap, timeline) and the live numbers'
//! snapshot (the two queries the `/v1/stream` loop runs when something changed); `--suite
//! lists` only the lists of the dashboard suite.
//! Point it at a ClickHouse of its own (not the shared test server): the timings are the
//! server's, and a loaded server both skews them and slows everyone else's tests. With
//! `--keep-db` the database stays; `--database NAME` times the queries on such a kept database
//! again without filling it.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use gridclue_core::rng::Rng;
use gridclue_core::tokens::{TokenFile, TokenKind, TokenStore};
use gridclue_core::{Catalog, ClueId, GridCode};
use gridclue_dashboard_api::{AppState, Reference};
use gridclue_sink::rows::{ClueRow, EventRow};
use gridclue_tests::ch::TestDb;
use gridclue_tests::facts::{china, write_rows, History, ReportSpec};
use gridclue_tests::{data_dir, scratch};
use tower::ServiceExt;

struct Args {
    clickhouse_url: String,
    facts: u64,
    runs: usize,
    keep_db: bool,
    database: Option<String>,
    dashboard: bool,
    lists_only: bool,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        clickhouse_url: "http://127.0.0.1:26123".into(),
        facts: 1_000_000,
        runs: 50,
        keep_db: false,
        database: None,
        dashboard: false,
        lists_only: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--clickhouse-url" => a.clickhouse_url = value()?,
            "--facts" => a.facts = value()?.parse()?,
            "--runs" => a.runs = value()?.parse()?,
            "--keep-db" => a.keep_db = true,
            "--database" => a.database = Some(value()?),
            "--suite" => match value()?.as_str() {
                "indicators" => a.dashboard = false,
                "dashboard" => a.dashboard = true,
                "lists" => (a.dashboard, a.lists_only) = (true, true),
                other => anyhow::bail!("--suite {other}: indicators, dashboard or lists"),
            },
            other => anyhow::bail!(
                "unknown argument {other} (--clickhouse-url, --facts, --runs, --keep-db, --database, --suite)"
            ),
        }
    }
    Ok(a)
}

const HOUR: u64 = 3_600_000;

/// One synthetic clue history reported at `at`.
fn history(rng: &mut Rng, grids: &[GridCode], catalog: &Catalog, at: u64, last: ClueId) -> History {
    let categories = catalog.categories();
    let category = &categories[rng.below(categories.len())];
    let reporter = format!("tok_{}", rng.below(2_000));
    let duplicate = rng.chance(0.08);
    let spec = ReportSpec {
        grid: grids[rng.below(grids.len())],
        category: category.code.clone(),
        department: category.department.clone(),
        reporter_id: reporter,
        reporter_group: None,
        duplicate_of: duplicate.then_some(last),
    };
    let h = History::reported(&spec, at);
    if duplicate {
        return h;
    }
    match rng.below(100) {
        0..=3 => return h.rejected(at + HOUR),
        4..=5 => return h.withdrawn(at + HOUR / 2),
        _ => {}
    }
    let accepted = at + HOUR;
    let limit = (4 + rng.below(40) as u64) * HOUR;
    let mut deadline = accepted + limit;
    let mut h = h
        .accepted(accepted, Some(deadline))
        .dispatched(accepted + HOUR / 2, category.department.as_str());
    if rng.chance(0.05) {
        h = h.supervised(accepted + HOUR);
    }
    if rng.chance(0.10) {
        deadline += 24 * HOUR;
        h = h.postponed(accepted + 2 * HOUR, deadline);
    }
    if rng.chance(0.15) {
        return h;
    }
    let took = limit * (50 + rng.below(80) as u64) / 100;
    let mut t = accepted + took;
    h = h.handled(t - HOUR);
    if rng.chance(0.15) {
        h = h.reworked(t);
        t += 4 * HOUR;
        h = h.handled(t - HOUR);
    }
    h = h.closed(t, took / HOUR);
    if rng.chance(0.60) {
        h = h.rated(t + 24 * HOUR, 1 + rng.below(5) as u8);
    }
    h
}

async fn fill(db: &TestDb, target: u64) -> anyhow::Result<()> {
    let grids: Vec<GridCode> = gridclue_tests::shipped_map()
        .grids
        .iter()
        .map(|g| g.grid_code)
        .collect();
    let catalog = Catalog::load(&data_dir().join("categories.json"))?;
    let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15);
    let year_start = china("2026-01-01 00:00");
    let year_ms = 365 * 24 * HOUR;
    let (mut facts, mut clues) = (0u64, 0u64);
    let mut last = ClueId::new_random();
    let (mut events, mut states): (Vec<EventRow>, Vec<ClueRow>) = (Vec::new(), Vec::new());
    let started = Instant::now();
    while facts < target {
        let at = year_start + rng.below(year_ms as usize) as u64;
        let h = history(&mut rng, &grids, &catalog, at, last);
        last = h.clue;
        let (e, mut c) = h.rows(facts as i64);
        facts += e.len() as u64;
        clues += 1;
        events.extend(e);
        states.push(c.pop().expect("a row per fact"));
        if events.len() >= 200_000 || facts >= target {
            write_rows(&db.client, &events, &states).await;
            events.clear();
            states.clear();
            eprintln!(
                "  {facts} facts, {clues} clues written ({:.0} s)",
                started.elapsed().as_secs_f64()
            );
        }
    }
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args()?;
    let mut kept = None;
    let client = match &args.database {
        Some(database) => {
            let settings = gridclue_core::ch::ChSettings {
                url: args.clickhouse_url.clone(),
                database: database.clone(),
                user: "default".into(),
                password: Default::default(),
            };
            gridclue_core::ch::connect(&settings).await?
        }
        None => {
            let db = TestDb::create_at(&args.clickhouse_url, "indicators_bench").await;
            gridclue_sink::migrations::apply(&db.client).await?;
            eprintln!("filling {} with {} facts…", db.database, args.facts);
            fill(&db, args.facts).await?;
            db.execute("OPTIMIZE TABLE clue_events FINAL").await;
            // The latest-state table and the dashboard's projection of it as background merges
            // leave them in steady state (read with FINAL), and the trend's facts.
            db.execute("OPTIMIZE TABLE clues FINAL").await;
            // The indicators' delta tables likewise (background merges sum their rows).
            db.execute("OPTIMIZE TABLE indicator_deltas FINAL").await;
            db.execute("OPTIMIZE TABLE indicator_days FINAL").await;
            db.execute("OPTIMIZE TABLE indicator_cohorts FINAL").await;
            db.execute("OPTIMIZE TABLE dashboard_clues FINAL").await;
            db.execute("OPTIMIZE TABLE dashboard_trend_facts FINAL")
                .await;
            db.execute("OPTIMIZE TABLE status_counts FINAL").await;
            db.execute("OPTIMIZE TABLE status_deadlines FINAL").await;
            db.execute("OPTIMIZE TABLE trend_days FINAL").await;
            db.execute("OPTIMIZE TABLE open_cases FINAL").await;
            let client = db.client.clone();
            kept = Some(db);
            client
        }
    };
    let scalar = |sql: &'static str| {
        let client = client.clone();
        async move { client.query(sql).fetch_one::<u64>().await }
    };
    let facts = scalar("SELECT count() FROM clue_events").await?;
    let clues = scalar("SELECT uniqExact(clue_id) FROM clue_events").await?;
    let parts = scalar("SELECT count() FROM system.parts WHERE active AND database = currentDatabase() AND table = 'clue_events'").await?;
    let delta_rows = scalar("SELECT count() FROM indicator_deltas").await?;
    let day_rows = scalar("SELECT count() FROM indicator_days").await?;
    let status_rows = scalar("SELECT count() FROM status_counts").await?;
    let deadline_rows = scalar("SELECT count() FROM status_deadlines").await?;
    let open_rows = scalar("SELECT count() FROM open_cases").await?;

    let dir = scratch("indicators-bench");
    let path = dir.path().join("tokens.json");
    let mut f = TokenFile::default();
    let (district, _) = f.issue(TokenKind::District, None, None, "bench")?;
    f.write(&path)?;
    let state = AppState::new(
        client.clone(),
        TokenStore::open(&path)?,
        Reference::load(&data_dir())?,
        gridclue_core::calendar::Calendar::load(&data_dir().join("calendar.json"))?,
    );
    let live_deps = gridclue_dashboard_api::live::LoopDeps {
        ch: state.read.clone(),
        reference: state.reference.clone(),
        weights: state.score_weights,
        metrics: state.metrics.clone(),
        poll: Duration::from_millis(300),
    };
    let app = gridclue_dashboard_api::app(state);
    println!(
        "{facts} facts, {clues} clues, {parts} part(s); indicator_deltas {delta_rows} rows, \
         indicator_days {day_rows} rows, status_counts {status_rows} rows, status_deadlines \
         {deadline_rows} rows, open_cases {open_rows} rows; {} runs per query (after 2 warm-up \
         runs)",
        args.runs
    );
    println!("| query | p50 ms | p99 ms | max ms | rows |");
    println!("|---|---|---|---|---|");
    let street = Reference::load(&data_dir())?.streets[0].code;
    let queries: Vec<String> = if args.dashboard {
        let clue: String = client
            .query("SELECT toString(clue_id) FROM clues LIMIT 1")
            .fetch_one()
            .await?;
        [
            "/v1/breakdown?from=2026-01-01&to=2027-01-01&by=street",
            "/v1/breakdown?from=2026-06-01&to=2026-07-01&by=category",
            "/v1/breakdown?from=2026-06-01&to=2026-07-01&by=grid",
            "/v1/trend?from=2026-06-01&to=2026-07-01&bucket=day",
            "/v1/trend?from=2026-01-01&to=2027-01-01&bucket=month",
            "/v1/trend?from=2026-06-01&to=2026-06-08&bucket=hour",
            "/v1/rankings?from=2026-06-01&to=2026-07-01&by=street",
            "/v1/rankings?from=2026-01-01&to=2027-01-01&by=department",
            "/v1/lists/overdue?limit=50",
            "/v1/lists/due_soon?limit=50",
            "/v1/lists/stale?limit=50",
            "/v1/lists/newest?limit=50",
            "/v1/heatmap?from=2026-06-01&to=2026-07-01",
        ]
        .into_iter()
        .map(str::to_owned)
        .chain([
            format!("/v1/lists/overdue?limit=50&street={street}"),
            format!(
                "/v1/breakdown?from=2026-06-01&to=2026-07-01&by=grid&street={street}&format=csv"
            ),
            format!("/v1/clues/{clue}/timeline"),
        ])
        .filter(|q| !args.lists_only || q.starts_with("/v1/lists/"))
        .collect()
    } else {
        [
            "from=2026-01-01&to=2027-01-01&by=street",
            "from=2026-01-01&to=2027-01-01&by=department",
            "from=2026-01-01&to=2027-01-01&by=community",
            "from=2026-06-01&to=2026-07-01&by=street",
            "from=2026-06-01&to=2026-07-01&by=category&as_of=2026-06-20T12:00:00%2B08:00",
            "from=2026-01-01&to=2027-01-01&by=category&as_of=2026-07-01T09:30:00%2B08:00",
        ]
        .into_iter()
        .map(|q| format!("/v1/indicators?{q}"))
        .chain([
            format!("/v1/indicators?from=2026-01-01&to=2027-01-01&by=community&street={street}"),
            "/v1/rankings?from=2026-06-01&to=2026-07-01&by=street".to_owned(),
            "/v1/rankings?from=2026-01-01&to=2027-01-01&by=department".to_owned(),
        ])
        .collect()
    };
    for query in &queries {
        let mut times = Vec::with_capacity(args.runs);
        let mut rows = 0;
        let mut refused = None;
        for run in 0..args.runs + 2 {
            let req = Request::get(query.as_str())
                .header(header::AUTHORIZATION, format!("Bearer {district}"))
                .body(Body::empty())?;
            let t = Instant::now();
            let resp = app.clone().oneshot(req).await?;
            let status = resp.status();
            let body = axum::body::to_bytes(resp.into_body(), 64 << 20).await?;
            let elapsed = t.elapsed();
            if status == StatusCode::SERVICE_UNAVAILABLE {
                // Over the dashboard's max_execution_time: report it and go on.
                refused = Some(elapsed);
                break;
            }
            anyhow::ensure!(status == StatusCode::OK, "{query}: {status}");
            rows = match serde_json::from_slice::<serde_json::Value>(&body) {
                Ok(answer) if answer["facts"].is_array() => {
                    answer["facts"].as_array().map_or(0, Vec::len)
                }
                Ok(answer) => answer["rows"].as_array().map_or(0, Vec::len),
                // CSV: its lines after the header.
                Err(_) => body
                    .iter()
                    .filter(|b| **b == b'\n')
                    .count()
                    .saturating_sub(1),
            };
            if run >= 2 {
                times.push(elapsed);
            }
        }
        let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1000.0);
        if let Some(after) = refused {
            println!(
                "| `{query}` | 503 after {} (over max_execution_time) | – | – | – |",
                ms(after)
            );
            continue;
        }
        times.sort();
        println!(
            "| `{query}` | {} | {} | {} | {rows} |",
            ms(percentile(&times, 0.5)),
            ms(percentile(&times, 0.99)),
            ms(*times.last().expect("runs")),
        );
    }
    if args.dashboard {
        let mut times = Vec::with_capacity(args.runs);
        for run in 0..args.runs + 2 {
            let t = Instant::now();
            gridclue_dashboard_api::live::snapshot(&live_deps, gridclue_core::wire::now_ms())
                .await?;
            if run >= 2 {
                times.push(t.elapsed());
            }
        }
        times.sort();
        let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1000.0);
        println!(
            "| live numbers' snapshot (`/v1/stream` recomputation: 2 queries) | {} | {} | {} | 13 |",
            ms(percentile(&times, 0.5)),
            ms(percentile(&times, 0.99)),
            ms(*times.last().expect("runs")),
        );
    }
    if let Some(db) = kept {
        if args.keep_db {
            eprintln!("keeping {}", db.database);
            std::env::set_var("GRIDCLUE_TEST_KEEP_DB", "1");
        }
    }
    Ok(())
}
