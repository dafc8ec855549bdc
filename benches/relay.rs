//! Relay benchmark (issue: deltas). Measures, in one run on one machine:
//! - latency from a change's commit to its message at a Redis subscriber,
//!   p50/p99 over 10,000 changes committed at 1,000 changes/s;
//! - the relay's sustained throughput draining a 100,000-delta backlog;
//! - for scale, `redis-benchmark`'s pipelined PUBLISH rate for a payload of
//!   the same size on the same Redis.
//!
//! Run: `cargo bench --bench relay` (PostgreSQL and Redis as for the tests).

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::StreamExt;
use plansync::config::{DeltaMode, RedisSettings};
use plansync::deltas::publish::json_message;
use plansync::deltas::relay::{Relay, RelaySettings};
use plansync::deltas::{
    AppointmentPayload, DeltaAction, DeltaBatch, GoogleSync, PlanItemDelta, UserDeltaMessage,
};
use plansync::ids::{AppointmentId, UserId};
use tokio_util::sync::CancellationToken;

const USERS: i64 = 100;
const LATENCY_CHANGES: usize = 10_000;
const RATE_PER_SEC: u64 = 1_000;
const BACKLOG: usize = 100_000;

fn payload(id: i64, user: i64) -> AppointmentPayload {
    let now = Utc::now();
    AppointmentPayload {
        id: AppointmentId(id),
        user_id: UserId(user),
        summary: "Quarterly planning with the design team".into(),
        description: Some("Agenda: roadmap, hiring, offsite. Bring the numbers.".into()),
        location: Some("Room 4.12, Main St 1, Berlin".into()),
        start_at: now,
        end_at: now + chrono::Duration::hours(1),
        start_time_zone: Some("Europe/Berlin".into()),
        end_time_zone: Some("Europe/Berlin".into()),
        all_day: false,
        created_at: now,
        updated_at: now,
        google_sync: Some(GoogleSync {
            calendar_id: "primary".into(),
            event_id: plansync::ids::EventId::new(format!("ps{id:020}")),
            etag: Some("\"3181161784712000\"".into()),
            remote_updated_at: Some(now),
        }),
    }
}

fn redis_url() -> String {
    std::env::var("REDIS_URL")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "redis://127.0.0.1:6379".into())
}

/// Counts deltas arriving on the prefix's channels, stamping each arrival.
async fn subscribe(prefix: &str) -> tokio::sync::mpsc::UnboundedReceiver<(i64, i64, Instant)> {
    let client = redis::Client::open(redis_url()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub
        .psubscribe(format!("{prefix}plan-deltas:user:*"))
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut stream = pubsub.into_on_message();
        while let Some(msg) = stream.next().await {
            let at = Instant::now();
            let message: UserDeltaMessage =
                serde_json::from_slice(msg.get_payload_bytes()).unwrap();
            for d in message.deltas {
                let _ = tx.send((message.user_id.0, d.version.unwrap(), at));
            }
        }
    });
    rx
}

