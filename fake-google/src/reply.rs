//! The answer an API or admin route gives before it goes on the wire: a
//! status, an optional JSON body and the headers Google sets. Shared by
//! `routes` (the API front, which renders it and may mangle it with a fault)
//! and `admin` (the handle's controls), so neither depends on the other's
//! internals: `routes` dispatches to `admin`, never the reverse.

use http::StatusCode;
use serde_json::Value;

use super::errors::ApiError;

/// What goes back on the wire.
pub(crate) struct Reply {
    pub status: StatusCode,
    pub body: Option<Value>,
    pub retry_after: Option<u64>,
    pub etag: Option<String>,
    /// Verbatim JSON items spliced into a listing's `items` (hostile tests).
    pub raw_items: Vec<String>,
}

impl Reply {
    pub fn json(status: StatusCode, body: Value) -> Reply {
        Reply {
            status,
            body: Some(body),
            retry_after: None,
            etag: None,
            raw_items: Vec::new(),
        }
    }
    pub fn empty(status: StatusCode) -> Reply {
        Reply {
            status,
            body: None,
            retry_after: None,
            etag: None,
            raw_items: Vec::new(),
        }
    }
}

impl From<ApiError> for Reply {
    fn from(err: ApiError) -> Reply {
        Reply {
            status: err.status,
            body: Some(err.body),
            retry_after: err.retry_after,
            etag: None,
            raw_items: Vec::new(),
        }
    }
}
