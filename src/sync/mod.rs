//! Sync in both directions: `pull` (Google → appointments), `push`
//! (appointments → Google) and `reconcile`, the pure decisions they share.
//!
//! [`SyncDeps`] is what every sync job needs besides the database: the Google
//! client, the token cipher and the settings. It keeps one token provider per
//! connection, so consecutive jobs of a connection reuse its access token
//! instead of refreshing it every time; a re-connect (new refresh token)
//! replaces it.
//!
//! [`google_failure`] is the one place where a Google error becomes a queue
//! outcome: rate limits snooze, transient failures retry, `invalid_grant` and a
//! gone calendar block the connection (its jobs wait, unclaimed, for `connect`
//! or `resync`), and anything else is parked with its error.

pub mod conflict;
mod connect;
pub mod pull;
pub mod push;
pub mod reconcile;
pub mod watch;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use sqlx::PgPool;

use crate::config::SyncSettings;
use crate::crypto::TokenCipher;
use crate::google::{CalendarClient, GoogleClient, GoogleError, NextStep, TokenProvider};
use crate::ids::ConnectionId;
use crate::queue::{BackoffSchedule, Failure, Job, JobError};
use crate::store::connections::{self, Blocked, SyncConnection};

pub use connect::connect;

/// Shared by every sync job of a worker.
pub struct SyncDeps {
    pub google: GoogleClient,
    pub cipher: TokenCipher,
    pub settings: SyncSettings,
    /// `PLANSYNC_WEBHOOK_URL`: where notification channels point; `None`,
    /// no channels (the watch job stops any left).
    pub webhook_url: Option<String>,
    tokens: Mutex<HashMap<ConnectionId, (Vec<u8>, TokenProvider)>>,
}

impl std::fmt::Debug for SyncDeps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncDeps")
            .field("google", &self.google)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl SyncDeps {
    pub fn new(google: GoogleClient, cipher: TokenCipher, settings: SyncSettings) -> Self {
        SyncDeps {
            google,
            cipher,
            settings,
            webhook_url: None,
            tokens: Mutex::new(HashMap::new()),
        }
    }

    /// Sets where notification channels point (`PLANSYNC_WEBHOOK_URL`).
    pub fn with_webhook_url(mut self, url: Option<String>) -> Self {
        self.webhook_url = url;
        self
    }

    /// The calendar client of a connection: over its refresh token, or over
    /// the service account acting as its member. When the stored token cannot
    /// be decrypted (wrong `PLANSYNC_TOKEN_KEY`) the job backs off without
    /// spending attempts until an operator fixes the key.
    pub fn client(&self, connection: &SyncConnection) -> Result<CalendarClient, JobError> {
        if let Some(subject) = &connection.subject {
            // The service account keeps one cache per member, shared by all
            // of that member's connections; nothing to keep per connection.
            return Ok(self.google.calendar_client_with(
                self.google
                    .delegated_provider(&connection.id.to_string(), subject),
            ));
        }
        let stored = connection.refresh_token_enc.as_deref().ok_or_else(|| {
            JobError::fatal(format!(
                "connection {} has no refresh token (disconnected)",
                connection.id
            ))
        })?;
        let mut cache = self.tokens.lock().expect("token cache lock");
        if let Some((enc, provider)) = cache.get(&connection.id) {
            if enc.as_slice() == stored {
                return Ok(self.google.calendar_client_with(provider.clone()));
            }
        }
        // A token the key cannot open is an operator's mistake (a replica with
        // the wrong PLANSYNC_TOKEN_KEY), never the user's: back off and say so,
        // never mark the connection needs-reauth.
        let token = self
            .cipher
            .decrypt(connection.user_id, &connection.calendar_id, stored)
            .map_err(|e| JobError::Backoff {
                reason: Failure::new(
                    "PLANSYNC_TOKEN_KEY cannot decrypt this connection's refresh token \
                     (is this worker running with the wrong key?)",
                    e,
                ),
                schedule: BackoffSchedule::OPERATOR,
            })?;
        // Keyed by the connection: each is one Google principal with its own
        // per-user budget.
        let provider = self
            .google
            .token_provider_for(&connection.id.to_string(), token);
        cache.insert(connection.id, (stored.to_vec(), provider.clone()));
        Ok(self.google.calendar_client_with(provider))
    }
}

