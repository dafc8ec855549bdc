//! Fleet benchmark (issue 19): what one worker does with many calendars
//! behind Google's latency, and what each job costs PostgreSQL.
//!
//! - **Incremental pulls under latency.** 1,000 calendars (two events each)
//!   in the emulator at 200 ms per call, connected and fully synced; then
//!   `plansync run` (a child process, default pool `PLANSYNC_DB_POOL` 10) at
//!   concurrency 16 and at 128 works through a pull of every calendar in
//!   which nothing changed: pulls/s, and the statements and commits per pull.
//!   The Google budget is set far above the offered load
//!   (`PLANSYNC_GOOGLE_QPM` 1,000,000, `PLANSYNC_GOOGLE_USER_QPM` 60,000), so
//!   the limiter is consulted on every call (as always) but never waits.
//! - **Push.** 100 connections (a calendar each), 2,000 appointments
//!   inserted by the host (one `INSERT`, 20 per user; the host triggers
//!   enqueue the pushes) and pushed by `plansync run` at concurrency 16:
//!   pushes/s, statements and commits per push; beside it, in the same
//!   round and against the same emulator, a raw client — the worker's own
//!   `plansync::google::CalendarClient` (google-calendar3), no database —
//!   making the same 2,000 `events.insert` calls (client-supplied ids,
//!   private properties, as the worker) at the same concurrency. Once with
//!   the emulator answering at once, once at 200 ms.
//!
//! **Counting.** The bench runs its own PostgreSQL cluster (initdb + pg_ctl
//! in a temporary directory, port of its own, `pg_stat_statements` with
//! utility statements tracked, so BEGIN/COMMIT/SET LOCAL count); the worker
//! connects as a role of its own, so its statements are told from the
//! bench's. Each measured pass runs in a worker process that has already
//! done one pass over the same connections (its access tokens are cached, as
//! in a worker that has been running), then idled 11 s (so PostgreSQL has
//! flushed its transaction counts: a backend flushes at most once a second,
//! within 10 s once idle, and at exit). Statements: from the enqueue to the
//! last job's completion, every statement of the worker's role except the
//! heartbeats (`plansync.workers`, with their BEGIN/COMMIT); scheduler
//! ticks, gauges, the relay and idle claims are included (their idle rate
//! is printed: a bound on what they add). Commits: `pg_stat_database.
//! xact_commit` of the bench database from before the enqueue to after the
//! worker exited (SIGTERM right after the last job), minus the bench's own
//! statement and the heartbeats' transactions; explicit transactions
//! (`COMMIT` statements) are given too. Throughput: jobs / (last
//! `finished_at` − first `started_at`) from the jobs table (the database's
//! clock), so the up-to-2 s wake-up of an idle worker after a host's insert
//! (the triggers do not notify) is not in it; the wall time from the
//! enqueue is printed beside it.
//!
//! Run: `cargo bench --bench fleet` (Redis as for the tests; PostgreSQL's
//! server binaries and pg_stat_statements under /usr/lib/postgresql). Three
//! rounds; each ratio is taken within one round; medians are reported.

mod common;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::cluster::{self, Cluster, Statements, WORKER_ROLE};
use futures::StreamExt;
use plansync::config::{Env, GoogleSettings};
use plansync::crypto::TokenCipher;
use plansync::google::{CalendarClient, GoogleClient, NewEvent};
use plansync::ids::{CalendarId, EventId, RefreshToken};
use plansync::model::AppointmentFields;
use plansync::queue::JobKind;
use plansync_fake_google::{FakeGoogle, FakeGoogleOptions};
use serde_json::json;
use sqlx::{Connection, Executor, PgConnection, PgPool};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_plansync");
const ROUNDS: usize = 3;

const PULL_CALENDARS: i64 = 1_000;
const PULL_LATENCY: Duration = Duration::from_millis(200);
const PULL_CONCURRENCY: [usize; 2] = [16, 128];
const EVENTS_PER_CALENDAR: u32 = 2;
const PULL_USER0: i64 = 1;

const PUSH_CONNECTIONS: i64 = 100;
const PUSHES_PER_CONNECTION: i64 = 20;
const PUSH_CONCURRENCY: usize = 16;
const PUSH_LATENCIES_MS: [u64; 2] = [0, 200];
const PUSH_USER0: i64 = 100_001;

/// Idle time before a measured pass, so every backend has flushed its
/// transaction counts (PostgreSQL: within 10 s of going idle).
const QUIET: Duration = Duration::from_secs(11);
/// The longest any one wait of the bench may take.
const WAIT_LIMIT: Duration = Duration::from_secs(300);

fn redis_url() -> String {
    std::env::var("REDIS_URL")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "redis://127.0.0.1:6379".into())
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// One emulator and one database of the private cluster, with connections.
struct Site {
    google: FakeGoogle,
    db: String,
    worker_url: String,
    bench_url: String,
    pool: PgPool,
    token_key: String,
    prefix: String,
    calendars: Vec<String>,
}

