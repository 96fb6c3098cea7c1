//! `gridclue-load`: posts realistic clues through the public API — the demo loader and a first
//! load tool. Points are sampled inside the district's grids (by street, so all 13 streets get
//! clues), with a category mix, some near-duplicates (same category within metres of an earlier
//! clue), some client retries (same Idempotency-Key), some points outside the district and some
//! invalid clues. Reports throughput and latency percentiles.
//!
//! `gridclue-load open …` is the open-loop load tool for benchmarks ([`gridclue_loadgen::open`]);
//! `gridclue-load staff …` then plays the district's staff on those clues
//! ([`gridclue_loadgen::staff`]).

use gridclue_core::grid::StreetCode;
use gridclue_core::CategoryCode;
use gridclue_loadgen::map::{load_map, pick_category, point_in, GridShape, DESCRIPTIONS};
use gridclue_loadgen::staff;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use geo::{BoundingRect, Contains};
use geo_types::{MultiPolygon, Point};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

#[derive(Parser)]
#[command(
    name = "gridclue-load",
    about = "Post demo clues through the ingest API, and play the staff who work them",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    #[command(flatten)]
    load: Args,
}

#[derive(Subcommand)]
enum Cmd {
    /// Work the loaded clues through the closed loop as street offices, departments, the
    /// district and the rider would (through the public API).
    Staff(staff::StaffArgs),
    /// Import a believable past month: historical clues with their timelines of actions,
    /// back-dated, through the district's import endpoint.
    History(gridclue_loadgen::history::HistoryArgs),
    /// Evaluate the hotspot detector on a synthetic district year with injected outbreaks
    /// (detection rate, clues to detection, false alarms per street and month).
    Hotspots(gridclue_loadgen::hotspots::HotspotArgs),
    /// Open-loop load at a fixed rate: a realistic mix, latency from the scheduled send time,
    /// freshness probes, `--find-max` for the highest rate that holds.
    Open(gridclue_loadgen::open::OpenArgs),
    /// Send records that must end in the DLQ straight to the pipeline's topics (chaos suite):
    /// prints where each landed and the reason code expected for it.
    Poison(gridclue_loadgen::poison::PoisonArgs),
}

/// Posting clues (the default command).
#[derive(clap::Args, Clone)]
struct Args {
    #[arg(
        long,
        env = "GRIDCLUE_INGEST_URL",
        default_value = "http://127.0.0.1:7401"
    )]
    ingest_url: String,
    /// A reporter token (required to post clues; the subcommands have their own).
    #[arg(long, env = "GRIDCLUE_DEMO_REPORTER_TOKEN")]
    token: Option<String>,
    #[arg(long, default_value_t = 5000)]
    count: u64,
    /// Target requests per second (0 = as fast as possible).
    #[arg(long, default_value_t = 500.0)]
    rate: f64,
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    #[arg(long, default_value = "data/district/grids.geojson")]
    map: String,
    #[arg(long, default_value_t = 2026)]
    seed: u64,
    /// Share of clues that repeat a nearby earlier clue's category and place.
    #[arg(long, default_value_t = 0.03)]
    near_duplicates: f64,
    /// Share of clues resent with the same Idempotency-Key (client retries).
    #[arg(long, default_value_t = 0.01)]
    retries: f64,
    /// Share of clues placed just outside the district.
    #[arg(long, default_value_t = 0.005)]
    outside: f64,
    /// Share of deliberately invalid clues (expect 4xx).
    #[arg(long, default_value_t = 0.005)]
    invalid: f64,
    /// Send clues in batches of this many through `POST /v1/clues:batch` (0 = one
    /// `POST /v1/clues` per clue). Latency is then per batch request.
    #[arg(long, default_value_t = 0)]
    batch: usize,
}

struct Planned {
    body: Value,
    idempotency_key: String,
    expect_ok: bool,
}

