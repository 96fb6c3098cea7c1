//! The web dashboard at `/dashboard`: its page, script and style and the vendored Apache ECharts
//! are embedded in the binary (no network needed at run time, nothing to install beside it), and
//! `/dashboard/map.json` is the district map prepared for drawing — the grids as GeoJSON
//! (ECharts `registerMap`) plus every street's outline and label point, computed once at start.
//!
//! The page reads the same JSON API as everyone else with the bearer token the user signs in
//! with (kept in the tab's `sessionStorage`, sent in the `Authorization` header, never in a URL).
//! Everything served here is public: the page and the map carry no statistics.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use geo_types::{Coord, LineString, Polygon};
use gridclue_core::codes::{CommunityCode, GridCode, StreetCode};
use gridclue_district::{District, Street};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::{ApiError, AppState};

/// No inline script and no script from elsewhere. Inline *styles* are allowed because ECharts
/// writes its tooltips as HTML with `style` attributes.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; connect-src 'self'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// An embedded file: where it is served, its bytes, its type, and how long browsers keep it.
struct Asset {
    path: &'static str,
    body: &'static [u8],
    content_type: &'static str,
    cache_control: &'static str,
}

const JAVASCRIPT: &str = "text/javascript; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

/// The page's own files are revalidated (cheap with the ETag), so a new release is picked up
/// at the next load.
const REVALIDATE: &str = "no-cache";
/// The vendored ECharts: its directory's name carries the version, so the file behind a URL
/// never changes and browsers may keep it.
const FOREVER: &str = "public, max-age=31536000, immutable";

/// `embedded!(path under assets/, content type, cache policy)`.
macro_rules! embedded {
    ($path:literal, $content_type:expr, $cache_control:expr) => {
        Asset {
            path: $path,
            body: include_bytes!(concat!("../assets/", $path)),
            content_type: $content_type,
            cache_control: $cache_control,
        }
    };
}

/// The page, served at `/dashboard` (not under `assets/`).
static INDEX: Asset = embedded!("index.html", "text/html; charset=utf-8", REVALIDATE);

/// What `/dashboard/assets/{path}` serves.
static ASSETS: &[Asset] = &[
    embedded!("dashboard.js", JAVASCRIPT, REVALIDATE),
    embedded!("dashboard.css", "text/css; charset=utf-8", REVALIDATE),
    embedded!("echarts-6.1.0/echarts.min.js", JAVASCRIPT, FOREVER),
    embedded!("echarts-6.1.0/LICENSE", TEXT, FOREVER),
    embedded!("echarts-6.1.0/NOTICE", TEXT, FOREVER),
    embedded!("echarts-6.1.0/LICENSE-d3", TEXT, FOREVER),
    embedded!("echarts-6.1.0/README.md", TEXT, FOREVER),
];

/// Strong ETags of the embedded files, by path.
static ETAGS: LazyLock<HashMap<&'static str, HeaderValue>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .chain([&INDEX])
        .map(|a| (a.path, etag_of(a.body)))
        .collect()
});

fn etag_of(body: &[u8]) -> HeaderValue {
    let digest = Sha256::digest(body);
    HeaderValue::from_str(&format!("\"{}\"", hex::encode(&digest[..12])))
        .expect("hex is a valid header value")
}

/// The dashboard's routes (merged into [`crate::app`]).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/dashboard", get(index))
        .route("/dashboard/", get(index))
        .route("/dashboard/map.json", get(district_map))
        .route("/dashboard/assets/{*path}", get(asset))
}

/// Headers every dashboard response carries.
fn secure(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// `body` with its type, cache policy and ETag; `304 Not Modified` when the client holds it.
fn cached(
    request: &HeaderMap,
    body: Bytes,
    content_type: &'static str,
    cache_control: &'static str,
    etag: &HeaderValue,
) -> Response {
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = body.into_response();
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        r
    };
    let h = response.headers_mut();
    h.insert(header::ETAG, etag.clone());
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(cache_control),
    );
    secure(response)
}

fn embedded(asset: &'static Asset, request: &HeaderMap) -> Response {
    cached(
        request,
        Bytes::from_static(asset.body),
        asset.content_type,
        asset.cache_control,
        &ETAGS[asset.path],
    )
}

