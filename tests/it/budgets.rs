//! Statement budgets (issue 19): what one job sends to PostgreSQL, counted
//! from the worker's own statement log ([`StatementRecorder`]): the claim
//! that handed the job out, every statement of the job (BEGIN, COMMIT and
//! `set_config` included) and its completion. Each test first checks the job
//! did its work, so a budget is never met by doing nothing.
//!
//! - a first or incremental pull of a small calendar: at most 2 transactions
//!   and 12 statements;
//! - a push of one appointment (insert, patch or delete): at most 2
//!   transactions and 10 statements.

use chrono::{Duration, Utc};
use serde_json::{json, Value};

use crate::harness::statements::{JobCost, StatementRecorder};
use crate::harness::{stderr, SyncApp};

const PULL_STATEMENTS: usize = 12;
const PUSH_STATEMENTS: usize = 10;
const TRANSACTIONS: usize = 2;

/// A one-hour event `days` from now (the pull tests' shape).
fn event(summary: &str, days: i64) -> Value {
    crate::pull::timed(summary, days, 9)
}

async fn summaries(app: &SyncApp) -> Vec<String> {
    sqlx::query_scalar("SELECT summary FROM appointments ORDER BY summary")
        .fetch_all(&app.app.pool)
        .await
        .unwrap()
}

/// One in-process pass, recorded; the pass must run exactly one job, and it
/// must succeed.
async fn recorded_pass(app: &SyncApp) -> JobCost {
    let recorder = StatementRecorder::start().await;
    let report = app.run_once().await;
    let cost = recorder.job_cost();
    drop(recorder);
    assert_eq!(
        (report.ran, report.succeeded),
        (1, 1),
        "the pass should run one job, successfully: {report:?}"
    );
    cost
}

fn assert_within(what: &str, cost: &JobCost, statements: usize) {
    eprintln!(
        "{what}: {} statements in {} transactions",
        cost.statements(),
        cost.transactions()
    );
    assert!(
        cost.statements() <= statements && cost.transactions() <= TRANSACTIONS,
        "{what}: {} statements in {} transactions (budget {statements} in {TRANSACTIONS}):\n{}",
        cost.statements(),
        cost.transactions(),
        cost.listing()
    );
}

async fn resync(app: &SyncApp) {
    let out = app.run(&["resync", "--user", "1"], "").await;
    assert!(out.status.success(), "resync: {}", stderr(&out));
}

#[tokio::test]
async fn a_first_pull_of_a_small_calendar_stays_within_its_budget() {
    let app = SyncApp::spawn().await;
    for (i, name) in ["Alpha", "Bravo", "Charlie", "Delta", "Echo"]
        .iter()
        .enumerate()
    {
        app.google
            .create_event("primary", event(name, i as i64 + 1))
            .unwrap();
    }
    app.connect(1, "primary", &[]).await;
    let cost = recorded_pass(&app).await;
    assert_eq!(
        summaries(&app).await,
        ["Alpha", "Bravo", "Charlie", "Delta", "Echo"]
    );
    assert_within("first pull", &cost, PULL_STATEMENTS);
}

#[tokio::test]
async fn an_incremental_pull_of_a_small_calendar_stays_within_its_budget() {
    let app = SyncApp::spawn().await;
    let id = app
        .google
        .create_event("primary", event("Standup", 1))
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.google
        .create_event("primary", event("Review", 2))
        .unwrap();
    app.connect(1, "primary", &[]).await;
    app.run_once().await;

    // One edit and one new event: an update, a link refresh, an insert and
    // their deltas.
    app.google
        .patch_event("primary", &id, json!({"summary": "Standup (moved)"}))
        .unwrap();
    app.google
        .create_event("primary", event("Retro", 3))
        .unwrap();
    resync(&app).await;
    let cost = recorded_pass(&app).await;
    assert_eq!(
        summaries(&app).await,
        ["Retro", "Review", "Standup (moved)"]
    );
    assert_within("incremental pull", &cost, PULL_STATEMENTS);

    // Nothing changed: the cheapest pull there is.
    resync(&app).await;
    let cost = recorded_pass(&app).await;
    assert_within("no-change pull", &cost, PULL_STATEMENTS);
}

