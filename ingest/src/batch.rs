//! `POST /v1/clues:batch`: a phone uploading its offline queue.
//!
//! Body: `{"clues": [<clue>, …]}` (or a bare JSON array), at most [`MAX_BATCH_ITEMS`] clues and
//! [`MAX_BATCH_BODY_BYTES`] bytes. Each item is a clue as `POST /v1/clues` takes it; its
//! identity comes from its `clue_id` or `idempotency_key` field (a queue should always send
//! one, so that re-sending the queue is harmless).
//!
//! The answer is `200` with one result per item, in order:
//! - `accepted`: the broker acknowledged the item's command (acks=all);
//! - `duplicate`: the item's clue id repeats an earlier item of the same batch, or this instance
//!   had it acknowledged recently; it is safely stored, nothing was sent again;
//! - `error`: with the same `code` a single POST would give; `retryable: true` means the same
//!   item may succeed later (the broker did not acknowledge).
//!
//! Valid items are produced concurrently and the answer waits for every acknowledgement. If the
//! broker acknowledged none of the items it was sent, the whole request is a 503 with
//! `Retry-After`. Errors of the request as a whole (auth, rate limit, media type, size, shape)
//! are problem+json like everywhere else.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use gridclue_core::tokens::TokenRecord;
use gridclue_core::wire::Channel;
use gridclue_core::ClueId;
use serde_json::{json, Value};

use crate::api::{channel_of, read_body, require_media_type, AppState, Produced, Submission};
use crate::error::ApiError;
use crate::validate::ClueRequest;

pub const MAX_BATCH_ITEMS: usize = 500;
pub const MAX_BATCH_BODY_BYTES: usize = 2 * 1024 * 1024;

enum Item {
    Ready(Box<Submission>),
    /// Repeats the item at this index (same clue id, same content).
    RepeatOf(usize, ClueId),
    Refused(ApiError),
}

pub async fn post_batch(State(state): State<AppState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    match accept_batch(&state, &parts, body).await {
        Ok(r) => r,
        Err(e) => state.reject(e).into_response(),
    }
}

fn parse_items(bytes: &[u8]) -> Result<Vec<Value>, ApiError> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| ApiError::InvalidJson(e.to_string()))?;
    let items = match value {
        Value::Array(items) => items,
        Value::Object(mut map) => match map.remove("clues") {
            Some(Value::Array(items)) => items,
            _ => {
                return Err(ApiError::InvalidJson(
                    "expected an object with a \"clues\" array".into(),
                ))
            }
        },
        _ => {
            return Err(ApiError::InvalidJson(
                "expected an object with a \"clues\" array".into(),
            ))
        }
    };
    if items.is_empty() {
        return Err(ApiError::invalid("empty_batch", "the batch has no clues"));
    }
    if items.len() > MAX_BATCH_ITEMS {
        return Err(ApiError::invalid(
            "too_many_items",
            format!(
                "the batch has {} clues; at most {MAX_BATCH_ITEMS}",
                items.len()
            ),
        ));
    }
    Ok(items)
}

async fn accept_batch(state: &AppState, parts: &Parts, body: Body) -> Result<Response, ApiError> {
    let (token, values) = read_batch(state, parts, body).await?;
    let items = prepare_items(state, &token, values, channel_of(&parts.headers));
    let outcomes = produce_ready_items(state, &items).await;
    respond(state, &items, &outcomes)
}

/// Checks of the request as a whole (limits, auth, media type, size, shape); the batch's items
/// as JSON values.
async fn read_batch(
    state: &AppState,
    parts: &Parts,
    body: Body,
) -> Result<(TokenRecord, Vec<Value>), ApiError> {
    state.limit_ip(parts)?;
    let token = state.reporter(&parts.headers)?;
    state.limit_token(&token)?;
    require_media_type(&parts.headers, "application/json")?;
    let bytes = read_body(&parts.headers, body, MAX_BATCH_BODY_BYTES).await?;
    let values = parse_items(&bytes)?;
    Ok((token, values))
}

/// Validates every item as a single POST would. A clue id that repeats an earlier item is a
/// repeat of it when the content is the same, a conflict otherwise.
fn prepare_items(
    state: &AppState,
    token: &TokenRecord,
    values: Vec<Value>,
    channel: Channel,
) -> Vec<Item> {
    let mut first_index: HashMap<ClueId, (usize, u64)> = HashMap::new();
    let mut items = Vec::with_capacity(values.len());
    for value in values {
        let index = items.len();
        let item = match serde_json::from_value::<ClueRequest>(value) {
            Err(e) => Item::Refused(ApiError::InvalidJson(e.to_string())),
            Ok(request) => match state.prepare(token, request, None, channel) {
                Err(e) => Item::Refused(e),
                Ok(s) => match first_index.get(&s.clue_id) {
                    Some(&(_, print)) if print != s.fingerprint => {
                        Item::Refused(ApiError::IdempotencyConflict)
                    }
                    Some(&(first, _)) => Item::RepeatOf(first, s.clue_id),
                    None => {
                        first_index.insert(s.clue_id, (index, s.fingerprint));
                        Item::Ready(Box::new(s))
                    }
                },
            },
        };
        items.push(item);
    }
    items
}

/// The broker's answer for each ready item (`None` for the others), produced concurrently;
/// returns after every acknowledgement.
async fn produce_ready_items(
    state: &AppState,
    items: &[Item],
) -> Vec<Option<Result<Produced, ApiError>>> {
    futures::future::join_all(items.iter().map(|item| async move {
        match item {
            Item::Ready(s) => Some(state.submit(s).await),
            _ => None,
        }
    }))
    .await
}

