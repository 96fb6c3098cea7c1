//! Dedupe across the whole district, deterministically (pure, synchronous).
//!
//! Commands are keyed by clue id, so two reports of the same problem usually land in different
//! partitions of `clues.commands`, owned by different processors. The clue processor therefore
//! does not decide duplicates itself: it places a report, holds the clue *pending*, and forwards
//! a [`DedupeKind::Placed`] record to `clues.dedupe`, keyed by the owner street (属地). When a
//! case becomes terminal it forwards [`DedupeKind::Closed`] the same way. The dedupe stage owns
//! each street's log (one writer per street), folds it with [`DedupeStage::fold`] and sends a
//! verdict command back to the clue's partition; only then does the clue's first fact appear.
//!
//! # Rule
//!
//! A placed report R is `duplicate_of` clue A when, in R's street log,
//!
//! 1. A was placed before R and is a case (not itself a duplicate),
//! 2. A has the same category,
//! 3. A was not closed (closed, rejected, merged) before R in the log,
//! 4. A was reported at most `window` before R (issue times), and
//! 5. A is within `radius` metres of R (great-circle distance).
//!
//! Among several: the nearest, then the one placed first. Two reports in different streets are
//! never duplicates: each street office owns its own cases, and merging would move one street's
//! case into another's.
//!
//! Why it is replay-safe: the verdict on the record at offset `q` depends only on the records
//! before `q` in the same partition, so a stage that restarts, or takes a partition over,
//! rebuilds its state by folding the partition from its start up to where it resumes and then
//! decides exactly as the first run did. A report placed twice (the clue processor re-sends its
//! outbox after a crash) gets its first verdict again. The topic's retention must therefore
//! exceed the dedupe window (plus slack), which it does by a wide margin at a district's rates.

use std::collections::HashMap;

use gridclue_core::category::CategoryCode;
use gridclue_core::grid::StreetCode;
use gridclue_core::ClueId;
use serde::{Deserialize, Serialize};

/// Version of [`DedupeRecord`].
pub const DEDUPE_VERSION: u16 = 1;
/// Mean Earth radius (m).
const EARTH_RADIUS_M: f64 = 6_371_008.8;
/// Slack on issue times when forgetting old clues (clock skew between ingest nodes).
const FORGET_SLACK_MS: u64 = 24 * 3_600_000;
/// Records folded between two sweeps of forgettable clues.
const SWEEP_EVERY: u64 = 10_000;

/// Dedupe parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DedupeConfig {
    pub radius_m: f64,
    pub window_ms: u64,
}

impl Default for DedupeConfig {
    fn default() -> Self {
        Self {
            radius_m: 50.0,
            window_ms: 24 * 3_600_000,
        }
    }
}

/// A record of `clues.dedupe` (key = the owner street's 9-digit code).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DedupeRecord {
    pub v: u16,
    pub clue_id: ClueId,
    #[serde(flatten)]
    pub kind: DedupeKind,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DedupeKind {
    /// A report placed inside the district, waiting for its verdict.
    Placed {
        /// The owner street (also the record's key): reports of other streets in the same
        /// partition are never compared with it.
        street_code: StreetCode,
        category: CategoryCode,
        lat: f64,
        lon: f64,
        reported_at_ms: u64,
        /// The partition of `clues.commands` that owns the clue: the verdict goes there.
        commands_partition: i32,
    },
    /// A case became terminal: later reports are no longer its duplicates.
    Closed,
}

impl DedupeRecord {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("dedupe records serialize")
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, gridclue_core::wire::DecodeError> {
        gridclue_core::wire::decode_versioned(bytes, "dedupe record", DEDUPE_VERSION)
    }
}

/// The stage's answer to a placed report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub clue_id: ClueId,
    pub duplicate_of: Option<ClueId>,
    pub commands_partition: i32,
}

/// Great-circle distance in metres.
pub fn distance_m(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = p2 - p1;
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_M * a.sqrt().min(1.0).asin()
}

#[derive(Clone, Debug)]
struct Case {
    street_code: StreetCode,
    category: CategoryCode,
    lat: f64,
    lon: f64,
    reported_at_ms: u64,
    offset: i64,
    bucket: (i64, i64),
}

#[derive(Clone, Copy, Debug)]
struct Decided {
    reported_at_ms: u64,
    verdict: Verdict,
}

