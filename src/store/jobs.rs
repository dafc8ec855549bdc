//! The job queue's SQL (`plansync.jobs`). The rules these statements enforce
//! are stated in [`crate::queue`]; this file only speaks to the table.
//!
//! Every transition of a running job names its claim token (`WHERE id = $1 AND
//! claim_token = $2 AND state = 'running'`): zero rows means the lease is gone
//! and the caller must write nothing. Times come from the database's `now()`,
//! never from the worker's clock.
//!
//! Every statement here reads an index sized by what it is after, never one
//! that grows with the whole table: claims read `jobs_claimable_idx` (queued
//! jobs whose connection can run them; `blocked` ones are left out, see
//! migration 0016), the scheduler reads `connections_poll_idx` (connections
//! whose polling time has come), pruning the partial indexes of finished and
//! dead jobs, and `status`'s lag one probe of `jobs_claimable_run_at_idx`.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor, PgPool};
use uuid::Uuid;

use super::appointments::maybe_appointment;
use super::connections::SyncConnection;
use super::push::{LinkColumns, PushState};
use super::status::{DeadJobRow, RunningJobRow};
use super::StoreError;
use crate::ids::{
    AppointmentId, CalendarId, ConnectionId, Etag, EventId, JobId, Subject, SyncToken, UserId,
};
use crate::job::{JobKind, JobState};

/// The `NOTIFY` channel an enqueue wakes idle workers on; the payload is the
/// job's region.
pub const NOTIFY_CHANNEL: &str = "plansync_jobs";

/// A job as a claim returns it, with what the job reads first (its
/// *prelude*), read and written in the claim's own statement so that a job
/// spends no round trip of its own before its first call to Google.
#[derive(Debug, Clone)]
pub struct ClaimedRow {
    pub id: JobId,
    pub kind: JobKind,
    pub connection_id: ConnectionId,
    pub appointment_id: Option<AppointmentId>,
    pub region: String,
    pub attempts: i32,
    pub claim_token: Uuid,
    pub locked_until: DateTime<Utc>,
    /// The job's connection as the claim found it (its row locked by the
    /// claim: see [`claim_batch`]).
    pub connection: SyncConnection,
    /// For a push: its appointment and link (see [`claim_batch`]).
    pub push: Option<PushState>,
}

/// What a waiter sees of one job.
#[derive(Debug, Clone)]
pub struct JobRow {
    pub id: JobId,
    pub kind: JobKind,
    pub connection_id: ConnectionId,
    pub state: JobState,
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
    kind: JobKind,
    connection: ConnectionId,
    appointment: Option<AppointmentId>,
    expedite: bool,
) -> Result<Option<JobId>, StoreError> {
    let id = sqlx::query_scalar!(
        r#"WITH ins AS (
               INSERT INTO plansync.jobs (kind, connection_id, appointment_id, region)
               SELECT $1, c.id, $3, c.region FROM plansync.connections c WHERE c.id = $2
               ON CONFLICT (kind, connection_id, (COALESCE(appointment_id, 0)))
                   WHERE state = 'queued'
               DO UPDATE SET run_at = CASE WHEN $4 THEN LEAST(plansync.jobs.run_at, now())
                                           ELSE plansync.jobs.run_at END,
                             priority = LEAST(plansync.jobs.priority, EXCLUDED.priority),
                             updated_at = now()
               RETURNING id, region)
           SELECT id AS "id!: JobId" FROM ins, LATERAL (SELECT pg_notify($5, ins.region)) n"#,
        kind.as_str(),
        connection.0,
        appointment.map(|a| a.0),
        expedite,
        NOTIFY_CHANNEL,
    )
    .fetch_optional(&mut *conn)
    .await?;
    Ok(id)
}

