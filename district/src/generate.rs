//! Deterministic generator of synthetic districts: a gap-free, overlap-free partition of an
//! irregular district shape into irregular unit grids.
//!
//! Construction (exact by construction, no floating-point clipping anywhere):
//!
//! 1. A lattice of vertices, rotated, gently warped and jittered. Every lattice edge becomes a
//!    wiggly polyline that is a pure function of the seed and the edge's identity, so both cells
//!    beside an edge use the very same (bit-identical, 7-decimal rounded) points, one of them
//!    reversed. A lattice cell is a quad bounded by four such polylines.
//! 2. The district is the set of cells whose centres lie deepest inside an irregular, smooth
//!    star-shaped blob (as many as needed for the requested number of grids).
//! 3. A few interior rectangles of cells become lakes: excluded areas that belong to no grid, so
//!    some communities and streets have holes.
//! 4. Streets are grown as contiguous regions from well-spread seeds (balanced random growth);
//!    communities are grown the same way inside each street.
//! 5. About a quarter of the grids are two cells merged (dominoes) inside one community, so grid
//!    shapes and sizes vary; a few grids get a pond: a hole in the grid that is declared as an
//!    excluded area with exactly the same ring.
//! 6. Codes are assigned in reading order (north to south, west to east) inside each parent.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::f64::consts::{PI, TAU};

use geo_types::{Coord, LineString, Polygon};

use crate::geom::LocalProjection;
use crate::model::{
    Community, CommunityCode, District, ExcludedArea, Grid, GridCode, Street, StreetCode,
};
use crate::names::NamePool;
use gridclue_core::rng::Rng;

/// Parameters of [`generate`].
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateParams {
    /// Number of unit grids wanted (the result is within a fraction of a percent of it).
    pub grids: usize,
    /// Number of street offices; about 5/13 of them are towns (镇), the rest subdistricts (街道).
    pub streets: usize,
    /// Seed: the same parameters give a byte-identical map.
    pub seed: u64,
    /// Longitude of the district centre.
    pub center_lon: f64,
    /// Latitude of the district centre.
    pub center_lat: f64,
    /// Side of a lattice cell in metres; a grid is one cell or two merged cells.
    pub cell_size_m: f64,
    /// Interior points of each wiggly lattice edge (a one-cell grid has about
    /// `4 × (edge_points + 1)` vertices).
    pub edge_points: usize,
    /// Lakes (excluded rectangles of cells); `None` = one per 500 grids, at least one.
    pub lakes: Option<usize>,
    /// Ponds (holes inside single grids, declared as excluded areas); `None` = one per 300
    /// grids, at least one.
    pub ponds: Option<usize>,
    /// 6-digit administrative division code the grid codes start with.
    pub admin_division: String,
    /// Map version to stamp; `None` = the content hash.
    pub map_version: Option<String>,
}

impl Default for GenerateParams {
    fn default() -> Self {
        GenerateParams {
            grids: 1000,
            streets: 13,
            seed: 1,
            center_lon: 121.5,
            center_lat: 31.2,
            cell_size_m: 380.0,
            edge_points: 20,
            lakes: None,
            ponds: None,
            admin_division: "310199".to_owned(),
            map_version: None,
        }
    }
}

/// Why a map could not be generated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GenerateError {
    /// A parameter is out of range.
    #[error("invalid parameter: {0}")]
    InvalidParams(String),
    /// The parameters need more communities or grids than 3-digit codes allow.
    #[error("code space exhausted: {0}")]
    CodeSpace(String),
}

/// Share of grids that are two merged cells.
const DOMINO_SHARE: f64 = 0.25;
/// Average grids per community.
const GRIDS_PER_COMMUNITY: f64 = 10.0;
/// Vertex jitter, as a fraction of the cell size.
const JITTER: f64 = 0.15;
/// Margin (in cells) kept between a lake and the district edge or another lake.
const LAKE_MARGIN: i64 = 2;
const NONE: u32 = u32::MAX;

/// Geometry of the lattice: a pure function of the seed and indices.
struct Lattice {
    seed: u64,
    /// Cells per row and per column.
    n: usize,
    s: f64,
    cos: f64,
    sin: f64,
    warp_a: f64,
    warp_l: [f64; 2],
    warp_p: [f64; 2],
    edge_points: usize,
    proj: LocalProjection,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Side {
    horizontal: bool,
    i: i64,
    j: i64,
    reversed: bool,
}

impl Side {
    fn start(&self) -> (i64, i64) {
        (self.i, self.j)
    }
    fn end(&self) -> (i64, i64) {
        if self.horizontal {
            (self.i + 1, self.j)
        } else {
            (self.i, self.j + 1)
        }
    }
    fn from(&self) -> (i64, i64) {
        if self.reversed {
            self.end()
        } else {
            self.start()
        }
    }
    fn to(&self) -> (i64, i64) {
        if self.reversed {
            self.start()
        } else {
            self.end()
        }
    }
}

/// The four sides of cell (i, j), counter-clockwise.
fn cell_sides(i: i64, j: i64) -> [Side; 4] {
    [
        Side {
            horizontal: true,
            i,
            j,
            reversed: false,
        },
        Side {
            horizontal: false,
            i: i + 1,
            j,
            reversed: false,
        },
        Side {
            horizontal: true,
            i,
            j: j + 1,
            reversed: true,
        },
        Side {
            horizontal: false,
            i,
            j,
            reversed: true,
        },
    ]
}

fn round7(v: f64) -> f64 {
    (v * 1e7).round() / 1e7
}

impl Lattice {
    fn new(params: &GenerateParams, n: usize) -> Self {
        let mut r = Rng::keyed(params.seed, &[0x6c61_7474]);
        let angle = r.range(-0.6, 0.6);
        let s = params.cell_size_m;
        Lattice {
            seed: params.seed,
            n,
            s,
            cos: angle.cos(),
            sin: angle.sin(),
            warp_a: r.range(0.2, 0.35) * s,
            warp_l: [r.range(6.0, 10.0) * s, r.range(6.0, 10.0) * s],
            warp_p: [r.range(0.0, TAU), r.range(0.0, TAU)],
            edge_points: params.edge_points,
            proj: LocalProjection::new(params.center_lon, params.center_lat),
        }
    }

