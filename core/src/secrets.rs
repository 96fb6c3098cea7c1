//! Keyed hashing for secrets and personal data: bearer tokens are stored only as hashes, and a
//! reporter's phone number only as a keyed hash (so it can be matched, never read back).

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// The server-side key for keyed hashes. Its bytes are never logged.
#[derive(Clone)]
pub struct SecretKey(Vec<u8>);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(***)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read secret key file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("secret key must be at least 32 bytes written as hex")]
    Format,
}

impl SecretKey {
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, SecretError> {
        if bytes.len() < 32 {
            return Err(SecretError::Format);
        }
        Ok(Self(bytes))
    }

    pub fn from_hex(text: &str) -> Result<Self, SecretError> {
        let bytes = hex::decode(text.trim()).map_err(|_| SecretError::Format)?;
        Self::from_bytes(bytes)
    }

    pub fn load(path: &std::path::Path) -> Result<Self, SecretError> {
        let text = std::fs::read_to_string(path).map_err(|source| SecretError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_hex(&text)
    }

    /// HMAC-SHA256 of `value` under this key, with a purpose label so hashes of different kinds
    /// of values never compare equal.
    pub fn keyed_hash(&self, purpose: &str, value: &str) -> String {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(purpose.as_bytes());
        mac.update(&[0]);
        mac.update(value.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// Keyed hash of a phone number after normalising it to its digits.
    pub fn phone_hash(&self, phone: &str) -> String {
        let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
        self.keyed_hash("phone", &digits)
    }
}

/// SHA-256 of a bearer token, as stored in the token file. Tokens carry 256 bits of randomness,
/// so an unkeyed hash is enough to make a leaked token file useless.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Constant-time comparison of two hex digests (digests of different lengths differ at once:
/// the length of a digest is no secret).
pub fn digest_eq(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SecretKey {
        SecretKey::from_hex(&"ab".repeat(32)).unwrap()
    }

    #[test]
    fn phone_hash_normalises_and_is_keyed() {
        let k = key();
        assert_eq!(k.phone_hash("138-0013-8000"), k.phone_hash("13800138000"));
        assert_ne!(k.phone_hash("13800138000"), k.phone_hash("13800138001"));
        let other = SecretKey::from_hex(&"cd".repeat(32)).unwrap();
        assert_ne!(k.phone_hash("13800138000"), other.phone_hash("13800138000"));
        assert!(!k.phone_hash("13800138000").contains("13800138000"));
    }

    #[test]
    fn short_or_malformed_keys_are_refused() {
        assert!(SecretKey::from_hex("abcd").is_err());
        assert!(SecretKey::from_hex(&"zz".repeat(32)).is_err());
        assert_eq!(format!("{:?}", key()), "SecretKey(***)");
    }

    #[test]
    fn token_hashes_compare() {
        let h = token_hash("secret-token");
        assert!(digest_eq(&h, &token_hash("secret-token")));
        assert!(!digest_eq(&h, &token_hash("secret-tokem")));
        assert!(!digest_eq(&h, "short"));
    }
}
