//! Recorded sessions: the real binary recorded through `Recorder` in front of
//! the emulator (standing in for Google), then replayed by `Replayer` against
//! a fresh database. Checks that a replay gives the recorded run's
//! appointments, links and deltas, that recordings hold no secret (and, with
//! scrubbing, no summary or address), that the committed recordings under
//! fixtures/recordings/ replay exactly, and that an unexpected request fails
//! the test naming it and the next unused exchange.
//!
//! The committed recordings are made by the ignored test
//! `regenerate_committed_recordings` (fixtures/README.md, "Recordings").

use std::path::{Path, PathBuf};
use std::process::Output;

use chrono::{DateTime, Utc};
use plansync_fake_google::{
    FakeGoogleOptions, Fault, Lost, Operation, Recorder, RecorderOptions, ReplayStatus,
};
use serde_json::{json, Value};

use crate::harness::{run_command, stderr, ReplayApp, SyncApp, REPLAYABLE_ENV};

const USER: i64 = 1;
/// The event-id salt pinned while recording the push session.
const SALT: &str = "0123456789abcdef";
const PULL: &str = "pull-pages-edits-410";
const PUSH: &str = "push-lost-insert-412";

/// Personal-looking data the pull session's events carry, which a scrubbed
/// recording must not contain.
const PERSONAL: [&str; 6] = [
    "Therapy with Dr. Jane Roe",
    "jane.roe@clinic.example",
    "Jane Roe",
    "12 Harley Street",
    "Dinner with Max Mustermann",
    "max.mustermann@mail.example",
];

fn committed(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/recordings")
        .join(name)
}

/// The worker, pointed at a recorder in front of the emulator.
struct Recording {
    sync: SyncApp,
    recorder: Recorder,
}

impl Recording {
    async fn start(options: FakeGoogleOptions, dir: &Path, scrub: bool) -> Recording {
        let sync = SyncApp::with_options(options).await;
        let mut options =
            RecorderOptions::new(dir, &sync.google.base_url(), &sync.google.token_url());
        options.scrub = scrub;
        let recorder = Recorder::start(options).await.expect("the recorder starts");
        Recording { sync, recorder }
    }

    async fn run(&self, args: &[&str]) -> Output {
        let mut cmd = self.sync.command();
        cmd.env("GOOGLE_CALENDAR_BASE_URL", self.recorder.base_url())
            .env("GOOGLE_TOKEN_URL", self.recorder.token_url())
            .envs(REPLAYABLE_ENV);
        let out = run_command(cmd, args, "").await;
        assert!(out.status.success(), "plansync {args:?}: {}", stderr(&out));
        out
    }

    /// Every file of the recording, as one text.
    fn files(dir: &Path) -> String {
        let mut out = String::new();
        let mut paths: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        paths.sort();
        for path in paths {
            out.push_str(&std::fs::read_to_string(path).unwrap());
        }
        out
    }
}

/// What a session leaves in the database, without local clock stamps.
#[derive(Debug, PartialEq)]
struct Snapshot {
    appointments: Vec<Appointment>,
    links: Vec<Link>,
    /// (user, version, delta without createdAt/updatedAt).
    deltas: Vec<(i64, i64, Value)>,
    /// (winner, kind, losing summary).
    conflicts: Vec<(String, String, Option<String>)>,
    plan_version: i64,
}

/// (appointment, event id, etag, Google's `updated`).
type Link = (i64, String, Option<String>, Option<DateTime<Utc>>);

#[derive(Debug, PartialEq, sqlx::FromRow)]
struct Appointment {
    id: i64,
    user_id: i64,
    summary: String,
    description: Option<String>,
    location: Option<String>,
    start_at: DateTime<Utc>,
    end_at: DateTime<Utc>,
    start_time_zone: Option<String>,
    all_day: bool,
}