/// Claims up to `limit` due jobs of `region` among `kinds`, at most one per
/// connection, lowest priority first, then earliest `run_at`. Skips jobs
/// locked by another claimer, connections that already run a job, and jobs
/// whose connection cannot run them now (`blocked`: inactive, needing
/// re-auth, calendar gone — except the watch job of a disconnected
/// connection, which stops its notification channels). The connection's
/// state is checked again on its row (a job inserted while its connection
/// changed state is not trusted until the scheduler's recheck), and that row
/// is locked `FOR NO KEY UPDATE SKIP LOCKED`, so two claimers do not both
/// pick jobs of one connection; the partial unique index on running jobs
/// settles the rare race left, which is retried here.
pub async fn claim_batch(
    pool: &PgPool,
    region: &str,
    kinds: &[JobKind],
    worker: &str,
    lease_secs: f64,
    limit: i64,
) -> Result<Vec<ClaimedRow>, StoreError> {
    const TRIES: usize = 5;
    let kinds: Vec<String> = kinds.iter().map(|k| k.as_str().to_owned()).collect();
    let limit = limit.max(1);
    for _ in 0..TRIES {
        // Candidates are read a few times the batch deep, so that several
        // jobs of one connection at the head of the queue do not shrink the
        // batch to one; only the chosen ones stay locked past the statement.
        let result = sqlx::query!(
            r#"WITH candidate AS (
                   SELECT j.id, j.kind, j.connection_id, j.priority, j.run_at
                     FROM plansync.jobs j
                    WHERE j.state = 'queued' AND NOT j.blocked AND j.region = $1
                      AND j.run_at <= now() AND j.kind = ANY($2)
                      -- A probe of the running jobs' unique index per
                      -- candidate (LIMIT 1 keeps it from becoming a join).
                      AND (SELECT 1 FROM plansync.jobs r
                            WHERE r.connection_id = j.connection_id AND r.state = 'running'
                            LIMIT 1) IS NULL
                    ORDER BY j.priority, j.run_at, j.id
                    LIMIT $5::BIGINT * 4
                      FOR UPDATE OF j SKIP LOCKED),
               one_each AS (
                   SELECT DISTINCT ON (connection_id) * FROM candidate
                    ORDER BY connection_id, priority, run_at, id),
               chosen AS (
                   -- The connection row by primary key, locked, per
                   -- candidate (a LATERAL with LIMIT: never a join that
                   -- reads the connections table).
                   SELECT o.id FROM one_each o
                    CROSS JOIN LATERAL (
                        SELECT 1 FROM plansync.connections c
                         WHERE c.id = o.connection_id
                           AND NOT plansync.job_blocked(o.kind, c.active, c.needs_reauth,
                                                        c.calendar_gone)
                         LIMIT 1
                           FOR NO KEY UPDATE SKIP LOCKED) usable
                    ORDER BY o.priority, o.run_at, o.id
                    LIMIT $5),
               claimed AS (
                   UPDATE plansync.jobs j SET state = 'running', claim_token = gen_random_uuid(),
                          locked_by = $3, locked_until = now() + make_interval(secs => $4),
                          started_at = now(), updated_at = now()
                     FROM chosen WHERE j.id = chosen.id
                   RETURNING j.id, j.kind, j.connection_id, j.appointment_id, j.region,
                             j.attempts, j.priority, j.claim_token, j.locked_until),
               -- A push whose appointment no calendar holds yet records the
               -- event id of its insert here (a link without etag), so the
               -- id is durable before the insert is sent and a retry after a
               -- lost answer sends the same one (store::push). The test is
               -- sync::push's plan for "not sent yet": the appointment
               -- exists, is the connection's user's, and has no link.
               recorded AS (
                   INSERT INTO plansync.links (connection_id, appointment_id, event_id)
                   SELECT cl.connection_id, cl.appointment_id,
                          plansync.event_id(cl.connection_id, cl.appointment_id,
                                            nextval('plansync.event_incarnation'))
                     FROM claimed cl
                     JOIN plansync.connections c ON c.id = cl.connection_id
                     JOIN public.appointments a ON a.id = cl.appointment_id
                    WHERE cl.kind = 'push' AND c.active AND a.user_id = c.user_id
                      AND NOT EXISTS (SELECT 1 FROM plansync.links l
                                       WHERE l.appointment_id = cl.appointment_id)
                   ON CONFLICT DO NOTHING
                   RETURNING id, appointment_id, event_id)
           SELECT cl.id AS "id!: JobId", cl.kind AS "kind!: JobKind",
                  cl.connection_id AS "connection_id!: ConnectionId",
                  cl.appointment_id AS "appointment_id?: AppointmentId",
                  cl.region AS "region!", cl.attempts AS "attempts!", cl.priority AS "priority!",
                  cl.claim_token AS "claim_token!", cl.locked_until AS "locked_until!",
                  c.user_id AS "connection_user_id!: UserId",
                  c.calendar_id AS "calendar_id!: CalendarId", c.active AS "active!",
                  c.refresh_token_enc AS "refresh_token_enc?", c.subject AS "subject?: Subject",
                  c.sync_token AS "sync_token?: SyncToken",
                  c.calendar_time_zone AS "calendar_time_zone?",
                  c.needs_reauth AS "needs_reauth!", c.calendar_gone AS "calendar_gone!",
                  (c.active AND c.id = plansync.push_target(c.user_id)) AS "is_push_target!",
                  c.last_pull_at IS NULL AS "never_pulled!",
                  EXISTS (SELECT 1 FROM plansync.skipped_events s WHERE s.connection_id = c.id)
                      AS "has_skipped!",
                  a.user_id AS "user_id?: UserId", a.summary AS "summary?",
                  a.description AS "description?", a.location AS "location?",
                  plansync.storable_time(a.start_at) AS "start_at?",
                  plansync.storable_time(a.end_at) AS "end_at?",
                  a.start_time_zone AS "start_time_zone?", a.end_time_zone AS "end_time_zone?",
                  a.all_day AS "all_day?",
                  plansync.storable_time(a.created_at) AS "created_at?",
                  plansync.storable_time(a.updated_at) AS "updated_at?",
                  COALESCE(l.id, r.id) AS "link_id?",
                  COALESCE(l.connection_id, CASE WHEN r.id IS NOT NULL THEN cl.connection_id END)
                      AS "link_connection?: ConnectionId",
                  COALESCE(l.event_id, r.event_id) AS "event_id?: EventId",
                  l.etag AS "etag?: Etag", l.remote_updated_at AS "remote_updated_at?",
                  (cl.appointment_id IS NOT NULL AND EXISTS (
                      SELECT 1 FROM plansync.parked_pushes p
                       WHERE p.appointment_id = cl.appointment_id)) AS "parked!",
                  r.id IS NOT NULL AS "link_is_new!"
             FROM claimed cl
             JOIN plansync.connections c ON c.id = cl.connection_id
             LEFT JOIN public.appointments a ON cl.kind = 'push' AND a.id = cl.appointment_id
             LEFT JOIN plansync.links l ON cl.kind = 'push' AND l.appointment_id = cl.appointment_id
             LEFT JOIN recorded r ON r.appointment_id = cl.appointment_id"#,
            region,
            &kinds,
            worker,
            lease_secs,
            limit,
        )
        .fetch_all(pool)
        .await;
        match result {
            Ok(rows) => {
                let mut rows: Vec<_> = rows
                    .into_iter()
                    .map(|r| {
                        let connection = SyncConnection {
                            id: r.connection_id,
                            user_id: r.connection_user_id,
                            calendar_id: r.calendar_id,
                            active: r.active,
                            refresh_token_enc: r.refresh_token_enc,
                            subject: r.subject,
                            sync_token: r.sync_token,
                            calendar_time_zone: r.calendar_time_zone,
                            needs_reauth: r.needs_reauth,
                            calendar_gone: r.calendar_gone,
                            is_push_target: r.is_push_target,
                            never_pulled: r.never_pulled,
                            has_skipped: r.has_skipped,
                        };
                        let push = match (r.kind, r.appointment_id) {
                            (JobKind::Push, Some(appointment)) => Some(PushState::from_parts(
                                maybe_appointment!(r).into_row(appointment),
                                LinkColumns {
                                    id: r.link_id,
                                    connection_id: r.link_connection,
                                    event_id: r.event_id,
                                    etag: r.etag,
                                    remote_updated_at: r.remote_updated_at,
                                },
                                r.parked,
                                r.link_is_new,
                            )),
                            _ => None,
                        };
                        let row = ClaimedRow {
                            id: r.id,
                            kind: r.kind,
                            connection_id: r.connection_id,
                            appointment_id: r.appointment_id,
                            region: r.region,
                            attempts: r.attempts,
                            claim_token: r.claim_token,
                            locked_until: r.locked_until,
                            connection,
                            push,
                        };
                        (r.priority, row)
                    })
                    .collect();
                // RETURNING keeps no order: hand them out in claim order.
                rows.sort_by_key(|(priority, r)| (*priority, r.id));
                return Ok(rows.into_iter().map(|(_, r)| r).collect());
            }
            // Another claimer started a job of the same connection after our
            // snapshot: look again, its job is visible now.
            Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("23505") => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Vec::new())
}

