//! Listings that are not what they should be: incomplete, unreadable events,
//! repeated page tokens.

use super::*;

#[tokio::test]
async fn a_listing_that_is_not_a_complete_listing_never_deletes() {
    let (app, id, mut deltas) = synced().await;
    let token = sync_token(&app, id).await;
    assert!(token.is_some());
    let cases = [
        // A proxy relaying an error object with a 200.
        (
            r#"{"error":{"message":"upstream timed out"}}"#,
            true,
            "no kind",
        ),
        // An "empty calendar" that is no listing at all.
        (
            r#"{"kind":"calendar#events","nextSyncToken":"s"}"#,
            true,
            "no items",
        ),
        // A last page that does not end the listing.
        (r#"{"kind":"calendar#events","items":[]}"#, false, "neither"),
        (
            r#"{"kind":"calendar#events","items":[],"nextPageToken":"p","nextSyncToken":"s"}"#,
            true,
            "both",
        ),
        (
            r#"<html>502 bad gateway</html>"#,
            false,
            "not a valid events.list page",
        ),
    ];
    for (body, full, what) in cases {
        app.google
            .inject_fault(Operation::List, respond(200, body), 100);
        resync(&app, 1, full).await;
        app.run_once().await;
        app.google.clear_faults();

        assert_eq!(summaries(&app).await, ["alpha", "beta", "gamma"], "{body}");
        assert_eq!(
            sync_token(&app, id).await,
            token,
            "{body}: the token is kept"
        );
        deltas.assert_no_deletes(&app).await;
        let c = connection_status(&app.status().await, id);
        let err = c["lastError"].as_str().unwrap_or_default();
        assert!(err.contains(what), "{body}: lastError {err:?}");
        assert!(c["failingSince"].is_string(), "{c}");
    }
    // Google answers properly again: the connection recovers.
    resync(&app, 1, true).await;
    app.run_once().await;
    let c = connection_status(&app.status().await, id);
    assert!(
        c["lastError"].is_null() && c["failingSince"].is_null(),
        "{c}"
    );
    assert_eq!(summaries(&app).await, ["alpha", "beta", "gamma"]);
}

#[tokio::test]
async fn events_that_cannot_be_read_are_set_aside_and_the_calendar_syncs() {
    let app = SyncApp::spawn().await;
    let mut deltas = Deltas::subscribe(&app).await;
    let mut good = Vec::new();
    for (i, s) in ["one", "two", "three", "four"].iter().enumerate() {
        let e = app
            .google
            .create_event("primary", timed(s, 1 + i as i64, 9))
            .unwrap();
        good.push(e["id"].as_str().unwrap().to_owned());
    }
    let (s, e) = (at(2, 14), at(2, 15));
    let updated = "2026-01-01T00:00:00.000Z";
    let item = |id: &str, extra: &str| {
        format!(
            r#"{{"kind":"calendar#event","id":"{id}","etag":"\"e-{id}\"","status":"confirmed","updated":"{updated}","start":{{"dateTime":"{s}"}},"end":{{"dateTime":"{e}"}}{extra}}}"#
        )
    };
    let long_id = "v".repeat(3_000_000);
    let raws = [
        item("nulsummary", r#","summary":"Lunch\u0000 with Bob""#),
        format!(
            r#"{{"kind":"calendar#event","id":"nostart","etag":"\"1\"","status":"confirmed","updated":"{updated}","end":{{"dateTime":"{e}"}}}}"#
        ),
        format!(
            r#"{{"kind":"calendar#event","id":"faraway","etag":"\"1\"","status":"confirmed","updated":"{updated}","start":{{"dateTime":"{s}"}},"end":{{"dateTime":"+275760-09-13T00:00:00Z"}}}}"#
        ),
        item("surrogate", r#","summary":"a\ud800b""#),
        item("numbersummary", r#","summary":123"#),
        r#"{"kind":"calendar#event","id":"weirdstatus","status":"postponed"}"#.to_owned(),
        format!(
            r#"{{"kind":"calendar#event","id":"nooffset","etag":"\"1\"","updated":"{updated}","start":{{"dateTime":"2026-06-10T12:00:00"}},"end":{{"dateTime":"2026-06-10T13:00:00"}}}}"#
        ),
        item(&long_id, ""),
        item("nul\\u0000id", ""),
        format!(
            r#"{{"kind":"calendar#event","id":"nuletag","etag":"a\u0000b","updated":"{updated}","start":{{"dateTime":"{s}"}},"end":{{"dateTime":"{e}"}}}}"#
        ),
        r#"{"kind":"calendar#event","summary":"no id at all"}"#.to_owned(),
    ];
    for raw in &raws {
        app.google.add_raw_item("primary", raw.clone());
    }
    let id = app.connect(1, "primary", &[]).await;
    app.run_once().await;

    assert_eq!(
        summaries(&app).await,
        ["Lunch with Bob", "four", "one", "three", "two"],
        "the good events and the NUL one (without its NUL) are appointments"
    );
    assert!(sync_token(&app, id).await.is_some(), "the token advanced");
    let status = app.status().await;
    let c = connection_status(&status, id);
    let skipped = c["skippedEvents"].as_array().unwrap().clone();
    let reason_of = |event: &str| -> String {
        skipped
            .iter()
            .find(|s| s["eventId"] == event)
            .unwrap_or_else(|| panic!("{event} is set aside: {skipped:?}"))["reason"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert!(reason_of("nostart").contains("no start"));
    assert!(reason_of("faraway").contains("decode"));
    assert!(reason_of("surrogate").contains("decode"));
    assert!(reason_of("numbersummary").contains("decode"));
    assert!(reason_of("weirdstatus").contains("unknown status"));
    assert!(reason_of("nooffset").contains("decode"));
    assert!(reason_of("nulid").contains("control characters"));
    assert!(reason_of("nuletag").contains("etag"));
    let cut = skipped
        .iter()
        .find(|s| s["eventId"].as_str().is_some_and(|i| i.starts_with("vvvv")))
        .expect("the 3 MB id is set aside");
    assert_eq!(cut["eventId"].as_str().unwrap().chars().count(), 200);
    assert!(cut["eventId"].as_str().unwrap().ends_with('…'));
    assert!(skipped.iter().any(|s| s["eventId"].is_null()));
    assert!(skipped.iter().all(|s| s["seenAt"].is_string()));
    assert_eq!(skipped.len(), 11 - 1);
    assert!(c["lastError"].is_null(), "the calendar is not failing: {c}");

    // Human status and /metrics-facing counts name them too.
    let human = stdout(&app.run(&["status"], "").await);
    assert!(human.contains("skipped events: 10"), "{human}");

    // A later edit in Google of a good event arrives incrementally.
    app.google
        .patch_event("primary", &good[1], json!({"summary": "two (moved)"}))
        .unwrap();
    resync(&app, 1, false).await;
    app.run_once().await;
    assert!(summaries(&app).await.contains(&"two (moved)".to_owned()));
    let lists: Vec<_> = app
        .google
        .requests()
        .into_iter()
        .filter(|r| r.operation == Operation::List)
        .collect();
    assert!(
        lists
            .last()
            .unwrap()
            .query
            .as_deref()
            .unwrap_or("")
            .contains("syncToken"),
        "the edit came through an incremental listing"
    );
    deltas.assert_no_deletes(&app).await;

    // Once Google lists a set-aside event in a form we can read, it imports
    // and leaves the list.
    app.google.clear_raw_items("primary");
    app.google
        .add_raw_item("primary", item("nostart", r#","summary":"fixed now""#));
    resync(&app, 1, false).await;
    app.run_once().await;
    assert!(summaries(&app).await.contains(&"fixed now".to_owned()));
    let c = connection_status(&app.status().await, id);
    assert!(
        c["skippedEvents"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["eventId"] != "nostart"),
        "{c}"
    );
}

#[tokio::test]
async fn every_job_ends_even_when_google_repeats_a_page_token() {
    let (app, id, mut deltas) = synced().await;
    let token = sync_token(&app, id).await;
    app.google.clear_requests();
    app.google.inject_fault(
        Operation::List,
        respond(
            200,
            r#"{"kind":"calendar#events","items":[],"nextPageToken":"again"}"#,
        ),
        100_000,
    );
    resync(&app, 1, true).await;
    // run --once returns: the job fails at the repeated token, each attempt.
    tokio::time::timeout(Duration::from_secs(120), app.run_once())
        .await
        .expect("run --once returns");
    let lists = app
        .google
        .requests()
        .iter()
        .filter(|r| r.operation == Operation::List)
        .count();
    assert!(lists <= 2 * 8, "{lists} list calls for 8 attempts");
    assert_eq!(summaries(&app).await, ["alpha", "beta", "gamma"]);
    assert_eq!(sync_token(&app, id).await, token);
    deltas.assert_no_deletes(&app).await;
    let status = app.status().await;
    let c = connection_status(&status, id);
    assert!(
        c["lastError"]
            .as_str()
            .unwrap()
            .contains("repeated a page token"),
        "{c}"
    );
    assert!(status["queue"]["deadTotal"].as_i64().unwrap() >= 1);
    app.google.clear_faults();

    // More pages than PLANSYNC_MAX_PAGES fail the same way.
    app.google.set_page_cap(Some(1));
    resync(&app, 1, true).await;
    app.run_once_with(&[("PLANSYNC_MAX_PAGES", "2")]).await;
    let c = connection_status(&app.status().await, id);
    assert!(
        c["lastError"]
            .as_str()
            .unwrap()
            .contains("PLANSYNC_MAX_PAGES"),
        "{c}"
    );
    assert_eq!(summaries(&app).await, ["alpha", "beta", "gamma"]);
    deltas.assert_no_deletes(&app).await;
}

#[tokio::test]
async fn a_set_aside_event_with_a_long_id_keeps_its_appointment_through_a_full_sync() {
    let (app, id, mut deltas) = synced().await;
    let long = "a".repeat(300);
    app.google
        .create_event(
            "primary",
            json!({"id": long, "summary": "long id", "start": {"dateTime": at(4, 10)}, "end": {"dateTime": at(4, 11)}}),
        )
        .unwrap();
    resync(&app, 1, false).await;
    app.run_once().await;
    assert!(summaries(&app).await.contains(&"long id".to_owned()));
    // A full listing in which that event cannot be read (and the others are
    // gone): the others are swept, the set-aside one keeps its appointment.
    let page = format!(
        r#"{{"kind":"calendar#events","nextSyncToken":"t2","items":[{{"id":"{long}","summary":123}}]}}"#
    );
    app.google
        .inject_fault(Operation::List, respond(200, &page), 1);
    resync(&app, 1, true).await;
    app.run_once().await;
    assert_eq!(summaries(&app).await, ["long id"]);
    let c = connection_status(&app.status().await, id);
    assert_eq!(c["skippedEvents"].as_array().unwrap().len(), 1, "{c}");
    let all = deltas.settle(&app).await;
    assert_eq!(
        all.iter().filter(|d| d["action"] == "deleted").count(),
        3,
        "only the three absent events are deleted: {all:?}"
    );
}