async fn index(headers: HeaderMap) -> Response {
    embedded(&INDEX, &headers)
}

async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().find(|a| a.path == path) {
        Some(asset) => embedded(asset, &headers),
        None => secure(ApiError::NotFound(format!("no dashboard asset {path:?}")).into_response()),
    }
}

async fn district_map(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match &state.district_map {
        Some(map) => cached(
            &headers,
            map.body.clone(),
            "application/json",
            "no-cache",
            &map.etag,
        ),
        None => secure(
            ApiError::NotFound("this server has no district map loaded".into()).into_response(),
        ),
    }
}

/// The district map as the dashboard draws it, serialised once.
#[derive(Clone, Debug)]
pub struct DistrictMap {
    body: Bytes,
    etag: HeaderValue,
    /// Streets found, for logging and tests.
    pub streets: usize,
}

#[derive(Serialize)]
struct MapDocument<'a> {
    map_version: &'a str,
    /// GeoJSON for ECharts `registerMap`: every feature's `properties.name` is its region name —
    /// the grid code for grids, the name for excluded areas (lakes), which carry `kind`.
    geojson: FeatureCollection<'a>,
    streets: Vec<StreetShape>,
}

#[derive(Serialize)]
struct FeatureCollection<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    features: Vec<Feature<'a>>,
}

#[derive(Serialize)]
struct Feature<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    properties: RegionProperties<'a>,
    geometry: PolygonGeometry,
}

impl<'a> Feature<'a> {
    fn new(properties: RegionProperties<'a>, polygon: &Polygon<f64>) -> Self {
        Self {
            kind: "Feature",
            properties,
            geometry: PolygonGeometry {
                kind: "Polygon",
                coordinates: rings(polygon)
                    .map(|ring| ring.coords().map(|c| [c.x, c.y]).collect())
                    .collect(),
            },
        }
    }
}

#[derive(Serialize)]
#[serde(untagged)]
enum RegionProperties<'a> {
    Grid {
        name: GridCode,
        street_code: StreetCode,
        community_code: CommunityCode,
        /// `null` only for a district assembled without the grid's community (a loaded map
        /// always has it).
        community_name: Option<&'a str>,
    },
    Excluded {
        name: &'a str,
        kind: &'static str,
    },
}

