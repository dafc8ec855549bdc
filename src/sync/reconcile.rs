//! Pure decisions: one remote event plus what we know locally → one action.
//!
//! Nothing here does I/O, so every rule of DESIGN.md's "Sync rules" is a unit
//! test away. The rules, for a pulled event:
//! - Matching is by the connection's link only; ids inside an event never
//!   address an appointment.
//! - An event the link already knows by its etag changes nothing.
//! - A live appointment event nobody links becomes a new appointment of the
//!   connection's user.
//! - A changed event whose appointment columns are equal to ours updates the
//!   link only (attendees, reminders, colour): no write, no delta.
//! - Edit vs edit with a pending local change: the newer of local
//!   `updated_at` and remote `updated` wins (ties: remote), the loser is
//!   recorded. Without a pending local change the remote simply wins.
//! - Delete beats edit, in both directions: a cancelled (or no longer
//!   appointment-like) event deletes the appointment even over a pending
//!   local edit; a pending local delete keeps the appointment deleted.
//!
//! An [`Action`] carries what it was decided on — the [`Link`] and the remote
//! appointment — so callers act on it without looking either up again.

use chrono::{DateTime, Utc};

use crate::google::{RemoteAppointment, RemoteEvent, RemoteEventKind};
use crate::ids::{AppointmentId, Etag};
use crate::model::AppointmentFields;

/// An event's link, as the caller will need it to act.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    pub id: i64,
    pub appointment_id: AppointmentId,
    /// The appointment's push is parked (invalid host values).
    pub parked: bool,
}

/// What we hold locally for an event's link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalState {
    pub link: Link,
    pub etag: Option<Etag>,
    /// The appointment, or `None` when the host deleted it (its push, which
    /// deletes the Google event, is pending).
    pub appointment: Option<LocalAppointment>,
    /// A local change waits to be pushed.
    pub pending_push: bool,
    /// The calendar's zone, which a zone-less appointment takes in Google.
    pub calendar_time_zone: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalAppointment {
    pub fields: AppointmentFields,
    pub updated_at: DateTime<Utc>,
}

/// Who lost a conflict, and what their version was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loser {
    /// The local edit was overwritten by Google's version.
    LocalEdit(LocalAppointment),
    /// Google's edit is overwritten by the pending local edit.
    RemoteEdit {
        fields: AppointmentFields,
        updated: DateTime<Utc>,
    },
    /// A pending local edit lost to a delete in Google.
    LocalEditDeleted(LocalAppointment),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action<'e> {
    /// Nothing to change; the link is seen.
    Unchanged {
        link: Link,
    },
    /// Not ours to track: a cancelled or non-appointment event nobody links.
    Ignore,
    Create(&'e RemoteAppointment),
    /// Only the link learns the new etag and `updated`.
    RefreshLink {
        link: Link,
        remote: &'e RemoteAppointment,
    },
    /// The appointment (`link.appointment_id`) takes Google's values.
    Update {
        link: Link,
        remote: &'e RemoteAppointment,
        conflict: Option<Loser>,
    },
    /// The pending local edit wins over Google's edit: keep our values, learn
    /// the new etag (so the push's `If-Match` matches) and record the loser.
    KeepLocal {
        link: Link,
        remote: &'e RemoteAppointment,
        conflict: Loser,
    },
    /// The event is gone (or no longer an appointment): delete ours and the link.
    Delete {
        link: Link,
        conflict: Option<Loser>,
    },
    /// Both sides are deleted already: forget the link.
    DropLink {
        link: Link,
    },
    /// Deleted locally and the delete is still to be pushed: it wins over a
    /// remote edit, so leave everything for the push (the link is seen).
    LocalDeletePending {
        link: Link,
    },
}

