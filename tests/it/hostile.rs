//! Hostile input (issue 10): a hostile Google (the emulator's canned answers
//! and raw items) and odd host rows. Every test checks what must hold all at
//! once: the good data synced and nothing else changed, the stored sync token
//! kept by a bad listing, no `deleted` delta at a Redis subscriber, `status`
//! naming the cause, and `run --once` returning.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use futures::StreamExt;
use plansync::fake_google::{Fault, Operation};
use serde_json::{json, Value};

use crate::harness::{stderr, stdout, SyncApp};

fn at(days: i64, hour: u32) -> String {
    let day = (Utc::now() + chrono::Duration::days(days)).date_naive();
    day.and_hms_opt(hour, 0, 0)
        .unwrap()
        .and_utc()
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn timed(summary: &str, days: i64, hour: u32) -> Value {
    json!({"summary": summary, "start": {"dateTime": at(days, hour)}, "end": {"dateTime": at(days, hour + 1)}})
}

/// Every delta published on the app's JSON channels.
struct Deltas {
    rx: tokio::sync::mpsc::UnboundedReceiver<Value>,
    seen: Vec<Value>,
    _task: tokio::task::JoinHandle<()>,
}

impl Deltas {
    async fn subscribe(app: &SyncApp) -> Deltas {
        let client = redis::Client::open(crate::harness::redis_url()).unwrap();
        let mut pubsub = client.get_async_pubsub().await.unwrap();
        pubsub
            .psubscribe(format!("{}plan-deltas:user:*", app.app.redis_prefix))
            .await
            .unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let mut stream = pubsub.into_on_message();
            while let Some(msg) = stream.next().await {
                let v: Value = serde_json::from_slice(msg.get_payload_bytes()).unwrap();
                for d in v["deltas"].as_array().unwrap() {
                    let _ = tx.send(d.clone());
                }
            }
        });
        Deltas {
            rx,
            seen: Vec::new(),
            _task: task,
        }
    }

    /// Waits until every delta the outbox holds has arrived, then returns all.
    async fn settle(&mut self, app: &SyncApp) -> &[Value] {
        let written: i64 = sqlx::query_scalar("SELECT count(*) FROM plansync.outbox")
            .fetch_one(&app.app.pool)
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while (self.seen.len() as i64) < written {
            let d = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .expect("every written delta is published")
                .unwrap();
            self.seen.push(d);
        }
        &self.seen
    }

    async fn assert_no_deletes(&mut self, app: &SyncApp) {
        let all = self.settle(app).await;
        assert!(
            all.iter().all(|d| d["action"] != "deleted"),
            "a deleted delta was published: {all:?}"
        );
    }
}

async fn summaries(app: &SyncApp) -> Vec<String> {
    sqlx::query_scalar("SELECT summary FROM appointments ORDER BY summary")
        .fetch_all(&app.app.pool)
        .await
        .unwrap()
}

async fn sync_token(app: &SyncApp, connection: i64) -> Option<String> {
    sqlx::query_scalar("SELECT sync_token FROM plansync.connections WHERE id = $1")
        .bind(connection)
        .fetch_one(&app.app.pool)
        .await
        .unwrap()
}

