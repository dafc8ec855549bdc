//! Notification channels' SQL (`plansync.channels`). The life cycle these
//! statements implement is told in [`crate::sync::watch`]; this file only
//! speaks to the tables.
//!
//! Times come from the database's `now()`. A channel is *fresh* while it is
//! live, not retired, and more than a third of the lifetime Google granted it
//! is left; the same expression decides in the watch job and in the
//! scheduler, so they never disagree about whether a renewal is due.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::StoreError;
use crate::channel::ChannelId;
use crate::ids::{ConnectionId, JobId};
use crate::job::JobKind;

/// How long notifications of a stopped or replaced channel are answered 200
/// (and ignored) rather than 404: Google may still deliver a few, and
/// retries a failed delivery for a while.
pub const STALE_DAYS: i32 = 7;

// `fresh`, over a `plansync.channels` row aliased `ch`, is spelled out in
// each statement that needs it (the checked macros take literal SQL only):
//   (ch.state = 'live' AND ch.retired_at IS NULL
//    AND ch.expires_at - now() > (ch.expires_at - ch.opened_at) / 3)

/// An unstopped channel of a connection, as the watch job sees it.
#[derive(Debug, Clone)]
pub struct ChannelRow {
    pub id: ChannelId,
    /// `opening` or `live`.
    pub state: String,
    pub address: String,
    pub resource_id: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
    pub retired: bool,
    /// Live, not retired, and more than a third of its lifetime left.
    pub fresh: bool,
}

/// What the watch job reads before deciding.
#[derive(Debug, Clone)]
pub struct WatchState {
    /// The connection has completed a pull and no full resync is pending:
    /// it may have a channel (a fresh `connect` waits for its first sync).
    pub synced: bool,
    /// Unstopped channels, oldest first.
    pub channels: Vec<ChannelRow>,
    /// The latest resource id Google gave a channel of this connection. Google
    /// names the watched calendar with it, the same for every channel, so it
    /// stops a channel whose own `events.watch` answer was lost.
    pub known_resource_id: Option<String>,
}

pub async fn watch_state(
    conn: &mut PgConnection,
    connection: ConnectionId,
) -> Result<WatchState, StoreError> {
    let synced = sqlx::query_scalar!(
        r#"SELECT c.last_pull_at IS NOT NULL AND NOT EXISTS (
             SELECT 1 FROM plansync.jobs j WHERE j.connection_id = c.id
               AND j.kind = 'full_resync' AND j.state IN ('queued', 'running')) AS "synced!"
         FROM plansync.connections c WHERE c.id = $1"#,
        connection.0,
    )
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(StoreError::UnknownConnection(connection))?;
    let channels = sqlx::query_as!(
        ChannelRow,
        r#"SELECT ch.id AS "id: ChannelId", ch.state, ch.address, ch.resource_id, ch.expires_at,
             ch.retired_at IS NOT NULL AS "retired!",
             (ch.state = 'live' AND ch.retired_at IS NULL
              AND ch.expires_at - now() > (ch.expires_at - ch.opened_at) / 3) AS "fresh!"
         FROM plansync.channels ch WHERE ch.connection_id = $1 AND ch.state <> 'stopped'
         ORDER BY ch.created_at, ch.id"#,
        connection.0,
    )
    .fetch_all(&mut *conn)
    .await?;
    let known_resource_id = sqlx::query_scalar!(
        r#"SELECT resource_id AS "resource_id!" FROM plansync.channels
         WHERE connection_id = $1 AND resource_id IS NOT NULL
         ORDER BY created_at DESC LIMIT 1"#,
        connection.0,
    )
    .fetch_optional(&mut *conn)
    .await?;
    Ok(WatchState {
        synced,
        channels,
        known_resource_id,
    })
}

/// Records a channel about to be opened, before `events.watch` is called.
/// The connection row is share-locked, so a `disconnect` either happened
/// before (then nothing is recorded and `false` returned: no channel is
/// opened for a connection that lost its token) or waits and then sees this
/// row (and keeps the token until it is stopped).
pub async fn record_opening(
    conn: &mut PgConnection,
    connection: ConnectionId,
    id: ChannelId,
    token_hash: &[u8],
    address: &str,
) -> Result<bool, StoreError> {
    let usable = sqlx::query_scalar!(
        "SELECT active AND (refresh_token_enc IS NOT NULL OR subject IS NOT NULL) \
         FROM plansync.connections \
         WHERE id = $1 FOR SHARE",
        connection.0,
    )
    .fetch_optional(&mut *conn)
    .await?
    .flatten();
    if usable != Some(true) {
        return Ok(false);
    }
    sqlx::query!(
        "INSERT INTO plansync.channels (id, connection_id, token_hash, address) \
         VALUES ($1, $2, $3, $4)",
        id.0,
        connection.0,
        token_hash,
        address,
    )
    .execute(&mut *conn)
    .await?;
    Ok(true)
}

