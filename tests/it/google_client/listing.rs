//! Listing through the client: pages, sync tokens, zones and all-day events,
//! declined and cancelled events.

use super::*;

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
