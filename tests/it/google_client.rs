//! Our `google` client and token provider against the `fake_google` emulator,
//! over real HTTP: each Google behaviour sync relies on, and the classified
//! error (with Google's `reason` where it matters) of each failure.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use plansync::config::GoogleSettings;
use plansync::google::{
    CalendarClient, GoogleClient, GoogleError, ListQuery, NewEvent, NextStep, RemoteEvent,
    RemoteEventKind, WatchRequest,
};
use plansync::ids::{CalendarId, Etag, EventId, RefreshToken, SyncToken};
use plansync::model::AppointmentFields;
use plansync_fake_google::{FakeGoogle, FakeGoogleOptions, Fault, Lost, Operation};
use serde_json::json;

struct Setup {
    fake: FakeGoogle,
    google: GoogleClient,
    refresh_token: String,
}

impl Setup {
    async fn start() -> Setup {
        Setup::with(FakeGoogleOptions::default()).await
    }

    async fn with(options: FakeGoogleOptions) -> Setup {
        let fake = FakeGoogle::start(FakeGoogleOptions {
            notify_on_change: false,
            ..options
        })
        .await
        .expect("the emulator starts");
        let google = GoogleClient::new(&settings(&fake, &fake.client_secret()))
            .expect("the client builds")
            .with_call_timeout(Duration::from_secs(10));
        let refresh_token = fake.refresh_tokens()[0].clone();
        Setup {
            fake,
            google,
            refresh_token,
        }
    }

    fn client(&self) -> CalendarClient {
        self.google
            .calendar_client(RefreshToken::new(self.refresh_token.clone()))
    }

    fn token_calls(&self) -> usize {
        self.fake
            .requests()
            .iter()
            .filter(|r| r.operation == Operation::Token)
            .count()
    }

    fn calls(&self, operation: Operation) -> Vec<plansync_fake_google::RecordedRequest> {
        self.fake
            .requests()
            .into_iter()
            .filter(|r| r.operation == operation)
            .collect()
    }
}

fn settings(fake: &FakeGoogle, client_secret: &str) -> GoogleSettings {
    GoogleSettings {
        calendar_base_url: fake.base_url(),
        token_url: fake.token_url(),
        client_id: fake.client_id(),
        client_secret: client_secret.to_owned().into(),
    }
}

fn primary() -> CalendarId {
    CalendarId::from("primary")
}

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn dentist() -> AppointmentFields {
    AppointmentFields {
        summary: "Dentist".into(),
        description: Some("bring the card".into()),
        location: Some("Main St 1".into()),
        start_at: utc("2030-06-10T10:00:00Z"),
        end_at: utc("2030-06-10T11:00:00Z"),
        start_time_zone: Some("Europe/Berlin".into()),
        end_time_zone: Some("Europe/Berlin".into()),
        all_day: false,
    }
}

fn props(appointment: i64) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("plansyncAppointment".to_owned(), appointment.to_string()),
        ("plansyncConnection".to_owned(), "1".to_owned()),
    ])
}

/// Creates `n` events as the user would, starting in 2030.
fn create_events(fake: &FakeGoogle, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let created = fake
                .create_event(
                    "primary",
                    json!({
                        "summary": format!("event {i}"),
                        "start": {"dateTime": format!("2030-01-{:02}T09:00:00Z", i + 1)},
                        "end": {"dateTime": format!("2030-01-{:02}T10:00:00Z", i + 1)},
                    }),
                )
                .expect("event created");
            created["id"].as_str().unwrap().to_owned()
        })
        .collect()
}

async fn insert(client: &CalendarClient, id: &str, appointment: i64) -> Etag {
    client
        .insert_event(
            &primary(),
            NewEvent {
                id: &EventId::new(id),
                fields: &dentist(),
                private_properties: &props(appointment),
            },
            None,
        )
        .await
        .expect("insert succeeds")
        .etag
}

fn time_min() -> DateTime<Utc> {
    utc("2029-01-01T00:00:00Z")
}

/// Lists every page of `query`, returning the events and the sync token of
/// the last page, asserting no earlier page carries one.
async fn list_all(client: &CalendarClient, query: ListQuery) -> (Vec<RemoteEvent>, String, usize) {
    let mut query = query;
    let mut events = Vec::new();
    let mut pages = 0;
    loop {
        let page = client
            .list_page(&primary(), &query)
            .await
            .expect("page lists");
        pages += 1;
        events.extend(page.events);
        match page.next_page_token {
            Some(next) => {
                assert!(
                    page.next_sync_token.is_none(),
                    "sync token before the last page"
                );
                query = query.next_page(next);
            }
            None => {
                let token = page
                    .next_sync_token
                    .expect("the last page has a sync token");
                return (events, token.0, pages);
            }
        }
    }
}

