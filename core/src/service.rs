//! Pieces every gridclue HTTP service shares: the shutdown signal of its binary, the
//! problem-details body of its errors (RFC 9457), the request metrics of the services with an
//! API, and the probe routes (`/healthz`, `/readyz`, `/metrics`) of all of them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};
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

/// What `/readyz` answers: ready once the service has started and nothing blocks it. A blocker
/// is a condition an operator must resolve (a partition the service refuses to consume, …),
/// named in the 503 body.
#[derive(Clone, Default)]
pub struct Readiness {
    started: Arc<AtomicBool>,
    blockers: Arc<Mutex<BTreeMap<String, String>>>,
}

impl Readiness {
    /// Readiness whose "started" part is `started` (shared with the code that sets it).
    pub fn new(started: Arc<AtomicBool>) -> Self {
        Self {
            started,
            blockers: Arc::default(),
        }
    }

    pub fn set_started(&self, started: bool) {
        self.started.store(started, Ordering::Release);
    }

    /// Records (or replaces) the blocker `key`, described by `why`.
    pub fn block(&self, key: &str, why: String) {
        self.lock().insert(key.to_owned(), why);
    }

    pub fn unblock(&self, key: &str) {
        self.lock().remove(key);
    }

    /// What blocks readiness now, in key order.
    pub fn blockers(&self) -> Vec<String> {
        self.lock().values().cloned().collect()
    }

    pub fn is_ready(&self) -> bool {
        self.started.load(Ordering::Acquire) && self.lock().is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
        // The map stays consistent whatever panicked while holding it (single inserts/removes).
        self.blockers.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What `/readyz` answers, asked on every request: `Ok` (200 `ready`) or `Err` naming what is
/// not ready (503 with that text). A service's own state ([`Readiness`] converts into one) or a
/// dependency answering (ingest: the broker; dashboard-api: ClickHouse).
pub type ReadinessCheck =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

impl Readiness {
    /// What `/readyz` says of this state: `starting` before the start, one line per blocker
    /// while anything blocks.
    pub fn answer(&self) -> Result<(), String> {
        if !self.started.load(Ordering::Acquire) {
            return Err("starting".to_owned());
        }
        let blockers = self.blockers();
        if blockers.is_empty() {
            return Ok(());
        }
        let mut body = String::from("not ready:\n");
        for b in blockers {
            body.push_str("- ");
            body.push_str(&b);
            body.push('\n');
        }
        Err(body)
    }
}

impl From<Readiness> for ReadinessCheck {
    fn from(readiness: Readiness) -> Self {
        Arc::new(move || {
            let answer = readiness.answer();
            Box::pin(std::future::ready(answer))
        })
    }
}

/// `/healthz` (the process answers), `/readyz` (what `readiness` says now: 200 `ready`, or 503
/// with the reason) and `/metrics` (the registry in Prometheus text format).
pub fn probe_routes<S>(readiness: impl Into<ReadinessCheck>, registry: Registry) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let check: ReadinessCheck = readiness.into();
    let readyz = get(move || {
        let answer = check();
        async move {
            match answer.await {
                Ok(()) => (StatusCode::OK, "ready".to_owned()),
                Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
            }
        }
    });
    let metrics = get(move || {
        let text = crate::telemetry::render(&registry);
        async move {
            (
                [(header::CONTENT_TYPE, crate::telemetry::METRICS_CONTENT_TYPE)],
                text,
            )
        }
    });
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", readyz)
        .route("/metrics", metrics)
}

/// The metric names of one service's [`RequestMetrics`].
pub struct RequestMetricNames {
    pub requests_total: &'static str,
    pub duration_seconds: &'static str,
    pub in_flight: &'static str,
}

/// HTTP requests by route template and status, latency by route template, and requests being
/// served — one definition for every service with an API (route templates, never raw paths, so
/// label values stay bounded).
#[derive(Clone)]
pub struct RequestMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
    in_flight: IntGauge,
}

