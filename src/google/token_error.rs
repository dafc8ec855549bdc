//! Why a connection has no access token ([`TokenError`]), and how early a
//! cached token is renewed: shared by the refresh-token provider
//! ([`super::token`]), the delegated one ([`super::delegated`]), the error
//! classification ([`super::error`]) and the call metrics, none of which need
//! each other for it.

use std::time::Duration;

/// Why no access token could be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The refresh token is revoked, expired or unknown: re-authorise.
    #[error("invalid_grant: {description}")]
    InvalidGrant { description: String },
    /// The OAuth client id/secret are wrong (`invalid_client`,
    /// `unauthorized_client`).
    #[error("{error}: {description}")]
    InvalidClient { error: String, description: String },
    #[error("token endpoint rate limited")]
    RateLimited { retry_after: Option<Duration> },
    #[error("token endpoint unavailable: {detail}")]
    Transient { status: Option<u16>, detail: String },
    /// Our request budget had nothing left for the refresh: nothing was sent.
    #[error("no Google request budget left for a token refresh ({scope})")]
    OverBudget {
        retry_after: Duration,
        scope: super::BudgetScope,
    },
    #[error("token endpoint did not answer within {0:?}")]
    Timeout(Duration),
    #[error("token endpoint answer unreadable: {detail}")]
    Malformed { detail: String },
    /// The service account may not act as this member (`unauthorized_client`
    /// or `invalid_grant` on the JWT grant): the Workspace administrator
    /// removed the delegation, or the member left the organisation.
    #[error("domain-wide delegation refused for {subject} ({error}: {description})")]
    DelegationRefused {
        subject: String,
        error: String,
        description: String,
    },
    /// This worker lacks the setting the connection's kind of credentials
    /// needs (the OAuth client, or the service-account key).
    #[error("{var} is not set on this worker")]
    NotConfigured { var: &'static str },
    /// Any other refusal of the grant.
    #[error("token endpoint refused the grant ({status} {error}): {description}")]
    Rejected {
        status: u16,
        error: String,
        description: String,
    },
}

/// Refresh this long before Google's stated expiry, so a token never expires
/// between being handed out and being used.
pub(crate) const EXPIRY_MARGIN: Duration = Duration::from_secs(60);
