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
use crate::ids::{CalendarId, ConnectionId, JobId, Subject, UserId};
use crate::store::{self, StoreError};

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    pub connections: Vec<ConnectionStatus>,
    pub queue: QueueStatus,
    pub outbox: OutboxStatus,
    /// Google's request budget and the polling it leaves room for; `null`
    /// until [`QuotaStatus::load`] fills it (the `status` command does).
    pub quota: Option<QuotaStatus>,
}

/// `quota`: the project budget (`PLANSYNC_GOOGLE_QPM`), what the live
/// workers sent in their last minute (from their heartbeats), and the
/// polling interval the scheduler keeps — `PLANSYNC_POLL_INTERVAL_SECS`, or
/// longer when the connections would not fit in the poll share of the budget.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QuotaStatus {
    pub budget_per_min: u32,
    pub used_per_min: i64,
    pub poll_interval_secs: u64,
    /// The configured interval, for comparison (an extension).
    pub configured_poll_interval_secs: u64,
    /// Connections the scheduler polls, in every region (an extension).
    pub polled_connections: i64,
    /// Workers with a heartbeat in the last 30 s (an extension).
    pub live_workers: i64,
}

impl QuotaStatus {
    pub async fn load(
        pool: &PgPool,
        settings: &crate::config::QuotaSettings,
        poll_interval: std::time::Duration,
    ) -> Result<Self, StoreError> {
        let connections = store::jobs::pollable_connections(pool).await?;
        let (used, live) = store::workers::fleet_usage(pool).await?;
        let base = poll_interval.max(std::time::Duration::from_secs(1));
        Ok(QuotaStatus {
            budget_per_min: settings.project_per_min,
            used_per_min: used,
            poll_interval_secs: crate::quota::effective_poll_interval(base, connections, settings)
                .as_secs(),
            configured_poll_interval_secs: base.as_secs(),
            polled_connections: connections,
            live_workers: live,
        })
    }

    /// Whether polling had to stretch beyond the configured interval.
    pub fn stretched(&self) -> bool {
        self.poll_interval_secs > self.configured_poll_interval_secs
    }
}

#[derive(Debug, Clone, Serialize)]
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
    pub last_conflict: Option<serde_json::Value>,
    /// When the connection's live notification channel expires; `null`
    /// without one (polling at `PLANSYNC_POLL_INTERVAL_SECS` then).
    #[serde(with = "timestamp::option")]
    pub channel_expires_at: Option<DateTime<Utc>>,
    /// How the connection authenticates: `refresh_token` or `delegated`.
    pub auth: String,
    /// The Workspace member a delegated connection acts as; `null` otherwise.
    pub subject: Option<Subject>,
    /// Since when the connection's jobs have been failing; `null` when its
    /// last pull succeeded.
    #[serde(with = "timestamp::option")]
    pub failing_since: Option<DateTime<Utc>>,
    /// Events Google listed that could not be read or stored:
    /// `[{eventId, reason, seenAt}]`, most recently seen first (at most 200).
    pub skipped_events: serde_json::Value,
    /// Appointments whose push was refused before sending:
    /// `[{appointmentId, reason}]` (at most 200).
    pub parked_pushes: serde_json::Value,
}

