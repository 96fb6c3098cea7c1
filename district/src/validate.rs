//! Partition checks: codes and hierarchy, polygon validity, overlaps and gaps.
//!
//! How overlaps and gaps are found, exactly and in near-linear time:
//!
//! * Every ring is oriented (exteriors counter-clockwise, holes clockwise) and cut into directed
//!   edges between vertices identified by their exact coordinate bits. An edge used by one piece
//!   (grid or excluded area) and, reversed, by another is an interior edge shared by two
//!   neighbours; such pairs cancel. Cancelling a pair changes nobody's winding number, so the
//!   *residual* edges describe the coverage count w(p) (how many pieces cover point p) exactly.
//!   In a clean partition the residual is just the district outline.
//! * The residual is resolved into polygons with the fill rule "w > 0" (`i_overlay`): that is
//!   the union of all pieces. Its holes are **gaps** (uncovered areas enclosed by the district;
//!   declared lakes are pieces themselves, so they are not holes). The sum of the pieces' areas
//!   minus the union's area is the total **overlap** area ∫ max(w − 1, 0).
//! * Only when that total exceeds the tolerance are overlaps located: pieces touching a residual
//!   edge are intersected (`i_overlay`) with every piece whose bounding box they overlap; if that
//!   does not explain the total, every bounding-box neighbour pair is intersected.
//!
//! Tolerance: a gap or a located overlap counts when its area exceeds
//! [`ValidateOptions::max_piece_m2`]; the total overlap counts when it exceeds the larger of that
//! and [`ValidateOptions::max_total_relative`] × the total area. Areas are in m² on a local
//! equirectangular projection. Maps whose neighbours do not share identical vertices (e.g. a
//! vertex of one lying in the middle of the other's edge) are still checked correctly, only
//! slower, since fewer edges cancel.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::path::Path;

use geo_types::{Coord, Polygon};
use i_overlay::core::fill_rule::FillRule;
use i_overlay::core::overlay_rule::OverlayRule;
use i_overlay::float::simplify::SimplifyShape;
use i_overlay::float::single::SingleFloatOverlay;
use rstar::primitives::{GeomWithData, Rectangle};
use rstar::{RTree, AABB};

use crate::geojson::{assemble, parse_document, DistrictError, FeatureError, NameConflict};
use crate::geom::{
    orient, point_in_ring, ring_area2, segments_touch, vertex_centroid, LocalProjection,
};
use crate::model::{CommunityCode, District, GridCode, StreetCode};

/// Tolerances of [`validate`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ValidateOptions {
    /// Largest gap or located overlap (m²) that is tolerated.
    pub max_piece_m2: f64,
    /// Largest total overlap relative to the total area of all pieces.
    pub max_total_relative: f64,
}

impl Default for ValidateOptions {
    fn default() -> Self {
        ValidateOptions {
            max_piece_m2: 0.5,
            max_total_relative: 1e-9,
        }
    }
}

/// Progress of a long validation, for a progress line.
#[derive(Debug, Clone, Copy)]
pub struct Progress<'a> {
    /// Current phase.
    pub phase: &'a str,
    /// Items done in this phase.
    pub done: usize,
    /// Items in this phase.
    pub total: usize,
}

/// The feature a problem is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum FeatureRef {
    /// A grid.
    Grid(GridCode),
    /// An excluded area, by index in [`District::excluded`].
    Excluded {
        /// Index in `District::excluded`.
        index: usize,
        /// Its name.
        name: String,
    },
}

impl fmt::Display for FeatureRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FeatureRef::Grid(c) => write!(f, "grid {c}"),
            FeatureRef::Excluded { index, name } => write!(f, "excluded #{index} {name}"),
        }
    }
}

/// What is wrong with a ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingDefect {
    /// Fewer than 4 points.
    TooFewPoints(usize),
    /// First and last points differ.
    NotClosed,
    /// A NaN or infinite coordinate.
    NonFinite,
    /// Zero area.
    ZeroArea,
}

impl fmt::Display for RingDefect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RingDefect::TooFewPoints(n) => write!(f, "has {n} points (needs ≥ 4)"),
            RingDefect::NotClosed => f.write_str("is not closed"),
            RingDefect::NonFinite => f.write_str("has a non-finite coordinate"),
            RingDefect::ZeroArea => f.write_str("has zero area"),
        }
    }
}

