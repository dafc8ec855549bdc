//! Sessions recorded here and replayed, scrubbed or not; an unexpected
//! request named.

use super::*;

#[tokio::test]
async fn a_recorded_pull_replays_to_the_same_appointments_links_and_deltas() {
    let dir = tempfile::tempdir().unwrap();
    let (rec, recorded) = record_pull(dir.path(), false).await;
    assert_no_secrets(&rec, &Recording::files(dir.path()));
    assert_eq!(recorded.appointments.len(), 5, "{recorded:#?}");
    assert_eq!(recorded.deltas.len(), 8, "{recorded:#?}");

    let app = ReplayApp::start(dir.path()).await;
    replay_pull(&app).await;
    assert_eq!(snapshot(&app.app.pool).await, recorded);
    app.assert_consumed();
}

#[tokio::test]
async fn a_recorded_push_replays_to_the_same_appointments_and_deltas_under_renamed_ids() {
    let dir = tempfile::tempdir().unwrap();
    let (rec, recorded) = record_push(dir.path()).await;
    assert_no_secrets(&rec, &Recording::files(dir.path()));

    // The replaying database keeps its own salt: the ids it sends differ
    // from the recorded ones and are matched by renaming.
    let app = ReplayApp::start(dir.path()).await;
    replay_push(&app).await;
    let mut replayed = snapshot(&app.app.pool).await;
    let mut expected = recorded;
    assert_ne!(replayed.links[0].1, expected.links[0].1, "different salts");
    for snap in [&mut replayed, &mut expected] {
        for link in snap.links.iter_mut() {
            link.1 = String::new();
        }
        for (_, _, delta) in snap.deltas.iter_mut() {
            if let Some(id) = delta.pointer_mut("/data/appointment/googleSync/eventId") {
                *id = Value::Null;
            }
        }
    }
    assert_eq!(replayed, expected);
    app.assert_consumed();
}

#[tokio::test]
async fn a_scrubbed_recording_holds_no_summary_or_address_and_still_replays() {
    let dir = tempfile::tempdir().unwrap();
    let (rec, recorded) = record_pull(dir.path(), true).await;
    let files = Recording::files(dir.path());
    assert_no_secrets(&rec, &files);
    for personal in PERSONAL.iter().chain(&[
        "Dentist",
        "Team lunch",
        "Gym",
        "Haircut",
        "bring the referral",
    ]) {
        assert!(
            !files.contains(personal),
            "{personal} is in the scrubbed recording"
        );
    }
    assert!(
        files.contains("person-1@example.invalid"),
        "addresses got pseudonyms"
    );

    // Same calls, same shape; the texts are the pseudonyms.
    let app = ReplayApp::start(dir.path()).await;
    replay_pull(&app).await;
    app.assert_consumed();
    let replayed = snapshot(&app.app.pool).await;
    assert_eq!(replayed.links, recorded.links);
    assert_eq!(replayed.appointments.len(), recorded.appointments.len());
    let summaries: Vec<&str> = replayed
        .appointments
        .iter()
        .map(|a| a.summary.as_str())
        .collect();
    assert!(
        summaries.iter().all(|s| s.starts_with("summary-")),
        "{summaries:?}"
    );
    // One pseudonym per text: the edited event's two summaries differ, the
    // others keep theirs across the three syncs.
    let distinct: std::collections::HashSet<_> = summaries.iter().collect();
    assert_eq!(distinct.len(), summaries.len());
}

#[tokio::test]
async fn an_unexpected_request_fails_naming_it_and_the_next_unused_exchange() {
    let app = ReplayApp::start(&committed(PULL)).await;
    // Not the recorded session: the worker asks for another calendar.
    app.connect(USER, "other@group.calendar.google.com").await;
    app.run(&["run", "--once"]).await;

    let status: ReplayStatus = app.replay.status();
    assert!(!status.is_exact());
    let asked = &status.unmatched[0];
    assert!(
        asked
            .request
            .starts_with("GET /calendar/v3/calendars/other@group.calendar.google.com/events?"),
        "{asked:?}"
    );
    let next = asked.next_unused.as_deref().unwrap();
    assert!(
        next.starts_with("#0002 GET /calendar/v3/calendars/primary/events?"),
        "{next}"
    );

    // The same over HTTP, as the CLI server serves it.
    let body = raw_get(app.replay.addr(), "/_replay/status").await;
    let served: ReplayStatus = serde_json::from_str(&body).unwrap();
    assert_eq!(served.unmatched, status.unmatched);
    assert!(served.unused.len() > 10);

    // The answer to an unexpected request names it and the next unused
    // exchange.
    let (head, body) =
        raw_request(app.replay.addr(), "/calendar/v3/calendars/nope/events?x=1").await;
    assert!(head.starts_with("HTTP/1.1 500"), "{head}");
    let body: Value = serde_json::from_str(&body).unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("no recorded exchange matches GET /calendar/v3/calendars/nope/events?x=1")
            && message
                .contains("next unused exchange: #0002 GET /calendar/v3/calendars/primary/events?"),
        "{message}"
    );

    // What the test would have said.
    let failure = std::panic::catch_unwind(|| status.assert_consumed())
        .expect_err("an unexpected request fails the test");
    let message = failure
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(
        message.contains("unexpected request GET /calendar/v3/calendars/other@group")
            && message.contains(
                "(next unused exchange: #0002 GET /calendar/v3/calendars/primary/events?"
            ),
        "{message}"
    );
}

async fn raw_get(addr: std::net::SocketAddr, path: &str) -> String {
    let (head, body) = raw_request(addr, path).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body
}

/// (status line and headers, body) of a `GET path`.
async fn raw_request(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).await.unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.to_owned(), body.to_owned())
}
