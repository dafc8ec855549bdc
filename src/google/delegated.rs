//! Access tokens for delegated connections: Workspace domain-wide delegation
//! through the deployment's service account.
//!
//! [`ServiceAccount`] owns the key file `GOOGLE_SERVICE_ACCOUNT_KEY` names,
//! read once by `run` and validated there (a worker with an unusable key
//! refuses to start rather than failing every job). The private key lives only
//! in this process's memory: no `Debug`, log line or error message carries it.
//!
//! Tokens come from yup-oauth2's service-account flow: it signs an RS256 JWT
//! (`iss` the service account, `sub` the member, `scope` Calendar, `aud` the
//! key file's own `token_uri`) and posts it there. [`DelegatedTokens`] is one
//! member's cache, shared by every connection acting as that member, and
//! refreshes [`EXPIRY_MARGIN`] before the stated expiry.
//!
//! yup-oauth2 is guarded on two sides. Its debug logs print the signed
//! assertion and the token answer, so `telemetry` caps its log target at
//! info whatever `RUST_LOG` says. Its expiry arithmetic is unchecked
//! (`now + expires_in` panics out of range): each fetch runs in a task of its
//! own so such a panic becomes [`TokenError::Malformed`], and the lifetime we
//! keep is clamped to Google's hour, so an absurd but representable
//! `expires_in` cannot pin a token either.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hyper_util::rt::TokioExecutor;
use tokio::sync::Mutex;
use tokio::time::Instant;
use yup_oauth2::authenticator::Authenticator;
use yup_oauth2::error::AuthErrorCode;
use yup_oauth2::{CustomHyperClientBuilder, ServiceAccountAuthenticator, ServiceAccountKey};

use super::http::Connector;
use super::token_error::{TokenError, EXPIRY_MARGIN};
use crate::ids::{AccessToken, Subject};

/// The one scope delegated connections ask for.
pub const CALENDAR_SCOPE: &str = "https://www.googleapis.com/auth/calendar";

/// Google's access tokens live an hour; a longer stated lifetime is not
/// believed.
const MAX_LIFETIME: Duration = Duration::from_secs(3600);

/// Far above any real key file (Google's are about 2.4 KB).
const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;

/// The key file could not be used. Messages name the file, never its content.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("GOOGLE_SERVICE_ACCOUNT_KEY: cannot read {path}")]
    Unreadable {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("GOOGLE_SERVICE_ACCOUNT_KEY: {path} is not a service-account key file: {reason}")]
    Invalid { path: String, reason: String },
}

/// yup-oauth2's client type over our connector: the same rustls-on-ring
/// setup as every other Google call.
type YupClient = hyper_util::client::legacy::Client<Connector, String>;

struct Key {
    key: ServiceAccountKey,
    http: YupClient,
    timeout: Duration,
}

/// The deployment's service account. Cheap to clone.
#[derive(Clone)]
pub struct ServiceAccount {
    key: Arc<Key>,
    members: Arc<std::sync::Mutex<HashMap<Subject, DelegatedTokens>>>,
}

impl std::fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("client_email", &self.key.key.client_email)
            .field("token_uri", &self.key.key.token_uri)
            .finish_non_exhaustive()
    }
}

impl ServiceAccount {
    /// Reads and checks the key file: Google's JSON, a usable RSA private key,
    /// an http(s) `token_uri`.
    pub async fn load(
        path: &Path,
        connector: Connector,
        timeout: Duration,
    ) -> Result<ServiceAccount, KeyFileError> {
        let shown = path.display().to_string();
        let unreadable = |source| KeyFileError::Unreadable {
            path: shown.clone(),
            source,
        };
        let invalid = |reason: String| KeyFileError::Invalid {
            path: shown.clone(),
            reason,
        };
        // A key file is ~2.4 KB; a path pointing at something endless (a
        // device, a log) must not be read to exhaustion.
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_KEY_FILE_BYTES + 1).read_to_end(&mut bytes))
            .map_err(unreadable)?;
        if bytes.len() as u64 > MAX_KEY_FILE_BYTES {
            return Err(invalid(format!("larger than {MAX_KEY_FILE_BYTES} bytes")));
        }
        // serde's messages can quote the value they choke on: keep only where.
        let key: ServiceAccountKey = serde_json::from_slice(&bytes).map_err(|e| {
            invalid(format!(
                "{:?} JSON error at line {}, column {}",
                e.classify(),
                e.line(),
                e.column()
            ))
        })?;
        if let Some(kind) = key.key_type.as_deref().filter(|k| *k != "service_account") {
            return Err(invalid(format!(
                "type is {kind:?}, not \"service_account\""
            )));
        }
        match url::Url::parse(&key.token_uri) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            _ => return Err(invalid("token_uri is not an http(s) URL".to_owned())),
        }
        let http = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        let account = ServiceAccount {
            key: Arc::new(Key { key, http, timeout }),
            members: Arc::default(),
        };
        // Building an authenticator parses the private key: a broken key
        // fails here, at start, not on the first job.
        account
            .key
            .authenticator(&Subject::new("key-check@invalid"))
            .await
            .map_err(|e| invalid(e.to_string()))?;
        Ok(account)
    }

    pub fn client_email(&self) -> &str {
        &self.key.key.client_email
    }

    pub fn token_uri(&self) -> &str {
        &self.key.key.token_uri
    }

    /// The token cache of one member, shared by all its connections.
    pub fn tokens_for(&self, subject: &Subject) -> DelegatedTokens {
        let mut members = self.members.lock().unwrap_or_else(|e| e.into_inner());
        members
            .entry(subject.clone())
            .or_insert_with(|| DelegatedTokens {
                inner: Arc::new(Member {
                    key: Arc::clone(&self.key),
                    subject: subject.clone(),
                    state: Mutex::new(State::default()),
                }),
            })
            .clone()
    }
}

