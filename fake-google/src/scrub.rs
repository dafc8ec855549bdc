//! `--scrub`: personal data in a recording replaced by stable pseudonyms, so a
//! recording can be attached to a bug report.
//!
//! Within one recording the same input always gives the same pseudonym (one
//! [`Scrubber`] lives as long as the recorder), so an event edited twice keeps
//! one pseudonymous summary and a calendar id that is an address is renamed
//! the same way in paths and in bodies; the table itself never reaches the
//! disk. Scrubbed: `summary`, `description`, `location` (text keys, anywhere),
//! `displayName` and `email` (attendees, organiser, creator), `htmlLink`, and
//! every other string that looks like an e-mail address (calendar ids such
//! as `alice@gmail.com`), except `iCalUID`s. Ids, times, etags and tokens are
//! left alone: the worker's behaviour depends on them.

use std::collections::HashMap;

use serde_json::Value;

use super::exchange::Exchange;

/// The pseudonym tables of one recording.
#[derive(Debug, Default)]
pub struct Scrubber {
    tables: HashMap<&'static str, HashMap<String, String>>,
}

/// Keys whose string values are free text.
const TEXT_KEYS: [&str; 3] = ["summary", "description", "location"];

impl Scrubber {
    /// The pseudonym of `value` of `kind`: `summary-3`, `person-2@example.invalid`.
    fn pseudonym(&mut self, kind: &'static str, value: &str) -> String {
        let table = self.tables.entry(kind).or_default();
        let next = table.len() + 1;
        table
            .entry(value.to_owned())
            .or_insert_with(|| match kind {
                "email" => format!("person-{next}@example.invalid"),
                "displayName" => format!("Person {next}"),
                "htmlLink" => {
                    format!("https://calendar.example.invalid/event?eid=pseudonym-{next}")
                }
                other => format!("{other}-{next}"),
            })
            .clone()
    }

    /// Scrubs a whole exchange: the request's path and body, the answer's body.
    pub fn scrub(&mut self, exchange: &mut Exchange) {
        exchange.request.path = self.scrub_path(&exchange.request.path);
        if let Some(body) = &mut exchange.request.body.body {
            self.scrub_json(None, body);
        }
        if let Some(answer) = &mut exchange.response {
            if let Some(body) = &mut answer.body.body {
                self.scrub_json(None, body);
            }
        }
    }

    /// Path segments that are addresses (calendar ids) get their pseudonym.
    fn scrub_path(&mut self, path: &str) -> String {
        path.split('/')
            .map(|segment| {
                let decoded = percent_decode(segment);
                if looks_like_email(&decoded) {
                    let pseudonym = self.pseudonym("email", &decoded);
                    if decoded == segment {
                        pseudonym
                    } else {
                        // Keep the client's encoding, so the replayed path
                        // is the one the worker sends.
                        url::form_urlencoded::byte_serialize(pseudonym.as_bytes()).collect()
                    }
                } else {
                    segment.to_owned()
                }
            })
            .collect::<Vec<String>>()
            .join("/")
    }

    fn scrub_json(&mut self, key: Option<&str>, value: &mut Value) {
        match value {
            // Google's error bodies hold no personal data, and their
            // `location` names a parameter or header (`If-Match`): kept.
            Value::Object(_) if key == Some("error") => {}
            Value::Object(map) => {
                for (k, v) in map.iter_mut() {
                    self.scrub_json(Some(k.as_str()), v);
                }
            }
            Value::Array(items) => {
                for item in items {
                    self.scrub_json(key, item);
                }
            }
            Value::String(text) => {
                let kind: Option<&'static str> = match key {
                    Some("iCalUID") => None,
                    Some(k) if TEXT_KEYS.contains(&k) => {
                        TEXT_KEYS.iter().copied().find(|t| *t == k)
                    }
                    Some("displayName") => Some("displayName"),
                    Some("htmlLink") => Some("htmlLink"),
                    Some("email") => Some("email"),
                    _ if looks_like_email(text) => Some("email"),
                    _ => None,
                };
                if let Some(kind) = kind {
                    let kind = if kind != "email" && looks_like_email(text) {
                        // The primary calendar's summary is its owner's address:
                        // one pseudonym per address, whatever key holds it.
                        "email"
                    } else {
                        kind
                    };
                    *text = self.pseudonym(kind, text);
                }
            }
            _ => {}
        }
    }
}

