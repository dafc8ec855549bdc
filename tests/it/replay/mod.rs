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

mod cli;
mod committed;
mod sessions;

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
