//! RRULE/EXDATE expansion (RFC 5545, the subset Google's UI produces).
//!
//! Supported: `FREQ=DAILY|WEEKLY|MONTHLY|YEARLY` with `INTERVAL`, `COUNT`,
//! `UNTIL`, `BYDAY` (weekdays; ordinals such as `2TU`/`-1FR` for monthly),
//! `BYMONTHDAY` (monthly) and `WKST`, plus `EXDATE` lines. Anything else is
//! refused with Google's 400 rather than expanded wrongly. Instances are
//! generated in the series' wall-clock zone, so a 09:00 meeting stays at 09:00
//! across a DST change, and never further than the caller's horizon (the
//! emulator uses two years from now).

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, TimeDelta, Utc, Weekday};

/// A parsed `recurrence` array.
#[derive(Debug, Clone)]
pub(crate) struct Recurrence {
    rule: Rule,
    exdates: Vec<Exdate>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Freq {
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

#[derive(Debug, Clone)]
struct Rule {
    freq: Freq,
    interval: u32,
    count: Option<u32>,
    until: Option<Until>,
    by_day: Vec<(Option<i32>, Weekday)>,
    by_month_day: Vec<i32>,
    wkst: Weekday,
}

#[derive(Debug, Clone, Copy)]
enum Until {
    Date(NaiveDate),
    At(DateTime<Utc>),
}

#[derive(Debug, Clone)]
enum Exdate {
    Date(NaiveDate),
    /// A wall time in the series' zone (`EXDATE;TZID=...:` or floating).
    Local(NaiveDateTime),
    At(DateTime<Utc>),
}

/// Why a `recurrence` array was refused.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Unsupported(pub String);

/// The most instances one series yields, whatever its rule: a guard against
/// `FREQ=DAILY` series that started decades ago.
const MAX_INSTANCES: usize = 5_000;

fn weekday(code: &str) -> Option<Weekday> {
    Some(match code {
        "MO" => Weekday::Mon,
        "TU" => Weekday::Tue,
        "WE" => Weekday::Wed,
        "TH" => Weekday::Thu,
        "FR" => Weekday::Fri,
        "SA" => Weekday::Sat,
        "SU" => Weekday::Sun,
        _ => return None,
    })
}

fn parse_date_or_time(text: &str) -> Option<Until> {
    if let Ok(at) = NaiveDateTime::parse_from_str(text, "%Y%m%dT%H%M%SZ") {
        return Some(Until::At(at.and_utc()));
    }
    if let Ok(at) = NaiveDateTime::parse_from_str(text, "%Y%m%dT%H%M%S") {
        // A floating UNTIL: Google treats it as UTC.
        return Some(Until::At(at.and_utc()));
    }
    NaiveDate::parse_from_str(text, "%Y%m%d")
        .ok()
        .map(Until::Date)
}

impl Recurrence {
    pub fn parse(lines: &[String]) -> Result<Recurrence, Unsupported> {
        let mut rule = None;
        let mut exdates = Vec::new();
        for line in lines {
            let (head, value) = line
                .split_once(':')
                .ok_or_else(|| Unsupported(format!("malformed recurrence line {line:?}")))?;
            let name = head
                .split(';')
                .next()
                .unwrap_or_default()
                .to_ascii_uppercase();
            match name.as_str() {
                "RRULE" => {
                    if rule.is_some() {
                        return Err(Unsupported("more than one RRULE".into()));
                    }
                    rule = Some(parse_rule(value)?);
                }
                "EXDATE" => {
                    let has_tzid = head.to_ascii_uppercase().contains("TZID=");
                    for part in value.split(',') {
                        let ex = if let Ok(date) = NaiveDate::parse_from_str(part, "%Y%m%d") {
                            Exdate::Date(date)
                        } else if let Ok(at) = NaiveDateTime::parse_from_str(part, "%Y%m%dT%H%M%SZ")
                        {
                            Exdate::At(at.and_utc())
                        } else if let Ok(at) = NaiveDateTime::parse_from_str(part, "%Y%m%dT%H%M%S")
                        {
                            let _ = has_tzid; // TZID must be the series' zone (what Google writes)
                            Exdate::Local(at)
                        } else {
                            return Err(Unsupported(format!("malformed EXDATE {part:?}")));
                        };
                        exdates.push(ex);
                    }
                }
                other => return Err(Unsupported(format!("{other} is not supported"))),
            }
        }
        let rule = rule.ok_or_else(|| Unsupported("no RRULE".into()))?;
        Ok(Recurrence { rule, exdates })
    }

    /// The wall-clock starts of the series' instances, first at `start`
    /// (itself included when the rule matches it), up to `horizon`
    /// (inclusive) and within COUNT/UNTIL, minus EXDATEs. `to_utc` turns a
    /// wall time of the series' zone into an instant (for UNTIL/EXDATE).
    pub fn expand(
        &self,
        start: NaiveDateTime,
        horizon: NaiveDate,
        to_utc: &dyn Fn(NaiveDateTime) -> DateTime<Utc>,
    ) -> Vec<NaiveDateTime> {
        let rule = &self.rule;
        let time = start.time();
        let first = start.date();
        let mut out = Vec::new();
        let mut produced: u32 = 0;
        let mut period: i64 = 0;
        'periods: loop {
            let mut dates = rule.period_dates(first, period);
            period += 1;
            dates.sort();
            dates.dedup();
            let period_start = match rule.period_first_day(first, period - 1) {
                Some(day) => day,
                None => break,
            };
            if period_start > horizon {
                break;
            }
            for date in dates {
                if date < first {
                    continue;
                }
                if date > horizon {
                    break 'periods;
                }
                let at = date.and_time(time);
                let past_until = match rule.until {
                    Some(Until::Date(until)) => date > until,
                    Some(Until::At(until)) => to_utc(at) > until,
                    None => false,
                };
                if past_until {
                    break 'periods;
                }
                produced += 1;
                out.push(at);
                if rule.count.is_some_and(|count| produced >= count) || out.len() >= MAX_INSTANCES {
                    break 'periods;
                }
            }
        }
        out.retain(|at| {
            !self.exdates.iter().any(|ex| match ex {
                Exdate::Date(date) => at.date() == *date,
                Exdate::Local(local) => at == local,
                Exdate::At(utc) => to_utc(*at) == *utc,
            })
        });
        out
    }
}

fn parse_rule(text: &str) -> Result<Rule, Unsupported> {
    let mut freq = None;
    let mut rule = Rule {
        freq: Freq::Daily,
        interval: 1,
        count: None,
        until: None,
        by_day: Vec::new(),
        by_month_day: Vec::new(),
        wkst: Weekday::Mon,
    };
    for part in text.split(';').filter(|p| !p.is_empty()) {
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| Unsupported(format!("malformed RRULE part {part:?}")))?;
        let bad = || Unsupported(format!("bad {key} value {value:?}"));
        match key.to_ascii_uppercase().as_str() {
            "FREQ" => {
                freq = Some(match value {
                    "DAILY" => Freq::Daily,
                    "WEEKLY" => Freq::Weekly,
                    "MONTHLY" => Freq::Monthly,
                    "YEARLY" => Freq::Yearly,
                    _ => return Err(Unsupported(format!("FREQ={value} is not supported"))),
                })
            }
            "INTERVAL" => {
                rule.interval = value.parse().ok().filter(|n| *n > 0).ok_or_else(bad)?;
            }
            "COUNT" => rule.count = Some(value.parse().ok().filter(|n| *n > 0).ok_or_else(bad)?),
            "UNTIL" => rule.until = Some(parse_date_or_time(value).ok_or_else(bad)?),
            "WKST" => rule.wkst = weekday(value).ok_or_else(bad)?,
            "BYDAY" => {
                for item in value.split(',') {
                    let (ordinal, code) = item.split_at(item.len().saturating_sub(2));
                    let day = weekday(code).ok_or_else(bad)?;
                    let ordinal = if ordinal.is_empty() {
                        None
                    } else {
                        Some(
                            ordinal
                                .trim_start_matches('+')
                                .parse::<i32>()
                                .ok()
                                .filter(|n| *n != 0 && n.abs() <= 5)
                                .ok_or_else(bad)?,
                        )
                    };
                    rule.by_day.push((ordinal, day));
                }
            }
            "BYMONTHDAY" => {
                for item in value.split(',') {
                    rule.by_month_day.push(
                        item.parse()
                            .ok()
                            .filter(|n: &i32| *n != 0 && n.abs() <= 31)
                            .ok_or_else(bad)?,
                    );
                }
            }
            other => return Err(Unsupported(format!("{other} is not supported"))),
        }
    }
    rule.freq = freq.ok_or_else(|| Unsupported("RRULE without FREQ".into()))?;
    if rule.count.is_some() && rule.until.is_some() {
        return Err(Unsupported("COUNT and UNTIL together".into()));
    }
    if rule.freq != Freq::Monthly && rule.by_day.iter().any(|(ord, _)| ord.is_some()) {
        return Err(Unsupported(
            "BYDAY ordinals are only supported with MONTHLY".into(),
        ));
    }
    if rule.freq != Freq::Monthly && !rule.by_month_day.is_empty() {
        return Err(Unsupported(
            "BYMONTHDAY is only supported with MONTHLY".into(),
        ));
    }
    Ok(rule)
}

