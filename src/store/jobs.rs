//! The job queue's SQL (`plansync.jobs`). The rules these statements enforce
//! are stated in [`crate::queue`]; this file only speaks to the table.
//!
//! Every transition of a running job names its claim token (`WHERE id = $1 AND
//! claim_token = $2 AND state = 'running'`): zero rows means the lease is gone
//! and the caller must write nothing. Times come from the database's `now()`,
//! never from the worker's clock.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor, PgPool};
use uuid::Uuid;

use super::status::{DeadJobRow, RunningJobRow};
use super::StoreError;
use crate::ids::{AppointmentId, ConnectionId, JobId, UserId};

/// The `NOTIFY` channel an enqueue wakes idle workers on; the payload is the
/// job's region.
pub const NOTIFY_CHANNEL: &str = "plansync_jobs";

/// A job as a claim returns it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClaimedRow {
    pub id: JobId,
    pub kind: String,
    pub connection_id: ConnectionId,
    pub appointment_id: Option<AppointmentId>,
    pub region: String,
    pub attempts: i32,
    pub claim_token: Uuid,
    pub locked_until: DateTime<Utc>,
}

/// What a waiter sees of one job.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobRow {
    pub id: JobId,
    pub kind: String,
    pub connection_id: ConnectionId,
    pub state: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub superseded_by: Option<JobId>,
}

/// Enqueues a job for `connection`, due at once, or returns the equal job
/// already queued. `expedite` brings that job's `run_at` forward to now (an
/// admin asked for it); otherwise a queued job keeps its time (a scheduler
/// never postpones, and never rushes a job out of its backoff either).
/// `None` when the connection does not exist.
pub async fn enqueue(
    conn: &mut PgConnection,
    kind: &str,
    connection: ConnectionId,
    appointment: Option<AppointmentId>,
    expedite: bool,
) -> Result<Option<JobId>, StoreError> {
    let id = sqlx::query_scalar::<_, JobId>(
        "WITH ins AS ( \
             INSERT INTO plansync.jobs (kind, connection_id, appointment_id, region) \
             SELECT $1, c.id, $3, c.region FROM plansync.connections c WHERE c.id = $2 \
             ON CONFLICT (kind, connection_id, (COALESCE(appointment_id, 0))) \
                 WHERE state = 'queued' \
             DO UPDATE SET run_at = CASE WHEN $4 THEN LEAST(plansync.jobs.run_at, now()) \
                                         ELSE plansync.jobs.run_at END, \
                           priority = LEAST(plansync.jobs.priority, EXCLUDED.priority), \
                           updated_at = now() \
             RETURNING id, region) \
         SELECT id FROM ins, LATERAL (SELECT pg_notify($5, ins.region)) n",
    )
    .bind(kind)
    .bind(connection)
    .bind(appointment)
    .bind(expedite)
    .bind(NOTIFY_CHANNEL)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(id)
}