#[derive(Serialize)]
struct PolygonGeometry {
    #[serde(rename = "type")]
    kind: &'static str,
    coordinates: Vec<Vec<[f64; 2]>>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StreetShape {
    pub code: StreetCode,
    pub name: String,
    /// A label point inside the street: the centre of its grid nearest the mean of its grids'.
    pub center: [f64; 2],
    /// The street's outline as polylines (outer boundary and borders with other streets).
    pub outline: Vec<Vec<[f64; 2]>>,
}

/// The exterior ring, then the holes.
fn rings(polygon: &Polygon<f64>) -> impl Iterator<Item = &LineString<f64>> {
    std::iter::once(polygon.exterior()).chain(polygon.interiors())
}

/// A vertex, compared bit for bit (neighbouring grids share identical vertices).
type Vertex = (u64, u64);

fn vertex(c: Coord<f64>) -> Vertex {
    (c.x.to_bits(), c.y.to_bits())
}

fn position((x, y): Vertex) -> [f64; 2] {
    [f64::from_bits(x), f64::from_bits(y)]
}

/// The directed edges of one street's grids and their centres.
#[derive(Default)]
struct StreetEdges {
    edges: HashSet<(Vertex, Vertex)>,
    grid_centres: Vec<[f64; 2]>,
}

impl StreetEdges {
    fn add_grid(&mut self, polygon: &Polygon<f64>) {
        let exterior = &polygon.exterior().0;
        if !exterior.is_empty() {
            let n = exterior.len() as f64;
            let sum = exterior
                .iter()
                .fold([0.0, 0.0], |s, c| [s[0] + c.x, s[1] + c.y]);
            self.grid_centres.push([sum[0] / n, sum[1] / n]);
        }
        for ring in rings(polygon) {
            for pair in ring.0.windows(2) {
                self.edges.insert((vertex(pair[0]), vertex(pair[1])));
            }
        }
    }
}

impl DistrictMap {
    /// Prepares the district for drawing: its grids and excluded areas as GeoJSON regions, and
    /// every street's outline and label point.
    pub fn new(district: &District) -> anyhow::Result<Self> {
        let mut features = Vec::with_capacity(district.grids.len() + district.excluded.len());
        let mut edges: HashMap<StreetCode, StreetEdges> = HashMap::new();
        for grid in &district.grids {
            edges
                .entry(grid.street_code)
                .or_default()
                .add_grid(&grid.polygon);
            let community = district.community(&grid.community_code);
            let properties = RegionProperties::Grid {
                name: grid.grid_code,
                street_code: grid.street_code,
                community_code: grid.community_code,
                community_name: community.map(|c| c.name.as_str()),
            };
            features.push(Feature::new(properties, &grid.polygon));
        }
        for area in &district.excluded {
            let properties = RegionProperties::Excluded {
                name: &area.name,
                kind: "excluded",
            };
            features.push(Feature::new(properties, &area.polygon));
        }
        let streets: Vec<StreetShape> = district
            .streets
            .iter()
            .map(|s| street_shape(s, edges.remove(&s.code).unwrap_or_default()))
            .collect();
        let document = MapDocument {
            map_version: &district.map_version,
            geojson: FeatureCollection {
                kind: "FeatureCollection",
                features,
            },
            streets,
        };
        let body = serde_json::to_vec(&document)?;
        Ok(Self {
            etag: etag_of(&body),
            streets: document.streets.len(),
            body: Bytes::from(body),
        })
    }
}

/// The outline of a street: its grids' edges that no other grid of the same street shares
/// (a shared edge runs the other way round in the neighbour), chained into polylines.
fn street_shape(street: &Street, s: StreetEdges) -> StreetShape {
    let mut next: HashMap<Vertex, Vec<Vertex>> = HashMap::new();
    for &(a, b) in &s.edges {
        if !s.edges.contains(&(b, a)) {
            next.entry(a).or_default().push(b);
        }
    }
    for targets in next.values_mut() {
        targets.sort_unstable();
    }
    let mut starts: Vec<Vertex> = next.keys().copied().collect();
    starts.sort_unstable();
    let mut outline = Vec::new();
    for start in starts {
        while let Some(mut at) = next.get_mut(&start).and_then(Vec::pop) {
            let mut line = vec![position(start), position(at)];
            while let Some(to) = next.get_mut(&at).and_then(Vec::pop) {
                line.push(position(to));
                at = to;
            }
            outline.push(line);
        }
    }
    let n = s.grid_centres.len().max(1) as f64;
    let mean = s
        .grid_centres
        .iter()
        .fold([0.0, 0.0], |m, c| [m[0] + c[0] / n, m[1] + c[1] / n]);
    let distance = |c: &[f64; 2]| (c[0] - mean[0]).powi(2) + (c[1] - mean[1]).powi(2);
    let center = s
        .grid_centres
        .iter()
        .copied()
        .min_by(|a, b| distance(a).total_cmp(&distance(b)))
        .unwrap_or(mean);
    StreetShape {
        code: street.code,
        name: street.name.clone(),
        center,
        outline,
    }
}

/// Loads and prepares `<data_dir>/district/grids.geojson`.
#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use serde_json::Value;

    use super::*;

    /// The vendored ECharts directory under `assets/`.
    const ECHARTS_DIR: &str = "echarts-6.1.0";

