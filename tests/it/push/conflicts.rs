//! Both sides changed: newer edit wins on both sides, a delete beats an
//! edit, and the loser is recorded.

use super::*;

#[tokio::test]
async fn local_edit_newer_than_a_remote_edit_wins_on_both_sides() {
    let sync = SyncApp::spawn().await;
    let (id, event) = pushed(&sync).await;
    sync.google
        .patch_event("primary", &event, json!({"summary": "remote"}))
        .unwrap();
    // Later than Google's edit.
    host_exec(
        &sync,
        "UPDATE appointments SET summary = 'local' WHERE id = $1",
        id,
    )
    .await;
    sync.run_once().await;

    assert_eq!(summary(&sync, id).await.as_deref(), Some("local"));
    let remote = sync.google.get_event("primary", &event).unwrap();
    assert_eq!(remote["summary"], "local");
    assert_eq!(
        conflicts(&sync).await,
        vec![("local".into(), "edit".into(), Some("remote".into()))]
    );
    // The link knows Google's latest etag: nothing more to do.
    assert_eq!(
        link(&sync, id).await.unwrap().1.as_deref(),
        remote["etag"].as_str()
    );
    assert!(deltas(&sync).await.is_empty());
    assert_eq!(sync.app.plan_version(USER).await, 0);
}

#[tokio::test]
async fn remote_edit_newer_than_a_local_edit_wins_on_both_sides() {
    let sync = SyncApp::spawn().await;
    let (id, event) = pushed(&sync).await;
    // The host's edit is stamped a minute ago, before Google's.
    host_exec(
        &sync,
        "UPDATE appointments SET summary = 'local', updated_at = now() - interval '1 minute' \
         WHERE id = $1",
        id,
    )
    .await;
    sync.google
        .patch_event("primary", &event, json!({"summary": "remote"}))
        .unwrap();
    sync.run_once().await;

    assert_eq!(summary(&sync, id).await.as_deref(), Some("remote"));
    let remote = sync.google.get_event("primary", &event).unwrap();
    assert_eq!(remote["summary"], "remote");
    assert_eq!(
        conflicts(&sync).await,
        vec![("google".into(), "edit".into(), Some("local".into()))]
    );
    // The appointment took Google's values: one `updated` delta from Google.
    let deltas = deltas(&sync).await;
    assert_eq!(deltas.len(), 1, "{deltas:?}");
    assert_eq!(deltas[0]["action"], "updated");
    assert_eq!(deltas[0]["source"], "google");
    assert_eq!(deltas[0]["entityId"], id);
    assert_eq!(deltas[0]["data"]["appointment"]["summary"], "remote");
    assert_eq!(deltas[0]["version"], 1);
    assert_eq!(sync.app.plan_version(USER).await, 1);
    // Taking Google's values is not a local change to push back.
    assert_eq!(
        scalar(
            &sync,
            "SELECT count(*) FROM plansync.jobs WHERE kind = 'push' AND state = 'queued'"
        )
        .await,
        0
    );
    assert!(calls(&sync, Operation::Patch)
        .iter()
        .all(|p| p.status == Some(412)));
}

#[tokio::test]
async fn a_remote_delete_beats_a_local_edit_on_both_sides() {
    let sync = SyncApp::spawn().await;
    let (id, event) = pushed(&sync).await;
    sync.google.delete_event("primary", &event).unwrap();
    host_exec(
        &sync,
        "UPDATE appointments SET summary = 'local' WHERE id = $1",
        id,
    )
    .await;
    sync.run_once().await;

    assert_eq!(summary(&sync, id).await, None, "deleted locally");
    assert_eq!(link(&sync, id).await, None);
    assert_eq!(
        sync.google.get_event("primary", &event).unwrap()["status"],
        "cancelled"
    );
    assert_eq!(
        conflicts(&sync).await,
        vec![("google".into(), "delete".into(), Some("local".into()))]
    );
    let deltas = deltas(&sync).await;
    assert_eq!(deltas.len(), 1, "{deltas:?}");
    assert_eq!(
        (
            &deltas[0]["action"],
            &deltas[0]["source"],
            &deltas[0]["entityId"]
        ),
        (&json!("deleted"), &json!("google"), &json!(id))
    );
    // The local delete is the worker's own: nothing queued to push back.
    assert_eq!(
        scalar(
            &sync,
            "SELECT count(*) FROM plansync.jobs WHERE kind = 'push' AND state = 'queued'"
        )
        .await,
        0
    );
}

#[tokio::test]
async fn a_local_delete_beats_a_remote_edit_which_is_recorded() {
    let sync = SyncApp::spawn().await;
    let (id, event) = pushed(&sync).await;
    sync.google
        .patch_event("primary", &event, json!({"summary": "remote"}))
        .unwrap();
    host_exec(&sync, "DELETE FROM appointments WHERE id = $1", id).await;
    sync.run_once().await;

    assert_eq!(
        sync.google.get_event("primary", &event).unwrap()["status"],
        "cancelled"
    );
    assert_eq!(link(&sync, id).await, None);
    assert_eq!(
        conflicts(&sync).await,
        vec![("local".into(), "delete".into(), Some("remote".into()))]
    );
}
