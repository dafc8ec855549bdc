//! Google events ⇄ the domain.
//!
//! Inbound, [`remote_event`] turns one Google event into a [`RemoteEvent`]
//! that says what the event means for sync: an appointment with its
//! [`AppointmentFields`], an event that is not an appointment (declined by the
//! calendar's owner, a `workingLocation` or `birthday` event), or a deletion.
//! An event that claims to be live but lacks what an appointment needs is an
//! error, never silently skipped.
//!
//! Outbound, [`EventBody`] builds the JSON we send: all-day appointments as
//! `date`s, timed ones as local time in their zone (the appointment's, else
//! the calendar's) with `timeZone`, computed by chrono-tz so DST is right. In
//! PATCH bodies a cleared field is an explicit `null` (Google merges patches),
//! including the other half of `start`/`end` when an event switches between
//! all-day and timed.
//!
//! Zones inbound: the event's `start.timeZone`/`end.timeZone`, else the
//! calendar's `timeZone` from the list response. Timed instants come from the
//! offset inside `dateTime`, so the zone is a label and never shifts a time.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use chrono_tz::Tz;
use google_calendar3::api::{Event, EventDateTime};
use serde_json::{json, Map, Value};

use super::error::GoogleError;
use crate::ids::{Etag, EventId};
use crate::model::AppointmentFields;

/// One Google event, as sync sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteEvent {
    pub id: EventId,
    /// Set on an instance of a recurring series.
    pub recurring_event_id: Option<EventId>,
    /// `extendedProperties.private`: written by us at insert, never trusted to
    /// address an appointment (matching is by links only).
    pub private_properties: BTreeMap<String, String>,
    pub kind: RemoteEventKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteEventKind {
    /// A live event that is an appointment.
    Appointment(RemoteAppointment),
    /// A live event that is not an appointment: a linked appointment should go,
    /// an unlinked one is never created.
    NotAnAppointment(NotAppointmentReason),
    /// `status: "cancelled"`: the event (or this instance) was deleted.
    Cancelled,
}

/// The version and content of a live appointment event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteAppointment {
    pub etag: Etag,
    pub updated: DateTime<Utc>,
    pub status: LiveStatus,
    pub fields: AppointmentFields,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveStatus {
    Confirmed,
    Tentative,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotAppointmentReason {
    /// The calendar's owner (the attendee with `self: true`) declined.
    DeclinedByOwner,
    WorkingLocation,
    Birthday,
}

impl RemoteEvent {
    /// The appointment this event carries, if it is one.
    pub fn appointment(&self) -> Option<&RemoteAppointment> {
        match &self.kind {
            RemoteEventKind::Appointment(a) => Some(a),
            _ => None,
        }
    }
}

/// What a successful insert or patch left in Google: to be stored in the link
/// so the next pull recognises its own echo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteAck {
    pub etag: Etag,
    pub updated: DateTime<Utc>,
}

fn malformed(event_id: Option<&str>, what: impl std::fmt::Display) -> GoogleError {
    GoogleError::Malformed {
        detail: match event_id {
            Some(id) => format!("event {id:?}: {what}"),
            None => format!("event without id: {what}"),
        },
    }
}

