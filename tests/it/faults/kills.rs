//! Replicas killed (`kill -9`) or stopped (SIGTERM) mid-work.

use super::*;

#[tokio::test]
async fn four_replicas_one_killed_mid_work_import_every_calendar_once() {
    let app = TestApp::spawn().await;
    let fleet = Fleet::on(&app).await;
    // Slow listings keep work in flight when the replica dies.
    fleet.google.inject_fault(
        Operation::List,
        Fault::Delay {
            millis: Duration::from_millis(1500),
        },
        16,
    );
    fleet.connect_calendars(40, 3).await;
    let mut replicas = Vec::new();
    for _ in 0..4 {
        replicas.push(fleet.replica().await);
    }
    let victim = fleet.a_busy_pid().await;
    let index = replicas
        .iter()
        .position(|r| r.pid == victim)
        .expect("the job's owner is one of ours");
    let mut killed = replicas.remove(index);
    killed.kill9().await;

    fleet.wait_synced(40, 3, Duration::from_secs(90)).await;
    // The killed replica's work was rescued (a lost run spends an attempt)
    // and finished by the others.
    let rescued = fleet
        .count("SELECT count(*) FROM plansync.jobs WHERE attempts > 0")
        .await
        .unwrap();
    assert!(rescued >= 1, "no job of the killed replica was rescued");
    // The rescue's JSON log line has one `message` (the reason is `reason`).
    let rescue_line = replicas
        .iter()
        .flat_map(|r| r.log.lock().unwrap().clone())
        .find(|l| l.contains("rescuing job"))
        .expect("a surviving replica logged the rescue");
    assert_eq!(
        rescue_line.matches("\"message\"").count(),
        1,
        "{rescue_line}"
    );
    assert!(rescue_line.contains("\"reason\""), "{rescue_line}");
    sigterm_all_and_check_exit(&mut replicas).await;
}

#[tokio::test]
async fn a_replica_killed_after_google_accepted_an_insert_leaves_exactly_one_event() {
    let app = TestApp::spawn().await;
    let fleet = Fleet::on(&app).await;
    let cipher = TokenCipher::from_base64(&fleet.token_key).unwrap();
    let token = RefreshToken::new(fleet.google.refresh_tokens()[0].clone());
    fleet.connect(1, "primary", true, &cipher, &token).await;
    let mut first = fleet.replica().await;
    fleet.wait_synced(0, 0, Duration::from_secs(30)).await;

    // Google takes the insert at once and holds its answer back far longer
    // than the test lives.
    fleet.google.inject_fault(
        Operation::Insert,
        Fault::DelayResponse {
            millis: Duration::from_secs(600),
        },
        1,
    );
    let start = Utc::now() + chrono::Duration::days(2);
    let appointment: i64 = sqlx::query_scalar(
        "INSERT INTO appointments (user_id, summary, start_at, end_at) \
         VALUES (1, 'accepted, then the worker died', $1, $2) RETURNING id",
    )
    .bind(start)
    .bind(start + chrono::Duration::hours(1))
    .fetch_one(&fleet.pool)
    .await
    .unwrap();
    let in_google = |google: &FakeGoogle| {
        google
            .list_events("primary", "singleEvents=true")
            .unwrap()
            .into_iter()
            .filter(|e| e["status"] != "cancelled")
            .collect::<Vec<_>>()
    };
    eventually(
        Duration::from_secs(30),
        "Google to accept the insert",
        || {
            let n = in_google(&fleet.google).len();
            async move { (n == 1).then_some(()) }
        },
    )
    .await;
    first.kill9().await;

    // After the lease, another replica takes the push over: its insert of the
    // same id gets 409, which it recognises as its own event.
    let mut second = fleet.replica().await;
    let linked: String = eventually(Duration::from_secs(60), "the push to finish", || async {
        let event: Option<String> = sqlx::query_scalar(
            "SELECT l.event_id FROM plansync.links l WHERE l.appointment_id = $1 \
             AND NOT EXISTS (SELECT 1 FROM plansync.jobs j WHERE j.kind = 'push' \
                 AND j.state IN ('queued', 'running'))",
        )
        .bind(appointment)
        .fetch_optional(&fleet.pool)
        .await
        .ok()??;
        event
    })
    .await;
    let events = in_google(&fleet.google);
    assert_eq!(events.len(), 1, "exactly one Google event: {events:?}");
    // The second replica's insert of the same id met the first one's event.
    assert!(
        fleet
            .google
            .requests()
            .iter()
            .any(|r| r.operation == Operation::Insert && r.status == Some(409)),
        "the retried insert was answered 409"
    );
    assert_eq!(events[0]["id"], linked.as_str());
    assert_eq!(
        fleet
            .count("SELECT count(*) FROM plansync.jobs WHERE state = 'dead'")
            .await,
        Some(0)
    );
    sigterm_all_and_check_exit(std::slice::from_mut(&mut second)).await;
}

#[tokio::test]
async fn sigterm_to_every_replica_during_work_exits_zero_and_leaves_nothing_leased() {
    let app = TestApp::spawn().await;
    let fleet = Fleet::on(&app).await;
    // Some listings outlast the grace period, so some jobs must be stopped
    // and released rather than finished.
    fleet.google.inject_fault(
        Operation::List,
        Fault::Delay {
            millis: Duration::from_secs(GRACE_SECS + 4),
        },
        8,
    );
    fleet.connect_calendars(40, 3).await;
    let mut replicas = Vec::new();
    for _ in 0..4 {
        replicas.push(fleet.replica().await);
    }
    eventually(Duration::from_secs(30), "work in flight", || async {
        let running = fleet
            .count("SELECT count(*) FROM plansync.jobs WHERE state = 'running'")
            .await?;
        (running >= 4).then_some(())
    })
    .await;
    sigterm_all_and_check_exit(&mut replicas).await;
    assert!(
        replicas
            .iter()
            .any(|r| r.log().contains("job stopped at shutdown; lease released")),
        "no job outlasted the grace"
    );
    let leased = fleet
        .count(
            "SELECT count(*) FROM plansync.jobs WHERE state = 'running' \
             OR claim_token IS NOT NULL",
        )
        .await;
    assert_eq!(leased, Some(0), "a job was left leased");

    fleet.google.clear_faults();
    let mut fresh = fleet.replica().await;
    fleet.wait_synced(40, 3, Duration::from_secs(60)).await;
    sigterm_all_and_check_exit(std::slice::from_mut(&mut fresh)).await;
}
