//! Classification of everything that can go wrong talking to Google.
//!
//! Every failure of a Calendar call or of a token refresh ends up as one
//! [`GoogleError`] variant, and the variant alone decides what the caller does
//! next ([`GoogleError::next_step`]): back off without spending an attempt,
//! retry, full-resync, mark the connection, or give up on the item. Google's
//! own `reason` and `message` are kept for status and logs; the raw error JSON
//! is not.

use std::time::Duration;

use http::StatusCode;
use serde_json::Value;

use super::retry_after::retry_after;
use super::token_error::TokenError;

/// A failed Google call, classified by what should happen next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GoogleError {
    /// 429, or 403 `rateLimitExceeded`/`userRateLimitExceeded`/`quotaExceeded`:
    /// snooze (honouring `retry_after` when Google sent it) without spending
    /// one of the job's attempts.
    #[error("rate limited by Google ({reason}){}", fmt_retry_after(*.retry_after))]
    RateLimited {
        retry_after: Option<Duration>,
        reason: String,
    },
    /// Our own request budget ([`super::CallBudget`]) has nothing left for
    /// this call: nothing was sent. Snooze for `retry_after` without spending
    /// an attempt.
    #[error("no Google request budget left ({scope}): next in {}s", retry_after.as_secs_f64())]
    OverBudget {
        retry_after: Duration,
        scope: super::BudgetScope,
    },
    /// 403/429 `quotaExceeded`/`dailyLimitExceeded`: the project's daily or
    /// per-project quota is spent, which lasts hours. The connection backs off
    /// as a whole (15 minutes doubling up to 6 hours) without spending
    /// attempts.
    #[error("Google's quota is exhausted ({reason}): backing off for hours")]
    QuotaExhausted { reason: String },
    /// 410 on a list (`fullSyncRequired`, `updatedMinTooLongAgo`): drop the sync
    /// token and full-sync.
    #[error("Google requires a full sync ({reason})")]
    FullSyncRequired { reason: String },
    /// 412 `conditionNotMet`: the event changed since the etag we sent.
    #[error("the event changed in Google since our etag (412 conditionNotMet)")]
    PreconditionFailed,
    /// 404 on an event (or a notification channel).
    #[error("Google has no such event (404 {reason})")]
    NotFound { reason: String },
    /// 410 `deleted` on an event: it was already deleted. A delete treats this
    /// as success.
    #[error("the event is already deleted in Google (410 {reason})")]
    Gone { reason: String },
    /// 409 `duplicate`: an event with the client-supplied id exists (or existed).
    #[error("an event with this id already exists in Google (409 {reason})")]
    Duplicate { reason: String },
    /// `invalid_grant` on refresh: the user revoked access or the refresh token
    /// expired. The connection needs re-authorisation; stop scheduling it.
    #[error(
        "the refresh token was rejected (invalid_grant): the connection needs re-authorisation"
    )]
    NeedsReauth { description: String },
    /// The service account may not act as the connection's member
    /// (`unauthorized_client`/`invalid_grant` on the JWT grant): needs
    /// re-authorisation, which here means the Workspace administrator's grant
    /// and then `connect` again.
    #[error(
        "domain-wide delegation refused for {subject} ({error}: {description}): \
         the Workspace administrator must grant it, then re-connect"
    )]
    DelegationRefused {
        subject: String,
        error: String,
        description: String,
    },
    /// This worker lacks the setting this kind of connection needs: an
    /// operator's fix, so the job retries meanwhile.
    #[error("{var} is not set on this worker: it cannot authenticate this connection")]
    NotConfigured { var: &'static str },
    /// `invalid_client`/`unauthorized_client`: the deployment's OAuth client is
    /// wrong. Not the user's fault: the operator must fix the configuration.
    #[error(
        "the OAuth client was rejected ({error}): check GOOGLE_CLIENT_ID/GOOGLE_CLIENT_SECRET"
    )]
    InvalidClient { error: String, description: String },
    /// 404 on the calendar, or 403 for lack of access (not a rate limit): mark
    /// the connection calendar-gone and stop retrying it.
    #[error("the calendar is gone or no longer accessible ({status} {reason})")]
    CalendarGone { status: u16, reason: String },
    /// 401 even after refreshing the access token once.
    #[error("Google refused our access token (401 {reason})")]
    Unauthorized { reason: String },
    /// 5xx, 408, a connection failure: retry with backoff.
    #[error("Google is temporarily unavailable: {detail}")]
    Transient { status: Option<u16>, detail: String },
    /// No complete answer within the call timeout: retry with backoff. (A write
    /// may have taken effect: inserts stay idempotent through their ids.)
    #[error("Google did not answer within {0:?}")]
    Timeout(Duration),
    /// A 2xx answer we could not read (malformed or truncated JSON, an event
    /// missing required fields): fail the job so it is retried, then parked.
    #[error("Google's answer could not be read: {detail}")]
    Malformed { detail: String },
    /// An appointment's time zone is not an IANA name chrono-tz knows: nothing
    /// was sent; the item cannot be pushed until it is fixed locally.
    #[error("unknown time zone {0:?}")]
    InvalidTimeZone(String),
    /// Any other refusal (other 4xx): retrying the same request cannot help.
    #[error("Google refused the request ({}{}): {message}", fmt_status(*.status), fmt_reason(.reason))]
    Permanent {
        status: Option<u16>,
        reason: Option<String>,
        message: String,
    },
}

