//! `gridclue-load open`: open-loop load at a fixed rate, as an operator's traffic arrives.
//!
//! Why open loop: a closed-loop tool (N workers, each sending its next request when the last one
//! answered) slows down exactly when the service does, so the queueing delay a real rider would
//! see never enters its numbers (coordinated omission). Here request `i` is due at
//! `start + i / rate` whatever happened before, and its latency is measured from that due time:
//! a request sent late — because every connection was busy or the tool itself fell behind —
//! still counts from its schedule, as wrk2 does.
//!
//! The mix ([`Mix`]): reports from many reporter tokens, batch uploads of offline queues, Open311
//! posts, staff transitions (the district token accepting clues this run reported) and dashboard
//! reads; SSE subscribers hold `/v1/stream` open for the whole run. Freshness is sampled by probe
//! reports: from the probe's 202 until `GET /v1/clues/{id}` (the sink's projection in ClickHouse)
//! shows it. `--find-max` raises the rate until the p99 latency or the freshness p99 passes its
//! bound ([`RateSearch`]) and reports the highest rate that held.
//!
//! The pure parts — [`Schedule`], [`Mix`], [`Latencies`], [`Bounds::held`], [`RateSearch`] — are
//! unit-tested without services.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use gridclue_core::CategoryCode;
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use crate::map::{load_map, pick_category, point_in, DESCRIPTIONS};

/// Highest latency a histogram holds (µs): a minute; anything slower is recorded as a minute.
const MAX_MICROS: u64 = 60_000_000;

// --- pure parts ---------------------------------------------------------------------------------

/// When each request is due: request `i` at `i / rate` seconds after the start.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    rate: f64,
}

impl Schedule {
    pub fn new(rate: f64) -> anyhow::Result<Self> {
        anyhow::ensure!(
            rate.is_finite() && rate > 0.0,
            "the rate must be a positive number of requests per second, not {rate}"
        );
        Ok(Self { rate })
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Offset of request `i` from the start.
    pub fn due(&self, i: u64) -> Duration {
        Duration::from_secs_f64(i as f64 / self.rate)
    }

    /// How many requests fall due in `[0, duration)`.
    pub fn count_within(&self, duration: Duration) -> u64 {
        (duration.as_secs_f64() * self.rate).ceil() as u64
    }
}

/// What one request of the mix does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// `POST /v1/clues` with one of the reporter tokens.
    Report,
    /// `POST /v1/clues:batch`: a phone uploading its offline queue.
    Batch,
    /// `POST /open311/v2/requests.json`.
    Open311,
    /// `POST /v1/clues/{id}/transitions` `accept`, by the district, on a clue this run reported
    /// (a probe clue already visible).
    Transition,
    /// `GET /v1/summary` with the district token.
    Read,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Report,
        Kind::Batch,
        Kind::Open311,
        Kind::Transition,
        Kind::Read,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Report => "report",
            Kind::Batch => "batch",
            Kind::Open311 => "open311",
            Kind::Transition => "transition",
            Kind::Read => "read",
        }
    }
}

/// Weights of the request kinds, e.g. `report=70,batch=5,open311=5,transition=10,read=10`.
#[derive(Clone, Debug, PartialEq)]
pub struct Mix {
    weights: Vec<(Kind, f64)>,
    total: f64,
}

impl Mix {
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mut weights: Vec<(Kind, f64)> = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part
                .split_once('=')
                .with_context(|| format!("mix entry '{part}' is not KIND=WEIGHT"))?;
            let kind = Kind::ALL
                .into_iter()
                .find(|k| k.name() == name.trim())
                .with_context(|| {
                    format!(
                        "unknown kind '{name}' (one of report, batch, open311, transition, read)"
                    )
                })?;
            let weight: f64 = weight
                .trim()
                .parse()
                .with_context(|| format!("weight of '{name}' is not a number"))?;
            anyhow::ensure!(
                weight.is_finite() && weight >= 0.0,
                "weight of '{name}' must be ≥ 0"
            );
            anyhow::ensure!(
                !weights.iter().any(|(k, _)| *k == kind),
                "'{name}' appears twice in the mix"
            );
            weights.push((kind, weight));
        }
        let total: f64 = weights.iter().map(|(_, w)| w).sum();
        anyhow::ensure!(total > 0.0, "the mix has no positive weight");
        Ok(Self { weights, total })
    }

    /// The kind a uniform draw `u` in `[0, 1)` lands on.
    pub fn pick(&self, u: f64) -> Kind {
        let mut x = u * self.total;
        for &(kind, w) in &self.weights {
            if x < w {
                return kind;
            }
            x -= w;
        }
        // u ≈ 1 after rounding: the last kind with a weight.
        self.weights
            .iter()
            .rev()
            .find(|(_, w)| *w > 0.0)
            .map(|(k, _)| *k)
            .expect("a mix has a positive weight")
    }

    pub fn weight(&self, kind: Kind) -> f64 {
        self.weights
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or(0.0, |(_, w)| *w)
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid histogram bounds")
}

fn micros(d: Duration) -> u64 {
    (d.as_micros() as u64).clamp(1, MAX_MICROS)
}

/// Latencies of one run. `latency` counts from the scheduled time (what a client arriving on
/// schedule waits: queueing for a connection and in the tool included); `service` counts from the
/// actual send (what a closed-loop tool would report), kept beside it to show the difference.
pub struct Latencies {
    pub latency: BTreeMap<Kind, Histogram<u64>>,
    pub all: Histogram<u64>,
    pub service: Histogram<u64>,
}

impl Default for Latencies {
    fn default() -> Self {
        Self {
            latency: BTreeMap::new(),
            all: histogram(),
            service: histogram(),
        }
    }
}

impl Latencies {
    /// One answered (or failed) request: due at `scheduled`, sent at `sent`, answered at `done`.
    pub fn record(&mut self, kind: Kind, scheduled: Instant, sent: Instant, done: Instant) {
        let from_schedule = micros(done.saturating_duration_since(scheduled));
        self.latency
            .entry(kind)
            .or_insert_with(histogram)
            .saturating_record(from_schedule);
        self.all.saturating_record(from_schedule);
        self.service
            .saturating_record(micros(done.saturating_duration_since(sent)));
    }
}

/// Percentiles of a histogram of µs, in ms.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Self {
            count: h.len(),
            p50_ms: ms(0.5),
            p90_ms: ms(0.9),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            max_ms: h.max() as f64 / 1000.0,
        }
    }
}

/// What a rate must meet to have held.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Bounds {
    /// p99 request latency from the scheduled time.
    pub p99_ms: f64,
    /// p99 freshness (202 → visible in the clue read).
    pub freshness_p99_ms: f64,
    /// Share of requests that may fail (errors, timeouts, 429s, 5xx).
    pub max_error_share: f64,
}