/// Google opened the channel: it is live, and every other unstopped channel
/// of the connection is retired (to be stopped). Returns `false` when the
/// channel itself was retired meanwhile (a disconnect or re-connect while
/// Google answered): then it is to be stopped too. Without a granted
/// expiration, Google's documented default of a week is assumed.
pub async fn mark_live(
    conn: &mut PgConnection,
    connection: ConnectionId,
    id: ChannelId,
    resource_id: &str,
    expires_at: Option<DateTime<Utc>>,
) -> Result<bool, StoreError> {
    let wanted = sqlx::query_scalar!(
        r#"UPDATE plansync.channels SET state = 'live', resource_id = $2, opened_at = now(),
             expires_at = COALESCE($3, now() + interval '7 days')
         WHERE id = $1 RETURNING retired_at IS NULL AS "wanted!""#,
        id.0,
        resource_id,
        expires_at,
    )
    .fetch_one(&mut *conn)
    .await?;
    if wanted {
        sqlx::query!(
            "UPDATE plansync.channels SET retired_at = now() \
             WHERE connection_id = $1 AND id <> $2 AND state <> 'stopped' AND retired_at IS NULL",
            connection.0,
            id.0,
        )
        .execute(&mut *conn)
        .await?;
    }
    Ok(wanted)
}