async fn snapshot(pool: &sqlx::PgPool) -> Snapshot {
    let appointments = sqlx::query_as(
        "SELECT id, user_id, summary, description, location, start_at, end_at, \
                start_time_zone, all_day FROM appointments ORDER BY id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let links = sqlx::query_as(
        "SELECT appointment_id, event_id, etag, remote_updated_at FROM plansync.links \
         ORDER BY appointment_id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let deltas: Vec<(i64, i64, Value)> =
        sqlx::query_as("SELECT user_id, version, delta::jsonb FROM plansync.outbox ORDER BY id")
            .fetch_all(pool)
            .await
            .unwrap();
    let deltas = deltas
        .into_iter()
        .map(|(user, version, mut delta)| {
            if let Some(a) = delta
                .pointer_mut("/data/appointment")
                .and_then(Value::as_object_mut)
            {
                // Local clock stamps of the run, not of the session.
                a.remove("createdAt");
                a.remove("updatedAt");
            }
            (user, version, delta)
        })
        .collect();
    let conflicts = sqlx::query_as(
        "SELECT winner, kind, losing_values->>'summary' FROM plansync.conflicts ORDER BY id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let plan_version = sqlx::query_scalar("SELECT plan_version FROM users WHERE id = $1")
        .bind(USER)
        .fetch_optional(pool)
        .await
        .unwrap()
        .unwrap_or(0);
    Snapshot {
        appointments,
        links,
        deltas,
        conflicts,
        plan_version,
    }
}

fn event(id: &str, summary: &str, day: u32, extra: Value) -> Value {
    let mut event = json!({
        "id": id,
        "summary": summary,
        "start": {"dateTime": format!("2027-01-{day:02}T09:00:00Z")},
        "end": {"dateTime": format!("2027-01-{day:02}T10:00:00Z")},
    });
    if let (Some(e), Value::Object(extra)) = (event.as_object_mut(), extra) {
        e.extend(extra);
    }
    event
}

/// Session 1: a first full sync over three pages (page cap 2, five events),
/// an incremental pull with an edit, a creation and a deletion, then a 410
/// and the full resync it forces.
async fn record_pull(dir: &Path, scrub: bool) -> (Recording, Snapshot) {
    let rec = Recording::start(
        FakeGoogleOptions {
            page_cap: Some(2),
            ..FakeGoogleOptions::default()
        },
        dir,
        scrub,
    )
    .await;
    let google = &rec.sync.google;
    let events = [
        event(
            "event00001",
            PERSONAL[0],
            4,
            json!({"location": PERSONAL[3], "description": "bring the referral",
                   "attendees": [{"email": PERSONAL[1], "displayName": PERSONAL[2]}]}),
        ),
        event("event00002", "Dentist", 5, json!({})),
        event("event00003", "Team lunch", 6, json!({})),
        event(
            "event00004",
            PERSONAL[4],
            7,
            json!({"attendees": [{"email": PERSONAL[5]}]}),
        ),
        event("event00005", "Gym", 8, json!({})),
    ];
    for e in events {
        google.create_event("primary", e).unwrap();
    }
    rec.sync.connect(USER, "primary", &[]).await;
    rec.run(&["run", "--once"]).await;

    google
        .patch_event(
            "primary",
            "event00002",
            json!({"summary": "Dentist (moved)", "start": {"dateTime": "2027-01-05T11:00:00Z"},
                   "end": {"dateTime": "2027-01-05T12:00:00Z"}}),
        )
        .unwrap();
    google
        .create_event("primary", event("event00006", "Haircut", 9, json!({})))
        .unwrap();
    google.delete_event("primary", "event00003").unwrap();
    rec.run(&["resync", "--user", "1"]).await;
    rec.run(&["run", "--once"]).await;

    google.invalidate_sync_tokens("primary").unwrap();
    rec.run(&["resync", "--user", "1"]).await;
    rec.run(&["run", "--once"]).await;
    let snap = snapshot(&rec.sync.app.pool).await;
    (rec, snap)
}

async fn replay_pull(app: &ReplayApp) {
    app.connect(USER, "primary").await;
    app.run(&["run", "--once"]).await;
    app.run(&["resync", "--user", "1"]).await;
    app.run(&["run", "--once"]).await;
    app.run(&["resync", "--user", "1"]).await;
    app.run(&["run", "--once"]).await;
}

async fn host_insert(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar(
        "INSERT INTO appointments (user_id, summary, description, start_at, end_at, \
             start_time_zone, end_time_zone) \
         VALUES ($1, 'Dentist', 'bring the card', '2027-01-10T15:00:00Z', \
                 '2027-01-10T16:00:00Z', 'Europe/Berlin', 'Europe/Berlin') RETURNING id",
    )
    .bind(USER)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// The host's edit, stamped long before Google's: Google's edit is newer at
/// recording time and at any later replay.
async fn host_edit(pool: &sqlx::PgPool, id: i64) {
    sqlx::query(
        "UPDATE appointments SET summary = 'Dentist (local)', \
             updated_at = '2026-01-01T00:00:00Z' WHERE id = $1",
    )
    .bind(id)
    .execute(pool)
    .await
    .unwrap();
}

/// Session 2: a push of a new appointment whose insert answer is lost, the
/// retry's 409 and its adoption, then a 412 on an edit and newer-wins (Google
/// newer: the appointment takes Google's values).
async fn record_push(dir: &Path) -> (Recording, Snapshot) {
    let rec = Recording::start(FakeGoogleOptions::default(), dir, false).await;
    let pool = &rec.sync.app.pool;
    rec.sync.connect(USER, "primary", &[]).await;
    sqlx::query("UPDATE plansync.deployment SET event_id_salt = $1")
        .bind(SALT)
        .execute(pool)
        .await
        .unwrap();
    rec.run(&["run", "--once"]).await;

    let id = host_insert(pool).await;
    rec.sync.google.inject_fault(
        Operation::Insert,
        Fault::LoseResponse { then: Lost::Drop },
        1,
    );
    rec.run(&["run", "--once"]).await;
    let (event_id, etag): (String, Option<String>) =
        sqlx::query_as("SELECT event_id, etag FROM plansync.links WHERE appointment_id = $1")
            .bind(id)
            .fetch_one(pool)
            .await
            .unwrap();
    assert!(etag.is_some(), "the insert was adopted in the pass");

    rec.sync
        .google
        .patch_event("primary", &event_id, json!({"summary": "Dentist (remote)"}))
        .unwrap();
    host_edit(pool, id).await;
    rec.run(&["run", "--once"]).await;
    let snap = snapshot(pool).await;
    (rec, snap)
}

async fn replay_push(app: &ReplayApp) {
    app.connect(USER, "primary").await;
    app.run(&["run", "--once"]).await;
    let id = host_insert(&app.app.pool).await;
    app.run(&["run", "--once"]).await;
    host_edit(&app.app.pool, id).await;
    app.run(&["run", "--once"]).await;
}

/// The secrets a recording of `rec` must not hold.
fn assert_no_secrets(rec: &Recording, files: &str) {
    let mut secrets = rec.sync.google.refresh_tokens();
    secrets.push(rec.sync.google.client_secret());
    for secret in &secrets {
        assert!(
            !files.contains(secret.as_str()),
            "{secret} is in the recording"
        );
    }
    // Every access token the emulator issues starts so; none may be kept.
    assert!(
        !files.contains("ya29."),
        "an access token is in the recording"
    );
    assert!(
        files.contains("REDACTED-access_token"),
        "tokens were exchanged"
    );
    assert!(files.contains("REDACTED-refresh_token"));
    assert!(
        !files.to_lowercase().contains("authorization"),
        "no Authorization header"
    );
}

#[tokio::test]
async fn a_recorded_pull_replays_to_the_same_appointments_links_and_deltas() {
    let dir = tempfile::tempdir().unwrap();
    let (rec, recorded) = record_pull(dir.path(), false).await;
    assert_no_secrets(&rec, &Recording::files(dir.path()));
    assert_eq!(recorded.appointments.len(), 5, "{recorded:#?}");
    assert_eq!(recorded.deltas.len(), 8, "{recorded:#?}");

    let app = ReplayApp::start(dir.path()).await;
    replay_pull(&app).await;
    assert_eq!(snapshot(&app.app.pool).await, recorded);
    app.assert_consumed();
}

#[tokio::test]
async fn a_recorded_push_replays_to_the_same_appointments_and_deltas_under_renamed_ids() {
    let dir = tempfile::tempdir().unwrap();
    let (rec, recorded) = record_push(dir.path()).await;
    assert_no_secrets(&rec, &Recording::files(dir.path()));

    // The replaying database keeps its own salt: the ids it sends differ
    // from the recorded ones and are matched by renaming.
    let app = ReplayApp::start(dir.path()).await;
    replay_push(&app).await;
    let mut replayed = snapshot(&app.app.pool).await;
    let mut expected = recorded;
    assert_ne!(replayed.links[0].1, expected.links[0].1, "different salts");
    for snap in [&mut replayed, &mut expected] {
        for link in snap.links.iter_mut() {
            link.1 = String::new();
        }
        for (_, _, delta) in snap.deltas.iter_mut() {
            if let Some(id) = delta.pointer_mut("/data/appointment/googleSync/eventId") {
                *id = Value::Null;
            }
        }
    }
    assert_eq!(replayed, expected);
    app.assert_consumed();
}

#[tokio::test]
async fn a_scrubbed_recording_holds_no_summary_or_address_and_still_replays() {
    let dir = tempfile::tempdir().unwrap();
    let (rec, recorded) = record_pull(dir.path(), true).await;
    let files = Recording::files(dir.path());
    assert_no_secrets(&rec, &files);
    for personal in PERSONAL.iter().chain(&[
        "Dentist",
        "Team lunch",
        "Gym",
        "Haircut",
        "bring the referral",
    ]) {
        assert!(
            !files.contains(personal),
            "{personal} is in the scrubbed recording"
        );
    }
    assert!(
        files.contains("person-1@example.invalid"),
        "addresses got pseudonyms"
    );

    // Same calls, same shape; the texts are the pseudonyms.
    let app = ReplayApp::start(dir.path()).await;
    replay_pull(&app).await;
    app.assert_consumed();
    let replayed = snapshot(&app.app.pool).await;
    assert_eq!(replayed.links, recorded.links);
    assert_eq!(replayed.appointments.len(), recorded.appointments.len());
    let summaries: Vec<&str> = replayed
        .appointments
        .iter()
        .map(|a| a.summary.as_str())
        .collect();
    assert!(
        summaries.iter().all(|s| s.starts_with("summary-")),
        "{summaries:?}"
    );
    // One pseudonym per text: the edited event's two summaries differ, the
    // others keep theirs across the three syncs.
    let distinct: std::collections::HashSet<_> = summaries.iter().collect();
    assert_eq!(distinct.len(), summaries.len());
}

#[tokio::test]
async fn the_committed_pull_recording_replays_exactly() {
    let app = ReplayApp::start(&committed(PULL)).await;
    replay_pull(&app).await;
    app.assert_consumed();
    let snap = snapshot(&app.app.pool).await;
    let summaries: Vec<&str> = snap
        .appointments
        .iter()
        .map(|a| a.summary.as_str())
        .collect();
    assert_eq!(
        summaries,
        [
            PERSONAL[0],
            "Dentist (moved)",
            PERSONAL[4],
            "Gym",
            "Haircut"
        ]
    );
    assert_eq!(
        snap.links.iter().map(|l| l.1.as_str()).collect::<Vec<_>>(),
        [
            "event00001",
            "event00002",
            "event00004",
            "event00005",
            "event00006"
        ]
    );
    // Five created by the first sync (one transaction per page), then the
    // edit, the deletion and the creation in Google's change order; the full
    // resync after the 410 changes nothing.
    let actions: Vec<(i64, &str, i64)> = snap
        .deltas
        .iter()
        .map(|(_, v, d)| {
            (
                *v,
                d["action"].as_str().unwrap(),
                d["entityId"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            (1, "created", 1),
            (2, "created", 2),
            (3, "created", 3),
            (4, "created", 4),
            (5, "created", 5),
            (6, "updated", 2),
            (7, "deleted", 3),
            (8, "created", 6),
        ]
    );
    assert_eq!(snap.plan_version, 8);
    assert_eq!(
        snap.deltas[5].2["data"]["appointment"]["startAt"],
        "2027-01-05T11:00:00.000Z"
    );
}

#[tokio::test]
async fn the_committed_push_recording_replays_exactly() {
    let app = ReplayApp::start(&committed(PUSH)).await;
    // Pinned as when recording: the ids match without renaming.
    sqlx::query("UPDATE plansync.deployment SET event_id_salt = $1")
        .bind(SALT)
        .execute(&app.app.pool)
        .await
        .unwrap();
    replay_push(&app).await;
    app.assert_consumed();
    let snap = snapshot(&app.app.pool).await;
    assert_eq!(snap.appointments.len(), 1);
    assert_eq!(snap.appointments[0].summary, "Dentist (remote)");
    assert_eq!(snap.links.len(), 1);
    assert_eq!(snap.links[0].1, format!("{SALT}g1h1i1"));
    assert!(snap.links[0].2.is_some());
    assert_eq!(
        snap.conflicts,
        [(
            "google".to_owned(),
            "edit".to_owned(),
            Some("Dentist (local)".to_owned())
        )]
    );
    assert_eq!(snap.deltas.len(), 1, "{:?}", snap.deltas);
    let (_, version, delta) = &snap.deltas[0];
    assert_eq!(*version, 1);
    assert_eq!(delta["action"], "updated");
    assert_eq!(delta["source"], "google");
    assert_eq!(delta["data"]["appointment"]["summary"], "Dentist (remote)");
    assert_eq!(snap.plan_version, 1);
}

#[tokio::test]
async fn no_committed_recording_holds_a_secret() {
    for name in [PULL, PUSH] {
        let files = Recording::files(&committed(name));
        assert!(!files.is_empty(), "{name} is committed");
        for exchange in files.split("\n{").filter(|f| f.contains("\"/token\"")) {
            assert!(exchange.contains("REDACTED-refresh_token"), "{exchange}");
            assert!(exchange.contains("REDACTED-client_secret"), "{exchange}");
            assert!(exchange.contains("REDACTED-access_token"), "{exchange}");
        }
        for marker in [
            "ya29.",
            "GOCSPX-",
            "1//0g",
            "authorization",
            "Authorization",
        ] {
            assert!(!files.contains(marker), "{marker} in {name}");
        }
    }
}

#[tokio::test]
async fn an_unexpected_request_fails_naming_it_and_the_next_unused_exchange() {
    let app = ReplayApp::start(&committed(PULL)).await;
    // Not the recorded session: the worker asks for another calendar.
    app.connect(USER, "other@group.calendar.google.com").await;
    app.run(&["run", "--once"]).await;

    let status: ReplayStatus = app.replay.status();
    assert!(!status.is_exact());
    let asked = &status.unmatched[0];
    assert!(
        asked
            .request
            .starts_with("GET /calendar/v3/calendars/other@group.calendar.google.com/events?"),
        "{asked:?}"
    );
    let next = asked.next_unused.as_deref().unwrap();
    assert!(
        next.starts_with("#0002 GET /calendar/v3/calendars/primary/events?"),
        "{next}"
    );

    // The same over HTTP, as the CLI server serves it.
    let body = raw_get(app.replay.addr(), "/_replay/status").await;
    let served: ReplayStatus = serde_json::from_str(&body).unwrap();
    assert_eq!(served.unmatched, status.unmatched);
    assert!(served.unused.len() > 10);

    // The answer to an unexpected request names it and the next unused
    // exchange.
    let (head, body) =
        raw_request(app.replay.addr(), "/calendar/v3/calendars/nope/events?x=1").await;
    assert!(head.starts_with("HTTP/1.1 500"), "{head}");
    let body: Value = serde_json::from_str(&body).unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("no recorded exchange matches GET /calendar/v3/calendars/nope/events?x=1")
            && message
                .contains("next unused exchange: #0002 GET /calendar/v3/calendars/primary/events?"),
        "{message}"
    );

    // What the test would have said.
    let failure = std::panic::catch_unwind(|| status.assert_consumed())
        .expect_err("an unexpected request fails the test");
    let message = failure
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(
        message.contains("unexpected request GET /calendar/v3/calendars/other@group")
            && message.contains(
                "(next unused exchange: #0002 GET /calendar/v3/calendars/primary/events?"
            ),
        "{message}"
    );
}

async fn raw_get(addr: std::net::SocketAddr, path: &str) -> String {
    let (head, body) = raw_request(addr, path).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body
}

/// (status line and headers, body) of a `GET path`.
async fn raw_request(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).await.unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.to_owned(), body.to_owned())
}

/// Rewrites fixtures/recordings/ (run once after a change of the worker's
/// calls: `cargo test --test it replay::regenerate_committed_recordings --
/// --ignored`), then commit the files.
#[tokio::test]
#[ignore = "writes fixtures/recordings/; run by hand"]
async fn regenerate_committed_recordings() {
    for name in [PULL, PUSH] {
        let dir = committed(name);
        if dir.exists() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_some_and(|e| e == "json") {
                    std::fs::remove_file(path).unwrap();
                }
            }
        }
    }
    record_pull(&committed(PULL), false).await;
    record_push(&committed(PUSH)).await;
}

