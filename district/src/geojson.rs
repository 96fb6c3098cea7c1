//! GeoJSON reading and writing.
//!
//! The file is a `FeatureCollection` with an optional foreign member `map_version` (string).
//! Grid features carry the properties `kind: "grid"`, `grid_code`, `community_code`,
//! `community_name`, `street_code` and `street_name`; excluded areas (lakes, ponds) carry
//! `kind: "excluded"` and `name` and no `grid_code`. Geometries are `Polygon`s (a
//! `MultiPolygon` with exactly one polygon is accepted too).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use geo_types::{Coord, LineString, Polygon};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::model::{
    CodeError, Community, CommunityCode, District, ExcludedArea, Grid, GridCode, Street, StreetCode,
};

/// What is wrong with one ring of a feature's polygon.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RingError {
    /// Fewer than 4 positions (a closed triangle needs 4).
    #[error("has {0} positions, a closed ring needs at least 4")]
    TooFewPositions(usize),
    /// The last position differs from the first.
    #[error("is not closed (last position differs from the first)")]
    NotClosed,
    /// A position with fewer than 2 numbers.
    #[error("position {0} has fewer than 2 numbers")]
    ShortPosition(usize),
    /// A coordinate outside lon −180…180 / lat −90…90.
    #[error("position {0} is outside WGS84 lon/lat range")]
    OutOfRange(usize),
}

/// Why one feature could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FeatureError {
    /// The feature is not valid JSON of the expected shape.
    #[error("malformed feature: {0}")]
    Malformed(String),
    /// `type` is not `"Feature"`.
    #[error("type must be \"Feature\", found {0:?}")]
    NotAFeature(String),
    /// A required property is missing (or null).
    #[error("missing property `{0}`")]
    MissingProperty(&'static str),
    /// A property has the wrong JSON type or is empty.
    #[error("property `{name}` must be {expected}")]
    PropertyType {
        /// Property name.
        name: &'static str,
        /// What it must be.
        expected: &'static str,
    },
    /// `kind` is neither `"grid"` nor `"excluded"`.
    #[error("unknown kind {0:?} (expected \"grid\" or \"excluded\")")]
    UnknownKind(String),
    /// A code property is not a well-formed code.
    #[error("property `{property}` = {value:?} is not a valid code: {source}")]
    BadCode {
        /// Property name.
        property: &'static str,
        /// The value found.
        value: String,
        /// What is wrong with it.
        source: CodeError,
    },
    /// `community_code`/`street_code` is not the prefix of `grid_code`.
    #[error("property `{property}` = {value:?} is not the prefix of grid_code {grid_code}")]
    PrefixMismatch {
        /// Property name.
        property: &'static str,
        /// The value found.
        value: String,
        /// The feature's grid code.
        grid_code: String,
    },
    /// An excluded area carries a grid code.
    #[error("an excluded area must not carry a grid_code")]
    ExcludedWithGridCode,
    /// No geometry.
    #[error("missing geometry")]
    MissingGeometry,
    /// A geometry other than Polygon (or single-part MultiPolygon).
    #[error("geometry type {0:?} is not supported (expected Polygon)")]
    UnsupportedGeometry(String),
    /// A MultiPolygon with other than exactly one part.
    #[error("MultiPolygon has {0} parts; a grid or excluded area must be one polygon")]
    MultiPart(usize),
    /// Coordinates that do not have the shape of a polygon.
    #[error("coordinates malformed: {0}")]
    Coordinates(String),
    /// A ring is broken.
    #[error("ring {ring} {error}")]
    Ring {
        /// 0 = exterior, 1.. = holes.
        ring: usize,
        /// What is wrong.
        error: RingError,
    },
}

