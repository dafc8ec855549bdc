//! The HTTP front: routes a request to its operation, checks the bearer
//! token, applies an injected fault, runs the operation, and logs the call.
//!
//! Routing is by hand rather than with axum's router so calendar and event
//! ids are percent-decoded exactly once and every request, matched or not,
//! goes through the same log and fault path.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use axum::Router;
use base64::Engine;
use bytes::Bytes;
use http::{header, HeaderMap, Method, StatusCode};
use serde_json::{json, Value};

use super::errors::ApiError;
use super::faults::{Fault, Lost, Operation};
use super::log::RecordedRequest;
use super::reply::Reply;
use super::state::ListParams;
use super::watch::ResourceState;
use super::{admin, Shared};

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

/// A request, resolved to what it asks for.
pub(crate) enum Route {
    Token,
    List(String),
    Insert(String),
    Watch(String),
    Get(String, String),
    Patch(String, String),
    Update(String, String),
    Delete(String, String),
    GetCalendar(String),
    Stop,
    Admin(Vec<String>),
    Unknown,
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && bytes[i + 1].is_ascii_hexdigit()
            && bytes[i + 2].is_ascii_hexdigit()
        {
            let hex = |b: u8| (b as char).to_digit(16).unwrap_or(0) as u8;
            out.push(hex(bytes[i + 1]) * 16 + hex(bytes[i + 2]));
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Route {
    pub fn parse(method: &Method, path: &str) -> Route {
        let segments: Vec<String> = path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(percent_decode)
            .collect();
        let s: Vec<&str> = segments.iter().map(String::as_str).collect();
        match (method, s.as_slice()) {
            (&Method::POST, ["token"]) => Route::Token,
            (_, ["_admin", rest @ ..]) => {
                Route::Admin(rest.iter().map(|s| s.to_string()).collect())
            }
            (&Method::GET, ["calendar", "v3", "calendars", cal, "events"]) => {
                Route::List(cal.to_string())
            }
            (&Method::POST, ["calendar", "v3", "calendars", cal, "events"]) => {
                Route::Insert(cal.to_string())
            }
            (&Method::POST, ["calendar", "v3", "calendars", cal, "events", "watch"]) => {
                Route::Watch(cal.to_string())
            }
            (&Method::GET, ["calendar", "v3", "calendars", cal, "events", id]) => {
                Route::Get(cal.to_string(), id.to_string())
            }
            (&Method::PATCH, ["calendar", "v3", "calendars", cal, "events", id]) => {
                Route::Patch(cal.to_string(), id.to_string())
            }
            (&Method::PUT, ["calendar", "v3", "calendars", cal, "events", id]) => {
                Route::Update(cal.to_string(), id.to_string())
            }
            (&Method::DELETE, ["calendar", "v3", "calendars", cal, "events", id]) => {
                Route::Delete(cal.to_string(), id.to_string())
            }
            (&Method::GET, ["calendar", "v3", "calendars", cal]) => {
                Route::GetCalendar(cal.to_string())
            }
            (&Method::GET, ["calendar", "v3", "users", "me", "calendarList", cal]) => {
                Route::GetCalendar(cal.to_string())
            }
            (&Method::POST, ["calendar", "v3", "channels", "stop"]) => Route::Stop,
            _ => Route::Unknown,
        }
    }

    pub fn operation(&self) -> Operation {
        match self {
            Route::Token => Operation::Token,
            Route::List(_) => Operation::List,
            Route::Insert(_) => Operation::Insert,
            Route::Watch(_) => Operation::Watch,
            Route::Get(..) => Operation::Get,
            Route::Patch(..) => Operation::Patch,
            Route::Update(..) => Operation::Update,
            Route::Delete(..) => Operation::Delete,
            Route::GetCalendar(_) => Operation::GetCalendar,
            Route::Stop => Operation::Stop,
            Route::Admin(_) => Operation::Admin,
            Route::Unknown => Operation::Unknown,
        }
    }
}

/// How an injected fault mangles a successful reply.
enum Mangle {
    None,
    Raw {
        status: u16,
        headers: std::collections::BTreeMap<String, String>,
        body: String,
    },
    Malformed,
    Truncated,
    LoseAsError,
    Drop,
}

fn header_str<'a>(headers: &'a HeaderMap, name: &header::HeaderName) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = header_str(headers, &header::AUTHORIZATION)?.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((percent_decode(id), percent_decode(secret)))
}

