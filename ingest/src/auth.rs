//! Reporter tokens as ingest checks them: the shared token file (`TokenStore`, re-read when it
//! changes), looked at for changes at most once per `refresh` instead of once per request (a
//! revocation takes effect within that interval).

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use gridclue_core::tokens::{AuthError, TokenFile, TokenRecord, TokenStore};

pub struct Tokens {
    store: TokenStore,
    refresh: Duration,
    cached: RwLock<(Instant, Arc<TokenFile>)>,
}

impl Tokens {
    pub fn new(store: TokenStore, refresh: Duration) -> Self {
        let file = store.current();
        Self {
            store,
            refresh,
            cached: RwLock::new((Instant::now(), file)),
        }
    }

    fn current(&self) -> Arc<TokenFile> {
        {
            let guard = self.cached.read().expect("token cache lock");
            if guard.0.elapsed() < self.refresh {
                return guard.1.clone();
            }
        }
        let file = self.store.current();
        *self.cached.write().expect("token cache lock") = (Instant::now(), file.clone());
        file
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
        self.authenticate_token(token)
    }

    pub fn authenticate_token(&self, token: &str) -> Result<TokenRecord, AuthError> {
        self.current().verify(token).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gridclue_core::tokens::TokenKind;

    #[test]
    fn revocations_are_seen_after_the_refresh_interval() {
        let dir = std::env::temp_dir().join(format!("gridclue-auth-{}", std::process::id()));
        let path = dir.join("tokens.json");
        let mut f = TokenFile::default();
        let (secret, rec) = f.issue(TokenKind::Reporter, None, None, "r").unwrap();
        f.write(&path).unwrap();
        let tokens = Tokens::new(TokenStore::open(&path).unwrap(), Duration::from_millis(50));
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
        file.set_modified(std::time::SystemTime::now() + Duration::from_secs(2))
            .unwrap();
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(tokens.authenticate_token(&secret), Err(AuthError::Revoked));
        std::fs::remove_dir_all(dir).ok();
    }
}
