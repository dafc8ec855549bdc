//! The job queue: every sync runs as a job in `plansync.jobs`.
//!
//! Guarantees (each is tested in `tests/it/queue.rs`):
//! - **Dedup.** At most one *queued* job per (kind, connection, appointment):
//!   an enqueue that finds one returns it. An enqueue while an equal job runs
//!   leaves exactly one queued follow-up, so a trigger is never lost.
//! - **Claim exclusivity.** A claim (`FOR UPDATE SKIP LOCKED`) takes only due
//!   jobs of the worker's region and of kinds its build knows, and never a job
//!   of a connection that already has one running: a connection's pulls and
//!   pushes never interleave (a partial unique index backs this). One claim
//!   takes up to a batch of jobs ([`Queue::claim_batch`], sized by the
//!   worker's free slots), at most one per connection.
//! - **Waiting jobs.** Jobs of a connection that is disconnected, needs
//!   re-auth or whose calendar is gone wait, unclaimed, until it is usable
//!   again (`connect`, `resync`); the watch job of a disconnected connection
//!   does not wait (it stops the notification channels). Waiting jobs are
//!   flagged `blocked` and left out of the claim's index, so a backlog of
//!   them costs a claim nothing (migration 0016).
//! - **Priority.** Among due jobs a claim takes the lowest `priority` first,
//!   then the earliest `run_at`: every enqueue is 1, the scheduler's polls 2
//!   (`store::jobs::SCHEDULED_POLL_PRIORITY`), so when Google's budget is
//!   short pushes and asked-for pulls go before routine polling.
//! - **Leases.** A claim gets a fresh claim token and `locked_until` = the
//!   database's `now()` + `PLANSYNC_LEASE_SECS`; the worker's heartbeat extends
//!   it while the job runs.
//! - **Fencing.** Every transition of a running job (complete, fail, snooze,
//!   release, heartbeat, [`Job::fence`]) names the claim token; when it no
//!   longer matches, the operation changes nothing and reports
//!   [`JobError::LeaseLost`], and the job stops and writes nothing.
//!   [`Job::complete_in`] completes inside the caller's transaction, so a
//!   job's completion commits with its database effects or not at all.
//! - **Rescue.** A running job whose lease has passed (its worker died or
//!   stalled) is put back in the queue, the lost run counted as an attempt, and
//!   runs again.
//! - **Retry, backoff, dead.** [`JobError::Retry`] spends an attempt and
//!   re-runs after an exponential backoff with jitter (`backon`: base
//!   `PLANSYNC_RETRY_BASE_SECS`, factor 2, at most an hour); after
//!   `PLANSYNC_MAX_ATTEMPTS` spent attempts, or at once on
//!   [`JobError::Fatal`], the job is dead and kept with its last error until
//!   `jobs retry --dead`.
//! - **Snooze.** [`JobError::Snooze`] (a rate limit) re-runs after the given
//!   delay (Google's `Retry-After`) without spending an attempt.
//!
//! When a job goes back to the queue while an equal one is already queued, it
//! is folded into that one (state `superseded`, pointing at it): the survivor
//! keeps the later run time and the larger attempt count.
//!
//! Every enqueue goes through this module ([`Queue::enqueue_in`] and the
//! push enqueues beside it); the kinds and states are [`JobKind`] and
//! [`JobState`] (`crate::job`), and a handler runs with a [`JobContext`] and
//! ends with a [`Done`] or a [`JobError`] whose [`Failure`] keeps the cause.

use std::error::Error;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use backon::BackoffBuilder;
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::QueueSettings;
use crate::ids::{AppointmentId, ConnectionId, JobId, UserId};
use crate::store::{self, StoreError};

pub use crate::job::{chain, Failure, JobKind, JobState};

/// How a job run ended badly; the variant decides what happens next. Each
/// carries its cause ([`Failure`]): the reason recorded on the job (and on
/// its connection) is [`JobError::reason`], the whole chain, each level once.
#[derive(Debug, Clone)]
pub enum JobError {
    /// A transient failure (5xx, timeout, database hiccup): spend an attempt,
    /// retry after a backoff, dead after `PLANSYNC_MAX_ATTEMPTS`.
    Retry(Failure),
    /// A rate limit: run again after `after`, without spending an attempt.
    Snooze { after: Duration, reason: Failure },
    /// Retrying cannot help: dead at once, with this error.
    Fatal(Failure),
    /// The connection cannot be served for a while, through no fault of the
    /// job: Google's quota is spent, or the token key cannot decrypt the
    /// connection's token. The job and the connection's polling back off
    /// together on `schedule`, without spending an attempt, and the reason is
    /// the connection's `lastError`.
    Backoff {
        reason: Failure,
        schedule: BackoffSchedule,
    },
    /// The lease is no longer ours (the job was rescued and may run
    /// elsewhere): stop silently and write nothing.
    LeaseLost,
}

