//! Notifications in: an edit reaching a subscriber, forged and unknown ones
//! refused, bursts folded.

use super::*;

#[tokio::test]
async fn an_edit_in_google_reaches_a_subscriber_through_a_notification() {
    let app = SyncApp::spawn().await;
    let connection = app.connect(1, "primary", &[]).await;
    let run = Run::start(&app, true, &[]).await;
    let channel = wait_for_live_channel(&app, "primary", &[]).await;
    eventually(WAIT, "the first sync to settle", || async {
        (pulls_in_flight(&app).await == 0).then_some(())
    })
    .await;

    // status shows the channel, in both forms.
    let status = app.status().await;
    let expires = status["connections"][0]["channelExpiresAt"]
        .as_str()
        .expect("channelExpiresAt is set");
    let expires = chrono::DateTime::parse_from_rfc3339(expires).unwrap();
    assert!(
        (expires.timestamp() - channel.expiration.timestamp()).abs() <= 1,
        "{expires} vs {}",
        channel.expiration
    );
    let text = app.run(&["status"], "").await;
    // The CHANNEL column: a week (Google's default grant) left.
    assert!(
        crate::harness::stdout(&text).contains("live, 6d left")
            || crate::harness::stdout(&text).contains("live, 7d left"),
        "{}",
        crate::harness::stdout(&text)
    );

    let mut deltas = subscribe(&app, 1).await;
    let mark = max_job_id(&app).await;
    let started = Instant::now();
    app.google
        .create_event("primary", event("Made in Google"))
        .unwrap();
    delta_with_summary(&mut deltas, "Made in Google").await;
    let elapsed = started.elapsed();
    // Nothing but notification-driven pulls ran: no resync, no poll was due.
    let kinds = jobs_after(&app, mark).await;
    assert!(
        !kinds.is_empty() && kinds.iter().all(|k| k == "pull"),
        "{kinds:?}"
    );
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");

    let metrics = run.metrics().await;
    assert!(
        metric(
            &metrics,
            "plansync_notifications_total{outcome=\"accepted\"}"
        ) >= 1.0,
        "{metrics}"
    );
    assert!(
        metric(&metrics, "plansync_notifications_total{outcome=\"sync\"}") >= 1.0,
        "{metrics}"
    );
    eventually(WAIT, "the live-channel gauge", || async {
        (metric(&run.metrics().await, "plansync_notification_channels_live") == 1.0).then_some(())
    })
    .await;
    let webhook = format!("http://{}/google/notifications", run.addr);
    run.stop().await;

    // The backstop: with a live channel the connection polls at
    // PLANSYNC_POLL_BACKSTOP_SECS, not PLANSYNC_POLL_INTERVAL_SECS.
    let pass = |webhook: Option<&str>| {
        let mut env = vec![
            ("PLANSYNC_POLL_INTERVAL_SECS", "1".to_owned()),
            ("PLANSYNC_POLL_BACKSTOP_SECS", "86400".to_owned()),
        ];
        if let Some(url) = webhook {
            env.push(("PLANSYNC_WEBHOOK_URL", url.to_owned()));
        }
        let app = &app;
        async move {
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            app.run_once_with(&env).await
        }
    };
    let ten_seconds_ago = || async {
        sqlx::query(
            "UPDATE plansync.connections SET last_pull_at = now() - interval '10 seconds' \
             WHERE id = $1",
        )
        .bind(connection)
        .execute(&app.app.pool)
        .await
        .unwrap();
    };
    ten_seconds_ago().await;
    let mark = max_job_id(&app).await;
    pass(Some(&webhook)).await;
    assert!(jobs_after(&app, mark).await.is_empty());
    // Without the webhook the same connection is due every second, and its
    // channel is stopped (by the renewal job queued for later, brought
    // forward).
    ten_seconds_ago().await;
    pass(None).await;
    let kinds = jobs_after(&app, mark).await;
    assert!(kinds.contains(&"pull".to_owned()), "{kinds:?}");
    assert!(app
        .google
        .stopped_channels()
        .iter()
        .any(|c| c.id == channel.id));
}

#[tokio::test]
async fn forged_and_unknown_notifications_are_refused_and_a_burst_is_one_or_two_pulls() {
    let app = SyncApp::spawn().await;
    app.connect(1, "primary", &[]).await;
    let run = Run::start(&app, true, &[]).await;
    let channel = wait_for_live_channel(&app, "primary", &[]).await;
    quiescent(&app).await;

    // Refused requests write nothing at all.
    let snapshot = || async {
        let jobs: (i64, Option<chrono::DateTime<Utc>>) =
            sqlx::query_as("SELECT count(*), max(updated_at) FROM plansync.jobs")
                .fetch_one(&app.app.pool)
                .await
                .unwrap();
        let channels: (i64, Option<chrono::DateTime<Utc>>) =
            sqlx::query_as("SELECT count(*), max(retired_at) FROM plansync.channels")
                .fetch_one(&app.app.pool)
                .await
                .unwrap();
        (jobs, channels)
    };
    let before = snapshot().await;
    let forged = run
        .notify(&[
            ("X-Goog-Channel-ID", &channel.id),
            ("X-Goog-Channel-Token", "not-the-token"),
            ("X-Goog-Resource-State", "exists"),
        ])
        .await;
    assert_eq!(forged, 401);
    let missing = run
        .notify(&[
            ("X-Goog-Channel-ID", &channel.id),
            ("X-Goog-Resource-State", "exists"),
        ])
        .await;
    assert_eq!(missing, 401);
    let token = channel.token.clone().expect("the channel has a token");
    let unknown_id = uuid::Uuid::new_v4().to_string();
    for id in [unknown_id.as_str(), "chan-1", ""] {
        let status = run
            .notify(&[
                ("X-Goog-Channel-ID", id),
                ("X-Goog-Channel-Token", &token),
                ("X-Goog-Resource-State", "exists"),
            ])
            .await;
        assert_eq!(status, 404, "channel id {id:?}");
    }
    assert_eq!(snapshot().await, before, "a refused notification wrote");
    let metrics = run.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "plansync_notifications_total{outcome=\"bad_token\"}"
        ),
        2.0,
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            "plansync_notifications_total{outcome=\"unknown_channel\"}"
        ),
        3.0,
        "{metrics}"
    );

    // 50 notifications at once, as Google's own POSTs.
    let mark = max_job_id(&app).await;
    let statuses = futures::future::join_all(
        (0..50).map(|_| app.google.notify(&channel.id, ResourceState::Exists)),
    )
    .await;
    assert!(
        statuses.iter().all(|s| matches!(s, Ok(200))),
        "{statuses:?}"
    );
    eventually(WAIT, "the pulls to finish", || async {
        (pulls_in_flight(&app).await == 0).then_some(())
    })
    .await;
    let kinds = jobs_after(&app, mark).await;
    let pulls = kinds.iter().filter(|k| *k == "pull").count();
    assert!((1..=2).contains(&pulls), "{kinds:?}");
    run.stop().await;
}
