//! The convergence checker, run once a history has gone quiet. It returns
//! every violation it finds (empty: the promise held):
//! - the live Google events and the user's appointments are the same
//!   multiset (instants in UTC, zones resolved against the calendar's);
//! - one Google event per appointment, by our links and by the private
//!   properties our inserts write; no appointment without a link (the only
//!   connection is the push target);
//! - every item whose history decides its end ends that way (the model's
//!   predictions, among them the host edits made while disconnected);
//! - deltas: versions strictly increase; an appointment whose last change
//!   came from Google has, after the last `plan` delta, a last delta equal to
//!   its row (`deleted` when a pull deleted it); what Redis delivered is the
//!   outbox, in order once repeats are dropped;
//! - no job is dead.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::history::{Sim, USER};
use super::model::{Key, Row};

/// A multiset difference, for the message.
fn minus(a: &[Row], b: &[Row]) -> Vec<Row> {
    let mut left = b.to_vec();
    let mut out = Vec::new();
    for row in a {
        match left.iter().position(|r| r == row) {
            Some(i) => {
                left.remove(i);
            }
            None => out.push(row.clone()),
        }
    }
    out
}

type RawRow = (
    i64,
    String,
    Option<String>,
    Option<String>,
    DateTime<Utc>,
    DateTime<Utc>,
    Option<String>,
    Option<String>,
    bool,
    DateTime<Utc>,
    DateTime<Utc>,
);