/// One partition of `clues.dedupe`, folded: the open cases in a spatial hash of ~radius-sized
/// buckets, and every verdict given within the window (to answer a re-sent report the same way).
#[derive(Debug)]
pub struct DedupeStage {
    cfg: DedupeConfig,
    bucket_deg: f64,
    buckets: HashMap<(i64, i64), Vec<ClueId>>,
    open: HashMap<ClueId, Case>,
    decided: HashMap<ClueId, Decided>,
    latest_reported_ms: u64,
    since_sweep: u64,
}

impl DedupeStage {
    pub fn new(cfg: DedupeConfig) -> Self {
        Self {
            cfg,
            bucket_deg: (cfg.radius_m.max(1.0) / (EARTH_RADIUS_M * std::f64::consts::PI / 180.0))
                .max(1e-7),
            buckets: HashMap::new(),
            open: HashMap::new(),
            decided: HashMap::new(),
            latest_reported_ms: 0,
            since_sweep: 0,
        }
    }

    /// Open cases that later reports may duplicate.
    pub fn open_cases(&self) -> usize {
        self.open.len()
    }

    fn bucket(&self, lat: f64, lon: f64) -> (i64, i64) {
        (
            (lat / self.bucket_deg).floor() as i64,
            (lon / self.bucket_deg).floor() as i64,
        )
    }

    /// Folds the record at `offset` (records must come in offset order); returns the verdict
    /// when it is a placed report.
    pub fn fold(&mut self, offset: i64, record: &DedupeRecord) -> Option<Verdict> {
        self.since_sweep += 1;
        if self.since_sweep >= SWEEP_EVERY {
            self.since_sweep = 0;
            self.forget_old();
        }
        let id = record.clue_id;
        match &record.kind {
            DedupeKind::Closed => {
                self.close(id);
                None
            }
            DedupeKind::Placed {
                street_code,
                category,
                lat,
                lon,
                reported_at_ms,
                commands_partition,
            } => {
                if let Some(d) = self.decided.get(&id) {
                    return Some(d.verdict);
                }
                self.latest_reported_ms = self.latest_reported_ms.max(*reported_at_ms);
                let duplicate_of = self.find(*street_code, category, *lat, *lon, *reported_at_ms);
                let verdict = Verdict {
                    clue_id: id,
                    duplicate_of,
                    commands_partition: *commands_partition,
                };
                self.decided.insert(
                    id,
                    Decided {
                        reported_at_ms: *reported_at_ms,
                        verdict,
                    },
                );
                if duplicate_of.is_none() {
                    let bucket = self.bucket(*lat, *lon);
                    self.buckets.entry(bucket).or_default().push(id);
                    self.open.insert(
                        id,
                        Case {
                            street_code: *street_code,
                            category: category.clone(),
                            lat: *lat,
                            lon: *lon,
                            reported_at_ms: *reported_at_ms,
                            offset,
                            bucket,
                        },
                    );
                }
                Some(verdict)
            }
        }
    }

    fn close(&mut self, id: ClueId) {
        if let Some(c) = self.open.remove(&id) {
            if let Some(ids) = self.buckets.get_mut(&c.bucket) {
                ids.retain(|x| *x != id);
                if ids.is_empty() {
                    self.buckets.remove(&c.bucket);
                }
            }
        }
    }

    /// The open case a report duplicates, by the rule in the module docs.
    fn find(
        &self,
        street_code: StreetCode,
        category: &CategoryCode,
        lat: f64,
        lon: f64,
        at_ms: u64,
    ) -> Option<ClueId> {
        let (by, bx) = self.bucket(lat, lon);
        // Buckets are square in degrees; a degree of longitude is shorter than one of latitude
        // by cos(latitude), so look further east and west.
        let span_lat =
            (self.cfg.radius_m / (EARTH_RADIUS_M * std::f64::consts::PI / 180.0) / self.bucket_deg)
                .ceil() as i64;
        let cos = (lat.abs() + 1.0).min(89.0).to_radians().cos();
        let span_lon = (span_lat as f64 / cos).ceil() as i64;
        let mut best: Option<(f64, i64, ClueId)> = None;
        for y in by - span_lat..=by + span_lat {
            for x in bx - span_lon..=bx + span_lon {
                for id in self.buckets.get(&(y, x)).into_iter().flatten() {
                    let c = &self.open[id];
                    if c.category != *category
                        || c.street_code != street_code
                        || c.reported_at_ms.saturating_add(self.cfg.window_ms) < at_ms
                    {
                        continue;
                    }
                    let d = distance_m(lat, lon, c.lat, c.lon);
                    if d > self.cfg.radius_m {
                        continue;
                    }
                    if best.is_none_or(|(bd, bo, _)| d < bd || (d == bd && c.offset < bo)) {
                        best = Some((d, c.offset, *id));
                    }
                }
            }
        }
        best.map(|(_, _, id)| id)
    }