fn connection_status(status: &Value, id: i64) -> Value {
    status["connections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .cloned()
        .expect("the connection is in status")
}

fn respond(status: u16, body: &str) -> Fault {
    Fault::Respond {
        status,
        headers: BTreeMap::from([("content-type".to_owned(), "application/json".to_owned())]),
        body: body.to_owned(),
    }
}

async fn resync(app: &SyncApp, user: i64, full: bool) {
    let mut args = vec!["resync", "--user"];
    let u = user.to_string();
    args.push(&u);
    if full {
        args.push("--full");
    }
    let out = app.run(&args, "").await;
    assert!(out.status.success(), "resync: {}", stderr(&out));
}

/// A synced calendar of three events, with its subscriber.
async fn synced() -> (SyncApp, i64, Deltas) {
    let app = SyncApp::spawn().await;
    let deltas = Deltas::subscribe(&app).await;
    for (i, s) in ["alpha", "beta", "gamma"].iter().enumerate() {
        app.google
            .create_event("primary", timed(s, 1 + i as i64, 10))
            .unwrap();
    }
    let id = app.connect(1, "primary", &[]).await;
    app.run_once().await;
    assert_eq!(summaries(&app).await, ["alpha", "beta", "gamma"]);
    (app, id, deltas)
}

#[tokio::test]
async fn a_listing_that_is_not_a_complete_listing_never_deletes() {
    let (app, id, mut deltas) = synced().await;
    let token = sync_token(&app, id).await;
    assert!(token.is_some());
    let cases = [
        // A proxy relaying an error object with a 200.
        (
            r#"{"error":{"message":"upstream timed out"}}"#,
            true,
            "no kind",
        ),
        // An "empty calendar" that is no listing at all.
        (
            r#"{"kind":"calendar#events","nextSyncToken":"s"}"#,
            true,
            "no items",
        ),
        // A last page that does not end the listing.
        (r#"{"kind":"calendar#events","items":[]}"#, false, "neither"),
        (
            r#"{"kind":"calendar#events","items":[],"nextPageToken":"p","nextSyncToken":"s"}"#,
            true,
            "both",
        ),
        (
            r#"<html>502 bad gateway</html>"#,
            false,
            "not a valid events.list page",
        ),
    ];
    for (body, full, what) in cases {
        app.google
            .inject_fault(Operation::List, respond(200, body), 100);
        resync(&app, 1, full).await;
        app.run_once().await;
        app.google.clear_faults();

        assert_eq!(summaries(&app).await, ["alpha", "beta", "gamma"], "{body}");
        assert_eq!(
            sync_token(&app, id).await,
            token,
            "{body}: the token is kept"
        );
        deltas.assert_no_deletes(&app).await;
        let c = connection_status(&app.status().await, id);
        let err = c["lastError"].as_str().unwrap_or_default();
        assert!(err.contains(what), "{body}: lastError {err:?}");
        assert!(c["failingSince"].is_string(), "{c}");
    }
    // Google answers properly again: the connection recovers.
    resync(&app, 1, true).await;
    app.run_once().await;
    let c = connection_status(&app.status().await, id);
    assert!(
        c["lastError"].is_null() && c["failingSince"].is_null(),
        "{c}"
    );
    assert_eq!(summaries(&app).await, ["alpha", "beta", "gamma"]);
}

#[tokio::test]
async fn events_that_cannot_be_read_are_set_aside_and_the_calendar_syncs() {
    let app = SyncApp::spawn().await;
    let mut deltas = Deltas::subscribe(&app).await;
    let mut good = Vec::new();
    for (i, s) in ["one", "two", "three", "four"].iter().enumerate() {
        let e = app
            .google
            .create_event("primary", timed(s, 1 + i as i64, 9))
            .unwrap();
        good.push(e["id"].as_str().unwrap().to_owned());
    }
    let (s, e) = (at(2, 14), at(2, 15));
    let updated = "2026-01-01T00:00:00.000Z";
    let item = |id: &str, extra: &str| {
        format!(
            r#"{{"kind":"calendar#event","id":"{id}","etag":"\"e-{id}\"","status":"confirmed","updated":"{updated}","start":{{"dateTime":"{s}"}},"end":{{"dateTime":"{e}"}}{extra}}}"#
        )
    };
    let long_id = "v".repeat(3_000_000);
    let raws = [
        item("nulsummary", r#","summary":"Lunch\u0000 with Bob""#),
        format!(
            r#"{{"kind":"calendar#event","id":"nostart","etag":"\"1\"","status":"confirmed","updated":"{updated}","end":{{"dateTime":"{e}"}}}}"#
        ),
        format!(
            r#"{{"kind":"calendar#event","id":"faraway","etag":"\"1\"","status":"confirmed","updated":"{updated}","start":{{"dateTime":"{s}"}},"end":{{"dateTime":"+275760-09-13T00:00:00Z"}}}}"#
        ),
        item("surrogate", r#","summary":"a\ud800b""#),
        item("numbersummary", r#","summary":123"#),
        r#"{"kind":"calendar#event","id":"weirdstatus","status":"postponed"}"#.to_owned(),
        format!(
            r#"{{"kind":"calendar#event","id":"nooffset","etag":"\"1\"","updated":"{updated}","start":{{"dateTime":"2026-06-10T12:00:00"}},"end":{{"dateTime":"2026-06-10T13:00:00"}}}}"#
        ),
        item(&long_id, ""),
        item("nul\\u0000id", ""),
        format!(
            r#"{{"kind":"calendar#event","id":"nuletag","etag":"a\u0000b","updated":"{updated}","start":{{"dateTime":"{s}"}},"end":{{"dateTime":"{e}"}}}}"#
        ),
        r#"{"kind":"calendar#event","summary":"no id at all"}"#.to_owned(),
    ];
    for raw in &raws {
        app.google.add_raw_item("primary", raw.clone());
    }
    let id = app.connect(1, "primary", &[]).await;
    app.run_once().await;

    assert_eq!(
        summaries(&app).await,
        ["Lunch with Bob", "four", "one", "three", "two"],
        "the good events and the NUL one (without its NUL) are appointments"
    );
    assert!(sync_token(&app, id).await.is_some(), "the token advanced");
    let status = app.status().await;
    let c = connection_status(&status, id);
    let skipped = c["skippedEvents"].as_array().unwrap().clone();
    let reason_of = |event: &str| -> String {
        skipped
            .iter()
            .find(|s| s["eventId"] == event)
            .unwrap_or_else(|| panic!("{event} is set aside: {skipped:?}"))["reason"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert!(reason_of("nostart").contains("no start"));
    assert!(reason_of("faraway").contains("decode"));
    assert!(reason_of("surrogate").contains("decode"));
    assert!(reason_of("numbersummary").contains("decode"));
    assert!(reason_of("weirdstatus").contains("unknown status"));
    assert!(reason_of("nooffset").contains("decode"));
    assert!(reason_of("nulid").contains("control characters"));
    assert!(reason_of("nuletag").contains("etag"));
    let cut = skipped
        .iter()
        .find(|s| s["eventId"].as_str().is_some_and(|i| i.starts_with("vvvv")))
        .expect("the 3 MB id is set aside");
    assert_eq!(cut["eventId"].as_str().unwrap().chars().count(), 200);
    assert!(cut["eventId"].as_str().unwrap().ends_with('…'));
    assert!(skipped.iter().any(|s| s["eventId"].is_null()));
    assert!(skipped.iter().all(|s| s["seenAt"].is_string()));
    assert_eq!(skipped.len(), 11 - 1);
    assert!(c["lastError"].is_null(), "the calendar is not failing: {c}");

    // Human status and /metrics-facing counts name them too.
    let human = stdout(&app.run(&["status"], "").await);
    assert!(human.contains("skipped events: 10"), "{human}");

    // A later edit in Google of a good event arrives incrementally.
    app.google
        .patch_event("primary", &good[1], json!({"summary": "two (moved)"}))
        .unwrap();
    resync(&app, 1, false).await;
    app.run_once().await;
    assert!(summaries(&app).await.contains(&"two (moved)".to_owned()));
    let lists: Vec<_> = app
        .google
        .requests()
        .into_iter()
        .filter(|r| r.operation == Operation::List)
        .collect();
    assert!(
        lists
            .last()
            .unwrap()
            .query
            .as_deref()
            .unwrap_or("")
            .contains("syncToken"),
        "the edit came through an incremental listing"
    );
    deltas.assert_no_deletes(&app).await;

    // Once Google lists a set-aside event in a form we can read, it imports
    // and leaves the list.
    app.google.clear_raw_items("primary");
    app.google
        .add_raw_item("primary", item("nostart", r#","summary":"fixed now""#));
    resync(&app, 1, false).await;
    app.run_once().await;
    assert!(summaries(&app).await.contains(&"fixed now".to_owned()));
    let c = connection_status(&app.status().await, id);
    assert!(
        c["skippedEvents"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["eventId"] != "nostart"),
        "{c}"
    );
}

#[tokio::test]
async fn every_job_ends_even_when_google_repeats_a_page_token() {
    let (app, id, mut deltas) = synced().await;
    let token = sync_token(&app, id).await;
    app.google.clear_requests();
    app.google.inject_fault(
        Operation::List,
        respond(
            200,
            r#"{"kind":"calendar#events","items":[],"nextPageToken":"again"}"#,
        ),
        100_000,
    );
    resync(&app, 1, true).await;
    // run --once returns: the job fails at the repeated token, each attempt.
    tokio::time::timeout(Duration::from_secs(120), app.run_once())
        .await
        .expect("run --once returns");
    let lists = app
        .google
        .requests()
        .iter()
        .filter(|r| r.operation == Operation::List)
        .count();
    assert!(lists <= 2 * 8, "{lists} list calls for 8 attempts");
    assert_eq!(summaries(&app).await, ["alpha", "beta", "gamma"]);
    assert_eq!(sync_token(&app, id).await, token);
    deltas.assert_no_deletes(&app).await;
    let status = app.status().await;
    let c = connection_status(&status, id);
    assert!(
        c["lastError"]
            .as_str()
            .unwrap()
            .contains("repeated a page token"),
        "{c}"
    );
    assert!(status["queue"]["deadTotal"].as_i64().unwrap() >= 1);
    app.google.clear_faults();

    // More pages than PLANSYNC_MAX_PAGES fail the same way.
    app.google.set_page_cap(Some(1));
    resync(&app, 1, true).await;
    app.run_once_with(&[("PLANSYNC_MAX_PAGES", "2")]).await;
    let c = connection_status(&app.status().await, id);
    assert!(
        c["lastError"]
            .as_str()
            .unwrap()
            .contains("PLANSYNC_MAX_PAGES"),
        "{c}"
    );
    assert_eq!(summaries(&app).await, ["alpha", "beta", "gamma"]);
    deltas.assert_no_deletes(&app).await;
}

#[tokio::test]
async fn answers_that_are_not_googles_never_mean_gone_and_quota_backs_off() {
    let (app, id, mut deltas) = synced().await;
    // A wrong base URL or a proxy: 404 with HTML.
    app.google.inject_fault(
        Operation::List,
        Fault::Respond {
            status: 404,
            headers: BTreeMap::from([("content-type".into(), "text/html".into())]),
            body: "<html><body>Not Found</body></html>".into(),
        },
        100,
    );
    resync(&app, 1, false).await;
    app.run_once().await;
    app.google.clear_faults();
    let c = connection_status(&app.status().await, id);
    assert_eq!(c["calendarGone"], false, "{c}");
    let err = c["lastError"].as_str().unwrap();
    assert!(
        err.contains("404") && err.contains("text/html") && err.contains("<html>"),
        "{err}"
    );

    // A Google error whose message holds a NUL is still recorded.
    app.google.inject_fault(
        Operation::List,
        respond(500, r#"{"error":{"code":500,"message":"bad\u0000thing","errors":[{"reason":"backendError"}]}}"#),
        100,
    );
    resync(&app, 1, false).await;
    app.run_once().await;
    app.google.clear_faults();
    let status = app.status().await;
    assert!(status["queue"]["running"].as_array().unwrap().is_empty());
    let c = connection_status(&status, id);
    assert!(c["lastError"].as_str().unwrap().contains("badthing"), "{c}");

    // Google's daily quota: the connection backs off for 15 minutes (the
    // first time), no attempt spent, and says so.
    sqlx::query("UPDATE plansync.connections SET failures = 0, failing_since = NULL")
        .execute(&app.app.pool)
        .await
        .unwrap();
    app.google.inject_fault(
        Operation::List,
        respond(403, r#"{"error":{"code":403,"message":"Quota exceeded","errors":[{"reason":"quotaExceeded"}]}}"#),
        1,
    );
    resync(&app, 1, false).await;
    app.run_once().await;
    let c = connection_status(&app.status().await, id);
    assert!(
        c["lastError"].as_str().unwrap().contains("quotaExceeded"),
        "{c}"
    );
    assert!(c["failingSince"].is_string());
    let (attempts, wait): (i32, f64) = sqlx::query_as(
        "SELECT attempts, extract(epoch FROM run_at - now())::FLOAT8 FROM plansync.jobs \
         WHERE connection_id = $1 AND state = 'queued' AND kind = 'pull'",
    )
    .bind(id)
    .fetch_one(&app.app.pool)
    .await
    .unwrap();
    assert_eq!(attempts, 0);
    assert!((800.0..=15.0 * 60.0 + 5.0).contains(&wait), "{wait}");

    // Retry-After far in the future: capped at the hour.
    sqlx::query("DELETE FROM plansync.jobs")
        .execute(&app.app.pool)
        .await
        .unwrap();
    app.google.inject_fault(
        Operation::List,
        Fault::Respond {
            status: 429,
            headers: BTreeMap::from([
                ("content-type".into(), "application/json".into()),
                ("retry-after".into(), "3000000000".into()),
            ]),
            body: r#"{"error":{"code":429,"message":"slow down","errors":[{"reason":"rateLimitExceeded"}]}}"#.into(),
        },
        1,
    );
    resync(&app, 1, false).await;
    app.run_once().await;
    let wait: f64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM run_at - now())::FLOAT8 FROM plansync.jobs \
         WHERE connection_id = $1 AND state = 'queued' AND kind = 'pull'",
    )
    .bind(id)
    .fetch_one(&app.app.pool)
    .await
    .unwrap();
    assert!(wait <= 3600.0 + 5.0, "snoozed {wait}s");
    assert_eq!(summaries(&app).await, ["alpha", "beta", "gamma"]);
    deltas.assert_no_deletes(&app).await;
}

#[tokio::test]
async fn a_failing_connection_backs_off_as_a_whole_and_dead_jobs_are_bounded() {
    let (app, id, _deltas) = synced().await;
    app.google
        .inject_fault(Operation::List, Fault::BackendError, 100_000);
    resync(&app, 1, false).await;
    app.run_once().await;
    let pulls = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM plansync.jobs WHERE connection_id = $1 AND kind = 'pull'",
        )
        .bind(id)
        .fetch_one(&app.app.pool)
        .await
        .unwrap()
    };
    let after_first = pulls().await;
    // Force the poll slot to be due: only the connection's back-off holds the
    // scheduler back now.
    sqlx::query("UPDATE plansync.connections SET last_pull_at = now() - interval '1 day'")
        .execute(&app.app.pool)
        .await
        .unwrap();
    app.run_once_with(&[("PLANSYNC_POLL_INTERVAL_SECS", "1")])
        .await;
    assert_eq!(pulls().await, after_first, "no new pull while backing off");
    let backoff: bool =
        sqlx::query_scalar("SELECT backoff_until > now() FROM plansync.connections WHERE id = $1")
            .bind(id)
            .fetch_one(&app.app.pool)
            .await
            .unwrap();
    assert!(backoff);
    app.google.clear_faults();

    // Dead jobs: status lists the 50 newest and counts them all; the
    // retention prunes them.
    sqlx::query(
        "INSERT INTO plansync.jobs (kind, connection_id, appointment_id, region, state, attempts, \
             last_error, finished_at) \
         SELECT 'push', $1, g, 'default', 'dead', 8, 'boom', now() - interval '8 days' \
         FROM generate_series(1, 60) g",
    )
    .bind(id)
    .execute(&app.app.pool)
    .await
    .unwrap();
    let status = app.status().await;
    let total = status["queue"]["deadTotal"].as_i64().unwrap();
    assert!(total >= 60);
    assert_eq!(status["queue"]["dead"].as_array().unwrap().len(), 50);
    app.run_once().await;
    let status = app.status().await;
    assert!(
        status["queue"]["deadTotal"].as_i64().unwrap() < total - 59,
        "pruned after 7 days"
    );
}

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
async fn host_rows_that_cannot_be_sent_are_parked_and_pulls_go_on() {
    let app = SyncApp::spawn().await;
    let linked = app
        .google
        .create_event("primary", timed("linked", 2, 10))
        .unwrap();
    let id = app.connect(1, "primary", &["--push-target"]).await;
    app.run_once().await;
    let insert = |summary: &str, start: &str, end: &str, all_day: bool| {
        let (summary, start, end) = (summary.to_owned(), start.to_owned(), end.to_owned());
        let pool = app.app.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "INSERT INTO appointments (user_id, summary, start_at, end_at, all_day) \
                 VALUES (1, $1, $2::TIMESTAMPTZ, $3::TIMESTAMPTZ, $4) RETURNING id",
            )
            .bind(summary)
            .bind(start)
            .bind(end)
            .bind(all_day)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    let infinite = insert("infinite", &at(3, 10), "infinity", false).await;
    let backwards = insert("backwards", &at(3, 10), &at(3, 8), false).await;
    let not_midnight = insert("not midnight", &at(3, 10), &at(4, 10), true).await;
    let far = insert("far", &at(3, 10), "20000-01-01T00:00:00Z", false).await;
    insert("fine", &at(3, 10), &at(3, 11), false).await;
    app.run_once().await;

    let events = app
        .google
        .list_events("primary", "singleEvents=true")
        .unwrap();
    let names: Vec<&str> = events
        .iter()
        .filter_map(|e| e["summary"].as_str())
        .collect();
    assert!(names.contains(&"fine"), "{names:?}");
    for bad in ["infinite", "backwards", "not midnight", "far"] {
        assert!(!names.contains(&bad), "{bad} must never be sent");
    }
    let c = connection_status(&app.status().await, id);
    let parked: Vec<i64> = c["parkedPushes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["appointmentId"].as_i64().unwrap())
        .collect();
    let mut expected = vec![infinite, backwards, not_midnight, far];
    expected.sort();
    assert_eq!(parked, expected, "{c}");
    assert!(c["parkedPushes"][0]["reason"].is_string());

    // A linked row the host broke: the pull treats it as different and goes
    // on; Google's newer version wins and repairs it.
    let linked_id: i64 =
        sqlx::query_scalar("SELECT appointment_id FROM plansync.links WHERE event_id = $1")
            .bind(linked["id"].as_str().unwrap())
            .fetch_one(&app.app.pool)
            .await
            .unwrap();
    sqlx::query("UPDATE appointments SET end_at = 'infinity', updated_at = now() - interval '1 hour' WHERE id = $1")
        .bind(linked_id)
        .execute(&app.app.pool)
        .await
        .unwrap();
    app.google
        .patch_event(
            "primary",
            linked["id"].as_str().unwrap(),
            json!({"summary": "linked, edited"}),
        )
        .unwrap();
    resync(&app, 1, false).await;
    app.run_once().await;
    let (summary, finite): (String, bool) =
        sqlx::query_as("SELECT summary, isfinite(end_at) FROM appointments WHERE id = $1")
            .bind(linked_id)
            .fetch_one(&app.app.pool)
            .await
            .unwrap();
    assert_eq!((summary.as_str(), finite), ("linked, edited", true));
    let status = app.status().await;
    assert!(connection_status(&status, id)["lastError"].is_null());
    assert!(
        connection_status(&status, id)["parkedPushes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["appointmentId"] != linked_id),
        "a row Google repaired is no longer parked: {status}"
    );

    // Fixing a parked row sends it.
    sqlx::query("UPDATE appointments SET end_at = start_at + interval '1 hour' WHERE id = $1")
        .bind(backwards)
        .execute(&app.app.pool)
        .await
        .unwrap();
    app.run_once().await;
    let names: Vec<String> = app
        .google
        .list_events("primary", "singleEvents=true")
        .unwrap()
        .iter()
        .filter_map(|e| e["summary"].as_str().map(str::to_owned))
        .collect();
    assert!(names.contains(&"backwards".to_owned()));
    let c = connection_status(&app.status().await, id);
    assert!(
        c["parkedPushes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["appointmentId"] != backwards),
        "{c}"
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

#[tokio::test]
async fn a_set_aside_event_with_a_long_id_keeps_its_appointment_through_a_full_sync() {
    let (app, id, mut deltas) = synced().await;
    let long = "a".repeat(300);
    app.google
        .create_event(
            "primary",
            json!({"id": long, "summary": "long id", "start": {"dateTime": at(4, 10)}, "end": {"dateTime": at(4, 11)}}),
        )
        .unwrap();
    resync(&app, 1, false).await;
    app.run_once().await;
    assert!(summaries(&app).await.contains(&"long id".to_owned()));
    // A full listing in which that event cannot be read (and the others are
    // gone): the others are swept, the set-aside one keeps its appointment.
    let page = format!(
        r#"{{"kind":"calendar#events","nextSyncToken":"t2","items":[{{"id":"{long}","summary":123}}]}}"#
    );
    app.google
        .inject_fault(Operation::List, respond(200, &page), 1);
    resync(&app, 1, true).await;
    app.run_once().await;
    assert_eq!(summaries(&app).await, ["long id"]);
    let c = connection_status(&app.status().await, id);
    assert_eq!(c["skippedEvents"].as_array().unwrap().len(), 1, "{c}");
    let all = deltas.settle(&app).await;
    assert_eq!(
        all.iter().filter(|d| d["action"] == "deleted").count(),
        3,
        "only the three absent events are deleted: {all:?}"
    );
}

#[tokio::test]
async fn a_host_row_with_infinite_timestamps_never_stops_its_calendar() {
    let (app, id, _deltas) = synced().await;
    sqlx::query(
        "UPDATE appointments SET created_at = 'infinity', updated_at = '-infinity' \
         WHERE summary = 'alpha'",
    )
    .execute(&app.app.pool)
    .await
    .unwrap();
    app.run_once().await;
    let event: String = sqlx::query_scalar(
        "SELECT l.event_id FROM plansync.links l JOIN appointments a ON a.id = l.appointment_id \
         WHERE a.summary = 'alpha'",
    )
    .fetch_one(&app.app.pool)
    .await
    .unwrap();
    app.google
        .patch_event("primary", &event, json!({"summary": "alpha, edited"}))
        .unwrap();
    resync(&app, 1, false).await;
    app.run_once().await;
    assert!(summaries(&app).await.contains(&"alpha, edited".to_owned()));
    let c = connection_status(&app.status().await, id);
    assert!(c["lastError"].is_null(), "{c}");
}