pub fn decide<'e>(event: &'e RemoteEvent, local: Option<&LocalState>) -> Action<'e> {
    let Some(local) = local else {
        return match &event.kind {
            RemoteEventKind::Appointment(remote) => Action::Create(remote),
            RemoteEventKind::Cancelled | RemoteEventKind::NotAnAppointment(_) => Action::Ignore,
        };
    };
    let link = local.link;
    let remote = match &event.kind {
        RemoteEventKind::Appointment(remote) => remote,
        RemoteEventKind::Cancelled | RemoteEventKind::NotAnAppointment(_) => {
            return match &local.appointment {
                None => Action::DropLink { link },
                Some(appointment) => Action::Delete {
                    link,
                    conflict: local
                        .pending_push
                        .then(|| Loser::LocalEditDeleted(appointment.clone())),
                },
            };
        }
    };
    let Some(appointment) = &local.appointment else {
        return Action::LocalDeletePending { link };
    };
    if local.etag.as_ref() == Some(&remote.etag) {
        return Action::Unchanged { link };
    }
    if appointment
        .fields
        .matches(&remote.fields, local.calendar_time_zone.as_deref())
    {
        return Action::RefreshLink { link, remote };
    }
    if !local.pending_push {
        return Action::Update {
            link,
            remote,
            conflict: None,
        };
    }
    if remote.updated >= appointment.updated_at {
        Action::Update {
            link,
            remote,
            conflict: Some(Loser::LocalEdit(appointment.clone())),
        }
    } else {
        Action::KeepLocal {
            link,
            remote,
            conflict: Loser::RemoteEdit {
                fields: remote.fields.clone(),
                updated: remote.updated,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::google::{LiveStatus, NotAppointmentReason};
    use crate::ids::EventId;
    use chrono::TimeZone;

    fn t(h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, h, 0, 0).unwrap()
    }

    fn fields(summary: &str) -> AppointmentFields {
        AppointmentFields {
            summary: summary.into(),
            description: None,
            location: None,
            start_at: t(10),
            end_at: t(11),
            start_time_zone: Some("Europe/Berlin".into()),
            end_time_zone: Some("Europe/Berlin".into()),
            all_day: false,
        }
    }

    fn live(summary: &str, etag: &str, updated: DateTime<Utc>) -> RemoteEvent {
        RemoteEvent {
            id: EventId::from("ev1"),
            recurring_event_id: None,
            private_properties: Default::default(),
            kind: RemoteEventKind::Appointment(RemoteAppointment {
                etag: Etag::from(etag),
                updated,
                status: LiveStatus::Confirmed,
                fields: fields(summary),
            }),
        }
    }

    fn cancelled() -> RemoteEvent {
        RemoteEvent {
            id: EventId::from("ev1"),
            recurring_event_id: None,
            private_properties: Default::default(),
            kind: RemoteEventKind::Cancelled,
        }
    }

    fn local(summary: &str, etag: &str, updated_at: DateTime<Utc>, pending: bool) -> LocalState {
        LocalState {
            link: Link {
                id: 1,
                appointment_id: AppointmentId(7),
                parked: false,
            },
            etag: Some(Etag::from(etag)),
            appointment: Some(LocalAppointment {
                fields: fields(summary),
                updated_at,
            }),
            pending_push: pending,
            calendar_time_zone: None,
        }
    }

    #[test]
    fn unknown_live_event_is_created_and_unknown_deletions_ignored() {
        let event = live("a", "e1", t(9));
        match decide(&event, None) {
            Action::Create(remote) => assert_eq!(Some(remote), event.appointment()),
            other => panic!("{other:?}"),
        }
        assert_eq!(decide(&cancelled(), None), Action::Ignore);
        let mut declined = live("a", "e1", t(9));
        declined.kind = RemoteEventKind::NotAnAppointment(NotAppointmentReason::DeclinedByOwner);
        assert_eq!(decide(&declined, None), Action::Ignore);
    }

    #[test]
    fn same_etag_is_unchanged_and_same_fields_only_refresh_the_link() {
        let l = local("a", "e1", t(8), false);
        assert_eq!(
            decide(&live("a", "e1", t(9)), Some(&l)),
            Action::Unchanged { link: l.link }
        );
        match decide(&live("a", "e2", t(9)), Some(&l)) {
            Action::RefreshLink { link, remote } => {
                assert_eq!(link, l.link);
                assert_eq!(remote.etag, Etag::from("e2"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn remote_edit_without_local_change_updates_without_conflict() {
        let l = local("a", "e1", t(12), false);
        match decide(&live("b", "e2", t(9)), Some(&l)) {
            Action::Update {
                conflict: None,
                link,
                remote,
            } => {
                assert_eq!(link.appointment_id, AppointmentId(7));
                assert_eq!(remote.fields.summary, "b");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn edit_vs_edit_newer_wins_and_ties_go_to_google() {
        let older_local = local("mine", "e1", t(8), true);
        assert!(matches!(
            decide(&live("theirs", "e2", t(9)), Some(&older_local)),
            Action::Update {
                conflict: Some(Loser::LocalEdit(_)),
                ..
            }
        ));
        let tie = local("mine", "e1", t(9), true);
        assert!(matches!(
            decide(&live("theirs", "e2", t(9)), Some(&tie)),
            Action::Update {
                conflict: Some(Loser::LocalEdit(_)),
                ..
            }
        ));
        let newer_local = local("mine", "e1", t(10), true);
        match decide(&live("theirs", "e2", t(9)), Some(&newer_local)) {
            Action::KeepLocal {
                conflict: Loser::RemoteEdit { fields, .. },
                remote,
                ..
            } => {
                assert_eq!(fields.summary, "theirs");
                assert_eq!(remote.etag, Etag::from("e2"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn delete_beats_edit_both_ways() {
        let pending_edit = local("mine", "e1", t(10), true);
        assert!(matches!(
            decide(&cancelled(), Some(&pending_edit)),
            Action::Delete {
                conflict: Some(Loser::LocalEditDeleted(_)),
                ..
            }
        ));
        let quiet = local("mine", "e1", t(10), false);
        assert!(matches!(
            decide(&cancelled(), Some(&quiet)),
            Action::Delete { conflict: None, .. }
        ));
        let mut deleted_locally = local("mine", "e1", t(10), true);
        deleted_locally.appointment = None;
        assert_eq!(
            decide(&live("theirs", "e2", t(11)), Some(&deleted_locally)),
            Action::LocalDeletePending {
                link: deleted_locally.link
            }
        );
        assert_eq!(
            decide(&cancelled(), Some(&deleted_locally)),
            Action::DropLink {
                link: deleted_locally.link
            }
        );
    }
}
