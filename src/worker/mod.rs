//! The worker runtime: the claim loop, the scheduler tick, concurrency,
//! heartbeats, graceful shutdown, and the HTTP side ([`http`], with the
//! authenticated catch-up route in [`api`]).
//!
//! - **Claim loop.** At most `PLANSYNC_CONCURRENCY` jobs in flight (a
//!   semaphore); one claim takes as many jobs as there are free slots (at
//!   most [`MAX_CLAIM_BATCH`]). An idle worker sleeps until a `NOTIFY` on
//!   [`store::jobs::NOTIFY_CHANNEL`] (sent by every enqueue through the queue
//!   API), a finished job, the next queued job's due time, or at most
//!   [`IDLE_POLL`] — the host triggers do not notify, to keep a global lock
//!   out of the host's commits. A look at an empty queue is one index probe.
//! - **Scheduler tick** (every few seconds, and at the start of a `--once`
//!   pass): rescue expired leases of the region, enqueue a pull, due at once,
//!   for each due connection ([`store::jobs::schedule_pulls`], which reads
//!   only the connections whose polling time has come: never pulled, or
//!   not since its polling slot began; slots are `PLANSYNC_POLL_INTERVAL_SECS`
//!   long, shifted per connection by a stable offset;
//!   `PLANSYNC_POLL_BACKSTOP_SECS` for a connection with a live notification
//!   channel), channel upkeep (watch jobs, see [`crate::sync::watch`]), and
//!   prune finished jobs older than an hour. The scheduler never postpones a
//!   job it enqueues.
//! - **Each job** runs in a `job` tracing span (id, kind, connection,
//!   attempt) with a heartbeat extending its lease every third of it; when a
//!   heartbeat finds the lease gone, the job's token is cancelled, the handler
//!   dropped, and nothing more is written — unless the handler had started
//!   writing its completion, which clears the lease too (a job that just
//!   succeeded is not reported as having lost its lease).
//! - **Google budget.** With a [`Quota`] ([`Worker::with_quota`]) the tick
//!   stretches the polling interval so that polls fit in
//!   `PLANSYNC_GOOGLE_POLL_SHARE` of the project budget
//!   ([`crate::quota::effective_poll_interval`]), and a heartbeat every
//!   [`HEARTBEAT`] writes this worker's row in `plansync.workers` (calls per
//!   minute, interval) and hands the live worker count to the quota's
//!   fallback share.
//! - **Shutdown.** When the shutdown token is cancelled (SIGTERM/SIGINT), the
//!   worker stops claiming, lets in-flight jobs finish within
//!   `PLANSYNC_SHUTDOWN_GRACE_SECS`, then stops the rest and releases their
//!   leases (back to the queue, no attempt spent).

pub mod api;
pub mod gauges;
pub mod handler;
pub mod http;
pub mod notifications;
pub mod setup;

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

pub use handler::{JobContext, JobHandler, SyncJobs};

use crate::config::{QueueSettings, SyncSettings, WorkerSettings};
use crate::queue::{Job, JobError, Queue, Transition};
use crate::quota::{self, Quota};
use crate::store::{self, StoreError};

/// The Prometheus exporter: installs the recorder and describes every family
/// whose name [`crate::metrics`] holds (re-exported here).
pub mod metric {
    use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

    pub use crate::metrics::*;
    use crate::queue::JobKind;
    use crate::store::conflicts::{ConflictKind, Winner};

