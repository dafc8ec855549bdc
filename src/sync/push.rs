//! Push: one appointment's local change → Google, as one queue job.
//!
//! A push job names a connection and an appointment; it sends the
//! appointment's *current* state (or its absence), so any number of local
//! edits made before it runs become one write of the final state. Guarantees:
//! - **One Google event per appointment.** An insert uses a client-supplied
//!   event id (this deployment's salt, the connection, the appointment and a
//!   never-reused incarnation), recorded in the link and committed *before*
//!   the call. A retry after a lost answer sends the same id; Google's 409 is
//!   adopted only when the existing event's private properties name this
//!   appointment and connection, and otherwise parks the job.
//! - **Conditional writes.** Updates are `PATCH` with `If-Match` of the link's
//!   etag and a body holding the whole final state (cleared fields cleared);
//!   deletes are `DELETE` with `If-Match`, and 404 or 410 count as done.
//! - **Newer wins** (DESIGN.md, Sync rules) when Google's copy changed since
//!   our etag (412, or an adopted 409 that differs): Google newer or equal →
//!   the appointment takes Google's values (a `source:'google'` delta); ours
//!   newer → `PATCH` again on Google's etag. A delete beats an edit on either
//!   side. Every overwritten losing version is kept as a conflict record. A
//!   404 on an edit is retried, never read as a delete: it may mean the
//!   calendar is gone, which a pull settles.
//! - **Echo-safe.** The etag and `updated` Google answered are stored in the
//!   link in the transaction that completes the job (fenced), so the next pull
//!   recognises its own echo. A push writes no appointment column and emits no
//!   delta, except where Google's version wins.
//! - **Failures** go through [`google_failure`]: rate limits snooze (honouring
//!   `Retry-After`, no attempt spent), 5xx and timeouts retry, `invalid_grant`
//!   marks the connection needs-reauth, and other refusals park this
//!   appointment's push with its error, without blocking the rest.

use std::collections::BTreeMap;

use sqlx::PgPool;

use super::conflict::Lost;
use super::pull::payload;
use super::reconcile::{self, Action, Link, LocalAppointment, LocalState, Loser};
use super::{google_failure, SyncDeps};
use crate::deltas::DeltaBatch;
use crate::google::{
    CalendarClient, GoogleError, NewEvent, RemoteAppointment, RemoteEvent, RemoteEventKind,
    WriteAck,
};
use crate::ids::{AppointmentId, ConnectionId, Etag, EventId, UserId};
use crate::queue::{Done, Job, JobContext, JobError, JobKind, Queue};
use crate::store::appointments::{self, AppointmentRow};
use crate::store::conflicts;
use crate::store::connections::SyncConnection;
use crate::store::links::{self, LinkRefresh};
use crate::store::push::{self as push_store, PushLink, PushState};
use crate::store::skipped;

/// The private extended property naming the appointment an event was
/// inserted for.
pub const APPOINTMENT_PROPERTY: &str = "plansyncAppointment";
/// The private extended property naming the connection that inserted it.
pub const CONNECTION_PROPERTY: &str = "plansyncConnection";