impl Key {
    async fn authenticator(&self, subject: &Subject) -> std::io::Result<Authenticator<Connector>> {
        ServiceAccountAuthenticator::with_client(
            self.key.clone(),
            CustomHyperClientBuilder::from(self.http.clone()),
        )
        .subject(subject.as_str())
        .with_timeout(self.timeout)
        .build()
        .await
    }
}

#[derive(Default)]
struct State {
    authenticator: Option<Authenticator<Connector>>,
    cached: Option<(AccessToken, Instant)>,
}

struct Member {
    key: Arc<Key>,
    subject: Subject,
    state: Mutex<State>,
}

/// One member's access tokens. Clones share the cache; a fetch holds its
/// lock, so concurrent jobs of one member cause one grant.
#[derive(Clone)]
pub struct DelegatedTokens {
    inner: Arc<Member>,
}

impl std::fmt::Debug for DelegatedTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DelegatedTokens")
            .field("subject", &self.inner.subject)
            .field("token_uri", &self.inner.key.key.token_uri)
            .finish_non_exhaustive()
    }
}

impl DelegatedTokens {
    pub fn subject(&self) -> &Subject {
        &self.inner.subject
    }

    /// A valid access token: the cached one until [`EXPIRY_MARGIN`] before
    /// its expiry, else a fresh one from the key file's `token_uri`.
    pub async fn access_token(&self) -> Result<AccessToken, TokenError> {
        let member = &self.inner;
        let mut state = member.state.lock().await;
        if let Some((token, refresh_at)) = &state.cached {
            if Instant::now() < *refresh_at {
                return Ok(token.clone());
            }
        }
        state.cached = None;
        let authenticator = match &state.authenticator {
            Some(a) => a.clone(),
            None => {
                let built = member
                    .key
                    .authenticator(&member.subject)
                    .await
                    .map_err(|e| TokenError::Malformed {
                        detail: format!("service-account key unusable: {e}"),
                    })?;
                state.authenticator = Some(built.clone());
                built
            }
        };
        let (token, lifetime) = fetch(authenticator, &member.subject, member.key.timeout).await?;
        let margin = EXPIRY_MARGIN.min(lifetime / 2);
        state.cached = Some((token.clone(), Instant::now() + lifetime - margin));
        Ok(token)
    }

    /// Forgets the cached token (Google answered 401 with it).
    pub async fn invalidate(&self) {
        self.inner.state.lock().await.cached = None;
    }
}

/// One JWT grant, in a task of its own so a panic inside yup-oauth2 (its
/// unchecked `now + expires_in`) is a token error, and under one deadline for
/// the whole exchange.
async fn fetch(
    authenticator: Authenticator<Connector>,
    subject: &Subject,
    timeout: Duration,
) -> Result<(AccessToken, Duration), TokenError> {
    let task = tokio::spawn(async move {
        // Our own cache decides when to refresh; yup-oauth2's is bypassed.
        authenticator.force_refreshed_token(&[CALENDAR_SCOPE]).await
    });
    let abort = task.abort_handle();
    let joined = match tokio::time::timeout(timeout, task).await {
        Ok(joined) => joined,
        Err(_) => {
            abort.abort();
            return Err(TokenError::Timeout(timeout));
        }
    };
    let answer = match joined {
        Ok(answer) => answer,
        Err(e) if e.is_panic() => {
            return Err(TokenError::Malformed {
                detail: "the token endpoint's answer made the service-account flow fail \
                         (an expires_in out of range)"
                    .to_owned(),
            })
        }
        Err(e) => {
            return Err(TokenError::Transient {
                status: None,
                detail: format!("token fetch cancelled: {e}"),
            })
        }
    };
    let token = answer.map_err(|e| classify(e, subject))?;
    let value = token
        .token()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| TokenError::Malformed {
            detail: "the answer carries no access_token".to_owned(),
        })?;
    // The same rule as for refresh-token grants: the token goes into a
    // header, so a CR/LF (or anything unprintable) must never get that far.
    if value.len() > 8 * 1024 || !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(TokenError::Malformed {
            detail: format!(
                "the access token is not a header-safe string ({} bytes)",
                value.len()
            ),
        });
    }
    let lifetime = lifetime(token.expiration_time().map(|t| t.unix_timestamp()))?;
    Ok((AccessToken::new(value), lifetime))
}