/// One finding of the validator. [`ValidationReport::problems`] holds the ones that make a map
/// invalid, [`ValidationReport::warnings`] the ones worth a look.
#[derive(Debug, Clone, PartialEq)]
pub enum Problem {
    /// A feature of the file could not be read at all.
    BadFeature {
        /// 0-based feature index.
        index: usize,
        /// Its grid code or name, when known.
        label: String,
        /// What is wrong.
        error: FeatureError,
    },
    /// Features disagree about a community's or street's name.
    NameConflict {
        /// 0-based index of the later feature.
        index: usize,
        /// The disagreement.
        conflict: NameConflict,
    },
    /// A grid code is used more than once.
    DuplicateGridCode {
        /// The code.
        code: GridCode,
        /// How often.
        count: usize,
    },
    /// A community code is listed more than once.
    DuplicateCommunity(CommunityCode),
    /// A street code is listed more than once.
    DuplicateStreet(StreetCode),
    /// A grid's community or street code is not the prefix of its grid code.
    PrefixMismatch {
        /// The grid.
        grid: GridCode,
        /// `"community_code"` or `"street_code"`.
        field: &'static str,
        /// The value it has.
        value: String,
    },
    /// A community's street code is not the prefix of its code.
    CommunityStreetMismatch {
        /// The community.
        community: CommunityCode,
        /// The street code it names.
        street: StreetCode,
    },
    /// A grid references a community that is not listed.
    UnknownCommunity {
        /// The grid.
        grid: GridCode,
        /// The missing community.
        community: CommunityCode,
    },
    /// A grid or community references a street that is not listed.
    UnknownStreet {
        /// The referencing code (grid or community).
        from: String,
        /// The missing street.
        street: StreetCode,
    },
    /// A community or street has an empty name.
    EmptyName {
        /// `"community"` or `"street"`.
        what: &'static str,
        /// Its code.
        code: String,
    },
    /// A grid's administrative division differs from the district's.
    MixedAdminDivision {
        /// The district's (most common) division.
        expected: String,
        /// The grid that differs.
        grid: GridCode,
    },
    /// A ring is structurally broken; the feature is left out of the area checks.
    InvalidRing {
        /// The feature.
        feature: FeatureRef,
        /// 0 = exterior, 1.. = holes.
        ring: usize,
        /// What is wrong.
        defect: RingDefect,
    },
    /// A polygon's rings cross or touch themselves or each other.
    SelfIntersection {
        /// The feature.
        feature: FeatureRef,
        /// A point near the first crossing.
        at: Coord<f64>,
        /// Crossing segment pairs found.
        count: usize,
    },
    /// A hole lies outside its polygon's exterior.
    HoleOutsideShell {
        /// The feature.
        feature: FeatureRef,
        /// The hole's ring index.
        ring: usize,
    },
    /// Two pieces overlap by more than the tolerance.
    Overlap {
        /// One piece.
        a: FeatureRef,
        /// The other piece.
        b: FeatureRef,
        /// Overlap area.
        area_m2: f64,
        /// A point in the overlap.
        at: Coord<f64>,
    },
    /// Total overlap above tolerance that could not be attributed to a pair.
    UnlocatedOverlap {
        /// Area not attributed.
        area_m2: f64,
    },
    /// An uncovered area enclosed by the district.
    Gap {
        /// Its area.
        area_m2: f64,
        /// A point of the gap's outline.
        at: Coord<f64>,
        /// Pieces whose bounding box touches the gap (up to 6).
        near: Vec<FeatureRef>,
    },
    /// (warning) A community without grids.
    EmptyCommunity(CommunityCode),
    /// (warning) A street without communities.
    EmptyStreet(StreetCode),
    /// (warning) A name does not end the way its kind suggests.
    NameSuffix {
        /// The code.
        code: String,
        /// The name.
        name: String,
        /// What it should end with.
        expected: &'static str,
    },
    /// (warning) A community's grids form several separate parts (by shared edges).
    CommunityNotContiguous {
        /// The community.
        code: CommunityCode,
        /// Number of parts.
        parts: usize,
    },
    /// (warning) A street's grids form several separate parts (by shared edges).
    StreetNotContiguous {
        /// The street.
        code: StreetCode,
        /// Number of parts.
        parts: usize,
    },
    /// (warning) The district is made of several separate parts.
    DisconnectedDistrict {
        /// Number of parts.
        parts: usize,
    },
    /// (warning) Rings not in RFC 7946 orientation (they are checked after reorienting).
    RingOrientation {
        /// Number of rings.
        rings: usize,
    },
    /// (warning) Rings with a vertex repeated consecutively.
    RepeatedVertices {
        /// Number of rings.
        rings: usize,
    },
    /// (warning) Neighbours do not share identical vertices; contiguity was not checked.
    TopologyNotShared {
        /// Edges without an exact reverse twin (outline included).
        unshared_edges: usize,
        /// All edges.
        edges: usize,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Problem::*;
        match self {
            BadFeature {
                index,
                label,
                error,
            } => write!(f, "feature #{index} ({label}): {error}"),
            NameConflict { index, conflict } => write!(f, "feature #{index}: {conflict}"),
            DuplicateGridCode { code, count } => {
                write!(f, "grid code {code} is used by {count} grids")
            }
            DuplicateCommunity(c) => write!(f, "community {c} is listed more than once"),
            DuplicateStreet(c) => write!(f, "street {c} is listed more than once"),
            PrefixMismatch { grid, field, value } => {
                write!(
                    f,
                    "grid {grid}: {field} {value} is not the prefix of its code"
                )
            }
            CommunityStreetMismatch { community, street } => write!(
                f,
                "community {community}: street_code {street} is not the prefix of its code"
            ),
            UnknownCommunity { grid, community } => {
                write!(f, "grid {grid}: community {community} is not listed")
            }
            UnknownStreet { from, street } => write!(f, "{from}: street {street} is not listed"),
            EmptyName { what, code } => write!(f, "{what} {code} has an empty name"),
            MixedAdminDivision { expected, grid } => write!(
                f,
                "grid {grid}: administrative division {} differs from the district's {expected}",
                grid.admin_division()
            ),
            InvalidRing {
                feature,
                ring,
                defect,
            } => write!(f, "{feature}: ring {ring} {defect}"),
            SelfIntersection { feature, at, count } => write!(
                f,
                "{feature}: rings cross or touch ({count} segment pairs), first near {:.7},{:.7}",
                at.x, at.y
            ),
            HoleOutsideShell { feature, ring } => {
                write!(f, "{feature}: hole {ring} is outside the exterior ring")
            }
            Overlap { a, b, area_m2, at } => write!(
                f,
                "{a} and {b} overlap by {area_m2:.3} m² near {:.7},{:.7}",
                at.x, at.y
            ),
            UnlocatedOverlap { area_m2 } => write!(
                f,
                "{area_m2:.3} m² of overlap could not be attributed to a pair of features"
            ),
            Gap { area_m2, at, near } => {
                write!(f, "gap of {area_m2:.3} m² at {:.7},{:.7}", at.x, at.y)?;
                if !near.is_empty() {
                    let n: Vec<String> = near.iter().map(ToString::to_string).collect();
                    write!(f, " (near {})", n.join(", "))?;
                }
                Ok(())
            }
            EmptyCommunity(c) => write!(f, "community {c} has no grids"),
            EmptyStreet(c) => write!(f, "street {c} has no communities"),
            NameSuffix {
                code,
                name,
                expected,
            } => write!(f, "{code} {name:?}: name should end with {expected}"),
            CommunityNotContiguous { code, parts } => {
                write!(f, "community {code} consists of {parts} separate parts")
            }
            StreetNotContiguous { code, parts } => {
                write!(f, "street {code} consists of {parts} separate parts")
            }
            DisconnectedDistrict { parts } => {
                write!(f, "the district consists of {parts} separate parts")
            }
            RingOrientation { rings } => write!(
                f,
                "{rings} rings are not in RFC 7946 orientation (exterior CCW, holes CW)"
            ),
            RepeatedVertices { rings } => {
                write!(f, "{rings} rings repeat a vertex consecutively")
            }
            TopologyNotShared {
                unshared_edges,
                edges,
            } => write!(
                f,
                "{unshared_edges} of {edges} edges have no identical reverse twin in a \
                 neighbour; contiguity not checked"
            ),
        }
    }
}

