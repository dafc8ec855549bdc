//! Google push notifications end to end: the emulator POSTs real
//! notifications to a running `plansync run` binary, which keeps its
//! channels open, renewed and stopped through `watch` jobs.
//!
//! Every worker here polls once a day (`PLANSYNC_POLL_INTERVAL_SECS` and
//! `PLANSYNC_POLL_BACKSTOP_SECS` = 86400) unless a test says otherwise, so a
//! pull that happens is one a notification asked for.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use futures::StreamExt;
use plansync::fake_google::{Channel, FakeGoogleOptions, Fault, Operation, ResourceState};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{eventually, stderr, SyncApp};

const WAIT: Duration = Duration::from_secs(30);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `plansync run` process.
struct Run {
    child: tokio::process::Child,
    addr: String,
}

impl Run {
    /// Starts `run` on a port of its own; with `webhook`, its
    /// `PLANSYNC_WEBHOOK_URL` is its own `/google/notifications`.
    async fn start(app: &SyncApp, webhook: bool, env: &[(&str, &str)]) -> Run {
        let addr = format!("127.0.0.1:{}", free_port());
        Run::start_at(app, &addr, webhook, env).await
    }

    async fn start_at(app: &SyncApp, addr: &str, webhook: bool, env: &[(&str, &str)]) -> Run {
        let mut cmd = app.command();
        cmd.arg("run")
            .env("PLANSYNC_HTTP_ADDR", addr)
            .env("PLANSYNC_POLL_INTERVAL_SECS", "86400")
            .env("PLANSYNC_POLL_BACKSTOP_SECS", "86400")
            .env("PLANSYNC_SHUTDOWN_GRACE_SECS", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        // Set PLANSYNC_TEST_LOGS to see the workers' logs.
        if std::env::var_os("PLANSYNC_TEST_LOGS").is_some() {
            cmd.env("RUST_LOG", "info").stderr(Stdio::inherit());
        } else {
            cmd.stderr(Stdio::null());
        }
        if webhook {
            cmd.env(
                "PLANSYNC_WEBHOOK_URL",
                format!("http://{addr}/google/notifications"),
            );
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        let run = Run {
            child,
            addr: addr.to_owned(),
        };
        eventually(WAIT, "run to listen", || async {
            (request(&run.addr, "GET", "/healthz", &[]).await.ok()?.0 == 200).then_some(())
        })
        .await;
        run
    }

    /// SIGTERM, and waits for the exit.
    async fn stop(mut self) {
        let pid = self.child.id().unwrap().to_string();
        let kill = tokio::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .unwrap();
        assert!(kill.success());
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("run exits after SIGTERM")
            .unwrap();
        assert_eq!(status.code(), Some(0));
    }

    /// SIGKILL: no drain, no lease released.
    async fn kill(mut self) {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
    }

    async fn notify(&self, headers: &[(&str, &str)]) -> u16 {
        request(&self.addr, "POST", "/google/notifications", headers)
            .await
            .unwrap()
            .0
    }

    async fn metrics(&self) -> String {
        request(&self.addr, "GET", "/metrics", &[]).await.unwrap().1
    }
}

/// One HTTP/1.1 request with an empty body; the status and the whole response.
async fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let mut text = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n"
    );
    for (k, v) in headers {
        text.push_str(&format!("{k}: {v}\r\n"));
    }
    text.push_str("\r\n");
    stream.write_all(text.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((code, response))
}

fn live_channels(app: &SyncApp, calendar: &str) -> Vec<Channel> {
    app.google
        .channels()
        .into_iter()
        .filter(|c| c.calendar_id == calendar && c.is_live())
        .collect()
}

/// Waits until the emulator has a live channel on `calendar` that the
/// database also knows as live; returns it.
async fn wait_for_live_channel(app: &SyncApp, calendar: &str, not: &[String]) -> Channel {
    eventually(WAIT, "a live notification channel", || async {
        let channel = live_channels(app, calendar)
            .into_iter()
            .find(|c| !not.contains(&c.id))?;
        let live: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM plansync.channels \
             WHERE id = $1::TEXT::UUID AND state = 'live' AND retired_at IS NULL)",
        )
        .bind(&channel.id)
        .fetch_one(&app.app.pool)
        .await
        .unwrap();
        live.then_some(channel)
    })
    .await
}

async fn max_job_id(app: &SyncApp) -> i64 {
    sqlx::query_scalar("SELECT COALESCE(max(id), 0) FROM plansync.jobs")
        .fetch_one(&app.app.pool)
        .await
        .unwrap()
}

/// Kinds of the jobs created after `mark`, in order.
async fn jobs_after(app: &SyncApp, mark: i64) -> Vec<String> {
    sqlx::query_scalar("SELECT kind FROM plansync.jobs WHERE id > $1 ORDER BY id")
        .bind(mark)
        .fetch_all(&app.app.pool)
        .await
        .unwrap()
}

/// No job running and none due: the worker has nothing to do.
async fn quiescent(app: &SyncApp) {
    eventually(WAIT, "the worker to be idle", || async {
        let busy: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM plansync.jobs WHERE state = 'running' \
             OR (state = 'queued' AND run_at <= now())",
        )
        .fetch_one(&app.app.pool)
        .await
        .unwrap();
        (busy == 0).then_some(())
    })
    .await;
}

async fn pulls_in_flight(app: &SyncApp) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM plansync.jobs WHERE kind IN ('pull', 'full_resync') \
         AND state IN ('queued', 'running') AND run_at <= now()",
    )
    .fetch_one(&app.app.pool)
    .await
    .unwrap()
}

