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
use std::path::PathBuf;
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

    /// This environment with `var` set to `value` (one setting pinned by a
    /// caller that runs a worker in-process).
    pub fn with(mut self, var: impl Into<String>, value: impl Into<String>) -> Self {
        self.0.insert(var.into(), value.into());
        self
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

    /// A number within `min..=max`: anything outside is refused naming the
    /// variable, so no later arithmetic on a setting can overflow.
    fn ranged<T>(&self, var: &'static str, default: T, min: T, max: T) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + fmt::Display + Copy,
        T::Err: fmt::Display,
    {
        let value = self.parse_or(var, default)?;
        if value < min || value > max {
            return Err(ConfigError::Invalid {
                var,
                reason: format!("{value} is outside the range {min} to {max}"),
            });
        }
        Ok(value)
    }

    /// A whole number of seconds within `min..=max`.
    fn secs_in(
        &self,
        var: &'static str,
        default: u64,
        min: u64,
        max: u64,
    ) -> Result<Duration, ConfigError> {
        self.ranged(var, default, min, max).map(Duration::from_secs)
    }
}

const DAY_SECS: u64 = 86_400;

/// A database URL; its `Debug` hides the password.
#[derive(Clone)]
pub struct DatabaseUrl(SecretString);

impl DatabaseUrl {
    pub fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }

    /// The URL with any password replaced, for messages.
    pub fn redacted(&self) -> String {
        redacted_url(self.expose_secret())
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

/// How deltas are published (see DESIGN.md, Redis): any non-empty set of
/// the `json`, `socketio` and `streams` formats, written as a comma-separated
/// list (`json,streams`); `both` stands for `json,socketio`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeltaMode {
    json: bool,
    socketio: bool,
    streams: bool,
}

impl DeltaMode {
    pub const JSON: DeltaMode = DeltaMode {
        json: true,
        socketio: false,
        streams: false,
    };
    pub const SOCKETIO: DeltaMode = DeltaMode {
        json: false,
        socketio: true,
        streams: false,
    };
    pub const BOTH: DeltaMode = DeltaMode {
        json: true,
        socketio: true,
        streams: false,
    };
    pub const STREAMS: DeltaMode = DeltaMode {
        json: false,
        socketio: false,
        streams: true,
    };

    /// `PUBLISH` of the JSON message on the per-user channel.
    pub fn json(self) -> bool {
        self.json
    }

    /// `PUBLISH` in the `@socket.io/redis-emitter` format.
    pub fn socketio(self) -> bool {
        self.socketio
    }

    /// `XADD` to the stream of `@socket.io/redis-streams-adapter`.
    pub fn streams(self) -> bool {
        self.streams
    }

    /// Every format of `self` and of `other`.
    pub fn with(self, other: DeltaMode) -> DeltaMode {
        DeltaMode {
            json: self.json || other.json,
            socketio: self.socketio || other.socketio,
            streams: self.streams || other.streams,
        }
    }
}

impl FromStr for DeltaMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let none = DeltaMode {
            json: false,
            socketio: false,
            streams: false,
        };
        let mut mode = none;
        for part in s.split(',').map(str::trim) {
            mode = mode.with(match part {
                "json" => DeltaMode::JSON,
                "socketio" => DeltaMode::SOCKETIO,
                "both" => DeltaMode::BOTH,
                "streams" => DeltaMode::STREAMS,
                other => {
                    return Err(format!(
                        "{other:?} is not one of json, socketio, both, streams \
                         (or a comma-separated list of them)"
                    ))
                }
            });
        }
        Ok(mode)
    }
}

/// `raw` with its password, if any, replaced, for messages and logs.
pub fn redacted_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut url) => {
            if url.password().is_some() {
                let _ = url.set_password(Some("REDACTED"));
            }
            url.to_string()
        }
        Err(_) => "<unparseable URL>".to_owned(),
    }
}

