//! Pushes and the state of a connection: refused rows parked, revoked
//! grants, disconnects, appointments moving between users.

use super::*;

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
        != plansync_fake_google::Operation::Insert
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
