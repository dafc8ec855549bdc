//! Loading a fixtures directory: `oauth.json` plus one `<calendarId>.json`
//! per calendar, each an `events.list` response (`summary`, `timeZone`,
//! `items`) in Google's wire format. Subdirectories are ignored.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use super::state::Calendars;
use super::FakeGoogleError;

/// `oauth.json`: the OAuth client, the refresh tokens the emulator accepts and
/// the service accounts it knows.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct OAuthFile {
    pub client_id: String,
    pub client_secret: String,
    #[serde(default)]
    pub refresh_tokens: Vec<String>,
    /// Service accounts with domain-wide delegation (JWT-bearer grants).
    #[serde(default)]
    pub service_accounts: Vec<ServiceAccountFile>,
}

/// One service account: its public key (SPKI PEM, as `openssl pkey -pubout`
/// prints it) and the members the administrator lets it act as.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ServiceAccountFile {
    pub client_email: String,
    pub public_key_pem: String,
    #[serde(default)]
    pub subjects: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CalendarFile {
    #[serde(default)]
    summary: Option<String>,
    #[serde(default)]
    description: Option<String>,
    time_zone: String,
    #[serde(default)]
    items: Vec<Value>,
}

fn read(path: &Path) -> Result<String, FakeGoogleError> {
    std::fs::read_to_string(path).map_err(|source| FakeGoogleError::Io {
        path: path.to_owned(),
        source,
    })
}

fn bad(path: &Path, message: impl Into<String>) -> FakeGoogleError {
    FakeGoogleError::Fixture {
        path: path.to_owned(),
        message: message.into(),
    }
}

/// Loads every calendar of `dir` into `calendars` and returns the OAuth file.
pub(crate) fn load(
    dir: &Path,
    calendars: &mut Calendars,
) -> Result<Option<OAuthFile>, FakeGoogleError> {
    let entries = std::fs::read_dir(dir).map_err(|source| FakeGoogleError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let mut oauth = None;
    for path in files {
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .ok_or_else(|| bad(&path, "file name is not UTF-8"))?
            .to_owned();
        let text = read(&path)?;
        if stem == "oauth" {
            oauth = Some(serde_json::from_str(&text).map_err(|e| bad(&path, e.to_string()))?);
            continue;
        }
        let file: CalendarFile =
            serde_json::from_str(&text).map_err(|e| bad(&path, e.to_string()))?;
        calendars
            .add_calendar(
                &stem,
                file.summary.as_deref().unwrap_or(&stem),
                &file.time_zone,
                file.description,
            )
            .map_err(|e| bad(&path, format!("timeZone {:?}: {}", file.time_zone, e.body)))?;
        for item in file.items {
            calendars.load(&stem, item).map_err(|e| {
                bad(
                    &path,
                    e.body["error"]["message"]
                        .as_str()
                        .unwrap_or("invalid item")
                        .to_owned(),
                )
            })?;
        }
    }
    Ok(oauth)
}
