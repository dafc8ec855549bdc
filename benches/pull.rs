//! Pull benchmark (issue 5). Measures, in one run on one machine:
//! - a full sync of the 10,000-event fixture calendar (fixtures/bench) into an
//!   empty database by the real worker (`plansync run --once`, a child
//!   process), then 100 changes made in Google pulled incrementally: events/s,
//!   from the job's own duration (the worker logs it) and from the child's
//!   wall time;
//! - the emulator + client listing time alone (every page listed with
//!   `CalendarClient`, no database), so the worker's rate can be given with
//!   the emulator's serving time subtracted;
//! - a raw batched 2,500-row `INSERT … ON CONFLICT (id) DO UPDATE` of the same
//!   rows (the appointments the worker wrote, same columns, `UNNEST` arrays)
//!   into an empty `appointments` table, for the ratio the issue targets;
//! - the worker's peak RSS (`/usr/bin/time -f %M`) for a full sync of the
//!   first 1,000 events of the fixture and of all 10,000.
//!
//! Run: `cargo bench --bench pull` (PostgreSQL and Redis as for the tests;
//! GNU time at /usr/bin/time). The emulator runs inside this process, the
//! worker in its own, so the worker's RSS is its alone.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use plansync::config::{Env, GoogleSettings};
use plansync::crypto::TokenCipher;
use plansync::google::{GoogleClient, ListQuery};
use plansync::ids::{CalendarId, RefreshToken, SyncToken};
use plansync_fake_google::{FakeGoogle, FakeGoogleOptions};
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::io::AsyncWriteExt;

const BIN: &str = env!("CARGO_BIN_EXE_plansync");
const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/bench");
const CALENDAR: &str = "primary";
const USER: i64 = 1;
/// Calendars cut to the fixture's first N events, for memory: less than a
/// page, and one page.
const SMALL: [usize; 2] = [1_000, 2_400];
/// Full-sync rounds of the whole fixture; medians are reported.
const ROUNDS: usize = 5;
const CHANGES: usize = 100;
const RAW_BATCH: usize = 2_500;
/// Listing-alone runs; the median is reported.
const LIST_RUNS: usize = 3;
const LOOKBACK_DAYS: i64 = 90;

fn redis_url() -> String {
    std::env::var("REDIS_URL")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "redis://127.0.0.1:6379".into())
}

/// One calendar served by its own emulator, synced into its own database.
struct Setup {
    google: FakeGoogle,
    db: common::BenchDb,
    token_key: String,
    prefix: String,
}

