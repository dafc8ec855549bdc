//! The fleet under the faults production brings, each replica a real
//! `plansync run` process: `kill -9` mid-work, `kill -9` after Google accepted
//! a write, SIGTERM to every replica, a Postgres restart and a Redis restart.
//! Leases are 2 s so a dead replica's work is rescued within seconds; every
//! wait polls with a deadline.

mod kills;
mod restarts;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use plansync::config::{DatabaseSettings, Env};
use plansync::crypto::TokenCipher;
use plansync::ids::{CalendarId, RefreshToken, UserId};
use plansync::store::connections::{ConnectionAuth, NewConnection};
use plansync_fake_google::{FakeGoogle, FakeGoogleOptions, Fault, Operation};
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
        plansync::sync::connect(
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