impl JobError {
    /// A transient failure the job describes itself.
    pub fn retry(message: impl Into<String>) -> Self {
        JobError::Retry(Failure::msg(message))
    }

    /// A failure retrying cannot help, described by the job itself.
    pub fn fatal(message: impl Into<String>) -> Self {
        JobError::Fatal(Failure::msg(message))
    }

    /// What is recorded on the job and its connection: the chain of causes.
    pub fn reason(&self) -> String {
        chain(self)
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JobError::Retry(failure) | JobError::Fatal(failure) => failure.fmt(f),
            JobError::Snooze { after, .. } => write!(f, "snoozed for {}s", after.as_secs_f64()),
            JobError::Backoff { reason, .. } => reason.fmt(f),
            JobError::LeaseLost => f.write_str("the job's lease was lost"),
        }
    }
}

impl Error for JobError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            // Transparent: `Display` already printed the failure's top level.
            JobError::Retry(failure) | JobError::Fatal(failure) => failure.source(),
            JobError::Backoff { reason, .. } => reason.source(),
            JobError::Snooze { reason, .. } => Some(reason),
            JobError::LeaseLost => None,
        }
    }
}

impl From<StoreError> for JobError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotMigrated => JobError::Fatal(Failure::of(err)),
            other => JobError::Retry(Failure::of(other)),
        }
    }
}

impl From<sqlx::Error> for JobError {
    fn from(err: sqlx::Error) -> Self {
        StoreError::from(err).into()
    }
}

/// How a connection-level back-off grows: `first` doubling per failure in a
/// row, at most `cap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffSchedule {
    pub first: Duration,
    pub cap: Duration,
}

impl BackoffSchedule {
    /// Google's daily or per-project quota: 15 minutes doubling up to 6 hours.
    pub const QUOTA: BackoffSchedule = BackoffSchedule {
        first: Duration::from_secs(15 * 60),
        cap: Duration::from_secs(6 * 3600),
    };
    /// An operator's mistake (a wrong token key): soon enough to notice the
    /// fix, rarely enough not to spin: one minute doubling up to 15.
    pub const OPERATOR: BackoffSchedule = BackoffSchedule {
        first: Duration::from_secs(60),
        cap: Duration::from_secs(15 * 60),
    };
}

/// Proof that a job's completion was written (by [`Job::complete_in`] or
/// [`Job::complete`]): the only way a handler can report success.
#[must_use = "a completion only counts once its transaction commits"]
#[derive(Debug)]
pub struct Done(());

/// What [`Job::open_sync`] found, in the transaction it opened.
#[derive(Debug)]
#[must_use = "a sync transaction's completion only counts once it commits"]
pub struct SyncTransaction {
    /// The connection is still active; its row is share-locked until the
    /// transaction ends.
    pub connection_active: bool,
    pub generation: Option<i64>,
    /// Set when the job was completed in this transaction.
    pub done: Option<Done>,
}

/// What a running job gets from the worker besides its handler's own state.
#[derive(Debug, Clone)]
pub struct JobContext {
    pub pool: PgPool,
    /// Cancelled when the job must stop now: its lease was lost, or the
    /// shutdown grace period ran out. The worker then drops the handler's
    /// future (rolling back an open transaction); checking it lets a handler
    /// stop between calls instead.
    pub cancel: CancellationToken,
}

/// What a job reads first, read by the claim that handed it out (one
/// statement for the whole batch, in the claim's snapshot, with the
/// connection's row locked by it), so that no job spends a round trip of its
/// own before its first Google call.
#[derive(Debug, Clone)]
pub struct Prelude {
    /// The job's connection. Only one job of a connection runs at a time, so
    /// what sync jobs change on it (its sync token) cannot change under
    /// the job; what admins change (a disconnect) each sync transaction
    /// checks again on the row.
    pub connection: store::connections::SyncConnection,
    /// For a push: its appointment and link. A push whose appointment was
    /// never sent finds the link of its insert already recorded by the claim
    /// (an event id, no etag), durable before the insert is sent.
    pub push: Option<store::push::PushState>,
}

