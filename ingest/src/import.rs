//! `POST /v1/import/clues`: a district's history from an older system, back-dated.
//!
//! A district moving to gridclue brings the clues of its old system along: each with the time it
//! was reported and the timeline of actions taken on it (who, what, when). The import turns them
//! into the same commands live clients send, with the historical times as the commands' issue
//! times, so the clue processor decides them as it decides live ones (status machine, roles and
//! scopes, working-time deadlines from the historical acceptance) and every dashboard counts
//! them on the days they happened.
//!
//! - **District only** (the district owns the history); the token's id is the actor id of every
//!   imported action, in the role and scope the old system recorded.
//! - **Marked as imported**: the report's channel is `import`.
//! - **Validated like live ones**: the report by the same rules as `POST /v1/clues` (category,
//!   place, text, photos), each action by the rules of a live transition (a known action, the
//!   fields it needs, a role that may take it); times must run forward from the report and not
//!   lie in the future. A clue that fails is answered with its error and nothing of it is sent.
//! - **Exactly once**: a clue's id derives from `source` and `source_id` (UUID v5), its
//!   commands' ids from the clue id and their place in the timeline. A clue the projection
//!   already holds is answered `already_imported` and not sent again; a clue sent twice anyway
//!   (two imports at once, or the projection behind) is the same commands, which the processor
//!   applies once (it remembers a clue's recent command ids — hence at most
//!   [`MAX_TIMELINE`] actions per clue — and refuses a second report of the same clue).
//!
//! Body: `{"source": "<system name>", "clues": [<clue>, …]}`, at most [`MAX_IMPORT_CLUES`]
//! clues and [`MAX_IMPORT_BODY_BYTES`]. A clue:
//! `{"source_id", "category", "lat", "lon", "description"?, "photos"?, "reported_at" (RFC 3339),
//!   "reporter_group"?, "timeline": [{"action", "at" (RFC 3339), "by": {"role", "scope"?},
//!   "reason"?, "note"?, "department"?, "duplicate_of"? (clue id) | "duplicate_of_source_id"?,
//!   "hours"?, "rating"?, "photos"?}]}`.
//! Answer `202`: `{"source", "accepted", "already_imported", "errors", "commands", "results":
//! [{"source_id", "clue_id"?, "status": "accepted" | "already_imported" | "error", "code"?,
//! "detail"?, "retryable"?}]}`. The commands are acknowledged by the broker (acks=all) before the
//! answer; what the processor made of them shows in the projection moments later (and refusals
//! in the DLQ).

use std::collections::{HashMap, HashSet};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::DateTime;
use futures::StreamExt;
use gridclue_core::roles::role_actions;
use gridclue_core::tokens::{TokenKind, TokenRecord};
use gridclue_core::wire::{self, Actor, ActorKind, Channel, Command, CommandEnvelope};
use gridclue_core::{ClueId, CommandId, ReporterGroup};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::api::{read_body, require_media_type, AppState};
use crate::error::ApiError;
use crate::validate::{ClueRequest, Rules};

pub const MAX_IMPORT_CLUES: usize = 500;
pub const MAX_IMPORT_BODY_BYTES: usize = 8 * 1024 * 1024;
/// Actions per imported clue: the processor remembers a clue's last 16 command ids (the report
/// and 15 actions), which is what makes a repeated import harmless without the projection.
pub const MAX_TIMELINE: usize = 15;
/// How far back history may reach.
pub const MAX_HISTORY_DAYS: u64 = 730;
/// Clues whose commands are produced at once.
const CONCURRENT_CLUES: usize = 32;

/// The namespace of imported clue ids (UUID v5 of "<source>\u{1f}<source_id>").
const IMPORT_NAMESPACE: Uuid = Uuid::from_u128(0x5c1b_7d0e_8a4f_4e2b_9f3a_2d6c_0b1e_7a45);

/// The clue id an imported record gets: the same for the same source and source id, always.
pub fn imported_clue_id(source: &str, source_id: &str) -> ClueId {
    let name = format!("{source}\u{1f}{source_id}");
    ClueId(Uuid::new_v5(&IMPORT_NAMESPACE, name.as_bytes()))
}

