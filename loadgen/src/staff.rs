//! `gridclue-load staff`: plays the district's staff through the public API, the way a district
//! works its clues. Street offices read their queues (`GET /v1/work`) and accept, reject, merge,
//! dispatch and verify; departments start, handle, return and ask for more time; the district
//! decides postponements and supervises; the demo rider withdraws a few clues and rates closed
//! ones. Every action is a `POST /v1/clues/{id}/transitions` with the role's own token.
//!
//! Each clue's fate (where it stops, whether it is dispatched to the wrong department first, is
//! reworked, postponed, supervised, rated) is drawn from the seed and the clue id, so a run with
//! the same seed over the same clues makes the same decisions, and a repeated run sends the same
//! idempotency keys. Most clues are closed; some stop along the way, so every queue holds work.
//!
//! Tokens: one street token per street and one department token per department, issued once by
//! the district token through `POST /v1/admin/tokens` and kept in a file (mode 0600) for later
//! runs.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use gridclue_core::grid::StreetCode;
use gridclue_core::rng::mix;
use gridclue_core::{CategoryCode, DepartmentCode};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[derive(clap::Args, Clone, Debug)]
pub struct StaffArgs {
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
    /// The district token: issues the staff tokens, decides postponements, supervises.
    #[arg(long, env = "GRIDCLUE_DEMO_DISTRICT_TOKEN")]
    pub district_token: String,
    /// The demo rider's token (withdraws and rates the rider's own clues).
    #[arg(long, env = "GRIDCLUE_DEMO_REPORTER_TOKEN")]
    pub reporter_token: String,
    /// Where the issued street and department tokens are kept between runs.
    #[arg(long, default_value = "var/demo-staff-tokens.json")]
    pub tokens_file: PathBuf,
    #[arg(long, default_value = "data/district/grids.geojson")]
    pub map: String,
    #[arg(long, default_value_t = 2026)]
    pub seed: u64,
    /// Transitions in flight at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Rounds of reading the queues and acting at most (each round moves clues one step or more).
    #[arg(long, default_value_t = 40)]
    pub max_rounds: u32,
    /// Give up when the queues still hold work after this long.
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,
}

// ------------------------------------------------------------------------------------------------
// Fates

/// Where a clue's story stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum End {
    Closed,
    Rejected,
    Merged,
    Withdrawn,
    /// Left waiting for acceptance.
    Reported,
    /// Accepted, left waiting for dispatch.
    Accepted,
    /// Dispatched, not yet started by the department.
    Dispatched,
    InProgress,
    /// Handled, left waiting for verification.
    Handled,
}

/// Everything decided about one clue, before it is touched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fate {
    pub end: End,
    /// First dispatched to a department that is not responsible; it returns the clue (退回).
    pub wrong_department: bool,
    /// Verifications that fail (返工) before the one that passes.
    pub reworks: u16,
    /// The department asks for more time; `Some(true)`: the district approves.
    pub postpone: Option<bool>,
    /// The district supervises it (督办) while a department has it.
    pub supervise: bool,
    /// The rider's rating once it is closed.
    pub rating: Option<u8>,
}

/// Deterministic draws for one clue: the n-th draw is a fraction in [0, 1).
struct Draws(u64);

impl Draws {
    fn new(seed: u64, clue_id: &str) -> Self {
        // FNV-1a over the id, mixed with the seed.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in clue_id.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        Self(mix(h ^ mix(seed)))
    }

