//! Emerging-hotspot detection: a pure, synchronous fold over a totally ordered log of cases and
//! clock ticks (no I/O). The method and why its parameters are what they are: ARCHITECTURE.md §8.
//!
//! For every new case (a report inside the district that is not a duplicate) the detector
//! scans the case's grid and every neighbourhood that contains it (a grid and the grids touching
//! it) for the case's category, over windows of 1–7 days ending at the case. A window holding at
//! least `min_count` cases whose Poisson tail probability under the expected count is small
//! enough (recurrence interval ≥ `min_recurrence_days`) raises an alert. The expected count is
//! learned from the cases seen before the window (a guard band away), pooled upward grid →
//! community → street → district for sparse cells, and scaled by the category's recent
//! district-wide level (season).
//!
//! An open alert absorbs later cases of its category in its place or a grid touching it: the
//! alert's version goes up (state `ongoing`), no new alert is raised. It closes once no case has
//! joined for `close_after_days` (a last version, state `closed`).
//!
//! Determinism: the fold's outputs depend only on the sequence of inputs. A case folded twice
//! (a replayed input) changes nothing and emits nothing; alert ids derive from the place, the
//! category and the clue that raised the alert, versions count the alert's changes. Folding the
//! same log again therefore yields the same alerts with the same ids and versions.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::category::CategoryCode;
use crate::grid::{CommunityCode, GridCode, StreetCode};
use crate::ids::ClueId;
use crate::wire::{self, DecodeError};

pub const DAY_MS: u64 = 86_400_000;

/// Recurrence intervals are reported up to this (≈ 2.7 million years): beyond it the number
/// says nothing more.
pub const MAX_RECURRENCE_DAYS: f64 = 1e9;

const ALERT_NAMESPACE: Uuid = Uuid::from_u128(0x9d3e_41b7_2a6c_4f18_8e05_c7b2_61d9_0a3f);

/// The detector's parameters (ARCHITECTURE.md §8 says why these defaults).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HotspotParams {
    /// Scan windows, in days, each ending at the case being tested.
    pub windows_days: Vec<u32>,
    /// Fewest cases in a window that may raise an alert.
    pub min_count: u32,
    /// A window raises an alert when such a count would happen by chance at most once in this
    /// many days (per place and category, windows Bonferroni-corrected).
    pub min_recurrence_days: f64,
    /// History the expected rate is learned from (days before the guard band).
    pub baseline_days: u32,
    /// Days just before a case left out of its baseline, so an emerging cluster does not raise
    /// its own expectation.
    pub guard_days: u32,
    /// Weight of the parent level's rate in a cell's rate, in grid-days of exposure (a cell
    /// with far less history than this mostly gets its parent's rate).
    pub prior_grid_days: f64,
    /// Cases per grid, category and year assumed before any history is seen (the district-wide
    /// rate a new detector starts from; history outweighs it within days).
    pub prior_cases_per_grid_category_year: f64,
    /// Days over which a category's district-wide level is compared with its baseline (season).
    pub season_days: u32,
    /// Bounds of that seasonal factor.
    pub season_min: f64,
    pub season_max: f64,
    /// An alert closes after this many days without a case joining it.
    pub close_after_days: u32,
}