/// Claims the next due job of `region` among `kinds`, skipping jobs locked by
/// another claimer, connections that already run a job, and connections that
/// cannot run one now (inactive, needing re-auth, calendar gone) — except
/// the watch job of a disconnected connection, which stops its notification
/// channels with the token kept for that (and gives up if the grant is gone). The
/// connection row is locked `FOR NO KEY UPDATE SKIP LOCKED` too, so two
/// claimers do not both pick jobs of one connection; the partial unique index
/// on running jobs settles the rare race left, which is retried here.
pub async fn claim(
    pool: &PgPool,
    region: &str,
    kinds: &[&str],
    worker: &str,
    lease_secs: f64,
) -> Result<Option<ClaimedRow>, StoreError> {
    const TRIES: usize = 5;
    for _ in 0..TRIES {
        let result = sqlx::query_as::<_, ClaimedRow>(
            "WITH candidate AS ( \
                 SELECT j.id FROM plansync.jobs j \
                 JOIN plansync.connections c ON c.id = j.connection_id \
                 WHERE j.state = 'queued' AND j.region = $1 AND j.run_at <= now() \
                   AND j.kind = ANY($2) \
                   AND ((c.active AND NOT c.needs_reauth AND NOT c.calendar_gone) \
                        OR (j.kind = 'watch' AND NOT c.active)) \
                   AND NOT EXISTS (SELECT 1 FROM plansync.jobs r \
                                   WHERE r.connection_id = j.connection_id \
                                     AND r.state = 'running') \
                 ORDER BY j.priority, j.run_at, j.id \
                 LIMIT 1 \
                 FOR UPDATE OF j SKIP LOCKED \
                 FOR NO KEY UPDATE OF c SKIP LOCKED) \
             UPDATE plansync.jobs j SET state = 'running', claim_token = $3, locked_by = $4, \
                 locked_until = now() + make_interval(secs => $5), started_at = now(), \
                 updated_at = now() \
             FROM candidate WHERE j.id = candidate.id \
             RETURNING j.id, j.kind, j.connection_id, j.appointment_id, j.region, j.attempts, \
                 j.claim_token, j.locked_until",
        )
        .bind(region)
        .bind(kinds)
        .bind(Uuid::new_v4())
        .bind(worker)
        .bind(lease_secs)
        .fetch_optional(pool)
        .await;
        match result {
            Ok(row) => return Ok(row),
            // Another claimer started a job of the same connection after our
            // snapshot: look again, its job is visible now.
            Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("23505") => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(None)
}

/// Extends the lease; `false` when it is no longer ours.
pub async fn extend_lease<'e>(
    executor: impl PgExecutor<'e>,
    id: JobId,
    token: Uuid,
    lease_secs: f64,
) -> Result<bool, StoreError> {
    let rows = sqlx::query(
        "UPDATE plansync.jobs SET locked_until = now() + make_interval(secs => $3) \
         WHERE id = $1 AND claim_token = $2 AND state = 'running'",
    )
    .bind(id)
    .bind(token)
    .bind(lease_secs)
    .execute(executor)
    .await?
    .rows_affected();
    Ok(rows == 1)
}

/// Marks the job succeeded; `false` when the lease is no longer ours.
pub async fn complete<'e>(
    executor: impl PgExecutor<'e>,
    id: JobId,
    token: Uuid,
) -> Result<bool, StoreError> {
    let rows = sqlx::query(
        "UPDATE plansync.jobs SET state = 'succeeded', claim_token = NULL, locked_until = NULL, \
             last_error = NULL, finished_at = now(), updated_at = now() \
         WHERE id = $1 AND claim_token = $2 AND state = 'running'",
    )
    .bind(id)
    .bind(token)
    .execute(executor)
    .await?
    .rows_affected();
    Ok(rows == 1)
}

/// Locks a running job if the lease is still ours, returning its attempts.
pub async fn lock_running(
    conn: &mut PgConnection,
    id: JobId,
    token: Uuid,
) -> Result<Option<i32>, StoreError> {
    let attempts = sqlx::query_scalar(
        "SELECT attempts FROM plansync.jobs \
         WHERE id = $1 AND claim_token = $2 AND state = 'running' FOR UPDATE",
    )
    .bind(id)
    .bind(token)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(attempts)
}

/// Puts a locked job back in the queue, due `delay_secs` after now, folding it
/// into an equal queued job when there is one. Returns the queued job's id.
pub async fn requeue(
    conn: &mut PgConnection,
    id: JobId,
    delay_secs: f64,
    attempts: i32,
    error: Option<&str>,
) -> Result<JobId, StoreError> {
    let queued = sqlx::query_scalar(
        "SELECT plansync.job_requeue($1, now() + make_interval(secs => $2), $3, $4)",
    )
    .bind(id)
    .bind(delay_secs)
    .bind(attempts)
    .bind(error)
    .fetch_one(&mut *conn)
    .await?;
    Ok(queued)
}

/// Marks a locked job dead with its last error.
pub async fn bury(
    conn: &mut PgConnection,
    id: JobId,
    attempts: i32,
    error: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE plansync.jobs SET state = 'dead', attempts = $2, last_error = $3, \
             claim_token = NULL, locked_until = NULL, finished_at = now(), updated_at = now() \
         WHERE id = $1",
    )
    .bind(id)
    .bind(attempts)
    .bind(error)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Running jobs of `region` whose lease has passed, locked for rescue. Jobs