fn fmt_retry_after(d: Option<Duration>) -> String {
    d.map(|d| format!(", retry after {}s", d.as_secs()))
        .unwrap_or_default()
}

fn fmt_status(s: Option<u16>) -> String {
    s.map(|s| s.to_string())
        .unwrap_or_else(|| "no status".to_owned())
}

fn fmt_reason(r: &Option<String>) -> String {
    r.as_ref().map(|r| format!(" {r}")).unwrap_or_default()
}

/// What the caller (queue, pull, push) should do with a failed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    /// Run again later (after `after` when Google said so) without spending an
    /// attempt.
    Snooze { after: Option<Duration> },
    /// The project's quota is spent: back the connection off for hours,
    /// without spending an attempt.
    QuotaBackoff,
    /// Retry with the queue's backoff, spending an attempt.
    Retry,
    /// Drop the sync token and run a full sync.
    FullResync,
    /// Mark the connection needs-reauth and stop scheduling it.
    NeedsReauth,
    /// Mark the connection calendar-gone and stop scheduling it.
    CalendarGone,
    /// The outcome is an answer the operation itself interprets (a 404/410 on
    /// delete is success, a 409 on insert is checked, a 412 triggers
    /// newer-wins). Unhandled, it means the item cannot be synced as is.
    Interpret,
    /// Park the item with its error: retrying cannot help.
    GiveUp,
}

impl GoogleError {
    pub fn next_step(&self) -> NextStep {
        match self {
            GoogleError::RateLimited { retry_after, .. } => NextStep::Snooze {
                after: *retry_after,
            },
            GoogleError::OverBudget { retry_after, .. } => NextStep::Snooze {
                after: Some(*retry_after),
            },
            GoogleError::QuotaExhausted { .. } => NextStep::QuotaBackoff,
            GoogleError::FullSyncRequired { .. } => NextStep::FullResync,
            GoogleError::NeedsReauth { .. } | GoogleError::DelegationRefused { .. } => {
                NextStep::NeedsReauth
            }
            GoogleError::CalendarGone { .. } => NextStep::CalendarGone,
            GoogleError::PreconditionFailed
            | GoogleError::NotFound { .. }
            | GoogleError::Gone { .. }
            | GoogleError::Duplicate { .. } => NextStep::Interpret,
            // A bad OAuth client is an operator's fix; retries give them time
            // to make it without losing the job.
            GoogleError::InvalidClient { .. }
            | GoogleError::NotConfigured { .. }
            | GoogleError::Unauthorized { .. }
            | GoogleError::Transient { .. }
            | GoogleError::Timeout(_)
            | GoogleError::Malformed { .. } => NextStep::Retry,
            GoogleError::InvalidTimeZone(_) | GoogleError::Permanent { .. } => NextStep::GiveUp,
        }
    }

