//! Grid assignment throughput on city-scale generated maps (10k and 100k grids): the cell-grid
//! index, the R-tree + exact polygon test it replaced, and a naive linear scan (geo `Contains`
//! over every polygon), side by side. Throughput is points per second on one core.
//!
//! The maps are generated in-process (deterministic by seed), nothing is written to disk:
//! `cargo bench -p gridclue-enrich --bench geoindex`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use geo::Contains;
use geo_types::Point;
use gridclue_core::rng::Rng;
use gridclue_district::{generate, District, GenerateParams};
use gridclue_enrich::geoindex::{GeoIndex, Located};

/// Points uniform over the map's bounding box (mostly inside the district, some outside or in
/// lakes), as (lon, lat).
fn points(d: &District, n: usize, seed: u64) -> Vec<(f64, f64)> {
    let (mut minx, mut miny, mut maxx, mut maxy) = (f64::MAX, f64::MAX, f64::MIN, f64::MIN);
    for g in &d.grids {
        for c in &g.polygon.exterior().0 {
            minx = minx.min(c.x);
            miny = miny.min(c.y);
            maxx = maxx.max(c.x);
            maxy = maxy.max(c.y);
        }
    }
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| {
            (
                minx + (maxx - minx) * rng.f64(),
                miny + (maxy - miny) * rng.f64(),
            )
        })
        .collect()
}

fn naive(d: &District, lon: f64, lat: f64) -> Option<usize> {
    let p = Point::new(lon, lat);
    d.grids.iter().position(|g| g.polygon.contains(&p))
}

fn bench_map(c: &mut Criterion, grids: usize) {
    let t0 = Instant::now();
    let district = generate(&GenerateParams {
        grids,
        seed: 20250101,
        ..GenerateParams::default()
    })
    .expect("generating the map");
    let gen_s = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let index = GeoIndex::build(&district).expect("building the index");
    eprintln!(
        "map {grids}: generated in {gen_s:.1} s, index built in {:.2} s: {:?}",
        t1.elapsed().as_secs_f64(),
        index.stats()
    );
    let pts = points(&district, 1 << 20, 99);
    let inside = pts
        .iter()
        .filter(|(x, y)| matches!(index.locate(*x, *y), Located::Inside { .. }))
        .count();
    eprintln!(
        "map {grids}: {:.1} % of the benchmark points are inside a grid",
        100.0 * inside as f64 / pts.len() as f64
    );

    let mut g = c.benchmark_group(format!("assign_{}k_grids", grids / 1000));
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(4));

    g.throughput(Throughput::Elements(pts.len() as u64));
    g.bench_function(BenchmarkId::new("cell_grid_index", grids), |b| {
        b.iter(|| {
            let mut n = 0u64;
            for &(x, y) in &pts {
                if let Located::Inside { grid, .. } = index.locate(x, y) {
                    n = n.wrapping_add(u64::from(grid));
                }
            }
            black_box(n)
        })
    });
    let few = &pts[..1 << 16];
    g.throughput(Throughput::Elements(few.len() as u64));
    g.bench_function(BenchmarkId::new("rtree_plus_exact_polygon", grids), |b| {
        b.iter(|| {
            let mut n = 0u64;
            for &(x, y) in few {
                if let Located::Inside { grid, .. } = index.locate_exact(x, y) {
                    n = n.wrapping_add(u64::from(grid));
                }
            }
            black_box(n)
        })
    });
    g.sample_size(10);
    let tiny = &pts[..16];
    g.throughput(Throughput::Elements(tiny.len() as u64));
    g.bench_function(BenchmarkId::new("naive_linear_scan", grids), |b| {
        b.iter(|| {
            let mut n = 0usize;
            for &(x, y) in tiny {
                n += naive(&district, x, y).unwrap_or(0);
            }
            black_box(n)
        })
    });
    g.finish();
}

fn benches(c: &mut Criterion) {
    bench_map(c, 10_000);
    bench_map(c, 100_000);
}

criterion_group!(geoindex, benches);
criterion_main!(geoindex);