/// Retires channels (they will be stopped); already retired ones keep their time.
pub async fn retire(conn: &mut PgConnection, ids: &[ChannelId]) -> Result<(), StoreError> {
    let ids: Vec<Uuid> = ids.iter().map(|id| id.0).collect();
    sqlx::query!(
        "UPDATE plansync.channels SET retired_at = COALESCE(retired_at, now()) \
         WHERE id = ANY($1)",
        &ids,
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Retires every unstopped channel of a connection (disconnect, re-connect)
/// and, when there was any, enqueues the watch job that stops them, due at
/// once. Returns how many are left to stop.
pub async fn retire_all(
    conn: &mut PgConnection,
    connection: ConnectionId,
) -> Result<u64, StoreError> {
    let unstopped = sqlx::query!(
        "UPDATE plansync.channels SET retired_at = COALESCE(retired_at, now()) \
         WHERE connection_id = $1 AND state <> 'stopped'",
        connection.0,
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if unstopped > 0 {
        super::jobs::enqueue(conn, JobKind::Watch, connection, None, true).await?;
    }
    Ok(unstopped)
}

/// `channels.stop` ran (or Google no longer knew the channel), or stopping it
/// was given up with `error`.
pub async fn mark_stopped(
    conn: &mut PgConnection,
    id: ChannelId,
    error: Option<&str>,
) -> Result<(), StoreError> {
    sqlx::query!(
        "UPDATE plansync.channels SET state = 'stopped', stopped_at = now(), \
             retired_at = COALESCE(retired_at, now()), last_error = $2 \
         WHERE id = $1",
        id.0,
        error,
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The end of a watch run, in its completing transaction: a disconnected
/// connection whose channels are all stopped forgets its refresh token; a
/// live channel gets its renewal scheduled (a watch job due when a third of
/// its lifetime is left; an equal queued job keeps the earlier time).
pub async fn finish_run(
    conn: &mut PgConnection,
    connection: ConnectionId,
    schedule_renewal: bool,
) -> Result<(), StoreError> {
    sqlx::query!(
        "UPDATE plansync.connections c SET refresh_token_enc = NULL, updated_at = now() \
         WHERE c.id = $1 AND NOT c.active AND c.refresh_token_enc IS NOT NULL \
           AND NOT EXISTS (SELECT 1 FROM plansync.channels ch \
                           WHERE ch.connection_id = c.id AND ch.state <> 'stopped')",
        connection.0,
    )
    .execute(&mut *conn)
    .await?;
    if schedule_renewal {
        sqlx::query!(
            "INSERT INTO plansync.jobs (kind, connection_id, region, run_at) \
             SELECT 'watch', c.id, c.region, ch.expires_at - (ch.expires_at - ch.opened_at) / 3 \
             FROM plansync.connections c JOIN plansync.channels ch ON ch.connection_id = c.id \
             WHERE c.id = $1 AND c.active AND ch.state = 'live' AND ch.retired_at IS NULL \
             ORDER BY ch.expires_at DESC LIMIT 1 \
             ON CONFLICT (kind, connection_id, (COALESCE(appointment_id, 0))) \
                 WHERE state = 'queued' \
             DO UPDATE SET run_at = LEAST(plansync.jobs.run_at, EXCLUDED.run_at), \
                           updated_at = now()",
            connection.0,
        )
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// The scheduler's part for channels to stop: a watch job, due at once, for
/// every connection of `region` with an unstopped channel that is retired
/// (replaced, disconnect, re-connect), or current but addressed elsewhere
/// than `webhook` (or any, when `webhook` is unset), and the credentials to
/// stop it (the refresh token, or the delegated subject). Found through the
/// channels' partial indexes, never by reading every connection. A queued
/// watch job (e.g. a renewal due later) is brought forward unless it waits
/// out a retry backoff. Connections whose watch job died in the last hour are
/// left alone (the dead job shows in `status`). The other half — a connection
/// that wants a channel and has no fresh one — is decided where the scheduler
/// looks at each connection anyway ([`super::jobs::schedule_pulls`]).
/// Returns how many jobs were enqueued or brought forward.
pub async fn schedule_upkeep(
    pool: &PgPool,
    region: &str,
    webhook: Option<&str>,
) -> Result<u64, StoreError> {
    let done = sqlx::query!(
        "INSERT INTO plansync.jobs (kind, connection_id, region) \
         SELECT $3, c.id, c.region FROM plansync.connections c \
         WHERE c.id IN ( \
                 SELECT ch.connection_id FROM plansync.channels ch \
                  WHERE ch.state <> 'stopped' AND ch.retired_at IS NOT NULL \
                 UNION \
                 SELECT ch.connection_id FROM plansync.channels ch \
                  WHERE ch.state <> 'stopped' AND ch.retired_at IS NULL AND $2::TEXT IS NULL \
                 UNION \
                 SELECT ch.connection_id FROM plansync.channels ch \
                  WHERE ch.state <> 'stopped' AND ch.retired_at IS NULL \
                    AND (ch.address < $2 OR ch.address > $2)) \
           AND c.region = $1 \
           AND (c.refresh_token_enc IS NOT NULL OR c.subject IS NOT NULL) \
           AND NOT EXISTS (SELECT 1 FROM plansync.jobs j \
                           WHERE j.connection_id = c.id AND j.kind = $3 \
                             AND (j.state = 'running' OR (j.state = 'dead' \
                                  AND j.finished_at > now() - interval '1 hour'))) \
         ON CONFLICT (kind, connection_id, (COALESCE(appointment_id, 0))) \
             WHERE state = 'queued' \
         DO UPDATE SET run_at = now(), updated_at = now() \
             WHERE plansync.jobs.attempts = 0 AND plansync.jobs.run_at > now()",
        region,
        webhook,
        JobKind::Watch.as_str(),
    )
    .execute(pool)
    .await?
    .rows_affected();
    Ok(done)
}

/// Disconnected connections of `region` still holding their refresh token
/// (or, delegated, unstopped channels) for a stop that will not run any more
/// (its watch job died, or its lease was lost on the last attempt): their
/// channels are given up (Google expires them by itself) and the token is
/// forgotten. Returns how many. Found through the partial indexes of
/// disconnected connections holding a token and of retired channels (a
/// disconnect retires every channel).
pub async fn settle_abandoned(pool: &PgPool, region: &str) -> Result<u64, StoreError> {
    let done = sqlx::query!(
        "WITH gone AS ( \
             SELECT c.id FROM plansync.connections c \
             WHERE c.id IN ( \
                     SELECT x.id FROM plansync.connections x \
                      WHERE x.region = $1 AND NOT x.active AND x.refresh_token_enc IS NOT NULL \
                     UNION \
                     SELECT u.connection_id FROM plansync.channels u \
                      WHERE u.state <> 'stopped' AND u.retired_at IS NOT NULL) \
               AND c.region = $1 AND NOT c.active \
               AND NOT EXISTS (SELECT 1 FROM plansync.jobs j \
                               WHERE j.connection_id = c.id AND j.kind = $2 \
                                 AND j.state IN ('queued', 'running')) \
             FOR UPDATE OF c SKIP LOCKED), \
         given_up AS ( \
             UPDATE plansync.channels ch SET state = 'stopped', stopped_at = now(), \
                 retired_at = COALESCE(ch.retired_at, now()), \
                 last_error = COALESCE(ch.last_error, 'stopping it failed for good; \
Google expires it by itself') \
             FROM gone WHERE ch.connection_id = gone.id AND ch.state <> 'stopped') \
         UPDATE plansync.connections c SET refresh_token_enc = NULL, updated_at = now() \
         FROM gone WHERE c.id = gone.id",
        region,
        JobKind::Watch.as_str(),
    )
    .execute(pool)
    .await?
    .rows_affected();
    Ok(done)
}

/// Forgets channels stopped more than [`STALE_DAYS`] ago: their
/// notifications are 404 from then on.
pub async fn prune(pool: &PgPool) -> Result<u64, StoreError> {
    let done = sqlx::query!(
        "DELETE FROM plansync.channels \
         WHERE state = 'stopped' AND retired_at < now() - make_interval(days => $1)",
        STALE_DAYS,
    )
    .execute(pool)
    .await?
    .rows_affected();
    Ok(done)
}

/// Live (not retired, not expired) channels of `region`.
pub async fn count_live(pool: &PgPool, region: &str) -> Result<i64, StoreError> {
    let n = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM plansync.channels ch
         JOIN plansync.connections c ON c.id = ch.connection_id
         WHERE c.region = $1 AND ch.state = 'live' AND ch.retired_at IS NULL
           AND ch.expires_at > now()"#,
        region,
    )
    .fetch_one(pool)
    .await?;
    Ok(n)
}

/// The pull an accepted notification asks for: due at once, or — when a
/// pull of the connection is running (it may have listed before the change)
/// — a follow-up due `follow_up_delay_secs` later, so the rest of a burst
/// folds into that one follow-up instead of a pull each. An equal queued
/// pull absorbs it and keeps its time (a pull waiting out a retry backoff is
/// not rushed). Wakes idle workers like every enqueue. `None` when the
/// connection is gone.
pub async fn enqueue_notified_pull(
    conn: &mut PgConnection,
    connection: ConnectionId,
    follow_up_delay_secs: f64,
) -> Result<Option<JobId>, StoreError> {
    let id = sqlx::query_scalar!(
        r#"WITH ins AS (
             INSERT INTO plansync.jobs (kind, connection_id, region, run_at)
             SELECT 'pull', c.id, c.region,
                    CASE WHEN EXISTS (SELECT 1 FROM plansync.jobs r
                                      WHERE r.connection_id = c.id AND r.state = 'running'
                                        AND r.kind IN ('pull', 'full_resync'))
                         THEN now() + make_interval(secs => $2) ELSE now() END
             FROM plansync.connections c WHERE c.id = $1
             ON CONFLICT (kind, connection_id, (COALESCE(appointment_id, 0)))
                 WHERE state = 'queued'
             DO UPDATE SET updated_at = now()
             RETURNING id, region)
         SELECT id AS "id: JobId" FROM ins, LATERAL (SELECT pg_notify($3, ins.region)) n"#,
        connection.0,
        follow_up_delay_secs,
        super::jobs::NOTIFY_CHANNEL,
    )
    .fetch_optional(&mut *conn)
    .await?;
    Ok(id)
}

/// What a notification's channel id resolves to.
#[derive(Debug, Clone)]
pub struct NotificationTarget {
    pub connection_id: ConnectionId,
    pub token_hash: Vec<u8>,
    /// Stopped or replaced (within [`STALE_DAYS`]): acknowledged, ignored.
    pub retired: bool,
}

/// Looks a channel up for the notification endpoint: a read, nothing else.
pub async fn lookup(
    pool: &PgPool,
    id: ChannelId,
) -> Result<Option<NotificationTarget>, StoreError> {
    let row = sqlx::query_as!(
        NotificationTarget,
        r#"SELECT connection_id AS "connection_id: ConnectionId", token_hash,
             retired_at IS NOT NULL AS "retired!"
         FROM plansync.channels
         WHERE id = $1
           AND (retired_at IS NULL OR retired_at > now() - make_interval(days => $2))"#,
        id.0,
        STALE_DAYS,
    )
    .fetch_optional(pool)
    .await?;
    Ok(row)
}