/// The command id of the `index`-th action of an imported clue's timeline.
pub fn imported_command_id(clue: ClueId, index: usize) -> CommandId {
    CommandId(Uuid::new_v5(
        &clue.as_uuid(),
        format!("import/{index}").as_bytes(),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportRequest {
    source: String,
    clues: Vec<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportClue {
    source_id: String,
    category: String,
    lat: f64,
    lon: f64,
    #[serde(default)]
    description: String,
    #[serde(default)]
    photos: Vec<String>,
    reported_at: String,
    #[serde(default)]
    reporter_group: Option<String>,
    /// Each entry: `at` and `by` (and `duplicate_of_source_id`), the rest a transition's body.
    #[serde(default)]
    timeline: Vec<serde_json::Map<String, Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportActor {
    role: String,
    #[serde(default)]
    scope: Option<String>,
}

/// One clue ready to be sent: its commands in timeline order.
struct Prepared {
    source_id: String,
    clue_id: ClueId,
    commands: Vec<CommandEnvelope>,
}

enum Outcome {
    Ready(Prepared),
    Refused {
        source_id: Option<String>,
        error: ApiError,
    },
}

pub async fn post_import(State(state): State<AppState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    match import(&state, &parts, body).await {
        Ok(r) => r,
        Err(e) => state.reject(e).into_response(),
    }
}

fn is_name(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_graphic())
}

impl AppState {
    fn district(&self, parts: &Parts) -> Result<TokenRecord, ApiError> {
        self.limit_ip(parts)?;
        let token = self.bearer(&parts.headers)?;
        self.limit_token(&token)?;
        if token.kind != TokenKind::District {
            return Err(ApiError::Forbidden("import history (district tokens only)"));
        }
        Ok(token)
    }
}

async fn import(state: &AppState, parts: &Parts, body: Body) -> Result<Response, ApiError> {
    let token = state.district(parts)?;
    require_media_type(&parts.headers, "application/json")?;
    let bytes = read_body(&parts.headers, body, MAX_IMPORT_BODY_BYTES).await?;
    let request: ImportRequest =
        serde_json::from_slice(&bytes).map_err(|e| ApiError::InvalidJson(e.to_string()))?;
    if !is_name(&request.source, 64) {
        return Err(ApiError::invalid(
            "invalid_source",
            "source must be 1–64 visible ASCII characters naming the system the history comes from",
        ));
    }
    if request.clues.is_empty() {
        return Err(ApiError::invalid("empty_batch", "clues is empty"));
    }
    if request.clues.len() > MAX_IMPORT_CLUES {
        return Err(ApiError::invalid(
            "too_many_items",
            format!(
                "{} clues; at most {MAX_IMPORT_CLUES} per request",
                request.clues.len()
            ),
        ));
    }
    let now_ms = wire::now_ms();
    let mut seen: HashSet<String> = HashSet::new();
    let mut outcomes: Vec<Outcome> = request
        .clues
        .into_iter()
        .map(|v| {
            let source_id = v["source_id"].as_str().map(str::to_owned);
            let prepared = serde_json::from_value::<ImportClue>(v)
                .map_err(|e| ApiError::invalid("invalid_clue", e.to_string()))
                .and_then(|c| {
                    if !seen.insert(c.source_id.clone()) {
                        return Err(ApiError::invalid(
                            "duplicate_source_id",
                            "this source_id appears earlier in the same request",
                        ));
                    }
                    prepare(state, &token, &request.source, c, now_ms)
                });
            match prepared {
                Ok(p) => Outcome::Ready(p),
                Err(error) => Outcome::Refused { source_id, error },
            }
        })
        .collect();

    // What the projection already holds is not sent again.
    let ids: Vec<String> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Ready(p) => Some(p.clue_id.to_string()),
            Outcome::Refused { .. } => None,
        })
        .collect();
    let present: HashSet<String> = match &state.reads {
        Some(reads) if !ids.is_empty() => reads.existing(&ids).await?,
        _ => HashSet::new(),
    };

    let sends: Vec<(usize, Vec<CommandEnvelope>)> = outcomes
        .iter()
        .enumerate()
        .filter_map(|(i, o)| match o {
            Outcome::Ready(p) if !present.contains(&p.clue_id.to_string()) => {
                Some((i, p.commands.clone()))
            }
            _ => None,
        })
        .collect();
    let sent: HashMap<usize, Result<usize, ApiError>> = futures::stream::iter(sends)
        .map(|(i, commands)| {
            let state = state.clone();
            async move {
                for (n, c) in commands.iter().enumerate() {
                    if let Err(e) = state.producer.send(c, &state.metrics).await {
                        tracing::warn!(error = %e, sent = n, "import command not acknowledged");
                        let retry_after_secs = state.retry_after.as_secs().max(1);
                        return (i, Err(ApiError::BrokerUnavailable { retry_after_secs }));
                    }
                }
                (i, Ok(commands.len()))
            }
        })
        .buffer_unordered(CONCURRENT_CLUES)
        .collect()
        .await;

    let (mut accepted, mut already, mut errors, mut commands) = (0, 0, 0, 0);
    let results: Vec<Value> = outcomes
        .drain(..)
        .enumerate()
        .map(|(i, o)| match o {
            Outcome::Refused { source_id, error } => {
                errors += 1;
                let error = state.reject(error);
                let mut r = json!({"source_id": source_id, "status": "error", "code": error.code(),
                       "detail": error.to_string(), "retryable": error.is_retryable()});
                if let ApiError::InvalidField { field, .. } = &error {
                    r["field"] = json!(field);
                }
                r
            }
            Outcome::Ready(p) => match sent.get(&i) {
                Some(Ok(n)) => {
                    accepted += 1;
                    commands += n;
                    json!({"source_id": p.source_id, "clue_id": p.clue_id.to_string(), "status": "accepted"})
                }
                Some(Err(e)) => {
                    errors += 1;
                    json!({"source_id": p.source_id, "clue_id": p.clue_id.to_string(), "status": "error",
                           "code": e.code(), "detail": e.to_string(), "retryable": true})
                }
                // Not sent: the projection holds it already.
                None => {
                    already += 1;
                    json!({"source_id": p.source_id, "clue_id": p.clue_id.to_string(), "status": "already_imported"})
                }
            },
        })
        .collect();
    tracing::info!(
        by = %token.id, source = %request.source, accepted, already_imported = already, errors, commands,
        "history imported"
    );
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "source": request.source,
            "accepted": accepted,
            "already_imported": already,
            "errors": errors,
            "commands": commands,
            "results": results,
        })),
    )
        .into_response())
}