pub async fn check(sim: &mut Sim) -> Vec<String> {
    let mut out = Vec::new();
    let pool = sim.sync.app.pool.clone();
    let zone = sim.calendar_zone.clone();

    let raw: Vec<RawRow> = sqlx::query_as(
        "SELECT id, summary, description, location, start_at, end_at, start_time_zone, \
                end_time_zone, all_day, created_at, updated_at \
         FROM appointments WHERE user_id = $1 ORDER BY id",
    )
    .bind(USER)
    .fetch_all(&pool)
    .await
    .unwrap();
    let rows: BTreeMap<i64, Row> = raw
        .iter()
        .map(|r| {
            (
                r.0,
                Row::from_columns(
                    r.1.clone(),
                    r.2.clone(),
                    r.3.clone(),
                    r.4,
                    r.5,
                    r.6.clone(),
                    r.7.clone(),
                    r.8,
                    &zone,
                ),
            )
        })
        .collect();
    let events = sim.live_events();
    let event_rows: BTreeMap<String, Row> = events
        .iter()
        .map(|e| {
            (
                e["id"].as_str().unwrap().to_owned(),
                Row::from_event(e, &zone),
            )
        })
        .collect();

    // The multiset.
    let mut ours: Vec<Row> = rows.values().cloned().collect();
    let mut theirs: Vec<Row> = event_rows.values().cloned().collect();
    ours.sort();
    theirs.sort();
    if ours != theirs {
        out.push(format!(
            "the appointments and the live Google events differ:\n  only in appointments: {:#?}\n  only in Google: {:#?}",
            minus(&ours, &theirs),
            minus(&theirs, &ours)
        ));
    }

    // One event per appointment.
    let links: Vec<(i64, String)> =
        sqlx::query_as("SELECT appointment_id, event_id FROM plansync.links ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    let link_of: HashMap<i64, String> = links.iter().cloned().collect();
    let linked_events: HashMap<String, i64> = links.iter().map(|(a, e)| (e.clone(), *a)).collect();
    for (id, row) in &rows {
        match link_of.get(id) {
            None => out.push(format!("appointment #{id} has no link (push target)")),
            Some(event) => match event_rows.get(event) {
                None => out.push(format!(
                    "appointment #{id} links to event {event}, which is not live"
                )),
                Some(remote) if remote != row => out.push(format!(
                    "appointment #{id} and its event {event} differ:\n  row   {row:?}\n  event {remote:?}"
                )),
                Some(_) => {}
            },
        }
    }
    let mut named: HashMap<i64, Vec<String>> = HashMap::new();
    for event in &events {
        let id = event["id"].as_str().unwrap().to_owned();
        match linked_events.get(&id) {
            None => out.push(format!("live event {id} is linked to no appointment")),
            Some(a) if !rows.contains_key(a) => out.push(format!(
                "live event {id} is linked to appointment #{a}, which does not exist"
            )),
            Some(_) => {}
        }
        if let Some(a) = event["extendedProperties"]["private"]["plansyncAppointment"]
            .as_str()
            .and_then(|a| a.parse::<i64>().ok())
        {
            if link_of.get(&a) != Some(&id) {
                out.push(format!(
                    "live event {id} names appointment #{a} in its private properties, \
                     but #{a} links to {:?}",
                    link_of.get(&a)
                ));
            }
            named.entry(a).or_default().push(id);
        }
    }
    for (a, ids) in named {
        if ids.len() > 1 {
            out.push(format!("appointment #{a} has several live events: {ids:?}"));
        }
    }

    // The model's predictions, with items tied by the final links too.
    for (a, e) in &links {
        sim.model.tie(*a, e);
    }
    for p in sim.model.predictions() {
        sim.stats.predictions += 1;
        if p.disconnected {
            sim.stats.disconnected_predictions += 1;
        }
        let live_rows: Vec<(i64, &Row)> = p
            .keys
            .iter()
            .filter_map(|k| match k {
                Key::Appointment(a) => rows.get(a).map(|r| (*a, r)),
                Key::Event(_) => None,
            })
            .collect();
        let live_events: Vec<(&String, &Row)> = p
            .keys
            .iter()
            .filter_map(|k| match k {
                Key::Event(e) => event_rows.get_key_value(e),
                Key::Appointment(_) => None,
            })
            .collect();
        let what = format!(
            "item {:?} (decided by op {}, {:?}{})",
            p.keys,
            p.op,
            p.side,
            if p.disconnected {
                ", while disconnected"
            } else {
                ""
            }
        );
        match &p.row {
            None => {
                if !live_rows.is_empty() || !live_events.is_empty() {
                    out.push(format!(
                        "{what} was deleted, yet rows {live_rows:?} and events {live_events:?} remain"
                    ));
                }
            }
            Some(expected) => {
                if live_rows.len() != 1 || live_rows[0].1 != expected {
                    out.push(format!(
                        "{what} should end as {expected:?}, the appointments are {live_rows:?}"
                    ));
                }
                if live_events.len() != 1 || live_events[0].1 != expected {
                    out.push(format!(
                        "{what} should end as {expected:?}, the live events are {live_events:?}"
                    ));
                }
            }
        }
    }

    out.extend(check_deltas(sim, &raw).await);

    let dead: Vec<(i64, String, Option<String>)> = sqlx::query_as(
        "SELECT id, kind, last_error FROM plansync.jobs WHERE state = 'dead' ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    for (id, kind, error) in dead {
        out.push(format!("job {id} ({kind}) is dead: {error:?}"));
    }
    out
}

fn same_instant(payload: &Value, at: &DateTime<Utc>) -> bool {
    payload
        .as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .is_some_and(|p| p.timestamp_millis() == at.timestamp_millis())
}

/// Differences between an appointment payload and the row, by key.
fn payload_differences(p: &Value, r: &RawRow) -> Vec<&'static str> {
    let text = |v: &Value| v.as_str().map(str::to_owned);
    let mut out = Vec::new();
    if p["id"].as_i64() != Some(r.0) {
        out.push("id");
    }
    if p["userId"].as_i64() != Some(USER) {
        out.push("userId");
    }
    if text(&p["summary"]).as_ref() != Some(&r.1) {
        out.push("summary");
    }
    if text(&p["description"]) != r.2 {
        out.push("description");
    }
    if text(&p["location"]) != r.3 {
        out.push("location");
    }
    if !same_instant(&p["startAt"], &r.4) {
        out.push("startAt");
    }
    if !same_instant(&p["endAt"], &r.5) {
        out.push("endAt");
    }
    if text(&p["startTimeZone"]) != r.6 {
        out.push("startTimeZone");
    }
    if text(&p["endTimeZone"]) != r.7 {
        out.push("endTimeZone");
    }
    if p["allDay"].as_bool() != Some(r.8) {
        out.push("allDay");
    }
    if !same_instant(&p["createdAt"], &r.9) {
        out.push("createdAt");
    }
    if !same_instant(&p["updatedAt"], &r.10) {
        out.push("updatedAt");
    }
    out
}

