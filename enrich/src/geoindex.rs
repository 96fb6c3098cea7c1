//! Exact grid assignment at millions of points per second per core.
//!
//! # Boundary rule (deterministic)
//!
//! - A point strictly inside a grid gets that grid (`on_boundary = false`). (On an invalid map
//!   where grids overlap, the smallest code among the grids strictly containing it.)
//! - Otherwise, a point on the boundary of one or more grids — a shared edge or vertex, the
//!   district's outer edge, the rim of a lake or pond — gets the smallest grid code among the
//!   grids whose closed polygon contains it, flagged `on_boundary = true`.
//! - A point in no closed grid (outside the district, or in a lake or pond that belongs to no
//!   grid) is `Outside`, with the nearest grid and the distance to it in metres.
//!
//! "On" means exactly on, decided with robust (adaptive-precision) orientation predicates on the
//! f64 coordinates as given: no tolerance, no rounding.
//!
//! # How it is fast
//!
//! A fine regular grid of cells covers the district (about [`IndexParams::cells_per_grid`]
//! cells per unit grid, square in metres). Every polygon edge (shared edges once, labelled with
//! both grids beside it) is listed in each cell its segment touches (with a small safety margin,
//! so a point the floating-point cell computation puts into a cell is always covered by the
//! cell's list).
//!
//! - A cell that no edge touches lies entirely inside one grid (or entirely outside every grid):
//!   a query there is one load.
//! - A cell that edges touch has a *reference point* `r` (not on any edge) whose grid set was
//!   computed at build time. For a query point `p` in the cell, the segment `r→p` lies inside the
//!   cell, so every edge it crosses is in the cell's list: the grids containing `p` are those
//!   containing `r`, with the membership of each grid flipped once per crossing of one of its
//!   edges (Jordan parity). Crossings are decided with orientation predicates only, with a
//!   symbolic perturbation (a vertex exactly on the line `r→p` counts as left of it), so the
//!   answer is exact. Per cell, the few grids involved are bits of a 32-bit mask.
//! - Reference points get their grid sets by walking each row of cells from the left, outside
//!   the district, with the same crossing rule: the build needs no other point-in-polygon test.
//!
//! Cells touching more than 32 distinct grids (never seen on real maps) fall back to the R-tree
//! and a per-polygon exact test. The R-tree over grid bounding boxes also answers the nearest
//! grid for outside points.

use std::collections::HashMap;

use geo_types::{Coord, LineString, Polygon};
use gridclue_core::GridCode;
use gridclue_district::District;
use robust::{orient2d, Coord as RCoord};
use rstar::{RTree, RTreeObject, AABB};

/// Metres per degree of latitude (mean Earth radius).
const METRES_PER_DEGREE: f64 = 111_195.08;

/// A segment label meaning "no grid".
const NONE: u32 = u32::MAX;
/// Cell tags: below `TAG_SLOW` a grid index (the cell is inside that grid).
const TAG_OUTSIDE: u32 = 0x7FFF_FFFF;
const TAG_SLOW: u32 = 0x7FFF_FFFE;
const TAG_MIXED: u32 = 0x8000_0000;
const MAX_CELL_LABELS: usize = 32;
/// Cell margin, relative to the cell size, absorbing the rounding of the cell computation.
const CELL_MARGIN: f64 = 1e-6;

#[derive(Clone, Debug, PartialEq)]
pub enum Assignment {
    Inside {
        grid: GridCode,
        on_boundary: bool,
    },
    Outside {
        nearest: Option<GridCode>,
        distance_m: f64,
    },
}

/// Where a point fell, as a grid index into [`GeoIndex::grid_code`] (allocation-free).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Located {
    Inside { grid: u32, on_boundary: bool },
    Outside,
}

/// Tuning of the cell grid.
#[derive(Clone, Copy, Debug)]
pub struct IndexParams {
    /// Cells per unit grid (the cell size follows from the district's bounding box).
    pub cells_per_grid: f64,
    /// Upper bound on the number of cells.
    pub max_cells: usize,
}

impl Default for IndexParams {
    fn default() -> Self {
        Self {
            cells_per_grid: 96.0,
            max_cells: 1 << 26,
        }
    }
}

/// Facts about a built index, for logs and benchmarks.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct IndexStats {
    pub grids: usize,
    pub segments: usize,
    pub cells: usize,
    pub mixed_cells: usize,
    pub slow_cells: usize,
    pub cell_segment_refs: usize,
    pub cell_size_m: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("the map has no grids")]
    Empty,
    #[error("the map has a non-finite coordinate in grid {0}")]
    NonFinite(String),
    #[error("too many grids for the index: {0}")]
    TooMany(usize),
}

struct Entry {
    bbox: AABB<[f64; 2]>,
    grid: usize,
}

impl RTreeObject for Entry {
    type Envelope = AABB<[f64; 2]>;
    fn envelope(&self) -> Self::Envelope {
        self.bbox
    }
}

impl rstar::PointDistance for Entry {
    fn distance_2(&self, point: &[f64; 2]) -> f64 {
        self.bbox.distance_2(point)
    }
}

/// One edge of the map, with the (up to two) grids it bounds.
#[derive(Clone, Copy)]
struct Seg {
    a: Coord<f64>,
    b: Coord<f64>,
    l0: u32,
    l1: u32,
}

