//! `run`, `run --once`, `resync`, `jobs retry --dead`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use plansync::config::{DatabaseSettings, Env, QueueSettings};
use plansync::ids::{CalendarId, JobId, UserId};
use plansync::queue::{JobKind, JobState, Queue};
use plansync::store;
use plansync::worker::{self, setup::WorkerSetup};
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
    let WorkerSetup {
        pool,
        worker,
        relay,
        redis,
        settings,
        api_token,
    } = {
        let setup = WorkerSetup::from_env(env).await?;
        if args.once {
            setup.run_once().await.context("the pass could not run")?;
            return Ok(ExitCode::SUCCESS);
        }
        setup
    };

    let metrics = worker::metric::install().context("installing the metrics recorder")?;
    plansync::quota::metric::describe();
    // A client of its own for `/readyz` and the `plansync_redis_up` probe.
    let redis_probe = plansync::deltas::connect::client(&redis).ok();
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
    let mut tx = store::begin(&pool).await?;
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
