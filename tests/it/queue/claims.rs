//! Claims (one per connection, per region, only runnable ones), leases,
//! fencing and the rescue of expired leases.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_claimers_racing_on_1000_jobs_claim_each_once_and_never_two_per_connection() {
    let app = TestApp::spawn().await;
    app.add_user(1).await;
    let mut connections = Vec::new();
    for c in 0..100 {
        connections.push(add_connection(&app, 1, &format!("cal{c}"), "default").await);
    }
    // 10 push jobs (distinct appointments) per connection.
    sqlx::query(
        "INSERT INTO plansync.jobs (kind, connection_id, appointment_id, region) \
         SELECT 'push', c, a, 'default' FROM UNNEST($1::BIGINT[]) AS c, generate_series(1, 10) a",
    )
    .bind(connections.iter().map(|c| c.0).collect::<Vec<_>>())
    .execute(&app.pool)
    .await
    .unwrap();

    let running: Arc<Mutex<HashSet<ConnectionId>>> = Arc::default();
    let claimed: Arc<Mutex<Vec<JobId>>> = Arc::default();
    let mut claimers = Vec::new();
    for name in ["a:1", "b:2"] {
        let queue = Queue::new(app.pool.clone(), queue_settings(8, 5, 60));
        let (running, claimed, pool) = (running.clone(), claimed.clone(), app.pool.clone());
        claimers.push(tokio::spawn(async move {
            let mut mine = 0usize;
            loop {
                match queue.claim("default", name).await.unwrap() {
                    Some(job) => {
                        assert!(
                            running.lock().unwrap().insert(job.connection),
                            "two running jobs for connection {}",
                            job.connection
                        );
                        claimed.lock().unwrap().push(job.id);
                        tokio::task::yield_now().await;
                        // Leave the set before the completion commits, so the
                        // other claimer can never see a stale entry.
                        running.lock().unwrap().remove(&job.connection);
                        let _ = job.complete(&pool).await.unwrap();
                        mine += 1;
                    }
                    None => {
                        let left: i64 = sqlx::query_scalar(
                            "SELECT count(*) FROM plansync.jobs WHERE state IN ('queued', 'running')",
                        )
                        .fetch_one(&pool)
                        .await
                        .unwrap();
                        if left == 0 {
                            return mine;
                        }
                        tokio::task::yield_now().await;
                    }
                }
            }
        }));
    }
    let mut per_claimer = Vec::new();
    for c in claimers {
        per_claimer.push(c.await.unwrap());
    }
    let claimed = claimed.lock().unwrap().clone();
    assert_eq!(claimed.len(), 1000);
    assert_eq!(
        claimed.iter().collect::<HashSet<_>>().len(),
        1000,
        "a job was claimed twice"
    );
    assert!(
        per_claimer.iter().all(|n| *n > 0),
        "both claimers worked: {per_claimer:?}"
    );
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM plansync.jobs WHERE state = 'succeeded'"
        )
        .await,
        1000
    );
}

#[tokio::test]
async fn a_worker_of_region_eu_never_claims_a_us_job() {
    let app = TestApp::spawn().await;
    app.add_user(1).await;
    let us = add_connection(&app, 1, "us-cal", "us").await;
    let eu = add_connection(&app, 1, "eu-cal", "eu").await;
    let queue = Queue::new(app.pool.clone(), queue_settings(8, 5, 60));
    let us_job = queue.enqueue(JobKind::Pull, us, None, false).await.unwrap();
    let eu_job = queue.enqueue(JobKind::Pull, eu, None, false).await.unwrap();

    let job = queue
        .claim("eu", "eu-worker:1")
        .await
        .unwrap()
        .expect("the eu job");
    assert_eq!(job.id, eu_job);
    assert_eq!(job.region, "eu");
    assert!(queue.claim("eu", "eu-worker:1").await.unwrap().is_none());
    assert_eq!(job_state(&app, us_job).await.state, "queued");

    // A whole pass of an eu worker leaves the us job alone too.
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let worker = Worker::new(
        app.pool.clone(),
        worker_config("eu", queue_settings(8, 5, 60)),
        FnHandler(move |ctx: JobContext, job: Job| {
            let r = r.clone();
            async move {
                r.fetch_add(1, Ordering::SeqCst);
                job.complete(&ctx.pool).await
            }
        }),
    );
    worker.run_once().await.unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    assert_eq!(job_state(&app, us_job).await.state, "queued");
    let job = queue.claim("us", "us-worker:1").await.unwrap().unwrap();
    assert_eq!(job.id, us_job);
}

