//! Conflict records: every losing version the worker overwrote.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::StoreError;
use crate::ids::{AppointmentId, ConnectionId, EventId};

/// Which side's version survived a conflict (column `winner`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Winner {
    Google,
    Local,
}

/// What the losing side did (column `kind`): edit vs edit, or an edit that a
/// delete beat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictKind {
    Edit,
    Delete,
}

// The one mapping of both to their columns' text (and metric labels); the
// table's CHECK constraints hold the same words.
impl Winner {
    pub const ALL: [Winner; 2] = [Winner::Google, Winner::Local];

    pub const fn as_str(self) -> &'static str {
        match self {
            Winner::Google => "google",
            Winner::Local => "local",
        }
    }
}

impl ConflictKind {
    pub const ALL: [ConflictKind; 2] = [ConflictKind::Edit, ConflictKind::Delete];

    pub const fn as_str(self) -> &'static str {
        match self {
            ConflictKind::Edit => "edit",
            ConflictKind::Delete => "delete",
        }
    }
}

#[derive(Debug, Clone)]
pub struct NewConflict<'a> {
    pub appointment_id: AppointmentId,
    pub event_id: &'a EventId,
    pub winner: Winner,
    pub kind: ConflictKind,
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
    let winner: Vec<&str> = items.iter().map(|c| c.winner.as_str()).collect();
    let kind: Vec<&str> = items.iter().map(|c| c.kind.as_str()).collect();
    let losing: Vec<Option<serde_json::Value>> =
        items.iter().map(|c| c.losing_values.clone()).collect();
    let local: Vec<Option<DateTime<Utc>>> = items.iter().map(|c| c.local_updated_at).collect();
    let remote: Vec<Option<DateTime<Utc>>> = items.iter().map(|c| c.remote_updated_at).collect();
    sqlx::query!(
        "INSERT INTO plansync.conflicts (connection_id, appointment_id, event_id, winner, kind, \
             losing_values, local_updated_at, remote_updated_at) \
         SELECT $1, * FROM UNNEST($2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], \
             $6::JSONB[], $7::TIMESTAMPTZ[], $8::TIMESTAMPTZ[])",
        connection.0,
        &appointment as &[AppointmentId],
        &event as &[&str],
        &winner as &[&str],
        &kind as &[&str],
        &losing as &[Option<serde_json::Value>],
        &local as &[Option<DateTime<Utc>>],
        &remote as &[Option<DateTime<Utc>>],
    )
    .execute(conn)
    .await?;
    // Counted when written; a rolled-back transaction over-counts, which a
    // counter of "conflicts seen" can live with.
    for c in items {
        metrics::counter!(
            crate::metrics::CONFLICTS,
            "winner" => c.winner.as_str(),
            "kind" => c.kind.as_str()
        )
        .increment(1);
    }
    Ok(())
}
