//! Push sync end to end: host writes to `appointments`, worker passes
//! (`run --once`, in-process), and the Google emulator, checked on both sides (the events
//! in Google, the requests that reached it, and the rows, links, conflicts
//! and deltas in Postgres).

mod changes;
mod conflicts;
mod connections;
mod inserts;

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use plansync::config::GoogleSettings;
use plansync::google::{GoogleClient, ListQuery, RemoteAppointment};
use plansync::ids::{AppointmentId, CalendarId, ConnectionId, RefreshToken};
use plansync_fake_google::{Fault, Lost, Operation, RecordedRequest};
use serde_json::{json, Value};

use crate::harness::{eventually, stderr, SyncApp};

const USER: i64 = 1;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// An appointment as the host writes it.
struct NewAppointment<'a> {
    summary: &'a str,
    description: Option<&'a str>,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    zone: Option<&'a str>,
    all_day: bool,
}

impl Default for NewAppointment<'_> {
    fn default() -> Self {
        NewAppointment {
            summary: "Dentist",
            description: Some("bring the card"),
            start: at("2026-12-10T15:00:00Z"),
            end: at("2026-12-10T16:00:00Z"),
            zone: Some("Europe/Berlin"),
            all_day: false,
        }
    }
}

/// A host `INSERT INTO appointments`.
async fn host_insert(sync: &SyncApp, a: NewAppointment<'_>) -> i64 {
    sqlx::query_scalar(
        "INSERT INTO appointments (user_id, summary, description, start_at, end_at, \
             start_time_zone, end_time_zone, all_day) \
         VALUES ($1, $2, $3, $4, $5, $6, $6, $7) RETURNING id",
    )
    .bind(USER)
    .bind(a.summary)
    .bind(a.description)
    .bind(a.start)
    .bind(a.end)
    .bind(a.zone)
    .bind(a.all_day)
    .fetch_one(&sync.app.pool)
    .await
    .unwrap()
}

async fn host_exec(sync: &SyncApp, sql: &str, id: i64) {
    sqlx::query(sql)
        .bind(id)
        .execute(&sync.app.pool)
        .await
        .unwrap();
}

/// The requests that changed something in Google.
fn writes(sync: &SyncApp) -> Vec<RecordedRequest> {
    sync.google
        .requests()
        .into_iter()
        .filter(|r| {
            matches!(
                r.operation,
                Operation::Insert | Operation::Patch | Operation::Update | Operation::Delete
            )
        })
        .collect()
}

fn calls(sync: &SyncApp, operation: Operation) -> Vec<RecordedRequest> {
    sync.google
        .requests()
        .into_iter()
        .filter(|r| r.operation == operation)
        .collect()
}

/// The link of an appointment: (event id, etag).
async fn link(sync: &SyncApp, appointment: i64) -> Option<(String, Option<String>)> {
    sqlx::query_as("SELECT event_id, etag FROM plansync.links WHERE appointment_id = $1")
        .bind(appointment)
        .fetch_optional(&sync.app.pool)
        .await
        .unwrap()
}

async fn event_id(sync: &SyncApp, appointment: i64) -> String {
    link(sync, appointment)
        .await
        .expect("the appointment is linked")
        .0
}

async fn summary(sync: &SyncApp, appointment: i64) -> Option<String> {
    sqlx::query_scalar("SELECT summary FROM appointments WHERE id = $1")
        .bind(appointment)
        .fetch_optional(&sync.app.pool)
        .await
        .unwrap()
}

async fn scalar(sync: &SyncApp, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(&sync.app.pool)
        .await
        .unwrap()
}

/// The deltas written to the outbox, oldest first.
async fn deltas(sync: &SyncApp) -> Vec<Value> {
    sqlx::query_scalar::<_, Value>("SELECT delta::jsonb FROM plansync.outbox ORDER BY id")
        .fetch_all(&sync.app.pool)
        .await
        .unwrap()
}

/// (winner, kind, losing summary) of every conflict record, oldest first.
async fn conflicts(sync: &SyncApp) -> Vec<(String, String, Option<String>)> {
    sqlx::query_as(
        "SELECT winner, kind, losing_values->>'summary' FROM plansync.conflicts ORDER BY id",
    )
    .fetch_all(&sync.app.pool)
    .await
    .unwrap()
}

/// The live appointment events of a calendar, listed through our own client
/// (so as Google's list shows them).
async fn live_events(sync: &SyncApp, calendar: &str) -> Vec<(String, RemoteAppointment)> {
    let google = GoogleClient::new(&GoogleSettings {
        calendar_base_url: sync.google.base_url(),
        token_url: sync.google.token_url(),
        client_id: sync.google.client_id(),
        client_secret: sync.google.client_secret().into(),
    })
    .unwrap();
    let token = sync.google.refresh_tokens()[0].clone();
    let client = google.calendar_client(RefreshToken::new(token));
    let page = client
        .list_page(
            &CalendarId::from(calendar),
            &ListQuery::full(at("2000-01-01T00:00:00Z")),
        )
        .await
        .expect("the calendar lists");
    assert!(page.next_page_token.is_none(), "one page is enough here");
    page.events
        .into_iter()
        .filter_map(|e| e.appointment().cloned().map(|a| (e.id.to_string(), a)))
        .collect()
}

/// A push-target connection of user 1 on `primary`, with one appointment
/// already pushed. Returns (appointment, event id).
async fn pushed(sync: &SyncApp) -> (i64, String) {
    sync.connect(USER, "primary", &[]).await;
    let id = host_insert(sync, NewAppointment::default()).await;
    sync.run_once().await;
    let (event, etag) = link(sync, id).await.expect("pushed");
    assert!(etag.is_some(), "the insert is confirmed");
    sync.google.clear_requests();
    (id, event)
}

/// The dead push jobs: (kind, last error).
async fn dead_jobs(sync: &SyncApp) -> Vec<(String, Option<String>)> {
    sqlx::query_as(
        "SELECT kind, last_error FROM plansync.jobs WHERE state = 'dead' AND kind = 'push'",
    )
    .fetch_all(&sync.app.pool)
    .await
    .unwrap()
}
