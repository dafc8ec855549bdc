//! Encryption of refresh tokens at rest.
//!
//! A refresh token is stored as `nonce (12 bytes) || AES-256-GCM ciphertext`,
//! with a fresh random nonce per value, under `PLANSYNC_TOKEN_KEY`. The
//! associated data binds the ciphertext to its (user, calendar), so a value
//! copied onto another connection's row fails to decrypt instead of handing
//! one user's Google access to another. Decrypting with another key fails
//! with [`CryptoError::WrongKey`]; nothing here ever logs a plaintext.

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, OsRng, Payload};
use aes_gcm::{AeadCore, Aes256Gcm, Key, Nonce};
use base64::Engine;

use crate::ids::{CalendarId, RefreshToken, UserId};

const NONCE_LEN: usize = 12;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error(
        "the stored refresh token cannot be decrypted: PLANSYNC_TOKEN_KEY is not the key it was \
         stored with (or the stored value was altered); re-connect the calendar or restore the key"
    )]
    WrongKey,
    #[error("the stored refresh token is too short to be a ciphertext")]
    Truncated,
}

/// Encrypts and decrypts refresh tokens. Its `Debug` never shows the key.
#[derive(Clone)]
pub struct TokenCipher {
    cipher: Aes256Gcm,
}

impl fmt::Debug for TokenCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenCipher([REDACTED])")
    }
}

impl TokenCipher {
    /// Builds the cipher from base64 of exactly 32 bytes. The error text never
    /// repeats the input, which is a secret even when malformed.
    pub fn from_base64(encoded: &str) -> Result<Self, String> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|_| "not valid base64 (expected base64 of 32 random bytes)".to_owned())?;
        if bytes.len() != 32 {
            return Err(format!(
                "decodes to {} bytes; AES-256 needs exactly 32",
                bytes.len()
            ));
        }
        Ok(TokenCipher {
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&bytes)),
        })
    }

    /// A new random key, base64-encoded, for setting `PLANSYNC_TOKEN_KEY`.
    pub fn generate_key() -> String {
        base64::engine::general_purpose::STANDARD.encode(Aes256Gcm::generate_key(OsRng))
    }

    pub fn encrypt(&self, user: UserId, calendar: &CalendarId, token: &RefreshToken) -> Vec<u8> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let aad = associated_data(user, calendar);
        let ciphertext = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: token.expose_secret().as_bytes(),
                    aad: &aad,
                },
            )
            .expect("AES-GCM encryption cannot fail for inputs below 64 GiB");
        let mut out = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        out
    }

    pub fn decrypt(
        &self,
        user: UserId,
        calendar: &CalendarId,
        stored: &[u8],
    ) -> Result<RefreshToken, CryptoError> {
        if stored.len() < NONCE_LEN + 16 {
            return Err(CryptoError::Truncated);
        }
        let (nonce, ciphertext) = stored.split_at(NONCE_LEN);
        let aad = associated_data(user, calendar);
        let plain = self
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| CryptoError::WrongKey)?;
        let text = String::from_utf8(plain).map_err(|_| CryptoError::WrongKey)?;
        Ok(RefreshToken::new(text))
    }
}

fn associated_data(user: UserId, calendar: &CalendarId) -> Vec<u8> {
    format!("plansync:refresh-token:{user}:{calendar}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cal() -> CalendarId {
        CalendarId::from("primary")
    }

    #[test]
    fn round_trip_with_a_fresh_nonce_each_time() {
        let cipher = TokenCipher::from_base64(&TokenCipher::generate_key()).unwrap();
        let token = RefreshToken::new("1//refresh-token");
        let a = cipher.encrypt(UserId(1), &cal(), &token);
        let b = cipher.encrypt(UserId(1), &cal(), &token);
        assert_ne!(a, b, "nonces must differ");
        assert!(!a.windows(7).any(|w| w == b"refresh"));
        let back = cipher.decrypt(UserId(1), &cal(), &a).unwrap();
        assert_eq!(back.expose_secret(), "1//refresh-token");
    }

    #[test]
    fn wrong_key_is_a_clear_error() {
        let one = TokenCipher::from_base64(&TokenCipher::generate_key()).unwrap();
        let other = TokenCipher::from_base64(&TokenCipher::generate_key()).unwrap();
        let stored = one.encrypt(UserId(1), &cal(), &RefreshToken::new("t"));
        let err = other.decrypt(UserId(1), &cal(), &stored).unwrap_err();
        assert_eq!(err, CryptoError::WrongKey);
        assert!(err.to_string().contains("PLANSYNC_TOKEN_KEY"));
    }

    #[test]
    fn a_ciphertext_moved_to_another_connection_fails() {
        let cipher = TokenCipher::from_base64(&TokenCipher::generate_key()).unwrap();
        let stored = cipher.encrypt(UserId(1), &cal(), &RefreshToken::new("t"));
        assert_eq!(
            cipher.decrypt(UserId(2), &cal(), &stored).unwrap_err(),
            CryptoError::WrongKey
        );
        assert_eq!(
            cipher
                .decrypt(UserId(1), &cal(), &stored[..10])
                .unwrap_err(),
            CryptoError::Truncated
        );
    }

    #[test]
    fn key_must_be_32_bytes_of_base64() {
        assert!(TokenCipher::from_base64("!!!")
            .unwrap_err()
            .contains("base64"));
        let short = base64::engine::general_purpose::STANDARD.encode([0u8; 16]);
        assert!(TokenCipher::from_base64(&short)
            .unwrap_err()
            .contains("16 bytes"));
    }
}
