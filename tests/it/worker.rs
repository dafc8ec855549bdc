//! The worker runtime and its commands: `run`, `run --once`, `resync`,
//! graceful shutdown, the scheduler, the HTTP endpoints.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use plansync::queue::{Job, JobKind, Queue};
use plansync::worker::{JobContext, Worker};
use tokio_util::sync::CancellationToken;

use crate::harness::jobs::{
    add_connection, eventually, job_state, queue_settings, worker_config, FnHandler,
};
use crate::harness::{count, status_json, stderr, stdout, RunningWorker, TestApp};

/// The binary with what `run` needs on top of the harness's environment.
fn worker_command(app: &TestApp) -> tokio::process::Command {
    let mut cmd = app.command();
    cmd.env("GOOGLE_CLIENT_ID", "test-client")
        .env("GOOGLE_CLIENT_SECRET", "test-secret")
        .env("PLANSYNC_HTTP_ADDR", "127.0.0.1:0")
        // Google (a closed local port, see the harness) is unreachable, so
        // every sync job fails; one attempt makes it dead at once.
        .env("PLANSYNC_MAX_ATTEMPTS", "1");
    cmd
}

async fn connect(app: &TestApp, user: &str) -> i64 {
    let out = app
        .run(
            &["connect", "--user", user, "--calendar", "primary"],
            "tok\n",
        )
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out).trim().parse().unwrap()
}

#[tokio::test]
async fn connect_enqueues_the_first_full_sync_due_at_once() {
    let app = TestApp::spawn().await;
    app.add_user(1).await;
    let id = connect(&app, "1").await;
    let (kind, due): (String, bool) = sqlx::query_as(
        "SELECT kind, run_at <= now() FROM plansync.jobs WHERE connection_id = $1 AND state = 'queued'",
    )
    .bind(id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!((kind.as_str(), due), ("full_resync", true));
    // Re-connecting (re-authorisation) keeps one queued full sync.
    connect(&app, "1").await;
    assert_eq!(count(&app, "SELECT count(*) FROM plansync.jobs").await, 1);
    // Moving the connection to another region moves its queued jobs along.
    let out = app
        .run(
            &[
                "connect",
                "--user",
                "1",
                "--calendar",
                "primary",
                "--region",
                "eu",
            ],
            "tok\n",
        )
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let region: String = sqlx::query_scalar("SELECT region FROM plansync.jobs")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(region, "eu");
}

#[tokio::test]
async fn run_once_returns_after_a_pass_and_exits_zero_without_pretending_jobs_succeeded() {
    let app = TestApp::spawn().await;
    app.add_user(1).await;
    let conn = connect(&app, "1").await;
    let started = Instant::now();
    let out = crate::harness::run_command(worker_command(&app), &["run", "--once"], "").await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(30));
    // Google is unreachable: the job fails, visibly, and the pass still
    // counts as run.
    let (state, error): (String, Option<String>) = sqlx::query_as(
        "SELECT state, last_error FROM plansync.jobs WHERE connection_id = $1 AND kind = 'full_resync'",
    )
    .bind(conn)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(state, "dead");
    assert!(
        error
            .as_deref()
            .is_some_and(|e| e.starts_with("Google is temporarily unavailable")),
        "{error:?}"
    );
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM plansync.jobs WHERE state = 'succeeded'"
        )
        .await,
        0
    );

    // It could not run: exit 1 with the reason.
    let mut unreachable = worker_command(&app);
    unreachable.env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/nothing");
    let out = crate::harness::run_command(unreachable, &["run", "--once"], "").await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let mut no_client = worker_command(&app);
    no_client.env_remove("GOOGLE_CLIENT_ID");
    let out = crate::harness::run_command(no_client, &["run", "--once"], "").await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("GOOGLE_CLIENT_ID"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn run_once_runs_follow_ups_that_become_due_during_the_pass() {
    let app = TestApp::spawn().await;
    app.add_user(1).await;
    let conn = add_connection(&app, 1, "primary", "default").await;
    let queue = Queue::new(app.pool.clone(), queue_settings(8, 0, 60));
    queue
        .enqueue(JobKind::Pull, conn, None, false)
        .await
        .unwrap();
    queue
        .enqueue(JobKind::FullResync, conn, None, false)
        .await
        .unwrap();
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let worker = Worker::new(
        app.pool.clone(),
        worker_config("default", queue_settings(8, 0, 60)),
        FnHandler(move |ctx: JobContext, job: Job| {
            let r = r.clone();
            async move {
                // The first run of each enqueues a follow-up pull (as a
                // webhook arriving mid-pass would); pulls of one connection
                // never overlap, so it waits for this one.
                if r.fetch_add(1, Ordering::SeqCst) == 0 {
                    Queue::new(ctx.pool.clone(), queue_settings(8, 0, 60))
                        .enqueue(JobKind::Pull, job.connection, None, false)
                        .await?;
                }
                job.complete(&ctx.pool).await
            }
        }),
    );
    let pass = worker.run_once().await.unwrap();
    assert_eq!((pass.ran, pass.succeeded), (3, 3), "{pass:?}");
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM plansync.jobs WHERE state <> 'succeeded'"
        )
        .await,
        0
    );
}

