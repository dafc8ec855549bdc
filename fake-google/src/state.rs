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

use std::collections::BTreeMap;

use base64::Engine;
use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use serde_json::{json, Map, Value};

use super::errors::ApiError;
use super::recurrence::Recurrence;
use super::times::{self, localize, parse_when, When};

/// How far ahead series are expanded (fixtures/README.md, Assumptions).
pub(crate) const EXPANSION_HORIZON_DAYS: i64 = 730;
/// Google's default and largest `maxResults`.
const DEFAULT_PAGE: usize = 250;
const MAX_PAGE: usize = 2500;

/// Fields a client never sets: the emulator owns them.
const SERVER_FIELDS: &[&str] = &[
    "kind",
    "etag",
    "id",
    "created",
    "updated",
    "iCalUID",
    "htmlLink",
    "creator",
    "organizer",
    "recurringEventId",
    "originalStartTime",
];

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

/// One generated occurrence of a series.
#[derive(Clone)]
struct Instance {
    id: String,
    original: When,
    start: When,
    end: When,
}

/// The parameters of `events.list`.
#[derive(Debug, Default)]
pub(crate) struct ListParams {
    sync_token: Option<String>,
    pub(crate) page_token: Option<String>,
    max_results: Option<usize>,
    show_deleted: bool,
    single_events: bool,
    time_min: Option<DateTime<Utc>>,
    time_max: Option<DateTime<Utc>>,
    updated_min: Option<DateTime<Utc>>,
    order_by: Option<String>,
    q: Option<String>,
    ical_uid: Option<String>,
    private_props: Vec<(String, String)>,
    shared_props: Vec<(String, String)>,
}

fn parse_bool(name: &str, value: &str) -> Result<bool, ApiError> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(ApiError::bad_request(
            "global",
            "invalidParameter",
            &format!("Invalid value '{value}'. Values must match the following regular expression: 'true|false'"),
            Some(name),
        )),
    }
}

fn parse_prop(value: &str) -> Result<(String, String), ApiError> {
    value
        .split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| ApiError::invalid("Invalid extended property constraint."))
}

impl ListParams {
    /// Reads the query string, refusing what Google refuses beside `syncToken`.
    pub fn from_query(query: Option<&str>) -> Result<ListParams, ApiError> {
        let mut p = ListParams::default();
        let pairs: Vec<(String, String)> =
            url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .into_owned()
                .collect();
        for (name, value) in &pairs {
            match name.as_str() {
                "syncToken" => p.sync_token = Some(value.clone()),
                "pageToken" => p.page_token = Some(value.clone()),
                "maxResults" => {
                    let n: i64 = value.parse().map_err(|_| {
                        ApiError::bad_request("global", "invalidParameter", &format!("Invalid value '{value}'. Values must be within the range: [1, 2500]"), Some("maxResults"))
                    })?;
                    if n < 1 {
                        return Err(ApiError::bad_request("global", "invalidParameter", &format!("Invalid value '{value}'. Values must be within the range: [1, 2500]"), Some("maxResults")));
                    }
                    p.max_results = Some(n.min(MAX_PAGE as i64) as usize);
                }
                "showDeleted" => p.show_deleted = parse_bool(name, value)?,
                "singleEvents" => p.single_events = parse_bool(name, value)?,
                "timeMin" => p.time_min = Some(times::parse_query_time(name, value)?),
                "timeMax" => p.time_max = Some(times::parse_query_time(name, value)?),
                "updatedMin" => p.updated_min = Some(times::parse_query_time(name, value)?),
                "orderBy" => {
                    if value != "startTime" && value != "updated" {
                        return Err(ApiError::bad_request(
                            "global",
                            "invalidParameter",
                            &format!("Invalid value '{value}'."),
                            Some("orderBy"),
                        ));
                    }
                    p.order_by = Some(value.clone())
                }
                "q" => p.q = Some(value.to_lowercase()),
                "iCalUID" => p.ical_uid = Some(value.clone()),
                "privateExtendedProperty" => p.private_props.push(parse_prop(value)?),
                "sharedExtendedProperty" => p.shared_props.push(parse_prop(value)?),
                _ => {}
            }
        }
        if p.sync_token.is_some() {
            for refused in [
                "timeMin",
                "timeMax",
                "updatedMin",
                "orderBy",
                "q",
                "iCalUID",
                "privateExtendedProperty",
                "sharedExtendedProperty",
            ] {
                if pairs.iter().any(|(name, _)| name == refused) {
                    return Err(ApiError::refused_with_sync_token(refused));
                }
            }
        }
        if p.order_by.as_deref() == Some("startTime") && !p.single_events {
            return Err(ApiError::bad_request(
                "global",
                "badRequest",
                "The requested ordering is not available for the particular query.",
                Some("orderBy"),
            ));
        }
        if let (Some(min), Some(max)) = (p.time_min, p.time_max) {
            if max <= min {
                return Err(ApiError::bad_request(
                    "calendar",
                    "timeRangeEmpty",
                    "The specified time range is empty.",
                    Some("timeMax"),
                ));
            }
        }
        Ok(p)
    }
}

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn encode_sync_token(calendar: &str, seq: u64) -> String {
    B64.encode(format!("s1|{seq}|{calendar}"))
}

