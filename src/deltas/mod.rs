//! Plan deltas: the payload the realtime layer and its clients consume.
//!
//! The types here serialize to exactly the JSON of DESIGN.md's contract
//! (`PlanItemDelta`, `PlanItemDeltaPayload`, `AppointmentPayload`): optional
//! delta fields are omitted when absent, every `AppointmentPayload` key is
//! always present (`null` where the column is NULL), and timestamps are RFC
//! 3339 UTC with milliseconds, as JavaScript's `Date.toISOString()` prints
//! them. Field order follows the contract so payloads diff cleanly.

pub mod batch;
pub mod catch_up;
pub mod connect;
pub mod link;
pub mod publish;
pub mod relay;
pub mod streams;
pub mod timestamp;

pub use batch::DeltaBatch;
pub use link::{announce, announce_link_change};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{AppointmentId, CalendarId, ConnectionId, EventId, UserId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ItemType {
    Appointment,
    Bill,
    Plan,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeltaAction {
    Created,
    Updated,
    Deleted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeltaSource {
    Rest,
    Collaborator,
    Google,
    Inbound,
}

/// One change of one plan item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanItemDelta {
    pub item_type: ItemType,
    /// `appointments.id`, or 0 for `plan`.
    pub entity_id: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_item_id: Option<i64>,
    pub action: DeltaAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<DeltaSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<DeltaData>,
}

impl PlanItemDelta {
    /// An appointment created or updated by this worker.
    pub fn appointment_upsert(
        action: DeltaAction,
        version: i64,
        appointment: AppointmentPayload,
    ) -> Self {
        PlanItemDelta {
            item_type: ItemType::Appointment,
            entity_id: appointment.id.0,
            plan_item_id: None,
            action,
            version: Some(version),
            source: Some(DeltaSource::Google),
            data: Some(DeltaData {
                appointment: Some(appointment),
                bill: None,
                section: None,
                connection: None,
            }),
        }
    }

    /// An appointment deleted by this worker: no `data`.
    pub fn appointment_deleted(id: AppointmentId, version: i64) -> Self {
        PlanItemDelta {
            item_type: ItemType::Appointment,
            entity_id: id.0,
            plan_item_id: None,
            action: DeltaAction::Deleted,
            version: Some(version),
            source: Some(DeltaSource::Google),
            data: None,
        }
    }

    /// The bulk fallback: "reload the whole plan".
    pub fn plan_updated(version: i64) -> Self {
        PlanItemDelta {
            item_type: ItemType::Plan,
            entity_id: 0,
            plan_item_id: None,
            action: DeltaAction::Updated,
            version: Some(version),
            source: Some(DeltaSource::Google),
            data: None,
        }
    }

    /// The user's Google link changed state (broke or recovered): "refresh
    /// the google-calendar section", with the connection's state.
    pub fn google_link(connection: ConnectionPayload) -> Self {
        PlanItemDelta {
            item_type: ItemType::Plan,
            entity_id: 0,
            plan_item_id: None,
            action: DeltaAction::Updated,
            version: None,
            source: Some(DeltaSource::Google),
            data: Some(DeltaData {
                appointment: None,
                bill: None,
                section: Some(GOOGLE_CALENDAR_SECTION.to_owned()),
                connection: Some(connection),
            }),
        }
    }
}

/// The event name the realtime layer's clients listen to.
pub const EVENT_NAME: &str = "plan:item-delta";

/// The `data.section` of a link delta.
pub const GOOGLE_CALENDAR_SECTION: &str = "google-calendar";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeltaData {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appointment: Option<AppointmentPayload>,
    /// Bills are the host's; this worker never emits them but keeps the shape.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bill: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section: Option<String>,
    /// With `section: "google-calendar"`: the state of the user's link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<ConnectionPayload>,
}

/// A calendar connection as its user's clients see it (an extension of the
/// seed contract, carried by `plan` deltas of section `google-calendar`):
/// every key always present, `lastError` `null` when there is none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionPayload {
    pub id: ConnectionId,
    pub calendar_id: CalendarId,
    pub needs_reauth: bool,
    pub calendar_gone: bool,
    pub last_error: Option<String>,
}

/// An appointment row as the clients see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppointmentPayload {
    pub id: AppointmentId,
    pub user_id: UserId,
    pub summary: String,
    pub description: Option<String>,
    pub location: Option<String>,
    #[serde(with = "timestamp")]
    pub start_at: DateTime<Utc>,
    #[serde(with = "timestamp")]
    pub end_at: DateTime<Utc>,
    pub start_time_zone: Option<String>,
    pub end_time_zone: Option<String>,
    pub all_day: bool,
    #[serde(with = "timestamp")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "timestamp")]
    pub updated_at: DateTime<Utc>,
    pub google_sync: Option<GoogleSync>,
}

