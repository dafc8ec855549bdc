//! Google's error responses, byte for byte where Google's body is fixed.
//!
//! The fixed bodies are the files of `fixtures/errors/`, compiled in, so the
//! fixtures a reader inspects are exactly what the emulator answers. Bodies
//! whose message depends on the request are built in Google's shape:
//! `{"error":{"errors":[{"domain","reason","message",...}],"code","message"}}`.

use http::StatusCode;
use serde_json::{json, Value};

/// An error answer of the Calendar API or of the token endpoint.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub body: Value,
    pub retry_after: Option<u64>,
}

fn fixed(status: StatusCode, text: &str) -> ApiError {
    ApiError {
        status,
        // The files are part of the crate and checked by a unit test.
        body: serde_json::from_str(text).expect("fixtures/errors holds valid JSON"),
        retry_after: None,
    }
}

macro_rules! error_file {
    ($name:literal) => {
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fixtures/errors/",
            $name
        ))
    };
}

pub(crate) const AUTH_ERROR: &str = error_file!("401-authError.json");
pub(crate) const RATE_LIMIT_403: &str = error_file!("403-rateLimitExceeded.json");
pub(crate) const USER_RATE_LIMIT_403: &str = error_file!("403-userRateLimitExceeded.json");
pub(crate) const RATE_LIMIT_429: &str = error_file!("429-rateLimitExceeded.json");
pub(crate) const USER_RATE_LIMIT_429: &str = error_file!("429-userRateLimitExceeded.json");
pub(crate) const NOT_FOUND: &str = error_file!("404-notFound.json");
pub(crate) const DUPLICATE: &str = error_file!("409-duplicate.json");
pub(crate) const DELETED: &str = error_file!("410-deleted.json");
pub(crate) const FULL_SYNC_REQUIRED: &str = error_file!("410-fullSyncRequired.json");
pub(crate) const CONDITION_NOT_MET: &str = error_file!("412-conditionNotMet.json");
pub(crate) const BACKEND_ERROR: &str = error_file!("500-backendError.json");
pub(crate) const UNAVAILABLE: &str = error_file!("503-backendError.json");
pub(crate) const INVALID_GRANT: &str = error_file!("oauth-400-invalid_grant.json");
pub(crate) const INVALID_CLIENT: &str = error_file!("oauth-401-invalid_client.json");

impl ApiError {
    pub fn auth() -> Self {
        fixed(StatusCode::UNAUTHORIZED, AUTH_ERROR)
    }
    pub fn not_found() -> Self {
        fixed(StatusCode::NOT_FOUND, NOT_FOUND)
    }
    pub fn duplicate() -> Self {
        fixed(StatusCode::CONFLICT, DUPLICATE)
    }
    pub fn deleted() -> Self {
        fixed(StatusCode::GONE, DELETED)
    }
    pub fn full_sync_required() -> Self {
        fixed(StatusCode::GONE, FULL_SYNC_REQUIRED)
    }
    pub fn condition_not_met() -> Self {
        fixed(StatusCode::PRECONDITION_FAILED, CONDITION_NOT_MET)
    }
    pub fn backend_error() -> Self {
        fixed(StatusCode::INTERNAL_SERVER_ERROR, BACKEND_ERROR)
    }
    pub fn unavailable() -> Self {
        fixed(StatusCode::SERVICE_UNAVAILABLE, UNAVAILABLE)
    }
    pub fn invalid_grant() -> Self {
        fixed(StatusCode::BAD_REQUEST, INVALID_GRANT)
    }
    pub fn invalid_client() -> Self {
        fixed(StatusCode::UNAUTHORIZED, INVALID_CLIENT)
    }

    pub fn rate_limited(status: StatusCode, user: bool, retry_after: Option<u64>) -> Self {
        let text = match (status == StatusCode::TOO_MANY_REQUESTS, user) {
            (true, false) => RATE_LIMIT_429,
            (true, true) => USER_RATE_LIMIT_429,
            (false, false) => RATE_LIMIT_403,
            (false, true) => USER_RATE_LIMIT_403,
        };
        let mut err = fixed(status, text);
        err.retry_after = retry_after;
        err
    }

    /// A 400 in Google's shape; `location` names the offending parameter.
    pub fn bad_request(domain: &str, reason: &str, message: &str, location: Option<&str>) -> Self {
        let mut item = json!({"domain": domain, "reason": reason, "message": message});
        if let Some(location) = location {
            item["locationType"] = json!("parameter");
            item["location"] = json!(location);
        }
        ApiError {
            status: StatusCode::BAD_REQUEST,
            body: json!({"error": {"errors": [item], "code": 400, "message": message}}),
            retry_after: None,
        }
    }

    /// Google's answer to a value it cannot use (`reason: "invalid"`).
    pub fn invalid(message: &str) -> Self {
        Self::bad_request("global", "invalid", message, None)
    }

    /// Google's answer to a parameter combination it refuses; with
    /// `syncToken` Google answers a plain `badRequest`.
    pub fn refused_with_sync_token(param: &str) -> Self {
        Self::bad_request("global", "badRequest", "Bad Request", Some(param))
    }

    /// A token-endpoint error of the OAuth shape `{"error","error_description"}`.
    pub fn oauth(status: StatusCode, error: &str, description: &str) -> Self {
        ApiError {
            status,
            body: json!({"error": error, "error_description": description}),
            retry_after: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_file_is_valid_json_with_its_status() {
        for (text, code) in [
            (AUTH_ERROR, 401),
            (RATE_LIMIT_403, 403),
            (USER_RATE_LIMIT_403, 403),
            (RATE_LIMIT_429, 429),
            (USER_RATE_LIMIT_429, 429),
            (NOT_FOUND, 404),
            (DUPLICATE, 409),
            (DELETED, 410),
            (FULL_SYNC_REQUIRED, 410),
            (CONDITION_NOT_MET, 412),
            (BACKEND_ERROR, 500),
            (UNAVAILABLE, 503),
        ] {
            let body: Value = serde_json::from_str(text).unwrap();
            assert_eq!(body["error"]["code"], json!(code), "{text}");
            assert!(body["error"]["errors"][0]["reason"].is_string(), "{text}");
        }
        for text in [INVALID_GRANT, INVALID_CLIENT] {
            let body: Value = serde_json::from_str(text).unwrap();
            assert!(body["error"].is_string());
        }
    }
}