    /// Two streets side by side, each of two unit squares:
    /// ```text
    /// (0,2) ┌──┬──┐ (2,2)
    ///       │a1│b1│
    /// (0,1) ├──┼──┤
    ///       │a2│b2│
    /// (0,0) └──┴──┘ (2,0)
    /// ```
    fn two_streets() -> String {
        let square = |code: &str, street: &str, x: f64, y: f64| {
            serde_json::json!({"type": "Feature", "properties": {
                "kind": "grid", "grid_code": code, "street_code": street,
                "street_name": format!("street {street}"),
                "community_code": &code[..12], "community_name": "c"},
              "geometry": {"type": "Polygon", "coordinates": [[
                [x, y], [x + 1.0, y], [x + 1.0, y + 1.0], [x, y + 1.0], [x, y]]]}})
        };
        serde_json::json!({"type": "FeatureCollection", "map_version": "v1", "features": [
            square("310199001001001", "310199001", 0.0, 1.0),
            square("310199001001002", "310199001", 0.0, 0.0),
            square("310199002001001", "310199002", 1.0, 1.0),
            square("310199002001002", "310199002", 1.0, 0.0),
            {"type": "Feature", "properties": {"kind": "excluded", "name": "lake"},
             "geometry": {"type": "Polygon", "coordinates": [[[5.0, 5.0], [6.0, 5.0], [6.0, 6.0], [5.0, 5.0]]]}},
        ]})
        .to_string()
    }

    fn map_of(geojson: &str) -> DistrictMap {
        DistrictMap::new(&gridclue_district::parse_geojson(geojson).unwrap()).unwrap()
    }

    fn document(map: &DistrictMap) -> Value {
        serde_json::from_slice(&map.body).unwrap()
    }