    /// Installs the process-wide Prometheus recorder, with buckets for every
    /// `_seconds` histogram so they render as histograms (aggregatable across
    /// replicas) rather than summaries, and registers every family.
    pub fn install() -> Result<PrometheusHandle, BuildError> {
        let handle = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS)?
            .install_recorder()?;
        describe();
        Ok(handle)
    }

    /// Registers descriptions with the installed recorder and makes every
    /// counter and gauge family visible at zero, so dashboards and alerts
    /// find them before the first event.
    pub fn describe() {
        use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
        describe_counter!(CLAIMED, "Jobs claimed, by kind");
        describe_counter!(
            JOBS,
            "Finished job runs, by kind and outcome (succeeded, requeued, dead, abandoned)"
        );
        describe_histogram!(
            DURATION,
            Unit::Seconds,
            "Run time of a job, by kind and outcome"
        );
        describe_counter!(GOOGLE_REQUESTS, "Google calls, by operation and outcome");
        describe_histogram!(
            GOOGLE_DURATION,
            Unit::Seconds,
            "Google call latency, by operation"
        );
        describe_gauge!(QUEUE_DEPTH, "Queued jobs (whole fleet)");
        describe_gauge!(
            QUEUE_LAG,
            Unit::Seconds,
            "How long the oldest claimable due job has waited past its run time"
        );
        describe_gauge!(RUNNING, "Jobs running (whole fleet)");
        describe_gauge!(OUTBOX_BACKLOG, "Deltas written but not yet published");
        describe_gauge!(
            OUTBOX_AGE,
            Unit::Seconds,
            "Age of the oldest unpublished delta"
        );
        describe_counter!(
            DELTAS_PUBLISHED,
            "Deltas published to Redis, by item type and action"
        );
        describe_counter!(CONFLICTS, "Conflicts recorded, by winner and kind");
        describe_counter!(SKIPPED_EVENTS, "Google events set aside as unreadable");
        describe_gauge!(
            CHANNELS_LIVE,
            "Live Google notification channels of the region"
        );
        describe_counter!(
            NOTIFICATIONS,
            "Google notifications received, by outcome (accepted, sync, unknown_channel, \
             bad_token, stale, unavailable)"
        );
        for outcome in [
            "accepted",
            "sync",
            "unknown_channel",
            "bad_token",
            "stale",
            "unavailable",
        ] {
            metrics::counter!(NOTIFICATIONS, "outcome" => outcome).increment(0);
        }
        crate::sync::watch::metric::describe();
        describe_gauge!(REDIS_UP, "1 when Redis answered this replica's last probe");

        for kind in JobKind::ALL {
            metrics::counter!(CLAIMED, "kind" => kind.as_str()).increment(0);
            for outcome in outcome::ALL {
                metrics::counter!(JOBS, "kind" => kind.as_str(), "outcome" => outcome).increment(0);
            }
        }
        metrics::counter!(SKIPPED_EVENTS).increment(0);
        for winner in Winner::ALL {
            for kind in ConflictKind::ALL {
                metrics::counter!(CONFLICTS, "winner" => winner.as_str(), "kind" => kind.as_str())
                    .increment(0);
            }
        }
        for (item_type, action) in [
            ("appointment", "created"),
            ("appointment", "updated"),
            ("appointment", "deleted"),
            ("plan", "updated"),
        ] {
            metrics::counter!(DELTAS_PUBLISHED, "item_type" => item_type, "action" => action)
                .increment(0);
        }
        for gauge in [
            QUEUE_DEPTH,
            QUEUE_LAG,
            RUNNING,
            OUTBOX_BACKLOG,
            OUTBOX_AGE,
            CHANNELS_LIVE,
            REDIS_UP,
        ] {
            metrics::gauge!(gauge).set(0.0);
        }
    }
}

