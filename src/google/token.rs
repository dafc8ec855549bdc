//! Access tokens for one connection, from its refresh token or (delegated
//! connections) from the service account acting as its member.
//!
//! [`TokenProvider`] either runs the OAuth `refresh_token` grant against
//! `GOOGLE_TOKEN_URL` with the deployment's OAuth client, and caches the access
//! token until a minute before it expires. Clones share one cache, and a
//! refresh holds the cache's lock, so concurrent callers of one connection
//! cause one refresh, not a stampede. A 401 from the API makes the caller
//! [`invalidate`](TokenProvider::invalidate) the cache so the next call
//! refreshes. `invalid_grant` is sticky: once Google has refused the refresh
//! token, the provider never calls the token endpoint with it again.
//! For a delegated connection it hands over to [`super::delegated`], whose
//! refusals are not sticky: the connection's needs-reauth mark already stops
//! its jobs, and `connect` after the administrator's grant must just work.
//!
//! It implements google-calendar3's `GetToken`, whose error is a boxed
//! `dyn Error`; the box always holds a [`TokenError`], which
//! [`super::error`] downcasts to classify it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::header::CONTENT_TYPE;
use http::{Method, Request};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::budget::{self, Budget, CallKind};
use super::delegated::DelegatedTokens;
use super::http::{body, send, HttpClient, SendError};
use super::retry_after::retry_after;
use super::token_error::{TokenError, EXPIRY_MARGIN};
use crate::config::GoogleSettings;
use crate::ids::{AccessToken, RefreshToken};

/// The deployment's OAuth client and token endpoint, shared by every
/// connection's provider.
#[derive(Clone)]
pub(crate) struct OAuthClient {
    pub token_url: String,
    pub client_id: String,
    pub client_secret: SecretString,
}

impl OAuthClient {
    /// The OAuth client, when the settings name one.
    pub fn from_settings(settings: &GoogleSettings) -> Option<Self> {
        settings.has_oauth_client().then(|| OAuthClient {
            token_url: settings.token_url.clone(),
            client_id: settings.client_id.clone(),
            client_secret: settings.client_secret.clone(),
        })
    }
}

enum Cached {
    Empty,
    Valid {
        token: AccessToken,
        refresh_at: Instant,
    },
    /// Google refused the refresh token; asking again cannot help.
    Revoked {
        description: String,
    },
}

struct Inner {
    http: HttpClient,
    oauth: OAuthClient,
    refresh_token: RefreshToken,
    timeout: Duration,
    cache: Mutex<Cached>,
}

/// One connection's access tokens. Clones share the cache.
#[derive(Clone)]
pub struct TokenProvider {
    source: Source,
    /// The request budget a refresh draws on, with the connection's key;
    /// the connection's calendar client draws on it too.
    budget: Budget,
}

#[derive(Clone)]
enum Source {
    Refresh(Arc<Inner>),
    Delegated(DelegatedTokens),
    /// The worker is not configured for this kind of connection: every call
    /// fails naming the missing variable.
    Unconfigured(&'static str),
}

impl std::fmt::Debug for TokenProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("TokenProvider");
        match &self.source {
            Source::Refresh(inner) => d.field("token_url", &inner.oauth.token_url),
            Source::Delegated(tokens) => d.field("delegated", tokens),
            Source::Unconfigured(var) => d.field("missing", var),
        };
        d.finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct GrantAnswer {
    access_token: String,
    expires_in: Option<u64>,
}

#[derive(Deserialize, Default)]
struct GrantError {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
}

impl TokenProvider {
    pub(crate) fn new(
        http: HttpClient,
        oauth: OAuthClient,
        refresh_token: RefreshToken,
        timeout: Duration,
        budget: Budget,
    ) -> Self {
        TokenProvider {
            source: Source::Refresh(Arc::new(Inner {
                http,
                oauth,
                refresh_token,
                timeout,
                cache: Mutex::new(Cached::Empty),
            })),
            budget,
        }
    }

    pub(crate) fn delegated(tokens: DelegatedTokens, budget: Budget) -> Self {
        TokenProvider {
            source: Source::Delegated(tokens),
            budget,
        }
    }