/// Maps one Google event. `calendar_time_zone` is the calendar's `timeZone`
/// (from the list response, or as the caller knows it).
pub(crate) fn remote_event(
    event: &Event,
    calendar_time_zone: Option<&str>,
) -> Result<RemoteEvent, GoogleError> {
    let id = event
        .id
        .as_deref()
        .filter(|id| !id.is_empty())
        .ok_or_else(|| malformed(None, "no id"))?;
    // Bytes, not characters: the link's unique index must hold the id.
    if id.len() > MAX_EVENT_ID_CHARS {
        return Err(malformed(
            Some(&crate::text::cut(id, 60)),
            format!(
                "an id of {} bytes (Google's are at most {MAX_EVENT_ID_CHARS})",
                id.len()
            ),
        ));
    }
    if id.chars().any(char::is_control) {
        // An identity we could not store (PostgreSQL refuses NUL) or match.
        return Err(malformed(
            Some(&crate::text::without_nul(id)),
            "an id with control characters",
        ));
    }
    let bad = |what: &str| malformed(Some(id), what);
    let private_properties = event
        .extended_properties
        .as_ref()
        .and_then(|p| p.private.as_ref())
        .map(|p| p.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    let status = match event.status.as_deref() {
        Some("cancelled") => None,
        Some("confirmed") | None => Some(LiveStatus::Confirmed),
        Some("tentative") => Some(LiveStatus::Tentative),
        Some(other) => return Err(bad(&format!("unknown status {other:?}"))),
    };
    let kind = match status {
        None => RemoteEventKind::Cancelled,
        Some(_) if event.event_type.as_deref() == Some("workingLocation") => {
            RemoteEventKind::NotAnAppointment(NotAppointmentReason::WorkingLocation)
        }
        Some(_) if event.event_type.as_deref() == Some("birthday") => {
            RemoteEventKind::NotAnAppointment(NotAppointmentReason::Birthday)
        }
        Some(_) if declined_by_owner(event) => {
            RemoteEventKind::NotAnAppointment(NotAppointmentReason::DeclinedByOwner)
        }
        Some(status) => {
            let etag = event
                .etag
                .as_deref()
                .filter(|e| !e.is_empty())
                .ok_or_else(|| bad("no etag"))?;
            if etag.chars().any(char::is_control) || etag.len() > MAX_ETAG_LEN {
                return Err(bad("an etag with control characters or too long"));
            }
            let updated = event.updated.ok_or_else(|| bad("no updated"))?;
            let start = event.start.as_ref().ok_or_else(|| bad("no start"))?;
            let end = event.end.as_ref().ok_or_else(|| bad("no end"))?;
            let (start_at, end_at, all_day) = match (start.date, end.date) {
                (Some(s), Some(e)) => (midnight_utc(s), midnight_utc(e), true),
                (None, None) => (
                    start
                        .date_time
                        .ok_or_else(|| bad("start has neither date nor dateTime"))?,
                    end.date_time
                        .ok_or_else(|| bad("end has neither date nor dateTime"))?,
                    false,
                ),
                _ => return Err(bad("start and end mix date and dateTime")),
            };
            for (name, at) in [("start", start_at), ("end", end_at)] {
                if !in_storable_range(at) {
                    return Err(bad(&format!(
                        "{name} {} is outside the years 1 to 9999",
                        at.to_rfc3339()
                    )));
                }
            }
            if end_at < start_at {
                return Err(bad("end before start"));
            }
            let zone = |t: &EventDateTime| {
                t.time_zone
                    .as_deref()
                    .and_then(known_zone)
                    .or_else(|| calendar_time_zone.map(str::to_owned))
                    .filter(|z| !z.is_empty())
            };
            let clean = |t: &Option<String>| {
                t.as_deref()
                    .map(|t| crate::text::without_nul(t).into_owned())
            };
            RemoteEventKind::Appointment(RemoteAppointment {
                etag: Etag::new(etag),
                updated,
                status,
                fields: AppointmentFields {
                    summary: clean(&event.summary).unwrap_or_default(),
                    description: clean(&event.description),
                    location: clean(&event.location),
                    start_at,
                    end_at,
                    start_time_zone: zone(start),
                    end_time_zone: zone(end),
                    all_day,
                },
            })
        }
    };
    Ok(RemoteEvent {
        id: EventId::new(id),
        recurring_event_id: event
            .recurring_event_id
            .as_deref()
            .filter(|r| !r.chars().any(char::is_control))
            .map(EventId::new),
        private_properties,
        kind,
    })
}

/// Google's event ids are at most 1024 characters.
pub const MAX_EVENT_ID_CHARS: usize = 1024;
const MAX_ETAG_LEN: usize = 1024;

/// Whether an instant is one every layer can hold: PostgreSQL, JavaScript's
/// `Date` and the delta payload's four-digit years.
pub fn in_storable_range(at: DateTime<Utc>) -> bool {
    use chrono::Datelike;
    (1..=9999).contains(&at.year())
}

fn declined_by_owner(event: &Event) -> bool {
    event
        .attendees
        .iter()
        .flatten()
        .any(|a| a.self_ == Some(true) && a.response_status.as_deref() == Some("declined"))
}

fn midnight_utc(date: NaiveDate) -> DateTime<Utc> {
    date.and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc()
}

/// The etag and `updated` of a write's answer.
pub(crate) fn write_ack(event: &Event) -> Result<WriteAck, GoogleError> {
    let id = event.id.as_deref();
    let etag = event
        .etag
        .as_deref()
        .filter(|e| !e.is_empty())
        .ok_or_else(|| malformed(id, "no etag in the write's answer"))?;
    let updated = event
        .updated
        .ok_or_else(|| malformed(id, "no updated in the write's answer"))?;
    Ok(WriteAck {
        etag: Etag::new(etag),
        updated,
    })
}

/// Which request a body is for: an insert omits what is absent, a patch
/// clears it with `null`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyKind {
    Insert,
    Patch,
}