#[tokio::test]
async fn the_scheduler_enqueues_due_pulls_at_once_and_skips_connections_that_cannot_sync() {
    let app = TestApp::spawn().await;
    app.add_user(1).await;
    let never = add_connection(&app, 1, "never", "default").await;
    let fresh = add_connection(&app, 1, "fresh", "default").await;
    let stale = add_connection(&app, 1, "stale", "default").await;
    let reauth = add_connection(&app, 1, "reauth", "default").await;
    let gone = add_connection(&app, 1, "gone", "default").await;
    let inactive = add_connection(&app, 1, "inactive", "default").await;
    let busy = add_connection(&app, 1, "busy", "default").await;
    let elsewhere = add_connection(&app, 1, "elsewhere", "us").await;
    sqlx::query(
        "UPDATE plansync.connections SET \
             last_pull_at = CASE WHEN calendar_id = 'fresh' THEN now() \
                                 WHEN calendar_id = 'never' THEN NULL \
                                 ELSE now() - interval '1 hour' END, \
             needs_reauth = (calendar_id = 'reauth'), calendar_gone = (calendar_id = 'gone'), \
             active = (calendar_id <> 'inactive')",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let queue = Queue::new(app.pool.clone(), queue_settings(8, 5, 60));
    let busy_job = queue
        .enqueue(JobKind::FullResync, busy, None, false)
        .await
        .unwrap();

    let mut config = worker_config("default", queue_settings(8, 5, 60));
    config.poll_interval = Duration::from_secs(600);
    let worker = Worker::new(
        app.pool.clone(),
        config,
        FnHandler(|_: JobContext, _: Job| async {
            Err(plansync::queue::JobError::Fatal("unused".into()))
        }),
    );
    let (scheduled, _) = worker.tick().await.unwrap();
    assert_eq!(scheduled, 2);
    let pulls: Vec<(i64, bool)> = sqlx::query_as(
        "SELECT connection_id, run_at <= now() FROM plansync.jobs WHERE kind = 'pull' ORDER BY connection_id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(pulls, vec![(never.0, true), (stale.0, true)]);
    for c in [fresh, reauth, gone, inactive, busy, elsewhere] {
        assert!(!pulls.iter().any(|(id, _)| *id == c.0));
    }
    // Ticking again adds nothing: the queued pulls stand.
    assert_eq!(worker.tick().await.unwrap().0, 0);
    assert_eq!(job_state(&app, busy_job).await.state, "queued");

    // With a 60 s interval, a connection pulled 30 s ago is due exactly when
    // its slot (shifted by its stable offset) has begun since.
    sqlx::query("DELETE FROM plansync.jobs")
        .execute(&app.pool)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE plansync.connections SET last_pull_at = now() - interval '30 seconds', \
             needs_reauth = FALSE, calendar_gone = FALSE, active = TRUE",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let expected: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM plansync.connections c WHERE region = 'default' AND \
             mod(extract(epoch FROM now())::NUMERIC - mod(abs(hashint8(c.id)::BIGINT), 60) + 60, 60) < 30",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let mut config = worker_config("default", queue_settings(8, 5, 60));
    config.poll_interval = Duration::from_secs(60);
    let worker = Worker::new(
        app.pool.clone(),
        config,
        FnHandler(|_: JobContext, _: Job| async {
            Err(plansync::queue::JobError::Fatal("unused".into()))
        }),
    );
    let (scheduled, _) = worker.tick().await.unwrap();
    // The two counts can straddle a second boundary; allow that one slot.
    assert!(
        (scheduled as i64 - expected).abs() <= 1,
        "{scheduled} vs {expected}"
    );
    let offsets: Vec<i64> = sqlx::query_scalar(
        "SELECT mod(abs(hashint8(id)::BIGINT), 60) FROM plansync.connections ORDER BY id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert!(
        offsets
            .iter()
            .collect::<std::collections::HashSet<_>>()
            .len()
            > 1,
        "offsets spread the fleet: {offsets:?}"
    );
}

// ---- shutdown -------------------------------------------------------------------

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

// ---- resync -------------------------------------------------------------------

#[tokio::test]
async fn resync_wait_reports_success_death_and_timeout() {
    let app = TestApp::spawn().await;
    app.add_user(1).await;
    app.add_user(2).await;
    let conn = add_connection(&app, 1, "primary", "default").await;
    sqlx::query("UPDATE plansync.connections SET calendar_gone = TRUE WHERE id = $1")
        .bind(conn)
        .execute(&app.pool)
        .await
        .unwrap();

    // Nobody runs it: the timeout passes.
    let out = app
        .run(&["resync", "--user", "1", "--wait", "--timeout", "1"], "")
        .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("timed out while queued"),
        "{}",
        stdout(&out)
    );
    let gone: bool =
        sqlx::query_scalar("SELECT calendar_gone FROM plansync.connections WHERE id = $1")
            .bind(conn)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(!gone, "resync is how a gone calendar is tried again");

    // A worker completes it: exit 0.
    let worker = Worker::new(
        app.pool.clone(),
        worker_config("default", queue_settings(8, 5, 60)),
        FnHandler(|ctx: JobContext, job: Job| async move { job.complete(&ctx.pool).await }),
    );
    let shutdown = CancellationToken::new();
    let running = tokio::spawn({
        let (worker, shutdown) = (worker.clone(), shutdown.clone());
        async move { worker.run(shutdown).await }
    });
    let out = app
        .run(
            &[
                "resync",
                "--user",
                "1",
                "--full",
                "--wait",
                "--timeout",
                "60",
            ],
            "",
        )
        .await;
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("succeeded"), "{}", stdout(&out));
    shutdown.cancel();
    running.await.unwrap().unwrap();

    // The binary's pull cannot succeed here: dead, exit 1, with the error.
    let mut waiting = app.command();
    waiting.kill_on_drop(true);
    let waiter = tokio::spawn(crate::harness::run_command(
        waiting,
        &["resync", "--user", "1", "--wait", "--timeout", "60"],
        "",
    ));
    eventually(30, "the resync job is queued", || {
        let pool = app.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM plansync.jobs WHERE kind = 'pull' AND state = 'queued'",
            )
            .fetch_one(&pool)
            .await
            .unwrap()
                == 1
        }
    })
    .await;
    let pass = crate::harness::run_command(worker_command(&app), &["run", "--once"], "").await;
    assert!(pass.status.success(), "{}", stderr(&pass));
    let out = waiter.await.unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("dead after 1 attempts: connection 1 has no refresh token"),
        "{}",
        stdout(&out)
    );

    // A user without an active connection: nothing to resync.
    let out = app.run(&["resync", "--user", "2"], "").await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("user 2 has no active connection"),
        "{}",
        stderr(&out)
    );
    let out = app
        .run(&["resync", "--user", "1", "--timeout", "5"], "")
        .await;
    assert_eq!(out.status.code(), Some(2), "--timeout needs --wait");
}

