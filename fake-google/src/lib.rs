//! `plansync-fake-google`: a faithful emulator of the parts of Google
//! Calendar API v3 and Google's OAuth token endpoint that plansync uses, over
//! real HTTP. Its own crate in the workspace, so the worker's production
//! build (`--no-default-features`) carries none of it; it depends on nothing
//! of `plansync`.
//!
//! It owns calendars and their events (with Google's ids, etags, `updated`
//! stamps, deletions kept as `cancelled`), the change sequence behind sync
//! and page tokens, RRULE expansion under `singleEvents=true`, notification
//! channels, the refresh/access tokens it accepts, injected faults and a log
//! of every request. It guarantees Google's observable semantics for those
//! calls — status codes, `reason`s and error bodies byte for byte, paging and
//! sync-token rules — so a client that works against it works against Google;
//! where it cannot know Google's behaviour it fails loudly rather than kindly
//! (fixtures/README.md lists its assumptions). Raw Google JSON stays here and
//! in the worker's `google`.
//!
//! Start it in-process with [`FakeGoogle::start`] (binds `127.0.0.1:0` by
//! default) or from the CLI with `plansync fake-google --addr ADDR --fixtures
//! DIR` (the worker's default `emulator` feature). Point a client at
//! [`FakeGoogle::base_url`] (the Calendar API root, with the trailing `/`
//! google-calendar3 needs) and [`FakeGoogle::token_url`].
//! The handle then acts "as the user in Google's UI" ([`FakeGoogle::create_event`],
//! [`FakeGoogle::patch_event`], [`FakeGoogle::delete_event`],
//! [`FakeGoogle::add_calendar`]), as Google's backend
//! ([`FakeGoogle::invalidate_sync_tokens`], [`FakeGoogle::revoke_refresh_token`],
//! [`FakeGoogle::expire_access_tokens`], [`FakeGoogle::allow_subject`],
//! [`FakeGoogle::disallow_subject`], [`FakeGoogle::inject_fault`],
//! [`FakeGoogle::set_page_cap`], [`FakeGoogle::notify`]) and as an observer
//! ([`FakeGoogle::requests`], [`FakeGoogle::get_event`], [`FakeGoogle::list_events`],
//! [`FakeGoogle::channels`]).
//! The same controls are served over HTTP under `/_admin/` for the CLI server.
//!
//! Dropping the handle stops the server.
//!
//! It also records and replays real sessions: [`Recorder`] is a proxy that
//! writes every exchange with an upstream (Google) to a folder, secrets
//! removed ([`exchange`]), personal data optionally pseudonymised;
//! [`Replayer`] answers from such a folder ([`replay`] has the matching
//! rules). Both live in their own modules and share nothing with the
//! emulator's state.

mod admin;
mod conn;
mod errors;
pub mod exchange;
mod faults;
mod fixtures;
mod jwt;
mod log;
mod oauth;
pub mod record;
mod recurrence;
pub mod replay;
mod reply;
mod routes;
mod scrub;
mod state;
mod times;
mod watch;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use faults::{Fault, Lost, Operation};
pub use log::RecordedRequest;
pub use record::{RecordError, Recorder, RecorderOptions};
pub use replay::{ReplayError, ReplayOptions, ReplayStatus, Replayer, Unmatched};
pub use watch::{Channel, NotifyError, ResourceState};

use errors::ApiError;
use faults::Faults;
use log::RequestLog;
use oauth::OAuth;
use state::Calendars;
use watch::Channels;

/// How to start the emulator.
#[derive(Debug, Clone)]
pub struct FakeGoogleOptions {
    /// Where to listen; port 0 picks a free port.
    pub addr: SocketAddr,
    /// A fixtures directory (fixtures/README.md). Without one the emulator
    /// starts with an empty `primary` calendar in UTC and a generated OAuth
    /// client with one refresh token.
    pub fixtures: Option<PathBuf>,
    /// A page size below Google's, so tests can force many pages.
    pub page_cap: Option<usize>,
    /// Lifetime of access tokens (Google: 3599 s).
    pub access_token_ttl: Duration,
    /// POST an `exists` notification to every live channel of a calendar
    /// after each change of it, as Google does.
    pub notify_on_change: bool,
    /// The longest notification-channel lifetime granted (Google: a week by
    /// default); shorter ones let tests watch renewals.
    pub channel_ttl: Duration,
    /// Added to every API and token call (not the admin routes), so
    /// benchmarks and tests can run under Google-like latency.
    pub latency: Duration,
}

