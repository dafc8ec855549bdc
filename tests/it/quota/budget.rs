//! The shared budget across replicas, per connection, and with Redis down.

use super::*;

#[tokio::test]
async fn four_replicas_offered_twice_the_budget_use_it_and_never_exceed_it() {
    // 600/min = 10/s, measured over 12 s: 120 requests, burst 10.
    const QPM: u32 = 600;
    const WINDOW: f64 = 12.0;
    let sync = SyncApp::spawn().await;
    let settings = quota_settings(QPM, 60_000);
    let mut users = Vec::new();
    for i in 0..8 {
        users.push(connection(&sync, 100 + i, &format!("cal-{i}")).await);
    }
    // 8 × 40 = 320 pushes: more than twice what the window allows.
    for user in &users {
        appointments(&sync, *user, 40).await;
    }
    let offered = count(
        &sync,
        "SELECT count(*) FROM plansync.jobs WHERE state = 'queued'",
    )
    .await;
    let budget = f64::from(QPM) * WINDOW / 60.0;
    assert!(offered as f64 >= 2.0 * budget, "{offered}");

    let redis = crate::harness::redis_url();
    let mut replicas = Vec::new();
    for name in ["a", "b", "c", "d"] {
        replicas.push(replica(&sync, name, settings, &redis, 4).await);
    }
    let from = Utc::now();
    let (stop, handles) = run_all(&replicas);
    let to = from + secs(WINDOW);
    covered(&sync, to, "the measured window to pass").await;
    let left = count(
        &sync,
        "SELECT count(*) FROM plansync.jobs WHERE state = 'queued'",
    )
    .await;
    stop_all(stop, handles).await;

    let requests = sync.google.requests();
    let used = in_window(&requests, from, to).len();
    let burst = QPM as usize / 60;
    assert!(
        used as f64 >= 0.8 * budget,
        "used {used} of a budget of {budget} in {WINDOW}s"
    );
    assert!(
        used <= budget as usize + burst,
        "used {used}, above {budget} + a burst of {burst}"
    );
    // Any 3-second stretch: at most 3 s of budget plus the burst.
    let peak = busiest(&requests, from, to, secs(3.0));
    eprintln!("fleet: {used} requests in {WINDOW}s (budget {budget} + {burst}), 3 s peak {peak}");
    assert!(peak <= 3 * burst + burst, "{peak} requests in 3 s");
    // Demand outlasted the window, and nothing died for lack of budget.
    assert!(left > 0, "the offered load ran out before the window ended");
    assert_eq!(
        count(
            &sync,
            "SELECT count(*) FROM plansync.jobs WHERE state = 'dead'"
        )
        .await,
        0
    );
    // (A replica may have fallen back to its share for a moment when the
    // machine was too busy for Redis to answer in time: still within budget.)
    assert!(replicas.iter().any(|r| r.quota.is_shared()));
    // Each replica's heartbeat counts what it sent.
    let (fleet_used, live) = plansync::store::workers::fleet_usage(&sync.app.pool)
        .await
        .unwrap();
    assert_eq!(live, 0, "stopped replicas leave the heartbeat table");
    assert_eq!(fleet_used, 0);
}

#[tokio::test]
async fn one_connections_flood_stays_in_its_own_budget_while_others_proceed() {
    // Per connection 60/min = 1/s; the project's 1200/min is no limit here.
    const USER_QPM: u32 = 60;
    let sync = SyncApp::spawn().await;
    let settings = quota_settings(1_200, USER_QPM);
    let flood = connection(&sync, 1, "flood").await;
    let quiet_b = connection(&sync, 2, "quiet-b").await;
    let quiet_c = connection(&sync, 3, "quiet-c").await;
    appointments(&sync, flood, 60).await;
    appointments(&sync, quiet_b, 3).await;
    appointments(&sync, quiet_c, 3).await;

    let redis = crate::harness::redis_url();
    let mut replicas = Vec::new();
    for name in ["a", "b"] {
        replicas.push(replica(&sync, name, settings, &redis, 4).await);
    }
    let from = Utc::now();
    let (stop, handles) = run_all(&replicas);
    // The quiet connections finish their pushes (a token refresh and three
    // inserts each at 1/s) while the flood is still queued.
    let pool = &sync.app.pool;
    eventually(Duration::from_secs(30), "the quiet pushes", || async move {
        let pending: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM plansync.jobs j JOIN plansync.connections c \
               ON c.id = j.connection_id \
             WHERE c.user_id IN (2, 3) AND j.state IN ('queued', 'running')",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        (pending == 0).then_some(())
    })
    .await;
    let done = Utc::now();
    let flood_left = count(
        &sync,
        "SELECT count(*) FROM plansync.jobs j JOIN plansync.connections c \
           ON c.id = j.connection_id WHERE c.user_id = 1 AND j.state = 'queued'",
    )
    .await;
    stop_all(stop, handles).await;

    let requests = sync.google.requests();
    let on = |calendar: &str| {
        in_window(&requests, from, done)
            .into_iter()
            .filter(|r| r.path.contains(&format!("/calendars/{calendar}/")))
            .count()
    };
    let elapsed = (done - from).num_milliseconds() as f64 / 1000.0;
    // Its calendar calls alone (its token refresh comes out of the same
    // budget) stay within 1/s plus a burst of one.
    let allowed = (elapsed * f64::from(USER_QPM) / 60.0).floor() as usize + 1;
    assert!(
        on("flood") <= allowed,
        "the flood made {} calls in {elapsed:.1}s (allowed {allowed})",
        on("flood")
    );
    assert!(on("flood") >= 2, "the flood was served too");
    assert_eq!(on("quiet-b"), 3);
    assert_eq!(on("quiet-c"), 3);
    assert!(flood_left > 40, "{flood_left} flood pushes left");
    assert_eq!(
        count(
            &sync,
            "SELECT count(*) FROM plansync.jobs WHERE state = 'dead'"
        )
        .await,
        0
    );
}

