//! `GET /v1/stream`: live numbers over Server-Sent Events, from ONE query loop per process.
//!
//! The loop ([`spawn`], started by `run`) polls ClickHouse every `stream_poll_ms` with a probe
//! that reads only metadata (`system.parts` of `clue_events` and `clues`: rows and block
//! numbers, which any insert changes) and recomputes the numbers only when the probe changed or
//! when time alone changed them: the earliest deadline of an open case passed (overdue counts
//! and rates move) or the month ended. A snapshot whose numbers differ from the last one is
//! published on a `watch` channel; every subscriber narrows that one snapshot to its scope and
//! sends an event when *its* numbers changed. So N streams cost one loop, and the loop's
//! queries are counted (`gridclue_dashboard_stream_queries_total`) to show it.
//!
//! The numbers: the current China month's reports and cases (the running status counts, as in
//! `/v1/breakdown`), open and overdue cases now, and the month's closure, on-time and rework
//! rates and score from `crate::indicators` (the one definition), by street and for the district.
//! The same reading sets the Prometheus case gauges ([`crate::case_gauges`]): no other loop
//! polls ClickHouse for them.
//!
//! The same loop carries the hotspot alerts open now (`alerts` events): the probe also reads
//! `hotspot_alerts`' parts, and when they changed one query reads every open alert (latest
//! version not closed) for all subscribers; each narrows them to its street, as `/v1/alerts`
//! does, and gets an event when its open alerts (ids, versions, states) changed. The page then
//! reads `/v1/alerts` for the details.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use chrono::{Datelike, Months, NaiveDate};
use futures::Stream;
use gridclue_core::codes::{empty_as_none, or_empty, CategoryCode, GridCode, StreetCode};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::case_gauges::{self, CaseCounts, StreetCases};
use crate::error::ApiError;
use crate::indicators::{
    self, china_midnight_ms, china_time, Reader, ScoreWeights, CHINA_OFFSET_SECS,
};
use crate::metrics::DashboardMetrics;
use crate::params::OPEN_STATUSES_SQL;
use crate::reference::Reference;

/// How the stream is bounded and how often the loop polls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamSettings {
    pub poll: Duration,
    pub max_per_token: usize,
    pub max_total: usize,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            poll: Duration::from_millis(300),
            max_per_token: 8,
            max_total: 2_000,
        }
    }
}

/// The key numbers of one street or of the district.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Kpis {
    pub reports: u64,
    pub cases: u64,
    pub open: u64,
    pub overdue: u64,
    pub closure_rate: Option<f64>,
    pub on_time_rate: Option<f64>,
    pub rework_rate: Option<f64>,
    pub score: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StreetKpis {
    pub street: StreetCode,
    pub name: String,
    #[serde(flatten)]
    pub kpis: Kpis,
}

/// What the loop computed, for everyone.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    pub as_of_ms: u64,
    pub period: PeriodDates,
    pub district: Kpis,
    pub streets: Vec<StreetKpis>,
    /// Open and overdue cases of every street of the map and every street seen (the case
    /// gauges; not streamed).
    pub cases: BTreeMap<StreetCode, CaseCounts>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct PeriodDates {
    pub from: NaiveDate,
    pub to: NaiveDate,
}

/// The China calendar month holding `now_ms`.
pub fn month_of(now_ms: u64) -> PeriodDates {
    let local = chrono::DateTime::from_timestamp_millis(
        now_ms as i64 + i64::from(CHINA_OFFSET_SECS) * 1000,
    )
    .expect("a representable instant")
    .date_naive();
    let from = local.with_day(1).expect("day 1 exists");
    PeriodDates {
        from,
        to: from + Months::new(1),
    }
}

