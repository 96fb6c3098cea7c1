//! Bearer tokens: issued and revoked by a CLI, stored only as SHA-256 hashes in a JSON file
//! that the services re-read when it changes.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::category::{Catalog, DepartmentCode};
use crate::grid::StreetCode;
use crate::ids::ReporterGroup;
use crate::roles::ActorScope;
use crate::secrets::{digest_eq, token_hash};
use crate::wire::{Actor, ActorKind};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    /// A grid member who submits clues.
    Reporter,
    /// The district command centre: reads every street's numbers and acts on every clue.
    District,
    /// A street office: reads and acts on one street's clues (`scope` holds the 9-digit street
    /// code).
    Street,
    /// A department: acts on the clues dispatched to it (`scope` holds the department code of
    /// the category table).
    Department,
}

impl TokenKind {
    pub const ALL: [TokenKind; 4] = [
        TokenKind::Reporter,
        TokenKind::District,
        TokenKind::Street,
        TokenKind::Department,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Reporter => "reporter",
            TokenKind::District => "district",
            TokenKind::Street => "street",
            TokenKind::Department => "department",
        }
    }

    /// The role commands of this token's holder act in.
    pub fn actor_kind(self) -> ActorKind {
        match self {
            TokenKind::Reporter => ActorKind::Reporter,
            TokenKind::District => ActorKind::District,
            TokenKind::Street => ActorKind::Street,
            TokenKind::Department => ActorKind::Department,
        }
    }
}

impl std::str::FromStr for TokenKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                format!("unknown token kind {s:?} (reporter, district, street, department)")
            })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Public, non-secret id; used as the reporter id in commands and facts.
    pub id: String,
    /// SHA-256 of the token.
    pub hash: String,
    pub kind: TokenKind,
    #[serde(default)]
    pub group: Option<ReporterGroup>,
    /// Read leniently: a malformed scope in the file is none (the token is then refused where
    /// it needs one) instead of failing every token's authentication.
    #[serde(
        default,
        deserialize_with = "crate::codes::empty_as_none::lenient::nullable"
    )]
    pub scope: Option<ActorScope>,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub revoked: bool,
    #[serde(default)]
    pub created_at_ms: u64,
}

impl TokenRecord {
    /// The actor of the commands this token issues: its role, public id and scope (never the
    /// secret).
    pub fn actor(&self) -> Actor {
        Actor {
            kind: self.kind.actor_kind(),
            id: self.id.clone(),
            group: self.group,
            scope: self.scope.clone(),
        }
    }
}

/// Parses a token's scope for its kind (at the boundary: the CLI, the admin API, an import's
/// `by`): a street code for street tokens, a department code (of `catalog`, when given) for
/// department tokens, none for the others.
pub fn parse_scope(
    kind: TokenKind,
    scope: Option<&str>,
    catalog: Option<&Catalog>,
) -> Result<Option<ActorScope>, TokenError> {
    let parsed = match (kind, scope) {
        (_, None) => None,
        (TokenKind::Street, Some(s)) => Some(
            StreetCode::parse(s)
                .map(ActorScope::Street)
                .map_err(|_| TokenError::Scope(STREET_SCOPE.into()))?,
        ),
        (TokenKind::Department, Some(d)) => Some(
            DepartmentCode::parse(d)
                .map(ActorScope::Department)
                .map_err(|_| {
                    TokenError::Scope(format!(
                    "department scope {d:?} is not a department code (lowercase letters and '_')"
                ))
                })?,
        ),
        (TokenKind::Reporter | TokenKind::District, Some(_)) => return Err(no_scope(kind)),
    };
    check_scope(kind, parsed.as_ref())?;
    if let (Some(ActorScope::Department(d)), Some(c)) = (&parsed, catalog) {
        if c.department(d.as_str()).is_none() {
            let known: Vec<&str> = c.departments().iter().map(|d| d.code.as_str()).collect();
            return Err(TokenError::Scope(format!(
                "unknown department {:?}; the category table has: {}",
                d.as_str(),
                known.join(", ")
            )));
        }
    }
    Ok(parsed)
}

const STREET_SCOPE: &str = "a street token needs a 9-digit street code as scope";

