//! Local edits and deletes reaching Google: conditional writes, zones,
//! all-day dates, and changes that must not travel.

use super::*;

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
