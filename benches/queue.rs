//! Queue benchmark (issue 14): the queue of a region with 1,000,000
//! connections, made with SQL, and jobs whose handler does no Google work
//! (it completes its job, fenced by its claim token, like every handler).
//!
//! Figures, in one run:
//! - the scheduler tick (`Worker::tick`: rescue, schedule due pulls, channel
//!   upkeep, recheck, prune) at 1,000,000 connections: the first tick after
//!   the connections appear (every one looked at once), a tick with nothing
//!   due, and a tick with 7,000 connections due;
//! - claim latency (one claim of one job, then its completion, one at a
//!   time), p50/p99, without and with 300,000 due jobs of needs-re-auth
//!   connections in the table;
//! - claim→complete throughput of 1 and 4 worker processes (`Worker::run`
//!   with `PLANSYNC_CONCURRENCY` 16 each: batched claims, LISTEN/NOTIFY, the
//!   ticks of every process), without and with that stuck backlog.
//!
//! Run: `cargo bench --bench queue` (PostgreSQL as for the tests). The
//! worker processes are this binary again (`--queue-worker URL ID`), so they
//! run the library's `Worker` exactly as `plansync run` does, minus Google.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use plansync::config::QueueSettings;
use plansync::queue::{Done, Job, JobContext, JobError, Queue};
use plansync::worker::{JobHandler, Worker, WorkerConfig};
use sqlx::PgPool;
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

const CONNECTIONS: i64 = 1_000_000;
/// Needs-re-auth connections and their due pushes: 300,000 stuck jobs.
const STUCK_CONNECTIONS: i64 = 20_000;
const STUCK_PER_CONNECTION: i64 = 15;
/// Jobs each throughput run works through.
const JOBS: i64 = 60_000;
/// Connections due in the busy tick.
const DUE: i64 = 7_000;
const LATENCY_SAMPLES: usize = 2_000;
const CONCURRENCY: usize = 16;
const POLL_INTERVAL_SECS: u64 = 3600;

fn queue_settings() -> QueueSettings {
    QueueSettings {
        max_attempts: 8,
        retry_base: Duration::from_secs(5),
        lease: Duration::from_secs(60),
        connection_backoff_cap: Duration::from_secs(3600),
        dead_retention: Duration::from_secs(7 * 86_400),
    }
}

fn worker_config(id: &str) -> WorkerConfig {
    WorkerConfig {
        region: "default".into(),
        concurrency: CONCURRENCY,
        shutdown_grace: Duration::from_secs(5),
        poll_interval: Duration::from_secs(POLL_INTERVAL_SECS),
        poll_backstop: Duration::from_secs(POLL_INTERVAL_SECS),
        webhook_url: None,
        queue: queue_settings(),
        worker_id: id.to_owned(),
    }
}

/// The bench's job: nothing but its fenced completion.
struct CompleteOnly;

impl JobHandler for CompleteOnly {
    async fn run(&self, ctx: &JobContext, job: &Job) -> Result<Done, JobError> {
        job.complete(&ctx.pool).await
    }
}

async fn pool(url: &str, size: u32) -> PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(size)
        .connect(url)
        .await
        .unwrap()
}

/// A worker process: runs until its stdin closes.
async fn worker_process(url: &str, id: &str) {
    let pool = pool(url, 6).await;
    let worker = Worker::new(pool, worker_config(id), CompleteOnly);
    let stop = CancellationToken::new();
    let on_eof = stop.clone();
    tokio::spawn(async move {
        let mut sink = Vec::new();
        let _ = tokio::io::stdin().read_to_end(&mut sink).await;
        on_eof.cancel();
    });
    worker.run(stop).await.unwrap();
}

/// Runs `;`-separated statements one by one (a multi-statement string is one
/// implicit transaction, where VACUUM cannot run).
async fn exec(pool: &PgPool, sql: &str) {
    for statement in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        sqlx::raw_sql(statement).execute(pool).await.unwrap();
    }
}