/// Result of a validation: counts, areas and every problem found.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ValidationReport {
    /// The map's version.
    pub map_version: String,
    /// Grids checked.
    pub grids: usize,
    /// Communities listed.
    pub communities: usize,
    /// Streets listed.
    pub streets: usize,
    /// Excluded areas.
    pub excluded: usize,
    /// Ring vertices (closing points not counted).
    pub vertices: usize,
    /// Sum of the grids' areas (km²).
    pub grid_area_km2: f64,
    /// Sum of the excluded areas' areas (km²).
    pub excluded_area_km2: f64,
    /// Area of the union of all pieces (km²).
    pub union_area_km2: f64,
    /// Total overlap: sum of piece areas minus union area (m²).
    pub overlap_area_m2: f64,
    /// Total area of gaps (holes in the union), tolerated ones included (m²).
    pub gap_area_m2: f64,
    /// Edges shared exactly (as a reversed twin) by two neighbours.
    pub shared_edges: usize,
    /// Edges without a twin (the outline, or defects).
    pub unshared_edges: usize,
    /// Separate parts of the district.
    pub outline_parts: usize,
    /// Problems that make the map invalid.
    pub problems: Vec<Problem>,
    /// Findings worth a look that do not make the map invalid.
    pub warnings: Vec<Problem>,
}

impl ValidationReport {
    /// True when there are no problems (warnings allowed).
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

impl fmt::Display for ValidationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "map_version     {}", self.map_version)?;
        writeln!(
            f,
            "features        {} grids, {} communities, {} streets, {} excluded areas, {} vertices",
            self.grids, self.communities, self.streets, self.excluded, self.vertices
        )?;
        writeln!(
            f,
            "area            grids {:.4} km² + excluded {:.4} km², union {:.4} km²",
            self.grid_area_km2, self.excluded_area_km2, self.union_area_km2
        )?;
        writeln!(
            f,
            "partition       overlap {:.4} m², gaps {:.4} m², {} parts; {} shared edges, {} unshared",
            self.overlap_area_m2,
            self.gap_area_m2,
            self.outline_parts,
            self.shared_edges,
            self.unshared_edges
        )?;
        for p in &self.problems {
            writeln!(f, "PROBLEM  {p}")?;
        }
        for w in &self.warnings {
            writeln!(f, "warning  {w}")?;
        }
        if self.is_ok() {
            write!(f, "OK: no problems, {} warnings", self.warnings.len())
        } else {
            write!(
                f,
                "INVALID: {} problems, {} warnings",
                self.problems.len(),
                self.warnings.len()
            )
        }
    }
}

/// A hasher for exact coordinate bits (fast; keys are not attacker-controlled here).
#[derive(Default)]
struct BitsHasher(u64);

impl Hasher for BitsHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = (self.0.rotate_left(26) ^ x).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    fn finish(&self) -> u64 {
        gridclue_core::rng::mix(self.0)
    }
}

type BitsMap<K, V> = HashMap<K, V, BuildHasherDefault<BitsHasher>>;

fn bits(c: Coord<f64>) -> (u64, u64) {
    ((c.x + 0.0).to_bits(), (c.y + 0.0).to_bits())
}

/// A grid or excluded area prepared for the geometric checks.
struct Piece {
    /// Rings in lon/lat, oriented (exterior CCW, holes CW), closing point included.
    rings: Vec<Vec<Coord<f64>>>,
    /// The same rings projected to metres, closing point dropped.
    shape: Vec<Vec<[f64; 2]>>,
    area_m2: f64,
    bbox: [f64; 4],
}

fn feature_ref(d: &District, k: usize) -> FeatureRef {
    if k < d.grids.len() {
        FeatureRef::Grid(d.grids[k].grid_code)
    } else {
        let index = k - d.grids.len();
        FeatureRef::Excluded {
            index,
            name: d.excluded[index].name.clone(),
        }
    }
}

fn shape_area(shape: &[Vec<[f64; 2]>]) -> f64 {
    let mut a = 0.0;
    for (i, ring) in shape.iter().enumerate() {
        let mut closed = ring.clone();
        if let Some(&f) = ring.first() {
            closed.push(f);
        }
        let r = ring_area2(&closed).abs() / 2.0;
        a += if i == 0 { r } else { -r };
    }
    a
}

struct Counters {
    misoriented: usize,
    repeated: usize,
}

/// Checks one polygon's rings; returns the prepared piece, or None when it is too broken for
/// the area checks.
fn prepare_piece(
    poly: &Polygon<f64>,
    proj: &LocalProjection,
    feature: impl Fn() -> FeatureRef,
    problems: &mut Vec<Problem>,
    counters: &mut Counters,
) -> Option<Piece> {
    let mut rings = Vec::with_capacity(1 + poly.interiors().len());
    let mut ok = true;
    for (ri, ring) in std::iter::once(poly.exterior())
        .chain(poly.interiors())
        .enumerate()
    {
        let pts = &ring.0;
        let mut defect = None;
        if pts.len() < 4 {
            defect = Some(RingDefect::TooFewPoints(pts.len()));
        } else if pts.first() != pts.last() {
            defect = Some(RingDefect::NotClosed);
        } else if pts.iter().any(|c| !c.x.is_finite() || !c.y.is_finite()) {
            defect = Some(RingDefect::NonFinite);
        }
        let mut cleaned: Vec<Coord<f64>> = Vec::with_capacity(pts.len());
        if defect.is_none() {
            let mut repeated = false;
            for &c in pts {
                if cleaned.last() == Some(&c) {
                    repeated = true;
                } else {
                    cleaned.push(c);
                }
            }
            if repeated {
                counters.repeated += 1;
            }
            let projected: Vec<[f64; 2]> = cleaned.iter().map(|c| proj.project(*c)).collect();
            let a2 = ring_area2(&projected);
            if cleaned.len() < 4 || a2 == 0.0 {
                defect = Some(RingDefect::ZeroArea);
            } else if (ri == 0) != (a2 > 0.0) {
                counters.misoriented += 1;
                cleaned.reverse();
            }
        }
        if let Some(defect) = defect {
            problems.push(Problem::InvalidRing {
                feature: feature(),
                ring: ri,
                defect,
            });
            ok = false;
            continue;
        }
        rings.push(cleaned);
    }
    if !ok {
        return None;
    }
    let shape: Vec<Vec<[f64; 2]>> = rings
        .iter()
        .map(|r| r[..r.len() - 1].iter().map(|c| proj.project(*c)).collect())
        .collect();
    let bbox = bounding_box(&shape[0]);
    self_intersections(&rings, &feature, problems);
    let area_m2 = shape_area(&shape);
    Some(Piece {
        rings,
        shape,
        area_m2,
        bbox,
    })
}