/// How often `run` ticks the scheduler and the rescue (at most).
const TICK: Duration = Duration::from_secs(5);
/// The longest an idle worker waits before looking for due jobs again, when
/// no `NOTIFY`, finished job or known due time wakes it first: the host's
/// triggers do not notify, so their pushes are found by this poll. Each look
/// is one probe of the claimable-jobs index, whatever the queue holds.
pub const IDLE_POLL: Duration = Duration::from_secs(2);
/// The most jobs one claim takes (the batch is also bounded by the free
/// concurrency slots).
pub const MAX_CLAIM_BATCH: usize = 32;
/// How long a busy worker waits for more free slots before a claim.
const CLAIM_GATHER: Duration = Duration::from_millis(5);
/// Connections one scheduler statement looks at; a tick repeats it until
/// fewer come back.
const SCHEDULE_BATCH: i64 = 10_000;
/// Prune statements one tick runs at most (each deletes up to 20,000 rows).
const PRUNE_ROUNDS: usize = 10;
/// Finished jobs are kept this long (for `resync --wait` and inspection).
const KEEP_FINISHED: Duration = Duration::from_secs(3600);
/// How often a running worker writes its heartbeat row (well inside
/// [`store::workers::LIVE_WINDOW_SECS`]).
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// Below this many live channels the tick recounts them every time.
const FEW_CHANNELS: i64 = 10_000;
/// How often the tick recounts the connections to stretch polling.
const RECOUNT_CONNECTIONS: Duration = Duration::from_secs(60);

/// Everything the runtime needs to know.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub region: String,
    pub concurrency: usize,
    pub shutdown_grace: Duration,
    pub poll_interval: Duration,
    /// Polling interval of a connection with a live notification channel.
    pub poll_backstop: Duration,
    /// `PLANSYNC_WEBHOOK_URL`: the scheduler keeps channels open to it (or,
    /// unset, stops those left).
    pub webhook_url: Option<String>,
    pub queue: QueueSettings,
    /// `host:pid`, shown as `lockedBy`.
    pub worker_id: String,
}

impl WorkerConfig {
    pub fn new(worker: &WorkerSettings, sync: &SyncSettings, queue: &QueueSettings) -> Self {
        WorkerConfig {
            region: worker.region.clone(),
            concurrency: worker.concurrency,
            shutdown_grace: worker.shutdown_grace,
            poll_interval: sync.poll_interval,
            poll_backstop: sync.poll_backstop,
            webhook_url: worker.webhook_url.clone(),
            queue: queue.clone(),
            worker_id: default_worker_id(),
        }
    }
}

/// `host:pid`.
pub fn default_worker_id() -> String {
    format!(
        "{}:{}",
        gethostname::gethostname().to_string_lossy(),
        std::process::id()
    )
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How one job run ended, from the worker's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    Succeeded,
    Requeued,
    Dead,
    /// Lease lost or released at shutdown: nothing recorded by this run.
    Abandoned,
}

/// What a `--once` pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassReport {
    pub scheduled: u64,
    pub rescued: u64,
    pub ran: u64,
    pub succeeded: u64,
    pub failed: u64,
}

pub struct Worker<H> {
    inner: Arc<Inner<H>>,
}

struct Inner<H> {
    queue: Queue,
    config: WorkerConfig,
    handler: H,
    /// Woken when a job finishes, so a job of the same connection that waited
    /// for it is claimed without waiting for the idle poll.
    finished: Notify,
    /// The Google budget; `None`: no stretching, no fallback share to feed.
    quota: Option<Quota>,
    /// The polling interval the last tick used (seconds).
    poll_interval_secs: AtomicU64,
    /// When the connections were last counted for the interval: counting
    /// scans the connections, so it is redone at most every
    /// [`RECOUNT_CONNECTIONS`], not every tick.
    counted_at: std::sync::Mutex<Option<Instant>>,
    /// When the live channels were last counted (the gauge), and how many.
    channels_counted: std::sync::Mutex<Option<(Instant, i64)>>,
}

impl<H> Clone for Worker<H> {
    fn clone(&self) -> Self {
        Worker {
            inner: self.inner.clone(),
        }
    }
}

impl<H: JobHandler> Worker<H> {
    pub fn new(pool: PgPool, config: WorkerConfig, handler: H) -> Self {
        Worker {
            inner: Arc::new(Inner {
                queue: Queue::new(pool, config.queue.clone()),
                poll_interval_secs: AtomicU64::new(config.poll_interval.as_secs()),
                config,
                handler,
                finished: Notify::new(),
                quota: None,
                counted_at: std::sync::Mutex::new(None),
                channels_counted: std::sync::Mutex::new(None),
            }),
        }
    }

