//! The emulator's HTTP behaviour, driven with a plain HTTP client: the wire
//! is what the `google` client sees, so the wire is what is asserted.

mod auth_and_faults;
mod control;
mod fixtures;
mod listing;
mod writes;

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
