//! Graceful shutdown, in-process and of `plansync run` on SIGTERM, and its
//! HTTP endpoints.

use super::*;

#[tokio::test]
async fn on_shutdown_a_long_job_is_stopped_after_the_grace_period_and_its_lease_released() {
    let app = TestApp::spawn().await;
    app.add_user(1).await;
    let conn = add_connection(&app, 1, "primary", "default").await;
    let queue = Queue::new(app.pool.clone(), queue_settings(8, 5, 60));
    let id = queue
        .enqueue(JobKind::Pull, conn, None, false)
        .await
        .unwrap();
    let started = Arc::new(AtomicUsize::new(0));
    let s = started.clone();
    let mut config = worker_config("default", queue_settings(8, 5, 60));
    config.shutdown_grace = Duration::from_secs(1);
    let worker = Worker::new(
        app.pool.clone(),
        config,
        FnHandler(move |ctx: JobContext, job: Job| {
            let s = s.clone();
            async move {
                s.fetch_add(1, Ordering::SeqCst);
                // A job far longer than the grace period.
                tokio::time::sleep(Duration::from_secs(3600)).await;
                job.complete(&ctx.pool).await
            }
        }),
    );
    let shutdown = CancellationToken::new();
    let running = tokio::spawn({
        let (worker, shutdown) = (worker.clone(), shutdown.clone());
        async move { worker.run(shutdown).await }
    });
    eventually(10, "the job starts", || {
        let s = started.clone();
        async move { s.load(Ordering::SeqCst) == 1 }
    })
    .await;
    let status = status_json(&app, &[]).await;
    let running_jobs = status["queue"]["running"].as_array().unwrap();
    assert_eq!(running_jobs.len(), 1);
    assert_eq!(running_jobs[0]["jobId"], id.0);
    assert_eq!(running_jobs[0]["kind"], "pull");
    assert_eq!(running_jobs[0]["connectionId"], conn.0);
    assert!(running_jobs[0]["lockedBy"]
        .as_str()
        .unwrap()
        .starts_with("test-default:"));
    assert!(running_jobs[0]["lockedUntil"]
        .as_str()
        .unwrap()
        .ends_with('Z'));

    let stopping = Instant::now();
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the worker stops soon after the grace period")
        .unwrap()
        .unwrap();
    let took = stopping.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(5),
        "{took:?}"
    );
    let state = job_state(&app, id).await;
    assert_eq!(
        (state.state.as_str(), state.attempts),
        ("queued", 0),
        "released, no attempt spent"
    );
    assert!(state.claim_token.is_none());
    assert!(state.due_in_secs <= 0.0);
}

#[tokio::test]
async fn on_shutdown_a_job_that_finishes_within_the_grace_period_completes() {
    let app = TestApp::spawn().await;
    app.add_user(1).await;
    let conn = add_connection(&app, 1, "primary", "default").await;
    let queue = Queue::new(app.pool.clone(), queue_settings(8, 5, 60));
    let id = queue
        .enqueue(JobKind::Pull, conn, None, false)
        .await
        .unwrap();
    let started = Arc::new(AtomicUsize::new(0));
    let finish = Arc::new(tokio::sync::Notify::new());
    let (s, f) = (started.clone(), finish.clone());
    let worker = Worker::new(
        app.pool.clone(),
        worker_config("default", queue_settings(8, 5, 60)),
        FnHandler(move |ctx: JobContext, job: Job| {
            let (s, f) = (s.clone(), f.clone());
            async move {
                s.fetch_add(1, Ordering::SeqCst);
                f.notified().await;
                job.complete(&ctx.pool).await
            }
        }),
    );
    let shutdown = CancellationToken::new();
    let running = tokio::spawn({
        let (worker, shutdown) = (worker.clone(), shutdown.clone());
        async move { worker.run(shutdown).await }
    });
    eventually(10, "the job starts", || {
        let s = started.clone();
        async move { s.load(Ordering::SeqCst) == 1 }
    })
    .await;
    shutdown.cancel();
    // New work is not claimed any more, but the running job may finish.
    let second = add_connection(&app, 1, "second", "default").await;
    let later = queue
        .enqueue(JobKind::Pull, second, None, false)
        .await
        .unwrap();
    finish.notify_one();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(job_state(&app, id).await.state, "succeeded");
    assert_eq!(job_state(&app, later).await.state, "queued");
}

