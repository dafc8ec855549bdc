//! Queue-level helpers: settings and worker configs made in code, a
//! connection row without a job, a job handler made of a closure, a job's
//! state, and a yes-or-no `eventually`.

use std::future::Future;
use std::time::Duration;

use plansync::config::QueueSettings;
use plansync::ids::{ConnectionId, JobId};
use plansync::queue::{Done, Job, JobError};
use plansync::worker::{JobContext, JobHandler, WorkerConfig};

use super::TestApp;

pub fn queue_settings(max_attempts: i32, retry_base_secs: u64, lease_secs: u64) -> QueueSettings {
    QueueSettings {
        max_attempts,
        retry_base: Duration::from_secs(retry_base_secs),
        lease: Duration::from_secs(lease_secs),
        connection_backoff_cap: Duration::from_secs(3600),
        dead_retention: Duration::from_secs(7 * 86_400),
    }
}

pub fn worker_config(region: &str, queue: QueueSettings) -> WorkerConfig {
    WorkerConfig {
        region: region.to_owned(),
        concurrency: 4,
        shutdown_grace: Duration::from_secs(5),
        poll_interval: Duration::from_secs(300),
        poll_backstop: Duration::from_secs(3600),
        webhook_url: None,
        queue,
        worker_id: format!("test-{}:{}", region, std::process::id()),
    }
}

/// A connection row made directly (no job enqueued), for queue-level tests.
/// Its last pull is dated a day ahead, so no scheduler tick polls it during a
/// test unless the test says so.
pub async fn add_connection(
    app: &TestApp,
    user: i64,
    calendar: &str,
    region: &str,
) -> ConnectionId {
    sqlx::query_scalar(
        "INSERT INTO plansync.connections (user_id, calendar_id, region, last_pull_at) \
         VALUES ($1, $2, $3, now() + interval '1 day') RETURNING id",
    )
    .bind(user)
    .bind(calendar)
    .bind(region)
    .fetch_one(&app.pool)
    .await
    .expect("insert connection")
}

/// A handler made of a closure, so each test states what its jobs do.
pub struct FnHandler<F>(pub F);

impl<F, Fut> JobHandler for FnHandler<F>
where
    F: Fn(JobContext, Job) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Done, JobError>> + Send + 'static,
{
    fn run(
        &self,
        ctx: &JobContext,
        job: &Job,
    ) -> impl Future<Output = Result<Done, JobError>> + Send {
        (self.0)(ctx.clone(), job.clone())
    }
}

#[derive(Debug, sqlx::FromRow)]
pub struct JobState {
    pub state: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub due_in_secs: f64,
    pub claim_token: Option<uuid::Uuid>,
}

pub async fn job_state(app: &TestApp, id: JobId) -> JobState {
    sqlx::query_as(
        "SELECT state, attempts, last_error, \
             extract(epoch FROM run_at - now())::FLOAT8 AS due_in_secs, claim_token \
         FROM plansync.jobs WHERE id = $1",
    )
    .bind(id)
    .fetch_one(&app.pool)
    .await
    .expect("job row")
}

/// Polls `check` until it holds or `secs` pass (the harness's `eventually`,
/// for checks that answer yes or no).
pub async fn eventually<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    crate::harness::eventually(Duration::from_secs(secs), what, || {
        let holds = check();
        async move { holds.await.then_some(()) }
    })
    .await
}
