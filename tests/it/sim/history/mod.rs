//! Runs one seed's history against a real database, Redis and the Google
//! emulator: the host's SQL, Google-side edits, faults, in-process workers
//! (killed, restarted, a second replica), disconnects; then lets things go
//! quiet. Everything it does goes to the op log printed on failure.

mod bodies;
mod step;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use futures::StreamExt;
use plansync::ids::{CalendarId, ConnectionId, RefreshToken, UserId};
use plansync::queue::{JobKind, Queue};
use plansync::store::connections::{ConnectionAuth, NewConnection};
use plansync_fake_google::{Fault, Lost, Operation};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;

use super::model::{Key, Model, Row, Side, Touch};
use super::ops::{self, Change, Fields, KillAt, Op, When};
use crate::harness::{redis_url, SyncApp, WorkerProcess};

use bodies::*;
pub use bodies::{apply, rng};

pub const USER: i64 = 1;
pub const CALENDAR: &str = "primary";
/// How long the end of a history may take to go quiet.
const SETTLE: Duration = Duration::from_secs(60);
/// A Google answer slowed down so that a kill lands while it is awaited.
const SLOW: Duration = Duration::from_millis(400);

/// The test's own record of who changed `appointments` and when, and of
/// every outbox row: one sequence orders both, `tx` names the transaction.
const AUDIT: &str = r#"
CREATE TABLE public.sim_log (
    seq BIGSERIAL PRIMARY KEY,
    kind TEXT NOT NULL,
    appointment_id BIGINT,
    op TEXT,
    origin TEXT,
    outbox_id BIGINT,
    tx BIGINT NOT NULL DEFAULT txid_current()
);
CREATE FUNCTION public.sim_log_appointment() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.sim_log (kind, appointment_id, op, origin)
    VALUES ('appointment', CASE WHEN TG_OP = 'DELETE' THEN OLD.id ELSE NEW.id END, TG_OP,
            current_setting('plansync.origin', true));
    RETURN NULL;
END $$;
CREATE TRIGGER zz_sim_log AFTER INSERT OR UPDATE OR DELETE ON public.appointments
    FOR EACH ROW EXECUTE FUNCTION public.sim_log_appointment();
CREATE FUNCTION public.sim_log_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.sim_log (kind, outbox_id) VALUES ('outbox', NEW.id);
    RETURN NULL;
END $$;
CREATE TRIGGER zz_sim_log AFTER INSERT ON plansync.outbox
    FOR EACH ROW EXECUTE FUNCTION public.sim_log_outbox();
"#;

/// What a seed's run counted, summed over the CI set for the coverage
/// assertion.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    /// Operations that did something, by kind.
    pub ops: BTreeMap<&'static str, u32>,
    /// Kills that found a job of the killed process still claimed.
    pub kills_landed: u32,
    pub kills_missed: u32,
    /// Faults seen answered in the emulator's request log, by kind.
    pub faults_fired: BTreeMap<&'static str, u32>,
    pub predictions: u32,
    pub disconnected_predictions: u32,
}

impl Stats {
    pub fn add(&mut self, other: &Stats) {
        for (k, v) in &other.ops {
            *self.ops.entry(k).or_default() += v;
        }
        for (k, v) in &other.faults_fired {
            *self.faults_fired.entry(k).or_default() += v;
        }
        self.kills_landed += other.kills_landed;
        self.kills_missed += other.kills_missed;
        self.predictions += other.predictions;
        self.disconnected_predictions += other.disconnected_predictions;
    }
}

pub struct Sim {
    pub sync: SyncApp,
    pub calendar_zone: String,
    bulk_threshold: String,
    pub connection: i64,
    connected: bool,
    main: Option<WorkerProcess>,
    replica: Option<(
        WorkerProcess,
        CancellationToken,
        tokio::task::JoinHandle<()>,
    )>,
    processes: usize,
    pub log: Arc<Mutex<Vec<String>>>,
    pub stats: Stats,
    pub model: Model,
    /// Every JSON message published on the user's channel, in arrival order.
    pub published: Arc<Mutex<Vec<Value>>>,
    subscriber: tokio::task::JoinHandle<()>,
    op: usize,
    started: std::time::Instant,
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.subscriber.abort();
    }
}

