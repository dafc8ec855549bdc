//! Worker processes of a test: [`WorkerProcess`], a worker in-process with a
//! runtime of its own (killed like `kill -9` by dropping it), and
//! [`RunningWorker`], the `plansync run` binary as a child process, for what
//! only the real process shows (signals, exit codes, logs, its listener).

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use plansync::config::Env;
use plansync::worker::setup::WorkerSetup;
use sqlx::PgPool;
use tokio::io::AsyncBufReadExt;
use tokio_util::sync::CancellationToken;

/// A worker "process" in-process: its own tokio runtime, database pool, Google
/// client and delta relay, built from settings as `plansync run` builds them.
/// [`WorkerProcess::kill`] (and dropping it) shuts the runtime down without
/// waiting: every task — jobs, heartbeats, the relay — is dropped at its next
/// await and every connection closed, which is what `kill -9` does as far as
/// Postgres and Google can tell (open transactions roll back, leases stay
/// until they expire, requests in flight may or may not have taken effect).
pub struct WorkerProcess {
    /// The worker id (`lockedBy` of its claims).
    pub id: String,
    runtime: Option<tokio::runtime::Runtime>,
    parts: Option<ProcessParts>,
}

struct ProcessParts {
    worker: plansync::worker::Worker<plansync::worker::SyncJobs>,
    relay: std::sync::Arc<tokio::sync::Mutex<plansync::deltas::relay::Relay>>,
    pool: PgPool,
    redis: plansync::config::RedisSettings,
}

/// Why a pass did not finish.
#[derive(Debug)]
pub enum PassError {
    /// The process was killed while the pass ran.
    Killed,
    Worker(
        #[expect(dead_code, reason = "shown by Debug when a test unwraps the pass")]
        plansync::worker::WorkerError,
    ),
}

impl WorkerProcess {
    /// Builds the process's runtime and parts; `pool_size` bounds its
    /// database connections.
    pub async fn start(env: Env, id: &str, pool_size: u32) -> WorkerProcess {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(format!("worker-{id}"))
            .enable_all()
            .build()
            .expect("a worker runtime");
        let worker_id = id.to_owned();
        // Built inside its runtime: the pool's and the HTTP client's sockets
        // belong to that runtime and die with it. Driven from a blocking
        // thread rather than spawned: sqlx's migrator future is not `Send`
        // for every lifetime, which `spawn` requires.
        let handle = runtime.handle().clone();
        let parts = tokio::task::spawn_blocking(move || {
            handle.block_on(ProcessParts::build(env, worker_id, pool_size))
        })
        .await
        .expect("building the worker");
        WorkerProcess {
            id: id.to_owned(),
            runtime: Some(runtime),
            parts: Some(parts),
        }
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        self.runtime.as_ref().expect("a live process")
    }

    fn parts(&self) -> &ProcessParts {
        self.parts.as_ref().expect("a live process")
    }

    /// Starts one pass (`run --once`: tick, every due job, drain the
    /// outbox) on the process's runtime; the handle ends when it does.
    pub fn spawn_pass(
        &self,
    ) -> tokio::task::JoinHandle<Result<plansync::worker::PassReport, plansync::worker::WorkerError>>
    {
        let worker = self.parts().worker.clone();
        let relay = self.parts().relay.clone();
        self.runtime().spawn(async move {
            let report = worker.run_once().await?;
            // As `run --once`: Redis trouble leaves the backlog for later.
            let _ = relay.lock().await.drain().await;
            Ok(report)
        })
    }

    /// One pass, to its end.
    pub async fn pass(&self) -> Result<plansync::worker::PassReport, PassError> {
        match self.spawn_pass().await {
            Ok(Ok(report)) => Ok(report),
            Ok(Err(err)) => Err(PassError::Worker(err)),
            Err(_) => Err(PassError::Killed),
        }
    }

    /// Runs the long-lived worker (`plansync run` without its HTTP side):
    /// the claim loop and the relay, until `stop` is cancelled.
    pub fn spawn_run(&self, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        let parts = self.parts();
        let worker = parts.worker.clone();
        let relay = plansync::deltas::relay::Relay::new(
            parts.pool.clone(),
            parts.redis.clone(),
            fast_relay_settings(),
        )
        .expect("a relay");
        self.runtime().spawn(async move {
            let relay_stop = CancellationToken::new();
            let relay_task = tokio::spawn(relay.run(relay_stop.clone()));
            let _ = worker.run(stop).await;
            relay_stop.cancel();
            let _ = relay_task.await;
        })
    }

