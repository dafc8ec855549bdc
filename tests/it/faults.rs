//! The fleet under the faults production brings, each replica a real
//! `plansync run` process: `kill -9` mid-work, `kill -9` after Google accepted
//! a write, SIGTERM to every replica, a Postgres restart and a Redis restart.
//! Leases are 2 s so a dead replica's work is rescued within seconds; every
//! wait polls with a deadline.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use plansync::config::{DatabaseSettings, Env};
use plansync::crypto::TokenCipher;
use plansync::fake_google::{FakeGoogle, FakeGoogleOptions, Fault, Operation};
use plansync::ids::{CalendarId, RefreshToken, UserId};
use plansync::store::connections::{ConnectionAuth, NewConnection};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

use crate::harness::{eventually, redis_url, PrivateRedis, RunningWorker, TestApp};

/// Every replica's lease (`PLANSYNC_LEASE_SECS`) and drain time.
const LEASE_SECS: &str = "2";
const GRACE_SECS: u64 = 2;

/// What the replicas of one test share: a database, Redis, the emulator.
pub struct Fleet {
    pub database_url: String,
    pub pool: PgPool,
    pub token_key: String,
    pub google: FakeGoogle,
    /// Settings every replica gets on top of the defaults (e.g. `REDIS_URL`).
    pub env: Vec<(String, String)>,
}

impl Fleet {
    /// A fleet on the test's own database of the shared server.
    pub async fn on(app: &TestApp) -> Fleet {
        Fleet::new(
            app.database_url.clone(),
            app.pool.clone(),
            app.token_key.clone(),
        )
        .await
        .with("REDIS_URL", &redis_url())
        .with("PLANSYNC_REDIS_PREFIX", &app.redis_prefix)
    }

