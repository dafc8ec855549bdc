//! Counts and times every request this process sends to Google:
//! `plansync_google_requests_total{operation, outcome}` and the
//! `plansync_google_request_duration_seconds{operation}` histogram.
//!
//! One wrapper around the request itself (a token refresh is its own
//! `token.refresh` request, not part of the Calendar call that needed it).
//! `outcome` is `ok` or the error's class, a fixed set of names, so no
//! answer from Google can grow the label set.

use std::future::Future;
use std::time::Instant;

use super::error::GoogleError;
use super::token_error::TokenError;
use crate::metrics as metric;

/// The `operation` label of a call of `kind`, as Google names the method.
pub(crate) fn operation(kind: super::budget::CallKind) -> &'static str {
    use super::budget::CallKind;
    match kind {
        CallKind::List => "events.list",
        CallKind::Get => "events.get",
        CallKind::Insert => "events.insert",
        CallKind::Patch => "events.patch",
        CallKind::Delete => "events.delete",
        CallKind::Watch => "events.watch",
        CallKind::Stop => "channels.stop",
        CallKind::Token => "token.refresh",
    }
}

/// The `outcome` label of a failed request.
pub(crate) trait Outcome {
    fn outcome(&self) -> &'static str;
}

impl Outcome for GoogleError {
    fn outcome(&self) -> &'static str {
        match self {
            GoogleError::RateLimited { .. } => "rate_limited",
            GoogleError::QuotaExhausted { .. } => "quota_exhausted",
            GoogleError::FullSyncRequired { .. } => "full_sync_required",
            GoogleError::PreconditionFailed => "precondition_failed",
            GoogleError::NotFound { .. } => "not_found",
            GoogleError::Gone { .. } => "gone",
            GoogleError::Duplicate { .. } => "duplicate",
            GoogleError::NeedsReauth { .. } => "needs_reauth",
            GoogleError::InvalidClient { .. } => "invalid_client",
            GoogleError::CalendarGone { .. } => "calendar_gone",
            GoogleError::Unauthorized { .. } => "unauthorized",
            GoogleError::Transient { .. } => "transient",
            GoogleError::Timeout(_) => "timeout",
            GoogleError::Malformed { .. } => "malformed",
            GoogleError::InvalidTimeZone(_) => "invalid_time_zone",
            GoogleError::Permanent { .. } => "permanent",
            GoogleError::DelegationRefused { .. } => "delegation_refused",
            GoogleError::OverBudget { .. } => "over_budget",
            GoogleError::NotConfigured { .. } => "not_configured",
        }
    }
}

impl Outcome for TokenError {
    fn outcome(&self) -> &'static str {
        match self {
            TokenError::InvalidGrant { .. } => "needs_reauth",
            TokenError::InvalidClient { .. } => "invalid_client",
            TokenError::RateLimited { .. } => "rate_limited",
            TokenError::Transient { .. } => "transient",
            TokenError::Timeout(_) => "timeout",
            TokenError::Malformed { .. } => "malformed",
            TokenError::Rejected { .. } => "permanent",
            TokenError::DelegationRefused { .. } => "delegation_refused",
            TokenError::OverBudget { .. } => "over_budget",
            TokenError::NotConfigured { .. } => "not_configured",
        }
    }
}

/// Runs one request to Google, counting it under `operation` and its
/// outcome and recording its latency.
pub(crate) async fn observe<T, E: Outcome>(
    operation: &'static str,
    request: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let started = Instant::now();
    let result = request.await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) => e.outcome(),
    };
    metrics::histogram!(metric::GOOGLE_DURATION, "operation" => operation)
        .record(started.elapsed().as_secs_f64());
    metrics::counter!(metric::GOOGLE_REQUESTS, "operation" => operation, "outcome" => outcome)
        .increment(1);
    result
}
