//! One page of `events.list`, validated as a whole and decoded event by event.
//!
//! Guarantees:
//! - **A page that is not a complete, valid listing page is a failure**, never
//!   an empty calendar: the body must be a JSON object of `kind`
//!   `calendar#events` with an `items` array, and exactly one of
//!   `nextPageToken` (more pages follow) and `nextSyncToken` (the last page).
//!   Anything else is [`GoogleError::Malformed`] naming what was wrong, so the
//!   pull fails before it writes (or sweeps) anything and keeps its token.
//! - **One event never fails its page.** Items are kept as raw JSON and each is
//!   decoded and mapped on its own; an event that cannot be read is returned
//!   in [`EventPage::skipped`] with its id (when it has a readable one) and the
//!   reason, and the rest of the page syncs.
//! - Tokens and zones from the page are checked before anyone stores them.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::error::GoogleError;
use super::mapping::{known_zone, remote_event, RemoteEvent};
use super::PageToken;
use crate::ids::SyncToken;
use crate::text;

/// How many characters of a set-aside event's id are kept for `status`.
pub const SKIPPED_ID_CHARS: usize = 200;
/// How many characters of a set-aside event's reason are kept.
const SKIPPED_REASON_CHARS: usize = 300;
/// Longest page or sync token we accept (Google's are a few hundred bytes).
const MAX_TOKEN_LEN: usize = 16 * 1024;

/// One page of `events.list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventPage {
    /// The events of the page that could be read.
    pub events: Vec<RemoteEvent>,
    /// The events of the page that could not be: set aside, not a failure.
    pub skipped: Vec<SkippedEvent>,
    /// More pages follow: list again with this token (and the same `from`).
    pub next_page_token: Option<PageToken>,
    /// Only on the last page: store it once this page is reconciled.
    pub next_sync_token: Option<SyncToken>,
    /// The calendar's own `timeZone`, which zone-less events were given.
    pub calendar_time_zone: Option<String>,
}

/// An event of a listing that could not be read, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedEvent {
    /// The event's id as far as it could be read: storable (no NUL) and at
    /// most [`SKIPPED_ID_CHARS`] characters (cut with `…`). `None` when the
    /// event has no readable id.
    pub event_id: Option<String>,
    /// The whole id, when it is one an appointment could be linked to (at
    /// most 1024 characters, no NUL): what keeps that appointment from a full
    /// sync's sweep while its event cannot be read.
    pub match_id: Option<String>,
    pub reason: String,
}

impl SkippedEvent {
    fn new(raw_id: Option<&str>, reason: impl std::fmt::Display) -> Self {
        SkippedEvent {
            event_id: raw_id.map(skipped_id),
            match_id: raw_id
                .filter(|id| !id.contains('\0') && id.len() <= super::mapping::MAX_EVENT_ID_CHARS)
                .map(str::to_owned),
            reason: text::cut(&text::error_text(&reason.to_string()), SKIPPED_REASON_CHARS),
        }
    }
}

/// The form in which an event id is recorded as set aside (and matched when
/// the event later imports).
pub fn skipped_id(id: &str) -> String {
    text::cut(&text::without_nul(id), SKIPPED_ID_CHARS)
}

#[derive(Deserialize)]
struct RawPage<'a> {
    #[serde(default)]
    kind: Option<String>,
    #[serde(default, rename = "timeZone")]
    time_zone: Option<String>,
    #[serde(default, rename = "nextPageToken")]
    next_page_token: Option<String>,
    #[serde(default, rename = "nextSyncToken")]
    next_sync_token: Option<String>,
    #[serde(default, borrow)]
    items: Option<Vec<&'a RawValue>>,
}

/// Just the id of an item, read leniently (anything else in it is ignored).
#[derive(Deserialize)]
struct IdProbe {
    #[serde(default)]
    id: Option<serde_json::Value>,
}

fn malformed(what: impl std::fmt::Display) -> GoogleError {
    GoogleError::Malformed {
        detail: format!("not a valid events.list page: {what}"),
    }
}

