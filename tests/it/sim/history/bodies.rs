//! Google-side JSON bodies of the simulated edits, and the seeded generator.

use super::*;

/// Applies a partial edit.
pub fn apply(f: &mut Fields, c: &Change) {
    if let Some(s) = &c.summary {
        f.summary = s.clone();
    }
    if let Some(d) = &c.description {
        f.description = d.clone();
    }
    if let Some(l) = &c.location {
        f.location = l.clone();
    }
    if let Some(w) = &c.when {
        f.when = w.clone();
    }
}

pub(super) fn time_json(at: DateTime<Utc>, zone: Option<&str>) -> Value {
    // Written in the zone's own offset when it has one, as Google's UI does.
    let date_time = match zone.and_then(|z| z.parse::<chrono_tz::Tz>().ok()) {
        Some(tz) => at.with_timezone(&tz).to_rfc3339(),
        None => at.to_rfc3339(),
    };
    let mut t = Map::new();
    t.insert("dateTime".into(), json!(date_time));
    t.insert("date".into(), Value::Null);
    t.insert("timeZone".into(), zone.map_or(Value::Null, |z| json!(z)));
    Value::Object(t)
}

pub(super) fn date_json(date: NaiveDate) -> Value {
    json!({"date": date.format("%Y-%m-%d").to_string(), "dateTime": null, "timeZone": null})
}

pub(super) fn when_json(w: &When) -> (Value, Value) {
    match w {
        When::Timed {
            start,
            end,
            start_zone,
            end_zone,
        } => (
            time_json(*start, start_zone.as_deref()),
            time_json(*end, end_zone.as_deref()),
        ),
        When::AllDay { date, days } => (
            date_json(*date),
            date_json(*date + chrono::Duration::days(i64::from(*days))),
        ),
    }
}

/// A new event as Google's UI would send it.
pub(super) fn event_body(f: &Fields) -> Value {
    let (start, end) = when_json(&f.when);
    let strip = |v: Value| -> Value {
        Value::Object(
            v.as_object()
                .unwrap()
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        )
    };
    let mut body = json!({"summary": f.summary, "start": strip(start), "end": strip(end)});
    if let Some(d) = &f.description {
        body["description"] = json!(d);
    }
    if let Some(l) = &f.location {
        body["location"] = json!(l);
    }
    body
}

/// A merge patch of the changed columns (`null` clears).
pub(super) fn patch_body(c: &Change) -> Value {
    let mut body = Map::new();
    if let Some(s) = &c.summary {
        body.insert("summary".into(), json!(s));
    }
    if let Some(d) = &c.description {
        body.insert("description".into(), json!(d));
    }
    if let Some(l) = &c.location {
        body.insert("location".into(), json!(l));
    }
    if let Some(w) = &c.when {
        let (start, end) = when_json(w);
        body.insert("start".into(), start);
        body.insert("end".into(), end);
    }
    Value::Object(body)
}

pub(super) fn updated_of(event: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(event["updated"].as_str().expect("updated"))
        .unwrap()
        .with_timezone(&Utc)
}

/// The seed's generator: its first draws shape the world, the rest the ops.
pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}
