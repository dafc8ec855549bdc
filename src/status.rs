//! What `plansync status` reports: the connections, the queue and the outbox.
//!
//! [`StatusReport`] serializes to the `status --json` object of DESIGN.md,
//! which is extended but never reshaped. A field whose part of the worker has
//! not landed yet is `null`, never a made-up value. No token, plaintext or
//! encrypted, is ever part of the report.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::deltas::timestamp;
use crate::ids::{CalendarId, ConnectionId, JobId, UserId};
use crate::store::{self, StoreError};

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    pub connections: Vec<ConnectionStatus>,
    pub queue: QueueStatus,
    pub outbox: OutboxStatus,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionStatus {
    pub id: ConnectionId,
    pub user_id: UserId,
    pub calendar_id: CalendarId,
    pub region: String,
    pub active: bool,
    pub push_target: bool,
    #[serde(with = "timestamp::option")]
    pub last_pull_at: Option<DateTime<Utc>>,
    #[serde(with = "timestamp::option")]
    pub sync_token_at: Option<DateTime<Utc>>,
    pub needs_reauth: bool,
    pub calendar_gone: bool,
    pub pending_pushes: Option<i64>,
    pub last_error: Option<String>,
    /// The connection's most recent conflict: which side won, what kind, the
    /// losing values and when.
    pub last_conflict: Option<sqlx::types::Json<serde_json::Value>>,
    /// When the connection's live notification channel expires; `null`
    /// without one (polling at `PLANSYNC_POLL_INTERVAL_SECS` then).
    #[serde(with = "timestamp::option")]
    pub channel_expires_at: Option<DateTime<Utc>>,
    /// Since when the connection's jobs have been failing; `null` when its
    /// last pull succeeded.
    #[serde(with = "timestamp::option")]
    pub failing_since: Option<DateTime<Utc>>,
    /// Events Google listed that could not be read or stored:
    /// `[{eventId, reason, seenAt}]`, most recently seen first (at most 200).
    pub skipped_events: sqlx::types::Json<serde_json::Value>,
    /// Appointments whose push was refused before sending:
    /// `[{appointmentId, reason}]` (at most 200).
    pub parked_pushes: sqlx::types::Json<serde_json::Value>,
}

impl ConnectionStatus {
    fn count(list: &serde_json::Value) -> usize {
        list.as_array().map_or(0, Vec::len)
    }
}

/// The job queue. `depth` counts queued jobs (due or not, claimable or
/// waiting for their connection to be usable); `oldestDueLagSecs` is how long
/// the oldest due job a worker could claim right now has waited past its
/// `run_at`, 0 when there is none.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueStatus {
    pub depth: i64,
    pub oldest_due_lag_secs: f64,
    pub running: Vec<RunningJob>,
    /// The newest dead jobs (at most [`DEAD_LISTED`]).
    pub dead: Vec<DeadJob>,
    /// How many dead jobs there are in all.
    pub dead_total: i64,
}

/// How many dead jobs `status` lists.
pub const DEAD_LISTED: i64 = 50;

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct RunningJob {
    pub job_id: JobId,
    pub kind: String,
    pub connection_id: ConnectionId,
    /// The worker's host and pid.
    pub locked_by: Option<String>,
    #[serde(with = "timestamp::option")]
    pub locked_until: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct DeadJob {
    pub job_id: JobId,
    pub kind: String,
    pub connection_id: ConnectionId,
    pub attempts: i32,
    pub last_error: Option<String>,
}

impl QueueStatus {
    pub async fn load(pool: &PgPool, user: Option<UserId>) -> Result<Self, StoreError> {
        let (depth, oldest_due_lag_secs) = store::jobs::depth_and_lag(pool, user).await?;
        Ok(QueueStatus {
            depth,
            oldest_due_lag_secs,
            running: store::jobs::running(pool, user).await?,
            dead: store::jobs::dead(pool, user, DEAD_LISTED).await?,
            dead_total: store::jobs::dead_total(pool, user).await?,
        })
    }
}

/// Deltas written but not yet published to Redis.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OutboxStatus {
    pub backlog: i64,
    /// Age of the oldest unpublished delta; 0 when there is none.
    pub oldest_age_secs: f64,
}