/// `plansync fake-google ARGS` until it prints `listening on ADDR`; the rest
/// of its stderr is collected for [`stop_cli`].
async fn start_cli(
    args: &[&str],
) -> (
    tokio::process::Child,
    String,
    tokio::task::JoinHandle<String>,
) {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_plansync"))
        .arg("fake-google")
        .args(args)
        .env("NO_COLOR", "1")
        .env("PLANSYNC_LOG_FORMAT", "pretty")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(rest) = line.split("listening on ").nth(1) {
                return rest.split_whitespace().next().unwrap().to_owned();
            }
        }
        panic!("fake-google {args:?} exited before listening");
    })
    .await
    .expect("`listening on <addr>` on stderr");
    let rest = tokio::spawn(async move {
        let mut out = String::new();
        while let Ok(Some(line)) = lines.next_line().await {
            out.push_str(&line);
            out.push('\n');
        }
        out
    });
    (child, addr, rest)
}

/// SIGTERM, then (exit success, the rest of stderr).
async fn stop_cli(
    mut child: tokio::process::Child,
    rest: tokio::task::JoinHandle<String>,
) -> (bool, String) {
    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(std::time::Duration::from_secs(10), child.wait())
        .await
        .expect("exits on SIGTERM")
        .unwrap();
    (status.success(), rest.await.unwrap())
}

