//! Calendar connections: one row per (user, Google calendar).
//!
//! A connection is created or re-authorised by `connect` and deactivated by
//! `disconnect`; it is never deleted by the worker (deleting the user cascades),
//! so the links of its appointments survive a disconnect and a later connect
//! of the same calendar picks them up again instead of importing twice.
//!
//! Every statement that moves a connection into or out of needs-reauth or
//! calendar-gone (`mark_blocked`, `connect`, `finish_pull`) is followed, in
//! the same transaction, by the caller's announcement
//! ([`crate::deltas::announce_link_change`], which reads
//! [`take_link_change`]): the user gets one `plan` delta (section
//! `google-calendar`) per change of state, never one per failure. The store
//! knows the rows, not the payload the realtime layer reads.

use std::time::Duration;

use sqlx::{PgConnection, PgPool};

use super::StoreError;
use crate::ids::{CalendarId, ConnectionId, Subject, SyncToken, UserId};
use crate::job::JobKind;

/// How a connection gets its access tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionAuth {
    /// The user's refresh token, encrypted (see [`crate::crypto`]).
    RefreshToken { encrypted: Vec<u8> },
    /// Workspace domain-wide delegation: the deployment's service account acts
    /// as this member. Nothing secret is stored.
    Delegated { subject: Subject },
}

/// What `connect` asks for.
#[derive(Debug)]
pub struct NewConnection<'a> {
    pub user: UserId,
    pub calendar: &'a CalendarId,
    /// `--region`; `None` keeps an existing connection's region, or gives a
    /// new one `default_region`.
    pub region: Option<&'a str>,
    pub default_region: &'a str,
    pub push_target: bool,
    pub auth: ConnectionAuth,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectOutcome {
    pub id: ConnectionId,
    /// False when an existing (user, calendar) was re-authorised.
    pub created: bool,
}

/// Registers a connection, or replaces the credentials of an existing one (a
/// refresh token, or the delegated subject: re-connecting switches between the
/// two) and clears its needs-reauth and calendar-gone marks, in the caller's
/// transaction, with the user's row locked so concurrent connects of one user
/// serialise (one push target per user). The caller announces the link's new
/// state in the same transaction (see the module's note).
pub async fn connect(
    conn: &mut PgConnection,
    new: NewConnection<'_>,
) -> Result<ConnectOutcome, StoreError> {
    // Exactly one of the two is set: the row says how to authenticate.
    let (refresh_token_enc, subject) = match &new.auth {
        ConnectionAuth::RefreshToken { encrypted } => (Some(encrypted.as_slice()), None),
        ConnectionAuth::Delegated { subject } => (None, Some(subject.as_str())),
    };
    let user_exists = sqlx::query_scalar!(
        "SELECT id FROM public.users WHERE id = $1 FOR NO KEY UPDATE",
        new.user.0
    )
    .fetch_optional(&mut *conn)
    .await?
    .is_some();
    if !user_exists {
        return Err(StoreError::UnknownUser(new.user));
    }
    let was_active = sqlx::query_scalar!(
        "SELECT active FROM plansync.connections WHERE user_id = $1 AND calendar_id = $2",
        new.user.0,
        new.calendar.as_str(),
    )
    .fetch_optional(&mut *conn)
    .await?;
    if new.push_target {
        sqlx::query!(
            "UPDATE plansync.connections SET push_target = FALSE, updated_at = now() \
             WHERE user_id = $1 AND calendar_id <> $2 AND push_target",
            new.user.0,
            new.calendar.as_str(),
        )
        .execute(&mut *conn)
        .await?;
    }
    let row = sqlx::query!(
        r#"INSERT INTO plansync.connections
             (user_id, calendar_id, region, push_target, refresh_token_enc, subject)
         VALUES ($1, $2, COALESCE($3, $4), $5, $6, $7)
         ON CONFLICT (user_id, calendar_id) DO UPDATE SET
             refresh_token_enc = EXCLUDED.refresh_token_enc, subject = EXCLUDED.subject,
             region = COALESCE($3, plansync.connections.region),
             push_target = plansync.connections.push_target OR EXCLUDED.push_target,
             active = TRUE, needs_reauth = FALSE, calendar_gone = FALSE, last_error = NULL,
             failing_since = NULL, failures = 0, backoff_until = NULL,
             updated_at = now()
         RETURNING id AS "id: ConnectionId", (xmax = 0) AS "created!""#,
        new.user.0,
        new.calendar.as_str(),
        new.region,
        new.default_region,
        new.push_target,
        refresh_token_enc,
        subject,
    )
    .fetch_one(&mut *conn)
    .await?;
    let (id, created) = (row.id, row.created);
    // Queued jobs follow a region change, so the new region's workers claim them.
    sqlx::query!(
        "UPDATE plansync.jobs j SET region = c.region, updated_at = now() \
         FROM plansync.connections c \
         WHERE c.id = $1 AND j.connection_id = c.id AND j.state = 'queued' \
           AND j.region <> c.region",
        id.0,
    )
    .execute(&mut *conn)
    .await?;
    // The first (or, after re-authorisation, a fresh) full sync, due at once,
    // committed with the connection so it can never be missing.
    super::jobs::enqueue(&mut *conn, JobKind::FullResync, id, None, true).await?;
    if !created {
        // A re-connect replaces the connection's notification channel: the
        // old one (opened with the old grant) is stopped by a watch job, and
        // a new one opens after the full sync enqueued above.
        super::channels::retire_all(&mut *conn, id).await?;
    }
    if was_active == Some(false) {
        // While disconnected the triggers recorded nothing for this calendar:
        // what changed locally meanwhile is pushed now.
        super::jobs::enqueue_missed_pushes(&mut *conn, new.user, id).await?;
    }
    Ok(ConnectOutcome { id, created })
}

