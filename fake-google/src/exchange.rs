//! The on-disk form of a recorded session (fixtures/README.md, "Recordings"):
//! one JSON file per request/answer exchange, `NNNN.json`, numbered in the
//! order the requests arrived.
//!
//! This module owns that format and the rule that no secret reaches the disk:
//! [`redact_request`] and [`redact_response`] run on every exchange before it
//! is written, whatever else the recorder does. Only the headers that change
//! what the worker does are kept (`If-Match` and `Content-Type` on requests;
//! `ETag`, `Retry-After` and `Content-Type` on answers); `Authorization` is
//! never among them. Token-exchange secrets (access, refresh and id tokens, the
//! client secret, JWT assertions) become fixed placeholders.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Request headers a recording keeps (lower case).
pub const REQUEST_HEADERS: [&str; 2] = ["if-match", "content-type"];
/// Answer headers a recording keeps (lower case).
pub const RESPONSE_HEADERS: [&str; 3] = ["etag", "retry-after", "content-type"];

/// Form or JSON fields whose values are secrets, wherever they appear.
const SECRET_FIELDS: [&str; 7] = [
    "access_token",
    "refresh_token",
    "id_token",
    "client_secret",
    "assertion",
    "client_assertion",
    "password",
];

/// Form fields that are secrets only in a token request's form (an
/// authorization code); in JSON, `code` is an error body's status.
const FORM_SECRET_FIELDS: [&str; 1] = ["code"];

/// Query parameters whose values are secrets (API keys, tokens in URLs).
const SECRET_PARAMS: [&str; 3] = ["key", "access_token", "oauth_token"];

/// The placeholder a secret field's value becomes: `REDACTED-access_token`
/// (header-safe, so a replayed access token can be sent back as one).
pub fn placeholder(field: &str) -> String {
    format!("REDACTED-{field}")
}

/// One recorded exchange.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exchange {
    pub request: RecordedMessage,
    /// The answer; absent when it was lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<RecordedAnswer>,
    /// Why no answer arrived (connection reset, timeout); replayed by
    /// dropping the connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost: Option<String>,
}

/// A request as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedMessage {
    pub method: String,
    /// The path as sent (percent-encoded), on the emulator's paths:
    /// `/calendar/v3/...` or `/token`.
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    #[serde(flatten)]
    pub body: Payload,
}

/// An answer as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedAnswer {
    pub status: u16,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    #[serde(flatten)]
    pub body: Payload,
}

/// A body, in the most readable form that gives the same bytes' meaning
/// back: JSON as a value, a form as its fields, anything else as text. At
/// most one of the three is set; none for an empty body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Payload {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    /// An `application/x-www-form-urlencoded` body, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub form: Option<Vec<(String, String)>>,
    /// A body that is not JSON (a truncated answer, an HTML error page).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

impl Payload {
    pub fn from_bytes(content_type: Option<&str>, bytes: &[u8]) -> Payload {
        if bytes.is_empty() {
            return Payload::default();
        }
        let is_form =
            content_type.is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
        if is_form {
            return Payload {
                form: Some(url::form_urlencoded::parse(bytes).into_owned().collect()),
                ..Payload::default()
            };
        }
        match serde_json::from_slice::<Value>(bytes) {
            Ok(value) => Payload {
                body: Some(value),
                ..Payload::default()
            },
            Err(_) => Payload {
                text: Some(String::from_utf8_lossy(bytes).into_owned()),
                ..Payload::default()
            },
        }
    }

    /// The bytes to send back (JSON pretty-printed, as Google does).
    pub fn to_bytes(&self) -> Bytes {
        if let Some(value) = &self.body {
            return Bytes::from(serde_json::to_vec_pretty(value).unwrap_or_default());
        }
        if let Some(form) = &self.form {
            return Bytes::from(
                url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(form)
                    .finish(),
            );
        }
        Bytes::from(self.text.clone().unwrap_or_default())
    }

