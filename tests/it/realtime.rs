//! End to end with the real realtime layer: a stock Node.js Socket.IO server
//! with `@socket.io/redis-adapter` (realtime/server.js) and `socket.io-client`
//! clients for two users. The worker's deltas must reach the right user's
//! client as `plan:item-delta` with exactly the expected payload, and nobody
//! else's.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

fn realtime_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("realtime")
}

/// Installs the pinned npm packages once per test run (`npm ci` from the
/// committed lockfile) when they are not there yet.
fn ensure_node_modules() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let dir = realtime_dir();
        if dir.join("node_modules/socket.io/package.json").exists()
            && dir.join("node_modules/socket.io-client/package.json").exists()
        {
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
    pub lines: Lines<BufReader<ChildStdout>>,
}

impl NodeProcess {
    fn spawn(script: &str, args: &[&str], env: &[(&str, &str)]) -> NodeProcess {
        ensure_node_modules();
        let mut cmd = Command::new("node");
        cmd.arg(realtime_dir().join(script))
            .args(args)
            .current_dir(realtime_dir())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("node runs");
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        NodeProcess { child, lines }
    }

    pub async fn next_line(&mut self, within: Duration) -> Option<String> {
        tokio::time::timeout(within, self.lines.next_line())
            .await
            .ok()
            .and_then(|l| l.ok().flatten())
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Starts realtime/server.js on a free port; returns it and its URL.
pub async fn socketio_server(redis_url: &str, key: &str) -> (NodeProcess, String) {
    let mut server = NodeProcess::spawn(
        "server.js",
        &[],
        &[("REDIS_URL", redis_url), ("SOCKETIO_KEY", key)],
    );
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
