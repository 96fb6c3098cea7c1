//! HTTP routes of the command gateway.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use gridclue_core::category::Catalog;
use gridclue_core::secrets::SecretKey;
use gridclue_core::telemetry;
use gridclue_core::tokens::{AuthError, TokenKind, TokenRecord, TokenStore};
use gridclue_core::wire::{self, Actor, ActorKind, Channel, Command, CommandEnvelope};
use gridclue_core::{ClueId, CommandId, ReporterId};
use serde_json::json;

use crate::bounds::BoundingBox;
use crate::error::ApiError;
use crate::metrics::IngestMetrics;
use crate::producer::CommandProducer;
use crate::validate::{ClueRequest, Rules};

/// Largest accepted body of a single clue.
pub const MAX_SINGLE_BODY_BYTES: usize = 64 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub catalog: Arc<Catalog>,
    pub tokens: TokenStore,
    pub secret: SecretKey,
    pub bounds: BoundingBox,
    pub producer: CommandProducer,
    pub metrics: IngestMetrics,
    pub max_clock_skew: Duration,
    pub retry_after: Duration,
}

pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/v1/clues", post(post_clue))
        .route("/v1/categories", get(list_categories))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}

/// Counts requests by route and status, and the in-flight gauge.
async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let m = &state.metrics;
    m.in_flight.inc();
    let started = Instant::now();
    let response = next.run(req).await;
    m.in_flight.dec();
    m.request_duration
        .with_label_values(&[&route])
        .observe(started.elapsed().as_secs_f64());
    m.requests
        .with_label_values(&[&route, response.status().as_str()])
        .inc();
    response
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.producer.broker_reachable().await {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "broker unreachable").into_response()
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, telemetry::METRICS_CONTENT_TYPE)],
        telemetry::render(&state.metrics.registry),
    )
        .into_response()
}

async fn list_categories(State(state): State<AppState>) -> Json<serde_json::Value> {
    let categories: Vec<_> = state
        .catalog
        .categories()
        .iter()
        .map(|c| {
            json!({
                "code": c.code,
                "name_zh": c.name_zh,
                "name_en": c.name_en,
                "family": c.family,
                "department": c.department,
                "urgency": c.urgency,
                "deadline": c.deadline,
                "icon": c.icon,
            })
        })
        .collect();
    Json(json!({ "categories": categories }))
}

impl AppState {
    fn reject(&self, e: ApiError) -> ApiError {
        self.metrics.rejected.with_label_values(&[e.code()]).inc();
        e
    }

    fn reporter(&self, headers: &HeaderMap) -> Result<TokenRecord, ApiError> {
        let header = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let token = self.tokens.authenticate(header).map_err(|e| {
            ApiError::Unauthorized(match e {
                AuthError::Missing => "a bearer token is required",
                AuthError::Invalid => "the bearer token is not valid",
                AuthError::Revoked => "the bearer token has been revoked",
            })
        })?;
        if token.kind != TokenKind::Reporter {
            return Err(ApiError::Forbidden("submit clues"));
        }
        Ok(token)
    }
}

fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
    if is_json {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType)
    }
}

/// Reads at most `limit` bytes of body, refusing early on a too-large Content-Length.
async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::PayloadTooLarge(limit));
    }
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::PayloadTooLarge(limit))
}

/// The clue id for a request: the client's own, else derived from its Idempotency-Key, else new.
fn clue_id_for(
    reporter: &ReporterId,
    body_id: Option<&str>,
    headers: &HeaderMap,
) -> Result<ClueId, ApiError> {
    if let Some(id) = body_id {
        return id
            .parse()
            .map_err(|_| ApiError::invalid("invalid_clue_id", "clue_id must be a UUID"));
    }
    match headers.get("idempotency-key") {
        None => Ok(ClueId::new_random()),
        Some(v) => {
            let key = v.to_str().ok().filter(|k| !k.is_empty() && k.len() <= 200);
            let key = key.ok_or_else(|| {
                ApiError::invalid(
                    "invalid_idempotency_key",
                    "Idempotency-Key must be 1–200 visible ASCII characters",
                )
            })?;
            Ok(ClueId::from_idempotency_key(reporter, key))
        }
    }
}

async fn post_clue(State(state): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let result = accept_clue(&state, &parts.headers, body).await;
    result.map_err(|e| state.reject(e))
}

async fn accept_clue(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let token = state.reporter(headers)?;
    require_json(headers)?;
    let bytes = read_body(headers, body, MAX_SINGLE_BODY_BYTES).await?;
    let request: ClueRequest =
        serde_json::from_slice(&bytes).map_err(|e| ApiError::InvalidJson(e.to_string()))?;
    let reporter = ReporterId::parse(&token.id)
        .map_err(|_| ApiError::Internal(anyhow::anyhow!("token id is not a reporter id")))?;
    let clue_id = clue_id_for(&reporter, request.clue_id.as_deref(), headers)?;
    let now_ms = wire::now_ms();
    let rules = Rules {
        catalog: &state.catalog,
        bounds: state.bounds,
        secret: &state.secret,
        now_ms,
        max_clock_skew_ms: state.max_clock_skew.as_millis() as u64,
    };
    let report = rules.report(request, Channel::Api)?;
    let command = CommandEnvelope {
        v: wire::SCHEMA_VERSION,
        command_id: CommandId::for_report(clue_id),
        clue_id,
        issued_at_ms: now_ms,
        actor: Actor {
            kind: ActorKind::Reporter,
            id: reporter.to_string(),
            group: token.group,
        },
        command: Command::Report(report),
    };
    state
        .producer
        .send(&command, &state.metrics)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "command not acknowledged");
            ApiError::BrokerUnavailable {
                retry_after_secs: state.retry_after.as_secs().max(1),
            }
        })?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "clue_id": clue_id.to_string() })),
    )
        .into_response())
}