    /// A form field's value.
    pub fn form_field(&self, name: &str) -> Option<&str> {
        self.form
            .as_ref()?
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The kept headers, lower-cased.
pub fn kept_headers(headers: &http::HeaderMap, keep: &[&str]) -> BTreeMap<String, String> {
    keep.iter()
        .filter_map(|name| {
            let value = headers.get(*name)?.to_str().ok()?;
            Some(((*name).to_owned(), value.to_owned()))
        })
        .collect()
}

/// Replaces every secret in a request: secret form/JSON fields and query
/// parameters. (Headers other than the kept ones never get here.)
pub fn redact_request(message: &mut RecordedMessage) {
    redact_payload(&mut message.body);
    if let Some(query) = &message.query {
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        if pairs
            .iter()
            .any(|(k, _)| SECRET_PARAMS.contains(&k.as_str()))
        {
            let redacted = pairs.into_iter().map(|(k, v)| {
                if SECRET_PARAMS.contains(&k.as_str()) {
                    let p = placeholder(&k);
                    (k, p)
                } else {
                    (k, v)
                }
            });
            message.query = Some(
                url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(redacted)
                    .finish(),
            );
        }
    }
}

/// Replaces every secret field of an answer's body.
pub fn redact_response(answer: &mut RecordedAnswer) {
    redact_payload(&mut answer.body);
}

fn redact_payload(payload: &mut Payload) {
    if let Some(form) = &mut payload.form {
        for (k, v) in form.iter_mut() {
            if SECRET_FIELDS.contains(&k.as_str()) || FORM_SECRET_FIELDS.contains(&k.as_str()) {
                *v = placeholder(k);
            }
        }
    }
    if let Some(value) = &mut payload.body {
        redact_json(value);
    }
}

fn redact_json(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if SECRET_FIELDS.contains(&k.as_str()) && !v.is_null() {
                    *v = Value::String(placeholder(k));
                } else {
                    redact_json(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_json),
        _ => {}
    }
}

/// Why a recording could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error("cannot access {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a recorded exchange")]
    Format {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{0}: no recorded exchange (NNNN.json) in this folder")]
    Empty(PathBuf),
}

/// The file name of exchange `seq`: `0007.json`.
pub fn file_name(seq: usize) -> String {
    format!("{seq:04}.json")
}

/// Writes one exchange as `dir/NNNN.json`.
pub fn write(dir: &Path, seq: usize, exchange: &Exchange) -> Result<(), RecordingError> {
    let path = dir.join(file_name(seq));
    let mut text =
        serde_json::to_string_pretty(exchange).map_err(|source| RecordingError::Format {
            path: path.clone(),
            source,
        })?;
    text.push('\n');
    std::fs::write(&path, text).map_err(|source| RecordingError::Io { path, source })
}

/// Reads a recording: every `NNNN.json` of `dir`, by number. Other files
/// (a README, notes) are ignored.
pub fn load(dir: &Path) -> Result<Vec<(usize, Exchange)>, RecordingError> {
    let io = |source| RecordingError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let Some(seq) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".json"))
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        let text = std::fs::read_to_string(&path).map_err(|source| RecordingError::Io {
            path: path.clone(),
            source,
        })?;
        let exchange = serde_json::from_str(&text)
            .map_err(|source| RecordingError::Format { path, source })?;
        out.push((seq, exchange));
    }
    if out.is_empty() {
        return Err(RecordingError::Empty(dir.to_owned()));
    }
    out.sort_by_key(|(seq, _)| *seq);
    Ok(out)
}

/// `GET /calendar/v3/...?query` — how logs and failures name a request.
pub fn describe(method: &str, path: &str, query: Option<&str>) -> String {
    match query {
        Some(q) if !q.is_empty() => format!("{method} {path}?{q}"),
        _ => format!("{method} {path}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn token_secrets_become_placeholders_in_forms_json_and_queries() {
        let mut request = RecordedMessage {
            method: "POST".into(),
            path: "/token".into(),
            query: Some("key=AIzaSECRET&alt=json".into()),
            headers: BTreeMap::new(),
            body: Payload::from_bytes(
                Some("application/x-www-form-urlencoded"),
                b"grant_type=refresh_token&refresh_token=1%2F%2Fsecret&client_id=abc&client_secret=shh",
            ),
        };
        redact_request(&mut request);
        let form = request.body.form.as_ref().unwrap();
        assert!(form.contains(&("grant_type".into(), "refresh_token".into())));
        assert!(form.contains(&("client_id".into(), "abc".into())));
        assert!(form.contains(&("refresh_token".into(), placeholder("refresh_token"))));
        assert!(form.contains(&("client_secret".into(), placeholder("client_secret"))));
        assert_eq!(request.query.as_deref(), Some("key=REDACTED-key&alt=json"));

        let mut answer = RecordedAnswer {
            status: 200,
            headers: BTreeMap::new(),
            body: Payload {
                body: Some(json!({"access_token": "ya29.secret", "expires_in": 3599,
                                  "nested": [{"refresh_token": "r"}], "code": 409})),
                ..Payload::default()
            },
        };
        redact_response(&mut answer);
        let text = serde_json::to_string(&answer).unwrap();
        assert!(
            !text.contains("ya29.secret") && !text.contains("\"r\""),
            "{text}"
        );
        assert!(text.contains("3599") && text.contains("409"), "{text}");
    }

    #[test]
    fn payloads_round_trip_json_forms_and_text() {
        let json = Payload::from_bytes(Some("application/json"), br#"{"a":1}"#);
        assert_eq!(json.body, Some(json!({"a": 1})));
        let text = Payload::from_bytes(Some("application/json"), b"{\"a\": [1,");
        assert_eq!(text.text.as_deref(), Some("{\"a\": [1,"));
        assert_eq!(text.to_bytes(), Bytes::from_static(b"{\"a\": [1,"));
        let form = Payload::from_bytes(Some("application/x-www-form-urlencoded"), b"a=1&b=x+y");
        assert_eq!(form.form_field("b"), Some("x y"));
        assert_eq!(form.to_bytes(), Bytes::from_static(b"a=1&b=x+y"));
        assert_eq!(Payload::from_bytes(None, b""), Payload::default());
    }
}
