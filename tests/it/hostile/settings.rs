//! Numbers from outside bounded, bad settings named, the wrong token key.

use super::*;

#[tokio::test]
async fn outside_numbers_are_bounded_and_bad_settings_named() {
    let (app, id, _deltas) = synced().await;
    // A token answer with an absurd lifetime, then one with CR/LF.
    app.google.inject_fault(
        Operation::Token,
        respond(
            200,
            r#"{"access_token":"tok","expires_in":18446744073709551615,"token_type":"Bearer"}"#,
        ),
        1,
    );
    app.google
        .create_event("primary", timed("delta", 5, 10))
        .unwrap();
    resync(&app, 1, false).await;
    app.run_once().await;
    assert!(summaries(&app).await.contains(&"delta".to_owned()));

    app.google.inject_fault(
        Operation::Token,
        respond(
            200,
            "{\"access_token\":\"a\\r\\nX-Evil: 1\",\"expires_in\":3600}",
        ),
        100,
    );
    // A fresh process has no cached access token.
    resync(&app, 1, false).await;
    app.run_once().await;
    app.google.clear_faults();
    let c = connection_status(&app.status().await, id);
    assert!(
        c["lastError"].as_str().unwrap().contains("header-safe"),
        "{c}"
    );
    assert_eq!(c["needsReauth"], false);

    for (var, value) in [
        ("PLANSYNC_LOOKBACK_DAYS", "4000000000"),
        ("PLANSYNC_LEASE_SECS", "0"),
        ("PLANSYNC_MAX_PAGES", "0"),
        ("PLANSYNC_CONCURRENCY", "100000"),
    ] {
        let out = app
            .run_with(&[(var, Some(value))], &["run", "--once"], "")
            .await;
        assert_eq!(out.status.code(), Some(1), "{var}={value}");
        assert!(stderr(&out).contains(var), "{var}: {}", stderr(&out));
    }
    // The settings tests rely on stay legal.
    let out = app
        .run_with(
            &[
                ("PLANSYNC_LEASE_SECS", Some("1")),
                ("PLANSYNC_RETRY_BASE_SECS", Some("0")),
            ],
            &["run", "--once"],
            "",
        )
        .await;
    assert!(out.status.success(), "{}", stderr(&out));

    // connect reads at most 8 KiB of stdin.
    let mut cmd = app.command();
    cmd.args(["connect", "--user", "1", "--calendar", "other"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    let feeder = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let zeros = vec![0u8; 1 << 16];
        // Like /dev/zero: endless, until the reader hangs up.
        while input.write_all(&zeros).await.is_ok() {}
    });
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("connect stops reading")
        .unwrap();
    feeder.abort();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("longer than 8192 bytes"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn the_wrong_token_key_is_refused_before_work_and_snoozes_a_job() {
    let (app, id, _deltas) = synced().await;
    let wrong = plansync::crypto::TokenCipher::generate_key();
    let out = app
        .run_with(
            &[("PLANSYNC_TOKEN_KEY", Some(&wrong))],
            &["run", "--once"],
            "",
        )
        .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("PLANSYNC_TOKEN_KEY"),
        "{}",
        stderr(&out)
    );
    let out = app
        .run_with(
            &[("PLANSYNC_TOKEN_KEY", Some(&wrong))],
            &["connect", "--user", "1", "--calendar", "second"],
            "tok\n",
        )
        .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("PLANSYNC_TOKEN_KEY"),
        "{}",
        stderr(&out)
    );

    // A token the right key cannot open (written by a replica with another
    // key): the job backs off without spending attempts, and the connection
    // is not marked needs-reauth.
    sqlx::query("UPDATE plansync.connections SET refresh_token_enc = $2 WHERE id = $1")
        .bind(id)
        .bind(vec![7u8; 60])
        .execute(&app.app.pool)
        .await
        .unwrap();
    resync(&app, 1, false).await;
    app.run_once().await;
    let c = connection_status(&app.status().await, id);
    assert_eq!(c["needsReauth"], false);
    assert!(
        c["lastError"]
            .as_str()
            .unwrap()
            .contains("PLANSYNC_TOKEN_KEY"),
        "{c}"
    );
    let attempts: i32 = sqlx::query_scalar(
        "SELECT attempts FROM plansync.jobs WHERE connection_id = $1 AND state = 'queued'",
    )
    .bind(id)
    .fetch_one(&app.app.pool)
    .await
    .unwrap();
    assert_eq!(attempts, 0);
}