/// Per street: the month's reports and cases, open and overdue clues now, the same of cases
/// only (the gauges), and the earliest deadline of an open clue not yet passed (0: none). From
/// the running status counts (as `/v1/breakdown`): every report month's summed states at the
/// street grain, minus the open clues whose deadline is still ahead (whose earliest deadline
/// with a clue is the next one). Bound: the month's first day ×2, now.
fn state_sql() -> String {
    let open = OPEN_STATUSES_SQL;
    format!(
        "SELECT street, toInt64(sum(reports)) AS reports, toInt64(sum(cases)) AS cases, \
                toInt64(sum(open)) AS open, toInt64(sum(overdue)) AS overdue, \
                toInt64(sum(open_cases)) AS open_cases, \
                toInt64(sum(overdue_cases)) AS overdue_cases, \
                max(next_deadline) AS next_deadline_ms \
         FROM ( \
             SELECT street_code AS street, \
                    sumIf(clues, cohort_day = ?) AS reports, \
                    sumIf(clues, is_case = 1 AND cohort_day = ?) AS cases, \
                    sumIf(clues, status IN {open}) AS open, \
                    sumIf(dated, status IN {open}) AS overdue, \
                    sumIf(clues, is_case = 1 AND status IN {open}) AS open_cases, \
                    sumIf(dated, is_case = 1 AND status IN {open}) AS overdue_cases, \
                    toUInt64(0) AS next_deadline \
             FROM status_counts \
             WHERE grain = 'street_month' \
             GROUP BY street \
             UNION ALL \
             SELECT street, toInt64(0), toInt64(0), toInt64(0), -sum(n), toInt64(0), \
                    -sum(n_cases), minIf(due, n > 0) \
             FROM ( \
                 SELECT street_code AS street, deadline_ms AS due, sum(clues) AS n, \
                        sumIf(clues, is_case = 1) AS n_cases \
                 FROM status_deadlines \
                 WHERE deadline_ms >= ? AND status IN {open} \
                 GROUP BY street, due) \
             GROUP BY street) \
         GROUP BY street",
    )
}

/// Metadata only: the first three change with every insert into the facts or the clue states,
/// the last three with every insert into the alerts.
const PROBE_SQL: &str = "\
SELECT toUInt64(sumIf(rows, table != 'hotspot_alerts')) AS fact_rows, \
       toUInt64(sumIf(max_block_number, table != 'hotspot_alerts')) AS fact_blocks, \
       toUInt64(countIf(table != 'hotspot_alerts')) AS fact_parts, \
       toUInt64(sumIf(rows, table = 'hotspot_alerts')) AS alert_rows, \
       toUInt64(sumIf(max_block_number, table = 'hotspot_alerts')) AS alert_blocks, \
       toUInt64(countIf(table = 'hotspot_alerts')) AS alert_parts \
FROM system.parts \
WHERE database = currentDatabase() AND table IN ('clue_events', 'clues', 'hotspot_alerts') AND active";

#[derive(Clone, Debug, PartialEq, Eq, clickhouse::Row, Deserialize)]
struct Probe {
    fact_rows: u64,
    fact_blocks: u64,
    fact_parts: u64,
    alert_rows: u64,
    alert_blocks: u64,
    alert_parts: u64,
}

impl Probe {
    fn numbers(&self) -> (u64, u64, u64) {
        (self.fact_rows, self.fact_blocks, self.fact_parts)
    }

    fn alerts(&self) -> (u64, u64, u64) {
        (self.alert_rows, self.alert_blocks, self.alert_parts)
    }
}

/// At most this many open alerts are streamed (the newest first).
pub const MAX_STREAMED_ALERTS: u64 = 1_000;

/// Every open alert in its latest version (one row per alert whatever was stored twice), newest
/// first. Aliases differ from column names: ClickHouse resolves an alias before a column.
const ACTIVE_ALERTS_SQL: &str = "\
SELECT toString(alert_id) AS id, max(version) AS latest_version, \
       argMax(state, version) AS latest_state, argMax(street_code, version) AS street, \
       argMax(category, version) AS cat, argMax(grid_code, version) AS grid, \
       argMax(grids, version) AS place_grids, argMax(observed, version) AS obs, \
       max(at_ms) AS updated_at_ms \
FROM hotspot_alerts \
GROUP BY alert_id \
HAVING latest_state != 'closed' \
ORDER BY updated_at_ms DESC, id \
LIMIT ?";

