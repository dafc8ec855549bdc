//! Typed identifiers and tokens.
//!
//! Every id that crosses a module boundary is a newtype, so a `ConnectionId`
//! can never be passed where a `UserId` is expected. Tokens that grant access
//! (`RefreshToken`, `AccessToken`) wrap [`secrecy::SecretString`]: their `Debug`
//! prints `[REDACTED]` and reading them needs an explicit `expose_secret()`,
//! which keeps them out of logs and error messages.

use std::fmt;
use std::str::FromStr;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

macro_rules! int_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, sqlx::Type,
        )]
        #[serde(transparent)]
        #[sqlx(transparent)]
        pub struct $name(pub i64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = std::num::ParseIntError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.parse().map($name)
            }
        }
    };
}

macro_rules! string_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, sqlx::Type)]
        #[serde(transparent)]
        #[sqlx(transparent)]
        pub struct $name(pub String);

        impl $name {
            pub fn new(value: impl Into<String>) -> Self {
                $name(value.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(value: &str) -> Self {
                $name(value.to_owned())
            }
        }
    };
}

int_id!(
    /// `users.id` of the host application.
    UserId
);
int_id!(
    /// `plansync.connections.id`: one (user, Google calendar) pair.
    ConnectionId
);
int_id!(
    /// `appointments.id` of the host application.
    AppointmentId
);
int_id!(
    /// `plansync.jobs.id`.
    JobId
);

string_id!(
    /// A Google calendar id (`primary`, or an address-like id).
    CalendarId
);
string_id!(
    /// A Google event id (for instances of a series: `<masterId>_<start>`).
    EventId
);
string_id!(
    /// Google's opaque `nextSyncToken`, valid for one calendar and one set of
    /// list parameters.
    SyncToken
);
string_id!(
    /// A Google etag, as sent in `If-Match`.
    Etag
);
string_id!(
    /// The Workspace member (e-mail address) a delegated connection acts as:
    /// the `sub` of the service account's signed assertion.
    Subject
);

/// A user's OAuth refresh token. Stored only encrypted (see [`crate::crypto`]).
#[derive(Clone)]
pub struct RefreshToken(SecretString);

impl RefreshToken {
    pub fn new(value: impl Into<String>) -> Self {
        RefreshToken(SecretString::from(value.into()))
    }

    pub fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RefreshToken([REDACTED])")
    }
}

/// A short-lived OAuth access token.
#[derive(Clone)]
pub struct AccessToken(SecretString);

impl AccessToken {
    pub fn new(value: impl Into<String>) -> Self {
        AccessToken(SecretString::from(value.into()))
    }

    pub fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessToken([REDACTED])")
    }
}

/// The bearer token of `run`'s API routes. Checked in constant time: both
/// sides are hashed to SHA-256 first, so neither the content nor the length
/// of the token leaks through the comparison's timing.
#[derive(Clone)]
pub struct ApiToken(SecretString);

impl ApiToken {
    pub fn new(value: impl Into<String>) -> Self {
        ApiToken(SecretString::from(value.into()))
    }

    /// Whether `presented` is this token.
    pub fn verify(&self, presented: &str) -> bool {
        use sha2::{Digest, Sha256};
        use subtle::ConstantTimeEq;
        let expected = Sha256::digest(self.0.expose_secret().as_bytes());
        let presented = Sha256::digest(presented.as_bytes());
        expected.as_slice().ct_eq(presented.as_slice()).into()
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiToken([REDACTED])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_never_show_in_debug() {
        let token = RefreshToken::new("1//very-secret");
        assert_eq!(format!("{token:?}"), "RefreshToken([REDACTED])");
        assert!(!format!("{:?}", AccessToken::new("ya29.secret")).contains("secret"));
        assert!(!format!("{:?}", ApiToken::new("api-secret")).contains("secret"));
    }

    #[test]
    fn api_tokens_verify_only_themselves() {
        let token = ApiToken::new("0123456789abcdef");
        assert!(token.verify("0123456789abcdef"));
        assert!(!token.verify("0123456789abcdeF"));
        assert!(!token.verify("0123456789abcdef "));
        assert!(!token.verify(""));
    }

    #[test]
    fn ids_round_trip_through_text() {
        let id: ConnectionId = "42".parse().unwrap();
        assert_eq!(id, ConnectionId(42));
        assert_eq!(id.to_string(), "42");
        assert_eq!(
            serde_json::to_string(&CalendarId::from("primary")).unwrap(),
            "\"primary\""
        );
    }
}