#[tokio::test]
async fn run_serves_health_and_metrics_and_exits_zero_on_sigterm() {
    let app = TestApp::spawn().await;
    app.add_user(1).await;
    connect(&app, "1").await;
    let mut cmd = worker_command(&app);
    cmd.env("RUST_LOG", "info")
        .env("PLANSYNC_LOG_FORMAT", "json")
        .env("PLANSYNC_SHUTDOWN_GRACE_SECS", "2")
        .arg("run");
    let mut run = RunningWorker::spawn(cmd).await;

    assert_eq!(run.get("/healthz").await.0, 200);
    assert_eq!(run.get("/readyz").await.0, 200);
    // No PLANSYNC_API_TOKEN: the catch-up route is not served at all.
    assert_eq!(run.get("/users/1/deltas?after=0").await.0, 404);
    // The connect's full sync is claimed and (Google being unreachable) dies.
    let mut metrics = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !metrics.contains("plansync_jobs_total{kind=\"full_resync\",outcome=\"dead\"} 1") {
        assert!(Instant::now() < deadline, "no job metrics: {metrics}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        metrics = run.get("/metrics").await.1;
    }
    assert!(
        metrics.contains("plansync_jobs_claimed_total{kind=\"full_resync\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("plansync_job_duration_seconds"),
        "{metrics}"
    );

    let stopping = Instant::now();
    run.sigterm().await;
    let code = run.exit_code(Duration::from_secs(15)).await;
    assert_eq!(code, Some(0), "{}", run.log());
    assert!(stopping.elapsed() < Duration::from_secs(5));
    let rest = run.log();
    assert!(rest.contains("SIGTERM received"), "{rest}");
}

#[tokio::test]
async fn sigterm_during_a_long_google_call_exits_zero_within_the_grace_and_releases_the_lease() {
    let app = crate::harness::SyncApp::spawn().await;
    app.connect(1, "primary", &[]).await;
    // The first sync's listing hangs far longer than the grace period.
    app.google.inject_fault(
        plansync_fake_google::Operation::List,
        plansync_fake_google::Fault::Delay {
            millis: Duration::from_secs(60),
        },
        1,
    );
    let mut cmd = app.command();
    cmd.args(["run"])
        .env("PLANSYNC_HTTP_ADDR", "127.0.0.1:0")
        .env("PLANSYNC_SHUTDOWN_GRACE_SECS", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().unwrap();
    eventually(30, "the full sync to be running", || {
        let pool = app.app.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM plansync.jobs WHERE state = 'running'",
            )
            .fetch_one(&pool)
            .await
            .unwrap()
                == 1
        }
    })
    .await;
    // The log records a call when it is answered: once the token is, the
    // job is at (or about to make) the listing that hangs.
    eventually(30, "the job to have its access token", || {
        let google = &app.google;
        async move {
            google
                .requests()
                .iter()
                .any(|r| r.operation == plansync_fake_google::Operation::Token)
        }
    })
    .await;
    let stopping = Instant::now();
    let pid = child.id().unwrap().to_string();
    let kill = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(kill.success());
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("the worker exits")
        .unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "exited {:?} after SIGTERM with a 1 s grace",
        stopping.elapsed()
    );
    let (state, token, attempts): (String, Option<uuid::Uuid>, i32) = sqlx::query_as(
        "SELECT state, claim_token, attempts FROM plansync.jobs WHERE kind = 'full_resync'",
    )
    .fetch_one(&app.app.pool)
    .await
    .unwrap();
    assert_eq!(state, "queued", "released back to the queue");
    assert!(token.is_none(), "no lease left behind");
    assert_eq!(attempts, 0, "a release spends no attempt");
}
