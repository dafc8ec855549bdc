//! Workspace domain-wide delegation end to end: a service-account key
//! generated for the test (`openssl`), the emulator holding its public key,
//! connections made with `connect --impersonate`, the real binary's
//! `run --once`, and the emulator's log of JWT grants.

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

#[tokio::test]
async fn a_delegated_connection_imports_and_pushes_with_grants_for_its_member_only() {
    let clinic = Clinic::start(&[ALICE, BOB]).await;
    let id = clinic.connect_as(1, ALICE).await;

    let first = clinic.run_once().await;
    assert_eq!(clinic.appointments(1).await, ["Team meeting", "Ward round"]);

    let start = Utc::now() + Days::days(3);
    sqlx::query(
        "INSERT INTO appointments (user_id, summary, start_at, end_at) VALUES (1, 'Case review', $1, $2)",
    )
    .bind(start)
    .bind(start + Days::hours(1))
    .execute(&clinic.sync.app.pool)
    .await
    .unwrap();
    let second = clinic.run_once().await;
    let event_id: String =
        sqlx::query_scalar("SELECT l.event_id FROM plansync.links l JOIN appointments a ON a.id = l.appointment_id WHERE a.summary = 'Case review'")
            .fetch_one(&clinic.sync.app.pool)
            .await
            .unwrap();
    let pushed = clinic.sync.google.get_event(ALICE, &event_id).unwrap();
    assert_eq!(pushed["summary"], "Case review");

    let grants = clinic.grants();
    assert!(!grants.is_empty());
    for grant in &grants {
        let body = grant.body.as_ref().unwrap();
        assert_eq!(body["grant_type"], JWT_BEARER, "only JWT grants");
        assert_eq!(body["assertion"], "[REDACTED]");
        assert_eq!(grant.subject.as_deref(), Some(ALICE));
        assert_eq!(grant.status, Some(200));
    }
    let api: Vec<_> = clinic
        .sync
        .google
        .requests()
        .into_iter()
        .filter(|r| r.operation != Operation::Token)
        .collect();
    assert!(api.iter().any(|r| r.operation == Operation::Insert));
    for request in &api {
        assert_eq!(request.subject.as_deref(), Some(ALICE), "{request:?}");
        assert_ne!(request.status, Some(401), "{request:?}");
        assert!(on_calendar_of(request, ALICE), "{}", request.path);
    }

    let status = clinic.status().await;
    let c = connection(&status, id);
    assert_eq!(c["auth"], "delegated");
    assert_eq!(c["subject"], ALICE);
    assert_eq!(c["needsReauth"], false);
    let text = clinic.run(&["status"], "").await;
    let text = stdout(&text);
    assert!(
        text.contains("AUTH") && text.contains(&format!("delegated as {ALICE}")),
        "{text}"
    );

    let dump = std::process::Command::new("pg_dump")
        .arg("--dbname")
        .arg(&clinic.sync.app.database_url)
        .output()
        .expect("pg_dump runs");
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let dump = String::from_utf8_lossy(&dump.stdout).into_owned();
    assert!(dump.contains(ALICE), "the dump holds the connection");
    let status_text = status.to_string();
    let google_log = serde_json::to_string(&clinic.sync.google.requests()).unwrap();
    clinic.assert_no_secrets(&[&first, &second, &dump, &status_text, &text, &google_log]);
    drop(clinic.dir);
}