#[derive(Clone, Debug, PartialEq, clickhouse::Row, Deserialize)]
struct ActiveRow {
    id: String,
    latest_version: u32,
    latest_state: String,
    #[serde(with = "empty_as_none::lenient")]
    street: Option<StreetCode>,
    #[serde(with = "empty_as_none::lenient")]
    cat: Option<CategoryCode>,
    #[serde(with = "empty_as_none::lenient")]
    grid: Option<GridCode>,
    #[serde(deserialize_with = "empty_as_none::lenient::each")]
    place_grids: Vec<GridCode>,
    obs: u32,
    updated_at_ms: u64,
}

/// An alert open now (new or ongoing), as the stream carries it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ActiveAlert {
    pub alert_id: String,
    pub version: u32,
    pub state: String,
    #[serde(with = "empty_as_none")]
    pub street_code: Option<StreetCode>,
    #[serde(with = "empty_as_none")]
    pub category: Option<CategoryCode>,
    #[serde(with = "empty_as_none")]
    pub grid_code: Option<GridCode>,
    pub grids: Vec<GridCode>,
    pub observed: u32,
    pub updated_at_ms: u64,
}

/// The open alerts the loop read, for everyone.
#[derive(Clone, Debug, PartialEq)]
pub struct AlertsNow {
    pub as_of_ms: u64,
    pub active: Vec<ActiveAlert>,
}