fn no_scope(kind: TokenKind) -> TokenError {
    TokenError::Scope(format!("a {} token takes no scope", kind.as_str()))
}

/// Checks that a scope is of the kind's shape: a street for a street token, a department for a
/// department token, none for the others.
pub fn check_scope(kind: TokenKind, scope: Option<&ActorScope>) -> Result<(), TokenError> {
    match (kind, scope) {
        (TokenKind::Street, Some(ActorScope::Street(_)))
        | (TokenKind::Department, Some(ActorScope::Department(_)))
        | (TokenKind::Reporter | TokenKind::District, None) => Ok(()),
        (TokenKind::Street, _) => Err(TokenError::Scope(STREET_SCOPE.into())),
        (TokenKind::Department, _) => Err(TokenError::Scope(
            "a department token needs a department code as scope".into(),
        )),
        (TokenKind::Reporter | TokenKind::District, Some(_)) => Err(no_scope(kind)),
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TokenFile {
    pub tokens: Vec<TokenRecord>,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read token file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write token file {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("token file {path} is malformed: {detail}")]
    Malformed { path: String, detail: String },
    #[error("no token with id {0}")]
    UnknownId(String),
    #[error("{0}")]
    Scope(String),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("no bearer token was given")]
    Missing,
    #[error("the bearer token is not valid")]
    Invalid,
    #[error("the bearer token has been revoked")]
    Revoked,
}

impl TokenFile {
    pub fn read(path: &Path) -> Result<Self, TokenError> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| TokenError::Malformed {
                path: path.display().to_string(),
                detail: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(TokenError::Read {
                path: path.display().to_string(),
                source,
            }),
        }
    }

    /// Writes atomically (temp file + rename) so readers never see half a file.
    pub fn write(&self, path: &Path) -> Result<(), TokenError> {
        let err = |source| TokenError::Write {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(self).expect("token files serialize");
        std::fs::write(&tmp, text).map_err(err)?;
        std::fs::rename(&tmp, path).map_err(err)
    }

    /// Adds a new token and returns the secret (shown once, never stored) with its record.
    /// The scope is checked against the kind ([`check_scope`]); callers that have the category
    /// table check department codes against it first ([`parse_scope`]).
    pub fn issue(
        &mut self,
        kind: TokenKind,
        group: Option<ReporterGroup>,
        scope: Option<ActorScope>,
        name: &str,
    ) -> Result<(String, TokenRecord), TokenError> {
        check_scope(kind, scope.as_ref())?;
        let mut rng = rand::thread_rng();
        let mut secret = [0u8; 32];
        rng.fill_bytes(&mut secret);
        let mut id = [0u8; 6];
        rng.fill_bytes(&mut id);
        let token = format!("gct_{}", hex::encode(secret));
        let record = TokenRecord {
            id: format!("tok_{}", hex::encode(id)),
            hash: token_hash(&token),
            kind,
            group,
            scope,
            name: name.to_owned(),
            revoked: false,
            created_at_ms: crate::wire::now_ms(),
        };
        self.tokens.push(record.clone());
        Ok((token, record))
    }

    pub fn revoke(&mut self, id: &str) -> Result<(), TokenError> {
        let t = self
            .tokens
            .iter_mut()
            .find(|t| t.id == id)
            .ok_or_else(|| TokenError::UnknownId(id.to_owned()))?;
        t.revoked = true;
        Ok(())
    }

    pub fn verify(&self, token: &str) -> Result<&TokenRecord, AuthError> {
        let hash = token_hash(token);
        let record = self
            .tokens
            .iter()
            .find(|t| digest_eq(&t.hash, &hash))
            .ok_or(AuthError::Invalid)?;
        if record.revoked {
            return Err(AuthError::Revoked);
        }
        Ok(record)
    }
}

/// What the store last read: the file's modification time, when it was last looked at, and
/// the tokens.
struct Cached {
    mtime: Option<SystemTime>,
    checked_at: Instant,
    file: Arc<TokenFile>,
}

/// A token file kept in memory and re-read when its modification time changes. The file is
/// looked at (one `stat`) at most once per check interval, so a busy service pays for it once a
/// second, not once a request; a revocation takes effect within that interval.
#[derive(Clone)]
pub struct TokenStore {
    path: PathBuf,
    check_interval: Duration,
    cached: Arc<RwLock<Cached>>,
}

impl TokenStore {
    /// Opens the file; every call to [`TokenStore::current`] checks it for changes.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, TokenError> {
        let path = path.into();
        let file = TokenFile::read(&path)?;
        let mtime = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
        Ok(Self {
            path,
            check_interval: Duration::ZERO,
            cached: Arc::new(RwLock::new(Cached {
                mtime,
                checked_at: Instant::now(),
                file: Arc::new(file),
            })),
        })
    }

    /// Looks at the file for changes at most once per `interval`.
    pub fn with_check_interval(mut self, interval: Duration) -> Self {
        self.check_interval = interval;
        self
    }

    /// The current tokens, re-reading the file if it changed. A file that became malformed is
    /// logged and the last good version kept.
    pub fn current(&self) -> Arc<TokenFile> {
        {
            let guard = self.cached.read().expect("token cache lock");
            if !self.check_interval.is_zero() && guard.checked_at.elapsed() < self.check_interval {
                return guard.file.clone();
            }
        }
        let mtime = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        let mut guard = self.cached.write().expect("token cache lock");
        guard.checked_at = Instant::now();
        if guard.mtime == mtime {
            return guard.file.clone();
        }
        match TokenFile::read(&self.path) {
            Ok(file) => {
                let file = Arc::new(file);
                guard.mtime = mtime;
                guard.file = file.clone();
                tracing::info!(path = %self.path.display(), tokens = file.tokens.len(), "token file reloaded");
                file
            }
            Err(e) => {
                tracing::warn!(error = %e, "keeping previous tokens");
                guard.file.clone()
            }
        }
    }

    /// Re-reads the file now, whatever its modification time and the check interval say: a
    /// process that just changed the file itself (token administration) sees the change on its
    /// next request, not a check interval later.
    pub fn reload(&self) -> Result<(), TokenError> {
        let mtime = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        let file = Arc::new(TokenFile::read(&self.path)?);
        let mut guard = self.cached.write().expect("token cache lock");
        guard.mtime = mtime;
        guard.checked_at = Instant::now();
        guard.file = file;
        Ok(())
    }

    /// Checks an `Authorization` header value (`Bearer <token>`).
    pub fn authenticate(&self, header: Option<&str>) -> Result<TokenRecord, AuthError> {
        let token = header
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Missing)?;
        self.current().verify(token).cloned()
    }

    pub fn authenticate_token(&self, token: &str) -> Result<TokenRecord, AuthError> {
        self.current().verify(token).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_verify_revoke_round_trip_through_the_file() {
        let scratch = tempfile::tempdir().unwrap();
        let path = scratch.path().join("tokens").join("tokens.json");
        let mut f = TokenFile::read(&path).unwrap();
        let (secret, rec) = f
            .issue(
                TokenKind::Reporter,
                Some(ReporterGroup::Courier),
                None,
                "r1",
            )
            .unwrap();
        f.write(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains(&secret),
            "the secret itself must never be stored"
        );

        let store = TokenStore::open(&path).unwrap();
        let got = store
            .authenticate(Some(&format!("Bearer {secret}")))
            .unwrap();
        assert_eq!(got.id, rec.id);
        assert_eq!(store.authenticate(None), Err(AuthError::Missing));
        assert_eq!(store.authenticate(Some("Bearer ")), Err(AuthError::Missing));
        assert_eq!(
            store.authenticate(Some("Bearer nope")),
            Err(AuthError::Invalid)
        );

        let mut f = TokenFile::read(&path).unwrap();
        f.revoke(&rec.id).unwrap();
        f.write(&path).unwrap();
        // A later mtime than the loaded file's, even on file systems with coarse timestamps.
        let future = SystemTime::now() + std::time::Duration::from_secs(2);
        let file = std::fs::File::options().append(true).open(&path).unwrap();
        file.set_modified(future).unwrap();
        assert_eq!(store.authenticate_token(&secret), Err(AuthError::Revoked));
    }

    #[test]
    fn with_a_check_interval_revocations_are_seen_after_it() {
        let scratch = tempfile::tempdir().unwrap();
        let path = scratch.path().join("interval").join("tokens.json");
        let mut f = TokenFile::default();
        let (secret, rec) = f.issue(TokenKind::Reporter, None, None, "r").unwrap();
        f.write(&path).unwrap();
        let tokens = TokenStore::open(&path)
            .unwrap()
            .with_check_interval(Duration::from_millis(50));
        assert_eq!(
            tokens
                .authenticate(Some(&format!("Bearer {secret}")))
                .unwrap()
                .id,
            rec.id
        );
        assert_eq!(tokens.authenticate(None), Err(AuthError::Missing));
        assert_eq!(
            tokens.authenticate(Some("Basic x")),
            Err(AuthError::Missing)
        );
        assert_eq!(tokens.authenticate_token("nope"), Err(AuthError::Invalid));
        f.revoke(&rec.id).unwrap();
        f.write(&path).unwrap();
        let file = std::fs::File::options().append(true).open(&path).unwrap();
        file.set_modified(SystemTime::now() + Duration::from_secs(2))
            .unwrap();
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(tokens.authenticate_token(&secret), Err(AuthError::Revoked));
    }

    #[test]
    fn a_malformed_scope_in_the_file_leaves_its_token_without_one() {
        let scratch = tempfile::tempdir().unwrap();
        let path = scratch.path().join("tokens.json");
        let mut f = TokenFile::default();
        let street = parse_scope(TokenKind::Street, Some("310199001"), None).unwrap();
        let (good, _) = f.issue(TokenKind::Street, None, street, "s").unwrap();
        let (bad, _) = f
            .issue(
                TokenKind::Street,
                None,
                ActorScope::parse("310199002").ok(),
                "t",
            )
            .unwrap();
        f.write(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("310199002", "310199999")).unwrap();
        let store = TokenStore::open(&path).unwrap();
        let scope = |secret: &str| store.authenticate_token(secret).unwrap().scope;
        assert_eq!(scope(&good).unwrap().as_str(), "310199001");
        assert_eq!(scope(&bad), None);
    }

    #[test]
    fn street_tokens_need_a_scope() {
        let mut f = TokenFile::default();
        assert!(matches!(
            f.issue(TokenKind::Street, None, None, "s"),
            Err(TokenError::Scope(_))
        ));
        let street = parse_scope(TokenKind::Street, Some("310199003"), None).unwrap();
        assert!(f
            .issue(TokenKind::Street, None, street.clone(), "s")
            .is_ok());
        assert!(f.issue(TokenKind::Department, None, street, "d").is_err());
        let err = parse_scope(TokenKind::Street, Some("31019900"), None).unwrap_err();
        assert_eq!(err.to_string(), STREET_SCOPE);
        assert!(matches!(
            f.revoke("tok_missing"),
            Err(TokenError::UnknownId(_))
        ));
    }

    #[test]
    fn department_tokens_need_a_department_of_the_category_table() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/categories.json");
        let catalog = Catalog::load(&path).unwrap();
        let check = |scope| parse_scope(TokenKind::Department, scope, Some(&catalog));
        assert!(check(Some("water_affairs")).is_ok());
        let err = check(Some("sewers")).unwrap_err().to_string();
        assert!(
            err.contains("unknown department") && err.contains("water_affairs"),
            "{err}"
        );
        assert!(check(Some("Water")).is_err());
        assert!(check(None).is_err());
        assert!(parse_scope(TokenKind::District, Some("x"), None).is_err());
        assert!(parse_scope(TokenKind::Reporter, None, None)
            .unwrap()
            .is_none());

        let mut f = TokenFile::default();
        let (_, rec) = f
            .issue(
                TokenKind::Department,
                None,
                check(Some("water_affairs")).unwrap(),
                "d",
            )
            .unwrap();
        let actor = rec.actor();
        assert_eq!(actor.kind, ActorKind::Department);
        assert_eq!(actor.scope.unwrap().as_str(), "water_affairs");
        assert_eq!(actor.id, rec.id);
        assert!(f.issue(TokenKind::Department, None, None, "d").is_err());
        for k in TokenKind::ALL {
            assert_eq!(k.as_str().parse::<TokenKind>(), Ok(k));
            assert_eq!(
                serde_json::to_string(&k).unwrap(),
                format!("\"{}\"", k.as_str())
            );
        }
    }
}
