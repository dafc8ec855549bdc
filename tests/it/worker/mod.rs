//! The worker runtime and its commands: `run`, `run --once`, `resync`,
//! graceful shutdown, the scheduler, the HTTP endpoints.

mod commands;
mod passes;
mod shutdown;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use plansync::queue::{Job, JobKind, Queue};
use plansync::worker::{JobContext, Worker};
use tokio_util::sync::CancellationToken;

use crate::harness::jobs::{
    add_connection, eventually, job_state, queue_settings, worker_config, FnHandler,
};
use crate::harness::{count, status_json, stderr, stdout, RunningWorker, TestApp};

/// The binary with what `run` needs on top of the harness's environment.
fn worker_command(app: &TestApp) -> tokio::process::Command {
    let mut cmd = app.command();
    cmd.env("GOOGLE_CLIENT_ID", "test-client")
        .env("GOOGLE_CLIENT_SECRET", "test-secret")
        .env("PLANSYNC_HTTP_ADDR", "127.0.0.1:0")
        // Google (a closed local port, see the harness) is unreachable, so
        // every sync job fails; one attempt makes it dead at once.
        .env("PLANSYNC_MAX_ATTEMPTS", "1");
    cmd
}

async fn connect(app: &TestApp, user: &str) -> i64 {
    let out = app
        .run(
            &["connect", "--user", user, "--calendar", "primary"],
            "tok\n",
        )
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out).trim().parse().unwrap()
}