    fn next(&mut self) -> f64 {
        self.0 = mix(self.0.wrapping_add(0x9e37_79b9_7f4a_7c15));
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The shares of the ends, in draw order; what is left is closed.
const ENDS: &[(End, f64)] = &[
    (End::Withdrawn, 0.01),
    (End::Rejected, 0.04),
    (End::Merged, 0.02),
    (End::Reported, 0.03),
    (End::Accepted, 0.03),
    (End::Dispatched, 0.03),
    (End::InProgress, 0.05),
    (End::Handled, 0.03),
];

pub fn fate(seed: u64, clue_id: &str) -> Fate {
    let mut d = Draws::new(seed, clue_id);
    let mut x = d.next();
    let mut end = End::Closed;
    for &(e, share) in ENDS {
        if x < share {
            end = e;
            break;
        }
        x -= share;
    }
    let wrong_department = d.next() < 0.06;
    let reworks = u16::from(d.next() < 0.10);
    let postpone = (d.next() < 0.10).then(|| d.next() < 0.75);
    let supervise = d.next() < 0.08;
    let rating = (d.next() < 0.85).then(|| match d.next() {
        r if r < 0.50 => 5,
        r if r < 0.80 => 4,
        r if r < 0.92 => 3,
        r if r < 0.97 => 2,
        _ => 1,
    });
    Fate {
        end,
        wrong_department,
        reworks,
        postpone,
        supervise,
        rating,
    }
}

// ------------------------------------------------------------------------------------------------
// What the API says

/// One item of `GET /v1/work` (the fields the staff read).
#[derive(Clone, Debug, Deserialize)]
pub struct WorkItem {
    pub clue_id: String,
    pub status: String,
    /// `import` for history: its reporter of record is not the demo rider.
    #[serde(default)]
    pub channel: String,
    pub category: CategoryCode,
    /// Only clues placed inside the district are queued: every item has a street.
    pub street_code: StreetCode,
    #[serde(default)]
    pub seq: u32,
    #[serde(default)]
    pub rework_count: u16,
    #[serde(default)]
    pub returned_count: u16,
    #[serde(default)]
    pub postpone_requested_hours: Option<u32>,
    #[serde(default)]
    pub supervise_count: u16,
}

#[derive(Deserialize)]
struct WorkPage {
    queues: Vec<QueuePage>,
}

#[derive(Deserialize)]
struct QueuePage {
    items: Vec<WorkItem>,
    next_cursor: Option<String>,
}

/// What a transition came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Applied {
        status: String,
        seq: u32,
    },
    /// 403/404/409: the API refused it (e.g. the queue was a moment behind).
    Refused {
        http: u16,
        code: String,
    },
}

/// Tries of a request answered 429 or 503 (with back-off, or the server's Retry-After).
const PATIENCE: usize = 20;

fn retry_after(r: &reqwest::Response) -> Option<Duration> {
    let secs: u64 = r
        .headers()
        .get("retry-after")?
        .to_str()
        .ok()?
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs.clamp(1, 10)))
}

#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    ingest: String,
    dashboard: String,
}

