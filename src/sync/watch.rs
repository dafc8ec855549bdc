//! The `watch` job: one connection's Google notification channels
//! (`events.watch`, `channels.stop`) brought to what they should be.
//!
//! **What should be.** With `PLANSYNC_WEBHOOK_URL` set, an active, usable
//! connection that has completed its first sync (and has no full resync
//! pending, e.g. right after a re-connect) has exactly one *fresh* channel
//! addressed to that URL: live, not retired, with more than a third of the
//! lifetime Google granted left. Every other channel is stopped.
//!
//! **A run** reads the connection's unstopped channels, then:
//! 1. when a channel is wanted and none is fresh, opens one: a random
//!    [`ChannelId`] and [`ChannelToken`] are *recorded first* (state
//!    `opening`, token hashed, in a transaction fenced by the claim), then
//!    `events.watch` is called, then the channel is marked live and every
//!    other channel of the connection retired — in that order, so a worker
//!    killed at any point leaves a row the retry finds;
//! 2. stops every other unstopped channel (retired ones, the stale `opening`
//!    row of a killed or failed earlier run, channels at an old address, all
//!    of them when the connection is disconnected or the URL unset).
//!    `channels.stop` needs the channel's resource id; an `opening` row never
//!    got one, so the resource id Google gave for the same calendar is used
//!    (Google's resource id names the watched calendar, not the channel). A
//!    channel Google does not know (404) counts as stopped;
//! 3. completes, in one fenced transaction with: forgetting the refresh token
//!    of a disconnected connection whose channels are all stopped, and
//!    scheduling the next run for when the fresh channel stops being fresh
//!    (its renewal). Opening before stopping keeps a live channel at every
//!    moment; renewing at a third of the lifetime keeps short lifetimes from
//!    churning (at most one renewal per lifetime).
//!
//! Google errors go through [`google_failure`] like every sync job's: rate
//! limits snooze, transient failures retry (the `opening` row stays for the
//! retry to stop), a lost grant blocks the connection. For a disconnected
//! connection a lost grant or gone calendar ends the stop instead: the
//! channel is given up (it expires by itself) and the token forgotten.
//! Nothing here holds a database connection while Google is called.

use crate::channel::{ChannelId, ChannelToken};
use crate::google::{CalendarClient, GoogleError, NextStep, WatchRequest};
use crate::queue::{Done, Job, JobContext, JobError};
use crate::store::channels::{self, ChannelRow};
use crate::store::connections::SyncConnection;

use super::{google_failure, SyncDeps};

/// Metric names (Prometheus) of channel upkeep.
pub mod metric {
    pub const OPENED: &str = "plansync_channels_opened_total";
    pub const STOPPED: &str = "plansync_channels_stopped_total";

    pub fn describe() {
        metrics::describe_counter!(OPENED, "Notification channels opened (events.watch)");
        metrics::describe_counter!(
            STOPPED,
            "Notification channels stopped, by outcome (stopped, unknown to Google, given up)"
        );
    }
}

/// Runs a `watch` job.
pub async fn run(deps: &SyncDeps, ctx: &JobContext, job: &Job) -> Result<Done, JobError> {
    let pool = &ctx.pool;
    let connection = &job.prelude.connection;
    let state = {
        let mut conn = pool.acquire().await?;
        channels::watch_state(&mut conn, job.connection).await?
    };
    let wanted = deps.webhook_url.as_deref().filter(|_| {
        connection.active && !connection.needs_reauth && !connection.calendar_gone && state.synced
    });
    let keep = wanted.and_then(|address| {
        state
            .channels
            .iter()
            .rev()
            .find(|c| c.fresh && c.address == address)
            .map(|c| c.id)
    });
    let mut to_stop: Vec<ChannelRow> = state
        .channels
        .iter()
        .filter(|c| Some(c.id) != keep)
        .cloned()
        .collect();
    let open_at = wanted.filter(|_| keep.is_none());
    if to_stop.is_empty() && open_at.is_none() {
        return finish(ctx, job, wanted.is_some()).await;
    }

    let client = deps.client(connection)?;
    let mut resource_id = state.known_resource_id.clone();
    // Open first, stop after: the connection is never without a live channel.
    if let Some(address) = open_at {
        if let Some(opened) = open(ctx, job, connection, &client, address).await? {
            resource_id = Some(opened.resource_id.clone());
            if !opened.still_wanted {
                to_stop.push(opened.row);
            }
        }
    }
    for channel in &to_stop {
        if ctx.cancel.is_cancelled() {
            return Err(JobError::LeaseLost);
        }
        stop(
            ctx,
            job,
            connection,
            &client,
            channel,
            resource_id.as_deref(),
        )
        .await?;
    }
    finish(ctx, job, wanted.is_some()).await
}

