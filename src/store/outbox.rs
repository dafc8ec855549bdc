//! The outbox table: appending a transaction's deltas with their versions, and
//! the relay's claim and prune statements.
//!
//! Versions come from `users.plan_version`, bumped in the writing transaction
//! under the user's row lock; two transactions writing deltas of one user
//! therefore commit in version order, and the committed rows of a user are
//! always a gap-free prefix. The relay serialises on a per-user advisory lock,
//! so replicas never publish one user's rows out of order.
//!
//! Rows are written once and never updated. What the relay still has to
//! publish is `plansync.outbox_pending`: a trigger on the outbox adds one
//! entry per inserting statement and user (the range of versions it
//! appended), whoever inserts, and the relay deletes the entries it published
//! in the transaction that held them while the publish succeeded. A user's
//! pending entries are always its newest versions (appended in version order,
//! taken oldest first under the user's lock), so a row is published exactly
//! when no entry of its user starts at or below its version.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

use super::StoreError;
use crate::ids::UserId;

/// The channel the relay LISTENs on; a notification is sent by every append.
pub const NOTIFY_CHANNEL: &str = "plansync_outbox";

/// An advisory-lock namespace ("plns") so our per-user locks never meet the
/// host's own advisory locks.
const LOCK_CLASS: i32 = 0x706c_6e73;

/// The namespace ("plnp") of the one lock that lets a single replica prune
/// at a time: replicas pruning the same oldest rows together would only wait
/// on each other's row locks.
const PRUNE_LOCK_CLASS: i32 = 0x706c_6e70;

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

/// One outbox row the relay took for publishing.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub user_id: UserId,
    pub version: i64,
    /// The delta's JSON exactly as it was written.
    pub delta: String,
}

/// What one claim took.
#[derive(Debug, Clone, Default)]
pub struct Claim {
    /// The rows, ordered by user and version.
    pub rows: Vec<OutboxRow>,
    /// Whether the claim may have left pending rows behind that this relay
    /// could take now: it locked as many users as it was allowed, or its row
    /// budget ran out. When false, everything that was pending when it looked
    /// is taken or held by another relay; rows committed later announce
    /// themselves with a notification.
    pub more: bool,
}

/// Within the relay's transaction: takes the per-user locks of up to
/// `max_users` users with unpublished rows (skipping users another relay
/// holds), then takes those users' oldest pending entries, in version order
/// per user, up to `max_rows` rows (one writing statement's entry is never
/// split, so a batch may exceed `max_rows` by one entry's rows), and returns
/// their rows ordered by user and version.
///
/// Taking is the marking: the entries are deleted by this statement, so they
/// count as published exactly when the transaction commits. Roll it back
/// (drop it) when the publish fails and they are pending again. The locks are
/// released when the transaction ends.
pub async fn claim_batch(
    tx: &mut Transaction<'_, Postgres>,
    max_users: i64,
    max_rows: i64,
) -> Result<Claim, StoreError> {
    // Distinct users by a loose index scan (one index probe per user rather
    // than a pass over every pending entry). The LIMIT subquery is evaluated
    // on its own, so the lock function runs exactly once per candidate and
    // every lock taken is a user returned.
    let candidates = sqlx::query!(
        r#"WITH RECURSIVE pending(user_id) AS (
             (SELECT user_id FROM plansync.outbox_pending ORDER BY user_id LIMIT 1)
             UNION ALL
             SELECT (SELECT p2.user_id FROM plansync.outbox_pending p2
                     WHERE p2.user_id > p.user_id ORDER BY p2.user_id LIMIT 1)
             FROM pending p WHERE p.user_id IS NOT NULL),
         candidates AS MATERIALIZED (
             SELECT user_id FROM pending WHERE user_id IS NOT NULL LIMIT $1)
         SELECT (SELECT count(*) FROM candidates) AS "seen!",
                ARRAY(SELECT user_id FROM candidates
                      WHERE pg_try_advisory_xact_lock($2, (user_id % 2147483647)::INT)
                      ORDER BY user_id) AS "locked!""#,
        max_users,
        LOCK_CLASS,
    )
    .fetch_one(&mut **tx)
    .await?;
    if candidates.locked.is_empty() {
        return Ok(Claim::default());
    }
    // A fresh statement (a new snapshot), so entries another relay took and
    // committed before we got its lock are gone; and were one still seen, the
    // DELETE skips a row deleted by a committed transaction, so what we return
    // is always what we removed. The window keeps whole entries while the rows
    // before them are under the budget; both orders are the same, so each
    // user's share is a prefix of its entries (versions stay in order).
    //
    // The shape pins the plan, whatever the statistics of a queue table say:
    // entries are deleted by ctid (a TID scan; entries are never updated, so
    // the ctid read is the row to delete), and the rows are fetched per entry
    // through the (user_id, version) index (OFFSET 0 keeps the lateral
    // subquery from being flattened into a join that could hash the whole
    // outbox).
    let mut rows = sqlx::query_as!(
        OutboxRow,
        r#"WITH chosen AS (
             SELECT tid, sum(rows) OVER (ORDER BY user_id, first_version) - rows AS before
               FROM (SELECT ctid AS tid, user_id, first_version, rows
                       FROM plansync.outbox_pending
                      WHERE user_id = ANY($1)
                      ORDER BY user_id, first_version LIMIT $2) e),
         taken AS (
             DELETE FROM plansync.outbox_pending p
              WHERE p.ctid = ANY(ARRAY(SELECT tid FROM chosen WHERE before < $2))
             RETURNING p.user_id, p.first_version, p.last_version)
         SELECT t.user_id AS "user_id!: UserId", o.version AS "version!",
                o.delta AS "delta!"
           FROM taken t
          CROSS JOIN LATERAL (
                SELECT o.version, o.delta::TEXT FROM plansync.outbox o
                 WHERE o.user_id = t.user_id
                   AND o.version BETWEEN t.first_version AND t.last_version
                OFFSET 0) o"#,
        &candidates.locked,
        max_rows,
    )
    .fetch_all(&mut **tx)
    .await?;
    // Sorted here rather than by the server: a sort of the narrow keys in
    // memory, instead of one of ~700-byte rows in the statement.
    rows.sort_unstable_by_key(|r| (r.user_id, r.version));
    let more = candidates.seen >= max_users || rows.len() as i64 >= max_rows;
    Ok(Claim { rows, more })
}