/// whose holder is inside a fenced transaction right now are skipped.
pub async fn lock_expired(
    conn: &mut PgConnection,
    region: &str,
) -> Result<Vec<(JobId, i32, Option<String>)>, StoreError> {
    let rows = sqlx::query_as(
        "SELECT id, attempts, locked_by FROM plansync.jobs \
         WHERE state = 'running' AND region = $1 AND locked_until < now() \
         ORDER BY id FOR UPDATE SKIP LOCKED",
    )
    .bind(region)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows)
}

/// The priority of the scheduler's polls: after every enqueued job (default
/// 1: pushes, connect, resync, notifications), so a short Google budget goes
/// to user-visible work first. Claims order by priority, then `run_at`.
pub const SCHEDULED_POLL_PRIORITY: i16 = 2;

/// Connections the scheduler polls (active, usable), in every region: they
/// all draw on the one Google project budget.
pub async fn pollable_connections(pool: &PgPool) -> Result<i64, StoreError> {
    let n = sqlx::query_scalar(
        "SELECT count(*) FROM plansync.connections \
         WHERE active AND NOT needs_reauth AND NOT calendar_gone",
    )
    .fetch_one(pool)
    .await?;
    Ok(n)
}

/// Enqueues a pull, due at once, for every connection of `region` that is due
/// and has no pull queued or running. A connection is due when it never
/// pulled, or has not pulled since the start of its current polling slot:
/// slots are `interval` long and each connection's are shifted by a stable
/// offset (a hash of its id), so a fleet's polls spread over the interval
/// while each connection still polls once per interval. Connections needing
/// re-auth or whose calendar is gone are skipped. With `backstop_secs`, a
/// connection with a live notification channel polls at that interval
/// instead (notifications bring its changes; polling is the backstop).
pub async fn schedule_pulls(
    pool: &PgPool,
    region: &str,
    interval_secs: i64,
    backstop_secs: Option<i64>,
) -> Result<u64, StoreError> {
    let rows = sqlx::query(
        "INSERT INTO plansync.jobs (kind, connection_id, region, priority) \
         SELECT 'pull', c.id, c.region, $4 FROM plansync.connections c \
         CROSS JOIN LATERAL (SELECT CASE WHEN $3::BIGINT IS NOT NULL AND EXISTS ( \
                 SELECT 1 FROM plansync.channels ch WHERE ch.connection_id = c.id \
                   AND ch.state = 'live' AND ch.retired_at IS NULL AND ch.expires_at > now()) \
             THEN $3::BIGINT ELSE $2::BIGINT END AS secs) iv \
         WHERE c.region = $1 AND c.active AND NOT c.needs_reauth AND NOT c.calendar_gone \
           AND (c.last_pull_at IS NULL OR c.last_pull_at < now() - make_interval(secs => \
                 mod(extract(epoch FROM now())::NUMERIC \
                     - mod(abs(hashint8(c.id)::BIGINT), iv.secs)::NUMERIC + iv.secs::NUMERIC, \
                     iv.secs::NUMERIC)::FLOAT8)) \
           AND (c.backoff_until IS NULL OR c.backoff_until <= now()) \
           AND NOT EXISTS (SELECT 1 FROM plansync.jobs j \
                           WHERE j.connection_id = c.id AND j.kind IN ('pull', 'full_resync') \
                             AND j.state IN ('queued', 'running')) \
         ON CONFLICT (kind, connection_id, (COALESCE(appointment_id, 0))) WHERE state = 'queued' \
         DO NOTHING",
    )
    .bind(region)
    .bind(interval_secs)
    .bind(backstop_secs)
    .bind(SCHEDULED_POLL_PRIORITY)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(rows)
}

/// Deletes succeeded and superseded jobs finished more than `finished_secs`
/// ago, and dead jobs that died more than `dead_secs` ago (each through its
/// own partial index, at most 10,000 rows a call).
pub async fn prune(pool: &PgPool, finished_secs: f64, dead_secs: f64) -> Result<u64, StoreError> {
    let rows = sqlx::query(
        "DELETE FROM plansync.jobs WHERE id IN ( \
             (SELECT id FROM plansync.jobs \
              WHERE state IN ('succeeded', 'superseded') \
                AND finished_at < now() - make_interval(secs => $1) LIMIT 10000) \
             UNION ALL \
             (SELECT id FROM plansync.jobs \
              WHERE state = 'dead' AND finished_at < now() - make_interval(secs => $2) \
              LIMIT 10000))",
    )
    .bind(finished_secs)
    .bind(dead_secs)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(rows)
}