#[tokio::test]
async fn paging_with_a_change_in_the_middle_loses_nothing() {
    let s = Setup::start().await;
    s.fake.set_page_cap(Some(2));
    let ids = create_events(&s.fake, 5);
    let client = s.client();

    // Page one, then the user edits an event already listed, then the rest.
    let first = client
        .list_page(&primary(), &ListQuery::full(time_min()))
        .await
        .unwrap();
    assert_eq!(first.events.len(), 2);
    assert!(first.next_sync_token.is_none());
    let edited = match &first.events[0].kind {
        RemoteEventKind::Appointment(_) => first.events[0].id.clone(),
        other => panic!("expected an appointment, got {other:?}"),
    };
    s.fake
        .patch_event(
            "primary",
            edited.as_str(),
            json!({"summary": "moved while paging"}),
        )
        .unwrap();
    let mut query = ListQuery::full(time_min()).next_page(first.next_page_token.unwrap());
    let mut seen: Vec<EventId> = first.events.iter().map(|e| e.id.clone()).collect();
    let sync_token = loop {
        let page = client.list_page(&primary(), &query).await.unwrap();
        seen.extend(page.events.iter().map(|e| e.id.clone()));
        match page.next_page_token {
            Some(next) => query = query.next_page(next),
            None => break page.next_sync_token.expect("last page has the sync token"),
        }
    };
    for id in &ids {
        assert!(seen.contains(&EventId::new(id.as_str())), "{id} missing");
    }

    // The edit made while paging comes with the next incremental sync, and
    // every page of that sync repeats the sync token.
    s.fake.clear_requests();
    let (changed, _, _) = list_all(&client, ListQuery::incremental(sync_token.clone())).await;
    let change = changed
        .iter()
        .find(|e| e.id == edited)
        .expect("the edit made while paging is listed");
    assert_eq!(
        change.appointment().unwrap().fields.summary,
        "moved while paging"
    );
    for request in s.calls(Operation::List) {
        assert_eq!(request.query_param("syncToken"), Some(sync_token.0.clone()));
        assert_eq!(request.query_param("singleEvents").as_deref(), Some("true"));
        assert_eq!(request.query_param("showDeleted").as_deref(), Some("true"));
        assert_eq!(request.query_param("timeMin"), None);
    }
}

#[tokio::test]
async fn invalid_sync_token_is_full_sync_required_then_a_full_list_works() {
    let s = Setup::start().await;
    create_events(&s.fake, 3);
    let client = s.client();
    let (_, token, _) = list_all(&client, ListQuery::full(time_min())).await;
    s.fake.invalidate_sync_tokens("primary").unwrap();

    let err = client
        .list_page(&primary(), &ListQuery::incremental(SyncToken::new(token)))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        GoogleError::FullSyncRequired {
            reason: "fullSyncRequired".into()
        }
    );
    assert_eq!(err.next_step(), NextStep::FullResync);

    let (events, _, _) = list_all(&client, ListQuery::full(time_min())).await;
    assert_eq!(events.len(), 3);
}

#[tokio::test]
async fn retried_insert_whose_response_was_lost_is_a_duplicate_and_ours() {
    let s = Setup::start().await;
    let client = s.client();
    let id = EventId::new("ev0salt0appt42");
    s.fake.inject_fault(
        Operation::Insert,
        Fault::LoseResponse { then: Lost::Drop },
        1,
    );
    let new = NewEvent {
        id: &id,
        fields: &dentist(),
        private_properties: &props(42),
    };
    let lost = client
        .insert_event(&primary(), new, None)
        .await
        .unwrap_err();
    assert!(
        matches!(lost, GoogleError::Transient { .. }),
        "a dropped connection is transient, got {lost:?}"
    );

    let retried = client
        .insert_event(&primary(), new, None)
        .await
        .unwrap_err();
    assert_eq!(
        retried,
        GoogleError::Duplicate {
            reason: "duplicate".into()
        }
    );
    // The caller decides whether the existing event is its own.
    let existing = client.get_event(&primary(), &id, None).await.unwrap();
    assert_eq!(existing.private_properties, props(42));
    assert_eq!(existing.appointment().unwrap().fields, dentist());
}

