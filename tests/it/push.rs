//! Push sync end to end: host writes to `appointments`, the real binary's
//! `run --once`, and the Google emulator, checked on both sides (the events
//! in Google, the requests that reached it, and the rows, links, conflicts
//! and deltas in Postgres).

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use plansync::config::GoogleSettings;
use plansync::fake_google::{Fault, Lost, Operation, RecordedRequest};
use plansync::google::{GoogleClient, ListQuery, RemoteAppointment};
use plansync::ids::{AppointmentId, CalendarId, ConnectionId, RefreshToken};
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

#[tokio::test]
async fn a_host_insert_becomes_exactly_one_google_event_and_later_passes_write_nothing() {
    let sync = SyncApp::spawn().await;
    sync.connect(USER, "primary", &[]).await;
    let id = host_insert(&sync, NewAppointment::default()).await;
    sync.run_once().await;

    let events = live_events(&sync, "primary").await;
    assert_eq!(events.len(), 1, "{events:?}");
    let (event_id, event) = &events[0];
    assert_eq!(event.fields.summary, "Dentist");
    assert_eq!(event.fields.description.as_deref(), Some("bring the card"));
    assert_eq!(event.fields.start_at, at("2026-12-10T15:00:00Z"));
    assert_eq!(event.fields.end_at, at("2026-12-10T16:00:00Z"));
    assert_eq!(
        event.fields.start_time_zone.as_deref(),
        Some("Europe/Berlin")
    );
    assert!(!event.fields.all_day);

    // Sent as Berlin wall time with the zone, under the recorded id, naming
    // the appointment and connection in its private properties.
    let inserts = calls(&sync, Operation::Insert);
    assert_eq!(inserts.len(), 1);
    let body = inserts[0].body.as_ref().unwrap();
    assert_eq!(
        body["start"],
        json!({"dateTime": "2026-12-10T16:00:00+01:00", "timeZone": "Europe/Berlin"})
    );
    assert_eq!(body["id"], json!(event_id));
    assert_eq!(
        body["extendedProperties"]["private"]["plansyncAppointment"],
        json!(id.to_string())
    );
    assert!(event_id
        .chars()
        .all(|c| c.is_ascii_digit() || ('a'..='v').contains(&c)));

    // The link holds Google's answer, so the next pull sees its own echo.
    let (linked_event, etag) = link(&sync, id).await.unwrap();
    assert_eq!(&linked_event, event_id);
    assert_eq!(etag.as_deref(), Some(event.etag.as_str()));
    // A push emits no delta and bumps nothing.
    assert_eq!(sync.app.plan_version(USER).await, 0);
    assert!(deltas(&sync).await.is_empty());

    // Further passes (one with a pull asked for) write nothing, bump nothing.
    sync.google.clear_requests();
    let out = sync.run(&["resync", "--user", "1"], "").await;
    assert!(out.status.success(), "{}", stderr(&out));
    sync.run_once().await;
    sync.run_once().await;
    assert!(writes(&sync).is_empty(), "{:?}", writes(&sync));
    assert_eq!(sync.app.plan_version(USER).await, 0);
    assert!(deltas(&sync).await.is_empty());
    assert_eq!(live_events(&sync, "primary").await.len(), 1);
    assert_eq!(summary(&sync, id).await.as_deref(), Some("Dentist"));
}

#[tokio::test]
async fn an_insert_whose_answer_is_lost_is_retried_under_the_same_id_and_adopted() {
    let sync = SyncApp::spawn().await;
    sync.connect(USER, "primary", &[]).await;
    sync.google.inject_fault(
        Operation::Insert,
        Fault::LoseResponse { then: Lost::Error },
        1,
    );
    let id = host_insert(&sync, NewAppointment::default()).await;
    // The retry (backoff base 0 in tests) runs in the same pass or the next.
    eventually(
        Duration::from_secs(60),
        "the insert to be confirmed",
        || async {
            sync.run_once().await;
            link(&sync, id).await.and_then(|(_, etag)| etag)
        },
    )
    .await;

    let inserts = calls(&sync, Operation::Insert);
    assert_eq!(inserts.len(), 2, "{inserts:?}");
    assert_eq!(
        inserts[0].body.as_ref().unwrap()["id"],
        inserts[1].body.as_ref().unwrap()["id"]
    );
    assert_eq!(inserts[1].status, Some(409));
    let events = live_events(&sync, "primary").await;
    assert_eq!(events.len(), 1, "{events:?}");
    let (event, etag) = link(&sync, id).await.unwrap();
    assert_eq!(event, events[0].0);
    assert_eq!(etag.as_deref(), Some(events[0].1.etag.as_str()));
    assert!(conflicts(&sync).await.is_empty());
    assert!(dead_jobs(&sync).await.is_empty());
}

