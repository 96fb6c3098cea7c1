//! Category and department codes and the category catalog shipped in `data/categories.json`.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// A category code: a short ASCII slug such as `manhole_cover`, also the Open311 service code.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CategoryCode(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("category code must be 1–40 lowercase ASCII letters, digits or '_'")]
pub struct CategoryCodeError;

impl CategoryCode {
    pub fn parse(s: &str) -> Result<Self, CategoryCodeError> {
        let ok = !s.is_empty()
            && s.len() <= 40
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(CategoryCodeError)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CategoryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for CategoryCode {
    type Error = CategoryCodeError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<CategoryCode> for String {
    fn from(c: CategoryCode) -> Self {
        c.0
    }
}

impl TryFrom<&str> for CategoryCode {
    type Error = CategoryCodeError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::parse(s)
    }
}

impl std::str::FromStr for CategoryCode {
    type Err = CategoryCodeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl AsRef<str> for CategoryCode {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for CategoryCode {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for CategoryCode {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// A department code: a short ASCII slug such as `water_affairs`, naming a department
/// (职能部门) of the catalog. Clues are routed and dispatched to it and department tokens are
/// scoped to it; on the wire it is the plain string.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DepartmentCode(String);

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error(
    "department code must be 1–{} lowercase ASCII letters or '_'",
    DepartmentCode::MAX_LEN
)]
pub struct DepartmentCodeError;

impl DepartmentCode {
    /// The longest code accepted, in bytes.
    pub const MAX_LEN: usize = 64;

    pub fn parse(s: &str) -> Result<Self, DepartmentCodeError> {
        let ok = !s.is_empty()
            && s.len() <= Self::MAX_LEN
            && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(DepartmentCodeError)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DepartmentCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

impl TryFrom<String> for DepartmentCode {
    type Error = DepartmentCodeError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl TryFrom<&str> for DepartmentCode {
    type Error = DepartmentCodeError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::parse(s)
    }
}

impl std::str::FromStr for DepartmentCode {
    type Err = DepartmentCodeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl From<DepartmentCode> for String {
    fn from(c: DepartmentCode) -> Self {
        c.0
    }
}

impl AsRef<str> for DepartmentCode {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for DepartmentCode {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for DepartmentCode {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// 部件: city furniture and facilities.
    Component,
    /// 事件: events and behaviours.
    Event,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Urgency {
    Urgent,
    Normal,
    Low,
}

impl Urgency {
    pub fn as_str(self) -> &'static str {
        match self {
            Urgency::Urgent => "urgent",
            Urgency::Normal => "normal",
            Urgency::Low => "low",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadlineUnit {
    WorkingHours,
    WorkingDays,
}

/// A time limit counted in working time (see the calendar).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deadline {
    pub unit: DeadlineUnit,
    pub amount: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Department {
    pub code: DepartmentCode,
    pub name_zh: String,
    pub name_en: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Category {
    pub code: CategoryCode,
    #[serde(default)]
    pub standard_code: String,
    pub family: Family,
    pub name_zh: String,
    pub name_en: String,
    pub department: DepartmentCode,
    pub urgency: Urgency,
    pub deadline: Deadline,
    #[serde(default)]
    pub icon: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("cannot read category catalog {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("category catalog is not valid JSON of the expected shape: {0}")]
    Parse(#[from] serde_json::Error),
    #[error("category {category} names unknown department {department}")]
    UnknownDepartment {
        category: CategoryCode,
        department: DepartmentCode,
    },
    #[error("category code {0} appears twice")]
    DuplicateCode(CategoryCode),
}

#[derive(Deserialize)]
struct CatalogFile {
    departments: Vec<Department>,
    categories: Vec<Category>,
}

/// The categories and departments, in file order, with lookup by code.
#[derive(Clone, Debug)]
pub struct Catalog {
    categories: Vec<Category>,
    departments: Vec<Department>,
    by_code: HashMap<CategoryCode, usize>,
}

impl Catalog {
    pub fn load(path: &Path) -> Result<Self, CatalogError> {
        let text = std::fs::read_to_string(path).map_err(|source| CatalogError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_json(&text)
    }

    pub fn from_json(text: &str) -> Result<Self, CatalogError> {
        let file: CatalogFile = serde_json::from_str(text)?;
        let mut by_code = HashMap::new();
        for (i, c) in file.categories.iter().enumerate() {
            if !file.departments.iter().any(|d| d.code == c.department) {
                return Err(CatalogError::UnknownDepartment {
                    category: c.code.clone(),
                    department: c.department.clone(),
                });
            }
            if by_code.insert(c.code.clone(), i).is_some() {
                return Err(CatalogError::DuplicateCode(c.code.clone()));
            }
        }
        Ok(Self {
            categories: file.categories,
            departments: file.departments,
            by_code,
        })
    }

    pub fn categories(&self) -> &[Category] {
        &self.categories
    }

    pub fn departments(&self) -> &[Department] {
        &self.departments
    }

    pub fn get(&self, code: &str) -> Option<&Category> {
        let code = CategoryCode::parse(code).ok()?;
        self.by_code.get(&code).map(|&i| &self.categories[i])
    }

    pub fn department(&self, code: &str) -> Option<&Department> {
        self.departments.iter().find(|d| d.code == *code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"{"version":1,
      "departments":[{"code":"city_mgmt","name_zh":"城管","name_en":"City management"}],
      "categories":[{"code":"manhole_cover","family":"component","name_zh":"井盖破损",
        "name_en":"Damaged manhole cover","department":"city_mgmt","urgency":"urgent",
        "deadline":{"unit":"working_hours","amount":4}}]}"#;

    #[test]
    fn loads_and_looks_up() {
        let c = Catalog::from_json(SAMPLE).unwrap();
        assert_eq!(c.get("manhole_cover").unwrap().name_zh, "井盖破损");
        assert!(c.get("Manhole").is_none());
        assert!(c.get("garbage_pile").is_none());
    }

    #[test]
    fn rejects_unknown_department_and_duplicates() {
        let bad = SAMPLE.replace("\"department\":\"city_mgmt\"", "\"department\":\"nope\"");
        assert!(matches!(
            Catalog::from_json(&bad),
            Err(CatalogError::UnknownDepartment { .. })
        ));
        let malformed = SAMPLE.replace("\"department\":\"city_mgmt\"", "\"department\":\"City\"");
        assert!(matches!(
            Catalog::from_json(&malformed),
            Err(CatalogError::Parse(_))
        ));
        let cat = r#"{"code":"x","family":"event","name_zh":"a","name_en":"b","department":"city_mgmt","urgency":"low","deadline":{"unit":"working_days","amount":1}}"#;
        let dup = format!(
            r#"{{"departments":[{{"code":"city_mgmt","name_zh":"城管","name_en":"C"}}],"categories":[{cat},{cat}]}}"#
        );
        assert!(matches!(
            Catalog::from_json(&dup),
            Err(CatalogError::DuplicateCode(_))
        ));
    }

    #[test]
    fn shipped_catalog_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/categories.json");
        let c = Catalog::load(&path).unwrap();
        for code in ["manhole_cover", "garbage_pile", "food_safety"] {
            assert!(c.get(code).is_some(), "{code} missing");
        }
    }

    #[test]
    fn department_codes_are_lowercase_slugs() {
        for ok in ["water_affairs", "d", "fire_rescue", "_", &"a".repeat(64)] {
            let code = DepartmentCode::parse(ok).unwrap();
            assert_eq!(code.as_str(), ok);
            assert_eq!(code.to_string(), ok);
        }
        let too_long = "a".repeat(65);
        for bad in [
            "",
            too_long.as_str(),
            "Water_affairs",
            "water-affairs",
            "water affairs",
            "dept_2",
            "城管",
            "water_affairs\n",
        ] {
            assert_eq!(
                DepartmentCode::parse(bad),
                Err(DepartmentCodeError),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn department_codes_are_plain_strings_on_the_wire() {
        let code: DepartmentCode = serde_json::from_str(r#""urban_management""#).unwrap();
        assert_eq!(code, "urban_management");
        assert_eq!(
            serde_json::to_string(&code).unwrap(),
            r#""urban_management""#
        );
        let err = serde_json::from_str::<DepartmentCode>(r#""Urban""#).unwrap_err();
        assert!(err.to_string().contains("department code"), "{err}");
    }

    #[test]
    fn shipped_department_codes_parse() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/categories.json");
        let c = Catalog::load(&path).unwrap();
        let codes: Vec<&str> = c.departments().iter().map(|d| d.code.as_str()).collect();
        assert!(codes.contains(&"water_affairs"), "{codes:?}");
        assert_eq!(codes.len(), 9, "{codes:?}");
    }

    #[test]
    fn codes_are_validated() {
        assert!(CategoryCode::parse("food_safety").is_ok());
        assert!(CategoryCode::parse("Food").is_err());
        assert!(CategoryCode::parse("").is_err());
        assert!(CategoryCode::parse("a-b").is_err());
    }
}
