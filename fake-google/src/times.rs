//! Event times as Google writes them: `{"dateTime","timeZone"}` for timed
//! events, `{"date"}` for all-day ones, and `updated`/`created` stamps with
//! milliseconds.

use chrono::{
    DateTime, LocalResult, NaiveDate, NaiveDateTime, SecondsFormat, TimeDelta, TimeZone, Utc,
};
use chrono_tz::Tz;
use serde_json::{json, Map, Value};

use super::errors::ApiError;

/// One end of an event.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum When {
    /// A timed start or end; `zone` is the event's own `timeZone`, if any.
    At {
        utc: DateTime<Utc>,
        zone: Option<Tz>,
    },
    /// An all-day start or (exclusive) end.
    AllDay(NaiveDate),
}

impl When {
    /// The instant this time stands for; all-day dates are midnight in the
    /// calendar's zone, as Google compares them with `timeMin`/`timeMax`.
    pub fn instant(&self, calendar_zone: Tz) -> DateTime<Utc> {
        match self {
            When::At { utc, .. } => *utc,
            When::AllDay(date) => {
                localize(date.and_hms_opt(0, 0, 0).unwrap_or_default(), calendar_zone)
            }
        }
    }

    /// Google's JSON of this time: a timed one carries the offset of its own
    /// zone (else the calendar's), and keeps its `timeZone` when it had one.
    pub fn to_json(&self, calendar_zone: Tz) -> Value {
        match self {
            When::At { utc, zone } => {
                let shown = zone.unwrap_or(calendar_zone);
                let mut out = Map::new();
                out.insert(
                    "dateTime".into(),
                    json!(utc
                        .with_timezone(&shown)
                        .to_rfc3339_opts(SecondsFormat::Secs, true)),
                );
                if let Some(zone) = zone {
                    out.insert("timeZone".into(), json!(zone.name()));
                }
                Value::Object(out)
            }
            When::AllDay(date) => json!({"date": date.format("%Y-%m-%d").to_string()}),
        }
    }
}

/// Reads `start` or `end` of an event body, refusing what Google refuses.
pub(crate) fn parse_when(body: &Map<String, Value>, field: &str) -> Result<When, ApiError> {
    let label = if field == "start" { "start" } else { "end" };
    let Some(Value::Object(obj)) = body.get(field) else {
        return Err(ApiError::bad_request(
            "global",
            "required",
            &format!("Missing {label} time."),
            None,
        ));
    };
    let zone = match obj.get("timeZone") {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) => Some(name.parse::<Tz>().map_err(|_| {
            ApiError::bad_request(
                "calendar",
                "invalid",
                &format!("Invalid time zone definition for {label} time."),
                None,
            )
        })?),
        Some(_) => return Err(ApiError::invalid("Invalid value for: timeZone")),
    };
    if let Some(Value::String(text)) = obj.get("dateTime") {
        if let Ok(at) = DateTime::parse_from_rfc3339(text) {
            return Ok(When::At {
                utc: at.with_timezone(&Utc),
                zone,
            });
        }
        // Without an offset Google reads the wall time in the given zone.
        let naive = NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S")
            .map_err(|_| ApiError::invalid(&format!("Invalid {label} time.")))?;
        let Some(tz) = zone else {
            return Err(ApiError::bad_request(
                "calendar",
                "required",
                &format!("Missing time zone definition for {label} time."),
                None,
            ));
        };
        return Ok(When::At {
            utc: localize(naive, tz),
            zone: Some(tz),
        });
    }
    if let Some(Value::String(text)) = obj.get("date") {
        let date = NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .map_err(|_| ApiError::invalid(&format!("Invalid {label} time.")))?;
        return Ok(When::AllDay(date));
    }
    Err(ApiError::bad_request(
        "global",
        "required",
        &format!("Missing {label} time."),
        None,
    ))
}

/// A wall time in `tz` as an instant. Ambiguous times (DST fall-back) take
/// the earlier instant and skipped ones (spring-forward) move an hour on,
/// which is what Google does for recurring instances that land in a gap.
pub(crate) fn localize(naive: NaiveDateTime, tz: Tz) -> DateTime<Utc> {
    match tz.from_local_datetime(&naive) {
        LocalResult::Single(at) => at.with_timezone(&Utc),
        LocalResult::Ambiguous(early, _) => early.with_timezone(&Utc),
        LocalResult::None => match tz.from_local_datetime(&(naive + TimeDelta::hours(1))) {
            LocalResult::Single(at) | LocalResult::Ambiguous(at, _) => at.with_timezone(&Utc),
            LocalResult::None => naive.and_utc(),
        },
    }
}

/// `updated`/`created` as Google prints them: UTC with milliseconds.
pub(crate) fn stamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parses an RFC 3339 query parameter (`timeMin`, `timeMax`, `updatedMin`);
/// Google requires the offset.
pub(crate) fn parse_query_time(name: &str, text: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(text)
        .map(|at| at.with_timezone(&Utc))
        .map_err(|_| ApiError::bad_request("global", "badRequest", "Bad Request", Some(name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_times_in_a_dst_gap_move_forward() {
        let tz: Tz = "America/New_York".parse().unwrap();
        let gap = NaiveDate::from_ymd_opt(2026, 3, 8)
            .unwrap()
            .and_hms_opt(2, 30, 0)
            .unwrap();
        assert_eq!(stamp(localize(gap, tz)), "2026-03-08T07:30:00.000Z");
    }

    #[test]
    fn timed_json_carries_the_offset_of_its_zone() {
        let tz: Tz = "Europe/Berlin".parse().unwrap();
        let when = When::At {
            utc: "2026-12-10T15:00:00Z".parse().unwrap(),
            zone: None,
        };
        assert_eq!(
            when.to_json(tz),
            json!({"dateTime": "2026-12-10T16:00:00+01:00"})
        );
    }
}
