//! Google push notifications end to end: the emulator POSTs real
//! notifications to a running `plansync run` binary, which keeps its
//! channels open, renewed and stopped through `watch` jobs.
//!
//! Every worker here polls once a day (`PLANSYNC_POLL_INTERVAL_SECS` and
//! `PLANSYNC_POLL_BACKSTOP_SECS` = 86400) unless a test says otherwise, so a
//! pull that happens is one a notification asked for.

mod channels;
mod delivery;
mod stops;

use std::collections::HashMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use futures::StreamExt;
use plansync_fake_google::{Channel, FakeGoogleOptions, Fault, Operation, ResourceState};
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

/// The database's clock.
async fn db_now(app: &SyncApp) -> chrono::DateTime<chrono::Utc> {
    sqlx::query_scalar("SELECT now()")
        .fetch_one(&app.app.pool)
        .await
        .unwrap()
}

/// Kinds of the jobs created after `mark`, or claimed or finished since
/// `since` (a queued job picks up later triggers without a new row), in
/// order.
async fn jobs_after_or_run_since(
    app: &SyncApp,
    mark: i64,
    since: chrono::DateTime<chrono::Utc>,
) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT kind FROM plansync.jobs WHERE id > $1 OR started_at >= $2 \
             OR finished_at >= $2 ORDER BY id",
    )
    .bind(mark)
    .bind(since)
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
