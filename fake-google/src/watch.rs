//! Push-notification channels (`events.watch`, `channels.stop`) and the
//! notifications Google POSTs to a channel's address.
//!
//! A notification is an empty POST with Google's `X-Goog-*` headers: `sync`
//! right after a channel is created, `exists` after a change of its calendar.
//! Addresses may be plain `http://` (Google demands HTTPS; tests cannot).
//!
//! As Google: the granted expiration is the requested `params.ttl` (default
//! a week) capped by the emulator's `channel_ttl` (`--channel-ttl-secs`, so
//! tests can watch renewals); an expired or stopped channel gets no more
//! notifications; the `resourceId` names the watched calendar (every channel
//! on one calendar gets the same), so `channels.stop` needs it to match.
//! Stopped channels stay listed in [`Channels::stopped`] for observers.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, TimeDelta, Utc};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde_json::{json, Value};

use super::errors::ApiError;

/// Google's default channel lifetime for Calendar (one week).
pub const DEFAULT_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// A registered notification channel.
#[derive(Debug, Clone, Serialize)]
pub struct Channel {
    pub id: String,
    pub resource_id: String,
    pub calendar_id: String,
    pub address: String,
    pub token: Option<String>,
    pub expiration: DateTime<Utc>,
    /// The `X-Goog-Message-Number` of the last notification sent.
    pub message_number: u64,
    /// When `channels.stop` stopped it (only in [`Channels::stopped`]).
    pub stopped_at: Option<DateTime<Utc>>,
}

impl Channel {
    /// Registered, not stopped, not expired.
    pub fn is_live(&self) -> bool {
        self.stopped_at.is_none() && self.expiration > Utc::now()
    }
}

/// `X-Goog-Resource-State`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceState {
    Sync,
    Exists,
}

impl ResourceState {
    fn as_str(self) -> &'static str {
        match self {
            ResourceState::Sync => "sync",
            ResourceState::Exists => "exists",
        }
    }
}

pub(crate) struct Channels {
    map: HashMap<String, Channel>,
    stopped: Vec<Channel>,
    /// One resource id per watched calendar, as Google's.
    resource_ids: HashMap<String, String>,
    /// The longest lifetime granted.
    max_ttl: TimeDelta,
}

fn resource_uri(calendar_id: &str) -> String {
    let encoded: String = url::form_urlencoded::byte_serialize(calendar_id.as_bytes()).collect();
    format!("https://www.googleapis.com/calendar/v3/calendars/{encoded}/events?alt=json")
}

impl Channels {
    pub fn new(max_ttl: Duration) -> Self {
        Channels {
            map: HashMap::new(),
            stopped: Vec::new(),
            resource_ids: HashMap::new(),
            max_ttl: TimeDelta::from_std(max_ttl).unwrap_or(TimeDelta::MAX),
        }
    }