/// Stops syncing a connection and forgets its tokens. Its links stay, inactive
/// with it. Disconnecting twice is not an error. A connection with
/// notification channels keeps its (encrypted) refresh token until the watch
/// job enqueued here has stopped them (or failed to for good): stopping a
/// channel needs the user's grant.
pub async fn disconnect(pool: &PgPool, id: ConnectionId) -> Result<(), StoreError> {
    let mut tx = super::begin(pool).await?;
    // Locked first, so a watch job recording a channel it is about to open
    // (it share-locks this row) is either seen below or sees us.
    let found = sqlx::query_scalar!(
        "SELECT id FROM plansync.connections WHERE id = $1 FOR UPDATE",
        id.0
    )
    .fetch_optional(&mut *tx)
    .await?;
    if found.is_none() {
        return Err(StoreError::UnknownConnection(id));
    }
    let channels_to_stop = super::channels::retire_all(&mut tx, id).await?;
    sqlx::query!(
        "UPDATE plansync.connections SET active = FALSE, \
             refresh_token_enc = CASE WHEN $2 THEN refresh_token_enc END, \
             sync_token = NULL, sync_token_at = NULL, updated_at = now() \
         WHERE id = $1",
        id.0,
        channels_to_stop > 0,
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// A connection `resync` targets.
#[derive(Debug, Clone)]
pub struct ResyncTarget {
    pub id: ConnectionId,
    pub calendar_id: CalendarId,
    pub needs_reauth: bool,
}

/// The active connections of `user` (only `calendar`'s, when given), with
/// their calendar-gone mark cleared: an admin's resync is how a calendar that
/// answered 404/403 is tried again. Runs in the caller's transaction, which
/// enqueues the resync jobs.
pub async fn resync_targets(
    conn: &mut PgConnection,
    user: UserId,
    calendar: Option<&CalendarId>,
) -> Result<Vec<ResyncTarget>, StoreError> {
    let mut rows = sqlx::query_as!(
        ResyncTarget,
        r#"UPDATE plansync.connections SET calendar_gone = FALSE, backoff_until = NULL,
             updated_at = CASE WHEN calendar_gone THEN now() ELSE updated_at END
         WHERE user_id = $1 AND active AND ($2::TEXT IS NULL OR calendar_id = $2)
         RETURNING id AS "id: ConnectionId", calendar_id AS "calendar_id: CalendarId",
             needs_reauth"#,
        user.0,
        calendar.map(CalendarId::as_str),
    )
    .fetch_all(&mut *conn)
    .await?;
    rows.sort_by_key(|r| r.id);
    Ok(rows)
}

/// What a sync job needs to know about its connection. Its `Debug` leaves
/// the (encrypted) refresh token out: jobs carry this and are logged.
#[derive(Clone)]
pub struct SyncConnection {
    pub id: ConnectionId,
    pub user_id: UserId,
    pub calendar_id: CalendarId,
    pub active: bool,
    pub refresh_token_enc: Option<Vec<u8>>,
    /// Set on a delegated connection: the member the service account acts as.
    pub subject: Option<Subject>,
    pub sync_token: Option<SyncToken>,
    pub calendar_time_zone: Option<String>,
    pub needs_reauth: bool,
    pub calendar_gone: bool,
    /// The connection new appointments of its user go to (marked, or the
    /// user's first active connection when none is marked).
    pub is_push_target: bool,
    /// No pull has completed yet.
    pub never_pulled: bool,
    /// Events of this connection are set aside: pulls must check whether
    /// the events they read resolve them.
    pub has_skipped: bool,
}

impl std::fmt::Debug for SyncConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncConnection")
            .field("id", &self.id)
            .field("user_id", &self.user_id)
            .field("calendar_id", &self.calendar_id)
            .field("active", &self.active)
            .field(
                "refresh_token_enc",
                &self.refresh_token_enc.as_ref().map(|_| "[redacted]"),
            )
            .field("subject", &self.subject)
            .field("sync_token", &self.sync_token)
            .field("calendar_time_zone", &self.calendar_time_zone)
            .field("needs_reauth", &self.needs_reauth)
            .field("calendar_gone", &self.calendar_gone)
            .field("is_push_target", &self.is_push_target)
            .field("never_pulled", &self.never_pulled)
            .field("has_skipped", &self.has_skipped)
            .finish()
    }
}