#[tokio::test]
async fn a_duplicate_id_held_by_an_event_not_ours_is_never_adopted() {
    let sync = SyncApp::spawn().await;
    let connection = sync.connect(USER, "primary", &[]).await;
    let id = host_insert(&sync, NewAppointment::default()).await;
    // Someone else's event already holds the id this push will choose (the
    // first incarnation drawn in a fresh database is 1); it is older than the
    // lookback window, so the first full sync does not import it.
    let salt: String = sqlx::query_scalar("SELECT event_id_salt FROM plansync.deployment")
        .fetch_one(&sync.app.pool)
        .await
        .unwrap();
    let taken =
        plansync::sync::push::event_id(&salt, ConnectionId(connection), AppointmentId(id), 1);
    sync.google
        .create_event(
            "primary",
            json!({"id": taken.as_str(), "summary": "not ours",
                   "start": {"dateTime": "2020-12-01T10:00:00Z"},
                   "end": {"dateTime": "2020-12-01T11:00:00Z"},
                   "extendedProperties": {"private": {"plansyncAppointment": id.to_string()}}}),
        )
        .unwrap();
    sync.run_once().await;

    let inserts = calls(&sync, Operation::Insert);
    assert_eq!(inserts.len(), 1);
    assert_eq!(inserts[0].body.as_ref().unwrap()["id"], taken.as_str());
    assert_eq!(inserts[0].status, Some(409));
    let dead = dead_jobs(&sync).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(
        dead[0].1.as_deref().unwrap().contains("not adopting"),
        "{dead:?}"
    );
    // Not linked to the foreign event, which is left alone.
    assert_eq!(link(&sync, id).await.unwrap().1, None);
    assert!(writes(&sync)
        .iter()
        .all(|w| w.operation == Operation::Insert));
    let events = live_events(&sync, "primary").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].1.fields.summary, "not ours");
}

#[tokio::test]
async fn local_edit_newer_than_a_remote_edit_wins_on_both_sides() {
    let sync = SyncApp::spawn().await;
    let (id, event) = pushed(&sync).await;
    sync.google
        .patch_event("primary", &event, json!({"summary": "remote"}))
        .unwrap();
    // Later than Google's edit.
    host_exec(
        &sync,
        "UPDATE appointments SET summary = 'local' WHERE id = $1",
        id,
    )
    .await;
    sync.run_once().await;

    assert_eq!(summary(&sync, id).await.as_deref(), Some("local"));
    let remote = sync.google.get_event("primary", &event).unwrap();
    assert_eq!(remote["summary"], "local");
    assert_eq!(
        conflicts(&sync).await,
        vec![("local".into(), "edit".into(), Some("remote".into()))]
    );
    // The link knows Google's latest etag: nothing more to do.
    assert_eq!(
        link(&sync, id).await.unwrap().1.as_deref(),
        remote["etag"].as_str()
    );
    assert!(deltas(&sync).await.is_empty());
    assert_eq!(sync.app.plan_version(USER).await, 0);
}

