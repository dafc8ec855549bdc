//! Our `google` client and token provider against the `fake_google` emulator,
//! over real HTTP: each Google behaviour sync relies on, and the classified
//! error (with Google's `reason` where it matters) of each failure.

mod auth;
mod errors;
mod listing;
mod writes;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use plansync::config::GoogleSettings;
use plansync::google::{
    CalendarClient, GoogleClient, GoogleError, ListQuery, NewEvent, NextStep, RemoteEvent,
    RemoteEventKind, WatchRequest,
};
use plansync::ids::{CalendarId, Etag, EventId, RefreshToken, SyncToken};
use plansync::model::AppointmentFields;
use plansync_fake_google::{FakeGoogle, FakeGoogleOptions, Fault, Lost, Operation};
use serde_json::json;

struct Setup {
    fake: FakeGoogle,
    google: GoogleClient,
    refresh_token: String,
}

impl Setup {
    async fn start() -> Setup {
        Setup::with(FakeGoogleOptions::default()).await
    }

    async fn with(options: FakeGoogleOptions) -> Setup {
        let fake = FakeGoogle::start(FakeGoogleOptions {
            notify_on_change: false,
            ..options
        })
        .await
        .expect("the emulator starts");
        let google = GoogleClient::new(&settings(&fake, &fake.client_secret()))
            .expect("the client builds")
            .with_call_timeout(Duration::from_secs(10));
        let refresh_token = fake.refresh_tokens()[0].clone();
        Setup {
            fake,
            google,
            refresh_token,
        }
    }

    fn client(&self) -> CalendarClient {
        self.google
            .calendar_client(RefreshToken::new(self.refresh_token.clone()))
    }

    fn token_calls(&self) -> usize {
        self.fake
            .requests()
            .iter()
            .filter(|r| r.operation == Operation::Token)
            .count()
    }

    fn calls(&self, operation: Operation) -> Vec<plansync_fake_google::RecordedRequest> {
        self.fake
            .requests()
            .into_iter()
            .filter(|r| r.operation == operation)
            .collect()
    }
}

fn settings(fake: &FakeGoogle, client_secret: &str) -> GoogleSettings {
    GoogleSettings {
        calendar_base_url: fake.base_url(),
        token_url: fake.token_url(),
        client_id: fake.client_id(),
        client_secret: client_secret.to_owned().into(),
    }
}

fn primary() -> CalendarId {
    CalendarId::from("primary")
}

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn dentist() -> AppointmentFields {
    AppointmentFields {
        summary: "Dentist".into(),
        description: Some("bring the card".into()),
        location: Some("Main St 1".into()),
        start_at: utc("2030-06-10T10:00:00Z"),
        end_at: utc("2030-06-10T11:00:00Z"),
        start_time_zone: Some("Europe/Berlin".into()),
        end_time_zone: Some("Europe/Berlin".into()),
        all_day: false,
    }
}

fn props(appointment: i64) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("plansyncAppointment".to_owned(), appointment.to_string()),
        ("plansyncConnection".to_owned(), "1".to_owned()),
    ])
}

/// Creates `n` events as the user would, starting in 2030.
fn create_events(fake: &FakeGoogle, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let created = fake
                .create_event(
                    "primary",
                    json!({
                        "summary": format!("event {i}"),
                        "start": {"dateTime": format!("2030-01-{:02}T09:00:00Z", i + 1)},
                        "end": {"dateTime": format!("2030-01-{:02}T10:00:00Z", i + 1)},
                    }),
                )
                .expect("event created");
            created["id"].as_str().unwrap().to_owned()
        })
        .collect()
}

async fn insert(client: &CalendarClient, id: &str, appointment: i64) -> Etag {
    client
        .insert_event(
            &primary(),
            NewEvent {
                id: &EventId::new(id),
                fields: &dentist(),
                private_properties: &props(appointment),
            },
            None,
        )
        .await
        .expect("insert succeeds")
        .etag
}

fn time_min() -> DateTime<Utc> {
    utc("2029-01-01T00:00:00Z")
}

/// Lists every page of `query`, returning the events and the sync token of
/// the last page, asserting no earlier page carries one.
async fn list_all(client: &CalendarClient, query: ListQuery) -> (Vec<RemoteEvent>, String, usize) {
    let mut query = query;
    let mut events = Vec::new();
    let mut pages = 0;
    loop {
        let page = client
            .list_page(&primary(), &query)
            .await
            .expect("page lists");
        pages += 1;
        events.extend(page.events);
        match page.next_page_token {
            Some(next) => {
                assert!(
                    page.next_sync_token.is_none(),
                    "sync token before the last page"
                );
                query = query.next_page(next);
            }
            None => {
                let token = page
                    .next_sync_token
                    .expect("the last page has a sync token");
                return (events, token.0, pages);
            }
        }
    }
}
