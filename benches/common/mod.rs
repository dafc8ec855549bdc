//! Shared setup of the benchmarks: a database of their own on the local
//! PostgreSQL (dropped at the end), machine facts for BENCHMARKS.md.

#![allow(dead_code)]

pub mod cluster;
pub mod cpu;

use std::time::Duration;

use plansync::config::{DatabaseSettings, Env};
use sqlx::{Connection, Executor, PgConnection, PgPool};

pub struct BenchDb {
    pub name: String,
    pub url: String,
    pub pool: PgPool,
    admin_url: String,
}

fn base_url() -> url::Url {
    let raw = std::env::var("DATABASE_URL")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| DatabaseSettings::DEFAULT_URL.to_owned());
    url::Url::parse(&raw).expect("DATABASE_URL is a URL")
}

impl BenchDb {
    pub async fn create(tag: &str) -> BenchDb {
        let name = format!("plansync_bench_{tag}_{}", std::process::id());
        let mut admin = base_url();
        admin.set_path("postgres");
        let mut db = base_url();
        db.set_path(&name);
        let mut conn = PgConnection::connect(admin.as_str()).await.unwrap();
        conn.execute(format!("DROP DATABASE IF EXISTS \"{name}\"").as_str())
            .await
            .unwrap();
        conn.execute(format!("CREATE DATABASE \"{name}\"").as_str())
            .await
            .unwrap();
        let settings =
            DatabaseSettings::from_env(&Env::from_pairs([("DATABASE_URL", db.as_str())])).unwrap();
        plansync::store::migrate::run(&settings).await.unwrap();
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(8)
            .connect(db.as_str())
            .await
            .unwrap();
        BenchDb {
            name,
            url: db.to_string(),
            pool,
            admin_url: admin.to_string(),
        }
    }

    pub async fn drop_db(self) {
        self.pool.close().await;
        let mut conn = PgConnection::connect(&self.admin_url).await.unwrap();
        conn.execute(format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name).as_str())
            .await
            .unwrap();
    }
}

/// One line describing the machine, for the results.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores, {cpu}")
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

/// Peak resident set size of this process so far, in MiB.
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
        })
        .map_or(0.0, |kb| kb / 1024.0)
}