impl Api {
    /// Every item of one queue, all pages.
    async fn queue(&self, token: &str, queue: &str) -> anyhow::Result<Vec<WorkItem>> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut url = format!("{}/v1/work?queue={queue}&limit=500", self.dashboard);
            if let Some(c) = &cursor {
                url.push_str(&format!("&cursor={c}"));
            }
            let page: WorkPage = self
                .retrying(|| self.http.get(&url).bearer_auth(token))
                .await?
                .json()
                .await
                .context("reading a work queue")?;
            let page = page
                .queues
                .into_iter()
                .next()
                .context("a work answer without its queue")?;
            items.extend(page.items);
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => return Ok(items),
            }
        }
    }

    /// Each queue's length as the district sees it.
    async fn totals(&self, district: &str) -> anyhow::Result<BTreeMap<String, u64>> {
        let url = format!("{}/v1/work?limit=1", self.dashboard);
        let v: Value = self
            .retrying(|| self.http.get(&url).bearer_auth(district))
            .await?
            .json()
            .await?;
        Ok(v["queues"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|q| Some((q["queue"].as_str()?.to_owned(), q["total"].as_u64()?)))
            .collect())
    }

    /// Waits until the queues hold work and stop growing (the clues just loaded have reached
    /// the projection), at most `limit`.
    async fn settle(&self, district: &str, limit: Duration) -> anyhow::Result<()> {
        let until = Instant::now() + limit;
        let mut last = self.totals(district).await?;
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(700)).await;
            let now = self.totals(district).await?;
            if now == last && now.values().any(|&n| n > 0) {
                return Ok(());
            }
            last = now;
        }
        Ok(())
    }

    /// Sends a request until it gets an answer other than 429/503 (a few tries, backing off);
    /// any other 4xx/5xx is an error, except what the caller handles from a transition.
    async fn retrying(
        &self,
        request: impl Fn() -> reqwest::RequestBuilder,
    ) -> anyhow::Result<reqwest::Response> {
        let mut wait = Duration::from_millis(100);
        for _ in 0..PATIENCE {
            let r = request().send().await?;
            match r.status().as_u16() {
                429 | 503 => {
                    tokio::time::sleep(retry_after(&r).unwrap_or(wait)).await;
                    wait = (wait * 2).min(Duration::from_secs(3));
                }
                s if (200..300).contains(&s) => return Ok(r),
                s => {
                    let body = r.text().await.unwrap_or_default();
                    anyhow::bail!("HTTP {s}: {body}");
                }
            }
        }
        anyhow::bail!("the service stayed unavailable")
    }

    async fn transition(
        &self,
        token: &str,
        clue_id: &str,
        key: &str,
        body: &Value,
    ) -> anyhow::Result<Outcome> {
        let url = format!("{}/v1/clues/{clue_id}/transitions", self.ingest);
        let mut wait = Duration::from_millis(100);
        let mut poll: Option<String> = None;
        for _ in 0..PATIENCE {
            // A 202 means the verdict was not in yet: it is asked for at the URL given.
            let request = match &poll {
                None => self
                    .http
                    .post(&url)
                    .header("Idempotency-Key", key)
                    .json(body),
                Some(location) => self.http.get(location),
            };
            let r = request.bearer_auth(token).send().await?;
            let http = r.status().as_u16();
            match http {
                200 => {
                    let v: Value = r.json().await?;
                    return Ok(Outcome::Applied {
                        status: v["status"].as_str().unwrap_or_default().to_owned(),
                        seq: v["seq"].as_u64().unwrap_or(0) as u32,
                    });
                }
                202 => {
                    let location = r
                        .headers()
                        .get("location")
                        .and_then(|l| l.to_str().ok())
                        .context("a 202 without a Location")?;
                    poll = Some(format!("{}{location}", self.ingest));
                    tokio::time::sleep(retry_after(&r).unwrap_or(wait)).await;
                }
                403 | 404 | 409 => {
                    let v: Value = r.json().await.unwrap_or(Value::Null);
                    return Ok(Outcome::Refused {
                        http,
                        code: v["code"].as_str().unwrap_or_default().to_owned(),
                    });
                }
                429 | 503 => {
                    tokio::time::sleep(retry_after(&r).unwrap_or(wait)).await;
                    wait = (wait * 2).min(Duration::from_secs(3));
                }
                _ => {
                    let text = r.text().await.unwrap_or_default();
                    anyhow::bail!("{} on {clue_id}: HTTP {http}: {text}", body["action"]);
                }
            }
        }
        anyhow::bail!("no verdict on {} for {clue_id}", body["action"])
    }
}

// ------------------------------------------------------------------------------------------------
// Staff tokens

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StaffTokens {
    /// Street code → token.
    pub streets: BTreeMap<StreetCode, String>,
    /// Department code → token.
    pub departments: BTreeMap<DepartmentCode, String>,
}

impl StaffTokens {
    fn read(path: &Path) -> Self {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    }

