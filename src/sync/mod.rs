//! Sync in both directions: `pull` (Google → appointments), `push`
//! (appointments → Google) and `reconcile`, the pure decisions they share.
//!
//! [`SyncDeps`] is what every sync job needs besides the database: the Google
//! client, the token cipher and the settings. It keeps one calendar client
//! (the hub and the token provider with its access token) per connection, in
//! a bounded least-recently-used cache ([`CLIENT_CACHE_CAPACITY`]), so
//! consecutive jobs of a connection neither decrypt its refresh token nor
//! refresh its access token nor build a hub again; a re-connect (a new
//! refresh token, or a new member for a delegated one) replaces its entry.
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

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hashlink::LruCache;

use sqlx::PgPool;

use crate::config::SyncSettings;
use crate::crypto::TokenCipher;
use crate::google::{CalendarClient, GoogleClient, GoogleError, NextStep};
use crate::ids::{ConnectionId, Subject};
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
    clients: Mutex<LruCache<ConnectionId, CachedClient>>,
}

/// The connections whose clients a worker keeps: a client is a few
/// kilobytes, and a worker serves far fewer connections than this between
/// two jobs of one connection unless it serves a whole region alone (then a
/// miss costs one decryption and one token refresh, as without a cache).
pub const CLIENT_CACHE_CAPACITY: usize = 4096;

/// A cached client, with the credentials it was built from: a connection
/// whose credentials changed (re-connected) gets a new one.
struct CachedClient {
    credentials: Credentials,
    client: Arc<CalendarClient>,
}

#[derive(PartialEq, Eq)]
enum Credentials {
    /// The stored (encrypted) refresh token.
    RefreshToken(Vec<u8>),
    /// The member a delegated connection acts as.
    Delegated(Subject),
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
            clients: Mutex::new(LruCache::new(CLIENT_CACHE_CAPACITY)),
        }
    }

    /// Sets where notification channels point (`PLANSYNC_WEBHOOK_URL`).
    pub fn with_webhook_url(mut self, url: Option<String>) -> Self {
        self.webhook_url = url;
        self
    }

    /// The calendar client of a connection: over its refresh token, or over
    /// the service account acting as its member; cached (see the module
    /// doc). When the stored token cannot be decrypted (wrong
    /// `PLANSYNC_TOKEN_KEY`) the job backs off without spending attempts
    /// until an operator fixes the key.
    pub fn client(&self, connection: &SyncConnection) -> Result<Arc<CalendarClient>, JobError> {
        let credentials = match (&connection.subject, &connection.refresh_token_enc) {
            (Some(subject), _) => Credentials::Delegated(subject.clone()),
            (None, Some(stored)) => Credentials::RefreshToken(stored.clone()),
            (None, None) => {
                return Err(JobError::fatal(format!(
                    "connection {} has no refresh token (disconnected)",
                    connection.id
                )))
            }
        };
        if let Some(cached) = self
            .clients
            .lock()
            .expect("client cache lock")
            .get(&connection.id)
        {
            if cached.credentials == credentials {
                return Ok(cached.client.clone());
            }
        }
        let provider = match &credentials {
            // Keyed by the connection: each is one Google principal with its
            // own per-user budget. The service account keeps one token cache
            // per member, shared by all of that member's connections.
            Credentials::Delegated(subject) => self
                .google
                .delegated_provider(&connection.id.to_string(), subject),
            Credentials::RefreshToken(stored) => {
                // A token the key cannot open is an operator's mistake (a
                // replica with the wrong PLANSYNC_TOKEN_KEY), never the
                // user's: back off and say so, never mark the connection
                // needs-reauth.
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
                self.google
                    .token_provider_for(&connection.id.to_string(), token)
            }
        };
        let client = Arc::new(self.google.calendar_client_with(provider));
        self.clients.lock().expect("client cache lock").insert(
            connection.id,
            CachedClient {
                credentials,
                client: client.clone(),
            },
        );
        Ok(client)
    }

    /// How many connections' clients are cached (at most
    /// [`CLIENT_CACHE_CAPACITY`]).
    pub fn cached_clients(&self) -> usize {
        self.clients.lock().expect("client cache lock").len()
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
        let mut tx = crate::store::begin(pool).await?;
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