fn plan(
    args: &Args,
    grids: &[GridShape],
    district: &MultiPolygon<f64>,
    codes: &[CategoryCode],
) -> Vec<Planned> {
    let mut rng = StdRng::seed_from_u64(args.seed);
    let mut streets: Vec<StreetCode> = grids.iter().map(|g| g.street).collect();
    streets.sort_unstable();
    streets.dedup();
    let bbox = district.bounding_rect().expect("non-empty district");
    let mut out: Vec<Planned> = Vec::with_capacity(args.count as usize);
    let mut i = 0u64;
    while (out.len() as u64) < args.count {
        i += 1;
        let key = format!("load-{}-{i}", args.seed);
        let roll: f64 = rng.gen();
        let category = pick_category(codes, &mut rng);
        let description = DESCRIPTIONS[rng.gen_range(0..DESCRIPTIONS.len())];
        let planned = if roll < args.invalid {
            Planned {
                body: json!({"category": "not_a_category", "lat": bbox.center().y, "lon": bbox.center().x}),
                idempotency_key: key,
                expect_ok: false,
            }
        } else if roll < args.invalid + args.outside {
            // Just beyond the district's bounding box edge, inside the accepted margin.
            let (lon, lat) = loop {
                let lon = bbox.max().x + rng.gen_range(0.001..0.02);
                let lat = rng.gen_range(bbox.min().y..bbox.max().y);
                if !district.contains(&Point::new(lon, lat)) {
                    break (lon, lat);
                }
            };
            Planned {
                body: json!({"category": category, "lat": lat, "lon": lon, "description": description}),
                idempotency_key: key,
                expect_ok: true,
            }
        } else if roll < args.invalid + args.outside + args.retries && !out.is_empty() {
            let j = rng.gen_range(0..out.len());
            let again = &out[j];
            Planned {
                body: again.body.clone(),
                idempotency_key: again.idempotency_key.clone(),
                expect_ok: again.expect_ok,
            }
        } else if roll < args.invalid + args.outside + args.retries + args.near_duplicates
            && !out.is_empty()
        {
            let j = rng.gen_range(0..out.len());
            let mut body = out[j].body.clone();
            if let (Some(lat), Some(lon)) = (body["lat"].as_f64(), body["lon"].as_f64()) {
                // Within ~10 m of the earlier clue.
                body["lat"] = json!(lat + rng.gen_range(-0.00008..0.00008));
                body["lon"] = json!(lon + rng.gen_range(-0.00008..0.00008));
            }
            Planned {
                body,
                idempotency_key: key,
                expect_ok: out[j].expect_ok,
            }
        } else {
            // Pick a street uniformly, then a grid in it, so every street gets clues.
            let street = streets[rng.gen_range(0..streets.len())];
            let in_street: Vec<&GridShape> = grids.iter().filter(|g| g.street == street).collect();
            let grid = in_street[rng.gen_range(0..in_street.len())];
            let Some((lon, lat)) = point_in(&grid.polygon, &mut rng) else {
                continue;
            };
            Planned {
                body: json!({"category": category, "lat": lat, "lon": lon, "description": description}),
                idempotency_key: key,
                expect_ok: true,
            }
        };
        let mut planned = planned;
        // Every new clue (not a retry, which repeats an earlier one exactly) gets a clue id of
        // its own derived from the seed, so a fresh stack loaded with the same seed holds the
        // same clues under the same ids (and the staff give them the same fates).
        if planned.idempotency_key == format!("load-{}-{i}", args.seed) {
            planned.body["clue_id"] = json!(clue_id(args.seed, i).to_string());
        }
        out.push(planned);
    }
    out
}

/// The clue id of the `i`-th clue of a seed's load.
fn clue_id(seed: u64, i: u64) -> uuid::Uuid {
    const LOAD_NAMESPACE: uuid::Uuid =
        uuid::Uuid::from_u128(0x7f3e_2a91_c4d8_4b6f_a0e5_18b2_9c3d_5e71);
    uuid::Uuid::new_v5(
        &LOAD_NAMESPACE,
        format!("gridclue-load/{seed}/{i}").as_bytes(),
    )
}

#[derive(Default)]
struct Tally {
    accepted: AtomicU64,
    duplicates: AtomicU64,
    refused_as_expected: AtomicU64,
    unexpected: AtomicU64,
    throttled: AtomicU64,
    failed: AtomicU64,
}

