//! gridclue-dashboard-api: the read side. Street offices, departments and the district query the
//! ClickHouse projection through it with bearer tokens (`district`: every street; `street`: one
//! street; `department`: its own work queue).
//!
//! - [`app`]: the axum router (testable with `tower::ServiceExt::oneshot`).
//! - [`run`]: serves the router on a listener until a shutdown signal.
//! - [`alerts`]: `GET /v1/alerts` — emerging-hotspot alerts in their latest version.
//! - [`summary`]: `GET /v1/summary` — its SQL and how the answer is assembled.
//! - [`work`]: `GET /v1/work` — the work queues of a street office, a department or the
//!   district.
//! - [`indicators`]: `GET /v1/indicators` — the governance indicators (docs/ARCHITECTURE.md §6).
//! - [`reporters`]: the reporter loop — `GET /v1/my/clues`, `GET /v1/my/points`,
//!   `POST /v1/reporters/{reporter_id}/redemptions`, `GET /v1/leaderboard`.
//! - [`web`]: the web dashboard at `/dashboard` (embedded page, ECharts and district map).
//! - dashboard queries: [`breakdown`] (`GET /v1/breakdown`, `GET /v1/heatmap`), [`trend`],
//!   [`rankings`], [`lists`] (`GET /v1/lists/{list}`), [`timeline`]
//!   (`GET /v1/clues/{clue_id}/timeline`), their shared parameters ([`params`]) and CSV
//!   exports ([`csv`]); [`live`]: `GET /v1/stream`, live numbers from one shared query loop.
//! - [`reference`]: street and category names.
//! - [`error`]: `ApiError`, rendered as problem+json.

pub mod alerts;
pub mod breakdown;
pub mod case_gauges;
pub mod csv;
pub mod error;
pub mod indicators;
pub mod lists;
pub mod live;
pub mod metrics;
pub mod params;
pub mod rankings;
pub mod reference;
pub mod reporters;
pub mod summary;
pub mod timeline;
pub mod trend;
pub mod web;
pub mod work;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::rejection::JsonRejection;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, Path as UrlPath};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use gridclue_core::calendar::Calendar;
use gridclue_core::category::Catalog;
use gridclue_core::ch::ChSettings;
use gridclue_core::codes::ActorScope;
use gridclue_core::config::{self, ConfigError, Secret};
use gridclue_core::service;
use gridclue_core::tokens::{TokenKind, TokenRecord, TokenStore};
use serde::{Deserialize, Serialize};

mod dashboard;

pub use error::ApiError;
pub use metrics::DashboardMetrics;
pub use reference::Reference;
use summary::Scope;

/// Configuration (defaults → `GRIDCLUE_CONFIG` file → `GRIDCLUE_*` environment).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct DashboardConfig {
    pub listen: SocketAddr,
    #[serde(deserialize_with = "config::http_url")]
    pub clickhouse_url: String,
    pub clickhouse_database: String,
    pub clickhouse_user: String,
    pub clickhouse_password: Secret,
    /// A file holding the password (first line), instead of `clickhouse_password`.
    pub clickhouse_password_file: String,
    /// The ClickHouse user every dashboard read runs as: one whose profile is read-only
    /// (`readonly=2`), so the server itself refuses writes. Empty: the reads run as
    /// `clickhouse_user` with the setting `readonly=2` on every query (tests, old setups).
    pub clickhouse_read_user: String,
    pub clickhouse_read_password: Secret,
    /// A file holding the read user's password (first line), instead of
    /// `clickhouse_read_password`.
    pub clickhouse_read_password_file: String,
    /// Directory holding `categories.json`, `calendar.json` and `district/grids.geojson`.
    pub data_dir: String,
    /// The token file written by `gridclue-ingest tokens …` (re-read when it changes).
    pub tokens_file: String,
    /// The weights of the indicators' composite score (docs/ARCHITECTURE.md §6).
    pub score_weights: indicators::ScoreWeights,
    /// Reporters' points per reason (docs/ARCHITECTURE.md §6).
    pub points: reporters::PointRules,
    /// Targets of the indicators (`GET /v1/rankings`: actual ÷ target).
    pub targets: rankings::Targets,
    /// How often the live numbers' loop polls ClickHouse (`GET /v1/stream`).
    pub stream_poll_ms: u64,
    /// Open `GET /v1/stream` connections per token, and in all.
    pub stream_max_per_token: usize,
    pub stream_max_total: usize,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7402)),
            clickhouse_url: "http://127.0.0.1:18123".into(),
            clickhouse_database: "gridclue".into(),
            clickhouse_user: "default".into(),
            clickhouse_password: Secret::default(),
            clickhouse_password_file: String::new(),
            clickhouse_read_user: String::new(),
            clickhouse_read_password: Secret::default(),
            clickhouse_read_password_file: String::new(),
            data_dir: "data".into(),
            tokens_file: "var/tokens.json".into(),
            score_weights: indicators::ScoreWeights::default(),
            points: reporters::PointRules::default(),
            targets: rankings::Targets::default(),
            stream_poll_ms: 300,
            stream_max_per_token: 8,
            stream_max_total: 2_000,
        }
    }
}