    /// `kill -9`: see the type's doc.
    pub fn kill(mut self) {
        self.shutdown_now();
    }

    fn shutdown_now(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
        // Only now, with no task left to use them: the pool's idle
        // connections close (an abandoned transaction rolls back).
        self.parts.take();
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.shutdown_now();
    }
}

fn fast_relay_settings() -> plansync::deltas::relay::RelaySettings {
    plansync::deltas::relay::RelaySettings {
        idle_poll: Duration::from_millis(100),
        ..plansync::deltas::relay::RelaySettings::default()
    }
}

impl ProcessParts {
    /// As `plansync run` assembles its worker ([`WorkerSetup`]), with this
    /// process's id and pool size.
    async fn build(env: Env, worker_id: String, pool_size: u32) -> ProcessParts {
        let env = env.with("PLANSYNC_DB_POOL", pool_size.to_string());
        let setup = WorkerSetup::from_env_as(&env, &worker_id)
            .await
            .expect("the worker assembles");
        ProcessParts {
            worker: setup.worker,
            relay: std::sync::Arc::new(tokio::sync::Mutex::new(setup.relay)),
            pool: setup.pool,
            redis: setup.redis,
        }
    }
}

/// A `plansync run` child process, listening.
pub struct RunningWorker {
    pub child: tokio::process::Child,
    pub pid: u32,
    /// Its HTTP listener (`PLANSYNC_HTTP_ADDR`, as it logged it).
    pub addr: String,
    /// Every stderr line so far.
    pub log: Arc<Mutex<Vec<String>>>,
    /// Reads stderr into `log` until the child closes it.
    reader: Option<tokio::task::JoinHandle<()>>,
}

impl RunningWorker {
    /// Spawns `cmd` (a `plansync run` command; its stdio is set here) and
    /// waits up to 30 s for its `listening on ADDR` log line. Its stderr is
    /// read on into [`RunningWorker::log`], so the child never blocks on a
    /// full pipe.
    pub async fn spawn(mut cmd: tokio::process::Command) -> RunningWorker {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn plansync run");
        let pid = child.id().expect("running");
        let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let log = Arc::new(Mutex::new(Vec::new()));
        let addr = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                let addr = listening_addr(&line);
                log.lock().unwrap().push(line);
                if let Some(addr) = addr {
                    return addr;
                }
            }
            panic!("run exited before listening: {:?}", log.lock().unwrap());
        })
        .await
        .expect("run listens within 30 s");
        let sink = log.clone();
        let reader = tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        RunningWorker {
            child,
            pid,
            addr,
            log,
            reader: Some(reader),
        }
    }

    pub async fn kill9(&mut self) {
        self.child.start_kill().expect("SIGKILL");
        self.child.wait().await.expect("reaped");
    }

    pub async fn sigterm(&self) {
        let ok = tokio::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .await
            .unwrap()
            .success();
        assert!(ok, "kill -TERM {}", self.pid);
    }

    /// Waits for the exit; its code. The log is complete afterwards.
    pub async fn exit_code(&mut self, timeout: Duration) -> Option<i32> {
        let status = tokio::time::timeout(timeout, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("run {} still running after {timeout:?}", self.pid))
            .unwrap();
        if let Some(reader) = self.reader.take() {
            // The pipe closes with the process (its children share no
            // stderr): the last lines are read within moments.
            let _ = tokio::time::timeout(Duration::from_secs(10), reader).await;
        }
        status.code()
    }

    /// A GET on its listener: status and body.
    pub async fn get(&self, path: &str) -> (u16, String) {
        super::http_get_body(&self.addr, path, None).await
    }

    /// Its stderr so far, one line per log record.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

/// The address of a `listening on ADDR` log line, in either log format.
fn listening_addr(line: &str) -> Option<String> {
    let rest = line.split("listening on ").nth(1)?;
    rest.split(|c: char| c == '"' || c.is_whitespace())
        .next()
        .map(str::to_owned)
}
