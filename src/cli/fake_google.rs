//! `fake-google`: serves the emulator (or, with `--record`, a recording proxy;
//! with `--replay`, a replay server) until SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use plansync_fake_google::{
    FakeGoogle, FakeGoogleOptions, Recorder, RecorderOptions, ReplayOptions, Replayer,
};
use tokio::signal::unix::{signal, SignalKind};

#[derive(Debug, clap::Args)]
pub struct FakeGoogleArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8085")]
    addr: SocketAddr,
    /// Fixtures directory: `oauth.json` and one `<calendarId>.json` per calendar.
    #[arg(long, required_unless_present_any = ["record", "replay"], conflicts_with_all = ["record", "replay"])]
    fixtures: Option<PathBuf>,
    /// Cap every events.list page at this many items.
    #[arg(long, conflicts_with_all = ["record", "replay"])]
    page_cap: Option<usize>,
    /// Grant notification channels at most this many seconds (default: a
    /// week, as Google), so renewals can be watched.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    channel_ttl_secs: Option<u64>,
    /// Milliseconds added to every API and token call (Google-like latency).
    #[arg(long, default_value_t = 0, conflicts_with_all = ["record", "replay"], value_parser = clap::value_parser!(u64).range(0..=60_000))]
    latency_ms: u64,
    /// Record a session into this (empty) folder, proxying to the upstream.
    #[arg(long, requires_all = ["upstream_api", "upstream_token"], conflicts_with = "replay")]
    record: Option<PathBuf>,
    /// With --record: the Calendar API root to forward `/calendar/v3/...` to
    /// (e.g. https://www.googleapis.com/calendar/v3/).
    #[arg(long, requires = "record")]
    upstream_api: Option<String>,
    /// With --record: the token endpoint to forward `/token` to
    /// (e.g. https://oauth2.googleapis.com/token).
    #[arg(long, requires = "record")]
    upstream_token: Option<String>,
    /// With --record: replace summaries, descriptions, locations, names,
    /// addresses and links by stable pseudonyms in the files.
    #[arg(long, requires = "record")]
    scrub: bool,
    /// Answer from the recording in this folder.
    #[arg(long)]
    replay: Option<PathBuf>,
}

pub async fn run(args: FakeGoogleArgs) -> anyhow::Result<ExitCode> {
    // Handlers first: whoever reads `listening on` may signal at once.
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    if let Some(dir) = &args.record {
        let mut options = RecorderOptions::new(
            dir,
            args.upstream_api.as_deref().unwrap_or_default(),
            args.upstream_token.as_deref().unwrap_or_default(),
        );
        options.addr = args.addr;
        options.scrub = args.scrub;
        let recorder = Recorder::start(options)
            .await
            .with_context(|| format!("starting the recorder into {}", dir.display()))?;
        tracing::info!(
            base_url = %recorder.base_url(),
            token_url = %recorder.token_url(),
            scrub = args.scrub,
            "recording into {}; listening on {}",
            dir.display(),
            recorder.addr()
        );
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        let written = recorder.written();
        recorder.shutdown().await;
        tracing::info!(exchanges = written, "recording ended");
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(dir) = &args.replay {
        let mut options = ReplayOptions::new(dir);
        options.addr = args.addr;
        let replayer = Replayer::start(options)
            .await
            .with_context(|| format!("starting the replay of {}", dir.display()))?;
        tracing::info!(
            base_url = %replayer.base_url(),
            token_url = %replayer.token_url(),
            "replaying {}; listening on {}",
            dir.display(),
            replayer.addr()
        );
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        let status = replayer.shutdown().await;
        // The report on exit: what was never asked for, what matched nothing.
        eprintln!("{status}");
        return Ok(if status.is_exact() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    let fixtures = args.fixtures.clone().context("--fixtures is required")?;
    let server = FakeGoogle::start(FakeGoogleOptions {
        addr: args.addr,
        fixtures: Some(fixtures.clone()),
        page_cap: args.page_cap,
        channel_ttl: args.channel_ttl_secs.map_or(
            FakeGoogleOptions::default().channel_ttl,
            std::time::Duration::from_secs,
        ),
        latency: std::time::Duration::from_millis(args.latency_ms),
        ..FakeGoogleOptions::default()
    })
    .await
    .with_context(|| format!("starting the emulator with {}", fixtures.display()))?;
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