fn token(name: &str, value: Option<String>) -> Result<Option<String>, GoogleError> {
    match value.filter(|t| !t.is_empty()) {
        None => Ok(None),
        Some(t) if t.len() > MAX_TOKEN_LEN => {
            Err(malformed(format!("{name} of {} bytes", t.len())))
        }
        Some(t) if t.chars().any(char::is_control) => {
            Err(malformed(format!("{name} contains control characters")))
        }
        Some(t) => Ok(Some(t)),
    }
}

/// Parses and checks one page; see the module doc.
pub(crate) fn parse_page(body: &[u8]) -> Result<EventPage, GoogleError> {
    let raw: RawPage<'_> = serde_json::from_slice(body).map_err(|e| {
        malformed(format!(
            "{e} (body starts {:?})",
            text::cut(&String::from_utf8_lossy(&body[..body.len().min(120)]), 120)
        ))
    })?;
    match raw.kind.as_deref() {
        Some("calendar#events") => {}
        Some(other) => return Err(malformed(format!("kind {:?}", text::cut(other, 60)))),
        None => return Err(malformed("no kind")),
    }
    let items = raw.items.ok_or_else(|| malformed("no items array"))?;
    let next_page_token = token("nextPageToken", raw.next_page_token)?;
    let next_sync_token = token("nextSyncToken", raw.next_sync_token)?;
    match (&next_page_token, &next_sync_token) {
        (Some(_), Some(_)) => return Err(malformed("both nextPageToken and nextSyncToken")),
        (None, None) => {
            return Err(malformed(
                "neither nextPageToken nor nextSyncToken (an incomplete listing)",
            ))
        }
        _ => {}
    }
    let calendar_time_zone = raw.time_zone.and_then(|z| known_zone(&z));

    let mut events = Vec::with_capacity(items.len());
    let mut skipped = Vec::new();
    for item in items {
        match decode_item(item, calendar_time_zone.as_deref()) {
            Ok(event) => events.push(event),
            Err(skip) => skipped.push(skip),
        }
    }
    Ok(EventPage {
        events,
        skipped,
        next_page_token: next_page_token.map(PageToken),
        next_sync_token: next_sync_token.map(SyncToken),
        calendar_time_zone,
    })
}