/// A claimed job: what it is, and its lease.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: JobId,
    pub kind: JobKind,
    pub connection: ConnectionId,
    /// Set for push jobs.
    pub appointment: Option<AppointmentId>,
    pub region: String,
    /// This run's number, from 1 (failed runs before it + 1).
    pub attempt: i32,
    /// What the claim read (and, for a push, recorded) for this job in its
    /// own statement: see [`Prelude`].
    pub prelude: Arc<Prelude>,
    token: Uuid,
    lease: Duration,
    /// Set (for every clone) when the run starts writing its completion,
    /// which clears the lease: see [`Job::completion_started`].
    completing: Arc<AtomicBool>,
    /// The claiming queue's completion batcher (`None` for a job made
    /// elsewhere): [`Job::complete`] goes through it.
    completions: Option<Arc<Completions>>,
}

impl Job {
    /// Verifies inside `tx` that the lease is still ours, locking the job row
    /// until `tx` ends (a rescue cannot slip in before it commits) and
    /// extending the lease. A job that commits in several transactions (a pull,
    /// one per page) calls this first in each of them.
    pub async fn fence(&self, tx: &mut PgConnection) -> Result<(), JobError> {
        match store::jobs::extend_lease(&mut *tx, self.id, self.token, self.lease.as_secs_f64())
            .await?
        {
            true => Ok(()),
            false => Err(JobError::LeaseLost),
        }
    }

    /// Opens a sync transaction in one statement
    /// ([`store::jobs::open_sync_transaction`]): fenced as [`Job::fence`]
    /// (or completed, as [`Job::complete_in`], when `complete`: the job's
    /// last transaction), the connection's row share-locked and its
    /// `active` read, the transaction's writes marked as the worker's own,
    /// and a new sweep generation drawn when `draw_generation`.
    pub async fn open_sync(
        &self,
        tx: &mut PgConnection,
        complete: bool,
        draw_generation: bool,
    ) -> Result<SyncTransaction, JobError> {
        if complete {
            self.completing.store(true, Ordering::SeqCst);
        }
        let opened = store::jobs::open_sync_transaction(
            tx,
            self.id,
            self.token,
            self.lease.as_secs_f64(),
            self.connection,
            complete,
            draw_generation,
        )
        .await?;
        if !opened.ours {
            return Err(JobError::LeaseLost);
        }
        Ok(SyncTransaction {
            connection_active: opened.connection_active,
            generation: opened.generation,
            done: complete.then_some(Done(())),
        })
    }

    /// Marks the job succeeded inside `tx`, fenced: on `LeaseLost` the caller
    /// must roll `tx` back (dropping it does). The success counts once `tx`
    /// commits.
    pub async fn complete_in(&self, tx: &mut PgConnection) -> Result<Done, JobError> {
        self.completing.store(true, Ordering::SeqCst);
        match store::jobs::complete(&mut *tx, self.id, self.token).await? {
            true => Ok(Done(())),
            false => Err(JobError::LeaseLost),
        }
    }

    /// Completes a job that has no database effects of its own.
    pub async fn complete(&self, pool: &PgPool) -> Result<Done, JobError> {
        self.completing.store(true, Ordering::SeqCst);
        let ours = match &self.completions {
            Some(batcher) => batcher.complete(self.id, self.token).await,
            None => store::jobs::complete(pool, self.id, self.token).await,
        };
        match ours? {
            true => Ok(Done(())),
            false => Err(JobError::LeaseLost),
        }
    }

    /// Whether this run has started writing the job's completion. Set before
    /// the write, so a heartbeat that finds no lease afterwards knows the
    /// handler is at its very end: it either succeeded (the completion
    /// cleared the lease) or is about to report the lost lease itself.
    pub fn completion_started(&self) -> bool {
        self.completing.load(Ordering::SeqCst)
    }

    /// The claim token, for logs of lease trouble. Not a secret, but not the
    /// worker's name either.
    pub fn claim_token(&self) -> Uuid {
        self.token
    }
}

/// What became of a job after a failed run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Back in the queue (possibly folded into an equal queued job, `into`).
    Requeued {
        into: JobId,
        delay: Duration,
    },
    Dead,
    /// The lease was gone: nothing was written.
    LeaseLost,
}

/// What a rescue pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rescued {
    pub requeued: u64,
    pub dead: u64,
}