    /// A provider whose every call fails with [`TokenError::NotConfigured`].
    pub(crate) fn unconfigured(var: &'static str) -> Self {
        TokenProvider {
            source: Source::Unconfigured(var),
            budget: Budget::new(None),
        }
    }

    /// The budget (with the connection's key) the calendar client of this
    /// connection draws on too.
    pub(crate) fn budget(&self) -> &Budget {
        &self.budget
    }

    /// A valid access token: the cached one, or a fresh one from the token
    /// endpoint.
    pub async fn access_token(&self) -> Result<AccessToken, TokenError> {
        match &self.source {
            Source::Refresh(inner) => inner.access_token(&self.budget).await,
            Source::Delegated(tokens) => tokens.access_token().await,
            Source::Unconfigured(var) => Err(TokenError::NotConfigured { var }),
        }
    }

    /// Forgets the cached access token (Google answered 401 with it), so the
    /// next call refreshes. A revoked refresh token stays revoked.
    pub async fn invalidate(&self) {
        match &self.source {
            Source::Refresh(inner) => inner.invalidate().await,
            Source::Delegated(tokens) => tokens.invalidate().await,
            Source::Unconfigured(_) => {}
        }
    }
}

impl Inner {
    async fn access_token(&self, budget: &Budget) -> Result<AccessToken, TokenError> {
        let mut cache = self.cache.lock().await;
        match &*cache {
            Cached::Valid { token, refresh_at } if Instant::now() < *refresh_at => {
                return Ok(token.clone())
            }
            Cached::Revoked { description } => {
                return Err(TokenError::InvalidGrant {
                    description: description.clone(),
                })
            }
            _ => {}
        }
        match super::observe::observe("token.refresh", self.refresh(budget)).await {
            Ok((token, lifetime)) => {
                let margin = EXPIRY_MARGIN.min(lifetime / 2);
                *cache = Cached::Valid {
                    token: token.clone(),
                    refresh_at: Instant::now() + lifetime - margin,
                };
                Ok(token)
            }
            Err(TokenError::InvalidGrant { description }) => {
                *cache = Cached::Revoked {
                    description: description.clone(),
                };
                Err(TokenError::InvalidGrant { description })
            }
            Err(e) => {
                *cache = Cached::Empty;
                Err(e)
            }
        }
    }

    async fn invalidate(&self) {
        let mut cache = self.cache.lock().await;
        if matches!(*cache, Cached::Valid { .. }) {
            *cache = Cached::Empty;
        }
    }

    async fn refresh(&self, budget: &Budget) -> Result<(AccessToken, Duration), TokenError> {
        budget
            .acquire(CallKind::Token)
            .await
            .map_err(|over| TokenError::OverBudget {
                retry_after: over.retry_after,
                scope: over.scope,
            })?;
        let result = self.refresh_now().await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(TokenError::InvalidGrant { .. }) => "invalid_grant",
            Err(TokenError::RateLimited { .. }) => "rate_limited",
            Err(TokenError::Transient { .. }) => "transient",
            Err(TokenError::Timeout(_)) => "timeout",
            Err(_) => "refused",
        };
        budget::record(CallKind::Token, outcome);
        result
    }