/// Runs a `push` job.
pub async fn run(deps: &SyncDeps, ctx: &JobContext, job: &Job) -> Result<Done, JobError> {
    let appointment = job
        .appointment
        .ok_or_else(|| JobError::fatal("a push job without an appointment"))?;
    let pool = &ctx.pool;
    // Both read by the claim (`queue::Prelude`), which also recorded the
    // event id of a first insert: no statement before the call to Google.
    let connection = &job.prelude.connection;
    let state = job
        .prelude
        .push
        .clone()
        .ok_or_else(|| JobError::fatal("a push job claimed without its appointment's state"))?;
    if !connection.active {
        // Disconnected after the change was recorded: a re-connect's sync
        // takes it from here.
        return job.complete(pool).await;
    }
    let was_parked = state.parked;
    let new_link = state
        .link
        .as_ref()
        .filter(|_| state.link_is_new)
        .map(|l| l.id);
    let plan = plan(job.connection, connection.user_id, appointment, state);
    // Host rows are validated before anything is sent: a row Google would
    // refuse (or that we cannot even express) is parked with its reason,
    // shown in `status`, and never retried until the host changes it.
    if let Plan::Insert {
        appointment: row, ..
    }
    | Plan::Patch {
        appointment: row, ..
    } = &plan
    {
        if let Some(reason) = row.fields.push_problem() {
            tracing::warn!(appointment = %row.id, %reason, "push parked: invalid appointment");
            let mut tx = crate::store::begin(pool).await?;
            let done = job.complete_in(&mut tx).await?;
            skipped::park_push(&mut tx, job.connection, row.id, &reason).await?;
            if let Some(link) = new_link {
                push_store::forget_unsent_link(&mut tx, link).await?;
            }
            tx.commit().await?;
            return Ok(done);
        }
    }
    if was_parked {
        let mut conn = pool.acquire().await?;
        skipped::unpark_push(&mut conn, appointment).await?;
    }
    if let Plan::Nothing = plan {
        return job.complete(pool).await;
    }
    let push = Push {
        deps,
        pool,
        job,
        client: deps.client(connection)?,
        connection,
    };
    let outcome = match plan {
        Plan::Nothing => Outcome::Nothing,
        Plan::Forward(to) => Outcome::Forward { to, appointment },
        Plan::Rehome => Outcome::Rehome { appointment },
        Plan::Insert { appointment, link } => push.insert(appointment, link).await?,
        Plan::Patch {
            appointment,
            link,
            etag,
        } => push.patch(appointment, link, etag).await?,
        Plan::Delete { link } => push.delete(link).await?,
    };
    push.apply(outcome).await
}

/// What a push job has to do, from what is stored.
#[derive(Debug, Clone, PartialEq)]
enum Plan {
    /// Inserted and deleted locally before any push ran: nothing to send.
    Nothing,
    /// The appointment lives on another connection's calendar (it was
    /// inserted there since this job was recorded): its push belongs there.
    Forward(ConnectionId),
    /// Not in Google yet, or an insert not confirmed: (re-)send the insert.
    Insert {
        appointment: AppointmentRow,
        link: Option<PushLink>,
    },
    Patch {
        appointment: AppointmentRow,
        link: PushLink,
        etag: Etag,
    },
    /// Deleted locally: delete the event (unconditionally when the insert was
    /// never confirmed, as there is no etag to match). Also how a calendar
    /// lets go of an appointment the host moved to another user.
    Delete { link: PushLink },
    /// The host moved the appointment to another user and no calendar holds
    /// it: its push belongs to the new owner's push target.
    Rehome,
}

fn plan(connection: ConnectionId, owner: UserId, id: AppointmentId, state: PushState) -> Plan {
    let PushState {
        appointment, link, ..
    } = state;
    if let Some(link) = &link {
        if link.connection_id != connection {
            return Plan::Forward(link.connection_id);
        }
    }
    // An appointment is only ever in its own user's calendar: one the host
    // gave to another user leaves this calendar (and is pushed to the new
    // owner's once unlinked).
    if appointment.as_ref().is_some_and(|a| a.user_id != owner) {
        return match link {
            Some(link) => Plan::Delete { link },
            None => Plan::Rehome,
        };
    }
    match (appointment, link) {
        (None, None) => Plan::Nothing,
        (None, Some(link)) => Plan::Delete { link },
        (Some(appointment), None) => Plan::Insert {
            appointment,
            link: None,
        },
        (Some(appointment), Some(link)) => match link.etag.clone() {
            None => Plan::Insert {
                appointment,
                link: Some(link),
            },
            Some(etag) => {
                debug_assert_eq!(appointment.id, id);
                Plan::Patch {
                    appointment,
                    link,
                    etag,
                }
            }
        },
    }
}

/// The event id of an insert: base32hex (`[a-v0-9]`), as Google requires.
/// The numbers are hex and the separators letters beyond `f`, so distinct
/// inputs never give the same id.
pub fn event_id(
    salt: &str,
    connection: ConnectionId,
    appointment: AppointmentId,
    incarnation: i64,
) -> EventId {
    EventId::new(format!(
        "{salt}g{:x}h{:x}i{:x}",
        connection.0, appointment.0, incarnation
    ))
}