/// An edge as listed in one cell: its coordinates, the bits of its grids in the cell's label
/// list, and the side of the cell's reference point (sign of orient2d(a, b, r)).
///
/// A boundary cell is one contiguous block of these (one or two cache lines for most cells):
/// a header — `ax, ay` = the reference point r, `bx` = the start of the cell's labels (an
/// integer), `mask` = the grids containing r, `side` = the number of edges — then its edges.
#[derive(Clone, Copy)]
struct CellSeg {
    ax: f64,
    ay: f64,
    bx: f64,
    by: f64,
    mask: u32,
    side: i32,
}

struct Cells {
    x0: f64,
    y0: f64,
    w: f64,
    h: f64,
    inv_w: f64,
    inv_h: f64,
    nx: usize,
    ny: usize,
    tags: Vec<u32>,
    mixed_count: usize,
    segs: Vec<CellSeg>,
    labels: Vec<u32>,
    cell_size_m: f64,
    segment_count: usize,
    slow: usize,
}

pub struct GeoIndex {
    tree: RTree<Entry>,
    grids: Vec<(GridCode, Polygon<f64>)>,
    cells: Cells,
    map_version: String,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Where {
    Inside,
    Boundary,
    Outside,
}

#[inline]
fn rc(x: f64, y: f64) -> RCoord<f64> {
    RCoord { x, y }
}

#[inline]
fn in_bbox(x: f64, y: f64, ax: f64, ay: f64, bx: f64, by: f64) -> bool {
    x >= ax.min(bx) && x <= ax.max(bx) && y >= ay.min(by) && y <= ay.max(by)
}

#[inline]
fn sign(v: f64) -> i32 {
    if v > 0.0 {
        1
    } else if v < 0.0 {
        -1
    } else {
        0
    }
}

/// Whether the segment p→q crosses segment a→b, for p and q on no edge, with the perturbation
/// rule "a vertex exactly on the line p→q is left of it".
#[inline]
fn crosses(p: RCoord<f64>, q: RCoord<f64>, a: RCoord<f64>, b: RCoord<f64>) -> bool {
    let sp = sign(orient2d(a, b, p));
    let sq = sign(orient2d(a, b, q));
    if sp == 0 || sq == 0 || sp == sq {
        return false;
    }
    (orient2d(p, q, a) >= 0.0) != (orient2d(p, q, b) >= 0.0)
}

fn toggle(set: &mut Vec<u32>, label: u32) {
    if label == NONE {
        return;
    }
    match set.binary_search(&label) {
        Ok(i) => {
            set.remove(i);
        }
        Err(i) => set.insert(i, label),
    }
}

/// The map's edges, shared ones once with both grids, and the bounding box of the grids'
/// vertices as [min x, min y, max x, max y].
fn collect_edges(grids: &[(GridCode, Polygon<f64>)]) -> (Vec<Seg>, [f64; 4]) {
    let mut segs: Vec<Seg> = Vec::new();
    let mut by_key: HashMap<[u64; 4], u32> = HashMap::new();
    let (mut minx, mut miny, mut maxx, mut maxy) = (
        f64::INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NEG_INFINITY,
    );
    for (gi, (_, poly)) in grids.iter().enumerate() {
        let gi = gi as u32;
        for ring in std::iter::once(poly.exterior()).chain(poly.interiors()) {
            for w in ring.0.windows(2) {
                let (a, b) = (w[0], w[1]);
                minx = minx.min(a.x);
                miny = miny.min(a.y);
                maxx = maxx.max(a.x);
                maxy = maxy.max(a.y);
                if a == b {
                    continue;
                }
                let ka = [a.x.to_bits(), a.y.to_bits()];
                let kb = [b.x.to_bits(), b.y.to_bits()];
                let key = if ka <= kb {
                    [ka[0], ka[1], kb[0], kb[1]]
                } else {
                    [kb[0], kb[1], ka[0], ka[1]]
                };
                match by_key.get(&key) {
                    Some(&i) if segs[i as usize].l1 == NONE && segs[i as usize].l0 != gi => {
                        segs[i as usize].l1 = gi;
                    }
                    _ => {
                        by_key.insert(key, segs.len() as u32);
                        segs.push(Seg {
                            a,
                            b,
                            l0: gi,
                            l1: NONE,
                        });
                    }
                }
            }
        }
    }
    (segs, [minx, miny, maxx, maxy])
}

/// Toggles in `set` the grids beside every edge (of `ids`) that p→q crosses.
#[inline]
fn toggle_crossed<'a>(
    set: &mut Vec<u32>,
    p: RCoord<f64>,
    q: RCoord<f64>,
    ids: impl Iterator<Item = &'a u32>,
    segs: &[Seg],
) {
    for &si in ids {
        let s = &segs[si as usize];
        if crosses(p, q, rc(s.a.x, s.a.y), rc(s.b.x, s.b.y)) {
            toggle(set, s.l0);
            toggle(set, s.l1);
        }
    }
}

/// Placement of the cell grid over the district, in degrees.
struct CellFrame {
    x0: f64,
    y0: f64,
    /// Cell width and height.
    w: f64,
    h: f64,
    nx: usize,
    ny: usize,
    /// Cell side in metres.
    side_m: f64,
    /// Margins added to a cell when listing the edges that touch it.
    mx: f64,
    my: f64,
}

