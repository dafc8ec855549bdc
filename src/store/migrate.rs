//! Database creation and the embedded migrations.
//!
//! Migrations are applied through a connection whose `search_path` starts with
//! `plansync`, so sqlx's `_sqlx_migrations` history lands in our schema and
//! never collides with the host's own sqlx history in `public`. sqlx takes an
//! advisory lock while migrating, so a fleet starting at once applies each
//! migration exactly once.

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, Executor, PgConnection, PgPool};

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
    let exists = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1) AS "exists!""#,
        name,
    )
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

/// How the database's applied migrations compare with the ones built into
/// this binary (versions and checksums).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MigrationState {
    /// Every migration of the binary is applied, unchanged, and no other.
    Current,
    /// Not what this binary expects: it must not serve (see `/readyz`).
    Differs {
        /// In the binary, not applied (or applied and failed).
        missing: Vec<i64>,
        /// Applied, unknown to the binary (a newer binary migrated).
        unknown: Vec<i64>,
        /// Applied with another checksum than the binary's.
        changed: Vec<i64>,
    },
}

impl std::fmt::Display for MigrationState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MigrationState::Current => f.write_str("current"),
            MigrationState::Differs {
                missing,
                unknown,
                changed,
            } => write!(
                f,
                "differ from the binary's (missing {missing:?}, unknown {unknown:?}, changed {changed:?})"
            ),
        }
    }
}

/// Compares `plansync._sqlx_migrations` with the embedded migrator. One small
/// read; a database never migrated counts as every migration missing.
pub async fn check(pool: &PgPool) -> Result<MigrationState, StoreError> {
    // Read as the migrator wrote it: the table exists in the build database
    // too, since `plansync migrate` made it.
    let applied: Vec<(i64, Vec<u8>)> = match sqlx::query!(
        "SELECT version, checksum FROM plansync._sqlx_migrations WHERE success ORDER BY version",
    )
    .fetch_all(pool)
    .await
    {
        Ok(rows) => rows.into_iter().map(|r| (r.version, r.checksum)).collect(),
        // 42P01 undefined_table, 3F000 invalid_schema_name: never migrated.
        Err(sqlx::Error::Database(db))
            if matches!(db.code().as_deref(), Some("42P01") | Some("3F000")) =>
        {
            Vec::new()
        }
        Err(e) => return Err(e.into()),
    };
    Ok(compare(
        MIGRATOR
            .iter()
            .filter(|m| !m.migration_type.is_down_migration())
            .map(|m| (m.version, m.checksum.as_ref())),
        &applied,
    ))
}

fn compare<'a>(
    binary: impl Iterator<Item = (i64, &'a [u8])>,
    applied: &[(i64, Vec<u8>)],
) -> MigrationState {
    let applied: std::collections::BTreeMap<i64, &[u8]> =
        applied.iter().map(|(v, c)| (*v, c.as_slice())).collect();
    let binary: std::collections::BTreeMap<i64, &[u8]> = binary.collect();
    let missing: Vec<i64> = binary
        .keys()
        .filter(|v| !applied.contains_key(v))
        .copied()
        .collect();
    let unknown: Vec<i64> = applied
        .keys()
        .filter(|v| !binary.contains_key(v))
        .copied()
        .collect();
    let changed: Vec<i64> = binary
        .iter()
        .filter(|(v, c)| applied.get(v).is_some_and(|a| a != *c))
        .map(|(v, _)| *v)
        .collect();
    if missing.is_empty() && unknown.is_empty() && changed.is_empty() {
        MigrationState::Current
    } else {
        MigrationState::Differs {
            missing,
            unknown,
            changed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_compare_by_version_and_checksum() {
        let binary = [(1, &b"a"[..]), (2, &b"b"[..])];
        let same = vec![(1, b"a".to_vec()), (2, b"b".to_vec())];
        assert_eq!(compare(binary.into_iter(), &same), MigrationState::Current);
        let behind = vec![(1, b"a".to_vec())];
        assert_eq!(
            compare(binary.into_iter(), &behind),
            MigrationState::Differs {
                missing: vec![2],
                unknown: vec![],
                changed: vec![]
            }
        );
        let other = vec![(1, b"x".to_vec()), (2, b"b".to_vec()), (3, b"c".to_vec())];
        assert_eq!(
            compare(binary.into_iter(), &other),
            MigrationState::Differs {
                missing: vec![],
                unknown: vec![3],
                changed: vec![1]
            }
        );
    }
}
