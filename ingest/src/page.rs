//! The mobile reporting page, embedded in the binary (no external network needed).
//!
//! One screen: the reporter token is entered once (or arrives as `?token=` in a link) and kept
//! in the browser; big category buttons from `/v1/categories`; the location from the browser's
//! geolocation, with a tap-on-the-map / typed coordinates fallback; an optional note. Tapping a
//! category and then "submit" sends the clue. Every clue first goes into a queue kept in
//! `localStorage` with its own clue id, and the queue is sent through `POST /v1/clues:batch`
//! — at once when online, and again on the browser's `online` event and on a retry timer — so
//! a clue taken without signal is delivered later, exactly once. A service worker keeps the
//! page and the categories cached so the page also opens without signal. Chinese UI, English
//! toggle.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

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
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
             connect-src 'self'",
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