/// Why a connection cannot be synced until an admin acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocked {
    /// `invalid_grant` (or a refused delegation): re-connect once the user (or
    /// the Workspace administrator) has granted access again.
    NeedsReauth,
    /// 404, or 403 for lack of access: `resync` or `connect` again.
    CalendarGone,
}

/// Marks a connection blocked with the error that blocked it. The caller
/// announces the new state in the same transaction.
pub async fn mark_blocked(
    conn: &mut PgConnection,
    id: ConnectionId,
    blocked: Blocked,
    error: &str,
) -> Result<(), StoreError> {
    sqlx::query!(
        "UPDATE plansync.connections SET needs_reauth = needs_reauth OR $3, \
             calendar_gone = calendar_gone OR $4, last_error = $2, \
             failing_since = COALESCE(failing_since, now()), updated_at = now() \
         WHERE id = $1",
        id.0,
        crate::text::error_text(error),
        blocked == Blocked::NeedsReauth,
        blocked == Blocked::CalendarGone,
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A connection-level back-off: `first` doubling per failure in a row, at
/// most `cap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub cap: Duration,
}

/// Records a failed job on its connection: the (cleaned) error, since when
/// it has been failing, one more failure in a row and, with a `backoff`, a
/// back-off before the scheduler pulls it again (`first * 2^(failures-1)`,
/// at most `cap`). Returns that back-off.
pub async fn record_failure(
    conn: &mut PgConnection,
    id: ConnectionId,
    error: &str,
    backoff: Option<Backoff>,
) -> Result<Option<Duration>, StoreError> {
    let (first, cap) = backoff.map_or((0.0, 0.0), |s| (s.first.as_secs_f64(), s.cap.as_secs_f64()));
    let delay = sqlx::query_scalar!(
        r#"UPDATE plansync.connections SET last_error = $2,
             failing_since = COALESCE(failing_since, now()),
             failures = CASE WHEN $3 THEN LEAST(failures + 1, 1000000) ELSE failures END,
             backoff_until = CASE WHEN $3 THEN now() + make_interval(secs =>
                 LEAST($4::FLOAT8 * power(2::FLOAT8, LEAST(failures, 60)), $5::FLOAT8))
                 ELSE backoff_until END,
             updated_at = now()
         WHERE id = $1
         RETURNING CASE WHEN $3 THEN
             LEAST($4::FLOAT8 * power(2::FLOAT8, LEAST(failures - 1, 60)), $5::FLOAT8) END
             AS "delay""#,
        id.0,
        crate::text::error_text(error),
        backoff.is_some(),
        first,
        cap,
    )
    .fetch_optional(conn)
    .await?
    .flatten();
    Ok(delay.map(Duration::from_secs_f64))
}

/// Records a finished pull: the new sync token (kept when the listing gave
/// none), the calendar's zone, the failure bookkeeping cleared (a gone
/// calendar is back). Like [`take_link_change`], in the same statement,
/// returns the connection's state when its user was last told another one
/// (to be told in the caller's transaction).
pub async fn finish_pull(
    conn: &mut PgConnection,
    id: ConnectionId,
    sync_token: Option<&SyncToken>,
    calendar_time_zone: Option<&str>,
) -> Result<Option<LinkChange>, StoreError> {
    let row = sqlx::query!(
        r#"UPDATE plansync.connections SET sync_token = $2,
               sync_token_at = CASE WHEN $2::TEXT IS NULL THEN sync_token_at ELSE now() END,
               calendar_time_zone = COALESCE($3, calendar_time_zone), last_pull_at = now(),
               last_error = NULL, calendar_gone = FALSE, failing_since = NULL, failures = 0,
               backoff_until = NULL, updated_at = now(),
               announced_needs_reauth = needs_reauth, announced_calendar_gone = FALSE
         WHERE id = $1
         -- SET sees the row as it was: whether the user's last news differs.
         RETURNING id AS "id: ConnectionId", user_id AS "user_id: UserId",
             calendar_id AS "calendar_id: CalendarId", needs_reauth, calendar_gone, last_error,
             (SELECT (o.announced_needs_reauth, o.announced_calendar_gone)
                     IS DISTINCT FROM (o.needs_reauth, FALSE)
                FROM plansync.connections o WHERE o.id = $1) AS "news!""#,
        id.0,
        sync_token.map(SyncToken::as_str),
        calendar_time_zone,
    )
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.filter(|r| r.news).map(|r| LinkChange {
        id: r.id,
        user_id: r.user_id,
        calendar_id: r.calendar_id,
        needs_reauth: r.needs_reauth,
        calendar_gone: r.calendar_gone,
        last_error: r.last_error,
    }))
}

