//! Host rows that cannot be sent to Google.

use super::*;

#[tokio::test]
async fn host_rows_that_cannot_be_sent_are_parked_and_pulls_go_on() {
    let app = SyncApp::spawn().await;
    let linked = app
        .google
        .create_event("primary", timed("linked", 2, 10))
        .unwrap();
    let id = app.connect(1, "primary", &["--push-target"]).await;
    app.run_once().await;
    let insert = |summary: &str, start: &str, end: &str, all_day: bool| {
        let (summary, start, end) = (summary.to_owned(), start.to_owned(), end.to_owned());
        let pool = app.app.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "INSERT INTO appointments (user_id, summary, start_at, end_at, all_day) \
                 VALUES (1, $1, $2::TIMESTAMPTZ, $3::TIMESTAMPTZ, $4) RETURNING id",
            )
            .bind(summary)
            .bind(start)
            .bind(end)
            .bind(all_day)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    let infinite = insert("infinite", &at(3, 10), "infinity", false).await;
    let backwards = insert("backwards", &at(3, 10), &at(3, 8), false).await;
    let not_midnight = insert("not midnight", &at(3, 10), &at(4, 10), true).await;
    let far = insert("far", &at(3, 10), "20000-01-01T00:00:00Z", false).await;
    insert("fine", &at(3, 10), &at(3, 11), false).await;
    app.run_once().await;

    let events = app
        .google
        .list_events("primary", "singleEvents=true")
        .unwrap();
    let names: Vec<&str> = events
        .iter()
        .filter_map(|e| e["summary"].as_str())
        .collect();
    assert!(names.contains(&"fine"), "{names:?}");
    for bad in ["infinite", "backwards", "not midnight", "far"] {
        assert!(!names.contains(&bad), "{bad} must never be sent");
    }
    let c = connection_status(&app.status().await, id);
    let parked: Vec<i64> = c["parkedPushes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["appointmentId"].as_i64().unwrap())
        .collect();
    let mut expected = vec![infinite, backwards, not_midnight, far];
    expected.sort();
    assert_eq!(parked, expected, "{c}");
    assert!(c["parkedPushes"][0]["reason"].is_string());

    // A linked row the host broke: the pull treats it as different and goes
    // on; Google's newer version wins and repairs it.
    let linked_id: i64 =
        sqlx::query_scalar("SELECT appointment_id FROM plansync.links WHERE event_id = $1")
            .bind(linked["id"].as_str().unwrap())
            .fetch_one(&app.app.pool)
            .await
            .unwrap();
    sqlx::query("UPDATE appointments SET end_at = 'infinity', updated_at = now() - interval '1 hour' WHERE id = $1")
        .bind(linked_id)
        .execute(&app.app.pool)
        .await
        .unwrap();
    app.google
        .patch_event(
            "primary",
            linked["id"].as_str().unwrap(),
            json!({"summary": "linked, edited"}),
        )
        .unwrap();
    resync(&app, 1, false).await;
    app.run_once().await;
    let (summary, finite): (String, bool) =
        sqlx::query_as("SELECT summary, isfinite(end_at) FROM appointments WHERE id = $1")
            .bind(linked_id)
            .fetch_one(&app.app.pool)
            .await
            .unwrap();
    assert_eq!((summary.as_str(), finite), ("linked, edited", true));
    let status = app.status().await;
    assert!(connection_status(&status, id)["lastError"].is_null());
    assert!(
        connection_status(&status, id)["parkedPushes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["appointmentId"] != linked_id),
        "a row Google repaired is no longer parked: {status}"
    );

    // Fixing a parked row sends it.
    sqlx::query("UPDATE appointments SET end_at = start_at + interval '1 hour' WHERE id = $1")
        .bind(backwards)
        .execute(&app.app.pool)
        .await
        .unwrap();
    app.run_once().await;
    let names: Vec<String> = app
        .google
        .list_events("primary", "singleEvents=true")
        .unwrap()
        .iter()
        .filter_map(|e| e["summary"].as_str().map(str::to_owned))
        .collect();
    assert!(names.contains(&"backwards".to_owned()));
    let c = connection_status(&app.status().await, id);
    assert!(
        c["parkedPushes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["appointmentId"] != backwards),
        "{c}"
    );
}

#[tokio::test]
async fn a_host_row_with_infinite_timestamps_never_stops_its_calendar() {
    let (app, id, _deltas) = synced().await;
    sqlx::query(
        "UPDATE appointments SET created_at = 'infinity', updated_at = '-infinity' \
         WHERE summary = 'alpha'",
    )
    .execute(&app.app.pool)
    .await
    .unwrap();
    app.run_once().await;
    let event: String = sqlx::query_scalar(
        "SELECT l.event_id FROM plansync.links l JOIN appointments a ON a.id = l.appointment_id \
         WHERE a.summary = 'alpha'",
    )
    .fetch_one(&app.app.pool)
    .await
    .unwrap();
    app.google
        .patch_event("primary", &event, json!({"summary": "alpha, edited"}))
        .unwrap();
    resync(&app, 1, false).await;
    app.run_once().await;
    assert!(summaries(&app).await.contains(&"alpha, edited".to_owned()));
    let c = connection_status(&app.status().await, id);
    assert!(c["lastError"].is_null(), "{c}");
}