#[tokio::test]
async fn remote_edit_newer_than_a_local_edit_wins_on_both_sides() {
    let sync = SyncApp::spawn().await;
    let (id, event) = pushed(&sync).await;
    // The host's edit is stamped a minute ago, before Google's.
    host_exec(
        &sync,
        "UPDATE appointments SET summary = 'local', updated_at = now() - interval '1 minute' \
         WHERE id = $1",
        id,
    )
    .await;
    sync.google
        .patch_event("primary", &event, json!({"summary": "remote"}))
        .unwrap();
    sync.run_once().await;

    assert_eq!(summary(&sync, id).await.as_deref(), Some("remote"));
    let remote = sync.google.get_event("primary", &event).unwrap();
    assert_eq!(remote["summary"], "remote");
    assert_eq!(
        conflicts(&sync).await,
        vec![("google".into(), "edit".into(), Some("local".into()))]
    );
    // The appointment took Google's values: one `updated` delta from Google.
    let deltas = deltas(&sync).await;
    assert_eq!(deltas.len(), 1, "{deltas:?}");
    assert_eq!(deltas[0]["action"], "updated");
    assert_eq!(deltas[0]["source"], "google");
    assert_eq!(deltas[0]["entityId"], id);
    assert_eq!(deltas[0]["data"]["appointment"]["summary"], "remote");
    assert_eq!(deltas[0]["version"], 1);
    assert_eq!(sync.app.plan_version(USER).await, 1);
    // Taking Google's values is not a local change to push back.
    assert_eq!(
        scalar(
            &sync,
            "SELECT count(*) FROM plansync.jobs WHERE kind = 'push' AND state = 'queued'"
        )
        .await,
        0
    );
    assert!(calls(&sync, Operation::Patch)
        .iter()
        .all(|p| p.status == Some(412)));
}

#[tokio::test]
async fn a_remote_delete_beats_a_local_edit_on_both_sides() {
    let sync = SyncApp::spawn().await;
    let (id, event) = pushed(&sync).await;
    sync.google.delete_event("primary", &event).unwrap();
    host_exec(
        &sync,
        "UPDATE appointments SET summary = 'local' WHERE id = $1",
        id,
    )
    .await;
    sync.run_once().await;

    assert_eq!(summary(&sync, id).await, None, "deleted locally");
    assert_eq!(link(&sync, id).await, None);
    assert_eq!(
        sync.google.get_event("primary", &event).unwrap()["status"],
        "cancelled"
    );
    assert_eq!(
        conflicts(&sync).await,
        vec![("google".into(), "delete".into(), Some("local".into()))]
    );
    let deltas = deltas(&sync).await;
    assert_eq!(deltas.len(), 1, "{deltas:?}");
    assert_eq!(
        (
            &deltas[0]["action"],
            &deltas[0]["source"],
            &deltas[0]["entityId"]
        ),
        (&json!("deleted"), &json!("google"), &json!(id))
    );
    // The local delete is the worker's own: nothing queued to push back.
    assert_eq!(
        scalar(
            &sync,
            "SELECT count(*) FROM plansync.jobs WHERE kind = 'push' AND state = 'queued'"
        )
        .await,
        0
    );
}

#[tokio::test]
async fn a_local_delete_deletes_the_google_event() {
    let sync = SyncApp::spawn().await;
    let (id, event) = pushed(&sync).await;
    let etag = link(&sync, id).await.unwrap().1;
    host_exec(&sync, "DELETE FROM appointments WHERE id = $1", id).await;
    sync.run_once().await;

    let deletes = calls(&sync, Operation::Delete);
    assert_eq!(deletes.len(), 1);
    assert_eq!(deletes[0].if_match, etag, "conditional on our etag");
    assert_eq!(deletes[0].status, Some(204));
    assert_eq!(
        sync.google.get_event("primary", &event).unwrap()["status"],
        "cancelled"
    );
    assert_eq!(link(&sync, id).await, None);
    assert!(live_events(&sync, "primary").await.is_empty());
    assert!(deltas(&sync).await.is_empty());
    assert!(conflicts(&sync).await.is_empty());
}

#[tokio::test]
async fn deleting_an_event_already_deleted_in_google_succeeds() {
    let sync = SyncApp::spawn().await;
    let (id, event) = pushed(&sync).await;
    sync.google.delete_event("primary", &event).unwrap();
    host_exec(&sync, "DELETE FROM appointments WHERE id = $1", id).await;
    sync.run_once().await;

    // Google's 410 `deleted` (or, after a pull saw the deletion, no call).
    assert!(calls(&sync, Operation::Delete)
        .iter()
        .all(|d| d.status == Some(410)));
    assert_eq!(link(&sync, id).await, None);
    assert!(dead_jobs(&sync).await.is_empty());
    assert_eq!(
        scalar(
            &sync,
            "SELECT count(*) FROM plansync.jobs WHERE kind = 'push' AND state <> 'succeeded'"
        )
        .await,
        0
    );
}

