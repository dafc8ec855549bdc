//! `migrate`, `connect`, `disconnect`, `status`.

use std::io::BufRead;
use std::process::ExitCode;

use anyhow::{bail, Context};
use plansync::config::{self, DatabaseSettings, Env};
use plansync::ids::{CalendarId, ConnectionId, RefreshToken, Subject, UserId};
use plansync::status::StatusReport;
use plansync::store::key_check::KeyCheck;
use plansync::store::{
    self,
    connections::{ConnectionAuth, NewConnection},
};

#[derive(Debug, clap::Args)]
pub struct ConnectArgs {
    /// The host application's user id.
    #[arg(long)]
    user: UserId,
    /// The Google calendar id (`primary` or an address-like id).
    #[arg(long, value_parser = non_empty_calendar)]
    calendar: CalendarId,
    /// Make this the calendar new appointments are pushed to.
    #[arg(long)]
    push_target: bool,
    /// The region whose workers sync it (default: PLANSYNC_REGION).
    #[arg(long, value_parser = non_empty)]
    region: Option<String>,
    /// A delegated connection: act as this Workspace member (e-mail) through
    /// the service account of GOOGLE_SERVICE_ACCOUNT_KEY. stdin is not read.
    #[arg(long, value_name = "EMAIL", value_parser = member_address)]
    impersonate: Option<Subject>,
}

/// A Workspace member's address: `local@domain`, no spaces. Google decides
/// whether the member exists; this only catches what cannot be one.
fn member_address(s: &str) -> Result<Subject, String> {
    let s = non_empty(s)?;
    match s.split_once('@') {
        Some((local, domain))
            if !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && !s.chars().any(char::is_whitespace) =>
        {
            Ok(Subject::new(s))
        }
        _ => Err(format!("{s:?} is not an e-mail address")),
    }
}

#[derive(Debug, clap::Args)]
pub struct DisconnectArgs {
    #[arg(long)]
    connection: ConnectionId,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Only this user's connections and jobs.
    #[arg(long)]
    user: Option<UserId>,
    /// Print one JSON object (DESIGN.md, `status --json`).
    #[arg(long)]
    json: bool,
}

fn non_empty(s: &str) -> Result<String, String> {
    let trimmed = s.trim();
    if trimmed.is_empty() {
        return Err("must not be empty".to_owned());
    }
    Ok(trimmed.to_owned())
}

pub(crate) fn non_empty_calendar(s: &str) -> Result<CalendarId, String> {
    non_empty(s).map(CalendarId)
}

async fn pool(env: &Env) -> anyhow::Result<sqlx::PgPool> {
    let settings = DatabaseSettings::from_env(env)?;
    store::connect(&settings, 2)
        .await
        .with_context(|| format!("connecting to {}", settings.url.redacted()))
}

pub async fn migrate(env: &Env) -> anyhow::Result<ExitCode> {
    let settings = DatabaseSettings::from_env(env)?;
    let target = settings.url.redacted();
    if store::migrate::create_database_if_missing(&settings)
        .await
        .with_context(|| format!("creating the database of {target}"))?
    {
        tracing::info!(database = %target, "created database");
    }
    store::migrate::run(&settings)
        .await
        .with_context(|| format!("migrating {target}"))?;
    println!("migrations applied");
    Ok(ExitCode::SUCCESS)
}

pub async fn connect(env: &Env, args: ConnectArgs) -> anyhow::Result<ExitCode> {
    let default_region = config::region(env)?;
    let (auth, cipher) = match &args.impersonate {
        // Nothing secret to store, so neither stdin nor the token key.
        Some(subject) => (
            ConnectionAuth::Delegated {
                subject: subject.clone(),
            },
            None,
        ),
        None => {
            // Validate settings before reading stdin, so a misconfigured
            // command does not swallow the token first.
            let cipher = config::token_cipher(env)?;
            let token = read_refresh_token()?;
            let encrypted = cipher.encrypt(args.user, &args.calendar, &token);
            (ConnectionAuth::RefreshToken { encrypted }, Some(cipher))
        }
    };
    let pool = pool(env).await?;
    if let Some(cipher) = &cipher {
        if store::key_check::verify(&pool, cipher).await? == KeyCheck::Mismatch {
            bail!(
                "PLANSYNC_TOKEN_KEY is not the key the stored refresh tokens were encrypted with: \
                 refusing to store a token no worker could read"
            );
        }
    }
    let outcome = plansync::sync::connect(
        &pool,
        NewConnection {
            user: args.user,
            calendar: &args.calendar,
            region: args.region.as_deref(),
            default_region: &default_region,
            push_target: args.push_target,
            auth,
        },
    )
    .await?;
    tracing::info!(
        connection = %outcome.id,
        user = %args.user,
        calendar = %args.calendar,
        delegated_as = args.impersonate.as_ref().map(tracing::field::display),
        created = outcome.created,
        "connection registered"
    );
    println!("{}", outcome.id);
    Ok(ExitCode::SUCCESS)
}

/// The first line of stdin, trimmed. The token never travels in argv, where
/// any user of the machine could read it from the process list.
fn read_refresh_token() -> anyhow::Result<RefreshToken> {
    read_token_line(std::io::stdin().lock())
}

/// The most of stdin `connect` reads: a refresh token is a few hundred bytes.
const MAX_STDIN: u64 = 8 * 1024;

fn read_token_line(input: impl BufRead) -> anyhow::Result<RefreshToken> {
    let mut bytes = Vec::new();
    input
        .take(MAX_STDIN + 1)
        .read_until(b'\n', &mut bytes)
        .context("reading the refresh token from stdin")?;
    if bytes.len() as u64 > MAX_STDIN {
        bail!("the first line of stdin is longer than {MAX_STDIN} bytes: not a refresh token");
    }
    let line = String::from_utf8(bytes).context("the refresh token on stdin is not UTF-8")?;
    let token = line.trim();
    if token.is_empty() {
        bail!("no refresh token on stdin: pipe it in as the first line");
    }
    if token.chars().any(char::is_control) {
        bail!("the refresh token on stdin contains control characters");
    }
    Ok(RefreshToken::new(token))
}

pub async fn disconnect(env: &Env, args: DisconnectArgs) -> anyhow::Result<ExitCode> {
    let pool = pool(env).await?;
    store::connections::disconnect(&pool, args.connection).await?;
    println!("connection {} disconnected", args.connection);
    Ok(ExitCode::SUCCESS)
}

pub async fn status(env: &Env, args: StatusArgs) -> anyhow::Result<ExitCode> {
    let pool = pool(env).await?;
    let mut report = StatusReport::load(&pool, args.user).await?;
    let quota = plansync::config::QuotaSettings::from_env(env)?;
    let sync = plansync::config::SyncSettings::from_env(env)?;
    report.quota =
        Some(plansync::status::QuotaStatus::load(&pool, &quota, sync.poll_interval).await?);
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdin_is_read_within_bounds() {
        let t = read_token_line(&b"  tok-1 \nsecond line"[..]).unwrap();
        assert_eq!(t.expose_secret(), "tok-1");
        let zeros = vec![0u8; 1 << 20];
        let err = read_token_line(&zeros[..]).unwrap_err().to_string();
        assert!(err.contains("longer than"), "{err}");
        assert!(read_token_line(&b"\n"[..]).is_err());
        assert!(read_token_line(&b"a\x01b\n"[..]).is_err());
        assert!(read_token_line(&b"\xff\xfe\n"[..]).is_err());
    }
}
