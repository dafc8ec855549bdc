//! The fixtures under fixtures/, loaded as Google's format and served.

use super::*;

#[tokio::test]
async fn fixtures_load_in_googles_format() {
    let google = FakeGoogle::start(FakeGoogleOptions {
        fixtures: Some(fixtures("demo")),
        ..FakeGoogleOptions::default()
    })
    .await
    .unwrap();
    let api = Api::new(&google);
    let (items, _, _) = list_all(&api, "singleEvents=true&timeMin=2026-11-01T00:00:00Z").await;
    assert!(items.len() >= 12, "{}", items.len());
    let page = api.get(&format!("{EVENTS}?maxResults=1")).await.json();
    assert_eq!(page["timeZone"], "Europe/Berlin");
    // The fixture's cancelled instance stays cancelled, its moved one moved.
    let got = api
        .get(&format!("{EVENTS}/5tandup0ser1e5_20261204T080000Z"))
        .await
        .json();
    assert_eq!(got["status"], "cancelled");
    assert!(!ids(&items).contains(&"5tandup0ser1e5_20261204T080000Z".to_owned()));
}

async fn fixture_google(name: &str) -> (FakeGoogle, Api) {
    let google = FakeGoogle::start(FakeGoogleOptions {
        fixtures: Some(fixtures(name)),
        notify_on_change: false,
        ..FakeGoogleOptions::default()
    })
    .await
    .unwrap_or_else(|e| panic!("fixtures/{name}: {e}"));
    let api = Api::new(&google);
    (google, api)
}

#[tokio::test]
async fn the_recurring_fixtures_expand_with_their_exceptions() {
    let (_google, api) = fixture_google("recurring").await;
    let (items, _, _) = list_all(&api, "singleEvents=true&orderBy=startTime").await;
    let ids = ids(&items);
    let of = |prefix: &str| {
        ids.iter()
            .filter(|id| id.starts_with(prefix))
            .cloned()
            .collect::<Vec<_>>()
    };

    // Every other day until 15 Dec, minus the EXDATE of 24 Nov.
    let vitamins = of("da1l00p1lls_");
    assert_eq!(vitamins.len(), 12, "{vitamins:?}");
    assert!(!vitamins.contains(&"da1l00p1lls_20261124T080000Z".to_owned()));
    // Ten Tue/Thu sessions, one moved, one cancelled.
    let squash = of("5qua5h0tue0thu_");
    assert_eq!(squash.len(), 9, "{squash:?}");
    let moved = items
        .iter()
        .find(|i| i["id"] == "5qua5h0tue0thu_20261126T180000Z")
        .unwrap();
    assert_eq!(moved["start"]["dateTime"], "2026-11-26T19:30:00Z");
    // A deleted series shows nothing unless deletions are asked for.
    assert!(of("c0de0c1ub0ended").is_empty());
    let (with_deleted, _, _) = list_all(&api, "singleEvents=true&showDeleted=true").await;
    assert_eq!(
        with_deleted
            .iter()
            .filter(|i| i["recurringEventId"] == "c0de0c1ub0ended" && i["status"] == "cancelled")
            .count(),
        6
    );
    // An all-day fortnightly series with a moved instance keeps date ids.
    let bins = items
        .iter()
        .find(|i| i["id"] == "b1n5a1lda1_20261207")
        .unwrap();
    assert_eq!(bins["start"], json!({"date": "2026-12-08"}));
    assert_eq!(bins["originalStartTime"], json!({"date": "2026-12-07"}));
    // An open-ended monthly series stops two years ahead at the latest.
    let paydays = of("m0nth1u0pa1da1_");
    assert!((20..=26).contains(&paydays.len()), "{}", paydays.len());
}

#[tokio::test]
async fn the_timezone_fixtures_keep_wall_times_across_dst() {
    let (_google, api) = fixture_google("timezones").await;
    let (items, _, _) = list_all(&api, "singleEvents=true&orderBy=startTime").await;
    let series: Vec<&Value> = items
        .iter()
        .filter(|i| i["recurringEventId"] == "n0dst0ser1e5")
        .collect();
    let series_ids: Vec<&str> = series.iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert_eq!(
        series_ids,
        [
            "n0dst0ser1e5_20261019T130000Z",
            "n0dst0ser1e5_20261026T130000Z",
            "n0dst0ser1e5_20261102T140000Z",
            "n0dst0ser1e5_20261109T140000Z",
            "n0dst0ser1e5_20261116T140000Z"
        ]
    );
    assert!(series.iter().all(|i| i["start"]["dateTime"]
        .as_str()
        .unwrap()
        .contains("T09:00:00")));
    let zoneless = items.iter().find(|i| i["id"] == "n0t1me20ne0ut00").unwrap();
    assert!(zoneless["start"].get("timeZone").is_none());
    assert_eq!(
        zoneless["start"]["dateTime"], "2026-12-02T13:00:00+01:00",
        "shown in the calendar's zone"
    );

    let chicago = api
        .get("/calendar/v3/calendars/chicago%40group.calendar.google.com/events?singleEvents=true")
        .await
        .json();
    assert_eq!(chicago["timeZone"], "America/Chicago");
    assert_eq!(
        chicago["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["recurringEventId"] == "ch1ca0o0standup")
            .count(),
        15
    );
}

#[tokio::test]
async fn the_bench_fixture_lists_ten_thousand_events_in_pages() {
    let (_google, api) = fixture_google("bench").await;
    let (items, _, pages) = list_all(&api, "maxResults=2500").await;
    assert_eq!(items.len(), 10_000);
    assert_eq!(pages, 4);
}