/// The JSON body of an insert or patch of `fields`.
pub(crate) struct EventBody<'a> {
    pub fields: &'a AppointmentFields,
    /// The calendar's zone, used when the appointment has none.
    pub calendar_time_zone: Option<&'a str>,
    pub kind: BodyKind,
}

impl EventBody<'_> {
    pub fn to_json(&self) -> Result<Map<String, Value>, GoogleError> {
        let f = self.fields;
        let mut body = Map::new();
        body.insert("summary".into(), json!(f.summary));
        self.optional(&mut body, "description", f.description.as_deref());
        self.optional(&mut body, "location", f.location.as_deref());
        let start_zone = f.start_time_zone.as_deref().or(self.calendar_time_zone);
        // The calendar's, not the start's: a pull reads a zone-less end back
        // as the calendar's, so anything else would make the two sides differ.
        let end_zone = f.end_time_zone.as_deref().or(self.calendar_time_zone);
        body.insert(
            "start".into(),
            self.time(f.start_at, f.all_day, start_zone)?,
        );
        body.insert("end".into(), self.time(f.end_at, f.all_day, end_zone)?);
        Ok(body)
    }

    fn optional(&self, body: &mut Map<String, Value>, key: &str, value: Option<&str>) {
        match (value, self.kind) {
            (Some(v), _) => {
                body.insert(key.into(), json!(v));
            }
            (None, BodyKind::Patch) => {
                body.insert(key.into(), Value::Null);
            }
            (None, BodyKind::Insert) => {}
        }
    }

    fn time(
        &self,
        at: DateTime<Utc>,
        all_day: bool,
        zone: Option<&str>,
    ) -> Result<Value, GoogleError> {
        let patch = self.kind == BodyKind::Patch;
        let mut t = Map::new();
        if all_day {
            t.insert("date".into(), json!(at.date_naive().to_string()));
            if patch {
                t.insert("dateTime".into(), Value::Null);
                t.insert("timeZone".into(), Value::Null);
            }
            return Ok(Value::Object(t));
        }
        match zone {
            Some(name) => {
                let tz: Tz = name
                    .parse()
                    .map_err(|_| GoogleError::InvalidTimeZone(name.to_owned()))?;
                // Local wall time with the zone's offset at that instant: the
                // same instant either way, and readable as the local time.
                let local = at.with_timezone(&tz);
                t.insert(
                    "dateTime".into(),
                    json!(local.to_rfc3339_opts(SecondsFormat::Secs, false)),
                );
                t.insert("timeZone".into(), json!(name));
            }
            None => {
                t.insert(
                    "dateTime".into(),
                    json!(at.to_rfc3339_opts(SecondsFormat::Secs, true)),
                );
                if patch {
                    t.insert("timeZone".into(), Value::Null);
                }
            }
        }
        if patch {
            t.insert("date".into(), Value::Null);
        }
        Ok(Value::Object(t))
    }
}

