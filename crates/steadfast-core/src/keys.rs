//! API key format and verification.
//!
//! A key reads `sfk_<key id>_<secret>`: the `sfk_` prefix makes leaked keys
//! easy to spot by secret scanners, the key id (16 hex digits) is public and
//! is how the key is found and revoked, and the secret (64 hex digits, 32
//! random bytes) is stored only as its SHA-256. A slow password hash would buy
//! nothing here: the secret has 256 bits of entropy, so nobody brute-forces it.

use std::fmt;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

const PREFIX: &str = "sfk_";
const KEY_ID_BYTES: usize = 8;
const SECRET_BYTES: usize = 32;

/// The public identifier of an API key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyId(String);

impl KeyId {
    pub fn from_random(bytes: [u8; KEY_ID_BYTES]) -> Self {
        Self(hex::encode(bytes))
    }

    /// Parses a key id as printed by `steadfast key create`.
    pub fn parse(value: &str) -> Result<Self, KeyParseError> {
        let valid =
            value.len() == KEY_ID_BYTES * 2 && value.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if valid {
            Ok(Self(value.to_owned()))
        } else {
            Err(KeyParseError)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A presented or freshly generated key. Deliberately not `Display`: printing
/// a key is something the code must spell out with [`ApiKeySecret::reveal`].
pub struct ApiKeySecret {
    key_id: KeyId,
    secret: [u8; SECRET_BYTES],
}

impl fmt::Debug for ApiKeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeySecret")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// The presented string is not a Steadfast key. Deliberately says nothing more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a Steadfast API key")]
pub struct KeyParseError;

impl ApiKeySecret {
    pub fn from_random(key_id: [u8; KEY_ID_BYTES], secret: [u8; SECRET_BYTES]) -> Self {
        Self {
            key_id: KeyId::from_random(key_id),
            secret,
        }
    }

    pub fn parse(presented: &str) -> Result<Self, KeyParseError> {
        let rest = presented.strip_prefix(PREFIX).ok_or(KeyParseError)?;
        let (key_id, secret_hex) = rest.split_once('_').ok_or(KeyParseError)?;
        let key_id = KeyId::parse(key_id)?;
        let mut secret = [0u8; SECRET_BYTES];
        hex::decode_to_slice(secret_hex, &mut secret).map_err(|_| KeyParseError)?;
        Ok(Self { key_id, secret })
    }

    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    /// The full key, to be shown once to whoever created it.
    pub fn reveal(&self) -> String {
        format!("{PREFIX}{}_{}", self.key_id, hex::encode(self.secret))
    }

    /// What storage keeps instead of the secret.
    pub fn secret_hash(&self) -> [u8; 32] {
        Sha256::digest(self.secret).into()
    }

    /// Compares against a stored hash in constant time.
    pub fn matches(&self, stored_hash: &[u8]) -> bool {
        self.secret_hash().ct_eq(stored_hash).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revealed_key_parses_back_and_matches_only_its_own_hash() {
        let key = ApiKeySecret::from_random([1; 8], [7; 32]);
        let text = key.reveal();
        assert!(text.starts_with("sfk_0101010101010101_"));
        let parsed = ApiKeySecret::parse(&text).unwrap();
        assert_eq!(parsed.key_id(), key.key_id());
        assert!(parsed.matches(&key.secret_hash()));
        let other = ApiKeySecret::from_random([1; 8], [8; 32]);
        assert!(!parsed.matches(&other.secret_hash()));
        assert!(!format!("{parsed:?}").contains(&hex::encode([7u8; 32])));
    }

    #[test]
    fn rejects_anything_that_is_not_a_key() {
        for bad in [
            "",
            "sfk_",
            "Bearer x",
            "sfk_zz_00",
            "sfk_0101010101010101_abc",
            "sk_live_123",
        ] {
            assert_eq!(ApiKeySecret::parse(bad).unwrap_err(), KeyParseError, "{bad}");
        }
    }
}