#[derive(Clone)]
pub struct RedisSettings {
    /// `redis://` or `rediss://` (TLS); may hold a password, so it is shown
    /// only through [`redacted_url`].
    pub url: String,
    pub delta_mode: DeltaMode,
    pub prefix: String,
    pub socketio_key: String,
    /// The stream of the `streams` mode (`PLANSYNC_SOCKETIO_STREAM`).
    pub socketio_stream: String,
    /// Its approximate `MAXLEN` trim (`PLANSYNC_SOCKETIO_STREAM_MAXLEN`).
    pub socketio_stream_maxlen: u64,
    /// PEM CA certificates trusted for `rediss://` besides the system roots
    /// (`PLANSYNC_REDIS_CA_FILE`).
    pub ca_file: Option<PathBuf>,
}

impl fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &redacted_url(&self.url))
            .field("delta_mode", &self.delta_mode)
            .field("prefix", &self.prefix)
            .field("socketio_key", &self.socketio_key)
            .field("socketio_stream", &self.socketio_stream)
            .field("socketio_stream_maxlen", &self.socketio_stream_maxlen)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// The settings of an empty environment: a local Redis, `json` mode.
impl Default for RedisSettings {
    fn default() -> Self {
        RedisSettings::from_env(&Env::default()).expect("the defaults are valid")
    }
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
        let ca_file = env.raw("PLANSYNC_REDIS_CA_FILE").map(PathBuf::from);
        // A CA file with a plain URL means TLS was intended and is not on:
        // refuse rather than talk in the clear.
        if ca_file.is_some() && !url.starts_with("rediss://") {
            return Err(ConfigError::Invalid {
                var: "PLANSYNC_REDIS_CA_FILE",
                reason: format!(
                    "is set but REDIS_URL ({}) is not a rediss:// (TLS) URL",
                    redacted_url(&url)
                ),
            });
        }
        Ok(RedisSettings {
            url,
            delta_mode: env.parse_or("PLANSYNC_DELTA_MODE", DeltaMode::JSON)?,
            prefix: env.raw("PLANSYNC_REDIS_PREFIX").unwrap_or("").to_owned(),
            socketio_key: env.string_or("PLANSYNC_SOCKETIO_KEY", "socket.io"),
            socketio_stream: env.string_or("PLANSYNC_SOCKETIO_STREAM", "socket.io"),
            socketio_stream_maxlen: env.ranged(
                "PLANSYNC_SOCKETIO_STREAM_MAXLEN",
                10_000,
                1,
                100_000_000,
            )?,
            ca_file,
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
    env.secs_in(
        "PLANSYNC_OUTBOX_RETENTION_SECS",
        DAY_SECS,
        0,
        366 * DAY_SECS,
    )
}

/// Deltas per published message at most (`PLANSYNC_MAX_DELTAS_PER_MESSAGE`,
/// default 100).
pub fn max_deltas_per_message(env: &Env) -> Result<usize, ConfigError> {
    env.ranged("PLANSYNC_MAX_DELTAS_PER_MESSAGE", 100, 1, 100_000)
}

/// The bearer token of `run`'s API routes (`PLANSYNC_API_TOKEN`); unset, the
/// routes are not served at all.
pub fn api_token(env: &Env) -> Result<Option<crate::ids::ApiToken>, ConfigError> {
    match env.raw("PLANSYNC_API_TOKEN") {
        None => Ok(None),
        Some(raw) if raw.trim() != raw || raw.len() < 16 => Err(ConfigError::Invalid {
            var: "PLANSYNC_API_TOKEN",
            reason: "must be at least 16 characters, without surrounding spaces".to_owned(),
        }),
        Some(raw) => Ok(Some(crate::ids::ApiToken::new(raw))),
    }
}

/// Retry and lease policy of the job queue.
#[derive(Debug, Clone)]
pub struct QueueSettings {
    pub max_attempts: i32,
    pub retry_base: Duration,
    pub lease: Duration,
    /// The longest a failing connection waits before its next pull
    /// (`PLANSYNC_POLL_BACKSTOP_SECS`).
    pub connection_backoff_cap: Duration,
    /// How long dead jobs are kept (`PLANSYNC_DEAD_JOB_RETENTION_SECS`).
    pub dead_retention: Duration,
}

impl QueueSettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(QueueSettings {
            max_attempts: env.ranged("PLANSYNC_MAX_ATTEMPTS", 8, 1, 1000)?,
            retry_base: env.secs_in("PLANSYNC_RETRY_BASE_SECS", 5, 0, 3600)?,
            lease: env.secs_in("PLANSYNC_LEASE_SECS", 60, 1, DAY_SECS)?,
            connection_backoff_cap: env.secs_in(
                "PLANSYNC_POLL_BACKSTOP_SECS",
                3600,
                1,
                7 * DAY_SECS,
            )?,
            dead_retention: env.secs_in(
                "PLANSYNC_DEAD_JOB_RETENTION_SECS",
                7 * DAY_SECS,
                0,
                3660 * DAY_SECS,
            )?,
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
    /// Pages one pull may list before it fails (`PLANSYNC_MAX_PAGES`).
    pub max_pages: u32,
}

impl SyncSettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(SyncSettings {
            bulk_threshold: env.ranged("PLANSYNC_BULK_THRESHOLD", 50, 1, 1_000_000)?,
            lookback_days: env.ranged("PLANSYNC_LOOKBACK_DAYS", 90, 0, 36_500)?,
            poll_interval: env.secs_in("PLANSYNC_POLL_INTERVAL_SECS", 300, 1, 7 * DAY_SECS)?,
            poll_backstop: env.secs_in("PLANSYNC_POLL_BACKSTOP_SECS", 3600, 1, 7 * DAY_SECS)?,
            max_pages: env.ranged("PLANSYNC_MAX_PAGES", 4000, 1, 1_000_000)?,
        })
    }
}

/// Google's request budget, shared by every worker of every region using the
/// same OAuth client (see [`crate::quota`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuotaSettings {
    /// Requests per minute for the whole project (`PLANSYNC_GOOGLE_QPM`).
    pub project_per_min: u32,
    /// Requests per minute per connection (`PLANSYNC_GOOGLE_USER_QPM`).
    pub user_per_min: u32,
    /// The share of the project budget polling may use
    /// (`PLANSYNC_GOOGLE_POLL_SHARE`); intervals stretch beyond it.
    pub poll_share: f64,
}

