//! Token administration: issue, list and revoke bearer tokens over HTTP (beside the
//! `gridclue-ingest tokens …` CLI, which goes through the same [`TokenAdmin`]), every change
//! recorded in an append-only audit log with who made it.
//!
//! Routes (JSON; errors are problem+json):
//! - `POST /v1/admin/tokens` `{kind, scope?, name, group?}` → 201 with the token's public record
//!   and its `secret`, shown this once (only its hash is stored);
//! - `GET /v1/admin/tokens` → the public records (never a secret or a hash);
//! - `DELETE /v1/admin/tokens/{id}` → revokes (200; revoking again changes nothing);
//! - `GET /v1/admin/tokens/audit?limit=` → the audit log, newest first.
//!
//! Who may: the district token administers every token. A street token onboards its riders:
//! it issues `reporter` tokens, and lists, revokes and reads the audit of the tokens its street
//! issued (a token issued by any street token of the same street) — nothing else. Department and
//! reporter tokens administer nothing.
//!
//! Storage: changes take an exclusive lock on `<tokens file>.lock` (`flock`), re-read the file,
//! change it, write it atomically (temporary file + rename) and append the audit entry to
//! `<tokens file stem>.audit.jsonl`, all under the lock, so concurrent writers (several ingest
//! instances, the CLI) never lose each other's changes. The audit entry is written after the
//! token file: a crash between the two leaves a change without its entry, never an entry
//! without its change.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use gridclue_core::category::Catalog;
use gridclue_core::codes::{ActorScope, StreetCode};
use gridclue_core::tokens::{parse_scope, TokenError, TokenFile, TokenKind, TokenRecord};
use gridclue_core::ReporterGroup;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::api::{read_body, require_media_type, AppState};
use crate::error::ApiError;

/// Largest accepted body of an issue request.
pub const MAX_ADMIN_BODY_BYTES: usize = 8 * 1024;
/// Longest token name, in characters.
pub const MAX_NAME_CHARS: usize = 100;
/// Audit entries per page when `limit` is not given, and the most one page holds.
pub const DEFAULT_AUDIT_LIMIT: usize = 100;
pub const MAX_AUDIT_LIMIT: usize = 1000;

/// A token as administrators see it: everything but the hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicToken {
    pub id: String,
    pub kind: TokenKind,
    #[serde(default)]
    pub scope: Option<ActorScope>,
    #[serde(default)]
    pub group: Option<ReporterGroup>,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub revoked: bool,
    #[serde(default)]
    pub created_at_ms: u64,
}

impl From<&TokenRecord> for PublicToken {
    fn from(t: &TokenRecord) -> Self {
        Self {
            id: t.id.clone(),
            kind: t.kind,
            scope: t.scope.clone(),
            group: t.group,
            name: t.name.clone(),
            revoked: t.revoked,
            created_at_ms: t.created_at_ms,
        }
    }
}

/// Who made a change: a token over HTTP (its public id, kind and scope), or the CLI (the
/// operating-system user that ran it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "via", rename_all = "snake_case")]
pub enum AuditActor {
    Http {
        token_id: String,
        kind: TokenKind,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scope: Option<ActorScope>,
    },
    Cli {
        user: String,
    },
}

impl AuditActor {
    pub fn of_token(t: &TokenRecord) -> Self {
        AuditActor::Http {
            token_id: t.id.clone(),
            kind: t.kind,
            scope: t.scope.clone(),
        }
    }

    /// The CLI run by the current operating-system user (`$USER`, else "unknown").
    pub fn cli() -> Self {
        AuditActor::Cli {
            user: std::env::var("USER").unwrap_or_else(|_| "unknown".into()),
        }
    }

