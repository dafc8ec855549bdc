//! The OAuth token endpoint (`grant_type=refresh_token`, and the JWT-bearer
//! grant of service accounts, see [`super::jwt`]) and the bearer tokens it
//! hands out.
//!
//! Access tokens live `ttl` (Google: 3599 s) and die with the refresh token
//! that minted them when it is revoked, as Google's revocation does, or with
//! the delegation of the member they were minted for when it is withdrawn.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use http::StatusCode;
use serde_json::{json, Value};

use super::errors::ApiError;
use super::jwt::{self, ServiceAccount, JWT_BEARER};

pub(crate) const SCOPE: &str = "https://www.googleapis.com/auth/calendar";

pub(crate) struct OAuth {
    pub client_id: String,
    pub client_secret: String,
    refresh_tokens: HashSet<String>,
    access: HashMap<String, Grant>,
    service_accounts: Vec<ServiceAccount>,
    pub ttl: Duration,
}

struct Grant {
    expires_at: Instant,
    refresh_token: Option<String>,
    /// The member a JWT grant was for.
    subject: Option<String>,
}

fn random_token(prefix: &str, len: usize) -> String {
    use rand::distributions::Alphanumeric;
    use rand::Rng;
    let tail: String = rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect();
    format!("{prefix}{tail}")
}

fn bearer(authorization: Option<&str>) -> Option<&str> {
    authorization
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .map(str::trim)
}

impl OAuth {
    pub fn new(client_id: String, client_secret: String, ttl: Duration) -> OAuth {
        OAuth {
            client_id,
            client_secret,
            refresh_tokens: HashSet::new(),
            access: HashMap::new(),
            service_accounts: Vec::new(),
            ttl,
        }
    }

    /// A client and one refresh token of random values, for a server started
    /// without fixtures.
    pub fn generated(ttl: Duration) -> OAuth {
        let mut oauth = OAuth::new(
            format!(
                "{}.apps.googleusercontent.com",
                random_token("", 24).to_lowercase()
            ),
            random_token("GOCSPX-", 28),
            ttl,
        );
        oauth.add_refresh_token(random_token("1//0g", 60));
        oauth
    }

    pub fn add_refresh_token(&mut self, token: String) {
        self.refresh_tokens.insert(token);
    }

    pub fn refresh_tokens(&self) -> Vec<String> {
        let mut out: Vec<String> = self.refresh_tokens.iter().cloned().collect();
        out.sort();
        out
    }

    /// Revokes a refresh token and every access token minted from it.
    pub fn revoke(&mut self, token: &str) -> bool {
        self.access
            .retain(|_, grant| grant.refresh_token.as_deref() != Some(token));
        self.refresh_tokens.remove(token)
    }

    /// A service account whose JWT grants are accepted for `subjects`.
    pub fn add_service_account(&mut self, account: ServiceAccount) {
        self.service_accounts
            .retain(|a| a.client_email != account.client_email);
        self.service_accounts.push(account);
    }

    /// Grants or withdraws domain-wide delegation for `subject` (on every
    /// service account, or on `client_email`'s); withdrawing also kills the
    /// member's access tokens. Returns whether a service account matched.
    pub fn set_delegation(
        &mut self,
        client_email: Option<&str>,
        subject: &str,
        allowed: bool,
    ) -> bool {
        let mut matched = false;
        for account in &mut self.service_accounts {
            if client_email.is_some_and(|e| e != account.client_email) {
                continue;
            }
            matched = true;
            if allowed {
                account.subjects.insert(subject.to_owned());
            } else {
                account.subjects.remove(subject);
            }
        }
        if !allowed {
            self.access
                .retain(|_, grant| grant.subject.as_deref() != Some(subject));
        }
        matched
    }

    /// An access token issued directly (tests that skip the token endpoint).
    pub fn issue(&mut self, refresh_token: Option<String>) -> String {
        self.issue_for(refresh_token, None)
    }

    fn issue_for(&mut self, refresh_token: Option<String>, subject: Option<String>) -> String {
        let token = random_token("ya29.a0", 120);
        self.access.insert(
            token.clone(),
            Grant {
                expires_at: Instant::now() + self.ttl,
                refresh_token,
                subject,
            },
        );
        token
    }

    fn answer(&self, access_token: String) -> Value {
        json!({
            "access_token": access_token,
            "expires_in": self.ttl.as_secs(),
            "scope": SCOPE,
            "token_type": "Bearer",
        })
    }

    /// Makes every access token issued so far answer 401.
    pub fn expire_all(&mut self) {
        self.access.clear();
    }

    /// The member a delegated access token was minted for.
    pub fn subject_of(&self, authorization: Option<&str>) -> Option<String> {
        self.access.get(bearer(authorization)?)?.subject.clone()
    }

    pub fn check_bearer(&self, authorization: Option<&str>) -> Result<(), ApiError> {
        let token = bearer(authorization).ok_or_else(ApiError::auth)?;
        match self.access.get(token) {
            Some(grant) if grant.expires_at > Instant::now() => Ok(()),
            _ => Err(ApiError::auth()),
        }
    }

    /// `POST /token`. Client credentials come from the form or HTTP Basic;
    /// a JWT-bearer grant needs none (the assertion is the credential) and
    /// must be addressed to `audience`, this endpoint's own URL.
    pub fn token(
        &mut self,
        form: &[(String, String)],
        basic: Option<(String, String)>,
        audience: &str,
    ) -> Result<Value, ApiError> {
        let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let grant_type = field("grant_type").ok_or_else(|| {
            ApiError::oauth(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "Invalid grant_type: ",
            )
        })?;
        if grant_type == JWT_BEARER {
            let Some(assertion) = field("assertion") else {
                return Err(ApiError::oauth(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "Missing required parameter: assertion",
                ));
            };
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            let subject = jwt::verify(&assertion, &self.service_accounts, audience, SCOPE, now)?;
            let access_token = self.issue_for(None, Some(subject));
            return Ok(self.answer(access_token));
        }
        let (client_id, client_secret) = match (field("client_id"), basic) {
            (Some(id), _) => (Some(id), field("client_secret")),
            (None, Some((id, secret))) => (Some(id), Some(secret)),
            (None, None) => (None, None),
        };
        let Some(client_id) = client_id else {
            return Err(ApiError::oauth(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Could not determine client ID from request.",
            ));
        };
        if client_id != self.client_id {
            return Err(ApiError::invalid_client());
        }
        if client_secret.as_deref() != Some(self.client_secret.as_str()) {
            return Err(ApiError::oauth(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "Unauthorized",
            ));
        }
        if grant_type != "refresh_token" {
            return Err(ApiError::oauth(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                &format!("Invalid grant_type: {grant_type}"),
            ));
        }
        let Some(refresh_token) = field("refresh_token") else {
            return Err(ApiError::oauth(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Missing required parameter: refresh_token",
            ));
        };
        if !self.refresh_tokens.contains(&refresh_token) {
            return Err(ApiError::invalid_grant());
        }
        let access_token = self.issue(Some(refresh_token));
        Ok(self.answer(access_token))
    }
}
