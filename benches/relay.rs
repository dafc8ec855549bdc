//! Relay benchmark (issue 19). Measures, in each of three runs on one machine
//! and with a live Redis subscriber receiving everything:
//! - **messages/s with one delta per message**: rounds of one one-change
//!   transaction for each of 1,000 users, drained by the relay with its
//!   default settings, timed from the drain's start to the last message at
//!   the subscriber;
//! - beside it, in the same run, `redis-benchmark` PUBLISH of the same
//!   message (same bytes) from one connection without pipelining (the
//!   target: the relay at least as fast), and pipelined (`-P 64`, for scale),
//!   with a live subscriber on the channel;
//! - **a deep backlog** (an outage's: 50 one-change transactions per user),
//!   deltas/s and messages/s, messages then carrying up to 50 deltas;
//! - **commit → subscriber latency** at 1,000 changes/s over 1,000 users, the
//!   clock started just before COMMIT is sent (so the commit is inside).
//!
//! Medians of the three runs are printed, each ratio taken within one run.
//! Run: `cargo bench --bench relay` (PostgreSQL and Redis as for the tests,
//! `redis-benchmark` on the PATH).

mod common;

use std::sync::Arc;
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
use sqlx::PgPool;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

/// `PLANSYNC_BENCH_RUNS` overrides it (e.g. 1, to profile one run).
const RUNS: usize = 3;
const USERS: i64 = 1_000;
/// Rounds of one change per user for the one-delta-per-message figure.
const ROUNDS: usize = 30;
/// Changes per user in the deep backlog.
const DEEP_PER_USER: usize = 50;
const LATENCY_CHANGES: usize = 10_000;
const RATE_PER_SEC: u64 = 1_000;
/// Concurrent writers (each a transaction at a time), so commits keep the
/// rate (and build backlogs) even when one commit's fsync takes milliseconds.
const WRITERS: usize = 8;
const REDIS_BENCH_REQUESTS: usize = 100_000;

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

/// CPU time used so far (user + system, in ms) by this process, by the
/// PostgreSQL backends serving `database` (their process titles name it) and
/// by `redis-server`: where a phase's work goes, a coarse profile that needs
/// no privileges (10 ms resolution).
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    bench: f64,
    postgres: f64,
    redis: f64,
}

