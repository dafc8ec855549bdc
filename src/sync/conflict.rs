//! What a losing version becomes on record, for pull and push alike: which
//! side won, what kind of conflict it was, the loser's values and both
//! sides' times. The words for winner and kind, as stored, are
//! [`Winner`]'s and [`ConflictKind`]'s (in the store).

use chrono::{DateTime, Utc};

use super::reconcile::Loser;
use crate::google::RemoteAppointment;
use crate::ids::{AppointmentId, EventId};
use crate::model::AppointmentFields;
use crate::store::conflicts::{ConflictKind, NewConflict, Winner};

/// A losing version, to be kept as a conflict record.
#[derive(Debug, Clone, PartialEq)]
pub struct Lost {
    pub winner: Winner,
    pub kind: ConflictKind,
    pub losing_values: serde_json::Value,
    pub local_updated_at: Option<DateTime<Utc>>,
    pub remote_updated_at: Option<DateTime<Utc>>,
}

impl Lost {
    /// The record of a loser [`reconcile::decide`](super::reconcile::decide)
    /// named; `remote_updated` is Google's `updated` of the winning (or
    /// deleting) side, when there is one.
    pub fn from_loser(loser: &Loser, remote_updated: Option<DateTime<Utc>>) -> Lost {
        match loser {
            Loser::LocalEdit(local) => Lost {
                winner: Winner::Google,
                kind: ConflictKind::Edit,
                losing_values: losing_values(&local.fields, local.updated_at),
                local_updated_at: Some(local.updated_at),
                remote_updated_at: remote_updated,
            },
            Loser::RemoteEdit { fields, updated } => Lost {
                winner: Winner::Local,
                kind: ConflictKind::Edit,
                losing_values: losing_values(fields, *updated),
                local_updated_at: None,
                remote_updated_at: Some(*updated),
            },
            Loser::LocalEditDeleted(local) => Lost {
                winner: Winner::Google,
                kind: ConflictKind::Delete,
                losing_values: losing_values(&local.fields, local.updated_at),
                local_updated_at: Some(local.updated_at),
                remote_updated_at: None,
            },
        }
    }

    /// A local delete beat an edit made in Google.
    pub fn remote_edit_deleted(remote: &RemoteAppointment) -> Lost {
        Lost {
            winner: Winner::Local,
            kind: ConflictKind::Delete,
            losing_values: losing_values(&remote.fields, remote.updated),
            local_updated_at: None,
            remote_updated_at: Some(remote.updated),
        }
    }

    /// The row to store for `appointment_id`'s event.
    pub fn record(self, appointment_id: AppointmentId, event_id: &EventId) -> NewConflict<'_> {
        NewConflict {
            appointment_id,
            event_id,
            winner: self.winner,
            kind: self.kind,
            losing_values: Some(self.losing_values),
            local_updated_at: self.local_updated_at,
            remote_updated_at: self.remote_updated_at,
        }
    }
}

/// The losing values of a conflict, as stored for the admin.
fn losing_values(fields: &AppointmentFields, updated_at: DateTime<Utc>) -> serde_json::Value {
    use crate::deltas::timestamp::format;
    serde_json::json!({
        "summary": fields.summary,
        "description": fields.description,
        "location": fields.location,
        "startAt": format(&fields.start_at),
        "endAt": format(&fields.end_at),
        "startTimeZone": fields.start_time_zone,
        "endTimeZone": fields.end_time_zone,
        "allDay": fields.all_day,
        "updatedAt": format(&updated_at),
    })
}