impl Sim {
    /// A fresh world for `seed`: database, emulator (calendar zone drawn from
    /// the seed), a connected user, a Redis subscriber.
    pub async fn start(seed: u64, rng: &mut ChaCha8Rng, log: Arc<Mutex<Vec<String>>>) -> Sim {
        let calendar_zone = ["UTC", "Europe/Berlin", "America/New_York"][rng.gen_range(0..3)];
        // A low threshold makes full resyncs emit `plan` deltas.
        let bulk_threshold = if rng.gen_bool(0.5) { "6" } else { "50" };
        let sync = SyncApp::spawn().await;
        sync.google
            .add_calendar(CALENDAR, CALENDAR, calendar_zone)
            .unwrap();
        sqlx::raw_sql(AUDIT).execute(&sync.app.pool).await.unwrap();
        sync.app.add_user(USER).await;

        let published = Arc::new(Mutex::new(Vec::new()));
        let client = redis::Client::open(redis_url()).unwrap();
        let mut pubsub = client.get_async_pubsub().await.unwrap();
        pubsub
            .subscribe(format!("{}plan-deltas:user:{USER}", sync.app.redis_prefix))
            .await
            .unwrap();
        let sink = published.clone();
        let subscriber = tokio::spawn(async move {
            let mut messages = pubsub.into_on_message();
            while let Some(msg) = messages.next().await {
                let payload: String = msg.get_payload().unwrap();
                sink.lock()
                    .unwrap()
                    .push(serde_json::from_str(&payload).unwrap());
            }
        });

        let mut sim = Sim {
            sync,
            calendar_zone: calendar_zone.to_owned(),
            bulk_threshold: bulk_threshold.to_owned(),
            connection: 0,
            connected: false,
            main: None,
            replica: None,
            processes: 0,
            log,
            stats: Stats::default(),
            model: Model::default(),
            published,
            subscriber,
            op: 0,
            started: std::time::Instant::now(),
        };
        sim.note(format!(
            "seed {seed}: calendar zone {calendar_zone}, bulk threshold {bulk_threshold}"
        ));
        sim.connect().await;
        sim
    }

    pub fn note(&self, line: String) {
        self.log.lock().unwrap().push(line);
    }

    fn did(&mut self, kind: &'static str, line: String) {
        *self.stats.ops.entry(kind).or_default() += 1;
        let ms = self.started.elapsed().as_millis();
        self.note(format!("{:>4} [{ms:>5} ms] {line}", self.op));
    }

    fn pool(&self) -> &sqlx::PgPool {
        &self.sync.app.pool
    }

    fn worker_env(&self) -> plansync::config::Env {
        self.sync.worker_env(&[
            ("PLANSYNC_LEASE_SECS", "1"),
            ("PLANSYNC_RETRY_BASE_SECS", "0"),
            ("PLANSYNC_POLL_INTERVAL_SECS", "1"),
            ("PLANSYNC_CONCURRENCY", "3"),
            ("PLANSYNC_SHUTDOWN_GRACE_SECS", "1"),
            ("PLANSYNC_BULK_THRESHOLD", &self.bulk_threshold),
        ])
    }

    async fn process(&mut self, role: &str) -> WorkerProcess {
        self.processes += 1;
        let id = format!("{role}-{}", self.processes);
        WorkerProcess::start(self.worker_env(), &id, 4).await
    }

    async fn ensure_main(&mut self) {
        if self.main.is_none() {
            let process = self.process("main").await;
            self.main = Some(process);
        }
    }

