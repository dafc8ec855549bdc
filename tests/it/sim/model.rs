//! What the test knows about the history it made: every write and delete of
//! each side, grouped into items (an appointment and its Google event are one
//! item once a link or the event's private properties tie them), and the
//! outcome each item must end with when its history allows only one.
//!
//! Predictions stay within what the sync rules decide without a race:
//! - an item deleted on either side ends deleted everywhere (delete beats
//!   edit, in both directions);
//! - otherwise the item ends with its last write, provided that write is also
//!   the newest by the timestamps the rules compare (host `updated_at` vs
//!   Google's `updated`, ties to Google). Anything else is left to the
//!   general checks.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, TimeZone, Utc};
use serde_json::Value;

/// One appointment or event, as the checker compares them: instants in UTC,
/// zones resolved (a missing zone is the calendar's; all-day items carry no
/// zone, as Google's dates do not).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Row {
    pub summary: String,
    pub description: Option<String>,
    pub location: Option<String>,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub all_day: bool,
    pub start_zone: Option<String>,
    pub end_zone: Option<String>,
}

impl Row {
    /// From the columns of an `appointments` row.
    #[allow(clippy::too_many_arguments)]
    pub fn from_columns(
        summary: String,
        description: Option<String>,
        location: Option<String>,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        start_zone: Option<String>,
        end_zone: Option<String>,
        all_day: bool,
        calendar_zone: &str,
    ) -> Row {
        let resolve =
            |z: Option<String>| (!all_day).then(|| z.unwrap_or_else(|| calendar_zone.to_owned()));
        Row {
            summary,
            description,
            location,
            start,
            end,
            all_day,
            start_zone: resolve(start_zone),
            end_zone: resolve(end_zone),
        }
    }

    /// From a Google event's JSON, read independently of the crate's own
    /// mapping so that a mapping bug cannot hide from the checker.
    pub fn from_event(event: &Value, calendar_zone: &str) -> Row {
        let time = |t: &Value| -> (DateTime<Utc>, bool, Option<String>) {
            let zone = t["timeZone"].as_str().unwrap_or(calendar_zone).to_owned();
            match t["date"].as_str() {
                Some(date) => {
                    let date =
                        chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").expect("an event date");
                    (
                        Utc.from_utc_datetime(&date.and_hms_opt(0, 0, 0).unwrap()),
                        true,
                        None,
                    )
                }
                None => (
                    DateTime::parse_from_rfc3339(
                        t["dateTime"].as_str().expect("an event dateTime"),
                    )
                    .expect("an RFC 3339 dateTime")
                    .with_timezone(&Utc),
                    false,
                    Some(zone),
                ),
            }
        };
        let (start, all_day, start_zone) = time(&event["start"]);
        let (end, _, end_zone) = time(&event["end"]);
        Row {
            summary: event["summary"].as_str().unwrap_or_default().to_owned(),
            description: event["description"].as_str().map(str::to_owned),
            location: event["location"].as_str().map(str::to_owned),
            start,
            end,
            all_day,
            start_zone,
            end_zone,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    Appointment(i64),
    Event(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Host,
    Google,
}

#[derive(Debug, Clone)]
pub struct Touch {
    pub op: usize,
    pub side: Side,
    /// The values written and the timestamp the sync rules will compare;
    /// `None` for a delete.
    pub write: Option<(Row, DateTime<Utc>)>,
    /// Made while the connection was disconnected.
    pub disconnected: bool,
}

/// The expected end of one item.
#[derive(Debug, Clone)]
pub struct Prediction {
    pub keys: Vec<Key>,
    /// `None`: deleted on both sides.
    pub row: Option<Row>,
    /// The op whose outcome this is, for the failure message.
    pub op: usize,
    pub side: Side,
    pub disconnected: bool,
}

#[derive(Default)]
pub struct Model {
    parent: HashMap<Key, Key>,
    touches: Vec<(Key, Touch)>,
}

impl Model {
    fn find(&mut self, key: &Key) -> Key {
        // Every key seen is remembered (a root is its own parent).
        self.parent
            .entry(key.clone())
            .or_insert_with(|| key.clone());
        let mut root = key.clone();
        while let Some(p) = self.parent.get(&root) {
            if *p == root {
                break;
            }
            root = p.clone();
        }
        // Path compression keeps later finds short.
        let mut at = key.clone();
        while at != root {
            let next = self
                .parent
                .insert(at.clone(), root.clone())
                .unwrap_or(root.clone());
            at = next;
        }
        root
    }

    /// The appointment and the event are one item.
    pub fn tie(&mut self, appointment: i64, event: &str) {
        let a = self.find(&Key::Appointment(appointment));
        let e = self.find(&Key::Event(event.to_owned()));
        if a != e {
            self.parent.insert(a, e);
        }
    }

    pub fn touch(&mut self, key: Key, touch: Touch) {
        self.find(&key);
        self.touches.push((key, touch));
    }

    /// The predictions of every item whose history decides its end.
    pub fn predictions(&mut self) -> Vec<Prediction> {
        let touches = std::mem::take(&mut self.touches);
        let mut items: BTreeMap<Key, (Vec<Key>, Vec<Touch>)> = BTreeMap::new();
        for (key, touch) in &touches {
            let root = self.find(key);
            let item = items.entry(root).or_default();
            if !item.0.contains(key) {
                item.0.push(key.clone());
            }
            item.1.push(touch.clone());
        }
        // Keys tied to an item without a touch of their own (e.g. the event a
        // host insert was pushed to) belong to it too.
        let all: Vec<Key> = self.parent.keys().cloned().collect();
        for key in all {
            let root = self.find(&key);
            if let Some(item) = items.get_mut(&root) {
                if !item.0.contains(&key) {
                    item.0.push(key);
                }
            }
        }
        self.touches = touches;
        let mut out = Vec::new();
        for (_, (keys, touches)) in items {
            let last = touches.last().expect("an item has a touch").clone();
            if let Some(delete) = touches.iter().find(|t| t.write.is_none()) {
                out.push(Prediction {
                    keys,
                    row: None,
                    op: delete.op,
                    side: delete.side,
                    disconnected: delete.disconnected,
                });
                continue;
            }
            let (row, at) = last.write.clone().expect("no delete here");
            let newest = touches.iter().all(|t| match (&t.write, t.side) {
                (_, side) if side == last.side => true,
                (Some((_, other)), Side::Host) => *other <= at, // ties: Google
                (Some((_, other)), Side::Google) => *other < at,
                (None, _) => false,
            });
            if newest {
                out.push(Prediction {
                    keys,
                    row: Some(row),
                    op: last.op,
                    side: last.side,
                    disconnected: last.disconnected,
                });
            }
        }
        out
    }
}