/// Reads every open alert (one query).
pub async fn active_alerts(deps: &LoopDeps, now_ms: u64) -> clickhouse::error::Result<AlertsNow> {
    deps.metrics.stream_queries.inc();
    let rows = deps
        .ch
        .query(ACTIVE_ALERTS_SQL)
        .bind(MAX_STREAMED_ALERTS)
        .fetch_all::<ActiveRow>()
        .await?;
    Ok(AlertsNow {
        as_of_ms: now_ms,
        active: rows
            .into_iter()
            .map(|r| ActiveAlert {
                alert_id: r.id,
                version: r.latest_version,
                state: r.latest_state,
                street_code: r.street,
                category: r.cat,
                grid_code: r.grid,
                grids: r.place_grids,
                observed: r.obs,
                updated_at_ms: r.updated_at_ms,
            })
            .collect(),
    })
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct StreetState {
    street: Option<StreetCode>,
    reports: u64,
    cases: u64,
    open: u64,
    overdue: u64,
    open_cases: u64,
    overdue_cases: u64,
    next_deadline_ms: u64,
}

/// A row of [`state_sql`]: sums of signed rows (the running status counts), each at least 0
/// when they are exact; a negative one is served as 0 ([`indicators::non_negative`]).
#[derive(Clone, Debug, PartialEq, Eq, clickhouse::Row, Deserialize)]
struct SignedStreetState {
    #[serde(with = "empty_as_none::lenient")]
    street: Option<StreetCode>,
    reports: i64,
    cases: i64,
    open: i64,
    overdue: i64,
    open_cases: i64,
    overdue_cases: i64,
    next_deadline_ms: u64,
}

impl SignedStreetState {
    fn non_negative(self) -> StreetState {
        let street = or_empty(&self.street);
        let n = |what: &'static str, v: i64| indicators::non_negative(what, street, v);
        StreetState {
            reports: n("reports", self.reports),
            cases: n("cases", self.cases),
            open: n("open", self.open),
            overdue: n("overdue", self.overdue),
            open_cases: n("open_cases", self.open_cases),
            overdue_cases: n("overdue_cases", self.overdue_cases),
            next_deadline_ms: self.next_deadline_ms,
            street: self.street,
        }
    }
}

/// What the loop reads with.
pub struct LoopDeps {
    pub ch: clickhouse::Client,
    pub reference: Arc<Reference>,
    pub weights: ScoreWeights,
    pub metrics: DashboardMetrics,
    pub poll: Duration,
}

/// Computes a snapshot at `now_ms` (two queries) and the instant after which time alone changes
/// it.
pub async fn snapshot(deps: &LoopDeps, now_ms: u64) -> clickhouse::error::Result<(Snapshot, u64)> {
    let period = month_of(now_ms);
    let to_ms = china_midnight_ms(period.to);
    let month_day = indicators::cohort_day(china_midnight_ms(period.from));
    let plan = indicators::plan(
        &Reader::District,
        indicators::Params {
            from: period.from,
            to: period.to,
            as_of_ms: Some(now_ms),
            by: indicators::By::Street,
            street: None,
        },
        now_ms,
    )
    .expect("the district reads every street");
    let states = deps
        .ch
        .query(&state_sql())
        .bind(month_day)
        .bind(month_day)
        .bind(now_ms)
        .fetch_all::<SignedStreetState>();
    // Both at once: the numbers are fresher by the shorter of the two.
    deps.metrics.stream_queries.inc_by(2);
    let (states, counts) = tokio::try_join!(states, indicators::query(&deps.ch, &plan))?;
    let states: Vec<StreetState> = states
        .into_iter()
        .map(SignedStreetState::non_negative)
        .collect();
    let answer = indicators::assemble(&plan, counts, &deps.reference, &deps.weights);

    let state_of: HashMap<StreetCode, &StreetState> =
        states.iter().filter_map(|s| Some((s.street?, s))).collect();
    let kpis = |row: &indicators::Indicators, s: Option<&StreetState>| Kpis {
        reports: s.map_or(0, |s| s.reports),
        cases: s.map_or(0, |s| s.cases),
        open: s.map_or(0, |s| s.open),
        overdue: s.map_or(0, |s| s.overdue),
        closure_rate: row.closure_rate,
        on_time_rate: row.on_time_rate,
        rework_rate: row.rework_rate,
        score: row.score,
    };
    // A row keyed by no street code (none is expected: cases are inside the district) counts in
    // the district's numbers but lists no street.
    let mut streets: Vec<StreetKpis> = answer
        .rows
        .iter()
        .filter_map(|row| {
            let street = StreetCode::parse(&row.key).ok()?;
            Some(StreetKpis {
                street,
                name: row.name.clone(),
                kpis: kpis(row, state_of.get(&street).copied()),
            })
        })
        .collect();
    // Streets with open cases but no case in the month's cohort.
    for (&street, s) in &state_of {
        if !streets.iter().any(|k| k.street == street) {
            let zero = indicators::Indicators::from_counts(
                &indicators::Counts::default(),
                String::new(),
                &deps.weights,
            );
            streets.push(StreetKpis {
                street,
                name: deps
                    .reference
                    .street_name(&street)
                    .map_or_else(|| street.to_string(), str::to_owned),
                kpis: kpis(&zero, Some(s)),
            });
        }
    }
    streets.sort_by_key(|s| s.street);
    let mut district = kpis(&answer.total, None);
    for s in &states {
        district.reports += s.reports;
        district.cases += s.cases;
        district.open += s.open;
        district.overdue += s.overdue;
    }
    let next_deadline = states
        .iter()
        .map(|s| s.next_deadline_ms)
        .filter(|d| *d > 0)
        .min()
        .unwrap_or(u64::MAX);
    let changes_after = next_deadline.min(to_ms - 1);
    let cases = case_gauges::by_street(
        deps.reference.streets.iter().map(|s| s.code),
        states.iter().map(|s| StreetCases {
            street_code: s.street,
            open: s.open_cases,
            overdue: s.overdue_cases,
        }),
    );
    Ok((
        Snapshot {
            as_of_ms: now_ms,
            period,
            district,
            streets,
            cases,
        },
        changes_after,
    ))
}

/// The numbers a snapshot holds, without the instant (what "changed" compares).
fn same_numbers(a: &Snapshot, b: &Snapshot) -> bool {
    a.period == b.period && a.district == b.district && a.streets == b.streets
}

/// What the loop publishes: the latest numbers and open alerts (each none before its first
/// computation).
#[derive(Clone, Debug, Default)]
struct Published {
    numbers: Option<Arc<Snapshot>>,
    alerts: Option<Arc<AlertsNow>>,
}

/// The shared channel, the sender waiting for [`spawn`], and the stream slots.
#[derive(Clone)]
pub struct Live {
    rx: watch::Receiver<Published>,
    tx: Arc<Mutex<Option<watch::Sender<Published>>>>,
    slots: Arc<Mutex<Slots>>,
    pub settings: StreamSettings,
}

#[derive(Default)]
struct Slots {
    by_token: HashMap<String, usize>,
    total: usize,
}

impl Live {
    pub fn new(settings: StreamSettings) -> Self {
        let (tx, rx) = watch::channel(Published::default());
        Self {
            rx,
            tx: Arc::new(Mutex::new(Some(tx))),
            slots: Arc::default(),
            settings,
        }
    }

    /// Takes one of the token's stream slots (429 when it holds its maximum, or the service
    /// does); the slot is given back when the guard drops (the stream ends or the client left).
    fn acquire(&self, token_id: &str, metrics: &DashboardMetrics) -> Result<SlotGuard, ApiError> {
        let mut slots = self.slots.lock().expect("slots lock");
        let held = slots.by_token.get(token_id).copied().unwrap_or(0);
        if held >= self.settings.max_per_token || slots.total >= self.settings.max_total {
            return Err(ApiError::TooManyStreams {
                limit: if held >= self.settings.max_per_token {
                    self.settings.max_per_token
                } else {
                    self.settings.max_total
                },
            });
        }
        *slots.by_token.entry(token_id.to_owned()).or_default() += 1;
        slots.total += 1;
        metrics.stream_subscribers.inc();
        Ok(SlotGuard {
            slots: self.slots.clone(),
            token_id: token_id.to_owned(),
            metrics: metrics.clone(),
        })
    }
}

struct SlotGuard {
    slots: Arc<Mutex<Slots>>,
    token_id: String,
    metrics: DashboardMetrics,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let mut slots = self.slots.lock().expect("slots lock");
        if let Some(n) = slots.by_token.get_mut(&self.token_id) {
            *n -= 1;
            if *n == 0 {
                slots.by_token.remove(&self.token_id);
            }
        }
        slots.total -= 1;
        self.metrics.stream_subscribers.dec();
    }
}