    async fn connect(&mut self) {
        let calendar = CalendarId::new(CALENDAR);
        let token = RefreshToken::new(self.sync.google.refresh_tokens()[0].clone());
        let outcome = plansync::sync::connect(
            self.pool(),
            NewConnection {
                user: UserId(USER),
                calendar: &calendar,
                region: None,
                default_region: "default",
                push_target: false,
                auth: ConnectionAuth::RefreshToken {
                    encrypted: self
                        .sync
                        .app
                        .cipher()
                        .encrypt(UserId(USER), &calendar, &token),
                },
            },
        )
        .await
        .unwrap();
        self.connection = outcome.id.0;
        self.connected = true;
    }

    async fn enqueue_pull(&self) {
        let mut conn = self.pool().acquire().await.unwrap();
        Queue::enqueue_in(
            &mut conn,
            JobKind::Pull,
            ConnectionId(self.connection),
            None,
            true,
        )
        .await
        .unwrap();
    }

    /// Jobs of `process` claimed right now.
    async fn claimed_by(&self, process: &str) -> Vec<(i64, String)> {
        sqlx::query_as(
            "SELECT id, kind FROM plansync.jobs WHERE state = 'running' AND locked_by = $1",
        )
        .bind(process)
        .fetch_all(self.pool())
        .await
        .unwrap()
    }