fn parse_time(field: &str, text: &str) -> Result<u64, ApiError> {
    let t = DateTime::parse_from_rfc3339(text)
        .map_err(|_| ApiError::invalid("invalid_time", format!("{field} must be RFC 3339")))?;
    u64::try_from(t.timestamp_millis())
        .map_err(|_| ApiError::invalid("invalid_time", format!("{field} is before 1970")))
}

/// Validates one historical clue and builds its commands.
fn prepare(
    state: &AppState,
    token: &TokenRecord,
    source: &str,
    c: ImportClue,
    now_ms: u64,
) -> Result<Prepared, ApiError> {
    if !is_name(&c.source_id, 100) {
        return Err(ApiError::invalid(
            "invalid_source_id",
            "source_id must be 1–100 visible ASCII characters",
        ));
    }
    let clue_id = imported_clue_id(source, &c.source_id);
    let skew_ms = state.max_clock_skew.as_millis() as u64;
    let reported_at_ms = check_reported_at(&c.reported_at, now_ms, skew_ms)?;
    let group = reporter_group(c.reporter_group.as_deref())?;
    // The importing district token is the reporter of record: imported clues have no rider's
    // token, and the reporter's own actions (withdraw, rate) in the timeline are its too.
    let reporter = Actor {
        kind: ActorKind::Reporter,
        id: token.id.clone(),
        group: Some(group),
        scope: None,
    };
    let rules = Rules {
        catalog: &state.catalog,
        bounds: state.bounds,
        secret: &state.secret,
        now_ms,
        max_clock_skew_ms: skew_ms,
    };
    let mut report = rules.report(
        ClueRequest {
            category: c.category,
            lat: c.lat,
            lon: c.lon,
            description: c.description,
            photos: c.photos,
            reported_at: Some(c.reported_at),
            ..ClueRequest::default()
        },
        Channel::Import,
    )?;
    report.reported_at_ms = Some(reported_at_ms);
    if c.timeline.len() > MAX_TIMELINE {
        return Err(ApiError::invalid(
            "timeline_too_long",
            format!(
                "{} actions; at most {MAX_TIMELINE} per clue",
                c.timeline.len()
            ),
        ));
    }
    let mut commands = vec![CommandEnvelope {
        v: wire::SCHEMA_VERSION,
        command_id: CommandId::for_report(clue_id),
        clue_id,
        issued_at_ms: reported_at_ms,
        actor: reporter.clone(),
        command: Command::Report(report),
    }];
    let mut previous_ms = reported_at_ms;
    for (i, fields) in c.timeline.into_iter().enumerate() {
        let step = TimelineStep {
            index: i,
            clue_id,
            source,
            previous_ms,
            now_ms,
            skew_ms,
        };
        let envelope = step.command(fields, state, token, &reporter)?;
        previous_ms = envelope.issued_at_ms;
        commands.push(envelope);
    }
    Ok(Prepared {
        source_id: c.source_id,
        clue_id,
        commands,
    })
}

