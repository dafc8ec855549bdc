//! The outbox table: appending a transaction's deltas with their versions, and
//! the relay's claim / mark / prune statements.
//!
//! Versions come from `users.plan_version`, bumped in the writing transaction
//! under the user's row lock; two transactions writing deltas of one user
//! therefore commit in version order, and the committed rows of a user are
//! always a gap-free prefix. The relay serialises on a per-user advisory lock,
//! so replicas never publish one user's rows out of order.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

use super::StoreError;
use crate::ids::UserId;

/// The channel the relay LISTENs on; a notification is sent by every append.
pub const NOTIFY_CHANNEL: &str = "plansync_outbox";

/// An advisory-lock namespace ("plns") so our per-user locks never meet the
/// host's own advisory locks.
const LOCK_CLASS: i32 = 0x706c_6e73;

/// Bumps the user's `plan_version` by `count` and appends `count` rows, one
/// per version the bump reserved, in order: `render(i, version)` gives the
/// JSON text of the `i`-th row, stamped with its version. The rows go in one
/// round trip. Returns the user's new `plan_version` (with `count` 0, the
/// current one, and nothing written).
///
/// The outbox stores text it is given: what a delta looks like is
/// [`crate::deltas`]'s business.
pub async fn append(
    conn: &mut PgConnection,
    user: UserId,
    count: usize,
    mut render: impl FnMut(usize, i64) -> String,
) -> Result<i64, StoreError> {
    if count == 0 {
        return Ok(sqlx::query_scalar!(
            "SELECT plan_version FROM public.users WHERE id = $1",
            user.0
        )
        .fetch_optional(&mut *conn)
        .await?
        .unwrap_or(0));
    }
    let new_version = sqlx::query_scalar!(
        "UPDATE public.users SET plan_version = plan_version + $2 WHERE id = $1 \
         RETURNING plan_version",
        user.0,
        count as i64,
    )
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(StoreError::UnknownUser(user))?;
    let first = new_version - count as i64 + 1;
    let versions: Vec<i64> = (0..count as i64).map(|i| first + i).collect();
    let bodies: Vec<String> = versions
        .iter()
        .enumerate()
        .map(|(i, version)| render(i, *version))
        .collect();
    // The rows and the relay's wake-up in one round trip; the notification
    // is delivered at commit, and only if the transaction commits.
    sqlx::query!(
        r#"WITH rows AS (
               INSERT INTO plansync.outbox (user_id, version, delta)
               SELECT $1, v, d::JSON FROM UNNEST($2::BIGINT[], $3::TEXT[]) AS t(v, d))
           SELECT pg_notify($4, '')"#,
        user.0,
        &versions,
        &bodies,
        NOTIFY_CHANNEL,
    )
    .execute(&mut *conn)
    .await?;
    Ok(new_version)
}

/// One unpublished outbox row.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub id: i64,
    pub user_id: UserId,
    pub version: i64,
    /// The delta's JSON exactly as it was written.
    pub delta: String,
}

/// Within the relay's transaction: takes the per-user locks of up to
/// `max_users` users with unpublished rows (skipping users another relay
/// holds) and returns up to `max_rows` of their rows, ordered by user and
/// version. The locks are released when the transaction ends.
pub async fn claim_batch(
    tx: &mut Transaction<'_, Postgres>,
    max_users: i64,
    max_rows: i64,
) -> Result<Vec<OutboxRow>, StoreError> {
    // Distinct users by a loose index scan (one index probe per user rather
    // than a pass over every pending row). The LIMIT subquery is evaluated on
    // its own, so the lock function runs exactly once per candidate and every
    // lock taken is a user returned.
    let locked: Vec<i64> = sqlx::query_scalar!(
        r#"WITH RECURSIVE pending(user_id) AS (
             (SELECT user_id FROM plansync.outbox WHERE published_at IS NULL
              ORDER BY user_id LIMIT 1)
             UNION ALL
             SELECT (SELECT o.user_id FROM plansync.outbox o
                     WHERE o.published_at IS NULL AND o.user_id > p.user_id
                     ORDER BY o.user_id LIMIT 1)
             FROM pending p WHERE p.user_id IS NOT NULL)
         SELECT user_id AS "user_id!" FROM (
             SELECT user_id FROM pending WHERE user_id IS NOT NULL LIMIT $1) candidates
         WHERE pg_try_advisory_xact_lock($2, (user_id % 2147483647)::INT)"#,
        max_users,
        LOCK_CLASS,
    )
    .fetch_all(&mut **tx)
    .await?;
    if locked.is_empty() {
        return Ok(Vec::new());
    }
    // A fresh statement, so rows another relay marked before we got the lock
    // are seen as published.
    let rows = sqlx::query_as!(
        OutboxRow,
        r#"SELECT id, user_id AS "user_id: UserId", version, delta::TEXT AS "delta!"
         FROM plansync.outbox
         WHERE published_at IS NULL AND user_id = ANY($1)
         ORDER BY user_id, version LIMIT $2"#,
        &locked,
        max_rows,
    )
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows)
}

