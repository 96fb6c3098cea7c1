//! The district's bounding box, for edge validation, and each grid's readable address, both from
//! the district map as `gridclue_district` loads it.

use std::collections::HashMap;

use geo_types::Polygon;
use gridclue_district::District;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BoundingBox {
    pub min_lon: f64,
    pub min_lat: f64,
    pub max_lon: f64,
    pub max_lat: f64,
}

impl BoundingBox {
    /// The smallest box holding every grid and excluded area of the map; `None` for a map
    /// without any.
    pub fn of(district: &District) -> Option<Self> {
        let grids = district.grids.iter().map(|g| &g.polygon);
        Self::around(grids.chain(district.excluded.iter().map(|e| &e.polygon)))
    }

    /// The smallest box holding the polygons (their outer rings: holes lie inside them).
    fn around<'a>(polygons: impl Iterator<Item = &'a Polygon<f64>>) -> Option<Self> {
        polygons
            .flat_map(|p| p.exterior().coords())
            .fold(None, |bbox: Option<Self>, c| {
                Some(match bbox {
                    None => Self {
                        min_lon: c.x,
                        min_lat: c.y,
                        max_lon: c.x,
                        max_lat: c.y,
                    },
                    Some(b) => Self {
                        min_lon: b.min_lon.min(c.x),
                        min_lat: b.min_lat.min(c.y),
                        max_lon: b.max_lon.max(c.x),
                        max_lat: b.max_lat.max(c.y),
                    },
                })
            })
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
pub fn grid_addresses(district: &District) -> HashMap<String, String> {
    district
        .grids
        .iter()
        .map(|g| {
            let street = district.street(&g.street_code).map(|s| s.name.as_str());
            let community = district
                .community(&g.community_code)
                .map(|c| c.name.as_str());
            let code = g.grid_code.to_string();
            let parts: Vec<&str> = [street, community, Some(code.as_str())]
                .into_iter()
                .flatten()
                .filter(|p| !p.is_empty())
                .collect();
            (code.clone(), parts.join(" "))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use geo_types::polygon;

    fn shipped_map() -> District {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/district/grids.geojson");
        gridclue_district::load_geojson(path).unwrap()
    }

    #[test]
    fn bbox_covers_all_polygons() {
        let a = polygon![(x: 121.0, y: 31.0), (x: 121.2, y: 31.0), (x: 121.2, y: 31.1)];
        let b = polygon![(x: 120.9, y: 31.05), (x: 121.0, y: 31.3), (x: 121.0, y: 31.05)];
        let bbox = BoundingBox::around([&a, &b].into_iter()).unwrap();
        assert_eq!(
            (bbox.min_lon, bbox.max_lon, bbox.min_lat, bbox.max_lat),
            (120.9, 121.2, 31.0, 31.3)
        );
        assert!(bbox.contains(31.1, 121.1));
        assert!(!bbox.contains(31.1, 121.3));
        assert!(bbox.expanded(0.2).contains(31.1, 121.3));
        assert_eq!(BoundingBox::around(std::iter::empty()), None);
    }

    #[test]
    fn the_shipped_maps_box_holds_every_grid_corner() {
        let district = shipped_map();
        let bbox = BoundingBox::of(&district).unwrap();
        for g in &district.grids {
            for c in g.polygon.exterior().coords() {
                assert!(bbox.contains(c.y, c.x), "{} outside {bbox:?}", g.grid_code);
            }
        }
    }

    #[test]
    fn shipped_map_names_every_grid() {
        let names = grid_addresses(&shipped_map());
        assert_eq!(names.len(), 1000);
        assert_eq!(
            names["310199001001001"],
            "洪泉街道 兰城社区 310199001001001"
        );
    }
}