impl Tally {
    fn count(&self, counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The answer to one request of `chunk` (one clue, or a batch of them).
    fn answer(
        &self,
        chunk: &[(usize, Planned)],
        answer: Result<(u16, Option<Value>), reqwest::Error>,
        batch: bool,
    ) {
        let expect_ok = chunk[0].1.expect_ok;
        let each = |counter: &AtomicU64| {
            for _ in chunk {
                self.count(counter);
            }
        };
        match answer {
            Ok((429, _)) => each(&self.throttled),
            Ok((200, Some(body))) if batch => {
                let results = body["results"].as_array().cloned().unwrap_or_default();
                for (i, (_, p)) in chunk.iter().enumerate() {
                    match results.get(i) {
                        Some(r) => self.item(r, p.expect_ok),
                        None => self.count(&self.unexpected),
                    }
                }
            }
            Ok((202, _)) if expect_ok => self.count(&self.accepted),
            Ok((status, _)) if (400..500).contains(&status) && !expect_ok => {
                self.count(&self.refused_as_expected)
            }
            Ok(_) => each(&self.unexpected),
            Err(_) => each(&self.failed),
        }
    }

    /// One item of a batch answer.
    fn item(&self, result: &Value, expect_ok: bool) {
        match (result["status"].as_str(), expect_ok) {
            (Some("accepted"), true) => self.count(&self.accepted),
            (Some("duplicate"), true) => self.count(&self.duplicates),
            (Some("error"), false) if result["retryable"] == false => {
                self.count(&self.refused_as_expected)
            }
            _ => self.count(&self.unexpected),
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Cmd::Staff(args)) => {
            let (grids, _) = load_map(&args.map)?;
            let mut streets: Vec<StreetCode> = grids.into_iter().map(|g| g.street).collect();
            streets.sort_unstable();
            streets.dedup();
            staff::run(args, streets).await
        }
        Some(Cmd::History(args)) => gridclue_loadgen::history::run(args).await,
        Some(Cmd::Hotspots(args)) => gridclue_loadgen::hotspots::run(args).await,
        Some(Cmd::Open(args)) => gridclue_loadgen::open::run(args).await,
        Some(Cmd::Poison(args)) => gridclue_loadgen::poison::run(args).await,
        None => {
            anyhow::ensure!(
                cli.load.token.is_some(),
                "--token (or GRIDCLUE_DEMO_REPORTER_TOKEN) is required to post clues"
            );
            load(cli.load).await
        }
    }
}

async fn load(args: Args) -> anyhow::Result<()> {
    let (grids, district) = load_map(&args.map)?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    let codes = gridclue_loadgen::open::fetch_categories(&client, &args.ingest_url).await?;
    let planned = plan(&args, &grids, &district, &codes);
    eprintln!(
        "posting {} clues to {} at {} req/s with {} connections",
        planned.len(),
        args.ingest_url,
        if args.rate > 0.0 {
            format!("{}", args.rate)
        } else {
            "max".into()
        },
        args.concurrency
    );

    let run = Arc::new(Run {
        tally: Tally::default(),
        histogram: std::sync::Mutex::new(hdrhistogram::Histogram::<u64>::new_with_bounds(
            1, 60_000_000, 3,
        )?),
        queue: std::sync::Mutex::new(planned.into_iter().enumerate()),
        started: Instant::now(),
        done: AtomicU64::new(0),
    });
    let total = args.count;
    let progress = tokio::spawn(show_progress(run.clone(), total));
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        workers.push(tokio::spawn(work(
            run.clone(),
            client.clone(),
            args.clone(),
        )));
    }
    for w in workers {
        w.await?;
    }
    // Measured before the progress line's last tick, which may be up to 0.5 s later.
    let secs = run.started.elapsed().as_secs_f64();
    progress.await?;
    eprintln!();
    report(&run, &args, secs)
}

/// What the workers share: the plan still to send, the answers and the latencies.
struct Run {
    tally: Tally,
    histogram: std::sync::Mutex<hdrhistogram::Histogram<u64>>,
    queue: std::sync::Mutex<std::iter::Enumerate<std::vec::IntoIter<Planned>>>,
    started: Instant,
    /// Clues answered so far.
    done: AtomicU64,
}

/// A progress line every 0.5 s until `total` clues are answered.
async fn show_progress(run: Arc<Run>, total: u64) {
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let d = run.done.load(Ordering::Relaxed);
        let secs = run.started.elapsed().as_secs_f64();
        let width = 30usize;
        let filled = (d as usize * width) / total.max(1) as usize;
        eprint!(
            "\r[{}{}] {d}/{total} {:.0}/s accepted={} failed={}   ",
            "#".repeat(filled),
            ".".repeat(width - filled),
            d as f64 / secs.max(0.001),
            run.tally.accepted.load(Ordering::Relaxed),
            run.tally.failed.load(Ordering::Relaxed)
        );
        if d >= total {
            break;
        }
    }
}

