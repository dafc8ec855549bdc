//! Delegated connections syncing through the binary: grants per member,
//! refused members, withdrawn delegation, a missing key file.

use super::*;

#[tokio::test]
async fn a_delegated_connection_imports_and_pushes_with_grants_for_its_member_only() {
    let clinic = Clinic::start(&[ALICE, BOB]).await;
    let id = clinic.connect_as(1, ALICE).await;

    let first = clinic.run_once().await;
    assert_eq!(clinic.appointments(1).await, ["Team meeting", "Ward round"]);

    let start = Utc::now() + Days::days(3);
    sqlx::query(
        "INSERT INTO appointments (user_id, summary, start_at, end_at) VALUES (1, 'Case review', $1, $2)",
    )
    .bind(start)
    .bind(start + Days::hours(1))
    .execute(&clinic.sync.app.pool)
    .await
    .unwrap();
    let second = clinic.run_once().await;
    let event_id: String =
        sqlx::query_scalar("SELECT l.event_id FROM plansync.links l JOIN appointments a ON a.id = l.appointment_id WHERE a.summary = 'Case review'")
            .fetch_one(&clinic.sync.app.pool)
            .await
            .unwrap();
    let pushed = clinic.sync.google.get_event(ALICE, &event_id).unwrap();
    assert_eq!(pushed["summary"], "Case review");

    let grants = clinic.grants();
    assert!(!grants.is_empty());
    for grant in &grants {
        let body = grant.body.as_ref().unwrap();
        assert_eq!(body["grant_type"], JWT_BEARER, "only JWT grants");
        assert_eq!(body["assertion"], "[REDACTED]");
        assert_eq!(grant.subject.as_deref(), Some(ALICE));
        assert_eq!(grant.status, Some(200));
    }
    let api: Vec<_> = clinic
        .sync
        .google
        .requests()
        .into_iter()
        .filter(|r| r.operation != Operation::Token)
        .collect();
    assert!(api.iter().any(|r| r.operation == Operation::Insert));
    for request in &api {
        assert_eq!(request.subject.as_deref(), Some(ALICE), "{request:?}");
        assert_ne!(request.status, Some(401), "{request:?}");
        assert!(on_calendar_of(request, ALICE), "{}", request.path);
    }

    let status = clinic.status().await;
    let c = connection(&status, id);
    assert_eq!(c["auth"], "delegated");
    assert_eq!(c["subject"], ALICE);
    assert_eq!(c["needsReauth"], false);
    let text = clinic.run(&["status"], "").await;
    let text = stdout(&text);
    assert!(
        text.contains("AUTH") && text.contains(&format!("delegated as {ALICE}")),
        "{text}"
    );

    let dump = std::process::Command::new("pg_dump")
        .arg("--dbname")
        .arg(&clinic.sync.app.database_url)
        .output()
        .expect("pg_dump runs");
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let dump = String::from_utf8_lossy(&dump.stdout).into_owned();
    assert!(dump.contains(ALICE), "the dump holds the connection");
    let status_text = status.to_string();
    let google_log = serde_json::to_string(&clinic.sync.google.requests()).unwrap();
    clinic.assert_no_secrets(&[&first, &second, &dump, &status_text, &text, &google_log]);
    drop(clinic.dir);
}

