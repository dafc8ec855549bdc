//! The seam between Google calls and the fleet's request budget.
//!
//! Every request this module sends to Google — `events.list/get/insert/patch/
//! delete/watch`, `channels.stop` and the token refresh — first asks a
//! [`CallBudget`] for one request, once per attempt (a 401 repeat counts
//! again), and records `plansync_google_calls_total{operation,outcome}`. The
//! budget's implementation (Redis, fallback shares) lives outside this module
//! ([`crate::quota`]); here it is only a trait, so the client stays free of
//! Redis. Without a budget (tests, admin tools) calls are only metered.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// Counter of Google requests sent (or refused by the budget), by operation
/// and outcome.
pub const CALLS_METRIC: &str = "plansync_google_calls_total";

/// Which Google operation a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallKind {
    List,
    Get,
    Insert,
    Patch,
    Delete,
    Watch,
    Stop,
    Token,
}

impl CallKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CallKind::List => "list",
            CallKind::Get => "get",
            CallKind::Insert => "insert",
            CallKind::Patch => "patch",
            CallKind::Delete => "delete",
            CallKind::Watch => "watch",
            CallKind::Stop => "stop",
            CallKind::Token => "token",
        }
    }
}

/// Whose budget ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BudgetScope {
    /// `PLANSYNC_GOOGLE_QPM`, shared by the fleet.
    Project,
    /// `PLANSYNC_GOOGLE_USER_QPM`, of one connection.
    Connection,
}

impl BudgetScope {
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetScope::Project => "project",
            BudgetScope::Connection => "connection",
        }
    }
}

impl fmt::Display for BudgetScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The budget had no request left within the time a call may wait for one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverBudget {
    /// When a request is expected to be available again.
    pub retry_after: Duration,
    pub scope: BudgetScope,
}

/// The request being asked for: its operation and, for a connection's calls,
/// the connection (its own per-principal budget).
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    pub kind: CallKind,
    pub principal: Option<&'a str>,
}

pub type AcquireFuture<'a> = Pin<Box<dyn Future<Output = Result<(), OverBudget>> + Send + 'a>>;

/// A source of permission to send one request to Google. `acquire` may wait
/// a little (bounded) for budget; when it cannot get one in time it answers
/// [`OverBudget`] and nothing is sent.
pub trait CallBudget: Send + Sync + 'static {
    fn acquire<'a>(&'a self, call: Call<'a>) -> AcquireFuture<'a>;
}

/// A shared, optional budget as the clients hold it.
#[derive(Clone, Default)]
pub(crate) struct Budget {
    inner: Option<Arc<dyn CallBudget>>,
    /// The connection these calls are made for.
    principal: Option<Arc<str>>,
}

impl Budget {
    pub fn new(inner: Option<Arc<dyn CallBudget>>) -> Self {
        Budget {
            inner,
            principal: None,
        }
    }

    pub fn for_principal(&self, principal: &str) -> Self {
        Budget {
            inner: self.inner.clone(),
            principal: Some(principal.into()),
        }
    }

    /// Asks for one request of `kind`; a refusal is counted as that
    /// operation's `over_budget` outcome.
    pub async fn acquire(&self, kind: CallKind) -> Result<(), OverBudget> {
        let Some(inner) = &self.inner else {
            return Ok(());
        };
        let call = Call {
            kind,
            principal: self.principal.as_deref(),
        };
        let result = inner.acquire(call).await;
        if result.is_err() {
            record(kind, "over_budget");
        }
        result
    }
}

/// Counts one request sent to Google and how it ended.
pub(crate) fn record(kind: CallKind, outcome: &'static str) {
    metrics::counter!(CALLS_METRIC, "operation" => kind.as_str(), "outcome" => outcome)
        .increment(1);
}

/// The `outcome` label of a finished call.
pub(crate) fn outcome<T>(result: &Result<T, super::GoogleError>) -> &'static str {
    use super::GoogleError as E;
    match result {
        Ok(_) => "ok",
        Err(E::RateLimited { .. }) => "rate_limited",
        Err(E::QuotaExhausted { .. }) => "quota_exhausted",
        Err(E::OverBudget { .. }) => "over_budget",
        Err(E::Transient { .. }) => "transient",
        Err(E::Timeout(_)) => "timeout",
        Err(E::Unauthorized { .. }) => "unauthorized",
        Err(E::Malformed { .. }) => "malformed",
        // Answers the operation interprets (404, 409, 410, 412) and refusals.
        Err(_) => "refused",
    }
}