#[tokio::test]
async fn members_get_their_own_tokens_and_a_refused_member_needs_reauth_until_allowed() {
    let clinic = Clinic::start(&[ALICE, BOB]).await;
    let alice = clinic.connect_as(1, ALICE).await;
    let bob = clinic.connect_as(2, BOB).await;
    let carol = clinic.connect_as(3, CAROL).await;
    let log = clinic.run_once().await;

    assert_eq!(clinic.appointments(1).await, ["Team meeting", "Ward round"]);
    assert_eq!(clinic.appointments(2).await, ["Home visit"]);
    assert!(clinic.appointments(3).await.is_empty());

    // One key file, a grant and a token per member: each calendar was read
    // with its own member's token only.
    for member in [ALICE, BOB] {
        let ok = clinic
            .grants()
            .iter()
            .filter(|g| g.subject.as_deref() == Some(member) && g.status == Some(200))
            .count();
        assert!(ok >= 1, "{member} got a token");
        let calls: Vec<_> = clinic
            .sync
            .google
            .requests()
            .into_iter()
            .filter(|r| on_calendar_of(r, member))
            .collect();
        assert!(!calls.is_empty());
        assert!(calls.iter().all(|r| r.subject.as_deref() == Some(member)));
    }
    let refused: Vec<_> = clinic
        .grants()
        .into_iter()
        .filter(|g| g.subject.as_deref() == Some(CAROL))
        .collect();
    assert!(!refused.is_empty());
    assert!(refused.iter().all(|g| g.status == Some(401)));

    let status = clinic.status().await;
    for (id, needs_reauth) in [(alice, false), (bob, false), (carol, true)] {
        assert_eq!(connection(&status, id)["needsReauth"], needs_reauth, "{id}");
    }
    let reason = connection(&status, carol)["lastError"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(reason.contains("unauthorized_client"), "{reason}");
    assert!(reason.contains(CAROL), "{reason}");

    // The administrator grants it; re-connecting repairs the connection.
    clinic.sync.google.allow_subject(CAROL);
    assert_eq!(clinic.connect_as(3, CAROL).await, carol);
    let log2 = clinic.run_once().await;
    assert_eq!(clinic.appointments(3).await, ["Training"]);
    let status = clinic.status().await;
    let c = connection(&status, carol);
    assert_eq!(c["needsReauth"], false);
    assert_eq!(c["lastError"], Value::Null);
    let status_text = status.to_string();
    clinic.assert_no_secrets(&[&log, &log2, &status_text]);
}

#[tokio::test]
async fn withdrawing_delegation_mid_way_marks_the_connection_and_reconnecting_switches_auth() {
    let clinic = Clinic::start(&[ALICE]).await;
    let id = clinic.connect_as(1, ALICE).await;
    clinic.run_once().await;
    clinic.sync.google.disallow_subject(ALICE);
    let out = clinic
        .run(&["resync", "--user", "1", "--calendar", ALICE], "")
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    clinic.run_once().await;
    let status = clinic.status().await;
    assert_eq!(connection(&status, id)["needsReauth"], true);

    // Re-connecting with a refresh token (no --impersonate) switches the
    // connection back to per-user consent.
    let token = clinic.sync.google.refresh_tokens()[0].clone();
    let out = clinic
        .sync
        .run(
            &["connect", "--user", "1", "--calendar", ALICE],
            &format!("{token}\n"),
        )
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), id.to_string());
    let status = clinic.status().await;
    let c = connection(&status, id);
    assert_eq!(
        (c["auth"].as_str(), &c["subject"]),
        (Some("refresh_token"), &Value::Null)
    );
    assert_eq!(c["needsReauth"], false);
    clinic.sync.google.clear_requests();
    // Refresh-token connections need the OAuth client: without it `run`
    // refuses to start, naming it.
    let out = clinic.run(&["run", "--once"], "").await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("GOOGLE_CLIENT_ID"),
        "{}",
        stderr(&out)
    );
    let mut cmd = clinic.sync.command();
    cmd.env("GOOGLE_SERVICE_ACCOUNT_KEY", &clinic.key_file);
    let out = run_command(cmd, &["run", "--once"], "").await;
    assert!(out.status.success(), "{}", stderr(&out));
    let grants = clinic.grants();
    assert!(!grants.is_empty());
    assert!(grants
        .iter()
        .all(|g| g.body.as_ref().unwrap()["grant_type"] == "refresh_token" && g.subject.is_none()));
}