/// Sweep over one polygon's segments looking for crossings or touches between segments that
/// are not neighbours in a ring (and for spikes between neighbours).
fn self_intersections(
    rings: &[Vec<Coord<f64>>],
    feature: &impl Fn() -> FeatureRef,
    problems: &mut Vec<Problem>,
) {
    struct Seg {
        a: Coord<f64>,
        b: Coord<f64>,
        ring: usize,
        k: usize,
        min_x: f64,
        max_x: f64,
        min_y: f64,
        max_y: f64,
    }
    let mut segs = Vec::new();
    for (ri, r) in rings.iter().enumerate() {
        for (k, w) in r.windows(2).enumerate() {
            let (a, b) = (w[0], w[1]);
            segs.push(Seg {
                a,
                b,
                ring: ri,
                k,
                min_x: a.x.min(b.x),
                max_x: a.x.max(b.x),
                min_y: a.y.min(b.y),
                max_y: a.y.max(b.y),
            });
        }
    }
    segs.sort_by(|p, q| p.min_x.total_cmp(&q.min_x));
    let ring_len: Vec<usize> = rings.iter().map(|r| r.len() - 1).collect();
    let mut active: Vec<usize> = Vec::new();
    let mut count = 0usize;
    let mut first_at = None;
    for (si, s) in segs.iter().enumerate() {
        active.retain(|&o| segs[o].max_x >= s.min_x);
        for &o in &active {
            let t = &segs[o];
            if t.max_y < s.min_y || t.min_y > s.max_y {
                continue;
            }
            let bad = if t.ring == s.ring {
                let n = ring_len[s.ring];
                let (x, y) = (s.k.min(t.k), s.k.max(t.k));
                if y == x + 1 || (x == 0 && y == n - 1) {
                    // Neighbours share one vertex; only a spike (folding back) is wrong.
                    let (p, shared, q) = if y == x + 1 {
                        let (first, second) = if s.k == x { (s, t) } else { (t, s) };
                        (first.a, first.b, second.b)
                    } else {
                        let (first, last) = if s.k == 0 { (s, t) } else { (t, s) };
                        (last.a, first.a, first.b)
                    };
                    orient(p, shared, q) == 0.0
                        && ((p.x - shared.x) * (q.x - shared.x)
                            + (p.y - shared.y) * (q.y - shared.y))
                            > 0.0
                } else {
                    segments_touch(s.a, s.b, t.a, t.b)
                }
            } else {
                segments_touch(s.a, s.b, t.a, t.b)
            };
            if bad {
                count += 1;
                first_at.get_or_insert(s.a);
            }
        }
        active.push(si);
    }
    if let Some(at) = first_at {
        problems.push(Problem::SelfIntersection {
            feature: feature(),
            at,
            count,
        });
        return;
    }
    for (ri, hole) in rings.iter().enumerate().skip(1) {
        if !point_in_ring(hole[0], &rings[0]) {
            problems.push(Problem::HoleOutsideShell {
                feature: feature(),
                ring: ri,
            });
        }
    }
}

/// Union-find.
struct Dsu(Vec<u32>);

impl Dsu {
    fn new(n: usize) -> Self {
        Dsu((0..n as u32).collect())
    }
    fn find(&mut self, mut x: u32) -> u32 {
        while self.0[x as usize] != x {
            let p = self.0[self.0[x as usize] as usize];
            self.0[x as usize] = p;
            x = p;
        }
        x
    }
    fn union(&mut self, a: u32, b: u32) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            self.0[ra.max(rb) as usize] = ra.min(rb);
        }
    }
}