impl Cpu {
    fn now(database: &str) -> Cpu {
        let ticks = |pid: &str| -> f64 {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    // Fields after the parenthesised command name.
                    let rest = stat.rsplit_once(')')?.1;
                    let fields: Vec<&str> = rest.split_whitespace().collect();
                    let utime: f64 = fields.get(11)?.parse().ok()?;
                    let stime: f64 = fields.get(12)?.parse().ok()?;
                    Some((utime + stime) * 10.0)
                })
                .unwrap_or(0.0)
        };
        let mut cpu = Cpu {
            bench: ticks("self"),
            ..Cpu::default()
        };
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let pid = entry.file_name().to_string_lossy().into_owned();
            if !pid.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                continue;
            };
            let cmdline = String::from_utf8_lossy(&cmdline);
            if cmdline.starts_with("postgres:") && cmdline.contains(&format!(" {database} ")) {
                cpu.postgres += ticks(&pid);
            } else if cmdline.starts_with("redis-server") || cmdline.contains("/redis-server") {
                cpu.redis += ticks(&pid);
            }
        }
        cpu
    }

    fn since(self, before: Cpu) -> Cpu {
        Cpu {
            bench: self.bench - before.bench,
            postgres: self.postgres - before.postgres,
            redis: self.redis - before.redis,
        }
    }

    fn add(self, other: Cpu) -> Cpu {
        Cpu {
            bench: self.bench + other.bench,
            postgres: self.postgres + other.postgres,
            redis: self.redis + other.redis,
        }
    }

    /// Per 1,000 messages.
    fn per_thousand(self, messages: usize) -> Cpu {
        let k = 1000.0 / messages as f64;
        Cpu {
            bench: self.bench * k,
            postgres: self.postgres * k,
            redis: self.redis * k,
        }
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// A live subscriber: stamps every message on the pattern as it arrives and
/// keeps its bytes; parsing waits until the measurement is over, so the
/// subscriber does what `redis-benchmark`'s does (receive), no more.
/// Messages as they arrived: when, and the payload's bytes.
type Arrivals = Arc<std::sync::Mutex<Vec<(Instant, Vec<u8>)>>>;

struct Subscriber {
    arrivals: Arrivals,
    task: tokio::task::JoinHandle<()>,
}

impl Subscriber {
    async fn start(pattern: &str) -> Subscriber {
        let client = redis::Client::open(redis_url()).unwrap();
        let mut pubsub = client.get_async_pubsub().await.unwrap();
        pubsub.psubscribe(pattern).await.unwrap();
        let arrivals: Arrivals = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = arrivals.clone();
        let task = tokio::spawn(async move {
            let mut stream = pubsub.into_on_message();
            while let Some(msg) = stream.next().await {
                let at = Instant::now();
                sink.lock()
                    .unwrap()
                    .push((at, msg.get_payload_bytes().to_vec()));
            }
        });
        Subscriber { arrivals, task }
    }

    fn count(&self) -> usize {
        self.arrivals.lock().unwrap().len()
    }

    /// Waits (polling, with a deadline) until `n` messages have arrived;
    /// returns the arrival time of the `n`-th.
    async fn wait_for(&self, n: usize) -> Instant {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            {
                let arrivals = self.arrivals.lock().unwrap();
                if arrivals.len() >= n {
                    return arrivals[n - 1].0;
                }
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {n} messages arrived",
                self.count()
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    fn take(&self) -> Vec<(Instant, Vec<u8>)> {
        std::mem::take(&mut *self.arrivals.lock().unwrap())
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Commits `count` one-change transactions, change `i` for user
/// `1 + i % USERS`, through the real write path, `WRITERS` at a time; with a
/// `pace`, change `i` is committed no earlier than `start + i * pace`.
/// Returns, per change, (user, version, the instant just before COMMIT).
async fn commit_changes(
    pool: &PgPool,
    first_id: i64,
    count: usize,
    pace: Option<Duration>,
) -> Vec<(i64, i64, Instant)> {
    let next = Arc::new(Mutex::new(0usize));
    let start = tokio::time::Instant::now();
    let mut writers = Vec::new();
    for _ in 0..WRITERS {
        let pool = pool.clone();
        let next = next.clone();
        writers.push(tokio::spawn(async move {
            let mut stamps = Vec::new();
            loop {
                let i = {
                    let mut next = next.lock().await;
                    if *next >= count {
                        break;
                    }
                    *next += 1;
                    *next - 1
                };
                if let Some(pace) = pace {
                    tokio::time::sleep_until(start + pace * i as u32).await;
                }
                let user = 1 + (i as i64 % USERS);
                let mut tx = pool.begin().await.unwrap();
                let mut batch = DeltaBatch::new();
                batch.updated(payload(first_id + i as i64, user));
                let versions = batch.write(&mut tx, 50).await.unwrap();
                let before_commit = Instant::now();
                tx.commit().await.unwrap();
                stamps.push((user, versions[0].1, before_commit));
            }
            stamps
        }));
    }
    let mut all = Vec::with_capacity(count);
    for w in writers {
        all.extend(w.await.unwrap());
    }
    all
}

fn deltas_in(payload: &[u8]) -> UserDeltaMessage {
    serde_json::from_slice(payload).expect("a JSON delta message")
}

/// `redis-benchmark` PUBLISH of `message` on `channel` from one connection,
/// with `pipeline` commands in flight, while a subscriber receives them all.
/// Requests per second, as it reports them.
async fn redis_benchmark(channel: &str, message: &str, pipeline: usize) -> Option<(f64, Cpu)> {
    let sub = Subscriber::start(channel).await;
    let cpu0 = Cpu::now("-");
    let children0 = children_cpu_ms();
    let url = url::Url::parse(&redis_url()).unwrap();
    let out = tokio::process::Command::new("redis-benchmark")
        .args(["-h", url.host_str().unwrap_or("127.0.0.1")])
        .args(["-p", &url.port().unwrap_or(6379).to_string()])
        .args(["-c", "1", "-P", &pipeline.to_string()])
        .args(["-n", &REDIS_BENCH_REQUESTS.to_string(), "-q"])
        .args(["PUBLISH", channel, message])
        .output()
        .await
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    // The subscriber must have had them all: a live one, like the relay's.
    sub.wait_for(REDIS_BENCH_REQUESTS).await;
    let mut cpu = Cpu::now("-").since(cpu0);
    // redis-benchmark's own CPU, as a reaped child of ours.
    cpu.bench += children_cpu_ms() - children0;
    let rps = text.rsplit('\r').find_map(|part| {
        let before = part.split("requests per second").next()?;
        before.trim_end().rsplit(' ').next()?.parse::<f64>().ok()
    })?;
    Some((rps, cpu.per_thousand(REDIS_BENCH_REQUESTS)))
}

/// CPU time (ms) of this process's reaped children.
fn children_cpu_ms() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            let rest = stat.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let cutime: f64 = fields.get(13)?.parse().ok()?;
            let cstime: f64 = fields.get(14)?.parse().ok()?;
            Some((cutime + cstime) * 10.0)
        })
        .unwrap_or(0.0)
}

struct Run {
    msgs_per_sec: f64,
    deep_deltas_per_sec: f64,
    deep_msgs_per_sec: f64,
    deep_msgs: usize,
    unpipelined: Option<f64>,
    pipelined: Option<f64>,
    /// CPU per 1,000 messages: the relay's drains, redis-benchmark unpipelined.
    relay_cpu: Cpu,
    redis_bench_cpu: Option<Cpu>,
    /// Wall time per 1,000 messages of the relay (ms).
    relay_wall_ms: f64,
    p50: Duration,
    p99: Duration,
    max: Duration,
    latency_send_secs: f64,
    write_tx_per_sec: f64,
}

async fn one_run(run: usize, db: &common::BenchDb, settings: &RedisSettings) -> Run {
    let prefix = &settings.prefix;
    let pattern = format!("{prefix}plan-deltas:user:*");
    let mut next_id = (run as i64) * 10_000_000;

    // One delta per message: rounds of one change per user, each drained.
    let sub = Subscriber::start(&pattern).await;
    let mut relay =
        Relay::new(db.pool.clone(), settings.clone(), RelaySettings::default()).unwrap();
    let mut relaying = Duration::ZERO;
    let mut relay_cpu = Cpu::default();
    let mut writing = Duration::ZERO;
    let mut received = 0usize;
    for _ in 0..ROUNDS {
        let w0 = Instant::now();
        commit_changes(&db.pool, next_id, USERS as usize, None).await;
        writing += w0.elapsed();
        next_id += USERS;
        let cpu0 = Cpu::now(&db.name);
        let t0 = Instant::now();
        let n = relay.drain().await.unwrap();
        assert_eq!(n, USERS as usize);
        received += n;
        let last = sub.wait_for(received).await;
        relaying += last.saturating_duration_since(t0);
        relay_cpu = relay_cpu.add(Cpu::now(&db.name).since(cpu0));
    }
    let messages = sub.take();
    assert!(
        messages.iter().all(|(_, p)| deltas_in(p).deltas.len() == 1),
        "one delta per message"
    );
    drop(sub);
    let msgs_per_sec = (ROUNDS * USERS as usize) as f64 / relaying.as_secs_f64();
    let write_tx_per_sec = (ROUNDS * USERS as usize) as f64 / writing.as_secs_f64();

    // The same message through redis-benchmark, in the same run.
    let sample = String::from_utf8(json_message(
        UserId(1),
        &[PlanItemDelta::appointment_upsert(
            DeltaAction::Updated,
            1,
            payload(1, 1),
        )],
    ))
    .unwrap();
    let channel = format!("{prefix}redis-benchmark");
    let unpipelined = redis_benchmark(&channel, &sample, 1).await;
    let pipelined = redis_benchmark(&channel, &sample, 64)
        .await
        .map(|(rps, _)| rps);

    // A deep backlog, as an outage leaves it.
    let deep = DEEP_PER_USER * USERS as usize;
    commit_changes(&db.pool, next_id, deep, None).await;
    next_id += deep as i64;
    let sub = Subscriber::start(&pattern).await;
    let t0 = Instant::now();
    let n = relay.drain().await.unwrap();
    assert_eq!(n, deep);
    // Messages carry several deltas: wait until the deltas are all in.
    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut parsed, mut deltas) = (0usize, 0usize);
    let (last, deep_msgs) = loop {
        {
            let arrivals = sub.arrivals.lock().unwrap();
            for (_, payload) in &arrivals[parsed..] {
                deltas += deltas_in(payload).deltas.len();
            }
            parsed = arrivals.len();
            if deltas >= deep {
                break (arrivals[parsed - 1].0, parsed);
            }
        }
        assert!(Instant::now() < deadline, "the deep backlog arrives");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let deep_secs = last.saturating_duration_since(t0).as_secs_f64();
    drop(sub);

    // Latency at a steady 1,000 changes/s, the relay running.
    let sub = Subscriber::start(&pattern).await;
    let cancel = CancellationToken::new();
    let running = Relay::new(db.pool.clone(), settings.clone(), RelaySettings::default()).unwrap();
    let relay_task = tokio::spawn(running.run(cancel.clone()));
    let t0 = Instant::now();
    let commits = commit_changes(
        &db.pool,
        next_id,
        LATENCY_CHANGES,
        Some(Duration::from_micros(1_000_000 / RATE_PER_SEC)),
    )
    .await;
    let latency_send_secs = t0.elapsed().as_secs_f64();
    sub.wait_for(LATENCY_CHANGES).await;
    cancel.cancel();
    relay_task.await.unwrap();
    let mut arrived = std::collections::HashMap::with_capacity(LATENCY_CHANGES);
    for (at, payload) in sub.take() {
        let message = deltas_in(&payload);
        for d in message.deltas {
            arrived
                .entry((message.user_id.0, d.version.unwrap()))
                .or_insert(at);
        }
    }
    let mut latencies: Vec<Duration> = commits
        .iter()
        .map(|(user, version, before_commit)| {
            arrived[&(*user, *version)].saturating_duration_since(*before_commit)
        })
        .collect();
    latencies.sort();

    Run {
        msgs_per_sec,
        deep_deltas_per_sec: deep as f64 / deep_secs,
        deep_msgs_per_sec: deep_msgs as f64 / deep_secs,
        deep_msgs,
        unpipelined: unpipelined.map(|(rps, _)| rps),
        pipelined,
        relay_cpu: relay_cpu.per_thousand(ROUNDS * USERS as usize),
        redis_bench_cpu: unpipelined.map(|(_, cpu)| cpu),
        relay_wall_ms: relaying.as_secs_f64() * 1e3 / (ROUNDS * USERS as usize) as f64 * 1000.0,
        p50: common::percentile(&latencies, 0.50),
        p99: common::percentile(&latencies, 0.99),
        max: *latencies.last().unwrap(),
        latency_send_secs,
        write_tx_per_sec,
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[tokio::main]
async fn main() {
    let load_before = load_average();
    let db = common::BenchDb::create("relay").await;
    sqlx::query("INSERT INTO users (id) SELECT generate_series(1, $1)")
        .bind(USERS)
        .execute(&db.pool)
        .await
        .unwrap();
    let settings = RedisSettings {
        url: redis_url(),
        delta_mode: DeltaMode::JSON,
        prefix: format!("bench:{}:", std::process::id()),
        socketio_key: "socket.io".into(),
        ..RedisSettings::default()
    };
    let runs_wanted = std::env::var("PLANSYNC_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(RUNS);
    let mut runs = Vec::new();
    for run in 0..runs_wanted {
        runs.push(one_run(run, &db, &settings).await);
    }
    let sample_len = json_message(
        UserId(1),
        &[PlanItemDelta::appointment_upsert(
            DeltaAction::Updated,
            1,
            payload(1, 1),
        )],
    )
    .len();

    println!("## relay ({})", common::machine());
    println!();
    println!(
        "Load average before / after: {load_before} / {}. {USERS} users; {runs_wanted} runs, medians; \
         message: one delta, {sample_len} bytes of JSON.",
        load_average()
    );
    println!();
    println!("| run | relay msgs/s (1 delta each) | redis-benchmark -c 1 -P 1 | relay / unpipelined | redis-benchmark -c 1 -P 64 | deep backlog deltas/s (msgs/s) | p50 / p99 / max commit → subscriber |");
    println!("|---|---|---|---|---|---|---|");
    let rb = |v: Option<f64>| v.map_or("n/a".to_owned(), |v| format!("{v:.0}"));
    for (i, r) in runs.iter().enumerate() {
        println!(
            "| {} | {:.0} | {} | {} | {} | {:.0} ({:.0}, {} msgs) | {:.2} / {:.2} / {:.2} ms |",
            i + 1,
            r.msgs_per_sec,
            rb(r.unpipelined),
            r.unpipelined
                .map_or("n/a".to_owned(), |u| format!("{:.2}", r.msgs_per_sec / u)),
            rb(r.pipelined),
            r.deep_deltas_per_sec,
            r.deep_msgs_per_sec,
            r.deep_msgs,
            ms(r.p50),
            ms(r.p99),
            ms(r.max),
        );
    }
    println!();
    println!("| measure (median of {runs_wanted} runs) | value |");
    println!("|---|---|");
    println!(
        "| relay, one delta per message ({ROUNDS} rounds × {USERS} users, live subscriber) | {:.0} msgs/s = deltas/s |",
        median(runs.iter().map(|r| r.msgs_per_sec).collect())
    );
    if runs.iter().all(|r| r.unpipelined.is_some()) {
        println!(
            "| redis-benchmark PUBLISH, same message, 1 connection, no pipelining, live subscriber | {:.0} msgs/s |",
            median(runs.iter().filter_map(|r| r.unpipelined).collect())
        );
        println!(
            "| **relay / unpipelined PUBLISH** (target ≥ 1) | **{:.2}** |",
            median(
                runs.iter()
                    .filter_map(|r| r.unpipelined.map(|u| r.msgs_per_sec / u))
                    .collect()
            )
        );
        println!(
            "| redis-benchmark PUBLISH, 1 connection, pipelined -P 64 (for scale) | {:.0} msgs/s |",
            median(runs.iter().filter_map(|r| r.pipelined).collect())
        );
    } else {
        println!("| redis-benchmark | not available |");
    }
    println!(
        "| relay, deep backlog ({DEEP_PER_USER} per user, default cap of 100 per message) | {:.0} deltas/s in {:.0} msgs/s |",
        median(runs.iter().map(|r| r.deep_deltas_per_sec).collect()),
        median(runs.iter().map(|r| r.deep_msgs_per_sec).collect())
    );
    println!(
        "| changes committed at {RATE_PER_SEC}/s | {LATENCY_CHANGES} in {:.1} s |",
        median(runs.iter().map(|r| r.latency_send_secs).collect())
    );
    println!(
        "| commit → subscriber p50 (clock started before COMMIT) | {:.2} ms |",
        median(runs.iter().map(|r| ms(r.p50)).collect())
    );
    println!(
        "| commit → subscriber p99 | {:.2} ms |",
        median(runs.iter().map(|r| ms(r.p99)).collect())
    );
    println!(
        "| commit → subscriber max | {:.2} ms |",
        median(runs.iter().map(|r| ms(r.max)).collect())
    );
    println!(
        "| backlog writing, one-change transactions, {WRITERS} writers (for reference) | {:.0} tx/s |",
        median(runs.iter().map(|r| r.write_tx_per_sec).collect())
    );
    println!();
    println!("CPU per 1,000 messages (ms; medians; 10 ms ticks summed over the phase):");
    println!();
    println!("| | wall | publisher process | PostgreSQL backends | redis-server |");
    println!("|---|---|---|---|---|");
    println!(
        "| relay drain (publisher = the relay and the subscriber) | {:.1} | {:.1} | {:.1} | {:.1} |",
        median(runs.iter().map(|r| r.relay_wall_ms).collect()),
        median(runs.iter().map(|r| r.relay_cpu.bench).collect()),
        median(runs.iter().map(|r| r.relay_cpu.postgres).collect()),
        median(runs.iter().map(|r| r.relay_cpu.redis).collect()),
    );
    if runs.iter().all(|r| r.redis_bench_cpu.is_some()) {
        println!(
            "| redis-benchmark -c 1 -P 1 (publisher = it and the subscriber) | {:.1} | {:.1} | – | {:.1} |",
            median(
                runs.iter()
                    .filter_map(|r| r.unpipelined.map(|u| 1e6 / u))
                    .collect()
            ),
            median(
                runs.iter()
                    .filter_map(|r| r.redis_bench_cpu.map(|c| c.bench))
                    .collect()
            ),
            median(
                runs.iter()
                    .filter_map(|r| r.redis_bench_cpu.map(|c| c.redis))
                    .collect()
            ),
        );
    }
    db.drop_db().await;
}