impl From<store::status::ConnectionRow> for ConnectionStatus {
    fn from(row: store::status::ConnectionRow) -> Self {
        ConnectionStatus {
            id: row.id,
            user_id: row.user_id,
            calendar_id: row.calendar_id,
            region: row.region,
            active: row.active,
            push_target: row.push_target,
            last_pull_at: row.last_pull_at,
            sync_token_at: row.sync_token_at,
            needs_reauth: row.needs_reauth,
            calendar_gone: row.calendar_gone,
            pending_pushes: row.pending_pushes,
            last_error: row.last_error,
            last_conflict: row.last_conflict,
            channel_expires_at: row.channel_expires_at,
            auth: row.auth,
            subject: row.subject,
            failing_since: row.failing_since,
            skipped_events: row.skipped_events,
            parked_pushes: row.parked_pushes,
        }
    }
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

#[derive(Debug, Clone, Serialize)]
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

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadJob {
    pub job_id: JobId,
    pub kind: String,
    pub connection_id: ConnectionId,
    pub attempts: i32,
    pub last_error: Option<String>,
}

impl From<store::status::RunningJobRow> for RunningJob {
    fn from(row: store::status::RunningJobRow) -> Self {
        RunningJob {
            job_id: row.job_id,
            kind: row.kind,
            connection_id: row.connection_id,
            locked_by: row.locked_by,
            locked_until: row.locked_until,
        }
    }
}

impl From<store::status::DeadJobRow> for DeadJob {
    fn from(row: store::status::DeadJobRow) -> Self {
        DeadJob {
            job_id: row.job_id,
            kind: row.kind,
            connection_id: row.connection_id,
            attempts: row.attempts,
            last_error: row.last_error,
        }
    }
}

impl QueueStatus {
    pub async fn load(pool: &PgPool, user: Option<UserId>) -> Result<Self, StoreError> {
        let (depth, oldest_due_lag_secs) = store::jobs::depth_and_lag(pool, user).await?;
        Ok(QueueStatus {
            depth,
            oldest_due_lag_secs,
            running: store::jobs::running(pool, user)
                .await?
                .into_iter()
                .map(RunningJob::from)
                .collect(),
            dead: store::jobs::dead(pool, user, DEAD_LISTED)
                .await?
                .into_iter()
                .map(DeadJob::from)
                .collect(),
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
            connections: store::status::connections(pool, user)
                .await?
                .into_iter()
                .map(ConnectionStatus::from)
                .collect(),
            queue: QueueStatus::load(pool, user).await?,
            outbox: OutboxStatus::load(pool, user).await?,
            quota: None,
        })
    }

    /// A human-readable rendering for the terminal (README, "Operations",
    /// explains every column).
    pub fn to_text(&self) -> String {
        self.to_text_at(Utc::now())
    }

