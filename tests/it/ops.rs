//! What an operator watches, read from a real `plansync run`: `/metrics`
//! parsed as Prometheus text, and `/readyz` with Postgres or Redis gone.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use crate::faults::{Fleet, PrivatePostgres};
use crate::harness::{eventually, PrivateRedis, TestApp};

/// One sample line: `name{label="value",...} value`.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A small parser of the Prometheus text format (what the exporter writes:
/// `# TYPE` lines and samples; label values without escaped quotes).
#[derive(Debug, Default)]
struct Scrape {
    types: HashMap<String, String>,
    samples: Vec<Sample>,
}

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let mut scrape = Scrape::default();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
                scrape.types.insert(name.to_owned(), kind.to_owned());
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("series value");
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v
                    .parse()
                    .unwrap_or_else(|_| panic!("bad value in {line:?}")),
            };
            let (name, labels) = match series.split_once('{') {
                None => (series.to_owned(), BTreeMap::new()),
                Some((name, rest)) => {
                    let body = rest.strip_suffix('}').expect("labels end with }");
                    let labels = body
                        .split("\",")
                        .filter(|p| !p.is_empty())
                        .map(|pair| {
                            let (k, v) = pair.split_once('=').expect("label=value");
                            (k.to_owned(), v.trim_matches('"').to_owned())
                        })
                        .collect();
                    (name.to_owned(), labels)
                }
            };
            scrape.samples.push(Sample {
                name,
                labels,
                value,
            });
        }
        scrape
    }

    /// The sum of the family's samples whose labels include `labels`.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(v))
            })
            .map(|s| s.value)
            .sum()
    }

    fn has_family(&self, name: &str) -> bool {
        self.types.contains_key(name) && self.samples.iter().any(|s| s.name.starts_with(name))
    }
}

async fn scrape(replica: &crate::faults::Replica) -> Scrape {
    let (code, body) = replica.get("/metrics").await;
    assert_eq!(code, 200);
    Scrape::parse(&body)
}

#[tokio::test]
async fn metrics_list_every_family_and_move_when_a_job_runs() {
    let app = TestApp::spawn().await;
    let fleet = Fleet::on(&app).await;
    fleet.connect_calendars(1, 2).await;
    let replica = fleet.replica().await;
    fleet.wait_synced(1, 2, Duration::from_secs(30)).await;
    // Deltas go out after the import commits; the gauges refresh every 5 s.
    eventually(Duration::from_secs(30), "the deltas published", || async {
        let m = scrape(&replica).await;
        (m.sum(
            "plansync_deltas_published_total",
            &[("item_type", "appointment"), ("action", "created")],
        ) >= 2.0)
            .then_some(())
    })
    .await;
    let before = scrape(&replica).await;

    for (family, kind) in [
        ("plansync_jobs_claimed_total", "counter"),
        ("plansync_jobs_total", "counter"),
        ("plansync_job_duration_seconds", "histogram"),
        ("plansync_google_requests_total", "counter"),
        ("plansync_google_request_duration_seconds", "histogram"),
        ("plansync_queue_depth", "gauge"),
        ("plansync_queue_oldest_due_lag_seconds", "gauge"),
        ("plansync_jobs_running", "gauge"),
        ("plansync_outbox_backlog", "gauge"),
        ("plansync_outbox_oldest_age_seconds", "gauge"),
        ("plansync_deltas_published_total", "counter"),
        ("plansync_conflicts_total", "counter"),
        ("plansync_skipped_events_total", "counter"),
        ("plansync_notification_channels_live", "gauge"),
        ("plansync_redis_up", "gauge"),
    ] {
        assert!(before.has_family(family), "{family} missing");
        assert_eq!(before.types[family], kind, "{family}'s type");
    }
    // Histograms, not summaries: buckets that add up across replicas.
    assert!(
        before.sum(
            "plansync_job_duration_seconds_bucket",
            &[
                ("kind", "full_resync"),
                ("outcome", "succeeded"),
                ("le", "+Inf")
            ]
        ) >= 1.0
    );
    assert!(
        before.sum(
            "plansync_google_request_duration_seconds_count",
            &[("operation", "events.list")]
        ) >= 1.0
    );
    assert!(
        before.sum(
            "plansync_google_requests_total",
            &[("operation", "token.refresh"), ("outcome", "ok")]
        ) >= 1.0
    );
    eventually(Duration::from_secs(30), "Redis reported up", || async {
        (scrape(&replica).await.sum("plansync_redis_up", &[]) == 1.0).then_some(())
    })
    .await;

    // One more job: a pull that imports a new event.
    fleet
        .google
        .create_event(
            "cal-1",
            serde_json::json!({
                "summary": "one more",
                "start": {"dateTime": (chrono::Utc::now() + chrono::Duration::days(3)).to_rfc3339()},
                "end": {"dateTime": (chrono::Utc::now() + chrono::Duration::days(3) + chrono::Duration::hours(1)).to_rfc3339()},
            }),
        )
        .unwrap();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_plansync"));
    cmd.env_clear()
        .env("DATABASE_URL", &fleet.database_url)
        .args(["resync", "--user", "1"]);
    let out = crate::harness::run_command(cmd, &[], "").await;
    assert!(out.status.success(), "{}", crate::harness::stderr(&out));
    let after = eventually(Duration::from_secs(30), "the pull's counters", || async {
        let m = scrape(&replica).await;
        (m.sum(
            "plansync_deltas_published_total",
            &[("item_type", "appointment"), ("action", "created")],
        ) >= 3.0)
            .then_some(m)
    })
    .await;
    let moved =
        |name: &str, labels: &[(&str, &str)]| after.sum(name, labels) > before.sum(name, labels);
    assert!(moved(
        "plansync_jobs_total",
        &[("kind", "pull"), ("outcome", "succeeded")]
    ));
    assert!(moved("plansync_jobs_claimed_total", &[("kind", "pull")]));
    assert!(moved(
        "plansync_google_requests_total",
        &[("operation", "events.list"), ("outcome", "ok")]
    ));
    assert!(moved(
        "plansync_job_duration_seconds_count",
        &[("kind", "pull")]
    ));
    assert!(moved(
        "plansync_deltas_published_total",
        &[("action", "created")]
    ));
}

