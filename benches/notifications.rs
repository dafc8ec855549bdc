//! Notification benchmark (issue 13): a Google notification POST → the
//! change's delta at a Redis subscriber, p50/p99 over 1,000 notifications,
//! each for a real change, against the in-process emulator and a running
//! `plansync run` (a child process, with `PLANSYNC_WEBHOOK_URL` pointing at
//! its own listener and polling off).
//!
//! Per notification: the emulator's handle edits one event (a real change),
//! then the clock starts and the emulator POSTs the `exists` notification to
//! the worker exactly as Google would; the clock stops when the subscriber
//! receives the delta carrying the edit. Notifications go one at a time.
//! From the jobs table (database clock) the bench also splits each pull's
//! life into its wait in the queue (`started_at - created_at`: the enqueue by
//! the endpoint until a worker claimed it) and its run (`finished_at -
//! started_at`: listing the change, reconciling, committing the delta); the
//! rest of the latency is the POST itself and the relay to Redis.
//!
//! Run: `cargo bench --bench notifications` (PostgreSQL and Redis as for the
//! tests).

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use futures::StreamExt;
use plansync::crypto::TokenCipher;
use plansync_fake_google::{FakeGoogle, FakeGoogleOptions, ResourceState};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

const BIN: &str = env!("CARGO_BIN_EXE_plansync");
const NOTIFICATIONS: usize = 1_000;
const EVENTS: usize = 50;
const USER: i64 = 1;

fn redis_url() -> String {
    std::env::var("REDIS_URL")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "redis://127.0.0.1:6379".into())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Summaries of appointments in deltas for the user, stamped on arrival.
async fn subscribe(prefix: &str) -> tokio::sync::mpsc::UnboundedReceiver<(String, Instant)> {
    let client = redis::Client::open(redis_url()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub
        .subscribe(format!("{prefix}plan-deltas:user:{USER}"))
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut stream = pubsub.into_on_message();
        while let Some(msg) = stream.next().await {
            let at = Instant::now();
            let message: Value = serde_json::from_slice(msg.get_payload_bytes()).unwrap();
            for d in message["deltas"].as_array().into_iter().flatten() {
                if let Some(summary) = d["data"]["appointment"]["summary"].as_str() {
                    let _ = tx.send((summary.to_owned(), at));
                }
            }
        }
    });
    rx
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e5).round() / 100.0
}

