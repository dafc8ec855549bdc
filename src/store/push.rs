//! What a push job reads and records: one appointment (which the host may have
//! deleted), its link (which may not exist yet), and the insert it is about
//! to send.
//!
//! A push's insert has its event id recorded in a link with no etag *before*
//! the call, committed, so a retry after a lost answer sends the same id and
//! Google's 409 tells it the event exists; the link's etag is filled in when
//! the insert is confirmed. The claim that hands the push out records it, and
//! reads the appointment and its link, in its own statement
//! (`store::jobs::claim_batch`, with [`PushState::from_parts`]); the id is
//! the SQL function `plansync.event_id`, the spelling of
//! `sync::push::event_id`.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::appointments::AppointmentRow;
use super::StoreError;
use crate::ids::{AppointmentId, ConnectionId, Etag, EventId};

/// An appointment's link, as a push sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushLink {
    pub id: i64,
    pub connection_id: ConnectionId,
    pub event_id: EventId,
    /// `None`: an insert under `event_id` was recorded but not confirmed.
    pub etag: Option<Etag>,
    pub remote_updated_at: Option<DateTime<Utc>>,
}

/// One appointment and its link, either of which may be gone.
#[derive(Debug, Clone)]
pub struct PushState {
    pub appointment: Option<AppointmentRow>,
    pub link: Option<PushLink>,
    /// An earlier push of this appointment was parked.
    pub parked: bool,
    /// The link is the one the claim just recorded for a first insert:
    /// nothing was ever sent under its event id.
    pub link_is_new: bool,
}

/// A link's columns as an outer join reads them (all NULL: no link).
pub(super) struct LinkColumns {
    pub(super) id: Option<i64>,
    pub(super) connection_id: Option<ConnectionId>,
    pub(super) event_id: Option<EventId>,
    pub(super) etag: Option<Etag>,
    pub(super) remote_updated_at: Option<DateTime<Utc>>,
}

impl PushState {
    /// Assembles the state from a statement's nullable columns (an outer join
    /// on the appointment and on its link): shared by [`load`] and the claim,
    /// which reads the same columns for the push jobs it hands out.
    pub(super) fn from_parts(
        appointment: Option<AppointmentRow>,
        columns: LinkColumns,
        parked: bool,
        link_is_new: bool,
    ) -> PushState {
        let link = match (columns.id, columns.connection_id, columns.event_id) {
            (Some(id), Some(connection_id), Some(event_id)) => Some(PushLink {
                id,
                connection_id,
                event_id,
                etag: columns.etag,
                remote_updated_at: columns.remote_updated_at,
            }),
            _ => None,
        };
        PushState {
            appointment,
            link_is_new: link_is_new && link.is_some(),
            link,
            parked,
        }
    }
}

/// Locks the appointment row until the transaction ends and returns its
/// `updated_at`, or `None` when it no longer exists: a push that is about to
/// overwrite it with Google's values checks nobody changed it meanwhile.
pub async fn lock_appointment(
    conn: &mut PgConnection,
    id: AppointmentId,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    // Through storable_time, as the row was read: a host's `infinity` must
    // neither panic the decode nor differ from the value the push started with.
    let row = sqlx::query_scalar!(
        "SELECT plansync.storable_time(updated_at) FROM public.appointments \
         WHERE id = $1 FOR UPDATE",
        id.0,
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|t| t.unwrap_or(crate::model::UNSTORABLE_TIME)))
}

/// Forgets the link the claim recorded for an insert that will not be sent
/// (the row is parked as invalid): nothing was sent under its event id, and
/// an unsent link would only make the next push look like a retry.
pub async fn forget_unsent_link(conn: &mut PgConnection, link: i64) -> Result<(), StoreError> {
    sqlx::query!(
        "DELETE FROM plansync.links WHERE id = $1 AND etag IS NULL",
        link
    )
    .execute(conn)
    .await?;
    Ok(())
}