#[tokio::test]
async fn readyz_fails_without_postgres_or_with_foreign_migrations_but_not_without_redis() {
    let pg = PrivatePostgres::start().await;
    let mut redis = PrivateRedis::start().await;
    let fleet = Fleet::on_private(&pg).await.with("REDIS_URL", &redis.url());
    let replica = fleet.replica().await;
    let ready = |replica: &crate::faults::Replica| {
        let addr = replica.addr.clone();
        async move {
            let (code, body) = crate::harness::http_get_body(&addr, "/readyz", None).await;
            let body: serde_json::Value = serde_json::from_str(&body)
                .unwrap_or_else(|_| panic!("readyz answers JSON: {body}"));
            (code, body)
        }
    };
    let (code, body) = ready(&replica).await;
    assert_eq!(
        (code, &body["redis"]),
        (200, &serde_json::json!("up")),
        "{body}"
    );
    assert_eq!(body["migrations"], "current");

    // Redis down: still ready, and says so.
    redis.stop();
    let (code, body) = ready(&replica).await;
    assert_eq!(
        (code, &body["redis"]),
        (200, &serde_json::json!("down")),
        "{body}"
    );
    eventually(Duration::from_secs(30), "plansync_redis_up 0", || async {
        (scrape(&replica).await.sum("plansync_redis_up", &[]) == 0.0).then_some(())
    })
    .await;
    redis.restart_with(&[]).await;

    // A migration this binary does not know (a newer binary ran): not ready.
    sqlx::query(
        "INSERT INTO plansync._sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (99999, 'from a newer binary', true, '\\x00', 0)",
    )
    .execute(&fleet.pool)
    .await
    .unwrap();
    let (code, body) = ready(&replica).await;
    assert_eq!(
        (code, &body["migrations"]),
        (503, &serde_json::json!("differ")),
        "{body}"
    );
    sqlx::query("DELETE FROM plansync._sqlx_migrations WHERE version = 99999")
        .execute(&fleet.pool)
        .await
        .unwrap();
    assert_eq!(ready(&replica).await.0, 200);

    // Postgres down: not ready; back: ready again, without a restart.
    pg.stop_server().await;
    let (code, body) = ready(&replica).await;
    assert_eq!(
        (code, &body["database"]),
        (503, &serde_json::json!("unreachable")),
        "{body}"
    );
    pg.start_server().await;
    eventually(Duration::from_secs(30), "ready again", || async {
        (ready(&replica).await.0 == 200).then_some(())
    })
    .await;
}
