//! Property test of the cell-grid index against a brute-force oracle: for every point, every
//! grid polygon is tested with `geo`'s `Contains` (strict interior) and `Intersects` (closed
//! polygon), and the documented boundary rule is applied to the result.
//!
//! Points: uniform over the map's bounding box and beyond it, exact vertices (shared by 2–4
//! grids, on the district's outer edge, on lake and pond rims), points interpolated along edges
//! (exactly on them or within an ulp), and points nudged off vertices and edges by 1 ulp to
//! ~10 cm (just inside, just outside, in lakes).
//!
//! Maps: a generated 300-grid district (with lakes and ponds) whose coordinates are snapped to
//! multiples of 2⁻²⁰ degree, so that points at dyadic fractions of an edge are *exactly* on it,
//! for 1 000 000 points; and the shipped 1 000-grid district (7-decimal coordinates, where
//! interpolated points fall within rounding of an edge) for 200 000 more. The oracle's full scan
//! over every polygon is what bounds the map size for a test that runs in debug builds.

use geo::{Contains, Intersects};
use geo_types::{Coord, Point, Polygon};
use gridclue_core::rng::Rng;
use gridclue_district::{generate, District, GenerateParams};
use gridclue_enrich::geoindex::{nearest_by_scan, Assignment, GeoIndex, Located};

struct Oracle<'a> {
    polys: Vec<(&'a Polygon<f64>, [f64; 4])>,
}

impl<'a> Oracle<'a> {
    fn new(index_order: &'a [&'a Polygon<f64>]) -> Self {
        let polys = index_order
            .iter()
            .map(|p| {
                let mut bb = [
                    f64::INFINITY,
                    f64::INFINITY,
                    f64::NEG_INFINITY,
                    f64::NEG_INFINITY,
                ];
                for c in &p.exterior().0 {
                    bb[0] = bb[0].min(c.x);
                    bb[1] = bb[1].min(c.y);
                    bb[2] = bb[2].max(c.x);
                    bb[3] = bb[3].max(c.y);
                }
                (*p, bb)
            })
            .collect();
        Self { polys }
    }

    /// Every polygon, in code order; the bounding-box check only skips polygons that cannot
    /// intersect the point.
    fn locate(&self, x: f64, y: f64) -> Located {
        let pt = Point::new(x, y);
        let mut boundary = None;
        for (i, (poly, bb)) in self.polys.iter().enumerate() {
            if x < bb[0] || x > bb[2] || y < bb[1] || y > bb[3] {
                continue;
            }
            if poly.contains(&pt) {
                return Located::Inside {
                    grid: i as u32,
                    on_boundary: false,
                };
            }
            if boundary.is_none() && poly.intersects(&pt) {
                boundary = Some(i as u32);
            }
        }
        match boundary {
            Some(grid) => Located::Inside {
                grid,
                on_boundary: true,
            },
            None => Located::Outside,
        }
    }
}

#[derive(Default, Debug)]
struct Tally {
    inside: usize,
    boundary: usize,
    outside: usize,
    /// Interpolated points exactly on an edge (not at a vertex).
    on_edge: usize,
    nearest_checked: usize,
}

