//! The recordings committed under fixtures/recordings/.

use super::*;

#[tokio::test]
async fn the_committed_pull_recording_replays_exactly() {
    let app = ReplayApp::start(&committed(PULL)).await;
    replay_pull(&app).await;
    app.assert_consumed();
    let snap = snapshot(&app.app.pool).await;
    let summaries: Vec<&str> = snap
        .appointments
        .iter()
        .map(|a| a.summary.as_str())
        .collect();
    assert_eq!(
        summaries,
        [
            PERSONAL[0],
            "Dentist (moved)",
            PERSONAL[4],
            "Gym",
            "Haircut"
        ]
    );
    assert_eq!(
        snap.links.iter().map(|l| l.1.as_str()).collect::<Vec<_>>(),
        [
            "event00001",
            "event00002",
            "event00004",
            "event00005",
            "event00006"
        ]
    );
    // Five created by the first sync (one transaction per page), then the
    // edit, the deletion and the creation in Google's change order; the full
    // resync after the 410 changes nothing.
    let actions: Vec<(i64, &str, i64)> = snap
        .deltas
        .iter()
        .map(|(_, v, d)| {
            (
                *v,
                d["action"].as_str().unwrap(),
                d["entityId"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            (1, "created", 1),
            (2, "created", 2),
            (3, "created", 3),
            (4, "created", 4),
            (5, "created", 5),
            (6, "updated", 2),
            (7, "deleted", 3),
            (8, "created", 6),
        ]
    );
    assert_eq!(snap.plan_version, 8);
    assert_eq!(
        snap.deltas[5].2["data"]["appointment"]["startAt"],
        "2027-01-05T11:00:00.000Z"
    );
}

#[tokio::test]
async fn the_committed_push_recording_replays_exactly() {
    let app = ReplayApp::start(&committed(PUSH)).await;
    // Pinned as when recording: the ids match without renaming.
    sqlx::query("UPDATE plansync.deployment SET event_id_salt = $1")
        .bind(SALT)
        .execute(&app.app.pool)
        .await
        .unwrap();
    replay_push(&app).await;
    app.assert_consumed();
    let snap = snapshot(&app.app.pool).await;
    assert_eq!(snap.appointments.len(), 1);
    assert_eq!(snap.appointments[0].summary, "Dentist (remote)");
    assert_eq!(snap.links.len(), 1);
    assert_eq!(snap.links[0].1, format!("{SALT}g1h1i1"));
    assert!(snap.links[0].2.is_some());
    assert_eq!(
        snap.conflicts,
        [(
            "google".to_owned(),
            "edit".to_owned(),
            Some("Dentist (local)".to_owned())
        )]
    );
    assert_eq!(snap.deltas.len(), 1, "{:?}", snap.deltas);
    let (_, version, delta) = &snap.deltas[0];
    assert_eq!(*version, 1);
    assert_eq!(delta["action"], "updated");
    assert_eq!(delta["source"], "google");
    assert_eq!(delta["data"]["appointment"]["summary"], "Dentist (remote)");
    assert_eq!(snap.plan_version, 1);
}

#[tokio::test]
async fn no_committed_recording_holds_a_secret() {
    for name in [PULL, PUSH] {
        let files = Recording::files(&committed(name));
        assert!(!files.is_empty(), "{name} is committed");
        for exchange in files.split("\n{").filter(|f| f.contains("\"/token\"")) {
            assert!(exchange.contains("REDACTED-refresh_token"), "{exchange}");
            assert!(exchange.contains("REDACTED-client_secret"), "{exchange}");
            assert!(exchange.contains("REDACTED-access_token"), "{exchange}");
        }
        for marker in [
            "ya29.",
            "GOCSPX-",
            "1//0g",
            "authorization",
            "Authorization",
        ] {
            assert!(!files.contains(marker), "{marker} in {name}");
        }
    }
}

/// Rewrites fixtures/recordings/ (run once after a change of the worker's
/// calls: `cargo test --test it replay::committed::regenerate_committed_recordings --
/// --ignored`), then commit the files.
#[tokio::test]
#[ignore = "writes fixtures/recordings/; run by hand"]
async fn regenerate_committed_recordings() {
    for name in [PULL, PUSH] {
        let dir = committed(name);
        if dir.exists() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_some_and(|e| e == "json") {
                    std::fs::remove_file(path).unwrap();
                }
            }
        }
    }
    record_pull(&committed(PULL), false).await;
    record_push(&committed(PUSH)).await;
}
