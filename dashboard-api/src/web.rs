//! The web dashboard at `/dashboard`: its page, script and style and the vendored Apache ECharts
//! are embedded in the binary (no network needed at run time, nothing to install beside it), and
//! `/dashboard/map.json` is the district map prepared for drawing — the grids as GeoJSON
//! (ECharts `registerMap`) plus every street's outline and label point, computed once at start.
//!
//! The page reads the same JSON API as everyone else with the bearer token the user signs in
//! with (kept in the tab's `sessionStorage`, sent in the `Authorization` header, never in a URL).
//! Everything served here is public: the page and the map carry no statistics.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, LazyLock};

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Serialize;
use serde_json::Value;
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
struct MapDocument {
    map_version: Option<String>,
    /// GeoJSON for ECharts `registerMap`: every feature's `properties.name` is its region name —
    /// the grid code for grids, the name for excluded areas (lakes), which carry `kind`.
    geojson: Value,
    streets: Vec<StreetShape>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StreetShape {
    pub code: String,
    pub name: String,
    /// A label point inside the street: the centre of its grid nearest the mean of its grids'.
    pub center: [f64; 2],
    /// The street's outline as polylines (outer boundary and borders with other streets).
    pub outline: Vec<Vec<[f64; 2]>>,
}

/// A vertex, compared bit for bit (neighbouring grids share identical vertices).
type Vertex = (u64, u64);

fn vertex(p: &Value) -> Option<(Vertex, [f64; 2])> {
    let x = p.get(0)?.as_f64()?;
    let y = p.get(1)?.as_f64()?;
    Some(((x.to_bits(), y.to_bits()), [x, y]))
}

/// The rings of a Polygon or MultiPolygon geometry.
fn rings(geometry: &Value) -> Vec<&Vec<Value>> {
    let coords = &geometry["coordinates"];
    let polygons: Vec<&Value> = match geometry["type"].as_str() {
        Some("Polygon") => vec![coords],
        Some("MultiPolygon") => coords
            .as_array()
            .map(|a| a.iter().collect())
            .unwrap_or_default(),
        _ => vec![],
    };
    polygons
        .into_iter()
        .filter_map(Value::as_array)
        .flatten()
        .filter_map(Value::as_array)
        .collect()
}

#[derive(Default)]
struct StreetEdges {
    name: String,
    edges: HashSet<(Vertex, Vertex)>,
    points: HashMap<Vertex, [f64; 2]>,
    grid_centres: Vec<[f64; 2]>,
}

impl DistrictMap {
    /// Prepares the district map (a GeoJSON FeatureCollection of grids with `grid_code`,
    /// `street_code`, `street_name`, `community_code`, `community_name`, and excluded areas with
    /// `kind: "excluded"` and `name`).
    pub fn from_geojson(text: &str) -> anyhow::Result<Self> {
        let collection: Value = serde_json::from_str(text).context("district map is not JSON")?;
        let features = collection["features"]
            .as_array()
            .context("district map is not a GeoJSON FeatureCollection")?;
        let mut out = Vec::with_capacity(features.len());
        let mut streets: BTreeMap<String, StreetEdges> = BTreeMap::new();
        for f in features {
            let p = &f["properties"];
            let text = |k: &str| p[k].as_str().map(str::to_owned);
            let geometry = f["geometry"].clone();
            if let Some(grid) = text("grid_code") {
                let street_code = text("street_code").unwrap_or_default();
                let street = streets.entry(street_code.clone()).or_default();
                street.name = text("street_name").unwrap_or_default();
                for (i, ring) in rings(&geometry).into_iter().enumerate() {
                    let points: Vec<_> = ring.iter().filter_map(vertex).collect();
                    if i == 0 && !points.is_empty() {
                        let n = points.len() as f64;
                        let sum = points
                            .iter()
                            .fold([0.0, 0.0], |s, (_, p)| [s[0] + p[0], s[1] + p[1]]);
                        street.grid_centres.push([sum[0] / n, sum[1] / n]);
                    }
                    for pair in points.windows(2) {
                        let ((a, pa), (b, pb)) = (pair[0], pair[1]);
                        street.points.insert(a, pa);
                        street.points.insert(b, pb);
                        street.edges.insert((a, b));
                    }
                }
                out.push(serde_json::json!({
                    "type": "Feature",
                    "properties": {
                        "name": grid,
                        "street_code": street_code,
                        "community_code": text("community_code"),
                        "community_name": text("community_name"),
                    },
                    "geometry": geometry,
                }));
            } else if let Some(name) = text("name") {
                out.push(serde_json::json!({
                    "type": "Feature",
                    "properties": {"name": name, "kind": text("kind")},
                    "geometry": geometry,
                }));
            }
        }
        let shapes: Vec<StreetShape> = streets
            .into_iter()
            .map(|(code, s)| street_shape(code, s))
            .collect();
        let document = MapDocument {
            map_version: collection["map_version"].as_str().map(str::to_owned),
            geojson: serde_json::json!({"type": "FeatureCollection", "features": out}),
            streets: shapes,
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
fn street_shape(code: String, s: StreetEdges) -> StreetShape {
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
            let mut line = vec![s.points[&start], s.points[&at]];
            while let Some(to) = next.get_mut(&at).and_then(Vec::pop) {
                line.push(s.points[&to]);
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
        code,
        name: s.name,
        center,
        outline,
    }
}

/// Loads and prepares `<data_dir>/district/grids.geojson`.
pub fn load_district_map(data_dir: &std::path::Path) -> anyhow::Result<Arc<DistrictMap>> {
    let path = data_dir.join("district/grids.geojson");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading the district map {}", path.display()))?;
    Ok(Arc::new(DistrictMap::from_geojson(&text)?))
}

#[cfg(test)]
mod tests {
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
        let map = DistrictMap::from_geojson(&two_streets()).unwrap();
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
        state.district_map = Some(load_district_map(&data).unwrap());
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
        let doc: Value = serde_json::from_slice(&body_of(r).await).unwrap();
        assert_eq!(doc["streets"].as_array().unwrap().len(), 13);
        assert_eq!(doc["geojson"]["type"], "FeatureCollection");
    }

    #[test]
    fn the_shipped_map_outlines_thirteen_streets() {
        let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data");
        let map = load_district_map(&data).unwrap();
        let doc = document(&map);
        let streets = doc["streets"].as_array().unwrap();
        assert_eq!(streets.len(), 13);
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