    /// The street a street token acted for.
    fn street(&self) -> Option<&StreetCode> {
        match self {
            AuditActor::Http {
                kind: TokenKind::Street,
                scope: Some(scope),
                ..
            } => scope.street(),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    Issue,
    Revoke,
}

/// One line of the audit log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub at_ms: u64,
    pub action: AuditAction,
    pub actor: AuditActor,
    /// The token issued or revoked, as it was after the change.
    pub token: PublicToken,
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("token administration failed on {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// What a revocation came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Revoked {
    /// Revoked now.
    Now(PublicToken),
    /// It was revoked before; nothing changed and nothing was recorded.
    Already(PublicToken),
}

/// The token file and its audit log, changed under an exclusive file lock.
#[derive(Clone, Debug)]
pub struct TokenAdmin {
    tokens_path: PathBuf,
    audit_path: PathBuf,
    lock_path: PathBuf,
}

/// An exclusive `flock` on the lock file, released when dropped (the file is closed).
struct Locked {
    _file: File,
}

impl TokenAdmin {
    /// Administers `tokens_path`; the audit log and the lock file sit beside it
    /// (`tokens.json` → `tokens.audit.jsonl`, `tokens.json.lock`).
    pub fn new(tokens_path: impl Into<PathBuf>) -> Self {
        let tokens_path = tokens_path.into();
        let audit_path = tokens_path.with_extension("audit.jsonl");
        let mut lock = tokens_path.clone().into_os_string();
        lock.push(".lock");
        Self {
            tokens_path,
            audit_path,
            lock_path: PathBuf::from(lock),
        }
    }

    pub fn tokens_path(&self) -> &Path {
        &self.tokens_path
    }

    pub fn audit_path(&self) -> &Path {
        &self.audit_path
    }

    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> AdminError + '_ {
        move |source| AdminError::Io {
            path: path.display().to_string(),
            source,
        }
    }

    /// Blocks until this process holds the lock.
    fn lock(&self) -> Result<Locked, AdminError> {
        if let Some(dir) = self.lock_path.parent() {
            std::fs::create_dir_all(dir).map_err(Self::io(dir))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock_path)
            .map_err(Self::io(&self.lock_path))?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| Self::io(&self.lock_path)(e.into()))?;
        Ok(Locked { _file: file })
    }

    fn append_audit(&self, entry: &AuditEntry) -> Result<(), AdminError> {
        let mut line = serde_json::to_vec(entry).expect("audit entries serialize");
        line.push(b'\n');
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.audit_path)
            .map_err(Self::io(&self.audit_path))?;
        file.write_all(&line)
            .and_then(|()| file.sync_data())
            .map_err(Self::io(&self.audit_path))
    }

    /// Issues a token and records who did it; returns the secret (never stored) and the record.
    /// The scope is parsed for the kind and checked against `catalog` when one is given
    /// (department codes).
    pub fn issue(
        &self,
        actor: &AuditActor,
        kind: TokenKind,
        group: Option<ReporterGroup>,
        scope: Option<&str>,
        name: &str,
        catalog: Option<&Catalog>,
    ) -> Result<(String, TokenRecord), AdminError> {
        let scope = parse_scope(kind, scope, catalog)?;
        let _lock = self.lock()?;
        let mut file = TokenFile::read(&self.tokens_path)?;
        let (secret, record) = file.issue(kind, group, scope, name)?;
        file.write(&self.tokens_path)?;
        self.append_audit(&AuditEntry {
            at_ms: gridclue_core::wire::now_ms(),
            action: AuditAction::Issue,
            actor: actor.clone(),
            token: PublicToken::from(&record),
        })?;
        Ok((secret, record))
    }

    /// Revokes a token and records who did it (a token revoked before is left as it is).
    pub fn revoke(&self, actor: &AuditActor, id: &str) -> Result<Revoked, AdminError> {
        let _lock = self.lock()?;
        let mut file = TokenFile::read(&self.tokens_path)?;
        let before = file
            .tokens
            .iter()
            .find(|t| t.id == id)
            .ok_or_else(|| TokenError::UnknownId(id.to_owned()))?;
        if before.revoked {
            return Ok(Revoked::Already(PublicToken::from(before)));
        }
        file.revoke(id)?;
        file.write(&self.tokens_path)?;
        let token = file
            .tokens
            .iter()
            .find(|t| t.id == id)
            .map(PublicToken::from)
            .expect("the token revoked is in the file");
        self.append_audit(&AuditEntry {
            at_ms: gridclue_core::wire::now_ms(),
            action: AuditAction::Revoke,
            actor: actor.clone(),
            token: token.clone(),
        })?;
        Ok(Revoked::Now(token))
    }

    /// Every token, in issue order (the file is replaced atomically, so no lock is needed).
    pub fn list(&self) -> Result<Vec<PublicToken>, AdminError> {
        Ok(TokenFile::read(&self.tokens_path)?
            .tokens
            .iter()
            .map(PublicToken::from)
            .collect())
    }

    /// The audit log, oldest first. A line that does not parse (a torn last line after a crash)
    /// is skipped with a warning rather than hiding the rest.
    pub fn audit(&self) -> Result<Vec<AuditEntry>, AdminError> {
        let file = match File::open(&self.audit_path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Self::io(&self.audit_path)(e)),
        };
        let mut entries = Vec::new();
        for (n, line) in BufReader::new(file).lines().enumerate() {
            let line = line.map_err(Self::io(&self.audit_path))?;
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str(&line) {
                Ok(entry) => entries.push(entry),
                Err(e) => {
                    tracing::warn!(line = n + 1, error = %e, "skipping an unreadable audit line")
                }
            }
        }
        Ok(entries)
    }
}

