//! Listing: pages, sync tokens and their 410, the parameters Google refuses
//! beside a sync token, recurring series.

use super::*;

#[tokio::test]
async fn paging_with_a_change_in_the_middle_loses_nothing() {
    let google = empty_google().await;
    google.set_page_cap(Some(2));
    for n in 0..6 {
        google
            .create_event(
                "primary",
                timed(
                    &format!("event{n:04}"),
                    &format!("Event {n}"),
                    "2026-12-01T10:00:00Z",
                    "2026-12-01T11:00:00Z",
                ),
            )
            .unwrap();
    }
    let api = Api::new(&google);

    // Page 1 of a full sync, then the user changes things while we page.
    let first = api.get(&format!("{EVENTS}?maxResults=250")).await.json();
    assert_eq!(
        ids(first["items"].as_array().unwrap()),
        ["event0000", "event0001"]
    );
    assert!(first.get("nextSyncToken").is_none());
    google
        .patch_event(
            "primary",
            "event0000",
            json!({"summary": "Edited after it was listed"}),
        )
        .unwrap();
    google.delete_event("primary", "event0004").unwrap();
    google
        .create_event(
            "primary",
            timed(
                "event0002a",
                "Created while paging",
                "2026-12-02T10:00:00Z",
                "2026-12-02T11:00:00Z",
            ),
        )
        .unwrap();

    let mut seen: Vec<String> = ids(first["items"].as_array().unwrap());
    let mut token = first["nextPageToken"].as_str().unwrap().to_owned();
    let sync_token = loop {
        let page = api
            .get(&format!(
                "{EVENTS}?maxResults=250&pageToken={}",
                enc(&token)
            ))
            .await
            .json();
        assert!(
            page["items"].as_array().unwrap().len() <= 2,
            "the page cap holds"
        );
        seen.extend(ids(page["items"].as_array().unwrap()));
        match (
            page["nextPageToken"].as_str(),
            page["nextSyncToken"].as_str(),
        ) {
            (Some(next), None) => token = next.to_owned(),
            (None, Some(sync)) => break sync.to_owned(),
            other => panic!("exactly one token per page: {other:?}"),
        }
    };
    // Nothing listed twice by position, nothing skipped that existed throughout.
    for id in ["event0001", "event0002", "event0003", "event0005"] {
        assert!(seen.contains(&id.to_owned()), "{id} missing from {seen:?}");
    }

    // Every change made during paging comes with the next sync.
    let (changes, next_sync, pages) =
        list_all(&api, &format!("syncToken={}", enc(&sync_token))).await;
    assert_eq!(pages, 2, "incremental lists page too");
    let changed: HashSet<String> = ids(&changes).into_iter().collect();
    assert_eq!(changed.len(), 3, "{changed:?}");
    for id in ["event0000", "event0004", "event0002a"] {
        assert!(
            changed.contains(id),
            "{id} missing from incremental {changed:?}"
        );
    }
    let deleted = changes.iter().find(|i| i["id"] == "event0004").unwrap();
    assert_eq!(deleted["status"], "cancelled");
    let mut keys: Vec<&str> = deleted
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        ["etag", "id", "kind", "status"],
        "a cancelled event has Google's minimal body"
    );
    let (quiet, _, _) = list_all(&api, &format!("syncToken={}", enc(&next_sync))).await;
    assert!(quiet.is_empty(), "nothing changed since: {quiet:?}");
}

#[tokio::test]
async fn an_invalidated_sync_token_answers_410_then_a_full_list_works() {
    let google = empty_google().await;
    google
        .create_event(
            "primary",
            timed(
                "abcde1",
                "One",
                "2026-12-01T10:00:00Z",
                "2026-12-01T11:00:00Z",
            ),
        )
        .unwrap();
    let api = Api::new(&google);
    let (_, token, _) = list_all(&api, "showDeleted=false").await;
    assert_eq!(
        api.get(&format!("{EVENTS}?syncToken={}", enc(&token)))
            .await
            .status,
        StatusCode::OK
    );

    google.invalidate_sync_tokens("primary").unwrap();
    let gone = api
        .get(&format!("{EVENTS}?syncToken={}", enc(&token)))
        .await;
    assert_eq!(gone.status, StatusCode::GONE);
    assert_eq!(
        gone.json(),
        error_file("410-fullSyncRequired.json"),
        "Google's exact body"
    );
    assert_eq!(gone.reason(), "fullSyncRequired");

    let (items, fresh, _) = list_all(&api, "showDeleted=false").await;
    assert_eq!(ids(&items), ["abcde1"]);
    let again = api
        .get(&format!("{EVENTS}?syncToken={}", enc(&fresh)))
        .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text);
    assert_eq!(again.json()["items"], json!([]));

    let unknown = api
        .get(&format!(
            "{EVENTS}?syncToken={}",
            enc("CPDAlvWDx70CEPDAlvWDx70CGAU=")
        ))
        .await;
    assert_eq!(unknown.status, StatusCode::GONE);
    assert_eq!(unknown.reason(), "fullSyncRequired");
}

