//! The reads behind `plansync status`.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::StoreError;
use crate::ids::{CalendarId, ConnectionId, JobId, Subject, UserId};

/// One connection as `status` reads it. The JSON columns are built by the
/// statement in the report's own shape (camelCase keys, RFC 3339 times).
#[derive(Debug, Clone)]
pub struct ConnectionRow {
    pub id: ConnectionId,
    pub user_id: UserId,
    pub calendar_id: CalendarId,
    pub region: String,
    pub active: bool,
    pub push_target: bool,
    pub last_pull_at: Option<DateTime<Utc>>,
    pub sync_token_at: Option<DateTime<Utc>>,
    pub needs_reauth: bool,
    pub calendar_gone: bool,
    pub pending_pushes: Option<i64>,
    pub last_error: Option<String>,
    /// `{appointmentId, eventId, winner, kind, losingValues, localUpdatedAt,
    /// remoteUpdatedAt, detectedAt}` of the newest conflict.
    pub last_conflict: Option<serde_json::Value>,
    pub channel_expires_at: Option<DateTime<Utc>>,
    /// `refresh_token` or `delegated`.
    pub auth: String,
    pub subject: Option<Subject>,
    pub failing_since: Option<DateTime<Utc>>,
    /// `[{eventId, reason, seenAt}]`, at most 200.
    pub skipped_events: serde_json::Value,
    /// `[{appointmentId, reason}]`, at most 200.
    pub parked_pushes: serde_json::Value,
}

/// A running job as `status` lists it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RunningJobRow {
    pub job_id: JobId,
    pub kind: String,
    pub connection_id: ConnectionId,
    pub locked_by: Option<String>,
    pub locked_until: Option<DateTime<Utc>>,
}

/// A dead job as `status` lists it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeadJobRow {
    pub job_id: JobId,
    pub kind: String,
    pub connection_id: ConnectionId,
    pub attempts: i32,
    pub last_error: Option<String>,
}

/// Every connection (of one user, when given), oldest first. `pushTarget` is
/// the marked active connection, or else the user's first active one.
pub async fn connections(
    pool: &PgPool,
    user: Option<UserId>,
) -> Result<Vec<ConnectionRow>, StoreError> {
    let rows = sqlx::query_as!(
        ConnectionRow,
        r#"SELECT c.id AS "id: ConnectionId", c.user_id AS "user_id: UserId",
             c.calendar_id AS "calendar_id: CalendarId", c.region, c.active,
             (c.active AND c.id = plansync.push_target(c.user_id)) AS "push_target!",
             c.last_pull_at, c.sync_token_at, c.needs_reauth, c.calendar_gone,
             (SELECT count(*) FROM plansync.jobs j WHERE j.connection_id = c.id
                 AND j.kind = 'push' AND j.state IN ('queued', 'running')) AS pending_pushes,
             c.last_error,
             (SELECT json_build_object('appointmentId', k.appointment_id, 'eventId', k.event_id,
                  'winner', k.winner, 'kind', k.kind, 'losingValues', k.losing_values,
                  'localUpdatedAt', to_char(k.local_updated_at AT TIME ZONE 'UTC',
                      'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
                  'remoteUpdatedAt', to_char(k.remote_updated_at AT TIME ZONE 'UTC',
                      'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
                  'detectedAt', to_char(k.detected_at AT TIME ZONE 'UTC',
                      'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'))
              FROM plansync.conflicts k WHERE k.connection_id = c.id
              ORDER BY k.id DESC LIMIT 1) AS last_conflict,
             (SELECT max(ch.expires_at) FROM plansync.channels ch
              WHERE ch.connection_id = c.id AND ch.state = 'live' AND ch.retired_at IS NULL
                AND ch.expires_at > now()) AS channel_expires_at,
             CASE WHEN c.subject IS NULL THEN 'refresh_token' ELSE 'delegated' END AS "auth!",
             c.subject AS "subject: Subject",
             c.failing_since,
             (SELECT COALESCE(json_agg(json_build_object('eventId', s.event_id,
                  'reason', s.reason, 'seenAt', to_char(s.last_seen_at AT TIME ZONE 'UTC',
                      'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'))
                  ORDER BY s.last_seen_at DESC, s.event_key), '[]'::json)
              FROM (SELECT * FROM plansync.skipped_events x WHERE x.connection_id = c.id
                    ORDER BY x.last_seen_at DESC, x.event_key LIMIT 200) s) AS "skipped_events!",
             (SELECT COALESCE(json_agg(json_build_object('appointmentId', p.appointment_id,
                  'reason', p.reason) ORDER BY p.appointment_id), '[]'::json)
              FROM (SELECT * FROM plansync.parked_pushes x WHERE x.connection_id = c.id
                    ORDER BY x.appointment_id LIMIT 200) p) AS "parked_pushes!"
         FROM plansync.connections c
         WHERE $1::BIGINT IS NULL OR c.user_id = $1
         ORDER BY c.id"#,
        user.map(|u| u.0),
    )
    .fetch_all(pool)
    .await?;
    Ok(rows)
}
