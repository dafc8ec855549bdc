//! Metric names (Prometheus) and their label words, recorded through the
//! `metrics` facade by every module that counts something. A neutral module:
//! it depends on nothing, so recording a metric never ties a module to the
//! worker runtime, which installs the exporter and describes every family
//! (`worker::metric`). README's operations section lists every family.

/// Jobs claimed, by `kind`.
pub const CLAIMED: &str = "plansync_jobs_claimed_total";
/// Finished job runs, by `kind` and `outcome` ([`outcome`]).
pub const JOBS: &str = "plansync_jobs_total";
/// Run time of a job, by `kind` and `outcome` (histogram).
pub const DURATION: &str = "plansync_job_duration_seconds";
/// Google calls, by `operation` and `outcome` (`ok` or the error's class).
pub const GOOGLE_REQUESTS: &str = "plansync_google_requests_total";
/// Google call latency, by `operation` (histogram).
pub const GOOGLE_DURATION: &str = "plansync_google_request_duration_seconds";
/// Queued jobs of the whole fleet (gauge, refreshed by every replica).
pub const QUEUE_DEPTH: &str = "plansync_queue_depth";
/// How long the oldest claimable due job has waited (gauge).
pub const QUEUE_LAG: &str = "plansync_queue_oldest_due_lag_seconds";
/// Jobs running in the fleet (gauge).
pub const RUNNING: &str = "plansync_jobs_running";
/// Unpublished outbox rows (gauge).
pub const OUTBOX_BACKLOG: &str = "plansync_outbox_backlog";
/// Age of the oldest unpublished outbox row (gauge).
pub const OUTBOX_AGE: &str = "plansync_outbox_oldest_age_seconds";
/// Deltas published to Redis, by `item_type` and `action`.
pub const DELTAS_PUBLISHED: &str = "plansync_deltas_published_total";
/// Conflict records written, by `winner` and `kind`.
pub const CONFLICTS: &str = "plansync_conflicts_total";
/// Events Google listed that could not be read or stored.
pub const SKIPPED_EVENTS: &str = "plansync_skipped_events_total";
/// Live Google notification channels (gauge; set by the channel upkeep).
pub const CHANNELS_LIVE: &str = "plansync_notification_channels_live";
/// Notifications received on `/google/notifications`, by `outcome`.
pub const NOTIFICATIONS: &str = "plansync_notifications_total";
/// 1 when this replica's last Redis probe answered, else 0 (gauge).
pub const REDIS_UP: &str = "plansync_redis_up";

/// The `outcome` label of [`JOBS`] and [`DURATION`].
pub mod outcome {
    pub const SUCCEEDED: &str = crate::job::JobState::Succeeded.as_str();
    /// Failed, back in the queue (retry, snooze or back-off).
    pub const REQUEUED: &str = "requeued";
    pub const DEAD: &str = crate::job::JobState::Dead.as_str();
    /// Lease lost, or released at shutdown: nothing recorded.
    pub const ABANDONED: &str = "abandoned";
    pub const ALL: [&str; 4] = [SUCCEEDED, REQUEUED, DEAD, ABANDONED];
}

/// Buckets of the latency histograms (seconds): a fast Google call is tens
/// of milliseconds, a long full sync minutes.
pub const SECONDS_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];