/// Claims the next due job (see [`claim_batch`]).
pub async fn claim(
    pool: &PgPool,
    region: &str,
    kinds: &[JobKind],
    worker: &str,
    lease_secs: f64,
) -> Result<Option<ClaimedRow>, StoreError> {
    Ok(claim_batch(pool, region, kinds, worker, lease_secs, 1)
        .await?
        .pop())
}

/// In how many seconds the next claimable job of `region` that is not due
/// yet becomes due (`None`: none queued), so an idle worker sleeps until
/// then. One probe of the claimable jobs' `run_at` index.
pub async fn next_due_in(pool: &PgPool, region: &str) -> Result<Option<f64>, StoreError> {
    let secs = sqlx::query_scalar!(
        r#"SELECT extract(epoch FROM run_at - now())::FLOAT8 AS "secs!" FROM plansync.jobs
            WHERE state = 'queued' AND NOT blocked AND region = $1 AND run_at > now()
            ORDER BY run_at LIMIT 1"#,
        region,
    )
    .fetch_optional(pool)
    .await?;
    Ok(secs)
}

/// Extends the lease; `false` when it is no longer ours.
pub async fn extend_lease<'e>(
    executor: impl PgExecutor<'e>,
    id: JobId,
    token: Uuid,
    lease_secs: f64,
) -> Result<bool, StoreError> {
    Ok(sqlx::query_scalar!(
        r#"SELECT plansync.extend_job_lease($1, $2, $3) AS "ours!""#,
        id.0,
        token,
        lease_secs,
    )
    .fetch_one(executor)
    .await?)
}

