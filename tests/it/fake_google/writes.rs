//! Writes: idempotent inserts (409), etags (412), deletes (410).

use super::*;

#[tokio::test]
async fn a_retried_insert_gets_409_duplicate_even_after_a_delete() {
    let google = empty_google().await;
    let api = Api::new(&google);
    let event = timed(
        "pl4n5unc0app0042",
        "Ours",
        "2026-12-01T10:00:00Z",
        "2026-12-01T11:00:00Z",
    );
    let created = api
        .call(Method::POST, EVENTS, &[], Some(event.clone()))
        .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.text);
    let body = created.json();
    assert_eq!(body["id"], "pl4n5unc0app0042");
    assert_eq!(body["status"], "confirmed");
    assert!(body["etag"].as_str().unwrap().starts_with('"'));

    let retried = api
        .call(Method::POST, EVENTS, &[], Some(event.clone()))
        .await;
    assert_eq!(retried.status, StatusCode::CONFLICT);
    assert_eq!(retried.json(), error_file("409-duplicate.json"));

    google.delete_event("primary", "pl4n5unc0app0042").unwrap();
    let after_delete = api.call(Method::POST, EVENTS, &[], Some(event)).await;
    assert_eq!(
        after_delete.status,
        StatusCode::CONFLICT,
        "deleted ids stay taken"
    );
    assert_eq!(after_delete.reason(), "duplicate");

    for bad_id in ["abcd", "UPPERCASE1", "has_underscore", "wxyz0"] {
        let answer = api
            .call(
                Method::POST,
                EVENTS,
                &[],
                Some(timed(
                    bad_id,
                    "x",
                    "2026-12-01T10:00:00Z",
                    "2026-12-01T11:00:00Z",
                )),
            )
            .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{bad_id}");
        assert_eq!(answer.reason(), "invalid");
    }
}

#[tokio::test]
async fn a_stale_etag_gets_412_and_every_write_bumps_etag_and_updated() {
    let google = empty_google().await;
    let api = Api::new(&google);
    let mut event = timed(
        "etag0test1",
        "Before",
        "2026-12-01T10:00:00Z",
        "2026-12-01T11:00:00Z",
    );
    event["description"] = json!("to be cleared");
    let created = api
        .call(Method::POST, EVENTS, &[], Some(event))
        .await
        .json();
    let etag = created["etag"].as_str().unwrap().to_owned();
    let path = format!("{EVENTS}/etag0test1");

    // The user edits it in Google's UI: our etag is now stale.
    let edited = google
        .patch_event(
            "primary",
            "etag0test1",
            json!({"summary": "Edited by the user"}),
        )
        .unwrap();
    assert_ne!(edited["etag"], created["etag"]);
    assert!(edited["updated"].as_str().unwrap() > created["updated"].as_str().unwrap());

    let stale = api
        .call(
            Method::PATCH,
            &path,
            &[("If-Match", &etag)],
            Some(json!({"summary": "Ours"})),
        )
        .await;
    assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(stale.json(), error_file("412-conditionNotMet.json"));
    let stale_delete = api
        .call(Method::DELETE, &path, &[("If-Match", &etag)], None)
        .await;
    assert_eq!(stale_delete.reason(), "conditionNotMet");

    let current = edited["etag"].as_str().unwrap();
    let patched = api
        .call(
            Method::PATCH,
            &path,
            &[("If-Match", current)],
            Some(json!({"summary": "Ours", "description": null})),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.text);
    let patched = patched.json();
    assert_eq!(patched["summary"], "Ours");
    assert!(patched.get("description").is_none(), "null clears a field");
    assert_ne!(patched["etag"], edited["etag"]);
    assert!(patched["updated"].as_str().unwrap() > edited["updated"].as_str().unwrap());
    let updated = patched["updated"].as_str().unwrap();
    assert_eq!(
        updated.len(),
        "2026-12-01T10:00:00.000Z".len(),
        "RFC 3339 with millis: {updated}"
    );

    let log = google.requests();
    let last_patch = log
        .iter()
        .rev()
        .find(|r| r.operation == Operation::Patch)
        .unwrap();
    assert_eq!(last_patch.if_match.as_deref(), Some(current));
    assert_eq!(last_patch.status, Some(200));
    assert_eq!(
        last_patch.body.as_ref().unwrap()["description"],
        Value::Null
    );
}

#[tokio::test]
async fn deleting_twice_answers_410_deleted_and_get_shows_cancelled() {
    let google = empty_google().await;
    let api = Api::new(&google);
    api.call(
        Method::POST,
        EVENTS,
        &[],
        Some(timed(
            "d0ubledel",
            "x",
            "2026-12-01T10:00:00Z",
            "2026-12-01T11:00:00Z",
        )),
    )
    .await;
    let path = format!("{EVENTS}/d0ubledel");
    assert_eq!(
        api.call(Method::DELETE, &path, &[], None).await.status,
        StatusCode::NO_CONTENT
    );
    let again = api.call(Method::DELETE, &path, &[], None).await;
    assert_eq!(again.status, StatusCode::GONE);
    assert_eq!(again.json(), error_file("410-deleted.json"));

    let got = api.get(&path).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.json()["status"], "cancelled");

    let unknown = api.get(&format!("{EVENTS}/n0such0event")).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.json(), error_file("404-notFound.json"));
    let unknown_calendar = api
        .get("/calendar/v3/calendars/nobody%40example.com/events")
        .await;
    assert_eq!(unknown_calendar.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown_calendar.reason(), "notFound");
}
