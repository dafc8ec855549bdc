//! End to end with the real realtime layer: a stock Node.js Socket.IO server
//! with `@socket.io/redis-adapter` (realtime/server.js) and `socket.io-client`
//! clients for two users. The worker's deltas must reach the right user's
//! client as `plan:item-delta` with exactly the expected payload, and nobody
//! else's.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

pub fn realtime_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("realtime")
}

/// Installs the pinned npm packages once per test run (`npm ci` from the
/// committed lockfile) when they are not there yet.
pub fn ensure_node_modules() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let dir = realtime_dir();
        if [
            "socket.io",
            "socket.io-client",
            "@socket.io/redis-streams-adapter",
            "ajv",
            "typescript",
        ]
        .iter()
        .all(|m| {
            dir.join("node_modules")
                .join(m)
                .join("package.json")
                .exists()
        }) {
            return;
        }
        let status = std::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .expect("npm runs (Node.js and npm are needed for the realtime tests)");
        assert!(status.success(), "npm ci in realtime/ failed");
    });
}

pub struct NodeProcess {
    child: Child,
    stdin: ChildStdin,
    pub lines: Lines<BufReader<ChildStdout>>,
}

impl NodeProcess {
    fn spawn(script: &str, args: &[&str], env: &[(&str, &str)]) -> NodeProcess {
        ensure_node_modules();
        let mut cmd = Command::new("node");
        cmd.arg(realtime_dir().join(script))
            .args(args)
            .current_dir(realtime_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("node runs");
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let stdin = child.stdin.take().unwrap();
        NodeProcess {
            child,
            stdin,
            lines,
        }
    }

    /// Sends one command line (client.js: `drop`, `resume`).
    pub async fn send(&mut self, line: &str) {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("the node process reads its stdin");
        self.stdin.flush().await.unwrap();
    }

    pub async fn next_line(&mut self, within: Duration) -> Option<String> {
        tokio::time::timeout(within, self.lines.next_line())
            .await
            .ok()
            .and_then(|l| l.ok().flatten())
    }

    /// A client's next `plan:item-delta` payload, which client.js has checked
    /// against the contract's schema with ajv (and this checks again with the
    /// Rust validator): every payload a test receives is validated.
    pub async fn next_payload(&mut self, within: Duration) -> Option<Value> {
        let line = self.next_line(within).await?;
        assert!(
            !line.starts_with("INVALID"),
            "ajv refused a payload: {line}"
        );
        let value: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("client printed a non-JSON line {line:?}: {e}"));
        crate::contract::assert_valid(crate::contract::Shape::PlanItemDeltaPayload, &value);
        Some(value)
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Starts realtime/server.js with `@socket.io/redis-adapter` on a free port;
/// returns it and its URL.
pub async fn socketio_server(redis_url: &str, key: &str) -> (NodeProcess, String) {
    start_server(&[("REDIS_URL", redis_url), ("SOCKETIO_KEY", key)]).await
}

/// Starts realtime/server.js with `@socket.io/redis-streams-adapter` reading
/// `stream`, connection state recovery on; returns once its stream reader
/// is blocked on XREAD.
pub async fn socketio_streams_server(redis_url: &str, stream: &str) -> (NodeProcess, String) {
    start_server(&[
        ("REDIS_URL", redis_url),
        ("ADAPTER", "streams"),
        ("SOCKETIO_STREAM", stream),
    ])
    .await
}

async fn start_server(env: &[(&str, &str)]) -> (NodeProcess, String) {
    let mut server = NodeProcess::spawn("server.js", &[], env);
    let line = server
        .next_line(Duration::from_secs(30))
        .await
        .expect("the Socket.IO server starts");
    let port = line
        .strip_prefix("listening ")
        .unwrap_or_else(|| panic!("unexpected server output {line:?}"));
    (server, format!("http://127.0.0.1:{port}"))
}

/// Connects a client for `user` and waits until it has joined its room.
pub async fn socketio_client(url: &str, user: i64) -> NodeProcess {
    let mut client = NodeProcess::spawn("client.js", &[url, &user.to_string()], &[]);
    let line = client
        .next_line(Duration::from_secs(30))
        .await
        .expect("the client connects");
    assert_eq!(line, "ready");
    client
}

use chrono::{DateTime, Duration as ChronoDuration, SecondsFormat, Utc};
use serde_json::{json, Value};

use crate::harness::{redis_url, stderr, SyncApp};

fn js(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn parse(t: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(t).unwrap().with_timezone(&Utc)
}

/// `resync --user` then one socketio-mode pass.
async fn pull_socketio(app: &SyncApp, user: i64, key: &str) {
    let out = app.run(&["resync", "--user", &user.to_string()], "").await;
    assert!(out.status.success(), "{}", stderr(&out));
    app.run_once_with(&[
        ("PLANSYNC_DELTA_MODE", "socketio"),
        ("PLANSYNC_SOCKETIO_KEY", key),
    ])
    .await;
}

#[tokio::test]
async fn a_google_edit_reaches_its_users_socket_io_client_and_nobody_elses() {
    let app = SyncApp::spawn().await;
    let key = format!("{}sio", app.app.redis_prefix);
    app.google
        .add_calendar("bob@example.com", "Bob", "America/Chicago")
        .unwrap();
    let start = (Utc::now() + ChronoDuration::days(3))
        .date_naive()
        .and_hms_opt(15, 0, 0)
        .unwrap()
        .and_utc();
    let event = |summary: &str| {
        json!({"summary": summary, "location": "Main St 1",
               "start": {"dateTime": js(start), "timeZone": "Europe/Berlin"},
               "end": {"dateTime": js(start + ChronoDuration::hours(1)), "timeZone": "Europe/Berlin"}})
    };
    let alice_event = app
        .google
        .create_event("primary", event("Dentist"))
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let bob_event = app
        .google
        .create_event("bob@example.com", event("Gym"))
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.connect(1, "primary", &[]).await;
    app.connect(2, "bob@example.com", &[]).await;
    app.run_once_with(&[
        ("PLANSYNC_DELTA_MODE", "socketio"),
        ("PLANSYNC_SOCKETIO_KEY", &key),
    ])
    .await;

    let (_server, url) = socketio_server(&redis_url(), &key).await;
    let mut alice = socketio_client(&url, 1).await;
    let mut bob = socketio_client(&url, 2).await;

    // Alice's event is edited in Google (a field cleared, one changed).
    let edited = app
        .google
        .patch_event(
            "primary",
            &alice_event,
            json!({"summary": "Dentist (moved)", "location": null}),
        )
        .unwrap();
    pull_socketio(&app, 1, &key).await;

    let received = alice
        .next_payload(Duration::from_secs(30))
        .await
        .expect("alice receives plan:item-delta");
    let (id, created_at, updated_at, version): (i64, DateTime<Utc>, DateTime<Utc>, i64) =
        sqlx::query_as(
            "SELECT a.id, a.created_at, a.updated_at, u.plan_version \
             FROM appointments a JOIN users u ON u.id = a.user_id WHERE a.user_id = 1",
        )
        .fetch_one(&app.app.pool)
        .await
        .unwrap();
    let expected = json!({"deltas": [{
        "itemType": "appointment",
        "entityId": id,
        "action": "updated",
        "version": version,
        "source": "google",
        "data": {"appointment": {
            "id": id,
            "userId": 1,
            "summary": "Dentist (moved)",
            "description": null,
            "location": null,
            "startAt": js(start),
            "endAt": js(start + ChronoDuration::hours(1)),
            "startTimeZone": "Europe/Berlin",
            "endTimeZone": "Europe/Berlin",
            "allDay": false,
            "createdAt": js(created_at),
            "updatedAt": js(updated_at),
            "googleSync": {
                "calendarId": "primary",
                "eventId": alice_event,
                "etag": edited["etag"],
                "remoteUpdatedAt": js(parse(edited["updated"].as_str().unwrap())),
            },
        }},
    }]});
    assert_eq!(received, expected);
    assert_eq!(version, 2, "the initial import was version 1");

    // Bob saw nothing of it: his first message is his own change.
    let bob_id: i64 = sqlx::query_scalar("SELECT id FROM appointments WHERE user_id = 2")
        .fetch_one(&app.app.pool)
        .await
        .unwrap();
    app.google
        .delete_event("bob@example.com", &bob_event)
        .unwrap();
    pull_socketio(&app, 2, &key).await;
    let received = bob
        .next_payload(Duration::from_secs(30))
        .await
        .expect("bob receives his own delta");
    assert_eq!(received["deltas"].as_array().unwrap().len(), 1);
    assert_eq!(received["deltas"][0]["action"], "deleted");
    assert_eq!(received["deltas"][0]["version"], 2);
    assert!(received["deltas"][0].get("data").is_none());
    assert_eq!(received["deltas"][0]["entityId"], bob_id);
}

#[tokio::test]
async fn run_once_with_redis_down_exits_zero_and_keeps_the_backlog() {
    let app = SyncApp::spawn().await;
    app.google
        .create_event(
            "primary",
            json!({"summary": "x",
                   "start": {"dateTime": js(Utc::now() + ChronoDuration::days(1))},
                   "end": {"dateTime": js(Utc::now() + ChronoDuration::days(1) + ChronoDuration::hours(1))}}),
        )
        .unwrap();
    app.connect(1, "primary", &[]).await;
    let mut cmd = app.command();
    cmd.env("REDIS_URL", "redis://127.0.0.1:9");
    let out = crate::harness::run_command(cmd, &["run", "--once"], "").await;
    assert!(out.status.success(), "{}", stderr(&out));
    let status = app.status().await;
    assert_eq!(status["outbox"]["backlog"], 1);
    // The next pass with Redis back drains it.
    app.run_once().await;
    assert_eq!(app.status().await["outbox"]["backlog"], 0);
}