/// Marks the job succeeded; `false` when the lease is no longer ours.
pub async fn complete<'e>(
    executor: impl PgExecutor<'e>,
    id: JobId,
    token: Uuid,
) -> Result<bool, StoreError> {
    Ok(sqlx::query_scalar!(
        r#"SELECT plansync.complete_job($1, $2) AS "ours!""#,
        id.0,
        token,
    )
    .fetch_one(executor)
    .await?)
}

/// Marks several jobs succeeded in one statement, each fenced by its own
/// claim token. Returns the ids whose lease was still ours (the others wrote
/// nothing).
pub async fn complete_many<'e>(
    executor: impl PgExecutor<'e>,
    jobs: &[(JobId, Uuid)],
) -> Result<Vec<JobId>, StoreError> {
    let ids: Vec<i64> = jobs.iter().map(|(id, _)| id.0).collect();
    let tokens: Vec<Uuid> = jobs.iter().map(|(_, t)| *t).collect();
    let done = sqlx::query_scalar!(
        r#"SELECT d.id AS "id!: JobId" FROM UNNEST($1::BIGINT[], $2::UUID[]) AS d(id, token)
            WHERE plansync.complete_job(d.id, d.token)"#,
        &ids,
        &tokens,
    )
    .fetch_all(executor)
    .await?;
    Ok(done)
}

/// What [`open_sync_transaction`] found.
#[derive(Debug, Clone, Copy)]
pub struct SyncOpening {
    /// The lease is still ours (extended, or the job completed as asked).
    pub ours: bool,
    /// The job's connection is still active (its row now share-locked).
    pub connection_active: bool,
    /// A new sweep generation, when one was asked for.
    pub generation: Option<i64>,
}