impl DashboardConfig {
    fn stream_settings(&self) -> anyhow::Result<live::StreamSettings> {
        anyhow::ensure!(
            (50..=10_000).contains(&self.stream_poll_ms),
            "stream_poll_ms = {}: must be 50–10000",
            self.stream_poll_ms
        );
        anyhow::ensure!(
            self.stream_max_per_token >= 1 && self.stream_max_total >= 1,
            "stream_max_per_token and stream_max_total must be at least 1"
        );
        Ok(live::StreamSettings {
            poll: std::time::Duration::from_millis(self.stream_poll_ms),
            max_per_token: self.stream_max_per_token,
            max_total: self.stream_max_total,
        })
    }

    pub fn ch_settings(&self) -> Result<ChSettings, ConfigError> {
        Ok(ChSettings {
            url: self.clickhouse_url.clone(),
            database: self.clickhouse_database.clone(),
            user: self.clickhouse_user.clone(),
            password: self
                .clickhouse_password
                .or_from_file("clickhouse_password", &self.clickhouse_password_file)?,
        })
    }

    /// The connection of the read-only user, if one is configured.
    pub fn read_ch_settings(&self) -> Result<Option<ChSettings>, ConfigError> {
        if self.clickhouse_read_user.is_empty() {
            return Ok(None);
        }
        Ok(Some(ChSettings {
            url: self.clickhouse_url.clone(),
            database: self.clickhouse_database.clone(),
            user: self.clickhouse_read_user.clone(),
            password: self.clickhouse_read_password.or_from_file(
                "clickhouse_read_password",
                &self.clickhouse_read_password_file,
            )?,
        }))
    }
}

/// Everything a handler needs. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The writing connection (redemptions only).
    pub ch: clickhouse::Client,
    /// The connection of every read, cut off after [`QUERY_TIMEOUT_SECS`]: the read-only user's
    /// (see [`reader`]), or the writing one narrowed to `readonly=2`.
    pub read: clickhouse::Client,
    pub tokens: TokenStore,
    pub reference: Arc<Reference>,
    /// The working-time calendar (remaining working hours of deadlines).
    pub calendar: Arc<Calendar>,
    pub metrics: DashboardMetrics,
    pub score_weights: indicators::ScoreWeights,
    pub points: reporters::PointRules,
    /// Serialises redemptions per reporter (this process is their single writer).
    pub redemption_locks: reporters::RedemptionLocks,
    /// The district map the web dashboard draws (`None`: `/dashboard/map.json` is a 404).
    pub district_map: Option<Arc<web::DistrictMap>>,
    pub targets: rankings::Targets,
    /// The live numbers shared by every `/v1/stream` subscriber.
    pub live: live::Live,
}

/// The longest a dashboard query may run in ClickHouse (`max_execution_time`).
pub const QUERY_TIMEOUT_SECS: u32 = 10;

/// The client of the dashboard's reads. A user with a read-only profile (`dedicated_user`) is
/// refused writes by the server whatever the query says; the writing user is narrowed with the
/// setting `readonly=2` on every query instead (settings may be set, nothing written). A
/// read-only profile forbids changing `readonly` itself, so it is only sent in the second case.
pub fn reader(client: clickhouse::Client, dedicated_user: bool) -> clickhouse::Client {
    let client = if dedicated_user {
        client
    } else {
        client.with_setting("readonly", "2")
    };
    client.with_setting("max_execution_time", QUERY_TIMEOUT_SECS.to_string())
}