fn decode_sync_token(token: &str) -> Option<(u64, String)> {
    let text = String::from_utf8(B64.decode(token).ok()?).ok()?;
    let mut parts = text.splitn(3, '|');
    (parts.next()? == "s1").then_some(())?;
    let seq = parts.next()?.parse().ok()?;
    Some((seq, parts.next()?.to_owned()))
}

fn encode_page_token(snapshot: u64, key: &str) -> String {
    B64.encode(format!("p1|{snapshot}|{key}"))
}

fn decode_page_token(token: &str) -> Option<(u64, String)> {
    let text = String::from_utf8(B64.decode(token).ok()?).ok()?;
    let mut parts = text.splitn(3, '|');
    (parts.next()? == "p1").then_some(())?;
    let snapshot = parts.next()?.parse().ok()?;
    Some((snapshot, parts.next()?.to_owned()))
}

/// Google's client-supplied id rule: base32hex digits, 5 to 1024 of them.
pub(crate) fn valid_event_id(id: &str) -> bool {
    (5..=1024).contains(&id.len()) && id.bytes().all(|b| matches!(b, b'a'..=b'v' | b'0'..=b'9'))
}

fn new_event_id() -> String {
    use rand::Rng;
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuv";
    let mut rng = rand::thread_rng();
    (0..26)
        .map(|_| DIGITS[rng.gen_range(0..32)] as char)
        .collect()
}

