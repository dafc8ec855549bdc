//! Pull sync against the emulator, one worker pass at a time (`run --once`,
//! in-process; through the binary where a test acts while the pass runs).

mod incremental;
mod local_edits;
mod mapping;

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use plansync_fake_google::{FakeGoogleOptions, Fault, Operation};
use serde_json::{json, Value};

use crate::harness::{stderr, SyncApp};

/// An RFC 3339 UTC time `days` from now at `hour`:00, so events stay inside
/// the lookback window whenever the suite runs.
pub(crate) fn at(days: i64, hour: u32) -> String {
    let day = (Utc::now() + Duration::days(days)).date_naive();
    day.and_hms_opt(hour, 0, 0)
        .unwrap()
        .and_utc()
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub(crate) fn timed(summary: &str, days: i64, hour: u32) -> Value {
    json!({
        "summary": summary,
        "start": {"dateTime": at(days, hour), "timeZone": "Europe/Berlin"},
        "end": {"dateTime": at(days, hour + 1), "timeZone": "Europe/Berlin"},
    })
}

fn create(app: &SyncApp, calendar: &str, event: Value) -> String {
    app.google.create_event(calendar, event).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// `resync --user` then `run --once`: one incremental pull, now.
async fn pull(app: &SyncApp, user: i64) {
    let out = app.run(&["resync", "--user", &user.to_string()], "").await;
    assert!(out.status.success(), "resync: {}", stderr(&out));
    app.run_once().await;
}

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
struct Row {
    id: i64,
    user_id: i64,
    summary: String,
    description: Option<String>,
    start_at: DateTime<Utc>,
    end_at: DateTime<Utc>,
    start_time_zone: Option<String>,
    all_day: bool,
}

async fn appointments(app: &SyncApp) -> Vec<Row> {
    sqlx::query_as(
        "SELECT id, user_id, summary, description, start_at, end_at, start_time_zone, all_day \
         FROM appointments ORDER BY start_at, id",
    )
    .fetch_all(&app.app.pool)
    .await
    .unwrap()
}

/// Every delta written, in order: (user, version, delta).
async fn deltas(app: &SyncApp) -> Vec<(i64, i64, Value)> {
    sqlx::query_as("SELECT user_id, version, delta::JSONB FROM plansync.outbox ORDER BY id")
        .fetch_all(&app.app.pool)
        .await
        .unwrap()
}

fn list_requests(app: &SyncApp) -> Vec<plansync_fake_google::RecordedRequest> {
    app.google
        .requests()
        .into_iter()
        .filter(|r| r.operation == Operation::List)
        .collect()
}
