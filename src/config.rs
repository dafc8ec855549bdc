//! Typed settings read from the environment.
//!
//! Settings are grouped by the part of the worker that uses them, and each
//! command builds only the groups it needs: `migrate` never asks for the token
//! key, `connect` does. A missing or malformed variable is reported by name in
//! one line ([`ConfigError`]), as soon as a command asks for it. Secret values
//! (`GOOGLE_CLIENT_SECRET`, `PLANSYNC_TOKEN_KEY`, a password inside
//! `DATABASE_URL`) are held in redacting types and never echoed, not even in
//! an error about their own format.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use crate::crypto::TokenCipher;

/// Why a setting could not be read. The message names the variable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{var} is not set ({meaning})")]
    Missing {
        var: &'static str,
        meaning: &'static str,
    },
    #[error("{var} is invalid: {reason}")]
    Invalid { var: &'static str, reason: String },
}

/// A snapshot of the environment, so settings are read from one consistent
/// view and tests can build one without touching the process environment.
#[derive(Clone, Default)]
pub struct Env(HashMap<String, String>);

impl Env {
    pub fn from_process() -> Self {
        Env(std::env::vars().collect())
    }

    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Env(pairs
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect())
    }

    /// The value of `var`, treating an empty value as unset (the usual shell
    /// idiom `VAR= cmd`).
    pub fn raw(&self, var: &str) -> Option<&str> {
        self.0
            .get(var)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    fn string_or(&self, var: &str, default: &str) -> String {
        self.raw(var).unwrap_or(default).to_owned()
    }

    fn required(&self, var: &'static str, meaning: &'static str) -> Result<&str, ConfigError> {
        self.raw(var).ok_or(ConfigError::Missing { var, meaning })
    }

    fn parse_or<T>(&self, var: &'static str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        match self.raw(var) {
            None => Ok(default),
            Some(value) => value.trim().parse().map_err(|e| ConfigError::Invalid {
                var,
                reason: format!("{value:?}: {e}"),
            }),
        }
    }

    /// A whole number of seconds, at least `min`.
    fn secs_or(&self, var: &'static str, default: u64, min: u64) -> Result<Duration, ConfigError> {
        let secs: u64 = self.parse_or(var, default)?;
        if secs < min {
            return Err(ConfigError::Invalid {
                var,
                reason: format!("{secs} is below the minimum of {min} seconds"),
            });
        }
        Ok(Duration::from_secs(secs))
    }

    fn positive<T>(&self, var: &'static str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + Default + fmt::Display,
        T::Err: fmt::Display,
    {
        let value = self.parse_or(var, default)?;
        if value <= T::default() {
            return Err(ConfigError::Invalid {
                var,
                reason: format!("{value} must be greater than zero"),
            });
        }
        Ok(value)
    }
}

/// A database URL; its `Debug` hides the password.
#[derive(Clone)]
pub struct DatabaseUrl(SecretString);

impl DatabaseUrl {
    pub fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }

    /// The URL with any password replaced, for messages.
    pub fn redacted(&self) -> String {
        match url::Url::parse(self.expose_secret()) {
            Ok(mut url) => {
                if url.password().is_some() {
                    let _ = url.set_password(Some("REDACTED"));
                }
                url.to_string()
            }
            Err(_) => "<unparseable DATABASE_URL>".to_owned(),
        }
    }

    /// The name of the database this URL points at.
    pub fn database_name(&self) -> Option<String> {
        let url = url::Url::parse(self.expose_secret()).ok()?;
        let name = url.path().trim_start_matches('/');
        (!name.is_empty()).then(|| name.to_owned())
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({})", self.redacted())
    }
}

#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    pub url: DatabaseUrl,
}

impl DatabaseSettings {
    pub const DEFAULT_URL: &'static str = "postgres://postgres@127.0.0.1:5432/plansync";

    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let raw = env.string_or("DATABASE_URL", Self::DEFAULT_URL);
        let url = DatabaseUrl(SecretString::from(raw));
        match url::Url::parse(url.expose_secret()) {
            Ok(parsed) if matches!(parsed.scheme(), "postgres" | "postgresql") => {}
            Ok(parsed) => {
                return Err(ConfigError::Invalid {
                    var: "DATABASE_URL",
                    reason: format!(
                        "scheme {:?} is not postgres:// or postgresql://",
                        parsed.scheme()
                    ),
                })
            }
            Err(e) => {
                return Err(ConfigError::Invalid {
                    var: "DATABASE_URL",
                    reason: format!("not a URL ({e})"),
                })
            }
        }
        Ok(DatabaseSettings { url })
    }
}