async fn scalar(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

async fn setup(pool: &PgPool) -> Duration {
    let started = Instant::now();
    exec(
        pool,
        &format!(
            "INSERT INTO public.users (id) SELECT g FROM generate_series(1, {CONNECTIONS}) g;
             INSERT INTO plansync.connections (user_id, calendar_id, region, last_pull_at)
             SELECT g, 'primary', 'default', now() FROM generate_series(1, {CONNECTIONS}) g;
             VACUUM ANALYZE public.users;
             VACUUM ANALYZE plansync.connections;"
        ),
    )
    .await;
    started.elapsed()
}

/// Due pushes on healthy connections (one per connection, so a claim batch is
/// never thinned by connection exclusivity), as the host triggers make them.
async fn add_jobs(pool: &PgPool, jobs: i64) {
    exec(
        pool,
        &format!(
            "INSERT INTO plansync.jobs (kind, connection_id, appointment_id, region)
             SELECT 'push', c.id, c.id, 'default' FROM plansync.connections c
              WHERE c.id > {STUCK_CONNECTIONS} ORDER BY c.id LIMIT {jobs};
             ANALYZE plansync.jobs;"
        ),
    )
    .await;
}

async fn clear_jobs(pool: &PgPool, stuck_too: bool) {
    let keep = if stuck_too { "" } else { " WHERE NOT blocked" };
    exec(
        pool,
        &format!("DELETE FROM plansync.jobs{keep}; VACUUM ANALYZE plansync.jobs;"),
    )
    .await;
}

async fn add_stuck(pool: &PgPool) {
    exec(
        pool,
        &format!(
            "UPDATE plansync.connections SET needs_reauth = TRUE, last_error = 'invalid_grant'
              WHERE id <= {STUCK_CONNECTIONS};
             INSERT INTO plansync.jobs (kind, connection_id, appointment_id, region, run_at)
             SELECT 'push', c, c * 100 + k, 'default', now() - interval '1 day'
               FROM generate_series(1, {STUCK_CONNECTIONS}) c,
                    generate_series(1, {STUCK_PER_CONNECTION}) k;
             VACUUM ANALYZE plansync.jobs;"
        ),
    )
    .await;
}

/// Sequential claim-then-complete of single jobs: the claim's own latency.
async fn claim_latency(pool: &PgPool) -> (Duration, Duration) {
    let queue = Queue::new(pool.clone(), queue_settings());
    let mut samples = Vec::with_capacity(LATENCY_SAMPLES);
    for _ in 0..LATENCY_SAMPLES {
        let started = Instant::now();
        let job = queue
            .claim("default", "bench:latency")
            .await
            .unwrap()
            .expect("a due job");
        samples.push(started.elapsed());
        let _ = job.complete(pool).await.unwrap();
    }
    samples.sort();
    (
        common::percentile(&samples, 0.5),
        common::percentile(&samples, 0.99),
    )
}

async fn succeeded(pool: &PgPool) -> i64 {
    scalar(
        pool,
        "SELECT count(*) FROM plansync.jobs WHERE state = 'succeeded'",
    )
    .await
}

/// Runs `processes` worker processes over the queued jobs; jobs/s between the
/// first completion and the last (or 60 s).
async fn throughput(url: &str, pool: &PgPool, processes: usize) -> f64 {
    let exe = std::env::current_exe().unwrap();
    let mut children = Vec::new();
    for p in 0..processes {
        children.push(
            tokio::process::Command::new(&exe)
                .args(["--queue-worker", url, &format!("bench:{p}")])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .env("RUST_LOG", "warn")
                .kill_on_drop(true)
                .spawn()
                .unwrap(),
        );
    }
    let wait = Duration::from_millis(100);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut start = None;
    let mut end = None;
    while Instant::now() < deadline {
        let done = succeeded(pool).await;
        if start.is_none() && done > 0 {
            start = Some((Instant::now(), done));
        }
        if done >= JOBS {
            end = Some((Instant::now(), done));
            break;
        }
        if let Some((t0, _)) = start {
            if t0.elapsed() > Duration::from_secs(60) {
                end = Some((Instant::now(), done));
                break;
            }
        }
        tokio::time::sleep(wait).await;
    }
    for mut child in children {
        drop(child.stdin.take());
        let _ = tokio::time::timeout(Duration::from_secs(20), child.wait()).await;
    }
    let ((t0, c0), (t1, c1)) = (start.expect("jobs ran"), end.expect("jobs ran"));
    (c1 - c0) as f64 / (t1 - t0).as_secs_f64()
}

async fn tick_time(worker: &Worker<CompleteOnly>) -> (Duration, u64) {
    let started = Instant::now();
    let (scheduled, _) = worker.tick().await.unwrap();
    (started.elapsed(), scheduled)
}

/// One full tick, and its parts timed on their own just after.
async fn tick_parts(pool: &PgPool, worker: &Worker<CompleteOnly>) -> String {
    let examined_before: i64 = scalar(
        pool,
        "SELECT count(*) FROM plansync.connections WHERE poll_at <= now()",
    )
    .await;
    let (total, scheduled) = tick_time(worker).await;
    let timed = |t: Instant| t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    plansync::store::jobs::schedule_pulls(
        pool,
        "default",
        POLL_INTERVAL_SECS as i64,
        None,
        None,
        10_000,
    )
    .await
    .unwrap();
    let schedule = timed(t);
    let t = Instant::now();
    plansync::store::channels::schedule_upkeep(pool, "default", None)
        .await
        .unwrap();
    let upkeep = timed(t);
    let t = Instant::now();
    plansync::store::channels::settle_abandoned(pool, "default")
        .await
        .unwrap();
    let settle = timed(t);
    let t = Instant::now();
    plansync::store::jobs::prune(pool, 3600.0, 604_800.0)
        .await
        .unwrap();
    let prune = timed(t);
    let t = Instant::now();
    plansync::store::jobs::recheck_blocked(pool).await.unwrap();
    let recheck = timed(t);
    format!(
        "{:.1} ms, {examined_before} connections looked at, {scheduled} pulls enqueued \
         (alone, right after: scheduler with nothing left {schedule:.1} ms, channel upkeep \
         {upkeep:.1} ms, settle {settle:.1} ms, prune {prune:.1} ms, recheck {recheck:.1} ms)",
        total.as_secs_f64() * 1e3
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if let Some(at) = args.iter().position(|a| a == "--queue-worker") {
        let (url, id) = (&args[at + 1], &args[at + 2]);
        runtime.block_on(worker_process(url, id));
        return;
    }
    runtime.block_on(bench());
}

async fn bench() {
    let db = common::BenchDb::create("queue").await;
    let pool = pool(&db.url, 4).await;
    println!("## queue ({})", common::machine());
    let made = setup(&pool).await;
    println!(
        "{CONNECTIONS} connections made with SQL in {:.1} s",
        made.as_secs_f64()
    );

    let worker = Worker::new(pool.clone(), worker_config("bench:tick"), CompleteOnly);
    let (first, _) = tick_time(&worker).await;
    println!(
        "first tick after creation (every connection looked at once): {:.1} s",
        first.as_secs_f64()
    );
    // Ticks every 5 s, as `run` does: each looks at the connections whose
    // slot ended since the one before (about 1,400 at 1M/3600 s).
    let mut steady = Vec::new();
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_secs(5)).await;
        steady.push(tick_parts(&pool, &worker).await);
    }
    for (i, t) in steady.iter().enumerate() {
        println!("steady tick {}: {t}", i + 1);
    }
    exec(
        &pool,
        &format!(
            "UPDATE plansync.connections SET last_pull_at = now() - interval '2 hours'
              WHERE id % ({CONNECTIONS} / {DUE}) = 0 AND id <= {CONNECTIONS}"
        ),
    )
    .await;
    println!(
        "tick with {DUE} made due: {}",
        tick_parts(&pool, &worker).await
    );
    clear_jobs(&pool, true).await;

    let mut latency = Vec::new();
    let mut rates = Vec::new();
    for phase in ["clean", "with 300,000 stuck jobs", "clean again"] {
        match phase {
            "with 300,000 stuck jobs" => add_stuck(&pool).await,
            "clean again" => clear_jobs(&pool, true).await,
            _ => {}
        }
        add_jobs(&pool, LATENCY_SAMPLES as i64 + 100).await;
        let (p50, p99) = claim_latency(&pool).await;
        clear_jobs(&pool, false).await;
        latency.push((p50, p99));
        if phase == "clean again" {
            println!(
                "{phase}: claim p50 {:.2} ms, p99 {:.2} ms",
                p50.as_secs_f64() * 1e3,
                p99.as_secs_f64() * 1e3
            );
            continue;
        }
        let mut phase_rates = Vec::new();
        for processes in [1, 4] {
            add_jobs(&pool, JOBS).await;
            let rate = throughput(&db.url, &pool, processes).await;
            clear_jobs(&pool, false).await;
            phase_rates.push(rate);
        }
        println!(
            "{phase}: claim p50 {:.2} ms, p99 {:.2} ms; claim→complete {:.0} jobs/s with 1 \
             process, {:.0} jobs/s with 4",
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            phase_rates[0],
            phase_rates[1]
        );
        rates.push(phase_rates);
    }
    let clean_p50 = (latency[0].0 + latency[2].0) / 2;
    let clean_p99 = (latency[0].1 + latency[2].1) / 2;
    println!(
        "stuck/clean (clean = mean of both clean phases): claim p50 {:.2}x, p99 {:.2}x; \
         throughput 1 process {:.2}x, 4 processes {:.2}x",
        latency[1].0.as_secs_f64() / clean_p50.as_secs_f64(),
        latency[1].1.as_secs_f64() / clean_p99.as_secs_f64(),
        rates[1][0] / rates[0][0],
        rates[1][1] / rates[0][1],
    );
    pool.close().await;
    db.drop_db().await;
}
