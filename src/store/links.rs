//! Links between appointments and Google events, per connection.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::StoreError;
use crate::ids::{AppointmentId, ConnectionId, Etag, UserId};

/// Draws the generation a full sync stamps on the links it sees.
pub async fn next_generation(conn: &mut PgConnection) -> Result<i64, StoreError> {
    Ok(
        sqlx::query_scalar!(r#"SELECT nextval('plansync.sync_generation') AS "generation!""#)
            .fetch_one(conn)
            .await?,
    )
}

/// A link's new knowledge of its event.
#[derive(Debug, Clone)]
pub struct LinkRefresh<'a> {
    pub link_id: i64,
    pub etag: &'a Etag,
    pub remote_updated_at: DateTime<Utc>,
}

/// Stores new etags (and, in a full sync, the generation) in one statement.
pub async fn refresh(
    conn: &mut PgConnection,
    generation: Option<i64>,
    items: &[LinkRefresh<'_>],
) -> Result<(), StoreError> {
    if items.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = items.iter().map(|i| i.link_id).collect();
    let etags: Vec<&str> = items.iter().map(|i| i.etag.as_str()).collect();
    let updated: Vec<DateTime<Utc>> = items.iter().map(|i| i.remote_updated_at).collect();
    sqlx::query!(
        "UPDATE plansync.links l SET etag = t.etag, remote_updated_at = t.updated, \
             seen_generation = COALESCE($4, l.seen_generation), updated_at = now() \
         FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::TIMESTAMPTZ[]) AS t(id, etag, updated) \
         WHERE l.id = t.id",
        &ids,
        &etags as &[&str],
        &updated,
        generation,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Stamps links a full sync saw unchanged.
pub async fn mark_seen(
    conn: &mut PgConnection,
    generation: i64,
    link_ids: &[i64],
) -> Result<(), StoreError> {
    if link_ids.is_empty() {
        return Ok(());
    }
    sqlx::query!(
        "UPDATE plansync.links SET seen_generation = $2 WHERE id = ANY($1)",
        link_ids,
        generation,
    )
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn delete(conn: &mut PgConnection, link_ids: &[i64]) -> Result<(), StoreError> {
    if link_ids.is_empty() {
        return Ok(());
    }
    sqlx::query!("DELETE FROM plansync.links WHERE id = ANY($1)", link_ids)
        .execute(conn)
        .await?;
    Ok(())
}

/// The sweep of a completed full sync: deletes the connection's appointments
/// whose events the listing did not show (stamped with another generation)
/// and that end after the listing's `time_min`, with their links. Returns
/// the deleted appointments. A link without etag is a push's insert not yet
/// confirmed (its event may not exist yet): never swept.
pub async fn sweep(
    conn: &mut PgConnection,
    connection: ConnectionId,
    generation: i64,
    time_min: DateTime<Utc>,
) -> Result<Vec<(AppointmentId, UserId)>, StoreError> {
    let rows = sqlx::query!(
        r#"WITH gone AS (
             SELECT l.id AS link_id, l.appointment_id FROM plansync.links l
             JOIN public.appointments a ON a.id = l.appointment_id
             WHERE l.connection_id = $1 AND l.seen_generation IS DISTINCT FROM $2
               AND a.end_at > $3 AND l.etag IS NOT NULL),
         unlinked AS (DELETE FROM plansync.links WHERE id IN (SELECT link_id FROM gone))
         DELETE FROM public.appointments WHERE id IN (SELECT appointment_id FROM gone)
         RETURNING id AS "id: AppointmentId", user_id AS "user_id: UserId""#,
        connection.0,
        generation,
        time_min,
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.id, r.user_id)).collect())
}
