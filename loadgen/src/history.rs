//! `gridclue-load history`: a believable past month, imported. A district moving from an older
//! system brings its history along; the demo does the same with generated history: clues
//! reported over the last `days` days, each with the timeline of actions a district would have
//! taken (the fates of [`crate::staff`]: most closed, most of those on time, some late, some
//! returned and re-dispatched, reworked, postponed, supervised, rated; some still open, the
//! older of those overdue). They go to `POST /v1/import/clues` (district token), which validates
//! them like live ones and imports each exactly once (its id derives from `source` and
//! `source_id`, so running the import again adds nothing).
//!
//! Times are planned in working time with the district calendar: the time limit of a clue runs
//! from its acceptance, and a clue planned "on time" is closed within it (after an approved
//! postponement, within the longer one). Actions that would fall after `until` are not part of
//! the history: those clues are still open.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use gridclue_core::calendar::Calendar;
use gridclue_core::category::{Catalog, CategoryCode, DepartmentCode};
use gridclue_core::codes::ActorScope;
use gridclue_core::grid::StreetCode;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::Value;

use crate::map::{load_map, pick_category, point_in, GridShape, DESCRIPTIONS};
use crate::staff::{fate, End, Fate};

const MINUTE: u64 = 60_000;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;
/// China Standard Time, the district's clock.
const OFFSET_MS: u64 = 8 * HOUR;
/// Working hours a department asks for, and gets when the district approves.
pub const POSTPONE_HOURS: u32 = 8;
/// Share of the closed clues closed after their deadline.
pub const LATE_SHARE: f64 = 0.15;
/// Reports of a category are kept this far apart: beyond the dedupe rule's radius, with a margin.
const DEDUPE_RADIUS_M: f64 = 80.0;

/// Distance in metres between two nearby points (equirectangular: plenty at district scale).
fn metres(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let r = 6_371_000.0;
    let x = (lon2 - lon1).to_radians() * ((lat1 + lat2) / 2.0).to_radians().cos();
    let y = (lat2 - lat1).to_radians();
    r * (x * x + y * y).sqrt()
}

#[derive(clap::Args, Clone, Debug)]
pub struct HistoryArgs {
    #[arg(
        long,
        env = "GRIDCLUE_INGEST_URL",
        default_value = "http://127.0.0.1:7401"
    )]
    pub ingest_url: String,
    /// The district token (imports are the district's).
    #[arg(long, env = "GRIDCLUE_DEMO_DISTRICT_TOKEN")]
    pub district_token: String,
    #[arg(long, default_value = "data/district/grids.geojson")]
    pub map: String,
    /// Holds `categories.json` and `calendar.json`.
    #[arg(long, default_value = "data")]
    pub data_dir: PathBuf,
    #[arg(long, default_value_t = 2026)]
    pub seed: u64,
    /// How many days back the history reaches.
    #[arg(long, default_value_t = 30)]
    pub days: u32,
    #[arg(long, default_value_t = 1500)]
    pub count: usize,
    /// Clues per import request.
    #[arg(long, default_value_t = 200)]
    pub batch: usize,
    /// The name of the system the history comes from (part of every clue's identity).
    #[arg(long, default_value = "demo-history")]
    pub source: String,
    /// The end of the history, epoch ms (default: now).
    #[arg(long)]
    pub until_ms: Option<u64>,
}

/// Who took an action in the old system.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct By {
    pub role: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<ActorScope>,
}

/// One action of a clue's timeline, as the import takes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub action: &'static str,
    pub at: String,
    #[serde(skip)]
    pub at_ms: u64,
    pub by: By,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub department: Option<DepartmentCode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicate_of_source_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hours: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rating: Option<u8>,
}

/// One historical clue as the import takes it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HistoricalClue {
    pub source_id: String,
    pub category: CategoryCode,
    pub lat: f64,
    pub lon: f64,
    pub description: &'static str,
    pub reported_at: String,
    #[serde(skip)]
    pub reported_at_ms: u64,
    pub timeline: Vec<Entry>,
    /// The plan behind the timeline (not sent).
    #[serde(skip)]
    pub fate: Fate,
    #[serde(skip)]
    pub late: bool,
    /// The deadline the timeline was planned against (0 when never accepted).
    #[serde(skip)]
    pub deadline_ms: u64,
}

