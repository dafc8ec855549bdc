//! `connect`, `run --once` and `resync --wait` as commands.

use super::*;

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
