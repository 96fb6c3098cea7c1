//! The municipal grid codes, one type each for the three levels of the district:
//! a 15-digit unit grid (单元网格), its 12-digit community (社区/村) and its 9-digit street office
//! (街道/镇). A grid code is 6 digits administrative division (GB/T 2260), 3 digits street
//! (000–099 街道, 100–199 镇), 3 digits community and 3 digits grid sequence; a community code is
//! its first 12 digits, a street code its first 9.
//!
//! The codes are parsed once, at the boundary (JSON, GeoJSON, query strings, config), and passed
//! as these types everywhere inside; they are `Copy` (fixed-size digit arrays).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a string is not a well-formed grid, community or street code.
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

fn check_digits<const N: usize>(s: &str) -> Result<[u8; N], CodeError> {
    let bytes = s.as_bytes();
    if bytes.len() != N {
        return Err(CodeError::WrongLength {
            expected: N,
            found: s.chars().count(),
        });
    }
    if !bytes.iter().all(u8::is_ascii_digit) {
        return Err(CodeError::NotDigits);
    }
    let street = part(bytes, 6..9);
    if street > 199 {
        return Err(CodeError::StreetOutOfRange(street));
    }
    let mut code = [0u8; N];
    code.copy_from_slice(bytes);
    Ok(code)
}

fn part(digits: &[u8], range: std::ops::Range<usize>) -> u16 {
    digits[range]
        .iter()
        .fold(0u16, |acc, b| acc * 10 + u16::from(b - b'0'))
}

/// The prefix of a validated code as a code of a coarser level (a prefix of a valid code is
/// valid: the street part is in every level's first 9 digits).
fn prefix<const N: usize, const M: usize>(digits: &[u8; N]) -> [u8; M] {
    let mut out = [0u8; M];
    out.copy_from_slice(&digits[..M]);
    out
}

macro_rules! code_type {
    ($(#[$doc:meta])* $name:ident, $len:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name([u8; $len]);

        impl $name {
            /// Number of digits in this kind of code.
            pub const LEN: usize = $len;

            /// Parses and checks a code: exactly the right number of ASCII digits and a
            /// street part (digits 7–9) in 000–199.
            pub fn parse(s: &str) -> Result<Self, CodeError> {
                check_digits::<$len>(s).map(Self)
            }

            /// The code as a string of digits.
            pub fn as_str(&self) -> &str {
                // Only validated ASCII digits are ever stored.
                std::str::from_utf8(&self.0).expect("codes are ASCII digits")
            }

            /// The 6-digit administrative division (GB/T 2260) the code starts with.
            pub fn admin_division(&self) -> &str {
                &self.as_str()[..6]
            }

            /// The 3-digit street number (000–099 街道, 100–199 镇).
            pub fn street_number(&self) -> u16 {
                part(&self.0, 6..9)
            }

            /// The street office code (first 9 digits).
            pub fn street_code(&self) -> StreetCode {
                StreetCode(prefix(&self.0))
            }

            /// Whether the code belongs to a 街道 (subdistrict) or a 镇 (town).
            pub fn street_kind(&self) -> StreetKind {
                StreetKind::from_number(self.street_number())
            }

            /// Whether the street is a town (镇, 100–199) rather than a subdistrict (街道).
            pub fn is_town(&self) -> bool {
                self.street_kind() == StreetKind::Town
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(self.as_str())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.as_str())
            }
        }

        impl TryFrom<String> for $name {
            type Error = CodeError;
            fn try_from(s: String) -> Result<Self, CodeError> {
                Self::parse(&s)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = CodeError;
            fn try_from(s: &str) -> Result<Self, CodeError> {
                Self::parse(s)
            }
        }

        impl From<$name> for String {
            fn from(c: $name) -> String {
                c.as_str().to_owned()
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
                self.as_str()
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
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
        CommunityCode(prefix(&self.0))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_splits() {
        let g = GridCode::parse("310199003002017").unwrap();
        assert_eq!(g.street_code().as_str(), "310199003");
        assert_eq!(g.community_code().as_str(), "310199003002");
        assert_eq!(g.community_code().street_code(), g.street_code());
        assert_eq!(g.admin_division(), "310199");
        assert_eq!(
            (g.street_number(), g.community_number(), g.seq()),
            (3, 2, 17)
        );
        assert!(!g.is_town());
        assert!(GridCode::parse("310199103002017").unwrap().is_town());
        assert_eq!(
            GridCode::from_parts("310199", 103, 2, 17).unwrap().as_str(),
            "310199103002017"
        );
    }

    #[test]
    fn rejects_malformed() {
        let err = |s: &str| GridCode::parse(s).unwrap_err();
        assert_eq!(
            err("31019900300201"),
            CodeError::WrongLength {
                expected: 15,
                found: 14
            }
        );
        assert_eq!(
            err("3101990030020171"),
            CodeError::WrongLength {
                expected: 15,
                found: 16
            }
        );
        assert_eq!(err("31019900300201a"), CodeError::NotDigits);
        assert_eq!(err("310199203002017"), CodeError::StreetOutOfRange(203));
        // A full-width digit is three bytes: 17 bytes, 15 characters.
        assert_eq!(
            err("３10199003002017"),
            CodeError::WrongLength {
                expected: 15,
                found: 15
            }
        );
        assert_eq!(
            StreetCode::parse("310199003002").unwrap_err(),
            CodeError::WrongLength {
                expected: 9,
                found: 12
            }
        );
        assert!(GridCode::from_parts("310199", 3, 1000, 1).is_err());
    }

    #[test]
    fn serde_validates() {
        let g: GridCode = serde_json::from_str("\"310199003002017\"").unwrap();
        assert_eq!(serde_json::to_string(&g).unwrap(), "\"310199003002017\"");
        assert!(serde_json::from_str::<GridCode>("\"12\"").is_err());
        let s: StreetCode = serde_json::from_str("\"310199003\"").unwrap();
        assert_eq!(s, "310199003");
    }
}