    /// [`Self::to_text`] with ages counted up to `now`.
    pub fn to_text_at(&self, now: DateTime<Utc>) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(out, "connections: {}", self.connections.len());
        if !self.connections.is_empty() {
            let mut table = Table::new([
                "ID",
                "USER",
                "CALENDAR",
                "STATE",
                "AUTH",
                "LAST PULL",
                "TOKEN AGE",
                "REAUTH",
                "GONE",
                "CHANNEL",
                "PUSHES",
                "LAST ERROR",
                "LAST CONFLICT",
            ]);
            for c in &self.connections {
                let mut state = Vec::new();
                state.push(if c.active { "active" } else { "inactive" });
                if c.push_target {
                    state.push("push-target");
                }
                let last_error = match (&c.last_error, &c.failing_since) {
                    (None, _) => "-".to_owned(),
                    (Some(err), Some(since)) => {
                        format!("{} (since {})", clip(err, 60), ago(now, *since))
                    }
                    (Some(err), None) => clip(err, 60),
                };
                table.row([
                    c.id.to_string(),
                    c.user_id.to_string(),
                    clip(c.calendar_id.as_str(), 40),
                    state.join(","),
                    match &c.subject {
                        Some(subject) => format!("delegated as {subject}"),
                        None => c.auth.clone(),
                    },
                    c.last_pull_at.map_or("never".to_owned(), |t| ago(now, t)),
                    c.sync_token_at.map_or("-".to_owned(), |t| age(now, t)),
                    yes_no(c.needs_reauth),
                    yes_no(c.calendar_gone),
                    // A live notification channel, or polling.
                    c.channel_expires_at
                        .map_or("poll".to_owned(), |t| format!("live, {} left", age(t, now))),
                    c.pending_pushes.unwrap_or(0).to_string(),
                    last_error,
                    c.last_conflict
                        .as_ref()
                        .map_or("-".to_owned(), |k| conflict_cell(now, k)),
                ]);
            }
            out.push_str(&table.render("  "));
        }
        for c in &self.connections {
            let skipped = ConnectionStatus::count(&c.skipped_events);
            let parked = ConnectionStatus::count(&c.parked_pushes);
            if skipped == 0 && parked == 0 {
                continue;
            }
            let _ = writeln!(out, "  connection {}:", c.id);
            if skipped > 0 {
                let _ = writeln!(out, "      skipped events: {skipped} (see status --json)");
                for s in c.skipped_events.as_array().into_iter().flatten().take(5) {
                    let _ = writeln!(
                        out,
                        "        {}: {}",
                        crate::text::error_text(s["eventId"].as_str().unwrap_or("(no id)")),
                        crate::text::error_text(s["reason"].as_str().unwrap_or(""))
                    );
                }
            }
            if parked > 0 {
                let _ = writeln!(out, "      parked pushes: {parked}");
                for p in c.parked_pushes.as_array().into_iter().flatten().take(5) {
                    let _ = writeln!(
                        out,
                        "        appointment {}: {}",
                        p["appointmentId"],
                        crate::text::error_text(p["reason"].as_str().unwrap_or(""))
                    );
                }
            }
        }
        let q = &self.queue;
        let _ = writeln!(
            out,
            "queue: depth {}, oldest due lag {:.0}s, {} running, {} dead",
            q.depth,
            q.oldest_due_lag_secs,
            q.running.len(),
            q.dead_total
        );
        if !q.running.is_empty() {
            let mut table = Table::new(["RUNNING JOB", "KIND", "CONNECTION", "OWNER", "LEASE"]);
            for r in &q.running {
                table.row([
                    r.job_id.to_string(),
                    r.kind.clone(),
                    r.connection_id.to_string(),
                    r.locked_by.clone().unwrap_or_else(|| "?".to_owned()),
                    r.locked_until.map_or("-".to_owned(), |t| {
                        if t >= now {
                            format!("{} left", age(t, now))
                        } else {
                            format!("expired {}", ago(now, t))
                        }
                    }),
                ]);
            }
            out.push_str(&table.render("  "));
        }
        if !q.dead.is_empty() {
            let mut table = Table::new(["DEAD JOB", "KIND", "CONNECTION", "ATTEMPTS", "ERROR"]);
            for d in &q.dead {
                table.row([
                    d.job_id.to_string(),
                    d.kind.clone(),
                    d.connection_id.to_string(),
                    d.attempts.to_string(),
                    clip(d.last_error.as_deref().unwrap_or("-"), 100),
                ]);
            }
            out.push_str(&table.render("  "));
        }
        let _ = writeln!(
            out,
            "outbox: {} unpublished, oldest {:.1}s",
            self.outbox.backlog, self.outbox.oldest_age_secs
        );
        if let Some(q) = &self.quota {
            let _ = writeln!(
                out,
                "google quota: {} of {} requests/min used by {} live workers; polling every {}s",
                q.used_per_min, q.budget_per_min, q.live_workers, q.poll_interval_secs
            );
            if q.stretched() {
                let _ = writeln!(
                    out,
                    "  polling STRETCHED from {}s: {} connections do not fit in \
                     PLANSYNC_GOOGLE_POLL_SHARE of the budget",
                    q.configured_poll_interval_secs, q.polled_connections
                );
            }
        }
        out
    }
}

/// A plain-text table: columns as wide as their widest cell.
struct Table<const N: usize> {
    rows: Vec<[String; N]>,
}

impl<const N: usize> Table<N> {
    fn new(header: [&str; N]) -> Self {
        Table {
            rows: vec![header.map(str::to_owned)],
        }
    }

    fn row(&mut self, cells: [String; N]) {
        // A cell is one line: control characters from stored errors would
        // break the layout (or the terminal).
        self.rows.push(cells.map(|c| {
            c.chars()
                .map(|ch| if ch.is_control() { ' ' } else { ch })
                .collect()
        }));
    }