/// Times go out as RFC 3339 to the second: plans are made with exactly those instants.
fn whole_seconds(ms: u64) -> u64 {
    ms / 1000 * 1000
}

/// RFC 3339 in China Standard Time.
pub fn rfc3339(ms: u64) -> String {
    let t = chrono::DateTime::from_timestamp_millis((ms + OFFSET_MS) as i64)
        .expect("a time after 1970")
        .naive_utc();
    format!("{}+08:00", t.format("%Y-%m-%dT%H:%M:%S"))
}

struct Story<'a> {
    calendar: &'a Calendar,
    entries: Vec<Entry>,
}

impl Story<'_> {
    fn push(&mut self, action: &'static str, at_ms: u64, by: By) -> &mut Entry {
        let at_ms = whole_seconds(at_ms);
        self.entries.push(Entry {
            action,
            at: rfc3339(at_ms),
            at_ms,
            by,
            reason: None,
            note: None,
            department: None,
            duplicate_of_source_id: None,
            hours: None,
            rating: None,
        });
        self.entries.last_mut().expect("just pushed")
    }

    /// `fraction` of the working time `span_ms` after `from_ms`.
    fn after(&self, from_ms: u64, span_ms: u64, fraction: f64) -> u64 {
        whole_seconds(
            self.calendar
                .add_working_ms(from_ms, (span_ms as f64 * fraction) as u64)
                .unwrap_or(from_ms),
        )
    }
}

fn street(code: StreetCode) -> By {
    By {
        role: "street",
        scope: Some(ActorScope::Street(code)),
    }
}

fn department(code: &DepartmentCode) -> By {
    By {
        role: "department",
        scope: Some(ActorScope::Department(code.clone())),
    }
}

const DISTRICT: By = By {
    role: "district",
    scope: None,
};
const REPORTER: By = By {
    role: "reporter",
    scope: None,
};

/// Everything one clue's timeline depends on.
pub struct Setting<'a> {
    pub fate: Fate,
    pub late: bool,
    pub reported_at_ms: u64,
    pub street: StreetCode,
    pub right_department: &'a DepartmentCode,
    pub wrong_department: &'a DepartmentCode,
    pub limit: gridclue_core::category::Deadline,
    /// An earlier clue of the same street and category, for a merge.
    pub merge_into: Option<&'a str>,
    pub until_ms: u64,
}