impl Setup {
    async fn start(fixtures: &Path, tag: &str) -> Setup {
        let google = FakeGoogle::start(FakeGoogleOptions {
            fixtures: Some(fixtures.to_owned()),
            ..FakeGoogleOptions::default()
        })
        .await
        .expect("the emulator starts");
        let db = common::BenchDb::create(tag).await;
        sqlx::query("INSERT INTO users (id) VALUES ($1)")
            .bind(USER)
            .execute(&db.pool)
            .await
            .unwrap();
        let setup = Setup {
            google,
            db,
            token_key: TokenCipher::generate_key(),
            prefix: format!("bench:{tag}:{}:", std::process::id()),
        };
        let token = setup.google.refresh_tokens()[0].clone();
        let out = setup
            .plansync(
                &[
                    "connect",
                    "--user",
                    &USER.to_string(),
                    "--calendar",
                    CALENDAR,
                ],
                &format!("{token}\n"),
            )
            .await;
        assert!(out.status.success(), "connect: {}", text(&out.stderr));
        setup
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("PATH", std::env::var("PATH").unwrap_or_default()),
            ("DATABASE_URL", self.db.url.clone()),
            ("REDIS_URL", redis_url()),
            ("PLANSYNC_REDIS_PREFIX", self.prefix.clone()),
            ("PLANSYNC_TOKEN_KEY", self.token_key.clone()),
            ("PLANSYNC_LOOKBACK_DAYS", LOOKBACK_DAYS.to_string()),
            ("GOOGLE_CALENDAR_BASE_URL", self.google.base_url()),
            ("GOOGLE_TOKEN_URL", self.google.token_url()),
            ("GOOGLE_CLIENT_ID", self.google.client_id()),
            ("GOOGLE_CLIENT_SECRET", self.google.client_secret()),
            ("PLANSYNC_LOG_FORMAT", "json".into()),
            ("RUST_LOG", "info".into()),
        ];
        // glibc allocator tuning is passed through, to tell allocator
        // behaviour from memory the worker really retains.
        for var in [
            "MALLOC_ARENA_MAX",
            "MALLOC_MMAP_THRESHOLD_",
            "MALLOC_TRIM_THRESHOLD_",
        ] {
            if let Ok(value) = std::env::var(var) {
                env.push((var, value));
            }
        }
        env
    }

    async fn plansync(&self, args: &[&str], stdin: &str) -> std::process::Output {
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.args(args);
        self.spawn(cmd, stdin).await
    }

    async fn spawn(&self, mut cmd: tokio::process::Command, stdin: &str) -> std::process::Output {
        cmd.env_clear()
            .envs(self.env())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("the binary starts");
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.as_bytes()).await.unwrap();
        drop(input);
        child.wait_with_output().await.unwrap()
    }

    /// `plansync run --once` under GNU time.
    async fn run_once(&self) -> Pass {
        let rss_file = tempfile::NamedTempFile::new().unwrap();
        let mut cmd = tokio::process::Command::new("/usr/bin/time");
        cmd.arg("-f")
            .arg("%M")
            .arg("-o")
            .arg(rss_file.path())
            .args([BIN, "run", "--once"]);
        let t0 = Instant::now();
        let out = self.spawn(cmd, "").await;
        let wall = t0.elapsed();
        let log = text(&out.stderr);
        assert!(out.status.success(), "run --once: {log}");
        let rss_kib: f64 = std::fs::read_to_string(rss_file.path())
            .unwrap()
            .lines()
            .last()
            .and_then(|l| l.trim().parse().ok())
            .expect("GNU time wrote the peak RSS");
        let mut job = Duration::ZERO;
        let mut jobs = 0;
        let (mut listing, mut writing) = (None, None);
        for line in log.lines() {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            match v["message"].as_str() {
                Some("job succeeded") => {
                    jobs += 1;
                    job += Duration::from_millis(v["elapsed_ms"].as_u64().unwrap());
                }
                Some("pull finished") => {
                    let ms = |k: &str| Duration::from_secs_f64(v[k].as_f64().unwrap() / 1e3);
                    listing = Some(ms("listing_ms"));
                    writing = Some(ms("writing_ms"));
                }
                Some("pass finished") => {
                    assert_eq!(v["failed"].as_u64(), Some(0), "no job failed: {log}")
                }
                _ => {}
            }
        }
        assert_eq!(jobs, 1, "one pull job ran: {log}");
        Pass {
            wall,
            job,
            listing: listing.expect("the pull logs its listing time"),
            writing: writing.expect("the pull logs its writing time"),
            rss_mib: rss_kib / 1024.0,
        }
    }

    async fn sync_token(&self) -> SyncToken {
        let token: String = sqlx::query_scalar("SELECT sync_token FROM plansync.connections")
            .fetch_one(&self.db.pool)
            .await
            .unwrap();
        SyncToken::new(token)
    }

    /// Lists every page as the worker does, without a database: the time the
    /// emulator and the client (HTTP, JSON, mapping) take. Median of
    /// [`LIST_RUNS`], each with a fresh client (so a token grant, as the
    /// worker's job does).
    async fn list_alone(&self, first: &ListQuery) -> (Duration, usize) {
        let settings = GoogleSettings::from_env(&Env::from_pairs(self.env())).unwrap();
        let google = GoogleClient::new(&settings).unwrap();
        let calendar = CalendarId::new(CALENDAR);
        let mut times = Vec::new();
        let mut count = 0;
        for _ in 0..LIST_RUNS {
            let client =
                google.calendar_client(RefreshToken::new(self.google.refresh_tokens()[0].clone()));
            let t0 = Instant::now();
            let mut query = first.clone();
            count = 0;
            loop {
                let page = client.list_page(&calendar, &query).await.unwrap();
                count += page.events.len();
                match page.next_page_token {
                    Some(next) => query = query.next_page(next),
                    None => break,
                }
            }
            times.push(t0.elapsed());
        }
        times.sort();
        (times[times.len() / 2], count)
    }

    async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
    }

    async fn finish(self) {
        self.google.shutdown().await;
        self.db.drop_db().await;
    }
}

