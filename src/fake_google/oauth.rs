//! The OAuth token endpoint (`grant_type=refresh_token` only) and the bearer
//! tokens it hands out.
//!
//! Access tokens live `ttl` (Google: 3599 s) and die with the refresh token
//! that minted them when it is revoked, as Google's revocation does.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use http::StatusCode;
use serde_json::{json, Value};

use super::errors::ApiError;

pub(crate) const SCOPE: &str = "https://www.googleapis.com/auth/calendar";

pub(crate) struct OAuth {
    pub client_id: String,
    pub client_secret: String,
    refresh_tokens: HashSet<String>,
    access: HashMap<String, Grant>,
    pub ttl: Duration,
}

struct Grant {
    expires_at: Instant,
    refresh_token: Option<String>,
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

impl OAuth {
    pub fn new(client_id: String, client_secret: String, ttl: Duration) -> OAuth {
        OAuth {
            client_id,
            client_secret,
            refresh_tokens: HashSet::new(),
            access: HashMap::new(),
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

    /// An access token issued directly (tests that skip the token endpoint).
    pub fn issue(&mut self, refresh_token: Option<String>) -> String {
        let token = random_token("ya29.a0", 120);
        self.access.insert(
            token.clone(),
            Grant {
                expires_at: Instant::now() + self.ttl,
                refresh_token,
            },
        );
        token
    }

    /// Makes every access token issued so far answer 401.
    pub fn expire_all(&mut self) {
        self.access.clear();
    }

    pub fn check_bearer(&self, authorization: Option<&str>) -> Result<(), ApiError> {
        let token = authorization
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .ok_or_else(ApiError::auth)?;
        match self.access.get(token) {
            Some(grant) if grant.expires_at > Instant::now() => Ok(()),
            _ => Err(ApiError::auth()),
        }
    }

    /// `POST /token`. Client credentials come from the form or HTTP Basic.
    pub fn token(
        &mut self,
        form: &[(String, String)],
        basic: Option<(String, String)>,
    ) -> Result<Value, ApiError> {
        let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let grant_type = field("grant_type").ok_or_else(|| {
            ApiError::oauth(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "Invalid grant_type: ",
            )
        })?;
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
        Ok(json!({
            "access_token": access_token,
            "expires_in": self.ttl.as_secs(),
            "scope": SCOPE,
            "token_type": "Bearer",
        }))
    }
}
