//! Recurring events: the instances a series expands into (up to a horizon),
//! the body Google shows for one instance, and turning an instance into a
//! stored exception on its first edit. Instance ids are Google's
//! `<masterId>_<start>` (`...T...Z` for timed, `YYYYMMDD` for all-day series).

use chrono::{TimeDelta, Utc};
use chrono_tz::Tz;
use serde_json::{json, Map, Value};

use super::{Calendar, Calendars, Stored};
use crate::errors::ApiError;
use crate::times::{localize, When};

/// How far ahead series are expanded (fixtures/README.md, Assumptions).
pub(crate) const EXPANSION_HORIZON_DAYS: i64 = 730;

/// One generated occurrence of a series.
#[derive(Clone)]
pub(super) struct Instance {
    pub(super) id: String,
    original: When,
    pub(super) start: When,
    pub(super) end: When,
}

impl Calendars {
    /// The instances of a stored series, up to the expansion horizon.
    pub(super) fn instances(zone: Tz, master_id: &str, master: &Stored) -> Vec<Instance> {
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

    pub(super) fn instance_body(
        zone: Tz,
        master: &Stored,
        instance: &Instance,
    ) -> Map<String, Value> {
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
    pub(super) fn find_generated(cal: &Calendar, id: &str) -> Option<(String, Instance)> {
        let (master_id, _) = id.rsplit_once('_')?;
        let master = cal.events.get(master_id)?;
        Self::instances(cal.zone, master_id, master)
            .into_iter()
            .find(|i| i.id == id)
            .map(|i| (master_id.to_owned(), i))
    }

    /// Turns a generated instance into a stored exception, so it can be
    /// edited or cancelled on its own (what Google does on the first edit).
    pub(super) fn materialize(&mut self, cal_id: &str, event_id: &str) -> Result<(), ApiError> {
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
}
