//! HTTP routes of the command gateway, and the intake steps shared by the single, batch and
//! Open311 endpoints (authentication, rate limits, body limits, validation, produce).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use gridclue_core::category::Catalog;
use gridclue_core::secrets::SecretKey;
use gridclue_core::service;
use gridclue_core::tokens::{AuthError, TokenKind, TokenRecord, TokenStore};
use gridclue_core::wire::{self, Actor, ActorKind, Channel, Command, CommandEnvelope};
use gridclue_core::{ClueId, CommandId, ReporterId};
use serde_json::json;

use crate::bounds::BoundingBox;
use crate::error::ApiError;
use crate::metrics::IngestMetrics;
use crate::producer::CommandProducer;
use crate::ratelimit::{ip_key, retry_after_secs, ClientIpResolver, RateLimiter};
use crate::reads::ReadStore;
use crate::recent::{fingerprint, RecentIds, Seen};
use crate::validate::{ClueRequest, Rules};

/// Largest accepted body of a single clue.
pub const MAX_SINGLE_BODY_BYTES: usize = 64 * 1024;
/// Largest accepted idempotency key.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 200;

/// The per-token and per-address rate limits and how the client address is found.
pub struct Limits {
    pub per_token: RateLimiter<String>,
    pub per_ip: RateLimiter<IpAddr>,
    pub client_ip: ClientIpResolver,
}

/// The service's shared state: a cheap handle (one reference count per request) to
/// [`AppInner`], whose fields it dereferences to.
#[derive(Clone)]
pub struct AppState(Arc<AppInner>);

impl AppState {
    pub fn new(inner: AppInner) -> Self {
        Self(Arc::new(inner))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}

pub struct AppInner {
    pub catalog: Arc<Catalog>,
    pub tokens: TokenStore,
    /// Changes to the token file (issue, revoke) with their audit log.
    pub token_admin: crate::admin::TokenAdmin,
    pub secret: SecretKey,
    /// The district's bounding box plus the accepted margin (validation).
    pub bounds: BoundingBox,
    /// The district's own bounding box (the reporting page's map).
    pub area: BoundingBox,
    /// "<street> <community> <grid code>" by grid code, from the map (Open311 `address`).
    pub grid_addresses: std::collections::HashMap<String, String>,
    pub producer: CommandProducer,
    pub metrics: IngestMetrics,
    pub max_clock_skew: Duration,
    pub retry_after: Duration,
    pub limits: Arc<Limits>,
    pub recent: Arc<RecentIds>,
    /// The read model (ClickHouse); `None` when not configured: reads answer 503.
    pub reads: Option<Arc<ReadStore>>,
    pub open311_reads_require_key: bool,
    /// The processor's verdicts on transitions (fed by [`crate::outcomes::consume`]).
    pub outcomes: Arc<crate::outcomes::Outcomes>,
    /// How long a transition request waits for its verdict before answering 202.
    pub transition_wait: Duration,
    /// The photo store; `None` when `photos_url` is empty (photo routes answer 503).
    pub photos: Option<Arc<crate::photos::PhotoStore>>,
    /// dashboard-api, for the page's "my reports" tab; `None` when not configured.
    pub dashboard: Option<crate::my::DashboardProxy>,
    /// The district's grid map (GeoJSON) as served to the reporting page, and its ETag.
    pub map: crate::page::MapFile,
}

pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/", get(crate::page::index))
        .route("/report", get(crate::page::index))
        .route("/report/app.js", get(crate::page::script))
        .route("/report/app.css", get(crate::page::style))
        .route("/report-sw.js", get(crate::page::service_worker))
        .route("/v1/clues", post(post_clue))
        .route("/v1/clues:batch", post(crate::batch::post_batch))
        .route("/v1/import/clues", post(crate::import::post_import))
        .route("/v1/clues/{id}", get(crate::reads::get_clue))
        .route(
            "/v1/clues/{id}/transitions",
            post(crate::transitions::post_transition),
        )
        .route(
            "/v1/clues/{id}/transitions/{command_id}",
            get(crate::transitions::get_transition),
        )
        .route("/v1/photos", post(crate::photos::post_photo))
        .route("/v1/photos/{id}", get(crate::photos::get_photo))
        .route("/v1/my/clues", get(crate::my::my_clues))
        .route("/v1/my/points", get(crate::my::my_points))
        .route("/v1/map/grids.geojson", get(crate::page::grid_map))
        .route("/v1/categories", get(list_categories))
        .route("/v1/service-area", get(service_area))
        .nest("/open311/v2", crate::open311::routes())
        .merge(crate::admin::routes())
        .merge(service::probe_routes(
            broker_readiness(state.producer.clone()),
            state.metrics.registry.clone(),
        ))
        .fallback(|| async { ApiError::NoRoute })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(middleware::from_fn_with_state(
            state.metrics.http.clone(),
            service::track_requests,
        ))
        .with_state(state)
}