/// The delay before the retry that follows `failures` spent attempts (>= 1):
/// `base * 2^(failures-1)` plus up to as much again in jitter, at most an hour.
pub fn retry_delay(base: Duration, failures: u32) -> Duration {
    const MAX: Duration = Duration::from_secs(3600);
    let delay = backon::ExponentialBuilder::default()
        .with_min_delay(base)
        .with_factor(2.0)
        .with_max_delay(MAX)
        .with_jitter()
        .without_max_times()
        .build()
        .nth(failures.saturating_sub(1) as usize)
        .unwrap_or(MAX);
    delay.min(MAX)
}

/// The queue as a worker or an admin command sees it.
#[derive(Debug, Clone)]
pub struct Queue {
    pool: PgPool,
    settings: QueueSettings,
    completions: Arc<Completions>,
}

/// Group commit of [`Job::complete`] (jobs with no database effects of
/// their own): completions that arrive while one statement is on its way
/// go together in the next, each still fenced by its own claim token
/// ([`store::jobs::complete_many`]), so a busy worker spends one statement
/// and one commit on many completions and an idle one waits for nobody.
#[derive(Debug)]
struct Completions {
    pool: PgPool,
    pending: std::sync::Mutex<Pending>,
}

/// `Some(ours)`: written by the batch; `None`: the batch failed, try alone.
type Waiter = tokio::sync::oneshot::Sender<Option<bool>>;

#[derive(Debug, Default)]
struct Pending {
    jobs: Vec<(JobId, Uuid, Waiter)>,
    /// A flush task is running (it takes whatever is pending when it loops).
    flushing: bool,
}

impl Completions {
    async fn complete(self: &Arc<Self>, id: JobId, token: Uuid) -> Result<bool, StoreError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let start = {
            let mut pending = self.pending.lock().expect("completions lock");
            pending.jobs.push((id, token, tx));
            !std::mem::replace(&mut pending.flushing, true)
        };
        if start {
            // Its own task: a handler dropped mid-flush (lease lost,
            // shutdown) must not take the others' completions with it.
            tokio::spawn(self.clone().flush());
        }
        match rx.await {
            Ok(Some(ours)) => Ok(ours),
            // The batch failed (nothing of it was written: one statement),
            // or the flush task died with its runtime: complete alone, still
            // fenced, and report this job's own outcome or error.
            Ok(None) | Err(_) => store::jobs::complete(&self.pool, id, token).await,
        }
    }

    async fn flush(self: Arc<Self>) {
        loop {
            let batch = {
                let mut pending = self.pending.lock().expect("completions lock");
                if pending.jobs.is_empty() {
                    pending.flushing = false;
                    return;
                }
                std::mem::take(&mut pending.jobs)
            };
            let keys: Vec<(JobId, Uuid)> = batch.iter().map(|(id, t, _)| (*id, *t)).collect();
            match store::jobs::complete_many(&self.pool, &keys).await {
                Ok(done) => {
                    let done: std::collections::HashSet<JobId> = done.into_iter().collect();
                    for (id, _, waiter) in batch {
                        let _ = waiter.send(Some(done.contains(&id)));
                    }
                }
                Err(err) => {
                    tracing::debug!(error = %crate::text::chain(&err), "batched completion failed");
                    for (_, _, waiter) in batch {
                        let _ = waiter.send(None);
                    }
                }
            }
        }
    }
}