#[tokio::test]
async fn members_get_their_own_tokens_and_a_refused_member_needs_reauth_until_allowed() {
    let clinic = Clinic::start(&[ALICE, BOB]).await;
    let alice = clinic.connect_as(1, ALICE).await;
    let bob = clinic.connect_as(2, BOB).await;
    let carol = clinic.connect_as(3, CAROL).await;
    let log = clinic.run_once().await;

    assert_eq!(clinic.appointments(1).await, ["Team meeting", "Ward round"]);
    assert_eq!(clinic.appointments(2).await, ["Home visit"]);
    assert!(clinic.appointments(3).await.is_empty());

    // One key file, a grant and a token per member: each calendar was read
    // with its own member's token only.
    for member in [ALICE, BOB] {
        let ok = clinic
            .grants()
            .iter()
            .filter(|g| g.subject.as_deref() == Some(member) && g.status == Some(200))
            .count();
        assert!(ok >= 1, "{member} got a token");
        let calls: Vec<_> = clinic
            .sync
            .google
            .requests()
            .into_iter()
            .filter(|r| on_calendar_of(r, member))
            .collect();
        assert!(!calls.is_empty());
        assert!(calls.iter().all(|r| r.subject.as_deref() == Some(member)));
    }
    let refused: Vec<_> = clinic
        .grants()
        .into_iter()
        .filter(|g| g.subject.as_deref() == Some(CAROL))
        .collect();
    assert!(!refused.is_empty());
    assert!(refused.iter().all(|g| g.status == Some(401)));

    let status = clinic.status().await;
    for (id, needs_reauth) in [(alice, false), (bob, false), (carol, true)] {
        assert_eq!(connection(&status, id)["needsReauth"], needs_reauth, "{id}");
    }
    let reason = connection(&status, carol)["lastError"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(reason.contains("unauthorized_client"), "{reason}");
    assert!(reason.contains(CAROL), "{reason}");

    // The administrator grants it; re-connecting repairs the connection.
    clinic.sync.google.allow_subject(CAROL);
    assert_eq!(clinic.connect_as(3, CAROL).await, carol);
    let log2 = clinic.run_once().await;
    assert_eq!(clinic.appointments(3).await, ["Training"]);
    let status = clinic.status().await;
    let c = connection(&status, carol);
    assert_eq!(c["needsReauth"], false);
    assert_eq!(c["lastError"], Value::Null);
    let status_text = status.to_string();
    clinic.assert_no_secrets(&[&log, &log2, &status_text]);
}

#[tokio::test]
async fn withdrawing_delegation_mid_way_marks_the_connection_and_reconnecting_switches_auth() {
    let clinic = Clinic::start(&[ALICE]).await;
    let id = clinic.connect_as(1, ALICE).await;
    clinic.run_once().await;
    clinic.sync.google.disallow_subject(ALICE);
    let out = clinic
        .run(&["resync", "--user", "1", "--calendar", ALICE], "")
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    clinic.run_once().await;
    let status = clinic.status().await;
    assert_eq!(connection(&status, id)["needsReauth"], true);

    // Re-connecting with a refresh token (no --impersonate) switches the
    // connection back to per-user consent.
    let token = clinic.sync.google.refresh_tokens()[0].clone();
    let out = clinic
        .sync
        .run(
            &["connect", "--user", "1", "--calendar", ALICE],
            &format!("{token}\n"),
        )
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), id.to_string());
    let status = clinic.status().await;
    let c = connection(&status, id);
    assert_eq!(
        (c["auth"].as_str(), &c["subject"]),
        (Some("refresh_token"), &Value::Null)
    );
    assert_eq!(c["needsReauth"], false);
    clinic.sync.google.clear_requests();
    // Refresh-token connections need the OAuth client: without it `run`
    // refuses to start, naming it.
    let out = clinic.run(&["run", "--once"], "").await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("GOOGLE_CLIENT_ID"),
        "{}",
        stderr(&out)
    );
    let mut cmd = clinic.sync.command();
    cmd.env("GOOGLE_SERVICE_ACCOUNT_KEY", &clinic.key_file);
    let out = run_command(cmd, &["run", "--once"], "").await;
    assert!(out.status.success(), "{}", stderr(&out));
    let grants = clinic.grants();
    assert!(!grants.is_empty());
    assert!(grants
        .iter()
        .all(|g| g.body.as_ref().unwrap()["grant_type"] == "refresh_token" && g.subject.is_none()));
}

#[tokio::test]
async fn run_refuses_to_start_without_a_usable_key_file_while_delegated_connections_exist() {
    let clinic = Clinic::start(&[ALICE]).await;
    clinic.connect_as(1, ALICE).await;
    let mut cmd = clinic.command();
    cmd.env_remove("GOOGLE_SERVICE_ACCOUNT_KEY");
    let out = run_command(cmd, &["run", "--once"], "").await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("GOOGLE_SERVICE_ACCOUNT_KEY is not set"),
        "{}",
        stderr(&out)
    );

    for (name, content) in [("missing.json", None), ("huge.json", Some(&*" ".repeat(100_000))), ("broken.json", Some("{\"type\": 1")), ("nokey.json", Some("{\"private_key\": \"-----BEGIN PRIVATE KEY-----\\nAAAA\\n-----END PRIVATE KEY-----\\n\", \"client_email\": \"x@y\", \"token_uri\": \"http://127.0.0.1:9/token\"}"))] {
        let path = clinic.dir.path().join(name);
        if let Some(content) = content {
            std::fs::write(&path, content).unwrap();
        }
        let mut cmd = clinic.command();
        cmd.env("GOOGLE_SERVICE_ACCOUNT_KEY", &path);
        let out = run_command(cmd, &["run", "--once"], "").await;
        assert!(!out.status.success(), "{name}");
        let err = stderr(&out);
        assert!(err.contains("GOOGLE_SERVICE_ACCOUNT_KEY"), "{name}: {err}");
        assert!(err.contains(name), "{name}: {err}");
    }
    assert!(clinic.grants().is_empty(), "no job ran");

    // Not an address: a usage error, nothing registered.
    let out = clinic
        .run(
            &[
                "connect",
                "--user",
                "1",
                "--calendar",
                "primary",
                "--impersonate",
                "alice",
            ],
            "",
        )
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not an e-mail address"),
        "{}",
        stderr(&out)
    );
}