    /// Google's `reason` (e.g. `rateLimitExceeded`, `conditionNotMet`), when
    /// the failure came with one.
    pub fn reason(&self) -> Option<&str> {
        match self {
            GoogleError::RateLimited { reason, .. }
            | GoogleError::QuotaExhausted { reason }
            | GoogleError::FullSyncRequired { reason }
            | GoogleError::NotFound { reason }
            | GoogleError::Gone { reason }
            | GoogleError::Duplicate { reason }
            | GoogleError::CalendarGone { reason, .. }
            | GoogleError::Unauthorized { reason } => Some(reason),
            GoogleError::PreconditionFailed => Some("conditionNotMet"),
            GoogleError::NeedsReauth { .. } => Some("invalid_grant"),
            GoogleError::InvalidClient { error, .. }
            | GoogleError::DelegationRefused { error, .. } => Some(error),
            GoogleError::Permanent { reason, .. } => reason.as_deref(),
            GoogleError::Transient { .. }
            | GoogleError::NotConfigured { .. }
            | GoogleError::OverBudget { .. }
            | GoogleError::Timeout(_)
            | GoogleError::Malformed { .. }
            | GoogleError::InvalidTimeZone(_) => None,
        }
    }
}

impl From<TokenError> for GoogleError {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::InvalidGrant { description } => GoogleError::NeedsReauth { description },
            TokenError::InvalidClient { error, description } => {
                GoogleError::InvalidClient { error, description }
            }
            TokenError::DelegationRefused {
                subject,
                error,
                description,
            } => GoogleError::DelegationRefused {
                subject,
                error,
                description,
            },
            TokenError::NotConfigured { var } => GoogleError::NotConfigured { var },
            TokenError::RateLimited { retry_after } => GoogleError::RateLimited {
                retry_after,
                reason: "tokenEndpointRateLimited".to_owned(),
            },
            TokenError::Transient { status, detail } => GoogleError::Transient {
                status,
                detail: format!("token endpoint: {detail}"),
            },
            TokenError::OverBudget { retry_after, scope } => {
                GoogleError::OverBudget { retry_after, scope }
            }
            TokenError::Timeout(d) => GoogleError::Timeout(d),
            TokenError::Malformed { detail } => GoogleError::Malformed {
                detail: format!("token endpoint: {detail}"),
            },
            TokenError::Rejected {
                status,
                error,
                description,
            } => GoogleError::Permanent {
                status: Some(status),
                reason: Some(error),
                message: format!("token endpoint: {description}"),
            },
        }
    }
}

/// What a call addressed, which decides what a 404/403/410 means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// A calendar-level call (list, insert, watch): 404 or an access 403 means
    /// the calendar is gone; 410 means the sync token is dead.
    Calendar,
    /// A call on one event (get, patch, delete): 404 is that event.
    Event,
    /// `channels.stop`: 404 means the channel already expired.
    Channel,
}

const RATE_LIMIT_REASONS: &[&str] = &["rateLimitExceeded", "userRateLimitExceeded"];

/// Reasons that say a quota measured in days (or the project's) is spent.
const QUOTA_REASONS: &[&str] = &["quotaExceeded", "dailyLimitExceeded"];

/// 403 reasons about one event rather than about access to the calendar.
const EVENT_LEVEL_FORBIDDEN: &[&str] = &[
    "forbiddenForNonOrganizer",
    "forbiddenForServiceAccounts",
    "eventTypeRestriction",
    "malformedWorkingLocationEvent",
];

/// Google's error body, `{"error": {"code", "message", "errors": [{"reason"}], "status"}}`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct ErrorBody {
    /// Whether the answer was Google's JSON error at all: only then do its
    /// status and reason carry Google's meaning (a proxy's HTML 404 does not
    /// say the calendar is gone).
    pub google: bool,
    pub code: Option<u16>,
    pub reason: Option<String>,
    pub message: Option<String>,
    /// What came back instead, for the error message: content type and the
    /// first bytes of the body.
    pub other: Option<String>,
}

