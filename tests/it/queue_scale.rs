//! The queue at scale (issue 14): jobs that cannot run wait outside the
//! claimable set and come back on repair, batch claims keep one job per
//! connection, priorities hold under a backlog, and the scheduler reads only
//! the connections whose polling time has come.

use std::collections::HashSet;
use std::sync::Arc;

use plansync::ids::{AppointmentId, CalendarId, ConnectionId, JobId, UserId};
use plansync::queue::{Job, JobKind, Queue};
use plansync::store::connections::{self, ConnectionAuth, NewConnection};
use tokio::sync::Barrier;

use crate::harness::count;
use crate::harness::jobs::{add_connection, queue_settings};
use crate::harness::TestApp;

fn queue(app: &TestApp) -> Queue {
    Queue::new(app.pool.clone(), queue_settings(3, 0, 60))
}

async fn blocked(app: &TestApp, job: JobId) -> bool {
    sqlx::query_scalar("SELECT blocked FROM plansync.jobs WHERE id = $1")
        .bind(job)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// Claims and completes until nothing is claimable; returns what ran.
async fn drain(queue: &Queue) -> Vec<(JobKind, ConnectionId)> {
    let mut ran = Vec::new();
    loop {
        let jobs = queue.claim_batch("default", "test:1", 8).await.unwrap();
        if jobs.is_empty() {
            return ran;
        }
        for job in jobs {
            ran.push((job.kind, job.connection));
            let _ = job.complete(queue.pool()).await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_of_a_needs_reauth_connection_wait_and_come_back_on_reconnect() {
    let app = TestApp::spawn().await;
    app.add_user(1).await;
    app.add_user(2).await;
    let broken = add_connection(&app, 1, "broken", "default").await;
    let healthy = add_connection(&app, 2, "healthy", "default").await;
    let q = queue(&app);
    let mut waiting = Vec::new();
    for a in 1..=3 {
        waiting.push(
            q.enqueue(JobKind::Push, broken, Some(AppointmentId(a)), false)
                .await
                .unwrap(),
        );
    }
    sqlx::query(
        "UPDATE plansync.connections SET needs_reauth = TRUE, last_error = 'invalid_grant' \
         WHERE id = $1",
    )
    .bind(broken)
    .execute(&app.pool)
    .await
    .unwrap();
    for id in &waiting {
        assert!(blocked(&app, *id).await, "job {id} left the claimable set");
    }
    // Enqueued while broken: waits from the start.
    let late = q.enqueue(JobKind::Pull, broken, None, false).await.unwrap();
    assert!(blocked(&app, late).await);
    q.enqueue(JobKind::Pull, healthy, None, false)
        .await
        .unwrap();

    let ran = drain(&q).await;
    assert_eq!(
        ran,
        vec![(JobKind::Pull, healthy)],
        "only the healthy job ran"
    );
    assert_eq!(
        count(
            &app,
            &format!(
                "SELECT count(*) FROM plansync.jobs WHERE connection_id = {broken} \
                 AND state = 'queued'"
            )
        )
        .await,
        4
    );

    // Re-connecting (the re-authorisation path) brings them all back, with
    // the full sync it enqueues.
    plansync::sync::connect(
        &app.pool,
        NewConnection {
            user: UserId(1),
            calendar: &CalendarId::from("broken"),
            region: None,
            default_region: "default",
            push_target: false,
            auth: ConnectionAuth::RefreshToken {
                encrypted: vec![1, 2, 3],
            },
        },
    )
    .await
    .unwrap();
    for id in waiting.iter().chain([&late]) {
        assert!(!blocked(&app, *id).await, "job {id} is claimable again");
    }
    let ran = drain(&q).await;
    let kinds: Vec<JobKind> = ran.iter().map(|(k, _)| *k).collect();
    assert_eq!(ran.len(), 5, "{ran:?}");
    assert!(ran.iter().all(|(_, c)| *c == broken), "{ran:?}");
    assert_eq!(kinds.iter().filter(|k| **k == JobKind::Push).count(), 3);
    assert!(kinds.contains(&JobKind::FullResync) && kinds.contains(&JobKind::Pull));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnected_connection_keeps_only_its_channel_stop_claimable() {
    let app = TestApp::spawn().await;
    app.add_user(1).await;
    let conn = add_connection(&app, 1, "primary", "default").await;
    let q = queue(&app);
    let push = q
        .enqueue(JobKind::Push, conn, Some(AppointmentId(5)), false)
        .await
        .unwrap();
    connections::disconnect(&app.pool, conn).await.unwrap();
    let watch = q.enqueue(JobKind::Watch, conn, None, false).await.unwrap();
    assert!(blocked(&app, push).await);
    assert!(!blocked(&app, watch).await, "the stop of its channels runs");
    assert_eq!(drain(&q).await, vec![(JobKind::Watch, conn)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_enqueued_while_its_connection_breaks_is_not_claimed_and_is_moved_by_the_recheck() {
    let app = TestApp::spawn().await;
    app.add_user(1).await;
    let conn = add_connection(&app, 1, "primary", "default").await;
    let q = queue(&app);
    // The enqueue reads the connection as healthy, then the connection
    // breaks in a transaction that cannot see the uncommitted job.
    let mut enqueuing = app.pool.begin().await.unwrap();
    let job = Queue::enqueue_in(&mut enqueuing, JobKind::Pull, conn, None, false)
        .await
        .unwrap();
    sqlx::query("UPDATE plansync.connections SET calendar_gone = TRUE WHERE id = $1")
        .bind(conn)
        .execute(&app.pool)
        .await
        .unwrap();
    enqueuing.commit().await.unwrap();
    assert!(!blocked(&app, job).await, "the race this test sets up");
    assert!(
        drain(&q).await.is_empty(),
        "the claim checks the connection itself"
    );
    // The first recheck notes a horizon; once every transaction older than
    // it has ended (in the whole cluster: other databases' transactions
    // count too), a later one moves the job.
    let fixed = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
    crate::harness::jobs::eventually(30, "the recheck moves the job", || {
        let (pool, fixed) = (app.pool.clone(), fixed.clone());
        async move {
            let n = plansync::store::jobs::recheck_blocked(&pool).await.unwrap();
            fixed.fetch_add(n, std::sync::atomic::Ordering::SeqCst) + n > 0
        }
    })
    .await;
    let fixed = fixed.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(fixed, 1);
    assert!(blocked(&app, job).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_claim_never_hands_two_jobs_of_one_connection_to_two_workers() {
    const CONNECTIONS: i64 = 12;
    const PER_CONNECTION: i64 = 6;
    const CLAIMERS: usize = 6;
    let app = TestApp::spawn().await;
    let q = queue(&app);
    let mut conns = Vec::new();
    for user in 1..=CONNECTIONS {
        app.add_user(user).await;
        let conn = add_connection(&app, user, "primary", "default").await;
        for a in 0..PER_CONNECTION {
            q.enqueue(
                JobKind::Push,
                conn,
                Some(AppointmentId(user * 100 + a)),
                false,
            )
            .await
            .unwrap();
        }
        conns.push(conn);
    }
    let mut ran = 0;
    for round in 0.. {
        // Several workers claim at once; nothing they hold is completed
        // until the round is over, so a connection must appear once.
        let start = Arc::new(Barrier::new(CLAIMERS));
        let mut claimers = tokio::task::JoinSet::new();
        for w in 0..CLAIMERS {
            let q = q.clone();
            let start = start.clone();
            claimers.spawn(async move {
                start.wait().await;
                let mut held: Vec<Job> = Vec::new();
                for _ in 0..3 {
                    held.extend(
                        q.claim_batch("default", &format!("test:{w}"), 4)
                            .await
                            .unwrap(),
                    );
                }
                held
            });
        }
        let mut held = Vec::new();
        while let Some(jobs) = claimers.join_next().await {
            held.extend(jobs.unwrap());
        }
        // Claimers skip each other's locked candidates; one more claim after
        // them takes whatever they happened to pass over.
        held.extend(q.claim_batch("default", "test:sweep", 100).await.unwrap());
        let distinct: HashSet<ConnectionId> = held.iter().map(|j| j.connection).collect();
        assert_eq!(
            distinct.len(),
            held.len(),
            "round {round}: two running jobs of one connection"
        );
        if held.is_empty() {
            break;
        }
        // Every connection with work left gets one job per round.
        assert_eq!(held.len(), conns.len(), "round {round}");
        ran += held.len() as i64;
        for job in held {
            let _ = job.complete(q.pool()).await.unwrap();
        }
    }
    assert_eq!(ran, CONNECTIONS * PER_CONNECTION);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priorities_are_honoured_under_a_backlog() {
    let app = TestApp::spawn().await;
    let q = queue(&app);
    // A backlog of routine polls (the scheduler's priority), due long ago...
    for user in 1..=40 {
        app.add_user(user).await;
        let conn = add_connection(&app, user, "primary", "default").await;
        sqlx::query(
            "INSERT INTO plansync.jobs (kind, connection_id, region, priority, run_at) \
             VALUES ('pull', $1, 'default', $2, now() - interval '1 hour')",
        )
        .bind(conn)
        .bind(plansync::store::jobs::SCHEDULED_POLL_PRIORITY)
        .execute(&app.pool)
        .await
        .unwrap();
    }
    // ... and user-visible work enqueued just now on other connections.
    let mut urgent = HashSet::new();
    for user in 41..=50 {
        app.add_user(user).await;
        let conn = add_connection(&app, user, "primary", "default").await;
        q.enqueue(JobKind::Push, conn, Some(AppointmentId(user)), false)
            .await
            .unwrap();
        urgent.insert(conn);
    }
    let first = q.claim_batch("default", "test:1", 10).await.unwrap();
    let got: HashSet<ConnectionId> = first.iter().map(|j| j.connection).collect();
    assert_eq!(got, urgent, "the urgent jobs go first");
    assert!(first.iter().all(|j| j.kind == JobKind::Push));
    let next = q.claim_batch("default", "test:1", 10).await.unwrap();
    assert_eq!(next.len(), 10);
    assert!(next.iter().all(|j| j.kind == JobKind::Pull));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_reads_only_connections_whose_polling_time_has_come() {
    let app = TestApp::spawn().await;
    for user in 1..=5 {
        app.add_user(user).await;
        sqlx::query(
            "INSERT INTO plansync.connections (user_id, calendar_id, region) \
             VALUES ($1, 'primary', 'default')",
        )
        .bind(user)
        .execute(&app.pool)
        .await
        .unwrap();
    }
    let tick =
        || plansync::store::jobs::schedule_pulls(&app.pool, "default", 300, None, None, 1000);
    let first = tick().await.unwrap();
    assert_eq!(
        (first.examined, first.enqueued),
        (5, 5),
        "never pulled: due"
    );
    let second = tick().await.unwrap();
    assert_eq!(
        (second.examined, second.enqueued),
        (0, 0),
        "nothing to look at until a slot ends or something changes"
    );
    // A pull's completion (what the rule reads) brings the connection back
    // to the next tick, which finds it not due (pulled in this slot).
    sqlx::query("DELETE FROM plansync.jobs")
        .execute(&app.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE plansync.connections SET last_pull_at = now() WHERE user_id = 1")
        .execute(&app.pool)
        .await
        .unwrap();
    let third = tick().await.unwrap();
    assert_eq!((third.examined, third.enqueued), (1, 0));
    // A pull dated before its slot began is due again.
    sqlx::query(
        "UPDATE plansync.connections SET last_pull_at = now() - interval '1 hour' \
         WHERE user_id = 2",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let fourth = tick().await.unwrap();
    assert_eq!((fourth.examined, fourth.enqueued), (1, 1));
}