#[tokio::test]
async fn run_refuses_to_start_without_a_usable_key_file_while_delegated_connections_exist() {
    let clinic = Clinic::start(&[ALICE]).await;
    clinic.connect_as(1, ALICE).await;
    let mut cmd = clinic.command();
    cmd.env_remove("GOOGLE_SERVICE_ACCOUNT_KEY");
    let out = run_command(cmd, &["run", "--once"], "").await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("GOOGLE_SERVICE_ACCOUNT_KEY is not set"),
        "{}",
        stderr(&out)
    );

    for (name, content) in [("missing.json", None), ("huge.json", Some(&*" ".repeat(100_000))), ("broken.json", Some("{\"type\": 1")), ("nokey.json", Some("{\"private_key\": \"-----BEGIN PRIVATE KEY-----\\nAAAA\\n-----END PRIVATE KEY-----\\n\", \"client_email\": \"x@y\", \"token_uri\": \"http://127.0.0.1:9/token\"}"))] {
        let path = clinic.dir.path().join(name);
        if let Some(content) = content {
            std::fs::write(&path, content).unwrap();
        }
        let mut cmd = clinic.command();
        cmd.env("GOOGLE_SERVICE_ACCOUNT_KEY", &path);
        let out = run_command(cmd, &["run", "--once"], "").await;
        assert!(!out.status.success(), "{name}");
        let err = stderr(&out);
        assert!(err.contains("GOOGLE_SERVICE_ACCOUNT_KEY"), "{name}: {err}");
        assert!(err.contains(name), "{name}: {err}");
    }
    assert!(clinic.grants().is_empty(), "no job ran");

    // Not an address: a usage error, nothing registered.
    let out = clinic
        .run(
            &[
                "connect",
                "--user",
                "1",
                "--calendar",
                "primary",
                "--impersonate",
                "alice",
            ],
            "",
        )
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not an e-mail address"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn a_jwt_signed_with_the_wrong_key_is_refused() {
    let clinic = Clinic::start_with(&[ALICE], Duration::from_secs(3599), true).await;
    let id = clinic.connect_as(1, ALICE).await;
    clinic.run_once().await;
    let grants = clinic.grants();
    assert!(!grants.is_empty());
    assert!(grants.iter().all(|g| g.status == Some(400)));
    assert!(clinic.appointments(1).await.is_empty());
    let status = clinic.status().await;
    let c = connection(&status, id);
    assert_eq!(c["needsReauth"], true);
    let reason = c["lastError"].as_str().unwrap();
    assert!(reason.contains("Invalid JWT Signature"), "{reason}");
}

/// In-process: a provider over a key file, against the emulator.
async fn client_for(clinic: &Clinic) -> GoogleClient {
    let settings = GoogleSettings::from_env(&Env::from_pairs([(
        "GOOGLE_CALENDAR_BASE_URL",
        clinic.sync.google.base_url(),
    )]))
    .unwrap();
    GoogleClient::new(&settings)
        .unwrap()
        .with_service_account(&clinic.key_file)
        .await
        .expect("the key file loads")
}

#[tokio::test]
async fn a_token_near_expiry_is_refreshed_before_a_call_fails() {
    // Tokens live two seconds: ours refreshes one second before that.
    let clinic = Clinic::start_with(&[ALICE], Duration::from_secs(2), false).await;
    let google = client_for(&clinic).await;
    let provider = google.delegated_provider("1", &Subject::new(ALICE));
    let client = google.calendar_client_with(provider);
    let calendar = CalendarId::new(ALICE);
    let query = ListQuery::full(Utc::now() - Days::days(1));
    eventually(Duration::from_secs(20), "a second grant", || async {
        let page = client
            .list_page(&calendar, &query)
            .await
            .expect("no call fails");
        assert!(!page.events.is_empty());
        (clinic.grants().len() >= 2).then_some(())
    })
    .await;
    let requests = clinic.sync.google.requests();
    assert!(
        requests.iter().all(|r| r.status == Some(200)),
        "{requests:?}"
    );
}