impl Default for FakeGoogleOptions {
    fn default() -> Self {
        FakeGoogleOptions {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            fixtures: None,
            page_cap: None,
            access_token_ttl: Duration::from_secs(3599),
            notify_on_change: true,
            channel_ttl: watch::DEFAULT_TTL,
            latency: Duration::ZERO,
        }
    }
}

/// What the emulator's handle reports.
#[derive(Debug, thiserror::Error)]
pub enum FakeGoogleError {
    #[error("reading {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("fixture {path}: {message}")]
    Fixture { path: PathBuf, message: String },
    #[error("binding {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// What Google would have answered an API call doing the same.
    #[error("Google would answer {status} {reason}: {message}")]
    Api {
        status: u16,
        reason: String,
        message: String,
    },
    #[error(transparent)]
    Notify(#[from] NotifyError),
}

impl From<ApiError> for FakeGoogleError {
    fn from(err: ApiError) -> Self {
        let error = &err.body["error"];
        let (reason, message) = match error {
            Value::String(code) => (
                code.clone(),
                err.body["error_description"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            ),
            _ => (
                error["errors"][0]["reason"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                error["message"].as_str().unwrap_or_default().to_owned(),
            ),
        };
        FakeGoogleError::Api {
            status: err.status.as_u16(),
            reason,
            message,
        }
    }
}

pub(crate) struct Inner {
    calendars: Calendars,
    oauth: OAuth,
    faults: Faults,
    log: RequestLog,
    channels: Channels,
    page_cap: Option<usize>,
    latency: Duration,
    /// Raw JSON items (verbatim text) appended to the last page of every
    /// listing of a calendar: hostile events that a faithful Google would
    /// never hold, for the worker's hostile-input tests.
    raw_items: HashMap<String, Vec<String>>,
}

/// State shared by the HTTP handlers, the admin routes and the handle.
pub(crate) struct Shared {
    inner: Mutex<Inner>,
    notify_on_change: bool,
    http: watch::NotifyClient,
    /// `events.list` calls being answered now, and the most there ever were
    /// at once: how a test sees how many listings a worker keeps in flight.
    in_flight: std::sync::atomic::AtomicUsize,
    max_in_flight: std::sync::atomic::AtomicUsize,
}

/// Counts one call in flight for as long as it lives.
pub(crate) struct InFlight<'a>(&'a Shared);

impl Shared {
    pub(crate) fn list_started(&self) -> InFlight<'_> {
        use std::sync::atomic::Ordering;
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(self)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (every
        // mutation is a single insert), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// After a change of a calendar: notify its channels, in the background.
    fn changed(self: &Arc<Self>, calendar_id: &str) {
        if !self.notify_on_change {
            return;
        }
        let ids = self.lock().channels.watching(calendar_id);
        for id in ids {
            self.spawn_notify(id, ResourceState::Exists);
        }
    }

    fn spawn_notify(self: &Arc<Self>, channel_id: String, state: ResourceState) {
        let shared = Arc::clone(self);
        tokio::spawn(async move {
            // Delivery failures are the receiver's problem, as with Google.
            let _ = shared.notify(&channel_id, state).await;
        });
    }

    async fn notify(&self, channel_id: &str, state: ResourceState) -> Result<u16, NotifyError> {
        let channel = self
            .lock()
            .channels
            .next_message(channel_id)
            .ok_or_else(|| NotifyError::NoChannel(channel_id.to_owned()))?;
        watch::post(&self.http, &channel, state).await
    }
}

/// A running emulator. Dropping it stops the server.
pub struct FakeGoogle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl FakeGoogle {
    /// Loads the fixtures, binds and starts serving in the background.
    pub async fn start(options: FakeGoogleOptions) -> Result<FakeGoogle, FakeGoogleError> {
        let mut calendars = Calendars::new();
        let oauth_file = match &options.fixtures {
            Some(dir) => fixtures::load(dir, &mut calendars)?,
            None => None,
        };
        if calendars.calendar_ids().is_empty() {
            calendars.add_calendar("primary", "primary", "UTC", None)?;
        }
        let oauth = match oauth_file {
            Some(file) => {
                let mut oauth =
                    OAuth::new(file.client_id, file.client_secret, options.access_token_ttl);
                for token in file.refresh_tokens {
                    oauth.add_refresh_token(token);
                }
                for account in file.service_accounts {
                    let account = jwt::ServiceAccount::new(
                        account.client_email,
                        &account.public_key_pem,
                        account.subjects,
                    )
                    .map_err(|message| FakeGoogleError::Fixture {
                        path: options
                            .fixtures
                            .clone()
                            .unwrap_or_default()
                            .join("oauth.json"),
                        message,
                    })?;
                    oauth.add_service_account(account);
                }
                oauth
            }
            None => OAuth::generated(options.access_token_ttl),
        };
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                calendars,
                oauth,
                faults: Faults::default(),
                log: RequestLog::default(),
                channels: Channels::new(options.channel_ttl),
                page_cap: options.page_cap,
                latency: options.latency,
                raw_items: HashMap::new(),
            }),
            notify_on_change: options.notify_on_change,
            http: watch::notify_client(),
            in_flight: Default::default(),
            max_in_flight: Default::default(),
        });
        let listener = tokio::net::TcpListener::bind(options.addr)
            .await
            .map_err(|source| FakeGoogleError::Bind {
                addr: options.addr,
                source,
            })?;
        let addr = listener
            .local_addr()
            .map_err(|source| FakeGoogleError::Bind {
                addr: options.addr,
                source,
            })?;
        let (tx, rx) = oneshot::channel::<()>();
        let app = routes::router(Arc::clone(&shared));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
        });
        Ok(FakeGoogle {
            addr,
            shared,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    /// Stops accepting requests and waits for the server task to end.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            // Open keep-alive connections of clients must not hold us up.
            if tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
            {
                tracing::warn!("fake_google: connections still open at shutdown");
            }
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/calendar/v3/` (with the trailing slash).
    pub fn base_url(&self) -> String {
        format!("http://{}/calendar/v3/", self.addr)
    }

    /// `http://127.0.0.1:PORT/token`.
    pub fn token_url(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// `http://127.0.0.1:PORT/_admin/`.
    pub fn admin_url(&self) -> String {
        format!("http://{}/_admin/", self.addr)
    }

    pub fn client_id(&self) -> String {
        self.shared.lock().oauth.client_id.clone()
    }

    pub fn client_secret(&self) -> String {
        self.shared.lock().oauth.client_secret.clone()
    }

    /// The refresh tokens currently accepted (fixtures' plus added ones).
    pub fn refresh_tokens(&self) -> Vec<String> {
        self.shared.lock().oauth.refresh_tokens()
    }

    /// Accepts one more refresh token (a user granting access).
    pub fn add_refresh_token(&self, token: &str) {
        self.shared.lock().oauth.add_refresh_token(token.to_owned());
    }

    /// Revokes a refresh token and its access tokens; returns whether it was
    /// known. Later grants with it answer 400 `invalid_grant`.
    pub fn revoke_refresh_token(&self, token: &str) -> bool {
        self.shared.lock().oauth.revoke(token)
    }

    /// Lets the service accounts act as `subject` (the Workspace
    /// administrator granting domain-wide delegation for that member).
    pub fn allow_subject(&self, subject: &str) {
        self.shared.lock().oauth.set_delegation(None, subject, true);
    }

    /// Withdraws delegation for `subject`: its access tokens die, and later
    /// JWT grants for it answer 401 `unauthorized_client`.
    pub fn disallow_subject(&self, subject: &str) {
        self.shared
            .lock()
            .oauth
            .set_delegation(None, subject, false);
    }

    /// An access token valid for the API, without going through `/token`.
    pub fn issue_access_token(&self) -> String {
        self.shared.lock().oauth.issue(None)
    }

    /// Every access token issued so far answers 401 from now on.
    pub fn expire_access_tokens(&self) {
        self.shared.lock().oauth.expire_all();
    }

    /// Adds a calendar (or renames / re-zones an existing one).
    pub fn add_calendar(
        &self,
        calendar_id: &str,
        summary: &str,
        time_zone: &str,
    ) -> Result<(), FakeGoogleError> {
        self.shared
            .lock()
            .calendars
            .add_calendar(calendar_id, summary, time_zone, None)
            .map_err(Into::into)
    }

    /// The ids of all calendars.
    pub fn calendar_ids(&self) -> Vec<String> {
        self.shared.lock().calendars.calendar_ids()
    }

    /// Creates an event as the user would in Google's UI (Google's JSON; an
    /// `id` may be given). Returns the stored event.
    pub fn create_event(&self, calendar_id: &str, event: Value) -> Result<Value, FakeGoogleError> {
        let out = self.shared.lock().calendars.insert(calendar_id, event)?;
        self.shared.changed(calendar_id);
        Ok(out)
    }

    /// Edits an event (or one instance `<masterId>_<start>` of a series) as
    /// the user would: a merge patch, `null` clears, `"status":"cancelled"`
    /// cancels. Returns the new event.
    pub fn patch_event(
        &self,
        calendar_id: &str,
        event_id: &str,
        patch: Value,
    ) -> Result<Value, FakeGoogleError> {
        let out = self
            .shared
            .lock()
            .calendars
            .patch(calendar_id, event_id, patch, None)?;
        self.shared.changed(calendar_id);
        Ok(out)
    }

    /// Deletes an event (or one instance of a series) as the user would.
    pub fn delete_event(&self, calendar_id: &str, event_id: &str) -> Result<(), FakeGoogleError> {
        self.shared
            .lock()
            .calendars
            .delete(calendar_id, event_id, None)?;
        self.shared.changed(calendar_id);
        Ok(())
    }

    /// What `events.get` would answer, without a request being logged.
    pub fn get_event(&self, calendar_id: &str, event_id: &str) -> Result<Value, FakeGoogleError> {
        self.shared
            .lock()
            .calendars
            .get(calendar_id, event_id)
            .map_err(Into::into)
    }

    /// What `events.list` with `query` (e.g. `singleEvents=true`) would
    /// answer, every page joined, without a request being logged or a fault
    /// consumed: the observer's view for checkers.
    pub fn list_events(
        &self,
        calendar_id: &str,
        query: &str,
    ) -> Result<Vec<Value>, FakeGoogleError> {
        let mut params = state::ListParams::from_query(Some(query))?;
        let mut events = Vec::new();
        loop {
            let page = self
                .shared
                .lock()
                .calendars
                .list(calendar_id, &params, None)?;
            if let Some(items) = page["items"].as_array() {
                events.extend(items.iter().cloned());
            }
            match page["nextPageToken"].as_str() {
                Some(token) => params.page_token = Some(token.to_owned()),
                None => return Ok(events),
            }
        }
    }

    /// Every sync token issued so far for the calendar answers 410
    /// `fullSyncRequired`.
    pub fn invalidate_sync_tokens(&self, calendar_id: &str) -> Result<(), FakeGoogleError> {
        self.shared
            .lock()
            .calendars
            .invalidate_sync_tokens(calendar_id)
            .map_err(Into::into)
    }

    /// Caps every page at `cap` items (below Google's 250/2500), or lifts it.
    pub fn set_page_cap(&self, cap: Option<usize>) {
        self.shared.lock().page_cap = cap;
    }

    /// Appends `item` (one event's JSON text, kept verbatim) to the last page
    /// of every listing of `calendar`: an event a faithful Google would never
    /// hold, for hostile-input tests.
    pub fn add_raw_item(&self, calendar: &str, item: impl Into<String>) {
        self.shared
            .lock()
            .raw_items
            .entry(calendar.to_owned())
            .or_default()
            .push(item.into());
    }

    /// The most `events.list` calls the emulator was answering at once.
    pub fn max_lists_in_flight(&self) -> usize {
        self.shared
            .max_in_flight
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Forgets the raw items of `calendar`.
    pub fn clear_raw_items(&self, calendar: &str) {
        self.shared.lock().raw_items.remove(calendar);
    }

    /// The next `times` calls of `operation` suffer `fault`.
    pub fn inject_fault(&self, operation: Operation, fault: Fault, times: u32) {
        self.shared.lock().faults.inject(operation, fault, times);
    }

    pub fn clear_faults(&self) {
        self.shared.lock().faults.clear();
    }

    /// Every request answered so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().log.snapshot()
    }

    pub fn clear_requests(&self) {
        self.shared.lock().log.clear();
    }

    /// The registered notification channels (not stopped; expired ones
    /// included: see [`Channel::is_live`]).
    pub fn channels(&self) -> Vec<Channel> {
        self.shared.lock().channels.list()
    }

    /// The channels `channels.stop` stopped, in that order.
    pub fn stopped_channels(&self) -> Vec<Channel> {
        self.shared.lock().channels.stopped()
    }

    /// POSTs one notification on a channel now; returns the receiver's status.
    pub async fn notify(
        &self,
        channel_id: &str,
        state: ResourceState,
    ) -> Result<u16, FakeGoogleError> {
        Ok(self.shared.notify(channel_id, state).await?)
    }
}

impl Drop for FakeGoogle {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
