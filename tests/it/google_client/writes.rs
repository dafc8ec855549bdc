//! Inserts, conditional patches and deletes, watch and stop.

use super::*;

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