impl Default for HotspotParams {
    fn default() -> Self {
        Self {
            windows_days: vec![1, 2, 3, 5, 7],
            min_count: 3,
            min_recurrence_days: 3650.0,
            baseline_days: 365,
            guard_days: 7,
            prior_grid_days: 90.0,
            prior_cases_per_grid_category_year: 0.25,
            season_days: 28,
            season_min: 0.5,
            season_max: 3.0,
            close_after_days: 7,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ParamsError {
    #[error("hotspot windows must be 1–60 days each, at least one: {0:?}")]
    Windows(Vec<u32>),
    #[error("hotspot {0} must be positive")]
    NotPositive(&'static str),
    #[error("hotspot season bounds must satisfy 0 < min ≤ 1 ≤ max")]
    Season,
}

impl HotspotParams {
    pub fn validate(&self) -> Result<(), ParamsError> {
        if self.windows_days.is_empty() || self.windows_days.iter().any(|w| !(1..=60).contains(w)) {
            return Err(ParamsError::Windows(self.windows_days.clone()));
        }
        for (name, ok) in [
            ("min_count", self.min_count > 0),
            ("min_recurrence_days", self.min_recurrence_days > 0.0),
            ("baseline_days", self.baseline_days > 0),
            ("prior_grid_days", self.prior_grid_days > 0.0),
            (
                "prior_cases_per_grid_category_year",
                self.prior_cases_per_grid_category_year > 0.0,
            ),
            ("season_days", self.season_days > 0),
            ("close_after_days", self.close_after_days > 0),
        ] {
            if !ok {
                return Err(ParamsError::NotPositive(name));
            }
        }
        if !(self.season_min > 0.0 && self.season_min <= 1.0 && self.season_max >= 1.0) {
            return Err(ParamsError::Season);
        }
        Ok(())
    }

    fn longest_window_ms(&self) -> u64 {
        u64::from(self.windows_days.iter().copied().max().unwrap_or(1)) * DAY_MS
    }
}

/// Which grids touch which: built from the district map's polygons, whose neighbours share
/// bit-identical vertices (two grids touch when they share a vertex, an edge's end included).
#[derive(Clone, Debug, Default)]
pub struct Neighbours {
    touching: HashMap<GridCode, Vec<GridCode>>,
    grids_per_community: HashMap<CommunityCode, u32>,
    grids_per_street: HashMap<StreetCode, u32>,
    grids: u32,
}

impl Neighbours {
    /// From every grid's vertices (lon, lat) in any ring.
    pub fn from_vertices<I, V>(grids: I) -> Self
    where
        I: IntoIterator<Item = (GridCode, V)>,
        V: IntoIterator<Item = [f64; 2]>,
    {
        let mut by_vertex: HashMap<(u64, u64), Vec<GridCode>> = HashMap::new();
        let mut all = Vec::new();
        for (grid, vertices) in grids {
            all.push(grid);
            for [x, y] in vertices {
                let owners = by_vertex.entry((x.to_bits(), y.to_bits())).or_default();
                if owners.last() != Some(&grid) {
                    owners.push(grid);
                }
            }
        }
        let mut touching: HashMap<GridCode, Vec<GridCode>> =
            all.iter().map(|g| (*g, Vec::new())).collect();
        for owners in by_vertex.values() {
            for a in owners {
                for b in owners {
                    if a != b {
                        touching.entry(*a).or_default().push(*b);
                    }
                }
            }
        }
        for list in touching.values_mut() {
            list.sort_unstable();
            list.dedup();
        }
        Self::from_touching(touching)
    }

    /// From an explicit list of touching grids per grid (made symmetric).
    pub fn from_touching(touching: HashMap<GridCode, Vec<GridCode>>) -> Self {
        let mut sym: HashMap<GridCode, Vec<GridCode>> = HashMap::new();
        for (g, list) in &touching {
            sym.entry(*g).or_default();
            for n in list {
                if n != g {
                    sym.entry(*g).or_default().push(*n);
                    sym.entry(*n).or_default().push(*g);
                }
            }
        }
        let mut grids_per_community: HashMap<CommunityCode, u32> = HashMap::new();
        let mut grids_per_street: HashMap<StreetCode, u32> = HashMap::new();
        for (g, list) in sym.iter_mut() {
            list.sort_unstable();
            list.dedup();
            *grids_per_community.entry(g.community_code()).or_default() += 1;
            *grids_per_street.entry(g.street_code()).or_default() += 1;
        }
        let grids = sym.len() as u32;
        Self {
            touching: sym,
            grids_per_community,
            grids_per_street,
            grids,
        }
    }

    /// The grids touching `grid` (not `grid` itself), sorted.
    pub fn touching(&self, grid: &GridCode) -> &[GridCode] {
        self.touching.get(grid).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn grid_count(&self) -> u32 {
        self.grids
    }

    /// The grids of a place, sorted.
    pub fn grids_of(&self, place: &Place) -> Vec<GridCode> {
        match place {
            Place::Grid(g) => vec![*g],
            Place::Neighbourhood(c) => {
                let mut v = vec![*c];
                v.extend_from_slice(self.touching(c));
                v.sort_unstable();
                v
            }
        }
    }
}

/// Where an alert is: one grid, or the neighbourhood of a grid (it and the grids touching it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Place {
    Grid(GridCode),
    Neighbourhood(GridCode),
}

impl Place {
    pub fn kind(&self) -> PlaceKind {
        match self {
            Place::Grid(_) => PlaceKind::Grid,
            Place::Neighbourhood(_) => PlaceKind::Neighbourhood,
        }
    }

    /// The grid the place is named after.
    pub fn centre(&self) -> GridCode {
        match self {
            Place::Grid(g) | Place::Neighbourhood(g) => *g,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlaceKind {
    Grid,
    Neighbourhood,
}

impl PlaceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PlaceKind::Grid => "grid",
            PlaceKind::Neighbourhood => "neighbourhood",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    New,
    Ongoing,
    Closed,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::New => "new",
            AlertState::Ongoing => "ongoing",
            AlertState::Closed => "closed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "new" => Some(AlertState::New),
            "ongoing" => Some(AlertState::Ongoing),
            "closed" => Some(AlertState::Closed),
            _ => None,
        }
    }
}

/// One input of the detector, in the order of its log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HotspotInput {
    /// A new case: a report inside the district that is not a duplicate.
    Case {
        v: u16,
        clue_id: ClueId,
        /// Business time of the report.
        at_ms: u64,
        grid_code: GridCode,
        category: CategoryCode,
    },
    /// The wall clock, so alerts close when no case comes.
    Tick { v: u16, at_ms: u64 },
}

impl HotspotInput {
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        wire::decode_versioned(bytes, "hotspot input", wire::SCHEMA_VERSION)
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("hotspot inputs always serialize")
    }
}

/// One version of an alert, on `clues.alerts` (key = alert id, so its versions stay ordered).
/// `(alert_id, version)` identifies it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlertFact {
    pub v: u16,
    pub alert_id: Uuid,
    /// 1 when raised, one more per change (a case joined, the alert closed).
    pub version: u32,
    pub state: AlertState,
    pub place_kind: PlaceKind,
    /// The grid the place is named after (the neighbourhood's centre).
    pub grid_code: GridCode,
    /// Every grid of the place.
    pub grids: Vec<GridCode>,
    pub community_code: CommunityCode,
    pub street_code: StreetCode,
    pub category: CategoryCode,
    /// The scan window: from its start to the alert's latest case (or the window's end).
    pub window_start_ms: u64,
    pub window_end_ms: u64,
    pub window_days: u32,
    /// Cases of the alert, and the count expected in its place and window by chance.
    pub observed: u32,
    pub expected: f64,
    /// How often (days) a count this high would happen by chance in this place and category.
    pub recurrence_days: f64,
    /// The cases of the alert, in the order they joined.
    pub clue_ids: Vec<ClueId>,
    /// The case that made this version (absent on closing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger_clue_id: Option<ClueId>,
    /// Business time of this version: the triggering case's time, or when the alert closed.
    pub at_ms: u64,
}

impl AlertFact {
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        wire::decode_versioned(bytes, "alert", wire::SCHEMA_VERSION)
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("alerts always serialize")
    }
}

