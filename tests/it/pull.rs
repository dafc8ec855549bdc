//! Pull sync against the emulator, one worker pass at a time (`run --once`,
//! in-process; through the binary where a test acts while the pass runs).

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use plansync::fake_google::{FakeGoogleOptions, Fault, Operation};
use serde_json::{json, Value};

use crate::harness::{stderr, SyncApp};

/// An RFC 3339 UTC time `days` from now at `hour`:00, so events stay inside
/// the lookback window whenever the suite runs.
fn at(days: i64, hour: u32) -> String {
    let day = (Utc::now() + Duration::days(days)).date_naive();
    day.and_hms_opt(hour, 0, 0)
        .unwrap()
        .and_utc()
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn timed(summary: &str, days: i64, hour: u32) -> Value {
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

fn list_requests(app: &SyncApp) -> Vec<plansync::fake_google::RecordedRequest> {
    app.google
        .requests()
        .into_iter()
        .filter(|r| r.operation == Operation::List)
        .collect()
}

#[tokio::test]
async fn create_edit_delete_in_google_each_give_one_delta_with_consecutive_versions() {
    let app = SyncApp::spawn().await;
    app.connect(1, "primary", &[]).await;
    app.run_once().await;
    assert!(appointments(&app).await.is_empty());

    let id = create(&app, "primary", timed("Dentist", 3, 15));
    pull(&app, 1).await;
    let rows = appointments(&app).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].summary, "Dentist");
    assert_eq!(rows[0].user_id, 1);
    assert_eq!(rows[0].start_time_zone.as_deref(), Some("Europe/Berlin"));

    app.google
        .patch_event(
            "primary",
            &id,
            json!({"summary": "Dentist (moved)", "description": null}),
        )
        .unwrap();
    pull(&app, 1).await;
    assert_eq!(appointments(&app).await[0].summary, "Dentist (moved)");

    app.google.delete_event("primary", &id).unwrap();
    pull(&app, 1).await;
    assert!(appointments(&app).await.is_empty());

    let all = deltas(&app).await;
    let shape: Vec<(i64, &str, i64)> = all
        .iter()
        .map(|(_, v, d)| {
            (
                *v,
                d["action"].as_str().unwrap(),
                d["entityId"].as_i64().unwrap(),
            )
        })
        .collect();
    let entity = rows[0].id;
    assert_eq!(
        shape,
        vec![
            (1, "created", entity),
            (2, "updated", entity),
            (3, "deleted", entity)
        ]
    );
    assert_eq!(app.app.plan_version(1).await, 3);
    let created = &all[0].2;
    assert_eq!(created["source"], "google");
    assert_eq!(created["version"], 1);
    assert_eq!(created["data"]["appointment"]["summary"], "Dentist");
    assert_eq!(
        created["data"]["appointment"]["googleSync"]["eventId"],
        id.as_str()
    );
    assert_eq!(
        created["data"]["appointment"]["googleSync"]["calendarId"],
        "primary"
    );
    assert!(all[2].2.get("data").is_none(), "a deletion carries no data");
}

#[tokio::test]
async fn a_no_change_incremental_pull_is_one_list_call_and_emits_nothing() {
    let app = SyncApp::spawn().await;
    create(&app, "primary", timed("Standing", 2, 9));
    app.connect(1, "primary", &[]).await;
    app.run_once().await;
    let before = (deltas(&app).await.len(), app.app.plan_version(1).await);
    assert_eq!(before, (1, 1));

    app.google.clear_requests();
    pull(&app, 1).await;
    let lists = list_requests(&app);
    assert_eq!(lists.len(), 1, "one list call");
    assert!(lists[0].query_param("syncToken").is_some());
    assert_eq!(
        (deltas(&app).await.len(), app.app.plan_version(1).await),
        before
    );
}

