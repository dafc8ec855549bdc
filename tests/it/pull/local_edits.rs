//! Pulls meeting local changes: pending edits, host transactions, disconnects.

use super::*;

async fn defer_pushes(app: &SyncApp) {
    // The local edit's push waits (as if backing off), so the pull decides.
    sqlx::query("UPDATE plansync.jobs SET run_at = now() + interval '1 hour' WHERE kind = 'push'")
        .execute(&app.app.pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_pending_local_edit_loses_to_a_newer_remote_edit_and_wins_over_an_older_one() {
    let app = SyncApp::spawn().await;
    let older_local = create(&app, "primary", timed("a", 2, 9));
    let newer_local = create(&app, "primary", timed("b", 3, 9));
    app.connect(1, "primary", &[]).await;
    app.run_once().await;

    // a: local edit first, remote edit after → Google wins.
    sqlx::query("UPDATE appointments SET summary = 'a local' WHERE summary = 'a'")
        .execute(&app.app.pool)
        .await
        .unwrap();
    app.google
        .patch_event("primary", &older_local, json!({"summary": "a remote"}))
        .unwrap();
    // b: remote edit first, local edit after → local wins.
    app.google
        .patch_event("primary", &newer_local, json!({"summary": "b remote"}))
        .unwrap();
    sqlx::query("UPDATE appointments SET summary = 'b local' WHERE summary = 'b'")
        .execute(&app.app.pool)
        .await
        .unwrap();
    defer_pushes(&app).await;
    pull(&app, 1).await;

    let summaries: Vec<String> = appointments(&app)
        .await
        .into_iter()
        .map(|r| r.summary)
        .collect();
    assert_eq!(summaries, vec!["a remote", "b local"]);
    let conflicts: Vec<(String, String, Value)> =
        sqlx::query_as("SELECT winner, kind, losing_values FROM plansync.conflicts ORDER BY id")
            .fetch_all(&app.app.pool)
            .await
            .unwrap();
    assert_eq!(conflicts.len(), 2);
    let by_winner = |w: &str| conflicts.iter().find(|c| c.0 == w).unwrap();
    assert_eq!(by_winner("google").2["summary"], "a local");
    assert_eq!(by_winner("local").2["summary"], "b remote");
    // The stale push of "a local" is dropped; b's push waits to send "b local".
    let pushes: Vec<String> = sqlx::query_scalar(
        "SELECT a.summary FROM plansync.jobs j JOIN appointments a ON a.id = j.appointment_id \
         WHERE j.kind = 'push' AND j.state = 'queued'",
    )
    .fetch_all(&app.app.pool)
    .await
    .unwrap();
    assert_eq!(pushes, vec!["b local"]);
    // The winning remote edit reached the clients; the kept local one needs no delta.
    let last = deltas(&app).await.pop().unwrap().2;
    assert_eq!(last["data"]["appointment"]["summary"], "a remote");
}

#[tokio::test]
async fn a_remote_delete_beats_a_pending_local_edit() {
    let app = SyncApp::spawn().await;
    let id = create(&app, "primary", timed("doomed", 2, 9));
    app.connect(1, "primary", &[]).await;
    app.run_once().await;
    sqlx::query("UPDATE appointments SET summary = 'edited locally'")
        .execute(&app.app.pool)
        .await
        .unwrap();
    app.google.delete_event("primary", &id).unwrap();
    defer_pushes(&app).await;
    pull(&app, 1).await;
    assert!(appointments(&app).await.is_empty());
    let (winner, kind): (String, String) =
        sqlx::query_as("SELECT winner, kind FROM plansync.conflicts")
            .fetch_one(&app.app.pool)
            .await
            .unwrap();
    assert_eq!((winner.as_str(), kind.as_str()), ("google", "delete"));
    let status = app.status().await;
    let last = &status["connections"][0]["lastConflict"];
    assert_eq!(last["winner"], "google");
    assert_eq!(last["kind"], "delete");
    assert_eq!(last["losingValues"]["summary"], "edited locally");
    assert!(last["detectedAt"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test]
async fn disconnect_then_connect_again_imports_nothing_twice() {
    let app = SyncApp::spawn().await;
    create(&app, "primary", timed("one", 2, 9));
    create(&app, "primary", timed("two", 3, 9));
    let connection = app.connect(1, "primary", &[]).await;
    app.run_once().await;
    let before = (appointments(&app).await, deltas(&app).await.len());
    let out = app
        .run(&["disconnect", "--connection", &connection.to_string()], "")
        .await;
    assert!(out.status.success());
    assert_eq!(app.connect(1, "primary", &[]).await, connection);
    app.run_once().await;
    assert_eq!((appointments(&app).await, deltas(&app).await.len()), before);
}

#[tokio::test]
async fn a_host_edit_committing_while_a_page_is_reconciled_is_never_overwritten_silently() {
    let app = SyncApp::spawn().await;
    let id = create(&app, "primary", timed("original", 2, 9));
    app.connect(1, "primary", &[]).await;
    app.run_once().await;
    app.google
        .patch_event("primary", &id, json!({"summary": "remote edit"}))
        .unwrap();
    let out = app.run(&["resync", "--user", "1"], "").await;
    assert!(out.status.success());

    // The host edits the appointment in a transaction it keeps open while
    // the pull reaches the page (its edit is newer than Google's).
    let mut host = app.app.pool.begin().await.unwrap();
    sqlx::query("UPDATE appointments SET summary = 'host edit'")
        .execute(&mut *host)
        .await
        .unwrap();
    let mut pass = app.command();
    pass.args(["run", "--once"]);
    let pass = tokio::spawn(async move { pass.output().await.unwrap() });
    let db = app.app.db_name.clone();
    crate::harness::eventually(
        std::time::Duration::from_secs(30),
        "the pull to wait on the host's row lock",
        || {
            let (pool, db) = (app.app.pool.clone(), db.clone());
            async move {
                let waiting: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 \
                 AND wait_event_type = 'Lock' AND application_name = 'plansync'",
                )
                .bind(db)
                .fetch_one(&pool)
                .await
                .unwrap();
                (waiting > 0).then_some(())
            }
        },
    )
    .await;
    host.commit().await.unwrap();
    let out = pass.await.unwrap();
    assert!(out.status.success(), "{}", stderr(&out));

    // The newer local edit stands, and Google's losing edit is on record.
    assert_eq!(appointments(&app).await[0].summary, "host edit");
    let (winner, losing): (String, Value) =
        sqlx::query_as("SELECT winner, losing_values FROM plansync.conflicts")
            .fetch_one(&app.app.pool)
            .await
            .unwrap();
    assert_eq!(winner, "local");
    assert_eq!(losing["summary"], "remote edit");
}

/// A pull listing while the calendar is disconnected (found by the
/// convergence test, seed 3011 at 150 steps): its page must not overwrite a
/// host edit made after the disconnect, which no push job records; the
/// re-connect pushes that edit.
#[tokio::test]
async fn a_pull_that_outlives_a_disconnect_leaves_edits_made_since_to_the_reconnect() {
    use plansync::ids::ConnectionId;
    let app = SyncApp::spawn().await;
    let connection = app.connect(1, "primary", &[]).await;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO appointments (user_id, summary, start_at, end_at) \
         VALUES (1, 'host v1', now() + interval '2 days', now() + interval '2 days 1 hour') \
         RETURNING id",
    )
    .fetch_one(&app.app.pool)
    .await
    .unwrap();
    app.run_once().await;
    let event: String =
        sqlx::query_scalar("SELECT event_id FROM plansync.links WHERE appointment_id = $1")
            .bind(id)
            .fetch_one(&app.app.pool)
            .await
            .unwrap();

    // Google's edit, which the slow pull below will carry.
    app.google
        .patch_event("primary", &event, json!({"summary": "google v2"}))
        .unwrap();
    app.google.inject_fault(
        Operation::List,
        Fault::Delay {
            millis: std::time::Duration::from_millis(1500),
        },
        1,
    );
    let out = app.run(&["resync", "--user", "1"], "").await;
    assert!(out.status.success(), "resync: {}", stderr(&out));
    app.google.clear_requests();
    let worker = crate::harness::WorkerProcess::start(app.worker_env(&[]), "slow", 4).await;
    let pass = worker.spawn_pass();
    // The pull checked the connection before it asked for a token; the token
    // request answered means the (slowed) list is on its way.
    crate::harness::eventually(
        std::time::Duration::from_secs(10),
        "the pull's token request",
        || async {
            app.google
                .requests()
                .iter()
                .any(|r| r.operation == Operation::Token)
                .then_some(())
        },
    )
    .await;
    plansync::store::connections::disconnect(&app.app.pool, ConnectionId(connection))
        .await
        .unwrap();
    sqlx::query("UPDATE appointments SET summary = 'host v3, offline' WHERE id = $1")
        .bind(id)
        .execute(&app.app.pool)
        .await
        .unwrap();
    pass.await.unwrap().unwrap();

    app.connect(1, "primary", &[]).await;
    app.run_once().await;
    let summary: String = sqlx::query_scalar("SELECT summary FROM appointments WHERE id = $1")
        .bind(id)
        .fetch_one(&app.app.pool)
        .await
        .unwrap();
    assert_eq!(summary, "host v3, offline", "the newer host edit stands");
    assert_eq!(
        app.google.get_event("primary", &event).unwrap()["summary"],
        "host v3, offline",
        "and reached Google"
    );
}
