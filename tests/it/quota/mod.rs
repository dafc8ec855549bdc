//! Google's quota shared by the fleet (src/quota.rs): four in-process workers
//! (each its own pool, quota and Google client, as four replicas would be)
//! against the emulator, whose request log carries arrival times.
//!
//! Windows are scaled down from the 60 s so CI stays quick: the
//! budgets are per minute as in production, and each test measures a window
//! of a few seconds against `qpm * window / 60` plus one second's burst
//! (`qpm / 60`), the same bound the limiter guarantees over any window.

mod budget;
mod scheduling;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use plansync::config::{Env, GoogleSettings, QuotaSettings, RedisSettings, SyncSettings};
use plansync::google::GoogleClient;
use plansync::ids::{CalendarId, RefreshToken, UserId};
use plansync::quota::Quota;
use plansync::sync::SyncDeps;
use plansync::worker::{SyncJobs, Worker, WorkerConfig};
use plansync_fake_google::RecordedRequest;
use tokio_util::sync::CancellationToken;

use crate::harness::jobs::queue_settings;
use crate::harness::{eventually, stderr, stdout, PrivateRedis, SyncApp};

fn quota_settings(qpm: u32, user_qpm: u32) -> QuotaSettings {
    QuotaSettings {
        project_per_min: qpm,
        user_per_min: user_qpm,
        poll_share: 0.5,
    }
}

/// One replica: its own pool, quota (on `redis_url`, with the test's
/// prefix), Google client and worker.
struct Replica {
    worker: Worker<SyncJobs>,
    quota: Quota,
}

async fn replica(
    sync: &SyncApp,
    name: &str,
    settings: QuotaSettings,
    redis_url: &str,
    concurrency: usize,
) -> Replica {
    let google_settings = GoogleSettings {
        calendar_base_url: sync.google.base_url(),
        token_url: sync.google.token_url(),
        client_id: sync.google.client_id(),
        client_secret: sync.google.client_secret().into(),
    };
    let redis = RedisSettings::from_env(&Env::from_pairs([
        ("REDIS_URL", redis_url),
        ("PLANSYNC_REDIS_PREFIX", sync.app.redis_prefix.as_str()),
    ]))
    .unwrap();
    let quota = Quota::new(settings, &redis, &google_settings.client_id).unwrap();
    let google = GoogleClient::new(&google_settings)
        .unwrap()
        .with_budget(Arc::new(quota.clone()));
    let deps = SyncDeps::new(
        google,
        sync.app.cipher(),
        SyncSettings::from_env(&Env::default()).unwrap(),
    );
    let pool = plansync::store::connect(&sync.app.db_settings(), concurrency as u32 * 2 + 4)
        .await
        .unwrap();
    let config = WorkerConfig {
        region: "default".to_owned(),
        concurrency,
        shutdown_grace: Duration::from_secs(5),
        poll_interval: Duration::from_secs(300),
        poll_backstop: Duration::from_secs(3600),
        webhook_url: None,
        queue: queue_settings(8, 0, 60),
        worker_id: format!("replica-{name}"),
    };
    Replica {
        worker: Worker::new(pool, config, SyncJobs::new(deps)).with_quota(quota.clone()),
        quota,
    }
}

/// Starts `replicas` workers; cancel the token and await the handles to stop.
fn run_all(replicas: &[Replica]) -> (CancellationToken, Vec<tokio::task::JoinHandle<()>>) {
    let stop = CancellationToken::new();
    let handles = replicas
        .iter()
        .map(|r| {
            let worker = r.worker.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                worker.run(stop).await.expect("the worker runs");
            })
        })
        .collect();
    (stop, handles)
}

async fn stop_all(stop: CancellationToken, handles: Vec<tokio::task::JoinHandle<()>>) {
    stop.cancel();
    for h in handles {
        h.await.unwrap();
    }
}

/// A push-target connection of a new user on its own emulator calendar, made
/// with SQL (no initial sync) and never polled during the test. Returns the
/// user id.
async fn connection(sync: &SyncApp, user: i64, calendar: &str) -> i64 {
    sync.google.add_calendar(calendar, calendar, "UTC").unwrap();
    sync.app.add_user(user).await;
    let token = RefreshToken::new(sync.google.refresh_tokens()[0].clone());
    let enc = sync
        .app
        .cipher()
        .encrypt(UserId(user), &CalendarId::from(calendar), &token);
    sqlx::query(
        "INSERT INTO plansync.connections (user_id, calendar_id, region, push_target, \
             refresh_token_enc, calendar_time_zone, last_pull_at) \
         VALUES ($1, $2, 'default', TRUE, $3, 'UTC', now() + interval '1 day')",
    )
    .bind(user)
    .bind(calendar)
    .bind(enc)
    .execute(&sync.app.pool)
    .await
    .unwrap();
    user
}

/// `n` host inserts for `user` in one statement: `n` push jobs.
async fn appointments(sync: &SyncApp, user: i64, n: i32) {
    sqlx::query(
        "INSERT INTO appointments (user_id, summary, start_at, end_at, start_time_zone, \
             end_time_zone) \
         SELECT $1, 'item ' || g, timestamptz '2026-12-10 10:00Z' + g * interval '1 hour', \
                timestamptz '2026-12-10 10:30Z' + g * interval '1 hour', 'UTC', 'UTC' \
         FROM generate_series(1, $2) g",
    )
    .bind(user)
    .bind(n)
    .execute(&sync.app.pool)
    .await
    .unwrap();
}

async fn count(sync: &SyncApp, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(&sync.app.pool)
        .await
        .unwrap()
}

/// Requests that arrived in `[from, to)`.
fn in_window(
    requests: &[RecordedRequest],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Vec<&RecordedRequest> {
    requests
        .iter()
        .filter(|r| r.received_at >= from && r.received_at < to)
        .collect()
}

/// The most requests that arrived in any window of `width` inside
/// `[from, to)`.
fn busiest(
    requests: &[RecordedRequest],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    width: chrono::Duration,
) -> usize {
    let times: Vec<_> = in_window(requests, from, to)
        .iter()
        .map(|r| r.received_at)
        .collect();
    times
        .iter()
        .map(|start| {
            times
                .iter()
                .filter(|t| **t >= *start && **t < *start + width)
                .count()
        })
        .max()
        .unwrap_or(0)
}

/// Waits (polling the emulator's log) until a request arrived at or after
/// `until`, so the measured window is fully covered by the run.
async fn covered(sync: &SyncApp, until: DateTime<Utc>, what: &str) {
    let google = &sync.google;
    eventually(Duration::from_secs(60), what, || async move {
        google
            .requests()
            .iter()
            .any(|r| r.received_at >= until)
            .then_some(())
    })
    .await;
}

fn secs(s: f64) -> chrono::Duration {
    chrono::Duration::milliseconds((s * 1000.0) as i64)
}
