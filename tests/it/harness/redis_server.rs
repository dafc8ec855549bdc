//! A `redis-server` of the test's own, for tests that stop, restart or
//! reconfigure Redis without touching the shared server.

use std::time::Duration;

use super::eventually;

/// A `redis-server` of the test's own, on a free port, so a test can stop
/// and restart it without touching the shared one.
pub struct PrivateRedis {
    pub port: u16,
    child: Option<std::process::Child>,
    extra_args: Vec<String>,
}

impl PrivateRedis {
    pub async fn start() -> PrivateRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut redis = PrivateRedis {
            port,
            child: None,
            extra_args: Vec::new(),
        };
        redis.spawn().await;
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn spawn(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(&self.extra_args)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server runs (see scripts/services)");
        self.child = Some(child);
        let url = if let Some(i) = self.extra_args.iter().position(|a| a == "--requirepass") {
            format!(
                "redis://:{}@127.0.0.1:{}",
                self.extra_args[i + 1],
                self.port
            )
        } else {
            self.url()
        };
        let client = redis::Client::open(url).unwrap();
        eventually(Duration::from_secs(10), "private redis to answer", || {
            let client = client.clone();
            async move {
                let mut conn = client.get_multiplexed_async_connection().await.ok()?;
                redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .ok()
            }
        })
        .await;
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same port, with `args` added (e.g. a password).
    pub async fn restart_with(&mut self, args: &[&str]) {
        self.stop();
        self.extra_args = args.iter().map(|a| a.to_string()).collect();
        self.spawn().await;
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}