fn looks_like_email(text: &str) -> bool {
    let Some((local, domain)) = text.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.contains('@')
        && !text
            .chars()
            .any(|c| c.is_whitespace() || c == '/' || c == '<')
}

fn percent_decode(text: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", text.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::{Payload, RecordedAnswer, RecordedMessage};
    use serde_json::json;

    fn exchange(path: &str, body: Value) -> Exchange {
        Exchange {
            request: RecordedMessage {
                method: "GET".into(),
                path: path.into(),
                query: None,
                headers: Default::default(),
                body: Payload::default(),
            },
            response: Some(RecordedAnswer {
                status: 200,
                headers: Default::default(),
                body: Payload {
                    body: Some(body),
                    ..Payload::default()
                },
            }),
            lost: None,
        }
    }

    #[test]
    fn personal_data_gets_stable_pseudonyms_and_ids_stay() {
        let mut scrubber = Scrubber::default();
        let event = json!({
            "id": "abc123", "iCalUID": "abc123@google.com", "etag": "\"1\"",
            "summary": "Therapy with Dr. Who", "location": "Baker St 221b",
            "description": "private", "htmlLink": "https://www.google.com/calendar/event?eid=YWJj",
            "organizer": {"email": "alice@gmail.com", "displayName": "Alice", "self": true},
            "attendees": [{"email": "bob@corp.example", "displayName": "Bob"}],
        });
        let mut first = exchange(
            "/calendar/v3/calendars/alice%40gmail.com/events",
            json!({"summary": "alice@gmail.com", "items": [event.clone()]}),
        );
        scrubber.scrub(&mut first);
        let mut second = exchange(
            "/calendar/v3/calendars/alice@gmail.com/events/abc123",
            event,
        );
        scrubber.scrub(&mut second);

        let text = serde_json::to_string(&(&first, &second)).unwrap();
        for secret in [
            "Therapy", "Baker", "private", "alice", "Alice", "bob", "Bob", "YWJj",
        ] {
            assert!(!text.contains(secret), "{secret} left in {text}");
        }
        assert_eq!(
            first.request.path,
            "/calendar/v3/calendars/person-1%40example.invalid/events"
        );
        assert_eq!(
            second.request.path,
            "/calendar/v3/calendars/person-1@example.invalid/events/abc123"
        );
        let body = |e: &Exchange| e.response.as_ref().unwrap().body.body.clone().unwrap();
        let (a, b) = (body(&first), body(&second));
        assert_eq!(a["summary"], "person-1@example.invalid");
        assert_eq!(a["items"][0]["summary"], b["summary"]);
        assert_eq!(b["summary"], "summary-1");
        assert_eq!(b["organizer"]["email"], "person-1@example.invalid");
        assert_eq!(b["attendees"][0]["email"], "person-2@example.invalid");
        let bob = b["attendees"][0]["displayName"].as_str().unwrap();
        assert!(bob.starts_with("Person "), "{bob}");
        assert_ne!(b["organizer"]["displayName"], bob);
        assert_eq!(a["items"][0]["attendees"][0]["displayName"], bob);
        assert_eq!(b["id"], "abc123");
        assert_eq!(b["iCalUID"], "abc123@google.com");
        assert_eq!(b["etag"], "\"1\"");

        let error = json!({"error": {"code": 412, "errors": [{"location": "If-Match",
            "reason": "conditionNotMet"}], "message": "Precondition Failed"}});
        let mut third = exchange(
            "/calendar/v3/calendars/primary/events/abc123",
            error.clone(),
        );
        scrubber.scrub(&mut third);
        assert_eq!(body(&third), error);
    }
}