/// Starts the one query loop (once; later calls return `None`). It stops with `cancel`, which
/// also ends every stream (their channel closes).
pub fn spawn(
    live: &Live,
    deps: LoopDeps,
    cancel: CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    let tx = live.tx.lock().expect("sender lock").take()?;
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(deps.poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_probe: Option<Probe> = None;
        let mut last_alert_probe: Option<(u64, u64, u64)> = None;
        let mut changes_after = 0u64;
        let mut failing = false;
        let mut alerts_failing = false;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tick.tick() => {}
            }
            deps.metrics.stream_polls.inc();
            deps.metrics.stream_queries.inc();
            let probe = match deps.ch.query(PROBE_SQL).fetch_one::<Probe>().await {
                Ok(p) => p,
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "live numbers: probe failed; retrying");
                    }
                    failing = true;
                    deps.metrics.case_gauge_errors.inc();
                    continue;
                }
            };
            let now_ms = gridclue_core::wire::now_ms();
            if last_alert_probe != Some(probe.alerts()) {
                match active_alerts(&deps, now_ms).await {
                    Ok(alerts) => {
                        if alerts_failing {
                            tracing::info!("live alerts: ClickHouse answers again");
                        }
                        alerts_failing = false;
                        last_alert_probe = Some(probe.alerts());
                        let changed = tx
                            .borrow()
                            .alerts
                            .as_ref()
                            .is_none_or(|old| old.active != alerts.active);
                        if changed {
                            tx.send_modify(|p| p.alerts = Some(Arc::new(alerts)));
                        }
                    }
                    Err(e) => {
                        if !alerts_failing {
                            tracing::warn!(error = %e, "live alerts: query failed; retrying");
                        }
                        alerts_failing = true;
                    }
                }
            }
            if last_probe.as_ref().map(Probe::numbers) == Some(probe.numbers())
                && now_ms <= changes_after
            {
                continue;
            }
            match snapshot(&deps, now_ms).await {
                Ok((snapshot, after)) => {
                    if failing {
                        tracing::info!("live numbers: ClickHouse answers again");
                    }
                    failing = false;
                    last_probe = Some(probe);
                    changes_after = after;
                    case_gauges::set(&deps.metrics, &snapshot.cases);
                    let changed = tx
                        .borrow()
                        .numbers
                        .as_ref()
                        .is_none_or(|old| !same_numbers(old, &snapshot));
                    if changed {
                        tx.send_modify(|p| p.numbers = Some(Arc::new(snapshot)));
                    }
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "live numbers: query failed; retrying");
                    }
                    failing = true;
                    deps.metrics.case_gauge_errors.inc();
                }
            }
        }
        tracing::info!("live numbers loop stopped");
    }))
}

