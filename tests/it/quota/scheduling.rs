//! The budget's effect on scheduling, and `run` metering every call.

use super::*;

#[tokio::test]
async fn ten_thousand_connections_stretch_the_polling_interval_and_status_says_so() {
    // 600/min with half for polling: 300 polls/min, so 10,000 connections
    // need 2,000 s between polls instead of the configured 300 s.
    let sync = SyncApp::spawn().await;
    sqlx::query("INSERT INTO users (id) SELECT g FROM generate_series(1, 10000) g")
        .execute(&sync.app.pool)
        .await
        .unwrap();
    // Every connection last pulled 100 s ago: with 300 s slots about a third
    // would be due, with 2,000 s slots about one in twenty.
    sqlx::query(
        "INSERT INTO plansync.connections (user_id, calendar_id, region, last_pull_at) \
         SELECT g, 'cal-' || g, 'default', now() - interval '100 seconds' \
         FROM generate_series(1, 10000) g",
    )
    .execute(&sync.app.pool)
    .await
    .unwrap();
    let settings = quota_settings(600, 500);
    let r = replica(&sync, "a", settings, &crate::harness::redis_url(), 2).await;
    let (scheduled, _) = r.worker.tick().await.unwrap();
    assert_eq!(r.worker.poll_interval(), Duration::from_secs(2_000));
    assert!(
        (200..=900).contains(&scheduled),
        "{scheduled} polls scheduled (about 500 expected; 3,333 unstretched)"
    );
    // Scheduled polls queue behind everything else.
    let priorities: Vec<i16> = sqlx::query_scalar(
        "SELECT DISTINCT priority FROM plansync.jobs WHERE kind = 'pull' AND state = 'queued'",
    )
    .fetch_all(&sync.app.pool)
    .await
    .unwrap();
    assert_eq!(priorities, vec![2]);

    let mut cmd = sync.command();
    cmd.env("PLANSYNC_GOOGLE_QPM", "600");
    let out = crate::harness::run_command(cmd, &["status", "--json"], "").await;
    assert!(out.status.success(), "{}", stderr(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let quota = &status["quota"];
    assert_eq!(quota["budgetPerMin"], 600, "{quota}");
    assert_eq!(quota["pollIntervalSecs"], 2_000, "{quota}");
    assert_eq!(quota["configuredPollIntervalSecs"], 300, "{quota}");
    assert_eq!(quota["polledConnections"], 10_000, "{quota}");
    assert!(quota["usedPerMin"].is_i64(), "{quota}");

    let mut cmd = sync.command();
    cmd.env("PLANSYNC_GOOGLE_QPM", "600");
    let out = crate::harness::run_command(cmd, &["status"], "").await;
    let text = stdout(&out);
    assert!(text.contains("polling every 2000s"), "{text}");
    assert!(text.contains("STRETCHED from 300s"), "{text}");

    // The default budget polls them every 300 s: nothing stretched.
    let status = sync.status().await;
    assert_eq!(status["quota"]["pollIntervalSecs"], 300);
    assert_eq!(status["quota"]["budgetPerMin"], 9_000);
}

#[tokio::test]
async fn pushes_and_resyncs_are_claimed_before_scheduled_polls() {
    let sync = SyncApp::spawn().await;
    let user = connection(&sync, 1, "cal-1").await;
    connection(&sync, 2, "cal-2").await;
    // A scheduled poll of user 2's connection, due first...
    sqlx::query("UPDATE plansync.connections SET last_pull_at = NULL WHERE user_id = 2")
        .execute(&sync.app.pool)
        .await
        .unwrap();
    let r = replica(
        &sync,
        "a",
        quota_settings(600, 500),
        "redis://127.0.0.1:9",
        1,
    )
    .await;
    r.worker.tick().await.unwrap();
    // ...then a push of user 1, enqueued later.
    appointments(&sync, user, 1).await;
    let job = r
        .worker
        .queue()
        .claim("default", "test")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(job.kind.as_str(), "push");
    // A resync of the polled connection raises its queued poll's priority.
    let out = sync.run(&["resync", "--user", "2"], "").await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        count(
            &sync,
            "SELECT priority::BIGINT FROM plansync.jobs WHERE kind = 'pull' AND state = 'queued'"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn run_meters_every_call_and_snoozes_a_job_without_budget() {
    // One request a minute: the token refresh takes it, the listing finds
    // none within the bounded wait and its job snoozes, spending no attempt.
    let sync = SyncApp::spawn().await;
    sync.connect(1, "primary", &[]).await;
    let mut cmd = sync.command();
    cmd.env("RUST_LOG", "info")
        .env("PLANSYNC_HTTP_ADDR", "127.0.0.1:0")
        .env("PLANSYNC_GOOGLE_QPM", "1")
        .env("PLANSYNC_SHUTDOWN_GRACE_SECS", "1")
        .arg("run");
    let mut run = crate::harness::RunningWorker::spawn(cmd).await;

    let run_ref = &run;
    let metrics = eventually(
        Duration::from_secs(30),
        "the over-budget call",
        || async move {
            let metrics = run_ref.get("/metrics").await.1;
            metrics
                .contains(r#"plansync_google_calls_total{operation="list",outcome="over_budget"}"#)
                .then_some(metrics)
        },
    )
    .await;
    assert!(
        metrics.contains(r#"plansync_google_calls_total{operation="token",outcome="ok"} 1"#),
        "{metrics}"
    );
    assert!(
        !metrics.contains(r#"operation="list",outcome="ok""#),
        "{metrics}"
    );
    assert!(
        metrics.contains("plansync_quota_budget_per_min 1"),
        "{metrics}"
    );
    assert!(metrics.contains("plansync_quota_shared 1"), "{metrics}");
    // Only the token request reached Google.
    let sent: Vec<_> = sync
        .google
        .requests()
        .iter()
        .map(|r| format!("{:?}", r.operation))
        .collect();
    assert_eq!(sent, vec!["Token"], "{sent:?}");
    // The job is snoozed, not failed: queued, no attempt spent, the reason
    // shown; and the fleet's use shows in status once a heartbeat carries it.
    let status = eventually(Duration::from_secs(20), "the use in status", || async {
        let status = sync.status().await;
        (status["quota"]["usedPerMin"] == 1).then_some(status)
    })
    .await;
    assert_eq!(
        status["quota"]["budgetPerMin"], 9_000,
        "status reads its own env"
    );
    assert_eq!(status["quota"]["liveWorkers"], 1);
    let (state, attempts, error): (String, i32, Option<String>) = sqlx::query_as(
        "SELECT state, attempts, last_error FROM plansync.jobs WHERE kind = 'full_resync'",
    )
    .fetch_one(&sync.app.pool)
    .await
    .unwrap();
    assert_eq!((state.as_str(), attempts), ("queued", 0));
    assert!(
        error
            .as_deref()
            .unwrap_or("")
            .contains("no Google request budget left"),
        "{error:?}"
    );

    run.sigterm().await;
    assert_eq!(run.exit_code(Duration::from_secs(15)).await, Some(0));
}
