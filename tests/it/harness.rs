//! `TestApp`: a freshly migrated database of its own on the real PostgreSQL
//! and a Redis channel prefix of its own per test, so tests run in parallel
//! and leave nothing behind (the database is dropped when the app is).

#![allow(dead_code)]

use std::process::Output;
use std::time::Duration;

use plansync::config::{DatabaseSettings, Env};
use plansync::crypto::TokenCipher;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, Executor, PgConnection, PgPool};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

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
        }
    }

    pub fn db_settings(&self) -> DatabaseSettings {
        DatabaseSettings::from_env(&Env::from_pairs([("DATABASE_URL", &self.database_url)]))
            .expect("valid test DATABASE_URL")
    }

    pub fn cipher(&self) -> TokenCipher {
        TokenCipher::from_base64(&self.token_key).unwrap()
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

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

impl Drop for TestApp {
    fn drop(&mut self) {
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

/// A `redis-server` of the test's own, on a free port, so a test can stop
/// and restart it without touching the shared one.
pub struct PrivateRedis {
    pub port: u16,
    child: Option<std::process::Child>,
    extra_args: Vec<String>,
}

impl PrivateRedis {
    pub async fn start() -> PrivateRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut redis = PrivateRedis {
            port,
            child: None,
            extra_args: Vec::new(),
        };
        redis.spawn().await;
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn spawn(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(&self.extra_args)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server runs (see scripts/services)");
        self.child = Some(child);
        let url = if let Some(i) = self.extra_args.iter().position(|a| a == "--requirepass") {
            format!(
                "redis://:{}@127.0.0.1:{}",
                self.extra_args[i + 1],
                self.port
            )
        } else {
            self.url()
        };
        let client = redis::Client::open(url).unwrap();
        eventually(Duration::from_secs(10), "private redis to answer", || {
            let client = client.clone();
            async move {
                let mut conn = client.get_multiplexed_async_connection().await.ok()?;
                redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .ok()
            }
        })
        .await;
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same port, with `args` added (e.g. a password).
    pub async fn restart_with(&mut self, args: &[&str]) {
        self.stop();
        self.extra_args = args.iter().map(|a| a.to_string()).collect();
        self.spawn().await;
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A test app wired to its own Google emulator: the worker, run in-process or
/// as the binary, talks to the emulator exactly as it would to Google.
pub struct SyncApp {
    pub app: TestApp,
    pub google: plansync_fake_google::FakeGoogle,
}

impl SyncApp {
    /// An emulator with an empty `primary` calendar (UTC).
    pub async fn spawn() -> SyncApp {
        SyncApp::with_options(plansync_fake_google::FakeGoogleOptions::default()).await
    }

    pub async fn with_options(options: plansync_fake_google::FakeGoogleOptions) -> SyncApp {
        let app = TestApp::spawn().await;
        let google = plansync_fake_google::FakeGoogle::start(options)
            .await
            .expect("the emulator starts");
        SyncApp { app, google }
    }

    /// The environment a worker needs to reach this emulator.
    pub fn google_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("GOOGLE_CALENDAR_BASE_URL", self.google.base_url()),
            ("GOOGLE_TOKEN_URL", self.google.token_url()),
            ("GOOGLE_CLIENT_ID", self.google.client_id()),
            ("GOOGLE_CLIENT_SECRET", self.google.client_secret()),
            ("PLANSYNC_RETRY_BASE_SECS", "0".to_owned()),
        ]
    }

    /// The binary with the app's and the emulator's environment.
    pub fn command(&self) -> tokio::process::Command {
        let mut cmd = self.app.command();
        for (k, v) in self.google_env() {
            cmd.env(k, v);
        }
        cmd
    }

    pub async fn run(&self, args: &[&str], stdin: &str) -> Output {
        run_command(self.command(), args, stdin).await
    }

    /// The binary with extra environment (`None` removes a variable).
    pub async fn run_with(
        &self,
        env: &[(&str, Option<&str>)],
        args: &[&str],
        stdin: &str,
    ) -> Output {
        let mut cmd = self.command();
        for (k, v) in env {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        run_command(cmd, args, stdin).await
    }

    /// `plansync run --once`, asserting it exits 0.
    pub async fn run_once(&self) -> Output {
        let out = self.run(&["run", "--once"], "").await;
        assert!(out.status.success(), "run --once failed: {}", stderr(&out));
        out
    }

    /// Creates the user (if needed) and connects `calendar` with the
    /// emulator's first refresh token. Returns the connection id.
    pub async fn connect(&self, user: i64, calendar: &str, extra: &[&str]) -> i64 {
        sqlx::query("INSERT INTO users (id) VALUES ($1) ON CONFLICT (id) DO NOTHING")
            .bind(user)
            .execute(&self.app.pool)
            .await
            .unwrap();
        let token = self.google.refresh_tokens()[0].clone();
        let mut args = vec!["connect", "--user", "", "--calendar", calendar];
        let user_text = user.to_string();
        args[2] = &user_text;
        args.extend_from_slice(extra);
        let out = self.run(&args, &format!("{token}\n")).await;
        assert!(out.status.success(), "connect failed: {}", stderr(&out));
        stdout(&out).trim().parse().expect("connect prints the id")
    }

    /// `status --json` as a value.
    pub async fn status(&self) -> serde_json::Value {
        let out = self.run(&["status", "--json"], "").await;
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

/// Settings that make a worker's calls to Google depend only on what the test
/// does: retries at once, and no scheduled pull (slots a week long) beyond
/// the first one, so a recorded session replays call for call.
pub const REPLAYABLE_ENV: [(&str, &str); 2] = [
    ("PLANSYNC_RETRY_BASE_SECS", "0"),
    ("PLANSYNC_POLL_INTERVAL_SECS", "604800"),
];

/// A test app whose worker talks to a replay of a recorded session
/// (fixtures/README.md, "Recordings") instead of the emulator. End the test
/// with [`ReplayApp::assert_consumed`]: every exchange used, nothing
/// unexpected asked.
pub struct ReplayApp {
    pub app: TestApp,
    pub replay: plansync_fake_google::Replayer,
}

impl ReplayApp {
    /// The refresh token connections are made with: the recording's own were
    /// replaced by placeholders, and token requests match by grant type.
    pub const REFRESH_TOKEN: &'static str = "replay-refresh-token";

    pub async fn start(recording: &std::path::Path) -> ReplayApp {
        let app = TestApp::spawn().await;
        let replay = plansync_fake_google::Replayer::start(
            plansync_fake_google::ReplayOptions::new(recording),
        )
        .await
        .unwrap_or_else(|e| panic!("replaying {}: {e}", recording.display()));
        ReplayApp { app, replay }
    }

    /// The binary with the app's environment, pointed at the replay.
    pub fn command(&self) -> tokio::process::Command {
        let mut cmd = self.app.command();
        cmd.env("GOOGLE_CALENDAR_BASE_URL", self.replay.base_url())
            .env("GOOGLE_TOKEN_URL", self.replay.token_url())
            .env(
                "GOOGLE_CLIENT_ID",
                "replay-client.apps.googleusercontent.com",
            )
            .env("GOOGLE_CLIENT_SECRET", "replay-client-secret")
            .envs(REPLAYABLE_ENV);
        cmd
    }

    pub async fn run(&self, args: &[&str]) -> Output {
        let out = run_command(self.command(), args, "").await;
        assert!(
            out.status.success(),
            "plansync {args:?} failed: {}\n{}",
            stderr(&out),
            self.replay.status()
        );
        out
    }

    /// Creates the user (if needed) and connects `calendar`.
    pub async fn connect(&self, user: i64, calendar: &str) -> i64 {
        sqlx::query("INSERT INTO users (id) VALUES ($1) ON CONFLICT (id) DO NOTHING")
            .bind(user)
            .execute(&self.app.pool)
            .await
            .unwrap();
        let user = user.to_string();
        let out = run_command(
            self.command(),
            &["connect", "--user", &user, "--calendar", calendar],
            &format!("{}\n", Self::REFRESH_TOKEN),
        )
        .await;
        assert!(out.status.success(), "connect failed: {}", stderr(&out));
        stdout(&out).trim().parse().expect("connect prints the id")
    }

    /// Fails the test unless the recording was consumed exactly, naming every
    /// unexpected request (with the exchange that was next) and every unused
    /// exchange.
    #[track_caller]
    pub fn assert_consumed(&self) {
        self.replay.status().assert_consumed();
    }
}

impl SyncApp {
    /// The environment of a worker of this app (database, Redis prefix,
    /// token key, emulator), plus `extra` (later pairs win).
    pub fn worker_env(&self, extra: &[(&str, &str)]) -> Env {
        let mut pairs: Vec<(String, String)> = vec![
            ("DATABASE_URL".into(), self.app.database_url.clone()),
            ("REDIS_URL".into(), redis_url()),
            (
                "PLANSYNC_REDIS_PREFIX".into(),
                self.app.redis_prefix.clone(),
            ),
            ("PLANSYNC_TOKEN_KEY".into(), self.app.token_key.clone()),
        ];
        pairs.extend(
            self.google_env()
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v)),
        );
        pairs.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        Env::from_pairs(pairs)
    }

    /// One in-process pass (what `run --once` does, without a child
    /// process): a tick, every due job, then the outbox drained.
    pub async fn pass(&self) -> plansync::worker::PassReport {
        let process = WorkerProcess::start(self.worker_env(&[]), "pass", 4).await;
        process.pass().await.expect("the pass ran")
    }
}

/// A worker "process" in-process: its own tokio runtime, database pool, Google
/// client and delta relay, built from settings as `plansync run` builds them.
/// [`WorkerProcess::kill`] (and dropping it) shuts the runtime down without
/// waiting: every task — jobs, heartbeats, the relay — is dropped at its next
/// await and every connection closed, which is what `kill -9` does as far as
/// Postgres and Google can tell (open transactions roll back, leases stay
/// until they expire, requests in flight may or may not have taken effect).
pub struct WorkerProcess {
    /// The worker id (`lockedBy` of its claims).
    pub id: String,
    runtime: Option<tokio::runtime::Runtime>,
    parts: Option<ProcessParts>,
}

struct ProcessParts {
    worker: plansync::worker::Worker<plansync::worker::SyncJobs>,
    relay: std::sync::Arc<tokio::sync::Mutex<plansync::deltas::relay::Relay>>,
    pool: PgPool,
    redis: plansync::config::RedisSettings,
}

/// Why a pass did not finish.
#[derive(Debug)]
pub enum PassError {
    /// The process was killed while the pass ran.
    Killed,
    Worker(plansync::worker::WorkerError),
}

impl WorkerProcess {
    /// Builds the process's runtime and parts; `pool_size` bounds its
    /// database connections.
    pub async fn start(env: Env, id: &str, pool_size: u32) -> WorkerProcess {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(format!("worker-{id}"))
            .enable_all()
            .build()
            .expect("a worker runtime");
        let worker_id = id.to_owned();
        // Built inside its runtime: the pool's and the HTTP client's sockets
        // belong to that runtime and die with it.
        let parts = runtime
            .spawn(async move { ProcessParts::build(&env, worker_id, pool_size).await })
            .await
            .expect("building the worker");
        WorkerProcess {
            id: id.to_owned(),
            runtime: Some(runtime),
            parts: Some(parts),
        }
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        self.runtime.as_ref().expect("a live process")
    }

    fn parts(&self) -> &ProcessParts {
        self.parts.as_ref().expect("a live process")
    }

    /// Starts one pass (`run --once`: tick, every due job, drain the
    /// outbox) on the process's runtime; the handle ends when it does.
    pub fn spawn_pass(
        &self,
    ) -> tokio::task::JoinHandle<Result<plansync::worker::PassReport, plansync::worker::WorkerError>>
    {
        let worker = self.parts().worker.clone();
        let relay = self.parts().relay.clone();
        self.runtime().spawn(async move {
            let report = worker.run_once().await?;
            // As `run --once`: Redis trouble leaves the backlog for later.
            let _ = relay.lock().await.drain().await;
            Ok(report)
        })
    }

    /// One pass, to its end.
    pub async fn pass(&self) -> Result<plansync::worker::PassReport, PassError> {
        match self.spawn_pass().await {
            Ok(Ok(report)) => Ok(report),
            Ok(Err(err)) => Err(PassError::Worker(err)),
            Err(_) => Err(PassError::Killed),
        }
    }

    /// Runs the long-lived worker (`plansync run` without its HTTP side):
    /// the claim loop and the relay, until `stop` is cancelled.
    pub fn spawn_run(&self, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        let parts = self.parts();
        let worker = parts.worker.clone();
        let relay = plansync::deltas::relay::Relay::new(
            parts.pool.clone(),
            parts.redis.clone(),
            fast_relay_settings(),
        )
        .expect("a relay");
        self.runtime().spawn(async move {
            let relay_stop = CancellationToken::new();
            let relay_task = tokio::spawn(relay.run(relay_stop.clone()));
            let _ = worker.run(stop).await;
            relay_stop.cancel();
            let _ = relay_task.await;
        })
    }

    /// `kill -9`: see the type's doc.
    pub fn kill(mut self) {
        self.shutdown_now();
    }

    fn shutdown_now(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
        // Only now, with no task left to use them: the pool's idle
        // connections close (an abandoned transaction rolls back).
        self.parts.take();
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.shutdown_now();
    }
}

fn fast_relay_settings() -> plansync::deltas::relay::RelaySettings {
    plansync::deltas::relay::RelaySettings {
        idle_poll: Duration::from_millis(100),
        ..plansync::deltas::relay::RelaySettings::default()
    }
}

impl ProcessParts {
    async fn build(env: &Env, worker_id: String, pool_size: u32) -> ProcessParts {
        use plansync::config::{
            GoogleSettings, QueueSettings, RedisSettings, SyncSettings, WorkerSettings,
        };
        let db = DatabaseSettings::from_env(env).expect("database settings");
        let google = GoogleSettings::from_env(env).expect("Google settings");
        let cipher = plansync::config::token_cipher(env).expect("token key");
        let redis = RedisSettings::from_env(env).expect("Redis settings");
        let sync = SyncSettings::from_env(env).expect("sync settings");
        let queue = QueueSettings::from_env(env).expect("queue settings");
        let settings = WorkerSettings::from_env(env).expect("worker settings");
        let pool = plansync::store::connect(&db, pool_size)
            .await
            .expect("the worker's pool");
        let mut config = plansync::worker::WorkerConfig::new(&settings, &sync, &queue);
        config.worker_id = worker_id;
        let google = plansync::google::GoogleClient::new(&google).expect("a Google client");
        let deps = plansync::sync::SyncDeps::new(google, cipher, sync);
        let worker = plansync::worker::Worker::new(
            pool.clone(),
            config,
            plansync::worker::SyncJobs::new(deps),
        );
        let relay =
            plansync::deltas::relay::Relay::new(pool.clone(), redis.clone(), fast_relay_settings())
                .expect("a relay");
        ProcessParts {
            worker,
            relay: std::sync::Arc::new(tokio::sync::Mutex::new(relay)),
            pool,
            redis,
        }
    }
}

/// A plain HTTP/1.1 GET (with an `Authorization` header when given): the
/// status and the whole response, headers and body.
pub async fn http_get_response(
    addr: &str,
    path: &str,
    authorization: Option<&str>,
) -> (u16, String) {
    use tokio::io::AsyncReadExt;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, response)
}

/// [`http_get_response`]'s status and body only.
pub async fn http_get_body(addr: &str, path: &str, authorization: Option<&str>) -> (u16, String) {
    let (code, response) = http_get_response(addr, path, authorization).await;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}
