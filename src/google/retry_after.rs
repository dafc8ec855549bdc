//! Google's `Retry-After`, read the one way both the API client and the
//! token endpoint need it: as delay-seconds or an HTTP-date, and never longer
//! than [`MAX_SNOOZE`], whatever the server says.

use std::time::Duration;

use http::HeaderMap;

/// The longest snooze any outside value can ask for: the queue's retry cap.
pub const MAX_SNOOZE: Duration = Duration::from_secs(3600);

/// `Retry-After` as delay-seconds or an HTTP-date.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let raw = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    parse_retry_after(raw)
}

/// `Retry-After`'s value, capped at [`MAX_SNOOZE`] whatever it says: a
/// server's number must never park a job for years (or overflow a time).
pub(crate) fn parse_retry_after(raw: &str) -> Option<Duration> {
    let raw = raw.trim();
    if !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit()) {
        // Digits beyond u64 are still "a very long time".
        let secs = raw.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(secs.min(MAX_SNOOZE.as_secs())));
    }
    let at = chrono::DateTime::parse_from_rfc2822(raw).ok()?;
    let delta = at
        .with_timezone(&chrono::Utc)
        .signed_duration_since(chrono::Utc::now());
    Some(delta.to_std().unwrap_or(Duration::ZERO).min(MAX_SNOOZE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_bounded_whatever_it_says() {
        for raw in [
            "3000000000",
            "18446744073709551616999",
            "99999999999999999999999",
        ] {
            assert_eq!(parse_retry_after(raw), Some(MAX_SNOOZE), "{raw}");
        }
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("-5"), None);
        assert_eq!(
            parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT"),
            Some(MAX_SNOOZE)
        );
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 1970 00:00:00 GMT"),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn retry_after_as_seconds_or_date() {
        let mut h = HeaderMap::new();
        h.insert(http::header::RETRY_AFTER, "3".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert(
            http::header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
    }
}
