//! Small planar geometry helpers: a local metric projection, ring areas and segment tests.

use geo_types::{Coord, LineString, Polygon};

/// Mean Earth radius (m).
pub const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// A local equirectangular projection around a reference point: metres east and north. Good to
/// well under 1 % in area over a city, which is all the tolerance checks need.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LocalProjection {
    /// Reference longitude (degrees).
    pub lon0: f64,
    /// Reference latitude (degrees).
    pub lat0: f64,
    kx: f64,
    ky: f64,
}

impl LocalProjection {
    /// A projection centred on (`lon0`, `lat0`).
    pub fn new(lon0: f64, lat0: f64) -> Self {
        let ky = EARTH_RADIUS_M * std::f64::consts::PI / 180.0;
        let kx = ky * lat0.to_radians().cos();
        LocalProjection { lon0, lat0, kx, ky }
    }

    /// A projection centred on the middle of the bounding box of some coordinates.
    pub fn around<'a>(coords: impl IntoIterator<Item = &'a Coord<f64>>) -> Self {
        let mut bb = [
            f64::INFINITY,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NEG_INFINITY,
        ];
        for c in coords {
            bb[0] = bb[0].min(c.x);
            bb[1] = bb[1].min(c.y);
            bb[2] = bb[2].max(c.x);
            bb[3] = bb[3].max(c.y);
        }
        if bb[0].is_finite() {
            Self::new((bb[0] + bb[2]) / 2.0, (bb[1] + bb[3]) / 2.0)
        } else {
            Self::new(0.0, 0.0)
        }
    }

    /// lon/lat → metres.
    pub fn project(&self, c: Coord<f64>) -> [f64; 2] {
        [(c.x - self.lon0) * self.kx, (c.y - self.lat0) * self.ky]
    }

    /// metres → lon/lat.
    pub fn unproject(&self, p: [f64; 2]) -> Coord<f64> {
        Coord {
            x: self.lon0 + p[0] / self.kx,
            y: self.lat0 + p[1] / self.ky,
        }
    }
}

/// Twice the signed area of a ring given as points (closing point optional), computed
/// relative to the first point for accuracy. Positive = counter-clockwise.
pub fn ring_area2(pts: &[[f64; 2]]) -> f64 {
    if pts.len() < 3 {
        return 0.0;
    }
    let o = pts[0];
    let mut s = 0.0;
    for w in pts[1..].windows(2) {
        let (ax, ay) = (w[0][0] - o[0], w[0][1] - o[1]);
        let (bx, by) = (w[1][0] - o[0], w[1][1] - o[1]);
        s += ax * by - bx * ay;
    }
    s
}

/// Signed area (m²) of a lon/lat ring under a projection. Positive = counter-clockwise.
pub fn ring_area_m2(proj: &LocalProjection, ring: &LineString<f64>) -> f64 {
    let pts: Vec<[f64; 2]> = ring.0.iter().map(|c| proj.project(*c)).collect();
    ring_area2(&pts) / 2.0
}

/// Area (m²) of a lon/lat polygon (exterior minus holes, orientation ignored).
pub fn polygon_area_m2(proj: &LocalProjection, p: &Polygon<f64>) -> f64 {
    let ext = ring_area_m2(proj, p.exterior()).abs();
    let holes: f64 = p
        .interiors()
        .iter()
        .map(|r| ring_area_m2(proj, r).abs())
        .sum();
    ext - holes
}

/// A representative point of a ring in metres: the centroid of its vertices.
pub fn vertex_centroid(pts: &[[f64; 2]]) -> [f64; 2] {
    let n = pts.len().max(1) as f64;
    let (sx, sy) = pts
        .iter()
        .fold((0.0, 0.0), |(sx, sy), p| (sx + p[0], sy + p[1]));
    [sx / n, sy / n]
}

/// Exact orientation of (a, b, c): > 0 counter-clockwise, < 0 clockwise, 0 collinear.
pub fn orient(a: Coord<f64>, b: Coord<f64>, c: Coord<f64>) -> f64 {
    robust::orient2d(
        robust::Coord { x: a.x, y: a.y },
        robust::Coord { x: b.x, y: b.y },
        robust::Coord { x: c.x, y: c.y },
    )
}