/// The deterministic id of the alert `place` × `category` raised by `clue`.
pub fn alert_id(place: &Place, category: &CategoryCode, clue: ClueId) -> Uuid {
    let name = format!(
        "{}:{}:{}:{}",
        place.kind().as_str(),
        place.centre(),
        category.as_str(),
        clue.0
    );
    Uuid::new_v5(&ALERT_NAMESPACE, name.as_bytes())
}

/// P(X ≥ k) for X ~ Poisson(mean).
pub fn poisson_tail(k: u32, mean: f64) -> f64 {
    if k == 0 {
        return 1.0;
    }
    if mean <= 0.0 {
        return 0.0;
    }
    let kf = f64::from(k);
    if kf <= mean {
        // 1 − P(X ≤ k−1); terms are not tiny here, so the difference is accurate.
        let mut term = (-mean).exp();
        let mut cdf = term;
        for i in 1..k {
            term *= mean / f64::from(i);
            cdf += term;
        }
        return (1.0 - cdf).max(0.0);
    }
    // Far in the tail: sum the (decreasing) terms from k on, starting from log P(X = k).
    let ln_term = -mean + kf * mean.ln() - ln_factorial(k);
    let mut term = ln_term.exp();
    let mut sum = 0.0;
    let mut i = kf;
    while term > sum * 1e-15 && i < kf + 1000.0 {
        sum += term;
        i += 1.0;
        term *= mean / i;
    }
    sum.min(1.0)
}

fn ln_factorial(n: u32) -> f64 {
    (2..=n).map(|i| f64::from(i).ln()).sum()
}

/// Sorted times (with the clue) of the cases of one cell.
#[derive(Clone, Debug, Default)]
struct Times(VecDeque<(u64, ClueId)>);

impl Times {
    fn insert(&mut self, at: u64, clue: ClueId) {
        let i = self.0.partition_point(|e| *e <= (at, clue));
        self.0.insert(i, (at, clue));
    }

    /// Cases with `from ≤ at < to`.
    fn count(&self, from: u64, to: u64) -> u32 {
        if to <= from {
            return 0;
        }
        let a = self.0.partition_point(|(t, _)| *t < from);
        let b = self.0.partition_point(|(t, _)| *t < to);
        (b - a) as u32
    }

    fn clues(&self, from: u64, to: u64) -> impl Iterator<Item = &(u64, ClueId)> {
        let a = self.0.partition_point(|(t, _)| *t < from);
        let b = self.0.partition_point(|(t, _)| *t < to);
        self.0.range(a..b.max(a))
    }

    fn prune_before(&mut self, horizon: u64) {
        while self.0.front().is_some_and(|(t, _)| *t < horizon) {
            self.0.pop_front();
        }
    }
}

#[derive(Clone, Debug)]
struct OpenAlert {
    id: Uuid,
    version: u32,
    place: Place,
    /// The place's grids and the grids touching them: where a case joins the alert.
    catchment: HashSet<GridCode>,
    category: CategoryCode,
    window_start_ms: u64,
    window_days: u32,
    /// The place's expected cases per day when the alert was raised.
    daily_rate: f64,
    first_at_ms: u64,
    last_at_ms: u64,
    clue_ids: Vec<ClueId>,
}

/// Among the windows `[s, s + len)` that hold `at`, starting at a case time `s` of the sorted
/// `times`: the earliest-starting one holding the most cases, as (start, count).
fn fullest_window(times: &[u64], at: u64, len: u64) -> Option<(u64, u32)> {
    let mut best: Option<(u64, u32)> = None;
    let mut end = 0;
    for (i, &start) in times.iter().enumerate() {
        if start > at {
            break;
        }
        if start + len <= at {
            continue;
        }
        end = end.max(i);
        while end < times.len() && times[end] < start + len {
            end += 1;
        }
        let count = (end - i) as u32;
        if best.is_none_or(|(_, c)| count > c) {
            best = Some((start, count));
        }
    }
    best
}