impl CellFrame {
    /// Cells square in metres, about `cells_per_grid` cells per grid, at most `max_cells`.
    fn fit(bounds: [f64; 4], grids: usize, params: IndexParams) -> Self {
        let [minx, miny, maxx, maxy] = bounds;
        let mid_lat = (miny + maxy) / 2.0;
        let kx = mid_lat.to_radians().cos().max(0.01);
        let width_m = ((maxx - minx) * kx * METRES_PER_DEGREE).max(1e-3);
        let height_m = ((maxy - miny) * METRES_PER_DEGREE).max(1e-3);
        let target =
            (grids as f64 * params.cells_per_grid).clamp(64.0, params.max_cells.max(64) as f64);
        let mut side_m = (width_m * height_m / target).sqrt();
        let dims = |s: f64| {
            let w = s / (kx * METRES_PER_DEGREE);
            let h = s / METRES_PER_DEGREE;
            let nx = ((maxx - minx) / w).floor() as usize + 2;
            let ny = ((maxy - miny) / h).floor() as usize + 2;
            (w, h, nx, ny)
        };
        let (mut w, mut h, mut nx, mut ny) = dims(side_m);
        while nx * ny > params.max_cells.max(64) {
            side_m *= 1.1;
            (w, h, nx, ny) = dims(side_m);
        }
        CellFrame {
            x0: minx - w / 2.0,
            y0: miny - h / 2.0,
            w,
            h,
            nx,
            ny,
            side_m,
            mx: w * CELL_MARGIN,
            my: h * CELL_MARGIN,
        }
    }

    /// The cells (of `n`, each `size` wide from `origin`) that the interval lo..hi meets.
    fn cell_range(lo: f64, hi: f64, origin: f64, size: f64, n: usize) -> (usize, usize) {
        let a = ((lo - origin) / size).floor().max(0.0) as usize;
        let b = ((hi - origin) / size).floor().max(0.0) as usize;
        (a.min(n - 1), b.min(n - 1))
    }

    /// Whether the segment's line passes through cell (ix, iy) grown by the margin.
    fn touches(&self, s: &Seg, ix: usize, iy: usize) -> bool {
        let cx0 = self.x0 + ix as f64 * self.w - self.mx;
        let cx1 = self.x0 + (ix + 1) as f64 * self.w + self.mx;
        let cy0 = self.y0 + iy as f64 * self.h - self.my;
        let cy1 = self.y0 + (iy + 1) as f64 * self.h + self.my;
        let (dx, dy) = (s.b.x - s.a.x, s.b.y - s.a.y);
        let d = |x: f64, y: f64| dx * (y - s.a.y) - dy * (x - s.a.x);
        let ds = [d(cx0, cy0), d(cx1, cy0), d(cx0, cy1), d(cx1, cy1)];
        !(ds.iter().all(|&v| v > 0.0) || ds.iter().all(|&v| v < 0.0))
    }

    /// Calls `f` with every cell the segment touches (conservatively, with the margin).
    fn for_each_cell(&self, s: &Seg, f: &mut dyn FnMut(usize)) {
        let (mx, my) = (self.mx, self.my);
        let (ix0, ix1) = Self::cell_range(
            s.a.x.min(s.b.x) - mx,
            s.a.x.max(s.b.x) + mx,
            self.x0,
            self.w,
            self.nx,
        );
        let (iy0, iy1) = Self::cell_range(
            s.a.y.min(s.b.y) - my,
            s.a.y.max(s.b.y) + my,
            self.y0,
            self.h,
            self.ny,
        );
        for iy in iy0..=iy1 {
            for ix in ix0..=ix1 {
                if self.touches(s, ix, iy) {
                    f(iy * self.nx + ix);
                }
            }
        }
    }

    /// The first of [`REF_CANDIDATES`] in cell (ix, iy) that lies on none of the cell's edges.
    fn reference_point(
        &self,
        ix: usize,
        iy: usize,
        list: &[u32],
        segs: &[Seg],
    ) -> Option<RCoord<f64>> {
        let cx = self.x0 + ix as f64 * self.w;
        let cy = self.y0 + iy as f64 * self.h;
        REF_CANDIDATES
            .iter()
            .map(|(fx, fy)| rc(cx + fx * self.w, cy + fy * self.h))
            .find(|&p| list.is_empty() || !on_any_edge(list, segs, p))
    }
}

fn on_any_edge(list: &[u32], segs: &[Seg], p: RCoord<f64>) -> bool {
    list.iter().any(|&si| {
        let s = &segs[si as usize];
        orient2d(rc(s.a.x, s.a.y), rc(s.b.x, s.b.y), p) == 0.0
            && in_bbox(p.x, p.y, s.a.x, s.a.y, s.b.x, s.b.y)
    })
}

/// The edges touching each cell, as compressed lists (CSR).
struct CellLists {
    /// Cell c's edges are `ids[start[c]..start[c + 1]]`.
    start: Vec<u32>,
    ids: Vec<u32>,
}

impl CellLists {
    fn build(frame: &CellFrame, segs: &[Seg]) -> Self {
        let ncells = frame.nx * frame.ny;
        let mut start = vec![0u32; ncells + 1];
        for s in segs {
            frame.for_each_cell(s, &mut |c| start[c + 1] += 1);
        }
        for i in 0..ncells {
            start[i + 1] += start[i];
        }
        let mut fill = start.clone();
        let mut ids = vec![0u32; start[ncells] as usize];
        for (si, s) in segs.iter().enumerate() {
            frame.for_each_cell(s, &mut |c| {
                ids[fill[c] as usize] = si as u32;
                fill[c] += 1;
            });
        }
        CellLists { start, ids }
    }

