//! The parameters of `events.list`: parsing the query string and refusing
//! what Google refuses (bad values, filters beside a `syncToken`, an
//! ordering the query cannot have, an empty time range).

use chrono::{DateTime, Utc};

use crate::errors::ApiError;
use crate::times;

/// Google's default and largest `maxResults`.
pub(super) const DEFAULT_PAGE: usize = 250;
pub(super) const MAX_PAGE: usize = 2500;

/// The parameters of `events.list`.
#[derive(Debug, Default)]
pub(crate) struct ListParams {
    pub(super) sync_token: Option<String>,
    pub(crate) page_token: Option<String>,
    pub(super) max_results: Option<usize>,
    pub(super) show_deleted: bool,
    pub(super) single_events: bool,
    pub(super) time_min: Option<DateTime<Utc>>,
    pub(super) time_max: Option<DateTime<Utc>>,
    pub(super) updated_min: Option<DateTime<Utc>>,
    pub(super) order_by: Option<String>,
    pub(super) q: Option<String>,
    pub(super) ical_uid: Option<String>,
    pub(super) private_props: Vec<(String, String)>,
    pub(super) shared_props: Vec<(String, String)>,
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