#[tokio::test]
async fn the_cli_records_a_scrubbed_session_and_replays_it() {
    let dir = tempfile::tempdir().unwrap();
    let recording = dir.path().join("session");
    let recording_arg = recording.to_str().unwrap();
    let sync = SyncApp::spawn().await;
    sync.google
        .create_event("primary", event("event00001", PERSONAL[0], 4, json!({})))
        .unwrap();
    let (child, addr, rest) = start_cli(&[
        "--addr",
        "127.0.0.1:0",
        "--record",
        recording_arg,
        "--upstream-api",
        &sync.google.base_url(),
        "--upstream-token",
        &sync.google.token_url(),
        "--scrub",
    ])
    .await;
    sync.connect(USER, "primary", &[]).await;
    let mut cmd = sync.command();
    cmd.env(
        "GOOGLE_CALENDAR_BASE_URL",
        format!("http://{addr}/calendar/v3/"),
    )
    .env("GOOGLE_TOKEN_URL", format!("http://{addr}/token"))
    .envs(REPLAYABLE_ENV);
    let out = run_command(cmd, &["run", "--once"], "").await;
    assert!(out.status.success(), "{}", stderr(&out));
    let (ok, _) = stop_cli(child, rest).await;
    assert!(ok);
    let files = Recording::files(&recording);
    assert!(!files.contains(PERSONAL[0]), "scrubbed");
    assert!(files.contains("summary-1"));
    assert!(!files.contains(&sync.google.refresh_tokens()[0]));
    assert!(!files.contains(&sync.google.client_secret()));

    // Replayed by the CLI for a fresh database: exact, reported on exit.
    let app = crate::harness::TestApp::spawn().await;
    let (child, addr, rest) =
        start_cli(&["--addr", "127.0.0.1:0", "--replay", recording_arg]).await;
    let mut cmd = app.command();
    cmd.env(
        "GOOGLE_CALENDAR_BASE_URL",
        format!("http://{addr}/calendar/v3/"),
    )
    .env("GOOGLE_TOKEN_URL", format!("http://{addr}/token"))
    .env("GOOGLE_CLIENT_ID", "replay-client")
    .env("GOOGLE_CLIENT_SECRET", "replay-secret")
    .envs(REPLAYABLE_ENV);
    app.add_user(USER).await;
    let out = run_command(
        app.command(),
        &["connect", "--user", "1", "--calendar", "primary"],
        "replay-refresh-token\n",
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run_command(cmd, &["run", "--once"], "").await;
    assert!(out.status.success(), "{}", stderr(&out));
    let summary: String = sqlx::query_scalar("SELECT summary FROM appointments")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(summary, "summary-1");
    let (ok, report) = stop_cli(child, rest).await;
    assert!(ok, "{report}");
    assert!(report.contains("2 of 2 exchanges used"), "{report}");
}