    #[inline]
    fn of(&self, c: usize) -> &[u32] {
        &self.ids[self.start[c] as usize..self.start[c + 1] as usize]
    }
}

/// The encoded cells, as [`Cells`] stores them.
struct CellBlocks {
    tags: Vec<u32>,
    mixed_count: usize,
    segs: Vec<CellSeg>,
    labels: Vec<u32>,
    slow: usize,
    /// Scratch: the current cell's labels.
    cell_labels: Vec<u32>,
}

impl CellBlocks {
    fn new(ncells: usize) -> Self {
        CellBlocks {
            tags: vec![TAG_OUTSIDE; ncells],
            mixed_count: 0,
            segs: Vec::new(),
            labels: Vec::new(),
            slow: 0,
            cell_labels: Vec::new(),
        }
    }

    fn mark_slow(&mut self, c: usize) {
        self.tags[c] = TAG_SLOW;
        self.slow += 1;
    }

    /// Encodes cell `c` with reference point `r`, the grids `set` containing r and the cell's
    /// edges `list`: a plain tag when no edge touches it, else a block of [`CellSeg`]s (or the
    /// slow path when it involves too many grids).
    fn encode(&mut self, c: usize, r: RCoord<f64>, set: &[u32], list: &[u32], segs: &[Seg]) {
        if list.is_empty() && set.len() <= 1 {
            self.tags[c] = set.first().copied().unwrap_or(TAG_OUTSIDE);
            return;
        }
        self.cell_labels.clear();
        self.cell_labels.extend(set.iter().copied());
        for &si in list {
            let s = &segs[si as usize];
            self.cell_labels.push(s.l0);
            if s.l1 != NONE {
                self.cell_labels.push(s.l1);
            }
        }
        self.cell_labels.sort_unstable();
        self.cell_labels.dedup();
        if self.cell_labels.len() > MAX_CELL_LABELS {
            self.mark_slow(c);
            return;
        }
        let block = self.segs.len();
        if block >= TAG_MIXED as usize || self.labels.len() >= 1 << 52 {
            self.mark_slow(c);
            return;
        }
        let cell_labels = &self.cell_labels;
        let bit = |l: u32| -> u32 {
            if l == NONE {
                0
            } else {
                1 << cell_labels.binary_search(&l).expect("label listed")
            }
        };
        let r_mask = set.iter().fold(0u32, |m, &l| m | bit(l));
        self.segs.push(CellSeg {
            ax: r.x,
            ay: r.y,
            bx: self.labels.len() as f64,
            by: 0.0,
            mask: r_mask,
            side: list.len() as i32,
        });
        for &si in list {
            let s = &segs[si as usize];
            self.segs.push(CellSeg {
                ax: s.a.x,
                ay: s.a.y,
                bx: s.b.x,
                by: s.b.y,
                mask: bit(s.l0) | bit(s.l1),
                side: sign(orient2d(rc(s.a.x, s.a.y), rc(s.b.x, s.b.y), r)),
            });
        }
        self.tags[c] = TAG_MIXED | block as u32;
        self.mixed_count += 1;
        self.labels.extend_from_slice(cell_labels);
    }
}

/// Offsets (fractions of the cell) tried for a cell's reference point, centre first.
const REF_CANDIDATES: [(f64, f64); 12] = [
    (0.5, 0.5),
    (0.371, 0.613),
    (0.617, 0.293),
    (0.233, 0.771),
    (0.787, 0.431),
    (0.139, 0.197),
    (0.853, 0.883),
    (0.457, 0.059),
    (0.061, 0.547),
    (0.941, 0.127),
    (0.313, 0.947),
    (0.673, 0.709),
];

impl GeoIndex {
    pub fn build(district: &District) -> Result<Self, IndexError> {
        Self::build_with(district, IndexParams::default())
    }

    pub fn build_with(district: &District, params: IndexParams) -> Result<Self, IndexError> {
        let mut grids = Vec::with_capacity(district.grids.len());
        for g in &district.grids {
            let code = g.grid_code;
            let finite = std::iter::once(g.polygon.exterior())
                .chain(g.polygon.interiors())
                .all(|r| r.0.iter().all(|c| c.x.is_finite() && c.y.is_finite()));
            if !finite {
                return Err(IndexError::NonFinite(g.grid_code.as_str().to_owned()));
            }
            grids.push((code, g.polygon.clone()));
        }
        if grids.is_empty() {
            return Err(IndexError::Empty);
        }
        if grids.len() >= TAG_SLOW as usize {
            return Err(IndexError::TooMany(grids.len()));
        }
        // Grid index order is code order: the lowest index is the smallest code.
        grids.sort_by_key(|g| g.0);
        let entries = grids
            .iter()
            .enumerate()
            .map(|(i, (_, poly))| Entry {
                bbox: bbox_of(poly.exterior()),
                grid: i,
            })
            .collect();
        let tree = RTree::bulk_load(entries);
        let mut index = Self {
            tree,
            grids,
            cells: Cells::empty(),
            map_version: district.map_version.clone(),
        };
        index.cells = index.build_cells(params);
        Ok(index)
    }

    pub fn map_version(&self) -> &str {
        &self.map_version
    }

    pub fn grid_count(&self) -> usize {
        self.grids.len()
    }