/// The report's time: not in the future (beyond the allowed skew), not older than the history
/// an import may reach back.
fn check_reported_at(reported_at: &str, now_ms: u64, skew_ms: u64) -> Result<u64, ApiError> {
    let reported_at_ms = parse_time("reported_at", reported_at)?;
    if reported_at_ms > now_ms + skew_ms {
        return Err(ApiError::invalid(
            "reported_at_in_future",
            "reported_at is in the future",
        ));
    }
    if reported_at_ms + MAX_HISTORY_DAYS * 86_400_000 < now_ms {
        return Err(ApiError::invalid(
            "reported_at_too_old",
            format!("history reaches back at most {MAX_HISTORY_DAYS} days"),
        ));
    }
    Ok(reported_at_ms)
}

fn reporter_group(group: Option<&str>) -> Result<ReporterGroup, ApiError> {
    match group {
        None => Ok(ReporterGroup::GridMember),
        Some(g) => g.parse().map_err(|_| {
            ApiError::invalid(
                "invalid_group",
                "reporter_group must be one of courier, food_delivery, ride_hailing, truck, grid_member",
            )
        }),
    }
}

/// One action of an imported clue's timeline, with what checking it needs.
struct TimelineStep<'a> {
    index: usize,
    clue_id: ClueId,
    source: &'a str,
    /// The time of the action before it (or of the report).
    previous_ms: u64,
    now_ms: u64,
    skew_ms: u64,
}

