//! `plansync fake-google --record` and `--replay`.

use super::*;

/// `plansync fake-google ARGS` until it prints `listening on ADDR`; the rest
/// of its stderr is collected for [`stop_cli`].
async fn start_cli(
    args: &[&str],
) -> (
    tokio::process::Child,
    String,
    tokio::task::JoinHandle<String>,
) {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_plansync"))
        .arg("fake-google")
        .args(args)
        .env("NO_COLOR", "1")
        .env("PLANSYNC_LOG_FORMAT", "pretty")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(rest) = line.split("listening on ").nth(1) {
                return rest.split_whitespace().next().unwrap().to_owned();
            }
        }
        panic!("fake-google {args:?} exited before listening");
    })
    .await
    .expect("`listening on <addr>` on stderr");
    let rest = tokio::spawn(async move {
        let mut out = String::new();
        while let Ok(Some(line)) = lines.next_line().await {
            out.push_str(&line);
            out.push('\n');
        }
        out
    });
    (child, addr, rest)
}

/// SIGTERM, then (exit success, the rest of stderr).
async fn stop_cli(
    mut child: tokio::process::Child,
    rest: tokio::task::JoinHandle<String>,
) -> (bool, String) {
    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(std::time::Duration::from_secs(10), child.wait())
        .await
        .expect("exits on SIGTERM")
        .unwrap();
    (status.success(), rest.await.unwrap())
}

#[tokio::test]
async fn the_cli_records_a_scrubbed_session_and_replays_it() {
    let dir = tempfile::tempdir().unwrap();
    let recording = dir.path().join("session");
    let recording_arg = recording.to_str().unwrap();
    let sync = SyncApp::spawn().await;
    sync.google
        .create_event("primary", event("event00001", PERSONAL[0], 4, json!({})))
        .unwrap();
    let (child, addr, rest) = start_cli(&[
        "--addr",
        "127.0.0.1:0",
        "--record",
        recording_arg,
        "--upstream-api",
        &sync.google.base_url(),
        "--upstream-token",
        &sync.google.token_url(),
        "--scrub",
    ])
    .await;
    sync.connect(USER, "primary", &[]).await;
    let mut cmd = sync.command();
    cmd.env(
        "GOOGLE_CALENDAR_BASE_URL",
        format!("http://{addr}/calendar/v3/"),
    )
    .env("GOOGLE_TOKEN_URL", format!("http://{addr}/token"))
    .envs(REPLAYABLE_ENV);
    let out = run_command(cmd, &["run", "--once"], "").await;
    assert!(out.status.success(), "{}", stderr(&out));
    let (ok, _) = stop_cli(child, rest).await;
    assert!(ok);
    let files = Recording::files(&recording);
    assert!(!files.contains(PERSONAL[0]), "scrubbed");
    assert!(files.contains("summary-1"));
    assert!(!files.contains(&sync.google.refresh_tokens()[0]));
    assert!(!files.contains(&sync.google.client_secret()));

    // Replayed by the CLI for a fresh database: exact, reported on exit.
    let app = crate::harness::TestApp::spawn().await;
    let (child, addr, rest) =
        start_cli(&["--addr", "127.0.0.1:0", "--replay", recording_arg]).await;
    let mut cmd = app.command();
    cmd.env(
        "GOOGLE_CALENDAR_BASE_URL",
        format!("http://{addr}/calendar/v3/"),
    )
    .env("GOOGLE_TOKEN_URL", format!("http://{addr}/token"))
    .env("GOOGLE_CLIENT_ID", "replay-client")
    .env("GOOGLE_CLIENT_SECRET", "replay-secret")
    .envs(REPLAYABLE_ENV);
    app.add_user(USER).await;
    let out = run_command(
        app.command(),
        &["connect", "--user", "1", "--calendar", "primary"],
        "replay-refresh-token\n",
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run_command(cmd, &["run", "--once"], "").await;
    assert!(out.status.success(), "{}", stderr(&out));
    let summary: String = sqlx::query_scalar("SELECT summary FROM appointments")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(summary, "summary-1");
    let (ok, report) = stop_cli(child, rest).await;
    assert!(ok, "{report}");
    assert!(report.contains("2 of 2 exchanges used"), "{report}");
}