/// Errors of loading or saving a district map.
#[derive(Debug, thiserror::Error)]
pub enum DistrictError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Reading or writing a stream failed.
    #[error("i/o error: {0}")]
    Stream(#[from] std::io::Error),
    /// The document is not JSON of the shape of a FeatureCollection.
    #[error("not a GeoJSON FeatureCollection: {0}")]
    Json(String),
    /// The top-level `type` is not `FeatureCollection`.
    #[error("top-level type must be \"FeatureCollection\", found {0:?}")]
    NotFeatureCollection(String),
    /// One feature is wrong.
    #[error("feature #{index} ({label}): {source}")]
    Feature {
        /// 0-based index in `features`.
        index: usize,
        /// The feature's grid code or name, when it has one.
        label: String,
        /// What is wrong.
        source: FeatureError,
    },
    /// Two features disagree about a community's or street's name.
    #[error("feature #{index}: {conflict}")]
    Conflict {
        /// 0-based index of the later feature.
        index: usize,
        /// The disagreement.
        conflict: NameConflict,
    },
    /// The district cannot be written (a grid references an unknown community or street, or a
    /// coordinate is not finite).
    #[error("cannot write district: {0}")]
    Unwritable(String),
}

/// Two features give different names to the same community or street.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{what} {code} is named {first:?} by an earlier feature but {second:?} here")]
pub struct NameConflict {
    /// `"community"` or `"street"`.
    pub what: &'static str,
    /// The community's or street's code.
    pub code: String,
    /// The name seen first.
    pub first: String,
    /// The conflicting name.
    pub second: String,
}

/// One successfully parsed feature.
#[derive(Debug, Clone)]
pub(crate) enum ParsedFeature {
    Grid {
        grid: Grid,
        community_name: String,
        street_name: String,
    },
    Excluded(ExcludedArea),
}

/// A parsed feature, or its label and error.
pub(crate) type FeatureResult = Result<ParsedFeature, (String, FeatureError)>;

/// The lenient parse of a document: every feature either parsed or with its error.
pub(crate) struct ParsedDocument {
    pub(crate) map_version: Option<String>,
    pub(crate) features: Vec<(usize, FeatureResult)>,
}

#[derive(Deserialize)]
struct RawCollection<'a> {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    map_version: Option<String>,
    #[serde(borrow)]
    features: Vec<&'a RawValue>,
}

#[derive(Deserialize)]
struct RawFeature<'a> {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    properties: Option<Map<String, Value>>,
    #[serde(borrow, default)]
    geometry: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct RawGeometry<'a> {
    #[serde(rename = "type")]
    kind: String,
    #[serde(borrow, default)]
    coordinates: Option<&'a RawValue>,
}

pub(crate) fn parse_document(text: &str) -> Result<ParsedDocument, DistrictError> {
    let raw: RawCollection<'_> =
        serde_json::from_str(text).map_err(|e| DistrictError::Json(e.to_string()))?;
    if raw.kind != "FeatureCollection" {
        return Err(DistrictError::NotFeatureCollection(raw.kind));
    }
    let features = raw
        .features
        .iter()
        .enumerate()
        .map(|(i, f)| (i, parse_feature(f.get())))
        .collect();
    Ok(ParsedDocument {
        map_version: raw.map_version,
        features,
    })
}

fn label_of(props: Option<&Map<String, Value>>) -> String {
    let get = |k: &str| props.and_then(|p| p.get(k)).and_then(Value::as_str);
    if let Some(code) = get("grid_code") {
        format!("grid {code}")
    } else if let Some(name) = get("name") {
        format!("excluded {name}")
    } else {
        "unlabelled".to_owned()
    }
}

fn parse_feature(text: &str) -> Result<ParsedFeature, (String, FeatureError)> {
    let raw: RawFeature<'_> = serde_json::from_str(text).map_err(|e| {
        (
            "unlabelled".to_owned(),
            FeatureError::Malformed(e.to_string()),
        )
    })?;
    let label = label_of(raw.properties.as_ref());
    parse_feature_inner(raw).map_err(|e| (label, e))
}

fn str_prop<'p>(
    props: &'p Map<String, Value>,
    name: &'static str,
) -> Result<&'p str, FeatureError> {
    match props.get(name) {
        None | Some(Value::Null) => Err(FeatureError::MissingProperty(name)),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s),
        Some(_) => Err(FeatureError::PropertyType {
            name,
            expected: "a non-empty string",
        }),
    }
}