    /// The code of grid number `i` (as returned by [`GeoIndex::locate`]).
    pub fn grid_code(&self, i: u32) -> GridCode {
        self.grids[i as usize].0
    }

    pub fn stats(&self) -> IndexStats {
        IndexStats {
            grids: self.grids.len(),
            segments: self.cells.segment_count,
            cells: self.cells.tags.len(),
            mixed_cells: self.cells.mixed_count,
            slow_cells: self.cells.slow,
            cell_segment_refs: self.cells.segs.len() - self.cells.mixed_count,
            cell_size_m: self.cells.cell_size_m,
        }
    }

    /// Places a point, with the nearest grid for outside points.
    pub fn assign(&self, lon: f64, lat: f64) -> Assignment {
        match self.locate(lon, lat) {
            Located::Inside { grid, on_boundary } => Assignment::Inside {
                grid: self.grids[grid as usize].0,
                on_boundary,
            },
            Located::Outside => {
                let (nearest, distance_m) = self.nearest(lon, lat);
                Assignment::Outside {
                    nearest,
                    distance_m,
                }
            }
        }
    }

    /// Places a point (the fast path: no nearest-grid search for outside points).
    #[inline]
    pub fn locate(&self, lon: f64, lat: f64) -> Located {
        let c = &self.cells;
        let fx = (lon - c.x0) * c.inv_w;
        let fy = (lat - c.y0) * c.inv_h;
        // Also false for NaN.
        if !(fx >= 0.0 && fy >= 0.0) {
            return Located::Outside;
        }
        let (ix, iy) = (fx as usize, fy as usize);
        if ix >= c.nx || iy >= c.ny {
            return Located::Outside;
        }
        let tag = c.tags[iy * c.nx + ix];
        if tag < TAG_SLOW {
            Located::Inside {
                grid: tag,
                on_boundary: false,
            }
        } else if tag == TAG_OUTSIDE {
            Located::Outside
        } else if tag == TAG_SLOW {
            self.locate_exact(lon, lat)
        } else {
            self.locate_mixed((tag & !TAG_MIXED) as usize, lon, lat)
        }
    }

    fn locate_mixed(&self, block: usize, x: f64, y: f64) -> Located {
        let c = &self.cells;
        let head = &c.segs[block];
        let p = rc(x, y);
        let r = rc(head.ax, head.ay);
        let mut inside = head.mask;
        let mut on = 0u32;
        for s in &c.segs[block + 1..block + 1 + head.side as usize] {
            let (a, b) = (rc(s.ax, s.ay), rc(s.bx, s.by));
            let o = orient2d(a, b, p);
            if o == 0.0 {
                if in_bbox(x, y, s.ax, s.ay, s.bx, s.by) {
                    on |= s.mask;
                }
                // On the line but off the segment: r→p cannot cross it.
                continue;
            }
            let side = if o > 0.0 { 1 } else { -1 };
            if s.side == 0 || side == s.side {
                continue;
            }
            if (orient2d(r, p, a) >= 0.0) != (orient2d(r, p, b) >= 0.0) {
                inside ^= s.mask;
            }
        }
        let strict = inside & !on;
        let labels = &c.labels[head.bx as usize..];
        if strict != 0 {
            Located::Inside {
                grid: labels[strict.trailing_zeros() as usize],
                on_boundary: false,
            }
        } else if on != 0 {
            Located::Inside {
                grid: labels[on.trailing_zeros() as usize],
                on_boundary: true,
            }
        } else {
            Located::Outside
        }
    }

    /// The same answer as [`GeoIndex::locate`], by R-tree candidates and a per-polygon exact test
    /// (the slow path, and the index the cell grid replaced).
    pub fn locate_exact(&self, lon: f64, lat: f64) -> Located {
        let mut boundary: Option<usize> = None;
        let mut strict: Option<usize> = None;
        for e in self.tree.locate_all_at_point(&[lon, lat]) {
            match locate(&self.grids[e.grid].1, lon, lat) {
                Where::Inside => {
                    if strict.is_none_or(|s| e.grid < s) {
                        strict = Some(e.grid);
                    }
                }
                Where::Boundary => {
                    if boundary.is_none_or(|b| e.grid < b) {
                        boundary = Some(e.grid);
                    }
                }
                Where::Outside => {}
            }
        }
        match (strict, boundary) {
            (Some(g), _) => Located::Inside {
                grid: g as u32,
                on_boundary: false,
            },
            (None, Some(g)) => Located::Inside {
                grid: g as u32,
                on_boundary: true,
            },
            (None, None) => Located::Outside,
        }
    }

    /// The nearest grid by distance to its boundary, in metres (local equirectangular).
    fn nearest(&self, lon: f64, lat: f64) -> (Option<GridCode>, f64) {
        let kx = lat.to_radians().cos();
        let mut best: Option<(usize, f64)> = None;
        for (e, bbox_d2) in self.tree.nearest_neighbor_iter_with_distance_2(&[lon, lat]) {
            // Bbox distance in degrees underestimates metres only through kx ≤ 1, so scaling by
            // the latitude factor keeps it a valid lower bound.
            let lower_bound_m = bbox_d2.sqrt() * kx * METRES_PER_DEGREE;
            if best.is_some_and(|(_, d)| lower_bound_m > d) {
                break;
            }
            let d = distance_to_polygon_m(&self.grids[e.grid].1, lon, lat, kx);
            if best.is_none_or(|(bi, bd)| d < bd || (d == bd && e.grid < bi)) {
                best = Some((e.grid, d));
            }
        }
        match best {
            Some((i, d)) => (Some(self.grids[i].0), d),
            None => (None, f64::INFINITY),
        }
    }

