//! The emulator's HTTP behaviour, driven with a plain HTTP client: the wire
//! is what the `google` client sees, so the wire is what is asserted.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use plansync_fake_google::{FakeGoogle, FakeGoogleOptions, Fault, Lost, Operation, ResourceState};
use serde_json::{json, Value};

fn fixtures(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

fn error_file(name: &str) -> Value {
    let text = std::fs::read_to_string(fixtures("errors").join(name)).unwrap();
    serde_json::from_str(&text).unwrap()
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }
    fn reason(&self) -> String {
        self.json()["error"]["errors"][0]["reason"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

/// A bare HTTP client bound to one emulator and one access token.
struct Api {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
    token: Option<String>,
}

impl Api {
    fn new(google: &FakeGoogle) -> Api {
        Api {
            client: Client::builder(TokioExecutor::new()).build_http(),
            base: format!("http://{}", google.addr()),
            token: Some(google.issue_access_token()),
        }
    }

    async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> Result<Answer, String> {
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("{}{}", self.base, path_and_query));
        if let Some(token) = &self.token {
            req = req.header("Authorization", format!("Bearer {token}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let bytes = match body {
            Some(body) => {
                req = req.header("Content-Type", "application/json");
                Bytes::from(body.to_string())
            }
            None => Bytes::new(),
        };
        let response = self
            .client
            .request(req.body(Full::new(bytes)).unwrap())
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let headers = response.headers().clone();
        let collected = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        Ok(Answer {
            status,
            headers,
            text: String::from_utf8_lossy(&collected.to_bytes()).into_owned(),
        })
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> Answer {
        self.send(method, path, headers, body)
            .await
            .expect("an HTTP answer")
    }

    async fn get(&self, path: &str) -> Answer {
        self.call(Method::GET, path, &[], None).await
    }

    async fn post_form(&self, path: &str, form: &[(&str, &str)]) -> Answer {
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let req = http::Request::post(format!("{}{}", self.base, path))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let response = self.client.request(req).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        Answer {
            status,
            headers,
            text: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }
}

fn enc(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

const EVENTS: &str = "/calendar/v3/calendars/primary/events";

async fn empty_google() -> FakeGoogle {
    FakeGoogle::start(FakeGoogleOptions {
        notify_on_change: false,
        ..FakeGoogleOptions::default()
    })
    .await
    .unwrap()
}

fn timed(id: &str, summary: &str, start: &str, end: &str) -> Value {
    json!({"id": id, "summary": summary, "start": {"dateTime": start}, "end": {"dateTime": end}})
}

/// Lists every page; returns the items and the final sync token, asserting
/// Google's page rules on the way.
async fn list_all(api: &Api, query: &str) -> (Vec<Value>, String, usize) {
    let mut items = Vec::new();
    let mut page_token: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut path = format!("{EVENTS}?{query}");
        if let Some(token) = &page_token {
            path.push_str(&format!("&pageToken={}", enc(token)));
        }
        let answer = api.get(&path).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        let page = answer.json();
        pages += 1;
        assert_eq!(page["kind"], "calendar#events");
        items.extend(page["items"].as_array().unwrap().iter().cloned());
        match (
            page["nextPageToken"].as_str(),
            page["nextSyncToken"].as_str(),
        ) {
            (Some(next), None) => page_token = Some(next.to_owned()),
            (None, Some(sync)) => return (items, sync.to_owned(), pages),
            other => {
                panic!("a page must carry exactly one of nextPageToken/nextSyncToken: {other:?}")
            }
        }
    }
}

fn ids(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect()
}

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

#[tokio::test]
async fn watch_registers_a_channel_and_notifications_reach_its_address() {
    use tokio::sync::mpsc;
    let (tx, mut rx) = mpsc::unbounded_channel::<HeaderMap>();
    let receiver = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(headers);
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, receiver).await });

    let google = FakeGoogle::start(FakeGoogleOptions::default())
        .await
        .unwrap();
    let api = Api::new(&google);
    let watched = api
        .call(
            Method::POST,
            &format!("{EVENTS}/watch"),
            &[],
            Some(
                json!({"id": "chan-1", "type": "web_hook", "address": hook, "token": "secret-ish"}),
            ),
        )
        .await;
    assert_eq!(watched.status, StatusCode::OK, "{}", watched.text);
    let channel = watched.json();
    assert_eq!(channel["kind"], "api#channel");
    let resource_id = channel["resourceId"].as_str().unwrap().to_owned();
    assert!(channel["expiration"]
        .as_str()
        .unwrap()
        .parse::<i64>()
        .is_ok());

    async fn next(rx: &mut mpsc::UnboundedReceiver<HeaderMap>) -> HeaderMap {
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("a notification")
            .unwrap()
    }
    let sync = next(&mut rx).await;
    assert_eq!(sync["x-goog-resource-state"], "sync");
    assert_eq!(sync["x-goog-channel-id"], "chan-1");
    assert_eq!(sync["x-goog-channel-token"], "secret-ish");
    assert_eq!(sync["x-goog-resource-id"], resource_id.as_str());
    assert_eq!(sync["x-goog-message-number"], "1");

    google
        .create_event(
            "primary",
            timed(
                "n0t1f001",
                "x",
                "2026-12-01T10:00:00Z",
                "2026-12-01T11:00:00Z",
            ),
        )
        .unwrap();
    let exists = next(&mut rx).await;
    assert_eq!(exists["x-goog-resource-state"], "exists");
    assert_eq!(exists["x-goog-message-number"], "2");
    assert_eq!(
        google
            .notify("chan-1", ResourceState::Exists)
            .await
            .unwrap(),
        200
    );

    let stop = json!({"id": "chan-1", "resourceId": resource_id});
    assert_eq!(
        api.call(
            Method::POST,
            "/calendar/v3/channels/stop",
            &[],
            Some(stop.clone())
        )
        .await
        .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        api.call(Method::POST, "/calendar/v3/channels/stop", &[], Some(stop))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert!(google.channels().is_empty());
}

#[tokio::test]
async fn admin_routes_drive_the_same_controls() {
    let google = empty_google().await;
    let api = Api::new(&google);
    let admin = |path: &str| format!("/_admin/{path}");
    let fault = json!({"operation": "list", "fault": {"kind": "rate_limit", "status": 429, "retry_after_secs": 2}, "times": 1});
    assert_eq!(
        api.call(Method::POST, &admin("faults"), &[], Some(fault))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(api.get(EVENTS).await.status, StatusCode::TOO_MANY_REQUESTS);

    let created = api
        .call(
            Method::POST,
            &admin("calendars/primary/events"),
            &[],
            Some(timed(
                "adm1n0ev",
                "UI",
                "2026-12-01T10:00:00Z",
                "2026-12-01T11:00:00Z",
            )),
        )
        .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.text);
    let (_, token, _) = list_all(&api, "").await;
    assert_eq!(
        api.call(
            Method::POST,
            &admin("calendars/primary/invalidate-sync-tokens"),
            &[],
            None
        )
        .await
        .status,
        StatusCode::OK
    );
    assert_eq!(
        api.get(&format!("{EVENTS}?syncToken={}", enc(&token)))
            .await
            .status,
        StatusCode::GONE
    );
    assert_eq!(
        api.call(
            Method::PUT,
            &admin("page-cap"),
            &[],
            Some(json!({"page_cap": 1}))
        )
        .await
        .status,
        StatusCode::OK
    );
    let log = api.get(&admin("requests")).await.json();
    assert!(log.as_array().unwrap().iter().any(|r| r["status"] == 429));
}

#[tokio::test]
async fn the_cli_serves_the_demo_fixtures() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_plansync"))
        .args(["fake-google", "--addr", "127.0.0.1:0", "--fixtures"])
        .arg(fixtures("demo"))
        .env("NO_COLOR", "1")
        .env("PLANSYNC_LOG_FORMAT", "pretty")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(rest) = line.split("listening on ").nth(1) {
                return rest.split_whitespace().next().unwrap().to_owned();
            }
        }
        panic!("the server exited before listening");
    })
    .await
    .expect("`listening on <addr>` on stderr");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    let oauth: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures("demo").join("oauth.json")).unwrap(),
    )
    .unwrap();
    let mut api = Api {
        client: Client::builder(TokioExecutor::new()).build_http(),
        base: format!("http://{addr}"),
        token: None,
    };
    let granted = api
        .post_form(
            "/token",
            &[
                ("grant_type", "refresh_token"),
                ("client_id", oauth["client_id"].as_str().unwrap()),
                ("client_secret", oauth["client_secret"].as_str().unwrap()),
                (
                    "refresh_token",
                    oauth["refresh_tokens"][0].as_str().unwrap(),
                ),
            ],
        )
        .await;
    assert_eq!(granted.status, StatusCode::OK, "{}", granted.text);
    api.token = Some(granted.json()["access_token"].as_str().unwrap().to_owned());
    let page = api
        .get("/calendar/v3/calendars/primary/events?maxResults=2")
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    let page = page.json();
    assert_eq!(page["kind"], "calendar#events");
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    assert!(page["nextPageToken"].is_string());
    assert!(page.get("nextSyncToken").is_none());

    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exits on SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}");
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