/// One subscriber's event: the snapshot narrowed to its scope.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Numbers {
    pub as_of: String,
    pub as_of_ms: u64,
    pub period: PeriodDates,
    pub scope: crate::summary::Scope,
    pub kpis: Kpis,
    pub by_street: Vec<StreetKpis>,
}

pub fn view(snapshot: &Snapshot, reader: &Reader) -> Numbers {
    let (scope, kpis, by_street) = match reader {
        Reader::District => (
            crate::summary::Scope::District,
            snapshot.district.clone(),
            snapshot.streets.clone(),
        ),
        Reader::Street(own) => {
            let mine: Vec<StreetKpis> = snapshot
                .streets
                .iter()
                .filter(|s| s.street == *own)
                .cloned()
                .collect();
            (
                crate::summary::Scope::Street { street_code: *own },
                mine.first().map(|s| s.kpis.clone()).unwrap_or_default(),
                mine,
            )
        }
    };
    Numbers {
        as_of: china_time(snapshot.as_of_ms),
        as_of_ms: snapshot.as_of_ms,
        period: snapshot.period,
        scope,
        kpis,
        by_street,
    }
}

/// One subscriber's `alerts` event: the open alerts of its scope.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OpenAlerts {
    pub as_of: String,
    pub as_of_ms: u64,
    pub scope: crate::summary::Scope,
    pub active: Vec<ActiveAlert>,
}

pub fn alerts_view(alerts: &AlertsNow, reader: &Reader) -> OpenAlerts {
    let (scope, active) = match reader {
        Reader::District => (crate::summary::Scope::District, alerts.active.clone()),
        Reader::Street(own) => (
            crate::summary::Scope::Street { street_code: *own },
            alerts
                .active
                .iter()
                .filter(|a| a.street_code == Some(*own))
                .cloned()
                .collect(),
        ),
    };
    OpenAlerts {
        as_of: china_time(alerts.as_of_ms),
        as_of_ms: alerts.as_of_ms,
        scope,
        active,
    }
}

struct Subscriber {
    rx: watch::Receiver<Published>,
    reader: Reader,
    last: Option<Numbers>,
    last_alerts: Option<Vec<ActiveAlert>>,
    /// Events of one change not sent yet (numbers and alerts may change together).
    queued: VecDeque<Event>,
    first: bool,
    _slot: SlotGuard,
}

fn json_event(name: &'static str, data: &impl Serialize) -> Event {
    Event::default()
        .event(name)
        .json_data(data)
        .unwrap_or_else(|_| Event::default().comment("unserialisable event"))
}