#[tokio::test]
async fn a_panicking_handler_fails_its_job_instead_of_leaving_it_running() {
    let app = TestApp::spawn().await;
    app.add_user(1).await;
    let conn = add_connection(&app, 1, "primary", "default").await;
    let settings = queue_settings(8, 60, 60);
    let queue = Queue::new(app.pool.clone(), settings.clone());
    let id = queue
        .enqueue(JobKind::Pull, conn, None, false)
        .await
        .unwrap();
    let worker = Worker::new(
        app.pool.clone(),
        worker_config("default", settings),
        FnHandler(|_: JobContext, _: Job| async { panic!("bug in a handler") }),
    );
    let pass = worker.run_once().await.unwrap();
    assert_eq!((pass.ran, pass.failed), (1, 1));
    let state = job_state(&app, id).await;
    assert_eq!((state.state.as_str(), state.attempts), ("queued", 1));
    assert_eq!(
        state.last_error.as_deref(),
        Some("the job handler panicked: bug in a handler")
    );
}

#[tokio::test]
async fn sigterm_during_a_long_google_call_exits_zero_within_the_grace_and_releases_the_lease() {
    let app = crate::harness::SyncApp::spawn().await;
    app.connect(1, "primary", &[]).await;
    // The first sync's listing hangs far longer than the grace period.
    app.google.inject_fault(
        plansync::fake_google::Operation::List,
        plansync::fake_google::Fault::Delay {
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
                .any(|r| r.operation == plansync::fake_google::Operation::Token)
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

#[tokio::test]
async fn a_heartbeat_after_the_job_completed_does_not_turn_its_success_into_a_lost_lease() {
    let app = TestApp::spawn().await;
    app.add_user(1).await;
    let conn = add_connection(&app, 1, "primary", "default").await;
    // A 1 s lease: a heartbeat every third of a second.
    let settings = queue_settings(8, 60, 1);
    let queue = Queue::new(app.pool.clone(), settings.clone());
    let id = queue
        .enqueue(JobKind::Pull, conn, None, false)
        .await
        .unwrap();
    // The handler completes the job, then takes a while to return (closing
    // what it used): a heartbeat runs in between and finds no lease, because
    // the completion cleared it.
    let worker = Worker::new(
        app.pool.clone(),
        worker_config("default", settings),
        FnHandler(|ctx: JobContext, job: Job| async move {
            let done = job.complete(&ctx.pool).await?;
            tokio::time::sleep(Duration::from_millis(800)).await;
            Ok(done)
        }),
    );
    let pass = worker.run_once().await.unwrap();
    assert_eq!((pass.ran, pass.succeeded, pass.failed), (1, 1, 0));
    assert_eq!(job_state(&app, id).await.state, "succeeded");
}
