//! A worker's Postgres pool is its own setting: jobs hold a connection only
//! while they talk to Postgres, never while they wait on Google, so many jobs
//! in flight share a small pool.

use std::time::Duration;

use plansync_fake_google::FakeGoogleOptions;
use serde_json::json;

use crate::harness::{run_command, stderr, SyncApp};

#[tokio::test]
async fn sixty_four_jobs_in_flight_share_a_pool_of_four() {
    let app = SyncApp::with_options(FakeGoogleOptions {
        latency: Duration::from_millis(100),
        ..FakeGoogleOptions::default()
    })
    .await;
    const CALENDARS: i64 = 48;
    let day = (chrono::Utc::now() + chrono::Duration::days(2)).date_naive();
    for i in 0..CALENDARS {
        let cal = format!("cal{i}@example.com");
        app.google.add_calendar(&cal, &cal, "UTC").unwrap();
        for h in 0..3u32 {
            let start = day.and_hms_opt(8 + h, 0, 0).unwrap().and_utc().to_rfc3339();
            let end = day.and_hms_opt(9 + h, 0, 0).unwrap().and_utc().to_rfc3339();
            app.google
                .create_event(
                    &cal,
                    json!({"summary": format!("{cal} {h}"), "start": {"dateTime": start}, "end": {"dateTime": end}}),
                )
                .unwrap();
        }
        app.connect(100 + i, &cal, &[]).await;
    }
    let mut cmd = app.command();
    cmd.env("PLANSYNC_CONCURRENCY", "64")
        .env("PLANSYNC_DB_POOL", "4");
    let out = run_command(cmd, &["run", "--once"], "").await;
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    assert!(!log.contains("pool timed out"), "{log}");
    assert!(!log.contains("job failed"), "{log}");

    // Calls in flight were not limited by the pool: no job held a Postgres
    // connection while it waited on Google.
    assert!(
        app.google.max_lists_in_flight() > 8,
        "at most {} listings were in flight",
        app.google.max_lists_in_flight()
    );
    let imported: i64 = sqlx::query_scalar("SELECT count(*) FROM appointments")
        .fetch_one(&app.app.pool)
        .await
        .unwrap();
    assert_eq!(imported, CALENDARS * 3);
    let status = app.status().await;
    assert_eq!(status["queue"]["depth"], 0, "{status}");
    assert_eq!(status["queue"]["deadTotal"], 0, "{status}");
    assert!(status["connections"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["lastPullAt"].is_string() && c["lastError"].is_null()));
}

#[tokio::test]
async fn two_hundred_fifty_six_jobs_in_flight_run_on_the_default_pool() {
    use plansync::ids::{CalendarId, RefreshToken, UserId};
    use plansync::store::connections::{ConnectionAuth, NewConnection};

    // Google at a realistic 200 ms a call; PLANSYNC_DB_POOL left at its
    // default (10), 256 jobs in flight.
    let app = SyncApp::with_options(FakeGoogleOptions {
        latency: Duration::from_millis(200),
        ..FakeGoogleOptions::default()
    })
    .await;
    const CALENDARS: i64 = 300;
    let day = (chrono::Utc::now() + chrono::Duration::days(2)).date_naive();
    let start = day.and_hms_opt(9, 0, 0).unwrap().and_utc().to_rfc3339();
    let end = day.and_hms_opt(10, 0, 0).unwrap().and_utc().to_rfc3339();
    let token = RefreshToken::new(app.google.refresh_tokens()[0].clone());
    let cipher = app.app.cipher();
    for i in 0..CALENDARS {
        let cal = format!("cal{i}@example.com");
        app.google.add_calendar(&cal, &cal, "UTC").unwrap();
        app.google
            .create_event(
                &cal,
                json!({"summary": cal, "start": {"dateTime": start}, "end": {"dateTime": end}}),
            )
            .unwrap();
        if i == 0 {
            // Through the command once (it also records the token key's
            // check value); the rest through the same library call, which is
            // faster than 300 processes.
            app.connect(1000, &cal, &[]).await;
            continue;
        }
        let user = UserId(1000 + i);
        sqlx::query("INSERT INTO users (id) VALUES ($1)")
            .bind(user.0)
            .execute(&app.app.pool)
            .await
            .unwrap();
        let calendar = CalendarId::new(cal.clone());
        plansync::sync::connect(
            &app.app.pool,
            NewConnection {
                user,
                calendar: &calendar,
                region: None,
                default_region: "default",
                push_target: false,
                auth: ConnectionAuth::RefreshToken {
                    encrypted: cipher.encrypt(user, &calendar, &token),
                },
            },
        )
        .await
        .unwrap();
    }

    let report = app
        .run_once_with(&[
            ("PLANSYNC_CONCURRENCY", "256"),
            // The fleet budget above the offered load: this is about the pool.
            ("PLANSYNC_GOOGLE_QPM", "1000000"),
            ("PLANSYNC_GOOGLE_USER_QPM", "1000000"),
        ])
        .await;
    assert_eq!(
        (report.ran, report.succeeded, report.failed),
        (CALENDARS as u64, CALENDARS as u64, 0),
        "every first sync ran once and succeeded (a pool timeout fails a job)"
    );
    assert!(
        app.google.max_lists_in_flight() > 10 * 4,
        "listings in flight were held to {} by a pool of 10",
        app.google.max_lists_in_flight()
    );
    let imported: i64 = sqlx::query_scalar("SELECT count(*) FROM appointments")
        .fetch_one(&app.app.pool)
        .await
        .unwrap();
    assert_eq!(imported, CALENDARS);
}