impl AppState {
    pub fn new(
        ch: clickhouse::Client,
        tokens: TokenStore,
        reference: Reference,
        calendar: Calendar,
    ) -> Self {
        let read = reader(ch.clone(), false);
        Self {
            ch,
            read,
            tokens,
            reference: Arc::new(reference),
            calendar: Arc::new(calendar),
            metrics: DashboardMetrics::new(),
            score_weights: indicators::ScoreWeights::default(),
            points: reporters::PointRules::default(),
            redemption_locks: reporters::RedemptionLocks::default(),
            district_map: None,
            targets: rankings::Targets::default(),
            live: live::Live::new(live::StreamSettings::default()),
        }
    }

    /// Starts the one query loop behind `/v1/stream` (once per state); it stops with `cancel`.
    pub fn start_live_numbers(
        &self,
        cancel: tokio_util::sync::CancellationToken,
    ) -> Option<tokio::task::JoinHandle<()>> {
        live::spawn(
            &self.live,
            live::LoopDeps {
                ch: self.read.clone(),
                reference: self.reference.clone(),
                weights: self.score_weights,
                metrics: self.metrics.clone(),
                poll: self.live.settings.poll,
            },
            cancel,
        )
    }

    /// Builds the state from configuration: connects to ClickHouse (retrying until it answers
    /// is the caller's business), loads reference data and opens the token file.
    pub async fn from_config(config: &DashboardConfig) -> anyhow::Result<Self> {
        let data = Path::new(&config.data_dir);
        // One reading of the map for the names and for the page's map document.
        let district = reference::load_district(data)?;
        let catalog = Catalog::load(&data.join("categories.json"))?;
        let reference = Reference::of(&district, &catalog);
        let calendar = Calendar::load(&data.join("calendar.json"))?;
        let tokens = TokenStore::open(&config.tokens_file)?;
        let ch = gridclue_core::ch::connect(&config.ch_settings()?).await?;
        let mut state = Self::new(ch, tokens, reference, calendar);
        if let Some(settings) = config.read_ch_settings()? {
            state.read = reader(gridclue_core::ch::connect_reader(&settings).await?, true);
        }
        state.score_weights = config.score_weights;
        state.points = config.points;
        state.district_map = Some(Arc::new(web::DistrictMap::new(&district)?));
        config.targets.check().map_err(anyhow::Error::msg)?;
        state.targets = config.targets;
        state.live = live::Live::new(config.stream_settings()?);
        Ok(state)
    }

    /// Authenticates the request's bearer token.
    fn token(&self, headers: &HeaderMap) -> Result<TokenRecord, ApiError> {
        let header = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        Ok(self.tokens.authenticate(header)?)
    }

    /// Records how long a query took.
    pub(crate) fn observe(&self, query: &str, started: Instant) {
        self.metrics
            .query_duration
            .with_label_values(&[query])
            .observe(started.elapsed().as_secs_f64());
    }

    /// Runs one named ClickHouse read: its duration goes to the query metric, its failure is
    /// logged once and answered 503.
    pub(crate) async fn timed<T>(
        &self,
        query: &'static str,
        read: impl Future<Output = Result<T, clickhouse::error::Error>>,
    ) -> Result<T, ApiError> {
        let started = Instant::now();
        let found = read.await.map_err(unavailable(query))?;
        self.observe(query, started);
        Ok(found)
    }

    /// Authenticates the request's bearer token and returns which statistics it may read.
    fn scope(&self, headers: &HeaderMap) -> Result<Scope, ApiError> {
        let record = self.token(headers)?;
        match record.kind {
            TokenKind::District => Ok(Scope::District),
            TokenKind::Street => match record.scope.as_ref().and_then(ActorScope::street) {
                Some(&street_code) => Ok(Scope::Street { street_code }),
                None => Err(ApiError::Forbidden(
                    "read statistics (street token without a street)",
                )),
            },
            TokenKind::Reporter => Err(ApiError::Forbidden("read statistics (reporter token)")),
            TokenKind::Department => Err(ApiError::Forbidden("read statistics (department token)")),
        }
    }
}

