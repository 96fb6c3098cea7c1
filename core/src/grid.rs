//! The 15-digit municipal unit-grid code: 6 digits administrative division (GB/T 2260),
//! 3 street (000–099 subdistrict 街道, 100–199 town 镇), 3 community, 3 grid sequence.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct GridCode([u8; 15]);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GridCodeError {
    #[error("grid code must be exactly 15 ASCII digits, got {0:?}")]
    Shape(String),
    #[error("street part {0} of grid code is outside 000–199")]
    Street(String),
}

impl GridCode {
    pub fn parse(s: &str) -> Result<Self, GridCodeError> {
        let bytes = s.as_bytes();
        if bytes.len() != 15 || !bytes.iter().all(u8::is_ascii_digit) {
            return Err(GridCodeError::Shape(s.chars().take(32).collect()));
        }
        let street = &s[6..9];
        if street.as_bytes()[0] > b'1' {
            return Err(GridCodeError::Street(street.to_owned()));
        }
        let mut code = [0u8; 15];
        code.copy_from_slice(bytes);
        Ok(Self(code))
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII digits are ever stored.
        std::str::from_utf8(&self.0).expect("grid codes are ASCII digits")
    }

    /// The 9-digit street office code (admin division + street).
    pub fn street_code(&self) -> &str {
        &self.as_str()[..9]
    }

    /// The 12-digit community code (street code + community).
    pub fn community_code(&self) -> &str {
        &self.as_str()[..12]
    }

    /// Whether the street is a town (镇, 100–199) rather than a subdistrict (街道, 000–099).
    pub fn is_town(&self) -> bool {
        self.0[6] == b'1'
    }
}

impl fmt::Display for GridCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<String> for GridCode {
    type Error = GridCodeError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<GridCode> for String {
    fn from(g: GridCode) -> Self {
        g.as_str().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_splits() {
        let g = GridCode::parse("310199003002017").unwrap();
        assert_eq!(g.street_code(), "310199003");
        assert_eq!(g.community_code(), "310199003002");
        assert!(!g.is_town());
        assert!(GridCode::parse("310199103002017").unwrap().is_town());
    }

    #[test]
    fn rejects_malformed() {
        assert!(matches!(
            GridCode::parse("31019900300201"),
            Err(GridCodeError::Shape(_))
        ));
        assert!(matches!(
            GridCode::parse("3101990030020171"),
            Err(GridCodeError::Shape(_))
        ));
        assert!(matches!(
            GridCode::parse("31019900300201a"),
            Err(GridCodeError::Shape(_))
        ));
        assert!(matches!(
            GridCode::parse("310199203002017"),
            Err(GridCodeError::Street(_))
        ));
        assert!(matches!(
            GridCode::parse("３10199003002017"),
            Err(GridCodeError::Shape(_))
        ));
    }

    #[test]
    fn serde_validates() {
        let g: GridCode = serde_json::from_str("\"310199003002017\"").unwrap();
        assert_eq!(serde_json::to_string(&g).unwrap(), "\"310199003002017\"");
        assert!(serde_json::from_str::<GridCode>("\"12\"").is_err());
    }
}