    /// The worker's Google budget (the same [`Quota`] its Google client draws
    /// on). Call before cloning the worker.
    pub fn with_quota(mut self, quota: Quota) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("with_quota is called before the worker is cloned")
            .quota = Some(quota);
        self
    }

    /// The polling interval the last tick used: `PLANSYNC_POLL_INTERVAL_SECS`,
    /// or longer when the budget stretched it.
    pub fn poll_interval(&self) -> Duration {
        Duration::from_secs(self.inner.poll_interval_secs.load(Ordering::Relaxed))
    }

    /// The interval polls must keep now: the configured one, stretched to the
    /// budget's poll share when there are too many connections for it.
    async fn effective_poll_interval(&self) -> Result<Duration, StoreError> {
        let base = self.inner.config.poll_interval.max(Duration::from_secs(1));
        let Some(quota) = &self.inner.quota else {
            return Ok(base);
        };
        let fresh = self
            .inner
            .counted_at
            .lock()
            .expect("count lock")
            .is_some_and(|at| at.elapsed() < RECOUNT_CONNECTIONS);
        if fresh {
            return Ok(self.poll_interval());
        }
        let connections = store::jobs::pollable_connections(self.inner.queue.pool()).await?;
        *self.inner.counted_at.lock().expect("count lock") = Some(Instant::now());
        let interval = quota::effective_poll_interval(base, connections, quota.settings());
        if interval > base && interval.as_secs() != self.poll_interval().as_secs() {
            tracing::warn!(
                connections,
                interval_secs = interval.as_secs(),
                configured_secs = base.as_secs(),
                "polling stretched to fit PLANSYNC_GOOGLE_POLL_SHARE of the Google budget"
            );
        }
        self.inner
            .poll_interval_secs
            .store(interval.as_secs(), Ordering::Relaxed);
        metrics::gauge!(quota::metric::POLL_INTERVAL).set(interval.as_secs_f64());
        Ok(interval)
    }

    /// Writes this worker's heartbeat row and hands the live worker count to
    /// the quota's fallback share.
    pub async fn heartbeat(&self) -> Result<i64, StoreError> {
        let cfg = &self.inner.config;
        let used = self.inner.quota.as_ref().map_or(0, Quota::used_per_min);
        let live = store::workers::beat(
            self.inner.queue.pool(),
            &cfg.worker_id,
            &cfg.region,
            i32::try_from(used).unwrap_or(i32::MAX),
            i32::try_from(self.poll_interval().as_secs()).ok(),
        )
        .await?;
        if let Some(quota) = &self.inner.quota {
            quota.set_live_workers(live);
        }
        Ok(live)
    }

    async fn leave(&self) {
        let cfg = &self.inner.config;
        if let Err(err) = store::workers::leave(self.inner.queue.pool(), &cfg.worker_id).await {
            tracing::debug!(error = %crate::text::chain(&err), "removing the heartbeat row failed; it ages out");
        }
    }

    pub fn queue(&self) -> &Queue {
        &self.inner.queue
    }

    /// One scheduler tick: rescue, schedule due pulls, channel upkeep, prune.
    pub async fn tick(&self) -> Result<(u64, u64), StoreError> {
        let cfg = &self.inner.config;
        let pool = self.inner.queue.pool();
        let rescued = self.inner.queue.rescue(&cfg.region).await?;
        let interval = self.effective_poll_interval().await?.as_secs().max(1) as i64;
        // Without a webhook no channel is kept open, so nothing backs off; a
        // budget that stretches polling beyond the backstop stretches it too.
        let backstop = cfg
            .webhook_url
            .as_ref()
            .map(|_| (cfg.poll_backstop.as_secs().max(1) as i64).max(interval));
        let (mut scheduled, mut upkeep) = (0, 0);
        loop {
            let pass = store::jobs::schedule_pulls(
                pool,
                &cfg.region,
                interval,
                backstop,
                cfg.webhook_url.as_deref(),
                SCHEDULE_BATCH,
            )
            .await?;
            scheduled += pass.enqueued;
            upkeep += pass.watches;
            if pass.examined < SCHEDULE_BATCH as u64 {
                break;
            }
        }
        upkeep += self.channel_upkeep().await?;
        let corrected = store::jobs::recheck_blocked(pool).await?;
        if corrected > 0 {
            tracing::info!(
                jobs = corrected,
                "jobs moved after their connection changed state during their enqueue"
            );
        }
        for _ in 0..PRUNE_ROUNDS {
            let pruned = store::jobs::prune(
                pool,
                KEEP_FINISHED.as_secs_f64(),
                self.inner.queue.settings().dead_retention.as_secs_f64(),
            )
            .await?;
            if pruned < 10_000 {
                break;
            }
        }
        if scheduled > 0 || upkeep > 0 {
            tracing::debug!(scheduled, upkeep, "scheduled pulls and channel upkeep");
        }
        Ok((scheduled, rescued.requeued + rescued.dead))
    }

    /// Watch jobs for connections whose channels need opening, renewing or
    /// stopping; the refresh tokens of disconnected connections whose stop
    /// will not run any more; the live-channel gauge. Returns the watch jobs
    /// scheduled.
    async fn channel_upkeep(&self) -> Result<u64, StoreError> {
        let cfg = &self.inner.config;
        let pool = self.inner.queue.pool();
        let scheduled =
            store::channels::schedule_upkeep(pool, &cfg.region, cfg.webhook_url.as_deref()).await?;
        let settled = store::channels::settle_abandoned(pool, &cfg.region).await?;
        if settled > 0 {
            tracing::warn!(
                connections = settled,
                "gave up stopping the channels of disconnected connections; tokens forgotten"
            );
        }
        store::channels::prune(pool).await?;
        // Counting reads every live channel: every tick while they are few,
        // once a minute when they are many.
        let recount = match *self.inner.channels_counted.lock().expect("count lock") {
            Some((at, live)) => live < FEW_CHANNELS || at.elapsed() >= RECOUNT_CONNECTIONS,
            None => true,
        };
        if recount {
            let live = store::channels::count_live(pool, &cfg.region).await?;
            *self.inner.channels_counted.lock().expect("count lock") = Some((Instant::now(), live));
            metrics::gauge!(metric::CHANNELS_LIVE).set(live as f64);
        }
        Ok(scheduled)
    }

    /// One pass (`run --once`): a tick, then every due job of the region,
    /// including follow-ups that become due during the pass, until none is
    /// left to claim and none is running.
    pub async fn run_once(&self) -> Result<PassReport, WorkerError> {
        // Counted among the live workers for the pass (the fallback share).
        self.heartbeat().await?;
        let (scheduled, rescued) = self.tick().await?;
        let mut report = PassReport {
            scheduled,
            rescued,
            ..PassReport::default()
        };
        let never = CancellationToken::new();
        let mut running = JoinSet::new();
        loop {
            while running.len() < self.inner.config.concurrency {
                let free = self.inner.config.concurrency - running.len();
                let jobs = self.claim(free.min(MAX_CLAIM_BATCH)).await?;
                if jobs.is_empty() {
                    break;
                }
                for job in jobs {
                    report.ran += 1;
                    running.spawn(self.clone().execute(job, never.clone()));
                }
            }
            let Some(done) = running.join_next().await else {
                break;
            };
            match done {
                Ok(RunOutcome::Succeeded) => report.succeeded += 1,
                Ok(_) => report.failed += 1,
                Err(join) => {
                    tracing::error!(error = %join, "job task panicked");
                    report.failed += 1;
                }
            }
        }
        self.leave().await;
        Ok(report)
    }

    /// Runs until `shutdown` is cancelled, then drains (see the module doc).
    pub async fn run(&self, shutdown: CancellationToken) -> Result<(), WorkerError> {
        let cfg = &self.inner.config;
        let tracker = TaskTracker::new();
        let hard_stop = CancellationToken::new();
        let slots = Arc::new(Semaphore::new(cfg.concurrency));
        let mut listener = self.listen().await;
        if let Err(err) = self.heartbeat().await {
            tracing::warn!(error = %crate::text::chain(&err), "worker heartbeat failed");
        }
        let beater = self.clone();
        let beat_stop = shutdown.clone();
        tracker.spawn(async move {
            loop {
                tokio::select! {
                    _ = beat_stop.cancelled() => break,
                    _ = tokio::time::sleep(HEARTBEAT) => {}
                }
                if let Err(err) = beater.heartbeat().await {
                    tracing::warn!(error = %crate::text::chain(&err), "worker heartbeat failed");
                }
            }
        });

        let ticker = self.clone();
        let tick_stop = shutdown.clone();
        let tick_every = TICK.min(cfg.poll_interval);
        tracker.spawn(async move {
            loop {
                if let Err(err) = ticker.tick().await {
                    tracing::warn!(error = %crate::text::chain(&err), "scheduler tick failed");
                }
                tokio::select! {
                    _ = tick_stop.cancelled() => break,
                    _ = tokio::time::sleep(tick_every) => {}
                }
            }
        });

        tracing::info!(region = %cfg.region, worker = %cfg.worker_id, "worker started");
        loop {
            let first: OwnedSemaphorePermit = tokio::select! {
                _ = shutdown.cancelled() => break,
                permit = slots.clone().acquire_owned() => permit.expect("semaphore never closes"),
            };
            // One claim takes as many jobs as there are free slots. While
            // jobs run, slots free up one by one: wait a moment for half of
            // them rather than spend a claim on each.
            let mut permits = vec![first];
            let target = (cfg.concurrency / 2).clamp(1, MAX_CLAIM_BATCH);
            let gather_until = tokio::time::Instant::now() + CLAIM_GATHER;
            loop {
                while permits.len() < MAX_CLAIM_BATCH {
                    match slots.clone().try_acquire_owned() {
                        Ok(permit) => permits.push(permit),
                        Err(_) => break,
                    }
                }
                if permits.len() >= target {
                    break;
                }
                tokio::select! {
                    _ = tokio::time::sleep_until(gather_until) => break,
                    permit = slots.clone().acquire_owned() => {
                        permits.push(permit.expect("semaphore never closes"));
                    }
                }
            }
            let wanted = permits.len();
            match self.claim(wanted).await {
                Ok(jobs) if !jobs.is_empty() => {
                    let all = jobs.len() == wanted;
                    for job in jobs {
                        let permit = permits.pop().expect("one permit per claimed job");
                        let worker = self.clone();
                        let stop = hard_stop.clone();
                        tracker.spawn(async move {
                            worker.execute(job, stop).await;
                            drop(permit);
                        });
                    }
                    // A full batch: there may be more. A partial one: the
                    // claimable jobs are taken for now; wait for a wake-up.
                    if all {
                        continue;
                    }
                }
                Ok(_) => {}
                Err(err) => {
                    tracing::warn!(error = %crate::text::chain(&err), "claiming jobs failed");
                    drop(permits);
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(IDLE_POLL) => {}
                    }
                    continue;
                }
            }
            drop(permits);
            let wait = self.idle_wait().await;
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.inner.finished.notified() => {}
                _ = wait_notification(&mut listener) => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }

        tracing::info!(
            in_flight = tracker.len(),
            grace_secs = cfg.shutdown_grace.as_secs_f64(),
            "shutting down: no more claims"
        );
        tracker.close();
        if tokio::time::timeout(cfg.shutdown_grace, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                in_flight = tracker.len(),
                "grace period over: stopping the remaining jobs and releasing their leases"
            );
            hard_stop.cancel();
            // Releasing is one statement per job; bounded all the same.
            if tokio::time::timeout(Duration::from_secs(15), tracker.wait())
                .await
                .is_err()
            {
                tracing::error!("some jobs did not stop; their leases will expire");
            }
        }
        self.leave().await;
        tracing::info!("worker stopped");
        Ok(())
    }

    async fn claim(&self, limit: usize) -> Result<Vec<Job>, StoreError> {
        let cfg = &self.inner.config;
        let jobs = self
            .inner
            .queue
            .claim_batch(&cfg.region, &cfg.worker_id, limit)
            .await?;
        for job in &jobs {
            metrics::counter!(metric::CLAIMED, "kind" => job.kind.as_str()).increment(1);
        }
        Ok(jobs)
    }

    /// How long an idle worker sleeps unless woken: until the next queued
    /// job is due (retries, snoozes and renewals are not announced), at most
    /// [`IDLE_POLL`].
    async fn idle_wait(&self) -> Duration {
        match self
            .inner
            .queue
            .next_due_in(&self.inner.config.region)
            .await
        {
            Ok(Some(secs)) if secs > 0.0 => Duration::from_secs_f64(secs).min(IDLE_POLL),
            _ => IDLE_POLL,
        }
    }

    async fn listen(&self) -> Option<PgListener> {
        let mut listener = match PgListener::connect_with(self.inner.queue.pool()).await {
            Ok(l) => l,
            Err(err) => {
                tracing::warn!(error = %crate::text::chain(&err), "LISTEN unavailable; polling only");
                return None;
            }
        };
        match listener.listen(store::jobs::NOTIFY_CHANNEL).await {
            Ok(()) => Some(listener),
            Err(err) => {
                tracing::warn!(error = %crate::text::chain(&err), "LISTEN unavailable; polling only");
                None
            }
        }
    }

    /// Runs one claimed job to its end: handler, heartbeat, and the fenced
    /// transition that records how it went.
    async fn execute(self, job: Job, hard_stop: CancellationToken) -> RunOutcome {
        let span = tracing::info_span!(
            "job",
            job = %job.id,
            kind = %job.kind,
            connection = %job.connection,
            attempt = job.attempt,
        );
        async move {
            let outcome = self.execute_inner(&job, hard_stop).await;
            self.inner.finished.notify_one();
            outcome
        }
        .instrument(span)
        .await
    }

    async fn execute_inner(&self, job: &Job, hard_stop: CancellationToken) -> RunOutcome {
        let started = Instant::now();
        let outcome = self.run_job(job, hard_stop).await;
        let label = match outcome {
            RunOutcome::Succeeded => metric::outcome::SUCCEEDED,
            RunOutcome::Requeued => metric::outcome::REQUEUED,
            RunOutcome::Dead => metric::outcome::DEAD,
            RunOutcome::Abandoned => metric::outcome::ABANDONED,
        };
        let kind = job.kind.as_str();
        metrics::counter!(metric::JOBS, "kind" => kind, "outcome" => label).increment(1);
        metrics::histogram!(metric::DURATION, "kind" => kind, "outcome" => label)
            .record(started.elapsed().as_secs_f64());
        outcome
    }

    async fn run_job(&self, job: &Job, hard_stop: CancellationToken) -> RunOutcome {
        let inner = &self.inner;
        let cancel = hard_stop.child_token();
        let lease_lost = Arc::new(AtomicBool::new(false));
        let heartbeat_done = CancellationToken::new();
        let heartbeat = tokio::spawn(
            heartbeat(
                inner.queue.clone(),
                job.clone(),
                cancel.clone(),
                heartbeat_done.clone(),
                lease_lost.clone(),
            )
            .in_current_span(),
        );

        tracing::debug!("job started");
        let started = Instant::now();
        let ctx = JobContext {
            pool: inner.queue.pool().clone(),
            cancel: cancel.clone(),
        };
        let result = tokio::select! {
            biased;
            _ = cancel.cancelled() => None,
            result = AssertUnwindSafe(inner.handler.run(&ctx, job)).catch_unwind() => Some(
                // A panicking handler is a bug, not a reason to leave the job
                // running until its lease expires.
                result.unwrap_or_else(|panic| Err(JobError::retry(format!(
                    "the job handler panicked: {}",
                    panic_message(&panic)
                )))),
            ),
        };
        heartbeat_done.cancel();
        let _ = heartbeat.await;

        let error = match result {
            Some(Ok(_done)) => {
                tracing::info!(
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "job succeeded"
                );
                return RunOutcome::Succeeded;
            }
            Some(Err(error)) => error,
            None if lease_lost.load(Ordering::SeqCst) => {
                tracing::warn!("heartbeat found the lease gone; the job stopped and wrote nothing");
                return RunOutcome::Abandoned;
            }
            None => {
                return match inner.queue.release(job).await {
                    Ok(Transition::Requeued { .. }) => {
                        tracing::info!("job stopped at shutdown; lease released");
                        RunOutcome::Abandoned
                    }
                    Ok(_) => RunOutcome::Abandoned,
                    Err(err) => {
                        tracing::error!(error = %crate::text::chain(&err), "releasing the lease failed; it will expire");
                        RunOutcome::Abandoned
                    }
                };
            }
        };
        match inner.queue.fail(job, &error).await {
            Ok(Transition::Requeued { into, delay }) => {
                tracing::warn!(
                    error = %error.reason(),
                    retry_in_secs = delay.as_secs_f64(),
                    requeued_as = %into,
                    "job failed; requeued"
                );
                RunOutcome::Requeued
            }
            Ok(Transition::Dead) => {
                tracing::error!(error = %error.reason(), "job failed; dead");
                RunOutcome::Dead
            }
            Ok(Transition::LeaseLost) => {
                tracing::warn!("lease lost: the job stopped and wrote nothing");
                RunOutcome::Abandoned
            }
            Err(err) => {
                tracing::error!(
                    error = %crate::text::chain(&err),
                    job_error = %error.reason(),
                    "recording the failure failed; the lease will expire and the job be rescued"
                );
                RunOutcome::Abandoned
            }
        }
    }
}