impl RequestMetrics {
    /// Creates the three metrics and registers them in `registry`.
    pub fn register(registry: &Registry, names: RequestMetricNames) -> Self {
        let requests = IntCounterVec::new(
            Opts::new(names.requests_total, "HTTP requests by route and status"),
            &["route", "status"],
        )
        .expect("valid metric");
        let duration = HistogramVec::new(
            HistogramOpts::new(names.duration_seconds, "HTTP request latency by route")
                .buckets(crate::telemetry::LATENCY_BUCKETS.to_vec()),
            &["route"],
        )
        .expect("valid metric");
        let in_flight =
            IntGauge::new(names.in_flight, "Requests being served").expect("valid metric");
        for m in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(duration.clone()),
            Box::new(in_flight.clone()),
        ] {
            registry.register(m).expect("metric registered once");
        }
        Self {
            requests,
            duration,
            in_flight,
        }
    }

    /// Requests answered so far with `route` (a template such as `/v1/clues/{id}`) and `status`.
    pub fn requests(&self, route: &str, status: StatusCode) -> u64 {
        self.requests
            .with_label_values(&[route, status.as_str()])
            .get()
    }

    pub fn in_flight(&self) -> i64 {
        self.in_flight.get()
    }
}

/// Keeps the in-flight gauge right when a request's future is dropped (client gone, timeout).
struct InFlight(IntGauge);

impl InFlight {
    fn enter(gauge: &IntGauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Middleware (`axum::middleware::from_fn_with_state(metrics, track_requests)`) recording every
/// request in `metrics`; requests matching no route count as `unmatched`.
pub async fn track_requests(
    State(metrics): State<RequestMetrics>,
    req: Request,
    next: Next,
) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let _in_flight = InFlight::enter(&metrics.in_flight);
    let started = Instant::now();
    let response = next.run(req).await;
    metrics
        .duration
        .with_label_values(&[&route])
        .observe(started.elapsed().as_secs_f64());
    metrics
        .requests
        .with_label_values(&[&route, response.status().as_str()])
        .inc();
    response
}

/// Why an operations endpoint refused a request (see [`require_admin`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminRefusal {
    /// No valid token (401).
    Unauthorized(String),
    /// A valid token of another kind than district (403).
    Forbidden,
}

impl IntoResponse for AdminRefusal {
    fn into_response(self) -> Response {
        match self {
            AdminRefusal::Unauthorized(detail) => {
                let mut r = problem(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "Authentication required",
                    &detail,
                );
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                r
            }
            AdminRefusal::Forbidden => problem(
                StatusCode::FORBIDDEN,
                "forbidden",
                "Forbidden",
                "only a district token may use an admin endpoint",
            ),
        }
    }
}