/// The timeline of one clue: what its fate says, timed in working time from its acceptance,
/// cut at `until_ms`. Returns the entries and the deadline planned against (0: never accepted).
pub fn timeline(s: &Setting<'_>, calendar: &Calendar, rng: &mut StdRng) -> (Vec<Entry>, u64) {
    let mut story = Story {
        calendar,
        entries: Vec::new(),
    };
    let f = s.fate;
    let report = s.reported_at_ms;
    let taken = story.after(report, HOUR, rng.gen_range(0.1..2.0));
    let mut deadline = 0;
    match f.end {
        End::Reported => {}
        End::Withdrawn => {
            let at = report + rng.gen_range(5 * MINUTE..3 * HOUR);
            story.push("withdraw", at, REPORTER).reason = Some("问题已自行解决");
        }
        End::Rejected => {
            story.push("reject", taken, street(s.street)).reason = Some("不属于城市管理范围");
        }
        End::Merged => match s.merge_into {
            Some(target) => {
                story
                    .push("merge", taken, street(s.street))
                    .duplicate_of_source_id = Some(target.to_owned());
            }
            None => {
                story.push("reject", taken, street(s.street)).reason = Some("重复上报");
            }
        },
        _ => {
            let accepted = taken;
            story.push("accept", accepted, street(s.street));
            let first = calendar
                .deadline(accepted, s.limit)
                .unwrap_or(accepted + DAY);
            let mut limit = calendar.working_ms_between(accepted, first);
            deadline = first;
            if f.postpone == Some(true) {
                limit += u64::from(POSTPONE_HOURS) * HOUR;
                deadline = calendar
                    .add_working_hours(first, POSTPONE_HOURS)
                    .unwrap_or(first);
            }
            // The working time from acceptance to closing: within the limit, or past it.
            let factor = if s.late {
                rng.gen_range(1.15..2.5)
            } else {
                rng.gen_range(0.35..0.9)
            };
            let span = ((limit as f64) * factor) as u64;
            let at = |x: f64| story.after(accepted, span, x);
            let (dispatch, returned, redispatch) = (at(0.04), at(0.08), at(0.12));
            let (start, asked, decided) = (at(0.2), at(0.3), at(0.34));
            let supervised = at(0.45);
            let (handled, failed, restart, rehandled) = (at(0.55), at(0.62), at(0.68), at(0.85));
            let closed = at(1.0);
            let right = s.right_department;
            let mut steps: Vec<(u64, &'static str, By)> = Vec::new();
            if f.end != End::Accepted {
                if f.wrong_department {
                    steps.push((dispatch, "dispatch", street(s.street)));
                    steps.push((returned, "return", department(s.wrong_department)));
                    steps.push((redispatch, "dispatch", street(s.street)));
                } else {
                    steps.push((dispatch, "dispatch", street(s.street)));
                }
            }
            let started = matches!(f.end, End::InProgress | End::Handled | End::Closed);
            if started {
                steps.push((start, "start", department(right)));
                if let Some(approved) = f.postpone {
                    steps.push((asked, "request_postpone", department(right)));
                    let decision = if approved {
                        "approve_postpone"
                    } else {
                        "deny_postpone"
                    };
                    steps.push((decided, decision, DISTRICT));
                }
            }
            if f.supervise && f.end != End::Accepted {
                steps.push((supervised.max(dispatch + MINUTE), "supervise", DISTRICT));
            }
            if matches!(f.end, End::Handled | End::Closed) {
                if f.reworks > 0 {
                    steps.push((handled, "handle", department(right)));
                    steps.push((failed, "verify_fail", street(s.street)));
                    steps.push((restart, "start", department(right)));
                    steps.push((rehandled, "handle", department(right)));
                } else {
                    steps.push((rehandled, "handle", department(right)));
                }
            }
            if f.end == End::Closed {
                steps.push((closed, "verify_ok", street(s.street)));
                if f.rating.is_some() {
                    let rated = closed + rng.gen_range(HOUR..30 * HOUR);
                    steps.push((rated, "rate", REPORTER));
                }
            }
            // Same-instant steps keep their planned order.
            steps.sort_by_key(|(t, _, _)| *t);
            let mut dispatches = 0;
            for (t, action, by) in steps {
                let e = story.push(action, t, by);
                match action {
                    "dispatch" => {
                        e.department = Some(if f.wrong_department && dispatches == 0 {
                            s.wrong_department.clone()
                        } else {
                            right.clone()
                        });
                        dispatches += 1;
                    }
                    "return" => e.reason = Some("不属于本部门职责，请重新派遣"),
                    "request_postpone" => {
                        e.hours = Some(POSTPONE_HOURS);
                        e.reason = Some("需协调产权单位，申请延期");
                    }
                    "approve_postpone" => e.note = Some("同意延期"),
                    "deny_postpone" => e.reason = Some("不符合延期条件，请按期办结"),
                    "supervise" => e.note = Some("请加快处置并反馈"),
                    "handle" => e.note = Some("已处置完毕"),
                    "verify_fail" => e.reason = Some("现场复核未整改到位，请返工"),
                    "rate" => e.rating = f.rating,
                    _ => {}
                }
            }
        }
    }
    // What has not happened yet is not history.
    let happened = story
        .entries
        .iter()
        .take_while(|e| e.at_ms <= s.until_ms)
        .count();
    story.entries.truncate(happened);
    (story.entries, deadline)
}

/// The whole history, deterministic for a seed and an end instant.
pub fn plan(
    args: &HistoryArgs,
    grids: &[GridShape],
    catalog: &Catalog,
    calendar: &Calendar,
    until_ms: u64,
) -> Vec<HistoricalClue> {
    let mut rng = StdRng::seed_from_u64(args.seed ^ 0x6869_7374);
    let codes: Vec<CategoryCode> = catalog
        .categories()
        .iter()
        .map(|c| c.code.clone())
        .collect();
    let mut departments: Vec<&DepartmentCode> =
        catalog.departments().iter().map(|d| &d.code).collect();
    departments.sort_unstable();
    let mut streets: Vec<StreetCode> = grids.iter().map(|g| g.street).collect();
    streets.sort_unstable();
    streets.dedup();
    let today = (until_ms + OFFSET_MS) / DAY * DAY - OFFSET_MS;
    // First the reports: where, what, when. A draw within the dedupe radius of an earlier report
    // of its category could be made a duplicate of it (the processor would say so), which an old
    // system's records with their own timelines are not: it is drawn again.
    struct Drawn {
        source_id: String,
        street: StreetCode,
        lat: f64,
        lon: f64,
        category: CategoryCode,
        description: &'static str,
        reported_at_ms: u64,
    }
    let mut placed: HashMap<CategoryCode, Vec<(f64, f64)>> = HashMap::new();
    let mut drawn: Vec<Drawn> = Vec::with_capacity(args.count);
    let mut i = 0;
    while drawn.len() < args.count {
        i += 1;
        let street = streets[rng.gen_range(0..streets.len())];
        let in_street: Vec<&GridShape> = grids.iter().filter(|g| g.street == street).collect();
        let grid = in_street[rng.gen_range(0..in_street.len())];
        let Some((lon, lat)) = point_in(&grid.polygon, &mut rng) else {
            continue;
        };
        let category = pick_category(&codes, &mut rng);
        let description = DESCRIPTIONS[rng.gen_range(0..DESCRIPTIONS.len())];
        let day = rng.gen_range(1..=u64::from(args.days.max(1)));
        let reported_at_ms = whole_seconds(today - day * DAY + rng.gen_range(7 * HOUR..21 * HOUR));
        // Whatever the time between them: an import is not read strictly in time order (its
        // clues are sent concurrently), and the dedupe stage compares by the order it reads.
        let near = placed.get(&category).is_some_and(|ps| {
            ps.iter()
                .any(|&(la, lo)| metres(la, lo, lat, lon) < DEDUPE_RADIUS_M)
        });
        if near {
            continue;
        }
        placed.entry(category.clone()).or_default().push((lat, lon));
        drawn.push(Drawn {
            source_id: format!("{}-{i:06}", args.seed),
            street,
            lat,
            lon,
            category,
            description,
            reported_at_ms,
        });
    }
    // Then the stories, in the order the reports came in: an import is read in that order (the
    // dedupe stage compares a report with the ones placed before it), and a merge goes into a
    // clue reported earlier.
    drawn.sort_by(|a, b| (a.reported_at_ms, &a.source_id).cmp(&(b.reported_at_ms, &b.source_id)));
    let mut merge_targets: HashMap<(StreetCode, CategoryCode), String> = HashMap::new();
    let mut out = Vec::with_capacity(drawn.len());
    for d in drawn {
        let fate = fate(args.seed, &d.source_id);
        let late = rng.gen_bool(LATE_SHARE);
        let spec = catalog
            .get(d.category.as_str())
            .expect("categories come from the catalog");
        let right = &spec.department;
        let others: Vec<&DepartmentCode> = departments
            .iter()
            .copied()
            .filter(|x| *x != right)
            .collect();
        let wrong = others[rng.gen_range(0..others.len())];
        let key = (d.street, d.category.clone());
        let target = merge_targets.get(&key).cloned();
        let setting = Setting {
            fate,
            late,
            reported_at_ms: d.reported_at_ms,
            street: d.street,
            right_department: right,
            wrong_department: wrong,
            limit: spec.deadline,
            merge_into: target.as_deref(),
            until_ms,
        };
        let (timeline, deadline_ms) = timeline(&setting, calendar, &mut rng);
        if timeline.first().is_some_and(|e| e.action == "accept") {
            merge_targets
                .entry(key)
                .or_insert_with(|| d.source_id.clone());
        }
        out.push(HistoricalClue {
            source_id: d.source_id,
            category: d.category,
            lat: d.lat,
            lon: d.lon,
            description: d.description,
            reported_at: rfc3339(d.reported_at_ms),
            reported_at_ms: d.reported_at_ms,
            timeline,
            fate,
            late,
            deadline_ms,
        });
    }
    out
}

pub async fn run(args: HistoryArgs) -> anyhow::Result<()> {
    let (grids, _) = load_map(&args.map)?;
    let catalog = Catalog::load(&args.data_dir.join("categories.json"))?;
    let calendar = Calendar::load(&args.data_dir.join("calendar.json"))?;
    let until_ms = args.until_ms.unwrap_or_else(gridclue_core::wire::now_ms);
    let clues = plan(&args, &grids, &catalog, &calendar, until_ms);
    let actions: usize = clues.iter().map(|c| c.timeline.len()).sum();
    eprintln!(
        "importing {} historical clues ({actions} actions over {} days) into {}",
        clues.len(),
        args.days,
        args.ingest_url
    );
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()?;
    let url = format!("{}/v1/import/clues", args.ingest_url.trim_end_matches('/'));
    let started = Instant::now();
    let mut tally: std::collections::BTreeMap<String, u64> = Default::default();
    let mut sent = 0;
    for chunk in clues.chunks(args.batch.max(1)) {
        let body = serde_json::json!({ "source": args.source, "clues": chunk });
        let mut wait = Duration::from_millis(200);
        let answer: Value = loop {
            let r = http
                .post(&url)
                .bearer_auth(&args.district_token)
                .json(&body)
                .send()
                .await
                .context("posting an import batch")?;
            match r.status().as_u16() {
                200 | 202 => break r.json().await?,
                429 | 503 => {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
                s => anyhow::bail!("import refused: HTTP {s}: {}", r.text().await?),
            }
        };
        for result in answer["results"].as_array().into_iter().flatten() {
            let what = match result["status"].as_str() {
                Some("error") => format!("error {}", result["code"].as_str().unwrap_or("?")),
                Some(s) => s.to_owned(),
                None => "unreadable".to_owned(),
            };
            *tally.entry(what).or_default() += 1;
        }
        sent += chunk.len();
        eprint!("\r{sent}/{} clues sent", clues.len());
    }
    eprintln!();
    println!(
        "history: {} clues in {:.1} s: {}",
        clues.len(),
        started.elapsed().as_secs_f64(),
        tally
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let errors: u64 = tally
        .iter()
        .filter(|(k, _)| k.starts_with("error"))
        .map(|(_, v)| v)
        .sum();
    anyhow::ensure!(errors == 0, "{errors} historical clues were refused");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(path: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../data")
            .join(path)
    }

    fn history(count: usize, until_ms: u64) -> (Vec<HistoricalClue>, Calendar) {
        let args = HistoryArgs {
            ingest_url: String::new(),
            district_token: String::new(),
            map: data("district/grids.geojson").display().to_string(),
            data_dir: data(""),
            seed: 11,
            days: 30,
            count,
            batch: 100,
            source: "test".into(),
            until_ms: Some(until_ms),
        };
        let (grids, _) = load_map(&args.map).unwrap();
        let catalog = Catalog::load(&data("categories.json")).unwrap();
        let calendar = Calendar::load(&data("calendar.json")).unwrap();
        (plan(&args, &grids, &catalog, &calendar, until_ms), calendar)
    }

    /// 2026-11-20 12:00 in China.
    const UNTIL: u64 = 1_795_147_200_000;

    #[test]
    fn history_is_deterministic_ordered_and_in_the_past() {
        let (a, _) = history(400, UNTIL);
        let (b, _) = history(400, UNTIL);
        assert_eq!(a, b);
        assert!(
            a.windows(2)
                .all(|w| w[0].reported_at_ms <= w[1].reported_at_ms),
            "in the order the reports came in"
        );
        for c in &a {
            assert!(c.reported_at_ms < UNTIL && c.reported_at_ms >= UNTIL - 31 * DAY);
            let mut last = c.reported_at_ms;
            for e in &c.timeline {
                assert!(
                    e.at_ms >= last,
                    "{}: {} goes back in time",
                    c.source_id,
                    e.action
                );
                assert!(e.at_ms <= UNTIL);
                last = e.at_ms;
            }
        }
    }

    #[test]
    fn no_report_repeats_a_nearby_report_of_its_category() {
        let (clues, _) = history(1500, UNTIL);
        for (i, a) in clues.iter().enumerate() {
            for b in &clues[..i] {
                let near = a.category == b.category && metres(a.lat, a.lon, b.lat, b.lon) < 50.0;
                assert!(!near, "{} repeats {}", a.source_id, b.source_id);
            }
        }
    }

    #[test]
    fn closed_clues_are_on_time_or_late_as_planned() {
        let (clues, _) = history(1500, UNTIL);
        let mut on_time = 0;
        let mut late = 0;
        for c in &clues {
            let Some(closed) = c.timeline.iter().find(|e| e.action == "verify_ok") else {
                continue;
            };
            assert!(c.deadline_ms > 0);
            if c.late {
                assert!(
                    closed.at_ms > c.deadline_ms,
                    "{} was planned late",
                    c.source_id
                );
                late += 1;
            } else {
                assert!(
                    closed.at_ms <= c.deadline_ms,
                    "{} was planned on time",
                    c.source_id
                );
                on_time += 1;
            }
        }
        assert!(on_time > 500 && late > 50, "on time {on_time}, late {late}");
    }

    #[test]
    fn timelines_follow_the_loop_and_name_who_acted() {
        let (clues, _) = history(1500, UNTIL);
        let mut seen: std::collections::BTreeSet<&str> = Default::default();
        for c in &clues {
            for e in &c.timeline {
                seen.insert(e.action);
                let role = match e.action {
                    "accept" | "reject" | "merge" | "dispatch" | "verify_ok" | "verify_fail" => {
                        "street"
                    }
                    "start" | "handle" | "return" | "request_postpone" => "department",
                    "approve_postpone" | "deny_postpone" | "supervise" => "district",
                    "withdraw" | "rate" => "reporter",
                    other => panic!("unexpected action {other}"),
                };
                assert_eq!(e.by.role, role, "{}: {}", c.source_id, e.action);
            }
            // A dispatched clue names its department; the last dispatch is the responsible one.
            if let Some(d) = c.timeline.iter().rev().find(|e| e.action == "dispatch") {
                let handled_by = c.timeline.iter().find(|e| e.action == "handle");
                if let Some(h) = handled_by {
                    assert_eq!(
                        h.by.scope.as_ref().and_then(ActorScope::department),
                        d.department.as_ref()
                    );
                }
            }
        }
        for action in [
            "accept",
            "reject",
            "merge",
            "dispatch",
            "return",
            "start",
            "request_postpone",
            "approve_postpone",
            "deny_postpone",
            "supervise",
            "handle",
            "verify_fail",
            "verify_ok",
            "withdraw",
            "rate",
        ] {
            assert!(seen.contains(action), "no {action} in a month of history");
        }
        // Old open clues are overdue at the end of the history: every dashboard number moves.
        let overdue_open = clues
            .iter()
            .filter(|c| {
                c.deadline_ms > 0
                    && c.deadline_ms < UNTIL
                    && !c.timeline.iter().any(|e| e.action == "verify_ok")
            })
            .count();
        assert!(overdue_open > 20, "{overdue_open}");
        let json = serde_json::to_value(&clues[0]).unwrap();
        assert!(json["reported_at"].as_str().unwrap().ends_with("+08:00"));
        assert!(json.get("fate").is_none());
    }
}
