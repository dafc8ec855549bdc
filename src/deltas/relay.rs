//! The outbox relay: moves committed deltas from `plansync.outbox` to Redis.
//!
//! Guarantees:
//! - **At least once.** What is still to be published is a queue of pending
//!   entries beside the outbox (one per writing statement and user: a range
//!   of versions). A batch deletes the entries it takes in its transaction and
//!   commits only after the publish succeeded; a failed publish rolls back, and
//!   a crash between publish and commit re-publishes (clients drop versions
//!   they have seen). The outbox rows themselves are never updated, so marking
//!   costs one row deletion per writing statement, no new row versions and no
//!   index entries.
//! - **Per-user version order, across replicas.** A batch takes per-user
//!   advisory locks for its whole transaction and takes each user's oldest
//!   entries in version order, so two relays never interleave one user's
//!   deltas, and a user's pending entries are always the newest part of its
//!   history.
//! - **Nothing lost while Redis is down.** A failed publish rolls back; the
//!   entries stay, the backlog shows in `status`, and the relay retries with
//!   jittered exponential backoff, picking Redis up again without a restart.
//! - **Bounded messages.** One message carries at most
//!   `max_deltas_per_message` deltas; a longer backlog of one user becomes
//!   several messages, in version order, in the same pipeline.
//! - **Prompt.** The relay LISTENs on the outbox's channel, so a commit is
//!   published within milliseconds; one drain answers every notification
//!   buffered so far, and a slow idle poll covers lost notifications.
//! - **Pruning keeps what catch-up promises.** Rows older than the retention
//!   period are deleted only once published, with the per-user watermark that
//!   makes catch-up answer 410 below it.

use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::publish::{PublishError, Publisher};
use crate::config::RedisSettings;
use crate::ids::UserId;
use crate::store::{self, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// Redis is down: back off; the outbox keeps the rows.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// The database failed: back off and try again.
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// Rows per batch (one pipeline, one mark).
    pub batch_rows: i64,
    /// Users per batch.
    pub batch_users: i64,
    /// Deltas per published message at most (`PLANSYNC_MAX_DELTAS_PER_MESSAGE`):
    /// a longer run of one user's rows goes out as several messages, in
    /// version order, so no client has to parse an outage's backlog at once.
    pub max_deltas_per_message: usize,
    /// How long published rows are kept before pruning.
    pub retention: Duration,
    /// Poll interval when no notification arrives.
    pub idle_poll: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

impl Default for RelaySettings {
    fn default() -> Self {
        RelaySettings {
            batch_rows: 2000,
            batch_users: 500,
            max_deltas_per_message: 100,
            retention: Duration::from_secs(24 * 3600),
            idle_poll: Duration::from_secs(5),
            backoff_min: Duration::from_millis(200),
            backoff_max: Duration::from_secs(30),
        }
    }
}

/// Rows one pruning statement looks at.
const PRUNE_ROWS: i64 = 10_000;

/// What one [`Relay::relay_batch`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batch {
    /// Deltas published.
    pub published: usize,
    /// Whether this relay may find more right away (it hit a batch limit).
    pub more: bool,
}

pub struct Relay {
    pool: PgPool,
    publisher: Publisher,
    settings: RelaySettings,
}

impl Relay {
    pub fn new(
        pool: PgPool,
        redis: RedisSettings,
        settings: RelaySettings,
    ) -> Result<Self, RelayError> {
        Ok(Relay {
            pool,
            publisher: Publisher::new(redis)?,
            settings,
        })
    }

    /// Publishes one batch. Returns how many rows went out, and whether more
    /// may be waiting for this relay (see [`store::outbox::Claim::more`]).
    pub async fn relay_batch(&mut self) -> Result<Batch, RelayError> {
        let mut tx = crate::store::begin(&self.pool)
            .await
            .map_err(StoreError::from)?;
        let claim = store::outbox::claim_batch(
            &mut tx,
            self.settings.batch_users,
            self.settings.batch_rows,
        )
        .await?;
        let rows = claim.rows;
        if !rows.is_empty() {
            // Consecutive rows of one user share one message, up to the cap;
            // the publisher sends the messages in this order in one pipeline.
            let cap = self.settings.max_deltas_per_message.max(1);
            let mut groups: Vec<(UserId, Vec<&str>)> = Vec::new();
            for row in &rows {
                match groups.last_mut() {
                    Some((user, deltas)) if *user == row.user_id && deltas.len() < cap => {
                        deltas.push(&row.delta)
                    }
                    _ => groups.push((row.user_id, vec![&row.delta])),
                }
            }
            // On error the transaction is dropped, which rolls back: the
            // entries the claim removed are pending again.
            self.publisher.publish(&groups).await?;
        }
        // Committing is what marks the rows published (the claim deleted
        // their pending entries). A crash or a failed commit after the
        // publish leaves them pending: published again, at least once.
        tx.commit().await.map_err(StoreError::from)?;
        count_published(rows.iter().map(|r| r.delta.as_str()));
        Ok(Batch {
            published: rows.len(),
            more: claim.more,
        })
    }

