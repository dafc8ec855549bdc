//! Conflict records: every losing version the worker overwrote.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::StoreError;
use crate::ids::{AppointmentId, ConnectionId, EventId};

#[derive(Debug, Clone)]
pub struct NewConflict<'a> {
    pub appointment_id: AppointmentId,
    pub event_id: &'a EventId,
    /// `google` or `local`.
    pub winner: &'static str,
    /// `edit` or `delete`.
    pub kind: &'static str,
    pub losing_values: Option<serde_json::Value>,
    pub local_updated_at: Option<DateTime<Utc>>,
    pub remote_updated_at: Option<DateTime<Utc>>,
}

pub async fn insert(
    conn: &mut PgConnection,
    connection: ConnectionId,
    items: &[NewConflict<'_>],
) -> Result<(), StoreError> {
    if items.is_empty() {
        return Ok(());
    }
    let appointment: Vec<AppointmentId> = items.iter().map(|c| c.appointment_id).collect();
    let event: Vec<&str> = items.iter().map(|c| c.event_id.as_str()).collect();
    let winner: Vec<&str> = items.iter().map(|c| c.winner).collect();
    let kind: Vec<&str> = items.iter().map(|c| c.kind).collect();
    let losing: Vec<Option<serde_json::Value>> =
        items.iter().map(|c| c.losing_values.clone()).collect();
    let local: Vec<Option<DateTime<Utc>>> = items.iter().map(|c| c.local_updated_at).collect();
    let remote: Vec<Option<DateTime<Utc>>> = items.iter().map(|c| c.remote_updated_at).collect();
    sqlx::query(
        "INSERT INTO plansync.conflicts (connection_id, appointment_id, event_id, winner, kind, \
             losing_values, local_updated_at, remote_updated_at) \
         SELECT $1, * FROM UNNEST($2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], \
             $6::JSONB[], $7::TIMESTAMPTZ[], $8::TIMESTAMPTZ[])",
    )
    .bind(connection)
    .bind(&appointment)
    .bind(&event)
    .bind(&winner)
    .bind(&kind)
    .bind(&losing)
    .bind(&local)
    .bind(&remote)
    .execute(conn)
    .await?;
    // Counted when written; a rolled-back transaction over-counts, which a
    // counter of "conflicts seen" can live with.
    for c in items {
        metrics::counter!(crate::worker::metric::CONFLICTS, "winner" => c.winner, "kind" => c.kind)
            .increment(1);
    }
    Ok(())
}
