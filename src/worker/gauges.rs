//! The gauges of `/metrics` that describe shared state rather than this
//! process's events: queue depth and oldest-due lag, running jobs, outbox
//! backlog and oldest age (the whole fleet's, read from Postgres, so every
//! replica reports the same value: aggregate them with `max`), and whether
//! Redis answers this replica (`plansync_redis_up`).
//!
//! Refreshed every few seconds by one task per `run`: three small
//! aggregate reads and a `PING`, each bounded in time; a failed read leaves
//! the previous value (a stale gauge is better than a false zero), and
//! nothing here can stop the worker.

use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::metric;
use crate::deltas::connect::ping;
use crate::store::{self, StoreError};

/// How often the gauges are refreshed.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5);
/// The longest one refresh may take.
const DEADLINE: Duration = Duration::from_secs(3);

/// Refreshes the gauges until `cancel`, and runs the exporter's upkeep.
pub async fn run(
    pool: PgPool,
    redis: Option<redis::Client>,
    handle: Option<PrometheusHandle>,
    cancel: CancellationToken,
) {
    loop {
        refresh(&pool, redis.as_ref()).await;
        if let Some(handle) = &handle {
            handle.run_upkeep();
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(REFRESH_EVERY) => {}
        }
    }
}

/// One refresh of every gauge.
pub async fn refresh(pool: &PgPool, redis: Option<&redis::Client>) {
    match tokio::time::timeout(DEADLINE, read(pool)).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::debug!(error = %crate::text::chain(&err), "gauges not refreshed"),
        Err(_) => tracing::debug!("gauges not refreshed: the database is slow"),
    }
    if let Some(client) = redis {
        let up = matches!(
            tokio::time::timeout(DEADLINE, ping(client)).await,
            Ok(Ok(()))
        );
        metrics::gauge!(metric::REDIS_UP).set(if up { 1.0 } else { 0.0 });
    }
}

async fn read(pool: &PgPool) -> Result<(), StoreError> {
    let (depth, lag) = store::jobs::depth_and_lag(pool, None).await?;
    metrics::gauge!(metric::QUEUE_DEPTH).set(depth as f64);
    metrics::gauge!(metric::QUEUE_LAG).set(lag);
    let running = store::jobs::running_count(pool).await?;
    metrics::gauge!(metric::RUNNING).set(running as f64);
    let (backlog, oldest, now) = store::outbox::backlog(pool, None).await?;
    metrics::gauge!(metric::OUTBOX_BACKLOG).set(backlog as f64);
    let age = oldest.map_or(0.0, |t| (now - t).num_milliseconds().max(0) as f64 / 1000.0);
    metrics::gauge!(metric::OUTBOX_AGE).set(age);
    Ok(())
}
