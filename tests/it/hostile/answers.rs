//! Answers that are not Google's, quota, and a failing connection's back-off.

use super::*;

#[tokio::test]
async fn answers_that_are_not_googles_never_mean_gone_and_quota_backs_off() {
    let (app, id, mut deltas) = synced().await;
    // A wrong base URL or a proxy: 404 with HTML.
    app.google.inject_fault(
        Operation::List,
        Fault::Respond {
            status: 404,
            headers: BTreeMap::from([("content-type".into(), "text/html".into())]),
            body: "<html><body>Not Found</body></html>".into(),
        },
        100,
    );
    resync(&app, 1, false).await;
    app.run_once().await;
    app.google.clear_faults();
    let c = connection_status(&app.status().await, id);
    assert_eq!(c["calendarGone"], false, "{c}");
    let err = c["lastError"].as_str().unwrap();
    assert!(
        err.contains("404") && err.contains("text/html") && err.contains("<html>"),
        "{err}"
    );

    // A Google error whose message holds a NUL is still recorded.
    app.google.inject_fault(
        Operation::List,
        respond(500, r#"{"error":{"code":500,"message":"bad\u0000thing","errors":[{"reason":"backendError"}]}}"#),
        100,
    );
    resync(&app, 1, false).await;
    app.run_once().await;
    app.google.clear_faults();
    let status = app.status().await;
    assert!(status["queue"]["running"].as_array().unwrap().is_empty());
    let c = connection_status(&status, id);
    assert!(c["lastError"].as_str().unwrap().contains("badthing"), "{c}");

    // Google's daily quota: the connection backs off for 15 minutes (the
    // first time), no attempt spent, and says so.
    sqlx::query("UPDATE plansync.connections SET failures = 0, failing_since = NULL")
        .execute(&app.app.pool)
        .await
        .unwrap();
    app.google.inject_fault(
        Operation::List,
        respond(403, r#"{"error":{"code":403,"message":"Quota exceeded","errors":[{"reason":"quotaExceeded"}]}}"#),
        1,
    );
    resync(&app, 1, false).await;
    app.run_once().await;
    let c = connection_status(&app.status().await, id);
    assert!(
        c["lastError"].as_str().unwrap().contains("quotaExceeded"),
        "{c}"
    );
    assert!(c["failingSince"].is_string());
    let (attempts, wait): (i32, f64) = sqlx::query_as(
        "SELECT attempts, extract(epoch FROM run_at - now())::FLOAT8 FROM plansync.jobs \
         WHERE connection_id = $1 AND state = 'queued' AND kind = 'pull'",
    )
    .bind(id)
    .fetch_one(&app.app.pool)
    .await
    .unwrap();
    assert_eq!(attempts, 0);
    assert!((800.0..=15.0 * 60.0 + 5.0).contains(&wait), "{wait}");

    // Retry-After far in the future: capped at the hour.
    sqlx::query("DELETE FROM plansync.jobs")
        .execute(&app.app.pool)
        .await
        .unwrap();
    app.google.inject_fault(
        Operation::List,
        Fault::Respond {
            status: 429,
            headers: BTreeMap::from([
                ("content-type".into(), "application/json".into()),
                ("retry-after".into(), "3000000000".into()),
            ]),
            body: r#"{"error":{"code":429,"message":"slow down","errors":[{"reason":"rateLimitExceeded"}]}}"#.into(),
        },
        1,
    );
    resync(&app, 1, false).await;
    app.run_once().await;
    let wait: f64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM run_at - now())::FLOAT8 FROM plansync.jobs \
         WHERE connection_id = $1 AND state = 'queued' AND kind = 'pull'",
    )
    .bind(id)
    .fetch_one(&app.app.pool)
    .await
    .unwrap();
    assert!(wait <= 3600.0 + 5.0, "snoozed {wait}s");
    assert_eq!(summaries(&app).await, ["alpha", "beta", "gamma"]);
    deltas.assert_no_deletes(&app).await;
}

#[tokio::test]
async fn a_failing_connection_backs_off_as_a_whole_and_dead_jobs_are_bounded() {
    let (app, id, _deltas) = synced().await;
    app.google
        .inject_fault(Operation::List, Fault::BackendError, 100_000);
    resync(&app, 1, false).await;
    app.run_once().await;
    let pulls = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM plansync.jobs WHERE connection_id = $1 AND kind = 'pull'",
        )
        .bind(id)
        .fetch_one(&app.app.pool)
        .await
        .unwrap()
    };
    let after_first = pulls().await;
    // Force the poll slot to be due: only the connection's back-off holds the
    // scheduler back now.
    sqlx::query("UPDATE plansync.connections SET last_pull_at = now() - interval '1 day'")
        .execute(&app.app.pool)
        .await
        .unwrap();
    app.run_once_with(&[("PLANSYNC_POLL_INTERVAL_SECS", "1")])
        .await;
    assert_eq!(pulls().await, after_first, "no new pull while backing off");
    let backoff: bool =
        sqlx::query_scalar("SELECT backoff_until > now() FROM plansync.connections WHERE id = $1")
            .bind(id)
            .fetch_one(&app.app.pool)
            .await
            .unwrap();
    assert!(backoff);
    app.google.clear_faults();

    // Dead jobs: status lists the 50 newest and counts them all; the
    // retention prunes them.
    sqlx::query(
        "INSERT INTO plansync.jobs (kind, connection_id, appointment_id, region, state, attempts, \
             last_error, finished_at) \
         SELECT 'push', $1, g, 'default', 'dead', 8, 'boom', now() - interval '8 days' \
         FROM generate_series(1, 60) g",
    )
    .bind(id)
    .execute(&app.app.pool)
    .await
    .unwrap();
    let status = app.status().await;
    let total = status["queue"]["deadTotal"].as_i64().unwrap();
    assert!(total >= 60);
    assert_eq!(status["queue"]["dead"].as_array().unwrap().len(), 50);
    app.run_once().await;
    let status = app.status().await;
    assert!(
        status["queue"]["deadTotal"].as_i64().unwrap() < total - 59,
        "pruned after 7 days"
    );
}