fn check_codes(d: &District, problems: &mut Vec<Problem>, warnings: &mut Vec<Problem>) {
    let mut grid_count: BTreeMap<&GridCode, usize> = BTreeMap::new();
    for g in &d.grids {
        *grid_count.entry(&g.grid_code).or_default() += 1;
    }
    for (code, count) in &grid_count {
        if *count > 1 {
            problems.push(Problem::DuplicateGridCode {
                code: *(*code),
                count: *count,
            });
        }
    }
    let mut streets: BTreeSet<&StreetCode> = BTreeSet::new();
    for s in &d.streets {
        if !streets.insert(&s.code) {
            problems.push(Problem::DuplicateStreet(s.code));
        }
        if s.name.trim().is_empty() {
            problems.push(Problem::EmptyName {
                what: "street",
                code: s.code.to_string(),
            });
        } else {
            let expected = s.kind().suffix();
            if !s.name.ends_with(expected) {
                warnings.push(Problem::NameSuffix {
                    code: s.code.to_string(),
                    name: s.name.clone(),
                    expected,
                });
            }
        }
    }
    let mut communities: BTreeSet<&CommunityCode> = BTreeSet::new();
    let mut street_has_comm: BTreeSet<&StreetCode> = BTreeSet::new();
    for c in &d.communities {
        if !communities.insert(&c.code) {
            problems.push(Problem::DuplicateCommunity(c.code));
        }
        if c.street_code != c.code.street_code() {
            problems.push(Problem::CommunityStreetMismatch {
                community: c.code,
                street: c.street_code,
            });
        }
        if !streets.contains(&c.street_code) {
            problems.push(Problem::UnknownStreet {
                from: format!("community {}", c.code),
                street: c.street_code,
            });
        }
        street_has_comm.insert(&c.street_code);
        if c.name.trim().is_empty() {
            problems.push(Problem::EmptyName {
                what: "community",
                code: c.code.to_string(),
            });
        } else if !(c.name.ends_with("社区") || c.name.ends_with('村')) {
            warnings.push(Problem::NameSuffix {
                code: c.code.to_string(),
                name: c.name.clone(),
                expected: "社区 or 村",
            });
        }
    }
    let mut admin: BTreeMap<&str, usize> = BTreeMap::new();
    for g in &d.grids {
        *admin.entry(g.grid_code.admin_division()).or_default() += 1;
    }
    let main_admin = admin
        .iter()
        .max_by_key(|(a, n)| (**n, std::cmp::Reverse(**a)))
        .map(|(a, _)| (*a).to_owned());
    let mut comm_has_grid: BTreeSet<&CommunityCode> = BTreeSet::new();
    for g in &d.grids {
        if g.community_code != g.grid_code.community_code() {
            problems.push(Problem::PrefixMismatch {
                grid: g.grid_code,
                field: "community_code",
                value: g.community_code.to_string(),
            });
        }
        if g.street_code != g.grid_code.street_code() {
            problems.push(Problem::PrefixMismatch {
                grid: g.grid_code,
                field: "street_code",
                value: g.street_code.to_string(),
            });
        }
        if !communities.contains(&g.community_code) {
            problems.push(Problem::UnknownCommunity {
                grid: g.grid_code,
                community: g.community_code,
            });
        }
        if !streets.contains(&g.street_code) {
            problems.push(Problem::UnknownStreet {
                from: format!("grid {}", g.grid_code),
                street: g.street_code,
            });
        }
        comm_has_grid.insert(&g.community_code);
        if let Some(main) = &main_admin {
            if g.grid_code.admin_division() != main {
                problems.push(Problem::MixedAdminDivision {
                    expected: main.clone(),
                    grid: g.grid_code,
                });
            }
        }
    }
    for c in &d.communities {
        if !comm_has_grid.contains(&c.code) {
            warnings.push(Problem::EmptyCommunity(c.code));
        }
    }
    for s in &d.streets {
        if !street_has_comm.contains(&s.code) {
            warnings.push(Problem::EmptyStreet(s.code));
        }
    }
}

fn shapes_area(shapes: &[Vec<Vec<[f64; 2]>>]) -> f64 {
    shapes.iter().map(|s| shape_area(s)).sum()
}

/// Validates a district: codes and hierarchy, polygon validity, overlaps and gaps.
pub fn validate(district: &District, opts: &ValidateOptions) -> ValidationReport {
    validate_with_progress(district, opts, &mut |_| {})
}

/// [`validate`] reporting progress through a callback (for a progress line on big maps).
///
/// The phases are those of the module documentation: codes, rings, edges (cancel reversed
/// twins), union of the residual, gaps, overlaps, contiguity.
pub fn validate_with_progress(
    d: &District,
    opts: &ValidateOptions,
    progress: &mut dyn FnMut(Progress<'_>),
) -> ValidationReport {
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    check_codes(d, &mut problems, &mut warnings);

    let polys = piece_polygons(d);
    let proj = LocalProjection::around(polys.iter().flat_map(|p| p.exterior().0.iter()));
    let pieces = prepare_pieces(d, &polys, &proj, &mut problems, &mut warnings, progress);
    let vertices = count_vertices(&polys);

    progress(one_step_phase("edges", 0));
    let mut edges = cancel_shared_edges(&pieces, &proj, vertices);
    let unshared_edges = edges.residual.len();

    progress(one_step_phase("union", 0));
    let union = union_of_residual(&mut edges.residual, &edges.coords);
    let union_area = shapes_area(&union);
    let piece_area = total_area(&pieces);
    let grid_area = total_area(&pieces[..d.grids.len()]);
    let overlap_total = piece_area - union_area;

    let geometry = Geometry {
        d,
        opts,
        proj: &proj,
        pieces: &pieces,
        index: PieceIndex::new(&pieces),
    };
    let gap_area = report_gaps(&geometry, &union, &mut problems);
    if union.len() > 1 {
        warnings.push(Problem::DisconnectedDistrict { parts: union.len() });
    }
    let total_tol = opts.max_piece_m2.max(opts.max_total_relative * piece_area);
    if overlap_total > total_tol {
        locate_overlaps(
            &geometry,
            &edges.suspect,
            overlap_total,
            total_tol,
            &mut problems,
            progress,
        );
    }

    if unshared_edges * 2 > edges.total {
        warnings.push(Problem::TopologyNotShared {
            unshared_edges,
            edges: edges.total,
        });
    } else {
        check_contiguity(d, &pieces, &edges.adjacency, &problems, &mut warnings);
    }
    progress(one_step_phase("done", 1));

    ValidationReport {
        map_version: d.map_version.clone(),
        grids: d.grids.len(),
        communities: d.communities.len(),
        streets: d.streets.len(),
        excluded: d.excluded.len(),
        vertices,
        grid_area_km2: grid_area / 1e6,
        excluded_area_km2: (piece_area - grid_area) / 1e6,
        union_area_km2: union_area / 1e6,
        overlap_area_m2: overlap_total.max(0.0),
        gap_area_m2: gap_area,
        shared_edges: edges.shared,
        unshared_edges,
        outline_parts: union.len(),
        problems,
        warnings,
    }
}

/// Progress of a phase that is reported as one step.
fn one_step_phase(phase: &str, done: usize) -> Progress<'_> {
    Progress {
        phase,
        done,
        total: 1,
    }
}

/// Sum of the areas of the pieces that could be prepared (m²).
fn total_area(pieces: &[Option<Piece>]) -> f64 {
    pieces.iter().flatten().map(|p| p.area_m2).sum()
}

