//! The mobile reporting page, embedded in the binary (no external network needed), and the
//! district's grid map it draws (`GET /v1/map/grids.geojson`).
//!
//! Two tabs. "Report": the reporter token is entered once (or arrives as `?token=` in a link)
//! and kept in the browser; big category buttons from `/v1/categories`; the district drawn from
//! the grid map (grid outlines, community and street outlines thicker, names by zoom level) with
//! the rider's position from geolocation, which a tap on the map sets or moves; the grid,
//! community and street the point falls in are named before sending (point in polygon on the
//! served map); an optional photo (camera input, downscaled to at most 1600 px and re-encoded as
//! JPEG in the browser, which also drops its EXIF) and note. Every clue first goes into a queue
//! kept in `localStorage` with its own clue id, its photo into IndexedDB; photos are uploaded
//! (`POST /v1/photos`) before their clue, and the queue is sent through `POST /v1/clues:batch`
//! — at once when online, and again on the browser's `online` event and on a retry timer — so
//! a clue taken without signal is delivered later, exactly once. "My reports": the rider's
//! clues with status, light and last action, and the points balance with its entries
//! (`/v1/my/clues`, `/v1/my/points`, forwarded to dashboard-api by [`crate::my`]). A service
//! worker keeps the page, its assets, the categories and the map cached so the page also opens
//! without signal. Chinese UI, English toggle.

use std::path::Path;

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::api::AppState;

const INDEX_HTML: &str = include_str!("../assets/report.html");
const APP_JS: &str = include_str!("../assets/report.js");
const APP_CSS: &str = include_str!("../assets/report.css");
const SERVICE_WORKER_JS: &str = include_str!("../assets/report-sw.js");

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; \
             script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; \
             frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

pub async fn index() -> Response {
    asset(INDEX_HTML, "text/html; charset=utf-8")
}

pub async fn script() -> Response {
    asset(APP_JS, "text/javascript; charset=utf-8")
}

pub async fn style() -> Response {
    asset(APP_CSS, "text/css; charset=utf-8")
}

/// The page's service worker, allowed to control the whole origin (it only answers GETs of the
/// page, its assets, the categories and the service area).
pub async fn service_worker() -> Response {
    let mut r = asset(SERVICE_WORKER_JS, "text/javascript; charset=utf-8");
    r.headers_mut()
        .insert("service-worker-allowed", HeaderValue::from_static("/"));
    r
}

/// The grid map as served: the shipped GeoJSON's bytes, with its `map_version` as ETag so a
/// phone re-downloads its ~2.6 MB only when the map changed.
pub struct MapFile {
    bytes: Bytes,
    etag: HeaderValue,
}

impl MapFile {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        #[derive(serde::Deserialize)]
        struct Version {
            #[serde(default)]
            map_version: String,
        }
        let version: Version = serde_json::from_slice(&bytes)
            .with_context(|| format!("parsing {}", path.display()))?;
        let tag = if version.map_version.is_empty() {
            crate::photos::PhotoId::of(&bytes).hex()[..16].to_owned()
        } else {
            version.map_version
        };
        let etag = HeaderValue::from_str(&format!("\"{tag}\""))
            .with_context(|| format!("map_version of {}", path.display()))?;
        Ok(Self {
            bytes: Bytes::from(bytes),
            etag,
        })
    }
}

/// `GET /v1/map/grids.geojson`: the district's grids (public: the page draws them before a
/// token is entered).
pub async fn grid_map(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let map = &state.map;
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == map.etag.as_bytes());
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        map.bytes.clone().into_response()
    };
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/geo+json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::ETAG, map.etag.clone());
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}