impl ErrorBody {
    pub fn from_value(v: &Value) -> Self {
        let err = v.get("error");
        let google = err
            .and_then(Value::as_object)
            .is_some_and(|e| e.contains_key("code") || e.contains_key("errors"));
        let code = err
            .and_then(|e| e.get("code"))
            .and_then(Value::as_u64)
            .and_then(|c| u16::try_from(c).ok());
        let reason = err
            .and_then(|e| e.get("errors"))
            .and_then(|es| es.get(0))
            .and_then(|e| e.get("reason"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let message = err
            .and_then(|e| e.get("message"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let clean = |s: String| crate::text::cut(&crate::text::error_text(&s), 300);
        ErrorBody {
            google,
            code,
            reason: reason.map(clean),
            message: message.map(clean),
            other: None,
        }
    }

    /// Reads a non-2xx answer's body; when it is not Google's JSON error, keeps
    /// a description of what it was instead.
    pub fn from_response(content_type: Option<&str>, bytes: &[u8]) -> Self {
        let parsed = serde_json::from_slice::<Value>(bytes)
            .map(|v| Self::from_value(&v))
            .unwrap_or_default();
        if parsed.google {
            return parsed;
        }
        let head = String::from_utf8_lossy(&bytes[..bytes.len().min(120)]);
        ErrorBody {
            other: Some(format!(
                "content type {}, body starts {:?}",
                content_type
                    .map(crate::text::error_text)
                    .unwrap_or_else(|| "none".into()),
                crate::text::error_text(&head)
            )),
            ..ErrorBody::default()
        }
    }
}

/// Classifies a non-2xx answer of the Calendar API.
pub(crate) fn classify(
    target: Target,
    status: StatusCode,
    retry_after: Option<Duration>,
    body: &ErrorBody,
) -> GoogleError {
    let code = status.as_u16();
    let reason = body.reason.clone();
    let reason_or = |fallback: &str| reason.clone().unwrap_or_else(|| fallback.to_owned());
    let message = body
        .message
        .clone()
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("").to_owned());
    let is_rate_limit = reason
        .as_deref()
        .is_some_and(|r| RATE_LIMIT_REASONS.contains(&r));
    let is_quota = reason
        .as_deref()
        .is_some_and(|r| QUOTA_REASONS.contains(&r));

    // Statuses whose meaning we act on (gone, deleted, conflict) count only
    // when Google said them: anything else answering so is retried, and its
    // error says what came back.
    if matches!(code, 403 | 404 | 409 | 410 | 412) && !body.google {
        return GoogleError::Transient {
            status: Some(code),
            detail: format!(
                "HTTP {code} that is not Google's error ({})",
                body.other.as_deref().unwrap_or("no body")
            ),
        };
    }

    match code {
        403 | 429 if is_quota => GoogleError::QuotaExhausted {
            reason: reason_or("quotaExceeded"),
        },
        429 => GoogleError::RateLimited {
            retry_after,
            reason: reason_or("rateLimitExceeded"),
        },
        403 if is_rate_limit => GoogleError::RateLimited {
            retry_after,
            reason: reason_or("rateLimitExceeded"),
        },
        401 => GoogleError::Unauthorized {
            reason: reason_or("authError"),
        },
        403 => match target {
            Target::Calendar => GoogleError::CalendarGone {
                status: code,
                reason: reason_or("forbidden"),
            },
            Target::Event
                if !reason
                    .as_deref()
                    .is_some_and(|r| EVENT_LEVEL_FORBIDDEN.contains(&r)) =>
            {
                GoogleError::CalendarGone {
                    status: code,
                    reason: reason_or("forbidden"),
                }
            }
            Target::Event | Target::Channel => GoogleError::Permanent {
                status: Some(code),
                reason,
                message,
            },
        },
        404 => match target {
            Target::Calendar => GoogleError::CalendarGone {
                status: code,
                reason: reason_or("notFound"),
            },
            Target::Event | Target::Channel => GoogleError::NotFound {
                reason: reason_or("notFound"),
            },
        },
        409 => GoogleError::Duplicate {
            reason: reason_or("duplicate"),
        },
        410 => match target {
            Target::Calendar => GoogleError::FullSyncRequired {
                reason: reason_or("fullSyncRequired"),
            },
            Target::Event | Target::Channel => GoogleError::Gone {
                reason: reason_or("deleted"),
            },
        },
        412 => GoogleError::PreconditionFailed,
        408 | 500..=599 => GoogleError::Transient {
            status: Some(code),
            detail: format!("{code} {}: {message}", reason_or("backendError")),
        },
        _ => GoogleError::Permanent {
            status: Some(code),
            reason,
            message,
        },
    }
}

/// A google-calendar3 `Delegate` that records what the crate drops: the HTTP
/// status and `Retry-After` of a failed answer. It never asks the crate to
/// retry: retries belong to the queue (and to our one 401 refresh).
#[derive(Debug, Default)]
pub(crate) struct Capture {
    pub status: Option<StatusCode>,
    pub retry_after: Option<Duration>,
}

impl google_calendar3::common::Delegate for Capture {
    fn http_failure(
        &mut self,
        response: &google_calendar3::common::Response,
        _err: Option<&Value>,
    ) -> google_calendar3::common::Retry {
        self.status = Some(response.status());
        self.retry_after = retry_after(response.headers());
        google_calendar3::common::Retry::Abort
    }
}

/// Classifies the error of a google-calendar3 call made with `capture` as its
/// delegate.
pub(crate) fn from_hub_error(
    target: Target,
    capture: &Capture,
    err: google_calendar3::Error,
) -> GoogleError {
    use google_calendar3::Error as E;
    match err {
        E::BadRequest(value) => {
            let body = ErrorBody::from_value(&value);
            let status = capture
                .status
                .or_else(|| body.code.and_then(|c| StatusCode::from_u16(c).ok()))
                .unwrap_or(StatusCode::BAD_REQUEST);
            classify(target, status, capture.retry_after, &body)
        }
        E::Failure(response) => classify(
            target,
            response.status(),
            retry_after(response.headers()),
            &ErrorBody {
                other: Some(format!(
                    "content type {}, a body that is not JSON",
                    response
                        .headers()
                        .get(http::header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("none")
                )),
                ..ErrorBody::default()
            },
        ),
        E::MissingToken(e) => match e.downcast::<TokenError>() {
            Ok(token_error) => (*token_error).into(),
            Err(other) => GoogleError::Transient {
                status: None,
                detail: format!("no access token: {other}"),
            },
        },
        E::HttpError(e) => GoogleError::Transient {
            status: None,
            detail: format!("connection failed: {e}"),
        },
        E::Io(e) => GoogleError::Transient {
            status: None,
            detail: format!("I/O error: {e}"),
        },
        E::JsonDecodeError(_, e) => GoogleError::Malformed {
            detail: format!("invalid JSON: {e}"),
        },
        other => GoogleError::Permanent {
            status: None,
            reason: None,
            message: other.to_string().trim().to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(code: u16, reason: &str) -> ErrorBody {
        ErrorBody::from_value(&json!({"error": {"code": code, "message": "m",
            "errors": [{"domain": "global", "reason": reason, "message": "m"}]}}))
    }

    fn status(code: u16) -> StatusCode {
        StatusCode::from_u16(code).unwrap()
    }

    #[test]
    fn spent_quotas_back_the_connection_off_for_hours() {
        for (code, reason) in [
            (403, "quotaExceeded"),
            (429, "quotaExceeded"),
            (403, "dailyLimitExceeded"),
        ] {
            let e = classify(Target::Calendar, status(code), None, &body(code, reason));
            assert_eq!(
                e,
                GoogleError::QuotaExhausted {
                    reason: reason.to_owned()
                }
            );
            assert_eq!(e.next_step(), NextStep::QuotaBackoff);
        }
    }

    #[test]
    fn only_googles_own_errors_mean_gone() {
        for code in [403u16, 404, 409, 410, 412] {
            let html = ErrorBody::from_response(Some("text/html"), b"<html>Not Found</html>");
            let e = classify(Target::Calendar, status(code), None, &html);
            match &e {
                GoogleError::Transient {
                    status: Some(c),
                    detail,
                } => {
                    assert_eq!(*c, code);
                    assert!(
                        detail.contains("text/html") && detail.contains("<html>"),
                        "{detail}"
                    );
                }
                other => panic!("{code}: {other:?}"),
            }
            assert_eq!(e.next_step(), NextStep::Retry);
        }
        let nul = ErrorBody::from_response(
            Some("application/json"),
            br#"{"error":{"code":404,"message":"gone\u0000here","errors":[{"reason":"notFound"}]}}"#,
        );
        assert!(nul.google);
        assert!(!nul.message.unwrap().contains('\0'));
    }

    #[test]
    fn rate_limits_come_as_403_or_429_and_spend_no_attempt() {
        for (code, reason) in [
            (403, "rateLimitExceeded"),
            (403, "userRateLimitExceeded"),
            (429, "rateLimitExceeded"),
        ] {
            let e = classify(
                Target::Event,
                status(code),
                Some(Duration::from_secs(7)),
                &body(code, reason),
            );
            assert_eq!(
                e,
                GoogleError::RateLimited {
                    retry_after: Some(Duration::from_secs(7)),
                    reason: reason.to_owned()
                }
            );
            assert_eq!(
                e.next_step(),
                NextStep::Snooze {
                    after: Some(Duration::from_secs(7))
                }
            );
        }
    }

    #[test]
    fn access_403_and_404_depend_on_what_was_addressed() {
        let forbidden = body(403, "forbidden");
        assert!(matches!(
            classify(Target::Calendar, status(403), None, &forbidden),
            GoogleError::CalendarGone { status: 403, .. }
        ));
        assert!(matches!(
            classify(Target::Event, status(403), None, &forbidden),
            GoogleError::CalendarGone { .. }
        ));
        assert!(matches!(
            classify(
                Target::Event,
                status(403),
                None,
                &body(403, "forbiddenForNonOrganizer")
            ),
            GoogleError::Permanent {
                status: Some(403),
                ..
            }
        ));
        let not_found = body(404, "notFound");
        assert_eq!(
            classify(Target::Calendar, status(404), None, &not_found).next_step(),
            NextStep::CalendarGone
        );
        assert_eq!(
            classify(Target::Event, status(404), None, &not_found),
            GoogleError::NotFound {
                reason: "notFound".into()
            }
        );
    }

    #[test]
    fn gone_means_full_sync_on_lists_and_deleted_on_events() {
        assert_eq!(
            classify(
                Target::Calendar,
                status(410),
                None,
                &body(410, "updatedMinTooLongAgo")
            ),
            GoogleError::FullSyncRequired {
                reason: "updatedMinTooLongAgo".into()
            }
        );
        assert_eq!(
            classify(Target::Event, status(410), None, &body(410, "deleted")),
            GoogleError::Gone {
                reason: "deleted".into()
            }
        );
    }

    #[test]
    fn other_statuses() {
        let e = classify(
            Target::Event,
            status(412),
            None,
            &body(412, "conditionNotMet"),
        );
        assert_eq!(e, GoogleError::PreconditionFailed);
        assert_eq!(
            classify(Target::Calendar, status(409), None, &body(409, "duplicate")).reason(),
            Some("duplicate")
        );
        let e = classify(Target::Event, status(503), None, &ErrorBody::default());
        assert!(matches!(
            e,
            GoogleError::Transient {
                status: Some(503),
                ..
            }
        ));
        let e = classify(Target::Event, status(400), None, &body(400, "invalid"));
        assert_eq!(e.next_step(), NextStep::GiveUp);
        assert_eq!(e.reason(), Some("invalid"));
    }
}
