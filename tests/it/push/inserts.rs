//! New appointments becoming Google events: exactly once, under retries,
//! lost answers, rate limits, and at a push target's first sync.

use super::*;

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
async fn the_claims_event_ids_are_spelt_as_sync_push_spells_them() {
    // The claim records a first insert's event id with the SQL function
    // `plansync.event_id`; `sync::push::event_id` is the reference spelling
    // (and what the tests above predict ids with): they must agree.
    let sync = SyncApp::spawn().await;
    let salt: String = sqlx::query_scalar("SELECT event_id_salt FROM plansync.deployment")
        .fetch_one(&sync.app.pool)
        .await
        .unwrap();
    for (connection, appointment, incarnation) in [
        (1, 1, 1),
        (255, 4096, 2),
        (0x12, 0x3, 77),
        (i64::MAX, i64::MAX, i64::MAX),
    ] {
        let sql: String = sqlx::query_scalar("SELECT plansync.event_id($1, $2, $3)")
            .bind(connection)
            .bind(appointment)
            .bind(incarnation)
            .fetch_one(&sync.app.pool)
            .await
            .unwrap();
        let rust = plansync::sync::push::event_id(
            &salt,
            ConnectionId(connection),
            AppointmentId(appointment),
            incarnation,
        );
        assert_eq!(sql, rust.as_str());
    }
}
