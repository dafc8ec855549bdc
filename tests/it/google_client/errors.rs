//! How failures are classified: rate limits, backend errors, malformed
//! bodies, timeouts, a gone calendar.

use super::*;

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
