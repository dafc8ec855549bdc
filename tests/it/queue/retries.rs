//! Enqueue dedup, retries with back-off, dead jobs, rate-limit snoozes.

use super::*;

#[tokio::test]
async fn enqueue_dedups_queued_jobs_and_leaves_one_follow_up_behind_a_running_one() {
    let app = TestApp::spawn().await;
    app.add_user(1).await;
    let conn = add_connection(&app, 1, "primary", "default").await;
    let queue = Queue::new(app.pool.clone(), queue_settings(8, 5, 60));
    let first = queue
        .enqueue(JobKind::Pull, conn, None, false)
        .await
        .unwrap();
    assert_eq!(
        queue
            .enqueue(JobKind::Pull, conn, None, false)
            .await
            .unwrap(),
        first
    );
    // Other kinds and other appointments are other jobs.
    let full = queue
        .enqueue(JobKind::FullResync, conn, None, false)
        .await
        .unwrap();
    let p1 = queue
        .enqueue(JobKind::Push, conn, Some(AppointmentId(1)), false)
        .await
        .unwrap();
    let p2 = queue
        .enqueue(JobKind::Push, conn, Some(AppointmentId(2)), false)
        .await
        .unwrap();
    assert_eq!(HashSet::from([first, full, p1, p2]).len(), 4);

    let running = queue.claim("default", "w:1").await.unwrap().unwrap();
    assert_eq!(running.id, first);
    let follow_up = queue
        .enqueue(JobKind::Pull, conn, None, false)
        .await
        .unwrap();
    assert_ne!(follow_up, first);
    assert_eq!(
        queue
            .enqueue(JobKind::Pull, conn, None, false)
            .await
            .unwrap(),
        follow_up
    );

    // The running one fails: it folds into the queued follow-up, which takes
    // its backoff and its attempt count.
    let transition = queue
        .fail(&running, &JobError::Retry("503".into()))
        .await
        .unwrap();
    let Transition::Requeued { into, delay } = transition else {
        panic!("{transition:?}")
    };
    assert_eq!(into, follow_up);
    assert!(delay >= Duration::from_secs(5));
    assert_eq!(job_state(&app, first).await.state, "superseded");
    let survivor = job_state(&app, follow_up).await;
    assert_eq!((survivor.state.as_str(), survivor.attempts), ("queued", 1));
    assert!(survivor.due_in_secs > 4.0, "{survivor:?}");
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM plansync.jobs WHERE kind = 'pull' AND state = 'queued'"
        )
        .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_resyncs_of_one_user_leave_one_queued_and_one_running_pull() {
    let app = TestApp::spawn().await;
    app.add_user(1).await;
    add_connection(&app, 1, "primary", "default").await;
    let queue = Queue::new(app.pool.clone(), queue_settings(8, 5, 60));

    let out = app.run(&["resync", "--user", "1"], "").await;
    assert!(out.status.success(), "{}", stderr(&out));
    let running = queue
        .claim("default", "w:1")
        .await
        .unwrap()
        .expect("the first pull");

    let slots = Arc::new(tokio::sync::Semaphore::new(12));
    let mut runs = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let cmd = app.command();
        let slots = slots.clone();
        runs.spawn(async move {
            let _slot = slots.acquire_owned().await.unwrap();
            crate::harness::run_command(cmd, &["resync", "--user", "1"], "").await
        });
    }
    let mut ids = HashSet::new();
    while let Some(out) = runs.join_next().await {
        let out = out.unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        ids.insert(stdout(&out).split_whitespace().nth(2).unwrap().to_owned());
    }
    assert_eq!(
        ids.len(),
        1,
        "every resync named the same queued job: {ids:?}"
    );
    assert!(!ids.contains(&running.id.to_string()));
    let (queued, running_n): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE state = 'queued'), count(*) FILTER (WHERE state = 'running') \
         FROM plansync.jobs WHERE kind = 'pull'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!((queued, running_n), (1, 1));
}

