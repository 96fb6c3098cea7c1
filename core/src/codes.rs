//! The domain's code vocabulary in one place — grid, community and street codes ([`crate::grid`]),
//! category and department codes ([`crate::category`]), an actor's scope (its street or its
//! department, [`crate::roles::ActorScope`]) — and the one serde adapter for a code
//! that may be absent where its column or field holds the empty string for "none" (a clue placed
//! outside the district has no street; a clue has no department before it is dispatched).
//!
//! Every code type is a plain string on the wire (`#[serde(try_from = "String", into =
//! "String")]`): JSON, the Kafka records and ClickHouse `String` columns (RowBinary) read and
//! write the same bytes as before the codes were typed.

pub use crate::category::{CategoryCode, DepartmentCode};
pub use crate::grid::{CodeError, CommunityCode, GridCode, StreetCode};
pub use crate::roles::ActorScope;

/// An optional code as written where `""` stands for none (SQL parameters, CSV cells).
pub fn or_empty<C: AsRef<str>>(code: &Option<C>) -> &str {
    code.as_ref().map_or("", AsRef::as_ref)
}

/// Serde for `Option<Code>` written as the code, or as `""` for `None`; reads `""` (and, with
/// `#[serde(default)]`, an absent field) as `None` and rejects a malformed code.
///
/// Use `#[serde(with = "gridclue_core::codes::empty_as_none")]`; for rows read back from
/// storage that must not fail on one bad value, [`empty_as_none::lenient`].
pub mod empty_as_none {
    use std::fmt::Display;
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    use crate::telemetry::WarningLimiter;

    /// The longest part of a malformed code a warning quotes.
    const QUOTED_CHARS: usize = 64;

    pub fn serialize<C, S>(code: &Option<C>, serializer: S) -> Result<S::Ok, S::Error>
    where
        C: AsRef<str>,
        S: Serializer,
    {
        serializer.serialize_str(super::or_empty(code))
    }

    pub fn deserialize<'de, C, D>(deserializer: D) -> Result<Option<C>, D::Error>
    where
        C: TryFrom<String>,
        C::Error: Display,
        D: Deserializer<'de>,
    {
        let s = String::deserialize(deserializer)?;
        if s.is_empty() {
            Ok(None)
        } else {
            C::try_from(s).map(Some).map_err(serde::de::Error::custom)
        }
    }

    /// How often a malformed code of one type is logged at most: a bad value is read with every
    /// row that holds it, so an endpoint reading many such rows would otherwise log a line for
    /// each of them on every request.
    const WARNING_PERIOD: Duration = Duration::from_secs(60);

    /// The warnings about malformed codes of the whole process, limited per code type.
    static MALFORMED_WARNINGS: WarningLimiter = WarningLimiter::new(WARNING_PERIOD);

    /// The code `s`, `None` when it is empty or malformed (the latter with a warning, at most
    /// one per code type in [`WARNING_PERIOD`]).
    fn well_formed<C>(s: String) -> Option<C>
    where
        C: TryFrom<String>,
        C::Error: Display,
    {
        if s.is_empty() {
            return None;
        }
        match C::try_from(s.clone()) {
            Ok(code) => Some(code),
            Err(error) => {
                let code_type = std::any::type_name::<C>();
                if let Some(suppressed) = MALFORMED_WARNINGS.admit(code_type) {
                    let quoted: String = s.chars().take(QUOTED_CHARS).collect();
                    tracing::warn!(
                        code_type,
                        value = %quoted,
                        %error,
                        suppressed,
                        "malformed code read as none (at most one warning per code type a \
                         minute; `suppressed`: the others of this type since the last warning)"
                    );
                }
                None
            }
        }
    }

    /// Reads a malformed code as `None` instead of failing, with a warning naming the code's
    /// type and quoting the value (codes are not personal data; at most one warning per type a
    /// minute). For rows read from ClickHouse to be shown: one bad value must not fail a whole
    /// page or endpoint.
    pub mod lenient {
        pub use super::serialize;

        use std::fmt::Display;

        use serde::{Deserialize, Deserializer};

        pub fn deserialize<'de, C, D>(deserializer: D) -> Result<Option<C>, D::Error>
        where
            C: TryFrom<String>,
            C::Error: Display,
            D: Deserializer<'de>,
        {
            String::deserialize(deserializer).map(super::well_formed)
        }

        /// Reads a list of codes leniently: a malformed one is left out with the same warning,
        /// `""` too (`#[serde(deserialize_with = "empty_as_none::lenient::each")]` on a
        /// `Vec<Code>`, which is written as its plain strings without an adapter).
        pub fn each<'de, C, D>(deserializer: D) -> Result<Vec<C>, D::Error>
        where
            C: TryFrom<String>,
            C::Error: Display,
            D: Deserializer<'de>,
        {
            let all = Vec::<String>::deserialize(deserializer)?;
            Ok(all.into_iter().filter_map(super::well_formed).collect())
        }

