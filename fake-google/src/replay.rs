//! The replay server: `plansync fake-google --replay DIR` answers from a
//! recording ([`super::exchange`]) instead of computing answers from state.
//!
//! Matching rules (fixtures/README.md, "Recordings"): a request takes the
//! first *unused* exchange with the same method, path and query, where
//! - `timeMin`, `timeMax` and `updatedMin` match any value (the worker
//!   computes them from its clock); page and sync tokens must be equal (the
//!   worker repeats what it was given);
//! - event ids in paths (`.../events/<id>`) and in bodies (an insert's `id`)
//!   match up to a consistent renaming: the first replayed id met where the
//!   recording had X stands for X from then on (and no other id does), and
//!   answers carry the replayed id wherever the recording had X;
//! - token requests match by grant type alone.
//!
//! An exchange recorded as lost is replayed by closing the connection
//! without an answer. A request that matches nothing gets a 500 whose body
//! names it and the next unused exchange; it is logged and listed, with the
//! unused exchanges, by [`Replayer::status`] and `GET /_replay/status`. Tests
//! call [`ReplayStatus::assert_consumed`] at the end.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use http::{header, Method, Request};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::conn::{self, Hangup, Reply, Server};
use super::exchange::{self, describe, Exchange, Payload, RecordingError};

/// Query parameters whose values the worker derives from its clock.
pub const ANY_VALUE_PARAMS: [&str; 3] = ["timeMin", "timeMax", "updatedMin"];

/// Why a replay server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Recording(#[from] RecordingError),
    #[error("binding {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A request no recorded exchange matched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Unmatched {
    /// `METHOD /path?query`.
    pub request: String,
    /// The lowest-numbered unused exchange when it arrived (`#0007 GET ...`),
    /// `None` when the recording was used up.
    pub next_unused: Option<String>,
}

/// How far a replay got.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplayStatus {
    pub recording: String,
    pub total: usize,
    pub used: usize,
    /// The exchanges not asked for yet, in order (`#0007 GET ...`).
    pub unused: Vec<String>,
    pub unmatched: Vec<Unmatched>,
}

impl ReplayStatus {
    /// Every exchange used and nothing unexpected asked.
    pub fn is_exact(&self) -> bool {
        self.unused.is_empty() && self.unmatched.is_empty()
    }

    /// Panics, naming every unexpected request (with the exchange that was
    /// next) and every unused exchange, unless the replay was exact.
    #[track_caller]
    pub fn assert_consumed(&self) {
        assert!(self.is_exact(), "{self}");
    }
}

impl std::fmt::Display for ReplayStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "replay of {}: {} of {} exchanges used",
            self.recording, self.used, self.total
        )?;
        for u in &self.unmatched {
            write!(
                f,
                "\n  unexpected request {} (next unused exchange: {})",
                u.request,
                u.next_unused
                    .as_deref()
                    .unwrap_or("none, the recording is used up")
            )?;
        }
        for u in &self.unused {
            write!(f, "\n  unused exchange {u}")?;
        }
        Ok(())
    }
}

/// How to start a replay server.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    pub addr: SocketAddr,
    pub dir: PathBuf,
}

impl ReplayOptions {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ReplayOptions {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            dir: dir.into(),
        }
    }
}

/// Recorded ids ⇄ replayed ids.
#[derive(Debug, Default)]
struct Renaming {
    to_replayed: HashMap<String, String>,
    to_recorded: HashMap<String, String>,
}

impl Renaming {
    /// Whether recorded `x` may stand for replayed `y`, given the bindings
    /// already made and those `pending` in this match.
    fn admits(&self, pending: &[(String, String)], x: &str, y: &str) -> bool {
        let bound = self.to_replayed.get(x).map(String::as_str).or_else(|| {
            pending
                .iter()
                .find(|(a, _)| a == x)
                .map(|(_, b)| b.as_str())
        });
        if let Some(bound) = bound {
            return bound == y;
        }
        let taken = self.to_recorded.contains_key(y) || pending.iter().any(|(_, b)| b == y);
        !taken
    }

    fn bind(&mut self, x: String, y: String) {
        self.to_recorded.insert(y.clone(), x.clone());
        self.to_replayed.insert(x, y);
    }

