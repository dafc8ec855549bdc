//! The request log tests assert on: every call the emulator answered, in
//! arrival order. Token-endpoint bodies are kept with their secrets
//! (`client_secret`, `refresh_token`, a JWT grant's `assertion`) replaced by
//! `[REDACTED]`; a JWT grant's `sub` is kept as `subject`.

use serde::Serialize;
use serde_json::Value;

use super::faults::Operation;

/// One request and the status it was answered with.
#[derive(Debug, Clone, Serialize)]
pub struct RecordedRequest {
    pub operation: Operation,
    pub method: String,
    /// The path as sent (percent-encoded).
    pub path: String,
    /// The raw query string, if any.
    pub query: Option<String>,
    pub if_match: Option<String>,
    /// The JSON body; a form body (token endpoint) as an object of its
    /// fields; a non-JSON body as a string; `None` when empty.
    pub body: Option<Value>,
    /// `None` when the emulator dropped the connection instead of answering.
    pub status: Option<u16>,
    /// A JWT-bearer grant's `sub` (the member a service account asked to act
    /// as), or on an API call the member its access token was minted for.
    pub subject: Option<String>,
    /// When the request arrived (its body read), for rate measurements.
    pub received_at: chrono::DateTime<chrono::Utc>,
}

impl RecordedRequest {
    /// A query parameter, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        url::form_urlencoded::parse(self.query.as_deref().unwrap_or("").as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }
}

#[derive(Default)]
pub(crate) struct RequestLog {
    entries: Vec<RecordedRequest>,
}

impl RequestLog {
    pub fn push(&mut self, entry: RecordedRequest) {
        self.entries.push(entry);
    }
    pub fn snapshot(&self) -> Vec<RecordedRequest> {
        self.entries.clone()
    }
    pub fn clear(&mut self) {
        self.entries.clear();
    }
}
