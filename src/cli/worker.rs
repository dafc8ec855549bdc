//! `run`, `run --once`, `resync`, `jobs retry --dead`.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use plansync::config::{
    self, DatabaseSettings, Env, GoogleSettings, QueueSettings, QuotaSettings, RedisSettings,
    SyncSettings, WorkerSettings,
};
use plansync::deltas::relay::{Relay, RelaySettings};
use plansync::google::GoogleClient;
use plansync::ids::{CalendarId, JobId, UserId};
use plansync::queue::{JobKind, JobState, Queue};
use plansync::quota::Quota;
use plansync::store;
use plansync::store::key_check::KeyCheck;
use plansync::sync::SyncDeps;
use plansync::worker::{self, SyncJobs, Worker, WorkerConfig};
use tokio_util::sync::CancellationToken;

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// One pass and exit: a scheduler tick, then every due job of the region.
    #[arg(long)]
    once: bool,
}

#[derive(Debug, clap::Args)]
pub struct ResyncArgs {
    #[arg(long)]
    user: UserId,
    /// Only this calendar (default: every active connection of the user).
    #[arg(long, value_parser = super::admin::non_empty_calendar)]
    calendar: Option<CalendarId>,
    /// A full resync (mark and sweep) instead of an incremental pull.
    #[arg(long)]
    full: bool,
    /// Block until the job succeeds, is dead, or the timeout passes.
    #[arg(long)]
    wait: bool,
    /// Seconds `--wait` waits at most.
    #[arg(long, requires = "wait", value_name = "SECS")]
    timeout: Option<u64>,
}

#[derive(Debug, clap::Args)]
pub struct JobsArgs {
    #[command(subcommand)]
    command: JobsCommand,
}

#[derive(Debug, clap::Subcommand)]
enum JobsCommand {
    /// Requeue jobs.
    Retry(RetryArgs),
}

#[derive(Debug, clap::Args)]
struct RetryArgs {
    /// Requeue dead jobs (due at once, attempts reset).
    #[arg(long, required = true)]
    dead: bool,
    /// Only this user's jobs.
    #[arg(long)]
    user: Option<UserId>,
}

const DEFAULT_WAIT: Duration = Duration::from_secs(300);

pub async fn run(env: &Env, args: RunArgs) -> anyhow::Result<ExitCode> {
    // Everything `run` will need, validated before touching anything, so a
    // misconfigured worker fails at once and names the variable.
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
    config::log_format(env)?;

    let target = db.url.redacted();
    store::migrate::run(&db)
        .await
        .with_context(|| format!("migrating {target}"))?;
    // Jobs take a connection only while they talk to Postgres (never while
    // they wait on Google), so the pool is its own setting.
    let pool = store::connect(&db, settings.db_pool)
        .await
        .with_context(|| format!("connecting to {target}"))?;
    // A replica with the wrong token key would fail every job it claims:
    // refuse to start instead, naming the setting.
    if store::key_check::verify(&pool, &cipher).await? == KeyCheck::Mismatch {
        anyhow::bail!(
            "PLANSYNC_TOKEN_KEY cannot decrypt the refresh tokens stored in {target}: \
             this worker was started with a different key than the one they were stored with"
        );
    }
    let config = WorkerConfig::new(&settings, &sync, &queue);
    // One budget for every Google call of this process, shared with the
    // fleet through Redis (keyed by the prefix and the OAuth client).
    let quota = Quota::new(quota_settings, &redis, &google.client_id)
        .context("configuring the Google budget")?;
    let google = google_client(env, &pool, &google, &settings.region)
        .await?
        .with_budget(Arc::new(quota.clone()));
    let deps =
        SyncDeps::new(google, cipher, sync.clone()).with_webhook_url(settings.webhook_url.clone());
    let worker = Worker::new(pool.clone(), config, SyncJobs::new(deps)).with_quota(quota);
    let relay_settings = RelaySettings {
        retention: outbox_retention,
        max_deltas_per_message,
        ..RelaySettings::default()
    };
    // A client of its own for `/readyz` and the `plansync_redis_up` probe.
    let redis_probe = plansync::deltas::connect::client(&redis).ok();
    let relay =
        Relay::new(pool.clone(), redis, relay_settings).context("configuring the delta relay")?;

    if args.once {
        let report = worker.run_once().await.context("the pass could not run")?;
        tracing::info!(
            scheduled = report.scheduled,
            rescued = report.rescued,
            ran = report.ran,
            succeeded = report.succeeded,
            failed = report.failed,
            "pass finished"
        );
        // Redis being down is no reason to fail the pass: the backlog stays in
        // the outbox for the next one.
        let mut relay = relay;
        match relay.drain().await {
            Ok(n) => tracing::info!(published = n, "outbox drained"),
            Err(err) => {
                tracing::warn!(
                    error = %plansync::text::Chain(&err),
                    "outbox not drained; it stays for the next pass"
                )
            }
        }
        return Ok(ExitCode::SUCCESS);
    }

    let metrics = worker::metric::install().context("installing the metrics recorder")?;
    plansync::quota::metric::describe();
    let listener = tokio::net::TcpListener::bind(settings.http_addr)
        .await
        .with_context(|| format!("binding {}", settings.http_addr))?;
    let addr = listener.local_addr()?;
    tracing::info!("listening on {addr}");

    let shutdown = CancellationToken::new();
    tokio::spawn(shutdown_on_signal(shutdown.clone()));
    let http = tokio::spawn(worker::http::serve(
        listener,
        worker::http::router_with_redis(pool.clone(), Some(metrics.clone()), redis_probe.clone())
            .merge(worker::api::router(pool.clone(), api_token)),
        shutdown.clone(),
    ));
    tokio::spawn(worker::gauges::run(
        pool,
        redis_probe,
        Some(metrics),
        shutdown.clone(),
    ));
    // The relay outlives the worker's drain, so deltas committed by the last
    // jobs still go out before exit.
    let relay_stop = CancellationToken::new();
    let relay_task = tokio::spawn(relay.run(relay_stop.clone()));
    worker.run(shutdown.clone()).await?;
    shutdown.cancel();
    relay_stop.cancel();
    if let Err(err) = relay_task.await {
        tracing::warn!(error = %plansync::text::chain(&err), "delta relay task failed");
    }
    match http.await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::warn!(
            error = %plansync::text::Chain(&err),
            "HTTP server stopped with an error"
        ),
        Err(err) => tracing::warn!(error = %err, "HTTP server task failed"),
    }
    Ok(ExitCode::SUCCESS)
}

