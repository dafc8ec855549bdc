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
use crate::ids::{CalendarId, ConnectionId, UserId};
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
    #[sqlx(skip)]
    pub last_conflict: Option<serde_json::Value>,
}

/// `null` fields until the job queue lands.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueStatus {
    pub depth: Option<i64>,
    pub oldest_due_lag_secs: Option<f64>,
    pub running: Option<Vec<serde_json::Value>>,
    pub dead: Option<Vec<serde_json::Value>>,
}

/// Deltas written but not yet published to Redis.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OutboxStatus {
    pub backlog: Option<i64>,
    /// Age of the oldest unpublished delta; 0 when there is none.
    pub oldest_age_secs: Option<f64>,
}

impl OutboxStatus {
    async fn load(pool: &PgPool, user: Option<UserId>) -> Result<Self, StoreError> {
        let (backlog, oldest, now) = store::outbox::backlog(pool, user).await?;
        let age = oldest.map_or(0.0, |t| (now - t).num_milliseconds().max(0) as f64 / 1000.0);
        Ok(OutboxStatus {
            backlog: Some(backlog),
            oldest_age_secs: Some(age),
        })
    }
}

impl StatusReport {
    pub async fn load(pool: &PgPool, user: Option<UserId>) -> Result<Self, StoreError> {
        Ok(StatusReport {
            connections: store::status::connections(pool, user).await?,
            queue: QueueStatus::default(),
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
            if let Some(err) = &c.last_error {
                let _ = writeln!(out, "      last error: {err}");
            }
        }
        if let (Some(backlog), Some(age)) = (self.outbox.backlog, self.outbox.oldest_age_secs) {
            let _ = writeln!(out, "outbox: {backlog} unpublished, oldest {age:.1}s");
        }
        out
    }
}
