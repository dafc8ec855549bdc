//! Refresh tokens and access tokens: needs-reauth, invalid client, caching,
//! shared refreshes; and the TLS provider in the dependency graph.

use super::*;

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