    /// Position of lattice vertex (i, j) in metres from the centre.
    fn vertex_m(&self, i: i64, j: i64) -> [f64; 2] {
        let half = (self.n / 2) as f64;
        let bx = (i as f64 - half) * self.s;
        let by = (j as f64 - half) * self.s;
        let mut r = Rng::keyed(self.seed, &[1, i, j]);
        let jx = r.range(-JITTER, JITTER) * self.s;
        let jy = r.range(-JITTER, JITTER) * self.s;
        let x = bx + self.warp_a * (by / self.warp_l[0] + self.warp_p[0]).sin() + jx;
        let y = by + self.warp_a * (bx / self.warp_l[1] + self.warp_p[1]).sin() + jy;
        [x * self.cos - y * self.sin, x * self.sin + y * self.cos]
    }

    /// Metres → lon/lat rounded to 7 decimals (≈ 1 cm).
    fn lonlat(&self, p: [f64; 2]) -> Coord<f64> {
        let c = self.proj.unproject(p);
        Coord {
            x: round7(c.x),
            y: round7(c.y),
        }
    }

    /// Centre of cell (i, j) in metres (mean of its corners).
    fn cell_centre(&self, i: i64, j: i64) -> [f64; 2] {
        let c = [
            self.vertex_m(i, j),
            self.vertex_m(i + 1, j),
            self.vertex_m(i + 1, j + 1),
            self.vertex_m(i, j + 1),
        ];
        [
            c.iter().map(|p| p[0]).sum::<f64>() / 4.0,
            c.iter().map(|p| p[1]).sum::<f64>() / 4.0,
        ]
    }

    /// The polyline of a lattice edge, from its start vertex to its end vertex, both included.
    /// Depends only on the seed and the edge.
    fn edge_polyline(&self, horizontal: bool, i: i64, j: i64) -> Vec<Coord<f64>> {
        let a = self.vertex_m(i, j);
        let b = if horizontal {
            self.vertex_m(i + 1, j)
        } else {
            self.vertex_m(i, j + 1)
        };
        let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
        let len = (dx * dx + dy * dy).sqrt();
        let perp = [-dy / len, dx / len];
        let mut r = Rng::keyed(self.seed, &[2 + i64::from(horizontal), i, j]);
        // Roads are nearly straight, creeks and field borders wiggle more.
        let amp = if r.chance(0.45) {
            r.range(0.004, 0.018)
        } else {
            r.range(0.02, 0.055)
        } * len;
        let mut harm = [(0.0, 0.0); 4];
        let mut norm = 0.0;
        for (k, h) in harm.iter_mut().enumerate() {
            *h = (r.range(-1.0, 1.0) / (k + 1) as f64, r.range(0.0, TAU));
            norm += h.0.abs();
        }
        let norm = norm.max(1e-9);
        let n = self.edge_points;
        let mut pts = Vec::with_capacity(n + 2);
        pts.push(self.lonlat(a));
        for m in 1..=n {
            let t = (m as f64 + r.range(-0.35, 0.35)) / (n + 1) as f64;
            let h: f64 = harm
                .iter()
                .enumerate()
                .map(|(k, (bk, ph))| bk * (TAU * (k + 1) as f64 * t + ph).sin())
                .sum::<f64>()
                / norm;
            let off = amp * (PI * t).sin() * h;
            pts.push(self.lonlat([a[0] + t * dx + off * perp[0], a[1] + t * dy + off * perp[1]]));
        }
        pts.push(self.lonlat(b));
        pts
    }

    /// The closed counter-clockwise ring around a set of cells whose boundary is one simple
    /// cycle of lattice edges (one cell, a domino, a rectangle).
    fn ring_of_cells(&self, cells: &[(i64, i64)]) -> LineString<f64> {
        let mut count: BTreeMap<(bool, i64, i64), (u8, Side)> = BTreeMap::new();
        for &(i, j) in cells {
            for side in cell_sides(i, j) {
                let e = count
                    .entry((side.horizontal, side.i, side.j))
                    .or_insert((0, side));
                e.0 += 1;
            }
        }
        // Sides used by two cells of the set are interior; the rest form the boundary.
        let mut next: BTreeMap<(i64, i64), Side> = BTreeMap::new();
        for (_, (c, side)) in count {
            if c == 1 {
                let (fi, fj) = side.from();
                next.insert((fj, fi), side);
            }
        }
        let total = next.len();
        let mut coords = Vec::new();
        if let Some((&start_key, _)) = next.iter().next() {
            let mut key = start_key;
            for _ in 0..total {
                let Some(side) = next.get(&key) else { break };
                let mut poly = self.edge_polyline(side.horizontal, side.i, side.j);
                if side.reversed {
                    poly.reverse();
                }
                poly.pop();
                coords.extend(poly);
                let (ti, tj) = side.to();
                key = (tj, ti);
                if key == start_key {
                    break;
                }
            }
        }
        if let Some(&first) = coords.first() {
            coords.push(first);
        }
        LineString(coords)
    }

