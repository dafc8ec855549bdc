//! Stopping the channel of a disconnected connection when Google refuses.

use super::*;

/// Opens a channel with a short-lived `run`, stops that `run`, and
/// disconnects: a watch job is left to stop the channel.
async fn disconnected_with_a_channel(app: &SyncApp) -> (i64, Channel) {
    let connection = app.connect(1, "primary", &[]).await;
    let run = Run::start(app, true, &[]).await;
    let channel = wait_for_live_channel(app, "primary", &[]).await;
    run.stop().await;
    let out = app
        .run(&["disconnect", "--connection", &connection.to_string()], "")
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let (kept, watch_jobs): (bool, i64) = sqlx::query_as(
        "SELECT c.refresh_token_enc IS NOT NULL, (SELECT count(*) FROM plansync.jobs j \
             WHERE j.connection_id = c.id AND j.kind = 'watch' AND j.state = 'queued' \
               AND j.run_at <= now()) \
         FROM plansync.connections c WHERE c.id = $1",
    )
    .bind(connection)
    .fetch_one(&app.app.pool)
    .await
    .unwrap();
    assert!(kept, "the token is kept until the channel is stopped");
    assert_eq!(watch_jobs, 1, "a watch job is due to stop the channel");
    (connection, channel)
}

async fn channel_row(app: &SyncApp, id: &str) -> (String, Option<String>) {
    sqlx::query_as("SELECT state, last_error FROM plansync.channels WHERE id = $1::TEXT::UUID")
        .bind(id)
        .fetch_one(&app.app.pool)
        .await
        .unwrap()
}

async fn token_kept(app: &SyncApp, connection: i64) -> bool {
    sqlx::query_scalar(
        "SELECT refresh_token_enc IS NOT NULL FROM plansync.connections WHERE id = $1",
    )
    .bind(connection)
    .fetch_one(&app.app.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_stop_that_fails_for_good_gives_the_channel_up_and_forgets_the_token() {
    let app = SyncApp::spawn().await;
    let (connection, channel) = disconnected_with_a_channel(&app).await;
    app.google
        .inject_fault(Operation::Stop, Fault::BackendError, 100);
    app.run_once_with(&[("PLANSYNC_MAX_ATTEMPTS", "1")]).await;
    let dead: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM plansync.jobs WHERE kind = 'watch' AND state = 'dead'",
    )
    .fetch_one(&app.app.pool)
    .await
    .unwrap();
    assert_eq!(dead, 1, "the stop failed for good");
    assert!(token_kept(&app, connection).await, "not settled yet");

    // The next scheduler tick gives the channel up and forgets the token.
    app.run_once().await;
    assert!(!token_kept(&app, connection).await);
    let (state, error) = channel_row(&app, &channel.id).await;
    assert_eq!(state, "stopped");
    assert!(
        error.as_deref().unwrap_or("").contains("failed for good"),
        "{error:?}"
    );
    // Google still has it, until it expires by itself.
    assert!(app.google.channels().iter().any(|c| c.id == channel.id));
    let watch_jobs: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM plansync.jobs WHERE kind = 'watch' AND state IN ('queued', 'running')",
    )
    .fetch_one(&app.app.pool)
    .await
    .unwrap();
    assert_eq!(watch_jobs, 0);
}

#[tokio::test]
async fn a_revoked_grant_ends_the_stop_of_a_disconnected_connection_at_once() {
    let app = SyncApp::spawn().await;
    let (connection, channel) = disconnected_with_a_channel(&app).await;
    let token = app.google.refresh_tokens()[0].clone();
    assert!(app.google.revoke_refresh_token(&token));
    app.run_once().await;
    let (state, error) = channel_row(&app, &channel.id).await;
    assert_eq!(state, "stopped");
    assert!(error.is_some(), "given up, with the reason");
    assert!(!token_kept(&app, connection).await);
    let kinds: Vec<(String, String)> =
        sqlx::query_as("SELECT kind, state FROM plansync.jobs WHERE kind = 'watch'")
            .fetch_all(&app.app.pool)
            .await
            .unwrap();
    assert!(kinds.iter().all(|(_, s)| s == "succeeded"), "{kinds:?}");
}