#[tokio::test]
async fn paging_with_edits_across_pages_and_during_paging_loses_nothing() {
    let app = SyncApp::with_options(FakeGoogleOptions {
        page_cap: Some(2),
        ..FakeGoogleOptions::default()
    })
    .await;
    let ids: Vec<String> = (0..7)
        .map(|i| create(&app, "primary", timed(&format!("event {i}"), 1 + i, 10)))
        .collect();
    app.connect(1, "primary", &[]).await;
    app.run_once().await;
    assert_eq!(appointments(&app).await.len(), 7);

    for i in [0, 3, 6] {
        app.google
            .patch_event(
                "primary",
                &ids[i],
                json!({"summary": format!("edited {i}")}),
            )
            .unwrap();
    }
    // Slow down the pages after the first, and edit once the first is served.
    app.google.inject_fault(
        Operation::List,
        Fault::Delay {
            millis: std::time::Duration::ZERO,
        },
        1,
    );
    app.google.inject_fault(
        Operation::List,
        Fault::Delay {
            millis: std::time::Duration::from_millis(300),
        },
        3,
    );
    app.google.clear_requests();
    let out = app.run(&["resync", "--user", "1"], "").await;
    assert!(out.status.success());
    let mut running = app.command();
    running.args(["run", "--once"]);
    let child = tokio::spawn(async move { running.output().await.unwrap() });
    crate::harness::eventually(
        std::time::Duration::from_secs(20),
        "the first page",
        || async {
            list_requests(&app)
                .iter()
                .any(|r| r.status.is_some())
                .then_some(())
        },
    )
    .await;
    app.google
        .patch_event(
            "primary",
            &ids[1],
            json!({"summary": "edited while paging"}),
        )
        .unwrap();
    let out = child.await.unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let first_sync = list_requests(&app);
    assert!(first_sync.len() >= 2, "the changes span pages");
    let token = first_sync[0].query_param("syncToken").expect("incremental");
    for page in &first_sync {
        assert_eq!(
            page.query_param("syncToken").as_deref(),
            Some(token.as_str())
        );
        assert!(page.query_param("timeMin").is_none());
    }

    app.google.clear_requests();
    pull(&app, 1).await;
    let second_token = list_requests(&app)[0].query_param("syncToken").unwrap();
    assert_ne!(
        second_token, token,
        "the new token was stored at the end of the sync"
    );

    let summaries: Vec<String> = appointments(&app)
        .await
        .into_iter()
        .map(|r| r.summary)
        .collect();
    assert_eq!(
        summaries,
        vec![
            "edited 0",
            "edited while paging",
            "event 2",
            "edited 3",
            "event 4",
            "event 5",
            "edited 6"
        ]
    );
    // Each edit was emitted once, however the pages fell.
    let updated = deltas(&app)
        .await
        .iter()
        .filter(|(_, _, d)| d["action"] == "updated")
        .count();
    assert_eq!(updated, 4);
}

#[tokio::test]
async fn full_sync_after_410_sweeps_what_google_lost_keeps_old_ones_and_emits_only_changes() {
    let app = SyncApp::spawn().await;
    create(&app, "primary", timed("kept", 5, 9));
    let changed = create(&app, "primary", timed("changed", 6, 9));
    app.connect(1, "primary", &[]).await;
    app.run_once().await;
    assert_eq!(appointments(&app).await.len(), 2);
    let connection: i64 = sqlx::query_scalar("SELECT id FROM plansync.connections")
        .fetch_one(&app.app.pool)
        .await
        .unwrap();
    // Two linked appointments whose events Google no longer lists: one in the
    // window (swept), one that ended before the window (kept).
    for (summary, days, event) in [("gone", 7, "gone00001"), ("ancient", -400, "ancient0001")] {
        let start = Utc::now() + Duration::days(days);
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO appointments (user_id, summary, start_at, end_at) \
             VALUES (1, $1, $2, $3) RETURNING id",
        )
        .bind(summary)
        .bind(start)
        .bind(start + Duration::hours(1))
        .fetch_one(&app.app.pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO plansync.links (connection_id, appointment_id, event_id, etag) \
             VALUES ($1, $2, $3, '\"1\"')",
        )
        .bind(connection)
        .bind(id)
        .bind(event)
        .execute(&app.app.pool)
        .await
        .unwrap();
    }
    // Those inserts queued pushes; they are not this test's subject.
    sqlx::query("DELETE FROM plansync.jobs WHERE kind = 'push'")
        .execute(&app.app.pool)
        .await
        .unwrap();
    app.google
        .patch_event("primary", &changed, json!({"summary": "changed!"}))
        .unwrap();
    app.google.invalidate_sync_tokens("primary").unwrap();
    let before = deltas(&app).await.len();
    app.google.clear_requests();
    pull(&app, 1).await;

    let lists = list_requests(&app);
    assert!(lists[0].query_param("syncToken").is_some());
    assert_eq!(lists[0].status, Some(410));
    assert!(
        lists[1].query_param("timeMin").is_some(),
        "then a full listing"
    );

    let summaries: Vec<String> = appointments(&app)
        .await
        .into_iter()
        .map(|r| r.summary)
        .collect();
    assert_eq!(summaries, vec!["ancient", "kept", "changed!"]);
    let new: Vec<(String, String)> = deltas(&app).await[before..]
        .iter()
        .map(|(_, _, d)| {
            (
                d["action"].as_str().unwrap().to_owned(),
                d["entityId"].to_string(),
            )
        })
        .collect();
    assert_eq!(new.len(), 2, "only the edit and the sweep emit: {new:?}");
    assert!(new.iter().any(|(a, _)| a == "updated"));
    assert!(new.iter().any(|(a, _)| a == "deleted"));
}