impl Bounds {
    /// Whether a run held: every request due was answered, few failed, p99 latency and freshness
    /// within bounds, and at least one probe was seen (no freshness figure is no pass).
    pub fn held(&self, run: &RunReport) -> Result<(), String> {
        if run.completed < run.scheduled {
            return Err(format!(
                "{} of {} requests unanswered at the end",
                run.scheduled - run.completed,
                run.scheduled
            ));
        }
        let failed = run.errors + run.throttled;
        if failed as f64 > self.max_error_share * run.scheduled.max(1) as f64 {
            return Err(format!("{failed} of {} requests failed", run.scheduled));
        }
        if run.latency.p99_ms > self.p99_ms {
            return Err(format!(
                "p99 latency {:.1} ms > {:.1} ms",
                run.latency.p99_ms, self.p99_ms
            ));
        }
        if run.freshness.probes == 0 {
            // `--probe-every-ms 0` (e.g. against the ingest ceiling): freshness is not judged.
            return Ok(());
        }
        if run.freshness.visible == 0 {
            return Err("no probe clue became visible".into());
        }
        if run.freshness.timed_out > 0 {
            return Err(format!(
                "{} probe clues never became visible",
                run.freshness.timed_out
            ));
        }
        if run.freshness.ms.p99_ms > self.freshness_p99_ms {
            return Err(format!(
                "freshness p99 {:.0} ms > {:.0} ms",
                run.freshness.ms.p99_ms, self.freshness_p99_ms
            ));
        }
        Ok(())
    }
}

/// The search of `--find-max`: grow the rate geometrically until a step fails (or shrink it
/// until one holds), then bisect between the highest rate that held and the lowest that failed
/// until they are within `precision` of each other.
#[derive(Clone, Debug)]
pub struct RateSearch {
    growth: f64,
    precision: f64,
    ceiling: f64,
    floor: f64,
    held: Option<f64>,
    failed: Option<f64>,
    next: Option<f64>,
}

impl RateSearch {
    /// `growth` > 1 (e.g. 1.5), `precision` e.g. 0.05 for 5 %, rates limited to `[floor, ceiling]`.
    pub fn new(start: f64, growth: f64, precision: f64, floor: f64, ceiling: f64) -> Self {
        assert!(growth > 1.0 && precision > 0.0 && floor > 0.0 && ceiling >= floor);
        Self {
            growth,
            precision,
            ceiling,
            floor,
            held: None,
            failed: None,
            next: Some(start.clamp(floor, ceiling)),
        }
    }

    /// The next rate to try, or `None` when the search is over.
    pub fn next_rate(&self) -> Option<f64> {
        self.next
    }

    /// The highest rate that held so far.
    pub fn best(&self) -> Option<f64> {
        self.held
    }

    pub fn record(&mut self, rate: f64, held: bool) {
        if held {
            self.held = Some(self.held.map_or(rate, |h| h.max(rate)));
        } else {
            self.failed = Some(self.failed.map_or(rate, |f| f.min(rate)));
        }
        self.next = match (self.held, self.failed) {
            (Some(h), None) if h >= self.ceiling => None,
            (Some(h), None) => Some((h * self.growth).min(self.ceiling)),
            (None, Some(f)) if f <= self.floor => None,
            (None, Some(f)) => Some((f / self.growth).max(self.floor)),
            (Some(h), Some(f)) if f <= h * (1.0 + self.precision) => None,
            (Some(h), Some(f)) => Some((h + f) / 2.0),
            (None, None) => unreachable!("a rate was just recorded"),
        };
    }
}

// --- the runner ---------------------------------------------------------------------------------

#[derive(clap::Args, Clone)]
pub struct OpenArgs {
    #[arg(
        long,
        env = "GRIDCLUE_INGEST_URL",
        default_value = "http://127.0.0.1:7401"
    )]
    pub ingest_url: String,
    #[arg(
        long,
        env = "GRIDCLUE_DASHBOARD_URL",
        default_value = "http://127.0.0.1:7402"
    )]
    pub dashboard_url: String,
    /// Used when no reporter tokens can be issued (no district token) and as the first of them.
    #[arg(long, env = "GRIDCLUE_DEMO_REPORTER_TOKEN")]
    pub reporter_token: String,
    /// Issues the reporter tokens and acts as staff (transitions) and reader (summary, stream).
    #[arg(long, env = "GRIDCLUE_DEMO_DISTRICT_TOKEN")]
    pub district_token: String,
    /// Requests per second (of the whole mix; a batch request carries `--batch-size` clues).
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Seconds of load (per step with `--find-max`).
    #[arg(long, default_value_t = 30.0)]
    pub duration: f64,
    /// Most requests in flight at once (connections); a request due while all are busy waits,
    /// and its wait counts in its latency.
    #[arg(long, default_value_t = 256)]
    pub connections: usize,
    /// How many reporter tokens the reports rotate through (issued once with the district token
    /// and kept in `--reporter-tokens-file`); per-token rate limits then apply to rate/reporters.
    #[arg(long, default_value_t = 50)]
    pub reporters: usize,
    #[arg(long, default_value = "var/load-reporter-tokens.json")]
    pub reporter_tokens_file: PathBuf,
    /// Request mix as KIND=WEIGHT (kinds: report, batch, open311, transition, read).
    #[arg(
        long,
        default_value = "report=70,batch=5,open311=5,transition=10,read=10"
    )]
    pub mix: String,
    #[arg(long, default_value_t = 20)]
    pub batch_size: usize,
    /// Dashboard `/v1/stream` subscribers held open for the run.
    #[arg(long, default_value_t = 4)]
    pub sse: usize,
    /// A probe clue (freshness sample) every this many ms (0: none, freshness not judged).
    #[arg(long, default_value_t = 200)]
    pub probe_every_ms: u64,
    /// How often a probe polls its clue's read at first (the freshness figure's resolution;
    /// a probe waiting longer polls every tenth of its wait).
    #[arg(long, default_value_t = 20)]
    pub probe_poll_ms: u64,
    /// A probe not visible after this many seconds counts as never visible.
    #[arg(long, default_value_t = 30.0)]
    pub probe_timeout: f64,
    #[arg(long, default_value = "data/district/grids.geojson")]
    pub map: String,
    #[arg(long, default_value_t = 2026)]
    pub seed: u64,
    /// Print the report (or the search) as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Append every clue that got its 202 (or `accepted`/201) to this file: its id and the
    /// acknowledgement's Unix time in ms, tab-separated.
    #[arg(long)]
    pub acked_file: Option<PathBuf>,
    /// Raise the rate from `--rate` until a bound fails; report the highest rate that held.
    #[arg(long)]
    pub find_max: bool,
    /// Bound on p99 latency (ms, from the scheduled time) for `--find-max`.
    #[arg(long, default_value_t = 1000.0)]
    pub max_p99_ms: f64,
    /// Bound on p99 freshness (ms) for `--find-max`.
    #[arg(long, default_value_t = 1000.0)]
    pub max_freshness_p99_ms: f64,
    /// Share of requests that may fail in a step that holds.
    #[arg(long, default_value_t = 0.001)]
    pub max_error_share: f64,
    /// Highest rate `--find-max` tries.
    #[arg(long, default_value_t = 100_000.0)]
    pub max_rate: f64,
    /// `--find-max` stops when the highest held and lowest failed rates are this close.
    #[arg(long, default_value_t = 0.1)]
    pub precision: f64,
}

