//! `run`'s HTTP side: `/healthz` (the process answers), `/readyz` (the
//! database answers), `/metrics` (Prometheus text), and Google's
//! notifications ([`super::notifications`]).

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
struct AppState {
    pool: PgPool,
    metrics: Option<PrometheusHandle>,
}

pub fn router(pool: PgPool, metrics: Option<PrometheusHandle>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .with_state(AppState {
            pool: pool.clone(),
            metrics,
        })
        .merge(super::notifications::router(pool))
}

async fn readyz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    let ping = sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&state.pool);
    match tokio::time::timeout(Duration::from_secs(2), ping).await {
        Ok(Ok(_)) => (StatusCode::OK, "ready\n"),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "database unreachable\n"),
    }
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