    async fn link_of_appointment(&self, id: i64) -> Option<String> {
        sqlx::query_scalar("SELECT event_id FROM plansync.links WHERE appointment_id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await
            .unwrap()
    }

    async fn link_of_event(&self, event: &str) -> Option<i64> {
        sqlx::query_scalar("SELECT appointment_id FROM plansync.links WHERE event_id = $1")
            .bind(event)
            .fetch_optional(self.pool())
            .await
            .unwrap()
    }

    /// Ties an event to its appointment by the link or by the private
    /// property a push wrote.
    async fn tie_event(&mut self, event: &Value) {
        let id = event["id"].as_str().unwrap().to_owned();
        if let Some(a) = self.link_of_event(&id).await {
            self.model.tie(a, &id);
        }
        if let Some(a) = event["extendedProperties"]["private"]["plansyncAppointment"]
            .as_str()
            .and_then(|a| a.parse().ok())
        {
            self.model.tie(a, &id);
        }
    }

    async fn tie_appointment(&mut self, id: i64) {
        if let Some(event) = self.link_of_appointment(id).await {
            self.model.tie(id, &event);
        }
    }

    pub async fn host_ids(&self) -> Vec<i64> {
        sqlx::query_scalar("SELECT id FROM appointments WHERE user_id = $1 ORDER BY id")
            .bind(USER)
            .fetch_all(self.pool())
            .await
            .unwrap()
    }

    /// The live events, in an order that does not depend on generated ids
    /// where summaries differ.
    pub fn live_events(&self) -> Vec<Value> {
        let mut events = self
            .sync
            .google
            .list_events(CALENDAR, "singleEvents=true")
            .unwrap();
        events.retain(|e| e["status"].as_str() != Some("cancelled"));
        events.sort_by_key(|e| {
            (
                e["summary"].as_str().unwrap_or_default().to_owned(),
                e["start"].to_string(),
                e["id"].as_str().unwrap_or_default().to_owned(),
            )
        });
        events
    }

    fn touch(&mut self, key: Key, side: Side, write: Option<(Row, DateTime<Utc>)>) {
        let touch = Touch {
            op: self.op,
            side,
            write,
            disconnected: !self.connected,
        };
        self.model.touch(key, touch);
    }

    /// The host's columns of a row, to apply a change to.
    async fn host_fields(&self, id: i64) -> Option<Fields> {
        type Columns = (
            String,
            Option<String>,
            Option<String>,
            DateTime<Utc>,
            DateTime<Utc>,
            Option<String>,
            Option<String>,
            bool,
        );
        let row: Option<Columns> = sqlx::query_as(
            "SELECT summary, description, location, start_at, end_at, start_time_zone, \
                    end_time_zone, all_day FROM appointments WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(self.pool())
        .await
        .unwrap();
        row.map(
            |(summary, description, location, start, end, sz, ez, all_day)| Fields {
                summary,
                description,
                location,
                when: if all_day {
                    When::AllDay {
                        date: start.date_naive(),
                        days: (end - start).num_days().max(1) as u32,
                    }
                } else {
                    When::Timed {
                        start,
                        end,
                        start_zone: sz,
                        end_zone: ez,
                    }
                },
            },
        )
    }

    /// Writes `fields` as the host does (plain SQL; `id` `None` inserts).
    /// `None` when the row to update is gone (a pull of the second replica
    /// may delete it at any moment).
    async fn host_write(&mut self, id: Option<i64>, f: &Fields) -> Option<i64> {
        let (start, end) = f.when.start_end();
        let (sz, ez, all_day) = match &f.when {
            When::Timed {
                start_zone,
                end_zone,
                ..
            } => (start_zone.clone(), end_zone.clone(), false),
            When::AllDay { .. } => (None, None, true),
        };
        let returning = " RETURNING id, summary, description, location, start_at, end_at, \
                          start_time_zone, end_time_zone, all_day, updated_at";
        let sql = match id {
            None => {
                "INSERT INTO appointments (user_id, summary, description, location, start_at, \
                    end_at, start_time_zone, end_time_zone, all_day) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
            }
            Some(_) => {
                "UPDATE appointments SET summary = $2, description = $3, location = $4, \
                    start_at = $5, end_at = $6, start_time_zone = $7, end_time_zone = $8, \
                    all_day = $9 WHERE id = $1"
            }
        };
        type Written = (
            i64,
            String,
            Option<String>,
            Option<String>,
            DateTime<Utc>,
            DateTime<Utc>,
            Option<String>,
            Option<String>,
            bool,
            DateTime<Utc>,
        );
        let written: Option<Written> = sqlx::query_as(&format!("{sql}{returning}"))
            .bind(id.unwrap_or(USER))
            .bind(&f.summary)
            .bind(&f.description)
            .bind(&f.location)
            .bind(start)
            .bind(end)
            .bind(sz)
            .bind(ez)
            .bind(all_day)
            .fetch_optional(self.pool())
            .await
            .unwrap();
        let (id, s, d, l, start, end, sz, ez, all_day, updated) = written?;
        let row = Row::from_columns(s, d, l, start, end, sz, ez, all_day, &self.calendar_zone);
        self.touch(Key::Appointment(id), Side::Host, Some((row, updated)));
        Some(id)
    }

    /// `false` when the row was gone.
    async fn host_update(&mut self, id: i64, change: &Change) -> bool {
        self.tie_appointment(id).await;
        let Some(mut f) = self.host_fields(id).await else {
            return false;
        };
        apply(&mut f, change);
        self.host_write(Some(id), &f).await.is_some()
    }

    /// `false` when the event was gone (a push of the second replica may
    /// delete it at any moment).
    fn google_edit(&mut self, event: &Value, change: &Change) -> bool {
        let id = event["id"].as_str().unwrap().to_owned();
        let patch = patch_body(change);
        let Ok(out) = self.sync.google.patch_event(CALENDAR, &id, patch) else {
            return false;
        };
        if out["status"] == "cancelled" {
            return false;
        }
        let updated = updated_of(&out);
        let row = Row::from_event(&out, &self.calendar_zone);
        self.touch(Key::Event(id), Side::Google, Some((row, updated)));
        true
    }

    /// Kills a process; says whether it held a claimed job at that moment
    /// (checked after the kill: a dead process changes nothing more).
    async fn kill_process(&mut self, process: WorkerProcess) -> String {
        let id = process.id.clone();
        process.kill();
        let claimed = self.claimed_by(&id).await;
        if claimed.is_empty() {
            self.stats.kills_missed += 1;
            "no job claimed".to_owned()
        } else {
            self.stats.kills_landed += 1;
            format!("landed on claimed jobs {claimed:?}")
        }
    }

    async fn kill(&mut self, at: KillAt, extra_ms: u64) {
        self.ensure_main().await;
        match at {
            KillAt::SlowList => {
                self.sync
                    .google
                    .inject_fault(Operation::List, Fault::Delay { millis: SLOW }, 1);
                if self.connected {
                    self.enqueue_pull().await;
                }
            }
            KillAt::SlowInsert => {
                self.sync
                    .google
                    .inject_fault(Operation::Insert, Fault::Delay { millis: SLOW }, 1)
            }
            KillAt::Anywhere => {}
        }
        let main = self.main.take().unwrap();
        let pass = main.spawn_pass();
        // Wait for a claim of this process (or the end of its pass): the
        // kill should find work in flight.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !pass.is_finished()
            && self.claimed_by(&main.id).await.is_empty()
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // Not a wait for anything: a random moment inside the job.
        tokio::time::sleep(Duration::from_millis(extra_ms)).await;
        let id = main.id.clone();
        let claimed = self.kill_process(main).await;
        self.did(
            "kill",
            format!("kill -9 {id} ({at:?} +{extra_ms} ms): {claimed}"),
        );
    }

    /// The end of the history: faults stop, the replica stops, the
    /// connection is back, and passes run until nothing is left to do.
    pub async fn settle(&mut self) {
        self.op += 1;
        if let Some((process, stop, task)) = self.replica.take() {
            stop.cancel();
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("the replica stops within its grace")
                .expect("the replica's task ends");
            drop(process);
        }
        self.sync.google.clear_faults();
        if !self.connected {
            self.connect().await;
            self.note("settle: re-connected".into());
        }
        self.ensure_main().await;
        // The poll timer's pull, so Google's last edits are seen.
        self.enqueue_pull().await;
        let deadline = tokio::time::Instant::now() + SETTLE;
        let mut passes = 0;
        loop {
            let main = self.main.as_ref().unwrap();
            main.pass().await.expect("a settling pass runs");
            passes += 1;
            let (busy, backlog): (i64, i64) = sqlx::query_as(
                "SELECT (SELECT count(*) FROM plansync.jobs WHERE state IN ('queued', 'running')), \
                        (SELECT COALESCE(sum(rows), 0)::BIGINT FROM plansync.outbox_pending)",
            )
            .fetch_one(self.pool())
            .await
            .unwrap();
            if busy == 0 && backlog == 0 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "still {busy} jobs and {backlog} unpublished deltas after {SETTLE:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.note(format!(
            "settle: quiet after {passes} passes [{} ms]",
            self.started.elapsed().as_millis()
        ));
        // Every committed delta reaches the subscriber.
        let versions: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM plansync.outbox WHERE user_id = $1")
                .bind(USER)
                .fetch_all(self.pool())
                .await
                .unwrap();
        let published = self.published.clone();
        crate::harness::eventually(Duration::from_secs(10), "every delta on Redis", || {
            let published = published.clone();
            let versions = versions.clone();
            async move {
                let seen: std::collections::HashSet<i64> = published
                    .lock()
                    .unwrap()
                    .iter()
                    .flat_map(|m| m["deltas"].as_array().cloned().unwrap_or_default())
                    .filter_map(|d| d["version"].as_i64())
                    .collect();
                versions.iter().all(|v| seen.contains(v)).then_some(())
            }
        })
        .await;
        self.count_faults();
    }

    fn count_faults(&mut self) {
        for r in self.sync.google.requests() {
            let kind = match (r.operation, r.status) {
                (Operation::Insert, None | Some(500)) => "lost_insert",
                (Operation::Patch, None | Some(500)) => "lost_patch",
                (Operation::List, Some(500 | 503)) => "list_5xx",
                (_, Some(429)) => "rate_limited_429",
                (Operation::List, Some(410)) => "sync_token_410",
                _ => continue,
            };
            *self.stats.faults_fired.entry(kind).or_default() += 1;
        }
    }
}