/// The body as the log keeps it.
fn loggable_body(op: Operation, bytes: &Bytes) -> Option<Value> {
    if bytes.is_empty() {
        return None;
    }
    if op == Operation::Token {
        let fields: serde_json::Map<String, Value> = url::form_urlencoded::parse(bytes)
            .map(|(k, v)| {
                let v = if k == "client_secret" || k == "refresh_token" || k == "assertion" {
                    "[REDACTED]".to_owned()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), Value::String(v))
            })
            .collect();
        return Some(Value::Object(fields));
    }
    Some(
        serde_json::from_slice(bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned())),
    )
}

/// The `sub` of a JWT-bearer grant, read (unverified) from its assertion.
fn grant_subject(bytes: &Bytes) -> Option<String> {
    let assertion = url::form_urlencoded::parse(bytes)
        .find(|(k, _)| k == "assertion")
        .map(|(_, v)| v.into_owned())?;
    super::jwt::peek_claims(&assertion)?.sub
}

fn json_body(bytes: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|_| ApiError::bad_request("global", "parseError", "Parse Error", None))
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, 32 << 20)
        .await
        .unwrap_or_default();
    let received_at = chrono::Utc::now();
    let route = Route::parse(&parts.method, parts.uri.path());
    let op = route.operation();
    let if_match = header_str(&parts.headers, &header::IF_MATCH).map(str::to_owned);

    let (reply, mangle) = match &route {
        Route::Admin(rest) => (
            admin::handle(&shared, &parts.method, rest, &bytes).await,
            Mangle::None,
        ),
        Route::Unknown => (Reply::from(ApiError::not_found()), Mangle::None),
        _ => {
            serve(
                &shared,
                &route,
                &parts.headers,
                parts.uri.query(),
                if_match.as_deref(),
                &bytes,
            )
            .await
        }
    };

    let dropped = matches!(mangle, Mangle::Drop);
    if op != Operation::Admin {
        let subject = match op {
            Operation::Token => grant_subject(&bytes),
            // Whose token an API call came with (delegated tokens only).
            _ => shared
                .lock()
                .oauth
                .subject_of(header_str(&parts.headers, &header::AUTHORIZATION)),
        };
        shared.lock().log.push(RecordedRequest {
            operation: op,
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().map(str::to_owned),
            if_match,
            body: loggable_body(op, &bytes),
            subject,
            status: (!dropped).then(|| match mangle {
                Mangle::LoseAsError => 500,
                _ => reply.status.as_u16(),
            }),
            received_at,
        });
    }
    respond(reply, mangle)
}