/// Ready while the broker answers: a 202 needs its acknowledgement.
fn broker_readiness(producer: CommandProducer) -> service::ReadinessCheck {
    Arc::new(move || {
        let producer = producer.clone();
        Box::pin(async move {
            if producer.broker_reachable().await {
                Ok(())
            } else {
                Err("broker unreachable".to_owned())
            }
        })
    })
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

/// The district's bounding box, for the reporting page's manual pin.
async fn service_area(State(state): State<AppState>) -> Json<serde_json::Value> {
    let a = state.area;
    Json(json!({
        "bbox": {"min_lat": a.min_lat, "min_lon": a.min_lon, "max_lat": a.max_lat, "max_lon": a.max_lon},
        "accepted_bbox": {
            "min_lat": state.bounds.min_lat, "min_lon": state.bounds.min_lon,
            "max_lat": state.bounds.max_lat, "max_lon": state.bounds.max_lon
        },
    }))
}

/// A validated clue ready to be produced.
pub(crate) struct Submission {
    pub clue_id: ClueId,
    pub command: CommandEnvelope,
    /// Fingerprint of the reporter and the report, to recognise a reused idempotency key.
    pub fingerprint: u64,
}

/// What producing a submission came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Produced {
    /// The broker acknowledged it now.
    Acked,
    /// This instance had it acknowledged before; nothing was sent again.
    AlreadyAcked,
}

impl AppState {
    /// Counts a refusal by its reason code.
    pub(crate) fn reject(&self, e: ApiError) -> ApiError {
        self.metrics.rejected.with_label_values(&[e.code()]).inc();
        e
    }

    /// The client's address as seen by this service (see [`ClientIpResolver`]).
    pub(crate) fn client_ip(&self, parts: &Parts) -> Option<IpAddr> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        self.limits.client_ip.resolve(peer, &parts.headers)
    }

    pub(crate) fn limit_ip(&self, parts: &Parts) -> Result<(), ApiError> {
        let Some(ip) = self.client_ip(parts) else {
            return Ok(());
        };
        self.limits
            .per_ip
            .check(&ip_key(ip))
            .map_err(|wait| ApiError::RateLimited {
                scope: "client address",
                retry_after_secs: retry_after_secs(wait),
            })
    }

    pub(crate) fn limit_token(&self, token: &TokenRecord) -> Result<(), ApiError> {
        self.limits
            .per_token
            .check(&token.id)
            .map_err(|wait| ApiError::RateLimited {
                scope: "token",
                retry_after_secs: retry_after_secs(wait),
            })
    }

    /// Authenticates an `Authorization: Bearer` header, of any token kind.
    pub(crate) fn bearer(&self, headers: &HeaderMap) -> Result<TokenRecord, ApiError> {
        let header = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        Ok(self.tokens.authenticate(header)?)
    }

    /// Authenticates an `Authorization: Bearer` header as a reporter.
    pub(crate) fn reporter(&self, headers: &HeaderMap) -> Result<TokenRecord, ApiError> {
        self.check_reporter(self.bearer(headers))
    }

    /// Authenticates a bare token (Open311's `api_key`) as a reporter.
    pub(crate) fn reporter_key(&self, key: &str) -> Result<TokenRecord, ApiError> {
        let key = key.trim();
        if key.is_empty() {
            return self.check_reporter(Err(AuthError::Missing.into()));
        }
        self.check_reporter(self.tokens.authenticate_token(key).map_err(ApiError::from))
    }

    fn check_reporter(
        &self,
        result: Result<TokenRecord, ApiError>,
    ) -> Result<TokenRecord, ApiError> {
        let token = result?;
        if token.kind != TokenKind::Reporter {
            return Err(ApiError::Forbidden("submit or read clues"));
        }
        Ok(token)
    }

    /// Validates a clue and builds its command. `header_key` is the request's
    /// `Idempotency-Key`, if any.
    pub(crate) fn prepare(
        &self,
        token: &TokenRecord,
        mut request: ClueRequest,
        header_key: Option<&HeaderValue>,
        channel: Channel,
    ) -> Result<Submission, ApiError> {
        let reporter = ReporterId::parse(&token.id)
            .map_err(|_| ApiError::Internal(anyhow::anyhow!("token id is not a reporter id")))?;
        let clue_id = clue_id_for(
            &reporter,
            request.clue_id.take().as_deref(),
            header_key,
            request.idempotency_key.take().as_deref(),
        )?;
        let now_ms = wire::now_ms();
        let rules = Rules {
            catalog: &self.catalog,
            bounds: self.bounds,
            secret: &self.secret,
            now_ms,
            max_clock_skew_ms: self.max_clock_skew.as_millis() as u64,
        };
        let report = rules.report(request, channel)?;
        let mut print = serde_json::to_vec(&report).expect("reports serialize");
        print.extend_from_slice(reporter.as_str().as_bytes());
        let command = CommandEnvelope {
            v: wire::SCHEMA_VERSION,
            command_id: CommandId::for_report(clue_id),
            clue_id,
            issued_at_ms: now_ms,
            actor: Actor {
                kind: ActorKind::Reporter,
                id: reporter.to_string(),
                group: token.group,
                scope: None,
            },
            command: Command::Report(report),
        };
        Ok(Submission {
            clue_id,
            command,
            fingerprint: fingerprint(&print),
        })
    }

    /// Whether this instance already had this clue acknowledged (same content), or the key
    /// was reused for a different clue.
    pub(crate) fn seen(&self, s: &Submission) -> Result<bool, ApiError> {
        match self.recent.check(&s.clue_id, s.fingerprint) {
            Seen::New => Ok(false),
            Seen::Same => Ok(true),
            Seen::Different => Err(ApiError::IdempotencyConflict),
        }
    }

    /// Produces the submission and waits for acks=all (unless this instance already had it
    /// acknowledged); a broker that does not acknowledge in time gives a retryable 503.
    pub(crate) async fn submit(&self, s: &Submission) -> Result<Produced, ApiError> {
        if self.seen(s)? {
            return Ok(Produced::AlreadyAcked);
        }
        self.producer
            .send(&s.command, &self.metrics)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "command not acknowledged");
                ApiError::BrokerUnavailable {
                    retry_after_secs: self.retry_after.as_secs().max(1),
                }
            })?;
        self.recent.insert(s.clue_id, s.fingerprint);
        Ok(Produced::Acked)
    }
}