#[tokio::main]
async fn main() {
    let db = common::BenchDb::create("relay").await;
    sqlx::query("INSERT INTO users (id) SELECT generate_series(1, $1)")
        .bind(USERS)
        .execute(&db.pool)
        .await
        .unwrap();
    let prefix = format!("bench:{}:", std::process::id());
    let settings = RedisSettings {
        url: redis_url(),
        delta_mode: DeltaMode::JSON,
        prefix: prefix.clone(),
        socketio_key: "socket.io".into(),
        ..RedisSettings::default()
    };

    // Latency at a steady 1,000 changes/s.
    let mut arrivals = subscribe(&prefix).await;
    let cancel = CancellationToken::new();
    let relay = Relay::new(db.pool.clone(), settings.clone(), RelaySettings::default()).unwrap();
    let relay_task = tokio::spawn(relay.run(cancel.clone()));
    let mut committed: HashMap<(i64, i64), Instant> = HashMap::with_capacity(LATENCY_CHANGES);
    let interval = Duration::from_micros(1_000_000 / RATE_PER_SEC);
    let start = tokio::time::Instant::now();
    for i in 0..LATENCY_CHANGES {
        tokio::time::sleep_until(start + interval * i as u32).await;
        let user = 1 + (i as i64 % USERS);
        let mut tx = db.pool.begin().await.unwrap();
        let mut batch = DeltaBatch::new();
        batch.updated(payload(i as i64, user));
        let versions = batch.write(&mut tx, 50).await.unwrap();
        tx.commit().await.unwrap();
        committed.insert((user, versions[0].1), Instant::now());
    }
    let send_secs = start.elapsed().as_secs_f64();
    let mut latencies = Vec::with_capacity(LATENCY_CHANGES);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while latencies.len() < LATENCY_CHANGES {
        let (user, version, at) = tokio::time::timeout_at(deadline, arrivals.recv())
            .await
            .expect("all deltas arrive")
            .unwrap();
        if let Some(c) = committed.get(&(user, version)) {
            latencies.push(at.saturating_duration_since(*c));
        }
    }
    latencies.sort();
    cancel.cancel();
    relay_task.await.unwrap();

    // Sustained throughput: drain a backlog.
    let mut written = 0usize;
    while written < BACKLOG {
        let mut tx = db.pool.begin().await.unwrap();
        let mut batch = DeltaBatch::new();
        for j in 0..1000 {
            let id = (written + j) as i64;
            batch.updated(payload(id, 1 + id % USERS));
        }
        batch.write(&mut tx, 1000).await.unwrap();
        tx.commit().await.unwrap();
        written += 1000;
    }
    let mut counted = subscribe(&prefix).await;
    let mut relay =
        Relay::new(db.pool.clone(), settings.clone(), RelaySettings::default()).unwrap();
    let t0 = Instant::now();
    let drained = relay.drain().await.unwrap();
    let drain_secs = t0.elapsed().as_secs_f64();
    let mut received = 0usize;
    while received < drained {
        tokio::time::timeout(Duration::from_secs(60), counted.recv())
            .await
            .expect("backlog arrives")
            .unwrap();
        received += 1;
    }

    // redis-benchmark, pipelined PUBLISH of a payload of the same size.
    let sample = json_message(
        UserId(1),
        &[PlanItemDelta::appointment_upsert(
            DeltaAction::Updated,
            1,
            payload(1, 1),
        )],
    );
    let payload_text = "x".repeat(sample.len());
    let url = url::Url::parse(&redis_url()).unwrap();
    let out = std::process::Command::new("redis-benchmark")
        .args(["-h", url.host_str().unwrap_or("127.0.0.1")])
        .args(["-p", &url.port().unwrap_or(6379).to_string()])
        .args([
            "-n",
            "200000",
            "-P",
            "64",
            "-q",
            "PUBLISH",
            &format!("{prefix}rb"),
            &payload_text,
        ])
        .output();
    let redis_rps = out
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .and_then(|text| {
            text.rsplit('\r').find_map(|part| {
                part.split("requests per second")
                    .next()
                    .and_then(|s| s.rsplit(' ').nth(1))
                    .and_then(|n| n.trim().parse::<f64>().ok())
            })
        });

    let throughput = drained as f64 / drain_secs;
    println!("## relay ({})", common::machine());
    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!("| changes committed at {RATE_PER_SEC}/s | {LATENCY_CHANGES} in {send_secs:.1} s |");
    println!(
        "| commit → subscriber p50 | {:.2} ms |",
        common::percentile(&latencies, 0.50).as_secs_f64() * 1e3
    );
    println!(
        "| commit → subscriber p99 | {:.2} ms |",
        common::percentile(&latencies, 0.99).as_secs_f64() * 1e3
    );
    println!(
        "| commit → subscriber max | {:.2} ms |",
        latencies.last().unwrap().as_secs_f64() * 1e3
    );
    println!("| relay sustained throughput ({drained} backlog) | {throughput:.0} deltas/s |");
    println!(
        "| payload size (one delta, JSON) | {} bytes |",
        sample.len()
    );
    match redis_rps {
        Some(rps) => {
            println!("| redis-benchmark PUBLISH -P 64, same size | {rps:.0} msgs/s |");
            println!("| relay / redis-benchmark | {:.2} |", throughput / rps);
        }
        None => println!("| redis-benchmark | not available |"),
    }
    db.drop_db().await;
}