#[tokio::test]
async fn with_redis_down_each_replica_keeps_its_share_and_the_limiter_resumes() {
    // 600/min = 10/s for the fleet; 2.5/s each while Redis is down.
    const QPM: u32 = 600;
    const WINDOW: f64 = 6.0;
    let mut redis = PrivateRedis::start().await;
    let sync = SyncApp::spawn().await;
    let settings = quota_settings(QPM, 60_000);
    // 16 connections, so every replica has jobs to run (a connection runs
    // one job at a time).
    for i in 0..16 {
        let user = connection(&sync, 100 + i, &format!("cal-{i}")).await;
        appointments(&sync, user, 40).await;
    }
    let mut replicas = Vec::new();
    for name in ["a", "b", "c", "d"] {
        replicas.push(replica(&sync, name, settings, &redis.url(), 4).await);
    }
    let (stop, handles) = run_all(&replicas);
    // Every replica has seen all four heartbeats and is on the shared limiter.
    let replicas_ref = &replicas;
    eventually(
        Duration::from_secs(20),
        "four live workers seen",
        || async move {
            replicas_ref
                .iter()
                .all(|r| r.quota.live_workers() == 4 && r.quota.is_shared())
                .then_some(())
        },
    )
    .await;

    redis.stop();
    let from = Utc::now() + secs(0.5);
    let to = from + secs(WINDOW);
    covered(&sync, to, "the Redis-down window to pass").await;
    // A replica that happened to have no call to make still believes in
    // Redis; every one that called has moved to its share.
    assert!(replicas.iter().any(|r| !r.quota.is_shared()));
    let requests = sync.google.requests();
    let used = in_window(&requests, from, to).len();
    let budget = f64::from(QPM) * WINDOW / 60.0;
    let burst = QPM as usize / 60;
    assert!(
        used <= budget as usize + burst,
        "{used} requests in {WINDOW}s with Redis down (budget {budget} + {burst})"
    );
    assert!(
        used as f64 >= 0.5 * budget,
        "{used} requests in {WINDOW}s: the fallback should still serve"
    );
    eprintln!("Redis down: {used} requests in {WINDOW}s (budget {budget} + {burst})");

    // Redis returns: the replicas go back to the shared limiter, whose state
    // is in Redis again.
    redis.restart_with(&[]).await;
    let replicas_ref = &replicas;
    eventually(
        Duration::from_secs(20),
        "the shared limiter again",
        || async move {
            replicas_ref
                .iter()
                .all(|r| r.quota.is_shared())
                .then_some(())
        },
    )
    .await;
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let key = replicas[0].quota.project_key().to_owned();
    assert!(
        key.starts_with(&sync.app.redis_prefix) && key.contains(&sync.google.client_id()),
        "{key}"
    );
    let exists: bool = redis::cmd("EXISTS")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(exists, "the limiter's state is back in Redis");
    let from = Utc::now();
    let to = from + secs(3.0);
    covered(&sync, to, "a window after Redis returned").await;
    stop_all(stop, handles).await;
    let used = in_window(&sync.google.requests(), from, to).len();
    assert!(
        used <= 30 + burst,
        "{used} requests in 3 s after Redis returned"
    );
    assert_eq!(
        count(
            &sync,
            "SELECT count(*) FROM plansync.jobs WHERE state = 'dead'"
        )
        .await,
        0
    );
}
