//! Pieces every gridclue HTTP service shares: the shutdown signal of its binary, the
//! problem-details body of its errors (RFC 9457), and the probe routes of the services whose
//! HTTP side is only for operations.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus::Registry;
use serde::Serialize;

pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";
/// Prefix of every problem `type` URI; the stable code follows it.
pub const PROBLEM_TYPE_BASE: &str = "https://gridclue.dev/problems/";

/// Resolves on Ctrl-C or SIGTERM (what `make down` and process managers send).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        tokio::signal::ctrl_c().await.ok();
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested");
}

#[derive(Clone)]
struct Probes {
    ready: Arc<AtomicBool>,
    registry: Registry,
}

/// `/healthz` (the process answers), `/readyz` (200 once `ready` is set, 503 before) and
/// `/metrics` (the registry in Prometheus text format).
pub fn probe_routes(ready: Arc<AtomicBool>, registry: Registry) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(p): State<Probes>| async move {
                if p.ready.load(Ordering::Acquire) {
                    (StatusCode::OK, "ready")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "starting")
                }
            }),
        )
        .route(
            "/metrics",
            get(|State(p): State<Probes>| async move {
                (
                    [(header::CONTENT_TYPE, crate::telemetry::METRICS_CONTENT_TYPE)],
                    crate::telemetry::render(&p.registry),
                )
            }),
        )
        .with_state(Probes { ready, registry })
}

#[derive(Serialize)]
struct ProblemBody<'a> {
    #[serde(rename = "type")]
    type_: String,
    code: &'a str,
    title: &'a str,
    status: u16,
    detail: &'a str,
}

/// A problem+json response with a stable machine-readable `code` (also the end of `type`).
pub fn problem(status: StatusCode, code: &str, title: &str, detail: &str) -> Response {
    let body = ProblemBody {
        type_: format!("{PROBLEM_TYPE_BASE}{code}"),
        code,
        title,
        status: status.as_u16(),
        detail,
    };
    let mut response = (status, axum::Json(body)).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(PROBLEM_CONTENT_TYPE),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    #[tokio::test]
    async fn probes_report_readiness_and_metrics() {
        let ready = Arc::new(AtomicBool::new(false));
        let registry = Registry::new();
        let counter = prometheus::IntCounter::new("gridclue_test_total", "test").unwrap();
        registry.register(Box::new(counter.clone())).unwrap();
        counter.inc();
        let app = probe_routes(ready.clone(), registry);
        let get = |path: &str| {
            axum::http::Request::get(path)
                .body(axum::body::Body::empty())
                .unwrap()
        };
        let r = app.clone().oneshot(get("/readyz")).await.unwrap();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        ready.store(true, Ordering::Release);
        let r = app.clone().oneshot(get("/readyz")).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let r = app.clone().oneshot(get("/healthz")).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let r = app.oneshot(get("/metrics")).await.unwrap();
        let text = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        assert!(String::from_utf8_lossy(&text).contains("gridclue_test_total 1"));
    }

    #[tokio::test]
    async fn problems_carry_type_code_and_content_type() {
        let r = problem(
            StatusCode::NOT_FOUND,
            "not_found",
            "Not found",
            "no such clue",
        );
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(r.headers()[header::CONTENT_TYPE], PROBLEM_CONTENT_TYPE);
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["type"], "https://gridclue.dev/problems/not_found");
        assert_eq!(v["code"], "not_found");
        assert_eq!(v["status"], 404);
        assert_eq!(v["detail"], "no such clue");
    }
}