impl Site {
    async fn start(cluster: &Cluster, tag: &str, latency: Duration) -> Site {
        let google = FakeGoogle::start(FakeGoogleOptions {
            latency,
            ..FakeGoogleOptions::default()
        })
        .await
        .expect("the emulator starts");
        let db = format!("plansync_bench_{tag}_{}", std::process::id());
        cluster.create_database(&db).await;
        let worker_url = cluster.worker_url(&db);
        let bench_url = cluster.url(&db);
        let settings = plansync::config::DatabaseSettings::from_env(&Env::from_pairs([(
            "DATABASE_URL",
            worker_url.as_str(),
        )]))
        .unwrap();
        plansync::store::migrate::run(&settings).await.unwrap();
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .connect(&bench_url)
            .await
            .unwrap();
        Site {
            google,
            db,
            worker_url,
            bench_url,
            pool,
            token_key: TokenCipher::generate_key(),
            prefix: format!("bench:fleet:{tag}:{}:", std::process::id()),
            calendars: Vec::new(),
        }
    }

    fn env(&self, concurrency: usize) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("PATH", std::env::var("PATH").unwrap_or_default()),
            ("DATABASE_URL", self.worker_url.clone()),
            ("REDIS_URL", redis_url()),
            ("PLANSYNC_REDIS_PREFIX", self.prefix.clone()),
            ("PLANSYNC_TOKEN_KEY", self.token_key.clone()),
            ("GOOGLE_CALENDAR_BASE_URL", self.google.base_url()),
            ("GOOGLE_TOKEN_URL", self.google.token_url()),
            ("GOOGLE_CLIENT_ID", self.google.client_id()),
            ("GOOGLE_CLIENT_SECRET", self.google.client_secret()),
            ("PLANSYNC_CONCURRENCY", concurrency.to_string()),
            // The budget far above the offered load (at most 128 calls in
            // flight, 200 ms each: 38,400/min).
            ("PLANSYNC_GOOGLE_QPM", "1000000".into()),
            ("PLANSYNC_GOOGLE_USER_QPM", "60000".into()),
            // Scheduled polls as rare as allowed (a week; a connection whose
            // slot ends during the bench still gets one, counted as a job).
            ("PLANSYNC_POLL_INTERVAL_SECS", "604800".into()),
            ("PLANSYNC_HTTP_ADDR", "127.0.0.1:0".into()),
            ("PLANSYNC_LOG_FORMAT", "json".into()),
            ("RUST_LOG", "info".into()),
        ];
        // `FLEET_WORKER_ENV=PLANSYNC_DB_POOL=40,…`: settings added for an
        // investigation (the figures in BENCHMARKS.md name any they used).
        if let Ok(extra) = std::env::var("FLEET_WORKER_ENV") {
            for pair in extra.split(',').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').expect("FLEET_WORKER_ENV is K=V,…");
                env.retain(|(name, _)| *name != k);
                env.push((Box::leak(k.to_owned().into_boxed_str()), v.to_owned()));
            }
        }
        env
    }

    async fn cli(&self, args: &[&str], stdin: &str) -> std::process::Output {
        let mut child = tokio::process::Command::new(BIN)
            .args(args)
            .env_clear()
            .envs(self.env(16))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the binary starts");
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.as_bytes()).await.unwrap();
        drop(input);
        child.wait_with_output().await.unwrap()
    }

    /// Calendars in the emulator, their users, `plansync connect` for each
    /// (eight at a time), and their full syncs by `plansync run --once`.
    async fn connect_calendars(&mut self, tag: &str, user0: i64, n: i64, events: u32) {
        let day = (Utc::now() + chrono::Duration::days(3)).date_naive();
        for i in 0..n {
            let cal = format!("{tag}{i}@example.com");
            self.google.add_calendar(&cal, &cal, "UTC").unwrap();
            for h in 0..events {
                let start = day.and_hms_opt(8 + h, 0, 0).unwrap().and_utc().to_rfc3339();
                let end = day.and_hms_opt(9 + h, 0, 0).unwrap().and_utc().to_rfc3339();
                self.google
                    .create_event(
                        &cal,
                        json!({"summary": format!("{cal} {h}"),
                               "start": {"dateTime": start}, "end": {"dateTime": end}}),
                    )
                    .unwrap();
            }
            self.calendars.push(cal);
        }
        sqlx::query("INSERT INTO users (id) SELECT generate_series($1::BIGINT, $2::BIGINT)")
            .bind(user0)
            .bind(user0 + n - 1)
            .execute(&self.pool)
            .await
            .unwrap();
        let token = format!("{}\n", self.google.refresh_tokens()[0]);
        let site = &*self;
        let outs: Vec<std::process::Output> = futures::stream::iter(0..n)
            .map(|i| {
                let user = (user0 + i).to_string();
                let cal = site.calendars[i as usize].clone();
                let token = token.clone();
                async move {
                    site.cli(&["connect", "--user", &user, "--calendar", &cal], &token)
                        .await
                }
            })
            .buffer_unordered(8)
            .collect()
            .await;
        for out in outs {
            assert!(out.status.success(), "connect: {}", text(&out.stderr));
        }
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.args(["run", "--once"])
            .env_clear()
            .envs(self.env(128))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let out = tokio::time::timeout(WAIT_LIMIT, cmd.output())
            .await
            .expect("the full syncs finish in time")
            .unwrap();
        assert!(out.status.success(), "run --once: {}", text(&out.stderr));
        let synced: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM plansync.connections WHERE sync_token IS NOT NULL",
        )
        .fetch_one(&self.pool)
        .await
        .unwrap();
        assert_eq!(synced, n, "every connection fully synced");
    }

    async fn max_job_id(&self) -> i64 {
        sqlx::query_scalar("SELECT COALESCE(max(id), 0) FROM plansync.jobs")
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// One statement on a connection of its own (closed at once, so its
    /// transaction count is flushed): the bench's only statement in the
    /// measured window.
    async fn one_statement(&self, sql: &str) {
        let mut conn = PgConnection::connect(&self.bench_url).await.unwrap();
        conn.execute(sql).await.unwrap();
        conn.close().await.unwrap();
    }

    /// A pull of every connection, due now, with the `NOTIFY` the queue's
    /// own enqueue sends (one statement).
    fn enqueue_pulls_sql() -> String {
        format!(
            "WITH ins AS (
                 INSERT INTO plansync.jobs (kind, connection_id, region)
                 SELECT '{}', c.id, c.region FROM plansync.connections c
                 ON CONFLICT DO NOTHING RETURNING region)
             SELECT count(*) FROM ins, LATERAL (SELECT pg_notify('{}', ins.region)) n",
            JobKind::Pull.as_str(),
            plansync::store::jobs::NOTIFY_CHANNEL
        )
    }

    /// The jobs after `after` of `kind`: (succeeded, others, span from the
    /// first start to the last finish).
    async fn job_span(&self, after: i64, kind: JobKind) -> (i64, i64, Duration) {
        let (ok, other, first, last): (i64, i64, Option<DateTime<Utc>>, Option<DateTime<Utc>>) =
            sqlx::query_as(
                "SELECT count(*) FILTER (WHERE state = 'succeeded'), \
                        count(*) FILTER (WHERE state <> 'succeeded'), \
                        min(started_at), max(finished_at) \
                   FROM plansync.jobs WHERE id > $1 AND kind = $2",
            )
            .bind(after)
            .bind(kind.as_str())
            .fetch_one(&self.pool)
            .await
            .unwrap();
        let span = match (first, last) {
            (Some(a), Some(b)) => (b - a).to_std().unwrap_or_default(),
            _ => Duration::ZERO,
        };
        (ok, other, span)
    }

    async fn finish(self, cluster: &Cluster) {
        self.pool.close().await;
        self.google.shutdown().await;
        cluster.drop_database(&self.db).await;
    }
}

