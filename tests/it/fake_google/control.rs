//! Notification channels, the admin routes and the `fake-google` command.

use super::*;

#[tokio::test]
async fn watch_registers_a_channel_and_notifications_reach_its_address() {
    use tokio::sync::mpsc;
    let (tx, mut rx) = mpsc::unbounded_channel::<HeaderMap>();
    let receiver = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(headers);
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, receiver).await });

    let google = FakeGoogle::start(FakeGoogleOptions::default())
        .await
        .unwrap();
    let api = Api::new(&google);
    let watched = api
        .call(
            Method::POST,
            &format!("{EVENTS}/watch"),
            &[],
            Some(
                json!({"id": "chan-1", "type": "web_hook", "address": hook, "token": "secret-ish"}),
            ),
        )
        .await;
    assert_eq!(watched.status, StatusCode::OK, "{}", watched.text);
    let channel = watched.json();
    assert_eq!(channel["kind"], "api#channel");
    let resource_id = channel["resourceId"].as_str().unwrap().to_owned();
    assert!(channel["expiration"]
        .as_str()
        .unwrap()
        .parse::<i64>()
        .is_ok());

    async fn next(rx: &mut mpsc::UnboundedReceiver<HeaderMap>) -> HeaderMap {
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("a notification")
            .unwrap()
    }
    let sync = next(&mut rx).await;
    assert_eq!(sync["x-goog-resource-state"], "sync");
    assert_eq!(sync["x-goog-channel-id"], "chan-1");
    assert_eq!(sync["x-goog-channel-token"], "secret-ish");
    assert_eq!(sync["x-goog-resource-id"], resource_id.as_str());
    assert_eq!(sync["x-goog-message-number"], "1");

    google
        .create_event(
            "primary",
            timed(
                "n0t1f001",
                "x",
                "2026-12-01T10:00:00Z",
                "2026-12-01T11:00:00Z",
            ),
        )
        .unwrap();
    let exists = next(&mut rx).await;
    assert_eq!(exists["x-goog-resource-state"], "exists");
    assert_eq!(exists["x-goog-message-number"], "2");
    assert_eq!(
        google
            .notify("chan-1", ResourceState::Exists)
            .await
            .unwrap(),
        200
    );

    let stop = json!({"id": "chan-1", "resourceId": resource_id});
    assert_eq!(
        api.call(
            Method::POST,
            "/calendar/v3/channels/stop",
            &[],
            Some(stop.clone())
        )
        .await
        .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        api.call(Method::POST, "/calendar/v3/channels/stop", &[], Some(stop))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert!(google.channels().is_empty());
}

#[tokio::test]
async fn admin_routes_drive_the_same_controls() {
    let google = empty_google().await;
    let api = Api::new(&google);
    let admin = |path: &str| format!("/_admin/{path}");
    let fault = json!({"operation": "list", "fault": {"kind": "rate_limit", "status": 429, "retry_after_secs": 2}, "times": 1});
    assert_eq!(
        api.call(Method::POST, &admin("faults"), &[], Some(fault))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(api.get(EVENTS).await.status, StatusCode::TOO_MANY_REQUESTS);

    let created = api
        .call(
            Method::POST,
            &admin("calendars/primary/events"),
            &[],
            Some(timed(
                "adm1n0ev",
                "UI",
                "2026-12-01T10:00:00Z",
                "2026-12-01T11:00:00Z",
            )),
        )
        .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.text);
    let (_, token, _) = list_all(&api, "").await;
    assert_eq!(
        api.call(
            Method::POST,
            &admin("calendars/primary/invalidate-sync-tokens"),
            &[],
            None
        )
        .await
        .status,
        StatusCode::OK
    );
    assert_eq!(
        api.get(&format!("{EVENTS}?syncToken={}", enc(&token)))
            .await
            .status,
        StatusCode::GONE
    );
    assert_eq!(
        api.call(
            Method::PUT,
            &admin("page-cap"),
            &[],
            Some(json!({"page_cap": 1}))
        )
        .await
        .status,
        StatusCode::OK
    );
    let log = api.get(&admin("requests")).await.json();
    assert!(log.as_array().unwrap().iter().any(|r| r["status"] == 429));
}

#[tokio::test]
async fn the_cli_serves_the_demo_fixtures() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_plansync"))
        .args(["fake-google", "--addr", "127.0.0.1:0", "--fixtures"])
        .arg(fixtures("demo"))
        .env("NO_COLOR", "1")
        .env("PLANSYNC_LOG_FORMAT", "pretty")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(rest) = line.split("listening on ").nth(1) {
                return rest.split_whitespace().next().unwrap().to_owned();
            }
        }
        panic!("the server exited before listening");
    })
    .await
    .expect("`listening on <addr>` on stderr");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    let oauth: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures("demo").join("oauth.json")).unwrap(),
    )
    .unwrap();
    let mut api = Api {
        client: Client::builder(TokioExecutor::new()).build_http(),
        base: format!("http://{addr}"),
        token: None,
    };
    let granted = api
        .post_form(
            "/token",
            &[
                ("grant_type", "refresh_token"),
                ("client_id", oauth["client_id"].as_str().unwrap()),
                ("client_secret", oauth["client_secret"].as_str().unwrap()),
                (
                    "refresh_token",
                    oauth["refresh_tokens"][0].as_str().unwrap(),
                ),
            ],
        )
        .await;
    assert_eq!(granted.status, StatusCode::OK, "{}", granted.text);
    api.token = Some(granted.json()["access_token"].as_str().unwrap().to_owned());
    let page = api
        .get("/calendar/v3/calendars/primary/events?maxResults=2")
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    let page = page.json();
    assert_eq!(page["kind"], "calendar#events");
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    assert!(page["nextPageToken"].is_string());
    assert!(page.get("nextSyncToken").is_none());

    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exits on SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}");
}