async fn serve(
    shared: &Arc<Shared>,
    route: &Route,
    headers: &HeaderMap,
    query: Option<&str>,
    if_match: Option<&str>,
    bytes: &Bytes,
) -> (Reply, Mangle) {
    let op = route.operation();
    let _in_flight = (op == Operation::List).then(|| shared.list_started());
    let latency = shared.lock().latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let fault = {
        let mut inner = shared.lock();
        if op != Operation::Token {
            if let Err(err) = inner
                .oauth
                .check_bearer(header_str(headers, &header::AUTHORIZATION))
            {
                return (err.into(), Mangle::None);
            }
        }
        inner.faults.take(op)
    };
    let mut mangle = Mangle::None;
    let mut hold_answer = None;
    match fault {
        None => {}
        Some(Fault::RateLimit {
            status,
            user,
            retry_after_secs,
        }) => {
            let status = if status == 429 {
                StatusCode::TOO_MANY_REQUESTS
            } else {
                StatusCode::FORBIDDEN
            };
            return (
                ApiError::rate_limited(status, user, retry_after_secs).into(),
                Mangle::None,
            );
        }
        Some(Fault::BackendError) => return (ApiError::backend_error().into(), Mangle::None),
        Some(Fault::Unavailable) => return (ApiError::unavailable().into(), Mangle::None),
        Some(Fault::Delay { millis }) => tokio::time::sleep(millis).await,
        Some(Fault::MalformedBody) => mangle = Mangle::Malformed,
        Some(Fault::TruncatedBody) => mangle = Mangle::Truncated,
        Some(Fault::LoseResponse { then: Lost::Error }) => mangle = Mangle::LoseAsError,
        Some(Fault::LoseResponse { then: Lost::Drop }) => mangle = Mangle::Drop,
        Some(Fault::DelayResponse { millis }) => hold_answer = Some(millis),
        Some(Fault::Respond {
            status,
            headers,
            body,
        }) => {
            return (
                Reply::empty(StatusCode::OK),
                Mangle::Raw {
                    status,
                    headers,
                    body,
                },
            )
        }
    }
    let reply = run(shared, route, headers, query, if_match, bytes);
    if let Some(hold) = hold_answer {
        tokio::time::sleep(hold).await;
    }
    let reply = match reply {
        Ok(reply) => reply,
        Err(err) => return (err.into(), Mangle::None),
    };
    (reply, mangle)
}

/// Runs one operation against the state.
fn run(
    shared: &Arc<Shared>,
    route: &Route,
    headers: &HeaderMap,
    query: Option<&str>,
    if_match: Option<&str>,
    bytes: &Bytes,
) -> Result<Reply, ApiError> {
    let with_etag = |body: Value| {
        let etag = body["etag"].as_str().map(str::to_owned);
        let mut reply = Reply::json(StatusCode::OK, body);
        reply.etag = etag;
        reply
    };
    match route {
        Route::Token => {
            let form: Vec<(String, String)> =
                url::form_urlencoded::parse(bytes).into_owned().collect();
            // The token endpoint's own URL, as the client addressed it: the
            // audience a JWT grant must name.
            let audience = format!(
                "http://{}/token",
                header_str(headers, &header::HOST).unwrap_or_default()
            );
            let body = shared
                .lock()
                .oauth
                .token(&form, basic_credentials(headers), &audience)?;
            Ok(Reply::json(StatusCode::OK, body))
        }
        Route::List(cal) => {
            let params = ListParams::from_query(query)?;
            let inner = shared.lock();
            let body = inner.calendars.list(cal, &params, inner.page_cap)?;
            let last_page = body.get("nextPageToken").is_none();
            let mut reply = Reply::json(StatusCode::OK, body);
            if last_page {
                if let Some(raw) = inner.raw_items.get(cal.as_str()) {
                    reply.raw_items = raw.clone();
                }
            }
            Ok(reply)
        }
        Route::Get(cal, id) => Ok(with_etag(shared.lock().calendars.get(cal, id)?)),
        Route::Insert(cal) => {
            let body = shared.lock().calendars.insert(cal, json_body(bytes)?)?;
            shared.changed(cal);
            Ok(with_etag(body))
        }
        Route::Patch(cal, id) => {
            let body = shared
                .lock()
                .calendars
                .patch(cal, id, json_body(bytes)?, if_match)?;
            shared.changed(cal);
            Ok(with_etag(body))
        }
        Route::Update(cal, id) => {
            let body = shared
                .lock()
                .calendars
                .update(cal, id, json_body(bytes)?, if_match)?;
            shared.changed(cal);
            Ok(with_etag(body))
        }
        Route::Delete(cal, id) => {
            shared.lock().calendars.delete(cal, id, if_match)?;
            shared.changed(cal);
            Ok(Reply::empty(StatusCode::NO_CONTENT))
        }
        Route::GetCalendar(cal) => {
            let info = shared.lock().calendars.calendar_info(cal)?;
            Ok(Reply::json(
                StatusCode::OK,
                json!({
                    "kind": "calendar#calendar",
                    "etag": format!("\"{}\"", info.id.len()),
                    "id": info.id,
                    "summary": info.summary,
                    "timeZone": info.time_zone,
                }),
            ))
        }
        Route::Watch(cal) => {
            let body = json_body(bytes)?;
            let (channel, resource) = {
                let mut inner = shared.lock();
                inner.calendars.calendar_info(cal)?;
                inner.channels.watch(cal, &body)?
            };
            shared.spawn_notify(channel.id, ResourceState::Sync);
            Ok(Reply::json(StatusCode::OK, resource))
        }
        Route::Stop => {
            let body = json_body(bytes)?;
            shared.lock().channels.stop(&body)?;
            Ok(Reply::empty(StatusCode::NO_CONTENT))
        }
        Route::Admin(_) | Route::Unknown => Err(ApiError::not_found()),
    }
}