    /// A fleet on a migrated database `plansync` of a private cluster.
    pub async fn on_private(pg: &PrivatePostgres) -> Fleet {
        let url = pg.url("plansync");
        let settings = DatabaseSettings::from_env(&Env::from_pairs([("DATABASE_URL", &url)]))
            .expect("valid URL");
        plansync::store::migrate::create_database_if_missing(&settings)
            .await
            .expect("create database");
        plansync::store::migrate::run(&settings)
            .await
            .expect("migrate");
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(2))
            .connect(&url)
            .await
            .expect("connect to the private cluster");
        Fleet::new(url, pool, TokenCipher::generate_key())
            .await
            .with("REDIS_URL", &redis_url())
            .with(
                "PLANSYNC_REDIS_PREFIX",
                &format!("test:faults:{}:", uuid::Uuid::new_v4().simple()),
            )
    }

    async fn new(database_url: String, pool: PgPool, token_key: String) -> Fleet {
        let google = FakeGoogle::start(FakeGoogleOptions::default())
            .await
            .expect("the emulator starts");
        Fleet {
            database_url,
            pool,
            token_key,
            google,
            env: Vec::new(),
        }
    }

    pub fn with(mut self, key: &str, value: &str) -> Fleet {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    fn command(&self) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_plansync"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", &self.database_url)
            .env("PLANSYNC_TOKEN_KEY", &self.token_key)
            .env("GOOGLE_CALENDAR_BASE_URL", self.google.base_url())
            .env("GOOGLE_TOKEN_URL", self.google.token_url())
            .env("GOOGLE_CLIENT_ID", self.google.client_id())
            .env("GOOGLE_CLIENT_SECRET", self.google.client_secret())
            .env("PLANSYNC_RETRY_BASE_SECS", "0")
            .env("PLANSYNC_LEASE_SECS", LEASE_SECS)
            .env("PLANSYNC_SHUTDOWN_GRACE_SECS", GRACE_SECS.to_string())
            .env("PLANSYNC_CONCURRENCY", "4")
            .env("PLANSYNC_HTTP_ADDR", "127.0.0.1:0")
            .env("PLANSYNC_LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .kill_on_drop(true);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Starts `plansync run` and waits for it to listen.
    pub async fn replica(&self) -> Replica {
        let mut cmd = self.command();
        cmd.arg("run");
        RunningWorker::spawn(cmd).await
    }

    /// `n` calendars `cal-1`… in the emulator with `events` events each, and
    /// a connection of user `i` to `cal-i` (its full sync enqueued).
    pub async fn connect_calendars(&self, n: i64, events: usize) {
        let cipher = TokenCipher::from_base64(&self.token_key).unwrap();
        let token = RefreshToken::new(self.google.refresh_tokens()[0].clone());
        for i in 1..=n {
            let calendar = format!("cal-{i}");
            self.google
                .add_calendar(&calendar, &calendar, "UTC")
                .unwrap();
            for e in 0..events {
                self.google
                    .create_event(&calendar, event(&format!("{calendar} #{e}"), e as i64))
                    .unwrap();
            }
            self.connect(i, &calendar, false, &cipher, &token).await;
        }
    }

    async fn connect(
        &self,
        user: i64,
        calendar: &str,
        push_target: bool,
        cipher: &TokenCipher,
        token: &RefreshToken,
    ) {
        sqlx::query("INSERT INTO users (id) VALUES ($1) ON CONFLICT DO NOTHING")
            .bind(user)
            .execute(&self.pool)
            .await
            .unwrap();
        let calendar = CalendarId::from(calendar);
        plansync::store::connections::connect(
            &self.pool,
            NewConnection {
                user: UserId(user),
                calendar: &calendar,
                region: None,
                default_region: "default",
                push_target,
                auth: ConnectionAuth::RefreshToken {
                    encrypted: cipher.encrypt(UserId(user), &calendar, token),
                },
            },
        )
        .await
        .expect("connect");
    }

    /// A number from the database, or `None` while it does not answer.
    pub async fn count(&self, sql: &str) -> Option<i64> {
        sqlx::query_scalar(sql).fetch_one(&self.pool).await.ok()
    }

    /// Waits until each of the `users` has exactly `per_user` appointments
    /// and no job is due or running; then checks that no job died and no
    /// appointment or link exists twice.
    pub async fn wait_synced(&self, users: i64, per_user: i64, timeout: Duration) {
        eventually(
            timeout,
            "every calendar imported and the queue drained",
            || async {
                let complete = self
                    .count(&format!(
                        "SELECT count(*) FROM (SELECT user_id FROM appointments GROUP BY user_id \
                     HAVING count(*) >= {per_user}) u"
                    ))
                    .await?;
                let busy = self
                    .count(
                        "SELECT count(*) FROM plansync.jobs WHERE state = 'running' \
                     OR (state = 'queued' AND run_at <= now())",
                    )
                    .await?;
                (complete == users && busy == 0).then_some(())
            },
        )
        .await;
        let doubled = self
            .count(&format!(
                "SELECT count(*) FROM (SELECT user_id FROM appointments GROUP BY user_id \
                 HAVING count(*) <> {per_user}) u"
            ))
            .await
            .unwrap();
        assert_eq!(doubled, 0, "a calendar was imported more than once");
        let links = self
            .count("SELECT count(*) FROM plansync.links")
            .await
            .unwrap();
        assert_eq!(links, users * per_user, "one link per imported event");
        let dead = self
            .count("SELECT count(*) FROM plansync.jobs WHERE state = 'dead'")
            .await
            .unwrap();
        assert_eq!(dead, 0, "no job died");
    }

    /// The pid of a worker holding a running job, once there is one.
    pub async fn a_busy_pid(&self) -> u32 {
        eventually(Duration::from_secs(30), "a running job", || async {
            let holder: Option<String> = sqlx::query_scalar(
                "SELECT locked_by FROM plansync.jobs WHERE state = 'running' \
                 ORDER BY id LIMIT 1",
            )
            .fetch_optional(&self.pool)
            .await
            .ok()??;
            holder?.rsplit(':').next()?.parse().ok()
        })
        .await
    }
}

/// One replica: a `plansync run` process.
pub type Replica = RunningWorker;

/// An event `days` from now, inside every lookback window.
fn event(summary: &str, days: i64) -> serde_json::Value {
    let start = Utc::now() + chrono::Duration::days(days + 1);
    let end = start + chrono::Duration::hours(1);
    serde_json::json!({
        "summary": summary,
        "start": {"dateTime": start.to_rfc3339_opts(SecondsFormat::Secs, true)},
        "end": {"dateTime": end.to_rfc3339_opts(SecondsFormat::Secs, true)},
    })
}

/// A PostgreSQL cluster of the test's own, so it can be stopped and
/// restarted. `initdb` refuses to run as root: as root, every server command
/// runs as the `postgres` OS user, in a directory it owns.
pub struct PrivatePostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
}