/// One run's figures (one step of `--find-max`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct RunReport {
    pub target_rate: f64,
    pub duration_s: f64,
    pub scheduled: u64,
    pub completed: u64,
    pub ok: u64,
    pub errors: u64,
    pub throttled: u64,
    pub achieved_rps: f64,
    /// Clues that got their 202 (reports, batch items accepted, Open311 201s).
    pub clues_acked: u64,
    pub clues_per_s: f64,
    /// Latency from the scheduled time, all kinds.
    pub latency: Percentiles,
    /// Latency from the actual send (what a closed-loop tool reports).
    pub service_time: Percentiles,
    pub by_kind: BTreeMap<&'static str, KindReport>,
    pub freshness: FreshnessReport,
    pub sse: SseReport,
    /// Failed requests by kind and HTTP status ("report 503"; status 0 = no answer).
    pub failures: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct KindReport {
    pub ok: u64,
    pub failed: u64,
    pub latency: Percentiles,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct FreshnessReport {
    pub probes: u64,
    pub visible: u64,
    pub timed_out: u64,
    pub poll_ms: u64,
    pub ms: Percentiles,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct SseReport {
    pub subscribers: usize,
    pub events: u64,
    pub disconnects: u64,
}

/// What the run's tasks share.
struct Shared {
    http: reqwest::Client,
    args: OpenArgs,
    reporters: Vec<String>,
    categories: Vec<CategoryCode>,
    points: Vec<(f64, f64)>,
    latencies: Mutex<Latencies>,
    /// p99 of the last second for the progress line; reset every second.
    recent: Mutex<Histogram<u64>>,
    freshness: Mutex<Histogram<u64>>,
    ok: BTreeMap<Kind, AtomicU64>,
    failed: BTreeMap<Kind, AtomicU64>,
    failures: Mutex<BTreeMap<String, u64>>,
    throttled: AtomicU64,
    completed: AtomicU64,
    clues_acked: AtomicU64,
    probes: AtomicU64,
    probes_visible: AtomicU64,
    probes_timed_out: AtomicU64,
    sse_events: AtomicU64,
    sse_disconnects: AtomicU64,
    /// Probe clues seen in the read (so the processor knows them): the transitions act on them.
    visible_clues: Mutex<Vec<String>>,
    acked: Mutex<Option<std::fs::File>>,
    run_nonce: u64,
}

impl Shared {
    fn count(map: &BTreeMap<Kind, AtomicU64>, kind: Kind) {
        map[&kind].fetch_add(1, Ordering::Relaxed);
    }

    fn acked(&self, ids: &[String]) {
        if ids.is_empty() {
            return;
        }
        self.clues_acked
            .fetch_add(ids.len() as u64, Ordering::Relaxed);
        if let Some(file) = self.acked.lock().expect("acked lock").as_mut() {
            let at_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis();
            let mut text = String::with_capacity(ids.len() * 52);
            for id in ids {
                text.push_str(&format!("{id}\t{at_ms}\n"));
            }
            // The file is the chaos check's ground truth: failing to write it fails loudly.
            file.write_all(text.as_bytes())
                .expect("writing the acked clue ids");
        }
    }

    fn clue_body(&self, rng: &mut StdRng, id: &str) -> Value {
        let (lon, lat) = self.points[rng.gen_range(0..self.points.len())];
        json!({
            "clue_id": id,
            "category": pick_category(&self.categories, rng),
            "lat": lat,
            "lon": lon,
            "description": DESCRIPTIONS[rng.gen_range(0..DESCRIPTIONS.len())],
        })
    }
}

/// One request of the mix, planned by the dispatcher.
struct Planned {
    kind: Kind,
    index: u64,
    probe: bool,
    scheduled: Instant,
}

pub async fn run(args: OpenArgs) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(args.connections)
        .build()?;
    let categories = fetch_categories(&http, &args.ingest_url).await?;
    let points = sample_points(&args.map, args.seed, 4096)?;
    let reporters = reporter_tokens(&http, &args).await?;
    let mix = Mix::parse(&args.mix)?;
    anyhow::ensure!(
        (1..=MAX_BATCH).contains(&args.batch_size),
        "--batch-size must be 1..={MAX_BATCH}"
    );
    let bounds = Bounds {
        p99_ms: args.max_p99_ms,
        freshness_p99_ms: args.max_freshness_p99_ms,
        max_error_share: args.max_error_share,
    };
    let acked = match &args.acked_file {
        Some(path) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening {}", path.display()))?,
        ),
        None => None,
    };
    let acked = Arc::new(Mutex::new(acked));
    let context = RunContext {
        http,
        args: args.clone(),
        reporters,
        categories,
        points,
        acked,
    };
    if !args.find_max {
        let report = one_run(&context, &mix, Schedule::new(args.rate)?, 0).await?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print_report(&report);
        }
        let verdict = bounds.held(&report);
        eprintln!(
            "bounds (p99 ≤ {} ms, freshness p99 ≤ {} ms): {}",
            bounds.p99_ms,
            bounds.freshness_p99_ms,
            match &verdict {
                Ok(()) => "held".to_owned(),
                Err(why) => format!("missed: {why}"),
            }
        );
        return Ok(());
    }

    let mut search = RateSearch::new(args.rate, 1.5, args.precision, 10.0, args.max_rate);
    let mut steps = Vec::new();
    let mut step = 0u64;
    while let Some(rate) = search.next_rate() {
        step += 1;
        // Without probes there is no freshness to settle (and a ceiling that cannot answer
        // reads would never settle); the previous step's requests were all answered or timed out.
        if args.probe_every_ms > 0 {
            settle(&context, &bounds).await;
        }
        eprintln!("step {step}: {rate:.0} req/s for {} s", args.duration);
        let report = one_run(&context, &mix, Schedule::new(rate)?, step).await?;
        let verdict = bounds.held(&report);
        eprintln!(
            "step {step}: {rate:.0} req/s ({:.0} clues/s) → {} (p99 {:.1} ms, freshness p50 {:.0} / p99 {:.0} ms)",
            report.clues_per_s,
            match &verdict {
                Ok(()) => "held".to_owned(),
                Err(why) => format!("missed: {why}"),
            },
            report.latency.p99_ms,
            report.freshness.ms.p50_ms,
            report.freshness.ms.p99_ms
        );
        search.record(rate, verdict.is_ok());
        steps.push(json!({"rate": rate, "held": verdict.is_ok(),
            "why": verdict.err(), "report": report}));
    }
    let best = search.best();
    let best_clues = steps
        .iter()
        .filter(|s| s["held"] == true && s["rate"].as_f64() == best)
        .filter_map(|s| s["report"]["clues_per_s"].as_f64())
        .next();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "bounds": bounds,
                "max_held_rate": best,
                "max_held_clues_per_s": best_clues,
                "steps": steps,
            }))?
        );
    } else {
        match best {
            Some(rate) => println!(
                "highest rate that held: {rate:.0} req/s ({:.0} clues/s acknowledged) with p99 ≤ {} ms and freshness p99 ≤ {} ms",
                best_clues.unwrap_or(0.0),
                bounds.p99_ms,
                bounds.freshness_p99_ms
            ),
            None => println!("no rate held (lowest tried failed)"),
        }
    }
    Ok(())
}