/// A window that would raise an alert.
#[derive(Clone, Debug)]
struct Signal {
    place: Place,
    window_days: u32,
    window_start_ms: u64,
    daily_rate: f64,
    p: f64,
}

/// The detector's state: the cases of the baseline period, the open alerts and the clock.
pub struct Detector {
    params: HotspotParams,
    neighbours: Arc<Neighbours>,
    seen: HashMap<ClueId, u64>,
    by_grid: HashMap<(GridCode, CategoryCode), Times>,
    /// Per category: cases by community code, by street code, and in the whole district.
    by_community: HashMap<CategoryCode, HashMap<CommunityCode, Times>>,
    by_street: HashMap<CategoryCode, HashMap<StreetCode, Times>>,
    by_district: BTreeMap<CategoryCode, Times>,
    first_at_ms: Option<u64>,
    clock_ms: u64,
    open: BTreeMap<Uuid, OpenAlert>,
    last_prune_ms: u64,
}

impl Detector {
    pub fn new(params: HotspotParams, neighbours: Arc<Neighbours>) -> Self {
        Self {
            params,
            neighbours,
            seen: HashMap::new(),
            by_grid: HashMap::new(),
            by_community: HashMap::new(),
            by_street: HashMap::new(),
            by_district: BTreeMap::new(),
            first_at_ms: None,
            clock_ms: 0,
            open: BTreeMap::new(),
            last_prune_ms: 0,
        }
    }

    pub fn params(&self) -> &HotspotParams {
        &self.params
    }

    /// Alerts open now.
    pub fn open_alerts(&self) -> usize {
        self.open.len()
    }

    /// Folds one input; returns the alert versions it makes, in order.
    pub fn fold(&mut self, input: &HotspotInput) -> Vec<AlertFact> {
        match input {
            HotspotInput::Tick { at_ms, .. } => self.advance(*at_ms),
            HotspotInput::Case {
                clue_id,
                at_ms,
                grid_code,
                category,
                ..
            } => {
                if self.seen.contains_key(clue_id) {
                    return Vec::new();
                }
                let mut out = self.advance(*at_ms);
                self.record(*clue_id, *at_ms, *grid_code, category);
                out.extend(self.test_case(*clue_id, *at_ms, *grid_code, category));
                out
            }
        }
    }

    /// Moves the clock to `now` (it never goes back): closes alerts nobody joined for
    /// `close_after_days`, forgets cases older than the baseline needs.
    fn advance(&mut self, now: u64) -> Vec<AlertFact> {
        if now <= self.clock_ms {
            return Vec::new();
        }
        self.clock_ms = now;
        let close_after = u64::from(self.params.close_after_days) * DAY_MS;
        let closing: Vec<Uuid> = self
            .open
            .values()
            .filter(|a| a.last_at_ms + close_after <= now)
            .map(|a| a.id)
            .collect();
        let mut out = Vec::new();
        let mut closing: Vec<OpenAlert> = closing
            .into_iter()
            .filter_map(|id| self.open.remove(&id))
            .collect();
        closing.sort_by_key(|a| (a.last_at_ms, a.id));
        for mut a in closing {
            a.version += 1;
            let closed_at = a.last_at_ms + close_after;
            let fact = self.fact(&a, AlertState::Closed, None, closed_at);
            out.push(fact);
        }
        if now >= self.last_prune_ms + DAY_MS {
            self.prune(now);
            self.last_prune_ms = now;
        }
        out
    }

    fn horizon_ms(&self) -> u64 {
        u64::from(self.params.baseline_days + self.params.guard_days) * DAY_MS
            + self.params.longest_window_ms()
            + u64::from(self.params.season_days) * DAY_MS
    }

    fn prune(&mut self, now: u64) {
        let horizon = now.saturating_sub(self.horizon_ms());
        self.seen.retain(|_, t| *t >= horizon);
        for times in self.by_grid.values_mut() {
            times.prune_before(horizon);
        }
        self.by_grid.retain(|_, t| !t.0.is_empty());
        let community_times = self.by_community.values_mut().flat_map(|m| m.values_mut());
        let street_times = self.by_street.values_mut().flat_map(|m| m.values_mut());
        for times in community_times.chain(street_times) {
            times.prune_before(horizon);
        }
        for times in self.by_district.values_mut() {
            times.prune_before(horizon);
        }
    }

    fn record(&mut self, clue: ClueId, at: u64, grid: GridCode, category: &CategoryCode) {
        self.seen.insert(clue, at);
        self.first_at_ms = Some(self.first_at_ms.map_or(at, |f| f.min(at)));
        self.by_grid
            .entry((grid, category.clone()))
            .or_default()
            .insert(at, clue);
        self.by_community
            .entry(category.clone())
            .or_default()
            .entry(grid.community_code())
            .or_default()
            .insert(at, clue);
        self.by_street
            .entry(category.clone())
            .or_default()
            .entry(grid.street_code())
            .or_default()
            .insert(at, clue);
        self.by_district
            .entry(category.clone())
            .or_default()
            .insert(at, clue);
    }