    /// A wobbly pond ring (counter-clockwise) well inside cell (i, j).
    fn pond_ring(&self, i: i64, j: i64) -> LineString<f64> {
        let c = self.cell_centre(i, j);
        let mut r = Rng::keyed(self.seed, &[4, i, j]);
        let r0 = r.range(0.1, 0.16) * self.s;
        let (b1, p1) = (r.range(0.05, 0.18), r.range(0.0, TAU));
        let (b2, p2) = (r.range(0.0, 0.08), r.range(0.0, TAU));
        let m = (self.edge_points + 4).clamp(12, 64);
        let mut coords = Vec::with_capacity(m + 1);
        for k in 0..m {
            let th = TAU * (k as f64 + r.range(-0.3, 0.3)) / m as f64;
            let rad = r0 * (1.0 + b1 * (2.0 * th + p1).sin() + b2 * (3.0 * th + p2).sin());
            coords.push(self.lonlat([c[0] + rad * th.cos(), c[1] + rad * th.sin()]));
        }
        coords.push(coords[0]);
        LineString(coords)
    }
}

fn neighbours(n: usize, idx: u32) -> impl Iterator<Item = u32> {
    let (i, j) = ((idx as usize) % n, (idx as usize) / n);
    let mut out = [NONE; 4];
    if i > 0 {
        out[0] = idx - 1;
    }
    if i + 1 < n {
        out[1] = idx + 1;
    }
    if j > 0 {
        out[2] = idx - n as u32;
    }
    if j + 1 < n {
        out[3] = idx + n as u32;
    }
    out.into_iter().filter(|&x| x != NONE)
}

fn dist2(a: [f64; 2], b: [f64; 2]) -> f64 {
    (a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)
}

/// Farthest-point sampling of `k` distinct cells from `cells`, starting at `first`.
fn spread_seeds(cells: &[u32], centre: &[[f64; 2]], first: u32, k: usize) -> Vec<u32> {
    let mut seeds = vec![first];
    let mut mind: Vec<f64> = cells
        .iter()
        .map(|&c| dist2(centre[c as usize], centre[first as usize]))
        .collect();
    while seeds.len() < k.min(cells.len()) {
        let mut best = 0usize;
        for (x, &d) in mind.iter().enumerate() {
            if d > mind[best] {
                best = x;
            }
        }
        let s = cells[best];
        seeds.push(s);
        for (x, &c) in cells.iter().enumerate() {
            let d = dist2(centre[c as usize], centre[s as usize]);
            if d < mind[x] {
                mind[x] = d;
            }
        }
    }
    seeds
}

/// Balanced random growth of contiguous regions from seeds over a connected domain. Region r
/// grows while it is the smallest relative to `weights[r]` among regions that can still grow.
fn grow(
    n: usize,
    in_domain: impl Fn(u32) -> bool,
    seeds: &[u32],
    weights: &[f64],
    assign: &mut [u32],
    first_id: u32,
    rng: &mut Rng,
) {
    let mut frontier: Vec<Vec<u32>> = vec![Vec::new(); seeds.len()];
    let mut size = vec![1usize; seeds.len()];
    let mut heap = BinaryHeap::new();
    for (r, &s) in seeds.iter().enumerate() {
        assign[s as usize] = first_id + r as u32;
    }
    for (r, &s) in seeds.iter().enumerate() {
        frontier[r].extend(neighbours(n, s).filter(|&c| in_domain(c)));
        heap.push(Reverse(((1.0 / weights[r]).to_bits(), r)));
    }
    while let Some(Reverse((_, r))) = heap.pop() {
        while !frontier[r].is_empty() {
            let k = rng.below(frontier[r].len());
            let c = frontier[r].swap_remove(k);
            if assign[c as usize] != NONE {
                continue;
            }
            assign[c as usize] = first_id + r as u32;
            size[r] += 1;
            for nb in neighbours(n, c) {
                if in_domain(nb) && assign[nb as usize] == NONE {
                    frontier[r].push(nb);
                }
            }
            heap.push(Reverse(((size[r] as f64 / weights[r]).to_bits(), r)));
            break;
        }
    }
}

/// Reading order key: bands north to south, west to east inside a band.
fn reading_order(p: [f64; 2], band: f64) -> (i64, i64) {
    ((-p[1] / band).floor() as i64, (p[0] * 100.0).round() as i64)
}

fn mean(points: impl Iterator<Item = [f64; 2]>) -> [f64; 2] {
    let (mut sx, mut sy, mut k) = (0.0, 0.0, 0usize);
    for p in points {
        sx += p[0];
        sy += p[1];
        k += 1;
    }
    let k = k.max(1) as f64;
    [sx / k, sy / k]
}

fn check_params(p: &GenerateParams) -> Result<(), GenerateError> {
    let bad = |m: String| Err(GenerateError::InvalidParams(m));
    if p.streets == 0 || p.streets > 150 {
        return bad(format!("streets must be 1..=150, got {}", p.streets));
    }
    if p.grids < p.streets * 4 {
        return bad(format!(
            "need at least 4 grids per street: {} grids for {} streets",
            p.grids, p.streets
        ));
    }
    if p.grids > 2_000_000 {
        return bad(format!("grids must be at most 2000000, got {}", p.grids));
    }
    if !(50.0..=5000.0).contains(&p.cell_size_m) {
        return bad(format!(
            "cell_size_m must be 50..=5000, got {}",
            p.cell_size_m
        ));
    }
    if p.edge_points > 500 {
        return bad(format!(
            "edge_points must be at most 500, got {}",
            p.edge_points
        ));
    }
    if !(-170.0..=170.0).contains(&p.center_lon) || !(-80.0..=80.0).contains(&p.center_lat) {
        return bad("centre must be within lon ±170, lat ±80".to_owned());
    }
    if p.admin_division.len() != 6 || !p.admin_division.bytes().all(|b| b.is_ascii_digit()) {
        return bad(format!(
            "admin_division must be 6 digits, got {:?}",
            p.admin_division
        ));
    }
    Ok(())
}

/// Generates a district. Same parameters ⇒ identical district (and identical GeoJSON).
///
/// The phases are the steps of the module documentation. They draw from one random stream in
/// this order, so reordering them changes every generated map.
pub fn generate(params: &GenerateParams) -> Result<District, GenerateError> {
    check_params(params)?;
    let mut rng = Rng::new(params.seed);
    let lake_sizes = draw_lake_sizes(params, &mut rng);
    let blob = Blob::draw(&mut rng);
    let (lattice, centre, mut selected) =
        select_deepest_cells(params, &blob, cells_wanted(params, &lake_sizes));
    fill_pinholes(lattice.n, &mut selected);
    let lakes = place_lakes(lattice.n, &selected, &lake_sizes, &mut rng);
    let land = Land::largest_component(lattice.n, centre, &selected, &lakes.lake_of);
    let streets = grow_streets(&land, &blob, params.streets, &mut rng)?;
    let communities = grow_communities(&land, &streets, params.grids, &mut rng);
    let grid_cells = pair_dominoes(&land, &communities.of_cell, params.grids, &mut rng);
    let has_pond = choose_ponds(params, &grid_cells, &mut rng);

    let numbers = number_communities(&land, &communities, params);
    let grid_codes = assign_grid_codes(
        params,
        &land,
        &grid_cells,
        &communities,
        &numbers,
        &streets.number,
    )?;

    // Names are drawn in code order so that they do not depend on growth order.
    let mut pool = NamePool::new(params.seed);
    let street_list = street_records(params, &streets.number, &mut pool)?;
    let community_list =
        community_records(params, &land, &streets, &communities, &numbers, &mut pool)?;
    let mut excluded = lake_areas(&lattice, &lakes.cells, &mut pool);
    let grids = grid_features(&lattice, &grid_cells, &has_pond, &grid_codes, &mut excluded)?;
    name_ponds(&mut excluded, &mut pool);

    let mut district = District {
        map_version: String::new(),
        streets: street_list,
        communities: community_list,
        grids,
        excluded,
    };
    district.sort();
    district.map_version = params
        .map_version
        .clone()
        .unwrap_or_else(|| district.content_hash());
    Ok(district)
}

/// Lake sizes in cells (across, down). They are drawn first: they decide how many cells the
/// district needs.
fn draw_lake_sizes(params: &GenerateParams, rng: &mut Rng) -> Vec<(i64, i64)> {
    let lake_count = params
        .lakes
        .unwrap_or_else(|| (params.grids as f64 / 500.0).round().max(1.0) as usize);
    (0..lake_count)
        .map(|_| {
            let a = 2 + rng.below(3) as i64;
            let b = 1 + rng.below(3) as i64;
            if rng.chance(0.5) {
                (a, b)
            } else {
                (b, a)
            }
        })
        .collect()
}

/// Cells the district needs: the grids' cells (some grids are dominoes) plus the lakes'.
fn cells_wanted(params: &GenerateParams, lake_sizes: &[(i64, i64)]) -> usize {
    let lake_cells: usize = lake_sizes.iter().map(|(a, b)| (a * b) as usize).sum();
    let grid_cells = (params.grids as f64 * (1.0 + DOMINO_SHARE)).round() as usize;
    grid_cells + lake_cells
}

/// The district's outline: a smooth star-shaped blob r(θ) = 1 + Σ a_k cos(kθ + φ_k).
struct Blob {
    /// (k, a_k, φ_k).
    harmonics: Vec<(f64, f64, f64)>,
}

impl Blob {
    fn draw(rng: &mut Rng) -> Self {
        let harmonics = [(2.0, 0.08, 0.2), (3.0, 0.03, 0.12), (4.0, 0.0, 0.06)]
            .iter()
            .chain(&[(5.0, 0.0, 0.04)])
            .map(|&(k, lo, hi)| (k, rng.range(lo, hi), rng.range(0.0, TAU)))
            .collect();
        Blob { harmonics }
    }