/// Most clues one batch request may carry (ingest's limit).
pub const MAX_BATCH: usize = 500;

/// What every run of a search shares.
struct RunContext {
    http: reqwest::Client,
    args: OpenArgs,
    reporters: Vec<String>,
    categories: Vec<CategoryCode>,
    points: Vec<(f64, f64)>,
    acked: Arc<Mutex<Option<std::fs::File>>>,
}

/// Waits (up to a minute) until a probe clue becomes visible within the freshness bound, so one
/// step's backlog does not count against the next.
async fn settle(context: &RunContext, bounds: &Bounds) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut rng = StdRng::seed_from_u64(context.args.seed ^ 0x005e_771e);
    while Instant::now() < deadline {
        let id = uuid::Uuid::new_v4().to_string();
        let (lon, lat) = context.points[rng.gen_range(0..context.points.len())];
        let token = &context.reporters[0];
        let sent = context
            .http
            .post(format!("{}/v1/clues", context.args.ingest_url))
            .bearer_auth(token)
            .json(
                &json!({"clue_id": id, "category": context.categories[0], "lat": lat, "lon": lon}),
            )
            .send()
            .await;
        if !matches!(&sent, Ok(r) if r.status().as_u16() == 202) {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        let acked = Instant::now();
        let url = format!("{}/v1/clues/{id}", context.args.ingest_url);
        while acked.elapsed() < Duration::from_secs(30) {
            let r = context.http.get(&url).bearer_auth(token).send().await;
            if matches!(&r, Ok(r) if r.status().is_success()) {
                if acked.elapsed().as_secs_f64() * 1000.0 <= bounds.freshness_p99_ms {
                    return;
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(context.args.probe_poll_ms)).await;
        }
    }
    eprintln!("warning: the pipeline did not settle within a minute; going on");
}

async fn one_run(
    context: &RunContext,
    mix: &Mix,
    schedule: Schedule,
    step: u64,
) -> anyhow::Result<RunReport> {
    let args = &context.args;
    let duration = Duration::from_secs_f64(args.duration);
    let total = schedule.count_within(duration);
    let per_kind = || {
        Kind::ALL
            .into_iter()
            .map(|k| (k, AtomicU64::new(0)))
            .collect()
    };
    let shared = Arc::new(Shared {
        http: context.http.clone(),
        args: args.clone(),
        reporters: context.reporters.clone(),
        categories: context.categories.clone(),
        points: context.points.clone(),
        latencies: Mutex::new(Latencies::default()),
        recent: Mutex::new(histogram()),
        freshness: Mutex::new(histogram()),
        ok: per_kind(),
        failed: per_kind(),
        failures: Mutex::new(BTreeMap::new()),
        throttled: AtomicU64::new(0),
        completed: AtomicU64::new(0),
        clues_acked: AtomicU64::new(0),
        probes: AtomicU64::new(0),
        probes_visible: AtomicU64::new(0),
        probes_timed_out: AtomicU64::new(0),
        sse_events: AtomicU64::new(0),
        sse_disconnects: AtomicU64::new(0),
        visible_clues: Mutex::new(Vec::new()),
        acked: Mutex::new(context.acked.lock().expect("acked lock").take()),
        run_nonce: (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64)
            ^ step,
    });
    let stop = stop_flag();
    let subscribers: Vec<_> = (0..args.sse)
        .map(|_| tokio::spawn(subscribe(shared.clone(), stop.1.clone())))
        .collect();

    let started = Instant::now() + Duration::from_millis(50);
    let progress = tokio::spawn(progress(
        shared.clone(),
        schedule,
        started,
        total,
        stop.1.clone(),
    ));
    let permits = Arc::new(Semaphore::new(args.connections));
    let mut probers = Vec::new();
    let mut rng = StdRng::seed_from_u64(args.seed ^ step.wrapping_mul(0x9e37_79b9));
    let probe_every = (args.probe_every_ms > 0).then(|| Duration::from_millis(args.probe_every_ms));
    let mut next_probe = Duration::ZERO;
    for i in 0..total {
        let due = schedule.due(i);
        let scheduled = started + due;
        tokio::time::sleep_until(scheduled.into()).await;
        let kind = mix.pick(rng.gen());
        let probe = kind == Kind::Report && probe_every.is_some() && due >= next_probe;
        if let (true, Some(every)) = (probe, probe_every) {
            next_probe = due + every;
        }
        // Waiting for a free connection is part of the request's latency (it counts from
        // `scheduled`), exactly as a client arriving on schedule would wait.
        let permit = permits.clone().acquire_owned().await?;
        let planned = Planned {
            kind,
            index: i,
            probe,
            scheduled,
        };
        let seed = rng.gen();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let sender = shared.clone();
        tokio::spawn(async move {
            let acked_probe = send(&sender, planned, seed).await;
            drop(permit);
            let _ = tx.send(acked_probe);
        });
        if probe {
            let shared = shared.clone();
            probers.push(tokio::spawn(async move {
                if let Ok(Some((id, token, acked))) = rx.await {
                    watch_probe(&shared, &id, &token, acked).await;
                }
            }));
        }
    }
    // Every request answered (each holds a permit until then).
    let _all = permits.acquire_many(args.connections as u32).await?;
    let elapsed = started.elapsed();
    for p in probers {
        p.await?;
    }
    stop.0.store(true, Ordering::Relaxed);
    progress.await?;
    for s in subscribers {
        s.abort();
    }
    eprintln!();
    *context.acked.lock().expect("acked lock") = shared.acked.lock().expect("acked lock").take();
    Ok(report_of(&shared, schedule, total, elapsed))
}

/// A stop flag for the run's background tasks.
fn stop_flag() -> (Arc<std::sync::atomic::AtomicBool>, StopFlag) {
    let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
    (flag.clone(), StopFlag(flag))
}

#[derive(Clone)]
struct StopFlag(Arc<std::sync::atomic::AtomicBool>);

impl StopFlag {
    fn stopped(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

fn report_of(shared: &Shared, schedule: Schedule, total: u64, elapsed: Duration) -> RunReport {
    let latencies = shared.latencies.lock().expect("latency lock");
    let secs = elapsed.as_secs_f64().max(1e-9);
    let completed = shared.completed.load(Ordering::Relaxed);
    let ok: u64 = shared.ok.values().map(|c| c.load(Ordering::Relaxed)).sum();
    let failed: u64 = shared
        .failed
        .values()
        .map(|c| c.load(Ordering::Relaxed))
        .sum();
    let clues_acked = shared.clues_acked.load(Ordering::Relaxed);
    let by_kind = Kind::ALL
        .into_iter()
        .filter_map(|k| {
            let h = latencies.latency.get(&k)?;
            Some((
                k.name(),
                KindReport {
                    ok: shared.ok[&k].load(Ordering::Relaxed),
                    failed: shared.failed[&k].load(Ordering::Relaxed),
                    latency: Percentiles::of(h),
                },
            ))
        })
        .collect();
    RunReport {
        target_rate: schedule.rate(),
        duration_s: secs,
        scheduled: total,
        completed,
        ok,
        errors: failed,
        throttled: shared.throttled.load(Ordering::Relaxed),
        achieved_rps: completed as f64 / secs,
        clues_acked,
        clues_per_s: clues_acked as f64 / secs,
        latency: Percentiles::of(&latencies.all),
        service_time: Percentiles::of(&latencies.service),
        by_kind,
        freshness: FreshnessReport {
            probes: shared.probes.load(Ordering::Relaxed),
            visible: shared.probes_visible.load(Ordering::Relaxed),
            timed_out: shared.probes_timed_out.load(Ordering::Relaxed),
            poll_ms: shared.args.probe_poll_ms,
            ms: Percentiles::of(&shared.freshness.lock().expect("freshness lock")),
        },
        sse: SseReport {
            subscribers: shared.args.sse,
            events: shared.sse_events.load(Ordering::Relaxed),
            disconnects: shared.sse_disconnects.load(Ordering::Relaxed),
        },
        failures: shared.failures.lock().expect("failures lock").clone(),
    }
}

/// Sends one planned request and records it. Returns the probe's clue id, token and 202 time
/// when it was an acknowledged probe.
async fn send(shared: &Shared, planned: Planned, seed: u64) -> Option<(String, String, Instant)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let args = &shared.args;
    let token = shared.reporters[planned.index as usize % shared.reporters.len()].clone();
    let new_id = |n: u64| {
        uuid::Uuid::new_v5(
            &uuid::Uuid::NAMESPACE_OID,
            format!(
                "gridclue-load-open/{}/{}/{n}",
                shared.run_nonce, planned.index
            )
            .as_bytes(),
        )
        .to_string()
    };
    let mut kind = planned.kind;
    let transition_on = if kind == Kind::Transition {
        let visible = shared.visible_clues.lock().expect("visible lock");
        if visible.is_empty() {
            None
        } else {
            Some(visible[rng.gen_range(0..visible.len())].clone())
        }
    } else {
        None
    };
    if kind == Kind::Transition && transition_on.is_none() {
        // No clue of this run visible yet to act on: this slot reads instead.
        kind = Kind::Read;
    }
    let mut ids: Vec<String> = Vec::new();
    let request = match kind {
        Kind::Report => {
            let id = new_id(0);
            let body = shared.clue_body(&mut rng, &id);
            ids.push(id.clone());
            shared
                .http
                .post(format!("{}/v1/clues", args.ingest_url))
                .bearer_auth(&token)
                .header("Idempotency-Key", id)
                .json(&body)
        }
        Kind::Batch => {
            let clues: Vec<Value> = (0..args.batch_size as u64)
                .map(|n| {
                    let id = new_id(n);
                    let mut body = shared.clue_body(&mut rng, &id);
                    body["idempotency_key"] = json!(id);
                    body
                })
                .collect();
            shared
                .http
                .post(format!("{}/v1/clues:batch", args.ingest_url))
                .bearer_auth(&token)
                .json(&json!({ "clues": clues }))
        }
        Kind::Open311 => {
            let id = new_id(0);
            let (lon, lat) = shared.points[rng.gen_range(0..shared.points.len())];
            let category = pick_category(&shared.categories, &mut rng);
            let form = [
                ("api_key", token.clone()),
                ("service_code", category.into()),
                ("lat", lat.to_string()),
                ("long", lon.to_string()),
                ("description", DESCRIPTIONS[0].to_owned()),
            ];
            shared
                .http
                .post(format!("{}/open311/v2/requests.json", args.ingest_url))
                .header("Idempotency-Key", id)
                .form(&form)
        }
        Kind::Transition => shared
            .http
            .post(format!(
                "{}/v1/clues/{}/transitions",
                args.ingest_url,
                transition_on.as_deref().unwrap_or_default()
            ))
            .bearer_auth(&args.district_token)
            .json(&json!({"action": "accept"})),
        Kind::Read => shared
            .http
            .get(format!("{}/v1/summary", args.dashboard_url))
            .bearer_auth(&args.district_token),
    };
    let sent = Instant::now();
    let answer = match request.send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            let body = r.bytes().await.ok();
            Some((status, body))
        }
        Err(_) => None,
    };
    let done = Instant::now();
    {
        shared.latencies.lock().expect("latency lock").record(
            planned.kind,
            planned.scheduled,
            sent,
            done,
        );
        shared
            .recent
            .lock()
            .expect("recent lock")
            .saturating_record(micros(done.saturating_duration_since(planned.scheduled)));
    }
    shared.completed.fetch_add(1, Ordering::Relaxed);
    // A transition waits for the processor's verdict: applied (200), still pending (202) or
    // refused because of the clue's status (409, e.g. accepting an accepted clue) are all
    // answers of a working pipeline.
    let expected: &[u16] = match kind {
        Kind::Report => &[202],
        Kind::Transition => &[200, 202, 409],
        Kind::Batch | Kind::Read => &[200],
        Kind::Open311 => &[201],
    };
    let mut probe = None;
    match answer {
        Some((status, body)) if expected.contains(&status) => {
            Shared::count(&shared.ok, planned.kind);
            match kind {
                Kind::Report => {
                    if planned.probe {
                        probe = Some((ids[0].clone(), token, done));
                    }
                    shared.acked(&ids);
                }
                Kind::Batch => {
                    let body: Value = body
                        .and_then(|b| serde_json::from_slice(&b).ok())
                        .unwrap_or(Value::Null);
                    let accepted: Vec<String> = body["results"]
                        .as_array()
                        .map(|items| {
                            items
                                .iter()
                                .filter(|r| r["status"] == "accepted")
                                .filter_map(|r| r["clue_id"].as_str().map(str::to_owned))
                                .collect()
                        })
                        .unwrap_or_default();
                    shared.acked(&accepted);
                }
                Kind::Open311 => {
                    let body: Value = body
                        .and_then(|b| serde_json::from_slice(&b).ok())
                        .unwrap_or(Value::Null);
                    if let Some(id) = body[0]["service_request_id"].as_str() {
                        shared.acked(&[id.to_owned()]);
                    }
                }
                Kind::Transition | Kind::Read => {}
            }
        }
        Some((429, _)) => {
            shared.throttled.fetch_add(1, Ordering::Relaxed);
            Shared::count(&shared.failed, planned.kind);
        }
        other => {
            let status = other.map_or(0, |(s, _)| s);
            *shared
                .failures
                .lock()
                .expect("failures lock")
                .entry(format!("{} {status}", kind.name()))
                .or_default() += 1;
            Shared::count(&shared.failed, planned.kind);
        }
    }
    if planned.probe {
        shared.probes.fetch_add(1, Ordering::Relaxed);
    }
    probe
}

