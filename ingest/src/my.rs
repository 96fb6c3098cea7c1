//! The reporting page's "my reports" tab reads a rider's clues and points from dashboard-api,
//! which owns them (`GET /v1/my/clues`, `GET /v1/my/points`). They are forwarded through this
//! service rather than fetched from dashboard-api's own origin, so that the page keeps
//! `connect-src 'self'`, dashboard-api needs no CORS, the page's service worker can keep the last
//! answers for offline use, and a rider's token is only ever sent to the origin that issued the
//! page. The token is checked (and rate limited) here as for every reporter request, then sent
//! on unchanged: dashboard-api decides what the rider sees.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::api::AppState;
use crate::error::ApiError;

/// Largest answer forwarded (a page of clues is far smaller).
const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

/// A client for dashboard-api's reporter routes.
pub struct DashboardProxy {
    base: String,
    http: reqwest::Client,
}

impl DashboardProxy {
    pub fn new(base_url: &str, timeout: Duration) -> anyhow::Result<Self> {
        Ok(Self {
            base: base_url.trim_end_matches('/').to_owned(),
            http: reqwest::Client::builder().timeout(timeout).build()?,
        })
    }
}

pub async fn my_clues(State(state): State<AppState>, req: Request) -> Response {
    forward(&state, req, "/v1/my/clues").await
}

pub async fn my_points(State(state): State<AppState>, req: Request) -> Response {
    forward(&state, req, "/v1/my/points").await
}

async fn forward(state: &AppState, req: Request, path: &'static str) -> Response {
    let (parts, _) = req.into_parts();
    match try_forward(state, &parts, path).await {
        Ok(r) => r,
        Err(e) => state.reject(e).into_response(),
    }
}

async fn try_forward(
    state: &AppState,
    parts: &Parts,
    path: &'static str,
) -> Result<Response, ApiError> {
    state.limit_ip(parts)?;
    let token = state.reporter(&parts.headers)?;
    state.limit_token(&token)?;
    let authorization = parts
        .headers
        .get(header::AUTHORIZATION)
        .cloned()
        .ok_or(ApiError::Unauthorized("a bearer token is required"))?;
    let proxy = state
        .dashboard
        .as_ref()
        .ok_or(ApiError::ReadsUnavailable("no dashboard is configured"))?;
    let mut url = format!("{}{path}", proxy.base);
    if let Some(query) = parts.uri.query() {
        url.push('?');
        url.push_str(query);
    }
    let unavailable = |e: reqwest::Error| {
        tracing::warn!(error = %e, path, "dashboard-api did not answer");
        ApiError::ReadsUnavailable("the dashboard did not answer")
    };
    let answer = proxy
        .http
        .get(url)
        .header(header::AUTHORIZATION, authorization)
        .send()
        .await
        .map_err(unavailable)?;
    let status = StatusCode::from_u16(answer.status().as_u16())
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("dashboard-api status: {e}")))?;
    let content_type = answer.headers().get(header::CONTENT_TYPE).cloned();
    let mut answer = answer;
    let mut body = Vec::new();
    while let Some(chunk) = answer.chunk().await.map_err(unavailable)? {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(ApiError::Internal(anyhow::anyhow!(
                "dashboard-api answered more than {MAX_ANSWER_BYTES} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    let mut response = (status, body).into_response();
    let h = response.headers_mut();
    if let Some(ct) = content_type {
        h.insert(header::CONTENT_TYPE, ct);
    }
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    Ok(response)
}