/// Messages of the user's JSON delta channel.
async fn subscribe(app: &SyncApp, user: i64) -> tokio::sync::mpsc::UnboundedReceiver<Value> {
    let client = redis::Client::open(crate::harness::redis_url()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub
        .subscribe(format!("{}plan-deltas:user:{user}", app.app.redis_prefix))
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut stream = pubsub.into_on_message();
        while let Some(msg) = stream.next().await {
            let value: Value = serde_json::from_slice(msg.get_payload_bytes()).unwrap();
            if tx.send(value).is_err() {
                break;
            }
        }
    });
    rx
}

fn event(summary: &str) -> Value {
    let start = Utc::now() + chrono::Duration::days(2);
    let end = start + chrono::Duration::hours(1);
    json!({
        "summary": summary,
        "start": {"dateTime": start.to_rfc3339_opts(SecondsFormat::Secs, true)},
        "end": {"dateTime": end.to_rfc3339_opts(SecondsFormat::Secs, true)},
    })
}

/// Waits for a delta whose appointment has `summary`.
async fn delta_with_summary(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Value>, summary: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let message = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no delta for {summary:?}"))
            .unwrap();
        let found = message["deltas"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["data"]["appointment"]["summary"] == summary && d["source"] == "google");
        if found {
            return;
        }
    }
}

fn metric(metrics: &str, line_start: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

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

    // Polling catches an edit.
    let mut deltas = subscribe(&app, 1).await;
    app.google
        .create_event("primary", event("Polled from Google"))
        .unwrap();
    delta_with_summary(&mut deltas, "Polled from Google").await;
    let kinds = jobs_after(&app, mark).await;
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

/// Opens a channel with a short-lived `run`, stops that `run`, and
/// disconnects: a watch job is left to stop the channel.
async fn disconnected_with_a_channel(app: &SyncApp) -> (i64, Channel) {
    let connection = app.connect(1, "primary", &[]).await;
    let run = Run::start(app, true, &[]).await;
    let channel = wait_for_live_channel(app, "primary", &[]).await;
    run.stop().await;
    let out = app
        .run(&["disconnect", "--connection", &connection.to_string()], "")
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let (kept, watch_jobs): (bool, i64) = sqlx::query_as(
        "SELECT c.refresh_token_enc IS NOT NULL, (SELECT count(*) FROM plansync.jobs j \
             WHERE j.connection_id = c.id AND j.kind = 'watch' AND j.state = 'queued' \
               AND j.run_at <= now()) \
         FROM plansync.connections c WHERE c.id = $1",
    )
    .bind(connection)
    .fetch_one(&app.app.pool)
    .await
    .unwrap();
    assert!(kept, "the token is kept until the channel is stopped");
    assert_eq!(watch_jobs, 1, "a watch job is due to stop the channel");
    (connection, channel)
}

async fn channel_row(app: &SyncApp, id: &str) -> (String, Option<String>) {
    sqlx::query_as("SELECT state, last_error FROM plansync.channels WHERE id = $1::TEXT::UUID")
        .bind(id)
        .fetch_one(&app.app.pool)
        .await
        .unwrap()
}

async fn token_kept(app: &SyncApp, connection: i64) -> bool {
    sqlx::query_scalar(
        "SELECT refresh_token_enc IS NOT NULL FROM plansync.connections WHERE id = $1",
    )
    .bind(connection)
    .fetch_one(&app.app.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_stop_that_fails_for_good_gives_the_channel_up_and_forgets_the_token() {
    let app = SyncApp::spawn().await;
    let (connection, channel) = disconnected_with_a_channel(&app).await;
    app.google
        .inject_fault(Operation::Stop, Fault::BackendError, 100);
    app.run_once_with(&[("PLANSYNC_MAX_ATTEMPTS", "1")]).await;
    let dead: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM plansync.jobs WHERE kind = 'watch' AND state = 'dead'",
    )
    .fetch_one(&app.app.pool)
    .await
    .unwrap();
    assert_eq!(dead, 1, "the stop failed for good");
    assert!(token_kept(&app, connection).await, "not settled yet");

    // The next scheduler tick gives the channel up and forgets the token.
    app.run_once().await;
    assert!(!token_kept(&app, connection).await);
    let (state, error) = channel_row(&app, &channel.id).await;
    assert_eq!(state, "stopped");
    assert!(
        error.as_deref().unwrap_or("").contains("failed for good"),
        "{error:?}"
    );
    // Google still has it, until it expires by itself.
    assert!(app.google.channels().iter().any(|c| c.id == channel.id));
    let watch_jobs: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM plansync.jobs WHERE kind = 'watch' AND state IN ('queued', 'running')",
    )
    .fetch_one(&app.app.pool)
    .await
    .unwrap();
    assert_eq!(watch_jobs, 0);
}

#[tokio::test]
async fn a_revoked_grant_ends_the_stop_of_a_disconnected_connection_at_once() {
    let app = SyncApp::spawn().await;
    let (connection, channel) = disconnected_with_a_channel(&app).await;
    let token = app.google.refresh_tokens()[0].clone();
    assert!(app.google.revoke_refresh_token(&token));
    app.run_once().await;
    let (state, error) = channel_row(&app, &channel.id).await;
    assert_eq!(state, "stopped");
    assert!(error.is_some(), "given up, with the reason");
    assert!(!token_kept(&app, connection).await);
    let kinds: Vec<(String, String)> =
        sqlx::query_as("SELECT kind, state FROM plansync.jobs WHERE kind = 'watch'")
            .fetch_all(&app.app.pool)
            .await
            .unwrap();
    assert!(kinds.iter().all(|(_, s)| s == "succeeded"), "{kinds:?}");
}