fn add_months(date: NaiveDate, months: i64) -> Option<(i32, u32)> {
    let total = date.year() as i64 * 12 + date.month0() as i64 + months;
    Some((
        i32::try_from(total.div_euclid(12)).ok()?,
        (total.rem_euclid(12) + 1) as u32,
    ))
}

fn days_in_month(year: i32, month: u32) -> u32 {
    let next = if month == 12 {
        NaiveDate::from_ymd_opt(year + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(year, month + 1, 1)
    };
    next.and_then(|d| d.pred_opt())
        .map(|d| d.day())
        .unwrap_or(28)
}

impl Rule {
    /// The first day of the `index`-th period (for the horizon check).
    fn period_first_day(&self, first: NaiveDate, index: i64) -> Option<NaiveDate> {
        let step = index * self.interval as i64;
        match self.freq {
            Freq::Daily => first.checked_add_signed(TimeDelta::days(step)),
            Freq::Weekly => self
                .week_start(first)
                .checked_add_signed(TimeDelta::weeks(step)),
            Freq::Monthly => {
                let (y, m) = add_months(first, step)?;
                NaiveDate::from_ymd_opt(y, m, 1)
            }
            Freq::Yearly => NaiveDate::from_ymd_opt(first.year() + i32::try_from(step).ok()?, 1, 1),
        }
    }

    fn week_start(&self, date: NaiveDate) -> NaiveDate {
        let back = (7 + date.weekday().num_days_from_monday() as i64
            - self.wkst.num_days_from_monday() as i64)
            % 7;
        date - TimeDelta::days(back)
    }

    /// Candidate dates of the `index`-th period.
    fn period_dates(&self, first: NaiveDate, index: i64) -> Vec<NaiveDate> {
        let step = index * self.interval as i64;
        match self.freq {
            Freq::Daily => {
                let Some(date) = first.checked_add_signed(TimeDelta::days(step)) else {
                    return Vec::new();
                };
                if self.by_day.is_empty() || self.by_day.iter().any(|(_, d)| *d == date.weekday()) {
                    vec![date]
                } else {
                    Vec::new()
                }
            }
            Freq::Weekly => {
                let Some(week) = self
                    .week_start(first)
                    .checked_add_signed(TimeDelta::weeks(step))
                else {
                    return Vec::new();
                };
                let days: Vec<Weekday> = if self.by_day.is_empty() {
                    vec![first.weekday()]
                } else {
                    self.by_day.iter().map(|(_, d)| *d).collect()
                };
                days.into_iter()
                    .map(|d| {
                        let offset = (7 + d.num_days_from_monday() as i64
                            - self.wkst.num_days_from_monday() as i64)
                            % 7;
                        week + TimeDelta::days(offset)
                    })
                    .collect()
            }
            Freq::Monthly => {
                let Some((year, month)) = add_months(first, step) else {
                    return Vec::new();
                };
                let last = days_in_month(year, month);
                let day = |n: u32| NaiveDate::from_ymd_opt(year, month, n);
                let mut out = Vec::new();
                for (ordinal, wd) in &self.by_day {
                    let matching: Vec<NaiveDate> = (1..=last)
                        .filter_map(day)
                        .filter(|d| d.weekday() == *wd)
                        .collect();
                    match ordinal {
                        None => out.extend(matching),
                        Some(n) if *n > 0 => out.extend(matching.get(*n as usize - 1)),
                        Some(n) => {
                            let back = n.unsigned_abs() as usize;
                            if back <= matching.len() {
                                out.push(matching[matching.len() - back]);
                            }
                        }
                    }
                }
                let month_days: Vec<NaiveDate> = self
                    .by_month_day
                    .iter()
                    .filter_map(|n| {
                        let n = if *n > 0 { *n } else { last as i32 + 1 + n };
                        u32::try_from(n)
                            .ok()
                            .filter(|n| *n >= 1 && *n <= last)
                            .and_then(day)
                    })
                    .collect();
                match (
                    self.by_day.is_empty(),
                    month_days.is_empty() && self.by_month_day.is_empty(),
                ) {
                    (true, true) => out.extend(day(first.day())),
                    (true, false) => out = month_days,
                    (false, true) => {}
                    // RFC 5545: both parts given means their intersection.
                    (false, false) => out.retain(|d| month_days.contains(d)),
                }
                out
            }
            Freq::Yearly => i32::try_from(step)
                .ok()
                .and_then(|step| {
                    NaiveDate::from_ymd_opt(first.year() + step, first.month(), first.day())
                })
                .into_iter()
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M").unwrap()
    }

    fn expand(lines: &[&str], start: &str, horizon: &str) -> Vec<String> {
        let lines: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
        Recurrence::parse(&lines)
            .unwrap()
            .expand(
                at(start),
                NaiveDate::parse_from_str(horizon, "%Y-%m-%d").unwrap(),
                &|t| t.and_utc(),
            )
            .into_iter()
            .map(|t| t.format("%Y-%m-%dT%H:%M").to_string())
            .collect()
    }

    #[test]
    fn weekly_byday_with_count() {
        assert_eq!(
            expand(
                &["RRULE:FREQ=WEEKLY;BYDAY=MO,WE;COUNT=4"],
                "2026-11-23T09:00",
                "2030-01-01"
            ),
            [
                "2026-11-23T09:00",
                "2026-11-25T09:00",
                "2026-11-30T09:00",
                "2026-12-02T09:00"
            ]
        );
    }

    #[test]
    fn daily_interval_until_and_exdate() {
        assert_eq!(
            expand(
                &[
                    "RRULE:FREQ=DAILY;INTERVAL=2;UNTIL=20261207T090000Z",
                    "EXDATE:20261203T090000Z"
                ],
                "2026-12-01T09:00",
                "2030-01-01"
            ),
            ["2026-12-01T09:00", "2026-12-05T09:00", "2026-12-07T09:00"]
        );
    }

    #[test]
    fn monthly_by_ordinal_weekday_and_last_day() {
        assert_eq!(
            expand(
                &["RRULE:FREQ=MONTHLY;BYDAY=-1FR;COUNT=3"],
                "2026-11-27T10:00",
                "2030-01-01"
            ),
            ["2026-11-27T10:00", "2026-12-25T10:00", "2027-01-29T10:00"]
        );
        assert_eq!(
            expand(
                &["RRULE:FREQ=MONTHLY;COUNT=3"],
                "2027-01-31T10:00",
                "2030-01-01"
            ),
            ["2027-01-31T10:00", "2027-03-31T10:00", "2027-05-31T10:00"]
        );
    }

    #[test]
    fn open_ended_series_stop_at_the_horizon() {
        let out = expand(&["RRULE:FREQ=WEEKLY"], "2026-11-23T09:00", "2026-12-14");
        assert_eq!(out.len(), 4);
    }

    #[test]
    fn unsupported_parts_are_refused() {
        assert!(Recurrence::parse(&["RRULE:FREQ=HOURLY".to_string()]).is_err());
        assert!(Recurrence::parse(&["RDATE:20261201".to_string()]).is_err());
    }
}
