//! `events.list`: which items one listing covers (filters, incremental
//! since a sync token, cancelled items by Google's rules, series expanded
//! under `singleEvents`), their order (a sort key per `orderBy`), and one page
//! of them with the next page or sync token.

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use super::query::{ListParams, DEFAULT_PAGE, MAX_PAGE};
use super::series::Instance;
use super::tokens::{decode_page_token, decode_sync_token, encode_page_token, encode_sync_token};
use super::{Calendar, Calendars};
use crate::errors::ApiError;
use crate::times;

fn minimal_cancelled(body: &Map<String, Value>) -> Value {
    let mut out = Map::new();
    out.insert("kind".into(), json!("calendar#event"));
    for key in ["etag", "id"] {
        if let Some(v) = body.get(key) {
            out.insert(key.into(), v.clone());
        }
    }
    out.insert("status".into(), json!("cancelled"));
    for key in ["recurringEventId", "originalStartTime"] {
        if let Some(v) = body.get(key) {
            out.insert(key.into(), v.clone());
        }
    }
    Value::Object(out)
}

enum ItemSource {
    Stored(String),
    Generated { master: String, instance: Instance },
}

struct Item {
    key: String,
    cancelled: bool,
    source: ItemSource,
}

impl Calendars {
    /// The items one listing covers, before paging.
    fn items(&self, cal: &Calendar, p: &ListParams, since: Option<u64>) -> Vec<Item> {
        let zone = cal.zone;
        let mut out = Vec::new();
        let in_range = |start: DateTime<Utc>, end: DateTime<Utc>| {
            p.time_min.is_none_or(|min| end > min) && p.time_max.is_none_or(|max| start < max)
        };
        let matches = |body: &Map<String, Value>, updated: DateTime<Utc>| -> bool {
            if p.updated_min.is_some_and(|min| updated < min) {
                return false;
            }
            if let Some(uid) = &p.ical_uid {
                if body.get("iCalUID").and_then(Value::as_str) != Some(uid) {
                    return false;
                }
            }
            if let Some(q) = &p.q {
                let hit = ["summary", "description", "location"].iter().any(|k| {
                    body.get(*k)
                        .and_then(Value::as_str)
                        .is_some_and(|t| t.to_lowercase().contains(q))
                });
                if !hit {
                    return false;
                }
            }
            for (scope, props) in [("private", &p.private_props), ("shared", &p.shared_props)] {
                for (k, v) in props {
                    if body["extendedProperties"][scope][k].as_str() != Some(v) {
                        return false;
                    }
                }
            }
            true
        };
        let key_of =
            |id: &str, start: DateTime<Utc>, updated: DateTime<Utc>| match p.order_by.as_deref() {
                Some("startTime") => {
                    format!("{:016}:{id}", start.timestamp_millis() + 62_135_596_800_000)
                }
                Some("updated") => format!(
                    "{:016}:{id}",
                    updated.timestamp_millis() + 62_135_596_800_000
                ),
                _ => id.to_owned(),
            };
        // Whether a cancelled item shows in this listing: always in an
        // incremental one; in a full one with showDeleted, or (Google's rule)
        // a cancelled exception of a live series when singleEvents is off.
        let shows_cancelled = |exception_of_live_series: bool| {
            since.is_some()
                || p.show_deleted
                || p.updated_min.is_some()
                || (!p.single_events && exception_of_live_series)
        };
        for (id, stored) in &cal.events {
            let master_of_exception = stored.recurring_event_id().and_then(|m| cal.events.get(m));
            if stored.recurring_event_id().is_some() && p.single_events {
                continue; // merged into its series' expansion below
            }
            if stored.recurrence.is_some() && p.single_events {
                for instance in Self::instances(zone, id, stored) {
                    let exception = cal.events.get(&instance.id);
                    let (seq, cancelled, updated, start, end, body_src) = match exception {
                        Some(ex) => (
                            ex.seq.max(stored.seq),
                            ex.deleted || stored.deleted,
                            ex.updated.max(stored.updated),
                            ex.start.instant(zone),
                            ex.end.instant(zone),
                            &ex.body,
                        ),
                        None => (
                            stored.seq,
                            stored.deleted,
                            stored.updated,
                            instance.start.instant(zone),
                            instance.end.instant(zone),
                            &stored.body,
                        ),
                    };
                    if since.is_some_and(|since| seq <= since) {
                        continue;
                    }
                    if cancelled && !shows_cancelled(false) {
                        continue;
                    }
                    if !in_range(start, end) || !matches(body_src, updated) {
                        continue;
                    }
                    let source = match exception {
                        Some(_) => ItemSource::Stored(instance.id.clone()),
                        None => ItemSource::Generated {
                            master: id.clone(),
                            instance: instance.clone(),
                        },
                    };
                    out.push(Item {
                        key: key_of(&instance.id, start, updated),
                        cancelled,
                        source,
                    });
                }
                continue;
            }
            let cancelled = stored.deleted || master_of_exception.is_some_and(|m| m.deleted);
            if since.is_some_and(|since| stored.seq <= since) {
                continue;
            }
            let live_series = master_of_exception.is_some_and(|m| !m.deleted);
            if cancelled && !shows_cancelled(live_series) {
                continue;
            }
            let (start, end) = match &stored.recurrence {
                Some(_) => {
                    let instances = Self::instances(zone, id, stored);
                    match (instances.first(), instances.last()) {
                        (Some(first), Some(last)) => {
                            (first.start.instant(zone), last.end.instant(zone))
                        }
                        _ => (stored.start.instant(zone), stored.end.instant(zone)),
                    }
                }
                None => (stored.start.instant(zone), stored.end.instant(zone)),
            };
            if !in_range(start, end) || !matches(&stored.body, stored.updated) {
                continue;
            }
            out.push(Item {
                key: key_of(id, start, stored.updated),
                cancelled,
                source: ItemSource::Stored(id.clone()),
            });
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    fn render(&self, cal: &Calendar, item: &Item) -> Value {
        let body = match &item.source {
            ItemSource::Stored(id) => cal.events[id].body.clone(),
            ItemSource::Generated { master, instance } => {
                Self::instance_body(cal.zone, &cal.events[master], instance)
            }
        };
        if item.cancelled {
            minimal_cancelled(&body)
        } else {
            Value::Object(body)
        }
    }

    /// `events.list`, one page of it.
    pub fn list(
        &self,
        cal_id: &str,
        p: &ListParams,
        page_cap: Option<usize>,
    ) -> Result<Value, ApiError> {
        let cal = self.cal(cal_id)?;
        let since = match &p.sync_token {
            None => None,
            Some(token) => match decode_sync_token(token) {
                Some((seq, cal_of_token))
                    if cal_of_token == cal.id && seq >= cal.token_floor && seq <= self.seq =>
                {
                    Some(seq)
                }
                _ => return Err(ApiError::full_sync_required()),
            },
        };
        let (snapshot, after) = match &p.page_token {
            None => (self.seq, None),
            Some(token) => {
                let (snapshot, key) = decode_page_token(token).ok_or_else(|| {
                    ApiError::bad_request(
                        "global",
                        "invalid",
                        "Invalid page token value.",
                        Some("pageToken"),
                    )
                })?;
                (snapshot, Some(key))
            }
        };
        let page_size = p
            .max_results
            .unwrap_or(DEFAULT_PAGE)
            .min(MAX_PAGE)
            .min(page_cap.unwrap_or(usize::MAX))
            .max(1);
        let items = self.items(cal, p, since);
        let remaining: Vec<&Item> = match &after {
            Some(key) => items
                .iter()
                .filter(|i| i.key.as_str() > key.as_str())
                .collect(),
            None => items.iter().collect(),
        };
        let page: Vec<&Item> = remaining.iter().take(page_size).copied().collect();
        let more = remaining.len() > page.len();
        let mut out = Map::new();
        out.insert("kind".into(), json!("calendar#events"));
        out.insert(
            "etag".into(),
            json!(format!("\"p{}\"", snapshot.max(1) * 1000 + self.seq % 1000)),
        );
        out.insert("summary".into(), json!(cal.summary));
        if let Some(description) = &cal.description {
            out.insert("description".into(), json!(description));
        }
        out.insert("updated".into(), json!(times::stamp(cal.updated)));
        out.insert("timeZone".into(), json!(cal.zone.name()));
        out.insert("accessRole".into(), json!("owner"));
        out.insert(
            "defaultReminders".into(),
            json!([{"method": "popup", "minutes": 10}]),
        );
        if more {
            let last = page.last().map(|i| i.key.as_str()).unwrap_or_default();
            out.insert(
                "nextPageToken".into(),
                json!(encode_page_token(snapshot, last)),
            );
        } else {
            out.insert(
                "nextSyncToken".into(),
                json!(encode_sync_token(&cal.id, snapshot)),
            );
        }
        out.insert(
            "items".into(),
            Value::Array(page.iter().map(|i| self.render(cal, i)).collect()),
        );
        Ok(Value::Object(out))
    }
}
