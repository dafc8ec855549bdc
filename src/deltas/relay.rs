//! The outbox relay: moves committed deltas from `plansync.outbox` to Redis.
//!
//! Guarantees:
//! - **At least once.** A row is marked published only in the transaction
//!   that held it while the publish succeeded; a crash between publish and
//!   commit re-publishes (clients drop versions they have seen).
//! - **Per-user version order, across replicas.** A batch takes per-user
//!   advisory locks for its whole transaction and reads each user's rows in
//!   version order, so two relays never interleave one user's deltas.
//! - **Nothing lost while Redis is down.** A failed publish rolls back; the
//!   rows stay, the backlog shows in `status`, and the relay retries with
//!   jittered exponential backoff, picking Redis up again without a restart.
//! - **Bounded messages.** One message carries at most
//!   `max_deltas_per_message` deltas; a longer backlog of one user becomes
//!   several messages, in version order, in the same pipeline.
//! - **Prompt.** The relay LISTENs on the outbox's channel, so a commit is
//!   published within milliseconds; a slow idle poll covers lost notifications.

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

    /// Publishes one batch. Returns how many rows went out; 0 when nothing is
    /// pending that another relay is not already holding.
    pub async fn relay_batch(&mut self) -> Result<usize, RelayError> {
        let mut tx = crate::store::begin(&self.pool)
            .await
            .map_err(StoreError::from)?;
        let rows = store::outbox::claim_batch(
            &mut tx,
            self.settings.batch_users,
            self.settings.batch_rows,
        )
        .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        // Consecutive rows of one user share one message, up to the cap; the
        // publisher sends the messages in this order in one pipeline.
        let cap = self.settings.max_deltas_per_message.max(1);
        let mut groups: Vec<(UserId, Vec<&str>)> = Vec::new();
        let mut ids = Vec::with_capacity(rows.len());
        for row in &rows {
            ids.push(row.id);
            match groups.last_mut() {
                Some((user, deltas)) if *user == row.user_id && deltas.len() < cap => {
                    deltas.push(&row.delta)
                }
                _ => groups.push((row.user_id, vec![&row.delta])),
            }
        }
        // On error the transaction is dropped, which rolls back: rows stay.
        self.publisher.publish(&groups).await?;
        store::outbox::mark_published(&mut tx, &ids).await?;
        tx.commit().await.map_err(StoreError::from)?;
        count_published(rows.iter().map(|r| r.delta.as_str()));
        Ok(ids.len())
    }

    /// Publishes until nothing is left (that this relay may take).
    pub async fn drain(&mut self) -> Result<usize, RelayError> {
        let mut total = 0;
        loop {
            let n = self.relay_batch().await?;
            if n == 0 {
                return Ok(total);
            }
            total += n;
        }
    }

    /// Deletes rows published longer ago than the retention period, keeping
    /// per user the highest version pruned (the catch-up watermark).
    pub async fn prune(&self) -> Result<u64, RelayError> {
        let mut total = 0;
        loop {
            let n = store::outbox::prune(&self.pool, self.settings.retention, 10_000).await?;
            total += n;
            if n < 10_000 {
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
                _ = listener.try_recv() => {}
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
