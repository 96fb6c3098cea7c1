//! Quick single-core throughput probe of the grid index on a generated map, for tuning the
//! cell size (the criterion benchmark `geoindex` is the reference measurement):
//!
//! `cargo run --release -p gridclue-enrich --example geoprobe -- 10000 32 64 128`
//! (grids, then cells-per-grid values to try).

use std::hint::black_box;
use std::time::Instant;

use gridclue_district::{generate, GenerateParams};
use gridclue_enrich::geoindex::{GeoIndex, IndexParams, Located};

fn main() {
    let args: Vec<f64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numbers"))
        .collect();
    let grids = args.first().copied().unwrap_or(10_000.0) as usize;
    let d = generate(&GenerateParams {
        grids,
        seed: 20250101,
        ..GenerateParams::default()
    })
    .expect("map");
    let (mut minx, mut miny, mut maxx, mut maxy) = (f64::MAX, f64::MAX, f64::MIN, f64::MIN);
    for g in &d.grids {
        for c in &g.polygon.exterior().0 {
            minx = minx.min(c.x);
            miny = miny.min(c.y);
            maxx = maxx.max(c.x);
            maxy = maxy.max(c.y);
        }
    }
    let mut s = 1u64;
    let mut unit = || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (s >> 11) as f64 / (1u64 << 53) as f64
    };
    let pts: Vec<(f64, f64)> = (0..1 << 21)
        .map(|_| (minx + (maxx - minx) * unit(), miny + (maxy - miny) * unit()))
        .collect();
    for &cpg in args
        .get(1..)
        .unwrap_or(&[])
        .iter()
        .chain(if args.len() < 2 { &[64.0][..] } else { &[][..] })
    {
        let t = Instant::now();
        let idx = GeoIndex::build_with(
            &d,
            IndexParams {
                cells_per_grid: cpg,
                ..IndexParams::default()
            },
        )
        .expect("index");
        let build = t.elapsed().as_secs_f64();
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t = Instant::now();
            let mut n = 0u64;
            for &(x, y) in &pts {
                if let Located::Inside { grid, .. } = idx.locate(x, y) {
                    n = n.wrapping_add(u64::from(grid));
                }
            }
            black_box(n);
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!(
            "grids {grids} cells/grid {cpg}: {:.2} M/s (build {build:.2} s) {:?}",
            pts.len() as f64 / best / 1e6,
            idx.stats()
        );
    }
}