#[tokio::test]
async fn a_job_that_always_fails_is_dead_after_max_attempts_shown_in_status_and_retry_dead_requeues_it(
) {
    let app = TestApp::spawn().await;
    app.add_user(1).await;
    app.add_user(2).await;
    let conn = add_connection(&app, 1, "primary", "default").await;
    let other = add_connection(&app, 2, "primary", "default").await;
    let settings = queue_settings(3, 0, 60);
    let queue = Queue::new(app.pool.clone(), settings.clone());
    let id = queue
        .enqueue(JobKind::Pull, conn, None, false)
        .await
        .unwrap();
    let other_id = queue
        .enqueue(JobKind::Pull, other, None, false)
        .await
        .unwrap();

    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let worker = Worker::new(
        app.pool.clone(),
        worker_config("default", settings),
        FnHandler(move |_ctx: JobContext, job: Job| {
            let r = r.clone();
            async move {
                r.fetch_add(1, Ordering::SeqCst);
                Err(JobError::retry(format!(
                    "calendar API answered 503 (attempt {})",
                    job.attempt
                )))
            }
        }),
    );
    // A zero base makes every retry due during the pass, so one pass runs
    // both jobs to their end.
    worker.run_once().await.unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 6);
    let state = job_state(&app, id).await;
    assert_eq!((state.state.as_str(), state.attempts), ("dead", 3));
    assert_eq!(
        state.last_error.as_deref(),
        Some("calendar API answered 503 (attempt 3)")
    );

    let status = status_json(&app, &["--user", "1"]).await;
    let dead = status["queue"]["dead"].as_array().unwrap();
    assert_eq!(dead.len(), 1, "{status}");
    assert_eq!(dead[0]["jobId"], id.0);
    assert_eq!(dead[0]["kind"], "pull");
    assert_eq!(dead[0]["connectionId"], conn.0);
    assert_eq!(dead[0]["attempts"], 3);
    assert_eq!(
        dead[0]["lastError"],
        "calendar API answered 503 (attempt 3)"
    );
    assert_eq!(status["queue"]["depth"], 0);

    let out = app
        .run(&["jobs", "retry", "--dead", "--user", "1"], "")
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("requeued 1 dead jobs"),
        "{}",
        stdout(&out)
    );
    let state = job_state(&app, id).await;
    assert_eq!((state.state.as_str(), state.attempts), ("queued", 0));
    assert!(state.due_in_secs <= 0.0);
    assert_eq!(
        job_state(&app, other_id).await.state,
        "dead",
        "--user limits it"
    );
    let status = status_json(&app, &["--user", "1"]).await;
    assert_eq!(status["queue"]["dead"].as_array().unwrap().len(), 0);
    assert_eq!(status["queue"]["depth"], 1);

    let out = app.run(&["jobs", "retry"], "").await;
    assert_eq!(out.status.code(), Some(2), "--dead is required");
}

#[tokio::test]
async fn retries_back_off_exponentially_from_the_base() {
    let app = TestApp::spawn().await;
    app.add_user(1).await;
    let conn = add_connection(&app, 1, "primary", "default").await;
    let queue = Queue::new(app.pool.clone(), queue_settings(8, 5, 60));
    let id = queue
        .enqueue(JobKind::Pull, conn, None, false)
        .await
        .unwrap();
    for (failures, floor) in [(1, 5.0), (2, 10.0), (3, 20.0)] {
        sqlx::query("UPDATE plansync.jobs SET run_at = now() WHERE id = $1")
            .bind(id)
            .execute(&app.pool)
            .await
            .unwrap();
        let job = queue.claim("default", "w:1").await.unwrap().unwrap();
        queue
            .fail(&job, &JobError::Retry("timeout".into()))
            .await
            .unwrap();
        let state = job_state(&app, id).await;
        assert_eq!(state.attempts, failures);
        assert!(
            state.due_in_secs > floor - 1.0 && state.due_in_secs < 2.0 * floor + 1.0,
            "after {failures} failures: due in {}",
            state.due_in_secs
        );
    }
    // A fatal error is dead at once.
    sqlx::query("UPDATE plansync.jobs SET run_at = now() WHERE id = $1")
        .bind(id)
        .execute(&app.pool)
        .await
        .unwrap();
    let job = queue.claim("default", "w:1").await.unwrap().unwrap();
    let t = queue
        .fail(&job, &JobError::Fatal("400 badRequest".into()))
        .await
        .unwrap();
    assert_eq!(t, Transition::Dead);
    assert_eq!(job_state(&app, id).await.attempts, 4);
}

#[tokio::test]
async fn a_rate_limited_job_snoozes_without_spending_an_attempt() {
    let app = TestApp::spawn().await;
    app.add_user(1).await;
    let conn = add_connection(&app, 1, "primary", "default").await;
    // One attempt only: a spent attempt would kill it.
    let settings = queue_settings(1, 0, 60);
    let queue = Queue::new(app.pool.clone(), settings.clone());
    let id = queue
        .enqueue(JobKind::Push, conn, Some(AppointmentId(9)), false)
        .await
        .unwrap();
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let worker = Worker::new(
        app.pool.clone(),
        worker_config("default", settings),
        FnHandler(move |_ctx: JobContext, _job: Job| {
            let r = r.clone();
            async move {
                r.fetch_add(1, Ordering::SeqCst);
                Err(JobError::Snooze {
                    after: Duration::from_secs(30),
                    reason: "429 rateLimitExceeded".into(),
                })
            }
        }),
    );
    worker.run_once().await.unwrap();
    let state = job_state(&app, id).await;
    assert_eq!((state.state.as_str(), state.attempts), ("queued", 0));
    assert!(
        state.due_in_secs > 28.0 && state.due_in_secs <= 30.0,
        "{state:?}"
    );
    assert!(state.last_error.unwrap().contains("rateLimitExceeded"));
    // Not due yet: the next pass leaves it.
    worker.run_once().await.unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    // Due again: it runs, snoozes again, still no attempt spent.
    sqlx::query("UPDATE plansync.jobs SET run_at = now() WHERE id = $1")
        .bind(id)
        .execute(&app.pool)
        .await
        .unwrap();
    worker.run_once().await.unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    let state = job_state(&app, id).await;
    assert_eq!((state.state.as_str(), state.attempts), ("queued", 0));
}
