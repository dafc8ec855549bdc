//! What the realtime layer's clients rely on beyond live deltas: catching up
//! on missed versions (`GET /users/{id}/deltas`, `plansync deltas`), bounded
//! messages after an outage, and a `plan` delta when a user's Google link
//! breaks or recovers.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{Duration as ChronoDuration, SecondsFormat, Utc};
use serde_json::{json, Value};

use crate::contract::{assert_valid, Shape};
use crate::deltas::Subscriber;
use crate::harness::{eventually, redis_url, stderr, stdout, PrivateRedis, RunningWorker, SyncApp};

const TOKEN: &str = "catch-up-test-token-0123456789";

fn js(t: chrono::DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn event(summary: &str, days: i64, minutes: i64) -> Value {
    let start = (Utc::now() + ChronoDuration::days(days))
        .date_naive()
        .and_hms_opt(8, 0, 0)
        .unwrap()
        .and_utc()
        + ChronoDuration::minutes(minutes);
    json!({"summary": summary,
           "start": {"dateTime": js(start)},
           "end": {"dateTime": js(start + ChronoDuration::minutes(30))}})
}

fn json_pattern(app: &SyncApp) -> String {
    format!("{}plan-deltas:user:*", app.app.redis_prefix)
}

/// A client's view of the plan: appointments by id, built by applying deltas.
#[derive(Debug, Default, PartialEq)]
struct Plan {
    appointments: BTreeMap<i64, Value>,
    last_version: i64,
}

impl Plan {
    /// Applies one delta; an already seen version is dropped (at least once).
    fn apply(&mut self, delta: &Value) {
        let version = delta["version"].as_i64().unwrap();
        if version <= self.last_version {
            return;
        }
        self.last_version = version;
        assert_eq!(delta["itemType"], "appointment", "{delta}");
        let id = delta["entityId"].as_i64().unwrap();
        match delta["action"].as_str().unwrap() {
            "deleted" => {
                self.appointments.remove(&id);
            }
            _ => {
                self.appointments
                    .insert(id, delta["data"]["appointment"].clone());
            }
        }
    }
}

/// Takes messages from `sub` until one carries `version`; returns the deltas.
async fn deltas_until(sub: &mut Subscriber, version: i64) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut out = Vec::new();
    loop {
        let (_, payload) = sub.recv(deadline).await;
        let message: Value = serde_json::from_slice(&payload).unwrap();
        let deltas = message["deltas"].as_array().unwrap().clone();
        let done = deltas.iter().any(|d| d["version"] == version);
        out.extend(deltas);
        if done {
            return out;
        }
    }
}

/// A GET with an optional `Authorization` header; the status and the body.
async fn http_get(addr: &str, path: &str, authorization: Option<&str>) -> (u16, String) {
    crate::harness::http_get_body(addr, path, authorization).await
}

/// `plansync run` with the API token, on a free port; returns the process and
/// the address it listens on.
async fn start_run(app: &SyncApp) -> (RunningWorker, String) {
    let mut cmd = app.command();
    cmd.env("RUST_LOG", "info")
        .env("PLANSYNC_LOG_FORMAT", "json")
        .env("PLANSYNC_HTTP_ADDR", "127.0.0.1:0")
        .env("PLANSYNC_API_TOKEN", TOKEN)
        .env("PLANSYNC_SHUTDOWN_GRACE_SECS", "2")
        .arg("run");
    let run = RunningWorker::spawn(cmd).await;
    let addr = run.addr.clone();
    (run, addr)
}