    /// Publishes until nothing is left (that this relay may take).
    pub async fn drain(&mut self) -> Result<usize, RelayError> {
        let mut total = 0;
        loop {
            let batch = self.relay_batch().await?;
            total += batch.published;
            if !batch.more {
                return Ok(total);
            }
        }
    }

    /// Deletes rows published longer ago than the retention period, keeping
    /// per user the highest version pruned (the catch-up watermark).
    pub async fn prune(&self) -> Result<u64, RelayError> {
        let mut total = 0;
        loop {
            let pruned =
                store::outbox::prune(&self.pool, self.settings.retention, PRUNE_ROWS).await?;
            total += pruned.rows;
            if pruned.rows == 0 || !pruned.more {
                return Ok(total);
            }
        }
    }

    fn backoff(&self) -> impl Iterator<Item = Duration> {
        ExponentialBuilder::default()
            .with_min_delay(self.settings.backoff_min)
            .with_max_delay(self.settings.backoff_max)
            .with_jitter()
            .without_max_times()
            .build()
    }

    /// Relays until `cancel` fires: wakes on every outbox notification, backs
    /// off while Redis or the database is down, prunes now and then.
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut backoff = self.backoff();
        let mut listener = loop {
            match self.listen().await {
                Ok(listener) => break listener,
                Err(err) => {
                    let delay = backoff.next().unwrap_or(self.settings.backoff_max);
                    tracing::warn!(error = %crate::text::Chain(&err), ?delay, "relay cannot LISTEN yet; retrying");
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        };
        let mut backoff = self.backoff();
        let prune_every = Duration::from_secs(300);
        let mut last_prune: Option<Instant> = None;
        loop {
            match self.drain().await {
                Ok(n) => {
                    if n > 0 {
                        tracing::debug!(published = n, "relayed deltas");
                    }
                    backoff = self.backoff();
                }
                Err(err) => {
                    let delay = backoff.next().unwrap_or(self.settings.backoff_max);
                    tracing::warn!(error = %crate::text::Chain(&err), ?delay, "relay failed; backing off");
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(delay) => continue,
                    }
                }
            }
            if last_prune.is_none_or(|t| t.elapsed() >= prune_every) {
                last_prune = Some(Instant::now());
                match self.prune().await {
                    Ok(n) if n > 0 => tracing::info!(pruned = n, "pruned published outbox rows"),
                    Ok(_) => {}
                    Err(err) => {
                        tracing::warn!(error = %crate::text::Chain(&err), "outbox pruning failed")
                    }
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                // A lost connection yields Ok(None) and reconnects on the next
                // call; either way, draining again is the right response.
                _ = listener.try_recv() => {
                    // One drain answers every commit notified so far: drop
                    // the ones already buffered rather than draining once per
                    // commit.
                    while listener.next_buffered().is_some() {}
                }
                _ = tokio::time::sleep(self.settings.idle_poll) => {}
            }
        }
    }

    async fn listen(&self) -> Result<PgListener, StoreError> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(store::outbox::NOTIFY_CHANNEL).await?;
        Ok(listener)
    }
}

/// Counts published deltas by item type and action
/// (`plansync_deltas_published_total`). Reads only those two keys of each
/// delta; label values outside the contract's enums become `other`, so no
/// stored text can grow the label set.
fn count_published<'a>(deltas: impl Iterator<Item = &'a str>) {
    #[derive(serde::Deserialize)]
    struct Kind<'a> {
        #[serde(rename = "itemType", borrow)]
        item_type: &'a str,
        #[serde(borrow)]
        action: &'a str,
    }
    let mut counts: std::collections::BTreeMap<(&'static str, &'static str), u64> =
        std::collections::BTreeMap::new();
    for delta in deltas {
        let (item_type, action) = match serde_json::from_str::<Kind>(delta) {
            Ok(kind) => (
                known(kind.item_type, &["appointment", "bill", "plan"]),
                known(kind.action, &["created", "updated", "deleted"]),
            ),
            Err(_) => ("other", "other"),
        };
        *counts.entry((item_type, action)).or_default() += 1;
    }
    for ((item_type, action), n) in counts {
        metrics::counter!(
            crate::metrics::DELTAS_PUBLISHED,
            "item_type" => item_type,
            "action" => action
        )
        .increment(n);
    }
}

fn known(value: &str, allowed: &[&'static str]) -> &'static str {
    allowed
        .iter()
        .find(|a| **a == value)
        .copied()
        .unwrap_or("other")
}