/// Requeues dead jobs (of one user's connections, when given), due at once
/// with a fresh attempt count. Returns how many.
pub async fn retry_dead(pool: &PgPool, user: Option<UserId>) -> Result<u64, StoreError> {
    let mut tx = pool.begin().await?;
    let ids: Vec<JobId> = sqlx::query_scalar(
        "SELECT j.id FROM plansync.jobs j JOIN plansync.connections c ON c.id = j.connection_id \
         WHERE j.state = 'dead' AND ($1::BIGINT IS NULL OR c.user_id = $1) \
         ORDER BY j.id FOR UPDATE OF j",
    )
    .bind(user)
    .fetch_all(&mut *tx)
    .await?;
    for id in &ids {
        requeue(&mut tx, *id, 0.0, 0, None).await?;
    }
    tx.commit().await?;
    Ok(ids.len() as u64)
}

/// One job's row, for `resync --wait`.
pub async fn get(pool: &PgPool, id: JobId) -> Result<Option<JobRow>, StoreError> {
    let row = sqlx::query_as(
        "SELECT id, kind, connection_id, state, attempts, last_error, superseded_by \
         FROM plansync.jobs WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(row)
}

/// Queued jobs, and how long the oldest due one a worker could claim now has
/// waited past its `run_at` (0 when none).
pub async fn depth_and_lag(pool: &PgPool, user: Option<UserId>) -> Result<(i64, f64), StoreError> {
    let row = sqlx::query_as(
        "SELECT count(*), \
             COALESCE(extract(epoch FROM now() - min(j.run_at) FILTER ( \
                 WHERE j.run_at <= now() AND c.active AND NOT c.needs_reauth \
                   AND NOT c.calendar_gone))::FLOAT8, 0) \
         FROM plansync.jobs j JOIN plansync.connections c ON c.id = j.connection_id \
         WHERE j.state = 'queued' AND ($1::BIGINT IS NULL OR c.user_id = $1)",
    )
    .bind(user)
    .fetch_one(pool)
    .await?;
    Ok(row)
}

pub async fn running(
    pool: &PgPool,
    user: Option<UserId>,
) -> Result<Vec<RunningJobRow>, StoreError> {
    let rows = sqlx::query_as(
        "SELECT j.id AS job_id, j.kind, j.connection_id, j.locked_by, j.locked_until \
         FROM plansync.jobs j JOIN plansync.connections c ON c.id = j.connection_id \
         WHERE j.state = 'running' AND ($1::BIGINT IS NULL OR c.user_id = $1) \
         ORDER BY j.id",
    )
    .bind(user)
    .fetch_all(pool)
    .await?;
    Ok(rows)
}

/// The newest `limit` dead jobs, oldest of them first.
pub async fn dead(
    pool: &PgPool,
    user: Option<UserId>,
    limit: i64,
) -> Result<Vec<DeadJobRow>, StoreError> {
    let rows = sqlx::query_as(
        "SELECT * FROM ( \
             SELECT j.id AS job_id, j.kind, j.connection_id, j.attempts, j.last_error \
             FROM plansync.jobs j JOIN plansync.connections c ON c.id = j.connection_id \
             WHERE j.state = 'dead' AND ($1::BIGINT IS NULL OR c.user_id = $1) \
             ORDER BY j.id DESC LIMIT $2) newest \
         ORDER BY job_id",
    )
    .bind(user)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows)
}

pub async fn dead_total(pool: &PgPool, user: Option<UserId>) -> Result<i64, StoreError> {
    let n = sqlx::query_scalar(
        "SELECT count(*) FROM plansync.jobs j JOIN plansync.connections c ON c.id = j.connection_id \
         WHERE j.state = 'dead' AND ($1::BIGINT IS NULL OR c.user_id = $1)",
    )
    .bind(user)
    .fetch_one(pool)
    .await?;
    Ok(n)
}

