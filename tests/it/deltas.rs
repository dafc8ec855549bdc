//! The outbox and its relay: versions, coalescing, formats, Redis outages and
//! several relays on one outbox.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use plansync::config::{DeltaMode, RedisSettings};
use plansync::deltas::relay::{Relay, RelaySettings};
use plansync::deltas::{DeltaBatch, PlanItemDelta, UserDeltaMessage};
use plansync::ids::{AppointmentId, UserId};
use tokio_util::sync::CancellationToken;

use crate::harness::{eventually, redis_url, PrivateRedis, TestApp, OUTBOX_BACKLOG_SQL};

pub fn redis_settings(app: &TestApp, url: String, mode: DeltaMode) -> RedisSettings {
    RedisSettings {
        url,
        delta_mode: mode,
        prefix: app.redis_prefix.clone(),
        socketio_key: format!("{}sio", app.redis_prefix),
        socketio_stream: format!("{}stream", app.redis_prefix),
        ..RedisSettings::default()
    }
}

pub fn fast_relay() -> RelaySettings {
    RelaySettings {
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        batch_rows: 100,
        ..RelaySettings::default()
    }
}

/// Commits one transaction deleting `ids` of `user` (the cheapest delta to
/// make: no appointment rows are needed to exercise the outbox).
pub async fn commit_deletes(app: &TestApp, user: i64, ids: &[i64]) {
    let mut tx = app.pool.begin().await.unwrap();
    let mut batch = DeltaBatch::new();
    for id in ids {
        batch.deleted(UserId(user), AppointmentId(*id));
    }
    batch.write(&mut tx, 50).await.unwrap();
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn each_delta_bumps_the_version_by_one_and_coalesced_ones_bump_nothing() {
    let app = TestApp::spawn().await;
    app.add_user(1).await;
    sqlx::query("UPDATE users SET plan_version = 10 WHERE id = 1")
        .execute(&app.pool)
        .await
        .unwrap();
    commit_deletes(&app, 1, &[5, 6, 7]).await;
    assert_eq!(app.plan_version(1).await, 13);
    let rows: Vec<(i64, serde_json::Value)> =
        sqlx::query_as("SELECT version, delta FROM plansync.outbox ORDER BY id")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    let versions: Vec<i64> = rows.iter().map(|r| r.0).collect();
    assert_eq!(versions, vec![11, 12, 13]);
    for (version, delta) in &rows {
        assert_eq!(
            delta["version"], *version,
            "the payload carries its version"
        );
    }

    // Created then deleted in one transaction: nothing written, nothing bumped.
    let mut tx = app.pool.begin().await.unwrap();
    let mut batch = DeltaBatch::new();
    let now = chrono::Utc::now();
    batch.created(plansync::deltas::AppointmentPayload {
        id: AppointmentId(99),
        user_id: UserId(1),
        summary: "fleeting".into(),
        description: None,
        location: None,
        start_at: now,
        end_at: now,
        start_time_zone: None,
        end_time_zone: None,
        all_day: false,
        created_at: now,
        updated_at: now,
        google_sync: None,
    });
    batch.deleted(UserId(1), AppointmentId(99));
    batch.write(&mut tx, 50).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(app.plan_version(1).await, 13);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM plansync.outbox")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(rows, 3);

    // Over the threshold: one plan delta, one bump.
    let mut tx = app.pool.begin().await.unwrap();
    let mut batch = DeltaBatch::new();
    for id in 0..5 {
        batch.deleted(UserId(1), AppointmentId(id));
    }
    batch.write(&mut tx, 3).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(app.plan_version(1).await, 14);
    let last: serde_json::Value =
        sqlx::query_scalar("SELECT delta FROM plansync.outbox ORDER BY id DESC LIMIT 1")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        last,
        serde_json::json!({"itemType":"plan","entityId":0,"action":"updated","version":14,"source":"google"})
    );
}

/// Collects messages of a pattern subscription into per-channel lists. Every
/// message taken from it is checked against the contract's JSON Schema.
pub struct Subscriber {
    messages: tokio::sync::mpsc::UnboundedReceiver<(String, Vec<u8>)>,
    _task: tokio::task::JoinHandle<()>,
}