// ------------------------------------------------------------------------------------------------
// HTTP

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/tokens", get(list_tokens).post(issue_token))
        .route("/v1/admin/tokens/audit", get(read_audit))
        .route("/v1/admin/tokens/{id}", delete(revoke_token))
}

/// What an administering token may do.
enum Admin {
    District(TokenRecord),
    /// A street office: reporter tokens of its street.
    Street(TokenRecord, StreetCode),
}

impl Admin {
    fn token(&self) -> &TokenRecord {
        match self {
            Admin::District(t) | Admin::Street(t, _) => t,
        }
    }

    /// Whether this administrator sees the change an audit entry records.
    fn sees(&self, entry: &AuditEntry) -> bool {
        match self {
            Admin::District(_) => true,
            Admin::Street(_, street) => entry.actor.street() == Some(street),
        }
    }
}

impl AppState {
    /// Authenticates an administering token (district, or street for its riders).
    fn admin(&self, parts: &Parts) -> Result<Admin, ApiError> {
        self.limit_ip(parts)?;
        let token = self.bearer(&parts.headers)?;
        self.limit_token(&token)?;
        match (
            token.kind,
            token.scope.as_ref().and_then(ActorScope::street),
        ) {
            (TokenKind::District, _) => Ok(Admin::District(token)),
            (TokenKind::Street, Some(&street)) => Ok(Admin::Street(token, street)),
            _ => Err(ApiError::Forbidden("administer tokens")),
        }
    }

    /// The ids of the tokens an administrator may list and revoke: all for the district; for a
    /// street, those its street issued.
    fn visible_ids(&self, admin: &Admin) -> Result<Option<Vec<String>>, ApiError> {
        match admin {
            Admin::District(_) => Ok(None),
            Admin::Street(..) => Ok(Some(
                self.token_admin
                    .audit()
                    .map_err(internal)?
                    .into_iter()
                    .filter(|e| e.action == AuditAction::Issue && admin.sees(e))
                    .map(|e| e.token.id)
                    .collect(),
            )),
        }
    }
}

fn internal(e: AdminError) -> ApiError {
    ApiError::Internal(anyhow::Error::new(e))
}

/// Runs a blocking token-file change off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AdminError> + Send + 'static,
) -> Result<T, AdminError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IssueRequest {
    kind: String,
    #[serde(default)]
    scope: Option<String>,
    name: String,
    #[serde(default)]
    group: Option<String>,
}

async fn issue_token(State(state): State<AppState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    match issue(&state, &parts, body).await {
        Ok(r) => r,
        Err(e) => state.reject(e).into_response(),
    }
}

