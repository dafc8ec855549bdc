//! What identifies and authenticates a Google notification channel.
//!
//! - [`ChannelId`]: a random UUID (v4) we choose and Google echoes in
//!   `X-Goog-Channel-ID`. Unguessable, but not a secret: it is logged.
//! - [`ChannelToken`]: 32 random bytes (base64url) Google echoes in
//!   `X-Goog-Channel-Token`. It is a secret: only its SHA-256
//!   ([`ChannelToken::hash`]) is stored, its `Debug` is redacted, and a
//!   presented token is checked by [`token_matches`] in constant time, so
//!   response timing tells a forger nothing about the stored hash.

use std::fmt;

use base64::Engine;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

/// Our id of a notification channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, sqlx::Type)]
#[sqlx(transparent)]
pub struct ChannelId(pub Uuid);

impl ChannelId {
    pub fn random() -> Self {
        ChannelId(Uuid::new_v4())
    }

    /// Parses an `X-Goog-Channel-ID`; `None` for anything we cannot have
    /// issued.
    pub fn parse(text: &str) -> Option<Self> {
        Uuid::parse_str(text.trim()).ok().map(ChannelId)
    }
}

impl fmt::Display for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The per-channel secret Google sends back with every notification.
#[derive(Clone)]
pub struct ChannelToken(SecretString);

impl fmt::Debug for ChannelToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChannelToken([REDACTED])")
    }
}

impl ChannelToken {
    /// 256 random bits from the OS generator.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        ChannelToken(SecretString::from(
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes),
        ))
    }

    pub fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }

    /// What is stored: SHA-256 of the token's text.
    pub fn hash(&self) -> Vec<u8> {
        hash_text(self.expose_secret())
    }
}

fn hash_text(text: &str) -> Vec<u8> {
    Sha256::digest(text.as_bytes()).to_vec()
}

/// Whether a presented `X-Goog-Channel-Token` matches the stored hash. The
/// comparison of the digests takes the same time wherever they differ.
pub fn token_matches(presented: Option<&str>, stored_hash: &[u8]) -> bool {
    let Some(presented) = presented else {
        return false;
    };
    let digest = hash_text(presented);
    digest.len() == stored_hash.len() && bool::from(digest.as_slice().ct_eq(stored_hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_redacted_and_checked_against_their_hash() {
        let a = ChannelToken::generate();
        let b = ChannelToken::generate();
        assert_ne!(a.expose_secret(), b.expose_secret());
        assert_eq!(a.expose_secret().len(), 43);
        assert!(!format!("{a:?}").contains(a.expose_secret()));
        let stored = a.hash();
        assert!(token_matches(Some(a.expose_secret()), &stored));
        assert!(!token_matches(Some(b.expose_secret()), &stored));
        assert!(!token_matches(Some(""), &stored));
        assert!(!token_matches(None, &stored));
        assert!(!token_matches(Some(a.expose_secret()), &stored[..31]));
    }

    #[test]
    fn only_uuids_are_channel_ids() {
        let id = ChannelId::random();
        assert_eq!(ChannelId::parse(&id.to_string()), Some(id));
        assert_eq!(ChannelId::parse("chan-1"), None);
    }
}