#[tokio::test]
async fn a_local_delete_beats_a_remote_edit_which_is_recorded() {
    let sync = SyncApp::spawn().await;
    let (id, event) = pushed(&sync).await;
    sync.google
        .patch_event("primary", &event, json!({"summary": "remote"}))
        .unwrap();
    host_exec(&sync, "DELETE FROM appointments WHERE id = $1", id).await;
    sync.run_once().await;

    assert_eq!(
        sync.google.get_event("primary", &event).unwrap()["status"],
        "cancelled"
    );
    assert_eq!(link(&sync, id).await, None);
    assert_eq!(
        conflicts(&sync).await,
        vec![("local".into(), "delete".into(), Some("remote".into()))]
    );
}

#[tokio::test]
async fn five_local_updates_become_one_conditional_write_of_the_final_state() {
    let sync = SyncApp::spawn().await;
    let (id, event) = pushed(&sync).await;
    let etag = link(&sync, id).await.unwrap().1;
    for n in 1..=4 {
        sqlx::query("UPDATE appointments SET summary = $2 WHERE id = $1")
            .bind(id)
            .bind(format!("edit {n}"))
            .execute(&sync.app.pool)
            .await
            .unwrap();
    }
    // The last edit also clears the description.
    host_exec(
        &sync,
        "UPDATE appointments SET summary = 'final', description = NULL WHERE id = $1",
        id,
    )
    .await;
    sync.run_once().await;

    let writes = writes(&sync);
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert_eq!(writes[0].operation, Operation::Patch);
    assert_eq!(writes[0].if_match, etag);
    let body = writes[0].body.as_ref().unwrap();
    assert_eq!(body["summary"], "final");
    assert_eq!(body["description"], Value::Null);
    let remote = sync.google.get_event("primary", &event).unwrap();
    assert_eq!(remote["summary"], "final");
    assert!(remote.get("description").is_none(), "{remote}");
    assert_eq!(
        link(&sync, id).await.unwrap().1.as_deref(),
        remote["etag"].as_str()
    );
}

#[tokio::test]
async fn an_insert_deleted_before_its_push_makes_no_call() {
    let sync = SyncApp::spawn().await;
    sync.connect(USER, "primary", &[]).await;
    let id = host_insert(&sync, NewAppointment::default()).await;
    host_exec(&sync, "DELETE FROM appointments WHERE id = $1", id).await;
    sync.run_once().await;

    assert!(writes(&sync).is_empty(), "{:?}", writes(&sync));
    assert!(calls(&sync, Operation::Get).is_empty());
    assert_eq!(link(&sync, id).await, None);
    let state: String = sqlx::query_scalar(
        "SELECT state FROM plansync.jobs WHERE kind = 'push' AND appointment_id = $1",
    )
    .bind(id)
    .fetch_one(&sync.app.pool)
    .await
    .unwrap();
    assert_eq!(state, "succeeded");
}