fn within_box(a: Coord<f64>, b: Coord<f64>, p: Coord<f64>) -> bool {
    p.x >= a.x.min(b.x) && p.x <= a.x.max(b.x) && p.y >= a.y.min(b.y) && p.y <= a.y.max(b.y)
}

/// Whether the closed segments a–b and c–d share any point (exact).
pub fn segments_touch(a: Coord<f64>, b: Coord<f64>, c: Coord<f64>, d: Coord<f64>) -> bool {
    let o1 = orient(a, b, c);
    let o2 = orient(a, b, d);
    let o3 = orient(c, d, a);
    let o4 = orient(c, d, b);
    if ((o1 > 0.0 && o2 < 0.0) || (o1 < 0.0 && o2 > 0.0))
        && ((o3 > 0.0 && o4 < 0.0) || (o3 < 0.0 && o4 > 0.0))
    {
        return true;
    }
    (o1 == 0.0 && within_box(a, b, c))
        || (o2 == 0.0 && within_box(a, b, d))
        || (o3 == 0.0 && within_box(c, d, a))
        || (o4 == 0.0 && within_box(c, d, b))
}

/// Whether point `p` is strictly inside ring `ring` (closed lon/lat ring); points on the
/// boundary count as outside.
pub fn point_in_ring(p: Coord<f64>, ring: &[Coord<f64>]) -> bool {
    let mut inside = false;
    for w in ring.windows(2) {
        let (a, b) = (w[0], w[1]);
        if orient(a, b, p) == 0.0 && within_box(a, b, p) {
            return false;
        }
        if (a.y > p.y) != (b.y > p.y) {
            let o = orient(a, b, p);
            // Crossing to the right of p: for an upward edge p must be left of it.
            if (b.y > a.y && o > 0.0) || (b.y < a.y && o < 0.0) {
                inside = !inside;
            }
        }
    }
    inside
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(x: f64, y: f64) -> Coord<f64> {
        Coord { x, y }
    }

    #[test]
    fn areas_and_orientation() {
        let sq = [[0.0, 0.0], [2.0, 0.0], [2.0, 2.0], [0.0, 2.0], [0.0, 0.0]];
        assert_eq!(ring_area2(&sq), 8.0);
        let mut rev = sq;
        rev.reverse();
        assert_eq!(ring_area2(&rev), -8.0);
    }

    #[test]
    fn segment_tests() {
        assert!(segments_touch(c(0., 0.), c(2., 2.), c(0., 2.), c(2., 0.)));
        assert!(segments_touch(c(0., 0.), c(2., 0.), c(1., 0.), c(1., 1.)));
        assert!(!segments_touch(c(0., 0.), c(2., 0.), c(0., 1.), c(2., 1.)));
        assert!(segments_touch(c(0., 0.), c(2., 0.), c(1., 0.), c(3., 0.)));
        assert!(!segments_touch(c(0., 0.), c(1., 0.), c(2., 0.), c(3., 0.)));
    }

    #[test]
    fn point_in_ring_works() {
        let ring = [c(0., 0.), c(4., 0.), c(4., 4.), c(0., 4.), c(0., 0.)];
        assert!(point_in_ring(c(1., 1.), &ring));
        assert!(!point_in_ring(c(5., 1.), &ring));
        assert!(!point_in_ring(c(4., 1.), &ring));
        assert!(!point_in_ring(c(0., 0.), &ring));
    }

    #[test]
    fn projection_round_trip() {
        let p = LocalProjection::new(121.5, 31.2);
        let m = p.project(c(121.51, 31.21));
        assert!((m[0] - 951.6).abs() < 1.0, "{m:?}");
        assert!((m[1] - 1111.9).abs() < 1.0, "{m:?}");
        let back = p.unproject(m);
        assert!((back.x - 121.51).abs() < 1e-12 && (back.y - 31.21).abs() < 1e-12);
    }
}
