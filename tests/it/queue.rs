//! The job queue's guarantees (src/queue/mod.rs) and the appointment
//! triggers that feed it, on real PostgreSQL.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use plansync::ids::{AppointmentId, ConnectionId, JobId};
use plansync::queue::{Job, JobError, JobKind, Queue, Transition};
use plansync::worker::{JobContext, Worker};

use crate::harness::jobs::{
    add_connection, eventually, job_state, queue_settings, worker_config, FnHandler,
};
use crate::harness::{count, status_json, stderr, stdout, TestApp};

// ---- claims ----------------------------------------------------------------

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

// ---- leases, fencing, rescue -------------------------------------------------

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

// ---- dedup ---------------------------------------------------------------------

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

// ---- retries, dead, snooze -------------------------------------------------------

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
                Err(JobError::Retry(format!(
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

// ---- host triggers ----------------------------------------------------------------

async fn insert_appointment(app: &TestApp, user: i64, summary: &str) -> i64 {
    sqlx::query_scalar(
        "INSERT INTO appointments (user_id, summary, start_at, end_at) \
         VALUES ($1, $2, '2026-12-10T15:00:00Z', '2026-12-10T16:00:00Z') RETURNING id",
    )
    .bind(user)
    .bind(summary)
    .fetch_one(&app.pool)
    .await
    .expect("the host's insert succeeds")
}

async fn push_jobs(app: &TestApp) -> Vec<(i64, i64, String)> {
    sqlx::query_as(
        "SELECT connection_id, appointment_id, state FROM plansync.jobs WHERE kind = 'push' \
         ORDER BY id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn host_writes_of_a_connected_user_enqueue_one_deduplicated_push_job() {
    let app = TestApp::spawn().await;
    app.add_user(1).await;
    let first = add_connection(&app, 1, "a", "default").await;
    let target = add_connection(&app, 1, "b", "eu").await;
    sqlx::query("UPDATE plansync.connections SET push_target = TRUE WHERE id = $1")
        .bind(target)
        .execute(&app.pool)
        .await
        .unwrap();

    let a = insert_appointment(&app, 1, "Dentist").await;
    assert_eq!(
        push_jobs(&app).await,
        vec![(target.0, a, "queued".to_owned())]
    );
    let region: String = sqlx::query_scalar("SELECT region FROM plansync.jobs")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(region, "eu", "the job carries its connection's region");
    for summary in ["Dentist (moved)", "Dentist (again)"] {
        sqlx::query("UPDATE appointments SET summary = $1 WHERE id = $2")
            .bind(summary)
            .bind(a)
            .execute(&app.pool)
            .await
            .unwrap();
    }
    sqlx::query("DELETE FROM appointments WHERE id = $1")
        .bind(a)
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(push_jobs(&app).await.len(), 1, "deduplicated while queued");

    // A linked appointment goes to its link's connection; one statement of
    // many rows makes one job each.
    let b = insert_appointment(&app, 1, "Linked").await;
    sqlx::query(
        "INSERT INTO plansync.links (connection_id, appointment_id, event_id) VALUES ($1, $2, 'ev1')",
    )
    .bind(first)
    .bind(b)
    .execute(&app.pool)
    .await
    .unwrap();
    sqlx::query("DELETE FROM plansync.jobs")
        .execute(&app.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE appointments SET location = 'Room 1' WHERE user_id = 1")
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        push_jobs(&app).await,
        vec![(first.0, b, "queued".to_owned())]
    );

    // While its push runs, a change leaves exactly one queued follow-up.
    let queue = Queue::new(app.pool.clone(), queue_settings(8, 5, 60));
    let running = queue.claim("default", "w:1").await.unwrap().unwrap();
    assert_eq!(running.appointment, Some(AppointmentId(b)));
    for _ in 0..3 {
        sqlx::query("UPDATE appointments SET summary = summary || '!' WHERE id = $1")
            .bind(b)
            .execute(&app.pool)
            .await
            .unwrap();
    }
    let mut jobs = push_jobs(&app).await;
    jobs.sort();
    assert_eq!(
        jobs,
        vec![
            (first.0, b, "queued".to_owned()),
            (first.0, b, "running".to_owned())
        ]
    );

    // The worker's own writes are not pushed back.
    sqlx::query("DELETE FROM plansync.jobs")
        .execute(&app.pool)
        .await
        .unwrap();
    let mut tx = app.pool.begin().await.unwrap();
    sqlx::query("SET LOCAL plansync.origin = 'google'")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO appointments (user_id, summary, start_at, end_at) \
         VALUES (1, 'From Google', now(), now())",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query("UPDATE appointments SET summary = 'x' WHERE id = $1")
        .bind(b)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(push_jobs(&app).await.is_empty());
}

#[tokio::test]
async fn host_writes_of_a_user_without_an_active_connection_succeed_and_record_nothing() {
    let app = TestApp::spawn().await;
    app.add_user(1).await;
    app.add_user(2).await;
    let c = add_connection(&app, 2, "primary", "default").await;
    sqlx::query("UPDATE plansync.connections SET active = FALSE WHERE id = $1")
        .bind(c)
        .execute(&app.pool)
        .await
        .unwrap();
    for user in [1, 2] {
        let id = insert_appointment(&app, user, "Lunch").await;
        sqlx::query("UPDATE appointments SET summary = 'Late lunch' WHERE id = $1")
            .bind(id)
            .execute(&app.pool)
            .await
            .unwrap();
        sqlx::query("DELETE FROM appointments WHERE id = $1")
            .bind(id)
            .execute(&app.pool)
            .await
            .unwrap();
    }
    assert_eq!(count(&app, "SELECT count(*) FROM plansync.jobs").await, 0);
}

#[tokio::test]
async fn a_trigger_that_cannot_record_never_fails_the_hosts_write() {
    let app = TestApp::spawn().await;
    app.add_user(1).await;
    add_connection(&app, 1, "primary", "default").await;
    // Break the queue: every insert into it now fails.
    sqlx::query("ALTER TABLE plansync.jobs ADD CONSTRAINT broken CHECK (false) NOT VALID")
        .execute(&app.pool)
        .await
        .unwrap();
    let id = insert_appointment(&app, 1, "Still saved").await;
    sqlx::query("UPDATE appointments SET summary = 'Still updated' WHERE id = $1")
        .bind(id)
        .execute(&app.pool)
        .await
        .unwrap();
    let summary: String = sqlx::query_scalar("SELECT summary FROM appointments WHERE id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(summary, "Still updated");
    assert_eq!(count(&app, "SELECT count(*) FROM plansync.jobs").await, 0);
}

#[tokio::test]
async fn an_update_that_leaves_updated_at_alone_gets_now() {
    let app = TestApp::spawn().await;
    app.add_user(1).await;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO appointments (user_id, summary, start_at, end_at, created_at, updated_at) \
         VALUES (1, 'Old', now(), now(), '2020-01-01Z', '2020-01-01Z') RETURNING id",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let fresh: bool = sqlx::query_scalar(
        "UPDATE appointments SET summary = 'New' WHERE id = $1 \
         RETURNING updated_at > now() - interval '1 minute'",
    )
    .bind(id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(fresh);
    // An UPDATE that sets updated_at itself keeps its value.
    let kept: String = sqlx::query_scalar(
        "UPDATE appointments SET summary = 'Newer', updated_at = '2021-06-01Z' WHERE id = $1 \
         RETURNING to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
    )
    .bind(id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(kept, "2021-06-01");
}

#[tokio::test]
async fn a_queued_push_touched_by_an_open_host_transaction_is_not_claimed_until_it_commits() {
    let app = TestApp::spawn().await;
    app.add_user(1).await;
    let out = app
        .run(
            &["connect", "--user", "1", "--calendar", "primary"],
            "tok\n",
        )
        .await;
    assert!(out.status.success());
    sqlx::query("DELETE FROM plansync.jobs")
        .execute(&app.pool)
        .await
        .unwrap();
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO appointments (user_id, summary, start_at, end_at) \
         VALUES (1, 'first', now(), now() + interval '1 hour') RETURNING id",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    // A second edit in an open transaction meets the queued push.
    let mut host = app.pool.begin().await.unwrap();
    sqlx::query("UPDATE appointments SET summary = 'second' WHERE id = $1")
        .bind(id)
        .execute(&mut *host)
        .await
        .unwrap();
    let claim = || plansync::store::jobs::claim(&app.pool, "default", &["push"], "test:1", 60.0);
    assert!(
        claim().await.unwrap().is_none(),
        "a worker must not push the values from before the open edit"
    );
    host.commit().await.unwrap();
    let claimed = claim()
        .await
        .unwrap()
        .expect("claimable once the edit committed");
    assert_eq!(
        claimed.appointment_id,
        Some(plansync::ids::AppointmentId(id))
    );
}