async fn issue(state: &AppState, parts: &Parts, body: Body) -> Result<Response, ApiError> {
    let admin = state.admin(parts)?;
    require_media_type(&parts.headers, "application/json")?;
    let bytes = read_body(&parts.headers, body, MAX_ADMIN_BODY_BYTES).await?;
    let request: IssueRequest =
        serde_json::from_slice(&bytes).map_err(|e| ApiError::InvalidJson(e.to_string()))?;
    let kind: TokenKind = request
        .kind
        .parse()
        .map_err(|e: String| ApiError::invalid("invalid_token_kind", e))?;
    if let Admin::Street(..) = admin {
        if kind != TokenKind::Reporter {
            return Err(ApiError::Forbidden(
                "issue tokens other than reporter tokens (a street office onboards riders)",
            ));
        }
    }
    let name = request.name.trim().to_owned();
    if name.is_empty()
        || name.chars().count() > MAX_NAME_CHARS
        || name.chars().any(char::is_control)
    {
        return Err(ApiError::invalid(
            "invalid_token_name",
            format!("name must be 1–{MAX_NAME_CHARS} characters without control characters"),
        ));
    }
    let group = match (kind, request.group) {
        (TokenKind::Reporter, None) => Some(ReporterGroup::GridMember),
        (TokenKind::Reporter, Some(g)) => Some(g.parse().map_err(|_| {
            ApiError::invalid(
                "invalid_group",
                "group must be one of courier, food_delivery, ride_hailing, truck, grid_member",
            )
        })?),
        (_, Some(_)) => {
            return Err(ApiError::invalid(
                "invalid_group",
                "group applies to reporter tokens only",
            ))
        }
        (_, None) => None,
    };
    let scope = request.scope.map(|s| s.trim().to_owned());
    let actor = AuditActor::of_token(admin.token());
    let (store, catalog) = (state.token_admin.clone(), state.catalog.clone());
    let issued =
        blocking(move || store.issue(&actor, kind, group, scope.as_deref(), &name, Some(&catalog)))
            .await;
    let (secret, record) = match issued {
        Ok(x) => x,
        Err(AdminError::Token(TokenError::Scope(detail))) => {
            return Err(ApiError::invalid("invalid_scope", detail))
        }
        Err(e) => return Err(internal(e)),
    };
    reload_tokens(state);
    tracing::info!(id = %record.id, kind = record.kind.as_str(), by = %admin.token().id, "token issued");
    let mut body = serde_json::to_value(PublicToken::from(&record)).expect("tokens serialize");
    body["secret"] = json!(secret);
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/admin/tokens/{}", record.id)) {
        headers.insert(header::LOCATION, location);
    }
    Ok(response)
}

/// This instance sees its own change at once (others within their check interval).
fn reload_tokens(state: &AppState) {
    if let Err(e) = state.tokens.reload() {
        tracing::warn!(error = %e, "token file not re-read after a change");
    }
}

async fn list_tokens(State(state): State<AppState>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let result = async {
        let admin = state.admin(&parts)?;
        let visible = state.visible_ids(&admin)?;
        let store = state.token_admin.clone();
        let tokens: Vec<PublicToken> = blocking(move || store.list())
            .await
            .map_err(internal)?
            .into_iter()
            .filter(|t| visible.as_ref().is_none_or(|ids| ids.contains(&t.id)))
            .collect();
        Ok::<_, ApiError>(Json(json!({ "tokens": tokens })).into_response())
    }
    .await;
    result.unwrap_or_else(|e| state.reject(e).into_response())
}

