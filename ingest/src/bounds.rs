//! The district's bounding box, read from the map's coordinates, for edge validation.

use std::path::Path;

use anyhow::Context;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BoundingBox {
    pub min_lon: f64,
    pub min_lat: f64,
    pub max_lon: f64,
    pub max_lat: f64,
}

impl BoundingBox {
    pub fn from_geojson(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading district map {}", path.display()))?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("parsing district map {}", path.display()))?;
        let mut bbox = BoundingBox {
            min_lon: f64::INFINITY,
            min_lat: f64::INFINITY,
            max_lon: f64::NEG_INFINITY,
            max_lat: f64::NEG_INFINITY,
        };
        let features = json["features"].as_array().context("map has no features")?;
        for f in features {
            visit_positions(&f["geometry"]["coordinates"], &mut |lon, lat| {
                bbox.min_lon = bbox.min_lon.min(lon);
                bbox.max_lon = bbox.max_lon.max(lon);
                bbox.min_lat = bbox.min_lat.min(lat);
                bbox.max_lat = bbox.max_lat.max(lat);
            });
        }
        anyhow::ensure!(bbox.min_lon.is_finite(), "map has no coordinates");
        Ok(bbox)
    }

    pub fn expanded(&self, margin_deg: f64) -> Self {
        Self {
            min_lon: self.min_lon - margin_deg,
            min_lat: self.min_lat - margin_deg,
            max_lon: self.max_lon + margin_deg,
            max_lat: self.max_lat + margin_deg,
        }
    }

    pub fn contains(&self, lat: f64, lon: f64) -> bool {
        (self.min_lat..=self.max_lat).contains(&lat) && (self.min_lon..=self.max_lon).contains(&lon)
    }
}

/// A readable address for each unit grid of the map: "<street> <community> <grid code>"
/// (used as Open311's `address`; the grid code alone is its `address_id`).
pub fn grid_addresses(path: &Path) -> anyhow::Result<std::collections::HashMap<String, String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading district map {}", path.display()))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("parsing district map {}", path.display()))?;
    let mut out = std::collections::HashMap::new();
    for f in json["features"].as_array().context("map has no features")? {
        let p = &f["properties"];
        let Some(grid) = p["grid_code"].as_str() else {
            continue;
        };
        let parts: Vec<&str> = [p["street_name"].as_str(), p["community_name"].as_str()]
            .into_iter()
            .flatten()
            .chain(std::iter::once(grid))
            .collect();
        out.insert(grid.to_owned(), parts.join(" "));
    }
    Ok(out)
}

fn visit_positions(v: &serde_json::Value, f: &mut impl FnMut(f64, f64)) {
    if let Some(items) = v.as_array() {
        match (
            items.first().and_then(|x| x.as_f64()),
            items.get(1).and_then(|x| x.as_f64()),
        ) {
            (Some(lon), Some(lat)) => f(lon, lat),
            _ => items.iter().for_each(|i| visit_positions(i, f)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bbox_covers_all_rings() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.geojson");
        std::fs::write(
            &path,
            r#"{"type":"FeatureCollection","features":[
              {"type":"Feature","properties":{},"geometry":{"type":"Polygon","coordinates":[[[121.0,31.0],[121.2,31.0],[121.2,31.1],[121.0,31.0]]]}},
              {"type":"Feature","properties":{},"geometry":{"type":"MultiPolygon","coordinates":[[[[120.9,31.05],[121.0,31.3],[121.0,31.05],[120.9,31.05]]]]}}]}"#,
        )
        .unwrap();
        let b = BoundingBox::from_geojson(&path).unwrap();
        assert_eq!(
            (b.min_lon, b.max_lon, b.min_lat, b.max_lat),
            (120.9, 121.2, 31.0, 31.3)
        );
        assert!(b.contains(31.1, 121.1));
        assert!(!b.contains(31.1, 121.3));
        assert!(b.expanded(0.2).contains(31.1, 121.3));
    }

    #[test]
    fn shipped_map_names_every_grid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/district/grids.geojson");
        let names = grid_addresses(&path).unwrap();
        assert_eq!(names.len(), 1000);
        assert_eq!(
            names["310199001001001"],
            "洪泉街道 兰城社区 310199001001001"
        );
    }
}