fn check(district: &District, n: usize, seed: u64) -> Tally {
    let index = GeoIndex::build(district).unwrap();
    // The index numbers grids in code order; so does the district (sorted by the loader and
    // the generator), which the oracle relies on.
    let polys: Vec<&Polygon<f64>> = district.grids.iter().map(|g| &g.polygon).collect();
    for (i, g) in district.grids.iter().enumerate() {
        assert_eq!(index.grid_code(i as u32).as_str(), g.grid_code.as_str());
    }
    let oracle = Oracle::new(&polys);
    let rings: Vec<&[Coord<f64>]> = district
        .grids
        .iter()
        .flat_map(|g| std::iter::once(g.polygon.exterior()).chain(g.polygon.interiors()))
        .chain(district.excluded.iter().map(|e| e.polygon.exterior()))
        .map(|r| r.0.as_slice())
        .collect();
    let (mut minx, mut miny, mut maxx, mut maxy) = (
        f64::INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NEG_INFINITY,
    );
    for r in &rings {
        for c in r.iter() {
            minx = minx.min(c.x);
            miny = miny.min(c.y);
            maxx = maxx.max(c.x);
            maxy = maxy.max(c.y);
        }
    }
    let (dx, dy) = (maxx - minx, maxy - miny);
    let mut rng = Rng::new(seed);
    let mut tally = Tally::default();
    for k in 0..n {
        let ring = rings[rng.below(rings.len())];
        let i = rng.below(ring.len() - 1);
        let (a, b) = (ring[i], ring[i + 1]);
        let (x, y) = match k % 10 {
            // Uniform over the bounding box grown by 5 % on every side.
            0..=2 => (
                minx - 0.05 * dx + 1.1 * dx * rng.f64(),
                miny - 0.05 * dy + 1.1 * dy * rng.f64(),
            ),
            // Exactly a vertex.
            3 | 4 => (a.x, a.y),
            // Along an edge at a dyadic fraction: exactly on it when the coordinates are dyadic
            // (the generated map's are), else within rounding of it.
            5 | 6 => {
                let t = (1 + rng.below(1023)) as f64 / 1024.0;
                (a.x + t * (b.x - a.x), a.y + t * (b.y - a.y))
            }
            // A vertex nudged by a few ulps in each direction.
            7 => {
                let nudge = |v: f64, r: u64| match r % 3 {
                    0 => v.next_down(),
                    1 => v,
                    _ => v.next_up(),
                };
                let r = rng.next_u64();
                (nudge(a.x, r), nudge(a.y, r / 3))
            }
            // Off an edge by 1e-12..1e-6 degrees (~0.1 µm .. 10 cm), either side.
            _ => {
                let t = rng.f64();
                let off = 10f64.powf(-12.0 + 6.0 * rng.f64())
                    * if rng.next_u64().is_multiple_of(2) {
                        1.0
                    } else {
                        -1.0
                    };
                let (ex, ey) = (b.x - a.x, b.y - a.y);
                let len = (ex * ex + ey * ey).sqrt();
                (a.x + t * ex - ey / len * off, a.y + t * ey + ex / len * off)
            }
        };
        let expected = oracle.locate(x, y);
        let got = index.locate(x, y);
        assert_eq!(got, expected, "point #{k} ({x:?}, {y:?})");
        match expected {
            Located::Inside {
                on_boundary: false, ..
            } => tally.inside += 1,
            Located::Inside { .. } => {
                tally.boundary += 1;
                if matches!(k % 10, 5 | 6) {
                    tally.on_edge += 1;
                }
            }
            Located::Outside => {
                tally.outside += 1;
                if tally.outside % 97 == 0 {
                    let Assignment::Outside {
                        nearest,
                        distance_m,
                    } = index.assign(x, y)
                    else {
                        panic!("assign disagrees with locate at ({x}, {y})");
                    };
                    let (want, want_d) = nearest_by_scan(&index, x, y);
                    assert!((distance_m - want_d).abs() <= 1e-9 * want_d.max(1.0));
                    if distance_m != want_d {
                        continue;
                    }
                    assert_eq!(nearest, want, "nearest grid of ({x}, {y})");
                    tally.nearest_checked += 1;
                }
            }
        }
        // The replaced R-tree index must agree too.
        if k % 16 == 0 {
            assert_eq!(
                index.locate_exact(x, y),
                expected,
                "exact path at ({x:?}, {y:?})"
            );
        }
    }
    tally
}

/// Rounds every coordinate to a multiple of 2⁻²⁰ degree (~0.1 m; shared vertices stay shared),
/// so that points at dyadic fractions along an edge are exactly representable and exactly on it.
fn snap_to_dyadic(d: &mut District) {
    let snap = |c: &mut Coord<f64>| {
        let k = (1u64 << 20) as f64;
        c.x = (c.x * k).round() / k;
        c.y = (c.y * k).round() / k;
    };
    let polys = d
        .grids
        .iter_mut()
        .map(|g| &mut g.polygon)
        .chain(d.excluded.iter_mut().map(|e| &mut e.polygon));
    for p in polys {
        p.exterior_mut(|r| r.0.iter_mut().for_each(snap));
        p.interiors_mut(|rs| rs.iter_mut().for_each(|r| r.0.iter_mut().for_each(snap)));
    }
}

#[test]
fn a_million_points_on_a_generated_map_match_the_oracle() {
    let mut district = generate(&GenerateParams {
        grids: 300,
        seed: 7,
        lakes: Some(2),
        ponds: Some(3),
        ..GenerateParams::default()
    })
    .unwrap();
    snap_to_dyadic(&mut district);
    assert!(district
        .grids
        .iter()
        .any(|g| !g.polygon.interiors().is_empty()));
    assert!(!district.excluded.is_empty());
    let t = check(&district, 1_000_000, 42);
    eprintln!("{t:?}");
    assert!(t.boundary > 300_000, "{t:?}");
    assert!(t.on_edge > 150_000, "{t:?}");
    assert!(t.inside > 400_000, "{t:?}");
    assert!(t.outside > 100_000, "{t:?}");
    assert!(t.nearest_checked > 1_000, "{t:?}");
}

#[test]
fn the_shipped_map_matches_the_oracle() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/district/grids.geojson");
    let district = gridclue_district::load_geojson(&path).unwrap();
    let t = check(&district, 200_000, 4242);
    eprintln!("{t:?}");
    assert!(
        t.boundary > 35_000 && t.inside > 100_000 && t.outside > 15_000,
        "{t:?}"
    );
}