#[tokio::test]
async fn patch_with_a_stale_etag_is_precondition_failed_and_clears_fields() {
    let s = Setup::start().await;
    let client = s.client();
    let id = EventId::new("ev0salt0appt7");
    let etag = insert(&client, id.as_str(), 7).await;

    // Someone edits it in Google: our etag is now stale.
    s.fake
        .patch_event(
            "primary",
            id.as_str(),
            json!({"summary": "edited in Google"}),
        )
        .unwrap();
    let mut fields = dentist();
    fields.description = None;
    fields.location = None;
    let err = client
        .patch_event_if_match(&primary(), &id, &etag, &fields, None)
        .await
        .unwrap_err();
    assert_eq!(err, GoogleError::PreconditionFailed);
    assert_eq!(err.reason(), Some("conditionNotMet"));
    let patch = s.calls(Operation::Patch).pop().unwrap();
    assert_eq!(patch.if_match.as_deref(), Some(etag.as_str()));
    assert_eq!(patch.status, Some(412));

    // On the current etag it applies, and cleared fields are cleared.
    let current = client.get_event(&primary(), &id, None).await.unwrap();
    let current_etag = current.appointment().unwrap().etag.clone();
    let ack = client
        .patch_event_if_match(&primary(), &id, &current_etag, &fields, None)
        .await
        .unwrap();
    assert_ne!(ack.etag, current_etag);
    let after = client.get_event(&primary(), &id, None).await.unwrap();
    let after = after.appointment().unwrap();
    assert_eq!(after.etag, ack.etag);
    assert_eq!(after.updated, ack.updated);
    assert_eq!(after.fields, fields);
    let stored = s.fake.get_event("primary", id.as_str()).unwrap();
    assert!(stored.get("description").is_none_or(|d| d.is_null()));
    assert_eq!(stored["summary"], "Dentist");
}

#[tokio::test]
async fn deleting_twice_is_gone_deleted_and_get_shows_cancelled() {
    let s = Setup::start().await;
    let client = s.client();
    let id = EventId::new("ev0salt0appt9");
    let etag = insert(&client, id.as_str(), 9).await;

    client
        .delete_event(&primary(), &id, Some(&etag))
        .await
        .unwrap();
    let again = client
        .delete_event(&primary(), &id, Some(&etag))
        .await
        .unwrap_err();
    assert_eq!(
        again,
        GoogleError::Gone {
            reason: "deleted".into()
        }
    );
    let got = client.get_event(&primary(), &id, None).await.unwrap();
    assert_eq!(got.kind, RemoteEventKind::Cancelled);

    let unknown = client
        .delete_event(&primary(), &EventId::new("unknownevent1"), None)
        .await
        .unwrap_err();
    assert_eq!(
        unknown,
        GoogleError::NotFound {
            reason: "notFound".into()
        }
    );
}

#[tokio::test]
async fn delete_with_a_stale_etag_is_precondition_failed() {
    let s = Setup::start().await;
    let client = s.client();
    let id = EventId::new("ev0salt0appt10");
    let etag = insert(&client, id.as_str(), 10).await;
    s.fake
        .patch_event("primary", id.as_str(), json!({"location": "elsewhere"}))
        .unwrap();
    let err = client
        .delete_event(&primary(), &id, Some(&etag))
        .await
        .unwrap_err();
    assert_eq!(err, GoogleError::PreconditionFailed);
}

#[tokio::test]
async fn a_revoked_refresh_token_is_needs_reauth_and_never_retried() {
    let s = Setup::start().await;
    s.fake.revoke_refresh_token(&s.refresh_token);
    let client = s.client();

    let err = client
        .list_page(&primary(), &ListQuery::full(time_min()))
        .await
        .unwrap_err();
    assert!(matches!(err, GoogleError::NeedsReauth { .. }), "{err:?}");
    assert_eq!(err.next_step(), NextStep::NeedsReauth);
    assert_eq!(err.reason(), Some("invalid_grant"));
    assert_eq!(s.token_calls(), 1);
    assert!(
        s.calls(Operation::List).is_empty(),
        "no API call without a token"
    );

    // Raw requests say the same, without asking the token endpoint again.
    let err = client
        .delete_event(&primary(), &EventId::new("someevent1"), None)
        .await
        .unwrap_err();
    assert!(matches!(err, GoogleError::NeedsReauth { .. }), "{err:?}");
    assert_eq!(s.token_calls(), 1);
}