#[tokio::test]
async fn a_rate_limited_insert_is_created_on_a_later_pass_without_spending_attempts() {
    let sync = SyncApp::spawn().await;
    sync.connect(USER, "primary", &[]).await;
    sync.google.inject_fault(
        Operation::Insert,
        Fault::RateLimit {
            status: 429,
            user: false,
            retry_after_secs: Some(1),
        },
        2,
    );
    let id = host_insert(&sync, NewAppointment::default()).await;
    sync.run_once().await;
    // Snoozed for Google's Retry-After, not failed.
    let (state, attempts, due_later): (String, i32, bool) = sqlx::query_as(
        "SELECT state, attempts, run_at > now() FROM plansync.jobs \
         WHERE kind = 'push' AND appointment_id = $1",
    )
    .bind(id)
    .fetch_one(&sync.app.pool)
    .await
    .unwrap();
    assert_eq!((state.as_str(), attempts, due_later), ("queued", 0, true));
    assert!(live_events(&sync, "primary").await.is_empty());

    eventually(
        Duration::from_secs(30),
        "the insert after the snoozes",
        || async {
            sync.run_once().await;
            link(&sync, id).await.and_then(|(_, etag)| etag)
        },
    )
    .await;
    let statuses: Vec<Option<u16>> = calls(&sync, Operation::Insert)
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, vec![Some(429), Some(429), Some(200)]);
    let attempts: i32 = sqlx::query_scalar(
        "SELECT attempts FROM plansync.jobs WHERE kind = 'push' AND appointment_id = $1 \
           AND state = 'succeeded'",
    )
    .bind(id)
    .fetch_one(&sync.app.pool)
    .await
    .unwrap();
    assert_eq!(attempts, 0, "rate limits spend no attempt");
    assert_eq!(live_events(&sync, "primary").await.len(), 1);
}

#[tokio::test]
async fn an_appointment_without_zone_is_sent_in_the_calendars_zone() {
    let sync = SyncApp::spawn().await;
    sync.google
        .add_calendar("chicago@example.com", "Chicago", "America/Chicago")
        .unwrap();
    sync.connect(USER, "chicago@example.com", &[]).await;
    // The first sync learns the calendar's zone.
    sync.run_once().await;
    let zone: Option<String> =
        sqlx::query_scalar("SELECT calendar_time_zone FROM plansync.connections")
            .fetch_one(&sync.app.pool)
            .await
            .unwrap();
    assert_eq!(zone.as_deref(), Some("America/Chicago"));

    let id = host_insert(
        &sync,
        NewAppointment {
            zone: None,
            start: at("2026-07-10T15:00:00Z"),
            end: at("2026-07-10T16:30:00Z"),
            ..NewAppointment::default()
        },
    )
    .await;
    sync.run_once().await;
    let inserts = calls(&sync, Operation::Insert);
    assert_eq!(inserts.len(), 1);
    let body = inserts[0].body.as_ref().unwrap();
    // 15:00 UTC is 10:00 CDT.
    assert_eq!(
        body["start"],
        json!({"dateTime": "2026-07-10T10:00:00-05:00", "timeZone": "America/Chicago"})
    );
    assert_eq!(
        body["end"],
        json!({"dateTime": "2026-07-10T11:30:00-05:00", "timeZone": "America/Chicago"})
    );
    let event = sync
        .google
        .get_event("chicago@example.com", &event_id(&sync, id).await)
        .unwrap();
    assert_eq!(event["start"]["timeZone"], "America/Chicago");
}

#[tokio::test]
async fn an_all_day_appointment_is_sent_as_dates() {
    let sync = SyncApp::spawn().await;
    sync.connect(USER, "primary", &[]).await;
    let id = host_insert(
        &sync,
        NewAppointment {
            summary: "Holidays",
            all_day: true,
            start: Utc.with_ymd_and_hms(2026, 12, 24, 0, 0, 0).unwrap(),
            end: Utc.with_ymd_and_hms(2026, 12, 27, 0, 0, 0).unwrap(),
            ..NewAppointment::default()
        },
    )
    .await;
    sync.run_once().await;
    let inserts = calls(&sync, Operation::Insert);
    assert_eq!(inserts.len(), 1);
    let body = inserts[0].body.as_ref().unwrap();
    assert_eq!(body["start"], json!({"date": "2026-12-24"}));
    assert_eq!(body["end"], json!({"date": "2026-12-27"}));
    let event = sync
        .google
        .get_event("primary", &event_id(&sync, id).await)
        .unwrap();
    assert_eq!(event["start"], json!({"date": "2026-12-24"}));
    assert_eq!(event["end"], json!({"date": "2026-12-27"}));
}