fn parse_feature_inner(raw: RawFeature<'_>) -> Result<ParsedFeature, FeatureError> {
    if raw.kind != "Feature" {
        return Err(FeatureError::NotAFeature(raw.kind));
    }
    let empty = Map::new();
    let props = raw.properties.as_ref().unwrap_or(&empty);
    let kind = match props.get("kind") {
        None | Some(Value::Null) => {
            if props.contains_key("grid_code") {
                "grid"
            } else {
                return Err(FeatureError::MissingProperty("kind"));
            }
        }
        Some(Value::String(s)) => s.as_str(),
        Some(_) => {
            return Err(FeatureError::PropertyType {
                name: "kind",
                expected: "a string",
            })
        }
    };
    match kind {
        "grid" => {
            let code_s = str_prop(props, "grid_code")?;
            let grid_code = GridCode::parse(code_s).map_err(|source| FeatureError::BadCode {
                property: "grid_code",
                value: code_s.to_owned(),
                source,
            })?;
            let cc_s = str_prop(props, "community_code")?;
            let community_code =
                CommunityCode::parse(cc_s).map_err(|source| FeatureError::BadCode {
                    property: "community_code",
                    value: cc_s.to_owned(),
                    source,
                })?;
            if community_code != grid_code.community_code() {
                return Err(FeatureError::PrefixMismatch {
                    property: "community_code",
                    value: cc_s.to_owned(),
                    grid_code: code_s.to_owned(),
                });
            }
            let sc_s = str_prop(props, "street_code")?;
            let street_code = StreetCode::parse(sc_s).map_err(|source| FeatureError::BadCode {
                property: "street_code",
                value: sc_s.to_owned(),
                source,
            })?;
            if street_code != grid_code.street_code() {
                return Err(FeatureError::PrefixMismatch {
                    property: "street_code",
                    value: sc_s.to_owned(),
                    grid_code: code_s.to_owned(),
                });
            }
            let community_name = str_prop(props, "community_name")?.to_owned();
            let street_name = str_prop(props, "street_name")?.to_owned();
            let polygon = parse_geometry(raw.geometry)?;
            Ok(ParsedFeature::Grid {
                grid: Grid {
                    grid_code,
                    community_code,
                    street_code,
                    polygon,
                },
                community_name,
                street_name,
            })
        }
        "excluded" => {
            if matches!(props.get("grid_code"), Some(v) if !v.is_null()) {
                return Err(FeatureError::ExcludedWithGridCode);
            }
            let name = str_prop(props, "name")?.to_owned();
            let polygon = parse_geometry(raw.geometry)?;
            Ok(ParsedFeature::Excluded(ExcludedArea { name, polygon }))
        }
        other => Err(FeatureError::UnknownKind(other.to_owned())),
    }
}

type RawPolygon = Vec<Vec<Vec<f64>>>;

fn parse_geometry(geometry: Option<&RawValue>) -> Result<Polygon<f64>, FeatureError> {
    let geometry = match geometry {
        Some(g) if g.get() != "null" => g,
        _ => return Err(FeatureError::MissingGeometry),
    };
    let g: RawGeometry<'_> = serde_json::from_str(geometry.get())
        .map_err(|e| FeatureError::Coordinates(e.to_string()))?;
    let coords = g
        .coordinates
        .ok_or_else(|| FeatureError::Coordinates("missing `coordinates`".to_owned()))?;
    let rings: RawPolygon = match g.kind.as_str() {
        "Polygon" => serde_json::from_str(coords.get())
            .map_err(|e| FeatureError::Coordinates(e.to_string()))?,
        "MultiPolygon" => {
            let mut parts: Vec<RawPolygon> = serde_json::from_str(coords.get())
                .map_err(|e| FeatureError::Coordinates(e.to_string()))?;
            if parts.len() != 1 {
                return Err(FeatureError::MultiPart(parts.len()));
            }
            parts.remove(0)
        }
        other => return Err(FeatureError::UnsupportedGeometry(other.to_owned())),
    };
    if rings.is_empty() {
        return Err(FeatureError::Coordinates("polygon has no rings".to_owned()));
    }
    let mut out = Vec::with_capacity(rings.len());
    for (ri, ring) in rings.into_iter().enumerate() {
        let err = |error| FeatureError::Ring { ring: ri, error };
        if ring.len() < 4 {
            return Err(err(RingError::TooFewPositions(ring.len())));
        }
        let mut pts = Vec::with_capacity(ring.len());
        for (pi, p) in ring.iter().enumerate() {
            if p.len() < 2 {
                return Err(err(RingError::ShortPosition(pi)));
            }
            let (x, y) = (p[0], p[1]);
            if !(-180.0..=180.0).contains(&x) || !(-90.0..=90.0).contains(&y) {
                return Err(err(RingError::OutOfRange(pi)));
            }
            pts.push(Coord { x, y });
        }
        if pts.first() != pts.last() {
            return Err(err(RingError::NotClosed));
        }
        out.push(LineString(pts));
    }
    let exterior = out.remove(0);
    Ok(Polygon::new(exterior, out))
}

