//! The district map as the loader samples it: grids by street, random points inside them, a
//! category mix and report texts.

use anyhow::Context;
use geo::{BoundingRect, Contains};
use geo_types::{MultiPolygon, Point, Polygon};
use gridclue_core::grid::StreetCode;
use gridclue_core::{CategoryCode, GridCode};
use rand::rngs::StdRng;
use rand::Rng;

/// One unit grid of the map: its street and outline.
pub struct GridShape {
    pub street: StreetCode,
    pub grid_code: GridCode,
    pub polygon: Polygon<f64>,
}

/// The grids of a district map (GeoJSON, loaded by `gridclue_district`) and their union.
pub fn load_map(path: &str) -> anyhow::Result<(Vec<GridShape>, MultiPolygon<f64>)> {
    let district =
        gridclue_district::load_geojson(path).with_context(|| format!("loading map {path}"))?;
    let grids: Vec<GridShape> = district
        .grids
        .into_iter()
        .map(|g| {
            // The map crate has its own code types; the loader works with the core ones.
            let grid_code = GridCode::parse(g.grid_code.as_str())
                .with_context(|| format!("grid code {} of map {path}", g.grid_code.as_str()))?;
            Ok(GridShape {
                street: grid_code.street_code(),
                grid_code,
                polygon: g.polygon,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    anyhow::ensure!(!grids.is_empty(), "map {path} has no grids");
    let all = MultiPolygon::new(grids.iter().map(|g| g.polygon.clone()).collect());
    Ok((grids, all))
}

/// A random point inside the polygon (rejection sampling in its bounding box).
pub fn point_in(poly: &Polygon<f64>, rng: &mut StdRng) -> Option<(f64, f64)> {
    let r = poly.bounding_rect()?;
    for _ in 0..200 {
        let x = rng.gen_range(r.min().x..r.max().x);
        let y = rng.gen_range(r.min().y..r.max().y);
        if poly.contains(&Point::new(x, y)) {
            return Some((x, y));
        }
    }
    None
}

/// Category codes with rough real-world weights (garbage and vending dominate).
pub fn pick_category(codes: &[CategoryCode], rng: &mut StdRng) -> CategoryCode {
    let weight = |c: &str| match c {
        "garbage_pile" => 8.0,
        "manhole_cover" => 4.0,
        "food_safety" => 3.0,
        _ => 1.5,
    };
    let total: f64 = codes.iter().map(|c| weight(c.as_str())).sum();
    let mut x = rng.gen_range(0.0..total);
    for c in codes {
        x -= weight(c.as_str());
        if x <= 0.0 {
            return c.clone();
        }
    }
    codes[0].clone()
}

pub const DESCRIPTIONS: &[&str] = &[
    "路口井盖破损，有行人绊倒风险",
    "小区门口垃圾堆放多日无人清运",
    "早餐摊食品无遮盖，卫生堪忧",
    "消防通道被车辆占用",
    "路灯不亮，夜间通行不便",
    "人行道地砖松动",
    "沿街商铺占道经营",
    "墙面乱贴小广告",
];