    fn write(&self, path: &Path) -> anyhow::Result<()> {
        use std::io::Write;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("json.tmp");
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut f = options
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(&serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }
}

/// Reuses the kept tokens that still work; issues the missing ones with the district token.
async fn staff_tokens(
    api: &Api,
    args: &StaffArgs,
    streets: &[StreetCode],
    departments: &[DepartmentCode],
) -> anyhow::Result<StaffTokens> {
    let kept = StaffTokens::read(&args.tokens_file);
    let mut issued = 0;
    let tokens = StaffTokens {
        streets: tokens_of(api, args, "street", streets, &kept.streets, &mut issued).await?,
        departments: tokens_of(
            api,
            args,
            "department",
            departments,
            &kept.departments,
            &mut issued,
        )
        .await?,
    };
    if issued > 0 {
        tokens.write(&args.tokens_file)?;
        eprintln!(
            "issued {issued} staff tokens through the admin API (kept in {})",
            args.tokens_file.display()
        );
    }
    Ok(tokens)
}

/// The tokens of one `kind` of staff by scope code: the kept ones that still work, the missing
/// ones issued (counted in `issued`).
async fn tokens_of<C>(
    api: &Api,
    args: &StaffArgs,
    kind: &str,
    codes: &[C],
    kept: &BTreeMap<C, String>,
    issued: &mut usize,
) -> anyhow::Result<BTreeMap<C, String>>
where
    C: Ord + Clone + std::fmt::Display + Serialize,
{
    let mut out = BTreeMap::new();
    for code in codes {
        let reuse = match kept.get(code) {
            Some(t) if token_works(api, t).await => Some(t.clone()),
            _ => None,
        };
        let token = match reuse {
            Some(t) => t,
            None => {
                *issued += 1;
                let body =
                    json!({"kind": kind, "scope": code, "name": format!("demo {kind} {code}")});
                let url = format!("{}/v1/admin/tokens", api.ingest);
                let r: Value = api
                    .retrying(|| {
                        api.http
                            .post(&url)
                            .bearer_auth(&args.district_token)
                            .json(&body)
                    })
                    .await
                    .with_context(|| format!("issuing the demo {kind} token of {code}"))?
                    .json()
                    .await?;
                r["secret"]
                    .as_str()
                    .context("an issued token without its secret")?
                    .to_owned()
            }
        };
        out.insert(code.clone(), token);
    }
    Ok(out)
}

/// Whether `token` still reads a work queue (not revoked, not from another stack).
async fn token_works(api: &Api, token: &str) -> bool {
    let url = format!("{}/v1/work?limit=1", api.dashboard);
    api.http
        .get(&url)
        .bearer_auth(token)
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

// ------------------------------------------------------------------------------------------------
// The play

/// One transition to send, with the role's token.
#[derive(Clone, Debug)]
struct Step {
    token: String,
    clue_id: String,
    body: Value,
    key: String,
    /// (street, category) of an accept: the accepted clue becomes a merge target.
    place: Option<(StreetCode, CategoryCode)>,
}

impl Step {
    fn action(&self) -> &str {
        self.body["action"].as_str().unwrap_or_default()
    }
}

/// What the staff know from their own actions (the queues may be a moment behind them).
#[derive(Default)]
struct Known {
    /// The seq of the last fact an action of ours produced, per clue: a queue item with an
    /// older seq is the projection a moment behind, and is left for the next round.
    seq: HashMap<String, u32>,
    /// The status our last action left each clue in.
    status: HashMap<String, String>,
    /// A clue accepted per (street, category): later repeats are merged into it.
    merge_targets: HashMap<(StreetCode, CategoryCode), String>,
    /// Clues whose postponement was asked for (once per clue, whatever the district decides).
    postpone_asked: HashSet<String>,
    supervised: HashSet<String>,
    /// Clues a step was refused for: left as they are (no endless retries).
    given_up: HashSet<String>,
}

impl Known {
    fn is_behind(&self, item: &WorkItem) -> bool {
        self.seq
            .get(&item.clue_id)
            .is_some_and(|&seq| item.seq < seq)
    }
}

/// Actions applied by name, refusals by action and code.
#[derive(Default)]
struct Tally {
    applied: BTreeMap<String, u64>,
    refused: BTreeMap<String, u64>,
}

/// The statuses whose clues wait in some queue.
const OPEN: [&str; 5] = [
    "reported",
    "accepted",
    "dispatched",
    "in_progress",
    "handled",
];

/// What the staff do this round: each clue's steps, sent in order.
#[derive(Default)]
struct Round {
    steps: Vec<Vec<Step>>,
    /// Queue items skipped because the projection had not caught up with our last action.
    behind: usize,
}

struct Cast<'a> {
    seed: u64,
    tokens: &'a StaffTokens,
    district: &'a str,
    reporter: &'a str,
    /// Category code → responsible department.
    departments: &'a HashMap<CategoryCode, DepartmentCode>,
    all_departments: &'a [DepartmentCode],
}

fn step(token: &str, clue_id: &str, body: Value, seed: u64, n: u32) -> Step {
    let action = body["action"].as_str().unwrap_or_default().to_owned();
    Step {
        token: token.to_owned(),
        clue_id: clue_id.to_owned(),
        key: format!("demo-staff-{seed}-{clue_id}-{action}-{n}"),
        body,
        place: None,
    }
}

impl Cast<'_> {
    fn responsible(&self, category: &CategoryCode) -> &DepartmentCode {
        self.departments
            .get(category)
            .unwrap_or(&self.all_departments[0])
    }