    /// The cell grid, as the module documentation describes it: the map's edges, the cells'
    /// placement, each cell's edge list, then the row walk that encodes every cell.
    fn build_cells(&self, params: IndexParams) -> Cells {
        let (segs, bounds) = collect_edges(&self.grids);
        let frame = CellFrame::fit(bounds, self.grids.len(), params);
        let lists = CellLists::build(&frame, &segs);
        let blocks = self.walk_rows(&frame, &segs, &lists);
        Cells {
            x0: frame.x0,
            y0: frame.y0,
            w: frame.w,
            h: frame.h,
            inv_w: 1.0 / frame.w,
            inv_h: 1.0 / frame.h,
            nx: frame.nx,
            ny: frame.ny,
            tags: blocks.tags,
            mixed_count: blocks.mixed_count,
            segs: blocks.segs,
            labels: blocks.labels,
            cell_size_m: frame.side_m,
            segment_count: segs.len(),
            slow: blocks.slow,
        }
    }

    /// Walks each row of cells from the left (outside every grid), carrying the set of grids
    /// that contain the current reference point, and encodes every cell.
    fn walk_rows(&self, frame: &CellFrame, segs: &[Seg], lists: &CellLists) -> CellBlocks {
        let mut blocks = CellBlocks::new(frame.nx * frame.ny);
        let mut set: Vec<u32> = Vec::new();
        for iy in 0..frame.ny {
            set.clear();
            let mut prev: Option<(RCoord<f64>, usize)> = None;
            for ix in 0..frame.nx {
                let c = iy * frame.nx + ix;
                let list = lists.of(c);
                let Some(r) = frame.reference_point(ix, iy, list, segs) else {
                    // No usable reference point (not seen on real maps): this cell is answered
                    // by the exact slow path, and the walk restarts from the next cell.
                    blocks.mark_slow(c);
                    prev = None;
                    continue;
                };
                match prev {
                    None => {
                        // From the row's left end (outside), or after a slow cell: the exact
                        // set of grids strictly containing r.
                        set.clear();
                        if ix == 0 {
                            let start_p = rc(frame.x0 - frame.w, r.y);
                            toggle_crossed(&mut set, start_p, r, list.iter(), segs);
                        } else {
                            set.extend(self.strict_set(r.x, r.y));
                        }
                    }
                    Some((pr, pc)) => {
                        let plist = lists.of(pc);
                        let both = plist
                            .iter()
                            .chain(list.iter().filter(|si| !plist.contains(si)));
                        toggle_crossed(&mut set, pr, r, both, segs);
                    }
                }
                prev = Some((r, c));
                blocks.encode(c, r, &set, list, segs);
            }
        }
        blocks
    }

    /// Indices of the grids strictly containing the point (sorted).
    fn strict_set(&self, x: f64, y: f64) -> Vec<u32> {
        let mut v: Vec<u32> = self
            .tree
            .locate_all_at_point(&[x, y])
            .filter(|e| locate(&self.grids[e.grid].1, x, y) == Where::Inside)
            .map(|e| e.grid as u32)
            .collect();
        v.sort_unstable();
        v
    }
}

impl Cells {
    fn empty() -> Self {
        Cells {
            x0: 0.0,
            y0: 0.0,
            w: 1.0,
            h: 1.0,
            inv_w: 1.0,
            inv_h: 1.0,
            nx: 0,
            ny: 0,
            tags: Vec::new(),
            mixed_count: 0,
            segs: Vec::new(),
            labels: Vec::new(),
            cell_size_m: 0.0,
            segment_count: 0,
            slow: 0,
        }
    }
}

impl std::fmt::Debug for GeoIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeoIndex")
            .field("map_version", &self.map_version)
            .field("stats", &self.stats())
            .field("cell_w_deg", &self.cells.w)
            .field("cell_h_deg", &self.cells.h)
            .finish()
    }
}

fn bbox_of(ring: &LineString<f64>) -> AABB<[f64; 2]> {
    let pts: Vec<[f64; 2]> = ring.0.iter().map(|c| [c.x, c.y]).collect();
    AABB::from_points(pts.iter())
}

/// Where the point is relative to the closed polygon (holes excluded).
fn locate(poly: &Polygon<f64>, x: f64, y: f64) -> Where {
    let mut crossings = 0u32;
    let rings = std::iter::once(poly.exterior()).chain(poly.interiors());
    let p = RCoord { x, y };
    for ring in rings {
        for w in ring.0.windows(2) {
            let (a, b) = (w[0], w[1]);
            let o = orient2d(rc(a.x, a.y), rc(b.x, b.y), p);
            if o == 0.0 && in_bbox(x, y, a.x, a.y, b.x, b.y) {
                return Where::Boundary;
            }
            // Half-open rule on y so a vertex at the ray's height is counted once.
            if (a.y > y) != (b.y > y) {
                let upward = b.y > a.y;
                if (upward && o > 0.0) || (!upward && o < 0.0) {
                    crossings += 1;
                }
            }
        }
    }
    if crossings % 2 == 1 {
        Where::Inside
    } else {
        Where::Outside
    }
}