/// The first statement of a sync job's transaction, doing in one round trip
/// what each of its transactions needs first: fences the job (lease extended,
/// or the job completed when `complete`: the transaction then commits the
/// job's success with its effects), share-locks the connection row so a
/// `disconnect` waits for the transaction and reports whether it is still
/// active, marks the transaction's writes as the worker's own (the host's
/// triggers then record nothing to push back: see
/// [`super::appointments::mark_origin_google`]) and, when asked, draws a new
/// sweep generation. Both transitions are the functions of migration 0020,
/// so they mean here what they mean everywhere.
pub async fn open_sync_transaction(
    conn: &mut PgConnection,
    id: JobId,
    token: Uuid,
    lease_secs: f64,
    connection: ConnectionId,
    complete: bool,
    draw_generation: bool,
) -> Result<SyncOpening, StoreError> {
    let row = sqlx::query!(
        r#"SELECT CASE WHEN $4 THEN plansync.complete_job($1, $2)
                       ELSE plansync.extend_job_lease($1, $2, $3) END AS "ours!",
                  COALESCE((SELECT c.active FROM plansync.connections c WHERE c.id = $5
                               FOR SHARE), FALSE) AS "active!",
                  set_config('plansync.origin', 'google', true) AS "origin!",
                  CASE WHEN $6 THEN nextval('plansync.sync_generation') END AS generation"#,
        id.0,
        token,
        lease_secs,
        complete,
        connection.0,
        draw_generation,
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(SyncOpening {
        ours: row.ours,
        connection_active: row.active,
        generation: row.generation,
    })
}

/// Locks a running job if the lease is still ours, returning its attempts.
pub async fn lock_running(
    conn: &mut PgConnection,
    id: JobId,
    token: Uuid,
) -> Result<Option<i32>, StoreError> {
    let attempts = sqlx::query_scalar!(
        "SELECT attempts FROM plansync.jobs \
         WHERE id = $1 AND claim_token = $2 AND state = 'running' FOR UPDATE",
        id.0,
        token,
    )
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
    let queued = sqlx::query_scalar!(
        r#"SELECT plansync.job_requeue($1, now() + make_interval(secs => $2), $3, $4)
               AS "id!: JobId""#,
        id.0,
        delay_secs,
        attempts,
        error,
    )
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
    sqlx::query!(
        "UPDATE plansync.jobs SET state = 'dead', attempts = $2, last_error = $3, \
             claim_token = NULL, locked_until = NULL, finished_at = now(), updated_at = now() \
         WHERE id = $1",
        id.0,
        attempts,
        error,
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A running job whose lease has passed.
#[derive(Debug, Clone)]
pub struct ExpiredRow {
    pub id: JobId,
    pub attempts: i32,
    pub locked_by: Option<String>,
}

/// Running jobs of `region` whose lease has passed, locked for rescue. Jobs
/// whose holder is inside a fenced transaction right now are skipped.
pub async fn lock_expired(
    conn: &mut PgConnection,
    region: &str,
) -> Result<Vec<ExpiredRow>, StoreError> {
    let rows = sqlx::query_as!(
        ExpiredRow,
        r#"SELECT id AS "id: JobId", attempts, locked_by FROM plansync.jobs
            WHERE state = 'running' AND region = $1 AND locked_until < now()
            ORDER BY id FOR UPDATE SKIP LOCKED"#,
        region,
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows)
}

/// The priority of the scheduler's polls: after every enqueued job (default
/// 1: pushes, connect, resync, notifications), so a short Google budget goes
/// to user-visible work first. Claims order by priority, then `run_at`.
pub const SCHEDULED_POLL_PRIORITY: i16 = 2;

/// Connections the scheduler polls (active, usable), in every region: they
/// all draw on the one Google project budget. Counted on the scheduler's
/// partial index (an index-only scan), about once a minute.
pub async fn pollable_connections(pool: &PgPool) -> Result<i64, StoreError> {
    let n = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM plansync.connections
            WHERE active AND NOT needs_reauth AND NOT calendar_gone"#
    )
    .fetch_one(pool)
    .await?;
    Ok(n)
}

/// What one scheduler pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scheduled {
    /// Pulls enqueued.
    pub enqueued: u64,
    /// Watch jobs enqueued or brought forward (channels to open or renew).
    pub watches: u64,
    /// Connections looked at (their polling time had come).
    pub examined: u64,
}

/// The scheduler's look at the connections of `region` whose `poll_at` has
/// come (at most `limit`, oldest first; a second replica's tick takes the
/// next ones):
///
/// - **Polls.** A pull, due at once, for each that is due and has no pull
///   queued or running. A connection is due when it never pulled, or has not
///   pulled since the start of its current polling slot: slots are
///   `interval` long and each connection's are shifted by a stable offset (a
///   hash of its id), so a fleet's polls spread over the interval while each
///   connection still polls once per interval. Connections needing re-auth,
///   whose calendar is gone, or in back-off are not polled. With
///   `backstop_secs`, a connection with a live notification channel polls at
///   that interval instead (notifications bring its changes).
/// - **Channels wanted.** With `webhook` set, a watch job (due at once, or
///   an equal queued one brought forward unless it waits out a retry) for
///   each that has completed its first sync, has no full resync pending, no
///   fresh channel at `webhook`, and no watch job running or dead in the
///   last hour. (Channels to stop are found through the channels:
///   [`super::channels::schedule_upkeep`].)
///
/// Each connection looked at leaves with its next `poll_at`: the end of its
/// current slot (or of its back-off), capped by its live channel's expiry
/// and by the moment its fresh channel stops being fresh. Anything else the
/// rules read resets `poll_at` (a pull, a back-off, any channel change:
/// triggers of migration 0016), so nothing is missed while only the
/// connections whose time has come are read. A polling interval that shrinks
/// (the budget stops stretching it) takes effect for a connection after the
/// slot it was given.
pub async fn schedule_pulls(
    pool: &PgPool,
    region: &str,
    interval_secs: i64,
    backstop_secs: Option<i64>,
    webhook: Option<&str>,
    limit: i64,
) -> Result<Scheduled, StoreError> {
    let row = sqlx::query!(
        r#"WITH candidate AS (
               SELECT c.id, c.region, c.last_pull_at, c.backoff_until,
                      (SELECT max(ch.expires_at) FROM plansync.channels ch
                        WHERE ch.connection_id = c.id AND ch.state = 'live'
                          AND ch.retired_at IS NULL AND ch.expires_at > now()) AS live_until,
                      CASE WHEN $6::TEXT IS NOT NULL THEN (
                          SELECT max(ch.expires_at - (ch.expires_at - ch.opened_at) / 3)
                            FROM plansync.channels ch
                           WHERE ch.connection_id = c.id AND ch.address = $6
                             AND ch.state = 'live' AND ch.retired_at IS NULL) END AS fresh_until
                 FROM plansync.connections c
                WHERE c.region = $1 AND c.active AND NOT c.needs_reauth AND NOT c.calendar_gone
                  AND c.poll_at <= now()
                ORDER BY c.poll_at
                LIMIT $5
                  FOR NO KEY UPDATE OF c SKIP LOCKED),
           slot AS (
               SELECT cd.*, iv.secs,
                      now() - make_interval(secs => mod(
                          extract(epoch FROM now())::NUMERIC
                          - mod(abs(hashint8(cd.id)::BIGINT), iv.secs)::NUMERIC
                          + iv.secs::NUMERIC, iv.secs::NUMERIC)::FLOAT8) AS starts
                 FROM candidate cd
                CROSS JOIN LATERAL (
                    SELECT CASE WHEN $3::BIGINT IS NOT NULL AND cd.live_until IS NOT NULL
                                THEN $3::BIGINT ELSE $2::BIGINT END AS secs) iv),
           due AS (
               SELECT s.id, s.region FROM slot s
                WHERE (s.last_pull_at IS NULL OR s.last_pull_at < s.starts)
                  AND (s.backoff_until IS NULL OR s.backoff_until <= now())
                  -- Scalar probes (LIMIT 1), not anti-joins: one index
                  -- lookup per connection however large the jobs table.
                  AND (SELECT 1 FROM plansync.jobs j
                        WHERE j.connection_id = s.id AND j.kind IN ('pull', 'full_resync')
                          AND j.state IN ('queued', 'running') LIMIT 1) IS NULL),
           enqueued AS (
               INSERT INTO plansync.jobs (kind, connection_id, region, priority)
               SELECT 'pull', due.id, due.region, $4 FROM due
               ON CONFLICT (kind, connection_id, (COALESCE(appointment_id, 0)))
                   WHERE state = 'queued'
               DO NOTHING
               RETURNING 1),
           watch AS (
               INSERT INTO plansync.jobs (kind, connection_id, region)
               SELECT 'watch', s.id, s.region FROM slot s
                WHERE $6::TEXT IS NOT NULL AND s.last_pull_at IS NOT NULL
                  AND (s.fresh_until IS NULL OR s.fresh_until <= now())
                  AND (SELECT 1 FROM plansync.jobs f
                        WHERE f.connection_id = s.id AND f.kind = 'full_resync'
                          AND f.state IN ('queued', 'running') LIMIT 1) IS NULL
                  AND (SELECT 1 FROM plansync.jobs w
                        WHERE w.connection_id = s.id AND w.kind = 'watch'
                          AND (w.state = 'running' OR (w.state = 'dead'
                               AND w.finished_at > now() - interval '1 hour')) LIMIT 1) IS NULL
               ON CONFLICT (kind, connection_id, (COALESCE(appointment_id, 0)))
                   WHERE state = 'queued'
               DO UPDATE SET run_at = now(), updated_at = now()
                   WHERE plansync.jobs.attempts = 0 AND plansync.jobs.run_at > now()
               RETURNING 1),
           moved AS (
               UPDATE plansync.connections c SET poll_at = LEAST(
                      CASE WHEN s.backoff_until > now() THEN s.backoff_until
                           ELSE s.starts + make_interval(secs => s.secs) END,
                      COALESCE(s.live_until, 'infinity'),
                      CASE WHEN s.fresh_until > now() THEN s.fresh_until
                           ELSE 'infinity' END)
                 FROM slot s WHERE c.id = s.id
               RETURNING 1)
           SELECT (SELECT count(*) FROM enqueued) AS "enqueued!",
                  (SELECT count(*) FROM watch) AS "watches!",
                  (SELECT count(*) FROM moved) AS "examined!""#,
        region,
        interval_secs,
        backstop_secs,
        SCHEDULED_POLL_PRIORITY,
        limit,
        webhook,
    )
    .fetch_one(pool)
    .await?;
    Ok(Scheduled {
        enqueued: row.enqueued as u64,
        watches: row.watches as u64,
        examined: row.examined as u64,
    })
}

