//! Worker heartbeats (`plansync.workers`): who is alive, for the quota's
//! fallback share when Redis is unreachable, and the fleet's Google calls per
//! minute for `status`. Liveness is judged by the database's `now()`, never a
//! worker's clock.

use sqlx::PgPool;

use super::StoreError;

/// A worker whose row is older than this is not counted as alive.
pub const LIVE_WINDOW_SECS: f64 = 30.0;

/// Records that `worker` is alive (with its calls in the last minute and its
/// polling interval), prunes rows of workers gone for ten live windows, and
/// returns how many workers are alive now, this one included.
pub async fn beat(
    pool: &PgPool,
    worker: &str,
    region: &str,
    calls_per_min: i32,
    poll_interval_secs: Option<i32>,
) -> Result<i64, StoreError> {
    let mut tx = super::begin(pool).await?;
    sqlx::query!(
        "INSERT INTO plansync.workers (worker_id, region, calls_per_min, poll_interval_secs) \
         VALUES ($1, $2, $3, $4) \
         ON CONFLICT (worker_id) DO UPDATE SET seen_at = now(), region = EXCLUDED.region, \
             calls_per_min = EXCLUDED.calls_per_min, \
             poll_interval_secs = COALESCE(EXCLUDED.poll_interval_secs, \
                                           plansync.workers.poll_interval_secs)",
        worker,
        region,
        calls_per_min,
        poll_interval_secs,
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "DELETE FROM plansync.workers \
         WHERE seen_at < now() - make_interval(secs => $1::FLOAT8 * 10)",
        LIVE_WINDOW_SECS,
    )
    .execute(&mut *tx)
    .await?;
    let live = live_in(&mut *tx).await?;
    tx.commit().await?;
    Ok(live)
}

async fn live_in<'e>(executor: impl sqlx::PgExecutor<'e>) -> Result<i64, StoreError> {
    let n = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM plansync.workers
            WHERE seen_at >= now() - make_interval(secs => $1)"#,
        LIVE_WINDOW_SECS,
    )
    .fetch_one(executor)
    .await?;
    Ok(n)
}

/// A stopping worker removes its row, so the others' fallback share grows at
/// once rather than after the live window.
pub async fn leave(pool: &PgPool, worker: &str) -> Result<(), StoreError> {
    sqlx::query!("DELETE FROM plansync.workers WHERE worker_id = $1", worker)
        .execute(pool)
        .await?;
    Ok(())
}

/// The live workers' Google calls in their last minute, summed, and how many
/// they are.
pub async fn fleet_usage(pool: &PgPool) -> Result<(i64, i64), StoreError> {
    let row = sqlx::query!(
        r#"SELECT COALESCE(sum(calls_per_min), 0)::BIGINT AS "used!", count(*) AS "live!"
             FROM plansync.workers
            WHERE seen_at >= now() - make_interval(secs => $1)"#,
        LIVE_WINDOW_SECS,
    )
    .fetch_one(pool)
    .await?;
    Ok((row.used, row.live))
}