    /// Another department than the responsible one (the same for the same clue).
    fn wrong(&self, clue_id: &str, category: &CategoryCode) -> DepartmentCode {
        let right = self.responsible(category);
        let others: Vec<&DepartmentCode> = self
            .all_departments
            .iter()
            .filter(|d| *d != right)
            .collect();
        let i = (Draws::new(self.seed ^ 0x5eed, clue_id).next() * others.len() as f64) as usize;
        others[i.min(others.len() - 1)].clone()
    }

    /// A street office at its accept queue: accept (and dispatch at once when the clue goes
    /// further), reject, merge, or leave it; the rider withdraws some.
    fn accept(&self, item: &WorkItem, known: &Known) -> Option<Vec<Step>> {
        let f = fate(self.seed, &item.clue_id);
        let street = self.tokens.streets.get(&item.street_code)?;
        let id = &item.clue_id;
        let s = self.seed;
        match f.end {
            End::Reported => None,
            // Imported history has no rider to take it back: it waits, as a street would leave it.
            End::Withdrawn if item.channel == "import" => None,
            End::Withdrawn => Some(vec![step(
                self.reporter,
                id,
                json!({"action": "withdraw", "reason": "问题已自行解决"}),
                s,
                0,
            )]),
            End::Rejected => Some(vec![step(
                street,
                id,
                json!({"action": "reject", "reason": "不属于城市管理范围"}),
                s,
                0,
            )]),
            End::Merged => {
                let key = (item.street_code, item.category.clone());
                match known.merge_targets.get(&key) {
                    Some(target) if target != id => Some(vec![step(
                        street,
                        id,
                        json!({"action": "merge", "duplicate_of": target}),
                        s,
                        0,
                    )]),
                    // Nothing to merge into yet: it waits for a later round.
                    _ => None,
                }
            }
            _ => {
                let mut accept = step(street, id, json!({"action": "accept"}), s, 0);
                accept.place = Some((item.street_code, item.category.clone()));
                let mut steps = vec![accept];
                if f.end != End::Accepted {
                    steps.push(self.dispatch_step(street, item, f));
                }
                Some(steps)
            }
        }
    }

    fn dispatch_step(&self, street: &str, item: &WorkItem, f: Fate) -> Step {
        let department = if f.wrong_department && item.returned_count == 0 {
            self.wrong(&item.clue_id, &item.category)
        } else {
            self.responsible(&item.category).clone()
        };
        step(
            street,
            &item.clue_id,
            json!({"action": "dispatch", "department": department}),
            self.seed,
            u32::from(item.returned_count),
        )
    }

    /// A street office at its dispatch queue (accepted, or returned by a department).
    fn dispatch(&self, item: &WorkItem) -> Option<Vec<Step>> {
        let f = fate(self.seed, &item.clue_id);
        let street = self.tokens.streets.get(&item.street_code)?;
        (f.end != End::Accepted).then(|| vec![self.dispatch_step(street, item, f)])
    }

