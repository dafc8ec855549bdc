//! The Google boundary: the Calendar API client, access tokens, error
//! classification, and the mapping between Google events and appointments.
//!
//! A process builds one [`GoogleClient`] (one HTTP connection pool, the OAuth
//! client, the base URLs) and from it one [`CalendarClient`] per connection: a
//! google-calendar3 hub bound to that connection's [`TokenProvider`]. Every
//! call has a deadline, every failure is one [`GoogleError`] whose variant says
//! what to do next, and only domain types leave this module: raw Google JSON
//! never does.

mod calendar;
mod error;
mod http;
mod listing;
mod mapping;
mod observe;
mod token;

use std::sync::Arc;
use std::time::Duration;

pub use calendar::{
    CalendarClient, ListFrom, ListQuery, NewEvent, PageToken, WatchChannel, WatchRequest,
    MAX_PAGE_SIZE,
};
pub use error::{GoogleError, NextStep, MAX_SNOOZE};
pub use http::{HttpClient, TlsSetupError};
pub use listing::{skipped_id, EventPage, SkippedEvent, SKIPPED_ID_CHARS};
pub use mapping::{
    in_storable_range, LiveStatus, NotAppointmentReason, RemoteAppointment, RemoteEvent,
    RemoteEventKind, WriteAck,
};
pub use token::{TokenError, TokenProvider};

use crate::config::GoogleSettings;
use crate::ids::RefreshToken;

/// How long one call to Google (or to the token endpoint) may take, headers
/// and body, before it counts as failed.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The process-wide Google client: clone it freely, clones share the
/// connection pool.
#[derive(Clone)]
pub struct GoogleClient {
    http: HttpClient,
    oauth: token::OAuthClient,
    base_url: Arc<url::Url>,
    call_timeout: Duration,
}

impl std::fmt::Debug for GoogleClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GoogleClient")
            .field("base_url", &self.base_url.as_str())
            .field("token_url", &self.oauth.token_url)
            .field("call_timeout", &self.call_timeout)
            .finish_non_exhaustive()
    }
}

/// The Google client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    #[error("GOOGLE_CALENDAR_BASE_URL is not a usable URL: {0}")]
    BaseUrl(String),
}

impl GoogleClient {
    /// Builds the shared HTTP client and keeps the settings every connection
    /// needs. Call once per process.
    pub fn new(settings: &GoogleSettings) -> Result<Self, SetupError> {
        let mut base = settings.calendar_base_url.clone();
        // google-calendar3 appends paths to the base URL: it must end in '/'.
        if !base.ends_with('/') {
            base.push('/');
        }
        let base_url = url::Url::parse(&base).map_err(|e| SetupError::BaseUrl(e.to_string()))?;
        if base_url.cannot_be_a_base() {
            return Err(SetupError::BaseUrl(base));
        }
        Ok(GoogleClient {
            http: http::build_http_client()?,
            oauth: token::OAuthClient::from_settings(settings),
            base_url: Arc::new(base_url),
            call_timeout: DEFAULT_CALL_TIMEOUT,
        })
    }

    /// Sets the deadline of every call made through clients built afterwards.
    pub fn with_call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    pub fn call_timeout(&self) -> Duration {
        self.call_timeout
    }

    /// A token provider for one connection's refresh token.
    pub fn token_provider(&self, refresh_token: RefreshToken) -> TokenProvider {
        TokenProvider::new(
            self.http.clone(),
            self.oauth.clone(),
            refresh_token,
            self.call_timeout,
        )
    }

    /// The client for one connection. Keep it for the connection's lifetime
    /// (e.g. one per job, or cached per connection) so its access token is
    /// reused.
    pub fn calendar_client(&self, refresh_token: RefreshToken) -> CalendarClient {
        self.calendar_client_with(self.token_provider(refresh_token))
    }

    /// The client for one connection over an existing token provider, so a
    /// worker that keeps one provider per connection reuses its access token
    /// (and its knowledge of a revoked refresh token) across jobs.
    pub fn calendar_client_with(&self, tokens: TokenProvider) -> CalendarClient {
        CalendarClient::new(
            self.http.clone(),
            (*self.base_url).clone(),
            tokens,
            self.call_timeout,
        )
    }
}