/// What an item's result says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ItemStatus {
    Accepted,
    Duplicate,
    Error,
}

impl ItemStatus {
    fn as_str(self) -> &'static str {
        match self {
            ItemStatus::Accepted => "accepted",
            ItemStatus::Duplicate => "duplicate",
            ItemStatus::Error => "error",
        }
    }
}

/// The counts of the answer and what the broker did with the items sent to it.
#[derive(Default)]
struct Tally {
    accepted: u64,
    duplicates: u64,
    errors: u64,
    /// Items the broker was asked to store (acknowledged or not).
    sent: usize,
    /// Items the broker did not acknowledge.
    unacked: usize,
    /// The longest wait the broker asked for.
    retry_after: Option<u64>,
}

impl Tally {
    fn count(&mut self, status: ItemStatus) {
        match status {
            ItemStatus::Accepted => self.accepted += 1,
            ItemStatus::Duplicate => self.duplicates += 1,
            ItemStatus::Error => self.errors += 1,
        }
    }
}

/// `200` with one result per item, or `503` when the broker acknowledged none of the items it
/// was sent.
fn respond(
    state: &AppState,
    items: &[Item],
    outcomes: &[Option<Result<Produced, ApiError>>],
) -> Result<Response, ApiError> {
    let mut tally = Tally::default();
    let mut results = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let (status, result) = item_result(state, index, item, outcomes, &mut tally);
        tally.count(status);
        state
            .metrics
            .batch_items
            .with_label_values(&[status.as_str()])
            .inc();
        results.push(result);
    }
    if tally.sent > 0 && tally.unacked == tally.sent {
        return Err(ApiError::BrokerUnavailable {
            retry_after_secs: tally.retry_after.unwrap_or(1),
        });
    }
    let mut response = (
        StatusCode::OK,
        Json(json!({
            "accepted": tally.accepted,
            "duplicates": tally.duplicates,
            "errors": tally.errors,
            "results": results,
        })),
    )
        .into_response();
    if let Some(secs) = tally.retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    Ok(response)
}

/// One item's result; records in `tally` what the broker did with a ready item.
fn item_result(
    state: &AppState,
    index: usize,
    item: &Item,
    outcomes: &[Option<Result<Produced, ApiError>>],
    tally: &mut Tally,
) -> (ItemStatus, Value) {
    match item {
        Item::Ready(s) => {
            let outcome = outcomes[index].as_ref().expect("ready items were sent");
            match outcome {
                Ok(Produced::Acked) => tally.sent += 1,
                Err(ApiError::BrokerUnavailable { retry_after_secs }) => {
                    tally.sent += 1;
                    tally.unacked += 1;
                    tally.retry_after = Some(tally.retry_after.unwrap_or(0).max(*retry_after_secs));
                }
                _ => {}
            }
            outcome_result(index, s.clue_id, outcome, None)
        }
        Item::RepeatOf(first, clue_id) => {
            let outcome = outcomes[*first].as_ref().expect("ready items were sent");
            outcome_result(index, *clue_id, outcome, Some(*first))
        }
        Item::Refused(e) => {
            state.metrics.rejected.with_label_values(&[e.code()]).inc();
            (ItemStatus::Error, error_json(index, None, e))
        }
    }
}

fn outcome_result(
    index: usize,
    clue_id: ClueId,
    outcome: &Result<Produced, ApiError>,
    repeat_of: Option<usize>,
) -> (ItemStatus, Value) {
    match (outcome, repeat_of) {
        (Err(e), _) => (ItemStatus::Error, error_json(index, Some(clue_id), e)),
        (Ok(Produced::Acked), None) => (
            ItemStatus::Accepted,
            json!({"index": index, "status": "accepted", "clue_id": clue_id.to_string()}),
        ),
        (Ok(Produced::AlreadyAcked), None) => (
            ItemStatus::Duplicate,
            json!({"index": index, "status": "duplicate", "clue_id": clue_id.to_string(),
                   "reason": "recently_accepted"}),
        ),
        (Ok(_), Some(first)) => (
            ItemStatus::Duplicate,
            json!({"index": index, "status": "duplicate", "clue_id": clue_id.to_string(),
                   "reason": "repeated_in_batch", "duplicate_of_index": first}),
        ),
    }
}

fn error_json(index: usize, clue_id: Option<ClueId>, e: &ApiError) -> Value {
    let mut v = json!({
        "index": index,
        "status": "error",
        "code": e.code(),
        "detail": e.to_string(),
        "retryable": e.is_retryable(),
    });
    if let Some(id) = clue_id {
        v["clue_id"] = json!(id.to_string());
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_shapes() {
        assert_eq!(parse_items(br#"{"clues":[{}]}"#).unwrap().len(), 1);
        assert_eq!(parse_items(br#"[{},{}]"#).unwrap().len(), 2);
        let code = |b: &[u8]| parse_items(b).unwrap_err().code();
        assert_eq!(code(br#"{"clues":[]}"#), "empty_batch");
        assert_eq!(code(br#"{"items":[{}]}"#), "invalid_json");
        assert_eq!(code(br#"42"#), "invalid_json");
        assert_eq!(code(b"\xff"), "invalid_json");
        let many = format!("[{}]", vec!["{}"; MAX_BATCH_ITEMS + 1].join(","));
        assert_eq!(code(many.as_bytes()), "too_many_items");
    }
}