    /// A department at its handle queue: return what is not its own; start; ask for more
    /// time; handle. The district supervises some while they are here.
    fn handle(
        &self,
        item: &WorkItem,
        token: &str,
        department: &DepartmentCode,
        known: &Known,
    ) -> Vec<Vec<Step>> {
        let f = fate(self.seed, &item.clue_id);
        let id = &item.clue_id;
        let s = self.seed;
        let round = u32::from(item.rework_count);
        let mut out = Vec::new();
        if f.supervise && item.supervise_count == 0 && !known.supervised.contains(id) {
            out.push(vec![step(
                self.district,
                id,
                json!({"action": "supervise", "note": "请加快处置并反馈"}),
                s,
                0,
            )]);
        }
        if department != self.responsible(&item.category) {
            out.push(vec![step(
                token,
                id,
                json!({"action": "return", "reason": "不属于本部门职责，请重新派遣"}),
                s,
                u32::from(item.returned_count),
            )]);
            return out;
        }
        let mut steps = Vec::new();
        if item.status == "dispatched" {
            if f.end == End::Dispatched {
                return out;
            }
            steps.push(step(token, id, json!({"action": "start"}), s, round));
        }
        if item.postpone_requested_hours.is_some() {
            // The district has not decided yet.
        } else if f.postpone.is_some() && !known.postpone_asked.contains(id) {
            steps.push(step(
                token,
                id,
                json!({"action": "request_postpone", "hours": 8, "reason": "需协调产权单位，申请延期"}),
                s,
                0,
            ));
        } else if f.end != End::InProgress {
            steps.push(step(
                token,
                id,
                json!({"action": "handle", "note": "已处置完毕", "photos": [format!("https://demo.gridclue.invalid/after/{id}-{round}.jpg")]}),
                s,
                round,
            ));
        }
        if !steps.is_empty() {
            out.push(steps);
        }
        out
    }

    /// The district at its postpone queue.
    fn decide_postponement(&self, item: &WorkItem) -> Vec<Step> {
        let body = if fate(self.seed, &item.clue_id).postpone == Some(false) {
            json!({"action": "deny_postpone", "reason": "不符合延期条件，请按期办结"})
        } else {
            json!({"action": "approve_postpone", "note": "同意延期"})
        };
        vec![step(self.district, &item.clue_id, body, self.seed, 0)]
    }

    /// A street office at its verify queue: rework some, close the rest (and the rider rates).
    fn verify(&self, item: &WorkItem) -> Option<Vec<Step>> {
        let f = fate(self.seed, &item.clue_id);
        let street = self.tokens.streets.get(&item.street_code)?;
        let id = &item.clue_id;
        if f.end == End::Handled {
            return None;
        }
        if item.rework_count < f.reworks {
            return Some(vec![step(
                street,
                id,
                json!({"action": "verify_fail", "reason": "现场复核未整改到位，请返工"}),
                self.seed,
                u32::from(item.rework_count),
            )]);
        }
        let mut steps = vec![step(
            street,
            id,
            json!({"action": "verify_ok"}),
            self.seed,
            0,
        )];
        // Only the demo rider's own clues are rated by the demo rider (history has no rider).
        if let Some(rating) = f.rating.filter(|_| item.channel != "import") {
            steps.push(step(
                self.reporter,
                id,
                json!({"action": "rate", "rating": rating}),
                self.seed,
                0,
            ));
        }
        Some(steps)
    }
}

/// Reads every queue of every role and decides this round's steps.
async fn plan_round(api: &Api, cast: &Cast<'_>, known: &Known) -> anyhow::Result<Round> {
    let mut round = Round::default();
    // A clue's steps go out only when the queue shows the state our last action left.
    let mut seen: HashSet<String> = HashSet::new();
    let mut take = |item: &WorkItem, round: &mut Round| {
        seen.insert(item.clue_id.clone());
        if known.given_up.contains(&item.clue_id) {
            return false;
        }
        let behind = known.is_behind(item);
        round.behind += usize::from(behind);
        !behind
    };
    for token in cast.tokens.streets.values() {
        for item in api.queue(token, "accept").await? {
            if take(&item, &mut round) {
                round.steps.extend(cast.accept(&item, known));
            }
        }
        for item in api.queue(token, "dispatch").await? {
            if take(&item, &mut round) {
                round.steps.extend(cast.dispatch(&item));
            }
        }
        for item in api.queue(token, "verify").await? {
            if take(&item, &mut round) {
                round.steps.extend(cast.verify(&item));
            }
        }
    }
    for (department, token) in &cast.tokens.departments {
        for item in api.queue(token, "handle").await? {
            if take(&item, &mut round) {
                round
                    .steps
                    .extend(cast.handle(&item, token, department, known));
            }
        }
    }
    for item in api.queue(cast.district, "postpone").await? {
        if take(&item, &mut round) {
            round.steps.push(cast.decide_postponement(&item));
        }
    }
    // An open clue sits in exactly one of the queues read above; one we moved that is in none
    // of them was between two queues while they were read one after the other.
    round.behind += known
        .status
        .iter()
        .filter(|(id, status)| {
            OPEN.contains(&status.as_str()) && !seen.contains(*id) && !known.given_up.contains(*id)
        })
        .count();
    Ok(round)
}

