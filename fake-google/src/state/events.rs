//! The writes and reads of one event, with Google's rules: client-supplied
//! ids, server fields a client cannot set, merge-patch semantics, `If-Match`
//! preconditions, deletions kept as `cancelled`, and the defaults Google
//! fills in. Fixture items load through here too, keeping their server
//! fields.

use base64::Engine;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde_json::{json, Map, Value};

use super::{Calendars, Stored};
use crate::errors::ApiError;
use crate::recurrence::Recurrence;
use crate::times::{self, parse_when, When};

/// Fields a client never sets: the emulator owns them.
const SERVER_FIELDS: &[&str] = &[
    "kind",
    "etag",
    "id",
    "created",
    "updated",
    "iCalUID",
    "htmlLink",
    "creator",
    "organizer",
    "recurringEventId",
    "originalStartTime",
];

/// Google's client-supplied id rule: base32hex digits, 5 to 1024 of them.
pub(crate) fn valid_event_id(id: &str) -> bool {
    (5..=1024).contains(&id.len()) && id.bytes().all(|b| matches!(b, b'a'..=b'v' | b'0'..=b'9'))
}

fn new_event_id() -> String {
    use rand::Rng;
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuv";
    let mut rng = rand::thread_rng();
    (0..26)
        .map(|_| DIGITS[rng.gen_range(0..32)] as char)
        .collect()
}

