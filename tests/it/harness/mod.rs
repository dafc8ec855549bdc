//! What every test builds on. [`TestApp`]: a freshly migrated database of
//! its own on the real PostgreSQL and a Redis channel prefix of its own per
//! test, so tests run in parallel and leave nothing behind (the database is
//! dropped when the app is, unless `PLANSYNC_TEST_KEEP_DB=1` keeps a failing
//! test's). On top of it: [`SyncApp`] (the app and its own Google emulator,
//! with an in-process worker pass), [`ReplayApp`], worker processes in-process
//! ([`WorkerProcess`]) and as `plansync run` children ([`RunningWorker`]),
//! queue-level helpers ([`jobs`]), a private `redis-server`, plain HTTP.

mod http;
pub mod jobs;
mod process;
mod redis_server;
pub mod statements;
mod sync_app;

use std::process::Output;
use std::time::Duration;

pub use http::http_get_body;
pub use process::{RunningWorker, WorkerProcess};
pub use redis_server::PrivateRedis;
pub use sync_app::{ReplayApp, SyncApp, REPLAYABLE_ENV};

use plansync::config::{DatabaseSettings, Env};
use plansync::crypto::TokenCipher;
use serde_json::Value;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, Executor, PgConnection, PgPool};
use tokio::io::AsyncWriteExt;

/// The server tests run against; `DATABASE_URL`'s host and credentials are
/// reused with a fresh database name.
fn server_url() -> url::Url {
    let base = std::env::var("DATABASE_URL")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| DatabaseSettings::DEFAULT_URL.to_owned());
    url::Url::parse(&base).expect("DATABASE_URL is a URL")
}

fn url_for(database: &str) -> String {
    let mut url = server_url();
    url.set_path(database);
    url.to_string()
}

/// The server's `postgres` database, for statements about databases.
pub fn admin_url() -> String {
    url_for("postgres")
}

pub fn redis_url() -> String {
    std::env::var("REDIS_URL")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned())
}

pub struct TestApp {
    pub db_name: String,
    pub database_url: String,
    pub pool: PgPool,
    pub redis_prefix: String,
    pub token_key: String,
    /// Keep the database when the test fails (`PLANSYNC_TEST_KEEP_DB=1`).
    pub keep_db_on_failure: bool,
}

impl TestApp {
    /// A new database with every migration applied.
    pub async fn spawn() -> TestApp {
        let app = TestApp::unmigrated().await;
        plansync::store::migrate::run(&app.db_settings())
            .await
            .expect("migrations apply");
        app
    }

    /// A new, empty database (for tests of `migrate` itself).
    pub async fn unmigrated() -> TestApp {
        let db_name = format!("plansync_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&url_for("postgres"))
            .await
            .expect("PostgreSQL answers (see README: services)");
        admin
            .execute(format!("CREATE DATABASE \"{db_name}\"").as_str())
            .await
            .expect("create test database");
        let database_url = url_for(&db_name);
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .connect(&database_url)
            .await
            .expect("connect to test database");
        TestApp {
            redis_prefix: format!("test:{db_name}:"),
            db_name,
            database_url,
            pool,
            token_key: TokenCipher::generate_key(),
            keep_db_on_failure: std::env::var(KEEP_DB).is_ok_and(|v| v == "1"),
        }
    }

    pub fn db_settings(&self) -> DatabaseSettings {
        DatabaseSettings::from_env(&Env::from_pairs([("DATABASE_URL", &self.database_url)]))
            .expect("valid test DATABASE_URL")
    }

    pub fn cipher(&self) -> TokenCipher {
        TokenCipher::from_base64(&self.token_key).unwrap()
    }

    /// `users.plan_version` of `user`.
    pub async fn plan_version(&self, user: i64) -> i64 {
        sqlx::query_scalar("SELECT plan_version FROM users WHERE id = $1")
            .bind(user)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    pub async fn add_user(&self, id: i64) {
        sqlx::query("INSERT INTO users (id) VALUES ($1)")
            .bind(id)
            .execute(&self.pool)
            .await
            .expect("insert user");
    }

    /// The `plansync` binary with this app's environment and nothing else
    /// inherited that could change its behaviour.
    pub fn command(&self) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_plansync"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", &self.database_url)
            .env("REDIS_URL", redis_url())
            .env("PLANSYNC_REDIS_PREFIX", &self.redis_prefix)
            .env("PLANSYNC_TOKEN_KEY", &self.token_key)
            .env("RUST_LOG", "warn")
            // Never real Google: a closed local port unless a test points
            // these at its emulator.
            .env(
                "GOOGLE_CALENDAR_BASE_URL",
                "http://127.0.0.1:9/calendar/v3/",
            )
            .env("GOOGLE_TOKEN_URL", "http://127.0.0.1:9/token")
            .kill_on_drop(true);
        cmd
    }

    /// Runs the binary with `args` and `stdin`, bounded in time.
    pub async fn run(&self, args: &[&str], stdin: &str) -> Output {
        run_command(self.command(), args, stdin).await
    }
}

pub async fn run_command(mut cmd: tokio::process::Command, args: &[&str], stdin: &str) -> Output {
    cmd.args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("spawn plansync");
    let mut input = child.stdin.take().unwrap();
    // A command that exits before reading stdin (a usage error, a command
    // that reads none) closes the pipe: that is its answer, not a failure.
    match input.write_all(stdin.as_bytes()).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => panic!("writing plansync's stdin: {e}"),
    }
    drop(input);
    tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("plansync finished within 120 s")
        .expect("plansync ran")
}

/// How many outbox rows are not yet published (the pending entries' rows).
pub const OUTBOX_BACKLOG_SQL: &str =
    "SELECT COALESCE(sum(rows), 0)::BIGINT FROM plansync.outbox_pending";

/// How many outbox rows are published: no pending entry of their user starts
/// at or below their version.
pub const OUTBOX_PUBLISHED_SQL: &str = "SELECT count(*) FROM plansync.outbox o \
     WHERE NOT EXISTS (SELECT 1 FROM plansync.outbox_pending p \
                       WHERE p.user_id = o.user_id AND p.first_version <= o.version)";

/// A number the database answers to `sql`.
pub async fn count(app: &TestApp, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&app.pool).await.unwrap()
}

/// `status --json` (with `extra` arguments) as a value.
pub async fn status_json(app: &TestApp, extra: &[&str]) -> Value {
    let mut args = vec!["status", "--json"];
    args.extend_from_slice(extra);
    let out = app.run(&args, "").await;
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("status --json prints one JSON object")
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Set to `1` to keep the database of a test that fails (its name is
/// printed with the failure); by default every test's database is dropped.
const KEEP_DB: &str = "PLANSYNC_TEST_KEEP_DB";

impl Drop for TestApp {
    fn drop(&mut self) {
        // A failing test unwinds through here: its database is the evidence.
        if std::thread::panicking() && self.keep_db_on_failure {
            eprintln!(
                "{KEEP_DB}=1: kept the failed test's database {} ({})",
                self.db_name, self.database_url
            );
            return;
        }
        // Drop runs outside any runtime guarantee, so the cleanup gets its own
        // thread and runtime; WITH (FORCE) ends the pool's open sessions.
        let name = self.db_name.clone();
        let admin_url = url_for("postgres");
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                if let Ok(mut admin) = PgConnection::connect(&admin_url).await {
                    let _ = admin
                        .execute(
                            format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)").as_str(),
                        )
                        .await;
                }
            });
        })
        .join();
    }
}

/// Polls `check` until it returns `Some`, failing the test after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