    fn render(&self, indent: &str) -> String {
        let mut widths = [0usize; N];
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in &self.rows {
            let mut line = indent.to_owned();
            for (i, cell) in row.iter().enumerate() {
                if i + 1 == N {
                    line.push_str(cell);
                } else {
                    let pad = widths[i] - cell.chars().count();
                    line.push_str(cell);
                    line.extend(std::iter::repeat_n(' ', pad + 2));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

fn yes_no(flag: bool) -> String {
    if flag { "YES" } else { "no" }.to_owned()
}

/// `s`, cut to `max` characters with an ellipsis.
fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut cut: String = s.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

/// How long from `then` to `now`, compactly: `42s`, `5m`, `3h`, `2d`.
fn age(now: DateTime<Utc>, then: DateTime<Utc>) -> String {
    let secs = (now - then).num_seconds().max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

fn ago(now: DateTime<Utc>, then: DateTime<Utc>) -> String {
    format!("{} ago", age(now, then))
}

/// `google won edit, 5m ago` from a `lastConflict` object.
fn conflict_cell(now: DateTime<Utc>, conflict: &serde_json::Value) -> String {
    let winner = conflict["winner"].as_str().unwrap_or("?");
    let kind = conflict["kind"].as_str().unwrap_or("?");
    let when = conflict["detectedAt"]
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map_or(String::new(), |t| {
            format!(", {}", ago(now, t.with_timezone(&Utc)))
        });
    format!("{winner} won {kind}{when}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_human_status_is_one_table_with_every_column() {
        let now = DateTime::parse_from_rfc3339("2026-12-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let minutes = |m: i64| Some(now - chrono::Duration::minutes(m));
        let report = StatusReport {
            connections: vec![ConnectionStatus {
                id: ConnectionId(7),
                user_id: UserId(3),
                calendar_id: CalendarId::from("primary"),
                region: "eu".to_owned(),
                active: true,
                push_target: true,
                last_pull_at: minutes(5),
                sync_token_at: minutes(90),
                needs_reauth: true,
                calendar_gone: false,
                pending_pushes: Some(2),
                last_error: Some("invalid_grant:\nrevoked".to_owned()),
                last_conflict: Some(serde_json::json!({
                    "winner": "google", "kind": "edit", "detectedAt": "2026-12-01T11:57:00.000Z"
                })),
                failing_since: minutes(30),
                channel_expires_at: None,
                skipped_events: serde_json::json!([]),
                parked_pushes: serde_json::json!([]),
                auth: "refresh_token".to_owned(),
                subject: None,
            }],
            queue: QueueStatus {
                depth: 4,
                oldest_due_lag_secs: 12.0,
                running: vec![RunningJob {
                    job_id: JobId(11),
                    kind: crate::job::JobKind::Pull.to_string(),
                    connection_id: ConnectionId(7),
                    locked_by: Some("host-a:42".to_owned()),
                    locked_until: Some(now + chrono::Duration::seconds(40)),
                }],
                dead: vec![DeadJob {
                    job_id: JobId(9),
                    kind: crate::job::JobKind::Push.to_string(),
                    connection_id: ConnectionId(7),
                    attempts: 8,
                    last_error: Some("Google refused the request (400)".to_owned()),
                }],
                dead_total: 1,
            },
            outbox: OutboxStatus::default(),
            quota: None,
        };
        let text = report.to_text_at(now);
        let lines: Vec<&str> = text.lines().collect();
        let header = lines[1];
        for column in [
            "ID",
            "USER",
            "CALENDAR",
            "LAST PULL",
            "TOKEN AGE",
            "REAUTH",
            "GONE",
            "CHANNEL",
            "PUSHES",
            "LAST ERROR",
            "LAST CONFLICT",
        ] {
            assert!(header.contains(column), "{column} missing: {text}");
        }
        let row = lines[2];
        for cell in [
            "7",
            "primary",
            "active,push-target",
            "5m ago",
            "90m",
            "YES",
            "invalid_grant: revoked (since 30m ago)",
            "google won edit, 3m ago",
        ] {
            assert!(row.contains(cell), "{cell:?} missing: {row}");
        }
        // Columns line up: every cell of the row starts under its header.
        let col = header.find("LAST PULL").unwrap();
        assert_eq!(&row[col..col + 6], "5m ago");
        assert!(text.contains("queue: depth 4, oldest due lag 12s, 1 running, 1 dead"));
        assert!(
            text.contains("host-a:42") && text.contains("40s left"),
            "{text}"
        );
        assert!(text.contains("Google refused the request (400)"), "{text}");
    }
}