/// Sets the `blocked` flag again on the jobs of connections whose state
/// changed, once no transaction that could have read the old state is left
/// (see migration 0016). Returns how many jobs it corrected (normally 0).
pub async fn recheck_blocked(pool: &PgPool) -> Result<i64, StoreError> {
    let fixed = sqlx::query_scalar!(r#"SELECT plansync.recheck_blocked_jobs() AS "n!""#)
        .fetch_one(pool)
        .await?;
    Ok(fixed)
}

/// Deletes succeeded and superseded jobs finished more than `finished_secs`
/// ago, and dead jobs that died more than `dead_secs` ago (each through its
/// own partial index, at most 10,000 rows a call, by primary key).
pub async fn prune(pool: &PgPool, finished_secs: f64, dead_secs: f64) -> Result<u64, StoreError> {
    let rows = sqlx::query!(
        "DELETE FROM plansync.jobs WHERE id = ANY(ARRAY( \
             (SELECT id FROM plansync.jobs \
              WHERE state IN ('succeeded', 'superseded') \
                AND finished_at < now() - make_interval(secs => $1) LIMIT 10000) \
             UNION ALL \
             (SELECT id FROM plansync.jobs \
              WHERE state = 'dead' AND finished_at < now() - make_interval(secs => $2) \
              LIMIT 10000)))",
        finished_secs,
        dead_secs,
    )
    .execute(pool)
    .await?
    .rows_affected();
    Ok(rows)
}

/// Requeues dead jobs (of one user's connections, when given), due at once
/// with a fresh attempt count. Returns how many.
pub async fn retry_dead(pool: &PgPool, user: Option<UserId>) -> Result<u64, StoreError> {
    let mut tx = super::begin(pool).await?;
    let ids = sqlx::query_scalar!(
        r#"SELECT j.id AS "id: JobId" FROM plansync.jobs j
             JOIN plansync.connections c ON c.id = j.connection_id
            WHERE j.state = 'dead' AND ($1::BIGINT IS NULL OR c.user_id = $1)
            ORDER BY j.id FOR UPDATE OF j"#,
        user.map(|u| u.0),
    )
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
    let row = sqlx::query_as!(
        JobRow,
        r#"SELECT id AS "id: JobId", kind AS "kind: JobKind",
                  connection_id AS "connection_id: ConnectionId", state AS "state: JobState",
                  attempts, last_error, superseded_by AS "superseded_by: JobId"
             FROM plansync.jobs WHERE id = $1"#,
        id.0,
    )
    .fetch_optional(pool)
    .await?;
    Ok(row)
}

/// Queued jobs, and how long the oldest due job a worker could claim now has
/// waited past its `run_at` (0 when none). The whole fleet's: an index-only
/// count of the queued jobs' partial index and one probe of the claimable
/// jobs' `run_at` index; one user's: through that user's connections.
pub async fn depth_and_lag(pool: &PgPool, user: Option<UserId>) -> Result<(i64, f64), StoreError> {
    match user {
        None => {
            let row = sqlx::query!(
                r#"SELECT (SELECT count(*) FROM plansync.jobs WHERE state = 'queued') AS "depth!",
                          COALESCE(extract(epoch FROM now() - (
                              SELECT run_at FROM plansync.jobs
                               WHERE state = 'queued' AND NOT blocked AND run_at <= now()
                               ORDER BY run_at LIMIT 1))::FLOAT8, 0) AS "lag!""#
            )
            .fetch_one(pool)
            .await?;
            Ok((row.depth, row.lag))
        }
        Some(user) => {
            let row = sqlx::query!(
                r#"SELECT count(*) AS "depth!",
                          COALESCE(extract(epoch FROM now() - min(j.run_at) FILTER (
                              WHERE j.run_at <= now() AND NOT j.blocked))::FLOAT8, 0) AS "lag!"
                     FROM plansync.connections c
                     JOIN plansync.jobs j ON j.connection_id = c.id
                    WHERE c.user_id = $1 AND j.state = 'queued'"#,
                user.0,
            )
            .fetch_one(pool)
            .await?;
            Ok((row.depth, row.lag))
        }
    }
}

pub async fn running(
    pool: &PgPool,
    user: Option<UserId>,
) -> Result<Vec<RunningJobRow>, StoreError> {
    let rows = sqlx::query_as!(
        RunningJobRow,
        r#"SELECT j.id AS "job_id: JobId", j.kind, j.connection_id AS "connection_id: ConnectionId",
                  j.locked_by, j.locked_until
             FROM plansync.jobs j JOIN plansync.connections c ON c.id = j.connection_id
            WHERE j.state = 'running' AND ($1::BIGINT IS NULL OR c.user_id = $1)
            ORDER BY j.id"#,
        user.map(|u| u.0),
    )
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
    let rows = sqlx::query_as!(
        DeadJobRow,
        r#"SELECT job_id AS "job_id!: JobId", kind AS "kind!",
                  connection_id AS "connection_id!: ConnectionId", attempts AS "attempts!",
                  last_error
             FROM (SELECT j.id AS job_id, j.kind, j.connection_id, j.attempts, j.last_error
                     FROM plansync.jobs j JOIN plansync.connections c ON c.id = j.connection_id
                    WHERE j.state = 'dead' AND ($1::BIGINT IS NULL OR c.user_id = $1)
                    ORDER BY j.id DESC LIMIT $2) newest
            ORDER BY job_id"#,
        user.map(|u| u.0),
        limit,
    )
    .fetch_all(pool)
    .await?;
    Ok(rows)
}

pub async fn dead_total(pool: &PgPool, user: Option<UserId>) -> Result<i64, StoreError> {
    let n = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM plansync.jobs j
             JOIN plansync.connections c ON c.id = j.connection_id
            WHERE j.state = 'dead' AND ($1::BIGINT IS NULL OR c.user_id = $1)"#,
        user.map(|u| u.0),
    )
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
    let done = sqlx::query!(
        "INSERT INTO plansync.jobs (kind, connection_id, appointment_id, region) \
         SELECT $3, c.id, a.id, c.region \
         FROM public.appointments a JOIN plansync.connections c ON c.id = $2 \
         WHERE a.user_id = $1 \
           AND NOT EXISTS (SELECT 1 FROM plansync.links l WHERE l.appointment_id = a.id) \
         ON CONFLICT (kind, connection_id, (COALESCE(appointment_id, 0))) \
             WHERE state = 'queued' DO NOTHING",
        user.0,
        connection.0,
        JobKind::Push.as_str(),
    )
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
    let linked = sqlx::query!(
        "INSERT INTO plansync.jobs (kind, connection_id, appointment_id, region) \
         SELECT $2, c.id, l.appointment_id, c.region \
         FROM plansync.links l JOIN plansync.connections c ON c.id = l.connection_id \
         LEFT JOIN public.appointments a ON a.id = l.appointment_id \
         WHERE l.connection_id = $1 AND (a.id IS NULL OR a.updated_at > l.updated_at) \
         ON CONFLICT (kind, connection_id, (COALESCE(appointment_id, 0))) \
             WHERE state = 'queued' DO NOTHING",
        connection.0,
        JobKind::Push.as_str(),
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    let is_target = sqlx::query_scalar!(
        r#"SELECT plansync.push_target($1) IS NOT DISTINCT FROM $2 AS "is_target!""#,
        user.0,
        connection.0,
    )
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
    let done = sqlx::query!(
        "INSERT INTO plansync.jobs (kind, connection_id, appointment_id, region) \
         SELECT $2, t.id, a.id, t.region FROM public.appointments a \
         JOIN plansync.connections t ON t.id = plansync.push_target(a.user_id) \
         WHERE a.id = $1 \
           AND NOT EXISTS (SELECT 1 FROM plansync.links l WHERE l.appointment_id = a.id) \
         ON CONFLICT (kind, connection_id, (COALESCE(appointment_id, 0))) \
             WHERE state = 'queued' DO NOTHING",
        appointment.0,
        JobKind::Push.as_str(),
    )
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
    let ids: Vec<i64> = appointments.iter().map(|a| a.0).collect();
    sqlx::query!(
        "DELETE FROM plansync.jobs WHERE kind = $2 AND state IN ('queued', 'dead') \
           AND appointment_id = ANY($1)",
        &ids,
        JobKind::Push.as_str(),
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// How many jobs are running in the whole fleet (the `plansync_jobs_running`
/// gauge). A count over the partial index of running jobs: cheap.
pub async fn running_count(pool: &PgPool) -> Result<i64, StoreError> {
    let n = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM plansync.jobs WHERE state = 'running'"#
    )
    .fetch_one(pool)
    .await?;
    Ok(n)
}
