//! Hostile input (issue 10): a hostile Google (the emulator's canned answers
//! and raw items) and odd host rows. Every test checks what must hold all at
//! once: the good data synced and nothing else changed, the stored sync token
//! kept by a bad listing, no `deleted` delta at a Redis subscriber, `status`
//! naming the cause, and `run --once` returning.

mod answers;
mod host_rows;
mod listings;
mod settings;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use futures::StreamExt;
use plansync_fake_google::{Fault, Operation};
use serde_json::{json, Value};

use crate::harness::{stderr, stdout, SyncApp};

fn at(days: i64, hour: u32) -> String {
    let day = (Utc::now() + chrono::Duration::days(days)).date_naive();
    day.and_hms_opt(hour, 0, 0)
        .unwrap()
        .and_utc()
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn timed(summary: &str, days: i64, hour: u32) -> Value {
    json!({"summary": summary, "start": {"dateTime": at(days, hour)}, "end": {"dateTime": at(days, hour + 1)}})
}

/// Every delta published on the app's JSON channels.
struct Deltas {
    rx: tokio::sync::mpsc::UnboundedReceiver<Value>,
    seen: Vec<Value>,
    _task: tokio::task::JoinHandle<()>,
}

impl Deltas {
    async fn subscribe(app: &SyncApp) -> Deltas {
        let client = redis::Client::open(crate::harness::redis_url()).unwrap();
        let mut pubsub = client.get_async_pubsub().await.unwrap();
        pubsub
            .psubscribe(format!("{}plan-deltas:user:*", app.app.redis_prefix))
            .await
            .unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let mut stream = pubsub.into_on_message();
            while let Some(msg) = stream.next().await {
                let v: Value = serde_json::from_slice(msg.get_payload_bytes()).unwrap();
                for d in v["deltas"].as_array().unwrap() {
                    let _ = tx.send(d.clone());
                }
            }
        });
        Deltas {
            rx,
            seen: Vec::new(),
            _task: task,
        }
    }

    /// Waits until every delta the outbox holds has arrived, then returns all.
    async fn settle(&mut self, app: &SyncApp) -> &[Value] {
        let written: i64 = sqlx::query_scalar("SELECT count(*) FROM plansync.outbox")
            .fetch_one(&app.app.pool)
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while (self.seen.len() as i64) < written {
            let d = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .expect("every written delta is published")
                .unwrap();
            self.seen.push(d);
        }
        &self.seen
    }

    async fn assert_no_deletes(&mut self, app: &SyncApp) {
        let all = self.settle(app).await;
        assert!(
            all.iter().all(|d| d["action"] != "deleted"),
            "a deleted delta was published: {all:?}"
        );
    }
}

async fn summaries(app: &SyncApp) -> Vec<String> {
    sqlx::query_scalar("SELECT summary FROM appointments ORDER BY summary")
        .fetch_all(&app.app.pool)
        .await
        .unwrap()
}

async fn sync_token(app: &SyncApp, connection: i64) -> Option<String> {
    sqlx::query_scalar("SELECT sync_token FROM plansync.connections WHERE id = $1")
        .bind(connection)
        .fetch_one(&app.app.pool)
        .await
        .unwrap()
}

fn connection_status(status: &Value, id: i64) -> Value {
    status["connections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .cloned()
        .expect("the connection is in status")
}

fn respond(status: u16, body: &str) -> Fault {
    Fault::Respond {
        status,
        headers: BTreeMap::from([("content-type".to_owned(), "application/json".to_owned())]),
        body: body.to_owned(),
    }
}

async fn resync(app: &SyncApp, user: i64, full: bool) {
    let mut args = vec!["resync", "--user"];
    let u = user.to_string();
    args.push(&u);
    if full {
        args.push("--full");
    }
    let out = app.run(&args, "").await;
    assert!(out.status.success(), "resync: {}", stderr(&out));
}

/// A synced calendar of three events, with its subscriber.
async fn synced() -> (SyncApp, i64, Deltas) {
    let app = SyncApp::spawn().await;
    let deltas = Deltas::subscribe(&app).await;
    for (i, s) in ["alpha", "beta", "gamma"].iter().enumerate() {
        app.google
            .create_event("primary", timed(s, 1 + i as i64, 10))
            .unwrap();
    }
    let id = app.connect(1, "primary", &[]).await;
    app.run_once().await;
    assert_eq!(summaries(&app).await, ["alpha", "beta", "gamma"]);
    (app, id, deltas)
}