/// Builds a district from parsed features. Name conflicts are returned next to the district
/// (the first name wins).
pub(crate) fn assemble(
    features: Vec<(usize, ParsedFeature)>,
    map_version: Option<String>,
) -> (District, Vec<(usize, NameConflict)>) {
    let mut streets: BTreeMap<StreetCode, String> = BTreeMap::new();
    let mut communities: BTreeMap<CommunityCode, String> = BTreeMap::new();
    let mut grids = Vec::new();
    let mut excluded = Vec::new();
    let mut conflicts = Vec::new();
    for (index, f) in features {
        match f {
            ParsedFeature::Grid {
                grid,
                community_name,
                street_name,
            } => {
                let mut note = |what, code: String, first: &String, second: String| {
                    if *first != second {
                        conflicts.push((
                            index,
                            NameConflict {
                                what,
                                code,
                                first: first.clone(),
                                second,
                            },
                        ));
                    }
                };
                let s = streets
                    .entry(grid.street_code)
                    .or_insert_with(|| street_name.clone());
                note("street", grid.street_code.to_string(), s, street_name);
                let c = communities
                    .entry(grid.community_code)
                    .or_insert_with(|| community_name.clone());
                note(
                    "community",
                    grid.community_code.to_string(),
                    c,
                    community_name,
                );
                grids.push(grid);
            }
            ParsedFeature::Excluded(e) => excluded.push(e),
        }
    }
    let mut district = District {
        map_version: String::new(),
        streets: streets
            .into_iter()
            .map(|(code, name)| Street { code, name })
            .collect(),
        communities: communities
            .into_iter()
            .map(|(code, name)| Community {
                street_code: code.street_code(),
                code,
                name,
            })
            .collect(),
        grids,
        excluded,
    };
    district.sort();
    district.map_version = map_version.unwrap_or_else(|| district.content_hash());
    (district, conflicts)
}

/// Parses a GeoJSON document strictly: the first bad feature or name conflict is an error.
pub fn parse_geojson(text: &str) -> Result<District, DistrictError> {
    let doc = parse_document(text)?;
    let mut ok = Vec::with_capacity(doc.features.len());
    for (index, f) in doc.features {
        match f {
            Ok(f) => ok.push((index, f)),
            Err((label, source)) => {
                return Err(DistrictError::Feature {
                    index,
                    label,
                    source,
                })
            }
        }
    }
    let (district, conflicts) = assemble(ok, doc.map_version);
    if let Some((index, conflict)) = conflicts.into_iter().next() {
        return Err(DistrictError::Conflict { index, conflict });
    }
    Ok(district)
}

/// Reads a GeoJSON document from a reader (see [`parse_geojson`]).
pub fn read_geojson<R: Read>(mut reader: R) -> Result<District, DistrictError> {
    let mut text = String::new();
    reader.read_to_string(&mut text)?;
    parse_geojson(&text)
}

/// Loads a GeoJSON file (see [`parse_geojson`]).
pub fn load_geojson(path: impl AsRef<Path>) -> Result<District, DistrictError> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|source| DistrictError::Io {
        path: path.to_owned(),
        source,
    })?;
    parse_geojson(&text)
}