impl OutboxStatus {
    async fn load(pool: &PgPool, user: Option<UserId>) -> Result<Self, StoreError> {
        let (backlog, oldest, now) = store::outbox::backlog(pool, user).await?;
        let age = oldest.map_or(0.0, |t| (now - t).num_milliseconds().max(0) as f64 / 1000.0);
        Ok(OutboxStatus {
            backlog,
            oldest_age_secs: age,
        })
    }
}

impl StatusReport {
    pub async fn load(pool: &PgPool, user: Option<UserId>) -> Result<Self, StoreError> {
        Ok(StatusReport {
            connections: store::status::connections(pool, user).await?,
            queue: QueueStatus::load(pool, user).await?,
            outbox: OutboxStatus::load(pool, user).await?,
        })
    }

    /// A human-readable rendering for the terminal.
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let when =
            |t: &Option<DateTime<Utc>>| t.map_or("never".to_owned(), |t| timestamp::format(&t));
        let _ = writeln!(out, "connections: {}", self.connections.len());
        for c in &self.connections {
            let mut flags = Vec::new();
            if !c.active {
                flags.push("inactive");
            }
            if c.push_target {
                flags.push("push-target");
            }
            if c.needs_reauth {
                flags.push("NEEDS-REAUTH");
            }
            if c.calendar_gone {
                flags.push("CALENDAR-GONE");
            }
            let _ = writeln!(
                out,
                "  #{} user {} calendar {} region {} [{}] last pull {}",
                c.id,
                c.user_id,
                c.calendar_id,
                c.region,
                flags.join(","),
                when(&c.last_pull_at)
            );
            let _ = writeln!(
                out,
                "      notification channel: {}",
                c.channel_expires_at
                    .map_or("none (polling)".to_owned(), |t| format!(
                        "live until {}",
                        timestamp::format(&t)
                    ))
            );
            if let Some(err) = &c.last_error {
                match &c.failing_since {
                    Some(since) => {
                        let _ = writeln!(
                            out,
                            "      last error (failing since {}): {err}",
                            timestamp::format(since)
                        );
                    }
                    None => {
                        let _ = writeln!(out, "      last error: {err}");
                    }
                }
            }
            let skipped = ConnectionStatus::count(&c.skipped_events.0);
            if skipped > 0 {
                let _ = writeln!(out, "      skipped events: {skipped} (see status --json)");
                for s in c.skipped_events.0.as_array().into_iter().flatten().take(5) {
                    let _ = writeln!(
                        out,
                        "        {}: {}",
                        s["eventId"].as_str().unwrap_or("(no id)"),
                        s["reason"].as_str().unwrap_or("")
                    );
                }
            }
            let parked = ConnectionStatus::count(&c.parked_pushes.0);
            if parked > 0 {
                let _ = writeln!(out, "      parked pushes: {parked}");
                for p in c.parked_pushes.0.as_array().into_iter().flatten().take(5) {
                    let _ = writeln!(
                        out,
                        "        appointment {}: {}",
                        p["appointmentId"],
                        p["reason"].as_str().unwrap_or("")
                    );
                }
            }
        }
        let q = &self.queue;
        let _ = writeln!(
            out,
            "queue: {} queued, oldest due lag {:.0}s, {} running, {} dead",
            q.depth,
            q.oldest_due_lag_secs,
            q.running.len(),
            q.dead_total
        );
        for r in &q.running {
            let _ = writeln!(
                out,
                "  running job {} {} connection {} by {} until {}",
                r.job_id,
                r.kind,
                r.connection_id,
                r.locked_by.as_deref().unwrap_or("?"),
                when(&r.locked_until)
            );
        }
        for d in &q.dead {
            let _ = writeln!(
                out,
                "  dead job {} {} connection {} after {} attempts: {}",
                d.job_id,
                d.kind,
                d.connection_id,
                d.attempts,
                d.last_error.as_deref().unwrap_or("")
            );
        }
        let _ = writeln!(
            out,
            "outbox: {} unpublished, oldest {:.1}s",
            self.outbox.backlog, self.outbox.oldest_age_secs
        );
        out
    }
}