/// The pieces' polygons: grids first, then excluded areas (piece k < grids is grid k).
fn piece_polygons(d: &District) -> Vec<&Polygon<f64>> {
    d.grids
        .iter()
        .map(|g| &g.polygon)
        .chain(d.excluded.iter().map(|e| &e.polygon))
        .collect()
}

/// Checks every piece's rings ([`prepare_piece`]); misoriented rings and repeated vertices are
/// counted into one warning each.
fn prepare_pieces(
    d: &District,
    polys: &[&Polygon<f64>],
    proj: &LocalProjection,
    problems: &mut Vec<Problem>,
    warnings: &mut Vec<Problem>,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Vec<Option<Piece>> {
    let npieces = polys.len();
    let step = progress_step(npieces);
    let mut counters = Counters {
        misoriented: 0,
        repeated: 0,
    };
    let mut pieces: Vec<Option<Piece>> = Vec::with_capacity(npieces);
    for (k, p) in polys.iter().enumerate() {
        if k % step == 0 {
            progress(Progress {
                phase: "polygons",
                done: k,
                total: npieces,
            });
        }
        pieces.push(prepare_piece(
            p,
            proj,
            || feature_ref(d, k),
            problems,
            &mut counters,
        ));
    }
    progress(Progress {
        phase: "polygons",
        done: npieces,
        total: npieces,
    });
    if counters.misoriented > 0 {
        warnings.push(Problem::RingOrientation {
            rings: counters.misoriented,
        });
    }
    if counters.repeated > 0 {
        warnings.push(Problem::RepeatedVertices {
            rings: counters.repeated,
        });
    }
    pieces
}

/// Progress is reported about 20 times per pass over the pieces.
fn progress_step(npieces: usize) -> usize {
    (npieces / 20).max(1)
}

/// Ring vertices, closing points not counted.
fn count_vertices(polys: &[&Polygon<f64>]) -> usize {
    polys
        .iter()
        .map(|p| {
            std::iter::once(p.exterior())
                .chain(p.interiors())
                .map(|r| r.0.len().saturating_sub(1))
                .sum::<usize>()
        })
        .sum()
}

/// The pieces' edges after cancelling reversed twins.
struct Edges {
    /// Interned vertices, projected to metres; edges refer to them by index.
    coords: Vec<[f64; 2]>,
    /// Edges without a reversed twin, as (from, to): the district outline, or defects.
    residual: Vec<(u32, u32)>,
    /// Pairs of pieces that share an edge exactly.
    adjacency: Vec<(u32, u32)>,
    /// Pieces with an edge in the residual.
    suspect: Vec<bool>,
    /// Edges shared exactly by two neighbours.
    shared: usize,
    /// All edges.
    total: usize,
}

/// Interns vertices by exact bits, then cancels every edge used once in each direction.
fn cancel_shared_edges(pieces: &[Option<Piece>], proj: &LocalProjection, vertices: usize) -> Edges {
    let (coords, mut directed) = intern_directed_edges(pieces, proj, vertices);
    directed.sort_unstable();
    let mut edges = Edges {
        coords,
        residual: Vec::new(),
        adjacency: Vec::new(),
        suspect: vec![false; pieces.len()],
        shared: 0,
        total: directed.len(),
    };
    for group in directed.chunk_by(|a, b| a.0 == b.0) {
        let key = group[0].0;
        let fwd = group.iter().filter(|e| e.2).count();
        let bwd = group.len() - fwd;
        let (lo, hi) = ((key >> 32) as u32, key as u32);
        if fwd == 1 && bwd == 1 {
            edges.shared += 1;
            edges.adjacency.push((group[0].1, group[1].1));
        } else {
            for e in group {
                edges.suspect[e.1 as usize] = true;
            }
            for _ in bwd..fwd {
                edges.residual.push((lo, hi));
            }
            for _ in fwd..bwd {
                edges.residual.push((hi, lo));
            }
        }
    }
    edges
}

/// A ring edge: (lower vertex id << 32 | higher vertex id, piece, whether it runs from the
/// lower to the higher id).
type DirectedEdge = (u64, u32, bool);

/// Interned vertex coordinates (metres) and every ring edge; degenerate edges are skipped.
fn intern_directed_edges(
    pieces: &[Option<Piece>],
    proj: &LocalProjection,
    vertices: usize,
) -> (Vec<[f64; 2]>, Vec<DirectedEdge>) {
    let mut ids: BitsMap<(u64, u64), u32> = BitsMap::default();
    let mut coords: Vec<[f64; 2]> = Vec::new();
    let mut edges: Vec<DirectedEdge> = Vec::with_capacity(vertices);
    for (k, piece) in pieces.iter().enumerate() {
        let Some(piece) = piece else { continue };
        for ring in &piece.rings {
            let mut prev = None;
            for &c in ring {
                let next = coords.len() as u32;
                let id = *ids.entry(bits(c)).or_insert_with(|| {
                    coords.push(proj.project(c));
                    next
                });
                if let Some(p) = prev {
                    if p != id {
                        let (lo, hi) = if p < id { (p, id) } else { (id, p) };
                        edges.push(((u64::from(lo) << 32) | u64::from(hi), k as u32, p < id));
                    }
                }
                prev = Some(id);
            }
        }
    }
    (coords, edges)
}

/// The union of all pieces: the residual edges joined into closed walks, resolved with the fill
/// rule w > 0. Sorts `residual`.
fn union_of_residual(residual: &mut [(u32, u32)], coords: &[[f64; 2]]) -> Vec<Vec<Vec<[f64; 2]>>> {
    residual.sort_unstable();
    let contours = closed_walks(residual, coords);
    if contours.is_empty() {
        Vec::new()
    } else {
        contours.simplify_shape(FillRule::Positive)
    }
}

/// Joins sorted residual edges into closed walks (each edge used once).
fn closed_walks(residual: &[(u32, u32)], coords: &[[f64; 2]]) -> Vec<Vec<[f64; 2]>> {
    let mut cursor: BTreeMap<u32, usize> = BTreeMap::new();
    for (k, e) in residual.iter().enumerate() {
        cursor.entry(e.0).or_insert(k);
    }
    let mut used = vec![false; residual.len()];
    let mut take_out = |v: u32, used: &mut Vec<bool>| -> Option<u32> {
        let k = cursor.get_mut(&v)?;
        while *k < residual.len() && residual[*k].0 == v {
            let idx = *k;
            *k += 1;
            if !used[idx] {
                used[idx] = true;
                return Some(residual[idx].1);
            }
        }
        None
    };
    let mut contours: Vec<Vec<[f64; 2]>> = Vec::new();
    for k in 0..residual.len() {
        if used[k] {
            continue;
        }
        let start_v = residual[k].0;
        let mut contour = vec![coords[start_v as usize]];
        let mut cur = start_v;
        while let Some(next) = take_out(cur, &mut used) {
            if next == start_v {
                // Closed; keep walking from start only if more edges leave it later.
                contours.push(std::mem::take(&mut contour));
                contour.push(coords[start_v as usize]);
                cur = start_v;
                continue;
            }
            contour.push(coords[next as usize]);
            cur = next;
        }
    }
    contours
}

/// R-tree over the pieces' bounding boxes, for locating gaps and overlaps.
struct PieceIndex(RTree<GeomWithData<Rectangle<[f64; 2]>, u32>>);

impl PieceIndex {
    fn new(pieces: &[Option<Piece>]) -> Self {
        PieceIndex(RTree::bulk_load(
            pieces
                .iter()
                .enumerate()
                .filter_map(|(k, p)| {
                    p.as_ref().map(|p| {
                        GeomWithData::new(
                            Rectangle::from_corners([p.bbox[0], p.bbox[1]], [p.bbox[2], p.bbox[3]]),
                            k as u32,
                        )
                    })
                })
                .collect(),
        ))
    }

    /// The `limit` lowest-numbered pieces whose bounding box meets `bb`.
    fn near(&self, bb: [f64; 4], limit: usize) -> Vec<u32> {
        let env = AABB::from_corners([bb[0], bb[1]], [bb[2], bb[3]]);
        let mut v: Vec<u32> = self
            .0
            .locate_in_envelope_intersecting(&env)
            .map(|g| g.data)
            .collect();
        v.sort_unstable();
        v.truncate(limit);
        v
    }
}

/// What locating gaps and overlaps needs.
struct Geometry<'a> {
    d: &'a District,
    opts: &'a ValidateOptions,
    proj: &'a LocalProjection,
    pieces: &'a [Option<Piece>],
    index: PieceIndex,
}

