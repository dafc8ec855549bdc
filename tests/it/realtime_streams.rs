//! End to end with `@socket.io/redis-streams-adapter`: a stock Socket.IO
//! server reading the stream the relay appends to in `streams` mode
//! (realtime/server.js with `ADAPTER=streams`, connection state recovery
//! on). Each user's client gets its own deltas only, and a client cut off for
//! two seconds gets everything it missed from Socket.IO's connection state
//! recovery alone, with no catch-up call.

use std::time::{Duration, Instant};

use plansync::config::DeltaMode;
use plansync::deltas::relay::Relay;
use serde_json::Value;

use crate::deltas::{commit_deletes, fast_relay, redis_settings};
use crate::harness::{redis_url, TestApp};
use crate::realtime::{socketio_client, socketio_streams_server, NodeProcess};

fn stream_relay(app: &TestApp, stream: &str) -> Relay {
    let mut settings = redis_settings(app, redis_url(), DeltaMode::STREAMS);
    settings.socketio_stream = stream.to_owned();
    Relay::new(app.pool.clone(), settings, fast_relay()).unwrap()
}

/// The next `plan:item-delta` payload the client prints, skipping its status
/// lines; `None` after `within`.
async fn next_payload(client: &mut NodeProcess, within: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let line = client.next_line(left).await?;
        if line.starts_with('{') {
            return Some(serde_json::from_str(&line).unwrap());
        }
    }
}

fn versions_and_ids(payload: &Value) -> Vec<(i64, i64)> {
    payload["deltas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["version"].as_i64().unwrap(),
                d["entityId"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_streams_adapter_server_delivers_each_users_deltas_to_that_user_only() {
    let app = TestApp::spawn().await;
    app.add_user(1).await;
    app.add_user(2).await;
    let stream = format!("{}stream", app.redis_prefix);
    let (_server, url) = socketio_streams_server(&redis_url(), &stream).await;
    let mut alice = socketio_client(&url, 1).await;
    let mut bob = socketio_client(&url, 2).await;
    let mut relay = stream_relay(&app, &stream);

    // Alice's change goes out first, then Bob's: Bob's first message must be
    // his own.
    commit_deletes(&app, 1, &[11]).await;
    assert_eq!(relay.drain().await.unwrap(), 1);
    commit_deletes(&app, 2, &[21, 22]).await;
    assert_eq!(relay.drain().await.unwrap(), 2);
    let within = Duration::from_secs(30);
    let got = next_payload(&mut alice, within)
        .await
        .expect("alice's delta");
    assert_eq!(versions_and_ids(&got), [(1, 11)]);
    assert_eq!(got["deltas"][0]["action"], "deleted");
    let got = next_payload(&mut bob, within).await.expect("bob's deltas");
    assert_eq!(versions_and_ids(&got), [(1, 21), (2, 22)]);

    // And Alice's next message is her own next change, not Bob's.
    commit_deletes(&app, 1, &[12]).await;
    assert_eq!(relay.drain().await.unwrap(), 1);
    let got = next_payload(&mut alice, within).await.expect("alice's 2nd");
    assert_eq!(versions_and_ids(&got), [(2, 12)]);

    // The entries are the adapter's own format, from the `emitter` uid.
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(&stream)
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    // The servers' own heartbeats share the stream; ours are the `emitter`'s.
    let ours: Vec<_> = entries
        .ids
        .iter()
        .filter(|e| e.get::<String>("uid").as_deref() == Some("emitter"))
        .collect();
    assert_eq!(ours.len(), 3);
    let first = ours[0];
    assert_eq!(first.get::<String>("nsp").as_deref(), Some("/"));
    assert_eq!(first.get::<String>("type").as_deref(), Some("3"));
    let _: () = redis::cmd("DEL")
        .arg(&stream)
        .query_async(&mut conn)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_client_cut_off_for_two_seconds_recovers_every_missed_delta_from_the_stream() {
    let app = TestApp::spawn().await;
    app.add_user(1).await;
    let stream = format!("{}stream", app.redis_prefix);
    let (_server, url) = socketio_streams_server(&redis_url(), &stream).await;
    let mut alice = socketio_client(&url, 1).await;
    let mut relay = stream_relay(&app, &stream);
    let within = Duration::from_secs(30);

    // One event received: the client now holds a stream offset.
    commit_deletes(&app, 1, &[100]).await;
    relay.drain().await.unwrap();
    let got = next_payload(&mut alice, within).await.expect("first delta");
    assert_eq!(versions_and_ids(&got), [(1, 100)]);

    // The network goes away for two seconds; ten deltas go out meanwhile,
    // each its own stream entry.
    alice.send("drop").await;
    assert_eq!(alice.next_line(within).await.as_deref(), Some("dropped"));
    let cut_at = Instant::now();
    for id in 101..=110 {
        commit_deletes(&app, 1, &[id]).await;
        assert_eq!(relay.drain().await.unwrap(), 1);
    }
    // The scenario's disconnection length, not a wait for a condition.
    tokio::time::sleep(Duration::from_secs(2).saturating_sub(cut_at.elapsed())).await;

    alice.send("resume").await;
    let mut missed = Vec::new();
    let mut recovered = None;
    let deadline = tokio::time::Instant::now() + within;
    while missed.len() < 10 || recovered.is_none() {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let line = alice
            .next_line(left)
            .await
            .unwrap_or_else(|| panic!("missed so far {missed:?}, recovered {recovered:?}"));
        if let Some(flag) = line.strip_prefix("reconnected recovered=") {
            recovered = Some(flag == "true");
        } else if line.starts_with('{') {
            let payload: Value = serde_json::from_str(&line).unwrap();
            missed.extend(versions_and_ids(&payload));
        }
    }
    assert_eq!(
        recovered,
        Some(true),
        "connection state recovery restored the session"
    );
    let expected: Vec<(i64, i64)> = (2..=11).zip(101..=110).collect();
    assert_eq!(missed, expected, "all ten, in order, once");
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("DEL")
        .arg(&stream)
        .query_async(&mut conn)
        .await
        .unwrap();
}