    /// The recorded text with every renamed id replaced by its replayed id.
    fn apply(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for (x, y) in &self.to_replayed {
            if x != y && out.contains(x.as_str()) {
                out = out.replace(x.as_str(), y);
            }
        }
        out
    }

    fn apply_json(&self, value: &mut Value) {
        match value {
            Value::String(s) => *s = self.apply(s),
            Value::Array(items) => items.iter_mut().for_each(|v| self.apply_json(v)),
            Value::Object(map) => map.values_mut().for_each(|v| self.apply_json(v)),
            _ => {}
        }
    }
}

struct Book {
    exchanges: Vec<(usize, Exchange)>,
    used: Vec<bool>,
    renaming: Renaming,
    unmatched: Vec<Unmatched>,
}

impl Book {
    fn name(&self, index: usize) -> String {
        let (seq, e) = &self.exchanges[index];
        format!(
            "#{seq:04} {}",
            describe(
                &e.request.method,
                &e.request.path,
                e.request.query.as_deref()
            )
        )
    }

    fn next_unused(&self) -> Option<String> {
        self.used.iter().position(|u| !u).map(|i| self.name(i))
    }

    fn status(&self, recording: &Path) -> ReplayStatus {
        ReplayStatus {
            recording: recording.display().to_string(),
            total: self.exchanges.len(),
            used: self.used.iter().filter(|u| **u).count(),
            unused: (0..self.exchanges.len())
                .filter(|i| !self.used[*i])
                .map(|i| self.name(i))
                .collect(),
            unmatched: self.unmatched.clone(),
        }
    }
}

struct State {
    dir: PathBuf,
    book: Mutex<Book>,
}