    /// |p| / r(θ): a cell is "deeper" inside the blob the smaller this is.
    fn depth(&self, p: [f64; 2]) -> f64 {
        let th = p[1].atan2(p[0]);
        let r: f64 = 1.0
            + self
                .harmonics
                .iter()
                .map(|(k, a, ph)| a * (k * th + ph).cos())
                .sum::<f64>();
        (p[0] * p[0] + p[1] * p[1]).sqrt() / r
    }
}

/// The lattice, its cell centres and the `wanted` cells deepest inside the blob. The lattice
/// grows until the selected cells stay clear of its border.
fn select_deepest_cells(
    params: &GenerateParams,
    blob: &Blob,
    wanted: usize,
) -> (Lattice, Vec<[f64; 2]>, Vec<bool>) {
    let mut half = ((wanted as f64 / PI).sqrt() * 1.45).ceil() as usize + 4;
    loop {
        let n = 2 * half;
        let lattice = Lattice::new(params, n);
        let centre: Vec<[f64; 2]> = (0..n * n)
            .map(|idx| lattice.cell_centre((idx % n) as i64, (idx / n) as i64))
            .collect();
        let mut order: Vec<(f64, u32)> = centre
            .iter()
            .enumerate()
            .map(|(idx, &p)| (blob.depth(p), idx as u32))
            .collect();
        order.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let mut selected = vec![false; n * n];
        for &(_, idx) in order.iter().take(wanted) {
            selected[idx as usize] = true;
        }
        if !touches_border(n, &selected) {
            return (lattice, centre, selected);
        }
        half = half * 5 / 4 + 2;
    }
}

fn touches_border(n: usize, selected: &[bool]) -> bool {
    (0..n * n).any(|idx| {
        selected[idx] && {
            let (i, j) = (idx % n, idx / n);
            i == 0 || j == 0 || i + 1 == n || j + 1 == n
        }
    })
}

/// Selects every pinhole: an unselected cell with all four neighbours selected.
fn fill_pinholes(n: usize, selected: &mut [bool]) {
    for idx in 0..n * n {
        if !selected[idx]
            && neighbours(n, idx as u32)
                .filter(|&c| selected[c as usize])
                .count()
                == 4
        {
            selected[idx] = true;
        }
    }
}

struct Lakes {
    /// Each lake's cells (i, j).
    cells: Vec<Vec<(i64, i64)>>,
    /// Lake number of every lattice cell, `NONE` for no lake.
    lake_of: Vec<u32>,
}

/// Places the lakes as rectangles with a margin of district cells all around; a lake that
/// finds no room in 400 random attempts is left out.
fn place_lakes(n: usize, selected: &[bool], sizes: &[(i64, i64)], rng: &mut Rng) -> Lakes {
    let mut lakes = Lakes {
        cells: Vec::new(),
        lake_of: vec![NONE; n * n],
    };
    let mut reserved = vec![false; n * n];
    let candidates: Vec<u32> = (0..n * n)
        .filter(|&i| selected[i])
        .map(|i| i as u32)
        .collect();
    for &(a, b) in sizes {
        for _attempt in 0..400 {
            let c = candidates[rng.below(candidates.len())] as usize;
            let (i0, j0) = ((c % n) as i64, (c / n) as i64);
            let with_margin = (
                i0 - LAKE_MARGIN..i0 + a + LAKE_MARGIN,
                j0 - LAKE_MARGIN..j0 + b + LAKE_MARGIN,
            );
            let fits = with_margin.0.clone().all(|i| {
                with_margin.1.clone().all(|j| {
                    i >= 0
                        && j >= 0
                        && (i as usize) < n
                        && (j as usize) < n
                        && selected[j as usize * n + i as usize]
                        && !reserved[j as usize * n + i as usize]
                })
            });
            if !fits {
                continue;
            }
            let id = lakes.cells.len() as u32;
            let mut cells = Vec::new();
            for i in with_margin.0.clone() {
                for j in with_margin.1.clone() {
                    let idx = j as usize * n + i as usize;
                    reserved[idx] = true;
                    if (i0..i0 + a).contains(&i) && (j0..j0 + b).contains(&j) {
                        lakes.lake_of[idx] = id;
                        cells.push((i, j));
                    }
                }
            }
            lakes.cells.push(cells);
            break;
        }
    }
    lakes
}

/// The district's land: the largest 4-connected component of selected non-lake cells.
struct Land {
    /// Cells per lattice row and column.
    n: usize,
    /// Centre of every lattice cell, in metres.
    centre: Vec<[f64; 2]>,
    /// Whether each lattice cell is land.
    mask: Vec<bool>,
    /// The land cells, in index order.
    cells: Vec<u32>,
}

impl Land {
    fn largest_component(
        n: usize,
        centre: Vec<[f64; 2]>,
        selected: &[bool],
        lake_of: &[u32],
    ) -> Land {
        let candidate: Vec<bool> = (0..n * n)
            .map(|idx| selected[idx] && lake_of[idx] == NONE)
            .collect();
        let component = label_components(n, &candidate);
        let largest = component.largest;
        let mask: Vec<bool> = (0..n * n)
            .map(|idx| candidate[idx] && component.of_cell[idx] == largest)
            .collect();
        let cells = (0..n * n)
            .filter(|&idx| mask[idx])
            .map(|i| i as u32)
            .collect();
        Land {
            n,
            centre,
            mask,
            cells,
        }
    }

