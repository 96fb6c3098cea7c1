//! `POST /v1/clues/{clue_id}/transitions`: a street office, department, the district or a
//! reporter works a clue (accept, dispatch, handle, …), and
//! `GET /v1/clues/{clue_id}/transitions/{command_id}`: the verdict on one, later.
//!
//! The gateway checks the request's shape (400/422, naming the field) and who is asking (401),
//! then produces the command and waits a bounded time for the clue processor's verdict, because
//! only the processor (the one writer per clue) knows the clue's street, its department and its
//! status: 200 with the new status, seq and deadline, or the processor's refusal as problem+json
//! (403 role or scope, 409 status, 404 unknown clue, 503 retry later). Past the wait, 202 with a
//! `Location` to poll. With an `Idempotency-Key`, the command id is derived from the token, the
//! clue and the key: a retry is the same command and gets the first answer again, applying
//! nothing; the same key for another action is refused (409).

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use gridclue_core::category::{Catalog, DepartmentCode};
use gridclue_core::tokens::TokenRecord;
use gridclue_core::wire::{self, Command, CommandEnvelope, Lifecycle, OutcomeRecord, Verdict};
use gridclue_core::{Action, ClueId, CommandId};
use serde_json::{json, Map, Value};

use crate::api::{read_body, require_media_type, AppState, MAX_IDEMPOTENCY_KEY_LEN};
use crate::error::{ApiError, Refused};
use crate::outcomes::Awaited;
use crate::reads::rfc3339;
use crate::validate::{is_photo_ref, MAX_DESCRIPTION_CHARS, MAX_PHOTOS};

/// Largest accepted body of a transition.
pub const MAX_TRANSITION_BODY_BYTES: usize = 16 * 1024;
/// Most working hours one postponement may ask for (a quarter of a year of working days).
pub const MAX_POSTPONE_HOURS: u64 = 500;

const FIELDS: [&str; 8] = [
    "action",
    "note",
    "reason",
    "department",
    "duplicate_of",
    "hours",
    "photos",
    "rating",
];

fn field_error(code: &'static str, field: &str, detail: impl Into<String>) -> ApiError {
    ApiError::InvalidField {
        code,
        field: field.to_owned(),
        detail: detail.into(),
    }
}

/// A transition request's body, field by field, each checked for the action it is used by.
struct Fields<'a> {
    fields: &'a Map<String, Value>,
    action: Action,
}

impl Fields<'_> {
    fn present(&self, field: &str) -> Option<&Value> {
        self.fields.get(field).filter(|v| !v.is_null())
    }

    /// A text field: `required` ones must hold something besides spaces.
    fn text(&self, field: &str, required: bool) -> Result<String, ApiError> {
        let Some(v) = self.present(field) else {
            return if required {
                Err(field_error(
                    "missing_field",
                    field,
                    format!("{} needs a {field}", self.action),
                ))
            } else {
                Ok(String::new())
            };
        };
        let s = v.as_str().ok_or_else(|| {
            field_error("invalid_field", field, format!("{field} must be a string"))
        })?;
        let s = s.trim();
        if required && s.is_empty() {
            return Err(field_error(
                "missing_field",
                field,
                format!("{field} must not be empty"),
            ));
        }
        if s.chars().count() > MAX_DESCRIPTION_CHARS {
            return Err(field_error(
                "field_too_long",
                field,
                format!("{field} is longer than {MAX_DESCRIPTION_CHARS} characters"),
            ));
        }
        Ok(s.to_owned())
    }

    fn integer(&self, field: &str, min: u64, max: u64) -> Result<Option<u64>, ApiError> {
        let Some(v) = self.present(field) else {
            return Ok(None);
        };
        match v.as_u64() {
            Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
            _ => Err(field_error(
                "invalid_field",
                field,
                format!("{field} must be a whole number from {min} to {max}"),
            )),
        }
    }

    fn required_integer(&self, field: &str, min: u64, max: u64) -> Result<u64, ApiError> {
        self.integer(field, min, max)?.ok_or_else(|| {
            field_error(
                "missing_field",
                field,
                format!(
                    "{} needs {field} (a whole number from {min} to {max})",
                    self.action
                ),
            )
        })
    }
}

