//! The typed district model: codes, streets, communities, grids and excluded areas.

use geo_types::Polygon;
use sha2::{Digest, Sha256};

pub use gridclue_core::grid::{CodeError, CommunityCode, GridCode, StreetCode, StreetKind};

/// A street office (街道 or 镇).
#[derive(Debug, Clone, PartialEq)]
pub struct Street {
    /// 9-digit code.
    pub code: StreetCode,
    /// Chinese name, ending in 街道 or 镇.
    pub name: String,
}

impl Street {
    /// 街道 or 镇, from the code.
    pub fn kind(&self) -> StreetKind {
        self.code.street_kind()
    }
}

/// A community (社区) or village (村).
#[derive(Debug, Clone, PartialEq)]
pub struct Community {
    /// 12-digit code.
    pub code: CommunityCode,
    /// Chinese name, ending in 社区 or 村.
    pub name: String,
    /// The street the community belongs to (the first 9 digits of `code`).
    pub street_code: StreetCode,
}

/// A unit grid (单元网格): the smallest area a clue is assigned to.
#[derive(Debug, Clone, PartialEq)]
pub struct Grid {
    /// 15-digit code.
    pub grid_code: GridCode,
    /// The grid's community (first 12 digits of `grid_code`).
    pub community_code: CommunityCode,
    /// The grid's street (first 9 digits of `grid_code`).
    pub street_code: StreetCode,
    /// WGS84 lon/lat polygon; exterior counter-clockwise, holes clockwise (RFC 7946).
    pub polygon: Polygon<f64>,
}

/// An area inside the district that belongs to no grid (a lake, a pond); declared so that the
/// partition check knows the hole is intended.
#[derive(Debug, Clone, PartialEq)]
pub struct ExcludedArea {
    /// Chinese name, e.g. …湖.
    pub name: String,
    /// WGS84 lon/lat polygon.
    pub polygon: Polygon<f64>,
}

/// A whole district map.
#[derive(Debug, Clone, PartialEq)]
pub struct District {
    /// Version stamped on every enriched clue; from the file's `map_version` member or, when
    /// absent, [`District::content_hash`].
    pub map_version: String,
    /// Street offices, sorted by code.
    pub streets: Vec<Street>,
    /// Communities, sorted by code.
    pub communities: Vec<Community>,
    /// Unit grids, sorted by code.
    pub grids: Vec<Grid>,
    /// Areas inside the district that belong to no grid.
    pub excluded: Vec<ExcludedArea>,
}

impl District {
    /// A version string derived from the content (codes, names and every coordinate's bits):
    /// `sha256-` followed by 16 hex digits. Equal content gives an equal version, whatever the
    /// file formatting was.
    pub fn content_hash(&self) -> String {
        let mut h = Sha256::new();
        for s in &self.streets {
            h.update(b"S");
            h.update(s.code.as_str());
            h.update(s.name.as_bytes());
            h.update([0]);
        }
        for c in &self.communities {
            h.update(b"C");
            h.update(c.code.as_str());
            h.update(c.street_code.as_str());
            h.update(c.name.as_bytes());
            h.update([0]);
        }
        for g in &self.grids {
            h.update(b"G");
            h.update(g.grid_code.as_str());
            h.update(g.community_code.as_str());
            h.update(g.street_code.as_str());
            hash_polygon(&mut h, &g.polygon);
        }
        for e in &self.excluded {
            h.update(b"X");
            h.update(e.name.as_bytes());
            h.update([0]);
            hash_polygon(&mut h, &e.polygon);
        }
        let digest = h.finalize();
        format!("sha256-{}", hex::encode(&digest[..8]))
    }

    /// The street with this code.
    pub fn street(&self, code: &StreetCode) -> Option<&Street> {
        self.streets
            .binary_search_by(|s| s.code.cmp(code))
            .ok()
            .map(|i| &self.streets[i])
            .or_else(|| self.streets.iter().find(|s| &s.code == code))
    }

    /// The community with this code.
    pub fn community(&self, code: &CommunityCode) -> Option<&Community> {
        self.communities
            .binary_search_by(|c| c.code.cmp(code))
            .ok()
            .map(|i| &self.communities[i])
            .or_else(|| self.communities.iter().find(|c| &c.code == code))
    }

    /// The grid with this code.
    pub fn grid(&self, code: &GridCode) -> Option<&Grid> {
        self.grids
            .binary_search_by(|g| g.grid_code.cmp(code))
            .ok()
            .map(|i| &self.grids[i])
            .or_else(|| self.grids.iter().find(|g| &g.grid_code == code))
    }

    /// Sorts streets, communities and grids by code (the order the loader and the generator
    /// produce, and the one the lookups are fastest on).
    pub fn sort(&mut self) {
        self.streets.sort_by_key(|a| a.code);
        self.communities.sort_by_key(|a| a.code);
        self.grids.sort_by_key(|a| a.grid_code);
    }
}

fn hash_polygon(h: &mut Sha256, p: &Polygon<f64>) {
    for ring in std::iter::once(p.exterior()).chain(p.interiors()) {
        h.update(b"R");
        h.update((ring.0.len() as u64).to_le_bytes());
        for c in &ring.0 {
            h.update(c.x.to_bits().to_le_bytes());
            h.update(c.y.to_bits().to_le_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_code_parts() {
        let g = GridCode::parse("310199101004012").unwrap();
        assert_eq!(g.admin_division(), "310199");
        assert_eq!(g.street_code().as_str(), "310199101");
        assert_eq!(g.community_code().as_str(), "310199101004");
        assert_eq!(g.street_number(), 101);
        assert_eq!(g.community_number(), 4);
        assert_eq!(g.seq(), 12);
        assert_eq!(g.street_kind(), StreetKind::Town);
        assert_eq!(
            GridCode::from_parts("310199", 3, 2, 1).unwrap().as_str(),
            "310199003002001"
        );
    }

    #[test]
    fn grid_code_rejects_malformed() {
        assert_eq!(
            GridCode::parse("31019910100401"),
            Err(CodeError::WrongLength {
                expected: 15,
                found: 14
            })
        );
        assert_eq!(
            GridCode::parse("31019910100401x"),
            Err(CodeError::NotDigits)
        );
        assert_eq!(
            GridCode::parse("310199201004012"),
            Err(CodeError::StreetOutOfRange(201))
        );
        assert!(GridCode::parse("３１０199101004012").is_err());
        assert!(StreetCode::parse("310199099").is_ok());
        assert!(CommunityCode::parse("310199099001").is_ok());
    }

    #[test]
    fn codes_serialize_as_strings() {
        let g = GridCode::parse("310199001002003").unwrap();
        let json = serde_json::to_string(&g).unwrap();
        assert_eq!(json, "\"310199001002003\"");
        let back: GridCode = serde_json::from_str(&json).unwrap();
        assert_eq!(back, g);
        assert!(serde_json::from_str::<GridCode>("\"12\"").is_err());
    }
}