    fn contains(&self, idx: u32) -> bool {
        self.mask[idx as usize]
    }

    fn centre_of(&self, idx: u32) -> [f64; 2] {
        self.centre[idx as usize]
    }
}

struct Components {
    /// Component number of every cell, `NONE` outside the domain.
    of_cell: Vec<u32>,
    /// Number of the largest component (the first one found among equals).
    largest: u32,
}

/// Labels the 4-connected components of the cells where `domain` is true.
fn label_components(n: usize, domain: &[bool]) -> Components {
    let mut comp = vec![NONE; n * n];
    let mut best: (usize, u32) = (0, NONE);
    let mut ncomp = 0u32;
    for start in 0..n * n {
        if !domain[start] || comp[start] != NONE {
            continue;
        }
        let mut stack = vec![start as u32];
        comp[start] = ncomp;
        let mut size = 0usize;
        while let Some(c) = stack.pop() {
            size += 1;
            for nb in neighbours(n, c) {
                if domain[nb as usize] && comp[nb as usize] == NONE {
                    comp[nb as usize] = ncomp;
                    stack.push(nb);
                }
            }
        }
        if size > best.0 {
            best = (size, ncomp);
        }
        ncomp += 1;
    }
    Components {
        of_cell: comp,
        largest: best.1,
    }
}

struct Streets {
    /// The cell each street grew from.
    seeds: Vec<u32>,
    /// Street (index into `seeds`) of every lattice cell, `NONE` off land.
    of_cell: Vec<u32>,
    /// Each street's 3-digit number: 001–099 for 街道, 101–199 for 镇.
    number: Vec<u16>,
}

/// Streets: spread seeds, relax them towards their regions' centres, grow, then number.
fn grow_streets(
    land: &Land,
    blob: &Blob,
    count: usize,
    rng: &mut Rng,
) -> Result<Streets, GenerateError> {
    let seeds = place_street_seeds(land, blob, count)?;
    let weights: Vec<f64> = (0..count).map(|_| rng.range(0.75, 1.3)).collect();
    let mut of_cell = vec![NONE; land.n * land.n];
    grow(
        land.n,
        |c| land.contains(c),
        &seeds,
        &weights,
        &mut of_cell,
        0,
        rng,
    );
    let number = number_streets(land, &seeds)?;
    Ok(Streets {
        seeds,
        of_cell,
        number,
    })
}

/// Well-spread street seeds, starting from the deepest land cell: farthest-point sampling,
/// relaxed six times towards the centres of the regions nearest to them (Lloyd), then moved to
/// the nearest land cell not taken by another seed.
fn place_street_seeds(land: &Land, blob: &Blob, count: usize) -> Result<Vec<u32>, GenerateError> {
    let first = *land
        .cells
        .iter()
        .min_by(|&&a, &&b| {
            blob.depth(land.centre_of(a))
                .total_cmp(&blob.depth(land.centre_of(b)))
                .then(a.cmp(&b))
        })
        .ok_or_else(|| GenerateError::InvalidParams("empty district".to_owned()))?;
    let mut seed_pts: Vec<[f64; 2]> = spread_seeds(&land.cells, &land.centre, first, count)
        .iter()
        .map(|&c| land.centre_of(c))
        .collect();
    for _ in 0..6 {
        relax_towards_regions(land, &mut seed_pts);
    }
    let mut seeds: Vec<u32> = Vec::with_capacity(count);
    for p in &seed_pts {
        let c = land
            .cells
            .iter()
            .copied()
            .filter(|c| !seeds.contains(c))
            .min_by(|&a, &b| {
                dist2(land.centre_of(a), *p)
                    .total_cmp(&dist2(land.centre_of(b), *p))
                    .then(a.cmp(&b))
            })
            .ok_or_else(|| GenerateError::InvalidParams("too few cells".to_owned()))?;
        seeds.push(c);
    }
    Ok(seeds)
}

/// One Lloyd step: every point moves to the mean of the land cells nearest to it.
fn relax_towards_regions(land: &Land, points: &mut [[f64; 2]]) {
    let mut acc = vec![(0.0, 0.0, 0usize); points.len()];
    for &c in &land.cells {
        let p = land.centre_of(c);
        let k = (0..points.len())
            .min_by(|&a, &b| dist2(p, points[a]).total_cmp(&dist2(p, points[b])))
            .unwrap_or(0);
        acc[k].0 += p[0];
        acc[k].1 += p[1];
        acc[k].2 += 1;
    }
    for (k, a) in acc.iter().enumerate() {
        if a.2 > 0 {
            points[k] = [a.0 / a.2 as f64, a.1 / a.2 as f64];
        }
    }
}

/// Street numbers: the streets nearest the centre are 街道, the outer ones 镇 (about 5/13 of
/// them); each group numbered clockwise from north.
fn number_streets(land: &Land, seeds: &[u32]) -> Result<Vec<u16>, GenerateError> {
    let count = seeds.len();
    let towns = if count >= 3 {
        ((count as f64) * 5.0 / 13.0).round() as usize
    } else {
        0
    };
    let subs = count - towns;
    if subs > 99 || towns > 99 {
        return Err(GenerateError::CodeSpace(format!(
            "{subs} subdistricts / {towns} towns do not fit in 001–099 / 101–199"
        )));
    }
    let seed_centre = |r: usize| land.centre_of(seeds[r]);
    let mut by_dist: Vec<usize> = (0..count).collect();
    by_dist.sort_by(|&a, &b| {
        dist2(seed_centre(a), [0.0, 0.0])
            .total_cmp(&dist2(seed_centre(b), [0.0, 0.0]))
            .then(a.cmp(&b))
    });
    let bearing = |r: usize| {
        let p = seed_centre(r);
        let b = p[0].atan2(p[1]);
        if b < 0.0 {
            b + TAU
        } else {
            b
        }
    };
    let mut number = vec![0u16; count];
    for (group, base) in [(&by_dist[..subs], 1u16), (&by_dist[subs..], 101u16)] {
        let mut g = group.to_vec();
        g.sort_by(|&a, &b| bearing(a).total_cmp(&bearing(b)).then(a.cmp(&b)));
        for (k, &r) in g.iter().enumerate() {
            number[r] = base + k as u16;
        }
    }
    Ok(number)
}

struct Communities {
    /// Community of every lattice cell, `NONE` off land.
    of_cell: Vec<u32>,
    /// Street of each community.
    street: Vec<usize>,
}

/// Communities grown inside each street, about [`GRIDS_PER_COMMUNITY`] grids each.
fn grow_communities(land: &Land, streets: &Streets, grids: usize, rng: &mut Rng) -> Communities {
    let cells_per_grid = land.cells.len() as f64 / grids as f64;
    let mut communities = Communities {
        of_cell: vec![NONE; land.n * land.n],
        street: Vec::new(),
    };
    let mut street_cells: Vec<Vec<u32>> = vec![Vec::new(); streets.seeds.len()];
    for &c in &land.cells {
        street_cells[streets.of_cell[c as usize] as usize].push(c);
    }
    for (st, cells) in street_cells.iter().enumerate() {
        let k = ((cells.len() as f64 / cells_per_grid / GRIDS_PER_COMMUNITY).round() as usize)
            .clamp(1, 999);
        let seeds = spread_seeds(cells, &land.centre, streets.seeds[st], k);
        let weights: Vec<f64> = (0..seeds.len()).map(|_| rng.range(0.6, 1.5)).collect();
        let first_id = communities.street.len() as u32;
        let st32 = st as u32;
        grow(
            land.n,
            |c| land.contains(c) && streets.of_cell[c as usize] == st32,
            &seeds,
            &weights,
            &mut communities.of_cell,
            first_id,
            rng,
        );
        communities
            .street
            .extend(std::iter::repeat_n(st, seeds.len()));
    }
    communities
}

/// The grids' cells: some neighbouring cell pairs inside a community are merged into
/// dominoes, until the land holds about `grids` grids; every other land cell is a grid alone.
fn pair_dominoes(land: &Land, community_of: &[u32], grids: usize, rng: &mut Rng) -> Vec<Vec<u32>> {
    let merges_wanted = land.cells.len().saturating_sub(grids);
    let mut grid_of = vec![NONE; land.n * land.n];
    let mut grid_cells: Vec<Vec<u32>> = Vec::new();
    let mut order = land.cells.clone();
    rng.shuffle(&mut order);
    for &c in &order {
        if grid_cells.len() >= merges_wanted {
            break;
        }
        if grid_of[c as usize] != NONE {
            continue;
        }
        let partners: Vec<u32> = neighbours(land.n, c)
            .filter(|&nb| {
                land.contains(nb)
                    && grid_of[nb as usize] == NONE
                    && community_of[nb as usize] == community_of[c as usize]
            })
            .collect();
        if partners.is_empty() {
            continue;
        }
        let p = partners[rng.below(partners.len())];
        let id = grid_cells.len() as u32;
        grid_of[c as usize] = id;
        grid_of[p as usize] = id;
        grid_cells.push(vec![c.min(p), c.max(p)]);
    }
    for &c in &land.cells {
        if grid_of[c as usize] == NONE {
            grid_of[c as usize] = grid_cells.len() as u32;
            grid_cells.push(vec![c]);
        }
    }
    grid_cells
}

/// Which grids get a pond (a hole); only single-cell grids do.
fn choose_ponds(params: &GenerateParams, grid_cells: &[Vec<u32>], rng: &mut Rng) -> Vec<bool> {
    let pond_count = params
        .ponds
        .unwrap_or_else(|| (params.grids as f64 / 300.0).round().max(1.0) as usize);
    let singles: Vec<usize> = (0..grid_cells.len())
        .filter(|&g| grid_cells[g].len() == 1)
        .collect();
    let mut has_pond = vec![false; grid_cells.len()];
    if !singles.is_empty() {
        for _ in 0..pond_count.min(singles.len()) {
            for _attempt in 0..100 {
                let g = singles[rng.below(singles.len())];
                if !has_pond[g] {
                    has_pond[g] = true;
                    break;
                }
            }
        }
    }
    has_pond
}

struct CommunityNumbers {
    /// Mean of each community's cell centres.
    centre: Vec<[f64; 2]>,
    /// Each community's 3-digit number inside its street.
    number: Vec<u16>,
}

/// Community numbers in reading order inside each street.
fn number_communities(
    land: &Land,
    communities: &Communities,
    params: &GenerateParams,
) -> CommunityNumbers {
    let count = communities.street.len();
    let mut cells: Vec<Vec<u32>> = vec![Vec::new(); count];
    for &c in &land.cells {
        cells[communities.of_cell[c as usize] as usize].push(c);
    }
    let centre: Vec<[f64; 2]> = cells
        .iter()
        .map(|cs| mean(cs.iter().map(|&c| land.centre_of(c))))
        .collect();
    let mut number = vec![0u16; count];
    for st in 0..params.streets {
        let mut cs: Vec<usize> = (0..count)
            .filter(|&c| communities.street[c] == st)
            .collect();
        cs.sort_by_key(|&c| (reading_order(centre[c], 2.0 * params.cell_size_m), c));
        for (k, &c) in cs.iter().enumerate() {
            number[c] = k as u16 + 1;
        }
    }
    CommunityNumbers { centre, number }
}

/// Grid codes: grids numbered in reading order inside each community.
fn assign_grid_codes(
    params: &GenerateParams,
    land: &Land,
    grid_cells: &[Vec<u32>],
    communities: &Communities,
    numbers: &CommunityNumbers,
    street_number: &[u16],
) -> Result<Vec<Option<GridCode>>, GenerateError> {
    let mut community_grids: Vec<Vec<usize>> = vec![Vec::new(); communities.street.len()];
    for (g, cells) in grid_cells.iter().enumerate() {
        community_grids[communities.of_cell[cells[0] as usize] as usize].push(g);
    }
    let grid_centre = |g: usize| mean(grid_cells[g].iter().map(|&c| land.centre_of(c)));
    let mut grid_code: Vec<Option<GridCode>> = vec![None; grid_cells.len()];
    for (c, gs) in community_grids.iter_mut().enumerate() {
        if gs.len() > 999 {
            return Err(GenerateError::CodeSpace(format!(
                "a community would have {} grids (max 999); use more streets",
                gs.len()
            )));
        }
        gs.sort_by_key(|&g| (reading_order(grid_centre(g), params.cell_size_m), g));
        for (k, &g) in gs.iter().enumerate() {
            let code = GridCode::from_parts(
                &params.admin_division,
                street_number[communities.street[c]],
                numbers.number[c],
                k as u16 + 1,
            )
            .map_err(|e| GenerateError::CodeSpace(e.to_string()))?;
            grid_code[g] = Some(code);
        }
    }
    Ok(grid_code)
}

/// The streets in code order, named 街道 (001–099) or 镇 (101–199).
fn street_records(
    params: &GenerateParams,
    street_number: &[u16],
    pool: &mut NamePool,
) -> Result<Vec<Street>, GenerateError> {
    let mut in_code_order: Vec<(u16, usize)> = street_number
        .iter()
        .enumerate()
        .map(|(r, &num)| (num, r))
        .collect();
    in_code_order.sort();
    let admin = &params.admin_division;
    let mut streets = Vec::with_capacity(street_number.len());
    for &(num, _) in &in_code_order {
        let suffix = if num < 100 { "街道" } else { "镇" };
        streets.push(Street {
            code: StreetCode::parse(&format!("{admin}{num:03}"))
                .map_err(|e| GenerateError::CodeSpace(e.to_string()))?,
            name: pool.draw(suffix),
        });
    }
    Ok(streets)
}

/// The communities in code order. In a 街道 all are 社区; in a town the communities nearest
/// the town centre are urban 社区, the rest 村.
fn community_records(
    params: &GenerateParams,
    land: &Land,
    streets: &Streets,
    communities: &Communities,
    numbers: &CommunityNumbers,
    pool: &mut NamePool,
) -> Result<Vec<Community>, GenerateError> {
    let count = communities.street.len();
    let mut in_code_order: Vec<(u16, u16, usize)> = (0..count)
        .map(|c| {
            let street = streets.number[communities.street[c]];
            (street, numbers.number[c], c)
        })
        .collect();
    in_code_order.sort();
    let admin = &params.admin_division;
    let mut records = Vec::with_capacity(count);
    for &(snum, cnum, c) in &in_code_order {
        let st = communities.street[c];
        let suffix = if snum < 100 {
            "社区"
        } else {
            let town_centre = land.centre_of(streets.seeds[st]);
            let mine = dist2(numbers.centre[c], town_centre);
            let peers: Vec<f64> = (0..count)
                .filter(|&o| communities.street[o] == st)
                .map(|o| dist2(numbers.centre[o], town_centre))
                .collect();
            let closer = peers.iter().filter(|&&d| d < mine).count();
            if (closer as f64) < (peers.len() as f64 * 0.25).max(1.0) {
                "社区"
            } else {
                "村"
            }
        };
        let code = CommunityCode::parse(&format!("{admin}{snum:03}{cnum:03}"))
            .map_err(|e| GenerateError::CodeSpace(e.to_string()))?;
        records.push(Community {
            street_code: code.street_code(),
            code,
            name: pool.draw(suffix),
        });
    }
    Ok(records)
}

/// The lakes as named excluded areas.
fn lake_areas(
    lattice: &Lattice,
    lakes: &[Vec<(i64, i64)>],
    pool: &mut NamePool,
) -> Vec<ExcludedArea> {
    lakes
        .iter()
        .enumerate()
        .map(|(lake_no, cells)| ExcludedArea {
            name: pool.draw(["湖", "荡", "泖"][lake_no % 3]),
            polygon: Polygon::new(lattice.ring_of_cells(cells), vec![]),
        })
        .collect()
}

/// The grids' polygons. A pond is a hole in its grid and is appended to `excluded` as an area
/// with the same ring and no name yet (see [`name_ponds`]).
fn grid_features(
    lattice: &Lattice,
    grid_cells: &[Vec<u32>],
    has_pond: &[bool],
    grid_codes: &[Option<GridCode>],
    excluded: &mut Vec<ExcludedArea>,
) -> Result<Vec<Grid>, GenerateError> {
    let n = lattice.n;
    let cell_ij = |c: u32| ((c as usize % n) as i64, (c as usize / n) as i64);
    let mut grids = Vec::with_capacity(grid_cells.len());
    for (g, cells) in grid_cells.iter().enumerate() {
        let ij: Vec<(i64, i64)> = cells.iter().map(|&c| cell_ij(c)).collect();
        let exterior = lattice.ring_of_cells(&ij);
        let mut holes = Vec::new();
        if has_pond[g] {
            let pond = lattice.pond_ring(ij[0].0, ij[0].1);
            let mut hole = pond.clone();
            hole.0.reverse();
            holes.push(hole);
            excluded.push(ExcludedArea {
                name: String::new(),
                polygon: Polygon::new(pond, vec![]),
            });
        }
        let Some(code) = grid_codes[g] else {
            return Err(GenerateError::CodeSpace(format!("grid {g} got no code")));
        };
        grids.push(Grid {
            community_code: code.community_code(),
            street_code: code.street_code(),
            grid_code: code,
            polygon: Polygon::new(exterior, holes),
        });
    }
    Ok(grids)
}

/// Names the ponds (the excluded areas without a name). They are named after the lakes so that
/// lake names do not depend on the ponds.
fn name_ponds(excluded: &mut [ExcludedArea], pool: &mut NamePool) {
    for (k, e) in excluded
        .iter_mut()
        .filter(|e| e.name.is_empty())
        .enumerate()
    {
        e.name = pool.draw(if k % 2 == 0 { "池" } else { "潭" });
    }
}