impl PrivatePostgres {
    pub async fn start() -> PrivatePostgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL server binaries under /usr/lib/postgresql")
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|p| p.join("initdb").exists())
            .max()
            .expect("an initdb under /usr/lib/postgresql/*/bin");
        let dir = tempfile::Builder::new()
            .prefix("plansync-pg-")
            .tempdir()
            .unwrap();
        if running_as_root() {
            let ok = tokio::process::Command::new("chown")
                .args(["postgres:postgres"])
                .arg(dir.path())
                .status()
                .await
                .unwrap()
                .success();
            assert!(ok, "chown the cluster directory to postgres");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pg = PrivatePostgres { dir, bin, port };
        let data = pg.data();
        pg.as_postgres(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        )
        .await;
        pg.start_server().await;
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    async fn as_postgres(&self, program: &str, args: &[&str]) {
        let program = self.bin.join(program);
        let mut cmd = if running_as_root() {
            let mut cmd = tokio::process::Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(&program);
            cmd
        } else {
            tokio::process::Command::new(&program)
        };
        let out = cmd
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{} {args:?}: {}{}",
            program.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub async fn start_server(&self) {
        let data = self.data();
        let log = self.dir.path().join("server.log");
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        self.as_postgres(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-o",
                &options,
                "-w",
                "start",
            ],
        )
        .await;
    }

    pub async fn stop_server(&self) {
        let data = self.data();
        self.as_postgres(
            "pg_ctl",
            &["-D", data.to_str().unwrap(), "-m", "fast", "-w", "stop"],
        )
        .await;
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let pg_ctl = self.bin.join("pg_ctl");
        let data = self.data();
        let mut cmd = if running_as_root() {
            let mut cmd = std::process::Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(&pg_ctl);
            cmd
        } else {
            std::process::Command::new(&pg_ctl)
        };
        let _ = cmd
            .args(["-D", data.to_str().unwrap(), "-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Whether this process runs as root (`id -u`; no libc call needed).
fn running_as_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

async fn sigterm_all_and_check_exit(replicas: &mut [Replica]) {
    let stopping = Instant::now();
    for r in replicas.iter() {
        r.sigterm().await;
    }
    for r in replicas.iter_mut() {
        let code = r.exit_code(Duration::from_secs(GRACE_SECS + 15)).await;
        assert_eq!(code, Some(0), "replica {} exit: {}", r.pid, r.log());
    }
    // The grace, plus releasing the stopped jobs' leases and the process's
    // own start-up of the drain: well under the grace + 8 s.
    assert!(
        stopping.elapsed() < Duration::from_secs(GRACE_SECS + 8),
        "replicas took {:?} to stop with a {GRACE_SECS} s grace",
        stopping.elapsed()
    );
}

#[tokio::test]
async fn four_replicas_one_killed_mid_work_import_every_calendar_once() {
    let app = TestApp::spawn().await;
    let fleet = Fleet::on(&app).await;
    // Slow listings keep work in flight when the replica dies.
    fleet.google.inject_fault(
        Operation::List,
        Fault::Delay {
            millis: Duration::from_millis(1500),
        },
        16,
    );
    fleet.connect_calendars(40, 3).await;
    let mut replicas = Vec::new();
    for _ in 0..4 {
        replicas.push(fleet.replica().await);
    }
    let victim = fleet.a_busy_pid().await;
    let index = replicas
        .iter()
        .position(|r| r.pid == victim)
        .expect("the job's owner is one of ours");
    let mut killed = replicas.remove(index);
    killed.kill9().await;

    fleet.wait_synced(40, 3, Duration::from_secs(90)).await;
    // The killed replica's work was rescued (a lost run spends an attempt)
    // and finished by the others.
    let rescued = fleet
        .count("SELECT count(*) FROM plansync.jobs WHERE attempts > 0")
        .await
        .unwrap();
    assert!(rescued >= 1, "no job of the killed replica was rescued");
    // The rescue's JSON log line has one `message` (the reason is `reason`).
    let rescue_line = replicas
        .iter()
        .flat_map(|r| r.log.lock().unwrap().clone())
        .find(|l| l.contains("rescuing job"))
        .expect("a surviving replica logged the rescue");
    assert_eq!(
        rescue_line.matches("\"message\"").count(),
        1,
        "{rescue_line}"
    );
    assert!(rescue_line.contains("\"reason\""), "{rescue_line}");
    sigterm_all_and_check_exit(&mut replicas).await;
}

#[tokio::test]
async fn a_replica_killed_after_google_accepted_an_insert_leaves_exactly_one_event() {
    let app = TestApp::spawn().await;
    let fleet = Fleet::on(&app).await;
    let cipher = TokenCipher::from_base64(&fleet.token_key).unwrap();
    let token = RefreshToken::new(fleet.google.refresh_tokens()[0].clone());
    fleet.connect(1, "primary", true, &cipher, &token).await;
    let mut first = fleet.replica().await;
    fleet.wait_synced(0, 0, Duration::from_secs(30)).await;

    // Google takes the insert at once and holds its answer back far longer
    // than the test lives.
    fleet.google.inject_fault(
        Operation::Insert,
        Fault::DelayResponse {
            millis: Duration::from_secs(600),
        },
        1,
    );
    let start = Utc::now() + chrono::Duration::days(2);
    let appointment: i64 = sqlx::query_scalar(
        "INSERT INTO appointments (user_id, summary, start_at, end_at) \
         VALUES (1, 'accepted, then the worker died', $1, $2) RETURNING id",
    )
    .bind(start)
    .bind(start + chrono::Duration::hours(1))
    .fetch_one(&fleet.pool)
    .await
    .unwrap();
    let in_google = |google: &FakeGoogle| {
        google
            .list_events("primary", "singleEvents=true")
            .unwrap()
            .into_iter()
            .filter(|e| e["status"] != "cancelled")
            .collect::<Vec<_>>()
    };
    eventually(
        Duration::from_secs(30),
        "Google to accept the insert",
        || {
            let n = in_google(&fleet.google).len();
            async move { (n == 1).then_some(()) }
        },
    )
    .await;
    first.kill9().await;

    // After the lease, another replica takes the push over: its insert of the
    // same id gets 409, which it recognises as its own event.
    let mut second = fleet.replica().await;
    let linked: String = eventually(Duration::from_secs(60), "the push to finish", || async {
        let event: Option<String> = sqlx::query_scalar(
            "SELECT l.event_id FROM plansync.links l WHERE l.appointment_id = $1 \
             AND NOT EXISTS (SELECT 1 FROM plansync.jobs j WHERE j.kind = 'push' \
                 AND j.state IN ('queued', 'running'))",
        )
        .bind(appointment)
        .fetch_optional(&fleet.pool)
        .await
        .ok()??;
        event
    })
    .await;
    let events = in_google(&fleet.google);
    assert_eq!(events.len(), 1, "exactly one Google event: {events:?}");
    // The second replica's insert of the same id met the first one's event.
    assert!(
        fleet
            .google
            .requests()
            .iter()
            .any(|r| r.operation == Operation::Insert && r.status == Some(409)),
        "the retried insert was answered 409"
    );
    assert_eq!(events[0]["id"], linked.as_str());
    assert_eq!(
        fleet
            .count("SELECT count(*) FROM plansync.jobs WHERE state = 'dead'")
            .await,
        Some(0)
    );
    sigterm_all_and_check_exit(std::slice::from_mut(&mut second)).await;
}

#[tokio::test]
async fn sigterm_to_every_replica_during_work_exits_zero_and_leaves_nothing_leased() {
    let app = TestApp::spawn().await;
    let fleet = Fleet::on(&app).await;
    // Some listings outlast the grace period, so some jobs must be stopped
    // and released rather than finished.
    fleet.google.inject_fault(
        Operation::List,
        Fault::Delay {
            millis: Duration::from_secs(GRACE_SECS + 4),
        },
        8,
    );
    fleet.connect_calendars(40, 3).await;
    let mut replicas = Vec::new();
    for _ in 0..4 {
        replicas.push(fleet.replica().await);
    }
    eventually(Duration::from_secs(30), "work in flight", || async {
        let running = fleet
            .count("SELECT count(*) FROM plansync.jobs WHERE state = 'running'")
            .await?;
        (running >= 4).then_some(())
    })
    .await;
    sigterm_all_and_check_exit(&mut replicas).await;
    assert!(
        replicas
            .iter()
            .any(|r| r.log().contains("job stopped at shutdown; lease released")),
        "no job outlasted the grace"
    );
    let leased = fleet
        .count(
            "SELECT count(*) FROM plansync.jobs WHERE state = 'running' \
             OR claim_token IS NOT NULL",
        )
        .await;
    assert_eq!(leased, Some(0), "a job was left leased");

    fleet.google.clear_faults();
    let mut fresh = fleet.replica().await;
    fleet.wait_synced(40, 3, Duration::from_secs(60)).await;
    sigterm_all_and_check_exit(std::slice::from_mut(&mut fresh)).await;
}

#[tokio::test]
async fn a_postgres_restart_under_load_loses_and_doubles_nothing() {
    let pg = PrivatePostgres::start().await;
    let fleet = Fleet::on_private(&pg).await;
    fleet.google.inject_fault(
        Operation::List,
        Fault::Delay {
            millis: Duration::from_millis(1000),
        },
        12,
    );
    fleet.connect_calendars(24, 3).await;
    let mut replicas = vec![fleet.replica().await, fleet.replica().await];
    eventually(
        Duration::from_secs(30),
        "some calendars imported",
        || async {
            let imported = fleet
                .count("SELECT count(DISTINCT user_id) FROM appointments")
                .await?;
            (imported >= 1).then_some(())
        },
    )
    .await;
    let imported = fleet
        .count("SELECT count(DISTINCT user_id) FROM appointments")
        .await
        .unwrap();
    assert!(imported < 24, "the restart came after the work");
    pg.stop_server().await;
    pg.start_server().await;

    fleet.wait_synced(24, 3, Duration::from_secs(90)).await;
    sigterm_all_and_check_exit(&mut replicas).await;
}

#[tokio::test]
async fn a_redis_restart_under_load_delivers_every_delta_once_it_returns() {
    // Redis persists every write, so the stream outlives the restart and
    // shows everything that was ever delivered.
    let aof = tempfile::tempdir().unwrap();
    let aof_dir = aof.path().to_str().unwrap().to_owned();
    let redis_args = [
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--dir",
        aof_dir.as_str(),
    ];
    let mut redis = PrivateRedis::start().await;
    redis.restart_with(&redis_args).await;
    let app = TestApp::spawn().await;
    let fleet = Fleet::on(&app)
        .await
        .with("REDIS_URL", &redis.url())
        .with("PLANSYNC_DELTA_MODE", "streams")
        .with("PLANSYNC_SOCKETIO_STREAM", "faults");
    fleet.google.inject_fault(
        Operation::List,
        Fault::Delay {
            millis: Duration::from_millis(800),
        },
        12,
    );
    fleet.connect_calendars(24, 3).await;
    let mut replicas = vec![fleet.replica().await, fleet.replica().await];
    eventually(Duration::from_secs(30), "deltas published", || async {
        let published = fleet
            .count("SELECT count(*) FROM plansync.outbox WHERE published_at IS NOT NULL")
            .await?;
        (published > 0).then_some(())
    })
    .await;
    redis.stop();
    eventually(
        Duration::from_secs(30),
        "deltas waiting in the outbox",
        || async {
            let waiting = fleet
                .count("SELECT count(*) FROM plansync.outbox WHERE published_at IS NULL")
                .await?;
            (waiting > 0).then_some(())
        },
    )
    .await;
    redis.restart_with(&redis_args).await;

    fleet.wait_synced(24, 3, Duration::from_secs(90)).await;
    eventually(Duration::from_secs(60), "the outbox to drain", || async {
        let waiting = fleet
            .count("SELECT count(*) FROM plansync.outbox WHERE published_at IS NULL")
            .await?;
        (waiting == 0).then_some(())
    })
    .await;
    let written: BTreeSet<(i64, i64)> =
        sqlx::query_as::<_, (i64, i64)>("SELECT user_id, version FROM plansync.outbox")
            .fetch_all(&fleet.pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
    assert_eq!(written.len(), 24 * 3);
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg("faults")
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut delivered = BTreeSet::new();
    for entry in entries.ids {
        let data: String = entry.get("data").expect("a data field");
        let data: serde_json::Value = serde_json::from_str(&data).unwrap();
        let user: i64 = data["opts"]["rooms"][0]
            .as_str()
            .unwrap()
            .trim_start_matches("user:")
            .parse()
            .unwrap();
        for delta in data["packet"]["data"][1]["deltas"].as_array().unwrap() {
            delivered.insert((user, delta["version"].as_i64().unwrap()));
        }
    }
    assert_eq!(delivered, written, "every delta reached Redis");
    sigterm_all_and_check_exit(&mut replicas).await;
}
