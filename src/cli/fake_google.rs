//! `fake-google`: serves the emulator until SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use plansync::fake_google::{FakeGoogle, FakeGoogleOptions};
use tokio::signal::unix::{signal, SignalKind};

#[derive(Debug, clap::Args)]
pub struct FakeGoogleArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8085")]
    addr: SocketAddr,
    /// Fixtures directory: `oauth.json` and one `<calendarId>.json` per calendar.
    #[arg(long)]
    fixtures: PathBuf,
    /// Cap every events.list page at this many items.
    #[arg(long)]
    page_cap: Option<usize>,
    /// Grant notification channels at most this many seconds (default: a
    /// week, as Google), so renewals can be watched.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    channel_ttl_secs: Option<u64>,
    /// Milliseconds added to every API and token call (Google-like latency).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    latency_ms: u64,
}

pub async fn run(args: FakeGoogleArgs) -> anyhow::Result<ExitCode> {
    // Handlers first: whoever reads `listening on` may signal at once.
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let server = FakeGoogle::start(FakeGoogleOptions {
        addr: args.addr,
        fixtures: Some(args.fixtures.clone()),
        page_cap: args.page_cap,
        channel_ttl: args.channel_ttl_secs.map_or(
            FakeGoogleOptions::default().channel_ttl,
            std::time::Duration::from_secs,
        ),
        latency: std::time::Duration::from_millis(args.latency_ms),
        ..FakeGoogleOptions::default()
    })
    .await
    .with_context(|| format!("starting the emulator with {}", args.fixtures.display()))?;
    tracing::info!(
        calendars = ?server.calendar_ids(),
        base_url = %server.base_url(),
        token_url = %server.token_url(),
        "listening on {}",
        server.addr()
    );
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("shutting down");
    server.shutdown().await;
    Ok(ExitCode::SUCCESS)
}
