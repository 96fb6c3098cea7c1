//! Reference data the answers are labelled with: street and community names from the district
//! map, category and department names from the catalog.

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

/// A department's names, from the catalog.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DepartmentName {
    pub code: String,
    pub name_zh: String,
    pub name_en: String,
}

/// Streets (sorted by code), categories (catalog order), communities by code and departments
/// (catalog order).
#[derive(Clone, Debug, Default)]
pub struct Reference {
    pub streets: Vec<Street>,
    pub categories: Vec<CategoryName>,
    pub communities: BTreeMap<String, String>,
    pub departments: Vec<DepartmentName>,
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
    community_code: Option<String>,
    community_name: Option<String>,
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

    /// Community names by code, from the same features' `community_code` and `community_name`.
    pub fn communities_from_geojson(text: &str) -> anyhow::Result<BTreeMap<String, String>> {
        let fc: FeatureCollection = serde_json::from_str(text)
            .context("district map is not a GeoJSON FeatureCollection")?;
        let mut communities = BTreeMap::new();
        for f in fc.features {
            let p = f.properties;
            if let (Some(code), Some(name)) = (p.community_code, p.community_name) {
                communities.entry(code).or_insert(name);
            }
        }
        Ok(communities)
    }

    pub fn departments_from_catalog(catalog: &Catalog) -> Vec<DepartmentName> {
        catalog
            .departments()
            .iter()
            .map(|d| DepartmentName {
                code: d.code.clone(),
                name_zh: d.name_zh.clone(),
                name_en: d.name_en.clone(),
            })
            .collect()
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
        let communities = Self::communities_from_geojson(&text)?;
        let catalog = Catalog::load(&data_dir.join("categories.json"))?;
        Ok(Self {
            streets,
            categories: Self::categories_from_catalog(&catalog),
            communities,
            departments: Self::departments_from_catalog(&catalog),
        })
    }

    pub fn street_name(&self, code: &str) -> Option<&str> {
        self.streets
            .binary_search_by(|s| s.code.as_str().cmp(code))
            .ok()
            .map(|i| self.streets[i].name.as_str())
    }

    pub fn community_name(&self, code: &str) -> Option<&str> {
        self.communities.get(code).map(String::as_str)
    }

    pub fn category(&self, code: &str) -> Option<&CategoryName> {
        self.categories.iter().find(|c| c.code == code)
    }

    pub fn department(&self, code: &str) -> Option<&DepartmentName> {
        self.departments.iter().find(|d| d.code == code)
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
            communities: Reference::communities_from_geojson(text).unwrap(),
            ..Reference::default()
        };
        assert_eq!(r.street_name("310199002"), Some("乙街道"));
        assert_eq!(r.street_name("310199003"), None);
        // The test features carry no community names.
        assert_eq!(r.community_name("310199001001"), None);
    }

    #[test]
    fn shipped_map_names_thirteen_streets() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/district/grids.geojson");
        let text = std::fs::read_to_string(&path).unwrap();
        let streets = Reference::streets_from_geojson(&text).unwrap();
        assert_eq!(streets.len(), 13, "{streets:?}");
        let communities = Reference::communities_from_geojson(&text).unwrap();
        assert!(
            communities.len() > streets.len(),
            "every street has communities: {}",
            communities.len()
        );
        assert!(communities.keys().all(|c| c.len() == 12));
    }
}