impl Queue {
    pub fn new(pool: PgPool, settings: QueueSettings) -> Self {
        Queue {
            completions: Arc::new(Completions {
                pool: pool.clone(),
                pending: std::sync::Mutex::new(Pending::default()),
            }),
            pool,
            settings,
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn settings(&self) -> &QueueSettings {
        &self.settings
    }

    /// Enqueues a job due at once, or returns the equal queued job (brought
    /// forward to now when `expedite`). Use inside a transaction to make the
    /// enqueue part of a larger change.
    pub async fn enqueue_in(
        conn: &mut PgConnection,
        kind: JobKind,
        connection: ConnectionId,
        appointment: Option<AppointmentId>,
        expedite: bool,
    ) -> Result<JobId, StoreError> {
        store::jobs::enqueue(conn, kind, connection, appointment, expedite)
            .await?
            .ok_or(StoreError::UnknownConnection(connection))
    }

    pub async fn enqueue(
        &self,
        kind: JobKind,
        connection: ConnectionId,
        appointment: Option<AppointmentId>,
        expedite: bool,
    ) -> Result<JobId, StoreError> {
        let mut conn = self.pool.acquire().await?;
        Self::enqueue_in(&mut conn, kind, connection, appointment, expedite).await
    }

    /// The first sync of a push-target connection: a push for each of the
    /// user's appointments no connection links yet. Returns how many.
    pub async fn enqueue_unlinked_pushes(
        conn: &mut PgConnection,
        user: UserId,
        connection: ConnectionId,
    ) -> Result<u64, StoreError> {
        store::jobs::enqueue_unlinked_pushes(conn, user, connection).await
    }

    /// A push of an appointment no connection links, on its owner's push
    /// target (when the owner has an active connection). Returns how many.
    pub async fn enqueue_owner_push(
        conn: &mut PgConnection,
        appointment: AppointmentId,
    ) -> Result<u64, StoreError> {
        store::jobs::enqueue_owner_push(conn, appointment).await
    }

    /// Drops the queued (and dead) pushes of `appointments`: their local
    /// change lost to Google's version, so there is nothing left to send.
    pub async fn cancel_queued_pushes(
        conn: &mut PgConnection,
        appointments: &[AppointmentId],
    ) -> Result<(), StoreError> {
        store::jobs::cancel_queued_pushes(conn, appointments).await
    }

    /// Claims the next due job of `region` for `worker` (host:pid), if any.
    pub async fn claim(&self, region: &str, worker: &str) -> Result<Option<Job>, StoreError> {
        Ok(self.claim_batch(region, worker, 1).await?.pop())
    }

    /// Claims up to `limit` due jobs of `region` in one round trip, at most
    /// one per connection, in claim order (priority, then `run_at`).
    pub async fn claim_batch(
        &self,
        region: &str,
        worker: &str,
        limit: usize,
    ) -> Result<Vec<Job>, StoreError> {
        let rows = store::jobs::claim_batch(
            &self.pool,
            region,
            &JobKind::ALL,
            worker,
            self.settings.lease.as_secs_f64(),
            i64::try_from(limit).unwrap_or(i64::MAX),
        )
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| Job {
                id: row.id,
                kind: row.kind,
                connection: row.connection_id,
                appointment: row.appointment_id,
                region: row.region,
                attempt: row.attempts + 1,
                prelude: Arc::new(Prelude {
                    connection: row.connection,
                    push: row.push,
                }),
                token: row.claim_token,
                lease: self.settings.lease,
                completing: Arc::new(AtomicBool::new(false)),
                completions: Some(self.completions.clone()),
            })
            .collect())
    }

    /// In how many seconds the next claimable job of `region` that is not
    /// due yet becomes due, if any is queued.
    pub async fn next_due_in(&self, region: &str) -> Result<Option<f64>, StoreError> {
        store::jobs::next_due_in(&self.pool, region).await
    }

    /// Extends the job's lease. `Err(LeaseLost)` when it is gone.
    pub async fn heartbeat(&self, job: &Job) -> Result<(), JobError> {
        match store::jobs::extend_lease(&self.pool, job.id, job.token, job.lease.as_secs_f64())
            .await?
        {
            true => Ok(()),
            false => Err(JobError::LeaseLost),
        }
    }