impl TimelineStep<'_> {
    /// An error naming `timeline[i].field`.
    fn bad(&self, field: &str, detail: String) -> ApiError {
        let i = self.index;
        ApiError::InvalidField {
            code: "invalid_timeline",
            field: format!("timeline[{i}].{field}"),
            detail: format!("timeline[{i}]: {detail}"),
        }
    }

    /// The action as the command a live transition with the same body would produce, issued
    /// at its time by the actor it names.
    fn command(
        &self,
        mut fields: serde_json::Map<String, Value>,
        state: &AppState,
        token: &TokenRecord,
        reporter: &Actor,
    ) -> Result<CommandEnvelope, ApiError> {
        let i = self.index;
        let at_ms = self.time(fields.remove("at"))?;
        let by: ImportActor = fields
            .remove("by")
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| self.bad("by", format!("by: {e}")))?
            .ok_or_else(|| self.bad("by", "by ({role, scope?}) is required".into()))?;
        self.resolve_duplicate_of(&mut fields)?;
        // The action and its fields: exactly a live transition's body and rules.
        let body = serde_json::to_vec(&fields).expect("JSON objects serialize");
        let command = crate::transitions::parse_request(&body, self.clue_id, &state.catalog)
            .map_err(|e| match e {
                ApiError::InvalidField {
                    code,
                    field,
                    detail,
                } => ApiError::InvalidField {
                    code,
                    field: format!("timeline[{i}].{field}"),
                    detail: format!("timeline[{i}]: {detail}"),
                },
                other => self.bad("action", other.to_string()),
            })?;
        let actor = self.actor(&by, state, token, reporter)?;
        let action = command.action();
        if !role_actions(actor.kind).contains(&action) {
            return Err(ApiError::InvalidField {
                code: "role_not_allowed",
                field: format!("timeline[{i}].by.role"),
                detail: format!("timeline[{i}]: a {} does not {action}", by.role),
            });
        }
        Ok(CommandEnvelope {
            v: wire::SCHEMA_VERSION,
            command_id: imported_command_id(self.clue_id, i),
            clue_id: self.clue_id,
            issued_at_ms: at_ms,
            actor,
            command,
        })
    }

    /// `at`: required, at or after the action before, not in the future.
    fn time(&self, at: Option<Value>) -> Result<u64, ApiError> {
        let at_ms = match at {
            Some(Value::String(t)) => parse_time(&format!("timeline[{}].at", self.index), &t)?,
            _ => return Err(self.bad("at", "at (RFC 3339) is required".into())),
        };
        if at_ms < self.previous_ms {
            return Err(self.bad(
                "at",
                "goes back in time (each action at or after the one before, and after the report)"
                    .into(),
            ));
        }
        if at_ms > self.now_ms + self.skew_ms {
            return Err(self.bad("at", "is in the future".into()));
        }
        Ok(at_ms)
    }

    /// Replaces `duplicate_of_source_id` (a record of the same import source) by the
    /// `duplicate_of` clue id it is imported as.
    fn resolve_duplicate_of(
        &self,
        fields: &mut serde_json::Map<String, Value>,
    ) -> Result<(), ApiError> {
        let Some(sid) = fields.remove("duplicate_of_source_id") else {
            return Ok(());
        };
        let sid = sid
            .as_str()
            .filter(|s| is_name(s, 100))
            .ok_or_else(|| self.bad("duplicate_of_source_id", "must be a source_id".into()))?;
        if fields.contains_key("duplicate_of") {
            return Err(self.bad(
                "duplicate_of",
                "give duplicate_of or duplicate_of_source_id, not both".into(),
            ));
        }
        fields.insert(
            "duplicate_of".into(),
            json!(imported_clue_id(self.source, sid).to_string()),
        );
        Ok(())
    }

    /// Who took the action: the reporter of record, or the importing token acting as the
    /// street, department or district scope the record names.
    fn actor(
        &self,
        by: &ImportActor,
        state: &AppState,
        token: &TokenRecord,
        reporter: &Actor,
    ) -> Result<Actor, ApiError> {
        let (kind, token_kind) = match by.role.as_str() {
            "reporter" => return Ok(reporter.clone()),
            "street" => (ActorKind::Street, TokenKind::Street),
            "department" => (ActorKind::Department, TokenKind::Department),
            "district" => (ActorKind::District, TokenKind::District),
            other => {
                return Err(self.bad(
                    "by.role",
                    format!("{other:?} is not street, department, district or reporter"),
                ))
            }
        };
        let scope = gridclue_core::tokens::parse_scope(
            token_kind,
            by.scope.as_deref(),
            Some(&state.catalog),
        )
        .map_err(|err| self.bad("by.scope", err.to_string()))?;
        Ok(Actor {
            kind,
            id: token.id.clone(),
            group: None,
            scope,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_the_same_for_the_same_record_and_differ_otherwise() {
        let a = imported_clue_id("old-system", "2026-000123");
        assert_eq!(a, imported_clue_id("old-system", "2026-000123"));
        assert_ne!(a, imported_clue_id("old-system", "2026-000124"));
        assert_ne!(a, imported_clue_id("other-system", "2026-000123"));
        // The separator keeps "a" + "bc" apart from "ab" + "c".
        assert_ne!(imported_clue_id("a", "bc"), imported_clue_id("ab", "c"));
        assert_ne!(imported_command_id(a, 0), imported_command_id(a, 1));
        assert_ne!(imported_command_id(a, 0), CommandId::for_report(a));
    }
}
