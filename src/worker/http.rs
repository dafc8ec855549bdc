//! `run`'s HTTP side: `/healthz` (the process answers), `/readyz` (the
//! database answers and carries this binary's migrations; Redis is reported,
//! never required), `/metrics` (Prometheus text), and Google's notifications
//! ([`super::notifications`]).

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::deltas::connect::ping;
use crate::store::migrate::MigrationState;

#[derive(Clone)]
struct AppState {
    pool: PgPool,
    metrics: Option<PrometheusHandle>,
    redis: Option<redis::Client>,
}

pub fn router(pool: PgPool, metrics: Option<PrometheusHandle>) -> Router {
    router_with_redis(pool, metrics, None)
}

/// [`router`], with `/readyz` reporting whether `redis` answers.
pub fn router_with_redis(
    pool: PgPool,
    metrics: Option<PrometheusHandle>,
    redis: Option<redis::Client>,
) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .with_state(AppState {
            pool: pool.clone(),
            metrics,
            redis,
        })
        .merge(super::notifications::router(pool))
}

/// 200 when the database answers and its migrations are exactly this
/// binary's; 503 otherwise. Redis is reported in the body but never fails
/// readiness: the outbox buffers deltas while it is down, and notifications
/// and catch-up requests must still be served.
/// Body: `{"ready", "database": "ok"|"unreachable", "migrations":
/// "current"|"differ"|"unknown", "migrationsDetail"?, "redis": "up"|"down"|"unknown"}`.
async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<serde_json::Value>) {
    const DEADLINE: Duration = Duration::from_secs(2);
    let migrations =
        tokio::time::timeout(DEADLINE, crate::store::migrate::check(&state.pool)).await;
    let (database, migrations, detail) = match migrations {
        Ok(Ok(MigrationState::Current)) => ("ok", "current", None),
        Ok(Ok(differs)) => ("ok", "differ", Some(differs.to_string())),
        Ok(Err(_)) | Err(_) => ("unreachable", "unknown", None),
    };
    let redis = match &state.redis {
        None => "unknown",
        Some(client) => match tokio::time::timeout(DEADLINE, ping(client)).await {
            Ok(Ok(())) => "up",
            _ => "down",
        },
    };
    let ready = database == "ok" && migrations == "current";
    let mut body = json!({
        "ready": ready,
        "database": database,
        "migrations": migrations,
        "redis": redis,
    });
    if let Some(detail) = detail {
        body["migrationsDetail"] = json!(detail);
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

async fn render_metrics(State(state): State<AppState>) -> String {
    state
        .metrics
        .as_ref()
        .map(PrometheusHandle::render)
        .unwrap_or_default()
}

/// Serves until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}