/// Sends each clue's steps in order (a refused step ends that clue's steps), `concurrency`
/// clues at a time; returns every step sent with its outcome.
async fn act(
    api: &Api,
    steps: Vec<Vec<Step>>,
    concurrency: usize,
) -> anyhow::Result<Vec<(Step, Outcome)>> {
    use futures::StreamExt;
    let results: Vec<anyhow::Result<Vec<(Step, Outcome)>>> = futures::stream::iter(steps)
        .map(|steps| {
            let api = api.clone();
            async move {
                let mut done = Vec::new();
                for s in steps {
                    let outcome = api
                        .transition(&s.token, &s.clue_id, &s.key, &s.body)
                        .await?;
                    let refused = matches!(outcome, Outcome::Refused { .. });
                    done.push((s, outcome));
                    if refused {
                        break;
                    }
                }
                Ok(done)
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let mut all = Vec::new();
    for r in results {
        all.extend(r?);
    }
    Ok(all)
}

/// Folds a round's outcomes into what the staff know and the tally.
fn learn(known: &mut Known, tally: &mut Tally, done: &[(Step, Outcome)]) -> u64 {
    let mut applied = 0;
    for (s, outcome) in done {
        let action = s.action().to_owned();
        match outcome {
            Outcome::Applied { status, seq } => {
                applied += 1;
                *tally.applied.entry(action.clone()).or_default() += 1;
                let known_seq = known.seq.entry(s.clue_id.clone()).or_default();
                if *seq >= *known_seq {
                    *known_seq = *seq;
                    known.status.insert(s.clue_id.clone(), status.clone());
                }
                match action.as_str() {
                    "accept" => {
                        // The smallest id, not the first answered: the same target whatever
                        // order concurrent answers come back in.
                        if let Some(place) = &s.place {
                            let target = known
                                .merge_targets
                                .entry(place.clone())
                                .or_insert_with(|| s.clue_id.clone());
                            if s.clue_id < *target {
                                *target = s.clue_id.clone();
                            }
                        }
                    }
                    "request_postpone" => {
                        known.postpone_asked.insert(s.clue_id.clone());
                    }
                    "supervise" => {
                        known.supervised.insert(s.clue_id.clone());
                    }
                    _ => {}
                }
            }
            Outcome::Refused { http, code } => {
                *tally
                    .refused
                    .entry(format!("{action}: {http} {code}"))
                    .or_default() += 1;
                known.given_up.insert(s.clue_id.clone());
            }
        }
    }
    applied
}

pub async fn run(args: StaffArgs, streets: Vec<StreetCode>) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    let api = Api {
        http,
        ingest: args.ingest_url.trim_end_matches('/').to_owned(),
        dashboard: args.dashboard_url.trim_end_matches('/').to_owned(),
    };
    let categories: Value = api
        .retrying(|| api.http.get(format!("{}/v1/categories", api.ingest)))
        .await
        .context("fetching categories from ingest")?
        .json()
        .await?;
    let mut departments: HashMap<CategoryCode, DepartmentCode> = HashMap::new();
    let mut all_departments: Vec<DepartmentCode> = Vec::new();
    for c in categories["categories"].as_array().into_iter().flatten() {
        if let (Some(code), Some(d)) = (c["code"].as_str(), c["department"].as_str()) {
            let code = CategoryCode::parse(code)
                .with_context(|| format!("the category table names the category {code:?}"))?;
            let d = DepartmentCode::parse(d)
                .with_context(|| format!("category {code} names the department {d:?}"))?;
            if !all_departments.contains(&d) {
                all_departments.push(d.clone());
            }
            departments.insert(code, d);
        }
    }
    all_departments.sort();
    anyhow::ensure!(
        all_departments.len() >= 2,
        "the category table names fewer than two departments"
    );
    let tokens = staff_tokens(&api, &args, &streets, &all_departments).await?;
    let cast = Cast {
        seed: args.seed,
        tokens: &tokens,
        district: &args.district_token,
        reporter: &args.reporter_token,
        departments: &departments,
        all_departments: &all_departments,
    };
    api.settle(&args.district_token, Duration::from_secs(30))
        .await?;
    let mut known = Known::default();
    let mut tally = Tally::default();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.timeout_secs);
    let mut total = 0u64;
    let mut finished = false;
    for n in 1..=args.max_rounds {
        let round = plan_round(&api, &cast, &known).await?;
        let (clues, behind) = (round.steps.len(), round.behind);
        if clues == 0 && behind == 0 {
            eprintln!(
                "staff: the queues hold only what stays open ({} rounds, {total} actions, {:.1} s)",
                n - 1,
                started.elapsed().as_secs_f64()
            );
            finished = true;
            break;
        }
        let done = act(&api, round.steps, args.concurrency).await?;
        let applied = learn(&mut known, &mut tally, &done);
        total += applied;
        eprintln!(
            "staff round {n}: {applied} actions on {clues} clues ({behind} queue items a moment behind), {:.1} s",
            started.elapsed().as_secs_f64()
        );
        if applied == 0 {
            // Only stale items: give the projection a moment.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the staff did not finish within {} s",
            args.timeout_secs
        );
    }
    println!("staff actions {total}:");
    let left = api.totals(&args.district_token).await?;
    for (action, n) in &tally.applied {
        println!("  {action:<18} {n}");
    }
    if !tally.refused.is_empty() {
        println!("refused (the clue is left as it is):");
        for (why, n) in &tally.refused {
            println!("  {why:<40} {n}");
        }
    }
    let left: Vec<String> = left.iter().map(|(q, n)| format!("{q} {n}")).collect();
    println!("left in the queues: {}", left.join(", "));
    anyhow::ensure!(
        finished,
        "the queues still held work after {} rounds",
        args.max_rounds
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fates_are_deterministic_and_mostly_closed() {
        let ids: Vec<String> = (0..20_000)
            .map(|i| format!("00000000-0000-4000-8000-{i:012}"))
            .collect();
        let fates: Vec<Fate> = ids.iter().map(|id| fate(7, id)).collect();
        assert_eq!(fates, ids.iter().map(|id| fate(7, id)).collect::<Vec<_>>());
        assert_ne!(fates, ids.iter().map(|id| fate(8, id)).collect::<Vec<_>>());
        let share = |f: &dyn Fn(&Fate) -> bool| {
            fates.iter().filter(|x| f(x)).count() as f64 / fates.len() as f64
        };
        let closed = share(&|f| f.end == End::Closed);
        assert!((0.73..0.79).contains(&closed), "{closed}");
        for (end, want) in ENDS {
            let got = share(&|f| f.end == *end);
            assert!((got - want).abs() < 0.006, "{end:?}: {got} vs {want}");
        }
        let reworked = share(&|f| f.reworks > 0);
        assert!((0.08..0.12).contains(&reworked), "{reworked}");
        let approved = share(&|f| f.postpone == Some(true));
        assert!((0.06..0.09).contains(&approved), "{approved}");
        assert!(fates
            .iter()
            .all(|f| f.rating.is_none_or(|r| (1..=5).contains(&r))));
    }

    #[test]
    fn draws_are_fractions() {
        let mut d = Draws::new(1, "x");
        for _ in 0..1000 {
            let x = d.next();
            assert!((0.0..1.0).contains(&x));
        }
    }
}
