//! A PostgreSQL cluster of the benchmark's own (initdb + pg_ctl in a
//! temporary directory, its own port), with `pg_stat_statements` loaded and
//! utility statements tracked, so a bench can count the statements and
//! commits of a worker exactly — without restarting or reconfiguring the
//! shared server. `initdb` refuses to run as root: as root, every server
//! command runs as the `postgres` OS user, in a directory it owns.
//!
//! The worker connects as its own role ([`WORKER_ROLE`]), the bench as
//! `postgres`, so `pg_stat_statements` (keyed by role and database) tells the
//! worker's statements from the bench's own.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;

use sqlx::{Connection, Executor, PgConnection};

/// The role the measured worker connects as (a superuser, so it migrates).
pub const WORKER_ROLE: &str = "plansync_worker";

pub struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
    stopped: bool,
}

/// Statement counts of one role in one database, by normalised query text.
#[derive(Debug, Clone, Default)]
pub struct Statements {
    pub calls: BTreeMap<String, i64>,
    /// Server time spent executing each (ms, `total_exec_time`).
    pub exec_ms: BTreeMap<String, f64>,
}

impl Statements {
    pub fn total(&self) -> i64 {
        self.calls.values().sum()
    }

    /// Server execution time of all of them (ms).
    pub fn total_exec_ms(&self) -> f64 {
        self.exec_ms.values().sum()
    }

    /// Calls of the statements whose text contains `needle`.
    pub fn matching(&self, needle: &str) -> i64 {
        self.calls
            .iter()
            .filter(|(q, _)| q.contains(needle))
            .map(|(_, c)| c)
            .sum()
    }

    /// Calls of the statements that are exactly `word` (BEGIN, COMMIT, …).
    pub fn exactly(&self, word: &str) -> i64 {
        self.calls
            .iter()
            .filter(|(q, _)| q.trim().trim_end_matches(';').eq_ignore_ascii_case(word))
            .map(|(_, c)| c)
            .sum()
    }