/// Parses a transition request into the command it asks for. `clue` is the clue it is about.
pub fn parse_request(bytes: &[u8], clue: ClueId, catalog: &Catalog) -> Result<Command, ApiError> {
    let fields = body_object(bytes)?;
    let action = requested_action(&fields)?;
    let Some(used) = fields_taken(action) else {
        return Err(unknown_action(action.as_str()));
    };
    check_no_unused_field(&fields, action, used)?;
    let b = Fields {
        fields: &fields,
        action,
    };
    let lifecycle = match action {
        Action::Accept => Lifecycle::Accept,
        Action::VerifyOk => Lifecycle::VerifyOk,
        Action::Start => Lifecycle::Start,
        Action::Reject => Lifecycle::Reject {
            reason: b.text("reason", true)?,
        },
        Action::VerifyFail => Lifecycle::VerifyFail {
            reason: b.text("reason", true)?,
        },
        Action::Return => Lifecycle::Return {
            reason: b.text("reason", true)?,
        },
        Action::DenyPostpone => Lifecycle::DenyPostpone {
            reason: b.text("reason", true)?,
        },
        Action::Withdraw => Lifecycle::Withdraw {
            reason: b.text("reason", false)?,
        },
        Action::Merge => Lifecycle::Merge {
            duplicate_of: merge_target(&b, clue)?,
        },
        Action::Dispatch => Lifecycle::Dispatch {
            department: known_department(&b, catalog)?,
        },
        Action::Handle => {
            let photos = photo_references(&b)?;
            Lifecycle::Handle {
                note: b.text("note", true)?,
                photos,
            }
        }
        Action::RequestPostpone => Lifecycle::RequestPostpone {
            reason: b.text("reason", true)?,
            working_hours: b.required_integer("hours", 1, MAX_POSTPONE_HOURS)? as u32,
        },
        Action::ApprovePostpone => Lifecycle::ApprovePostpone {
            note: b.text("note", false)?,
            working_hours: b.integer("hours", 1, MAX_POSTPONE_HOURS)?.map(|h| h as u32),
        },
        Action::Supervise => Lifecycle::Supervise {
            note: b.text("note", true)?,
        },
        Action::Rate => Lifecycle::Rate {
            rating: b.required_integer("rating", 1, 5)? as u8,
            note: b.text("note", false)?,
        },
        Action::Report => return Err(unknown_action(action.as_str())),
    };
    Ok(Command::Lifecycle(lifecycle))
}

fn body_object(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| ApiError::InvalidJson(e.to_string()))?;
    let Value::Object(fields) = value else {
        return Err(ApiError::InvalidJson(
            "the body must be a JSON object".into(),
        ));
    };
    if let Some(unknown) = fields.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(field_error(
            "unknown_field",
            unknown,
            format!(
                "unknown field {unknown:?}; the fields are {}",
                FIELDS.join(", ")
            ),
        ));
    }
    Ok(fields)
}

/// The transition named by `action`.
fn requested_action(fields: &Map<String, Value>) -> Result<Action, ApiError> {
    let name = match fields.get("action") {
        None | Some(Value::Null) => {
            return Err(field_error("missing_field", "action", "action is required"))
        }
        Some(Value::String(s)) => s.as_str(),
        Some(_) => {
            return Err(field_error(
                "invalid_field",
                "action",
                "action must be a string",
            ))
        }
    };
    Action::transition(name).ok_or_else(|| unknown_action(name))
}

fn unknown_action(name: &str) -> ApiError {
    let names: Vec<&str> = Action::TRANSITIONS.iter().map(|a| a.as_str()).collect();
    field_error(
        "unknown_action",
        "action",
        format!(
            "unknown action {name:?}; the actions are {}",
            names.join(", ")
        ),
    )
}

/// The fields a transition takes besides `action`; `None` for what is not a transition.
fn fields_taken(action: Action) -> Option<&'static [&'static str]> {
    Some(match action {
        Action::Accept | Action::VerifyOk | Action::Start => &[],
        Action::Reject | Action::VerifyFail | Action::Return | Action::DenyPostpone => &["reason"],
        Action::Withdraw => &["reason"],
        Action::Merge => &["duplicate_of"],
        Action::Dispatch => &["department"],
        Action::Handle => &["note", "photos"],
        Action::RequestPostpone => &["reason", "hours"],
        Action::ApprovePostpone => &["note", "hours"],
        Action::Supervise => &["note"],
        Action::Rate => &["rating", "note"],
        Action::Report => return None,
    })
}