/// How long a rate-limited job waits when Google gave no `Retry-After`.
const DEFAULT_SNOOZE: Duration = Duration::from_secs(30);
/// The least a rate-limited job waits, whatever `Retry-After` said (0, or a
/// date already past), so a pass never spins on a job Google keeps refusing.
const MIN_SNOOZE: Duration = Duration::from_secs(1);

/// The snooze for a rate limit: Google's `Retry-After` (at least
/// [`MIN_SNOOZE`]) plus up to 20% jitter, so a fleet that was throttled
/// together does not come back in lockstep.
fn snooze_for(retry_after: Option<Duration>) -> Duration {
    let base = retry_after
        .unwrap_or(DEFAULT_SNOOZE)
        .clamp(MIN_SNOOZE, crate::google::MAX_SNOOZE);
    // Capped after the jitter too: whatever Google says, at most the hour.
    (base + base.mul_f64(rand::random::<f64>() * 0.2)).min(crate::google::MAX_SNOOZE)
}

/// Turns a Google failure into the queue's outcome, blocking the connection
/// where the failure says so (in its own fenced transaction, so a job that
/// lost its lease writes nothing).
pub async fn google_failure(
    pool: &PgPool,
    job: &Job,
    connection: ConnectionId,
    err: GoogleError,
) -> JobError {
    let message = crate::queue::chain(&err);
    let blocked = match err.next_step() {
        NextStep::Snooze { after } => {
            return JobError::Snooze {
                after: snooze_for(after),
                reason: Failure::of(err),
            }
        }
        NextStep::QuotaBackoff => {
            return JobError::Backoff {
                reason: Failure::of(err),
                schedule: BackoffSchedule::QUOTA,
            }
        }
        NextStep::Retry | NextStep::FullResync => return JobError::Retry(Failure::of(err)),
        NextStep::Interpret | NextStep::GiveUp => return JobError::Fatal(Failure::of(err)),
        NextStep::NeedsReauth => Blocked::NeedsReauth,
        NextStep::CalendarGone => Blocked::CalendarGone,
    };
    let marked = async {
        let mut tx = crate::store::begin(&pool).await?;
        job.fence(&mut tx).await?;
        connections::mark_blocked(&mut tx, connection, blocked, &message).await?;
        crate::deltas::announce_link_change(&mut tx, connection).await?;
        tx.commit().await?;
        Ok::<(), JobError>(())
    }
    .await;
    match marked {
        // The job stays queued but unclaimed while its connection is blocked,
        // and runs once `connect` (or `resync`) unblocks it.
        Ok(()) => JobError::Snooze {
            after: Duration::from_secs(1),
            reason: Failure::of(err),
        },
        Err(e) => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snoozes_honour_retry_after_with_a_floor_and_bounded_jitter() {
        for _ in 0..100 {
            let s = snooze_for(Some(Duration::from_secs(10)));
            assert!(
                s >= Duration::from_secs(10) && s <= Duration::from_secs(12),
                "{s:?}"
            );
            let s = snooze_for(Some(Duration::ZERO));
            assert!(s >= MIN_SNOOZE && s <= MIN_SNOOZE.mul_f64(1.2), "{s:?}");
            let s = snooze_for(Some(Duration::from_secs(u64::MAX)));
            assert!(s <= crate::google::MAX_SNOOZE, "{s:?}");
            let s = snooze_for(None);
            assert!(
                s >= DEFAULT_SNOOZE && s <= DEFAULT_SNOOZE.mul_f64(1.2),
                "{s:?}"
            );
        }
    }
}
