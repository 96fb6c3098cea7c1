//! Test-side geometry: expected placements computed from the shipped map's polygons (read with
//! the district loader), independently of the service's index (geo's `Contains` for interiors,
//! exact vertex equality for boundaries).

use std::collections::{BTreeMap, BTreeSet};

use geo::{BoundingRect, Contains, Intersects};
use geo_types::Point;
use gridclue_core::codes::{GridCode, StreetCode};
use gridclue_district::Grid;

/// The unit grids of the shipped map, in code order.
pub fn load_grids() -> &'static [Grid] {
    &gridclue_tests::shipped_map().grids
}

/// A point strictly inside the grid (its interior per geo), searched on a fine lattice.
pub fn interior_point(g: &Grid) -> Point<f64> {
    let r = g.polygon.bounding_rect().unwrap();
    for i in 1..40 {
        for j in 1..40 {
            let p = Point::new(
                r.min().x + (r.max().x - r.min().x) * f64::from(j) / 40.0,
                r.min().y + (r.max().y - r.min().y) * f64::from(i) / 40.0,
            );
            if g.polygon.contains(&p) {
                return p;
            }
        }
    }
    panic!("no interior point found for {}", g.grid_code);
}

/// A vertex shared by grids of two different streets, with the grid codes touching it.
pub fn shared_vertices(grids: &[Grid], wanted: usize) -> Vec<(Point<f64>, Vec<GridCode>)> {
    let mut by_vertex: BTreeMap<(u64, u64), Vec<usize>> = BTreeMap::new();
    for (i, g) in grids.iter().enumerate() {
        for c in g.polygon.exterior().0.iter() {
            let e = by_vertex.entry((c.x.to_bits(), c.y.to_bits())).or_default();
            if !e.contains(&i) {
                e.push(i);
            }
        }
    }
    let mut out = Vec::new();
    for ((x, y), owners) in by_vertex {
        let streets: BTreeSet<StreetCode> = owners.iter().map(|&i| grids[i].street_code).collect();
        if owners.len() >= 2 && streets.len() >= 2 {
            let p = Point::new(f64::from_bits(x), f64::from_bits(y));
            // Every grid whose closed polygon holds the vertex, to be safe against T-junctions.
            let mut codes: Vec<GridCode> = grids
                .iter()
                .filter(|g| g.polygon.intersects(&p))
                .map(|g| g.grid_code)
                .collect();
            codes.sort();
            out.push((p, codes));
            if out.len() == wanted {
                break;
            }
        }
    }
    out
}

/// A point beyond the district (right of its bounding box), inside the API's accepted margin.
pub fn outside_point(grids: &[Grid], k: usize) -> Point<f64> {
    let max_x = grids
        .iter()
        .map(|g| g.polygon.bounding_rect().unwrap().max().x)
        .fold(f64::MIN, f64::max);
    let min_y = grids
        .iter()
        .map(|g| g.polygon.bounding_rect().unwrap().min().y)
        .fold(f64::MAX, f64::min);
    let p = Point::new(max_x + 0.005 + 0.001 * k as f64, min_y + 0.01);
    assert!(!grids.iter().any(|g| g.polygon.intersects(&p)));
    p
}

pub fn street_of(grids: &[Grid], grid_code: GridCode) -> StreetCode {
    grids
        .iter()
        .find(|g| g.grid_code == grid_code)
        .unwrap()
        .street_code
}