async fn host_insert(app: &SyncApp, summary: &str) -> i64 {
    let start = Utc::now() + Duration::days(2);
    sqlx::query_scalar(
        "INSERT INTO appointments (user_id, summary, start_at, end_at, start_time_zone, \
             end_time_zone) VALUES (1, $1, $2, $3, 'Europe/Berlin', 'Europe/Berlin') RETURNING id",
    )
    .bind(summary)
    .bind(start)
    .bind(start + Duration::hours(1))
    .fetch_one(&app.app.pool)
    .await
    .unwrap()
}

fn google_summaries(app: &SyncApp) -> Vec<String> {
    let mut names: Vec<String> = app
        .google
        .list_events("primary", "singleEvents=true")
        .unwrap()
        .iter()
        .filter(|e| e["status"] != "cancelled")
        .filter_map(|e| e["summary"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_push_stays_within_its_budget_for_an_insert_a_patch_and_a_delete() {
    let app = SyncApp::spawn().await;
    app.connect(1, "primary", &[]).await;
    app.run_once().await;

    let id = host_insert(&app, "Dentist").await;
    let cost = recorded_pass(&app).await;
    assert_eq!(google_summaries(&app), ["Dentist"]);
    assert_within("push (insert)", &cost, PUSH_STATEMENTS);

    sqlx::query("UPDATE appointments SET summary = 'Dentist (moved)' WHERE id = $1")
        .bind(id)
        .execute(&app.app.pool)
        .await
        .unwrap();
    let cost = recorded_pass(&app).await;
    assert_eq!(google_summaries(&app), ["Dentist (moved)"]);
    assert_within("push (patch)", &cost, PUSH_STATEMENTS);

    sqlx::query("DELETE FROM appointments WHERE id = $1")
        .bind(id)
        .execute(&app.app.pool)
        .await
        .unwrap();
    let cost = recorded_pass(&app).await;
    assert!(google_summaries(&app).is_empty());
    assert_within("push (delete)", &cost, PUSH_STATEMENTS);
}

#[tokio::test]
async fn a_worker_reuses_a_connections_client_and_access_token_across_its_jobs() {
    use plansync::worker::setup::WorkerSetup;
    use plansync_fake_google::Operation;

    let app = SyncApp::spawn().await;
    app.google
        .create_event("primary", event("Standup", 1))
        .unwrap();
    app.connect(1, "primary", &[]).await;
    let setup = WorkerSetup::from_env(&app.worker_env(&[])).await.unwrap();
    app.google.clear_requests();
    let tokens = |app: &SyncApp| {
        app.google
            .requests()
            .iter()
            .filter(|r| r.operation == Operation::Token)
            .count()
    };

    let first = setup.worker.run_once().await.unwrap();
    assert_eq!((first.ran, first.succeeded), (1, 1));
    assert_eq!(tokens(&app), 1, "the first job refreshes the access token");
    for summary in ["Review", "Retro"] {
        app.google
            .create_event("primary", event(summary, 2))
            .unwrap();
        resync(&app).await;
        let pass = setup.worker.run_once().await.unwrap();
        assert_eq!((pass.ran, pass.succeeded), (1, 1));
    }
    assert_eq!(summaries(&app).await, ["Retro", "Review", "Standup"]);
    assert_eq!(
        tokens(&app),
        1,
        "later jobs of the connection reuse its client and access token"
    );

    // A re-connect stores a new refresh token: the next job builds a new
    // client with it (a new token grant), never the old one.
    app.connect(1, "primary", &[]).await;
    let pass = setup.worker.run_once().await.unwrap();
    assert_eq!((pass.ran, pass.succeeded), (1, 1));
    assert_eq!(
        tokens(&app),
        2,
        "a re-connected connection gets a new client"
    );
}