/// A zone name we can use, or `None` (zones are labels resolved by
/// chrono-tz: an unknown one would make every later push of the row fail).
pub(crate) fn known_zone(zone: &str) -> Option<String> {
    match zone.parse::<chrono_tz::Tz>() {
        Ok(_) => Some(zone.to_owned()),
        Err(_) => {
            if !zone.is_empty() {
                tracing::warn!(zone = %crate::text::cut(&crate::text::without_nul(zone), 60), "unknown time zone ignored");
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn event(v: Value) -> Event {
        serde_json::from_value(v).expect("a valid Google event")
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn fields_of(e: &RemoteEvent) -> &AppointmentFields {
        &e.appointment().expect("an appointment").fields
    }

    fn timed(start: &str, end: &str, zone: Option<&str>) -> AppointmentFields {
        AppointmentFields {
            summary: "Dentist".into(),
            description: None,
            location: None,
            start_at: utc(start),
            end_at: utc(end),
            start_time_zone: zone.map(Into::into),
            end_time_zone: zone.map(Into::into),
            all_day: false,
        }
    }

    #[test]
    fn all_day_event_is_midnight_utc_with_exclusive_end() {
        let e = remote_event(
            &event(json!({
                "id": "allday1", "etag": "\"1\"", "status": "confirmed",
                "updated": "2026-12-01T10:00:00.000Z", "summary": "Holidays",
                "start": {"date": "2026-12-24"}, "end": {"date": "2026-12-27"}
            })),
            Some("Europe/Berlin"),
        )
        .unwrap();
        let f = fields_of(&e);
        assert!(f.all_day);
        assert_eq!(f.start_at, utc("2026-12-24T00:00:00Z"));
        assert_eq!(f.end_at, utc("2026-12-27T00:00:00Z"));
        assert_eq!(f.start_time_zone.as_deref(), Some("Europe/Berlin"));
    }

    #[test]
    fn new_york_event_across_the_dst_change_keeps_its_instants() {
        // 2026-03-08 02:00 EST jumps to 03:00 EDT: 01:30 EST to 03:30 EDT is one hour.
        let e = remote_event(
            &event(json!({
                "id": "dst1", "etag": "\"2\"", "status": "confirmed",
                "updated": "2026-03-01T10:00:00Z", "summary": "Night shift",
                "start": {"dateTime": "2026-03-08T01:30:00-05:00", "timeZone": "America/New_York"},
                "end": {"dateTime": "2026-03-08T03:30:00-04:00", "timeZone": "America/New_York"}
            })),
            Some("Europe/Berlin"),
        )
        .unwrap();
        let f = fields_of(&e);
        assert_eq!(f.start_at, utc("2026-03-08T06:30:00Z"));
        assert_eq!(f.end_at, utc("2026-03-08T07:30:00Z"));
        assert_eq!(f.start_time_zone.as_deref(), Some("America/New_York"));

        // And back out: each end in its own offset, not a fixed one.
        let body = EventBody {
            fields: f,
            calendar_time_zone: None,
            kind: BodyKind::Insert,
        }
        .to_json()
        .unwrap();
        assert_eq!(
            body["start"],
            json!({"dateTime": "2026-03-08T01:30:00-05:00", "timeZone": "America/New_York"})
        );
        assert_eq!(
            body["end"],
            json!({"dateTime": "2026-03-08T03:30:00-04:00", "timeZone": "America/New_York"})
        );
    }

    #[test]
    fn fall_back_in_new_york_uses_the_later_offset_after_the_change() {
        let f = timed(
            "2026-11-01T05:30:00Z",
            "2026-11-01T06:30:00Z",
            Some("America/New_York"),
        );
        let body = EventBody {
            fields: &f,
            calendar_time_zone: None,
            kind: BodyKind::Insert,
        }
        .to_json()
        .unwrap();
        // 01:30 happens twice that night; the offsets tell which.
        assert_eq!(body["start"]["dateTime"], "2026-11-01T01:30:00-04:00");
        assert_eq!(body["end"]["dateTime"], "2026-11-01T01:30:00-05:00");
    }

    #[test]
    fn event_without_zone_takes_the_calendars() {
        let e = remote_event(
            &event(json!({
                "id": "berlin1", "etag": "\"3\"", "status": "confirmed",
                "updated": "2026-06-01T10:00:00Z", "summary": "Lunch",
                "start": {"dateTime": "2026-06-10T12:00:00+02:00"},
                "end": {"dateTime": "2026-06-10T13:00:00+02:00"}
            })),
            Some("Europe/Berlin"),
        )
        .unwrap();
        let f = fields_of(&e);
        assert_eq!(f.start_at, utc("2026-06-10T10:00:00Z"));
        assert_eq!(f.start_time_zone.as_deref(), Some("Europe/Berlin"));
        assert_eq!(f.end_time_zone.as_deref(), Some("Europe/Berlin"));
    }

    #[test]
    fn declined_by_the_owner_is_not_an_appointment_declined_by_a_guest_is() {
        let with = |self_: bool| {
            event(json!({
                "id": "meet1", "etag": "\"4\"", "status": "confirmed",
                "updated": "2026-06-01T10:00:00Z", "summary": "Meeting",
                "start": {"dateTime": "2026-06-10T12:00:00Z"},
                "end": {"dateTime": "2026-06-10T13:00:00Z"},
                "attendees": [
                    {"email": "me@example.com", "self": self_, "responseStatus": "declined"},
                    {"email": "other@example.com", "responseStatus": "accepted"}
                ]
            }))
        };
        assert_eq!(
            remote_event(&with(true), None).unwrap().kind,
            RemoteEventKind::NotAnAppointment(NotAppointmentReason::DeclinedByOwner)
        );
        assert!(remote_event(&with(false), None)
            .unwrap()
            .appointment()
            .is_some());
    }

    #[test]
    fn working_location_and_birthday_are_not_appointments() {
        for (event_type, reason) in [
            ("workingLocation", NotAppointmentReason::WorkingLocation),
            ("birthday", NotAppointmentReason::Birthday),
        ] {
            let e = remote_event(
                &event(json!({
                    "id": "wl1", "etag": "\"5\"", "status": "confirmed",
                    "updated": "2026-06-01T10:00:00Z", "eventType": event_type,
                    "start": {"date": "2026-06-10"}, "end": {"date": "2026-06-11"}
                })),
                None,
            )
            .unwrap();
            assert_eq!(e.kind, RemoteEventKind::NotAnAppointment(reason));
        }
    }

    #[test]
    fn cancelled_minimal_body_is_a_deletion() {
        let e = remote_event(
            &event(json!({"kind": "calendar#event", "id": "gone1", "status": "cancelled"})),
            Some("Europe/Berlin"),
        )
        .unwrap();
        assert_eq!(e.kind, RemoteEventKind::Cancelled);
        assert_eq!(e.id, EventId::new("gone1"));

        let instance = remote_event(
            &event(
                json!({"id": "series_20260610T100000Z", "status": "cancelled",
                "recurringEventId": "series",
                "originalStartTime": {"dateTime": "2026-06-10T10:00:00Z"}}),
            ),
            None,
        )
        .unwrap();
        assert_eq!(instance.recurring_event_id, Some(EventId::new("series")));
    }

    #[test]
    fn a_live_event_missing_what_an_appointment_needs_is_an_error() {
        for broken in [
            json!({"id": "x1", "etag": "\"1\"", "status": "confirmed", "updated": "2026-06-01T10:00:00Z",
                   "end": {"dateTime": "2026-06-10T13:00:00Z"}}),
            json!({"id": "x2", "status": "confirmed", "updated": "2026-06-01T10:00:00Z",
                   "start": {"dateTime": "2026-06-10T12:00:00Z"}, "end": {"dateTime": "2026-06-10T13:00:00Z"}}),
            json!({"id": "x3", "etag": "\"1\"", "status": "confirmed", "updated": "2026-06-01T10:00:00Z",
                   "start": {"date": "2026-06-10"}, "end": {"dateTime": "2026-06-10T13:00:00Z"}}),
            json!({"etag": "\"1\"", "status": "cancelled"}),
        ] {
            let err = remote_event(&event(broken.clone()), None).unwrap_err();
            assert!(
                matches!(err, GoogleError::Malformed { .. }),
                "{broken} gave {err:?}"
            );
        }
    }

    #[test]
    fn patch_bodies_clear_fields_with_null_insert_bodies_omit_them() {
        let f = timed("2026-06-10T10:00:00Z", "2026-06-10T11:00:00Z", None);
        let patch = EventBody {
            fields: &f,
            calendar_time_zone: Some("America/Chicago"),
            kind: BodyKind::Patch,
        }
        .to_json()
        .unwrap();
        assert_eq!(patch["description"], Value::Null);
        assert!(patch.contains_key("description"));
        assert!(patch.contains_key("location"));
        // No zone of its own: Chicago local time, and the all-day half cleared.
        assert_eq!(
            patch["start"],
            json!({"dateTime": "2026-06-10T05:00:00-05:00", "timeZone": "America/Chicago", "date": null})
        );

        let insert = EventBody {
            fields: &f,
            calendar_time_zone: Some("America/Chicago"),
            kind: BodyKind::Insert,
        }
        .to_json()
        .unwrap();
        assert!(!insert.contains_key("description"));
        assert!(!insert["start"].as_object().unwrap().contains_key("date"));
    }

    #[test]
    fn an_end_without_zone_is_sent_in_the_calendars_zone_not_the_starts() {
        let mut f = timed(
            "2026-06-10T10:00:00Z",
            "2026-06-10T11:00:00Z",
            Some("Asia/Kolkata"),
        );
        f.end_time_zone = None;
        let body = EventBody {
            fields: &f,
            calendar_time_zone: Some("America/Chicago"),
            kind: BodyKind::Insert,
        }
        .to_json()
        .unwrap();
        assert_eq!(body["start"]["timeZone"], "Asia/Kolkata");
        assert_eq!(
            body["end"],
            json!({"dateTime": "2026-06-10T06:00:00-05:00", "timeZone": "America/Chicago"})
        );
    }

    #[test]
    fn all_day_bodies_send_dates_and_clear_the_timed_half() {
        let f = AppointmentFields {
            summary: "Trip".into(),
            description: Some("bring passport".into()),
            location: None,
            start_at: Utc.with_ymd_and_hms(2026, 7, 1, 0, 0, 0).unwrap(),
            end_at: Utc.with_ymd_and_hms(2026, 7, 4, 0, 0, 0).unwrap(),
            start_time_zone: Some("Europe/Berlin".into()),
            end_time_zone: Some("Europe/Berlin".into()),
            all_day: true,
        };
        let patch = EventBody {
            fields: &f,
            calendar_time_zone: None,
            kind: BodyKind::Patch,
        }
        .to_json()
        .unwrap();
        assert_eq!(
            patch["start"],
            json!({"date": "2026-07-01", "dateTime": null, "timeZone": null})
        );
        assert_eq!(patch["end"]["date"], "2026-07-04");
        assert_eq!(patch["description"], "bring passport");
    }

    #[test]
    fn an_unknown_zone_is_refused_before_sending() {
        let f = timed(
            "2026-06-10T10:00:00Z",
            "2026-06-10T11:00:00Z",
            Some("Mars/Olympus"),
        );
        let err = EventBody {
            fields: &f,
            calendar_time_zone: None,
            kind: BodyKind::Insert,
        }
        .to_json()
        .unwrap_err();
        assert_eq!(err, GoogleError::InvalidTimeZone("Mars/Olympus".into()));
    }

    #[test]
    fn round_trip_of_a_pushed_body_gives_the_same_fields() {
        let f = timed(
            "2026-03-08T06:30:00Z",
            "2026-03-08T07:30:00Z",
            Some("America/New_York"),
        );
        let mut body = EventBody {
            fields: &f,
            calendar_time_zone: None,
            kind: BodyKind::Insert,
        }
        .to_json()
        .unwrap();
        body.insert("id".into(), json!("abc12"));
        body.insert("etag".into(), json!("\"9\""));
        body.insert("updated".into(), json!("2026-03-01T00:00:00Z"));
        body.insert("status".into(), json!("confirmed"));
        let e = remote_event(&event(Value::Object(body)), None).unwrap();
        assert_eq!(fields_of(&e), &f);
    }
}