/// A `plansync run` child process.
struct RunningWorker {
    child: tokio::process::Child,
    addr: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl RunningWorker {
    async fn start(site: &Site, concurrency: usize) -> RunningWorker {
        let mut child = tokio::process::Command::new(BIN)
            .arg("run")
            .env_clear()
            .envs(site.env(concurrency))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("plansync run starts");
        let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let log = Arc::new(Mutex::new(Vec::new()));
        let addr = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                let addr = line.split("listening on ").nth(1).map(|rest| {
                    rest.split(|c: char| c == '"' || c.is_whitespace())
                        .next()
                        .unwrap()
                        .to_owned()
                });
                log.lock().unwrap().push(line);
                if let Some(addr) = addr {
                    return addr;
                }
            }
            panic!("run exited before listening: {:?}", log.lock().unwrap());
        })
        .await
        .expect("run listens within 60 s");
        // Keep reading, so the child never blocks on a full pipe; only
        // warnings and errors are kept.
        let sink = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("\"WARN\"") || line.contains("\"ERROR\"") {
                    sink.lock().unwrap().push(line);
                }
            }
        });
        RunningWorker { child, addr, log }
    }

    /// `plansync_jobs_total` of `kind` from `/metrics`: (succeeded, others).
    async fn jobs_done(&self, kind: JobKind) -> (u64, u64) {
        let body = http_get(&self.addr, "/metrics").await;
        let (mut ok, mut other) = (0, 0);
        let kind_label = format!("kind=\"{}\"", kind.as_str());
        for line in body.lines() {
            if !line.starts_with("plansync_jobs_total{") || !line.contains(&kind_label) {
                continue;
            }
            let n: f64 = line
                .rsplit(' ')
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0);
            if line.contains("outcome=\"succeeded\"") {
                ok += n as u64;
            } else {
                other += n as u64;
            }
        }
        (ok, other)
    }

    /// Run time of the jobs of `kind` and of the Google calls, as the worker
    /// measures them (histogram sums and counts, cumulative).
    async fn timings(&self, kind: JobKind) -> Timings {
        let body = http_get(&self.addr, "/metrics").await;
        let kind_label = format!("kind=\"{}\"", kind.as_str());
        let mut t = Timings::default();
        for line in body.lines() {
            let value = || -> f64 {
                line.rsplit(' ')
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0.0)
            };
            if line.starts_with("plansync_job_duration_seconds_sum{") && line.contains(&kind_label)
            {
                t.job_sum += value();
            } else if line.starts_with("plansync_job_duration_seconds_count{")
                && line.contains(&kind_label)
            {
                t.job_count += value();
            } else if line.starts_with("plansync_google_request_duration_seconds_sum{") {
                t.google_sum += value();
            } else if line.starts_with("plansync_google_request_duration_seconds_count{") {
                t.google_count += value();
            }
        }
        t
    }

    fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// Waits until `target` jobs of `kind` succeeded in this process.
    async fn wait_jobs(&self, kind: JobKind, target: u64) {
        let started = Instant::now();
        loop {
            let (ok, other) = self.jobs_done(kind).await;
            if ok >= target {
                return;
            }
            assert!(
                started.elapsed() < WAIT_LIMIT,
                "{ok} of {target} {} jobs succeeded ({other} other outcomes) after {WAIT_LIMIT:?}: {:?}",
                kind.as_str(),
                self.log.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, and the exit (each backend flushes its statistics as it
    /// closes).
    async fn stop(mut self) -> Vec<String> {
        let pid = self.child.id().expect("running");
        let ok = tokio::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await
            .unwrap()
            .success();
        assert!(ok, "kill -TERM {pid}");
        let status = tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .expect("run exits within 60 s of SIGTERM")
            .unwrap();
        assert!(status.success(), "run exit: {status}");
        let log = self.log.lock().unwrap().clone();
        log
    }
}

async fn http_get(addr: &str, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut body = Vec::new();
    stream.read_to_end(&mut body).await.unwrap();
    text(&body)
}

#[derive(Debug, Clone, Copy, Default)]
struct Timings {
    job_sum: f64,
    job_count: f64,
    google_sum: f64,
    google_count: f64,
}

impl Timings {
    fn minus(self, before: Timings) -> Timings {
        Timings {
            job_sum: self.job_sum - before.job_sum,
            job_count: self.job_count - before.job_count,
            google_sum: self.google_sum - before.google_sum,
            google_count: self.google_count - before.google_count,
        }
    }
    fn mean_job(&self) -> f64 {
        self.job_sum / self.job_count.max(1.0)
    }
    fn mean_google(&self) -> f64 {
        self.google_sum / self.google_count.max(1.0)
    }
}

/// CPU seconds used during a pass: the worker process, the PostgreSQL
/// cluster, this process (the emulator, the bench), and the machine's busy
/// share of all its cores (everything on it, other builds included).
#[derive(Debug, Clone, Copy, Default)]
struct CpuUse {
    worker: f64,
    postgres: f64,
    bench: f64,
    machine_busy: f64,
}

struct CpuMark {
    worker: f64,
    postgres: f64,
    bench: f64,
    machine: (u64, u64),
}

fn cpu_mark(cluster: &Cluster, worker: u32) -> CpuMark {
    CpuMark {
        worker: common::cpu::stat(worker).map_or(0.0, |s| s.own),
        postgres: cluster.cpu_seconds(),
        bench: common::cpu::stat(std::process::id()).map_or(0.0, |s| s.own),
        machine: common::cpu::machine(),
    }
}

fn cpu_since(cluster: &Cluster, worker: u32, before: &CpuMark) -> CpuUse {
    let now = cpu_mark(cluster, worker);
    let (busy, total) = (
        now.machine.0 - before.machine.0,
        now.machine.1 - before.machine.1,
    );
    CpuUse {
        worker: now.worker - before.worker,
        postgres: now.postgres - before.postgres,
        bench: now.bench - before.bench,
        machine_busy: busy as f64 / total.max(1) as f64,
    }
}

/// What one measured pass of a worker cost and took.
struct Pass {
    jobs: i64,
    /// First claim to last completion (the database's clock).
    span: Duration,
    /// From the bench's enqueue (or insert) until `/metrics` showed all done.
    wall: Duration,
    /// The worker's statements from the enqueue to the last completion.
    statements: Statements,
    /// Heartbeats among them: (statements with their BEGIN/COMMIT, transactions).
    heartbeats: (i64, i64),
    /// Worker transactions committed from before the enqueue to its exit,
    /// the bench's own and the heartbeats' taken out.
    commits: i64,
    /// The idle worker's statements per second just before the pass.
    idle_rate: f64,
    /// Worker statements between the last completion and its exit.
    tail: i64,
    /// The worker's own timing of its jobs and Google calls in the pass.
    timings: Timings,
    cpu: CpuUse,
}

impl Pass {
    fn rate(&self) -> f64 {
        self.jobs as f64 / self.span.as_secs_f64()
    }
    fn per_job_statements(&self) -> f64 {
        (self.statements.total() - self.heartbeats.0) as f64 / self.jobs as f64
    }
    fn per_job_commits(&self) -> f64 {
        self.commits as f64 / self.jobs as f64
    }
    /// Explicit transactions (COMMIT statements) per job, heartbeats out.
    fn per_job_explicit(&self) -> f64 {
        (self.statements.exactly("COMMIT") - self.heartbeats.1) as f64 / self.jobs as f64
    }
    /// What the idle background (ticks, gauges, relay, idle claims) could
    /// add per job over the pass, at its idle rate.
    fn background_bound(&self) -> f64 {
        self.idle_rate * self.wall.as_secs_f64() / self.jobs as f64
    }
}

fn heartbeats(s: &Statements) -> (i64, i64) {
    let beats = s.matching("INSERT INTO plansync.workers");
    let leaves = s.matching("DELETE FROM plansync.workers WHERE worker_id");
    // Each beat is one transaction of its own (BEGIN, its statements,
    // COMMIT); a leave is one autocommitted statement.
    (s.matching("plansync.workers") + 2 * beats, beats + leaves)
}

/// A measured pass on a warmed, idle `worker`: quiet, snapshot, `trigger`
/// (one bench statement), wait for `jobs` more successes of `kind`, snapshot,
/// stop the worker, snapshot.
async fn measure(
    cluster: &Cluster,
    site: &Site,
    worker: RunningWorker,
    kind: JobKind,
    jobs: i64,
    trigger: &str,
) -> Pass {
    let mut admin = cluster.admin().await;
    let after = site.max_job_id().await;
    let (done_before, _) = worker.jobs_done(kind).await;
    cluster::reset_statements(&mut admin).await;
    tokio::time::sleep(QUIET).await;
    let quiet = cluster::statements(&mut admin, WORKER_ROLE, &site.db).await;
    let idle_rate = (quiet.total() - heartbeats(&quiet).0) as f64 / QUIET.as_secs_f64();
    let c0 = cluster::commits(&mut admin, &site.db).await;
    cluster::reset_statements(&mut admin).await;

    let timings_before = worker.timings(kind).await;
    let cpu_before = cpu_mark(cluster, worker.pid());
    let t0 = Instant::now();
    site.one_statement(trigger).await;
    worker.wait_jobs(kind, done_before + jobs as u64).await;
    let wall = t0.elapsed();
    let cpu = cpu_since(cluster, worker.pid(), &cpu_before);
    let timings = worker.timings(kind).await.minus(timings_before);
    let statements = cluster::statements(&mut admin, WORKER_ROLE, &site.db).await;
    let log = worker.stop().await;
    let to_exit = cluster::statements(&mut admin, WORKER_ROLE, &site.db).await;
    let bench_own = cluster::statements(&mut admin, "postgres", &site.db).await;
    let c1 = cluster::commits(&mut admin, &site.db).await;
    admin.close().await.unwrap();

    let (ok, other, span) = site.job_span(after, kind).await;
    // A scheduled poll may join the pulls (its slot ended): it is counted.
    assert!(
        ok >= jobs && ok <= jobs + jobs / 50,
        "{ok} {} jobs succeeded, {jobs} expected: {log:?}",
        kind.as_str()
    );
    assert_eq!(other, 0, "no {} job failed: {log:?}", kind.as_str());
    let hb = heartbeats(&to_exit);
    Pass {
        jobs: ok,
        span,
        wall,
        heartbeats: heartbeats(&statements),
        commits: c1 - c0 - bench_own.total() - hb.1,
        idle_rate,
        tail: to_exit.total() - statements.total(),
        statements,
        timings,
        cpu,
    }
}

/// Pulls of every connection at `concurrency`: a warm-up pass, then the
/// measured one, in one worker process.
async fn pull_pass(cluster: &Cluster, site: &Site, concurrency: usize) -> Pass {
    let worker = RunningWorker::start(site, concurrency).await;
    let (before, _) = worker.jobs_done(JobKind::Pull).await;
    site.one_statement(&Site::enqueue_pulls_sql()).await;
    worker
        .wait_jobs(JobKind::Pull, before + PULL_CALENDARS as u64)
        .await;
    measure(
        cluster,
        site,
        worker,
        JobKind::Pull,
        PULL_CALENDARS,
        &Site::enqueue_pulls_sql(),
    )
    .await
}

/// 2,000 appointments inserted by the host, pushed by a warmed worker.
async fn push_pass(cluster: &Cluster, site: &Site, round: usize) -> Pass {
    let worker = RunningWorker::start(site, PUSH_CONCURRENCY).await;
    // Warm-up: one pull per connection (its access token).
    let (before, _) = worker.jobs_done(JobKind::Pull).await;
    site.one_statement(&Site::enqueue_pulls_sql()).await;
    worker
        .wait_jobs(JobKind::Pull, before + PUSH_CONNECTIONS as u64)
        .await;
    let day = 10 + round as i64;
    let insert = format!(
        "INSERT INTO appointments (user_id, summary, location, start_at, end_at, \
                                   start_time_zone, end_time_zone)
         SELECT u, 'Bench push ' || u || '/' || k, 'Room ' || k,
                date_trunc('day', now()) + interval '{day} days' + k * interval '1 hour',
                date_trunc('day', now()) + interval '{day} days' + k * interval '1 hour'
                    + interval '30 minutes',
                'Europe/Berlin', 'Europe/Berlin'
           FROM generate_series(1, {PUSHES_PER_CONNECTION}) k,
                generate_series({PUSH_USER0}::BIGINT, {}::BIGINT) u
          ORDER BY k, u",
        PUSH_USER0 + PUSH_CONNECTIONS - 1
    );
    measure(
        cluster,
        site,
        worker,
        JobKind::Push,
        PUSH_CONNECTIONS * PUSHES_PER_CONNECTION,
        &insert,
    )
    .await
}

/// The raw client: the same inserts with the same client, no database.
/// Returns (pushes/s, inserts made).
async fn raw_push(site: &Site, round: usize, latency_ms: u64) -> (f64, usize) {
    let settings = GoogleSettings::from_env(&Env::from_pairs(site.env(PUSH_CONCURRENCY))).unwrap();
    let google = GoogleClient::new(&settings).unwrap();
    let token = site.google.refresh_tokens()[0].clone();
    let clients: Vec<(CalendarId, CalendarClient)> = site
        .calendars
        .iter()
        .map(|cal| {
            (
                CalendarId::new(cal.clone()),
                google.calendar_client(RefreshToken::new(token.clone())),
            )
        })
        .collect();
    // Warm, as the worker's are: each client's access token.
    futures::stream::iter(&clients)
        .for_each_concurrent(PUSH_CONCURRENCY, |(_, client)| async move {
            client.tokens().access_token().await.unwrap();
        })
        .await;
    let day = Utc::now() + chrono::Duration::days(40 + round as i64);
    let n = (PUSH_CONNECTIONS * PUSHES_PER_CONNECTION) as usize;
    let started = Instant::now();
    // Round-robin over the calendars, as the worker's claims spread them.
    let made = futures::stream::iter(0..n)
        .map(|i| {
            let (cal, client) = &clients[i % clients.len()];
            let k = i / clients.len();
            async move {
                let start = day + chrono::Duration::hours(k as i64);
                let fields = AppointmentFields {
                    summary: format!("Raw push {i}"),
                    description: None,
                    location: Some(format!("Room {k}")),
                    start_at: start,
                    end_at: start + chrono::Duration::minutes(30),
                    start_time_zone: Some("Europe/Berlin".into()),
                    end_time_zone: Some("Europe/Berlin".into()),
                    all_day: false,
                };
                let id = EventId::new(format!("bench{round}l{latency_ms}g{i:x}"));
                let properties = BTreeMap::from([
                    ("plansyncAppointment".to_owned(), i.to_string()),
                    ("plansyncConnection".to_owned(), (i % 100).to_string()),
                ]);
                client
                    .insert_event(
                        cal,
                        NewEvent {
                            id: &id,
                            fields: &fields,
                            private_properties: &properties,
                        },
                        Some("UTC"),
                    )
                    .await
                    .expect("the raw insert succeeds");
            }
        })
        .buffer_unordered(PUSH_CONCURRENCY)
        .count()
        .await;
    (made as f64 / started.elapsed().as_secs_f64(), made)
}

/// `FLEET_ROUNDS` (default 3): fewer for a quick check of the bench itself.
fn rounds_wanted() -> usize {
    std::env::var("FLEET_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ROUNDS)
        .max(1)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// Where a pass's time went: the worker's own timing of its jobs and Google
/// calls, slots in use (Little's law: rate × mean job time), and CPU.
fn time_table(rows: &[(String, &Pass, usize)]) {
    println!();
    println!("| pass | jobs/s | mean job run (worker's histogram) | mean Google call (worker's) | job run − Google call | statements' server time per job | slots busy (rate × job run) / slots | CPU: worker / PostgreSQL / emulator+bench, of the wall time | machine busy (all processes) |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for (name, pass, slots) in rows {
        let t = &pass.timings;
        let wall = pass.wall.as_secs_f64();
        println!(
            "| {name} | {:.1} | {:.1} ms | {:.1} ms | {:.1} ms | {:.2} ms | {:.1} / {slots} | {:.0}% / {:.0}% / {:.0}% | {:.0}% |",
            pass.rate(),
            t.mean_job() * 1e3,
            t.mean_google() * 1e3,
            (t.mean_job() - t.mean_google()) * 1e3,
            pass.statements.total_exec_ms() / pass.jobs as f64,
            pass.rate() * t.mean_job(),
            100.0 * pass.cpu.worker / wall,
            100.0 * pass.cpu.postgres / wall,
            100.0 * pass.cpu.bench / wall,
            100.0 * pass.cpu.machine_busy,
        );
    }
    println!();
    println!(
        "CPU percentages are of one core (the machine has {}); machine busy is of all cores.",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
}

/// The statements of a pass, most called first, per job.
fn breakdown(title: &str, pass: &Pass) {
    println!();
    println!(
        "{title}: {} worker statements for {} jobs (heartbeats out: {}), by statement:",
        pass.statements.total() - pass.heartbeats.0,
        pass.jobs,
        pass.heartbeats.0
    );
    println!();
    println!("| calls | per job | server time per call | statement (pg_stat_statements, normalised, first 110 chars) |");
    println!("|---|---|---|---|");
    for (query, calls) in pass.statements.by_calls() {
        if query.contains("plansync.workers") {
            continue;
        }
        let short: String = query.chars().take(110).collect();
        let ms = pass.statements.exec_ms.get(query).copied().unwrap_or(0.0);
        println!(
            "| {calls} | {:.3} | {:.3} ms | `{}` |",
            calls as f64 / pass.jobs as f64,
            ms / calls.max(1) as f64,
            short.replace('|', "\\|").replace('`', "'")
        );
    }
}

struct Round {
    pulls: Vec<Pass>,
    /// Per push latency: the worker's pass and the raw client's pushes/s.
    pushes: Vec<(Pass, f64)>,
    load: String,
}

#[tokio::main]
async fn main() {
    let bench_started = Instant::now();
    println!("## fleet ({})", common::machine());
    println!();
    println!("load average at start: {}", load_average());
    let cluster = Cluster::start().await;

    let t = Instant::now();
    let mut pull_site = Site::start(&cluster, "fleet_pull", PULL_LATENCY).await;
    pull_site
        .connect_calendars("pull", PULL_USER0, PULL_CALENDARS, EVENTS_PER_CALENDAR)
        .await;
    println!(
        "setup: {PULL_CALENDARS} calendars ({EVENTS_PER_CALENDAR} events each) connected and \
         fully synced at {} ms latency in {}",
        PULL_LATENCY.as_millis(),
        secs(t.elapsed())
    );
    let mut push_sites = Vec::new();
    for latency in PUSH_LATENCIES_MS {
        let mut site = Site::start(
            &cluster,
            &format!("fleet_push{latency}"),
            Duration::from_millis(latency),
        )
        .await;
        site.connect_calendars("push", PUSH_USER0, PUSH_CONNECTIONS, 0)
            .await;
        push_sites.push(site);
    }

    if std::env::var("FLEET_ONLY").as_deref() == Ok("pull") {
        // An investigation: the pulls only, one line per round.
        for r in 0..rounds_wanted() {
            let passes = [
                pull_pass(&cluster, &pull_site, PULL_CONCURRENCY[0]).await,
                pull_pass(&cluster, &pull_site, PULL_CONCURRENCY[1]).await,
            ];
            println!(
                "round {}: pulls/s {:.1} at 16, {:.1} at 128 ({:.2}x); statements per pull {:.2} / {:.2}; load {}",
                r + 1,
                passes[0].rate(),
                passes[1].rate(),
                passes[1].rate() / passes[0].rate(),
                passes[0].per_job_statements(),
                passes[1].per_job_statements(),
                load_average()
            );
            let rows: Vec<(String, &Pass, usize)> = passes
                .iter()
                .zip(PULL_CONCURRENCY)
                .map(|(p, c)| (format!("round {}: pulls at {c}", r + 1), p, c))
                .collect();
            time_table(&rows);
        }
        pull_site.finish(&cluster).await;
        for site in push_sites {
            site.finish(&cluster).await;
        }
        cluster.stop().await;
        return;
    }
    let mut rounds = Vec::new();
    for r in 0..rounds_wanted() {
        let mut pulls = Vec::new();
        for c in PULL_CONCURRENCY {
            pulls.push(pull_pass(&cluster, &pull_site, c).await);
        }
        let mut pushes = Vec::new();
        for (site, latency) in push_sites.iter().zip(PUSH_LATENCIES_MS) {
            let pass = push_pass(&cluster, site, r).await;
            let (raw, _) = raw_push(site, r, latency).await;
            pushes.push((pass, raw));
        }
        let load = load_average();
        println!();
        println!("round {} done (load average {load})", r + 1);
        rounds.push(Round {
            pulls,
            pushes,
            load,
        });
    }

    println!();
    println!(
        "### No-change incremental pulls of {PULL_CALENDARS} calendars, emulator at {} ms, \
         default pool",
        PULL_LATENCY.as_millis()
    );
    println!();
    println!("| round | pulls/s at 16 (span / wall) | pulls/s at 128 (span / wall) | 128 / 16 | statements per pull 16 / 128 | commits per pull 16 / 128 | explicit transactions per pull 16 / 128 | load average after |");
    println!("|---|---|---|---|---|---|---|---|");
    for (i, r) in rounds.iter().enumerate() {
        let (lo, hi) = (&r.pulls[0], &r.pulls[1]);
        println!(
            "| {} | {:.1} ({} / {}) | {:.1} ({} / {}) | {:.2} | {:.2} / {:.2} | {:.2} / {:.2} | {:.2} / {:.2} | {} |",
            i + 1,
            lo.rate(),
            secs(lo.span),
            secs(lo.wall),
            hi.rate(),
            secs(hi.span),
            secs(hi.wall),
            hi.rate() / lo.rate(),
            lo.per_job_statements(),
            hi.per_job_statements(),
            lo.per_job_commits(),
            hi.per_job_commits(),
            lo.per_job_explicit(),
            hi.per_job_explicit(),
            r.load
        );
    }
    let m = |f: &dyn Fn(&Round) -> f64| median(rounds.iter().map(f).collect());
    println!(
        "| **median** | {:.1} | {:.1} | **{:.2}** | {:.2} / {:.2} | {:.2} / {:.2} | {:.2} / {:.2} | |",
        m(&|r| r.pulls[0].rate()),
        m(&|r| r.pulls[1].rate()),
        m(&|r| r.pulls[1].rate() / r.pulls[0].rate()),
        m(&|r| r.pulls[0].per_job_statements()),
        m(&|r| r.pulls[1].per_job_statements()),
        m(&|r| r.pulls[0].per_job_commits()),
        m(&|r| r.pulls[1].per_job_commits()),
        m(&|r| r.pulls[0].per_job_explicit()),
        m(&|r| r.pulls[1].per_job_explicit()),
    );
    println!();
    println!(
        "Idle background (ticks, gauges, relay, idle claims; statements/s of the idle worker \
         before each pass), at most this much per pull in the figures above: 16: {:.3}, 128: \
         {:.3} (median). Statements after the last completion until exit (not counted above, \
         in the commits): median {:.0}.",
        m(&|r| r.pulls[0].background_bound()),
        m(&|r| r.pulls[1].background_bound()),
        m(&|r| r.pulls[1].tail as f64),
    );
    let ideal_lo = PULL_CONCURRENCY[0] as f64 / PULL_LATENCY.as_secs_f64();
    let ideal_hi = PULL_CONCURRENCY[1] as f64 / PULL_LATENCY.as_secs_f64();
    println!(
        "Latency-bound ceilings (concurrency / latency, one Google call per pull): {ideal_lo:.0} \
         and {ideal_hi:.0} pulls/s: the medians are {:.0}% and {:.0}% of them.",
        100.0 * m(&|r| r.pulls[0].rate()) / ideal_lo,
        100.0 * m(&|r| r.pulls[1].rate()) / ideal_hi,
    );

    println!();
    println!(
        "### Push of {} appointments across {PUSH_CONNECTIONS} connections, concurrency \
         {PUSH_CONCURRENCY}",
        PUSH_CONNECTIONS * PUSHES_PER_CONNECTION
    );
    println!();
    println!("| round | emulator latency | worker pushes/s (span / wall) | raw client pushes/s | worker / raw | statements per push | commits per push | explicit transactions per push |");
    println!("|---|---|---|---|---|---|---|---|");
    for (i, r) in rounds.iter().enumerate() {
        for ((pass, raw), latency) in r.pushes.iter().zip(PUSH_LATENCIES_MS) {
            println!(
                "| {} | {latency} ms | {:.1} ({} / {}) | {:.1} | {:.2} | {:.2} | {:.2} | {:.2} |",
                i + 1,
                pass.rate(),
                secs(pass.span),
                secs(pass.wall),
                raw,
                pass.rate() / raw,
                pass.per_job_statements(),
                pass.per_job_commits(),
                pass.per_job_explicit(),
            );
        }
    }
    for (k, latency) in PUSH_LATENCIES_MS.iter().enumerate() {
        println!(
            "| **median** | {latency} ms | {:.1} | {:.1} | **{:.2}** | {:.2} | {:.2} | {:.2} |",
            m(&|r| r.pushes[k].0.rate()),
            m(&|r| r.pushes[k].1),
            m(&|r| r.pushes[k].0.rate() / r.pushes[k].1),
            m(&|r| r.pushes[k].0.per_job_statements()),
            m(&|r| r.pushes[k].0.per_job_commits()),
            m(&|r| r.pushes[k].0.per_job_explicit()),
        );
    }
    println!();
    println!(
        "Idle background bound per push: {} (median per latency).",
        PUSH_LATENCIES_MS
            .iter()
            .enumerate()
            .map(|(k, l)| format!("{l} ms: {:.3}", m(&|r| r.pushes[k].0.background_bound())))
            .collect::<Vec<_>>()
            .join(", ")
    );

    let mut rows = Vec::new();
    for (i, r) in rounds.iter().enumerate() {
        for (pass, c) in r.pulls.iter().zip(PULL_CONCURRENCY) {
            rows.push((format!("round {}: pulls at {c}", i + 1), pass, c));
        }
        for ((pass, _), l) in r.pushes.iter().zip(PUSH_LATENCIES_MS) {
            rows.push((
                format!("round {}: push at {l} ms", i + 1),
                pass,
                PUSH_CONCURRENCY,
            ));
        }
    }
    println!();
    println!("### Where the time goes");
    time_table(&rows);

    let last = rounds.last().unwrap();
    breakdown(
        &format!(
            "Round {}, pulls at concurrency {}",
            rounds.len(),
            PULL_CONCURRENCY[1]
        ),
        &last.pulls[1],
    );
    breakdown(
        &format!(
            "Round {}, push at {} ms latency",
            rounds.len(),
            PUSH_LATENCIES_MS[0]
        ),
        &last.pushes[0].0,
    );

    pull_site.finish(&cluster).await;
    for site in push_sites {
        site.finish(&cluster).await;
    }
    cluster.stop().await;
    println!();
    println!(
        "bench took {} (load average at the end: {})",
        secs(bench_started.elapsed()),
        load_average()
    );
}
