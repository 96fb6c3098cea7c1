//! Reference data the summaries are labelled with: street names from the district map and
//! category names from the catalog.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use gridclue_core::Catalog;
use serde::Deserialize;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Street {
    pub code: String,
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CategoryName {
    pub code: String,
    pub name_zh: String,
    pub name_en: String,
}

/// Streets (sorted by code) and categories (catalog order).
#[derive(Clone, Debug, Default)]
pub struct Reference {
    pub streets: Vec<Street>,
    pub categories: Vec<CategoryName>,
}

#[derive(Deserialize)]
struct FeatureCollection {
    features: Vec<Feature>,
}

#[derive(Deserialize)]
struct Feature {
    #[serde(default)]
    properties: Properties,
}

#[derive(Default, Deserialize)]
struct Properties {
    street_code: Option<String>,
    street_name: Option<String>,
}

impl Reference {
    /// Streets named by the features of a GeoJSON FeatureCollection (only the `street_code` and
    /// `street_name` properties are read; features without them are ignored).
    pub fn streets_from_geojson(text: &str) -> anyhow::Result<Vec<Street>> {
        let fc: FeatureCollection = serde_json::from_str(text)
            .context("district map is not a GeoJSON FeatureCollection")?;
        let mut streets = BTreeMap::new();
        for f in fc.features {
            if let (Some(code), Some(name)) = (f.properties.street_code, f.properties.street_name) {
                streets.entry(code).or_insert(name);
            }
        }
        Ok(streets
            .into_iter()
            .map(|(code, name)| Street { code, name })
            .collect())
    }

    pub fn categories_from_catalog(catalog: &Catalog) -> Vec<CategoryName> {
        catalog
            .categories()
            .iter()
            .map(|c| CategoryName {
                code: c.code.to_string(),
                name_zh: c.name_zh.clone(),
                name_en: c.name_en.clone(),
            })
            .collect()
    }

    /// Loads `<data_dir>/district/grids.geojson` and `<data_dir>/categories.json`.
    pub fn load(data_dir: &Path) -> anyhow::Result<Self> {
        let map = data_dir.join("district/grids.geojson");
        let text = std::fs::read_to_string(&map)
            .with_context(|| format!("reading the district map {}", map.display()))?;
        let streets = Self::streets_from_geojson(&text)?;
        let catalog = Catalog::load(&data_dir.join("categories.json"))?;
        Ok(Self {
            streets,
            categories: Self::categories_from_catalog(&catalog),
        })
    }

    pub fn street_name(&self, code: &str) -> Option<&str> {
        self.streets
            .binary_search_by(|s| s.code.as_str().cmp(code))
            .ok()
            .map(|i| self.streets[i].name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streets_come_from_feature_properties() {
        let text = r#"{"type":"FeatureCollection","features":[
          {"type":"Feature","properties":{"grid_code":"310199002001001","street_code":"310199002","street_name":"乙街道"},"geometry":null},
          {"type":"Feature","properties":{"grid_code":"310199001001001","street_code":"310199001","street_name":"甲街道"},"geometry":null},
          {"type":"Feature","properties":{"grid_code":"310199001001002","street_code":"310199001","street_name":"甲街道"},"geometry":null},
          {"type":"Feature","properties":{"kind":"excluded"},"geometry":null}]}"#;
        let streets = Reference::streets_from_geojson(text).unwrap();
        assert_eq!(streets.len(), 2);
        assert_eq!(streets[0].code, "310199001");
        let r = Reference {
            streets,
            categories: vec![],
        };
        assert_eq!(r.street_name("310199002"), Some("乙街道"));
        assert_eq!(r.street_name("310199003"), None);
    }

    #[test]
    fn shipped_map_names_thirteen_streets() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/district/grids.geojson");
        let text = std::fs::read_to_string(&path).unwrap();
        let streets = Reference::streets_from_geojson(&text).unwrap();
        assert_eq!(streets.len(), 13, "{streets:?}");
    }
}