impl State {
    fn lock(&self) -> MutexGuard<'_, Book> {
        // Every mutation completes under the lock before it is released.
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running replay server. Dropping it stops accepting.
pub struct Replayer {
    server: Server,
    state: Arc<State>,
}

impl Replayer {
    pub async fn start(options: ReplayOptions) -> Result<Replayer, ReplayError> {
        let exchanges = exchange::load(&options.dir)?;
        let state = Arc::new(State {
            dir: options.dir,
            book: Mutex::new(Book {
                used: vec![false; exchanges.len()],
                exchanges,
                renaming: Renaming::default(),
                unmatched: Vec::new(),
            }),
        });
        let server = Server::start(options.addr, Arc::clone(&state), handle)
            .await
            .map_err(|source| ReplayError::Bind {
                addr: options.addr,
                source,
            })?;
        Ok(Replayer { server, state })
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    /// What to give the worker as `GOOGLE_CALENDAR_BASE_URL`.
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    /// What to give the worker as `GOOGLE_TOKEN_URL`.
    pub fn token_url(&self) -> String {
        self.server.token_url()
    }

    pub fn status(&self) -> ReplayStatus {
        self.state.lock().status(&self.state.dir)
    }

    pub async fn shutdown(self) -> ReplayStatus {
        let status = self.status();
        self.server.shutdown().await;
        status
    }
}

/// A request as the matcher sees it.
struct Asked<'a> {
    method: &'a str,
    path: &'a str,
    query: Option<&'a str>,
    body: &'a Payload,
}

/// `(recorded, replayed)` id pairs the match needs, or `None` if the
/// exchange does not match.
fn matches(
    recorded: &Exchange,
    asked: &Asked,
    renaming: &Renaming,
) -> Option<Vec<(String, String)>> {
    let rec = &recorded.request;
    if rec.method != asked.method {
        return None;
    }
    if rec.path == "/token" || asked.path == "/token" {
        let grant = |p: &Payload| -> Option<String> {
            p.form_field("grant_type")
                .map(str::to_owned)
                .or_else(|| p.body.as_ref()?["grant_type"].as_str().map(str::to_owned))
        };
        return (rec.path == asked.path && grant(&rec.body) == grant(asked.body)).then(Vec::new);
    }
    if normalized_query(rec.query.as_deref()) != normalized_query(asked.query) {
        return None;
    }
    let mut pending = Vec::new();
    let rec_segments: Vec<&str> = rec.path.split('/').collect();
    let segments: Vec<&str> = asked.path.split('/').collect();
    if rec_segments.len() != segments.len() {
        return None;
    }
    let id_at = event_id_index(&segments);
    for (i, (a, b)) in rec_segments.iter().zip(&segments).enumerate() {
        if Some(i) == id_at && event_id_index(&rec_segments) == id_at {
            if !renaming.admits(&pending, a, b) {
                return None;
            }
            pending.push((a.to_string(), b.to_string()));
        } else if a != b {
            return None;
        }
    }
    let body_id = |p: &Payload| p.body.as_ref()?.get("id")?.as_str().map(str::to_owned);
    if let (Some(x), Some(y)) = (body_id(&rec.body), body_id(asked.body)) {
        if !renaming.admits(&pending, &x, &y) {
            return None;
        }
        pending.push((x, y));
    }
    Some(pending)
}

/// Where the event id is in `/calendar/v3/calendars/<cal>/events/<id>[/...]`.
fn event_id_index(segments: &[&str]) -> Option<usize> {
    // ["", "calendar", "v3", "calendars", cal, "events", id, ...]
    (segments.len() >= 7
        && segments[1..4] == ["calendar", "v3", "calendars"]
        && segments[5] == "events"
        && segments[6] != "watch")
        .then_some(6)
}

/// The query's parameters, sorted, with clock-derived values blanked.
fn normalized_query(query: Option<&str>) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> =
        url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
            .map(|(k, v)| {
                let v = if ANY_VALUE_PARAMS.contains(&k.as_ref()) {
                    String::from("*")
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
    pairs.sort();
    pairs
}

async fn handle(state: Arc<State>, request: Request<Incoming>) -> Reply {
    let (parts, body) = request.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| Hangup(format!("reading the request body: {e}")))?;
    let path = parts.uri.path();
    let query = parts.uri.query();
    if parts.method == Method::GET && path == "/_replay/status" {
        let status = state.lock().status(&state.dir);
        return Ok(conn::response(
            200,
            &[("content-type".into(), "application/json".into())],
            Bytes::from(serde_json::to_vec_pretty(&status).unwrap_or_default()),
        ));
    }
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let payload = Payload::from_bytes(content_type, &bytes);
    let method = parts.method.to_string();
    let asked = Asked {
        method: &method,
        path,
        query,
        body: &payload,
    };
    let mut book = state.lock();
    let found = (0..book.exchanges.len())
        .filter(|i| !book.used[*i])
        .find_map(|i| matches(&book.exchanges[i].1, &asked, &book.renaming).map(|p| (i, p)));
    let Some((index, pending)) = found else {
        let request = describe(&method, path, query);
        let next_unused = book.next_unused();
        tracing::warn!(%request, next_unused = ?next_unused, "replay: no recorded exchange matches");
        let message = format!(
            "plansync replay: no recorded exchange matches {request}; next unused exchange: {}",
            next_unused
                .as_deref()
                .unwrap_or("none, the recording is used up")
        );
        book.unmatched.push(Unmatched {
            request,
            next_unused,
        });
        let body = json!({"error": {"code": 500, "message": message,
            "errors": [{"domain": "plansync.replay", "reason": "noRecordedExchange", "message": message}]}});
        return Ok(conn::response(
            500,
            &[(
                "content-type".into(),
                "application/json; charset=UTF-8".into(),
            )],
            Bytes::from(serde_json::to_vec_pretty(&body).unwrap_or_default()),
        ));
    };
    book.used[index] = true;
    for (x, y) in pending {
        book.renaming.bind(x, y);
    }
    let name = book.name(index);
    let exchange = &book.exchanges[index].1;
    tracing::debug!(exchange = %name, "replay: answered");
    let Some(answer) = &exchange.response else {
        return Err(Hangup(format!(
            "{name} was lost: {}",
            exchange.lost.as_deref().unwrap_or("no answer recorded")
        )));
    };
    let mut payload = answer.body.clone();
    if let Some(value) = &mut payload.body {
        book.renaming.apply_json(value);
    }
    if let Some(text) = &mut payload.text {
        *text = book.renaming.apply(text);
    }
    let mut headers: Vec<(String, String)> = answer
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if payload.body.is_some() && !answer.headers.contains_key("content-type") {
        headers.push((
            "content-type".into(),
            "application/json; charset=UTF-8".into(),
        ));
    }
    Ok(conn::response(answer.status, &headers, payload.to_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::RecordedMessage;

    fn recorded(method: &str, path: &str, query: Option<&str>, body: Option<Value>) -> Exchange {
        Exchange {
            request: RecordedMessage {
                method: method.into(),
                path: path.into(),
                query: query.map(Into::into),
                headers: Default::default(),
                body: Payload {
                    body,
                    ..Payload::default()
                },
            },
            response: None,
            lost: Some("reset".into()),
        }
    }

    #[test]
    fn clock_bounds_match_any_value_but_tokens_must_be_equal() {
        let e = recorded(
            "GET",
            "/calendar/v3/calendars/primary/events",
            Some("timeMin=2026-01-01T00%3A00%3A00Z&singleEvents=true&pageToken=p2"),
            None,
        );
        let empty = Payload::default();
        let ask = |q: &'static str| Asked {
            method: "GET",
            path: "/calendar/v3/calendars/primary/events",
            query: Some(q),
            body: &empty,
        };
        let none = Renaming::default();
        assert!(matches(
            &e,
            &ask("pageToken=p2&singleEvents=true&timeMin=2030-05-05T00%3A00%3A00Z"),
            &none
        )
        .is_some());
        assert!(matches(&e, &ask("pageToken=p3&singleEvents=true&timeMin=x"), &none).is_none());
        assert!(matches(&e, &ask("pageToken=p2&singleEvents=true"), &none).is_none());
    }

    #[test]
    fn ids_match_up_to_one_consistent_renaming() {
        let insert = recorded(
            "POST",
            "/calendar/v3/calendars/primary/events",
            None,
            Some(json!({"id": "rec1", "summary": "x"})),
        );
        let get = recorded(
            "GET",
            "/calendar/v3/calendars/primary/events/rec1",
            None,
            None,
        );
        let other = recorded(
            "GET",
            "/calendar/v3/calendars/primary/events/rec2",
            None,
            None,
        );
        let body = Payload {
            body: Some(json!({"id": "new1"})),
            ..Payload::default()
        };
        let ask = |path: &'static str, body: &'static Payload| Asked {
            method: if body.body.is_some() { "POST" } else { "GET" },
            path,
            query: None,
            body,
        };
        let body: &'static Payload = Box::leak(Box::new(body));
        let empty: &'static Payload = Box::leak(Box::new(Payload::default()));
        let mut renaming = Renaming::default();
        let pending = matches(
            &insert,
            &ask("/calendar/v3/calendars/primary/events", body),
            &renaming,
        )
        .unwrap();
        assert_eq!(pending, vec![("rec1".to_owned(), "new1".to_owned())]);
        for (x, y) in pending {
            renaming.bind(x, y);
        }
        // rec1 now stands for new1 only, and new1 for rec1 only.
        assert!(matches(
            &get,
            &ask("/calendar/v3/calendars/primary/events/new1", empty),
            &renaming
        )
        .is_some());
        assert!(matches(
            &get,
            &ask("/calendar/v3/calendars/primary/events/new2", empty),
            &renaming
        )
        .is_none());
        assert!(matches(
            &other,
            &ask("/calendar/v3/calendars/primary/events/new1", empty),
            &renaming
        )
        .is_none());
        assert!(matches(
            &other,
            &ask("/calendar/v3/calendars/primary/events/new2", empty),
            &renaming
        )
        .is_some());
        let mut answer = json!({"id": "rec1", "iCalUID": "rec1@google.com", "n": 1});
        renaming.apply_json(&mut answer);
        assert_eq!(
            answer,
            json!({"id": "new1", "iCalUID": "new1@google.com", "n": 1})
        );
    }

    #[test]
    fn token_requests_match_by_grant_type() {
        let form = |text: &str| {
            Payload::from_bytes(Some("application/x-www-form-urlencoded"), text.as_bytes())
        };
        let mut e = recorded("POST", "/token", None, None);
        e.request.body = form("grant_type=refresh_token&refresh_token=%5BREDACTED%5D");
        let asked_body = form("grant_type=refresh_token&refresh_token=real&client_id=z");
        let ask = Asked {
            method: "POST",
            path: "/token",
            query: None,
            body: &asked_body,
        };
        assert!(matches(&e, &ask, &Renaming::default()).is_some());
        let jwt =
            form("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=x");
        let ask = Asked { body: &jwt, ..ask };
        assert!(matches(&e, &ask, &Renaming::default()).is_none());
    }
}