/// How deltas are published (see DESIGN.md, Redis).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeltaMode {
    Json,
    SocketIo,
    Both,
}

impl DeltaMode {
    pub fn json(self) -> bool {
        matches!(self, DeltaMode::Json | DeltaMode::Both)
    }

    pub fn socketio(self) -> bool {
        matches!(self, DeltaMode::SocketIo | DeltaMode::Both)
    }
}

impl FromStr for DeltaMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "json" => Ok(DeltaMode::Json),
            "socketio" => Ok(DeltaMode::SocketIo),
            "both" => Ok(DeltaMode::Both),
            other => Err(format!("{other:?} is not one of json, socketio, both")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct RedisSettings {
    pub url: String,
    pub delta_mode: DeltaMode,
    pub prefix: String,
    pub socketio_key: String,
}

impl RedisSettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let url = env.string_or("REDIS_URL", "redis://127.0.0.1:6379");
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            return Err(ConfigError::Invalid {
                var: "REDIS_URL",
                reason: "must start with redis:// or rediss://".to_owned(),
            });
        }
        Ok(RedisSettings {
            url,
            delta_mode: env.parse_or("PLANSYNC_DELTA_MODE", DeltaMode::Json)?,
            prefix: env.raw("PLANSYNC_REDIS_PREFIX").unwrap_or("").to_owned(),
            socketio_key: env.string_or("PLANSYNC_SOCKETIO_KEY", "socket.io"),
        })
    }
}

/// The OAuth client and the Google endpoints.
///
/// The OAuth client is needed only for refresh-token connections, so
/// `GOOGLE_CLIENT_ID`/`GOOGLE_CLIENT_SECRET` may be unset (empty here); `run`
/// demands them while such connections exist
/// ([`GoogleSettings::require_oauth_client`]), as it demands
/// [`service_account_key`] while delegated ones do.
#[derive(Clone)]
pub struct GoogleSettings {
    pub calendar_base_url: String,
    pub token_url: String,
    /// Empty when unset.
    pub client_id: String,
    /// Empty when unset.
    pub client_secret: SecretString,
}

impl fmt::Debug for GoogleSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GoogleSettings")
            .field("calendar_base_url", &self.calendar_base_url)
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &"[REDACTED]")
            .finish()
    }
}

impl GoogleSettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let mut calendar_base_url = env.string_or(
            "GOOGLE_CALENDAR_BASE_URL",
            "https://www.googleapis.com/calendar/v3/",
        );
        check_http_url("GOOGLE_CALENDAR_BASE_URL", &calendar_base_url)?;
        // google-calendar3 joins paths onto the base URL: without the trailing
        // slash the last path segment would be replaced.
        if !calendar_base_url.ends_with('/') {
            calendar_base_url.push('/');
        }
        let token_url = env.string_or("GOOGLE_TOKEN_URL", "https://oauth2.googleapis.com/token");
        check_http_url("GOOGLE_TOKEN_URL", &token_url)?;
        Ok(GoogleSettings {
            calendar_base_url,
            token_url,
            client_id: env.string_or("GOOGLE_CLIENT_ID", ""),
            client_secret: SecretString::from(env.string_or("GOOGLE_CLIENT_SECRET", "")),
        })
    }

    /// Whether the OAuth client is configured.
    pub fn has_oauth_client(&self) -> bool {
        !self.client_id.is_empty() && !self.client_secret.expose_secret().is_empty()
    }

    /// Fails, naming the variable, unless the OAuth client refresh-token
    /// connections need is configured.
    pub fn require_oauth_client(&self) -> Result<(), ConfigError> {
        const MEANING: &str = "the OAuth client, needed while refresh-token connections exist";
        if self.client_id.is_empty() {
            return Err(ConfigError::Missing {
                var: "GOOGLE_CLIENT_ID",
                meaning: MEANING,
            });
        }
        if self.client_secret.expose_secret().is_empty() {
            return Err(ConfigError::Missing {
                var: "GOOGLE_CLIENT_SECRET",
                meaning: MEANING,
            });
        }
        Ok(())
    }
}