/// Checks one received message against the schema: a JSON channel carries
/// the message itself, a Socket.IO channel the emitter envelope (msgpack)
/// around the `plan:item-delta` payload.
pub fn assert_message_valid(channel: &str, payload: &[u8]) {
    use crate::contract::{assert_valid, Shape};
    if channel.contains("plan-deltas:user:") {
        let value: serde_json::Value = serde_json::from_slice(payload)
            .unwrap_or_else(|e| panic!("not JSON on {channel}: {e}"));
        assert_valid(Shape::UserDeltaMessage, &value);
    } else if channel.contains("#/#") {
        let value: serde_json::Value = rmp_serde::from_slice(payload)
            .unwrap_or_else(|e| panic!("not msgpack on {channel}: {e}"));
        assert_valid(Shape::PlanItemDeltaPayload, &value[1]["data"][1]);
    } else {
        panic!("a message on an unexpected channel {channel}");
    }
}

impl Subscriber {
    /// The next message, validated against the schema; panics after `deadline`.
    pub async fn recv(&mut self, deadline: tokio::time::Instant) -> (String, Vec<u8>) {
        let (channel, payload) = tokio::time::timeout_at(deadline, self.messages.recv())
            .await
            .expect("a message arrives in time")
            .expect("the subscription is alive");
        assert_message_valid(&channel, &payload);
        (channel, payload)
    }

    /// The next message if one arrives within `within` (validated).
    pub async fn try_recv(&mut self, within: Duration) -> Option<(String, Vec<u8>)> {
        let (channel, payload) = tokio::time::timeout(within, self.messages.recv())
            .await
            .ok()??;
        assert_message_valid(&channel, &payload);
        Some((channel, payload))
    }

    pub async fn start(url: &str, pattern: &str) -> Subscriber {
        let client = redis::Client::open(url).unwrap();
        let mut pubsub = client.get_async_pubsub().await.unwrap();
        pubsub.psubscribe(pattern).await.unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let mut stream = pubsub.into_on_message();
            while let Some(msg) = stream.next().await {
                let _ = tx.send((
                    msg.get_channel_name().to_owned(),
                    msg.get_payload_bytes().to_vec(),
                ));
            }
        });
        Subscriber {
            messages: rx,
            _task: task,
        }
    }

    /// Versions received per user on JSON channels, in arrival order, until
    /// `expected` versions (counting duplicates) have arrived.
    pub async fn json_versions(&mut self, expected: usize) -> HashMap<i64, Vec<i64>> {
        let mut seen: HashMap<i64, Vec<i64>> = HashMap::new();
        let mut count = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while count < expected {
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {count} of {expected} deltas arrived"
            );
            let (_, payload) = self.recv(deadline).await;
            let message: UserDeltaMessage = serde_json::from_slice(&payload).unwrap();
            for delta in message.deltas {
                seen.entry(message.user_id.0)
                    .or_default()
                    .push(delta.version.unwrap());
                count += 1;
            }
        }
        seen
    }
}