/// The first sync of a push-target connection: one push job for each of the
/// user's appointments that no connection links yet, in one statement.
/// Returns how many were enqueued.
pub async fn enqueue_unlinked_pushes(
    conn: &mut PgConnection,
    user: UserId,
    connection: ConnectionId,
) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "INSERT INTO plansync.jobs (kind, connection_id, appointment_id, region) \
         SELECT 'push', c.id, a.id, c.region \
         FROM public.appointments a JOIN plansync.connections c ON c.id = $2 \
         WHERE a.user_id = $1 \
           AND NOT EXISTS (SELECT 1 FROM plansync.links l WHERE l.appointment_id = a.id) \
         ON CONFLICT (kind, connection_id, (COALESCE(appointment_id, 0))) \
             WHERE state = 'queued' DO NOTHING",
    )
    .bind(user)
    .bind(connection)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}

/// A re-connected calendar's local changes made while it was disconnected:
/// a push for each linked appointment edited since its link last synced, for
/// each link whose appointment was deleted, and, when the connection is the
/// user's push target, for each appointment no connection links.
pub async fn enqueue_missed_pushes(
    conn: &mut PgConnection,
    user: UserId,
    connection: ConnectionId,
) -> Result<u64, StoreError> {
    let linked = sqlx::query(
        "INSERT INTO plansync.jobs (kind, connection_id, appointment_id, region) \
         SELECT 'push', c.id, l.appointment_id, c.region \
         FROM plansync.links l JOIN plansync.connections c ON c.id = l.connection_id \
         LEFT JOIN public.appointments a ON a.id = l.appointment_id \
         WHERE l.connection_id = $1 AND (a.id IS NULL OR a.updated_at > l.updated_at) \
         ON CONFLICT (kind, connection_id, (COALESCE(appointment_id, 0))) \
             WHERE state = 'queued' DO NOTHING",
    )
    .bind(connection)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    let is_target: bool = sqlx::query_scalar(
        "SELECT $2 = (SELECT t.id FROM plansync.connections t \
                      WHERE t.user_id = $1 AND t.active \
                      ORDER BY t.push_target DESC, t.id LIMIT 1)",
    )
    .bind(user)
    .bind(connection)
    .fetch_one(&mut *conn)
    .await?;
    let unlinked = if is_target {
        enqueue_unlinked_pushes(conn, user, connection).await?
    } else {
        0
    };
    Ok(linked + unlinked)
}

/// A push of an appointment no connection links, on its owner's push target
/// (if the owner has an active connection). Used when a calendar let go of an
/// appointment the host moved to another user.
pub async fn enqueue_owner_push(
    conn: &mut PgConnection,
    appointment: AppointmentId,
) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "INSERT INTO plansync.jobs (kind, connection_id, appointment_id, region) \
         SELECT 'push', t.id, a.id, t.region FROM public.appointments a \
         JOIN LATERAL (SELECT c.id, c.region FROM plansync.connections c \
                       WHERE c.user_id = a.user_id AND c.active \
                       ORDER BY c.push_target DESC, c.id LIMIT 1) t ON TRUE \
         WHERE a.id = $1 \
           AND NOT EXISTS (SELECT 1 FROM plansync.links l WHERE l.appointment_id = a.id) \
         ON CONFLICT (kind, connection_id, (COALESCE(appointment_id, 0))) \
             WHERE state = 'queued' DO NOTHING",
    )
    .bind(appointment)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}

/// Drops queued pushes whose local change lost to Google's version: the
/// appointment already holds the winner, so there is nothing left to send.
pub async fn cancel_queued_pushes(
    conn: &mut PgConnection,
    appointments: &[AppointmentId],
) -> Result<(), StoreError> {
    if appointments.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "DELETE FROM plansync.jobs WHERE kind = 'push' AND state IN ('queued', 'dead') \
           AND appointment_id = ANY($1)",
    )
    .bind(appointments)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// How many jobs are running in the whole fleet (the `plansync_jobs_running`
/// gauge). A count over the partial index of running jobs: cheap.
pub async fn running_count(pool: &PgPool) -> Result<i64, StoreError> {
    let n = sqlx::query_scalar("SELECT count(*) FROM plansync.jobs WHERE state = 'running'")
        .fetch_one(pool)
        .await?;
    Ok(n)
}