struct Opened {
    resource_id: String,
    /// False when a disconnect or re-connect retired it while Google answered.
    still_wanted: bool,
    row: ChannelRow,
}

/// Records, opens, and marks live one channel. `None` when the connection
/// was disconnected before the channel could be recorded (nothing opened).
async fn open(
    ctx: &JobContext,
    job: &Job,
    connection: &SyncConnection,
    client: &CalendarClient,
    address: &str,
) -> Result<Option<Opened>, JobError> {
    let id = ChannelId::random();
    let token = ChannelToken::generate();
    let mut tx = crate::store::begin(&ctx.pool).await?;
    job.fence(&mut tx).await?;
    if !channels::record_opening(&mut tx, connection.id, id, &token.hash(), address).await? {
        return Ok(None);
    }
    tx.commit().await?;

    let request = WatchRequest {
        channel_id: id.to_string(),
        address: address.to_owned(),
        token: Some(token.expose_secret().to_owned()),
        ttl: None,
    };
    let opened = match client.watch(&connection.calendar_id, &request).await {
        Ok(opened) => opened,
        // The `opening` row stays: whichever run comes next stops it, in case
        // Google opened the channel and only its answer was lost.
        Err(err) => return Err(google_failure(&ctx.pool, job, connection.id, err).await),
    };
    let mut tx = crate::store::begin(&ctx.pool).await?;
    job.fence(&mut tx).await?;
    let still_wanted = channels::mark_live(
        &mut tx,
        connection.id,
        id,
        &opened.resource_id,
        opened.expiration,
    )
    .await?;
    tx.commit().await?;
    metrics::counter!(metric::OPENED).increment(1);
    tracing::info!(
        channel = %id,
        expires_at = ?opened.expiration,
        "notification channel opened"
    );
    Ok(Some(Opened {
        resource_id: opened.resource_id.clone(),
        still_wanted,
        row: ChannelRow {
            id,
            state: "live".to_owned(),
            address: address.to_owned(),
            resource_id: Some(opened.resource_id),
            expires_at: opened.expiration,
            retired: true,
            fresh: false,
        },
    }))
}

/// How a stop ended.
enum StopOutcome {
    Done,
    /// Google no longer knew it (expired, never opened, stopped before).
    Unknown,
    GivenUp(String),
}

async fn stop(
    ctx: &JobContext,
    job: &Job,
    connection: &SyncConnection,
    client: &CalendarClient,
    channel: &ChannelRow,
    calendar_resource_id: Option<&str>,
) -> Result<(), JobError> {
    let outcome = match channel.resource_id.as_deref().or(calendar_resource_id) {
        None => StopOutcome::GivenUp(
            "never confirmed by Google and no resource id known to stop it; it expires by itself"
                .to_owned(),
        ),
        Some(resource_id) => match client
            .stop_channel(&channel.id.to_string(), resource_id)
            .await
        {
            Ok(()) => StopOutcome::Done,
            Err(GoogleError::NotFound { .. } | GoogleError::Gone { .. }) => StopOutcome::Unknown,
            Err(err)
                if !connection.active
                    && matches!(
                        err.next_step(),
                        NextStep::NeedsReauth | NextStep::CalendarGone | NextStep::GiveUp
                    ) =>
            {
                StopOutcome::GivenUp(format!("stopping it failed for good: {err}"))
            }
            Err(err) => return Err(google_failure(&ctx.pool, job, connection.id, err).await),
        },
    };
    let (label, error) = match &outcome {
        StopOutcome::Done => ("stopped", None),
        StopOutcome::Unknown => ("unknown", None),
        StopOutcome::GivenUp(why) => ("given_up", Some(why.as_str())),
    };
    let mut tx = crate::store::begin(&ctx.pool).await?;
    job.fence(&mut tx).await?;
    channels::mark_stopped(&mut tx, channel.id, error).await?;
    tx.commit().await?;
    metrics::counter!(metric::STOPPED, "outcome" => label).increment(1);
    match error {
        None => {
            tracing::info!(channel = %channel.id, outcome = label, "notification channel stopped")
        }
        Some(why) => {
            tracing::warn!(channel = %channel.id, reason = why, "notification channel given up")
        }
    }
    Ok(())
}

async fn finish(ctx: &JobContext, job: &Job, renew: bool) -> Result<Done, JobError> {
    let mut tx = crate::store::begin(&ctx.pool).await?;
    job.fence(&mut tx).await?;
    channels::finish_run(&mut tx, job.connection, renew).await?;
    let done = job.complete_in(&mut tx).await?;
    tx.commit().await?;
    Ok(done)
}