#[tokio::test]
async fn a_refused_push_is_parked_with_its_error_without_blocking_the_rest() {
    let sync = SyncApp::spawn().await;
    sync.connect(USER, "primary", &[]).await;
    // Ends before it starts: Google answers 400 timeRangeEmpty.
    let bad = host_insert(
        &sync,
        NewAppointment {
            summary: "backwards",
            start: at("2026-12-10T16:00:00Z"),
            end: at("2026-12-10T15:00:00Z"),
            ..NewAppointment::default()
        },
    )
    .await;
    let good = host_insert(&sync, NewAppointment::default()).await;
    sync.run_once().await;

    assert!(link(&sync, good).await.unwrap().1.is_some());
    let events = live_events(&sync, "primary").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].1.fields.summary, "Dentist");
    // Refused before anything was sent (Google would answer 400
    // timeRangeEmpty): parked with its reason, not a dead job.
    let status = sync.status().await;
    let parked = status["connections"][0]["parkedPushes"].as_array().unwrap();
    assert_eq!(parked.len(), 1, "{status}");
    assert_eq!(parked[0]["appointmentId"], bad);
    assert!(
        parked[0]["reason"]
            .as_str()
            .unwrap()
            .contains("before start_at"),
        "{status}"
    );
    assert!(status["queue"]["dead"].as_array().unwrap().is_empty());
    assert_eq!(status["connections"][0]["needsReauth"], false);
    assert!(sync.google.requests().iter().all(|r| r.operation
        != plansync::fake_google::Operation::Insert
        || !r
            .body
            .as_ref()
            .is_some_and(|b| b.to_string().contains("backwards"))));
    assert_eq!(link(&sync, bad).await, None);
}

#[tokio::test]
async fn a_revoked_refresh_token_marks_needs_reauth_and_stops_token_calls_until_reconnected() {
    let sync = SyncApp::spawn().await;
    let revoked = sync.google.refresh_tokens()[0].clone();
    let connection = sync.connect(USER, "primary", &[]).await;
    assert!(sync.google.revoke_refresh_token(&revoked));
    let id = host_insert(&sync, NewAppointment::default()).await;
    sync.run_once().await;

    let status = sync.status().await;
    let conn = &status["connections"][0];
    assert_eq!(conn["id"], connection);
    assert_eq!(conn["needsReauth"], true, "{status}");
    assert!(conn["lastError"]
        .as_str()
        .unwrap()
        .contains("invalid_grant"));
    let token_calls = calls(&sync, Operation::Token);
    assert_eq!(token_calls.len(), 1, "one refusal is enough");
    assert_eq!(token_calls[0].status, Some(400));
    assert!(writes(&sync).is_empty());

    // Later passes leave the connection alone: no token call, no API call.
    sync.google.clear_requests();
    sync.run_once().await;
    sync.run_once().await;
    assert!(
        sync.google.requests().is_empty(),
        "{:?}",
        sync.google.requests()
    );
    // The change is still waiting, not lost.
    assert_eq!(sync.status().await["connections"][0]["pendingPushes"], 1);

    // Re-connecting with a new refresh token resumes, and the push goes out.
    sync.google.add_refresh_token("1//fresh-grant");
    assert_eq!(sync.connect(USER, "primary", &[]).await, connection);
    assert_eq!(sync.status().await["connections"][0]["needsReauth"], false);
    // (The blocked push was snoozed for a second; it runs once due.)
    eventually(
        Duration::from_secs(30),
        "the push after re-connecting",
        || async {
            sync.run_once().await;
            link(&sync, id).await.and_then(|(_, etag)| etag)
        },
    )
    .await;
    let token_calls = calls(&sync, Operation::Token);
    assert!(!token_calls.is_empty());
    assert!(
        token_calls.iter().all(|t| t.status == Some(200)),
        "{token_calls:?}"
    );
    assert_eq!(live_events(&sync, "primary").await.len(), 1);
}

#[tokio::test]
async fn the_first_sync_of_a_push_target_pushes_appointments_made_before_connecting() {
    let sync = SyncApp::spawn().await;
    sync.app.add_user(USER).await;
    // No connection yet: the trigger records nothing.
    let early = host_insert(&sync, NewAppointment::default()).await;
    assert_eq!(scalar(&sync, "SELECT count(*) FROM plansync.jobs").await, 0);
    sync.connect(USER, "primary", &[]).await;
    sync.run_once().await;

    let events = live_events(&sync, "primary").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].0, event_id(&sync, early).await);
    // A later pull sees the pushed event as its own echo.
    let out = sync.run(&["resync", "--user", "1"], "").await;
    assert!(out.status.success(), "{}", stderr(&out));
    sync.run_once().await;
    assert!(
        calls(&sync, Operation::List).len() >= 2,
        "a pull ran after the push"
    );
    assert!(deltas(&sync).await.is_empty());
    assert_eq!(
        scalar(&sync, "SELECT count(*) FROM appointments").await,
        1,
        "the pushed event is not imported back as a second appointment"
    );
}