    fn test_case(
        &mut self,
        clue: ClueId,
        at: u64,
        grid: GridCode,
        category: &CategoryCode,
    ) -> Vec<AlertFact> {
        // An open alert of the category around this grid takes the case: the cluster goes on.
        let joining = self
            .open
            .values()
            .filter(|a| &a.category == category && a.catchment.contains(&grid))
            .min_by_key(|a| (a.first_at_ms, a.id))
            .map(|a| a.id);
        if let Some(id) = joining {
            let mut a = self.open.remove(&id).expect("open alert");
            a.version += 1;
            a.clue_ids.push(clue);
            a.first_at_ms = a.first_at_ms.min(at);
            a.last_at_ms = a.last_at_ms.max(at);
            a.window_start_ms = a.window_start_ms.min(at);
            let fact = self.fact(&a, AlertState::Ongoing, Some(clue), at);
            self.open.insert(id, a);
            return vec![fact];
        }
        let Some(signal) = self.strongest_signal(at, grid, category) else {
            return Vec::new();
        };
        let window_ms = u64::from(signal.window_days) * DAY_MS;
        let from = signal.window_start_ms;
        let grids = self.neighbours.grids_of(&signal.place);
        let mut members: Vec<(u64, ClueId)> = grids
            .iter()
            .filter_map(|g| self.by_grid.get(&(*g, category.clone())))
            .flat_map(|t| t.clues(from, from + window_ms).copied())
            .collect();
        members.sort_unstable();
        let mut catchment: HashSet<GridCode> = grids.iter().copied().collect();
        for g in &grids {
            catchment.extend(self.neighbours.touching(g).iter().copied());
        }
        let a = OpenAlert {
            id: alert_id(&signal.place, category, clue),
            version: 1,
            place: signal.place,
            catchment,
            category: category.clone(),
            window_start_ms: members.first().map_or(at, |m| m.0),
            window_days: signal.window_days,
            daily_rate: signal.daily_rate,
            first_at_ms: members.first().map_or(at, |m| m.0),
            last_at_ms: at,
            clue_ids: members.iter().map(|m| m.1).collect(),
        };
        let fact = self.fact(&a, AlertState::New, Some(clue), at);
        self.open.insert(a.id, a);
        vec![fact]
    }

    /// The most significant window holding `at` among the grid and the neighbourhoods holding
    /// it (ties: grid before neighbourhood, shorter window, lower grid code). Windows holding
    /// the case rather than ending at it: cases reach the detector slightly out of time order
    /// (they come from several partitions), and a case that arrives after a later one must
    /// still be counted with it.
    fn strongest_signal(&self, at: u64, grid: GridCode, category: &CategoryCode) -> Option<Signal> {
        let mut places = vec![Place::Grid(grid), Place::Neighbourhood(grid)];
        places.extend(
            self.neighbours
                .touching(&grid)
                .iter()
                .map(|g| Place::Neighbourhood(*g)),
        );
        let n_windows = self.params.windows_days.len() as f64;
        let mut best: Option<Signal> = None;
        // Neighbourhoods overlap: each grid's rate is computed once per case.
        let mut rates: HashMap<GridCode, f64> = HashMap::new();
        for place in places {
            let grids = self.neighbours.grids_of(&place);
            let rate: f64 = grids
                .iter()
                .map(|g| {
                    *rates
                        .entry(*g)
                        .or_insert_with(|| self.expected_daily(g, category, at))
                })
                .sum();
            let longest = self.params.longest_window_ms();
            let mut times: Vec<u64> = grids
                .iter()
                .filter_map(|g| self.by_grid.get(&(*g, category.clone())))
                .flat_map(|t| {
                    t.clues(at.saturating_sub(longest), at + longest)
                        .map(|e| e.0)
                })
                .collect();
            times.sort_unstable();
            let mut windows = self.params.windows_days.clone();
            windows.sort_unstable();
            windows.dedup();
            for w in windows {
                let Some((start, observed)) = fullest_window(&times, at, u64::from(w) * DAY_MS)
                else {
                    continue;
                };
                if observed < self.params.min_count {
                    continue;
                }
                let expected = rate * f64::from(w);
                let p = (poisson_tail(observed, expected) * n_windows).min(1.0);
                if 1.0 / p < self.params.min_recurrence_days {
                    continue;
                }
                if best.as_ref().is_none_or(|b| p < b.p) {
                    best = Some(Signal {
                        place,
                        window_days: w,
                        window_start_ms: start,
                        daily_rate: rate,
                        p,
                    });
                }
            }
        }
        best
    }