#[tokio::test]
async fn a_page_changing_more_than_the_threshold_emits_one_plan_delta() {
    let app = SyncApp::spawn().await;
    for i in 0..5 {
        create(&app, "primary", timed(&format!("bulk {i}"), 1 + i, 8));
    }
    app.connect(1, "primary", &[]).await;
    app.run_once_with(&[("PLANSYNC_BULK_THRESHOLD", "3")]).await;
    assert_eq!(appointments(&app).await.len(), 5);
    let all = deltas(&app).await;
    assert_eq!(all.len(), 1);
    assert_eq!(
        all[0].2,
        json!({"itemType": "plan", "entityId": 0, "action": "updated", "version": 1, "source": "google"})
    );
    assert_eq!(app.app.plan_version(1).await, 1);
}

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

#[tokio::test]
async fn a_pull_killed_after_page_two_of_three_ends_like_an_uninterrupted_one() {
    async fn setup() -> SyncApp {
        let app = SyncApp::with_options(FakeGoogleOptions {
            page_cap: Some(2),
            ..FakeGoogleOptions::default()
        })
        .await;
        for i in 0..6 {
            create(&app, "primary", timed(&format!("e{i}"), 1 + i, 12));
        }
        app
    }
    let interrupted = setup().await;
    let smooth = setup().await;
    interrupted.connect(1, "primary", &[]).await;
    smooth.connect(1, "primary", &[]).await;

    // Pages 1 and 2 commit, page 3 fails: the job is retried (base delay 0).
    for _ in 0..2 {
        interrupted.google.inject_fault(
            Operation::List,
            Fault::Delay {
                millis: std::time::Duration::ZERO,
            },
            1,
        );
    }
    interrupted
        .google
        .inject_fault(Operation::List, Fault::BackendError, 1);
    interrupted.run_once().await;
    let (pages, rows): (Vec<_>, usize) = (
        list_requests(&interrupted),
        appointments(&interrupted).await.len(),
    );
    assert_eq!(
        pages.len(),
        3 + 3,
        "three pages failing at the third, then three again"
    );
    assert_eq!(rows, 6);
    smooth.run_once().await;

    let strip = |rows: Vec<Row>| -> Vec<(String, DateTime<Utc>, DateTime<Utc>)> {
        rows.into_iter()
            .map(|r| (r.summary, r.start_at, r.end_at))
            .collect()
    };
    assert_eq!(
        strip(appointments(&interrupted).await),
        strip(appointments(&smooth).await)
    );
    let links: i64 = sqlx::query_scalar("SELECT count(*) FROM plansync.links")
        .fetch_one(&interrupted.app.pool)
        .await
        .unwrap();
    assert_eq!(links, 6);
    let versions = |d: Vec<(i64, i64, Value)>| -> Vec<(i64, String)> {
        d.into_iter()
            .map(|(_, v, d)| (v, d["action"].as_str().unwrap().to_owned()))
            .collect()
    };
    assert_eq!(
        versions(deltas(&interrupted).await),
        versions(deltas(&smooth).await)
    );
    assert_eq!(interrupted.app.plan_version(1).await, 6);
}

