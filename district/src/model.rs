//! The typed district model: codes, streets, communities, grids and excluded areas.

use std::fmt;

use geo_types::Polygon;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Why a code string is not a well-formed grid, community or street code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodeError {
    /// The code has the wrong number of characters.
    #[error("expected {expected} digits, found {found} characters")]
    WrongLength {
        /// Digits a code of this kind has.
        expected: usize,
        /// Characters the input had.
        found: usize,
    },
    /// The code contains something other than ASCII digits.
    #[error("must be ASCII digits only")]
    NotDigits,
    /// The street part (digits 7–9) is above 199.
    #[error("street part {0:03} is outside 000–199 (000–099 街道, 100–199 镇)")]
    StreetOutOfRange(u16),
}

fn check_digits(s: &str, expected: usize) -> Result<(), CodeError> {
    if s.chars().count() != expected || s.len() != expected {
        return Err(CodeError::WrongLength {
            expected,
            found: s.chars().count(),
        });
    }
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CodeError::NotDigits);
    }
    let street: u16 = s[6..9].parse().map_err(|_| CodeError::NotDigits)?;
    if street > 199 {
        return Err(CodeError::StreetOutOfRange(street));
    }
    Ok(())
}

fn part(s: &str, range: std::ops::Range<usize>) -> u16 {
    // Only called on validated codes: every part is 3 ASCII digits.
    s.as_bytes()[range]
        .iter()
        .fold(0u16, |acc, b| acc * 10 + u16::from(b - b'0'))
}

macro_rules! code_type {
    ($(#[$doc:meta])* $name:ident, $len:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Number of digits in this kind of code.
            pub const LEN: usize = $len;

            /// Parses and checks a code: exactly the right number of ASCII digits and a
            /// street part (digits 7–9) in 000–199.
            pub fn parse(s: &str) -> Result<Self, CodeError> {
                check_digits(s, $len)?;
                Ok(Self(s.to_owned()))
            }

            /// The code as a string of digits.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The 6-digit administrative division (GB/T 2260) the code starts with.
            pub fn admin_division(&self) -> &str {
                &self.0[..6]
            }

            /// The 3-digit street number (000–099 街道, 100–199 镇).
            pub fn street_number(&self) -> u16 {
                part(&self.0, 6..9)
            }

            /// The street code (first 9 digits).
            pub fn street_code(&self) -> StreetCode {
                StreetCode(self.0[..9].to_owned())
            }

            /// Whether the code belongs to a 街道 (subdistrict) or a 镇 (town).
            pub fn street_kind(&self) -> StreetKind {
                StreetKind::from_number(self.street_number())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = CodeError;
            fn try_from(s: String) -> Result<Self, CodeError> {
                check_digits(&s, $len)?;
                Ok(Self(s))
            }
        }

        impl From<$name> for String {
            fn from(c: $name) -> String {
                c.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = CodeError;
            fn from_str(s: &str) -> Result<Self, CodeError> {
                Self::parse(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

code_type!(
    /// A 15-digit unit grid (单元网格) code: 6 digits administrative division, 3 digits
    /// street, 3 digits community, 3 digits grid sequence.
    GridCode,
    15
);
code_type!(
    /// A 12-digit community (社区/村) code: the first 12 digits of its grids' codes.
    CommunityCode,
    12
);
code_type!(
    /// A 9-digit street office (街道/镇) code: the first 9 digits of its grids' codes.
    StreetCode,
    9
);

impl GridCode {
    /// Builds a code from its parts; `admin_division` must be 6 digits, the numbers must fit
    /// in 3 digits and `street` must be at most 199.
    pub fn from_parts(
        admin_division: &str,
        street: u16,
        community: u16,
        seq: u16,
    ) -> Result<Self, CodeError> {
        if community > 999 || seq > 999 {
            return Err(CodeError::WrongLength {
                expected: 15,
                found: 16,
            });
        }
        Self::parse(&format!(
            "{admin_division}{street:03}{community:03}{seq:03}"
        ))
    }

    /// The community code (first 12 digits).
    pub fn community_code(&self) -> CommunityCode {
        CommunityCode(self.0[..12].to_owned())
    }

    /// The 3-digit community number inside the street.
    pub fn community_number(&self) -> u16 {
        part(&self.0, 9..12)
    }

    /// The 3-digit grid sequence number inside the community.
    pub fn seq(&self) -> u16 {
        part(&self.0, 12..15)
    }
}

impl CommunityCode {
    /// The 3-digit community number inside the street.
    pub fn community_number(&self) -> u16 {
        part(&self.0, 9..12)
    }
}

/// The two kinds of street-level offices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreetKind {
    /// 街道 (urban subdistrict), street numbers 000–099.
    Subdistrict,
    /// 镇 (town), street numbers 100–199.
    Town,
}

impl StreetKind {
    /// Kind of a street number: below 100 is a 街道, 100–199 a 镇.
    pub fn from_number(n: u16) -> Self {
        if n < 100 {
            StreetKind::Subdistrict
        } else {
            StreetKind::Town
        }
    }

    /// The Chinese suffix names of this kind end with.
    pub fn suffix(self) -> &'static str {
        match self {
            StreetKind::Subdistrict => "街道",
            StreetKind::Town => "镇",
        }
    }
}

impl fmt::Display for StreetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            StreetKind::Subdistrict => "subdistrict",
            StreetKind::Town => "town",
        })
    }
}

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
        self.streets.sort_by(|a, b| a.code.cmp(&b.code));
        self.communities.sort_by(|a, b| a.code.cmp(&b.code));
        self.grids.sort_by(|a, b| a.grid_code.cmp(&b.grid_code));
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
