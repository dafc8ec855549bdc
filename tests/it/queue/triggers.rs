//! The host triggers that record local changes as push jobs.

use super::*;

async fn insert_appointment(app: &TestApp, user: i64, summary: &str) -> i64 {
    sqlx::query_scalar(
        "INSERT INTO appointments (user_id, summary, start_at, end_at) \
         VALUES ($1, $2, '2026-12-10T15:00:00Z', '2026-12-10T16:00:00Z') RETURNING id",
    )
    .bind(user)
    .bind(summary)
    .fetch_one(&app.pool)
    .await
    .expect("the host's insert succeeds")
}

async fn push_jobs(app: &TestApp) -> Vec<(i64, i64, String)> {
    sqlx::query_as(
        "SELECT connection_id, appointment_id, state FROM plansync.jobs WHERE kind = 'push' \
         ORDER BY id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn host_writes_of_a_connected_user_enqueue_one_deduplicated_push_job() {
    let app = TestApp::spawn().await;
    app.add_user(1).await;
    let first = add_connection(&app, 1, "a", "default").await;
    let target = add_connection(&app, 1, "b", "eu").await;
    sqlx::query("UPDATE plansync.connections SET push_target = TRUE WHERE id = $1")
        .bind(target)
        .execute(&app.pool)
        .await
        .unwrap();

    let a = insert_appointment(&app, 1, "Dentist").await;
    assert_eq!(
        push_jobs(&app).await,
        vec![(target.0, a, "queued".to_owned())]
    );
    let region: String = sqlx::query_scalar("SELECT region FROM plansync.jobs")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(region, "eu", "the job carries its connection's region");
    for summary in ["Dentist (moved)", "Dentist (again)"] {
        sqlx::query("UPDATE appointments SET summary = $1 WHERE id = $2")
            .bind(summary)
            .bind(a)
            .execute(&app.pool)
            .await
            .unwrap();
    }
    sqlx::query("DELETE FROM appointments WHERE id = $1")
        .bind(a)
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(push_jobs(&app).await.len(), 1, "deduplicated while queued");

    // A linked appointment goes to its link's connection; one statement of
    // many rows makes one job each.
    let b = insert_appointment(&app, 1, "Linked").await;
    sqlx::query(
        "INSERT INTO plansync.links (connection_id, appointment_id, event_id) VALUES ($1, $2, 'ev1')",
    )
    .bind(first)
    .bind(b)
    .execute(&app.pool)
    .await
    .unwrap();
    sqlx::query("DELETE FROM plansync.jobs")
        .execute(&app.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE appointments SET location = 'Room 1' WHERE user_id = 1")
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        push_jobs(&app).await,
        vec![(first.0, b, "queued".to_owned())]
    );

    // While its push runs, a change leaves exactly one queued follow-up.
    let queue = Queue::new(app.pool.clone(), queue_settings(8, 5, 60));
    let running = queue.claim("default", "w:1").await.unwrap().unwrap();
    assert_eq!(running.appointment, Some(AppointmentId(b)));
    for _ in 0..3 {
        sqlx::query("UPDATE appointments SET summary = summary || '!' WHERE id = $1")
            .bind(b)
            .execute(&app.pool)
            .await
            .unwrap();
    }
    let mut jobs = push_jobs(&app).await;
    jobs.sort();
    assert_eq!(
        jobs,
        vec![
            (first.0, b, "queued".to_owned()),
            (first.0, b, "running".to_owned())
        ]
    );

    // The worker's own writes are not pushed back.
    sqlx::query("DELETE FROM plansync.jobs")
        .execute(&app.pool)
        .await
        .unwrap();
    let mut tx = app.pool.begin().await.unwrap();
    sqlx::query("SET LOCAL plansync.origin = 'google'")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO appointments (user_id, summary, start_at, end_at) \
         VALUES (1, 'From Google', now(), now())",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query("UPDATE appointments SET summary = 'x' WHERE id = $1")
        .bind(b)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(push_jobs(&app).await.is_empty());
}

#[tokio::test]
async fn host_writes_of_a_user_without_an_active_connection_succeed_and_record_nothing() {
    let app = TestApp::spawn().await;
    app.add_user(1).await;
    app.add_user(2).await;
    let c = add_connection(&app, 2, "primary", "default").await;
    sqlx::query("UPDATE plansync.connections SET active = FALSE WHERE id = $1")
        .bind(c)
        .execute(&app.pool)
        .await
        .unwrap();
    for user in [1, 2] {
        let id = insert_appointment(&app, user, "Lunch").await;
        sqlx::query("UPDATE appointments SET summary = 'Late lunch' WHERE id = $1")
            .bind(id)
            .execute(&app.pool)
            .await
            .unwrap();
        sqlx::query("DELETE FROM appointments WHERE id = $1")
            .bind(id)
            .execute(&app.pool)
            .await
            .unwrap();
    }
    assert_eq!(count(&app, "SELECT count(*) FROM plansync.jobs").await, 0);
}

#[tokio::test]
async fn a_trigger_that_cannot_record_never_fails_the_hosts_write() {
    let app = TestApp::spawn().await;
    app.add_user(1).await;
    add_connection(&app, 1, "primary", "default").await;
    // Break the queue: every insert into it now fails.
    sqlx::query("ALTER TABLE plansync.jobs ADD CONSTRAINT broken CHECK (false) NOT VALID")
        .execute(&app.pool)
        .await
        .unwrap();
    let id = insert_appointment(&app, 1, "Still saved").await;
    sqlx::query("UPDATE appointments SET summary = 'Still updated' WHERE id = $1")
        .bind(id)
        .execute(&app.pool)
        .await
        .unwrap();
    let summary: String = sqlx::query_scalar("SELECT summary FROM appointments WHERE id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(summary, "Still updated");
    assert_eq!(count(&app, "SELECT count(*) FROM plansync.jobs").await, 0);
}

#[tokio::test]
async fn an_update_that_leaves_updated_at_alone_gets_now() {
    let app = TestApp::spawn().await;
    app.add_user(1).await;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO appointments (user_id, summary, start_at, end_at, created_at, updated_at) \
         VALUES (1, 'Old', now(), now(), '2020-01-01Z', '2020-01-01Z') RETURNING id",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let fresh: bool = sqlx::query_scalar(
        "UPDATE appointments SET summary = 'New' WHERE id = $1 \
         RETURNING updated_at > now() - interval '1 minute'",
    )
    .bind(id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(fresh);
    // An UPDATE that sets updated_at itself keeps its value.
    let kept: String = sqlx::query_scalar(
        "UPDATE appointments SET summary = 'Newer', updated_at = '2021-06-01Z' WHERE id = $1 \
         RETURNING to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
    )
    .bind(id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(kept, "2021-06-01");
}

#[tokio::test]
async fn a_queued_push_touched_by_an_open_host_transaction_is_not_claimed_until_it_commits() {
    let app = TestApp::spawn().await;
    app.add_user(1).await;
    let out = app
        .run(
            &["connect", "--user", "1", "--calendar", "primary"],
            "tok\n",
        )
        .await;
    assert!(out.status.success());
    sqlx::query("DELETE FROM plansync.jobs")
        .execute(&app.pool)
        .await
        .unwrap();
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO appointments (user_id, summary, start_at, end_at) \
         VALUES (1, 'first', now(), now() + interval '1 hour') RETURNING id",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    // A second edit in an open transaction meets the queued push.
    let mut host = app.pool.begin().await.unwrap();
    sqlx::query("UPDATE appointments SET summary = 'second' WHERE id = $1")
        .bind(id)
        .execute(&mut *host)
        .await
        .unwrap();
    let claim =
        || plansync::store::jobs::claim(&app.pool, "default", &[JobKind::Push], "test:1", 60.0);
    assert!(
        claim().await.unwrap().is_none(),
        "a worker must not push the values from before the open edit"
    );
    host.commit().await.unwrap();
    let claimed = claim()
        .await
        .unwrap()
        .expect("claimable once the edit committed");
    assert_eq!(
        claimed.appointment_id,
        Some(plansync::ids::AppointmentId(id))
    );
}