/// JSON merge patch (RFC 7396), which is how Google applies `events.patch`:
/// objects merge key by key, `null` clears, anything else replaces.
fn merge_patch(target: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (key, value) in patch {
        match value {
            Value::Null => {
                target.remove(key);
            }
            Value::Object(inner) => {
                let slot = target
                    .entry(key.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                if !slot.is_object() {
                    *slot = Value::Object(Map::new());
                }
                if let Value::Object(slot) = slot {
                    merge_patch(slot, inner);
                }
            }
            other => {
                target.insert(key.clone(), other.clone());
            }
        }
    }
}

fn if_match_ok(if_match: Option<&str>, etag: &str) -> bool {
    match if_match {
        None => true,
        Some(header) => header.split(',').map(str::trim).any(|candidate| {
            candidate == "*" || candidate == etag || candidate.trim_start_matches("W/") == etag
        }),
    }
}

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

/// A summary of a calendar for `calendars.get` and the handle.
pub(crate) struct CalendarInfo {
    pub id: String,
    pub summary: String,
    pub time_zone: String,
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

    /// Validates and normalises the times and recurrence of a body, the way
    /// Google stores them.
    fn prepare(
        zone: Tz,
        body: &mut Map<String, Value>,
    ) -> Result<(When, When, Option<Recurrence>), ApiError> {
        let start = parse_when(body, "start")?;
        let end = parse_when(body, "end")?;
        match (&start, &end) {
            (When::AllDay(s), When::AllDay(e)) if e <= s => {
                return Err(ApiError::bad_request(
                    "calendar",
                    "timeRangeEmpty",
                    "The specified time range is empty.",
                    None,
                ))
            }
            (When::At { utc: s, .. }, When::At { utc: e, .. }) if e < s => {
                return Err(ApiError::bad_request(
                    "calendar",
                    "timeRangeEmpty",
                    "The specified time range is empty.",
                    None,
                ))
            }
            (When::AllDay(_), When::At { .. }) | (When::At { .. }, When::AllDay(_)) => {
                return Err(ApiError::invalid(
                    "Start and end times must either both be date or both be dateTime.",
                ))
            }
            _ => {}
        }
        let recurrence = match body.get("recurrence") {
            None | Some(Value::Null) => None,
            Some(Value::Array(lines)) if lines.is_empty() => None,
            Some(Value::Array(lines)) => {
                let lines: Vec<String> = lines
                    .iter()
                    .map(|l| l.as_str().map(str::to_owned))
                    .collect::<Option<_>>()
                    .ok_or_else(|| ApiError::invalid("Invalid recurrence rule."))?;
                if let When::At { zone: None, .. } = start {
                    return Err(ApiError::bad_request(
                        "calendar",
                        "required",
                        "Missing time zone definition for start time.",
                        None,
                    ));
                }
                Some(
                    Recurrence::parse(&lines)
                        .map_err(|_| ApiError::invalid("Invalid recurrence rule."))?,
                )
            }
            Some(_) => return Err(ApiError::invalid("Invalid recurrence rule.")),
        };
        body.insert("start".into(), start.to_json(zone));
        body.insert("end".into(), end.to_json(zone));
        Ok((start, end, recurrence))
    }

    /// `events.insert` (also a user creating an event in Google's UI).
    pub fn insert(&mut self, cal_id: &str, body: Value) -> Result<Value, ApiError> {
        let Value::Object(mut body) = body else {
            return Err(ApiError::invalid("Invalid JSON payload received."));
        };
        let zone = self.cal(cal_id)?.zone;
        let id = match body.get("id") {
            Some(Value::String(id)) => {
                if !valid_event_id(id) {
                    return Err(ApiError::invalid("Invalid resource id value."));
                }
                id.clone()
            }
            None | Some(Value::Null) => new_event_id(),
            Some(_) => return Err(ApiError::invalid("Invalid resource id value.")),
        };
        if self.cal(cal_id)?.events.contains_key(&id) {
            return Err(ApiError::duplicate());
        }
        let (start, end, recurrence) = Self::prepare(zone, &mut body)?;
        for key in SERVER_FIELDS {
            body.remove(*key);
        }
        let stamp = self.next_stamp();
        let seq = self.next_seq();
        let owner = owner_email(cal_id);
        let mut full = Map::new();
        full.insert("kind".into(), json!("calendar#event"));
        full.insert("etag".into(), json!(Self::etag_for(stamp, seq)));
        full.insert("id".into(), json!(id));
        full.insert("status".into(), json!("confirmed"));
        full.insert(
            "htmlLink".into(),
            json!(format!(
                "https://www.google.com/calendar/event?eid={}",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{id} {owner}"))
            )),
        );
        full.insert("created".into(), json!(times::stamp(stamp)));
        full.insert("updated".into(), json!(times::stamp(stamp)));
        full.insert("creator".into(), json!({"email": owner, "self": true}));
        full.insert("organizer".into(), json!({"email": owner, "self": true}));
        full.insert("iCalUID".into(), json!(format!("{id}@google.com")));
        full.insert("sequence".into(), json!(0));
        full.insert("reminders".into(), json!({"useDefault": true}));
        full.insert("eventType".into(), json!("default"));
        for (key, value) in body {
            if !value.is_null() {
                full.insert(key, value);
            }
        }
        let deleted = full.get("status").and_then(Value::as_str) == Some("cancelled");
        let stored = Stored {
            body: full,
            seq,
            deleted,
            updated: stamp,
            start,
            end,
            recurrence,
        };
        let out = Value::Object(stored.body.clone());
        let cal = self.map.get_mut(cal_id).ok_or_else(ApiError::not_found)?;
        cal.updated = stamp;
        cal.events.insert(id, stored);
        Ok(out)
    }

    /// Loads an event from a fixture as Google holds it, keeping its server
    /// fields (`etag`, `updated`, ...) where the file gives them.
    pub fn load(&mut self, cal_id: &str, item: Value) -> Result<(), ApiError> {
        let Value::Object(mut body) = item else {
            return Err(ApiError::invalid("an item is not an object"));
        };
        let zone = self.cal(cal_id)?.zone;
        let id = body
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| ApiError::invalid("an item has no id"))?;
        let is_instance = body.contains_key("recurringEventId");
        if !is_instance && !valid_event_id(&id) {
            return Err(ApiError::invalid(&format!("invalid event id {id:?}")));
        }
        let cancelled = body.get("status").and_then(Value::as_str) == Some("cancelled");
        let (start, end, recurrence) = if cancelled && !body.contains_key("start") {
            // A cancelled instance may be minimal: take its original start.
            let original =
                parse_when(&body, "originalStartTime").map_err(|e| e.with_context(&id))?;
            (original.clone(), original, None)
        } else {
            Self::prepare(zone, &mut body).map_err(|e| e.with_context(&id))?
        };
        let stamp = self.next_stamp();
        let seq = self.next_seq();
        let updated = body
            .get("updated")
            .and_then(Value::as_str)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or(stamp);
        let owner = owner_email(cal_id);
        let defaults = [
            ("kind", json!("calendar#event")),
            ("etag", json!(Self::etag_for(stamp, seq))),
            ("status", json!("confirmed")),
            ("created", json!(times::stamp(updated))),
            ("updated", json!(times::stamp(updated))),
            ("creator", json!({"email": owner, "self": true})),
            ("organizer", json!({"email": owner, "self": true})),
            (
                "iCalUID",
                json!(format!(
                    "{}@google.com",
                    body.get("recurringEventId")
                        .and_then(Value::as_str)
                        .unwrap_or(&id)
                )),
            ),
            ("sequence", json!(0)),
            ("reminders", json!({"useDefault": true})),
            ("eventType", json!("default")),
        ];
        for (key, value) in defaults {
            body.entry(key).or_insert(value);
        }
        let cal = self.map.get_mut(cal_id).ok_or_else(ApiError::not_found)?;
        cal.updated = cal.updated.max(updated);
        cal.events.insert(
            id,
            Stored {
                body,
                seq,
                deleted: cancelled,
                updated,
                start,
                end,
                recurrence,
            },
        );
        Ok(())
    }

    /// The instances of a stored series, up to the expansion horizon.
    fn instances(zone: Tz, master_id: &str, master: &Stored) -> Vec<Instance> {
        let Some(rec) = &master.recurrence else {
            return Vec::new();
        };
        let horizon_at = Utc::now() + TimeDelta::days(EXPANSION_HORIZON_DAYS);
        match (&master.start, &master.end) {
            (
                When::At {
                    utc,
                    zone: start_zone,
                },
                When::At {
                    utc: end_utc,
                    zone: end_zone,
                },
            ) => {
                let series_zone = start_zone.unwrap_or(zone);
                let local = utc.with_timezone(&series_zone).naive_local();
                let horizon = horizon_at.with_timezone(&series_zone).date_naive();
                let duration = *end_utc - *utc;
                rec.expand(local, horizon, &|t| localize(t, series_zone))
                    .into_iter()
                    .map(|t| {
                        let at = localize(t, series_zone);
                        let start = When::At {
                            utc: at,
                            zone: *start_zone,
                        };
                        Instance {
                            id: format!("{master_id}_{}", at.format("%Y%m%dT%H%M%SZ")),
                            original: start.clone(),
                            start,
                            end: When::At {
                                utc: at + duration,
                                zone: *end_zone,
                            },
                        }
                    })
                    .collect()
            }
            (When::AllDay(first), When::AllDay(last)) => {
                let span = *last - *first;
                let horizon = horizon_at.with_timezone(&zone).date_naive();
                rec.expand(
                    first.and_hms_opt(0, 0, 0).unwrap_or_default(),
                    horizon,
                    &|t| localize(t, zone),
                )
                .into_iter()
                .map(|t| {
                    let date = t.date();
                    Instance {
                        id: format!("{master_id}_{}", date.format("%Y%m%d")),
                        original: When::AllDay(date),
                        start: When::AllDay(date),
                        end: When::AllDay(date + span),
                    }
                })
                .collect()
            }
            _ => Vec::new(),
        }
    }

    fn instance_body(zone: Tz, master: &Stored, instance: &Instance) -> Map<String, Value> {
        let mut body = master.body.clone();
        body.remove("recurrence");
        let master_id = body.get("id").cloned().unwrap_or(Value::Null);
        body.insert("id".into(), json!(instance.id));
        body.insert("recurringEventId".into(), master_id);
        body.insert("originalStartTime".into(), instance.original.to_json(zone));
        body.insert("start".into(), instance.start.to_json(zone));
        body.insert("end".into(), instance.end.to_json(zone));
        if master.deleted {
            body.insert("status".into(), json!("cancelled"));
        }
        body
    }

    /// Finds a not-yet-overridden instance by its id `<masterId>_<start>`.
    fn find_generated(cal: &Calendar, id: &str) -> Option<(String, Instance)> {
        let (master_id, _) = id.rsplit_once('_')?;
        let master = cal.events.get(master_id)?;
        Self::instances(cal.zone, master_id, master)
            .into_iter()
            .find(|i| i.id == id)
            .map(|i| (master_id.to_owned(), i))
    }

    /// `events.get`: deleted events come back with `status: "cancelled"`.
    pub fn get(&self, cal_id: &str, event_id: &str) -> Result<Value, ApiError> {
        let cal = self.cal(cal_id)?;
        if let Some(stored) = cal.events.get(event_id) {
            let mut body = stored.body.clone();
            if stored.deleted {
                body.insert("status".into(), json!("cancelled"));
            }
            return Ok(Value::Object(body));
        }
        let (master_id, instance) =
            Self::find_generated(cal, event_id).ok_or_else(ApiError::not_found)?;
        Ok(Value::Object(Self::instance_body(
            cal.zone,
            &cal.events[&master_id],
            &instance,
        )))
    }

    /// Turns a generated instance into a stored exception, so it can be
    /// edited or cancelled on its own (what Google does on the first edit).
    fn materialize(&mut self, cal_id: &str, event_id: &str) -> Result<(), ApiError> {
        let cal = self.cal(cal_id)?;
        if cal.events.contains_key(event_id) {
            return Ok(());
        }
        let (master_id, instance) =
            Self::find_generated(cal, event_id).ok_or_else(ApiError::not_found)?;
        let master = &cal.events[&master_id];
        let body = Self::instance_body(cal.zone, master, &instance);
        let stored = Stored {
            body,
            seq: master.seq,
            deleted: master.deleted,
            updated: master.updated,
            start: instance.start,
            end: instance.end,
            recurrence: None,
        };
        self.map
            .get_mut(cal_id)
            .ok_or_else(ApiError::not_found)?
            .events
            .insert(event_id.to_owned(), stored);
        Ok(())
    }

    /// Stores a new version of an event: bumps etag, updated, sequence.
    fn write(
        &mut self,
        cal_id: &str,
        event_id: &str,
        mut body: Map<String, Value>,
        deleted: bool,
    ) -> Result<Value, ApiError> {
        let zone = self.cal(cal_id)?.zone;
        let is_instance = body.contains_key("recurringEventId");
        let (start, end, recurrence) = Self::prepare(zone, &mut body)?;
        if is_instance && recurrence.is_some() {
            return Err(ApiError::invalid("Invalid recurrence rule."));
        }
        let stamp = self.next_stamp();
        let seq = self.next_seq();
        body.insert("etag".into(), json!(Self::etag_for(stamp, seq)));
        body.insert("updated".into(), json!(times::stamp(stamp)));
        let sequence = body.get("sequence").and_then(Value::as_i64).unwrap_or(0);
        body.insert("sequence".into(), json!(sequence + 1));
        body.insert(
            "status".into(),
            json!(if deleted { "cancelled" } else { "confirmed" }),
        );
        let cal = self.map.get_mut(cal_id).ok_or_else(ApiError::not_found)?;
        cal.updated = stamp;
        let stored = Stored {
            body,
            seq,
            deleted,
            updated: stamp,
            start,
            end,
            recurrence,
        };
        let out = Value::Object(stored.body.clone());
        cal.events.insert(event_id.to_owned(), stored);
        Ok(out)
    }

    /// Checks existence, `If-Match` and deletion before an edit, in Google's
    /// order, and returns the current body.
    fn editable(
        &mut self,
        cal_id: &str,
        event_id: &str,
        if_match: Option<&str>,
        restoring: bool,
    ) -> Result<Map<String, Value>, ApiError> {
        self.materialize(cal_id, event_id)?;
        let stored = &self.cal(cal_id)?.events[event_id];
        if !if_match_ok(if_match, stored.etag()) {
            return Err(ApiError::condition_not_met());
        }
        if stored.deleted && !restoring {
            return Err(ApiError::deleted());
        }
        Ok(stored.body.clone())
    }

    /// `events.patch`: a merge patch; `null` clears a field.
    pub fn patch(
        &mut self,
        cal_id: &str,
        event_id: &str,
        patch: Value,
        if_match: Option<&str>,
    ) -> Result<Value, ApiError> {
        let (patch, deleted, restoring) = client_fields(patch)?;
        let mut body = self.editable(cal_id, event_id, if_match, restoring)?;
        merge_patch(&mut body, &patch);
        self.write(cal_id, event_id, body, deleted)
    }

    /// `events.update`: replaces every client field.
    pub fn update(
        &mut self,
        cal_id: &str,
        event_id: &str,
        new_body: Value,
        if_match: Option<&str>,
    ) -> Result<Value, ApiError> {
        let (new_body, deleted, restoring) = client_fields(new_body)?;
        let old = self.editable(cal_id, event_id, if_match, restoring)?;
        let mut body: Map<String, Value> = old
            .into_iter()
            .filter(|(k, _)| SERVER_FIELDS.contains(&k.as_str()) || k == "sequence")
            .collect();
        for (key, value) in new_body {
            if !value.is_null() {
                body.insert(key, value);
            }
        }
        self.write(cal_id, event_id, body, deleted)
    }

    /// `events.delete`: a deleted event answers 410 `deleted`.
    pub fn delete(
        &mut self,
        cal_id: &str,
        event_id: &str,
        if_match: Option<&str>,
    ) -> Result<(), ApiError> {
        self.materialize(cal_id, event_id)?;
        let stored = &self.cal(cal_id)?.events[event_id];
        if stored.deleted {
            return Err(ApiError::deleted());
        }
        if !if_match_ok(if_match, stored.etag()) {
            return Err(ApiError::condition_not_met());
        }
        let body = stored.body.clone();
        self.write(cal_id, event_id, body, true).map(|_| ())
    }

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

/// The address Google shows as creator/organizer of a calendar's events.
fn owner_email(cal_id: &str) -> String {
    if cal_id.contains('@') {
        cal_id.to_owned()
    } else {
        "owner@fake-google.test".to_owned()
    }
}

impl ApiError {
    /// Names the fixture item an error came from (fixture loading only).
    pub(crate) fn with_context(mut self, id: &str) -> ApiError {
        if let Some(message) = self.body["error"]["message"].as_str() {
            self.body["error"]["message"] = json!(format!("{message} (event {id})"));
        }
        self
    }
}

/// A client's event body for patch/update: the fields it may set (server
/// fields dropped), and whether its `status` cancels or restores the event.
fn client_fields(body: Value) -> Result<(Map<String, Value>, bool, bool), ApiError> {
    let Value::Object(mut body) = body else {
        return Err(ApiError::invalid("Invalid JSON payload received."));
    };
    for key in SERVER_FIELDS {
        body.remove(*key);
    }
    let status = body.remove("status");
    let status = status.as_ref().and_then(Value::as_str);
    Ok((
        body,
        status == Some("cancelled"),
        status == Some("confirmed"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_follow_googles_rule() {
        assert!(valid_event_id("abcde"));
        assert!(valid_event_id("0123456789abcdefghijklmnopqrstuv"));
        assert!(!valid_event_id("abcd"));
        assert!(!valid_event_id("abcdw"));
        assert!(!valid_event_id("ABCDE"));
        assert!(!valid_event_id(&"a".repeat(1025)));
    }

    #[test]
    fn merge_patch_clears_nulls_and_merges_objects() {
        let mut target = json!({"a": 1, "b": {"c": 2, "d": 3}, "e": [1]})
            .as_object()
            .unwrap()
            .clone();
        let patch = json!({"a": null, "b": {"c": null, "x": 1}, "e": [2]})
            .as_object()
            .unwrap()
            .clone();
        merge_patch(&mut target, &patch);
        assert_eq!(
            Value::Object(target),
            json!({"b": {"d": 3, "x": 1}, "e": [2]})
        );
    }

    #[test]
    fn tokens_round_trip() {
        assert_eq!(
            decode_sync_token(&encode_sync_token("a@b", 42)),
            Some((42, "a@b".into()))
        );
        assert_eq!(
            decode_page_token(&encode_page_token(7, "k:1|x")),
            Some((7, "k:1|x".into()))
        );
        assert_eq!(decode_sync_token("garbage"), None);
    }
}