/// What one pruning statement did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    /// Rows deleted.
    pub rows: u64,
    /// Whether every row it looked at was past the retention period, so older
    /// rows may remain beyond them: worth another statement.
    pub more: bool,
}

/// Deletes published rows older than `retention`, looking at the `limit`
/// oldest rows, and raises each affected user's pruned watermark to the
/// highest version that went, in the same statement (so a catch-up read never
/// sees rows gone without the watermark that says so).
///
/// The oldest rows are found by walking the primary key from its low end: ids
/// are drawn as rows are inserted, so they grow with time, and the walk stops
/// at the first row still inside the retention period. It never reads more
/// than `limit` rows, however long the outbox is. Because `created_at` is its
/// transaction's start, a row of a long transaction may sit behind younger
/// ones and go a little late; none goes early. A row still pending (some
/// entry of its user starts at or below its version) is never pruned. Rows
/// are deleted by ctid (a TID scan, whatever the statistics say): outbox
/// rows are never updated, so the ctid read is the row.
pub async fn prune(
    pool: &PgPool,
    retention: std::time::Duration,
    limit: i64,
) -> Result<Pruned, StoreError> {
    let mut tx = pool.begin().await?;
    let ours = sqlx::query_scalar!(
        r#"SELECT pg_try_advisory_xact_lock($1, 0) AS "ours!""#,
        PRUNE_LOCK_CLASS
    )
    .fetch_one(&mut *tx)
    .await?;
    if !ours {
        // Another replica is pruning right now.
        return Ok(Pruned {
            rows: 0,
            more: false,
        });
    }
    let row = sqlx::query!(
        r#"WITH head AS MATERIALIZED (
             SELECT ctid AS tid, id, user_id, version, created_at FROM plansync.outbox
              ORDER BY id LIMIT $2),
         edge AS (
             SELECT min(id) AS id FROM head
              WHERE created_at >= now() - make_interval(secs => $1)),
         gone AS (
             DELETE FROM plansync.outbox WHERE ctid = ANY(ARRAY(
                 SELECT h.tid FROM head h
                  WHERE h.id < COALESCE((SELECT id FROM edge), 9223372036854775807)
                    AND NOT EXISTS (
                        SELECT 1 FROM plansync.outbox_pending p
                         WHERE p.user_id = h.user_id AND p.first_version <= h.version)))
             RETURNING user_id, version),
         marks AS (
             INSERT INTO plansync.outbox_pruned AS p (user_id, version)
             SELECT user_id, max(version) FROM gone GROUP BY user_id
             ON CONFLICT (user_id) DO UPDATE
                 SET version = GREATEST(p.version, EXCLUDED.version))
         SELECT (SELECT count(*) FROM gone) AS "pruned!",
                (SELECT count(*) FROM head) >= $2 AND (SELECT id FROM edge) IS NULL AS "more!""#,
        retention.as_secs_f64(),
        limit,
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Pruned {
        rows: row.pruned as u64,
        more: row.more,
    })
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

/// Unpublished rows (of one user, when given) and the age of the oldest,
/// from the pending entries alone: a pass over what is still to be published
/// (and, between vacuums, the entries recently removed), never over the
/// outbox's retained history.
pub async fn backlog(
    pool: &PgPool,
    user: Option<UserId>,
) -> Result<(i64, Option<DateTime<Utc>>, DateTime<Utc>), StoreError> {
    let row = sqlx::query!(
        r#"SELECT COALESCE(sum(rows), 0)::BIGINT AS "backlog!", min(created_at) AS oldest,
                  now() AS "now!"
             FROM plansync.outbox_pending
            WHERE ($1::BIGINT IS NULL OR user_id = $1)"#,
        user.map(|u| u.0),
    )
    .fetch_one(pool)
    .await?;
    Ok((row.backlog, row.oldest, row.now))
}