    /// Drops what no later report can match or re-send: reported more than the window (plus
    /// slack for clock skew) before the latest report folded.
    fn forget_old(&mut self) {
        let horizon = self
            .latest_reported_ms
            .saturating_sub(self.cfg.window_ms.saturating_add(FORGET_SLACK_MS));
        let old: Vec<ClueId> = self
            .open
            .iter()
            .filter(|(_, c)| c.reported_at_ms < horizon)
            .map(|(id, _)| *id)
            .collect();
        for id in old {
            self.close(id);
        }
        self.decided.retain(|_, d| d.reported_at_ms >= horizon);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn id(n: u128) -> ClueId {
        ClueId(Uuid::from_u128(n))
    }

    fn placed(n: u128, category: &str, lat: f64, lon: f64, at: u64) -> DedupeRecord {
        placed_in("310101001", n, category, lat, lon, at)
    }

    fn placed_in(
        street: &str,
        n: u128,
        category: &str,
        lat: f64,
        lon: f64,
        at: u64,
    ) -> DedupeRecord {
        DedupeRecord {
            v: DEDUPE_VERSION,
            clue_id: id(n),
            kind: DedupeKind::Placed {
                street_code: StreetCode::parse(street).unwrap(),
                category: CategoryCode::parse(category).unwrap(),
                lat,
                lon,
                reported_at_ms: at,
                commands_partition: (n % 4) as i32,
            },
        }
    }

    fn closed(n: u128) -> DedupeRecord {
        DedupeRecord {
            v: DEDUPE_VERSION,
            clue_id: id(n),
            kind: DedupeKind::Closed,
        }
    }

    /// ~`m` metres north of `lat`.
    fn north(lat: f64, m: f64) -> f64 {
        lat + m / 111_195.0
    }

    const H: u64 = 3_600_000;
    const LAT: f64 = 31.23;
    const LON: f64 = 121.47;

    fn run(records: &[DedupeRecord]) -> Vec<Option<Verdict>> {
        let mut stage = DedupeStage::new(DedupeConfig::default());
        records
            .iter()
            .enumerate()
            .map(|(i, r)| stage.fold(i as i64, r))
            .collect()
    }

    #[test]
    fn the_rule_same_category_within_radius_and_window_of_an_open_case() {
        let log = [
            placed(1, "garbage_pile", LAT, LON, 0),
            // 20 m away, an hour later: a duplicate of 1, sent back to its own partition.
            placed(2, "garbage_pile", north(LAT, 20.0), LON, H),
            // Another category at the same spot; the same category 80 m away: cases.
            placed(3, "manhole_cover", LAT, LON, H),
            placed(4, "garbage_pile", north(LAT, 80.0), LON, H),
            // 45 m from 2 (a duplicate, never a target) and 65 m from 1: a duplicate of 4 (15 m).
            placed(5, "garbage_pile", north(LAT, 65.0), LON, 2 * H),
            // More than 24 h after 1, and 15 m from it: not a duplicate of 1 (4 is 65 m away).
            placed(6, "garbage_pile", north(LAT, 15.0), LON, 25 * H),
            // 5 m from 4 but filed under another street (same partition): never compared.
            placed_in("310101002", 7, "garbage_pile", north(LAT, 85.0), LON, 2 * H),
        ];
        let dup: Vec<Option<ClueId>> = run(&log)
            .into_iter()
            .map(|v| v.unwrap().duplicate_of)
            .collect();
        assert_eq!(
            dup,
            vec![None, Some(id(1)), None, None, Some(id(4)), None, None]
        );
        assert_eq!(run(&log)[1].unwrap().commands_partition, 2);
    }

    #[test]
    fn the_nearest_open_case_wins_then_the_first_placed() {
        let log = [
            placed(1, "garbage_pile", north(LAT, 30.0), LON, 0),
            placed(2, "garbage_pile", north(LAT, -30.0), LON, 0),
            placed(3, "garbage_pile", north(LAT, 100.0), LON, 0),
            // 30 m from 1 and from 2, 100 m from 3: the first placed of the two nearest.
            placed(4, "garbage_pile", LAT, LON, H),
            // 25 m from 3, 45 m from 1: the nearest.
            placed(5, "garbage_pile", north(LAT, 75.0), LON, H),
        ];
        let v = run(&log);
        assert_eq!(v[3].unwrap().duplicate_of, Some(id(1)));
        assert_eq!(v[4].unwrap().duplicate_of, Some(id(3)));
    }

    #[test]
    fn a_closed_case_is_no_longer_a_target_from_its_place_in_the_log_on() {
        let log = [
            placed(1, "food_safety", LAT, LON, 0),
            placed(2, "food_safety", LAT, LON, H),
            closed(1),
            placed(3, "food_safety", LAT, LON, 2 * H),
            // A closed notice of a clue that never was a case changes nothing.
            closed(2),
            placed(4, "food_safety", LAT, LON, 3 * H),
        ];
        let v = run(&log);
        assert_eq!(v[1].unwrap().duplicate_of, Some(id(1)));
        assert_eq!(v[2], None);
        assert_eq!(v[3].unwrap().duplicate_of, None, "1 closed before 3");
        assert_eq!(v[5].unwrap().duplicate_of, Some(id(3)));
    }

    #[test]
    fn a_re_sent_report_gets_its_first_verdict_and_is_not_a_target_twice() {
        let log = [
            placed(1, "food_safety", LAT, LON, 0),
            placed(2, "food_safety", LAT, LON, H),
            closed(1),
            // Both placed again (the clue processor re-sent its outbox after a crash).
            placed(1, "food_safety", LAT, LON, 0),
            placed(2, "food_safety", LAT, LON, H),
            placed(3, "food_safety", LAT, LON, 2 * H),
        ];
        let v = run(&log);
        assert_eq!(v[3].unwrap().duplicate_of, None);
        assert_eq!(v[4].unwrap().duplicate_of, Some(id(1)));
        assert_eq!(
            v[5].unwrap().duplicate_of,
            None,
            "1 stays closed after it was placed again"
        );
    }

    #[test]
    fn folding_the_same_log_from_its_start_gives_the_same_verdicts() {
        let mut log = Vec::new();
        let mut s = 7u64;
        for n in 0..3_000u128 {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let dlat = (s >> 40) as f64 / (1u64 << 24) as f64 * 0.003;
            let dlon = (s >> 16 & 0xff_ffff) as f64 / (1u64 << 24) as f64 * 0.003;
            let cat = ["garbage_pile", "food_safety"][(s & 1) as usize];
            log.push(placed(n, cat, LAT + dlat, LON + dlon, n as u64 * 60_000));
            if s.is_multiple_of(5) && n > 10 {
                log.push(closed(n - 10));
            }
        }
        let first = run(&log);
        assert!(first.iter().flatten().any(|v| v.duplicate_of.is_some()));
        // A stage that takes over at offset k folds 0..k silently, then decides k.. itself.
        let k = log.len() / 2;
        let mut stage = DedupeStage::new(DedupeConfig::default());
        for (i, r) in log[..k].iter().enumerate() {
            stage.fold(i as i64, r);
        }
        for (i, r) in log.iter().enumerate().skip(k) {
            assert_eq!(stage.fold(i as i64, r), first[i], "record {i}");
        }
    }

    #[test]
    fn old_cases_are_forgotten_and_records_round_trip() {
        let mut stage = DedupeStage::new(DedupeConfig::default());
        for n in 0..SWEEP_EVERY as u128 + 1 {
            // One report an hour, each 100 m further north: none duplicates another.
            let r = placed(
                n,
                "garbage_pile",
                north(LAT, 100.0 * n as f64),
                LON,
                n as u64 * H,
            );
            assert_eq!(stage.fold(n as i64, &r).unwrap().duplicate_of, None);
        }
        // Kept: the window (24 h) plus the skew slack (24 h) before the latest report.
        assert!(stage.open_cases() < 100, "{} open", stage.open_cases());
        let r = placed(9, "garbage_pile", LAT, LON, 5);
        assert_eq!(DedupeRecord::decode(&r.encode()).unwrap(), r);
        assert!(DedupeRecord::decode(
            br#"{"v":2,"clue_id":"00000000-0000-0000-0000-000000000001","type":"closed"}"#
        )
        .is_err());
        assert!(DedupeRecord::decode(b"nope").is_err());
    }
}