        /// Reads an optional code leniently where none is written as `null` or left out
        /// (`#[serde(default, deserialize_with = "empty_as_none::lenient::nullable")]` on an
        /// `Option<Code>` written without an adapter): for annotations that must not fail the
        /// record they are part of, such as an actor's scope on a fact.
        pub fn nullable<'de, C, D>(deserializer: D) -> Result<Option<C>, D::Error>
        where
            C: TryFrom<String>,
            C::Error: Display,
            D: Deserializer<'de>,
        {
            let code = Option::<String>::deserialize(deserializer)?;
            Ok(code.and_then(super::well_formed))
        }
    }
}

#[cfg(test)]
mod tests {

    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Strict {
        #[serde(default, with = "empty_as_none")]
        street: Option<StreetCode>,
        #[serde(default, with = "empty_as_none")]
        department: Option<DepartmentCode>,
        #[serde(default, with = "empty_as_none")]
        category: Option<CategoryCode>,
    }

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Lenient {
        #[serde(with = "empty_as_none::lenient")]
        grid: Option<GridCode>,
        #[serde(with = "empty_as_none::lenient")]
        department: Option<DepartmentCode>,
    }

    #[test]
    fn an_absent_code_is_written_and_read_as_empty() {
        let none = Strict {
            street: None,
            department: None,
            category: None,
        };
        let empty = r#"{"street":"","department":"","category":""}"#;
        assert_eq!(serde_json::to_string(&none).unwrap(), empty);
        assert_eq!(serde_json::from_str::<Strict>(empty).unwrap(), none);
        assert_eq!(serde_json::from_str::<Strict>("{}").unwrap(), none);
    }

    #[test]
    fn a_present_code_is_its_plain_string() {
        let text =
            r#"{"street":"310101001","department":"water_affairs","category":"garbage_pile"}"#;
        let some: Strict = serde_json::from_str(text).unwrap();
        assert_eq!(some.street.unwrap(), "310101001");
        assert_eq!(some.department.as_ref().unwrap(), "water_affairs");
        assert_eq!(some.category.as_ref().unwrap().as_str(), "garbage_pile");
        assert_eq!(serde_json::to_string(&some).unwrap(), text);
    }

    #[test]
    fn a_malformed_code_is_an_error_when_strict() {
        for bad in [
            r#"{"street":"31"}"#,
            r#"{"department":"Water Affairs"}"#,
            r#"{"category":"a-b"}"#,
        ] {
            assert!(serde_json::from_str::<Strict>(bad).is_err(), "{bad}");
        }
        let err = serde_json::from_str::<Strict>(r#"{"street":"31"}"#).unwrap_err();
        assert!(err.to_string().contains("expected 9 digits"), "{err}");
    }

    #[test]
    fn a_list_read_leniently_leaves_malformed_codes_out() {
        #[derive(Deserialize, Serialize)]
        struct Grids {
            #[serde(deserialize_with = "empty_as_none::lenient::each")]
            grids: Vec<GridCode>,
        }
        let read: Grids =
            serde_json::from_str(r#"{"grids":["310199003002017","","31x","310199003002018"]}"#)
                .unwrap();
        assert_eq!(
            serde_json::to_string(&read).unwrap(),
            r#"{"grids":["310199003002017","310199003002018"]}"#
        );
    }

    #[test]
    fn a_nullable_code_read_leniently_is_none_when_null_absent_or_malformed() {
        #[derive(Deserialize, Serialize, PartialEq, Debug)]
        struct Annotated {
            #[serde(
                default,
                deserialize_with = "empty_as_none::lenient::nullable",
                skip_serializing_if = "Option::is_none"
            )]
            scope: Option<ActorScope>,
        }
        let read = |text| serde_json::from_str::<Annotated>(text).unwrap().scope;
        assert_eq!(
            read(r#"{"scope":"water_affairs"}"#).unwrap(),
            ActorScope::parse("water_affairs").unwrap()
        );
        assert_eq!(read(r#"{"scope":null}"#), None);
        assert_eq!(read("{}"), None);
        assert_eq!(read(r#"{"scope":"310199999"}"#), None);
        let written = Annotated {
            scope: ActorScope::parse("310199001").ok(),
        };
        assert_eq!(
            serde_json::to_string(&written).unwrap(),
            r#"{"scope":"310199001"}"#
        );
        assert_eq!(
            serde_json::to_string(&Annotated { scope: None }).unwrap(),
            "{}"
        );
    }

    #[test]
    fn a_malformed_code_reads_as_none_when_lenient() {
        let row: Lenient =
            serde_json::from_str(r#"{"grid":"3101","department":"water_affairs"}"#).unwrap();
        assert_eq!(
            row,
            Lenient {
                grid: None,
                department: Some(DepartmentCode::parse("water_affairs").unwrap()),
            }
        );
        let row: Lenient =
            serde_json::from_str(r#"{"grid":"310199003002017","department":"Dept 2"}"#).unwrap();
        assert_eq!(row.grid.unwrap(), "310199003002017");
        assert_eq!(row.department, None);
        assert_eq!(
            serde_json::to_string(&Lenient {
                grid: None,
                department: None
            })
            .unwrap(),
            r#"{"grid":"","department":""}"#
        );
    }
}
