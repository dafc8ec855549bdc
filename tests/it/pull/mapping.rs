//! What a pulled event becomes: series instances, all-day and zone-less
//! times, and whose appointment it is.

use super::*;

#[tokio::test]
async fn a_recurring_series_with_one_cancelled_and_one_moved_instance() {
    let app = SyncApp::spawn().await;
    let start = (Utc::now() + Duration::days(2)).date_naive();
    let local = |d: chrono::NaiveDate, h: u32| format!("{}T{h:02}:00:00", d.format("%Y-%m-%d"));
    let master = create(
        &app,
        "primary",
        json!({
            "summary": "Standup",
            "start": {"dateTime": local(start, 9), "timeZone": "Europe/Berlin"},
            "end": {"dateTime": local(start, 10), "timeZone": "Europe/Berlin"},
            "recurrence": ["RRULE:FREQ=DAILY;COUNT=10"],
        }),
    );
    app.connect(1, "primary", &[]).await;
    app.run_once().await;
    let rows = appointments(&app).await;
    assert_eq!(rows.len(), 10);

    // Instance ids are <master>_<start in UTC, basic format>.
    let instance = |n: usize| {
        let t = rows[n].start_at;
        format!("{master}_{}", t.format("%Y%m%dT%H%M%SZ"))
    };
    app.google
        .patch_event("primary", &instance(3), json!({"status": "cancelled"}))
        .unwrap();
    let moved_start = rows[5].start_at + Duration::hours(5);
    app.google
        .patch_event(
            "primary",
            &instance(5),
            json!({
                "start": {"dateTime": moved_start.to_rfc3339(), "timeZone": "Europe/Berlin"},
                "end": {"dateTime": (moved_start + Duration::hours(1)).to_rfc3339(), "timeZone": "Europe/Berlin"},
            }),
        )
        .unwrap();
    pull(&app, 1).await;
    let after = appointments(&app).await;
    assert_eq!(after.len(), 9);
    assert!(
        !after.iter().any(|r| r.id == rows[3].id),
        "the cancelled instance is gone"
    );
    let moved = after.iter().find(|r| r.id == rows[5].id).unwrap();
    assert_eq!(moved.start_at, moved_start);
    assert_eq!(moved.end_at, moved_start + Duration::hours(1));
}

#[tokio::test]
async fn all_day_dst_and_zone_less_events_map_to_the_right_instants() {
    let app = SyncApp::spawn().await;
    app.google
        .add_calendar("berlin@example.com", "Berlin", "Europe/Berlin")
        .unwrap();
    let day = (Utc::now() + Duration::days(10)).date_naive();
    create(
        &app,
        "berlin@example.com",
        json!({"summary": "Holiday", "start": {"date": day.to_string()},
               "end": {"date": (day + Duration::days(1)).to_string()}}),
    );
    // 2027-03-14 02:00 America/New_York: clocks jump to 03:00.
    create(
        &app,
        "berlin@example.com",
        json!({"summary": "Across DST",
               "start": {"dateTime": "2027-03-13T23:00:00-05:00", "timeZone": "America/New_York"},
               "end": {"dateTime": "2027-03-14T04:00:00-04:00", "timeZone": "America/New_York"}}),
    );
    create(
        &app,
        "berlin@example.com",
        json!({"summary": "No zone",
               "start": {"dateTime": format!("{}T10:00:00+01:00", day)},
               "end": {"dateTime": format!("{}T11:00:00+01:00", day)}}),
    );
    app.connect(1, "berlin@example.com", &[]).await;
    app.run_once().await;
    let rows = appointments(&app).await;
    let get = |s: &str| rows.iter().find(|r| r.summary == s).unwrap().clone();

    let holiday = get("Holiday");
    assert!(holiday.all_day);
    assert_eq!(
        holiday.start_at,
        day.and_hms_opt(0, 0, 0).unwrap().and_utc()
    );
    assert_eq!(
        holiday.end_at,
        (day + Duration::days(1))
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc()
    );

    let dst = get("Across DST");
    assert_eq!(dst.start_at.to_rfc3339(), "2027-03-14T04:00:00+00:00");
    assert_eq!(dst.end_at.to_rfc3339(), "2027-03-14T08:00:00+00:00");
    assert_eq!(
        dst.end_at - dst.start_at,
        Duration::hours(4),
        "one hour lost to DST"
    );
    assert_eq!(dst.start_time_zone.as_deref(), Some("America/New_York"));

    let zoneless = get("No zone");
    assert_eq!(
        zoneless.start_time_zone.as_deref(),
        Some("Europe/Berlin"),
        "the calendar's zone"
    );
    assert_eq!(
        zoneless.start_at,
        day.and_hms_opt(9, 0, 0).unwrap().and_utc()
    );
    let tz: Option<String> =
        sqlx::query_scalar("SELECT calendar_time_zone FROM plansync.connections")
            .fetch_one(&app.app.pool)
            .await
            .unwrap();
    assert_eq!(tz.as_deref(), Some("Europe/Berlin"));
}

#[tokio::test]
async fn ids_inside_an_event_never_address_another_users_appointment() {
    let app = SyncApp::spawn().await;
    sqlx::query("INSERT INTO users (id) VALUES (1)")
        .execute(&app.app.pool)
        .await
        .unwrap();
    let victim: i64 = sqlx::query_scalar(
        "INSERT INTO appointments (user_id, summary, start_at, end_at) \
         VALUES (1, 'private', now(), now() + interval '1 hour') RETURNING id",
    )
    .fetch_one(&app.app.pool)
    .await
    .unwrap();
    app.google
        .add_calendar("mallory@example.com", "Mallory", "UTC")
        .unwrap();
    let mut event = timed("hijack", 2, 10);
    event["extendedProperties"] = json!({"private": {
        "plansyncAppointment": victim.to_string(), "appointmentId": victim.to_string(),
        "plansyncConnection": "1", "userId": "1"}});
    event["iCalUID"] = json!(format!("{victim}@plansync"));
    create(&app, "mallory@example.com", event);
    app.connect(2, "mallory@example.com", &[]).await;
    app.run_once().await;

    let rows = appointments(&app).await;
    let original = rows.iter().find(|r| r.id == victim).unwrap();
    assert_eq!(
        (original.user_id, original.summary.as_str()),
        (1, "private")
    );
    let hijack = rows.iter().find(|r| r.summary == "hijack").unwrap();
    assert_eq!(hijack.user_id, 2);
    assert_ne!(hijack.id, victim);
    assert_eq!(app.app.plan_version(1).await, 0, "user 1 saw no delta");
}
