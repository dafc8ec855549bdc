//! Database creation and the embedded migrations.
//!
//! Migrations are applied through a connection whose `search_path` starts with
//! `plansync`, so sqlx's `_sqlx_migrations` history lands in our schema and
//! never collides with the host's own sqlx history in `public`. sqlx takes an
//! advisory lock while migrating, so a fleet starting at once applies each
//! migration exactly once.

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, Executor, PgConnection};

use super::{connect_options, StoreError};
use crate::config::DatabaseSettings;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Creates the database named in the URL when it does not exist. Returns
/// whether it was created.
pub async fn create_database_if_missing(settings: &DatabaseSettings) -> Result<bool, StoreError> {
    let options = connect_options(settings)?;
    let name = settings
        .url
        .database_name()
        .unwrap_or_else(|| "postgres".to_owned());
    // The maintenance database exists on every cluster.
    let mut admin = options
        .clone()
        .database("postgres")
        .connect()
        .await
        .map_err(StoreError::from)?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut admin)
            .await?;
    if exists {
        return Ok(false);
    }
    let quoted = format!("\"{}\"", name.replace('"', "\"\""));
    match admin
        .execute(format!("CREATE DATABASE {quoted}").as_str())
        .await
    {
        Ok(_) => Ok(true),
        // Another process created it between our check and our CREATE.
        Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("42P04") => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Applies every pending migration. Safe to run concurrently and repeatedly.
pub async fn run(settings: &DatabaseSettings) -> Result<(), StoreError> {
    let options: PgConnectOptions =
        connect_options(settings)?.options([("search_path", "plansync,public")]);
    let mut conn = PgConnection::connect_with(&options)
        .await
        .map_err(StoreError::from)?;
    // The history table goes where search_path points first, so the schema
    // must exist before the migrator looks for it.
    match conn.execute("CREATE SCHEMA IF NOT EXISTS plansync").await {
        Ok(_) => {}
        // Two processes racing on CREATE SCHEMA IF NOT EXISTS: the loser sees a
        // unique violation on the catalogue; the schema exists either way.
        Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("23505") => {}
        Err(e) => return Err(e.into()),
    }
    MIGRATOR.run(&mut conn).await?;
    conn.close().await.map_err(StoreError::from)?;
    Ok(())
}