struct Pass {
    wall: Duration,
    /// The pull job's own duration, as the worker logs it (claim to commit of
    /// the last page); excludes process start, migrations and outbox drain.
    job: Duration,
    /// The pull's own split of its time (it logs both): waiting on Google's
    /// pages, and everything else (reconcile, the pages' transactions).
    listing: Duration,
    writing: Duration,
    rss_mib: f64,
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn full_query() -> ListQuery {
    ListQuery::full(Utc::now() - chrono::Duration::days(LOOKBACK_DAYS))
}

/// fixtures/bench cut to its first `n` items, in a temporary directory.
fn fixture_prefix(n: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = PathBuf::from(FIXTURE);
    std::fs::copy(src.join("oauth.json"), dir.path().join("oauth.json")).unwrap();
    let mut cal: Value =
        serde_json::from_slice(&std::fs::read(src.join("primary.json")).unwrap()).unwrap();
    cal["items"].as_array_mut().unwrap().truncate(n);
    std::fs::write(
        dir.path().join("primary.json"),
        serde_json::to_vec(&cal).unwrap(),
    )
    .unwrap();
    dir
}

/// The appointments as the worker wrote them, transposed for `UNNEST`.
#[derive(Default)]
struct Rows {
    id: Vec<i64>,
    user_id: Vec<i64>,
    summary: Vec<String>,
    description: Vec<Option<String>>,
    location: Vec<Option<String>>,
    start_at: Vec<DateTime<Utc>>,
    end_at: Vec<DateTime<Utc>>,
    start_tz: Vec<Option<String>>,
    end_tz: Vec<Option<String>>,
    all_day: Vec<bool>,
}

type Row = (
    i64,
    i64,
    String,
    Option<String>,
    Option<String>,
    DateTime<Utc>,
    DateTime<Utc>,
    Option<String>,
    Option<String>,
    bool,
);

async fn read_rows(pool: &PgPool) -> Rows {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, user_id, summary, description, location, start_at, end_at, \
             start_time_zone, end_time_zone, all_day FROM public.appointments ORDER BY id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut out = Rows::default();
    for r in rows {
        out.id.push(r.0);
        out.user_id.push(r.1);
        out.summary.push(r.2);
        out.description.push(r.3);
        out.location.push(r.4);
        out.start_at.push(r.5);
        out.end_at.push(r.6);
        out.start_tz.push(r.7);
        out.end_tz.push(r.8);
        out.all_day.push(r.9);
    }
    out
}

/// The raw batched upsert: one autocommitted statement per 2,500 rows.
async fn raw_upsert(pool: &PgPool, rows: &Rows) -> Duration {
    let t0 = Instant::now();
    let n = rows.id.len();
    let mut at = 0;
    while at < n {
        let r = at..(at + RAW_BATCH).min(n);
        sqlx::query(
            "INSERT INTO public.appointments (id, user_id, summary, description, location, \
                 start_at, end_at, start_time_zone, end_time_zone, all_day, created_at, updated_at) \
             SELECT t.*, now(), now() FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::TEXT[], \
                 $4::TEXT[], $5::TEXT[], $6::TIMESTAMPTZ[], $7::TIMESTAMPTZ[], $8::TEXT[], \
                 $9::TEXT[], $10::BOOLEAN[]) AS t \
             ON CONFLICT (id) DO UPDATE SET user_id = EXCLUDED.user_id, \
                 summary = EXCLUDED.summary, description = EXCLUDED.description, \
                 location = EXCLUDED.location, start_at = EXCLUDED.start_at, \
                 end_at = EXCLUDED.end_at, start_time_zone = EXCLUDED.start_time_zone, \
                 end_time_zone = EXCLUDED.end_time_zone, all_day = EXCLUDED.all_day, \
                 updated_at = now()",
        )
        .bind(&rows.id[r.clone()])
        .bind(&rows.user_id[r.clone()])
        .bind(&rows.summary[r.clone()])
        .bind(&rows.description[r.clone()])
        .bind(&rows.location[r.clone()])
        .bind(&rows.start_at[r.clone()])
        .bind(&rows.end_at[r.clone()])
        .bind(&rows.start_tz[r.clone()])
        .bind(&rows.end_tz[r.clone()])
        .bind(&rows.all_day[r.clone()])
        .execute(pool)
        .await
        .unwrap();
        at = r.end;
    }
    t0.elapsed()
}

/// 100 changes as a user makes them in Google's UI: 50 edits, 25 new events,
/// 25 deletions, on single (non-recurring) events of the fixture.
fn make_changes(google: &FakeGoogle) -> (usize, usize, usize) {
    let cal: Value = serde_json::from_slice(
        &std::fs::read(PathBuf::from(FIXTURE).join("primary.json")).unwrap(),
    )
    .unwrap();
    let singles: Vec<&str> = cal["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e.get("recurrence").is_none())
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    let (edits, creates) = (CHANGES / 2, CHANGES / 4);
    let deletes = CHANGES - edits - creates;
    // Spread over the calendar (and so over the full sync's pages).
    let step = singles.len() / (edits + deletes);
    let mut picked = singles.iter().step_by(step);
    for i in 0..edits {
        let id = picked.next().unwrap();
        google
            .patch_event(
                CALENDAR,
                id,
                json!({"summary": format!("Edited in Google #{i}"), "location": null}),
            )
            .unwrap();
    }
    for _ in 0..deletes {
        google
            .delete_event(CALENDAR, picked.next().unwrap())
            .unwrap();
    }
    let day = Utc::now().date_naive() + chrono::Duration::days(7);
    for i in 0..creates {
        let start = format!("{day}T{:02}:00:00", 8 + i % 10);
        let end = format!("{day}T{:02}:30:00", 8 + i % 10);
        google
            .create_event(
                CALENDAR,
                json!({
                    "summary": format!("New in Google #{i}"),
                    "start": {"dateTime": start, "timeZone": "Europe/Berlin"},
                    "end": {"dateTime": end, "timeZone": "Europe/Berlin"},
                }),
            )
            .unwrap();
    }
    (edits, creates, deletes)
}

fn rate(events: usize, d: Duration) -> f64 {
    events as f64 / d.as_secs_f64()
}

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms < 100.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

/// One full sync of the whole fixture, the raw upsert of the same rows, then
/// 100 changes pulled incrementally.
struct Round {
    listed: usize,
    appointments: usize,
    full: Pass,
    list_full: Duration,
    raw_rows: usize,
    raw_insert: Duration,
    raw_update: Duration,
    changes: (usize, usize, usize),
    incr_listed: usize,
    incr: Pass,
    list_incr: Duration,
}

impl Round {
    fn full_rate(&self) -> f64 {
        rate(self.listed, self.full.job)
    }
    fn full_net(&self) -> f64 {
        rate(self.listed, self.full.job.saturating_sub(self.list_full))
    }
    fn write_rate(&self) -> f64 {
        rate(self.listed, self.full.writing)
    }
    fn raw_rate(&self) -> f64 {
        rate(self.raw_rows, self.raw_insert)
    }
    fn ratio(&self) -> f64 {
        self.full_net() / self.raw_rate()
    }
    fn incr_net(&self) -> f64 {
        rate(
            self.incr_listed,
            self.incr.job.saturating_sub(self.list_incr),
        )
    }
}

async fn round(i: usize) -> Round {
    let big = Setup::start(Path::new(FIXTURE), &format!("pull{i}")).await;
    let (list_full, listed) = big.list_alone(&full_query()).await;
    let full = big.run_once().await;
    let appointments = big.count("SELECT count(*) FROM public.appointments").await as usize;
    let linked = big.count("SELECT count(*) FROM plansync.links").await as usize;
    assert_eq!(appointments, linked, "every appointment is linked");
    assert_eq!(appointments, listed, "the full sync imported the calendar");

    // The raw batched upsert of the same rows into an empty appointments.
    let raw_db = common::BenchDb::create(&format!("pull{i}_raw")).await;
    sqlx::query("INSERT INTO users (id) VALUES ($1)")
        .bind(USER)
        .execute(&raw_db.pool)
        .await
        .unwrap();
    let rows = read_rows(&big.db.pool).await;
    let raw_insert = raw_upsert(&raw_db.pool, &rows).await;
    let raw_update = raw_upsert(&raw_db.pool, &rows).await;
    raw_db.drop_db().await;

    // 100 changes in Google, pulled incrementally.
    let changes = make_changes(&big.google);
    let (edits, creates, deletes) = changes;
    let token = big.sync_token().await;
    let (list_incr, incr_listed) = big.list_alone(&ListQuery::incremental(token)).await;
    let out = big
        .plansync(&["resync", "--user", &USER.to_string()], "")
        .await;
    assert!(out.status.success(), "resync: {}", text(&out.stderr));
    let incr = big.run_once().await;
    let after = big.count("SELECT count(*) FROM public.appointments").await as usize;
    assert_eq!(
        after,
        appointments + creates - deletes,
        "the changes arrived"
    );
    let edited = big
        .count("SELECT count(*) FROM public.appointments WHERE summary LIKE 'Edited in Google #%'")
        .await as usize;
    assert_eq!(edited, edits, "the edits arrived");
    big.finish().await;
    Round {
        listed,
        appointments,
        full,
        list_full,
        raw_rows: rows.id.len(),
        raw_insert,
        raw_update,
        changes,
        incr_listed,
        incr,
        list_incr,
    }
}

/// A full sync of the fixture's first `n` events: (events listed, pass).
async fn small_sync(n: usize) -> (usize, Pass, Duration) {
    let dir = fixture_prefix(n);
    let small = Setup::start(dir.path(), &format!("pull_{n}")).await;
    let (list, listed) = small.list_alone(&full_query()).await;
    let pass = small.run_once().await;
    assert_eq!(
        small
            .count("SELECT count(*) FROM public.appointments")
            .await as usize,
        listed
    );
    small.finish().await;
    (listed, pass, list)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn median_ms(v: impl Iterator<Item = Duration>) -> String {
    ms(Duration::from_secs_f64(median(
        v.map(|d| d.as_secs_f64()).collect(),
    )))
}

#[tokio::main]
async fn main() {
    let mut rounds = Vec::new();
    for i in 0..ROUNDS {
        rounds.push(round(i).await);
    }
    let mut smalls = Vec::new();
    for n in SMALL {
        smalls.push(small_sync(n).await);
    }

    let r0 = &rounds[0];
    let (edits, creates, deletes) = r0.changes;
    println!("## pull ({})", common::machine());
    println!();
    println!(
        "Full sync of fixtures/bench ({} events listed, {} appointments written, {} pages of 2500), \
         {ROUNDS} rounds, each into an empty database:",
        r0.listed,
        r0.appointments,
        r0.listed.div_ceil(2500)
    );
    println!();
    println!("| round | worker job (its listing / writing) | listing alone | rate: job | rate: job − listing alone | rate: writing | raw insert | raw rate | ratio: job − listing alone | ratio: writing | ratio: job | worker peak RSS |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (i, r) in rounds.iter().enumerate() {
        println!(
            "| {} | {} ({} / {}) | {} | {:.0} ev/s | {:.0} ev/s | {:.0} ev/s | {} | {:.0} rows/s | {:.2} | {:.2} | {:.2} | {:.1} MiB |",
            i + 1,
            ms(r.full.job),
            ms(r.full.listing),
            ms(r.full.writing),
            ms(r.list_full),
            r.full_rate(),
            r.full_net(),
            r.write_rate(),
            ms(r.raw_insert),
            r.raw_rate(),
            r.ratio(),
            r.write_rate() / r.raw_rate(),
            r.full_rate() / r.raw_rate(),
            r.full.rss_mib
        );
    }
    println!(
        "| **median** | {} ({} / {}) | {} | {:.0} ev/s | {:.0} ev/s | {:.0} ev/s | {} | {:.0} rows/s | **{:.2}** | **{:.2}** | {:.2} | {:.1} MiB |",
        median_ms(rounds.iter().map(|r| r.full.job)),
        median_ms(rounds.iter().map(|r| r.full.listing)),
        median_ms(rounds.iter().map(|r| r.full.writing)),
        median_ms(rounds.iter().map(|r| r.list_full)),
        median(rounds.iter().map(Round::full_rate).collect()),
        median(rounds.iter().map(Round::full_net).collect()),
        median(rounds.iter().map(Round::write_rate).collect()),
        median_ms(rounds.iter().map(|r| r.raw_insert)),
        median(rounds.iter().map(Round::raw_rate).collect()),
        median(rounds.iter().map(Round::ratio).collect()),
        median(rounds.iter().map(|r| r.write_rate() / r.raw_rate()).collect()),
        median(rounds.iter().map(|r| r.full_rate() / r.raw_rate()).collect()),
        median(rounds.iter().map(|r| r.full.rss_mib).collect()),
    );
    println!();
    println!(
        "Medians: child process wall time {} ({:.0} ev/s); the raw upsert of the same rows again \
         (every row a conflict → update) {} ({:.0} rows/s).",
        median_ms(rounds.iter().map(|r| r.full.wall)),
        median(rounds.iter().map(|r| rate(r.listed, r.full.wall)).collect()),
        median_ms(rounds.iter().map(|r| r.raw_update)),
        median(
            rounds
                .iter()
                .map(|r| rate(r.raw_rows, r.raw_update))
                .collect()
        ),
    );
    println!();
    println!(
        "Then {CHANGES} changes made in Google ({edits} edits, {creates} new, {deletes} deleted; \
         {} events listed), pulled incrementally (medians of {ROUNDS}):",
        r0.incr_listed
    );
    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| worker job (its listing / writing) | {} ({} / {}) |",
        median_ms(rounds.iter().map(|r| r.incr.job)),
        median_ms(rounds.iter().map(|r| r.incr.listing)),
        median_ms(rounds.iter().map(|r| r.incr.writing)),
    );
    println!(
        "| child wall / listing alone | {} / {} |",
        median_ms(rounds.iter().map(|r| r.incr.wall)),
        median_ms(rounds.iter().map(|r| r.list_incr)),
    );
    println!(
        "| rate: job / job − listing alone / writing | {:.0} / {:.0} / {:.0} events/s |",
        median(
            rounds
                .iter()
                .map(|r| rate(r.incr_listed, r.incr.job))
                .collect()
        ),
        median(rounds.iter().map(Round::incr_net).collect()),
        median(
            rounds
                .iter()
                .map(|r| rate(r.incr_listed, r.incr.writing))
                .collect()
        ),
    );
    println!(
        "| worker peak RSS | {:.1} MiB |",
        median(rounds.iter().map(|r| r.incr.rss_mib).collect())
    );
    println!();
    println!("Worker peak RSS by calendar size (full sync into an empty database):");
    println!();
    println!("| fixture events | events listed | pages | worker job | listing alone | peak RSS |");
    println!("|---|---|---|---|---|---|");
    for (n, (listed, pass, list)) in SMALL.iter().zip(&smalls) {
        println!(
            "| first {n} | {listed} | {} | {} | {} | {:.1} MiB |",
            listed.div_ceil(2500),
            ms(pass.job),
            ms(*list),
            pass.rss_mib
        );
    }
    let big_rss = median(rounds.iter().map(|r| r.full.rss_mib).collect());
    println!(
        "| all 10000 | {} | {} | {} | {} | {big_rss:.1} MiB (median) |",
        r0.listed,
        r0.listed.div_ceil(2500),
        median_ms(rounds.iter().map(|r| r.full.job)),
        median_ms(rounds.iter().map(|r| r.list_full)),
    );
    let (small_listed, small_pass, _) = &smalls[0];
    println!();
    println!(
        "Peak RSS grows {:.2}× for {:.1}× the events ({} → {}).",
        big_rss / small_pass.rss_mib,
        r0.listed as f64 / *small_listed as f64,
        small_listed,
        r0.listed
    );
    println!(
        "This process (the emulator holding the calendars) peaked at {:.1} MiB.",
        common::peak_rss_mib()
    );
}
