//! Workspace domain-wide delegation end to end: a service-account key
//! generated for the test (`openssl`), the emulator holding its public key,
//! connections made with `connect --impersonate`, the real binary's
//! `run --once`, and the emulator's log of JWT grants.

mod sync;
mod tokens;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use chrono::{Duration as Days, Utc};
use plansync::config::{Env, GoogleSettings};
use plansync::google::{GoogleClient, GoogleError, ListQuery, TokenError};
use plansync::ids::{CalendarId, Subject};
use plansync_fake_google::{FakeGoogle, FakeGoogleOptions, Operation, RecordedRequest};
use serde_json::{json, Value};

use crate::harness::{eventually, run_command, stderr, stdout, SyncApp};

const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

const CLIENT_EMAIL: &str = "plansync-sync@clinic-project.iam.gserviceaccount.com";

const ALICE: &str = "alice@clinic.example";

const BOB: &str = "bob@clinic.example";

const CAROL: &str = "carol@clinic.example";

/// An RSA key pair made by the `openssl` command line: (private PKCS#8 PEM,
/// public SPKI PEM).
fn key_pair(dir: &Path, name: &str) -> (String, String) {
    let private = dir.join(format!("{name}.pem"));
    let out = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ])
        .arg("-out")
        .arg(&private)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = std::process::Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&private)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        std::fs::read_to_string(&private).unwrap(),
        String::from_utf8(out.stdout).unwrap(),
    )
}

/// The lines of a PEM between its armour: what must never leak.
fn key_material(pem: &str) -> Vec<String> {
    pem.lines()
        .filter(|l| !l.starts_with("-----") && l.len() > 20)
        .map(str::to_owned)
        .collect()
}

/// A clinic on Google Workspace: members' calendars in the emulator, a
/// service account the administrator allowed to act as `allowed`, and its
/// key file.
struct Clinic {
    sync: SyncApp,
    dir: tempfile::TempDir,
    key_file: PathBuf,
    private_pem: String,
}

impl Clinic {
    async fn start(allowed: &[&str]) -> Clinic {
        Clinic::start_with(allowed, Duration::from_secs(3599), false).await
    }

    /// `foreign_key`: the key file holds another key than the one the
    /// emulator knows (a JWT signed with the wrong key).
    async fn start_with(allowed: &[&str], ttl: Duration, foreign_key: bool) -> Clinic {
        let dir = tempfile::tempdir().unwrap();
        let fixtures = dir.path().join("fixtures");
        std::fs::create_dir(&fixtures).unwrap();
        let (private_pem, public_pem) = key_pair(dir.path(), "service-account");
        let signing_pem = if foreign_key {
            key_pair(dir.path(), "other").0
        } else {
            private_pem.clone()
        };
        let oauth = json!({
            "client_id": "clinic-oauth-client.apps.googleusercontent.com",
            "client_secret": "GOCSPX-clinic-test",
            "refresh_tokens": ["1//0clinic-refresh-token"],
            "service_accounts": [{
                "client_email": CLIENT_EMAIL,
                "public_key_pem": public_pem,
                "subjects": allowed,
            }],
        });
        std::fs::write(fixtures.join("oauth.json"), oauth.to_string()).unwrap();
        let tomorrow = Utc::now() + Days::days(1);
        for (member, titles) in [
            (ALICE, &["Ward round", "Team meeting"][..]),
            (BOB, &["Home visit"][..]),
            (CAROL, &["Training"][..]),
        ] {
            let items: Vec<Value> = titles
                .iter()
                .enumerate()
                .map(|(i, title)| {
                    let start = tomorrow + Days::hours(i as i64 * 2);
                    json!({
                        "id": format!("evt{}{i}", &member[..3]),
                        "summary": title,
                        "start": {"dateTime": start.to_rfc3339()},
                        "end": {"dateTime": (start + Days::hours(1)).to_rfc3339()},
                    })
                })
                .collect();
            let calendar = json!({"summary": member, "timeZone": "Europe/Berlin", "items": items});
            std::fs::write(
                fixtures.join(format!("{member}.json")),
                calendar.to_string(),
            )
            .unwrap();
        }
        let sync = SyncApp::with_options(FakeGoogleOptions {
            fixtures: Some(fixtures),
            access_token_ttl: ttl,
            ..FakeGoogleOptions::default()
        })
        .await;
        // Google's key file format, pointing at the emulator's token endpoint.
        let key = json!({
            "type": "service_account",
            "project_id": "clinic-project",
            "private_key_id": "0f1e2d3c4b5a69788796a5b4c3d2e1f0a9b8c7d6",
            "private_key": signing_pem,
            "client_email": CLIENT_EMAIL,
            "client_id": "104250021387766554433",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": sync.google.token_url(),
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/plansync-sync",
            "universe_domain": "googleapis.com",
        });
        let key_file = dir.path().join("service-account.json");
        std::fs::write(&key_file, key.to_string()).unwrap();
        Clinic {
            sync,
            dir,
            key_file,
            private_pem,
        }
    }

