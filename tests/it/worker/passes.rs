//! The runtime's passes: follow-ups, the scheduler, panicking handlers,
//! late heartbeats.

use super::*;

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