#[tokio::test]
async fn relay_publishes_json_and_socketio_in_version_order() {
    let app = TestApp::spawn().await;
    app.add_user(1).await;
    app.add_user(2).await;
    let mut json_sub = Subscriber::start(
        &redis_url(),
        &format!("{}plan-deltas:user:*", app.redis_prefix),
    )
    .await;
    let mut sio_sub =
        Subscriber::start(&redis_url(), &format!("{}sio#/#*", app.redis_prefix)).await;
    commit_deletes(&app, 1, &[1, 2]).await;
    commit_deletes(&app, 2, &[3]).await;
    commit_deletes(&app, 1, &[4]).await;

    let mut relay = Relay::new(
        app.pool.clone(),
        redis_settings(&app, redis_url(), DeltaMode::BOTH),
        fast_relay(),
    )
    .unwrap();
    assert_eq!(relay.drain().await.unwrap(), 4);
    assert_eq!(
        relay.drain().await.unwrap(),
        0,
        "published rows are not sent again"
    );

    let versions = json_sub.json_versions(4).await;
    assert_eq!(versions[&1], vec![1, 2, 3]);
    assert_eq!(versions[&2], vec![1]);

    let (channel, bytes) = sio_sub
        .recv(tokio::time::Instant::now() + Duration::from_secs(10))
        .await;
    assert_eq!(channel, format!("{}sio#/#user:1#", app.redis_prefix));
    let value: serde_json::Value = rmp_serde::from_slice(&bytes).unwrap();
    assert_eq!(value[0], "emitter");
    assert_eq!(value[1]["type"], 2);
    assert_eq!(value[1]["nsp"], "/");
    assert_eq!(value[1]["data"][0], "plan:item-delta");
    let deltas: Vec<PlanItemDelta> =
        serde_json::from_value(value[1]["data"][1]["deltas"].clone()).unwrap();
    assert_eq!(
        deltas
            .iter()
            .map(|d| (d.entity_id, d.version.unwrap()))
            .collect::<Vec<_>>(),
        vec![(1, 1), (2, 2), (4, 3)]
    );
    assert_eq!(value[2]["rooms"], serde_json::json!(["user:1"]));

    let backlog: i64 = sqlx::query_scalar(OUTBOX_BACKLOG_SQL)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(backlog, 0);
}

#[tokio::test]
async fn redis_down_loses_nothing_and_the_relay_drains_in_order_when_it_returns() {
    let app = TestApp::spawn().await;
    for user in 1..=5 {
        app.add_user(user).await;
    }
    let mut redis = PrivateRedis::start().await;
    let cancel = CancellationToken::new();
    let relay = Relay::new(
        app.pool.clone(),
        redis_settings(&app, redis.url(), DeltaMode::JSON),
        fast_relay(),
    )
    .unwrap();
    let relay_task = tokio::spawn(relay.run(cancel.clone()));

    redis.stop();
    for i in 0..500i64 {
        commit_deletes(&app, 1 + i % 5, &[i]).await;
    }
    let out = app.run(&["status", "--json"], "").await;
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        status["outbox"]["backlog"], 500,
        "the backlog shows in status"
    );
    assert!(status["outbox"]["oldestAgeSecs"].as_f64().unwrap() >= 0.0);

    // Back, but refusing the relay (no password) until our subscriber is in
    // place, so no publish can slip past it; then open it up.
    redis.restart_with(&["--requirepass", "sesame"]).await;
    let authed = format!("redis://:sesame@127.0.0.1:{}", redis.port);
    let mut sub =
        Subscriber::start(&authed, &format!("{}plan-deltas:user:*", app.redis_prefix)).await;
    let client = redis::Client::open(authed.as_str()).unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("")
        .query_async::<()>(&mut admin)
        .await
        .unwrap();

    let versions = sub.json_versions(500).await;
    for user in 1..=5 {
        assert_eq!(
            versions[&user],
            (1..=100).collect::<Vec<i64>>(),
            "user {user}"
        );
    }
    eventually(
        Duration::from_secs(10),
        "the backlog to be marked published",
        || async {
            let n: i64 = sqlx::query_scalar(OUTBOX_BACKLOG_SQL)
                .fetch_one(&app.pool)
                .await
                .unwrap();
            (n == 0).then_some(())
        },
    )
    .await;
    cancel.cancel();
    relay_task.await.unwrap();
}