/// The private properties written at insert, which make a 409 adoptable.
pub fn private_properties(
    connection: ConnectionId,
    appointment: AppointmentId,
) -> BTreeMap<String, String> {
    BTreeMap::from([
        (APPOINTMENT_PROPERTY.to_owned(), appointment.to_string()),
        (CONNECTION_PROPERTY.to_owned(), connection.to_string()),
    ])
}

/// Whether an existing event is the one this connection inserted for this
/// appointment (Google's 409 alone proves nothing: ids of other events, even
/// deleted ones, answer it too).
fn is_ours(event: &RemoteEvent, connection: ConnectionId, appointment: AppointmentId) -> bool {
    event.private_properties.get(APPOINTMENT_PROPERTY) == Some(&appointment.to_string())
        && event.private_properties.get(CONNECTION_PROPERTY) == Some(&connection.to_string())
}

/// What the calls to Google ended in: written, with the job's completion, in
/// one fenced transaction by [`Push::apply`].
#[derive(Debug)]
enum Outcome {
    Nothing,
    Forward {
        to: ConnectionId,
        appointment: AppointmentId,
    },
    /// Google holds our values: remember its etag and `updated`.
    Confirmed {
        link: PushLink,
        appointment: AppointmentId,
        ack: WriteAck,
        lost: Option<Lost>,
    },
    /// Google's newer version wins: the appointment takes it.
    RemoteWins {
        link: PushLink,
        appointment: AppointmentRow,
        remote: RemoteAppointment,
        lost: Option<Lost>,
    },
    /// The event was deleted in Google (or is no longer an appointment): the
    /// delete wins over our edit, so the appointment goes too.
    RemoteDeleted {
        link: PushLink,
        appointment: AppointmentRow,
        lost: Lost,
    },
    /// See [`Plan::Rehome`].
    Rehome {
        appointment: AppointmentId,
    },
    /// Our delete reached Google (or found the event gone): forget the link.
    Unlinked {
        link: PushLink,
        appointment: AppointmentId,
        lost: Option<Lost>,
    },
}

struct Push<'a> {
    deps: &'a SyncDeps,
    pool: &'a PgPool,
    job: &'a Job,
    connection: &'a SyncConnection,
    client: std::sync::Arc<CalendarClient>,
}

