//! A worker assembled from one environment, exactly as `plansync run` builds
//! it: settings validated before anything is touched, migrations applied,
//! the pool, the token-key check, the fleet-wide Google budget, the Google
//! client with the credentials the region's connections need, the worker and
//! its delta relay. `run` serves and loops on it; [`WorkerSetup::run_once`]
//! is `run --once`, which tests also call in-process (one pass without a
//! child process), so both go through this one path.

use std::sync::Arc;

use sqlx::PgPool;

use crate::config::{
    self, ConfigError, DatabaseSettings, Env, GoogleSettings, QueueSettings, QuotaSettings,
    RedisSettings, SyncSettings, WorkerSettings,
};
use crate::deltas::connect::ConnectError;
use crate::deltas::relay::{Relay, RelayError, RelaySettings};
use crate::google::{GoogleClient, KeyFileError};
use crate::ids::ApiToken;
use crate::quota::Quota;
use crate::store::key_check::KeyCheck;
use crate::store::{self, StoreError};
use crate::sync::SyncDeps;

use super::{PassReport, SyncJobs, Worker, WorkerConfig, WorkerError};

/// Why a worker could not be assembled. Each variant names what was being
/// done; the cause is its source.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("migrating {target}")]
    Migrate {
        target: String,
        #[source]
        source: StoreError,
    },
    #[error("connecting to {target}")]
    Connect {
        target: String,
        #[source]
        source: StoreError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A replica with the wrong token key would fail every job it claims.
    #[error(
        "PLANSYNC_TOKEN_KEY cannot decrypt the refresh tokens stored in {target}: \
         this worker was started with a different key than the one they were stored with"
    )]
    KeyMismatch { target: String },
    #[error("configuring the Google budget")]
    Quota(#[source] ConnectError),
    #[error("building the Google client")]
    Google(#[source] crate::google::SetupError),
    #[error(transparent)]
    KeyFile(#[from] KeyFileError),
    #[error("configuring the delta relay")]
    Relay(#[source] RelayError),
}

/// What a `run --once` pass did: the jobs, then the outbox drain.
#[derive(Debug)]
pub struct OnceReport {
    pub pass: PassReport,
    /// Deltas published, or why the drain stopped (Redis down: the backlog
    /// stays for the next pass, which is no failure of the pass).
    pub drained: Result<usize, RelayError>,
}

/// The parts of one worker process.
pub struct WorkerSetup {
    pub pool: PgPool,
    pub worker: Worker<SyncJobs>,
    pub relay: Relay,
    pub redis: RedisSettings,
    pub settings: WorkerSettings,
    pub api_token: Option<ApiToken>,
}

impl WorkerSetup {
    /// Assembles the worker of `env`, as `plansync run` does.
    pub async fn from_env(env: &Env) -> Result<WorkerSetup, SetupError> {
        WorkerSetup::build(env, None).await
    }

    /// As [`WorkerSetup::from_env`], with the worker id (`lockedBy`) given
    /// instead of `host:pid` (several workers in one process).
    pub async fn from_env_as(env: &Env, worker_id: &str) -> Result<WorkerSetup, SetupError> {
        WorkerSetup::build(env, Some(worker_id)).await
    }

    async fn build(env: &Env, worker_id: Option<&str>) -> Result<WorkerSetup, SetupError> {
        // Everything the worker will need, validated before touching
        // anything, so a misconfigured worker fails at once and names the
        // variable.
        let db = DatabaseSettings::from_env(env)?;
        let google = GoogleSettings::from_env(env)?;
        let cipher = config::token_cipher(env)?;
        let redis = RedisSettings::from_env(env)?;
        let outbox_retention = config::outbox_retention(env)?;
        let max_deltas_per_message = config::max_deltas_per_message(env)?;
        let api_token = config::api_token(env)?;
        let sync = SyncSettings::from_env(env)?;
        let queue = QueueSettings::from_env(env)?;
        let settings = WorkerSettings::from_env(env)?;
        let quota_settings = QuotaSettings::from_env(env)?;

        let target = db.url.redacted();
        store::migrate::run(&db)
            .await
            .map_err(|source| SetupError::Migrate {
                target: target.clone(),
                source,
            })?;
        // Jobs take a connection only while they talk to Postgres (never
        // while they wait on Google), so the pool is its own setting.
        let pool = store::connect(&db, settings.db_pool)
            .await
            .map_err(|source| SetupError::Connect {
                target: target.clone(),
                source,
            })?;
        // Refuse to start rather than fail every job, naming the setting.
        if store::key_check::verify(&pool, &cipher).await? == KeyCheck::Mismatch {
            return Err(SetupError::KeyMismatch { target });
        }
        let mut config = WorkerConfig::new(&settings, &sync, &queue);
        if let Some(id) = worker_id {
            config.worker_id = id.to_owned();
        }
        // One budget for every Google call of this process, shared with the
        // fleet through Redis (keyed by the prefix and the OAuth client).
        let quota =
            Quota::new(quota_settings, &redis, &google.client_id).map_err(SetupError::Quota)?;
        let google = google_client(env, &pool, &google, &settings.region)
            .await?
            .with_budget(Arc::new(quota.clone()));
        let deps = SyncDeps::new(google, cipher, sync.clone())
            .with_webhook_url(settings.webhook_url.clone());
        let worker = Worker::new(pool.clone(), config, SyncJobs::new(deps)).with_quota(quota);
        let relay_settings = RelaySettings {
            retention: outbox_retention,
            max_deltas_per_message,
            ..RelaySettings::default()
        };
        let relay =
            Relay::new(pool.clone(), redis.clone(), relay_settings).map_err(SetupError::Relay)?;
        Ok(WorkerSetup {
            pool,
            worker,
            relay,
            redis,
            settings,
            api_token,
        })
    }

    /// `run --once`: a scheduler tick, every due job of the region (follow-ups
    /// that become due during the pass included), then the outbox drained.
    /// Fails only when the pass could not run; failed jobs are recorded on
    /// the jobs, and a drain Redis refused leaves the backlog for later.
    pub async fn run_once(self) -> Result<OnceReport, WorkerError> {
        let WorkerSetup {
            pool,
            worker,
            mut relay,
            ..
        } = self;
        let pass = worker.run_once().await?;
        tracing::info!(
            scheduled = pass.scheduled,
            rescued = pass.rescued,
            ran = pass.ran,
            succeeded = pass.succeeded,
            failed = pass.failed,
            "pass finished"
        );
        let drained = relay.drain().await;
        match &drained {
            Ok(n) => tracing::info!(published = n, "outbox drained"),
            Err(err) => {
                tracing::warn!(error = %crate::text::chain(err), "outbox not drained; it stays for the next pass")
            }
        }
        drop((worker, relay));
        // Closed here rather than left to the process's exit, so a caller that
        // goes on (a test) leaves no session behind.
        pool.close().await;
        Ok(OnceReport { pass, drained })
    }
}

/// The Google client, with exactly the credentials the region's active
/// connections need: the OAuth client while refresh-token connections exist,
/// the service-account key while delegated ones do (a key file that is named
/// is always loaded, so a broken one is found now, not by the first job).
async fn google_client(
    env: &Env,
    pool: &PgPool,
    settings: &GoogleSettings,
    region: &str,
) -> Result<GoogleClient, SetupError> {
    let (refresh_tokens, delegated) = store::connections::auth_kinds_in_use(pool, region).await?;
    if refresh_tokens {
        settings.require_oauth_client()?;
    }
    if delegated {
        config::require_service_account_key(env)?;
    }
    let mut google = GoogleClient::new(settings).map_err(SetupError::Google)?;
    if let Some(key_file) = config::service_account_key(env) {
        google = google.with_service_account(&key_file).await?;
        if let Some(account) = google.service_account() {
            tracing::info!(
                service_account = account.client_email(),
                token_uri = account.token_uri(),
                "service-account key loaded for delegated connections"
            );
        }
    }
    Ok(google)
}