#[tokio::test]
async fn two_relays_on_one_outbox_keep_each_users_order() {
    let app = TestApp::spawn().await;
    let users = 8i64;
    let per_user = 150i64;
    for user in 1..=users {
        app.add_user(user).await;
    }
    let mut sub = Subscriber::start(
        &redis_url(),
        &format!("{}plan-deltas:user:*", app.redis_prefix),
    )
    .await;
    let cancel = CancellationToken::new();
    let mut relays = Vec::new();
    for _ in 0..2 {
        let relay = Relay::new(
            app.pool.clone(),
            redis_settings(&app, redis_url(), DeltaMode::JSON),
            RelaySettings {
                batch_rows: 7,
                batch_users: 3,
                ..fast_relay()
            },
        )
        .unwrap();
        relays.push(tokio::spawn(relay.run(cancel.clone())));
    }
    // Writers commit concurrently with the relays running.
    let mut writers = Vec::new();
    for user in 1..=users {
        let pool = app.pool.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..per_user {
                let mut tx = pool.begin().await.unwrap();
                let mut batch = DeltaBatch::new();
                batch.deleted(UserId(user), AppointmentId(i));
                batch.write(&mut tx, 50).await.unwrap();
                tx.commit().await.unwrap();
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let expected = (users * per_user) as usize;
    let mut received: HashMap<i64, Vec<i64>> = HashMap::new();
    let mut unique = 0usize;
    let mut duplicates = 0usize;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while unique < expected {
        let (_, payload) = sub.recv(deadline).await;
        let message: UserDeltaMessage = serde_json::from_slice(&payload).unwrap();
        for delta in message.deltas {
            let version = delta.version.unwrap();
            let seen = received.entry(message.user_id.0).or_default();
            match seen.last() {
                Some(&last) if version <= last => duplicates += 1,
                Some(&last) => {
                    assert_eq!(
                        version,
                        last + 1,
                        "user {} skipped or reordered",
                        message.user_id
                    );
                    seen.push(version);
                    unique += 1;
                }
                None => {
                    assert_eq!(version, 1, "user {} started late", message.user_id);
                    seen.push(version);
                    unique += 1;
                }
            }
        }
    }
    // Without a failure nothing goes out twice: a relay publishes only the
    // entries its own DELETE removed.
    assert_eq!(duplicates, 0, "two relays published some deltas twice");
    eventually(
        Duration::from_secs(10),
        "the backlog to be empty",
        || async {
            let n = crate::harness::count(&app, OUTBOX_BACKLOG_SQL).await;
            (n == 0).then_some(())
        },
    )
    .await;
    cancel.cancel();
    for r in relays {
        r.await.unwrap();
    }
}

#[tokio::test]
async fn published_rows_are_pruned_after_the_retention_period_and_unpublished_ones_never() {
    let app = TestApp::spawn().await;
    app.add_user(1).await;
    app.add_user(2).await;
    // In this order: user 1's version 1 (two days old, published), user 2's
    // version 1 (two days old, never published: Redis was down all along),
    // user 1's version 2 (a minute old, published).
    commit_deletes(&app, 1, &[1]).await;
    commit_deletes(&app, 2, &[2]).await;
    commit_deletes(&app, 1, &[3]).await;
    sqlx::query(
        "UPDATE plansync.outbox SET created_at = CASE \
             WHEN version = 1 THEN now() - interval '2 days' ELSE now() - interval '1 minute' END",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    // What a relay's commit does to user 1's rows: their entries go.
    sqlx::query("DELETE FROM plansync.outbox_pending WHERE user_id = 1")
        .execute(&app.pool)
        .await
        .unwrap();
    let relay = Relay::new(
        app.pool.clone(),
        redis_settings(&app, redis_url(), DeltaMode::JSON),
        RelaySettings {
            retention: Duration::from_secs(3600),
            ..fast_relay()
        },
    )
    .unwrap();
    assert_eq!(relay.prune().await.unwrap(), 1);
    let left: Vec<(i64, i64)> =
        sqlx::query_as("SELECT user_id, version FROM plansync.outbox ORDER BY id")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(left, vec![(2, 1), (1, 2)]);
    let pruned: Vec<(i64, i64)> =
        sqlx::query_as("SELECT user_id, version FROM plansync.outbox_pruned ORDER BY user_id")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(pruned, vec![(1, 1)], "the watermark says what went");

    // Once published, the old row goes too.
    sqlx::query("DELETE FROM plansync.outbox_pending WHERE user_id = 2")
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(relay.prune().await.unwrap(), 1);
    assert_eq!(relay.prune().await.unwrap(), 0, "nothing else is old");
}

#[tokio::test]
async fn a_backlog_is_cut_into_bounded_messages_in_both_formats() {
    let app = TestApp::spawn().await;
    app.add_user(1).await;
    let mut json_sub = Subscriber::start(
        &redis_url(),
        &format!("{}plan-deltas:user:*", app.redis_prefix),
    )
    .await;
    let mut sio_sub =
        Subscriber::start(&redis_url(), &format!("{}sio#/#*", app.redis_prefix)).await;
    commit_deletes(&app, 1, &[1, 2, 3, 4, 5]).await;
    let mut relay = Relay::new(
        app.pool.clone(),
        redis_settings(&app, redis_url(), DeltaMode::BOTH),
        RelaySettings {
            max_deltas_per_message: 2,
            ..fast_relay()
        },
    )
    .unwrap();
    assert_eq!(relay.drain().await.unwrap(), 5);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut json_messages = Vec::new();
    let mut sio_messages = Vec::new();
    for _ in 0..3 {
        let (_, payload) = json_sub.recv(deadline).await;
        let message: UserDeltaMessage = serde_json::from_slice(&payload).unwrap();
        json_messages.push(
            message
                .deltas
                .iter()
                .map(|d| d.version.unwrap())
                .collect::<Vec<_>>(),
        );
        let (_, bytes) = sio_sub.recv(deadline).await;
        let value: serde_json::Value = rmp_serde::from_slice(&bytes).unwrap();
        sio_messages.push(
            value[1]["data"][1]["deltas"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["version"].as_i64().unwrap())
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(json_messages, vec![vec![1, 2], vec![3, 4], vec![5]]);
    assert_eq!(sio_messages, json_messages);
}

#[tokio::test]
async fn publishing_never_rewrites_an_outbox_row() {
    let app = TestApp::spawn().await;
    app.add_user(1).await;
    commit_deletes(&app, 1, &[1, 2]).await;
    commit_deletes(&app, 1, &[3]).await;
    // The physical row versions: an UPDATE of a row (the old marking) would
    // give it a new ctid and xmin.
    let rows = "SELECT ctid::TEXT, xmin::TEXT FROM plansync.outbox ORDER BY version";
    let before: Vec<(String, String)> = sqlx::query_as(rows).fetch_all(&app.pool).await.unwrap();
    assert_eq!(crate::harness::count(&app, OUTBOX_BACKLOG_SQL).await, 3);
    let mut sub = Subscriber::start(
        &redis_url(),
        &format!("{}plan-deltas:user:*", app.redis_prefix),
    )
    .await;
    let mut relay = Relay::new(
        app.pool.clone(),
        redis_settings(&app, redis_url(), DeltaMode::JSON),
        fast_relay(),
    )
    .unwrap();
    assert_eq!(relay.drain().await.unwrap(), 3);
    assert_eq!(sub.json_versions(3).await[&1], vec![1, 2, 3]);
    let after: Vec<(String, String)> = sqlx::query_as(rows).fetch_all(&app.pool).await.unwrap();
    assert_eq!(before, after, "the rows are the ones written");
    assert_eq!(crate::harness::count(&app, OUTBOX_BACKLOG_SQL).await, 0);
    assert_eq!(
        crate::harness::count(&app, crate::harness::OUTBOX_PUBLISHED_SQL).await,
        3
    );
    assert_eq!(relay.drain().await.unwrap(), 0, "published once");
}

#[tokio::test]
async fn batch_limits_on_users_and_rows_still_drain_everything_in_order() {
    let app = TestApp::spawn().await;
    for user in 1..=5 {
        app.add_user(user).await;
    }
    // User 1: one transaction of five deltas (one entry larger than a
    // batch's row budget); users 2..5: four one-delta transactions each.
    commit_deletes(&app, 1, &[1, 2, 3, 4, 5]).await;
    for round in 0..4 {
        for user in 2..=5 {
            commit_deletes(&app, user, &[100 + round]).await;
        }
    }
    let mut sub = Subscriber::start(
        &redis_url(),
        &format!("{}plan-deltas:user:*", app.redis_prefix),
    )
    .await;
    let mut relay = Relay::new(
        app.pool.clone(),
        redis_settings(&app, redis_url(), DeltaMode::JSON),
        RelaySettings {
            batch_users: 2,
            batch_rows: 3,
            ..fast_relay()
        },
    )
    .unwrap();
    // One batch: users 1 and 2 locked, user 1's whole entry taken (an entry
    // is never split), user 2's none (the budget is spent before it).
    let first = relay.relay_batch().await.unwrap();
    assert_eq!(first.published, 5);
    assert!(first.more);
    assert_eq!(relay.drain().await.unwrap(), 16, "one drain takes the rest");
    let versions = sub.json_versions(21).await;
    assert_eq!(versions[&1], vec![1, 2, 3, 4, 5]);
    for user in 2..=5 {
        assert_eq!(versions[&user], vec![1, 2, 3, 4], "user {user}");
    }
    assert_eq!(crate::harness::count(&app, OUTBOX_BACKLOG_SQL).await, 0);
    assert!(!relay.relay_batch().await.unwrap().more);
}

#[tokio::test]
async fn rows_written_by_a_previous_versions_insert_are_published() {
    // A replica of the previous version, still running during a rolling
    // upgrade, appends with a plain INSERT and knows nothing of pending
    // entries: the outbox's trigger records them all the same.
    let app = TestApp::spawn().await;
    app.add_user(1).await;
    app.add_user(2).await;
    sqlx::query(
        "WITH bumped AS (UPDATE users SET plan_version = plan_version + 2 \
                         WHERE id IN (1, 2) RETURNING id, plan_version) \
         INSERT INTO plansync.outbox (user_id, version, delta) \
         SELECT id, plan_version - k, json_build_object('itemType', 'plan', 'entityId', 0, \
                'action', 'updated', 'version', plan_version - k, 'source', 'google') \
           FROM bumped, generate_series(1, 0, -1) AS k",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let entries: Vec<(i64, i64, i64, i32)> = sqlx::query_as(
        "SELECT user_id, first_version, last_version, rows FROM plansync.outbox_pending \
         ORDER BY user_id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        entries,
        vec![(1, 1, 2, 2), (2, 1, 2, 2)],
        "one entry per user"
    );
    let status = crate::harness::status_json(&app, &[]).await;
    assert_eq!(status["outbox"]["backlog"], 4);
    let mut sub = Subscriber::start(
        &redis_url(),
        &format!("{}plan-deltas:user:*", app.redis_prefix),
    )
    .await;
    let mut relay = Relay::new(
        app.pool.clone(),
        redis_settings(&app, redis_url(), DeltaMode::JSON),
        fast_relay(),
    )
    .unwrap();
    assert_eq!(relay.drain().await.unwrap(), 4);
    let versions = sub.json_versions(4).await;
    assert_eq!(versions[&1], vec![1, 2]);
    assert_eq!(versions[&2], vec![1, 2]);
}

#[tokio::test]
async fn rows_unpublished_when_migration_0018_runs_stay_to_be_published() {
    // A database at 0017, the last migration with a `published_at` column.
    let app = TestApp::unmigrated().await;
    let old = tempfile::tempdir().unwrap();
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    for entry in std::fs::read_dir(&source).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if name.as_str() < "0018" {
            std::fs::copy(&path, old.path().join(&name)).unwrap();
        }
    }
    {
        use sqlx::{ConnectOptions, Executor};
        let options: sqlx::postgres::PgConnectOptions = app.database_url.parse().unwrap();
        let mut conn = options
            .options([("search_path", "plansync,public")])
            .connect()
            .await
            .unwrap();
        conn.execute("CREATE SCHEMA plansync").await.unwrap();
        sqlx::migrate::Migrator::new(old.path())
            .await
            .unwrap()
            .run(&mut conn)
            .await
            .unwrap();
    }
    app.add_user(1).await;
    // Versions 1 and 2 were published before the upgrade, 3 and 4 not yet.
    sqlx::query(
        "INSERT INTO plansync.outbox (user_id, version, delta, published_at) \
         SELECT 1, v, json_build_object('itemType', 'plan', 'entityId', 0, 'action', 'updated', \
                'version', v, 'source', 'google'), \
                CASE WHEN v <= 2 THEN now() END \
           FROM generate_series(1, 4) AS v",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    sqlx::query("UPDATE users SET plan_version = 4 WHERE id = 1")
        .execute(&app.pool)
        .await
        .unwrap();

    plansync::store::migrate::run(&app.db_settings())
        .await
        .expect("0018 applies over 0017");
    assert_eq!(crate::harness::count(&app, OUTBOX_BACKLOG_SQL).await, 2);
    let mut sub = Subscriber::start(
        &redis_url(),
        &format!("{}plan-deltas:user:*", app.redis_prefix),
    )
    .await;
    let mut relay = Relay::new(
        app.pool.clone(),
        redis_settings(&app, redis_url(), DeltaMode::JSON),
        fast_relay(),
    )
    .unwrap();
    assert_eq!(relay.drain().await.unwrap(), 2);
    assert_eq!(sub.json_versions(2).await[&1], vec![3, 4]);
    // Catch-up still has all four.
    let answer = plansync::deltas::catch_up::catch_up(&app.pool, UserId(1), 0)
        .await
        .unwrap();
    assert_eq!(answer.deltas.len(), 4);
}

#[tokio::test]
async fn catch_up_answers_published_and_pending_rows_alike_across_an_outage() {
    let app = TestApp::spawn().await;
    app.add_user(1).await;
    let mut redis = PrivateRedis::start().await;
    let mut relay = Relay::new(
        app.pool.clone(),
        redis_settings(&app, redis.url(), DeltaMode::JSON),
        fast_relay(),
    )
    .unwrap();
    commit_deletes(&app, 1, &[1]).await;
    commit_deletes(&app, 1, &[2]).await;
    assert_eq!(relay.drain().await.unwrap(), 2);
    redis.stop();
    commit_deletes(&app, 1, &[3]).await;
    commit_deletes(&app, 1, &[4, 5]).await;
    assert!(relay.drain().await.is_err(), "Redis is down");
    assert_eq!(crate::harness::count(&app, OUTBOX_BACKLOG_SQL).await, 3);

    let versions = |answer: &plansync::deltas::catch_up::CatchUp| -> Vec<i64> {
        answer
            .deltas
            .iter()
            .map(|d| {
                serde_json::from_str::<serde_json::Value>(d).unwrap()["version"]
                    .as_i64()
                    .unwrap()
            })
            .collect()
    };
    let all = plansync::deltas::catch_up::catch_up(&app.pool, UserId(1), 0)
        .await
        .unwrap();
    assert_eq!(versions(&all), vec![1, 2, 3, 4, 5], "published or not yet");
    let tail = plansync::deltas::catch_up::catch_up(&app.pool, UserId(1), 3)
        .await
        .unwrap();
    assert_eq!(versions(&tail), vec![4, 5]);

    // Everything is two days old: only the published rows may go, and the
    // watermark makes catch-up below it an error, never a short answer.
    sqlx::query("UPDATE plansync.outbox SET created_at = now() - interval '2 days'")
        .execute(&app.pool)
        .await
        .unwrap();
    let pruned = plansync::store::outbox::prune(&app.pool, Duration::from_secs(3600), 1000)
        .await
        .unwrap();
    assert_eq!(pruned.rows, 2);
    assert!(matches!(
        plansync::deltas::catch_up::catch_up(&app.pool, UserId(1), 1).await,
        Err(plansync::deltas::catch_up::CatchUpError::Gone {
            pruned_version: 2,
            ..
        })
    ));
    let kept = plansync::deltas::catch_up::catch_up(&app.pool, UserId(1), 2)
        .await
        .unwrap();
    assert_eq!(versions(&kept), vec![3, 4, 5]);

    // Redis back: the pending rows go out in order, and then may be pruned.
    redis.restart_with(&[]).await;
    let mut sub = Subscriber::start(
        &redis.url(),
        &format!("{}plan-deltas:user:*", app.redis_prefix),
    )
    .await;
    assert_eq!(relay.drain().await.unwrap(), 3);
    assert_eq!(sub.json_versions(3).await[&1], vec![3, 4, 5]);
    let pruned = plansync::store::outbox::prune(&app.pool, Duration::from_secs(3600), 1000)
        .await
        .unwrap();
    assert_eq!(pruned.rows, 3);
}