impl Push<'_> {
    fn zone(&self) -> Option<&str> {
        self.connection.calendar_time_zone.as_deref()
    }

    async fn fail(&self, err: GoogleError) -> JobError {
        google_failure(self.pool, self.job, self.connection.id, err).await
    }

    /// Inserts under the link's event id (recorded by the claim, committed
    /// before this call: see `store::jobs::claim_batch`).
    async fn insert(
        &self,
        appointment: AppointmentRow,
        link: Option<PushLink>,
    ) -> Result<Outcome, JobError> {
        // The claim records the link of every first insert it hands out;
        // none here means another writer linked the appointment while it
        // claimed (its snapshot saw no link, its insert met one): the next
        // run sees that link.
        let link = link.ok_or_else(|| {
            JobError::retry(format!(
                "appointment {} was linked while its push was claimed",
                appointment.id
            ))
        })?;
        let properties = private_properties(self.connection.id, appointment.id);
        let new = NewEvent {
            id: &link.event_id,
            fields: &appointment.fields,
            private_properties: &properties,
        };
        match self
            .client
            .insert_event(&self.connection.calendar_id, new, self.zone())
            .await
        {
            Ok(ack) => Ok(Outcome::Confirmed {
                appointment: appointment.id,
                link,
                ack,
                lost: None,
            }),
            Err(GoogleError::Duplicate { .. }) => {
                let existing = self.fetch(&link.event_id, NotFound::Retry).await?;
                if !is_ours(&existing, self.connection.id, appointment.id) {
                    return Err(JobError::fatal(format!(
                        "Google already has an event {} that was not inserted for appointment {} \
                         by connection {}: not adopting it",
                        link.event_id, appointment.id, self.connection.id
                    )));
                }
                // Our own earlier insert whose answer was lost. If it differs
                // from the appointment now, the difference is most likely a
                // local edit made since: not a conflict worth recording.
                self.resolve(appointment, link, existing, false).await
            }
            Err(err) => Err(self.fail(err).await),
        }
    }

    async fn patch(
        &self,
        appointment: AppointmentRow,
        link: PushLink,
        etag: Etag,
    ) -> Result<Outcome, JobError> {
        match self
            .client
            .patch_event_if_match(
                &self.connection.calendar_id,
                &link.event_id,
                &etag,
                &appointment.fields,
                self.zone(),
            )
            .await
        {
            Ok(ack) => Ok(Outcome::Confirmed {
                appointment: appointment.id,
                link,
                ack,
                lost: None,
            }),
            Err(GoogleError::PreconditionFailed) => {
                let current = self.fetch(&link.event_id, NotFound::Retry).await?;
                self.resolve(appointment, link, current, true).await
            }
            Err(GoogleError::NotFound { .. }) => Err(not_found(&link.event_id)),
            Err(GoogleError::Gone { .. }) => {
                let lost = Lost::from_loser(&Loser::LocalEditDeleted(local(&appointment)), None);
                Ok(Outcome::RemoteDeleted {
                    link,
                    appointment,
                    lost,
                })
            }
            Err(err) => Err(self.fail(err).await),
        }
    }

    /// Google's copy is not the one our etag named: newer wins (the rules of
    /// [`reconcile::decide`] with our change pending).
    async fn resolve(
        &self,
        appointment: AppointmentRow,
        link: PushLink,
        current: RemoteEvent,
        record_remote_loser: bool,
    ) -> Result<Outcome, JobError> {
        let local_state = LocalState {
            link: Link {
                id: link.id,
                appointment_id: appointment.id,
                parked: false,
            },
            etag: link.etag.clone(),
            appointment: Some(local(&appointment)),
            pending_push: true,
            calendar_time_zone: self.connection.calendar_time_zone.clone(),
        };
        match reconcile::decide(&current, Some(&local_state)) {
            Action::RefreshLink { remote, .. } => Ok(Outcome::Confirmed {
                appointment: appointment.id,
                link,
                ack: WriteAck {
                    etag: remote.etag.clone(),
                    updated: remote.updated,
                },
                lost: None,
            }),
            Action::Update {
                remote, conflict, ..
            } => Ok(Outcome::RemoteWins {
                lost: conflict.map(|c| Lost::from_loser(&c, Some(remote.updated))),
                link,
                appointment,
                remote: remote.clone(),
            }),
            Action::KeepLocal {
                remote, conflict, ..
            } => {
                match self
                    .client
                    .patch_event_if_match(
                        &self.connection.calendar_id,
                        &link.event_id,
                        &remote.etag,
                        &appointment.fields,
                        self.zone(),
                    )
                    .await
                {
                    Ok(ack) => Ok(Outcome::Confirmed {
                        appointment: appointment.id,
                        link,
                        ack,
                        lost: record_remote_loser
                            .then(|| Lost::from_loser(&conflict, Some(remote.updated))),
                    }),
                    // Edited (or deleted) in Google again meanwhile: start over.
                    Err(
                        GoogleError::PreconditionFailed
                        | GoogleError::NotFound { .. }
                        | GoogleError::Gone { .. },
                    ) => Err(JobError::retry(format!(
                        "event {} changed in Google again while a conflict was resolved",
                        link.event_id
                    ))),
                    Err(err) => Err(self.fail(err).await),
                }
            }
            Action::Delete { conflict, .. } => {
                let lost = conflict
                    .map(|c| Lost::from_loser(&c, None))
                    .unwrap_or_else(|| {
                        Lost::from_loser(&Loser::LocalEditDeleted(local(&appointment)), None)
                    });
                Ok(Outcome::RemoteDeleted {
                    link,
                    appointment,
                    lost,
                })
            }
            Action::Unchanged { .. } => Err(JobError::retry(format!(
                "Google refused our etag for event {} yet answers with it",
                link.event_id
            ))),
            other @ (Action::Ignore
            | Action::Create(_)
            | Action::DropLink { .. }
            | Action::LocalDeletePending { .. }) => Err(JobError::fatal(format!(
                "push cannot act on {other:?} for a linked, existing appointment"
            ))),
        }
    }

    async fn delete(&self, link: PushLink) -> Result<Outcome, JobError> {
        let calendar = &self.connection.calendar_id;
        let appointment = self.job.appointment.expect("checked in run");
        let lost = match self
            .client
            .delete_event(calendar, &link.event_id, link.etag.as_ref())
            .await
        {
            Ok(()) | Err(GoogleError::NotFound { .. } | GoogleError::Gone { .. }) => None,
            Err(GoogleError::PreconditionFailed) => {
                // Edited in Google since our etag: the delete wins anyway,
                // and the edit is the losing version.
                let current = self.fetch(&link.event_id, NotFound::Deleted).await?;
                match current.kind {
                    RemoteEventKind::Appointment(remote) => {
                        match self
                            .client
                            .delete_event(calendar, &link.event_id, None)
                            .await
                        {
                            Ok(())
                            | Err(GoogleError::NotFound { .. } | GoogleError::Gone { .. }) => {
                                Some(Lost::remote_edit_deleted(&remote))
                            }
                            Err(err) => return Err(self.fail(err).await),
                        }
                    }
                    RemoteEventKind::Cancelled => None,
                    RemoteEventKind::NotAnAppointment(_) => {
                        match self
                            .client
                            .delete_event(calendar, &link.event_id, None)
                            .await
                        {
                            Ok(())
                            | Err(GoogleError::NotFound { .. } | GoogleError::Gone { .. }) => None,
                            Err(err) => return Err(self.fail(err).await),
                        }
                    }
                }
            }
            Err(err) => return Err(self.fail(err).await),
        };
        Ok(Outcome::Unlinked {
            link,
            appointment,
            lost,
        })
    }

    /// `events.get`, with a 410 read as deleted, and a 404 as `not_found`
    /// says.
    async fn fetch(&self, event: &EventId, not_found: NotFound) -> Result<RemoteEvent, JobError> {
        let deleted = || RemoteEvent {
            id: event.clone(),
            recurring_event_id: None,
            private_properties: BTreeMap::new(),
            kind: RemoteEventKind::Cancelled,
        };
        match self
            .client
            .get_event(&self.connection.calendar_id, event, self.zone())
            .await
        {
            Ok(found) => Ok(found),
            Err(GoogleError::Gone { .. }) => Ok(deleted()),
            Err(GoogleError::NotFound { .. }) => match not_found {
                NotFound::Deleted => Ok(deleted()),
                NotFound::Retry => Err(self::not_found(event)),
            },
            Err(err) => Err(self.fail(err).await),
        }
    }

    /// Writes the outcome and completes the job, in one fenced transaction.
    /// The link learns the version Google now holds, and a losing version (if
    /// any) is put on record.
    async fn settle_link(
        &self,
        tx: &mut sqlx::PgConnection,
        link: &PushLink,
        etag: &Etag,
        updated: chrono::DateTime<chrono::Utc>,
        appointment: AppointmentId,
        lost: Option<Lost>,
    ) -> Result<(), JobError> {
        links::refresh(
            &mut *tx,
            None,
            &[LinkRefresh {
                link_id: link.id,
                etag,
                remote_updated_at: updated,
            }],
        )
        .await?;
        if let Some(lost) = lost {
            conflicts::insert(
                &mut *tx,
                self.connection.id,
                &[lost.record(appointment, &link.event_id)],
            )
            .await?;
        }
        Ok(())
    }

    async fn apply(&self, outcome: Outcome) -> Result<Done, JobError> {
        let mut tx = crate::store::begin(self.pool).await?;
        // Completed first: the fenced completion is also the fence (it locks
        // the job row), and the outcome below commits with it or not at all.
        let done = self.job.complete_in(&mut tx).await?;
        let connection = self.connection.id;
        match outcome {
            Outcome::Nothing => {}
            Outcome::Forward { to, appointment } => {
                Queue::enqueue_in(&mut tx, JobKind::Push, to, Some(appointment), false).await?;
            }
            Outcome::Rehome { appointment } => {
                Queue::enqueue_owner_push(&mut tx, appointment).await?;
            }
            Outcome::Confirmed {
                link,
                appointment,
                ack,
                lost,
            } => {
                self.settle_link(&mut tx, &link, &ack.etag, ack.updated, appointment, lost)
                    .await?;
            }
            Outcome::RemoteWins {
                link,
                appointment,
                remote,
                lost,
            } => {
                appointments::mark_origin_google(&mut tx).await?;
                let now = push_store::lock_appointment(&mut tx, appointment.id).await?;
                if now != Some(appointment.updated_at) {
                    // Changed locally while we talked to Google: the queued
                    // follow-up push decides again with the new values.
                    return Err(JobError::retry(format!(
                        "appointment {} changed locally while its push ran",
                        appointment.id
                    )));
                }
                let rows =
                    appointments::update_fields(&mut tx, &[(appointment.id, &remote.fields)])
                        .await?;
                self.settle_link(
                    &mut tx,
                    &link,
                    &remote.etag,
                    remote.updated,
                    appointment.id,
                    lost,
                )
                .await?;
                let mut batch = DeltaBatch::new();
                for row in rows {
                    batch.updated(payload(
                        self.connection,
                        row,
                        &link.event_id,
                        &remote.etag,
                        remote.updated,
                    ));
                }
                batch
                    .write(&mut tx, self.deps.settings.bulk_threshold)
                    .await?;
            }
            Outcome::RemoteDeleted {
                link,
                appointment,
                lost,
            } => {
                appointments::mark_origin_google(&mut tx).await?;
                links::delete(&mut tx, &[link.id]).await?;
                let mut batch = DeltaBatch::new();
                for (id, user) in appointments::delete(&mut tx, &[appointment.id]).await? {
                    batch.deleted(user, id);
                }
                conflicts::insert(
                    &mut tx,
                    connection,
                    &[lost.record(appointment.id, &link.event_id)],
                )
                .await?;
                batch
                    .write(&mut tx, self.deps.settings.bulk_threshold)
                    .await?;
            }
            Outcome::Unlinked {
                link,
                appointment,
                lost,
            } => {
                links::delete(&mut tx, &[link.id]).await?;
                if let Some(lost) = lost {
                    conflicts::insert(
                        &mut tx,
                        connection,
                        &[lost.record(appointment, &link.event_id)],
                    )
                    .await?;
                }
                // Unlinked but still here: the host gave it to another user.
                Queue::enqueue_owner_push(&mut tx, appointment).await?;
            }
        }
        tx.commit().await?;
        Ok(done)
    }
}

