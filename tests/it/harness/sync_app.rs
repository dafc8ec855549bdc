//! [`SyncApp`]: a test app and its own Google emulator, with the worker
//! run in-process (one pass: [`SyncApp::run_once`]) or as the binary; and
//! [`ReplayApp`], the binary against a replay of a recorded session.

use std::process::Output;

use plansync::config::Env;
use plansync::worker::setup::WorkerSetup;
use plansync::worker::PassReport;

use super::{redis_url, run_command, stderr, stdout, TestApp};

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

    /// One worker pass in this process: what `plansync run --once` does,
    /// assembled by the same library code from the same environment
    /// ([`SyncApp::worker_env`]), without spawning the binary. Tests of the
    /// command itself (exit codes, logs) run the binary instead.
    pub async fn run_once(&self) -> PassReport {
        self.run_once_with(&[]).await
    }

    /// [`SyncApp::run_once`] with extra settings (later pairs win).
    pub async fn run_once_with(&self, extra: &[(&str, &str)]) -> PassReport {
        let setup = WorkerSetup::from_env(&self.worker_env(extra))
            .await
            .unwrap_or_else(|e| panic!("the worker could not start: {}", error_chain(&e)));
        let report = setup
            .run_once()
            .await
            .unwrap_or_else(|e| panic!("the pass could not run: {}", error_chain(&e)));
        report.pass
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

/// An error and its causes, as the binary prints them (`a: b: c`).
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