/// Polls a probe clue's read until it answers 200: its freshness is the time from its 202.
/// The poll interval grows with the wait (a tenth of it, at least `--probe-poll-ms`), so a
/// lagging pipeline is not flooded with reads and the figure stays within ~10 % (or one poll).
async fn watch_probe(shared: &Shared, id: &str, token: &str, acked: Instant) {
    let url = format!("{}/v1/clues/{id}", shared.args.ingest_url);
    let timeout = Duration::from_secs_f64(shared.args.probe_timeout);
    let min_poll = Duration::from_millis(shared.args.probe_poll_ms.max(1));
    loop {
        let r = shared.http.get(&url).bearer_auth(token).send().await;
        if matches!(&r, Ok(r) if r.status().is_success()) {
            let fresh = acked.elapsed();
            shared
                .freshness
                .lock()
                .expect("freshness lock")
                .saturating_record(micros(fresh));
            shared.probes_visible.fetch_add(1, Ordering::Relaxed);
            let mut visible = shared.visible_clues.lock().expect("visible lock");
            if visible.len() >= 1024 {
                visible.drain(..512);
            }
            visible.push(id.to_owned());
            return;
        }
        if acked.elapsed() >= timeout {
            shared.probes_timed_out.fetch_add(1, Ordering::Relaxed);
            return;
        }
        tokio::time::sleep(min_poll.max(acked.elapsed() / 10)).await;
    }
}

