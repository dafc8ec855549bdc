//! JWT grants and delegated tokens: wrong keys, expiry, absurd answers, the
//! fixtures' service accounts.

use super::*;

#[tokio::test]
async fn a_jwt_signed_with_the_wrong_key_is_refused() {
    let clinic = Clinic::start_with(&[ALICE], Duration::from_secs(3599), true).await;
    let id = clinic.connect_as(1, ALICE).await;
    clinic.run_once().await;
    let grants = clinic.grants();
    assert!(!grants.is_empty());
    assert!(grants.iter().all(|g| g.status == Some(400)));
    assert!(clinic.appointments(1).await.is_empty());
    let status = clinic.status().await;
    let c = connection(&status, id);
    assert_eq!(c["needsReauth"], true);
    let reason = c["lastError"].as_str().unwrap();
    assert!(reason.contains("Invalid JWT Signature"), "{reason}");
}

/// In-process: a provider over a key file, against the emulator.
async fn client_for(clinic: &Clinic) -> GoogleClient {
    let settings = GoogleSettings::from_env(&Env::from_pairs([(
        "GOOGLE_CALENDAR_BASE_URL",
        clinic.sync.google.base_url(),
    )]))
    .unwrap();
    GoogleClient::new(&settings)
        .unwrap()
        .with_service_account(&clinic.key_file)
        .await
        .expect("the key file loads")
}

#[tokio::test]
async fn a_token_near_expiry_is_refreshed_before_a_call_fails() {
    // Tokens live two seconds: ours refreshes one second before that.
    let clinic = Clinic::start_with(&[ALICE], Duration::from_secs(2), false).await;
    let google = client_for(&clinic).await;
    let provider = google.delegated_provider("1", &Subject::new(ALICE));
    let client = google.calendar_client_with(provider);
    let calendar = CalendarId::new(ALICE);
    let query = ListQuery::full(Utc::now() - Days::days(1));
    eventually(Duration::from_secs(20), "a second grant", || async {
        let page = client
            .list_page(&calendar, &query)
            .await
            .expect("no call fails");
        assert!(!page.events.is_empty());
        (clinic.grants().len() >= 2).then_some(())
    })
    .await;
    let requests = clinic.sync.google.requests();
    assert!(
        requests.iter().all(|r| r.status == Some(200)),
        "{requests:?}"
    );
}

/// A token endpoint answering `expires_in` values yup-oauth2 cannot add to
/// the clock.
async fn absurd_token_endpoint(expires_in: Value) -> String {
    let app = axum::Router::new().route(
        "/token",
        axum::routing::post(move || {
            let body = json!({"access_token": "ya29.absurd", "token_type": "Bearer", "expires_in": expires_in});
            async move { axum::Json(body) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/token")
}

#[tokio::test]
async fn an_absurd_expires_in_is_a_token_error_never_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let (private_pem, _) = key_pair(dir.path(), "key");
    for (expires_in, expect_ok) in [
        (json!(i64::MAX), false),
        (json!(i64::MIN), false),
        (json!(-30), false),
        (json!(0), false),
        (json!(10_000_000_000i64), true),
    ] {
        let token_uri = absurd_token_endpoint(expires_in.clone()).await;
        let key_file = dir.path().join("key.json");
        let key = json!({
            "type": "service_account",
            "private_key": private_pem,
            "client_email": CLIENT_EMAIL,
            "token_uri": token_uri,
        });
        std::fs::write(&key_file, key.to_string()).unwrap();
        let settings = GoogleSettings::from_env(&Env::default()).unwrap();
        let google = GoogleClient::new(&settings)
            .unwrap()
            .with_service_account(&key_file)
            .await
            .unwrap();
        let provider = google.delegated_provider("1", &Subject::new(ALICE));
        let result = provider.access_token().await;
        if expect_ok {
            // Representable but absurd: used, yet never trusted beyond an hour.
            assert_eq!(result.unwrap().expose_secret(), "ya29.absurd");
        } else {
            let err = result.expect_err("an absurd answer is refused");
            assert!(
                matches!(err, TokenError::Malformed { .. }),
                "{expires_in}: {err:?}"
            );
            assert!(matches!(
                GoogleError::from(err),
                GoogleError::Malformed { .. }
            ));
        }
    }
}

#[tokio::test]
async fn fixture_service_accounts_are_checked_and_admin_routes_toggle_delegation() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("oauth.json"),
        json!({"client_id": "c", "client_secret": "s", "service_accounts": [{
            "client_email": CLIENT_EMAIL, "public_key_pem": "not a key", "subjects": []}]})
        .to_string(),
    )
    .unwrap();
    let err = FakeGoogle::start(FakeGoogleOptions {
        fixtures: Some(dir.path().to_owned()),
        ..FakeGoogleOptions::default()
    })
    .await
    .err()
    .expect("a bad public key is refused");
    assert!(err.to_string().contains("public_key_pem"), "{err}");

    let clinic = Clinic::start(&[]).await;
    let http = reqwest_like_post(
        &format!("{}delegation", clinic.sync.google.admin_url()),
        json!({"subject": ALICE, "allowed": true}),
    )
    .await;
    assert_eq!(http, 200);
    let google = client_for(&clinic).await;
    let provider = google.delegated_provider("1", &Subject::new(ALICE));
    provider
        .access_token()
        .await
        .expect("allowed through the admin route");
    let http = reqwest_like_post(
        &format!("{}delegation", clinic.sync.google.admin_url()),
        json!({"subject": ALICE, "allowed": false}),
    )
    .await;
    assert_eq!(http, 200);
    provider.invalidate().await;
    let err = provider.access_token().await.unwrap_err();
    assert!(
        matches!(&err, TokenError::DelegationRefused { error, .. } if error == "unauthorized_client"),
        "{err:?}"
    );
    let unknown = reqwest_like_post(
        &format!("{}delegation", clinic.sync.google.admin_url()),
        json!({"subject": ALICE, "allowed": true, "client_email": "nobody@x.iam.gserviceaccount.com"}),
    )
    .await;
    assert_eq!(unknown, 400);
}

/// POSTs JSON with hyper and returns the status.
async fn reqwest_like_post(url: &str, body: Value) -> u16 {
    use http_body_util::Full;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<bytes::Bytes>>();
    let request = http::Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(bytes::Bytes::from(body.to_string())))
        .unwrap();
    client.request(request).await.unwrap().status().as_u16()
}
