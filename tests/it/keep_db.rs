//! The harness's promise about test databases: a failing test's database is
//! dropped like any other, unless `PLANSYNC_TEST_KEEP_DB=1` (here: the flag
//! it sets) asks to keep it for a look.

use std::sync::mpsc;

use sqlx::Connection;

use crate::harness::TestApp;

/// Runs a test body that fails after making its database; the database's name.
fn failing_test(keep: bool) -> String {
    let (name_tx, name_rx) = mpsc::channel();
    let outcome = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let mut app = TestApp::unmigrated().await;
            app.keep_db_on_failure = keep;
            name_tx.send(app.db_name.clone()).unwrap();
            panic!("the failing test's own assertion");
        })
    })
    .join();
    assert!(outcome.is_err(), "the body failed");
    name_rx.recv().unwrap()
}

async fn exists(admin: &mut sqlx::PgConnection, name: &str) -> bool {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(name)
        .fetch_one(admin)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_failing_tests_database_is_dropped_unless_keeping_is_asked_for() {
    let mut admin = sqlx::PgConnection::connect(&crate::harness::admin_url())
        .await
        .unwrap();

    let dropped = tokio::task::spawn_blocking(|| failing_test(false))
        .await
        .unwrap();
    assert!(!exists(&mut admin, &dropped).await, "{dropped} was dropped");

    let kept = tokio::task::spawn_blocking(|| failing_test(true))
        .await
        .unwrap();
    assert!(exists(&mut admin, &kept).await, "{kept} was kept");
    sqlx::query(&format!("DROP DATABASE \"{kept}\" WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .unwrap();
}