    /// The statements by calls, most called first.
    pub fn by_calls(&self) -> Vec<(&str, i64)> {
        let mut v: Vec<(&str, i64)> = self.calls.iter().map(|(q, c)| (q.as_str(), *c)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        v
    }
}

fn running_as_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl Cluster {
    /// initdb, start (port of its own, loopback only), the
    /// `pg_stat_statements` extension in `postgres`, the worker's role.
    pub async fn start() -> Cluster {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL server binaries under /usr/lib/postgresql")
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|p| p.join("initdb").exists())
            .max()
            .expect("an initdb under /usr/lib/postgresql/*/bin");
        let lib = bin.parent().unwrap().join("lib/pg_stat_statements.so");
        assert!(
            lib.exists(),
            "pg_stat_statements is not installed ({} missing)",
            lib.display()
        );
        let dir = tempfile::Builder::new()
            .prefix("plansync-bench-pg-")
            .tempdir()
            .unwrap();
        if running_as_root() {
            let ok = std::process::Command::new("chown")
                .args(["postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap()
                .success();
            assert!(ok, "chown the cluster directory to postgres");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cluster = Cluster {
            dir,
            bin,
            port,
            stopped: true,
        };
        let data = cluster.data();
        cluster
            .as_postgres(
                "initdb",
                &[
                    "-D",
                    data.to_str().unwrap(),
                    "-A",
                    "trust",
                    "-U",
                    "postgres",
                    "--no-sync",
                ],
            )
            .await;
        // Server settings are PostgreSQL's defaults (fsync and synchronous
        // commit on, as on the shared server), plus the statement counter.
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=300 \
             -c shared_preload_libraries=pg_stat_statements \
             -c pg_stat_statements.track_utility=on -c pg_stat_statements.max=10000 \
             -c pg_stat_statements.track=top",
            cluster.port,
            cluster.dir.path().display()
        );
        let log = cluster.dir.path().join("server.log");
        cluster
            .as_postgres(
                "pg_ctl",
                &[
                    "-D",
                    data.to_str().unwrap(),
                    "-l",
                    log.to_str().unwrap(),
                    "-o",
                    &options,
                    "-w",
                    "start",
                ],
            )
            .await;
        cluster.stopped = false;
        let mut admin = cluster.admin().await;
        admin
            .execute("CREATE EXTENSION pg_stat_statements")
            .await
            .unwrap();
        admin
            .execute(format!("CREATE ROLE {WORKER_ROLE} LOGIN SUPERUSER").as_str())
            .await
            .unwrap();
        admin.close().await.unwrap();
        cluster
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The postmaster's process id (first line of `postmaster.pid`).
    pub fn postmaster_pid(&self) -> u32 {
        std::fs::read_to_string(self.data().join("postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next().and_then(|l| l.trim().parse().ok()))
            .expect("postmaster.pid names the server's process")
    }

    /// CPU seconds the server has used so far: the postmaster and its live
    /// children (backends, background processes), plus the children it has
    /// reaped.
    pub fn cpu_seconds(&self) -> f64 {
        let postmaster = self.postmaster_pid();
        let mut total = 0.0;
        if let Some(stat) = super::cpu::stat(postmaster) {
            total += stat.own + stat.children;
        }
        for pid in super::cpu::children_of(postmaster) {
            if let Some(stat) = super::cpu::stat(pid) {
                total += stat.own;
            }
        }
        total
    }

    /// The bench's own URL (`postgres`) of `database`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// The measured worker's URL of `database`.
    pub fn worker_url(&self, database: &str) -> String {
        format!(
            "postgres://{WORKER_ROLE}@127.0.0.1:{}/{database}",
            self.port
        )
    }

    /// A connection to the `postgres` database, where the bench reads the
    /// statistics (so reading them adds nothing to a bench database's).
    pub async fn admin(&self) -> PgConnection {
        PgConnection::connect(&self.url("postgres")).await.unwrap()
    }

    pub async fn create_database(&self, name: &str) {
        let mut admin = self.admin().await;
        admin
            .execute(format!("CREATE DATABASE \"{name}\" OWNER {WORKER_ROLE}").as_str())
            .await
            .unwrap();
        admin.close().await.unwrap();
    }

    pub async fn drop_database(&self, name: &str) {
        let mut admin = self.admin().await;
        admin
            .execute(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)").as_str())
            .await
            .unwrap();
        admin.close().await.unwrap();
    }

    async fn as_postgres(&self, program: &str, args: &[&str]) {
        let program = self.bin.join(program);
        let mut cmd = if running_as_root() {
            let mut cmd = tokio::process::Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(&program);
            cmd
        } else {
            tokio::process::Command::new(&program)
        };
        let out = cmd
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{} {args:?}: {}{}",
            program.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub async fn stop(mut self) {
        let data = self.data();
        self.as_postgres(
            "pg_ctl",
            &["-D", data.to_str().unwrap(), "-m", "fast", "-w", "stop"],
        )
        .await;
        self.stopped = true;
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        let pg_ctl = self.bin.join("pg_ctl");
        let data = self.data();
        let mut cmd = if running_as_root() {
            let mut cmd = std::process::Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(&pg_ctl);
            cmd
        } else {
            std::process::Command::new(&pg_ctl)
        };
        let _ = cmd
            .args(["-D", data.to_str().unwrap(), "-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Resets the statement counters of the whole cluster.
pub async fn reset_statements(admin: &mut PgConnection) {
    admin
        .execute("SELECT pg_stat_statements_reset()")
        .await
        .unwrap();
}

/// The statements `role` ran in `database` since the last reset (top-level
/// statements: one per round trip; a trigger's statements are not counted).
pub async fn statements(admin: &mut PgConnection, role: &str, database: &str) -> Statements {
    let rows: Vec<(String, i64, f64)> = sqlx::query_as(
        "SELECT s.query, s.calls, s.total_exec_time FROM pg_stat_statements s \
           JOIN pg_roles r ON r.oid = s.userid \
           JOIN pg_database d ON d.oid = s.dbid \
          WHERE r.rolname = $1 AND d.datname = $2",
    )
    .bind(role)
    .bind(database)
    .fetch_all(&mut *admin)
    .await
    .unwrap();
    let mut calls = BTreeMap::new();
    let mut exec_ms = BTreeMap::new();
    for (query, n, ms) in rows {
        let text = query.split_whitespace().collect::<Vec<_>>().join(" ");
        *calls.entry(text.clone()).or_insert(0) += n;
        *exec_ms.entry(text).or_insert(0.0) += ms;
    }
    Statements { calls, exec_ms }
}

/// `pg_stat_database.xact_commit` of `database` (flushed by each backend at
/// most once a second while busy, within 10 s when it idles, and at exit).
pub async fn commits(admin: &mut PgConnection, database: &str) -> i64 {
    // A fresh snapshot each time (the statistics are otherwise cached for
    // the transaction; each of these statements is its own).
    sqlx::query_scalar("SELECT xact_commit FROM pg_stat_database WHERE datname = $1")
        .bind(database)
        .fetch_one(&mut *admin)
        .await
        .unwrap()
}