/// How long a token stated to expire at `expires_at` (Unix seconds) may be
/// used: Google's hour when unstated, at most an hour, and an error when it
/// is already expired (a lifetime of zero would refresh in a loop).
fn lifetime(expires_at: Option<i64>) -> Result<Duration, TokenError> {
    let Some(expires_at) = expires_at else {
        return Ok(MAX_LIFETIME);
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let left = expires_at.saturating_sub(now);
    if left <= 0 {
        return Err(TokenError::Malformed {
            detail: "the token endpoint answered an already expired token".to_owned(),
        });
    }
    Ok(Duration::from_secs(left as u64).min(MAX_LIFETIME))
}

/// yup-oauth2's error as ours. The token endpoint's own `error` decides:
/// `unauthorized_client`/`invalid_grant` on a JWT grant mean the delegation
/// is refused for this member.
fn classify(err: yup_oauth2::Error, subject: &Subject) -> TokenError {
    use yup_oauth2::client::SendError;
    use yup_oauth2::Error as E;
    match err {
        E::AuthError(auth) => {
            let error = auth.error.as_str().to_owned();
            let description = auth.error_description.unwrap_or_default();
            match auth.error {
                AuthErrorCode::UnauthorizedClient | AuthErrorCode::InvalidGrant => {
                    TokenError::DelegationRefused {
                        subject: subject.to_string(),
                        error,
                        description,
                    }
                }
                // The service account itself (its key) was refused: an
                // operator's fix, retried meanwhile like a bad OAuth client.
                AuthErrorCode::InvalidClient => TokenError::Transient {
                    status: None,
                    detail: format!(
                        "the service account was refused ({error}: {description}): \
                         check GOOGLE_SERVICE_ACCOUNT_KEY"
                    ),
                },
                AuthErrorCode::InvalidRequest
                | AuthErrorCode::UnsupportedGrantType
                | AuthErrorCode::InvalidScope
                | AuthErrorCode::AccessDenied
                | AuthErrorCode::ExpiredToken => TokenError::Rejected {
                    status: 400,
                    error,
                    description,
                },
                // yup-oauth2 drops the HTTP status: an unknown code (a rate
                // limit, a backend error) is worth another try.
                AuthErrorCode::Other(_) => TokenError::Transient {
                    status: None,
                    detail: format!("{error}: {description}"),
                },
            }
        }
        E::HttpClientError(SendError::Timeout) => TokenError::Transient {
            status: None,
            detail: "the token endpoint did not answer in time".to_owned(),
        },
        E::HttpClientError(e) => TokenError::Transient {
            status: None,
            detail: e.to_string(),
        },
        E::HttpError(e) => TokenError::Transient {
            status: None,
            detail: e.to_string(),
        },
        // Includes an HTML error page of a failing proxy: unreadable, retried.
        E::JSONError(e) => TokenError::Malformed {
            detail: format!("{:?} JSON error at line {}", e.classify(), e.line()),
        },
        E::MissingAccessToken => TokenError::Malformed {
            detail: "the answer carries no access_token".to_owned(),
        },
        other => TokenError::Malformed {
            detail: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_are_clamped_and_expired_answers_refused() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert_eq!(lifetime(None).unwrap(), MAX_LIFETIME);
        assert_eq!(lifetime(Some(i64::MAX)).unwrap(), MAX_LIFETIME);
        let l = lifetime(Some(now + 600)).unwrap();
        assert!(l <= Duration::from_secs(600) && l >= Duration::from_secs(598));
        assert!(matches!(
            lifetime(Some(now - 1)),
            Err(TokenError::Malformed { .. })
        ));
        assert!(matches!(
            lifetime(Some(i64::MIN)),
            Err(TokenError::Malformed { .. })
        ));
    }
}
