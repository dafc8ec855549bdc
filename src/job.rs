//! The queue's words, as stored: [`JobKind`] and [`JobState`], mapped to the
//! `kind` and `state` text columns of `plansync.jobs` (and to their `CHECK`
//! constraints), and [`Failure`], the typed cause a failed job carries.
//!
//! This is the one place a kind or a state is spelled as a string in Rust;
//! everything else uses the enums (SQL text, such as a partial index's
//! predicate, is the other side of this mapping). It depends on nothing in
//! the crate but `text`, so `store` (which reads and writes the columns) and `queue`
//! (which gives them meaning) both use it without depending on each other.

use std::error::Error;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

pub use crate::text::chain;

/// What a job does. New kinds extend the list (and the table's
/// `jobs_kind_check`); a worker only claims the kinds its build knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum JobKind {
    /// An incremental pull (a full one when the connection has no sync token).
    Pull,
    /// A full pull with mark-and-sweep (`connect`, `resync --full`).
    FullResync,
    /// Send one appointment's local change to Google.
    Push,
    /// Notification channel upkeep.
    Watch,
}

impl JobKind {
    /// Every kind this build can run: the only ones its workers claim.
    pub const ALL: [JobKind; 4] = [
        JobKind::Pull,
        JobKind::FullResync,
        JobKind::Push,
        JobKind::Watch,
    ];

    /// The stored spelling (also `status`'s `kind` and the metrics' label).
    pub const fn as_str(self) -> &'static str {
        match self {
            JobKind::Pull => "pull",
            JobKind::FullResync => "full_resync",
            JobKind::Push => "push",
            JobKind::Watch => "watch",
        }
    }

    /// Whether this kind lists the calendar (a pull of either sort).
    pub fn is_pull(self) -> bool {
        matches!(self, JobKind::Pull | JobKind::FullResync)
    }
}

impl fmt::Display for JobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown job kind {s:?}"))
    }
}

impl serde::Serialize for JobKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Where a job is in its life:
/// queued → running → succeeded | dead | queued (retry, snooze, release,
/// rescue) | superseded (folded into an equal queued job).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Dead,
    Superseded,
}

impl JobState {
    pub const ALL: [JobState; 5] = [
        JobState::Queued,
        JobState::Running,
        JobState::Succeeded,
        JobState::Dead,
        JobState::Superseded,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Dead => "dead",
            JobState::Superseded => "superseded",
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a job run failed: a message of the job's own, its typed cause, or
/// both. Its `Display` is the top of the chain only and `source()` the
/// cause, so printing the chain ([`chain`]) names every level once; the
/// reason recorded on a job or a connection is that chain, so it names the
/// original failure (a Google answer, a database error), not a paraphrase.
#[derive(Clone)]
pub struct Failure {
    context: Option<String>,
    source: Option<Arc<dyn Error + Send + Sync + 'static>>,
}

impl Failure {
    /// A failure described by the job itself (no underlying error).
    pub fn msg(message: impl Into<String>) -> Self {
        Failure {
            context: Some(message.into()),
            source: None,
        }
    }

    /// `source`, as it is: its message heads the chain.
    pub fn of(source: impl Error + Send + Sync + 'static) -> Self {
        Failure {
            context: None,
            source: Some(Arc::new(source)),
        }
    }

    /// What the job was doing (`context`) when `source` happened.
    pub fn new(context: impl Into<String>, source: impl Error + Send + Sync + 'static) -> Self {
        Failure {
            context: Some(context.into()),
            source: Some(Arc::new(source)),
        }
    }

    /// The whole chain, `context: cause: cause's cause`.
    pub fn chain(&self) -> String {
        chain(self)
    }

    /// The typed cause, for callers that look at what went wrong.
    pub fn cause(&self) -> Option<&(dyn Error + Send + Sync + 'static)> {
        self.source.as_deref()
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.context, &self.source) {
            (Some(context), _) => f.write_str(context),
            // Transparent: the cause's own message heads the chain.
            (None, Some(source)) => source.fmt(f),
            (None, None) => f.write_str("the job failed"),
        }
    }
}

impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Failure")
            .field("chain", &self.chain())
            .finish()
    }
}

impl Error for Failure {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match (&self.context, &self.source) {
            (Some(_), Some(source)) => Some(source.as_ref() as &(dyn Error + 'static)),
            // Transparent: skip the level already printed by `Display`.
            (None, Some(source)) => source.source(),
            (_, None) => None,
        }
    }
}

impl From<&str> for Failure {
    fn from(message: &str) -> Self {
        Failure::msg(message)
    }
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure::msg(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_states_round_trip() {
        for kind in JobKind::ALL {
            assert_eq!(kind.as_str().parse::<JobKind>().unwrap(), kind);
        }
        assert!("renew".parse::<JobKind>().is_err());
        let names: Vec<_> = JobState::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            names,
            ["queued", "running", "succeeded", "dead", "superseded"]
        );
    }

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn a_failure_prints_each_cause_once() {
        let io = || std::io::Error::other("connection reset");
        let plain = Failure::of(Outer(io()));
        assert_eq!(plain.to_string(), "outer");
        assert_eq!(plain.chain(), "outer: connection reset");
        let with_context = Failure::new("pushing appointment 7", Outer(io()));
        assert_eq!(
            with_context.chain(),
            "pushing appointment 7: outer: connection reset"
        );
        assert_eq!(Failure::from("400 badRequest").chain(), "400 badRequest");
    }
}