/// Reports every hole of the union larger than the tolerance as a gap; returns the area of all
/// holes, tolerated ones included.
fn report_gaps(g: &Geometry<'_>, union: &[Vec<Vec<[f64; 2]>>], problems: &mut Vec<Problem>) -> f64 {
    let mut gap_area = 0.0;
    for shape in union {
        for hole in shape.iter().skip(1) {
            let mut closed = hole.clone();
            closed.push(hole[0]);
            let a = ring_area2(&closed).abs() / 2.0;
            gap_area += a;
            if a > g.opts.max_piece_m2 {
                problems.push(Problem::Gap {
                    area_m2: a,
                    at: g.proj.unproject(hole[0]),
                    near: g
                        .index
                        .near(bounding_box(hole), 6)
                        .into_iter()
                        .map(|k| feature_ref(g.d, k as usize))
                        .collect(),
                });
            }
        }
    }
    gap_area
}

/// [min x, min y, max x, max y] of `points`.
fn bounding_box(points: &[[f64; 2]]) -> [f64; 4] {
    let mut bb = [
        f64::INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NEG_INFINITY,
    ];
    for p in points {
        bb[0] = bb[0].min(p[0]);
        bb[1] = bb[1].min(p[1]);
        bb[2] = bb[2].max(p[0]);
        bb[3] = bb[3].max(p[1]);
    }
    bb
}