/// A non-null field the action does not take is an error, so a typo is not ignored.
fn check_no_unused_field(
    fields: &Map<String, Value>,
    action: Action,
    used: &[&str],
) -> Result<(), ApiError> {
    let Some(extra) = fields
        .iter()
        .filter(|(k, v)| k.as_str() != "action" && !v.is_null())
        .map(|(k, _)| k)
        .find(|k| !used.contains(&k.as_str()))
    else {
        return Ok(());
    };
    Err(field_error(
        "unused_field",
        extra,
        format!(
            "{action} does not take {extra}{}",
            if used.is_empty() {
                String::new()
            } else {
                format!(" (it takes {})", used.join(", "))
            }
        ),
    ))
}

fn merge_target(b: &Fields<'_>, clue: ClueId) -> Result<ClueId, ApiError> {
    let raw = b.text("duplicate_of", true)?;
    let target: ClueId = raw.parse().map_err(|_| {
        field_error(
            "invalid_field",
            "duplicate_of",
            "duplicate_of must be a clue id (UUID)",
        )
    })?;
    if target == clue {
        return Err(field_error(
            "invalid_field",
            "duplicate_of",
            "a clue cannot be merged into itself",
        ));
    }
    Ok(target)
}

/// `department`: a department of the catalog (a malformed code is as unknown as a missing one).
fn known_department(b: &Fields<'_>, catalog: &Catalog) -> Result<DepartmentCode, ApiError> {
    let department = b.text("department", true)?;
    if let Some(known) = catalog.department(&department) {
        return Ok(known.code.clone());
    }
    let known: Vec<&str> = catalog
        .departments()
        .iter()
        .map(|d| d.code.as_str())
        .collect();
    Err(field_error(
        "unknown_department",
        "department",
        format!(
            "unknown department {department:?}; the departments are {}",
            known.join(", ")
        ),
    ))
}

/// `photos`: absent, or at most [`MAX_PHOTOS`] http(s) URLs or `sha256:` hashes.
fn photo_references(b: &Fields<'_>) -> Result<Vec<String>, ApiError> {
    let items = match b.present("photos") {
        None => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => {
            return Err(field_error(
                "invalid_field",
                "photos",
                "photos must be an array of strings",
            ))
        }
    };
    if items.len() > MAX_PHOTOS {
        return Err(field_error(
            "too_many_photos",
            "photos",
            format!("{} photos; at most {MAX_PHOTOS}", items.len()),
        ));
    }
    items
        .iter()
        .map(|p| match p.as_str() {
            Some(s) if is_photo_ref(s) => Ok(s.to_owned()),
            _ => Err(field_error(
                "invalid_photo_reference",
                "photos",
                "each photo is an http(s) URL or a sha256:<hex> hash",
            )),
        })
        .collect()
}

/// The command id of a transition: derived from the token, the clue and the idempotency key
/// when there is one, else new.
fn command_id_for(
    token: &TokenRecord,
    clue: ClueId,
    key: Option<&HeaderValue>,
) -> Result<CommandId, ApiError> {
    let Some(key) = key else {
        return Ok(CommandId::new_random());
    };
    let key = key
        .to_str()
        .ok()
        .filter(|k| {
            !k.is_empty()
                && k.len() <= MAX_IDEMPOTENCY_KEY_LEN
                && k.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
        })
        .ok_or_else(|| {
            field_error(
                "invalid_idempotency_key",
                "Idempotency-Key",
                "an idempotency key must be 1–200 visible ASCII characters",
            )
        })?;
    Ok(CommandId::for_transition(&token.id, clue, key))
}

fn poll_url(clue: ClueId, command: CommandId) -> String {
    format!("/v1/clues/{clue}/transitions/{command}")
}