/// The event stream of one subscriber: the current numbers and open alerts at once (when the
/// loop has computed any), then an event whenever the subscriber's numbers (`numbers`) or open
/// alerts (`alerts`) change.
pub fn subscribe(
    live: &Live,
    reader: Reader,
    token_id: &str,
    metrics: &DashboardMetrics,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let slot = live.acquire(token_id, metrics)?;
    let start = Subscriber {
        rx: live.rx.clone(),
        reader,
        last: None,
        last_alerts: None,
        queued: VecDeque::new(),
        first: true,
        _slot: slot,
    };
    let stream = futures::stream::unfold(start, |mut s| async move {
        loop {
            if let Some(event) = s.queued.pop_front() {
                return Some((Ok(event), s));
            }
            if !s.first && s.rx.changed().await.is_err() {
                return None;
            }
            s.first = false;
            let published = s.rx.borrow_and_update().clone();
            if let Some(snapshot) = published.numbers {
                let numbers = view(&snapshot, &s.reader);
                let changed = s.last.as_ref().is_none_or(|last| {
                    last.period != numbers.period
                        || last.kpis != numbers.kpis
                        || last.by_street != numbers.by_street
                });
                if changed {
                    s.queued.push_back(json_event("numbers", &numbers));
                    s.last = Some(numbers);
                }
            }
            if let Some(alerts) = published.alerts {
                let open = alerts_view(&alerts, &s.reader);
                if s.last_alerts.as_ref() != Some(&open.active) {
                    s.queued.push_back(json_event("alerts", &open));
                    s.last_alerts = Some(open.active);
                }
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(
        KeepAlive::new()
            .interval(Duration::from_secs(15))
            .text("keep-alive"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn street_code(code: &str) -> StreetCode {
        StreetCode::parse(code).unwrap()
    }

    #[test]
    fn the_month_is_the_china_calendar_month() {
        // 2026-11-30 16:30 UTC is 2026-12-01 00:30 in China.
        let at = chrono::DateTime::parse_from_rfc3339("2026-11-30T16:30:00Z")
            .unwrap()
            .timestamp_millis() as u64;
        let m = month_of(at);
        assert_eq!(
            (m.from.to_string(), m.to.to_string()),
            ("2026-12-01".into(), "2027-01-01".into())
        );
    }

    #[test]
    fn a_street_sees_its_own_street_only() {
        let k = |n| Kpis {
            reports: n,
            ..Kpis::default()
        };
        let snapshot = Snapshot {
            as_of_ms: 1,
            period: month_of(1),
            district: k(5),
            cases: BTreeMap::new(),
            streets: vec![
                StreetKpis {
                    street: street_code("310199001"),
                    name: "a".into(),
                    kpis: k(2),
                },
                StreetKpis {
                    street: street_code("310199002"),
                    name: "b".into(),
                    kpis: k(3),
                },
            ],
        };
        let v = view(&snapshot, &Reader::Street(street_code("310199002")));
        assert_eq!((v.kpis.reports, v.by_street.len()), (3, 1));
        let v = view(&snapshot, &Reader::District);
        assert_eq!((v.kpis.reports, v.by_street.len()), (5, 2));
    }

    #[test]
    fn stream_slots_are_bounded_per_token_and_given_back() {
        let live = Live::new(StreamSettings {
            max_per_token: 2,
            ..StreamSettings::default()
        });
        let m = DashboardMetrics::new();
        let a = live.acquire("tok_a", &m).unwrap();
        let _b = live.acquire("tok_a", &m).unwrap();
        assert!(matches!(
            live.acquire("tok_a", &m),
            Err(ApiError::TooManyStreams { limit: 2 })
        ));
        assert!(live.acquire("tok_b", &m).is_ok());
        drop(a);
        assert!(live.acquire("tok_a", &m).is_ok());
        assert_eq!(m.stream_subscribers.get(), 1);
    }

    #[test]
    fn every_placeholder_is_bound() {
        assert_eq!(state_sql().matches('?').count(), 3);
        assert_eq!(PROBE_SQL.matches('?').count(), 0);
        assert_eq!(ACTIVE_ALERTS_SQL.matches('?').count(), 1);
    }

    #[test]
    fn a_street_streams_its_own_open_alerts_only() {
        let alert = |id: &str, street: &str| ActiveAlert {
            alert_id: id.into(),
            version: 1,
            state: "new".into(),
            street_code: Some(street_code(street)),
            category: CategoryCode::parse("garbage_pile").ok(),
            grid_code: GridCode::parse(&format!("{street}001001")).ok(),
            grids: vec![GridCode::parse(&format!("{street}001001")).unwrap()],
            observed: 3,
            updated_at_ms: 1,
        };
        let now = AlertsNow {
            as_of_ms: 1,
            active: vec![alert("a", "310199001"), alert("b", "310199002")],
        };
        let mine = alerts_view(&now, &Reader::Street(street_code("310199002")));
        assert_eq!(mine.active, vec![alert("b", "310199002")]);
        assert_eq!(alerts_view(&now, &Reader::District).active.len(), 2);
    }
}