/// Checks the request's media type (ignoring parameters such as `charset`).
pub(crate) fn require_media_type(
    headers: &HeaderMap,
    expected: &'static str,
) -> Result<(), ApiError> {
    let ok = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case(expected));
    if ok {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(expected))
    }
}

/// Reads at most `limit` bytes of body, refusing early on a too-large Content-Length.
pub(crate) async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::PayloadTooLarge(limit));
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_large = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if too_large {
            ApiError::PayloadTooLarge(limit)
        } else {
            ApiError::invalid("body_read_failed", "the request body could not be read")
        }
    })
}

/// The clue id for a request: the client's own, else derived from its idempotency key (header,
/// then body field), else new.
fn clue_id_for(
    reporter: &ReporterId,
    body_id: Option<&str>,
    header_key: Option<&HeaderValue>,
    body_key: Option<&str>,
) -> Result<ClueId, ApiError> {
    if let Some(id) = body_id {
        return id
            .parse()
            .map_err(|_| ApiError::invalid("invalid_clue_id", "clue_id must be a UUID"));
    }
    let invalid_key = || {
        ApiError::invalid(
            "invalid_idempotency_key",
            "an idempotency key must be 1–200 visible ASCII characters",
        )
    };
    let key = match (header_key, body_key) {
        (Some(v), _) => Some(v.to_str().map_err(|_| invalid_key())?),
        (None, Some(k)) => Some(k),
        (None, None) => None,
    };
    match key {
        None => Ok(ClueId::new_random()),
        Some(k) => {
            let ok = !k.is_empty()
                && k.len() <= MAX_IDEMPOTENCY_KEY_LEN
                && k.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
            if !ok {
                return Err(invalid_key());
            }
            Ok(ClueId::from_idempotency_key(reporter, k))
        }
    }
}

async fn post_clue(State(state): State<AppState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    match accept_clue(&state, &parts, body).await {
        Ok(r) => r,
        Err(e) => state.reject(e).into_response(),
    }
}

/// The body of a 202: the same for a first submission and every retry of it.
pub(crate) fn accepted_body(clue_id: ClueId) -> serde_json::Value {
    json!({
        "clue_id": clue_id.to_string(),
        "status_url": format!("/v1/clues/{clue_id}"),
    })
}

async fn accept_clue(state: &AppState, parts: &Parts, body: Body) -> Result<Response, ApiError> {
    state.limit_ip(parts)?;
    let token = state.reporter(&parts.headers)?;
    state.limit_token(&token)?;
    require_media_type(&parts.headers, "application/json")?;
    let bytes = read_body(&parts.headers, body, MAX_SINGLE_BODY_BYTES).await?;
    let request: ClueRequest =
        serde_json::from_slice(&bytes).map_err(|e| ApiError::InvalidJson(e.to_string()))?;
    let channel = channel_of(&parts.headers);
    let submission = state.prepare(
        &token,
        request,
        parts.headers.get("idempotency-key"),
        channel,
    )?;
    state.submit(&submission).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(accepted_body(submission.clue_id)),
    )
        .into_response())
}

/// The reporting page marks its requests with `X-Gridclue-Client: web`.
pub(crate) fn channel_of(headers: &HeaderMap) -> Channel {
    match headers.get("x-gridclue-client").map(|v| v.as_bytes()) {
        Some(b"web") => Channel::Web,
        _ => Channel::Api,
    }
}