#[tokio::test]
async fn a_late_subscriber_catches_up_from_the_route_and_ends_like_one_that_saw_everything() {
    let app = SyncApp::spawn().await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let created = app
            .google
            .create_event("primary", event(&format!("event {i}"), 2, i * 60))
            .unwrap();
        ids.push(created["id"].as_str().unwrap().to_owned());
    }
    let mut early = Subscriber::start(&redis_url(), &json_pattern(&app)).await;
    app.connect(1, "primary", &[]).await;
    let (_run, addr) = start_run(&app).await;

    // The import: versions 1..3, seen by the early subscriber only.
    let mut everything = Plan::default();
    for delta in deltas_until(&mut early, 3).await {
        everything.apply(&delta);
    }
    assert_eq!(everything.appointments.len(), 3);

    // A client that connects now has missed 1..3.
    let mut late = Subscriber::start(&redis_url(), &json_pattern(&app)).await;
    app.google
        .patch_event("primary", &ids[0], json!({"summary": "event 0 (moved)"}))
        .unwrap();
    app.google.delete_event("primary", &ids[1]).unwrap();
    app.google
        .create_event("primary", event("event 3", 3, 0))
        .unwrap();
    let out = app.run(&["resync", "--user", "1"], "").await;
    assert!(out.status.success(), "{}", stderr(&out));
    for delta in deltas_until(&mut early, 6).await {
        everything.apply(&delta);
    }
    let live = deltas_until(&mut late, 6).await;
    let first_live = live[0]["version"].as_i64().unwrap();
    assert_eq!(first_live, 4, "the late subscriber missed 1..3");

    // It sees the gap (nothing before 4) and asks for what it missed.
    let (code, body) = http_get(
        &addr,
        "/users/1/deltas?after=0",
        Some(&format!("Bearer {TOKEN}")),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_valid(Shape::CatchUpAnswer, &answer);
    assert_eq!(answer["userId"], 1);
    assert_eq!(answer["planVersion"], 6);
    let fetched = answer["deltas"].as_array().unwrap();
    let versions: Vec<i64> = fetched
        .iter()
        .map(|d| d["version"].as_i64().unwrap())
        .collect();
    assert_eq!(versions, vec![1, 2, 3, 4, 5, 6]);
    // Exactly as published: the route's deltas equal the live ones.
    assert_eq!(&fetched[3..], &live[..]);
    let mut caught_up = Plan::default();
    for delta in fetched.iter().chain(live.iter()) {
        caught_up.apply(delta);
    }
    assert_eq!(caught_up, everything);
    // And both equal the table.
    let in_db: Vec<(i64, String)> =
        sqlx::query_as("SELECT id, summary FROM appointments WHERE user_id = 1 ORDER BY id")
            .fetch_all(&app.app.pool)
            .await
            .unwrap();
    let seen: Vec<(i64, String)> = caught_up
        .appointments
        .iter()
        .map(|(id, a)| (*id, a["summary"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(seen, in_db);

    // Without the bearer token, or with another one: 401.
    for auth in [
        None,
        Some("Bearer wrong-token-0123456789".to_owned()),
        Some(format!("Basic {TOKEN}")),
        Some(format!("Bearer {TOKEN}x")),
    ] {
        let (code, _) = http_get(&addr, "/users/1/deltas?after=0", auth.as_deref()).await;
        assert_eq!(code, 401, "{auth:?}");
    }
    let bearer = format!("Bearer {TOKEN}");
    assert_eq!(
        http_get(&addr, "/users/99/deltas?after=0", Some(&bearer))
            .await
            .0,
        404
    );
    assert_eq!(
        http_get(&addr, "/users/1/deltas?after=-1", Some(&bearer))
            .await
            .0,
        400
    );
    assert_eq!(
        http_get(&addr, "/users/1/deltas", Some(&bearer)).await.0,
        400
    );

    // Versions 1 and 2 were published and are two days old: pruned.
    sqlx::query(
        "UPDATE plansync.outbox SET created_at = now() - interval '2 days' \
         WHERE user_id = 1 AND version <= 2",
    )
    .execute(&app.app.pool)
    .await
    .unwrap();
    let pruned = plansync::store::outbox::prune(&app.app.pool, Duration::from_secs(3600), 1000)
        .await
        .unwrap();
    assert_eq!(pruned.rows, 2);
    let (code, body) = http_get(&addr, "/users/1/deltas?after=1", Some(&bearer)).await;
    assert_eq!(code, 410, "{body}");
    let gone: Value = serde_json::from_str(&body).unwrap();
    assert_valid(Shape::CatchUpGone, &gone);
    assert_eq!(gone, json!({"planVersion": 6}));
    // At the watermark, everything after it is still there.
    let (code, body) = http_get(&addr, "/users/1/deltas?after=2", Some(&bearer)).await;
    assert_eq!(code, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_valid(Shape::CatchUpAnswer, &answer);
    assert_eq!(answer["deltas"].as_array().unwrap().len(), 4);

    // The CLI serves the same data, and says why when it cannot.
    let out = app
        .run(&["deltas", "--user", "1", "--after", "2"], "")
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let cli: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(cli, answer);
    let out = app
        .run(&["deltas", "--user", "1", "--after", "0"], "")
        .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(
        stderr(&out).contains("no longer kept") && stderr(&out).contains("planVersion 6"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn a_backlog_of_1000_remote_changes_goes_out_in_messages_of_at_most_100_in_order() {
    let app = SyncApp::spawn().await;
    let mut redis = PrivateRedis::start().await;
    app.connect(1, "primary", &[]).await;
    async fn private_pass(app: &SyncApp, url: String) {
        app.run_once_with(&[("REDIS_URL", &url)]).await;
    }
    // The first sync of an empty calendar: nothing to publish.
    private_pass(&app, redis.url()).await;

    redis.stop();
    for i in 0..1000 {
        app.google
            .create_event(
                "primary",
                event(&format!("e{i}"), 1 + i / 48, (i % 48) * 30),
            )
            .unwrap();
    }
    // Small pages, so every page is below the bulk threshold and makes one
    // delta per change.
    app.google.set_page_cap(Some(50));
    app.google.clear_requests();
    let out = app.run(&["resync", "--user", "1"], "").await;
    assert!(out.status.success(), "{}", stderr(&out));
    private_pass(&app, redis.url()).await;
    let pages = app
        .google
        .requests()
        .iter()
        .filter(|r| r.operation == plansync_fake_google::Operation::List)
        .count();
    assert!(pages >= 20, "{pages} list pages");
    assert_eq!(app.status().await["outbox"]["backlog"], 1000);

    // Redis returns; the next pass drains the backlog.
    redis.restart_with(&[]).await;
    let mut sub = Subscriber::start(&redis.url(), &json_pattern(&app)).await;
    private_pass(&app, redis.url()).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut versions = Vec::new();
    let mut sizes = Vec::new();
    while versions.len() < 1000 {
        let (_, payload) = sub.recv(deadline).await;
        let message: Value = serde_json::from_slice(&payload).unwrap();
        let deltas = message["deltas"].as_array().unwrap();
        sizes.push(deltas.len());
        versions.extend(deltas.iter().map(|d| d["version"].as_i64().unwrap()));
    }
    assert!(sizes.iter().all(|&n| n <= 100), "message sizes {sizes:?}");
    assert_eq!(sizes.len(), 10, "message sizes {sizes:?}");
    assert_eq!(versions, (1..=1000).collect::<Vec<i64>>());
    assert!(
        sub.try_recv(Duration::from_millis(300)).await.is_none(),
        "nothing more"
    );
    assert_eq!(app.status().await["outbox"]["backlog"], 0);
}

/// The `plan` deltas of section `google-calendar` in the outbox, in order.
async fn link_deltas(app: &SyncApp) -> Vec<Value> {
    sqlx::query_scalar::<_, Value>(
        "SELECT delta::JSONB FROM plansync.outbox \
         WHERE delta->'data'->>'section' = 'google-calendar' ORDER BY user_id, version",
    )
    .fetch_all(&app.app.pool)
    .await
    .unwrap()
}

/// The next link delta `sub` receives.
async fn next_link_delta(sub: &mut Subscriber) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, payload) = sub.recv(deadline).await;
        let message: Value = serde_json::from_slice(&payload).unwrap();
        if let Some(delta) = message["deltas"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["data"]["section"] == "google-calendar")
        {
            return delta.clone();
        }
    }
}

#[tokio::test]
async fn a_revoked_grant_and_the_reconnect_each_tell_the_user_once() {
    let app = SyncApp::spawn().await;
    let mut sub = Subscriber::start(&redis_url(), &json_pattern(&app)).await;
    let revoked = app.google.refresh_tokens()[0].clone();
    let connection = app.connect(1, "primary", &[]).await;
    app.run_once().await;
    assert!(
        link_deltas(&app).await.is_empty(),
        "a healthy link is news to nobody"
    );

    assert!(app.google.revoke_refresh_token(&revoked));
    let out = app.run(&["resync", "--user", "1"], "").await;
    assert!(out.status.success(), "{}", stderr(&out));
    app.run_once().await;
    let broken = next_link_delta(&mut sub).await;
    assert_eq!(broken["itemType"], "plan");
    assert_eq!(broken["entityId"], 0);
    assert_eq!(broken["action"], "updated");
    assert_eq!(broken["source"], "google");
    let link = &broken["data"]["connection"];
    assert_eq!(link["id"], connection);
    assert_eq!(link["calendarId"], "primary");
    assert_eq!(link["needsReauth"], true);
    assert_eq!(link["calendarGone"], false);
    assert!(
        link["lastError"]
            .as_str()
            .unwrap()
            .contains("invalid_grant"),
        "{broken}"
    );
    let version: i64 = sqlx::query_scalar("SELECT plan_version FROM users WHERE id = 1")
        .fetch_one(&app.app.pool)
        .await
        .unwrap();
    assert_eq!(broken["version"], version, "its own version bump");

    // More failures of the broken link tell nothing new.
    app.run_once().await;
    let mut tx = app.app.pool.begin().await.unwrap();
    plansync::store::connections::mark_blocked(
        &mut tx,
        plansync::ids::ConnectionId(connection),
        plansync::store::connections::Blocked::NeedsReauth,
        "invalid_grant: again",
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(link_deltas(&app).await.len(), 1);

    // Re-connecting repairs it, and says so.
    app.google.add_refresh_token("1//fresh-grant");
    let out = app
        .run(
            &["connect", "--user", "1", "--calendar", "primary"],
            "1//fresh-grant\n",
        )
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    app.run_once().await;
    let repaired = next_link_delta(&mut sub).await;
    assert_eq!(
        repaired["data"]["connection"],
        json!({"id": connection, "calendarId": "primary", "needsReauth": false,
               "calendarGone": false, "lastError": null})
    );
    assert_eq!(repaired["version"], broken["version"].as_i64().unwrap() + 1);
    assert_eq!(link_deltas(&app).await.len(), 2);
}

#[tokio::test]
async fn a_gone_calendar_is_announced_and_so_is_its_first_successful_sync() {
    let app = SyncApp::spawn().await;
    let mut sub = Subscriber::start(&redis_url(), &json_pattern(&app)).await;
    let connection = app.connect(2, "team@example.com", &[]).await;
    app.run_once().await;
    let gone = next_link_delta(&mut sub).await;
    assert_eq!(gone["data"]["connection"]["id"], connection);
    assert_eq!(gone["data"]["connection"]["calendarGone"], true);
    assert_eq!(gone["data"]["connection"]["needsReauth"], false);

    // The calendar is shared again; an admin's resync finds it.
    app.google
        .add_calendar("team@example.com", "Team", "Europe/Berlin")
        .unwrap();
    let out = app.run(&["resync", "--user", "2"], "").await;
    assert!(out.status.success(), "{}", stderr(&out));
    eventually(Duration::from_secs(30), "the recovered link", || async {
        app.run_once().await;
        (link_deltas(&app).await.len() == 2).then_some(())
    })
    .await;
    let back = next_link_delta(&mut sub).await;
    assert_eq!(
        back["data"]["connection"],
        json!({"id": connection, "calendarId": "team@example.com", "needsReauth": false,
               "calendarGone": false, "lastError": null})
    );
}