/// The router: `/healthz`, `/readyz`, `/metrics`, the `/v1/…` API and the `/dashboard` page.
pub fn app(state: AppState) -> Router {
    Router::new()
        .merge(web::routes())
        .merge(service::probe_routes(
            clickhouse_readiness(state.read.clone()),
            state.metrics.registry.clone(),
        ))
        .route("/v1/summary", get(get_summary))
        .route("/v1/alerts", get(get_alerts))
        .route("/v1/work", get(get_work))
        .route("/v1/indicators", get(get_indicators))
        .route("/v1/my/clues", get(get_my_clues))
        .route("/v1/my/points", get(get_my_points))
        .route("/v1/leaderboard", get(get_leaderboard))
        .route("/v1/breakdown", get(dashboard::get_breakdown))
        .route("/v1/trend", get(dashboard::get_trend))
        .route("/v1/rankings", get(dashboard::get_rankings))
        .route("/v1/lists/{list}", get(dashboard::get_list))
        .route("/v1/heatmap", get(dashboard::get_heatmap))
        .route("/v1/clues/{clue_id}/timeline", get(dashboard::get_timeline))
        .route("/v1/stream", get(dashboard::get_stream))
        .route(
            "/v1/reporters/{reporter_id}/redemptions",
            post(post_redemption).layer(DefaultBodyLimit::max(REDEMPTION_BODY_LIMIT)),
        )
        .layer(middleware::from_fn_with_state(
            state.metrics.http.clone(),
            service::track_requests,
        ))
        .with_state(state)
}

/// Ready while ClickHouse answers.
fn clickhouse_readiness(ch: clickhouse::Client) -> service::ReadinessCheck {
    Arc::new(move || {
        let ch = ch.clone();
        Box::pin(async move {
            ch.query("SELECT 1").fetch_one::<u8>().await.map_err(|e| {
                tracing::warn!(error = %e, "readiness: ClickHouse does not answer");
                "clickhouse unavailable".to_owned()
            })?;
            Ok(())
        })
    })
}