    /// Records a failed run as `error` says (fenced).
    pub async fn fail(&self, job: &Job, error: &JobError) -> Result<Transition, StoreError> {
        if matches!(error, JobError::LeaseLost) {
            return Ok(Transition::LeaseLost);
        }
        let mut tx = crate::store::begin(&self.pool).await?;
        let Some(attempts) = store::jobs::lock_running(&mut tx, job.id, job.token).await? else {
            return Ok(Transition::LeaseLost);
        };
        let message = crate::text::error_text(&error.reason());
        // Failures belong to the connection too: its last error, since when it
        // has been failing and, for pulls, its own back-off, so the scheduler
        // does not replace a failing pull with a new one every tick.
        let schedule = match error {
            JobError::Backoff { schedule, .. } => Some(*schedule),
            JobError::Retry(_) | JobError::Fatal(_) if job.kind.is_pull() => {
                Some(BackoffSchedule {
                    first: self.settings.retry_base.max(Duration::from_secs(1)),
                    cap: self.settings.connection_backoff_cap,
                })
            }
            _ => None,
        };
        let connection_delay = match (error, schedule) {
            (JobError::Snooze { .. }, _) => None,
            (_, schedule) => Some(
                store::connections::record_failure(
                    &mut tx,
                    job.connection,
                    &message,
                    schedule.map(|s| store::connections::Backoff {
                        first: s.first,
                        cap: s.cap,
                    }),
                )
                .await?,
            ),
        };
        let transition = match error {
            JobError::Backoff { .. } => {
                let delay = connection_delay
                    .flatten()
                    .unwrap_or(BackoffSchedule::OPERATOR.first);
                let into = store::jobs::requeue(
                    &mut tx,
                    job.id,
                    delay.as_secs_f64(),
                    attempts,
                    Some(&message),
                )
                .await?;
                Transition::Requeued { into, delay }
            }
            JobError::Snooze { after, .. } => {
                let into = store::jobs::requeue(
                    &mut tx,
                    job.id,
                    after.as_secs_f64(),
                    attempts,
                    Some(&message),
                )
                .await?;
                Transition::Requeued {
                    into,
                    delay: *after,
                }
            }
            JobError::Retry(_) if attempts + 1 < self.settings.max_attempts => {
                let delay = retry_delay(self.settings.retry_base, (attempts + 1) as u32);
                let into = store::jobs::requeue(
                    &mut tx,
                    job.id,
                    delay.as_secs_f64(),
                    attempts + 1,
                    Some(&message),
                )
                .await?;
                Transition::Requeued { into, delay }
            }
            JobError::Retry(_) | JobError::Fatal(_) => {
                store::jobs::bury(&mut tx, job.id, attempts + 1, &message).await?;
                Transition::Dead
            }
            JobError::LeaseLost => unreachable!("handled above"),
        };
        tx.commit().await?;
        Ok(transition)
    }

    /// Gives a job back unfinished (shutdown), due at once, no attempt spent.
    pub async fn release(&self, job: &Job) -> Result<Transition, StoreError> {
        let mut tx = crate::store::begin(&self.pool).await?;
        let Some(attempts) = store::jobs::lock_running(&mut tx, job.id, job.token).await? else {
            return Ok(Transition::LeaseLost);
        };
        let into = store::jobs::requeue(&mut tx, job.id, 0.0, attempts, None).await?;
        tx.commit().await?;
        Ok(Transition::Requeued {
            into,
            delay: Duration::ZERO,
        })
    }

    /// Puts the running jobs of `region` whose lease has passed back in the
    /// queue (an attempt spent), or buries them when that was their last.
    pub async fn rescue(&self, region: &str) -> Result<Rescued, StoreError> {
        let mut tx = crate::store::begin(&self.pool).await?;
        let mut rescued = Rescued::default();
        for expired in store::jobs::lock_expired(&mut tx, region).await? {
            let (id, attempts) = (expired.id, expired.attempts);
            let message = format!(
                "lease of {} expired before the job finished",
                expired.locked_by.as_deref().unwrap_or("a worker")
            );
            // `reason`, not `message`: a field named `message` would be a
            // second `message` key beside the event's own in JSON logs.
            tracing::warn!(job = %id, reason = %message, "rescuing job");
            if attempts + 1 < self.settings.max_attempts {
                store::jobs::requeue(&mut tx, id, 0.0, attempts + 1, Some(&message)).await?;
                rescued.requeued += 1;
            } else {
                store::jobs::bury(&mut tx, id, attempts + 1, &message).await?;
                rescued.dead += 1;
            }
        }
        tx.commit().await?;
        Ok(rescued)
    }

    /// Requeues dead jobs (of one user, when given). Returns how many.
    pub async fn retry_dead(&self, user: Option<UserId>) -> Result<u64, StoreError> {
        store::jobs::retry_dead(&self.pool, user).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_doubles_with_jitter_and_caps_at_an_hour() {
        let base = Duration::from_secs(5);
        for failures in 1..=4u32 {
            let floor = base * 2u32.pow(failures - 1);
            for _ in 0..50 {
                let d = retry_delay(base, failures);
                assert!(d >= floor && d < floor * 2, "{failures}: {d:?}");
            }
        }
        assert_eq!(retry_delay(base, 40), Duration::from_secs(3600));
        assert_eq!(retry_delay(Duration::ZERO, 3), Duration::ZERO);
        // Jitter: not every delay is the same.
        let samples: std::collections::HashSet<_> = (0..20).map(|_| retry_delay(base, 3)).collect();
        assert!(samples.len() > 1);
    }
}
