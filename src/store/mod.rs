//! All SQL lives here; no other module writes a statement.
//!
//! The worker's own tables live in the `plansync` schema and every statement
//! names its schema explicitly, so the host's `search_path` never matters.
//! [`StoreError`] tells a caller what to do next: `Unavailable` is worth a
//! retry, everything else is final for the operation that got it. Its
//! messages leave the database's own error to `source()`, so a printed
//! chain ([`crate::text::Chain`], anyhow's `{:#}`) names it once.

pub mod appointments;
pub mod channels;
pub mod conflicts;
pub mod connections;
pub mod jobs;
pub mod key_check;
pub mod links;
pub mod migrate;
pub mod outbox;
pub mod push;
pub mod skipped;
pub mod status;
pub mod workers;

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use crate::config::DatabaseSettings;
use crate::ids::{ConnectionId, UserId};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The server could not be reached or the connection broke: retry later.
    // Causes are `source()`, not part of the message, so a printed chain
    // (`{:#}`, `queue::chain`) names each once.
    #[error("the database is unreachable")]
    Unavailable(#[source] sqlx::Error),
    #[error("the plansync schema is missing in this database: run `plansync migrate` first")]
    NotMigrated,
    #[error("user {0} does not exist")]
    UnknownUser(UserId),
    #[error("connection {0} does not exist")]
    UnknownConnection(ConnectionId),
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error")]
    Database(#[source] sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_) => StoreError::Unavailable(err),
            // 3F000 invalid_schema_name, 42P01 undefined_table: not migrated.
            sqlx::Error::Database(db)
                if matches!(db.code().as_deref(), Some("3F000") | Some("42P01"))
                    && db.message().contains("plansync") =>
            {
                StoreError::NotMigrated
            }
            sqlx::Error::Database(db)
                if matches!(db.code().as_deref(), Some("57P01") | Some("57P03")) =>
            {
                StoreError::Unavailable(err)
            }
            _ => StoreError::Database(err),
        }
    }
}

pub fn connect_options(settings: &DatabaseSettings) -> Result<PgConnectOptions, StoreError> {
    settings
        .url
        .expose_secret()
        .parse::<PgConnectOptions>()
        .map(|o| o.application_name("plansync"))
        .map_err(StoreError::Database)
}

/// A pool of at most `max_connections`; failing fast when the server is down
/// rather than hanging a CLI command.
pub async fn connect(
    settings: &DatabaseSettings,
    max_connections: u32,
) -> Result<PgPool, StoreError> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        // Many jobs share few connections: a job may queue for one behind
        // others' short transactions, which is normal, not an outage.
        .acquire_timeout(Duration::from_secs(60))
        .connect_with(connect_options(settings)?)
        .await
        .map_err(StoreError::from)
}

/// The target [`begin`] logs on.
pub const BEGIN_LOG_TARGET: &str = "plansync::store::tx";

/// Starts a transaction. sqlx logs every statement it sends (target
/// `sqlx::query`) except BEGIN, which it queues without its logger; this
/// logs it at the same level, so a statement log (`RUST_LOG=sqlx::query=debug,
/// plansync::store::tx=debug`) shows every round trip, and the tests that hold
/// the worker to its statement budgets count them all.
pub async fn begin(
    pool: &PgPool,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    let tx = pool.begin().await?;
    tracing::debug!(target: BEGIN_LOG_TARGET, "BEGIN");
    Ok(tx)
}