    /// `events.watch`: registers a channel and returns Google's resource.
    pub fn watch(&mut self, calendar_id: &str, body: &Value) -> Result<(Channel, Value), ApiError> {
        let id = body["id"]
            .as_str()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| ApiError::bad_request("global", "required", "Required", Some("id")))?;
        let kind = body["type"].as_str().unwrap_or_default();
        if !matches!(kind, "web_hook" | "webhook") {
            return Err(ApiError::bad_request(
                "push",
                "invalidType",
                "Invalid channel type.",
                None,
            ));
        }
        let address = body["address"]
            .as_str()
            .filter(|a| a.starts_with("https://") || a.starts_with("http://"))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "push",
                    "invalidAddress",
                    "Invalid notification address.",
                    None,
                )
            })?;
        if self.map.contains_key(id) {
            return Err(ApiError::bad_request(
                "global",
                "channelIdNotUnique",
                &format!("Channel id {id} not unique"),
                None,
            ));
        }
        let now = Utc::now();
        let ttl = body["params"]["ttl"]
            .as_str()
            .and_then(|t| t.parse::<i64>().ok())
            .map(TimeDelta::seconds)
            .unwrap_or(TimeDelta::from_std(DEFAULT_TTL).expect("a week fits"));
        let mut expiration = now + ttl.min(self.max_ttl);
        if let Some(ms) = body["expiration"]
            .as_str()
            .and_then(|t| t.parse::<i64>().ok())
            .or_else(|| body["expiration"].as_i64())
        {
            if let Some(at) = DateTime::from_timestamp_millis(ms) {
                expiration = expiration.min(at);
            }
        }
        let channel = Channel {
            id: id.to_owned(),
            resource_id: self
                .resource_ids
                .entry(calendar_id.to_owned())
                .or_insert_with(random_resource_id)
                .clone(),
            calendar_id: calendar_id.to_owned(),
            address: address.to_owned(),
            token: body["token"].as_str().map(str::to_owned),
            expiration,
            message_number: 0,
            stopped_at: None,
        };
        let mut resource = json!({
            "kind": "api#channel",
            "id": channel.id,
            "resourceId": channel.resource_id,
            "resourceUri": resource_uri(calendar_id),
            "expiration": channel.expiration.timestamp_millis().to_string(),
        });
        if let Some(token) = &channel.token {
            resource["token"] = json!(token);
        }
        self.map.insert(channel.id.clone(), channel.clone());
        Ok((channel, resource))
    }

    /// `channels.stop`: the id and resource id must name a live channel.
    pub fn stop(&mut self, body: &Value) -> Result<(), ApiError> {
        let id = body["id"].as_str().unwrap_or_default();
        let resource_id = body["resourceId"].as_str().unwrap_or_default();
        match self.map.get(id) {
            Some(channel) if channel.resource_id == resource_id => {
                if let Some(mut channel) = self.map.remove(id) {
                    channel.stopped_at = Some(Utc::now());
                    self.stopped.push(channel);
                }
                Ok(())
            }
            _ => Err(ApiError::not_found()),
        }
    }

    /// Channels stopped by `channels.stop`, in the order they were stopped.
    pub fn stopped(&self) -> Vec<Channel> {
        self.stopped.clone()
    }

    pub fn list(&self) -> Vec<Channel> {
        let mut out: Vec<Channel> = self.map.values().cloned().collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// Takes the next message number of a live channel and returns what to send.
    pub fn next_message(&mut self, channel_id: &str) -> Option<Channel> {
        let channel = self.map.get_mut(channel_id)?;
        if channel.expiration <= Utc::now() {
            return None;
        }
        channel.message_number += 1;
        Some(channel.clone())
    }

    /// The live channels watching a calendar.
    pub fn watching(&self, calendar_id: &str) -> Vec<String> {
        let now = Utc::now();
        self.map
            .values()
            .filter(|c| c.calendar_id == calendar_id && c.expiration > now)
            .map(|c| c.id.clone())
            .collect()
    }
}

fn random_resource_id() -> String {
    use rand::distributions::Alphanumeric;
    use rand::Rng;
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(27)
        .map(char::from)
        .collect()
}

/// Why a notification was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("no live channel {0}")]
    NoChannel(String),
    #[error("invalid channel address {0}")]
    Address(String),
    #[error("posting the notification failed: {0}")]
    Send(String),
    #[error("posting the notification timed out")]
    Timeout,
}

/// The client notifications go out on: one per emulator, so keep-alive
/// connections to a receiver are reused as Google's would be.
pub(crate) type NotifyClient =
    Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

pub(crate) fn notify_client() -> NotifyClient {
    Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>()
}

/// POSTs one notification and returns the receiver's HTTP status.
pub(crate) async fn post(
    client: &NotifyClient,
    channel: &Channel,
    state: ResourceState,
) -> Result<u16, NotifyError> {
    let mut request = http::Request::post(channel.address.as_str())
        .header("X-Goog-Channel-ID", &channel.id)
        .header(
            "X-Goog-Channel-Expiration",
            channel.expiration.to_rfc2822().replace("+0000", "GMT"),
        )
        .header("X-Goog-Resource-ID", &channel.resource_id)
        .header("X-Goog-Resource-URI", resource_uri(&channel.calendar_id))
        .header("X-Goog-Resource-State", state.as_str())
        .header("X-Goog-Message-Number", channel.message_number.to_string())
        .header(http::header::CONTENT_LENGTH, "0");
    if let Some(token) = &channel.token {
        request = request.header("X-Goog-Channel-Token", token);
    }
    let request = request
        .body(Full::new(Bytes::new()))
        .map_err(|_| NotifyError::Address(channel.address.clone()))?;
    let response = tokio::time::timeout(Duration::from_secs(10), client.request(request))
        .await
        .map_err(|_| NotifyError::Timeout)?
        .map_err(|e| NotifyError::Send(e.to_string()))?;
    Ok(response.status().as_u16())
}