fn decode_item(
    item: &RawValue,
    calendar_time_zone: Option<&str>,
) -> Result<RemoteEvent, SkippedEvent> {
    let probe_id = serde_json::from_str::<IdProbe>(item.get())
        .ok()
        .and_then(|p| match p.id {
            Some(serde_json::Value::String(id)) if !id.is_empty() => Some(id),
            _ => None,
        });
    let id = probe_id.as_deref();
    let event: google_calendar3::api::Event = serde_json::from_str(item.get())
        .map_err(|e| SkippedEvent::new(id, format!("cannot decode the event: {e}")))?;
    remote_event(&event, calendar_time_zone).map_err(|e| {
        let reason = match e {
            GoogleError::Malformed { detail } => detail,
            other => other.to_string(),
        };
        SkippedEvent::new(id, reason)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> Result<EventPage, GoogleError> {
        parse_page(v.to_string().as_bytes())
    }

    fn good(id: &str) -> serde_json::Value {
        json!({"id": id, "etag": "\"1\"", "status": "confirmed", "updated": "2026-06-01T10:00:00Z",
               "start": {"dateTime": "2026-06-10T12:00:00Z"}, "end": {"dateTime": "2026-06-10T13:00:00Z"}})
    }

    #[test]
    fn one_unreadable_event_is_set_aside_and_the_page_goes_on() {
        let page = parse(json!({
            "kind": "calendar#events",
            "timeZone": "Europe/Berlin",
            "nextSyncToken": "tok",
            "items": [
                good("good1"),
                {"id": "bad1", "etag": "\"1\"", "status": "confirmed", "updated": "2026-06-01T10:00:00Z",
                 "end": {"dateTime": "2026-06-10T13:00:00Z"}},
                {"id": "bad2", "summary": 123},
                {"summary": "no id"},
            ]
        }))
        .unwrap();
        assert_eq!(page.events.len(), 1);
        assert_eq!(page.skipped.len(), 3);
        assert_eq!(page.skipped[0].event_id.as_deref(), Some("bad1"));
        assert!(
            page.skipped[0].reason.contains("no start"),
            "{:?}",
            page.skipped[0]
        );
        assert_eq!(page.skipped[1].event_id.as_deref(), Some("bad2"));
        assert!(
            page.skipped[1].reason.contains("decode"),
            "{:?}",
            page.skipped[1]
        );
        assert_eq!(page.skipped[2].event_id, None);
        assert_eq!(page.next_sync_token, Some(SyncToken("tok".into())));
    }

    #[test]
    fn a_lone_surrogate_or_a_year_beyond_chrono_sets_one_event_aside() {
        let body = r#"{"kind":"calendar#events","nextSyncToken":"t","items":[
            {"id":"sur1","etag":"\"1\"","updated":"2026-06-01T10:00:00Z","summary":"a\ud800b",
             "start":{"dateTime":"2026-06-10T12:00:00Z"},"end":{"dateTime":"2026-06-10T13:00:00Z"}},
            {"id":"far1","etag":"\"1\"","updated":"2026-06-01T10:00:00Z",
             "start":{"dateTime":"2026-06-10T12:00:00Z"},"end":{"dateTime":"+275760-09-13T00:00:00Z"}},
            {"id":"nooffset","etag":"\"1\"","updated":"2026-06-01T10:00:00Z",
             "start":{"dateTime":"2026-06-10T12:00:00"},"end":{"dateTime":"2026-06-10T13:00:00"}},
            {"id":"ok1","etag":"\"1\"","updated":"2026-06-01T10:00:00Z",
             "start":{"dateTime":"2026-06-10T12:00:00Z"},"end":{"dateTime":"2026-06-10T13:00:00Z"}}
        ]}"#;
        let page = parse_page(body.as_bytes()).unwrap();
        assert_eq!(page.events.len(), 1);
        let ids: Vec<_> = page
            .skipped
            .iter()
            .map(|s| s.event_id.clone().unwrap())
            .collect();
        assert_eq!(ids, ["sur1", "far1", "nooffset"]);
    }

    #[test]
    fn pages_that_are_not_listings_fail() {
        for (body, what) in [
            (json!({"error": {"code": 500}}), "no kind"),
            (
                json!({"kind": "calendar#events", "nextSyncToken": "s"}),
                "no items",
            ),
            (
                json!({"kind": "calendar#event", "items": [], "nextSyncToken": "s"}),
                "kind",
            ),
            (json!({"kind": "calendar#events", "items": []}), "neither"),
            (
                json!({"kind": "calendar#events", "items": [], "nextSyncToken": "s", "nextPageToken": "p"}),
                "both",
            ),
            (
                json!({"kind": "calendar#events", "items": {}, "nextSyncToken": "s"}),
                "invalid type",
            ),
            (
                json!({"kind": "calendar#events", "items": [], "nextSyncToken": "a\u{0}b"}),
                "control",
            ),
            (json!([]), "no kind"),
            (json!("calendar#events"), "invalid type"),
        ] {
            let err = parse(body.clone()).unwrap_err();
            assert!(
                matches!(&err, GoogleError::Malformed { detail } if detail.contains(what)),
                "{body}: {err:?}"
            );
        }
        let err = parse_page(b"<html>proxy error</html>").unwrap_err();
        assert!(err.to_string().contains("<html>"), "{err}");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Any JSON value, a few levels deep, with hostile strings.
        fn any_json() -> impl Strategy<Value = serde_json::Value> {
            let leaf = prop_oneof![
                Just(serde_json::Value::Null),
                any::<bool>().prop_map(serde_json::Value::from),
                any::<i64>().prop_map(serde_json::Value::from),
                any::<u64>().prop_map(serde_json::Value::from),
                any::<f64>().prop_map(|f| serde_json::json!(f)),
                ".{0,40}".prop_map(serde_json::Value::from),
                prop_oneof![
                    Just("2026-06-10T12:00:00Z"),
                    Just("+275760-09-13T00:00:00Z"),
                    Just("2026-06-10T12:00:00"),
                    Just("2026-06-10"),
                    Just("\u{0}"),
                    Just("confirmed"),
                    Just("cancelled"),
                    Just("-infinity"),
                ]
                .prop_map(serde_json::Value::from),
            ];
            leaf.prop_recursive(3, 24, 4, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                    prop::collection::btree_map(
                        prop_oneof![
                            Just("date".to_owned()),
                            Just("dateTime".to_owned()),
                            Just("timeZone".to_owned()),
                            ".{0,8}"
                        ],
                        inner,
                        0..4
                    )
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
                ]
            })
        }

        const FIELDS: &[&str] = &[
            "id",
            "etag",
            "status",
            "updated",
            "summary",
            "description",
            "location",
            "start",
            "end",
            "eventType",
            "attendees",
            "recurringEventId",
            "extendedProperties",
            "originalStartTime",
            "kind",
        ];

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Arbitrary JSON in any field of an event: the event maps or is
            /// set aside with a reason; the page never fails or panics.
            #[test]
            fn any_event_maps_or_is_set_aside(
                values in prop::collection::vec((0..FIELDS.len(), any_json()), 0..8),
                keep_base in any::<bool>(),
            ) {
                let mut event = if keep_base { good("base") } else { serde_json::json!({}) };
                for (field, value) in values {
                    event[FIELDS[field]] = value;
                }
                let page = parse(serde_json::json!({
                    "kind": "calendar#events",
                    "nextSyncToken": "t",
                    "items": [event, good("other")],
                })).expect("a valid page never fails because of its events");
                prop_assert_eq!(page.events.len() + page.skipped.len(), 2);
                for s in &page.skipped {
                    prop_assert!(!s.reason.is_empty());
                    prop_assert!(s.event_id.as_ref().is_none_or(|i| !i.contains('\0')
                        && i.chars().count() <= SKIPPED_ID_CHARS));
                }
                for e in &page.events {
                    if let Some(a) = e.appointment() {
                        prop_assert!(!a.fields.summary.contains('\0'));
                        prop_assert!(a.fields.end_at >= a.fields.start_at);
                        prop_assert!(crate::google::in_storable_range(a.fields.start_at));
                        prop_assert!(crate::google::in_storable_range(a.fields.end_at));
                    }
                }
            }

            /// Arbitrary page shapes: a page or a Malformed error, no panic.
            #[test]
            fn any_page_parses_or_fails_cleanly(page in any_json(), bytes in prop::collection::vec(any::<u8>(), 0..64)) {
                match parse(page) {
                    Ok(p) => prop_assert!(p.next_page_token.is_some() != p.next_sync_token.is_some()),
                    Err(e) => {
                        let malformed = matches!(e, GoogleError::Malformed { .. });
                        prop_assert!(malformed, "{:?}", e)
                    }
                }
                if let Err(e) = parse_page(&bytes) {
                    let malformed = matches!(e, GoogleError::Malformed { .. });
                    prop_assert!(malformed, "{:?}", e);
                }
            }

            /// Any Retry-After: no panic and at most the hour.
            #[test]
            fn any_retry_after_is_bounded(raw in ".{0,40}", digits in "[0-9]{1,40}") {
                for r in [raw.as_str(), digits.as_str()] {
                    if let Some(d) = crate::google::retry_after::parse_retry_after(r) {
                        prop_assert!(d <= crate::google::retry_after::MAX_SNOOZE);
                    }
                }
            }
        }
    }

    #[test]
    fn skipped_ids_are_storable_and_bounded() {
        let long = "a".repeat(3_000_000);
        let s = SkippedEvent::new(Some(&long), "too long");
        assert_eq!(
            s.event_id.as_ref().unwrap().chars().count(),
            SKIPPED_ID_CHARS
        );
        assert!(s.event_id.unwrap().ends_with('…'));
        let s = SkippedEvent::new(Some("x\0y"), "nul\0reason");
        assert_eq!(s.event_id.as_deref(), Some("xy"));
        assert!(!s.reason.contains('\0'));
    }
}