pub async fn mark_published(
    tx: &mut Transaction<'_, Postgres>,
    ids: &[i64],
) -> Result<(), StoreError> {
    sqlx::query!(
        "UPDATE plansync.outbox SET published_at = now() WHERE id = ANY($1)",
        ids
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Deletes up to `limit` rows published before `now() - retention`, and
/// raises each affected user's pruned watermark to the highest version that
/// went, in the same statement (so a catch-up read never sees rows gone
/// without the watermark that says so). Returns how many rows went.
pub async fn prune(
    pool: &PgPool,
    retention: std::time::Duration,
    limit: i64,
) -> Result<u64, StoreError> {
    let pruned: i64 = sqlx::query_scalar!(
        r#"WITH gone AS (
             DELETE FROM plansync.outbox WHERE id IN (
                 SELECT id FROM plansync.outbox
                 WHERE published_at IS NOT NULL
                   AND published_at < now() - make_interval(secs => $1)
                 LIMIT $2)
             RETURNING user_id, version),
         marks AS (
             INSERT INTO plansync.outbox_pruned AS p (user_id, version)
             SELECT user_id, max(version) FROM gone GROUP BY user_id
             ON CONFLICT (user_id) DO UPDATE
                 SET version = GREATEST(p.version, EXCLUDED.version))
         SELECT count(*) AS "pruned!" FROM gone"#,
        retention.as_secs_f64(),
        limit,
    )
    .fetch_one(pool)
    .await?;
    Ok(pruned as u64)
}

/// What the outbox still holds of one user after a given version, read in one
/// snapshot.
#[derive(Debug, Clone)]
pub struct CatchUpRows {
    /// `users.plan_version` now.
    pub plan_version: i64,
    /// The highest version pruned for this user (0 when none was).
    pub pruned_version: i64,
    /// The user's deltas with a greater version than asked, published or not,
    /// in version order, as JSON text exactly as written (and published).
    pub deltas: Vec<String>,
}

/// The user's outbox rows after `after`, with the watermark and the plan
/// version, in one statement (one snapshot: a concurrent prune is either
/// wholly visible or not at all). `None` when the user does not exist. The
/// rows are read only when `after` is at or above the watermark.
pub async fn catch_up(
    pool: &PgPool,
    user: UserId,
    after: i64,
) -> Result<Option<CatchUpRows>, StoreError> {
    let row = sqlx::query!(
        r#"SELECT u.plan_version, COALESCE(p.version, 0) AS "pruned_version!",
             CASE WHEN $2 >= COALESCE(p.version, 0) THEN ARRAY(
                 SELECT o.delta::TEXT FROM plansync.outbox o
                 WHERE o.user_id = u.id AND o.version > $2 ORDER BY o.version)
             ELSE ARRAY[]::TEXT[] END AS "deltas!"
         FROM public.users u
         LEFT JOIN plansync.outbox_pruned p ON p.user_id = u.id
         WHERE u.id = $1"#,
        user.0,
        after,
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| CatchUpRows {
        plan_version: r.plan_version,
        pruned_version: r.pruned_version,
        deltas: r.deltas,
    }))
}

/// Unpublished rows (of one user, when given) and the age of the oldest.
pub async fn backlog(
    pool: &PgPool,
    user: Option<UserId>,
) -> Result<(i64, Option<DateTime<Utc>>, DateTime<Utc>), StoreError> {
    let row = sqlx::query!(
        r#"SELECT count(*) AS "backlog!", min(created_at) AS oldest, now() AS "now!"
         FROM plansync.outbox
         WHERE published_at IS NULL AND ($1::BIGINT IS NULL OR user_id = $1)"#,
        user.map(|u| u.0),
    )
    .fetch_one(pool)
    .await?;
    Ok((row.backlog, row.oldest, row.now))
}