    /// The unit segments of an outline, as undirected pairs.
    fn segments(outline: &Value) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for line in outline.as_array().unwrap() {
            let pts = line.as_array().unwrap();
            for w in pts.windows(2) {
                let mut pair = [w[0].to_string(), w[1].to_string()];
                pair.sort();
                *out.entry(pair.join("-")).or_default() += 1;
            }
        }
        out
    }

    #[test]
    fn a_street_outline_leaves_out_edges_between_its_own_grids() {
        let map = map_of(&two_streets());
        let doc = document(&map);
        assert_eq!(map.streets, 2);
        let a = &doc["streets"][0];
        assert_eq!(a["code"], "310199001");
        assert_eq!(a["name"], "street 310199001");
        let segs = segments(&a["outline"]);
        // The rectangle (0,0)-(1,2): 6 unit segments, each once; not the inner (0,1)-(1,1).
        assert_eq!(segs.len(), 6, "{segs:?}");
        assert!(segs.values().all(|&n| n == 1));
        assert!(!segs.contains_key("[0.0,1.0]-[1.0,1.0]"));
        assert!(
            segs.contains_key("[1.0,1.0]-[1.0,2.0]"),
            "the border with street b"
        );
        // The label point is the centre of one of its grids.
        let c = &a["center"];
        assert_eq!(c[0].as_f64(), Some(0.4));
        // Regions are named for ECharts: grids by code, the lake by its name.
        let names: Vec<&str> = doc["geojson"]["features"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["properties"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names.len(), 5);
        assert_eq!(names[0], "310199001001001");
        assert_eq!(names[4], "lake");
        assert_eq!(doc["map_version"], "v1");
    }

    /// The state with the shipped map, and the directory of its (empty) token file.
    fn state_with_map() -> (AppState, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens.json");
        gridclue_core::tokens::TokenFile::default()
            .write(&tokens)
            .unwrap();
        let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data");
        let mut state = AppState::new(
            clickhouse::Client::default(),
            gridclue_core::tokens::TokenStore::open(&tokens).unwrap(),
            crate::Reference::default(),
            gridclue_core::calendar::Calendar::load(&data.join("calendar.json")).unwrap(),
        );
        state.district_map = Some(Arc::new(
            DistrictMap::new(&crate::reference::load_district(&data).unwrap()).unwrap(),
        ));
        (state, dir)
    }

    async fn get(path: &str, if_none_match: Option<&HeaderValue>) -> Response {
        use tower::ServiceExt;
        let mut req = axum::http::Request::get(path);
        if let Some(tag) = if_none_match {
            req = req.header(header::IF_NONE_MATCH, tag);
        }
        let (state, _tokens) = state_with_map();
        crate::app(state)
            .oneshot(req.body(axum::body::Body::empty()).unwrap())
            .await
            .unwrap()
    }

    async fn body_of(r: Response) -> Vec<u8> {
        axum::body::to_bytes(r.into_body(), 8 << 20)
            .await
            .unwrap()
            .to_vec()
    }

    #[tokio::test]
    async fn the_page_is_served_with_a_policy_that_allows_no_inline_script() {
        let r = get("/dashboard", None).await;
        assert_eq!(r.status(), StatusCode::OK);
        let h = r.headers().clone();
        assert_eq!(h[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(h[header::CACHE_CONTROL], "no-cache");
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        let script_src = csp
            .split(';')
            .map(str::trim)
            .find(|d| d.starts_with("script-src"))
            .unwrap();
        assert_eq!(script_src, "script-src 'self'");
        assert!(csp.contains("connect-src 'self'") && csp.contains("default-src 'none'"));
        let html = String::from_utf8(body_of(r).await).unwrap();
        // Every script is a file of ours; none is inline; no handler attributes.
        let scripts: Vec<&str> = html.split("<script").skip(1).collect();
        assert_eq!(scripts.len(), 2);
        for s in scripts {
            assert!(
                s.trim_start().starts_with("src=\"/dashboard/assets/"),
                "{s}"
            );
            assert!(s.contains("></script>"), "{s}");
        }
        assert!(!html.contains(" onclick=") && !html.contains(" onload="));
        assert!(html.contains(&format!("/dashboard/assets/{ECHARTS_DIR}/echarts.min.js")));
    }

    #[tokio::test]
    async fn assets_have_their_types_and_the_versioned_library_is_cached_for_good() {
        let lib = get(
            &format!("/dashboard/assets/{ECHARTS_DIR}/echarts.min.js"),
            None,
        )
        .await;
        assert_eq!(lib.status(), StatusCode::OK);
        assert_eq!(
            lib.headers()[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        assert_eq!(
            lib.headers()[header::CACHE_CONTROL],
            "public, max-age=31536000, immutable"
        );
        let tag = lib.headers()[header::ETAG].clone();
        assert!(body_of(lib)
            .await
            .starts_with(b"\n/*\n* Licensed to the Apache Software Foundation"));
        // Revalidation with the ETag: 304 and no body.
        let again = get(
            &format!("/dashboard/assets/{ECHARTS_DIR}/echarts.min.js"),
            Some(&tag),
        )
        .await;
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert!(body_of(again).await.is_empty());

        let js = get("/dashboard/assets/dashboard.js", None).await;
        assert_eq!(
            js.headers()[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        assert_eq!(js.headers()[header::CACHE_CONTROL], "no-cache");
        let css = get("/dashboard/assets/dashboard.css", None).await;
        assert_eq!(
            css.headers()[header::CONTENT_TYPE],
            "text/css; charset=utf-8"
        );
        let license = get(&format!("/dashboard/assets/{ECHARTS_DIR}/LICENSE"), None).await;
        assert_eq!(
            license.headers()[header::CONTENT_TYPE],
            "text/plain; charset=utf-8"
        );
        assert!(String::from_utf8(body_of(license).await)
            .unwrap()
            .contains("Apache License"));

        let missing = get("/dashboard/assets/../src/lib.rs", None).await;
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            missing.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
    }

    #[test]
    fn the_vendored_library_is_the_recorded_release() {
        let readme = include_str!("../assets/echarts-6.1.0/README.md");
        let digest = hex::encode(Sha256::digest(
            include_bytes!("../assets/echarts-6.1.0/echarts.min.js").as_slice(),
        ));
        assert!(
            readme.contains(&format!("| `echarts.min.js` | `{digest}` |")),
            "assets/{ECHARTS_DIR}/README.md records another sha256 than {digest}"
        );
    }

    #[tokio::test]
    async fn the_map_is_served_as_json_with_every_street() {
        let r = get("/dashboard/map.json", None).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
        let tag = r.headers()[header::ETAG].clone();
        let doc: Value = serde_json::from_slice(&body_of(r).await).unwrap();
        assert_eq!(doc["streets"].as_array().unwrap().len(), 13);
        assert_eq!(doc["geojson"]["type"], "FeatureCollection");
        let again = get("/dashboard/map.json", Some(&tag)).await;
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert!(body_of(again).await.is_empty());
    }

    #[test]
    fn the_etag_changes_with_the_content_only() {
        let district = gridclue_district::parse_geojson(&two_streets()).unwrap();
        let first = DistrictMap::new(&district).unwrap();
        let same = DistrictMap::new(&district).unwrap();
        assert_eq!(first.etag, same.etag);
        assert_eq!(first.body, same.body);
        let mut renamed = district.clone();
        renamed.streets[1].name = "street b".into();
        let other = DistrictMap::new(&renamed).unwrap();
        assert_ne!(first.etag, other.etag);
        assert_eq!(document(&other)["streets"][1]["name"], "street b");
    }

    /// The regions carry the file's codes, names and rings: grids in code order, then the
    /// excluded areas; every ring closed as written, holes after the exterior.
    #[test]
    fn the_shipped_map_keeps_the_files_regions() {
        let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data");
        let doc = document(&Arc::new(
            DistrictMap::new(&crate::reference::load_district(&data).unwrap()).unwrap(),
        ));
        assert_eq!(doc["map_version"], "sha256-e5add4126271740f");
        let features = doc["geojson"]["features"].as_array().unwrap();
        assert_eq!(features.len(), 1005);

        let first = &features[0];
        assert_eq!(first["type"], "Feature");
        assert_eq!(
            first["properties"],
            serde_json::json!({"name": "310199001001001", "street_code": "310199001",
                "community_code": "310199001001", "community_name": "兰城社区"})
        );
        assert_eq!(first["geometry"]["type"], "Polygon");
        let exterior = first["geometry"]["coordinates"][0].as_array().unwrap();
        assert_eq!(exterior.len(), 127);
        assert_eq!(exterior[0], serde_json::json!([121.5248969, 31.235686]));
        assert_eq!(exterior[126], exterior[0]);

        let excluded: Vec<&Value> = features[1000..].iter().map(|f| &f["properties"]).collect();
        let names = ["银园湖", "嘉江荡", "桂塘池", "海墩潭", "朝墩池"];
        for (properties, name) in excluded.iter().zip(names) {
            assert_eq!(
                **properties,
                serde_json::json!({"name": name, "kind": "excluded"})
            );
        }

        // Pond 朝墩池 is a hole in grid 310199001002007: the same ring, run the other way.
        let grid = features
            .iter()
            .find(|f| f["properties"]["name"] == "310199001002007")
            .unwrap();
        let rings = grid["geometry"]["coordinates"].as_array().unwrap();
        assert_eq!(rings.len(), 2);
        assert_eq!(rings[0].as_array().unwrap().len(), 85);
        let hole = rings[1].as_array().unwrap();
        assert_eq!(hole.len(), 25);
        assert_eq!(hole[0], serde_json::json!([121.5170461, 31.2296202]));
        let pond = &features[1004]["geometry"]["coordinates"];
        assert_eq!(pond.as_array().unwrap().len(), 1);
        let mut pond_ring = pond[0].as_array().unwrap().clone();
        pond_ring.reverse();
        assert_eq!(*hole, pond_ring);
    }

    #[test]
    fn the_shipped_map_outlines_thirteen_streets() {
        let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data");
        let map =
            Arc::new(DistrictMap::new(&crate::reference::load_district(&data).unwrap()).unwrap());
        let doc = document(&map);
        let streets = doc["streets"].as_array().unwrap();
        assert_eq!(streets.len(), 13);
        assert_eq!(streets[0]["code"], "310199001");
        assert_eq!(streets[0]["name"], "洪泉街道");
        for s in streets {
            let outline = s["outline"].as_array().unwrap();
            assert!(!outline.is_empty(), "{} has an outline", s["code"]);
            // Every outline polyline closes on itself or continues another: its points all
            // lie in the district's box.
            for line in outline {
                for p in line.as_array().unwrap() {
                    let (x, y) = (p[0].as_f64().unwrap(), p[1].as_f64().unwrap());
                    assert!((121.0..122.0).contains(&x) && (30.8..31.6).contains(&y));
                }
            }
        }
        let grids = doc["geojson"]["features"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["properties"]["street_code"].is_string())
            .count();
        assert_eq!(grids, 1000);
    }
}
