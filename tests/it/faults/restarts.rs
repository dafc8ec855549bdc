//! Postgres and Redis restarted under load.

use super::*;
use crate::harness::{OUTBOX_BACKLOG_SQL, OUTBOX_PUBLISHED_SQL};

#[tokio::test]
async fn a_postgres_restart_under_load_loses_and_doubles_nothing() {
    let pg = PrivatePostgres::start().await;
    let fleet = Fleet::on_private(&pg).await;
    fleet.google.inject_fault(
        Operation::List,
        Fault::Delay {
            millis: Duration::from_millis(1000),
        },
        12,
    );
    fleet.connect_calendars(24, 3).await;
    let mut replicas = vec![fleet.replica().await, fleet.replica().await];
    eventually(
        Duration::from_secs(30),
        "some calendars imported",
        || async {
            let imported = fleet
                .count("SELECT count(DISTINCT user_id) FROM appointments")
                .await?;
            (imported >= 1).then_some(())
        },
    )
    .await;
    let imported = fleet
        .count("SELECT count(DISTINCT user_id) FROM appointments")
        .await
        .unwrap();
    assert!(imported < 24, "the restart came after the work");
    pg.stop_server().await;
    pg.start_server().await;

    fleet.wait_synced(24, 3, Duration::from_secs(90)).await;
    sigterm_all_and_check_exit(&mut replicas).await;
}

#[tokio::test]
async fn a_redis_restart_under_load_delivers_every_delta_once_it_returns() {
    // Redis persists every write, so the stream outlives the restart and
    // shows everything that was ever delivered.
    let aof = tempfile::tempdir().unwrap();
    let aof_dir = aof.path().to_str().unwrap().to_owned();
    let redis_args = [
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--dir",
        aof_dir.as_str(),
    ];
    let mut redis = PrivateRedis::start().await;
    redis.restart_with(&redis_args).await;
    let app = TestApp::spawn().await;
    let fleet = Fleet::on(&app)
        .await
        .with("REDIS_URL", &redis.url())
        .with("PLANSYNC_DELTA_MODE", "streams")
        .with("PLANSYNC_SOCKETIO_STREAM", "faults");
    fleet.google.inject_fault(
        Operation::List,
        Fault::Delay {
            millis: Duration::from_millis(800),
        },
        12,
    );
    fleet.connect_calendars(24, 3).await;
    let mut replicas = vec![fleet.replica().await, fleet.replica().await];
    eventually(Duration::from_secs(30), "deltas published", || async {
        let published = fleet.count(OUTBOX_PUBLISHED_SQL).await?;
        (published > 0).then_some(())
    })
    .await;
    redis.stop();
    eventually(
        Duration::from_secs(30),
        "deltas waiting in the outbox",
        || async {
            let waiting = fleet.count(OUTBOX_BACKLOG_SQL).await?;
            (waiting > 0).then_some(())
        },
    )
    .await;
    redis.restart_with(&redis_args).await;

    fleet.wait_synced(24, 3, Duration::from_secs(90)).await;
    eventually(Duration::from_secs(60), "the outbox to drain", || async {
        let waiting = fleet.count(OUTBOX_BACKLOG_SQL).await?;
        (waiting == 0).then_some(())
    })
    .await;
    let written: BTreeSet<(i64, i64)> =
        sqlx::query_as::<_, (i64, i64)>("SELECT user_id, version FROM plansync.outbox")
            .fetch_all(&fleet.pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
    assert_eq!(written.len(), 24 * 3);
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg("faults")
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut delivered = BTreeSet::new();
    for entry in entries.ids {
        let data: String = entry.get("data").expect("a data field");
        let data: serde_json::Value = serde_json::from_str(&data).unwrap();
        let user: i64 = data["opts"]["rooms"][0]
            .as_str()
            .unwrap()
            .trim_start_matches("user:")
            .parse()
            .unwrap();
        for delta in data["packet"]["data"][1]["deltas"].as_array().unwrap() {
            delivered.insert((user, delta["version"].as_i64().unwrap()));
        }
    }
    assert_eq!(delivered, written, "every delta reached Redis");
    sigterm_all_and_check_exit(&mut replicas).await;
}