/// The Google client, with exactly the credentials the region's active
/// connections need: the OAuth client while refresh-token connections exist,
/// the service-account key while delegated ones do (a key file that is named
/// is always loaded, so a broken one is found now, not by the first job).
async fn google_client(
    env: &Env,
    pool: &sqlx::PgPool,
    settings: &GoogleSettings,
    region: &str,
) -> anyhow::Result<GoogleClient> {
    let (refresh_tokens, delegated) = store::connections::auth_kinds_in_use(pool, region).await?;
    if refresh_tokens {
        settings.require_oauth_client()?;
    }
    if delegated {
        config::require_service_account_key(env)?;
    }
    let mut google = GoogleClient::new(settings).context("building the Google client")?;
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

async fn shutdown_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(err) => {
            tracing::error!(error = %plansync::text::chain(&err), "cannot listen for SIGTERM");
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
    shutdown.cancel();
}

async fn pool(env: &Env) -> anyhow::Result<sqlx::PgPool> {
    let settings = DatabaseSettings::from_env(env)?;
    store::connect(&settings, 2)
        .await
        .with_context(|| format!("connecting to {}", settings.url.redacted()))
}

pub async fn resync(env: &Env, args: ResyncArgs) -> anyhow::Result<ExitCode> {
    let pool = pool(env).await?;
    let kind = if args.full {
        JobKind::FullResync
    } else {
        JobKind::Pull
    };
    let mut tx = pool.begin().await?;
    let targets =
        store::connections::resync_targets(&mut tx, args.user, args.calendar.as_ref()).await?;
    if targets.is_empty() {
        match &args.calendar {
            Some(cal) => bail!(
                "user {} has no active connection to calendar {cal}",
                args.user
            ),
            None => bail!("user {} has no active connection", args.user),
        }
    }
    let mut jobs = Vec::with_capacity(targets.len());
    for target in &targets {
        let id = Queue::enqueue_in(&mut tx, kind, target.id, None, true).await?;
        jobs.push((id, target));
    }
    tx.commit().await?;
    for (id, target) in &jobs {
        println!(
            "enqueued job {id} ({kind}) for connection {} (calendar {})",
            target.id, target.calendar_id
        );
        if target.needs_reauth {
            eprintln!(
                "warning: connection {} needs re-authorisation: the job runs after `plansync connect`",
                target.id
            );
        }
    }
    if !args.wait {
        return Ok(ExitCode::SUCCESS);
    }

    let timeout = args.timeout.map_or(DEFAULT_WAIT, Duration::from_secs);
    let deadline = tokio::time::Instant::now() + timeout;
    let mut all_succeeded = true;
    for (id, _) in &jobs {
        let outcome = wait_for(&pool, *id, deadline).await?;
        println!("job {id}: {outcome}");
        all_succeeded &= matches!(outcome, WaitOutcome::Succeeded);
    }
    Ok(if all_succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

enum WaitOutcome {
    Succeeded,
    Dead { attempts: i32, error: String },
    TimedOut { state: JobState },
    Gone,
}

impl std::fmt::Display for WaitOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WaitOutcome::Succeeded => f.write_str(JobState::Succeeded.as_str()),
            WaitOutcome::Dead { attempts, error } => {
                write!(f, "dead after {attempts} attempts: {error}")
            }
            WaitOutcome::TimedOut { state } => write!(f, "timed out while {state}"),
            WaitOutcome::Gone => f.write_str("gone (its connection was deleted)"),
        }
    }
}

/// Polls the job row until it ends or `deadline` passes. A job folded into an
/// equal queued one is followed there.
async fn wait_for(
    pool: &sqlx::PgPool,
    mut id: JobId,
    deadline: tokio::time::Instant,
) -> anyhow::Result<WaitOutcome> {
    const POLL: Duration = Duration::from_millis(200);
    loop {
        let Some(row) = store::jobs::get(pool, id).await? else {
            return Ok(WaitOutcome::Gone);
        };
        match (row.state, row.superseded_by) {
            (JobState::Succeeded, _) => return Ok(WaitOutcome::Succeeded),
            (JobState::Dead, _) => {
                return Ok(WaitOutcome::Dead {
                    attempts: row.attempts,
                    error: row.last_error.unwrap_or_default(),
                })
            }
            (JobState::Superseded, Some(next)) => {
                id = next;
                continue;
            }
            _ => {}
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(WaitOutcome::TimedOut { state: row.state });
        }
        tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + POLL)).await;
    }
}

pub async fn jobs(env: &Env, args: JobsArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        JobsCommand::Retry(retry) => {
            debug_assert!(retry.dead);
            let queue = Queue::new(pool(env).await?, QueueSettings::from_env(env)?);
            let count = queue.retry_dead(retry.user).await?;
            println!("requeued {count} dead jobs");
            Ok(ExitCode::SUCCESS)
        }
    }
}