async fn check_deltas(sim: &Sim, raw: &[RawRow]) -> Vec<String> {
    let mut out = Vec::new();
    let pool = &sim.sync.app.pool;
    // (outbox id, version, delta, seq, tx)
    let outbox: Vec<(i64, i64, Value, i64, i64)> = sqlx::query_as(
        "SELECT o.id, o.version, o.delta::jsonb, s.seq, s.tx FROM plansync.outbox o \
         JOIN public.sim_log s ON s.outbox_id = o.id WHERE o.user_id = $1 ORDER BY o.id",
    )
    .bind(USER)
    .fetch_all(pool)
    .await
    .unwrap();
    for pair in outbox.windows(2) {
        if pair[1].1 <= pair[0].1 {
            out.push(format!(
                "outbox versions do not increase: {} then {}",
                pair[0].1, pair[1].1
            ));
        }
    }
    for (_, version, delta, _, _) in &outbox {
        if delta["version"].as_i64() != Some(*version) {
            out.push(format!("delta {delta} is stored as version {version}"));
        }
    }
    let plans: Vec<(i64, i64)> = outbox
        .iter()
        .filter(|o| o.2["itemType"] == "plan")
        .map(|o| (o.3, o.4))
        .collect();

    // The last change of each appointment, and the transaction that inserted it.
    let last: Vec<(i64, String, Option<String>, i64, i64)> = sqlx::query_as(
        "SELECT DISTINCT ON (appointment_id) appointment_id, op, origin, seq, tx \
         FROM public.sim_log WHERE kind = 'appointment' ORDER BY appointment_id, seq DESC",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let inserted_in: HashMap<i64, i64> = sqlx::query_as::<_, (i64, i64)>(
        "SELECT appointment_id, tx FROM public.sim_log WHERE kind = 'appointment' AND op = 'INSERT'",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    let rows: HashMap<i64, &RawRow> = raw.iter().map(|r| (r.0, r)).collect();
    for (id, op, origin, seq, tx) in last {
        if origin.as_deref() != Some("google") {
            continue;
        }
        if plans
            .iter()
            .any(|(p_seq, p_tx)| *p_seq > seq || *p_tx == tx)
        {
            continue; // a `plan` delta after it resets what clients know
        }
        let delta = outbox
            .iter()
            .rev()
            .find(|o| o.2["itemType"] == "appointment" && o.2["entityId"].as_i64() == Some(id));
        let Some((_, version, delta, d_seq, d_tx)) = delta else {
            if op == "DELETE" && inserted_in.get(&id) == Some(&tx) {
                continue; // created and deleted in one transaction: coalesced away
            }
            out.push(format!(
                "appointment #{id}'s last change ({op} from Google) has no delta"
            ));
            continue;
        };
        if !(*d_seq > seq || *d_tx == tx) {
            out.push(format!(
                "appointment #{id}'s last delta (version {version}) predates its last change ({op} from Google)"
            ));
            continue;
        }
        match (op.as_str(), rows.get(&id)) {
            ("DELETE", _) => {
                if delta["action"] != "deleted" {
                    out.push(format!(
                        "appointment #{id} was deleted by a pull but its last delta is {delta}"
                    ));
                }
            }
            (_, Some(row)) => {
                let diff = payload_differences(&delta["data"]["appointment"], row);
                if !matches!(delta["action"].as_str(), Some("created" | "updated"))
                    || !diff.is_empty()
                {
                    out.push(format!(
                        "appointment #{id}'s last delta {delta} differs from its row {row:?} in {diff:?}"
                    ));
                }
            }
            (_, None) => out.push(format!(
                "appointment #{id} is gone but its last change was an {op} from Google"
            )),
        }
    }

    // What Redis delivered: each version once after dropping repeats, in
    // increasing order, and exactly the outbox's.
    let mut seen = HashSet::new();
    let mut highest = i64::MIN;
    for message in sim.published.lock().unwrap().iter() {
        if message["userId"].as_i64() != Some(USER) {
            out.push(format!("a message for another user: {message}"));
        }
        for d in message["deltas"].as_array().into_iter().flatten() {
            let v = d["version"].as_i64().unwrap_or(i64::MIN);
            if seen.insert(v) {
                if v < highest {
                    out.push(format!("Redis delivered version {v} after {highest}"));
                }
                highest = highest.max(v);
            }
        }
    }
    let committed: HashSet<i64> = outbox.iter().map(|o| o.1).collect();
    if seen != committed {
        out.push(format!(
            "Redis delivered versions {:?}, the outbox holds {:?}",
            sorted(&seen),
            sorted(&committed)
        ));
    }
    out
}

fn sorted(set: &HashSet<i64>) -> Vec<i64> {
    let mut v: Vec<i64> = set.iter().copied().collect();
    v.sort();
    v
}