    /// Expected cases per day of `category` in `grid` at `at`: its own history pooled with its
    /// community's, the community's with its street's, the street's with the district's (each
    /// level weighted by `prior_grid_days` of exposure), times the category's seasonal factor.
    pub fn expected_daily(&self, grid: &GridCode, category: &CategoryCode, at: u64) -> f64 {
        let p = &self.params;
        let guard_start = at.saturating_sub(u64::from(p.guard_days) * DAY_MS);
        let base_start = guard_start.saturating_sub(u64::from(p.baseline_days) * DAY_MS);
        let history_start = base_start.max(self.first_at_ms.unwrap_or(at));
        let days = guard_start.saturating_sub(history_start) as f64 / DAY_MS as f64;
        let count = |times: Option<&Times>| {
            f64::from(times.map_or(0, |t| t.count(history_start, guard_start)))
        };
        let prior = p.prior_cases_per_grid_category_year / 365.0;
        let m = p.prior_grid_days;
        let pool = |n: f64, grids: f64, parent: f64| (n + m * parent) / (days * grids + m);
        let district_grids = f64::from(self.neighbours.grid_count().max(1));
        let street_grids = f64::from(
            *self
                .neighbours
                .grids_per_street
                .get(&grid.street_code())
                .unwrap_or(&1),
        );
        let community_grids = f64::from(
            *self
                .neighbours
                .grids_per_community
                .get(&grid.community_code())
                .unwrap_or(&1),
        );
        let district_times = self.by_district.get(category);
        let r_district = pool(count(district_times), district_grids, prior);
        let r_street = pool(
            count(
                self.by_street
                    .get(category)
                    .and_then(|m| m.get(&grid.street_code())),
            ),
            street_grids,
            r_district,
        );
        let r_community = pool(
            count(
                self.by_community
                    .get(category)
                    .and_then(|m| m.get(&grid.community_code())),
            ),
            community_grids,
            r_street,
        );
        let r_grid = pool(
            count(self.by_grid.get(&(*grid, category.clone()))),
            1.0,
            r_community,
        );
        r_grid * self.season_factor(district_times, r_district, district_grids, guard_start)
    }

    /// The category's district-wide count in the `season_days` before the guard band against
    /// what its baseline rate expects there (a pseudo-count of 3 on both sides keeps a rare
    /// category's factor near 1).
    fn season_factor(
        &self,
        times: Option<&Times>,
        r_district: f64,
        district_grids: f64,
        guard_start: u64,
    ) -> f64 {
        let p = &self.params;
        let start = guard_start
            .saturating_sub(u64::from(p.season_days) * DAY_MS)
            .max(self.first_at_ms.unwrap_or(guard_start));
        let days = guard_start.saturating_sub(start) as f64 / DAY_MS as f64;
        let recent = f64::from(times.map_or(0, |t| t.count(start, guard_start)));
        let expected = r_district * district_grids * days;
        ((recent + 3.0) / (expected + 3.0)).clamp(p.season_min, p.season_max)
    }

