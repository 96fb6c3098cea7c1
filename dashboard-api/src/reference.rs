//! Reference data the answers are labelled with: street and community names from the district
//! map, category and department names from the catalog.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use gridclue_core::codes::{CategoryCode, CommunityCode, DepartmentCode, StreetCode};
use gridclue_core::Catalog;
use gridclue_district::District;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Street {
    pub code: StreetCode,
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CategoryName {
    pub code: CategoryCode,
    pub name_zh: String,
    pub name_en: String,
}

/// A department's names, from the catalog.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DepartmentName {
    pub code: DepartmentCode,
    pub name_zh: String,
    pub name_en: String,
}

/// Streets (sorted by code), categories (catalog order), communities by code and departments
/// (catalog order).
#[derive(Clone, Debug, Default)]
pub struct Reference {
    pub streets: Vec<Street>,
    pub categories: Vec<CategoryName>,
    pub communities: BTreeMap<CommunityCode, String>,
    pub departments: Vec<DepartmentName>,
}

impl Reference {
    /// The map's streets, sorted by code.
    pub fn streets_of(district: &District) -> Vec<Street> {
        let mut streets: Vec<Street> = district
            .streets
            .iter()
            .map(|s| Street {
                code: s.code,
                name: s.name.clone(),
            })
            .collect();
        streets.sort_by_key(|s| s.code);
        streets
    }

    /// The map's community names by code.
    pub fn communities_of(district: &District) -> BTreeMap<CommunityCode, String> {
        district
            .communities
            .iter()
            .map(|c| (c.code, c.name.clone()))
            .collect()
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
                code: c.code.clone(),
                name_zh: c.name_zh.clone(),
                name_en: c.name_en.clone(),
            })
            .collect()
    }

    /// The names of the map's streets and communities and of the catalog's categories and
    /// departments.
    pub fn of(district: &District, catalog: &Catalog) -> Self {
        Self {
            streets: Self::streets_of(district),
            categories: Self::categories_from_catalog(catalog),
            communities: Self::communities_of(district),
            departments: Self::departments_from_catalog(catalog),
        }
    }

    /// Loads `<data_dir>/district/grids.geojson` and `<data_dir>/categories.json`.
    pub fn load(data_dir: &Path) -> anyhow::Result<Self> {
        let catalog = Catalog::load(&data_dir.join("categories.json"))?;
        Ok(Self::of(&load_district(data_dir)?, &catalog))
    }

    pub fn street_name(&self, code: &StreetCode) -> Option<&str> {
        self.streets
            .binary_search_by(|s| s.code.cmp(code))
            .ok()
            .map(|i| self.streets[i].name.as_str())
    }

    pub fn community_name(&self, code: &CommunityCode) -> Option<&str> {
        self.communities.get(code).map(String::as_str)
    }

    pub fn category(&self, code: &CategoryCode) -> Option<&CategoryName> {
        self.categories.iter().find(|c| c.code == *code)
    }

    pub fn department(&self, code: &DepartmentCode) -> Option<&DepartmentName> {
        self.departments.iter().find(|d| d.code == *code)
    }
}

/// Loads the district map, `<data_dir>/district/grids.geojson`.
pub fn load_district(data_dir: &Path) -> anyhow::Result<District> {
    let map = data_dir.join("district/grids.geojson");
    gridclue_district::load_geojson(&map)
        .with_context(|| format!("loading the district map {}", map.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use gridclue_district::Community;

    fn street(code: &str, name: &str) -> gridclue_district::Street {
        gridclue_district::Street {
            code: StreetCode::parse(code).unwrap(),
            name: name.into(),
        }
    }

    #[test]
    fn streets_and_communities_come_from_the_map() {
        let district = District {
            map_version: "test".into(),
            streets: vec![street("310199002", "乙街道"), street("310199001", "甲街道")],
            communities: vec![Community {
                code: CommunityCode::parse("310199001001").unwrap(),
                name: "兰城社区".into(),
                street_code: StreetCode::parse("310199001").unwrap(),
            }],
            grids: vec![],
            excluded: vec![],
        };
        let r = Reference {
            streets: Reference::streets_of(&district),
            communities: Reference::communities_of(&district),
            ..Reference::default()
        };
        assert_eq!(r.streets.len(), 2);
        assert_eq!(r.streets[0].code, "310199001", "sorted by code");
        let street_code = |code| StreetCode::parse(code).unwrap();
        let community_code = |code| CommunityCode::parse(code).unwrap();
        assert_eq!(r.street_name(&street_code("310199002")), Some("乙街道"));
        assert_eq!(r.street_name(&street_code("310199003")), None);
        assert_eq!(
            r.community_name(&community_code("310199001001")),
            Some("兰城社区")
        );
        assert_eq!(r.community_name(&community_code("310199002001")), None);
    }

    #[test]
    fn shipped_map_names_thirteen_streets() {
        let r = Reference::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../data")).unwrap();
        assert_eq!(r.streets.len(), 13, "{:?}", r.streets);
        assert!(
            r.communities.len() > r.streets.len(),
            "every street has communities: {}",
            r.communities.len()
        );
        assert!(r
            .communities
            .keys()
            .all(|c| r.street_name(&c.street_code()).is_some()));
    }
}