#[tokio::main]
async fn main() {
    let google = FakeGoogle::start(FakeGoogleOptions {
        // The bench sends each notification itself, after the change, so
        // the clock starts at the POST.
        notify_on_change: false,
        ..FakeGoogleOptions::default()
    })
    .await
    .expect("the emulator starts");
    let start = Utc::now() + chrono::Duration::days(1);
    let mut event_ids = Vec::with_capacity(EVENTS);
    for i in 0..EVENTS {
        let at = start + chrono::Duration::hours(i as i64);
        let created = google
            .create_event(
                "primary",
                json!({
                    "summary": format!("event {i}"),
                    "start": {"dateTime": at.to_rfc3339_opts(SecondsFormat::Secs, true)},
                    "end": {"dateTime": (at + chrono::Duration::minutes(30))
                        .to_rfc3339_opts(SecondsFormat::Secs, true)},
                }),
            )
            .unwrap();
        event_ids.push(created["id"].as_str().unwrap().to_owned());
    }

    let db = common::BenchDb::create("notifications").await;
    sqlx::query("INSERT INTO users (id) VALUES ($1)")
        .bind(USER)
        .execute(&db.pool)
        .await
        .unwrap();
    let prefix = format!("bench:notifications:{}:", std::process::id());
    let token_key = TokenCipher::generate_key();
    let addr = format!("127.0.0.1:{}", free_port());
    let command = || {
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", &db.url)
            .env("REDIS_URL", redis_url())
            .env("PLANSYNC_REDIS_PREFIX", &prefix)
            .env("PLANSYNC_TOKEN_KEY", &token_key)
            .env("GOOGLE_CALENDAR_BASE_URL", google.base_url())
            .env("GOOGLE_TOKEN_URL", google.token_url())
            .env("GOOGLE_CLIENT_ID", google.client_id())
            .env("GOOGLE_CLIENT_SECRET", google.client_secret())
            .env("PLANSYNC_HTTP_ADDR", &addr)
            .env(
                "PLANSYNC_WEBHOOK_URL",
                format!("http://{addr}/google/notifications"),
            )
            .env("PLANSYNC_POLL_INTERVAL_SECS", "86400")
            .env("PLANSYNC_POLL_BACKSTOP_SECS", "86400")
            .env("RUST_LOG", "warn")
            .kill_on_drop(true);
        cmd
    };
    let mut connect = command()
        .args(["connect", "--user", "1", "--calendar", "primary"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = connect.stdin.take().unwrap();
    stdin
        .write_all(format!("{}\n", google.refresh_tokens()[0]).as_bytes())
        .await
        .unwrap();
    drop(stdin);
    assert!(connect.wait().await.unwrap().success());

    let mut worker = command()
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // The first sync, then the channel (opened by the scheduler's tick).
    let deadline = Instant::now() + Duration::from_secs(60);
    let channel = loop {
        assert!(Instant::now() < deadline, "no live channel within a minute");
        if let Some(c) = google.channels().into_iter().find(|c| c.is_live()) {
            let live: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM plansync.channels WHERE id = $1::TEXT::UUID \
                 AND state = 'live')",
            )
            .bind(&c.id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
            if live {
                break c;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mark: i64 = sqlx::query_scalar("SELECT COALESCE(max(id), 0) FROM plansync.jobs")
        .fetch_one(&db.pool)
        .await
        .unwrap();

    let mut deltas = subscribe(&prefix).await;
    let mut latencies = Vec::with_capacity(NOTIFICATIONS);
    let started = Instant::now();
    for i in 0..NOTIFICATIONS {
        let summary = format!("bench {i}");
        google
            .patch_event(
                "primary",
                &event_ids[i % EVENTS],
                json!({ "summary": summary }),
            )
            .unwrap();
        let posted = Instant::now();
        let status = google
            .notify(&channel.id, ResourceState::Exists)
            .await
            .unwrap();
        assert_eq!(status, 200);
        let arrived = loop {
            let (got, at) = tokio::time::timeout(Duration::from_secs(30), deltas.recv())
                .await
                .unwrap_or_else(|_| panic!("no delta for {summary:?}"))
                .unwrap();
            if got == summary {
                break at;
            }
        };
        latencies.push(arrived - posted);
    }
    let total = started.elapsed();
    latencies.sort();

    let rows: Vec<(DateTime<Utc>, DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
        "SELECT created_at, started_at, finished_at FROM plansync.jobs \
         WHERE id > $1 AND kind = 'pull' AND state = 'succeeded' ORDER BY id",
    )
    .bind(mark)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let to_std = |d: chrono::TimeDelta| d.to_std().unwrap_or_default();
    let mut waits: Vec<Duration> = rows.iter().map(|(c, s, _)| to_std(*s - *c)).collect();
    let mut runs: Vec<Duration> = rows.iter().map(|(_, s, f)| to_std(*f - *s)).collect();
    waits.sort();
    runs.sort();
    let other_kinds: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT kind FROM plansync.jobs WHERE id > $1 AND kind <> 'pull'",
    )
    .bind(mark)
    .fetch_all(&db.pool)
    .await
    .unwrap();

    let _ = worker.start_kill();
    let _ = worker.wait().await;

    let p = |v: &[Duration], q: f64| ms(common::percentile(v, q));
    let mean = |v: &[Duration]| ms(v.iter().sum::<Duration>() / v.len().max(1) as u32);
    let mean_latency = mean(&latencies);
    println!("## notifications ({})", common::machine());
    println!();
    println!(
        "{NOTIFICATIONS} notifications, one at a time, each after a real change, in {:.1} s; \
         {} pull jobs ran (other jobs: {other_kinds:?})",
        total.as_secs_f64(),
        rows.len()
    );
    println!();
    println!("| measure | p50 | p99 | max | mean | share of mean latency |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| notification POST → delta at subscriber | {} ms | {} ms | {} ms | {} ms | 100% |",
        p(&latencies, 0.5),
        p(&latencies, 0.99),
        ms(*latencies.last().unwrap()),
        mean_latency
    );
    println!(
        "| pull's wait in the queue (enqueued → claimed) | {} ms | {} ms | {} ms | {} ms | {:.0}% |",
        p(&waits, 0.5),
        p(&waits, 0.99),
        ms(*waits.last().unwrap_or(&Duration::ZERO)),
        mean(&waits),
        100.0 * mean(&waits) / mean_latency
    );
    println!(
        "| pull's run (claimed → committed) | {} ms | {} ms | {} ms | {} ms | {:.0}% |",
        p(&runs, 0.5),
        p(&runs, 0.99),
        ms(*runs.last().unwrap_or(&Duration::ZERO)),
        mean(&runs),
        100.0 * mean(&runs) / mean_latency
    );
    println!(
        "| rest: POST, enqueue, relay → Redis | | | | {:.2} ms | {:.0}% |",
        mean_latency - mean(&waits) - mean(&runs),
        100.0 * (mean_latency - mean(&waits) - mean(&runs)) / mean_latency
    );
    db.drop_db().await;
}