/// The answer to a verdict: 200 with the new state, or the refusal.
fn answer(state: &AppState, o: &OutcomeRecord) -> Response {
    let action = o.action.as_str();
    match &o.verdict {
        Verdict::Applied {
            status,
            seq,
            deadline_ms,
        } => {
            state
                .metrics
                .transitions
                .with_label_values(&[action, "applied"])
                .inc();
            (
                StatusCode::OK,
                Json(json!({
                    "clue_id": o.clue_id.to_string(),
                    "command_id": o.command_id.to_string(),
                    "action": o.action,
                    "outcome": "applied",
                    "status": status,
                    "seq": seq,
                    "deadline": deadline_ms.map(rfc3339),
                    "deadline_ms": deadline_ms,
                    "decided_at": rfc3339(o.decided_at_ms),
                })),
            )
                .into_response()
        }
        Verdict::Refused {
            class,
            reason,
            detail,
            status,
        } => {
            let label = match class {
                gridclue_core::roles::RefusalClass::Forbidden => "forbidden",
                gridclue_core::roles::RefusalClass::Conflict => "conflict",
                gridclue_core::roles::RefusalClass::NotFound => "not_found",
                gridclue_core::roles::RefusalClass::Unavailable => "unavailable",
            };
            state
                .metrics
                .transitions
                .with_label_values(&[action, label])
                .inc();
            state
                .reject(ApiError::Refused(Box::new(Refused {
                    class: *class,
                    reason: *reason,
                    detail: detail.clone(),
                    command_id: o.command_id,
                    action: o.action,
                    clue_status: *status,
                })))
                .into_response()
        }
    }
}