/// A token endpoint answering `expires_in` values yup-oauth2 cannot add to
/// the clock.
async fn absurd_token_endpoint(expires_in: Value) -> String {
    let app = axum::Router::new().route(
        "/token",
        axum::routing::post(move || {
            let body = json!({"access_token": "ya29.absurd", "token_type": "Bearer", "expires_in": expires_in});
            async move { axum::Json(body) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/token")
}

#[tokio::test]
async fn an_absurd_expires_in_is_a_token_error_never_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let (private_pem, _) = key_pair(dir.path(), "key");
    for (expires_in, expect_ok) in [
        (json!(i64::MAX), false),
        (json!(i64::MIN), false),
        (json!(-30), false),
        (json!(0), false),
        (json!(10_000_000_000i64), true),
    ] {
        let token_uri = absurd_token_endpoint(expires_in.clone()).await;
        let key_file = dir.path().join("key.json");
        let key = json!({
            "type": "service_account",
            "private_key": private_pem,
            "client_email": CLIENT_EMAIL,
            "token_uri": token_uri,
        });
        std::fs::write(&key_file, key.to_string()).unwrap();
        let settings = GoogleSettings::from_env(&Env::default()).unwrap();
        let google = GoogleClient::new(&settings)
            .unwrap()
            .with_service_account(&key_file)
            .await
            .unwrap();
        let provider = google.delegated_provider("1", &Subject::new(ALICE));
        let result = provider.access_token().await;
        if expect_ok {
            // Representable but absurd: used, yet never trusted beyond an hour.
            assert_eq!(result.unwrap().expose_secret(), "ya29.absurd");
        } else {
            let err = result.expect_err("an absurd answer is refused");
            assert!(
                matches!(err, TokenError::Malformed { .. }),
                "{expires_in}: {err:?}"
            );
            assert!(matches!(
                GoogleError::from(err),
                GoogleError::Malformed { .. }
            ));
        }
    }
}

#[tokio::test]
async fn fixture_service_accounts_are_checked_and_admin_routes_toggle_delegation() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("oauth.json"),
        json!({"client_id": "c", "client_secret": "s", "service_accounts": [{
            "client_email": CLIENT_EMAIL, "public_key_pem": "not a key", "subjects": []}]})
        .to_string(),
    )
    .unwrap();
    let err = FakeGoogle::start(FakeGoogleOptions {
        fixtures: Some(dir.path().to_owned()),
        ..FakeGoogleOptions::default()
    })
    .await
    .err()
    .expect("a bad public key is refused");
    assert!(err.to_string().contains("public_key_pem"), "{err}");

    let clinic = Clinic::start(&[]).await;
    let http = reqwest_like_post(
        &format!("{}delegation", clinic.sync.google.admin_url()),
        json!({"subject": ALICE, "allowed": true}),
    )
    .await;
    assert_eq!(http, 200);
    let google = client_for(&clinic).await;
    let provider = google.delegated_provider("1", &Subject::new(ALICE));
    provider
        .access_token()
        .await
        .expect("allowed through the admin route");
    let http = reqwest_like_post(
        &format!("{}delegation", clinic.sync.google.admin_url()),
        json!({"subject": ALICE, "allowed": false}),
    )
    .await;
    assert_eq!(http, 200);
    provider.invalidate().await;
    let err = provider.access_token().await.unwrap_err();
    assert!(
        matches!(&err, TokenError::DelegationRefused { error, .. } if error == "unauthorized_client"),
        "{err:?}"
    );
    let unknown = reqwest_like_post(
        &format!("{}delegation", clinic.sync.google.admin_url()),
        json!({"subject": ALICE, "allowed": true, "client_email": "nobody@x.iam.gserviceaccount.com"}),
    )
    .await;
    assert_eq!(unknown, 400);
}

/// POSTs JSON with hyper and returns the status.
async fn reqwest_like_post(url: &str, body: Value) -> u16 {
    use http_body_util::Full;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<bytes::Bytes>>();
    let request = http::Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(bytes::Bytes::from(body.to_string())))
        .unwrap();
    client.request(request).await.unwrap().status().as_u16()
}
