//! The token key's check value: proof, before any job runs, that this
//! process's `PLANSYNC_TOKEN_KEY` is the one the stored refresh tokens were
//! encrypted with.
//!
//! The first `connect` (or the first `run` that can open the stored tokens)
//! writes a known value encrypted under the key; later processes decrypt it
//! at start. A replica started with the wrong key then refuses to start
//! instead of failing every job it claims.

use sqlx::PgPool;

use super::StoreError;
use crate::crypto::TokenCipher;
use crate::ids::{CalendarId, RefreshToken, UserId};

const KEY: &str = "token_key_check";
const PLAINTEXT: &str = "plansync token key check v1";

fn check_calendar() -> CalendarId {
    CalendarId::new("plansync:token-key-check")
}

/// What the stored check says about `cipher`'s key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyCheck {
    /// The key opens the check value (or the stored tokens): it is the right one.
    Matches,
    /// The key cannot open what is stored: it is not the key of these tokens.
    Mismatch,
}

/// Verifies `cipher` against the stored check value. Without one, tries a
/// stored refresh token instead and, when the key opens it (or nothing is
/// stored yet), writes the check value for the next process.
pub async fn verify(pool: &PgPool, cipher: &TokenCipher) -> Result<KeyCheck, StoreError> {
    let stored = sqlx::query_scalar!("SELECT value FROM plansync.settings WHERE key = $1", KEY)
        .fetch_optional(pool)
        .await?;
    if let Some(value) = stored {
        return Ok(match cipher.decrypt(UserId(0), &check_calendar(), &value) {
            Ok(t) if t.expose_secret() == PLAINTEXT => KeyCheck::Matches,
            _ => KeyCheck::Mismatch,
        });
    }
    let sample = sqlx::query!(
        r#"SELECT user_id AS "user_id: UserId", calendar_id AS "calendar_id: CalendarId",
             refresh_token_enc AS "refresh_token_enc!"
         FROM plansync.connections
         WHERE refresh_token_enc IS NOT NULL ORDER BY id LIMIT 1"#
    )
    .fetch_optional(pool)
    .await?;
    if let Some(sample) = sample {
        if cipher
            .decrypt(
                sample.user_id,
                &sample.calendar_id,
                &sample.refresh_token_enc,
            )
            .is_err()
        {
            return Ok(KeyCheck::Mismatch);
        }
    }
    let value = cipher.encrypt(UserId(0), &check_calendar(), &RefreshToken::new(PLAINTEXT));
    sqlx::query!(
        "INSERT INTO plansync.settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        KEY,
        value,
    )
    .execute(pool)
    .await?;
    Ok(KeyCheck::Matches)
}
