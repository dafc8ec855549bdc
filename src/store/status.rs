//! The reads behind `plansync status`.

use sqlx::PgPool;

use super::StoreError;
use crate::ids::UserId;
use crate::status::ConnectionStatus;

/// Every connection (of one user, when given), oldest first. `pushTarget` is
/// the marked active connection, or else the user's first active one.
pub async fn connections(
    pool: &PgPool,
    user: Option<UserId>,
) -> Result<Vec<ConnectionStatus>, StoreError> {
    let rows = sqlx::query_as::<_, ConnectionStatus>(
        "SELECT c.id, c.user_id, c.calendar_id, c.region, c.active, \
             (c.active AND c.id = plansync.push_target(c.user_id)) AS push_target, \
             c.last_pull_at, c.sync_token_at, c.needs_reauth, c.calendar_gone, \
             (SELECT count(*) FROM plansync.jobs j WHERE j.connection_id = c.id \
                 AND j.kind = 'push' AND j.state IN ('queued', 'running')) AS pending_pushes, c.last_error, \
             (SELECT json_build_object('appointmentId', k.appointment_id, 'eventId', k.event_id, \
                  'winner', k.winner, 'kind', k.kind, 'losingValues', k.losing_values, \
                  'localUpdatedAt', to_char(k.local_updated_at AT TIME ZONE 'UTC', \
                      'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), \
                  'remoteUpdatedAt', to_char(k.remote_updated_at AT TIME ZONE 'UTC', \
                      'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), \
                  'detectedAt', to_char(k.detected_at AT TIME ZONE 'UTC', \
                      'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')) \
              FROM plansync.conflicts k WHERE k.connection_id = c.id \
              ORDER BY k.id DESC LIMIT 1) AS last_conflict, \
             (SELECT max(ch.expires_at) FROM plansync.channels ch \
              WHERE ch.connection_id = c.id AND ch.state = 'live' AND ch.retired_at IS NULL \
                AND ch.expires_at > now()) AS channel_expires_at, \
             CASE WHEN c.subject IS NULL THEN 'refresh_token' ELSE 'delegated' END AS auth, \
             c.subject, \
             c.failing_since, \
             (SELECT COALESCE(json_agg(json_build_object('eventId', s.event_id, \
                  'reason', s.reason, 'seenAt', to_char(s.last_seen_at AT TIME ZONE 'UTC', \
                      'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')) \
                  ORDER BY s.last_seen_at DESC, s.event_key), '[]'::json) \
              FROM (SELECT * FROM plansync.skipped_events x WHERE x.connection_id = c.id \
                    ORDER BY x.last_seen_at DESC, x.event_key LIMIT 200) s) AS skipped_events, \
             (SELECT COALESCE(json_agg(json_build_object('appointmentId', p.appointment_id, \
                  'reason', p.reason) ORDER BY p.appointment_id), '[]'::json) \
              FROM (SELECT * FROM plansync.parked_pushes x WHERE x.connection_id = c.id \
                    ORDER BY x.appointment_id LIMIT 200) p) AS parked_pushes \
         FROM plansync.connections c \
         WHERE $1::BIGINT IS NULL OR c.user_id = $1 \
         ORDER BY c.id",
    )
    .bind(user)
    .fetch_all(pool)
    .await?;
    Ok(rows)
}
