//! Channel upkeep: renewals, the webhook setting, a replica killed mid-open.

use super::*;

#[tokio::test]
async fn short_lived_channels_are_renewed_in_time_and_stopped_on_disconnect_and_reconnect() {
    // Google grants 9 s: renewals are due every 6 s. The figure is a
    // 30 s lifetime over two minutes; this is the same four lifetimes in 36 s.
    const TTL: Duration = Duration::from_secs(9);
    let app = SyncApp::with_options(FakeGoogleOptions {
        channel_ttl: TTL,
        ..FakeGoogleOptions::default()
    })
    .await;
    let connection = app.connect(1, "primary", &[]).await;
    let run = Run::start(&app, true, &[]).await;
    let first = wait_for_live_channel(&app, "primary", &[]).await;

    // Sample the emulator's registry for four lifetimes: a live channel at
    // every moment, and when each one first appeared.
    let mut first_seen: HashMap<String, Instant> = HashMap::new();
    first_seen.insert(first.id.clone(), Instant::now());
    let watched = Instant::now();
    while watched.elapsed() < TTL * 4 {
        let live = live_channels(&app, "primary");
        assert!(
            !live.is_empty(),
            "no live channel {:?} into the window",
            watched.elapsed()
        );
        assert!(live.len() <= 2, "{live:?}");
        for c in live {
            first_seen.entry(c.id).or_insert_with(Instant::now);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut opened: Vec<Instant> = first_seen.values().copied().collect();
    opened.sort();
    assert!(
        opened.len() >= 4,
        "expected a renewal per 2/3 lifetime, saw {} channels",
        opened.len()
    );
    for pair in opened.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= TTL / 2,
            "two channels opened {gap:?} apart: more than one renewal per lifetime"
        );
    }
    // Every replaced channel was stopped (not just left to expire).
    let stopped: Vec<String> = app
        .google
        .stopped_channels()
        .into_iter()
        .map(|c| c.id)
        .collect();
    let current = wait_for_live_channel(&app, "primary", &[]).await;
    for id in first_seen.keys().filter(|id| **id != current.id) {
        eventually(WAIT, "the replaced channel to be stopped", || async {
            app.google
                .stopped_channels()
                .iter()
                .any(|c| &c.id == id)
                .then_some(())
        })
        .await;
    }
    assert!(!stopped.contains(&current.id));

    // A replaced channel's notifications are acknowledged and ignored.
    let old = app
        .google
        .stopped_channels()
        .into_iter()
        .next()
        .expect("a stopped channel");
    let mark = max_job_id(&app).await;
    let status = run
        .notify(&[
            ("X-Goog-Channel-ID", &old.id),
            ("X-Goog-Channel-Token", old.token.as_deref().unwrap()),
            ("X-Goog-Resource-State", "exists"),
        ])
        .await;
    assert_eq!(status, 200);
    assert!(
        !jobs_after(&app, mark).await.iter().any(|k| k == "pull"),
        "a stale notification enqueued a pull"
    );
    assert!(
        metric(
            &run.metrics().await,
            "plansync_notifications_total{outcome=\"stale\"}"
        ) >= 1.0
    );

    // disconnect: the live channel is stopped, then the token forgotten.
    let out = app
        .run(&["disconnect", "--connection", &connection.to_string()], "")
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    eventually(WAIT, "the channel to be stopped on disconnect", || async {
        let stopped = app
            .google
            .stopped_channels()
            .iter()
            .any(|c| c.id == current.id);
        (stopped && live_channels(&app, "primary").is_empty()).then_some(())
    })
    .await;
    eventually(WAIT, "the refresh token to be forgotten", || async {
        let kept: bool = sqlx::query_scalar(
            "SELECT refresh_token_enc IS NOT NULL FROM plansync.connections WHERE id = $1",
        )
        .bind(connection)
        .fetch_one(&app.app.pool)
        .await
        .unwrap();
        (!kept).then_some(())
    })
    .await;
    let status = app.status().await;
    assert!(status["connections"][0]["channelExpiresAt"].is_null());

    // re-connect: a new channel opens (after the re-connect's full sync).
    let again = app.connect(1, "primary", &[]).await;
    assert_eq!(again, connection);
    let mut seen: Vec<String> = first_seen.keys().cloned().collect();
    seen.push(current.id.clone());
    let fresh = wait_for_live_channel(&app, "primary", &seen).await;
    assert!(!seen.contains(&fresh.id));
    run.stop().await;
}