async fn get_summary(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<summary::Summary>, ApiError> {
    let scope = state.scope(&headers)?;
    let cells = state
        .timed("summary", summary::query(&state.read, &scope))
        .await?;
    Ok(Json(summary::assemble(
        scope,
        &cells,
        &state.reference,
        gridclue_core::wire::now_ms(),
    )))
}

async fn get_alerts(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<alerts::Alerts>, ApiError> {
    let scope = state.scope(&headers)?;
    let params = alerts::Params::parse(&query_pairs(query)?)?;
    let street = alerts::street_filter(&scope, &params)?;
    let found = state
        .timed(
            "alerts",
            alerts::query(&state.read, street.as_ref(), &params),
        )
        .await?;
    Ok(Json(alerts::assemble(scope, found, &state.reference)))
}

async fn get_indicators(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<indicators::Answer>, ApiError> {
    let reader = indicators::Reader::of(&state.token(&headers)?)?;
    let Query(pairs) =
        query.map_err(|e| ApiError::invalid_parameter("(query string)", e.body_text()))?;
    let plan = indicators::plan(
        &reader,
        indicators::Params::parse(&pairs)?,
        gridclue_core::wire::now_ms(),
    )?;
    let counts = state
        .timed("indicators", indicators::query(&state.read, &plan))
        .await?;
    Ok(Json(indicators::assemble(
        &plan,
        counts,
        &state.reference,
        &state.score_weights,
    )))
}

fn query_pairs(
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Vec<(String, String)>, ApiError> {
    let Query(pairs) =
        query.map_err(|e| ApiError::invalid_parameter("(query string)", e.body_text()))?;
    Ok(pairs)
}

fn unavailable(what: &'static str) -> impl Fn(clickhouse::error::Error) -> ApiError {
    move |e| {
        tracing::warn!(error = %e, query = what, "query failed");
        ApiError::Unavailable
    }
}

async fn get_my_clues(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<reporters::MyClues>, ApiError> {
    let reporter = reporters::reporter_of(&state.token(&headers)?)?;
    let params = reporters::MyParams::parse(&query_pairs(query)?)?;
    let answer = state
        .timed(
            "my_clues",
            reporters::my_clues(
                &state.read,
                &reporter,
                &params,
                &state.reference,
                gridclue_core::wire::now_ms(),
            ),
        )
        .await?;
    Ok(Json(answer))
}

async fn get_my_points(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<reporters::Points>, ApiError> {
    let reporter = reporters::reporter_of(&state.token(&headers)?)?;
    let answer = state
        .timed(
            "my_points",
            reporters::points(&state.read, &reporter, &state.points),
        )
        .await?;
    Ok(Json(answer))
}

async fn get_leaderboard(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<reporters::Leaderboard>, ApiError> {
    state.token(&headers)?;
    let params = reporters::BoardParams::parse(&query_pairs(query)?)?;
    let answer = state
        .timed(
            "leaderboard",
            reporters::leaderboard(
                &state.read,
                &state.tokens.current(),
                &state.points,
                &params,
                gridclue_core::wire::now_ms(),
            ),
        )
        .await?;
    Ok(Json(answer))
}

/// The largest redemption request body accepted.
const REDEMPTION_BODY_LIMIT: usize = 4 * 1024;

async fn post_redemption(
    State(state): State<AppState>,
    UrlPath(reporter_id): UrlPath<String>,
    headers: HeaderMap,
    body: Result<Json<reporters::RedemptionRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let token = state.token(&headers)?;
    if token.kind != TokenKind::District {
        return Err(ApiError::Forbidden("redeem points (not a district token)"));
    }
    if !reporters::known_reporter(&state.tokens.current(), &reporter_id) {
        return Err(ApiError::NotFound(format!(
            "no reporter {reporter_id:?} in the token file"
        )));
    }
    let key = reporters::idempotency_key(headers.get("idempotency-key"))?;
    let Json(request) = body.map_err(|e| ApiError::invalid_body("(body)", e.body_text()))?;
    request.check()?;
    let (redemption, replayed) = reporters::redeem(
        &state.ch,
        &state.redemption_locks,
        &state.points,
        &reporter_id,
        &key,
        &request,
        &token.id,
        gridclue_core::wire::now_ms(),
    )
    .await?;
    if !replayed {
        tracing::info!(
            reporter_id = %redemption.reporter_id,
            points = redemption.points,
            balance_after = redemption.balance_after,
            by = %token.id,
            "points redeemed"
        );
    }
    let mut response = (StatusCode::CREATED, Json(redemption)).into_response();
    if replayed {
        response.headers_mut().insert(
            "idempotent-replayed",
            header::HeaderValue::from_static("true"),
        );
    }
    Ok(response)
}

async fn get_work(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<work::Work>, ApiError> {
    let scope = work::WorkScope::of(&state.token(&headers)?)?;
    let Query(pairs) =
        query.map_err(|e| ApiError::invalid_parameter("(query string)", e.body_text()))?;
    let plan = work::plan(&scope, work::Params::parse(&pairs)?)?;
    let found = state.timed("work", work::query(&state.read, &plan)).await?;
    Ok(Json(work::assemble(
        scope,
        &plan,
        found,
        &state.reference,
        &state.calendar,
        gridclue_core::wire::now_ms(),
    )))
}

/// Serves until `shutdown` completes, then drains in-flight requests.
pub async fn run(
    listener: tokio::net::TcpListener,
    config: DashboardConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let cancel = tokio_util::sync::CancellationToken::new();
    {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            shutdown.await;
            cancel.cancel();
        });
    }
    // ClickHouse may start after us: keep trying until it answers (or we are told to stop).
    let mut backoff = std::time::Duration::from_millis(200);
    let state = loop {
        match AppState::from_config(&config).await {
            Ok(state) => break state,
            Err(e) => {
                let retryable = e
                    .downcast_ref::<gridclue_core::ch::ChError>()
                    .is_some_and(|c| c.is_retryable());
                if !retryable {
                    return Err(e);
                }
                tracing::warn!(error = %e, "ClickHouse not reachable yet; retrying");
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(std::time::Duration::from_secs(5));
    };
    let live_loop = state.start_live_numbers(cancel.clone());
    tracing::info!(addr = %listener.local_addr()?, streets = state.reference.streets.len(), "dashboard-api listening");
    let served = axum::serve(listener, app(state))
        .with_graceful_shutdown({
            let cancel = cancel.clone();
            async move { cancel.cancelled().await }
        })
        .await;
    cancel.cancel();
    if let Some(handle) = live_loop {
        handle.await.ok();
    }
    served?;
    tracing::info!("dashboard-api stopped");
    Ok(())
}

#[cfg(test)]
mod config_check {
    #[test]
    fn every_field_is_a_known_variable() {
        let unlisted = gridclue_core::config::unlisted_fields::<super::DashboardConfig>();
        assert_eq!(unlisted, Vec::<String>::new());
    }
}
