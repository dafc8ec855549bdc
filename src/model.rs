//! The domain shape of an appointment, shared by both directions of sync.
//!
//! [`AppointmentFields`] is exactly the set of `appointments` columns the
//! worker reads from and writes to Google. Two values are equal exactly when a
//! sync would change nothing, which is how an etag-only change of a Google
//! event (attendees, reminders, colour) is told apart from a real edit.

use chrono::{DateTime, Utc};

/// The instant standing in for a host's time that no layer can hold
/// (`infinity`, or a year outside 1..=9999): far outside every valid time, so
/// it never matches Google's and its push is refused.
pub const UNSTORABLE_TIME: DateTime<Utc> = DateTime::<Utc>::MIN_UTC;

impl AppointmentFields {
    /// Why these values cannot be sent to Google as they are, if they cannot:
    /// times out of range (or infinite), an end before the start, an all-day
    /// appointment not on midnights, a zone chrono-tz does not know.
    pub fn push_problem(&self) -> Option<String> {
        use chrono::{Datelike, Timelike};
        let storable = |t: &DateTime<Utc>| (1..=9999).contains(&t.year());
        if !storable(&self.start_at) || !storable(&self.end_at) {
            return Some(
                "start_at or end_at is infinite or outside the years 1 to 9999".to_owned(),
            );
        }
        if self.end_at < self.start_at {
            return Some(format!(
                "end_at {} is before start_at {}",
                self.end_at.to_rfc3339(),
                self.start_at.to_rfc3339()
            ));
        }
        let midnight =
            |t: &DateTime<Utc>| t.num_seconds_from_midnight() == 0 && t.nanosecond() == 0;
        if self.all_day && !(midnight(&self.start_at) && midnight(&self.end_at)) {
            return Some("an all-day appointment whose times are not 00:00 UTC".to_owned());
        }
        if self.all_day && self.end_at == self.start_at {
            return Some("an all-day appointment that ends on the day it starts".to_owned());
        }
        for zone in [&self.start_time_zone, &self.end_time_zone]
            .into_iter()
            .flatten()
        {
            if zone.parse::<chrono_tz::Tz>().is_err() {
                return Some(format!(
                    "unknown time zone {:?}",
                    crate::text::cut(zone, 60)
                ));
            }
        }
        None
    }

    /// Whether Google holds these same values, as far as a round trip through
    /// Google can tell: an appointment without a zone is sent in the
    /// calendar's zone and comes back with it, and Google keeps times to the
    /// second. Without this, the echo of our own push would later look like a
    /// remote edit and rewrite the row (with a delta) for nothing.
    pub fn matches(&self, other: &AppointmentFields, calendar_time_zone: Option<&str>) -> bool {
        let zone = |z: &Option<String>| z.as_deref().or(calendar_time_zone).map(str::to_owned);
        self.summary == other.summary
            && self.description == other.description
            && self.location == other.location
            && self.start_at.timestamp() == other.start_at.timestamp()
            && self.end_at.timestamp() == other.end_at.timestamp()
            && self.all_day == other.all_day
            && zone(&self.start_time_zone) == zone(&other.start_time_zone)
            && zone(&self.end_time_zone) == zone(&other.end_time_zone)
    }
}

/// The synced columns of one appointment.
///
/// For an all-day appointment `start_at`/`end_at` are 00:00 UTC of the dates,
/// the end exclusive (as Google's `end.date`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppointmentFields {
    pub summary: String,
    pub description: Option<String>,
    pub location: Option<String>,
    pub start_at: DateTime<Utc>,
    pub end_at: DateTime<Utc>,
    /// IANA zone names.
    pub start_time_zone: Option<String>,
    pub end_time_zone: Option<String>,
    pub all_day: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn fields() -> AppointmentFields {
        let t = Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 0).unwrap();
        AppointmentFields {
            summary: "x".into(),
            description: None,
            location: None,
            start_at: t + chrono::Duration::milliseconds(250),
            end_at: t + chrono::Duration::hours(1),
            start_time_zone: None,
            end_time_zone: None,
            all_day: false,
        }
    }

    #[test]
    fn a_zone_less_appointment_matches_its_echo_in_the_calendars_zone() {
        let local = fields();
        let mut echo = fields();
        echo.start_at -= chrono::Duration::milliseconds(250);
        echo.start_time_zone = Some("America/Chicago".into());
        echo.end_time_zone = Some("America/Chicago".into());
        assert!(local.matches(&echo, Some("America/Chicago")));
        assert!(!local.matches(&echo, Some("Europe/Berlin")));
        echo.summary = "y".into();
        assert!(!local.matches(&echo, Some("America/Chicago")));
    }
}