    fn fact(
        &self,
        a: &OpenAlert,
        state: AlertState,
        trigger: Option<ClueId>,
        at: u64,
    ) -> AlertFact {
        let grids = self.neighbours.grids_of(&a.place);
        let end = a.last_at_ms.max(a.window_start_ms);
        let span_days = (end - a.window_start_ms).div_ceil(DAY_MS).max(1) as u32;
        let window_days = a.window_days.max(span_days);
        let expected = a.daily_rate * f64::from(window_days);
        let observed = a.clue_ids.len() as u32;
        let n_windows = self.params.windows_days.len() as f64;
        let p = (poisson_tail(observed, expected) * n_windows).min(1.0);
        let centre = a.place.centre();
        AlertFact {
            v: wire::SCHEMA_VERSION,
            alert_id: a.id,
            version: a.version,
            state,
            place_kind: a.place.kind(),
            grid_code: centre,
            grids,
            community_code: centre.community_code(),
            street_code: centre.street_code(),
            category: a.category.clone(),
            window_start_ms: a.window_start_ms,
            window_end_ms: end,
            window_days,
            observed,
            expected,
            recurrence_days: (1.0 / p).min(MAX_RECURRENCE_DAYS),
            clue_ids: a.clue_ids.clone(),
            trigger_clue_id: trigger,
            at_ms: at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
    const HOUR: u64 = 3_600_000;

    /// Grid `n` of a 10 × 10 block: street 001 for rows 0–4 (communities by row pairs), 002 below.
    fn grid(n: u32) -> GridCode {
        let (row, col) = (n / 10, n % 10);
        let street = if row < 5 { 1 } else { 2 };
        let community = row / 2 + 1;
        GridCode::parse(&format!(
            "310199{street:03}{community:03}{:03}",
            row * 10 + col + 1
        ))
        .unwrap()
    }

    /// A 10 × 10 block of unit squares: grids touch along edges and at corners.
    fn block() -> Arc<Neighbours> {
        Arc::new(Neighbours::from_vertices((0..100).map(|n| {
            let (x, y) = (f64::from(n % 10), f64::from(n / 10));
            (
                grid(n),
                vec![[x, y], [x + 1.0, y], [x + 1.0, y + 1.0], [x, y + 1.0]],
            )
        })))
    }

    fn clue(n: u64) -> ClueId {
        ClueId(Uuid::from_u128(u128::from(n) + 1))
    }

    fn cat(s: &str) -> CategoryCode {
        CategoryCode::parse(s).unwrap()
    }

    fn case(n: u64, at: u64, g: u32, category: &str) -> HotspotInput {
        HotspotInput::Case {
            v: 1,
            clue_id: clue(n),
            at_ms: at,
            grid_code: grid(g),
            category: cat(category),
        }
    }

    /// A year of scattered background (one case every ~9 hours, categories and grids cycling)
    /// so that rates are learned; returns the next clue number.
    fn background(d: &mut Detector, days: u64) -> u64 {
        let categories = [
            "street_light",
            "illegal_parking",
            "road_damage",
            "litter_bin",
        ];
        let mut n = 1_000_000;
        let mut t = T0;
        while t < T0 + days * DAY_MS {
            let i = n - 1_000_000;
            let out = d.fold(&case(
                n,
                t,
                (i * 37 % 100) as u32,
                categories[(i % 4) as usize],
            ));
            assert!(
                out.iter().all(|a| a.state != AlertState::New) || t < T0 + 30 * DAY_MS,
                "background raised {out:?}"
            );
            n += 1;
            t += 9 * HOUR + (i % 5) * 600_000;
        }
        n
    }

    #[test]
    fn poisson_tail_matches_closed_forms() {
        assert_eq!(poisson_tail(0, 2.0), 1.0);
        assert!((poisson_tail(1, 0.5) - (1.0 - (-0.5f64).exp())).abs() < 1e-12);
        // P(X ≥ 3; 0.1) = 1 − e^−0.1 (1 + 0.1 + 0.005)
        let exact = 1.0 - (-0.1f64).exp() * 1.105;
        assert!((poisson_tail(3, 0.1) - exact).abs() / exact < 1e-6);
        // deep in the tail, where 1 − CDF would be lost to rounding
        let tiny = poisson_tail(5, 1e-4);
        let approx = 1e-20 / 120.0;
        assert!((tiny - approx).abs() / approx < 1e-3, "{tiny}");
        assert!(poisson_tail(10, 10.0) > 0.5 && poisson_tail(10, 10.0) < 0.6);
    }

    #[test]
    fn neighbours_share_vertices() {
        let n = block();
        let mut expected = vec![grid(0), grid(1), grid(2), grid(10), grid(12)];
        expected.extend([grid(20), grid(21), grid(22)]);
        expected.sort();
        assert_eq!(n.touching(&grid(11)), &expected[..]);
        // a corner grid touches three
        assert_eq!(n.touching(&grid(0)).len(), 3);
        assert_eq!(n.grids_of(&Place::Neighbourhood(grid(11))).len(), 9);
        assert_eq!(n.grid_count(), 100);
    }

    #[test]
    fn a_burst_fires_at_its_third_case() {
        let mut d = Detector::new(HotspotParams::default(), block());
        let first = background(&mut d, 200);
        let t = T0 + 200 * DAY_MS;
        let mut raised_at = None;
        for (i, (g, dt)) in [(44, 0), (45, 20 * HOUR), (54, 40 * HOUR), (44, 50 * HOUR)]
            .iter()
            .enumerate()
        {
            let out = d.fold(&case(first + i as u64, t + dt, *g, "garbage_pile"));
            if let Some(a) = out.iter().find(|a| a.state == AlertState::New) {
                raised_at.get_or_insert((i + 1, a.clone()));
            }
        }
        let (at, alert) = raised_at.expect("the burst raised an alert");
        assert_eq!(at, 3, "{alert:?}");
        assert_eq!(alert.version, 1);
        assert_eq!(alert.observed, 3);
        assert_eq!(alert.clue_ids.len(), 3);
        assert_eq!(alert.place_kind, PlaceKind::Neighbourhood);
        assert!(alert.expected < 0.5, "{alert:?}");
        assert!(alert.recurrence_days >= 3650.0, "{alert:?}");
        assert_eq!(alert.street_code, alert.grid_code.street_code());
    }

    #[test]
    fn two_cases_do_not_fire_whatever_the_expectation() {
        let mut d = Detector::new(HotspotParams::default(), block());
        assert!(d.fold(&case(1, T0, 5, "food_safety")).is_empty());
        assert!(d.fold(&case(2, T0 + HOUR, 5, "food_safety")).is_empty());
        assert_eq!(d.fold(&case(3, T0 + 2 * HOUR, 5, "food_safety")).len(), 1);
    }

    #[test]
    fn a_steady_busy_grid_does_not_fire() {
        let mut d = Detector::new(HotspotParams::default(), block());
        let mut new_alerts = Vec::new();
        // a market grid: about one garbage report a day, some days two, for 400 days
        let mut n = 0;
        for day in 0..400u64 {
            let per_day = if day % 3 == 0 { 2 } else { 1 };
            for k in 0..per_day {
                let at = T0 + day * DAY_MS + 8 * HOUR + k * 5 * HOUR + (day % 7) * 600_000;
                for a in d.fold(&case(n, at, 33, "garbage_pile")) {
                    if a.state == AlertState::New {
                        new_alerts.push((day, a));
                    }
                }
                n += 1;
            }
        }
        // The first days have no history (the prior says garbage is rare there): an alert then
        // is right. Once the rate is learned, the steady grid raises nothing.
        let late: Vec<_> = new_alerts.iter().filter(|(day, _)| *day >= 60).collect();
        assert!(late.is_empty(), "{late:?}");
        assert!(!new_alerts.is_empty(), "the first days' surprise is seen");
    }

    #[test]
    fn an_ongoing_cluster_updates_its_alert_and_then_closes() {
        let mut d = Detector::new(HotspotParams::default(), block());
        let mut n = background(&mut d, 120);
        let t = T0 + 120 * DAY_MS;
        let mut facts = Vec::new();
        for (i, g) in [66, 66, 67, 76, 66, 56].iter().enumerate() {
            facts.extend(d.fold(&case(n, t + i as u64 * 10 * HOUR, *g, "street_vending")));
            n += 1;
        }
        let new: Vec<_> = facts
            .iter()
            .filter(|a| a.state == AlertState::New)
            .collect();
        assert_eq!(new.len(), 1, "{facts:#?}");
        let id = new[0].alert_id;
        assert!(facts.iter().all(|a| a.alert_id == id));
        let versions: Vec<u32> = facts.iter().map(|a| a.version).collect();
        assert_eq!(versions, [1, 2, 3, 4]);
        assert!(facts[1..].iter().all(|a| a.state == AlertState::Ongoing));
        assert_eq!(facts.last().unwrap().clue_ids.len(), 6);
        assert_eq!(facts.last().unwrap().observed, 6);
        // nothing joins for 7 days: the next tick closes it, once
        let last = t + 5 * 10 * HOUR;
        assert!(d
            .fold(&HotspotInput::Tick {
                v: 1,
                at_ms: last + 6 * DAY_MS
            })
            .is_empty());
        let closed = d.fold(&HotspotInput::Tick {
            v: 1,
            at_ms: last + 8 * DAY_MS,
        });
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].state, AlertState::Closed);
        assert_eq!(closed[0].version, 5);
        assert_eq!(closed[0].at_ms, last + 7 * DAY_MS);
        assert_eq!(d.open_alerts(), 0);
        // a later case there starts over: it is not part of the closed alert
        let after = d.fold(&case(n, last + 9 * DAY_MS, 66, "street_vending"));
        assert!(after.is_empty(), "{after:?}");
    }