/// One connection's loop: takes the next clue (or batch) of the plan, waits for its time when
/// a rate is set, sends it and records the answer.
async fn work(run: Arc<Run>, client: reqwest::Client, args: Args) {
    let per_request = args.batch.max(1);
    loop {
        let chunk: Vec<(usize, Planned)> = {
            let mut q = run.queue.lock().expect("queue lock");
            q.by_ref().take(per_request).collect()
        };
        let Some((first, _)) = chunk.first() else {
            break;
        };
        if args.rate > 0.0 {
            let due = run.started + Duration::from_secs_f64(*first as f64 / args.rate);
            tokio::time::sleep_until(due.into()).await;
        }
        // The request is built before the clock starts: latency is the server's answer.
        let request = build_request(&client, &args, &chunk);
        let t0 = Instant::now();
        let answer = send(request, args.batch > 0).await;
        let micros = t0.elapsed().as_micros() as u64;
        run.histogram
            .lock()
            .expect("histogram lock")
            .record(micros.max(1))
            .ok();
        run.tally.answer(&chunk, answer, args.batch > 0);
        run.done.fetch_add(chunk.len() as u64, Ordering::Relaxed);
    }
}

/// One clue to `/v1/clues` with its Idempotency-Key, or a batch to `/v1/clues:batch` with a
/// key per item.
fn build_request(
    client: &reqwest::Client,
    args: &Args,
    chunk: &[(usize, Planned)],
) -> reqwest::RequestBuilder {
    let (url, body) = if args.batch > 0 {
        let clues: Vec<Value> = chunk
            .iter()
            .map(|(_, p)| {
                let mut body = p.body.clone();
                body["idempotency_key"] = json!(p.idempotency_key);
                body
            })
            .collect();
        (
            format!("{}/v1/clues:batch", args.ingest_url),
            serde_json::to_vec(&json!({ "clues": clues })).expect("JSON body"),
        )
    } else {
        (
            format!("{}/v1/clues", args.ingest_url),
            serde_json::to_vec(&chunk[0].1.body).expect("JSON body"),
        )
    };
    let mut request = client
        .post(url)
        .header("content-type", "application/json")
        .bearer_auth(args.token.as_deref().unwrap_or_default())
        .body(body);
    if args.batch == 0 {
        request = request.header("Idempotency-Key", &chunk[0].1.idempotency_key);
    }
    request
}

/// The status and, for a batch, the answer's body (read item by item).
async fn send(
    request: reqwest::RequestBuilder,
    batch: bool,
) -> Result<(u16, Option<Value>), reqwest::Error> {
    let r = request.send().await?;
    let status = r.status().as_u16();
    let body = if batch {
        r.json::<Value>().await.ok()
    } else {
        r.bytes().await.ok();
        None
    };
    Ok((status, body))
}

/// The run's summary on stdout; an error when any request did not get the expected answer.
fn report(run: &Run, args: &Args, secs: f64) -> anyhow::Result<()> {
    let total = args.count;
    let tally = &run.tally;
    let h = run.histogram.lock().expect("histogram lock");
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let requests = total.div_ceil(args.batch.max(1) as u64);
    println!(
        "sent        {total} clues in {requests} requests in {secs:.1} s ({:.0} clues/s, {:.0} req/s)",
        total as f64 / secs,
        requests as f64 / secs
    );
    println!(
        "accepted    {} (202/accepted)   duplicates {}   refused as expected {} (4xx)   \
         unexpected {}   throttled {} (429)   failed {}",
        tally.accepted.load(Ordering::Relaxed),
        tally.duplicates.load(Ordering::Relaxed),
        tally.refused_as_expected.load(Ordering::Relaxed),
        tally.unexpected.load(Ordering::Relaxed),
        tally.throttled.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed)
    );
    println!(
        "latency ms  p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}  (per {})",
        ms(0.5),
        ms(0.9),
        ms(0.99),
        h.max() as f64 / 1000.0,
        if args.batch > 0 {
            "batch request"
        } else {
            "request"
        }
    );
    if tally.throttled.load(Ordering::Relaxed) > 0 {
        eprintln!(
            "note: ingest rate-limited this run; for load runs start ingest with \
             GRIDCLUE_RATE_LIMIT_TOKEN_PER_SEC=0 GRIDCLUE_RATE_LIMIT_IP_PER_SEC=0"
        );
    }
    let bad = tally.unexpected.load(Ordering::Relaxed)
        + tally.failed.load(Ordering::Relaxed)
        + tally.throttled.load(Ordering::Relaxed);
    anyhow::ensure!(bad == 0, "{bad} requests did not get the expected answer");
    Ok(())
}
