//! The district map as the loader samples it: grids by street, random points inside them, a
//! category mix and report texts.

use anyhow::Context;
use geo::{BoundingRect, Contains};
use geo_types::{Geometry, MultiPolygon, Point, Polygon};
use rand::rngs::StdRng;
use rand::Rng;
use serde_json::Value;

/// One unit grid of the map: its street and outline.
pub struct GridShape {
    pub street: String,
    pub grid_code: String,
    pub polygon: Polygon<f64>,
}

/// The grids of a district map (GeoJSON) and their union.
pub fn load_map(path: &str) -> anyhow::Result<(Vec<GridShape>, MultiPolygon<f64>)> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    let json: Value = serde_json::from_str(&text)?;
    let mut grids = Vec::new();
    for f in json["features"].as_array().context("no features")? {
        if f["properties"]["grid_code"].is_null() {
            continue;
        }
        let geometry: Geometry<f64> =
            serde_json::from_value::<GeoJsonPolygon>(f["geometry"].clone())?.into_polygon()?;
        let Geometry::Polygon(polygon) = geometry else {
            continue;
        };
        grids.push(GridShape {
            street: f["properties"]["street_code"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            grid_code: f["properties"]["grid_code"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            polygon,
        });
    }
    anyhow::ensure!(!grids.is_empty(), "map {path} has no grids");
    let all = MultiPolygon::new(grids.iter().map(|g| g.polygon.clone()).collect());
    Ok((grids, all))
}

#[derive(serde::Deserialize)]
struct GeoJsonPolygon {
    #[serde(rename = "type")]
    kind: String,
    coordinates: Vec<Vec<[f64; 2]>>,
}

impl GeoJsonPolygon {
    fn into_polygon(self) -> anyhow::Result<Geometry<f64>> {
        anyhow::ensure!(
            self.kind == "Polygon",
            "only Polygon geometries are sampled"
        );
        let mut rings = self.coordinates.into_iter().map(|r| {
            geo_types::LineString::from(r.into_iter().map(|[x, y]| (x, y)).collect::<Vec<_>>())
        });
        let exterior = rings.next().context("polygon without rings")?;
        Ok(Geometry::Polygon(Polygon::new(exterior, rings.collect())))
    }
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
pub fn pick_category(codes: &[String], rng: &mut StdRng) -> String {
    let weight = |c: &str| match c {
        "garbage_pile" => 8.0,
        "manhole_cover" => 4.0,
        "food_safety" => 3.0,
        _ => 1.5,
    };
    let total: f64 = codes.iter().map(|c| weight(c)).sum();
    let mut x = rng.gen_range(0.0..total);
    for c in codes {
        x -= weight(c);
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