#[tokio::test]
async fn parameters_google_refuses_beside_a_sync_token_answer_400() {
    let google = empty_google().await;
    let api = Api::new(&google);
    let (_, token, _) = list_all(&api, "singleEvents=true").await;
    let token = enc(&token);
    for extra in [
        "timeMin=2026-01-01T00:00:00Z",
        "timeMax=2027-01-01T00:00:00Z",
        "updatedMin=2026-01-01T00:00:00Z",
        "orderBy=startTime",
        "q=dentist",
        "iCalUID=abc%40google.com",
        "privateExtendedProperty=a%3Db",
        "sharedExtendedProperty=a%3Db",
    ] {
        let answer = api
            .get(&format!(
                "{EVENTS}?singleEvents=true&syncToken={token}&{extra}"
            ))
            .await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{extra}: {}",
            answer.text
        );
        assert_eq!(answer.json()["error"]["code"], 400);
    }
    let fine = api
        .get(&format!(
            "{EVENTS}?singleEvents=true&showDeleted=true&maxResults=10&syncToken={token}"
        ))
        .await;
    assert_eq!(fine.status, StatusCode::OK, "{}", fine.text);
}

#[tokio::test]
async fn a_series_expands_with_a_moved_and_a_cancelled_instance_across_dst() {
    let google = empty_google().await;
    google
        .add_calendar(
            "chicago@group.calendar.google.com",
            "Chicago",
            "America/Chicago",
        )
        .unwrap();
    let api = Api::new(&google);
    // 09:00 New York, weekly from the week before the US DST change
    // (2026-11-01): 13:00Z before it, 14:00Z after.
    let series = json!({
        "id": "ser1e50n",
        "summary": "Weekly in New York",
        "start": {"dateTime": "2026-10-26T09:00:00", "timeZone": "America/New_York"},
        "end": {"dateTime": "2026-10-26T09:30:00", "timeZone": "America/New_York"},
        "recurrence": ["RRULE:FREQ=WEEKLY;COUNT=4"],
    });
    let created = api.call(Method::POST, EVENTS, &[], Some(series)).await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.text);
    let (_, token, _) = list_all(&api, "singleEvents=true").await;

    // Move the second instance, cancel the third (as the API's user would).
    let moved = api
        .call(
            Method::PATCH,
            &format!("{EVENTS}/ser1e50n_20261102T140000Z"),
            &[],
            Some(json!({"start": {"dateTime": "2026-11-03T10:00:00-05:00"}, "end": {"dateTime": "2026-11-03T10:30:00-05:00"}})),
        )
        .await;
    assert_eq!(moved.status, StatusCode::OK, "{}", moved.text);
    assert_eq!(moved.json()["recurringEventId"], "ser1e50n");
    let cancelled = api
        .call(
            Method::DELETE,
            &format!("{EVENTS}/ser1e50n_20261109T140000Z"),
            &[],
            None,
        )
        .await;
    assert_eq!(cancelled.status, StatusCode::NO_CONTENT);

    let (items, _, _) = list_all(&api, "singleEvents=true&orderBy=startTime").await;
    assert_eq!(
        ids(&items),
        [
            "ser1e50n_20261026T130000Z",
            "ser1e50n_20261102T140000Z",
            "ser1e50n_20261116T140000Z"
        ]
    );
    assert_eq!(items[0]["start"]["dateTime"], "2026-10-26T09:00:00-04:00");
    assert_eq!(
        items[0]["originalStartTime"]["dateTime"],
        "2026-10-26T09:00:00-04:00"
    );
    assert_eq!(items[2]["start"]["dateTime"], "2026-11-16T09:00:00-05:00");
    assert_eq!(items[1]["start"]["dateTime"], "2026-11-03T10:00:00-05:00");
    assert_eq!(
        items[1]["originalStartTime"]["dateTime"],
        "2026-11-02T09:00:00-05:00"
    );
    assert!(items.iter().all(|i| i["recurringEventId"] == "ser1e50n"));

    // Incremental: the moved instance in full, the cancelled one minimal.
    let changes = api
        .get(&format!(
            "{EVENTS}?singleEvents=true&syncToken={}",
            enc(&token)
        ))
        .await
        .json();
    let changed = changes["items"].as_array().unwrap();
    assert_eq!(changed.len(), 2, "{changed:?}");
    let gone = changed.iter().find(|i| i["status"] == "cancelled").unwrap();
    assert_eq!(gone["id"], "ser1e50n_20261109T140000Z");
    assert_eq!(gone["recurringEventId"], "ser1e50n");
    assert_eq!(
        gone["originalStartTime"]["dateTime"],
        "2026-11-09T09:00:00-05:00"
    );

    // Without singleEvents: the series plus its exceptions.
    let (raw, _, _) = list_all(&api, "singleEvents=false").await;
    let raw_ids: HashSet<String> = ids(&raw).into_iter().collect();
    assert!(raw_ids.contains("ser1e50n") && raw_ids.contains("ser1e50n_20261102T140000Z"));

    // An all-day series on another calendar keeps date-only ids.
    let chicago = "/calendar/v3/calendars/chicago%40group.calendar.google.com/events";
    let all_day = json!({"id": "a11da0ser1", "summary": "Bins", "start": {"date": "2026-12-01"}, "end": {"date": "2026-12-02"},
        "recurrence": ["RRULE:FREQ=MONTHLY;BYDAY=1TU;COUNT=2"]});
    assert_eq!(
        api.call(Method::POST, chicago, &[], Some(all_day))
            .await
            .status,
        StatusCode::OK
    );
    let page = api
        .get(&format!("{chicago}?singleEvents=true"))
        .await
        .json();
    assert_eq!(page["timeZone"], "America/Chicago");
    assert_eq!(
        ids(page["items"].as_array().unwrap()),
        ["a11da0ser1_20261201", "a11da0ser1_20270105"]
    );
}