/// 202: the verdict is not known yet; poll `Location`.
fn pending(state: &AppState, clue: ClueId, command: CommandId, action: Action) -> Response {
    state
        .metrics
        .transitions
        .with_label_values(&[action.as_str(), "pending"])
        .inc();
    let url = poll_url(clue, command);
    let mut r = (
        StatusCode::ACCEPTED,
        Json(json!({
            "clue_id": clue.to_string(),
            "command_id": command.to_string(),
            "action": action,
            "outcome": "pending",
            "poll_url": url,
        })),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&url) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

pub async fn post_transition(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    req: Request,
) -> Response {
    let (parts, body) = req.into_parts();
    let id = id.map(|Path(id)| id).unwrap_or_default();
    match transition(&state, &parts, body, &id).await {
        Ok(r) => r,
        Err(e) => state.reject(e).into_response(),
    }
}

async fn transition(
    state: &AppState,
    parts: &Parts,
    body: Body,
    id: &str,
) -> Result<Response, ApiError> {
    state.limit_ip(parts)?;
    let token = state.bearer(&parts.headers)?;
    state.limit_token(&token)?;
    let clue: ClueId = id.parse().map_err(|_| ApiError::NotFound)?;
    require_media_type(&parts.headers, "application/json")?;
    let bytes = read_body(&parts.headers, body, MAX_TRANSITION_BODY_BYTES).await?;
    let command = parse_request(&bytes, clue, &state.catalog)?;
    let action = command.action();
    let command_id = command_id_for(&token, clue, parts.headers.get("idempotency-key"))?;
    let check = |o: &OutcomeRecord| -> Result<Response, ApiError> {
        if o.action != action || o.clue_id != clue {
            return Err(ApiError::IdempotencyConflict);
        }
        Ok(answer(state, o))
    };
    // Registered before producing, so a fast verdict is not missed.
    let rx = match state.outcomes.subscribe(command_id) {
        // A retry whose verdict this instance has: answered without producing again.
        Awaited::Known(o) => return check(&o),
        Awaited::Pending(rx) => rx,
    };
    let envelope = CommandEnvelope {
        v: wire::SCHEMA_VERSION,
        command_id,
        clue_id: clue,
        issued_at_ms: wire::now_ms(),
        actor: token.actor(),
        command,
    };
    if let Err(e) = state.producer.send(&envelope, &state.metrics).await {
        state.outcomes.forget_waiters(&command_id);
        tracing::warn!(error = %e, "transition not acknowledged");
        return Err(ApiError::BrokerUnavailable {
            retry_after_secs: state.retry_after.as_secs().max(1),
        });
    }
    state.outcomes.expect(command_id, clue, &token.id, action);
    match tokio::time::timeout(state.transition_wait, rx).await {
        Ok(Ok(o)) => check(&o),
        _ => {
            state.outcomes.forget_waiters(&command_id);
            Ok(pending(state, clue, command_id, action))
        }
    }
}

/// `GET /v1/clues/{clue_id}/transitions/{command_id}`: the verdict, for the token that asked.
pub async fn get_transition(
    State(state): State<AppState>,
    ids: Result<Path<(String, String)>, PathRejection>,
    req: Request,
) -> Response {
    let (parts, _) = req.into_parts();
    let (clue, command) = ids.map(|Path(ids)| ids).unwrap_or_default();
    match poll(&state, &parts, &clue, &command).await {
        Ok(r) => r,
        Err(e) => state.reject(e).into_response(),
    }
}

async fn poll(
    state: &AppState,
    parts: &Parts,
    clue: &str,
    command: &str,
) -> Result<Response, ApiError> {
    state.limit_ip(parts)?;
    let token = state.bearer(&parts.headers)?;
    state.limit_token(&token)?;
    let clue: ClueId = clue.parse().map_err(|_| ApiError::NotFound)?;
    let command = CommandId(command.parse().map_err(|_| ApiError::NotFound)?);
    if let Some(o) = state.outcomes.get(&command) {
        if o.clue_id == clue && o.actor_id == token.id {
            return Ok(answer(state, &o));
        }
        return Err(ApiError::NotFound);
    }
    match state.outcomes.expected(&command) {
        Some((c, actor, action)) if c == clue && actor == token.id => {
            Ok(pending(state, clue, command, action))
        }
        _ => Err(ApiError::NotFound),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Catalog {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/categories.json");
        Catalog::load(&path).unwrap()
    }

    fn parse(body: &str) -> Result<Command, ApiError> {
        parse_request(
            body.as_bytes(),
            ClueId(uuid::Uuid::from_u128(1)),
            &catalog(),
        )
    }

    /// (body, status, code, field)
    fn refused(body: &str) -> (u16, String, Option<String>) {
        match parse(body) {
            Ok(c) => panic!("{body} parsed as {c:?}"),
            Err(e) => {
                let field = match &e {
                    ApiError::InvalidField { field, .. } => Some(field.clone()),
                    _ => None,
                };
                (e.status().as_u16(), e.code().to_owned(), field)
            }
        }
    }

    #[test]
    fn every_action_parses_into_its_command() {
        let other = uuid::Uuid::from_u128(2);
        let table: Vec<(String, Command)> = vec![
            (
                r#"{"action":"accept"}"#.into(),
                Command::Lifecycle(Lifecycle::Accept),
            ),
            (
                r#"{"action":"reject","reason":" not public space "}"#.into(),
                Command::Lifecycle(Lifecycle::Reject {
                    reason: "not public space".into(),
                }),
            ),
            (
                format!(r#"{{"action":"merge","duplicate_of":"{other}"}}"#),
                Command::Lifecycle(Lifecycle::Merge {
                    duplicate_of: ClueId(other),
                }),
            ),
            (
                r#"{"action":"dispatch","department":"water_affairs"}"#.into(),
                Command::Lifecycle(Lifecycle::Dispatch {
                    department: "water_affairs".parse().unwrap(),
                }),
            ),
            (
                r#"{"action":"verify_ok"}"#.into(),
                Command::Lifecycle(Lifecycle::VerifyOk),
            ),
            (
                r#"{"action":"verify_fail","reason":"still broken"}"#.into(),
                Command::Lifecycle(Lifecycle::VerifyFail {
                    reason: "still broken".into(),
                }),
            ),
            (
                r#"{"action":"start"}"#.into(),
                Command::Lifecycle(Lifecycle::Start),
            ),
            (
                r#"{"action":"handle","note":"replaced","photos":["https://p.example/1.jpg"]}"#
                    .into(),
                Command::Lifecycle(Lifecycle::Handle {
                    note: "replaced".into(),
                    photos: vec!["https://p.example/1.jpg".into()],
                }),
            ),
            (
                r#"{"action":"return","reason":"not ours"}"#.into(),
                Command::Lifecycle(Lifecycle::Return {
                    reason: "not ours".into(),
                }),
            ),
            (
                r#"{"action":"request_postpone","reason":"parts","hours":8}"#.into(),
                Command::Lifecycle(Lifecycle::RequestPostpone {
                    reason: "parts".into(),
                    working_hours: 8,
                }),
            ),
            (
                r#"{"action":"approve_postpone"}"#.into(),
                Command::Lifecycle(Lifecycle::ApprovePostpone {
                    note: String::new(),
                    working_hours: None,
                }),
            ),
            (
                r#"{"action":"approve_postpone","hours":4,"note":"ok"}"#.into(),
                Command::Lifecycle(Lifecycle::ApprovePostpone {
                    note: "ok".into(),
                    working_hours: Some(4),
                }),
            ),
            (
                r#"{"action":"deny_postpone","reason":"no"}"#.into(),
                Command::Lifecycle(Lifecycle::DenyPostpone {
                    reason: "no".into(),
                }),
            ),
            (
                r#"{"action":"supervise","note":"督办"}"#.into(),
                Command::Lifecycle(Lifecycle::Supervise {
                    note: "督办".into(),
                }),
            ),
            (
                r#"{"action":"withdraw"}"#.into(),
                Command::Lifecycle(Lifecycle::Withdraw {
                    reason: String::new(),
                }),
            ),
            (
                r#"{"action":"rate","rating":5,"note":null}"#.into(),
                Command::Lifecycle(Lifecycle::Rate {
                    rating: 5,
                    note: String::new(),
                }),
            ),
        ];
        let mut seen: Vec<Action> = Vec::new();
        for (body, want) in table {
            let got = parse(&body).unwrap_or_else(|e| panic!("{body}: {e}"));
            assert_eq!(got, want, "{body}");
            seen.push(got.action());
        }
        for a in Action::TRANSITIONS {
            assert!(seen.contains(&a), "{a} untested");
        }
    }

    #[test]
    fn bad_bodies_are_refused_naming_the_field() {
        let cases: [(&str, u16, &str, Option<&str>); 19] = [
            ("not json", 400, "invalid_json", None),
            ("[1,2]", 400, "invalid_json", None),
            ("{}", 422, "missing_field", Some("action")),
            (r#"{"action":7}"#, 422, "invalid_field", Some("action")),
            (
                r#"{"action":"teleport"}"#,
                422,
                "unknown_action",
                Some("action"),
            ),
            (
                r#"{"action":"report"}"#,
                422,
                "unknown_action",
                Some("action"),
            ),
            (
                r#"{"action":"accept","colour":"red"}"#,
                422,
                "unknown_field",
                Some("colour"),
            ),
            (
                r#"{"action":"accept","reason":"x"}"#,
                422,
                "unused_field",
                Some("reason"),
            ),
            (
                r#"{"action":"reject"}"#,
                422,
                "missing_field",
                Some("reason"),
            ),
            (
                r#"{"action":"reject","reason":"  "}"#,
                422,
                "missing_field",
                Some("reason"),
            ),
            (
                r#"{"action":"reject","reason":5}"#,
                422,
                "invalid_field",
                Some("reason"),
            ),
            (
                r#"{"action":"merge","duplicate_of":"nope"}"#,
                422,
                "invalid_field",
                Some("duplicate_of"),
            ),
            (
                r#"{"action":"merge","duplicate_of":"00000000-0000-0000-0000-000000000001"}"#,
                422,
                "invalid_field",
                Some("duplicate_of"),
            ),
            (
                r#"{"action":"dispatch","department":"sewers"}"#,
                422,
                "unknown_department",
                Some("department"),
            ),
            (
                r#"{"action":"request_postpone","reason":"r","hours":"8"}"#,
                422,
                "invalid_field",
                Some("hours"),
            ),
            (
                r#"{"action":"request_postpone","reason":"r","hours":0}"#,
                422,
                "invalid_field",
                Some("hours"),
            ),
            (
                r#"{"action":"request_postpone","reason":"r"}"#,
                422,
                "missing_field",
                Some("hours"),
            ),
            (
                r#"{"action":"rate","rating":6}"#,
                422,
                "invalid_field",
                Some("rating"),
            ),
            (
                r#"{"action":"handle","note":"x","photos":["ftp://x"]}"#,
                422,
                "invalid_photo_reference",
                Some("photos"),
            ),
        ];
        for (body, status, code, field) in cases {
            assert_eq!(
                refused(body),
                (status, code.to_owned(), field.map(str::to_owned)),
                "{body}"
            );
        }
        let long = format!(r#"{{"action":"supervise","note":"{}"}}"#, "x".repeat(2_001));
        assert_eq!(refused(&long).1, "field_too_long");
    }
}