async fn revoke_token(
    State(state): State<AppState>,
    id: Result<UrlPath<String>, PathRejection>,
    req: Request,
) -> Response {
    let (parts, _) = req.into_parts();
    let id = id.map(|UrlPath(id)| id).unwrap_or_default();
    let result = async {
        let admin = state.admin(&parts)?;
        // A street that did not issue the token learns nothing about it: the same 404.
        if let Some(ids) = state.visible_ids(&admin)? {
            if !ids.contains(&id) {
                return Err(ApiError::NotFound);
            }
        }
        let actor = AuditActor::of_token(admin.token());
        let store = state.token_admin.clone();
        let target = id.clone();
        let revoked = match blocking(move || store.revoke(&actor, &target)).await {
            Ok(r) => r,
            Err(AdminError::Token(TokenError::UnknownId(_))) => return Err(ApiError::NotFound),
            Err(e) => return Err(internal(e)),
        };
        reload_tokens(&state);
        let (token, changed) = match revoked {
            Revoked::Now(t) => (t, true),
            Revoked::Already(t) => (t, false),
        };
        if changed {
            tracing::info!(id = %token.id, by = %admin.token().id, "token revoked");
        }
        let mut body = serde_json::to_value(token).expect("tokens serialize");
        body["changed"] = json!(changed);
        Ok(Json(body).into_response())
    }
    .await;
    result.unwrap_or_else(|e| state.reject(e).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    limit: Option<String>,
}

async fn read_audit(
    State(state): State<AppState>,
    query: Result<Query<AuditQuery>, QueryRejection>,
    req: Request,
) -> Response {
    let (parts, _) = req.into_parts();
    let result = async {
        let admin = state.admin(&parts)?;
        let Query(query) = query.map_err(|e| {
            ApiError::invalid(
                "invalid_parameter",
                format!("query string: {}", e.body_text()),
            )
        })?;
        let limit = match query.limit {
            None => DEFAULT_AUDIT_LIMIT,
            Some(l) => l
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_AUDIT_LIMIT).contains(n))
                .ok_or_else(|| {
                    ApiError::invalid(
                        "invalid_parameter",
                        format!("limit must be an integer from 1 to {MAX_AUDIT_LIMIT}"),
                    )
                })?,
        };
        let store = state.token_admin.clone();
        let entries: Vec<AuditEntry> = blocking(move || store.audit())
            .await
            .map_err(internal)?
            .into_iter()
            .rev()
            .filter(|e| admin.sees(e))
            .take(limit)
            .collect();
        Ok::<_, ApiError>(Json(json!({ "entries": entries })).into_response())
    }
    .await;
    result.unwrap_or_else(|e| state.reject(e).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A token file path in a fresh directory (removed when the guard drops).
    fn scratch() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.json");
        (dir, path)
    }

    #[test]
    fn concurrent_writers_lose_no_change() {
        let (_dir, path) = scratch();
        let admin = TokenAdmin::new(&path);
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let admin = admin.clone();
                std::thread::spawn(move || {
                    for i in 0..10 {
                        admin
                            .issue(
                                &AuditActor::Cli {
                                    user: format!("t{t}"),
                                },
                                TokenKind::Reporter,
                                None,
                                None,
                                &format!("r{t}-{i}"),
                                None,
                            )
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let tokens = admin.list().unwrap();
        assert_eq!(tokens.len(), 80, "every issue survived");
        let audit = admin.audit().unwrap();
        assert_eq!(audit.len(), 80);
        for t in &tokens {
            assert!(audit.iter().any(|e| e.token.id == t.id));
        }
    }

    #[test]
    fn revoking_twice_records_once_and_unknown_ids_are_errors() {
        let (_dir, path) = scratch();
        let admin = TokenAdmin::new(&path);
        let cli = AuditActor::cli();
        let (_, rec) = admin
            .issue(&cli, TokenKind::District, None, None, "d", None)
            .unwrap();
        assert!(matches!(admin.revoke(&cli, &rec.id).unwrap(), Revoked::Now(t) if t.revoked));
        assert!(matches!(
            admin.revoke(&cli, &rec.id).unwrap(),
            Revoked::Already(_)
        ));
        assert!(matches!(
            admin.revoke(&cli, "tok_nope"),
            Err(AdminError::Token(TokenError::UnknownId(_)))
        ));
        let actions: Vec<AuditAction> = admin.audit().unwrap().iter().map(|e| e.action).collect();
        assert_eq!(actions, vec![AuditAction::Issue, AuditAction::Revoke]);
        // A torn last line (a crash mid-append) hides nothing before it.
        let mut f = OpenOptions::new()
            .append(true)
            .open(admin.audit_path())
            .unwrap();
        f.write_all(b"{\"at_ms\":1,\"act").unwrap();
        assert_eq!(admin.audit().unwrap().len(), 2);
    }
}