/// What a 404 on an event means to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NotFound {
    /// A delete: the event is not there, which is all a delete wants.
    Deleted,
    /// An edit: Google deletes events by cancelling them (410, or a
    /// `cancelled` event), so a 404 may as well mean the calendar itself is
    /// gone, and deleting the appointment on it would lose data.
    Retry,
}

/// A 404 on an event an edit was meant for: retried, while pulls settle
/// whether the calendar is gone (the connection is then blocked) or the event
/// was purged (a full sync sweeps the appointment, and the push has nothing
/// left to do).
fn not_found(event: &EventId) -> JobError {
    JobError::retry(format!(
        "Google answers 404 for event {event}: the event or its calendar is gone; \
         a pull settles which"
    ))
}

fn local(appointment: &AppointmentRow) -> LocalAppointment {
    LocalAppointment {
        fields: appointment.fields.clone(),
        updated_at: appointment.updated_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::UserId;
    use crate::model::AppointmentFields;
    use chrono::{TimeZone, Utc};

    fn row(id: i64) -> AppointmentRow {
        let t = Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 0).unwrap();
        AppointmentRow {
            id: AppointmentId(id),
            user_id: UserId(1),
            fields: AppointmentFields {
                summary: "Dentist".into(),
                description: None,
                location: None,
                start_at: t,
                end_at: t,
                start_time_zone: None,
                end_time_zone: None,
                all_day: false,
            },
            created_at: t,
            updated_at: t,
        }
    }

    fn link(connection: i64, etag: Option<&str>) -> PushLink {
        PushLink {
            id: 5,
            connection_id: ConnectionId(connection),
            event_id: EventId::from("abcde"),
            etag: etag.map(Etag::from),
            remote_updated_at: None,
        }
    }

    fn state(appointment: Option<AppointmentRow>, link: Option<PushLink>) -> PushState {
        PushState {
            appointment,
            link,
            parked: false,
            link_is_new: false,
        }
    }

    #[test]
    fn plans_follow_what_is_stored() {
        let (c, a) = (ConnectionId(1), AppointmentId(7));
        assert_eq!(plan(c, UserId(1), a, state(None, None)), Plan::Nothing);
        assert!(matches!(
            plan(c, UserId(1), a, state(Some(row(7)), None)),
            Plan::Insert { link: None, .. }
        ));
        assert!(matches!(
            plan(c, UserId(1), a, state(Some(row(7)), Some(link(1, None)))),
            Plan::Insert { link: Some(_), .. }
        ));
        assert!(matches!(
            plan(c, UserId(1), a, state(Some(row(7)), Some(link(1, Some("\"e1\""))))),
            Plan::Patch { etag, .. } if etag == Etag::from("\"e1\"")
        ));
        assert!(matches!(
            plan(c, UserId(1), a, state(None, Some(link(1, Some("\"e1\""))))),
            Plan::Delete { .. }
        ));
        assert!(matches!(
            plan(c, UserId(1), a, state(None, Some(link(1, None)))),
            Plan::Delete { link } if link.etag.is_none()
        ));
        assert_eq!(
            plan(
                c,
                UserId(1),
                a,
                state(Some(row(7)), Some(link(2, Some("\"e1\""))))
            ),
            Plan::Forward(ConnectionId(2))
        );
        assert_eq!(
            plan(c, UserId(1), a, state(None, Some(link(2, Some("\"e1\""))))),
            Plan::Forward(ConnectionId(2))
        );
    }

    #[test]
    fn event_ids_are_base32hex_and_unambiguous() {
        let salt = "0123456789abcdef";
        let id = event_id(salt, ConnectionId(255), AppointmentId(4096), 1);
        assert_eq!(id.as_str(), "0123456789abcdefgffh1000i1");
        assert!(id
            .as_str()
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='v').contains(&c)));
        assert!((5..=1024).contains(&id.as_str().len()));
        // Shifting digits between the parts changes the id.
        assert_ne!(
            event_id(salt, ConnectionId(0x1), AppointmentId(0x23), 1),
            event_id(salt, ConnectionId(0x12), AppointmentId(0x3), 1)
        );
        assert_ne!(
            id,
            event_id(salt, ConnectionId(255), AppointmentId(4096), 2)
        );
    }

    #[test]
    fn a_duplicate_is_ours_only_when_its_properties_name_us() {
        let event = |props: BTreeMap<String, String>| RemoteEvent {
            id: EventId::from("abcde"),
            recurring_event_id: None,
            private_properties: props,
            kind: RemoteEventKind::Cancelled,
        };
        let (c, a) = (ConnectionId(3), AppointmentId(9));
        assert!(is_ours(&event(private_properties(c, a)), c, a));
        assert!(!is_ours(&event(BTreeMap::new()), c, a));
        assert!(!is_ours(
            &event(private_properties(ConnectionId(4), a)),
            c,
            a
        ));
        assert!(!is_ours(
            &event(private_properties(c, AppointmentId(10))),
            c,
            a
        ));
        let mut extra = private_properties(c, a);
        extra.insert("someoneElses".into(), "x".into());
        assert!(is_ours(&event(extra), c, a));
    }
}