    async fn refresh_now(&self) -> Result<(AccessToken, Duration), TokenError> {
        let inner = self;
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "refresh_token")
            .append_pair("client_id", &inner.oauth.client_id)
            .append_pair("client_secret", inner.oauth.client_secret.expose_secret())
            .append_pair("refresh_token", inner.refresh_token.expose_secret())
            .finish();
        let request = Request::builder()
            .method(Method::POST)
            .uri(&inner.oauth.token_url)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body(form))
            .map_err(|e| TokenError::Malformed {
                detail: format!("cannot build the token request: {e}"),
            })?;
        let response = match send(&inner.http, request, inner.timeout).await {
            Ok(r) => r,
            Err(SendError::Timeout(d)) => return Err(TokenError::Timeout(d)),
            Err(SendError::Connection(detail)) => {
                return Err(TokenError::Transient {
                    status: None,
                    detail,
                })
            }
        };
        let status = response.status;
        if status.is_success() {
            let bytes = response.body.map_err(|detail| TokenError::Malformed {
                detail: format!("body broke off: {detail}"),
            })?;
            let answer: GrantAnswer =
                serde_json::from_slice(&bytes).map_err(|e| TokenError::Malformed {
                    detail: e.to_string(),
                })?;
            return checked_grant(answer);
        }
        let refusal: GrantError = response
            .body
            .as_ref()
            .ok()
            .and_then(|b| serde_json::from_slice(b).ok())
            .unwrap_or_default();
        let code = status.as_u16();
        Err(match refusal.error.as_str() {
            "invalid_grant" => TokenError::InvalidGrant {
                description: refusal.error_description,
            },
            "invalid_client" | "unauthorized_client" => TokenError::InvalidClient {
                error: refusal.error,
                description: refusal.error_description,
            },
            _ if code == 429 => TokenError::RateLimited {
                retry_after: retry_after(&response.headers),
            },
            _ if code == 408 || status.is_server_error() => TokenError::Transient {
                status: Some(code),
                detail: format!("{code} {}", refusal.error),
            },
            _ => TokenError::Rejected {
                status: code,
                error: refusal.error,
                description: refusal.error_description,
            },
        })
    }
}

type GetTokenOutput<'a> = Pin<
    Box<
        dyn Future<Output = Result<Option<String>, Box<dyn std::error::Error + Send + Sync>>>
            + Send
            + 'a,
    >,
>;

impl google_calendar3::common::GetToken for TokenProvider {
    fn get_token<'a>(&'a self, _scopes: &'a [&str]) -> GetTokenOutput<'a> {
        Box::pin(async move {
            match self.access_token().await {
                Ok(token) => Ok(Some(token.expose_secret().to_owned())),
                Err(e) => Err(Box::new(e) as Box<dyn std::error::Error + Send + Sync>),
            }
        })
    }
}

/// The longest lifetime we believe of an access token: Google's are an hour.
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Longest access token we send (Google's are a few hundred bytes).
const MAX_ACCESS_TOKEN_LEN: usize = 8 * 1024;

/// A token answer, range-checked: the token must be a header-safe string (a
/// CR/LF in it would break, or smuggle, a header) and its lifetime is capped,
/// so no arithmetic on `expires_in` can overflow.
fn checked_grant(answer: GrantAnswer) -> Result<(AccessToken, Duration), TokenError> {
    let token = answer.access_token;
    if token.is_empty()
        || token.len() > MAX_ACCESS_TOKEN_LEN
        || !token.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(TokenError::Malformed {
            detail: format!(
                "the access token is not a header-safe string ({} bytes)",
                token.len()
            ),
        });
    }
    // Google always states the lifetime; without it, assume its usual hour.
    let lifetime = Duration::from_secs(answer.expires_in.unwrap_or(3600)).min(MAX_TOKEN_LIFETIME);
    Ok((AccessToken::new(token), lifetime))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any token answer: no panic, a header-safe token and a lifetime
        /// that no clock arithmetic can overflow.
        #[test]
        fn any_token_answer_is_bounded(token in ".{0,64}", expires_in in any::<Option<u64>>()) {
            match checked_grant(GrantAnswer { access_token: token.clone(), expires_in }) {
                Ok((t, lifetime)) => {
                    prop_assert!(t.expose_secret().bytes().all(|b| b.is_ascii_graphic()));
                    prop_assert!(lifetime <= MAX_TOKEN_LIFETIME);
                    let _ = std::time::Instant::now() + lifetime;
                }
                Err(TokenError::Malformed { .. }) => prop_assert!(
                    token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic())
                ),
                Err(other) => prop_assert!(false, "{other:?}"),
            }
        }
    }

    #[test]
    fn cr_lf_in_a_token_is_refused() {
        let err = checked_grant(GrantAnswer {
            access_token: "a\r\nX-Evil: 1".into(),
            expires_in: Some(u64::MAX),
        })
        .unwrap_err();
        assert!(matches!(err, TokenError::Malformed { .. }));
    }
}
