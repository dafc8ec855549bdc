//! `POST /google/notifications`: Google's push notifications, on `run`'s
//! listener.
//!
//! Guarantees:
//! - **Authenticated before anything is written.** The channel id
//!   (`X-Goog-Channel-ID`) is looked up with one read; the token
//!   (`X-Goog-Channel-Token`) is compared with the stored hash in constant
//!   time. Unknown channel → 404; wrong or missing token → 401. Only an
//!   authenticated notification writes to the database.
//! - **Answers at once.** An accepted `exists` / `not_exists` notification
//!   enqueues a pull of the channel's connection, due now, deduplicated by the
//!   queue, and answers 200 without waiting for it. When a pull of the
//!   connection is running (it may have listed before the change), the
//!   notification queues one follow-up due [`FOLLOW_UP_DELAY`] later, into
//!   which the rest of a burst folds: a burst is one pull, or two. A `sync`
//!   message only confirms a new channel: nothing is enqueued.
//! - **Stale channels are acknowledged.** A channel stopped or replaced in
//!   the last 7 days answers 200 and is ignored, so Google does not retry;
//!   after that its id is unknown (404).
//!
//! Every outcome is counted in `plansync_notifications_total{outcome}`.

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use sqlx::PgPool;

use crate::channel::{token_matches, ChannelId};
use crate::store;

use super::metric;

pub const PATH: &str = "/google/notifications";

/// How long the follow-up pull of a notification that arrives while a pull
/// runs waits: the rest of a burst folds into it.
const FOLLOW_UP_DELAY: Duration = Duration::from_millis(500);

/// The route, with its own state (the pool), ready to merge into `run`'s router.
pub fn router(pool: PgPool) -> Router {
    Router::new().route(PATH, post(receive)).with_state(pool)
}

/// How a notification was answered (the metric's `outcome` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// A change: a pull was enqueued.
    Accepted,
    /// A new channel's `sync` message.
    Sync,
    UnknownChannel,
    BadToken,
    /// A channel stopped or replaced recently.
    Stale,
    /// The database could not be asked (503: Google retries).
    Unavailable,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Sync => "sync",
            Outcome::UnknownChannel => "unknown_channel",
            Outcome::BadToken => "bad_token",
            Outcome::Stale => "stale",
            Outcome::Unavailable => "unavailable",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            Outcome::Accepted | Outcome::Sync | Outcome::Stale => StatusCode::OK,
            Outcome::UnknownChannel => StatusCode::NOT_FOUND,
            Outcome::BadToken => StatusCode::UNAUTHORIZED,
            Outcome::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

async fn receive(State(pool): State<PgPool>, headers: HeaderMap) -> StatusCode {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let channel = header("x-goog-channel-id").and_then(ChannelId::parse);
    let outcome = handle(
        &pool,
        channel,
        header("x-goog-channel-token"),
        header("x-goog-resource-state").unwrap_or_default(),
    )
    .await;
    metrics::counter!(metric::NOTIFICATIONS, "outcome" => outcome.label()).increment(1);
    if outcome != Outcome::Accepted && outcome != Outcome::Sync {
        tracing::debug!(
            channel = ?channel,
            outcome = outcome.label(),
            "notification not accepted"
        );
    }
    outcome.status()
}

async fn handle(
    pool: &PgPool,
    channel: Option<ChannelId>,
    token: Option<&str>,
    resource_state: &str,
) -> Outcome {
    let Some(channel) = channel else {
        return Outcome::UnknownChannel;
    };
    let target = match store::channels::lookup(pool, channel).await {
        Ok(Some(target)) => target,
        Ok(None) => return Outcome::UnknownChannel,
        Err(err) => {
            tracing::warn!(error = %crate::text::chain(&err), "notification: channel lookup failed");
            return Outcome::Unavailable;
        }
    };
    if !token_matches(token, &target.token_hash) {
        return Outcome::BadToken;
    }
    if target.retired {
        return Outcome::Stale;
    }
    if resource_state == "sync" {
        return Outcome::Sync;
    }
    let enqueued = async {
        let mut conn = pool.acquire().await?;
        store::channels::enqueue_notified_pull(
            &mut conn,
            target.connection_id,
            FOLLOW_UP_DELAY.as_secs_f64(),
        )
        .await
    }
    .await;
    match enqueued {
        Ok(job) => {
            let job = job.map_or_else(|| "none".to_owned(), |j| j.to_string());
            tracing::debug!(%channel, connection = %target.connection_id, %job, "notification: pull enqueued");
            Outcome::Accepted
        }
        Err(err) => {
            tracing::warn!(error = %crate::text::chain(&err), "notification: enqueuing the pull failed");
            Outcome::Unavailable
        }
    }
}