/// Where the appointment lives in Google.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GoogleSync {
    pub calendar_id: CalendarId,
    pub event_id: EventId,
    pub etag: Option<String>,
    #[serde(with = "timestamp::option")]
    pub remote_updated_at: Option<DateTime<Utc>>,
}

/// What a client receives: `{ deltas: [...] }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanItemDeltaPayload {
    pub deltas: Vec<PlanItemDelta>,
}

/// The message on a JSON channel: `{"userId":<id>,"deltas":[...]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserDeltaMessage {
    pub user_id: UserId,
    pub deltas: Vec<PlanItemDelta>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn appointment() -> AppointmentPayload {
        AppointmentPayload {
            id: AppointmentId(17),
            user_id: UserId(3),
            summary: "Dentist".into(),
            description: None,
            location: Some("Main St 1".into()),
            start_at: at("2026-12-10T15:00:00Z"),
            end_at: Utc.with_ymd_and_hms(2026, 12, 10, 16, 0, 0).unwrap()
                + chrono::Duration::milliseconds(250),
            start_time_zone: Some("Europe/Berlin".into()),
            end_time_zone: None,
            all_day: false,
            created_at: at("2026-11-01T08:00:00.123456Z"),
            updated_at: at("2026-11-02T09:30:00Z"),
            google_sync: Some(GoogleSync {
                calendar_id: "primary".into(),
                event_id: "abc123".into(),
                etag: Some("\"3181161784712000\"".into()),
                remote_updated_at: Some(at("2026-11-02T09:29:59.5Z")),
            }),
        }
    }

    #[test]
    fn created_delta_matches_the_contract() {
        let delta = PlanItemDelta::appointment_upsert(DeltaAction::Created, 5, appointment());
        let json = serde_json::to_string(&delta).unwrap();
        assert_eq!(
            json,
            r#"{"itemType":"appointment","entityId":17,"action":"created","version":5,"source":"google","data":{"appointment":{"id":17,"userId":3,"summary":"Dentist","description":null,"location":"Main St 1","startAt":"2026-12-10T15:00:00.000Z","endAt":"2026-12-10T16:00:00.250Z","startTimeZone":"Europe/Berlin","endTimeZone":null,"allDay":false,"createdAt":"2026-11-01T08:00:00.123Z","updatedAt":"2026-11-02T09:30:00.000Z","googleSync":{"calendarId":"primary","eventId":"abc123","etag":"\"3181161784712000\"","remoteUpdatedAt":"2026-11-02T09:29:59.500Z"}}}}"#
        );
        let back: PlanItemDelta = serde_json::from_str(&json).unwrap();
        assert_eq!(back.entity_id, 17);
    }

    #[test]
    fn deleted_and_plan_deltas_carry_no_data() {
        let payload = PlanItemDeltaPayload {
            deltas: vec![
                PlanItemDelta::appointment_deleted(AppointmentId(9), 6),
                PlanItemDelta::plan_updated(7),
            ],
        };
        assert_eq!(
            serde_json::to_string(&payload).unwrap(),
            r#"{"deltas":[{"itemType":"appointment","entityId":9,"action":"deleted","version":6,"source":"google"},{"itemType":"plan","entityId":0,"action":"updated","version":7,"source":"google"}]}"#
        );
    }

    #[test]
    fn json_channel_message_names_the_user() {
        let mut unlinked = appointment();
        unlinked.google_sync = None;
        unlinked.location = None;
        let message = UserDeltaMessage {
            user_id: UserId(3),
            deltas: vec![PlanItemDelta::appointment_upsert(
                DeltaAction::Updated,
                8,
                unlinked,
            )],
        };
        let value = serde_json::to_value(&message).unwrap();
        assert_eq!(value["userId"], 3);
        let appointment = &value["deltas"][0]["data"]["appointment"];
        // Every key present, null where empty.
        for key in [
            "id",
            "userId",
            "summary",
            "description",
            "location",
            "startAt",
            "endAt",
            "startTimeZone",
            "endTimeZone",
            "allDay",
            "createdAt",
            "updatedAt",
            "googleSync",
        ] {
            assert!(appointment.get(key).is_some(), "missing {key}");
        }
        assert!(appointment["location"].is_null());
        assert!(appointment["googleSync"].is_null());
    }
}
