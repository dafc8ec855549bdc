//! Injected failures: "the next N calls of this operation answer like this".
//!
//! Faults queue per operation in the order they were injected; each call
//! consumes one. The same types drive the in-process handle and the
//! `/_admin/faults` route (their JSON form is documented in fixtures/README.md).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// An API operation, as faults and the request log name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// `GET calendars/{id}/events`
    List,
    /// `GET calendars/{id}/events/{eventId}`
    Get,
    /// `POST calendars/{id}/events`
    Insert,
    /// `PATCH calendars/{id}/events/{eventId}`
    Patch,
    /// `PUT calendars/{id}/events/{eventId}`
    Update,
    /// `DELETE calendars/{id}/events/{eventId}`
    Delete,
    /// `POST calendars/{id}/events/watch`
    Watch,
    /// `POST channels/stop`
    Stop,
    /// `GET calendars/{id}` and `users/me/calendarList/{id}`
    GetCalendar,
    /// `POST /token`
    Token,
    /// `/_admin/...` (never faulted)
    Admin,
    /// Anything the emulator does not serve (answered 404)
    Unknown,
}

impl Operation {
    /// Whether the operation changes state (and so can "take effect but lose
    /// the response").
    pub fn is_write(self) -> bool {
        matches!(
            self,
            Operation::Insert
                | Operation::Patch
                | Operation::Update
                | Operation::Delete
                | Operation::Watch
                | Operation::Stop
                | Operation::Token
        )
    }
}

/// What an injected fault does to one call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// 403 or 429 with reason `rateLimitExceeded` (or `userRateLimitExceeded`
    /// when `user`), and `Retry-After: <secs>` when given. Nothing happens.
    RateLimit {
        status: u16,
        #[serde(default)]
        user: bool,
        #[serde(default)]
        retry_after_secs: Option<u64>,
    },
    /// 500 `backendError`. Nothing happens.
    BackendError,
    /// 503 `backendError` (status `UNAVAILABLE`). Nothing happens.
    Unavailable,
    /// The call takes effect; the 200 body is not JSON.
    MalformedBody,
    /// The call takes effect; the 200 body is cut in half.
    TruncatedBody,
    /// The call is answered normally after a delay.
    Delay {
        #[serde(with = "millis")]
        millis: Duration,
    },
    /// A canned answer instead of the real one (nothing happens): any status,
    /// headers and body, verbatim. What a proxy, a broken deployment or a
    /// hostile server would answer; the body may hold what JSON values cannot
    /// (a lone surrogate escape, an unfinished document).
    Respond {
        status: u16,
        #[serde(default)]
        headers: std::collections::BTreeMap<String, String>,
        #[serde(default)]
        body: String,
    },
    /// The call takes effect, then the client gets a 500 `backendError`
    /// (`then: "error"`) or a dropped connection (`then: "drop"`).
    LoseResponse { then: Lost },
    /// The call takes effect at once; its answer is held back this long (a
    /// worker can die between Google accepting a write and hearing of it).
    DelayResponse {
        #[serde(with = "millis")]
        millis: Duration,
    },
}

/// How a response is lost after the call took effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lost {
    Error,
    Drop,
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

#[derive(Default)]
pub(crate) struct Faults {
    queue: Vec<(Operation, Fault, u32)>,
}

impl Faults {
    pub fn inject(&mut self, op: Operation, fault: Fault, times: u32) {
        if times > 0 {
            self.queue.push((op, fault, times));
        }
    }

    pub fn clear(&mut self) {
        self.queue.clear();
    }

    /// Consumes the next fault for `op`, if any.
    pub fn take(&mut self, op: Operation) -> Option<Fault> {
        let index = self.queue.iter().position(|(o, _, _)| *o == op)?;
        let entry = &mut self.queue[index];
        let fault = entry.1.clone();
        entry.2 -= 1;
        if entry.2 == 0 {
            self.queue.remove(index);
        }
        Some(fault)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_are_consumed_in_order_per_operation() {
        let mut faults = Faults::default();
        faults.inject(Operation::List, Fault::BackendError, 2);
        faults.inject(Operation::List, Fault::Unavailable, 1);
        assert_eq!(faults.take(Operation::Get), None);
        assert_eq!(faults.take(Operation::List), Some(Fault::BackendError));
        assert_eq!(faults.take(Operation::List), Some(Fault::BackendError));
        assert_eq!(faults.take(Operation::List), Some(Fault::Unavailable));
        assert_eq!(faults.take(Operation::List), None);
    }

    #[test]
    fn faults_read_from_admin_json() {
        let fault: Fault =
            serde_json::from_str(r#"{"kind":"rate_limit","status":429,"retry_after_secs":3}"#)
                .unwrap();
        assert_eq!(
            fault,
            Fault::RateLimit {
                status: 429,
                user: false,
                retry_after_secs: Some(3)
            }
        );
        let fault: Fault =
            serde_json::from_str(r#"{"kind":"lose_response","then":"drop"}"#).unwrap();
        assert_eq!(fault, Fault::LoseResponse { then: Lost::Drop });
    }
}
