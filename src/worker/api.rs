//! `run`'s authenticated API: `GET /users/{id}/deltas?after={version}`, the
//! catch-up route ([`crate::deltas::catch_up`]).
//!
//! Guarantees:
//! - Off unless `PLANSYNC_API_TOKEN` is set: without a token the router has
//!   no routes, so every path answers 404 exactly like an unknown one.
//! - With a token, every request must carry `Authorization: Bearer <token>`,
//!   checked in constant time ([`ApiToken::verify`]); anything else is 401
//!   before the database is touched.
//! - Answers: 200 `{"userId","planVersion","deltas"}`; 410 `{"planVersion"}`
//!   when the asked-for deltas were pruned; 404 for an unknown user; 400 for
//!   a malformed id or `after`; 503 when the database fails.

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use sqlx::PgPool;

use crate::deltas::catch_up::{self, CatchUpError};
use crate::ids::{ApiToken, UserId};

#[derive(Clone)]
struct ApiState {
    pool: PgPool,
}

/// The API routes, to be merged into `run`'s router; empty when `token` is
/// `None`.
pub fn router(pool: PgPool, token: Option<ApiToken>) -> Router {
    let Some(token) = token else {
        return Router::new();
    };
    Router::new()
        .route("/users/{id}/deltas", get(deltas))
        .route_layer(middleware::from_fn(move |req: Request, next: Next| {
            let token = token.clone();
            async move { authorize(&token, req, next).await }
        }))
        .with_state(ApiState { pool })
}

async fn authorize(token: &ApiToken, req: Request, next: Next) -> Response {
    if bearer(req.headers()).is_some_and(|presented| token.verify(presented)) {
        return next.run(req).await;
    }
    let mut response = json(
        StatusCode::UNAUTHORIZED,
        json_error("a valid Authorization: Bearer token is required"),
    );
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

#[derive(Debug, Deserialize)]
struct DeltasQuery {
    after: i64,
}

#[tracing::instrument(name = "catch_up", skip(state, query), fields(after = query.after))]
async fn deltas(
    State(state): State<ApiState>,
    Path(user): Path<UserId>,
    Query(query): Query<DeltasQuery>,
) -> Response {
    match catch_up::catch_up(&state.pool, user, query.after).await {
        Ok(answer) => json(StatusCode::OK, answer.to_json()),
        Err(CatchUpError::Gone { plan_version, .. }) => json(
            StatusCode::GONE,
            format!("{{\"planVersion\":{plan_version}}}"),
        ),
        Err(err @ CatchUpError::UnknownUser(_)) => {
            json(StatusCode::NOT_FOUND, json_error(&err.to_string()))
        }
        Err(err @ CatchUpError::InvalidAfter(_)) => {
            json(StatusCode::BAD_REQUEST, json_error(&err.to_string()))
        }
        Err(CatchUpError::Store(err)) => {
            tracing::warn!(error = %crate::text::chain(&err), %user, "catch-up read failed");
            json(
                StatusCode::SERVICE_UNAVAILABLE,
                json_error("the database is unavailable; try again"),
            )
        }
    }
}

fn json(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn json_error(message: &str) -> String {
    serde_json::json!({ "error": message }).to_string()
}