impl Default for QuotaSettings {
    fn default() -> Self {
        QuotaSettings::from_env(&Env::default()).expect("the defaults are valid")
    }
}

impl QuotaSettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let poll_share: f64 = env.ranged("PLANSYNC_GOOGLE_POLL_SHARE", 0.5, 0.01, 1.0)?;
        // NaN passes every comparison of `ranged`: refuse it by name.
        if !poll_share.is_finite() {
            return Err(ConfigError::Invalid {
                var: "PLANSYNC_GOOGLE_POLL_SHARE",
                reason: "must be a number from 0.01 to 1".to_owned(),
            });
        }
        Ok(QuotaSettings {
            project_per_min: env.ranged("PLANSYNC_GOOGLE_QPM", 9_000, 1, 100_000_000)?,
            user_per_min: env.ranged("PLANSYNC_GOOGLE_USER_QPM", 500, 1, 1_000_000)?,
            poll_share,
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
    /// Postgres connections of the worker (`PLANSYNC_DB_POOL`), independent
    /// of its concurrency: no job holds one while it waits on Google.
    pub db_pool: u32,
}

impl WorkerSettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let webhook_url = env.raw("PLANSYNC_WEBHOOK_URL").map(str::to_owned);
        if let Some(url) = &webhook_url {
            check_http_url("PLANSYNC_WEBHOOK_URL", url)?;
        }
        Ok(WorkerSettings {
            region: region(env)?,
            concurrency: env.ranged("PLANSYNC_CONCURRENCY", 16, 1, 4096)?,
            shutdown_grace: env.secs_in("PLANSYNC_SHUTDOWN_GRACE_SECS", 30, 0, DAY_SECS)?,
            http_addr: env.parse_or(
                "PLANSYNC_HTTP_ADDR",
                SocketAddr::from(([127, 0, 0, 1], 8080)),
            )?,
            webhook_url,
            db_pool: env.ranged("PLANSYNC_DB_POOL", 10, 2, 1000)?,
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
        assert_eq!(redis.delta_mode, DeltaMode::JSON);
        assert_eq!(redis.socketio_stream, "socket.io");
        assert_eq!(redis.socketio_stream_maxlen, 10_000);
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
    fn the_api_token_is_optional_but_never_weak_and_messages_are_bounded() {
        assert!(api_token(&Env::default()).unwrap().is_none());
        let token = api_token(&Env::from_pairs([(
            "PLANSYNC_API_TOKEN",
            "a-long-enough-token",
        )]))
        .unwrap()
        .unwrap();
        assert!(token.verify("a-long-enough-token"));
        let err = api_token(&Env::from_pairs([("PLANSYNC_API_TOKEN", "short")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("PLANSYNC_API_TOKEN is invalid") && !err.contains("short"),
            "{err}"
        );
        assert_eq!(max_deltas_per_message(&Env::default()).unwrap(), 100);
        let zero = Env::from_pairs([("PLANSYNC_MAX_DELTAS_PER_MESSAGE", "0")]);
        assert!(max_deltas_per_message(&zero).is_err());
    }

    #[test]
    fn quota_settings_have_defaults_and_ranges() {
        let q = QuotaSettings::from_env(&Env::default()).unwrap();
        assert_eq!((q.project_per_min, q.user_per_min), (9_000, 500));
        assert_eq!(q.poll_share, 0.5);
        for (var, bad) in [
            ("PLANSYNC_GOOGLE_QPM", "0"),
            ("PLANSYNC_GOOGLE_QPM", "-5"),
            ("PLANSYNC_GOOGLE_USER_QPM", "0"),
            ("PLANSYNC_GOOGLE_USER_QPM", "99999999999"),
            ("PLANSYNC_GOOGLE_POLL_SHARE", "0"),
            ("PLANSYNC_GOOGLE_POLL_SHARE", "1.5"),
            ("PLANSYNC_GOOGLE_POLL_SHARE", "NaN"),
            ("PLANSYNC_GOOGLE_POLL_SHARE", "inf"),
        ] {
            let err = QuotaSettings::from_env(&Env::from_pairs([(var, bad)]))
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(&format!("{var} is invalid")), "{err}");
        }
        let env = Env::from_pairs([
            ("PLANSYNC_GOOGLE_QPM", "120"),
            ("PLANSYNC_GOOGLE_USER_QPM", "30"),
            ("PLANSYNC_GOOGLE_POLL_SHARE", "0.25"),
        ]);
        let q = QuotaSettings::from_env(&env).unwrap();
        assert_eq!(
            (q.project_per_min, q.user_per_min, q.poll_share),
            (120, 30, 0.25)
        );
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

    #[test]
    fn delta_mode_takes_a_list_and_keeps_the_old_values() {
        let mode = |s: &str| s.parse::<DeltaMode>();
        assert_eq!(mode("json"), Ok(DeltaMode::JSON));
        assert_eq!(mode("socketio"), Ok(DeltaMode::SOCKETIO));
        assert_eq!(mode("both"), Ok(DeltaMode::BOTH));
        assert_eq!(mode("json,socketio"), Ok(DeltaMode::BOTH));
        let m = mode("json, streams").unwrap();
        assert!(m.json() && m.streams() && !m.socketio());
        let m = mode("both,streams").unwrap();
        assert!(m.json() && m.streams() && m.socketio());
        assert!(mode("json,").is_err());
        assert!(mode("json,xml").unwrap_err().contains("\"xml\""));
    }

    #[test]
    fn redis_tls_settings_are_checked_and_the_password_stays_hidden() {
        let env = Env::from_pairs([
            ("REDIS_URL", "redis://:hunter2@cache:6379"),
            ("PLANSYNC_REDIS_CA_FILE", "/etc/ca.pem"),
        ]);
        let err = RedisSettings::from_env(&env).unwrap_err().to_string();
        assert!(
            err.starts_with("PLANSYNC_REDIS_CA_FILE is invalid"),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "{err}");

        let env = Env::from_pairs([
            ("REDIS_URL", "rediss://:hunter2@cache:6380"),
            ("PLANSYNC_REDIS_CA_FILE", "/etc/ca.pem"),
            ("PLANSYNC_SOCKETIO_STREAM_MAXLEN", "500"),
        ]);
        let redis = RedisSettings::from_env(&env).unwrap();
        assert_eq!(redis.ca_file, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(redis.socketio_stream_maxlen, 500);
        let debug = format!("{redis:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("rediss://:REDACTED@cache:6380"), "{debug}");

        let env = Env::from_pairs([("PLANSYNC_SOCKETIO_STREAM_MAXLEN", "0")]);
        assert!(RedisSettings::from_env(&env).is_err());
    }
}