    /// The binary with the key file and without the OAuth client: a
    /// deployment that only has delegated connections needs no
    /// `GOOGLE_CLIENT_ID`/`GOOGLE_CLIENT_SECRET`.
    fn command(&self) -> tokio::process::Command {
        let mut cmd = self.sync.command();
        cmd.env("GOOGLE_SERVICE_ACCOUNT_KEY", &self.key_file)
            .env_remove("GOOGLE_CLIENT_ID")
            .env_remove("GOOGLE_CLIENT_SECRET")
            // Delegated tokens come from the key file's `token_uri`, never
            // from here: a closed port proves it.
            .env("GOOGLE_TOKEN_URL", "http://127.0.0.1:9/token");
        cmd
    }

    async fn run(&self, args: &[&str], stdin: &str) -> Output {
        run_command(self.command(), args, stdin).await
    }

    /// `run --once` with debug logs asked for everywhere (yup-oauth2's must
    /// stay capped); returns its stderr.
    async fn run_once(&self) -> String {
        let mut cmd = self.command();
        cmd.env("RUST_LOG", "debug");
        let out = run_command(cmd, &["run", "--once"], "").await;
        assert!(out.status.success(), "run --once failed: {}", stderr(&out));
        stderr(&out)
    }

    /// `connect --impersonate`, with stdin left closed (it must not be read).
    async fn connect_as(&self, user: i64, member: &str) -> i64 {
        sqlx::query("INSERT INTO users (id) VALUES ($1) ON CONFLICT (id) DO NOTHING")
            .bind(user)
            .execute(&self.sync.app.pool)
            .await
            .unwrap();
        let user = user.to_string();
        let args = [
            "connect",
            "--user",
            &user,
            "--calendar",
            member,
            "--impersonate",
            member,
            "--push-target",
        ];
        let mut cmd = self.command();
        // Not even the token key: a delegated connection stores no secret.
        cmd.env_remove("PLANSYNC_TOKEN_KEY");
        let out = run_command(cmd, &args, "").await;
        assert!(out.status.success(), "connect failed: {}", stderr(&out));
        stdout(&out).trim().parse().expect("connect prints the id")
    }

    async fn status(&self) -> Value {
        let out = self.run(&["status", "--json"], "").await;
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn grants(&self) -> Vec<RecordedRequest> {
        self.sync
            .google
            .requests()
            .into_iter()
            .filter(|r| r.operation == Operation::Token)
            .collect()
    }

    async fn appointments(&self, user: i64) -> Vec<String> {
        sqlx::query_scalar("SELECT summary FROM appointments WHERE user_id = $1 ORDER BY summary")
            .bind(user)
            .fetch_all(&self.sync.app.pool)
            .await
            .unwrap()
    }

    /// Asserts that none of `texts` contains the private key or a signed
    /// assertion.
    fn assert_no_secrets(&self, texts: &[&str]) {
        let material = key_material(&self.private_pem);
        assert!(material.len() > 10);
        for text in texts {
            for line in &material {
                assert!(!text.contains(line.as_str()), "private key material leaked");
            }
            assert!(!text.contains("PRIVATE KEY"), "private key leaked");
            // base64url of {"alg":"RS256","typ":"JWT"}: a signed assertion.
            assert!(
                !text.contains("eyJhbGciOiJSUzI1NiIs"),
                "an assertion leaked"
            );
        }
    }
}

fn connection(status: &Value, id: i64) -> &Value {
    status["connections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .expect("connection in status")
}

/// Whether an API request addressed `member`'s calendar (ids with `@` may
/// arrive percent-encoded or not).
fn on_calendar_of(request: &RecordedRequest, member: &str) -> bool {
    request
        .path
        .replace("%40", "@")
        .starts_with(&format!("/calendar/v3/calendars/{member}/"))
}
