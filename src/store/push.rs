//! What a push job reads and records: one appointment (which the host may have
//! deleted), its link (which may not exist yet), and the insert it is about
//! to send.
//!
//! A push records an insert's event id in a link with no etag *before* the
//! call and commits it, so a retry after a lost answer sends the same id and
//! Google's 409 tells it the event exists; the link's etag is filled in when
//! the insert is confirmed. The event id itself is built by the sync code
//! from [`event_id_salt`] and [`next_incarnation`].

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::appointments::{maybe_appointment, AppointmentRow};
use super::StoreError;
use crate::ids::{AppointmentId, ConnectionId, Etag, EventId, UserId};

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
}

/// The appointment (absent when the host deleted it) and its link (absent
/// when it was never pushed, on any connection).
pub async fn load(conn: &mut PgConnection, id: AppointmentId) -> Result<PushState, StoreError> {
    let row = sqlx::query!(
        r#"SELECT a.user_id AS "user_id?: UserId", a.summary AS "summary?",
             a.description AS "description?", a.location AS "location?",
             plansync.storable_time(a.start_at) AS "start_at?",
             plansync.storable_time(a.end_at) AS "end_at?",
             a.start_time_zone AS "start_time_zone?", a.end_time_zone AS "end_time_zone?",
             a.all_day AS "all_day?",
             plansync.storable_time(a.created_at) AS "created_at?",
             plansync.storable_time(a.updated_at) AS "updated_at?",
             l.id AS "link_id?", l.connection_id AS "link_connection?: ConnectionId",
             l.event_id AS "event_id?: EventId", l.etag AS "etag?: Etag",
             l.remote_updated_at AS "remote_updated_at?",
             EXISTS (SELECT 1 FROM plansync.parked_pushes p WHERE p.appointment_id = k.id)
                 AS "parked!"
         FROM (SELECT $1::BIGINT AS id) k
         LEFT JOIN public.appointments a ON a.id = k.id
         LEFT JOIN plansync.links l ON l.appointment_id = k.id"#,
        id.0,
    )
    .fetch_one(conn)
    .await?;
    let (link_id, link_connection, event_id, etag, remote_updated_at, parked) = (
        row.link_id,
        row.link_connection,
        row.event_id,
        row.etag,
        row.remote_updated_at,
        row.parked,
    );
    let appointment = maybe_appointment!(row).into_row(id);
    let link = match (link_id, link_connection, event_id) {
        (Some(id), Some(connection_id), Some(event_id)) => Some(PushLink {
            id,
            connection_id,
            event_id,
            etag,
            remote_updated_at,
        }),
        _ => None,
    };
    Ok(PushState {
        appointment,
        link,
        parked,
    })
}

/// This deployment's event-id salt (generated once by the migration).
pub async fn event_id_salt(conn: &mut PgConnection) -> Result<String, StoreError> {
    Ok(
        sqlx::query_scalar!("SELECT event_id_salt FROM plansync.deployment")
            .fetch_one(conn)
            .await?,
    )
}

/// A number never drawn before, for the next event id.
pub async fn next_incarnation(conn: &mut PgConnection) -> Result<i64, StoreError> {
    Ok(
        sqlx::query_scalar!(r#"SELECT nextval('plansync.event_incarnation') AS "incarnation!""#)
            .fetch_one(conn)
            .await?,
    )
}

/// Records that `appointment` is about to be inserted on `connection` as
/// `event_id`: a link without etag. Returns the link.
pub async fn record_insert(
    conn: &mut PgConnection,
    connection: ConnectionId,
    appointment: AppointmentId,
    event_id: &EventId,
) -> Result<PushLink, StoreError> {
    let id = sqlx::query_scalar!(
        "INSERT INTO plansync.links (connection_id, appointment_id, event_id) \
         VALUES ($1, $2, $3) RETURNING id",
        connection.0,
        appointment.0,
        event_id.as_str(),
    )
    .fetch_one(conn)
    .await?;
    Ok(PushLink {
        id,
        connection_id: connection,
        event_id: event_id.clone(),
        etag: None,
        remote_updated_at: None,
    })
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
