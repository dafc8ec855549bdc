//! The Google boundary: the Calendar API client, access tokens, error
//! classification, and the mapping between Google events and appointments.
//!
//! A process builds one [`GoogleClient`] (one HTTP connection pool, the OAuth
//! client, the base URLs) and from it one [`CalendarClient`] per connection: a
//! google-calendar3 hub bound to that connection's [`TokenProvider`] (its
//! refresh token, or the service account acting as its member). Every
//! call has a deadline, every failure is one [`GoogleError`] whose variant says
//! what to do next, and only domain types leave this module: raw Google JSON
//! never does.

mod budget;
mod calendar;
mod delegated;
mod error;
mod http;
mod listing;
mod mapping;
mod observe;
mod retry_after;
mod token;
mod token_error;

use std::sync::Arc;
use std::time::Duration;

pub use budget::{
    AcquireFuture, BudgetScope, Call, CallBudget, CallKind, OverBudget, CALLS_METRIC,
};
pub use calendar::{
    CalendarClient, ListFrom, ListQuery, NewEvent, PageToken, WatchChannel, WatchRequest,
    MAX_PAGE_SIZE,
};
pub use delegated::{DelegatedTokens, KeyFileError, ServiceAccount, CALENDAR_SCOPE};
pub use error::{GoogleError, NextStep};
pub use http::{HttpClient, TlsSetupError};
pub use listing::{skipped_id, EventPage, SkippedEvent, SKIPPED_ID_CHARS};
pub use mapping::{
    in_storable_range, LiveStatus, NotAppointmentReason, RemoteAppointment, RemoteEvent,
    RemoteEventKind, WriteAck,
};
pub use retry_after::MAX_SNOOZE;
pub use token::TokenProvider;
pub use token_error::TokenError;

use crate::config::GoogleSettings;
use crate::ids::{RefreshToken, Subject};

/// How long one call to Google (or to the token endpoint) may take, headers
/// and body, before it counts as failed.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The process-wide Google client: clone it freely, clones share the
/// connection pool.
#[derive(Clone)]
pub struct GoogleClient {
    http: HttpClient,
    connector: http::Connector,
    /// Absent when `GOOGLE_CLIENT_ID`/`GOOGLE_CLIENT_SECRET` are unset (a
    /// deployment with delegated connections only).
    oauth: Option<token::OAuthClient>,
    service_account: Option<ServiceAccount>,
    base_url: Arc<url::Url>,
    call_timeout: Duration,
    budget: budget::Budget,
}

impl std::fmt::Debug for GoogleClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GoogleClient")
            .field("base_url", &self.base_url.as_str())
            .field("token_url", &self.oauth.as_ref().map(|o| &o.token_url))
            .field("service_account", &self.service_account)
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
        let connector = http::build_connector()?;
        Ok(GoogleClient {
            http: http::http_client_over(connector.clone()),
            connector,
            oauth: token::OAuthClient::from_settings(settings),
            service_account: None,
            base_url: Arc::new(base_url),
            call_timeout: DEFAULT_CALL_TIMEOUT,
            budget: budget::Budget::default(),
        })
    }

    /// Every call of clients built afterwards first takes one request from
    /// `budget` (the worker's fleet-wide limiter).
    pub fn with_budget(mut self, budget: Arc<dyn CallBudget>) -> Self {
        self.budget = budget::Budget::new(Some(budget));
        self
    }

    /// The OAuth client id: the budget is the OAuth client's (Google's
    /// project), so it keys the shared limiter.
    pub fn client_id(&self) -> &str {
        self.oauth.as_ref().map_or("", |o| o.client_id.as_str())
    }

    /// Sets the deadline of every call made through clients built afterwards.
    pub fn with_call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    pub fn call_timeout(&self) -> Duration {
        self.call_timeout
    }

    /// Loads the service-account key file delegated connections authenticate
    /// with (`GOOGLE_SERVICE_ACCOUNT_KEY`); fails on a missing or unusable
    /// file, naming the variable.
    pub async fn with_service_account(
        mut self,
        key_file: &std::path::Path,
    ) -> Result<Self, KeyFileError> {
        self.service_account =
            Some(ServiceAccount::load(key_file, self.connector.clone(), self.call_timeout).await?);
        Ok(self)
    }

    pub fn service_account(&self) -> Option<&ServiceAccount> {
        self.service_account.as_ref()
    }

    /// A token provider for one connection's refresh token, drawing on the
    /// project budget only.
    pub fn token_provider(&self, refresh_token: RefreshToken) -> TokenProvider {
        self.provider_with(refresh_token, self.budget.clone())
    }

    /// A token provider for connection `principal` (any stable key, e.g. its
    /// id): its calls, and those of clients built over it, also draw on that
    /// connection's own budget (`PLANSYNC_GOOGLE_USER_QPM`).
    pub fn token_provider_for(
        &self,
        principal: &str,
        refresh_token: RefreshToken,
    ) -> TokenProvider {
        self.provider_with(refresh_token, self.budget.for_principal(principal))
    }

    fn provider_with(&self, refresh_token: RefreshToken, budget: budget::Budget) -> TokenProvider {
        match &self.oauth {
            Some(oauth) => TokenProvider::new(
                self.http.clone(),
                oauth.clone(),
                refresh_token,
                self.call_timeout,
                budget,
            ),
            None => TokenProvider::unconfigured("GOOGLE_CLIENT_ID/GOOGLE_CLIENT_SECRET"),
        }
    }

    /// The token provider of a delegated connection acting as `subject`:
    /// shared with every other connection of that member. Its API calls draw
    /// on connection `principal`'s budget; the service account's own token
    /// grants are cached per member and not metered.
    pub fn delegated_provider(&self, principal: &str, subject: &Subject) -> TokenProvider {
        match &self.service_account {
            Some(account) => TokenProvider::delegated(
                account.tokens_for(subject),
                self.budget.for_principal(principal),
            ),
            None => TokenProvider::unconfigured("GOOGLE_SERVICE_ACCOUNT_KEY"),
        }
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