fn distance_to_polygon_m(poly: &Polygon<f64>, lon: f64, lat: f64, kx: f64) -> f64 {
    let to_m = |c: Coord<f64>| {
        (
            (c.x - lon) * kx * METRES_PER_DEGREE,
            (c.y - lat) * METRES_PER_DEGREE,
        )
    };
    let mut best = f64::INFINITY;
    for ring in std::iter::once(poly.exterior()).chain(poly.interiors()) {
        for w in ring.0.windows(2) {
            let (ax, ay) = to_m(w[0]);
            let (bx, by) = to_m(w[1]);
            best = best.min(point_segment_distance(ax, ay, bx, by));
        }
    }
    best
}

/// Distance from the origin to segment (a, b).
fn point_segment_distance(ax: f64, ay: f64, bx: f64, by: f64) -> f64 {
    let (dx, dy) = (bx - ax, by - ay);
    let len2 = dx * dx + dy * dy;
    let t = if len2 == 0.0 {
        0.0
    } else {
        (-(ax * dx + ay * dy) / len2).clamp(0.0, 1.0)
    };
    let (px, py) = (ax + t * dx, ay + t * dy);
    (px * px + py * py).sqrt()
}

/// Distance in metres (local equirectangular) from a point to the nearest grid's boundary, by
/// scanning every grid: the oracle for [`GeoIndex::assign`]'s outside answers in tests.
pub fn nearest_by_scan(index: &GeoIndex, lon: f64, lat: f64) -> (Option<GridCode>, f64) {
    let kx = lat.to_radians().cos();
    let mut best: Option<(usize, f64)> = None;
    for (i, (_, poly)) in index.grids.iter().enumerate() {
        let d = distance_to_polygon_m(poly, lon, lat, kx);
        if best.is_none_or(|(_, bd)| d < bd) {
            best = Some((i, d));
        }
    }
    match best {
        Some((i, d)) => (Some(index.grids[i].0), d),
        None => (None, f64::INFINITY),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gridclue_district::{Community, CommunityCode, Grid, Street, StreetCode};

    fn square(x0: f64, y0: f64, s: f64) -> Polygon<f64> {
        Polygon::new(
            LineString::from(vec![
                (x0, y0),
                (x0 + s, y0),
                (x0 + s, y0 + s),
                (x0, y0 + s),
                (x0, y0),
            ]),
            vec![],
        )
    }

    /// A district of the given polygons with codes in order.
    fn district(polys: Vec<Polygon<f64>>) -> District {
        let street = StreetCode::parse("310199001").unwrap();
        let community = CommunityCode::parse("310199001001").unwrap();
        District {
            map_version: "test".into(),
            streets: vec![Street {
                code: street,
                name: "测试街道".into(),
            }],
            communities: vec![Community {
                code: community,
                name: "测试社区".into(),
                street_code: street,
            }],
            grids: polys
                .into_iter()
                .enumerate()
                .map(|(i, polygon)| Grid {
                    grid_code: gridclue_district::GridCode::parse(&format!(
                        "310199001001{:03}",
                        i + 1
                    ))
                    .unwrap(),
                    community_code: community,
                    street_code: street,
                    polygon,
                })
                .collect(),
            excluded: vec![],
        }
    }

    fn code(i: usize) -> GridCode {
        GridCode::parse(&format!("310199001001{i:03}")).unwrap()
    }

    #[test]
    fn locate_distinguishes_inside_boundary_outside() {
        let sq = square(0.0, 0.0, 1.0);
        assert_eq!(locate(&sq, 0.5, 0.5), Where::Inside);
        assert_eq!(locate(&sq, 1.0, 0.5), Where::Boundary);
        assert_eq!(locate(&sq, 1.0, 1.0), Where::Boundary);
        assert_eq!(locate(&sq, 1.5, 0.5), Where::Outside);
        assert_eq!(locate(&sq, 0.5, 1.0000001), Where::Outside);
        // A ray through a vertex must not be double-counted.
        let diamond = Polygon::new(
            LineString::from(vec![
                (0.0, -1.0),
                (1.0, 0.0),
                (0.0, 1.0),
                (-1.0, 0.0),
                (0.0, -1.0),
            ]),
            vec![],
        );
        assert_eq!(locate(&diamond, -0.5, 0.0), Where::Inside);
        assert_eq!(locate(&diamond, -2.0, 0.0), Where::Outside);
    }

    #[test]
    fn holes_are_outside() {
        let mut poly = square(0.0, 0.0, 3.0);
        poly.interiors_push(LineString::from(vec![
            (1.0, 1.0),
            (1.0, 2.0),
            (2.0, 2.0),
            (2.0, 1.0),
            (1.0, 1.0),
        ]));
        assert_eq!(locate(&poly, 1.5, 1.5), Where::Outside);
        assert_eq!(locate(&poly, 0.5, 1.5), Where::Inside);
        assert_eq!(locate(&poly, 1.0, 1.5), Where::Boundary);
    }

    #[test]
    fn segment_distance() {
        assert_eq!(point_segment_distance(3.0, -1.0, 3.0, 1.0), 3.0);
        assert_eq!(point_segment_distance(3.0, 4.0, 3.0, 4.0), 5.0);
    }

    #[test]
    fn cell_index_on_a_tiny_map_follows_the_boundary_rule() {
        // Four squares meeting at (1.2, 31.2) + a holed square to the right; codes 001..005.
        let base = (121.0, 31.0);
        // A power of two, so that every sum below is exact.
        let s = 1.0 / 128.0;
        let mut holed = square(base.0 + 2.0 * s, base.1, 2.0 * s);
        holed.interiors_push(LineString::from(vec![
            (base.0 + 2.5 * s, base.1 + 0.5 * s),
            (base.0 + 2.5 * s, base.1 + 1.5 * s),
            (base.0 + 3.5 * s, base.1 + 1.5 * s),
            (base.0 + 3.5 * s, base.1 + 0.5 * s),
            (base.0 + 2.5 * s, base.1 + 0.5 * s),
        ]));
        let d = district(vec![
            square(base.0 + s, base.1 + s, s),
            square(base.0, base.1 + s, s),
            square(base.0, base.1, s),
            square(base.0 + s, base.1, s),
            holed,
        ]);
        for cells_per_grid in [1.0, 7.0, 64.0, 1000.0] {
            let idx = GeoIndex::build_with(
                &d,
                IndexParams {
                    cells_per_grid,
                    max_cells: 1 << 20,
                },
            )
            .unwrap();
            let at = |fx: f64, fy: f64| idx.assign(base.0 + fx * s, base.1 + fy * s);
            let inside = |i, on_boundary| Assignment::Inside {
                grid: code(i),
                on_boundary,
            };
            assert_eq!(at(1.5, 1.5), inside(1, false));
            assert_eq!(at(0.5, 1.5), inside(2, false));
            assert_eq!(at(0.5, 0.5), inside(3, false));
            assert_eq!(at(1.5, 0.5), inside(4, false));
            assert_eq!(at(2.1, 0.1), inside(5, false));
            // The shared corner of four grids: the smallest code.
            assert_eq!(at(1.0, 1.0), inside(1, true));
            // Shared edges.
            assert_eq!(at(1.0, 0.5), inside(3, true));
            assert_eq!(at(0.5, 1.0), inside(2, true));
            assert_eq!(at(2.0, 0.5), inside(4, true));
            // Outer edge and the hole's rim belong to the grid; the hole does not.
            assert_eq!(at(0.0, 0.5), inside(3, true));
            assert_eq!(
                idx.assign(base.0 + 2.5 * s, base.1 + 1.0 * s),
                inside(5, true)
            );
            match at(3.0, 1.0) {
                Assignment::Outside {
                    nearest,
                    distance_m,
                } => {
                    assert_eq!(nearest, Some(code(5)));
                    // Half the hole's width, east–west (scaled by cos(latitude)).
                    let kx = (base.1 + s).to_radians().cos();
                    let want = 0.5 * s * kx * METRES_PER_DEGREE;
                    assert!((distance_m - want).abs() < 1e-6, "{distance_m} vs {want}");
                }
                other => panic!("hole placed {other:?}"),
            }
            match at(-1.0, 0.5) {
                Assignment::Outside { nearest, .. } => assert_eq!(nearest, Some(code(3))),
                other => panic!("outside placed {other:?}"),
            }
            assert_eq!(idx.locate(f64::NAN, 31.0), Located::Outside);
            for i in 0..=40 {
                for j in 0..=20 {
                    let (x, y) = (base.0 + i as f64 * s / 10.0, base.1 + j as f64 * s / 10.0);
                    assert_eq!(idx.locate(x, y), idx.locate_exact(x, y), "at {x},{y}");
                }
            }
        }
    }

    #[test]
    fn shipped_map_interiors_and_shared_vertices() {
        use geo::{BoundingRect, Contains};
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/district/grids.geojson");
        let district = gridclue_district::load_geojson(&path).unwrap();
        let index = GeoIndex::build(&district).unwrap();
        assert_eq!(index.stats().slow_cells, 0);
        let mut owners: HashMap<(u64, u64), Vec<String>> = Default::default();
        for g in district.grids.iter().step_by(7) {
            let r = g.polygon.bounding_rect().unwrap();
            let p = (1..20)
                .flat_map(|i| (1..20).map(move |j| (i, j)))
                .map(|(i, j)| {
                    geo_types::Point::new(
                        r.min().x + r.width() * f64::from(j) / 20.0,
                        r.min().y + r.height() * f64::from(i) / 20.0,
                    )
                })
                .find(|p| g.polygon.contains(p))
                .unwrap();
            assert_eq!(
                index.assign(p.x(), p.y()),
                Assignment::Inside {
                    grid: g.grid_code,
                    on_boundary: false
                }
            );
        }
        for g in &district.grids {
            for c in &g.polygon.exterior().0 {
                let e = owners.entry((c.x.to_bits(), c.y.to_bits())).or_default();
                if !e.contains(&g.grid_code.as_str().to_owned()) {
                    e.push(g.grid_code.as_str().to_owned());
                }
            }
        }
        let mut checked = 0;
        for ((x, y), codes) in owners.iter().filter(|(_, c)| c.len() >= 3).take(200) {
            let expected = codes.iter().min().unwrap();
            match index.assign(f64::from_bits(*x), f64::from_bits(*y)) {
                Assignment::Inside { grid, on_boundary } => {
                    assert!(on_boundary);
                    assert_eq!(grid.as_str(), expected);
                }
                other => panic!("shared vertex placed {other:?}"),
            }
            checked += 1;
        }
        assert!(checked > 50, "only {checked} shared vertices");
    }
}