/// `GOOGLE_SERVICE_ACCOUNT_KEY`: the path of the service-account key file
/// delegated connections authenticate with. Only the path is a setting; the
/// file is read by `run` and its content kept nowhere else.
pub fn service_account_key(env: &Env) -> Option<std::path::PathBuf> {
    env.raw("GOOGLE_SERVICE_ACCOUNT_KEY")
        .map(std::path::PathBuf::from)
}

/// Fails, naming the variable, when delegated connections exist but no key
/// file is configured.
pub fn require_service_account_key(env: &Env) -> Result<std::path::PathBuf, ConfigError> {
    service_account_key(env).ok_or(ConfigError::Missing {
        var: "GOOGLE_SERVICE_ACCOUNT_KEY",
        meaning: "the service-account key file, needed while delegated connections exist",
    })
}

fn check_http_url(var: &'static str, value: &str) -> Result<(), ConfigError> {
    match url::Url::parse(value) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => Ok(()),
        Ok(u) => Err(ConfigError::Invalid {
            var,
            reason: format!("scheme {:?} is not http or https", u.scheme()),
        }),
        Err(e) => Err(ConfigError::Invalid {
            var,
            reason: format!("{value:?} is not a URL ({e})"),
        }),
    }
}

/// The key refresh tokens are encrypted with.
pub fn token_cipher(env: &Env) -> Result<TokenCipher, ConfigError> {
    let raw = env.required(
        "PLANSYNC_TOKEN_KEY",
        "base64 of 32 random bytes, the key refresh tokens are encrypted with",
    )?;
    TokenCipher::from_base64(raw).map_err(|reason| ConfigError::Invalid {
        var: "PLANSYNC_TOKEN_KEY",
        reason,
    })
}

/// The region this process belongs to: the one new connections get and the
/// only one whose jobs a worker claims.
pub fn region(env: &Env) -> Result<String, ConfigError> {
    let region = env.string_or("PLANSYNC_REGION", "default");
    if region.trim() != region || region.is_empty() {
        return Err(ConfigError::Invalid {
            var: "PLANSYNC_REGION",
            reason: "must be a non-empty name without surrounding spaces".to_owned(),
        });
    }
    Ok(region)
}

/// How long published outbox rows are kept before the relay prunes them
/// (`PLANSYNC_OUTBOX_RETENTION_SECS`, default one day; an extension of
/// DESIGN.md's table).
pub fn outbox_retention(env: &Env) -> Result<Duration, ConfigError> {
    env.secs_or("PLANSYNC_OUTBOX_RETENTION_SECS", 86_400, 0)
}

/// Retry and lease policy of the job queue.
#[derive(Debug, Clone)]
pub struct QueueSettings {
    pub max_attempts: i32,
    pub retry_base: Duration,
    pub lease: Duration,
}

impl QueueSettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(QueueSettings {
            max_attempts: env.positive("PLANSYNC_MAX_ATTEMPTS", 8)?,
            retry_base: env.secs_or("PLANSYNC_RETRY_BASE_SECS", 5, 0)?,
            lease: env.secs_or("PLANSYNC_LEASE_SECS", 60, 1)?,
        })
    }
}

/// Sync behaviour shared by pull and push.
#[derive(Debug, Clone)]
pub struct SyncSettings {
    pub bulk_threshold: usize,
    pub lookback_days: u32,
    pub poll_interval: Duration,
    pub poll_backstop: Duration,
}

impl SyncSettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(SyncSettings {
            bulk_threshold: env.positive("PLANSYNC_BULK_THRESHOLD", 50)?,
            lookback_days: env.parse_or("PLANSYNC_LOOKBACK_DAYS", 90)?,
            poll_interval: env.secs_or("PLANSYNC_POLL_INTERVAL_SECS", 300, 1)?,
            poll_backstop: env.secs_or("PLANSYNC_POLL_BACKSTOP_SECS", 3600, 1)?,
        })
    }
}

/// The runtime of `plansync run`.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub region: String,
    pub concurrency: usize,
    pub shutdown_grace: Duration,
    pub http_addr: SocketAddr,
    pub webhook_url: Option<String>,
}

