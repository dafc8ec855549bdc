//! Pulls: deltas and versions, incremental pages and sync tokens, the 410
//! full sync and its sweep, the bulk fallback, an interrupted pull.

use super::*;

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