fn push_json_str(out: &mut String, s: &str) {
    // serde_json escapes exactly as JSON requires; writing to a String cannot fail.
    out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned()));
}

fn push_polygon(out: &mut String, p: &Polygon<f64>) -> Result<(), DistrictError> {
    out.push_str("{\"type\":\"Polygon\",\"coordinates\":[");
    for (ri, ring) in std::iter::once(p.exterior())
        .chain(p.interiors())
        .enumerate()
    {
        if ri > 0 {
            out.push(',');
        }
        out.push('[');
        for (i, c) in ring.0.iter().enumerate() {
            if !c.x.is_finite() || !c.y.is_finite() {
                return Err(DistrictError::Unwritable(
                    "non-finite coordinate".to_owned(),
                ));
            }
            if i > 0 {
                out.push(',');
            }
            // `Display` for f64 prints the shortest string that reads back to the same bits,
            // so shared vertices stay bit-identical through a save/load cycle.
            let _ = write!(out, "[{},{}]", c.x + 0.0, c.y + 0.0);
        }
        out.push(']');
    }
    out.push_str("]}");
    Ok(())
}

/// Serializes a district to a GeoJSON string (one feature per line; grids in the order of
/// `district.grids`, then excluded areas).
pub fn to_geojson_string(district: &District) -> Result<String, DistrictError> {
    let streets: BTreeMap<&StreetCode, &Street> =
        district.streets.iter().map(|s| (&s.code, s)).collect();
    let communities: BTreeMap<&CommunityCode, &Community> =
        district.communities.iter().map(|c| (&c.code, c)).collect();
    let mut out = String::with_capacity(district.grids.len() * 2600 + 256);
    out.push_str("{\"type\":\"FeatureCollection\",\"map_version\":");
    push_json_str(&mut out, &district.map_version);
    out.push_str(",\"features\":[");
    let mut first = true;
    for g in &district.grids {
        let c = communities.get(&g.community_code).ok_or_else(|| {
            DistrictError::Unwritable(format!(
                "grid {} references unknown community {}",
                g.grid_code, g.community_code
            ))
        })?;
        let s = streets.get(&g.street_code).ok_or_else(|| {
            DistrictError::Unwritable(format!(
                "grid {} references unknown street {}",
                g.grid_code, g.street_code
            ))
        })?;
        out.push_str(if first { "\n" } else { ",\n" });
        first = false;
        let _ = write!(
            out,
            "{{\"type\":\"Feature\",\"id\":\"{code}\",\"properties\":{{\"kind\":\"grid\",\
             \"grid_code\":\"{code}\",\"community_code\":\"{cc}\",\"community_name\":",
            code = g.grid_code,
            cc = g.community_code
        );
        push_json_str(&mut out, &c.name);
        let _ = write!(
            out,
            ",\"street_code\":\"{}\",\"street_name\":",
            g.street_code
        );
        push_json_str(&mut out, &s.name);
        out.push_str("},\"geometry\":");
        push_polygon(&mut out, &g.polygon)?;
        out.push('}');
    }
    for e in &district.excluded {
        out.push_str(if first { "\n" } else { ",\n" });
        first = false;
        out.push_str("{\"type\":\"Feature\",\"properties\":{\"kind\":\"excluded\",\"name\":");
        push_json_str(&mut out, &e.name);
        out.push_str("},\"geometry\":");
        push_polygon(&mut out, &e.polygon)?;
        out.push('}');
    }
    out.push_str("\n]}\n");
    Ok(out)
}

/// Writes a district as GeoJSON to a writer.
pub fn write_geojson<W: Write>(district: &District, mut writer: W) -> Result<(), DistrictError> {
    let s = to_geojson_string(district)?;
    writer.write_all(s.as_bytes())?;
    writer.flush()?;
    Ok(())
}

/// Saves a district as a GeoJSON file (creating parent directories).
pub fn save_geojson(district: &District, path: impl AsRef<Path>) -> Result<(), DistrictError> {
    let path = path.as_ref();
    let io = |source| DistrictError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let s = to_geojson_string(district)?;
    std::fs::write(path, s).map_err(io)
}