#[tokio::test]
async fn a_404_on_an_edit_never_deletes_the_appointment() {
    let sync = SyncApp::spawn().await;
    let (id, _) = pushed(&sync).await;
    // Google no longer knows the event at all (purged, or its calendar gone:
    // a 404 cannot tell which), unlike a deletion, which Google keeps.
    host_exec(
        &sync,
        "UPDATE plansync.links SET event_id = 'unknown0event' WHERE appointment_id = $1",
        id,
    )
    .await;
    host_exec(
        &sync,
        "UPDATE appointments SET summary = 'local' WHERE id = $1",
        id,
    )
    .await;
    sync.run_once().await;

    assert!(calls(&sync, Operation::Patch)
        .iter()
        .all(|p| p.status == Some(404)));
    assert_eq!(summary(&sync, id).await.as_deref(), Some("local"));
    assert!(link(&sync, id).await.is_some());
    assert!(deltas(&sync).await.is_empty());
    let (state, error): (String, Option<String>) = sqlx::query_as(
        "SELECT state, last_error FROM plansync.jobs WHERE kind = 'push' \
         AND appointment_id = $1 ORDER BY id DESC LIMIT 1",
    )
    .bind(id)
    .fetch_one(&sync.app.pool)
    .await
    .unwrap();
    assert!(state == "queued" || state == "dead", "{state}");
    assert!(error.unwrap().contains("404"));
}

#[tokio::test]
async fn an_attendee_added_in_google_to_a_pushed_zone_less_appointment_changes_nothing_here() {
    let sync = SyncApp::spawn().await;
    sync.google
        .add_calendar("chicago@example.com", "Chicago", "America/Chicago")
        .unwrap();
    sync.connect(USER, "chicago@example.com", &[]).await;
    sync.run_once().await;
    let id = host_insert(
        &sync,
        NewAppointment {
            zone: None,
            start: Utc::now() + chrono::Duration::days(2),
            end: Utc::now() + chrono::Duration::days(2) + chrono::Duration::hours(1),
            ..NewAppointment::default()
        },
    )
    .await;
    sync.run_once().await;
    let before: (DateTime<Utc>, Option<String>) =
        sqlx::query_as("SELECT updated_at, start_time_zone FROM appointments WHERE id = $1")
            .bind(id)
            .fetch_one(&sync.app.pool)
            .await
            .unwrap();
    let (version, deltas_before) = (sync.app.plan_version(USER).await, deltas(&sync).await.len());

    // Only an attendee changes in Google: the etag moves, no column does (the
    // zone Google shows is the calendar's, the one we sent it in).
    sync.google
        .patch_event(
            "chicago@example.com",
            &event_id(&sync, id).await,
            json!({"attendees": [{"email": "guest@example.com"}]}),
        )
        .unwrap();
    let out = sync.run(&["resync", "--user", &USER.to_string()], "").await;
    assert!(out.status.success(), "{}", stderr(&out));
    sync.run_once().await;

    let after: (DateTime<Utc>, Option<String>) =
        sqlx::query_as("SELECT updated_at, start_time_zone FROM appointments WHERE id = $1")
            .bind(id)
            .fetch_one(&sync.app.pool)
            .await
            .unwrap();
    assert_eq!(after, before, "no appointment write");
    assert_eq!(sync.app.plan_version(USER).await, version, "no bump");
    assert_eq!(deltas(&sync).await.len(), deltas_before, "no delta");
    let (_, etag) = link(&sync, id).await.unwrap();
    let google_etag = sync
        .google
        .get_event("chicago@example.com", &event_id(&sync, id).await)
        .unwrap()["etag"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        etag.as_deref(),
        Some(google_etag.as_str()),
        "the link learnt the etag"
    );
}