async fn defer_pushes(app: &SyncApp) {
    // The local edit's push waits (as if backing off), so the pull decides.
    sqlx::query("UPDATE plansync.jobs SET run_at = now() + interval '1 hour' WHERE kind = 'push'")
        .execute(&app.app.pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_pending_local_edit_loses_to_a_newer_remote_edit_and_wins_over_an_older_one() {
    let app = SyncApp::spawn().await;
    let older_local = create(&app, "primary", timed("a", 2, 9));
    let newer_local = create(&app, "primary", timed("b", 3, 9));
    app.connect(1, "primary", &[]).await;
    app.run_once().await;

    // a: local edit first, remote edit after → Google wins.
    sqlx::query("UPDATE appointments SET summary = 'a local' WHERE summary = 'a'")
        .execute(&app.app.pool)
        .await
        .unwrap();
    app.google
        .patch_event("primary", &older_local, json!({"summary": "a remote"}))
        .unwrap();
    // b: remote edit first, local edit after → local wins.
    app.google
        .patch_event("primary", &newer_local, json!({"summary": "b remote"}))
        .unwrap();
    sqlx::query("UPDATE appointments SET summary = 'b local' WHERE summary = 'b'")
        .execute(&app.app.pool)
        .await
        .unwrap();
    defer_pushes(&app).await;
    pull(&app, 1).await;

    let summaries: Vec<String> = appointments(&app)
        .await
        .into_iter()
        .map(|r| r.summary)
        .collect();
    assert_eq!(summaries, vec!["a remote", "b local"]);
    let conflicts: Vec<(String, String, Value)> =
        sqlx::query_as("SELECT winner, kind, losing_values FROM plansync.conflicts ORDER BY id")
            .fetch_all(&app.app.pool)
            .await
            .unwrap();
    assert_eq!(conflicts.len(), 2);
    let by_winner = |w: &str| conflicts.iter().find(|c| c.0 == w).unwrap();
    assert_eq!(by_winner("google").2["summary"], "a local");
    assert_eq!(by_winner("local").2["summary"], "b remote");
    // The stale push of "a local" is dropped; b's push waits to send "b local".
    let pushes: Vec<String> = sqlx::query_scalar(
        "SELECT a.summary FROM plansync.jobs j JOIN appointments a ON a.id = j.appointment_id \
         WHERE j.kind = 'push' AND j.state = 'queued'",
    )
    .fetch_all(&app.app.pool)
    .await
    .unwrap();
    assert_eq!(pushes, vec!["b local"]);
    // The winning remote edit reached the clients; the kept local one needs no delta.
    let last = deltas(&app).await.pop().unwrap().2;
    assert_eq!(last["data"]["appointment"]["summary"], "a remote");
}

#[tokio::test]
async fn a_remote_delete_beats_a_pending_local_edit() {
    let app = SyncApp::spawn().await;
    let id = create(&app, "primary", timed("doomed", 2, 9));
    app.connect(1, "primary", &[]).await;
    app.run_once().await;
    sqlx::query("UPDATE appointments SET summary = 'edited locally'")
        .execute(&app.app.pool)
        .await
        .unwrap();
    app.google.delete_event("primary", &id).unwrap();
    defer_pushes(&app).await;
    pull(&app, 1).await;
    assert!(appointments(&app).await.is_empty());
    let (winner, kind): (String, String) =
        sqlx::query_as("SELECT winner, kind FROM plansync.conflicts")
            .fetch_one(&app.app.pool)
            .await
            .unwrap();
    assert_eq!((winner.as_str(), kind.as_str()), ("google", "delete"));
    let status = app.status().await;
    let last = &status["connections"][0]["lastConflict"];
    assert_eq!(last["winner"], "google");
    assert_eq!(last["kind"], "delete");
    assert_eq!(last["losingValues"]["summary"], "edited locally");
    assert!(last["detectedAt"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test]
async fn disconnect_then_connect_again_imports_nothing_twice() {
    let app = SyncApp::spawn().await;
    create(&app, "primary", timed("one", 2, 9));
    create(&app, "primary", timed("two", 3, 9));
    let connection = app.connect(1, "primary", &[]).await;
    app.run_once().await;
    let before = (appointments(&app).await, deltas(&app).await.len());
    let out = app
        .run(&["disconnect", "--connection", &connection.to_string()], "")
        .await;
    assert!(out.status.success());
    assert_eq!(app.connect(1, "primary", &[]).await, connection);
    app.run_once().await;
    assert_eq!((appointments(&app).await, deltas(&app).await.len()), before);
}

#[tokio::test]
async fn a_host_edit_committing_while_a_page_is_reconciled_is_never_overwritten_silently() {
    let app = SyncApp::spawn().await;
    let id = create(&app, "primary", timed("original", 2, 9));
    app.connect(1, "primary", &[]).await;
    app.run_once().await;
    app.google
        .patch_event("primary", &id, json!({"summary": "remote edit"}))
        .unwrap();
    let out = app.run(&["resync", "--user", "1"], "").await;
    assert!(out.status.success());

    // The host edits the appointment in a transaction it keeps open while
    // the pull reaches the page (its edit is newer than Google's).
    let mut host = app.app.pool.begin().await.unwrap();
    sqlx::query("UPDATE appointments SET summary = 'host edit'")
        .execute(&mut *host)
        .await
        .unwrap();
    let mut pass = app.command();
    pass.args(["run", "--once"]);
    let pass = tokio::spawn(async move { pass.output().await.unwrap() });
    let db = app.app.db_name.clone();
    crate::harness::eventually(
        std::time::Duration::from_secs(30),
        "the pull to wait on the host's row lock",
        || {
            let (pool, db) = (app.app.pool.clone(), db.clone());
            async move {
                let waiting: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 \
                 AND wait_event_type = 'Lock' AND application_name = 'plansync'",
                )
                .bind(db)
                .fetch_one(&pool)
                .await
                .unwrap();
                (waiting > 0).then_some(())
            }
        },
    )
    .await;
    host.commit().await.unwrap();
    let out = pass.await.unwrap();
    assert!(out.status.success(), "{}", stderr(&out));

    // The newer local edit stands, and Google's losing edit is on record.
    assert_eq!(appointments(&app).await[0].summary, "host edit");
    let (winner, losing): (String, Value) =
        sqlx::query_as("SELECT winner, losing_values FROM plansync.conflicts")
            .fetch_one(&app.app.pool)
            .await
            .unwrap();
    assert_eq!(winner, "local");
    assert_eq!(losing["summary"], "remote edit");
}

/// A pull listing while the calendar is disconnected (found by the
/// convergence test, seed 3011 at 150 steps): its page must not overwrite a
/// host edit made after the disconnect, which no push job records; the
/// re-connect pushes that edit.
#[tokio::test]
async fn a_pull_that_outlives_a_disconnect_leaves_edits_made_since_to_the_reconnect() {
    use plansync::ids::ConnectionId;
    let app = SyncApp::spawn().await;
    let connection = app.connect(1, "primary", &[]).await;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO appointments (user_id, summary, start_at, end_at) \
         VALUES (1, 'host v1', now() + interval '2 days', now() + interval '2 days 1 hour') \
         RETURNING id",
    )
    .fetch_one(&app.app.pool)
    .await
    .unwrap();
    app.run_once().await;
    let event: String =
        sqlx::query_scalar("SELECT event_id FROM plansync.links WHERE appointment_id = $1")
            .bind(id)
            .fetch_one(&app.app.pool)
            .await
            .unwrap();

    // Google's edit, which the slow pull below will carry.
    app.google
        .patch_event("primary", &event, json!({"summary": "google v2"}))
        .unwrap();
    app.google.inject_fault(
        Operation::List,
        Fault::Delay {
            millis: std::time::Duration::from_millis(1500),
        },
        1,
    );
    let out = app.run(&["resync", "--user", "1"], "").await;
    assert!(out.status.success(), "resync: {}", stderr(&out));
    app.google.clear_requests();
    let worker = crate::harness::WorkerProcess::start(app.worker_env(&[]), "slow", 4).await;
    let pass = worker.spawn_pass();
    // The pull checked the connection before it asked for a token; the token
    // request answered means the (slowed) list is on its way.
    crate::harness::eventually(
        std::time::Duration::from_secs(10),
        "the pull's token request",
        || async {
            app.google
                .requests()
                .iter()
                .any(|r| r.operation == Operation::Token)
                .then_some(())
        },
    )
    .await;
    plansync::store::connections::disconnect(&app.app.pool, ConnectionId(connection))
        .await
        .unwrap();
    sqlx::query("UPDATE appointments SET summary = 'host v3, offline' WHERE id = $1")
        .bind(id)
        .execute(&app.app.pool)
        .await
        .unwrap();
    pass.await.unwrap().unwrap();

    app.connect(1, "primary", &[]).await;
    app.run_once().await;
    let summary: String = sqlx::query_scalar("SELECT summary FROM appointments WHERE id = $1")
        .bind(id)
        .fetch_one(&app.app.pool)
        .await
        .unwrap();
    assert_eq!(summary, "host v3, offline", "the newer host edit stands");
    assert_eq!(
        app.google.get_event("primary", &event).unwrap()["summary"],
        "host v3, offline",
        "and reached Google"
    );
}
