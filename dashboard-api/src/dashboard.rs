//! The handlers of the dashboard routes: authenticate, parse, check the scope, query, answer JSON
//! or CSV. What each route computes lives in its module.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use gridclue_core::ClueId;
use serde_json::Value;

use crate::csv::{self, Export};
use crate::error::ApiError;
use crate::indicators::Reader;
use crate::params::{self, Args, Filters, Format, Period, FILTER_NAMES};
use crate::{breakdown, lists, live, rankings, timeline, trend};
use crate::{query_pairs, AppState};

type QueryPairs = Result<Query<Vec<(String, String)>>, QueryRejection>;

/// Known parameter names: the route's own plus the filters.
fn with_filters(own: &[&'static str]) -> Vec<&'static str> {
    own.iter().copied().chain(FILTER_NAMES).collect()
}

/// The answer as JSON, or as its CSV download.
fn answer<T: Export>(format: Format, body: &T) -> Result<Response, ApiError> {
    match format {
        Format::Json => Ok(Json(body).into_response()),
        Format::Csv => {
            let value = serde_json::to_value(body).map_err(|e| ApiError::Internal(e.into()))?;
            let mut rows: Vec<Value> = value["rows"].as_array().cloned().unwrap_or_default();
            if T::WITH_TOTAL {
                rows.push(value["total"].clone());
            }
            let table = csv::table(&body.columns(), &rows);
            Ok(csv::response(&body.file_name(), table))
        }
    }
}

/// What every dashboard read starts from: who asks (their token's scope; a request without a
/// valid token is refused before its parameters are looked at) and the query string.
struct Asked {
    reader: Reader,
    pairs: Vec<(String, String)>,
}

impl Asked {
    fn new(state: &AppState, headers: &HeaderMap, query: QueryPairs) -> Result<Self, ApiError> {
        let reader = params::reader(&state.token(headers)?)?;
        let pairs = query_pairs(query)?;
        Ok(Self { reader, pairs })
    }

    /// The parameters (only `known` ones: any other is a 400) and the answer's format.
    fn table_args(
        &self,
        known: &[&str],
        headers: &HeaderMap,
    ) -> Result<(Args<'_>, Format), ApiError> {
        let args = Args::parse(&self.pairs, known)?;
        let format = Format::of(&args, headers)?;
        Ok((args, format))
    }

    /// Refuses any parameter (the route takes none).
    fn no_args(&self) -> Result<(), ApiError> {
        Args::parse(&self.pairs, &[]).map(drop)
    }
}

pub(crate) async fn get_breakdown(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: QueryPairs,
) -> Result<Response, ApiError> {
    let asked = Asked::new(&state, &headers, query)?;
    let (args, format) =
        asked.table_args(&with_filters(&["by", "from", "to", "format"]), &headers)?;
    let by = args.choice(
        "by",
        breakdown::By::Street,
        breakdown::By::parse,
        "a grouping (street, community, grid, category, department, group)",
    )?;
    let period = Period::parse(&args, None)?;
    let filters = Filters::parse(&args, &asked.reader, &state.reference)?;
    let now_ms = gridclue_core::wire::now_ms();
    let cells = state
        .timed(
            "breakdown",
            breakdown::query(&state.read, by, &period, &filters, now_ms),
        )
        .await?;
    let body = breakdown::assemble(by, &period, filters, &cells, &state.reference, now_ms);
    answer(format, &body)
}

pub(crate) async fn get_trend(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: QueryPairs,
) -> Result<Response, ApiError> {
    let asked = Asked::new(&state, &headers, query)?;
    let (args, format) =
        asked.table_args(&with_filters(&["bucket", "from", "to", "format"]), &headers)?;
    let bucket = args.choice(
        "bucket",
        trend::Bucket::Day,
        trend::Bucket::parse,
        "a bucket (hour, day, week, month)",
    )?;
    let period = Period::parse(&args, bucket.max_days())?;
    let filters = Filters::parse(&args, &asked.reader, &state.reference)?;
    // Buckets of a day or longer sum whole days.
    let hours = if bucket == trend::Bucket::Hour {
        state
            .timed("trend", trend::query(&state.read, &period, &filters))
            .await?
    } else {
        state
            .timed("trend", trend::query_days(&state.read, &period, &filters))
            .await?
    };
    let body = trend::assemble(bucket, &period, filters, &hours);
    answer(format, &body)
}

pub(crate) async fn get_rankings(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: QueryPairs,
) -> Result<Response, ApiError> {
    let asked = Asked::new(&state, &headers, query)?;
    let (args, format) =
        asked.table_args(&["by", "from", "to", "as_of", "street", "format"], &headers)?;
    let params = rankings::parse(&args)?;
    let (current, previous) =
        rankings::plans(&asked.reader, params, gridclue_core::wire::now_ms())?;
    let (now_counts, before_counts) = state
        .timed("rankings", async {
            tokio::try_join!(
                crate::indicators::query(&state.read, &current),
                crate::indicators::query(&state.read, &previous),
            )
        })
        .await?;
    let w = &state.score_weights;
    let body = rankings::assemble(
        crate::indicators::assemble(&current, now_counts, &state.reference, w),
        crate::indicators::assemble(&previous, before_counts, &state.reference, w),
        &previous,
        &state.targets,
    );
    answer(format, &body)
}

pub(crate) async fn get_list(
    State(state): State<AppState>,
    UrlPath(list): UrlPath<String>,
    headers: HeaderMap,
    query: QueryPairs,
) -> Result<Response, ApiError> {
    let asked = Asked::new(&state, &headers, query)?;
    let list = params::one_of(
        "list",
        &list,
        lists::List::parse,
        "a list (overdue, due_soon, stale, newest)",
    )?;
    let (args, format) =
        asked.table_args(&with_filters(&["limit", "cursor", "format"]), &headers)?;
    let limit = lists::parse_limit(args.get("limit"))?;
    let cursor = lists::parse_cursor(list, args.get("cursor"))?;
    let filters = Filters::parse(&args, &asked.reader, &state.reference)?;
    let now_ms = gridclue_core::wire::now_ms();
    let rows = state
        .timed(
            "lists",
            lists::query(&state.read, list, &filters, limit, cursor.as_ref(), now_ms),
        )
        .await?;
    let body = lists::assemble(list, filters, rows, limit, &state.reference, now_ms);
    answer(format, &body)
}

pub(crate) async fn get_heatmap(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: QueryPairs,
) -> Result<Response, ApiError> {
    let asked = Asked::new(&state, &headers, query)?;
    let (args, format) =
        asked.table_args(&["from", "to", "category", "street", "format"], &headers)?;
    let period = Period::parse(&args, None)?;
    let filters = Filters::parse(&args, &asked.reader, &state.reference)?;
    let body = state
        .timed(
            "heatmap",
            breakdown::heatmap(&state.read, &period, &filters),
        )
        .await?;
    answer(format, &body)
}

pub(crate) async fn get_timeline(
    State(state): State<AppState>,
    UrlPath(clue_id): UrlPath<String>,
    headers: HeaderMap,
    query: QueryPairs,
) -> Result<Response, ApiError> {
    let asked = Asked::new(&state, &headers, query)?;
    asked.no_args()?;
    let id: ClueId = clue_id
        .parse()
        .map_err(|_| ApiError::invalid_parameter("clue_id", "must be a clue id (a UUID)"))?;
    let id = id.to_string();
    let rows = state
        .timed("timeline", timeline::query(&state.read, &id))
        .await?;
    let not_found = || ApiError::NotFound(format!("no clue {id}"));
    if rows.is_empty() {
        return Err(not_found());
    }
    if let Reader::Street(own) = &asked.reader {
        // Another street's clue is answered like a clue that does not exist.
        if timeline::street_of(&rows).is_none_or(|s| s != *own) {
            return Err(not_found());
        }
    }
    let body = timeline::assemble(id.clone(), rows, &state.tokens.current());
    Ok(Json(body).into_response())
}

pub(crate) async fn get_stream(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: QueryPairs,
) -> Result<Response, ApiError> {
    let token = state.token(&headers)?;
    let reader = params::reader(&token)?;
    let pairs = query_pairs(query)?;
    Args::parse(&pairs, &[])?;
    let sse = live::subscribe(&state.live, reader, &token.id, &state.metrics)?;
    Ok(sse.into_response())
}
