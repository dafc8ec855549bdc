//! The admin command line. Thin: each command reads the settings it needs,
//! calls the library and prints the result on stdout; logs and errors go to
//! stderr. Exit status: 0 success, 2 usage error (clap), 1 anything else.

mod admin;
mod deltas;
// Only with the default `emulator` feature: production builds carry no emulator.
#[cfg(feature = "emulator")]
mod fake_google;
mod worker;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use plansync::config::{self, Env};

#[derive(Debug, Parser)]
#[command(
    name = "plansync",
    version,
    about = "Two-way Google Calendar ⇄ appointments sync worker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the database when it does not exist, then apply migrations.
    Migrate,
    /// Register a calendar connection (refresh token: first line of stdin; or
    /// --impersonate EMAIL for Workspace domain-wide delegation).
    Connect(admin::ConnectArgs),
    /// Stop syncing a connection and forget its token (its notification
    /// channel is stopped by a job first).
    Disconnect(admin::DisconnectArgs),
    /// Show connections, the job queue and the outbox.
    Status(admin::StatusArgs),
    /// Serve the Google Calendar API + OAuth emulator (demo, local repro).
    #[cfg(feature = "emulator")]
    FakeGoogle(fake_google::FakeGoogleArgs),
    /// Run the worker until SIGTERM/SIGINT (or one pass with --once).
    Run(worker::RunArgs),
    /// Enqueue a pull (or a full resync) of a user's calendars.
    Resync(worker::ResyncArgs),
    /// Manage queued jobs.
    Jobs(worker::JobsArgs),
    /// Print a user's deltas after a version (the catch-up data) as JSON.
    Deltas(deltas::DeltasArgs),
}

pub fn main() -> ExitCode {
    // Parse before anything else so a usage error exits 2 without side effects.
    let cli = Cli::parse();
    let env = Env::from_process();
    match config::log_format(&env) {
        Ok(format) => plansync::telemetry::init(format),
        Err(err) => return fail(err.into()),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => return fail(err.into()),
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Migrate => admin::migrate(&env).await,
            Command::Connect(args) => admin::connect(&env, args).await,
            Command::Disconnect(args) => admin::disconnect(&env, args).await,
            Command::Status(args) => admin::status(&env, args).await,
            #[cfg(feature = "emulator")]
            Command::FakeGoogle(args) => fake_google::run(args).await,
            Command::Run(args) => worker::run(&env, args).await,
            Command::Resync(args) => worker::resync(&env, args).await,
            Command::Jobs(args) => worker::jobs(&env, args).await,
            Command::Deltas(args) => deltas::run(&env, args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(err) => fail(err),
    }
}

fn fail(err: anyhow::Error) -> ExitCode {
    eprintln!("error: {err:#}");
    ExitCode::FAILURE
}