/// A listing with `raw` items appended to its `items`, as text: the raw
/// items are not values (they may hold what a JSON value cannot).
fn splice_items(body: &serde_json::Map<String, Value>, raw: &[String]) -> String {
    let mut rest = body.clone();
    let items = match rest.remove("items") {
        Some(Value::Array(items)) => items,
        _ => Vec::new(),
    };
    let mut parts: Vec<String> = items
        .iter()
        .map(|i| serde_json::to_string(i).unwrap_or_default())
        .collect();
    parts.extend(raw.iter().cloned());
    let head = serde_json::to_string(&Value::Object(rest)).unwrap_or_else(|_| "{}".into());
    let head = head.strip_suffix('}').unwrap_or(&head);
    let sep = if head.len() > 1 { "," } else { "" };
    format!("{head}{sep}\"items\":[{}]}}", parts.join(","))
}

fn respond(reply: Reply, mangle: Mangle) -> Response {
    let mut builder = Response::builder().status(reply.status);
    if let Some(secs) = reply.retry_after {
        builder = builder.header(header::RETRY_AFTER, secs.to_string());
    }
    if let Some(etag) = &reply.etag {
        builder = builder.header(header::ETAG, etag);
    }
    if let Mangle::Raw {
        status,
        headers,
        body,
    } = &mangle
    {
        let mut raw = Response::builder()
            .status(StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR));
        for (name, value) in headers {
            raw = raw.header(name.as_str(), value.as_str());
        }
        return raw.body(Body::from(body.clone())).unwrap_or_default();
    }
    let text = reply.body.as_ref().map(|b| match b {
        Value::Object(map) if !reply.raw_items.is_empty() => splice_items(map, &reply.raw_items),
        b => serde_json::to_string_pretty(b).unwrap_or_default(),
    });
    let success = reply.status.is_success();
    let response = match (mangle, text) {
        (Mangle::Drop, _) => {
            // The write happened; the client sees the connection die before
            // a complete response.
            let stream = futures::stream::once(async {
                Err::<Bytes, std::io::Error>(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "dropped by fault injection",
                ))
            });
            return Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/json; charset=UTF-8")
                .header(header::CONTENT_LENGTH, "1024")
                .body(Body::from_stream(stream))
                .unwrap_or_default();
        }
        (Mangle::LoseAsError, _) => {
            let err = ApiError::backend_error();
            return Response::builder()
                .status(err.status)
                .header(header::CONTENT_TYPE, "application/json; charset=UTF-8")
                .body(Body::from(
                    serde_json::to_string_pretty(&err.body).unwrap_or_default(),
                ))
                .unwrap_or_default();
        }
        (Mangle::Malformed, Some(_)) if success => builder
            .header(header::CONTENT_TYPE, "application/json; charset=UTF-8")
            .body(Body::from(
                "{\"kind\": \"calendar#events\", \"items\": [{,]}\n<html>",
            )),
        (Mangle::Truncated, Some(text)) if success => {
            let cut = text.len() / 2;
            let mut end = cut;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            builder
                .header(header::CONTENT_TYPE, "application/json; charset=UTF-8")
                .body(Body::from(text[..end].to_owned()))
        }
        (_, Some(text)) => builder
            .header(header::CONTENT_TYPE, "application/json; charset=UTF-8")
            .body(Body::from(text)),
        (_, None) => builder.body(Body::empty()),
    };
    response.unwrap_or_default()
}