/// Locates the total overlap: first around the suspect pieces (those with a residual edge),
/// then, if that does not explain it, between every pair of bounding-box neighbours.
fn locate_overlaps(
    g: &Geometry<'_>,
    suspect: &[bool],
    overlap_total: f64,
    total_tol: f64,
    problems: &mut Vec<Problem>,
    progress: &mut dyn FnMut(Progress<'_>),
) {
    let mut search = OverlapSearch {
        g,
        done: BTreeSet::new(),
        located: 0.0,
    };
    let suspects: Vec<usize> = (0..g.pieces.len()).filter(|&k| suspect[k]).collect();
    for (x, &s) in suspects.iter().enumerate() {
        if x % 64 == 0 {
            progress(Progress {
                phase: "overlaps",
                done: x,
                total: suspects.len(),
            });
        }
        search.around(s, problems);
    }
    if overlap_total - search.located > total_tol {
        let npieces = g.pieces.len();
        let step = progress_step(npieces);
        for s in 0..npieces {
            if s % step == 0 {
                progress(Progress {
                    phase: "overlaps (all pairs)",
                    done: s,
                    total: npieces,
                });
            }
            search.around(s, problems);
        }
    }
    // Intersections of pairs overlap each other where three or more pieces stack, so
    // `located` can exceed the total; only a shortfall is unexplained.
    if overlap_total - search.located > total_tol {
        problems.push(Problem::UnlocatedOverlap {
            area_m2: overlap_total - search.located,
        });
    }
}

/// Pairwise intersections, each pair computed once.
struct OverlapSearch<'a, 'g> {
    g: &'a Geometry<'g>,
    done: BTreeSet<(u32, u32)>,
    /// Sum of the overlaps reported so far (m²).
    located: f64,
}

impl OverlapSearch<'_, '_> {
    /// Intersects piece `s` with every piece whose bounding box meets its own.
    fn around(&mut self, s: usize, problems: &mut Vec<Problem>) {
        if let Some(p) = &self.g.pieces[s] {
            for t in self.g.index.near(p.bbox, usize::MAX) {
                self.check_pair(s as u32, t, problems);
            }
        }
    }

    fn check_pair(&mut self, a: u32, b: u32, problems: &mut Vec<Problem>) {
        let g = self.g;
        let key = (a.min(b), a.max(b));
        if a == b || !self.done.insert(key) {
            return;
        }
        let (Some(pa), Some(pb)) = (&g.pieces[key.0 as usize], &g.pieces[key.1 as usize]) else {
            return;
        };
        if pa.bbox[2] <= pb.bbox[0]
            || pb.bbox[2] <= pa.bbox[0]
            || pa.bbox[3] <= pb.bbox[1]
            || pb.bbox[3] <= pa.bbox[1]
        {
            return;
        }
        let inter = pa
            .shape
            .overlay(&pb.shape, OverlayRule::Intersect, FillRule::NonZero);
        let area = shapes_area(&inter);
        if area > g.opts.max_piece_m2 {
            self.located += area;
            let at = inter
                .iter()
                .max_by(|x, y| shape_area(x).total_cmp(&shape_area(y)))
                .map(|s| g.proj.unproject(vertex_centroid(&s[0])))
                .unwrap_or_default();
            problems.push(Problem::Overlap {
                a: feature_ref(g.d, key.0 as usize),
                b: feature_ref(g.d, key.1 as usize),
                area_m2: area,
                at,
            });
        }
    }
}

/// Warns about communities and streets that consist of separate parts, judged by exactly
/// shared edges.
fn check_contiguity(
    d: &District,
    pieces: &[Option<Piece>],
    adjacency: &[(u32, u32)],
    problems: &[Problem],
    warnings: &mut Vec<Problem>,
) {
    let ngrids = d.grids.len();
    let mut by_comm = Dsu::new(ngrids);
    let mut by_street = Dsu::new(ngrids);
    for &(a, b) in adjacency {
        let (a, b) = (a as usize, b as usize);
        if a >= ngrids || b >= ngrids {
            continue;
        }
        if d.grids[a].community_code == d.grids[b].community_code {
            by_comm.union(a as u32, b as u32);
        }
        if d.grids[a].street_code == d.grids[b].street_code {
            by_street.union(a as u32, b as u32);
        }
    }
    // A grid that shares no edge with anybody while the geometry already has problems is
    // most likely the broken piece itself: leave it out rather than report its community
    // as split as well.
    let skip_isolated = geometry_broken(problems);
    let has_neighbour = grids_with_a_neighbour(ngrids, adjacency);
    let mut comm_roots: BTreeMap<&CommunityCode, BTreeSet<u32>> = BTreeMap::new();
    let mut street_roots: BTreeMap<&StreetCode, BTreeSet<u32>> = BTreeMap::new();
    for (k, g) in d.grids.iter().enumerate() {
        if pieces[k].is_none() || (skip_isolated && !has_neighbour[k]) {
            continue;
        }
        comm_roots
            .entry(&g.community_code)
            .or_default()
            .insert(by_comm.find(k as u32));
        street_roots
            .entry(&g.street_code)
            .or_default()
            .insert(by_street.find(k as u32));
    }
    for (code, roots) in comm_roots {
        if roots.len() > 1 {
            warnings.push(Problem::CommunityNotContiguous {
                code: *code,
                parts: roots.len(),
            });
        }
    }
    for (code, roots) in street_roots {
        if roots.len() > 1 {
            warnings.push(Problem::StreetNotContiguous {
                code: *code,
                parts: roots.len(),
            });
        }
    }
}

/// Whether a geometric problem has been found already.
fn geometry_broken(problems: &[Problem]) -> bool {
    problems.iter().any(|p| {
        matches!(
            p,
            Problem::Overlap { .. }
                | Problem::UnlocatedOverlap { .. }
                | Problem::Gap { .. }
                | Problem::SelfIntersection { .. }
                | Problem::InvalidRing { .. }
                | Problem::HoleOutsideShell { .. }
        )
    })
}

/// Which grids share an edge with some other piece.
fn grids_with_a_neighbour(ngrids: usize, adjacency: &[(u32, u32)]) -> Vec<bool> {
    let mut has_neighbour = vec![false; ngrids];
    for &(a, b) in adjacency {
        for x in [a as usize, b as usize] {
            if x < ngrids {
                has_neighbour[x] = true;
            }
        }
    }
    has_neighbour
}

/// Validates a GeoJSON document leniently: features that cannot be read become problems (all
/// of them, not just the first), the rest is assembled and checked by [`validate`]. Fails only
/// when the document is not a FeatureCollection at all.
pub fn validate_geojson_str(
    text: &str,
    opts: &ValidateOptions,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<ValidationReport, DistrictError> {
    let doc = parse_document(text)?;
    let mut problems = Vec::new();
    let mut ok = Vec::with_capacity(doc.features.len());
    for (index, f) in doc.features {
        match f {
            Ok(f) => ok.push((index, f)),
            Err((label, error)) => problems.push(Problem::BadFeature {
                index,
                label,
                error,
            }),
        }
    }
    let (district, conflicts) = assemble(ok, doc.map_version);
    problems.extend(
        conflicts
            .into_iter()
            .map(|(index, conflict)| Problem::NameConflict { index, conflict }),
    );
    let mut report = validate_with_progress(&district, opts, progress);
    problems.append(&mut report.problems);
    report.problems = problems;
    Ok(report)
}

/// [`validate_geojson_str`] on a file.
pub fn validate_geojson_file(
    path: impl AsRef<Path>,
    opts: &ValidateOptions,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<ValidationReport, DistrictError> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|source| DistrictError::Io {
        path: path.to_owned(),
        source,
    })?;
    validate_geojson_str(&text, opts, progress)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positive_fill_rule_keeps_ccw_rings() {
        let sq = vec![vec![[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]];
        let out = sq.simplify_shape(FillRule::Positive);
        assert_eq!(out.len(), 1);
        assert!((shapes_area(&out) - 1.0).abs() < 1e-9);
    }

    #[test]
    fn stacked_rings_count_once_in_union() {
        let sq = vec![[0.0, 0.0], [2.0, 0.0], [2.0, 2.0], [0.0, 2.0]];
        let sq2 = vec![[1.0, 1.0], [3.0, 1.0], [3.0, 3.0], [1.0, 3.0]];
        let out = vec![sq, sq2].simplify_shape(FillRule::Positive);
        assert!((shapes_area(&out) - 7.0).abs() < 1e-9);
    }
}
