//! Calendars, their events, and the change sequence behind sync tokens.
//!
//! Every write (through the API or "as a user in Google's UI") takes the next
//! number of one global change sequence and stamps the event with it. A sync
//! token is that sequence number at the start of a listing, so an incremental
//! list is "every event whose stamp is greater than the token". A page token
//! carries the same snapshot plus a keyset cursor (the last item's sort key),
//! so a change made while a client pages shifts nothing: the changed event
//! comes again with the next sync, whose token is the snapshot. Deleted events
//! are kept (Google keeps them too: their ids stay taken) and come back from
//! incremental lists as minimal `cancelled` bodies.
//!
//! This module owns the data (calendars, stored events, the sequence) and its
//! bookkeeping; the operations live beside it, one concern each:
//! [`query`] parses `events.list`'s parameters, [`tokens`] encodes sync and
//! page tokens, [`series`] expands recurring events into instances,
//! [`events`] holds the writes and reads of one event, and [`listing`]
//! answers `events.list` one page at a time.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use serde_json::{Map, Value};

use super::errors::ApiError;
use super::recurrence::Recurrence;
use super::times::When;

mod events;
mod listing;
mod query;
mod series;
mod tokens;

pub(crate) use query::ListParams;

pub(crate) struct Calendars {
    map: BTreeMap<String, Calendar>,
    seq: u64,
    last_stamp: DateTime<Utc>,
}

pub(crate) struct Calendar {
    id: String,
    summary: String,
    description: Option<String>,
    zone: Tz,
    /// Sync tokens older than this are refused with 410.
    token_floor: u64,
    updated: DateTime<Utc>,
    events: BTreeMap<String, Stored>,
}

#[derive(Clone)]
struct Stored {
    body: Map<String, Value>,
    seq: u64,
    deleted: bool,
    updated: DateTime<Utc>,
    start: When,
    end: When,
    recurrence: Option<Recurrence>,
}

impl Stored {
    fn etag(&self) -> &str {
        self.body
            .get("etag")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }
    fn recurring_event_id(&self) -> Option<&str> {
        self.body.get("recurringEventId").and_then(Value::as_str)
    }
}

/// A summary of a calendar for `calendars.get` and the handle.
pub(crate) struct CalendarInfo {
    pub id: String,
    pub summary: String,
    pub time_zone: String,
}

impl Calendars {
    pub fn new() -> Calendars {
        Calendars {
            map: BTreeMap::new(),
            seq: 0,
            last_stamp: DateTime::<Utc>::MIN_UTC,
        }
    }

    /// A strictly increasing write time, so `updated` orders every write.
    fn next_stamp(&mut self) -> DateTime<Utc> {
        let now = Utc::now();
        let now = DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now);
        let stamp = if now <= self.last_stamp {
            self.last_stamp + TimeDelta::milliseconds(1)
        } else {
            now
        };
        self.last_stamp = stamp;
        stamp
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn etag_for(stamp: DateTime<Utc>, seq: u64) -> String {
        format!("\"{}{:03}\"", stamp.timestamp_millis(), seq % 1000)
    }

    pub fn add_calendar(
        &mut self,
        id: &str,
        summary: &str,
        time_zone: &str,
        description: Option<String>,
    ) -> Result<(), ApiError> {
        let zone: Tz = time_zone
            .parse()
            .map_err(|_| ApiError::invalid("Invalid time zone definition."))?;
        let stamp = self.next_stamp();
        let entry = self.map.entry(id.to_owned()).or_insert_with(|| Calendar {
            id: id.to_owned(),
            summary: summary.to_owned(),
            description: None,
            zone,
            token_floor: 0,
            updated: stamp,
            events: BTreeMap::new(),
        });
        entry.summary = summary.to_owned();
        entry.zone = zone;
        entry.description = description;
        Ok(())
    }

    pub fn calendar_ids(&self) -> Vec<String> {
        self.map.keys().cloned().collect()
    }

    pub fn calendar_info(&self, id: &str) -> Result<CalendarInfo, ApiError> {
        let cal = self.map.get(id).ok_or_else(ApiError::not_found)?;
        Ok(CalendarInfo {
            id: cal.id.clone(),
            summary: cal.summary.clone(),
            time_zone: cal.zone.name().to_owned(),
        })
    }

    /// Makes every sync token issued so far for the calendar answer 410.
    pub fn invalidate_sync_tokens(&mut self, id: &str) -> Result<(), ApiError> {
        // A fresh sequence number, so the next full sync's token is valid.
        let seq = self.next_seq();
        let cal = self.map.get_mut(id).ok_or_else(ApiError::not_found)?;
        cal.token_floor = seq;
        Ok(())
    }

    fn cal(&self, id: &str) -> Result<&Calendar, ApiError> {
        self.map.get(id).ok_or_else(ApiError::not_found)
    }
}
