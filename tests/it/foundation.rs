//! The foundation's contract: host schema, migrations, connections, the CLI
//! frame and its exit codes.

use serde_json::Value;
use sqlx::{Connection, Executor, PgConnection};

use crate::harness::{status_json, stderr, stdout, TestApp};

async fn columns(app: &TestApp, table: &str) -> Vec<(String, String, String, Option<String>)> {
    sqlx::query_as(
        "SELECT column_name::TEXT, data_type::TEXT, is_nullable::TEXT, column_default::TEXT \
         FROM information_schema.columns WHERE table_schema = 'public' AND table_name = $1 \
         ORDER BY ordinal_position",
    )
    .bind(table)
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn host_schema_matches_the_contract() {
    let app = TestApp::spawn().await;
    let users = columns(&app, "users").await;
    assert_eq!(
        users
            .iter()
            .map(|(n, t, null, _)| (n.as_str(), t.as_str(), null.as_str()))
            .collect::<Vec<_>>(),
        vec![("id", "bigint", "NO"), ("plan_version", "bigint", "NO")]
    );
    assert_eq!(users[1].3.as_deref(), Some("0"));

    let appointments = columns(&app, "appointments").await;
    let shape: Vec<(&str, &str, &str)> = appointments
        .iter()
        .map(|(n, t, null, _)| (n.as_str(), t.as_str(), null.as_str()))
        .collect();
    assert_eq!(
        shape,
        vec![
            ("id", "bigint", "NO"),
            ("user_id", "bigint", "NO"),
            ("summary", "text", "NO"),
            ("description", "text", "YES"),
            ("location", "text", "YES"),
            ("start_at", "timestamp with time zone", "NO"),
            ("end_at", "timestamp with time zone", "NO"),
            ("start_time_zone", "text", "YES"),
            ("end_time_zone", "text", "YES"),
            ("all_day", "boolean", "NO"),
            ("created_at", "timestamp with time zone", "NO"),
            ("updated_at", "timestamp with time zone", "NO"),
        ]
    );
    let default_of = |name: &str| {
        appointments
            .iter()
            .find(|c| c.0 == name)
            .and_then(|c| c.3.clone())
            .unwrap_or_default()
    };
    assert!(default_of("id").starts_with("nextval("));
    assert_eq!(default_of("all_day"), "false");
    assert_eq!(default_of("created_at"), "now()");
    assert_eq!(default_of("updated_at"), "now()");

    // The worker's tables and its migration history live in `plansync`.
    let history: Option<String> =
        sqlx::query_scalar("SELECT to_regclass('plansync._sqlx_migrations')::TEXT")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(history.is_some());
    let public_history: Option<String> =
        sqlx::query_scalar("SELECT to_regclass('public._sqlx_migrations')::TEXT")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(
        public_history.is_none(),
        "our history must not sit in public"
    );
}

#[tokio::test]
async fn migrate_creates_the_database_and_is_repeatable() {
    let app = TestApp::unmigrated().await;
    app.pool.close().await;
    let mut admin = PgConnection::connect(&app.database_url.replace(&app.db_name, "postgres"))
        .await
        .unwrap();
    admin
        .execute(format!("DROP DATABASE \"{}\" WITH (FORCE)", app.db_name).as_str())
        .await
        .unwrap();

    for _ in 0..2 {
        let out = app.run(&["migrate"], "").await;
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let mut conn = PgConnection::connect(&app.database_url).await.unwrap();
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'plansync' \
         AND table_name = 'connections'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(tables, 1);
}

#[tokio::test]
async fn migrate_keeps_a_hosts_existing_tables_columns_and_rows() {
    let app = TestApp::unmigrated().await;
    app.pool
        .execute(
            "CREATE TABLE users (id BIGINT PRIMARY KEY, email TEXT NOT NULL, \
                 plan_version BIGINT NOT NULL DEFAULT 0); \
             CREATE TABLE appointments (id BIGSERIAL PRIMARY KEY, \
                 user_id BIGINT NOT NULL REFERENCES users(id), summary TEXT NOT NULL, \
                 description TEXT, location TEXT, start_at TIMESTAMPTZ NOT NULL, \
                 end_at TIMESTAMPTZ NOT NULL, start_time_zone TEXT, end_time_zone TEXT, \
                 all_day BOOLEAN NOT NULL DEFAULT FALSE, colour TEXT DEFAULT 'blue', \
                 created_at TIMESTAMPTZ NOT NULL DEFAULT now(), \
                 updated_at TIMESTAMPTZ NOT NULL DEFAULT now()); \
             INSERT INTO users (id, email, plan_version) VALUES (7, 'a@example.com', 41); \
             INSERT INTO appointments (user_id, summary, start_at, end_at, colour) \
                 VALUES (7, 'Kept', '2026-12-01T10:00:00Z', '2026-12-01T11:00:00Z', 'red');",
        )
        .await
        .unwrap();

    for _ in 0..2 {
        let out = app.run(&["migrate"], "").await;
        assert!(out.status.success(), "{}", stderr(&out));
    }

    let (email, version): (String, i64) =
        sqlx::query_as("SELECT email, plan_version FROM users WHERE id = 7")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!((email.as_str(), version), ("a@example.com", 41));
    let (summary, colour): (String, String) =
        sqlx::query_as("SELECT summary, colour FROM appointments")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!((summary.as_str(), colour.as_str()), ("Kept", "red"));
    assert!(columns(&app, "users").await.iter().any(|c| c.0 == "email"));
}

async fn connect(app: &TestApp, user: &str, calendar: &str, token: &str, extra: &[&str]) -> i64 {
    let mut args = vec!["connect", "--user", user, "--calendar", calendar];
    args.extend_from_slice(extra);
    let out = app.run(&args, &format!("{token}\n")).await;
    assert!(out.status.success(), "connect failed: {}", stderr(&out));
    stdout(&out).trim().parse().expect("connect prints the id")
}

#[tokio::test]
async fn connect_then_status_shows_the_connection_and_never_the_token() {
    let app = TestApp::spawn().await;
    app.add_user(1).await;
    let token = "1//0gSECRET-refresh-token-value";
    let id = connect(&app, "1", "primary", token, &[]).await;

    let status = status_json(&app, &[]).await;
    let text = status.to_string();
    assert!(!text.contains("SECRET"), "token leaked into status: {text}");
    let conns = status["connections"].as_array().unwrap();
    assert_eq!(conns.len(), 1);
    let c = &conns[0];
    assert_eq!(c["id"], id);
    assert_eq!(c["userId"], 1);
    assert_eq!(c["calendarId"], "primary");
    assert_eq!(c["region"], "default");
    assert_eq!(c["active"], true);
    assert_eq!(
        c["pushTarget"], true,
        "the only connection is the implied target"
    );
    assert_eq!(c["needsReauth"], false);
    assert_eq!(c["calendarGone"], false);
    assert!(c["lastPullAt"].is_null());
    for key in ["syncTokenAt", "pendingPushes", "lastError", "lastConflict"] {
        assert!(c.get(key).is_some(), "status lacks {key}");
    }
    for key in ["depth", "oldestDueLagSecs", "running", "dead"] {
        assert!(status["queue"].get(key).is_some(), "queue lacks {key}");
    }
    for key in ["backlog", "oldestAgeSecs"] {
        assert!(status["outbox"].get(key).is_some(), "outbox lacks {key}");
    }

    // Stored encrypted: neither a column nor a dump of the database holds it.
    let dump = tokio::process::Command::new("pg_dump")
        .arg("--data-only")
        .arg(&app.database_url)
        .output()
        .await
        .expect("pg_dump runs");
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let dump = String::from_utf8_lossy(&dump.stdout);
    assert!(dump.contains("primary"), "the dump has the connection row");
    assert!(!dump.contains("SECRET"), "token found in pg_dump");

    let stored: Vec<u8> =
        sqlx::query_scalar("SELECT refresh_token_enc FROM plansync.connections WHERE id = $1")
            .bind(id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let plain = app
        .cipher()
        .decrypt(plansync::ids::UserId(1), &"primary".into(), &stored)
        .unwrap();
    assert_eq!(plain.expose_secret(), token);
}

#[tokio::test]
async fn reconnect_replaces_the_token_and_clears_needs_reauth() {
    let app = TestApp::spawn().await;
    app.add_user(1).await;
    let id = connect(&app, "1", "primary", "first-token", &[]).await;
    sqlx::query(
        "UPDATE plansync.connections SET needs_reauth = TRUE, last_error = 'invalid_grant' \
         WHERE id = $1",
    )
    .bind(id)
    .execute(&app.pool)
    .await
    .unwrap();
    let again = connect(&app, "1", "primary", "second-token", &["--region", "eu"]).await;
    assert_eq!(again, id, "re-connect keeps the connection");

    let (stored, needs_reauth, region, count): (Vec<u8>, bool, String, i64) = sqlx::query_as(
        "SELECT refresh_token_enc, needs_reauth, region, \
             (SELECT count(*) FROM plansync.connections) FROM plansync.connections WHERE id = $1",
    )
    .bind(id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let plain = app
        .cipher()
        .decrypt(plansync::ids::UserId(1), &"primary".into(), &stored)
        .unwrap();
    assert_eq!(plain.expose_secret(), "second-token");
    assert!(!needs_reauth);
    assert_eq!(region, "eu");
    assert_eq!(count, 1);
    let status = status_json(&app, &[]).await;
    assert!(status["connections"][0]["lastError"].is_null());
}

#[tokio::test]
async fn connect_for_a_missing_user_fails_naming_it() {
    let app = TestApp::spawn().await;
    let out = app
        .run(
            &["connect", "--user", "42", "--calendar", "primary"],
            "tok\n",
        )
        .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("user 42 does not exist"),
        "{}",
        stderr(&out)
    );
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM plansync.connections")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(count, 0);
}

#[tokio::test]
async fn usage_and_config_errors_have_the_right_exit_codes() {
    let app = TestApp::spawn().await;
    app.add_user(1).await;

    let out = app.run(&["--bogus"], "").await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = app
        .run(&["connect", "--user", "abc", "--calendar", "x"], "t\n")
        .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--user"), "{}", stderr(&out));

    let out = app.run(&["--version"], "").await;
    assert!(out.status.success());
    assert!(stdout(&out).starts_with("plansync "));

    // Empty stdin: nothing to store.
    let out = app
        .run(&["connect", "--user", "1", "--calendar", "primary"], "\n")
        .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no refresh token on stdin"));

    let mut without_key = app.command();
    without_key.env_remove("PLANSYNC_TOKEN_KEY");
    let out = crate::harness::run_command(
        without_key,
        &["connect", "--user", "1", "--calendar", "primary"],
        "tok\n",
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("PLANSYNC_TOKEN_KEY"),
        "{}",
        stderr(&out)
    );

    let mut bad_key = app.command();
    bad_key.env("PLANSYNC_TOKEN_KEY", "c2hvcnQ=");
    let out = crate::harness::run_command(
        bad_key,
        &["connect", "--user", "1", "--calendar", "primary"],
        "tok\n",
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("PLANSYNC_TOKEN_KEY is invalid"),
        "{}",
        stderr(&out)
    );

    for args in [&["migrate"][..], &["status"][..], &["status", "--json"][..]] {
        let mut cmd = app.command();
        cmd.env_remove("PLANSYNC_TOKEN_KEY");
        let out = crate::harness::run_command(cmd, args, "").await;
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }

    let mut bad_log = app.command();
    bad_log.env("PLANSYNC_LOG_FORMAT", "xml");
    let out = crate::harness::run_command(bad_log, &["status"], "").await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("PLANSYNC_LOG_FORMAT"));
}

#[tokio::test]
async fn disconnect_forgets_the_token_and_keeps_the_row() {
    let app = TestApp::spawn().await;
    app.add_user(1).await;
    let id = connect(&app, "1", "primary", "tok", &[]).await;
    let out = app
        .run(&["disconnect", "--connection", &id.to_string()], "")
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let (active, token): (bool, Option<Vec<u8>>) =
        sqlx::query_as("SELECT active, refresh_token_enc FROM plansync.connections WHERE id = $1")
            .bind(id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(!active);
    assert!(token.is_none());
    let status = status_json(&app, &[]).await;
    assert_eq!(status["connections"][0]["active"], false);
    assert_eq!(status["connections"][0]["pushTarget"], false);

    let out = app.run(&["disconnect", "--connection", "999"], "").await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("connection 999 does not exist"));

    // Connecting the same calendar again reactivates the same row.
    assert_eq!(connect(&app, "1", "primary", "tok2", &[]).await, id);
}

#[tokio::test]
async fn one_push_target_per_user_and_marking_another_moves_it() {
    let app = TestApp::spawn().await;
    app.add_user(1).await;
    app.add_user(2).await;
    let a = connect(&app, "1", "a@example.com", "t", &[]).await;
    let b = connect(&app, "1", "b@example.com", "t", &["--push-target"]).await;
    let other = connect(&app, "2", "primary", "t", &["--push-target"]).await;
    let targets = |status: &Value| -> Vec<(i64, bool)> {
        status["connections"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["id"].as_i64().unwrap(),
                    c["pushTarget"].as_bool().unwrap(),
                )
            })
            .collect()
    };
    let status = status_json(&app, &[]).await;
    assert_eq!(targets(&status), vec![(a, false), (b, true), (other, true)]);

    connect(&app, "1", "a@example.com", "t", &["--push-target"]).await;
    let status = status_json(&app, &["--user", "1"]).await;
    assert_eq!(targets(&status), vec![(a, true), (b, false)]);
}

#[tokio::test]
async fn deleting_a_user_cascades_to_its_connections() {
    let app = TestApp::spawn().await;
    app.add_user(1).await;
    connect(&app, "1", "primary", "t", &[]).await;
    sqlx::query("DELETE FROM users WHERE id = 1")
        .execute(&app.pool)
        .await
        .unwrap();
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM plansync.connections")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(count, 0);
}
