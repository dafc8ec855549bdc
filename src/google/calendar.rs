//! [`CalendarClient`]: the calls sync makes on one connection's calendar.
//!
//! Reads go through google-calendar3's hub; conditional writes and patches
//! that clear fields, which the crate cannot express, are raw requests with
//! bodies from [`super::mapping`] — on the same HTTP client, with the same
//! token provider, the same deadline and the same classification. Every call
//! that answers 401 refreshes the access token once and is repeated once.
//! Nothing here retries anything else: the queue owns retries and snoozes.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use google_calendar3::api::{Channel, Event};
use google_calendar3::CalendarHub;
use http::header::{AUTHORIZATION, CONTENT_TYPE, IF_MATCH, USER_AGENT};
use http::{Method, Request};
use serde_json::{json, Value};
use tokio::time::error::Elapsed;

use super::budget::{self, CallKind};
use super::error::{classify, from_hub_error, Capture, ErrorBody, GoogleError, Target};
use super::http::{body, empty_body, send, Connector, SendError};
use super::listing::{parse_page, EventPage};
use super::mapping::{remote_event, write_ack, BodyKind, EventBody, RemoteEvent, WriteAck};
use super::retry_after::retry_after;
use super::token::TokenProvider;
use super::HttpClient;
use crate::ids::{CalendarId, Etag, EventId, SyncToken};
use crate::model::AppointmentFields;

const USER_AGENT_VALUE: &str = concat!("plansync/", env!("CARGO_PKG_VERSION"));

/// Google's page-size ceiling for `events.list`, and what sync asks for.
pub const MAX_PAGE_SIZE: u32 = 2500;

/// Google's opaque `nextPageToken`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageToken(pub String);

/// Where a listing starts. `singleEvents=true` and `showDeleted=true` are
/// always sent: a sync token is only valid with the parameters of the full
/// sync that produced it, so they are not the caller's to vary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListFrom {
    /// An incremental listing of what changed since this token.
    SyncToken(SyncToken),
    /// A full listing of events ending after `time_min`.
    TimeMin(DateTime<Utc>),
}

/// One `events.list` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    pub from: ListFrom,
    /// The previous page's `next_page_token`; `None` for the first page.
    pub page_token: Option<PageToken>,
    pub max_results: u32,
}

impl ListQuery {
    pub fn incremental(token: SyncToken) -> Self {
        ListQuery {
            from: ListFrom::SyncToken(token),
            page_token: None,
            max_results: MAX_PAGE_SIZE,
        }
    }

    pub fn full(time_min: DateTime<Utc>) -> Self {
        ListQuery {
            from: ListFrom::TimeMin(time_min),
            page_token: None,
            max_results: MAX_PAGE_SIZE,
        }
    }

    /// The same query for the page after one that answered `next`.
    pub fn next_page(&self, next: PageToken) -> Self {
        ListQuery {
            page_token: Some(next),
            ..self.clone()
        }
    }
}

/// A new event to create under a client-supplied id.
#[derive(Debug, Clone, Copy)]
pub struct NewEvent<'a> {
    /// base32hex (`[a-v0-9]`), 5–1024 characters.
    pub id: &'a EventId,
    pub fields: &'a AppointmentFields,
    /// Written to `extendedProperties.private`.
    pub private_properties: &'a BTreeMap<String, String>,
}

/// A notification channel to open on a calendar's events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchRequest {
    /// Our unique id for the channel.
    pub channel_id: String,
    /// Where Google posts notifications.
    pub address: String,
    /// Echoed by Google in `X-Goog-Channel-Token`, to authenticate notifications.
    pub token: Option<String>,
    /// Requested lifetime; Google may grant less.
    pub ttl: Option<Duration>,
}

/// An open notification channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchChannel {
    pub channel_id: String,
    /// Google's id of the watched resource, needed to stop the channel.
    pub resource_id: String,
    pub expiration: Option<DateTime<Utc>>,
}

/// One connection's access to Google Calendar: a google-calendar3 hub bound to
/// the connection's token provider, plus our raw requests.
pub struct CalendarClient {
    hub: CalendarHub<Connector>,
    tokens: TokenProvider,
    http: HttpClient,
    base_url: url::Url,
    timeout: Duration,
}