    #[test]
    fn folding_the_same_log_again_gives_the_same_alerts_and_a_replayed_case_nothing() {
        let log: Vec<HotspotInput> = (0..40u64)
            .map(|i| {
                case(
                    i,
                    T0 + i * 7 * HOUR,
                    (i % 3) as u32 * 11 + 22,
                    "food_safety",
                )
            })
            .chain([HotspotInput::Tick {
                v: 1,
                at_ms: T0 + 30 * DAY_MS,
            }])
            .collect();
        let run = |log: &[HotspotInput]| {
            let mut d = Detector::new(HotspotParams::default(), block());
            log.iter().flat_map(|i| d.fold(i)).collect::<Vec<_>>()
        };
        let first = run(&log);
        assert!(!first.is_empty());
        assert_eq!(first, run(&log));
        // the same cases folded twice in a row (a replayed input) add nothing
        let doubled: Vec<HotspotInput> = log.iter().flat_map(|i| [i.clone(), i.clone()]).collect();
        assert_eq!(first, run(&doubled));
    }

    #[test]
    fn the_fullest_window_holding_a_case_is_found() {
        let h = HOUR;
        // the case at 10h: windows of 5h holding it start at 6h (6, 8, 10) or 8h (8, 10, 12)
        let times = [h, 6 * h, 8 * h, 10 * h, 12 * h, 20 * h];
        assert_eq!(fullest_window(&times, 10 * h, 5 * h), Some((6 * h, 3)));
        assert_eq!(fullest_window(&times, 20 * h, 5 * h), Some((20 * h, 1)));
        assert_eq!(fullest_window(&times, 10 * h, 100 * h), Some((h, 6)));
        assert_eq!(fullest_window(&[], 10 * h, 5 * h), None);
    }

    #[test]
    fn a_case_arriving_after_later_ones_still_completes_the_burst() {
        let mut d = Detector::new(HotspotParams::default(), block());
        assert!(d
            .fold(&case(1, T0 + 2 * HOUR, 44, "food_safety"))
            .is_empty());
        assert!(d
            .fold(&case(2, T0 + 3 * HOUR, 45, "food_safety"))
            .is_empty());
        // reported first, arrived last
        let out = d.fold(&case(3, T0 + HOUR, 54, "food_safety"));
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].clue_ids, [clue(3), clue(1), clue(2)]);
    }

    #[test]
    fn params_are_validated() {
        assert_eq!(HotspotParams::default().validate(), Ok(()));
        let p = HotspotParams {
            windows_days: vec![],
            ..Default::default()
        };
        assert!(matches!(p.validate(), Err(ParamsError::Windows(_))));
        let p = HotspotParams {
            min_count: 0,
            ..Default::default()
        };
        assert_eq!(p.validate(), Err(ParamsError::NotPositive("min_count")));
    }

    #[test]
    fn alert_facts_round_trip() {
        let mut d = Detector::new(HotspotParams::default(), block());
        let facts: Vec<AlertFact> = (0..3)
            .flat_map(|i| d.fold(&case(i, T0 + i * HOUR, 12, "food_safety")))
            .collect();
        assert_eq!(facts.len(), 1);
        let bytes = facts[0].encode();
        assert_eq!(AlertFact::decode(&bytes).unwrap(), facts[0]);
        let input = case(9, T0, 12, "food_safety");
        assert_eq!(HotspotInput::decode(&input.encode()).unwrap(), input);
    }
}