/// Which kinds of credentials the active connections of `region` use, so
/// `run` can insist on exactly the settings they need: (any refresh-token
/// connection, any delegated connection).
pub async fn auth_kinds_in_use(pool: &PgPool, region: &str) -> Result<(bool, bool), StoreError> {
    let kinds = sqlx::query!(
        "SELECT bool_or(subject IS NULL) AS refresh, bool_or(subject IS NOT NULL) AS delegated \
         FROM plansync.connections WHERE active AND region = $1",
        region,
    )
    .fetch_one(pool)
    .await?;
    Ok((
        kinds.refresh.unwrap_or(false),
        kinds.delegated.unwrap_or(false),
    ))
}

/// A connection's needs-reauth / calendar-gone state, as its user is told it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkChange {
    pub id: ConnectionId,
    pub user_id: UserId,
    pub calendar_id: CalendarId,
    pub needs_reauth: bool,
    pub calendar_gone: bool,
    pub last_error: Option<String>,
}

/// When the connection's needs-reauth / calendar-gone state differs from what
/// its user was last told, records the new state as told and returns it (to
/// be told, in the caller's transaction); `None` when there is nothing new to
/// tell (e.g. another failure of an already broken connection).
pub async fn take_link_change(
    conn: &mut PgConnection,
    id: ConnectionId,
) -> Result<Option<LinkChange>, StoreError> {
    Ok(sqlx::query_as!(
        LinkChange,
        r#"UPDATE plansync.connections SET announced_needs_reauth = needs_reauth,
             announced_calendar_gone = calendar_gone
         WHERE id = $1 AND (announced_needs_reauth, announced_calendar_gone)
             IS DISTINCT FROM (needs_reauth, calendar_gone)
         RETURNING id AS "id: ConnectionId", user_id AS "user_id: UserId",
             calendar_id AS "calendar_id: CalendarId", needs_reauth, calendar_gone,
             last_error"#,
        id.0,
    )
    .fetch_optional(conn)
    .await?)
}