/// JSON merge patch (RFC 7396), which is how Google applies `events.patch`:
/// objects merge key by key, `null` clears, anything else replaces.
fn merge_patch(target: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (key, value) in patch {
        match value {
            Value::Null => {
                target.remove(key);
            }
            Value::Object(inner) => {
                let slot = target
                    .entry(key.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                if !slot.is_object() {
                    *slot = Value::Object(Map::new());
                }
                if let Value::Object(slot) = slot {
                    merge_patch(slot, inner);
                }
            }
            other => {
                target.insert(key.clone(), other.clone());
            }
        }
    }
}

fn if_match_ok(if_match: Option<&str>, etag: &str) -> bool {
    match if_match {
        None => true,
        Some(header) => header.split(',').map(str::trim).any(|candidate| {
            candidate == "*" || candidate == etag || candidate.trim_start_matches("W/") == etag
        }),
    }
}

impl Calendars {
    /// Validates and normalises the times and recurrence of a body, the way
    /// Google stores them.
    fn prepare(
        zone: Tz,
        body: &mut Map<String, Value>,
    ) -> Result<(When, When, Option<Recurrence>), ApiError> {
        let start = parse_when(body, "start")?;
        let end = parse_when(body, "end")?;
        match (&start, &end) {
            (When::AllDay(s), When::AllDay(e)) if e <= s => {
                return Err(ApiError::bad_request(
                    "calendar",
                    "timeRangeEmpty",
                    "The specified time range is empty.",
                    None,
                ))
            }
            (When::At { utc: s, .. }, When::At { utc: e, .. }) if e < s => {
                return Err(ApiError::bad_request(
                    "calendar",
                    "timeRangeEmpty",
                    "The specified time range is empty.",
                    None,
                ))
            }
            (When::AllDay(_), When::At { .. }) | (When::At { .. }, When::AllDay(_)) => {
                return Err(ApiError::invalid(
                    "Start and end times must either both be date or both be dateTime.",
                ))
            }
            _ => {}
        }
        let recurrence = match body.get("recurrence") {
            None | Some(Value::Null) => None,
            Some(Value::Array(lines)) if lines.is_empty() => None,
            Some(Value::Array(lines)) => {
                let lines: Vec<String> = lines
                    .iter()
                    .map(|l| l.as_str().map(str::to_owned))
                    .collect::<Option<_>>()
                    .ok_or_else(|| ApiError::invalid("Invalid recurrence rule."))?;
                if let When::At { zone: None, .. } = start {
                    return Err(ApiError::bad_request(
                        "calendar",
                        "required",
                        "Missing time zone definition for start time.",
                        None,
                    ));
                }
                Some(
                    Recurrence::parse(&lines)
                        .map_err(|_| ApiError::invalid("Invalid recurrence rule."))?,
                )
            }
            Some(_) => return Err(ApiError::invalid("Invalid recurrence rule.")),
        };
        body.insert("start".into(), start.to_json(zone));
        body.insert("end".into(), end.to_json(zone));
        Ok((start, end, recurrence))
    }

    /// `events.insert` (also a user creating an event in Google's UI).
    pub fn insert(&mut self, cal_id: &str, body: Value) -> Result<Value, ApiError> {
        let Value::Object(mut body) = body else {
            return Err(ApiError::invalid("Invalid JSON payload received."));
        };
        let zone = self.cal(cal_id)?.zone;
        let id = match body.get("id") {
            Some(Value::String(id)) => {
                if !valid_event_id(id) {
                    return Err(ApiError::invalid("Invalid resource id value."));
                }
                id.clone()
            }
            None | Some(Value::Null) => new_event_id(),
            Some(_) => return Err(ApiError::invalid("Invalid resource id value.")),
        };
        if self.cal(cal_id)?.events.contains_key(&id) {
            return Err(ApiError::duplicate());
        }
        let (start, end, recurrence) = Self::prepare(zone, &mut body)?;
        for key in SERVER_FIELDS {
            body.remove(*key);
        }
        let stamp = self.next_stamp();
        let seq = self.next_seq();
        let owner = owner_email(cal_id);
        let mut full = Map::new();
        full.insert("kind".into(), json!("calendar#event"));
        full.insert("etag".into(), json!(Self::etag_for(stamp, seq)));
        full.insert("id".into(), json!(id));
        full.insert("status".into(), json!("confirmed"));
        full.insert(
            "htmlLink".into(),
            json!(format!(
                "https://www.google.com/calendar/event?eid={}",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{id} {owner}"))
            )),
        );
        full.insert("created".into(), json!(times::stamp(stamp)));
        full.insert("updated".into(), json!(times::stamp(stamp)));
        full.insert("creator".into(), json!({"email": owner, "self": true}));
        full.insert("organizer".into(), json!({"email": owner, "self": true}));
        full.insert("iCalUID".into(), json!(format!("{id}@google.com")));
        full.insert("sequence".into(), json!(0));
        full.insert("reminders".into(), json!({"useDefault": true}));
        full.insert("eventType".into(), json!("default"));
        for (key, value) in body {
            if !value.is_null() {
                full.insert(key, value);
            }
        }
        let deleted = full.get("status").and_then(Value::as_str) == Some("cancelled");
        let stored = Stored {
            body: full,
            seq,
            deleted,
            updated: stamp,
            start,
            end,
            recurrence,
        };
        let out = Value::Object(stored.body.clone());
        let cal = self.map.get_mut(cal_id).ok_or_else(ApiError::not_found)?;
        cal.updated = stamp;
        cal.events.insert(id, stored);
        Ok(out)
    }

    /// Loads an event from a fixture as Google holds it, keeping its server
    /// fields (`etag`, `updated`, ...) where the file gives them.
    pub fn load(&mut self, cal_id: &str, item: Value) -> Result<(), ApiError> {
        let Value::Object(mut body) = item else {
            return Err(ApiError::invalid("an item is not an object"));
        };
        let zone = self.cal(cal_id)?.zone;
        let id = body
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| ApiError::invalid("an item has no id"))?;
        let is_instance = body.contains_key("recurringEventId");
        if !is_instance && !valid_event_id(&id) {
            return Err(ApiError::invalid(&format!("invalid event id {id:?}")));
        }
        let cancelled = body.get("status").and_then(Value::as_str) == Some("cancelled");
        let (start, end, recurrence) = if cancelled && !body.contains_key("start") {
            // A cancelled instance may be minimal: take its original start.
            let original =
                parse_when(&body, "originalStartTime").map_err(|e| e.with_context(&id))?;
            (original.clone(), original, None)
        } else {
            Self::prepare(zone, &mut body).map_err(|e| e.with_context(&id))?
        };
        let stamp = self.next_stamp();
        let seq = self.next_seq();
        let updated = body
            .get("updated")
            .and_then(Value::as_str)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or(stamp);
        let owner = owner_email(cal_id);
        let defaults = [
            ("kind", json!("calendar#event")),
            ("etag", json!(Self::etag_for(stamp, seq))),
            ("status", json!("confirmed")),
            ("created", json!(times::stamp(updated))),
            ("updated", json!(times::stamp(updated))),
            ("creator", json!({"email": owner, "self": true})),
            ("organizer", json!({"email": owner, "self": true})),
            (
                "iCalUID",
                json!(format!(
                    "{}@google.com",
                    body.get("recurringEventId")
                        .and_then(Value::as_str)
                        .unwrap_or(&id)
                )),
            ),
            ("sequence", json!(0)),
            ("reminders", json!({"useDefault": true})),
            ("eventType", json!("default")),
        ];
        for (key, value) in defaults {
            body.entry(key).or_insert(value);
        }
        let cal = self.map.get_mut(cal_id).ok_or_else(ApiError::not_found)?;
        cal.updated = cal.updated.max(updated);
        cal.events.insert(
            id,
            Stored {
                body,
                seq,
                deleted: cancelled,
                updated,
                start,
                end,
                recurrence,
            },
        );
        Ok(())
    }

    /// `events.get`: deleted events come back with `status: "cancelled"`.
    pub fn get(&self, cal_id: &str, event_id: &str) -> Result<Value, ApiError> {
        let cal = self.cal(cal_id)?;
        if let Some(stored) = cal.events.get(event_id) {
            let mut body = stored.body.clone();
            if stored.deleted {
                body.insert("status".into(), json!("cancelled"));
            }
            return Ok(Value::Object(body));
        }
        let (master_id, instance) =
            Self::find_generated(cal, event_id).ok_or_else(ApiError::not_found)?;
        Ok(Value::Object(Self::instance_body(
            cal.zone,
            &cal.events[&master_id],
            &instance,
        )))
    }

    /// Stores a new version of an event: bumps etag, updated, sequence.
    fn write(
        &mut self,
        cal_id: &str,
        event_id: &str,
        mut body: Map<String, Value>,
        deleted: bool,
    ) -> Result<Value, ApiError> {
        let zone = self.cal(cal_id)?.zone;
        let is_instance = body.contains_key("recurringEventId");
        let (start, end, recurrence) = Self::prepare(zone, &mut body)?;
        if is_instance && recurrence.is_some() {
            return Err(ApiError::invalid("Invalid recurrence rule."));
        }
        let stamp = self.next_stamp();
        let seq = self.next_seq();
        body.insert("etag".into(), json!(Self::etag_for(stamp, seq)));
        body.insert("updated".into(), json!(times::stamp(stamp)));
        let sequence = body.get("sequence").and_then(Value::as_i64).unwrap_or(0);
        body.insert("sequence".into(), json!(sequence + 1));
        body.insert(
            "status".into(),
            json!(if deleted { "cancelled" } else { "confirmed" }),
        );
        let cal = self.map.get_mut(cal_id).ok_or_else(ApiError::not_found)?;
        cal.updated = stamp;
        let stored = Stored {
            body,
            seq,
            deleted,
            updated: stamp,
            start,
            end,
            recurrence,
        };
        let out = Value::Object(stored.body.clone());
        cal.events.insert(event_id.to_owned(), stored);
        Ok(out)
    }

    /// Checks existence, `If-Match` and deletion before an edit, in Google's
    /// order, and returns the current body.
    fn editable(
        &mut self,
        cal_id: &str,
        event_id: &str,
        if_match: Option<&str>,
        restoring: bool,
    ) -> Result<Map<String, Value>, ApiError> {
        self.materialize(cal_id, event_id)?;
        let stored = &self.cal(cal_id)?.events[event_id];
        if !if_match_ok(if_match, stored.etag()) {
            return Err(ApiError::condition_not_met());
        }
        if stored.deleted && !restoring {
            return Err(ApiError::deleted());
        }
        Ok(stored.body.clone())
    }

    /// `events.patch`: a merge patch; `null` clears a field.
    pub fn patch(
        &mut self,
        cal_id: &str,
        event_id: &str,
        patch: Value,
        if_match: Option<&str>,
    ) -> Result<Value, ApiError> {
        let (patch, deleted, restoring) = client_fields(patch)?;
        let mut body = self.editable(cal_id, event_id, if_match, restoring)?;
        merge_patch(&mut body, &patch);
        self.write(cal_id, event_id, body, deleted)
    }

    /// `events.update`: replaces every client field.
    pub fn update(
        &mut self,
        cal_id: &str,
        event_id: &str,
        new_body: Value,
        if_match: Option<&str>,
    ) -> Result<Value, ApiError> {
        let (new_body, deleted, restoring) = client_fields(new_body)?;
        let old = self.editable(cal_id, event_id, if_match, restoring)?;
        let mut body: Map<String, Value> = old
            .into_iter()
            .filter(|(k, _)| SERVER_FIELDS.contains(&k.as_str()) || k == "sequence")
            .collect();
        for (key, value) in new_body {
            if !value.is_null() {
                body.insert(key, value);
            }
        }
        self.write(cal_id, event_id, body, deleted)
    }

    /// `events.delete`: a deleted event answers 410 `deleted`.
    pub fn delete(
        &mut self,
        cal_id: &str,
        event_id: &str,
        if_match: Option<&str>,
    ) -> Result<(), ApiError> {
        self.materialize(cal_id, event_id)?;
        let stored = &self.cal(cal_id)?.events[event_id];
        if stored.deleted {
            return Err(ApiError::deleted());
        }
        if !if_match_ok(if_match, stored.etag()) {
            return Err(ApiError::condition_not_met());
        }
        let body = stored.body.clone();
        self.write(cal_id, event_id, body, true).map(|_| ())
    }
}