impl WorkerSettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let webhook_url = env.raw("PLANSYNC_WEBHOOK_URL").map(str::to_owned);
        if let Some(url) = &webhook_url {
            check_http_url("PLANSYNC_WEBHOOK_URL", url)?;
        }
        Ok(WorkerSettings {
            region: region(env)?,
            concurrency: env.positive("PLANSYNC_CONCURRENCY", 16)?,
            shutdown_grace: env.secs_or("PLANSYNC_SHUTDOWN_GRACE_SECS", 30, 0)?,
            http_addr: env.parse_or(
                "PLANSYNC_HTTP_ADDR",
                SocketAddr::from(([127, 0, 0, 1], 8080)),
            )?,
            webhook_url,
        })
    }
}

/// How logs are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pretty" => Ok(LogFormat::Pretty),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("{other:?} is not one of json, pretty")),
        }
    }
}

pub fn log_format(env: &Env) -> Result<LogFormat, ConfigError> {
    env.parse_or("PLANSYNC_LOG_FORMAT", LogFormat::Pretty)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply_when_unset() {
        let env = Env::default();
        let db = DatabaseSettings::from_env(&env).unwrap();
        assert_eq!(db.url.expose_secret(), DatabaseSettings::DEFAULT_URL);
        let queue = QueueSettings::from_env(&env).unwrap();
        assert_eq!(queue.max_attempts, 8);
        assert_eq!(queue.retry_base, Duration::from_secs(5));
        assert_eq!(queue.lease, Duration::from_secs(60));
        let redis = RedisSettings::from_env(&env).unwrap();
        assert_eq!(redis.delta_mode, DeltaMode::Json);
        assert_eq!(redis.socketio_key, "socket.io");
        let worker = WorkerSettings::from_env(&env).unwrap();
        assert_eq!(worker.region, "default");
        assert_eq!(worker.http_addr.to_string(), "127.0.0.1:8080");
        let sync = SyncSettings::from_env(&env).unwrap();
        assert_eq!((sync.bulk_threshold, sync.lookback_days), (50, 90));
    }

    #[test]
    fn errors_name_the_variable() {
        let env = Env::from_pairs([("PLANSYNC_MAX_ATTEMPTS", "many")]);
        let err = QueueSettings::from_env(&env).unwrap_err().to_string();
        assert!(err.starts_with("PLANSYNC_MAX_ATTEMPTS is invalid"), "{err}");

        let err = token_cipher(&Env::default()).unwrap_err().to_string();
        assert!(err.starts_with("PLANSYNC_TOKEN_KEY is not set"), "{err}");

        let google = GoogleSettings::from_env(&Env::default()).unwrap();
        let err = google.require_oauth_client().unwrap_err().to_string();
        assert!(err.starts_with("GOOGLE_CLIENT_ID is not set"), "{err}");
        let err = require_service_account_key(&Env::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("GOOGLE_SERVICE_ACCOUNT_KEY is not set"),
            "{err}"
        );

        let env = Env::from_pairs([("PLANSYNC_DELTA_MODE", "xml")]);
        let err = RedisSettings::from_env(&env).unwrap_err().to_string();
        assert!(err.contains("PLANSYNC_DELTA_MODE"), "{err}");
    }

    #[test]
    fn secrets_stay_out_of_debug_and_errors() {
        let env = Env::from_pairs([
            ("DATABASE_URL", "postgres://app:hunter2@db:5432/app"),
            ("GOOGLE_CLIENT_ID", "id"),
            ("GOOGLE_CLIENT_SECRET", "s3cr3t-value"),
            ("PLANSYNC_TOKEN_KEY", "not base64 but s3cr3t"),
        ]);
        let db = DatabaseSettings::from_env(&env).unwrap();
        assert!(!format!("{db:?}").contains("hunter2"));
        let google = GoogleSettings::from_env(&env).unwrap();
        assert!(!format!("{google:?}").contains("s3cr3t"));
        let err = token_cipher(&env).unwrap_err().to_string();
        assert!(!err.contains("s3cr3t"), "{err}");
    }

    #[test]
    fn base_url_gets_its_trailing_slash() {
        let env = Env::from_pairs([
            ("GOOGLE_CALENDAR_BASE_URL", "http://127.0.0.1:9/calendar/v3"),
            ("GOOGLE_CLIENT_ID", "id"),
            ("GOOGLE_CLIENT_SECRET", "s"),
        ]);
        let google = GoogleSettings::from_env(&env).unwrap();
        assert_eq!(google.calendar_base_url, "http://127.0.0.1:9/calendar/v3/");
    }
}