/// Holds one `/v1/stream` subscription open, counting its events; reconnects when dropped.
async fn subscribe(shared: Arc<Shared>, stop: StopFlag) {
    let url = format!("{}/v1/stream", shared.args.dashboard_url);
    let http = reqwest::Client::new();
    while !stop.stopped() {
        let response = http
            .get(&url)
            .bearer_auth(&shared.args.district_token)
            .header("accept", "text/event-stream")
            .send()
            .await;
        if let Ok(mut r) = response {
            if r.status().is_success() {
                while let Ok(Some(chunk)) = r.chunk().await {
                    let events = chunk.windows(5).filter(|w| w == b"data:").count();
                    shared
                        .sse_events
                        .fetch_add(events as u64, Ordering::Relaxed);
                    if stop.stopped() {
                        return;
                    }
                }
            }
        }
        if stop.stopped() {
            return;
        }
        shared.sse_disconnects.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn progress(
    shared: Arc<Shared>,
    schedule: Schedule,
    started: Instant,
    total: u64,
    stop: StopFlag,
) {
    let mut tick = tokio::time::interval_at(
        (started + Duration::from_secs(1)).into(),
        Duration::from_secs(1),
    );
    loop {
        tick.tick().await;
        if stop.stopped() {
            return;
        }
        let secs = started.elapsed().as_secs_f64();
        let recent = {
            let mut h = shared.recent.lock().expect("recent lock");
            let p = Percentiles::of(&h);
            h.reset();
            p
        };
        let fresh = Percentiles::of(&shared.freshness.lock().expect("freshness lock"));
        let failed: u64 = shared
            .failed
            .values()
            .map(|c| c.load(Ordering::Relaxed))
            .sum();
        eprintln!(
            "[{secs:5.0}s] due {}/{total}  done {}  clues acked {}  failed {}  429 {}  | last 1 s: {} answers, p99 {:.1} ms | freshness p50 {:.0} p99 {:.0} ms ({} probes)",
            schedule.count_within(started.elapsed()).min(total),
            shared.completed.load(Ordering::Relaxed),
            shared.clues_acked.load(Ordering::Relaxed),
            failed,
            shared.throttled.load(Ordering::Relaxed),
            recent.count,
            recent.p99_ms,
            fresh.p50_ms,
            fresh.p99_ms,
            fresh.count
        );
    }
}

fn print_report(r: &RunReport) {
    println!(
        "rate        {:.0} req/s for {:.1} s: {} due, {} answered ({:.0} req/s), {} ok, {} failed, {} throttled (429)",
        r.target_rate, r.duration_s, r.scheduled, r.completed, r.achieved_rps, r.ok, r.errors, r.throttled
    );
    println!(
        "clues       {} acknowledged ({:.0} clues/s)",
        r.clues_acked, r.clues_per_s
    );
    let line = |name: &str, p: &Percentiles| {
        println!(
            "{name:<11} p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2} ms  (n={})",
            p.p50_ms, p.p90_ms, p.p99_ms, p.p999_ms, p.max_ms, p.count
        )
    };
    line("latency", &r.latency);
    line("service", &r.service_time);
    for (name, k) in &r.by_kind {
        line(&format!("  {name}"), &k.latency);
    }
    line("freshness", &r.freshness.ms);
    println!(
        "probes      {} sent, {} visible, {} never visible (poll every {} ms)",
        r.freshness.probes, r.freshness.visible, r.freshness.timed_out, r.freshness.poll_ms
    );
    println!(
        "sse         {} subscribers, {} events, {} reconnects",
        r.sse.subscribers, r.sse.events, r.sse.disconnects
    );
    if !r.failures.is_empty() {
        println!(
            "failures    {:?} (kind and HTTP status → count; 0 = no answer)",
            r.failures
        );
    }
}

/// The category codes ingest accepts (`GET /v1/categories`).
/// The category codes ingest serves (parsed: a malformed code is an error of the run).
pub async fn fetch_categories(
    http: &reqwest::Client,
    ingest: &str,
) -> anyhow::Result<Vec<CategoryCode>> {
    let categories: Value = http
        .get(format!("{ingest}/v1/categories"))
        .send()
        .await
        .context("fetching categories from ingest")?
        .error_for_status()?
        .json()
        .await?;
    let codes = categories["categories"]
        .as_array()
        .context("categories response has no list")?
        .iter()
        .filter_map(|c| c["code"].as_str())
        .map(|code| CategoryCode::parse(code).with_context(|| format!("category {code:?}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    anyhow::ensure!(!codes.is_empty(), "no categories");
    Ok(codes)
}

/// Points inside the district, a street picked uniformly for each.
fn sample_points(map: &str, seed: u64, n: usize) -> anyhow::Result<Vec<(f64, f64)>> {
    let (grids, _) = load_map(map)?;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut points = Vec::with_capacity(n);
    while points.len() < n {
        let grid = &grids[rng.gen_range(0..grids.len())];
        if let Some(p) = point_in(&grid.polygon, &mut rng) {
            points.push(p);
        }
    }
    Ok(points)
}

/// The reporter tokens the reports rotate through: the ones kept in the file, plus new ones
/// issued through the admin API with the district token until there are `--reporters`.
async fn reporter_tokens(http: &reqwest::Client, args: &OpenArgs) -> anyhow::Result<Vec<String>> {
    let mut tokens: Vec<String> = std::fs::read_to_string(&args.reporter_tokens_file)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    let wanted = args.reporters.max(1);
    if tokens.len() >= wanted {
        tokens.truncate(wanted);
        return Ok(tokens);
    }
    if wanted == 1 {
        return Ok(vec![args.reporter_token.clone()]);
    }
    let before = tokens.len();
    let groups = [
        "courier",
        "food_delivery",
        "ride_hailing",
        "truck",
        "grid_member",
    ];
    while tokens.len() < wanted {
        let n = tokens.len();
        let r = http
            .post(format!("{}/v1/admin/tokens", args.ingest_url))
            .bearer_auth(&args.district_token)
            .json(
                &json!({"kind": "reporter", "name": format!("load reporter {n}"),
                          "group": groups[n % groups.len()]}),
            )
            .send()
            .await
            .context("issuing a reporter token")?;
        let status = r.status();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        anyhow::ensure!(
            status.is_success(),
            "issuing a reporter token answered {status}: {body}"
        );
        tokens.push(
            body["secret"]
                .as_str()
                .context("an issued token without its secret")?
                .to_owned(),
        );
    }
    if let Some(dir) = args.reporter_tokens_file.parent() {
        std::fs::create_dir_all(dir).ok();
    }
    std::fs::write(&args.reporter_tokens_file, serde_json::to_vec(&tokens)?)
        .with_context(|| format!("writing {}", args.reporter_tokens_file.display()))?;
    eprintln!(
        "issued {} reporter tokens (kept in {})",
        tokens.len() - before,
        args.reporter_tokens_file.display()
    );
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_spaces_requests_evenly_from_the_start() {
        let s = Schedule::new(200.0).unwrap();
        assert_eq!(s.due(0), Duration::ZERO);
        assert_eq!(s.due(1), Duration::from_millis(5));
        assert_eq!(s.due(200), Duration::from_secs(1));
        assert_eq!(s.count_within(Duration::from_secs(3)), 600);
        assert_eq!(
            Schedule::new(2.5)
                .unwrap()
                .count_within(Duration::from_secs(1)),
            3
        );
        assert!(Schedule::new(0.0).is_err());
        assert!(Schedule::new(f64::NAN).is_err());
    }

    #[test]
    fn mix_parses_and_picks_by_weight() {
        let mix = Mix::parse("report=70, batch=5,open311=5,transition=10,read=10").unwrap();
        assert_eq!(mix.weight(Kind::Transition), 10.0);
        assert_eq!(mix.pick(0.0), Kind::Report);
        assert_eq!(mix.pick(0.699), Kind::Report);
        assert_eq!(mix.pick(0.70), Kind::Batch);
        assert_eq!(mix.pick(0.76), Kind::Open311);
        assert_eq!(mix.pick(0.85), Kind::Transition);
        assert_eq!(mix.pick(0.95), Kind::Read);
        assert_eq!(mix.pick(1.0), Kind::Read);
        let mut counts = BTreeMap::new();
        for i in 0..10_000 {
            *counts.entry(mix.pick(i as f64 / 10_000.0)).or_insert(0) += 1;
        }
        assert_eq!(counts[&Kind::Report], 7000);
        assert_eq!(counts[&Kind::Batch], 500);
        let only = Mix::parse("read=0,report=1").unwrap();
        assert_eq!(only.pick(0.0), Kind::Report);
        assert_eq!(only.pick(1.0), Kind::Report);
        for bad in [
            "",
            "report",
            "report=x",
            "report=-1",
            "nope=1",
            "read=0",
            "read=1,read=2",
        ] {
            assert!(Mix::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    /// A discrete-event model of `connections` connections serving a schedule: each request is
    /// sent when it is due and a connection is free (the earliest free one), and takes
    /// `service(send time)` seconds. Returns (scheduled, sent, done) offsets in seconds.
    fn serve(
        schedule: Schedule,
        n: u64,
        connections: usize,
        service: impl Fn(f64) -> f64,
    ) -> Vec<(f64, f64, f64)> {
        let mut free_at = vec![0.0f64; connections];
        (0..n)
            .map(|i| {
                let due = schedule.due(i).as_secs_f64();
                let (slot, &free) = free_at
                    .iter()
                    .enumerate()
                    .min_by(|a, b| a.1.total_cmp(b.1))
                    .unwrap();
                let sent = due.max(free);
                let done = sent + service(sent);
                free_at[slot] = done;
                (due, sent, done)
            })
            .collect()
    }

    fn latencies_of(events: &[(f64, f64, f64)]) -> Latencies {
        let t0 = Instant::now();
        let at = |s: f64| t0 + Duration::from_secs_f64(s);
        let mut l = Latencies::default();
        for &(due, sent, done) in events {
            l.record(Kind::Report, at(due), at(sent), at(done));
        }
        l
    }

    #[test]
    fn latency_counts_from_the_schedule_not_the_send() {
        let t0 = Instant::now();
        let mut l = Latencies::default();
        // Due at 0, sent 500 ms late (no free connection), answered 10 ms after the send.
        l.record(
            Kind::Batch,
            t0,
            t0 + Duration::from_millis(500),
            t0 + Duration::from_millis(510),
        );
        let all = Percentiles::of(&l.all);
        let service = Percentiles::of(&l.service);
        assert!((all.max_ms - 510.0).abs() < 1.0, "{all:?}");
        assert!((service.max_ms - 10.0).abs() < 0.1, "{service:?}");
        assert_eq!(Percentiles::of(&l.latency[&Kind::Batch]).count, 1);
        assert!(!l.latency.contains_key(&Kind::Report));
    }

    /// The coordinated-omission case: 100 req/s over one connection, 1 ms per request, except
    /// that the server stalls for 2 s at t = 5 s. A closed-loop tool sees one slow request out
    /// of ~800; a client arriving on schedule sees every request due during the stall wait.
    #[test]
    fn a_stall_shows_in_the_scheduled_latency_and_hides_in_the_service_time() {
        let schedule = Schedule::new(100.0).unwrap();
        let events = serve(schedule, 1000, 1, |sent| {
            if (5.0..5.01).contains(&sent) {
                2.0
            } else {
                0.001
            }
        });
        let l = latencies_of(&events);
        let scheduled = Percentiles::of(&l.all);
        let service = Percentiles::of(&l.service);
        // ~200 requests fall due during the stall (20 % of the run): p90 waits about a second.
        assert!(scheduled.p90_ms > 500.0, "{scheduled:?}");
        assert!(scheduled.max_ms > 1990.0, "{scheduled:?}");
        // From the send, only the one stalled request is slow: p99 stays at the 1 ms service.
        assert!(service.p99_ms < 2.0, "{service:?}");
        assert!(service.max_ms > 1990.0, "{service:?}");
    }

    #[test]
    fn enough_connections_keep_scheduled_latency_at_the_service_time() {
        let schedule = Schedule::new(1000.0).unwrap();
        // 20 ms per request at 1 000 req/s needs 20 connections; 32 suffice, 10 do not.
        let plenty = Percentiles::of(&latencies_of(&serve(schedule, 5000, 32, |_| 0.02)).all);
        assert!(plenty.p99_ms < 21.0, "{plenty:?}");
        let few = Percentiles::of(&latencies_of(&serve(schedule, 5000, 10, |_| 0.02)).all);
        // Half the needed capacity: the queue grows all run long, to ~2.5 s by its end.
        assert!(few.p99_ms > 2000.0, "{few:?}");
    }

    fn report(p99: f64, fresh_p99: f64) -> RunReport {
        RunReport {
            scheduled: 1000,
            completed: 1000,
            ok: 1000,
            latency: Percentiles {
                count: 1000,
                p99_ms: p99,
                ..Percentiles::default()
            },
            freshness: FreshnessReport {
                probes: 10,
                visible: 10,
                ms: Percentiles {
                    count: 10,
                    p99_ms: fresh_p99,
                    ..Percentiles::default()
                },
                ..FreshnessReport::default()
            },
            ..RunReport::default()
        }
    }

    #[test]
    fn a_run_holds_only_within_every_bound() {
        let bounds = Bounds {
            p99_ms: 100.0,
            freshness_p99_ms: 1000.0,
            max_error_share: 0.01,
        };
        assert_eq!(bounds.held(&report(99.0, 999.0)), Ok(()));
        assert!(bounds
            .held(&report(101.0, 500.0))
            .unwrap_err()
            .contains("p99 latency"));
        assert!(bounds
            .held(&report(50.0, 1001.0))
            .unwrap_err()
            .contains("freshness"));
        let mut unanswered = report(50.0, 500.0);
        unanswered.completed = 990;
        assert!(bounds.held(&unanswered).unwrap_err().contains("unanswered"));
        let mut failing = report(50.0, 500.0);
        failing.errors = 8;
        failing.throttled = 3;
        assert!(bounds.held(&failing).unwrap_err().contains("11 of 1000"));
        failing.throttled = 0;
        assert_eq!(bounds.held(&failing), Ok(()));
        let mut blind = report(50.0, 0.0);
        blind.freshness.visible = 0;
        assert!(bounds.held(&blind).is_err());
        let mut unprobed = report(50.0, 0.0);
        unprobed.freshness = FreshnessReport::default();
        assert_eq!(bounds.held(&unprobed), Ok(()));
        let mut lost = report(50.0, 500.0);
        lost.freshness.timed_out = 1;
        assert!(bounds.held(&lost).is_err());
    }

    /// Runs a search against a service that holds every rate up to `capacity`.
    fn search(start: f64, capacity: f64) -> (Option<f64>, Vec<f64>) {
        let mut s = RateSearch::new(start, 1.5, 0.05, 10.0, 100_000.0);
        let mut tried = Vec::new();
        while let Some(rate) = s.next_rate() {
            assert!(tried.len() < 40, "the search does not end: {tried:?}");
            tried.push(rate);
            s.record(rate, rate <= capacity);
        }
        (s.best(), tried)
    }

    #[test]
    fn find_max_converges_below_and_within_precision_of_the_capacity() {
        for (start, capacity) in [
            (1000.0, 5_700.0),
            (1000.0, 1000.0),
            (20_000.0, 5_700.0),
            (500.0, 99_999.0),
            (1000.0, 12.0),
        ] {
            let (best, tried) = search(start, capacity);
            let best = best.unwrap_or_else(|| panic!("nothing held: {tried:?}"));
            assert!(best <= capacity, "{best} > {capacity}: {tried:?}");
            assert!(
                best >= capacity / 1.05 - 1e-9,
                "{best} ≪ {capacity}: {tried:?}"
            );
        }
    }

    #[test]
    fn find_max_stops_at_the_ceiling_and_the_floor() {
        let (best, tried) = search(50_000.0, f64::INFINITY);
        assert_eq!(best, Some(100_000.0));
        assert_eq!(tried, vec![50_000.0, 75_000.0, 100_000.0]);
        let (best, tried) = search(100.0, 1.0);
        assert_eq!(best, None);
        assert_eq!(*tried.last().unwrap(), 10.0);
    }
}
