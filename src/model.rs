//! The domain shape of an appointment, shared by both directions of sync.
//!
//! [`AppointmentFields`] is exactly the set of `appointments` columns the
//! worker reads from and writes to Google. Two values are equal exactly when a
//! sync would change nothing, which is how an etag-only change of a Google
//! event (attendees, reminders, colour) is told apart from a real edit.

use chrono::{DateTime, Utc};

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