/// The gate of an operations endpoint (`/admin/…`): a district token from the token file at
/// `tokens_file`, read now (admin requests are rare, and a revocation applies at once). 401
/// without a valid token (also when the file cannot be read: it fails closed), 403 for a token
/// of another kind.
pub fn require_admin(
    tokens_file: &std::path::Path,
    authorization: Option<&HeaderValue>,
) -> Result<(), AdminRefusal> {
    let token = authorization
        .and_then(|h| h.to_str().ok())
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            AdminRefusal::Unauthorized("an admin endpoint needs a district bearer token".into())
        })?;
    let file = crate::tokens::TokenFile::read(tokens_file).map_err(|e| {
        tracing::warn!(error = %e, "admin request refused: the token file cannot be read");
        AdminRefusal::Unauthorized("the bearer token is not valid".into())
    })?;
    let record = file
        .verify(token)
        .map_err(|e| AdminRefusal::Unauthorized(e.to_string()))?;
    if record.kind != crate::tokens::TokenKind::District {
        return Err(AdminRefusal::Forbidden);
    }
    Ok(())
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
        let app: Router = probe_routes(Readiness::new(ready.clone()), registry);
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

    fn test_names() -> RequestMetricNames {
        RequestMetricNames {
            requests_total: "gridclue_test_requests_total",
            duration_seconds: "gridclue_test_request_duration_seconds",
            in_flight: "gridclue_test_in_flight_requests",
        }
    }

    #[tokio::test]
    async fn requests_are_counted_by_route_template_and_status() {
        let registry = Registry::new();
        let metrics = RequestMetrics::register(&registry, test_names());
        let app: Router = Router::new()
            .route("/v1/clues/{id}", get(|| async { StatusCode::ACCEPTED }))
            .layer(axum::middleware::from_fn_with_state(
                metrics.clone(),
                track_requests,
            ));
        for path in ["/v1/clues/a", "/v1/clues/b", "/nowhere"] {
            app.clone()
                .oneshot(
                    axum::http::Request::get(path)
                        .body(axum::body::Body::empty())
                        .unwrap(),
                )
                .await
                .unwrap();
        }
        assert_eq!(metrics.requests("/v1/clues/{id}", StatusCode::ACCEPTED), 2);
        assert_eq!(metrics.requests("unmatched", StatusCode::NOT_FOUND), 1);
        assert_eq!(metrics.in_flight(), 0);
        let text = crate::telemetry::render(&registry);
        assert!(
            text.contains(
                "gridclue_test_request_duration_seconds_count{route=\"/v1/clues/{id}\"} 2"
            ),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_request_dropped_midway_leaves_the_in_flight_gauge() {
        let metrics = RequestMetrics::register(&Registry::new(), test_names());
        let (entered_tx, entered_rx) = tokio::sync::oneshot::channel::<()>();
        let entered_tx = Arc::new(Mutex::new(Some(entered_tx)));
        let app: Router = Router::new()
            .route(
                "/slow",
                get(move || {
                    let entered_tx = entered_tx.clone();
                    async move {
                        if let Some(tx) = entered_tx.lock().unwrap().take() {
                            let _ = tx.send(());
                        }
                        std::future::pending::<()>().await
                    }
                }),
            )
            .layer(axum::middleware::from_fn_with_state(
                metrics.clone(),
                track_requests,
            ));
        let request = tokio::spawn(
            app.oneshot(
                axum::http::Request::get("/slow")
                    .body(axum::body::Body::empty())
                    .unwrap(),
            ),
        );
        entered_rx.await.unwrap();
        assert_eq!(metrics.in_flight(), 1);
        request.abort();
        let _ = request.await;
        assert_eq!(metrics.in_flight(), 0);
    }

    /// What `/readyz` of `app` answers: status and body.
    async fn readyz(app: &Router) -> (StatusCode, String) {
        let r = app
            .clone()
            .oneshot(
                axum::http::Request::get("/readyz")
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = r.status();
        let body = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn checked_readyz_answers_what_the_check_says() {
        let healthy = Arc::new(AtomicBool::new(false));
        let check: ReadinessCheck = {
            let healthy = healthy.clone();
            Arc::new(move || {
                let up = healthy.load(Ordering::Acquire);
                Box::pin(async move {
                    if up {
                        Ok(())
                    } else {
                        Err("clickhouse unavailable".to_owned())
                    }
                })
            })
        };
        let app: Router = probe_routes(check, Registry::new());
        assert_eq!(
            readyz(&app).await,
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "clickhouse unavailable".to_owned()
            )
        );
        healthy.store(true, Ordering::Release);
        assert_eq!(readyz(&app).await, (StatusCode::OK, "ready".to_owned()));
    }

    #[tokio::test]
    async fn readyz_names_what_blocks_readiness() {
        let readiness = Readiness::new(Arc::new(AtomicBool::new(true)));
        let app: Router = probe_routes(readiness.clone(), Registry::new());
        assert_eq!(readyz(&app).await.0, StatusCode::OK);
        readiness.block("a", "partition 3 refused".into());
        readiness.block("b", "partition 5 refused".into());
        let (status, body) = readyz(&app).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            body.contains("- partition 3 refused\n- partition 5 refused"),
            "{body}"
        );
        assert!(!readiness.is_ready());
        readiness.unblock("a");
        readiness.unblock("b");
        assert_eq!(readyz(&app).await.0, StatusCode::OK);
        readiness.set_started(false);
        assert_eq!(
            readyz(&app).await,
            (StatusCode::SERVICE_UNAVAILABLE, "starting".to_owned())
        );
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