impl std::fmt::Debug for CalendarClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CalendarClient")
            .field("base_url", &self.base_url.as_str())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl CalendarClient {
    pub(crate) fn new(
        http: HttpClient,
        base_url: url::Url,
        tokens: TokenProvider,
        timeout: Duration,
    ) -> Self {
        let mut hub = CalendarHub::new(http.clone(), tokens.clone());
        hub.base_url(base_url.to_string());
        hub.user_agent(USER_AGENT_VALUE.to_owned());
        CalendarClient {
            hub,
            tokens,
            http,
            base_url,
            timeout,
        }
    }

    /// The connection's token provider (to check the refresh token, e.g. at
    /// `connect`, without calling the Calendar API).
    pub fn tokens(&self) -> &TokenProvider {
        &self.tokens
    }

    /// One page of `events.list` with `singleEvents=true&showDeleted=true`.
    ///
    /// The page must be a complete, valid listing page (see [`parse_page`]):
    /// anything else is [`GoogleError::Malformed`], so a broken answer is a
    /// failure and never an empty calendar. Events are decoded one by one: an
    /// event that cannot be read is returned in [`EventPage::skipped`] with its
    /// reason and never fails the page.
    ///
    /// Listed through the hub's HTTP client rather than the hub itself,
    /// because google-calendar3 decodes a page as one struct: one odd event
    /// would fail the whole page.
    pub async fn list_page(
        &self,
        calendar: &CalendarId,
        query: &ListQuery,
    ) -> Result<EventPage, GoogleError> {
        let url = self.list_url(calendar, query);
        let answer = self
            .raw(
                CallKind::List,
                Target::Calendar,
                Method::GET,
                &url,
                None,
                None,
            )
            .await?;
        parse_page(&answer)
    }

    fn list_url(&self, calendar: &CalendarId, query: &ListQuery) -> url::Url {
        let mut url = self.events_url(calendar, None);
        {
            let mut pairs = url.query_pairs_mut();
            pairs
                .append_pair("singleEvents", "true")
                .append_pair("showDeleted", "true")
                .append_pair(
                    "maxResults",
                    &query.max_results.clamp(1, MAX_PAGE_SIZE).to_string(),
                );
            match &query.from {
                ListFrom::SyncToken(token) => {
                    pairs.append_pair("syncToken", token.as_str());
                }
                ListFrom::TimeMin(t) => {
                    pairs.append_pair(
                        "timeMin",
                        &t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    );
                }
            }
            if let Some(page) = &query.page_token {
                pairs.append_pair("pageToken", &page.0);
            }
        }
        url
    }

    /// `events.get`. A deleted event comes back as
    /// [`RemoteEventKind::Cancelled`](super::RemoteEventKind::Cancelled).
    /// `calendar_time_zone` fills the zones of an event without its own.
    pub async fn get_event(
        &self,
        calendar: &CalendarId,
        event: &EventId,
        calendar_time_zone: Option<&str>,
    ) -> Result<RemoteEvent, GoogleError> {
        let found = self
            .refreshing_once(|| {
                self.metered(CallKind::Get, async {
                    let mut capture = Capture::default();
                    let call = self
                        .hub
                        .events()
                        .get(calendar.as_str(), event.as_str())
                        .delegate(&mut capture);
                    let result = tokio::time::timeout(self.timeout, call.doit()).await;
                    self.settle(Target::Event, &capture, result)
                        .map(|(_, event)| event)
                })
            })
            .await?;
        remote_event(&found, calendar_time_zone)
    }

    /// `events.insert` under a client-supplied id (idempotent: a retry of an
    /// insert that took effect gets [`GoogleError::Duplicate`]).
    pub async fn insert_event(
        &self,
        calendar: &CalendarId,
        new: NewEvent<'_>,
        calendar_time_zone: Option<&str>,
    ) -> Result<WriteAck, GoogleError> {
        let mut body = EventBody {
            fields: new.fields,
            calendar_time_zone,
            kind: BodyKind::Insert,
        }
        .to_json()?;
        body.insert("id".into(), json!(new.id.as_str()));
        if !new.private_properties.is_empty() {
            body.insert(
                "extendedProperties".into(),
                json!({ "private": new.private_properties }),
            );
        }
        let url = self.events_url(calendar, None);
        let answer = self
            .raw(
                CallKind::Insert,
                Target::Calendar,
                Method::POST,
                &url,
                None,
                Some(&Value::Object(body)),
            )
            .await?;
        write_ack(&parse_event(&answer)?)
    }

    /// `PATCH` with `If-Match: etag`; fields absent from `fields` are cleared
    /// in Google. A changed event gives [`GoogleError::PreconditionFailed`].
    pub async fn patch_event_if_match(
        &self,
        calendar: &CalendarId,
        event: &EventId,
        etag: &Etag,
        fields: &AppointmentFields,
        calendar_time_zone: Option<&str>,
    ) -> Result<WriteAck, GoogleError> {
        let body = EventBody {
            fields,
            calendar_time_zone,
            kind: BodyKind::Patch,
        }
        .to_json()?;
        let url = self.events_url(calendar, Some(event));
        let answer = self
            .raw(
                CallKind::Patch,
                Target::Event,
                Method::PATCH,
                &url,
                Some(etag),
                Some(&Value::Object(body)),
            )
            .await?;
        write_ack(&parse_event(&answer)?)
    }

    /// `DELETE`, conditional on `if_match` when given. An already deleted
    /// event gives [`GoogleError::Gone`], an unknown one
    /// [`GoogleError::NotFound`]: a delete's caller counts both as done.
    pub async fn delete_event(
        &self,
        calendar: &CalendarId,
        event: &EventId,
        if_match: Option<&Etag>,
    ) -> Result<(), GoogleError> {
        let url = self.events_url(calendar, Some(event));
        self.raw(
            CallKind::Delete,
            Target::Event,
            Method::DELETE,
            &url,
            if_match,
            None,
        )
        .await
        .map(drop)
    }

    /// `events.watch`: opens a notification channel on the calendar's events.
    pub async fn watch(
        &self,
        calendar: &CalendarId,
        request: &WatchRequest,
    ) -> Result<WatchChannel, GoogleError> {
        let channel = Channel {
            id: Some(request.channel_id.clone()),
            type_: Some("web_hook".to_owned()),
            address: Some(request.address.clone()),
            token: request.token.clone(),
            params: request
                .ttl
                .map(|ttl| [("ttl".to_owned(), ttl.as_secs().to_string())].into()),
            ..Channel::default()
        };
        let opened = self
            .refreshing_once(|| {
                self.metered(CallKind::Watch, async {
                    let mut capture = Capture::default();
                    let call = self
                        .hub
                        .events()
                        .watch(channel.clone(), calendar.as_str())
                        .single_events(true)
                        .show_deleted(true)
                        .delegate(&mut capture);
                    let result = tokio::time::timeout(self.timeout, call.doit()).await;
                    self.settle(Target::Calendar, &capture, result)
                        .map(|(_, channel)| channel)
                })
            })
            .await?;
        let resource_id = opened
            .resource_id
            .filter(|r| !r.is_empty())
            .ok_or_else(|| GoogleError::Malformed {
                detail: "watch answer without resourceId".to_owned(),
            })?;
        Ok(WatchChannel {
            channel_id: opened.id.unwrap_or_else(|| request.channel_id.clone()),
            resource_id,
            expiration: opened
                .expiration
                .and_then(DateTime::<Utc>::from_timestamp_millis),
        })
    }

    /// `channels.stop`. A channel Google no longer knows gives
    /// [`GoogleError::NotFound`]: its caller counts that as stopped.
    pub async fn stop_channel(
        &self,
        channel_id: &str,
        resource_id: &str,
    ) -> Result<(), GoogleError> {
        let channel = Channel {
            id: Some(channel_id.to_owned()),
            resource_id: Some(resource_id.to_owned()),
            ..Channel::default()
        };
        self.refreshing_once(|| {
            self.metered(CallKind::Stop, async {
                let mut capture = Capture::default();
                let call = self
                    .hub
                    .channels()
                    .stop(channel.clone())
                    .delegate(&mut capture);
                let result = tokio::time::timeout(self.timeout, call.doit()).await;
                self.settle(Target::Channel, &capture, result).map(drop)
            })
        })
        .await
    }

    /// Runs `call`; on 401 drops the cached access token and runs it once more.
    async fn refreshing_once<T, F, Fut>(&self, call: F) -> Result<T, GoogleError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, GoogleError>>,
    {
        match call().await {
            Err(GoogleError::Unauthorized { .. }) => {
                tracing::debug!("Google answered 401: refreshing the access token once");
                self.tokens.invalidate().await;
                call().await
            }
            other => other,
        }
    }

    /// The outcome of one hub call made under the deadline.
    fn settle<T>(
        &self,
        target: Target,
        capture: &Capture,
        result: Result<google_calendar3::Result<T>, Elapsed>,
    ) -> Result<T, GoogleError> {
        match result {
            Err(_) => Err(GoogleError::Timeout(self.timeout)),
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(from_hub_error(target, capture, e)),
        }
    }

    /// `{base}calendars/{calendar}/events[/{event}]`, each id one
    /// percent-encoded path segment (calendar ids contain `@` and `#`).
    fn events_url(&self, calendar: &CalendarId, event: Option<&EventId>) -> url::Url {
        let mut url = self.base_url.clone();
        {
            let mut segments = url
                .path_segments_mut()
                .expect("an http(s) base URL has a path");
            segments
                .pop_if_empty()
                .extend(["calendars", calendar.as_str(), "events"]);
            if let Some(event) = event {
                segments.push(event.as_str());
            }
        }
        url
    }

    /// One request of `kind`: first one request from the budget (nothing is
    /// sent without it), then the call, counted by its outcome.
    async fn metered<T>(
        &self,
        kind: CallKind,
        call: impl Future<Output = Result<T, GoogleError>>,
    ) -> Result<T, GoogleError> {
        self.tokens
            .budget()
            .acquire(kind)
            .await
            .map_err(|over| GoogleError::OverBudget {
                retry_after: over.retry_after,
                scope: over.scope,
            })?;
        let result = super::observe::observe(super::observe::operation(kind), call).await;
        budget::record(kind, budget::outcome(&result));
        result
    }

    /// A raw request, refreshing the token once on 401.
    async fn raw(
        &self,
        kind: CallKind,
        target: Target,
        method: Method,
        url: &url::Url,
        if_match: Option<&Etag>,
        json_body: Option<&Value>,
    ) -> Result<Bytes, GoogleError> {
        self.refreshing_once(|| {
            self.raw_once(kind, target, method.clone(), url, if_match, json_body)
        })
        .await
    }

    async fn raw_once(
        &self,
        kind: CallKind,
        target: Target,
        method: Method,
        url: &url::Url,
        if_match: Option<&Etag>,
        json_body: Option<&Value>,
    ) -> Result<Bytes, GoogleError> {
        let token = self.tokens.access_token().await?;
        self.metered(
            kind,
            self.send_raw(target, method, url, if_match, json_body, token),
        )
        .await
    }

    async fn send_raw(
        &self,
        target: Target,
        method: Method,
        url: &url::Url,
        if_match: Option<&Etag>,
        json_body: Option<&Value>,
        token: crate::ids::AccessToken,
    ) -> Result<Bytes, GoogleError> {
        let mut request = Request::builder()
            .method(method)
            .uri(url.as_str())
            .header(USER_AGENT, USER_AGENT_VALUE)
            .header(AUTHORIZATION, format!("Bearer {}", token.expose_secret()));
        if let Some(etag) = if_match {
            request = request.header(IF_MATCH, etag.as_str());
        }
        let request = match json_body {
            Some(value) => request
                .header(CONTENT_TYPE, "application/json")
                .body(body(value.to_string())),
            None => request.body(empty_body()),
        }
        .map_err(|e| GoogleError::Permanent {
            status: None,
            reason: None,
            message: format!("cannot build the request: {e}"),
        })?;
        let response = match send(&self.http, request, self.timeout).await {
            Ok(r) => r,
            Err(SendError::Timeout(d)) => return Err(GoogleError::Timeout(d)),
            Err(SendError::Connection(detail)) => {
                return Err(GoogleError::Transient {
                    status: None,
                    detail: format!("connection failed: {detail}"),
                })
            }
        };
        if response.status.is_success() {
            return response.body.map_err(|detail| GoogleError::Malformed {
                detail: format!("the answer broke off: {detail}"),
            });
        }
        let content_type = response
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let error_body = response
            .body
            .as_ref()
            .map(|b| ErrorBody::from_response(content_type, b))
            .unwrap_or_default();
        Err(classify(
            target,
            response.status,
            retry_after(&response.headers),
            &error_body,
        ))
    }
}

fn parse_event(bytes: &[u8]) -> Result<Event, GoogleError> {
    serde_json::from_slice(bytes).map_err(|e| GoogleError::Malformed {
        detail: format!("invalid event JSON: {e}"),
    })
}