/// Extends the lease every third of it until `done`. On a lost lease it
/// marks `lost` and cancels the job, unless the handler has started writing
/// its completion (which clears the lease too): then the handler is at its
/// very end and reports how it went itself, so the heartbeat just stops.
async fn heartbeat(
    queue: Queue,
    job: Job,
    cancel: CancellationToken,
    done: CancellationToken,
    lost: Arc<AtomicBool>,
) {
    let every = queue.settings().lease / 3;
    loop {
        tokio::select! {
            _ = done.cancelled() => return,
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        match queue.heartbeat(&job).await {
            Ok(()) => {}
            Err(JobError::LeaseLost) if job.completion_started() => return,
            Err(JobError::LeaseLost) => {
                lost.store(true, Ordering::SeqCst);
                cancel.cancel();
                return;
            }
            // The database is unreachable: keep trying; the lease holds until
            // it expires, and a rescue after that fences us out.
            Err(err) => tracing::warn!(error = %crate::text::chain(&err), "heartbeat failed"),
        }
    }
}

async fn wait_notification(listener: &mut Option<PgListener>) {
    match listener {
        Some(l) => {
            if let Err(err) = l.recv().await {
                tracing::debug!(error = %crate::text::chain(&err), "LISTEN connection lost; sqlx reconnects");
            }
        }
        None => std::future::pending().await,
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}