#[tokio::test]
async fn without_a_webhook_no_channel_opens_earlier_ones_are_stopped_and_polling_catches_edits() {
    let app = SyncApp::spawn().await;
    app.connect(1, "primary", &[]).await;
    // A channel opened while the setting was there…
    let addr = format!("127.0.0.1:{}", free_port());
    let with = Run::start_at(&app, &addr, true, &[]).await;
    let channel = wait_for_live_channel(&app, "primary", &[]).await;
    with.stop().await;

    // …is stopped once it is gone, and then no watch job is created.
    let polling = Run::start_at(&app, &addr, false, &[("PLANSYNC_POLL_INTERVAL_SECS", "1")]).await;
    eventually(WAIT, "the channel to be stopped", || async {
        app.google
            .stopped_channels()
            .iter()
            .any(|c| c.id == channel.id)
            .then_some(())
    })
    .await;
    assert!(live_channels(&app, "primary").is_empty());
    eventually(WAIT, "the watch jobs to settle", || async {
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM plansync.jobs WHERE kind = 'watch' \
             AND state IN ('queued', 'running')",
        )
        .fetch_one(&app.app.pool)
        .await
        .unwrap();
        (open == 0).then_some(())
    })
    .await;
    let mark = max_job_id(&app).await;
    let since = db_now(&app).await;

    // Polling catches an edit. At a 1 s interval the pull that does may have
    // been queued before the mark (later polls fold into it): count the jobs
    // created after it and those that ran since.
    let mut deltas = subscribe(&app, 1).await;
    app.google
        .create_event("primary", event("Polled from Google"))
        .unwrap();
    delta_with_summary(&mut deltas, "Polled from Google").await;
    let kinds = jobs_after_or_run_since(&app, mark, since).await;
    assert!(kinds.iter().any(|k| k == "pull"), "{kinds:?}");
    assert!(
        !kinds.iter().any(|k| k == "watch"),
        "a watch job without a webhook: {kinds:?}"
    );
    assert!(app.google.channels().is_empty());
    polling.stop().await;
}

#[tokio::test]
async fn a_fresh_deployment_without_a_webhook_never_creates_a_watch_job() {
    let app = SyncApp::spawn().await;
    app.connect(1, "primary", &[]).await;
    app.run_once().await;
    app.run_once().await;
    let watch_jobs: i64 =
        sqlx::query_scalar("SELECT count(*) FROM plansync.jobs WHERE kind = 'watch'")
            .fetch_one(&app.app.pool)
            .await
            .unwrap();
    assert_eq!(watch_jobs, 0);
    assert!(app.google.channels().is_empty());
    assert!(app
        .google
        .requests()
        .iter()
        .all(|r| r.operation != Operation::Watch));
}

#[tokio::test]
async fn a_replica_killed_while_opening_a_channel_leaves_one_live_channel_after_the_retry() {
    let app = SyncApp::spawn().await;
    app.connect(1, "primary", &[]).await;
    // Google opens the channel at once but answers only after a minute.
    app.google.inject_fault(
        Operation::Watch,
        Fault::DelayResponse {
            millis: Duration::from_secs(60),
        },
        1,
    );
    let lease = [("PLANSYNC_LEASE_SECS", "2")];
    let addr = format!("127.0.0.1:{}", free_port());
    let first = Run::start_at(&app, &addr, true, &lease).await;
    let pending = eventually(WAIT, "Google to open the first channel", || async {
        app.google.channels().into_iter().next()
    })
    .await;
    let recorded: String =
        sqlx::query_scalar("SELECT state FROM plansync.channels WHERE id = $1::TEXT::UUID")
            .bind(&pending.id)
            .fetch_one(&app.app.pool)
            .await
            .unwrap();
    assert_eq!(recorded, "opening", "recorded before Google was called");
    first.kill().await;

    let second = Run::start_at(&app, &addr, true, &lease).await;
    let replacement =
        wait_for_live_channel(&app, "primary", std::slice::from_ref(&pending.id)).await;
    eventually(WAIT, "the pending channel to be stopped", || async {
        app.google
            .stopped_channels()
            .iter()
            .any(|c| c.id == pending.id)
            .then_some(())
    })
    .await;
    let live = live_channels(&app, "primary");
    assert_eq!(live.len(), 1, "{live:?}");
    assert_eq!(live[0].id, replacement.id);
    second.kill().await;
}