#[tokio::test]
async fn local_changes_made_while_disconnected_are_pushed_after_reconnecting() {
    let sync = SyncApp::spawn().await;
    let connection = sync.connect(USER, "primary", &[]).await;
    sync.run_once().await;
    let edited = host_insert(
        &sync,
        NewAppointment {
            summary: "to edit",
            ..NewAppointment::default()
        },
    )
    .await;
    let deleted = host_insert(
        &sync,
        NewAppointment {
            summary: "to delete",
            ..NewAppointment::default()
        },
    )
    .await;
    sync.run_once().await;
    let deleted_event = event_id(&sync, deleted).await;
    assert_eq!(live_events(&sync, "primary").await.len(), 2);

    let out = sync
        .run(&["disconnect", "--connection", &connection.to_string()], "")
        .await;
    assert!(out.status.success());
    host_exec(
        &sync,
        "UPDATE appointments SET summary = 'edited offline' WHERE id = $1",
        edited,
    )
    .await;
    host_exec(&sync, "DELETE FROM appointments WHERE id = $1", deleted).await;
    let created = host_insert(
        &sync,
        NewAppointment {
            summary: "created offline",
            ..NewAppointment::default()
        },
    )
    .await;
    assert_eq!(
        scalar(
            &sync,
            "SELECT count(*) FROM plansync.jobs WHERE kind = 'push' AND state = 'queued'"
        )
        .await,
        0,
        "nothing is recorded for a disconnected calendar"
    );

    assert_eq!(sync.connect(USER, "primary", &[]).await, connection);
    sync.run_once().await;
    let mut summaries: Vec<String> = live_events(&sync, "primary")
        .await
        .into_iter()
        .map(|(_, a)| a.fields.summary)
        .collect();
    summaries.sort();
    assert_eq!(summaries, vec!["created offline", "edited offline"]);
    assert!(live_events(&sync, "primary")
        .await
        .iter()
        .all(|(id, _)| id != &deleted_event));
    assert!(link(&sync, created).await.is_some());
    assert_eq!(
        summary(&sync, edited).await.as_deref(),
        Some("edited offline")
    );
}

#[tokio::test]
async fn an_appointment_the_host_gives_to_another_user_moves_to_that_users_calendar() {
    let sync = SyncApp::spawn().await;
    sync.google
        .add_calendar("bob@example.com", "Bob", "UTC")
        .unwrap();
    sync.connect(USER, "primary", &[]).await;
    sync.connect(2, "bob@example.com", &[]).await;
    sync.run_once().await;
    let id = host_insert(
        &sync,
        NewAppointment {
            summary: "shared",
            ..NewAppointment::default()
        },
    )
    .await;
    sync.run_once().await;
    let alice_event = event_id(&sync, id).await;
    assert_eq!(live_events(&sync, "primary").await.len(), 1);

    host_exec(
        &sync,
        "UPDATE appointments SET user_id = 2 WHERE id = $1",
        id,
    )
    .await;
    sync.run_once().await;
    // It left Alice's calendar and is now Bob's.
    assert!(live_events(&sync, "primary").await.is_empty());
    let bobs = live_events(&sync, "bob@example.com").await;
    assert_eq!(bobs.len(), 1);
    assert_eq!(bobs[0].1.fields.summary, "shared");
    assert_ne!(event_id(&sync, id).await, alice_event);

    // An edit in Alice's calendar can no longer touch it: Bob's edit does.
    sync.google
        .patch_event(
            "bob@example.com",
            &bobs[0].0,
            json!({"summary": "bob's now"}),
        )
        .unwrap();
    let out = sync.run(&["resync", "--user", "2"], "").await;
    assert!(out.status.success());
    sync.run_once().await;
    let (owner, summary): (i64, String) =
        sqlx::query_as("SELECT user_id, summary FROM appointments WHERE id = $1")
            .bind(id)
            .fetch_one(&sync.app.pool)
            .await
            .unwrap();
    assert_eq!((owner, summary.as_str()), (2, "bob's now"));
}