/// The address Google shows as creator/organizer of a calendar's events.
fn owner_email(cal_id: &str) -> String {
    if cal_id.contains('@') {
        cal_id.to_owned()
    } else {
        "owner@fake-google.test".to_owned()
    }
}

impl ApiError {
    /// Names the fixture item an error came from (fixture loading only).
    pub(crate) fn with_context(mut self, id: &str) -> ApiError {
        if let Some(message) = self.body["error"]["message"].as_str() {
            self.body["error"]["message"] = json!(format!("{message} (event {id})"));
        }
        self
    }
}

/// A client's event body for patch/update: the fields it may set (server
/// fields dropped), and whether its `status` cancels or restores the event.
fn client_fields(body: Value) -> Result<(Map<String, Value>, bool, bool), ApiError> {
    let Value::Object(mut body) = body else {
        return Err(ApiError::invalid("Invalid JSON payload received."));
    };
    for key in SERVER_FIELDS {
        body.remove(*key);
    }
    let status = body.remove("status");
    let status = status.as_ref().and_then(Value::as_str);
    Ok((
        body,
        status == Some("cancelled"),
        status == Some("confirmed"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_follow_googles_rule() {
        assert!(valid_event_id("abcde"));
        assert!(valid_event_id("0123456789abcdefghijklmnopqrstuv"));
        assert!(!valid_event_id("abcd"));
        assert!(!valid_event_id("abcdw"));
        assert!(!valid_event_id("ABCDE"));
        assert!(!valid_event_id(&"a".repeat(1025)));
    }

    #[test]
    fn merge_patch_clears_nulls_and_merges_objects() {
        let mut target = json!({"a": 1, "b": {"c": 2, "d": 3}, "e": [1]})
            .as_object()
            .unwrap()
            .clone();
        let patch = json!({"a": null, "b": {"c": null, "x": 1}, "e": [2]})
            .as_object()
            .unwrap()
            .clone();
        merge_patch(&mut target, &patch);
        assert_eq!(
            Value::Object(target),
            json!({"b": {"d": 3, "x": 1}, "e": [2]})
        );
    }
}