#[tokio::test]
async fn an_unknown_refresh_token_is_needs_reauth() {
    let s = Setup::start().await;
    let client = s
        .google
        .calendar_client(RefreshToken::new("1//not-a-token-google-knows"));
    let err = client.tokens().access_token().await.unwrap_err();
    assert!(
        matches!(err, plansync::google::TokenError::InvalidGrant { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_wrong_client_secret_is_invalid_client_not_needs_reauth() {
    let s = Setup::start().await;
    let google = GoogleClient::new(&settings(&s.fake, "wrong-secret")).unwrap();
    let client = google.calendar_client(RefreshToken::new(s.refresh_token.clone()));
    let err = client
        .list_page(&primary(), &ListQuery::full(time_min()))
        .await
        .unwrap_err();
    assert!(
        matches!(err, GoogleError::InvalidClient { ref error, .. } if error == "invalid_client"),
        "{err:?}"
    );
    assert_eq!(err.next_step(), NextStep::Retry);
}

#[tokio::test]
async fn the_access_token_is_cached_and_a_401_refreshes_it_once() {
    let s = Setup::start().await;
    let client = s.client();
    list_all(&client, ListQuery::full(time_min())).await;
    list_all(&client, ListQuery::full(time_min())).await;
    assert_eq!(s.token_calls(), 1, "the access token is reused");

    // Google stops accepting it: one 401, one refresh, the call succeeds.
    s.fake.expire_access_tokens();
    s.fake.clear_requests();
    list_all(&client, ListQuery::full(time_min())).await;
    let statuses: Vec<_> = s
        .fake
        .requests()
        .iter()
        .map(|r| (r.operation, r.status))
        .collect();
    assert_eq!(
        statuses,
        vec![
            (Operation::List, Some(401)),
            (Operation::Token, Some(200)),
            (Operation::List, Some(200)),
        ]
    );

    // The raw requests do the same.
    s.fake.expire_access_tokens();
    insert(&client, "ev0salt0appt11", 11).await;
    assert_eq!(s.token_calls(), 2);
}

#[tokio::test]
async fn a_401_with_the_refresh_token_revoked_meanwhile_is_needs_reauth() {
    let s = Setup::start().await;
    let client = s.client();
    list_all(&client, ListQuery::full(time_min())).await;
    s.fake.revoke_refresh_token(&s.refresh_token);
    s.fake.expire_access_tokens();
    let err = client
        .list_page(&primary(), &ListQuery::full(time_min()))
        .await
        .unwrap_err();
    assert!(matches!(err, GoogleError::NeedsReauth { .. }), "{err:?}");
}

#[tokio::test]
async fn rate_limits_carry_retry_after_and_google_reason() {
    let s = Setup::start().await;
    let client = s.client();
    s.fake.inject_fault(
        Operation::List,
        Fault::RateLimit {
            status: 429,
            user: false,
            retry_after_secs: Some(7),
        },
        1,
    );
    let err = client
        .list_page(&primary(), &ListQuery::full(time_min()))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        GoogleError::RateLimited {
            retry_after: Some(Duration::from_secs(7)),
            reason: "rateLimitExceeded".into()
        }
    );
    assert_eq!(
        err.next_step(),
        NextStep::Snooze {
            after: Some(Duration::from_secs(7))
        }
    );

    // 403 userRateLimitExceeded on a raw write is a rate limit, not a lost calendar.
    s.fake.inject_fault(
        Operation::Insert,
        Fault::RateLimit {
            status: 403,
            user: true,
            retry_after_secs: None,
        },
        1,
    );
    let err = client
        .insert_event(
            &primary(),
            NewEvent {
                id: &EventId::new("ev0salt0appt12"),
                fields: &dentist(),
                private_properties: &props(12),
            },
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(
        err,
        GoogleError::RateLimited {
            retry_after: None,
            reason: "userRateLimitExceeded".into()
        }
    );
}

#[tokio::test]
async fn backend_errors_are_transient() {
    let s = Setup::start().await;
    let client = s.client();
    let id = EventId::new("ev0salt0appt13");
    let etag = insert(&client, id.as_str(), 13).await;
    s.fake.inject_fault(Operation::List, Fault::BackendError, 1);
    s.fake.inject_fault(Operation::Patch, Fault::Unavailable, 1);
    let err = client
        .list_page(&primary(), &ListQuery::full(time_min()))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            GoogleError::Transient {
                status: Some(500),
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.next_step(), NextStep::Retry);
    let err = client
        .patch_event_if_match(&primary(), &id, &etag, &dentist(), None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            GoogleError::Transient {
                status: Some(503),
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn malformed_and_truncated_bodies_are_malformed() {
    let s = Setup::start().await;
    create_events(&s.fake, 2);
    let client = s.client();
    s.fake
        .inject_fault(Operation::List, Fault::MalformedBody, 1);
    s.fake
        .inject_fault(Operation::List, Fault::TruncatedBody, 1);
    for _ in 0..2 {
        let err = client
            .list_page(&primary(), &ListQuery::full(time_min()))
            .await
            .unwrap_err();
        assert!(matches!(err, GoogleError::Malformed { .. }), "{err:?}");
        assert_eq!(err.next_step(), NextStep::Retry);
    }
    // A raw write's answer too (the write took effect: a retry gets 409).
    s.fake
        .inject_fault(Operation::Insert, Fault::TruncatedBody, 1);
    let err = client
        .insert_event(
            &primary(),
            NewEvent {
                id: &EventId::new("ev0salt0appt14"),
                fields: &dentist(),
                private_properties: &props(14),
            },
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, GoogleError::Malformed { .. }), "{err:?}");
}

#[tokio::test]
async fn a_slow_answer_times_out() {
    let s = Setup::start().await;
    let google = s
        .google
        .clone()
        .with_call_timeout(Duration::from_millis(300));
    let client = google.calendar_client(RefreshToken::new(s.refresh_token.clone()));
    client.tokens().access_token().await.unwrap();
    s.fake.inject_fault(
        Operation::List,
        Fault::Delay {
            millis: Duration::from_secs(5),
        },
        1,
    );
    let err = client
        .list_page(&primary(), &ListQuery::full(time_min()))
        .await
        .unwrap_err();
    assert_eq!(err, GoogleError::Timeout(Duration::from_millis(300)));
    s.fake.inject_fault(
        Operation::Delete,
        Fault::Delay {
            millis: Duration::from_secs(5),
        },
        1,
    );
    let err = client
        .delete_event(&primary(), &EventId::new("someevent2"), None)
        .await
        .unwrap_err();
    assert_eq!(err, GoogleError::Timeout(Duration::from_millis(300)));
}

#[tokio::test]
async fn an_unknown_calendar_is_calendar_gone() {
    let s = Setup::start().await;
    let client = s.client();
    let err = client
        .list_page(
            &CalendarId::from("nobody@example.com"),
            &ListQuery::full(time_min()),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, GoogleError::CalendarGone { status: 404, .. }),
        "{err:?}"
    );
    assert_eq!(err.next_step(), NextStep::CalendarGone);
}

#[tokio::test]
async fn zones_and_all_day_events_round_trip_through_google() {
    let s = Setup::start().await;
    s.fake
        .add_calendar("family@example.com", "Family", "America/Chicago")
        .unwrap();
    let calendar = CalendarId::from("family@example.com");
    let client = s.client();

    let across_dst = AppointmentFields {
        summary: "Night shift".into(),
        description: None,
        location: None,
        start_at: utc("2030-03-10T06:30:00Z"),
        end_at: utc("2030-03-10T08:30:00Z"),
        start_time_zone: Some("America/New_York".into()),
        end_time_zone: Some("America/New_York".into()),
        all_day: false,
    };
    let zoneless = AppointmentFields {
        summary: "Lunch".into(),
        start_at: utc("2030-07-01T17:00:00Z"),
        end_at: utc("2030-07-01T18:00:00Z"),
        start_time_zone: None,
        end_time_zone: None,
        ..across_dst.clone()
    };
    let all_day = AppointmentFields {
        summary: "Holidays".into(),
        start_at: utc("2030-12-24T00:00:00Z"),
        end_at: utc("2030-12-27T00:00:00Z"),
        all_day: true,
        start_time_zone: None,
        end_time_zone: None,
        ..across_dst.clone()
    };
    for (id, fields) in [
        ("ev0dst", &across_dst),
        ("ev0notime0", &zoneless),
        ("ev0alldae", &all_day),
    ] {
        client
            .insert_event(
                &calendar,
                NewEvent {
                    id: &EventId::new(id),
                    fields,
                    private_properties: &BTreeMap::new(),
                },
                Some("America/Chicago"),
            )
            .await
            .unwrap();
    }
    // The zone-less appointment went out as Chicago local time.
    let sent = s.calls(Operation::Insert);
    let lunch = sent
        .iter()
        .find(|r| r.body.as_ref().unwrap()["id"] == "ev0notime0")
        .unwrap();
    assert_eq!(
        lunch.body.as_ref().unwrap()["start"],
        json!({"dateTime": "2030-07-01T12:00:00-05:00", "timeZone": "America/Chicago"})
    );

    let page = client
        .list_page(&calendar, &ListQuery::full(time_min()))
        .await
        .unwrap();
    assert_eq!(page.calendar_time_zone.as_deref(), Some("America/Chicago"));
    let fields = |id: &str| {
        page.events
            .iter()
            .find(|e| e.id.as_str() == id)
            .and_then(RemoteEvent::appointment)
            .unwrap_or_else(|| panic!("{id} listed as an appointment"))
            .fields
            .clone()
    };
    assert_eq!(fields("ev0dst"), across_dst);
    let lunch = fields("ev0notime0");
    assert_eq!(lunch.start_at, zoneless.start_at);
    assert_eq!(lunch.start_time_zone.as_deref(), Some("America/Chicago"));
    let holidays = fields("ev0alldae");
    assert!(holidays.all_day);
    assert_eq!(
        (holidays.start_at, holidays.end_at),
        (all_day.start_at, all_day.end_at)
    );
}

#[tokio::test]
async fn declined_and_cancelled_events_in_a_listing() {
    let s = Setup::start().await;
    let client = s.client();
    let declined = s
        .fake
        .create_event(
            "primary",
            json!({
                "summary": "Meeting I declined",
                "start": {"dateTime": "2030-02-01T09:00:00Z"},
                "end": {"dateTime": "2030-02-01T10:00:00Z"},
                "attendees": [{"email": "me@example.com", "self": true, "responseStatus": "declined"}]
            }),
        )
        .unwrap();
    let (_, token, _) = list_all(&client, ListQuery::full(time_min())).await;
    let doomed = create_events(&s.fake, 1).pop().unwrap();
    s.fake.delete_event("primary", &doomed).unwrap();
    let (changes, _, _) = list_all(&client, ListQuery::incremental(SyncToken::new(token))).await;
    let doomed = changes
        .iter()
        .find(|e| e.id.as_str() == doomed)
        .expect("the deletion is listed");
    assert_eq!(doomed.kind, RemoteEventKind::Cancelled);

    let (all, _, _) = list_all(&client, ListQuery::full(time_min())).await;
    let declined = all
        .iter()
        .find(|e| e.id.as_str() == declined["id"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        declined.kind,
        RemoteEventKind::NotAnAppointment(plansync::google::NotAppointmentReason::DeclinedByOwner)
    );
}

#[tokio::test]
async fn watch_opens_a_channel_and_stop_closes_it() {
    let s = Setup::start().await;
    let client = s.client();
    let channel = client
        .watch(
            &primary(),
            &WatchRequest {
                channel_id: "chan-1".into(),
                address: "http://127.0.0.1:9/google/notifications".into(),
                token: Some("secret-channel-token".into()),
                ttl: Some(Duration::from_secs(3600)),
            },
        )
        .await
        .unwrap();
    assert_eq!(channel.channel_id, "chan-1");
    assert!(!channel.resource_id.is_empty());
    assert!(s.fake.channels().iter().any(|c| c.id == "chan-1"));

    client
        .stop_channel(&channel.channel_id, &channel.resource_id)
        .await
        .unwrap();
    assert!(!s.fake.channels().iter().any(|c| c.id == "chan-1"));
    let again = client
        .stop_channel(&channel.channel_id, &channel.resource_id)
        .await
        .unwrap_err();
    assert!(matches!(again, GoogleError::NotFound { .. }), "{again:?}");
}

#[tokio::test]
async fn concurrent_calls_of_one_connection_share_one_refresh() {
    let s = Setup::start().await;
    let client = s.client();
    let query = ListQuery::full(time_min());
    let calendar = primary();
    let calls = (0..5).map(|_| client.list_page(&calendar, &query));
    for result in futures::future::join_all(calls).await {
        result.expect("list succeeds");
    }
    assert_eq!(s.token_calls(), 1);
}

/// hyper-rustls with aws-lc-rs beside google-calendar3's ring panics at start
/// (DESIGN.md): the lock file must hold one rustls, on ring.
#[test]
fn no_aws_lc_rs_in_the_dependency_graph() {
    let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.lock"))
        .expect("Cargo.lock is readable");
    assert!(
        !lock.contains("name = \"aws-lc"),
        "aws-lc-rs crept into Cargo.lock"
    );
    assert!(lock.contains("name = \"ring\""));
}
