//! `/_admin/...`: the handle's controls over HTTP, for the CLI server (the
//! demo, reproducing a user's sync by hand). Unauthenticated, never faulted,
//! never logged. fixtures/README.md documents every route.

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use super::errors::ApiError;
use super::faults::{Fault, Operation};
use super::reply::Reply;
use super::watch::ResourceState;
use super::Shared;

#[derive(Deserialize)]
struct FaultRequest {
    operation: Operation,
    fault: Fault,
    #[serde(default = "one")]
    times: u32,
}

fn one() -> u32 {
    1
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CalendarRequest {
    id: String,
    #[serde(default)]
    summary: Option<String>,
    time_zone: String,
}

#[derive(Deserialize)]
struct RefreshTokenRequest {
    refresh_token: String,
}

#[derive(Deserialize)]
struct DelegationRequest {
    subject: String,
    allowed: bool,
    /// Only this service account (default: every one).
    #[serde(default)]
    client_email: Option<String>,
}

#[derive(Deserialize)]
struct PageCapRequest {
    page_cap: Option<usize>,
}

#[derive(Deserialize)]
struct NotifyRequest {
    #[serde(default)]
    state: Option<String>,
}

fn parse<T: for<'de> Deserialize<'de>>(bytes: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::invalid(&format!("admin request: {e}")))
}

pub(crate) async fn handle(
    shared: &Arc<Shared>,
    method: &Method,
    rest: &[String],
    bytes: &Bytes,
) -> Reply {
    match route(shared, method, rest, bytes).await {
        Ok(reply) => reply,
        Err(err) => err.into(),
    }
}

async fn route(
    shared: &Arc<Shared>,
    method: &Method,
    rest: &[String],
    bytes: &Bytes,
) -> Result<Reply, ApiError> {
    let path: Vec<&str> = rest.iter().map(String::as_str).collect();
    let ok = || Reply::json(StatusCode::OK, json!({"ok": true}));
    match (method, path.as_slice()) {
        (&Method::GET, ["requests"]) => {
            let log = shared.lock().log.snapshot();
            Ok(Reply::json(
                StatusCode::OK,
                serde_json::to_value(log).unwrap_or(Value::Null),
            ))
        }
        (&Method::DELETE, ["requests"]) => {
            shared.lock().log.clear();
            Ok(ok())
        }
        (&Method::POST, ["faults"]) => {
            let req: FaultRequest = parse(bytes)?;
            shared
                .lock()
                .faults
                .inject(req.operation, req.fault, req.times);
            Ok(ok())
        }
        (&Method::DELETE, ["faults"]) => {
            shared.lock().faults.clear();
            Ok(ok())
        }
        (&Method::POST, ["calendars"]) => {
            let req: CalendarRequest = parse(bytes)?;
            let summary = req.summary.unwrap_or_else(|| req.id.clone());
            shared
                .lock()
                .calendars
                .add_calendar(&req.id, &summary, &req.time_zone, None)?;
            Ok(ok())
        }
        (&Method::POST, ["calendars", cal, "events"]) => {
            let event = shared.lock().calendars.insert(cal, parse(bytes)?)?;
            shared.changed(cal);
            Ok(Reply::json(StatusCode::OK, event))
        }
        (&Method::PATCH, ["calendars", cal, "events", id]) => {
            let event = shared
                .lock()
                .calendars
                .patch(cal, id, parse(bytes)?, None)?;
            shared.changed(cal);
            Ok(Reply::json(StatusCode::OK, event))
        }
        (&Method::DELETE, ["calendars", cal, "events", id]) => {
            shared.lock().calendars.delete(cal, id, None)?;
            shared.changed(cal);
            Ok(ok())
        }
        (&Method::POST, ["calendars", cal, "raw-items"]) => {
            // The body is one item's JSON text, kept verbatim.
            let text = String::from_utf8_lossy(bytes).into_owned();
            shared
                .lock()
                .raw_items
                .entry((*cal).to_owned())
                .or_default()
                .push(text);
            Ok(ok())
        }
        (&Method::DELETE, ["calendars", cal, "raw-items"]) => {
            shared.lock().raw_items.remove(*cal);
            Ok(ok())
        }
        (&Method::POST, ["calendars", cal, "invalidate-sync-tokens"]) => {
            shared.lock().calendars.invalidate_sync_tokens(cal)?;
            Ok(ok())
        }
        (&Method::POST, ["refresh-tokens"]) => {
            let req: RefreshTokenRequest = parse(bytes)?;
            shared.lock().oauth.add_refresh_token(req.refresh_token);
            Ok(ok())
        }
        (&Method::POST, ["refresh-tokens", "revoke"]) => {
            let req: RefreshTokenRequest = parse(bytes)?;
            let known = shared.lock().oauth.revoke(&req.refresh_token);
            Ok(Reply::json(
                StatusCode::OK,
                json!({"ok": true, "known": known}),
            ))
        }
        (&Method::POST, ["delegation"]) => {
            let req: DelegationRequest = parse(bytes)?;
            let matched = shared.lock().oauth.set_delegation(
                req.client_email.as_deref(),
                &req.subject,
                req.allowed,
            );
            if !matched {
                return Err(ApiError::invalid("no such service account"));
            }
            Ok(ok())
        }
        (&Method::POST, ["access-tokens", "expire"]) => {
            shared.lock().oauth.expire_all();
            Ok(ok())
        }
        (&Method::PUT, ["page-cap"]) => {
            let req: PageCapRequest = parse(bytes)?;
            shared.lock().page_cap = req.page_cap;
            Ok(ok())
        }
        (&Method::GET, ["channels"]) => {
            let channels = shared.lock().channels.list();
            Ok(Reply::json(
                StatusCode::OK,
                serde_json::to_value(channels).unwrap_or(Value::Null),
            ))
        }
        (&Method::GET, ["channels", "stopped"]) => {
            let channels = shared.lock().channels.stopped();
            Ok(Reply::json(
                StatusCode::OK,
                serde_json::to_value(channels).unwrap_or(Value::Null),
            ))
        }
        (&Method::POST, ["channels", id, "notify"]) => {
            let req: NotifyRequest = if bytes.is_empty() {
                NotifyRequest { state: None }
            } else {
                parse(bytes)?
            };
            let state = match req.state.as_deref() {
                Some("sync") => ResourceState::Sync,
                None | Some("exists") => ResourceState::Exists,
                Some(other) => return Err(ApiError::invalid(&format!("unknown state {other:?}"))),
            };
            match shared.notify(id, state).await {
                Ok(status) => Ok(Reply::json(
                    StatusCode::OK,
                    json!({"ok": true, "status": status}),
                )),
                Err(err) => Ok(Reply::json(
                    StatusCode::BAD_GATEWAY,
                    json!({"ok": false, "error": err.to_string()}),
                )),
            }
        }
        _ => Err(ApiError::not_found()),
    }
}
