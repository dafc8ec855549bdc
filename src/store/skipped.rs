//! Events set aside by pulls (`plansync.skipped_events`) and pushes parked
//! before sending (`plansync.parked_pushes`).
//!
//! A set-aside event is recorded per connection under the id it was listed
//! with (cut for display, `''` when it had none), with its reason and when it
//! was first and last seen; it is dropped once Google lists it again in a form
//! we can import (or cancelled). Both kinds are shown by `status`.

use sqlx::PgConnection;

use super::StoreError;
use crate::ids::{AppointmentId, ConnectionId};

/// One set-aside event to record.
#[derive(Debug, Clone)]
pub struct Skip<'a> {
    pub event_id: Option<&'a str>,
    pub reason: &'a str,
}

/// In one statement: forgets the set-aside records of `resolved` (event ids in
/// their recorded form, read fine this time) and records `skipped` (the last
/// reason per event wins).
pub async fn record(
    conn: &mut PgConnection,
    connection: ConnectionId,
    skipped: &[Skip<'_>],
    resolved: &[String],
) -> Result<(), StoreError> {
    let mut by_key: std::collections::BTreeMap<&str, &Skip<'_>> = Default::default();
    for s in skipped {
        by_key.insert(s.event_id.unwrap_or(""), s);
    }
    let keys: Vec<&str> = by_key.keys().copied().collect();
    let ids: Vec<Option<&str>> = by_key.values().map(|s| s.event_id).collect();
    let reasons: Vec<&str> = by_key.values().map(|s| s.reason).collect();
    sqlx::query!(
        "WITH resolved AS ( \
             DELETE FROM plansync.skipped_events \
             WHERE connection_id = $1 AND event_key = ANY($2::TEXT[]) \
               AND event_key <> ALL($3::TEXT[])) \
         INSERT INTO plansync.skipped_events (connection_id, event_key, event_id, reason) \
         SELECT $1, k, i, r FROM UNNEST($3::TEXT[], $4::TEXT[], $5::TEXT[]) AS t(k, i, r) \
         ON CONFLICT (connection_id, event_key) DO UPDATE \
             SET event_id = EXCLUDED.event_id, reason = EXCLUDED.reason, last_seen_at = now()",
        connection.0,
        resolved,
        &keys as &[&str],
        &ids as &[Option<&str>],
        &reasons as &[&str],
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Parks an appointment's push with its reason (replacing an earlier one).
pub async fn park_push(
    conn: &mut PgConnection,
    connection: ConnectionId,
    appointment: AppointmentId,
    reason: &str,
) -> Result<(), StoreError> {
    sqlx::query!(
        "INSERT INTO plansync.parked_pushes (connection_id, appointment_id, reason) \
         VALUES ($1, $2, $3) \
         ON CONFLICT (connection_id, appointment_id) DO UPDATE \
             SET reason = EXCLUDED.reason, parked_at = now()",
        connection.0,
        appointment.0,
        crate::text::error_text(reason),
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Forgets a parked push of the appointment (on any connection): its newer
/// push was sent or had nothing to send.
pub async fn unpark_push(
    conn: &mut PgConnection,
    appointment: AppointmentId,
) -> Result<(), StoreError> {
    sqlx::query!(
        "DELETE FROM plansync.parked_pushes WHERE appointment_id = $1",
        appointment.0
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Forgets the parked pushes of appointments a pull overwrote with Google's
/// values or deleted: nothing of theirs is left to send.
pub async fn unpark_pushes(
    conn: &mut PgConnection,
    appointments: &[AppointmentId],
) -> Result<(), StoreError> {
    if appointments.is_empty() {
        return Ok(());
    }
    sqlx::query!(
        "DELETE FROM plansync.parked_pushes WHERE appointment_id = ANY($1)",
        appointments as &[AppointmentId],
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Forgets a connection's set-aside events not seen since `since`: a full
/// listing that started then no longer shows them.
pub async fn forget_unseen(
    conn: &mut PgConnection,
    connection: ConnectionId,
    since: chrono::DateTime<chrono::Utc>,
) -> Result<(), StoreError> {
    sqlx::query!(
        "DELETE FROM plansync.skipped_events WHERE connection_id = $1 AND last_seen_at < $2",
        connection.0,
        since,
    )
    .execute(conn)
    .await?;
    Ok(())
}
