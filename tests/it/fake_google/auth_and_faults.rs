//! The token endpoint, 401s, and the injected faults: rate limits, lost
//! responses, broken bodies.

use super::*;

#[tokio::test]
async fn the_token_endpoint_grants_refuses_and_revokes_like_google() {
    let google = FakeGoogle::start(FakeGoogleOptions {
        fixtures: Some(fixtures("demo")),
        ..FakeGoogleOptions::default()
    })
    .await
    .unwrap();
    let mut api = Api::new(&google);
    api.token = None;
    let (id, secret) = (google.client_id(), google.client_secret());
    let refresh = "1//0demo-refresh-token-alice";
    let grant = |refresh: &'static str, id: String, secret: String| {
        vec![
            ("grant_type", "refresh_token".to_owned()),
            ("client_id", id),
            ("client_secret", secret),
            ("refresh_token", refresh.to_owned()),
        ]
    };
    let form = |pairs: &Vec<(&'static str, String)>| {
        pairs
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect::<Vec<_>>()
    };

    let ok = api
        .post_form(
            "/token",
            &as_refs(&form(&grant(refresh, id.clone(), secret.clone()))),
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
    let body = ok.json();
    assert_eq!(body["expires_in"], 3599);
    assert_eq!(body["token_type"], "Bearer");
    let access = body["access_token"].as_str().unwrap().to_owned();
    api.token = Some(access.clone());
    assert_eq!(api.get(EVENTS).await.status, StatusCode::OK);

    let wrong_client = api
        .post_form(
            "/token",
            &as_refs(&form(&grant(
                refresh,
                "nope.apps.googleusercontent.com".into(),
                secret.clone(),
            ))),
        )
        .await;
    assert_eq!(wrong_client.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        wrong_client.json(),
        error_file("oauth-401-invalid_client.json")
    );

    let unknown = api
        .post_form(
            "/token",
            &as_refs(&form(&grant("1//0unknown", id.clone(), secret.clone()))),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    assert_eq!(unknown.json(), error_file("oauth-400-invalid_grant.json"));

    assert!(google.revoke_refresh_token(refresh));
    let revoked = api
        .post_form("/token", &as_refs(&form(&grant(refresh, id, secret))))
        .await;
    assert_eq!(revoked.status, StatusCode::BAD_REQUEST);
    assert_eq!(revoked.json()["error"], "invalid_grant");
    assert_eq!(
        api.get(EVENTS).await.status,
        StatusCode::UNAUTHORIZED,
        "revocation kills its access tokens"
    );

    let logged = google
        .requests()
        .into_iter()
        .find(|r| r.operation == Operation::Token)
        .unwrap();
    assert_eq!(
        logged.body.unwrap()["refresh_token"],
        "[REDACTED]",
        "secrets stay out of the log"
    );
}

fn as_refs<'a>(pairs: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    pairs.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[tokio::test]
async fn api_calls_without_a_valid_token_answer_googles_401() {
    let google = empty_google().await;
    let mut api = Api::new(&google);
    assert_eq!(api.get(EVENTS).await.status, StatusCode::OK);
    google.expire_access_tokens();
    let expired = api.get(EVENTS).await;
    assert_eq!(expired.status, StatusCode::UNAUTHORIZED);
    assert_eq!(expired.json(), error_file("401-authError.json"));
    assert_eq!(expired.reason(), "authError");
    api.token = None;
    let missing = api.get(EVENTS).await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
    assert_eq!(missing.reason(), "authError");
}

#[tokio::test]
async fn injected_rate_limits_carry_retry_after_then_clear() {
    let google = empty_google().await;
    let api = Api::new(&google);
    google.inject_fault(
        Operation::List,
        Fault::RateLimit {
            status: 429,
            user: false,
            retry_after_secs: Some(7),
        },
        2,
    );
    google.inject_fault(
        Operation::Insert,
        Fault::RateLimit {
            status: 403,
            user: true,
            retry_after_secs: None,
        },
        1,
    );
    for _ in 0..2 {
        let limited = api.get(EVENTS).await;
        assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(limited.headers["retry-after"], "7");
        assert_eq!(limited.json(), error_file("429-rateLimitExceeded.json"));
    }
    assert_eq!(
        api.get(EVENTS).await.status,
        StatusCode::OK,
        "the fault was for two calls"
    );

    let event = timed(
        "rate0l1m1t",
        "x",
        "2026-12-01T10:00:00Z",
        "2026-12-01T11:00:00Z",
    );
    let limited = api
        .call(Method::POST, EVENTS, &[], Some(event.clone()))
        .await;
    assert_eq!(limited.status, StatusCode::FORBIDDEN);
    assert_eq!(limited.reason(), "userRateLimitExceeded");
    assert!(
        google.get_event("primary", "rate0l1m1t").is_err(),
        "a rate-limited call has no effect"
    );
    assert_eq!(
        api.call(Method::POST, EVENTS, &[], Some(event))
            .await
            .status,
        StatusCode::OK
    );

    google.inject_fault(Operation::Get, Fault::BackendError, 1);
    let failed = api.get(&format!("{EVENTS}/rate0l1m1t")).await;
    assert_eq!(failed.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(failed.reason(), "backendError");
}

#[tokio::test]
async fn lost_responses_take_effect_and_broken_bodies_do_not_parse() {
    let google = empty_google().await;
    let api = Api::new(&google);
    google.inject_fault(
        Operation::Insert,
        Fault::LoseResponse { then: Lost::Error },
        1,
    );
    let event = timed(
        "l0st0resp1",
        "x",
        "2026-12-01T10:00:00Z",
        "2026-12-01T11:00:00Z",
    );
    let lost = api
        .call(Method::POST, EVENTS, &[], Some(event.clone()))
        .await;
    assert_eq!(lost.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        google.get_event("primary", "l0st0resp1").is_ok(),
        "the insert happened"
    );
    assert_eq!(
        api.call(Method::POST, EVENTS, &[], Some(event))
            .await
            .status,
        StatusCode::CONFLICT
    );

    google.inject_fault(
        Operation::Patch,
        Fault::LoseResponse { then: Lost::Drop },
        1,
    );
    let dropped = api
        .send(
            Method::PATCH,
            &format!("{EVENTS}/l0st0resp1"),
            &[],
            Some(json!({"summary": "dropped"})),
        )
        .await;
    assert!(
        dropped.is_err(),
        "the connection is dropped: {:?}",
        dropped.map(|a| a.status)
    );
    assert_eq!(
        google.get_event("primary", "l0st0resp1").unwrap()["summary"],
        "dropped"
    );
    assert_eq!(google.requests().last().unwrap().status, None);

    google.inject_fault(Operation::List, Fault::TruncatedBody, 1);
    google.inject_fault(Operation::List, Fault::MalformedBody, 1);
    for _ in 0..2 {
        let broken = api.get(EVENTS).await;
        assert_eq!(broken.status, StatusCode::OK);
        assert!(
            serde_json::from_str::<Value>(&broken.text).is_err(),
            "{}",
            broken.text
        );
    }

    google.inject_fault(
        Operation::Get,
        Fault::Delay {
            millis: Duration::from_millis(300),
        },
        1,
    );
    let started = Instant::now();
    assert_eq!(
        api.get(&format!("{EVENTS}/l0st0resp1")).await.status,
        StatusCode::OK
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
}