#[tokio::test]
async fn jobs_of_connections_that_cannot_run_wait_unclaimed() {
    let app = TestApp::spawn().await;
    app.add_user(1).await;
    let queue = Queue::new(app.pool.clone(), queue_settings(8, 5, 60));
    let mut jobs = Vec::new();
    for (cal, flag) in [
        ("a", "needs_reauth"),
        ("b", "calendar_gone"),
        ("c", "NOT active"),
    ] {
        let c = add_connection(&app, 1, cal, "default").await;
        jobs.push(queue.enqueue(JobKind::Pull, c, None, false).await.unwrap());
        sqlx::query(&format!(
            "UPDATE plansync.connections SET {} WHERE id = $1",
            match flag {
                "NOT active" => "active = FALSE".to_owned(),
                f => format!("{f} = TRUE"),
            }
        ))
        .bind(c)
        .execute(&app.pool)
        .await
        .unwrap();
    }
    assert!(queue.claim("default", "w:1").await.unwrap().is_none());
    // Usable again: claimable again.
    sqlx::query("UPDATE plansync.connections SET needs_reauth = FALSE WHERE calendar_id = 'a'")
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        queue.claim("default", "w:1").await.unwrap().unwrap().id,
        jobs[0]
    );
}

#[tokio::test]
async fn a_job_whose_worker_stops_heartbeating_is_rescued_and_rerun_once_and_the_stale_holder_writes_nothing(
) {
    let app = TestApp::spawn().await;
    app.add_user(1).await;
    let conn = add_connection(&app, 1, "primary", "default").await;
    let queue = Queue::new(app.pool.clone(), queue_settings(8, 5, 60));
    let id = queue
        .enqueue(JobKind::Pull, conn, None, false)
        .await
        .unwrap();
    let stale = queue
        .claim("default", "dead-host:1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stale.attempt, 1);

    // The holder dies: nothing extends its lease, which passes.
    sqlx::query(
        "UPDATE plansync.jobs SET locked_until = now() - interval '1 second' WHERE id = $1",
    )
    .bind(id)
    .execute(&app.pool)
    .await
    .unwrap();

    // The rescue puts it back, the lost run counted, the holder named.
    let rescued = queue.rescue("default").await.unwrap();
    assert_eq!((rescued.requeued, rescued.dead), (1, 0));
    let state = job_state(&app, id).await;
    assert_eq!((state.state.as_str(), state.attempts), ("queued", 1));
    assert!(state.last_error.unwrap().contains("dead-host:1"));
    assert!(state.claim_token.is_none());

    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let worker = Worker::new(
        app.pool.clone(),
        worker_config("default", queue_settings(8, 5, 60)),
        FnHandler(move |ctx: JobContext, job: Job| {
            let r = r.clone();
            async move {
                r.fetch_add(1, Ordering::SeqCst);
                assert_eq!(job.attempt, 2, "the lost run counted as an attempt");
                let mut tx = ctx.pool.begin().await?;
                job.fence(&mut tx).await?;
                sqlx::query("UPDATE users SET plan_version = plan_version + 1 WHERE id = 1")
                    .execute(&mut *tx)
                    .await?;
                let done = job.complete_in(&mut tx).await?;
                tx.commit().await?;
                Ok(done)
            }
        }),
    );
    let pass = worker.run_once().await.unwrap();
    assert_eq!((pass.ran, pass.succeeded), (1, 1));
    let state = job_state(&app, id).await;
    assert_eq!((state.state.as_str(), state.attempts), ("succeeded", 1));

    // The stale holder wakes up: every fenced step refuses it, and what it
    // wrote in its transaction never lands.
    let mut tx = app.pool.begin().await.unwrap();
    sqlx::query("UPDATE users SET plan_version = 1000 WHERE id = 1")
        .execute(&mut *tx)
        .await
        .unwrap();
    assert!(matches!(
        stale.fence(&mut tx).await,
        Err(JobError::LeaseLost)
    ));
    assert!(matches!(
        stale.complete_in(&mut tx).await,
        Err(JobError::LeaseLost)
    ));
    drop(tx);
    assert!(matches!(
        stale.complete(&app.pool).await,
        Err(JobError::LeaseLost)
    ));
    assert!(matches!(
        queue.heartbeat(&stale).await,
        Err(JobError::LeaseLost)
    ));
    let fail = queue
        .fail(&stale, &JobError::Retry("late".into()))
        .await
        .unwrap();
    assert_eq!(fail, Transition::LeaseLost);
    assert_eq!(queue.release(&stale).await.unwrap(), Transition::LeaseLost);
    let version: i64 = sqlx::query_scalar("SELECT plan_version FROM users WHERE id = 1")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(version, 1, "only the rescuer's run wrote");
    let state = job_state(&app, id).await;
    assert_eq!((state.state.as_str(), state.attempts), ("succeeded", 1));

    // Re-run once: a further pass does not run it again.
    worker.run_once().await.unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_lease_is_extended_from_the_database_clock_and_a_lost_one_cancels_the_running_job() {
    let app = TestApp::spawn().await;
    app.add_user(1).await;
    let conn = add_connection(&app, 1, "primary", "default").await;
    let settings = queue_settings(8, 5, 1);
    let queue = Queue::new(app.pool.clone(), settings.clone());
    let id = queue
        .enqueue(JobKind::Pull, conn, None, false)
        .await
        .unwrap();

    let started = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicUsize::new(0));
    let (s, d) = (started.clone(), dropped.clone());
    let worker = Worker::new(
        app.pool.clone(),
        worker_config("default", settings),
        FnHandler(move |ctx: JobContext, job: Job| {
            let (s, d) = (s.clone(), d.clone());
            async move {
                struct OnDrop(Arc<AtomicUsize>);
                impl Drop for OnDrop {
                    fn drop(&mut self) {
                        self.0.fetch_add(1, Ordering::SeqCst);
                    }
                }
                let _guard = OnDrop(d);
                s.fetch_add(1, Ordering::SeqCst);
                ctx.cancel.cancelled().await;
                // Never reached: the worker drops a job whose lease is lost.
                sqlx::query("UPDATE users SET plan_version = 77 WHERE id = 1")
                    .execute(&ctx.pool)
                    .await?;
                job.complete(&ctx.pool).await
            }
        }),
    );
    let shutdown = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn({
        let (worker, shutdown) = (worker.clone(), shutdown.clone());
        async move { worker.run(shutdown).await }
    });
    eventually(10, "the job starts", || {
        let s = started.clone();
        async move { s.load(Ordering::SeqCst) == 1 }
    })
    .await;

    // Heartbeats keep the 1 s lease alive well past its first end.
    let first_until: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT locked_until FROM plansync.jobs WHERE id = $1")
            .bind(id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    eventually(10, "a heartbeat extends the lease", || {
        let pool = app.pool.clone();
        async move {
            let until: chrono::DateTime<chrono::Utc> =
                sqlx::query_scalar("SELECT locked_until FROM plansync.jobs WHERE id = $1")
                    .bind(id)
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            until > first_until
        }
    })
    .await;

    // Someone else holds it now (as after a rescue and a new claim).
    sqlx::query(
        "UPDATE plansync.jobs SET claim_token = gen_random_uuid(), \
         locked_until = now() + interval '1 hour' WHERE id = $1",
    )
    .bind(id)
    .execute(&app.pool)
    .await
    .unwrap();
    eventually(10, "the worker drops the job", || {
        let d = dropped.clone();
        async move { d.load(Ordering::SeqCst) == 1 }
    })
    .await;
    shutdown.cancel();
    running.await.unwrap().unwrap();
    let version: i64 = sqlx::query_scalar("SELECT plan_version FROM users WHERE id = 1")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(version, 0);
    assert_eq!(
        job_state(&app, id).await.state,
        "running",
        "left to its new holder"
    );
}
