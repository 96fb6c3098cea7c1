//! Exact grid assignment: an R-tree over grid bounding boxes, then an exact point-in-polygon
//! test with robust orientation predicates.
//!
//! Boundary rule (deterministic): a point strictly inside one grid gets that grid. A point on an
//! edge or vertex shared by several grids (or on the district's outer edge) gets the grid with the
//! smallest code among those whose closed polygon contains it, flagged `on_boundary`. A point
//! in no grid (outside the district, or in an excluded area such as a lake) is `Outside`, with the
//! nearest grid and the distance to it in metres.

use geo_types::{Coord, LineString, Polygon};
use gridclue_core::GridCode;
use gridclue_district::District;
use robust::{orient2d, Coord as RCoord};
use rstar::{RTree, RTreeObject, AABB};

/// Metres per degree of latitude (mean Earth radius).
const METRES_PER_DEGREE: f64 = 111_195.08;

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

pub struct GeoIndex {
    tree: RTree<Entry>,
    grids: Vec<(GridCode, Polygon<f64>)>,
    map_version: String,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Where {
    Inside,
    Boundary,
    Outside,
}

impl GeoIndex {
    pub fn build(district: &District) -> anyhow::Result<Self> {
        let mut grids = Vec::with_capacity(district.grids.len());
        for g in &district.grids {
            let code = GridCode::parse(g.grid_code.as_str())?;
            grids.push((code, g.polygon.clone()));
        }
        // Smallest code first, so that the first closed-polygon hit is the tie-break winner.
        grids.sort_by(|a, b| a.0.cmp(&b.0));
        let entries = grids
            .iter()
            .enumerate()
            .map(|(i, (_, poly))| Entry {
                bbox: bbox_of(poly.exterior()),
                grid: i,
            })
            .collect();
        Ok(Self {
            tree: RTree::bulk_load(entries),
            grids,
            map_version: district.map_version.clone(),
        })
    }

    pub fn map_version(&self) -> &str {
        &self.map_version
    }

    pub fn grid_count(&self) -> usize {
        self.grids.len()
    }

    pub fn assign(&self, lon: f64, lat: f64) -> Assignment {
        let p = [lon, lat];
        let mut boundary: Option<usize> = None;
        for e in self.tree.locate_all_at_point(&p) {
            match locate(&self.grids[e.grid].1, lon, lat) {
                Where::Inside => {
                    return Assignment::Inside {
                        grid: self.grids[e.grid].0,
                        on_boundary: false,
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
        if let Some(b) = boundary {
            return Assignment::Inside {
                grid: self.grids[b].0,
                on_boundary: true,
            };
        }
        let (nearest, distance_m) = self.nearest(lon, lat);
        Assignment::Outside {
            nearest,
            distance_m,
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
}

fn bbox_of(ring: &LineString<f64>) -> AABB<[f64; 2]> {
    let pts: Vec<[f64; 2]> = ring.0.iter().map(|c| [c.x, c.y]).collect();
    AABB::from_points(pts.iter())
}

fn rc(c: Coord<f64>) -> RCoord<f64> {
    RCoord { x: c.x, y: c.y }
}

/// Where the point is relative to the closed polygon (holes excluded).
fn locate(poly: &Polygon<f64>, x: f64, y: f64) -> Where {
    let mut crossings = 0u32;
    let rings = std::iter::once(poly.exterior()).chain(poly.interiors());
    let p = RCoord { x, y };
    for ring in rings {
        for w in ring.0.windows(2) {
            let (a, b) = (w[0], w[1]);
            let o = orient2d(rc(a), rc(b), p);
            if o == 0.0
                && x >= a.x.min(b.x)
                && x <= a.x.max(b.x)
                && y >= a.y.min(b.y)
                && y <= a.y.max(b.y)
            {
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn shipped_map_interiors_and_shared_vertices() {
        use geo::{BoundingRect, Contains};
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/district/grids.geojson");
        let district = gridclue_district::load_geojson(&path).unwrap();
        let index = GeoIndex::build(&district).unwrap();
        let mut owners: std::collections::HashMap<(u64, u64), Vec<String>> = Default::default();
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
                    grid: GridCode::parse(g.grid_code.as_str()).unwrap(),
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
